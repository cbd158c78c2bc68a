"""``facecomp extract CLIP_OR_FOLDER... -o FACESET``: aligned whole-face crops for training.

Writes a ``facecomp.faceset/1`` directory (crops, masks, landmarks, a JSON index) and a contact sheet
``FACESET/contact_sheet.png`` to look at before training. Faces are filtered for size, blur,
near-duplicates and, with ``--reference``, identity.
"""

from __future__ import annotations

from ..wording import plural

import argparse
import json
import sys

from . import add_progress_arguments, progress_from_args


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("inputs", nargs="+", metavar="CLIP_OR_FOLDER", help="clips, photos, or folders of them")
    p.add_argument("-o", "--output", required=True, help="faceset directory to write")
    p.add_argument("--reference", action="append", default=[], metavar="PHOTO",
                   help="keep only this person's faces (repeatable; needs the identity extra)")
    p.add_argument("--identity-threshold", type=float, default=0.6, help="max embedding distance (default 0.6)")
    p.add_argument("--size", type=int, default=256, help="crop size in px (default 256)")
    p.add_argument("--every", type=int, default=1, help="use every n-th frame of a clip")
    p.add_argument("--all-faces", action="store_true", help="every face of a frame, not only the largest")
    p.add_argument("--min-face", type=float, default=64.0, help="smallest face in frame px (default 64)")
    p.add_argument("--min-sharpness", type=float, default=40.0,
                   help="blur filter: Laplacian variance at 128 px (default 40; sharp video scores 300+)")
    p.add_argument("--duplicate-threshold", type=float, default=0.005,
                   help="drop faces whose thumbnail differs less than this from a kept one (0 = keep all)")
    p.add_argument("--max-faces", type=int, help="stop after this many faces")
    p.add_argument("--overwrite", action="store_true", help="replace an existing faceset")
    add_progress_arguments(p)


def run(args: argparse.Namespace) -> int:
    from ..faces.extract import ExtractSettings, extract

    settings = ExtractSettings(size=args.size, every=args.every, all_faces=args.all_faces, min_face=args.min_face,
                               min_sharpness=args.min_sharpness, duplicate_threshold=args.duplicate_threshold,
                               references=tuple(args.reference), identity_threshold=args.identity_threshold,
                               max_faces=args.max_faces)
    r = extract(args.inputs, args.output, settings, progress_from_args(args), overwrite=args.overwrite)
    summary = {"faceset": str(r.faceset), "kept": r.kept, "frames": r.frames, "rejected": r.rejected,
               "contact_sheet": str(r.contact_sheet)}
    if args.progress == "json":
        print(json.dumps({"event": "result", **summary}))
    elif not args.quiet:
        rej = ", ".join(f"{k} {v}" for k, v in r.rejected.items() if v) or "none"
        print(f"faceset {r.faceset}: {plural(r.kept, 'face')} from {plural(r.frames, 'frame')} (rejected: {rej}); "
              f"contact sheet {r.contact_sheet}", file=sys.stderr)
    return 0
