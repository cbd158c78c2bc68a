"""Paste-back: feathered alpha compositing, the inverse transform and a float seamless (membrane) clone.

Everything here works on a *crop* of the frame so that a 4K frame costs no more than its face. The
frame may be uint8, uint16 or float32 (0..1), RGB or RGBA: the work happens in float32 0..1 on the crop,
and only pixels whose alpha is > 0 are written back, so every other pixel (and the alpha channel) stays
bit-identical to the input.
"""

from __future__ import annotations

import cv2
import numpy as np

from ..errors import SettingsError

_SCALE = {np.dtype(np.uint8): 255.0, np.dtype(np.uint16): 65535.0}


def check_frame(frame: np.ndarray) -> None:
    """Frames are (H, W, 3|4) uint8, uint16 or float32 0..1: anything else is a caller bug we name."""
    if frame.ndim != 3 or frame.shape[2] not in (3, 4):
        raise SettingsError(f"frame must be (H, W, 3) RGB or (H, W, 4) RGBA, got shape {frame.shape}")
    if frame.dtype not in (np.uint8, np.uint16, np.float32):
        raise SettingsError(f"frame dtype must be uint8, uint16 or float32, got {frame.dtype}")


def to_float(img: np.ndarray) -> np.ndarray:
    """uint8/uint16/float32 -> float32 0..1 (a copy for integer inputs, the array itself for float32)."""
    scale = _SCALE.get(img.dtype)
    if scale is None:
        return img.astype(np.float32, copy=False)
    return img.astype(np.float32) * np.float32(1.0 / scale)


def from_float(img: np.ndarray, dtype: np.dtype) -> np.ndarray:
    """float32 0..1 -> dtype with rounding and clipping (float32 output is clipped to 0..1 too)."""
    dtype = np.dtype(dtype)
    scale = _SCALE.get(dtype)
    if scale is None:
        return np.clip(img, 0.0, 1.0).astype(dtype, copy=False)
    out = img * np.float32(scale) + np.float32(0.5)
    np.clip(out, 0.0, scale, out=out)
    return out.astype(dtype)


def feather(mask: np.ndarray, erode_px: float, feather_px: float) -> np.ndarray:
    """Erode a 0..1 mask by ``erode_px`` then blur its edge over ``feather_px``: a soft, inset edge.

    The blur kernel is finite, so a pixel farther than ``feather_px`` from the eroded mask stays exactly 0.
    """
    m = mask.astype(np.float32, copy=False)
    e = int(round(erode_px))
    if e > 0:
        k = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * e + 1, 2 * e + 1))
        m = cv2.erode(m, k, borderType=cv2.BORDER_CONSTANT, borderValue=0)
    elif e < 0:
        k = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (-2 * e + 1, -2 * e + 1))
        m = cv2.dilate(m, k, borderType=cv2.BORDER_CONSTANT, borderValue=0)
    f = int(round(feather_px))
    if f > 0:
        ksize = 2 * f + 1
        m = cv2.GaussianBlur(m, (ksize, ksize), sigmaX=f / 2.0, borderType=cv2.BORDER_CONSTANT)
    np.clip(m, 0.0, 1.0, out=m)
    m[m < 1.0 / 1024.0] = 0.0  # denormal tails of the blur must not touch far pixels
    return m


def ramp_alpha(hard: np.ndarray, erode_px: float, feather_px: float) -> np.ndarray:
    """Soft alpha from a binary mask by distance to its edge: 0 within ``erode_px`` of the edge, rising
    smoothly to 1 over the next ``feather_px``. One distance transform, whatever the sizes, and the
    support is exactly the mask eroded by ``erode_px`` (nothing spills outside)."""
    m = np.ascontiguousarray(hard, dtype=np.uint8)
    if not m.any():
        return np.zeros(m.shape, np.float32)
    # pad so the patch border counts as outside the mask
    dist = cv2.distanceTransform(cv2.copyMakeBorder(m, 1, 1, 1, 1, cv2.BORDER_CONSTANT, value=0),
                                 cv2.DIST_L2, cv2.DIST_MASK_PRECISE)[1:-1, 1:-1]
    t = (dist - np.float32(max(erode_px, 0.0) + 0.5)) * np.float32(1.0 / max(feather_px, 1.0))
    np.clip(t, 0.0, 1.0, out=t)
    return t * t * (np.float32(3.0) - np.float32(2.0) * t)  # smoothstep: no kink at either end


def membrane_clone(face: np.ndarray, target: np.ndarray, mask: np.ndarray, levels: int = 6,
                   smooth_iters: int = 20) -> np.ndarray:
    """Seamless clone in float: ``face + H`` where H is the harmonic fill of ``target - face`` from the mask edge.

    The Poisson equation with the face's own gradients as guidance has exactly this solution; H is found by
    pull-push over an image pyramid then relaxed with Jacobi steps, which needs no 8-bit round trip (so it
    keeps 16-bit and float precision, unlike cv2.seamlessClone).
    """
    inside = mask > 0.5
    if not inside.any():
        return face
    ring = cv2.dilate(inside.astype(np.uint8), np.ones((3, 3), np.uint8)).astype(bool) & ~inside
    diff = (target - face).astype(np.float32)
    known = ring.astype(np.float32)
    val = diff * known[..., None]
    # pull: average known values down the pyramid
    pyr_v, pyr_w = [val], [known]
    for _ in range(levels):
        if min(pyr_w[-1].shape[:2]) < 4:
            break
        pyr_v.append(cv2.pyrDown(pyr_v[-1]))
        pyr_w.append(cv2.pyrDown(pyr_w[-1]))
    # push: fill the unknown from the coarser level
    fill = pyr_v[-1] / np.maximum(pyr_w[-1], 1e-6)[..., None]
    for v, w in zip(reversed(pyr_v[:-1]), reversed(pyr_w[:-1])):
        up = cv2.pyrUp(fill, dstsize=(v.shape[1], v.shape[0]))
        wn = np.clip(w * 4.0, 0.0, 1.0)[..., None]
        fill = (v / np.maximum(w, 1e-6)[..., None]) * wn + up * (1.0 - wn)
    # Jacobi relaxation inside the mask, boundary held at the known ring values
    fill[ring] = diff[ring]
    kernel = np.array([[0, 0.25, 0], [0.25, 0, 0.25], [0, 0.25, 0]], np.float32)
    for _ in range(smooth_iters):
        relaxed = cv2.filter2D(fill, -1, kernel, borderType=cv2.BORDER_REPLICATE)
        fill[inside] = relaxed[inside]
    out = face.copy()
    out[inside] = face[inside] + fill[inside]
    np.clip(out, 0.0, 1.0, out=out)
    return out


def composite(frame: np.ndarray, face: np.ndarray, alpha: np.ndarray, x0: int, y0: int) -> None:
    """Blend a float face patch into ``frame`` in place at (x0, y0), writing only where alpha > 0.

    ``face`` is float32 (h, w, 3) 0..1, ``alpha`` float32 (h, w). The patch may hang over the frame edge;
    it is clipped. RGBA frames keep their alpha channel untouched.
    """
    h, w = alpha.shape
    H, W = frame.shape[:2]
    fx0, fy0, fx1, fy1 = max(x0, 0), max(y0, 0), min(x0 + w, W), min(y0 + h, H)
    if fx1 <= fx0 or fy1 <= fy0:
        return
    px0, py0 = fx0 - x0, fy0 - y0
    a = alpha[py0:py0 + fy1 - fy0, px0:px0 + fx1 - fx0]
    write = a > 0
    if not write.any():
        return
    f = face[py0:py0 + fy1 - fy0, px0:px0 + fx1 - fx0]
    region = frame[fy0:fy1, fx0:fx1, :3]
    bg = to_float(region)
    if frame.dtype == np.float32:
        # float frames keep their HDR values: the new face is 0..1, the frame under a soft edge is mixed
        # in as it is (clipping it would flatten highlights around every replaced face)
        blended = bg + (np.clip(f, 0.0, 1.0) - bg) * a[..., None]
        np.copyto(region, blended.astype(np.float32, copy=False), where=write[..., None])
        return
    blended = bg + (f - bg) * a[..., None]
    np.copyto(region, from_float(blended, frame.dtype), where=write[..., None])


def warp_patch_to_frame(patch: np.ndarray, to_frame: np.ndarray, frame_shape: tuple[int, int],
                        pad: int = 2) -> tuple[np.ndarray, int, int]:
    """Map a patch (aligned space) into frame space by the 2x3 affine ``to_frame``, sub-pixel.

    Returns the warped patch over the bounding box of the patch's corners (clipped to the frame) and the
    box's top-left (x0, y0). Pixels outside the patch become 0, so a warped mask stays 0 there.
    """
    ph, pw = patch.shape[:2]
    corners = np.array([[0, 0, 1], [pw, 0, 1], [0, ph, 1], [pw, ph, 1]], np.float64) @ to_frame.T
    H, W = frame_shape
    x0 = max(int(np.floor(corners[:, 0].min())) - pad, 0)
    y0 = max(int(np.floor(corners[:, 1].min())) - pad, 0)
    x1 = min(int(np.ceil(corners[:, 0].max())) + pad, W)
    y1 = min(int(np.ceil(corners[:, 1].max())) + pad, H)
    if x1 <= x0 or y1 <= y0:
        shape = (0, 0) + patch.shape[2:]
        return np.zeros(shape, np.float32), x0, y0
    m = to_frame.astype(np.float64).copy()
    m[:, 2] -= (x0, y0)
    # The forward warp (frame -> patch) used warpAffine's convention too, so this is its exact inverse.
    out = cv2.warpAffine(patch, m, (x1 - x0, y1 - y0), flags=cv2.INTER_LINEAR,
                         borderMode=cv2.BORDER_CONSTANT, borderValue=0)
    return out, x0, y0
