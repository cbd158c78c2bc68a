"""Per-stage timings of face replacement (detect, swap, blend) for ``facecomp bench`` and the report.

``measure`` times the stages on a real face: the registry's public-domain astronaut photo is both the
source and (placed on a textured background at the requested size, drifting) the target clip, so it
runs on every machine. ``bench_figures`` is the hook ``facecomp bench`` calls with its own test clip.
"""

from __future__ import annotations

import time

import cv2
import numpy as np

SIZES = {"480p": (854, 480), "720p": (1280, 720), "1080p": (1920, 1080), "2160p": (3840, 2160)}


class _Frames:
    """An in-memory FrameSource."""

    def __init__(self, frames: list[np.ndarray]):
        self.frames = frames

    def __len__(self) -> int:
        return len(self.frames)

    def frame(self, index: int) -> np.ndarray:
        return self.frames[index]


def _astronaut(progress=None) -> np.ndarray:
    from facecomp.models import registry

    bgr = cv2.imread(str(registry.ensure("astronaut", progress)), cv2.IMREAD_COLOR)
    return cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)


def synthetic_clip(face_rgb: np.ndarray, size: tuple[int, int], frames: int, seed: int = 0) -> list[np.ndarray]:
    """One face (45 % of the frame height) drifting over a smooth random background."""
    w, h = size
    rng = np.random.default_rng(seed)
    bg = cv2.resize(rng.integers(40, 200, (h // 16 + 1, w // 16 + 1, 3), dtype=np.uint8), (w, h),
                    interpolation=cv2.INTER_CUBIC)
    side = int(min(w, h) * 0.45)
    face = cv2.resize(face_rgb, (side, side), interpolation=cv2.INTER_AREA)
    out = []
    for i in range(frames):
        img = bg.copy()
        dx = int(0.03 * w * np.sin(2 * np.pi * i / max(1, frames)))
        dy = int(0.02 * h * np.cos(2 * np.pi * i / max(1, frames)))
        x0 = int(np.clip(w // 2 + dx - side // 2, 0, w - side))
        y0 = int(np.clip(h // 2 + dy - side // 2, 0, h - side))
        img[y0:y0 + side, x0:x0 + side] = face
        out.append(img)
    return out


def measure(size: str = "720p", frames: int = 24, source_rgb: np.ndarray | None = None,
            clip: list[np.ndarray] | None = None, color: str = "rct", blend: str = "multiband",
            progress=None) -> dict:
    """Mean ms per frame of each stage for one face: detect (analyzer: detection on keyframes, landmark
    tracking between), swap (the morph warp), blend (mask, colour, paste-back), and their total."""
    from ..faces.analyzer import FaceAnalyzer, analyze_image
    from ..settings import EffectSettings
    from .factory import blend_settings, face_settings
    from .morph import MorphSource, MorphSwapper
    from .occlusion import ClipFrames
    from .processor import Blender

    if size not in SIZES:
        raise ValueError(f"unknown size {size!r}: use one of {', '.join(SIZES)}")
    src = source_rgb if source_rgb is not None else _astronaut(progress)
    frames_list = clip if clip is not None else synthetic_clip(src, SIZES[size], frames)
    source = _Frames(frames_list)
    sfaces = analyze_image(src)
    swapper = MorphSwapper([MorphSource.from_image(src, sfaces[0].landmarks, "astronaut")])
    # the render's own settings for the morph (Engine.from_settings builds the same)
    effect = EffectSettings(color=color, blend=blend)
    blender = Blender(blend_settings(effect, swapper.target_interiors), swapper.target_interiors)
    analyzer = FaceAnalyzer(face_settings(effect, iris=False))
    t0 = time.perf_counter()
    # the first call opens the keyframe index (lazy for the default selection: it then grows with the
    # frames asked for, so most detector time lands in the per-frame loop below); both count as detect
    analyzer.faces_at(0, source)
    index_s = time.perf_counter() - t0
    for f in analyzer.faces_at(0, source):  # warm-up: first-call costs (OpenCV's Lab tables) are not per frame
        for p in swapper.swap(source.frame(0), [f]):
            # (a clip's blender shares these loaded models: model loading is not a per-frame cost either)
            Blender(blender.settings, swapper.target_interiors, shared=blender).paste(source.frame(0).copy(), p, None)
    det = sw = bl = 0.0
    n_faces = 0
    for i in range(len(source)):
        frame = source.frame(i)
        t0 = time.perf_counter()
        faces = [f for f in analyzer.faces_at(i, source) if f.selected]
        t1 = time.perf_counter()
        patches = swapper.swap(frame, faces)
        t2 = time.perf_counter()
        out = frame.copy()
        # the clip's frames, as a render's clip session gives them: hands are followed through the clip,
        # the palm detector on its cadence (alone, a frame would run it every time)
        clip = ClipFrames(i, lambda track, j: _track_at(analyzer, source, track, j))
        for p in patches:
            blender.paste(out, p, i, clip=clip)
        t3 = time.perf_counter()
        det, sw, bl = det + t1 - t0, sw + t2 - t1, bl + t3 - t2
        n_faces += len(faces)
    n = len(source)
    detect_ms = 1000 * (det + index_s) / n
    res = {"size": size, "frames": n, "faces_per_frame": round(n_faces / n, 2),
           "stages_ms": {"detect": round(detect_ms, 2), "swap": round(1000 * sw / n, 2),
                         "blend": round(1000 * bl / n, 2)}}
    res["stages_ms"]["total"] = round(sum(res["stages_ms"].values()), 2)
    return res


def _track_at(analyzer, source, track: int, j: int):
    """(frame j, the track's face box there) or None: what :class:`ClipFrames` asks of a clip."""
    if not 0 <= j < len(source):  # a new hand is checked on the frame after (none past the end)
        return None
    face = next((f for f in analyzer.faces_at(j, source) if f.track_id == track), None)
    if face is None:
        return None
    lm = np.asarray(face.landmarks, np.float32)
    lo, hi = lm.min(axis=0), lm.max(axis=0)
    return source.frame(j), (float(lo[0]) + 0.5, float(lo[1]) + 0.5, float(hi[0]) + 0.5, float(hi[1]) + 0.5)


def bench_figures(size: str, clip) -> dict:
    """``facecomp bench`` hook: the swap stages on the bench's own clip (first 24 frames)."""
    from ..video.reader import VideoReader

    with VideoReader(clip, dtype="uint8", keep_alpha=False) as r:
        frames = [f.image for f in r.frames(0, min(len(r), 24))]
    m = measure(size, clip=frames)
    return {"swap_stages_ms": m["stages_ms"]}
