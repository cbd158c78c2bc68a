"""The extension's decisions as pure functions (no bpy): testable outside Blender, and the operators stay
thin. Strip fields are passed in as plain numbers so the same code serves Blender 4.2 to 5.0.
"""

from __future__ import annotations

import math
import struct

# Strip colour tag for baked results (Blender's COLOR_01 is red in the default theme).
SYNTHETIC_COLOR_TAG = "COLOR_01"


def strip_collection(editor):
    """Top-level strips: ``strips`` in Blender 5.0, ``sequences`` in 4.2 to 4.5."""
    return editor.strips if hasattr(editor, "strips") else editor.sequences


def all_strips(editor):
    """Every strip, inside meta strips too: ``strips_all`` (5.0) or ``sequences_all`` (4.x)."""
    return editor.strips_all if hasattr(editor, "strips_all") else editor.sequences_all


def f32(value: float) -> float:
    """``value`` rounded to a C ``float``: Blender's sequencer computes frame positions in single precision,
    and a frame that lands on a rounding boundary is only predicted right with the same arithmetic."""
    return struct.unpack("f", struct.pack("f", value))[0]


def round_fl_to_int(value: float) -> int:
    """Blender's ``round_fl_to_int``: ``floorf(a + 0.5f)``."""
    return int(math.floor(f32(f32(value) + 0.5)))


class Timing:
    """How a movie strip maps timeline frames to its media, in Blender's own terms (``Strip::start``,
    ``len``, the playback-rate factor, reverse, strobe, a uniform retiming).

    ``start`` is where content frame 0 sits; ``content_frames`` the media frames between the animation
    offsets (``len``); ``anim_start`` the animation start offset (media frame of content frame 0);
    ``factor`` the media-to-scene playback rate (1 unless Blender adjusts the strip's rate);
    ``retimed_length`` the timeline length of a strip retimed by its two end keys (None: not retimed)."""

    __slots__ = ("anim_start", "content_frames", "factor", "retimed_length", "reverse", "start", "strobe")

    def __init__(self, start, content_frames, anim_start=0, factor=1.0, reverse=False, strobe=1.0,
                 retimed_length=None):
        self.start, self.content_frames, self.anim_start = float(start), int(content_frames), int(anim_start)
        self.factor, self.reverse, self.strobe = f32(factor), bool(reverse), float(strobe)
        self.retimed_length = None if retimed_length is None else int(retimed_length)

    def length(self) -> int:
        """The strip's timeline length before its handles (``Strip::length``)."""
        if self.retimed_length is not None:
            return self.retimed_length
        return int(f32(self.content_frames / self.factor))

    def content_index(self, timeline_frame: int) -> float:
        """``give_frame_index`` of Blender 5.0: the content frame (float) shown at ``timeline_frame``."""
        sta = f32(self.start)
        end = f32(f32(sta + self.length()) - 1.0)
        if end < sta:
            return -1.0
        index = f32(end - timeline_frame) if self.reverse else f32(timeline_frame - sta)
        index = f32(max(index, 0.0) * self.factor)
        if self.retimed_length is not None:
            # two keys: content 0 at the start, the content's end (len) at the last key
            factor = min(1.0, f32(f32(1.0 / self.retimed_length) * index))  # the segment step is a float
            index = f32(factor * self.content_frames)
        index = min(max(index, 0.0), float(self.content_frames - 1))
        if self.strobe > 1.0:
            index = f32(index - math.fmod(index, self.strobe))
        return index

    def media_frame(self, timeline_frame: int) -> int:
        """The media frame Blender decodes for ``timeline_frame`` (the movie reader rounds the index)."""
        return round_fl_to_int(self.content_index(timeline_frame)) + self.anim_start

    def shown(self, first: int, end: int) -> list:
        """Media frames Blender shows at timeline frames ``first .. end - 1`` (the strip's handles) when it
        renders or plays them in order.

        Blender 5.0 decodes the rounded content index but keys its source-image cache on the truncated
        one, so a frame whose truncated index was already shown reuses that earlier picture (with 12.5 fps
        media in a 25 fps scene: 0, 0, 1, 1, ... and not the rounded 0, 1, 1, 2, ...)."""
        cache, frames = {}, []
        for t in range(int(first), int(end)):
            index = self.content_index(t)
            key = int(index) + self.anim_start
            if key not in cache:
                cache[key] = round_fl_to_int(index) + self.anim_start
            frames.append(cache[key])
        return frames


def is_consecutive(frames) -> bool:
    """One media frame per timeline frame, in order: a plain movie clip can hold the result."""
    return all(b == a + 1 for a, b in zip(frames, frames[1:]))


def free_channel_above(occupied: list[tuple[int, int, int]], channel: int, start: int, end: int,
                       max_channel: int = 128) -> int:
    """The first channel above ``channel`` with nothing in ``[start, end)``; ``occupied`` holds
    ``(channel, final_start, final_end)`` of the existing strips."""
    for ch in range(channel + 1, max_channel + 1):
        if not any(c == ch and s < end and start < e for c, s, e in occupied):
            return ch
    raise ValueError(f"no free channel above {channel} for frames {start}..{end}")


def setting_value(entry: dict, kind: str, value, abspath=lambda p: p):
    """A widget's value as the settings file wants it (``None`` = not set: the engine's default).

    ``entry`` is one of ``facecomp.spec.blender_properties()`` (``values`` maps enum items to settings
    values, ``none_value`` is the widget value that means "automatic"); ``kind`` the parameter's kind."""
    if "values" in entry:
        return entry["values"][value]
    if "none_value" in entry and value == entry["none_value"]:
        return None
    if kind == "paths":
        parts = [abspath(v.strip()) for v in str(value).split(";") if v.strip()]
        return parts or None
    if kind == "path":
        return abspath(value) if value else None
    if kind == "options":
        opts = {}
        for item in str(value).split(";"):
            if item.strip():
                key, sep, val = item.strip().partition("=")
                if not sep or not key:
                    raise ValueError(f"{entry['name']}: expected KEY=VALUE, got {item.strip()!r}")
                opts[key] = val
        return opts or None
    return value


def settings_values(properties, kinds: dict, read, abspath=lambda p: p) -> dict:
    """``{key: value}`` for every generated property, read through ``read(name)``."""
    out = {}
    for entry in properties:
        v = setting_value(entry, kinds[entry["name"]], read(entry["name"]), abspath)
        if v is not None:
            out[entry["name"]] = v
    return out


def progress_percent(done_strips: int, total_strips: int, fraction: float) -> float:
    """Overall progress of a run over several strips, 0..100."""
    if total_strips <= 0:
        return 100.0
    return 100.0 * (done_strips + max(0.0, min(1.0, fraction))) / total_strips
