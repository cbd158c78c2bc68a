"""Does a decoded frame carry the visible disclosure label? Used by ``facecomp verify`` / ``inspect``.

Two methods, and the finding says which one answered:

- ``"ocr"``: the ``tesseract`` command-line program (Debian ``tesseract-ocr``) reads each corner of the
  frame (upscaled so capitals are ~32 px, inverted to dark-on-light) and we look for the word
  "SYNTHETIC", allowing two OCR slips. This works for any label that says SYNTHETIC, whatever its size.
- ``"signature"``: without tesseract, the frame is compared with the label *we* would draw on a frame of
  that size (the same :class:`~facecomp.disclosure.label.Label` layout): the box must be dark, the text
  pixels bright, and the luma must correlate with our coverage mask. It recognises only our own label
  at the given settings, and reads no text.
"""

from __future__ import annotations

import dataclasses
import os
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from typing import Sequence

import cv2
import numpy as np

from facecomp.disclosure.label import CORNERS, Label, LabelSettings
from facecomp.errors import DisclosureError

__all__ = ["LabelFinding", "find_label", "tesseract_path", "METHODS"]

METHODS = ("auto", "ocr", "signature")
_TARGET = "SYNTHETIC"
_OCR_CAP_PX = 32  # tesseract reads best with capitals around 20-40 px
_OCR_FIX = str.maketrans({"0": "O", "1": "I", "5": "S", "7": "T", "|": "I", "!": "I", "$": "S"})


@dataclass(frozen=True)
class LabelFinding:
    """Whether the label was seen, where, what was read, how sure (0..1) and by which method."""

    found: bool
    corner: str | None
    text: str
    confidence: float
    method: str  # "ocr" | "signature"
    box: tuple[int, int, int, int] | None = None  # (x0, y0, x1, y1) when known
    detail: str = ""

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


def tesseract_path() -> str | None:
    """The tesseract binary: ``$FACECOMP_TESSERACT`` or ``tesseract`` on PATH; None when absent."""
    env = os.environ.get("FACECOMP_TESSERACT")
    if env:
        return env if os.path.isfile(env) and os.access(env, os.X_OK) else None
    return shutil.which("tesseract")


def _to_gray8(frame: np.ndarray) -> np.ndarray:
    if not isinstance(frame, np.ndarray) or frame.ndim not in (2, 3) or frame.size == 0:
        raise DisclosureError(f"find_label needs an (H,W[,C]) numpy frame, got {getattr(frame, 'shape', type(frame))}")
    f = frame
    if f.ndim == 3:
        if f.shape[2] == 1:
            f = f[..., 0]
        elif f.shape[2] in (3, 4):
            f = f[..., :3]
        else:
            raise DisclosureError(f"find_label: unsupported channel count {f.shape[2]}")
    if f.dtype == np.uint8:
        g = f
    elif f.dtype == np.uint16:
        g = (f >> 8).astype(np.uint8)
    elif f.dtype.kind == "f":
        g = np.clip(np.rint(np.nan_to_num(f) * 255.0), 0, 255).astype(np.uint8)
    else:
        raise DisclosureError(f"find_label: unsupported frame dtype {f.dtype}")
    if g.ndim == 3:  # frames are RGB; the label is neutral grey so the weights hardly matter
        g = cv2.cvtColor(np.ascontiguousarray(g), cv2.COLOR_RGB2GRAY)
    return np.ascontiguousarray(g)


def _corner_order(settings: LabelSettings) -> list[str]:
    return [settings.corner] + [c for c in CORNERS if c != settings.corner]


def _levenshtein(a: str, b: str) -> int:
    prev = list(range(len(b) + 1))
    for i, ca in enumerate(a, 1):
        cur = [i]
        for j, cb in enumerate(b, 1):
            cur.append(min(prev[j] + 1, cur[j - 1] + 1, prev[j - 1] + (ca != cb)))
        prev = cur
    return prev[-1]


def _match(word: str) -> int | None:
    """Edit distance to SYNTHETIC when within two slips, else None."""
    w = "".join(ch for ch in word.upper().translate(_OCR_FIX) if ch.isalnum())
    if not 7 <= len(w) <= 11:
        return None
    d = _levenshtein(w, _TARGET)
    return d if d <= 2 else None


def _corner_crop(h: int, w: int, corner: str) -> tuple[int, int, int, int]:
    cw, ch = int(np.ceil(w * 0.7)), int(np.ceil(h * 0.45))
    x0 = 0 if corner.endswith("left") else w - cw
    y0 = 0 if corner.startswith("top") else h - ch
    return x0, y0, x0 + cw, y0 + ch


def _run_tesseract(exe: str, image: np.ndarray, psm: int,
                   timeout: float) -> list[tuple[str, float, tuple, tuple[int, int, int, int]]]:
    """Words (text, conf 0..100, (block, par, line), (left, top, width, height) in the image) from
    tesseract's TSV output."""
    with tempfile.TemporaryDirectory(prefix="facecomp-ocr-") as tmp:
        path = os.path.join(tmp, "crop.png")
        if not cv2.imwrite(path, image):
            raise DisclosureError("could not write the OCR crop", path=path)
        try:
            proc = subprocess.run(
                [exe, path, "stdout", "--psm", str(psm), "-l", "eng", "tsv"],
                capture_output=True, text=True, timeout=timeout, check=False,
                env={**os.environ, "OMP_THREAD_LIMIT": "1"},
            )
        except (OSError, subprocess.TimeoutExpired) as exc:
            raise DisclosureError(f"tesseract failed to run: {exc}", path=exe) from exc
    if proc.returncode != 0:
        raise DisclosureError(f"tesseract exited {proc.returncode}: {proc.stderr.strip()[:200]}", path=exe,
                              hint="apt-get install tesseract-ocr (needs the 'eng' language data)")
    words = []
    for row in proc.stdout.splitlines()[1:]:
        cols = row.split("\t")
        if len(cols) < 12 or not cols[11].strip():
            continue
        try:
            conf = float(cols[10])
            box = (int(cols[6]), int(cols[7]), int(cols[8]), int(cols[9]))
        except ValueError:
            continue
        words.append((cols[11].strip(), conf, (cols[2], cols[3], cols[4]), box))
    return words


def _label_boxes(h: int, w: int, settings: LabelSettings) -> dict[str, tuple[int, int, int, int]]:
    """Each corner's label box on an h x w frame at these settings (what :func:`_corner_of` ranks)."""
    return {c: tuple(Label(dataclasses.replace(settings, corner=c)).layout(h, w).box) for c in CORNERS}


def _corner_of(box: tuple[int, int, int, int], layouts: dict[str, tuple[int, int, int, int]],
               crop_corner: str) -> str:
    """The corner whose label layout (``layouts``, from :func:`_label_boxes`) holds the text line's box,
    the one whose box starts nearest the line's left and top edges where two hold it (the text is set
    from the box's left edge, and on a small frame the left and right layouts overlap); the crop's corner
    when none holds any of it (a label drawn at other settings)."""
    def rank(corner: str) -> tuple[int, float]:
        lx0, ly0, lx1, ly1 = layouts[corner]
        area = max(0, min(box[2], lx1) - max(box[0], lx0)) * max(0, min(box[3], ly1) - max(box[1], ly0))
        return area, -(abs(box[0] - lx0) + abs(box[1] - ly0))

    ranks = {c: rank(c) for c in CORNERS}
    best = max(CORNERS, key=ranks.__getitem__)
    return best if ranks[best][0] > 0 else crop_corner


def _to_frame(box: tuple[int, int, int, int], x0: int, y0: int, factor: float) -> tuple[int, int, int, int]:
    """A box in a corner crop scaled by ``factor`` (whose top left is at ``x0, y0``), in frame pixels."""
    return (int(x0 + box[0] / factor), int(y0 + box[1] / factor),
            int(np.ceil(x0 + box[2] / factor)), int(np.ceil(y0 + box[3] / factor)))


def _find_ocr(gray: np.ndarray, settings: LabelSettings, exe: str, timeout: float) -> LabelFinding:
    h, w = gray.shape
    expected_cap = max(12.0, 0.05 * min(h, w)) * settings.scale
    factor = float(np.clip(_OCR_CAP_PX / expected_cap, 0.25, 4.0))
    best: LabelFinding | None = None
    read_any: list[str] = []
    layouts: dict[str, tuple[int, int, int, int]] | None = None  # worked out once, at the first match
    for corner in _corner_order(settings):
        x0, y0, x1, y1 = _corner_crop(h, w, corner)
        crop = gray[y0:y1, x0:x1]
        interp = cv2.INTER_CUBIC if factor > 1 else cv2.INTER_AREA
        crop = cv2.resize(crop, None, fx=factor, fy=factor, interpolation=interp)
        crop = 255 - crop  # our label is light-on-dark; tesseract prefers dark-on-light
        for psm in (11, 6):
            words = _run_tesseract(exe, crop, psm, timeout)
            lines: dict[tuple, list[str]] = {}
            extent: dict[tuple, tuple[int, int, int, int]] = {}  # each line's box in the crop
            for text, _conf, key, (left, top, bw, bh) in words:
                lines.setdefault(key, []).append(text)
                e = extent.get(key, (left, top, left + bw, top + bh))
                extent[key] = (min(e[0], left), min(e[1], top), max(e[2], left + bw), max(e[3], top + bh))
            for text, conf, key, (left, top, bw, bh) in words:
                d = _match(text)
                if d is None:
                    continue
                confidence = max(0.0, min(1.0, conf / 100.0)) * (1.0 - d / len(_TARGET))
                # the corner is where the word is, not the crop it was read in: the crops overlap (each is
                # 0.7 of the width), so a label read in another corner's crop still says its own corner
                box = _to_frame((left, top, left + bw, top + bh), x0, y0, factor)
                if layouts is None:
                    layouts = _label_boxes(h, w, settings)
                at = _corner_of(_to_frame(extent[key], x0, y0, factor), layouts, corner)
                finding = LabelFinding(
                    found=True, corner=at, text=" ".join(lines[key]), confidence=round(confidence, 3),
                    method="ocr", box=box,
                    detail=f"tesseract --psm {psm}, crop x{factor:.2f}, edit distance {d}",
                )
                if best is None or finding.confidence > best.confidence:
                    best = finding
            read_any += [t for t, _c, _k, _b in words]
            if best is not None:
                return best
    seen = " ".join(read_any)[:120]
    return LabelFinding(found=False, corner=None, text=seen, confidence=0.0, method="ocr",
                        detail="tesseract read no 'SYNTHETIC' in any corner")


def _find_signature(gray: np.ndarray, settings: LabelSettings) -> LabelFinding:
    h, w = gray.shape
    g = gray.astype(np.float32) / 255.0
    best: LabelFinding | None = None
    for corner in _corner_order(settings):
        label = Label(dataclasses.replace(settings, corner=corner))
        try:
            layout = label.layout(h, w)
        except DisclosureError as exc:
            return LabelFinding(False, None, "", 0.0, "signature", detail=str(exc))
        cov = label.coverage(h, w)
        x0, y0, x1, y1 = layout.box
        region = g[y0:y1, x0:x1]
        box_px = region[cov < 0.02]
        text_px = region[cov > 0.9]
        if box_px.size == 0 or text_px.size == 0:
            continue
        dark = float(np.mean(box_px < 0.3))
        bright = float(np.mean(text_px > 0.6))
        c = region.ravel() - region.mean()
        e = cov.ravel() - cov.mean()
        denom = float(np.sqrt((c * c).sum() * (e * e).sum()))
        corr = float((c * e).sum() / denom) if denom > 0 else 0.0
        confidence = max(0.0, corr) * min(dark, bright)
        found = corr >= 0.7 and dark >= 0.85 and bright >= 0.85
        finding = LabelFinding(
            found=found, corner=corner if found else None, text="", confidence=round(confidence, 3),
            method="signature", box=layout.box if found else None,
            detail=f"corner {corner}: correlation {corr:.2f}, dark box {dark:.0%}, bright text {bright:.0%}; "
            f"expected text {settings.text!r} (not read: no OCR)",
        )
        if found:
            return finding
        if best is None or finding.confidence > best.confidence:
            best = finding
    if best is None:
        return LabelFinding(False, None, "", 0.0, "signature", detail="no corner could be checked")
    return dataclasses.replace(best, found=False, corner=None, box=None)


def find_label(
    frame: np.ndarray,
    settings: LabelSettings | None = None,
    *,
    method: str = "auto",
    timeout: float = 30.0,
) -> LabelFinding:
    """Look for the disclosure label in ``frame`` (RGB/grey/RGBA, uint8/uint16/float).

    ``settings`` are the label settings the file claims (from its manifest); the settings' corner is
    checked first. ``method``: "auto" (OCR when tesseract is installed, else signature), "ocr", "signature".
    """
    if method not in METHODS:
        raise DisclosureError(f"find_label method {method!r} is not one of {', '.join(METHODS)}")
    settings = settings if settings is not None else LabelSettings()
    gray = _to_gray8(frame)
    exe = tesseract_path()
    if method == "ocr" and exe is None:
        raise DisclosureError("OCR of the label needs the tesseract program",
                              hint="apt-get install tesseract-ocr, or use method='signature'")
    if method in ("auto", "ocr") and exe is not None:
        return _find_ocr(gray, settings, exe, timeout)
    return _find_signature(gray, settings)


def find_label_in_frames(frames: Sequence[np.ndarray], settings: LabelSettings | None = None,
                         *, method: str = "auto") -> list[LabelFinding]:
    """One finding per sampled frame (convenience for ``verify``/``inspect``)."""
    return [find_label(f, settings, method=method) for f in frames]
