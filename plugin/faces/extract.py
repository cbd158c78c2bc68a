"""Faceset extraction: clips and photos -> aligned whole-face crops, filtered, with a contact sheet.

Faces are found with :mod:`facecomp.faces` (BlazeFace + FaceMesh, 478 points with iris) and aligned
exactly as the .dfm swapper aligns them at render time (the ``face`` template of
:mod:`facecomp.faces.align` fitted to five FaceMesh points), so a model trained on these crops sees the same framing when it renders.

Filters, each counted in the result so the user sees why a face was dropped:

* ``tiny``       face (landmark extent) smaller than ``min_face`` frame px: upscaled crops teach blur.
* ``blurry``     variance of the Laplacian of the crop (at 128 px, inside the mask) below ``min_sharpness``.
* ``duplicate``  32x32 grey thumbnail within ``duplicate_threshold`` mean abs difference of a kept face:
                 a static talking head gives hundreds of near-identical frames that only slow training.
* ``identity``   with reference photos, dlib embedding distance above ``identity_threshold`` (extra
                 ``identity``): the other people in a clip.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator, Sequence

import cv2
import numpy as np

from ..errors import InvalidMediaError, MediaError, NoFaceError, SettingsError
from ..progress import Progress, make_progress
from ..models.faceset import N_LANDMARKS, Faceset, FacesetError, FacesetWriter, contact_sheet, mask_from_landmarks

IMAGE_EXTS = (".png", ".jpg", ".jpeg", ".bmp", ".webp", ".tif", ".tiff")
VIDEO_EXTS = (".mp4", ".mov", ".mkv", ".avi", ".webm", ".mpg", ".mpeg", ".m4v", ".mxf", ".ts", ".gif")
TEMPLATE = "face"   # facecomp.faces.align whole-face template (forehead to chin)


@dataclass(frozen=True)
class ExtractSettings:
    size: int = 256                   # crop side in px
    every: int = 1                    # take every n-th frame of a clip
    all_faces: bool = False           # every face of a frame, not only the largest (ignored with references)
    min_face: float = 64.0            # px, landmark extent in the frame
    min_sharpness: float = 40.0       # variance of Laplacian at 128 px inside the face (sharp video ~500+)
    duplicate_threshold: float = 0.005  # mean abs difference of 32x32 grey thumbnails (0..1)
    references: tuple[str, ...] = ()  # photos of the wanted person
    identity_threshold: float = 0.6   # dlib distance; under = same person
    max_faces: int | None = None      # stop after this many kept faces

    def __post_init__(self) -> None:
        if not 32 <= self.size <= 1024:
            raise SettingsError(f"--size {self.size} outside 32..1024")
        if self.every < 1:
            raise SettingsError("--every must be >= 1")
        if self.min_face < 0 or self.min_sharpness < 0 or self.duplicate_threshold < 0:
            raise SettingsError("filter thresholds must be >= 0")
        for p in self.references:
            if not os.path.isfile(p):
                raise SettingsError("reference photo not found", path=p)


@dataclass(frozen=True)
class ExtractResult:
    faceset: Path
    kept: int
    frames: int
    rejected: dict = field(default_factory=dict)   # reason -> count
    contact_sheet: Path | None = None


def align_face(rgb: np.ndarray, landmarks: np.ndarray, size: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(crop RGB uint8, 468 crop landmarks, 2x3 frame->crop matrix) with the faces package's whole-face
    template, the one the .dfm swapper aligns with at render time. Coordinates are continuous (pixel
    centre at +0.5), the :mod:`facecomp.faces` convention."""
    from .align import five_points_from_mesh, matrix_to_template, to_template
    from .geometry import warp

    lm = np.asarray(landmarks, np.float64)
    m, _ = matrix_to_template(five_points_from_mesh(lm), TEMPLATE, size)
    crop = warp(np.ascontiguousarray(rgb[:, :, :3]), m, (size, size), border=cv2.BORDER_REPLICATE,
                interp=cv2.INTER_CUBIC)
    return crop, to_template(lm[:N_LANDMARKS], m).astype(np.float32), m


def sharpness(crop: np.ndarray, mask: np.ndarray) -> float:
    """Variance of the Laplacian inside the face, measured at 128 px so that the figure does not depend
    on the crop size (a blurry 512 crop and a blurry 128 crop score alike)."""
    g = cv2.cvtColor(cv2.resize(crop, (128, 128), interpolation=cv2.INTER_AREA), cv2.COLOR_RGB2GRAY)
    m = cv2.resize(mask, (128, 128), interpolation=cv2.INTER_AREA) > 200
    lap = cv2.Laplacian(g.astype(np.float32), cv2.CV_32F)
    vals = lap[m] if m.sum() > 64 else lap.ravel()
    return float(vals.var())


def thumbnail(crop: np.ndarray) -> np.ndarray:
    g = cv2.cvtColor(cv2.resize(crop, (32, 32), interpolation=cv2.INTER_AREA), cv2.COLOR_RGB2GRAY)
    g = g.astype(np.float32) / 255
    return g - g.mean()      # brightness flicker alone does not make a new pose


def expand_inputs(inputs: Sequence[str | os.PathLike]) -> list[Path]:
    """Files as given; folders expanded (sorted) to the images and clips inside."""
    out: list[Path] = []
    for raw in inputs:
        p = Path(raw)
        if p.is_dir():
            found = sorted(q for q in p.iterdir() if q.suffix.lower() in IMAGE_EXTS + VIDEO_EXTS and q.is_file())
            if not found:
                raise InvalidMediaError("folder holds no images or clips", path=p,
                                        hint=f"supported: {' '.join(IMAGE_EXTS + VIDEO_EXTS)}")
            out += found
        elif p.is_file():
            out.append(p)
        else:
            raise MediaError("input not found", path=p)
    if not out:
        raise SettingsError("no inputs given")
    return out


def _frames(path: Path, every: int) -> Iterator[tuple[int, np.ndarray]]:
    if path.suffix.lower() in IMAGE_EXTS:
        bgr = cv2.imread(str(path), cv2.IMREAD_COLOR)
        if bgr is None:
            raise InvalidMediaError("cannot decode the image", path=path, hint="use PNG or JPEG")
        yield 0, cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)
        return
    from ..video.reader import VideoReader
    with VideoReader(path, dtype="uint8", keep_alpha=False) as reader:
        for f in reader.frames():
            if f.index % every == 0:
                yield f.index, np.ascontiguousarray(f.image[:, :, :3])


def _frame_count(path: Path, every: int) -> int | None:
    if path.suffix.lower() in IMAGE_EXTS:
        return 1
    try:
        from ..video.reader import VideoReader
        with VideoReader(path) as r:
            return (len(r) + every - 1) // every
    except Exception:
        return None


def extract(inputs: Sequence[str | os.PathLike], output: str | os.PathLike,
            settings: ExtractSettings = ExtractSettings(), progress: Progress | None = None,
            overwrite: bool = False, analyzer=None) -> ExtractResult:
    """Build a faceset at ``output`` from clips, photos and folders of them.

    Raises :class:`NoFaceError` when nothing survives the filters (the counts name the culprit)."""
    from .analyzer import FaceAnalyzer, FaceSettings, analyze_image

    progress = progress or make_progress("quiet")
    files = expand_inputs(inputs)
    analyzer = analyzer or FaceAnalyzer(FaceSettings(iris=True))
    embedder, refs = None, []
    if settings.references:
        from . import identity
        embedder = getattr(analyzer, "embedder", None) or identity.DlibEmbedder(progress)
        for p in settings.references:
            refs.append(identity.reference_embedding(p, analyzer))
    counts = {"no_face": 0, "tiny": 0, "blurry": 0, "duplicate": 0, "identity": 0}
    thumbs: list[np.ndarray] = []
    kept_crops: list[np.ndarray] = []
    n_frames = 0
    totals = [_frame_count(f, settings.every) for f in files]
    total = None if any(t is None for t in totals) else sum(totals)
    progress.start("extract", total, unit="frames")
    size = settings.size
    with FacesetWriter(output, size, template=TEMPLATE, overwrite=overwrite) as writer:
        for path in files:
            for index, rgb in _frames(path, settings.every):
                n_frames += 1
                progress.advance(1)
                faces = analyze_image(rgb, analyzer=analyzer)
                if not faces:
                    counts["no_face"] += 1
                    continue
                if not (settings.all_faces or refs):
                    faces = faces[:1]      # largest first
                for face in faces:
                    if face.size < settings.min_face:
                        counts["tiny"] += 1
                        continue
                    dist = None
                    if refs:
                        emb = embedder.embed(rgb, face.landmarks)
                        dist = min(float(np.linalg.norm(emb - r)) for r in refs)
                        if dist > settings.identity_threshold:
                            counts["identity"] += 1
                            continue
                    crop, lm, m = align_face(rgb, face.landmarks, size)
                    mask = mask_from_landmarks(lm, size)
                    sharp = sharpness(crop, mask)
                    if sharp < settings.min_sharpness:
                        counts["blurry"] += 1
                        continue
                    th = thumbnail(crop)
                    if thumbs and settings.duplicate_threshold > 0:
                        diffs = np.abs(np.stack(thumbs) - th).mean(axis=(1, 2))
                        if float(diffs.min()) < settings.duplicate_threshold:
                            counts["duplicate"] += 1
                            continue
                    thumbs.append(th)
                    writer.add(crop, lm, mask, matrix=m, source=str(path), frame=index, sharpness=sharp,
                               identity_distance=dist)
                    kept_crops.append(cv2.resize(crop, (96, 96), interpolation=cv2.INTER_AREA))
                    if settings.max_faces and len(writer.records) >= settings.max_faces:
                        break
                if settings.max_faces and len(writer.records) >= settings.max_faces:
                    break
            if settings.max_faces and len(writer.records) >= settings.max_faces:
                break
        if not writer.records:
            reasons = ", ".join(f"{k} {v}" for k, v in counts.items() if v) or "no frames"
            raise NoFaceError(f"no face survived extraction ({n_frames} frames; rejected: {reasons})",
                              path=files[0], hint="lower --min-face / --min-sharpness, or check --reference")
        sheet = contact_sheet(kept_crops, columns=10, tile=96, labels=[str(i) for i in range(len(kept_crops))])
        from ..disclosure.stills import encode_png, labelled

        sheet = labelled(sheet, watermark_id=f"facecomp.faceset:{Path(output).name}")
        writer.add_file("contact_sheet.png", encode_png(sheet))
    out = Path(output)
    progress.finish(kept=len(thumbs), frames=n_frames, rejected=counts, faceset=str(out))
    return ExtractResult(faceset=out, kept=len(thumbs), frames=n_frames, rejected=counts,
                         contact_sheet=out / "contact_sheet.png")


__all__ = ["ExtractSettings", "ExtractResult", "extract", "align_face", "sharpness", "expand_inputs", "Faceset",
           "FacesetError", "TEMPLATE"]
