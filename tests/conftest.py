"""Shared fixtures: the optional real-face sample folder and small generated media."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))  # tests/mediagen.py is importable from every test file

REPO = Path(__file__).resolve().parents[1]


def shared_media_dir() -> Path | None:
    env = os.environ.get("FACECOMP_SAMPLE_MEDIA")
    for cand in ([Path(env)] if env else []) + [REPO.parent / "shared" / "media"]:
        if cand.is_dir():
            return cand
    return None


@pytest.fixture(scope="session")
def shared_media() -> Path:
    """``../shared/media`` (real faces, CC BY / public domain); skips where it is absent (user machines)."""
    d = shared_media_dir()
    if d is None:
        pytest.skip("real-face sample media (../shared/media or FACECOMP_SAMPLE_MEDIA) is not present here")
    return d
