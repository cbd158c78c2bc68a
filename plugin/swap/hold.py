"""Held frames: a frame that repeats an earlier one (a freeze frame, a pulldown's doubled frame, a still
held on the timeline) renders its faces as that earlier frame does.

Why: every per-frame answer of a clip session (landmarks and their smoothing, colour statistics, the hand
track) comes from a window that moves with the frame index, and the landmarker's search region follows
the previous frame's answer, so on a picture that does not move the swapped face still moved: on the ASL
clip's nine doubled frames (every 13th) it changed by 0.3-6.1 levels on average and up to 104, where
the original changed by 0.0-0.2. A picture that holds still must give a face that holds still.

*Still*: around every selected face (its box grown by half a face width, where a hand coming in would
show first), no 16 px block has more than 6 pixels whose luma changed by over 10 levels. Measured on
the shared clips: an encoder's doubled frames reach 0-6 such pixels in their worst block, a face that
moves by a pixel (a lip, a blink) 11 and more; a face that holds still between two real frames (GRID's
silent starts) reaches 1-8 and is held as well, which it may be: nothing in it moved.

*Anchor* of frame n: within the run of still frame pairs that ends at n, the run's first frame, held
by each next frame while that frame is still against it too; a frame that is not (a slow push-in on a
photo is still from frame to frame but not over many) becomes the anchor of those after it, so the
face steps forward by less than a still frame's change. The run is looked for back to the start of
the span before the one n is in (spans of 24 frames), so the answer depends only on the clip's frames
near n: a frame is the same rendered first, last, alone or in order. A freeze longer than that moves
its anchor once per span.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from dataclasses import dataclass
from typing import Callable, Sequence

import cv2
import numpy as np

from ..errors import SettingsError


@dataclass(frozen=True)
class HoldSettings:
    block: int = 16      # px: the cell a change is counted in
    levels: int = 10     # luma levels a pixel must change by to count
    pixels: int = 6      # changed pixels a cell may hold and still be still
    span: int = 24       # frames: the run is looked for back to the start of the span before n's
    grow: float = 0.5    # face widths around each face's box that must be still too

    def __post_init__(self) -> None:
        if self.block < 2 or self.levels < 0 or self.pixels < 0 or self.span < 1 or self.grow < 0:
            raise SettingsError("hold settings: block >= 2, span >= 1, the rest not negative")


Region = tuple[tuple[int, int, int, int], ...]  # boxes (x0, y0, x1, y1), block-aligned


def region_of(boxes: Sequence[Sequence[float]], shape: tuple[int, int] | None, settings: HoldSettings) -> Region:
    """The faces' boxes grown by ``grow`` face widths, aligned to blocks (so the same faces a fraction of
    a pixel apart give the same region) and clipped to the frame (``shape``; None: at its far edges by
    the comparison itself)."""
    b = settings.block
    out = []
    for x0, y0, x1, y1 in boxes:
        g = settings.grow * max(float(x1) - float(x0), float(y1) - float(y0))
        bx0, by0 = max(0, int((x0 - g) // b) * b), max(0, int((y0 - g) // b) * b)
        bx1, by1 = int(-(-(x1 + g) // b)) * b, int(-(-(y1 + g) // b)) * b
        if shape is not None:
            bx1, by1 = min(shape[1], bx1), min(shape[0], by1)
        if bx1 > bx0 and by1 > by0:
            out.append((bx0, by0, bx1, by1))
    return tuple(sorted(out))


def gray(rgb: np.ndarray) -> np.ndarray:
    """The luma a comparison reads (the frame's own pixels: RGB uint8)."""
    return cv2.cvtColor(np.ascontiguousarray(np.asarray(rgb)[..., :3]), cv2.COLOR_RGB2GRAY)


def still(a: np.ndarray, b: np.ndarray, region: Region, settings: HoldSettings = HoldSettings()) -> bool:
    """Whether frames ``a`` and ``b`` (RGB uint8, or their :func:`gray`) are the same picture within
    ``region`` (see the module)."""
    if a.shape[:2] != b.shape[:2] or not region:
        return False
    s = settings
    for x0, y0, x1, y1 in region:
        ga, gb = a[y0:y1, x0:x1], b[y0:y1, x0:x1]
        if ga.size == 0:
            continue
        if ga.ndim == 3:
            ga, gb = gray(ga), gray(gb)
        moved = cv2.compare(cv2.absdiff(ga, gb), s.levels, cv2.CMP_GT)  # 255 where a pixel moved
        total = cv2.countNonZero(moved)
        if total <= s.pixels:
            continue
        h, w = moved.shape
        if total > s.pixels * (-(-h // s.block)) * (-(-w // s.block)):
            return False  # more than every block may hold: one of them holds more
        # changed pixels per block (the frame's last partial blocks count as blocks) from the integral image
        ii = cv2.integral(moved // 255)
        ys, xs = np.r_[0:h:s.block, h], np.r_[0:w:s.block, w]
        counts = (ii[ys[1:]][:, xs[1:]] - ii[ys[:-1]][:, xs[1:]]
                  - ii[ys[1:]][:, xs[:-1]] + ii[ys[:-1]][:, xs[:-1]])
        if int(counts.max()) > s.pixels:
            return False
    return True


class Holds:
    """The anchors of one clip's frames (a clip session's swap worker holds one). Thread-safe.

    ``frame(j)``: the clip's RGB uint8 frame j; ``faces(j)``: (the selected tracks, their region) at
    frame j. A pair of frames is still where both have the same tracks and the later one's region is
    still; the anchor runs forward through a run of still pairs from its start ``s``: frame ``s`` is its
    own anchor, each next frame keeps the anchor before it while it is still against that anchor and
    is its own otherwise, so the anchor only moves forward. Answers are cached, and so is the luma of
    the last few frames compared: a render in order compares each frame once with the one before it
    and once with its anchor, and reads no frame but the one it renders (converting a decoded frame to
    RGB again costs about 4 ms at 720p; its luma 0.3 ms)."""

    def __init__(self, frame: Callable[[int], np.ndarray],
                 faces: Callable[[int], tuple[frozenset, Region]], settings: HoldSettings = HoldSettings(),
                 cache: int = 4096, lumas: int = 6):
        self.settings = settings
        self._frame, self._faces = frame, faces
        self._still: OrderedDict[tuple[int, int], bool] = OrderedDict()
        self._anchors: OrderedDict[tuple[int, int], int] = OrderedDict()
        self._lumas: OrderedDict[int, np.ndarray] = OrderedDict()
        self._cache, self._luma_cache = cache, lumas
        self._lock = threading.Lock()

    def anchor(self, n: int, own: np.ndarray | None = None) -> int:
        """The frame whose faces frame ``n`` takes (``n`` itself when it is not held). ``own``: frame n's
        RGB uint8 pixels when the caller has them (the clip is then not asked for them)."""
        if own is not None and self._faces(n)[1]:
            self._luma(n, own)  # the next frame compares with this one
        if n <= 0:
            return n
        span = self.settings.span
        low = max(0, (n // span) * span - span)
        s = n
        while s > low and self._pair(s, s - 1):
            s -= 1
        if s == n:
            return n
        j, a = n, None
        while j > s:  # the latest frame of this run whose anchor is known
            a = self._get(self._anchors, (j, s))
            if a is not None:
                break
            j -= 1
        if a is None:
            j, a = s, s
        while j < n:
            j += 1
            a = a if self._pair(j, a) else j
            self._keep(self._anchors, (j, s), a, self._cache)
        return a

    def _get(self, table: OrderedDict, key):
        """A cached answer (the most recently used are kept), or None."""
        with self._lock:
            got = table.get(key)
            if got is not None:
                table.move_to_end(key)
            return got

    def _luma(self, j: int, rgb: np.ndarray | None = None) -> np.ndarray:
        got = self._get(self._lumas, j)
        if got is not None:
            return got
        got = gray(self._frame(j) if rgb is None else rgb)
        self._keep(self._lumas, j, got, self._luma_cache)
        return got

    def _pair(self, i: int, j: int) -> bool:
        """Whether frame ``i`` is still against the earlier frame ``j`` (in frame i's faces' region)."""
        if i == j:
            return True
        key = (i, j)
        got = self._get(self._still, key)
        if got is not None:
            return got
        ids_i, region = self._faces(i)
        ids_j, _ = self._faces(j)
        got = bool(region) and ids_i == ids_j and still(self._luma(i), self._luma(j), region, self.settings)
        self._keep(self._still, key, got, self._cache)
        return got

    def _keep(self, table: OrderedDict, key, value, size: int) -> None:
        with self._lock:
            table[key] = value
            table.move_to_end(key)
            while len(table) > size:
                table.popitem(last=False)
