"""Engines and clip sessions for the server: settings as JSON in, a :class:`ClipSession` out.

One engine per distinct (settings, frame rate), so models load once however many clips use them; the
frame rate is part of the key because landmark smoothing is tuned to it.
"""

from __future__ import annotations

import hashlib
import json
import os
import threading
from collections import OrderedDict
from dataclasses import dataclass

from ..errors import SettingsError


def parse_settings(settings: dict):
    """The frozen settings object for a request's ``settings`` (refused with the key's name)."""
    from ..settings import EffectSettings

    if not isinstance(settings, dict):
        raise SettingsError(f"settings must be a JSON object, got {type(settings).__name__}")
    return EffectSettings.from_dict(settings)


def settings_key(settings) -> str:
    return json.dumps(settings.to_dict(), sort_keys=True, separators=(",", ":"))


def clip_fps(clip: str | None) -> float | None:
    if clip is None:
        return None
    from ..video.reader import VideoReader

    reader = VideoReader(clip)
    try:
        return float(reader.info.fps)
    finally:
        close = getattr(reader, "close", None)
        if callable(close):
            close()


def default_clip_id(clip: str) -> str:
    """A stable id for a clip (same file, same watermark id across server restarts): its path, size, mtime."""
    try:
        st = os.stat(clip)
        text = f"{os.path.realpath(clip)}|{st.st_size}|{st.st_mtime_ns}"
    except OSError:  # a sequence pattern (frames_%05d.png): the reader judges it
        text = clip
    return "clip-" + hashlib.sha256(text.encode("utf-8", "surrogateescape")).hexdigest()[:16]


@dataclass
class _EngineEntry:
    engine: object
    lock: threading.Lock


class EngineCache:
    """Engines by (settings, fps); built once under a per-key lock; least recently used dropped past ``limit``.

    An engine that sessions still use is never dropped from under them: they hold a reference.
    """

    def __init__(self, limit: int = 8):
        self.limit = max(1, int(limit))
        self._lock = threading.Lock()
        self._entries: OrderedDict[tuple, _EngineEntry] = OrderedDict()

    def __len__(self) -> int:
        return len(self._entries)

    def get(self, settings, key: str, fps: float | None):
        from ..effect import Engine

        k = (key, None if fps is None else round(float(fps), 6))
        with self._lock:
            entry = self._entries.get(k)
            if entry is None:
                entry = self._entries[k] = _EngineEntry(None, threading.Lock())
            self._entries.move_to_end(k)
        with entry.lock:  # two clients opening with the same settings load the models once
            if entry.engine is None:
                try:
                    entry.engine = Engine.from_settings(settings, fps=fps)
                except BaseException:
                    with self._lock:
                        if self._entries.get(k) is entry:
                            del self._entries[k]
                    raise
        with self._lock:
            while len(self._entries) > self.limit:
                self._entries.popitem(last=False)
        return entry.engine

    def clear(self) -> None:
        with self._lock:
            self._entries.clear()
