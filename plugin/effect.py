"""The effect: ``render(frame, time) -> frame`` with explicit, frozen settings.

An :class:`Engine` is long-lived (a render server or host adapter keeps one): it holds the frame
processors (face analysis + swap, added by later components) and the :class:`Stamper`. Every path that
produces pixels — CLI renders, host adapters, the OFX server, the queue — goes through
:meth:`Engine.render_frame`, which always ends in the stamp. Processors never stamp themselves.
"""

from __future__ import annotations

import threading
import time
import uuid
from collections import OrderedDict
from typing import Sequence

import numpy as np

from .disclosure.label import LabelSettings
from .disclosure.stamp import StampedFrame, Stamper
from .errors import SettingsError
from .frames import FrameContext, FrameProcessor, FrameSource, ProcessResult

__all__ = ["Engine", "FrameContext", "FrameProcessor", "FrameSource", "ProcessResult"]


class Engine:
    """Processors followed by the one stamping step. Thread-safe when every processor is."""

    #: clips (``source`` objects) whose sessions :meth:`render` keeps; the least recently used is closed
    RENDER_SESSIONS = 4

    def __init__(self, processors: Sequence[FrameProcessor] = (), label: LabelSettings | None = None):
        self.processors = tuple(processors)
        self.session_id = str(uuid.uuid4())  # watermark id of frames handed back to hosts
        self.stamper = Stamper(label or LabelSettings(), self.session_id)
        self._render_sessions: OrderedDict[int, tuple[object, object]] = OrderedDict()  # id(source) -> (source, session)
        self._render_lock = threading.Lock()

    @classmethod
    def from_settings(cls, settings, *, fps: float | None = None, progress=None) -> "Engine":
        """The engine for :class:`~facecomp.settings.EffectSettings`: the swap processor (when source
        photos or a model are set) followed by the stamp with the settings' label. ``fps``: the clip's
        frame rate, which the landmark smoothing is tuned for (default 25)."""
        from .swap.factory import processor_from_settings  # the swap component builds on this module

        proc = processor_from_settings(settings, progress=progress, fps=fps)
        if proc is not None and getattr(settings, "matte_alpha", False):
            from .swap.matte import AlphaMatteProcessor

            proc = AlphaMatteProcessor(proc)
        elif proc is not None and getattr(settings, "matte_view", False):
            from .swap.matte import MatteProcessor

            proc = MatteProcessor(proc)
        return cls([proc] if proc is not None else [], label=settings.label)

    @property
    def needs_alpha(self) -> bool:
        """A processor writes the frame's alpha channel (the matte in alpha): the renderer gives it RGBA."""
        return any(getattr(p, "needs_alpha", False) for p in self.processors)

    @property
    def thread_safe(self) -> bool:
        return all(getattr(p, "thread_safe", False) for p in self.processors)

    def open_clip(self, source, clip_id: str, *, stamper: Stamper | None = None):
        """A :class:`~facecomp.session.ClipSession` for one clip (path, FrameSource, or None for pixels only).

        The session owns that clip's analysis caches, tracks, colour smoothing and watermark id (from
        ``clip_id``); the engine keeps only the shared models. ``stamper``: a renderer's per-output stamper.
        """
        from .session import ClipSession

        return ClipSession(self, source, clip_id, stamper=stamper)

    def render_frame(self, frame: np.ndarray, ctx: FrameContext, timings: dict | None = None,
                     stamper: Stamper | None = None, owned: bool = False, *,
                     processors: Sequence[FrameProcessor] | None = None, **stamp) -> StampedFrame:
        """Run the processors, then stamp. The result is the only thing writers accept.

        ``timings``, when given, accumulates seconds per stage (each processor's name, "label", "watermark").
        ``stamper``: a per-output stamper from :meth:`Stamper.for_job` (its watermark names that output's
        manifest); default: the engine's own. ``owned``: the frame buffer may be stamped in place.
        ``processors``: a clip session's per-clip workers (default: the engine's own, for a lone frame);
        ``stamp``: window and alpha arguments of :meth:`Stamper.stamp`.
        """
        stamper = stamper or self.stamper
        original = frame
        replaced: list[int] = []
        for proc in self.processors if processors is None else processors:
            t0 = time.perf_counter()
            result = proc.process(frame, ctx)
            if result.frame.shape != frame.shape or result.frame.dtype != frame.dtype:
                raise RuntimeError(f"processor {proc.name} changed the frame's shape or dtype")
            frame = result.frame
            replaced.extend(result.replaced_tracks)
            if timings is not None:
                timings[proc.name] = timings.get(proc.name, 0.0) + time.perf_counter() - t0
        stamped = stamper.stamp(frame, index=ctx.index if ctx.index >= 0 else None, time=ctx.time,
                                replaced_tracks=tuple(replaced), owned=owned or frame is not original,
                                timings=timings, **stamp)
        return stamped

    def render(self, frame: np.ndarray, time: float, index: int | None = None,
               source: FrameSource | None = None) -> np.ndarray:
        """One frame, pixels in, processed and labelled pixels out (same shape/dtype).

        Frames of one clip (the same ``source`` object) share one clip session, as with :meth:`open_clip`:
        a host calling this frame after frame gets the analysis caches and tracks carried over instead of
        a fresh session per call (12x the source reads on a 10-frame clip). The sessions of the last
        :attr:`RENDER_SESSIONS` sources are kept, and hold their sources, until pushed out or
        :meth:`close`. Without a source there is no clip to key on: the frame is rendered alone.
        Hosts that know when a clip ends should use :meth:`open_clip` and close it.
        """
        ctx = FrameContext(index=-1 if index is None else index, time=time, source=source)
        if source is None:
            with self.open_clip(None, self.session_id, stamper=self.stamper) as session:
                return session.render_frame(frame, ctx).pixels
        session = self._render_session(source)
        try:
            return session.render_frame(frame, ctx).pixels
        except SettingsError:
            if not session.closed:
                raise
        # pushed out by other clips' frames between being found and rendering: once more, in a new one
        return self._render_session(source).render_frame(frame, ctx).pixels

    def _render_session(self, source: FrameSource):
        pushed = []
        with self._render_lock:
            kept = self._render_sessions.get(id(source))
            if kept is not None and kept[0] is source:
                self._render_sessions.move_to_end(id(source))
                return kept[1]
            session = self.open_clip(source, self.session_id, stamper=self.stamper)
            self._render_sessions[id(source)] = (source, session)
            while len(self._render_sessions) > self.RENDER_SESSIONS:
                pushed.append(self._render_sessions.popitem(last=False)[1][1])
        for old in pushed:  # a render still running in it finishes first (the session's own lock)
            old.close()
        return session

    def close(self) -> None:
        """Close the clip sessions :meth:`render` kept (the models stay loaded; render opens new ones)."""
        with self._render_lock:
            kept = [session for _, session in self._render_sessions.values()]
            self._render_sessions.clear()
        for session in kept:
            session.close()

    def model_records(self) -> list[dict]:
        return [r for p in self.processors for r in p.model_records()]

    def settings_dict(self) -> dict:
        return {"processors": {p.name: p.settings_dict() for p in self.processors},
                "disclosure": self.stamper.describe()}

    def source_identity(self) -> dict | None:
        """The hash reference of the identity put into the video (from the swap processor), never pixels."""
        for p in self.processors:
            ident = getattr(p, "source_identity", None)
            if callable(ident):
                value = ident()
                if value:
                    return value
        return None
