"""The pixel contract a host needs: HDR floats, straight and premultiplied alpha, render windows (tiles)."""

from __future__ import annotations

import argparse

import numpy as np
import pytest
from facecomp.disclosure.label import MIN_OPACITY
from facecomp.disclosure.watermark import decode_frame, manifest_id_for
from facecomp.effect import Engine
from mediagen import pattern

H, W = 270, 480


@pytest.fixture(scope="module")
def engine():
    return Engine()


def _render(engine, frame, clip="contract", **kw):
    with engine.open_clip(None, clip) as s:
        return s.render(frame, 3, 0.12, **kw)


def _box(engine, h=H, w=W):
    x0, y0, x1, y1 = engine.stamper.label_box(h, w)
    inside = np.zeros((h, w), bool)
    inside[y0:y1, x0:x1] = True
    return inside


# ------------------------------------------------------------------------------------------------ HDR

def test_float_keeps_values_outside_0_1_except_in_the_label_box(engine):
    rng = np.random.default_rng(1)
    frame = pattern(H, W, 0, dtype=np.float32)
    hdr = rng.random((H, W)) < 0.3
    frame[hdr] = frame[hdr] * 6.0 + 1.5  # highlights up to 7.5
    neg = (rng.random((H, W)) < 0.05) & ~hdr
    frame[neg] = -0.25
    out = _render(engine, frame).pixels
    inside = _box(engine)
    assert out.dtype == np.float32 and out.shape == frame.shape
    assert out[inside].min() >= 0.0 and out[inside].max() <= 1.0, "the label box is drawn on 0..1"
    outside_hdr = hdr[..., None].repeat(3, 2) & ~inside[..., None]
    assert outside_hdr.sum() > 10_000
    assert (out[outside_hdr] > 1.0).all(), "highlights survive outside the box"
    # never pushed further out of range, and moved at most by the watermark's few code values
    assert (out[outside_hdr] <= frame[outside_hdr]).all()
    assert np.abs(out[outside_hdr] - frame[outside_hdr]).max() < 8.0 / 255.0
    outside_neg = neg[..., None].repeat(3, 2) & ~inside[..., None]
    assert (out[outside_neg] < 0.0).all() and (out[outside_neg] >= -0.25).all()
    # in-range pixels stay in range
    ok = ~(hdr | neg | inside)
    assert out[ok].min() >= 0.0 and out[ok].max() <= 1.0


# ------------------------------------------------------------------------------------------------ alpha

@pytest.mark.parametrize("dtype", [np.float32, np.uint16, np.uint8])
def test_straight_and_premultiplied_alpha_agree(engine, dtype):
    straight = pattern(H, W, 1, channels=4, dtype=np.float32)
    straight[:, :, 3] = np.linspace(0.1, 1.0, W, dtype=np.float32)[None, :]  # partly transparent everywhere
    premult = straight.copy()
    premult[..., :3] *= premult[..., 3:]
    maxv = 1.0 if dtype == np.float32 else float(np.iinfo(dtype).max)

    def conv(a):
        return a if dtype == np.float32 else np.rint(a * maxv).astype(dtype)

    s = _render(engine, conv(straight), alpha="straight").pixels.astype(np.float64) / maxv
    p = _render(engine, conv(premult), alpha="premultiplied").pixels.astype(np.float64) / maxv
    inside = _box(engine)
    # the label box is opaque enough in alpha in both modes, and both say the same alpha
    assert s[inside][:, 3].min() >= MIN_OPACITY - 1.5 / 255
    tol = 1e-4 if dtype == np.float32 else 2.5 / maxv + (2.0 / 255 if dtype == np.uint8 else 0.0)
    assert np.abs(s[..., 3] - p[..., 3]).max() <= tol
    # premultiplied colour = straight colour x alpha, inside the box and out
    assert np.abs(p[..., :3] - s[..., :3] * s[..., 3:]).max() <= tol + (1.0 / 255 if dtype == np.uint8 else 1e-4)
    # the box shows the label: near-black box, white text, in both
    box_straight = s[inside][:, :3]
    assert np.median(box_straight) < 0.2 and box_straight.max() > 0.9


def test_alpha_none_draws_an_opaque_label(engine):
    frame = pattern(H, W, 2, channels=4, dtype=np.uint8)
    frame[..., 3] = 7  # not alpha: arbitrary data the host ignores
    out = _render(engine, frame, alpha="none").pixels
    inside = _box(engine)
    assert (out[inside][:, 3] == 255).all()
    assert (out[~inside][:, 3] == 7).all(), "the fourth channel is untouched outside the box"


# ------------------------------------------------------------------------------------------------ tiles

def _tiles(xs, ys):
    return [(x0, y0, x1, y1) for y0, y1 in zip(ys[:-1], ys[1:]) for x0, x1 in zip(xs[:-1], xs[1:])]


@pytest.mark.parametrize("dtype,channels", [(np.uint8, 3), (np.float32, 4), (np.uint16, 3), (np.float32, 3)])
@pytest.mark.parametrize("grid", ["2x2", "odd"])
def test_tiles_put_together_equal_the_whole_frame(engine, dtype, channels, grid):
    frame = pattern(H, W, 4, channels=channels, dtype=dtype)
    box = engine.stamper.label_box(H, W)
    if grid == "2x2":
        tiles = _tiles([0, W // 2, W], [0, H // 2, H])
    else:  # odd sizes, edges through the label box and through its text
        tiles = _tiles([0, box[0] + 17, box[0] + 101, 333, W], [0, box[1] + 9, 131, H])
    whole = _render(engine, frame, full_size=(H, W)).pixels
    assembled = np.zeros_like(frame)
    for x0, y0, x1, y1 in tiles:
        part = _render(engine, np.ascontiguousarray(frame[y0:y1, x0:x1]), full_size=(H, W),
                       window=(x0, y0, x1, y1)).pixels
        assert part.shape == (y1 - y0, x1 - x0, channels)
        assembled[y0:y1, x0:x1] = part
    assert np.array_equal(assembled, whole), "tiles differ from the whole-frame render"
    # and the whole frame carries the label and a readable watermark
    assert not np.array_equal(whole[box[1]:box[3], box[0]:box[2]], frame[box[1]:box[3], box[0]:box[2]])
    if dtype == np.uint8 and channels == 3:
        dec = decode_frame(whole)
        assert dec.found and dec.payload is not None and dec.payload.manifest_id == manifest_id_for("contract")


def test_a_tile_without_the_label_box_only_carries_the_watermark(engine):
    frame = pattern(H, W, 5, dtype=np.uint8)
    box = engine.stamper.label_box(H, W)
    x0, y0, x1, y1 = box[2] + 5, box[3] + 5, W, H  # right of and below the label
    part = _render(engine, np.ascontiguousarray(frame[y0:y1, x0:x1]), full_size=(H, W),
                   window=(x0, y0, x1, y1)).pixels
    diff = np.abs(part.astype(int) - frame[y0:y1, x0:x1])
    assert 0 < diff.max() <= 8, "a faint watermark, no label"


def test_window_geometry_is_checked(engine):
    from facecomp.errors import SettingsError

    frame = pattern(100, 100, 0)
    with engine.open_clip(None, "g") as s:
        for full, win in [((H, W), (W - 50, 0, W + 50, 100)), ((H, W), (0, 0, 100, 99)), (None, (0, 0, 100, 100 + 1))]:
            with pytest.raises(SettingsError):
                s.render(frame, 0, 0.0, full_size=full, window=win)


# ------------------------------------------------------------------------------------------------ faces on tiles

def test_face_tile_with_the_clip_equals_the_whole_frame_there(shared_media):
    """With the clip, a tile's faces come from the full frame: a tile holding the whole face matches."""
    from facecomp.swap.cli_args import add_swap_arguments, processor_from_args
    from facecomp.video.reader import VideoReader

    p = argparse.ArgumentParser()
    add_swap_arguments(p)
    args = p.parse_args(["--source", str(shared_media / "grace_hopper.jpg")])
    eng = Engine([processor_from_args(args, fps=25.0)])
    clip = shared_media / "grid_bbaf2n.mpg"
    r = VideoReader(clip)
    frames = [r.frame(i).copy() for i in range(3)]
    r.close()
    fh, fw = frames[0].shape[:2]
    win = (40, 0, 330, fh)  # the GRID face sits in the middle of the frame
    with eng.open_clip(clip, "tiles") as s:
        whole = [s.render(f, i, i / 25.0, full_size=(fh, fw)) for i, f in enumerate(frames)]
        part = s.render(np.ascontiguousarray(frames[2][:, win[0]:win[2]]), 2, 2 / 25.0, full_size=(fh, fw),
                        window=win)
    assert whole[2].replaced_tracks and part.replaced_tracks == whole[2].replaced_tracks
    assert np.array_equal(part.pixels, whole[2].pixels[:, win[0]:win[2]])


def test_window_exact_watermark_survives_h264(shared_media, tmp_path):
    """Host frames carry the window-exact watermark: it must still decode after the host's encode."""
    from fractions import Fraction

    import cv2
    from facecomp.disclosure.watermark import decode_file
    from facecomp.video.encode import ResolvedEncode
    from facecomp.video.reader import VideoReader
    from facecomp.video.writer import VideoWriter

    w, h = 640, 360
    r = VideoReader(shared_media / "grid_bbaf2n.mpg")
    enc = ResolvedEncode(codec="h264", encoder="libx264", pix_fmt="yuv420p", bit_depth=8, alpha=False,
                         options={"crf": "23", "preset": "veryfast"}, sequence=False)
    out = tmp_path / "host.mp4"
    writer = VideoWriter(out, enc=enc, size=(w, h), fps=Fraction(25), time_base=Fraction(1, 25))
    with Engine().open_clip(None, "host-encode") as s:
        for i in range(12):
            frame = cv2.resize(r.frame(i), (w, h), interpolation=cv2.INTER_CUBIC)
            writer.write(s.render(frame, i, i / 25.0, full_size=(h, w)), i)
    r.close()
    writer.finish()
    writer.commit()
    dec = decode_file(out)
    assert dec.found and dec.payload is not None and dec.payload.manifest_id == manifest_id_for("host-encode")


# ------------------------------------------------------------------------------------------------ font

def test_the_label_font_ships_with_the_package_and_system_fonts_do_not_change_it(monkeypatch):
    from facecomp.disclosure import label as lab

    assert lab.PACKAGED_FONT.is_file() and lab.PACKAGED_FONT.stat().st_size > 100_000
    licence = lab.PACKAGED_FONT.with_name("DejaVu-LICENSE.txt").read_text(encoding="utf-8")
    assert "Bitstream" in licence and "Permission is hereby granted" in licence
    choice = lab.latin_font()
    assert choice.source == "package" and choice.path == str(lab.PACKAGED_FONT)
    before = lab.Label(lab.LabelSettings()).coverage(720, 1280).copy()
    # a machine without any installed font draws the same label pixels
    for f in (lab.latin_font, lab._font_index, lab._load, lab._size_for_cap, lab.find_cjk_font):
        f.cache_clear()
    monkeypatch.setattr(lab, "_font_dirs", list)
    try:
        assert lab._font_index() == {}
        assert lab.latin_font().source == "package"
        assert np.array_equal(lab.Label(lab.LabelSettings()).coverage(720, 1280), before)
    finally:
        for f in (lab.latin_font, lab._font_index, lab._load, lab._size_for_cap, lab.find_cjk_font):
            f.cache_clear()


def test_a_replaced_face_keeps_the_hdr_values_around_it(shared_media):
    """Float HDR frames through the face swap: highlights under the mask's soft edge are mixed, not clipped."""
    from facecomp.swap.cli_args import add_swap_arguments, processor_from_args
    from facecomp.video.reader import VideoReader

    p = argparse.ArgumentParser()
    add_swap_arguments(p)
    eng = Engine([processor_from_args(p.parse_args(["--source", str(shared_media / "grace_hopper.jpg")]), fps=25.0)])
    r = VideoReader(shared_media / "grid_bbaf2n.mpg")
    sdr = r.frame(0).astype(np.float32) / 255.0
    r.close()
    hdr = sdr * 4.0  # the same picture, graded up to 4x diffuse white
    with eng.open_clip(None, "hdr") as s:
        out_sdr = s.render(sdr, 0, 0.0).pixels
        out_hdr = s.render(hdr, 0, 0.0).pixels
    inside = _box(eng, *sdr.shape[:2])
    swapped = np.any(np.abs(out_hdr - hdr) > 12.0 / 255.0, axis=2) & ~inside  # more than the watermark moves
    assert swapped.sum() > 1000, "the face was replaced"
    assert out_sdr.min() >= 0.0 and out_sdr.max() <= 1.0, "an SDR frame stays in 0..1"
    assert (out_hdr[swapped] > 1.05).sum() > 100, "highlights under the soft edge survive"
    assert (out_hdr[~swapped & ~inside] > 1.0).mean() > 0.5, "the rest keeps its HDR values"
