"""FaceAnalyzer: detection + 468/478 landmarks + tracking + smoothing + identity + selection.

Design (why random access equals the sequential pass):

* An *index* pass, streaming over every frame, flags scene cuts (thumbnail difference) and picks
  keyframes: frame 0, every cut, and every ``detect_every`` frames after the last keyframe. Only
  keyframes run the detector; their faces get track ids by association with the previous keyframe (never
  across a cut) and, when selection needs it, identity embeddings. Selection is decided per track, so a
  face never flips between replaced and not. The selections that compare tracks (``largest``,
  ``reference``, ``except-reference``) need the whole clip indexed first; ``all`` and ``track:N`` decide
  a track when it starts, so their index is *lazy*: it grows only as far as the frame asked for (plus
  the look-ahead), and the frames it reads are tracked at once, so a renderer going forward reads and
  analyses each frame once.
* Between keyframes each track is followed MediaPipe's way: the landmarker runs on the region predicted
  from the previous frame's landmarks; when its confidence drops the detector runs on that frame to
  re-acquire the face. A raw result at frame i therefore depends only on frames [key(i), i].
* The output at frame n fills gaps of up to ``max_gap`` frames by interpolation and runs a One-Euro
  filter started fresh at n - ``window``: it depends only on raw results in [n - window - max_gap - 1,
  n + max_gap]. Geometry thus depends on a bounded window; ids and decisions come from the index.

The sequential pass (:meth:`FaceAnalyzer.analyze_clip`) and random access (:meth:`FaceAnalyzer.faces_at`)
run exactly the same functions in the same order per segment, so their answers are bit-identical.
Model sessions are created once and reused (not thread-safe: one analyzer per worker).
"""

from __future__ import annotations

import os
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Iterable

import cv2
import numpy as np

from facecomp.errors import NoFaceError, SettingsError

from .geometry import iou, to_rgb8
from .smoothing import one_euro
from .types import (LEFT_EYE_OUTER, RIGHT_EYE_OUTER, Detection, Face, FrameSource, LandmarkResult, Roi,
                    TrackSet)

SELECTION_MODES = ("all", "largest", "track", "reference", "except-reference")


@dataclass(frozen=True)
class FaceSettings:
    """User-facing analysis settings (JSON-able through :meth:`as_dict`)."""

    detector: str = "blazeface"  # "blazeface" | "mtcnn" (ONNX Runtime)
    detect_every: int = 5  # keyframe spacing (frames); cuts and confidence drops also trigger detection
    min_detection_score: float = 0.5
    min_landmark_confidence: float = 0.5  # below this the detector re-acquires the face
    max_faces: int = 20
    small_faces: bool = False  # also detect on 256 px tiles: faces down to ~24 px in HD frames, slower keyframes
    rotations: bool = True  # retry detection on frames rotated by +-90 / +-45 deg when nothing is found
    iris: bool = True  # 478 points (iris) instead of 468
    smoothing: bool = True
    min_cutoff: float = 0.5  # One-Euro: Hz at rest (lower = steadier)
    beta: float = 3.0  # One-Euro: speed coefficient, per face-size/s (higher = less lag in motion)
    d_cutoff: float = 1.0
    fps: float = 25.0  # frame rate the filter assumes (set from the clip)
    window: int = 12  # frames of look-back for the smoother
    max_gap: int = 4  # gaps up to this many frames are interpolated (look-ahead)
    scene_cut: float = 0.12  # mean abs thumbnail difference (0..1) that counts as a cut
    selection: str = "all"  # "all" | "largest" | "track:N[,M]" | "reference" | "except-reference"
    references: tuple[str, ...] = ()  # photo paths for the reference modes
    threshold: float = 0.6  # dlib embedding distance under which a track is the reference person
    threads: int = 1

    def __post_init__(self):
        if self.detect_every < 1:
            raise SettingsError("detect_every must be >= 1")
        if not (0 <= self.min_detection_score <= 1 and 0 <= self.min_landmark_confidence <= 1):
            raise SettingsError("scores and confidences are in 0..1")
        if not 1 <= self.max_faces <= 100:
            raise SettingsError("max_faces must be 1..100")
        if self.window < 0 or self.max_gap < 0:
            raise SettingsError("window and max_gap must be >= 0")
        if self.min_cutoff <= 0 or self.beta < 0 or self.fps <= 0:
            raise SettingsError("min_cutoff and fps must be > 0 and beta >= 0")
        mode = self.selection.split(":", 1)[0]
        if mode not in SELECTION_MODES:
            raise SettingsError(f"unknown selection {self.selection!r}", hint=f"use one of {', '.join(SELECTION_MODES)}")
        if mode == "track":
            try:
                self.selected_ids()
            except ValueError:
                raise SettingsError(f"selection {self.selection!r}: expected track:N or track:N,M") from None
        if mode in ("reference", "except-reference"):
            if not self.references:
                raise SettingsError(f"selection {mode!r} needs at least one reference photo")
            for p in self.references:
                if not os.path.isfile(p):
                    raise SettingsError("reference photo not found", path=p)
        if self.detector not in ("blazeface", "mtcnn"):
            raise SettingsError(f"unknown detector {self.detector!r}", hint="blazeface or mtcnn")

    @property
    def mode(self) -> str:
        return self.selection.split(":", 1)[0]

    def selected_ids(self) -> set[int]:
        return {int(v) for v in self.selection.split(":", 1)[1].split(",")}

    def as_dict(self) -> dict:
        from dataclasses import asdict

        return asdict(self)


# ------------------------------------------------------------------------------------------------ index

@dataclass
class _Key:
    index: int
    faces: list[tuple[int, LandmarkResult, Detection]]  # (track id, landmarks, detection)


@dataclass
class _Index:
    """Streaming keyframe index over a clip (frames must be fed in order from the clip's first frame)."""

    width: int = 0
    height: int = 0
    length: int = 0
    keys: list[int] = field(default_factory=list)
    key_of: list[int] = field(default_factory=list)  # frame -> its keyframe
    cuts: list[int] = field(default_factory=list)
    key_data: dict[int, _Key] = field(default_factory=dict)
    tracks: dict[int, dict] = field(default_factory=dict)
    next_id: int = 1
    prev_sig: np.ndarray | None = None
    decided: bool = False
    lazy: bool = False  # grown on demand; each track's selection is decided when it starts


def _signature(rgb: np.ndarray) -> np.ndarray:
    """32x18 thumbnail for cut detection. Wide frames are point-sampled to ~256 px first: area-averaging
    a whole HD frame costs 1-2.5 ms, and a cut changes the thumbnail either way."""
    h, w = rgb.shape[:2]
    step = w // 256
    if step > 1:
        rgb = cv2.resize(rgb, (max(32, w // step), max(18, h // step)), interpolation=cv2.INTER_NEAREST)
    small = cv2.resize(rgb, (32, 18), interpolation=cv2.INTER_AREA).astype(np.float32) / 255.0
    return small


def _landmark_bbox(lm: np.ndarray) -> tuple[float, float, float, float]:
    pts = lm[:468]
    x1, y1 = pts.min(0)
    x2, y2 = pts.max(0)
    return float(x1), float(y1), float(x2), float(y2)


class FaceAnalyzer:
    """Long-lived (holds the model sessions); a server keeps one per settings."""

    def __init__(self, settings: FaceSettings = FaceSettings(), progress=None):
        from .mediapipe import FaceMesh

        self.settings = settings
        self.progress = progress
        self.detector = make_detector(settings, progress)
        self.landmarker = FaceMesh(progress, iris=settings.iris, threads=settings.threads)
        self.embedder = None
        self._ref_embeddings: list[np.ndarray] | None = None
        if settings.mode in ("reference", "except-reference"):
            from .identity import DlibEmbedder

            self.embedder = DlibEmbedder(progress)
        self._indexes: OrderedDict[int, tuple[object, _Index]] = OrderedDict()
        self._raw_cache: OrderedDict[tuple[int, int], dict[int, dict[int, LandmarkResult]]] = OrderedDict()

    # -------------------------------------------------------------------------------- public API
    def for_clip(self) -> "FaceAnalyzer":
        """An analyzer for one clip: the same loaded models (their calls are locked), its own caches.

        A clip session holds one, so clips never share an index, tracks or cached landmarks."""
        import copy

        if self.embedder is not None:
            self.reference_embeddings()  # computed once, shared read-only
        clone = copy.copy(self)
        clone._indexes = OrderedDict()
        clone._raw_cache = OrderedDict()
        return clone

    def tracks_seen(self) -> set[int]:
        """Track ids found so far on the clips this analyzer indexed (one clip for a session's analyzer)."""
        return {tid for _, idx in list(self._indexes.values()) for tid in idx.tracks}

    def model_records(self) -> list[dict]:
        recs = self.detector.model_records() + self.landmarker.model_records()
        if self.embedder is not None:
            recs += self.embedder.model_records()
        return recs

    def analyze_clip(self, frames: Iterable[tuple[int, np.ndarray]]) -> TrackSet:
        """Sequential pass over (index, frame) pairs in order; returns every frame's faces and the tracks."""
        idx = _Index()
        raw: dict[int, dict[int, LandmarkResult]] = {}
        frames = iter(frames)
        first = None
        for i, frame in frames:
            rgb = to_rgb8(frame)
            if first is None:
                first = i
            self._feed(idx, i - first, rgb, raw)
            if self.progress is not None:
                self.progress.advance(1)
        if first is None:
            from facecomp.errors import EmptyMediaError

            raise EmptyMediaError("no frames to analyse")
        self._decide(idx)
        ts = TrackSet(idx.width, idx.height, models=self.model_records(), tracks=idx.tracks)
        for n in range(idx.length):
            ts.frames[n + first] = self._output(idx, n, lambda a, b: raw)
        return ts

    def faces_at(self, index: int, source: FrameSource) -> list[Face]:
        """Faces at one frame by random access; equal to :meth:`analyze_clip` over the same source.

        With a whole-clip selection (largest, reference) the first call on a source builds its keyframe
        index (reads every frame once, detects on keyframes only); otherwise the index grows lazily to
        ``index + max_gap``, tracking the frames it reads. Later calls cost about one landmark pass per
        face when going forward."""
        n = len(source)
        if not 0 <= index < n:
            raise IndexError(f"frame {index} out of range 0..{n - 1}")
        s = self.settings
        lo, hi = max(0, index - s.window - s.max_gap - 1), min(n - 1, index + s.max_gap)
        idx = self._index_for(source, hi)
        return self._output(idx, index, lambda a, b: self._raw_range(idx, source, lo, hi))

    @property
    def lookahead(self) -> int:
        """How many frames after ``index`` :meth:`faces_at` reads (a renderer decodes that far ahead)."""
        return self.settings.max_gap

    # ------------------------------------------------------------------------------- internals
    def _index_for(self, source: FrameSource, upto: int) -> _Index:
        """The source's keyframe index, covering at least frames 0..upto."""
        key = id(source)
        if key in self._indexes and self._indexes[key][0] is source:
            self._indexes.move_to_end(key)
            idx = self._indexes[key][1]
        else:
            idx = _Index(lazy=self.settings.mode in ("all", "track"))
            if not idx.lazy:  # the selection compares tracks over the whole clip
                for i in range(len(source)):
                    self._index_step(idx, i, to_rgb8(source.frame(i)))
                self._decide(idx)
            self._indexes[key] = (source, idx)
            while len(self._indexes) > 4:
                self._indexes.popitem(last=False)
        if idx.lazy and idx.length <= upto:
            self._extend(idx, source, upto)
        return idx

    def _extend(self, idx: _Index, source: FrameSource, upto: int) -> None:
        """Grow a lazy index to frame ``upto``. Frames in segments that the output at ``upto - max_gap``
        can reach are tracked with the same pixels (one read per frame); earlier frames only get the
        index step, as in the whole-clip pass, and are tracked by :meth:`_raw_range` if ever needed."""
        s = self.settings
        sid = id(source)
        reach = max(0, upto - 2 * s.max_gap - s.window - 1) - s.detect_every + 1
        for i in range(idx.length, upto + 1):
            rgb = to_rgb8(source.frame(i))
            self._index_step(idx, i, rgb)
            key = idx.key_of[i]
            if key < reach:
                continue
            prev = None
            if key != i:
                prev = self._raw_cache.get((sid, i - 1))
                if prev is None:  # its segment was left to _raw_range: so is this frame
                    continue
            self._cache_raw((sid, i), self._track_step(idx, i, rgb, prev))

    def _cache_raw(self, key: tuple[int, int], value: dict[int, LandmarkResult]) -> None:
        self._raw_cache[key] = value
        self._raw_cache.move_to_end(key)
        while len(self._raw_cache) > 256:
            self._raw_cache.popitem(last=False)

    def _feed(self, idx: _Index, i: int, rgb: np.ndarray, raw: dict) -> None:
        self._index_step(idx, i, rgb)
        raw[i] = self._track_step(idx, i, rgb, raw.get(i - 1))

    def _index_step(self, idx: _Index, i: int, rgb: np.ndarray) -> None:
        s = self.settings
        h, w = rgb.shape[:2]
        if i == 0:
            idx.width, idx.height = w, h
        elif (w, h) != (idx.width, idx.height):
            from facecomp.errors import InvalidMediaError

            raise InvalidMediaError(f"frame {i} is {w}x{h}, the clip started at {idx.width}x{idx.height}")
        sig = _signature(rgb)
        cut = i > 0 and idx.prev_sig is not None and float(np.abs(sig - idx.prev_sig).mean()) > s.scene_cut
        idx.prev_sig = sig
        idx.length = i + 1
        last_key = idx.keys[-1] if idx.keys else None
        if last_key is None or cut or i - last_key >= s.detect_every:
            if cut:
                idx.cuts.append(i)
            idx.keys.append(i)
            idx.key_of.append(i)
            self._keyframe(idx, i, rgb, new_scene=cut or last_key is None)
        else:
            idx.key_of.append(last_key)

    def _detect(self, rgb: np.ndarray) -> list[Detection]:
        dets = self.detector.detect(rgb)
        dets = [d for d in dets if d.score >= self.settings.min_detection_score]
        dets.sort(key=lambda d: -d.score)
        return dets[: self.settings.max_faces]

    def _landmark_detections(self, rgb: np.ndarray, dets: list[Detection]) -> list[tuple[LandmarkResult, Detection]]:
        """Landmarks for each detection; when the keypoint angle is wrong (strong roll) the ROI is retried
        at +-90 and 180 degrees, keeping the most confident answer."""
        from dataclasses import replace

        from .mediapipe import roi_from_detection

        found = []
        for det in dets[: self.settings.max_faces]:
            roi = roi_from_detection(det)
            res = self.landmarker.landmarks(rgb, roi)
            if res.confidence < self.settings.min_landmark_confidence and self.settings.rotations:
                for extra in (np.pi / 2, -np.pi / 2, np.pi):
                    alt = self.landmarker.landmarks(rgb, replace(roi, angle=roi.angle + extra))
                    if alt.confidence > res.confidence:
                        res = alt
                    if res.confidence >= self.settings.min_landmark_confidence:
                        break
            if res.confidence >= self.settings.min_landmark_confidence:
                found.append((res, det))
        return found

    def _keyframe(self, idx: _Index, i: int, rgb: np.ndarray, new_scene: bool) -> None:

        found = self._landmark_detections(rgb, self._detect(rgb))
        prev = None if new_scene or len(idx.keys) < 2 else idx.key_data.get(idx.keys[-2])
        # the previous keyframe's faces, looked for by the landmarker where they were (see below); when the
        # detector found nothing but one of them is still there, the rotated re-detections (4 more passes
        # of both detectors, ~30 ms at 720p) are skipped, as they are whenever an upright face is found
        relocated: dict[int, LandmarkResult] = {}
        if not found and prev is not None:
            from .mediapipe import roi_from_landmarks

            for tid, pres, _ in prev.faces:
                relocated[tid] = self.landmarker.landmarks(rgb, roi_from_landmarks(pres.landmarks))
        recovered = any(r.confidence >= self.settings.min_landmark_confidence for r in relocated.values())
        if not found and not recovered and self.settings.rotations:  # detect on rotated frames
            for angle in (np.pi / 2, -np.pi / 2, np.pi / 4, -np.pi / 4):
                try:
                    dets = self.detector.detect(rgb, angle=angle)
                except TypeError:
                    break
                found = self._landmark_detections(rgb, [d for d in dets if d.score >= self.settings.min_detection_score])
                if found:
                    break
        # one face per landmark box: two detections of the same face collapse
        unique: list[tuple[LandmarkResult, Detection]] = []
        for res, det in found:
            if all(iou(_landmark_bbox(res.landmarks), _landmark_bbox(u.landmarks)) < 0.5 for u, _ in unique):
                unique.append((res, det))
        assigned: list[tuple[int, LandmarkResult, Detection]] = []
        taken: set[int] = set()
        if prev is not None:
            pairs = []
            for a, (res, _) in enumerate(unique):
                box = _landmark_bbox(res.landmarks)
                for tid, pres, _ in prev.faces:
                    pbox = _landmark_bbox(pres.landmarks)
                    size = max(pbox[2] - pbox[0], pbox[3] - pbox[1], 1.0)
                    dist = np.hypot((box[0] + box[2] - pbox[0] - pbox[2]) / 2, (box[1] + box[3] - pbox[1] - pbox[3]) / 2)
                    score = iou(box, pbox) + max(0.0, 1.0 - dist / size)
                    if score > 0.5:
                        pairs.append((score, a, tid))
            pairs.sort(reverse=True)
            used_a: set[int] = set()
            for score, a, tid in pairs:
                if a in used_a or tid in taken:
                    continue
                used_a.add(a)
                taken.add(tid)
                assigned.append((tid, *unique[a]))
            rest = [u for a, u in enumerate(unique) if a not in used_a]
            # A face the detector missed on this keyframe (small, blurred, a detector score dip) keeps its
            # track when the landmarker still finds it from the previous keyframe's landmarks: one missed
            # detection must not drop the face for a whole segment. Uses only keyframes, so random access
            # still equals the sequential pass.
            from .mediapipe import roi_from_landmarks

            for tid, pres, pdet in prev.faces:
                if tid in taken:
                    continue
                res = relocated.get(tid) or self.landmarker.landmarks(rgb, roi_from_landmarks(pres.landmarks))
                if res.confidence < self.settings.min_landmark_confidence:
                    continue
                box = _landmark_bbox(res.landmarks)
                if any(iou(box, _landmark_bbox(r.landmarks)) >= 0.5 for _, r, _ in assigned) or \
                        any(iou(box, _landmark_bbox(r.landmarks)) >= 0.5 for r, _ in rest):
                    continue
                taken.add(tid)
                assigned.append((tid, res, Detection(box, float(res.confidence), pdet.keypoints, "tracked")))
        else:
            rest = unique
        for res, det in rest:
            assigned.append((idx.next_id, res, det))
            idx.next_id += 1
        for tid, res, det in assigned:
            box = _landmark_bbox(res.landmarks)
            t = idx.tracks.setdefault(tid, {"first": i, "last": i, "keys": 0, "size": 0.0, "embeddings": []})
            if idx.lazy and "selected" not in t:  # all / track:N: decided when the track starts
                t["selected"] = self.settings.mode == "all" or tid in self.settings.selected_ids()
            t["last"] = i
            t["keys"] += 1
            t["size"] += max(box[2] - box[0], box[3] - box[1])
            if self.embedder is not None and res.confidence > 0.8 and box[2] - box[0] >= 40:
                t["embeddings"].append(self.embedder.embed(rgb, res.landmarks))
        idx.key_data[i] = _Key(i, assigned)

    def _track_step(self, idx: _Index, i: int, rgb: np.ndarray, prev: dict[int, LandmarkResult] | None
                    ) -> dict[int, LandmarkResult]:
        """Raw landmarks at frame i from the previous frame's raw landmarks (or the keyframe)."""
        from .mediapipe import roi_from_detection, roi_from_landmarks

        key = idx.key_of[i]
        if key == i:
            return {tid: res for tid, res, _ in idx.key_data[i].faces}
        out: dict[int, LandmarkResult] = {}
        lost: list[tuple[int, Roi, LandmarkResult, int]] = []
        prev = prev or {}
        # tracks alive in this segment are those of its keyframe. A lost track keeps a "ghost" entry under
        # its negative id (last landmarks, -frames lost) so the detector can re-acquire it for max_gap frames.
        for tid, kres, _ in idx.key_data[key].faces:
            last = prev.get(tid)
            if last is None:
                ghost = prev.get(-tid)
                if ghost is not None and -ghost.confidence < self.settings.max_gap:
                    lost.append((tid, roi_from_landmarks(ghost.landmarks), ghost, int(-ghost.confidence)))
                continue
            roi = roi_from_landmarks(last.landmarks)
            res = self.landmarker.landmarks(rgb, roi)
            if res.confidence >= self.settings.min_landmark_confidence:
                out[tid] = res
            else:
                lost.append((tid, roi, last, 0))
        if lost:
            dets = self._detect(rgb)
            for tid, roi, last, count in lost:
                box = (roi.cx - roi.size / 3, roi.cy - roi.size / 3, roi.cx + roi.size / 3, roi.cy + roi.size / 3)
                best = max(dets, key=lambda d: iou(d.bbox, box), default=None)
                if best is not None and iou(best.bbox, box) > 0.2:
                    res = self.landmarker.landmarks(rgb, roi_from_detection(best))
                    if res.confidence >= self.settings.min_landmark_confidence:
                        out[tid] = res
                        continue
                out[-tid] = LandmarkResult(last.landmarks, -float(count + 1))
        return out

    def _raw_range(self, idx: _Index, source: FrameSource, lo: int, hi: int) -> dict[int, dict[int, LandmarkResult]]:
        """Raw results for frames lo..hi, computing whole segment prefixes from their keyframes (cached)."""
        result: dict[int, dict[int, LandmarkResult]] = {}
        k = idx.key_of[lo]
        sid = id(source)
        prev = None
        for i in range(k, hi + 1):
            ck = (sid, i)
            if ck in self._raw_cache:
                self._raw_cache.move_to_end(ck)
                cur = self._raw_cache[ck]
            else:
                cur = self._track_step(idx, i, to_rgb8(source.frame(i)), prev)
                self._cache_raw(ck, cur)
            prev = cur
            if i >= lo:
                result[i] = cur
        return result

    def _decide(self, idx: _Index) -> None:
        """Per-track selection from the whole index (never per frame)."""
        s = self.settings
        for tid, t in idx.tracks.items():
            t["mean_size"] = t["size"] / max(t["keys"], 1)
        mode = s.mode
        if mode == "all":
            chosen = set(idx.tracks)
        elif mode == "track":
            chosen = s.selected_ids() & set(idx.tracks)
        elif mode == "largest":
            chosen = set()
            bounds = [0] + idx.cuts + [idx.length]
            for a, b in zip(bounds[:-1], bounds[1:]):  # the largest face of each scene
                scene = [tid for tid, t in idx.tracks.items() if a <= t["first"] < b]
                if scene:
                    chosen.add(max(scene, key=lambda tid: (idx.tracks[tid]["mean_size"], -tid)))
        else:
            refs = self.reference_embeddings()
            from .identity import distance

            chosen = set()
            for tid, t in idx.tracks.items():
                if not t["embeddings"]:
                    t["distance"] = None
                    match = False
                else:
                    mean = np.mean(t["embeddings"], axis=0)
                    t["distance"] = float(min(distance(mean, r) for r in refs))
                    match = t["distance"] < s.threshold
                if match == (mode == "reference"):
                    chosen.add(tid)
        for tid, t in idx.tracks.items():
            t["selected"] = tid in chosen
            t["size"] = round(t.pop("size") / max(t["keys"], 1), 2) if "size" in t else t.get("size")
            t.pop("mean_size", None)
            t["embedding_frames"] = len(t.pop("embeddings", []) or [])
        idx.decided = True

    def reference_embeddings(self) -> list[np.ndarray]:
        if self._ref_embeddings is None:
            from .identity import reference_embedding

            self._ref_embeddings = [reference_embedding(p, self) for p in self.settings.references]
        return self._ref_embeddings

    def _output(self, idx: _Index, n: int, get_raw) -> list[Face]:
        s = self.settings
        lo, hi = max(0, n - s.window - s.max_gap - 1), min(idx.length - 1, n + s.max_gap)
        raw = get_raw(lo, hi)
        ids = sorted({tid for i in range(lo, hi + 1) for tid in raw.get(i, {}) if tid > 0})
        faces = []
        for tid in ids:
            seq = [raw.get(i, {}).get(tid) for i in range(lo, hi + 1)]
            filled = _fill_gaps(seq, s.max_gap)
            at = n - lo
            if filled[at] is None:
                continue
            start = max(0, at - s.window)
            run = []
            for j in range(at, start - 1, -1):  # contiguous run ending at n, at most `window` back
                if filled[j] is None:
                    break
                run.append(filled[j])
            run.reverse()
            lm_now, conf, interp = run[-1]
            if s.smoothing and len(run) > 1:
                pts = np.asarray([r[0] for r in run])
                core = pts[:, :468]
                sizes = np.maximum(np.ptp(core[..., 0], axis=1), np.ptp(core[..., 1], axis=1)).tolist()
                lm = one_euro(pts, sizes, s.fps, s.min_cutoff, s.beta, s.d_cutoff).astype(np.float32)
            else:
                lm = lm_now.astype(np.float32)
            d = lm[LEFT_EYE_OUTER] - lm[RIGHT_EYE_OUTER]
            faces.append(Face(bbox=_landmark_bbox(lm), score=float(conf), landmarks=lm, track_id=tid,
                              selected=bool(idx.tracks.get(tid, {}).get("selected", False)),
                              landmark_confidence=float(conf), roll=float(np.arctan2(d[1], d[0])),
                              interpolated=interp))
        return faces


def _fill_gaps(seq: list[LandmarkResult | None], max_gap: int) -> list[tuple[np.ndarray, float, bool] | None]:
    """Linear interpolation across runs of None no longer than ``max_gap`` with data on both sides."""
    out: list = [None if r is None else (r.landmarks, r.confidence, False) for r in seq]
    i = 0
    while i < len(seq):
        if seq[i] is None:
            j = i
            while j < len(seq) and seq[j] is None:
                j += 1
            if i > 0 and j < len(seq) and j - i <= max_gap:
                a, b = seq[i - 1], seq[j]
                if a.landmarks.shape == b.landmarks.shape:
                    for k in range(i, j):
                        t = (k - i + 1) / (j - i + 1)
                        out[k] = ((1 - t) * a.landmarks + t * b.landmarks, min(a.confidence, b.confidence), True)
            i = j
        else:
            i += 1
    return out


def make_detector(settings: FaceSettings, progress=None):
    if settings.detector == "blazeface":
        from .mediapipe import BlazeFace

        return BlazeFace(progress, min_score=settings.min_detection_score, threads=settings.threads,
                         tile=256 if settings.small_faces else 0)
    from .mtcnn import MTCNN

    return MTCNN(progress)


_STILL: dict[tuple, FaceAnalyzer] = {}


def analyze_image(rgb: np.ndarray, settings: FaceSettings | None = None, analyzer: FaceAnalyzer | None = None,
                  require: bool = False, progress=None) -> list[Face]:
    """Faces in one still (source photos, references): detection + landmarks, largest first.

    ``require=True`` raises NoFaceError when there is none. ``progress`` reports a first-use model fetch."""
    if analyzer is None:
        settings = settings or FaceSettings()
        key = (settings.detector, settings.iris, settings.min_detection_score, settings.small_faces)
        analyzer = _STILL.get(key)
        if analyzer is None:
            analyzer = _STILL[key] = FaceAnalyzer(FaceSettings(detector=settings.detector, iris=settings.iris,
                                                               min_detection_score=settings.min_detection_score,
                                                               small_faces=settings.small_faces),
                                                  progress=progress)
    rgb = to_rgb8(rgb)
    idx = _Index()
    analyzer._index_step(idx, 0, rgb)
    faces = []
    for tid, res, det in idx.key_data[0].faces:
        lm = res.landmarks.astype(np.float32)
        d = lm[LEFT_EYE_OUTER] - lm[RIGHT_EYE_OUTER]
        faces.append(Face(bbox=_landmark_bbox(lm), score=float(det.score), landmarks=lm, track_id=tid,
                          selected=True, landmark_confidence=res.confidence, roll=float(np.arctan2(d[1], d[0]))))
    faces.sort(key=lambda f: -f.size)
    if require and not faces:
        raise NoFaceError("no face found in the image", hint="use a photo with one clear, frontal face")
    return faces
