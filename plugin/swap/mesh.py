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
    p = np.asarray(dst, np.float64)
    s = np.asarray(src, np.float64)[tris.T]  # (3, T, 2): corner i of every triangle
    x, y = p[tris.T, 0], p[tris.T, 1]        # (3, T)
    # Closed form (a batched np.linalg.solve costs ~0.6 ms for the ~900 triangles of a face): the edge
    # function of edge i (corner i -> i+1) is 0 on that edge and 2*area at the opposite corner, so it is
    # that corner's barycentric weight times 2*area; A = sum_i (edge function i's coefficients) x s_opp.
    ex, ey = x[[1, 2, 0]] - x, y[[1, 2, 0]] - y
    det = ex[0] * (y[2] - y[0]) - ey[0] * (x[2] - x[0])
    ok = np.abs(det) > 1e-9
    inv = 1.0 / np.where(ok, det, 1.0)
    opp = s[[2, 0, 1]]
    out = np.empty((len(tris), 3, 2), np.float64)
    for row, coef in enumerate((-ey, ex, ey * x - ex * y)):
        out[:, row] = np.einsum("it,itc->tc", coef, opp) * inv[:, None]
    for t in np.flatnonzero(~ok):
        d = np.concatenate([p[tris[t]], np.ones((3, 1))], axis=1)
        out[t] = np.linalg.lstsq(d, np.asarray(src, np.float64)[tris[t]], rcond=None)[0]
    return out.astype(np.float32)


def rasterize(dst: np.ndarray, tris: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """Triangle id + 1 per pixel over ``shape`` (0 where no triangle covers the pixel), uint16.

    Triangles are drawn with 4 bits of sub-pixel precision. Where the mesh folds over itself (a profile
    view), the triangle nearer the viewer is not known, so the later one wins: the same on every frame.
    """
    if len(tris) >= 65535:
        raise SettingsError("too many triangles for the uint16 raster")
    ids = np.zeros(shape, np.uint16)
    fill = cv2.fillConvexPoly
    # (positional arguments and one list of corner arrays: the binding's keyword parsing and a numpy view
    # per triangle were a third of the loop)
    for t, corners in enumerate(list(np.round(dst[tris] * 16.0).astype(np.int32)), 1):
        fill(ids, corners, t, cv2.LINE_8, 4)
    return ids


def rasterize_rows(dst: np.ndarray, tris: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """:func:`rasterize` vectorised by rows (the per-frame warp's): the same ids but along edges.

    Corners are taken at 1/16 pixel, as there. A pixel belongs to a triangle when its centre lies inside the
    triangle grown by half a pixel along each edge's major axis (what the edges' 8-connected outline adds
    to a filled polygon, so neighbours share their edge pixels and no seam of uncovered pixels opens).
    Where triangles overlap (their shared edges, or a mesh folding over itself in a profile view) the
    later one wins: the same on every frame.

    Every (triangle, row) pair gets its run of pixels from the edges' bounds: a few numpy passes over
    ~5 runs per triangle instead of a drawing call per triangle (~900 calls, about 1 ms per face). The
    pixels it gives a different triangle than :func:`rasterize` lie on shared edges, where the two maps
    agree to a fraction of a pixel, and on the outline of folds (a few pixels of a face).
    """
    if len(tris) >= 65535:
        raise SettingsError("too many triangles for the uint16 raster")
    h, w = shape
    ids = np.zeros(h * w, np.uint16)
    if len(tris) == 0 or h <= 0 or w <= 0:
        return ids.reshape(h, w)
    half = 0.5
    q = np.round(np.asarray(dst, np.float64) * 16.0) * (1.0 / 16.0)
    x, y = q[tris.T, 0], q[tris.T, 1]  # (3, T)
    ex, ey = x[[1, 2, 0]] - x, y[[1, 2, 0]] - y
    det = ex[0] * (y[2] - y[0]) - ey[0] * (x[2] - x[0])
    sgn = np.where(det < 0, -1.0, 1.0)  # either winding: the inside is where every edge function is >= 0
    ex, ey = ex * sgn, ey * sgn
    # edge i, grown: -ey X + ex Y + (ey x - ex y) + half max(|ex|, |ey|) >= 0, i.e. a bound on X per row
    # (X >= k Y + m where ey < 0, X <= k Y + m where ey > 0; a horizontal edge bounds the rows only, and
    # the rows already stop half a pixel past the corners)
    c = ey * x - ex * y + half * np.maximum(np.abs(ex), np.abs(ey))
    with np.errstate(divide="ignore", invalid="ignore"):
        k, m = ex / ey, c / ey
    lo, hi = ey < 0, ey > 0
    ks = [np.where(lo[i], k[i], 0.0) for i in range(3)] + [np.where(hi[i], k[i], 0.0) for i in range(3)]
    ms = [np.where(lo[i], m[i], -np.inf) for i in range(3)] + [np.where(hi[i], m[i], np.inf) for i in range(3)]
    y0 = np.maximum(np.ceil(np.minimum(np.minimum(y[0], y[1]), y[2]) - half), 0).astype(np.int64)
    y1 = np.minimum(np.floor(np.maximum(np.maximum(y[0], y[1]), y[2]) + half), h - 1).astype(np.int64)
    rows = np.maximum(y1 - y0 + 1, 0)
    tid = np.repeat(np.arange(len(tris)), rows)
    row = np.arange(len(tid)) - np.repeat(np.cumsum(rows) - rows - y0, rows)  # y of each run
    b = [kj.take(tid) * row + mj.take(tid) for kj, mj in zip(ks, ms)]
    # (numpy's max over a short last axis is slow: pairwise)
    xl = np.maximum(np.ceil(np.maximum(np.maximum(b[0], b[1]), b[2]) - 1e-9), 0.0)
    xr = np.minimum(np.floor(np.minimum(np.minimum(b[3], b[4]), b[5]) + 1e-9), w - 1.0)
    n = np.maximum(xr - xl + 1.0, 0.0).astype(np.int64)
    start = row * w + xl.astype(np.int64)
    flat = np.repeat(start - (np.cumsum(n) - n), n) + np.arange(int(n.sum()))
    # runs are in triangle order, and numpy's fancy assignment writes in order: the later triangle wins
    ids[flat] = np.repeat((tid + 1).astype(np.uint16), n)
    return ids.reshape(h, w)


def remap_tables(dst: np.ndarray, src: np.ndarray, tris: np.ndarray, shape: tuple[int, int],
                 rows: bool = False) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Dense (map_x, map_y, coverage) for warping a source image onto ``dst`` landmarks over ``shape``;
    ``rows``: rasterise with :func:`rasterize_rows` (fast) rather than :func:`rasterize` (exact)."""
    h, w = shape
    ids = (rasterize_rows if rows else rasterize)(dst, tris, shape)
    aff = triangle_affines(dst, src, tris)
    # per-triangle map coefficients as rows (id 0, no triangle, maps to -1: outside the source)
    coef = np.empty((6, len(tris) + 1), np.float32)
    coef[:, 0] = (0.0, 0.0, -1.0, 0.0, 0.0, -1.0)
    coef[:, 1:] = aff.transpose(2, 1, 0).reshape(6, -1)
    c = [row.take(ids) for row in coef]
    xs = np.arange(w, dtype=np.float32)[None, :]
    ys = np.arange(h, dtype=np.float32)[:, None]
    map_x = c[0] * xs + c[1] * ys + c[2]
    map_y = c[3] * xs + c[4] * ys + c[5]
    return map_x, map_y, ids > 0


def warp(src_img: np.ndarray, src_pts: np.ndarray, dst_pts: np.ndarray, tris: np.ndarray,
         shape: tuple[int, int], table_scale: float = 1.0, rows: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """Piecewise-affine warp of ``src_img`` so ``src_pts`` land on ``dst_pts``; returns (image, coverage).

    ``rows``: the per-frame rasteriser (:func:`rasterize_rows`, about 1 ms less per face); the default,
    exact one is kept where it runs once (a photo's texture, whose layout can be all slivers).

    ``table_scale`` < 1 builds the remap tables at that fraction of the resolution and upsamples them
    bilinearly: the map is continuous and piecewise linear, so this costs a sub-pixel error only along
    triangle edges while cutting the rasterising and gathering work by 1/scale^2. Coverage is then
    shrunk by a pixel so the table's outer border (where bilinear mixes in "no triangle") is not used.
    """
    if table_scale >= 1.0:
        map_x, map_y, covered = remap_tables(dst_pts, src_pts, tris, shape, rows)
    else:
        h, w = shape
        sh, sw = max(2, int(round(h * table_scale))), max(2, int(round(w * table_scale)))
        kx, ky = sw / w, sh / h
        small = (dst_pts + 0.5) * np.array([kx, ky], np.float32) - 0.5
        mx, my, cov = remap_tables(small, src_pts, tris, (sh, sw), rows)
        map_x = cv2.resize(mx, (w, h), interpolation=cv2.INTER_LINEAR)
        map_y = cv2.resize(my, (w, h), interpolation=cv2.INTER_LINEAR)
        cov = cv2.erode(cov.astype(np.uint8), np.ones((3, 3), np.uint8))
        covered = cv2.resize(cov, (w, h), interpolation=cv2.INTER_NEAREST).astype(bool)
    out = cv2.remap(src_img, map_x, map_y, interpolation=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
    return out, covered
