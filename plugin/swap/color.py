"""Colour transfer of the swapped face onto the target's colours: none, rct, lct, mkl, idt.

All modes are masked (only face pixels enter the statistics) and work on float32 0..1 patches in the
swapper's own space (aligned face or frame crop). The target side's statistics are smoothed over time per
track by :class:`ColorSmoother`, so a face does not flicker when the mask edge moves from frame to frame.

- rct: Reinhard: match mean and standard deviation per channel in Lab.
- lct: linear: match the RGB covariance through Cholesky factors.
- mkl: Monge-Kantorovich linear map between the two RGB Gaussians (the optimal-transport linear map).
- idt: iterative distribution transfer: 1-D histogram matching along random rotations (per frame, no
  time smoothing: it has no small set of statistics to smooth).
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass

import cv2
import numpy as np

from ..errors import SettingsError

MODES = ("none", "rct", "lct", "mkl", "idt")


@dataclass(frozen=True)
class ColorStats:
    """First and second moments of the masked face, in RGB and in Lab (what every linear mode needs)."""

    mean: np.ndarray      # (3,) RGB
    cov: np.ndarray       # (3, 3) RGB
    lab_mean: np.ndarray  # (3,)
    lab_std: np.ndarray   # (3,)

    def blend(self, other: "ColorStats", keep: float) -> "ColorStats":
        """Exponential moving average: ``keep`` of self, ``1 - keep`` of other."""
        k, n = keep, 1.0 - keep
        return ColorStats(self.mean * k + other.mean * n, self.cov * k + other.cov * n,
                          self.lab_mean * k + other.lab_mean * n, self.lab_std * k + other.lab_std * n)


def ema(items: "list[ColorStats]", keep: float) -> ColorStats:
    """``items`` (newest first) averaged as chained :meth:`ColorStats.blend` from the oldest would give
    (the oldest weighs keep^(m-1), the j-th newest (1 - keep) keep^j), in one weighted sum: a window of
    13 frames cost ~100 us as 12 blends, ~25 us so."""
    m = len(items)
    if m == 1:
        return items[0]
    w = (1.0 - keep) * keep ** np.arange(m, dtype=np.float64)
    w[-1] = keep ** (m - 1)
    v = w @ np.array([np.concatenate([s.mean, s.cov.ravel(), s.lab_mean, s.lab_std]) for s in items])
    return ColorStats(v[:3], v[3:12].reshape(3, 3), v[12:15], v[15:18])


def _samples(img: np.ndarray, mask: np.ndarray, max_samples: int = 20000) -> np.ndarray:
    """The masked pixels as (N, 3) float32; a big patch is first thinned by a 2-D stride (the same moments
    at a fraction of the cost: gathering every pixel of a 400 px face is most of the work)."""
    sel = mask > 0.5
    n = int(np.count_nonzero(sel))
    if n < 16:  # too few face pixels: use the whole patch rather than fail
        return img.reshape(-1, 3).astype(np.float32, copy=False)
    if n > max_samples:
        step = int(np.ceil(np.sqrt(n / max_samples)))
        img, sel = img[::step, ::step], sel[::step, ::step]
    return img[sel].astype(np.float32, copy=False)


def _moments(px: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per-channel mean and (population) standard deviation of (N, 3) samples, float64."""
    mean, std = cv2.meanStdDev(np.ascontiguousarray(px).reshape(1, -1, 3))
    return mean.ravel(), std.ravel()


def stats(img: np.ndarray, mask: np.ndarray) -> ColorStats:
    """Moments of the pixels of ``img`` (float32 0..1, h x w x 3) where ``mask`` > 0.5."""
    px = _samples(img, mask)
    mean, _ = _moments(px)
    if len(px) > 1:
        # (px - mean)^T (px - mean) in one OpenCV pass, float64 accumulation
        cov = cv2.mulTransposed(np.ascontiguousarray(px), True, delta=mean.reshape(1, 3).astype(np.float32),
                                dtype=cv2.CV_64F) / (len(px) - 1)
    else:
        cov = np.eye(3) * 1e-4
    # (1, N) rows: OpenCV converts a row far faster than an (N, 1) column
    lab = cv2.cvtColor(px.reshape(1, -1, 3), cv2.COLOR_RGB2Lab)
    lab_mean, lab_std = _moments(lab.reshape(-1, 3))
    return ColorStats(mean, cov, lab_mean, lab_std + 1e-3)


def _reg(c: np.ndarray) -> np.ndarray:
    """Condition a colour covariance: faces are nearly one-dimensional in RGB, and inverting a direction
    with no variance would turn sensor noise into coloured speckle."""
    return c + np.eye(3) * (0.02 * float(np.trace(c)) / 3.0 + 1e-6)


def _sqrtm(c: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Symmetric square root and its inverse of a (regularised) covariance."""
    w, v = np.linalg.eigh(c)
    w = np.maximum(w, 1e-9)
    return (v * np.sqrt(w)) @ v.T, (v / np.sqrt(w)) @ v.T


def _apply_linear(img: np.ndarray, a: np.ndarray, mu_s: np.ndarray, mu_t: np.ndarray) -> np.ndarray:
    flat = img.reshape(-1, 3).astype(np.float32)
    out = (flat - mu_s.astype(np.float32)) @ a.T.astype(np.float32) + mu_t.astype(np.float32)
    return np.clip(out, 0.0, 1.0).reshape(img.shape)


def transfer(mode: str, face: np.ndarray, face_mask: np.ndarray, target_stats: ColorStats | None = None,
             target: np.ndarray | None = None, target_mask: np.ndarray | None = None,
             face_stats: ColorStats | None = None, seed: int = 0, l_scale: float | None = None,
             l_weight: float = 1.0, l_band: np.ndarray | Callable[[], np.ndarray] | None = None,
             band_l_scale: float | None = None) -> np.ndarray:
    """Recolour ``face`` so its masked colours follow the target's. Returns a new float32 array.

    Give ``target_stats`` (possibly time-smoothed) or ``target`` + ``target_mask``; idt always needs the
    target pixels. ``face_stats`` may be cached by the caller (a morph source is the same every frame).
    ``l_scale`` (rct): the lightness contrast to apply instead of the ratio of the whole faces' spreads
    (see :func:`facecomp.swap.lighting.detail_ratio`), mixed with that ratio by ``1 - l_weight``.
    ``l_band`` (rct, 0..1 over the face) with ``band_l_scale``: there the lightness contrast is at most
    ``band_l_scale``, blended in by the band's weight (the mean still maps to the target's). It may be a
    function giving the band, called only where the cap is under rct's own scale (it acts only there).
    """
    if mode not in MODES:
        raise SettingsError(f"unknown colour mode {mode!r}: use one of {', '.join(MODES)}")
    if mode == "none":
        return face
    if mode == "idt":
        if target is None or target_mask is None:
            raise SettingsError("colour mode idt needs the target pixels")
        return idt(face, face_mask, target, target_mask, seed=seed)
    if target_stats is None:
        if target is None or target_mask is None:
            raise SettingsError(f"colour mode {mode} needs target statistics or pixels")
        target_stats = stats(target, target_mask)
    if mode == "rct":
        lab = cv2.cvtColor(face.astype(np.float32, copy=False), cv2.COLOR_RGB2Lab)
        if face_stats is not None:
            f_mean, f_std = face_stats.lab_mean, face_stats.lab_std
        else:  # the face's Lab moments straight from its Lab image: no gather, no second conversion
            sel = (face_mask > 0.5).astype(np.uint8)
            m, sd = cv2.meanStdDev(lab, mask=sel if cv2.countNonZero(sel) >= 16 else None)
            f_mean, f_std = m.ravel(), sd.ravel() + 1e-3
        scale = target_stats.lab_std / f_std
        if l_scale is not None and l_weight > 0.0:
            scale = scale.copy()
            scale[0] = l_scale * l_weight + scale[0] * (1.0 - l_weight)
        shift = target_stats.lab_mean - f_mean * scale
        band = None
        if l_band is not None and band_l_scale is not None and band_l_scale < scale[0]:
            # L' = s L + shift everywhere; in the band s' L + shift' with the same mean: add (s' - s)(L - mean)
            weights = l_band() if callable(l_band) else l_band
            band = (lab[..., 0] - np.float32(f_mean[0])) * (weights * np.float32(band_l_scale - scale[0]))
        # one pass per step: the per-channel affine, the Lab range, back to RGB, the RGB range
        lab = cv2.transform(lab, np.hstack([np.diag(scale), shift[:, None]]).astype(np.float32))
        if band is not None:
            lab[..., 0] += band
        lab = cv2.min(cv2.max(lab, (0.0, -127.0, -127.0, 0.0)), (100.0, 127.0, 127.0, 0.0))
        rgb = cv2.cvtColor(lab, cv2.COLOR_Lab2RGB)
        np.clip(rgb, 0.0, 1.0, out=rgb)
        return rgb
    fs = face_stats if face_stats is not None else stats(face, face_mask)
    if mode == "lct":
        ls = np.linalg.cholesky(_reg(fs.cov))
        lt = np.linalg.cholesky(_reg(target_stats.cov))
        return _apply_linear(face, lt @ np.linalg.inv(ls), fs.mean, target_stats.mean)
    # mkl: T = Cs^-1/2 (Cs^1/2 Ct Cs^1/2)^1/2 Cs^-1/2
    rs, rs_inv = _sqrtm(_reg(fs.cov))
    mid, _ = _sqrtm(rs @ _reg(target_stats.cov) @ rs)
    return _apply_linear(face, rs_inv @ mid @ rs_inv, fs.mean, target_stats.mean)


def idt(face: np.ndarray, face_mask: np.ndarray, target: np.ndarray, target_mask: np.ndarray,
        iterations: int = 6, bins: int = 64, seed: int = 0) -> np.ndarray:
    """Iterative distribution transfer: match 1-D marginals along random orthogonal bases, a few times."""
    rng = np.random.default_rng(seed)
    src_all = face.reshape(-1, 3).astype(np.float32).copy()
    sel = (face_mask > 0.5).reshape(-1)
    tgt = _samples(target, target_mask)
    for _ in range(iterations):
        q, _r = np.linalg.qr(rng.standard_normal((3, 3)))
        q = q.astype(np.float32)
        ps_all = src_all @ q
        ps = ps_all[sel] if sel.sum() >= 16 else ps_all
        pt = tgt @ q
        for c in range(3):
            lo = min(ps[:, c].min(), pt[:, c].min())
            hi = max(ps[:, c].max(), pt[:, c].max()) + 1e-6
            hs, edges = np.histogram(ps[:, c], bins=bins, range=(lo, hi))
            ht, _ = np.histogram(pt[:, c], bins=bins, range=(lo, hi))
            cs = np.cumsum(hs).astype(np.float64); cs /= max(cs[-1], 1)
            ct = np.cumsum(ht).astype(np.float64); ct /= max(ct[-1], 1)
            centres = edges[1:]
            mapped = np.interp(cs, ct, centres)
            ps_all[:, c] = np.interp(ps_all[:, c], centres, mapped)
        src_all = ps_all @ q.T
    return np.clip(src_all, 0.0, 1.0).reshape(face.shape)


class ColorSmoother:
    """Per-track exponential smoothing of the target's colour statistics (thread-safe).

    ``keep`` is the weight of the past: 0 disables smoothing. A track not seen for ``gap`` frames starts
    afresh, so a cut does not drag the previous shot's colours along.
    """

    def __init__(self, keep: float = 0.7, gap: int = 2):
        if not 0.0 <= keep < 1.0:
            raise SettingsError(f"colour smoothing must be in [0, 1), got {keep}")
        self.keep, self.gap = keep, gap
        self._state: dict[int, tuple[int, ColorStats]] = {}
        self._lock = threading.Lock()

    def update(self, track: int | None, index: int | None, current: ColorStats) -> ColorStats:
        if track is None or index is None or self.keep == 0.0:
            return current
        with self._lock:
            prev = self._state.get(track)
            if prev is not None and 0 < index - prev[0] <= self.gap:
                current = prev[1].blend(current, self.keep)
            self._state[track] = (index, current)
        return current
