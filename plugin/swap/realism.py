"""Realism figures of a render, per frame, for ``facecomp score``: does the new face act, light and sit
like the target's?

- expression error: the output face's landmarks (analysed on the output itself) against the original
  target's, mean distance per inter-ocular distance, over the parts that carry expression (lips, eyes,
  brows, jaw line);
- mouth opening: inner-lip gap over mouth width on the output and on the target, correlated over time;
  each frame's opening is read by FaceMesh through 16 slightly shifted, scaled and turned crops of the
  target's region, in both clips, and the output's mean over one half of the crops is correlated with
  the target's over the other half. Why: one read of a mouth that opens a pixel or two is mostly the
  landmarker's answer to that one crop (on the ASL clip a fresh read correlates 0.38-0.69 with the
  tracked one), so one read correlated a swap against the landmarker's noise; the mean of eight reads
  repeats itself (0.88 on ASL, 0.90 on the walking clip, 0.97 on head-pose, 0.98-0.99 on GRID), and with
  no crop in both means no crop's own error counts as agreement;
- lighting: correlation of the face's low-frequency luminance (a masked low-pass, as :mod:`.lighting`
  sees light) between output and target;
- texture anomalies: the face is cut into cells; a *smeared* cell lost most of the original's fine detail,
  a *torn* area is three or more connected cells of streaks (one dominant gradient direction, as a
  stretched texture gives) where the original had none;
- hands kept: where the original's hands cover the face (MediaPipe hand models), the share of those
  pixels the output left as they were.
"""

from __future__ import annotations

import cv2
import numpy as np

from . import lighting, lips, masks

#: landmarks that carry expression: inner and outer lips, eye lids, brows, jaw
_LIPS_OUTER = masks.LIPS_OUTER
_BROWS = (70, 63, 105, 66, 107, 336, 296, 334, 293, 300)
_JAW = (234, 93, 132, 58, 172, 136, 150, 149, 176, 148, 152, 377, 400, 378, 379, 365, 397, 288, 361, 323, 454)
EXPRESSION_POINTS = tuple(sorted(set(masks.LIPS_INNER + _LIPS_OUTER + masks.EYE_RIGHT + masks.EYE_LEFT + _BROWS
                                     + _JAW)))


def inter_ocular(lm: np.ndarray) -> float:
    return float(np.linalg.norm(lm[list(masks.EYE_RIGHT)].mean(0) - lm[list(masks.EYE_LEFT)].mean(0))) or 1.0


def expression_error(out_lm: np.ndarray, tgt_lm: np.ndarray) -> float:
    """Mean landmark distance over the expression points, per inter-ocular distance of the target."""
    idx = list(EXPRESSION_POINTS)
    d = np.linalg.norm(out_lm[idx, :2].astype(np.float64) - tgt_lm[idx, :2], axis=1)
    return float(d.mean() / inter_ocular(tgt_lm))


def read_jitters(count: int = 16) -> tuple[tuple[float, float, float, float], ...]:
    """The crops a mouth is read through: (shift x, shift y) in region sizes, scale, turn in radians; a
    fixed set (the same for every clip, output and floor), alternating between two halves so the halves'
    agreement says how far the reading repeats itself."""
    g = np.random.default_rng(20261204)
    return tuple((float(g.uniform(-0.04, 0.04)), float(g.uniform(-0.04, 0.04)), float(g.uniform(0.94, 1.06)),
                  float(g.uniform(-0.06, 0.06))) for _ in range(count))


def mouth_reads(rgb: np.ndarray, roi, mesh, jitters) -> np.ndarray:
    """Mouth opening read by ``mesh`` (a FaceMesh) through each jittered crop of ``roi`` (facecomp.faces'
    landmark region, usually the target's): one figure per crop."""
    from ..faces.types import Roi
    from .geometry import to_cv

    out = np.empty(len(jitters), np.float64)
    for k, (dx, dy, scale, turn) in enumerate(jitters):
        crop = Roi(roi.cx + dx * roi.size, roi.cy + dy * roi.size, roi.size * scale, roi.angle + turn)
        out[k] = mouth_opening(to_cv(mesh.landmarks(rgb, crop).landmarks))
    return out


def cross_halves(a_reads, b_reads) -> float | None:
    """Correlation over time of clip A's mouth with clip B's, each read through its own half of the crops
    (A's even crops against B's odd ones, and the other way round, averaged): no crop's own error is in
    both. ``cross_halves(t, t)`` is how far the reading repeats itself, what a render that changed
    nothing reaches. ``*_reads``: per frame, one figure per crop (None where there is no reading)."""
    pairs = [(x, y) for x, y in zip(a_reads, b_reads) if x is not None and y is not None]
    if len(pairs) < 3 or len(pairs[0][0]) < 2:
        return None
    a = np.asarray([x for x, _ in pairs], np.float64)
    b = np.asarray([y for _, y in pairs], np.float64)
    cs = [pearson(a[:, 0::2].mean(1), b[:, 1::2].mean(1)), pearson(a[:, 1::2].mean(1), b[:, 0::2].mean(1))]
    cs = [c for c in cs if c is not None]
    return float(np.mean(cs)) if cs else None


def mouth_opening(lm: np.ndarray) -> float:
    """Inner-lip gap over mouth width, averaged over five facing pairs (the centre pair alone is a pixel
    or two on a small face: one landmark's noise); the lip step's own measure (:func:`.lips.mouth_gap`)."""
    return lips.mouth_gap(lm)


def lighting_correlation(out_rgb: np.ndarray, tgt_rgb: np.ndarray, inside: np.ndarray, width: float) -> float:
    """Pearson correlation of the low-frequency luminance of the face, output against target."""
    sigma = 0.06 * width
    lo = lighting.masked_lowpass(lighting.luminance(out_rgb), inside, sigma)[inside]
    lt = lighting.masked_lowpass(lighting.luminance(tgt_rgb), inside, sigma)[inside]
    if lo.size < 16 or lo.std() < 1e-6 or lt.std() < 1e-6:
        return float("nan")
    return float(np.corrcoef(lo, lt)[0, 1])


def _cells(inside: np.ndarray, width: float):
    side = max(4, int(round(width / 10.0)))
    ys, xs = np.nonzero(inside)
    y0, y1, x0, x1 = ys.min(), ys.max() + 1, xs.min(), xs.max() + 1
    for r, cy in enumerate(range(y0, y1 - side + 1, side)):
        for c, cx in enumerate(range(x0, x1 - side + 1, side)):
            if inside[cy:cy + side, cx:cx + side].mean() > 0.95:
                yield (r, c), slice(cy, cy + side), slice(cx, cx + side)


def _structure(gray: np.ndarray):
    """Structure-tensor terms of the image's fine detail (shading, which is smooth and directional on
    any cheek, is taken out first)."""
    gray = gray - cv2.GaussianBlur(gray, (0, 0), 2.0)
    gx = cv2.Sobel(gray, cv2.CV_32F, 1, 0, ksize=3)
    gy = cv2.Sobel(gray, cv2.CV_32F, 0, 1, ksize=3)
    return gx * gx, gy * gy, gx * gy


def anomalies(out_rgb: np.ndarray, tgt_rgb: np.ndarray, inside: np.ndarray, width: float,
              min_area: int = 3) -> tuple[float, float]:
    """(smeared share, torn share) of the face's cells (tenths of the face width square).

    A streaked cell has one dominant gradient direction (coherence > 0.85: pixels drawn out along one
    axis) where the original's had none; one such cell is a crease or a fold, so only ``min_area`` or
    more connected streaked cells count as a torn area."""
    go = cv2.cvtColor(out_rgb, cv2.COLOR_RGB2GRAY).astype(np.float32) / 255.0
    gt = cv2.cvtColor(tgt_rgb, cv2.COLOR_RGB2GRAY).astype(np.float32) / 255.0
    so, st = _structure(go), _structure(gt)
    n = smeared = 0
    streaks: set[tuple[int, int]] = set()
    for rc, ys, xs in _cells(inside, width):
        n += 1
        xxo, yyo, xyo = (float(a[ys, xs].mean()) for a in so)
        xxt, yyt, xyt = (float(a[ys, xs].mean()) for a in st)
        eo, et = xxo + yyo, xxt + yyt
        if et > 2e-5 and eo < 0.1 * et:
            smeared += 1
        coh_o = np.sqrt((xxo - yyo) ** 2 + 4 * xyo ** 2) / max(eo, 1e-9)
        coh_t = np.sqrt((xxt - yyt) ** 2 + 4 * xyt ** 2) / max(et, 1e-9)
        if eo > 1e-4 and coh_o > 0.85 and coh_t < 0.6:
            streaks.add(rc)
    if n == 0:
        return float("nan"), float("nan")
    torn = 0
    seen: set[tuple[int, int]] = set()
    for start in streaks:  # 4-connected groups of streaked cells
        if start in seen:
            continue
        group, todo = 0, [start]
        seen.add(start)
        while todo:
            r, c = todo.pop()
            group += 1
            for nb in ((r + 1, c), (r - 1, c), (r, c + 1), (r, c - 1)):
                if nb in streaks and nb not in seen:
                    seen.add(nb)
                    todo.append(nb)
        if group >= min_area:
            torn += group
    return smeared / n, torn / n


def hands_kept(out_rgb: np.ndarray, tgt_rgb: np.ndarray, hand: np.ndarray, inside: np.ndarray,
               tolerance: float = 8.0) -> float | None:
    """Share of the hand pixels over the face that the output kept (within ``tolerance`` of 255), over
    the same share for the hand's pixels away from the face (which nothing replaces: what the encoder
    and the watermark alone change there is the baseline), at most 1. The measure is checked on
    unencoded frames too (the tests), where the baseline is exactly 1."""
    hand = hand > 0.5
    over = hand & inside
    if np.count_nonzero(over) < 16:
        return None
    # compared a little blurred: the encoder's noise on fine high-contrast detail (nails, knuckle lines)
    # is not a replaced pixel, a pasted face changes far more than a pixel's neighbourhood
    o = cv2.GaussianBlur(out_rgb, (0, 0), 1.0).astype(np.int16)
    t = cv2.GaussianBlur(tgt_rgb, (0, 0), 1.0).astype(np.int16)

    def kept(sel) -> float:
        d = np.abs(o[sel] - t[sel]).max(axis=1)
        return float(np.mean(d <= tolerance))

    away = hand & ~(cv2.dilate(inside.astype(np.uint8), np.ones((9, 9), np.uint8)) > 0)
    base = kept(away) if np.count_nonzero(away) >= 16 else 1.0
    return min(1.0, kept(over) / max(base, 1e-3))


def pearson(a, b) -> float | None:
    x = np.asarray([v for v, w in zip(a, b) if v is not None and w is not None], np.float64)
    y = np.asarray([w for v, w in zip(a, b) if v is not None and w is not None], np.float64)
    if len(x) < 3 or x.std() < 1e-9 or y.std() < 1e-9:
        return None
    return float(np.corrcoef(x, y)[0, 1])
