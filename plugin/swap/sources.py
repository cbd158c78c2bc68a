"""Reading source and reference photos and finding their face (through the faces package)."""

from __future__ import annotations

import os

import numpy as np

from ..errors import InvalidMediaError, NoFaceError


def read_photo(path: str | os.PathLike) -> np.ndarray:
    """An RGB uint8 image from a photo file, EXIF orientation applied; typed errors naming the file."""
    from PIL import Image, ImageOps, UnidentifiedImageError

    p = os.fspath(path)
    if not os.path.isfile(p):
        raise InvalidMediaError("source photo not found", path=p, hint="check the path given to --source")
    try:
        with Image.open(p) as im:
            im = ImageOps.exif_transpose(im)
            return np.asarray(im.convert("RGB"), dtype=np.uint8).copy()
    except (UnidentifiedImageError, OSError) as exc:
        raise InvalidMediaError(f"cannot read the photo ({exc})", path=p,
                                hint="use a JPEG or PNG photo with a clearly visible face") from exc


def photo_face(rgb: np.ndarray, path: str | os.PathLike = "photo", progress=None):
    """The largest face of a photo (a ``facecomp.faces.types.Face``), or NoFaceError naming the file.

    ``progress`` reports the face models' download on first use."""
    from ..faces.analyzer import analyze_image

    faces = analyze_image(rgb, progress=progress)
    if not faces:
        raise NoFaceError("no face found in the photo", path=os.fspath(path),
                          hint="use a well-lit, roughly frontal photo where the face is at least 64 px wide")

    def area(f) -> float:
        x0, y0, x1, y1 = [float(v) for v in _bbox(f)]
        return (x1 - x0) * (y1 - y0)

    return max(faces, key=area)


def _bbox(face) -> tuple[float, float, float, float]:
    b = face.bbox
    for names in (("x0", "y0", "x1", "y1"), ("left", "top", "right", "bottom")):
        if all(hasattr(b, n) for n in names):
            return tuple(float(getattr(b, n)) for n in names)  # type: ignore[return-value]
    arr = np.asarray(b, np.float64).reshape(-1)
    return float(arr[0]), float(arr[1]), float(arr[2]), float(arr[3])
