"""The Blender extension: its pure functions, the packaged zip, and the real bpy 5.0 wheel headless.

bpy is heavy and process-global (preferences, registered classes), so every bpy scenario runs in its own
Python process with HOME in a temporary folder: install the built zip, enable it, build a scene with a
real face clip, run the operator, and report what Blender then holds; the frames are checked here.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
from facecomp.hosts import bake
from facecomp.hosts.blender import package

sys.path.insert(0, str(Path(__file__).resolve().parent))
from test_resolve import HEADPOSE, PHOTO, assert_baked

EXT = Path(package.__file__).resolve().parent / "extension"


def _load(name, path):
    spec = importlib.util.spec_from_file_location(name, path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


logic = _load("facecomp_blender_logic", EXT / "logic.py")  # no bpy in it: importable anywhere


# ------------------------------------------------------------------------------------------------
# pure functions


def test_used_source_range_follows_offsets_trims_and_rate():
    # strip at frame 10, 7 frames trimmed at the head, handles at 17..35: source frames 7..25
    assert logic.used_source_range(10, 17, 35, native_frames=75) == (7, 25)
    assert logic.used_source_range(-5, 0, 20, native_frames=75) == (5, 25)  # starts before frame 0
    assert logic.used_source_range(10, 10, 100, native_frames=75) == (0, 75)  # hold past the end: clamped
    assert logic.used_source_range(0, 12, 36, native_frames=100, rate=0.5) == (6, 18)
    assert logic.playback_rate(75, 75) == 1.0 and logic.playback_rate(75, 72) == pytest.approx(75 / 72)
    with pytest.raises(ValueError):
        logic.used_source_range(0, 80, 90, native_frames=75)


def test_strip_collections_of_blender_4_and_5():
    class Editor42:
        sequences, sequences_all = ["top"], ["top", "inside meta"]

    class Editor50:
        strips, strips_all = [], ["inside meta"]  # an empty collection still counts

    assert logic.strip_collection(Editor42()) == ["top"] and logic.all_strips(Editor42()) == ["top", "inside meta"]
    assert logic.strip_collection(Editor50()) == [] and logic.all_strips(Editor50()) == ["inside meta"]


def test_free_channel_above_skips_occupied_ranges():
    occupied = [(2, 10, 30), (3, 0, 12), (4, 40, 50)]
    assert logic.free_channel_above(occupied, 2, 10, 30) == 4
    assert logic.free_channel_above(occupied, 2, 12, 30) == 3  # touching ends do not overlap
    assert logic.progress_percent(1, 4, 0.5) == pytest.approx(37.5)


def test_widget_values_become_settings():
    props = [{"name": "source", "type": "StringProperty", "kwargs": {}},
             {"name": "model", "type": "StringProperty", "kwargs": {}, "none_value": ""},
             {"name": "keep_mouth", "type": "EnumProperty", "kwargs": {}, "values": {"AUTO": None, "ON": True}},
             {"name": "label_scale", "type": "FloatProperty", "kwargs": {}},
             {"name": "crf", "type": "IntProperty", "kwargs": {}, "none_value": -1},
             {"name": "encoder_options", "type": "StringProperty", "kwargs": {}}]
    kinds = {"source": "paths", "model": "path", "keep_mouth": "bool", "label_scale": "float", "crf": "int",
             "encoder_options": "options"}
    widgets = {"source": "//a.jpg; /b.png", "model": "", "keep_mouth": "ON", "label_scale": 1.5, "crf": -1,
               "encoder_options": "tune=film"}
    got = logic.settings_values(props, kinds, widgets.get, lambda p: p.replace("//", "/blend/"))
    assert got == {"source": ["/blend/a.jpg", "/b.png"], "keep_mouth": True, "label_scale": 1.5,
                   "encoder_options": {"tune": "film"}}
    with pytest.raises(ValueError):
        logic.settings_values(props[-1:], kinds, {"encoder_options": "nokey"}.get)


def test_engine_command_progress_and_settings_document(tmp_path):
    cmd = bake.render_command("/x/facecomp", "in.mp4", "out.mp4", "s.json", "ID", 7, 25)
    assert cmd == ["/x/facecomp", "render", "in.mp4", "-o", "out.mp4", "--settings", "s.json", "--manifest-id",
                   "ID", "-y", "--start", "7", "--end", "25", "--progress", "json"]
    ev = bake.parse_progress_line('{"event": "progress", "done": 3, "total": 12, "rate": 4.0}\n')
    assert (ev.event, ev.done, ev.total, ev.fraction) == ("progress", 3, 12, 0.25)
    assert bake.parse_progress_line("INFO: Created TensorFlow Lite XNNPACK delegate") is None
    assert bake.parse_progress_line("{not json") is None
    params = [{"name": "source", "kind": "paths", "default": []},
              {"name": "label_scale", "kind": "float", "default": 1.0}]
    assert bake.settings_document({"source": "a.jpg", "label_scale": 1.0}, params) == {
        "source": ["a.jpg"], "schema": "facecomp.effect/1"}
    with pytest.raises(bake.BakeError):
        bake.settings_document({"label_off": True}, params)


def test_engine_is_found_by_setting_env_path_then_venv(tmp_path):
    exe = tmp_path / "venv" / "bin" / "facecomp"
    exe.parent.mkdir(parents=True)
    exe.write_text("#!/bin/sh\n")
    exe.chmod(0o755)
    assert bake.find_executable(str(exe), env={}) == str(exe)
    assert bake.find_executable("", env={"FACECOMP_EXECUTABLE": str(exe.parent)}) == str(exe)
    assert bake.find_executable("", env={"PATH": str(exe.parent)}) == str(exe)
    home = tmp_path / "home"
    (home / ".venv" / "bin").mkdir(parents=True)
    shutil.copy(exe, home / ".venv" / "bin" / "facecomp")
    assert bake.find_executable("", env={"PATH": ""}, home=str(home)) == str(home / ".venv" / "bin" / "facecomp")
    with pytest.raises(bake.EngineNotFound, match="not an executable"):
        bake.find_executable(str(tmp_path / "missing"), env={})
    with pytest.raises(bake.EngineNotFound, match="not found"):
        bake.find_executable("", env={"PATH": ""}, home=str(tmp_path / "empty"))


# ------------------------------------------------------------------------------------------------
# the package


@pytest.fixture(scope="module")
def ext_zip(tmp_path_factory):
    pytest.importorskip("bpy")  # its wheel ships blender_ext.py, which builds and validates the zip
    return package.build(tmp_path_factory.mktemp("ext"))


def test_package_is_a_valid_extension_generated_from_the_declaration(ext_zip):
    from facecomp import __version__, spec

    with zipfile.ZipFile(ext_zip) as zf:
        names = set(zf.namelist())
        manifest = zf.read("blender_manifest.toml").decode()
        init = zf.read("__init__.py").decode()
        params_src = zf.read("_params.py").decode()
        bake_src = zf.read("_bake.py").decode()
    assert {"__init__.py", "operators.py", "panel.py", "properties.py", "preferences.py", "logic.py"} <= names
    assert 'id = "facecomp"' in manifest and f'version = "{__version__}"' in manifest
    assert 'blender_version_min = "4.2.0"' in manifest and "[permissions]" in manifest and "files = " in manifest
    assert "bl_info" not in init
    ns: dict = {}
    exec(compile(params_src, "_params.py", "exec"), ns)
    expected = spec.blender_properties()
    for entry in expected:  # photo lists get a file browser for their first path
        if entry["name"] in ("source", "reference"):
            entry["kwargs"]["subtype"] = "FILE_PATH"
    assert ns["PROPERTIES"] == expected
    by_name = {p["name"]: p for p in ns["PROPERTIES"]}
    assert by_name["label_scale"]["kwargs"]["min"] == 1.0  # the label can be enlarged, never shrunk
    assert by_name["source"]["kwargs"]["subtype"] == "FILE_PATH"
    assert {"source", "model", "faces", "reference", "color", "blend", "label_corner"} <= set(by_name)
    assert bake_src == (Path(bake.__file__)).read_text()


# ------------------------------------------------------------------------------------------------
# real bpy, one process per scenario

_PRELUDE = r"""
import json, os, sys, time
import bpy
args = json.loads(os.environ["FACECOMP_TEST_ARGS"])
out = {}
res = bpy.ops.extensions.package_install_files(filepath=args["zip"], repo="user_default", enable_on_install=True)
MOD = "bl_ext.user_default.facecomp"
out["installed"] = "FINISHED" in res and MOD in bpy.context.preferences.addons
prefs = bpy.context.preferences.addons[MOD].preferences
prefs.executable = args.get("executable", "")
prefs.output_dir = args["out_dir"]
scene = bpy.context.scene
scene.render.fps, scene.render.fps_base = 25, 1.0
ed = scene.sequence_editor_create()
strips = ed.strips if hasattr(ed, "strips") else ed.sequences
src = strips.new_movie(name="face", filepath=args["clip"], channel=2, frame_start=10)
src.frame_offset_start = 5            # 5 source frames trimmed at the head
src.frame_offset_end = src.frame_duration - 17   # and the tail: source frames 5..17 are shown
src.select = True
out["source_strip"] = [src.channel, src.frame_final_start, src.frame_final_duration]
scene.facecomp.source = args["photo"]
scene.facecomp.label_corner = "bottom-right"
scene.facecomp.label_scale = 0.5      # below the minimum: Blender clamps it to 1
out["label_scale"] = scene.facecomp.label_scale
def strip_info(s):
    return {"name": s.name, "channel": s.channel, "start": s.frame_final_start, "length": s.frame_final_duration,
            "filepath": bpy.path.abspath(s.filepath), "color_tag": s.color_tag,
            "props": {k: (list(s[k]) if k == "facecomp_source_frames" else s[k]) for k in s.keys()}}
"""

_BAKE = _PRELUDE + r"""
scene.facecomp.reference = ""
scene.facecomp.source = args["photo"] + ".missing.jpg"
try:
    out["missing_photo"] = list(bpy.ops.facecomp.replace_faces("EXEC_DEFAULT"))
except RuntimeError as exc:  # an operator that reports ERROR raises here in Python
    out["missing_photo"] = str(exc)
out["after_failure"] = sorted(os.listdir(args["out_dir"])) if os.path.isdir(args["out_dir"]) else []
out["strips_after_failure"] = len(strips)
scene.facecomp.source = args["photo"]
second = strips.new_movie(name="later", filepath=args["clip"], channel=5, frame_start=40)
second.frame_offset_start, second.frame_offset_end = 30, second.frame_duration - 36   # source 30..36
second.select = True
out["result"] = list(bpy.ops.facecomp.replace_faces("INVOKE_DEFAULT"))  # headless: runs synchronously
out["strips"] = [strip_info(s) for s in sorted(strips, key=lambda s: s.channel)]
print("RESULT " + json.dumps(out))
"""

_MODAL = _PRELUDE + r"""
import importlib
ops = importlib.import_module(MOD + ".operators")
op = ops.FACECOMP_OT_replace_faces
wm = bpy.context.window_manager
reports = []

class Modal:  # the operator's own modal()/_end()/_done() driven with Blender's real context and events
    def __init__(self, plans_of):
        self._runner = ops.Runner(bpy.context, ops.make_plans(bpy.context, plans_of), {
            "source": [args["photo"]], "schema": "facecomp.effect/1"})
        self._timer = wm.event_timer_add(0.2, window=bpy.context.window)
        wm.progress_begin(0, 100)
    def report(self, kind, text):
        reports.append([sorted(kind)[0], text])
    def _end(self, context):
        op._end(self, context)
    def _status(self, context, text):
        op._status(self, context, text)
    def _done(self, runner):
        op._done(self, runner)

class Event:
    def __init__(self, kind):
        self.type = kind

m = Modal([src])
steps = 0
while True:
    state = op.modal(m, bpy.context, Event("TIMER"))
    steps += 1
    if state != {"RUNNING_MODAL"}:
        break
    time.sleep(0.05)
out["timer_run"] = sorted(state)
out["timer_steps"] = steps
out["after_timer"] = sorted(s.name for s in strips)
assert op.modal(Modal([src]), bpy.context, Event("MOUSEMOVE")) == {"PASS_THROUGH"}
src.frame_offset_end = 0  # a long range, cancelled with Esc once frames are coming
m = Modal([src])
while op.modal(m, bpy.context, Event("TIMER")) == {"RUNNING_MODAL"}:
    if m._runner.bake is not None and m._runner.bake.done >= 2:
        out["esc_at"] = [m._runner.bake.done, m._runner.bake.total]
        out["staging_existed"] = os.path.isdir(m._runner.bake.staging)
        break
    time.sleep(0.05)
out["esc"] = sorted(op.modal(m, bpy.context, Event("ESC")))
out["after_esc"] = sorted(s.name for s in strips)
out["files"] = sorted(os.listdir(args["out_dir"]))
out["reports"] = reports
print("RESULT " + json.dumps(out))
"""

_DISABLE = _PRELUDE + r"""
def registered():
    return {"operator": hasattr(bpy.types, "FACECOMP_OT_replace_faces"),
            "panel": hasattr(bpy.types, "FACECOMP_PT_sequencer"),
            "scene_props": "facecomp" in bpy.types.Scene.bl_rna.properties,
            "settings_group": any(c.__name__ == "FACECOMP_PG_settings" and c.is_registered
                                  for c in bpy.types.PropertyGroup.__subclasses__()),
            "prefs": any(c.__name__ == "FACECOMP_AP_preferences" and c.is_registered
                         for c in bpy.types.AddonPreferences.__subclasses__()),
            "enabled_addon": MOD in bpy.context.preferences.addons}
out["enabled"] = registered()
bpy.ops.preferences.addon_disable(module=MOD)
out["disabled"] = registered()
bpy.ops.preferences.addon_enable(module=MOD)
out["re_enabled"] = registered()
print("RESULT " + json.dumps(out))
"""


def _run_bpy(script, tmp_path, **args):
    pytest.importorskip("bpy")
    if not (HEADPOSE.exists() and PHOTO.exists()):
        pytest.skip("real face media not found (../shared/media)")
    home = tmp_path / "home"
    home.mkdir()
    env = dict(os.environ, HOME=str(home), FACECOMP_TEST_ARGS=json.dumps(
        dict(args, clip=str(HEADPOSE), photo=str(PHOTO), out_dir=str(tmp_path / "out") + os.sep)))
    env.pop("XDG_CONFIG_HOME", None)
    proc = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=240)
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT ")]
    assert proc.returncode == 0 and lines, proc.stdout[-3000:] + proc.stderr[-3000:]
    return json.loads(lines[-1][len("RESULT "):]), proc.stdout


def _engine():
    exe = shutil.which("facecomp") or str(Path(sys.executable).with_name("facecomp"))
    if not os.path.exists(exe):
        pytest.skip("the facecomp executable is not installed next to this Python")
    return exe


def test_operator_bakes_the_strips_used_range_above_it(ext_zip, tmp_path):
    before = hashlib.sha256(HEADPOSE.read_bytes()).hexdigest()
    out, _ = _run_bpy(_BAKE, tmp_path, zip=str(ext_zip), executable=_engine())
    assert out["installed"]
    assert out["label_scale"] == 1.0
    assert out["source_strip"] == [2, 15, 12]
    assert "bad settings" in out["missing_photo"] and ".missing.jpg" in out["missing_photo"], out["missing_photo"]
    assert out["after_failure"] == [] and out["strips_after_failure"] == 1  # no half file, no half strip
    assert out["result"] == ["FINISHED"]
    original, new, later, later_new = out["strips"]
    assert (later_new["channel"], later_new["start"], later_new["length"]) == (6, 70, 6)
    assert later_new["props"]["facecomp_source_frames"] == [30, 36] and later["props"] == {}
    assert (original["channel"], original["start"], original["length"], original["props"]) == (2, 15, 12, {})
    assert (new["channel"], new["start"], new["length"]) == (3, 15, 12)
    assert new["color_tag"] == "COLOR_01" and new["name"] == "face [SYNTHETIC]"
    props = new["props"]
    assert props["facecomp_synthetic"] == 1 and props["facecomp_source_frames"] == [5, 17]
    manifest = Path(props["facecomp_manifest"])
    doc = json.loads(manifest.read_text())
    assert doc["id"] == props["facecomp_manifest_id"] and doc["replacement"]["face_replaced"]
    assert manifest == Path(new["filepath"] + ".synthetic.json")
    assert sorted(os.listdir(tmp_path / "out")) == sorted(
        [Path(new["filepath"]).name, manifest.name, Path(later_new["filepath"]).name,
         Path(later_new["props"]["facecomp_manifest"]).name])
    assert hashlib.sha256(HEADPOSE.read_bytes()).hexdigest() == before
    assert_baked(new["filepath"], HEADPOSE, 5, 12, "bottom-right")
    assert_baked(later_new["filepath"], HEADPOSE, 30, 6, "bottom-right")


def test_modal_operator_with_timer_events_and_esc_cancel_leaves_nothing(ext_zip, tmp_path):
    out, _ = _run_bpy(_MODAL, tmp_path, zip=str(ext_zip), executable=_engine())
    assert out["timer_run"] == ["FINISHED"] and out["timer_steps"] > 2  # polled, not blocking
    assert out["after_timer"] == ["face", "face [SYNTHETIC]"]
    assert out["esc"] == ["CANCELLED"] and out["staging_existed"]
    assert 2 <= out["esc_at"][0] < out["esc_at"][1] == 51  # cancelled mid-render
    assert out["after_esc"] == ["face", "face [SYNTHETIC]"]  # nothing added by the cancelled run
    assert len(out["files"]) == 2  # the first run's video and manifest; nothing from the cancelled one
    kinds = [k for k, _ in out["reports"]]
    assert kinds == ["INFO", "WARNING"] and "cancelled" in out["reports"][1][1]


def test_disabling_unregisters_everything(ext_zip, tmp_path):
    out, _ = _run_bpy(_DISABLE, tmp_path, zip=str(ext_zip))
    assert all(out["enabled"].values()), out["enabled"]
    assert not any(out["disabled"].values()), out["disabled"]
    assert all(out["re_enabled"].values()), out["re_enabled"]


def test_cli_installs_with_bpy_and_by_copying(ext_zip, tmp_path, monkeypatch):
    home = tmp_path / "home"
    home.mkdir()
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.delenv("XDG_CONFIG_HOME", raising=False)
    where = Path(package.install(ext_zip))  # through bpy.ops.extensions.package_install_files
    assert where == home / ".config" / "blender" / "5.0" / "extensions" / "user_default" / "facecomp"
    assert (where / "blender_manifest.toml").is_file() and (where / "_params.py").is_file()
    assert (home / ".config" / "blender" / "5.0" / "config" / "userpref.blend").is_file()  # enabled, saved
    copied = Path(package.install(ext_zip, version="4.2"))  # no bpy for that version: copied
    assert copied == home / ".config" / "blender" / "4.2" / "extensions" / "user_default" / "facecomp"
    with zipfile.ZipFile(ext_zip) as zf:
        assert sorted(p.name for p in copied.iterdir()) == sorted(zf.namelist())
