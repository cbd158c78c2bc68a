"""The same input, settings and manifest id give the same H.264 bitstream, whatever the heap held before.

libx264's AVX-512 code (PyAV 18's wheels, core 165) reads memory it never wrote (its macroblock-tree pass
with B-frames): the frames handed to the encoder were identical in 40 renders of one clip, yet 8 of the
40 files differed, and with glibc's ``MALLOC_PERTURB_`` (fresh and freed memory filled with one byte) the
bitstream followed the fill byte. ``resolve`` therefore hands libx264 this CPU's flags less AVX-512. The
render test below runs the same render in two processes with different fill bytes: on an AVX-512 machine
it failed before that change (two different bitstreams) and passes after it.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from facecomp.video import encode as enc_mod
from facecomp.video.encode import X264_CPU_AVX512, EncodeSettings, resolve
from facecomp.video.info import VideoInfo

from mediagen import decode_all, write_clip

CHILD = r"""
import hashlib, sys
import av
from facecomp.effect import Engine
from facecomp.render.clip import RenderSettings, render_clip
src, out = sys.argv[1], sys.argv[2]
render_clip(src, out, Engine(), RenderSettings(manifest_id="x264-determinism", overwrite=True))
h = hashlib.sha256()
with av.open(out) as c:
    for p in c.demux(c.streams.video[0]):
        h.update(bytes(p))
print(h.hexdigest())
"""


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="MALLOC_PERTURB_ is glibc's")
def test_h264_render_is_bit_identical_whatever_the_heap_held(tmp_path):
    src = write_clip(tmp_path / "in.mp4", w=320, h=240, n=40)
    digests = []
    for fill in ("85", "170"):
        out = tmp_path / f"out_{fill}.mp4"
        env = dict(os.environ, MALLOC_PERTURB_=fill, FACECOMP_C2PA_CERT="", FACECOMP_C2PA_KEY="")
        run = subprocess.run([sys.executable, "-c", CHILD, str(src), str(out)], env=env, capture_output=True,
                             text=True, timeout=300)
        assert run.returncode == 0, run.stderr[-2000:]
        digests.append(run.stdout.split()[-1])
        assert len(decode_all(out)) == 40
    assert digests[0] == digests[1], "the H.264 bitstream depends on what the heap held (libx264 read memory it never wrote)"
    a, b = decode_all(tmp_path / "out_85.mp4"), decode_all(tmp_path / "out_170.mp4")
    assert all((x == y).all() for x, y in zip(a, b))


def _info(tmp_path: Path) -> VideoInfo:
    from facecomp.video.reader import VideoReader

    reader = VideoReader(write_clip(tmp_path / "i.mp4", w=64, h=64, n=2))
    try:
        return reader.info
    finally:
        reader.close()


def _params(options: dict) -> dict:
    return dict(item.partition("=")[::2] for item in options.get("x264-params", "").split(":") if item)


def test_x264_gets_this_cpus_flags_less_avx512_and_a_users_choice_stands(tmp_path):
    info = _info(tmp_path)
    flags = enc_mod.x264_cpu_without_avx512()
    h264 = resolve(EncodeSettings(), tmp_path / "o.mp4", info).options
    mine = resolve(EncodeSettings(options={"x264-params": "aq-mode=2"}), tmp_path / "o.mp4", info).options
    if flags is None:  # libx264 detects no AVX-512 here (or is not found): nothing is added
        assert "x264-params" not in h264 and mine["x264-params"] == "aq-mode=2"
    else:
        assert flags & X264_CPU_AVX512 == 0 and flags != 0
        assert _params(h264) == {"asm": str(flags)}
        assert _params(mine) == {"aq-mode": "2", "asm": str(flags)}
    # a user's own asm / no-asm is left as given
    for given in ("asm=0", "no-asm=1", "aq-mode=2:asm=AVX2"):
        got = resolve(EncodeSettings(options={"x264-params": given}), tmp_path / "o.mp4", info).options
        assert got["x264-params"] == given
    # only libx264: x265 and the lossless codecs get nothing of it
    assert _params(resolve(EncodeSettings(codec="h265"), tmp_path / "o.mp4", info).options) == {}
    assert "x264-params" not in resolve(EncodeSettings(codec="ffv1"), tmp_path / "o.mkv", info).options

