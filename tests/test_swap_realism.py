"""The one-shot morph in a real edit: pose-robust texture, target lighting, multi-band seam, occlusion,
mouth and eyes from the target, and the realism figures of ``facecomp score``.

Real faces: the registry's astronaut photo (every machine) and the shared sample media (skipped with a
reason where absent). Frames are small and few so the whole file stays within seconds.
"""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from mediagen import first_frames, glasses_rims, sample_media, stamped_like

MEDIA = sample_media("grid_bbaf2n.mpg", "grace_hopper.jpg")
needs_media = pytest.mark.skipif(MEDIA is None, reason="shared sample media not found: set FACECOMP_SAMPLE_MEDIA")


def _frames(name: str, count: int, start: int = 0) -> list[np.ndarray]:
    return first_frames(MEDIA / name, count, start)


@pytest.fixture(scope="module")
def astronaut():
    from facecomp.models import registry
    from facecomp.swap.sources import photo_face, read_photo

    rgb = read_photo(registry.ensure("astronaut"))
    return rgb, photo_face(rgb)


@pytest.fixture(scope="module")
def astro_source(astronaut):
    from facecomp.swap.morph import MorphSource

    rgb, face = astronaut
    return MorphSource.from_image(rgb, face.landmarks, "astronaut")


def _turn(rgb: np.ndarray, face, squeeze: float = 0.55) -> np.ndarray:
    """A crude three-quarter view: the image half on the subject's left is squeezed sideways around the
    nose (what a yaw does to the far cheek), so the far side of the face shows few pixels."""
    h, w = rgb.shape[:2]
    nx = float(face.landmarks[1][0])
    xs = np.arange(w, dtype=np.float32)
    src_x = np.where(xs > nx, nx + (xs - nx) / squeeze, xs)
    map_x = np.tile(src_x, (h, 1))
    map_y = np.tile(np.arange(h, dtype=np.float32)[:, None], (1, w))
    return cv2.remap(rgb, map_x, map_y, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)


# --- texture -------------------------------------------------------------------------------------------

def test_topology_mirror_pairs_agree_with_pairs_found_by_reflecting_real_faces(astro_source):
    from facecomp.swap import texture

    m = texture.topology_mirror()
    assert np.array_equal(m[m], np.arange(468))
    assert m[33] == 263 and m[133] == 362 and m[61] == 291 and m[234] == 454 and m[159] == 386
    assert all(m[i] == i for i in texture.MIDLINE)
    p3 = np.column_stack([astro_source.landmarks[0], astro_source.depth]).astype(np.float64)
    found = texture.mirror_map(p3, rounds=0)  # reflect the (smiling) astronaut's 3-D shape, pair points
    assert np.array_equal(found[found], np.arange(468))
    assert np.mean(found == m) > 0.8


def test_turned_source_is_filled_from_its_visible_side(astronaut):
    """A turned head's far cheek is seen at a grazing angle; the texture's far side must then come from
    the near side (flipped), so both cheeks of the texture look alike instead of one being stretched."""
    from facecomp.swap import texture
    from facecomp.swap.morph import MorphSource, MorphSwapper
    from facecomp.swap.sources import photo_face

    rgb, face = astronaut
    turned = _turn(rgb, face)
    tface = photo_face(turned)
    src = MorphSource.from_image(turned, tface.landmarks, "turned")
    sw = MorphSwapper([src])
    assert sw.pose == "texture"
    rep = sw.texture.report["photos"][0]
    assert rep["visible_share"] < 0.9  # some of the face is seen badly ...
    tex, pts = sw.texture.levels[0], sw.texture.landmarks[0]
    assert (tex[..., 3] > 0.5).mean() > 0.4  # ... yet the texture covers the face
    # the cheeks (205 subject's right, 425 left) of the lifted texture: similar colours both sides
    r = 4
    a = tex[int(pts[205][1]) - r:int(pts[205][1]) + r, int(pts[205][0]) - r:int(pts[205][0]) + r, :3].mean((0, 1))
    b = tex[int(pts[425][1]) - r:int(pts[425][1]) + r, int(pts[425][0]) - r:int(pts[425][0]) + r, :3].mean((0, 1))
    assert np.abs(a - b).max() < 0.08
    # a plain morph of the same photo: its far-side triangles cover more destination per source pixel
    lay = pts.astype(np.float64)
    vis = texture.visibility(np.column_stack([src.landmarks[0], src.depth]).astype(np.float64),
                             (lay - lay.mean(0)), sw.texture.triangles)
    assert (vis < 0.45).mean() > 0.1


def test_back_facing_target_triangles_are_not_drawn(astro_source):
    from facecomp.swap import texture
    from facecomp.swap.morph import MorphSwapper

    sw = MorphSwapper([astro_source])
    lay = sw.texture.landmarks[0]
    assert texture.front_facing(lay, lay, sw.texture.triangles).all()
    mirrored = lay.copy()
    mirrored[:, 0] = -mirrored[:, 0]  # the back of a head: every triangle's winding flips
    assert not texture.front_facing(mirrored, lay, sw.texture.triangles).any()


def test_texture_keeps_the_source_mouth_and_eye_interiors_out(astro_source):
    """The astronaut smiles with her teeth showing: the texture has a hole there, so no squeezed teeth."""
    from facecomp.swap import masks
    from facecomp.swap.morph import MorphSwapper

    sw = MorphSwapper([astro_source])
    tex, pts = sw.texture.levels[0], sw.texture.landmarks[0]
    mouth = np.zeros(tex.shape[:2], np.uint8)
    cv2.fillPoly(mouth, [np.round(pts[list(masks.LIPS_INNER)]).astype(np.int32)], 1)
    assert mouth.sum() > 20
    assert tex[..., 3][mouth > 0].max() < 0.05
    eye = np.zeros(tex.shape[:2], np.uint8)
    cv2.fillPoly(eye, [np.round(pts[list(masks.EYE_RIGHT)]).astype(np.int32)], 1)
    assert tex[..., 3][eye > 0].max() < 0.05


@needs_media
def test_glasses_are_detected_on_glasses_and_not_on_bare_faces():
    from facecomp.swap import texture
    from facecomp.swap.morph import MorphSource, MorphSwapper
    from facecomp.swap.sources import photo_face, read_photo

    scores = {}
    for name in ("grace_hopper.jpg", "face_recognition_obama.jpg", "skimage_astronaut_eileen_collins.png"):
        rgb = read_photo(MEDIA / name)
        src = MorphSource.from_image(rgb, photo_face(rgb).landmarks, name)
        scores[name] = MorphSwapper([src]).texture.report["glasses_score"][0]
    assert scores["grace_hopper.jpg"] > texture.GLASSES_THRESHOLD
    assert scores["face_recognition_obama.jpg"] < texture.GLASSES_THRESHOLD
    assert scores["skimage_astronaut_eileen_collins.png"] < texture.GLASSES_THRESHOLD



def _draw_glasses(rgb: np.ndarray, lm: np.ndarray) -> np.ndarray:
    """A dark pair of frames drawn around the eyes: two elliptic rims and a bridge."""
    from facecomp.swap import masks

    w = masks.face_width(lm)
    out = rgb.copy()
    t = max(2, int(round(0.025 * w)))
    for loop in (masks.EYE_RIGHT, masks.EYE_LEFT):
        c = lm[list(loop)].mean(axis=0)
        cv2.ellipse(out, (int(c[0]), int(c[1])), (int(0.16 * w), int(0.11 * w)), 0, 0, 360, (40, 25, 20), t,
                    cv2.LINE_AA)
    a, b = lm[168] + [-0.07 * w, 0], lm[168] + [0.07 * w, 0]
    cv2.line(out, (int(a[0]), int(a[1])), (int(b[0]), int(b[1])), (40, 25, 20), t, cv2.LINE_AA)
    return out


def test_drawn_glasses_are_painted_out_of_the_texture_and_the_eyes_kept(astronaut):
    """Frames drawn on the bare astronaut: the texture must come back to the bare one where they were
    drawn, while the band around the eyes stays covered (eyes and lids are the identity; the old band
    left them out)."""
    from facecomp.swap import texture
    from facecomp.swap.morph import MorphSource, MorphSwapper

    rgb, face = astronaut
    lm = face.landmarks[:, :2].astype(np.float32)
    bare = MorphSwapper([MorphSource.from_image(rgb, face.landmarks, "bare")]).texture
    worn = _draw_glasses(rgb, lm)
    src = MorphSource.from_image(worn, face.landmarks, "glasses")
    painted = MorphSwapper([src]).texture
    kept = MorphSwapper([src], texture_settings=texture.TextureSettings(glasses=False)).texture
    assert painted.report["glasses_score"][0] > texture.GLASSES_THRESHOLD
    assert bare.report["glasses_score"][0] < texture.GLASSES_THRESHOLD and bare.report["glasses_removed_share"] == [0.0]
    assert 0.05 < painted.report["glasses_removed_share"][0] < 0.45
    a, p, k = bare.levels[0], painted.levels[0], kept.levels[0]
    assert a.shape == p.shape == k.shape
    drawn = (np.abs(k[..., :3] - a[..., :3]).max(axis=2) > 0.15) & (a[..., 3] > 0.9)
    assert drawn.sum() > 500
    err_kept = float(np.abs(k[..., :3] - a[..., :3])[drawn].mean())
    err_painted = float(np.abs(p[..., :3] - a[..., :3])[drawn].mean())
    assert err_painted < 0.35 * err_kept, (err_painted, err_kept)
    band = texture.glasses_band(painted.landmarks[0], p.shape[:2]) > 0.5
    # the coverage drawn (the last channel: before the outline clean, which takes the hair at her temples)
    assert p[..., -1][band].mean() > 0.7  # only the eye interiors are holes, as on a bare face
    assert abs(p[..., -1][band].mean() - a[..., -1][band].mean()) < 0.05


@needs_media
def test_grace_hoppers_frames_are_painted_out_and_her_eyes_kept():
    """The shared glasses photo: large frames whose lower rims reach the cheeks. Read back from the
    texture: no dark frame left around the eyes, the band there covered."""
    from facecomp.swap import masks, texture
    from facecomp.swap.morph import MorphSource, MorphSwapper
    from facecomp.swap.sources import photo_face, read_photo

    rgb = read_photo(MEDIA / "grace_hopper.jpg")
    src = MorphSource.from_image(rgb, photo_face(rgb).landmarks, "grace_hopper.jpg")
    figures = {}
    for on in (True, False):
        tex = MorphSwapper([src], texture_settings=texture.TextureSettings(glasses=on)).texture
        t, lm = tex.levels[0], tex.landmarks[0]
        around = texture.glasses_band(lm, t.shape[:2]) > 0.5
        holes = np.zeros(t.shape[:2], np.uint8)
        for loop in texture.INTERIORS:
            cv2.fillPoly(holes, [np.round(lm[list(loop)]).astype(np.int32)], 1)
        sel = around & (holes == 0)
        d, _ = texture._distance_from_surroundings(t[..., :3], masks.face_width(lm))
        grey = cv2.cvtColor(np.ascontiguousarray(t[..., :3]), cv2.COLOR_RGB2GRAY)
        figures[on] = (float(t[..., -1][sel].mean()), float(np.percentile(d[sel], 90)), float((grey[sel] < 0.25).mean()),
                       tex.report["glasses_removed_share"][0])
    (cov, d90, dark, share), (cov_k, d90_k, dark_k, share_k) = figures[True], figures[False]
    assert share > 0.1 and share_k == 0.0
    assert cov > 0.85 and abs(cov - cov_k) < 0.02      # the eyes' band is kept, not left out
    assert dark_k > 0.05 and dark < 0.01               # the dark browline and rims are gone ...
    assert d90 < 0.4 * d90_k                           # ... and nothing stands out from the skin there


def test_texture_edge_fade_ramps_in_from_the_outline_and_only_stretched_faces_get_it(astro_source):
    from facecomp.swap import mesh, texture
    from facecomp.swap.morph import MorphSwapper

    with pytest.raises(Exception, match="edge_fade"):
        texture.TextureSettings(edge_fade=0.5)
    tex = MorphSwapper([astro_source]).texture
    r = tex.edge_ramps[0]
    ids = mesh.rasterize(tex.landmarks[0], tex.triangles, r.shape) > 0
    dist = cv2.distanceTransform(np.pad(ids.astype(np.uint8), 1), cv2.DIST_L2, 3)[1:-1, 1:-1]
    assert r[(dist > 0) & (dist <= 1.0)].max() < 0.4
    ring = (dist > 0.015 * tex.width) & (dist < 0.025 * tex.width)
    assert 0.2 < float(np.median(r[ring])) < 0.8
    assert float(r[dist > 0.06 * tex.width].min()) > 0.99
    lay = tex.landmarks[0]
    everything = np.ones(len(tex.triangles), bool)
    assert texture.edge_fade_amount(lay * 0.7 + 5.0, tex, everything) == 0.0  # the layout itself, scaled
    # the outline's own points pushed out by a third: its triangles are stretched several times, the
    # inside is not (as on the head-pose clip's woman, rolled 56 degrees)
    pulled = lay.copy()
    rim = cv2.convexHull(lay, returnPoints=False).ravel()
    c = lay.mean(axis=0)
    pulled[rim] = c + (lay[rim] - c) * 1.33
    assert texture.edge_fade_amount(pulled, tex, everything) > 0.5
    half = lay.copy()
    half[rim] = c + (lay[rim] - c) * 1.04
    assert texture.edge_fade_amount(half, tex, everything) == 0.0


@needs_media
def test_a_rolled_head_shows_no_dark_teeth_from_the_photos_outline():
    """The head-pose clip's faces are rolled 40-57 degrees. The texture's outer band carries the source
    photo's face outline (shadow, background bleed); where it lands on the target, the output must not be
    darker than the target (it showed as a row of dark teeth on the cheek before the edge fade)."""
    from facecomp.faces.analyzer import analyze_image
    from facecomp.swap import mesh, texture
    from facecomp.swap.morph import MorphSource, MorphSwapper
    from facecomp.swap.processor import Blender, BlendSettings
    from facecomp.swap.sources import photo_face

    photo = _frames("grid_lwbsza.mpg", 1)[0]
    src = MorphSource.from_image(photo, photo_face(photo).landmarks, "lwbsza")
    dark = {}
    on = texture.TextureSettings()
    # the fade alone, then neither it nor the outline clean (which takes the darkest of the band on its own)
    for fade, clean in ((on.edge_fade, 0.0), (0.0, 0.0), (on.edge_fade, on.outline_clean)):
        sw = MorphSwapper([src], texture_settings=texture.TextureSettings(edge_fade=fade, outline_clean=clean))
        tex = sw.texture
        ids = mesh.rasterize(tex.landmarks[0], tex.triangles, tex.levels[0].shape[:2]) > 0
        dist = cv2.distanceTransform(np.pad(ids.astype(np.uint8), 1), cv2.DIST_L2, 3)[1:-1, 1:-1]
        band = np.dstack([((dist > 0) & (dist < 0.03 * tex.width)).astype(np.float32)] * 3)
        shares = []
        for k, frame in enumerate(_frames("intel_head-pose-face-detection-female-and-male.mp4", 2, 10)):
            out = frame.copy()
            for face in analyze_image(frame):
                p = sw.swap_one(frame, face)
                tris = tex.triangles[texture.front_facing(p.landmarks, tex.landmarks[0], tex.triangles)]
                where, cov = mesh.warp(band, tex.landmarks[0], p.landmarks, tris, p.target.shape[:2])
                Blender(BlendSettings()).paste(out, p, k)
                x0, y0 = int(p.to_frame[0, 2]), int(p.to_frame[1, 2])
                h, w = p.target.shape[:2]
                sel = (where[..., 0] > 0.5) & cov
                grey = [cv2.cvtColor(np.ascontiguousarray(img[y0:y0 + h, x0:x0 + w]), cv2.COLOR_RGB2GRAY) / 255.0
                        for img in (out, frame)]
                assert sel.sum() > 200
                shares.append(float(((grey[0] < grey[1] - 0.1) & sel).mean() / sel.mean()))
        dark[fade, clean] = shares
    assert max(dark[on.edge_fade, 0.0]) < 0.02, dark
    assert max(dark[on.edge_fade, on.outline_clean]) < 0.02, dark
    assert max(dark[0.0, 0.0]) > 0.06, dark  # the measure sees the teeth without either

def test_hair_over_the_photos_face_sides_is_not_drawn_and_the_colour_stays_the_same():
    """lwbsza's curls fall over the sides of her face, so the texture's outline band carries them: dark
    specks by the ASL signer's ear. Those texels are not drawn (the target's own edge shows), while the
    colour statistics still read them: left out, colour transfer's contrast rose and the eyes darkened."""
    from facecomp.faces.analyzer import analyze_image
    from facecomp.swap import mesh, texture
    from facecomp.swap.morph import MorphSource, MorphSwapper
    from facecomp.swap.processor import Blender, BlendSettings
    from facecomp.swap.sources import photo_face

    with pytest.raises(Exception, match="outline_clean"):
        texture.TextureSettings(outline_clean=0.3)
    photo = _frames("grid_lwbsza.mpg", 1)[0]
    src = MorphSource.from_image(photo, photo_face(photo).landmarks, "lwbsza")
    frames = _frames("intel_asl_book.mkv", 2, 60)
    dark, looks = {}, {}
    for clean in (texture.TextureSettings().outline_clean, 0.0):
        sw = MorphSwapper([src], texture_settings=texture.TextureSettings(outline_clean=clean))
        tex = sw.texture
        assert (tex.report["outline_cleaned_share"] > 0.01) == (clean > 0.0), tex.report
        ids = mesh.rasterize(tex.landmarks[0], tex.triangles, tex.levels[0].shape[:2]) > 0
        dist = cv2.distanceTransform(np.pad(ids.astype(np.uint8), 1), cv2.DIST_L2, 3)[1:-1, 1:-1]
        band = np.dstack([((dist > 0) & (dist < 0.06 * tex.width)).astype(np.float32)] * 3)
        for k, frame in enumerate(frames):
            (face,) = analyze_image(frame)
            p = sw.swap_one(frame, face)
            tris = tex.triangles[texture.front_facing(p.landmarks, tex.landmarks[0], tex.triangles)]
            where, cov = mesh.warp(band, tex.landmarks[0], p.landmarks, tris, p.target.shape[:2])
            sel = (where[..., 0] > 0.5) & cov
            out = frame.copy()
            Blender(BlendSettings()).paste(out, p, k)
            x0, y0 = int(p.to_frame[0, 2]), int(p.to_frame[1, 2])
            h, w = p.target.shape[:2]
            grey = [cv2.cvtColor(np.ascontiguousarray(img[y0:y0 + h, x0:x0 + w]), cv2.COLOR_RGB2GRAY) / 255.0
                    for img in (out, frame)]
            assert sel.sum() > 400
            dark.setdefault(clean, []).append(float(((grey[0] < grey[1] - 0.1) & sel).sum() / sel.sum()))
            shown = p.mask >= (p.mask if p.stats_mask is None else p.stats_mask)
            looks.setdefault(clean, []).append(Blender(BlendSettings(blend="feather")).alpha_and_face(p, k) + (shown,))
    on = texture.TextureSettings().outline_clean
    # 0.067-0.075 of the band darker than the target by 0.1 against 0.119-0.127 drawn whole
    assert min(dark[0.0]) > 0.1 and all(a < 0.7 * b for a, b in zip(dark[on], dark[0.0])), dark
    for (face_on, alpha_on, shown), (face_off, alpha_off, _) in zip(looks[on], looks[0.0]):
        assert 0.005 < np.mean(~shown) < 0.1
        # the same colour transfer and light wherever the texels are shown (to float rounding: the texture
        # is warped with its fifth channel)
        np.testing.assert_allclose(face_on[shown], face_off[shown], rtol=0, atol=1e-6)
        assert np.all(alpha_on <= alpha_off + 1e-6) and np.mean(alpha_on < alpha_off - 0.05) > 0.005


# --- lighting and blending -----------------------------------------------------------------------------

def test_relight_gives_the_face_the_targets_low_frequency_light():
    from facecomp.swap import lighting

    rng = np.random.default_rng(0)
    h = w = 96
    xs = np.linspace(0, 1, w, dtype=np.float32)[None, :].repeat(h, 0)
    detail = rng.normal(0, 0.03, (h, w)).astype(np.float32)
    face = np.dstack([(0.3 + 0.5 * xs + detail)] * 3) * np.float32([1.0, 0.8, 0.7])  # lit from the right
    target = np.dstack([(0.8 - 0.5 * xs)] * 3) * np.float32([1.0, 0.75, 0.65])       # lit from the left
    mask = np.zeros((h, w), bool)
    mask[8:-8, 8:-8] = True
    out = lighting.relight(face.astype(np.float32), target.astype(np.float32), mask, 6.0)
    lo = lighting.masked_lowpass(lighting.luminance(out), mask, 6.0)[mask]
    lt = lighting.masked_lowpass(lighting.luminance(target), mask, 6.0)[mask]
    assert np.corrcoef(lo, lt)[0, 1] > 0.95
    # fine detail survives: the high-pass of the output still follows the face's own detail
    hp = lighting.luminance(out) - lighting.masked_lowpass(lighting.luminance(out), mask, 6.0)
    assert np.corrcoef(hp[mask], detail[mask])[0, 1] > 0.5
    flat = lighting.remove_shading(face.astype(np.float32), mask, 6.0)
    lum = lighting.masked_lowpass(lighting.luminance(flat), mask, 6.0)[mask]
    assert lum.std() < 0.2 * lighting.masked_lowpass(lighting.luminance(face), mask, 6.0)[mask].std()


@needs_media
def test_detail_match_gives_the_face_the_targets_fine_contrast_not_its_shading():
    """rct scales the texture's lightness by the whole faces' spreads, and a shaded target spreads over two
    to three times what a texture with its shading taken out does: on the ASL face the Biden photo's
    creases, nostrils and eye whites came out at 1.26-1.53 times the target's own fine contrast
    (blotches). ``detail_match`` 1 brings it to the target's (1.02-1.06); the default leaves rct as it was
    but for the caps round the eyes and the lower nose (1.19-1.38 with both)."""
    from facecomp.effect import Engine
    from facecomp.faces.analyzer import analyze_image
    from facecomp.settings import EffectSettings
    from facecomp.swap import lighting, masks

    clip = MEDIA / "intel_asl_book.mkv"
    if not clip.is_file():
        pytest.skip("sample media (the ASL clip) not found: set FACECOMP_SAMPLE_MEDIA")
    frames = _frames("intel_asl_book.mkv", 71)

    def fine_contrast(orig, out):  # the output's luminance less its low-pass, over the original's
        lm = np.asarray(analyze_image(orig)[0].landmarks, np.float32)
        hull = cv2.erode((masks.hull_mask(lm, orig.shape[:2], 0.6) > 0.5).astype(np.uint8), np.ones((5, 5), np.uint8)) > 0
        yo, yx = (lighting.luminance(a.astype(np.float32) / 255) for a in (orig, out))
        lo, lx = lighting.masked_lowpass_many((yo, yx), hull, 0.06 * masks.face_width(lm))
        return float(np.std((yx - lx)[hull]) / np.std((yo - lo)[hull]))

    got = {}
    for match in (0.0, 1.0):
        engine = Engine.from_settings(EffectSettings(source=(str(MEDIA / "face_recognition_biden.jpg"),),
                                                     detail_match=match), fps=25.0)
        try:
            assert engine.processors[0].blender.settings.detail_match == match
            with engine.open_clip(str(clip), "detail") as session:
                got[match] = [fine_contrast(frames[j], session.render(frames[j], j, j / 25).pixels)
                              for j in (10, 40, 70)]
        finally:
            engine.close()
    assert max(got[0.0]) > 1.3 and min(got[0.0]) > 1.12, got
    assert all(0.9 < v < 1.12 for v in got[1.0]), got
    assert all(b < a - 0.1 for a, b in zip(got[0.0], got[1.0])), got


@needs_media
def test_the_photos_lids_do_not_come_out_as_pale_lines_round_the_targets_eyes():
    """Round the target's own eyes the new face's lids and sockets came out at 2.2-2.8 times the target's
    fine contrast on the ASL face (the Biden photo): pale lid lines and dark rings, the eyes' halo in the
    photo's shading (the brows and lash lines pulled the shading's low-pass down) scaled up by rct. The
    shading read from the skin alone and the eye band's cap take it down on every frame; the band alone
    changes nothing far from the eyes."""
    from facecomp.faces.analyzer import analyze_image
    from facecomp.swap import lighting, masks, texture
    from facecomp.swap.morph import MorphSource, MorphSwapper
    from facecomp.swap.processor import Blender, BlendSettings
    from facecomp.swap.sources import photo_face, read_photo

    clip = MEDIA / "intel_asl_book.mkv"
    if not clip.is_file():
        pytest.skip("sample media (the ASL clip) not found: set FACECOMP_SAMPLE_MEDIA")
    photo = read_photo(MEDIA / "face_recognition_biden.jpg")
    source = MorphSource.from_image(photo, photo_face(photo).landmarks, "biden")
    swappers = {f: MorphSwapper([source], texture_settings=texture.TextureSettings(shading_features=f))
                for f in (0.0, texture.TextureSettings().shading_features)}
    eyes = (masks.EYE_RIGHT, masks.EYE_LEFT)
    got: dict = {}
    for j in (10, 40, 70):
        frame = _frames("intel_asl_book.mkv", 1, j)[0]
        face = analyze_image(frame)[0]
        lm = np.asarray(face.landmarks, np.float32)[:468] - 0.5
        width = masks.face_width(lm)
        band = masks.loop_bands(lm, eyes, frame.shape[:2], width, ((0.06, 0.0),))[0] > 0.5
        band &= ~(masks.loop_bands(lm, eyes, frame.shape[:2], width, ((0.01, 0.0),))[0] > 0.5)
        far = (masks.hull_mask(lm, frame.shape[:2], 0.6) > 0.5)
        far &= ~(masks.loop_bands(lm, eyes, frame.shape[:2], width, ((0.25, 0.0),))[0] > 0.5)

        def fine(rgb):
            y = lighting.luminance(rgb.astype(np.float32) / 255)
            return (y - cv2.GaussianBlur(y, (0, 0), 0.03 * width))[band]

        outs = {}
        for f, swapper in swappers.items():
            for ring in (0.0, BlendSettings().eye_ring):
                blender = Blender(BlendSettings(blend="multiband", lighting=1.0, eye_ring=ring, color_smoothing=0.0,
                                                mask=masks.MaskSettings(open_ratio=0.0)))
                out = frame.copy()
                for p in swapper.swap(frame, [face]):
                    assert blender.paste(out, p, 0)
                outs[f, ring] = out
                got.setdefault((f, ring), []).append(float(np.std(fine(out)) / np.std(fine(frame))))
        ring_only = np.abs(outs[0.0, BlendSettings().eye_ring].astype(np.int16) - outs[0.0, 0.0])
        assert ring_only[far].max() <= 1, j  # the band is the eyes' business: rounding only, far from them
    off, on = got[0.0, 0.0], got[max(got)]
    assert min(off) > 2.1, got                                   # what it was
    assert all(b < 0.93 * a for a, b in zip(off, on)), got       # every frame lower
    assert np.mean(on) < 0.88 * np.mean(off), got
    for part in ((0.0, BlendSettings().eye_ring), (texture.TextureSettings().shading_features, 0.0)):
        assert np.mean(got[part]) < 0.97 * np.mean(off), (part, got)  # each step does its share


@needs_media
def test_the_photos_nostrils_do_not_come_out_as_black_holes_on_a_softly_lit_target():
    """The head-pose clip (both faces) with the Grace Hopper photo and the ASL clip with the Biden photo:
    rct scaled the photo's nostrils and alar creases by the whole faces' spreads, so the lower nose's fine
    contrast came out 1.5-2.6 times the target's (a black nostril). The nose band's cap brings it down
    wherever the cap acts, raises it nowhere, and changes nothing away from the nose."""
    from facecomp.faces.analyzer import analyze_image
    from facecomp.swap import lighting, masks
    from facecomp.swap.morph import MorphSource, MorphSwapper
    from facecomp.swap.processor import Blender, BlendSettings
    from facecomp.swap.sources import photo_face, read_photo

    cases = (("intel_head-pose-face-detection-female-and-male.mp4", "grace_hopper.jpg", (0, 30)),
             ("intel_asl_book.mkv", "face_recognition_biden.jpg", (10, 70)))
    if not all((MEDIA / clip).is_file() for clip, _, _ in cases):
        pytest.skip("sample media (the head-pose and ASL clips) not found: set FACECOMP_SAMPLE_MEDIA")
    nose = BlendSettings().nose_ring
    assert nose > 0.0  # on by default
    got = []
    for clip, name, indices in cases:
        photo = read_photo(MEDIA / name)
        swapper = MorphSwapper([MorphSource.from_image(photo, photo_face(photo).landmarks, name)])
        for j in indices:
            frame = _frames(clip, 1, j)[0]
            for face in analyze_image(frame):
                lm = np.asarray(face.landmarks, np.float32)[:468] - 0.5
                width = masks.face_width(lm)
                band = masks.loop_bands(lm, (masks.NOSE_LOWER,), frame.shape[:2], width, ((0.02, 0.0),))[0] > 0.5
                far = masks.hull_mask(lm, frame.shape[:2], 0.6) > 0.5
                far &= ~(masks.loop_bands(lm, (masks.NOSE_LOWER,), frame.shape[:2], width, ((0.2, 0.0),))[0] > 0.5)

                def fine(rgb):
                    y = lighting.luminance(rgb.astype(np.float32) / 255)
                    return float(np.std((y - cv2.GaussianBlur(y, (0, 0), 0.03 * width))[band]))

                outs = {}
                for ring in (0.0, nose):
                    blender = Blender(BlendSettings(blend="multiband", lighting=1.0, nose_ring=ring, color_smoothing=0.0,
                                                    mask=masks.MaskSettings(open_ratio=0.0)))
                    out = frame.copy()
                    for p in swapper.swap(frame, [face]):
                        assert blender.paste(out, p, 0)
                    outs[ring] = out
                assert np.abs(outs[nose].astype(np.int16) - outs[0.0])[far].max() <= 1, (clip, j)  # rounding only
                got.append(tuple(fine(outs[r]) / fine(frame) for r in (0.0, nose)))
    assert all(on <= off + 0.01 for off, on in got), got                 # raised nowhere
    strong = [(off, on) for off, on in got if off > 1.5]                 # the black nostrils
    assert len(strong) >= 4, got
    assert all(on < 0.92 * off for off, on in strong), got               # each of them lower
    assert np.mean([on for _, on in strong]) < 0.87 * np.mean([off for off, _ in strong]), got


@needs_media
def test_glasses_paint_0_shows_the_targets_own_skin_where_the_photos_frames_were():
    """The Grace Hopper photo's frames are painted out of the texture with smooth skin colour: on a GRID
    face that paint is a pale ghost of the frames. At ``glasses_paint`` 0 the target's own skin shows there
    (its fine structure, not the paint's), the rest of the face is the same swap; a photo without glasses
    renders exactly as before."""
    from facecomp.faces.analyzer import analyze_image
    from facecomp.models import registry
    from facecomp.swap import lighting, masks, texture
    from facecomp.swap.morph import MorphSource, MorphSwapper
    from facecomp.swap.processor import Blender, BlendSettings
    from facecomp.swap.sources import photo_face, read_photo

    def swappers(photo):
        src = MorphSource.from_image(photo, photo_face(photo).landmarks, "p")
        return {k: MorphSwapper([src], texture_settings=texture.TextureSettings(glasses_paint=k)) for k in (1.0, 0.0)}

    def render(sw, frame, face):
        blender = Blender(BlendSettings(blend="multiband", lighting=1.0, color_smoothing=0.0))
        p = sw.swap_one(frame, face)
        f, a = blender.alpha_and_face(p, 0)
        return p, p.target + (f - p.target) * a[..., None]

    glasses = swappers(read_photo(MEDIA / "grace_hopper.jpg"))
    assert glasses[0.0].texture.report["glasses_removed_share"][0] > 0.1
    assert [glasses[k].texture.report["glasses_paint"] for k in (1.0, 0.0)] == [1.0, 0.0]
    bare = swappers(read_photo(registry.ensure("astronaut")))
    assert bare[0.0].texture.report["glasses_removed_share"] == [0.0]
    for frame in _frames("grid_bbaf2n.mpg", 2, 10):
        face = analyze_image(frame)[0]
        width = masks.face_width(np.asarray(face.landmarks, np.float32)[:468])
        probe, hole = render(glasses[0.0], frame, face)
        _, painted = render(glasses[1.0], frame, face)
        where = (probe.stats_mask - probe.mask) > 0.5                 # the frames' paint, not drawn at 0
        rest = (probe.mask > 0.99) & (cv2.dilate(where.astype(np.uint8), np.ones((15, 15), np.uint8)) == 0)
        assert where.mean() > 0.08 and rest.mean() > 0.1
        t, o0, o1 = (lighting.luminance(a) for a in (probe.target, hole, painted))

        def fine_corr(a):  # fine structure over the frames' place, against the target's
            hp = [x - cv2.GaussianBlur(x, (0, 0), 0.02 * width) for x in (a, t)]
            return float(np.corrcoef(hp[0][where], hp[1][where])[0, 1])

        assert fine_corr(o0) > 0.95 and fine_corr(o1) < 0.75, (fine_corr(o0), fine_corr(o1))
        assert np.abs(o0 - t)[where].mean() < 0.5 * np.abs(o1 - t)[where].mean()
        assert np.abs(hole - painted)[rest].max() < 0.03               # the swap itself is the same
        outs = [render(bare[k], frame, face)[1] for k in (1.0, 0.0)]
        assert np.array_equal(outs[0], outs[1])                         # no glasses: nothing changes


@needs_media
def test_the_skin_seen_through_a_photos_lenses_takes_the_colour_round_the_rims():
    """Grace Hopper's lenses tint and magnify the skin round her eyes: an orange ring on every swapped
    face. The lens tone brings its low-frequency colour to the skin's round the rims (Lab distance of the
    means 6.8 -> 3.3) and keeps its fine detail (the lids, the creases); far from the lenses nothing moves."""
    from facecomp.swap import masks, texture
    from facecomp.swap.morph import MorphSource, MorphSwapper
    from facecomp.swap.sources import photo_face, read_photo

    photo = read_photo(MEDIA / "grace_hopper.jpg")
    src = MorphSource.from_image(photo, photo_face(photo).landmarks, "grace")
    assert texture.TextureSettings().lens_tone == 1.0  # on by default
    tex = {k: MorphSwapper([src], texture_settings=texture.TextureSettings(**kw)).texture
           for k, kw in (("bare", {"glasses": False}), ("off", {"lens_tone": 0.0}), ("on", {}))}
    assert tex["on"].report["lens_tone"] == 1.0 and tex["off"].report["lens_tone"] == 0.0
    pts, rgb = tex["bare"].landmarks[0], tex["bare"].levels[0][..., :3]
    frames, lens = texture.glasses_parts(rgb, pts, (rgb.shape[1] - 1) / 2)  # the glasses, where they are
    side = masks.face_width(pts)
    eyes = np.zeros(frames.shape, np.uint8)
    for loop in (masks.EYE_RIGHT, masks.EYE_LEFT):
        cv2.fillPoly(eyes, [np.round(pts[list(loop)]).astype(np.int32)], 1)
    eyes = cv2.dilate(eyes, np.ones((3, 3), np.uint8), iterations=max(1, int(0.03 * side))) > 0
    region = lens & ~frames & ~eyes
    k = max(3, int(0.06 * side)) | 1
    glasses = (lens | frames).astype(np.uint8)
    around = (cv2.dilate(glasses, np.ones((k, k), np.uint8)) > 0) & (glasses == 0) & (tex["off"].levels[0][..., 3] > 0.99)
    rows = np.nonzero(lens.any(axis=1))[0]
    far = np.zeros(frames.shape, bool)  # above and below the lenses' rows (their sides reach the face's edges)
    far[:max(rows.min() - k, 0)] = far[rows.max() + k:] = True
    assert region.mean() > 0.015 and around.mean() > 0.05
    gap = {}
    for key in ("off", "on"):
        lab = cv2.cvtColor(tex[key].levels[0][..., :3], cv2.COLOR_RGB2LAB)
        gap[key] = float(np.linalg.norm(lab[region].mean(axis=0) - lab[around].mean(axis=0)))
    assert gap["off"] > 5.0 and gap["on"] < 0.6 * gap["off"], gap

    def fine(x):
        y = cv2.cvtColor(x[..., :3], cv2.COLOR_RGB2GRAY)
        return (y - cv2.GaussianBlur(y, (0, 0), 0.01 * side))[region]

    assert np.corrcoef(fine(tex["off"].levels[0]), fine(tex["on"].levels[0]))[0, 1] > 0.9
    assert np.abs(tex["on"].levels[0][..., :3] - tex["off"].levels[0][..., :3])[far].max() < 0.02


def test_multiband_blend_leaves_no_grain_on_flat_background_and_touches_nothing_far():
    from facecomp.swap import pyramid
    from facecomp.swap.blend import ramp_alpha

    rng = np.random.default_rng(1)
    h = w = 128
    target = np.full((h, w, 3), 0.4, np.float32)  # flat background
    face = np.clip(0.6 + rng.normal(0, 0.08, (h, w, 3)), 0, 1).astype(np.float32)  # grainy face
    hard = np.zeros((h, w), np.uint8)
    cv2.circle(hard, (64, 64), 40, 1, -1)
    alpha = ramp_alpha(hard, 1.0, 8.0)
    feather = target + (face - target) * alpha[..., None]
    multi, eff = pyramid.blend(face, target, alpha)
    # the outer half of the soft edge, where the flat background should dominate
    ring = (alpha > 0.02) & (alpha < 0.4)

    def grain(img):  # high-frequency energy (what grain is) there
        return float(np.abs(img - cv2.GaussianBlur(img, (0, 0), 1.5))[ring].mean())

    assert grain(multi) < 0.5 * grain(feather)
    far = ~(cv2.dilate(hard, np.ones((61, 61), np.uint8)) > 0)
    assert (eff[far] == 0).all()  # the paste-back writes only where eff > 0: far pixels stay bit-identical
    assert np.abs(multi - target)[eff == 0].max() < 1.0 / 1024.0  # and nothing it skips had moved


# --- occlusion -----------------------------------------------------------------------------------------

@needs_media
def test_an_object_in_front_of_the_face_stays_in_front():
    """The occluder test of our own design: a microphone-like bar (blue, black, white) rises over the chin
    and mouth of a GRID speaker. Measured: share of the bar's face pixels the swap leaves untouched (and
    none of the bare face flagged on the clean frame)."""
    from facecomp.faces.analyzer import analyze_image
    from facecomp.swap.morph import MorphSwapper
    from facecomp.swap.occlusion import OcclusionSettings, object_mask
    from facecomp.swap.processor import BlendSettings, Blender
    from facecomp.swap import geometry

    frame = _frames("grid_bbaf2n.mpg", 1, 20)[0]
    face = analyze_image(frame)[0]
    lm = geometry.to_cv(face.landmarks)
    cx = int(lm[17][0])
    bar = np.zeros(frame.shape[:2], bool)
    bar[int(lm[13][1]):, cx - 12:cx + 12] = True
    clean_mask = object_mask(frame.astype(np.float32) / 255, lm, OcclusionSettings())
    assert clean_mask is None or clean_mask.mean() < 0.002
    from facecomp.swap.morph import MorphSource
    from facecomp.models import registry
    from facecomp.swap.sources import photo_face, read_photo

    rgb = read_photo(registry.ensure("astronaut"))
    sw = MorphSwapper([MorphSource.from_image(rgb, photo_face(rgb).landmarks, "a")])
    from facecomp.swap import masks

    hull = masks.hull_mask(lm, frame.shape[:2], 0.6) > 0.5
    over = bar & hull
    for colour in ((40, 60, 200), (30, 30, 30), (230, 230, 230)):
        occluded = frame.copy()
        occluded[bar] = colour
        kept = {}
        for objects in (True, False):
            out = occluded.copy()
            bl = Blender(BlendSettings(occlusion=OcclusionSettings(hands=False, glasses=False, objects=objects)))
            for p in sw.swap(occluded, [face]):
                bl.paste(out, p, 0)
            kept[objects] = float((np.abs(out[over].astype(int) - occluded[over]).max(axis=1) <= 8).mean())
        assert kept[True] > 0.95 and kept[False] < 0.6, (colour, kept)


@needs_media
def test_hands_over_the_face_are_kept():
    from facecomp.faces.analyzer import analyze_image
    from facecomp.faces.hands import HandFinder, hand_mask
    from facecomp.swap import geometry, masks
    from facecomp.swap.morph import MorphSwapper
    from facecomp.swap.processor import BlendSettings, Blender

    frame = _frames("intel_asl_book.mkv", 1, 24)[0]
    face = analyze_image(frame)[0]
    hands = HandFinder().near(frame, face.bbox)
    assert hands
    lm = geometry.to_cv(face.landmarks)
    # the hull reaching to the chin, where the fingertips are
    over = (hand_mask(hands, frame.shape[:2]) > 0.5) & (masks.hull_mask(lm, frame.shape[:2], 0.6) > 0.5)
    from facecomp.swap.morph import MorphSource
    from facecomp.models import registry
    from facecomp.swap.sources import photo_face, read_photo

    rgb = read_photo(registry.ensure("astronaut"))
    sw = MorphSwapper([MorphSource.from_image(rgb, photo_face(rgb).landmarks, "a")])
    out = frame.copy()
    bl = Blender(BlendSettings(lighting=1.0, blend="multiband"))
    for p in sw.swap(frame, [face]):
        bl.paste(out, p, 0)
    changed = np.abs(out.astype(int) - frame).max(axis=2) > 8
    assert changed[masks.hull_mask(lm, frame.shape[:2], 0.6) > 0.5].mean() > 0.3  # the face was replaced
    if over.sum() >= 10:
        assert (~changed[over]).mean() > 0.95


# --- mouth and eyes; score -----------------------------------------------------------------------------

def test_mouth_reading_halves_count_no_crops_own_error_as_agreement():
    """The score's mouth figure compares the output's mean over one half of the crops with the target's
    over the other half. A crop's own error (the same crop read on both clips, which a same-crop
    comparison would count as the mouths agreeing) must not raise it; a mouth that does follow the target
    reaches what the target reaches against itself."""
    from facecomp.swap import realism

    rng = np.random.default_rng(7)
    frames, crops = 400, 16
    mouth = np.abs(np.sin(np.linspace(0, 30, frames))) * 0.1          # the target's opening over time
    crop_error = rng.normal(0, 0.06, (frames, crops))                   # each crop's own answer, per frame
    target = mouth[:, None] + crop_error
    follows = mouth[:, None] + rng.normal(0, 0.06, (frames, crops))     # a render whose mouth follows
    still = 0.02 + crop_error                                            # a mouth that never moves, same crops
    assert realism.pearson(still.mean(1), target.mean(1)) > 0.3          # a same-crop figure: "agreement"
    assert abs(realism.cross_halves(still, target)) < 0.15               # ... which the halves do not see
    ceiling = realism.cross_halves(target, target)
    assert 0.55 < ceiling < 0.8
    assert realism.cross_halves(follows, target) == pytest.approx(ceiling, abs=0.08)
    assert realism.cross_halves(target, target) == realism.cross_halves(list(target), list(target))
    assert realism.cross_halves([None] * 5, [None] * 5) is None
    jit = realism.read_jitters()
    assert len(jit) == 16 and jit == realism.read_jitters()              # one fixed set for every clip
    assert all(abs(dx) <= 0.04 and abs(dy) <= 0.04 and 0.94 <= sc <= 1.06 and abs(t) <= 0.06
               for dx, dy, sc, t in jit)
    from facecomp.errors import SettingsError
    from facecomp.swap.score import ScoreSettings

    with pytest.raises(SettingsError, match="mouth reads"):
        ScoreSettings(mouth_reads=1)


@needs_media
def test_mouth_reads_of_a_real_frame_agree_with_the_tracked_reading():
    from facecomp.faces.analyzer import analyze_image
    from facecomp.faces.mediapipe import FaceMesh, roi_from_landmarks
    from facecomp.swap import geometry, realism

    mesh = FaceMesh(iris=False)
    for start in (0, 30):  # a closed and an open mouth of GRID bbaf2n
        t = _frames("grid_bbaf2n.mpg", 1, start)[0]
        face = analyze_image(t)[0]
        reads = realism.mouth_reads(t, roi_from_landmarks(np.asarray(face.landmarks)), mesh, realism.read_jitters())
        assert reads.shape == (16,) and np.isfinite(reads).all()
        one = realism.mouth_opening(geometry.to_cv(face.landmarks))
        assert abs(float(np.median(reads)) - one) < 0.03 + 0.2 * one   # the crops read the same mouth
        again = realism.mouth_reads(t, roi_from_landmarks(np.asarray(face.landmarks)), mesh, realism.read_jitters())
        assert np.array_equal(reads, again)                                # and repeat exactly


@needs_media
def test_render_and_score_report_the_realism_figures(tmp_path):
    from PIL import Image

    from facecomp.cli import main
    from facecomp.swap.score import score_clips

    src = tmp_path / "lwbsza.png"
    Image.fromarray(_frames("grid_lwbsza.mpg", 1)[0]).save(src)
    out = tmp_path / "out.mp4"
    target = MEDIA / "grid_bbaf2n.mpg"
    # a fixed manifest id: the watermark's pattern follows the id and moves FaceMesh's reading of a mouth
    # that opens a pixel or two (the 16 jittered reads per frame hold the figure at 0.950-0.958 over ids
    # id-a..id-d; one read of the tracked landmarks gave 0.89-0.95, a random id once 0.78)
    assert main(["render", str(target), "-o", str(out), "--source", str(src), "--end", "40", "--quiet",
                 "--blend", "multiband", "--manifest-id", "id-c"]) == 0
    rep = score_clips(target, out, [str(src)])
    s = rep["summary"]
    r = s["realism"]
    assert r["expression_error"] < 0.05          # lips, lids, brows and jaw are the target's
    assert r["mouth_corr"] is not None and r["mouth_corr"] > 0.92  # speaking mouth follows the target (0.955)
    assert r["mouth_reliability"]["target"] > 0.95 and r["mouth_reliability"]["output"] > 0.95
    assert r["mouth_corr_tracked"] > 0.8                            # the one-read figure, kept for comparison
    assert r["lighting_corr"] > 0.9
    assert r["torn_frames"] == 0
    assert s["seam"]["ratio"] < 1.15
    assert s["replaced_share"] > 0.9
    assert r["mouth_corr_floor"] is None  # no reference clip given: no floor
    if "identity" in s and "closer_to_source_share" in s["identity"]:
        assert s["identity"]["closer_to_source_share"] >= 0.8
    f = rep["frames"][5]
    assert {"expression_error", "mouth_output", "mouth_target", "lighting_corr", "smeared_share"} <= set(f)
    assert len(f["mouth_output_reads"]) == len(f["mouth_target_reads"]) == 16
    assert f["mouth_target"] == pytest.approx(np.mean(f["mouth_target_reads"]), abs=1e-4)


@needs_media
def test_score_floor_is_a_render_that_changes_no_face_with_the_outputs_stamp_and_encode(tmp_path):
    from PIL import Image

    from facecomp.cli import main
    from facecomp.render.floor import score_with_floor
    from facecomp.swap.score import ScoreSettings

    class NoIdentity:  # the floor concerns the landmark figures only
        def embed(self, rgb, landmarks):
            return np.zeros(128)

    src = tmp_path / "lwbsza.png"
    Image.fromarray(_frames("grid_lwbsza.mpg", 1)[0]).save(src)
    target = MEDIA / "grid_bbaf2n.mpg"
    swapped, plain = tmp_path / "swapped.mp4", tmp_path / "plain.mp4"
    common = ["--end", "30", "--quiet", "--manifest-id", "floor-test", "--crf", "23"]
    assert main(["render", str(target), "-o", str(swapped), "--source", str(src), *common]) == 0
    assert main(["render", str(target), "-o", str(plain), *common]) == 0
    settings = ScoreSettings(hands=False)
    r_sw = score_with_floor(target, swapped, [], settings, embedder=NoIdentity())["summary"]["realism"]
    r_pl = score_with_floor(target, plain, [], settings, embedder=NoIdentity())["summary"]["realism"]
    # the floor is exactly what the render without a swap (same id, label and crf) scores
    assert r_sw["mouth_corr_floor"] == r_pl["mouth_corr"] == r_pl["mouth_corr_floor"]
    assert r_sw["expression_error_floor"] == r_pl["expression_error"] == r_pl["expression_error_floor"]
    assert r_sw["expression_error"] > r_sw["expression_error_floor"]  # the swap moved the landmarks a little
    assert "floor_note" not in r_sw
    # an output without a manifest still gets a floor, and is told how it was made
    bare = tmp_path / "bare.mp4"
    bare.write_bytes(plain.read_bytes())
    r_bare = score_with_floor(target, bare, [], settings, embedder=NoIdentity())["summary"]["realism"]
    assert r_bare["mouth_corr_floor"] is not None and "fixed watermark id" in r_bare["floor_note"]
    # a sidecar's free-form encoder options are not run: x264 would write the stats file it names
    import json

    hostile = tmp_path / "hostile.mp4"
    hostile.write_bytes(plain.read_bytes())
    man = json.loads((tmp_path / "plain.mp4.synthetic.json").read_text())
    victim = tmp_path / "written_by_x264.log"
    man["settings"]["render"]["encode"]["options"] = {"x264-params": f"pass=1:stats={victim}"}
    (tmp_path / "hostile.mp4.synthetic.json").write_text(json.dumps(man))
    r_h = score_with_floor(target, hostile, [], settings, embedder=NoIdentity())["summary"]["realism"]
    assert not any(tmp_path.glob("written_by_x264*")) and "not run" in r_h["floor_note"]
    assert r_h["mouth_corr_floor"] == r_pl["mouth_corr_floor"]  # the same id, label and crf: the same floor


@needs_media
def test_anomaly_figures_see_a_torn_and_a_smeared_cheek_but_not_a_clean_face():
    from facecomp.faces.analyzer import analyze_image
    from facecomp.swap import geometry, masks, realism

    t = _frames("grid_bbaf2n.mpg", 1, 21)[0]
    lm = geometry.to_cv(analyze_image(t)[0].landmarks)
    inside = masks.hull_mask(lm, t.shape[:2], 0.6) > 0.5
    w = masks.face_width(lm)
    x0, y0 = int(lm[205][0]) - 15, int(lm[205][1]) - 15
    torn = t.copy()
    torn[y0:y0 + 30, x0:x0 + 30] = torn[y0:y0 + 30, x0:x0 + 1]  # one column drawn out over the cheek
    smeared = t.copy()
    smeared[y0:y0 + 30, x0:x0 + 30] = cv2.GaussianBlur(t, (0, 0), 4)[y0:y0 + 30, x0:x0 + 30]
    assert realism.anomalies(t, t, inside, w) == (0.0, 0.0)
    assert realism.anomalies(torn, t, inside, w)[1] > 0.0
    s, tr = realism.anomalies(smeared, t, inside, w)
    assert s > 0.0 and tr == 0.0


@needs_media
def test_matte_clip_is_the_replacement_mask_and_carries_every_disclosure_layer(tmp_path):
    import av
    from PIL import Image

    from facecomp.cli import main
    from facecomp.disclosure.manifest import load_manifest, sidecar_path

    src = tmp_path / "lwbsza.png"
    Image.fromarray(_frames("grid_lwbsza.mpg", 1)[0]).save(src)
    out, matte = tmp_path / "out.mp4", tmp_path / "matte.mov"
    # a fixed id: a matte is flat black and white, where the watermark has half its room (levels clip at
    # 0 and 255), and one random id of many lost it on 6 frames in a suite run (0 of 42 others did)
    assert main(["render", str(MEDIA / "grid_bbaf2n.mpg"), "-o", str(out), "--source", str(src), "--end", "6",
                 "--quiet", "--matte", str(matte), "--manifest-id", "matte-clip-test"]) == 0
    main_man, matte_man = load_manifest(sidecar_path(out)), load_manifest(sidecar_path(matte))
    assert matte_man["id"] == main_man["id"] + ".matte"  # the link, both ways discoverable
    assert matte_man["settings"]["engine"]["processors"]["matte"]["matte_of"]["manifest_id"] == main_man["id"]
    with av.open(str(matte)) as c:
        assert "AIGC" in c.metadata and matte_man["id"] in c.metadata["SyntheticManifest"]
        frames = [f.to_ndarray(format="rgb24") for f in c.decode(video=0)]
    assert len(frames) == 6
    from facecomp.faces.analyzer import analyze_image

    lm = analyze_image(_frames("grid_bbaf2n.mpg", 1, 3)[0])[0].landmarks
    cx, cy = (int(v) for v in lm[5])  # on the nose: replaced
    assert frames[3][cy, cx].min() > 200
    assert frames[3][-20:, -60:].max() < 40  # far from the face: black
    label_box = frames[3][:40, :150]
    assert label_box.max() > 200 and label_box.mean() > 30  # the label is stamped on the matte too
    assert main(["verify", str(matte)]) == 0


def test_several_photos_combine_into_one_texture_best_view_first(astronaut, astro_source):
    """A turned and a frontal photo give one texture: the frontal one is taken first (it sets the layout),
    the turned one's visibility is lower, and together they cover at least what the frontal one does."""
    from facecomp.swap.morph import MorphSource, MorphSwapper
    from facecomp.swap.sources import photo_face

    rgb, face = astronaut
    turned = _turn(rgb, face)
    t_src = MorphSource.from_image(turned, photo_face(turned).landmarks, "turned")
    both = MorphSwapper([t_src, astro_source])
    photos = both.texture.report["photos"]
    assert len(photos) == 2
    assert photos[0]["visible_share"] > photos[1]["visible_share"]  # best view first (the frontal one)
    cover_both = float((both.texture.levels[0][..., 3] > 0.5).mean())
    cover_front = float((MorphSwapper([astro_source]).texture.levels[0][..., 3] > 0.5).mean())
    assert cover_both >= cover_front - 0.02


# --- lip sync: the target's fine structure around the lips ---------------------------------------------

def _highpass(img: np.ndarray, sigma: float) -> np.ndarray:
    g = img @ np.float32([0.299, 0.587, 0.114])
    return g - cv2.GaussianBlur(g, (0, 0), sigma)


def test_lip_detail_carries_the_targets_lip_line_with_the_faces_own_tone(astro_source):
    """A synthetic target: the new face's tone, a dark two-pixel lip gap along the target's lip line. The
    carried face shows that gap, keeps its own low frequencies on the lips, and is untouched away from
    the mouth."""
    from facecomp.swap import lips, masks

    lm = astro_source.landmarks[1].astype(np.float32)
    face = np.ascontiguousarray(astro_source.levels[1]).astype(np.float32)
    h, w = face.shape[:2]
    width = masks.face_width(lm)
    target = np.clip(face * np.float32(0.8) + np.float32(0.1), 0, 1)  # another tone (lower contrast, lifted)
    gap = np.zeros((h, w), np.uint8)
    line = np.round((lm[[61, 13, 291]]) * 16).astype(np.int32)
    cv2.polylines(gap, [line], False, 1, thickness=2, lineType=cv2.LINE_8, shift=4)
    target[gap > 0] *= np.float32(0.2)
    out = lips.carry_lips(face, target, lm)
    assert out.shape == face.shape and out.dtype == np.float32
    band = lips.lip_band(lm, (h, w), width, 0.0, 0.0) > 0.5
    # the target's gap is now in the face: its high-pass correlates with the target's on the lips
    hp_o, hp_t, hp_f = (_highpass(a, 0.02 * width)[band] for a in (out, target, face))
    assert np.corrcoef(hp_o, hp_t)[0, 1] > 0.9 > np.corrcoef(hp_f, hp_t)[0, 1] + 0.2
    on_gap = (gap > 0) & band
    assert out[on_gap].mean() < face[on_gap].mean() - 0.1
    # ... while the lips' low frequencies (tone) stay the face's, not the target's
    lo = lambda a: cv2.GaussianBlur(a, (0, 0), 0.05 * width)[band & (gap == 0)]  # noqa: E731
    assert np.abs(lo(out) - lo(face)).mean() < 0.5 * np.abs(lo(target) - lo(face)).mean()
    # far from the mouth (eyes, forehead) nothing changed
    far = lips.lip_band(lm, (h, w), width, 0.3, 0.0) == 0
    assert far.mean() > 0.5
    assert np.array_equal(out[far], face[far])
    # strength 0 is the face itself
    assert lips.carry_lips(face, target, lm, lips.LipSettings(strength=0.0)) is face


def test_lip_motion_adds_the_targets_change_below_the_mouth_and_nothing_of_its_still_chin(astro_source):
    """The target's chin gains a fine crease as its jaw drops (against its closed-mouth frame): the face
    takes that crease, at ``motion`` times its contrast, below the mouth and between its corners only;
    what the target's chin has in both frames (its own look) is not carried."""
    from facecomp.swap import lips, masks

    lm = astro_source.landmarks[1].astype(np.float32)
    face = np.ascontiguousarray(astro_source.levels[1]).astype(np.float32)
    h, w = face.shape[:2]
    width = masks.face_width(lm)
    rng = np.random.default_rng(3)
    still = cv2.GaussianBlur(rng.normal(0, 0.15, (h, w)).astype(np.float32), (0, 0), 1.0)[..., None]
    ref8 = np.round(np.clip(face * np.float32(0.8) + np.float32(0.1) + still, 0, 1) * 255).astype(np.uint8)
    reference = ref8.astype(np.float32) / np.float32(255.0)  # the target, mouth closed (a frame of the clip)
    target = reference.copy()
    crease = np.zeros((h, w), np.float32)
    chin = lm[17] + 0.08 * width * (lm[17] - lm[0]) / np.linalg.norm(lm[17] - lm[0])  # below the lower lip
    cv2.line(crease, tuple(int(v) for v in chin - [0.05 * width, 0]), tuple(int(v) for v in chin + [0.05 * width, 0]), 1.0, 1)
    above = lm[0] - 0.06 * width * (lm[17] - lm[0]) / np.linalg.norm(lm[17] - lm[0])  # over the upper lip
    cv2.line(crease, tuple(int(v) for v in above - [0.1 * width, 0]), tuple(int(v) for v in above + [0.1 * width, 0]), 1.0, 1)
    target = np.clip(target - 0.3 * crease[..., None], 0, 1)
    settings = lips.LipSettings(motion=0.7)
    out = lips.carry_motion(face, target, lm, ref8, lm, settings)
    band = lips.motion_band(lm, (h, w), width, settings)
    on_chin = (crease > 0) & (band > 0.9)
    assert on_chin.sum() > 5
    # the crease below the mouth comes in at about `motion` times its depth (its fine part)
    dip = (face - out)[on_chin].mean()
    assert 0.5 * settings.motion * 0.3 < dip < 1.05 * settings.motion * 0.3
    # the one above the upper lip does not (that is not where the jaw moves the face)
    over = (crease > 0) & (band == 0)
    assert over.sum() > 5 and np.array_equal(out[over], face[over])
    # the still structure both target frames share is nowhere in the face
    near = cv2.dilate(crease, np.ones((2 * int(0.13 * width) + 1,) * 2, np.uint8)) > 0  # the crease's halo
    assert ((band > 0.9) & ~near).sum() > 20
    assert np.abs(out - face)[(band > 0.9) & ~near].max() < 1e-3  # a quarter of a level
    assert np.abs(out - face)[band == 0].max() == 0.0
    # the same frame as its reference, or no lip detail: the face itself
    assert np.abs(lips.carry_motion(face, reference, lm, ref8, lm, settings) - face).max() < 1e-5
    assert lips.carry_motion(face, target, lm, ref8, lm, lips.LipSettings(strength=0.0, motion=0.7)) is face
    assert lips.carry_motion(face, target, lm, ref8, lm, lips.LipSettings()) is face  # off by default
    # an aligned reference: a frame shifted and scaled back onto the landmarks by the still points
    m = np.float32([[1.05, 0.0, -4.0], [0.0, 1.05, 3.0]])
    moved = cv2.warpAffine(ref8, m, (w, h), flags=cv2.INTER_LINEAR)
    lm_moved = lm @ m[:, :2].T + m[:, 2]
    back = lips.align_reference(moved, lm_moved, lm, (h, w))
    inner = band > 0.5
    assert np.abs(back - reference)[inner].mean() < 0.03
    assert lips.mouth_gap(lm) >= 0.0


@needs_media
def test_a_clip_session_carries_the_targets_lip_motion_from_its_most_closed_frame(tmp_path, monkeypatch):
    """In a clip session each frame's lip motion is measured against the frame of its 48-frame span where
    the track's mouth is most closed (by the clip's own landmarks, so any render order finds the same);
    the paste then differs from one without it below the mouth only, by the target's own change there."""
    import argparse

    from PIL import Image

    from facecomp.effect import Engine
    from facecomp.swap import geometry, lips, masks
    from facecomp.swap.cli_args import add_swap_arguments, processor_from_args
    from facecomp.swap.processor import FaceSwapProcessor
    from facecomp.video.reader import VideoReader

    src = tmp_path / "bbaf2n.png"
    Image.fromarray(_frames("grid_bbaf2n.mpg", 1)[0]).save(src)
    clip = MEDIA / "grid_swiz3n.mpg"
    reader = VideoReader(clip, dtype="uint8")
    try:
        frame = reader.frame(30).copy()
    finally:
        reader.close()
    p = argparse.ArgumentParser()
    add_swap_arguments(p)

    def render(lip_motion: bool):
        if not lip_motion:
            monkeypatch.setattr(FaceSwapProcessor, "_lip_reference", lambda self, ctx, track: None)
        engine = Engine([processor_from_args(p.parse_args(["--source", str(src), "--lip-motion", "0.7"]), fps=25.0)])
        with engine.open_clip(clip, "grid") as s:
            out = s.render(frame, 30, 30 / 25.0).pixels
            worker = s.workers[0]
            source, refs = worker._lip_refs if worker._lip_refs is not None else (None, {})
            refs = dict(refs)
            faces = {j: next(f for f in worker._all_faces(j, source) if f.selected) for j in range(48)} if source else {}
        monkeypatch.undo()
        return out, refs, faces

    with_motion, refs, faces = render(True)
    without, none, _ = render(False)
    assert len(refs) == 1 and not none
    (track, span), (j, ref_rgb, ref_lm) = next(iter(refs.items()))
    gaps = {k: lips.mouth_gap(geometry.to_cv(f.landmarks)) for k, f in faces.items()}
    assert span == 0 and j == min(gaps, key=lambda k: (gaps[k], k)) and gaps[j] < gaps[30]
    lm = geometry.to_cv(faces[30].landmarks)
    width = masks.face_width(lm)
    band = lips.motion_band(lm, frame.shape[:2], width)
    diff = np.abs(with_motion[..., :3].astype(np.int16) - without[..., :3].astype(np.int16)).max(axis=2)
    assert diff[band > 0.5].mean() > 2.0                          # it acts below the mouth (7 levels) ...
    far = lips.lip_band(lm, frame.shape[:2], width, 0.45, 0.0) == 0
    assert diff[far].max() <= 2                                     # ... and not elsewhere (the blend's reach)
    # what it adds is the target's own change against its closed frame, finer than 0.04 face widths
    aligned = lips.align_reference(ref_rgb, ref_lm, lm, frame.shape[:2])
    change = frame[..., :3].astype(np.float32) / 255.0 - aligned
    change -= cv2.GaussianBlur(change, (0, 0), 0.04 * width)
    added = (with_motion[..., :3].astype(np.float32) - without[..., :3].astype(np.float32)) / 255.0
    inside = band > 0.8
    assert np.corrcoef(added[inside].ravel(), change[inside].ravel())[0, 1] > 0.75  # 0.88


def test_lip_settings_are_checked():
    from facecomp.errors import SettingsError
    from facecomp.swap import lips, masks

    with pytest.raises(SettingsError):
        lips.LipSettings(strength=1.5)
    with pytest.raises(SettingsError):
        lips.LipSettings(around_grow=-0.1)
    with pytest.raises(SettingsError):
        lips.LipSettings(motion=1.5)
    with pytest.raises(SettingsError):
        masks.MaskSettings(lip_detail=2.0)


@needs_media
def test_swapped_mouth_carries_the_targets_lip_structure_only_with_lip_detail():
    """On GRID frames with the turned-head photo: the blended output's fine structure on the target's
    lips follows the target's with the lip step, and clearly less without it; the eyes are the same."""
    from facecomp.faces.analyzer import analyze_image
    from facecomp.swap import lips, masks
    from facecomp.swap.morph import MorphSource, MorphSwapper
    from facecomp.swap.processor import Blender, BlendSettings
    from facecomp.swap.sources import photo_face

    frames = _frames("grid_bbaf2n.mpg", 3, 19)  # a speaking mouth, opening over these frames
    photo = _turn(*_frames_face("grid_lwbsza.mpg"))
    src = MorphSource.from_image(photo, photo_face(photo).landmarks, "turned")
    swapper = MorphSwapper([src])
    corr = {True: [], False: []}
    for frame in frames:
        face = analyze_image(frame)[0]
        for on in (True, False):
            mask = masks.MaskSettings(open_ratio=0.0, lip_detail=1.0 if on else 0.0)
            blender = Blender(BlendSettings(blend="multiband", lighting=1.0, mask=mask, color_smoothing=0.0))
            out = frame.copy()
            for p in swapper.swap(frame, [face]):
                assert blender.paste(out, p, 0)
            lm = np.asarray(face.landmarks, np.float32)[:468] - 0.5
            width = masks.face_width(lm)
            band = lips.lip_band(lm, frame.shape[:2], width, 0.0, 0.0) > 0.5
            o, t = (_highpass(a.astype(np.float32) / 255, 0.02 * width)[band] for a in (out, frame))
            corr[on].append(float(np.corrcoef(o, t)[0, 1]))
    # (without the step the target's mouth interior already shows through: 0.83-0.87 here, 0.97-0.98 with it)
    assert min(corr[True]) > 0.93, corr
    assert np.mean(corr[True]) > np.mean(corr[False]) + 0.07, corr


def _frames_face(name: str):
    from facecomp.swap.sources import photo_face

    rgb = _frames(name, 1)[0]
    big = cv2.resize(rgb, None, fx=2, fy=2, interpolation=cv2.INTER_CUBIC)
    return big, photo_face(big)


@needs_media
def test_a_float_frame_renders_the_same_bits_every_time():
    """The lip bands' distance transform gave one of two results at random in a render (OpenCV's precise
    transform on a mask whose columns mostly hold no zero), so a float frame's pixels differed in the
    last bit between a render server and an in-process render of the same frame."""
    import hashlib

    from facecomp.effect import Engine
    from facecomp.settings import EffectSettings
    from facecomp.video.reader import VideoReader

    clip = MEDIA / "grid_bbaf2n.mpg"
    reader = VideoReader(str(clip))
    rgb = reader.frame(20)
    frame = np.dstack([rgb, np.full(rgb.shape[:2], 255, np.uint8)]).astype(np.float32) / 255
    digests = set()
    for _ in range(6):
        engine = Engine.from_settings(EffectSettings(source=(str(MEDIA / "grace_hopper.jpg"),)),
                                      fps=float(reader.info.fps))
        with engine.open_clip(str(clip), "same-bits") as session:
            out = session.render(frame, 20, 20 / float(reader.info.fps), alpha="premultiplied")
            assert out.replaced_tracks, "the face is replaced (the lip step runs)"
            digests.add(hashlib.sha256(np.ascontiguousarray(out.pixels).tobytes()).hexdigest())
        engine.close()
    assert len(digests) == 1


WALKING = "intel_face-demographics-walking-and-pause.mp4"  # three people, 50-65 px faces, two in thick frames


def _glasses_decisions(name: str, count: int = 200):
    """Per track, each frame's (decision, bridge score) as a clip session makes them: the track's last
    frames, each scored on its own frame."""
    from facecomp.faces.analyzer import FaceAnalyzer
    from facecomp.swap.occlusion import ClipFrames, Occluder, OcclusionSettings

    frames = _frames(name, count)
    ts = FaceAnalyzer().analyze_clip(enumerate(frames))

    def landmarks(track, j):
        if not 0 <= j < len(frames):
            return None
        f = next((f for f in ts.frames[j] if f.track_id == track), None)
        return None if f is None else (frames[j], np.asarray(f.landmarks, np.float32))

    occ = Occluder(OcclusionSettings(hands=False, objects=False))
    out: dict[int, list[tuple[bool, float]]] = {}
    for j in range(len(frames)):
        clip = ClipFrames(j, lambda t, k: None, landmarks=landmarks)
        for f in ts.frames[j]:
            out.setdefault(f.track_id, []).append((occ.track_wears_glasses(f.track_id, clip),
                                                   occ.glasses_score_at(f.track_id, j, clip)))
    return out, landmarks


@needs_media
def test_glasses_are_decided_per_track_and_hold_on_small_faces_that_waver():
    from facecomp.swap import texture
    from facecomp.swap.occlusion import ClipFrames, Occluder, OcclusionSettings

    tracks, landmarks = _glasses_decisions(WALKING)
    assert len(tracks) == 3 and all(len(v) == 41 for v in tracks.values())
    by_median = sorted(tracks, key=lambda t: np.median([s for _, s in tracks[t]]))
    bare, wearers = by_median[0], by_median[1:]
    assert not any(d for d, _ in tracks[bare])
    for t in wearers:  # on every frame: no glasses coming and going
        assert all(d for d, _ in tracks[t]), [d for d, _ in tracks[t]]
    # the man walks in with his bridge showing weakly (his first 13 frames under the single-frame bar and
    # their median under the track's): his first frames read on into the frames after them
    woman = next(t for t in wearers if np.median([s for _, s in tracks[t][:13]]) > 1.5)
    man = next(t for t in wearers if np.median([s for _, s in tracks[t][:13]]) < 1.5)
    assert all(s <= texture.GLASSES_THRESHOLD for _, s in tracks[man][:13])
    # a clip that ends within the read-ahead: what the track showed up to the end decides (his first 10
    # frames say no glasses)
    short, _ = _glasses_decisions(WALKING, 10)
    assert len(short) == 3 and all(len(v) == 10 for v in short.values())
    assert not any(d for d, _ in short[man]) and all(d for d, _ in short[woman])
    # the frame alone would have said no on many of her frames (the glasses came and went before)
    assert sum(s <= texture.GLASSES_THRESHOLD for _, s in tracks[woman]) >= 10
    # the decision at a frame does not depend on what was rendered before: frame 38 asked first
    alone = Occluder(OcclusionSettings(hands=False, objects=False))
    clip = ClipFrames(38, lambda t, k: None, landmarks=landmarks)
    assert alone.track_wears_glasses(woman, clip) and alone.glasses_score_at(woman, 38, clip) == tracks[woman][38][1]
    # bare faces of every other shared clip: never
    for name in ("intel_head-pose-face-detection-female-and-male.mp4", "intel_asl_book.mkv", "grid_bbaf2n.mpg",
                 "grid_swiz3n.mpg"):
        other, _ = _glasses_decisions(name, 60)
        assert other and not any(d for v in other.values() for d, _ in v), name


@needs_media
def test_a_small_face_keeps_its_glasses_on_every_frame_of_a_render(tmp_path):
    """The walking clip's woman: her thick frames stay on every rendered frame, while her face is
    replaced (frames 30-40, whose decisions read back to frame 14 through the clip)."""
    from PIL import Image

    from facecomp.cli import main
    from facecomp.faces.analyzer import FaceAnalyzer
    from facecomp.swap import masks, texture
    from facecomp.swap.occlusion import GLASSES_BAND_TALL

    src = tmp_path / "lwbsza.png"
    Image.fromarray(_frames("grid_lwbsza.mpg", 1)[0]).save(src)
    out = tmp_path / "out.mp4"
    assert main(["render", str(MEDIA / WALKING), "-o", str(out), "--source", str(src), "--start", "30",
                 "--end", "41", "--quiet", "--crf", "12"]) == 0
    import av

    with av.open(str(out)) as c:
        rendered = [f.to_ndarray(format="rgb24") for f in c.decode(video=0)]
    frames = _frames(WALKING, 41)
    ts = FaceAnalyzer().analyze_clip(enumerate(frames))
    tracks, _ = _glasses_decisions(WALKING)
    woman = next(t for t, v in tracks.items() if all(d for d, _ in v))
    assert len(rendered) == 11
    stamped = stamped_like(out, frames[30:], start=30)
    for k, img in enumerate(rendered):
        j = 30 + k
        face = next(f for f in ts.frames[j] if f.track_id == woman)
        lm = np.asarray(face.landmarks, np.float32)
        shape = frames[j].shape[:2]
        band, rims = glasses_rims(frames[j], lm)  # the darkest fifth of her eye band: her frames
        assert rims.sum() > 100, (j, int(rims.sum()))
        diff = np.abs(img.astype(np.float32) - stamped[k]).max(axis=2)
        # against her frames as stamped by this render (the watermark's pattern follows the manifest id):
        # the rims are hers, 1.6-3.1 levels off; painted over with the swap's skin 7.8-13
        assert float(np.mean(diff[rims])) < 5.5, (j, float(np.mean(diff[rims])))
        hull = masks.hull_mask(lm, shape, 0.6) > 0.5
        # face replaced: 5.9-6.3 levels off; left as it was, the encode's 1-2
        assert float(np.mean(diff[hull & ~band])) > 4.0, (j, float(np.mean(diff[hull & ~band])))
        # her lower rims, below the band the source's texture uses: hers too (1.9-3.1 levels off; 9.2-10.7
        # against the bare frames when the band searched stopped at them and they were painted over)
        tall = texture.glasses_band(lm, shape, GLASSES_BAND_TALL) > 0.5
        gray = cv2.cvtColor(frames[j].astype(np.float32) / 255.0, cv2.COLOR_RGB2GRAY)
        dark = cv2.morphologyEx(gray, cv2.MORPH_BLACKHAT, cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (7, 7)))
        below = max(lm[list(masks.EYE_RIGHT)][:, 1].max(), lm[list(masks.EYE_LEFT)][:, 1].max()) + 1
        lower = tall & (dark > 0.04) & (np.arange(shape[0])[:, None] > below)
        assert lower.sum() > 20 and float(np.mean(diff[lower])) < 5.5, (j, float(np.mean(diff[lower])))


@needs_media
def test_a_wearer_walking_in_keeps_his_glasses_from_his_first_frame(tmp_path):
    """The walking clip's man: his bridge shows weakly on his first 13 frames (0.8-1.5), so a decision
    from his frames so far painted his glasses over until frame 17. His first frames read on into the
    frames after them, which a render of frames 0-16 alone reaches through the clip past its end."""
    from PIL import Image

    from facecomp.cli import main
    from facecomp.faces.analyzer import FaceAnalyzer
    from facecomp.swap import masks

    src = tmp_path / "lwbsza.png"
    Image.fromarray(_frames("grid_lwbsza.mpg", 1)[0]).save(src)
    out = tmp_path / "out.mp4"
    assert main(["render", str(MEDIA / WALKING), "-o", str(out), "--source", str(src), "--end", "17",
                 "--quiet", "--crf", "12"]) == 0
    import av

    with av.open(str(out)) as c:
        rendered = [f.to_ndarray(format="rgb24") for f in c.decode(video=0)]
    frames = _frames(WALKING, 17)
    ts = FaceAnalyzer().analyze_clip(enumerate(frames))
    tracks, _ = _glasses_decisions(WALKING)
    man = next(t for t, v in tracks.items() if 1.5 > np.median([s for _, s in v[:13]]) > 0.75)
    assert len(rendered) == 17
    stamped = stamped_like(out, frames)
    off, moved = [], []
    for j, img in enumerate(rendered):
        face = next(f for f in ts.frames[j] if f.track_id == man)
        lm = np.asarray(face.landmarks, np.float32)
        shape = frames[j].shape[:2]
        band, rims = glasses_rims(frames[j], lm)  # the darkest fifth of his eye band: his frames
        diff = np.abs(img.astype(np.float32) - stamped[j]).max(axis=2)
        off.append(float(np.mean(diff[rims])))
        hull = masks.hull_mask(lm, shape, 0.6) > 0.5
        moved.append(float(np.mean(diff[hull & ~band])))
    # against his frames as stamped by this render (the watermark's pattern follows the manifest id, and
    # against the bare frames his rims read 2.6-7.0 levels off from id to id): his face is replaced,
    # 4.5-5.3 levels off below and beside the band (the encode's 1-2 where left as it was), and his rims
    # are his, 1.8-5.3 levels off over six ids (median 3.2), where --no-glasses paints them over at 7.2-10
    assert float(np.median(moved)) > 4.0, [round(v, 1) for v in moved]
    assert max(off) < 6.3 and float(np.median(off)) < 4.5, [round(v, 1) for v in off]


@needs_media
def test_the_target_keeps_its_frames_not_the_skin_and_eyes_around_them():
    """What stays of a target in glasses is its thin dark structures in the band the occluder searches
    (the frames, and the lashes and creases there), not the whole band: on a bare face 38% of it."""
    from facecomp.faces.analyzer import analyze_image
    from facecomp.swap import masks, texture
    from facecomp.swap.occlusion import GLASSES_BAND_TALL, glasses_pixels

    frame = _frames("grid_bbaf2n.mpg", 1)[0]
    lm = np.asarray(analyze_image(frame)[0].landmarks, np.float32)
    worn = _draw_glasses(frame, lm)
    drawn = np.abs(worn.astype(int) - frame).max(axis=2) > 30
    band = texture.glasses_band(lm, frame.shape[:2], GLASSES_BAND_TALL)
    inside = band > 0.5
    keep = glasses_pixels(worn.astype(np.float32) / 255.0, lm, band)
    eyes = np.zeros(frame.shape[:2], np.uint8)
    for loop in (masks.EYE_RIGHT, masks.EYE_LEFT):
        cv2.fillPoly(eyes, [np.round(lm[list(loop)]).astype(np.int32)], 1)
    assert keep[drawn & inside].mean() > 0.9  # the frames stay
    assert keep[eyes > 0].mean() < 0.3  # the eyes are not kept (the target's interiors show in any case)
    assert keep[band == 0].max() == 0.0  # nothing outside the band
    assert keep.sum() < 0.85 * band.sum()
    bare = glasses_pixels(frame.astype(np.float32) / 255.0, lm, band)
    assert bare.sum() < 0.45 * band.sum(), bare.sum() / band.sum()


@needs_media
def test_a_close_up_in_drawn_frames_keeps_them_through_a_render(tmp_path):
    """A GRID speaker (a 134 px face) wearing drawn frames, rendered as a clip: the frames are found
    (the inner rims stand in the bridge test's window on a close-up; the bar's depth scores too) and stay,
    while the face is replaced. Before, the rims were painted over (about 69 levels off)."""
    import av
    from mediagen import write_clip
    from PIL import Image

    from facecomp.cli import main
    from facecomp.faces.analyzer import FaceAnalyzer
    from facecomp.swap import masks, texture

    frames = _frames("grid_bbaf2n.mpg", 20)
    ts = FaceAnalyzer().analyze_clip(enumerate(frames))
    lms = [np.asarray(ts.frames[i][0].landmarks, np.float32) for i in range(len(frames))]
    worn = [_draw_glasses(f, lm) for f, lm in zip(frames, lms)]
    assert min(texture.glasses_score(w.astype(np.float32) / 255.0, lm) for w, lm in zip(worn, lms)) > \
        texture.GLASSES_THRESHOLD
    clip = write_clip(tmp_path / "worn.mp4", w=frames[0].shape[1], h=frames[0].shape[0], n=len(worn),
                      options={"crf": "12"}, frames=worn)
    with av.open(str(clip)) as c:
        src = [f.to_ndarray(format="rgb24") for f in c.decode(video=0)]
    photo = tmp_path / "lwbsza.png"
    Image.fromarray(_frames("grid_lwbsza.mpg", 1)[0]).save(photo)
    rendered_path = tmp_path / "out.mp4"
    assert main(["render", str(clip), "-o", str(rendered_path), "--source", str(photo), "--quiet", "--crf", "12"]) == 0
    with av.open(str(rendered_path)) as c:
        rendered = [f.to_ndarray(format="rgb24") for f in c.decode(video=0)]
    assert len(rendered) == len(frames)
    for j in range(0, len(frames), 3):
        rims = np.abs(worn[j].astype(int) - frames[j]).max(axis=2) > 30
        diff = np.abs(rendered[j].astype(np.float32) - src[j]).max(axis=2)
        band = texture.glasses_band(lms[j], frames[j].shape[:2]) > 0.5
        hull = masks.hull_mask(lms[j], frames[j].shape[:2], 0.6) > 0.5
        assert float(diff[rims & band].mean()) < 12, (j, float(diff[rims & band].mean()))
        assert float(diff[hull & ~band].mean()) > 10, (j, float(diff[hull & ~band].mean()))


@needs_media
def test_glasses_frames_through_a_clip_session_are_the_same_in_order_scattered_and_alone():
    """The per-track glasses decision reads the track's last frames: through one clip session (what the
    OFX bridge and the server use) a frame's pixels do not depend on which frames came before."""
    import argparse

    from facecomp.effect import Engine
    from facecomp.swap.cli_args import add_swap_arguments, processor_from_args
    from facecomp.video.reader import VideoReader

    p = argparse.ArgumentParser()
    add_swap_arguments(p)
    photo = MEDIA / "face_recognition_obama.jpg"
    engine = Engine([processor_from_args(p.parse_args(["--source", str(photo), "--no-hands"]), fps=25.0)])
    clip = MEDIA / WALKING
    src = VideoReader(clip, dtype="uint8")
    try:
        frames = {i: src.frame(i).copy() for i in range(41)}
    finally:
        src.close()
    with engine.open_clip(clip, "walk") as s:
        in_order = {i: s.render(frames[i], i, i / 25.0).pixels for i in range(41)}
        kept = s.workers[0].blender.occluder.stats["glasses_frames"]
    assert kept >= 2 * 23, kept  # both wearers, every frame from the man's 18th on
    with engine.open_clip(clip, "walk") as s:
        scattered = {i: s.render(frames[i], i, i / 25.0).pixels for i in [40, 31, 26, 38, 29, 35, 27, 33]}
    with engine.open_clip(clip, "walk") as s:
        alone = s.render(frames[38], 38, 38 / 25.0).pixels
    for i, px in scattered.items():
        assert np.array_equal(px, in_order[i]), f"frame {i} rendered out of order"
    assert np.array_equal(alone, in_order[38]), "frame 38 alone"
