"""The replacement matte for compositors: in the output's alpha channel (``--matte-alpha``) and as its own
clip (``--matte PATH``), both the matte of the output itself, both disclosed.

Real renders of the shared clips (skipped without them): pixels read back from what was written.
"""

from __future__ import annotations

import glob
from pathlib import Path

import cv2
import numpy as np
import pytest

from mediagen import first_frames, glasses_rims, sample_media

MEDIA = sample_media("grid_bbaf2n.mpg", "grid_lwbsza.mpg")
pytestmark = pytest.mark.skipif(MEDIA is None, reason="shared sample media not found: set FACECOMP_SAMPLE_MEDIA")
WALKING = "intel_face-demographics-walking-and-pause.mp4"


def _frames(name: str, count: int, start: int = 0) -> list[np.ndarray]:
    return first_frames(MEDIA / name, count, start)


def _sequence(pattern: str) -> list[np.ndarray]:
    """An RGB(A) PNG sequence as written (cv2 reads BGR(A): turned to RGB(A))."""
    out = []
    for f in sorted(glob.glob(pattern)):
        img = cv2.imread(f, cv2.IMREAD_UNCHANGED)
        out.append(img[..., [2, 1, 0, 3]] if img.shape[2] == 4 else img[..., ::-1])
    return out


@pytest.fixture(scope="module")
def photo(tmp_path_factory):
    from PIL import Image

    path = tmp_path_factory.mktemp("photo") / "lwbsza.png"
    Image.fromarray(_frames("grid_lwbsza.mpg", 1)[0]).save(path)
    return path


def test_matte_in_alpha_is_a_face_layer_that_comps_over_the_original_to_the_render(tmp_path, photo):
    """Straight alpha = the replacement matte, colour = the new face as a layer: over the original it
    gives the render (to the watermark's few levels where the matte is partial, which the render adds to
    the whole frame and the comp only where the layer shows), the label box stays opaque enough to read,
    and every disclosure layer reads back from the RGBA file."""
    from facecomp.cli import main
    from facecomp.disclosure.manifest import load_manifest, sidecar_path
    from facecomp.disclosure.stamp import Stamper
    from facecomp.faces.analyzer import analyze_image

    clip = str(MEDIA / "grid_bbaf2n.mpg")
    common = ["--end", "6", "--quiet", "--manifest-id", "matte-alpha-test"]
    for n in ("alpha", "plain", "floor"):
        (tmp_path / n).mkdir()
    alpha_out, plain, floor = (str(tmp_path / n / "f_%03d.png") for n in ("alpha", "plain", "floor"))
    assert main(["render", clip, "-o", alpha_out, "--source", str(photo), "--matte-alpha", *common]) == 0
    assert main(["render", clip, "-o", plain, "--source", str(photo), *common]) == 0
    assert main(["render", clip, "-o", floor, *common]) == 0  # label + watermark only: the stamp's own change
    layers, renders, floors = (_sequence(p.replace("%03d", "*")) for p in (alpha_out, plain, floor))
    originals = _frames("grid_bbaf2n.mpg", 6)
    assert len(layers) == len(renders) == 6 and layers[0].shape == (288, 360, 4)
    x0, y0, x1, y1 = Stamper().label_box(288, 360)
    box = np.zeros((288, 360), bool)
    box[y0:y1, x0:x1] = True
    for j in (0, 5):
        a = layers[j][..., 3].astype(np.float32) / 255.0
        lm = analyze_image(originals[j])[0].landmarks
        cx, cy = (int(v) for v in lm[5])  # the nose: replaced
        assert a[cy, cx] == 1.0
        assert a[-30:, -60:].max() == 0.0 and a[~box][:, None].mean() < 0.5  # far from the face: none
        orig = originals[j].astype(np.float32)
        stamp = floors[j].astype(np.float32) - orig  # the watermark (and the label, inside its box)
        comp = layers[j][..., :3] * a[..., None] + orig * (1.0 - a[..., None])
        # the render has the watermark everywhere, the comp only under the layer: put the rest back
        diff = np.abs(comp + (1.0 - a[..., None]) * stamp - renders[j]).max(axis=2)
        assert diff[~box].max() <= 3.0, float(diff[~box].max())
        assert diff[(a == 1.0) & ~box].max() <= 1.0
        assert np.abs(comp - renders[j]).max(axis=2)[(a == 1.0) & ~box].max() <= 1.0  # the face itself
        # the label's box is opaque in alpha (its box opacity at least, its letters fully), so it is on the comp
        assert a[box].min() >= 0.85 and (a[box] == 1.0).sum() > 200
        assert np.abs(comp - renders[j]).max(axis=2)[box].mean() < 6.0
    man = load_manifest(sidecar_path(Path(alpha_out)))
    assert man["id"] == "matte-alpha-test"
    assert "matte_in_alpha" in man["settings"]["engine"]["processors"]["swap"]
    assert main(["verify", alpha_out]) == 0  # tags, manifest, label and watermark read back from the RGBA frames


def test_matte_in_alpha_as_prores_4444_and_refused_where_there_is_no_alpha(tmp_path, photo):
    import av

    from facecomp.cli import main

    clip = str(MEDIA / "grid_bbaf2n.mpg")
    out = tmp_path / "layer.mov"
    assert main(["render", clip, "-o", str(out), "--source", str(photo), "--matte-alpha", "--end", "4",
                 "--quiet", "--manifest-id", "prores-layer-test"]) == 0
    with av.open(str(out)) as c:
        st = c.streams.video[0]
        assert st.codec_context.name == "prores" and "a" in st.codec_context.pix_fmt.split("p")[0]
        frames = [f.to_ndarray(format="rgba64le") for f in c.decode(video=0)]
    from facecomp.faces.analyzer import analyze_image

    lm = analyze_image(_frames("grid_bbaf2n.mpg", 1, 2)[0])[0].landmarks
    cx, cy = (int(v) for v in lm[5])
    a = frames[2][..., 3].astype(np.float32) / 65535.0
    assert len(frames) == 4 and a[cy, cx] > 0.99 and a[-30:, -60:].max() < 0.01
    assert main(["verify", str(out)]) == 0
    for bad, extra in (("layer.mp4", []), ("off.mov", ["--no-alpha"]), ("h264.mov", ["--codec", "h264"])):
        target = tmp_path / bad
        assert main(["render", clip, "-o", str(target), "--source", str(photo), "--matte-alpha", "--end", "2",
                     "--quiet", *extra]) == 2  # a settings error
        assert not target.exists() and not list(tmp_path.glob(f"{bad}*"))  # refused before anything is written


def test_the_matte_is_the_outputs_own_through_the_clips_glasses_decision(tmp_path, photo):
    """The walking clip's woman keeps her glasses on every frame (decided over her track's last second).
    The matte clip used to decide them on each frame alone, so it marked her rims as replaced on frames
    where the output kept them (matte 0.94-0.97 on the rims); the matte is now the output's own paste,
    the same in the alpha channel and in the separate clip."""
    import av

    from facecomp.cli import main
    from facecomp.faces.analyzer import FaceAnalyzer
    from facecomp.swap import masks

    (tmp_path / "o").mkdir()
    (tmp_path / "m").mkdir()
    out, matte = str(tmp_path / "o" / "f_%03d.png"), str(tmp_path / "m" / "m_%03d.png")
    assert main(["render", str(MEDIA / WALKING), "-o", out, "--source", str(photo), "--start", "30",
                 "--end", "41", "--quiet", "--matte-alpha", "--matte", matte, "--no-hands"]) == 0
    layers, mattes = _sequence(out.replace("%03d", "*")), _sequence(matte.replace("%03d", "*"))
    assert len(layers) == len(mattes) == 11
    with av.open(str(MEDIA / WALKING)) as c:
        frames = [f.to_ndarray(format="rgb24") for f in c.decode(video=0)]
    ts = FaceAnalyzer().analyze_clip(enumerate(frames))
    from facecomp.disclosure.stamp import Stamper

    x0, y0, x1, y1 = Stamper().label_box(*frames[0].shape[:2])
    rims_matte = []
    for k in range(11):
        j = 30 + k
        alpha, clip_matte = layers[k][..., 3].astype(np.int32), mattes[k][..., 0].astype(np.int32)
        outside = np.ones(alpha.shape, bool)
        outside[y0:y1, x0:x1] = False
        d = np.abs(alpha - clip_matte)[outside]
        assert d.max() <= 12 and d.mean() < 1.0  # the same matte but for each file's own watermark
        for face in ts.frames[j]:
            lm = np.asarray(face.landmarks, np.float32)
            shape = frames[j].shape[:2]
            band, rims = glasses_rims(frames[j], lm)
            hull = masks.hull_mask(lm, shape, 0.6) > 0.5
            assert clip_matte[hull & ~band].mean() > 0.8 * 255  # every face replaced
            rims_matte.append((face.track_id, float(clip_matte[rims].mean()) / 255))
    by_track: dict = {}
    for t, v in rims_matte:
        by_track.setdefault(t, []).append(v)
    # her rims are kept (0.21-0.28 of the matte: the black-hat's ramp and dilation), the bare woman's
    # darkest fifth is skin and replaced (0.83-0.88)
    assert min(max(v) for v in by_track.values()) < 0.4, by_track
    assert max(min(v) for v in by_track.values()) > 0.75, by_track


def test_matte_view_renders_the_matte_as_the_picture_and_refuses_what_contradicts_it(tmp_path, photo):
    """``--matte-view`` (the hosts' "Matte view"): the output is the matte clip itself, disclosed as any
    output; it needs a replacement and excludes --matte-alpha and a second matte clip."""
    from facecomp.cli import main
    from facecomp.disclosure.manifest import load_manifest, sidecar_path
    from facecomp.disclosure.stamp import Stamper

    clip = str(MEDIA / "grid_bbaf2n.mpg")
    for n in ("v", "m"):
        (tmp_path / n).mkdir()
    view, matte = str(tmp_path / "v" / "f_%03d.png"), str(tmp_path / "m" / "m_%03d.png")
    # a fixed id: the matte is flat black and white, where the watermark has half its room (see
    # test_swap_realism's matte clip test)
    assert main(["render", clip, "-o", view, "--source", str(photo), "--matte-view", "--end", "12", "--quiet",
                 "--manifest-id", "matte-view-test"]) == 0
    assert main(["render", clip, "-o", str(tmp_path / "pic.mp4"), "--source", str(photo), "--end", "12",
                 "--quiet", "--matte", matte]) == 0
    views, mattes = _sequence(view.replace("%03d", "*")), _sequence(matte.replace("%03d", "*"))
    assert len(views) == len(mattes) == 12
    x0, y0, x1, y1 = Stamper().label_box(288, 360)
    outside = np.ones((288, 360), bool)
    outside[y0:y1, x0:x1] = False
    for v, m in zip(views, mattes):
        d = np.abs(v.astype(int) - m.astype(int)).max(axis=2)[outside]
        assert d.max() <= 12 and d.mean() < 1.0  # the same matte, each with its own file's watermark
        assert (v[..., 0][outside] > 240).sum() > 5000
    man = load_manifest(sidecar_path(Path(view)))
    assert man["replacement"]["face_replaced"] and "matte_of" in man["settings"]["engine"]["processors"]["matte"]
    assert main(["verify", view]) == 0
    for extra in (["--matte-alpha"], ["--matte", str(tmp_path / "again.mov")]):
        out = tmp_path / "refused.mov"
        assert main(["render", clip, "-o", str(out), "--source", str(photo), "--matte-view", "--end", "2",
                     "--quiet", *extra]) == 2
        assert not list(tmp_path.glob("refused*")) and not list(tmp_path.glob("again*"))
    assert main(["render", clip, "-o", str(tmp_path / "none.mov"), "--matte-view", "--end", "2", "--quiet"]) == 2


def test_matte_in_alpha_multiplies_a_sources_own_alpha(tmp_path, photo):
    """An RGBA source (a keyed plate): the output's alpha is the matte times the source's alpha."""
    from PIL import Image

    from facecomp.cli import main
    from facecomp.faces.analyzer import analyze_image

    frames = _frames("grid_bbaf2n.mpg", 3)
    src_alpha = np.full(frames[0].shape[:2], 255, np.uint8)
    src_alpha[:, : frames[0].shape[1] // 2] = 128  # the left half half transparent
    (tmp_path / "in").mkdir()
    (tmp_path / "out").mkdir()
    for i, f in enumerate(frames):
        Image.fromarray(np.dstack([f, src_alpha]), "RGBA").save(tmp_path / "in" / f"f_{i:03d}.png")
    out = str(tmp_path / "out" / "o_%03d.png")
    assert main(["render", str(tmp_path / "in" / "f_%03d.png"), "-o", out, "--source", str(photo),
                 "--matte-alpha", "--quiet", "--manifest-id", "rgba-source-test"]) == 0
    layers = _sequence(out.replace("%03d", "*"))
    assert len(layers) == 3
    lm = analyze_image(frames[1])[0].landmarks
    a = layers[1][..., 3].astype(int)
    left_cheek, right_cheek = (int(v) for v in lm[205]), (int(v) for v in lm[425])
    (lx, ly), (rx, ry) = left_cheek, right_cheek
    assert min(lx, rx) < frames[0].shape[1] // 2 < max(lx, rx)  # one cheek in each half
    lo, hi = (a[ly, lx], a[ry, rx]) if lx < rx else (a[ry, rx], a[ly, lx])
    assert hi >= 250 and 120 <= lo <= 130, (lo, hi)  # replaced: 1 x the source's alpha
    assert a[-20:, -40:].max() == 0 and a[-20:, :40].max() == 0  # not replaced: 0, whatever the source's


def test_matte_in_alpha_through_a_host_session_straight_and_premultiplied(photo):
    """A host's clip session (what the render server runs for the OpenFX bridge): RGBA frames get the
    matte in alpha, premultiplied ones the layer premultiplied by it; RGB frames, or a fourth channel the
    host says is not alpha, are refused with what to do."""
    from facecomp.effect import Engine
    from facecomp.errors import SettingsError
    from facecomp.faces.analyzer import analyze_image
    from facecomp.settings import EffectSettings

    rgb = _frames("grid_bbaf2n.mpg", 1)[0]
    rgba = np.dstack([rgb, np.full(rgb.shape[:2], 255, np.uint8)])
    cx, cy = (int(v) for v in analyze_image(rgb)[0].landmarks[5])
    layered = Engine.from_settings(EffectSettings.from_dict({"source": [str(photo)], "matte_alpha": True}))
    with layered.open_clip(None, "host-matte") as s:
        straight = np.array(s.render(rgba.copy(), 0, 0.0, alpha="straight").pixels)
        premult = np.array(s.render(rgba.copy(), 0, 0.0, alpha="premultiplied").pixels)
        for bad, mode in ((rgb.copy(), "straight"), (rgba.copy(), "none")):
            with pytest.raises(SettingsError, match="Matte in alpha") as e:
                s.render(bad, 0, 0.0, alpha=mode)
            assert "Matte view" in str(e.value)  # what to do instead
    a = straight[..., 3].astype(np.float32) / 255.0
    assert a[cy, cx] == 1.0 and a[-30:, -60:].max() == 0.0
    assert np.array_equal(premult[..., 3], straight[..., 3])
    # premultiplied: colour = the straight layer x the new alpha (the watermark is scaled with it too)
    want = straight[..., :3].astype(np.float32) * a[..., None]
    from facecomp.disclosure.stamp import Stamper

    x0, y0, x1, y1 = Stamper().label_box(*rgb.shape[:2])
    outside = np.ones(rgb.shape[:2], bool)
    outside[y0:y1, x0:x1] = False
    d = np.abs(premult[..., :3].astype(np.float32) - want).max(axis=2)[outside]
    assert d.max() <= 4.0 and d.mean() < 0.5, (float(d.max()), float(d.mean()))
    assert premult[..., :3][-30:, -60:].max() <= 1  # transparent: no colour left
