"""Target lighting: take the source photo's shading out, put the target's low-frequency luminance in.

A face's luminance is (roughly) skin reflectance times shading; shading is smooth across the face while
pores, brows and lips are fine detail. So the low-pass of the luminance *inside the face* (a normalised
convolution: only face pixels are averaged, the background never bleeds in) is taken as the shading.
Once per photo the texture is divided by its own shading (shadows, creases and highlights go; tone and
detail stay); per frame the swapped face is scaled so its low-pass luminance becomes the target's, so
it carries the scene's light. The low-pass runs at a quarter resolution: it is smooth by definition.
"""

from __future__ import annotations

import cv2
import numpy as np

_LUMA = np.array([0.299, 0.587, 0.114], np.float32)


def luminance(rgb: np.ndarray) -> np.ndarray:
    if rgb.dtype == np.float32 and rgb.ndim == 3 and rgb.shape[2] in (3, 4) and rgb.flags.c_contiguous:
        # OpenCV's grey has these weights: the same values, a quarter of the matrix product's time
        return cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY if rgb.shape[2] == 3 else cv2.COLOR_RGBA2GRAY)
    return (rgb[..., :3] @ _LUMA).astype(np.float32)


def masked_lowpass(img: np.ndarray, mask: np.ndarray, sigma: float) -> np.ndarray:
    """Gaussian low-pass of ``img`` (h, w) over the pixels where ``mask`` is set, defined everywhere."""
    return masked_lowpass_many((img,), mask, sigma)[0]


def masked_lowpass_many(imgs, mask: np.ndarray, sigma: float) -> list[np.ndarray]:
    """:func:`masked_lowpass` of several images over one mask (the mask's own blur is shared)."""
    h, w = imgs[0].shape[:2]
    k = max(1, int(round(sigma / 3.0)))  # work at 1/k resolution: sigma stays >= 3 px there
    m = mask.astype(np.float32)
    sw, sh = max(2, w // k), max(2, h // k)
    s = max(sigma / k, 0.5)

    def small(a: np.ndarray) -> np.ndarray:
        return cv2.resize(a, (sw, sh), interpolation=cv2.INTER_AREA) if k > 1 else a

    den = np.maximum(cv2.GaussianBlur(small(m), (0, 0), s, borderType=cv2.BORDER_REPLICATE), 1e-4)
    out = []
    for img in imgs:
        lp = cv2.GaussianBlur(small(img * m), (0, 0), s, borderType=cv2.BORDER_REPLICATE) / den
        out.append(cv2.resize(lp, (w, h), interpolation=cv2.INTER_LINEAR) if k > 1 else lp)
    return out


def remove_shading(rgb: np.ndarray, mask: np.ndarray, sigma: float, features: float = 0.0) -> np.ndarray:
    """The photo's skin tone and detail without its own shading: ``rgb * mean(S) / S`` inside ``mask``.

    ``features`` > 0: the shading is read from the skin alone, leaving out what lies more than that share
    of the first low-pass darker or brighter than it (brows, lash lines, nostrils, glare). Why: a dark
    feature pulls the low-pass down around it, so the skin beside it was divided by too little light and
    came out as a pale halo (the lid between lash line and brow), which colour transfer then scaled up."""
    if not mask.any():
        return rgb
    y = luminance(rgb)
    shade = masked_lowpass(y, mask, sigma)
    if features > 0.0:
        skin = mask & (np.abs(y / np.maximum(shade, 1e-4) - 1.0) < features)
        if np.count_nonzero(skin) > 0.5 * np.count_nonzero(mask):  # a face, not a few specks of skin
            shade = masked_lowpass(y, skin, sigma)
    mean = float(np.mean(shade[mask]))
    gain = mean / np.maximum(shade, 0.05 * mean + 1e-4)
    out = rgb.copy()
    out[..., :3] = np.clip(rgb[..., :3] * gain[..., None], 0.0, 1.0)
    return out


def relight(face: np.ndarray, target: np.ndarray, mask: np.ndarray, sigma: float,
            strength: float = 1.0) -> np.ndarray:
    """Scale ``face`` so its low-frequency luminance inside ``mask`` becomes ``target``'s (float32 0..1)."""
    if not mask.any() or strength <= 0.0:
        return face
    lf, lt = masked_lowpass_many((luminance(face), luminance(target)), mask, sigma)
    gain = lt / np.maximum(lf, 1e-3)
    np.clip(gain, 0.25, 4.0, out=gain)
    if strength < 1.0:
        gain = 1.0 + (gain - 1.0) * np.float32(strength)
    out = face * gain[..., None]
    np.clip(out, 0.0, 1.0, out=out)
    return out


def detail_ratio(face: np.ndarray, target: np.ndarray, mask: np.ndarray, sigma: float) -> float | None:
    """The target's fine luminance contrast over the face's, inside ``mask``: the spread of each one's
    luminance less its low-pass (the shading :func:`relight` puts in). Why: a shaded target face spreads
    its lightness over two to three times what a texture with its shading taken out does (GRID, ASL),
    and colour transfer scaling the texture by that ratio deepened its creases, nostrils and eye whites
    into blotches; the shading is the lighting step's, so only the detail's contrast is matched."""
    if int(np.count_nonzero(mask)) < 64:
        return None
    yf, yt = luminance(face), luminance(target)
    lf, lt = masked_lowpass_many((yf, yt), mask, sigma)
    df, dt = float(np.std((yf - lf)[mask])), float(np.std((yt - lt)[mask]))
    if df < 1e-4:
        return None
    return dt / df
