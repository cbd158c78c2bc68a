"""A pose-robust frontal face texture, lifted once per set of source photos with the landmarker's depth.

Why: a photo of a turned head shows one cheek foreshortened and hides the other; warping it straight onto
a frontal target stretches the few pixels of the hidden side over half the face (tears). Instead:

1. Each photo's 468 FaceMesh points get their depth (FaceMesh's z, re-run on the photo) so the head's own
   frame is known: the lateral axis is the normal of the plane through the face's midline points, "up"
   runs chin to forehead. Projected in that frame the points give a *frontal layout*; it is made exactly
   left-right symmetric by averaging each point with its mirror partner (the topology's pairs; see
   :func:`topology_mirror`, checked against pairs found by reflecting real faces' 3-D shapes).
2. Every triangle's *visibility* in a photo is the ratio of its projected area to its 3-D area (the cosine
   of the angle it is seen at; negative when it faces away). The photo is warped into the layout.
3. What a photo shows badly (visibility under ``min_visibility``) is filled from the symmetric side: the
   layout is symmetric, so that is a left-right flip of the texture. Several photos: at each texel the
   best view (highest visibility, direct before mirrored) comes first, the others blend in by weight.
4. Shading is taken out here (see :mod:`.lighting`): the texture holds skin tone and detail, the target's
   own light is put back per frame. The source's glasses (detected on the texture) are painted out from
   the skin around their frames (:func:`glasses_parts`), and its mouth and eye interiors are kept out of
   the texture's coverage, so neither they nor the teeth of a smiling photo are ever pasted.

Rendering (per frame, as cheap as the plain morph): the texture is warped onto the target's landmarks
with only the triangles that face the viewer in the target (positive signed area against the layout), so
what the target hides is not drawn.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from ..errors import SettingsError
from . import lighting, masks, mesh

#: FaceMesh points on the face's midline (forehead to chin), facts about the model's topology
MIDLINE = (10, 151, 9, 8, 168, 6, 197, 195, 5, 4, 1, 19, 94, 2, 164, 0, 13, 14, 17, 18, 200, 199, 175, 152)
#: inner mouth and eye loops: never taken from the source photo
INTERIORS = (masks.LIPS_INNER, masks.EYE_RIGHT, masks.EYE_LEFT)
GLASSES_THRESHOLD = 1.7
#: a dark bar across the nose bridge this deep (0..1 luma below the profile around it) scores the
#: threshold on its own: drawn frames on a GRID face 0.24-0.37, Grace Hopper's 0.33; bare faces at most
#: 0.087 (the shared clips' faces and portraits)
BRIDGE_DIP_AT_THRESHOLD = 0.15
#: every FaceMesh point that lies on the midline (its own mirror image)
SELF_MIRRORED = (0, 1, 2, 4, 5, 6, 8, 9, 10, 11, 12, 13, 14, 15, 16, 17, 18, 19, 94, 151, 152, 164, 168, 175,
                 195, 197, 199, 200)


def topology_mirror() -> np.ndarray:
    """The left-right partner of each of the 468 FaceMesh points, from the topology's own order.

    FaceMesh numbers its points so that the off-midline points below 248 and the points 248..467 are
    mirror partners in the same order (3<->248, 7<->249, 20<->250, ...). This was found, and is checked
    in the tests, by :func:`mirror_map` on real faces; using the rule instead of a per-photo pairing keeps
    a smiling or turned photo's asymmetry out of the pairs."""
    m = np.arange(468)
    left = [i for i in range(248) if i not in SELF_MIRRORED]
    right = list(range(248, 468))
    m[left], m[right] = right, left
    return m


@dataclass(frozen=True)
class TextureSettings:
    """How the frontal texture is built."""

    min_visibility: float = 0.45   # below this cosine a texel is taken from the symmetric side / another photo
    max_side: int = 512            # texture resolution cap (pixels across the face)
    shading_sigma: float = 0.06    # low-pass of the source shading, in face widths
    shading_features: float = 0.25  # the shading is read from texels within this share of it (skin; see
    #                                 lighting.remove_shading): brows and lash lines no longer light a halo
    glasses: bool = True           # detect the source's glasses and keep them out of the texture
    # how much of the paint over the photo's glasses frames is drawn (0..1); elsewhere the target itself
    # shows. The paint is smooth skin colour: a pale ghost of the frames over the nose bridge and under the
    # eyes on every frame; the target's own skin there takes much of the likeness to the photo with it
    glasses_paint: float = 1.0
    # how far the skin seen through the photo's lenses (tinted, magnified: an orange ring round the eyes)
    # takes the low-frequency colour of the skin round the rims, its fine detail kept (0..1)
    lens_tone: float = 1.0
    edge_fade: float = 0.04        # where the edge is stretched, coverage fades in over this much (face widths)
    outline_clean: float = 0.06    # the outline band whose dark texels (hair, falloff) are not drawn (face widths)

    def __post_init__(self) -> None:
        if not 0.0 <= self.min_visibility < 1.0:
            raise SettingsError(f"texture min_visibility must be in [0, 1), got {self.min_visibility}")
        if not 0.0 <= self.shading_features < 1.0:
            raise SettingsError(f"texture shading_features must be in [0, 1), got {self.shading_features}")
        if not 0.0 <= self.lens_tone <= 1.0:
            raise SettingsError(f"texture lens_tone must be in [0, 1], got {self.lens_tone}")
        if not 0.0 <= self.glasses_paint <= 1.0:
            raise SettingsError(f"texture glasses_paint must be in [0, 1], got {self.glasses_paint}")
        if not 0.0 <= self.edge_fade <= 0.2:
            raise SettingsError(f"texture edge_fade must be in [0, 0.2] face widths, got {self.edge_fade}")
        if not 0.0 <= self.outline_clean <= 0.2:
            raise SettingsError(f"texture outline_clean must be in [0, 0.2] face widths, got {self.outline_clean}")
        if self.max_side < 32:
            raise SettingsError("texture max_side must be >= 32")


def head_frame(p3: np.ndarray) -> np.ndarray:
    """Rows: lateral (subject's right eye -> left eye), down (forehead -> chin), depth, of a (468, 3) shape."""
    mid = p3[list(MIDLINE)]
    c = mid - mid.mean(axis=0)
    _, _, vt = np.linalg.svd(c, full_matrices=False)
    lateral = vt[2]
    if float((p3[263] - p3[33]) @ lateral) < 0:
        lateral = -lateral
    down = p3[152] - p3[10]
    down = down - (down @ lateral) * lateral
    down /= max(float(np.linalg.norm(down)), 1e-9)
    depth = np.cross(lateral, down)
    return np.stack([lateral, down, depth])


def _pairs(q: np.ndarray) -> np.ndarray:
    """Greedy one-to-one pairing of the points ``q`` (head frame, lateral axis first) with their reflection."""
    r = q * np.array([-1.0, 1.0, 1.0])
    cost = np.sum((q[:, None, :] - r[None, :, :]) ** 2, axis=2)
    cost = np.minimum(cost, cost.T)  # i<->j is one pairing: the better of its two reflections
    n = len(q)
    m = np.full(n, -1, np.int64)
    iu = np.triu_indices(n)
    for k in np.argsort(cost[iu], kind="stable"):
        i, j = int(iu[0][k]), int(iu[1][k])
        if m[i] < 0 and m[j] < 0:
            m[i], m[j] = j, i
    m[m < 0] = np.flatnonzero(m < 0)
    return m


def mirror_map(p3: np.ndarray, rounds: int = 3) -> np.ndarray:
    """For each of the 468 points, its left-right partner (midline points are their own), from one shape.

    The shape is reflected across its midline plane and points are paired greedily, closest pairs first,
    each pair both ways (so the map is an involution). The plane is then refitted to the pairs (their
    midpoints lie on it, their offsets are along its normal) and the pairing redone."""
    rot = head_frame(p3)
    mid = p3[list(MIDLINE)].mean(axis=0)
    m = _pairs((p3 - mid) @ rot.T)
    for _ in range(rounds):
        pair = m != np.arange(len(m))
        d = p3[pair] - p3[m[pair]]
        d = d * np.sign(d @ rot[0])[:, None]
        normal = d.mean(axis=0)
        normal /= max(float(np.linalg.norm(normal)), 1e-9)
        mid = ((p3 + p3[m]) / 2).mean(axis=0)
        down = rot[1] - (rot[1] @ normal) * normal
        down /= max(float(np.linalg.norm(down)), 1e-9)
        rot = np.stack([normal, down, np.cross(normal, down)])
        m2 = _pairs((p3 - mid) @ rot.T)
        if np.array_equal(m2, m):
            break
        m = m2
    return m


def frontal_layout(p3: np.ndarray, partner: np.ndarray) -> np.ndarray:
    """The symmetric frontal 2-D layout (468, 2) of a 3-D shape, centred on the midline, same scale."""
    rot = head_frame(p3)
    mid = p3[list(MIDLINE)].mean(axis=0)
    q = ((p3 - mid) @ rot.T)[:, :2]
    sym = (q + q[partner] * np.array([-1.0, 1.0])) / 2.0
    return sym


def signed_areas(pts: np.ndarray, tris: np.ndarray) -> np.ndarray:
    a, b, c = pts[tris[:, 0]], pts[tris[:, 1]], pts[tris[:, 2]]
    return 0.5 * ((b[:, 0] - a[:, 0]) * (c[:, 1] - a[:, 1]) - (b[:, 1] - a[:, 1]) * (c[:, 0] - a[:, 0]))


def visibility(p3: np.ndarray, layout: np.ndarray, tris: np.ndarray) -> np.ndarray:
    """Per-triangle cosine of the viewing angle in a photo (negative = facing away), (T,) float32."""
    a, b, c = p3[tris[:, 0]], p3[tris[:, 1]], p3[tris[:, 2]]
    area3 = 0.5 * np.linalg.norm(np.cross(b - a, c - a), axis=1)
    area2 = signed_areas(p3[:, :2], tris) * np.sign(signed_areas(layout, tris))
    return (area2 / np.maximum(area3, 1e-9)).astype(np.float32)


def front_facing(dst: np.ndarray, layout: np.ndarray, tris: np.ndarray, min_ratio: float = 0.02) -> np.ndarray:
    """Triangles that face the viewer in a target shape: same winding as in the layout (and not collapsed)."""
    return _facing(signed_areas(layout, tris), signed_areas(dst.astype(np.float64), tris), min_ratio)


def _facing(la: np.ndarray, da: np.ndarray, min_ratio: float) -> np.ndarray:
    scale = float(np.sum(np.abs(da))) / max(float(np.sum(np.abs(la))), 1e-9)
    return da * np.sign(la) > min_ratio * np.abs(la) * scale


def draw_plan(dst: np.ndarray, texture: "FrontalTexture") -> tuple[np.ndarray, float]:
    """What a target face draws of ``texture``: its front-facing triangles (:func:`front_facing`) and its
    edge fade (:func:`edge_fade_amount`), from one computation of the target's triangle areas."""
    da = signed_areas(dst.astype(np.float64), texture.triangles)
    front = _facing(signed_areas(texture.landmarks[0], texture.triangles), da, 0.02)
    return front, _edge_fade(da, texture, front)


#: the edge triangles' stretch (90th percentile, against the face's own scale) where the edge fade starts,
#: and where it is whole. Measured in renders: upright faces up to 2.8 (GRID, ASL and walking clips, the
#: head-pose clip's man; 3.08 on 9 ASL frames with the Biden photo), the head-pose clip's woman, rolled
#: 56 degrees, 4.2-6.6 (it depends on the photo's layout)
EDGE_STRETCH = (3.0, 4.0)


def edge_fade_amount(dst: np.ndarray, texture: "FrontalTexture", front: np.ndarray) -> float:
    """How much of the edge fade a target face gets (0..1), from how stretched the texture's outline
    triangles are on it.

    Why: a photo's face outline carries shadow and background bleed, a dark band at the texture's edge.
    On an upright target the edge triangles keep their size and the blend's feather hides the band; on a
    head rolled far (the head-pose clip's woman) they are stretched several times over the cheek, and
    the band showed as a row of dark teeth. There the coverage fades in from the outline, so the target
    shows instead. Only there: fading every face's outline also took 0.08 of mouth correlation from the
    ASL clip (seven ids), and refilling the band's colours changed the colour transfer (contrast rose).
    ``front``: the triangles drawn (:func:`front_facing`)."""
    return _edge_fade(signed_areas(np.asarray(dst, np.float64), texture.triangles), texture, front)


def _edge_fade(da: np.ndarray, texture: "FrontalTexture", front: np.ndarray) -> float:
    sel = texture.edge_triangles & front
    n = int(np.count_nonzero(sel))
    if n == 0:
        return 0.0
    la = texture.layout_areas
    scale = float(np.abs(da[front]).sum()) / max(float(np.abs(la[front]).sum()), 1e-9)
    stretch = da[sel] * np.sign(la[sel]) / np.maximum(np.abs(la[sel]) * scale, 1e-9)
    # the 90th percentile (as np.percentile interpolates it) from a partial sort: a third of its time
    pos = 0.9 * (n - 1)
    k = int(pos)
    part = np.partition(stretch, [k, min(k + 1, n - 1)])
    p90 = float(part[k]) + (pos - k) * (float(part[min(k + 1, n - 1)]) - float(part[k]))
    lo, hi = EDGE_STRETCH
    return float(np.clip((p90 - lo) / (hi - lo), 0.0, 1.0))


def glasses_score(img: np.ndarray, lm: np.ndarray) -> float:
    """How strongly a glasses bridge shows: horizontal-edge energy on the nose bridge over the
    vertical-edge energy there and the cheeks' texture. A frame's bridge is a dark horizontal bar; bare
    skin there is smooth, or shaded along the nose (vertical edges). ``img`` float32 RGB 0..1, ``lm``
    (468, 2) in its pixels. About 0.3..1.3 on bare skin, 1.3..4 with glasses (measured on the shared
    photos and clips). On a close-up the inner rims stand within the bridge's window too, and their
    vertical edges count as skin (a pair drawn on a GRID face scored 0.9-1.15): so the depth of the dark
    bar itself (:func:`bridge_dip`) scores as well, :data:`BRIDGE_DIP_AT_THRESHOLD` at the threshold."""
    r = max(2, int(round(0.04 * masks.face_width(lm))))
    h, w = img.shape[:2]

    def patch(pt, dx: int, dy: int) -> float:
        # the gradient's mean over a (2r+1)^2 window, computed on that window alone (cheap per frame)
        x, y = int(round(float(pt[0]))), int(round(float(pt[1])))
        x0, y0, x1, y1 = max(x - r - 1, 0), max(y - r - 1, 0), min(x + r + 2, w), min(y + r + 2, h)
        if x1 - x0 < 3 or y1 - y0 < 3:
            return 0.0
        gray = cv2.cvtColor(np.ascontiguousarray(img[y0:y1, x0:x1, :3], np.float32), cv2.COLOR_RGB2GRAY)
        g = np.abs(cv2.Sobel(gray, cv2.CV_32F, dx, dy, ksize=3))[1:-1, 1:-1]
        return float(g.mean()) if g.size else 0.0

    bar = max(patch(lm[168], 0, 1), patch((lm[168] + lm[6]) / 2, 0, 1), patch((lm[9] + lm[168]) / 2, 0, 1))
    skin = max(patch(lm[168], 1, 0), 0.5 * (patch(lm[205], 0, 1) + patch(lm[425], 0, 1)), 1e-3)
    return max(bar / skin, GLASSES_THRESHOLD * bridge_dip(img, lm) / BRIDGE_DIP_AT_THRESHOLD)


def bridge_dip(img: np.ndarray, lm: np.ndarray) -> float:
    """How far a bar across the nose bridge is darker than the bridge above and below it: the luma
    profile down the midline (from a little above the brows' middle to below the bridge, 0.06 face
    widths across), less its closing over 0.1 face widths; 0..1."""
    width = float(masks.face_width(lm))
    top, bot = lm[9].astype(np.float64), lm[6].astype(np.float64)
    d = bot - top
    length = float(np.hypot(*d))
    if length < 2:
        return 0.0
    top, bot = top - 0.3 * d, bot + 0.2 * d
    n = max(12, int(1.5 * length))
    along = top[None] + np.linspace(0.0, 1.0, n)[:, None] * (bot - top)[None]
    across = np.array([-d[1], d[0]]) / length * np.linspace(-0.03 * width, 0.03 * width, 5)[:, None]
    xs = (along[:, None, 0] + across[None, :, 0]).astype(np.float32)
    ys = (along[:, None, 1] + across[None, :, 1]).astype(np.float32)
    src = img[..., :3] if img.dtype == np.float32 and img.flags.c_contiguous else np.ascontiguousarray(img[..., :3], np.float32)
    rgb = cv2.remap(src, xs, ys, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)  # only the samples
    prof = (rgb @ np.float32([0.299, 0.587, 0.114])).mean(axis=1)
    step = 1.5 * length / (n - 1)
    k = max(3, int(round(0.1 * width / step)) | 1)
    closed = cv2.morphologyEx(prof.reshape(-1, 1).astype(np.float32), cv2.MORPH_CLOSE, np.ones((k, 1), np.uint8))
    return float((closed.ravel() - prof).max())


def glasses_band(lm: np.ndarray, shape: tuple[int, int], vertical: float = 2.5) -> np.ndarray:
    """Where a pair of glasses sits: a band around both eyes from the brows to the upper cheeks, across
    the nose bridge (float32 0..1 over ``shape``)."""
    m = np.zeros(shape, np.uint8)
    width = masks.face_width(lm)
    pts = []
    for loop in (masks.EYE_RIGHT, masks.EYE_LEFT):
        e = lm[list(loop)]
        c = e.mean(axis=0)
        pts.append(c + (e - c) * np.float32([2.5, vertical]))  # the rims sit well outside the lids
    hull = cv2.convexHull(np.concatenate(pts + [lm[[168, 6]]]).astype(np.float32))
    cv2.fillPoly(m, [np.round(hull.reshape(-1, 2) * 16).astype(np.int32)], 255, lineType=cv2.LINE_AA, shift=4)
    k = max(1, int(0.05 * width))
    m = cv2.dilate(m, cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * k + 1, 2 * k + 1)))
    return m.astype(np.float32) / 255.0


def _distance_from_surroundings(img: np.ndarray, width: float) -> tuple[np.ndarray, np.ndarray]:
    """Each texel's colour distance (CIELAB, lightness at half weight) from the median of its surroundings
    (0.12 face widths: wider than a frame's rim, narrower than a cheek), and its lightness above them."""
    k = int(0.12 * width) | 1
    u8 = np.round(np.clip(img[..., :3], 0.0, 1.0) * 255.0).astype(np.uint8)
    med = cv2.medianBlur(u8, max(k, 3)).astype(np.float32) / 255.0
    lab = cv2.cvtColor(np.ascontiguousarray(img[..., :3], np.float32), cv2.COLOR_RGB2LAB)
    diff = lab - cv2.cvtColor(med, cv2.COLOR_RGB2LAB)
    diff[..., 0] *= 0.5
    return np.sqrt(np.sum(diff * diff, axis=2)), diff[..., 0] * 2.0


def _rim_ring(d: np.ndarray, lm: np.ndarray, loop: tuple[int, ...], width: float, midline_x: float,
              angles: int = 96, radii: int = 40) -> np.ndarray:
    """The closed loop around one eye that follows a frame's rim: of all loops between just outside the
    lids and 0.3 face widths out (never across the midline), the one along which the texels differ most
    from their surroundings, its radius changing by at most one step per angle (exact, by dynamic
    programming over each start). A rim's faint stretches are found because the whole ring is scored.
    Returns (angles, 2) points."""
    eye = lm[list(loop)].astype(np.float64)
    c = eye.mean(axis=0)
    ang = np.linspace(0.0, 2.0 * np.pi, angles, endpoint=False)
    dirs = np.stack([np.cos(ang), np.sin(ang)], axis=1)
    rel = eye - c
    proj = rel @ dirs.T
    cone = proj / np.maximum(np.linalg.norm(rel, axis=1)[:, None], 1e-9) > 0.8
    lid = np.where(cone, proj, 0.0).max(axis=0)          # the eye loop's reach along each direction
    r_in = 1.15 * lid + 0.03 * width
    with np.errstate(divide="ignore", invalid="ignore"):
        to_mid = (midline_x - c[0]) / dirs[:, 0]
    r_out = np.minimum(0.3 * width, np.where(to_mid > 0, to_mid - 0.01 * width, np.inf))
    r_out = np.maximum(r_out, r_in + 2.0)
    rad = r_in[:, None] + (r_out - r_in)[:, None] * np.linspace(0.0, 1.0, radii)[None, :]
    xs = (c[0] + dirs[:, :1] * rad).astype(np.float32)
    ys = (c[1] + dirs[:, 1:] * rad).astype(np.float32)
    resp = cv2.remap(d, xs, ys, cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT, borderValue=0.0)
    cost = np.full((radii, radii), -np.inf)              # [start radius, current radius]
    cost[np.arange(radii), np.arange(radii)] = resp[0]
    back = np.zeros((angles, radii, radii), np.int8)
    for a in range(1, angles):
        prev = np.full((3, radii, radii), -np.inf)
        prev[0][:, 1:] = cost[:, :-1]                    # from one step in
        prev[1] = cost
        prev[2][:, :-1] = cost[:, 1:]                    # from one step out
        step = np.argmax(prev, axis=0)
        cost = np.take_along_axis(prev, step[None], 0)[0] + resp[a]
        back[a] = step - 1
    closed = np.full((radii, radii), -np.inf)            # a closed loop ends within one step of its start
    for off in (-1, 0, 1):
        idx = np.arange(radii) + off
        ok = (idx >= 0) & (idx < radii)
        closed[np.arange(radii)[ok], idx[ok]] = cost[np.arange(radii)[ok], idx[ok]]
    start, j = np.unravel_index(int(np.argmax(closed)), closed.shape)
    path = np.zeros(angles, np.int64)
    path[-1] = j
    for a in range(angles - 1, 0, -1):
        j = j + int(back[a, start, j])
        path[a - 1] = j
    pts = np.stack([xs[np.arange(angles), path], ys[np.arange(angles), path]], axis=1).astype(np.float64)
    # a rim is smooth: a running mean over 11 angles (about 40 degrees) takes out single-step jitter
    k = 5
    wrap = np.concatenate([pts[-k:], pts, pts[:k]])
    kernel = np.ones(2 * k + 1) / (2 * k + 1)
    return np.stack([np.convolve(wrap[:, i], kernel, "valid") for i in range(2)], axis=1)


def glasses_parts(img: np.ndarray, lm: np.ndarray, midline_x: float) -> tuple[np.ndarray, np.ndarray]:
    """Where a pair of glasses shows on a frontal texture: both rims, and what stands out from the skin
    around the lenses (bridge, browline, temples) or as glare on them; and what the rims enclose (the
    lenses). Two (h, w) bool masks.

    Why not a band: a band that keeps the frames out also takes the eyes and brows, and with them the
    identity (0% of frames on the shared glasses photo), while large frames still reach below it. The
    rims are found as the loop around each eye that differs most from its surroundings (:func:`_rim_ring`);
    what the ring encloses is kept (eyes, lids) except glare."""
    width = masks.face_width(lm)
    d, _ = _distance_from_surroundings(img, width)
    h, w = d.shape
    rims = np.zeros((h, w), np.uint8)
    lens = np.zeros((h, w), np.uint8)
    thick = max(1, int(round(0.012 * width)))
    for loop in (masks.EYE_RIGHT, masks.EYE_LEFT):
        ring = np.round(_rim_ring(d, lm, loop, width, midline_x) * 16).astype(np.int32)
        cv2.polylines(rims, [ring], True, 255, 2 * thick + 1, cv2.LINE_AA, shift=4)
        cv2.fillPoly(lens, [ring], 255, cv2.LINE_8, shift=4)
    around = glasses_band(lm, (h, w)) > 0.5
    kx = max(1, int(0.08 * width))                       # temples run out to the face's sides
    around = cv2.dilate(around.astype(np.uint8), np.ones((1, 2 * kx + 1), np.uint8)) > 0
    face = np.zeros((h, w), np.uint8)
    cv2.fillPoly(face, [np.round(cv2.convexHull(lm.astype(np.float32)).reshape(-1, 2)).astype(np.int32)], 255)
    rest = (face > 0) & ~around
    skin = float(np.median(d[rest])) if rest.any() else float(np.median(d))  # the face's own texture level
    found = (rims > 0) | (around & (lens == 0) & (d > 3.0 * skin))
    # A second look, on the texture painted over what was found: the surroundings are skin now, so what
    # is left of a frame stands out (next to a thick rim the first median was the rim's colour), and so
    # does glare: much lighter than the surroundings on the lenses. (A lower glare bar, or looking just
    # past the rings for a clear rim's lit edge, also took highlights of the lids and cheekbones: identity
    # on 37-89% of frames instead of 100% on the shared glasses photo.)
    d2, lighter = _distance_from_surroundings(_fill_holes(img[..., :3], ~found, np.ones_like(found)), width)
    found |= (around & (lens == 0) & (d2 > 3.0 * skin)) | ((lens > 0) & (lighter > 12.0))
    g = max(1, int(round(0.01 * width)))
    frames = cv2.dilate(found.astype(np.uint8), cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * g + 1,) * 2)) > 0
    return frames, lens > 0


def photo_depth(rgb: np.ndarray, landmarks: np.ndarray, progress=None) -> np.ndarray:
    """FaceMesh's depth (468,) for a photo's face, in the same pixel units as x and y."""
    from ..faces.geometry import to_rgb8
    from ..faces.mediapipe import FaceMesh, roi_from_landmarks

    fm = FaceMesh(progress, iris=False)
    res = fm.landmarks(to_rgb8(rgb), roi_from_landmarks(np.asarray(landmarks, np.float32)[:468]))
    if res.z is None:  # pragma: no cover - the registry's FaceMesh always gives depth
        raise SettingsError("the landmarker gave no depth for the source photo")
    return np.asarray(res.z[:468], np.float32)


@dataclass(frozen=True, eq=False)
class FrontalTexture:
    """The lifted face: RGBA float32 texture levels (alpha = coverage), the layout per level, its triangles.
    A fifth channel, where present, is the coverage the colour statistics use (see :func:`outline_clean`)."""

    levels: tuple[np.ndarray, ...]
    landmarks: tuple[np.ndarray, ...]
    triangles: np.ndarray
    width: float
    report: dict
    edge_ramps: tuple[np.ndarray, ...]   # per level: 0 on the outline, 1 from the edge fade's width in
    edge_triangles: np.ndarray           # (T,) bool: the triangles with a corner on the outline
    layout_areas: np.ndarray             # (T,) signed areas of the triangles in level 0's layout

    def level_for(self, target_width: float) -> int:
        lvl = 0
        while lvl + 1 < len(self.levels) and self.width / 2 ** (lvl + 1) >= target_width:
            lvl += 1
        return lvl


def build(photos: list[tuple[np.ndarray, np.ndarray, np.ndarray]], settings: TextureSettings = TextureSettings()
          ) -> FrontalTexture:
    """Lift ``photos`` — (float32 RGB crop 0..1, (468, 2) landmarks in the crop, (468,) depth) — into one
    frontal texture (best view first, symmetric fill), shading removed."""
    if not photos:
        raise SettingsError("a texture needs at least one photo")
    shapes = [np.column_stack([lm[:468].astype(np.float64), z[:468].astype(np.float64)]) for _, lm, z in photos]
    # the most frontal photo defines the layout's scale
    partner = topology_mirror()
    layouts = [frontal_layout(p, partner) for p in shapes]
    # a common layout: each photo's scaled to the first, averaged
    ref = layouts[0]
    aligned = []
    for lay in layouts:
        s = np.sqrt(np.sum(ref ** 2) / max(np.sum(lay ** 2), 1e-9))
        aligned.append(lay * s)
    layout = np.mean(aligned, axis=0)
    widths = [masks.face_width(lm) for _, lm, _ in photos]
    lw = masks.face_width(layout.astype(np.float32))
    side_px = min(float(np.median(widths)), float(settings.max_side))
    scale = side_px / lw
    pad = int(0.08 * side_px) + 4
    lo = layout.min(axis=0) * scale
    hi = layout.max(axis=0) * scale
    # centre the midline (x = 0) on the texture's middle column so a left-right flip is np.fliplr
    half_w = int(np.ceil(max(-lo[0], hi[0]))) + pad
    w = 2 * half_w + 1
    h = int(np.ceil(hi[1] - lo[1])) + 2 * pad + 1
    tex_pts = (layout * scale + np.array([half_w, pad - lo[1]])).astype(np.float32)
    tris = mesh.delaunay(tex_pts.astype(np.float64))
    ids = mesh.rasterize(tex_pts, tris, (h, w))
    inside = ids > 0
    colours, weights, vis_report, glasses_found, glasses_removed = [], [], [], [], []
    painted = []  # per weight: the share of it that is paint over the photo's glasses frames
    for (img, lm, _z), p3 in zip(photos, shapes):
        vis = visibility(p3, layout, tris)
        tex, cov = mesh.warp(img, lm[:468].astype(np.float32), tex_pts, tris, (h, w))
        vmap = np.where(inside, vis[np.maximum(ids.astype(np.int32) - 1, 0)], 0.0).astype(np.float32)
        vmap[~cov] = 0.0
        keep = np.ones((h, w), np.float32)
        for loop in INTERIORS:  # mouth and eye interiors never come from the source
            _fill(keep, tex_pts[list(loop)], 0.0, grow=0.015 * side_px)
        g = glasses_score(tex, tex_pts) if settings.glasses else 0.0
        has_glasses = g > GLASSES_THRESHOLD
        glasses_found.append(round(g, 2))
        removed = 0.0
        paint = None
        if has_glasses:  # the frames are painted out of the texture from the skin around them
            frames, lenses = glasses_parts(tex, tex_pts, float(half_w))
            frames &= inside
            tex = _fill_holes(tex, cov & ~frames, inside)
            if settings.lens_tone > 0.0:
                tex = _tone_lenses(tex, lenses & inside & ~frames, frames, tex_pts, side_px, settings.lens_tone)
            removed = float(np.mean(frames[inside]))
            if settings.glasses_paint < 1.0:
                soft = max(0.006 * side_px, 0.5)
                paint = np.clip(cv2.GaussianBlur(frames.astype(np.float32), (0, 0), soft) * 2.0, 0.0, 1.0)
        glasses_removed.append(round(removed, 3))
        tex = lighting.remove_shading(tex, inside & cov & (keep > 0.5), settings.shading_sigma * side_px,
                                      settings.shading_features)
        for flip in (False, True):
            t, v, k = (tex, vmap, keep) if not flip else (tex[:, ::-1], vmap[:, ::-1], keep[:, ::-1])
            good = np.clip((v - settings.min_visibility) / max(1.0 - settings.min_visibility, 1e-3), 0.0, 1.0)
            wgt = (good ** 2 + 1e-4 * (v > 0)) * k * (0.35 if flip else 1.0)
            colours.append(t)
            weights.append(wgt.astype(np.float32))
            painted.append(None if paint is None else (paint if not flip else paint[:, ::-1]))
        vis_report.append({"visible_share": round(float(np.mean(vis > settings.min_visibility)), 3),
                           "facing_away_share": round(float(np.mean(vis <= 0.0)), 3)})
    wsum = np.sum(weights, axis=0)
    acc = np.zeros((h, w, 3), np.float32)
    for c, wgt in zip(colours, weights):
        acc += c * wgt[..., None]
    rgb = acc / np.maximum(wsum, 1e-6)[..., None]
    alpha = np.clip(wsum / 3e-5, 0.0, 1.0) * inside
    # The edge fade (see :func:`edge_fade_amount`): 0 on the texture's outline, 1 from ``edge_fade`` in.
    if settings.edge_fade > 0.0:
        dist = cv2.distanceTransform(np.pad(inside.astype(np.uint8), 1), cv2.DIST_L2, 3)[1:-1, 1:-1]
        ramp = np.clip(dist / (settings.edge_fade * side_px), 0.0, 1.0).astype(np.float32)
    else:
        ramp = np.ones((h, w), np.float32)
    # texels nobody shows well (the weights above are tiny there) take the best view they have
    rgba = np.dstack([rgb, alpha.astype(np.float32)]).astype(np.float32)
    rgba[..., :3] = _fill_holes(rgba[..., :3], alpha > 0.5, inside)
    cleaned = 0.0
    if settings.outline_clean > 0.0:
        clean = outline_clean(rgba[..., :3], inside, tex_pts, side_px, settings.outline_clean)
        cleaned = float(np.mean((clean < 0.5)[inside]))
        if cleaned > 0.0:
            # a fifth channel: the coverage before the clean, which the colour statistics keep using (left
            # out, those dark texels would raise colour transfer's contrast: darker eyes and lids)
            rgba = np.dstack([rgba[..., :3], rgba[..., 3] * clean, rgba[..., 3]]).astype(np.float32)
    if any(p is not None for p in painted):
        # what only paint covers is not drawn (the target shows there), but still counts for colour
        paint_w = sum(wgt * p for wgt, p in zip(weights, painted) if p is not None)
        hole = np.float32(1.0 - settings.glasses_paint)
        shown = 1.0 - hole * np.clip(paint_w / np.maximum(wsum, 1e-6), 0.0, 1.0)
        if rgba.shape[2] == 4:
            rgba = np.dstack([rgba, rgba[..., 3]]).astype(np.float32)
        rgba[..., 3] *= shown.astype(np.float32)
    levels, lms, ramps = [rgba], [tex_pts], [ramp]
    while min(levels[-1].shape[:2]) > 64 and len(levels) < 5:
        levels.append(cv2.pyrDown(levels[-1]))
        ramps.append(cv2.pyrDown(ramps[-1]))
        lms.append(((lms[-1] + 0.5) * 0.5 - 0.5).astype(np.float32))
    outline = set(cv2.convexHull(tex_pts, returnPoints=False).ravel().tolist())
    edge = np.array([any(int(v) in outline for v in t) for t in tris], bool)
    report = {"photos": vis_report, "glasses_score": glasses_found, "glasses_removed_share": glasses_removed,
              "glasses_paint": float(settings.glasses_paint), "lens_tone": float(settings.lens_tone),
              "outline_cleaned_share": round(cleaned, 3), "size": [int(w), int(h)], "triangles": int(len(tris))}
    return FrontalTexture(tuple(levels), tuple(lms), tris, float(masks.face_width(tex_pts)), report,
                          tuple(ramps), edge, signed_areas(tex_pts.astype(np.float64), tris))


def outline_clean(rgb: np.ndarray, inside: np.ndarray, pts: np.ndarray, side_px: float,
                  band: float = 0.06, dark: tuple[float, float] = (0.06, 0.12)) -> np.ndarray:
    """Coverage (0..1) for the texture's outline band: 0 where a texel is darker than the skin just inside
    it by ``dark[1]`` (0..1 luma) or more, from 1 at ``dark[0]``; 1 elsewhere. Why: the photo's outline band
    carries hair falling over the face's sides and the cheeks' own falloff into the background; on a turned
    head that band is compressed along the far jaw into a dark line. Brows and the eye and mouth holes are
    not outline and are left alone."""
    filled = masks.fill_holes(inside)
    dist = cv2.distanceTransform(np.pad(filled.astype(np.uint8), 1), cv2.DIST_L2, 3)[1:-1, 1:-1]
    b = band * side_px
    features = np.zeros(inside.shape, np.float32)
    for loop in INTERIORS + masks.BROWS:
        _fill(features, pts[list(loop)], 1.0, grow=0.03 * side_px)
    free = filled & (features < 0.5)
    ring = free & (dist >= b) & (dist < 2.5 * b)
    if int(np.count_nonzero(ring)) < 16:
        return np.ones(inside.shape, np.float32)
    y = lighting.luminance(np.ascontiguousarray(rgb, dtype=np.float32))
    ref = lighting.masked_lowpass(y, ring, 0.08 * side_px)
    amount = np.clip((ref - y - dark[0]) / max(dark[1] - dark[0], 1e-6), 0.0, 1.0)
    return (1.0 - amount * (free & (dist < b))).astype(np.float32)


def _fill(mask: np.ndarray, loop: np.ndarray, value: float, grow: float = 0.0) -> None:
    m = np.zeros(mask.shape, np.uint8)
    cv2.fillPoly(m, [np.round(loop * 16).astype(np.int32)], 255, lineType=cv2.LINE_8, shift=4)
    g = int(round(grow))
    if g > 0:
        m = cv2.dilate(m, cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * g + 1, 2 * g + 1)))
    mask[m > 0] = value


def _tone_lenses(rgb: np.ndarray, lens: np.ndarray, frames: np.ndarray, pts: np.ndarray, side: float,
                 strength: float) -> np.ndarray:
    """Seen through a lens the skin round the eye is tinted and magnified: its low-frequency colour is
    brought to what the skin round the rims gives there (pulled in from outside), its fine detail kept."""
    eyes = np.zeros(lens.shape, np.uint8)
    for loop in (masks.EYE_RIGHT, masks.EYE_LEFT):
        cv2.fillPoly(eyes, [np.round(pts[list(loop)]).astype(np.int32)], 1)
    eyes = cv2.dilate(eyes, np.ones((3, 3), np.uint8), iterations=max(1, int(0.02 * side))) > 0
    region = lens & ~eyes
    if not region.any():
        return rgb
    outside = ~(lens | frames)
    expected = _fill_holes(rgb, outside, np.ones_like(outside))
    sig = 0.03 * side
    w = cv2.GaussianBlur(region.astype(np.float32), (0, 0), sig)
    own = cv2.GaussianBlur(rgb * region[..., None], (0, 0), sig) / np.maximum(w, 1e-4)[..., None]
    want = cv2.GaussianBlur(expected * region[..., None], (0, 0), sig) / np.maximum(w, 1e-4)[..., None]
    soft = np.clip(cv2.GaussianBlur(region.astype(np.float32), (0, 0), 0.01 * side) * 1.5, 0.0, 1.0)
    return np.clip(rgb + np.float32(strength) * soft[..., None] * (want - own), 0.0, 1.0)


def _fill_holes(rgb: np.ndarray, known: np.ndarray, inside: np.ndarray) -> np.ndarray:
    """Colours for texels no photo covers: pull-push from the known ones (smooth, no seams)."""
    if known.all() or not known.any():
        return rgb
    w = known.astype(np.float32)
    val = rgb * w[..., None]
    pv, pw = [val], [w]
    while min(pw[-1].shape) > 4:
        pv.append(cv2.pyrDown(pv[-1]))
        pw.append(cv2.pyrDown(pw[-1]))
    fill = pv[-1] / np.maximum(pw[-1], 1e-6)[..., None]
    for v, ww in zip(reversed(pv[:-1]), reversed(pw[:-1])):
        up = cv2.pyrUp(fill, dstsize=(v.shape[1], v.shape[0]))
        k = np.clip(ww * 4.0, 0.0, 1.0)[..., None]
        fill = v / np.maximum(ww, 1e-6)[..., None] * k + up * (1.0 - k)
    out = rgb.copy()
    out[~known] = fill[~known]
    return out
