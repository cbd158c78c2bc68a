"""Measure invisible-watermark candidates: bit accuracy after H.264 (crf 18/23/28), half-size scaling and
a 10% crop, on real face clips. Prints a Markdown table (the one issue 6 asks for).

    python examples/watermark_study.py [--frames 30] [--clips grid_bbaf2n.mpg,...] [--hd]

Candidates:
  facecomp          facecomp.disclosure.watermark (56 bits: marker + manifest id + CRC), layout phases on
  facecomp-uninformed  the same without informed embedding (no per-frame boost of weak bits)
  dwtDct, dwtDctSvd, rivaGan   from the ``invisible-watermark`` package (32 bits) when importable; it is
                    not a facecomp dependency: install it somewhere and put it on PYTHONPATH, e.g.
                    pip install --no-deps --target /tmp/iw invisible-watermark==0.2.0 PyWavelets==1.9.0
                    PYTHONPATH=/tmp/iw python examples/watermark_study.py   (rivaGan also needs torch)

Per frame: fraction of payload bits read right (mean over frames). "file": the whole payload recovered
by voting over all frames of the attacked clip (facecomp: soft-weighted vote + CRC; others: per-bit
majority). Sample clips come from ../shared/media or $FACECOMP_SAMPLE_MEDIA.
"""

from __future__ import annotations

import argparse
import io
import os
import sys
import time
from pathlib import Path

import av
import cv2
import numpy as np

from facecomp.disclosure import watermark as wm

ATTACKS = ("none", "crf18", "crf23", "crf28", "half", "crop10")


def media_dir() -> Path:
    env = os.environ.get("FACECOMP_SAMPLE_MEDIA")
    return Path(env) if env else Path(__file__).resolve().parents[1].parent / "shared" / "media"


def read_frames(path: Path, n: int, size: tuple[int, int] | None) -> list[np.ndarray]:
    out = []
    with av.open(os.fspath(path)) as c:
        for f in c.decode(video=0):
            if len(out) >= n:
                break
            a = f.to_ndarray(format="rgb24")
            if size is not None:
                a = cv2.resize(a, size, interpolation=cv2.INTER_CUBIC)
            out.append(a)
    return out


def h264(frames: list[np.ndarray], crf: int) -> list[np.ndarray]:
    """Encode with libx264 (yuv420p) at ``crf`` and decode again, in memory."""
    buf = io.BytesIO()
    with av.open(buf, "w", format="mp4") as c:
        s = c.add_stream("libx264", rate=25)
        s.width, s.height, s.pix_fmt = frames[0].shape[1], frames[0].shape[0], "yuv420p"
        s.options = {"crf": str(crf)}
        for a in frames:
            for p in s.encode(av.VideoFrame.from_ndarray(a, format="rgb24")):
                c.mux(p)
        for p in s.encode():
            c.mux(p)
    buf.seek(0)
    with av.open(buf) as c:
        return [f.to_ndarray(format="rgb24") for f in c.decode(video=0)]


def attack(frames: list[np.ndarray], name: str) -> list[np.ndarray]:
    if name == "none":
        return frames
    if name.startswith("crf"):
        return h264(frames, int(name[3:]))
    if name == "half":
        return [cv2.resize(f, (f.shape[1] // 2, f.shape[0] // 2), interpolation=cv2.INTER_AREA) for f in frames]
    if name == "crop10":  # 10% of each dimension removed, 5% per side
        return [f[int(0.05 * f.shape[0]):int(0.95 * f.shape[0]), int(0.05 * f.shape[1]):int(0.95 * f.shape[1])]
                for f in frames]
    raise ValueError(name)


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2)
    return float(10 * np.log10(255.0 ** 2 / max(mse, 1e-12)))


class Facecomp:
    bits_n = wm.PAYLOAD_BITS

    def __init__(self, informed: bool = True):
        self.name = "facecomp" if informed else "facecomp-uninformed"
        self.informed = informed
        self.payload = wm.WatermarkPayload(manifest_id=0x1F2E3D4C)
        self.ref = self.payload.to_bits()
        self.w = wm.Watermarker(self.payload, informed=informed)

    def embed(self, frames):
        return [self.w.embed(f, i) for i, f in enumerate(frames)]

    def bits(self, frame):
        return wm.decode_frame(frame).bits

    def file_ok(self, frames, per_frame_bits):
        return wm.decode_frames(frames, max_frames=len(frames)).payload == self.payload


class ImWatermark:
    bits_n = 32

    def __init__(self, method: str):
        from imwatermark import WatermarkDecoder, WatermarkEncoder  # optional, see the docstring
        self.name = method
        self.method = method
        self.ref = np.unpackbits(np.frombuffer(b"fcmp", dtype=np.uint8))
        self.enc = WatermarkEncoder()
        self.enc.set_watermark("bits", list(self.ref))
        self.dec = WatermarkDecoder("bits", 32)
        if method == "rivaGan":
            WatermarkEncoder.loadModel()

    def embed(self, frames):
        out = []
        for f in frames:
            bgr = cv2.cvtColor(f, cv2.COLOR_RGB2BGR)
            out.append(cv2.cvtColor(self.enc.encode(bgr, self.method), cv2.COLOR_BGR2RGB))
        return out

    def bits(self, frame):
        try:
            return np.asarray(self.dec.decode(cv2.cvtColor(frame, cv2.COLOR_RGB2BGR), self.method),
                              dtype=np.uint8).ravel()[:32]
        except Exception:  # noqa: BLE001 - a decoder that cannot run on the attacked frame reads nothing
            return np.full(32, 2, dtype=np.uint8)

    def file_ok(self, frames, per_frame_bits):
        votes = np.mean(np.stack(per_frame_bits) == 1, axis=0) > 0.5
        return bool(np.array_equal(votes.astype(np.uint8), self.ref))


def candidates(names: list[str]):
    out = []
    for n in names:
        if n == "facecomp":
            out.append(Facecomp(True))
        elif n == "facecomp-uninformed":
            out.append(Facecomp(False))
        else:
            try:
                out.append(ImWatermark(n))
            except ImportError as exc:
                print(f"skipping {n}: invisible-watermark not importable ({exc})", file=sys.stderr)
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--frames", type=int, default=30)
    ap.add_argument("--clips", default="grid_bbaf2n.mpg,intel_asl_book.mkv,intel_head-pose-face-detection-female-and-male.mp4")
    ap.add_argument("--hd", action="store_true", help="also run intel_asl_book upscaled to 1280x720")
    ap.add_argument("--candidates", default="facecomp,facecomp-uninformed,dwtDct,dwtDctSvd,rivaGan")
    ap.add_argument("--slow-frames", type=int, default=10,
                    help="frames for the slow candidates (rivaGan, dwtDctSvd run at ~0.1-1 s per frame)")
    args = ap.parse_args(argv)
    media = media_dir()
    if not media.is_dir():
        print(f"sample media not found at {media}; set FACECOMP_SAMPLE_MEDIA", file=sys.stderr)
        return 2
    clips = [(media / c, None) for c in args.clips.split(",") if c]
    if args.hd:
        clips.append((media / "intel_asl_book.mkv", (1280, 720)))
    cands = candidates(args.candidates.split(","))
    print("| candidate | clip | bits | PSNR dB | embed ms/frame | " + " | ".join(ATTACKS) + " |")
    print("|---|---|---|---|---|" + "---|" * len(ATTACKS))
    for path, size in clips:
        frames = read_frames(path, args.frames, size)
        clip = f"{path.name} {frames[0].shape[1]}x{frames[0].shape[0]}"
        for cand in cands:
            use = frames[:args.slow_frames] if cand.name in ("rivaGan", "dwtDctSvd") else frames
            t = time.perf_counter()
            marked = cand.embed(use)
            ms = (time.perf_counter() - t) / len(use) * 1000
            q = np.mean([psnr(a, b) for a, b in zip(use, marked)])
            cells = []
            for name in ATTACKS:
                att = attack(marked, name)
                per = [cand.bits(f) for f in att]
                if all(np.all(b == 2) for b in per):
                    cells.append("n/a")  # the decoder refuses the attacked frame (e.g. < 256x256)
                    continue
                acc = float(np.mean([np.mean(b[:len(cand.ref)] == cand.ref) for b in per]))
                ok = cand.file_ok(att, per)
                cells.append(f"{acc:.3f}{' ✓' if ok else ' ✗'}")
            print(f"| {cand.name} | {clip} ({len(use)} fr) | {cand.bits_n} | {q:.1f} | {ms:.1f} | " + " | ".join(cells) + " |",
                  flush=True)
    print("\nper-frame bit accuracy (mean over frames); ✓ = whole payload recovered by voting over the clip")
    return 0


if __name__ == "__main__":
    sys.exit(main())
