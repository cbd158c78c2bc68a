"""The invisible watermark: payload coding, every frame type, and robustness on real faces with real H.264."""

from __future__ import annotations

import concurrent.futures as cf
import io

import av
import cv2
import numpy as np
import pytest

from facecomp.disclosure.watermark import (PAYLOAD_BITS, SYNTHETIC_MARKER, Watermarker, WatermarkPayload,
                                           decode_file, decode_frame, decode_frames, manifest_id_for)

from mediagen import pattern

PAYLOAD = WatermarkPayload(manifest_id=0xC0FFEE42)


def h264_roundtrip(frames: list[np.ndarray], crf: int) -> list[np.ndarray]:
    """Encode with libx264 (yuv420p, crf) through PyAV and decode again."""
    buf = io.BytesIO()
    with av.open(buf, "w", format="mp4") as c:
        s = c.add_stream("libx264", rate=25)
        s.width, s.height, s.pix_fmt = frames[0].shape[1], frames[0].shape[0], "yuv420p"
        s.options = {"crf": str(crf)}
        for a in frames:
            for p in s.encode(av.VideoFrame.from_ndarray(a, format="rgb24")):
                c.mux(p)
        for p in s.encode():
            c.mux(p)
    buf.seek(0)
    with av.open(buf) as c:
        return [f.to_ndarray(format="rgb24") for f in c.decode(video=0)]


def real_frames(media, name: str, n: int, size=None) -> list[np.ndarray]:
    out = []
    with av.open(str(media / name)) as c:
        for f in c.decode(video=0):
            if len(out) == n:
                break
            a = f.to_ndarray(format="rgb24")
            out.append(a if size is None else cv2.resize(a, size, interpolation=cv2.INTER_CUBIC))
    return out


def accuracy(frames, payload=PAYLOAD) -> float:
    ref = payload.to_bits()
    return float(np.mean([np.mean(decode_frame(f).bits == ref) for f in frames]))


# ------------------------------------------------------------------------------------------------ payload

def test_payload_bits_round_trip_and_crc():
    p = WatermarkPayload(manifest_id=0x89ABCDEF)
    bits = p.to_bits()
    assert bits.shape == (PAYLOAD_BITS,) and PAYLOAD_BITS >= 32 + 8
    assert p.is_synthetic and p.marker == SYNTHETIC_MARKER
    assert WatermarkPayload.from_bits(bits) == p
    for k in (0, 20, PAYLOAD_BITS - 1):  # any single flipped bit is caught by the CRC
        bad = bits.copy()
        bad[k] ^= 1
        with pytest.raises(ValueError, match="CRC"):
            WatermarkPayload.from_bits(bad)
    with pytest.raises(ValueError):
        WatermarkPayload(manifest_id=1 << 32)
    with pytest.raises(ValueError):
        WatermarkPayload.from_bits(bits[:-1])


def test_manifest_id_is_stable_and_32_bit():
    a = manifest_id_for("75e1cf17-5030-49af-9e5a-a8ed25686de9")
    assert a == manifest_id_for(b"75e1cf17-5030-49af-9e5a-a8ed25686de9") and 0 <= a < 2 ** 32
    assert a != manifest_id_for("another manifest")


# ------------------------------------------------------------------------------------------------ embed

@pytest.mark.parametrize("dtype", [np.uint8, np.uint16, np.float32])
@pytest.mark.parametrize("channels", [3, 4])
def test_embed_every_frame_type_decodes_and_keeps_alpha(dtype, channels):
    frame = pattern(240, 320, 3, channels=channels, dtype=dtype)
    out = Watermarker(PAYLOAD).embed(frame)
    assert out.dtype == frame.dtype and out.shape == frame.shape
    if channels == 4:
        assert np.array_equal(out[..., 3], frame[..., 3])
    scale = {np.uint8: 1.0, np.uint16: 1 / 257.0, np.float32: 255.0}[dtype]
    diff = (out[..., :3].astype(np.float64) - frame[..., :3].astype(np.float64)) * scale
    assert 0.5 < np.sqrt(np.mean(diff ** 2)) < 4.0          # there, and small (code values)
    # the same delta in R, G and B (luma only) wherever nothing clipped
    inside = np.all((frame[..., :3] * scale > 12) & (frame[..., :3] * scale < 243), axis=2)
    assert np.allclose(diff[..., 0][inside], diff[..., 1][inside], atol=1.01)
    d = decode_frame(out)
    assert d.found and d.payload == PAYLOAD and np.all(d.confidence > 0.5)


def test_unmarked_frames_carry_no_payload():
    for i in range(3):
        d = decode_frame(pattern(240, 320, i, seed=i))
        assert not d.found and d.payload is None
    fd = decode_frames([pattern(240, 320, i) for i in range(4)])
    assert fd.payload is None and not fd.found and fd.frames_read == 4


def test_embed_is_thread_safe_and_deterministic():
    w = Watermarker(PAYLOAD)
    frames = [pattern(180, 320, i) for i in range(8)]
    serial = [w.embed(f, i) for i, f in enumerate(frames)]
    with cf.ThreadPoolExecutor(4) as ex:
        parallel = list(ex.map(lambda a: w.embed(a[1], a[0]), enumerate(frames)))
    assert all(np.array_equal(a, b) for a, b in zip(serial, parallel))


def test_bad_frames_are_refused_clearly():
    w = Watermarker(PAYLOAD)
    with pytest.raises(ValueError, match="RGB"):
        w.embed(np.zeros((10, 10), np.uint8))
    with pytest.raises(ValueError, match="uint8, uint16 or float32"):
        w.embed(np.zeros((64, 64, 3), np.int32))
    with pytest.raises(ValueError, match="strength"):
        Watermarker(PAYLOAD, strength=0)


# ------------------------------------------------------------------------------------------------ real faces

@pytest.fixture(scope="module")
def grid_marked(shared_media):
    frames = real_frames(shared_media, "grid_bbaf2n.mpg", 30)
    w = Watermarker(PAYLOAD)
    return frames, [w.embed(f, i) for i, f in enumerate(frames)]


def test_invisible_on_real_faces(grid_marked):
    frames, marked = grid_marked
    mse = np.mean([(a.astype(float) - b.astype(float)) ** 2 for a, b in zip(frames, marked)])
    assert 10 * np.log10(255 ** 2 / mse) > 40.0


def test_survives_h264_crf23_on_real_faces(grid_marked):
    """The issue's goal: >= 95% bit accuracy per frame after crf 23, and the vote recovers all bits."""
    _, marked = grid_marked
    enc = h264_roundtrip(marked, 23)
    assert accuracy(enc) >= 0.95
    fd = decode_frames(enc)
    assert fd.payload == PAYLOAD and fd.confidence > 0.8 and fd.frames_found >= 25


def test_survives_half_size_and_10_percent_crop(grid_marked):
    _, marked = grid_marked
    half = [cv2.resize(f, (f.shape[1] // 2, f.shape[0] // 2), interpolation=cv2.INTER_AREA) for f in marked[:8]]
    assert accuracy(half) >= 0.95
    assert decode_frames(half).payload == PAYLOAD
    h, w = marked[0].shape[:2]
    crop = [f[int(0.05 * h):int(0.95 * h), int(0.05 * w):int(0.95 * w)] for f in marked[:8]]
    d = decode_frame(crop[0])
    assert abs(d.scale - 0.9) < 0.02          # the crop search found how much height was cut
    assert accuracy(crop) >= 0.95 and decode_frames(crop).payload == PAYLOAD


def test_hd_real_face_crf28_and_decode_file(shared_media, tmp_path):
    """720p from a real clip: even crf 28 keeps every bit; decode_file reads a PyAV-written file."""
    frames = real_frames(shared_media, "intel_asl_book.mkv", 8, size=(1280, 720))
    w = Watermarker(PAYLOAD)
    marked = [w.embed(f, i) for i, f in enumerate(frames)]
    path = tmp_path / "marked.mp4"
    with av.open(str(path), "w") as c:
        s = c.add_stream("libx264", rate=25)
        s.width, s.height, s.pix_fmt = 1280, 720, "yuv420p"
        s.options = {"crf": "28"}
        for a in marked:
            for p in s.encode(av.VideoFrame.from_ndarray(a, format="rgb24")):
                c.mux(p)
        for p in s.encode():
            c.mux(p)
    fd = decode_file(path, max_frames=8)
    assert fd.payload == PAYLOAD and fd.frames_read == 8 and fd.frames_agreeing >= 6
    assert fd.to_dict()["manifest_id"] == "c0ffee42" and fd.to_dict()["synthetic"] is True
    unmarked = tmp_path / "clean.mp4"
    with av.open(str(unmarked), "w") as c:
        s = c.add_stream("libx264", rate=25)
        s.width, s.height, s.pix_fmt = 1280, 720, "yuv420p"
        for a in frames[:3]:
            for p in s.encode(av.VideoFrame.from_ndarray(a, format="rgb24")):
                c.mux(p)
        for p in s.encode():
            c.mux(p)
    assert decode_file(unmarked, max_frames=3).payload is None


def test_embed_is_fast_enough_for_every_frame():
    """Budget: a few ms per 1080p frame (one core); generous bound against a loaded CI machine."""
    frame = pattern(1080, 1920, 0)
    w = Watermarker(PAYLOAD)
    w.embed(frame, 0)
    best = min(_timed(lambda: w.embed(frame, 0)) for _ in range(5))
    assert best < 0.05, f"embed took {best * 1000:.1f} ms per 1080p frame"


def _timed(fn) -> float:
    import time
    t = time.perf_counter()
    fn()
    return time.perf_counter() - t


def test_informed_boost_option_strengthens_the_weak_bits():
    """Informed embedding lifts the weakest bit's margin; by default it runs below INFORMED_MAX_SIDE
    (static studio shots need it; above, it only costs the encoder), ``informed=`` forces it either way."""
    frame = pattern(288, 360, 3)
    assert np.array_equal(Watermarker(PAYLOAD).embed(frame, 0), Watermarker(PAYLOAD, informed=True).embed(frame, 0))
    # at a low strength some bits fall short of the target on this content: those get more amplitude
    plain = Watermarker(PAYLOAD, strength=0.7, informed=False).embed(frame, 0)
    informed = Watermarker(PAYLOAD, strength=0.7, informed=True).embed(frame, 0)
    big = pattern(720, 1280, 3)
    assert np.array_equal(Watermarker(PAYLOAD).embed(big, 0), Watermarker(PAYLOAD, informed=False).embed(big, 0))
    truth = PAYLOAD.to_bits().astype(bool)
    def margin(f):
        d = decode_frame(f)
        signed = np.where(truth, d.soft, -d.soft)
        return float(np.min(signed))
    assert margin(informed) > margin(plain)
    assert decode_frame(informed).payload == PAYLOAD
    # static content: the same frame gets the same pattern whatever its index (no flicker for the encoder)
    w = Watermarker(PAYLOAD)
    assert np.array_equal(w.embed(big, 0), w.embed(big, 7))
