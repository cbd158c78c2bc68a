"""``facecomp render INPUT -o OUTPUT [...]``: the whole disclosed path on one clip.

The effect flags are generated from :mod:`facecomp.spec` and parsed into
:class:`~facecomp.settings.EffectSettings`; ``--settings FILE`` starts from a settings file and the
flags actually given override it. Run options (range, workers, output, progress) stay here.
"""

from __future__ import annotations

from ..wording import plural

import argparse
import os

from . import add_progress_arguments, progress_from_args
from ..errors import OutputError


def add_arguments(p: argparse.ArgumentParser) -> None:
    from .. import spec

    p.add_argument("input", help="video file, image-sequence pattern (f_%%05d.png) or folder of frames")
    p.add_argument("-o", "--output", required=True, help=".mp4/.mov/.mkv, or a sequence like out/f_%%05d.png")
    p.add_argument("-y", "--overwrite", action="store_true",
                   help="replace an existing output and its manifest (default: refuse, as ffmpeg does)")
    p.add_argument("--start", help="first frame: index or timecode HH:MM:SS:FF (source timecode)")
    p.add_argument("--end", help="end frame (exclusive): index or timecode")
    p.add_argument("--workers", type=int, default=0, help="effect worker threads (default: automatic)")
    p.add_argument("--float", action="store_true", help="process frames as float32 (default: 8/16-bit integers)")
    p.add_argument("--allow-partial", action="store_true",
                   help="a source that ends early renders the frames it has (warned, recorded in the manifest)")
    p.add_argument("--require-face", action="store_true",
                   help="fail when no face is replaced in the whole clip (for queues)")
    p.add_argument("--matte", metavar="PATH",
                   help="also write the replacement matte (white = replaced) as its own clip, labelled, tagged and "
                        "with its own manifest (id: the output's + '.matte'), frame for frame with the output")
    g = p.add_argument_group("settings files")
    g.add_argument("--settings", metavar="FILE",
                   help="effect settings (.json or .toml, see `facecomp spec`); flags given as well override them")
    g.add_argument("--save-settings", metavar="FILE", help="write the effect settings this render used")
    g.add_argument("--manifest-id", metavar="ID",
                   help="the manifest id (default: random); the same input, settings and id give identical frames")
    spec.add_arguments(p)
    add_progress_arguments(p)


def effect_settings_from_args(args):
    """The effect: the ``--settings`` file (if any), overridden by the effect flags actually given.

    Encoder options merge (a flag's KEY replaces the file's). Paths given as flags are not checked here:
    the readers name a missing file (a settings file's paths are checked when it is loaded).
    """
    from ..settings import EffectSettings, load_settings
    from ..spec import values_from_args

    path = getattr(args, "settings", None)
    base = load_settings(path) if path else EffectSettings()
    given = values_from_args(args)
    if not given:
        return base
    merged = base.to_dict()
    if "encoder_options" in given:
        given["encoder_options"] = dict(base.encoder_options, **given["encoder_options"])
    merged.update(given)
    return EffectSettings.from_dict(merged, check_paths=False)


def _is_media_path(path: str) -> bool:
    from ..video.info import is_sequence_pattern
    return os.path.exists(path) or is_sequence_pattern(path)


def clip_fps(settings, input_path: str) -> float | None:
    """The clip's frame rate when a face is replaced (the landmark smoothing is tuned to it)."""
    if settings.swaps and _is_media_path(input_path):
        from ..video.reader import VideoReader
        return float(VideoReader(input_path).info.fps)
    return None


def build_engine(args, progress=None, settings=None):
    """The Engine for these arguments: the swap processor (if asked for) followed by the stamp."""
    from ..effect import Engine

    settings = settings if settings is not None else effect_settings_from_args(args)
    return Engine.from_settings(settings, fps=clip_fps(settings, args.input), progress=progress)


def render_settings(args, effect):
    """The run's RenderSettings: range, workers, dtype, the manifest id and the effect's encode/identity."""
    from ..render.clip import RenderSettings

    return RenderSettings(start=args.start, end=args.end, encode=effect.encode, workers=args.workers,
                          dtype="float32" if args.float else "auto", identity=effect.identity,
                          manifest_id=args.manifest_id, overwrite=args.overwrite,
                          allow_partial=args.allow_partial, require_face=args.require_face)


def finalize_hook(progress):
    """C2PA signing as the last write, when the provenance component is present."""
    try:
        from ..disclosure import c2pa_sign
    except ImportError:
        return None
    return c2pa_sign.render_finalizer(progress) if hasattr(c2pa_sign, "render_finalizer") else None


def run(args) -> int:
    from ..render.clip import render_clip
    from ..settings import save_settings

    progress = progress_from_args(args)
    effect = effect_settings_from_args(args)
    settings = render_settings(args, effect)  # checked before any model loads
    save_to = getattr(args, "save_settings", None)
    if save_to and os.path.exists(save_to) and not args.overwrite:
        raise OutputError("the settings file exists already", path=save_to,
                          hint="use -y/--overwrite to replace it, or choose another name")
    matte = getattr(args, "matte", None)
    if matte and effect.matte_view:
        from ..errors import SettingsError

        raise SettingsError("the render is the matte already (--matte-view): --matte PATH would write it twice",
                            hint="drop --matte PATH, or render the picture without --matte-view")
    engine = build_engine(args, progress, settings=effect)
    if matte:
        from ..video.writer import check_output_path

        check_output_path(matte, [args.input, args.output])  # a bad matte path fails before the render
    result = render_clip(args.input, args.output, engine, settings, progress, finalize=finalize_hook(progress))
    if matte:
        from ..render.matte import render_matte

        mres = render_matte(args.input, matte, engine, settings, result, progress, finalize=finalize_hook(progress),
                            label=effect.label)
        if not args.quiet and args.progress == "text":
            print(f"matte {mres.output} (manifest {mres.manifest_path})")
    if save_to:
        save_settings(effect, save_to)
    rep = result.manifest["replacement"]
    if not args.quiet and args.progress == "text":
        what = (f"face replaced on {sum(b - a + 1 for a, b in rep['ranges'])} of {plural(rep['frames_total'], 'frame')}"
                if rep["face_replaced"] else "no face replaced (the manifest says so)")
        print(f"wrote {result.output} ({plural(result.frames, 'frame')}, {result.fps:.1f} fps; {what})")
        print(f"manifest {result.manifest_path}")
        if save_to:
            print(f"settings {save_to}")
    return 0
