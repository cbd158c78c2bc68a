"""Renderer behaviour beyond pixels: streams the container cannot hold, timecode ranges, workers, cancel."""

from __future__ import annotations

import threading
import tracemalloc
from pathlib import Path

import av
import numpy as np
import pytest

from facecomp.effect import Engine, FrameContext, ProcessResult
from facecomp.errors import CancelledError, SettingsError
from facecomp.render.clip import RenderSettings, render_clip
from facecomp.render.progress import Progress
from facecomp.video.encode import EncodeSettings
from facecomp.video.reader import VideoReader

from mediagen import decode_all, mux_audio, pattern, write_clip

SRT = "1\n00:00:00,000 --> 00:00:00,200\nHello\n\n2\n00:00:00,240 --> 00:00:00,400\nWorld\n"


def _with_subtitles(tmp_path: Path) -> Path:
    video = write_clip(tmp_path / "v.mkv", n=12)
    (tmp_path / "s.srt").write_text(SRT)
    out = tmp_path / "vs.mkv"
    with av.open(str(video)) as vin, av.open(str(tmp_path / "s.srt")) as sin, av.open(str(out), "w") as o:
        vo = o.add_stream_from_template(vin.streams.video[0])
        so = o.add_stream_from_template(sin.streams.subtitles[0])
        for p in vin.demux(vin.streams.video[0]):
            if p.size:
                p.stream = vo
                o.mux(p)
        for p in sin.demux(sin.streams.subtitles[0]):
            if p.size:
                p.stream = so
                o.mux(p)
    return out


def _subs(path: Path) -> list[bytes]:
    with av.open(str(path)) as c:
        return [bytes(p) for p in c.demux(c.streams.subtitles) if p.size]


def test_subtitles_copied_into_mkv_and_reported_when_mp4_cannot_hold_them(tmp_path):
    src = _with_subtitles(tmp_path)
    out = tmp_path / "o.mkv"
    render_clip(src, out, Engine())
    assert _subs(out) == [b"Hello", b"World"]
    res = render_clip(src, tmp_path / "o.mp4", Engine())
    assert any("subtitle" in n and "dropped" in n for n in res.notes)
    assert any("subtitle" in w for w in res.manifest["warnings"])


def test_audio_reencoded_only_where_the_container_cannot_hold_it(tmp_path):
    src = tmp_path / "mulaw.mov"
    with av.open(str(src), "w") as c:
        s = c.add_stream("libx264", rate=25)
        s.width, s.height, s.pix_fmt = 320, 240, "yuv420p"
        a = c.add_stream("pcm_mulaw", rate=8000)
        a.layout = "mono"
        for i in range(10):
            for p in s.encode(av.VideoFrame.from_ndarray(pattern(240, 320, i), format="rgb24")):
                c.mux(p)
        for p in s.encode():
            c.mux(p)
        mux_audio(c, a, np.zeros(4 * 800, np.int16), 8000, fmt="s16", chunk=800)
    res = render_clip(src, tmp_path / "o.mp4", Engine())  # mp4 cannot hold mu-law
    assert any("re-encoded to AAC" in n for n in res.notes)
    with av.open(str(tmp_path / "o.mp4")) as c:
        assert c.streams.audio[0].codec_context.name == "aac"
    render_clip(src, tmp_path / "o.mov", Engine())  # mov can: copied, no note
    with av.open(str(tmp_path / "o.mov")) as c:
        assert c.streams.audio[0].codec_context.name == "pcm_mulaw"


def test_start_end_as_timecode(tmp_path):
    src = write_clip(tmp_path / "in.mov", n=20, timecode="01:00:00:00")
    out = tmp_path / "o.mov"
    res = render_clip(src, out, Engine(), RenderSettings(start="01:00:00:05", end="01:00:00:12"))
    assert res.frames == 7 and res.manifest["input"]["frames_rendered"] == [5, 11]
    assert VideoReader(out).info.timecode == "01:00:00:05"
    with pytest.raises(SettingsError):
        render_clip(src, tmp_path / "x.mov", Engine(), RenderSettings(start="00:59:59:00"))


class _Tint:
    """A thread-safe processor that writes the frame index into a corner pixel (to check ordering)."""

    name = "tint"
    thread_safe = True

    def __init__(self):
        self.threads: set[str] = set()

    def process(self, frame, ctx: FrameContext) -> ProcessResult:
        self.threads.add(threading.current_thread().name)
        out = frame.copy()
        out[-16:, -16:] = ctx.index * 15  # 15 apart: the watermark's few code values cannot blur it
        return ProcessResult(out, (1,) if ctx.index % 2 else ())

    def model_records(self):
        return []

    def settings_dict(self):
        return {}


def test_parallel_workers_keep_order_and_report_replaced_ranges(tmp_path):
    src = write_clip(tmp_path / "in.mkv", n=16, codec="ffv1", pix_fmt="yuv444p")
    tint = _Tint()
    res = render_clip(src, tmp_path / "o.mkv", Engine([tint]), RenderSettings(workers=3))
    frames = decode_all(tmp_path / "o.mkv")
    assert [int(round(f[-16:, -16:].mean() / 15)) for f in frames] == list(range(16))
    assert len(tint.threads) >= 2
    assert res.manifest["replacement"]["tracks"]["1"] == [[i, i] for i in range(1, 16, 2)]


def test_cancel_leaves_nothing(tmp_path):
    src = write_clip(tmp_path / "in.mp4", n=30)
    cancel = threading.Event()

    class CancelAfter:
        def start(self, job, total, unit="frames"):
            pass

        def advance(self, n=1):
            cancel.set()

        def message(self, text, level="info"):
            pass

        def finish(self, **summary):
            pass

    prog: Progress = CancelAfter()
    with pytest.raises(CancelledError):
        render_clip(src, tmp_path / "o.mp4", Engine(), progress=prog, cancel=cancel)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in.mp4"]


def test_memory_stays_flat_in_clip_length(tmp_path):
    """Python-side allocations of a 160-frame render stay within a few frames' worth of a 16-frame one."""
    def peak(n: int) -> int:
        src = write_clip(tmp_path / f"in{n}.mp4", n=n, w=320, h=240, options={"preset": "ultrafast"})
        tracemalloc.start()
        render_clip(src, tmp_path / f"o{n}.mp4", Engine(),
                    RenderSettings(encode=EncodeSettings(preset="ultrafast")))
        _, top = tracemalloc.get_traced_memory()
        tracemalloc.stop()
        return top

    short, long = peak(16), peak(160)
    frame = 320 * 240 * 3
    assert long < short + 4 * frame, (short, long)
