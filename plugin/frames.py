"""The frame-processing types every stage shares: what a processor is given and what it returns.

Why a module of its own: the engine (``facecomp.effect``) builds processors from the swap package, and
the swap package implements these types; with the types here, neither imports the other in a circle.
``facecomp.effect`` re-exports them, so ``from facecomp.effect import FrameContext`` keeps working.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol, runtime_checkable

import numpy as np


@runtime_checkable
class FrameSource(Protocol):
    """Random access to the decoded frames of a clip (RGB uint8, display orientation)."""

    def __len__(self) -> int: ...

    def frame(self, index: int) -> np.ndarray: ...


@dataclass(frozen=True)
class FrameContext:
    index: int  # frame index in the source clip (0-based, before any --start trim)
    time: float  # seconds
    source: FrameSource | None = None  # neighbouring frames for windowed analysis; None for a lone frame
    full_size: tuple[int, int] | None = None  # (height, width) of the whole frame when the pixels are a window
    window: tuple[int, int, int, int] | None = None  # (x0, y0, x1, y1) of the pixels in the whole frame, or None
    alpha: str = "straight"  # how a fourth channel is read: straight, premultiplied, or none (not alpha)


@dataclass(frozen=True)
class ProcessResult:
    frame: np.ndarray  # same shape and dtype as the input frame
    replaced_tracks: tuple[int, ...] = ()  # track ids whose face was replaced on this frame


class FrameProcessor(Protocol):
    """A pixel-changing step before the stamp (face swap). Must leave untouched pixels bit-identical.

    A processor that keeps per-clip state (caches, tracks, smoothing) also has ``for_clip()``, returning a
    worker for one clip that shares its loaded models; clip sessions call it. Without it the processor
    is used as is and must keep no per-clip state.
    """

    name: str
    thread_safe: bool

    def process(self, frame: np.ndarray, ctx: FrameContext) -> ProcessResult: ...

    def model_records(self) -> list[dict]: ...

    def settings_dict(self) -> dict: ...
