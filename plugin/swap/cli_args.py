"""The render command's face-replacement flags and the processor they build.

``facecomp render`` calls :func:`add_swap_arguments` on its parser and :func:`processor_from_args` on the
parsed arguments; no --source and no --model means no swap (the render is then label + tags only).
"""

from __future__ import annotations

import argparse
import os

from ..errors import SettingsError
from . import color, providers
from ..hashing import sha256_file


def add_swap_arguments(parser: argparse.ArgumentParser) -> None:
    g = parser.add_argument_group("face replacement")
    g.add_argument("--source", nargs="+", metavar="PHOTO", default=None,
                   help="photo(s) of the person to put in; several: the closest pose is used per frame "
                        "(morph, the default swapper: no model to download)")
    g.add_argument("--model", metavar="FILE", default=None,
                   help="a DeepFaceLab/DeepFaceLive .dfm or insightface inswapper_128.onnx (user-supplied)")
    g.add_argument("--arcface", metavar="FILE", default=None,
                   help="ArcFace recogniser for inswapper (insightface w600k_r50.onnx)")
    g.add_argument("--faces", default="all", metavar="all|largest|reference|except-reference|track:N",
                   help="which faces to replace (default: all)")
    g.add_argument("--reference", nargs="+", metavar="PHOTO", default=None,
                   help="photo(s) of the person to (not) replace, for --faces reference|except-reference")
    g.add_argument("--color", choices=list(color.MODES), default="rct",
                   help="colour transfer onto the target (default rct)")
    g.add_argument("--blend", choices=["feather", "seamless"], default="feather",
                   help="feathered alpha, or a seamless (Poisson) clone under it")
    g.add_argument("--provider", choices=list(providers.PROVIDER_CHOICES), default="cpu",
                   help="ONNX Runtime execution provider for --model (falls back to CPU, with a warning)")
    g.add_argument("--mask-erode", type=float, default=None, metavar="F",
                   help="mask inset as a fraction of the face width (default 0.01)")
    g.add_argument("--mask-feather", type=float, default=None, metavar="F",
                   help="soft-edge width as a fraction of the face width (default 0.05)")
    g.add_argument("--mask-forehead", type=float, default=None, metavar="F",
                   help="share of the forehead above the eyes that is replaced (default 0.6)")
    g.add_argument("--keep-mouth", dest="keep_mouth", action="store_true", default=None,
                   help="the target's open mouth shows through (default for the morph)")
    g.add_argument("--no-keep-mouth", dest="keep_mouth", action="store_false")
    g.add_argument("--keep-eyes", dest="keep_eyes", action="store_true", default=None,
                   help="the target's open eyes show through (default for the morph)")
    g.add_argument("--no-keep-eyes", dest="keep_eyes", action="store_false")
    g.add_argument("--color-smoothing", type=float, default=0.7, metavar="K",
                   help="weight of the past in per-track colour statistics, 0..0.99 (default 0.7)")
    g.add_argument("--dfm-morph", type=float, default=0.75, metavar="V",
                   help="morph_value fed to .dfm models that take one (0..1, default 0.75)")
    g.add_argument("--detect-every", type=int, default=None, metavar="N",
                   help="run the face detector every N frames, tracking landmarks between (default 5)")


def _face_settings(args, fps: float | None = None, iris: bool = True):
    from ..faces.analyzer import FaceSettings

    kw: dict = {"selection": args.faces, "iris": iris}
    if args.reference:
        kw["references"] = tuple(os.fspath(p) for p in args.reference)
    if getattr(args, "detect_every", None):
        kw["detect_every"] = args.detect_every
    if fps:
        kw["fps"] = fps
    return FaceSettings(**kw)


def blend_settings_from_args(args, interiors_default: bool):
    from .masks import MaskSettings
    from .processor import BlendSettings

    mk: dict = {}
    for flag, name in (("mask_erode", "erode"), ("mask_feather", "feather"), ("mask_forehead", "forehead")):
        v = getattr(args, flag, None)
        if v is not None:
            mk[name] = v
    mk["keep_mouth"] = interiors_default if args.keep_mouth is None else args.keep_mouth
    mk["keep_eyes"] = interiors_default if args.keep_eyes is None else args.keep_eyes
    interiors = mk["keep_mouth"] or mk["keep_eyes"]
    return BlendSettings(color=args.color, blend=args.blend, mask=MaskSettings(**mk),
                         color_smoothing=args.color_smoothing, interiors=interiors)


def processor_from_args(args: argparse.Namespace, progress=None, fps: float | None = None):
    """The FaceSwapProcessor for the parsed render flags, or None when no --source/--model is given.

    ``fps``: the clip's frame rate, which the landmark smoothing is tuned for (default 25).
    """
    sources = list(getattr(args, "source", None) or [])
    model = getattr(args, "model", None)
    if not sources and not model:
        if getattr(args, "reference", None):
            raise SettingsError("--reference selects whose face to replace, but nothing replaces it",
                                hint="add --source PHOTO or --model FILE")
        return None
    if args.faces in ("reference", "except-reference") and not args.reference:
        raise SettingsError(f"--faces {args.faces} needs --reference PHOTO")

    from ..faces.analyzer import FaceAnalyzer
    from .processor import FaceSwapProcessor
    from .sources import photo_face, read_photo

    notify = (lambda text: progress.message(text, "warning")) if progress is not None else None
    photos = []
    for p in sources:
        rgb = read_photo(p)
        photos.append((p, rgb, photo_face(rgb, p, progress=progress)))
    if model:
        from .onnx_swappers import open_model

        swapper = open_model(model, arcface=args.arcface, provider=args.provider, notify=notify,
                             sources=[(rgb, f.landmarks) for _, rgb, f in photos], dfm_morph=args.dfm_morph)
    else:
        from .morph import MorphSource, MorphSwapper

        swapper = MorphSwapper([MorphSource.from_image(rgb, f.landmarks, name=os.path.basename(os.fspath(p)))
                                for p, rgb, f in photos])
    # the morph needs the 468 mesh points only; the iris model (eye centres for ONNX alignment) costs
    # two more inferences per face per frame
    analyzer = FaceAnalyzer(_face_settings(args, fps=fps, iris=bool(model)), progress=progress)
    settings = blend_settings_from_args(args, swapper.target_interiors)
    hashes = [sha256_file(p) for p, _, _ in photos]
    return FaceSwapProcessor(swapper, analyzer, settings, source_hashes=hashes)


