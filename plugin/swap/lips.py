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

And the lips' motion below the mouth (:func:`carry_motion`, ``--lip-motion``, off by default): as the
jaw drops the target's lower lip and chin edges move and change shading, which FaceMesh reads a mouth's
opening from and a still photo warped onto the landmarks does not give. The target's change of detail
against a frame of its own with the mouth most closed is added there: what moves, not what the target's
chin looks like (dlib reads an identity from that). It costs likeness on small faces in motion, where
the two frames' alignment is of the size of the motion itself.

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
    # lip motion (:func:`carry_motion`): the target's change of detail against a closed-mouth frame of its own
    motion: float = 0.0         # how much of that change is added (times ``strength``; 0.7 measured)
    motion_sigma: float = 0.04  # detail finer than this
    motion_grow: float = 0.2    # the outer lip loop grown by this, below the mouth line, between the corners
    motion_soft: float = 0.05   # soft edge of that band (and 0.6 of it across the mouth line and corners)

    def __post_init__(self) -> None:
        if not 0.0 <= self.strength <= 1.0:
            raise SettingsError(f"lip detail strength must be in [0, 1], got {self.strength}")
        if not 0.0 <= self.motion <= 1.0:
            raise SettingsError(f"lip motion must be in [0, 1], got {self.motion}")
        for name in ("lips_sigma", "lips_grow", "around_sigma", "around_grow", "soft", "motion_sigma",
                     "motion_grow", "motion_soft"):
            if not 0.0 <= getattr(self, name) <= 0.5:
                raise SettingsError(f"lip {name} must be between 0 and 0.5 face widths")


def lip_band(lm: np.ndarray, shape: tuple[int, int], width: float, grow: float, soft: float) -> np.ndarray:
    """0..1 over ``shape``: the outer lip loop grown by ``grow`` face widths, its edge soft over ``soft``."""
    return masks.loop_bands(lm, (masks.LIPS_OUTER,), shape, width, ((grow, soft),))[0]


def _lowpasses(img: np.ndarray, sigmas) -> list[np.ndarray]:
    """Gaussian low-passes of ``img``; wide ones (sigma >= 3 px) on one shared half-size copy (they are
    smooth: the error is far under a level)."""
    h, w = img.shape[:2]
    small = None
    out = []
    for sigma in sigmas:
        sigma = max(sigma, 0.5)
        if sigma < 3.0 or min(h, w) < 16:
            out.append(cv2.GaussianBlur(img, (0, 0), sigma))
            continue
        if small is None:
            small = cv2.resize(img, ((w + 1) // 2, (h + 1) // 2), interpolation=cv2.INTER_AREA)
        out.append(cv2.resize(cv2.GaussianBlur(small, (0, 0), sigma / 2.0), (w, h), interpolation=cv2.INTER_LINEAR))
    return out


def _lip_box(lm: np.ndarray, shape: tuple[int, int], pad: float) -> tuple[int, int, int, int] | None:
    """(x0, y0, x1, y1): the outer lip loop's box grown by ``pad`` pixels, within ``shape``; None when
    under 3 pixels either way (nothing of the mouth is in the patch)."""
    h, w = shape
    pts = lm[list(masks.LIPS_OUTER)]
    x0, y0 = (max(0, int(np.floor(v - pad))) for v in pts.min(axis=0))
    x1, y1 = (int(np.ceil(v + pad)) for v in pts.max(axis=0))
    x1, y1 = min(w, x1), min(h, y1)
    return None if x1 - x0 < 3 or y1 - y0 < 3 else (x0, y0, x1, y1)


def carry_lips(face: np.ndarray, target: np.ndarray, lm: np.ndarray,
               settings: LipSettings = LipSettings(), inplace: bool = False) -> np.ndarray:
    """``face`` (float32 RGB 0..1, patch space) with the target's fine structure in place of its own
    around the target's lips ``lm`` (468, 2); a new array, or ``face`` itself changed when ``inplace``."""
    s = settings
    if s.strength <= 0.0:
        return face
    width = masks.face_width(lm)
    reach = max(s.lips_grow, s.around_grow) + 0.5 * s.soft  # where the bands end
    box = _lip_box(lm, face.shape[:2], (reach + 3 * max(s.lips_sigma, s.around_sigma)) * width + 2)  # + blurs
    if box is None:
        return face
    x0, y0, x1, y1 = box
    local = lm - np.float32([x0, y0])
    shape = (y1 - y0, x1 - x0)
    out = face if inplace else face.copy()
    f, t = out[y0:y1, x0:x1], target[y0:y1, x0:x1]
    lips, around = masks.loop_bands(local, (masks.LIPS_OUTER,), shape, width,
                                    ((s.lips_grow, s.soft), (s.around_grow, s.soft)))
    k = np.float32(s.strength)
    lips *= k
    around *= k
    # detail is linear: the target's detail minus the face's is the detail of their difference d, so
    # around the mouth f + (d - low_a) (the finest detail), on the lips f + (d - low_l) (all up to lips_sigma)
    d = t - f
    low_a, low_l = _lowpasses(d, (s.around_sigma * width, s.lips_sigma * width))
    d *= around[..., None]
    low_a *= (lips - around)[..., None]
    low_l *= lips[..., None]
    d += low_a
    d -= low_l
    f += d
    np.clip(f, 0.0, 1.0, out=f)
    return out


#: points that hold still as a mouth opens (eye corners, nose bridge and tip, brows): a closed-mouth frame
#: of the track is aligned on them, so what differs below is the mouth's motion, not the head's
STILL_POINTS = (33, 133, 362, 263, 168, 6, 197, 195, 5, 4, 1, 70, 300, 105, 334)


def align_reference(rgb8: np.ndarray, ref_lm: np.ndarray, lm: np.ndarray, shape: tuple[int, int],
                    origin: tuple[int, int] = (0, 0)) -> np.ndarray:
    """The track's closed-mouth frame ``rgb8`` (uint8, its landmarks ``ref_lm``, OpenCV convention) in the
    patch space of ``lm``: float32 0..1 of ``shape``, aligned by a similarity on :data:`STILL_POINTS`;
    ``origin``: where that output starts in patch space (a crop of it)."""
    from .geometry import similarity

    idx = list(STILL_POINTS)
    m = similarity(np.asarray(ref_lm, np.float64)[idx, :2], np.asarray(lm, np.float64)[idx, :2]).astype(np.float64)
    m[:, 2] -= origin
    out = cv2.warpAffine(rgb8, m, (shape[1], shape[0]), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT)
    return out.astype(np.float32) * np.float32(1.0 / 255.0)


def motion_band(lm: np.ndarray, shape: tuple[int, int], width: float, settings: LipSettings = LipSettings()) -> np.ndarray:
    """0..1 over ``shape``: the lip band grown by ``motion_grow``, below the line through the mouth's centre
    (across the face, square to the eye line) and between the mouth corners, its edges soft."""
    s = settings
    band = lip_band(lm, shape, width, s.motion_grow, s.motion_soft)
    e = lm[263] - lm[33]
    ang = float(np.arctan2(e[1], e[0]))
    c, sn = np.cos(ang), np.sin(ang)
    left, right = lm[masks.MOUTH_CORNERS[0]], lm[masks.MOUTH_CORNERS[1]]
    mc = (left + right) / 2.0
    half = float(np.linalg.norm(right - left)) / 2.0
    yy, xx = np.mgrid[0:shape[0], 0:shape[1]].astype(np.float32)
    dx, dy = xx - mc[0], yy - mc[1]
    u, v = dx * c + dy * sn, -dx * sn + dy * c
    edge = max(0.6 * s.motion_soft * width, 0.5)
    # soft steps across the mouth line and past the corners (a ramp of `edge` pixels each)
    below = np.clip(0.5 + v / edge, 0.0, 1.0)
    between = np.clip(0.5 + (half - np.abs(u)) / edge, 0.0, 1.0)
    return (band * below * between).astype(np.float32)


def carry_motion(face: np.ndarray, target: np.ndarray, lm: np.ndarray, reference: np.ndarray,
                 reference_lm: np.ndarray, settings: LipSettings = LipSettings(), inplace: bool = False) -> np.ndarray:
    """``face`` (float32 RGB 0..1, patch space) plus the target's change of fine detail below its lips
    ``lm`` against ``reference``, the same track's closed-mouth frame (RGB uint8, its landmarks
    ``reference_lm``), aligned into this patch (:func:`align_reference`, over the band only); a new array,
    or ``face`` itself changed when ``inplace``."""
    s = settings
    k = s.strength * s.motion
    if k <= 0.0:
        return face
    width = masks.face_width(lm)
    box = _lip_box(lm, face.shape[:2], (s.motion_grow + s.motion_soft + 3 * s.motion_sigma) * width + 2)
    if box is None:
        return face
    x0, y0, x1, y1 = box
    local = lm - np.float32([x0, y0])
    band = motion_band(local, (y1 - y0, x1 - x0), width, s)
    if not band.any():
        return face
    out = face if inplace else face.copy()
    f = out[y0:y1, x0:x1]
    ref = align_reference(reference, reference_lm, lm, (y1 - y0, x1 - x0), (x0, y0))
    d = target[y0:y1, x0:x1] - ref  # detail is linear: the detail of the difference
    d -= _lowpasses(d, (s.motion_sigma * width,))[0]
    d *= (np.float32(k) * band)[..., None]
    f += d
    np.clip(f, 0.0, 1.0, out=f)
    return out


#: facing pairs of the inner lip contour (upper, lower): the centre and either side
_GAP_PAIRS = ((13, 14), (82, 87), (312, 317), (81, 178), (311, 402))


def mouth_gap(lm: np.ndarray) -> float:
    """Inner-lip gap over mouth width, over five facing pairs (one pair is a pixel on a small face)."""
    width = float(np.linalg.norm(lm[masks.MOUTH_CORNERS[0]] - lm[masks.MOUTH_CORNERS[1]]))
    return float(np.mean([float(np.linalg.norm(lm[a] - lm[b])) for a, b in _GAP_PAIRS])) / max(width, 1e-6)
