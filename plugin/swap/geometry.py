"""The swappers' view of the one alignment geometry (``facecomp.faces.align`` and ``facecomp.faces.geometry``).

The Umeyama fit, the ArcFace template, the five points from FaceMesh and 2x3 invert/apply exist once, in
the faces package, in continuous pixel coordinates (pixel centres at +0.5). The swap package warps with
OpenCV directly, whose pixel centres sit on integers, so it converts at one place: :func:`to_cv` for
landmarks and the ``- 0.5`` in the template functions below. A similarity fit is the same in both
conventions up to that shift, so the fit itself is shared.
"""

from __future__ import annotations

import numpy as np

from ..faces.align import ARCFACE_112, estimate_similarity, five_points_from_mesh, template
from ..faces.geometry import apply as _apply
from ..faces.geometry import invert

__all__ = ["ARCFACE_112", "apply", "arcface_template", "five_points", "invert", "shape_descriptor", "similarity",
           "to_cv", "whole_face_template"]


def arcface_template(size: int) -> np.ndarray:
    """The 5-point template of an ArcFace-family crop (112, or 128 for inswapper), OpenCV convention."""
    if size == 112 or size == 128:
        return template(f"arcface{size}")[0] - 0.5
    if size % 112 == 0:
        return (template("arcface112")[0] - 0.5) * (size / 112.0)
    return (template("arcface128")[0] - 0.5) * (size / 128.0)


def whole_face_template(size: int) -> np.ndarray:
    """The faces package's whole-face template (forehead to chin) at ``size``, OpenCV convention: the
    template facesets are cropped with, so .dfm models trained by facecomp see the framing they learnt."""
    return template("face", size)[0] - 0.5


def to_cv(lm: np.ndarray) -> np.ndarray:
    """``facecomp.faces`` landmarks (pixel centres at +0.5) -> OpenCV's convention (centres on integers).

    Everything in the swap package (warps, masks, templates) works in OpenCV's convention.
    """
    return (np.asarray(lm, np.float32)[..., :2] - np.float32(0.5)).astype(np.float32)


def five_points(lm: np.ndarray) -> np.ndarray:
    """Eye centres, nose tip and mouth corners from FaceMesh landmarks, in ArcFace order (5, 2), in the
    landmarks' own convention (see :func:`facecomp.faces.align.five_points_from_mesh`)."""
    return five_points_from_mesh(lm)


def similarity(src: np.ndarray, dst: np.ndarray) -> np.ndarray:
    """Least-squares similarity src -> dst as 2x3 (the shared Umeyama fit)."""
    return estimate_similarity(src, dst)


def apply(m: np.ndarray, pts: np.ndarray) -> np.ndarray:
    """Apply a 2x3 affine to (N, 2) points; float32, as the swap package's landmarks are."""
    return _apply(m, pts).astype(np.float32)


def shape_descriptor(lm: np.ndarray) -> np.ndarray:
    """Pose-and-expression descriptor: the 468 points with position, scale and roll removed.

    Yaw, pitch and expression survive (they change the shape, not just its placement), so the nearest
    descriptor among several source photos is the photo whose pose is closest to the target's.
    """
    pts = np.asarray(lm[:468], np.float64)
    m = similarity(five_points(pts), arcface_template(112))
    return apply(m, pts).reshape(-1)
