"""A render that starts late seeks to a keyframe before its range instead of decoding from frame 0.

The queue renders long clips in segments; the frames must be the ones a render from frame 0 gives.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from facecomp.effect import Engine
from facecomp.render.clip import RenderSettings, _open_at, render_clip
from facecomp.video.encode import EncodeSettings
from facecomp.video.reader import VideoReader

from mediagen import read_sequence, write_clip


def _frames(src, tmp: Path, name: str, start: int, end: int) -> list[np.ndarray]:
    out = tmp / name
    out.mkdir()
    render_clip(src, out / "f_%05d.png", Engine(),
                RenderSettings(start=start, end=end, manifest_id="seek-test", encode=EncodeSettings()))
    return read_sequence(out)


def _check(src, tmp_path, start, end):
    reader = VideoReader(src)
    container, landed = _open_at(reader, start)
    container.close()
    late = _frames(src, tmp_path, "late", start, end)
    assert len(late) == end - start
    # the reference: every frame from 0 decoded in order, stamped the same way (same manifest id)
    ref = _frames(src, tmp_path, "ref", 0, end)[start:]
    for i, (a, b) in enumerate(zip(late, ref)):
        assert np.array_equal(a, b), f"frame {start + i} differs after the seek (landed on {landed})"
    return landed


def test_h264_with_b_frames_and_audio(tmp_path):
    src = write_clip(tmp_path / "in.mp4", n=90, fps=25, audio=True, options={"g": "12", "bf": "2"})
    landed = _check(src, tmp_path, 60, 70)
    assert 0 < landed <= 60 - 12  # it did seek: a keyframe at least half a second before the range


def test_real_mpeg_ps_and_mkv(shared_media, tmp_path):
    for name, start, end in (("grid_bbaf2n.mpg", 50, 58), ("intel_asl_book.mkv", 70, 78)):
        sub = tmp_path / name
        sub.mkdir()
        _check(shared_media / name, sub, start, end)


def test_the_audio_of_a_late_range_is_the_same_as_without_the_seek(tmp_path, monkeypatch):
    import av

    import facecomp.render.clip as rc

    src = write_clip(tmp_path / "in.mp4", n=150, fps=25, audio=True, options={"g": "12"})

    def audio(path):
        with av.open(str(path)) as c:
            return [(p.pts, bytes(p)) for p in c.demux(c.streams.audio[0]) if p.pts is not None]

    render_clip(src, tmp_path / "seek.mp4", Engine(), RenderSettings(start=100, end=140))
    monkeypatch.setattr(rc, "_open_at", lambda reader, start: (reader.open_container(), 0))  # decode from 0
    render_clip(src, tmp_path / "from0.mp4", Engine(), RenderSettings(start=100, end=140))
    seek, from0 = audio(tmp_path / "seek.mp4"), audio(tmp_path / "from0.mp4")
    assert len(seek) == 75 and seek == from0  # 1.6 s of 1024-sample AAC packets, byte for byte
