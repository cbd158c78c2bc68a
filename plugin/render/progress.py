"""Progress reporting for long jobs: human text with ETA, JSON lines for hosts, or nothing.

Library code takes a :class:`Progress` and calls ``start``/``advance``/``finish``; it never prints
directly. Hosts (the OFX server, Blender, render queues) parse the JSON lines: one object per line with
``event`` in {"start", "progress", "message", "finish"}, ``job``, ``done``, ``total``, ``fps`` and
``eta_s``.
"""

from __future__ import annotations

import json
import sys
import threading
import time
from typing import IO, Protocol


class Progress(Protocol):
    def start(self, job: str, total: int | None, unit: str = "frames") -> None: ...
    def advance(self, n: int = 1) -> None: ...
    def message(self, text: str, level: str = "info") -> None: ...
    def finish(self, **summary: object) -> None: ...


class _Base:
    """Shared bookkeeping: counts, rate and ETA; thread-safe because workers advance it."""

    min_interval_s = 0.5

    def __init__(self, stream: IO[str] | None = None):
        self.stream = stream if stream is not None else sys.stderr
        self._lock = threading.Lock()
        self.job = ""
        self.total: int | None = None
        self.unit = "frames"
        self.done = 0
        self._t0 = 0.0
        self._last_emit = 0.0

    def start(self, job: str, total: int | None, unit: str = "frames") -> None:
        with self._lock:
            self.job, self.total, self.unit, self.done = job, total, unit, 0
            self._t0 = time.perf_counter()
            self._last_emit = 0.0
            self._emit("start")

    def advance(self, n: int = 1) -> None:
        with self._lock:
            self.done += n
            now = time.perf_counter()
            final = self.total is not None and self.done >= self.total
            if final or now - self._last_emit >= self.min_interval_s:
                self._last_emit = now
                self._emit("progress")

    def message(self, text: str, level: str = "info") -> None:
        with self._lock:
            self._emit("message", text=text, level=level)

    def finish(self, **summary: object) -> None:
        with self._lock:
            self._emit("finish", **summary)

    def rate(self) -> float:
        elapsed = time.perf_counter() - self._t0
        return self.done / elapsed if elapsed > 0 else 0.0

    def eta_s(self) -> float | None:
        r = self.rate()
        if self.total is None or r <= 0:
            return None
        return max(0.0, (self.total - self.done) / r)

    def _emit(self, event: str, **extra: object) -> None:  # pragma: no cover - overridden
        raise NotImplementedError


class QuietProgress(_Base):
    """Counts but prints nothing except warnings (``--quiet``)."""

    def _emit(self, event: str, **extra: object) -> None:
        if event == "message" and extra.get("level") in ("warning", "error"):
            print(f"{extra['level']}: {extra['text']}", file=self.stream)


class TextProgress(_Base):
    """One updating line for people: ``render  120/300 frames  40%  24.1 fps  ETA 0:07``."""

    def _emit(self, event: str, **extra: object) -> None:
        if event == "message":
            lvl = extra.get("level", "info")
            prefix = "" if lvl == "info" else f"{lvl}: "
            print(f"{prefix}{extra['text']}", file=self.stream)
            return
        if event == "start":
            return
        total = f"/{self.total}" if self.total is not None else ""
        pct = f" {100 * self.done / self.total:3.0f}%" if self.total else ""
        eta = self.eta_s()
        eta_txt = f"  ETA {int(eta // 60)}:{int(eta % 60):02d}" if eta is not None and event != "finish" else ""
        line = f"{self.job}  {self.done}{total} {self.unit}{pct}  {self.rate():.1f} {self.unit}/s{eta_txt}"
        end = "\n" if event == "finish" else "\r"
        print(line, end=end, file=self.stream, flush=True)


class JsonProgress(_Base):
    """JSON lines on stdout for hosts (``--progress json``)."""

    min_interval_s = 0.25

    def __init__(self, stream: IO[str] | None = None):
        super().__init__(stream if stream is not None else sys.stdout)

    def _emit(self, event: str, **extra: object) -> None:
        rec: dict[str, object] = {"event": event, "job": self.job, "done": self.done, "total": self.total,
                                  "unit": self.unit}
        if event in ("progress", "finish"):
            rec["rate"] = round(self.rate(), 3)
            eta = self.eta_s()
            rec["eta_s"] = None if eta is None else round(eta, 2)
        rec.update(extra)
        print(json.dumps(rec, default=str), file=self.stream, flush=True)


def make_progress(mode: str = "text", stream: IO[str] | None = None) -> _Base:
    """Progress for a CLI mode: "text", "json" or "quiet"."""
    if mode == "json":
        return JsonProgress(stream)
    if mode == "quiet":
        return QuietProgress(stream)
    if mode == "text":
        return TextProgress(stream)
    raise ValueError(f"unknown progress mode {mode!r}: use text, json or quiet")
