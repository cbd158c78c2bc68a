"""``facecomp render INPUT -o OUTPUT [...]``: the whole disclosed path on one clip."""

from __future__ import annotations

import argparse
import importlib
import os

from . import add_progress_arguments, progress_from_args
from ..errors import SettingsError


def _swap_cli():
    """The swap component's CLI hooks, when it is installed (``facecomp.swap.cli_args``)."""
    try:
        return importlib.import_module("facecomp.swap.cli_args")
    except ImportError:
        return None


def add_label_arguments(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("disclosure label (can be moved or enlarged, never removed or shrunk)")
    g.add_argument("--label-corner", default="top-left",
                   choices=["top-left", "top-right", "bottom-left", "bottom-right"])
    g.add_argument("--label-scale", type=float, default=1.0, help="enlarge the label (>= 1.0)")
    g.add_argument("--label-opacity", type=float, default=None, help="box opacity (never below the minimum)")
    g.add_argument("--label-text", default=None, help='label text; must contain "SYNTHETIC" and "AI"')
    g.add_argument("--label-extra-line", default=None, help='an extra line for other locales, e.g. "AI合成"')
    g.add_argument("--producer", default=None, help="ContentProducer code for the GB 45438 AIGC tag")
    g.add_argument("--propagator", default=None, help="ContentPropagator code for the AIGC tag")


def add_encode_arguments(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("encoding")
    g.add_argument("--codec", choices=["h264", "h265", "prores", "prores4444", "qtrle", "ffv1", "png", "tiff"],
                   help="default: by output extension and source (mp4: h264, mov with alpha: prores4444, ...)")
    g.add_argument("--crf", type=int, help="h264/h265 quality (default 18)")
    g.add_argument("--preset", help="h264/h265 preset (default medium)")
    g.add_argument("--bit-depth", type=int, choices=[8, 10, 16], help="default: follows the source")
    g.add_argument("--alpha", dest="alpha", action="store_true", default=None, help="keep alpha (default: if any)")
    g.add_argument("--no-alpha", dest="alpha", action="store_false")
    g.add_argument("--encoder-option", action="append", default=[], metavar="KEY=VALUE",
                   help="pass an option to the encoder (repeatable), e.g. tune=film")


def label_settings_from_args(args):
    from ..disclosure.label import LabelSettings
    kw = {"corner": args.label_corner, "scale": args.label_scale}
    if args.label_opacity is not None:
        kw["opacity"] = args.label_opacity
    if args.label_text is not None:
        kw["text"] = args.label_text
    if args.label_extra_line:
        kw["extra_line"] = args.label_extra_line
    return LabelSettings(**kw)


def encode_settings_from_args(args):
    from ..video.encode import EncodeSettings
    opts = {}
    for item in args.encoder_option:
        if "=" not in item:
            raise SettingsError(f"--encoder-option expects KEY=VALUE, got {item!r}")
        k, v = item.split("=", 1)
        opts[k] = v
    return EncodeSettings(codec=args.codec, bit_depth=args.bit_depth, crf=args.crf, preset=args.preset,
                          alpha=args.alpha, options=opts)


def identity_from_args(args):
    from ..disclosure.metadata import AigcIdentity
    kw = {}
    if args.producer:
        kw["content_producer"] = args.producer
    if args.propagator:
        kw["content_propagator"] = args.propagator
    return AigcIdentity(**kw)


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("input", help="video file, image-sequence pattern (f_%%05d.png) or folder of frames")
    p.add_argument("-o", "--output", required=True, help=".mp4/.mov/.mkv, or a sequence like out/f_%%05d.png")
    p.add_argument("--start", help="first frame: index or timecode HH:MM:SS:FF (source timecode)")
    p.add_argument("--end", help="end frame (exclusive): index or timecode")
    p.add_argument("--workers", type=int, default=0, help="effect worker threads (default: automatic)")
    p.add_argument("--float", action="store_true", help="process frames as float32 (default: 8/16-bit integers)")
    swap = _swap_cli()
    if swap is not None:
        swap.add_swap_arguments(p)
    add_label_arguments(p)
    add_encode_arguments(p)
    add_progress_arguments(p)


def _is_media_path(path: str) -> bool:
    from ..video.info import is_sequence_pattern
    return os.path.exists(path) or is_sequence_pattern(path)


def build_engine(args, progress=None):
    """The Engine for these arguments: the swap processor (if asked for) followed by the stamp."""
    from ..effect import Engine
    processors = []
    swap = _swap_cli()
    if swap is not None:
        fps = None
        if (getattr(args, "source", None) or getattr(args, "model", None)) and _is_media_path(args.input):
            from ..video.reader import VideoReader
            fps = float(VideoReader(args.input).info.fps)  # smoothing is tuned per frame rate
        proc = swap.processor_from_args(args, progress=progress, fps=fps)
        if proc is not None:
            processors.append(proc)
    return Engine(processors, label=label_settings_from_args(args))


def finalize_hook(progress):
    """C2PA signing as the last write, when the provenance component is present."""
    try:
        from ..disclosure import c2pa_sign
    except ImportError:
        return None
    return c2pa_sign.render_finalizer(progress) if hasattr(c2pa_sign, "render_finalizer") else None


def run(args) -> int:
    from ..render.clip import RenderSettings, render_clip
    progress = progress_from_args(args)
    engine = build_engine(args, progress)
    settings = RenderSettings(start=args.start, end=args.end, encode=encode_settings_from_args(args),
                              workers=args.workers, dtype="float32" if args.float else "auto",
                              identity=identity_from_args(args))
    result = render_clip(args.input, args.output, engine, settings, progress, finalize=finalize_hook(progress))
    rep = result.manifest["replacement"]
    if not args.quiet and args.progress == "text":
        what = (f"face replaced on {sum(b - a + 1 for a, b in rep['ranges'])} of {rep['frames_total']} frames"
                if rep["face_replaced"] else "no face replaced (the manifest says so)")
        print(f"wrote {result.output} ({result.frames} frames, {result.fps:.1f} fps; {what})")
        print(f"manifest {result.manifest_path}")
    return 0
