"""Hands in front of faces: MediaPipe's palm detector and hand landmarker, run by LiteRT on the CPU.

Both ``.tflite`` files come from the model registry (``palm_detection``, ``hand_landmark``: members of
the ``mediapipe==0.10.21`` wheel, sha256-verified); the mediapipe package itself is never imported.
Pre- and post-processing follow the published MediaPipe hand graphs: SSD anchors (strides 8/16/16/16,
two per location) and weighted NMS for the palm, then a rotated square around the palm (2.6x, shifted
half a palm towards the fingers, oriented wrist -> middle finger) for the 21-keypoint landmarker.

Cost is kept to where a hand can cover a face: the detector only looks at a square around each face
(:meth:`HandFinder.near`), and a hand found on one frame is followed on the next by the landmarker
alone, from the region its keypoints predict (the detector runs again only when that fails).

Order independence (:meth:`HandFinder.hands_at`): the hands of a track at frame ``n`` are those of a
track started afresh ``warmup`` frames before the last multiple of ``segment`` at or before ``n`` and
followed to ``n``: a function of those frames of the clip alone, whichever frames were asked for first.
Per-frame steps are cached under the track's state, so two starts whose states agree on a frame (the
usual case a few frames after a start: both empty, or both equal to the detector's fresh answer) share
every later step, and an in-order render costs about what plain following costs.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass

import cv2
import numpy as np

from ..errors import SettingsError
from .geometry import angle_of, apply, invert, roi_matrix, warp
from .mediapipe import _Model, ssd_anchors, weighted_nms
from .types import Roi

WRIST, MIDDLE_MCP = 0, 9
#: the 21 keypoints as bones (pairs), used to paint the hand's silhouette
BONES = ((0, 1), (1, 2), (2, 3), (3, 4), (0, 5), (5, 6), (6, 7), (7, 8), (5, 9), (9, 10), (10, 11), (11, 12),
         (9, 13), (13, 14), (14, 15), (15, 16), (13, 17), (0, 17), (17, 18), (18, 19), (19, 20))
PALM = (0, 1, 5, 9, 13, 17)


@dataclass(frozen=True, eq=False)
class Hand:
    """One hand on a frame: 21 keypoints in frame pixels (pixel centres at +0.5), presence 0..1."""

    keypoints: np.ndarray  # (21, 2) float32
    presence: float

    @property
    def box(self) -> tuple[float, float, float, float]:
        lo, hi = self.keypoints.min(axis=0), self.keypoints.max(axis=0)
        return float(lo[0]), float(lo[1]), float(hi[0]), float(hi[1])

    @property
    def palm_width(self) -> float:
        k = self.keypoints
        return float(max(np.linalg.norm(k[5] - k[17]), np.linalg.norm(k[0] - k[9]) * 0.6, 2.0))


class PalmDetector:
    """Palm boxes in a square region of the frame (192x192 input, 2016 anchors)."""

    def __init__(self, progress=None, min_score: float = 0.5, threads: int = 1):
        self.model = _Model("palm_detection", progress, threads)
        self.anchors = ssd_anchors(self.model.size, [8, 16, 16, 16], [2, 2, 2, 2])
        self.min_score = min_score

    def detect(self, rgb: np.ndarray, region: Roi) -> list[tuple[np.ndarray, float, np.ndarray]]:
        """(box x0 y0 x1 y1, score, 7 keypoints) per palm, frame pixels."""
        s = self.model.size
        m = roi_matrix(region, s)
        x = warp(rgb, m, (s, s)).astype(np.float32) * np.float32(1.0 / 255.0)
        reg, cls = self.model(x)
        if reg.shape[-1] != 18:
            reg, cls = cls, reg
        reg, logit = reg[0], cls[0, :, 0]
        keep = logit >= np.log(self.min_score / (1.0 - self.min_score))
        if not keep.any():
            return []
        reg, score = reg[keep], 1.0 / (1.0 + np.exp(-np.clip(logit[keep].astype(np.float64), -100, 100)))
        anc = self.anchors[keep] * s
        cx, cy, bw, bh = reg[:, 0] + anc[:, 0], reg[:, 1] + anc[:, 1], reg[:, 2], reg[:, 3]
        boxes = np.stack([cx - bw / 2, cy - bh / 2, cx + bw / 2, cy + bh / 2], 1)
        kps = reg[:, 4:18].reshape(-1, 7, 2) + anc[:, None, :]
        back = invert(m)
        out = []
        for box, sc, kp in weighted_nms(boxes.astype(np.float64), score, kps.astype(np.float64)):
            corners = apply(back, box.reshape(2, 2))
            out.append((np.concatenate([corners.min(0), corners.max(0)]), sc, apply(back, kp)))
        return out


def hand_roi_from_palm(box: np.ndarray, kps: np.ndarray) -> Roi:
    """The landmarker's region from a palm: rotated so wrist -> middle finger points up, 2.6x, shifted."""
    angle = angle_of(kps[0], kps[2]) + np.pi / 2  # the wrist-to-finger direction becomes "up"
    w, h = float(box[2] - box[0]), float(box[3] - box[1])
    cx, cy = (box[0] + box[2]) / 2, (box[1] + box[3]) / 2
    side = max(w, h)
    c, s = np.cos(angle), np.sin(angle)
    # shift half a box height along the rotated "up" (-y) axis
    cx, cy = cx + 0.5 * h * s, cy - 0.5 * h * c
    return Roi(float(cx), float(cy), side * 2.6, float(angle))


def hand_roi_from_keypoints(kp: np.ndarray) -> Roi:
    """Next frame's region from this frame's 21 keypoints: their extent in the hand's frame, 2.0x, square."""
    angle = angle_of(kp[WRIST], kp[MIDDLE_MCP]) + np.pi / 2
    c, s = np.cos(angle), np.sin(angle)
    local = kp.astype(np.float64) @ np.array([[c, -s], [s, c]])
    lo, hi = local.min(0), local.max(0)
    mid = (lo + hi) / 2
    centre = mid @ np.array([[c, s], [-s, c]])
    return Roi(float(centre[0]), float(centre[1]), float(max(hi - lo)) * 2.0, float(angle))


class HandLandmarker:
    """21 hand keypoints + presence in a rotated square region (224x224 input)."""

    def __init__(self, progress=None, threads: int = 1):
        self.model = _Model("hand_landmark", progress, threads)

    def keypoints(self, rgb: np.ndarray, roi: Roi) -> Hand:
        s = self.model.size
        m = roi_matrix(roi, s)
        x = warp(rgb, m, (s, s)).astype(np.float32) * np.float32(1.0 / 255.0)
        outs = self.model(x)
        pts = next(o for o in outs if o.size == 63 and np.abs(o).max() > 2.0).reshape(21, 3)
        flag = next(o for o in outs if o.size == 1)
        presence = float(flag.ravel()[0])
        if not 0.0 <= presence <= 1.0:
            presence = float(1.0 / (1.0 + np.exp(-np.clip(presence, -100, 100))))
        return Hand(apply(invert(m), pts[:, :2]).astype(np.float32), presence)


@dataclass(frozen=True)
class HandSettings:
    """When the hand models run and how a hand's silhouette is drawn."""

    # The square searched around a face is wide (3 face sizes), so a hand is found while it approaches,
    # before it can cover the face; with nothing near, the detector then needs to run only every few
    # frames, and every frame again while a hand is about (or was, lately).
    region: float = 3.0          # side of the searched square around a face, in face sizes
    min_presence: float = 0.5    # landmarker presence under which a hand is dropped
    detect_every: int = 6        # palm detector cadence (a hand followed, or none near the face)
    recent: int = 12             # frames after a hand was near in which a lost hand is looked for every frame
    near_every: int = 1          # detector cadence while hands are about (a second hand, a drifting one)
    bone_width: float = 0.28     # finger thickness as a share of the palm width
    # a hand whose keypoints lie mostly inside the face's box (over `inside` of them) counts once it is on
    # `confirm` frames in a row (see HandFinder.hands_at): the walking clip's 40 px faces read as a hand
    # for a frame or two (0.90-0.95 of the keypoints inside); the ASL signer's hands at the chin, often
    # seen on one frame alone, have at most 0.29 inside and count at once
    confirm: int = 3
    inside: float = 0.5
    # the order-independent track (hands_at): restarted every `segment` frames, each start `warmup` frames
    # early, so a hand seen (unclasped) in the warm-up is followed into the segment. On the ASL clip
    # (in-order render) 96/24 runs the models as often as plain following did; 48/24 ran them 7% more
    # often, and no warm-up kept only 94.5% of hand pixels (the detector misses clasped hands)
    segment: int = 96
    warmup: int = 24

    def __post_init__(self) -> None:
        if min(self.detect_every, self.near_every, self.segment, self.confirm) < 1 or min(self.recent, self.warmup) < 0:
            raise SettingsError("hand cadences and the track's segment must be at least 1 frame")
        if not 0.0 <= self.inside <= 1.0:
            raise SettingsError("the hand's share inside the face box is a share: 0..1")


#: (frame, face box) of one track at one frame, full-frame pixels; None where the track has no face
FrameAt = Callable[[int], "tuple[np.ndarray, tuple[float, float, float, float]] | None"]
#: a track's state before a frame: (last frame a hand was seen or None, hands followed from the last frame)
_State = tuple["int | None", tuple[Hand, ...]]
_FRESH: _State = (None, ())


class HandFinder:
    """Hands that can overlap the faces of a frame (thread-safe; one per clip for :meth:`hands_at`).

    :meth:`near` looks at one frame alone. :meth:`hands_at` follows a track's hands through the clip, the
    answer at a frame depending only on a bounded window of the clip's frames before it (see the module
    docstring); its cache is per clip and only saves work.
    """

    def __init__(self, settings: HandSettings = HandSettings(), progress=None,
                 models: "HandFinder | None" = None, cache: int = 4096):
        self.settings = settings
        # ``models``: another finder whose loaded models this one shares (one per clip, models once)
        self.palms = models.palms if models is not None else PalmDetector(progress)
        self.marker = models.marker if models is not None else HandLandmarker(progress)
        # (track, frame, state signature) -> (every hand followed at that frame, state before the next)
        self._steps: OrderedDict[tuple, tuple[list[Hand], _State]] = OrderedDict()
        # (track, chain start) -> (last frame followed, state after it, its answer)
        self._ends: OrderedDict[tuple, tuple[int, _State, tuple]] = OrderedDict()
        self._cache = cache
        self._lock = threading.Lock()

    def model_records(self) -> list[dict]:
        return [self.palms.model.record, self.marker.model.record]

    def detect(self, rgb: np.ndarray, face_box: tuple[float, float, float, float]) -> list[Hand]:
        """Every hand in the square searched around ``face_box`` on this frame alone (palm detector, then
        the landmarker on each palm)."""
        s = self.settings
        x0, y0, x1, y1 = face_box
        side = max(x1 - x0, y1 - y0) * s.region
        out = []
        for box, _score, kps in self.palms.detect(rgb, Roi((x0 + x1) / 2, (y0 + y1) / 2, float(side))):
            nh = self.marker.keypoints(rgb, hand_roi_from_palm(box, kps))
            if nh.presence >= s.min_presence:
                out.append(nh)
        return out

    def near(self, rgb: np.ndarray, face_box: tuple[float, float, float, float]) -> list[Hand]:
        """Hands whose silhouette may reach into ``face_box`` (frame pixels), from this frame alone."""
        return [h for h in self.detect(rgb, face_box) if _overlaps(h, face_box)]

    def start_of(self, index: int) -> int:
        """The frame the track that answers for ``index`` starts at (afresh)."""
        s = self.settings
        return max(0, (index // s.segment) * s.segment - s.warmup)

    def hands_at(self, index: int, track, frame_at: FrameAt) -> list[Hand]:
        """Hands whose silhouette may reach into the face of ``track`` at frame ``index``.

        ``frame_at(j)`` gives the clip's frame j and the track's face box there (None: no such face);
        it is called only for frames whose step is not cached. The answer is the track started afresh at
        :meth:`start_of` and followed to ``index``, so it does not depend on which frames came before.

        A hand lying mostly inside the face's box counts once the track has it on ``confirm`` frames in a
        row, those before ``index`` and those after it (the landmarker following it on, as the track
        will): on a small face the palm detector reads the face itself as a palm, and now and then the
        landmarker agrees for a frame or two (presence 0.59-0.8 on a 40 px face of the walking clip,
        0.01-0.2 on the frames around); kept, that "hand" is the whole face, so the original face showed
        through on those frames. A hand over the face stays there longer than that."""
        with self._lock:
            start = self.start_of(index)
            state: _State = _FRESH
            past: tuple = ()  # the states after the frames just before the last one followed, newest last
            got = None
            # the chain from ``start`` is the same whoever follows it: an in-order render resumes where the
            # last call on this chain stopped instead of walking it again from its start (up to 120 steps)
            last = self._ends.get((track, start))
            if last is not None and last[0] <= index:
                start, state, got, past = last[0] + 1, last[1], last[2], last[3]
            keep = max(0, self.settings.confirm - 1)
            for j in range(start, index + 1):
                past = (past + (state,))[-keep:] if keep else ()
                (hands, state), box = self._advance(track, j, state, frame_at)
                got = (hands, box)
            end_key = (track, self.start_of(index))
            self._ends[end_key] = (index, state, got, past)
            self._ends.move_to_end(end_key)
            while len(self._ends) > 64:
                self._ends.popitem(last=False)
            hands, box = got
            if box is None:
                return []
            out = [h for h in hands if _overlaps(h, box)]
            return [h for h in out if _inside(h, box) <= self.settings.inside
                    or self._confirmed(h, index, track, state, past, frame_at)]

    def _confirmed(self, hand: Hand, index: int, track, state: _State, past: tuple, frame_at: FrameAt) -> bool:
        """Whether the track has ``hand`` on ``confirm`` frames in a row around ``index`` (lock held). A
        face that ends (or a clip) before that leaves the hand counted: what is in front stays so."""
        need = self.settings.confirm
        run, cur = 1, hand
        for before in reversed(past):  # the frames before, newest first
            if run >= need:
                return True
            cur = next((p for p in before[1] if _same_palm(cur, p)), None)
            if cur is None:
                break
            run += 1
        cur, j = hand, index
        while run < need:
            j += 1
            (ahead, state), box = self._advance(track, j, state, frame_at)
            if box is None:
                return True
            cur = next((a for a in ahead if _same_palm(cur, a)), None)
            if cur is None:
                return False
            run += 1
        return True

    def _advance(self, track, j: int, state: _State, frame_at: FrameAt):
        """``((hands at j, state after j), the face box at j or None)`` from the track's state before j
        (cached per state: the step is the same whoever asks for it). Call with the lock held."""
        key = (track, j, _signature(state, j, self.settings.recent))
        hit = self._steps.get(key)
        if hit is not None:
            self._steps.move_to_end(key)
            return hit
        if key[2] == (None, ()) and j % self.settings.detect_every:
            hit = ([], _FRESH), None  # nothing followed, nothing due: the frame is not needed
        elif (at := frame_at(j)) is None:  # no face on this frame: the track starts afresh after it
            hit = ([], _FRESH), None
        else:
            hit = self._step(j, state, *at), at[1]
        self._steps[key] = hit
        while len(self._steps) > self._cache:
            self._steps.popitem(last=False)
        return hit

    def _step(self, j: int, state: _State, rgb: np.ndarray, face_box) -> tuple[list[Hand], _State]:
        """One frame of following: the landmarker from the last frame's hands, the detector on its cadence
        (absolute frame numbers, so a track's future depends on its state alone)."""
        s = self.settings
        last_seen, prev = state
        hands = [nh for nh in (self.marker.keypoints(rgb, hand_roi_from_keypoints(h.keypoints)) for h in prev)
                 if nh.presence >= s.min_presence]
        about = last_seen is not None and j - last_seen <= s.recent
        if j % (s.near_every if about else s.detect_every) == 0 or (not hands and about):
            fresh = self.detect(rgb, face_box)
            # a fresh hand replaces the followed one on the same palm (following can drift, or swallow two
            # hands held together into one big one); followed hands the detector missed stay
            hands = fresh + [h for h in hands if not any(_same_palm(h, f) for f in fresh)]
        # every hand in the searched square is followed (one approaching the face is found before it
        # covers it); the caller gets those that can reach the face
        if hands:
            last_seen = j
        return hands, (last_seen, tuple(hands))

    def mask(self, hands: list[Hand], shape: tuple[int, int], offset: tuple[float, float] = (0.0, 0.0)) -> np.ndarray:
        """The hands' silhouettes (palm polygon + thick bones), float32 0..1 over ``shape``, in a crop
        whose top-left is at frame pixel ``offset`` (OpenCV pixel centres)."""
        return hand_mask(hands, shape, offset, self.settings.bone_width)


def hand_mask(hands: list[Hand], shape: tuple[int, int], offset: tuple[float, float] = (0.0, 0.0),
              bone_width: float = 0.28) -> np.ndarray:
    """Silhouettes of ``hands`` over a crop of ``shape`` at frame offset ``offset``: 1 on the hand."""
    m = np.zeros(shape, np.uint8)
    for h in hands:
        k = (h.keypoints.astype(np.float64) - 0.5 - np.asarray(offset, np.float64)) * 16.0
        k = np.round(k).astype(np.int32)
        cv2.fillPoly(m, [cv2.convexHull(k[list(PALM)])], 255, lineType=cv2.LINE_AA, shift=4)
        t = max(2, int(round(h.palm_width * bone_width)))
        for a, b in BONES:
            cv2.line(m, tuple(k[a]), tuple(k[b]), 255, thickness=t, lineType=cv2.LINE_AA, shift=4)
        for j in (4, 8, 12, 16, 20):  # finger tips end round, past the last keypoint
            cv2.circle(m, tuple(k[j]), t * 8, 255, -1, lineType=cv2.LINE_AA, shift=4)
    return m.astype(np.float32) * np.float32(1.0 / 255.0)


def _signature(state: _State, j: int, recent: int) -> tuple:
    """What of a track's state before frame j decides its future: the hands (exactly) and how recently one
    was seen (beyond ``recent`` frames, not at all)."""
    last_seen, hands = state
    since = None if last_seen is None or j - last_seen > recent else j - last_seen
    return since, tuple((h.keypoints.tobytes(), h.presence) for h in hands)


def _palm_centre(hand: Hand) -> np.ndarray:
    return hand.keypoints[list(PALM)].mean(axis=0)


def _same_palm(a: Hand, b: Hand) -> bool:
    """Two answers for one hand: palm centres closer than the smaller palm's width."""
    return float(np.linalg.norm(_palm_centre(a) - _palm_centre(b))) < min(a.palm_width, b.palm_width)


def _inside(hand: Hand, face_box) -> float:
    """The share of the hand's keypoints inside the face's box."""
    x0, y0, x1, y1 = face_box
    k = hand.keypoints
    return float(np.mean((k[:, 0] >= x0) & (k[:, 0] <= x1) & (k[:, 1] >= y0) & (k[:, 1] <= y1)))


def _overlaps(hand: Hand, face_box) -> bool:
    x0, y0, x1, y1 = hand.box
    pad = hand.palm_width * 0.5
    fx0, fy0, fx1, fy1 = face_box
    return x0 - pad < fx1 and x1 + pad > fx0 and y0 - pad < fy1 and y1 + pad > fy0
