"""The clip renderer: decode -> effect -> stamp -> encode, pipelined, with the disclosure written last.

Three kinds of threads run concurrently: one demuxes and decodes, a pool converts pixels and runs the
engine (several workers when every processor is thread-safe), and the calling thread encodes in order.
A queue of futures between them keeps output order; a fixed number of video-frame slots keeps memory flat
in clip length (audio packets take none). Face analysis reads the frames this decode produces (see
:class:`_StreamFrames`), so a clip is decoded and converted to RGB once. After
the last frame: the container is closed, its tags read back, optionally C2PA-signed (the last write to the
media), hashed, the sidecar manifest written, and only then is the media renamed to its final name.
"""

from __future__ import annotations

import concurrent.futures as cf
import hashlib
import math
import os
import queue
import re
import threading
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Callable

import av
import cv2
import numpy as np

from ..disclosure import manifest as mf
from ..disclosure.metadata import AigcIdentity, disclosure_tags
from ..disclosure.readback import REFERENCE_FRAMES, check_written
from ..disclosure.watermark import FileDecoder
from ..effect import Engine, FrameContext
from ..errors import (CancelledError, EmptyMediaError, FacecompError, InvalidMediaError, NoFaceError,
                      OutputError, SettingsError)
from ..video.encode import EncodeSettings, resolve
from ..sequences import sequence_frames
from ..wording import plural
from ..video.info import av_reason, is_sequence_pattern, offset_timecode, parse_timecode
from ..video.reader import VideoReader
from ..video.writer import VideoWriter, check_output_path
from .progress import Progress, QuietProgress

MAX_MANIFEST_ID = 128

# Called with (temporary media path, input path, manifest dict so far) after the tags are verified and
# before hashing; it may rewrite the media file (C2PA signing) and returns a dict for the manifest.
FinalizeHook = Callable[[Path, str, dict], dict]


@dataclass(frozen=True)
class RenderSettings:
    start: int | str | None = None  # first frame: index, or timecode HH:MM:SS:FF
    end: int | str | None = None  # frame after the last: index, or timecode
    encode: EncodeSettings = field(default_factory=EncodeSettings)
    workers: int = 0  # effect workers; 0 = as many as useful when the engine is thread-safe
    queue_frames: int = 0  # in-flight frames; 0 = 2 x workers + 2 (more when processors read ahead)
    dtype: str = "auto"  # auto (uint8 / uint16 by source depth) or float32
    identity: AigcIdentity = field(default_factory=AigcIdentity)
    # the manifest id (also the watermark's): given, two renders of the same input and settings are identical
    manifest_id: str | None = None  # None = a new random id
    overwrite: bool = False  # replace an existing output (and its manifest); default: refuse
    allow_partial: bool = False  # render the readable frames of a truncated/damaged source (warned, in the manifest)
    require_face: bool = False  # a render that replaces no face is an error (NoFaceError), for queues
    input_sha256: str | None = None  # the input's sha256 when the caller knows it (the queue hashes once per job)

    def __post_init__(self) -> None:
        mid = self.manifest_id
        if mid is not None and (not isinstance(mid, str) or not 1 <= len(mid) <= MAX_MANIFEST_ID
                                or not mid.isprintable() or mid != mid.strip()):
            raise SettingsError(f"manifest id {mid!r} must be 1..{MAX_MANIFEST_ID} printable characters "
                                "without leading or trailing spaces", hint="e.g. a UUID or a job name")

    def to_dict(self) -> dict:
        return {"start": self.start, "end": self.end, "encode": self.encode.to_dict(), "dtype": self.dtype,
                "aigc": self.identity.to_dict()}


@dataclass
class RenderResult:
    output: Path
    manifest_path: Path
    manifest: dict
    frames: int
    seconds: float
    stage_ms: dict[str, float]  # mean milliseconds per frame per stage
    notes: list[str]

    @property
    def fps(self) -> float:
        return self.frames / self.seconds if self.seconds > 0 else 0.0


def _open_at(reader: VideoReader, start: int) -> tuple[av.container.InputContainer, int]:
    """The input opened at a keyframe about a second before ``start``, and that frame's index.

    Why: a queue renders a long clip in segments; decoding every segment from frame 0 would make the
    last segment of a one-hour source decode the whole hour. The lead second keeps the audio packets
    muxed just before the video of ``start``. The landing point is probed on a separate open, so a
    demuxer whose seeks are imprecise (MPEG-PS) or land after the range falls back to frame 0: the same
    frames either way, only slower.
    """
    import bisect

    container = reader.open_container()
    pts = reader.pts
    lead = max(1, int(math.ceil(float(reader.info.fps or 25))))
    if start - lead <= 0 or pts is None or reader.info.is_sequence or len(set(pts)) != len(pts):
        return container, 0
    target = pts[start - lead]
    probe = reader.open_container()
    try:
        vs = probe.streams.video[0]
        probe.seek(target, stream=vs, backward=True, any_frame=False)
        landed = None
        for packet in probe.demux(vs):
            for frame in packet.decode():
                if frame.pts is not None:
                    i = bisect.bisect_left(pts, frame.pts)
                    landed = i if i < len(pts) and pts[i] == frame.pts else None
                break
            else:
                continue
            break
    except (av.error.FFmpegError, OSError):
        landed = None
    finally:
        probe.close()
    if landed is None or not 0 < landed <= start - lead // 2:
        return container, 0
    try:
        container.seek(target, stream=container.streams.video[0], backward=True, any_frame=False)
    except (av.error.FFmpegError, OSError):
        container.close()
        return reader.open_container(), 0
    return container, landed


def _no_face(summary: dict, frames: int, input_path: str, required: bool, note) -> None:
    """A render that replaced nothing: a settings error for a track that is not there, else a warning
    (printed even with --quiet) or, with ``require_face``, an error for queues."""
    selection, tracks = summary.get("selection"), summary.get("tracks")
    if selection and selection.startswith("track:") and tracks is not None:
        wanted = sorted(int(v) for v in selection.split(":", 1)[1].split(","))
        if not set(wanted) & set(tracks):
            found = ", ".join(map(str, tracks)) if tracks else "none (no face was found)"
            raise SettingsError(f"--faces {selection}: this clip has no track {', '.join(map(str, wanted))}; "
                                f"tracks found: {found}", path=input_path,
                                hint="run 'facecomp track CLIP' to see the track ids")
    what = f"no face was replaced in any of the {plural(frames, 'frame')}"
    if selection and selection != "all":
        what += f" (face selection {selection})"
    if required:
        raise NoFaceError(what, path=input_path, hint="check the clip, the selection and --reference; "
                                                      "without --require-face this is a warning")
    note(what)


def resolve_frame(value: int | str | None, reader: VideoReader, default: int) -> int:
    """A frame index from an index (negative counts from the end) or a timecode.

    Timecodes are absolute, against the source's start timecode (00:00:00:00 when it has none), as an
    editor reads them off the timeline.
    """
    if value is None:
        return default
    if isinstance(value, int) or (isinstance(value, str) and value.strip().lstrip("-").isdigit()):
        n = int(value)
        return n if n >= 0 else reader.info.frame_count + n
    fps = reader.info.fps
    try:
        frame = parse_timecode(value, fps)
        base = parse_timecode(reader.info.timecode, fps) if reader.info.timecode else 0
    except ValueError as exc:
        raise SettingsError(str(exc), hint="give a frame number or HH:MM:SS:FF") from exc
    if frame < base:
        raise SettingsError(f"timecode {value} is before the clip starts ({reader.info.timecode})",
                            path=reader.path, hint="give a timecode inside the clip, or a frame number")
    return frame - base


def existing_output(output: Path) -> Path | None:
    """The file an output would replace: the media, its sidecar manifest, or any frame of the sequence."""
    for p in (output, mf.sidecar_path(output)):
        if p.exists():
            return p
    if is_sequence_pattern(output) and output.parent.is_dir():
        frame = re.compile(_SEQ_NUMBER.sub(lambda m: r"\d+", re.escape(output.name)))
        for p in output.parent.iterdir():
            if frame.fullmatch(p.name):
                return p
    return None


_SEQ_NUMBER = re.compile(r"%0?\d*d")


def _remove_stale_frames(output: Path, kept: list[Path]) -> None:
    """After an overwrite, the old render's frames the new one did not write (a longer or shifted range).

    Left there, they would read as part of the new sequence: ``verify`` would find frames the manifest does
    not list. Only names the pattern prints exactly are removed (``sequences.frame_number``), never others.
    """
    keep = {p.name for p in kept}
    stale = [p for p in sequence_frames(output) if p.name not in keep]
    for p in stale:
        try:
            p.unlink()
        except FileNotFoundError:
            pass
        except OSError as exc:
            raise OutputError(f"the new sequence is written, but a frame of the old one could not be removed "
                              f"({exc.strerror})", path=p,
                              hint="remove the old frames the manifest does not list, or render into an empty "
                                   "folder") from exc


def _input_digest(reader: VideoReader) -> str:
    """sha256 of the input file; for a sequence, of the concatenated file hashes in order."""
    files = reader.files()
    if not reader.info.is_sequence:
        return mf.sha256_file(files[0])
    h = hashlib.sha256()
    for f in files:
        h.update(mf.sha256_file(f).encode())
    return h.hexdigest()


LOOK_BEHIND = 8  # decoded frames kept behind the one the effect worker takes (see _StreamFrames.pixels)


class _StreamFrames:
    """The render's own decode as the analysis ``FrameSource``: frames are converted to RGB once and shared.

    Face analysis reads each frame and a few frames ahead (``lookahead``). Served by the reader's random
    access, that was a second decode and conversion of every frame; here the decoding thread hands its
    frames in (:meth:`put`), :meth:`frame` converts a frame once, and :meth:`pixels` gives the effect
    worker that same buffer (the analysis has read it by then). Frames outside the window held (before
    ``start``, after ``end``, or already dropped) come from the reader's random access: slower, never
    different (decoding is deterministic).
    """

    sequential = True  # read front to back: processors may analyse the next frame ahead

    def __init__(self, reader: VideoReader, start: int, end: int, keep: int, stop: threading.Event,
                 handover: bool = True):
        self.reader, self.start, self.end, self.keep, self.stop = reader, start, end, keep, stop
        self._frames: dict[int, av.VideoFrame] = {}
        self._rgb: dict[int, object] = {}
        self._trash: list = []  # dropped frames, freed by the decoding thread (freeing one waits on the GIL)
        self._last = start - 1  # highest index handed in
        self._done = False
        self._stalled = False  # the decoder waits for the writer: frames not handed in yet will not come soon
        self._cond = threading.Condition()
        self._convert_lock = threading.Lock()
        # the effect's pixels are the analysis pixels when the reader gives 8-bit RGB
        self._shared = reader.out_dtype == np.uint8 and reader.channels == 3
        # one worker: the analysis of frame i is over when the worker takes frame i's buffer; several
        # workers may still be reading it (look-ahead), so each gets a copy
        self._handover = handover

    def __len__(self) -> int:
        return len(self.reader)

    def put(self, index: int, frame: av.VideoFrame) -> None:
        with self._cond:
            self._frames[index] = frame
            self._last = index
            for old in [i for i in self._frames if i <= index - self.keep]:
                self._trash.append((self._frames.pop(old), self._rgb.pop(old, None)))
            trash, self._trash = self._trash, []
            self._cond.notify_all()
        del trash  # here, on the decoding thread, not on the effect worker

    def finish(self) -> None:
        with self._cond:
            self._done = True
            self._cond.notify_all()

    def stalled(self, value: bool) -> None:
        """The decoder says it waits for a free slot (a reader waiting on it would wait for itself)."""
        with self._cond:
            self._stalled = value
            self._cond.notify_all()

    def clear(self) -> None:
        with self._cond:
            self._done = True
            self._frames.clear()
            self._rgb.clear()
            self._trash.clear()
            self._cond.notify_all()

    def frame(self, index: int):
        """RGB uint8 of frame ``index`` (display orientation); callers must not write into it."""
        if self.start <= index < self.end:
            deadline = time.monotonic() + 5.0
            with self._cond:
                while index > self._last and not (self._done or self._stalled or self.stop.is_set()):
                    left = deadline - time.monotonic()
                    if left <= 0:
                        break
                    self._cond.wait(min(left, 0.1))
                arr = self._rgb.get(index)
                frame = self._frames.get(index)
            if arr is not None:
                return arr
            if frame is not None:
                with self._convert_lock:
                    with self._cond:
                        arr = self._rgb.get(index)
                    if arr is None:
                        arr = self.reader.convert(frame, dtype=np.dtype(np.uint8), channels=3)
                        with self._cond:
                            if index in self._frames:
                                self._rgb[index] = arr
                return arr
        return self.reader.frame(index)

    def pixels(self, index: int, frame: av.VideoFrame):
        """The effect's own buffer for frame ``index`` (it may be stamped in place)."""
        arr = None
        with self._cond:
            if self._handover:  # one worker, in order: the analysis has read this frame and those before
                if self._shared:
                    arr = self._rgb.pop(index, None)
                # the decoded frames stay a few frames behind too: the clip session reads back (its colour
                # window, the hand track), and a frame dropped here came from a second, random-access decode
                for old in [i for i in self._frames if i < index - LOOK_BEHIND]:
                    self._trash.append((self._frames.pop(old), self._rgb.pop(old, None)))
            elif self._shared:
                arr = self._rgb.get(index)
                arr = None if arr is None else arr.copy()
        if arr is None and self._handover and self._shared:
            # the worker came first (the clip's first frame, a seek) or while the look-ahead converts it:
            # one conversion, under the analysis's lock; the analysis about to read it gets a copy
            with self._convert_lock:
                with self._cond:
                    arr = self._rgb.pop(index, None)
                if arr is None:
                    arr = self.reader.convert(frame)
                    with self._cond:
                        if index in self._frames:
                            self._rgb[index] = arr.copy()
        return arr if arr is not None else self.reader.convert(frame)


def recheck_finalized(path: Path, tags: dict, display: Path, frames: int) -> None:
    """After a finalize hook rewrote the media (C2PA signing): the disclosure tags are read back again and
    the video stream must still hold every frame, or the output is refused before it gets its name."""
    from ..disclosure.metadata import verify_tags
    from ..errors import MetadataError

    verify_tags(path, tags, display=display)
    try:
        with av.open(str(path)) as c:
            n = sum(1 for p in c.demux(c.streams.video[0]) if p.size)
    except (av.error.FFmpegError, IndexError) as exc:
        raise MetadataError(f"the finalized output cannot be read back ({exc})", path=display) from exc
    if n != frames:
        raise MetadataError(f"the finalized output holds {n} video frames, the render wrote {frames}",
                            path=display, hint="the signing step damaged the file; report this")


class _Hasher(threading.Thread):
    """Hashes the input beside the render so the manifest costs no extra wall time."""

    def __init__(self, reader: VideoReader, known: str | None = None):
        super().__init__(daemon=True, name="facecomp-hash")
        self.reader, self.value, self.error, self.known = reader, None, None, known

    def run(self) -> None:
        if self.known:
            self.value = self.known
            return
        try:
            self.value = _input_digest(self.reader)
        except OSError as exc:  # unreadable mid-way: the manifest says so rather than failing the render
            self.error = str(exc)


def _resolve_encode(encode: EncodeSettings, output: Path, info, needs_alpha: bool):
    """The output's encode; with the matte in the alpha channel, one that carries alpha (or a clear refusal)."""
    if not needs_alpha:
        return resolve(encode, output, info)
    if encode.alpha is False:
        raise SettingsError("the matte goes into the output's alpha channel, but keeping alpha is switched off",
                            path=output, hint="drop --no-alpha, or write the matte as its own clip with --matte PATH")
    try:
        return resolve(replace(encode, alpha=True), output, info)
    except SettingsError as e:
        raise SettingsError(f"the matte goes into the output's alpha channel, which {output.name} cannot carry "
                            f"({e.message})", path=output,
                            hint=f"{e.hint}; or write the matte as its own clip with --matte PATH") from None


def _opaque_alpha(arr: np.ndarray) -> np.ndarray:
    """An RGB frame with an opaque alpha channel added (the matte-in-alpha processor writes it)."""
    full = np.iinfo(arr.dtype).max if arr.dtype.kind == "u" else 1.0
    # split and merge: 2.8 ms at 720p, against 7 ms for numpy's strided copy and 25 for cvtColor here
    return cv2.merge([*cv2.split(np.ascontiguousarray(arr)), np.full(arr.shape[:2], full, arr.dtype)])


def render_clip(input_path: str | os.PathLike, output_path: str | os.PathLike, engine: Engine | None = None,
                settings: RenderSettings | None = None, progress: Progress | None = None, *,
                cancel: threading.Event | None = None, finalize: FinalizeHook | None = None) -> RenderResult:
    """Render ``input_path`` through ``engine`` into ``output_path`` with every disclosure layer."""
    engine = engine or Engine()
    settings = settings or RenderSettings()
    progress = progress or QuietProgress()
    input_path = os.fspath(input_path)
    output = check_output_path(output_path, [input_path])
    if not settings.overwrite:
        existing = existing_output(output)
        if existing is not None:
            raise OutputError("the output exists already; it is not replaced without asking", path=existing,
                              hint="use -y/--overwrite to replace it, or choose another name")
    reader = VideoReader(input_path, dtype=settings.dtype)
    info = reader.info
    disp_w, disp_h = info.display_size
    engine.stamper.check_fits(disp_h, disp_w)  # a label that cannot fit stops the job before any work
    enc = _resolve_encode(settings.encode, output, info, engine.needs_alpha)
    start = resolve_frame(settings.start, reader, 0)
    end = resolve_frame(settings.end, reader, info.frame_count)
    end = min(end, info.frame_count)
    if not 0 <= start < end:
        raise EmptyMediaError(f"the range {start}..{end} selects no frame of {info.frame_count}", path=input_path,
                              hint="check --start/--end")
    if enc.sequence and not is_sequence_pattern(output) and end - start > 1:
        raise SettingsError(f"{output.name} is a single image, but the range holds {end - start} frames",
                            path=output, hint="give a pattern such as out/f_%05d.png, or pick one frame with "
                                              "--start N --end N+1")
    notes: list[str] = []

    def note(text: str) -> None:
        notes.append(text)
        progress.message(text, level="warning")

    for n in enc.notes:
        note(n)
    allow_partial = settings.allow_partial
    # frames the container announces inside the range that no packet carries (a truncated file)
    announced_end = min(resolve_frame(settings.end, reader, info.announced_frames or info.frame_count),
                        info.announced_frames or info.frame_count)
    missing = max(0, announced_end - max(end, start))
    if missing:
        what = (f"the container announces {info.announced_frames} frames but only {info.frame_count} can be read"
                if not info.is_sequence else
                f"the sequence's numbering spans {info.announced_frames} frames but only {info.frame_count} are "
                f"readable in order (a frame file is missing)")
        if not allow_partial:
            raise InvalidMediaError(f"{what}; the file looks truncated", path=input_path,
                                    hint=f"re-export or re-download it, or give --allow-partial to render the "
                                         f"{plural(end - start, 'readable frame')}")
        note(f"{what}: rendering the {plural(end - start, 'readable frame')} only (--allow-partial)")
    manifest_id = settings.manifest_id or mf.new_manifest_id()
    stamper = engine.stamper.for_job(manifest_id)
    sidecar = mf.sidecar_path(output)
    tags = disclosure_tags(manifest_id, sidecar.name, replaced=bool(engine.processors),
                           identity=settings.identity)
    timecode = info.timecode
    if timecode and start:
        try:
            timecode = offset_timecode(timecode, start, info.fps)
        except ValueError:
            note(f"the source timecode {timecode!r} could not be parsed; it is copied unchanged")
    start_pts = 0
    if reader.pts is not None:
        start_pts = reader.pts[start]
    start_s = float((start_pts - (reader.pts[0] if reader.pts else 0)) * info.time_base)
    end_s = None
    if end < info.frame_count and reader.pts is not None:
        end_s = float((reader.pts[end] - reader.pts[0]) * info.time_base)

    hasher = _Hasher(reader, settings.input_sha256)
    hasher.start()
    container, first_index = _open_at(reader, start)
    writer = None
    try:  # set-up that fails (a writer that cannot open, a session that refuses) leaves nothing open
        carry = [s for s in container.streams if s.type in ("audio", "subtitle")] if not info.is_sequence else []
        writer = VideoWriter(output, enc=enc, size=(disp_w, disp_h), fps=info.fps, time_base=info.time_base,
                             rotation=info.rotation, timecode=timecode, color=info.color, tags=tags,
                             carry_streams=carry, on_note=note, start_number=start)
        workers = settings.workers or (min(4, os.cpu_count() or 1) if engine.thread_safe else 1)
        if not engine.thread_safe:
            workers = 1
        # frames the processors read ahead of the one they process (face analysis: its gap look-ahead); the
        # decoder runs that far ahead so they come from this decode (see _StreamFrames), not a second one
        lookahead = max([int(getattr(p, "lookahead", 0) or 0) for p in engine.processors] + [0])
        # (+2: the writer may be two frames behind the effect while it encodes; those frames hold their slots,
        # and a decoder stalled on them sent the look-ahead to the random-access decode)
        qsize = settings.queue_frames or max(2 * workers + 2, lookahead + workers + 3)
        # The queue keeps order; `slots` bounds the video frames in flight (memory stays flat). Audio and
        # subtitle packets take no slot, so interleaved audio cannot hold back the look-ahead frames.
        items: queue.Queue = queue.Queue()
        slots = threading.Semaphore(qsize)
        stop = threading.Event()
        local = threading.local()
        all_timings: list[dict] = []
        timings_lock = threading.Lock()
        decode_time = [0.0]
        stream = (_StreamFrames(reader, start, end, keep=qsize + lookahead + workers + 2, stop=stop,
                                handover=workers == 1) if engine.processors else None)
        # the clip's own session: analysis caches, tracks, colour smoothing; its watermark names the manifest
        session = engine.open_clip(reader if stream is None else stream, manifest_id, stamper=stamper)
    except BaseException:
        if writer is not None:
            writer.abort()
        container.close()
        reader.close()
        raise

    add_alpha = engine.needs_alpha

    def work(index: int, frame: av.VideoFrame):
        t = getattr(local, "t", None)
        if t is None:
            t = local.t = {}
            with timings_lock:
                all_timings.append(t)
        t0 = time.perf_counter()
        arr = reader.convert(frame) if stream is None else stream.pixels(index, frame)
        if add_alpha and arr.shape[2] == 3:
            arr = _opaque_alpha(arr)
        t["convert"] = t.get("convert", 0.0) + time.perf_counter() - t0
        ctx = FrameContext(index=index, time=reader.frame_time(frame, index), source=reader if stream is None else stream)
        return session.render_frame(arr, ctx, timings=t, owned=True), frame.pts

    def take_slot() -> bool:
        if slots.acquire(blocking=False):
            return True
        if stream is not None:
            stream.stalled(True)
        try:
            while not stop.is_set():
                if slots.acquire(timeout=0.1):
                    return True
            return False
        finally:
            if stream is not None:
                stream.stalled(False)

    def put(item) -> bool:
        while not stop.is_set():
            try:
                items.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def produce(pool: cf.ThreadPoolExecutor) -> None:
        try:
            vs = container.streams.video[0]
            vs.thread_type = "AUTO"
            index = first_index  # 0, or the frame the seek landed on (a keyframe before the range)
            by_pts = ({p: i for i, p in enumerate(reader.pts)} if first_index and reader.pts is not None
                      else None)
            first = True
            t0 = time.perf_counter()
            for packet in container.demux([vs] + carry):
                if stop.is_set():
                    return
                if packet.stream.index != vs.index:
                    if packet.pts is None or packet.stream.time_base is None:
                        continue
                    offset = 0
                    if start_s or end_s is not None:  # trimmed: keep the packets inside the range
                        ts = float(packet.pts * packet.stream.time_base) - float(
                            (packet.stream.start_time or 0) * packet.stream.time_base)
                        if ts < start_s - 1e-6 or (end_s is not None and ts >= end_s):
                            continue
                        offset = int(round(start_s / packet.stream.time_base))
                    if not put(("p", packet, offset)):
                        return
                    continue
                try:
                    frames = packet.decode()
                except av.error.FFmpegError as exc:
                    if index == first_index:
                        raise InvalidMediaError(f"decoding failed: {av_reason(exc)}", path=input_path,
                                                hint="the file is corrupt or uses an unsupported codec") from exc
                    put(("warn", f"the frame after {index - 1} could not be decoded ({av_reason(exc)}); skipped"))
                    continue
                for frame in frames:
                    if by_pts is not None:  # after a seek, a frame's place comes from its timestamp
                        at = by_pts.get(frame.pts) if frame.pts is not None else None
                        if first and at is None:
                            raise InvalidMediaError("the frame the seek landed on has no known timestamp",
                                                    path=input_path, hint="render the clip from its start")
                        index = index if at is None else at
                        first = False
                    if index >= end:
                        break
                    if index >= start:
                        decode_time[0] += time.perf_counter() - t0
                        if stream is not None:
                            stream.put(index, frame)
                        if not take_slot():
                            return
                        fut = pool.submit(work, index, frame)
                        if not put(("v", index, fut)):
                            return
                        t0 = time.perf_counter()
                    index += 1
                if index >= end and end_s is None:
                    break
            put(("end", index, None))
        except BaseException as exc:  # handed to the encoding thread, which raises it
            put(("error", exc, None))
        finally:
            if stream is not None:
                stream.finish()

    replaced: dict[int, list[int]] = {}
    reference = FileDecoder()
    encode_time = 0.0
    written = 0
    t_start = time.perf_counter()
    progress.start("render", end - start)
    pool = cf.ThreadPoolExecutor(max_workers=workers, thread_name_prefix="facecomp-effect")
    producer = threading.Thread(target=produce, args=(pool,), daemon=True, name="facecomp-decode")
    try:
        producer.start()
        while True:
            if cancel is not None and cancel.is_set():
                raise CancelledError("render cancelled", path=output)
            try:
                item = items.get(timeout=0.2)
            except queue.Empty:
                if not producer.is_alive() and items.empty():
                    raise RuntimeError("the decoder stopped without finishing")
                continue
            kind = item[0]
            if kind == "v":
                stamped, pts = item[2].result()
                t0 = time.perf_counter()
                writer.write(stamped, None if (pts is None or info.is_sequence) else pts - start_pts)
                encode_time += time.perf_counter() - t0
                # the slot first: the reference decode below takes milliseconds, and a decoder waiting for
                # the slot meanwhile sent the analysis's look-ahead to a second, random-access decode
                slots.release()
                if reference.read < REFERENCE_FRAMES:  # the watermark as stamped: content vs encoding losses
                    reference.add(stamped.pixels)
                out_index = written
                for track in stamped.replaced_tracks:
                    replaced.setdefault(track, []).append(out_index)
                written += 1
                progress.advance(1)
            elif kind == "p":
                writer.write_packet(item[1], item[2])
            elif kind == "warn":
                note(item[1])
            elif kind == "error":
                raise item[1]
            elif kind == "end":
                break
        if written == 0:
            raise EmptyMediaError("no frame could be decoded", path=input_path, hint="the file may be truncated")
        if written < end - start:
            lost = end - start - written
            what = (f"{plural(lost, 'frame')} of {end - start} could not be decoded (damaged or truncated input)")
            if not allow_partial:
                raise InvalidMediaError(f"{what}; only {written} were readable", path=input_path,
                                        hint="repair or re-export the source, or give --allow-partial to render "
                                             "the readable frames")
            note(f"{what}; the output has {written} (--allow-partial)")
        missing += max(0, end - start - written)
        if engine.processors and not replaced:
            _no_face(session.summary(), written, input_path, settings.require_face, note)
        t0 = time.perf_counter()
        tmp = writer.finish()
        encode_time += time.perf_counter() - t0
        # the pixel layers read back like the tags: a watermark or label the encoding destroyed fails here
        readback = check_written(writer.sequence_files() if enc.sequence else tmp, payload=stamper.payload,
                                 label=stamper.label_settings, options=enc.options, size=(disp_w, disp_h),
                                 display=output, reference=reference.result() if reference.read else None)
        if readback.warning:
            note(readback.warning)
        hasher.join()
        files_meta: list[dict] = []
        disclosure = dict(stamper.describe(), tags=sorted(tags), readback=readback.to_dict())
        partial = {"id": manifest_id, "models": engine.model_records()}
        if finalize is not None and not enc.sequence:
            disclosure.update(finalize(tmp, input_path, partial) or {})
            recheck_finalized(tmp, tags, output, written)  # the hook rewrote the media: verified again before the rename
        if enc.sequence:
            for p in writer.sequence_files():
                files_meta.append({"name": p.name, "sha256": mf.sha256_file(p)})
        else:
            files_meta.append({"name": output.name, "sha256": mf.sha256_file(tmp), "size": tmp.stat().st_size})
        settings_dict = {"render": settings.to_dict(), "encode_resolved": {
            "codec": enc.codec, "encoder": enc.encoder, "pix_fmt": writer.pix_fmt, "bit_depth": enc.bit_depth,
            "alpha": enc.alpha, "options": enc.options},
            # the engine's own stamper names its host session; this file was stamped by the job's stamper
            "engine": {**engine.settings_dict(), "disclosure": stamper.describe()}}
        manifest = mf.build_manifest(
            manifest_id=manifest_id, input_path=input_path, input_sha256=hasher.value, output_path=str(output),
            output_files=files_meta, settings=settings_dict, models=engine.model_records(),
            source_identity=engine.source_identity(), replaced_frames=replaced, frames_total=written,
            first_frame=start, disclosure=disclosure, warnings=notes + ([f"input hash failed: {hasher.error}"]
                                                                        if hasher.error else []))
        manifest["output"]["sha256"] = (files_meta[0]["sha256"]
                                        if not enc.sequence or not is_sequence_pattern(output) else None)
        manifest["input"]["frames_rendered"] = [start, start + written - 1]
        if missing:
            manifest["input"]["frames_missing"] = missing  # announced or in range, but not readable
        sidecar_written = mf.write_manifest(output, manifest)
        try:
            finals = writer.commit()
        except FacecompError:
            sidecar_written.unlink(missing_ok=True)
            raise
        if enc.sequence and is_sequence_pattern(output):
            _remove_stale_frames(output, finals)
    except BaseException:
        stop.set()
        writer.abort()
        raise
    finally:
        stop.set()
        pool.shutdown(wait=True, cancel_futures=True)
        producer.join(timeout=5)
        if stream is not None:
            stream.clear()
        session.close()
        container.close()
        reader.close()
    elapsed = time.perf_counter() - t_start
    progress.finish(output=str(output), manifest=str(sidecar_written), frames=written,
                    seconds=round(elapsed, 3))
    stage: dict[str, float] = {}
    for t in all_timings:
        for k, v in t.items():
            stage[k] = stage.get(k, 0.0) + v
    stage["decode"] = decode_time[0]
    stage["encode"] = encode_time
    stage["readback"] = readback.seconds
    stage_ms = {k: 1000.0 * v / max(1, written) for k, v in stage.items()}
    return RenderResult(output=output, manifest_path=sidecar_written, manifest=manifest, frames=written,
                        seconds=elapsed, stage_ms=stage_ms, notes=notes)
