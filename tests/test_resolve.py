"""The Resolve script, installed as Resolve would run it, against tests/resolve_fake.py (a fake of
Resolve's scripting object model) with the real facecomp engine rendering real face clips underneath."""

from __future__ import annotations

import hashlib
import importlib.util
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import av
import numpy as np
import pytest
from facecomp.disclosure.detect_label import find_label
from facecomp.disclosure.label import Label, LabelSettings
from facecomp.hosts.resolve import install

sys.path.insert(0, str(Path(__file__).resolve().parent))
import resolve_fake

MEDIA = Path(os.environ.get("FACECOMP_SAMPLE_MEDIA", Path(__file__).resolve().parents[1].parent / "shared" / "media"))
HEADPOSE = MEDIA / "intel_head-pose-face-detection-female-and-male.mp4"  # 12.5 fps, heads moving
GRID = MEDIA / "grid_bbaf2n.mpg"  # 25 fps talking head
PHOTO = MEDIA / "grace_hopper.jpg"
needs_media = pytest.mark.skipif(not (HEADPOSE.exists() and GRID.exists() and PHOTO.exists()),
                                 reason=f"real face media not found in {MEDIA}")


def _engine() -> str:
    exe = shutil.which("facecomp") or str(Path(sys.executable).with_name("facecomp"))
    if not os.path.exists(exe):
        pytest.skip("the facecomp executable is not installed next to this Python")
    return exe


@pytest.fixture
def script(tmp_path, monkeypatch):
    """The installed script file, loaded as a module (Resolve runs it as a plain Python file)."""
    target = install.install(tmp_path / "Utility")
    spec = importlib.util.spec_from_file_location("facecomp_resolve_script", target)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    monkeypatch.setattr(mod, "LOG_PATH", str(tmp_path / "logs" / "resolve.log"))
    monkeypatch.setattr(mod, "CONFIG_PATH", str(tmp_path / "resolve.json"))
    return mod


def _project(fps="25"):
    resolve = resolve_fake.Resolve()
    project = resolve.GetProjectManager().CreateProject("test", fps)
    pool = project.GetMediaPool()
    timeline = pool.CreateEmptyTimeline("Edit")
    return resolve, project, pool, timeline


def _options(tmp_path, **kw):
    opts = {"mode": "playhead", "track": 1, "clip_color": "", "executable": _engine(),
            "output_dir": str(tmp_path / "out"),
            "settings": {"source": [str(PHOTO)], "faces": "all", "label_corner": "bottom-right", "label_scale": 1.0}}
    opts.update(kw)
    return opts


def _frames(path):
    with av.open(str(path)) as c:
        return [f.to_ndarray(format="rgb24").astype(np.int16) for f in c.decode(video=0)]


def _sha(path):
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def assert_baked(result_path, source_path, first, count, corner):
    """Labelled on every sampled frame, a face replaced, and frame i equal to source frame first + i
    outside the face and the label (the nearest source frame by error is exactly that one)."""
    res, src = _frames(result_path), _frames(source_path)
    assert len(res) == count
    h, w, _ = res[0].shape
    x0, y0, x1, y1 = Label(LabelSettings(corner=corner)).layout(h, w).box
    keep = np.ones((h, w), bool)
    keep[y0:y1, x0:x1] = False
    for i in (0, count - 1):
        finding = find_label(res[i].astype(np.uint8), LabelSettings(corner=corner))
        assert finding.found and finding.corner == corner, finding
        box = res[i][y0:y1, x0:x1]
        assert np.abs(box - src[first + i][y0:y1, x0:x1]).mean() > 20  # the box really covers the picture
    for i in range(count):
        errs = {k: float(np.abs(res[i] - src[k])[keep].mean())
                for k in range(max(0, first + i - 2), min(len(src), first + i + 3))}
        assert min(errs, key=errs.get) == first + i, (i, errs)
    d = np.abs(res[count // 2] - src[first + count // 2]).mean(-1)
    d[~keep] = 0
    b = 16
    blocks = d[: h // b * b, : w // b * b].reshape(h // b, b, w // b, b).mean((1, 3))
    assert blocks.max() > 6 and blocks.max() > 3 * np.median(blocks), "no face was replaced"


@needs_media
def test_playhead_clip_baked_placed_and_marked(script, tmp_path):
    resolve, project, pool, timeline = _project("25")
    (clip,) = pool.ImportMedia([str(HEADPOSE)])
    before = _sha(HEADPOSE)
    start = timeline.GetStartFrame()
    # source frames 8..20 of a 12.5 fps clip in a 25 fps timeline: 24 timeline frames at +50
    (item,) = pool.AppendToTimeline([{"mediaPoolItem": clip, "startFrame": 8, "endFrame": 20, "mediaType": 1,
                                      "trackIndex": 1, "recordFrame": start + 50}])
    assert item.GetDuration() == 24 and item.GetEnd() == start + 74
    timeline.SetCurrentTimecode("01:00:02:10")  # frame 60: inside the clip
    assert script.main(resolve, _options(tmp_path), interactive=False) == 0

    assert timeline.GetTrackCount("video") == 2
    assert timeline.GetTrackName("video", 2) == "SYNTHETIC (facecomp)"
    (new,) = timeline.GetItemListInTrack("video", 2)
    assert (new.GetStart(), new.GetDuration()) == (start + 50, 24)
    assert (item.GetStart(), item.GetDuration(), item.GetLeftOffset()) == (start + 50, 24, 8)  # untouched
    mpi = new.GetMediaPoolItem()
    (bin_,) = [f for f in pool.GetRootFolder().GetSubFolderList() if f.GetName() == "Synthetic (facecomp)"]
    assert bin_.GetClipList() == [mpi]
    assert mpi.GetMetadata("Keywords") == "SYNTHETIC"
    video = mpi.GetClipProperty("File Path")
    manifest = video + ".synthetic.json"
    assert manifest in mpi.GetMetadata("Comments") and "SYNTHETIC" in mpi.GetMetadata("Comments")
    assert mpi.GetClipColor() == new.GetClipColor() == "Orange"
    markers = timeline.GetMarkers()
    assert list(markers) == [50] and manifest in markers[50]["note"] and markers[50]["duration"] == 24
    doc = json.loads(Path(manifest).read_text())
    assert markers[50]["customData"] == doc["id"]
    assert doc["replacement"]["face_replaced"] and doc["replacement"]["first_source_frame"] == 8
    assert sorted(os.listdir(tmp_path / "out")) == sorted([os.path.basename(video), os.path.basename(manifest)])
    assert _sha(HEADPOSE) == before
    assert_baked(video, HEADPOSE, 8, 12, "bottom-right")


@needs_media
def test_track_mode_bakes_clips_of_the_chosen_colour(script, tmp_path):
    resolve, project, pool, timeline = _project("25")
    (clip,) = pool.ImportMedia([str(HEADPOSE)])
    start = timeline.GetStartFrame()
    items = pool.AppendToTimeline([
        {"mediaPoolItem": clip, "startFrame": 5, "endFrame": 11, "trackIndex": 1, "recordFrame": start},
        {"mediaPoolItem": clip, "startFrame": 30, "endFrame": 36, "trackIndex": 1, "recordFrame": start + 20},
        {"mediaPoolItem": clip, "startFrame": 44, "endFrame": 48, "trackIndex": 1, "recordFrame": start + 40}])
    assert [i.GetDuration() for i in items] == [12, 12, 8]  # 12.5 fps media in a 25 fps timeline
    items[0].SetClipColor("Teal")
    items[2].SetClipColor("Teal")
    items[1].SetClipColor("Blue")
    opts = _options(tmp_path, mode="track", track=1, clip_color="Teal")
    assert script.main(resolve, opts, interactive=False) == 0
    placed = timeline.GetItemListInTrack("video", 2)
    assert [(p.GetStart(), p.GetDuration()) for p in placed] == [(start, 12), (start + 40, 8)]
    assert sorted(timeline.GetMarkers()) == [0, 40]
    for p, (first, count) in zip(placed, ((5, 6), (44, 4))):
        assert_baked(p.GetMediaPoolItem().GetClipProperty("File Path"), HEADPOSE, first, count, "bottom-right")


@needs_media
def test_failures_leave_the_project_and_folders_as_they_were(script, tmp_path):
    resolve, project, pool, timeline = _project("25")
    (clip,) = pool.ImportMedia([str(GRID)])
    pool.AppendToTimeline([{"mediaPoolItem": clip, "startFrame": 0, "endFrame": 10, "trackIndex": 1,
                            "recordFrame": timeline.GetStartFrame()}])
    log = Path(script.LOG_PATH)

    timeline.SetCurrentTimecode("01:00:05:00")  # past the clip
    assert script.main(resolve, _options(tmp_path), interactive=False) == 1
    assert "no video clip under the playhead" in log.read_text()

    timeline.SetCurrentTimecode("01:00:00:03")
    missing = _options(tmp_path, settings={"source": [str(tmp_path / "nobody.jpg")]})
    assert script.main(resolve, missing, interactive=False) == 1
    assert "bad settings (exit code 2)" in log.read_text() and "nobody.jpg" in log.read_text()

    assert script.main(resolve, _options(tmp_path, executable=str(tmp_path / "nope")), interactive=False) == 1
    assert "not an executable facecomp" in log.read_text()

    assert timeline.GetTrackCount("video") == 1 and not timeline.GetMarkers()
    assert pool.GetRootFolder().GetSubFolderList() == []
    assert not (tmp_path / "out").exists() or os.listdir(tmp_path / "out") == []


def test_without_the_scripting_object_it_says_why(script, monkeypatch):
    monkeypatch.setitem(sys.modules, "DaVinciResolveScript", None)  # not importable, as outside Resolve
    assert script.main(None, interactive=False) == 2
    assert "DaVinci Resolve Studio" in Path(script.LOG_PATH).read_text()


def test_source_range_follows_offsets_and_frame_rates(script):
    class Item:
        def __init__(self, src, dur):
            self.src, self.dur = src, dur

        def GetLeftOffset(self):
            return self.src

        def GetDuration(self):
            return self.dur

        def GetName(self):
            return "clip"

    assert script.source_range(Item(8, 24), 12.5, 25.0) == (8, 20)
    assert script.source_range(Item(0, 48), 24.0, 24.0) == (0, 48)
    assert script.source_range(Item(10, 30), 30.0, 25.0, clip_frames=40) == (10, 40)  # clamped to the media
    with pytest.raises(script.ResolveScriptError):
        script.source_range(Item(40, 10), 25.0, 25.0, clip_frames=40)


def test_installed_script_runs_in_a_python_without_facecomp(tmp_path):
    """-S: no site-packages, so neither facecomp nor numpy: as Resolve's own Python."""
    target = install.install(tmp_path / "Utility")
    env = dict(os.environ, HOME=str(tmp_path), USERPROFILE=str(tmp_path))
    proc = subprocess.run([sys.executable, "-I", "-S", str(target)], env=env, capture_output=True, text=True,
                          timeout=60)
    assert proc.returncode == 2, proc.stderr
    assert "did not hand this script its scripting object" in proc.stdout
    assert "External scripting" in (tmp_path / ".facecomp" / "logs" / "resolve.log").read_text()


def test_installed_script_is_self_contained_and_goes_to_the_utility_folder(tmp_path):
    text = install.script_text()
    compile(text, "facecomp Replace Faces.py", "exec")
    assert not re.search(r"^\s*(from|import)\s+facecomp", text, re.MULTILINE)  # Resolve's Python has no facecomp
    assert "@@FACECOMP" not in text and "class Bake" in text and "PARAMS = [" in text
    assert install.utility_dir("linux", "/home/u") == Path(
        "/home/u/.local/share/DaVinciResolve/Fusion/Scripts/Utility")
    assert install.utility_dir("darwin", "/Users/u") == Path(
        "/Users/u/Library/Application Support/Blackmagic Design/DaVinci Resolve/Fusion/Scripts/Utility")
    assert install.utility_dir("win32", "C:/Users/u", env={"APPDATA": "C:/Users/u/AppData/Roaming"}) == Path(
        "C:/Users/u/AppData/Roaming/Blackmagic Design/DaVinci Resolve/Support/Fusion/Scripts/Utility")


def test_dialog_reads_the_choices_and_never_shrinks_the_label(script):
    def person(window):
        items = window.GetItems()
        assert window.shown and items["source"].Text == ""
        items["source"].Text = "/a/me.jpg; /a/me2.jpg"
        items["faces"].Text = "largest"
        items["corner"].CurrentIndex = items["corner"].items.index("top-right")
        items["scale"].set_value(0.5)  # below the spin box's minimum
        items["mode"].CurrentIndex = 1
        items["track"].set_value(3)
        items["clip_color"].CurrentIndex = items["clip_color"].items.index("Teal")
        window.On.run.Clicked(None)

    resolve = resolve_fake.Resolve(user=person)
    got = script.ask_options(resolve, script.load_options(), resolve.bmd)
    assert (got["mode"], got["track"], got["clip_color"]) == ("track", 3, "Teal")
    assert got["settings"]["source"] == ["/a/me.jpg", "/a/me2.jpg"] and got["settings"]["faces"] == "largest"
    assert got["settings"]["label_corner"] == "top-right" and got["settings"]["label_scale"] == 1.0

    cancelled = resolve_fake.Resolve(user=lambda window: window.On.cancel.Clicked(None))
    assert script.ask_options(cancelled, script.load_options(), cancelled.bmd) is None
    assert script.ask_options(resolve_fake.Resolve(), script.load_options()) == script.load_options()  # no UI
