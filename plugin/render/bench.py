"""``facecomp bench``: transcode-only vs full-pipeline speed, measured side by side in one run.

Three sides decode the same generated clip (a real face moving over a textured background) and encode
with the same encoder settings:

- **transcode**: decode -> RGB -> encode, nothing else. The encoder's packets are counted and dropped;
  no file is written, so no unlabelled frame leaves (the only encoder outside the writers, allow-listed
  by the structure test for that reason). This is the ceiling an effect is measured against.
- **stamped**: the same through the stamp and the writer (label + watermark on every frame): what any
  facecomp output costs at the least. Its file is deleted at once.
- **pipeline**: ``render_clip`` with the engine (face analysis + swap when configured) and every
  disclosure layer (tags, manifest, read-back).

``ratio`` is pipeline / transcode (what the whole disclosed effect costs), ``ratio_stamped`` pipeline /
stamped (what the face replacement adds on top of the disclosure).
"""

from __future__ import annotations

import os
import platform
import tempfile
import time
from fractions import Fraction
from pathlib import Path
from typing import Callable

import av
import cv2
import numpy as np

from ..disclosure.stamp import Stamper
from ..effect import Engine
from ..video.encode import EncodeSettings, ResolvedEncode, resolve
from ..video.reader import VideoReader
from ..video.writer import VideoWriter
from .clip import RenderSettings, render_clip

SIZES = {"480p": (854, 480), "720p": (1280, 720), "1080p": (1920, 1080), "2160p": (3840, 2160)}


def make_face_clip(path: Path, face_rgb: np.ndarray, size: tuple[int, int], frames: int, fps: int = 25,
                   faces: int = 1, seed: int = 0) -> Path:
    """An H.264 clip with ``faces`` copies of a real face drifting slowly over a textured background."""
    w, h = size
    rng = np.random.default_rng(seed)
    bg = cv2.resize(rng.integers(40, 200, (h // 16 + 1, w // 16 + 1, 3), dtype=np.uint8), (w, h),
                    interpolation=cv2.INTER_CUBIC)
    side = int(min(w, h) * (0.45 if faces == 1 else 0.22))
    face = cv2.resize(face_rgb, (side, side), interpolation=cv2.INTER_AREA)
    slots = [(int(w * (0.3 + 0.4 * (i % 3) / 2)), int(h * (0.3 + 0.4 * (i // 3)))) for i in range(faces)]
    if faces == 1:
        slots = [(w // 2, h // 2)]
    # written like every clip the project writes: stamped (label + watermark) and through the writer
    enc = ResolvedEncode(codec="h264", encoder="libx264", pix_fmt="yuv420p", bit_depth=8, alpha=False,
                         options={"crf": "16", "preset": "veryfast"}, sequence=False)
    stamper = Stamper(watermark_id=f"facecomp.bench:{path.name}")
    writer = VideoWriter(path, enc=enc, size=(w, h), fps=Fraction(fps), time_base=Fraction(1, fps))
    try:
        for i in range(frames):
            img = bg.copy()
            for j, (cx, cy) in enumerate(slots):
                dx = int(0.03 * w * np.sin(2 * np.pi * (i / max(1, frames)) + j))
                dy = int(0.02 * h * np.cos(2 * np.pi * (i / max(1, frames)) + j))
                x0 = int(np.clip(cx + dx - side // 2, 0, w - side))
                y0 = int(np.clip(cy + dy - side // 2, 0, h - side))
                img[y0:y0 + side, x0:x0 + side] = face
            writer.write(stamper.stamp(img, index=i, owned=True), i)
        writer.finish()
        writer.commit()
    except BaseException:
        writer.abort()
        raise
    return path


def transcode_only(src: Path, encode: EncodeSettings) -> tuple[float, int]:
    """Decode -> RGB -> encode with the pipeline's encoder settings; packets dropped, nothing written.

    Returns (fps, frames). The frames are converted to RGB and back as the pipeline does, so the two
    sides differ by the effect and the disclosure only."""
    reader = VideoReader(src)
    info = reader.info
    enc = resolve(encode, src.with_name("transcode-reference.mp4"), info)
    w, h = info.display_size
    ctx = av.CodecContext.create(enc.encoder, "w")
    ctx.width, ctx.height, ctx.pix_fmt = w, h, enc.pix_fmt
    ctx.time_base = info.time_base
    ctx.framerate = info.fps
    ctx.options = {k: str(v) for k, v in enc.options.items()}
    n, size = 0, 0
    t0 = time.perf_counter()
    try:
        for index, frame in reader.av_frames():
            rgb = reader.convert(frame)
            vf = av.VideoFrame.from_ndarray(np.ascontiguousarray(rgb[..., :3]), format="rgb24")
            vf = vf.reformat(format=enc.pix_fmt)
            vf.pts = frame.pts
            for packet in ctx.encode(vf):
                size += packet.size
            n += 1
        for packet in ctx.encode(None):
            size += packet.size
    finally:
        reader.close()
    return n / (time.perf_counter() - t0), n


def stamped_transcode(src: Path, dst: Path, encode: EncodeSettings) -> tuple[float, int]:
    """Decode -> RGB -> stamp -> encode with the pipeline's encoder and writer; returns (fps, frames).

    The baseline is the least a facecomp output does: every frame still gets the label and watermark and
    goes through the one writer (no code path encodes an unlabelled frame), so the ratio says what the
    effect itself (analysis, swap) costs on top."""
    reader = VideoReader(src)
    info = reader.info
    enc = resolve(encode, dst, info)
    stamper = Stamper(watermark_id=f"facecomp.bench:{dst.name}")
    writer = VideoWriter(dst, enc=enc, size=info.display_size, fps=info.fps, time_base=info.time_base,
                         color=info.color)
    n = 0
    t0 = time.perf_counter()
    try:
        for index, frame in reader.av_frames():
            writer.write(stamper.stamp(reader.convert(frame), index=index, owned=True))
            n += 1
        writer.finish()
        writer.commit()
    except BaseException:
        writer.abort()
        raise
    finally:
        reader.close()
    return n / (time.perf_counter() - t0), n


def run_bench(engine_factory: Callable[[], Engine], *, sizes=("720p", "1080p"), frames: int = 48,
              encode: EncodeSettings | None = None, face_rgb: np.ndarray, workdir: str | None = None,
              progress=None, extra: Callable[[str, Path], dict] | None = None) -> dict:
    """Measure each size; ``extra(size, clip)`` may add per-component figures (faces, swap)."""
    encode = encode or EncodeSettings(codec="h264", crf=18, preset="medium")
    results: dict = {"machine": {"cpu_count": os.cpu_count(), "platform": platform.platform(),
                                 "python": platform.python_version(), "pyav": av.__version__},
                     "encode": encode.to_dict(), "frames": frames}
    with tempfile.TemporaryDirectory(prefix="facecomp-bench-", dir=workdir) as tmp:
        tmpd = Path(tmp)
        for name in sizes:
            size = SIZES[name]
            clip = make_face_clip(tmpd / f"in_{name}.mp4", face_rgb, size, frames)
            # transcode-only and pipeline alternate twice; the best of each is reported, so a background
            # hiccup does not decide the ratio
            tfps, sfps, pfps, stage = 0.0, 0.0, 0.0, {}
            engine = engine_factory()
            for rep in range(2):
                fps, _ = transcode_only(clip, encode)
                tfps = max(tfps, fps)
                fps, _ = stamped_transcode(clip, tmpd / f"tx_{name}.mp4", encode)
                (tmpd / f"tx_{name}.mp4").unlink(missing_ok=True)
                sfps = max(sfps, fps)
                res = render_clip(clip, tmpd / f"out_{name}.mp4", engine, RenderSettings(encode=encode))
                if res.fps > pfps:
                    pfps, stage = res.fps, res.stage_ms
                for p in tmpd.glob(f"out_{name}.mp4*"):
                    p.unlink()
            entry = {"width": size[0], "height": size[1], "transcode_fps": round(tfps, 2),
                     "stamped_fps": round(sfps, 2), "pipeline_fps": round(pfps, 2),
                     "ratio": round(pfps / tfps, 3) if tfps else None,
                     "ratio_stamped": round(pfps / sfps, 3) if sfps else None,
                     "stages_ms": {k: round(v, 2) for k, v in sorted(stage.items())},
                     "processors": [p.name for p in engine.processors]}
            if extra is not None:
                entry.update(extra(name, clip))
            results[name] = entry
            if progress is not None:
                progress.message(f"{name}: transcode {tfps:.1f} fps, stamped {sfps:.1f} fps, pipeline "
                                 f"{pfps:.1f} fps, ratio {entry['ratio']} ({entry['ratio_stamped']} of stamped)")
    return results


def _flat(v) -> str:
    if isinstance(v, dict):
        return "(" + ", ".join(f"{k} {_flat(x)}" for k, x in v.items()) + ")"
    return str(v)


def format_table(results: dict) -> str:
    lines = [f"{'size':<7} {'transcode fps':>14} {'stamped fps':>12} {'pipeline fps':>13} {'ratio':>6} "
             f"{'/stamped':>9}   per-frame ms"]
    for name in SIZES:
        if name not in results:
            continue
        r = results[name]
        stages = ", ".join(f"{k} {v}" for k, v in r["stages_ms"].items())
        lines.append(f"{name:<7} {r['transcode_fps']:>14.1f} {r['stamped_fps']:>12.1f} {r['pipeline_fps']:>13.1f} "
                     f"{r['ratio']:>6.2f} {r['ratio_stamped']:>9.2f}   {stages}")
        for key, value in r.items():  # component figures (faces, swap), one line each
            if key.startswith(("faces_", "swap_")) and isinstance(value, dict):
                lines.append(f"        {key}: " + ", ".join(f"{k} {_flat(v)}" for k, v in value.items()))
    return "\n".join(lines)


__all__ = ["run_bench", "make_face_clip", "transcode_only", "stamped_transcode", "format_table", "SIZES"]
