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


@pytest.mark.skipif(MEDIA is None, reason="sample media (intel_asl_book.mkv) not found: set FACECOMP_SAMPLE_MEDIA")
def test_finds_the_signing_hand_near_the_face_and_follows_it():
    import av

    from facecomp.faces.analyzer import analyze_image
    from facecomp.faces.hands import HandFinder

    with av.open(str(MEDIA / "intel_asl_book.mkv")) as c:
        frames = [f.to_ndarray(format="rgb24") for i, f in zip(range(26), c.decode(video=0))]
    finder = HandFinder()
    face = analyze_image(frames[24])[0]
    assert not finder.near(frames[0], analyze_image(frames[0])[0].bbox)  # hands down at the start
    hands = finder.near(frames[24], face.bbox, track=0, index=24)
    assert len(hands) >= 1 and hands[0].presence > 0.5
    x0, y0, x1, y1 = hands[0].box
    fx0, fy0, fx1, fy1 = face.bbox
    assert y0 < fy1 + 0.5 * (fy1 - fy0) and x1 > fx0 and x0 < fx1  # raised to the chin, under the face
    # next frame: the same hand, followed by the landmarker from the previous keypoints (it moves: signing)
    followed = finder.near(frames[25], face.bbox, track=0, index=25)
    assert followed and np.abs(followed[0].keypoints - hands[0].keypoints).mean() < hands[0].palm_width
