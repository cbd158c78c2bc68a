"""``facecomp inspect FILE [--json]``: every disclosure layer found in a file, for reading.

Shows what the file is (streams, geometry, timing, colour), all container tags, and the same per-layer
report as ``facecomp verify`` (visible label, tags, manifest, C2PA, watermark). Unlike ``verify`` it exits 0
whatever it finds: it describes, it does not judge.
"""

from __future__ import annotations

from ..wording import plural

import argparse
import json


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("file", help="a video file (any FFmpeg-readable) or an image")
    p.add_argument("--json", action="store_true", help="print everything as one JSON object")
    p.add_argument("--trust", metavar="PEM", action="append", default=None, help="C2PA trust anchors (PEM)")


def run(args) -> int:
    from ..disclosure.metadata import read_container_tags
    from ..disclosure.verify import inspect_file
    from ..video.reader import VideoReader

    info = VideoReader(args.file).info
    tags = read_container_tags(args.file) if not info.is_sequence else {}
    report = inspect_file(args.file, args.trust)
    if args.json:
        print(json.dumps({"media": info.to_dict(), "tags": tags, "disclosure": report.to_dict()}, indent=2,
                         default=str))
        return 0
    w, h = info.display_size
    print(f"{args.file}")
    print(f"  video      {info.codec} {info.pix_fmt} {info.width}x{info.height} (shown {w}x{h}), "
          f"{info.bit_depth}-bit{' + alpha' if info.has_alpha else ''}, {float(info.fps):.3f} fps"
          f"{' (VFR)' if info.vfr else ''}, {plural(info.frame_count, 'frame')}, {info.duration_s:.2f} s")
    extras = []
    if info.rotation:
        extras.append(f"rotation {info.rotation}°")
    if info.timecode:
        extras.append(f"timecode {info.timecode}")
    c = info.color
    extras.append(f"colour primaries {c.primaries} transfer {c.transfer} matrix {c.matrix} range {c.range}")
    print("  " + " " * 11 + ", ".join(extras))
    for s in info.streams:
        print(f"  {s.type:<10} #{s.index} {s.codec}{' [' + s.language + ']' if s.language else ''}")
    if tags:
        print("  tags")
        for k, v in tags.items():
            print(f"    {k}: {v}")
    print("disclosure layers")
    print("\n".join("  " + line for line in report.format_text().splitlines()[1:]))
    return 0
