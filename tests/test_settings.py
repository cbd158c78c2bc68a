"""The effect as data: one declaration (facecomp.spec) drives the CLI, OpenFX, Blender and the job
schema; settings are frozen values in JSON/TOML files; a render from a settings file equals the same
render from flags, and a fixed manifest id makes renders reproducible (1 or several workers)."""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import pickle

import cv2
import jsonschema
import numpy as np
import pytest

from facecomp import spec
from facecomp.cli import main
from facecomp.disclosure.label import MIN_OPACITY
from facecomp.disclosure.manifest import load_manifest
from facecomp.errors import DisclosureError, ModelDownloadError, OutputError, SettingsError
from facecomp.render.clip import RenderSettings, render_clip
from facecomp.settings import SCHEMA, EffectSettings, load_settings, save_settings, upgrade
from facecomp.spec import PARAMS, Param
from facecomp.video.encode import EncodeSettings

from mediagen import decode_all, write_clip

# every effect flag `facecomp render` had before the spec existed: none may be lost
OLD_EFFECT_FLAGS = (
    "--source", "--model", "--arcface", "--faces", "--reference", "--color", "--blend", "--provider",
    "--mask-erode", "--mask-feather", "--mask-forehead", "--keep-mouth", "--no-keep-mouth", "--keep-eyes",
    "--no-keep-eyes", "--color-smoothing", "--dfm-morph", "--detect-every", "--label-corner", "--label-scale",
    "--label-opacity", "--label-text", "--label-extra-line", "--producer", "--propagator", "--codec", "--crf",
    "--preset", "--bit-depth", "--alpha", "--no-alpha", "--encoder-option",
)


def _render_parser() -> argparse.ArgumentParser:
    from facecomp.cli import cmd_render

    p = argparse.ArgumentParser()
    cmd_render.add_arguments(p)
    return p


@pytest.fixture
def photo(tmp_path):
    p = tmp_path / "me.png"
    cv2.imwrite(str(p), np.full((64, 64, 3), 90, np.uint8))
    return p


# ---------------------------------------------------------------------------------- values and files

def _rich(photo) -> EffectSettings:
    return EffectSettings.from_dict({
        "source": [str(photo)], "faces": "largest", "color": "mkl", "mask_feather": 0.08, "keep_eyes": False,
        "label_corner": "bottom-right", "label_scale": 1.5, "label_extra_line": "AI合成", "producer": "studio-7",
        "crf": 20, "bit_depth": 10, "alpha": False, "encoder_options": {"tune": "film", "x264-params": "aq-mode=2"},
        "detect_every": 3, "small_faces": True,
    })


def test_round_trip_dict_json_toml(tmp_path, photo):
    s = _rich(photo)
    d = s.to_dict()
    assert d["schema"] == SCHEMA and "provider" not in d  # only what differs from the defaults
    assert json.loads(json.dumps(d)) == d
    assert EffectSettings.from_dict(d) == s
    for name in ("s.json", "s.toml"):
        path = save_settings(s, tmp_path / name)
        again = load_settings(path)
        assert again == s and hash(again) == hash(s)
        assert not list(tmp_path.glob(f".{name}.*"))  # the temporary file was renamed
        assert path.stat().st_mode & 0o777 == 0o666 & ~_umask()  # follows the umask, as the video does
    assert 'label_extra_line = "AI合成"' in (tmp_path / "s.toml").read_text(encoding="utf-8")
    assert EffectSettings().to_dict() == {"schema": SCHEMA}


def _umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def test_settings_are_frozen_and_hashable(photo):
    s = _rich(photo)
    with pytest.raises(AttributeError):
        s.crf = 30
    cache = {s: "engine"}
    assert cache[_rich(photo)] == "engine"
    assert pickle.loads(pickle.dumps(s)) == s  # travels to queue workers and Ray tasks
    t = s.replace(crf=30)
    assert t.crf == 30 and s.crf == 20 and t != s
    with pytest.raises(SettingsError, match="label_scale"):
        s.replace(label_scale=0.5)
    # the parts the renderer takes
    assert s.encode == EncodeSettings(crf=20, bit_depth=10, alpha=False,
                                      options={"x264-params": "aq-mode=2", "tune": "film"})
    assert s.label.corner == "bottom-right" and s.label.scale == 1.5 and s.identity.content_producer == "studio-7"


def test_encode_options_are_frozen():
    a = EncodeSettings(options={"b": "2", "a": 1})
    b = EncodeSettings(options=(("a", "1"), ("b", "2")))
    assert a == b and hash(a) == hash(b) and a.options == (("a", "1"), ("b", "2"))
    assert a.to_dict()["options"] == {"a": "1", "b": "2"}
    with pytest.raises(SettingsError):
        EncodeSettings(options=5)


def test_relative_paths_resolve_against_the_settings_file(tmp_path, photo):
    sub = tmp_path / "job"
    sub.mkdir()
    (sub / "face.png").write_bytes(photo.read_bytes())
    (sub / "s.toml").write_text('schema = "facecomp.effect/1"\nsource = ["face.png"]\n')
    s = load_settings(sub / "s.toml")
    assert s.source == (str(sub / "face.png"),)
    (sub / "bad.json").write_text(json.dumps({"reference": ["nobody.png"]}))
    with pytest.raises(SettingsError, match="'reference'.*no such file") as e:
        load_settings(sub / "bad.json")
    assert "nobody.png" in str(e.value)


@pytest.mark.parametrize("d, key", [
    ({"colour": "rct"}, "colour"),  # unknown key
    ({"label_offset": 3}, "label_offset"),  # unknown, not a way to hide the label
    ({"crf": "18"}, "crf"),  # wrong type
    ({"crf": 18.5}, "crf"),
    ({"detect_every": 0}, "detect_every"),  # out of range
    ({"color_smoothing": 0.995}, "color_smoothing"),
    ({"color": "sepia"}, "color"),  # bad choice
    ({"bit_depth": 12}, "bit_depth"),
    ({"faces": "track:one"}, "faces"),
    ({"keep_mouth": "yes"}, "keep_mouth"),
    ({"lip_detail": 1.5}, "lip_detail"),
    ({"lip_motion": -0.1}, "lip_motion"),
    ({"source": "/no/such/photo.png"}, "source"),  # path that does not exist
    ({"model": 5}, "model"),
    ({"encoder_options": {"tune": ["film"]}}, "encoder_options"),
    ({"encoder_options": ["tune=film"]}, "encoder_options"),
])
def test_refusals_name_the_key(d, key):
    with pytest.raises(SettingsError) as e:
        EffectSettings.from_dict(d)
    assert repr(key) in str(e.value)
    if key == "label_offset":
        assert not isinstance(e.value, DisclosureError)


def test_host_text_fields(tmp_path, photo):
    """OpenFX/Blender text fields: empty means not set; one path or KEY=VALUE per line."""
    other = tmp_path / "other.png"
    other.write_bytes(photo.read_bytes())
    s = EffectSettings.from_dict({"model": "", "label_extra_line": " ", "source": f"{photo}\n\n{other}\n",
                                  "encoder_options": "tune=film\n g=12 \n"})
    assert s.model is None and s.label_extra_line is None and s.source == (str(photo), str(other))
    assert dict(s.encoder_options) == {"tune": "film", "g": "12"}
    with pytest.raises(SettingsError, match="'encoder_options'.*KEY=VALUE"):
        EffectSettings.from_dict({"encoder_options": "tune"})
    with pytest.raises(DisclosureError, match="'label_text'"):
        EffectSettings.from_dict({"label_text": ""})  # the label's text has a default and cannot be blanked


@pytest.mark.parametrize("d", [{"label_scale": 0.5}, {"label_opacity": MIN_OPACITY - 0.01},
                               {"label_text": "just a face"}, {"label_enabled": False}, {"hide_label": True},
                               {"no-label": True}])
def test_the_label_cannot_be_hidden_or_shrunk(d):
    with pytest.raises(DisclosureError) as e:
        EffectSettings.from_dict(d)
    assert repr(next(iter(d))) in str(e.value)


def test_upgrade_maps_older_versions_forward_and_refuses_newer(tmp_path):
    old = {"schema": "facecomp.effect/0", "label-corner": "top-right", "color-smoothing": 0.5,
           "encoder-option": ["tune=film", "g=12"]}
    assert upgrade(old) == {"schema": SCHEMA, "label_corner": "top-right", "color_smoothing": 0.5,
                            "encoder_options": {"tune": "film", "g": "12"}}
    (tmp_path / "old.json").write_text(json.dumps(old))
    s = load_settings(tmp_path / "old.json")
    assert s.label_corner == "top-right" and dict(s.encoder_options) == {"tune": "film", "g": "12"}
    assert upgrade({"crf": 20}) == {"crf": 20, "schema": SCHEMA}  # no schema key: the current one
    with pytest.raises(SettingsError, match="newer facecomp"):
        upgrade({"schema": "facecomp.effect/2"})
    with pytest.raises(SettingsError, match="'schema'"):
        upgrade({"schema": "facecomp.job/1"})
    with pytest.raises(SettingsError, match="KEY=VALUE"):
        upgrade({"schema": "facecomp.effect/0", "encoder-option": ["tune"]})


def test_bad_settings_files_are_clear_errors(tmp_path):
    (tmp_path / "a.json").write_text("{not json")
    (tmp_path / "b.toml").write_text("crf = = 3")
    (tmp_path / "c.yaml").write_text("crf: 3")
    for name, msg in (("a.json", "not valid JSON"), ("b.toml", "not valid TOML"), ("c.yaml", ".json or .toml"),
                      ("missing.json", "not found")):
        with pytest.raises(SettingsError, match=msg) as e:
            load_settings(tmp_path / name)
        assert name in str(e.value)


# ----------------------------------------------------------------------- one declaration, every host

def test_every_old_flag_is_still_there_and_every_param_has_its_flag():
    flags = {s for a in _render_parser()._actions for s in a.option_strings}
    assert set(OLD_EFFECT_FLAGS) <= flags
    assert {p.flag for p in PARAMS if "cli" in p.hosts} <= flags
    # run options are not part of the effect
    assert not {"start", "end", "workers", "float", "output", "progress"} & {p.name for p in PARAMS}


def test_flags_override_a_settings_file_only_where_given(tmp_path, photo):
    from facecomp.cli.cmd_render import effect_settings_from_args

    path = save_settings(_rich(photo), tmp_path / "s.json")
    p = _render_parser()
    base = effect_settings_from_args(p.parse_args(["in.mp4", "-o", "o.mp4", "--settings", str(path)]))
    assert base == _rich(photo).with_absolute_paths()
    over = effect_settings_from_args(p.parse_args(["in.mp4", "-o", "o.mp4", "--settings", str(path),
                                                   "--label-corner", "top-left", "--keep-eyes",
                                                   "--encoder-option", "g=12"]))
    assert over.label_corner == "top-left" and over.keep_eyes is True
    assert dict(over.encoder_options) == {"tune": "film", "x264-params": "aq-mode=2", "g": "12"}
    assert over.replace(label_corner=base.label_corner, keep_eyes=False, encoder_options=base.encoder_options) == base
    # no settings file and no flags: the defaults
    assert effect_settings_from_args(p.parse_args(["in.mp4", "-o", "o.mp4"])) == EffectSettings()


def test_spec_ofx_json_label_can_only_be_moved_or_enlarged(capsys):
    assert main(["spec", "--ofx-json"]) == 0
    params = {d["name"]: d for d in json.loads(capsys.readouterr().out)}
    scale = params["label_scale"]
    assert scale["type"] == "double" and scale["min"] == 1.0 and scale["default"] == 1.0
    assert params["label_opacity"]["min"] >= MIN_OPACITY
    label = {n for n in params if "label" in n}
    assert label == {"label_corner", "label_scale", "label_opacity", "label_text", "label_extra_line"}
    assert not any(d["type"] == "boolean" and "label" in n for n, d in params.items())
    corner = params["label_corner"]
    assert corner["type"] == "choice" and corner["options"][corner["default"]] == "top-left"
    keep = params["keep_mouth"]  # automatic by default: a choice whose values say what each entry means
    assert keep["type"] == "choice" and keep["values"] == [None, True, False] and keep["default"] == 0
    assert params["source"]["string_mode"] == "multi" and params["model"]["string_mode"] == "file"
    assert "codec" not in params  # the host encodes, not facecomp


def test_spec_json_and_job_schema_validate_settings(capsys, photo):
    assert main(["spec", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["schema"] == SCHEMA and [p["name"] for p in out["params"]] == [p.name for p in PARAMS]
    schema = out["settings_schema"]
    jsonschema.Draft202012Validator.check_schema(schema)
    jsonschema.validate(_rich(photo).to_dict(), schema)
    for bad in ({"colour": "rct"}, {"label_scale": 0.5}, {"crf": "18"}, {"faces": "track:x"}, {"schema": "x"}):
        with pytest.raises(jsonschema.ValidationError):
            jsonschema.validate(bad, schema)


def test_spec_command_prints_each_form(capsys):
    assert main(["spec", "--blender-json"]) == 0
    assert json.loads(capsys.readouterr().out) == json.loads(json.dumps(spec.blender_properties()))
    assert main(["spec", "--schema"]) == 0
    assert json.loads(capsys.readouterr().out) == spec.settings_json_schema(schema=SCHEMA)
    assert main(["spec"]) == 0
    table = capsys.readouterr().out
    assert SCHEMA in table and all(p.name in table for p in PARAMS)


def test_blender_properties_as_data():
    props = {d["name"]: d for d in spec.blender_properties()}
    assert props["model"]["type"] == "StringProperty" and props["model"]["kwargs"]["subtype"] == "FILE_PATH"
    assert props["label_scale"]["type"] == "FloatProperty" and props["label_scale"]["kwargs"]["min"] == 1.0
    color = props["color"]
    assert color["type"] == "EnumProperty" and color["kwargs"]["default"] == "rct"
    assert [i[0] for i in color["kwargs"]["items"]] == ["none", "rct", "lct", "mkl", "idt"]
    assert props["keep_mouth"]["values"] == {"AUTO": None, "ON": True, "OFF": False}
    crf = props["crf"]  # automatic by default; 0 is a real CRF, so automatic is shown as -1
    assert crf["type"] == "IntProperty" and crf["none_value"] == -1 and crf["kwargs"]["max"] == 51
    json.dumps(list(props.values()))  # plain data


def test_a_param_added_once_appears_everywhere():
    extra = PARAMS + (Param("grain", "float", 0.0, minimum=0.0, maximum=1.0, group="color",
                            help="film grain over the replaced face"),)
    p = argparse.ArgumentParser()
    spec.add_arguments(p, params=extra)
    assert spec.values_from_args(p.parse_args(["--grain", "0.25"]), extra) == {"grain": 0.25}
    assert spec.values_from_args(p.parse_args([]), extra) == {}  # only flags actually given
    ofx = {d["name"]: d for d in spec.ofx_descriptors(extra)}
    assert ofx["grain"]["type"] == "double" and ofx["grain"]["max"] == 1.0
    blender = {d["name"]: d for d in spec.blender_properties(extra)}
    assert blender["grain"]["type"] == "FloatProperty" and blender["grain"]["kwargs"]["max"] == 1.0
    schema = spec.settings_json_schema(extra)
    assert schema["properties"]["grain"]["maximum"] == 1.0
    jsonschema.validate({"grain": 0.5}, schema)
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate({"grain": 2}, schema)
    assert "grain" not in spec.settings_json_schema()["properties"]


def test_lip_detail_reaches_the_blend_and_every_host(shared_media):
    """The lip-sync strength is a user setting (dubbing wants the target's speech, others the source's
    lips): the flag, the OFX and Blender descriptors and the engine's mask all carry the same value."""
    from facecomp.effect import Engine

    photo = shared_media / "grace_hopper.jpg"  # the morph needs a real face to build its texture
    p = argparse.ArgumentParser()
    spec.add_arguments(p)
    assert spec.values_from_args(p.parse_args(["--lip-detail", "0.25"])) == {"lip_detail": 0.25}
    assert {d["name"]: d for d in spec.ofx_descriptors()}["lip_detail"]["max"] == 1.0
    assert {d["name"]: d for d in spec.blender_properties()}["lip_detail"]["kwargs"]["default"] == 1.0
    for value in (0.0, 0.25, 1.0):
        engine = Engine.from_settings(EffectSettings(source=(photo,), lip_detail=value))
        try:
            assert engine.processors[0].settings.mask.lip_detail == value
        finally:
            engine.close()


def test_lip_motion_reaches_the_blend_and_every_host(shared_media):
    """The lip motion (the target's change below the mouth, opt-in: it costs likeness on small, moving
    faces) is a user setting like the lip detail: flag, OFX and Blender descriptors, the engine's mask."""
    from facecomp.effect import Engine

    photo = shared_media / "grace_hopper.jpg"
    p = argparse.ArgumentParser()
    spec.add_arguments(p)
    assert spec.values_from_args(p.parse_args(["--lip-motion", "0.7"])) == {"lip_motion": 0.7}
    assert spec.values_from_args(p.parse_args([])).get("lip_motion", 0.0) == 0.0
    assert {d["name"]: d for d in spec.ofx_descriptors()}["lip_motion"]["max"] == 1.0
    assert {d["name"]: d for d in spec.blender_properties()}["lip_motion"]["kwargs"]["default"] == 0.0
    for value in (0.0, 0.7):
        engine = Engine.from_settings(EffectSettings(source=(photo,), lip_motion=value))
        try:
            assert engine.processors[0].settings.mask.lip_motion == value
        finally:
            engine.close()


def test_detail_match_reaches_the_blend_and_every_host(shared_media):
    """How far the face's fine contrast is brought to the target's is a user setting, off by default (the
    renders of earlier versions stay as they were): flag, descriptors and the engine's blend agree."""
    from facecomp.effect import Engine

    photo = shared_media / "grace_hopper.jpg"
    p = argparse.ArgumentParser()
    spec.add_arguments(p)
    assert spec.values_from_args(p.parse_args(["--detail-match", "0.5"])) == {"detail_match": 0.5}
    assert {d["name"]: d for d in spec.ofx_descriptors()}["detail_match"]["max"] == 1.0
    assert {d["name"]: d for d in spec.blender_properties()}["detail_match"]["kwargs"]["default"] == 0.0
    with pytest.raises(SettingsError):
        EffectSettings(detail_match=1.5)
    for value in (0.0, 0.5, 1.0):
        engine = Engine.from_settings(EffectSettings(source=(photo,), detail_match=value))
        try:
            assert engine.processors[0].blender.settings.detail_match == value
        finally:
            engine.close()


def test_glasses_paint_reaches_the_texture_and_every_host(shared_media):
    """How much of the paint over the source photo's glasses is drawn is a user setting, all of it by
    default (the renders of earlier versions stay as they were): flag, descriptors and the engine's
    texture agree, and the texture's report (the manifest's settings) says which was used."""
    from facecomp.effect import Engine

    photo = shared_media / "grace_hopper.jpg"
    p = argparse.ArgumentParser()
    spec.add_arguments(p)
    assert spec.values_from_args(p.parse_args(["--glasses-paint", "0"])) == {"glasses_paint": 0.0}
    assert {d["name"]: d for d in spec.ofx_descriptors()}["glasses_paint"]["default"] == 1.0
    assert {d["name"]: d for d in spec.blender_properties()}["glasses_paint"]["kwargs"]["min"] == 0.0
    with pytest.raises(SettingsError):
        EffectSettings(glasses_paint=-0.5)
    for value in (1.0, 0.0):
        engine = Engine.from_settings(EffectSettings(source=(photo,), glasses_paint=value))
        try:
            report = engine.processors[0].swapper.settings_dict()["texture"]
            assert report["glasses_paint"] == value and report["glasses_removed_share"][0] > 0.1
        finally:
            engine.close()


def test_spec_choices_match_the_components():
    from facecomp.disclosure.label import CORNERS
    from facecomp.swap import color, providers
    from facecomp.video.encode import CODECS

    m = spec.param_map()
    assert m["color"].choices == color.MODES and m["provider"].choices == providers.PROVIDER_CHOICES
    assert set(m["codec"].choices) == set(CODECS) and m["label_corner"].choices == CORNERS
    d = EffectSettings()
    from facecomp.faces.analyzer import FaceSettings
    from facecomp.swap.masks import MaskSettings
    from facecomp.swap.processor import BlendSettings

    assert (d.mask_erode, d.mask_feather, d.mask_forehead) == (MaskSettings().erode, MaskSettings().feather,
                                                              MaskSettings().forehead)
    assert d.detect_every == FaceSettings().detect_every and d.color_smoothing == BlendSettings().color_smoothing


# ---------------------------------------------------------------------------- renders, -y, manifest id

@pytest.fixture(scope="module")
def face_clip(tmp_path_factory):
    from facecomp.faces import bench as fbench
    from test_perf_paths import face_frames

    try:
        astro = fbench.load_reference()
    except ModelDownloadError as exc:
        pytest.skip(f"models/samples cannot be fetched: {exc}")
    d = tmp_path_factory.mktemp("settings_clip")
    clip = write_clip(d / "in.mp4", w=320, h=240, n=8, frames=face_frames(astro, 8),
                      options={"preset": "ultrafast", "crf": "12"})
    photo = d / "source.png"
    cv2.imwrite(str(photo), cv2.cvtColor(astro, cv2.COLOR_RGB2BGR))
    return clip, photo


def _frame_hashes(path) -> list[str]:
    return [hashlib.sha256(f.tobytes()).hexdigest() for f in decode_all(path)]


def test_settings_file_render_equals_flags_render_and_is_reproducible(tmp_path, face_clip):
    clip, photo = face_clip
    mid = "job-42/shot-7"
    flags = ["--source", str(photo), "--color", "mkl", "--mask-feather", "0.08", "--label-corner", "bottom-right",
             "--crf", "20", "--preset", "ultrafast", "--detect-every", "3"]
    saved = tmp_path / "used.toml"
    a = tmp_path / "a.mp4"
    assert main(["render", str(clip), "-o", str(a), *flags, "--manifest-id", mid, "--workers", "1",
                 "--save-settings", str(saved), "--quiet"]) == 0
    s = load_settings(saved)
    assert s == EffectSettings(source=(str(photo.resolve()),), color="mkl", mask_feather=0.08,
                               label_corner="bottom-right", crf=20, preset="ultrafast", detect_every=3)
    outs = {}
    for name, workers in (("b", "1"), ("c", "3"), ("d", "3")):
        outs[name] = tmp_path / f"{name}.mp4"
        assert main(["render", str(clip), "-o", str(outs[name]), "--settings", str(saved), "--manifest-id", mid,
                     "--workers", workers, "--quiet"]) == 0
    want = _frame_hashes(a)
    assert len(want) == 8
    for name, out in outs.items():
        assert _frame_hashes(out) == want, f"render {name} differs from the render from flags"
        assert load_manifest(out)["id"] == mid
    man = load_manifest(a)
    assert man["id"] == mid and man["replacement"]["face_replaced"]  # a face was really replaced
    # the same settings without the fixed id: another watermark, so other frames
    e = tmp_path / "e.mp4"
    assert main(["render", str(clip), "-o", str(e), "--settings", str(saved), "--quiet"]) == 0
    assert load_manifest(e)["id"] != mid and _frame_hashes(e) != want


def test_existing_output_is_refused_unless_overwrite(tmp_path, capsys):
    clip = write_clip(tmp_path / "in.mp4", n=3)
    out = tmp_path / "o.mp4"
    assert main(["render", str(clip), "-o", str(out), "--manifest-id", "first", "--quiet"]) == 0
    before = out.read_bytes()
    assert main(["render", str(clip), "-o", str(out), "--manifest-id", "second", "--quiet"]) == OutputError.exit_code
    err = capsys.readouterr().err
    assert "exists" in err and "-y" in err and "o.mp4" in err
    assert out.read_bytes() == before and load_manifest(out)["id"] == "first"  # nothing was touched
    assert main(["render", str(clip), "-o", str(out), "--manifest-id", "second", "-y", "--quiet"]) == 0
    assert load_manifest(out)["id"] == "second"
    # a manifest left alone counts too, and a frame of an image sequence
    lone = tmp_path / "lone.mp4"
    (tmp_path / "lone.mp4.synthetic.json").write_text("{}")
    with pytest.raises(OutputError, match="synthetic.json"):
        render_clip(clip, lone, settings=RenderSettings())
    seq = tmp_path / "seq"
    seq.mkdir()
    (seq / "f_00002.png").write_bytes(b"old")
    with pytest.raises(OutputError, match="f_00002.png"):
        render_clip(clip, seq / "f_%05d.png", settings=RenderSettings())
    render_clip(clip, seq / "f_%05d.png", settings=RenderSettings(overwrite=True))
    assert (seq / "f_00002.png").read_bytes()[:4] == b"\x89PNG"
    # --save-settings does not replace a file either
    (tmp_path / "s.json").write_text("{}")
    assert main(["render", str(clip), "-o", str(tmp_path / "p.mp4"), "--save-settings", str(tmp_path / "s.json"),
                 "--quiet"]) == OutputError.exit_code
    assert (tmp_path / "s.json").read_text() == "{}" and not (tmp_path / "p.mp4").exists()


@pytest.mark.parametrize("mid", ["", " padded", "line\nbreak", "x" * 129, "tab\there"])
def test_manifest_id_is_checked(mid):
    with pytest.raises(SettingsError, match="manifest id"):
        RenderSettings(manifest_id=mid)


def test_bad_manifest_id_and_settings_file_are_cli_errors(tmp_path, capsys):
    clip = write_clip(tmp_path / "in.mp4", n=2)
    assert main(["render", str(clip), "-o", str(tmp_path / "o.mp4"), "--manifest-id", "a\tb", "--quiet"]) == 2
    (tmp_path / "s.json").write_text(json.dumps({"label_scale": 9}))
    assert main(["render", str(clip), "-o", str(tmp_path / "o.mp4"), "--settings", str(tmp_path / "s.json"),
                 "--quiet"]) == DisclosureError.exit_code
    err = capsys.readouterr().err
    assert "label_scale" in err and "s.json" in err and "Traceback" not in err
    assert not (tmp_path / "o.mp4").exists()


def test_track_overlay_follows_the_overwrite_convention(tmp_path, capsys):
    clip = write_clip(tmp_path / "in.mp4", n=3)
    out = tmp_path / "overlay.mp4"
    out.write_bytes(b"mine")
    assert main(["track", str(clip), "-o", str(out), "--quiet"]) == OutputError.exit_code
    assert "-y" in capsys.readouterr().err and out.read_bytes() == b"mine"
    assert main(["track", str(clip), "-o", str(out), "-y", "--quiet"]) == 0
    assert len(decode_all(out)) == 3 and load_manifest(out)["replacement"]["frames_total"] == 3
