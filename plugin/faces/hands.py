"""Hands in front of faces: MediaPipe's palm detector and hand landmarker, run by LiteRT on the CPU.

Both ``.tflite`` files come from the model registry (``palm_detection``, ``hand_landmark``: members of
the ``mediapipe==0.10.21`` wheel, sha256-verified); the mediapipe package itself is never imported.
Pre- and post-processing follow the published MediaPipe hand graphs: SSD anchors (strides 8/16/16/16,
two per location) and weighted NMS for the palm, then a rotated square around the palm (2.6x, shifted
half a palm towards the fingers, oriented wrist -> middle finger) for the 21-keypoint landmarker.

Cost is kept to where a hand can cover a face: the detector only looks at a square around each face
(:meth:`HandFinder.near`), and a hand found on one frame is followed on the next by the landmarker
alone, from the region its keypoints predict (the detector runs again only when that fails).
"""

from __future__ import annotations

import threading
from dataclasses import dataclass

import cv2
import numpy as np

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


class HandFinder:
    """Hands that can overlap the faces of a frame, followed from frame to frame (thread-safe).

    State is per face track: the hands found near that face on the last frame it was seen, and when the
    detector last ran. A frame that does not follow the previous one starts afresh.
    """

    def __init__(self, settings: HandSettings = HandSettings(), progress=None,
                 models: "HandFinder | None" = None):
        self.settings = settings
        # ``models``: another finder whose loaded models this one shares (one per clip, models once)
        self.palms = models.palms if models is not None else PalmDetector(progress)
        self.marker = models.marker if models is not None else HandLandmarker(progress)
        # track -> (index, last detector run, last frame a hand was seen, hands)
        self._state: dict[object, tuple[int, int, int, list[Hand]]] = {}
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

    def near(self, rgb: np.ndarray, face_box: tuple[float, float, float, float], track=None,
             index: int | None = None) -> list[Hand]:
        """Hands whose silhouette may reach into ``face_box`` (frame pixels) on this frame."""
        s = self.settings
        with self._lock:
            prev = self._state.get(track) if track is not None else None
        follows = prev is not None and index is not None and index - prev[0] == 1
        hands: list[Hand] = []
        if follows:
            for h in prev[3]:
                nh = self.marker.keypoints(rgb, hand_roi_from_keypoints(h.keypoints))
                if nh.presence >= s.min_presence:
                    hands.append(nh)
        never = -(10 ** 9)
        last_detect = prev[1] if follows else never
        last_seen = prev[2] if follows else never
        about = index is not None and index - last_seen <= s.recent
        due = (index is None or not follows or index - last_detect >= (s.near_every if about else s.detect_every)
               or (not hands and about))
        if due:
            fresh = self.detect(rgb, face_box)
            # a fresh hand replaces the followed one on the same palm (following can drift, or swallow two
            # hands held together into one big one); followed hands the detector missed stay
            hands = fresh + [h for h in hands if not any(_same_palm(h, f) for f in fresh)]
            last_detect = index if index is not None else 0
        # every hand in the searched square is followed (one approaching the face is found before it
        # covers it); the caller gets those that can reach the face
        if hands and index is not None:
            last_seen = index
        if track is not None and index is not None:
            with self._lock:
                self._state[track] = (index, last_detect, last_seen, hands)
        return [h for h in hands if _overlaps(h, face_box)]

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


def _palm_centre(hand: Hand) -> np.ndarray:
    return hand.keypoints[list(PALM)].mean(axis=0)


def _same_palm(a: Hand, b: Hand) -> bool:
    """Two answers for one hand: palm centres closer than the smaller palm's width."""
    return float(np.linalg.norm(_palm_centre(a) - _palm_centre(b))) < min(a.palm_width, b.palm_width)


def _overlaps(hand: Hand, face_box) -> bool:
    x0, y0, x1, y1 = hand.box
    pad = hand.palm_width * 0.5
    fx0, fy0, fx1, fy1 = face_box
    return x0 - pad < fx1 and x1 + pad > fx0 and y0 - pad < fy1 and y1 + pad > fy0
