"""Export a trained model directory to a DeepFaceLab/DeepFaceLive ``.dfm`` (ONNX).

The contract (what :class:`facecomp.swap.onnx_swappers.DfmSwapper` and DeepFaceLive expect)::

    input   in_face:0             float32 [N, R, R, 3]  NHWC, BGR, 0..1, a whole-face aligned crop
    outputs out_face_mask:0       float32 [N, R, R, 1]  the dst face's mask (dst decoder)
            out_celeb_face:0      float32 [N, R, R, 3]  the face with the src identity, BGR 0..1
            out_celeb_face_mask:0 float32 [N, R, R, 1]  its mask

The trainer works in RGB NCHW; the exported graph flips channels and transposes at both ends, so the
file follows the DeepFaceLab convention (BGR, NHWC) that existing .dfm consumers assume. The batch
dimension is dynamic. ONNX metadata records the producer, resolution, architecture, alignment template
and training iteration. The torch exporter is the TorchScript-based one (no onnxscript dependency).
Tolerance: ONNX Runtime (CPU EP) matches torch within 1e-4 absolute on every output (see
:func:`verify_export`; float32 both sides, the difference is summation order in convolutions).
"""

from __future__ import annotations

import io
import json
import os
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..errors import ModelError, OutputError

DFM_INPUT = "in_face:0"
DFM_OUTPUTS = ("out_face_mask:0", "out_celeb_face:0", "out_celeb_face_mask:0")
EXPORT_TOLERANCE = 1e-4
OPSET = 17


@dataclass(frozen=True)
class ExportResult:
    path: Path
    resolution: int
    iteration: int
    max_abs_diff: float       # ONNX Runtime vs torch on the verification batch
    sha256: str


def _wrapper(model):
    import torch

    class DfmGraph(torch.nn.Module):
        """NHWC BGR in, NHWC BGR out around the RGB NCHW autoencoder."""

        def __init__(self, ae):
            super().__init__()
            self.ae = ae

        def forward(self, in_face):
            x = in_face.permute(0, 3, 1, 2).flip(1)          # NHWC BGR -> NCHW RGB
            dst_mask, celeb, celeb_mask = self.ae.swap(x)
            return (dst_mask.permute(0, 2, 3, 1),
                    celeb.flip(1).permute(0, 2, 3, 1),
                    celeb_mask.permute(0, 2, 3, 1))

    return DfmGraph(model).eval()


def torch_reference(model, in_face_bgr_nhwc: np.ndarray) -> list[np.ndarray]:
    """What the exported graph should output for a batch, computed by torch."""
    import torch
    with torch.no_grad():
        outs = _wrapper(model)(torch.from_numpy(np.ascontiguousarray(in_face_bgr_nhwc, np.float32)))
    return [o.numpy() for o in outs]


def verify_export(path: str | os.PathLike, model, batch: np.ndarray | None = None, provider: str = "CPUExecutionProvider"
                  ) -> float:
    """Max |ONNX Runtime - torch| over all outputs on ``batch`` (random faces if None)."""
    import onnxruntime as ort
    r = model.config.resolution
    if batch is None:
        batch = np.random.default_rng(0).random((2, r, r, 3), dtype=np.float32)
    sess = ort.InferenceSession(str(path), providers=[provider])
    got = sess.run(list(DFM_OUTPUTS), {DFM_INPUT: batch.astype(np.float32)})
    ref = torch_reference(model, batch)
    return float(max(np.abs(g - e).max() for g, e in zip(got, ref)))


def export_dfm(model_dir: str | os.PathLike, output: str | os.PathLike, *, verify: bool = True,
               tolerance: float = EXPORT_TOLERANCE, overwrite: bool = True) -> ExportResult:
    """Write ``output`` (.dfm) from the latest checkpoint of ``model_dir``; verify it against torch.

    The file is written to a temporary name and renamed only after ONNX checks and (with ``verify``)
    the ONNX Runtime comparison pass, so a failed export never leaves a file that looks usable."""
    import hashlib

    import onnx
    import torch

    from .train import load_weights

    out = Path(output)
    if out.exists() and not overwrite:
        raise OutputError("output exists", path=out, hint="pass --overwrite or choose another name")
    if not out.parent.is_dir():
        raise OutputError("output folder does not exist", path=out.parent)
    model, info, iteration = load_weights(model_dir, "cpu")
    r = model.config.resolution
    graph = _wrapper(model)
    example = torch.zeros(1, r, r, 3)
    buf = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(graph, (example,), buf, input_names=[DFM_INPUT], output_names=list(DFM_OUTPUTS),
                          dynamic_axes={DFM_INPUT: {0: "N"}, **{o: {0: "N"} for o in DFM_OUTPUTS}},
                          opset_version=OPSET, dynamo=False, do_constant_folding=True)
    proto = onnx.load_from_string(buf.getvalue())
    meta = {"producer": "facecomp train", "schema": "facecomp.dfm/1", "resolution": str(r),
            "channel_order": "BGR", "layout": "NHWC", "arch": model.config.arch,
            "config": json.dumps(model.config.to_dict()), "template": str(info.get("template", "")),
            "iteration": str(iteration), "disclosure": "outputs are synthetic; facecomp labels every frame"}
    for k, v in meta.items():
        p = proto.metadata_props.add()
        p.key, p.value = k, v
    try:
        onnx.checker.check_model(proto)
    except onnx.checker.ValidationError as exc:
        raise ModelError(f"exported graph fails the ONNX checker: {exc}", path=out) from exc
    data = proto.SerializeToString()
    tmp = out.with_name(f".{out.name}.tmp-{os.getpid()}")
    try:
        tmp.write_bytes(data)
        diff = verify_export(tmp, model) if verify else float("nan")
        if verify and not diff <= tolerance:
            raise ModelError(f"ONNX Runtime output differs from torch by {diff:.2e} (> {tolerance:.0e})", path=out,
                             hint="report this with the model directory; the export was not written")
        os.replace(tmp, out)
    except OSError as exc:
        raise OutputError(f"cannot write the export: {exc}", path=out) from exc
    finally:
        if tmp.exists():
            tmp.unlink()
    return ExportResult(path=out, resolution=r, iteration=iteration, max_abs_diff=diff,
                        sha256=hashlib.sha256(data).hexdigest())
