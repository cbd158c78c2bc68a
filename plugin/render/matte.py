"""Rendering the replacement matte (``facecomp render ... --matte PATH``) through the one render path.

The matte processor itself is :class:`facecomp.swap.matte.MatteProcessor`; building its engine and running
the render live here, on the renderer's side, so the swap package does not import the engine or the
renderer (no package imports in a circle).
"""

from __future__ import annotations

import os

from ..swap.matte import MATTE_SUFFIX, MatteProcessor


def matte_engine(engine, main_output: str | os.PathLike, main_manifest_id: str, label=None):
    """An Engine whose swap processors are wrapped to produce the matte, with the main engine's label."""
    from ..effect import Engine

    from ..errors import SettingsError
    from ..swap.matte import AlphaMatteProcessor

    if any(isinstance(p, MatteProcessor) for p in engine.processors):
        raise SettingsError("the render is the matte already (matte view): a second matte clip would be the same",
                            hint="drop --matte PATH, or render the picture without --matte-view")
    procs = [p.swap if isinstance(p, AlphaMatteProcessor) else p for p in engine.processors]
    procs = [MatteProcessor(p, os.fspath(main_output), main_manifest_id) if hasattr(p, "blender") else p
             for p in procs]
    if not any(isinstance(p, MatteProcessor) for p in procs):
        raise SettingsError("a matte needs a face replacement (--source PHOTO or --model FILE)")
    eng = Engine(procs, label=label)
    return eng


def render_matte(input_path, matte_path, engine, settings, main_result, progress=None, finalize=None, label=None):
    """Render the matte clip of a finished render (``main_result``) to ``matte_path``.

    The matte is of that render: its manifest takes the main manifest's id (the key is ``id``) plus
    ``.matte``, and the main render's input hash, so the input is not read and hashed a second time.
    """
    from dataclasses import replace

    from .clip import render_clip

    main_id = str(main_result.manifest["id"])
    eng = matte_engine(engine, main_result.output, main_id, label=label)
    mid = f"{main_id}{MATTE_SUFFIX}"
    input_sha256 = (main_result.manifest.get("input") or {}).get("sha256") or settings.input_sha256
    # the matte's own container decides its codec (its extension: .mov -> ProRes, .png sequence, .mp4 ...)
    return render_clip(input_path, matte_path, eng,
                       replace(settings, manifest_id=mid, encode=type(settings.encode)(), input_sha256=input_sha256),
                       progress, finalize=finalize)
