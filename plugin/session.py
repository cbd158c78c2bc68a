"""Clip sessions: the per-clip state of an effect, so that one long-lived :class:`~facecomp.effect.Engine`
can serve many clips at once.

Why a session: face analysis keeps a keyframe index, tracks and caches per clip; colour smoothing keeps
per-track statistics; the watermark names the clip. Held in the engine, two clips rendered by one host
(or one server) would share them. A :class:`ClipSession` owns all of it; the engine keeps only what is
safe to share (loaded models, label sprites). Each frame processor gives the session a per-clip worker
through ``for_clip()`` (sharing its models, not its caches); a processor without one holds no per-clip
state and is used as is.

Why answers do not depend on call order: every per-clip result at frame ``n`` (faces, track ids, colour
statistics) is a function of the clip's frames in a bounded window around ``n``, computed the same way
whichever frames were asked for before; caches only save work. So frame ``n`` is the same rendered first,
last, alone or in order, and sessions on different threads do not affect each other.

Windows (tiles): ``render(..., full_size, window)`` renders the part ``window`` of a frame of
``full_size``. The label's size and place and the watermark pattern come from the full frame, and both
are per-pixel functions of the full-frame position and the pixel itself, so tiles put together equal
the whole frame bit for bit. Faces on a tile come from the clip's full frame when the session has the
clip (landmarks in full-frame pixels, shifted into the tile), else from the tile alone; the swap itself
sees only the tile's pixels, so a face cut by a tile edge can differ slightly from a whole-frame render
next to that edge. :meth:`ClipSession.render` therefore stamps every frame, whole or not, with the
watermark's window-exact form (``Watermarker.embed_window``); the file renderer, which always has whole
frames, calls :meth:`ClipSession.render_frame` and gets the whole-frame, content-adaptive form.
"""

from __future__ import annotations

import os
import threading
from typing import TYPE_CHECKING

import numpy as np

from .disclosure.stamp import ALPHA_MODES, StampedFrame, Stamper
from .errors import SettingsError

if TYPE_CHECKING:
    from .effect import Engine
    from .frames import FrameContext, FrameSource

PIXEL_DTYPES = (np.dtype(np.uint8), np.dtype(np.uint16), np.dtype(np.float32))


def _worker_for(proc):
    """The per-clip worker of a processor (its ``for_clip()``), or the processor itself when stateless."""
    make = getattr(proc, "for_clip", None)
    return make() if callable(make) else proc


def check_geometry(shape: tuple[int, ...], full_size: tuple[int, int] | None,
                   window: tuple[int, int, int, int] | None) -> tuple[tuple[int, int], tuple[int, int, int, int]]:
    """Validate a render window against the pixels given; returns ((H, W) of the full frame, window)."""
    h, w = int(shape[0]), int(shape[1])
    if full_size is None:
        if window is not None and tuple(window) != (0, 0, w, h):
            raise SettingsError("a render window needs full_size (the whole frame's height, width)")
        full_size = (h, w)
    try:
        fh, fw = (int(v) for v in full_size)
    except (TypeError, ValueError):
        raise SettingsError(f"full_size must be (height, width), got {full_size!r}") from None
    if window is None:
        window = (0, 0, fw, fh)
    try:
        x0, y0, x1, y1 = (int(v) for v in window)
    except (TypeError, ValueError):
        raise SettingsError(f"window must be (x0, y0, x1, y1), got {window!r}") from None
    if not (0 <= x0 < x1 <= fw and 0 <= y0 < y1 <= fh):
        raise SettingsError(f"window {window} is not inside the {fw}x{fh} frame")
    if (y1 - y0, x1 - x0) != (h, w):
        raise SettingsError(f"window {window} is {x1 - x0}x{y1 - y0} but the pixels are {w}x{h}")
    return (fh, fw), (x0, y0, x1, y1)


class ClipSession:
    """One clip's effect state: analysis caches, tracks, colour smoothing, watermark id. Thread-safe.

    ``source``: the clip as a path or a ``FrameSource`` (random access to its RGB uint8 frames), or None
    when the host passes pixels only (each frame is then analysed alone). ``clip_id`` names the clip; the
    watermark id is derived from it. Made by :meth:`facecomp.effect.Engine.open_clip`.
    """

    def __init__(self, engine: Engine, source: FrameSource | str | os.PathLike | None, clip_id: str, *,
                 stamper: Stamper | None = None):
        if not isinstance(clip_id, str) or not clip_id.strip():
            raise SettingsError(f"clip_id must be a non-empty string, got {clip_id!r}")
        self.engine = engine
        self.clip_id = clip_id
        self._reader = None
        if source is not None and isinstance(source, (str, os.PathLike)):
            from .video.reader import VideoReader

            self._reader = VideoReader(source, dtype="uint8")
            source = self._reader
        elif source is not None and not (hasattr(source, "frame") and hasattr(source, "__len__")):
            raise SettingsError(f"source must be a path, a FrameSource or None, got {type(source).__name__}")
        self.source = source
        self.stamper = stamper or engine.stamper.for_job(clip_id)
        self.workers = tuple(_worker_for(p) for p in engine.processors)
        # the per-clip workers keep caches that one thread at a time may use; thread-safe ones need no lock
        self._serial = not all(getattr(w, "thread_safe", False) for w in self.workers)
        self._lock = threading.Lock()
        self._closed = False

    @property
    def thread_safe(self) -> bool:
        """Whether frames of this session may be processed in parallel (they are serialised otherwise)."""
        return not self._serial

    @property
    def frames(self) -> int | None:
        return None if self.source is None else len(self.source)

    def render(self, frame: np.ndarray, index: int, time: float, *, full_size: tuple[int, int] | None = None,
               window: tuple[int, int, int, int] | None = None, alpha: str = "straight",
               out: np.ndarray | None = None) -> StampedFrame:
        """Process and stamp the pixels of ``window`` (default: the whole frame) of frame ``index``.

        ``frame``: (H_w, W_w, 3|4) uint8/uint16/float32, left unchanged; ``full_size``: (height, width) of
        the whole frame; ``window``: (x0, y0, x1, y1) in full-frame pixels, exclusive ends; ``alpha``:
        how a fourth channel is to be read ("straight", "premultiplied", or "none"). ``out``: a writeable
        array of the frame's shape and dtype (``frame`` itself: in place) that the stamper writes the
        result into, so it is not copied again (the render server's shared memory); the StampedFrame is
        then a receipt (``delivered``) and the pixels are read in ``out``.
        """
        from .frames import FrameContext

        if not isinstance(frame, np.ndarray) or frame.ndim != 3 or frame.shape[2] not in (3, 4):
            raise SettingsError(f"frames must be (H, W, 3|4) arrays, got {getattr(frame, 'shape', type(frame))}")
        if frame.dtype not in PIXEL_DTYPES:
            raise SettingsError(f"frames must be uint8, uint16 or float32, got {frame.dtype}")
        if alpha not in ALPHA_MODES:
            raise SettingsError(f"alpha must be one of {', '.join(ALPHA_MODES)}, got {alpha!r}")
        full, win = check_geometry(frame.shape, full_size, window)
        if out is not None and (not isinstance(out, np.ndarray) or out.shape != frame.shape
                                or out.dtype != frame.dtype or not out.flags.writeable):
            raise SettingsError(f"out must be a writeable {frame.shape} {frame.dtype} array, got "
                                f"{getattr(out, 'shape', type(out))} {getattr(out, 'dtype', '')}")
        if index is None or int(index) < 0:
            index = -1
        if self.source is not None and index >= len(self.source):
            raise SettingsError(f"frame {index} is outside the clip's {len(self.source)} frames")
        ctx = FrameContext(index=int(index), time=float(time), source=self.source,
                           full_size=full, window=None if win == (0, 0, full[1], full[0]) else win, alpha=alpha)
        stamp = {} if out is None else {"out": out}
        return self.render_frame(frame, ctx, alpha=alpha, full_size=full, window=win, **stamp)

    def render_frame(self, frame: np.ndarray, ctx: FrameContext, timings: dict | None = None,
                     owned: bool = False, **stamp: object) -> StampedFrame:
        """The renderer's call: this session's workers, then the one stamping step (see Engine.render_frame)."""
        if self._closed:
            raise SettingsError(f"clip session {self.clip_id!r} is closed")
        if self._serial:
            with self._lock:
                if self._closed:  # closed while this call waited for the one before it
                    raise SettingsError(f"clip session {self.clip_id!r} is closed")
                return self.engine.render_frame(frame, ctx, timings, stamper=self.stamper, owned=owned,
                                                processors=self.workers, **stamp)
        return self.engine.render_frame(frame, ctx, timings, stamper=self.stamper, owned=owned,
                                        processors=self.workers, **stamp)

    def summary(self) -> dict:
        """What the clip's processors found so far (the swap: its face selection and the track ids seen)."""
        out: dict = {}
        for w in self.workers:
            fn = getattr(w, "summary", None)
            if callable(fn):
                out.update(fn())
        return out

    @property
    def closed(self) -> bool:
        return self._closed

    def close(self) -> None:
        """Free the per-clip caches and helper threads (the engine's models stay loaded)."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            for w in self.workers:
                done = getattr(w, "close", None)
                if callable(done) and w not in self.engine.processors:
                    done()
            if self._reader is not None:
                self._reader.close()

    def __enter__(self) -> ClipSession:
        return self

    def __exit__(self, *exc) -> None:
        self.close()
