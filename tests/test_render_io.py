"""The disclosed render path end to end: pixels, timing, streams, tags and manifest read back."""

from __future__ import annotations

import json
from fractions import Fraction

import av
import numpy as np
import pytest

from facecomp.disclosure.label import Label, LabelSettings
from facecomp.disclosure.manifest import load_manifest, sha256_file, sidecar_path
from facecomp.disclosure.metadata import IPTC_COMPOSITE_TRAINED, find_tag, parse_aigc, read_container_tags
from facecomp.disclosure.stamp import Stamper
from facecomp.disclosure.watermark import decode_frames, manifest_id_for
from facecomp.effect import Engine
from facecomp.render.clip import RenderSettings, render_clip
from facecomp.video.encode import EncodeSettings
from facecomp.video.reader import VideoReader

from mediagen import decode_all, packets, pattern, read_sequence, write_clip, write_sequence


def _expected(frames, manifest: dict, first_index: int = 0, settings: LabelSettings = LabelSettings()):
    """What a lossless render must hold: the input through the one stamp (label + watermark keyed to the
    render's manifest id), and nothing else changed."""
    stamper = Stamper(settings, watermark_id=manifest["id"])
    return [stamper.stamp(f, index=first_index + i).pixels for i, f in enumerate(frames)]


def _watermark_only(a: np.ndarray, b: np.ndarray, mask: np.ndarray) -> None:
    """Outside the label the only change is the faint watermark (a few code values), never the picture."""
    scale = 257.0 if a.dtype == np.uint16 else 1.0
    diff = np.abs(a[..., :3].astype(np.float64) - b[..., :3].astype(np.float64))[mask] / scale
    assert diff.max() <= 16 and diff.mean() < 3


def _outside_box(h: int, w: int, settings: LabelSettings = LabelSettings()) -> np.ndarray:
    x0, y0, x1, y1 = Label(settings).layout(h, w).box
    mask = np.ones((h, w), bool)
    mask[y0:y1, x0:x1] = False
    return mask


def _assert_label_present(frame: np.ndarray, settings: LabelSettings = LabelSettings()) -> None:
    """The label box is dark (the box) with bright text strokes, unlike the busy test pattern."""
    h, w = frame.shape[:2]
    x0, y0, x1, y1 = Label(settings).layout(h, w).box
    region = frame[y0:y1, x0:x1, :3].astype(np.float64)
    if frame.dtype == np.uint16:
        region /= 257.0
    luma = region.mean(axis=2)
    assert np.median(luma) < 60, "label box is not dark"
    assert (luma > 200).mean() > 0.05, "no bright text strokes in the label box"


# ---------------------------------------------------------------- lossless round trips per pixel format
@pytest.mark.parametrize("channels,dtype,ext", [
    (3, np.uint8, ".png"), (4, np.uint8, ".png"), (3, np.uint16, ".png"), (4, np.uint16, ".tif"),
    (3, np.uint16, ".tif"),
])
def test_sequence_round_trip_is_bit_identical_outside_the_label(tmp_path, channels, dtype, ext):
    frames = [pattern(144, 192, i, channels, dtype) for i in range(4)]
    src = write_sequence(tmp_path / "in", frames, ext=".png" if ext == ".png" else ".tif")
    out = tmp_path / "out" / f"r_%05d{ext}"
    out.parent.mkdir()
    res = render_clip(src, out, Engine())
    got = read_sequence(out.parent, ext)
    assert len(got) == 4
    mask = _outside_box(144, 192)
    for a, b, e in zip(frames, got, _expected(frames, res.manifest)):
        assert b.dtype == a.dtype and b.shape == a.shape
        assert np.array_equal(b, e)  # bit-exact: the stamp is the only change
        _watermark_only(a, b, mask)
        _assert_label_present(b)
        if channels == 4:  # alpha kept, and raised under the label so it shows when composited
            assert np.array_equal(a[..., 3][mask], b[..., 3][mask])
    man = load_manifest(sidecar_path(out))
    assert [f["sha256"] for f in man["output"]["files"]] == [sha256_file(p) for p in sorted(out.parent.glob(f"*{ext}"))]
    assert res.manifest["replacement"]["face_replaced"] is False
    # the settings name the watermark this file carries (the job's), not the engine's host-session one
    from facecomp.disclosure.watermark import manifest_id_for

    wm = man["settings"]["engine"]["disclosure"]["watermark"]
    assert wm == man["disclosure"]["watermark"] and wm["manifest_id32"] == manifest_id_for(man["id"])


def test_float32_processing_keeps_16_bit_pixels(tmp_path):
    frames = [pattern(120, 160, i, 3, np.uint16) for i in range(3)]
    src = write_sequence(tmp_path / "in", frames, ext=".tif")
    out = tmp_path / "o" / "f_%04d.tif"
    out.parent.mkdir()
    res = render_clip(src, out, Engine(), RenderSettings(dtype="float32"))
    got = read_sequence(out.parent, ".tif")
    floats = [f.astype(np.float32) * np.float32(1.0 / 65535.0) for f in frames]  # as the reader scales
    for b, e in zip(got, _expected(floats, res.manifest)):
        want = (np.clip(e, 0, 1) * 65535.0 + 0.5).astype(np.uint16)
        assert b.dtype == np.uint16 and np.array_equal(b, want)


def test_qtrle_mov_keeps_rgba_exactly(tmp_path):
    frames = [pattern(96, 160, i, 4, np.uint8) for i in range(3)]
    src = write_sequence(tmp_path / "in", frames)
    out = tmp_path / "o.mov"
    res = render_clip(src, out, Engine(), RenderSettings(encode=EncodeSettings(codec="qtrle")))
    got = decode_all(out, "rgba")
    for b, e in zip(got, _expected(frames, res.manifest)):
        assert np.array_equal(b, e)


def test_prores4444_keeps_alpha(tmp_path):
    frames = [pattern(96, 160, i, 4, np.uint8) for i in range(3)]
    src = write_sequence(tmp_path / "in", frames)
    out = tmp_path / "o.mov"
    render_clip(src, out, Engine())  # .mov + alpha source -> ProRes 4444 by default
    with av.open(str(out)) as c:
        assert c.streams.video[0].codec_context.name == "prores"
        assert c.streams.video[0].codec_context.pix_fmt.startswith("yuva444p")  # decoder reports 12-bit
    got = decode_all(out, "rgba")
    mask = _outside_box(96, 160)
    err = np.abs(frames[1][..., 3].astype(int) - got[1][..., 3].astype(int))[mask]
    assert err.max() <= 1


def test_alpha_at_a_depth_the_codec_has_no_alpha_for_names_the_depths_it_has(tmp_path):
    """A 16-bit source with alpha into FFV1 (.mkv: alpha at 8 bits only): refused before anything is
    written, saying which depth carries it and which containers keep 16-bit alpha."""
    from facecomp.errors import SettingsError

    frames = [pattern(96, 160, i, 4, np.uint16) for i in range(2)]
    src = write_sequence(tmp_path / "in", frames, ext=".tif")
    out = tmp_path / "o.mkv"
    with pytest.raises(SettingsError) as e:
        render_clip(src, out, Engine(), RenderSettings(encode=EncodeSettings(codec="ffv1", alpha=True)))
    assert "ffv1 carries alpha at 8-bit only" in e.value.message and "--bit-depth 8" in e.value.hint
    assert "png" in e.value.hint and not list(tmp_path.glob("o.mkv*"))
    res = render_clip(src, out, Engine(), RenderSettings(encode=EncodeSettings(codec="ffv1", alpha=True,
                                                                               bit_depth=8)))
    got = decode_all(out, "rgba")
    assert len(got) == 2 and res.frames == 2
    mask = _outside_box(96, 160)
    err = np.abs((frames[1][..., 3] >> 8).astype(int) - got[1][..., 3].astype(int))[mask]
    assert err.max() <= 1  # the alpha kept, at 8 bits


def test_h264_10bit_from_16bit_source(tmp_path):
    frames = [pattern(120, 160, i, 3, np.uint16) for i in range(3)]
    src = write_sequence(tmp_path / "in", frames, ext=".tif")
    out = tmp_path / "o.mp4"
    render_clip(src, out, Engine(), RenderSettings(encode=EncodeSettings(codec="h264", bit_depth=10)))
    with av.open(str(out)) as c:
        assert c.streams.video[0].codec_context.pix_fmt == "yuv420p10le"
    r = VideoReader(out)
    assert r.info.bit_depth == 10
    img = next(r.frames()).image
    assert img.dtype == np.uint16
    mask = _outside_box(120, 160)
    diff = np.abs(img.astype(float) - frames[0].astype(float))[mask]
    assert diff.mean() < 0.03 * 65535  # lossy but faithful


# ---------------------------------------------------------------- label on every frame, tags, manifest
def test_every_frame_labelled_and_tags_read_back(tmp_path):
    src = write_clip(tmp_path / "in.mp4", n=10, audio=True)
    out = tmp_path / "out.mp4"
    res = render_clip(src, out, Engine())
    frames = decode_all(out)
    assert len(frames) == 10
    for f in frames:
        _assert_label_present(f)
    wm = decode_frames(frames)  # the invisible layer, voted over frames, links to this render's manifest
    assert wm.payload is not None and wm.payload.is_synthetic
    assert wm.payload.manifest_id == manifest_id_for(res.manifest["id"])
    tags = read_container_tags(out)
    aigc = parse_aigc(find_tag(tags, "AIGC"))
    assert aigc["Label"] == "1" and aigc["ProduceID"] == res.manifest["id"]
    assert set(aigc) == {"Label", "ContentProducer", "ProduceID", "ReservedCode1", "ContentPropagator",
                         "PropagateID", "ReservedCode2"}
    assert find_tag(tags, "DigitalSourceType") == IPTC_COMPOSITE_TRAINED
    assert "SYNTHETIC" in find_tag(tags, "comment")
    man = json.loads(sidecar_path(out).read_text())
    assert man["schema"] == "facecomp.manifest/1"
    assert man["output"]["sha256"] == sha256_file(out)
    assert man["input"]["sha256"] == sha256_file(src)
    assert man["replacement"]["ranges"] == [] and man["replacement"]["note"]
    assert man["tool"]["name"] == "facecomp"


def test_mkv_tags_read_back(tmp_path):
    src = write_clip(tmp_path / "in.mp4", n=4)
    out = tmp_path / "out.mkv"
    render_clip(src, out, Engine())
    tags = read_container_tags(out)
    assert parse_aigc(find_tag(tags, "AIGC"))["Label"] == "1"


def test_label_corner_and_scale_follow_settings(tmp_path):
    src = write_clip(tmp_path / "in.mp4", n=2)
    out = tmp_path / "out.mp4"
    settings = LabelSettings(corner="bottom-right", scale=1.5)
    render_clip(src, out, Engine(label=settings))
    f = decode_all(out)[0]
    _assert_label_present(f, settings)
    x0, y0, x1, y1 = Label(settings).layout(240, 320).box
    assert x1 > 320 * 0.6 and y1 > 240 * 0.6


# ---------------------------------------------------------------- streams and timing carried
def test_audio_packets_identical(tmp_path):
    src = write_clip(tmp_path / "in.mov", n=12, audio=True)
    out = tmp_path / "out.mp4"
    render_clip(src, out, Engine())
    assert packets(src, "audio") == packets(out, "audio")
    assert len(packets(out, "audio")) > 5


def test_timecode_rotation_colour_kept(tmp_path):
    src = write_clip(tmp_path / "in.mov", w=320, h=240, n=6, rotation=90, timecode="10:00:00:00",
                     options={"colorprim": "bt709"})
    out = tmp_path / "out.mov"
    render_clip(src, out, Engine(), RenderSettings(start=2))
    info_in, info_out = VideoReader(src).info, VideoReader(out).info
    assert info_in.rotation == 90 and info_out.rotation == 90
    assert (info_out.width, info_out.height) == (320, 240)  # coded size kept; display is 240x320
    assert info_out.timecode == "10:00:00:02"  # offset by the trimmed frames
    assert info_out.frame_count == 4
    # the label is upright in display orientation: find it in the display-rotated frame
    disp = next(VideoReader(out).frames()).image
    assert disp.shape[:2] == (320, 240)
    _assert_label_present(disp)


def test_colour_tags_carried(tmp_path):
    src = write_clip(tmp_path / "in.mp4", n=3, w=320, h=240)
    with av.open(str(src)) as c:  # re-tag the source as BT.709 full chain via a second encode
        pass
    src2 = tmp_path / "in709.mp4"
    frames = [pattern(240, 320, i) for i in range(3)]
    with av.open(str(src2), "w") as c:
        s = c.add_stream("libx264", rate=25)
        s.width, s.height, s.pix_fmt = 320, 240, "yuv420p"
        cc = s.codec_context
        cc.color_primaries, cc.color_trc, cc.colorspace, cc.color_range = 1, 1, 1, 1
        for img in frames:
            vf = av.VideoFrame.from_ndarray(img, format="rgb24").reformat(format="yuv420p", dst_colorspace=1)
            for p in s.encode(vf):
                c.mux(p)
        for p in s.encode():
            c.mux(p)
    out = tmp_path / "out.mp4"
    render_clip(src2, out, Engine())
    ci, co = VideoReader(src2).info.color, VideoReader(out).info.color
    assert (co.primaries, co.transfer, co.matrix, co.range) == (ci.primaries, ci.transfer, ci.matrix, ci.range) == (1, 1, 1, 1)


def test_vfr_timestamps_kept(tmp_path):
    tb = Fraction(1, 1000)
    pts = [0, 40, 100, 120, 300, 340, 380, 500]
    src = write_clip(tmp_path / "in.mkv", n=len(pts), pts=pts, time_base=tb)
    out = tmp_path / "out.mkv"
    render_clip(src, out, Engine())
    def times(p):
        with av.open(str(p)) as c:
            return [round(float(f.time), 3) for f in c.decode(c.streams.video[0])]
    assert times(out) == times(src) == [p / 1000 for p in pts]
    assert VideoReader(out).info.vfr


def test_start_end_frame_accurate(tmp_path):
    frames = [pattern(96, 128, i) for i in range(10)]
    src = write_sequence(tmp_path / "in", frames)
    out = tmp_path / "o" / "f_%04d.png"
    out.parent.mkdir()
    res = render_clip(src, out, Engine(), RenderSettings(start=3, end=7))
    got = read_sequence(out.parent)
    assert len(got) == 4
    for g, e in zip(got, _expected(frames[3:7], res.manifest, first_index=3)):
        assert np.array_equal(g, e)
    assert sorted(p.name for p in out.parent.glob("*.png"))[0] == "f_0003.png"  # numbering follows the source
    assert res.manifest["input"]["frames_rendered"] == [3, 6]


def test_overwriting_a_sequence_with_a_shorter_one_removes_the_old_extra_frames(tmp_path):
    import cv2
    from facecomp.disclosure.verify import OK, inspect_file
    frames = [pattern(96, 128, i) for i in range(8)]
    src = write_sequence(tmp_path / "in", frames)
    out = tmp_path / "o" / "f_%04d.png"
    out.parent.mkdir()
    render_clip(src, out, Engine())
    assert len(list(out.parent.glob("f_*.png"))) == 8
    # files that are not frames of the pattern (other padding, other names, a backup, a folder) are kept
    others = {"f_00005.png": b"a", "f_5.png": b"b", "f_0005.png.bak": b"c", "g_0005.png": b"d",
              "f_0005.PNG": b"e", "notes.txt": b"f"}
    for name, data in others.items():
        (out.parent / name).write_bytes(data)
    (out.parent / "f_0009.png").mkdir()
    res = render_clip(src, out, Engine(), RenderSettings(start=2, end=5, overwrite=True))
    frames_now = sorted(p for p in out.parent.glob("f_[0-9][0-9][0-9][0-9].png") if p.is_file())
    assert [p.name for p in frames_now] == ["f_0002.png", "f_0003.png", "f_0004.png"]
    for name, data in others.items():
        assert (out.parent / name).read_bytes() == data
    assert (out.parent / "f_0009.png").is_dir()
    for p, e in zip(frames_now, _expected(frames[2:5], res.manifest, first_index=2)):
        assert np.array_equal(cv2.cvtColor(cv2.imread(str(p)), cv2.COLOR_BGR2RGB), e)
    rep = inspect_file(out, layers=("manifest", "watermark"), watermark_frames=3)
    assert [r.status for r in rep.layers] == [OK, OK], rep


def test_matte_manifest_links_to_the_main_render_and_the_input_is_hashed_once(tmp_path, shared_media, monkeypatch):
    import hashlib

    from facecomp.render import clip as clip_mod
    from facecomp.render.matte import render_matte
    from facecomp.settings import EffectSettings
    src = shared_media / "grid_bbaf2n.mpg"
    hashed = []
    real_digest = clip_mod._input_digest
    monkeypatch.setattr(clip_mod, "_input_digest", lambda reader: hashed.append(reader.path) or real_digest(reader))
    engine = Engine.from_settings(EffectSettings.from_dict({"source": [str(shared_media / "grace_hopper.jpg")]}))
    settings = RenderSettings(end=4)
    main = render_clip(src, tmp_path / "out.mp4", engine, settings)
    matte = render_matte(src, tmp_path / "matte.mov", engine, settings, main)
    assert len(hashed) == 1  # the matte takes the main render's hash
    back = load_manifest(sidecar_path(tmp_path / "matte.mov"))
    main_back = load_manifest(sidecar_path(tmp_path / "out.mp4"))
    assert back["id"] == main_back["id"] + ".matte" == matte.manifest["id"]
    link = back["settings"]["engine"]["processors"]["matte"]["matte_of"]
    assert link == {"output": str(tmp_path / "out.mp4"), "manifest_id": main_back["id"]}
    assert back["input"]["sha256"] == main_back["input"]["sha256"] == hashlib.sha256(src.read_bytes()).hexdigest()
    assert back["replacement"]["frames_total"] == main_back["replacement"]["frames_total"] == 4


def test_random_access_equals_sequential(shared_media):
    r = VideoReader(shared_media / "grid_bbaf2n.mpg")  # MPEG-PS: imprecise demuxer seeking
    seq = [f.image for f in r.frames()]
    for i in (70, 3, 40, 0, 41, 42, 74, 12):
        assert np.array_equal(r.frame(i), seq[i]), i


def test_prores4444_source_alpha_kept_end_to_end(tmp_path):
    frames = [pattern(96, 160, i, 4, np.uint16) for i in range(3)]
    src = write_clip(tmp_path / "in.mov", w=160, h=96, n=3, codec="prores_ks", pix_fmt="yuva444p10le",
                     options={"profile": "4"}, frames=frames)
    info = VideoReader(src).info
    assert info.has_alpha and info.bit_depth >= 10
    out = tmp_path / "o.mov"
    render_clip(src, out, Engine())
    r = VideoReader(out)
    assert r.info.has_alpha and r.info.codec == "prores"
    got = next(r.frames()).image
    assert got.dtype == np.uint16 and got.shape == (96, 160, 4)
    mask = _outside_box(96, 160)
    assert np.abs(got[..., 3].astype(int) - frames[0][..., 3].astype(int))[mask].max() <= 4 * 64  # 10-bit alpha, 4 LSB


@pytest.mark.parametrize("depth,pix", [(8, "yuv420p"), (10, "yuv420p10le")])
def test_h265_outputs(tmp_path, depth, pix):
    src = write_clip(tmp_path / "in.mp4", n=4)
    out = tmp_path / "o.mp4"
    render_clip(src, out, Engine(), RenderSettings(encode=EncodeSettings(codec="h265", bit_depth=depth)))
    with av.open(str(out)) as c:
        cc = c.streams.video[0].codec_context
        assert cc.name == "hevc" and cc.pix_fmt == pix
    frames = decode_all(out)
    assert len(frames) == 4
    _assert_label_present(frames[2])
