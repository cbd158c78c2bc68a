"""The default swapper: a one-shot piecewise-affine morph of source photos onto every target face.

No model to download and no training: the source's landmarks and the target's 468 landmarks drive a
triangle-mesh warp, so the source face follows the target's pose and expression frame by frame. Work
happens in a crop around each target face; everything that depends only on the sources is computed once.

With the sources' depth (``pose="texture"``, the default) the photos are first lifted into one frontal,
symmetric texture (:mod:`.texture`: visibility per part, the hidden side filled from the visible one,
several photos combined best view first, shading, glasses and mouth/eye interiors kept out), and each
frame draws only the triangles that face the viewer in the target. ``pose="nearest"`` is the plain morph
of the photo whose pose is nearest the target's.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass, field
from typing import Sequence

import cv2
import numpy as np

from ..errors import NoFaceError, SettingsError
from . import geometry, masks, mesh
from .blend import to_float
from .types import FaceLike, SwapPatch

_TRIS_CACHE: dict[bytes, np.ndarray] = {}
POSE_MODES = ("texture", "nearest")


def _yaw_asymmetry(src: "MorphSource") -> float:
    """How far a source photo is from frontal: the nose tip's offset from the eyes' midpoint, per width."""
    lm = src.landmarks[0]
    mid = (lm[33] + lm[263]) / 2
    return abs(float(lm[masks.NOSE_TIP][0] - mid[0])) / max(src.width, 1.0)


def mesh_triangles(reference: np.ndarray) -> np.ndarray:
    """Delaunay triangles of a reference 468-point shape, cached by the shape's bytes."""
    key = np.asarray(reference[:468], np.float32).tobytes()
    tris = _TRIS_CACHE.get(key)
    if tris is None:
        tris = _TRIS_CACHE[key] = mesh.delaunay(np.asarray(reference[:468], np.float64))
    return tris


@dataclass(frozen=True, eq=False)
class MorphSource:
    """One source photo, prepared once: float crop pyramid, landmarks per level, pose descriptor."""

    name: str
    sha256: str
    levels: tuple[np.ndarray, ...]      # float32 RGB crops, level 0 full resolution, then halved
    landmarks: tuple[np.ndarray, ...]   # (468, 2) per level, in that level's pixels
    width: float                        # face width at level 0
    descriptor: np.ndarray = field(repr=False)
    depth: np.ndarray | None = field(default=None, repr=False)  # (468,) FaceMesh z, level-0 pixel units

    @classmethod
    def from_image(cls, rgb: np.ndarray, landmarks: np.ndarray, name: str = "source",
                   depth: np.ndarray | bool | None = True) -> "MorphSource":
        """Prepare a source from an RGB image (any supported dtype) and its face's 468+ landmarks
        (``facecomp.faces`` convention: frame pixels, pixel centres at +0.5).

        ``depth``: the landmarks' FaceMesh z (468,), or True to measure it here (one FaceMesh run on the
        photo, for the pose-robust texture), or False/None for none (the plain morph)."""
        lm = np.asarray(landmarks, np.float32)
        if lm.ndim != 2 or lm.shape[0] < 468 or lm.shape[1] < 2:
            raise SettingsError(f"{name}: source landmarks must be (468, 2), got {lm.shape}")
        lm = geometry.to_cv(lm[:468, :2])
        h, w = rgb.shape[:2]
        x0, y0 = lm.min(axis=0)
        x1, y1 = lm.max(axis=0)
        pad = 0.1 * max(x1 - x0, y1 - y0) + 4
        cx0, cy0 = max(int(x0 - pad), 0), max(int(y0 - pad), 0)
        cx1, cy1 = min(int(np.ceil(x1 + pad)), w), min(int(np.ceil(y1 + pad)), h)
        if cx1 - cx0 < 8 or cy1 - cy0 < 8:
            raise NoFaceError(f"{name}: the source face is too small or outside the image",
                              hint="use a photo where the face is at least 64 pixels wide")
        crop = np.ascontiguousarray(to_float(rgb[cy0:cy1, cx0:cx1, :3]))
        lm0 = lm - np.array([cx0, cy0], np.float32)
        levels, lms = [crop], [lm0]
        while min(levels[-1].shape[:2]) > 64 and len(levels) < 5:
            levels.append(cv2.pyrDown(levels[-1]))
            lms.append((lms[-1] + 0.5) * 0.5 - 0.5)
        digest = hashlib.sha256(np.ascontiguousarray(rgb[..., :3]).tobytes()).hexdigest()
        z = None
        if depth is True:
            from .texture import photo_depth

            z = photo_depth(rgb, landmarks)
        elif depth is not None and depth is not False:
            z = np.asarray(depth, np.float32).reshape(-1)[:468]
            if z.shape != (468,):
                raise SettingsError(f"{name}: source depth must have 468 values, got {z.shape}")
        return cls(name, digest, tuple(levels), tuple(lms), masks.face_width(lm0),
                   geometry.shape_descriptor(lm0), z)

    def level_for(self, target_width: float) -> int:
        """The pyramid level whose face is no smaller than the target's: no aliasing, least work."""
        lvl = 0
        while lvl + 1 < len(self.levels) and self.width / 2 ** (lvl + 1) >= target_width:
            lvl += 1
        return lvl


class MorphSwapper:
    """Triangle-mesh morph of the closest-pose source photo onto each target face."""

    name = "morph"
    target_interiors = True

    def __init__(self, sources: Sequence[MorphSource], pad: int = 4, full_res_below: float = 160.0,
                 pose: str = "texture", texture_settings=None):
        if not sources:
            raise SettingsError("the morph swapper needs at least one source photo", hint="pass --source PHOTO")
        if pose not in POSE_MODES:
            raise SettingsError(f"unknown morph pose mode {pose!r}: use one of {', '.join(POSE_MODES)}")
        self.sources = tuple(sources)
        self.pad = pad
        # faces wider than this build their remap tables at half resolution (see mesh.warp)
        self.full_res_below = full_res_below
        # one triangulation for every source and frame: the mean of the sources' frontalised shapes
        ref = np.mean([s.descriptor.reshape(468, 2) for s in self.sources], axis=0)
        self.triangles = mesh_triangles(ref)
        self.texture = None
        if pose == "texture" and all(s.depth is not None for s in self.sources):
            from . import texture

            # the most frontal photo first: it defines the mirror pairs (best view first)
            order = sorted(self.sources, key=lambda s: _yaw_asymmetry(s))
            self.texture = texture.build([(s.levels[0], s.landmarks[0], s.depth) for s in order],
                                         texture_settings or texture.TextureSettings())
        self.pose = "texture" if self.texture is not None else "nearest"

    def choose(self, lm: np.ndarray) -> MorphSource:
        """The source whose pose (shape descriptor) is nearest to this target face."""
        if len(self.sources) == 1:
            return self.sources[0]
        # (descriptors are similarity-invariant, so the +0.5 convention does not matter here)
        d = geometry.shape_descriptor(lm)
        return min(self.sources, key=lambda s: float(np.sum((s.descriptor - d) ** 2)))

    def swap_one(self, frame: np.ndarray, face: FaceLike) -> SwapPatch | None:
        lm = geometry.to_cv(np.asarray(face.landmarks, np.float32)[:468, :2])
        H, W = frame.shape[:2]
        x0, y0 = np.floor(lm.min(axis=0)).astype(int) - self.pad
        x1, y1 = np.ceil(lm.max(axis=0)).astype(int) + self.pad + 1
        x0, y0, x1, y1 = max(x0, 0), max(y0, 0), min(x1, W), min(y1, H)
        if x1 - x0 < 4 or y1 - y0 < 4:
            return None
        dst = lm - np.array([x0, y0], np.float32)
        width = masks.face_width(dst)
        scale = 1.0 if width < self.full_res_below else 0.5
        stats_cover = None
        if self.texture is not None:
            tex = self.texture
            lvl = tex.level_for(width)
            from .texture import draw_plan

            front, fade = draw_plan(dst, tex)
            tris = tex.triangles[front]
            level = tex.levels[lvl]
            if fade > 0.0:  # a stretched outline: its dark band fades out (see texture.edge_fade_amount)
                level = level.copy()
                level[..., 3:] *= (1.0 - np.float32(fade) * (1.0 - tex.edge_ramps[lvl]))[..., None]
            rgba, covered = mesh.warp(level, tex.landmarks[lvl], dst, tris, (y1 - y0, x1 - x0),
                                      table_scale=scale, rows=True)
            face_img = np.ascontiguousarray(rgba[..., :3])
            cover = covered.astype(np.float32) * np.clip(rgba[..., 3], 0.0, 1.0)
            if rgba.shape[2] > 4:  # the outline's dark texels are not drawn but still count for colour
                stats_cover = covered.astype(np.float32) * np.clip(rgba[..., 4], 0.0, 1.0)
        else:
            src = self.choose(lm)
            lvl = src.level_for(width)
            face_img, covered = mesh.warp(src.levels[lvl], src.landmarks[lvl], dst, self.triangles,
                                          (y1 - y0, x1 - x0), table_scale=scale, rows=True)
            cover = covered.astype(np.float32)
        target = to_float(frame[y0:y1, x0:x1, :3])
        to_frame = np.array([[1.0, 0.0, x0], [0.0, 1.0, y0]])
        return SwapPatch(face_img, cover, target, dst, to_frame, getattr(face, "track_id", None), stats_cover)

    def swap(self, frame: np.ndarray, faces: Sequence[FaceLike]) -> list[SwapPatch]:
        out = []
        for f in faces:
            p = self.swap_one(frame, f)
            if p is not None:
                out.append(p)
        return out

    def model_records(self) -> list[dict]:
        return []  # no model: the morph is geometry only

    def settings_dict(self) -> dict:
        d = {"swapper": "morph", "sources": [{"name": s.name, "sha256": s.sha256} for s in self.sources],
             "triangles": int(len(self.triangles)), "pose": self.pose}
        if self.texture is not None:
            d["texture"] = self.texture.report
        return d


def load_sources(paths: Sequence[str | os.PathLike]) -> list[MorphSource]:
    """Read source photos, find the largest face in each (faces package) and prepare them for the morph."""
    from .sources import read_photo, photo_face

    out = []
    for p in paths:
        rgb = read_photo(p)
        face = photo_face(rgb, p)
        out.append(MorphSource.from_image(rgb, face.landmarks, name=os.path.basename(os.fspath(p))))
    return out
