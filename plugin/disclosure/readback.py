"""Read a render's own disclosure back from the written file before it is committed.

The container tags are read back by the writer; this module does the same for the two pixel layers,
because an encoder setting can destroy them while every tag is fine (``--crf 51``, a starved bitrate, a
tiny frame): the invisible watermark is decoded the way ``facecomp verify`` decodes it, and the visible
label is looked for on a few of the same frames. A layer that did not survive is a
:class:`~facecomp.errors.MetadataError` (exit 8) whose hint names the settings to change; the renderer
then removes the temporary file, so no output that ``verify`` would reject is ever committed.

Cheap on purpose: frames are sampled (the first ones, or short bursts spread over a long clip), read as
their Y plane (no RGB conversion), and sampling stops once the reading is decided.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np

from ..errors import MetadataError
from .label import LabelSettings
from .watermark import FileDecode, FileDecoder, WatermarkPayload, read_image_luma, sample_video_luma

READBACK_FRAMES = 16      # at most this many frames are decoded
LABEL_FRAMES = 3          # of which this many are checked for the label
SHORT_READ = 10           # fewer frames than this in the whole output: the hint also suggests a longer render
#                           (the mark is read from their sum: at crf 28 on GRID, 5 frames lost it for 7 of
#                           96 random ids, 25 frames for none of 30)


REFERENCE_FRAMES = 4      # stamped frames the renderer decodes before encoding (see check_written)

CONTENT_WARNING = ("the invisible watermark cannot be read on this content: it does not decode even from the "
                   "frames as stamped, before encoding (noise-like, flat black or very small frames); the file "
                   "is written, the label and the manifest carry the disclosure, and `facecomp verify` will "
                   "report the watermark missing")


@dataclass(frozen=True)
class ReadBack:
    """What was read back; ``to_dict`` goes into the manifest. ``warning``: set when the watermark could
    not be read and the content, not the encoding, is the cause."""

    frames_read: int
    watermark: dict
    label_frames: int
    label_found: int
    seconds: float
    warning: str | None = None

    def to_dict(self) -> dict:
        return {"frames_read": self.frames_read, "watermark": self.watermark,
                "watermark_readable": self.warning is None,
                "label": {"frames_checked": self.label_frames, "frames_found": self.label_found},
                "seconds": round(self.seconds, 3)}


def _sample(media: Path | Sequence[Path], max_frames: int):
    if isinstance(media, (str, os.PathLike)):
        yield from sample_video_luma(Path(media), max_frames)
        return
    files = list(media)
    if len(files) > max_frames:
        files = [files[round(i * (len(files) - 1) / (max_frames - 1))] for i in range(max_frames)]
    for f in files:
        yield read_image_luma(Path(f))


def settings_hint(options: dict, size: tuple[int, int] | None) -> str:
    """Which settings to change, from the resolved encoder options and the frame size (width, height)."""
    tips = []
    crf = options.get("crf")
    if crf is not None and float(crf) > 23:
        tips.append(f"lower --crf: it is {crf}, and 18 to 23 keep the watermark")
    if "qp" in options:
        tips.append(f"lower the qp encoder option (it is {options['qp']}), or drop it and use --crf")
    rate = [k for k in ("b", "b:v", "maxrate", "bufsize") if k in options]
    if rate:
        tips.append("raise or drop the bitrate limit: " + ", ".join(f"{k}={options[k]}" for k in rate))
    if size is not None and min(size) < 240:
        tips.append(f"render at a larger frame size: the output is {size[0]}x{size[1]} (scale before the "
                    f"render, not after)")
    if not tips:
        tips.append("use a higher-quality encoder setting (lower --crf, a slower --preset) or a lossless codec")
    return "; ".join(tips)


def check_written(media: Path | Sequence[Path], *, payload: WatermarkPayload, label: LabelSettings,
                  options: dict, size: tuple[int, int] | None = None, max_frames: int = READBACK_FRAMES,
                  display: str | os.PathLike | None = None, reference: FileDecode | None = None) -> ReadBack:
    """Decode the watermark and find the label in the written ``media`` (a file, or a sequence's files).

    Raises :class:`MetadataError` when the watermark does not decode to ``payload`` or the label is not
    on every checked frame; the hint says which setting to change (see :func:`settings_hint`).
    ``display``: the name errors give (the final output, not the temporary file read). ``reference``: the
    reading of a few frames as stamped, before encoding; when even those do not decode, the content is
    the cause (no encoder setting would help) and the result carries a warning instead of an error.
    """
    from .detect_label import find_label

    t0 = time.perf_counter()
    dec = FileDecoder()
    lumas: list[np.ndarray] = []
    for luma in _sample(media, max_frames):
        dec.add(luma)
        if len(lumas) < max_frames:
            lumas.append(luma)
        if dec.read >= 8 and dec.read % 4 == 0 and dec.sure() and dec.result().payload == payload:
            break
    if dec.read == 0:
        raise MetadataError("no frame of the written output could be read back", path=display or _shown(media))
    result = dec.result()
    picks = sorted({0, len(lumas) // 2, len(lumas) - 1})[:LABEL_FRAMES]
    found = sum(1 for i in picks if find_label(_gray8(lumas[i]), label, method="signature").found)
    where = f"{dec.read} frame{'s' if dec.read != 1 else ''} read back"
    # the encoder is to blame only when the frames as stamped read clearly (their weakest bit at z >= 1)
    unreadable = result.payload is None and reference is not None and not (
        reference.payload == payload and reference.margin >= 1.0)
    lost = []
    if result.payload != payload and not unreadable:
        lost.append("the invisible watermark " + ("decoded to another id" if result.payload is not None else
                    f"no longer decodes ({result.frames_found} of {result.frames_read} frames showed it)"))
    if found < len(picks):
        lost.append(f"the visible label was found on only {found} of {len(picks)} checked frames")
    if lost:
        raise MetadataError(f"the disclosure did not survive the encoding: {'; '.join(lost)}, so `facecomp "
                            f"verify` would reject the file ({where}); nothing was written",
                            path=display or _shown(media), hint=settings_hint(options, size) + (
                                f"; or render more frames: {dec.read} is few to read the mark back from at "
                                f"this quality" if dec.read < SHORT_READ and not result.found else ""))
    rb = ReadBack(dec.read, result.to_dict(), len(picks), found, time.perf_counter() - t0,
                  CONTENT_WARNING if unreadable else None)
    return rb


def _gray8(luma: np.ndarray) -> np.ndarray:
    """8-bit grey for the label detector (a 16-bit image's luma comes as float code values)."""
    return luma if luma.dtype == np.uint8 else np.clip(np.rint(luma), 0, 255).astype(np.uint8)


def _shown(media) -> str:
    if isinstance(media, (str, os.PathLike)):
        return os.fspath(media)
    files = list(media)
    return os.fspath(files[0].parent) if files else "output"
