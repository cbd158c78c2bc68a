"""The queue folder: one file per job and one per job state, written atomically, readable while it runs.

Layout (``DIR`` is ``--queue``)::

    DIR/queue.json          schema and the allowed roots (fixed when the queue is made)
    DIR/jobs/ID.json        the validated job, never changed after ``queue add``
    DIR/state/ID.json       status, attempts, segments, timings; replaced atomically on every change
    DIR/state/ID.cancel     a cancel request, honoured between segments by the runner that holds the job
    DIR/logs/ID.log         the job's log (appended)
    DIR/locks/ID.lock       an fcntl lock held by the runner working on the job: two runners never share one
    DIR/work/ID/            committed segments (or STORAGE/ID/ when the job names shared storage)

Why fcntl: the kernel drops the lock when its holder dies (kill -9, power cut), so a dead runner never
leaves a job stuck, and the next ``queue run`` simply takes it and resumes from the committed segments.
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import fcntl
import json
import os
import re
import shutil
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from ..errors import SettingsError
from .jobs import Job, PathPolicy, load_job

QUEUE_SCHEMA = "facecomp.queue/1"
STATUSES = ("queued", "running", "done", "failed", "cancelled")
_ID = re.compile(r"^[0-9]{4,}-[A-Za-z0-9._-]{0,40}$")


def now_iso() -> str:
    return _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds")


def write_json_atomic(path: Path, data: dict) -> None:
    """Temp file in the same folder, fsync, rename: readers see the old or the new file, never half."""
    from ..atomic import atomic_write

    atomic_write(path, json.dumps(data, indent=1, ensure_ascii=False) + "\n")


def default_queue_dir() -> Path:
    env = os.environ.get("FACECOMP_QUEUE")
    if env:
        return Path(env)
    from platformdirs import user_state_dir
    return Path(user_state_dir("facecomp")) / "queue"


@dataclass
class JobLock:
    """An exclusive fcntl lock on one job; released on close or when the process dies."""

    path: Path
    fd: int

    def release(self) -> None:
        if self.fd >= 0:
            try:
                fcntl.flock(self.fd, fcntl.LOCK_UN)
            finally:
                os.close(self.fd)
                self.fd = -1


class QueueDir:
    """A queue folder. Every method is safe to call while a runner works on the queue."""

    def __init__(self, root: str | os.PathLike, *, create: bool = False, roots: list[str] | None = None):
        self.root = Path(root).expanduser().absolute()
        meta_path = self.root / "queue.json"
        if not meta_path.is_file():
            if not create:
                raise SettingsError("no queue here", path=self.root, hint="add a job first: facecomp queue add JOB")
            for sub in ("jobs", "state", "logs", "locks", "work"):
                (self.root / sub).mkdir(parents=True, exist_ok=True)
            real_roots = [os.path.realpath(r) for r in roots or []]
            for r in real_roots:
                if not os.path.isdir(r):
                    raise SettingsError("an allowed root is not a folder", path=r)
            with self._meta_lock():
                if not meta_path.is_file():
                    write_json_atomic(meta_path, {"schema": QUEUE_SCHEMA, "roots": real_roots, "created": now_iso()})
        meta = json.loads(meta_path.read_text(encoding="utf-8"))
        if meta.get("schema") != QUEUE_SCHEMA:
            raise SettingsError(f"not a facecomp queue (schema {meta.get('schema')!r})", path=meta_path)
        self.roots: list[str] = list(meta.get("roots") or [])
        if roots and sorted(os.path.realpath(r) for r in roots) != sorted(self.roots):
            raise SettingsError("the queue's allowed roots are fixed when it is made", path=self.root,
                                hint=f"this queue's roots: {', '.join(self.roots) or '(none)'}; use another --queue")
        self.policy = PathPolicy(self.roots)

    # ------------------------------------------------------------------ paths
    def job_path(self, job_id: str) -> Path:
        return self.root / "jobs" / f"{job_id}.json"

    def state_path(self, job_id: str) -> Path:
        return self.root / "state" / f"{job_id}.json"

    def log_path(self, job_id: str) -> Path:
        return self.root / "logs" / f"{job_id}.log"

    def cancel_path(self, job_id: str) -> Path:
        return self.root / "state" / f"{job_id}.cancel"

    def work_dir(self, job_id: str, job: Job) -> Path:
        base = Path(job.storage) if job.storage else self.root / "work"
        return base / job_id

    @contextlib.contextmanager
    def _meta_lock(self) -> Iterator[None]:
        self.root.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.root / ".queue.lock", os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            fcntl.flock(fd, fcntl.LOCK_UN)
            os.close(fd)

    # ------------------------------------------------------------------ jobs
    def ids(self) -> list[str]:
        return sorted(p.stem for p in (self.root / "jobs").glob("*.json") if _ID.match(p.stem))

    def check_id(self, job_id: str) -> str:
        if not _ID.match(job_id or "") or not self.job_path(job_id).is_file():
            known = ", ".join(self.ids()[-5:]) or "none"
            raise SettingsError(f"no job {job_id!r} in this queue", path=self.root, hint=f"recent ids: {known}")
        return job_id

    def job(self, job_id: str) -> Job:
        return Job.from_stored(json.loads(self.job_path(job_id).read_text(encoding="utf-8")))

    def state(self, job_id: str) -> dict:
        """The job's state; a missing or unreadable one counts as queued (committed segments are still
        found on disk, so nothing done is lost)."""
        try:
            data = json.loads(self.state_path(job_id).read_text(encoding="utf-8"))
        except FileNotFoundError:
            return {"status": "queued"}
        except (OSError, ValueError):
            return {"status": "queued", "note": "the state file was unreadable; the job is planned again"}
        return data if isinstance(data, dict) and data.get("status") in STATUSES else {"status": "queued"}

    def write_state(self, job_id: str, state: dict) -> None:
        state = dict(state, updated=now_iso())
        write_json_atomic(self.state_path(job_id), state)

    def log(self, job_id: str, text: str) -> None:
        with open(self.log_path(job_id), "a", encoding="utf-8") as f:
            f.write(f"{now_iso()} {text}\n")

    def add(self, job_files: list[str | os.PathLike]) -> list[str]:
        """Validate every file first, then queue them all (or none): returns the new job ids."""
        return self.add_jobs([load_job(p, self.policy) for p in job_files], [os.fspath(p) for p in job_files])

    def add_jobs(self, jobs: list[Job], origins: list[str] | None = None) -> list[str]:
        """Queue validated jobs, all or none; ``origins`` name them in errors (their job files)."""
        job_files = origins or [j.name for j in jobs]
        with self._meta_lock():
            busy, reading = {}, {}
            for jid in self.ids():
                if self.state(jid).get("status") in ("queued", "running", "failed"):
                    queued = self.job(jid)
                    busy[queued.output] = jid
                    reading[queued.input] = jid
            seen: dict[str, str] = {}
            for path, job in zip(job_files, jobs):
                if job.output in busy:
                    raise SettingsError(f"output {job.output} is already the output of queued job {busy[job.output]}",
                                        path=path, hint="two jobs must not write the same file")
                if job.output in seen:
                    raise SettingsError(f"output {job.output} is also the output of {seen[job.output]}", path=path,
                                        hint="two jobs must not write the same file")
                seen[job.output] = str(path)
            inputs = {j.input for j in jobs}
            for path, job in zip(job_files, jobs):
                if job.output in inputs:
                    raise SettingsError(f"output {job.output} is the input of another job in this batch", path=path)
                if job.output in reading:
                    raise SettingsError(f"output {job.output} is the input of queued job {reading[job.output]}",
                                        path=path, hint="facecomp never overwrites a source")
                if job.input in busy:
                    raise SettingsError(f"input {job.input} is the output of queued job {busy[job.input]}",
                                        path=path, hint="queue it after that job is done")
            ids = []
            n = max([int(i.split("-", 1)[0]) for i in self.ids()] + [0])
            for job in jobs:
                n += 1
                slug = re.sub(r"[^A-Za-z0-9._-]+", "_", job.name)[:40].strip("._") or "job"
                jid = f"{n:04d}-{slug}"
                if job.manifest_id is None:  # fixed now, so resumed and repeated runs give the same output
                    job = job.with_manifest_id(str(uuid.uuid4()))
                write_json_atomic(self.job_path(jid), job.to_dict())
                self.write_state(jid, {"status": "queued", "attempts": 0, "added": now_iso()})
                self.log(jid, f"added: {job.input} -> {job.output} (manifest {job.manifest_id})")
                ids.append(jid)
        return ids

    # ------------------------------------------------------------------ locking
    def try_lock(self, job_id: str) -> JobLock | None:
        """The job's lock, or None when another process holds it.

        A lock file can be removed (``clean``) between this process opening it and locking it; a lock on
        that unlinked file would exclude nobody (the next opener makes a new file), so it counts as taken.
        """
        path = self.root / "locks" / f"{job_id}.lock"
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            return None
        try:
            same = os.path.samestat(os.fstat(fd), os.stat(path))
        except FileNotFoundError:
            same = False
        if not same:
            fcntl.flock(fd, fcntl.LOCK_UN)
            os.close(fd)
            return None
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
        return JobLock(self.root / "locks" / f"{job_id}.lock", fd)

    def is_locked(self, job_id: str) -> bool:
        lock = self.try_lock(job_id)
        if lock is None:
            return True
        lock.release()
        return False

    # ------------------------------------------------------------------ commands
    def request_cancel(self, job_id: str) -> str:
        """Cancel now when no runner holds the job, else ask its runner (it stops between segments)."""
        self.check_id(job_id)
        lock = self.try_lock(job_id)
        if lock is None:
            st = self.state(job_id)
            if st.get("status") in ("done", "cancelled"):
                return st["status"]
            self.cancel_path(job_id).write_text(now_iso() + "\n")
            self.log(job_id, "cancel requested; the runner stops it after the segments in flight")
            return "cancelling"
        try:
            st = self.state(job_id)  # read under the lock: a runner may have finished it since
            if st.get("status") in ("done", "cancelled"):
                return st["status"]
            self.write_state(job_id, dict(st, status="cancelled"))
            self.log(job_id, "cancelled")
        finally:
            lock.release()
        return "cancelled"

    def retry(self, job_id: str) -> None:
        """Put a failed or cancelled job back in the queue; committed segments are kept and reused."""
        self.check_id(job_id)
        lock = self.try_lock(job_id)
        if lock is None:
            raise SettingsError(f"job {job_id} is being rendered by a runner now", hint="wait, or cancel it first")
        try:
            st = self.state(job_id)
            if st.get("status") not in ("failed", "cancelled"):
                raise SettingsError(f"job {job_id} is {st.get('status')}; only failed or cancelled jobs are retried")
            self.cancel_path(job_id).unlink(missing_ok=True)
            self.write_state(job_id, dict(st, status="queued", attempts=0, error=None))
            self.log(job_id, "queued again (retry)")
        finally:
            lock.release()

    def clean(self) -> list[str]:
        """Remove finished and cancelled jobs (records, logs, segments) and stray temporary files."""
        removed = []
        for jid in self.ids():
            st = self.state(jid)
            if st.get("status") not in ("done", "cancelled"):
                continue
            lock = self.try_lock(jid)
            if lock is None:
                continue
            try:
                job = self.job(jid)
                shutil.rmtree(self.work_dir(jid, job), ignore_errors=True)
                for p in (self.state_path(jid), self.cancel_path(jid), self.log_path(jid), self.job_path(jid)):
                    p.unlink(missing_ok=True)
                removed.append(jid)
                # removed while held: a process that opened the file before sees it gone (try_lock)
                lock.path.unlink(missing_ok=True)
            finally:
                lock.release()
        for sub in ("jobs", "state"):
            for p in (self.root / sub).glob(".*.tmp"):
                p.unlink(missing_ok=True)
        return removed

    def summary(self) -> list[dict]:
        """Every job with its state, for ``queue status``."""
        rows = []
        for jid in self.ids():
            try:
                job = self.job(jid)
            except (OSError, ValueError, KeyError, TypeError) as exc:
                rows.append({"id": jid, "status": "broken", "error": f"unreadable job record ({exc})"})
                continue
            st = self.state(jid)
            status = st.get("status", "queued")
            if status == "running" and not self.is_locked(jid):
                status = "interrupted"  # its runner died; the next queue run resumes it
            rows.append({"id": jid, "name": job.name, "status": status, "input": job.input, "output": job.output,
                         "manifest_id": job.manifest_id, "priority": job.options.priority,
                         "frames_done": st.get("frames_done", 0), "frames_total": st.get("frames_total"),
                         "segments_done": sum(1 for s in st.get("segments", []) if s[2]),
                         "segments": len(st.get("segments", [])), "attempts": st.get("attempts", 0),
                         "error": st.get("error"), "fps": st.get("fps"), "updated": st.get("updated")})
        return rows

