"""Bad input: a clear typed error that names the file, no traceback in the CLI, nothing partial left."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest

from facecomp.cli import main
from facecomp.disclosure.label import LabelSettings
from facecomp.disclosure.stamp import StampedFrame, Stamper
from facecomp.effect import Engine
from facecomp.errors import (DisclosureError, EmptyMediaError, InvalidMediaError, NoVideoStreamError,
                             OutputError, SettingsError)
from facecomp.render.clip import render_clip
from facecomp.video.encode import EncodeSettings, resolve
from facecomp.video.reader import VideoReader

from mediagen import decode_all, mux_audio, pattern, write_clip, write_sequence


def _leftovers(folder: Path, keep: set[str]) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.name not in keep)


@pytest.fixture()
def clip(tmp_path) -> Path:
    return write_clip(tmp_path / "in.mp4", n=8, audio=True)


def test_truncated_file_errors_or_renders_what_exists(tmp_path, clip):
    data = clip.read_bytes()
    bad = tmp_path / "trunc.mp4"
    bad.write_bytes(data[: len(data) // 3])  # moov at the end is lost -> unreadable
    before = bad.read_bytes()
    with pytest.raises(InvalidMediaError) as e:
        render_clip(bad, tmp_path / "out.mp4", Engine())
    assert "trunc.mp4" in str(e.value)
    assert bad.read_bytes() == before
    assert _leftovers(tmp_path, {"in.mp4", "trunc.mp4"}) == []


def test_truncated_stream_is_an_error_that_counts_the_frames(tmp_path):
    """A truncated download must not render to a short output without a word (issue 14)."""
    src = write_clip(tmp_path / "in.mkv", n=20, options={"g": "5"})
    data = src.read_bytes()
    bad = tmp_path / "cut.mkv"
    bad.write_bytes(data[: int(len(data) * 0.6)])
    readable = VideoReader(bad).info.frame_count
    assert 0 < readable < 20
    with pytest.raises(InvalidMediaError) as e:
        render_clip(bad, tmp_path / "out.mkv", Engine())
    msg = str(e.value)
    assert "cut.mkv" in msg and "announces 20 frames" in msg and f"only {readable} can be read" in msg
    assert "--allow-partial" in msg
    assert _leftovers(tmp_path, {"in.mkv", "cut.mkv"}) == []
    assert bad.read_bytes() == data[: int(len(data) * 0.6)]  # the source is never modified


def test_truncated_stream_renders_the_readable_frames_with_allow_partial(tmp_path):
    from facecomp.render.clip import RenderSettings
    src = write_clip(tmp_path / "in.mkv", n=20, options={"g": "5"})
    bad = tmp_path / "cut.mkv"
    bad.write_bytes(src.read_bytes()[: int(src.stat().st_size * 0.6)])
    res = render_clip(bad, tmp_path / "out.mkv", Engine(), RenderSettings(allow_partial=True))
    assert 0 < res.frames < 20
    assert len(decode_all(tmp_path / "out.mkv")) == res.frames
    assert res.manifest["input"]["frames_missing"] == 20 - res.frames
    assert any("announces 20 frames" in w for w in res.manifest["warnings"])
    # a trim inside the readable part needs no --allow-partial
    ok = render_clip(bad, tmp_path / "head.mkv", Engine(), RenderSettings(end=res.frames - 1))
    assert ok.frames == res.frames - 1 and "frames_missing" not in ok.manifest["input"]


def test_sequence_with_a_missing_frame_is_an_error(tmp_path):
    from facecomp.render.clip import RenderSettings
    rng = np.random.default_rng(5)
    seq = write_sequence(tmp_path / "seq", [rng.integers(0, 256, (96, 128, 3), np.uint8) for _ in range(8)])
    files = sorted(Path(seq).parent.iterdir())
    files[4].unlink()  # a hole in the numbering: FFmpeg's image2 stops there
    with pytest.raises(InvalidMediaError) as e:
        render_clip(seq, tmp_path / "out.mp4", Engine())
    assert "numbering spans 8 frames" in str(e.value) and "--allow-partial" in str(e.value)
    res = render_clip(seq, tmp_path / "out.mp4", Engine(), RenderSettings(allow_partial=True))
    assert res.frames == 4 and res.manifest["input"]["frames_missing"] == 4


def test_garbage_file(tmp_path):
    bad = tmp_path / "noise.mp4"
    bad.write_bytes(np.random.default_rng(1).integers(0, 256, 50_000, dtype=np.uint8).tobytes())
    with pytest.raises(InvalidMediaError) as e:
        VideoReader(bad)
    assert "noise.mp4" in str(e.value)
    assert isinstance(e.value, ValueError)  # typed errors also inherit builtins


def test_no_video_stream(tmp_path):
    import av
    path = tmp_path / "audio.m4a"
    with av.open(str(path), "w") as c:
        mux_audio(c, c.add_stream("aac", rate=48000), np.zeros(10 * 1024, np.float32), 48000)
    with pytest.raises(NoVideoStreamError) as e:
        VideoReader(path)
    assert "audio" in str(e.value) and "audio.m4a" in str(e.value)


def test_zero_frames(tmp_path):
    import av
    path = tmp_path / "empty.mkv"
    with av.open(str(path), "w") as c:
        s = c.add_stream("libx264", rate=25)
        s.width, s.height, s.pix_fmt = 64, 64, "yuv420p"
        c.start_encoding()  # header and trailer, no packet
    assert path.stat().st_size > 0
    with pytest.raises(EmptyMediaError):
        VideoReader(path)


def test_range_selecting_nothing(tmp_path, clip):
    from facecomp.render.clip import RenderSettings
    with pytest.raises(EmptyMediaError):
        render_clip(clip, tmp_path / "o.mp4", Engine(), RenderSettings(start=8))


def test_odd_size_kept_exactly(tmp_path):
    frames = [pattern(151, 203, i) for i in range(3)]
    src = write_sequence(tmp_path / "in", frames)
    out = tmp_path / "odd.mp4"
    res = render_clip(src, out, Engine())
    got = decode_all(out)
    assert got[0].shape == (151, 203, 3)
    assert any("4:4:4" in n for n in res.notes)


def test_huge_frames_refused_before_allocation(tmp_path):
    img = np.zeros((8200, 8200), np.uint8)  # 67 MP > the 8K-square limit
    p = tmp_path / "huge"
    p.mkdir()
    cv2.imwrite(str(p / "f_0000.png"), img)
    with pytest.raises(InvalidMediaError) as e:
        VideoReader(p)
    assert "8200x8200" in str(e.value)


def test_grayscale_and_16bit_gray_sources(tmp_path):
    p = tmp_path / "gray"
    p.mkdir()
    for i in range(2):
        cv2.imwrite(str(p / f"g_{i:03d}.png"), (pattern(120, 160, i)[..., 0].astype(np.uint16) * 257))
    r = VideoReader(p)
    img = next(r.frames()).image
    assert img.shape == (120, 160, 3) and img.dtype == np.uint16
    assert np.array_equal(img[..., 0], img[..., 1])


def test_output_equal_to_input_refused_and_input_untouched(tmp_path, clip):
    before = clip.read_bytes()
    with pytest.raises(OutputError) as e:
        render_clip(clip, clip, Engine())
    assert "never modifies its source" in str(e.value)
    assert clip.read_bytes() == before


def test_unwritable_or_missing_output_folder(tmp_path, clip):
    with pytest.raises(OutputError) as e:
        render_clip(clip, tmp_path / "missing" / "o.mp4", Engine())
    assert "does not exist" in str(e.value)
    (tmp_path / "afile").write_text("x")
    with pytest.raises(OutputError) as e:
        render_clip(clip, tmp_path / "afile" / "o.mp4", Engine())
    assert "not a folder" in str(e.value)
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o500)
    # root writes through permission bits; the immutable attribute stops root too (where chattr works)
    immutable = os.access(ro, os.W_OK) and shutil.which("chattr") is not None and \
        subprocess.run(["chattr", "+i", str(ro)], capture_output=True).returncode == 0
    try:
        if os.access(ro, os.W_OK) and not immutable:
            pytest.skip("root, and the filesystem has no immutable attribute: no folder is unwritable here")
        with pytest.raises(OutputError) as e:
            render_clip(clip, ro / "o.mp4", Engine())
        assert "not writable" in str(e.value) and "ro" in str(e.value)
        assert list(ro.iterdir()) == []
    finally:
        if immutable:
            subprocess.run(["chattr", "-i", str(ro)], check=True)
        ro.chmod(0o700)


def test_disk_full_leaves_nothing(tmp_path, clip):
    """RLIMIT_FSIZE makes writes fail mid-file, as a full disk does; the CLI reports it, no partial file."""
    out = tmp_path / "out"
    out.mkdir()
    code = (
        "import resource, signal, sys\n"
        "signal.signal(signal.SIGXFSZ, signal.SIG_IGN)\n"
        "resource.setrlimit(resource.RLIMIT_FSIZE, (20000, 20000))\n"
        "from facecomp.cli import main\n"
        f"sys.exit(main(['render', {str(clip)!r}, '-o', {str(out / 'o.mp4')!r}, '--quiet', '--crf', '0']))\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.returncode == OutputError.exit_code, proc.stderr
    assert "Traceback" not in proc.stderr
    assert "o.mp4" in proc.stderr
    assert list(out.iterdir()) == []


def test_unsupported_output_settings(tmp_path, clip):
    info = VideoReader(clip).info
    with pytest.raises(SettingsError):
        resolve(EncodeSettings(codec="prores"), tmp_path / "x.mp4", info)
    with pytest.raises(SettingsError):
        resolve(EncodeSettings(), tmp_path / "x.avi", info)
    # an image name without a %0Nd pattern is a single still: refused for a range of several frames
    with pytest.raises(SettingsError, match="single image") as e:
        render_clip(clip, tmp_path / "x.png", Engine())
    assert "--start" in str(e.value) and "%05d" in str(e.value)
    assert _leftovers(tmp_path, {"in.mp4"}) == []


# ---------------------------------------------------------------- the disclosure cannot be skipped
def test_writer_refuses_unstamped_frames(tmp_path):
    from facecomp.video.writer import VideoWriter
    info = VideoReader(write_clip(tmp_path / "in.mp4", n=2)).info
    enc = resolve(EncodeSettings(), tmp_path / "o.mp4", info)
    w = VideoWriter(tmp_path / "o.mp4", enc=enc, size=(320, 240), fps=info.fps, time_base=info.time_base)
    try:
        with pytest.raises(TypeError):
            w.write(pattern(240, 320, 0))
        with pytest.raises(TypeError):
            StampedFrame(pattern(240, 320, 0), 0, 0.0, (), object())
    finally:
        w.abort()
    assert _leftovers(tmp_path, {"in.mp4"}) == []


@pytest.mark.parametrize("kw", [{"scale": 0.5}, {"opacity": 0.1}, {"text": "altered"}, {"text": ""},
                                {"corner": "off"}])
def test_label_cannot_be_disabled_or_shrunk(kw):
    with pytest.raises(DisclosureError):
        Engine(label=LabelSettings(**kw))


def test_engine_render_is_labelled():
    frame = pattern(240, 320, 0)
    engine = Engine()
    out = engine.render(frame, 0.0)
    assert out.shape == frame.shape and not np.array_equal(out, frame)
    assert np.array_equal(Stamper(watermark_id=engine.session_id).stamp(frame).pixels, out)


def test_cli_maps_errors_to_exit_codes(tmp_path, clip, capsys):
    assert main(["render", str(clip), "-o", str(clip), "--quiet"]) == OutputError.exit_code
    assert main(["render", str(tmp_path / "nope.mp4"), "-o", str(tmp_path / "o.mp4"), "--quiet"]) == \
        InvalidMediaError.exit_code
    assert main(["render", str(clip), "-o", str(tmp_path / "o.mp4"), "--label-scale", "0.5", "--quiet"]) == \
        DisclosureError.exit_code
    err = capsys.readouterr().err
    assert "Traceback" not in err and "never modifies its source" in err and "nope.mp4" in err
    assert not (tmp_path / "o.mp4").exists()


def test_a_failing_set_up_leaves_no_temporary_folder(tmp_path, clip):
    """A session that cannot open (here a processor refusing the clip) fails before any frame; the image
    sequence's temporary folder is removed with it."""
    class Refusing:
        name, thread_safe, lookahead = "refusing", True, 0

        def for_clip(self):
            raise RuntimeError("this processor refuses the clip")

        def process(self, frame, ctx):  # pragma: no cover - never reached
            raise AssertionError

        def model_records(self):
            return []

        def settings_dict(self):
            return {}

    out = tmp_path / "seq"
    out.mkdir()
    with pytest.raises(RuntimeError, match="refuses the clip"):
        render_clip(clip, out / "f_%05d.png", Engine([Refusing()]))
    assert list(out.iterdir()) == []
