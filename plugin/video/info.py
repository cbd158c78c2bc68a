"""What facecomp knows about a video before decoding it: geometry, timing, colour, streams.

Everything here is read from the container and the first decoded frame, and carried to the output so
that a render changes only pixels (and adds the disclosure), never timing, orientation or colour tags.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field, asdict
from fractions import Fraction

from ..sequences import is_sequence_pattern, sequence_display_name  # noqa: F401  (re-exported)

# Where a colour property is unspecified, FFmpeg's numbering for "unspecified".
UNSPECIFIED = 2


@dataclass(frozen=True)
class ColorTags:
    """The four colour properties an encoder tags, in FFmpeg's numbering (AVColor*)."""

    primaries: int = UNSPECIFIED
    transfer: int = UNSPECIFIED
    matrix: int = UNSPECIFIED
    range: int = 0  # 0 unspecified, 1 tv/limited ("MPEG"), 2 pc/full ("JPEG")

    def matrix_for_conversion(self, height: int) -> int:
        """The YUV<->RGB matrix to convert with: the tagged one, else BT.709 for HD and BT.601 for SD."""
        if self.matrix not in (UNSPECIFIED, 0, 3):
            return self.matrix
        return 1 if height >= 720 else 5

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass(frozen=True)
class StreamInfo:
    """A non-video stream that is carried to the output (audio, subtitles, data)."""

    index: int
    type: str
    codec: str | None
    language: str | None = None


@dataclass(frozen=True)
class VideoInfo:
    path: str
    container: str
    codec: str
    width: int  # coded
    height: int
    pix_fmt: str
    bit_depth: int
    has_alpha: bool
    fps: Fraction  # average frame rate (nominal for VFR)
    time_base: Fraction
    frame_count: int  # exact: counted from the packet index
    duration_s: float
    rotation: int  # counter-clockwise degrees to apply for display (FFmpeg display matrix), multiple of 90
    timecode: str | None
    color: ColorTags
    vfr: bool
    is_sequence: bool = False
    streams: tuple[StreamInfo, ...] = field(default_factory=tuple)
    metadata: dict = field(default_factory=dict)
    # what the container's header (or, for a sequence, the files on disk) says the stream holds, when that
    # is more than the packets that can be read: a truncated download, a sequence with a missing frame
    announced_frames: int | None = None

    @property
    def missing_frames(self) -> int:
        """Frames the header announces that no packet carries (0 for an intact file)."""
        return max(0, (self.announced_frames or 0) - self.frame_count)

    @property
    def display_size(self) -> tuple[int, int]:
        """(width, height) as shown to the viewer, after the display rotation."""
        if self.rotation % 180:
            return self.height, self.width
        return self.width, self.height

    def to_dict(self) -> dict:
        d = asdict(self)
        d["fps"] = str(self.fps)
        d["time_base"] = str(self.time_base)
        return d


def parse_timecode(tc: str, fps: Fraction) -> int:
    """``HH:MM:SS:FF`` (``;`` for drop-frame) -> frame number at ``fps``."""
    m = re.fullmatch(r"(\d+):(\d\d):(\d\d)[:;.](\d+)", tc.strip())
    if not m:
        raise ValueError(f"not a timecode: {tc!r} (expected HH:MM:SS:FF)")
    h, mi, s, f = (int(x) for x in m.groups())
    nominal = round(fps)
    frames = ((h * 60 + mi) * 60 + s) * nominal + f
    if ";" in tc and nominal in (30, 60):
        drop = 2 if nominal == 30 else 4
        total_minutes = h * 60 + mi
        frames -= drop * (total_minutes - total_minutes // 10)
    return frames


def format_timecode(frame: int, fps: Fraction, drop: bool = False) -> str:
    """Frame number -> ``HH:MM:SS:FF`` (drop-frame with ``;`` for 29.97/59.94 when ``drop``)."""
    nominal = round(fps)
    if drop and nominal in (30, 60):
        d = 2 if nominal == 30 else 4
        per_10min = nominal * 600 - d * 9
        per_min = nominal * 60 - d
        tens, rem = divmod(frame, per_10min)
        if rem > d:
            frame += d * 9 * tens + d * ((rem - d) // per_min)
        else:
            frame += d * 9 * tens
    f = frame % nominal
    s = (frame // nominal) % 60
    m = (frame // (nominal * 60)) % 60
    h = frame // (nominal * 3600)
    sep = ";" if drop else ":"
    return f"{h:02d}:{m:02d}:{s:02d}{sep}{f:02d}"


def offset_timecode(tc: str, frames: int, fps: Fraction) -> str:
    """The timecode ``frames`` later than ``tc`` (keeps drop-frame notation)."""
    drop = ";" in tc
    return format_timecode(parse_timecode(tc, fps) + frames, fps, drop)


def av_reason(exc: BaseException) -> str:
    """FFmpeg's complaint as a phrase: no errno number, no repeated path ("invalid data found ...").

    PyAV errors read ``[Errno 1094995529] Invalid data found when processing input: 'x.mkv'``; callers put
    the phrase into a sentence that already names the file.
    """
    text = getattr(exc, "strerror", None) or str(exc)
    text = str(text).strip()
    text = re.sub(r"^\[Errno -?\d+\]\s*", "", text)
    filename = getattr(exc, "filename", None)
    if filename:
        text = text.replace(f": {filename!r}", "").replace(f": '{filename}'", "")
    text = re.sub(r":\s*'[^']*'$", "", text)
    return text[:1].lower() + text[1:] if text else type(exc).__name__
