"""Data types and Protocols of face analysis, shared by the renderer and the swap stage.

Coordinates are always frame pixels (x right, y down, pixel centres at integer + 0.5 for the warp
helpers). Landmarks follow MediaPipe FaceMesh order: 468 points, or 478 with the iris points
(468..472 = the subject's right iris, image left; 473..477 = the subject's left iris).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol, runtime_checkable

import numpy as np

# FaceMesh indices used across the package.
RIGHT_EYE_OUTER, RIGHT_EYE_INNER = 33, 133  # subject's right eye: image left
LEFT_EYE_OUTER, LEFT_EYE_INNER = 263, 362
NOSE_TIP = 1
MOUTH_RIGHT, MOUTH_LEFT = 61, 291
RIGHT_EYE_RING = (33, 7, 163, 144, 145, 153, 154, 155, 133, 173, 157, 158, 159, 160, 161, 246)
LEFT_EYE_RING = (263, 249, 390, 373, 374, 380, 381, 382, 362, 398, 384, 385, 386, 387, 388, 466)


@dataclass(frozen=True)
class Detection:
    """One raw detector hit: a box, a score, and a few keypoints (BlazeFace 6, MTCNN 5) in frame pixels."""

    bbox: tuple[float, float, float, float]
    score: float
    keypoints: np.ndarray  # (K,2) float32; [0] = subject's right eye (image left), [1] = left eye
    source: str = ""  # which detector produced it


@dataclass(frozen=True)
class LandmarkResult:
    """A landmarker's answer for one face region."""

    landmarks: np.ndarray  # (468,2) or (478,2) float32, frame pixels
    confidence: float  # face presence 0..1
    z: np.ndarray | None = None  # (N,) relative depth, same scale as x, when the model gives it


@dataclass(frozen=True, eq=False)
class Face:
    """A face on one frame, as the renderer and the swap stage consume it."""

    bbox: tuple[float, float, float, float]  # x1, y1, x2, y2 in frame pixels
    score: float
    landmarks: np.ndarray  # (468,2) or (478,2) float32, frame pixels, MediaPipe FaceMesh order
    track_id: int | None = None
    selected: bool = False
    landmark_confidence: float = 1.0
    roll: float = 0.0  # in-plane rotation of the eye line in radians (image y down, 0 = upright)
    interpolated: bool = False  # filled across a short gap, not measured on this frame

    @property
    def size(self) -> float:
        return max(self.bbox[2] - self.bbox[0], self.bbox[3] - self.bbox[1])

    def five_points(self) -> np.ndarray:
        """ArcFace-order 5 points (image-left eye, image-right eye, nose, mouth left, mouth right)."""
        from .align import five_points_from_mesh

        return five_points_from_mesh(self.landmarks)

    def to_json(self, ndigits: int = 2) -> dict:
        return {"track": self.track_id, "bbox": [round(float(v), ndigits) for v in self.bbox],
                "score": round(float(self.score), 4), "selected": bool(self.selected),
                "landmarks": np.round(self.landmarks.astype(np.float64), ndigits).tolist()}


@runtime_checkable
class Detector(Protocol):
    """Finds faces in a whole RGB uint8 frame."""

    name: str

    def detect(self, rgb: np.ndarray) -> list[Detection]: ...

    def model_records(self) -> list[dict]: ...


@runtime_checkable
class Landmarker(Protocol):
    """Dense landmarks for one face given a region: rotated square ROI (cx, cy, size, angle)."""

    name: str
    num_points: int

    def landmarks(self, rgb: np.ndarray, roi: "Roi") -> LandmarkResult: ...

    def model_records(self) -> list[dict]: ...


@runtime_checkable
class Embedder(Protocol):
    """An identity embedding for one face (unit-free; compared with ``distance``)."""

    name: str
    dim: int

    def embed(self, rgb: np.ndarray, landmarks: np.ndarray) -> np.ndarray: ...

    def model_records(self) -> list[dict]: ...


@runtime_checkable
class FrameSource(Protocol):
    """What random access needs from the video layer (``facecomp.video.reader.VideoReader`` fits)."""

    def __len__(self) -> int: ...

    def frame(self, index: int) -> np.ndarray: ...  # RGB uint8 (H,W,3)


@dataclass(frozen=True)
class Roi:
    """A rotated square region in frame pixels: centre, side length, rotation (radians, image y down)."""

    cx: float
    cy: float
    size: float
    angle: float = 0.0

    def corners(self) -> np.ndarray:
        c, s = np.cos(self.angle), np.sin(self.angle)
        h = self.size / 2
        pts = np.array([[-h, -h], [h, -h], [h, h], [-h, h]], np.float64)
        rot = np.array([[c, -s], [s, c]])
        return (pts @ rot.T + [self.cx, self.cy]).astype(np.float32)


@dataclass
class TrackSet:
    """Result of a sequential pass: per-frame faces plus per-track facts and decisions."""

    width: int
    height: int
    frames: dict[int, list[Face]] = field(default_factory=dict)
    tracks: dict[int, dict] = field(default_factory=dict)  # id -> {"first","last","size","selected",...}
    models: list[dict] = field(default_factory=list)

    def to_json(self, fps: float | None) -> dict:
        return {"schema": "facecomp.tracks/1", "width": self.width, "height": self.height, "fps": fps,
                "frames": [{"index": i, "faces": [f.to_json() for f in self.frames[i]]}
                           for i in sorted(self.frames)],
                "tracks": {str(k): v for k, v in sorted(self.tracks.items())}, "models": self.models}
