"""The one atomic-write helper: a temp file beside the target, fsync, rename; the umask's mode.

Why one helper: every small file facecomp writes (manifests, settings, job and queue state, track JSON,
C2PA configs) must appear whole or not at all, and with the same permissions the user's media gets
(``tempfile.mkstemp`` alone leaves 0600, so a sidecar would be unreadable to the colleague who can read
the video).
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path


def current_umask() -> int:
    """The process umask, read without changing it where the OS allows (``os.umask`` is process-wide)."""
    try:
        with open("/proc/self/status", encoding="ascii") as f:
            for line in f:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def atomic_write(path: str | os.PathLike, data: bytes | str, *, mode: int | None = None,
                 encoding: str = "utf-8") -> Path:
    """Write ``data`` to ``path`` atomically; ``mode`` defaults to 0666 minus the umask, like ``open``.

    Raises ``OSError`` (the caller names the file in its own typed error).
    """
    dest = Path(path)
    payload = data.encode(encoding) if isinstance(data, str) else bytes(data)
    fd, tmp = tempfile.mkstemp(prefix=f".{dest.name}.", suffix=".tmp", dir=dest.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(payload)
            f.flush()
            os.fsync(f.fileno())
            os.fchmod(f.fileno(), (0o666 & ~current_umask()) if mode is None else mode)
        os.replace(tmp, dest)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise
    return dest
