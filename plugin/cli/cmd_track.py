"""``facecomp track CLIP [--json TRACKS.json] [-o OVERLAY.mp4]``: the face analysis alone.

For checking what will be replaced before rendering: the JSON lists every frame's faces (track id, box,
score, selection decision, landmarks in MediaPipe FaceMesh order, frame pixels); the overlay video draws
them and, like every output, carries the SYNTHETIC label, tags and manifest (it goes through the renderer).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from . import add_progress_arguments

    parser.add_argument("clip", metavar="CLIP", help="input video")
    parser.add_argument("--json", dest="json_path", metavar="TRACKS.json", help="write the tracks as JSON ('-' = stdout)")
    parser.add_argument("-o", "--output", metavar="OVERLAY.mp4", help="write a labelled overlay video")
    parser.add_argument("-y", "--overwrite", action="store_true", help="replace an existing overlay video")
    parser.add_argument("--detector", default="blazeface", choices=["blazeface", "mtcnn"], help="face detector (default blazeface)")
    parser.add_argument("--detect-every", type=int, default=5, metavar="N", help="keyframe spacing (default 5)")
    parser.add_argument("--selection", default="all",
                        help="all | largest | track:N[,M] | reference | except-reference (default all)")
    parser.add_argument("--reference", action="append", default=[], metavar="PHOTO",
                        help="reference photo of the person (repeatable; for the reference modes)")
    parser.add_argument("--threshold", type=float, default=0.6, help="identity distance threshold (default 0.6)")
    parser.add_argument("--no-iris", action="store_true", help="468 points instead of 478")
    parser.add_argument("--small-faces", action="store_true",
                        help="also detect on tiles: faces down to ~24 px in HD frames (slower keyframes)")
    parser.add_argument("--no-smoothing", action="store_true", help="raw landmarks, no One-Euro filter")
    parser.add_argument("--min-cutoff", type=float, default=0.5, help="One-Euro min cutoff, Hz (default 0.5)")
    parser.add_argument("--beta", type=float, default=3.0, help="One-Euro speed coefficient (default 3.0)")
    add_progress_arguments(parser)


def write_json_atomic(path: Path, data: dict) -> None:
    from ..atomic import atomic_write

    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(path, json.dumps(data, separators=(",", ":")))


def run(args: argparse.Namespace) -> int:
    from facecomp.faces.analyzer import FaceAnalyzer, FaceSettings
    from facecomp.video.reader import VideoReader

    from . import progress_from_args

    progress = progress_from_args(args)
    if args.output and not args.overwrite:  # before the analysis, not after it
        from ..errors import OutputError
        from ..render.clip import existing_output

        existing = existing_output(Path(args.output))
        if existing is not None:
            raise OutputError("the output exists already", path=existing, hint="use -y/--overwrite to replace it")
    reader = VideoReader(args.clip)
    fps = float(reader.info.fps) if reader.info.fps else 25.0
    settings = FaceSettings(detector=args.detector, detect_every=args.detect_every, selection=args.selection,
                            references=tuple(args.reference), threshold=args.threshold, iris=not args.no_iris,
                            small_faces=args.small_faces,
                            smoothing=not args.no_smoothing, min_cutoff=args.min_cutoff, beta=args.beta, fps=fps)
    analyzer = FaceAnalyzer(settings, progress=progress)
    progress.start("track", len(reader))
    tracks = analyzer.analyze_clip((d.index, d.image) for d in reader.frames())
    progress.finish(tracks=len(tracks.tracks), selected=sum(1 for t in tracks.tracks.values() if t["selected"]))
    data = tracks.to_json(fps)
    data["clip"] = os.fspath(args.clip)
    data["settings"] = settings.as_dict()
    if args.json_path == "-":
        json.dump(data, sys.stdout)
        sys.stdout.write("\n")
    elif args.json_path:
        write_json_atomic(Path(args.json_path), data)
    if args.output:
        from facecomp.effect import Engine
        from facecomp.faces.overlay import TrackOverlay
        from facecomp.render.clip import RenderSettings, render_clip

        engine = Engine([TrackOverlay(tracks, settings.as_dict())])
        render_clip(args.clip, args.output, engine, RenderSettings(overwrite=args.overwrite), progress=progress)
    if args.json_path != "-":
        for tid, t in sorted(tracks.tracks.items()):
            print(f"track {tid}: frames {t['first']}..{t['last']}, size {t['size']} px, "
                  f"{'REPLACE' if t['selected'] else 'keep'}"
                  + (f", distance {t['distance']:.3f}" if t.get("distance") is not None else ""))
    return 0
