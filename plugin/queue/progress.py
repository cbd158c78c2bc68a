"""Queue progress: the whole queue and each job with ETA, via rich for people or JSON lines for tools.

JSON lines (``--progress json``) go to stdout, one object per line: ``event`` in {"queue_start", "job_start",
"segment", "job_done", "job_failed", "job_cancelled", "message", "queue_done"}, with ``job``, ``done``,
``total`` (frames), ``fps`` and ``eta_s`` where they apply.
"""

from __future__ import annotations

import json
import sys
import threading
import time
from typing import IO, Protocol


class QueueProgress(Protocol):
    def queue_start(self, jobs: dict[str, int]) -> None: ...
    def job_start(self, job: str, total: int, done: int) -> None: ...
    def segment(self, job: str, frames: int, info: dict) -> None: ...
    def job_end(self, job: str, status: str, **info: object) -> None: ...
    def message(self, text: str, level: str = "info", job: str | None = None) -> None: ...
    def close(self, summary: dict) -> None: ...


class _Counts:
    def __init__(self):
        self.t0 = time.perf_counter()
        self.total: dict[str, int] = {}
        self.done: dict[str, int] = {}
        self.fresh = 0  # frames rendered in this run (resumed frames excluded from the rate)
        self.lock = threading.Lock()

    def rate(self) -> float:
        dt = time.perf_counter() - self.t0
        return self.fresh / dt if dt > 0 else 0.0

    def eta(self, job: str | None = None) -> float | None:
        r = self.rate()
        if r <= 0:
            return None
        if job is None:
            left = sum(self.total.values()) - sum(self.done.values())
        else:
            left = self.total.get(job, 0) - self.done.get(job, 0)
        return round(max(0, left) / r, 1)


class JsonProgress(_Counts):
    def __init__(self, stream: IO[str] | None = None):
        super().__init__()
        self.stream = stream or sys.stdout

    def _emit(self, event: str, **fields) -> None:
        self.stream.write(json.dumps({"event": event, **fields}, ensure_ascii=False) + "\n")
        self.stream.flush()

    def queue_start(self, jobs: dict[str, int]) -> None:
        with self.lock:
            self.total.update(jobs)
            self._emit("queue_start", jobs=len(jobs), total=sum(jobs.values()))

    def job_start(self, job: str, total: int, done: int) -> None:
        with self.lock:
            self.total[job], self.done[job] = total, done
            self._emit("job_start", job=job, done=done, total=total)

    def segment(self, job: str, frames: int, info: dict) -> None:
        with self.lock:
            self.done[job] = self.done.get(job, 0) + frames
            if not info.get("reused"):
                self.fresh += frames
            self._emit("segment", job=job, done=self.done[job], total=self.total.get(job),
                       queue_done=sum(self.done.values()), queue_total=sum(self.total.values()),
                       fps=round(self.rate(), 2), eta_s=self.eta(job), queue_eta_s=self.eta(),
                       host=info.get("host"))

    def job_end(self, job: str, status: str, **info: object) -> None:
        with self.lock:
            self._emit(f"job_{status}", job=job, **info)

    def message(self, text: str, level: str = "info", job: str | None = None) -> None:
        with self.lock:
            self._emit("message", text=text, level=level, job=job)

    def close(self, summary: dict) -> None:
        with self.lock:
            self._emit("queue_done", **summary)


class RichProgress(_Counts):
    """Bars on stderr: one for the queue, one per job, each with its ETA."""

    def __init__(self, quiet: bool = False):
        super().__init__()
        from rich.console import Console
        from rich.progress import (
            BarColumn,
            MofNCompleteColumn,
            Progress,
            TextColumn,
            TimeElapsedColumn,
            TimeRemainingColumn,
        )
        self.console = Console(stderr=True)
        self.quiet = quiet
        self.bars = Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                             TextColumn("frames"), TimeElapsedColumn(), TimeRemainingColumn(),
                             console=self.console, disable=quiet, transient=False)
        self.tasks: dict[str, int] = {}
        self.queue_task = None
        self.bars.start()

    def queue_start(self, jobs: dict[str, int]) -> None:
        with self.lock:
            self.total.update(jobs)
            self.queue_task = self.bars.add_task("queue", total=sum(jobs.values()))

    def job_start(self, job: str, total: int, done: int) -> None:
        with self.lock:
            self.total[job], self.done[job] = total, done
            self.tasks[job] = self.bars.add_task(f"  {job}", total=total, completed=done)
            if self.queue_task is not None:
                grand = self.bars.tasks[self.queue_task].total or 0
                self.bars.update(self.queue_task, total=grand + total, advance=done)

    def segment(self, job: str, frames: int, info: dict) -> None:
        with self.lock:
            self.done[job] = self.done.get(job, 0) + frames
            if not info.get("reused"):
                self.fresh += frames
            if job in self.tasks:
                self.bars.update(self.tasks[job], advance=frames)
            if self.queue_task is not None:
                self.bars.update(self.queue_task, advance=frames)

    def job_end(self, job: str, status: str, **info: object) -> None:
        with self.lock:
            if job in self.tasks:
                self.bars.update(self.tasks[job], description=f"  {job} ({status})")
            if status != "done" and self.queue_task is not None:  # its frames will not come
                left = self.total.get(job, 0) - self.done.get(job, 0)
                self.bars.update(self.queue_task, total=max(0, (self.bars.tasks[self.queue_task].total or 0) - left))
            if status != "done" and info.get("error"):
                self.console.print(f"{job}: {status}: {info['error']}", style="red", markup=False, highlight=False)

    def message(self, text: str, level: str = "info", job: str | None = None) -> None:
        if self.quiet and level != "warning":
            return
        prefix = f"{job}: " if job else ""
        self.console.print(f"{prefix}{text}", style="yellow" if level == "warning" else None, markup=False,
                           highlight=False)

    def close(self, summary: dict) -> None:
        self.bars.stop()
        if self.quiet:
            return
        self.console.print(format_summary(summary), markup=False, highlight=False)


def format_summary(summary: dict) -> str:
    s = summary
    lines = [f"queue: {s['done']} done, {s['failed']} failed, {s['cancelled']} cancelled"
             + (f", {s['skipped']} held by another runner" if s.get("skipped") else "")
             + (f", {s['refused']} not taken by this backend (still queued)" if s.get("refused") else "")
             + f"; {s['frames']} frames rendered in {s['seconds']:.1f} s ({s['fps']:.1f} fps)"
             + (f", {s['reused_frames']} frames reused from committed segments" if s.get("reused_frames") else "")]
    for row in s.get("jobs", []):
        extra = f" -> {row['output']}" if row["status"] == "done" else f": {row.get('error') or ''}"
        lines.append(f"  {row['id']}: {row['status']}{extra}")
    return "\n".join(lines)
