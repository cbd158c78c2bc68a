"""The render command's face-replacement flags, generated from :mod:`facecomp.spec`.

Argparse code only parses into :class:`~facecomp.settings.EffectSettings`; the processor is built from
the settings by :func:`facecomp.swap.factory.processor_from_settings`.
"""

from __future__ import annotations

import argparse

SWAP_GROUPS = ("swap", "faces", "mask", "color")


def add_swap_arguments(parser: argparse.ArgumentParser) -> None:
    from ..spec import add_arguments

    add_arguments(parser, groups=SWAP_GROUPS)


def processor_from_args(args: argparse.Namespace, progress=None, fps: float | None = None):
    """The FaceSwapProcessor for parsed swap flags, or None when no --source/--model is given.

    Paths are not checked here: a missing photo is reported by the photo reader, naming the file.
    """
    from ..settings import EffectSettings
    from ..spec import values_from_args
    from .factory import processor_from_settings

    settings = EffectSettings.from_dict(values_from_args(args), check_paths=False)
    return processor_from_settings(settings, progress=progress, fps=fps)
