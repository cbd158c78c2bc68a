"""Held frames: a picture that repeats an earlier one gives a face that repeats that frame's face."""

from __future__ import annotations

import subprocess
import sys
from fractions import Fraction

import av
import cv2
import numpy as np
import pytest

from facecomp.swap import hold
from mediagen import read_sequence, sample_media

S = hold.HoldSettings()


def _frame(seed: int = 0, h: int = 96, w: int = 128) -> np.ndarray:
    rng = np.random.default_rng(seed)
    small = rng.integers(30, 220, (h // 8, w // 8, 3), dtype=np.uint8)
    return cv2.resize(small, (w, h), interpolation=cv2.INTER_CUBIC)


def test_still_takes_codec_noise_but_not_a_pixel_of_motion():
    a = _frame()
    region = hold.region_of([(40, 30, 80, 70)], a.shape[:2], S)
    assert region and all(v % S.block == 0 or v in (a.shape[1], a.shape[0]) for box in region for v in box)
    assert hold.still(a, a.copy(), region)
    noisy = a.astype(np.int16)
    rng = np.random.default_rng(1)
    noisy += rng.integers(-4, 5, a.shape).astype(np.int16)  # grain under the threshold everywhere
    ys, xs = rng.integers(0, a.shape[0], 20), rng.integers(0, a.shape[1], 20)
    noisy[ys, xs] += 40  # and a few isolated pixels over it, as an encoder's repeated frame has
    assert hold.still(a, np.clip(noisy, 0, 255).astype(np.uint8), region)
    moved = np.roll(a, 1, axis=1)  # the whole picture one pixel on
    assert not hold.still(a, moved, region)
    lip = a.copy()
    lip[50:52, 50:62] = 0  # a lip line 12 px long moved in: one block's worth of change
    assert not hold.still(a, lip, region)
    far = a.copy()
    far[:, :8] = 255  # a change away from the faces does not count
    assert hold.still(a, far, hold.region_of([(60, 30, 90, 60)], a.shape[:2], hold.HoldSettings(grow=0.0)))
    assert not hold.still(a, a, ())  # no faces: nothing to hold


def _clip(frames, ids=frozenset({1}), box=(40, 30, 80, 70)):
    region = hold.region_of([box], frames[0].shape[:2], S)
    return lambda j: frames[j], lambda j: (ids, region)


def test_a_freeze_holds_its_first_frame_whatever_order_frames_come_in():
    base = [_frame(i) for i in range(5)]
    rng = np.random.default_rng(3)
    frozen = []
    for _ in range(6):  # frame 4 repeated with an encoder's few changed pixels
        f = base[4].copy()
        f[rng.integers(0, 96, 3), rng.integers(0, 128, 3)] ^= 0x20
        frozen.append(f)
    frames = base + frozen + [_frame(20), _frame(21)]
    expect = [0, 1, 2, 3, 4, 4, 4, 4, 4, 4, 4, 11, 12]
    assert [hold.Holds(*_clip(frames)).anchor(n) for n in range(len(frames))] == expect
    backwards = hold.Holds(*_clip(frames))
    assert [backwards.anchor(n) for n in reversed(range(len(frames)))][::-1] == expect
    alone = [hold.Holds(*_clip(frames)).anchor(n) for n in range(len(frames))]  # a fresh cache each
    assert alone == expect


def test_a_slow_drift_is_never_held_far_from_its_anchor():
    a = _frame(5, 96, 160)
    frames = []
    for i in range(30):  # a push-in: a tenth of a pixel a frame, still from frame to frame
        m = np.float32([[1, 0, -0.1 * i], [0, 1, 0]])
        frames.append(cv2.warpAffine(a, m, (160, 96), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT))
    holds = hold.Holds(*_clip(frames, box=(50, 30, 110, 70)))
    anchors = [holds.anchor(n) for n in range(len(frames))]
    assert anchors == sorted(anchors)  # the anchor only moves forward
    assert len(set(anchors)) > 3  # and it moves: the face follows the drift
    region = hold.region_of([(50, 30, 110, 70)], (96, 160), S)
    assert all(hold.still(frames[n], frames[m], region) for n, m in enumerate(anchors))


def test_faces_that_change_are_not_held():
    frames = [_frame(0)] * 4
    seen = [frozenset({1}), frozenset({1}), frozenset({1, 2}), frozenset({1, 2})]
    region = hold.region_of([(40, 30, 80, 70)], (96, 128), S)
    holds = hold.Holds(lambda j: frames[j], lambda j: (seen[j], region))
    assert [holds.anchor(n) for n in range(4)] == [0, 0, 2, 2]


def test_a_long_freeze_moves_its_anchor_once_per_span():
    frames = [_frame(0)] * 80
    holds = hold.Holds(*_clip(frames))
    anchors = [holds.anchor(n) for n in range(80)]
    assert anchors[:48] == [0] * 48
    assert set(anchors[48:72]) == {24} and set(anchors[72:]) == {48}


def _write(path, frames, fps=25):
    with av.open(str(path), "w") as c:
        s = c.add_stream("libx264", rate=fps)
        s.width, s.height, s.pix_fmt = frames[0].shape[1], frames[0].shape[0], "yuv420p"
        s.codec_context.options = {"crf": "18", "preset": "veryfast"}
        s.codec_context.time_base = Fraction(1, fps)
        for f in frames:
            for p in s.encode(av.VideoFrame.from_ndarray(f, format="rgb24")):
                c.mux(p)
        for p in s.encode():
            c.mux(p)
    return path


def _render(args):
    return subprocess.run([sys.executable, "-c", "import sys; from facecomp.cli import main; sys.exit(main())",
                           "render", *args, "--quiet", "--manifest-id", "hold-test"],
                          capture_output=True, text=True, timeout=600)


def test_a_freeze_frame_in_a_real_clip_renders_a_still_face(tmp_path):
    media = sample_media("grid_bbaf2n.mpg", "grid_lwbsza.mpg")
    if media is None:
        pytest.skip("needs the shared sample media (../shared/media)")
    with av.open(str(media / "grid_bbaf2n.mpg")) as c:
        speech = [f.to_ndarray(format="rgb24") for i, f in zip(range(36), c.decode(video=0))][20:36]
    with av.open(str(media / "grid_lwbsza.mpg")) as c:
        photo = next(c.decode(video=0)).to_ndarray(format="bgr24")
    cv2.imwrite(str(tmp_path / "photo.png"), photo)
    # the speaker mid-word, frozen for 6 frames (an editor's freeze frame), then on again; encoded, so the
    # repeats carry the encoder's noise as a real freeze does
    frames = speech[:8] + [speech[7]] * 6 + speech[8:]
    clip = _write(tmp_path / "freeze.mp4", frames)
    with av.open(str(clip)) as c:
        src = [f.to_ndarray(format="rgb24") for f in c.decode(video=0)]
    (tmp_path / "out").mkdir()
    (tmp_path / "part").mkdir()
    r = _render([str(clip), "-o", str(tmp_path / "out" / "f_%05d.png"), "--source", str(tmp_path / "photo.png")])
    assert r.returncode == 0, r.stderr
    out = read_sequence(tmp_path / "out")
    assert len(out) == len(src) == 22
    box = (slice(90, 250), slice(110, 250))  # the face and around it

    def change(a, b):
        return np.abs(a[box].astype(np.int16) - b[box].astype(np.int16)).max(axis=2)

    for n in range(8, 14):  # the freeze: the source moves by the encoder's noise alone (0.02-0.13)
        noise = change(src[n], src[n - 1]).mean()
        assert noise < 0.5
        # the face moves no more than the picture does: measured 0.02-0.12, and 0.37-0.86 (99.5th
        # percentile 3-9 levels) before frames were held
        assert change(out[n], out[n - 1]).mean() <= noise + 0.1, n
        assert np.percentile(change(out[n], out[n - 1]), 99.5) <= 4, n
        assert (change(out[n], src[n]) > 8).mean() > 0.05  # and the face stays replaced
    assert change(out[15], out[14]).mean() > 1.0  # moving again after it
    # a frame of the freeze rendered alone is the frame of the whole render (the hold is the clip's own)
    r = _render([str(clip), "-o", str(tmp_path / "part" / "f_%05d.png"), "--source", str(tmp_path / "photo.png"),
                 "--start", "11", "--end", "13"])
    assert r.returncode == 0, r.stderr
    part = read_sequence(tmp_path / "part")
    assert len(part) == 2 and all(np.array_equal(p, o) for p, o in zip(part, out[11:13]))


def test_a_still_held_on_the_timeline_renders_one_face(tmp_path):
    media = sample_media("grid_bbaf2n.mpg", "grid_lwbsza.mpg")
    if media is None:
        pytest.skip("needs the shared sample media (../shared/media)")
    with av.open(str(media / "grid_bbaf2n.mpg")) as c:
        still = [f.to_ndarray(format="bgr24") for i, f in zip(range(31), c.decode(video=0))][30]
    with av.open(str(media / "grid_lwbsza.mpg")) as c:
        cv2.imwrite(str(tmp_path / "photo.png"), next(c.decode(video=0)).to_ndarray(format="bgr24"))
    (tmp_path / "in").mkdir()
    (tmp_path / "out").mkdir()
    for k in range(30):  # one picture, 30 frames: a still on the timeline, bit for bit the same
        cv2.imwrite(str(tmp_path / "in" / f"f_{k:05d}.png"), still)
    r = _render([str(tmp_path / "in" / "f_%05d.png"), "-o", str(tmp_path / "out" / "f_%05d.png"),
                 "--source", str(tmp_path / "photo.png")])
    assert r.returncode == 0, r.stderr
    out = read_sequence(tmp_path / "out")
    assert len(out) == 30
    assert (np.abs(out[0].astype(np.int16) - cv2.cvtColor(still, cv2.COLOR_BGR2RGB)).max(axis=2) > 8).mean() > 0.02
    # every frame the first one's, bit for bit (each of the 29 changed, by up to 35 levels, before)
    assert all(np.array_equal(o, out[0]) for o in out[1:])
