"""The one stamping step every output frame passes through.

:class:`Stamper` draws the visible label (and embeds the invisible watermark) and wraps the result in a
:class:`StampedFrame`. Writers accept nothing else, so a frame cannot reach a file without passing here;
hosts that take pixels back (clip sessions, ``Engine.render``) get the stamped pixels. There is no flag
that skips it: the label settings can enlarge or move the label, never remove or shrink it
(:class:`~facecomp.disclosure.label.LabelSettings` validates that).

Why :class:`StampedFrame` is closed: it stands for "these pixels passed the stamp", so no ordinary API
makes one: its constructor always refuses, it cannot be subclassed, it is no dataclass (so
``dataclasses.replace`` refuses), it cannot be pickled or copied around other pixels, its attributes
cannot be set, and its pixels are read-only down to the memory they live in. That guards against
accidents and against code that uses the library as written: a new writer, a host path or a refactor
cannot hand unstamped pixels to a file. It is not a security boundary: Python code in the same process
can still forge one (``object.__new__`` plus ``object.__setattr__`` on its slots), and no Python class
can prevent that; whether a file discloses is judged from the file itself (label pixels, watermark,
tags, manifest: ``facecomp verify``), not from this class. A stamper's marks are fixed at construction
and checked on every stamp: an emptied or swapped mark list is refused.

Why ``out``: a host that hands over a buffer (the render server's shared memory with its client) gets the
stamped pixels written straight into it, so a frame is not copied once more after stamping (33 MB at
1080p float RGBA). That memory stays the caller's, who can still change it, so such a frame is a receipt
only: it is marked ``delivered`` and its ``pixels`` are refused, and no writer can take it; the caller
reads the result in its own buffer.
"""

from __future__ import annotations

from time import perf_counter
from typing import Protocol

import numpy as np

from ..errors import DisclosureError
from .label import Label, LabelSettings

#: how a fourth channel is read: straight (unassociated) alpha, premultiplied, or not alpha at all
ALPHA_MODES = ("straight", "premultiplied", "none")


class FrameMark(Protocol):
    """An extra per-frame disclosure layer applied after the label (the invisible watermark)."""

    def embed(self, frame: np.ndarray, index: int | None = None) -> np.ndarray: ...


def _freeze(arr: np.ndarray) -> np.ndarray:
    """A read-only view of ``arr`` whose memory is read-only too, so the view's flag cannot be turned back
    on (numpy refuses that for a view of read-only memory). Memory that something other than numpy could
    still write (a foreign buffer) is copied first."""
    base = arr
    while isinstance(base, np.ndarray) and base.base is not None:
        base = base.base
    if not isinstance(base, np.ndarray):
        arr = arr.copy()
    a = arr
    while isinstance(a, np.ndarray):
        a.flags.writeable = False
        a = a.base
    view = arr.view()
    view.flags.writeable = False
    return view


class StampedFrame:
    """Pixels that carry the disclosure, as made by :meth:`Stamper.stamp`: read-only and immutable.

    No public way makes one elsewhere (see the module docstring); this keeps unstamped pixels out of the
    writers by accident or through ordinary APIs, not against deliberate forgery by code in this process
    (``object.__new__`` and ``object.__setattr__`` get around any Python class).
    """

    __slots__ = ("_delivered", "_index", "_pixels", "_replaced", "_time")

    def __init__(self, *args, **kwargs) -> None:
        raise TypeError("StampedFrame can only be made by Stamper.stamp(); every output frame is labelled")

    def __init_subclass__(cls, **kwargs) -> None:
        raise TypeError("StampedFrame cannot be subclassed")

    def __setattr__(self, name, value) -> None:
        raise AttributeError("StampedFrame is immutable")

    def __delattr__(self, name) -> None:
        raise AttributeError("StampedFrame is immutable")

    def __reduce_ex__(self, protocol):
        raise TypeError("a StampedFrame cannot be pickled or copied; send its pixels (they carry the label)")

    def __copy__(self) -> StampedFrame:
        return self  # immutable: a copy is the same object

    def __deepcopy__(self, memo) -> StampedFrame:
        return self

    def __replace__(self, **changes):
        raise TypeError("a StampedFrame cannot be re-made around other pixels")

    @property
    def pixels(self) -> np.ndarray:
        if self._delivered:
            raise DisclosureError("this frame was stamped into the caller's buffer (out=), which the caller can "
                                  "still change: read the result there; writers take only frames stamped "
                                  "without out=")
        return self._pixels

    @property
    def delivered(self) -> bool:
        """Whether the stamped pixels were written into a caller's buffer (``out=``) rather than kept here."""
        return self._delivered

    @property
    def index(self) -> int | None:
        return self._index

    @property
    def time(self) -> float | None:
        return self._time

    @property
    def replaced_tracks(self) -> tuple[int, ...]:
        return self._replaced

    def __repr__(self) -> str:
        return (f"StampedFrame(shape={self._pixels.shape}, dtype={self._pixels.dtype}, index={self._index}, "
                f"replaced_tracks={self._replaced}{', delivered' if self._delivered else ''})")


class Stamper:
    """The visible label, then the invisible watermark; thread-safe, holds cached sprites. Immutable.

    ``watermark_id`` is the string the watermark's 32-bit id is derived from (a render's manifest id, or a
    clip session's id for host frames). The watermark is always embedded; only its id varies.
    """

    __slots__ = ("_label", "_marks", "_payload", "_settings", "_watermark_id")

    def __init__(self, label: LabelSettings | None = None, watermark_id: str | None = None,
                 _label: Label | None = None):
        from .watermark import Watermarker, WatermarkPayload, manifest_id_for

        settings = label or LabelSettings()
        if not isinstance(settings, LabelSettings):
            raise DisclosureError(f"Stamper needs LabelSettings, got {type(settings).__name__}")
        if _label is not None and (type(_label) is not Label or _label.settings != settings):
            raise DisclosureError("a shared label cache must be a Label drawn from the same settings")
        sets = object.__setattr__
        sets(self, "_settings", settings)
        sets(self, "_label", _label or Label(settings))
        sets(self, "_watermark_id", watermark_id or "facecomp")
        sets(self, "_payload", WatermarkPayload(manifest_id=manifest_id_for(self._watermark_id)))
        sets(self, "_marks", (Watermarker(self._payload),))

    def __setattr__(self, name, value) -> None:
        raise AttributeError("a Stamper is immutable: make another one (Stamper.for_job) instead")

    def __delattr__(self, name) -> None:
        raise AttributeError("a Stamper is immutable")

    @property
    def label_settings(self) -> LabelSettings:
        return self._settings

    @property
    def watermark_id(self) -> str:
        return self._watermark_id

    @property
    def payload(self):
        return self._payload

    @property
    def marks(self) -> tuple[FrameMark, ...]:
        return self._marks

    def label_box(self, height: int, width: int) -> tuple[int, int, int, int]:
        """Where the label sits on a frame of this size: (x0, y0, x1, y1), x1/y1 exclusive."""
        return self._label.layout(height, width).box

    def for_job(self, watermark_id: str) -> Stamper:
        """A stamper for one output whose watermark links to that output's manifest (shares the label cache)."""
        return Stamper(self._settings, watermark_id, _label=self._label)

    def check_fits(self, height: int, width: int) -> None:
        """Raise :class:`~facecomp.errors.DisclosureError` now if the label cannot fit this frame size."""
        self._label.layout(height, width)

    def _checked_marks(self) -> tuple:
        """The marks, refused unless they are exactly this stamper's own watermark (set at construction)."""
        from .watermark import Watermarker

        marks = getattr(self, "_marks", None)
        if (not isinstance(marks, tuple) or len(marks) != 1 or type(marks[0]) is not Watermarker
                or marks[0].payload != self._payload or type(self._label) is not Label):
            raise DisclosureError("this stamper's watermark or label was tampered with; nothing is stamped")
        return marks

    def stamp(self, frame: np.ndarray, *, index: int | None = None, time: float | None = None,
              replaced_tracks: tuple[int, ...] = (), owned: bool = False, timings: dict | None = None,
              alpha: str = "straight", full_size: tuple[int, int] | None = None,
              window: tuple[int, int, int, int] | None = None, out: np.ndarray | None = None) -> StampedFrame:
        """Label + watermark. ``owned``: the caller hands over ``frame`` (it may be modified in place).

        ``out``: a writeable array of the frame's shape and dtype (it may be ``frame``'s own memory: the
        frame is then stamped in place) that receives the stamped pixels; the result is then a delivered
        receipt (see the module docstring), the pixels are read in ``out``.

        ``timings``, when given, accumulates seconds under "label" and "watermark". ``alpha``: how a fourth
        channel is read (see :data:`ALPHA_MODES`). ``full_size`` (height, width) and ``window`` (x0, y0,
        x1, y1): the pixels are that window of a larger frame; the label and the watermark are placed by
        the full frame, and both are then per-pixel, so windows put together equal the whole frame. When
        ``full_size`` is given the watermark is the window-exact form (see ``Watermarker.embed_window``),
        else the whole-frame, content-adaptive one the file renderer uses.
        """
        if not isinstance(frame, np.ndarray) or frame.ndim != 3 or frame.shape[2] not in (3, 4):
            raise ValueError(f"frames must be (H, W, 3|4) arrays, got shape {getattr(frame, 'shape', None)}")
        if alpha not in ALPHA_MODES:
            raise ValueError(f"alpha must be one of {', '.join(ALPHA_MODES)}, got {alpha!r}")
        marks = self._checked_marks()
        h, w = frame.shape[:2]
        if window is not None and full_size is None:
            raise ValueError("a window needs full_size")
        if full_size is not None:
            full = (int(full_size[0]), int(full_size[1]))
            win = tuple(int(v) for v in window) if window is not None else (0, 0, full[1], full[0])
            if win[2] - win[0] != w or win[3] - win[1] != h or win[0] < 0 or win[1] < 0 or \
                    win[2] > full[1] or win[3] > full[0]:
                raise ValueError(f"window {win} does not match {w}x{h} pixels inside a {full[1]}x{full[0]} frame")
        from .watermark import check_out

        in_place = check_out(frame, out)  # True: out is the frame's own memory
        t0 = perf_counter()
        geometry = {} if full_size is None else {"full_size": full, "window": win}
        if in_place:
            labelled = self._label.stamp_into(out, alpha=alpha, **geometry)
        elif owned and frame.flags.writeable and frame.flags.c_contiguous:
            labelled = self._label.stamp_into(frame, alpha=alpha, **geometry)
        elif out is not None:  # the caller's frame stays as it is: the label is drawn on its copy in out
            np.copyto(out, frame)
            labelled = self._label.stamp_into(out, alpha=alpha, **geometry)
        else:
            labelled = self._label.stamp(frame, alpha=alpha, **geometry)
        t1 = perf_counter()
        for mark in marks:
            if full_size is None:
                labelled = mark.embed(labelled, index, out=out)
            else:
                labelled = mark.embed_window(labelled, index, full_size=full, window=win, alpha=alpha, out=out)
        if timings is not None:
            timings["label"] = timings.get("label", 0.0) + t1 - t0
            timings["watermark"] = timings.get("watermark", 0.0) + perf_counter() - t1
        # built here and nowhere else: StampedFrame has no constructor or factory that takes pixels
        stamped = object.__new__(StampedFrame)
        if out is None:
            pixels = _freeze(labelled)
        else:  # the caller's memory: a view that cannot be made writeable again (repr and shape only)
            pixels = np.asarray(memoryview(out).toreadonly())
        for name, value in (("_pixels", pixels), ("_index", index), ("_time", time),
                            ("_replaced", tuple(int(t) for t in replaced_tracks)), ("_delivered", out is not None)):
            object.__setattr__(stamped, name, value)
        return stamped

    def describe(self) -> dict:
        return {"label": self._settings.to_dict(),
                "watermark": {"method": "facecomp spread-spectrum luma", "marker": self._payload.marker,
                              "manifest_id32": self._payload.manifest_id}}
