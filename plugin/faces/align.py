"""Similarity alignment to standard face templates, both ways, sub-pixel exact.

Templates: ArcFace 5-point at 112 and 128 (the insightface convention: 128 = 112 points shifted 8 px right)
and a whole-face template (forehead to chin with margin) for models trained on whole faces. Template
coordinates are published in OpenCV's pixel-centre-on-integer convention; here every point is in
continuous coordinates (pixel centre at +0.5) and :func:`facecomp.faces.geometry.warp` applies the
transform consistently, so a point maps to exactly where its pixel content goes.
"""

from __future__ import annotations

import numpy as np

from facecomp.errors import SettingsError

from .geometry import apply, invert, warp
from .types import LEFT_EYE_RING, MOUTH_LEFT, MOUTH_RIGHT, NOSE_TIP, RIGHT_EYE_RING

# ArcFace (insightface) 5 points at 112x112: image-left eye, image-right eye, nose, mouth left, mouth right.
ARCFACE_112 = np.array([[38.2946, 51.6963], [73.5318, 51.5014], [56.0252, 71.7366],
                        [41.5493, 92.3655], [70.7299, 92.2041]], np.float64)


def template(name: str = "arcface112", size: int | None = None) -> tuple[np.ndarray, int]:
    """(5x2 points in continuous coordinates, output side) for ``arcface112`` | ``arcface128`` | ``face``."""
    if name == "arcface112":
        return ARCFACE_112 + 0.5, 112
    if name == "arcface128":
        return ARCFACE_112 + [8.0, 0.0] + 0.5, 128
    if name == "face":
        side = size or 256
        # Whole face: the ArcFace layout shrunk to 55 % and centred so brow, chin and cheeks fit inside.
        k = 0.55 * side / 112
        centre = ARCFACE_112.mean(0)
        return (ARCFACE_112 - centre) * k + [side / 2, side * 0.52], side
    raise SettingsError(f"unknown alignment template {name!r}", hint="use arcface112, arcface128 or face")


def estimate_similarity(src: np.ndarray, dst: np.ndarray) -> np.ndarray:
    """Least-squares similarity (rotation, uniform scale, translation) src->dst (Umeyama), as 2x3."""
    src = np.asarray(src, np.float64)
    dst = np.asarray(dst, np.float64)
    if src.shape != dst.shape or src.ndim != 2 or src.shape[1] != 2 or len(src) < 2:
        raise SettingsError(f"need two matching (N>=2, 2) point sets, got {src.shape} and {dst.shape}")
    ms, md = src.mean(0), dst.mean(0)
    a, b = src - ms, dst - md
    var = (a ** 2).sum() / len(src)
    if var <= 0:
        raise SettingsError("alignment points are all identical")
    cov = b.T @ a / len(src)
    u, d, vt = np.linalg.svd(cov)
    s = np.eye(2)
    if np.linalg.det(u) * np.linalg.det(vt) < 0:
        s[1, 1] = -1
    rot = u @ s @ vt
    scale = np.trace(np.diag(d) @ s) / var
    m = np.zeros((2, 3))
    m[:, :2] = scale * rot
    m[:, 2] = md - scale * rot @ ms
    return m


def five_points_from_mesh(lm: np.ndarray) -> np.ndarray:
    """ArcFace-order 5 points from FaceMesh: eye centres (iris centres when the 478 set is there), nose
    tip, mouth corners. Image-left eye is the subject's right eye (also for a mirrored landmark order).
    The one five-point extraction: the swappers use it too (``facecomp.swap.geometry``)."""
    lm = np.asarray(lm, np.float64)
    if len(lm) >= 478:
        eye_l, eye_r = lm[468], lm[473]
    else:
        eye_l, eye_r = lm[list(RIGHT_EYE_RING)].mean(0), lm[list(LEFT_EYE_RING)].mean(0)
    pts = np.stack([eye_l, eye_r, lm[NOSE_TIP], lm[MOUTH_RIGHT], lm[MOUTH_LEFT]])
    if pts[0, 0] > pts[1, 0]:  # keep image-left first even for a mirrored landmark order
        pts[[0, 1]] = pts[[1, 0]]
        pts[[3, 4]] = pts[[4, 3]]
    return pts


def matrix_to_template(points5: np.ndarray, name: str = "arcface112", size: int | None = None
                       ) -> tuple[np.ndarray, int]:
    """(2x3 frame->template transform, template side) for five frame points."""
    dst, side = template(name, size)
    return estimate_similarity(points5, dst), side


def align(rgb: np.ndarray, points5: np.ndarray, name: str = "arcface112", size: int | None = None
          ) -> tuple[np.ndarray, np.ndarray]:
    """Crop the face into the template: returns (crop, 2x3 frame->crop matrix)."""
    m, side = matrix_to_template(points5, name, size)
    return warp(rgb, m, (side, side)), m


def unalign(crop: np.ndarray, m: np.ndarray, frame_size: tuple[int, int]) -> np.ndarray:
    """The inverse warp: put a template-space image back into frame space (w, h). Pixels outside the crop
    come out 0; callers blend with a mask warped the same way."""
    return warp(crop, invert(m), frame_size)


def to_template(points: np.ndarray, m: np.ndarray) -> np.ndarray:
    return apply(m, points)


def from_template(points: np.ndarray, m: np.ndarray) -> np.ndarray:
    return apply(invert(m), points)
