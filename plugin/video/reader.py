"""Reading video with PyAV: probing, sequential decode, and frame-accurate random access.

Frames come out as numpy arrays in *display orientation* (the display matrix applied), so faces are
upright for analysis and the label lands in the corner the viewer sees; the writer turns them back and
keeps the display matrix. Pixel types: 8-bit sources give uint8, 10/12/16-bit sources give uint16
(full 0..65535 scale), ``dtype="float32"`` gives 0..1 floats. Alpha is kept when the source has it.
"""

from __future__ import annotations

import collections
import os
import threading
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Iterator

import av
import numpy as np

from ..errors import EmptyMediaError, InvalidMediaError, NoVideoStreamError
from .info import ColorTags, StreamInfo, VideoInfo, is_sequence_pattern, av_reason

_SEQUENCE_EXTS = (".png", ".tif", ".tiff", ".exr", ".dpx", ".jpg", ".jpeg", ".bmp")
MAX_PIXELS = 8192 * 8192  # 8K square; larger frames are refused before any allocation


@dataclass(frozen=True)
class DecodedFrame:
    index: int  # 0-based position in presentation order
    pts: int | None  # in the stream's time_base
    time: float  # seconds from the stream start
    image: np.ndarray  # display orientation


def _resolve_input(path: str | os.PathLike) -> tuple[str, str | None, bool]:
    """Map a user path to (what av.open takes, forced format, is_sequence)."""
    p = Path(path)
    if is_sequence_pattern(p):
        return str(p), "image2", True
    if p.is_dir():
        files = sorted(f for f in p.iterdir() if f.suffix.lower() in _SEQUENCE_EXTS)
        if not files:
            raise InvalidMediaError("folder holds no image sequence", path=p,
                                    hint="point at a video file, or a folder of numbered PNG/TIFF frames")
        import re
        m = re.match(r"^(.*?)(\d+)(\.[^.]+)$", files[0].name)
        if not m:
            raise InvalidMediaError("cannot find a frame-number pattern in the folder's file names", path=p,
                                    hint="name frames like frame_00001.png")
        prefix, digits, ext = m.groups()
        return str(p / f"{prefix}%0{len(digits)}d{ext}"), "image2", True
    if not p.exists():
        raise InvalidMediaError("no such file", path=p, hint="check the path")
    return str(p), None, False


def _open(path: str, fmt: str | None, display: str) -> av.container.InputContainer:
    options = {}
    if fmt == "image2":
        # image2 needs the first number; find it so sequences starting at 1 or 1001 open too
        options = {"start_number": str(_sequence_files(path)[0][0])}
    try:
        return av.open(path, format=fmt, options=options)
    except av.error.EOFError as exc:
        raise EmptyMediaError("the file ends before any frame (empty or truncated)", path=display,
                              hint="re-export the clip; nothing was decoded") from exc
    except (av.error.FFmpegError, OSError, ValueError) as exc:
        raise InvalidMediaError(f"cannot be opened as media: {av_reason(exc)}", path=display,
                                hint="the file may be corrupt, truncated or not a video") from exc


def _sequence_files(pattern: str) -> list[tuple[int, Path]]:
    """(frame number, file) of every file matching a printf pattern, in frame order."""
    import re
    p = Path(pattern)
    m = re.search(r"%0?(\d*)d", p.name)
    assert m is not None
    prefix, suffix = p.name[: m.start()], p.name[m.end():]
    found = []
    for f in p.parent.glob(f"{prefix}*{suffix}"):
        mid = f.name[len(prefix): len(f.name) - len(suffix) if suffix else None]
        if mid.isdigit():
            found.append((int(mid), f))
    if not found:
        raise InvalidMediaError("no frames match the sequence pattern", path=pattern,
                                hint="check the folder and the %0Nd padding")
    return sorted(found)


def _bit_depth(fmt: av.VideoFormat) -> int:
    comps = [c for c in fmt.components if not c.is_alpha]
    return max((c.bits for c in comps), default=8)


def _has_alpha(fmt: av.VideoFormat) -> bool:
    return any(c.is_alpha for c in fmt.components) or fmt.name in ("pal8",)


class VideoReader:
    """A video file (or image sequence) opened for decoding.

    Cheap to construct: it probes the container, scans the packet index (no decoding) for the exact frame
    count and presentation timestamps, and decodes one frame for rotation and colour. Implements the
    ``FrameSource`` protocol (``len(reader)``, ``reader.frame(i)``) for random access by analysis code.
    Not thread-safe for concurrent random access; use one reader per thread.
    """

    def __init__(self, path: str | os.PathLike, *, dtype: str = "auto", keep_alpha: bool = True,
                 cache_frames: int = 16):
        self.path = os.fspath(path)
        self._av_path, self._fmt, self._is_sequence = _resolve_input(path)
        if dtype not in ("auto", "uint8", "uint16", "float32"):
            raise ValueError(f"dtype must be auto, uint8, uint16 or float32, not {dtype!r}")
        self.dtype = dtype
        self.keep_alpha = keep_alpha
        self._lock = threading.Lock()
        self._cache: collections.OrderedDict[tuple, np.ndarray] = collections.OrderedDict()
        self._cache_size = cache_frames
        self._ra_container: av.container.InputContainer | None = None
        self._ra_next: int | None = None
        self._ra_iter = None
        self.info = self._probe()

    # ------------------------------------------------------------------ probing
    def _probe(self) -> VideoInfo:
        c = _open(self._av_path, self._fmt, self.path)
        try:
            if not c.streams.video:
                kinds = sorted({s.type for s in c.streams}) or ["none"]
                raise NoVideoStreamError(f"no video stream (streams found: {', '.join(kinds)})", path=self.path,
                                         hint="facecomp needs a video or an image sequence")
            vs = c.streams.video[0]
            ctx = vs.codec_context
            pts_list: list[int] = []
            n_packets = 0
            try:
                for pkt in c.demux(vs):
                    if pkt.size == 0:
                        continue
                    n_packets += 1
                    if pkt.pts is not None:
                        pts_list.append(pkt.pts)
            except av.error.FFmpegError as exc:
                raise InvalidMediaError(f"the container is damaged: {av_reason(exc)}", path=self.path,
                                        hint="re-export or re-download the file") from exc
            if n_packets == 0:
                raise EmptyMediaError("the video stream holds no frames", path=self.path,
                                      hint="the file may be truncated or empty")
            pts_list.sort()
            self._pts = pts_list if len(pts_list) == n_packets else None
            first = self._decode_first(vs)
            fmt = first.format
            w, h = first.width, first.height
            if w * h > MAX_PIXELS:
                raise InvalidMediaError(f"frames of {w}x{h} exceed the {MAX_PIXELS // 1_000_000} MP limit",
                                        path=self.path, hint="downscale the source first")
            if w < 2 or h < 2:
                raise InvalidMediaError(f"frames of {w}x{h} are too small to process", path=self.path)
            tb = vs.time_base or Fraction(1, 25)
            rate = vs.average_rate or vs.guessed_rate or vs.base_rate or Fraction(25)
            if self._is_sequence and not vs.average_rate:
                rate = Fraction(25)
            vfr = False
            if self._pts and len(self._pts) > 2:
                d = np.diff(np.asarray(self._pts, dtype=np.int64))
                vfr = bool(d.size and (d.max() - d.min()) > max(1, 0.1 * np.median(d)))
            dur = 0.0
            if self._pts:
                step = (self._pts[-1] - self._pts[0]) / max(1, len(self._pts) - 1) if len(self._pts) > 1 else 0
                dur = float((self._pts[-1] - self._pts[0] + step) * tb) if len(self._pts) > 1 else float(1 / rate)
            elif vs.duration:
                dur = float(vs.duration * tb)
            else:
                dur = n_packets / float(rate)
            timecode = vs.metadata.get("timecode") or c.metadata.get("timecode")
            if timecode is None:
                for s in c.streams:
                    if s.type == "data" and s.metadata.get("timecode"):
                        timecode = s.metadata["timecode"]
            color = ColorTags(primaries=int(first.color_primaries), transfer=int(first.color_trc),
                              matrix=int(first.colorspace), range=int(first.color_range))
            streams = tuple(
                StreamInfo(index=s.index, type=s.type,
                           codec=(s.codec_context.name if getattr(s, "codec_context", None) else None),
                           language=s.metadata.get("language"))
                for s in c.streams if s.index != vs.index and s.type in ("audio", "subtitle")
            )
            rotation = int(round((first.rotation or 0) / 90.0)) * 90 % 360
            announced = self._announced_frames(c, vs, n_packets, rate, vfr)
            return VideoInfo(
                path=self.path, container=c.format.name, codec=ctx.name, width=w, height=h,
                pix_fmt=fmt.name, bit_depth=_bit_depth(fmt), has_alpha=_has_alpha(fmt), fps=Fraction(rate),
                time_base=Fraction(tb), frame_count=n_packets, duration_s=dur, rotation=rotation,
                timecode=timecode, color=color, vfr=vfr, is_sequence=self._is_sequence, streams=streams,
                metadata=dict(c.metadata), announced_frames=announced,
            )
        finally:
            c.close()

    def _announced_frames(self, c, vs, n_packets: int, rate: Fraction, vfr: bool) -> int | None:
        """The frame count the container's header promises, when it exceeds the packets found.

        Only headers written by the muxer count (MP4/MOV sample tables, Matroska's per-stream DURATION
        tag); MPEG-PS/TS durations are FFmpeg's bitrate estimates and are not trusted. For a
        sequence, every numbered file from the first to the last must be there.
        """
        if self._is_sequence:
            numbers = [n for n, _ in _sequence_files(self._av_path)] if "%" in self._av_path else []
            if numbers:
                span = numbers[-1] - numbers[0] + 1
                return span if span > n_packets else None
            return None
        if vs.frames and vs.frames > n_packets:  # MP4/MOV: the sample table counts every frame
            return int(vs.frames)
        if not c.format.name.startswith("matroska") or vfr:
            return None  # a VFR stream's duration times its average rate is no frame count
        # Matroska: the muxer's per-stream DURATION tag (the container's duration spans audio too)
        seconds = None
        tag = vs.metadata.get("DURATION") or vs.metadata.get("duration")
        if tag:
            try:
                hh, mm, ss = tag.split(":")
                seconds = int(hh) * 3600 + int(mm) * 60 + float(ss)
            except ValueError:
                seconds = None
        if not seconds or not rate:
            return None
        expected = int(seconds * float(rate) + 1e-3)  # the duration runs to the end of the last frame
        # a frame of slack for rounding and edit lists, and 2% for VFR streams whose average rate is nominal
        if expected > n_packets + max(1, int(0.02 * expected)):
            return expected
        return None

    def _decode_first(self, vs) -> av.VideoFrame:
        c = _open(self._av_path, self._fmt, self.path)
        try:
            for frame in c.decode(c.streams.video[0]):
                return frame
        except av.error.FFmpegError as exc:
            raise InvalidMediaError(f"the video cannot be decoded: {av_reason(exc)}", path=self.path,
                                    hint="the file may be corrupt or use an unsupported codec") from exc
        finally:
            c.close()
        raise EmptyMediaError("no frame could be decoded", path=self.path, hint="the file may be truncated")

    # ------------------------------------------------------------------ conversion
    @property
    def out_dtype(self) -> np.dtype:
        if self.dtype == "auto":
            return np.dtype(np.uint16 if self.info.bit_depth > 8 else np.uint8)
        return np.dtype(self.dtype)

    @property
    def channels(self) -> int:
        return 4 if (self.keep_alpha and self.info.has_alpha) else 3

    def convert(self, frame: av.VideoFrame, dtype: np.dtype | None = None, channels: int | None = None) -> np.ndarray:
        """A decoded frame -> numpy in display orientation with the reader's dtype and channels."""
        dtype = np.dtype(dtype or self.out_dtype)
        channels = channels or self.channels
        wide = dtype != np.uint8
        fmt = {(3, False): "rgb24", (4, False): "rgba", (3, True): "rgb48le", (4, True): "rgba64le"}[(channels, wide)]
        kwargs = {}
        if not frame.format.is_rgb and frame.format.name not in ("gray", "gray16le", "pal8"):
            kwargs["src_colorspace"] = self.info.color.matrix_for_conversion(self.info.height)
            kwargs["src_color_range"] = int(frame.color_range) or 1  # tv range unless tagged full
            kwargs["dst_color_range"] = 2
        try:
            arr = frame.reformat(format=fmt, **kwargs).to_ndarray()
        except (av.error.FFmpegError, ValueError) as exc:
            raise InvalidMediaError(f"pixel format {frame.format.name} cannot be converted to RGB: {av_reason(exc)}",
                                    path=self.path, hint="transcode the source to a common format first") from exc
        if dtype == np.float32:
            arr = arr.astype(np.float32) * np.float32(1.0 / 65535.0)
        k = self.info.rotation // 90
        if k:
            arr = np.ascontiguousarray(np.rot90(arr, k))
        return arr

    @property
    def pts(self) -> list[int] | None:
        """Presentation timestamps of every frame in order (stream time_base); None when packets lack them."""
        return self._pts

    def files(self) -> list[Path]:
        """The source files: the one media file, or every frame of an image sequence in order."""
        if not self._is_sequence:
            return [Path(self.path)]
        return [f for _, f in _sequence_files(self._av_path)]

    def open_container(self) -> av.container.InputContainer:
        """A fresh demuxer on the source (image sequences start at their first number)."""
        return _open(self._av_path, self._fmt, self.path)

    def frame_time(self, frame: av.VideoFrame, index: int) -> float:
        """Seconds from the clip's first frame (by timestamp; by index and frame rate without one)."""
        if frame.pts is not None and frame.time_base is not None:
            start = self._pts[0] if self._pts else 0
            return float((frame.pts - start) * frame.time_base)
        return index / float(self.info.fps)

    # ------------------------------------------------------------------ sequential
    def frames(self, start: int = 0, end: int | None = None) -> Iterator[DecodedFrame]:
        """Decode frames ``start <= index < end`` in presentation order (converted, display orientation)."""
        for index, frame in self.av_frames(start, end):
            yield DecodedFrame(index, frame.pts, self.frame_time(frame, index), self.convert(frame))

    def av_frames(self, start: int = 0, end: int | None = None) -> Iterator[tuple[int, av.VideoFrame]]:
        """Raw PyAV frames with their index; the renderer converts them on its worker threads."""
        c = _open(self._av_path, self._fmt, self.path)
        try:
            vs = c.streams.video[0]
            vs.thread_type = "AUTO"
            index = 0
            for frame in self._safe_decode(c, vs):
                if end is not None and index >= end:
                    break
                if index >= start:
                    yield index, frame
                index += 1
        finally:
            c.close()

    def _safe_decode(self, c, vs):
        try:
            yield from c.decode(vs)
        except av.error.FFmpegError as exc:
            raise InvalidMediaError(f"decoding failed: {av_reason(exc)}", path=self.path,
                                    hint="the file is corrupt or truncated; frames before the damage were read") from exc

    # ------------------------------------------------------------------ random access
    def __len__(self) -> int:
        return self.info.frame_count

    def frame(self, index: int, dtype: str = "uint8") -> np.ndarray:
        """Frame ``index`` (presentation order) as RGB in display orientation; frame-accurate.

        ``dtype``: "uint8", "uint16" (full 0..65535 scale) or "float32" (0..1), equal to what the
        sequential pass gives for that dtype. Seeks to the keyframe before the frame's timestamp and
        decodes forward; consecutive requests continue decoding without seeking, and recent frames are
        cached per dtype (analysis reads windows).
        """
        try:
            name = np.dtype(dtype).name
        except TypeError:
            name = None
        if name not in ("uint8", "uint16", "float32"):
            raise ValueError(f"dtype must be uint8, uint16 or float32, not {dtype!r}")
        dtype = name
        if not 0 <= index < len(self):
            raise IndexError(f"frame {index} is outside 0..{len(self) - 1} of {self.path}")
        key = (index, dtype)
        with self._lock:
            if key in self._cache:
                self._cache.move_to_end(key)
                return self._cache[key]
            frame = self._seek_decode(index)
            arr = self.convert(frame, dtype=np.dtype(dtype), channels=3)
            self._cache[key] = arr
            while len(self._cache) > self._cache_size:
                self._cache.popitem(last=False)
            return arr

    def _seek_decode(self, index: int) -> av.VideoFrame:
        near = self._ra_iter is not None and self._ra_next is not None and self._ra_next <= index <= self._ra_next + 32
        if near:
            frame = self._decode_until(index)
            if frame is not None:
                return frame
        # Seek to the keyframe before the target; demuxers whose seeking is imprecise (MPEG-PS, some
        # AVI) may land after it, so step further back, and in the end decode from the very start.
        if self._pts is not None:
            for back in (0, 8, 64, 512):
                if index - back <= 0:
                    break
                self._restart(self._pts[index - back])
                frame = self._decode_until(index)
                if frame is not None:
                    return frame
        self._restart(None)
        frame = self._decode_until(index)
        if frame is None:
            raise EmptyMediaError(f"frame {index} could not be decoded", path=self.path,
                                  hint="the file may be truncated")
        return frame

    def _restart(self, pts: int | None) -> None:
        if pts is None or self._ra_container is None:
            if self._ra_container is not None:
                self._ra_container.close()
            self._ra_container = _open(self._av_path, self._fmt, self.path)
        c = self._ra_container
        vs = c.streams.video[0]
        if pts is not None:
            c.seek(pts, stream=vs, backward=True, any_frame=False)
            self._ra_next = None  # unknown until a frame's pts says where we are
        else:
            self._ra_next = 0
        self._ra_iter = self._safe_decode(c, vs)

    def _decode_until(self, index: int) -> av.VideoFrame | None:
        """Decode forward to frame ``index``; None if the current position is already past it."""
        import bisect
        for frame in self._ra_iter:
            if self._ra_next is None:
                if frame.pts is None or self._pts is None:
                    return None
                self._ra_next = bisect.bisect_left(self._pts, frame.pts)
            cur = self._ra_next
            self._ra_next += 1
            if cur == index:
                return frame
            if cur > index:
                return None
        self._ra_iter = None
        return None

    def close(self) -> None:
        with self._lock:
            if self._ra_container is not None:
                self._ra_container.close()
                self._ra_container = None
                self._ra_iter = None

    def __enter__(self) -> "VideoReader":
        return self

    def __exit__(self, *exc) -> None:
        self.close()
