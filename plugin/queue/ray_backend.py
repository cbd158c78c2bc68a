"""``queue run --backend ray``: every segment of every job is a Ray task; the runner is the driver.

Each Ray worker process keeps one engine per settings (the same per-process cache the local workers use:
models load once per worker, not once per segment). A task writes its segment to the job's ``storage``
folder, which must be shared storage that every node and the driver see at the same path (NFS, a
cluster file system); the driver joins there. Joined by ``--address``, each segment folder (a job's
``storage``, else the queue folder's ``work``) is probed on every node before a job that uses it renders
(a token file written here, read there); a job whose folder some node does not see is not taken (it stays
queued, with a message saying what to change) instead of failing at the join after the whole render. The
job's input files (the clip, and every file its settings name: source and reference photos, models) are
probed the same way, each node comparing size and sha256 with this machine's (a clip over 64 MiB by its
ends and samples between, not re-read whole on every node): a node that lacks one, cannot read it, or holds
another file at that path refuses the job before anything renders. A worker that dies mid-segment (killed, OOM, a lost node)
is retried by Ray on another worker (``max_retries``); a segment that raises is the runner's to retry,
with the job's bounded ``options.retries``, exactly as with the local backend.

Without ``--address`` a private Ray is started on this machine, bound to loopback only. With
``--address`` the driver joins an existing cluster (``HOST:6379`` from a node of the cluster, or
``ray://HOST:10001`` through Ray Client); clusters with token authentication need the token on the
driver as ``RAY_AUTH_TOKEN`` (or a file named by ``RAY_AUTH_TOKEN_PATH``, default ``~/.ray/auth_token``)
and ``RAY_AUTH_MODE=token``.
"""

from __future__ import annotations

import concurrent.futures as cf
import hashlib
import os
import secrets
import time
from dataclasses import dataclass
from pathlib import Path

from ..errors import SettingsError
from ..hashing import sha256_stream
from .work import WORKER_ENV, SegmentTask, render_segment

# a worker that dies mid-segment: Ray runs the task again elsewhere, up to this many times
WORKER_DEATH_RETRIES = 3
PROBE_TIMEOUT = 60.0  # seconds a node has to answer whether it sees a segment folder (or the job's inputs)
# The input clip is read whole by no single node (each renders its segments' ranges), and can be many GiB:
# above this size its probe hashes the first and last MiB and evenly spaced samples between, not all of it.
# The files the settings name (photos, models) are hashed whole: every worker loads them whole anyway.
WHOLE_HASH_LIMIT = 64 << 20
END_BYTES = 1 << 20
SAMPLES, SAMPLE_BYTES = 16, 64 << 10


@dataclass(frozen=True)
class InputFile:
    """One file a job reads, as this machine sees it: what a node must find at the same path."""

    path: str
    size: int
    whole: bool  # sha256 of the whole file, else of its ends and samples (see WHOLE_HASH_LIMIT)
    sha256: str

    def how(self) -> str:
        return ("sha256 of the whole file" if self.whole else
                f"sha256 of its first and last MiB and {SAMPLES} samples between")


def _digest(f, size: int, whole: bool) -> str:
    """sha256 of an open file: all of it, or (a big clip) its ends and evenly spaced samples."""
    if whole:
        return sha256_stream(f)
    h = hashlib.sha256()
    spans = [(0, END_BYTES)] + [(max(0, size - SAMPLE_BYTES) * k // (SAMPLES + 1), SAMPLE_BYTES)
                                for k in range(1, SAMPLES + 1)] + [(max(0, size - END_BYTES), END_BYTES)]
    for offset, length in spans:
        f.seek(offset)
        h.update(f.read(length))
    return h.hexdigest()


def fingerprint(path: str, whole: bool | None = None) -> InputFile:
    """This machine's view of ``path`` (raises OSError when it cannot be read here)."""
    with open(path, "rb") as f:
        size = os.fstat(f.fileno()).st_size
        whole = size <= WHOLE_HASH_LIMIT if whole is None else whole
        return InputFile(path, size, whole, _digest(f, size, whole))


def _check_inputs(files: list[InputFile]) -> list[tuple[str, str]]:
    """On a node: (path, what differs) for each file it does not see as the driver does; empty when all match."""
    problems = []
    for want in files:
        try:
            with open(want.path, "rb") as f:
                size = os.fstat(f.fileno()).st_size
                if size != want.size:
                    problems.append((want.path, f"size differs ({size} bytes there, {want.size} here)"))
                elif _digest(f, size, want.whole) != want.sha256:
                    problems.append((want.path, f"content differs ({want.how()}; same size)"))
        except FileNotFoundError:
            problems.append((want.path, "missing there"))
        except OSError as exc:  # a folder, no permission, an I/O error
            problems.append((want.path, f"unreadable there ({exc.strerror or exc})"))
    return problems


def job_inputs(job) -> list[tuple[str, str]]:
    """(what, path) for every file a job reads: its input clip and each path-valued setting (absolute,
    as validated at ``queue add``)."""
    from ..spec import PARAMS
    out = [("input", str(job.input))]
    for p in PARAMS:
        value = (job.settings or {}).get(p.name)
        if p.kind not in ("path", "paths") or not value:
            continue
        for item in [value] if isinstance(value, str) else value:
            out.append((f"settings.{p.name}", str(item)))
    return out


def _sees_token(path: str, token: str) -> bool:
    """On a node: whether ``path`` holds ``token`` (the driver's probe file, so the folder is shared)."""
    try:
        with open(path, encoding="utf-8") as f:
            return f.read() == token
    except OSError:
        return False


class RayBackend:
    name = "ray"

    def __init__(self, address: str | None = None, workers: int = 1, *, max_retries: int = WORKER_DEATH_RETRIES):
        try:
            import ray
        except ImportError as exc:
            raise SettingsError("the Ray backend needs the distributed extra",
                                hint="pip install 'facecomp[distributed]'") from exc
        self._ray = ray
        self._started = False
        # by address: segments render on other machines, so their folder must be one every node sees (the
        # runner asks unshared_nodes before a job renders); a private Ray is this machine only
        self.needs_shared_storage = bool(address)
        self._probed: dict[str, list[str]] = {}
        self._fingerprints: dict[tuple, InputFile] = {}  # by path, realpath, size, mtime: hashed once here
        self._verified: set[tuple[str, InputFile]] = set()  # (node, file) seen alike there this run
        self.probe_seconds = 0.0  # spent probing nodes this run (segment folders and inputs)
        if not ray.is_initialized():
            if address:
                ray.init(address=address, log_to_driver=False, configure_logging=False)
            else:  # a private single-machine Ray, reachable only through loopback
                ray.init(address="local", num_cpus=max(1, int(workers)), include_dashboard=False,
                         log_to_driver=False, configure_logging=False, _node_ip_address="127.0.0.1")
            self._started = True
        # num_cpus=1: one segment per CPU a node offers; retry_exceptions=False: a render error is reported
        # to the runner (bounded job retries, logged), only a dead worker is Ray's to retry
        # runtime_env: the same numeric threading as local workers, set before the worker loads numpy
        self._remote = ray.remote(num_cpus=1, max_retries=max_retries, retry_exceptions=False,
                                  runtime_env={"env_vars": dict(WORKER_ENV)})(render_segment)

    def unshared_nodes(self, folder: Path, timeout: float = PROBE_TIMEOUT) -> list[str]:
        """The alive nodes that do not see ``folder`` as this machine does (none on a private Ray).

        A file with a random token is written there, and a task pinned to each node reads it back: a node
        with a folder of its own under the same path (not shared storage) does not find the token. Once
        per folder and run; a node that does not answer within ``timeout`` counts as not seeing it.
        """
        if not self.needs_shared_storage:
            return []
        key = os.path.realpath(folder)
        if key in self._probed:
            return self._probed[key]
        from ..atomic import atomic_write
        t0 = time.perf_counter()
        token = secrets.token_hex(16)
        marker = Path(key) / f".facecomp-probe-{token[:12]}"
        atomic_write(marker, token)
        try:
            answers = self._on_each_node(_sees_token, {n: (str(marker), token) for n in self._alive()}, timeout)
            missing = [node for node, (ok, seen) in answers.items() if not (ok and seen)]
        finally:
            marker.unlink(missing_ok=True)
            self.probe_seconds += time.perf_counter() - t0
        self._probed[key] = missing
        return missing

    def input_refusal(self, job, timeout: float = PROBE_TIMEOUT) -> str | None:
        """Why the job cannot run on this cluster because of its input files, or None (always on a private Ray).

        Each alive node opens every file the job reads (:func:`job_inputs`) at the path this machine uses and
        compares size and sha256 with this machine's copy (:func:`fingerprint`; hashed once here per run).
        A file already seen alike on a node this run is not read there again. A file this machine cannot
        read is not probed: the run itself fails such a job as without Ray.
        """
        if not self.needs_shared_storage:
            return None
        t0 = time.perf_counter()
        inputs = job_inputs(job)
        try:
            files: dict[str, InputFile] = {}
            for label, path in inputs:
                try:  # the clip by size (see WHOLE_HASH_LIMIT); photos and models whole
                    files[path] = self._fingerprint(path, None if label == "input" else True)
                except OSError:
                    continue
            nodes = self._alive()
            todo = {n: ([f for f in files.values() if (n, f) not in self._verified],) for n in nodes}
            todo = {n: args for n, args in todo.items() if args[0]}
            answers = self._on_each_node(_check_inputs, todo, timeout)
        finally:
            self.probe_seconds += time.perf_counter() - t0
        what = {path: label for label, path in inputs}
        lines, refusing = [], 0
        for node, (ok, problems) in answers.items():
            where = f"node {node[:12]} ({nodes[node]})"
            if not ok:
                lines.append(f"{where} did not answer the input probe within {timeout:.0f} s ({problems})")
            else:
                bad = {path for path, _ in problems}
                self._verified.update((node, f) for f in todo[node][0] if f.path not in bad)
                lines += [f"{where}: {what[path]} {path} {why}" for path, why in problems]
            refusing += not ok or bool(problems)
        if not lines:
            return None
        return (f"its input files are not the same on {refusing} node(s) of the Ray cluster: " + "; ".join(lines)
                + ". Put the input and every file its settings name on shared storage that every node and "
                  "this machine mount at the same path (NFS, a cluster file system), or the same files at the "
                  "same path on every node; or run it with --backend local, or a Ray without --address "
                  "(this machine only)")

    def _fingerprint(self, path: str, whole: bool | None) -> InputFile:
        st = os.stat(path)
        key = (path, os.path.realpath(path), st.st_size, st.st_mtime_ns, whole)
        if key not in self._fingerprints:
            self._fingerprints[key] = fingerprint(path, whole)
        return self._fingerprints[key]

    def _alive(self) -> dict[str, str]:
        """Alive node id -> its address."""
        return {n["NodeID"]: n.get("NodeManagerAddress", "?") for n in self._ray.nodes() if n.get("Alive")}

    def _on_each_node(self, fn, args: dict, timeout: float) -> dict:
        """Run ``fn(*args[node])`` pinned to each node, all at once; node -> (answered, result or why not)."""
        from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy
        if not args:
            return {}
        probe = self._ray.remote(num_cpus=0, max_retries=0)(fn)
        refs = {node: probe.options(scheduling_strategy=NodeAffinitySchedulingStrategy(node, soft=False))
                .remote(*a) for node, a in args.items()}
        deadline = time.monotonic() + timeout
        out = {}
        for node, ref in refs.items():
            try:
                out[node] = (True, self._ray.get(ref, timeout=max(0.1, deadline - time.monotonic())))
            except Exception as exc:  # noqa: BLE001  unreachable, timed out, died: not confirmed
                out[node] = (False, type(exc).__name__)
        return out

    def submit(self, task: SegmentTask) -> cf.Future:
        return self._remote.remote(task).future()

    def close(self) -> None:
        if self._started and self._ray.is_initialized():
            self._ray.shutdown()

    def describe(self) -> dict:
        res = self._ray.cluster_resources()
        return {"nodes": len([n for n in self._ray.nodes() if n.get("Alive")]), "cpus": res.get("CPU", 0),
                "pid": os.getpid()}
