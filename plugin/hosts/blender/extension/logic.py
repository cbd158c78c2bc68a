"""The extension's decisions as pure functions (no bpy): testable outside Blender, and the operators stay
thin. Strip fields are passed in as plain numbers so the same code serves Blender 4.2 to 5.0.
"""

from __future__ import annotations

# Strip colour tag for baked results (Blender's COLOR_01 is red in the default theme).
SYNTHETIC_COLOR_TAG = "COLOR_01"


def strip_collection(editor):
    """Top-level strips: ``strips`` in Blender 5.0, ``sequences`` in 4.2 to 4.5."""
    return editor.strips if hasattr(editor, "strips") else editor.sequences


def all_strips(editor):
    """Every strip, inside meta strips too: ``strips_all`` (5.0) or ``sequences_all`` (4.x)."""
    return editor.strips_all if hasattr(editor, "strips_all") else editor.sequences_all


def playback_rate(native_frames: int, frame_duration: int) -> float:
    """Source frames per timeline frame: 1 unless Blender adjusted the strip's playback rate to the scene's
    frame rate (then the strip is ``native_frames * scene_fps / strip_fps`` timeline frames long)."""
    if native_frames <= 0 or frame_duration <= 0:
        raise ValueError(f"strip has no frames (native {native_frames}, duration {frame_duration})")
    return native_frames / frame_duration


def used_source_range(frame_start: float, final_start: int, final_end: int, native_frames: int,
                      rate: float = 1.0) -> tuple[int, int]:
    """Source frames ``[a, b)`` shown by a movie strip between its handles.

    ``frame_start`` is where source frame 0 would sit on the timeline (before the offsets trim it);
    ``final_start``/``final_end`` the visible handles (end exclusive). Handles dragged past the media
    (holds) are clamped to the media's frames."""
    a = int(round((final_start - frame_start) * rate))
    b = int(round((final_end - frame_start) * rate))
    a, b = max(0, a), min(native_frames, b)
    if b <= a:
        raise ValueError(f"the strip shows no frame of its media (source frames {a}..{b})")
    return a, b


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
