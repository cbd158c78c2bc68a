"""The one stamping step every output frame passes through.

:class:`Stamper` draws the visible label (and, when configured, embeds the invisible watermark) and
wraps the result in a :class:`StampedFrame`. Writers accept nothing else, so a frame cannot reach a file
without passing here; hosts that take pixels back (``Engine.render``) get the stamped pixels. There is no
flag that skips it: the label settings can enlarge or move the label, never remove or shrink it
(:class:`~facecomp.disclosure.label.LabelSettings` validates that).
"""

from __future__ import annotations

from dataclasses import dataclass
from time import perf_counter
from typing import Protocol

import numpy as np

from .label import Label, LabelSettings

# Only Stamper holds this object; StampedFrame refuses construction without it.
_STAMP_TOKEN = object()


class FrameMark(Protocol):
    """An extra per-frame disclosure layer applied after the label (the invisible watermark)."""

    def embed(self, frame: np.ndarray, index: int | None = None) -> np.ndarray: ...


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
    """The visible label, then the invisible watermark; thread-safe, holds cached sprites.

    ``watermark_id`` is the string the watermark's 32-bit id is derived from (a render's manifest id, or an
    engine session id for host frames). The watermark is always embedded; only its id varies.
    """

    def __init__(self, label: LabelSettings | None = None, watermark_id: str | None = None,
                 _label: Label | None = None):
        from .watermark import Watermarker, WatermarkPayload, manifest_id_for

        self.label_settings = label or LabelSettings()
        self._label = _label or Label(self.label_settings)
        self.watermark_id = watermark_id or "facecomp"
        self.payload = WatermarkPayload(manifest_id=manifest_id_for(self.watermark_id))
        self.marks: tuple[FrameMark, ...] = (Watermarker(self.payload),)

    def label_box(self, height: int, width: int) -> tuple[int, int, int, int]:
        """Where the label sits on a frame of this size: (x0, y0, x1, y1), x1/y1 exclusive."""
        return self._label.layout(height, width).box

    def for_job(self, watermark_id: str) -> "Stamper":
        """A stamper for one output whose watermark links to that output's manifest (shares the label cache)."""
        return Stamper(self.label_settings, watermark_id, _label=self._label)

    def check_fits(self, height: int, width: int) -> None:
        """Raise :class:`~facecomp.errors.DisclosureError` now if the label cannot fit this frame size."""
        self._label.layout(height, width)

    def stamp(self, frame: np.ndarray, *, index: int | None = None, time: float | None = None,
              replaced_tracks: tuple[int, ...] = (), owned: bool = False,
              timings: dict | None = None) -> StampedFrame:
        """Label + watermark. ``owned``: the caller hands over ``frame`` (it may be modified in place).

        ``timings``, when given, accumulates seconds under "label" and "watermark".
        """
        if frame.ndim != 3 or frame.shape[2] not in (3, 4):
            raise ValueError(f"frames must be (H, W, 3|4) arrays, got shape {frame.shape}")
        t0 = perf_counter()
        if owned and frame.flags.writeable and frame.flags.c_contiguous:
            out = self._label.stamp_into(frame)
        else:
            out = self._label.stamp(frame)
        t1 = perf_counter()
        for mark in self.marks:
            out = mark.embed(out, index)
        if timings is not None:
            timings["label"] = timings.get("label", 0.0) + t1 - t0
            timings["watermark"] = timings.get("watermark", 0.0) + perf_counter() - t1
        return StampedFrame(out, index, time, tuple(replaced_tracks), _STAMP_TOKEN)

    def describe(self) -> dict:
        return {"label": self.label_settings.to_dict(),
                "watermark": {"method": "facecomp spread-spectrum luma", "marker": self.payload.marker,
                              "manifest_id32": self.payload.manifest_id}}
