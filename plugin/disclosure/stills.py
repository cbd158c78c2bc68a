"""The writer of still images (training previews, contact sheets, overlays saved as pictures).

Why: every image the project writes carries the visible label, not only video frames. Stills pass the
same :class:`~facecomp.disclosure.stamp.Stamper` as frames (label + watermark) and are encoded only
here, from a :class:`~facecomp.disclosure.stamp.StampedFrame`. The label goes on a dark band added on
top of the picture (widened when the picture is narrow), so it never covers what the picture shows (a
preview grid, a contact sheet) and is never shrunk to fit a small one.
"""

from __future__ import annotations

import os
from pathlib import Path

import cv2
import numpy as np

from ..errors import DisclosureError, OutputError
from .label import LabelSettings
from .stamp import StampedFrame, Stamper

BAND_LEVEL = 24  # grey of the band a small picture gets for its label
MIN_WIDTH = 320  # narrower pictures are widened (right side) so the label's words fit on one line each


def _canvas(rgb: np.ndarray, stamper: Stamper) -> np.ndarray:
    """``rgb`` with a band on top (and on the right when narrow) holding the whole label box."""
    h, w = rgb.shape[:2]
    width = max(w, MIN_WIDTH)
    band = 0
    for _ in range(16):
        try:
            _, y0, _, y1 = stamper.label_box(h + band, width)
        except DisclosureError:
            band += max(16, h // 2)
            continue
        need = y1 + y0  # the box and a margin as wide as the one above it
        if need <= band:
            break
        band = need
    else:
        raise DisclosureError(f"no band makes a {w}x{h} picture carry a legible label")
    out = np.full((h + band, width, 3), BAND_LEVEL, np.uint8)
    out[band:, :w] = rgb
    return out


def labelled(rgb: np.ndarray, *, watermark_id: str, label: LabelSettings | None = None) -> StampedFrame:
    """An RGB uint8 picture stamped like a frame, the label on a band above it (see the module docstring)."""
    if not isinstance(rgb, np.ndarray) or rgb.dtype != np.uint8 or rgb.ndim != 3 or rgb.shape[2] != 3:
        raise ValueError(f"pictures are (H, W, 3) uint8 RGB, got {getattr(rgb, 'shape', type(rgb))}")
    stamper = Stamper(label or LabelSettings(), watermark_id)
    canvas = _canvas(rgb, stamper)
    return stamper.stamp(canvas, owned=True)


def encode_png(picture: StampedFrame) -> bytes:
    """PNG bytes of a stamped picture (see :func:`labelled`)."""
    if not isinstance(picture, StampedFrame):
        raise TypeError("encode_png takes a StampedFrame from labelled(): every picture carries the label")
    px = picture.pixels
    if px.dtype != np.uint8 or px.shape[2] != 3:
        raise ValueError("pictures are written as 8-bit RGB")
    ok, buf = cv2.imencode(".png", cv2.cvtColor(px, cv2.COLOR_RGB2BGR))
    if not ok:
        raise OutputError("PNG encoding failed")
    return buf.tobytes()


def write_png(path: str | os.PathLike, rgb: np.ndarray, *, watermark_id: str,
              label: LabelSettings | None = None) -> Path:
    """Stamp ``rgb`` and write it as a PNG: to a temporary name first, renamed when complete."""
    path = Path(path)
    data = encode_png(labelled(rgb, watermark_id=watermark_id, label=label))
    from ..atomic import atomic_write

    return atomic_write(path, data)
