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
    def message(self, text: str, level: str = "info", *, once: str | None = None) -> None: ...
    def finish(self, **summary: object) -> None: ...


class _Base:
    """Shared bookkeeping: counts, rate and ETA; thread-safe because workers advance it."""

    min_interval_s = 0.5

    def __init__(self, stream: IO[str] | None = None, verbose: bool = False):
        self.stream = stream if stream is not None else sys.stderr
        self.verbose = verbose
        self._shown: set[str] = set()  # keys of once-per-run messages already shown
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

    def message(self, text: str, level: str = "info", *, once: str | None = None) -> None:
        """Print a message; with ``once``, only the first message under that key per run (all with -v)."""
        with self._lock:
            if once is not None:
                if once in self._shown and not self.verbose:
                    return
                self._shown.add(once)
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
    """A rich progress bar for people (count, rate, ETA), with messages printed above it, never into it.

    ``rich`` keeps the bar on the last line and prints messages on their own lines; on a stream that is
    not a terminal (a log file, a captured pipe) it prints the final state only.
    """

    def __init__(self, stream: IO[str] | None = None, verbose: bool = False):
        super().__init__(stream, verbose=verbose)
        from rich.console import Console

        self.console = Console(file=self.stream, highlight=False, soft_wrap=True, markup=False, emoji=False)
        self._bar = None
        self._task = None

    def _columns(self):
        from rich import progress as rp

        if self.unit == "bytes":
            return (rp.TextColumn("{task.description}"), rp.BarColumn(), rp.DownloadColumn(),
                    rp.TransferSpeedColumn(), rp.TimeRemainingColumn())
        return (rp.TextColumn("{task.description}"), rp.BarColumn(), rp.MofNCompleteColumn(),
                rp.TextColumn(self.unit[:-1] if self.total == 1 and self.unit.endswith("s") else self.unit),
                rp.TaskProgressColumn(),
                rp.TextColumn("{task.fields[rate]}"), rp.TextColumn("ETA"), rp.TimeRemainingColumn())

    def _emit(self, event: str, **extra: object) -> None:
        from rich import progress as rp

        if event == "message":
            lvl = extra.get("level", "info")
            prefix = "" if lvl == "info" else f"{lvl}: "
            self.console.print(f"{prefix}{extra['text']}")  # rich prints it above a live bar
            return
        rate = f"{self.rate():.1f} {self.unit}/s"
        if event == "start":
            self._close_bar()
            self._bar = rp.Progress(*self._columns(), console=self.console, transient=False,
                                    refresh_per_second=4)
            self._task = self._bar.add_task(self.job, total=self.total, rate=rate)
            self._bar.start()
            return
        if self._bar is None:
            return
        self._bar.update(self._task, completed=self.done, rate=rate)
        if event == "finish":
            self._close_bar()

    def _close_bar(self) -> None:
        if self._bar is not None:
            self._bar.stop()
            self._bar = None


class JsonProgress(_Base):
    """JSON lines on stdout for hosts (``--progress json``)."""

    min_interval_s = 0.25

    def __init__(self, stream: IO[str] | None = None, verbose: bool = False):
        super().__init__(stream if stream is not None else sys.stdout, verbose=verbose)

    def _emit(self, event: str, **extra: object) -> None:
        rec: dict[str, object] = {"event": event, "job": self.job, "done": self.done, "total": self.total,
                                  "unit": self.unit}
        if event in ("progress", "finish"):
            rec["rate"] = round(self.rate(), 3)
            eta = self.eta_s()
            rec["eta_s"] = None if eta is None else round(eta, 2)
        rec.update(extra)
        print(json.dumps(rec, default=str), file=self.stream, flush=True)


def make_progress(mode: str = "text", stream: IO[str] | None = None, verbose: bool = False) -> _Base:
    """Progress for a CLI mode: "text", "json" or "quiet"."""
    if mode == "json":
        return JsonProgress(stream, verbose=verbose)
    if mode == "quiet":
        return QuietProgress(stream, verbose=verbose)
    if mode == "text":
        return TextProgress(stream, verbose=verbose)
    raise ValueError(f"unknown progress mode {mode!r}: use text, json or quiet")
