"""Local worker processes for ``queue run``: a worker that dies fails its own task, and only that one.

Why not ``concurrent.futures.ProcessPoolExecutor``: when one of its workers dies (the out-of-memory
killer, a crash in a codec), it marks the whole pool broken, fails every pending future and terminates
the other workers. The runner then charged a retry to every job with a segment queued, and a job with
several segments waiting could fail without any of them having run. Here each worker process has a
thread of the runner and a pipe of its own: a death is seen by that thread only, its one task fails with
:class:`WorkerDiedError`, a fresh worker is started for the next task, and the other workers go on.

What crosses the pipe is the runner's own task and its own child's result (as with the executor).
"""

from __future__ import annotations

import concurrent.futures as cf
import multiprocessing
import multiprocessing.connection
import queue
import signal
import threading
import traceback
from collections.abc import Callable

from ..errors import FacecompError


class WorkerDiedError(FacecompError):
    """The worker process running a task ended before it answered (killed, out of memory, crashed)."""


def _describe_exit(code: int | None) -> str:
    if code is None:
        return "its exit status is unknown"
    if code < 0:
        try:
            name = signal.Signals(-code).name
        except ValueError:
            name = f"signal {-code}"
        hint = " (the out-of-memory killer sends SIGKILL)" if -code == signal.SIGKILL else ""
        return f"it was killed by {name}{hint}"
    return f"it exited with status {code}"


def _worker_main(conn, initializer: Callable[[], None] | None) -> None:
    """The worker process: run the tasks the pipe brings, one at a time, until told to stop."""
    if initializer is not None:
        initializer()
    while True:
        try:
            msg = conn.recv()
        except EOFError:  # the runner went away
            return
        if msg is None:
            return
        fn, args = msg
        try:
            reply = (True, fn(*args))
        except BaseException as exc:  # noqa: BLE001  every failure is the runner's to judge
            reply = (False, exc)
        try:
            conn.send(reply)
        except Exception:  # noqa: BLE001  an exception (or result) that does not pickle: its text instead
            text = "".join(traceback.format_exception(type(reply[1]), reply[1], reply[1].__traceback__)) \
                if not reply[0] else repr(reply[1])
            conn.send((False, RuntimeError(f"the worker's answer could not be sent back:\n{text}")))


class WorkerPool:
    """``workers`` processes (spawned: nothing shared with the runner), each running one task at a time."""

    def __init__(self, workers: int = 1, initializer: Callable[[], None] | None = None,
                 context: str = "spawn", stop_timeout: float = 10.0):
        self.workers = max(1, int(workers))
        self._ctx = multiprocessing.get_context(context)
        self._initializer = initializer
        self._stop_timeout = stop_timeout
        self._tasks: queue.SimpleQueue = queue.SimpleQueue()
        self._closed = False
        self._lock = threading.Lock()
        self.deaths = 0  # workers that died while running a task
        # the workers are started from these threads, which live until close(): a worker's parent-death
        # signal (work.worker_init) follows the thread that started it
        self._threads = [threading.Thread(target=self._serve, name=f"facecomp-worker-{i}", daemon=True)
                         for i in range(self.workers)]
        for t in self._threads:
            t.start()

    def submit(self, fn: Callable, *args) -> cf.Future:
        with self._lock:
            if self._closed:
                raise RuntimeError("the worker pool is closed")
            fut: cf.Future = cf.Future()
            self._tasks.put((fut, fn, args))
        return fut

    def _start(self):
        mine, theirs = self._ctx.Pipe(duplex=True)
        proc = self._ctx.Process(target=_worker_main, args=(theirs, self._initializer), daemon=True,
                                 name="facecomp-queue-worker")
        proc.start()
        theirs.close()
        return proc, mine

    def _serve(self) -> None:
        proc = conn = None
        try:
            while True:
                item = self._tasks.get()
                if item is None:
                    return
                fut, fn, args = item
                if not fut.set_running_or_notify_cancel():
                    continue
                if proc is not None and not proc.is_alive():  # died while idle: nothing of ours was lost
                    conn.close()
                    proc = conn = None
                try:
                    if proc is None:
                        proc, conn = self._start()
                    conn.send((fn, args))
                except (OSError, ValueError) as exc:  # could not start a worker or hand it the task
                    fut.set_exception(WorkerDiedError(f"the task could not be handed to a worker process ({exc})"))
                    proc, conn = self._drop(proc, conn)
                    continue
                except BaseException as exc:  # noqa: BLE001  the task itself does not pickle: its caller's error
                    fut.set_exception(exc)
                    continue
                ready = multiprocessing.connection.wait([conn, proc.sentinel])
                reply = None
                if conn in ready:
                    try:
                        reply = conn.recv()
                    except (EOFError, OSError):
                        reply = None
                if reply is None:
                    proc.join(timeout=self._stop_timeout)
                    code = proc.exitcode
                    with self._lock:
                        self.deaths += 1
                    fut.set_exception(WorkerDiedError(
                        f"the worker process (pid {proc.pid}) running this task ended before it answered: "
                        f"{_describe_exit(code)}"))
                    proc, conn = self._drop(proc, conn)
                    continue
                ok, value = reply
                if ok:
                    fut.set_result(value)
                else:
                    fut.set_exception(value)
        finally:
            self._drop(proc, conn, polite=True)

    def _drop(self, proc, conn, polite: bool = False):
        if conn is not None:
            if polite and proc is not None and proc.is_alive():
                try:
                    conn.send(None)
                except OSError:
                    pass
            conn.close()
        if proc is not None:
            proc.join(timeout=self._stop_timeout if polite else 1.0)
            if proc.is_alive():
                proc.kill()
                proc.join()
        return None, None

    def close(self, cancel_pending: bool = True) -> None:
        """Stop taking tasks; cancel the queued ones; wait for those running; stop the workers."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            if cancel_pending:
                while True:
                    try:
                        item = self._tasks.get_nowait()
                    except queue.Empty:
                        break
                    if item is not None:
                        item[0].cancel()
            for _ in self._threads:
                self._tasks.put(None)
        for t in self._threads:
            t.join()
