"""Timelines in and out through OpenTimelineIO: selected clips become queue jobs, results a new track.

``.otio`` is read natively; EDL (CMX 3600), FCP 7 XML and FCPXML through the OTIO adapter packages. Each
selected clip becomes one job over its source range plus handles; the output timeline is the input with,
directly above every track that had a selected clip, a new track holding the processed clips at the same
timeline positions and with the same source timecodes (so they conform over the originals), gaps
elsewhere. What must survive every format is in clip names and markers (the processed clip's name says
SYNTHETIC, its marker names the manifest id); the fuller record (manifest path, job id) is in OTIO
metadata, which only ``.otio`` keeps. An EDL holds one video track, so an EDL output holds the processed
track alone (the original EDL still has the source track).
"""

from __future__ import annotations

import copy
import os
import re
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import unquote, urlparse

from ..errors import InvalidMediaError, SettingsError

ADAPTERS = {".otio": "otio_json", ".edl": "cmx_3600", ".xml": "fcp_xml", ".fcpxml": "fcpx_xml"}
MARKER_PREFIX = "SYNTHETIC facecomp manifest "


def _otio():
    try:
        import opentimelineio as otio
    except ImportError as exc:
        raise SettingsError("timelines need the timeline extra", hint="pip install 'facecomp[timeline]'") from exc
    return otio


def adapter_for(path: str | os.PathLike) -> str:
    ext = Path(path).suffix.lower()
    if ext not in ADAPTERS:
        raise SettingsError(f"unknown timeline format {ext or '(none)'}", path=path,
                            hint="use .otio, .edl, .xml (FCP 7) or .fcpxml")
    return ADAPTERS[ext]


EDL_RATES = (24.0, 25.0, 30.0, 23.976, 29.97, 50.0, 59.94, 60.0)


def read_timeline(path: str | os.PathLike, rate: float | None = None):
    """The timeline in ``path``. An EDL carries no frame rate: ``rate``, else the first common rate at
    which every event's source and record durations agree (the EDL reader checks that)."""
    otio = _otio()
    p = Path(path)
    if not p.is_file():
        raise SettingsError("no such timeline file", path=p)
    if p.stat().st_size > 64 << 20:
        raise SettingsError("the timeline file is over 64 MiB; refused", path=p)
    adapter = adapter_for(p)
    rates = ((rate,) if rate else EDL_RATES) if adapter == "cmx_3600" else (None,)
    error = None
    for r in rates:
        try:
            kw = {"rate": r} if r else {}
            result = otio.adapters.read_from_file(os.fspath(p), adapter_name=adapter, **kw)
            break
        except Exception as exc:  # noqa: BLE001  adapters raise their own types (and plain ones) for bad files
            error = exc
    else:
        hint = "give the EDL's frame rate with --rate" if adapter == "cmx_3600" and not rate else None
        raise InvalidMediaError(f"the timeline cannot be read ({type(error).__name__}: {error})", path=p,
                                hint=hint) from error
    if isinstance(result, otio.schema.SerializableCollection):  # FCP XML may hold several sequences
        timelines = [t for t in result.find_children(descended_from_type=otio.schema.Timeline)] or list(result)
        if not timelines:
            raise InvalidMediaError("the file holds no timeline", path=p)
        result = timelines[0]
    if not isinstance(result, otio.schema.Timeline):
        raise InvalidMediaError("the file holds no timeline", path=p)
    return result


def _color_name(color) -> str | None:
    if color is None:
        return None
    return (getattr(color, "name", None) or str(color)).lower()


@dataclass(frozen=True)
class Selection:
    track: int | None = None  # 1-based among video tracks
    marker: str | None = None
    color: str | None = None


def select_clips(timeline, selection: Selection) -> list[tuple[int, object]]:
    """(video track number, clip) pairs for the chosen clips, in timeline order."""
    otio = _otio()
    tracks = [t for t in timeline.tracks if t.kind == otio.schema.TrackKind.Video]
    if selection.track is not None and not 1 <= selection.track <= len(tracks):
        raise SettingsError(f"--track {selection.track}: the timeline has {len(tracks)} video track(s)")
    out = []
    for n, track in enumerate(tracks, 1):
        if selection.track is not None and n != selection.track:
            continue
        for clip in track.find_clips(shallow_search=True):
            # case-insensitive: EDL locators come back upper-case
            if selection.marker is not None and not any((m.name or "").lower() == selection.marker.lower()
                                                        for m in clip.markers):
                continue
            if selection.color is not None and _color_name(getattr(clip, "color", None)) != selection.color.lower():
                continue
            out.append((n, clip))
    return out


def media_path(clip, base_dir: Path, media_dir: Path | None) -> str:
    """The clip's media file: its reference's URL or path (relative to the timeline), else by clip name."""
    otio = _otio()
    ref = clip.media_reference
    if isinstance(ref, otio.schema.ExternalReference) and ref.target_url:
        url = urlparse(ref.target_url)
        raw = unquote(url.path) if url.scheme == "file" else ref.target_url
        p = Path(raw)
        return os.fspath(p if p.is_absolute() else base_dir / p)
    for folder in [d for d in (media_dir, base_dir) if d is not None]:  # EDLs name clips, not files
        cand = folder / clip.name
        if clip.name and cand.is_file():
            return os.fspath(cand)
    raise SettingsError(f"clip {clip.name!r} has no media file the timeline names",
                        hint="give --media-dir, the folder holding the clips by the names the EDL uses")


@dataclass(frozen=True)
class ClipJob:
    track: int
    clip_name: str
    input: str
    start: int  # source frames, handles included
    end: int
    handle_before: int
    handle_after: int
    media_start_frames: int  # the source's first frame on the timeline's source time axis
    output: str
    name: str


def _frames(rt, fps: float) -> int:
    return round(rt.to_seconds() * fps)


def plan_jobs(timeline, picks, *, base_dir: Path, media_dir: Path | None, out_dir: Path, handles: int,
              stem: str) -> list[ClipJob]:
    from ..video.info import parse_timecode
    from ..video.reader import VideoReader
    jobs = []
    for k, (track, clip) in enumerate(picks, 1):
        path = media_path(clip, base_dir, media_dir)
        if not os.path.isfile(path):
            raise SettingsError(f"clip {clip.name!r}: media file {path} is missing")
        with VideoReader(path) as reader:
            fps, count, tc = float(reader.info.fps), reader.info.frame_count, reader.info.timecode
            rate = reader.info.fps
        ref = clip.media_reference
        avail = getattr(ref, "available_range", None)
        if avail is not None:
            media_start = _frames(avail.start_time, fps)
        elif tc:
            media_start = parse_timecode(tc, rate)
        else:
            media_start = 0
        sr = clip.trimmed_range()
        first = _frames(sr.start_time, fps) - media_start
        last = first + max(1, _frames(sr.duration, fps))
        if first < 0 or last > count:
            raise SettingsError(f"clip {clip.name!r} uses frames {first}..{last - 1}, outside its media's 0..{count - 1}",
                                path=path)
        start, end = max(0, first - handles), min(count, last + handles)
        slug = re.sub(r"[^A-Za-z0-9._-]+", "_", Path(clip.name or "clip").stem)[:40] or "clip"
        name = f"{stem}_V{track}_{k:03d}_{slug}"
        jobs.append(ClipJob(track=track, clip_name=clip.name, input=path, start=start, end=end,
                            handle_before=first - start, handle_after=end - last, media_start_frames=media_start,
                            output=os.fspath(out_dir / f"{name}.mp4"), name=name))
    return jobs


def build_output(timeline, picks, done: dict[int, tuple[ClipJob, dict]]):
    """The timeline with a processed track above each source track that had selected clips.

    ``done`` maps the index in ``picks`` to (job, manifest) for each clip that rendered.
    """
    otio = _otio()
    ot = otio.opentime
    out = copy.deepcopy(timeline)
    src_tracks = [t for t in timeline.tracks if t.kind == otio.schema.TrackKind.Video]
    out_tracks = [t for t in out.tracks if t.kind == otio.schema.TrackKind.Video]
    by_track: dict[int, dict[int, tuple[ClipJob, dict]]] = {}
    for i, (track, clip) in enumerate(picks):
        if i in done:
            by_track.setdefault(track, {})[id(clip)] = done[i]
    # insert from the top down so the indices of the tracks below stay valid
    for number in sorted(by_track, reverse=True):
        src = src_tracks[number - 1]
        new = otio.schema.Track(name=f"{src.name or f'V{number}'} facecomp (SYNTHETIC)",
                                kind=otio.schema.TrackKind.Video)
        for item in src:
            if isinstance(item, otio.schema.Transition):
                continue
            dur = item.trimmed_range().duration
            if isinstance(item, otio.schema.Clip) and id(item) in by_track[number]:
                job, manifest = by_track[number][id(item)]
                new.append(_processed_clip(otio, ot, item, job, manifest))
            else:
                new.append(otio.schema.Gap(source_range=ot.TimeRange(ot.RationalTime(0, dur.rate), dur)))
        parent_index = list(out.tracks).index(out_tracks[number - 1])
        out.tracks.insert(parent_index + 1, new)
    return out


def _processed_clip(otio, ot, clip, job: ClipJob, manifest: dict):
    sr = clip.trimmed_range()
    rate = sr.start_time.rate
    mid = manifest["id"]
    # the processed file covers source frames start..end; it carries the same source timecodes
    avail_start = ot.RationalTime(job.media_start_frames + job.start, rate)
    ref = otio.schema.ExternalReference(target_url=Path(job.output).as_uri(),
                                        available_range=ot.TimeRange(avail_start,
                                                                     ot.RationalTime(job.end - job.start, rate)))
    new = otio.schema.Clip(name=f"{clip.name} [SYNTHETIC {mid[:8]}]", media_reference=ref, source_range=sr)
    new.metadata["facecomp"] = {"synthetic": True, "manifest_id": mid, "manifest": job.output + ".synthetic.json",
                                "source_clip": clip.name, "source": job.input,
                                "handles": [job.handle_before, job.handle_after]}
    new.markers.append(otio.schema.Marker(name=f"{MARKER_PREFIX}{mid}",
                                          marked_range=ot.TimeRange(sr.start_time, ot.RationalTime(1, rate)),
                                          color=otio.schema.MarkerColor.RED,
                                          metadata={"facecomp": {"manifest_id": mid}}))
    return new


def write_timeline(timeline, path: str | os.PathLike, *, overwrite: bool = False) -> Path:
    """Write through the adapter for the extension, to a temp name, then rename."""
    otio = _otio()
    p = Path(path)
    adapter = adapter_for(p)
    if p.exists() and not overwrite:
        raise SettingsError("the output timeline exists", path=p, hint="pass -y to replace it")
    if adapter == "cmx_3600":  # one video track per EDL: the processed ones
        keep = [t for t in timeline.tracks if t.kind == otio.schema.TrackKind.Video and "facecomp" in (t.name or "")]
        if len(keep) != 1:
            raise SettingsError("an EDL holds one video track; the result has "
                                f"{len(keep)} processed tracks", path=p, hint="write .otio or .xml instead")
        timeline = otio.schema.Timeline(name=timeline.name, global_start_time=timeline.global_start_time)
        timeline.tracks.append(copy.deepcopy(keep[0]))
    tmp = p.with_name(f".{p.stem}.facecomp-{os.getpid()}{p.suffix}")
    try:
        otio.adapters.write_to_file(timeline, os.fspath(tmp), adapter_name=adapter)
        os.replace(tmp, p)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return p
