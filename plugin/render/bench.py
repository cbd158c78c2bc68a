"""``facecomp bench``: transcode-only vs full-pipeline speed, measured side by side in one run.

Both sides decode the same generated clip (a real face moving over a textured background) and encode with
the same encoder settings; the pipeline side adds conversion, the effect (face analysis + swap when
configured) and the disclosure stamp, and writes every disclosure layer. The ratio pipeline/transcode says
what the effect costs. The transcode side is a bare measurement loop whose file is deleted at once.
"""

from __future__ import annotations

import os
import platform
import tempfile
import time
from pathlib import Path
from typing import Callable

import av
import cv2
import numpy as np

from ..effect import Engine
from ..video.encode import EncodeSettings, resolve
from ..video.reader import VideoReader
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
    with av.open(str(path), "w") as c:
        s = c.add_stream("libx264", rate=fps)
        s.width, s.height, s.pix_fmt = w, h, "yuv420p"
        s.codec_context.options = {"crf": "16", "preset": "veryfast"}
        for i in range(frames):
            img = bg.copy()
            for j, (cx, cy) in enumerate(slots):
                dx = int(0.03 * w * np.sin(2 * np.pi * (i / max(1, frames)) + j))
                dy = int(0.02 * h * np.cos(2 * np.pi * (i / max(1, frames)) + j))
                x0 = int(np.clip(cx + dx - side // 2, 0, w - side))
                y0 = int(np.clip(cy + dy - side // 2, 0, h - side))
                img[y0:y0 + side, x0:x0 + side] = face
            for p in s.encode(av.VideoFrame.from_ndarray(img, format="rgb24")):
                c.mux(p)
        for p in s.encode():
            c.mux(p)
    return path


def transcode_only(src: Path, dst: Path, encode: EncodeSettings) -> tuple[float, int]:
    """Decode -> RGB -> encode with the pipeline's encoder settings; returns (fps, frames)."""
    info = VideoReader(src).info
    enc = resolve(encode, dst, info)
    n = 0
    t0 = time.perf_counter()
    with av.open(str(src)) as ic, av.open(str(dst), "w") as oc:
        ivs = ic.streams.video[0]
        ivs.thread_type = "AUTO"
        s = oc.add_stream(enc.encoder, rate=info.fps)
        s.width, s.height, s.pix_fmt = info.width, info.height, enc.pix_fmt
        s.codec_context.options = dict(enc.options, threads="0")
        matrix = info.color.matrix_for_conversion(info.height)
        for frame in ic.decode(ivs):
            rgb = frame.reformat(format="rgb24", src_colorspace=matrix, src_color_range=1,
                                 dst_color_range=2).to_ndarray()
            vf = av.VideoFrame.from_ndarray(rgb, format="rgb24").reformat(
                format=enc.pix_fmt, dst_colorspace=matrix, dst_color_range=1, src_color_range=2)
            for p in s.encode(vf):
                oc.mux(p)
            n += 1
        for p in s.encode():
            oc.mux(p)
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
            tfps, pfps, stage = 0.0, 0.0, {}
            engine = engine_factory()
            for rep in range(2):
                fps, _ = transcode_only(clip, tmpd / f"tx_{name}.mp4", encode)
                (tmpd / f"tx_{name}.mp4").unlink(missing_ok=True)
                tfps = max(tfps, fps)
                res = render_clip(clip, tmpd / f"out_{name}.mp4", engine, RenderSettings(encode=encode))
                if res.fps > pfps:
                    pfps, stage = res.fps, res.stage_ms
                for p in tmpd.glob(f"out_{name}.mp4*"):
                    p.unlink()
            entry = {"width": size[0], "height": size[1], "transcode_fps": round(tfps, 2),
                     "pipeline_fps": round(pfps, 2), "ratio": round(pfps / tfps, 3) if tfps else None,
                     "stages_ms": {k: round(v, 2) for k, v in sorted(stage.items())},
                     "processors": [p.name for p in engine.processors]}
            if extra is not None:
                entry.update(extra(name, clip))
            results[name] = entry
            if progress is not None:
                progress.message(f"{name}: transcode {tfps:.1f} fps, pipeline {pfps:.1f} fps, "
                                 f"ratio {entry['ratio']}")
    return results


def _flat(v) -> str:
    if isinstance(v, dict):
        return "(" + ", ".join(f"{k} {_flat(x)}" for k, x in v.items()) + ")"
    return str(v)


def format_table(results: dict) -> str:
    lines = [f"{'size':<7} {'transcode fps':>14} {'pipeline fps':>13} {'ratio':>6}   per-frame ms"]
    for name in SIZES:
        if name not in results:
            continue
        r = results[name]
        stages = ", ".join(f"{k} {v}" for k, v in r["stages_ms"].items())
        lines.append(f"{name:<7} {r['transcode_fps']:>14.1f} {r['pipeline_fps']:>13.1f} {r['ratio']:>6.2f}   {stages}")
        for key, value in r.items():  # component figures (faces, swap), one line each
            if key.startswith(("faces_", "swap_")) and isinstance(value, dict):
                lines.append(f"        {key}: " + ", ".join(f"{k} {_flat(v)}" for k, v in value.items()))
    return "\n".join(lines)


__all__ = ["run_bench", "make_face_clip", "transcode_only", "format_table", "SIZES"]
