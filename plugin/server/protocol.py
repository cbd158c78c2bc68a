"""The wire format of ``facecomp serve`` (docs/hosts-contract.md, "Render server").

Every message is a 4-byte little-endian length and that many bytes of UTF-8 JSON (at most
:data:`MAX_MESSAGE`). A render request carries one file descriptor (SCM_RIGHTS) naming shared memory
that holds the window's pixels (on Linux a memfd sealed against shrinking: a mapping the engine touches
past the file's end would kill the server with SIGBUS); the server writes the stamped result into the
same memory. Native clients speak this too, so every field is validated here, strictly, before anything
touches pixels: a hostile or buggy message must cost an error reply, never the server.
"""

from __future__ import annotations

import array
import fcntl
import json
import math
import mmap
import os
import socket
import stat
import struct
import sys
from dataclasses import dataclass
from typing import Any

import numpy as np

from .. import errors as _errors
from ..errors import FacecompError

PROTOCOL = 2
# What changed in each version, for a client refused at 'hello' (docs/hosts-contract.md, "Render server").
UPGRADES = {2: "a render's shared memory must be a memfd sealed against shrinking (create it with "
               "MFD_ALLOW_SEALING, size it, then add F_SEAL_SHRINK); an unsealed fd is refused"}
MAX_MESSAGE = 1 << 20  # bytes of JSON in one message
MAX_FDS = 4  # ancillary room: more fds than one in a request is refused (and all of them closed)
MAX_SIDE = 1 << 15  # pixels per side of a full frame
MAX_TEXT = 4096  # characters in a path or an id
HEADER = struct.Struct("<I")
DTYPES: dict[str, np.dtype] = {"uint8": np.dtype(np.uint8), "uint16": np.dtype(np.uint16),
                               "float32": np.dtype(np.float32)}
ALPHAS = ("straight", "premultiplied", "none")
OPS = ("hello", "open", "render", "close", "stats", "shutdown")


class ServerError(FacecompError, ConnectionError):
    """The server cannot be reached, died mid-request, or did not answer within the timeout."""

    exit_code = 1


class NotRunningError(ServerError):
    """No server listens on the socket (and the caller did not ask to start one)."""


class ServerStoppingError(ServerError):
    """The server was stopping when the request came, and did not run it (safe to send again)."""


class ProtocolError(FacecompError, ValueError):
    """A request that breaks the wire format: wrong field, type, range, size, or a missing fd."""

    exit_code = 2


class FramingError(ProtocolError):
    """The byte stream itself is broken (oversized or truncated message): the connection is closed."""


class SessionNotFoundError(FacecompError, LookupError):
    """The session id is unknown: closed, or evicted under the memory cap (open the clip again)."""

    exit_code = 2


# --------------------------------------------------------------------------------------- framing

def encode(obj: dict) -> bytes:
    body = json.dumps(obj, separators=(",", ":"), allow_nan=False).encode("utf-8")
    if len(body) > MAX_MESSAGE:
        raise ProtocolError(f"message of {len(body)} bytes exceeds the {MAX_MESSAGE}-byte limit")
    return HEADER.pack(len(body)) + body


def send_message(sock: socket.socket, obj: dict, fds: tuple[int, ...] = ()) -> None:
    """One message; ``fds`` ride on its first ``sendmsg`` (SCM_RIGHTS)."""
    data = encode(obj)
    if fds:
        sent = sock.sendmsg([data], [(socket.SOL_SOCKET, socket.SCM_RIGHTS, array.array("i", fds))])
        data = data[sent:]
    if data:
        sock.sendall(data)


def close_fds(fds) -> None:
    for fd in fds:
        try:
            os.close(fd)
        except OSError:
            pass


def _recv_exact(sock: socket.socket, n: int, fds: list[int], started: bool,
                then_timeout: float | None = None) -> bytes | None:
    """``n`` bytes, collecting any fds that arrive; None on EOF before the first byte of a message.

    ``then_timeout``: once a first byte has come, the socket's timeout for the rest.
    """
    chunks = []
    got = 0
    space = socket.CMSG_SPACE(MAX_FDS * array.array("i").itemsize)
    while got < n:
        data, anc, flags, _ = sock.recvmsg(n - got, space, getattr(socket, "MSG_CMSG_CLOEXEC", 0))
        for level, kind, payload in anc:
            if level == socket.SOL_SOCKET and kind == socket.SCM_RIGHTS:
                a = array.array("i")
                a.frombytes(payload[:len(payload) - len(payload) % a.itemsize])
                fds.extend(a)
        if flags & socket.MSG_CTRUNC:
            raise FramingError(f"more than {MAX_FDS} file descriptors attached to one message")
        if not data:
            if not started and got == 0:
                return None
            raise FramingError("connection closed in the middle of a message (truncated)")
        chunks.append(data)
        got += len(data)
        if not started and then_timeout is not None and got < n:
            sock.settimeout(then_timeout)
        started = True
    return b"".join(chunks)


def _no_constants(name: str):
    raise ValueError(f"{name} is not valid JSON")


def recv_message(sock: socket.socket, *, body_timeout: float | None = None) -> tuple[dict, list[int]] | None:
    """The next message and the fds that came with it; None when the peer closed between messages.

    The caller owns the returned fds (close them in ``finally``). Raises :class:`FramingError` (close the
    connection) or :class:`ProtocolError` (reply with an error, keep the connection); the fds of a
    failed message are closed here. ``body_timeout``: once a message has begun, it must arrive in full
    within this many seconds (a peer that stalls mid-message is cut off).
    """
    fds: list[int] = []
    old = sock.gettimeout()
    try:
        try:
            head = _recv_exact(sock, HEADER.size, fds, started=False, then_timeout=body_timeout)
            if head is None:
                return None
            (length,) = HEADER.unpack(head)
            if length > MAX_MESSAGE:
                raise FramingError(f"message length {length} exceeds the {MAX_MESSAGE}-byte limit")
            if length == 0:
                raise FramingError("empty message (length 0)")
            if body_timeout is not None:
                sock.settimeout(body_timeout)
            body = _recv_exact(sock, length, fds, started=True)
        except TimeoutError:
            if body_timeout is None or sock.gettimeout() != body_timeout:
                raise  # the caller's own deadline (a client waiting for a reply)
            raise FramingError(f"a message begun did not arrive in full within {body_timeout:g} s") from None
        finally:
            sock.settimeout(old)
        try:
            obj = json.loads(body.decode("utf-8"), parse_constant=_no_constants)
        except (UnicodeDecodeError, ValueError, RecursionError) as exc:
            raise ProtocolError(f"message is not UTF-8 JSON: {str(exc)[:200]}") from None
        if not isinstance(obj, dict):
            raise ProtocolError(f"message must be a JSON object, got {type(obj).__name__}")
        return obj, fds
    except BaseException:
        close_fds(fds)
        raise


# ------------------------------------------------------------------------------------ validation

def _field(msg: dict, key: str, kinds: tuple[type, ...], *, optional: bool = False) -> Any:
    if key not in msg:
        if optional:
            return None
        raise ProtocolError(f"'{msg.get('op')}' request needs the field '{key}'")
    value = msg[key]
    if value is None and optional:
        return None
    # bool is an int in Python; JSON true/false is never a number here
    if isinstance(value, bool) and bool not in kinds:
        raise ProtocolError(f"field '{key}' must be {_kind_names(kinds)}, got a boolean")
    if not isinstance(value, kinds):
        raise ProtocolError(f"field '{key}' must be {_kind_names(kinds)}, got {type(value).__name__}")
    return value


def _kind_names(kinds: tuple[type, ...]) -> str:
    names = {int: "an integer", float: "a number", str: "a string", dict: "an object", list: "an array",
             bool: "a boolean"}
    return " or ".join(names.get(k, k.__name__) for k in kinds)


def _text(msg: dict, key: str, *, optional: bool = False) -> str | None:
    value = _field(msg, key, (str,), optional=optional)
    if value is not None and (len(value) > MAX_TEXT or "\x00" in value):
        raise ProtocolError(f"field '{key}' is longer than {MAX_TEXT} characters or holds a NUL")
    return value


def _int(msg: dict, key: str, lo: int, hi: int) -> int:
    value = _field(msg, key, (int,))
    if not lo <= value <= hi:
        raise ProtocolError(f"field '{key}' = {value} is outside {lo}..{hi}")
    return value


def _ints(msg: dict, key: str, n: int) -> tuple[int, ...]:
    value = _field(msg, key, (list,))
    if len(value) != n or any(isinstance(v, bool) or not isinstance(v, int) for v in value):
        raise ProtocolError(f"field '{key}' must be an array of {n} integers")
    return tuple(value)


def _check_keys(msg: dict, allowed: tuple[str, ...]) -> None:
    extra = sorted(set(msg) - set(allowed) - {"op"})
    if extra:
        raise ProtocolError(f"'{msg['op']}' request has unknown field(s): {', '.join(map(str, extra))[:300]}")


@dataclass(frozen=True)
class RenderRequest:
    session: str
    index: int
    time: float
    full: tuple[int, int]  # (width, height), as on the wire
    window: tuple[int, int, int, int]  # (x0, y0, x1, y1), exclusive ends
    dtype: str
    channels: int
    alpha: str
    stride: int  # bytes per row in the shared memory

    @property
    def shape(self) -> tuple[int, int, int]:
        x0, y0, x1, y1 = self.window
        return (y1 - y0, x1 - x0, self.channels)

    @property
    def nbytes(self) -> int:
        return self.stride * self.shape[0]


@dataclass(frozen=True)
class Request:
    op: str
    fields: dict  # validated fields of hello/open/close; empty for stats/shutdown
    render: RenderRequest | None = None


def parse_request(msg: dict, nfds: int) -> Request:
    """Validate one request (every field: type, range, size). Raises :class:`ProtocolError`."""
    op = msg.get("op")
    if not isinstance(op, str) or op not in OPS:
        raise ProtocolError(f"unknown or missing 'op' {str(op)[:40]!r}; expected one of {', '.join(OPS)}")
    if op == "render":
        if nfds != 1:
            raise ProtocolError(f"a render request carries exactly one file descriptor (got {nfds})")
    elif nfds:
        raise ProtocolError(f"'{op}' request must not carry file descriptors (got {nfds})")
    if op == "hello":
        _check_keys(msg, ("protocol", "client"))
        return Request(op, {"protocol": _field(msg, "protocol", (int,)),
                            "client": _text(msg, "client", optional=True)})
    if op == "open":
        _check_keys(msg, ("clip", "settings", "clip_id"))
        return Request(op, {"clip": _text(msg, "clip", optional=True),
                            "settings": _field(msg, "settings", (dict,)),
                            "clip_id": _text(msg, "clip_id", optional=True)})
    if op == "close":
        _check_keys(msg, ("session",))
        return Request(op, {"session": _text(msg, "session")})
    if op in ("stats", "shutdown"):
        _check_keys(msg, ())
        return Request(op, {})
    return Request(op, {}, _parse_render(msg))


def _parse_render(msg: dict) -> RenderRequest:
    _check_keys(msg, ("session", "index", "time", "full", "window", "dtype", "channels", "alpha", "stride"))
    session = _text(msg, "session")
    index = _int(msg, "index", -(2**31), 2**31 - 1)  # negative: a lone frame (as ClipSession.render)
    t = _field(msg, "time", (int, float))
    if not math.isfinite(t) or abs(t) > 1e9:
        raise ProtocolError(f"field 'time' = {t} is not a finite time in seconds")
    w, h = _ints(msg, "full", 2)
    if not (1 <= w <= MAX_SIDE and 1 <= h <= MAX_SIDE):
        raise ProtocolError(f"field 'full' = [{w}, {h}]: width and height must be 1..{MAX_SIDE}")
    x0, y0, x1, y1 = _ints(msg, "window", 4)
    if not (0 <= x0 < x1 <= w and 0 <= y0 < y1 <= h):
        raise ProtocolError(f"field 'window' = [{x0}, {y0}, {x1}, {y1}] is empty or not inside the "
                            f"{w}x{h} frame")
    dtype = _field(msg, "dtype", (str,))
    if dtype not in DTYPES:
        raise ProtocolError(f"field 'dtype' = {dtype[:40]!r}; expected one of {', '.join(DTYPES)}")
    channels = _field(msg, "channels", (int,))
    if channels not in (3, 4):
        raise ProtocolError(f"field 'channels' = {channels}; expected 3 or 4")
    alpha = _field(msg, "alpha", (str,))
    if alpha not in ALPHAS:
        raise ProtocolError(f"field 'alpha' = {alpha[:40]!r}; expected one of {', '.join(ALPHAS)}")
    item = DTYPES[dtype].itemsize
    row = (x1 - x0) * channels * item
    stride = _int(msg, "stride", 1, 2**40)
    if stride < row or stride % item:
        raise ProtocolError(f"field 'stride' = {stride}: must be at least the row's {row} bytes and a "
                            f"multiple of {item} ({dtype})")
    return RenderRequest(session, index, float(t), (w, h), (x0, y0, x1, y1), dtype, channels, alpha, stride)


# -------------------------------------------------------------------------------- shared memory

# Linux seals (<linux/fcntl.h>); the values are the kernel's ABI, for a Python built without them
F_GET_SEALS = getattr(fcntl, "F_GET_SEALS", 1034)
F_ADD_SEALS = getattr(fcntl, "F_ADD_SEALS", 1033)
F_SEAL_SHRINK = getattr(fcntl, "F_SEAL_SHRINK", 0x0002)
# checked on Linux only: macOS shm objects have no seals (the remaining risk there: docs/hosts-contract.md)
CHECK_SEALS = sys.platform.startswith("linux")
SEAL_HINT = ("create it with memfd_create(name, MFD_ALLOW_SEALING | MFD_CLOEXEC), size it with ftruncate, then "
             "seal it with fcntl(fd, F_ADD_SEALS, F_SEAL_SHRINK) (growing stays allowed); protocol 2, "
             "docs/hosts-contract.md")


def _unsealed_reason(fd: int) -> str | None:
    """Why ``fd`` may still shrink under the server's mapping (None: sealed against it)."""
    try:
        seals = fcntl.fcntl(fd, F_GET_SEALS)
    except OSError:  # EINVAL: not a memfd (a disk file), so no seal can hold its size
        return "is not a memfd and cannot be sealed against shrinking"
    if seals & F_SEAL_SHRINK:
        return None
    return "is not sealed against shrinking (F_SEAL_SHRINK)"


def fd_identity(fd: int, req: RenderRequest) -> tuple[int, int, int]:
    """(device, inode, size) of a render fd, after checking it is shared memory large enough.

    On Linux the fd must also carry F_SEAL_SHRINK: the engine reads and stamps the mapping in place, and
    a page past a file's end faults with SIGBUS, so a client that shrank its memfd mid-render would
    take every host's sessions with the server. The seal is read before the size, so the size checked
    is a floor that holds for the rest of the request (and for a mapping kept across requests).
    """
    unsealed = _unsealed_reason(fd) if CHECK_SEALS else None
    try:
        st = os.fstat(fd)
    except OSError as exc:
        raise ProtocolError(f"the file descriptor cannot be inspected: {exc.strerror}") from None
    if not stat.S_ISREG(st.st_mode):
        raise ProtocolError("the file descriptor is not shared memory (memfd or shm object)")
    if unsealed is not None:
        raise ProtocolError(f"the render's shared memory {unsealed}, so a client could shrink it under the "
                            f"server's mapping; {SEAL_HINT}")
    if st.st_size < req.nbytes:
        raise ProtocolError(f"shared memory of {st.st_size} bytes is smaller than the window needs "
                            f"(stride {req.stride} x {req.shape[0]} rows = {req.nbytes} bytes)")
    return st.st_dev, st.st_ino, st.st_size


def map_fd(fd: int, length: int) -> mmap.mmap:
    flags = mmap.MAP_SHARED | getattr(mmap, "MAP_POPULATE", 0)
    try:
        return mmap.mmap(fd, length, flags=flags, prot=mmap.PROT_READ | mmap.PROT_WRITE)
    except (OSError, ValueError) as exc:
        raise ProtocolError(f"the shared memory cannot be mapped read-write: {exc}") from None


def frame_view(buf, req: RenderRequest) -> np.ndarray:
    """The window's pixels inside ``buf`` (rows ``stride`` bytes apart), no copy."""
    dt = DTYPES[req.dtype]
    h, w, c = req.shape
    return np.ndarray((h, w, c), dtype=dt, buffer=buf, offset=0, strides=(req.stride, c * dt.itemsize, dt.itemsize))


def new_shared(nbytes: int, name: str = "facecomp-frame") -> tuple[int, mmap.mmap]:
    """A memfd of ``nbytes``, sealed against shrinking, and its mapping (the client side of a render).

    The server refuses an unsealed fd (:func:`fd_identity`); a client that needs more memory later makes
    a new memfd (growing this one would be allowed, shrinking it is not).
    """
    fd = os.memfd_create(name, os.MFD_CLOEXEC | os.MFD_ALLOW_SEALING)
    try:
        os.ftruncate(fd, nbytes)
        fcntl.fcntl(fd, F_ADD_SEALS, F_SEAL_SHRINK)
        return fd, mmap.mmap(fd, nbytes, flags=mmap.MAP_SHARED, prot=mmap.PROT_READ | mmap.PROT_WRITE)
    except BaseException:
        os.close(fd)
        raise


# --------------------------------------------------------------------------------------- errors

def error_reply(exc: BaseException) -> dict:
    """The typed error reply; ``message`` is what the CLI prints after ``error:``."""
    if isinstance(exc, FacecompError):
        kind, code, message = type(exc).__name__, exc.exit_code, str(exc)
    elif isinstance(exc, (ValueError, TypeError)):
        kind, code, message = "ValueError", 2, str(exc)
    elif isinstance(exc, MemoryError):
        kind, code, message = "MemoryError", 1, "out of memory"
    else:
        kind, code, message = "InternalError", 1, f"internal error: {type(exc).__name__}: {exc}"
    return {"ok": False, "error": {"type": kind, "message": message[:4000], "exit_code": int(code)}}


def _error_classes() -> dict[str, type[FacecompError]]:
    found = {name: obj for name, obj in vars(_errors).items()
             if isinstance(obj, type) and issubclass(obj, FacecompError)}
    for cls in (ServerError, NotRunningError, ServerStoppingError, ProtocolError, FramingError,
                SessionNotFoundError):
        found[cls.__name__] = cls
    return found


def error_from_reply(reply: dict) -> FacecompError:
    """The exception a client raises for an error reply: the server's type where facecomp has it."""
    err = reply.get("error") if isinstance(reply.get("error"), dict) else {}
    message = str(err.get("message", "the server refused the request"))
    cls = _error_classes().get(str(err.get("type")))
    if cls is None:
        exc = ServerError(f"{err.get('type', 'error')}: {message}")
    else:
        exc = cls(message)
    code = err.get("exit_code")
    if isinstance(code, int) and not isinstance(code, bool) and code != exc.exit_code:
        exc.exit_code = code
    return exc
