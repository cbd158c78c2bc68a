"""Lip sync for the one-shot swap: the target's own fine structure around the mouth, the new face's tone.

Why: the morph already puts the source's lips on the target's lip landmarks, yet the mouth's *look* (the
lip line, the vermilion border, the dark gap of a mouth opened a pixel or two, the creases that move with
it) is the source photo's, warped from a closed mouth. A viewer, and a landmarker, reads lip motion from
exactly that fine structure: on the shared GRID clips a mouth opens 1-4 px, and FaceMesh read the swapped
mouths' opening with a correlation of 0.71-0.94 to the target's (0.99 with no swap). So around the
target's lips the face keeps its own low frequencies (the source's lip and skin tone, already relit to
the target's light) and takes the target's high frequencies, in two bands:

- inside the lips (the outer lip loop, grown a little), detail above ``lips_sigma`` face widths: the lip
  line, the border and the gap, as the target moves them;
- around the mouth (``around_grow`` face widths out), only the finest detail (above ``around_sigma``):
  what moves with the lips there, without the coarser texture (stubble, folds) that carries identity.

Measured (``facecomp score``, 3 renders each): see the README's realism table.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from ..errors import SettingsError
from . import masks


@dataclass(frozen=True)
class LipSettings:
    """Sizes in face widths (the face oval's extent), so they scale with the face."""

    strength: float = 1.0       # 0: the new face's own lip structure, 1: the target's
    lips_sigma: float = 0.02    # detail finer than this (Gaussian sigma) comes from the target on the lips
    lips_grow: float = 0.03     # the lip band: the outer lip loop grown by this
    around_sigma: float = 0.012  # ... and finer than this around the mouth
    around_grow: float = 0.12   # how far around the lips
    soft: float = 0.06          # soft edge of both bands

    def __post_init__(self) -> None:
        if not 0.0 <= self.strength <= 1.0:
            raise SettingsError(f"lip detail strength must be in [0, 1], got {self.strength}")
        for name in ("lips_sigma", "lips_grow", "around_sigma", "around_grow", "soft"):
            if not 0.0 <= getattr(self, name) <= 0.5:
                raise SettingsError(f"lip {name} must be between 0 and 0.5 face widths")


def lip_band(lm: np.ndarray, shape: tuple[int, int], width: float, grow: float, soft: float) -> np.ndarray:
    """0..1 over ``shape``: the outer lip loop grown by ``grow`` face widths, its edge soft over ``soft``."""
    m = np.zeros(shape, np.float32)
    cv2.fillPoly(m, [np.round(lm[list(masks.LIPS_OUTER)] * 16).astype(np.int32)], 1.0, lineType=cv2.LINE_AA,
                 shift=4)
    g = int(round(grow * width))
    if g > 0:
        m = cv2.dilate(m, cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * g + 1, 2 * g + 1)))
    s = soft * width
    if s > 0.5:
        m = cv2.GaussianBlur(m, (0, 0), s / 2.0)
        m[m < 1.0 / 1024.0] = 0.0  # the blur's far tails must not touch pixels away from the mouth
    return np.clip(m, 0.0, 1.0)


def _detail(img: np.ndarray, sigma: float) -> np.ndarray:
    return img - cv2.GaussianBlur(img, (0, 0), max(sigma, 0.5))


def carry_lips(face: np.ndarray, target: np.ndarray, lm: np.ndarray,
               settings: LipSettings = LipSettings()) -> np.ndarray:
    """``face`` (float32 RGB 0..1, patch space) with the target's fine structure in place of its own
    around the target's lips ``lm`` (468, 2); the same shape, a new array (``face`` is not changed)."""
    s = settings
    if s.strength <= 0.0:
        return face
    width = masks.face_width(lm)
    h, w = face.shape[:2]
    pts = lm[list(masks.LIPS_OUTER)]
    pad = (max(s.lips_grow, s.around_grow) + s.soft + 3 * max(s.lips_sigma, s.around_sigma)) * width + 2
    x0, y0 = (max(0, int(np.floor(v - pad))) for v in pts.min(axis=0))
    x1, y1 = (int(np.ceil(v + pad)) for v in pts.max(axis=0))
    x1, y1 = min(w, x1), min(h, y1)
    if x1 - x0 < 3 or y1 - y0 < 3:
        return face
    local = lm - np.float32([x0, y0])
    shape = (y1 - y0, x1 - x0)
    f, t = face[y0:y1, x0:x1], target[y0:y1, x0:x1]
    k = np.float32(s.strength)
    lips = lip_band(local, shape, width, s.lips_grow, s.soft)[..., None] * k
    around = lip_band(local, shape, width, s.around_grow, s.soft)[..., None] * k
    fine = _detail(t, s.around_sigma * width) - _detail(f, s.around_sigma * width)
    coarse = _detail(t, s.lips_sigma * width) - _detail(f, s.lips_sigma * width)
    # around the mouth the finest detail only; on the lips all detail up to lips_sigma
    out = face.copy()
    out[y0:y1, x0:x1] = np.clip(f + around * fine + lips * (coarse - fine), 0.0, 1.0)
    return out
