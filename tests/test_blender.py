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

import av
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


def test_timing_predicts_the_frames_blender_5_shows():
    # each expectation was read back from frame-number barcodes in bpy 5.0.1 renders (test below does it live)
    plain = logic.Timing(start=10, content_frames=75)
    assert plain.shown(17, 25) == list(range(7, 15)) and logic.is_consecutive(plain.shown(17, 25))
    assert plain.shown(8, 11) == [0, 0, 0]  # a hold before the media: its first frame
    rate = logic.Timing(start=1, content_frames=40, factor=logic.f32(30 / 25))  # 30 fps media, 25 fps scene
    assert rate.length() == 33
    assert rate.shown(1, 12) == [0, 1, 2, 4, 5, 6, 7, 8, 10, 11, 12]  # rounded, every sixth frame skipped
    half = logic.Timing(start=1, content_frames=40, factor=0.5)  # 12.5 fps media, 25 fps scene
    # the movie reader rounds (0.5 -> 1) but the cache is keyed on the truncated index: each frame twice
    assert half.length() == 80 and half.shown(1, 9) == [0, 0, 1, 1, 2, 2, 3, 3]
    ntsc = logic.Timing(start=1, content_frames=60, factor=logic.f32(logic.f32(24000 / 1001) / 25))
    assert ntsc.shown(1, 6) == [0, 0, 2, 3, 4]  # Blender's own sequence, frame 1 never shown
    rev = logic.Timing(start=1, content_frames=40, factor=logic.f32(30 / 25), reverse=True)
    assert rev.shown(1, 5) == [38, 37, 36, 35] and rev.shown(33, 34) == [0]
    strobe = logic.Timing(start=1, content_frames=40, factor=logic.f32(30 / 25), strobe=3.0)
    assert strobe.shown(1, 8) == [0, 0, 0, 3, 3, 6, 6]
    offs = logic.Timing(start=1, content_frames=33, anim_start=5, factor=logic.f32(30 / 25))
    assert offs.shown(1, 4) == [5, 6, 7]
    slow = logic.Timing(start=1, content_frames=40, retimed_length=80)  # Set Speed 50%
    assert slow.length() == 80 and slow.shown(1, 7) == [0, 0, 1, 1, 2, 2]
    assert not logic.is_consecutive(rate.shown(1, 12)) and logic.is_consecutive([4])


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
    seq = bake.Bake("/x/facecomp", str(tmp_path / "in.mp4"), str(tmp_path), {}, 3, 9, manifest_id="abcdef12-x",
                    image_sequence="f_%06d.png")
    folder = tmp_path / "in.synthetic.3-9.abcdef12"
    assert (seq.output, seq.manifest) == (str(folder / "f_%06d.png"), str(folder / "f_######.png.synthetic.json"))
    assert seq.command()[4] == str(tmp_path / ".facecomp-staging-abcdef12" / folder.name / "f_%06d.png")


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
            "filepath": bpy.path.abspath(getattr(s, "filepath", "")), "color_tag": s.color_tag,
            "props": {k: (list(s[k]) if hasattr(s[k], "__len__") and not isinstance(s[k], str) else s[k])
                      for k in s.keys()}}
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
import signal
blocked = []  # how long each modal() call held the UI thread
def step(m, kind):
    t = time.perf_counter()
    state = op.modal(m, bpy.context, Event(kind))
    blocked.append(time.perf_counter() - t)
    return state

steps = 0
while True:
    state = step(m, "TIMER")
    steps += 1
    if state != {"RUNNING_MODAL"}:
        break
    time.sleep(0.05)
out["timer_run"] = sorted(state)
out["timer_steps"] = steps
out["after_timer"] = sorted(s.name for s in strips)
assert op.modal(Modal([src]), bpy.context, Event("MOUSEMOVE")) == {"PASS_THROUGH"}
src.frame_offset_end = 0  # a long range, cancelled with Esc once frames are coming
out["full_range"] = [src.frame_offset_start, src.frame_duration]
out["cancels"] = []
for stuck in (False, True):  # an engine that stops at its next frame, and one that cannot notice (stopped)
    m = Modal([src])
    while step(m, "TIMER") == {"RUNNING_MODAL"}:
        if m._runner.bake is not None and m._runner.bake.done >= 2:
            break
        time.sleep(0.05)
    bake = m._runner.bake
    info = {"at": [bake.done, bake.total], "staging_existed": os.path.isdir(bake.staging)}
    if stuck:
        os.kill(bake._proc.pid, signal.SIGSTOP)
    t = time.perf_counter()
    info["esc"] = sorted(op.modal(m, bpy.context, Event("ESC")))
    info["esc_blocked_s"] = time.perf_counter() - t
    info["cancelled_is_this"] = m._runner.cancelled == [bake]
    while not bake.cleaned and time.perf_counter() - t < 30:
        time.sleep(0.05)
    info["cleaned_after_s"] = time.perf_counter() - t
    info["exit"] = bake._proc.returncode
    info["staging_left"] = os.path.exists(bake.staging)
    info["after"] = sorted(s.name for s in strips)
    info["files"] = sorted(os.listdir(args["out_dir"]))
    out["cancels"].append(info)
out["max_blocked_s"] = max(blocked)
out["reports"] = reports
print("RESULT " + json.dumps(out))
"""

_RATE = _PRELUDE + r"""
strips.remove(src)
scene.render.resolution_x, scene.render.resolution_y, scene.render.resolution_percentage = 480, 270, 100
scene.view_settings.view_transform = "Standard"
scene.render.image_settings.file_format = "PNG"
win = bpy.context.window
bpy.context.workspace.sequencer_scene = scene
area = win.screen.areas[-1]
area.type = "SEQUENCE_EDITOR"
region = [r for r in area.regions if r.type == "WINDOW"][0]
def ctx():
    return bpy.context.temp_override(window=win, screen=win.screen, area=area, region=region,
                                     space_data=area.spaces.active, scene=scene)
def add(clip, start, channel, adjust):  # as the Sequencer's Add > Movie does (Adjust Playback Rate: its default)
    for s in strips:
        s.select = False
    with ctx():
        bpy.ops.sequencer.movie_strip_add(filepath=clip, frame_start=start, channel=channel, sound=False,
                                          adjust_playback_rate=adjust, move_strips=False, use_framerate=False,
                                          set_view_transform=False, relative_path=False)
    (new,) = [s for s in strips if s.select]
    new.frame_start = start  # the operator puts it at the current frame
    return new
def set_speed(strip, percent):
    scene.sequence_editor.active_strip = strip
    for s in strips:
        s.select = s == strip
    with ctx():
        bpy.ops.sequencer.retiming_segment_speed_set(speed=percent)
def render_alone(strip, folder, parts=None):  # Blender's own render of what the scene shows there
    shown = parts or [strip]
    for s in strips:
        s.mute = s not in shown
    scene.frame_start = min(s.frame_final_start for s in shown)
    scene.frame_end = max(s.frame_final_end for s in shown) - 1
    scene.render.filepath = os.path.join(folder, "f_")
    bpy.ops.render.render(animation=True)
    for s in strips:
        s.mute = False
    return sorted(os.path.join(folder, f) for f in os.listdir(folder) if f.endswith(".png"))
def run_on(*chosen):
    for s in strips:
        s.select = s in chosen
    try:
        return list(bpy.ops.facecomp.replace_faces("EXEC_DEFAULT"))
    except RuntimeError as exc:
        return str(exc)

adj = add(args["clip30"], 1, 2, True)          # 30 fps media in the 25 fps scene, trimmed both ends
adj.frame_offset_start, adj.frame_offset_end = 3, 4
rev = add(args["clip30"], 100, 4, True)        # reversed, every third frame held
rev.use_reverse_frames, rev.strobe = True, 3.0
slow = add(args["clip25"], 200, 6, False)      # Set Speed 50%: two retiming keys
set_speed(slow, 50)
out["keys"] = {"slow": [k.timeline_frame for k in slow.retiming_keys]}
out["timing"] = {s.name: [s.frame_final_start, s.frame_final_end, s.frame_duration, s.channel]
                 for s in (adj, rev, slow)}
truth = {}
for s in (adj, rev, slow):
    truth[s.name] = render_alone(s, os.path.join(args["renders"], "orig-" + s.name))

multi = add(args["clip25"], 400, 8, False)     # trimmed, then Set Speed: three keys
multi.frame_offset_start = 4
set_speed(multi, 70)
out["keys"]["multi"] = [k.timeline_frame for k in multi.retiming_keys]
sped = add(args["clip25"], 600, 10, False)
effect = strips.new_effect(name="speed", type="SPEED", channel=11, frame_start=600, input1=sped)
n = len(strips)
out["refused"] = {"multi": run_on(multi), "speed_effect": run_on(sped)}
out["after_refusal"] = [len(strips) - n, sorted(os.listdir(args["out_dir"])) if os.path.isdir(args["out_dir"]) else []]
import importlib
importlib.import_module(MOD + ".operators").ELEMENTS_PER_STRIP = 30  # long results split (as past 2500)
out["result"] = run_on(adj, rev, slow)
results = {}
for s in sorted(strips, key=lambda s: s.frame_final_start):
    if "facecomp_synthetic" in s:
        info = strip_info(s)
        info["type"] = s.type
        info["directory"] = bpy.path.abspath(getattr(s, "directory", ""))
        info["elements"] = [e.filename for e in getattr(s, "elements", [])]
        results.setdefault(s["facecomp_source_strip"], []).append(info)
for source, parts in results.items():
    made = [s for s in strips if s.name in {p["name"] for p in parts}]
    parts[0]["render"] = render_alone(None, os.path.join(args["renders"], "baked-" + source), made)
out["results"] = results
out["truth"] = truth
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
        dict(dict(clip=str(HEADPOSE), photo=str(PHOTO), out_dir=str(tmp_path / "out") + os.sep), **args)))
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


def _long_clip(path, times):
    """The head-pose clip played forward and back ``times`` times: a render long enough that a cancel sent
    after the first progress events always lands mid-render (51 frames finished before Esc on a fast machine,
    as progress is only reported every half second)."""
    from fractions import Fraction

    from mediagen import write_clip

    with av.open(str(HEADPOSE)) as c:
        rate = c.streams.video[0].average_rate or Fraction(25)
        frames = [f.to_ndarray(format="rgb24") for f in c.decode(video=0)]
    h, w = frames[0].shape[:2]
    seq = [img for k in range(times) for img in (frames if k % 2 == 0 else frames[::-1])]
    write_clip(path, w=w, h=h, n=len(seq), fps=rate, options={"crf": "16", "g": "25"}, frames=seq)
    return len(seq)


def test_modal_operator_with_timer_events_and_esc_cancel_leaves_nothing(ext_zip, tmp_path):
    if not HEADPOSE.exists():
        pytest.skip("real face media not found (../shared/media)")
    clip = tmp_path / "long.mp4"
    total = _long_clip(clip, 8)
    before = hashlib.sha256(clip.read_bytes()).hexdigest()
    out, _ = _run_bpy(_MODAL, tmp_path, zip=str(ext_zip), executable=_engine(), clip=str(clip))
    assert hashlib.sha256(clip.read_bytes()).hexdigest() == before
    start, length = out["full_range"]
    full = length - start  # the strip's whole range from its trimmed head: Blender's count of the clip
    assert full > 0.9 * total - start, (full, total)
    assert out["timer_run"] == ["FINISHED"] and out["timer_steps"] > 2  # polled, not blocking
    assert out["after_timer"] == ["face", "face [SYNTHETIC]"]
    assert out["max_blocked_s"] < 0.5, out["max_blocked_s"]  # no timer step held the UI thread
    first = sorted(out["after_timer"])
    for info, stuck in zip(out["cancels"], (False, True)):
        assert info["esc"] == ["CANCELLED"] and info["staging_existed"] and info["cancelled_is_this"]
        assert 2 <= info["at"][0] < info["at"][1] == full  # cancelled mid-render
        assert info["esc_blocked_s"] < 0.5, info  # Esc returns at once, even when the engine cannot notice
        assert not info["staging_left"] and info["cleaned_after_s"] < 8, info  # then everything goes
        assert info["exit"] == (-9 if stuck else 130), info  # stopped engines are killed after the grace
        assert info["after"] == first  # nothing added by the cancelled run
        assert len(info["files"]) == 2  # the first run's video and manifest; nothing from the cancelled one
    kinds = [k for k, _ in out["reports"]]
    assert kinds == ["INFO", "WARNING", "WARNING"] and "cancelled" in out["reports"][1][1]


BAR = 60  # 8 frame-number bits, one 60 px column each, in the top 24 rows of the 480 px wide face clip


def _barcode_clip(path, fps):
    """The real head-pose clip (faces moving) at ``fps``, each frame's number drawn as a barcode on top."""
    from fractions import Fraction

    with av.open(str(HEADPOSE)) as c:
        frames = [f.to_ndarray(format="rgb24") for f in c.decode(video=0)]
    with av.open(str(path), "w") as out:
        st = out.add_stream("libx264", rate=Fraction(fps))
        st.width, st.height, st.pix_fmt, st.options = 480, 270, "yuv420p", {"crf": "12", "g": "12"}
        for i, img in enumerate(frames):
            img = img.copy()
            for b in range(8):
                img[:24, b * BAR:(b + 1) * BAR] = 255 if (i >> b) & 1 else 0
            for p in st.encode(av.VideoFrame.from_ndarray(img, format="rgb24")):
                out.mux(p)
        for p in st.encode():
            out.mux(p)
    return len(frames)


def _frame_number(img):
    """The barcode's number, or None where a bar is neither black nor white (not a barcode frame)."""
    n = 0
    for b in range(8):
        m = float(img[4:20, b * BAR + 12:(b + 1) * BAR - 12].mean())
        if m > 170:
            n |= 1 << b
        elif m > 85:
            return None
    return n


def _numbers(paths):
    import cv2

    return [_frame_number(cv2.imread(p)[..., ::-1]) for p in paths]


def test_rate_adjusted_reversed_strobed_and_retimed_strips_get_the_frames_blender_shows(ext_zip, tmp_path):
    import cv2
    from facecomp.disclosure.detect_label import find_label
    from facecomp.disclosure.label import LabelSettings

    clip30, clip25 = tmp_path / "bars30.mp4", tmp_path / "bars25.mp4"
    count = _barcode_clip(clip30, 30)
    _barcode_clip(clip25, 25)
    before = {p: hashlib.sha256(p.read_bytes()).hexdigest() for p in (clip30, clip25)}
    out, _ = _run_bpy(_RATE, tmp_path, zip=str(ext_zip), executable=_engine(), clip30=str(clip30),
                      clip25=str(clip25), renders=str(tmp_path / "renders"))
    assert len(out["keys"]["slow"]) == 2 and len(out["keys"]["multi"]) == 3
    assert out["timing"]["bars25.mp4"][:3] == [200, 200 + 2 * count, 2 * count]
    # what cannot be followed exactly is refused, saying what to change, and leaves nothing
    assert "3 retiming keys" in out["refused"]["multi"] and "Set Speed" in out["refused"]["multi"]
    assert "Speed Control effect 'speed'" in out["refused"]["speed_effect"]
    assert out["after_refusal"] == [0, []]
    assert out["result"] == ["FINISHED"]
    assert sorted(out["results"]) == sorted(out["truth"]) and len(out["truth"]) == 3
    expected = {}
    for name, paths in out["truth"].items():
        shown = _numbers(paths)  # what Blender itself shows for the original strip, scene frame by frame
        assert None not in shown and len(shown) == out["timing"][name][1] - out["timing"][name][0]
        assert not logic.is_consecutive(shown)  # none of these is one media frame per scene frame
        expected[name] = shown
    adj, rev, slow = (expected[n] for n in ("bars30.mp4", "bars30.001", "bars25.mp4"))
    # 30 -> 25 fps from scene frame 4 (3 trimmed): content index 1.2 * (t - 1), every sixth frame skipped
    assert adj[:6] == [4, 5, 6, 7, 8, 10] and adj[-1] == 49 and len(adj) == 39
    assert rev[0] == count - 1 - (count - 1) % 3 and rev[-1] == 0 and len(set(rev)) < len(rev) / 2
    assert slow[:6] == [0, 0, 1, 1, 2, 2] and slow[-1] == count - 1
    for name, parts in out["results"].items():
        shown = expected[name]
        first, end, _, channel = out["timing"][name]
        assert len(parts) == -(-len(shown) // 30) > 1  # split every 30 frames here (2500 by default)
        assert [(p["type"], p["channel"], p["props"]["facecomp_part"]) for p in parts] == [
            ("IMAGE", channel + 1, [k + 1, len(parts)]) for k in range(len(parts))]
        assert parts[0]["name"] == f"{name} [SYNTHETIC]" and parts[1]["name"] == f"{name} [SYNTHETIC] 2"
        # together they cover the strip's scene frames, back to back: the strip's timing
        assert [(p["start"], p["start"] + p["length"]) for p in parts] == [
            (a, min(a + 30, end)) for a in range(first, end, 30)]
        assert sum((p["props"]["facecomp_shown_frames"] for p in parts), []) == shown
        assert all(p["props"]["facecomp_source_frames"] == [min(shown), max(shown) + 1] for p in parts)
        assert len({p["props"]["facecomp_manifest"] for p in parts}) == 1
        # the baked images, read in the order the strips list them, carry the frame numbers Blender showed
        listed = [os.path.join(p["directory"], e) for p in parts for e in p["elements"]]
        assert _numbers(listed) == shown, name
        # and Blender's render of the result shows them too, every frame labelled
        render = parts[0]["render"]
        assert _numbers(render) == shown, name
        for p in render[:: max(1, len(shown) // 6)]:
            finding = find_label(cv2.imread(p)[..., ::-1].copy(), LabelSettings(corner="bottom-right"))
            assert finding.found and finding.corner == "bottom-right", (name, p, finding)
        doc = json.loads(Path(parts[0]["props"]["facecomp_manifest"]).read_text())
        assert doc["id"] == parts[0]["props"]["facecomp_manifest_id"] and doc["replacement"]["face_replaced"]
        assert doc["input"]["frames_rendered"] == [min(shown), max(shown)]
    assert {p: hashlib.sha256(p.read_bytes()).hexdigest() for p in (clip30, clip25)} == before


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


_IGNORED_SIGINT_HOST = r"""
import json, os, signal, sys, time
from facecomp.hosts import bake
exe, clip, dest, photo = sys.argv[1:5]
assert signal.getsignal(signal.SIGINT) is signal.SIG_IGN  # as a background job of a script starts it
b = bake.Bake(exe, clip, dest, {"source": [photo], "schema": "facecomp.effect/1"}, 0, 400)
b.start()
t0 = time.monotonic()
while b.done < 2 and time.monotonic() - t0 < 120:
    b.poll()
    if b._proc.poll() is not None:
        break
    time.sleep(0.05)
at = b.done
t = time.monotonic()
b.cancel(wait=True)
print(json.dumps({"at": at, "exit": b._proc.returncode, "s": time.monotonic() - t,
                  "left": sorted(os.listdir(dest))}))
"""


def test_a_cancel_stops_the_engine_cleanly_in_a_host_started_with_sigint_ignored(tmp_path):
    """A host started as a background job (SIGINT ignored, which its children inherit): the engine still
    takes the cancel's SIGINT, stops at its next frame with exit 130 and leaves nothing (before, it sat out
    the grace and was killed)."""
    if not HEADPOSE.exists():
        pytest.skip("real face media not found (../shared/media)")
    clip = tmp_path / "long.mp4"
    _long_clip(clip, 8)
    dest = tmp_path / "out"
    dest.mkdir()
    # (the shell ignores SIGINT, then becomes the host: exec keeps an ignored signal ignored)
    proc = subprocess.run(["sh", "-c", 'trap "" INT; exec "$@"', "host", sys.executable, "-c", _IGNORED_SIGINT_HOST,
                           _engine(), str(clip), str(dest), str(PHOTO)], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    info = json.loads(proc.stdout.strip().splitlines()[-1])
    assert info["at"] >= 2 and info["exit"] == 130, info
    assert info["s"] < 3.0 and info["left"] == [], info
