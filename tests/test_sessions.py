"""Clip sessions: per-clip state, order independence, thread safety, random access at every bit depth."""

from __future__ import annotations

import argparse
import concurrent.futures as cf
import dataclasses
import hashlib

import numpy as np
import pytest
from facecomp.disclosure.watermark import decode_frame, manifest_id_for
from facecomp.effect import Engine
from facecomp.errors import SettingsError
from facecomp.video.reader import VideoReader
from mediagen import pattern, write_clip

N = 10  # frames per clip: enough for keyframes, tracking and the colour history, fast on two cores


@pytest.fixture(scope="module")
def media(shared_media):
    return shared_media


@pytest.fixture(scope="module")
def engine(media):
    from facecomp.swap.cli_args import add_swap_arguments, processor_from_args

    p = argparse.ArgumentParser()
    add_swap_arguments(p)
    args = p.parse_args(["--source", str(media / "grace_hopper.jpg"), "--detect-every", "4"])
    return Engine([processor_from_args(args, fps=25.0)])


def _frames(path, n=N):
    r = VideoReader(path, dtype="uint8")
    try:
        return [r.frame(i).copy() for i in range(n)]
    finally:
        r.close()


def _digest(a: np.ndarray) -> str:
    return hashlib.sha256(np.ascontiguousarray(a).tobytes()).hexdigest()


def _render(session, frames, order):
    return {i: session.render(frames[i], i, i / 25.0) for i in order}


def test_frame_is_the_same_first_last_alone_or_in_order(engine, media):
    clip = media / "grid_lwbsza.mpg"
    frames = _frames(clip)
    with engine.open_clip(clip, "clip-a") as s:
        in_order = _render(s, frames, range(N))
    assert all(in_order[i].replaced_tracks for i in range(N)), "the GRID face is replaced on every frame"
    assert any(not np.array_equal(in_order[i].pixels, frames[i]) for i in range(N))
    with engine.open_clip(clip, "clip-a") as s:
        backwards = _render(s, frames, reversed(range(N)))
    with engine.open_clip(clip, "clip-a") as s:
        scattered = _render(s, frames, [7, 2, 9, 0, 5])
    for i in (N - 1, 4):
        with engine.open_clip(clip, "clip-a") as s:
            alone = s.render(frames[i], i, i / 25.0)
        assert np.array_equal(alone.pixels, in_order[i].pixels), f"frame {i} alone"
    for i in range(N):
        assert np.array_equal(backwards[i].pixels, in_order[i].pixels), f"frame {i} rendered backwards"
        assert backwards[i].replaced_tracks == in_order[i].replaced_tracks
    for i, got in scattered.items():
        assert np.array_equal(got.pixels, in_order[i].pixels), f"frame {i} rendered out of order"
    # the engine itself kept nothing of the clip
    proc = engine.processors[0]
    assert not proc.analyzer._indexes and not proc.analyzer._raw_cache


def test_two_clips_interleaved_from_four_threads_equal_each_alone(engine, media):
    clips = {"a": media / "grid_lwbsza.mpg", "b": media / "grid_bbaf2n.mpg"}
    frames = {k: _frames(p, 8) for k, p in clips.items()}
    alone = {}
    for k, p in clips.items():
        with engine.open_clip(p, f"clip-{k}") as s:
            alone[k] = [_digest(s.render(frames[k][i], i, i / 25.0).pixels) for i in range(8)]
    assert alone["a"] != alone["b"]
    sessions = {k: engine.open_clip(p, f"clip-{k}") for k, p in clips.items()}
    try:
        jobs = [(k, i) for i in range(8) for k in ("a", "b")]  # interleaved
        with cf.ThreadPoolExecutor(4) as pool:
            futs = {(k, i): pool.submit(lambda k=k, i=i: sessions[k].render(frames[k][i], i, i / 25.0))
                    for k, i in jobs}
            got = {key: _digest(f.result().pixels) for key, f in futs.items()}
    finally:
        for s in sessions.values():
            s.close()
    for k in clips:
        assert [got[(k, i)] for i in range(8)] == alone[k], f"clip {k} differs when rendered beside the other"


def test_session_watermark_names_the_clip(engine, media):
    frames = _frames(media / "grid_swiz3n.mpg", 1)
    with engine.open_clip(None, "host-clip-7") as s:
        out = s.render(frames[0], 0, 0.0)
    dec = decode_frame(out.pixels)
    assert dec.found and dec.payload is not None
    assert dec.payload.manifest_id == manifest_id_for("host-clip-7")


def test_pixels_only_session_analyses_each_frame_alone(engine, media):
    frames = _frames(media / "grid_bbaf2n.mpg", 4)
    with engine.open_clip(None, "pixels") as s:
        assert s.frames is None
        first = [s.render(frames[i], i, i / 25.0) for i in range(4)]
        again = s.render(frames[2], 2, 2 / 25.0)
    assert all(f.replaced_tracks for f in first)
    assert np.array_equal(again.pixels, first[2].pixels)
    # the face on the frame was replaced: pixels changed outside the label box too
    box = engine.stamper.label_box(*frames[0].shape[:2])
    diff = np.any(first[0].pixels != frames[0], axis=2)
    diff[box[1]:box[3], box[0]:box[2]] = False
    assert diff.sum() > 500


def test_session_refuses_bad_calls(engine, media):
    frame = _frames(media / "grid_bbaf2n.mpg", 1)[0]
    with engine.open_clip(media / "grid_bbaf2n.mpg", "c") as s:
        with pytest.raises(SettingsError):
            s.render(frame, 10_000, 0.0)  # outside the clip
        with pytest.raises(SettingsError):
            s.render(frame, 0, 0.0, alpha="multiply")
        with pytest.raises(SettingsError):
            s.render(frame[:100], 0, 0.0, full_size=(288, 360), window=(0, 0, 360, 99))
        with pytest.raises(SettingsError):
            s.render(frame.astype(np.int32), 0, 0.0)
    with pytest.raises(SettingsError):
        s.render(frame, 0, 0.0)  # closed
    with pytest.raises(SettingsError):
        engine.open_clip(None, "")


def test_engine_without_processors_sessions_are_parallel(tmp_path):
    eng = Engine()
    frame = pattern(120, 160, 0)
    with eng.open_clip(None, "x") as s:
        assert s.thread_safe
        a = s.render(frame, 0, 0.0)
    with eng.open_clip(None, "y") as s:
        b = s.render(frame, 0, 0.0)
    assert not np.array_equal(a.pixels, b.pixels), "the watermark id follows the clip id"
    assert dataclasses.is_dataclass(a) is False


# ------------------------------------------------------------------ random access at 16 bits and float

@pytest.mark.parametrize("dtype", ["uint16", "float32"])
def test_random_access_equals_sequential_pass_wide(tmp_path, dtype):
    frames = [pattern(96, 128, i, dtype=np.uint16) for i in range(14)]
    clip = write_clip(tmp_path / "ten.mkv", w=128, h=96, n=14, pix_fmt="yuv444p10le", frames=frames,
                      options={"g": "4", "bf": "2"})
    seq = {d.index: d.image for d in VideoReader(clip, dtype=dtype).frames()}
    r = VideoReader(clip, dtype=dtype)
    try:
        assert r.info.bit_depth == 10
        for i in (9, 2, 13, 0, 5, 6, 12):
            got = r.frame(i, dtype=dtype)
            assert got.dtype == np.dtype(dtype)
            assert np.array_equal(got, seq[i]), f"frame {i}"
        # a wide frame keeps more than 8 bits of precision
        vals = np.unique(r.frame(3, dtype=dtype)[..., 1])
        assert vals.size > 256
        assert np.array_equal(r.frame(4, dtype=np.dtype(dtype)), seq[4])  # a numpy dtype works too
        with pytest.raises(ValueError):
            r.frame(4, dtype="int32")
    finally:
        r.close()


# ------------------------------------------------------------------ stamping into the caller's buffer

@pytest.mark.parametrize("dtype", ["uint8", "uint16", "float32"])
def test_render_into_out_equals_render_and_is_only_a_receipt(dtype):
    """``out=``: the stamped pixels land in the caller's buffer (in place when it is the frame), bit for bit
    what a plain render returns; the StampedFrame is then a receipt whose pixels no writer can take."""
    from facecomp.errors import DisclosureError

    rng = np.random.default_rng(3)
    base = rng.random((120, 160, 4), dtype=np.float32)
    if dtype == "float32":
        base[2:6, 2:6, :3] = 2.5  # HDR values outside the label box stay
        base[-20:-16, -30:-26, 1] = np.nan
        frame = base
    else:
        frame = (base * np.iinfo(dtype).max).astype(dtype)
    with Engine().open_clip(None, "out-test") as s:
        for alpha, geometry in (("straight", {}),
                                ("premultiplied", {"full_size": (240, 320), "window": (160, 120, 320, 240)})):
            ref = s.render(frame, 4, 0.16, alpha=alpha, **geometry).pixels
            # in place, in rows padded like a host's image (the padding is left alone)
            padded = np.zeros((120, 170, 4), frame.dtype)
            view = padded[:, 5:165]
            view[...] = frame
            got = s.render(view, 4, 0.16, alpha=alpha, out=view, **geometry)
            assert got.delivered and got.replaced_tracks == ()
            assert np.array_equal(view, ref, equal_nan=True)
            assert not padded[:, :5].any() and not padded[:, 165:].any()
            # into another buffer: the frame stays as it was
            kept = frame.copy()
            out = np.full_like(frame, 7)
            s.render(kept, 4, 0.16, alpha=alpha, out=out, **geometry)
            assert np.array_equal(out, ref, equal_nan=True) and np.array_equal(kept, frame, equal_nan=True)
        with pytest.raises(DisclosureError):
            got.pixels  # the caller can still change that memory: no writer may take it as stamped
        assert "delivered" in repr(got)
        with pytest.raises(SettingsError):
            s.render(frame, 0, 0.0, out=np.empty((120, 161, 4), frame.dtype))
        ro = np.empty_like(frame)
        ro.flags.writeable = False
        with pytest.raises(SettingsError):
            s.render(frame, 0, 0.0, out=ro)
        shifted = np.zeros((121, 160, 4), frame.dtype)
        with pytest.raises(ValueError, match="overlaps"):
            s.render(shifted[:120], 0, 0.0, out=shifted[1:])


def test_face_render_into_out_equals_render(engine, media):
    """With a face swapped (the processor returns a new array) the watermark's final add writes into out."""
    clip = media / "grid_lwbsza.mpg"
    frame = _frames(clip, 3)[2]
    with engine.open_clip(clip, "clip-out") as s:
        ref = s.render(frame, 2, 2 / 25.0)
        buf = frame.copy()
        got = s.render(buf, 2, 2 / 25.0, out=buf)
    assert ref.replaced_tracks and got.replaced_tracks == ref.replaced_tracks
    assert np.array_equal(buf, ref.pixels) and not np.array_equal(buf, frame)


def test_a_frame_stamped_into_a_buffer_cannot_reach_a_writer(tmp_path):
    """The attack ``out=`` would open: stamp into a buffer, put the unlabelled pixels back, hand the receipt
    to a writer. The writer reads ``pixels``, which a delivered frame refuses, so nothing is encoded."""
    from fractions import Fraction

    from facecomp.errors import DisclosureError
    from facecomp.video.encode import ResolvedEncode
    from facecomp.video.writer import VideoWriter

    frame = pattern(120, 160, 2)
    buf = frame.copy()
    enc = ResolvedEncode(codec="h264", encoder="libx264", pix_fmt="yuv420p", bit_depth=8, alpha=False,
                         options={"preset": "veryfast"}, sequence=False)
    out = tmp_path / "o.mp4"
    writer = VideoWriter(out, enc=enc, size=(160, 120), fps=Fraction(25), time_base=Fraction(1, 25))
    try:
        with Engine().open_clip(None, "attack") as s:
            receipt = s.render(buf, 0, 0.0, out=buf)
            assert not np.array_equal(buf, frame)  # stamped there
            buf[...] = frame  # the caller's memory: it can undo the label
            with pytest.raises(DisclosureError):
                writer.write(receipt, 0)
    finally:
        writer.abort()
    assert not out.exists()


class _CountingSource:
    """A clip's decoded frames as a FrameSource that counts its reads (what the clip's analysis costs)."""

    def __init__(self, frames):
        self.frames, self.reads = frames, 0

    def __len__(self) -> int:
        return len(self.frames)

    def frame(self, index: int) -> np.ndarray:
        self.reads += 1
        return self.frames[index]


def test_engine_render_frame_after_frame_keeps_the_clips_session(engine, media):
    """A host calling Engine.render for each frame of a clip (one source object) gets one clip session's
    work and pixels, not a fresh session per call (which read the source 12x as often); bounded."""
    frames = _frames(media / "grid_lwbsza.mpg")
    eng = Engine(engine.processors, label=None)
    src = _CountingSource(frames)
    got = [eng.render(frames[i], i / 25.0, index=i, source=src) for i in range(N)]
    ref = _CountingSource(frames)
    from facecomp.frames import FrameContext
    with eng.open_clip(ref, eng.session_id, stamper=eng.stamper) as s:  # whole frames, as Engine.render stamps
        want = [s.render_frame(frames[i], FrameContext(index=i, time=i / 25.0, source=ref)).pixels for i in range(N)]
    assert all(np.array_equal(a, b) for a, b in zip(got, want))
    assert any(not np.array_equal(a, f) for a, f in zip(got, frames))  # swapped and stamped
    assert src.reads == ref.reads  # one session's reads
    again = src.reads
    np.testing.assert_array_equal(eng.render(frames[5], 0.2, index=5, source=src), want[5])
    assert src.reads == again  # its analysis is still cached
    for _ in range(Engine.RENDER_SESSIONS):  # other clips push the first one's session out
        eng.render(frames[0], 0.0, index=0, source=_CountingSource(frames))
    np.testing.assert_array_equal(eng.render(frames[5], 0.2, index=5, source=src), want[5])
    assert src.reads > again  # a new session: the source is read again
    eng.close()
    lone = eng.render(frames[3], 0.12, index=3)  # no source: a lone frame, nothing kept
    assert lone.shape == frames[3].shape and not np.array_equal(lone, frames[3])

