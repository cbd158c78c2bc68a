"""One file hash for the whole project: models, manifests, provenance and identities all use sha256."""

from __future__ import annotations

import hashlib
import os


def sha256_file(path: str | os.PathLike, chunk: int = 1 << 20) -> str:
    """Hex sha256 of a file, read in 1 MiB blocks so large media never sits in memory."""
    with open(path, "rb") as fh:
        return sha256_stream(fh, chunk)


def sha256_stream(fh, chunk: int = 1 << 20) -> str:
    """Hex sha256 of an open binary file from its position to its end, in ``chunk`` blocks."""
    h = hashlib.sha256()
    while block := fh.read(chunk):
        h.update(block)
    return h.hexdigest()
