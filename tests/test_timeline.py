"""facecomp timeline: real OTIO timelines, EDL (CMX 3600) and FCP 7 XML through the installed adapters,
real renders of the selected clips (with handles) through the queue, and the output timeline read back."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import av
import pytest

otio = pytest.importorskip("opentimelineio", reason="the timeline extra (OpenTimelineIO) is not installed")
from opentimelineio import opentime as ot

CLI = [sys.executable, "-c", "import sys; from facecomp.cli import main; sys.exit(main())"]
RATE = 25


def facecomp(*args, check=True):
    proc = subprocess.run([*CLI, *map(str, args)], capture_output=True, text=True, timeout=240, check=False)
    if check and proc.returncode != 0:
        raise AssertionError(f"facecomp {' '.join(map(str, args))} exited {proc.returncode}:\n{proc.stderr[-3000:]}")
    return proc


def _clip(media: Path, name: str, start: int, frames: int, marker: str | None = None, color=None):
    ref = otio.schema.ExternalReference(target_url=(media / name).as_uri(),
                                        available_range=ot.TimeRange(ot.RationalTime(0, RATE), ot.RationalTime(75, RATE)))
    c = otio.schema.Clip(name=name, media_reference=ref,
                         source_range=ot.TimeRange(ot.RationalTime(start, RATE), ot.RationalTime(frames, RATE)))
    if marker:
        c.markers.append(otio.schema.Marker(name=marker, marked_range=ot.TimeRange(ot.RationalTime(start, RATE),
                                                                                 ot.RationalTime(1, RATE))))
    if color is not None:
        c.color = color
    return c


def make_timeline(media: Path):
    tl = otio.schema.Timeline(name="cut")
    v1 = otio.schema.Track(name="V1")
    v1.append(_clip(media, "grid_bbaf2n.mpg", 20, 8, marker="swap"))
    v1.append(otio.schema.Gap(source_range=ot.TimeRange(ot.RationalTime(0, RATE), ot.RationalTime(5, RATE))))
    v1.append(_clip(media, "grid_lwbsza.mpg", 30, 6))
    tl.tracks.append(v1)
    v2 = otio.schema.Track(name="V2")
    v2.append(otio.schema.Gap(source_range=ot.TimeRange(ot.RationalTime(0, RATE), ot.RationalTime(10, RATE))))
    v2.append(_clip(media, "grid_swiz3n.mpg", 5, 6, color=otio.core.Color.GREEN))
    tl.tracks.append(v2)
    return tl


def _settings(tmp_path: Path, media: Path) -> Path:
    p = tmp_path / "look.json"
    p.write_text(json.dumps({"schema": "facecomp.effect/1", "source": [str(media / "grace_hopper.jpg")],
                             "preset": "ultrafast"}))
    return p


def _frames(path) -> int:
    with av.open(str(path)) as c:
        return sum(1 for _ in c.decode(video=0))


def _processed(track):
    return [c for c in track if isinstance(c, otio.schema.Clip)]


def test_otio_marker_selection_round_trip(tmp_path, shared_media):
    src = tmp_path / "cut.otio"
    otio.adapters.write_to_file(make_timeline(shared_media), str(src))
    out = tmp_path / "graded.otio"
    args = ["timeline", src, "--clips-with-marker", "swap", "--handles", "3", "--settings",
            _settings(tmp_path, shared_media), "-o", out, "--quiet"]
    facecomp(*args)
    tl = otio.adapters.read_from_file(str(out))
    names = [t.name for t in tl.tracks]
    assert names == ["V1", "V1 facecomp (SYNTHETIC)", "V2"]  # the new track sits directly above its source
    new = tl.tracks[1]
    assert new.duration() == tl.tracks[0].duration()
    (clip,) = _processed(new)
    orig = _processed(tl.tracks[0])[0]
    assert clip.range_in_parent() == orig.range_in_parent()  # same place on the timeline
    assert clip.source_range == orig.source_range  # same source timecodes: conforms over the original
    meta = clip.metadata["facecomp"]
    manifest = json.loads(Path(meta["manifest"]).read_text())
    mid = manifest["id"]
    assert "SYNTHETIC" in clip.name and mid[:8] in clip.name
    assert [m.name for m in clip.markers] == [f"SYNTHETIC facecomp manifest {mid}"]
    media = Path(clip.media_reference.target_url.replace("file://", ""))
    assert _frames(media) == 8 + 3 + 3  # the clip plus handles on both sides
    assert manifest["input"]["frames_rendered"] == [17, 30] and manifest["replacement"]["face_replaced"]
    assert clip.media_reference.available_range.start_time.value == 17
    assert list(meta["handles"]) == [3, 3] and meta["source"].endswith("grid_bbaf2n.mpg")
    # running the same command again resumes: the done job is reused, nothing renders again
    again = facecomp(*args[:-1], "-y", "--progress", "json")
    events = [json.loads(x) for x in again.stdout.splitlines() if x.startswith("{")]
    assert not [e for e in events if e["event"] == "segment"]
    # colour selection on the second track; no match is an error
    out2 = tmp_path / "green.otio"
    facecomp("timeline", src, "--clip-color", "green", "--handles", "0", "-o", out2, "--quiet")
    tl2 = otio.adapters.read_from_file(str(out2))
    assert [t.name for t in tl2.tracks] == ["V1", "V2", "V2 facecomp (SYNTHETIC)"]
    assert _frames(Path(_processed(tl2.tracks[2])[0].media_reference.target_url[7:])) == 6
    bad = facecomp("timeline", src, "--clips-with-marker", "nothing", "-o", tmp_path / "x.otio", check=False)
    assert bad.returncode == 2 and "no clip matches" in bad.stderr
    junk = tmp_path / "junk.otio"
    junk.write_bytes(b'{"OTIO_SCHEMA": "Timeline.1", "tracks": ' + b"[" * 5000)
    bad = facecomp("timeline", junk, "-o", tmp_path / "y.otio", check=False)
    assert bad.returncode == 4 and "cannot be read" in bad.stderr and not (tmp_path / "y.otio").exists()
    bad = facecomp("timeline", src, "-o", tmp_path / "y.aaf", check=False)
    assert bad.returncode == 2 and "unknown timeline format" in bad.stderr


def test_fcp_xml_and_edl_round_trips(tmp_path, shared_media):
    tl = make_timeline(shared_media)
    xml = tmp_path / "cut.xml"
    otio.adapters.write_to_file(tl, str(xml), adapter_name="fcp_xml")
    out_xml = tmp_path / "graded.xml"
    facecomp("timeline", xml, "--clips-with-marker", "swap", "--handles", "2", "-o", out_xml, "--quiet")
    back = otio.adapters.read_from_file(str(out_xml), adapter_name="fcp_xml")
    video = [t for t in back.tracks if t.kind == otio.schema.TrackKind.Video]
    assert len(video) == 3
    (clip,) = _processed(video[1])
    marker = clip.markers[0].name
    assert marker.startswith("SYNTHETIC facecomp manifest ") and "SYNTHETIC" in clip.name
    mid = marker.rsplit(" ", 1)[-1]
    path = Path(clip.media_reference.target_url.replace("file://", ""))
    assert json.loads(Path(str(path) + ".synthetic.json").read_text())["id"] == mid  # the marker names it
    assert _frames(path) == 8 + 2 + 2
    assert clip.source_range.start_time.value == 20 and clip.source_range.duration.value == 8

    # FCPXML: the processed clip comes back as a connected clip in a lane of its own, name and marker kept
    fcpxml = tmp_path / "cut.fcpxml"
    otio.adapters.write_to_file(tl, str(fcpxml), adapter_name="fcpx_xml")
    out_fcpxml = tmp_path / "graded.fcpxml"
    facecomp("timeline", fcpxml, "--clips-with-marker", "swap", "--handles", "0", "-o", out_fcpxml, "--quiet")
    back = otio.adapters.read_from_file(str(out_fcpxml), adapter_name="fcpx_xml")
    (clip,) = [c for c in back.find_clips() if "SYNTHETIC" in c.name]
    mid = next(m.name for m in clip.markers if m.name.startswith("SYNTHETIC facecomp manifest ")).rsplit(" ", 1)[-1]
    path = Path(clip.media_reference.target_url.replace("file://", ""))
    assert json.loads(Path(str(path) + ".synthetic.json").read_text())["id"] == mid
    assert clip.range_in_parent().start_time.value == 0 and _frames(path) == 8

    # EDL: one video track; the reader finds its rate (25) from the events; the output holds the processed track
    one = otio.schema.Timeline(name="cut")
    one.tracks.append(copy_track(tl.tracks[0]))
    edl = tmp_path / "cut.edl"
    otio.adapters.write_to_file(one, str(edl), adapter_name="cmx_3600")
    out_edl = tmp_path / "graded.edl"
    facecomp("timeline", edl, "--track", "1", "--handles", "0", "-o", out_edl, "--quiet", "--workers", "2")
    text = out_edl.read_text()
    assert "SYNTHETIC" in text and "FROM CLIP" in text
    back = otio.adapters.read_from_file(str(out_edl), adapter_name="cmx_3600", rate=RATE)
    clips = back.find_clips()
    assert [c.source_range for c in clips] == [c.source_range for c in one.find_clips()]
    for c in clips:
        assert "SYNTHETIC" in c.name.upper()
        media = Path(c.media_reference.target_url.replace("file://", ""))
        mid = json.loads(Path(str(media) + ".synthetic.json").read_text())["id"]
        assert any(mid.upper() in m.name.upper() for m in c.markers)
        assert _frames(media) == c.source_range.duration.value


def copy_track(track):
    return track.deepcopy()
