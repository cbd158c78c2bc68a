"""Measurements of the face analysis (for tests and ``facecomp bench``), on real faces.

The reference face is the public-domain ``astronaut`` photo from the registry (available everywhere).
Landmark accuracy is measured as equivariance: the photo is warped by known similarity and perspective
transforms and the predicted landmarks are compared with the reference landmarks moved by the same
transform, in units of the inter-ocular distance (IOD). Jitter, recall, false positives and speed use
synthetic clips made from the same photo on face-free backgrounds.
"""

from __future__ import annotations

import time

import cv2
import numpy as np

from .align import five_points_from_mesh
from .analyzer import FaceAnalyzer, FaceSettings, analyze_image
from .geometry import to_rgb8


def load_reference(progress=None) -> np.ndarray:
    from facecomp.models import registry

    bgr = cv2.imread(str(registry.ensure("astronaut", progress)), cv2.IMREAD_COLOR)
    return cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)


def _iod(lm: np.ndarray) -> float:
    p = five_points_from_mesh(lm)
    return float(np.linalg.norm(p[1] - p[0]))


def _background(h: int, w: int, seed: int) -> np.ndarray:
    """A face-free, textured background: smoothed colour noise plus a gradient."""
    rng = np.random.default_rng(seed)
    small = rng.integers(0, 255, (max(2, h // 40), max(2, w // 40), 3), dtype=np.uint8)
    bg = cv2.resize(small, (w, h), interpolation=cv2.INTER_CUBIC)
    grad = np.linspace(0, 60, w, dtype=np.float32)[None, :, None]
    return np.clip(bg.astype(np.float32) * 0.7 + grad, 0, 255).astype(np.uint8)


def _face_patch(ref: np.ndarray, ref_lm: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Square crop around the reference face (2x the landmark extent), its landmarks, and a soft mask."""
    x1, y1 = ref_lm[:468].min(0)
    x2, y2 = ref_lm[:468].max(0)
    c = np.array([(x1 + x2) / 2, (y1 + y2) / 2])
    side = int(max(x2 - x1, y2 - y1) * 2.0)
    ox, oy = int(c[0] - side / 2), int(c[1] - side / 2)
    pad = np.pad(ref, ((side, side), (side, side), (0, 0)), mode="reflect")
    patch = pad[oy + side: oy + 2 * side, ox + side: ox + 2 * side].copy()
    mask = np.zeros(patch.shape[:2], np.float32)
    cv2.circle(mask, (side // 2, side // 2), int(side * 0.48), 1.0, -1)
    mask = cv2.GaussianBlur(mask, (0, 0), side * 0.03)
    return patch, ref_lm - [ox, oy], mask


def _place(canvas: np.ndarray, patch: np.ndarray, mask: np.ndarray, m: np.ndarray) -> None:
    h, w = canvas.shape[:2]
    mcv = np.vstack([m, [0, 0, 1]])
    warped = cv2.warpAffine(patch, m, (w, h), flags=cv2.INTER_LINEAR)
    wm = cv2.warpAffine(mask, m, (w, h), flags=cv2.INTER_LINEAR)[..., None]
    canvas[:] = (canvas * (1 - wm) + warped * wm + 0.5).astype(np.uint8)
    del mcv


def accuracy(analyzer_settings: FaceSettings | None = None, ref: np.ndarray | None = None, n: int = 12,
             seed: int = 0) -> dict:
    """Mean landmark error / IOD under known similarity and perspective warps of a real photo."""
    ref = load_reference() if ref is None else ref
    base = analyze_image(ref, analyzer_settings)[0].landmarks.astype(np.float64)
    rng = np.random.default_rng(seed)
    h, w = ref.shape[:2]
    errs = {"similarity": [], "perspective": []}
    for k in range(n):
        kind = "similarity" if k % 2 == 0 else "perspective"
        ang = rng.uniform(-40, 40)
        scale = rng.uniform(0.6, 1.3)
        m = cv2.getRotationMatrix2D((w / 2, h / 2), ang, scale)
        m[:, 2] += rng.uniform(-40, 40, 2)
        hm = np.vstack([m, [0, 0, 1]])
        if kind == "perspective":
            hm = hm @ np.array([[1, 0, 0], [0, 1, 0], [rng.uniform(-4e-4, 4e-4), rng.uniform(-4e-4, 4e-4), 1]])
        img = cv2.warpPerspective(ref, hm, (w, h), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT)
        # OpenCV puts pixel centres on integers: move the reference points the same way
        pts = np.hstack([base - 0.5, np.ones((len(base), 1))]) @ hm.T
        target = pts[:, :2] / pts[:, 2:] + 0.5
        faces = analyze_image(img, analyzer_settings)
        if not faces:
            errs[kind].append(np.nan)
            continue
        pred = faces[0].landmarks[: len(target)].astype(np.float64)
        errs[kind].append(float(np.linalg.norm(pred - target, axis=1).mean() / _iod(target)))
    out = {k: round(float(np.nanmean(v)), 4) for k, v in errs.items()}
    out["misses"] = int(sum(np.isnan(v).sum() for v in errs.values()))
    out["trials"] = n
    return out


def jitter(ref: np.ndarray | None = None, frames: int = 30, noise: float = 2.0, seed: int = 1,
           settings: FaceSettings | None = None) -> dict:
    """RMS frame-to-frame landmark motion (/IOD) on a static head with sensor noise: raw vs tracked+smoothed."""
    ref = load_reference() if ref is None else ref
    rng = np.random.default_rng(seed)
    clip = [np.clip(ref.astype(np.float32) + rng.normal(0, noise, ref.shape), 0, 255).astype(np.uint8)
            for _ in range(frames)]
    base = settings or FaceSettings()
    raw_settings = FaceSettings(**{**base.as_dict(), "detect_every": 1, "smoothing": False})
    out = {}
    for name, s in (("raw", raw_settings), ("smoothed", base)):
        ts = FaceAnalyzer(s).analyze_clip(enumerate(clip))
        lms = [ts.frames[i][0].landmarks[:468].astype(np.float64) for i in range(frames) if ts.frames[i]]
        d = np.diff(np.stack(lms), axis=0)
        out[name] = round(float(np.sqrt((d ** 2).sum(-1).mean()) / _iod(lms[0])), 5)
    out["reduction"] = round(out["raw"] / max(out["smoothed"], 1e-9), 2)
    return out


def recall(ref: np.ndarray | None = None, sizes=(24, 32, 48, 64, 128, 256, 512, 720), angles=(0, 30, 60, 90, -90),
           frame=(1280, 720), settings: FaceSettings | None = None) -> dict:
    """Detection recall of the real face pasted at face sizes (px, landmark extent) and roll angles."""
    ref = load_reference() if ref is None else ref
    base_lm = analyze_image(ref)[0].landmarks
    patch, plm, mask = _face_patch(ref, base_lm)
    face_px = float(max(np.ptp(plm[:468, 0]), np.ptp(plm[:468, 1])))
    w, h = frame
    table = {}
    hits = total = 0
    for size in sizes:
        row = {}
        for ang in angles:
            scale = size / face_px
            if patch.shape[0] * scale > 2 * max(w, h):
                continue
            canvas = _background(h, w, seed=size * 1000 + ang + 500)
            centre = (w * 0.55, h * 0.45) if size < min(w, h) else (w / 2, h / 2)
            m = cv2.getRotationMatrix2D((patch.shape[1] / 2, patch.shape[0] / 2), ang, scale)
            m[:, 2] += np.array(centre) - np.array([patch.shape[1] / 2, patch.shape[0] / 2])
            _place(canvas, patch, mask, m)
            truth = np.array(centre)
            faces = analyze_image(canvas, settings)
            ok = any(np.linalg.norm(np.array([(f.bbox[0] + f.bbox[2]) / 2, (f.bbox[1] + f.bbox[3]) / 2]) - truth)
                     < 0.5 * size for f in faces)
            row[str(ang)] = bool(ok)
            hits += ok
            total += 1
        table[str(size)] = row
    return {"frame": f"{w}x{h}", "by_size_and_roll": table, "recall": round(hits / max(total, 1), 3)}


def false_positives(frames: int = 20, size=(1280, 720), settings: FaceSettings | None = None) -> dict:
    """Faces reported on face-free frames (textures, gradients, checkerboards, flat colour)."""
    w, h = size
    count = 0
    for k in range(frames):
        kind = k % 4
        if kind == 0:
            img = _background(h, w, seed=100 + k)
        elif kind == 1:
            img = np.random.default_rng(k).integers(0, 255, (h, w, 3), dtype=np.uint8)
        elif kind == 2:
            yy, xx = np.mgrid[0:h, 0:w]
            img = ((((xx // (16 + k)) + (yy // (16 + k))) % 2) * 255).astype(np.uint8)[..., None].repeat(3, 2)
        else:
            img = np.full((h, w, 3), (k * 37) % 255, np.uint8)
        count += len(analyze_image(img, settings))
    return {"frames": frames, "faces_reported": count}


def speed(ref: np.ndarray | None = None, frames: int = 20, sizes=((1280, 720), (1920, 1080)), faces=(1, 5),
          settings: FaceSettings | None = None) -> dict:
    """Milliseconds per frame of the sequential pass (detect every N, landmarks+iris, smoothing)."""
    ref = load_reference() if ref is None else ref
    base_lm = analyze_image(ref)[0].landmarks
    patch, plm, mask = _face_patch(ref, base_lm)
    face_px = float(max(np.ptp(plm[:468, 0]), np.ptp(plm[:468, 1])))
    out = {}
    for (w, h) in sizes:
        for nf in faces:
            bg = _background(h, w, seed=7)
            clip = []
            for i in range(frames):
                canvas = bg.copy()
                for j in range(nf):
                    size = h * (0.35 if nf == 1 else 0.16)
                    cx = w * (0.5 if nf == 1 else 0.12 + 0.19 * j) + 2 * i
                    cy = h * 0.5 + (0 if nf == 1 else (j % 2) * h * 0.15)
                    m = cv2.getRotationMatrix2D((patch.shape[1] / 2, patch.shape[0] / 2), 0, size / face_px)
                    m[:, 2] += np.array([cx, cy]) - np.array([patch.shape[1] / 2, patch.shape[0] / 2])
                    _place(canvas, patch, mask, m)
                clip.append(canvas)
            an = FaceAnalyzer(settings or FaceSettings())
            an.analyze_clip(enumerate(clip[:2]))  # warm-up (XNNPACK setup)
            t0 = time.perf_counter()
            ts = an.analyze_clip(enumerate(clip))
            dt = time.perf_counter() - t0
            found = float(np.mean([len(ts.frames[i]) for i in range(frames)]))
            out[f"{h}p_{nf}face"] = {"ms_per_frame": round(dt / frames * 1000, 1), "faces_found": round(found, 2)}
    return out


def measure(quick: bool = False, progress=None) -> dict:
    """Every figure the issue asks for, as one JSON-able dict (``quick`` = fewer trials, for tests)."""
    ref = to_rgb8(load_reference(progress))
    t0 = time.perf_counter()
    result = {
        "accuracy_error_per_iod": accuracy(ref=ref, n=4 if quick else 16),
        "jitter_rms_per_iod": jitter(ref=ref, frames=12 if quick else 40),
        "recall": recall(ref=ref, sizes=(24, 64, 256) if quick else (24, 32, 48, 64, 128, 256, 512, 720),
                         angles=(0, 90) if quick else (0, 30, 45, 60, 90, -90)),
        "recall_small_faces": recall(ref=ref, sizes=(24, 32) if quick else (24, 32, 48),
                                     angles=(0,) if quick else (0, 30, 45, 60, 90, -90),
                                     settings=FaceSettings(small_faces=True)),
        "false_positives": false_positives(frames=4 if quick else 20),
        "speed": speed(ref=ref, frames=6 if quick else 25, sizes=((1280, 720),) if quick else ((1280, 720), (1920, 1080))),
    }
    result["seconds"] = round(time.perf_counter() - t0, 1)
    return result


_SIZES = {"480p": (854, 480), "720p": (1280, 720), "1080p": (1920, 1080), "1440p": (2560, 1440), "2160p": (3840, 2160),
          "4k": (3840, 2160)}


def bench_figures(size: str, clip) -> dict:
    """``facecomp bench`` hook: face-analysis speed on the bench clip and at 1 and 5 faces for this size;
    the size-independent quality figures (accuracy, jitter, recall, false positives) once, with 720p."""
    from facecomp.video.reader import VideoReader

    with VideoReader(clip, dtype="uint8", keep_alpha=False) as r:
        frames = [f.image for f in r.frames(0, min(len(r), 24))]
    an = FaceAnalyzer(FaceSettings())
    an.analyze_clip(enumerate(frames[:2]))  # warm-up
    t0 = time.perf_counter()
    ts = an.analyze_clip(enumerate(frames))
    dt = time.perf_counter() - t0
    out: dict = {"faces_clip_ms_per_frame": round(dt / max(len(frames), 1) * 1000, 1),
                 "faces_clip_found": round(float(np.mean([len(v) for v in ts.frames.values()])), 2)}
    wh = _SIZES.get(size.lower())
    if wh is None and "x" in size:
        wh = tuple(int(v) for v in size.lower().split("x"))
    if wh is not None:
        out["faces_speed"] = speed(frames=12, sizes=(wh,))
    if size.lower() == "720p":
        ref = load_reference()
        out["faces_quality"] = {"accuracy_error_per_iod": accuracy(ref=ref, n=8),
                                "jitter_rms_per_iod": jitter(ref=ref, frames=20),
                                "recall": recall(ref=ref)["recall"],
                                "false_positives": false_positives(frames=8)}
    return out
