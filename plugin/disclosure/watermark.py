"""An invisible, compression-robust watermark in every output frame: "synthetic" marker + manifest id.

Why this design (measured in ``examples/watermark_study.py``): a spread-spectrum pattern on a coarse
grid of square cells whose size follows the frame's *short* side (``GRID_CELLS`` cells across it), tiled
with a period of ``TILE`` cells. The pattern lives in luma only (the same delta added to R, G and B),
at frequencies H.264 keeps, so it survives crf 18-28; because the grid follows the frame size, a
rescale leaves it in place; because it follows the short side, a portrait frame carries as many cells
as a landscape one (a grid that followed the height gave a 720x1280 frame a third of the cells of a
1280x720 one, and no sync peak after encoding) and a 90-degree turn keeps the cell size; because it is
tiled, a crop is just a cyclic shift that the decoder finds by correlating a known sync pattern, and a
crop that changes the short side is found by a small scale search. Every tile repeats the payload, so
the decoder folds all tiles of a frame into one before reading bits, weighting each cell by the inverse
of its neighbourhood's energy (texture and edges are noise to it). A file is read "coherently": the
folded tiles of all its frames are summed before the sync search (the geometry is the same on every
frame), which finds a mark too weak to show on any one frame, and the CRC confirms the reading;
:class:`FileDecode` says how sure it is. Video is read as Y planes in display orientation (a phone clip
stored landscape with a rotation matrix is turned first), sampled by seeks on long clips.

Per frame, everything but the final add happens on the small grid: a texture mask (more amplitude where
texture hides it, less near black/white and in flat cells), and "informed embedding": the decoder's own
statistic is run on the frame at grid resolution and the bits its content pushes the wrong way get more
amplitude (on static footage those errors would repeat on every frame, where voting cannot fix them:
the "sync but no payload" of static studio shots). Below a 600 px short side it runs on every frame;
from 600 px on only on noise-like frames (:meth:`Watermarker._noisy_boost`: more than two weak bits or
a weak sync in the frame's own modelled reading), so ordinary footage keeps one pattern on every frame.
Boosts are quantized to a few levels so that static content gets the same pattern on every frame (a
pattern that changes from frame to frame costs the encoder bits and CPU). The grid delta is then
upsampled once and added with saturation: ~2 ms for 720p, ~4 ms for 1080p on one core (measured: 2.0
and 4.2 ms, the noise-like check included).

Why noise-like content and fast pans over texture failed (measured on the study's pan over a grainy 1927
crowd photo, per-bit statistic at crf 23): the content's own interference with the pattern, not the
encoder, was the cause (z 1.15 from the content alone vs 11.3 from the coding error alone; the encoder
kept 0.8 of the mark's amplitude), and the sync peak was found at a wrong offset on 11 of 25 frames.
Since the embedder knows the content, it now adds what each weak bit and the sync need, measured on a
model of the decoder's reading that includes the blur of the upsampling and the decoder's area average
(taking the grid delta as it is overestimated the bits' z by 1.8x).

Decoding has a fallback for such content, tried only when the plain reading finds nothing: the same
statistic after the frame's spectrum is whitened (:func:`_fold_white`), at the native scale only; the
false-positive bound counts it as a second try.

Limits (measured, see the README's table): on noise-like frames the extra amplitude costs 4-5 dB of
PSNR and makes x264 spend about a fifth more CPU (the boost follows the moving content); ordinary
footage never reaches the gate.

Payload: 8-bit marker (:data:`SYNTHETIC_MARKER`) + 32-bit manifest id + CRC-16 = 56 bits. The sync
pattern itself already says "facecomp watermark here"; the CRC lets the decoder correct up to two
unreliable bits (a Chase search over the least confident ones) and never report a wrong id.
"""

from __future__ import annotations

import math
import os
import threading
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from ..errors import InvalidMediaError, MediaError, NoVideoStreamError

SYNTHETIC_MARKER = 0x53            # "S": this frame is synthetic (AI-altered) and disclosed as such
MARKER_BITS = 8
ID_BITS = 32
CRC_BITS = 16
CHASE_BITS = 8                     # soft decoding: flip up to 2 of the 8 least reliable bits
PAYLOAD_BITS = MARKER_BITS + ID_BITS + CRC_BITS

GRID_CELLS = 64                    # watermark cells across the frame's short side
# Layout cycling (the cell layout changing every PHASE_FRAMES frames through PHASES layouts, so that static
# content errs differently per layout) was measured and is off: H.264 P-frames keep the old layout for a
# few frames after each switch (crf 23 on 360x288 faces: 0.979 vs 0.999 bit accuracy), and informed
# embedding (below) removes the static-content errors it was meant to average out.
PHASES = 1
PHASE_FRAMES = 25
TILE = 32                          # the pattern repeats every TILE x TILE cells
DEFAULT_STRENGTH = 2.0             # rms amplitude of the luma delta, in 8-bit code values
SMALL_SIDE = 432                   # below this short side the amplitude grows (see Watermarker.strength_for)
# texture mask: amplitude x clip(0.5 + min(variation between cells, WITHIN_K x texture inside the cell) / 8,
# 0.5, MASK_MAX); measured against the between-cells measure alone: flat-area rms 1.45 -> 1.11 code values
# and PSNR +1.3 dB on ASL 640x480, crf 23 still 1.000; 3x the amplitude in texture raised a fast pan's
# crf 23 accuracy 0.77 -> 0.86 only at 34.5 dB, so MASK_MAX stays 2
WITHIN_K = 1.5
MASK_MAX = 2.0
ENERGY_FLOOR = 3.0                 # decoder weighting: 1 / (local high-pass energy + this), code values^2
SYNC_WEIGHT = 0.6                  # share of the sync pattern next to the data chips
_KEY = 0xFACEC0                    # seeds the fixed chip, sync and cell-assignment patterns

# a crop that removes part of the height changes the grid scale; the decoder tries these factors
CROP_SCALES = tuple(np.round(np.arange(1.0, 0.795, -0.005), 4))
# Informed embedding (below) runs on frames whose short side is under INFORMED_MAX_SIDE. Without it static
# studio shots (512x512, 524x524 talking heads) kept one or two bits wrong on every frame (sync, but no
# payload). Above it, it is not needed (the study's 720p, portrait 720x1280, 1080p and 4K rows meet every
# goal without it) and it costs: on moving content the boost changes from frame to frame, and x264 spent
# 24.0 instead of 19.3 ms of CPU per 720p frame (the clean frame: 19.2), measured on the bench clip. From
# it on, only noise-like frames get a boost (the NOISY_* step below), which ordinary footage never reaches.
INFORMED_MAX_SIDE = 600
BOOST_STEP = 0.25
BOOST_TARGET = 2.5                 # z-score each bit should reach on the unencoded frame
BOOST_MAX = 3.0
# Noise-like content at INFORMED_MAX_SIDE and more (see Watermarker._noisy_boost): a frame whose own plain
# reading (modelled as the decoder will see it) has more than NOISY_GATE bits under NOISY_TARGET, or a
# sync peak under NOISY_SYNC_TARGET, gets extra amplitude on those bits and on the sync, up to
# NOISY_BOOST_MAX more, in steps of NOISY_STEP (static content keeps one pattern). Measured at crf 23 on
# 25 frames of the bench's 720p content and of a fast pan over a grainy crowd photo: per-frame bit
# accuracy 0.68 -> 1.000 and 0.61 -> 0.980 at 35.9 and 36.6 dB (40 before); a ceiling of 1.0 gave 0.985
# and 0.950 at 36.3 / 37.0 dB; sparing the flat cells cost more PSNR for less. Ordinary footage (the
# study's 1080p, portrait and 4K rows) reaches the gate on 2 of 25 frames at most.
NOISY_GATE = 2
NOISY_TARGET = 1.0
NOISY_SYNC_TARGET = 7.0
NOISY_BOOST_MAX = 1.5
NOISY_STEP = 0.5
SYNC_THRESHOLD = 6.0               # sync peak z-score above which a frame is taken as watermarked
# ... when the peak was found by the crop-scale search: 41 scales x 1024 offsets give unmarked frames
# higher maxima (measured on real and generated unmarked frames: median 4.1, highest 6.3, against
# 3.2 and 4.8 at the native scale alone)
SEARCH_THRESHOLD = 7.0
# A file's coherent reading (the folded tiles of all its frames summed) accepts a lower native-scale peak
# when the bits read there pass the CRC: the sync z-score saturates on the sum (the data chips' own
# cross-correlation with the sync pattern is noise that does not average out), and the CRC is the second,
# independent test (the false-positive bound in FileDecode multiplies both).
COHERENT_THRESHOLD = 5.0
# The whitened fallback (see _fold_white): tried only at the native scale and only when the plain reading
# found nothing, so marked footage reads as before; the false-positive bound counts it as a second try.
WHITE_SMOOTH = 5                   # frequency bins over which the content's spectrum is averaged


# --------------------------------------------------------------------------------------------- payload

def _crc16(bits: np.ndarray) -> int:
    """CRC-16/CCITT (polynomial 0x1021) over a bit sequence: 16 check bits make it safe to try a few
    corrections of the least reliable bits (:func:`_correct`) without accepting a wrong payload."""
    crc = 0xFFFF
    for b in bits:
        fb = ((crc >> 15) & 1) ^ int(b)
        crc = (crc << 1) & 0xFFFF
        if fb:
            crc ^= 0x1021
    return crc


def _int_bits(value: int, width: int) -> np.ndarray:
    return np.array([(value >> (width - 1 - i)) & 1 for i in range(width)], dtype=np.uint8)


def _bits_int(bits: np.ndarray) -> int:
    v = 0
    for b in bits:
        v = (v << 1) | int(b)
    return v


@dataclass(frozen=True)
class WatermarkPayload:
    """What every frame carries: an 8-bit marker (default: synthetic) and a 32-bit manifest id."""

    marker: int = SYNTHETIC_MARKER
    manifest_id: int = 0

    def __post_init__(self) -> None:
        if not 0 <= self.marker < (1 << MARKER_BITS):
            raise ValueError(f"marker must fit in {MARKER_BITS} bits, got {self.marker}")
        if not 0 <= self.manifest_id < (1 << ID_BITS):
            raise ValueError(f"manifest_id must fit in {ID_BITS} bits, got {self.manifest_id}")

    @property
    def is_synthetic(self) -> bool:
        return self.marker == SYNTHETIC_MARKER

    def to_bits(self) -> np.ndarray:
        """The 56 transmitted bits: marker, manifest id, CRC-16 of both (uint8 0/1, MSB first)."""
        body = np.concatenate([_int_bits(self.marker, MARKER_BITS), _int_bits(self.manifest_id, ID_BITS)])
        return np.concatenate([body, _int_bits(_crc16(body), CRC_BITS)])

    @classmethod
    def from_bits(cls, bits) -> "WatermarkPayload":
        """Inverse of :meth:`to_bits`; ``ValueError`` when the length or the CRC is wrong."""
        bits = np.asarray(bits, dtype=np.uint8).ravel()
        if bits.size != PAYLOAD_BITS:
            raise ValueError(f"expected {PAYLOAD_BITS} bits, got {bits.size}")
        body, crc = bits[:MARKER_BITS + ID_BITS], bits[MARKER_BITS + ID_BITS:]
        if _crc16(body) != _bits_int(crc):
            raise ValueError("watermark CRC mismatch")
        return cls(_bits_int(body[:MARKER_BITS]), _bits_int(body[MARKER_BITS:]))


def _correct(soft: np.ndarray) -> tuple[WatermarkPayload | None, int]:
    """Payload from soft bits: the hard decision, else the hard decision with one or two of the
    ``CHASE_BITS`` least reliable bits flipped (most likely first). Returns (payload, bits corrected)."""
    import itertools
    bits = (np.asarray(soft) > 0).astype(np.uint8)
    weak = np.argsort(np.abs(soft))[:CHASE_BITS]
    trials = [()] + [(k,) for k in weak] + list(itertools.combinations(weak, 2))
    trials.sort(key=lambda t: float(sum(abs(soft[k]) for k in t)))
    for t in trials:
        cand = bits.copy()
        cand[list(t)] ^= 1
        try:
            return WatermarkPayload.from_bits(cand), len(t)
        except ValueError:
            continue
    return None, 0


def manifest_id_for(value: str | bytes) -> int:
    """A 32-bit id derived from a manifest's unique id (or any string): the first 4 bytes of its sha256."""
    import hashlib
    data = value.encode() if isinstance(value, str) else bytes(value)
    return int.from_bytes(hashlib.sha256(data).digest()[:4], "big")


# --------------------------------------------------------------------------------------------- patterns

@dataclass(frozen=True)
class _Code:
    sync: np.ndarray        # (TILE, TILE) +-1
    chips: np.ndarray       # (TILE, TILE) +-1
    bit_of: np.ndarray      # (TILE, TILE) int: which payload bit a cell carries, -1 for none
    sync_hp: np.ndarray     # the sync tile as the decoder sees it after its high-pass
    sync_hp_fft: np.ndarray  # conj FFT of the high-passed sync tile, for cyclic correlation
    masks: np.ndarray       # (PAYLOAD_BITS, TILE*TILE) bool
    readout: np.ndarray     # (PAYLOAD_BITS, TILE*TILE): chip / sqrt(n) on a bit's cells, 0 elsewhere


def _cyclic_highpass(tile: np.ndarray) -> np.ndarray:
    """The decoder's high-pass (value minus 3x3 mean) applied to a tile with wrap-around."""
    acc = np.zeros_like(tile, dtype=np.float64)
    for dy in (-1, 0, 1):
        for dx in (-1, 0, 1):
            acc += np.roll(tile, (dy, dx), axis=(0, 1))
    return tile - acc / 9.0


def _make_code(phase: int) -> _Code:
    rng = np.random.default_rng([_KEY, phase])
    sync = rng.choice([-1.0, 1.0], size=(TILE, TILE))
    chips = rng.choice([-1.0, 1.0], size=(TILE, TILE))
    order = rng.permutation(TILE * TILE)
    per_bit = (TILE * TILE) // PAYLOAD_BITS
    bit_of = np.full(TILE * TILE, -1, dtype=np.int64)
    for k in range(PAYLOAD_BITS):
        bit_of[order[k * per_bit:(k + 1) * per_bit]] = k
    bit_of = bit_of.reshape(TILE, TILE)
    masks = np.stack([(bit_of == k).ravel() for k in range(PAYLOAD_BITS)])
    sync_hp = _cyclic_highpass(sync)
    readout = masks * chips.ravel()[None, :] / np.sqrt(masks.sum(axis=1, keepdims=True))
    return _Code(sync, chips, bit_of, sync_hp, np.conj(np.fft.fft2(sync_hp)), masks, readout)


_CODES = tuple(_make_code(p) for p in range(PHASES))


def phase_of(index: int | None) -> int:
    """Which cell layout frame ``index`` carries (0 for a lone frame)."""
    return 0 if index is None else (int(index) // PHASE_FRAMES) % PHASES


def _tile_parts(bits: np.ndarray, phase: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """(sync part, data part) of one TILE x TILE tile; their sum has unit rms."""
    code = _CODES[phase]
    signs = np.where(bits.astype(np.int64) > 0, 1.0, -1.0)
    data = np.where(code.bit_of >= 0, code.chips * signs[np.maximum(code.bit_of, 0)], 0.0)
    sync = SYNC_WEIGHT * code.sync
    norm = np.sqrt(np.mean((sync + data) ** 2))
    return (sync / norm).astype(np.float32), (data / norm).astype(np.float32)


def _tile_pattern(bits: np.ndarray, phase: int = 0) -> np.ndarray:
    """One TILE x TILE tile of the watermark, unit rms: sync + chip * (+-1 per payload bit)."""
    sync, data = _tile_parts(bits, phase)
    return sync + data


def cell_px(h: int, w: int) -> float:
    """Pixels per watermark cell on an h x w frame: the short side over :data:`GRID_CELLS`."""
    return min(h, w) / GRID_CELLS


def _grid_size(h: int, w: int) -> tuple[int, int]:
    """(rows, cols) of the embedding grid: enough square cells of :func:`cell_px` to cover the frame.

    The grid is upsampled with the exact factor :func:`cell_px` in both directions and cut to the
    frame, so the decoder can undo it with the same factor, whatever the aspect ratio.
    """
    c = cell_px(h, w)
    return int(math.ceil(h / c)) + 1, int(math.ceil(w / c)) + 1


def _upsample(grid: np.ndarray, h: int, w: int) -> np.ndarray:
    f = cell_px(h, w)
    up = cv2.resize(grid, None, fx=f, fy=f, interpolation=cv2.INTER_LINEAR)
    if up.shape[0] < h or up.shape[1] < w:  # rounding: pad by edge (never more than a pixel)
        up = cv2.copyMakeBorder(up, 0, max(0, h - up.shape[0]), 0, max(0, w - up.shape[1]),
                                cv2.BORDER_REPLICATE)
    return up[:h, :w]


class Watermarker:
    """Adds the payload to frames. Thread-safe: per call it only reads a locked per-size cache.

    ``strength`` is the rms luma amplitude in 8-bit code values before texture masking (flat areas
    get less, textured areas more). ``adaptive=False`` skips the texture mask (faster, slightly more
    visible on flat areas). Pass the frame ``index`` so the layout cycles (see :data:`PHASES`).
    ``informed``: None (default) boosts weak bits on every frame under INFORMED_MAX_SIDE and on
    noise-like frames from it on; True boosts every frame (the under-600 px way), False none.
    """

    def __init__(self, payload: WatermarkPayload, strength: float = DEFAULT_STRENGTH, *,
                 adaptive: bool = True, informed: bool | None = None) -> None:
        self.informed = None if informed is None else bool(informed)  # None: by frame size (INFORMED_MAX_SIDE)
        if not (0.0 < strength <= 16.0):
            raise ValueError(f"watermark strength must be in (0, 16], got {strength}")
        self.payload = payload
        self.strength = float(strength)
        self.adaptive = adaptive
        bits = payload.to_bits()
        self._tiles = tuple(_tile_pattern(bits, p).astype(np.float32) for p in range(PHASES))
        self._signs = np.where(bits > 0, 1.0, -1.0)
        parts = [_tile_parts(bits, p) for p in range(PHASES)]
        self._sync_tiles = tuple(a for a, _ in parts)
        self._data_tiles = tuple(b for _, b in parts)
        self._cache: dict[tuple[int, int, int], np.ndarray] = {}
        self._lock = threading.Lock()
        self._full: dict[tuple[int, int, int], np.ndarray] = {}  # whole-frame patterns for embed_window

    def strength_for(self, h: int, w: int | None = None) -> float:
        """Frames whose short side is under SMALL_SIDE get proportionally more amplitude (up to 2x): their
        cells are only a few pixels and H.264 smooths them away otherwise (176x144 at crf 23: none of 40
        frames decoded at 1x, 36 of 40 and the full payload at 2x; 360x288 scaled to half size and
        re-encoded at crf 23: 0.86 per-frame bit accuracy at 1x, 0.91 at 1.25x, 0.98 and the payload at
        1.5x, PSNR 42.3 -> 39.4 dB)."""
        short = h if w is None else min(h, w)
        return self.strength * min(2.0, max(1.0, SMALL_SIDE / float(short)))

    def _grid(self, h: int, w: int, phase: int) -> np.ndarray:
        """The tiled pattern on the cell grid for an h x w frame (unit rms), cached per size and phase."""
        key = (h, w, phase)
        with self._lock:
            hit = self._cache.get(key)
        if hit is not None:
            return hit
        rows, cols = _grid_size(h, w)
        grid = np.tile(self._tiles[phase], (-(-rows // TILE), -(-cols // TILE)))[:rows, :cols].copy()
        with self._lock:
            if len(self._cache) > 4 * PHASES:
                self._cache.clear()
            self._cache[key] = grid
        return grid

    def _grid_delta(self, frame: np.ndarray, phase: int) -> np.ndarray:
        """Per-cell delta (8-bit code values): pattern x strength x texture mask, on the small grid."""
        h, w = frame.shape[:2]
        grid = self._grid(h, w, phase)
        if not self.adaptive:
            return grid * np.float32(self.strength_for(h, w))
        rows, cols = grid.shape
        # the mask needs luma at grid resolution only: integer subsampling first (INTER_AREA by a
        # fractional factor costs ~7 ms at 1080p), then area-average to one value per cell
        step = max(1, min(h, w) // (4 * GRID_CELLS))
        lum = _gray(frame)
        if step > 1:  # an exact integer factor: OpenCV's fast area path (a strided copy costs 6x more)
            lum = cv2.resize(lum[:(h // step) * step, :(w // step) * step], (w // step, h // step),
                             interpolation=cv2.INTER_AREA)
        sub = lum.astype(np.float32, copy=False)
        f = step / cell_px(h, w)

        def cells(a):
            a = cv2.resize(a, None, fx=f, fy=f, interpolation=cv2.INTER_AREA)
            return cv2.copyMakeBorder(a, 0, max(0, rows - a.shape[0]), 0, max(0, cols - a.shape[1]),
                                      cv2.BORDER_REPLICATE)[:rows, :cols]
        small = cells(sub)
        within = np.sqrt(np.maximum(cells(sub * sub) - small * small, 0.0))   # texture inside each cell
        mean = cv2.blur(small, (3, 3))
        dev = np.sqrt(np.maximum(cv2.blur(small * small, (3, 3)) - mean * mean, 0.0))  # between cells
        # texture hides (and, to the decoder, needs) more: the variation between cells is what the decoder
        # sees as noise, the texture inside a cell what hides the pattern, so a flat cell next to an edge
        # stays faint
        mask = np.clip(0.5 + np.minimum(dev, WITHIN_K * within) / 8.0, 0.5, MASK_MAX)
        headroom = np.clip(np.minimum(small, 255.0 - small) / 16.0, 0.25, 1.0)   # no clipping at black/white
        gain = (mask * headroom * np.float32(self.strength_for(h, w))).astype(np.float32)
        delta = grid * gain
        if self.informed is None and min(h, w) >= INFORMED_MAX_SIDE:
            return self._noisy_boost(delta, small, gain, phase)
        if not (self.informed if self.informed is not None else min(h, w) < INFORMED_MAX_SIDE):
            return delta
        # informed embedding: run the decoder's statistic on this frame at grid resolution; bits that the
        # host content pushes the wrong way (static backgrounds do so on every frame, and votes cannot
        # fix that) get more amplitude, the others none
        code = _CODES[phase]
        boost = np.ones(PAYLOAD_BITS, dtype=np.float32)
        for _ in range(2):
            z = _read_bits(_fold_grid(small + delta), (0, 0), phase) * self._signs
            weak = z < BOOST_TARGET
            if not weak.any():
                break
            want = boost[weak] * np.clip(BOOST_TARGET / np.maximum(z[weak], 0.5), 1.0, 2.0)
            # quantized up: static content gets the same boost (and pattern) on every frame
            boost[weak] = np.minimum(np.ceil(want / BOOST_STEP) * BOOST_STEP, BOOST_MAX)
            cell_boost = np.where(code.bit_of >= 0, boost[np.maximum(code.bit_of, 0)], 1.0).astype(np.float32)
            tile = (self._sync_tiles[phase] + self._data_tiles[phase] * cell_boost)
            delta = np.tile(tile, (-(-rows // TILE), -(-cols // TILE)))[:rows, :cols] * gain
        return delta

    def _noisy_boost(self, delta: np.ndarray, small: np.ndarray, gain: np.ndarray, phase: int) -> np.ndarray:
        """Extra amplitude for noise-like frames of INFORMED_MAX_SIDE and more (see NOISY_GATE).

        The frame's reading is modelled as the decoder will make it: the content at grid resolution plus
        the grid delta as the decoder sees it after the embedder's linear upsampling and its own area
        average, which is the separable blur [1/8, 3/4, 1/8] (measured: residual 0.016 code values rms on
        a 1.17 rms mark; taking the grid delta as it is overestimated the bits' z by about 1.8x). Each
        bit's and the sync's z grows linearly with extra amplitude along its own chips, so one more model
        run per part gives the extra each needs. Ordinary footage never reaches the gate: its pattern,
        and the encoder's work on it, stay as without this step."""
        rows, cols = delta.shape

        def seen(d):
            return cv2.sepFilter2D(d, -1, _ROUND_TRIP, _ROUND_TRIP, borderType=cv2.BORDER_REFLECT)

        base = small + seen(delta)
        folded = _fold_grid(base)
        z = _read_bits(folded, (0, 0), phase) * self._signs
        sync = _sync_at(folded, phase)
        weak = z < NOISY_TARGET
        if int(weak.sum()) <= NOISY_GATE and sync >= NOISY_SYNC_TARGET:
            return delta
        code = _CODES[phase]
        reps = (-(-rows // TILE), -(-cols // TILE))
        data = np.tile(self._data_tiles[phase], reps)[:rows, :cols] * gain
        sync_part = np.tile(self._sync_tiles[phase], reps)[:rows, :cols] * gain
        per_bit = _read_bits(_fold_grid(base + seen(data)), (0, 0), phase) * self._signs - z
        per_sync = _sync_at(_fold_grid(base + seen(sync_part)), phase) - sync

        def quantized(need):
            return np.minimum(np.ceil(np.clip(need, 0.0, None) / NOISY_STEP) * NOISY_STEP, NOISY_BOOST_MAX)

        beta = np.where(weak, quantized((NOISY_TARGET - z) / np.maximum(per_bit, 0.05)), 0.0)
        beta_sync = float(quantized((NOISY_SYNC_TARGET - sync) / max(per_sync, 0.05))) \
            if sync < NOISY_SYNC_TARGET else 0.0
        cell = np.where(code.bit_of >= 0, beta[np.maximum(code.bit_of, 0)], 0.0).astype(np.float32)
        return delta + data * np.tile(cell, reps)[:rows, :cols] + sync_part * np.float32(beta_sync)

    def delta(self, frame: np.ndarray, index: int | None = None) -> np.ndarray:
        """The luma delta (float32 h x w, 8-bit code-value units) this frame receives."""
        _check_frame(frame)
        h, w = frame.shape[:2]
        return _upsample(self._grid_delta(frame, phase_of(index)), h, w)

    def embed(self, frame: np.ndarray, index: int | None = None, *, out: np.ndarray | None = None) -> np.ndarray:
        """A watermarked copy of an (H, W, 3|4) uint8 / uint16 / float32 RGB(A) frame; alpha untouched.

        The same delta goes to R, G and B, so luma moves and chroma does not. ``index``: the frame's
        index in the clip (selects the layout phase); None for a lone frame. ``out``: write the result
        there instead (same shape and dtype; may be ``frame`` itself) and return it.
        """
        _check_frame(frame)
        check_out(frame, out)
        h, w, ch = frame.shape
        gd = self._grid_delta(frame, phase_of(index))
        src = frame if frame.flags.c_contiguous else np.ascontiguousarray(frame)
        dst = out if out is not None and _cv_writes(out) else None
        if frame.dtype == np.float32:
            g = gd / np.float32(255.0)
            d = _upsample(cv2.merge([g, g, g] if ch == 3 else [g, g, g, np.zeros_like(g)]), h, w)
            # values in 0..1 stay in 0..1; HDR values outside it are kept (never pushed further out);
            # alpha got +0, so these bounds leave it as it was, even outside 0..1 (taken before the add:
            # the result may overwrite the frame)
            hi, lo = cv2.max(src, (1.0,) * ch), cv2.min(src, (0.0,) * ch)
            res = cv2.add(src, np.ascontiguousarray(d), dst=dst)
            cv2.min(res, hi, dst=res)
            cv2.max(res, lo, dst=res)
            return _deliver(res, out)
        # integer frames: the delta is rounded on the small grid (in the frame's code values), upsampled
        # as int16 with the same delta in R, G, B (0 in alpha), and applied with one saturating add
        unit = 257.0 if frame.dtype == np.uint16 else 1.0
        gi = np.clip(np.rint(gd * unit), -32767, 32767).astype(np.int16)
        d = _upsample(cv2.merge([gi, gi, gi] if ch == 3 else [gi, gi, gi, np.zeros_like(gi)]), h, w)
        res = cv2.add(src, d, dst=dst, dtype=cv2.CV_16U if frame.dtype == np.uint16 else cv2.CV_8U)
        return _deliver(res, out)

    def _pattern(self, h: int, w: int, phase: int) -> np.ndarray:
        """The unit-rms pattern upsampled to a whole h x w frame (float32), cached for the last size and
        phase only (a host session renders one frame size: 8 MiB at 1080p, 33 MiB at 4K)."""
        key = (h, w, phase)
        with self._lock:
            hit = self._full.get(key)
        if hit is not None:
            return hit
        up = np.ascontiguousarray(_upsample(self._grid(h, w, phase), h, w), dtype=np.float32)
        up.flags.writeable = False
        with self._lock:
            self._full.clear()
            self._full[key] = up
        return up

    def embed_window(self, frame: np.ndarray, index: int | None = None, *, full_size: tuple[int, int] | None = None,
                     window: tuple[int, int, int, int] | None = None, alpha: str = "straight",
                     out: np.ndarray | None = None) -> np.ndarray:
        """A watermarked copy of ``frame``, the ``window`` (x0, y0, x1, y1) of a ``full_size`` (h, w) frame;
        with ``out`` (same shape and dtype, may be ``frame`` itself) the result is written there.

        The window-exact form, for hosts that render tiles: the pattern is laid on the full frame's grid
        and the amplitude depends only on the pixel itself (its luma's headroom, no neighbourhood texture
        mask and no informed boost, which read the whole frame), so windows put together equal the whole
        frame bit for bit. ``alpha="premultiplied"``: the delta is scaled by alpha (colour = straight x alpha).
        """
        if not isinstance(frame, np.ndarray) or frame.ndim != 3 or frame.shape[2] not in (3, 4):
            raise ValueError(f"expected an (H, W, 3|4) RGB(A) frame, got {getattr(frame, 'shape', type(frame))}")
        if frame.dtype not in (np.uint8, np.uint16, np.float32):
            raise ValueError(f"frames must be uint8, uint16 or float32, got {frame.dtype}")
        h, w, ch = frame.shape
        fh, fw = (h, w) if full_size is None else (int(full_size[0]), int(full_size[1]))
        x0, y0 = (0, 0) if window is None else (int(window[0]), int(window[1]))
        if fh < 16 or fw < 16:
            raise ValueError(f"frame {fw}x{fh} is too small to carry a watermark")
        if x0 < 0 or y0 < 0 or x0 + w > fw or y0 + h > fh:
            raise ValueError(f"a {w}x{h} window at ({x0}, {y0}) is outside the {fw}x{fh} frame")
        check_out(frame, out)
        k = np.float32(self.strength_for(fh, fw))
        pattern = self._pattern(fh, fw, phase_of(index))[y0:y0 + h, x0:x0 + w]
        src = frame if frame.flags.c_contiguous else np.ascontiguousarray(frame)
        dst = out if out is not None and _cv_writes(out) else None
        premult = ch == 4 and alpha == "premultiplied"
        # the amplitude: headroom of the pixel's own luma (8-bit code values), as in the whole-frame form
        if frame.dtype == np.uint8 and not premult:
            headroom = cv2.LUT(cv2.cvtColor(src, cv2.COLOR_RGB2GRAY if ch == 3 else cv2.COLOR_RGBA2GRAY),
                               _HEADROOM_LUT)
            a = None
        else:
            maxv = 1.0 if frame.dtype == np.float32 else float(np.iinfo(frame.dtype).max)
            luma = _luma(src)
            a = None
            if premult:
                a = np.clip(src[..., 3].astype(np.float32) * np.float32(1.0 / maxv), 0.0, 1.0)
                luma = luma / np.maximum(a, np.float32(1e-6))  # the straight colour's luma
            headroom = np.minimum(luma, 255.0 - luma)
            np.multiply(headroom, np.float32(1.0 / 16.0), out=headroom)
            np.clip(headroom, 0.25, 1.0, out=headroom)
        if a is not None:
            headroom = headroom * a  # premultiplied: the delta scales with alpha (colour = straight x alpha)
        if frame.dtype == np.float32:
            d = cv2.multiply(pattern, headroom, scale=float(k) / 255.0)
            dd = cv2.merge([d, d, d] if ch == 3 else [d, d, d, np.zeros_like(d)])
            # values in 0..1 stay in 0..1; values outside it are kept (never pushed further out); the
            # bounds are taken before the add, which may overwrite the frame
            hi = cv2.max(src, (1.0,) * ch) if a is None else np.maximum(src[..., :3], a[..., None])
            lo = cv2.min(src, (0.0,) * ch)
            res = cv2.add(src, dd, dst=dst)
            if a is None:
                cv2.min(res, hi, dst=res)
            else:
                rgb = res[..., :3]
                np.minimum(rgb, hi, out=rgb)
            cv2.max(res, lo, dst=res)
            return _deliver(res, out)
        unit = 257.0 if frame.dtype == np.uint16 else 1.0
        di = cv2.multiply(pattern, headroom, scale=float(k) * unit, dtype=cv2.CV_16S)
        dd = cv2.merge([di, di, di] if ch == 3 else [di, di, di, np.zeros_like(di)])
        cap = None if a is None else np.maximum(src[..., :3], src[..., 3:4])
        res = cv2.add(src, dd, dst=dst, dtype=cv2.CV_16U if frame.dtype == np.uint16 else cv2.CV_8U)
        if cap is not None:  # premultiplied colour stays at most alpha (where it was)
            rgb = res[..., :3]
            np.minimum(rgb, cap, out=rgb)
        return _deliver(res, out)


def check_out(frame: np.ndarray, out: np.ndarray | None) -> bool:
    """A destination must match the frame and be writeable; it may be the frame's own memory (then True:
    in place), not a part of it."""
    if out is None:
        return False
    if not isinstance(out, np.ndarray) or out.shape != frame.shape or out.dtype != frame.dtype:
        raise ValueError(f"out must be a {frame.shape} {frame.dtype} array, got "
                         f"{getattr(out, 'shape', type(out))} {getattr(out, 'dtype', '')}")
    if not out.flags.writeable:
        raise ValueError("out must be writeable")
    same = (out.strides == frame.strides
            and out.__array_interface__["data"][0] == frame.__array_interface__["data"][0])
    if not same and np.may_share_memory(out, frame):
        raise ValueError("out overlaps the frame without being the frame's own memory")
    return same


def _cv_writes(out: np.ndarray) -> bool:
    """Whether OpenCV writes into ``out`` itself: pixels and channels packed, rows at any stride."""
    item = out.dtype.itemsize
    return out.strides[2] == item and out.strides[1] == out.shape[2] * item and out.strides[0] > 0


def _deliver(res: np.ndarray, out: np.ndarray | None) -> np.ndarray:
    """``res`` when no destination was given, else ``out`` holding it."""
    if out is None or res is out:
        return res
    np.copyto(out, res)
    return out


def _check_frame(frame: np.ndarray) -> None:
    if not isinstance(frame, np.ndarray) or frame.ndim != 3 or frame.shape[2] not in (3, 4):
        raise ValueError(f"expected an (H, W, 3|4) RGB(A) frame, got {getattr(frame, 'shape', type(frame))}")
    if frame.dtype not in (np.uint8, np.uint16, np.float32):
        raise ValueError(f"frames must be uint8, uint16 or float32, got {frame.dtype}")
    if frame.shape[0] < 16 or frame.shape[1] < 16:
        raise ValueError(f"frame {frame.shape[1]}x{frame.shape[0]} is too small to carry a watermark")


#: the embedder's linear upsampling followed by the decoder's area average, per grid axis (see _noisy_boost)
_ROUND_TRIP = np.array([0.125, 0.75, 0.125], dtype=np.float32)

#: the window-exact form's amplitude per 8-bit luma: less near black and white, where a delta would clip
_HEADROOM_LUT = np.clip(np.minimum(np.arange(256), 255 - np.arange(256)) / 16.0, 0.25, 1.0).astype(np.float32)


def _gray(frame: np.ndarray) -> np.ndarray:
    """Rec.601 luma in 8-bit code values: uint8 for uint8 frames (no copy of the channels), else float32."""
    if frame.dtype == np.uint8:
        src = frame if frame.flags.c_contiguous else np.ascontiguousarray(frame)
        return cv2.cvtColor(src, cv2.COLOR_RGBA2GRAY if frame.shape[2] == 4 else cv2.COLOR_RGB2GRAY)
    return _luma(frame)


def _luma(frame: np.ndarray) -> np.ndarray:
    """Rec.601 luma as float32 in 8-bit code values, whatever the frame's dtype."""
    rgb = frame[..., :3]
    if frame.dtype == np.uint8:
        return cv2.cvtColor(np.ascontiguousarray(rgb), cv2.COLOR_RGB2GRAY).astype(np.float32)
    scale = 1.0 / 257.0 if frame.dtype == np.uint16 else 255.0
    f = np.ascontiguousarray(rgb, dtype=np.float32) * np.float32(scale)
    return cv2.cvtColor(f, cv2.COLOR_RGB2GRAY)


# --------------------------------------------------------------------------------------------- decode

@dataclass(frozen=True)
class FrameDecode:
    """One frame's reading. ``soft``: per-bit z-scores (sign = bit); ``confidence``: per-bit 0..1
    (0 = coin flip); ``sync_score``: z-score of the sync peak (> ``SYNC_THRESHOLD``: watermark found)."""

    bits: np.ndarray
    soft: np.ndarray
    confidence: np.ndarray
    sync_score: float
    scale: float
    offset: tuple[int, int]
    phase: int
    payload: WatermarkPayload | None
    whitened: bool = False           # read by the whitened fallback (see _fold_white)

    @property
    def found(self) -> bool:
        return self.sync_score >= _threshold(self.scale)


def _threshold(scale: float) -> float:
    return SYNC_THRESHOLD if scale == 1.0 else SEARCH_THRESHOLD


def _shrink(luma: np.ndarray) -> tuple[np.ndarray, int]:
    """Area-average a large luma by an exact integer factor (OpenCV's fast path) to at least four times
    the grid on the short side, so that the scale search is cheap. Returns the float32 luma and the
    original pixels per shrunk pixel."""
    h, w = luma.shape
    k = min(h, w) // (4 * GRID_CELLS)
    if k >= 2:
        luma = cv2.resize(luma[:(h // k) * k, :(w // k) * k], (w // k, h // k), interpolation=cv2.INTER_AREA)
    else:
        k = 1
    return luma.astype(np.float32, copy=False), k


def _fold(luma: np.ndarray, px: int, short: int, scale: float) -> np.ndarray:
    """High-pass, whiten and fold onto one tile the luma of a frame whose short side is ``short`` pixels
    (``px`` original pixels per luma pixel), assuming the frame is ``scale`` of the size the watermark was
    made for (a crop)."""
    f = GRID_CELLS * px / (short / scale)      # grid cells per luma pixel
    interp = cv2.INTER_AREA if f < 1.0 else cv2.INTER_LINEAR
    return _fold_grid(cv2.resize(luma, None, fx=f, fy=f, interpolation=interp))


def _fold_grid(g: np.ndarray) -> np.ndarray:
    """The decoder's statistic on a luma already at grid resolution (also used by the embedder)."""
    hp = g - cv2.blur(g, (3, 3), borderType=cv2.BORDER_REFLECT)
    # weight each cell by the inverse of its neighbourhood's energy (texture and edges are noise to the
    # watermark; inverse-variance weighting, measured against the 1/sigma "whitening" it replaces: GRID
    # 360x288 at crf 28 0.83 -> 0.98 per-frame bit accuracy, half size + crf 23 0.52 -> 0.86)
    energy = cv2.blur(hp * hp, (5, 5), borderType=cv2.BORDER_REFLECT)
    return _tile_sum(hp / (energy + ENERGY_FLOOR))


def _tile_sum(x: np.ndarray) -> np.ndarray:
    """The weighted statistic folded onto one TILE x TILE tile (zero-padded to whole tiles)."""
    rows, cols = x.shape
    pr, pc = (-rows) % TILE, (-cols) % TILE
    if pr or pc:
        x = np.pad(x, ((0, pr), (0, pc)))
    return x.reshape(x.shape[0] // TILE, TILE, x.shape[1] // TILE, TILE).sum(axis=(0, 2), dtype=np.float64)


def _fold_white(g: np.ndarray) -> np.ndarray:
    """The fallback statistic for noise-like content, on a luma at grid resolution: the frame's own
    spectrum is flattened (each frequency divided by the content's magnitude there, averaged over
    ``WHITE_SMOOTH`` neighbouring bins) before the same energy weighting and fold as :func:`_fold_grid`.

    Why: blobs about a cell in size (random texture, foliage, the bench's background) put the content's
    energy at the watermark's own frequencies, where the plain 3x3 high-pass keeps it; whitening spends
    the decoder's weight where the content is weak. Measured at crf 23 (per-frame bit accuracy at the
    native scale, plain -> whitened): the bench's 720p background 0.76 -> 0.89, a fast pan over a grainy
    crowd photo 0.66 -> 0.71, but GRID 360x288 1.000 -> 0.996: hence a fallback, not the default."""
    x = g.astype(np.float64) - float(g.mean())
    spec = np.fft.fft2(x)
    power = np.fft.fftshift(spec.real ** 2 + spec.imag ** 2)
    power = np.fft.ifftshift(cv2.blur(power, (WHITE_SMOOTH, WHITE_SMOOTH), borderType=cv2.BORDER_REFLECT))
    xw = np.real(np.fft.ifft2(spec / np.sqrt(power + 1e-9)))
    xw *= float(x.std()) / (float(xw.std()) + 1e-12)      # back to code values, for ENERGY_FLOOR
    energy = cv2.blur(xw * xw, (5, 5), borderType=cv2.BORDER_REFLECT)
    return _tile_sum(xw / (energy + ENERGY_FLOOR))


def _native_grid(luma: np.ndarray, px: int, short: int) -> np.ndarray:
    """A shrunk luma (``px`` original pixels per pixel) resized to the uncropped frame's grid."""
    f = GRID_CELLS * px / short
    return cv2.resize(luma, None, fx=f, fy=f, interpolation=cv2.INTER_AREA if f < 1.0 else cv2.INTER_LINEAR)


def _sync_at(folded: np.ndarray, phase: int) -> float:
    """The sync correlation's z-score at offset (0, 0), where the embedder puts it."""
    corr = np.real(np.fft.ifft2(np.fft.fft2(folded) * _CODES[phase].sync_hp_fft)).ravel()
    rest = corr[1:]
    return float((corr[0] - rest.mean()) / (rest.std() + 1e-12))


def _sync(folded: np.ndarray) -> tuple[float, tuple[int, int], int]:
    """Best (z-score, cyclic offset, phase) of the sync patterns in a folded tile."""
    spec = np.fft.fft2(folded)
    best = (-np.inf, (0, 0), 0)
    for phase, code in enumerate(_CODES):
        corr = np.real(np.fft.ifft2(spec * code.sync_hp_fft)).ravel()
        idx = int(np.argmax(corr))
        rest = np.delete(corr, idx)
        score = float((corr[idx] - rest.mean()) / (rest.std() + 1e-12))
        if score > best[0]:
            best = (score, divmod(idx, TILE), phase)
    return best


def _read_bits(folded: np.ndarray, offset: tuple[int, int], phase: int) -> np.ndarray:
    code = _CODES[phase]
    aligned = np.roll(folded, (-offset[0], -offset[1]), axis=(0, 1))
    a = float((aligned * code.sync_hp).sum() / (code.sync_hp * code.sync_hp).sum())
    resid = (aligned - a * code.sync_hp).ravel()  # remove the sync's share before reading the chips
    sigma = float(resid.std()) + 1e-12
    return (code.readout @ resid) / sigma


def _finish(soft: np.ndarray, score: float, scale: float, offset: tuple[int, int], phase: int,
            whitened: bool = False) -> FrameDecode:
    bits = (soft > 0).astype(np.uint8)
    conf = np.array([math.erf(abs(z) / math.sqrt(2.0)) for z in soft])
    payload = _correct(soft)[0] if score >= _threshold(scale) else None
    return FrameDecode(bits, soft, conf, score, scale, offset, phase, payload, whitened)


def _frame_luma(frame: np.ndarray) -> np.ndarray:
    """Luma in 8-bit code values of an RGB(A) frame, or a 2-D luma (a decoded Y plane) as it is."""
    if isinstance(frame, np.ndarray) and frame.ndim == 2:
        if frame.shape[0] < 16 or frame.shape[1] < 16:
            raise ValueError(f"frame {frame.shape[1]}x{frame.shape[0]} is too small to carry a watermark")
        return frame if frame.dtype == np.uint8 else frame.astype(np.float32)
    _check_frame(frame)
    return _luma(frame)


def _search(luma: np.ndarray, px: int, short: int, scales: tuple[float, ...] | None):
    """Best (score, offset, phase, scale, folded) over the scales (the native scale first), and the
    native-scale folded tile."""
    best = native = None
    for s in (scales or CROP_SCALES):
        folded = _fold(luma, px, short, s)
        if s == 1.0:
            native = folded
        score, off, phase = _sync(folded)
        if best is None or score > best[0]:
            best = (score, off, phase, s, folded)
        if scales is None and s == 1.0 and (score >= SEARCH_THRESHOLD + 2.0 or (
                score >= SYNC_THRESHOLD and _correct(_read_bits(folded, off, phase))[0] is not None)):
            break  # a clear peak, or a peak whose bits pass the CRC, at the native scale: no crop to search
    if native is None:
        native = _fold(luma, px, short, 1.0)
    return best, native


def decode_frame(frame: np.ndarray, scales: tuple[float, ...] | None = None) -> FrameDecode:
    """Read the watermark of one frame (RGB(A) of any dtype, or a 2-D luma such as a decoded Y plane).
    Tries the uncropped scale first, then the crop scales."""
    return _decode_luma(_frame_luma(frame), scales)[0]


def _decode_luma(luma: np.ndarray, scales: tuple[float, ...] | None):
    """(FrameDecode, folded tile at the frame's best scale, folded tile at the native scale, whitened
    native tile or None).

    When no scale's peak passes, the whitened fallback is tried at the native scale; when that fails
    too, the bits reported are the native scale's (plain or whitened, whichever peak is higher): a
    crop scale whose peak did not pass is no better a guess than noise."""
    short = min(luma.shape[:2])
    small, px = _shrink(luma)
    (score, off, phase, s, folded), native = _search(small, px, short, scales)
    d = _finish(_read_bits(folded, off, phase), score, s, off, phase)
    if d.found:
        return d, folded, native, None
    white = _fold_white(_native_grid(small, px, short))
    wscore, woff, wphase = _sync(white)
    if wscore >= SYNC_THRESHOLD:
        return _finish(_read_bits(white, woff, wphase), wscore, 1.0, woff, wphase, whitened=True), white, native, white
    nscore, noff, nphase = _sync(native) if s != 1.0 else (score, off, phase)
    if wscore > nscore:
        return _finish(_read_bits(white, woff, wphase), wscore, 1.0, woff, wphase, whitened=True), white, native, white
    return _finish(_read_bits(native, noff, nphase), nscore, 1.0, noff, nphase), native, native, white


def _q(z: float) -> float:
    """Upper tail of the standard normal."""
    return 0.5 * math.erfc(z / math.sqrt(2.0))


@dataclass(frozen=True)
class FileDecode:
    """A file's reading, and how sure it is.

    Two readings are combined: the soft-weighted majority vote of the frames whose own sync peak passed
    (``frames_found``), and the *coherent* reading, where the folded tiles of every frame read are summed
    before the sync search (the geometry is the same on every frame of a file, so a mark too weak to show
    on one frame shows on the sum). ``false_positive`` bounds the probability that an unmarked file gives
    this reading: the sync peak's tail probability over every offset and scale tried, times the share of
    random bit patterns the CRC-16 would have accepted with the corrections tried.
    """

    payload: WatermarkPayload | None
    confidence: float                 # mean per-bit confidence of the reading, 0..1
    bits: np.ndarray
    bit_confidence: np.ndarray
    frames_read: int
    frames_found: int                 # frames whose sync peak passed the threshold
    frames_agreeing: int              # frames whose own payload equals the voted one
    scale: float
    sync_score: float = 0.0           # z-score of the coherent sync peak
    margin: float = 0.0               # weakest bit's z-score in the reading (signed: < 0 = corrected)
    corrected: int = 0                # bits the CRC search flipped
    false_positive: float = 1.0       # probability bound that an unmarked input reads like this
    method: str = "none"              # "vote", "coherent", "coherent-whitened" (the fallback) or "none"

    @property
    def found(self) -> bool:
        return self.payload is not None

    def certainty(self) -> str:
        """How sure the reading is, in words: frames, agreement, weakest bit, false-positive bound."""
        frames = f"{self.frames_found} of {self.frames_read} frame{'s' if self.frames_read != 1 else ''} " \
                 f"showed the sync pattern"
        if self.payload is None:
            return f"{frames}; no payload passed the CRC (best peak z {self.sync_score:.1f})"
        fp = "< 1e-15" if self.false_positive <= 1e-15 else f"{self.false_positive:.1g}"
        fixed = f", {self.corrected} bit{'s' if self.corrected != 1 else ''} corrected" if self.corrected else ""
        return (f"{frames}, {self.frames_agreeing} decode{'s' if self.frames_agreeing == 1 else ''} it alone; {self.method} reading, sync z "
                f"{self.sync_score:.1f}, weakest bit z {self.margin:.1f}{fixed}; false-positive probability {fp}")

    def to_dict(self) -> dict:
        p = self.payload
        return {"found": self.found, "marker": None if p is None else f"0x{p.marker:04x}",
                "synthetic": bool(p and p.is_synthetic),
                "manifest_id": None if p is None else f"{p.manifest_id:08x}",
                "confidence": round(self.confidence, 4), "frames_read": self.frames_read,
                "frames_found": self.frames_found, "frames_agreeing": self.frames_agreeing,
                "scale": self.scale, "sync_score": round(self.sync_score, 2), "margin": round(self.margin, 2),
                "corrected_bits": self.corrected, "false_positive": float(f"{self.false_positive:.3g}"),
                "method": self.method}


def _trial_rank(soft: np.ndarray, payload: WatermarkPayload) -> int:
    """How many candidates the CRC search looked at before this payload (1 = the hard decision)."""
    import itertools
    weak = np.argsort(np.abs(soft))[:CHASE_BITS]
    trials = [()] + [(k,) for k in weak] + list(itertools.combinations(weak, 2))
    trials.sort(key=lambda t: float(sum(abs(soft[k]) for k in t)))
    want = payload.to_bits()
    bits = (np.asarray(soft) > 0).astype(np.uint8)
    for n, t in enumerate(trials, 1):
        cand = bits.copy()
        cand[list(t)] ^= 1
        if np.array_equal(cand, want):
            return n
    return len(trials)


class FileDecoder:
    """Accumulates frames of one file (any order, any count) and gives the reading so far.

    Used by :func:`decode_frames` and :func:`decode_file`, which stops sampling once it is sure; a
    caller can feed frames as it decodes them and ask :meth:`result` at any time.
    """

    def __init__(self) -> None:
        self.read = 0
        self.found = 0
        self.total = np.zeros(PAYLOAD_BITS)
        self.decodes: list[FrameDecode] = []
        self.scales: tuple[float, ...] | None = None
        self.native = np.zeros((TILE, TILE))            # every frame's native-scale folded tile, summed
        self.locked: dict[float, np.ndarray] = {}      # folded tiles at a crop scale some frame found
        self.searched = 1  # scales tried so far, for the false-positive bound
        self.white = np.zeros((TILE, TILE))             # whitened native tiles of the frames the plain read missed
        self.white_read = 0
        self.white_found = 0                            # frames found by the whitened fallback

    def add(self, frame: np.ndarray) -> FrameDecode:
        luma = _frame_luma(frame)
        self.read += 1
        d, folded, native, white = _decode_luma(luma, self.scales)
        if not d.found and self.scales is not None:
            d, folded, native, white = _decode_luma(luma, None)   # the locked scale lost it: search again
        if self.scales is None or not d.found:
            self.searched = len(CROP_SCALES)
        self.native += native
        if white is not None:                           # the plain reading failed: the fallback was tried
            self.white += white
            self.white_read += 1
        if d.found and d.whitened:
            self.white_found += 1
        if d.found and d.scale != 1.0:
            self.locked[d.scale] = self.locked.get(d.scale, 0.0) + folded
        if d.found:
            self.found += 1
            self.total += d.soft
            self.scales = (d.scale,)
            self.decodes.append(d)
        return d

    def result(self) -> FileDecode:
        if self.read == 0:
            raise ValueError("no frames to decode")
        offsets = TILE * TILE * PHASES
        # the vote over frames that found their own sync
        vote = _correct(self.total)[0] if self.found else None
        # the coherent reading: at a crop scale frames found, else at the native scale
        scale = self.scales[0] if self.scales and self.scales[0] in self.locked else 1.0
        acc = self.locked[scale] if scale != 1.0 else self.native
        cscore, off, phase = _sync(acc)
        csoft = _read_bits(acc, off, phase)
        need = COHERENT_THRESHOLD if scale == 1.0 else SYNC_THRESHOLD
        coherent = _correct(csoft)[0] if cscore >= need else None
        white = None
        if coherent is None and vote is None and self.white_read:
            # the fallback's coherent reading, at the native scale, of the frames the plain read missed
            wscore, woff, wphase = _sync(self.white)
            wsoft = _read_bits(self.white, woff, wphase)
            white = _correct(wsoft)[0] if wscore >= COHERENT_THRESHOLD else None
        if coherent is not None:
            payload, soft, method, score = coherent, csoft, "coherent", cscore
        elif vote is not None:
            payload, soft, method = vote, self.total, "vote"
            score = max(d.sync_score for d in self.decodes)
        elif white is not None:
            payload, soft, method, score = white, wsoft, "coherent-whitened", wscore
        else:
            payload, soft, method, score = None, csoft, "none", cscore
        n = max(self.found, 1)
        # the per-bit figures come from the mean, not the sum, of z-scores: frames of static content err
        # alike, so votes are not independent and a summed z would overstate the confidence
        z = soft / (n if method == "vote" else 1.0)
        conf = np.array([math.erf(abs(v) / math.sqrt(2.0)) for v in z]) if payload else np.zeros(PAYLOAD_BITS)
        agreeing = sum(1 for d in self.decodes if payload is not None and d.payload == payload)
        if payload is not None:
            truth = np.where(payload.to_bits() > 0, 1.0, -1.0)
            margin = float(np.min(z * truth))
            corrected = int(np.sum(((soft > 0).astype(np.uint8)) != payload.to_bits()))
            scales_tried = 1 if method in ("coherent", "coherent-whitened") and scale == 1.0 else self.searched
            # the whitened fallback is a second statistic tried on the same frames: the union bound doubles
            # the sync term whenever the reading rests on it (a whitened reading, or a vote with frames it found)
            tries = 2 if method == "coherent-whitened" or (method == "vote" and self.white_found) else 1
            p_sync = min(1.0, offsets * scales_tried * tries * _q(score))
            fp = max(p_sync * _trial_rank(soft, payload) / float(1 << CRC_BITS), 1e-15)
        else:
            margin, corrected, fp = 0.0, 0, 1.0
        return FileDecode(payload, float(conf.mean()), (soft > 0).astype(np.uint8), conf, self.read, self.found,
                          agreeing, scale, float(score), margin, corrected, fp, method)

    def sure(self, false_positive: float = 1e-9, margin: float = 2.0, agreeing: int = 3) -> bool:
        """Decided: a payload whose false-positive bound and weakest bit are past these, confirmed by
        ``agreeing`` frames on their own (or, for a weak mark, 8 times as many frames read)."""
        r = self.result()
        return (r.found and r.false_positive <= false_positive and r.margin >= margin
                and (r.frames_agreeing >= agreeing or r.frames_read >= 8 * agreeing))


def decode_frames(frames, max_frames: int = 60) -> FileDecode:
    """Read the watermark from frames of one clip (any iterable of RGB(A) frames or 2-D lumas)."""
    dec = FileDecoder()
    for frame in frames:
        if dec.read >= max_frames:
            break
        dec.add(frame)
    return dec.result()


IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp", ".webp")


def read_image_luma(path: Path) -> np.ndarray:
    """The luma of an image file in 8-bit code values (any depth, alpha ignored)."""
    img = cv2.imread(os.fspath(path), cv2.IMREAD_UNCHANGED)
    if img is None:
        raise InvalidMediaError("cannot read the image", path=path)
    if img.ndim == 3:
        img = cv2.cvtColor(np.ascontiguousarray(img[..., :3]), cv2.COLOR_BGR2GRAY)  # Rec.601, as _luma
    return img if img.dtype == np.uint8 else img.astype(np.float32) * np.float32(1.0 / 257.0)


def decode_file(path: str | os.PathLike, max_frames: int = 60, *, min_frames: int = 8,
                until_sure: bool = True) -> FileDecode:
    """Decode frames spread over a video (or one image) and combine them.

    Long clips are sampled in short bursts at spread positions (the start, the end, the middle, then
    between), each reached by a seek, so the cost does not grow with the clip's length; with
    ``until_sure`` sampling stops, after ``min_frames``, as soon as the reading is decided (see
    :meth:`FileDecoder.sure`). Frames are read as their Y plane in display orientation: no RGB conversion.
    """
    path = Path(path)
    if not path.is_file():
        raise MediaError("no such file", path=path)
    if path.suffix.lower() in IMAGE_SUFFIXES:
        return decode_frames([read_image_luma(path)], 1)
    dec = FileDecoder()
    for luma in sample_video_luma(path, max_frames):
        dec.add(luma)
        if until_sure and dec.read >= min_frames and dec.read % 4 == 0 and dec.sure():
            break
    return dec.result()


def _spread(n: int) -> list[float]:
    """n positions in 0..1: 0, 1, 1/2, 1/4, 3/4, 1/8, ... (each prefix covers the clip evenly)."""
    out = [0.0, 1.0]
    den = 2
    while len(out) < n:
        out += [k / den for k in range(1, den, 2)]
        den *= 2
    return out[:n]


def y_plane(frame) -> np.ndarray:
    """A decoded PyAV video frame's luma (Y plane, 8-bit code values) in display orientation."""
    if frame.format.name.startswith(("yuv", "yuvj", "gray", "nv")) and not frame.format.name.startswith("gray16"):
        y = frame.to_ndarray(format="gray")
    else:
        y = cv2.cvtColor(frame.to_ndarray(format="rgb24"), cv2.COLOR_RGB2GRAY)
    k = int(round((getattr(frame, "rotation", 0) or 0) / 90.0)) % 4
    return np.ascontiguousarray(np.rot90(y, k)) if k else y


SEQUENTIAL_BELOW = 8       # clips under this many times the frames wanted are read in one pass, not by seeks


def sample_video_luma(path: Path, max_frames: int, burst: int = 4):
    """Yield up to ``max_frames`` lumas of a video: the first ones when the clip is barely longer, evenly
    spread ones (one decoding pass) when it is short, else bursts of ``burst`` consecutive frames at
    :func:`_spread` positions, each reached by a seek (the cost stays flat in the clip's length)."""
    import av
    try:
        container = av.open(os.fspath(path))
    except (av.FFmpegError, OSError) as exc:
        raise InvalidMediaError(f"cannot open the video: {exc}", path=path) from exc
    with container:
        if not container.streams.video:
            raise NoVideoStreamError("the file has no video stream", path=path)
        stream = container.streams.video[0]
        stream.thread_type = "AUTO"
        n = stream.frames or 0
        if not n and stream.duration and stream.average_rate:
            n = int(float(stream.duration * stream.time_base) * float(stream.average_rate))
        try:
            if n <= max_frames * 1.5 or not stream.duration:
                for i, frame in enumerate(container.decode(stream)):
                    if i >= max_frames:
                        return
                    yield y_plane(frame)
                return
            if n <= SEQUENTIAL_BELOW * max_frames:
                # a short clip: one pass, every k-th frame (a seek would decode from the same keyframe again)
                picks = {round(k * (n - 1) / (max_frames - 1)) for k in range(max_frames)}
                for i, frame in enumerate(container.decode(stream)):
                    if i in picks:
                        yield y_plane(frame)
                return
            start = stream.start_time or 0
            step = int(stream.duration / n) if n else 1      # about one frame, in stream ticks
            span = max(0, stream.duration - burst * step)    # the last burst ends at the last frame
            given = 0
            seen: set = set()
            for pos in _spread(-(-max_frames // burst)):
                target = start + int(pos * span)
                container.seek(target, stream=stream, backward=True, any_frame=False)
                got = 0
                for frame in container.decode(stream):
                    if frame.pts is not None and frame.pts < target and got == 0:
                        continue           # from the keyframe before the position up to it
                    if frame.pts in seen:
                        break              # reached frames an earlier burst read
                    seen.add(frame.pts)
                    yield y_plane(frame)
                    got += 1
                    given += 1
                    if got >= burst or given >= max_frames:
                        break
                if given >= max_frames:
                    return
        except av.FFmpegError as exc:
            raise InvalidMediaError(f"cannot decode the video: {exc}", path=path) from exc
