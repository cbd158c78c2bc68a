"""One segment render: the unit of work both backends run (a local worker process or a Ray task).

A task is plain data (picklable, JSON-able settings) so it can travel to another machine. The worker
keeps one :class:`~facecomp.effect.Engine` per distinct settings (models load once per process, not once
per segment). The segment is written by ``render_clip`` under a temporary name in its final folder and
renamed when complete, so a segment file that exists is a committed segment; rendering an already
committed segment returns at once, which makes a retried task (after a killed worker) harmless.
"""

from __future__ import annotations

import ctypes
import dataclasses
import functools
import json
import os
import signal
import socket
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from ..disclosure import manifest as mf

# The same numeric threading in every worker, local or Ray, on any machine: float reductions split over a
# different number of threads round differently, and a segment must come out the same wherever it runs.
# Set before numpy/OpenCV load (a spawned local worker: in its initializer; a Ray worker: runtime_env).
WORKER_ENV = {"OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
# the encoder's thread count changes its decisions (and so the decoded pixels); auto would follow each
# machine's core count, so segments are encoded with a fixed count unless the job's settings give one
ENCODER_THREADS = "2"


@dataclass(frozen=True)
class SegmentTask:
    job_id: str
    input: str
    path: str  # the committed segment's final path
    start: int
    end: int
    settings_json: str  # the job's validated settings (paths absolute)
    manifest_id: str  # the job's: every segment's watermark carries the same id
    fps: float | None = None
    input_sha256: str | None = None  # hashed once by the runner, not once per segment


def is_committed(path: str | os.PathLike) -> bool:
    p = Path(path)
    return p.is_file() and mf.sidecar_path(p).is_file()


@functools.lru_cache(maxsize=4)
def engine_for(settings_json: str, fps: float | None):
    """The engine for these settings in this process (cached: one per settings per worker)."""
    from ..effect import Engine
    from ..settings import EffectSettings
    return Engine.from_settings(EffectSettings.from_dict(json.loads(settings_json)), fps=fps)


def render_settings_for(settings_json: str, start: int, end: int, manifest_id: str, input_sha256: str | None = None):
    """The file-render settings of a segment: the job's encode and provenance, the segment's range."""
    from ..render.clip import RenderSettings
    from ..settings import EffectSettings
    eff = EffectSettings.from_dict(json.loads(settings_json))
    encode = eff.encode
    options = dict(encode.options)
    if "threads" not in options:
        encode = dataclasses.replace(encode, options={**options, "threads": ENCODER_THREADS})
    # one effect worker: the queue's parallelism is across segments, and a segment rendered by one worker
    # thread has pixels that do not depend on thread timing (per-track colour smoothing runs in frame order)
    return RenderSettings(start=start, end=end, encode=encode, identity=eff.identity,
                          manifest_id=manifest_id, overwrite=True, workers=1, input_sha256=input_sha256)


def render_segment(task: SegmentTask) -> dict:
    """Render one segment (or find it committed); returns what the runner records about it."""
    from ..render.clip import render_clip
    path = Path(task.path)
    if is_committed(path):
        return {"path": str(path), "frames": task.end - task.start, "seconds": 0.0, "reused": True,
                "host": socket.gethostname(), "pid": os.getpid()}
    path.parent.mkdir(parents=True, exist_ok=True)
    import cv2
    cv2.setNumThreads(1)  # see WORKER_ENV
    engine = engine_for(task.settings_json, task.fps)
    settings = render_settings_for(task.settings_json, task.start, task.end, task.manifest_id, task.input_sha256)
    t0 = time.perf_counter()
    result = render_clip(task.input, path, engine, settings)
    from .segments import fsync_file
    fsync_file(path)  # committed means on disk: a power cut after this keeps the segment
    return {"path": str(path), "frames": result.frames, "seconds": time.perf_counter() - t0, "reused": False,
            "host": socket.gethostname(), "pid": os.getpid(), "node": _ray_node(), "notes": list(result.notes)}


def _ray_node() -> str | None:
    """The Ray node this task ran on (None in a local worker, which never imports Ray)."""
    ray = sys.modules.get("ray")
    if ray is None or not ray.is_initialized():
        return None
    return ray.get_runtime_context().get_node_id()


def worker_init() -> None:
    """Local worker-process initializer: fixed numeric threading (see WORKER_ENV), and the kernel kills
    this worker when its runner dies (kill -9 included): an orphan would render a segment nobody waits for.
    """
    os.environ.update(WORKER_ENV)
    try:
        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        libc.prctl(1, int(signal.SIGKILL), 0, 0, 0)  # PR_SET_PDEATHSIG
    except OSError:
        pass
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the runner's to handle
