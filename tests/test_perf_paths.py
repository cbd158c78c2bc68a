"""The fast paths of face replacement give the same answers as the plain ones, with less work.

* The renderer's analysis reads the frames the render decodes (no second decode), also with interleaved
  audio, and analyses the next frame ahead on a helper thread; the output is bit-identical to analysing
  through the reader's random access, in order, in the worker.
* A lazy keyframe index (selection all / track:N) reads each frame once going forward and equals the
  sequential pass.
* Colour moments and triangle affines in closed form equal their plain numpy references.
"""

from __future__ import annotations

import argparse

import cv2
import numpy as np
import pytest

from facecomp.disclosure import manifest as mf
from facecomp.errors import ModelDownloadError
from facecomp.faces import bench as fbench
from facecomp.faces.analyzer import FaceAnalyzer, FaceSettings, analyze_image
from facecomp.render import clip as clipmod
from facecomp.render.clip import RenderSettings, render_clip
from facecomp.swap import color, mesh
from facecomp.video.encode import EncodeSettings
from facecomp.video.reader import VideoReader

from mediagen import decode_all, write_clip


@pytest.fixture(scope="module")
def astro():
    try:
        return fbench.load_reference()
    except ModelDownloadError as exc:
        pytest.skip(f"models/samples cannot be fetched: {exc}")


def face_frames(astro, n: int, w: int = 320, h: int = 240) -> list[np.ndarray]:
    """The real face drifting over a face-free background."""
    lm = analyze_image(astro)[0].landmarks
    patch, _, mask = fbench._face_patch(astro, lm)
    out = []
    for i in range(n):
        canvas = fbench._background(h, w, seed=5)
        m = cv2.getRotationMatrix2D((patch.shape[1] / 2, patch.shape[0] / 2), 4 * np.sin(i / 3), 0.5)
        m[:, 2] += np.array([110 + 3 * i, 120]) - np.array([patch.shape[1] / 2, patch.shape[0] / 2])
        fbench._place(canvas, patch, mask, m)
        out.append(canvas)
    return out


class CountingSource:
    def __init__(self, frames):
        self.frames, self.reads = frames, []

    def __len__(self):
        return len(self.frames)

    def frame(self, i):
        self.reads.append(i)
        return self.frames[i]


def test_lazy_index_reads_each_frame_once_and_equals_the_sequential_pass(astro):
    frames = face_frames(astro, 20)
    settings = FaceSettings(detect_every=4, fps=25)
    seq = FaceAnalyzer(settings).analyze_clip(enumerate(frames))
    src = CountingSource(frames)
    lazy = FaceAnalyzer(settings)
    for i in range(len(frames)):
        got = lazy.faces_at(i, src)
        assert [f.track_id for f in got] == [f.track_id for f in seq.frames[i]]
        assert all(np.array_equal(a.landmarks, b.landmarks) for a, b in zip(got, seq.frames[i]))
        assert all(f.selected for f in got)
        # never further than the look-ahead
        assert max(src.reads) == min(len(frames) - 1, i + lazy.lookahead)
    assert sorted(src.reads) == list(range(len(frames)))  # each frame read exactly once
    assert sum(len(f) for f in seq.frames.values()) == len(frames)  # the face is on every frame
    # track:N decides per track at its start, as the whole-clip pass does
    tid = seq.frames[0][0].track_id
    for sel, want in ((f"track:{tid}", True), (f"track:{tid + 7}", False)):
        an = FaceAnalyzer(FaceSettings(detect_every=4, fps=25, selection=sel))
        assert [f.selected for f in an.faces_at(9, CountingSource(frames))] == [want]


def _engine(astro, tmp_path, *flags: str):
    from facecomp.cli import cmd_render

    photo = tmp_path / "source.png"
    cv2.imwrite(str(photo), cv2.cvtColor(astro, cv2.COLOR_RGB2BGR))
    parser = argparse.ArgumentParser()
    cmd_render.add_arguments(parser)
    return cmd_render.build_engine(parser.parse_args(["in", "-o", "out.mp4", "--source", str(photo), "--quiet",
                                                      *flags]))


def test_render_analysis_reads_the_render_decode_and_matches_random_access(astro, tmp_path, monkeypatch):
    frames = face_frames(astro, 16)
    # interleaved audio: its packets must not hold back the frames the analysis reads ahead
    src = write_clip(tmp_path / "in.mkv", w=320, h=240, n=len(frames), frames=frames, audio=True,
                     options={"preset": "ultrafast", "crf": "12"})
    monkeypatch.setattr(mf, "new_manifest_id", lambda: "00000000-0000-4000-8000-000000000000")
    reads: list[int] = []
    original = VideoReader.frame

    def counted(self, index, dtype="uint8"):
        reads.append(index)
        return original(self, index, dtype)

    monkeypatch.setattr(VideoReader, "frame", counted)
    conversions: list[int] = []
    convert = VideoReader.convert

    def converting(self, frame, *a, **kw):
        conversions.append(frame.pts)
        return convert(self, frame, *a, **kw)

    monkeypatch.setattr(VideoReader, "convert", converting)
    # the render's clip session has its own worker (and look-ahead thread): seen when the session closes it
    from facecomp.swap.processor import FaceSwapProcessor

    looked_ahead: list[bool] = []
    close = FaceSwapProcessor.close

    def closing(self):
        looked_ahead.append(self._executor is not None)
        close(self)

    monkeypatch.setattr(FaceSwapProcessor, "close", closing)
    settings = RenderSettings(encode=EncodeSettings(codec="ffv1"))
    # the glasses decision reads a track's first frames on into the frames after them (up to 24): past
    # what the render decodes ahead, those come from the reader's random access, once per clip start and
    # per new track (holding the render's decode that far ahead would hold 25 frames: 600 MB at 4K)
    bare = render_clip(src, tmp_path / "bare.mkv", _engine(astro, tmp_path, "--no-glasses"), settings)
    assert bare.frames == len(frames) and reads == []  # every analysed frame came from the render's own decode
    looked_ahead.clear()
    conversions.clear()
    engine = _engine(astro, tmp_path)
    fast = render_clip(src, tmp_path / "fast.mkv", engine, settings)
    from facecomp.swap.occlusion import GLASSES_WINDOW

    # only the first track's first 25 frames past the render's decode, once each (the decode holds up to
    # 17 frames here: on this clip it may hold them all, the writer permitting)
    assert set(reads) <= set(range(engine.processors[0].lookahead + 1, min(len(frames), GLASSES_WINDOW)))
    assert len(reads) == len(set(reads))
    read_ahead = len(set(reads))
    reads.clear()
    # ... converted to RGB once: the hand track's own frame is the effect's (it was converted again on each
    # of the palm detector's frames, about 4 ms at 720p)
    # (and those read ahead once more, by the reader)
    assert len(set(conversions)) == len(frames) and len(conversions) == len(frames) + read_ahead
    assert fast.manifest["replacement"]["frames_total"] == len(frames)
    assert sum(b - a + 1 for a, b in fast.manifest["replacement"]["ranges"]) == len(frames)

    assert looked_ahead == [True]  # the next frame was analysed ahead, on its own thread

    # the same render the plain way: analysis on the reader's random access, in the worker, in order
    monkeypatch.setattr(clipmod._StreamFrames, "frame", lambda self, i: original(self.reader, i))
    monkeypatch.setattr(clipmod._StreamFrames, "pixels", lambda self, i, f: self.reader.convert(f))
    plain_engine = _engine(astro, tmp_path)
    plain_engine.processors[0].prefetch = False
    plain = render_clip(src, tmp_path / "plain.mkv", plain_engine, settings)
    assert looked_ahead == [True, False]
    a, b = decode_all(tmp_path / "fast.mkv"), decode_all(tmp_path / "plain.mkv")
    assert len(a) == len(b) == len(frames)
    assert all(np.array_equal(x, y) for x, y in zip(a, b))
    assert fast.manifest["replacement"] == plain.manifest["replacement"]
    # the face really changed (not a pass-through)
    assert np.abs(a[8].astype(int) - frames[8]).max() > 40


@pytest.mark.parametrize("glasses", [False, True])
def test_trimmed_render_reads_only_the_look_ahead_past_the_end(astro, tmp_path, monkeypatch, glasses):
    from facecomp.swap.occlusion import GLASSES_WINDOW

    frames = face_frames(astro, 30)
    src = write_clip(tmp_path / "in.mp4", w=320, h=240, n=len(frames), frames=frames,
                     options={"preset": "ultrafast"})
    reads: list[int] = []
    original = VideoReader.frame
    monkeypatch.setattr(VideoReader, "frame", lambda self, i, dtype="uint8": reads.append(i) or original(self, i, dtype))
    engine = _engine(astro, tmp_path, *(() if glasses else ("--no-glasses",)))
    res = render_clip(src, tmp_path / "out.mp4", engine, RenderSettings(end=8, encode=EncodeSettings(preset="ultrafast")))
    assert res.frames == 8
    lookahead = engine.processors[0].analyzer.lookahead  # the last frame's gap look-ahead, no prefetch past the end
    # with glasses the track's first frames read on to its 25th (and the analysis that far, its gap look-ahead)
    last = GLASSES_WINDOW - 1 + lookahead if glasses else 7 + lookahead
    assert lookahead > 0 and sorted(set(reads)) == list(range(8, last + 1))


def test_colour_moments_equal_the_plain_numpy_ones():
    rng = np.random.default_rng(3)
    img = rng.random((70, 90, 3), dtype=np.float32)
    mask = np.zeros((70, 90), np.float32)
    cv2.ellipse(mask, (45, 35), (40, 30), 0, 0, 360, 1.0, -1)
    st = color.stats(img, mask)
    px = img[mask > 0.5].astype(np.float64)
    lab = cv2.cvtColor(img, cv2.COLOR_RGB2Lab)[mask > 0.5].astype(np.float64)
    assert np.allclose(st.mean, px.mean(0), atol=1e-6)
    assert np.allclose(st.cov, np.cov(px.T), atol=1e-6)
    assert np.allclose(st.lab_mean, lab.mean(0), atol=1e-3)
    assert np.allclose(st.lab_std, lab.std(0) + 1e-3, atol=1e-3)
    # big patches are thinned in 2-D: the same moments within sampling noise
    big = cv2.resize(img, (900, 700), interpolation=cv2.INTER_NEAREST)
    bmask = cv2.resize(mask, (900, 700), interpolation=cv2.INTER_NEAREST)
    sb = color.stats(big, bmask)
    assert np.abs(sb.mean - st.mean).max() < 0.01 and np.abs(sb.lab_std - st.lab_std).max() < 0.5
    # rct: the face's moments taken from its own Lab image equal those of stats()
    target = color.stats(np.clip(img * 0.5 + 0.3, 0, 1), mask)
    a = color.transfer("rct", img, mask, target_stats=target)
    b = color.transfer("rct", img, mask, target_stats=target, face_stats=st)
    assert np.abs(a - b).max() < 1e-3


def test_triangle_affines_equal_a_linear_solve():
    rng = np.random.default_rng(4)
    dst = (rng.random((468, 2)) * 200).astype(np.float32)
    src = (rng.random((468, 2)) * 200).astype(np.float32)
    tris = mesh.delaunay(dst)
    got = mesh.triangle_affines(dst, src, tris)
    d = np.concatenate([dst[tris], np.ones(tris.shape + (1,))], axis=2).astype(np.float64)
    want = np.linalg.solve(d, src[tris].astype(np.float64))
    assert np.allclose(got, want, rtol=1e-5, atol=1e-3)  # float32 output of sliver triangles' big terms
    # each affine maps its destination corners onto the source corners
    corners = np.einsum("tij,tjk->tik", d, got.astype(np.float64))
    assert np.median(np.abs(corners - src[tris])) < 1e-3
    degenerate = dst.copy()
    degenerate[tris[0, 1]] = degenerate[tris[0, 0]]
    assert np.isfinite(mesh.triangle_affines(degenerate, src, tris)).all()


def test_keyframe_miss_of_a_tracked_face_skips_the_rotated_redetections(astro):
    """A keyframe where the detector misses a face the previous keyframe had: the landmarker relocates it
    and the four rotated re-detections are not run; where the face is really gone, they still are."""
    frames = face_frames(astro, 13)
    frames[12] = fbench._background(240, 320, seed=5)  # keyframe 12: no face at all
    an = FaceAnalyzer(FaceSettings(detect_every=4, fps=25))
    upright, rotated = an._detect, []
    calls = iter(range(100))
    an._detect = lambda rgb: [] if next(calls) == 1 else upright(rgb)  # keyframe 4: a detector miss
    plain_detect = an.detector.detect
    an.detector.detect = lambda rgb, angle=0.0: rotated.append(angle) or plain_detect(rgb, angle=angle)
    ts = an.analyze_clip(enumerate(frames))
    assert [len(ts.frames[i]) for i in range(12)] == [1] * 12  # the miss at 4 kept the face
    assert len({f.track_id for i in range(12) for f in ts.frames[i]}) == 1
    assert ts.frames[12] == []
    assert len([a for a in rotated if a != 0.0]) == 4  # only keyframe 12 (nothing to relocate) searched rotated
