"""``facecomp verify FILE [--json] [--trust PEM]``: check every disclosure layer; non-zero when one fails."""

from __future__ import annotations

import argparse
import sys


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("file", help="a rendered output (video or image)")
    parser.add_argument("--json", action="store_true", help="print the report as JSON")
    parser.add_argument("--trust", metavar="PEM", action="append", default=None,
                        help="trust anchor certificates (PEM) for C2PA; repeatable. Without it a valid "
                             "signature is reported as valid but not trusted")
    parser.add_argument("--frames", type=int, default=5, metavar="N",
                        help="frames sampled for the visible label (default 5)")
    parser.add_argument("--label-method", choices=["auto", "ocr", "signature"], default="auto",
                        help="how to find the label: OCR (tesseract) or our own label's pixel signature")
    parser.add_argument("--watermark-frames", type=int, default=60, metavar="N",
                        help="frames voted over for the watermark (default 60)")


def run(args: argparse.Namespace) -> int:
    from ..disclosure.verify import inspect_file
    if args.frames < 1 or args.watermark_frames < 1:
        from ..errors import SettingsError
        raise SettingsError("--frames and --watermark-frames must be at least 1")
    report = inspect_file(args.file, args.trust, label_frames=args.frames, watermark_frames=args.watermark_frames,
                          label_method=args.label_method)
    print(report.to_json() if args.json else report.format_text(), file=sys.stdout)
    return report.exit_code
