"""MediaPipe BlazeFace (detector), FaceMesh (468 landmarks) and Iris, run by LiteRT on the CPU.

The .tflite files come from the model registry (verified by sha256). Pre- and post-processing follow the
published MediaPipe graphs: SSD anchors and weighted NMS for BlazeFace, a rotated square ROI (1.5x the
face, aligned to the eye line) for FaceMesh, and 2.3x eye-corner crops for Iris.
"""

from __future__ import annotations

import contextlib
import os
import sys
import tempfile
import threading

import numpy as np

from facecomp.errors import ModelError

from .geometry import angle_of, apply, invert, iou, letterbox_matrix, roi_matrix, warp
from .types import (LEFT_EYE_INNER, LEFT_EYE_OUTER, RIGHT_EYE_INNER, RIGHT_EYE_OUTER, Detection,
                    LandmarkResult, Roi)


_STDERR_LOCK = threading.Lock()  # fd 2 is process-wide: one redirection at a time


@contextlib.contextmanager
def quiet_native_log():
    """Drop the runtime's own INFO lines ("Created TensorFlow Lite XNNPACK delegate") from fd 2.

    LiteRT's C++ logger writes straight to file descriptor 2, past Python's ``sys.stderr``, so ``--quiet``
    and ``--progress json`` could not silence it. Anything else it writes (warnings, errors) is passed on.
    """
    with _STDERR_LOCK:
        try:
            sys.stderr.flush()
        except (AttributeError, ValueError):
            pass
        saved = os.dup(2)
        with tempfile.TemporaryFile(mode="w+b") as sink:
            os.dup2(sink.fileno(), 2)
            try:
                yield
            finally:
                os.dup2(saved, 2)
                os.close(saved)
                sink.seek(0)
                kept = [ln for ln in sink.read().decode("utf-8", "replace").splitlines(keepends=True)
                        if ln.strip() and not ln.startswith("INFO: ")]
                if kept:
                    sys.stderr.write("".join(kept))


def _interpreter(name: str, progress=None, threads: int = 1):
    from ai_edge_litert.interpreter import Interpreter

    from facecomp.models import registry

    path = registry.ensure(name, progress=progress)
    try:
        with quiet_native_log():
            it = Interpreter(model_path=str(path), num_threads=threads)
            it.allocate_tensors()
    except Exception as exc:  # LiteRT raises plain ValueError/RuntimeError on a bad flatbuffer
        raise ModelError(f"LiteRT cannot load model {name!r}: {exc}", path=path) from exc
    return it, registry.get(name).record()


class _Model:
    """One LiteRT interpreter; a lock because an interpreter is not re-entrant."""

    def __init__(self, name: str, progress=None, threads: int = 1):
        self.it, self.record = _interpreter(name, progress, threads)
        self.inp = self.it.get_input_details()[0]
        self.outs = self.it.get_output_details()
        self.size = int(self.inp["shape"][1])
        self._lock = threading.Lock()

    def __call__(self, x: np.ndarray) -> list[np.ndarray]:
        with self._lock:
            self.it.set_tensor(self.inp["index"], x[None].astype(np.float32))
            self.it.invoke()
            return [self.it.get_tensor(o["index"]).copy() for o in self.outs]


def ssd_anchors(input_size: int, strides: list[int], per_location: list[int]) -> np.ndarray:
    """Anchor centres (N,2) in 0..1 as MediaPipe's SsdAnchorsCalculator makes them (fixed anchor size)."""
    out = []
    i = 0
    while i < len(strides):
        stride, count = strides[i], 0
        while i < len(strides) and strides[i] == stride:  # layers with one stride share a grid
            count += per_location[i]
            i += 1
        g = int(np.ceil(input_size / stride))
        ys, xs = np.meshgrid((np.arange(g) + 0.5) / g, (np.arange(g) + 0.5) / g, indexing="ij")
        centres = np.stack([xs.ravel(), ys.ravel()], 1)
        out.append(np.repeat(centres, count, axis=0))
    return np.concatenate(out).astype(np.float32)


def weighted_nms(boxes: np.ndarray, scores: np.ndarray, kps: np.ndarray, thresh: float = 0.3):
    """MediaPipe's WEIGHTED suppression: overlapping hits are averaged, weighted by score."""
    order = np.argsort(-scores)
    used = np.zeros(len(scores), bool)
    result = []
    for i in order:
        if used[i]:
            continue
        group = [j for j in order if not used[j] and iou(boxes[i], boxes[j]) > thresh]
        for j in group:
            used[j] = True
        w = scores[group][:, None]
        box = (boxes[group] * w).sum(0) / w.sum()
        kp = (kps[group] * w[:, :, None]).sum(0) / w.sum()
        result.append((box, float(scores[i]), kp))
    return result


class BlazeFace:
    """BlazeFace short range (close faces) + full range (small faces), merged: chosen by face size.

    Each model sees the whole frame letterboxed to its input; hits are mapped back to frame pixels.
    """

    name = "blazeface"

    def __init__(self, progress=None, min_score: float = 0.5, use_short: bool = True, use_full: bool = True,
                 threads: int = 1, tile: int = 0):
        if not (use_short or use_full):
            raise ModelError("BlazeFace needs at least one of short/full range")
        self.min_score = min_score
        self.tile = tile  # > 0: also run full range on overlapping tiles of this side (small faces in big frames)
        self.models = []
        if use_short:
            m = _Model("blazeface_short", progress, threads)
            self.models.append((m, ssd_anchors(128, [8, 16, 16, 16], [2, 2, 2, 2]), "short"))
        if use_full:
            m = _Model("blazeface_full", progress, threads)
            self.models.append((m, ssd_anchors(192, [4], [1]), "full"))

    def model_records(self) -> list[dict]:
        return [m.record for m, _, _ in self.models]

    def _run(self, rgb: np.ndarray, model: _Model, anchors: np.ndarray, angle: float, m: np.ndarray | None = None):
        h, w = rgb.shape[:2]
        s = model.size
        m = letterbox_matrix(w, h, s, angle) if m is None else m
        x = warp(rgb, m, (s, s)).astype(np.float32) / 127.5 - 1.0
        outs = model(x)
        reg, cls = (outs[0], outs[1]) if outs[0].shape[-1] == 16 else (outs[1], outs[0])
        reg, cls = reg[0], cls[0, :, 0]
        score = 1.0 / (1.0 + np.exp(-np.clip(cls.astype(np.float64), -100, 100)))
        keep = score >= self.min_score
        if not keep.any():
            return [], [], []
        reg, score, anc = reg[keep], score[keep], anchors[keep] * s
        cx, cy = reg[:, 0] + anc[:, 0], reg[:, 1] + anc[:, 1]
        bw, bh = reg[:, 2], reg[:, 3]
        kps = reg[:, 4:16].reshape(-1, 6, 2) + anc[:, None, :]
        back = invert(m)
        boxes, keypoints = [], []
        for i in range(len(score)):
            corners = np.array([[cx[i] - bw[i] / 2, cy[i] - bh[i] / 2], [cx[i] + bw[i] / 2, cy[i] - bh[i] / 2],
                                [cx[i] + bw[i] / 2, cy[i] + bh[i] / 2], [cx[i] - bw[i] / 2, cy[i] + bh[i] / 2]])
            fc = apply(back, corners)
            if angle != 0.0:  # a rotated box's axis-aligned hull is too big: keep its centre and side
                c = fc.mean(0)
                side = float(np.sqrt(bw[i] * bh[i])) / (s / (letterbox_side(w, h, angle)))
                boxes.append([c[0] - side / 2, c[1] - side / 2, c[0] + side / 2, c[1] + side / 2])
            else:
                boxes.append([*fc.min(0), *fc.max(0)])
            keypoints.append(apply(back, kps[i]))
        return boxes, list(score), keypoints

    def detect(self, rgb: np.ndarray, angle: float = 0.0) -> list[Detection]:
        """Faces in the frame; ``angle`` (radians) rotates the frame first (for strongly rolled faces)."""
        boxes, scores, kps, src = [], [], [], []
        for model, anchors, tag in self.models:
            b, sc, k = self._run(rgb, model, anchors, angle)
            boxes += b
            scores += sc
            kps += k
            src += [tag] * len(b)
        if self.tile and angle == 0.0 and max(rgb.shape[:2]) > 1.5 * self.tile:
            full = [(m, a) for m, a, tag in self.models if tag == "full"]
            if full:
                model, anchors = full[0]
                h, w = rgb.shape[:2]
                step = self.tile * 0.75
                for cy in _tile_centres(h, self.tile, step):
                    for cx in _tile_centres(w, self.tile, step):
                        m = roi_matrix(Roi(cx, cy, float(self.tile)), model.size)
                        b, sc, k = self._run(rgb, model, anchors, 0.0, m)
                        boxes += b
                        scores += sc
                        kps += k
        if not boxes:
            return []
        merged = weighted_nms(np.array(boxes, np.float64), np.array(scores), np.array(kps, np.float64))
        return [Detection(tuple(float(v) for v in b), sc, k.astype(np.float32), "blazeface")
                for b, sc, k in merged]


def _tile_centres(length: int, tile: int, step: float) -> list[float]:
    n = max(1, int(np.ceil((length - tile) / step)) + 1)
    if n == 1:
        return [length / 2]
    return list(np.linspace(tile / 2, length - tile / 2, n))


def letterbox_side(w: int, h: int, angle: float) -> float:
    c, s = abs(np.cos(angle)), abs(np.sin(angle))
    return max(w * c + h * s, w * s + h * c)


def roi_from_detection(det: Detection, scale: float = 1.5) -> Roi:
    """FaceMesh region from a detection: box centre, 1.5x the longer side, rotated to the eye line."""
    x1, y1, x2, y2 = det.bbox
    angle = angle_of(det.keypoints[0], det.keypoints[1]) if len(det.keypoints) >= 2 else 0.0
    return Roi((x1 + x2) / 2, (y1 + y2) / 2, max(x2 - x1, y2 - y1) * scale, angle)


def roi_from_landmarks(lm: np.ndarray, scale: float = 1.5) -> Roi:
    """Next-frame region from this frame's landmarks: their extent in the eye-line frame, 1.5x, square."""
    pts = lm[:468].astype(np.float64)
    angle = angle_of(pts[RIGHT_EYE_OUTER], pts[LEFT_EYE_OUTER])
    c, s = np.cos(angle), np.sin(angle)
    local = pts @ np.array([[c, -s], [s, c]])  # rotate by -angle
    lo, hi = local.min(0), local.max(0)
    mid = (lo + hi) / 2
    centre = mid @ np.array([[c, s], [-s, c]])
    return Roi(float(centre[0]), float(centre[1]), float(max(hi - lo)) * scale, angle)


class FaceMesh:
    """468 landmarks (+ face presence) in a rotated ROI; optional Iris refinement to 478 points."""

    name = "facemesh"

    def __init__(self, progress=None, iris: bool = True, threads: int = 1):
        self.mesh = _Model("facemesh", progress, threads)
        self.iris = _Model("iris", progress, threads) if iris else None
        self.num_points = 478 if iris else 468

    def model_records(self) -> list[dict]:
        return [self.mesh.record] + ([self.iris.record] if self.iris else [])

    def landmarks(self, rgb: np.ndarray, roi: Roi) -> LandmarkResult:
        s = self.mesh.size
        m = roi_matrix(roi, s)
        crop = warp(rgb, m, (s, s)).astype(np.float32) / 255.0
        raw, flag = self.mesh(crop)
        pts = raw.reshape(-1, 3)
        back = invert(m)
        xy = apply(back, pts[:, :2]).astype(np.float32)
        z = (pts[:, 2] * roi.size / s).astype(np.float32)
        conf = float(1.0 / (1.0 + np.exp(-np.clip(flag.ravel()[0], -100, 100))))
        if self.iris is not None:
            xy = np.concatenate([xy, self._irises(rgb, xy)])
        return LandmarkResult(xy, conf, z)

    def _irises(self, rgb: np.ndarray, lm: np.ndarray) -> np.ndarray:
        """Iris centre + 4 ring points per eye: 468..472 subject's right eye, 473..477 left eye."""
        out = []
        # the model was trained on one eye side; the other eye is mirrored in, then mirrored back
        for a, b, flip in ((RIGHT_EYE_OUTER, RIGHT_EYE_INNER, False), (LEFT_EYE_INNER, LEFT_EYE_OUTER, True)):
            p, q = lm[a].astype(np.float64), lm[b].astype(np.float64)
            c = (p + q) / 2
            roi = Roi(float(c[0]), float(c[1]), float(np.linalg.norm(q - p)) * 2.3, angle_of(p, q))
            s = self.iris.size
            m = roi_matrix(roi, s)
            if flip:
                m = np.array([[-1, 0, s], [0, 1, 0]]) @ np.vstack([m, [0, 0, 1]])
            crop = warp(rgb, m, (s, s)).astype(np.float32) / 255.0
            _, iris = self.iris(crop)
            out.append(apply(invert(m), iris.reshape(5, 3)[:, :2]))
        return np.concatenate(out).astype(np.float32)
