"""``queue run --backend ray``: every segment of every job is a Ray task; the runner is the driver.

Each Ray worker process keeps one engine per settings (the same per-process cache the local workers use:
models load once per worker, not once per segment). A task writes its segment to the job's ``storage``
folder, which must be shared storage that every node and the driver see at the same path (NFS, a
cluster file system); the driver joins there. Joined by ``--address``, each segment folder (a job's
``storage``, else the queue folder's ``work``) is probed on every node before a job that uses it renders
(a token file written here, read there); a job whose folder some node does not see is not taken (it stays
queued, with a message saying what to change) instead of failing at the join after the whole render. A worker that dies mid-segment (killed, OOM, a lost node)
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
import os
import secrets
from pathlib import Path

from ..errors import SettingsError
from .work import WORKER_ENV, SegmentTask, render_segment

# a worker that dies mid-segment: Ray runs the task again elsewhere, up to this many times
WORKER_DEATH_RETRIES = 3
PROBE_TIMEOUT = 60.0  # seconds a node has to answer whether it sees a segment folder


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
        from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

        from ..atomic import atomic_write
        token = secrets.token_hex(16)
        marker = Path(key) / f".facecomp-probe-{token[:12]}"
        atomic_write(marker, token)
        try:
            probe = self._ray.remote(num_cpus=0, max_retries=0)(_sees_token)
            refs = {n["NodeID"]: probe.options(scheduling_strategy=NodeAffinitySchedulingStrategy(n["NodeID"], soft=False))
                    .remote(str(marker), token) for n in self._ray.nodes() if n.get("Alive")}
            missing = []
            for node, ref in refs.items():
                try:
                    seen = self._ray.get(ref, timeout=timeout)
                except Exception:  # noqa: BLE001  unreachable, timed out, died: not confirmed
                    seen = False
                if not seen:
                    missing.append(node)
        finally:
            marker.unlink(missing_ok=True)
        self._probed[key] = missing
        return missing

    def submit(self, task: SegmentTask) -> cf.Future:
        return self._remote.remote(task).future()

    def close(self) -> None:
        if self._started and self._ray.is_initialized():
            self._ray.shutdown()

    def describe(self) -> dict:
        res = self._ray.cluster_resources()
        return {"nodes": len([n for n in self._ray.nodes() if n.get("Alive")]), "cpus": res.get("CPU", 0),
                "pid": os.getpid()}
