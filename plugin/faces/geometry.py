"""Affine helpers shared by detectors, landmarkers and alignment.

Convention: continuous pixel coordinates, pixel (i, j) covers [i, i+1) x [j, j+1), its centre at
(i+0.5, j+0.5). OpenCV places centres on integers; :func:`warp` converts so that a transform computed in
continuous coordinates is applied sub-pixel exactly.
"""

from __future__ import annotations

import cv2
import numpy as np

from .types import Roi


def to3(m: np.ndarray) -> np.ndarray:
    out = np.eye(3)
    out[:2] = m
    return out


def invert(m: np.ndarray) -> np.ndarray:
    """The inverse of a 2x3 affine, in closed form: LAPACK's general inverse costs 40-170 us on its
    first call after a model's inference (cold caches), several times a frame."""
    m = np.asarray(m, np.float64)
    a, b, tx = m[0]
    c, d, ty = m[1]
    det = a * d - b * c
    if det == 0.0:
        raise np.linalg.LinAlgError("singular affine transform")
    ia, ib, ic, id_ = d / det, -b / det, -c / det, a / det
    return np.array([[ia, ib, -(ia * tx + ib * ty)], [ic, id_, -(ic * tx + id_ * ty)]])


def apply(m: np.ndarray, pts: np.ndarray) -> np.ndarray:
    pts = np.asarray(pts, np.float64)
    return pts @ m[:2, :2].T + m[:2, 2]


def roi_matrix(roi: Roi, out_size: int) -> np.ndarray:
    """2x3 frame->crop transform that maps the rotated square ``roi`` onto an ``out_size`` square."""
    k = out_size / roi.size
    c, s = np.cos(roi.angle), np.sin(roi.angle)
    # crop = k * R(-angle) (p - centre) + out/2
    rot = np.array([[c, s], [-s, c]]) * k
    t = np.array([out_size / 2, out_size / 2]) - rot @ np.array([roi.cx, roi.cy])
    return np.hstack([rot, t[:, None]])


def warp(img: np.ndarray, m: np.ndarray, size: tuple[int, int], border=cv2.BORDER_CONSTANT,
         interp=cv2.INTER_LINEAR) -> np.ndarray:
    """Warp ``img`` by the continuous-coordinate 2x3 ``m`` into an image of ``size`` = (w, h)."""
    shift = np.array([[1, 0, 0.5], [0, 1, 0.5], [0, 0, 1]])
    unshift = np.array([[1, 0, -0.5], [0, 1, -0.5], [0, 0, 1]])
    mcv = (unshift @ to3(m) @ shift)[:2]
    return cv2.warpAffine(img, mcv, size, flags=interp, borderMode=border, borderValue=0)


def letterbox_matrix(w: int, h: int, out: int, angle: float = 0.0) -> np.ndarray:
    """Frame->square-input transform keeping aspect (zero padding), optionally rotated about the centre."""
    if angle == 0.0:
        return roi_matrix(Roi(w / 2, h / 2, float(max(w, h))), out)
    # a rotated frame's bounding square
    c, s = abs(np.cos(angle)), abs(np.sin(angle))
    side = max(w * c + h * s, w * s + h * c)
    return roi_matrix(Roi(w / 2, h / 2, float(side), angle), out)


def angle_of(p_from: np.ndarray, p_to: np.ndarray) -> float:
    """Angle of the vector from ``p_from`` to ``p_to`` (radians, image y down, 0 = pointing right)."""
    d = np.asarray(p_to, np.float64) - np.asarray(p_from, np.float64)
    return float(np.arctan2(d[1], d[0]))


def iou(a, b) -> float:
    ix = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    iy = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = ix * iy
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0


def to_rgb8(frame: np.ndarray) -> np.ndarray:
    """Any supported frame (gray, RGBA, uint16, float 0..1) -> contiguous RGB uint8 for the models."""
    a = np.asarray(frame)
    if a.ndim == 2:
        a = a[:, :, None]
    if a.ndim != 3 or a.shape[2] not in (1, 3, 4):
        from facecomp.errors import InvalidMediaError

        raise InvalidMediaError(f"frame of shape {a.shape} is not an image (H,W), (H,W,1|3|4)")
    if a.dtype == np.uint16:
        a = (a >> 8).astype(np.uint8)
    elif a.dtype.kind == "f":
        a = (np.clip(a, 0, 1) * 255 + 0.5).astype(np.uint8)
    elif a.dtype != np.uint8:
        a = np.clip(a, 0, 255).astype(np.uint8)
    if a.shape[2] == 1:
        a = np.repeat(a, 3, axis=2)
    elif a.shape[2] == 4:
        a = a[:, :, :3]
    return np.ascontiguousarray(a)
