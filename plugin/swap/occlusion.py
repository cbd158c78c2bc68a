"""What is in front of the target face stays in front: hands, the target's glasses, other occluders.

Each frame gives one *keep* mask in the patch's space (1 = the target's pixel stays): the silhouettes of
hands near the face (MediaPipe palm detector + hand landmarker, :mod:`facecomp.faces.hands`, run only
in a square around the face), the band the target's glasses sit in when the target wears glasses, and
regions whose colour no face has (an object in front: a microphone, a cup, a pen).

The last is a colour test: the target face's own chroma (Lab a*, b*) is modelled by a robust Gaussian
over the face; pixels far outside it (and far in absolute terms, so beards and brows do not count) that
form a sizeable region reaching the face's outline are taken as an occluder — objects come into a face
from outside, while the face's own features lie inside. Objects are decided from the frame alone; glasses
per track, from its frames around this one (:meth:`Occluder.glasses_scores`). Hands are followed through the clip when the caller gives it (:class:`ClipFrames`, a clip
session's worker): the hands at frame ``n`` come from a track started a bounded number of frames before
``n`` (:meth:`facecomp.faces.hands.HandFinder.hands_at`), so frame ``n`` is the same whichever frames
were rendered before; the per-clip cache lives in the :class:`Occluder`, one per clip. Without the clip
(a host's lone frame) the palm detector looks at that frame alone.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass

import cv2
import numpy as np

from ..errors import SettingsError
from . import masks

GLASSES_WINDOW = 25              # frames of the track the decision reads: this one and those before it
#                                  (and, on a track's first frames, those after it: see glasses_scores)
GLASSES_TRACK_THRESHOLD = 1.5    # on their median: shared clips, glasses 1.6-1.9, bare faces 0.3-1.4
# a track's first frames read on into the frames after them only where a score so far is over this share
# of the single-frame bar (1.275): the walking clip's man starts at 1.46; the bare faces of the ASL, the
# head-pose woman and the walking clip never reach it (0.72-1.0), so their renders read nothing ahead
GLASSES_READ_AHEAD = 0.75
GLASSES_CACHE = 8 * 4 * GLASSES_WINDOW  # cached (track, frame) scores: a few windows of several faces
GLASSES_KERNEL_PX = 7             # the black-hat's smallest structuring element (see glasses_pixels)
GLASSES_CONTRAST = (0.03, 0.06)  # a frame's pixel this much darker than what is around it: kept from
#                                  nothing to whole (0..1 luma; the walking clip's rims are 0.06-0.1)
GLASSES_FAINT = 0.02  # and, joined to a stretch over the ramp's top, this faint: the whole rim (see glasses_pixels)
# the band searched for a target's frames: the eye loops scaled 2.5 across and 4 up and down (the
# source's texture band, 2.5 both ways, did not reach the lower rims of large frames on a small face)
GLASSES_BAND_TALL = 4.0


@dataclass(frozen=True)
class OcclusionSettings:
    """Which occluders are kept in front of the swapped face."""

    hands: bool = True
    glasses: bool = True        # the target's glasses stay (the eye band comes from the target)
    objects: bool = True        # other occluders, by colour
    object_sigma: float = 3.0   # distance (in the face's robust chroma spread) of an occluder pixel
    object_delta: float = 12.0  # and at least this far from the face's median chroma (Lab a*b* units)
    object_area: float = 0.01   # smallest occluder region, as a share of the face's area

    @property
    def any(self) -> bool:
        return self.hands or self.glasses or self.objects

    def __post_init__(self) -> None:
        if self.object_sigma <= 0 or self.object_delta < 0 or not 0 <= self.object_area < 1:
            raise SettingsError("occlusion object thresholds must be positive (area share in [0, 1))")


@dataclass(frozen=True)
class ClipFrames:
    """The clip around the frame being rendered, for following hands: ``at(track, j)`` gives the clip's
    frame j (RGB uint8) and the track's face box there in full-frame pixels, or None where the track has
    no face; ``origin``: the rendered window's top-left in full-frame pixels."""

    index: int
    at: Callable[[int, int], tuple[np.ndarray, tuple[float, float, float, float]] | None]
    origin: tuple[float, float] = (0.0, 0.0)
    # the clip's frame j and the track's landmarks there (full-frame pixels), or None where the track has
    # no face or j is past the clip's end; for the glasses decision over the track's frames around this
    # one (None: decided from the frame alone)
    landmarks: Callable[[int, int], tuple[np.ndarray, np.ndarray] | None] | None = None


class Occluder:
    """Builds the per-frame keep mask of one clip (thread-safe; models load on first need)."""

    def __init__(self, settings: OcclusionSettings = OcclusionSettings(), progress=None,
                 shared: "Occluder | None" = None):
        self.settings = settings
        self.progress = progress
        self._shared = shared  # a clip's occluder shares the first one's loaded hand models
        self._hands = None
        self._lock = threading.Lock()
        self._glasses: OrderedDict = OrderedDict()  # (track, frame) -> that frame's bridge score
        self.stats = {"hand_frames": 0, "glasses_frames": 0, "object_frames": 0}  # counts, for reports

    def _hand_finder(self):
        with self._lock:
            if self._hands is None:
                from ..faces.hands import HandFinder

                models = self._shared._hand_finder() if self._shared is not None else None
                self._hands = HandFinder(progress=self.progress, models=models)
            return self._hands

    def model_records(self) -> list[dict]:
        return self._hand_finder().model_records() if self.settings.hands else []

    def keep_mask(self, frame: np.ndarray, patch, index: int | None = None,
                  clip: ClipFrames | None = None) -> np.ndarray | None:
        """1 where the target must stay in front, in the patch's space, or None when nothing is in front.
        ``clip``: the frames around this one (hands are then followed; else found on ``frame`` alone)."""
        shape = patch.mask.shape
        width = masks.face_width(patch.landmarks)
        keep = None
        s = self.settings
        if s.hands:
            hm = self._hands_in_patch(frame, patch, clip)
            if hm is not None:
                keep = hm
                self.stats["hand_frames"] += 1
        if s.glasses and self._wears_glasses(patch, clip):
            from .texture import glasses_band

            g = glasses_pixels(patch.target, patch.landmarks, glasses_band(patch.landmarks, shape, GLASSES_BAND_TALL))
            keep = g if keep is None else np.maximum(keep, g)
            self.stats["glasses_frames"] += 1
        if s.objects:
            om = object_mask(patch.target, patch.landmarks, s)
            if om is not None:
                keep = om if keep is None else np.maximum(keep, om)
                self.stats["object_frames"] += 1
        if keep is None:
            return None
        # a soft, slightly grown edge: an occluder's outline is never cut by the face
        g = max(1, int(round(0.012 * width)))
        keep = cv2.dilate(keep, cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * g + 1, 2 * g + 1)))
        return cv2.GaussianBlur(keep, (2 * g + 1, 2 * g + 1), g / 2.0)

    def _hands_in_patch(self, frame: np.ndarray, patch, clip: ClipFrames | None) -> np.ndarray | None:
        from ..faces.geometry import to_rgb8
        from ..faces.hands import Hand, hand_mask

        m = patch.to_frame
        finder = self._hand_finder()
        if clip is not None and patch.track_id is not None:
            track = patch.track_id
            hands = finder.hands_at(clip.index, track, lambda j: clip.at(track, j))
            if clip.origin != (0.0, 0.0):  # full-frame keypoints into the rendered window
                o = np.float32(clip.origin)
                hands = [Hand(h.keypoints - o, h.presence) for h in hands]
        else:
            lm_frame = patch.landmarks @ m[:, :2].T + m[:, 2]
            lo, hi = lm_frame.min(axis=0), lm_frame.max(axis=0)
            box = (float(lo[0]) + 0.5, float(lo[1]) + 0.5, float(hi[0]) + 0.5, float(hi[1]) + 0.5)
            hands = finder.near(to_rgb8(frame), box)
        if not hands:
            return None
        # the silhouette from 21 keypoints is approximate, and a hand painted over is far worse than a
        # sliver of the target's own face beside it: grow it by 0.3 of the palm width
        grow = max(2, int(round(0.3 * float(np.mean([h.palm_width for h in hands])))))
        kernel = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * grow + 1, 2 * grow + 1))
        off = patch.translation_only
        if off is not None:
            return cv2.dilate(hand_mask(hands, patch.mask.shape, off, finder.settings.bone_width), kernel)
        H, W = frame.shape[:2]
        full = cv2.dilate(hand_mask(hands, (H, W), (0.0, 0.0), finder.settings.bone_width), kernel)
        inv = cv2.invertAffineTransform(m.astype(np.float64))
        h, w = patch.mask.shape
        return cv2.warpAffine(full, inv, (w, h), flags=cv2.INTER_LINEAR, borderValue=0)

    def _wears_glasses(self, patch, clip: ClipFrames | None = None) -> bool:
        from .texture import GLASSES_THRESHOLD, glasses_score

        if clip is None or clip.landmarks is None or patch.track_id is None or clip.index < 0:
            return glasses_score(patch.target, patch.landmarks) > GLASSES_THRESHOLD  # a lone frame
        return self.track_wears_glasses(patch.track_id, clip)

    def track_wears_glasses(self, track: int, clip: ClipFrames) -> bool:
        """The glasses decision for ``track`` at ``clip.index``, from its last frames (see the module)."""
        from .texture import GLASSES_THRESHOLD

        scores = self.glasses_scores(track, clip)
        if not scores:
            return False
        # the median holds on a wavering face; a quarter of the frames over the single-frame bar catches
        # a wearer whose bridge showed weakly before (a man walking in: 0.7-1.5, then 1.8-3.2)
        above = sum(1 for v in scores if v > GLASSES_THRESHOLD)
        return float(np.median(scores)) > GLASSES_TRACK_THRESHOLD or 4 * above >= len(scores)

    def glasses_scores(self, track: int, clip: ClipFrames) -> list[float]:
        """The bridge scores of ``track`` on its last ``GLASSES_WINDOW`` frames (``index - GLASSES_WINDOW + 1
        .. index``, where it has a face), in frame order. A track seen on fewer of them (it has just come
        in, or the clip has just started) reads on into the frames after ``index``, up to ``GLASSES_WINDOW
        - 1`` ahead and while it keeps its face there, until it has ``GLASSES_WINDOW`` scores, where a
        score so far hints at glasses (over ``GLASSES_READ_AHEAD`` of the single-frame bar): so its first
        frames are decided from as many frames as the rest, and a wearer whose bridge shows weakly as he
        walks in keeps his glasses from his first frame instead of from the frame his scores rise. Each
        score is a function of its frame alone (cached per clip), so the decision at a frame is the same
        whichever frames were rendered before it."""
        n = clip.index
        out = [v for j in range(max(0, n - GLASSES_WINDOW + 1), n + 1)
               if (v := self.glasses_score_at(track, j, clip)) == v]  # not NaN: the track has a face there
        from .texture import GLASSES_THRESHOLD

        j = n + 1
        hint = bool(out) and max(out) > GLASSES_READ_AHEAD * GLASSES_THRESHOLD
        while hint and len(out) < GLASSES_WINDOW and j < n + GLASSES_WINDOW:
            v = self.glasses_score_at(track, j, clip)
            if v != v:  # the track leaves (or the clip ends): what it showed so far decides
                break
            out.append(v)
            j += 1
        return out

    def glasses_score_at(self, track: int, j: int, clip: ClipFrames) -> float:
        """The bridge score of ``track`` on the clip's frame ``j`` (NaN where it has no face there)."""
        from .texture import glasses_score

        key = (track, j)
        with self._lock:
            hit = self._glasses.get(key)
            if hit is not None:
                self._glasses.move_to_end(key)
                return hit
        got = clip.landmarks(track, j) if j >= 0 else None
        hit = float("nan") if got is None else _bridge_score(got[0], got[1], glasses_score)
        with self._lock:
            self._glasses[key] = hit
            while len(self._glasses) > GLASSES_CACHE:
                self._glasses.popitem(last=False)
        return hit


def glasses_pixels(target: np.ndarray, lm: np.ndarray, band: np.ndarray) -> np.ndarray:
    """The target's glasses within their band (float32 0..1): thin structures darker than what is
    around them by a frame's contrast (a morphological black-hat: the rims, and with them lashes and
    creases there), less the eyes (the target's own show through in any case) and the brows (the new
    face's: on the walking clip's woman they took identity from 36-50% to 36-64% of frames, her rims
    as whole). Keeping the whole band kept the target's eyes, lids and skin there, and dlib
    read the target. The structuring element (7 px, or 0.04 face widths on faces over 200 px) is wider
    than a rim, yet narrower than the lens between a rim and the eye, which a wider one fills in; a
    threshold on plain darkness took the shading under the eyes with it."""
    width = float(masks.face_width(lm))
    ys, xs = np.nonzero(band > 0.5)
    if ys.size == 0:
        return band
    k = max(GLASSES_KERNEL_PX, int(0.04 * width) | 1)
    h, w = band.shape
    y0, y1 = max(0, ys.min() - k), min(h, ys.max() + k + 1)
    x0, x1 = max(0, xs.min() - k), min(w, xs.max() + k + 1)
    gray = cv2.cvtColor(np.ascontiguousarray(target[y0:y1, x0:x1, :3], np.float32), cv2.COLOR_RGB2GRAY)
    dark = cv2.morphologyEx(gray, cv2.MORPH_BLACKHAT, cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (k, k)))
    lo, hi = GLASSES_CONTRAST
    sel = np.clip((dark - lo) / (hi - lo), 0.0, 1.0)  # faint stretches of a blurred rim kept in part
    # a rim is one connected stroke: its faint stretches (a brown frame's lower rim on a tan cheek, a
    # blurred one on a small face) are kept whole where they join a stretch darker than the ramp's top
    n, lab = cv2.connectedComponents((dark > GLASSES_FAINT).astype(np.uint8), connectivity=8)
    if n > 1:
        strong = np.zeros(n, bool)
        strong[lab[dark > hi]] = True
        strong[0] = False
        np.maximum(sel, strong[lab].astype(np.float32), out=sel)
    eyes = np.zeros(sel.shape, np.uint8)
    off = np.float32([x0, y0])
    for loop in (masks.EYE_RIGHT, masks.EYE_LEFT):
        e = lm[list(loop)].astype(np.float32) - off
        c = e.mean(axis=0)
        cv2.fillPoly(eyes, [np.round((c + (e - c) * 1.3) * 16).astype(np.int32)], 1, shift=4)
    sel[eyes > 0] = 0.0
    brows = np.zeros(sel.shape, np.uint8)
    for loop in masks.BROWS:
        cv2.fillPoly(brows, [np.round((lm[list(loop)].astype(np.float32) - off) * 16).astype(np.int32)], 1, shift=4)
    sel[brows > 0] = 0.0
    g = max(1, int(round(0.015 * width)))
    sel = cv2.dilate(sel, cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * g + 1, 2 * g + 1)))
    out = np.zeros(band.shape, np.float32)
    out[y0:y1, x0:x1] = sel * band[y0:y1, x0:x1]
    return out


def _bridge_score(rgb: np.ndarray, lm: np.ndarray, score) -> float:
    """:func:`facecomp.swap.texture.glasses_score` on an 8-bit frame, converting only the face's box."""
    lm = np.asarray(lm, np.float32)
    h, w = rgb.shape[:2]
    pad = 0.2 * float(masks.face_width(lm)) + 4
    x0, y0 = (max(0, int(v - pad)) for v in lm.min(axis=0))
    x1, y1 = (int(v + pad) + 1 for v in lm.max(axis=0))
    x1, y1 = min(w, x1), min(h, y1)
    if x1 - x0 < 3 or y1 - y0 < 3:
        return float("nan")
    crop = np.asarray(rgb[y0:y1, x0:x1, :3], np.float32) * np.float32(1.0 / 255.0)
    return float(score(crop, lm - np.float32([x0, y0])))


def _medians(rows: np.ndarray) -> tuple[float, float]:
    """np.median of each of two rows, with one partition for both (a third of two np.median calls)."""
    n = rows.shape[1]
    k = n // 2
    if n % 2:
        mid = np.partition(rows, k, axis=1)[:, k]
    else:
        part = np.partition(rows, [k - 1, k], axis=1)
        mid = (part[:, k - 1] + part[:, k]) / 2
    return float(mid[0]), float(mid[1])


def object_mask(target: np.ndarray, lm: np.ndarray, settings: OcclusionSettings) -> np.ndarray | None:
    """Regions of the face whose chroma no face has, reaching the outline (float32 0/1), or None."""
    shape = target.shape[:2]
    hull = masks.hull_mask(lm, shape, 1.0) > 0.5
    n = int(np.count_nonzero(hull))
    if n < 64:
        return None
    step = max(1, int(np.sqrt(n / 2500.0)))  # chroma is smooth: ~2500 samples are plenty
    t = np.ascontiguousarray(target[::step, ::step, :3], np.float32)
    hs = hull[::step, ::step]
    lab = cv2.cvtColor(t, cv2.COLOR_RGB2Lab)
    a, b = lab[..., 1], lab[..., 2]
    pab = np.stack([a[hs], b[hs]])
    ma, mb = _medians(pab)
    # robust spread (MAD as a standard deviation); +1 Lab unit for flat faces
    sa, sb = _medians(np.abs(pab - np.array([[ma], [mb]], pab.dtype)))
    sa, sb = sa * 1.4826 + 1.0, sb * 1.4826 + 1.0
    da, db = a - ma, b - mb
    k = settings.object_sigma
    far = (((np.abs(da) > k * sa) | (np.abs(db) > k * sb)) & (da * da + db * db > settings.object_delta ** 2)) & hs
    if not far.any():
        return None
    far8 = cv2.morphologyEx(far.astype(np.uint8), cv2.MORPH_OPEN, np.ones((3, 3), np.uint8))
    edge = hs & ~(cv2.erode(hs.astype(np.uint8), np.ones((5, 5), np.uint8)) > 0)
    if not (edge & (far8 > 0)).any():  # nothing reaches the outline (most frames): no region to label
        return None
    count, labels, st, _ = cv2.connectedComponentsWithStats(far8, connectivity=8)
    min_area = settings.object_area * np.count_nonzero(hs)
    keep = np.zeros(far8.shape, np.uint8)
    touching = np.unique(labels[edge & (far8 > 0)])
    for k in touching:
        if k > 0 and st[k, cv2.CC_STAT_AREA] >= min_area:
            keep[labels == k] = 1
    if not keep.any():
        return None
    out = keep.astype(np.float32)
    if step > 1:
        out = cv2.resize(out, (shape[1], shape[0]), interpolation=cv2.INTER_LINEAR)
    return out
