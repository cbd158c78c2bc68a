"""Shared helpers for the swap tests: synthetic FaceMesh-shaped landmarks, faces and small ONNX models.

The landmarks put the named contours (oval, eyes, inner lips, nose tip, mouth corners) where a face has
them and scatter the other points inside the oval, so masks, meshes and alignment see a face-shaped
point set without any detector. The ONNX models are built with onnx.helper to the real contracts.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from facecomp.swap import masks


@dataclass(frozen=True, eq=False)
class FakeFace:
    bbox: tuple[float, float, float, float]
    landmarks: np.ndarray
    track_id: int | None = 1
    selected: bool = True
    score: float = 1.0


def synthetic_landmarks(cx: float, cy: float, width: float, mouth_open: float = 0.0, eyes_open: float = 0.35,
                        roll: float = 0.0, seed: int = 0) -> np.ndarray:
    """(468, 2) float32 landmarks of a frontal face centred at (cx, cy), ``width`` px wide, faces-package
    convention (pixel centres at +0.5)."""
    rng = np.random.default_rng(seed)
    pts = np.zeros((468, 2), np.float64)
    used = np.zeros(468, bool)
    a, b = width / 2, width * 0.62

    def put(idx, xy):
        pts[list(idx)] = xy
        used[list(idx)] = True

    t = np.linspace(-np.pi / 2, 1.5 * np.pi, len(masks.FACE_OVAL), endpoint=False)
    put(masks.FACE_OVAL, np.stack([a * np.cos(t), b * np.sin(t)], 1))

    def eye(loop, ex):
        n = len(loop)
        s = np.linspace(np.pi, -np.pi, n, endpoint=False)
        w, h = width * 0.1, width * 0.1 * eyes_open
        put(loop, np.stack([ex + w * np.cos(s), -0.12 * width + h * np.sin(s)], 1))

    eye(masks.EYE_RIGHT, -0.2 * width)
    eye(masks.EYE_LEFT, 0.2 * width)
    # fix the lid and corner points the openness tests read
    for lids, corners, ex in ((masks.EYE_RIGHT_LIDS, masks.EYE_RIGHT_CORNERS, -0.2 * width),
                              (masks.EYE_LEFT_LIDS, masks.EYE_LEFT_CORNERS, 0.2 * width)):
        pts[lids[0]] = (ex, -0.12 * width - 0.1 * width * eyes_open)
        pts[lids[1]] = (ex, -0.12 * width + 0.1 * width * eyes_open)
        pts[corners[0]] = (ex - 0.1 * width, -0.12 * width)
        pts[corners[1]] = (ex + 0.1 * width, -0.12 * width)
        used[list(lids) + list(corners)] = True
    n = len(masks.LIPS_INNER)
    s = np.linspace(np.pi, -np.pi, n, endpoint=False)
    mw, mh = width * 0.18, width * 0.005 + width * 0.15 * mouth_open
    put(masks.LIPS_INNER, np.stack([mw * np.cos(s), 0.3 * width + mh * np.sin(s)], 1))
    pts[masks.LIP_INNER_UPPER] = (0, 0.3 * width - mh)
    pts[masks.LIP_INNER_LOWER] = (0, 0.3 * width + mh)
    pts[masks.MOUTH_CORNERS[0]] = (-mw * 1.1, 0.3 * width)
    pts[masks.MOUTH_CORNERS[1]] = (mw * 1.1, 0.3 * width)
    pts[masks.NOSE_TIP] = (0, 0.08 * width)
    used[[masks.LIP_INNER_UPPER, masks.LIP_INNER_LOWER, *masks.MOUTH_CORNERS, masks.NOSE_TIP]] = True
    # the rest: scattered inside the oval, away from the eyes and mouth
    free = np.flatnonzero(~used)
    k = 0
    while k < len(free):
        x, y = rng.uniform(-0.9, 0.9) * a, rng.uniform(-0.9, 0.9) * b
        if (x / a) ** 2 + (y / b) ** 2 > 0.8:
            continue
        pts[free[k]] = (x, y)
        k += 1
    c, s_ = np.cos(roll), np.sin(roll)
    pts = pts @ np.array([[c, s_], [-s_, c]])
    return (pts + [cx, cy]).astype(np.float32)


def face_at(cx, cy, width, track=1, **kw) -> FakeFace:
    lm = synthetic_landmarks(cx, cy, width, **kw)
    x0, y0 = lm.min(0)
    x1, y1 = lm.max(0)
    return FakeFace((float(x0), float(y0), float(x1), float(y1)), lm, track)


def textured(h: int, w: int, seed: int = 0) -> np.ndarray:
    """A smooth, colourful RGB float32 0..1 image (gradients plus soft blobs): resampling-friendly."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:h, 0:w].astype(np.float32)
    img = np.stack([0.3 + 0.4 * x / w, 0.25 + 0.5 * y / h, 0.5 + 0.2 * np.sin(x / 23.0 + y / 31.0)], -1)
    for _ in range(6):
        bx, by, r = rng.uniform(0, w), rng.uniform(0, h), rng.uniform(10, 40)
        col = rng.uniform(-0.15, 0.15, 3)
        img += col * np.exp(-((x - bx) ** 2 + (y - by) ** 2) / (2 * r * r))[..., None]
    return np.clip(img, 0, 1).astype(np.float32)


def as_dtype(img: np.ndarray, dtype) -> np.ndarray:
    from facecomp.swap.blend import from_float

    return from_float(img, np.dtype(dtype))


class FixedFaces:
    """A stand-in analyzer with fixed faces per frame (the faces package is tested on its own)."""

    thread_safe = True

    def __init__(self, faces_by_index: dict[int, list]):
        self.faces_by_index = faces_by_index

    def faces_at(self, index, source):
        return self.faces_by_index.get(index, [])
