"""Segments: plan keyframe-aligned ranges, render one, join them without re-encoding, disclose the whole.

A job renders as independent segments so that a killed runner loses at most the segments in flight.
Each segment is a complete render (``render_clip`` with the job's range slice and the job's manifest id,
so the watermark id is the same on every frame) and therefore starts with a keyframe of its own: a closed
GOP that can be joined by copying packets. Boundaries follow the source's keyframes where it has them
often enough (the segment's decode then starts at a keyframe), else fixed frame counts.

The join copies every segment's video packets with a timestamp offset, copies the source's audio for the
whole range once, writes the disclosure tags and reads them back, signs C2PA last (when configured),
then writes ONE manifest that names every segment's range, and only then renames the media into place.
"""

from __future__ import annotations

import heapq
import json
import os
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import av

from ..disclosure import manifest as mf
from ..disclosure.metadata import (
    AigcIdentity,
    container_options,
    disclosure_tags,
    verify_tags,
)
from ..errors import InvalidMediaError, OutputError

FORMATS = {".mp4": "mp4", ".m4v": "mp4", ".mov": "mov", ".mkv": "matroska"}


@dataclass(frozen=True)
class Segment:
    """Frames ``start`` to ``end`` (exclusive) of the source, as source frame indices."""

    start: int
    end: int

    @property
    def frames(self) -> int:
        return self.end - self.start

    def file_name(self, suffix: str) -> str:
        return f"seg_{self.start:07d}_{self.end:07d}{suffix}"


def source_keyframes(path: str | os.PathLike) -> list[int]:
    """Frame indices (display order) of the source's keyframes, from the packet index (no decoding)."""
    try:
        with av.open(os.fspath(path)) as c:
            vs = c.streams.video[0]
            pts: list[int] = []
            keys: set[int] = set()
            for p in c.demux(vs):
                if p.size == 0 or p.pts is None:
                    continue
                pts.append(p.pts)
                if p.is_keyframe:
                    keys.add(p.pts)
    except (av.error.FFmpegError, OSError, IndexError) as exc:
        raise InvalidMediaError(f"cannot index the keyframes ({exc})", path=path) from exc
    pts.sort()
    return [i for i, t in enumerate(pts) if t in keys]


def plan_segments(start: int, end: int, segment_frames: int, keyframes: list[int] | None = None) -> list[Segment]:
    """Split ``[start, end)`` into segments of about ``segment_frames``.

    A boundary is the first source keyframe at least ``segment_frames`` after the previous one and less
    than twice that; where the source has none there, the boundary is a fixed count. A tail shorter than
    half a segment joins the one before it.
    """
    if segment_frames < 1:
        raise ValueError("segment_frames must be >= 1")
    keys = sorted(k for k in (keyframes or []) if start < k < end)
    out: list[Segment] = []
    cur = start
    while end - cur > segment_frames:
        b = next((k for k in keys if cur + segment_frames <= k < cur + 2 * segment_frames), cur + segment_frames)
        if end - b < max(1, segment_frames // 2):
            break
        out.append(Segment(cur, b))
        cur = b
    out.append(Segment(cur, end))
    return out


def _offset_packet(packet: av.Packet, offset: int) -> None:
    if packet.pts is not None:
        packet.pts += offset
    if packet.dts is not None:
        packet.dts += offset


@dataclass(frozen=True)
class JoinedSegment:
    path: Path
    segment: Segment
    manifest: dict


class _AudioCopy:
    """The source's audio for the whole range, copied (re-encoded to AAC only where the container needs it).

    Streams are added before the first packet is written (a muxer takes no streams after its header);
    :meth:`packets` then yields ``(seconds, packet)`` ready to mux. Times count from the source's first
    video timestamp, with the renderer's range rule, so the audio lines up with the joined video.
    """

    def __init__(self, source: str, out: av.container.OutputContainer, v0: float, start_s: float,
                 end_s: float | None, notes: list[str]):
        self.src = av.open(source)
        self.out, self.v0, self.start_s, self.end_s = out, v0, start_s, end_s
        self.streams = [s for s in self.src.streams if s.type == "audio"]
        for sub in (s for s in self.src.streams if s.type == "subtitle"):
            notes.append(f"subtitle stream {sub.index} of the source is not carried by the queue's join; "
                         f"render the clip with facecomp render to keep it")
        self.mapping: dict[int, tuple] = {}
        for ins in self.streams:
            name = ins.codec_context.name
            if name in out.supported_codecs:
                self.mapping[ins.index] = (out.add_stream_from_template(ins), None)
            else:
                outs = out.add_stream("aac", rate=ins.codec_context.sample_rate or 48000)
                outs.layout = ins.codec_context.layout
                self.mapping[ins.index] = (outs, ins.codec_context)
                notes.append(f"audio stream {ins.index} ({name}) re-encoded to AAC: the output container "
                             f"cannot hold {name}")

    def packets(self):
        if not self.streams:
            return
        for packet in self.src.demux(self.streams):
            if packet.pts is None:
                continue
            tb = packet.stream.time_base
            ts = float(packet.pts * tb) - self.v0
            if ts < self.start_s - 1e-6 or (self.end_s is not None and ts >= self.end_s):
                continue
            outs, dec = self.mapping[packet.stream.index]
            if dec is not None:
                for frame in dec.decode(packet):
                    frame.pts = None
                    for p in outs.encode(frame):
                        yield ts - self.start_s, p
                continue
            _offset_packet(packet, -round((self.start_s + self.v0) / tb))
            if packet.pts < 0:
                continue
            packet.stream = outs
            yield ts - self.start_s, packet
        for outs, dec in self.mapping.values():
            if dec is not None:
                for p in outs.encode():
                    yield float("inf"), p

    def close(self) -> None:
        self.src.close()


def join_segments(parts: list[JoinedSegment], *, source: str, output: Path, manifest_id: str,
                  identity: AigcIdentity | None = None, finalize: Callable | None = None,
                  segment_log: Callable[[str], None] | None = None, write_dir: Path | None = None,
                  folder_check: Callable[[], None] | None = None) -> dict:
    """Join rendered segments into ``output`` by packet copy; write tags, C2PA, one manifest; rename.

    Returns the manifest. Nothing appears under ``output`` (or its sidecar) unless all of it succeeded.
    ``write_dir``: the folder every file is written through (temp media, the finalize hook's temp files,
    the sidecar, the rename, the cleanup), e.g. a held ``/proc/self/fd/N``; messages and the manifest
    still name ``output``. ``folder_check`` runs just before the sidecar and the rename (it raises to stop).
    """
    if not parts:
        raise ValueError("nothing to join")
    suffix = output.suffix.lower()
    fmt = FORMATS.get(suffix)
    if fmt is None:
        raise OutputError(f"the queue writes .mp4, .mov or .mkv, not {suffix}", path=output)
    notes: list[str] = []
    sidecar = mf.sidecar_path(output)
    first_m = parts[0].manifest
    replaced = bool(first_m.get("replacement", {}).get("face_replaced")) or any(
        p.manifest.get("replacement", {}).get("face_replaced") for p in parts)
    tags = disclosure_tags(manifest_id, sidecar.name, replaced=replaced, identity=identity or AigcIdentity())
    where = write_dir if write_dir is not None else output.parent
    tmp = where / f".{output.stem}.facecomp-join-{uuid.uuid4().hex[:8]}{suffix}"
    job_start, job_end = parts[0].segment.start, parts[-1].segment.end
    try:
        with av.open(source) as src:
            vsrc = src.streams.video[0]
            src_pts = sorted(p.pts for p in src.demux(vsrc) if p.pts is not None and p.size)
            src_tb = Fraction(vsrc.time_base)
        frame_count = len(src_pts)
        start_s = float((src_pts[job_start] - src_pts[0]) * src_tb)
        end_s = float((src_pts[job_end] - src_pts[0]) * src_tb) if job_end < frame_count else None
        ranges = [[p.segment.start, p.segment.end - 1] for p in parts]
        out = av.open(os.fspath(tmp), "w", format=fmt, options=container_options(fmt))
        audio = None
        try:
            for k, v in tags.items():
                out.metadata[k] = v
            with av.open(os.fspath(parts[0].path)) as seg:
                vin = seg.streams.video[0]
                vout = out.add_stream_from_template(vin)
                vout.time_base = vin.time_base
                if vin.average_rate:  # the muxer's timecode track needs the frame rate
                    vout.codec_context.framerate = vin.average_rate
                if vin.metadata.get("timecode"):
                    vout.metadata["timecode"] = vin.metadata["timecode"]
                extradata = vin.codec_context.extradata
            audio = _AudioCopy(source, out, float(src_pts[0] * src_tb), start_s, end_s, notes)

            def video_packets():
                for part in parts:
                    with av.open(os.fspath(part.path)) as seg:
                        vin = seg.streams.video[0]
                        if vin.codec_context.extradata != extradata:
                            raise OutputError("segments were encoded with different codec parameters and cannot "
                                              "be joined without re-encoding", path=part.path,
                                              hint="queue clean, then run the job again")
                        tb = Fraction(vin.time_base)
                        offset_s = Fraction(src_pts[part.segment.start] - src_pts[job_start]) * src_tb
                        offset = round(offset_s / tb)
                        n = 0
                        for packet in seg.demux(vin):
                            if packet.size == 0:
                                continue
                            _offset_packet(packet, offset)
                            when = float((packet.dts if packet.dts is not None else packet.pts) * tb)
                            packet.stream = vout
                            n += 1
                            yield when, packet
                        if n != part.segment.frames:
                            raise OutputError(f"segment holds {n} frames, expected {part.segment.frames}",
                                              path=part.path, hint="queue clean, then run the job again")
                    if segment_log:
                        segment_log(f"joined segment {part.segment.start}..{part.segment.end - 1} ({n} packets)")

            for _, packet in heapq.merge(video_packets(), audio.packets(), key=lambda item: item[0]):
                out.mux(packet)
        finally:
            if audio is not None:
                audio.close()
            out.close()
        verify_tags(tmp, tags, display=output)
        disclosure = dict(first_m.get("disclosure") or {})
        disclosure.pop("c2pa", None)
        disclosure["tags"] = sorted(tags)
        disclosure["segments"] = {"count": len(parts), "ranges": ranges, "joined": "packet copy, no re-encode"}
        partial = {"id": manifest_id, "models": first_m.get("models") or []}
        total = sum(part.segment.frames for part in parts)
        if finalize is not None:
            disclosure.update(finalize(tmp, source, partial) or {})
            from ..render.clip import recheck_finalized  # the hook rewrote the media: verified again
            recheck_finalized(tmp, tags, output, total)
        sha = mf.sha256_file(tmp)
        tracks: dict[int, list[int]] = {}
        total = 0
        warnings: list[str] = []
        for part in parts:
            rep = part.manifest.get("replacement", {})
            for t, rs in (rep.get("tracks") or {}).items():
                for a, b in rs:
                    tracks.setdefault(int(t), []).extend(range(total + a, total + b + 1))
            total += part.segment.frames
            warnings.extend(w for w in part.manifest.get("warnings", []) if w not in warnings)
        settings = dict(first_m.get("settings") or {})
        if isinstance(settings.get("render"), dict):
            settings["render"] = dict(settings["render"], start=job_start, end=job_end)
        manifest = mf.build_manifest(
            manifest_id=manifest_id, input_path=source, input_sha256=(first_m.get("input") or {}).get("sha256"),
            output_path=str(output), output_files=[{"name": output.name, "sha256": sha, "size": tmp.stat().st_size}],
            settings=settings, models=first_m.get("models") or [], source_identity=first_m.get("source_identity"),
            replaced_frames=tracks, frames_total=total, first_frame=job_start, disclosure=disclosure,
            warnings=warnings + notes)
        manifest["output"]["sha256"] = sha
        manifest["input"]["frames_rendered"] = [job_start, job_end - 1]
        if folder_check is not None:
            folder_check()
        fsync_file(tmp)
        written = mf.write_manifest(output, manifest, directory=write_dir)
        try:
            os.replace(tmp, where / output.name)
        except OSError as exc:
            written.unlink(missing_ok=True)
            raise OutputError(f"cannot rename the joined output into place ({exc})", path=output) from exc
        return manifest
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def fsync_file(path: Path) -> None:
    """Flush a file and its folder entry to disk (a power cut must not leave a committed but empty file)."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
    dfd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dfd)
    finally:
        os.close(dfd)


def segment_ok(path: Path, segment: Segment, manifest_id: str) -> bool:
    """A committed segment that is whole: its manifest names the job's id and its frames are all there."""
    try:
        m = read_segment_manifest(path)
        if m.get("id") != manifest_id or m.get("replacement", {}).get("frames_total") != segment.frames:
            return False
        with av.open(os.fspath(path)) as c:
            vs = c.streams.video[0]
            n = sum(1 for p in c.demux(vs) if p.size)
        return n == segment.frames
    except (OSError, ValueError, KeyError, IndexError, av.error.FFmpegError):
        return False


def read_segment_manifest(path: Path) -> dict:
    with open(mf.sidecar_path(path), encoding="utf-8") as f:
        return json.load(f)
