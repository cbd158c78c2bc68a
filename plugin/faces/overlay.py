"""Draw the analysis (boxes, track ids, landmarks, selection decision) as a FrameProcessor.

It goes through the lead's labelled renderer like every output, so the overlay video carries the label,
tags and manifest. Drawing happens on a uint8 mask and is composited only where the mask is set, in the
frame's own dtype: every other pixel stays bit-identical (uint16, float32 and alpha included).
"""

from __future__ import annotations

import cv2
import numpy as np

from .types import TrackSet

SELECTED = (40, 220, 60)  # replaced: green
IGNORED = (230, 60, 40)  # kept: red


def draw_faces(shape_hw: tuple[int, int], faces, landmarks: bool = True) -> tuple[np.ndarray, np.ndarray]:
    """(RGB uint8 drawing, uint8 coverage mask) for the faces on a frame of ``shape_hw``."""
    h, w = shape_hw
    canvas = np.zeros((h, w, 3), np.uint8)
    mask = np.zeros((h, w), np.uint8)
    thick = max(1, round(min(h, w) / 360))
    for f in faces:
        colour = SELECTED if f.selected else IGNORED
        x1, y1, x2, y2 = (int(round(v)) for v in f.bbox)
        for img, c in ((canvas, colour), (mask, 255)):
            cv2.rectangle(img, (x1, y1), (x2, y2), c, thick, cv2.LINE_AA if img is canvas else cv2.LINE_8)
            text = f"#{f.track_id} {'REPLACE' if f.selected else 'keep'}"
            scale = max(0.35, min(h, w) / 900)
            cv2.putText(img, text, (x1, max(12, y1 - 4)), cv2.FONT_HERSHEY_SIMPLEX, scale, c, thick, cv2.LINE_8)
            if landmarks:
                pts = np.round(f.landmarks).astype(np.int32)
                ok = (pts[:, 0] >= 0) & (pts[:, 0] < w) & (pts[:, 1] >= 0) & (pts[:, 1] < h)
                pts = pts[ok]
                if img is canvas:
                    img[pts[:, 1], pts[:, 0]] = (255, 255, 255)
                else:
                    img[pts[:, 1], pts[:, 0]] = 255
    return canvas, mask


def composite(frame: np.ndarray, canvas: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """Put ``canvas`` onto ``frame`` where ``mask`` is set, in the frame's dtype; alpha untouched."""
    out = frame.copy()
    sel = mask > 0
    if not sel.any():
        return out
    if frame.dtype == np.uint8:
        vals = canvas[sel]
    elif frame.dtype == np.uint16:
        vals = canvas[sel].astype(np.uint16) * 257
    else:
        vals = canvas[sel].astype(frame.dtype) / 255.0
    if frame.ndim == 2:
        out[sel] = vals.mean(1).astype(frame.dtype)
    else:
        out[..., :3][sel] = vals
    return out


class TrackOverlay:
    """FrameProcessor that draws a precomputed TrackSet (read-only, hence thread-safe)."""

    name = "face-track-overlay"
    thread_safe = True

    def __init__(self, tracks: TrackSet, settings: dict | None = None, landmarks: bool = True):
        self.tracks = tracks
        self._settings = settings or {}
        self.landmarks = landmarks

    def process(self, frame: np.ndarray, ctx):
        from ..frames import ProcessResult

        faces = self.tracks.frames.get(ctx.index, [])
        canvas, mask = draw_faces(frame.shape[:2], faces, self.landmarks)
        return ProcessResult(composite(frame, canvas, mask), ())

    def model_records(self) -> list[dict]:
        return list(self.tracks.models)

    def settings_dict(self) -> dict:
        return {"overlay": True, **self._settings}
