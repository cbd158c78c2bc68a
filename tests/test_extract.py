"""Faceset extraction from real sample media: alignment, masks, filters, contact sheet, CLI.

Uses ../shared/media (GRID clips, portraits); skipped where it is absent.
"""

from __future__ import annotations

import json

import cv2
import numpy as np
import pytest

from facecomp.errors import NoFaceError, SettingsError
from facecomp.faces.extract import ExtractSettings, align_face, expand_inputs, extract, sharpness
from facecomp.models.faceset import Faceset


@pytest.fixture(scope="module")
def analyzer():
    from facecomp.faces.analyzer import FaceAnalyzer, FaceSettings
    return FaceAnalyzer(FaceSettings(iris=True))


def test_clip_extraction_aligns_to_the_face_template(shared_media, tmp_path, analyzer):
    from facecomp.faces.align import five_points_from_mesh, template
    r = extract([shared_media / "grid_bbaf2n.mpg"], tmp_path / "fs",
                ExtractSettings(size=96, every=5, duplicate_threshold=0), analyzer=analyzer)
    assert r.frames == 15 and r.kept == 15 and sum(r.rejected.values()) == 0
    fs = Faceset(tmp_path / "fs")
    assert len(fs) == 15 and fs.size == 96 and fs.template == "face"
    assert [rec.frame for rec in fs.records] == list(range(0, 75, 5))
    tpl, _ = template("face", 96)
    for i in (0, 7, 14):
        lm = fs.landmarks(i)
        # eyes/nose/mouth of the stored landmarks sit on the template (iris centres are not stored, so
        # the eye points come from the eye rings: allow a pixel or two)
        assert np.abs(five_points_from_mesh(lm) - tpl).max() < 2.5
        mask = fs.mask(i)
        nose = lm[1].astype(int)
        assert mask[nose[1], nose[0]] == 255 and mask[2, 2] == 0       # face in, corner out
        crop = fs.image(i)
        # the crop's face is skin-toned (R > B) where the mask is, the GRID backdrop is blue outside it
        inside, outside = crop[mask > 200].mean(0), crop[mask == 0].mean(0)
        assert inside[0] > inside[2] and outside[2] > outside[0]
    rec = fs.records[0]
    assert rec.source.endswith("grid_bbaf2n.mpg") and rec.sharpness > 200 and rec.matrix is not None
    sheet = cv2.imread(str(r.contact_sheet))
    band = sheet.shape[0] - 2 * 96                                         # the disclosure label's band on top
    assert band > 0 and sheet.shape[1:] == (10 * 96, 3)                    # 15 tiles, 10 per row
    assert sheet[:band].max() > 200 and np.median(sheet[:band]) < 40       # white label text on dark
    first = cv2.resize(fs.image(0), (96, 96), interpolation=cv2.INTER_AREA)
    # tile 0 is crop 0 (its index label drawn in the bottom-left corner), under the faint watermark
    assert np.abs(sheet[band:band + 70, :96, ::-1].astype(int) - first[:70].astype(int)).mean() < 5


def test_duplicate_tiny_and_blur_filters(shared_media, tmp_path, analyzer):
    clip = shared_media / "grid_lwbsza.mpg"
    dup = extract([clip], tmp_path / "d", ExtractSettings(size=64, every=3, duplicate_threshold=0.02),
                  analyzer=analyzer)
    assert dup.rejected["duplicate"] > 0 and dup.kept + dup.rejected["duplicate"] == dup.frames
    fs = Faceset(tmp_path / "d")
    assert len(fs) == dup.kept
    frames = [rec.frame for rec in fs.records]
    assert frames[0] == 0 and frames == sorted(frames) and all(f % 3 == 0 for f in frames)

    with pytest.raises(NoFaceError, match="tiny 25"):
        extract([clip], tmp_path / "t", ExtractSettings(size=64, every=3, min_face=1000), analyzer=analyzer)
    assert not (tmp_path / "t").exists()                                   # nothing half-written

    # a blurred copy of a sharp portrait is rejected by the blur filter; the sharp one is kept
    photo = cv2.imread(str(shared_media / "grace_hopper.jpg"))
    cv2.imwrite(str(tmp_path / "sharp.png"), photo)
    cv2.imwrite(str(tmp_path / "blurred.png"), cv2.GaussianBlur(photo, (0, 0), 10))
    r = extract([tmp_path / "sharp.png", tmp_path / "blurred.png"], tmp_path / "b",
                ExtractSettings(size=128, duplicate_threshold=0), analyzer=analyzer)
    assert r.kept == 1 and r.rejected["blurry"] == 1
    assert Faceset(tmp_path / "b").records[0].source.endswith("sharp.png")


def test_sharpness_measure_orders_blur(shared_media, analyzer):
    from facecomp.faces.analyzer import analyze_image
    from facecomp.models.faceset import mask_from_landmarks
    rgb = cv2.cvtColor(cv2.imread(str(shared_media / "face_recognition_obama.jpg")), cv2.COLOR_BGR2RGB)
    face = analyze_image(rgb, analyzer=analyzer)[0]
    crop, lm, m = align_face(rgb, face.landmarks, 256)
    mask = mask_from_landmarks(lm, 256)
    s = [sharpness(cv2.GaussianBlur(crop, (0, 0), sig) if sig else crop, mask) for sig in (0, 1, 2, 4)]
    assert s == sorted(s, reverse=True) and s[0] > 40 > s[-1]


def test_folder_input_cli_and_errors(shared_media, tmp_path):
    from facecomp.cli import main
    folder = tmp_path / "photos"
    folder.mkdir()
    for name in ("grace_hopper.jpg", "skimage_astronaut_eileen_collins.png"):
        (folder / name).write_bytes((shared_media / name).read_bytes())
    (folder / "notes.txt").write_text("ignored")
    assert [p.name for p in expand_inputs([folder])] == ["grace_hopper.jpg", "skimage_astronaut_eileen_collins.png"]
    assert main(["extract", str(folder), "-o", str(tmp_path / "fs"), "--size", "64", "--quiet"]) == 0
    index = json.loads((tmp_path / "fs" / "faceset.json").read_text())
    assert [f["source"].rsplit("/", 1)[-1] for f in index["faces"]] == ["grace_hopper.jpg",
                                                                        "skimage_astronaut_eileen_collins.png"]
    assert main(["extract", str(folder), "-o", str(tmp_path / "fs"), "--quiet"]) != 0        # exists
    assert main(["extract", str(tmp_path / "missing.mp4"), "-o", str(tmp_path / "x")]) != 0
    with pytest.raises(SettingsError):
        ExtractSettings(size=16)


def test_reference_keeps_only_that_person(shared_media, tmp_path, analyzer):
    pytest.importorskip("dlib", reason="the identity extra (dlib-bin) is not installed")
    from facecomp.models import registry
    if not (registry.is_cached("dlib_resnet") and registry.is_cached("dlib_shape5")):
        pytest.skip("dlib identity models are not in the model cache (facecomp models fetch dlib_resnet dlib_shape5)")
    clip_a, clip_b = shared_media / "grid_bbaf2n.mpg", shared_media / "grid_lwbsza.mpg"
    ref = tmp_path / "ref.png"
    from facecomp.video.reader import VideoReader
    cv2.imwrite(str(ref), cv2.cvtColor(VideoReader(clip_b).frame(40), cv2.COLOR_RGB2BGR))
    r = extract([clip_a, clip_b], tmp_path / "fs", ExtractSettings(size=64, every=15, references=(str(ref),)),
                analyzer=analyzer)
    assert r.rejected["identity"] == 5                         # every frame of the other person
    fs = Faceset(tmp_path / "fs")
    assert all(rec.source.endswith("grid_lwbsza.mpg") for rec in fs.records)
    assert all(rec.identity_distance is not None and rec.identity_distance < 0.6 for rec in fs.records)
