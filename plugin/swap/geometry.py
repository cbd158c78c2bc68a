"""Small geometry the swappers share: 5 points from FaceMesh, similarity fits, the aligned-face templates.

``facecomp.faces.align`` is the faces package's home for alignment; the few functions here are the
swap-specific pieces (the inswapper's 128-px template, the .dfm whole-face template, pose descriptors).
"""

from __future__ import annotations

import numpy as np

from . import masks

#: ArcFace 5-point template at 112x112: eye (image left), eye (image right), nose tip, mouth corners.
ARCFACE_112 = np.array([[38.2946, 51.6963], [73.5318, 51.5014], [56.0252, 71.7366],
                        [41.5493, 92.3655], [70.7299, 92.2041]], np.float64)


def arcface_template(size: int) -> np.ndarray:
    """The 5-point template of an ArcFace-family crop (112, or 128 for inswapper), OpenCV convention."""
    from ..faces.align import template

    if size == 112 or size == 128:
        return template(f"arcface{size}")[0] - 0.5
    if size % 112 == 0:
        return ARCFACE_112 * (size / 112.0)
    return (ARCFACE_112 + np.array([8.0, 0.0])) * (size / 128.0)


def whole_face_template(size: int) -> np.ndarray:
    """The faces package's whole-face template (forehead to chin) at ``size``, OpenCV convention: the
    template facesets are cropped with, so .dfm models trained by facecomp see the framing they learnt."""
    from ..faces.align import template

    return template("face", size)[0] - 0.5


def to_cv(lm: np.ndarray) -> np.ndarray:
    """``facecomp.faces`` landmarks (pixel centres at +0.5) -> OpenCV's convention (centres on integers).

    Everything in the swap package (warps, masks, templates) works in OpenCV's convention.
    """
    return (np.asarray(lm, np.float32)[..., :2] - np.float32(0.5)).astype(np.float32)


def five_points(lm: np.ndarray) -> np.ndarray:
    """Eye centres, nose tip and mouth corners from FaceMesh landmarks, in ArcFace order (5, 2)."""
    if len(lm) >= 478:  # iris landmarks: the pupil centres are the best eye points
        eye_a, eye_b = lm[468], lm[473]
    else:
        eye_a, eye_b = lm[list(masks.EYE_RIGHT)].mean(axis=0), lm[list(masks.EYE_LEFT)].mean(axis=0)
    pts = np.array([eye_a, eye_b, lm[masks.NOSE_TIP], lm[masks.MOUTH_CORNERS[0]], lm[masks.MOUTH_CORNERS[1]]],
                   np.float64)
    if pts[0, 0] > pts[1, 0]:  # keep image-left first even for a mirrored landmark order
        pts[[0, 1]] = pts[[1, 0]]
        pts[[3, 4]] = pts[[4, 3]]
    return pts


def similarity(src: np.ndarray, dst: np.ndarray) -> np.ndarray:
    """Least-squares similarity (rotation, uniform scale, translation) mapping src -> dst, as 2x3 (Umeyama)."""
    src = np.asarray(src, np.float64)
    dst = np.asarray(dst, np.float64)
    mu_s, mu_d = src.mean(axis=0), dst.mean(axis=0)
    s0, d0 = src - mu_s, dst - mu_d
    cov = d0.T @ s0 / len(src)
    u, sig, vt = np.linalg.svd(cov)
    d = np.ones(2)
    if np.linalg.det(u) * np.linalg.det(vt) < 0:
        d[1] = -1
    r = u @ np.diag(d) @ vt
    var_s = (s0 ** 2).sum() / len(src)
    scale = (sig * d).sum() / max(var_s, 1e-12)
    m = np.zeros((2, 3))
    m[:, :2] = scale * r
    m[:, 2] = mu_d - scale * r @ mu_s
    return m


def invert(m: np.ndarray) -> np.ndarray:
    """Inverse of a 2x3 affine."""
    full = np.vstack([m, [0, 0, 1]])
    return np.linalg.inv(full)[:2]


def apply(m: np.ndarray, pts: np.ndarray) -> np.ndarray:
    """Apply a 2x3 affine to (N, 2) points."""
    return (np.asarray(pts, np.float64) @ m[:, :2].T + m[:, 2]).astype(np.float32)


def shape_descriptor(lm: np.ndarray) -> np.ndarray:
    """Pose-and-expression descriptor: the 468 points with position, scale and roll removed.

    Yaw, pitch and expression survive (they change the shape, not just its placement), so the nearest
    descriptor among several source photos is the photo whose pose is closest to the target's.
    """
    pts = np.asarray(lm[:468], np.float64)
    m = similarity(five_points(pts), arcface_template(112))
    return apply(m, pts).reshape(-1)
