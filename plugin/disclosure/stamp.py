"""The one stamping step every output frame passes through.

:class:`Stamper` draws the visible label (and, when configured, embeds the invisible watermark) and
wraps the result in a :class:`StampedFrame`. Writers accept nothing else, so a frame cannot reach a file
without passing here; hosts that take pixels back (``Engine.render``) get the stamped pixels. There is no
flag that skips it: the label settings can enlarge or move the label, never remove or shrink it
(:class:`~facecomp.disclosure.label.LabelSettings` validates that).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

import numpy as np

from .label import Label, LabelSettings

# Only Stamper holds this object; StampedFrame refuses construction without it.
_STAMP_TOKEN = object()


class FrameMark(Protocol):
    """An extra per-frame disclosure layer applied after the label (the invisible watermark)."""

    name: str

    def embed(self, frame: np.ndarray) -> np.ndarray: ...


@dataclass(frozen=True, eq=False)
class StampedFrame:
    """Pixels that carry the disclosure. Built only by :meth:`Stamper.stamp`."""

    pixels: np.ndarray
    index: int | None
    time: float | None
    replaced_tracks: tuple[int, ...]
    token: object

    def __post_init__(self) -> None:
        if self.token is not _STAMP_TOKEN:
            raise TypeError("StampedFrame can only be made by Stamper.stamp(); every output frame is labelled")


class Stamper:
    """Label (and optional marks) for one output geometry; thread-safe, holds cached sprites."""

    def __init__(self, label: LabelSettings | None = None, marks: tuple[FrameMark, ...] = ()):
        self.label_settings = label or LabelSettings()
        self._label = Label(self.label_settings)
        self.marks = tuple(marks)

    def check_fits(self, height: int, width: int) -> None:
        """Raise :class:`~facecomp.errors.DisclosureError` now if the label cannot fit this frame size."""
        self._label.layout(height, width)

    def stamp(self, frame: np.ndarray, *, index: int | None = None, time: float | None = None,
              replaced_tracks: tuple[int, ...] = ()) -> StampedFrame:
        if frame.ndim != 3 or frame.shape[2] not in (3, 4):
            raise ValueError(f"frames must be (H, W, 3|4) arrays, got shape {frame.shape}")
        out = self._label.stamp(frame)
        for mark in self.marks:
            out = mark.embed(out)
        return StampedFrame(out, index, time, tuple(replaced_tracks), _STAMP_TOKEN)

    def describe(self) -> dict:
        return {"label": self.label_settings.to_dict(), "marks": [m.name for m in self.marks]}
