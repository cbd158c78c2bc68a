"""Export to .dfm: the contract, ONNX Runtime == torch within 1e-4, and a render through --model.

The contract test uses synthetic facesets; the end-to-end test extracts real faces from the GRID
sample clips (skipped where ../shared/media is absent), trains a tiny model briefly, exports it and
renders three frames with ``facecomp render --model``.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("torch", reason="the train extra (torch) is not installed")
ort = pytest.importorskip("onnxruntime")
onnx = pytest.importorskip("onnx")

from facecomp.errors import ModelError  # noqa: E402
from facecomp.models.export import DFM_INPUT, DFM_OUTPUTS, EXPORT_TOLERANCE, export_dfm  # noqa: E402
from facecomp.models.faceset import Faceset  # noqa: E402
from test_train import TINY, make_faceset  # noqa: E402


@pytest.fixture(scope="module")
def facesets(tmp_path_factory):
    d = tmp_path_factory.mktemp("fs")
    return make_faceset(d / "A", 0, n=4), make_faceset(d / "B", 1, n=4)


def _train(facesets, out: Path, iterations: int = 2, **cfg):
    from facecomp.models.autoencoder import ModelConfig
    from facecomp.models.train import TrainSettings, train
    return train(*facesets, out, config=ModelConfig(**{**TINY, **cfg}),
                 settings=TrainSettings(batch_size=2, lr=1e-3, preview_every=0, threads=2),
                 iterations=iterations, log_every=0)


@pytest.mark.parametrize("arch", ["df", "liae"])
def test_export_contract_and_onnxruntime_matches_torch(facesets, tmp_path, arch):
    import torch

    from facecomp.models.train import load_weights
    _train(facesets, tmp_path / "m", arch=arch)
    res = export_dfm(tmp_path / "m", tmp_path / "model.dfm")
    assert res.resolution == 64 and res.iteration == 2 and res.max_abs_diff <= EXPORT_TOLERANCE
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m", "model.dfm"]      # no temp file left

    sess = ort.InferenceSession(str(res.path), providers=["CPUExecutionProvider"])
    ins, outs = sess.get_inputs(), sess.get_outputs()
    assert [i.name for i in ins] == [DFM_INPUT] and ins[0].type == "tensor(float)"
    assert ins[0].shape[1:] == [64, 64, 3] and not isinstance(ins[0].shape[0], int)   # NHWC, dynamic batch
    assert [o.name for o in outs] == list(DFM_OUTPUTS)
    meta = sess.get_modelmeta().custom_metadata_map
    assert meta["channel_order"] == "BGR" and meta["resolution"] == "64" and meta["arch"] == arch
    assert meta["template"] == "face" and meta["iteration"] == "2"

    # real (synthetic) face crops, fed as the swapper feeds them: BGR NHWC 0..1, batch of 3
    fs = Faceset(facesets[1])
    rgb = np.stack([fs.image(i) for i in range(3)]).astype(np.float32) / 255
    mask, celeb, celeb_mask = sess.run(list(DFM_OUTPUTS), {DFM_INPUT: np.ascontiguousarray(rgb[..., ::-1])})
    assert mask.shape == (3, 64, 64, 1) and celeb.shape == (3, 64, 64, 3) and celeb_mask.shape == (3, 64, 64, 1)
    # against the torch autoencoder directly (RGB NCHW): checks the graph's transposes and channel flips too
    model, _, _ = load_weights(tmp_path / "m")
    with torch.no_grad():
        t_mask, t_celeb, t_cmask = model.swap(torch.from_numpy(rgb.transpose(0, 3, 1, 2).copy()))
    assert np.abs(celeb[..., ::-1] - t_celeb.numpy().transpose(0, 2, 3, 1)).max() <= EXPORT_TOLERANCE
    assert np.abs(mask[..., 0] - t_mask.numpy()[:, 0]).max() <= EXPORT_TOLERANCE
    assert np.abs(celeb_mask[..., 0] - t_cmask.numpy()[:, 0]).max() <= EXPORT_TOLERANCE
    assert 0 <= celeb.min() and celeb.max() <= 1

    swappers = pytest.importorskip("facecomp.swap.onnx_swappers")
    contract = swappers.check_dfm(sess, str(res.path))          # the .dfm swapper's own validation
    assert contract.size == 64 and not contract.batch_fixed


def test_export_errors(tmp_path):
    with pytest.raises(ModelError, match="not a trained model"):
        export_dfm(tmp_path, tmp_path / "x.dfm")
    from facecomp.cli import main
    assert main(["export", str(tmp_path), "-o", str(tmp_path / "x.dfm")]) == ModelError.exit_code
    assert main(["export", str(tmp_path), "-o", str(tmp_path / "x.txt")]) == 2
    assert not (tmp_path / "x.dfm").exists()


def test_trained_export_renders_through_render_model(shared_media, tmp_path):
    """extract -> train -> export -> facecomp render --model: the face changes, the label is there."""
    pytest.importorskip("facecomp.swap.cli_args", reason="the .dfm swapper (render --model) is not installed")
    from facecomp.cli import main
    from facecomp.disclosure.manifest import load_manifest, sidecar_path
    from facecomp.video.reader import VideoReader

    src_clip, dst_clip = shared_media / "grid_bbaf2n.mpg", shared_media / "grid_lwbsza.mpg"
    for clip, name in ((src_clip, "A"), (dst_clip, "B")):
        assert main(["extract", str(clip), "-o", str(tmp_path / name), "--size", "64", "--max-faces", "6",
                     "--quiet"]) == 0
    tiny = [f"--{k.replace('_', '-')}={v}" for k, v in TINY.items()]
    assert main(["train", "--src", str(tmp_path / "A"), "--dst", str(tmp_path / "B"), "-o", str(tmp_path / "m"),
                 "--iterations", "14", "--batch-size", "4", "--lr", "2e-3", "--threads", "2", "--quiet",
                 "--preview-every", "0"] + tiny) == 0
    dfm = tmp_path / "me.dfm"
    assert main(["export", str(tmp_path / "m"), "-o", str(dfm)]) == 0
    out = tmp_path / "out.mp4"
    assert main(["render", str(dst_clip), "-o", str(out), "--model", str(dfm), "--end", "3", "--quiet"]) == 0

    manifest = load_manifest(sidecar_path(out))
    import hashlib
    digest = hashlib.sha256(dfm.read_bytes()).hexdigest()
    assert any(m.get("sha256") == digest for m in manifest["models"])
    a, b = VideoReader(out), VideoReader(dst_clip)
    assert len(a) == 3
    fa, fb = a.frame(1).astype(int), b.frame(1).astype(int)
    lm = Faceset(tmp_path / "B")
    # the face centre (the dst faceset's frame 1 crop maps back to the frame via its matrix) changed ...
    rec = lm.records[min(1, len(lm) - 1)]
    m = np.vstack([np.array(rec.matrix), [0, 0, 1]])
    cx, cy = (np.linalg.inv(m) @ np.array([32.0, 36.0, 1.0]))[:2]
    face = (slice(int(cy) - 10, int(cy) + 10), slice(int(cx) - 10, int(cx) + 10))
    assert np.abs(fa[face] - fb[face]).mean() > 8
    # ... while the background far from the face only carries codec noise
    corner = (slice(-40, None), slice(-60, None))
    assert np.abs(fa[corner] - fb[corner]).mean() < 6
    # the visible label sits in the top-left corner: bright text on a dark box, absent from the source
    tl = (slice(0, 40), slice(0, 200))
    assert np.abs(fa[tl] - fb[tl]).mean() > 30
