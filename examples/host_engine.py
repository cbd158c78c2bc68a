"""How a host (an OFX render server, a Blender/Resolve bake, a render queue) drives facecomp.

A host keeps ONE long-lived Engine (models loaded once) and asks for frames in any order: timeline scrubs
jump around, render farms split clips. Face analysis depends only on a bounded window around each frame,
so frame N comes out the same whether it is rendered first, last, or alone. Every frame the engine hands
back already carries the SYNTHETIC label and the invisible watermark.

    python examples/host_engine.py CLIP PHOTO [FRAME ...]

renders the requested frames (default: a few, out of order), then again in order, and shows they match.
A host hands these pixels straight back to its timeline; files are written only by `facecomp render`,
which adds the container tags and the manifest.
"""

from __future__ import annotations

import argparse
import sys

import numpy as np


def main(argv: list[str] | None = None) -> int:
    from facecomp.cli import cmd_render
    from facecomp.video.reader import VideoReader

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("clip")
    ap.add_argument("photo")
    ap.add_argument("frames", nargs="*", type=int)
    args = ap.parse_args(argv)

    # The same flags as `facecomp render`, so a host exposes the same settings as the CLI.
    parser = argparse.ArgumentParser()
    cmd_render.add_arguments(parser)
    settings = parser.parse_args([args.clip, "-o", "unused.mp4", "--source", args.photo, "--quiet"])
    engine = cmd_render.build_engine(settings)  # long-lived: keep it for the whole session

    source = VideoReader(args.clip)  # random access (frame-accurate seeks) for the analysis window
    n = len(source)
    wanted = args.frames or [n // 2, 0, n - 1, n // 3]
    fps = float(source.info.fps)
    scrambled = {i: engine.render(source.frame(i), i / fps, index=i, source=source) for i in wanted}
    in_order = {i: engine.render(source.frame(i), i / fps, index=i, source=source) for i in sorted(wanted)}
    box = engine.stamper.label_box(*scrambled[wanted[0]].shape[:2])
    for i in wanted:
        same = np.array_equal(scrambled[i], in_order[i])
        print(f"frame {i:4d}: label box {box}, out-of-order == in-order: {same}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
