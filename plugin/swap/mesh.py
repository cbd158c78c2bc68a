"""Triangle mesh over the 468 FaceMesh points and the piecewise-affine warp it drives.

The triangulation is a Delaunay triangulation (cv2.Subdiv2D) of a reference shape, computed once and
then reused for every frame, so the same triangle always joins the same three landmarks and the warp is
continuous across triangle edges. The warp builds one dense remap table for the face's crop: each
destination pixel is assigned its triangle by rasterising the mesh once, then mapped by that triangle's
affine in one vectorised step, and the source is sampled with a single cv2.remap (sub-pixel, bilinear).
"""

from __future__ import annotations

import cv2
import numpy as np

from ..errors import SettingsError


def delaunay(points: np.ndarray) -> np.ndarray:
    """Delaunay triangles of ``points`` (N, 2) as an (T, 3) int32 array of point indices."""
    pts = np.asarray(points, np.float64)
    if pts.ndim != 2 or pts.shape[1] != 2 or len(pts) < 3:
        raise SettingsError(f"delaunay needs (N>=3, 2) points, got {pts.shape}")
    lo, hi = pts.min(axis=0), pts.max(axis=0)
    span = float(max(hi - lo)) or 1.0
    # well inside the subdivision's rectangle; float32 because Subdiv2D stores float32 and hands back
    # exactly those values, which the lookup below must match
    norm = ((pts - lo) / span * 1000.0 + 10.0).astype(np.float32)
    subdiv = cv2.Subdiv2D((0, 0, 1021, 1021))
    lookup: dict[tuple[float, float], int] = {}
    for i, (x, y) in enumerate(norm):
        key = (float(x), float(y))
        if key in lookup:
            continue  # duplicated points would make degenerate triangles
        lookup[key] = i
        subdiv.insert((float(x), float(y)))
    tris = []
    for t in subdiv.getTriangleList():
        ids = []
        for j in range(3):
            key = (float(np.float32(t[2 * j])), float(np.float32(t[2 * j + 1])))
            idx = lookup.get(key)
            if idx is None:
                break  # a corner of the virtual outer triangle
            ids.append(idx)
        if len(ids) == 3:
            tris.append(ids)
    return np.asarray(tris, np.int32)


def triangle_affines(dst: np.ndarray, src: np.ndarray, tris: np.ndarray) -> np.ndarray:
    """Per-triangle affine maps from destination to source coordinates, (T, 3, 2) float32.

    For a destination point p = (x, y), its source point is ``[x, y, 1] @ A[t]``. Degenerate
    (zero-area) destination triangles get a least-squares map instead of an exception.
    """
    p = dst[tris].astype(np.float64)  # (T,3,2)
    s = src[tris].astype(np.float64)  # (T,3,2)
    # Closed form (a batched np.linalg.solve costs ~0.6 ms for the ~900 triangles of a face): the inverse
    # of the rows (x_i, y_i, 1) has the columns r1 x r2, r2 x r0, r0 x r1 over the determinant, so
    # A = sum_i cross_i (outer) s_i / det.
    x0, y0, x1, y1, x2, y2 = p[:, 0, 0], p[:, 0, 1], p[:, 1, 0], p[:, 1, 1], p[:, 2, 0], p[:, 2, 1]
    inv = np.empty((len(tris), 3, 3), np.float64)  # inv[:, :, i] = column i
    for i, (ya, yb, xa, xb) in enumerate(((y1, y2, x1, x2), (y2, y0, x2, x0), (y0, y1, x0, x1))):
        inv[:, 0, i] = ya - yb
        inv[:, 1, i] = xb - xa
        inv[:, 2, i] = xa * yb - xb * ya
    det = x0 * inv[:, 0, 0] + y0 * inv[:, 1, 0] + inv[:, 2, 0]
    ok = np.abs(det) > 1e-9
    safe = np.where(ok, det, 1.0)
    out = np.einsum("tij,tjk->tik", inv, s) / safe[:, None, None]
    for t in np.flatnonzero(~ok):
        d = np.concatenate([p[t], np.ones((3, 1))], axis=1)
        out[t] = np.linalg.lstsq(d, s[t], rcond=None)[0]
    return out.astype(np.float32)


def rasterize(dst: np.ndarray, tris: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """Triangle id + 1 per pixel over ``shape`` (0 where no triangle covers the pixel), uint16.

    Triangles are drawn with 4 bits of sub-pixel precision. Where the mesh folds over itself (a profile
    view), the triangle nearer the viewer is not known, so the later one wins: the same on every frame.
    """
    if len(tris) >= 65535:
        raise SettingsError("too many triangles for the uint16 raster")
    ids = np.zeros(shape, np.uint16)
    fixed = np.round(dst[tris] * 16.0).astype(np.int32)  # (T,3,2)
    for t in range(len(tris)):
        cv2.fillConvexPoly(ids, fixed[t], t + 1, lineType=cv2.LINE_8, shift=4)
    return ids


def remap_tables(dst: np.ndarray, src: np.ndarray, tris: np.ndarray, shape: tuple[int, int]
                 ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Dense (map_x, map_y, coverage) for warping a source image onto ``dst`` landmarks over ``shape``."""
    ids = rasterize(dst, tris, shape)
    aff = triangle_affines(dst, src, tris)
    covered = ids > 0
    ys, xs = np.nonzero(covered)
    a = aff[ids[ys, xs].astype(np.int32) - 1]  # (P,3,2)
    xf, yf = xs.astype(np.float32), ys.astype(np.float32)
    map_x = np.full(shape, -1.0, np.float32)
    map_y = np.full(shape, -1.0, np.float32)
    map_x[ys, xs] = xf * a[:, 0, 0] + yf * a[:, 1, 0] + a[:, 2, 0]
    map_y[ys, xs] = xf * a[:, 0, 1] + yf * a[:, 1, 1] + a[:, 2, 1]
    return map_x, map_y, covered


def warp(src_img: np.ndarray, src_pts: np.ndarray, dst_pts: np.ndarray, tris: np.ndarray,
         shape: tuple[int, int], table_scale: float = 1.0) -> tuple[np.ndarray, np.ndarray]:
    """Piecewise-affine warp of ``src_img`` so ``src_pts`` land on ``dst_pts``; returns (image, coverage).

    ``table_scale`` < 1 builds the remap tables at that fraction of the resolution and upsamples them
    bilinearly: the map is continuous and piecewise linear, so this costs a sub-pixel error only along
    triangle edges while cutting the rasterising and gathering work by 1/scale^2. Coverage is then
    shrunk by a pixel so the table's outer border (where bilinear mixes in "no triangle") is not used.
    """
    if table_scale >= 1.0:
        map_x, map_y, covered = remap_tables(dst_pts, src_pts, tris, shape)
    else:
        h, w = shape
        sh, sw = max(2, int(round(h * table_scale))), max(2, int(round(w * table_scale)))
        kx, ky = sw / w, sh / h
        small = (dst_pts + 0.5) * np.array([kx, ky], np.float32) - 0.5
        mx, my, cov = remap_tables(small, src_pts, tris, (sh, sw))
        map_x = cv2.resize(mx, (w, h), interpolation=cv2.INTER_LINEAR)
        map_y = cv2.resize(my, (w, h), interpolation=cv2.INTER_LINEAR)
        cov = cv2.erode(cov.astype(np.uint8), np.ones((3, 3), np.uint8))
        covered = cv2.resize(cov, (w, h), interpolation=cv2.INTER_NEAREST).astype(bool)
    out = cv2.remap(src_img, map_x, map_y, interpolation=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
    return out, covered
