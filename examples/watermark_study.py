"""Robustness study of the invisible watermark on real footage and generated variants (issue 15).

    python examples/watermark_study.py              # the full table (~15 min on two shared cores)
    python examples/watermark_study.py --quick      # 4 clips, 12 frames, the main attacks (tests use it)
    python examples/watermark_study.py --clips portrait,square512 --json out.json

Every clip is 2 seconds (the 4K rows: 10 frames), stamped as a render stamps it (label, then watermark,
with this render's payload), then attacked: H.264 and H.265 at crf 18, 23 and 28 (PyAV, libx264 /
libx265, preset medium, yuv420p or yuv420p10le for the 10-bit row); "half": the crf 18 output (decoded to
RGB) scaled to half size (area); "half+23": that, re-encoded with H.264 crf 23; "crop10": the crf 18 output with 5% cut from each
side, re-encoded with H.264 crf 23; "reenc": the crf 18 output decoded and re-encoded by a second program
with other settings (PyAV, libx264 preset veryfast, crf 26, GOP 12, no B-frames). Each cell: the
per-frame bit accuracy (mean over frames of the 56 payload bits read right from one frame) and ✓ when
the whole payload is recovered from the 2 seconds (:func:`facecomp.disclosure.watermark.decode_frames`).

Per clip also: PSNR of the watermark (stamped with vs without it), "flat": the rms of the watermark's
luma change on the flat areas of the frame (local deviation under 1.5 code values), where a pattern would
be seen first, and the embedding cost per frame (median over the clip's frames). Sample clips come from
../shared/media or $FACECOMP_SAMPLE_MEDIA (their README credits them).
"""

from __future__ import annotations

import argparse
import io
import json
import os
import sys
import time
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Callable

import av
import cv2
import numpy as np

from facecomp.disclosure import watermark as wm
from facecomp.disclosure.label import Label, LabelSettings
from facecomp.swap.bench import synthetic_clip

ATTACKS = ("h264-18", "h264-23", "h264-28", "h265-18", "h265-23", "h265-28", "half", "half+23", "crop10", "reenc")
QUICK_ATTACKS = ("h264-23", "h265-23", "half", "half+23", "reenc")


def media_dir() -> Path:
    env = os.environ.get("FACECOMP_SAMPLE_MEDIA")
    return Path(env) if env else Path(__file__).resolve().parents[1].parent / "shared" / "media"


# ------------------------------------------------------------------------------------------- the clips

def _read(path: Path, n: int) -> list[np.ndarray]:
    out = []
    with av.open(os.fspath(path)) as c:
        for f in c.decode(video=0):
            if len(out) >= n:
                break
            out.append(f.to_ndarray(format="rgb24"))
    return out


def _crop_aspect(a: np.ndarray, aspect: float) -> np.ndarray:
    """The centre crop of ``a`` with width / height = ``aspect``."""
    h, w = a.shape[:2]
    if w / h > aspect:
        nw = int(round(h * aspect))
        x = (w - nw) // 2
        return a[:, x:x + nw]
    nh = int(round(w / aspect))
    y = (h - nh) // 2
    return a[y:y + nh]


def _resize(a: np.ndarray, w: int, h: int) -> np.ndarray:
    interp = cv2.INTER_AREA if w < a.shape[1] else cv2.INTER_CUBIC
    return np.ascontiguousarray(cv2.resize(a, (w, h), interpolation=interp))


def _grade(a: np.ndarray, gain: float, lift: float) -> np.ndarray:
    return np.clip(a.astype(np.float32) * gain + lift, 0, 255).astype(np.uint8)


def _pan(img: np.ndarray, n: int, w: int, h: int, speed: float) -> list[np.ndarray]:
    """A fast pan (``speed`` px per frame) with a slight zoom over a still: high motion everywhere."""
    ih, iw = img.shape[:2]
    out = []
    for i in range(n):
        z = 1.0 + 0.004 * i
        cw, ch = int(iw / z * 0.6), int(ih / z * 0.6)
        x = int((i * speed) % max(1, iw - cw))
        y = int((ih - ch) * (0.5 + 0.4 * np.sin(i / 5.0)))
        out.append(_resize(img[y:y + ch, x:x + cw], w, h))
    return out


def _grain(frames: list[np.ndarray], sigma: float, size: float, seed: int = 1) -> list[np.ndarray]:
    """A grain-heavy grade: new monochrome grain on every frame, ``sigma`` code values rms, blobs of about
    ``size`` px (Gaussian-blurred white noise)."""
    rng = np.random.default_rng(seed)
    out = []
    for a in frames:
        g = cv2.GaussianBlur(rng.standard_normal(a.shape[:2]).astype(np.float32), (0, 0), size)
        g *= np.float32(sigma / float(g.std()))
        out.append(np.clip(a.astype(np.float32) + g[..., None], 0, 255).astype(np.uint8))
    return out


@dataclass(frozen=True)
class Clip:
    name: str
    what: str
    make: Callable[[Path, int], list[np.ndarray]]
    fps: float = 25.0
    frames: int = 50           # 2 seconds
    ten_bit: bool = False


def _clip_table() -> list[Clip]:
    g1, g2, g3 = "grid_bbaf2n.mpg", "grid_lwbsza.mpg", "grid_swiz3n.mpg"
    asl, pose, walk = ("intel_asl_book.mkv", "intel_head-pose-face-detection-female-and-male.mp4",
                       "intel_face-demographics-walking-and-pause.mp4")

    def src(name, fn=lambda a: a):
        return lambda m, n: [np.ascontiguousarray(fn(a)) for a in _read(m / name, n)]

    def solvay(m, n):
        img = cv2.cvtColor(cv2.imread(os.fspath(m / "visp_solvay_conference_1927_1280px.png")), cv2.COLOR_BGR2RGB)
        return _pan(img, n, 1280, 720, speed=14.0)

    def bench(m, n):
        face = cv2.cvtColor(cv2.imread(os.fspath(m / "grace_hopper.jpg")), cv2.COLOR_BGR2RGB)
        # facecomp bench's content: random colour blobs (one value per 16 px, cubic), which put the
        # content's energy at the watermark cells' own size, and a real face drifting over them
        return synthetic_clip(face, (1280, 720), n)

    def grain(m, n):
        return _grain(src(walk, lambda a: _resize(a, 1280, 720))(m, n), sigma=14.0, size=1.5)

    def ten(m, n):
        return [(a.astype(np.uint16) * 257) for a in src(g3, lambda a: _resize(_crop_aspect(a, 1.0), 512, 512))(m, n)]

    return [
        Clip("grid", "GRID talking head 360×288 (native)", src(g1)),
        Clip("asl", "ASL signer 640×480 (native, 30 fps)", src(asl), fps=30, frames=60),
        Clip("pose", "two heads turning 480×270 (native, 12.5 fps)", src(pose), fps=12.5, frames=25),
        Clip("portrait", "ASL 9:16 crop → 720×1280 portrait", src(asl, lambda a: _resize(_crop_aspect(a, 9 / 16), 720, 1280)),
             fps=30, frames=60),
        Clip("square512", "GRID square crop → 512×512 studio head", src(g2, lambda a: _resize(_crop_aspect(a, 1.0), 512, 512))),
        Clip("square524", "GRID square crop → 524×524", src(g3, lambda a: _resize(_crop_aspect(a, 1.0), 524, 524))),
        Clip("crowd1080", "walking people, small faces → 1920×1080", src(walk, lambda a: _resize(a, 1920, 1080)),
             fps=12.5, frames=25),
        Clip("pose1080", "head pose → 1920×1080", src(pose, lambda a: _resize(a, 1920, 1080)), fps=12.5, frames=25),
        Clip("tiny160", "walking people → 284×160", src(walk, lambda a: _resize(a, 284, 160)), fps=12.5, frames=25),
        Clip("dark", "GRID graded dark (×0.3)", src(g1, lambda a: _grade(a, 0.3, 0.0))),
        Clip("lowcon", "ASL graded low-contrast (×0.35 + 90)", src(asl, lambda a: _grade(a, 0.35, 90.0)), fps=30, frames=60),
        Clip("motion", "Solvay 1927 crowd, fast pan 14 px/frame, 1280×720", solvay),
        Clip("tenbit", "GRID square 512×512, 16-bit frames → 10-bit H.264/H.265", ten, ten_bit=True),
        Clip("uhd", "ASL → 3840×2160 (10 frames)", src(asl, lambda a: _resize(a, 3840, 2160)), fps=30, frames=10),
        Clip("bench", "`facecomp bench` content: random 16 px blobs + a drifting face, 1280×720", bench),
        Clip("grain", "walking people → 1280×720, heavy film grain (14 rms, 1.5 px, new every frame)", grain,
             fps=12.5, frames=25),
    ]


CLIPS = {c.name: c for c in _clip_table()}
QUICK_CLIPS = ("grid", "portrait", "square524", "tiny160")


# ------------------------------------------------------------------------------------------- attacks

def encode(frames: list[np.ndarray], codec: str, fps: float, options: dict) -> list[np.ndarray]:
    """Encode with PyAV (yuv420p, or yuv420p10le for 16-bit frames) and decode the Y planes back."""
    buf = io.BytesIO()
    deep = frames[0].dtype == np.uint16
    with av.open(buf, "w", format="mp4") as c:
        s = c.add_stream(codec, rate=_rate(fps))
        s.width, s.height = frames[0].shape[1], frames[0].shape[0]
        s.pix_fmt = "yuv420p10le" if deep else "yuv420p"
        opts = dict(options)
        if codec == "libx265":
            opts["x265-params"] = "log-level=error"
        s.options = opts
        for a in frames:
            vf = av.VideoFrame.from_ndarray(a, format="rgb48le" if deep else "rgb24")
            for p in s.encode(vf):
                c.mux(p)
        for p in s.encode():
            c.mux(p)
    buf.seek(0)
    with av.open(buf) as c:
        return [wm.y_plane(f) for f in c.decode(video=0)]


def _rate(fps: float) -> Fraction:
    return Fraction(fps).limit_denominator(1001)


def _enc_rgb(frames, codec, fps, options):
    """Like :func:`encode`, for the second-generation attacks that start from decoded RGB frames."""
    buf = io.BytesIO()
    with av.open(buf, "w", format="mp4") as c:
        s = c.add_stream(codec, rate=_rate(fps))
        h, w = frames[0].shape[:2]
        s.width, s.height, s.pix_fmt = w - w % 2, h - h % 2, "yuv420p"
        s.options = dict(options)
        for a in frames:
            for p in s.encode(av.VideoFrame.from_ndarray(np.ascontiguousarray(a[:h - h % 2, :w - w % 2]), format="rgb24")):
                c.mux(p)
        for p in s.encode():
            c.mux(p)
    buf.seek(0)
    with av.open(buf) as c:
        return [wm.y_plane(f) for f in c.decode(video=0)]


def decode_rgb(frames: list[np.ndarray], fps: float) -> list[np.ndarray]:
    """The crf 18 output as a user's tool sees it: decoded to RGB."""
    buf = io.BytesIO()
    deep = frames[0].dtype == np.uint16
    with av.open(buf, "w", format="mp4") as c:
        s = c.add_stream("libx264", rate=_rate(fps))
        s.width, s.height = frames[0].shape[1], frames[0].shape[0]
        s.pix_fmt = "yuv420p10le" if deep else "yuv420p"
        s.options = {"crf": "18", "preset": "medium"}
        for a in frames:
            for p in s.encode(av.VideoFrame.from_ndarray(a, format="rgb48le" if deep else "rgb24")):
                c.mux(p)
        for p in s.encode():
            c.mux(p)
    buf.seek(0)
    with av.open(buf) as c:
        return [f.to_ndarray(format="rgb24") for f in c.decode(video=0)]


def attack(marked: list[np.ndarray], name: str, fps: float, cache: dict) -> list[np.ndarray]:
    if name.startswith(("h264-", "h265-")):
        codec = "libx264" if name.startswith("h264") else "libx265"
        return encode(marked, codec, fps, {"crf": name[5:], "preset": "medium"})
    if "crf18" not in cache:
        cache["crf18"] = decode_rgb(marked, fps)
    base = cache["crf18"]
    if name in ("half", "half+23"):
        small = [cv2.resize(f, (f.shape[1] // 2, f.shape[0] // 2), interpolation=cv2.INTER_AREA) for f in base]
        if name == "half":
            return small
        return _enc_rgb(small, "libx264", fps, {"crf": "23", "preset": "medium"})
    if name == "crop10":
        h, w = base[0].shape[:2]
        crop = [f[int(0.05 * h):int(0.95 * h), int(0.05 * w):int(0.95 * w)] for f in base]
        return _enc_rgb(crop, "libx264", fps, {"crf": "23", "preset": "medium"})
    if name == "reenc":
        return _enc_rgb(base, "libx264", fps, {"crf": "26", "preset": "veryfast", "g": "12", "bf": "0"})
    raise ValueError(name)


# ------------------------------------------------------------------------------------------- measures

def _luma64(a: np.ndarray) -> np.ndarray:
    f = a.astype(np.float64) / (257.0 if a.dtype == np.uint16 else 1.0)
    return f[..., :3] @ np.array([0.299, 0.587, 0.114])


def invisibility(before: list[np.ndarray], after: list[np.ndarray]) -> tuple[float, float]:
    """(PSNR dB of the watermark, rms luma change on flat areas in 8-bit code values)."""
    mse, flat_sq, flat_n = 0.0, 0.0, 0
    for a, b in zip(before, after):
        la, lb = _luma64(a), _luma64(b)
        mse += float(np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2)) / (
            257.0 ** 2 if a.dtype == np.uint16 else 1.0)
        m = cv2.blur(la, (7, 7))
        dev = np.sqrt(np.maximum(cv2.blur(la * la, (7, 7)) - m * m, 0.0))
        flat = dev < 1.5
        flat_sq += float(np.sum(((lb - la) ** 2)[flat]))
        flat_n += int(flat.sum())
    mse /= len(before)
    return 10 * np.log10(255.0 ** 2 / max(mse, 1e-12)), (np.sqrt(flat_sq / flat_n) if flat_n else float("nan"))


def read(frames: list[np.ndarray], payload: wm.WatermarkPayload) -> tuple[float, bool, wm.FileDecode]:
    ref = payload.to_bits()
    acc = float(np.mean([np.mean(wm.decode_frame(f).bits == ref) for f in frames]))
    fd = wm.decode_frames(frames, max_frames=len(frames))
    return acc, fd.payload == payload, fd


def flat_grey_check() -> dict:
    """The watermark on a flat mid-grey and a flat dark 1280x720 frame: what an eye would see first."""
    out = {}
    w = wm.Watermarker(wm.WatermarkPayload(manifest_id=wm.manifest_id_for("study")))
    for name, v in (("grey128", 128), ("dark24", 24)):
        f = np.full((720, 1280, 3), v, np.uint8)
        d = w.embed(f, 0).astype(np.float64) - f
        out[name] = {"rms": round(float(np.sqrt(np.mean(d ** 2))), 3), "peak": float(np.abs(d).max()),
                     "psnr": round(float(10 * np.log10(255 ** 2 / max(np.mean(d ** 2), 1e-12))), 1)}
    return out


def study(clip: Clip, media: Path, attacks: tuple[str, ...], frames: int | None) -> dict:
    n = min(clip.frames, frames) if frames else clip.frames
    src = clip.make(media, n)
    label = Label(LabelSettings())
    payload = wm.WatermarkPayload(manifest_id=wm.manifest_id_for(f"study-{clip.name}"))
    marker = wm.Watermarker(payload)
    labelled, marked = [], []
    t_embed = []
    for i, f in enumerate(src):
        lab = label.stamp(f)  # the label, then the watermark, as Stamper does (measured apart here)
        t0 = time.perf_counter()
        mk = marker.embed(lab, i)
        t_embed.append(time.perf_counter() - t0)
        labelled.append(lab)
        marked.append(mk)
    psnr, flat = invisibility(labelled, marked)
    h, w = src[0].shape[:2]
    row = {"clip": clip.name, "what": clip.what, "size": f"{w}x{h}", "frames": len(src),
           "psnr": round(psnr, 1), "flat_rms": round(flat, 2),
           "embed_ms": round(1000 * float(np.median(t_embed)), 2), "attacks": {}}
    cache: dict = {}
    for name in attacks:
        t0 = time.perf_counter()
        att = attack(marked, name, clip.fps, cache)
        acc, ok, fd = read(att, payload)
        row["attacks"][name] = {"accuracy": round(acc, 3), "recovered": ok, "frames_found": fd.frames_found,
                                "method": fd.method, "seconds": round(time.perf_counter() - t0, 1)}
    return row


def markdown(rows: list[dict], attacks: tuple[str, ...]) -> str:
    lines = ["| clip | size | PSNR dB | flat rms | embed ms | " + " | ".join(attacks) + " |",
             "|---|---|---|---|---|" + "---|" * len(attacks)]
    for r in rows:
        cells = []
        for a in attacks:
            c = r["attacks"].get(a)
            cells.append("" if c is None else f"{c['accuracy']:.3f} {'✓' if c['recovered'] else '✗'}")
        lines.append(f"| {r['what']} | {r['size']} ({r['frames']} fr) | {r['psnr']} | {r['flat_rms']} | "
                     f"{r['embed_ms']} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def goals(rows: list[dict]) -> list[str]:
    """The issue's goals, as failures (empty when every clip meets them)."""
    bad = []
    for r in rows:
        for a in ("h264-23", "h265-23", "half"):
            c = r["attacks"].get(a)
            if c is not None and not c["recovered"]:
                bad.append(f"{r['clip']} {a}: payload not recovered")
        for a in ("h264-23", "h265-23"):
            c = r["attacks"].get(a)
            if c is not None and c["accuracy"] < 0.95:
                bad.append(f"{r['clip']} {a}: per-frame bit accuracy {c['accuracy']:.3f} < 0.95")
    return bad


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help=f"clips {','.join(QUICK_CLIPS)}, 12 frames, "
                                                         f"attacks {','.join(QUICK_ATTACKS)}")
    ap.add_argument("--clips", default=None, help=f"comma-separated, from {','.join(CLIPS)}")
    ap.add_argument("--attacks", default=None, help=f"comma-separated, from {','.join(ATTACKS)}")
    ap.add_argument("--frames", type=int, default=None, help="at most this many frames per clip")
    ap.add_argument("--json", default=None, help="also write the rows as JSON to this file")
    args = ap.parse_args(argv)
    media = media_dir()
    if not media.is_dir():
        print(f"sample media not found at {media}; set FACECOMP_SAMPLE_MEDIA", file=sys.stderr)
        return 2
    names = args.clips.split(",") if args.clips else list(QUICK_CLIPS if args.quick else CLIPS)
    unknown = [n for n in names if n not in CLIPS]
    if unknown:
        ap.error(f"unknown clip(s) {unknown}; choose from {', '.join(CLIPS)}")
    attacks = tuple(args.attacks.split(",")) if args.attacks else (QUICK_ATTACKS if args.quick else ATTACKS)
    frames = args.frames or (12 if args.quick else None)
    rows = []
    t0 = time.perf_counter()
    for name in names:
        rows.append(study(CLIPS[name], media, attacks, frames))
        print(markdown(rows[-1:], attacks).splitlines()[-1], file=sys.stderr, flush=True)
    print(markdown(rows, attacks))
    print("\nper-frame bit accuracy (mean over frames); ✓ = whole payload recovered from the clip (2 s)")
    flat = flat_grey_check()
    print(f"flat frames: {json.dumps(flat)}")
    bad = goals(rows)
    print("goals (crf 23 and half size recovered, crf 23 accuracy >= 0.95): " + ("met" if not bad else "; ".join(bad)))
    print(f"study took {time.perf_counter() - t0:.0f} s")
    if args.json:
        Path(args.json).write_text(json.dumps({"rows": rows, "flat": flat, "goals_failed": bad}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
