"""The Python client of ``facecomp serve``: connect (starting the server when absent), open clips, render.

Every call has a deadline: a server that dies mid-request closes the socket (an immediate error), one
that hangs is given up after ``request_timeout``; either way the client raises :class:`ServerError`
and the next :func:`connect` starts a fresh server.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np

from ..errors import FacecompError
from .paths import (
    default_socket_path,
    ensure_private_dir,
    is_facecomp_dir,
    start_log_path,
)
from .protocol import (
    DTYPES,
    PROTOCOL,
    NotRunningError,
    ServerError,
    SessionNotFoundError,
    close_fds,
    error_from_reply,
    new_shared,
    recv_message,
    send_message,
)


def _dial(path: Path, timeout: float) -> socket.socket:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.settimeout(timeout)
    try:
        sock.connect(os.fspath(path))
    except BaseException:
        sock.close()
        raise
    return sock


def _start_server(path: Path, idle_timeout: float | None) -> subprocess.Popen:
    """``python -m facecomp.server`` detached in its own session; stderr kept for a failed start."""
    ensure_private_dir(path.parent, own=is_facecomp_dir(path))
    cmd = [sys.executable, "-m", "facecomp.server", "--socket", os.fspath(path)]
    if idle_timeout is not None:
        cmd += ["--idle-timeout", f"{idle_timeout:g}"]
    with open(start_log_path(path), "wb") as err:
        return subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=err,
                                start_new_session=True, close_fds=True)


def connect(*, start: bool = True, timeout: float = 10.0, socket_path: str | os.PathLike | None = None,
            request_timeout: float = 120.0, idle_timeout: float | None = None) -> Client:
    """A connected, greeted :class:`Client`; starts the server when none listens and ``start`` is true.

    ``timeout``: seconds to reach a ready server (including starting one); ``request_timeout``: the
    longest one request may take (opening a clip loads models) before :class:`ServerError`.
    """
    path = Path(socket_path) if socket_path is not None else default_socket_path()
    deadline = time.monotonic() + timeout
    proc = None
    spawns = 0
    last: BaseException | None = None
    while True:
        try:
            sock = _dial(path, max(0.05, deadline - time.monotonic()))
            client = Client(sock, path, request_timeout=request_timeout, hello_timeout=max(
                0.5, deadline - time.monotonic()))
            if start:
                client._restart = dict(start=True, timeout=timeout, socket_path=path,
                                       request_timeout=request_timeout, idle_timeout=idle_timeout)
            return client
        except (FileNotFoundError, ConnectionRefusedError) as exc:
            last = exc
        except ServerError as exc:  # connected, but the server did not greet in time
            last = exc
        except OSError as exc:
            last = exc
        if not start:
            if isinstance(last, ServerError):
                raise last  # one listens but does not answer (hung, or stopped with SIGSTOP)
            raise NotRunningError(f"no facecomp server is listening ({type(last).__name__}); start one with "
                                  f"'facecomp serve'", path=path)
        if proc is None or (proc.poll() is not None and spawns < 5):
            # again when the last one exited at once: it lost the lock to a server that was stopping
            proc = _start_server(path, idle_timeout)
            spawns += 1
        if time.monotonic() >= deadline:
            break
        time.sleep(0.1 if spawns > 1 else 0.05)
    detail = ""
    if proc is not None and proc.poll() is not None:
        try:
            tail = start_log_path(path).read_text(errors="replace").strip().splitlines()[-3:]
        except OSError:
            tail = []
        detail = f"; the server it started exited with {proc.returncode}" + (f": {' | '.join(tail)}" if tail else "")
    raise ServerError(f"no facecomp server became ready within {timeout:g} s{detail}", path=path)


class Client:
    """One connection. Thread-safe (calls are serialised); use one client per render thread for parallelism."""

    def __init__(self, sock: socket.socket, path: Path, *, request_timeout: float = 120.0,
                 hello_timeout: float = 10.0):
        self.socket_path = path
        self.request_timeout = float(request_timeout)
        self._sock: socket.socket | None = sock
        self._lock = threading.RLock()
        self._shm: tuple[int, object, int] | None = None  # (fd, mmap, size) reused across renders
        self._exposed: np.ndarray | None = None
        self._opened: dict[str, tuple] = {}  # session id -> open arguments (reopened after eviction)
        self._alias: dict[str, str] = {}
        self.frames: int | None = None  # frames of the clip last opened (None: pixels only)
        self.last_reply: dict = {}  # of the last render: engine_ms, server_ms, server_cpu_ms
        self._restart: dict | None = None  # connect() arguments: reconnect when the server stopped between calls
        try:
            reply = self._call({"op": "hello", "protocol": PROTOCOL, "client": f"facecomp.server.client/{os.getpid()}"},
                               timeout=hello_timeout)
        except BaseException:
            self.close()
            raise
        self.pid: int = reply["pid"]
        self.server: str = reply["server"]

    # ------------------------------------------------------------------------------- plumbing
    def _call(self, msg: dict, fds: tuple[int, ...] = (), timeout: float | None = None) -> dict:
        with self._lock:
            if self._sock is None:
                raise ServerError("the connection is closed; call connect() again", path=self.socket_path)
            sock = self._sock
            sock.settimeout(self.request_timeout if timeout is None else timeout)
            try:
                try:
                    send_message(sock, msg, fds)
                    got = recv_message(sock)
                except (BrokenPipeError, ConnectionResetError):
                    # the server was gone before it read this request (stopped idle, restarted): a broken
                    # pipe on send, or a reset because it closed with the request unread. Nothing of it
                    # ran, so it goes to a fresh server; sessions are opened again there.
                    if self._restart is None or msg.get("op") == "shutdown":
                        raise
                    sock = self._reconnect()
                    send_message(sock, msg, fds)
                    got = recv_message(sock)
                if (got is not None and self._restart is not None and msg.get("op") != "shutdown"
                        and (got[0].get("error") or {}).get("type") == "ServerStoppingError"):
                    close_fds(got[1])
                    sock = self._reconnect()  # it was stopping and did not run this request
                    send_message(sock, msg, fds)
                    got = recv_message(sock)
            except TimeoutError:
                self._drop()
                self._release_buffer()  # a slow server may still write into it: the next render gets new memory
                raise ServerError(f"the server did not answer '{msg.get('op')}' within "
                                  f"{sock.gettimeout() or 0:g} s; the connection was closed",
                                  path=self.socket_path) from None
            except (OSError, FacecompError) as exc:
                self._drop()
                if isinstance(exc, ServerError):
                    raise
                raise ServerError(f"the server connection failed during '{msg.get('op')}' ({exc}); it may "
                                  f"have stopped or been killed", path=self.socket_path) from None
            if got is None:
                self._drop()
                raise ServerError(f"the server closed the connection during '{msg.get('op')}' (it stopped "
                                  f"or was killed); connect() again starts a new one", path=self.socket_path)
            reply, extra = got
            close_fds(extra)
            if not reply.get("ok"):
                raise error_from_reply(reply)
            return reply

    def _reconnect(self) -> socket.socket:
        fresh = connect(**self._restart)
        self._drop()
        self._sock, fresh._sock = fresh._sock, None
        self.pid, self.server = fresh.pid, fresh.server
        self._sock.settimeout(self.request_timeout)
        return self._sock

    def _drop(self) -> None:
        if self._sock is not None:
            try:
                self._sock.close()
            finally:
                self._sock = None

    def close(self) -> None:
        """Close the connection and free the shared buffer (the server's sessions stay for other clients)."""
        with self._lock:
            self._drop()
            self._release_buffer()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def _release_buffer(self) -> None:
        if self._shm is not None:
            fd, mm, _ = self._shm
            self._shm = None
            self._exposed = None
            try:
                mm.close()
            except BufferError:
                pass
            os.close(fd)

    def _buffer(self, nbytes: int) -> tuple[int, object]:
        if self._shm is None or self._shm[2] < nbytes:
            self._release_buffer()
            fd, mm = new_shared(nbytes)
            self._shm = (fd, mm, nbytes)
        return self._shm[0], self._shm[1]

    # --------------------------------------------------------------------------------- requests
    def frame_buffer(self, shape: tuple[int, int, int], dtype="float32") -> np.ndarray:
        """A writable array in this client's shared memory: fill it and pass it to :meth:`render` to skip
        both copies; the stamped result lands in the same array (overwritten by the next render)."""
        dt = np.dtype(dtype)
        h, w, c = (int(v) for v in shape)
        with self._lock:
            _, mm = self._buffer(h * w * c * dt.itemsize)
            self._exposed = np.ndarray((h, w, c), dtype=dt, buffer=mm)
            return self._exposed

    def open_clip(self, path_or_none, settings_dict, clip_id: str | None = None) -> str:
        """Open a clip session (a clip path, or None when only pixels are passed); returns its id.

        ``settings_dict``: effect settings as in ``facecomp spec`` (or an ``EffectSettings``); paths in it
        must be absolute (the server does not share this process's working folder).
        """
        settings = settings_dict.to_dict() if hasattr(settings_dict, "to_dict") else dict(settings_dict or {})
        clip = None if path_or_none is None else os.path.abspath(os.fspath(path_or_none))
        reply = self._call({"op": "open", "clip": clip, "settings": settings, "clip_id": clip_id})
        self._opened[reply["session"]] = (clip, settings, clip_id)
        self.frames = reply.get("frames")
        return reply["session"]

    def render(self, session_id: str, pixels: np.ndarray, index: int, time: float,
               full_size: tuple[int, int] | None = None, window: tuple[int, int, int, int] | None = None,
               alpha: str = "straight") -> tuple[np.ndarray, list[int]]:
        """Stamped pixels of ``window`` (x0, y0, x1, y1) of a ``full_size`` (height, width) frame, and the
        replaced track ids. As :meth:`facecomp.session.ClipSession.render`, through the server."""
        if not isinstance(pixels, np.ndarray) or pixels.ndim != 3 or pixels.shape[2] not in (3, 4):
            raise FacecompError(f"pixels must be an (H, W, 3|4) array, got {getattr(pixels, 'shape', type(pixels))}")
        dtype = next((k for k, v in DTYPES.items() if v == pixels.dtype), None)
        if dtype is None:
            raise FacecompError(f"pixels must be uint8, uint16 or float32, got {pixels.dtype}")
        h, w, c = pixels.shape
        fh, fw = full_size if full_size is not None else (h, w)
        win = tuple(int(v) for v in window) if window is not None else (0, 0, w, h)
        with self._lock:
            in_place = pixels is self._exposed
            nbytes = pixels.nbytes
            fd, mm = self._buffer(nbytes)
            if in_place:
                view = pixels
            else:  # into the same memory: a frame_buffer() array stays usable (it holds this result now)
                view = np.ndarray(pixels.shape, dtype=pixels.dtype, buffer=mm)
                np.copyto(view, pixels)
            msg = {"op": "render", "session": self._alias.get(session_id, session_id), "index": int(index),
                   "time": float(time), "full": [int(fw), int(fh)], "window": list(win), "dtype": dtype,
                   "channels": int(c), "alpha": alpha, "stride": w * c * pixels.dtype.itemsize}
            try:
                reply = self._call(msg, (fd,))
            except SessionNotFoundError:
                if session_id not in self._opened:
                    raise
                # closed under the server's memory cap (or by a restart of it): open it again, once
                new = self.open_clip(*self._opened[session_id])
                self._alias[session_id] = new
                msg["session"] = new
                reply = self._call(msg, (fd,))
            self.last_reply = reply
            out = view if in_place else np.array(view)
        return out, list(reply.get("tracks", []))

    def close_clip(self, session_id: str) -> None:
        self._opened.pop(session_id, None)
        self._call({"op": "close", "session": self._alias.pop(session_id, session_id)})

    def stats(self) -> dict:
        return self._call({"op": "stats"})

    def shutdown(self) -> None:
        """Stop the server (for every client); this connection closes."""
        try:
            self._call({"op": "shutdown"}, timeout=10.0)
        finally:
            self._drop()

