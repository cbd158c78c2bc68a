"""``facecomp serve``: a real server process, real sockets, real shared memory.

Each test that starts or kills a server uses its own runtime directory (``XDG_RUNTIME_DIR``), so the
servers of different tests never meet and the user's own server is never touched.
"""

from __future__ import annotations

import errno
import fcntl
import json
import os
import random
import signal
import socket
import struct
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import numpy as np
import pytest
from facecomp.server import ServerError, SessionNotFoundError, connect
from facecomp.server import protocol as P

pytestmark = pytest.mark.skipif(not hasattr(os, "memfd_create") or not sys.platform.startswith("linux"),
                                reason="the render server needs Linux (memfd, SCM_RIGHTS, SO_PEERCRED)")

ROOT = Path(__file__).resolve().parents[1]
MEDIA = Path(os.environ.get("FACECOMP_SAMPLE_MEDIA", ROOT.parent / "shared" / "media"))
CLIP = MEDIA / "grid_bbaf2n.mpg"
PHOTO = MEDIA / "grace_hopper.jpg"
needs_media = pytest.mark.skipif(not (CLIP.exists() and PHOTO.exists()),
                                 reason=f"sample media absent ({MEDIA}); see /work/shared/media/README.md")


# ------------------------------------------------------------------------------------- helpers

@pytest.fixture
def runtime(tmp_path, monkeypatch):
    """A private runtime dir for this test; any server started in it is stopped (or killed) afterwards."""
    d = tmp_path / "xdg"
    d.mkdir(mode=0o700)
    monkeypatch.setenv("XDG_RUNTIME_DIR", str(d))
    monkeypatch.delenv("FACECOMP_SERVER_SOCKET", raising=False)
    yield d
    lock = d / "facecomp" / "serve.lock"
    try:
        pid = int(lock.read_text().strip() or 0)
    except (OSError, ValueError):
        pid = 0
    if pid and _alive(pid):
        os.kill(pid, signal.SIGKILL)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:  # a zombie child of ours is dead for our purposes
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split(")")[-1].split()[0] != "Z"
    except OSError:
        return False


def _fate(pid: int) -> str:
    """How a server this process started ended (it is our child: connect() spawned it), for a message."""
    time.sleep(0.2)
    try:
        done, status = os.waitpid(pid, os.WNOHANG)
    except ChildProcessError:
        return "alive" if _alive(pid) else "gone"
    if not done:
        return "alive"
    if os.WIFSIGNALED(status):
        return f"killed by {signal.Signals(os.WTERMSIG(status)).name}"
    return f"exited {os.WEXITSTATUS(status)}"


def _state(pid: int) -> str:
    """The process state letter from /proc (R, S, D, T, Z...), '' when it is gone."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split(")")[-1].split()[0]
    except OSError:
        return ""


def _wait_state(pid: int, state: str, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if _state(pid) == state:
            return True
        time.sleep(0.01)
    return False


def _wait_dead(pid: int, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not _alive(pid):
            return True
        time.sleep(0.05)
    return False


def _start(*args: str) -> subprocess.Popen:
    """``python -m facecomp.server ARGS`` and wait until it answers."""
    proc = subprocess.Popen([sys.executable, "-m", "facecomp.server", *args], stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            connect(start=False, timeout=1).close()
            return proc
        except ServerError:
            if proc.poll() is not None:
                raise AssertionError(f"server exited {proc.returncode}: {proc.stderr.read().decode()}")
            time.sleep(0.05)
    raise AssertionError("server did not become ready")


def _raw(path) -> socket.socket:
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.settimeout(10)
    s.connect(os.fspath(path))
    return s


def _hello(s: socket.socket) -> dict:
    P.send_message(s, {"op": "hello", "protocol": P.PROTOCOL, "client": "test"})
    reply, fds = P.recv_message(s)
    assert not fds and reply["ok"], reply
    return reply


def _memfd_frame(frame: np.ndarray) -> int:
    fd, mm = P.new_shared(frame.nbytes)
    np.ndarray(frame.shape, frame.dtype, buffer=mm)[:] = frame
    mm.close()
    return fd


def _memfd_maps(pid: int) -> list[str]:
    with open(f"/proc/{pid}/maps") as f:
        maps = [line for line in f if "memfd:" in line]
    fds = []
    for name in os.listdir(f"/proc/{pid}/fd"):
        try:
            if "memfd:" in os.readlink(f"/proc/{pid}/fd/{name}"):
                fds.append(name)
        except OSError:
            pass
    return maps + fds


def _facecomp(*args: str, **kw) -> subprocess.CompletedProcess:
    exe = Path(sys.executable).with_name("facecomp")
    cmd = [str(exe)] if exe.exists() else [sys.executable, "-c", "import sys; from facecomp.cli import main; "
                                                                  "sys.exit(main())"]
    return subprocess.run(cmd + list(args), capture_output=True, text=True, timeout=60, **kw)


def _in_process_session(settings: dict, clip, clip_id: str):
    from facecomp.effect import Engine
    from facecomp.server.engines import clip_fps
    from facecomp.settings import EffectSettings

    engine = Engine.from_settings(EffectSettings.from_dict(settings), fps=clip_fps(clip))
    return engine.open_clip(clip, clip_id)


# ----------------------------------------------------------------------------------------- tests

@needs_media
def test_clip_frames_equal_the_in_process_render(runtime):
    """A face clip through the server: the same pixels as ClipSession.render, the label, the tracks."""
    from facecomp.disclosure.detect_label import find_label
    from facecomp.video.reader import VideoReader

    settings = {"source": [str(PHOTO)]}
    reader = VideoReader(str(CLIP))
    fps = float(reader.info.fps)
    local = _in_process_session(settings, str(CLIP), "grid-test")
    with connect(timeout=30) as client:
        sid = client.open_clip(CLIP, settings, clip_id="grid-test")
        assert client.frames == len(reader) == 75
        assert client.open_clip(CLIP, settings, clip_id="grid-test") == sid  # same clip + settings: shared
        for i in (40, 10, 11):
            frame = reader.frame(i)
            pixels, tracks = client.render(sid, frame, i, i / fps)
            ref = local.render(frame, i, i / fps)
            assert pixels.dtype == np.uint8 and pixels.shape == frame.shape
            assert np.array_equal(pixels, ref.pixels), f"frame {i} differs from the in-process render"
            assert tracks == list(ref.replaced_tracks) and tracks, "the face's track is reported"
            x0, y0, x1, y1 = local.stamper.label_box(*frame.shape[:2])
            assert np.array_equal(pixels[y0:y1, x0:x1], ref.pixels[y0:y1, x0:x1])
            assert not np.array_equal(pixels[y0:y1, x0:x1], frame[y0:y1, x0:x1]), "label drawn"
        finding = find_label(pixels)
        assert finding.found, finding

        # float RGBA, and a tile of the frame: the label's part of the tile comes from the full frame
        frame = np.dstack([reader.frame(20), np.full(frame.shape[:2], 255, np.uint8)]).astype(np.float32) / 255
        frame[100:110, 100:110, :3] = 4.0  # an HDR highlight away from the label stays
        h, w = frame.shape[:2]
        tile = (0, 0, w // 2 + 3, h // 2 + 1)
        x0, y0, x1, y1 = tile
        got, _ = client.render(sid, frame[y0:y1, x0:x1], 20, 20 / fps, full_size=(h, w), window=tile,
                               alpha="premultiplied")
        ref = local.render(np.ascontiguousarray(frame[y0:y1, x0:x1]), 20, 20 / fps, full_size=(h, w),
                           window=tile, alpha="premultiplied")
        assert got.dtype == np.float32 and np.array_equal(got, ref.pixels)
        whole, _ = client.render(sid, frame, 20, 20 / fps, alpha="premultiplied")
        assert np.array_equal(whole, local.render(frame, 20, 20 / fps, alpha="premultiplied").pixels)
        stats = client.stats()
        assert stats["frames"] == 5 and stats["sessions"] == 1 and stats["mean_ms"] > 0
        assert stats["in_flight"] == 0  # nothing else is being served (the busy case: test_ofx's stopping server)
        client.close_clip(sid)
        assert client.stats()["sessions"] == 1  # opened twice: one reference left
        client.close_clip(sid)
        assert client.stats()["sessions"] == 0
    local.close()


def test_padded_rows_are_stamped_in_place_in_the_shared_memory(runtime):
    """A native client's memfd with padded rows (float RGBA, HDR and NaN values, a tile of a larger frame):
    the server stamps straight into it, bit-identical to ClipSession.render, and leaves the padding alone."""
    h, w, pad = 120, 160, 24  # a tile of a 240x320 frame whose label box it crosses
    full, tile = (240, 320), (160, 120, 320, 240)
    rng = np.random.default_rng(7)
    frame = rng.random((h, w, 4), dtype=np.float32)
    frame[5:9, 5:9, :3] = 3.0  # HDR away from the label: kept
    frame[-30:-26, -40:-36, :3] = np.nan  # inside the label box: drawn on 0..1
    frame[20:24, 30:34, 0] = -0.5
    stride = (w + pad) * 16
    fd, mm = P.new_shared(stride * h)
    raw = np.ndarray((h, w + pad, 4), np.float32, buffer=mm)
    raw[:] = 9.0  # the padding: must stay as it was
    raw[:, :w] = frame
    local = _in_process_session({}, None, "padded")
    ref = local.render(frame, 3, 0.12, full_size=full, window=tile)
    with connect(timeout=30) as client:
        sid = client.open_clip(None, {}, clip_id="padded")
        s = _raw(client.socket_path)
        _hello(s)
        P.send_message(s, {"op": "render", "session": sid, "index": 3, "time": 0.12, "full": [full[1], full[0]],
                           "window": list(tile), "dtype": "float32", "channels": 4, "alpha": "straight",
                           "stride": stride}, (fd,))
        reply, fds = P.recv_message(s)
        assert reply["ok"] and not fds, reply
        s.close()
    got = raw[:, :w]
    assert np.array_equal(got, ref.pixels, equal_nan=True) and not np.isnan(got[-30:-26, -40:-36]).any()
    assert (raw[:, w:] == 9.0).all(), "the row padding was written"
    assert not np.array_equal(got, frame, equal_nan=True)
    del raw, got
    mm.close()
    os.close(fd)
    local.close()


def test_permissions_handshake_and_typed_errors(runtime):
    from facecomp.errors import MediaError, SettingsError
    from facecomp.settings import EffectSettings

    with connect(timeout=30) as client:
        d = runtime / "facecomp"
        assert (d.stat().st_mode & 0o777) == 0o700
        assert ((d / "serve.sock").stat().st_mode & 0o777) == 0o600
        assert ((d / "serve.log").stat().st_mode & 0o777) == 0o600
        assert client.server.startswith("facecomp ") and _alive(client.pid)

        # settings errors carry the message the library (and so the CLI) gives
        bad = {"label_scale": 0.5}
        with pytest.raises(SettingsError) as local:
            EffectSettings.from_dict(bad)
        with pytest.raises(SettingsError) as remote:
            client.open_clip(None, bad)
        assert type(remote.value) is type(local.value) and str(remote.value) == str(local.value)
        assert remote.value.exit_code == local.value.exit_code
        with pytest.raises(MediaError, match="no such file"):
            client.open_clip(runtime / "missing.mp4", {})
        with _raw(runtime / "facecomp" / "serve.sock") as s:
            _hello(s)
            P.send_message(s, {"op": "open", "clip": "relative.mp4", "settings": {}, "clip_id": None})
            reply, _ = P.recv_message(s)
            assert reply["error"]["type"] == "ProtocolError" and "absolute" in reply["error"]["message"]
        frame = np.zeros((64, 64, 3), np.uint8)
        with pytest.raises(SessionNotFoundError):
            client.render("no-such-session", frame, 0, 0.0)

    sock = runtime / "facecomp" / "serve.sock"
    with _raw(sock) as s:  # a request before hello is refused, the connection kept
        P.send_message(s, {"op": "stats"})
        reply, _ = P.recv_message(s)
        assert not reply["ok"] and "hello" in reply["error"]["message"]
        _hello(s)
    with _raw(sock) as s:  # another protocol version: an error reply, then the connection closes
        P.send_message(s, {"op": "hello", "protocol": P.PROTOCOL + 1})
        reply, _ = P.recv_message(s)
        assert reply["error"]["type"] == "ProtocolError"
        assert f"protocol {P.PROTOCOL + 1} is not spoken" in reply["error"]["message"]
        assert "F_SEAL_SHRINK" not in reply["error"]["message"]  # no upgrade note for a newer client
        assert P.recv_message(s) is None
    with _raw(sock) as s:  # a protocol-1 client (unsealed memfds) is told what changed
        P.send_message(s, {"op": "hello", "protocol": 1})
        reply, _ = P.recv_message(s)
        message = reply["error"]["message"]
        assert "protocol 1 is not spoken" in message and "protocol 2: " in message and "F_SEAL_SHRINK" in message
        assert P.recv_message(s) is None


@pytest.mark.skipif(os.getuid() != 0, reason="needs root to connect as another user")
def test_peer_of_another_uid_is_refused(runtime, monkeypatch):
    import shutil
    import tempfile

    d = Path(tempfile.mkdtemp(prefix="fc-peer-", dir="/tmp"))  # pytest's own tmp is closed to other users
    os.chmod(d, 0o711)
    sock = d / "serve.sock"
    monkeypatch.setenv("FACECOMP_SERVER_SOCKET", str(sock))
    client = connect(timeout=30)
    try:
        os.chmod(sock, 0o666)  # open the file system's door: SO_PEERCRED is what must refuse now
        pid = os.fork()
        if pid == 0:  # the child: become nobody, connect, report what came back
            code = 3
            try:
                os.setgid(65534)
                os.setuid(65534)
                s = _raw(sock)
            except Exception as exc:
                os.write(2, f"child: {exc!r}\n".encode())
                os._exit(2)
            try:
                P.send_message(s, {"op": "hello", "protocol": P.PROTOCOL})
                code = 0 if P.recv_message(s) is None else 1
            except (BrokenPipeError, ConnectionResetError):
                code = 0  # closed before it could even ask
            except Exception:
                code = 4
            os._exit(code)
        _, status = os.waitpid(pid, 0)
        assert os.waitstatus_to_exitcode(status) == 0, "the other uid's connection was not closed unanswered"
        os.chmod(sock, 0o600)
        assert client.stats()["ok"]
        assert "refused a connection from uid 65534" in (d / "serve.log").read_text()
    finally:
        client.shutdown()
        shutil.rmtree(d, ignore_errors=True)


def test_four_concurrent_clients(runtime):
    """Four clients (a host's render threads) at once, each getting exactly the in-process frames."""
    rng = np.random.default_rng(1)
    frames = [rng.integers(0, 256, (144, 200, 4), dtype=np.uint8) for _ in range(4)]
    local = _in_process_session({}, None, "concurrent")
    refs = [local.render(f, i, i / 25).pixels for i, f in enumerate(frames)]
    first = connect(timeout=30)
    sid = first.open_clip(None, {}, clip_id="concurrent")
    results: dict[int, list] = {}
    errors = []

    def worker(k: int) -> None:
        try:
            with connect(timeout=30) as c:
                assert c.pid == first.pid
                assert c.open_clip(None, {}, clip_id="concurrent") == sid
                got = []
                for n in range(6):
                    i = (k + n) % 4
                    pixels, _ = c.render(sid, frames[i], i, i / 25)
                    got.append((i, pixels))
                results[k] = got
        except Exception as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=worker, args=(k,)) for k in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert not errors, errors
    assert len(results) == 4
    for got in results.values():
        for i, pixels in got:
            assert np.array_equal(pixels, refs[i])
    stats = first.stats()
    assert stats["frames"] == 24 and stats["sessions"] == 1
    # the zero-copy path: the frame is written into the client's memfd and stamped there in place
    buf = first.frame_buffer(frames[2].shape, np.uint8)
    buf[...] = frames[2]
    out, _ = first.render(sid, buf, 2, 2 / 25)
    assert out is buf and np.array_equal(buf, refs[2])
    first.close()
    local.close()


def _render_msg(**over) -> dict:
    msg = {"op": "render", "session": "s", "index": 0, "time": 0.0, "full": [64, 48], "window": [0, 0, 64, 48],
           "dtype": "uint8", "channels": 4, "alpha": "straight", "stride": 256}
    msg.update(over)
    return msg


BAD_FIELDS = {
    "index": [-2**40, 2**40, 1.5, "3", None, True, [1]],
    "time": ["0", None, [0], {"a": 1}, 1e300],
    "full": [[64], [64, 48, 1], [0, 48], [64, -1], [10**9, 48], "64x48", [64.0, 48], [True, 48]],
    "window": [[0, 0, 65, 48], [0, 0, 0, 48], [10, 0, 5, 48], [-1, 0, 64, 48], [0, 0, 64], None, [0, 0, 64, 49]],
    "dtype": ["float64", "int8", 1, None, "UINT8", "uint8 "],
    "channels": [1, 2, 5, 0, -4, "4", 3.0, True],
    "alpha": ["pre", "", None, 0, "STRAIGHT"],
    "stride": [0, 255, 1, -256, 2**50, "256", 257.0],
    "session": [1, None, [], "x" * 5000, "a\x00b"],
    "extra": [1, "x"],
}


def test_fuzz_random_and_hostile_messages(runtime):
    """Thousands of random, truncated and hostile messages: each gets an error reply or a closed
    connection, and the server keeps serving (and holds no client memory afterwards)."""
    rng = random.Random(7)
    client = connect(timeout=30)
    pid = client.pid
    sid = client.open_clip(None, {}, clip_id="fuzz")
    sock_path = runtime / "facecomp" / "serve.sock"
    good = np.zeros((144, 200, 4), np.uint8)
    small_fd, _ = P.new_shared(100)  # far too small for any window
    pipe_r, pipe_w = os.pipe()
    counts = {"error": 0, "closed": 0}

    def fresh() -> socket.socket:
        s = _raw(sock_path)
        _hello(s)
        return s

    s = fresh()
    try:
        for n in range(3000):
            kind = rng.random()
            fds: tuple[int, ...] = ()
            framing = truncate = False
            if kind < 0.3:  # random bytes in a valid frame
                body = bytes(rng.getrandbits(8) for _ in range(rng.randint(1, 64)))
                data = struct.pack("<I", len(body)) + body
            elif kind < 0.45:  # valid JSON, wrong shape or op
                obj = rng.choice([[], 1, "render", None, {"op": 5}, {"op": "rendr"}, {"op": None},
                                  {"op": "hello", "protocol": "1"}, {"op": "open", "settings": []},
                                  {"op": "open", "settings": {"label_scale": "big"}},
                                  {"op": "open", "settings": {"no_such_key": 1}},
                                  {"op": "open", "settings": {}, "clip": 5},
                                  {"op": "close", "session": 7}, {"op": "stats", "x": 1},
                                  {"op": "render", "session": sid}, [[[[[[[[]]]]]]]]])
                body = json.dumps(obj).encode()
                data = struct.pack("<I", len(body)) + body
            elif kind < 0.55:  # non-standard JSON, deep nesting, huge numbers
                body = rng.choice([b'{"op": NaN}', b'{"op": "stats", "x": Infinity}', b"[" * 100000,
                                   b'{"op":"render","index":' + b"9" * 5000 + b"}", b"\xff\xfe{}",
                                   b'{"op": "stats"', b"{}" * 10, b" "])
                data = struct.pack("<I", len(body)) + body
            elif kind < 0.9:  # a render with one bad field, or bad fds
                key = rng.choice(list(BAD_FIELDS))
                msg = _render_msg(session=sid)
                if key == "extra":
                    msg["extra"] = rng.choice(BAD_FIELDS["extra"])
                else:
                    msg[key] = rng.choice(BAD_FIELDS[key])
                fd_kind = rng.random()
                if key == "extra" or fd_kind < 0.25:
                    fds = (small_fd,)  # too small even when the fields are right
                    if key != "extra" and fd_kind < 0.12:
                        msg = _render_msg(session=sid)
                elif fd_kind < 0.4:
                    fds = (pipe_r,)
                    msg = _render_msg(session=sid)
                elif fd_kind < 0.5:
                    msg = _render_msg(session=sid)  # right fields, no fd
                elif fd_kind < 0.55:
                    fds = (small_fd, small_fd)
                    msg = _render_msg(session=sid)
                else:
                    fds = (small_fd,)
                body = json.dumps(msg).encode()
                data = struct.pack("<I", len(body)) + body
            else:  # framing violations: the connection is closed
                framing = True
                choice = rng.randrange(4)
                if choice == 3:  # more fds than a request may carry: the kernel truncates, we close
                    body = json.dumps(_render_msg(session=sid)).encode()
                    data = struct.pack("<I", len(body)) + body
                    fds = (small_fd,) * (P.MAX_FDS + 2)
                elif choice == 0:
                    data = struct.pack("<I", P.MAX_MESSAGE + rng.randint(1, 2**31))
                elif choice == 1:
                    data = struct.pack("<I", 0)
                else:
                    body = b'{"op": "stats"}'
                    data = struct.pack("<I", len(body) + rng.randint(1, 50)) + body[:rng.randint(0, len(body))]
                    truncate = True
            if fds:
                s.sendmsg([data], [(socket.SOL_SOCKET, socket.SCM_RIGHTS, __import__("array").array("i", fds))])
            else:
                s.sendall(data)
            if truncate:
                s.shutdown(socket.SHUT_WR)  # truncated: the rest never comes
            try:
                got = P.recv_message(s)
            except (P.FramingError, ConnectionResetError):  # reset: closed with our bytes still unread
                got = None
            if got is not None and not framing:
                reply, rfds = got
                assert not rfds
                assert reply["ok"] is False, (n, data[:200], reply)
                assert set(reply["error"]) == {"type", "message", "exit_code"}
                counts["error"] += 1
                continue
            if got is not None:  # a framing error may be answered before the close
                assert got[0]["ok"] is False
                try:
                    assert P.recv_message(s) is None
                except ConnectionResetError:
                    pass
            counts["closed"] += 1
            s.close()
            s = fresh()
        assert counts["error"] > 2000 and counts["closed"] > 100, counts
        # still serving: a valid render on a fresh connection
        pixels, _ = client.render(sid, good, 0, 0.0)
        assert pixels.shape == good.shape and not np.array_equal(pixels, good)
    finally:
        s.close()
        os.close(small_fd)
        os.close(pipe_r)
        os.close(pipe_w)
    assert client.stats()["pid"] == pid and _alive(pid)
    client.close()
    deadline = time.monotonic() + 5
    while _memfd_maps(pid) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert _memfd_maps(pid) == [], "the server still holds client memory after every connection closed"


def _unsealed_memfd(frame: np.ndarray, *, sealable: bool = True) -> int:
    """A memfd holding ``frame`` as a protocol-1 client made it: sized, not sealed against shrinking
    (``sealable=False``: created without MFD_ALLOW_SEALING, so it never can be)."""
    fd = os.memfd_create("unsealed", os.MFD_CLOEXEC | (os.MFD_ALLOW_SEALING if sealable else 0))
    os.ftruncate(fd, frame.nbytes)
    os.pwrite(fd, frame.tobytes(), 0)
    return fd


def _render_frame_msg(sid: str, frame: np.ndarray, index: int = 0) -> dict:
    h, w, c = frame.shape
    dtype = next(k for k, v in P.DTYPES.items() if v == frame.dtype)
    return _render_msg(session=sid, index=index, full=[w, h], window=[0, 0, w, h], dtype=dtype, channels=c,
                       stride=w * c * frame.dtype.itemsize)


def _assert_refused_unsealed(reply: dict) -> None:
    assert reply["ok"] is False and reply["error"]["type"] == "ProtocolError", reply
    message = reply["error"]["message"]
    assert "F_SEAL_SHRINK" in message and "MFD_ALLOW_SEALING" in message and "F_ADD_SEALS" in message, message


def test_shared_memory_that_could_shrink_is_refused_and_the_server_keeps_serving(runtime, tmp_path):
    """Render memory the client could still shrink (an unsealed memfd, one that cannot be sealed, a tmpfs
    file, a disk file) is refused with what to do, untouched; the next sealed request is served, on the
    same connection and on another."""
    rng = np.random.default_rng(11)
    frame = rng.integers(0, 256, (120, 160, 4), dtype=np.uint8)
    local = _in_process_session({}, None, "seals")
    ref = local.render(frame, 0, 0.0).pixels
    local.close()
    client = connect(timeout=30)
    pid = client.pid
    sid = client.open_clip(None, {}, clip_id="seals")
    kinds = {"unsealed memfd": _unsealed_memfd(frame), "unsealable memfd": _unsealed_memfd(frame, sealable=False)}
    with open(tmp_path / "frame.raw", "w+b") as f:  # a file on disk: no seals at all
        kinds["disk file"] = os.dup(f.fileno())
    if os.path.isdir("/dev/shm") and os.access("/dev/shm", os.W_OK):  # tmpfs, but not a memfd: F_SEAL_SEAL
        shm = Path("/dev/shm") / f"facecomp-test-{os.getpid()}"
        kinds["/dev/shm file"] = os.open(shm, os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
        shm.unlink()
    for name in ("disk file", "/dev/shm file"):
        if name in kinds:
            os.ftruncate(kinds[name], frame.nbytes)
            os.pwrite(kinds[name], frame.tobytes(), 0)
    try:
        with _raw(client.socket_path) as s:
            _hello(s)
            for name, fd in kinds.items():
                if "memfd" in name:
                    assert not fcntl.fcntl(fd, P.F_GET_SEALS) & P.F_SEAL_SHRINK
                P.send_message(s, _render_frame_msg(sid, frame), (fd,))
                reply, _ = P.recv_message(s)
                _assert_refused_unsealed(reply)
                assert os.pread(fd, frame.nbytes, 0) == frame.tobytes(), f"{name}: the server wrote into it"
            fd = _memfd_frame(frame)  # sealed: served on the same connection
            try:
                P.send_message(s, _render_frame_msg(sid, frame), (fd,))
                reply, _ = P.recv_message(s)
                assert reply["ok"], reply
                got = np.frombuffer(os.pread(fd, frame.nbytes, 0), np.uint8).reshape(frame.shape)
                assert np.array_equal(got, ref)
            finally:
                os.close(fd)
        pixels, _ = client.render(sid, frame, 0, 0.0)  # and on another connection
        assert np.array_equal(pixels, ref)
        stats = client.stats()
        assert stats["pid"] == pid and stats["frames"] == 2 and _alive(pid)
    finally:
        P.close_fds(kinds.values())
        client.close()


def test_a_client_that_shrinks_its_memory_cannot_crash_the_server(runtime):
    """The SIGBUS attack: memory shrunk under the server's mapping. A sealed memfd cannot shrink (EPERM),
    between requests either, while the server keeps its mapping; growing still works. An unsealed memfd
    shrunk right after it was sent, while the server would map and render it, killed the server with
    SIGBUS before the seal check; now it is refused and the server answers the next request."""
    rng = np.random.default_rng(12)
    frames = [rng.random((96, 128, 4), dtype=np.float32) for _ in range(3)]
    local = _in_process_session({}, None, "shrink")
    refs = [local.render(f, i, i / 25).pixels for i, f in enumerate(frames)]
    local.close()
    client = connect(timeout=30)
    pid = client.pid
    sid = client.open_clip(None, {}, clip_id="shrink")
    nbytes = frames[0].nbytes
    fd, mm = P.new_shared(nbytes)
    try:
        assert fcntl.fcntl(fd, P.F_GET_SEALS) & P.F_SEAL_SHRINK
        view = np.ndarray(frames[0].shape, np.float32, buffer=mm)
        with _raw(client.socket_path) as s:
            _hello(s)

            def render(i: int) -> None:
                view[:] = frames[i]
                P.send_message(s, _render_frame_msg(sid, frames[i], i) | {"time": i / 25}, (fd,))
                reply, _ = P.recv_message(s)
                assert reply["ok"], reply
                assert np.array_equal(view, refs[i]), f"frame {i}"

            render(0)
            for size in (0, nbytes - 4096, nbytes - 1):  # the client tries to shrink it between requests
                with pytest.raises(OSError) as err:
                    os.ftruncate(fd, size)
                assert err.value.errno == errno.EPERM
            assert os.fstat(fd).st_size == nbytes
            render(1)  # the server's kept mapping of this memfd is still backed to its end
            os.ftruncate(fd, 2 * nbytes)  # growing is what the seal allows
            render(2)

            # the attack itself, on a large frame the server takes a while to render
            big = np.full((1080, 1920, 4), 0.5, np.float32)
            for n, delay in enumerate((0.03, 0.1, 0.01, 0.002, 0.0)):  # first: after the server mapped it
                ufd = _unsealed_memfd(big)
                try:
                    P.send_message(s, _render_frame_msg(sid, big, n), (ufd,))
                    time.sleep(delay)
                    os.ftruncate(ufd, 0)
                finally:
                    os.close(ufd)
                got = P.recv_message(s)
                assert got is not None, f"the server closed the connection: {_fate(pid)}"
                _assert_refused_unsealed(got[0])
        assert _alive(pid)
        stats = client.stats()
        assert stats["pid"] == pid and stats["frames"] == 3
    finally:
        mm.close()
        os.close(fd)
        client.close()


CHILD = textwrap.dedent("""
    import os, signal, sys, json, struct
    import numpy as np
    from facecomp.server import connect, protocol as P
    c = connect(start=False, timeout=10)
    sid = c.open_clip(None, {}, clip_id="victim")
    frame = np.ones((1080, 1920, 4), np.float32) * 0.5
    fd, mm = P.new_shared(frame.nbytes)
    np.ndarray(frame.shape, frame.dtype, buffer=mm)[:] = frame
    msg = {"op": "render", "session": sid, "index": 0, "time": 0.0, "full": [1920, 1080],
           "window": [0, 0, 1920, 1080], "dtype": "float32", "channels": 4, "alpha": "straight",
           "stride": 1920 * 16}
    sock = c._sock
    if sys.argv[1] == "half":
        body = json.dumps(msg).encode()
        sock.sendmsg([struct.pack("<I", len(body)) + body[:20]],
                     [(__import__("socket").SOL_SOCKET, __import__("socket").SCM_RIGHTS,
                       __import__("array").array("i", [fd]))])
    else:
        P.send_message(sock, msg, (fd,))
    print("sent", flush=True)
    os.kill(os.getpid(), signal.SIGKILL)
""")


def test_client_killed_mid_request_leaves_the_server_serving(runtime):
    client = connect(timeout=30)
    pid = client.pid
    for mode in ("full", "half"):
        before = client.stats()["frames"]
        child = subprocess.run([sys.executable, "-c", CHILD, mode], capture_output=True, text=True, timeout=60)
        assert child.returncode == -signal.SIGKILL and "sent" in child.stdout, child.stderr
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline and (client.stats()["connections"] > 1 or _memfd_maps(pid)):
            time.sleep(0.05)
        stats = client.stats()
        assert stats["connections"] == 1 and _memfd_maps(pid) == [], "the dead client's memory is still held"
        assert stats["frames"] == before + (1 if mode == "full" else 0)
    pixels, _ = client.render(client.open_clip(None, {}), np.zeros((120, 160, 3), np.uint8), 0, 0.0)
    assert pixels.any()
    client.close()


def test_server_killed_mid_request_gives_an_error_and_a_fresh_server(runtime):
    frame = np.zeros((270, 480, 4), np.float32)
    client = connect(timeout=30, request_timeout=1.0)
    other = connect(start=False, timeout=5, request_timeout=30.0)
    sid = client.open_clip(None, {})
    client.render(sid, frame, 0, 0.0)
    pid = client.pid  # after the warm-up: a reconnect during it would have moved the client to another server
    os.kill(pid, signal.SIGSTOP)  # a hung server: the request times out, no hang
    assert _wait_state(pid, "T", 5.0), "the server did not stop"
    t0 = time.monotonic()
    with pytest.raises(ServerError, match="did not answer"):
        client.render(sid, frame, 1, 0.04)
        pytest.fail(f"a stopped server answered: stopped pid {pid}, client pid {client.pid}, "
                    f"state {_state(pid)!r}, reply {client.last_reply}")
    assert time.monotonic() - t0 < 3.0
    status = _facecomp("serve", "--status")  # listening but hung: an error, not "no server"
    assert status.returncode == 1 and "did not answer 'hello'" in status.stderr, status
    result: dict = {}

    def call() -> None:
        t = time.monotonic()
        try:
            other.render(sid, frame, 2, 0.08)
        except ServerError as exc:
            result["error"] = exc
        result["s"] = time.monotonic() - t

    t = threading.Thread(target=call)
    t.start()
    time.sleep(0.3)  # the request is sent and the server (stopped) is mid-request
    os.kill(pid, signal.SIGKILL)
    t.join(10)
    assert not t.is_alive(), "the client hung"
    assert isinstance(result.get("error"), ServerError) and result["s"] < 5.0, result
    assert _wait_dead(pid, 10)
    assert (runtime / "facecomp" / "serve.sock").exists()  # the dead server's socket is left behind
    with connect(timeout=30) as fresh:  # a stale socket: replaced by a new server
        assert fresh.pid != pid and _alive(fresh.pid)
        pixels, _ = fresh.render(fresh.open_clip(None, {}), frame, 0, 0.0)
        assert pixels[..., :3].any()


def test_close_all_leaves_a_rendering_session_to_finish_its_render():
    """Shutdown's close_all while a render holds its session: that render goes on and is stamped, and the
    session closes when it ends (close_all closed it under the render: the client got an error)."""
    import logging

    from facecomp.disclosure.label import Label, LabelSettings
    from facecomp.effect import Engine
    from facecomp.errors import SettingsError
    from facecomp.server.server import SessionCache
    from mediagen import pattern

    engine = Engine()
    cache = SessionCache(8, 0, logging.getLogger("facecomp.test"))
    rendering = cache.open(("clip", "s", "a"), lambda: (engine.open_clip(None, "a"), None, None, None))
    idle = cache.open(("clip", "s", "b"), lambda: (engine.open_clip(None, "b"), None, None, None))
    entry = cache.acquire(rendering.id)  # what the server does before it renders
    cache.close_all()
    frame = pattern(96, 128, 0)
    stamped = entry.session.render(frame, 0, 0.0)
    x0, y0, x1, y1 = Label(LabelSettings()).layout(96, 128).box
    assert not np.array_equal(stamped.pixels[y0:y1, x0:x1], frame[y0:y1, x0:x1])  # labelled
    with pytest.raises(SettingsError, match="closed"):
        idle.session.render(frame, 0, 0.0)  # an idle session is closed at once
    with pytest.raises(SessionNotFoundError):
        cache.acquire(rendering.id)  # nothing new begins on a closing session
    cache.release(entry)  # the render ends: now its session closes
    with pytest.raises(SettingsError, match="closed"):
        entry.session.render(frame, 1, 0.04)


def test_idle_timeout_stops_the_server(runtime):
    client = connect(timeout=30, idle_timeout=1.0)
    pid = client.pid
    sid = client.open_clip(None, {}, clip_id="idle")
    assert _wait_dead(pid, 15), "the idle server did not stop"
    assert not (runtime / "facecomp" / "serve.sock").exists()
    assert "idle for 1" in (runtime / "facecomp" / "serve.log").read_text()
    # the client kept its connection: its next call starts a new server and opens the session there
    frame = np.zeros((120, 160, 3), np.uint8)
    pixels, _ = client.render(sid, frame, 0, 0.0)
    assert client.pid != pid and _alive(client.pid) and pixels.any()
    assert client.stats()["sessions"] == 1
    client.shutdown()
    assert _wait_dead(client.pid, 10)


def test_session_cap_evicts_least_recently_used(runtime):
    proc = _start("--max-sessions", "2")
    try:
        with connect(start=False, timeout=5) as client:
            frame = np.zeros((120, 160, 3), np.uint8)
            a = client.open_clip(None, {}, clip_id="a")
            b = client.open_clip(None, {}, clip_id="b")
            client.render(a, frame, 0, 0.0)  # a is now the most recent
            c = client.open_clip(None, {}, clip_id="c")
            stats = client.stats()
            assert stats["sessions"] == 2 and stats["evicted"] == 1
            with _raw(runtime / "facecomp" / "serve.sock") as s:
                _hello(s)
                fd = _memfd_frame(frame)
                try:
                    P.send_message(s, _render_msg(session=b, full=[160, 120], window=[0, 0, 160, 120], channels=3,
                                                  stride=480), (fd,))
                finally:
                    os.close(fd)
                reply, _ = P.recv_message(s)
                assert reply["error"]["type"] == "SessionNotFoundError"
            # the client opens an evicted session again by itself
            pixels, _ = client.render(b, frame, 0, 0.0)
            assert pixels.any()
            assert client.stats()["evicted"] == 2  # b came back, so a (least recent) went
            client.render(c, frame, 0, 0.0)
    finally:
        proc.kill()
        proc.wait()
    proc = _start("--memory-mb", "1")  # below any real process: every idle session but the newest goes
    try:
        with connect(start=False, timeout=5) as client:
            for k in range(3):
                client.open_clip(None, {}, clip_id=f"m{k}")
            assert client.stats()["sessions"] == 1
    finally:
        proc.kill()
        proc.wait()


def test_cli_status_stop_and_single_instance(runtime):
    sock = runtime / "facecomp" / "serve.sock"
    (runtime / "facecomp").mkdir(mode=0o700)
    stale = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    stale.bind(str(sock))  # a socket file nobody listens on
    stale.close()
    r = _facecomp("serve", "--status")
    assert r.returncode == 1 and "no facecomp server is running" in r.stdout
    proc = _start("--idle-timeout", "60", "--message-timeout", "1")
    try:
        with connect(start=False, timeout=5) as client:
            client.render(client.open_clip(None, {}), np.zeros((120, 160, 3), np.uint8), 0, 0.0)
            pid = client.pid
        with _raw(sock) as s:  # a message that stalls half way through its header is cut off
            _hello(s)
            s.sendall(b"\x10\x00")
            t0 = time.monotonic()
            reply, _ = P.recv_message(s)
            assert reply["error"]["type"] == "FramingError" and "within 1 s" in reply["error"]["message"]
            assert P.recv_message(s) is None and time.monotonic() - t0 < 5
        again = _facecomp("serve")
        assert again.returncode == 1 and "already running" in again.stderr and f"pid {pid}" in again.stderr
        r = _facecomp("serve", "--status", "--json")
        assert r.returncode == 0, r.stderr
        st = json.loads(r.stdout)
        assert st["running"] and st["pid"] == pid and st["socket"] == str(sock)
        assert st["sessions"] == 1 and st["frames"] == 1 and st["mean_ms"] > 0 and st["rss_mb"] > 10
        text = _facecomp("serve", "--status").stdout
        assert f"pid {pid}" in text and "frames served 1" in text and "mean latency" in text
        r = _facecomp("serve", "--stop")
        assert r.returncode == 0 and f"pid {pid}" in r.stdout
        assert proc.wait(10) == 0
        assert not sock.exists()
        assert _facecomp("serve", "--stop").returncode == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
