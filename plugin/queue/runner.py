"""``queue run``: take the queued jobs this runner can lock, render their segments on a backend, join.

Every segment of every job taken is a task on the backend (local worker processes, or Ray tasks across
machines); the runner (the driver) records each committed segment in the job's state, joins a job's
segments once all are committed, and moves on. A failing segment is retried up to the job's
``options.retries``; past that the job fails and the others go on. Cancel requests are honoured between
segments. Killed runners leave committed segments behind; the next run reuses them.
"""

from __future__ import annotations

import concurrent.futures as cf
import json
import os
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

from ..errors import FacecompError, OutputError
from .progress import QueueProgress
from .segments import (
    JoinedSegment,
    Segment,
    join_segments,
    plan_segments,
    read_segment_manifest,
    segment_ok,
    source_keyframes,
)
from .store import QueueDir
from .work import SegmentTask, is_committed, render_segment


class Backend(Protocol):
    name: str

    def submit(self, task: SegmentTask) -> cf.Future: ...

    def close(self) -> None: ...


class LocalBackend:
    """Worker processes on this machine (spawned: no state shared with the runner), killed with it.

    A worker that dies (the out-of-memory killer, a crash) fails only the segment it was rendering,
    which the runner charges to that segment's job; queued segments wait for a fresh worker (:mod:`.pool`).
    """

    name = "local"

    def __init__(self, workers: int = 1):
        from .pool import WorkerPool
        from .work import worker_init
        self.workers = max(1, int(workers))
        self._pool = WorkerPool(self.workers, initializer=worker_init)

    def submit(self, task: SegmentTask) -> cf.Future:
        return self._pool.submit(render_segment, task)

    def close(self) -> None:
        self._pool.close()


@dataclass
class JobRun:
    id: str
    job: object
    lock: object
    work: Path
    segments: list[Segment]
    committed: set[int] = field(default_factory=set)
    failures: int = 0
    status: str = "running"
    error: str | None = None
    fps: float | None = None
    render_seconds: float = 0.0
    fps_source: float | None = None
    input_sha256: str | None = None
    state: dict = field(default_factory=dict)


def _resolve_range(job) -> tuple[int, int, float]:
    from ..render.clip import resolve_frame
    from ..video.reader import VideoReader
    with VideoReader(job.input) as reader:
        start = resolve_frame(job.start, reader, 0)
        end = min(resolve_frame(job.end, reader, reader.info.frame_count), reader.info.frame_count)
        fps = float(reader.info.fps)
    if not 0 <= start < end:
        raise FacecompError(f"the range {start}..{end} selects no frame", path=job.input)
    return start, end, fps


class Runner:
    def __init__(self, queue: QueueDir, backend: Backend, progress: QueueProgress, *, finalize=None):
        self.q, self.backend, self.progress, self.finalize = queue, backend, progress, finalize
        self.runs: dict[str, JobRun] = {}
        self.futures: dict[cf.Future, tuple[str, int]] = {}
        self.skipped = 0
        self.refused: list[dict] = []  # jobs this backend cannot run (left queued)
        self.reused_frames = 0
        self.fresh_frames = 0

    # ------------------------------------------------------------------ taking jobs
    def _candidates(self) -> list[str]:
        rows = []
        for jid in self.q.ids():
            st = self.q.state(jid)
            if st.get("status") not in ("queued", "running"):
                continue
            try:
                rows.append((-self.q.job(jid).options.priority, jid))
            except (OSError, ValueError, KeyError, TypeError) as exc:  # one broken record stops no other job
                self.progress.message(f"job record unreadable, skipped ({exc})", "warning", jid)
        return [jid for _, jid in sorted(rows)]

    def _take(self, jid: str) -> None:
        lock = self.q.try_lock(jid)
        if lock is None:
            self.skipped += 1
            return
        st = self.q.state(jid)
        if st.get("status") not in ("queued", "running") or not self.q.job_path(jid).is_file():
            lock.release()  # changed between listing and locking (finished, cancelled, or removed by clean)
            return
        job = self.q.job(jid)
        work = self.q.work_dir(jid, job)
        if st.get("status") == "running" and self._joined_before(jid, job, st, work, lock):
            return
        refusal = self._backend_refuses(job, work)
        if refusal is not None:  # before any segment is rendered: the job stays queued, as it was
            self.q.log(jid, f"not taken: {refusal}")
            self.progress.message(f"not taken: {refusal}", "warning", jid)
            self.refused.append({"id": jid, "status": "refused", "output": job.output, "error": refusal,
                                 "fps": None})
            lock.release()
            return
        try:
            if self.q.cancel_path(jid).exists():
                raise _Cancelled()
            start, end, fps = _resolve_range(job)
            segs = plan_segments(start, end, job.options.segment_frames, source_keyframes(job.input))
            work.mkdir(parents=True, exist_ok=True)
            for stray in work.glob(".*"):  # temp files of a render that was killed
                if stray.is_file():
                    stray.unlink(missing_ok=True)
            identity = self._input_identity(jid, job, st, work)
        except _Cancelled:
            self.q.write_state(jid, dict(st, status="cancelled"))
            lock.release()
            return
        except (FacecompError, OSError, ValueError) as exc:
            self.q.log(jid, f"failed before rendering: {exc}")
            self.q.write_state(jid, dict(st, status="failed", error=str(exc)))
            self.progress.job_end(jid, "failed", error=str(exc))
            self.runs[jid] = JobRun(jid, job, None, work, [], status="failed", error=str(exc))
            lock.release()
            return
        suffix = Path(job.output).suffix.lower()
        run = JobRun(jid, job, lock, work, segs, failures=int(st.get("attempts", 0)), state=dict(st), fps_source=fps)
        run.input_sha256 = identity["sha256"]
        run.state["input"] = identity
        for i, s in enumerate(segs):
            seg_path = work / s.file_name(suffix)
            if is_committed(seg_path):
                if segment_ok(seg_path, s, job.manifest_id):
                    run.committed.add(i)
                else:  # cut short on disk (a power cut before the data reached it): render it again
                    self.q.log(jid, f"segment {s.start}..{s.end - 1} on disk is incomplete; rendering it again")
                    seg_path.unlink(missing_ok=True)
        self.runs[jid] = run
        resumed = sum(segs[i].frames for i in run.committed)
        self.reused_frames += resumed
        self._save(run)
        self.q.log(jid, f"taken by runner {os.getpid()} ({self.backend.name}): {len(segs)} segments, "
                        f"{len(run.committed)} already committed")
        self.progress.job_start(jid, end - start, resumed)
        for i, s in enumerate(segs):
            if i not in run.committed:
                self._submit(run, i)
        if len(run.committed) == len(segs):
            self._join(run)

    def _backend_refuses(self, job, work: Path) -> str | None:
        """Why this backend cannot run the job, or None.

        A Ray cluster joined by address renders segments on other machines into the job's segment folder
        (its ``storage``, else the queue folder's); a node that does not see that folder would write its
        segments where the join on this machine never finds them, found out only after the whole render.
        Then the backend may refuse a job whose input files some node does not see as this machine does.
        """
        unshared = getattr(self.backend, "unshared_nodes", None)
        if unshared is None:
            return None
        base = work.parent
        try:
            missing = unshared(base)
        except OSError as exc:
            return f"its segment folder {base} cannot be written here ({exc.strerror or exc})"
        if not missing:
            inputs = getattr(self.backend, "input_refusal", None)
            return inputs(job) if inputs is not None else None
        nodes = ", ".join(n[:12] for n in missing)
        fix = ("put storage on a folder every node and this machine mount at the same path" if job.storage else
               "add the job again with storage = \"FOLDER\" on storage every node and this machine mount at the "
               "same path (NFS, a cluster file system), or keep the queue folder on such storage")
        return (f"its segment folder {base} is not seen by {len(missing)} node(s) of the Ray cluster ({nodes}): "
                f"{fix}; or run it with --backend local, or a Ray without --address (this machine only)")

    def _joined_before(self, jid: str, job, st: dict, work: Path, lock) -> bool:
        """A job whose runner was stopped after the join's rename but before the job was marked done.

        Recognised, and marked done, only when the output's manifest is this job's (its manifest id, the
        input's hash as the job recorded it, the planned segment ranges) and the written output, read back,
        has the hash that manifest records; anything else is joined again as before.
        """
        from ..disclosure.manifest import load_manifest
        from ..hashing import sha256_file
        out = Path(job.output)
        seen = st.get("input") or {}
        ranges = [[a, b - 1] for a, b, *_ in st.get("segments") or []]
        try:
            m = load_manifest(out)
            stat = os.stat(job.input)
        except (OSError, ValueError):
            return False
        if (not ranges or m.get("id") != job.manifest_id
                or (m.get("input") or {}).get("sha256") != seen.get("sha256")
                or (seen.get("size"), seen.get("mtime_ns")) != (stat.st_size, stat.st_mtime_ns)
                or ((m.get("disclosure") or {}).get("segments") or {}).get("ranges") != ranges):
            return False
        try:
            if sha256_file(out) != (m.get("output") or {}).get("sha256"):
                return False
        except OSError:
            return False
        import shutil
        shutil.rmtree(work, ignore_errors=True)
        frames = (m.get("replacement") or {}).get("frames_total")
        self.q.log(jid, f"done: {out} was joined by the last run, which stopped before marking the job done "
                        f"(recognised by its manifest {m['id']} and the output's hash read back)")
        self.q.write_state(jid, dict(st, status="done", error=None, runner=os.getpid(), frames_done=frames,
                                     segments=[[a, b + 1, True] for a, b in ranges]))
        self.q.cancel_path(jid).unlink(missing_ok=True)
        lock.release()
        self.runs[jid] = JobRun(jid, job, None, work, [], status="done")
        self.progress.job_end(jid, "done", output=str(out), manifest=str(out) + ".synthetic.json", frames=frames)
        return True

    def _input_identity(self, jid: str, job, st: dict, work: Path) -> dict:
        """Size, mtime and sha256 of the input, hashed once per job (not per segment) and kept in the state.

        A source that changed since the last run invalidates its committed segments: they are removed, so
        two versions of a source are never joined into one output.
        """
        from ..hashing import sha256_file
        stat = os.stat(job.input)
        seen = st.get("input") or {}
        if seen.get("size") == stat.st_size and seen.get("mtime_ns") == stat.st_mtime_ns and seen.get("sha256"):
            return dict(seen)
        if seen:
            self.q.log(jid, "the input changed since the last run; its committed segments are discarded")
            for old in work.glob("seg_*"):
                old.unlink(missing_ok=True)
        return {"size": stat.st_size, "mtime_ns": stat.st_mtime_ns, "sha256": sha256_file(job.input)}

    def _task(self, run: JobRun, i: int) -> SegmentTask:
        s = run.segments[i]
        suffix = Path(run.job.output).suffix.lower()
        return SegmentTask(job_id=run.id, input=run.job.input, path=str(run.work / s.file_name(suffix)),
                           start=s.start, end=s.end, settings_json=json.dumps(run.job.settings, sort_keys=True),
                           manifest_id=run.job.manifest_id, fps=run.fps_source, input_sha256=run.input_sha256)

    def _submit(self, run: JobRun, i: int) -> None:
        self.futures[self.backend.submit(self._task(run, i))] = (run.id, i)

    def _save(self, run: JobRun) -> None:
        frames_done = sum(run.segments[i].frames for i in run.committed)
        run.state.update(status=run.status, attempts=run.failures, error=run.error, runner=os.getpid(),
                         backend=self.backend.name, frames_done=frames_done,
                         frames_total=sum(s.frames for s in run.segments),
                         segments=[[s.start, s.end, i in run.committed] for i, s in enumerate(run.segments)],
                         fps=run.fps)
        self.q.write_state(run.id, run.state)

    # ------------------------------------------------------------------ results
    def _finish(self, run: JobRun, status: str, error: str | None = None) -> None:
        run.status, run.error = status, error
        for fut, (jid, _) in list(self.futures.items()):
            if jid == run.id:
                fut.cancel()
                del self.futures[fut]
        self._save(run)
        self.q.cancel_path(run.id).unlink(missing_ok=True)
        if run.lock is not None:
            run.lock.release()
            run.lock = None

    def _on_result(self, fut: cf.Future, jid: str, i: int) -> None:
        run = self.runs[jid]
        if run.status != "running":
            return
        seg = run.segments[i]
        try:
            info = fut.result()
        except BaseException as exc:  # noqa: BLE001  whatever a segment raised: bounded retries, then the job fails
            run.failures += 1
            detail = "".join(traceback.format_exception_only(type(exc), exc)).strip()
            self.q.log(jid, f"segment {seg.start}..{seg.end - 1} failed (failure {run.failures} of at most "
                            f"{run.job.options.retries + 1}): {detail}")
            if run.failures > run.job.options.retries:
                self.q.log(jid, "failed: retries exhausted")
                self._finish(run, "failed", detail)
                self.progress.job_end(jid, "failed", error=detail)
            else:
                self.progress.message(f"segment {seg.start}..{seg.end - 1} failed, retrying: {detail}",
                                      "warning", jid)
                self._save(run)
                self._submit(run, i)
            return
        run.committed.add(i)
        run.render_seconds += info.get("seconds", 0.0)
        if not info.get("reused"):
            self.fresh_frames += seg.frames
        self.q.log(jid, f"segment {seg.start}..{seg.end - 1} committed ({info.get('frames')} frames, "
                        f"{info.get('seconds', 0.0):.2f} s on {info.get('host')}:{info.get('pid')}"
                        + (f", Ray node {info['node'][:12]}" if info.get("node") else "") + ")")
        self._save(run)
        self.progress.segment(jid, seg.frames, info)
        if len(run.committed) == len(run.segments):
            self._join(run)

    def _join(self, run: JobRun) -> None:
        suffix = Path(run.job.output).suffix.lower()
        folder = None
        try:
            parts = []
            for s in run.segments:
                p = run.work / s.file_name(suffix)
                parts.append(JoinedSegment(p, s, read_segment_manifest(p)))
            out = Path(run.job.output)
            # as at add: inside the allowed roots, now; then that folder is held open and written through
            # (a folder on the path turned into a symlink out of the roots after this check changes nothing)
            folder = self.q.policy.hold_folder(str(out), "output")
            if (folder.write_dir / out.name).exists() and not run.job.options.overwrite:
                raise FacecompError("the output appeared while the job ran; not replaced", path=out,
                                    hint="set options.overwrite = true, or move the file away and retry")
            from ..settings import EffectSettings
            ident = EffectSettings.from_dict(run.job.settings).identity
            t0 = time.perf_counter()
            manifest = join_segments(parts, source=run.job.input, output=out, manifest_id=run.job.manifest_id,
                                     identity=ident, finalize=self.finalize,
                                     segment_log=lambda text: self.q.log(run.id, text),
                                     write_dir=folder.write_dir if folder.held else None,
                                     folder_check=lambda: _folder_unmoved(folder, out, committed=False))
            _folder_unmoved(folder, out, committed=True)
            frames = manifest["replacement"]["frames_total"]
            run.fps = round(frames / run.render_seconds, 2) if run.render_seconds else None
            self.q.log(run.id, f"done: {out} ({frames} frames, joined in {time.perf_counter() - t0:.2f} s, "
                               f"manifest {manifest['id']})")
        except Exception as exc:  # any failure fails this job; the others go on (as in _on_result)
            text = folder.user_text(str(exc)) if folder is not None else str(exc)
            self.q.log(run.id, f"failed while joining: {text}")
            self._finish(run, "failed", f"join: {text}")
            self.progress.job_end(run.id, "failed", error=f"join: {text}")
            return
        finally:
            if folder is not None:
                folder.close()
        import shutil
        shutil.rmtree(run.work, ignore_errors=True)
        self._finish(run, "done")
        self.progress.job_end(run.id, "done", output=str(out), manifest=str(out) + ".synthetic.json",
                              frames=frames)

    def _check_cancels(self) -> None:
        for run in list(self.runs.values()):
            if run.status == "running" and self.q.cancel_path(run.id).exists():
                self.q.log(run.id, "cancelled by request")
                self._finish(run, "cancelled")
                self.progress.job_end(run.id, "cancelled")

    # ------------------------------------------------------------------ main loop
    def run(self) -> dict:
        t0 = time.perf_counter()
        candidates = self._candidates()
        self.progress.queue_start({})
        try:
            for jid in candidates:
                self._take(jid)
            while self.futures:
                done, _ = cf.wait(list(self.futures), timeout=0.5, return_when=cf.FIRST_COMPLETED)
                for fut in done:
                    if fut in self.futures:
                        jid, i = self.futures.pop(fut)
                        self._on_result(fut, jid, i)
                self._check_cancels()
        finally:
            for run in self.runs.values():
                if run.status == "running":  # interrupted (Ctrl-C): committed segments stay for the next run
                    self.q.log(run.id, "runner stopped; committed segments are kept for the next queue run")
                    if run.lock is not None:
                        run.lock.release()
            self.backend.close()
        seconds = time.perf_counter() - t0
        jobs = [{"id": r.id, "status": r.status, "output": r.job.output, "error": r.error, "fps": r.fps}
                for r in self.runs.values()] + self.refused
        summary = {"done": sum(1 for r in jobs if r["status"] == "done"),
                   "failed": sum(1 for r in jobs if r["status"] == "failed"),
                   "cancelled": sum(1 for r in jobs if r["status"] == "cancelled"),
                   "skipped": self.skipped, "refused": len(self.refused), "frames": self.fresh_frames, "reused_frames": self.reused_frames,
                   "seconds": round(seconds, 3), "fps": round(self.fresh_frames / seconds, 2) if seconds else 0.0,
                   "backend": self.backend.name, "jobs": jobs}
        self.progress.close(summary)
        return summary


def _folder_unmoved(folder, out: Path, *, committed: bool) -> None:
    """The user's output folder still is the folder held for the join, or the job fails saying where it went.

    Before the commit nothing is left behind (the temp file is removed through the held folder); after it,
    the output and its manifest are whole in the folder that was checked, which the message names.
    """
    moved = folder.moved()
    if moved is None:
        return
    what = (f"the output and its manifest were written into the folder checked at the join, now at "
            f"{folder.now_at()}" if committed else
            "nothing was written there, nor outside the allowed roots")
    raise OutputError(f"the output's folder {out.parent} was moved or replaced during the join (it now leads to "
                      f"{moved}); {what}", path=out,
                      hint="move them where they belong" if committed else
                           "put the folder back and run the job again (queue retry)")


class _Cancelled(Exception):
    pass

