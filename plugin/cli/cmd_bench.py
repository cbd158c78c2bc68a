"""``facecomp bench``: transcode-only vs full-pipeline fps at 720p and 1080p, side by side in one run."""

from __future__ import annotations

import argparse
import importlib
import json

import cv2

from . import add_progress_arguments, progress_from_args


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--json", action="store_true", help="print the results as JSON")
    p.add_argument("--sizes", default="720p,1080p", help="comma list of 480p,720p,1080p,2160p")
    p.add_argument("--frames", type=int, default=48, help="frames per test clip")
    p.add_argument("--no-swap", action="store_true", help="pipeline without a swapper (label + tags only)")
    p.add_argument("--preset", default="medium", help="x264 preset used on both sides")
    p.add_argument("--crf", type=int, default=18)
    add_progress_arguments(p)


def _component_figures(module: str):
    """Per-component bench hooks (faces, swap) when those components are installed."""
    try:
        mod = importlib.import_module(module)
    except ImportError:
        return None
    return getattr(mod, "bench_figures", None)


def run(args) -> int:
    from facecomp.models import registry
    from ..effect import Engine
    from ..render.bench import format_table, run_bench
    from ..settings import EffectSettings
    from ..video.encode import EncodeSettings

    progress = progress_from_args(args)
    face_path = registry.ensure("astronaut", progress=progress)
    face = cv2.cvtColor(cv2.imread(str(face_path)), cv2.COLOR_BGR2RGB)

    def engine_factory() -> Engine:
        if args.no_swap:
            return Engine()
        return Engine.from_settings(EffectSettings(source=(str(face_path),)))

    hooks = [h for h in (_component_figures("facecomp.faces.bench"), _component_figures("facecomp.swap.bench")) if h]

    def extra(size: str, clip) -> dict:
        out: dict = {}
        for h in hooks:
            out.update(h(size, clip))
        return out

    sizes = [s.strip() for s in args.sizes.split(",") if s.strip()]
    results = run_bench(engine_factory, sizes=sizes, frames=args.frames,
                        encode=EncodeSettings(codec="h264", crf=args.crf, preset=args.preset),
                        face_rgb=face, progress=None if args.json else progress, extra=extra if hooks else None)
    if args.json:
        print(json.dumps(results, indent=2))
    else:
        print(format_table(results))
    return 0
