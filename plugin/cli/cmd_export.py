"""``facecomp export MODEL_DIR -o MODEL.dfm``: the trained model as a DeepFaceLab/DeepFaceLive .dfm.

The export is checked with the ONNX checker and compared against torch with ONNX Runtime before it is
renamed into place. Render with it: ``facecomp render CLIP -o OUT --model MODEL.dfm``.
"""

from __future__ import annotations

import argparse
import json
import sys


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("model_dir", help="a model directory made by facecomp train")
    p.add_argument("-o", "--output", required=True, help="the .dfm file to write")
    p.add_argument("--no-verify", action="store_true", help="skip the ONNX Runtime vs torch comparison")
    p.add_argument("--json", action="store_true", help="print the result as JSON")


def run(args: argparse.Namespace) -> int:
    from ..errors import SettingsError
    from ..models.export import export_dfm

    if not args.output.lower().endswith((".dfm", ".onnx")):
        raise SettingsError(f"output {args.output!r} should end in .dfm (or .onnx)")
    r = export_dfm(args.model_dir, args.output, verify=not args.no_verify)
    info = {"path": str(r.path), "resolution": r.resolution, "iteration": r.iteration,
            "max_abs_diff": r.max_abs_diff, "sha256": r.sha256}
    if args.json:
        print(json.dumps(info))
    else:
        print(f"wrote {r.path} ({r.resolution} px, iteration {r.iteration}); ONNX Runtime vs torch max |diff| "
              f"{r.max_abs_diff:.1e}; sha256 {r.sha256[:16]}...", file=sys.stderr)
    return 0
