"""Multi-band blending (Burt and Adelson): each frequency band is blended with a mask blurred to match.

Fine detail (grain, pores) switches over within a pixel or two, so no halo of the source's grain lies
over flat background; coarse tone switches over across a wide band (the coarsest level's blur), so no
step shows at the jaw. The mask is taken at its 0.5 level: the soft edge's width is the pyramid's.
Works in float32 on the patch; the levels stop when the patch is about 8 px across.
"""

from __future__ import annotations

import cv2
import numpy as np


def _levels(h: int, w: int, max_levels: int) -> int:
    n = 0
    while n < max_levels and min(h, w) >> (n + 1) >= 8:
        n += 1
    return n


def blend(face: np.ndarray, target: np.ndarray, alpha: np.ndarray, max_levels: int = 4) -> tuple[np.ndarray, np.ndarray]:
    """Blend ``face`` over ``target`` by ``alpha`` band by band; returns (result, effective alpha).

    The effective alpha is where the result differs from the target (for the paste-back, which writes
    only there): the coarsest level's mask spreads a little beyond ``alpha``'s support.
    """
    h, w = alpha.shape
    n = _levels(h, w, max_levels)
    if n == 0:
        return face, alpha
    # the mask's Gaussian pyramid sets each band's transition: a sharp mask (antialiased by one pixel)
    # switches the finest band within a pixel or two, the coarse bands over the blur their level has
    a = cv2.GaussianBlur((alpha >= 0.5).astype(np.float32), (3, 3), 0.8)
    a *= alpha > 0
    # The bands are linear in the image, so blending face's and target's bands by the mask equals adding
    # to the target the bands of (face - target), each weighted: one pyramid instead of two
    t = target.astype(np.float32, copy=False)
    ga, gd = [a], [face.astype(np.float32) - t]
    for _ in range(n):
        ga.append(cv2.pyrDown(ga[-1]))
        gd.append(cv2.pyrDown(gd[-1]))
    out = gd[n] * ga[n][..., None]
    for lvl in range(n - 1, -1, -1):
        size = (gd[lvl].shape[1], gd[lvl].shape[0])
        out = cv2.pyrUp(out, dstsize=size) + (gd[lvl] - cv2.pyrUp(gd[lvl + 1], dstsize=size)) * ga[lvl][..., None]
    out += t
    np.clip(out, 0.0, 1.0, out=out)
    # the write-back alpha: 1 wherever the blend moved a pixel by more than a 10-bit step (the coarse
    # bands spread a little past ``alpha``), so the compositor takes ``out`` there as is and every other
    # pixel stays the target's, bit for bit
    # (the channel maximum taken pairwise: numpy's max over the last axis of an image is ~10x slower)
    d = cv2.absdiff(out, t)
    moved = np.maximum(np.maximum(d[..., 0], d[..., 1]), d[..., 2]) > np.float32(1.0 / 1024.0)
    eff = cv2.dilate(moved.astype(np.uint8), np.ones((3, 3), np.uint8)).astype(np.float32)
    return out, eff
