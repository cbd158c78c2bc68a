"""Face masks from 468-point FaceMesh landmarks: hull, mouth and eye interiors, combined by minimum.

The index lists below name contours of the FaceMesh topology (which landmark sits where on the face);
they are facts about the model's output, not a triangulation. Masks are float32 0..1 in whatever space
the landmarks are given in (a frame crop or an aligned face), so the same code serves every swapper.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from ..errors import SettingsError

#: inner lip contour, a closed loop (mouth opening)
LIPS_INNER = (78, 95, 88, 178, 87, 14, 317, 402, 318, 324, 308, 415, 310, 311, 312, 13, 82, 81, 80, 191)
#: outer lip contour, a closed loop
LIPS_OUTER = (61, 146, 91, 181, 84, 17, 314, 405, 321, 375, 291, 409, 270, 269, 267, 0, 37, 39, 40, 185)
#: the subject's right eye (image left for a frontal face), closed loop along the lid margins
EYE_RIGHT = (33, 7, 163, 144, 145, 153, 154, 155, 133, 173, 157, 158, 159, 160, 161, 246)
#: the subject's left eye, closed loop
EYE_LEFT = (263, 249, 390, 373, 374, 380, 381, 382, 362, 398, 384, 385, 386, 387, 388, 466)
#: face oval (jaw, cheeks, forehead line), closed loop
FACE_OVAL = (10, 338, 297, 332, 284, 251, 389, 356, 454, 323, 361, 288, 397, 365, 379, 378, 400, 377, 152,
             148, 176, 149, 150, 136, 172, 58, 132, 93, 234, 127, 162, 21, 54, 103, 67, 109)
#: FaceMesh's brow outlines (upper edge out, lower edge back), right and left
BROWS = ((70, 63, 105, 66, 107, 55, 65, 52, 53, 46), (300, 293, 334, 296, 336, 285, 295, 282, 283, 276))
#: the lower nose: round the alae and nostrils, over the columella to the tip, a closed loop
NOSE_LOWER = (64, 218, 237, 44, 1, 274, 457, 438, 294, 327, 326, 2, 97, 98)
NOSE_TIP = 1
MOUTH_CORNERS = (61, 291)
LIP_INNER_UPPER, LIP_INNER_LOWER = 13, 14
EYE_RIGHT_LIDS, EYE_LEFT_LIDS = (159, 145), (386, 374)
EYE_RIGHT_CORNERS, EYE_LEFT_CORNERS = (33, 133), (362, 263)


@dataclass(frozen=True)
class MaskSettings:
    """How the blend mask is built. Sizes are fractions of the face width so they scale with the face."""

    erode: float = 0.01          # gap between the hull and the outer end of the soft edge
    feather: float = 0.05        # width of the soft edge (it lies inside the eroded hull)
    keep_mouth: bool = True      # mouth interior comes from the target when open
    keep_eyes: bool = True       # eye interiors (gaze, blinks) come from the target when open
    open_ratio: float = 0.08     # opening / width above which a mouth or eye counts as open (0: always;
    #                              the morph's frontal texture has no mouth or eye interior of its own, so
    #                              below this the target's still shows through the texture's holes)
    forehead: float = 0.6        # share of the forehead (above the eye line) inside the mask
    lips: float = 0.0            # share of the target's own lips kept (lip sync: their shape and shading)
    lip_detail: float = 1.0      # with keep_mouth and the target's interiors (the morph): how much of the
    #                              target's fine structure around the lips replaces the new face's (.lips)
    lip_motion: float = 0.0      # ... and how much of the target's change below the mouth against a closed-
    #                              mouth frame of its own is added (a clip session's, .lips.carry_motion)

    def __post_init__(self) -> None:
        for name in ("erode", "feather"):
            v = getattr(self, name)
            if not -0.2 <= v <= 0.5:
                raise SettingsError(f"mask {name} must be between -0.2 and 0.5 of the face width, got {v}")
        if not 0.0 <= self.lips <= 1.0:
            raise SettingsError(f"mask lips must be in [0, 1], got {self.lips}")
        if not 0.0 <= self.lip_detail <= 1.0:
            raise SettingsError(f"mask lip_detail must be in [0, 1], got {self.lip_detail}")
        if not 0.0 <= self.lip_motion <= 1.0:
            raise SettingsError(f"mask lip_motion must be in [0, 1], got {self.lip_motion}")
        if not 0.0 < self.forehead <= 1.0:
            raise SettingsError(f"mask forehead must be in (0, 1], got {self.forehead}")
        if not 0.0 <= self.open_ratio < 1.0:
            raise SettingsError(f"mask open_ratio must be in [0, 1), got {self.open_ratio}")


def face_width(lm: np.ndarray) -> float:
    """Width of the face oval in the landmarks' units (the scale every mask size is relative to)."""
    oval = lm[list(FACE_OVAL)]
    return float(max(oval[:, 0].max() - oval[:, 0].min(), oval[:, 1].max() - oval[:, 1].min(), 1.0))


def _poly(mask: np.ndarray, pts: np.ndarray, value: float) -> None:
    cv2.fillPoly(mask, [np.round(pts * 16).astype(np.int32)], value, lineType=cv2.LINE_AA, shift=4)


def hull_mask(lm: np.ndarray, shape: tuple[int, int], forehead: float = 0.6) -> np.ndarray:
    """The convex hull of the landmarks, antialiased, float32 0..1, with the forehead cut down.

    FaceMesh's top row reaches the hairline, where fringes and hats live; points above the eye line
    are pulled towards it to ``forehead`` of their height (along the face's own up axis, so roll does
    not matter). 1.0 keeps the full hull.
    """
    pts = lm[:468].astype(np.float32)
    if forehead < 1.0:
        eyes = (pts[list(EYE_RIGHT)].mean(axis=0) + pts[list(EYE_LEFT)].mean(axis=0)) / 2
        mouth = (pts[MOUTH_CORNERS[0]] + pts[MOUTH_CORNERS[1]]) / 2
        up = eyes - mouth
        up /= max(float(np.linalg.norm(up)), 1e-6)
        h = (pts - eyes) @ up
        lift = np.where(h > 0, h * (forehead - 1.0), 0.0).astype(np.float32)
        pts = pts + lift[:, None] * up[None, :]
    m = np.zeros(shape, np.float32)
    hull = cv2.convexHull(pts).reshape(-1, 2)
    _poly(m, hull, 1.0)
    return m


def _band_grid(ramp: float) -> int:
    """The coarse grid step (pixels) a band with a ``ramp`` pixel edge is made on: at least 3 cells a ramp."""
    return int(min(4, max(1, ramp // 3)))


def loop_bands(lm: np.ndarray, loops, shape: tuple[int, int], width: float, sizes) -> list[np.ndarray]:
    """Bands around closed landmark ``loops`` (the outer lips, the eyes), one per ``(grow, soft)`` of
    ``sizes``, from one distance transform: the loops grown by ``grow`` face widths, the edge a smooth
    step ``soft`` wide centred there (1 inside, exactly 0 beyond). A big face's bands are made on a
    coarser grid (a step of at least 3 of its cells) and scaled up: they are smooth."""
    h, w = shape
    ramp = max(min(soft for _, soft in sizes) * width, 1.0)
    q = _band_grid(ramp)
    sh, sw = (h + q - 1) // q, (w + q - 1) // q
    m = np.full((sh, sw), 255, np.uint8)
    polys = [np.round(((lm[list(loop)] + 0.5) / q - 0.5) * 16).astype(np.int32) for loop in loops]
    cv2.fillPoly(m, polys, 0, lineType=cv2.LINE_8, shift=4)
    if cv2.countNonZero(m) == m.size:  # no loop inside the grid (a face at a frame's edge): no band
        return [np.zeros(shape, np.float32) for _ in sizes]
    # the 5x5 mask, not DIST_MASK_PRECISE: on a mask whose columns mostly hold no zero (the lips are a
    # small island) the precise transform gave different distances from run to run in a render (two
    # results alternating, so float outputs differed in the last bit between a server and an in-process
    # render); the 5x5 chamfer is within about 2% of the true distance, which the smooth bands absorb
    dist = cv2.distanceTransform(m, cv2.DIST_L2, cv2.DIST_MASK_5) * np.float32(q)
    out = []
    for grow, soft in sizes:
        r = max(soft * width, 1.0)
        # (the loop's own cells are at distance 0, their outside neighbours at one cell: the edge is between)
        t = (np.float32(grow * width + 0.5 * q + 0.5 * r) - dist) * np.float32(1.0 / r)
        np.clip(t, 0.0, 1.0, out=t)
        t = t * t * (np.float32(3.0) - np.float32(2.0) * t)
        if q > 1:
            t = cv2.resize(t, (sw * q, sh * q), interpolation=cv2.INTER_LINEAR)[:h, :w]
        out.append(t)
    return out


def loop_band_into(out: np.ndarray, lm: np.ndarray, loops, width: float, grow: float, soft: float) -> np.ndarray:
    """``out`` (float32) raised in place to the band of :func:`loop_bands` round ``loops`` where that is
    higher, the band worked out only in a window round the loops (beyond it the band is 0): the same
    values (to a last bit of the upsampling's rounding) for a fraction of the cost when the loops are small
    against ``out`` (the nose in a face patch). The window starts on the coarse grid's cells, so the cells
    are the same."""
    h, w = out.shape
    pts = np.concatenate([lm[list(loop)] for loop in loops])
    q = _band_grid(max(soft * width, 1.0))  # the grid loop_bands uses, so the window starts on its cells
    reach = (grow + soft) * width + 2 * q + 2
    x0, y0 = (max(int(np.floor(v - reach)) // q * q, 0) for v in pts.min(axis=0))
    x1, y1 = (int(np.ceil(v + reach)) for v in pts.max(axis=0))
    x1, y1 = min(x1, w), min(y1, h)
    if x1 > x0 and y1 > y0:
        part = loop_bands(lm - np.float32([x0, y0]), loops, (y1 - y0, x1 - x0), width, ((grow, soft),))[0]
        np.maximum(out[y0:y1, x0:x1], part, out=out[y0:y1, x0:x1])
    return out


def opening(lm: np.ndarray, lids: tuple[int, int], corners: tuple[int, int]) -> float:
    """Opening of a mouth or eye: lid distance over corner distance (0 = closed)."""
    gap = float(np.linalg.norm(lm[lids[0]] - lm[lids[1]]))
    width = float(np.linalg.norm(lm[corners[0]] - lm[corners[1]]))
    return gap / max(width, 1e-6)


def interior_mask(lm: np.ndarray, shape: tuple[int, int], settings: MaskSettings) -> np.ndarray:
    """1 where the target's own mouth/eye interior must show through (open mouth, open eyes), else 0."""
    m = np.zeros(shape, np.float32)
    if settings.keep_mouth and settings.lips > 0.0:
        _poly(m, lm[list(LIPS_OUTER)], settings.lips)
    if settings.keep_mouth and opening(lm, (LIP_INNER_UPPER, LIP_INNER_LOWER), MOUTH_CORNERS) > settings.open_ratio:
        _poly(m, lm[list(LIPS_INNER)], 1.0)
    if settings.keep_eyes:
        for loop, lids, corners in ((EYE_RIGHT, EYE_RIGHT_LIDS, EYE_RIGHT_CORNERS),
                                    (EYE_LEFT, EYE_LEFT_LIDS, EYE_LEFT_CORNERS)):
            if opening(lm, lids, corners) > settings.open_ratio:
                _poly(m, lm[list(loop)], 1.0)
    return m


def combine_min(*masks: np.ndarray) -> np.ndarray:
    """Combine masks by minimum: a pixel is replaced only where every mask agrees."""
    out = masks[0].astype(np.float32, copy=True)
    for m in masks[1:]:
        np.minimum(out, m, out=out)
    return out


def fill_holes(hard: np.ndarray) -> np.ndarray:
    """A binary mask with its holes filled (the outer contours drawn solid), as bool."""
    m = np.ascontiguousarray(hard, dtype=np.uint8)
    contours, _ = cv2.findContours(m, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
    out = np.zeros_like(m)
    if contours:
        cv2.drawContours(out, contours, -1, 1, thickness=cv2.FILLED)
    return out.astype(bool)
