"""The render server: one per user, a Unix-domain socket, frames in shared memory.

Why a server: an editor's plugin (OpenFX, Blender, Resolve) calls for frames from many render threads
and must not load models per call. The server keeps engines (models loaded once per distinct settings)
and clip sessions (per clip and settings), least recently used out past a memory cap, and stops itself
after an idle timeout. It trusts no message: each is validated (:mod:`.protocol`), failures are typed
error replies, and the fds of every request are closed in ``finally`` so a client that dies mid-request
leaves nothing mapped.
"""

from __future__ import annotations

import errno
import fcntl
import logging
import logging.handlers
import os
import secrets
import signal
import socket
import struct
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass, field
from pathlib import Path

from .. import __version__
from ..errors import FacecompError
from . import engines
from .paths import (
    default_socket_path,
    ensure_private_dir,
    is_facecomp_dir,
    lock_path,
    log_path,
)
from .protocol import (
    PROTOCOL,
    UPGRADES,
    FramingError,
    ProtocolError,
    ServerError,
    ServerStoppingError,
    SessionNotFoundError,
    close_fds,
    error_reply,
    fd_identity,
    frame_view,
    map_fd,
    parse_request,
    recv_message,
    send_message,
)

MAX_SHARED = 1 << 31  # bytes of one render's shared memory (an 8K float RGBA frame is 0.5 GiB)
_UCRED = struct.Struct("3i")  # pid, uid, gid


@dataclass(frozen=True)
class ServerConfig:
    socket_path: Path = field(default_factory=default_socket_path)
    idle_timeout: float = 600.0  # seconds without a request before the server stops; 0 = never
    memory_mb: float = 4096.0  # resident memory above which idle sessions are closed, least recent first
    max_sessions: int = 64
    max_engines: int = 8
    max_connections: int = 256  # beyond this a new connection is closed at once (each one is a thread)
    message_timeout: float = 30.0  # a message that has begun must arrive in full within this
    # stopping: new requests are refused (the client sends them to the next server) and the requests in
    # flight are waited for, this long at most; a session still rendering is closed only when its render ends
    shutdown_grace: float = 60.0
    log_bytes: int = 1 << 20  # the log rotates at this size (two old files kept)


def rss_mb() -> float:
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20
    except (OSError, ValueError, IndexError):
        return 0.0


@dataclass
class _Session:
    id: str
    key: tuple | None  # (clip, settings, clip_id) when shareable; None for a private pixels-only session
    session: object
    clip: str | None
    frames: int | None
    note: str | None
    refs: int = 1
    busy: int = 0
    closing: bool = False


class SessionCache:
    """Open sessions by id, least recently used first; shared by every connection (host render threads)."""

    def __init__(self, max_sessions: int, memory_mb: float, log: logging.Logger):
        self.max_sessions = max(1, int(max_sessions))
        self.memory_mb = float(memory_mb)
        self.log = log
        self.evicted = 0
        self._lock = threading.Lock()
        self._by_id: OrderedDict[str, _Session] = OrderedDict()
        self._by_key: dict[tuple, str] = {}
        self._opening: dict[tuple, threading.Lock] = {}
        self._measured = 0.0

    def __len__(self) -> int:
        return len(self._by_id)

    def open(self, key: tuple | None, make) -> _Session:
        """The session for ``key`` (made by ``make()`` once, even when threads open it together)."""
        if key is None:
            return self._add(None, make())
        with self._lock:
            gate = self._opening.setdefault(key, threading.Lock())
        try:
            with gate:
                with self._lock:
                    sid = self._by_key.get(key)
                    if sid is not None:
                        entry = self._by_id[sid]
                        entry.refs += 1
                        self._by_id.move_to_end(sid)
                        return entry
                return self._add(key, make())
        finally:
            with self._lock:
                if self._opening.get(key) is gate and not gate.locked():
                    del self._opening[key]

    def _add(self, key, made: tuple) -> _Session:
        session, clip, frames, note = made
        entry = _Session(secrets.token_hex(12), key, session, clip, frames, note)
        with self._lock:
            self._by_id[entry.id] = entry
            if key is not None:
                self._by_key[key] = entry.id
        self.trim()
        return entry

    def acquire(self, sid: str) -> _Session:
        with self._lock:
            entry = self._by_id.get(sid)
            if entry is None or entry.closing:
                raise SessionNotFoundError(f"no open session {sid[:64]!r} (closed, or closed under the server's "
                                           f"memory cap); open the clip again")
            entry.busy += 1
            self._by_id.move_to_end(sid)
            return entry

    def release(self, entry: _Session) -> None:
        with self._lock:
            entry.busy -= 1
            done = entry.closing and entry.busy == 0
        if done:
            self._finish(entry)

    def close(self, sid: str) -> None:
        with self._lock:
            entry = self._by_id.get(sid)
            if entry is None:
                raise SessionNotFoundError(f"no open session {sid[:64]!r}")
            entry.refs -= 1
            if entry.refs > 0:
                return
            self._drop_locked(entry)
            done = entry.busy == 0
        if done:
            self._finish(entry)

    def _drop_locked(self, entry: _Session) -> None:
        entry.closing = True
        self._by_id.pop(entry.id, None)
        if entry.key is not None and self._by_key.get(entry.key) == entry.id:
            del self._by_key[entry.key]

    def _finish(self, entry: _Session) -> None:
        try:
            entry.session.close()
        except Exception:  # a session that fails to close must not take the server with it
            self.log.exception("closing session %s failed", entry.id)

    def trim(self, *, measure: bool = True) -> None:
        """Close idle sessions, least recently used first, while over the count or the memory cap.

        ``measure=False`` (after a render) reads the resident size at most every quarter second: the read
        costs a fifth of a millisecond, a tenth of a 1080p frame's whole server overhead.
        """
        victims = []
        now = time.monotonic()
        measure = measure or now - self._measured > 0.25
        with self._lock:
            over_count = len(self._by_id) - self.max_sessions
            over_memory = False
            if measure and self.memory_mb > 0:
                self._measured = now
                over_memory = rss_mb() > self.memory_mb
            if over_count <= 0 and not over_memory:
                return
            for entry in list(self._by_id.values())[:-1]:  # the most recent one always stays
                if entry.busy:
                    continue
                if over_count <= 0 and not over_memory:
                    break
                self._drop_locked(entry)
                victims.append(entry)
                over_count -= 1
                over_memory = over_memory and len(victims) < 1  # memory: one at a time, re-measured next call
        for entry in victims:
            self.evicted += 1
            self.log.info("session %s (%s) closed under the cap", entry.id, entry.clip)
            self._finish(entry)

    def close_all(self) -> None:
        """Close every session; one that is rendering now is closed by :meth:`release` when it ends."""
        with self._lock:
            entries = list(self._by_id.values())
            for entry in entries:
                self._drop_locked(entry)
            idle = [entry for entry in entries if entry.busy == 0]
        for entry in idle:
            self._finish(entry)


class _Maps:
    """Mappings of one connection's shared memory, reused while the client sends the same memfd.

    Why: mapping 33 MB (a 1080p float RGBA frame) and faulting in its pages costs more than the copy;
    a client that reuses its buffer pays it once. Bounded, and unmapped when the connection ends. Safe to
    keep on Linux: :func:`fd_identity` admits only memfds sealed against shrinking, so a kept mapping never
    reaches past its file's end (where a touch is SIGBUS).
    """

    def __init__(self, limit: int = 2):
        self.limit = limit
        self._maps: OrderedDict[tuple, object] = OrderedDict()

    def get(self, fd: int, req) -> object:
        ident = fd_identity(fd, req)
        if req.nbytes > MAX_SHARED:
            raise ProtocolError(f"a window of {req.nbytes} bytes exceeds the {MAX_SHARED}-byte limit")
        key = (ident, req.nbytes)
        mm = self._maps.get(key)
        if mm is None:
            # a new mapping for this memfd (size changed, or a new one): drop older ones of the same inode
            for k in [k for k in self._maps if k[0][:2] == ident[:2]]:
                self._close(self._maps.pop(k))
            mm = self._maps[key] = map_fd(fd, req.nbytes)
            while len(self._maps) > self.limit:
                self._close(self._maps.popitem(last=False)[1])
        self._maps.move_to_end(key)
        return mm

    @staticmethod
    def _close(mm) -> None:
        try:
            mm.close()
        except BufferError:  # a view still exists somewhere; the mapping goes when it does
            pass

    def close(self) -> None:
        while self._maps:
            self._close(self._maps.popitem()[1])


class RenderServer:
    """Accepts connections on the socket; one thread per connection."""

    def __init__(self, config: ServerConfig, log: logging.Logger):
        self.config = config
        self.log = log
        self.engines = engines.EngineCache(config.max_engines)
        self.sessions = SessionCache(config.max_sessions, config.memory_mb, log)
        self.stop = threading.Event()
        self.started = time.time()
        self._lock = threading.Lock()
        self._in_flight = 0
        self._last_activity = time.monotonic()
        self._frames = 0
        self._total_ms = 0.0
        self._engine_ms = 0.0
        self._connections = 0

    # ------------------------------------------------------------------------------ lifecycle
    def serve_forever(self, listener: socket.socket) -> None:
        listener.settimeout(0.25)
        self.log.info("serving on %s (pid %d, idle timeout %s s)", self.config.socket_path, os.getpid(),
                      self.config.idle_timeout)
        while not self.stop.is_set():
            try:
                conn, _ = listener.accept()
            except TimeoutError:
                if self._idle_expired():
                    self.log.info("idle for %s s: stopping", self.config.idle_timeout)
                    break
                continue
            except OSError as exc:
                if self.stop.is_set():
                    break
                self.log.warning("accept failed: %s", exc)
                time.sleep(0.05)
                continue
            with self._lock:
                full = self._connections >= self.config.max_connections
            if full:
                self.log.warning("refused a connection: %d open already", self.config.max_connections)
                conn.close()
                continue
            with self._lock:
                self._connections += 1
            threading.Thread(target=self._connection, args=(conn,), daemon=True, name="facecomp-conn").start()
        self.stop.set()
        # from here no request begins (the check and the count are one step under the lock, in _connection)
        deadline = time.monotonic() + max(0.0, self.config.shutdown_grace)
        while time.monotonic() < deadline and self.in_flight():
            time.sleep(0.02)  # let renders in flight answer before the process goes
        left = self.in_flight()
        if left:
            self.log.warning("stopping with %d request(s) still running after %.0f s", left,
                             self.config.shutdown_grace)
        self.sessions.close_all()  # a session still rendering is closed when that render ends

    def in_flight(self) -> int:
        with self._lock:
            return self._in_flight

    def _idle_expired(self) -> bool:
        if self.config.idle_timeout <= 0:
            return False
        with self._lock:
            return self._in_flight == 0 and time.monotonic() - self._last_activity > self.config.idle_timeout

    # ----------------------------------------------------------------------------- connections
    def _connection(self, conn: socket.socket) -> None:
        maps = _Maps()
        try:
            pid, uid, _ = _UCRED.unpack(conn.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, _UCRED.size))
            if uid != os.getuid():
                self.log.warning("refused a connection from uid %d (pid %d)", uid, pid)
                return
            conn.settimeout(None)
            greeted = False
            while not self.stop.is_set():
                try:
                    got = recv_message(conn, body_timeout=self.config.message_timeout)
                except FramingError as exc:
                    self.log.info("closing a connection (pid %d): %s", pid, exc)
                    self._reply(conn, error_reply(exc))
                    return
                except ProtocolError as exc:
                    if not self._reply(conn, error_reply(exc)):
                        return
                    continue
                except OSError:
                    return
                if got is None:
                    return
                msg, fds = got
                with self._lock:  # one step: a stopping server never misses a request it let begin
                    stopping = self.stop.is_set()
                    if not stopping:
                        self._in_flight += 1
                        self._last_activity = time.monotonic()
                if stopping:  # not begun; the client sends it to the next server
                    close_fds(fds)
                    self._reply(conn, error_reply(ServerStoppingError(
                        "the server is stopping; the request was not run (send it again after connect())")))
                    return
                t0 = time.perf_counter()
                keep = True
                try:
                    req = parse_request(msg, len(fds))
                    if req.op == "hello":
                        reply, keep = self._hello(req)
                        greeted = greeted or keep
                    elif not greeted:
                        raise ProtocolError("the first request on a connection must be 'hello'")
                    else:
                        reply = self._dispatch(req, fds, maps, t0)
                except Exception as exc:
                    if not isinstance(exc, FacecompError):
                        self.log.exception("request %r failed", str(msg.get("op"))[:20])
                    reply = error_reply(exc)
                finally:
                    close_fds(fds)
                    with self._lock:
                        self._in_flight -= 1
                        self._last_activity = time.monotonic()
                sent = self._reply(conn, reply)
                if not sent or not keep:
                    return
                if reply.get("ok") and msg.get("op") == "shutdown":
                    return
        except Exception:
            self.log.exception("connection failed")
        finally:
            maps.close()
            with self._lock:
                self._connections -= 1
            try:
                conn.close()
            except OSError:
                pass

    def _reply(self, conn: socket.socket, reply: dict) -> bool:
        try:
            send_message(conn, reply)
            return True
        except OSError:  # the client went away; its fds are already closed
            return False

    # -------------------------------------------------------------------------------- requests
    def _hello(self, req) -> tuple[dict, bool]:
        version = req.fields["protocol"]
        if version != PROTOCOL:
            changes = "; ".join(f"protocol {v}: {UPGRADES[v]}" for v in sorted(UPGRADES) if version < v <= PROTOCOL)
            return error_reply(ProtocolError(
                f"protocol {version} is not spoken by this server (facecomp {__version__} speaks {PROTOCOL}); "
                f"update the plugin or facecomp" + (f" ({changes})" if changes else ""))), False
        return {"ok": True, "protocol": PROTOCOL, "server": f"facecomp {__version__}", "pid": os.getpid()}, True

    def _dispatch(self, req, fds, maps: _Maps, t0: float) -> dict:
        if req.op == "render":
            return self._render(req.render, fds[0], maps, t0)
        if req.op == "open":
            return self._open(**req.fields)
        if req.op == "close":
            self.sessions.close(req.fields["session"])
            return {"ok": True}
        if req.op == "stats":
            return self.stats()
        if req.op == "shutdown":
            self.log.info("shutdown requested")
            self.stop.set()
            return {"ok": True, "pid": os.getpid()}
        raise ProtocolError(f"unknown op {req.op!r}")

    def _open(self, clip: str | None, settings: dict, clip_id: str | None) -> dict:
        parsed = engines.parse_settings(settings)
        skey = engines.settings_key(parsed)
        if clip is not None:
            if not os.path.isabs(clip):
                raise ProtocolError(f"clip {clip[:200]!r} is not an absolute path (the server's working folder "
                                    f"is not the client's)")
            if os.path.exists(clip):  # a file or a folder of frames; a sequence pattern is kept as given
                clip = os.path.realpath(clip)
            if clip_id is None:
                clip_id = engines.default_clip_id(clip)
        private = clip_id is None  # pixels only and no id: a session of its own, never shared
        if private:
            clip_id = "host-" + secrets.token_hex(8)

        def make():
            fps = engines.clip_fps(clip)
            engine = self.engines.get(parsed, skey, fps)
            session = engine.open_clip(clip, clip_id)
            return session, clip, getattr(session, "frames", None), getattr(session, "note", None)

        entry = self.sessions.open(None if private else (clip, skey, clip_id), make)
        self.log.info("session %s: clip %s, clip_id %s", entry.id, clip, clip_id)
        return {"ok": True, "session": entry.id, "frames": entry.frames, "note": entry.note}

    def _render(self, req, fd: int, maps: _Maps, t0: float) -> dict:
        c0 = time.thread_time()  # CPU of this thread: what the server itself costs, whatever else runs
        entry = self.sessions.acquire(req.session)
        try:
            mm = maps.get(fd, req)
            view = frame_view(mm, req)
            w, h = req.full
            t1, c1 = time.perf_counter(), time.thread_time()
            # stamped in place: the stamper writes the result into the shared memory (no copy after it)
            stamped = entry.session.render(view, req.index, req.time, full_size=(h, w), window=req.window,
                                           alpha=req.alpha, out=view)
            t2, c2 = time.perf_counter(), time.thread_time()
            if not stamped.delivered:
                raise ServerError("the session did not stamp into the shared memory")
            tracks = [int(t) for t in stamped.replaced_tracks]
            del view, stamped
        finally:
            self.sessions.release(entry)
        self.sessions.trim(measure=False)
        engine_ms = (t2 - t1) * 1e3
        total_ms = (time.perf_counter() - t0) * 1e3
        with self._lock:
            self._frames += 1
            self._total_ms += total_ms
            self._engine_ms += engine_ms
        cpu_ms = (time.thread_time() - c0 - (c2 - c1)) * 1e3
        return {"ok": True, "tracks": tracks, "engine_ms": round(engine_ms, 4), "server_ms": round(total_ms, 4),
                "server_cpu_ms": round(cpu_ms, 4)}

    def stats(self) -> dict:
        with self._lock:
            frames, total, eng, conns = self._frames, self._total_ms, self._engine_ms, self._connections
        return {"ok": True, "sessions": len(self.sessions), "frames": frames,
                "mean_ms": round(total / frames, 4) if frames else 0.0,
                "mean_engine_ms": round(eng / frames, 4) if frames else 0.0,
                "rss_mb": round(rss_mb(), 1), "pid": os.getpid(), "socket": str(self.config.socket_path),
                "engines": len(self.engines), "connections": conns, "evicted": self.sessions.evicted,
                # requests being served besides this one (renders a shutdown waits for)
                "in_flight": max(0, self.in_flight() - 1),
                "uptime_s": round(time.time() - self.started, 1), "idle_timeout": self.config.idle_timeout,
                "memory_mb": self.config.memory_mb, "server": f"facecomp {__version__}", "protocol": PROTOCOL}


# ------------------------------------------------------------------------------------ process

def _make_log(config: ServerConfig) -> tuple[logging.Logger, logging.Handler]:
    log = logging.getLogger("facecomp.server")
    handler = logging.handlers.RotatingFileHandler(log_path(config.socket_path), maxBytes=config.log_bytes,
                                                   backupCount=2, encoding="utf-8")
    os.chmod(log_path(config.socket_path), 0o600)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s [%(threadName)s] %(message)s"))
    log.addHandler(handler)
    log.setLevel(logging.INFO)
    log.propagate = False
    return log, handler


def _take_lock(path: Path) -> int:
    """The single-instance lock (held for the server's life); raises if another server holds it."""
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as exc:
        other = os.pread(fd, 32, 0).decode("ascii", "replace").strip()
        os.close(fd)
        if exc.errno in (errno.EWOULDBLOCK, errno.EACCES):
            raise ServerError(f"a facecomp server is already running (pid {other or '?'}) for this socket",
                              path=path.with_suffix(".sock")) from None
        raise
    os.ftruncate(fd, 0)
    os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
    return fd


def _bind(path: Path) -> socket.socket:
    """Listen on ``path``; a socket file left by a dead server is replaced (we hold the lock: none listens)."""
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        sock.bind(os.fspath(path))
        os.chmod(path, 0o600)
        sock.listen(64)
    except OSError as exc:
        sock.close()
        raise ServerError(f"cannot listen on the socket: {exc.strerror or exc}", path=path) from None
    return sock


def _keep_freed_frames() -> None:
    """Let glibc keep freed frame buffers for the next frame instead of unmapping them.

    Why: by default every 1080p float frame the engine allocates (33 MB) is mmapped, faulted in page by
    page and unmapped again when freed (~3 ms for the unmap alone, more for the faults). A server renders
    frames of one size over and over, so it keeps blocks up to glibc's 32 MiB limit in its heap and
    trims only past 256 MiB free. Process-wide, so only the server's own process does it; a no-op on
    other C libraries.
    """
    import ctypes
    import ctypes.util

    name = ctypes.util.find_library("c")
    try:
        libc = ctypes.CDLL(name or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return
    m_trim_threshold, m_mmap_threshold = -1, -3  # <malloc.h>
    mallopt(m_mmap_threshold, 32 << 20)
    mallopt(m_trim_threshold, 256 << 20)


def serve(config: ServerConfig, *, ready=None) -> int:
    """Run the server in this process until shutdown, SIGTERM/SIGINT or the idle timeout.

    ``ready``: called with the server once it listens (the CLI prints the socket path).
    """
    sock_path = Path(config.socket_path)
    if len(os.fsencode(sock_path)) >= 104:
        raise ServerError("the socket path is too long for a Unix socket (at most 103 bytes)", path=sock_path)
    sock_path = Path(os.path.abspath(sock_path))
    ensure_private_dir(sock_path.parent, own=is_facecomp_dir(sock_path))
    lock_fd = _take_lock(lock_path(sock_path))
    # clients are elsewhere: a relative path in their settings must fail the same way for all of them
    os.chdir("/")
    _keep_freed_frames()
    log, handler = _make_log(config)
    listener = None
    try:
        listener = _bind(sock_path)
        ident = os.stat(sock_path).st_ino
        server = RenderServer(config, log)
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGTERM, signal.SIGINT):
                signal.signal(sig, lambda *_: server.stop.set())
        if ready is not None:
            ready(server)
        server.serve_forever(listener)
        log.info("stopped (%d frames served)", server._frames)
        return 0
    except Exception:
        log.exception("server failed")
        raise
    finally:
        if listener is not None:
            listener.close()
            try:
                if os.stat(sock_path).st_ino == ident:
                    os.unlink(sock_path)
            except OSError:
                pass
        log.removeHandler(handler)
        handler.close()
        os.close(lock_fd)  # releases the lock
