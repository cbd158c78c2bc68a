"""Swap building blocks without a detector: mesh warp, masks, colour, paste-back, the morph processor."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from facecomp.effect import FrameContext
from facecomp.errors import SettingsError
from facecomp.swap import blend, color, geometry, masks, mesh
from facecomp.swap.morph import MorphSource, MorphSwapper
from facecomp.swap.processor import BlendSettings, Blender, FaceSwapProcessor

from test_swap_support import FixedFaces, as_dtype, face_at, synthetic_landmarks, textured


def test_delaunay_covers_the_hull_with_consistent_triangles():
    lm = synthetic_landmarks(100, 100, 120)
    tris = mesh.delaunay(lm)
    hull = cv2.convexHull(lm).reshape(-1, 2)
    # Euler: a Delaunay triangulation of n points with h on the hull has 2n - 2 - h triangles
    assert len(tris) == 2 * 468 - 2 - len(hull)
    assert tris.min() >= 0 and tris.max() < 468
    area = sum(abs(cv2.contourArea(lm[t])) for t in tris)
    assert area == pytest.approx(cv2.contourArea(hull), rel=1e-4)


def test_piecewise_affine_warp_reproduces_a_global_affine():
    src_img = textured(200, 200)
    src = synthetic_landmarks(100, 100, 120)
    m = np.array([[0.8, -0.15, 30.0], [0.15, 0.8, 12.0]])
    dst = geometry.apply(m, src)
    tris = mesh.delaunay(src)
    out, covered = mesh.warp(src_img, src, dst, tris, (200, 200))
    ref = cv2.warpAffine(src_img, m, (200, 200), flags=cv2.INTER_LINEAR)
    inner = cv2.erode(covered.astype(np.uint8), np.ones((5, 5), np.uint8)).astype(bool)
    assert inner.sum() > 5000
    assert np.abs(out[inner] - ref[inner]).max() < 2e-3
    assert not covered[0, 0] and not covered[199, 199]


@pytest.mark.parametrize("dtype", [np.uint8, np.uint16, np.float32])
def test_float_round_trip_is_exact(dtype):
    img = as_dtype(textured(20, 30), dtype)
    assert np.array_equal(blend.from_float(blend.to_float(img), dtype), img)


def test_feather_is_zero_far_from_the_mask_and_soft_at_its_edge():
    m = np.zeros((100, 100), np.float32)
    m[30:70, 30:70] = 1
    f = blend.feather(m, 3, 6)
    assert f[50, 50] == pytest.approx(1.0)
    assert f[:15].max() == 0 and f[:, 85:].max() == 0
    edge = f[50, 24:40]
    assert (np.diff(edge) >= -1e-6).all() and 0 < edge[5] < 1


@pytest.mark.parametrize("dtype", [np.uint8, np.uint16, np.float32])
@pytest.mark.parametrize("channels", [3, 4])
def test_composite_writes_only_under_alpha_and_keeps_alpha_channel(dtype, channels):
    base = textured(80, 90)
    if channels == 4:
        base = np.concatenate([base, np.linspace(0, 1, 80 * 90, dtype=np.float32).reshape(80, 90, 1)], -1)
    frame = as_dtype(base, dtype)
    before = frame.copy()
    face = np.full((40, 50, 3), 0.9, np.float32)
    alpha = np.zeros((40, 50), np.float32)
    alpha[10:30, 10:40] = 1.0
    alpha[5:10, 10:40] = 0.5
    blend.composite(frame, face, alpha, x0=60, y0=-5)  # hangs over the right and top edges
    written = np.zeros((80, 90), bool)
    written[0:25, 70:90] = True
    assert np.array_equal(frame[~written], before[~written])
    if channels == 4:
        assert np.array_equal(frame[..., 3], before[..., 3])
    got = blend.to_float(frame[10, 75, :3])
    assert np.allclose(got, 0.9, atol=1 / 255)


def test_warp_patch_to_frame_is_the_inverse_of_the_alignment():
    frame = textured(160, 160)
    lm = geometry.to_cv(synthetic_landmarks(80, 85, 70, roll=0.3))
    m = geometry.similarity(geometry.five_points(lm), geometry.arcface_template(128))
    from facecomp.swap.onnx_swappers import aligned_crop

    crop = aligned_crop(frame, m, 128)
    back, x0, y0 = blend.warp_patch_to_frame(crop, geometry.invert(m), (160, 160))
    ones, _, _ = blend.warp_patch_to_frame(np.ones((128, 128), np.float32), geometry.invert(m), (160, 160))
    inner = cv2.erode((ones > 0.999).astype(np.uint8), np.ones((7, 7), np.uint8)).astype(bool)
    region = frame[y0:y0 + back.shape[0], x0:x0 + back.shape[1]]
    assert inner.sum() > 3000
    assert np.abs(back[inner] - region[inner]).max() < 0.02


def test_interior_mask_follows_mouth_and_eye_openness():
    s = masks.MaskSettings()
    closed = geometry.to_cv(synthetic_landmarks(100, 100, 120, mouth_open=0.0, eyes_open=0.02))
    opened = geometry.to_cv(synthetic_landmarks(100, 100, 120, mouth_open=0.6, eyes_open=0.4))
    assert masks.interior_mask(closed, (200, 200), s).sum() == 0
    m = masks.interior_mask(opened, (200, 200), s)
    assert m[int(100 + 0.3 * 120), 100] == pytest.approx(1.0)       # mouth centre
    assert m[int(100 - 0.12 * 120), int(100 - 0.2 * 120)] == pytest.approx(1.0)  # an eye centre
    assert m[100, 100] == 0                                          # the cheek between
    no_eyes = masks.interior_mask(opened, (200, 200), masks.MaskSettings(keep_eyes=False))
    assert no_eyes[int(100 - 0.12 * 120), int(100 - 0.2 * 120)] == 0


def test_hull_mask_cuts_the_forehead_but_keeps_the_chin():
    lm = geometry.to_cv(synthetic_landmarks(100, 100, 120))
    full = masks.hull_mask(lm, (220, 220), forehead=1.0)
    cut = masks.hull_mask(lm, (220, 220), forehead=0.5)
    top = int(100 - 0.55 * 120 * 0.62 * 1.4)
    assert full[int(100 - 0.62 * 120 * 0.9), 100] == 1 and cut[int(100 - 0.62 * 120 * 0.9), 100] == 0
    assert cut[int(100 + 0.62 * 120 * 0.9), 100] == 1
    assert cut.sum() < full.sum() and top > 0
    with pytest.raises(SettingsError):
        masks.MaskSettings(erode=2.0)


@pytest.mark.parametrize("mode", ["rct", "lct", "mkl", "idt"])
def test_colour_transfer_moves_the_face_to_the_target_colours(mode):
    rng = np.random.default_rng(1)
    face = np.clip(rng.normal([0.7, 0.5, 0.4], 0.05, (60, 60, 3)), 0, 1).astype(np.float32)
    target = np.clip(rng.normal([0.35, 0.4, 0.6], 0.08, (60, 60, 3)), 0, 1).astype(np.float32)
    mask = np.ones((60, 60), bool)
    out = color.transfer(mode, face, mask, target=target, target_mask=mask)
    if mode == "rct":  # Reinhard matches the moments in Lab, channel by channel
        out, target = (cv2.cvtColor(x, cv2.COLOR_RGB2Lab) / 100.0 for x in (out, target))
    assert np.abs(out.reshape(-1, 3).mean(0) - target.reshape(-1, 3).mean(0)).max() < 0.02
    assert np.abs(out.reshape(-1, 3).std(0) - target.reshape(-1, 3).std(0)).max() < 0.02
    assert color.transfer("none", face, mask, target=target, target_mask=mask) is face
    with pytest.raises(SettingsError):
        color.transfer("bogus", face, mask, target=target, target_mask=mask)


def test_rct_band_caps_the_lightness_contrast_there_and_changes_nothing_else():
    """The eye band's cap: inside the band rct's lightness scale is at most the given one, with the same
    mean mapping; outside it, and wherever the cap is above rct's own scale, the result is rct's bit for bit."""
    rng = np.random.default_rng(3)
    face = np.clip(rng.normal([0.6, 0.45, 0.4], 0.03, (80, 80, 3)), 0, 1).astype(np.float32)
    target = np.clip(rng.normal([0.5, 0.4, 0.35], 0.09, (80, 80, 3)), 0, 1).astype(np.float32)
    mask = np.ones((80, 80), bool)
    stats = color.stats(target, mask)
    plain = color.transfer("rct", face, mask, target_stats=stats)
    band = np.zeros((80, 80), np.float32)
    band[20:60, 20:60] = 1.0
    capped = color.transfer("rct", face, mask, target_stats=stats, l_band=band, band_l_scale=1.0)
    assert np.array_equal(capped[band == 0], plain[band == 0])
    lab = [cv2.cvtColor(x, cv2.COLOR_RGB2Lab)[..., 0][band == 1] for x in (face, plain, capped)]
    assert lab[1].std() / lab[0].std() > 2.0                       # rct's own scale: the spreads' ratio
    assert abs(lab[2].std() / lab[0].std() - 1.0) < 0.03           # capped at 1 inside the band
    assert abs(lab[2].mean() - lab[1].mean()) < 0.5                # the same mean (Lab L units)
    loose = color.transfer("rct", face, mask, target_stats=stats, l_band=band, band_l_scale=10.0)
    assert np.array_equal(loose, plain)


def test_colour_smoother_damps_jumps_per_track_and_resets_after_a_gap():
    sm = color.ColorSmoother(keep=0.5)
    a = color.stats(np.full((8, 8, 3), 0.2, np.float32), np.ones((8, 8), bool))
    b = color.stats(np.full((8, 8, 3), 0.6, np.float32), np.ones((8, 8), bool))
    sm.update(1, 0, a)
    assert sm.update(1, 1, b).mean[0] == pytest.approx(0.4)
    assert sm.update(2, 1, b).mean[0] == pytest.approx(0.6)   # another track is independent
    assert sm.update(1, 50, a).mean[0] == pytest.approx(0.2)  # a gap (a cut) starts afresh


def test_membrane_clone_matches_the_target_at_the_mask_edge():
    face = np.full((64, 64, 3), 0.3, np.float32)
    face[30:34, 30:34] = 0.6  # detail to keep
    y, x = np.mgrid[0:64, 0:64]
    target = np.stack([0.5 + 0.003 * x] * 3, -1).astype(np.float32)
    mask = np.zeros((64, 64), bool)
    mask[12:52, 12:52] = True
    out = blend.membrane_clone(face, target, mask)
    ring = cv2.dilate(mask.astype(np.uint8), np.ones((3, 3), np.uint8)).astype(bool) & ~mask
    inner_edge = mask & ~cv2.erode(mask.astype(np.uint8), np.ones((3, 3), np.uint8)).astype(bool)
    seam_before = np.abs(face[inner_edge].mean() - target[ring].mean())
    seam_after = np.abs(out[inner_edge] - target[inner_edge]).mean()
    assert seam_after < 0.02 < seam_before
    detail = out[31, 31, 0] - out[28, 28, 0]
    assert detail == pytest.approx(0.3, abs=0.03)
    assert np.array_equal(out[~mask], face[~mask])


def _morph_setup(h=180, w=200):
    src_img = textured(200, 200, seed=3)
    src_img[70:80, 60:80] = [0.9, 0.1, 0.1]  # a red mark under the source's right eye
    src_lm = synthetic_landmarks(100, 100, 110)
    source = MorphSource.from_image(src_img, src_lm, name="synthetic")
    target = face_at(110, 95, 90, track=7, roll=0.15)
    return source, target, textured(h, w, seed=9)


@pytest.mark.parametrize("dtype", [np.uint8, np.uint16, np.float32])
@pytest.mark.parametrize("channels", [3, 4])
def test_morph_processor_replaces_the_face_and_nothing_else(dtype, channels):
    source, target, base = _morph_setup()
    if channels == 4:
        base = np.concatenate([base, np.full(base.shape[:2] + (1,), 0.25, np.float32)], -1)
    frame = as_dtype(base, dtype)
    # (lip_detail off: on this synthetic face the band around the lips reaches the red mark's cheek, and
    # there the target's own fine texture would be carried in; swap.lips is tested on its own)
    proc = FaceSwapProcessor(MorphSwapper([source]), FixedFaces({3: [target]}),
                             BlendSettings(color="none", mask=masks.MaskSettings(lip_detail=0.0)),
                             source_hashes=[source.sha256])
    res = proc.process(frame, FrameContext(index=3, time=0.12, source=object()))
    out = res.frame
    assert out.dtype == frame.dtype and out.shape == frame.shape
    assert res.replaced_tracks == (7,)
    changed = np.any(out != frame, axis=2)
    lm = geometry.to_cv(target.landmarks)
    hull = masks.hull_mask(lm, frame.shape[:2], forehead=1.0) > 0
    # every changed pixel lies inside the face hull; the face itself did change
    assert changed.sum() > 1500 and not (changed & ~hull).any()
    if channels == 4:
        assert np.array_equal(out[..., 3], frame[..., 3])
    # the source's red mark follows the mesh to the target's right-eye cheek
    diff = blend.to_float(out[..., :3]) - blend.to_float(frame[..., :3])
    red = np.unravel_index(np.argmax(diff[..., 0] - diff[..., 1]), diff.shape[:2])
    eye_r = lm[list(masks.EYE_RIGHT)].mean(0)
    assert np.hypot(red[1] - eye_r[0], red[0] - eye_r[1]) < 40
    # no faces on another frame: the very same array comes back untouched
    res2 = proc.process(frame, FrameContext(index=4, time=0.16, source=object()))
    assert res2.replaced_tracks == () and np.array_equal(res2.frame, frame)


def test_morph_picks_the_source_with_the_closest_pose():
    img = textured(200, 200)
    open_src = MorphSource.from_image(img, synthetic_landmarks(100, 100, 110, mouth_open=0.8), "open")
    shut_src = MorphSource.from_image(img, synthetic_landmarks(100, 100, 110, mouth_open=0.0), "shut")
    sw = MorphSwapper([open_src, shut_src])
    assert sw.choose(geometry.to_cv(synthetic_landmarks(60, 70, 80, mouth_open=0.7, seed=0))) is open_src
    assert sw.choose(geometry.to_cv(synthetic_landmarks(60, 70, 80, mouth_open=0.05, seed=0))) is shut_src
    assert sw.settings_dict()["sources"][0]["name"] == "open"
    with pytest.raises(SettingsError):
        MorphSwapper([])


def test_blend_settings_are_validated():
    with pytest.raises(SettingsError):
        BlendSettings(color="sepia")
    with pytest.raises(SettingsError):
        BlendSettings(blend="overlay")
    with pytest.raises(SettingsError):
        BlendSettings(color_smoothing=1.0)
    with pytest.raises(SettingsError):
        BlendSettings(eye_ring=0.5)
    with pytest.raises(SettingsError):
        BlendSettings(eye_ring_cap=0.9)
    with pytest.raises(SettingsError):
        BlendSettings(nose_ring=-0.01)


def test_seamless_blend_lowers_the_seam_against_feather():
    source, target, base = _morph_setup()
    frame = as_dtype(base, np.float32)
    seams = {}
    for mode in ("feather", "seamless"):
        b = Blender(BlendSettings(color="none", blend=mode), True)
        patch = MorphSwapper([source]).swap(frame, [target])[0]
        face, alpha = b.alpha_and_face(patch)
        hard = alpha > 0.5
        edge = hard & ~cv2.erode(hard.astype(np.uint8), np.ones((3, 3), np.uint8)).astype(bool)
        seams[mode] = float(np.abs(face[edge] - patch.target[edge]).mean())
    assert seams["seamless"] < 0.5 * seams["feather"]


def test_half_resolution_remap_tables_match_full_resolution():
    src_img = textured(260, 260)
    src = synthetic_landmarks(130, 130, 200)
    dst = geometry.apply(np.array([[1.1, -0.1, 10.0], [0.12, 1.05, 4.0]]), src)
    tris = mesh.delaunay(src)
    full, cov_full = mesh.warp(src_img, src, dst, tris, (300, 300))
    half, cov_half = mesh.warp(src_img, src, dst, tris, (300, 300), table_scale=0.5)
    assert cov_half.sum() > 0.95 * cov_full.sum() and not (cov_half & ~cov_full).any()
    assert np.abs(full[cov_half] - half[cov_half]).mean() < 2e-3


def test_row_rasteriser_agrees_with_the_exact_one():
    """The per-frame warp's vectorised rasteriser: the same coverage and triangles as the exact drawing but
    along edges, where neighbouring triangles' maps agree; where the mesh folds, the later triangle wins."""
    src = synthetic_landmarks(100, 100, 120)
    tris = mesh.delaunay(src)
    dst = geometry.apply(np.array([[0.9, -0.2, 14.0], [0.25, 0.85, 6.0]]), src)
    exact, rows = mesh.rasterize(dst, tris, (200, 200)), mesh.rasterize_rows(dst, tris, (200, 200))
    assert (exact > 0).sum() > 8000
    assert ((exact > 0) != (rows > 0)).sum() < 0.01 * (exact > 0).sum()
    mx0, my0, c0 = mesh.remap_tables(dst, src, tris, (200, 200))
    mx1, my1, c1 = mesh.remap_tables(dst, src, tris, (200, 200), rows=True)
    both = c0 & c1
    assert (exact != rows)[both].any()  # they do differ, on edge pixels ...
    assert np.hypot(mx0 - mx1, my0 - my1)[both].max() < 0.5  # ... where the maps agree
    # a fold: the second triangle lies over the first's middle, and wins there in both
    pts = np.array([[10, 10], [60, 12], [30, 50], [20, 20], [45, 22], [32, 40]], np.float32)
    fold = np.array([[0, 1, 2], [3, 4, 5]], np.int32)
    a, b = mesh.rasterize(pts, fold, (64, 64)), mesh.rasterize_rows(pts, fold, (64, 64))
    assert a[30, 32] == b[30, 32] == 2 and a[14, 30] == b[14, 30] == 1
    assert (a != b).sum() < 0.05 * (a > 0).sum()
    # the fast warp reproduces a global affine like the exact one
    img = textured(200, 200)
    out, cov = mesh.warp(img, src, dst, tris, (200, 200), rows=True)
    ref = cv2.warpAffine(img, np.array([[0.9, -0.2, 14.0], [0.25, 0.85, 6.0]]), (200, 200), flags=cv2.INTER_LINEAR)
    inner = cv2.erode(cov.astype(np.uint8), np.ones((5, 5), np.uint8)).astype(bool)
    assert np.abs(out[inner] - ref[inner]).max() < 2e-3


def test_clip_colour_statistics_on_the_strided_crop_match_full_resolution():
    """ClipColour.raw takes a big face's moments on a 2x-strided crop (masks drawn on that grid): they
    must agree with the moments of every face pixel at full resolution."""
    from facecomp.swap.processor import ClipColour

    rgb = (textured(360, 400, seed=3) * 255).astype(np.uint8)
    face = face_at(200, 180, 190, mouth_open=0.4)
    settings = BlendSettings()
    cc = ClipColour(settings, interiors=True)
    got = cc.raw(rgb, face)
    # the reference: the same selection on the whole frame at full resolution, every pixel
    lm = np.asarray(face.landmarks, np.float32)
    sel = masks.hull_mask(lm, rgb.shape[:2], settings.mask.forehead) > 0.5
    sel &= masks.interior_mask(lm, rgb.shape[:2], settings.mask) < 0.5
    px = rgb[sel].astype(np.float64) / 255.0
    assert len(px) > 8000  # big enough that the stride is taken
    np.testing.assert_allclose(got.mean, px.mean(0), atol=2e-3)
    np.testing.assert_allclose(np.sqrt(np.diag(got.cov)), px.std(0), rtol=0.03, atol=1e-3)
    lab = cv2.cvtColor(px.astype(np.float32).reshape(1, -1, 3), cv2.COLOR_RGB2Lab).reshape(-1, 3)
    np.testing.assert_allclose(got.lab_mean, lab.mean(0), atol=0.3)
    np.testing.assert_allclose(got.lab_std, lab.std(0), rtol=0.05, atol=0.05)


def test_a_loop_band_worked_out_in_its_window_is_the_whole_patchs_band():
    """The nose band is worked out only round the nose (the rest of a face patch is far from it): its
    values are the whole patch's own (to float rounding in the upsampling: a last bit here and there), at
    every face size and at the patch's edge too, and it only ever raises what is there."""
    from facecomp.models import registry
    from facecomp.swap.sources import photo_face, read_photo

    photo = read_photo(registry.ensure("astronaut"))
    face = np.asarray(photo_face(photo).landmarks, np.float32)[:468]
    face = face - face.min(axis=0)
    for scale in (0.3, 1.0, 2.5):  # face widths about 35, 120 and 300 px
        lm = face * np.float32(scale)
        width = masks.face_width(lm)
        size = np.ceil(lm.max(axis=0)).astype(int)
        nose_y = float(lm[masks.NOSE_TIP, 1])
        for shape, shift in (((int(size[1] + 0.6 * width), int(size[0] + 0.6 * width)), 0.3 * width),
                             ((int(nose_y + 0.02 * width), int(size[0])), 0.0)):  # the nose at the bottom edge
            pts = lm + np.float32(shift)
            for grow in (0.02, 0.04, 0.1):
                whole = masks.loop_bands(pts, (masks.NOSE_LOWER,), shape, width, ((grow, grow),))[0]
                assert whole.max() == 1.0 and (whole == 0).mean() > 0.6, (scale, shape, grow)
                base = np.random.default_rng(1).random(shape, dtype=np.float32) * 0.5
                got = masks.loop_band_into(base.copy(), pts, (masks.NOSE_LOWER,), width, grow, grow)
                assert np.abs(got - np.maximum(base, whole)).max() < 1e-6, (scale, shape, grow)
                assert np.array_equal(got[whole == 0], base[whole == 0])  # nothing beyond the band
