"""Small synthetic media for tests, written with real PyAV encoders (never facecomp's own writer)."""

from __future__ import annotations

from fractions import Fraction
from pathlib import Path

import av
import cv2
import numpy as np


def pattern(h: int, w: int, i: int, channels: int = 3, dtype=np.uint8, seed: int = 0) -> np.ndarray:
    """A frame with gradients, a moving square and fixed noise: every pixel distinct enough to compare."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:h, 0:w]
    base = np.stack([(x * 255 // max(1, w - 1)), (y * 255 // max(1, h - 1)), ((x + y + 7 * i) % 256)], axis=2)
    base = base.astype(np.float64)
    s = max(4, min(h, w) // 5)
    x0 = (i * 7) % max(1, w - s)
    y0 = (i * 5) % max(1, h - s)
    base[y0:y0 + s, x0:x0 + s] = [250, 30, 60]
    base += rng.normal(0, 6, base.shape)
    base = np.clip(base, 0, 255) / 255.0
    if channels == 4:
        alpha = (0.25 + 0.75 * (x / max(1, w - 1)))[..., None]
        base = np.concatenate([base, alpha], axis=2)
    if dtype == np.uint16:
        return (base * 65535 + 0.5).astype(np.uint16)
    if dtype == np.float32:
        return base.astype(np.float32)
    return (base * 255 + 0.5).astype(np.uint8)


def write_clip(path: Path, *, w: int = 320, h: int = 240, n: int = 12, fps: int = 25, codec: str = "libx264",
               pix_fmt: str = "yuv420p", options: dict | None = None, audio: bool = False,
               rotation: int = 0, timecode: str | None = None, pts: list[int] | None = None,
               time_base: Fraction | None = None, container_options: dict | None = None,
               frames: list[np.ndarray] | None = None) -> Path:
    """Encode a clip; ``pts`` (in ``time_base``) makes it VFR; ``audio`` adds a sine AAC track."""
    with av.open(str(path), "w", options=container_options or {}) as c:
        s = c.add_stream(codec, rate=fps)
        s.width, s.height, s.pix_fmt = w, h, pix_fmt
        if options:
            s.codec_context.options = options
        if time_base is not None:
            s.time_base = time_base
            s.codec_context.time_base = time_base
        if timecode:
            s.metadata["timecode"] = timecode
        if rotation:
            s.set_display_rotation(rotation)
        a = c.add_stream("aac", rate=48000) if audio else None
        if a is not None:
            a.layout = "mono"
        for i in range(n):
            img = frames[i] if frames is not None else pattern(h, w, i)
            fmt = {3: "rgb24", 4: "rgba"}[img.shape[2]] if img.dtype == np.uint8 else \
                {3: "rgb48le", 4: "rgba64le"}[img.shape[2]]
            vf = av.VideoFrame.from_ndarray(img, format=fmt)
            if pts is not None:
                vf.pts = pts[i]
                vf.time_base = time_base
            for p in s.encode(vf):
                c.mux(p)
        for p in s.encode():
            c.mux(p)
        if a is not None:
            total = int(48000 * n / fps) + 4096
            t = np.arange(total) / 48000.0
            mux_audio(c, a, (0.2 * np.sin(2 * np.pi * 440 * t)).astype(np.float32), 48000)
    return path


def mux_audio(container, stream, samples: np.ndarray, rate: int, fmt: str = "fltp", chunk: int = 1024) -> None:
    """Encode mono ``samples`` into ``stream`` of ``container`` in ``chunk``-sample frames, and flush."""
    for k in range(0, len(samples) - chunk + 1, chunk):
        af = av.AudioFrame.from_ndarray(samples[None, k:k + chunk], format=fmt, layout="mono")
        af.sample_rate = rate
        af.pts = k
        for p in stream.encode(af):
            container.mux(p)
    for p in stream.encode():
        container.mux(p)


def write_sequence(folder: Path, frames: list[np.ndarray], ext: str = ".png", start: int = 0) -> Path:
    """Numbered image files (8/16-bit, RGB/RGBA) via OpenCV; returns the printf pattern."""
    folder.mkdir(parents=True, exist_ok=True)
    for i, img in enumerate(frames):
        bgr = cv2.cvtColor(img, cv2.COLOR_RGBA2BGRA if img.shape[2] == 4 else cv2.COLOR_RGB2BGR)
        cv2.imwrite(str(folder / f"f_{start + i:04d}{ext}"), bgr)
    return folder / f"f_%04d{ext}"


def read_sequence(folder: Path, ext: str = ".png") -> list[np.ndarray]:
    out = []
    for f in sorted(folder.glob(f"*{ext}")):
        img = cv2.imread(str(f), cv2.IMREAD_UNCHANGED)
        out.append(cv2.cvtColor(img, cv2.COLOR_BGRA2RGBA if img.shape[2] == 4 else cv2.COLOR_BGR2RGB))
    return out


def sample_media(*required: str) -> Path | None:
    """The shared sample media folder (``$FACECOMP_SAMPLE_MEDIA``, else ``../shared/media`` from the
    project root) when it holds every file in ``required``; None where it is absent (tests skip)."""
    import os

    env = os.environ.get("FACECOMP_SAMPLE_MEDIA")
    for c in ([Path(env)] if env else []) + [Path(__file__).resolve().parents[1].parent / "shared" / "media"]:
        if all((c / name).is_file() for name in required):
            return c
    return None


def first_frames(path: Path, count: int, start: int = 0) -> list[np.ndarray]:
    """RGB frames ``start .. start + count - 1`` of a clip (decoding stops there)."""
    out = []
    with av.open(str(path)) as c:
        for i, f in enumerate(c.decode(video=0)):
            if i >= start:
                out.append(f.to_ndarray(format="rgb24"))
            if len(out) == count:
                break
    return out


def decode_all(path: Path, fmt: str = "rgb24") -> list[np.ndarray]:
    with av.open(str(path)) as c:
        return [f.to_ndarray(format=fmt) for f in c.decode(c.streams.video[0])]


def packets(path: Path, kind: str = "audio") -> list[bytes]:
    with av.open(str(path)) as c:
        streams = [s for s in c.streams if s.type == kind]
        return [bytes(p) for p in c.demux(streams) if p.size]


def face_clip(path: Path, face_rgb: np.ndarray, size: tuple[int, int], frames: int, fps: int = 25) -> Path:
    """A plain H.264 clip (no label: a test input) of a real face drifting slowly over a textured
    background; the generator ``facecomp bench`` used before its clips were labelled, kept for the tests
    whose expectations were measured on it (BlazeFace misses this face on some keyframes)."""
    w, h = size
    rng = np.random.default_rng(0)
    bg = cv2.resize(rng.integers(40, 200, (h // 16 + 1, w // 16 + 1, 3), dtype=np.uint8), (w, h),
                    interpolation=cv2.INTER_CUBIC)
    side = int(min(w, h) * 0.45)
    face = cv2.resize(face_rgb, (side, side), interpolation=cv2.INTER_AREA)
    cx, cy = w // 2, h // 2
    with av.open(str(path), "w") as c:
        s = c.add_stream("libx264", rate=fps)
        s.width, s.height, s.pix_fmt = w, h, "yuv420p"
        s.codec_context.options = {"crf": "16", "preset": "veryfast"}
        for i in range(frames):
            img = bg.copy()
            dx = int(0.03 * w * np.sin(2 * np.pi * (i / max(1, frames))))
            dy = int(0.02 * h * np.cos(2 * np.pi * (i / max(1, frames))))
            x0 = int(np.clip(cx + dx - side // 2, 0, w - side))
            y0 = int(np.clip(cy + dy - side // 2, 0, h - side))
            img[y0:y0 + side, x0:x0 + side] = face
            for p in s.encode(av.VideoFrame.from_ndarray(img, format="rgb24")):
                c.mux(p)
        for p in s.encode():
            c.mux(p)
    return path


def glasses_rims(rgb: np.ndarray, lm: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(the eye band the source's texture keeps out, its darkest fifth outside the eyes): on a face in
    glasses the darkest fifth is the frames, the measure of whether a render kept them."""
    from facecomp.swap import masks, texture

    shape = rgb.shape[:2]
    band = texture.glasses_band(lm, shape) > 0.5
    eyes = np.zeros(shape, np.uint8)
    for loop in (masks.EYE_RIGHT, masks.EYE_LEFT):
        e = lm[list(loop)]
        c = e.mean(axis=0)
        cv2.fillPoly(eyes, [np.round(c + (e - c) * 1.3).astype(np.int32)], 1)
    luma = rgb.astype(np.float32) @ np.float32([0.299, 0.587, 0.114])
    around = band & (eyes == 0)
    return band, around & (luma <= np.percentile(luma[around], 20))


def stamped_like(output: Path, frames: list[np.ndarray], start: int = 0) -> list[np.ndarray]:
    """The source frames with the label and watermark the render at ``output`` put on its own frames.

    Each render's watermark carries its own manifest id, so its pattern (up to ~17 levels at small sizes)
    differs from render to render: a test that measures how far a kept region moved compares against
    these, or its figure moves by a level or two with the id."""
    from facecomp.disclosure.manifest import load_manifest, sidecar_path
    from facecomp.disclosure.stamp import Stamper

    stamper = Stamper(watermark_id=load_manifest(sidecar_path(output))["id"])
    return [np.asarray(stamper.stamp(f.copy(), index=start + k).pixels) for k, f in enumerate(frames)]
