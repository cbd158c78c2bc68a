"""Where the server's socket, lock and log live: a private per-user runtime directory."""

from __future__ import annotations

import os
import stat
from pathlib import Path

from .protocol import ServerError

SOCKET_ENV = "FACECOMP_SERVER_SOCKET"
SOCKET_NAME = "serve.sock"


def default_socket_path() -> Path:
    """``$FACECOMP_SERVER_SOCKET``, else ``$XDG_RUNTIME_DIR/facecomp/serve.sock``, else ``/tmp/facecomp-$UID/``."""
    override = os.environ.get(SOCKET_ENV)
    if override:
        return Path(override)
    runtime = os.environ.get("XDG_RUNTIME_DIR")
    if runtime and os.path.isdir(runtime):
        return Path(runtime) / "facecomp" / SOCKET_NAME
    return Path(f"/tmp/facecomp-{os.getuid()}") / SOCKET_NAME


def is_facecomp_dir(sock: Path) -> bool:
    """Whether the socket's directory is facecomp's own (made and kept 0700), not one the user chose."""
    return not os.environ.get(SOCKET_ENV) and Path(sock) == default_socket_path()


def lock_path(sock: Path) -> Path:
    return sock.with_suffix(".lock")


def log_path(sock: Path) -> Path:
    return sock.with_suffix(".log")


def start_log_path(sock: Path) -> Path:
    """stderr of a server started by a client (import errors and the like before logging is set up)."""
    return sock.with_suffix(".start.log")


def ensure_private_dir(directory: Path, *, own: bool = True) -> Path:
    """Create ``directory`` 0700, or check an existing one is ours and closed to others.

    Why strict: whoever can write to the directory can put their own socket where clients connect.
    ``own``: the directory is facecomp's (made 0700 if it is not); otherwise (a ``--socket`` the user
    chose) it is only checked: ours, and writable by no one else.
    """
    directory = Path(directory)
    try:
        directory.mkdir(mode=0o700, parents=True, exist_ok=True)
        st = os.lstat(directory)
    except OSError as exc:
        raise ServerError(f"cannot create the server's runtime directory: {exc.strerror}", path=directory) from None
    if stat.S_ISLNK(st.st_mode) or not stat.S_ISDIR(st.st_mode):
        raise ServerError("the server's runtime directory is a link or not a directory; refused", path=directory)
    if st.st_uid != os.getuid():
        raise ServerError(f"the server's runtime directory belongs to uid {st.st_uid}, not to you; refused",
                          path=directory)
    if own and stat.S_IMODE(st.st_mode) & 0o077:
        os.chmod(directory, 0o700)
    elif not own and stat.S_IMODE(st.st_mode) & 0o022:
        raise ServerError("the socket's directory is writable by others; choose a private one", path=directory)
    return directory
