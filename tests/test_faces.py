"""Face analysis on real faces with the real models (LiteRT, dlib): detection, 478 landmarks, tracking,
random access == sequential pass, selection, bad input, the track CLI."""

from __future__ import annotations

import json
import os
from pathlib import Path

import cv2
import numpy as np
import pytest

from facecomp.errors import ModelDownloadError, ModelIntegrityError, SettingsError
from facecomp.faces import bench
from facecomp.faces.analyzer import FaceAnalyzer, FaceSettings, analyze_image

MEDIA = Path(os.environ.get("FACECOMP_SAMPLE_MEDIA", Path(__file__).resolve().parents[2] / "shared" / "media"))


def media(name: str) -> Path:
    p = MEDIA / name
    if not p.is_file():
        pytest.skip(f"sample media {p} absent (set FACECOMP_SAMPLE_MEDIA)")
    return p


@pytest.fixture(scope="module")
def astro():
    try:
        return bench.load_reference()
    except ModelDownloadError as exc:
        pytest.skip(f"models/samples cannot be fetched: {exc}")


@pytest.fixture(scope="module")
def analyzer(astro):
    return FaceAnalyzer(FaceSettings())


class ListSource:
    """A FrameSource over frames in memory that counts reads (random access must be bounded)."""

    def __init__(self, frames):
        self.frames = frames
        self.reads = 0

    def __len__(self):
        return len(self.frames)

    def frame(self, i):
        self.reads += 1
        return self.frames[i]


def moving_clip(astro, n=24, cut_at=None, w=480, h=360):
    """The real face moving along a known path on a face-free background; optional scene cut."""
    lm = analyze_image(astro)[0].landmarks
    patch, plm, mask = bench._face_patch(astro, lm)
    frames = []
    for i in range(n):
        canvas = bench._background(h, w, seed=3 if cut_at is None or i < cut_at else 4)
        x = 150 + 4 * i if cut_at is None or i < cut_at else 330
        m = cv2.getRotationMatrix2D((patch.shape[1] / 2, patch.shape[0] / 2), 5 * np.sin(i / 4), 0.55)
        m[:, 2] += np.array([x, 180]) - np.array([patch.shape[1] / 2, patch.shape[0] / 2])
        bench._place(canvas, patch, mask, m)
        frames.append(canvas)
    return frames


def test_astronaut_face_and_landmarks(astro):
    faces = analyze_image(astro, require=True)
    assert len(faces) == 1
    f = faces[0]
    assert f.landmarks.shape == (478, 2) and f.landmarks.dtype == np.float32
    x1, y1, x2, y2 = f.bbox  # the face of the public-domain portrait is at about x 175..280, y 70..180
    assert 160 < x1 < 200 and 260 < x2 < 300 and 60 < y1 < 100 and 160 < y2 < 200
    lm = f.landmarks
    assert lm[33, 0] < lm[263, 0] and lm[33, 1] < lm[1, 1] < lm[13, 1]  # eyes, nose, mouth in order
    for iris, ring in ((468, (33, 133)), (473, (362, 263))):  # iris centres sit between the eye corners
        a, b = lm[ring[0]], lm[ring[1]]
        assert min(a[0], b[0]) < lm[iris, 0] < max(a[0], b[0])
        assert abs(lm[iris, 1] - (a[1] + b[1]) / 2) < 6


def test_accuracy_under_known_warps(astro):
    r = bench.accuracy(ref=astro, n=4)
    assert r["misses"] == 0
    assert r["similarity"] < 0.05 and r["perspective"] < 0.06  # mean error / inter-ocular distance


@pytest.mark.parametrize("angle", [90, -90, 45])
def test_strong_roll_is_found(astro, angle):
    r = bench.recall(ref=astro, sizes=(160,), angles=(angle,), frame=(640, 480))
    assert r["recall"] == 1.0


def test_no_false_positives_and_bad_frames(astro):
    assert bench.false_positives(frames=4, size=(640, 360))["faces_reported"] == 0
    assert analyze_image(np.zeros((40, 50, 3), np.uint8)) == []  # tiny: no crash, no face
    gray = cv2.cvtColor(astro, cv2.COLOR_RGB2GRAY)
    assert len(analyze_image(gray)) == 1  # greyscale (H,W)
    f16 = analyze_image(astro.astype(np.uint16) * 257)[0]
    f32 = analyze_image(astro.astype(np.float32) / 255)[0]
    assert np.abs(f16.landmarks - f32.landmarks).max() < 1.0
    with pytest.raises(Exception, match="not an image"):
        analyze_image(np.zeros((4, 4, 7), np.uint8))


def test_8k_frame(astro):
    big = np.zeros((4320, 7680, 3), np.uint8)
    big[1000:1000 + 512 * 4, 3000:3000 + 512 * 4] = cv2.resize(astro, (2048, 2048))
    faces = analyze_image(big)
    assert len(faces) == 1
    cx = (faces[0].bbox[0] + faces[0].bbox[2]) / 2
    assert abs(cx - (3000 + 227 * 4)) < 60


def test_random_access_equals_sequential(astro):
    frames = moving_clip(astro, n=26, cut_at=17)
    settings = FaceSettings(detect_every=4, fps=25)
    seq = FaceAnalyzer(settings).analyze_clip(enumerate(frames))
    src = ListSource(frames)
    ra = FaceAnalyzer(settings)
    for i in [20, 3, 25, 0, 11, 12, 16, 17, 9]:
        got = ra.faces_at(i, src)
        want = seq.frames[i]
        assert len(got) == len(want) == 1
        assert got[0].track_id == want[0].track_id
        assert np.array_equal(got[0].landmarks, want[0].landmarks)
        assert got[0].bbox == want[0].bbox
    # the scene cut starts a new track; ids are stable within each scene
    ids = [seq.frames[i][0].track_id for i in range(26)]
    assert len(set(ids[:17])) == 1 and len(set(ids[17:])) == 1 and ids[0] != ids[17]
    # the face follows the known path (x = 150 + 4 i before the cut)
    xs = [(seq.frames[i][0].bbox[0] + seq.frames[i][0].bbox[2]) / 2 for i in range(16)]
    slope = np.polyfit(np.arange(16), xs, 1)[0]
    assert 3.0 < slope < 5.0
    # bounded window: a frame in the middle needs only its neighbourhood after the index pass
    src2 = ListSource(frames)
    ra2 = FaceAnalyzer(settings)
    ra2.faces_at(0, src2)
    before = src2.reads
    ra2.faces_at(13, src2)
    assert src2.reads - before <= settings.window + settings.max_gap + settings.detect_every + 2


def test_smoothing_reduces_jitter(astro):
    r = bench.jitter(ref=astro, frames=10)
    assert r["smoothed"] < r["raw"] * 0.8


def test_gap_is_interpolated(astro):
    frames = moving_clip(astro, n=16)
    blank = bench._background(360, 480, seed=3)
    frames[9] = blank  # the face vanishes for one frame
    ts = FaceAnalyzer(FaceSettings(detect_every=8, smoothing=False)).analyze_clip(enumerate(frames))
    f = ts.frames[9]
    assert len(f) == 1 and f[0].interpolated
    mid = (ts.frames[8][0].landmarks + ts.frames[10][0].landmarks) / 2
    assert np.abs(f[0].landmarks - mid).max() < 1e-3


def test_selection_is_per_track(astro):
    lm = analyze_image(astro)[0].landmarks
    patch, plm, mask = bench._face_patch(astro, lm)
    frames = []
    for i in range(8):
        canvas = bench._background(360, 640, seed=9)
        for x, scale in ((170, 0.7), (470, 0.4)):
            m = cv2.getRotationMatrix2D((patch.shape[1] / 2, patch.shape[0] / 2), 0, scale)
            m[:, 2] += np.array([x + i, 180]) - np.array([patch.shape[1] / 2, patch.shape[0] / 2])
            bench._place(canvas, patch, mask, m)
        frames.append(canvas)
    ts = FaceAnalyzer(FaceSettings(selection="largest", detect_every=3)).analyze_clip(enumerate(frames))
    assert len(ts.tracks) == 2
    big = max(ts.tracks, key=lambda t: ts.tracks[t]["size"])
    for i in range(8):
        assert {f.track_id: f.selected for f in ts.frames[i]} == {t: t == big for t in ts.tracks}
    small = min(ts.tracks)
    ts2 = FaceAnalyzer(FaceSettings(selection=f"track:{small}", detect_every=3)).analyze_clip(enumerate(frames))
    assert [t for t, v in ts2.tracks.items() if v["selected"]] == [small]


def test_settings_are_validated(tmp_path):
    with pytest.raises(SettingsError):
        FaceSettings(selection="reference")  # needs a photo
    with pytest.raises(SettingsError):
        FaceSettings(selection="track:x")
    with pytest.raises(SettingsError):
        FaceSettings(detect_every=0)
    with pytest.raises(SettingsError, match="not found"):
        FaceSettings(selection="reference", references=(str(tmp_path / "none.jpg"),))


def test_tampered_model_is_refused(tmp_path, monkeypatch, astro):
    from facecomp.models import registry

    monkeypatch.setenv("FACECOMP_MODELS", str(tmp_path))
    for name in ("blazeface_short", "blazeface_full", "facemesh", "iris"):
        f = registry.cached_path(name)
        f.parent.mkdir(parents=True)
        f.write_bytes(b"TFL3 not the real weights")
    with pytest.raises(ModelIntegrityError, match="refused"):
        FaceAnalyzer(FaceSettings())


def test_reference_selection_grid(tmp_path):
    pytest.importorskip("dlib")
    from facecomp.video.reader import VideoReader

    a, b = media("grid_bbaf2n.mpg"), media("grid_lwbsza.mpg")
    ref = tmp_path / "ref.png"
    cv2.imwrite(str(ref), cv2.cvtColor(VideoReader(a).frame(40), cv2.COLOR_RGB2BGR))
    # a two-person clip: person A (left half) and person B (right half), side by side
    ra, rb = VideoReader(a), VideoReader(b)
    frames = [np.concatenate([ra.frame(i), rb.frame(i)], axis=1) for i in range(0, 12)]
    for mode, want_left in (("reference", True), ("except-reference", False)):
        s = FaceSettings(selection=mode, references=(str(ref),), detect_every=4)
        ts = FaceAnalyzer(s).analyze_clip(enumerate(frames))
        assert len(ts.tracks) == 2
        for faces in ts.frames.values():
            for f in faces:
                left = (f.bbox[0] + f.bbox[2]) / 2 < 360
                assert f.selected == (left == want_left)
        dists = sorted(t["distance"] for t in ts.tracks.values())
        assert dists[0] < 0.45 < 0.6 < dists[1]


def test_track_cli_json_and_labelled_overlay(tmp_path, capsys):
    from facecomp.cli import main
    from facecomp.disclosure.metadata import read_container_tags
    from facecomp.video.reader import VideoReader

    clip = media("intel_head-pose-face-detection-female-and-male.mp4")
    out_json, out_mp4 = tmp_path / "t.json", tmp_path / "o.mp4"
    assert main(["track", str(clip), "--json", str(out_json), "-o", str(out_mp4), "--selection", "largest",
                 "--quiet"]) == 0
    data = json.loads(out_json.read_text())
    assert data["schema"] == "facecomp.tracks/1" and (data["width"], data["height"]) == (480, 270)
    assert abs(data["fps"] - 12.5) < 1e-6 and len(data["frames"]) == 56
    faces = data["frames"][20]["faces"]
    assert len(faces) == 2 and sum(f["selected"] for f in faces) == 1
    assert len(faces[0]["landmarks"]) == 478 and len(faces[0]["bbox"]) == 4
    # the overlay: labelled like every output, and the boxes are drawn where the JSON says
    from facecomp.disclosure.detect_label import find_label
    from facecomp.disclosure.manifest import load_manifest, sha256_file
    from facecomp.disclosure.metadata import IPTC_COMPOSITE_TRAINED, find_tag, parse_aigc

    tags = read_container_tags(out_mp4)
    assert parse_aigc(find_tag(tags, "AIGC"))["Label"] == "1"
    assert find_tag(tags, "DigitalSourceType") == IPTC_COMPOSITE_TRAINED
    assert load_manifest(out_mp4)["output"]["sha256"] == sha256_file(out_mp4)
    assert find_label(VideoReader(out_mp4).frame(30), method="signature").found
    src, ovl = VideoReader(clip).frame(20).astype(int), VideoReader(out_mp4).frame(20).astype(int)
    x1, y1, x2, y2 = (int(v) for v in faces[0]["bbox"])
    inside = np.abs(ovl[y1:y2, x1:x2] - src[y1:y2, x1:x2]).mean()
    away = np.abs(ovl[200:260, 200:280] - src[200:260, 200:280]).mean()
    assert inside > 3 * away
    assert "track 1" in capsys.readouterr().out


def test_mtcnn_onnx_detector(astro):
    from facecomp.faces.mtcnn import MTCNN

    dets = [d for d in MTCNN().detect(astro) if d.score > 0.95]
    assert len(dets) == 1
    x1, y1, x2, y2 = dets[0].bbox
    assert 160 < x1 < 200 and 250 < x2 < 290 and 40 < y1 < 100 and 150 < y2 < 200
    ref = analyze_image(astro)[0].five_points()
    assert np.abs(dets[0].keypoints[:2] - ref[:2]).max() < 6  # eyes agree with FaceMesh's iris centres
    faces = analyze_image(astro, FaceSettings(detector="mtcnn"))
    assert len(faces) == 1 and faces[0].landmarks.shape == (478, 2)


def test_small_faces_with_tiles(astro):
    """A 24 px face in a 1280x720 frame: missed by the whole-frame pass, found with small_faces tiles."""
    plain = bench.recall(ref=astro, sizes=(24,), angles=(0,))
    tiled = bench.recall(ref=astro, sizes=(24,), angles=(0,), settings=FaceSettings(small_faces=True))
    assert plain["recall"] == 0.0 and tiled["recall"] == 1.0


def test_bench_measure_quick(astro):
    r = bench.measure(quick=True)
    assert set(r) >= {"accuracy_error_per_iod", "jitter_rms_per_iod", "recall", "recall_small_faces",
                      "false_positives", "speed"}
    assert r["speed"]["720p_1face"]["faces_found"] == 1.0 and r["speed"]["720p_5face"]["faces_found"] == 5.0
    assert r["speed"]["720p_1face"]["ms_per_frame"] > 0
