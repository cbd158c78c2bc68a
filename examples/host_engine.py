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
    from facecomp.effect import Engine
    from facecomp.settings import EffectSettings
    from facecomp.video.reader import VideoReader

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("clip")
    ap.add_argument("photo")
    ap.add_argument("frames", nargs="*", type=int)
    args = ap.parse_args(argv)

    # The effect as data: the same settings `facecomp render` takes (a host may load them with
    # facecomp.settings.load_settings from a .json/.toml, or build them from its own UI as here).
    settings = EffectSettings.from_dict({"source": [args.photo]})
    source = VideoReader(args.clip)  # random access (frame-accurate seeks) for the analysis window
    # long-lived: keep it for the whole session
    engine = Engine.from_settings(settings, fps=float(source.info.fps))

    n = len(source)
    wanted = args.frames or [n // 2, 0, n - 1, n // 3]
    fps = float(source.info.fps)
    # one clip session per clip: it owns the analysis caches, tracks and colour state, and names the clip
    # in the watermark; the engine (models) is shared by every clip the host renders
    with engine.open_clip(source, "example-clip") as clip:
        scrambled = {i: clip.render(source.frame(i), i, i / fps).pixels for i in wanted}
    with engine.open_clip(source, "example-clip") as clip:
        in_order = {i: clip.render(source.frame(i), i, i / fps).pixels for i in sorted(wanted)}
    box = engine.stamper.label_box(*scrambled[wanted[0]].shape[:2])
    for i in wanted:
        same = np.array_equal(scrambled[i], in_order[i])
        print(f"frame {i:4d}: label box {box}, out-of-order == in-order: {same}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
