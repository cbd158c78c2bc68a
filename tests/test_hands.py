"""Hands near faces: MediaPipe's palm detector + hand landmarker (.tflite from the mediapipe wheel) on LiteRT.

The models come through the registry (fetched from the mediapipe==0.10.21 wheel on first use, sha256
verified). The real-hand checks use the shared ASL clip and skip, with a reason, where it is absent.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest


def _media() -> Path | None:
    env = os.environ.get("FACECOMP_SAMPLE_MEDIA")
    for c in ([Path(env)] if env else []) + [Path(__file__).resolve().parents[1].parent / "shared" / "media"]:
        if (c / "intel_asl_book.mkv").is_file():
            return c
    return None


MEDIA = _media()


def test_registry_declares_the_hand_models_from_the_mediapipe_wheel():
    from facecomp.models import registry

    for name in ("palm_detection", "hand_landmark"):
        spec = registry.get(name)
        assert spec.package == "mediapipe" and spec.package_version == "0.10.21"
        assert spec.member.endswith(".tflite") and len(spec.sha256) == 64
        path = registry.ensure(name)
        assert registry.verify_file(spec, path) == path  # the hash is checked, not just the name
        assert path.stat().st_size == spec.size


def test_mediapipe_itself_is_never_imported():
    import sys

    import facecomp.faces.hands  # noqa: F401

    assert "mediapipe" not in sys.modules


def test_hand_mask_covers_the_palm_and_fingers_only():
    from facecomp.faces.hands import Hand, hand_mask

    # an upright open hand: wrist at the bottom, five straight fingers
    kp = np.zeros((21, 2), np.float32)
    kp[0] = (50, 90)
    for f, x in enumerate((30, 40, 50, 60, 70)):
        base = 1 + 4 * f
        for j in range(4):
            kp[base + j] = (x + (x - 50) * 0.1 * j, 70 - 12 * j)
    m = hand_mask([Hand(kp, 0.9)], (120, 100))
    assert m[80, 50] == 1.0          # palm
    assert m[40, 50] > 0.5           # middle finger
    assert m[5, 5] == 0.0 and m[110, 95] == 0.0
    shifted = hand_mask([Hand(kp, 0.9)], (120, 100), offset=(10.0, 0.0))
    assert shifted[80, 40] == 1.0    # the crop offset moves the silhouette


SKIP_MEDIA = pytest.mark.skipif(MEDIA is None,
                                reason="sample media (intel_asl_book.mkv) not found: set FACECOMP_SAMPLE_MEDIA")


def _face_box(face) -> tuple[float, float, float, float]:
    lm = np.asarray(face.landmarks, np.float32)
    lo, hi = lm.min(axis=0), lm.max(axis=0)
    return float(lo[0]) + 0.5, float(lo[1]) + 0.5, float(hi[0]) + 0.5, float(hi[1]) + 0.5


@SKIP_MEDIA
def test_finds_the_signing_hand_near_the_face_and_follows_it():
    from facecomp.faces.analyzer import FaceAnalyzer
    from facecomp.faces.hands import HandFinder
    from facecomp.video.reader import VideoReader

    src = VideoReader(MEDIA / "intel_asl_book.mkv", dtype="uint8")
    try:
        analyzer = FaceAnalyzer()
        faces = {}

        def at(j):
            if j not in faces:
                faces[j] = analyzer.faces_at(j, src)[0]
            return src.frame(j), _face_box(faces[j])

        finder = HandFinder()
        assert not finder.near(src.frame(0), _face_box(analyzer.faces_at(0, src)[0]))  # hands down at the start
        hands = finder.hands_at(24, 0, at)
        assert len(hands) >= 1 and hands[0].presence > 0.5
        x0, y0, x1, y1 = hands[0].box
        fx0, fy0, fx1, fy1 = faces[24].bbox
        assert y0 < fy1 + 0.5 * (fy1 - fy0) and x1 > fx0 and x0 < fx1  # raised to the chin, under the face
        # next frame: the same hand, followed by the landmarker from the previous keypoints (it moves: signing)
        followed = finder.hands_at(25, 0, at)
        assert followed and np.abs(followed[0].keypoints - hands[0].keypoints).mean() < hands[0].palm_width
        assert not np.array_equal(followed[0].keypoints, hands[0].keypoints)
    finally:
        src.close()


@SKIP_MEDIA
def test_hand_track_at_a_frame_is_the_same_whatever_came_before():
    """Frame n's hands are a function of the clip's frames before it: in order, backwards and alone (a
    new finder) agree exactly, across a track restart (segment 48 here: frames 48.. start at 24)."""
    from facecomp.faces.analyzer import FaceAnalyzer
    from facecomp.faces.hands import HandFinder, HandSettings
    from facecomp.video.reader import VideoReader

    src = VideoReader(MEDIA / "intel_asl_book.mkv", dtype="uint8")
    try:
        analyzer = FaceAnalyzer()
        boxes = {}

        def at(j):
            if j not in boxes:
                boxes[j] = _face_box(analyzer.faces_at(j, src)[0])
            return src.frame(j), boxes[j]

        first = HandFinder(HandSettings(segment=48, warmup=24))
        frames = range(40, 58)
        in_order = {i: first.hands_at(i, 0, at) for i in frames}
        assert sum(bool(h) for h in in_order.values()) >= 5  # hands at the chin on these frames
        backwards = HandFinder(first.settings, models=first)
        got = {i: backwards.hands_at(i, 0, at) for i in reversed(frames)}
        alone = HandFinder(first.settings, models=first).hands_at(55, 0, at)
        for i in frames:
            assert [h.keypoints.tobytes() for h in got[i]] == [h.keypoints.tobytes() for h in in_order[i]], i
        assert [h.keypoints.tobytes() for h in alone] == [h.keypoints.tobytes() for h in in_order[55]]
    finally:
        src.close()


@SKIP_MEDIA
def test_swapped_frames_with_hands_are_the_same_in_order_scattered_and_alone():
    """Through one clip session: the swapped, stamped pixels of frames with hands at the face do not
    depend on which frames were rendered before (editors scrub; the OFX bridge and server rely on it)."""
    import argparse

    from facecomp.effect import Engine
    from facecomp.swap.cli_args import add_swap_arguments, processor_from_args
    from facecomp.video.reader import VideoReader

    p = argparse.ArgumentParser()
    add_swap_arguments(p)
    engine = Engine([processor_from_args(p.parse_args(["--source", str(MEDIA / "grace_hopper.jpg")]), fps=25.0)])
    clip = MEDIA / "intel_asl_book.mkv"
    src = VideoReader(clip, dtype="uint8")
    try:
        want = list(range(46, 58))
        frames = {i: src.frame(i).copy() for i in want}
    finally:
        src.close()
    with engine.open_clip(clip, "asl") as s:
        in_order = {i: s.render(frames[i], i, i / 25.0).pixels for i in want}
        hand_frames = s.workers[0].blender.occluder.stats["hand_frames"]
    assert hand_frames >= 3, "hands cover the face on some of these frames"
    with engine.open_clip(clip, "asl") as s:
        scattered = {i: s.render(frames[i], i, i / 25.0).pixels for i in [57, 51, 55, 46, 49, 54, 48, 56, 47, 50, 53, 52]}
    with engine.open_clip(clip, "asl") as s:
        alone = s.render(frames[56], 56, 56 / 25.0).pixels
    for i in want:
        assert np.array_equal(scattered[i], in_order[i]), f"frame {i} rendered out of order"
    assert np.array_equal(alone, in_order[56]), "frame 56 alone"


def test_the_swap_bench_follows_hands_on_the_render_cadence(monkeypatch):
    """``facecomp bench``'s component figures run the palm detector as a render's clip session does (every
    6th frame with no hand about), not on every frame as a lone frame must: the blend stage read 15 ms at
    720p against about 5 in a render."""
    from facecomp.faces.hands import HandSettings, PalmDetector
    from facecomp.swap import bench

    calls: list[int] = []
    detect = PalmDetector.detect

    def counted(self, rgb, region):
        calls.append(1)
        return detect(self, rgb, region)

    monkeypatch.setattr(PalmDetector, "detect", counted)
    n = 24  # the bench's own length (a shorter synthetic clip drifts too fast to keep the face on every frame)
    res = bench.measure("720p", frames=n)
    assert res["faces_per_frame"] == 1.0
    every = HandSettings().detect_every
    # the warm-up's lone frame, then frames 0, 6, 12 and 18 of the clip (the astronaut has no hand to follow)
    assert len(calls) == 1 + len(range(0, n, every)) == 5


WALKING = "intel_face-demographics-walking-and-pause.mp4"


def test_a_small_face_read_as_a_palm_for_a_frame_or_two_is_no_hand():
    """On the walking clip's 40 px faces the palm detector reads a face as a palm, and on a frame or two
    at a time the landmarker agrees (the man's: presence 0.59-0.8 on frames 0, 3, 5 and 6 as a render
    decodes them, 0.01-0.22 on the frames around): kept as a hand, it is the whole face, and the original
    face showed through on those frames. A hand mostly inside the face's box counts once the track has
    it on three frames in a row; the ASL signer's hands at the chin (at most 0.29 of their keypoints in
    the face's box) count at once, even seen on one frame alone."""
    from facecomp.faces.analyzer import FaceAnalyzer
    from facecomp.faces.hands import HandFinder, HandSettings
    from facecomp.video.reader import VideoReader

    if MEDIA is None or not (MEDIA / WALKING).is_file():
        pytest.skip("sample media (the walking clip) not found: set FACECOMP_SAMPLE_MEDIA")
    src = VideoReader(MEDIA / WALKING, dtype="uint8")
    try:
        frames = [src.frame(j) for j in range(12)]
    finally:
        src.close()
    ts = FaceAnalyzer().analyze_clip(enumerate(frames))
    finder = HandFinder()

    def at(track):
        def frame_at(k):
            f = next((f for f in ts.frames[k] if f.track_id == track), None) if k < len(frames) else None
            return None if f is None else (frames[k], _face_box(f))
        return frame_at

    read = []
    for j in range(10):
        for f in ts.frames[j]:
            x0, y0, x1, y1 = _face_box(f)
            for hand in finder.near(frames[j], _face_box(f)):
                inside = np.mean([(x0 <= x <= x1 and y0 <= y <= y1) for x, y in hand.keypoints])
                if inside > 0.6:  # the face itself, taken for a hand
                    read.append((f.track_id, j))
    assert len(read) >= 2, read  # on the frame alone
    tracks = {t for t, _ in read}
    for track in tracks:
        fresh = HandFinder(finder.settings, models=finder)
        assert all(fresh.hands_at(j, track, at(track)) == [] for j in range(10)), track
    # real hands at the chin on the ASL clip: followed from the frames before (24), and seen on one frame
    # alone (51: none on 50 or 52), which the confirmation would drop were it asked of every hand
    src = VideoReader(MEDIA / "intel_asl_book.mkv", dtype="uint8")
    try:
        analyzer = FaceAnalyzer()

        def asl(k):
            faces = analyzer.faces_at(k, src) if k < len(src) else []
            return (src.frame(k), _face_box(faces[0])) if faces else None

        hands = HandFinder(finder.settings, models=finder).hands_at(24, 0, asl)
        assert hands and hands[0].presence > 0.5
        ours = HandFinder(finder.settings, models=finder)
        assert [len(ours.hands_at(j, 0, asl)) for j in (50, 51, 52)] == [0, 1, 0]
        every = HandFinder(HandSettings(inside=0.0), models=finder)
        assert every.hands_at(51, 0, asl) == []
    finally:
        src.close()
