"""The faceset: aligned face crops with their landmarks and masks, the trainer's input.

Format ``facecomp.faceset/1`` (a directory; no pickle, no numpy container, readable by any tool)::

    FACESET/
      faceset.json        the index (below)
      faces/000000.png    aligned crop, RGB 8-bit, size x size
      masks/000000.png    face mask, greyscale 8-bit, size x size (255 = face)
      contact_sheet.png   optional preview written by ``facecomp extract``

``faceset.json``::

    {"schema": "facecomp.faceset/1",
     "size": 256,                   # crop side in px, the same for every face
     "template": "face",            # facecomp.faces.align template the crops were aligned to
     "created": "2026-01-01T00:00:00Z",
     "sources": ["clip.mp4", ...],
     "faces": [{"image": "faces/000000.png", "mask": "masks/000000.png",
                "landmarks": [[x, y], ...],   # 468 points, crop px, pixel centre at +0.5
                "matrix": [[a, b, c], [d, e, f]],  # frame px -> crop px affine, or null
                "source": "clip.mp4", "frame": 12,
                "sharpness": 153.2, "identity_distance": 0.31 or null}, ...]}

Why a directory of PNGs plus a JSON index: crops can be inspected, deleted or added by hand (remove a
bad crop and its entry), the trainer reads it without any extra dependency, and a schema string lets a
later version migrate old facesets instead of misreading them. Writes go to a temporary directory that
is renamed into place only when the index is complete, so an interrupted extraction never leaves a
half faceset under the final name.
"""

from __future__ import annotations

import json
import os
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Sequence

import cv2
import numpy as np

from ..errors import FacecompError, SettingsError

SCHEMA = "facecomp.faceset/1"
INDEX_NAME = "faceset.json"
N_LANDMARKS = 468
MIN_SIZE, MAX_SIZE = 32, 1024


class FacesetError(FacecompError, ValueError):
    """A faceset is missing, of an unknown schema, or inconsistent (a crop or mask that does not match)."""

    exit_code = 13


@dataclass(frozen=True)
class FaceRecord:
    """One face of a faceset; arrays are loaded on demand by :class:`Faceset`."""

    image: str
    mask: str
    landmarks: np.ndarray = field(repr=False)  # (468, 2) float32 crop px
    matrix: tuple[tuple[float, ...], ...] | None = None
    source: str = ""
    frame: int = -1
    sharpness: float = 0.0
    identity_distance: float | None = None

    def to_json(self) -> dict:
        return {
            "image": self.image, "mask": self.mask,
            "landmarks": [[round(float(x), 3), round(float(y), 3)] for x, y in self.landmarks],
            "matrix": None if self.matrix is None else [list(map(float, r)) for r in self.matrix],
            "source": self.source, "frame": int(self.frame), "sharpness": round(float(self.sharpness), 3),
            "identity_distance": None if self.identity_distance is None else float(self.identity_distance),
        }


def mask_from_landmarks(landmarks: np.ndarray, size: int, feather: float = 0.02) -> np.ndarray:
    """A face mask from the 468 mesh points: their filled convex hull, edges softened by ``feather``
    (fraction of the crop). The mesh spans brow to chin and cheek to cheek, which is the region a swap
    replaces."""
    pts = np.asarray(landmarks, np.float32).reshape(-1, 2) - 0.5   # continuous -> OpenCV pixel centres
    mask = np.zeros((size, size), np.uint8)
    hull = cv2.convexHull(np.round(pts * 16).astype(np.int32))
    cv2.fillConvexPoly(mask, hull, 255, lineType=cv2.LINE_AA, shift=4)
    k = int(round(feather * size)) | 1
    if k >= 3:
        mask = cv2.GaussianBlur(mask, (k, k), 0)
    return mask


class Faceset:
    """A faceset on disk. ``Faceset(path)`` validates the index; crops load lazily or all at once."""

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)
        index = self.path / INDEX_NAME
        if not index.is_file():
            raise FacesetError("not a faceset (no faceset.json)", path=self.path,
                               hint="make one with: facecomp extract CLIP -o FACESET")
        try:
            data = json.loads(index.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise FacesetError(f"unreadable faceset index: {exc}", path=index) from exc
        schema = data.get("schema") if isinstance(data, dict) else None
        if schema != SCHEMA:
            raise FacesetError(f"unsupported faceset schema {schema!r} (this version reads {SCHEMA})",
                               path=index, hint="re-extract it with this version of facecomp")
        try:
            self.size = int(data["size"])
            self.template = str(data.get("template", "face"))
            self.sources: list[str] = [str(s) for s in data.get("sources", [])]
            self.created = str(data.get("created", ""))
            self.records: list[FaceRecord] = []
            for i, f in enumerate(data["faces"]):
                lm = np.asarray(f["landmarks"], np.float32)
                if lm.shape != (N_LANDMARKS, 2):
                    raise FacesetError(f"face {i}: landmarks have shape {lm.shape}, expected (468, 2)",
                                       path=index)
                m = f.get("matrix")
                self.records.append(FaceRecord(
                    image=str(f["image"]), mask=str(f["mask"]), landmarks=lm,
                    matrix=None if m is None else tuple(tuple(float(v) for v in r) for r in m),
                    source=str(f.get("source", "")), frame=int(f.get("frame", -1)),
                    sharpness=float(f.get("sharpness", 0.0)),
                    identity_distance=None if f.get("identity_distance") is None else float(f["identity_distance"]),
                ))
        except (KeyError, TypeError, ValueError) as exc:
            if isinstance(exc, FacesetError):
                raise
            raise FacesetError(f"malformed faceset index: {exc!r}", path=index) from exc
        if not MIN_SIZE <= self.size <= MAX_SIZE:
            raise FacesetError(f"crop size {self.size} outside {MIN_SIZE}..{MAX_SIZE}", path=index)

    def __len__(self) -> int:
        return len(self.records)

    def _read(self, rel: str, flags: int) -> np.ndarray:
        p = self.path / rel
        img = cv2.imread(str(p), flags)
        if img is None:
            raise FacesetError("crop listed in the index cannot be read", path=p,
                               hint="remove its entry from faceset.json or re-extract")
        if img.shape[:2] != (self.size, self.size):
            raise FacesetError(f"crop is {img.shape[1]}x{img.shape[0]}, the index says {self.size}", path=p)
        return img

    def image(self, i: int) -> np.ndarray:
        """Crop ``i`` as RGB uint8 (size, size, 3)."""
        return cv2.cvtColor(self._read(self.records[i].image, cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB)

    def mask(self, i: int) -> np.ndarray:
        """Mask ``i`` as uint8 (size, size), 255 = face."""
        return self._read(self.records[i].mask, cv2.IMREAD_GRAYSCALE)

    def landmarks(self, i: int) -> np.ndarray:
        return self.records[i].landmarks.copy()

    def load_arrays(self, size: int | None = None) -> tuple[np.ndarray, np.ndarray]:
        """All crops and masks, resized to ``size`` if given: (N,S,S,3) and (N,S,S) uint8.

        The trainer holds a faceset in memory: a few thousand 256 px crops are a few hundred MB and
        memory is far faster than decoding PNGs every iteration."""
        s = self.size if size is None else int(size)
        n = len(self)
        if n == 0:
            raise FacesetError("faceset holds no faces", path=self.path)
        images = np.empty((n, s, s, 3), np.uint8)
        masks = np.empty((n, s, s), np.uint8)
        interp = cv2.INTER_AREA if s < self.size else cv2.INTER_CUBIC
        for i in range(n):
            im, mk = self.image(i), self.mask(i)
            if s != self.size:
                im = cv2.resize(im, (s, s), interpolation=interp)
                mk = cv2.resize(mk, (s, s), interpolation=interp)
            images[i], masks[i] = im, mk
        return images, masks


def _atomic_png(path: Path, img: np.ndarray) -> None:
    ok, buf = cv2.imencode(".png", img)
    if not ok:
        raise FacesetError("PNG encoding failed", path=path)
    path.write_bytes(buf.tobytes())


class FacesetWriter:
    """Writes a faceset into ``<path>.tmp-<pid>`` and renames it to ``path`` on :meth:`close`.

    Use as a context manager; on an exception the temporary directory is removed and nothing appears
    under the final name. An existing faceset at ``path`` is replaced only when ``overwrite``."""

    def __init__(self, path: str | os.PathLike, size: int, template: str = "face",
                 overwrite: bool = False):
        self.path = Path(path)
        if not MIN_SIZE <= int(size) <= MAX_SIZE:
            raise SettingsError(f"faceset size {size} outside {MIN_SIZE}..{MAX_SIZE}")
        if self.path.exists() and not overwrite:
            raise FacesetError("output already exists", path=self.path, hint="choose another -o or pass --overwrite")
        self.size = int(size)
        self.template = template
        self.tmp = self.path.with_name(f"{self.path.name}.tmp-{os.getpid()}")
        if self.tmp.exists():
            shutil.rmtree(self.tmp)
        (self.tmp / "faces").mkdir(parents=True)
        (self.tmp / "masks").mkdir()
        self.records: list[FaceRecord] = []
        self.sources: list[str] = []
        self._closed = False

    def add(self, image_rgb: np.ndarray, landmarks: np.ndarray, mask: np.ndarray | None = None, *,
            matrix: np.ndarray | None = None, source: str = "", frame: int = -1,
            sharpness: float = 0.0, identity_distance: float | None = None) -> FaceRecord:
        """Add one aligned crop (RGB uint8, size x size) with its 468 crop-px landmarks; the mask is
        made from the landmarks when not given."""
        img = np.asarray(image_rgb)
        if img.shape != (self.size, self.size, 3) or img.dtype != np.uint8:
            raise SettingsError(f"crop must be uint8 ({self.size},{self.size},3), got {img.dtype} {img.shape}")
        lm = np.asarray(landmarks, np.float32)
        if lm.shape != (N_LANDMARKS, 2):
            raise SettingsError(f"landmarks must be (468, 2), got {lm.shape}")
        if mask is None:
            mask = mask_from_landmarks(lm, self.size)
        mask = np.asarray(mask, np.uint8)
        if mask.shape != (self.size, self.size):
            raise SettingsError(f"mask must be ({self.size},{self.size}), got {mask.shape}")
        n = len(self.records)
        rec = FaceRecord(
            image=f"faces/{n:06d}.png", mask=f"masks/{n:06d}.png", landmarks=lm,
            matrix=None if matrix is None else tuple(tuple(float(v) for v in r) for r in np.asarray(matrix)[:2]),
            source=source, frame=int(frame), sharpness=float(sharpness), identity_distance=identity_distance)
        _atomic_png(self.tmp / rec.image, cv2.cvtColor(img, cv2.COLOR_RGB2BGR))
        _atomic_png(self.tmp / rec.mask, mask)
        self.records.append(rec)
        if source and source not in self.sources:
            self.sources.append(source)
        return rec

    def add_file(self, name: str, data: bytes) -> None:
        """An extra file (e.g. the contact sheet) that is moved into place with the faceset."""
        (self.tmp / name).write_bytes(data)

    def close(self) -> Faceset:
        if self._closed:
            return Faceset(self.path)
        index = {"schema": SCHEMA, "size": self.size, "template": self.template,
                 "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "sources": self.sources,
                 "faces": [r.to_json() for r in self.records]}
        (self.tmp / INDEX_NAME).write_text(json.dumps(index, separators=(",", ":")), encoding="utf-8")
        if self.path.exists():
            old = self.path.with_name(f"{self.path.name}.old-{os.getpid()}")
            os.replace(self.path, old)
            os.replace(self.tmp, self.path)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(self.tmp, self.path)
        self._closed = True
        return Faceset(self.path)

    def abort(self) -> None:
        shutil.rmtree(self.tmp, ignore_errors=True)
        self._closed = True

    def __enter__(self) -> "FacesetWriter":
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            self.close()
        else:
            self.abort()


def contact_sheet(images: Sequence[np.ndarray], columns: int = 8, tile: int = 96,
                  labels: Iterable[str] | None = None) -> np.ndarray:
    """A grid of crops (RGB uint8) for a quick look at what a faceset holds."""
    imgs = list(images)
    if not imgs:
        return np.zeros((tile, tile, 3), np.uint8)
    cols = max(1, min(columns, len(imgs)))
    rows = (len(imgs) + cols - 1) // cols
    sheet = np.full((rows * tile, cols * tile, 3), 32, np.uint8)
    labs = list(labels) if labels is not None else [None] * len(imgs)
    for k, im in enumerate(imgs):
        r, c = divmod(k, cols)
        t = cv2.resize(im, (tile, tile), interpolation=cv2.INTER_AREA)
        if labs[k]:
            cv2.putText(t, str(labs[k]), (2, tile - 4), cv2.FONT_HERSHEY_SIMPLEX, 0.3, (255, 255, 0), 1,
                        cv2.LINE_AA)
        sheet[r * tile:(r + 1) * tile, c * tile:(c + 1) * tile] = t
    return sheet
