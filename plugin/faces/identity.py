"""Identity embeddings with dlib's 128-d face ResNet (extra ``identity``: ``pip install dlib-bin``).

The model files are dlib's own serialisation (read by dlib's C++ deserialiser, no pickle) and come from the
registry (sdist of ``face-recognition-models``, verified). dlib's 5-point shape predictor aligns the chip
the way the ResNet was trained. Distances under ~0.6 mean "same person" (dlib's published operating point).
"""

from __future__ import annotations

import threading

import numpy as np

from facecomp.errors import ModelError, NoFaceError


def _dlib():
    try:
        import dlib  # noqa: F401
    except ImportError as exc:
        raise ModelError("identity selection needs dlib", hint="pip install 'facecomp[identity]' (dlib-bin)") from exc
    return dlib


class DlibEmbedder:
    """128-d embeddings for a face given its FaceMesh landmarks (used for the dlib box)."""

    name = "dlib_resnet"
    dim = 128

    def __init__(self, progress=None):
        from facecomp.models import registry

        dlib = _dlib()
        self._dlib = dlib
        self._sp = dlib.shape_predictor(str(registry.ensure("dlib_shape5", progress)))
        self._net = dlib.face_recognition_model_v1(str(registry.ensure("dlib_resnet", progress)))
        self._records = [registry.get("dlib_shape5").record(), registry.get("dlib_resnet").record()]
        self._lock = threading.Lock()

    def model_records(self) -> list[dict]:
        return list(self._records)

    def embed(self, rgb: np.ndarray, landmarks: np.ndarray) -> np.ndarray:
        pts = np.asarray(landmarks)[:468]
        x1, y1 = pts.min(0)
        x2, y2 = pts.max(0)
        # dlib's detector boxes are tighter at the top (brows) than the mesh extent: shrink a little
        rect = self._dlib.rectangle(int(round(x1)), int(round(y1 + 0.1 * (y2 - y1))), int(round(x2)), int(round(y2)))
        img = np.ascontiguousarray(rgb[:, :, :3])
        with self._lock:
            shape = self._sp(img, rect)
            vec = self._net.compute_face_descriptor(img, shape)
        return np.asarray(vec, np.float64)


def distance(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.linalg.norm(np.asarray(a) - np.asarray(b)))


def reference_embedding(path: str, analyzer) -> np.ndarray:
    """Embedding of the largest face in a reference photo; NoFaceError names the photo."""
    import cv2

    from .analyzer import analyze_image

    bgr = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if bgr is None:
        from facecomp.errors import InvalidMediaError

        raise InvalidMediaError("cannot read the reference photo", path=path, hint="use a JPEG or PNG")
    rgb = cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)
    faces = analyze_image(rgb, analyzer=analyzer)
    if not faces:
        raise NoFaceError("no face found in the reference photo", path=path,
                          hint="use a photo with one clear, frontal face of the person")
    embedder = analyzer.embedder or DlibEmbedder()
    return embedder.embed(rgb, faces[0].landmarks)
