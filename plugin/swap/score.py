"""Quality of a render, measured by the project itself: ``facecomp score ORIGINAL OUTPUT --source PHOTO``.

Per frame and summarised:

- identity: dlib embedding distance of the output face to the source photo and to the original target
  (extra ``identity``); a replaced face should be nearer the source than the target;
- seam: mean gradient magnitude on the mask edge band over the mean inside the face, in the output and,
  as a baseline, in the original (a visible seam raises the output's figure above the original's);
- flicker: mean absolute frame-to-frame change inside the face region, output over original (1.0 = no
  flicker added);
- replaced share: frames where clearly more of the face region changed (over 8 levels) than of its
  surroundings;
- realism (:mod:`.realism`): expression error (output landmarks against the target's, per inter-ocular
  distance), mouth-opening correlation over time, lighting correlation, seam ratio (output over
  original), smeared and torn cells, and the share of hand pixels kept where hands cover the face;
- the floor of the two landmark figures (when given the reference clip): the original rendered with no
  face replaced but stamped and encoded as the output was (its label, its own watermark, its codec and
  settings), read the same way: what a render that changes no face scores, the measure's own noise on
  this clip. Why: the watermark's few code values move FaceMesh's reading of a mouth that opens a pixel
  or two, by far more than noise of the same size does; on small faces whose mouths barely move the
  floor of the mouth correlation is itself low, and a figure under the goal there says nothing of the
  swap.

The face geometry comes from analysing the original clip; the output is compared at the same places.

Report schema ``facecomp.score/2``: a frame's ``mouth_target`` / ``mouth_output`` / ``mouth_floor`` are
the mean of the jittered reads (each read in ``*_reads``) and ``mouth_corr`` compares halves of them; in
``/1`` they were one read of the tracked landmarks, kept here as ``*_tracked`` and ``mouth_corr_tracked``.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import cv2
import numpy as np

from ..errors import EmptyMediaError, SettingsError
from . import geometry, masks


@dataclass(frozen=True)
class ScoreSettings:
    identity_step: int = 1       # embed every Nth frame (dlib costs ~30-80 ms a face on a CPU)
    forehead: float = 0.6        # the face region, as the swap's default mask sees it
    # a face counts as replaced where over this share of its region changed by more than `replaced_levels`
    # (of 255), and 1.5 times the share of its surroundings that did: renders that change no face (the
    # floor) reach 0.048 on GRID's noisy MPEG and 0.027 on the walking clip, its swapped small faces 0.06
    replaced_share: float = 0.05
    replaced_levels: float = 8.0
    realism: bool = True         # analyse the output too: expression, mouth, lighting, anomalies
    hands: bool = True           # find hands over the face in the original (MediaPipe hand models)
    # FaceMesh reads of each frame's mouth (jittered crops of the target's region), their mean the figure;
    # one read of a mouth that opens a pixel or two is mostly that crop's noise (see realism)
    mouth_reads: int = 16

    def __post_init__(self) -> None:
        if self.identity_step < 1:
            raise SettingsError("identity step must be >= 1")
        if not 0.0 <= self.replaced_share < 1.0 or self.replaced_levels < 0:
            raise SettingsError("the replaced share is a share (0..1) and its levels are not negative")
        if not 2 <= self.mouth_reads <= 64:
            raise SettingsError(f"mouth reads must be 2..64 (two halves are compared), got {self.mouth_reads}")


def _grad(gray: np.ndarray) -> np.ndarray:
    gx = cv2.Sobel(gray, cv2.CV_32F, 1, 0, ksize=3)
    gy = cv2.Sobel(gray, cv2.CV_32F, 0, 1, ksize=3)
    return cv2.magnitude(gx, gy)


def seam_strength(rgb: np.ndarray, hull: np.ndarray, band: int = 2) -> float:
    """Mean gradient on the hull's edge band over the mean gradient inside the hull."""
    m = (hull > 0.5).astype(np.uint8)
    k = np.ones((2 * band + 1, 2 * band + 1), np.uint8)
    edge = (cv2.dilate(m, k) > 0) & (cv2.erode(m, k) == 0)
    inner = cv2.erode(m, np.ones((4 * band + 1, 4 * band + 1), np.uint8)) > 0
    if not edge.any() or not inner.any():
        return float("nan")
    g = _grad(cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY).astype(np.float32) / 255.0)
    return float(g[edge].mean() / max(float(g[inner].mean()), 1e-6))


def score_clips(original: str | os.PathLike, output: str | os.PathLike, sources: list[str] | tuple[str, ...] = (),
                settings: ScoreSettings = ScoreSettings(), progress=None, analyzer=None, embedder=None, *,
                floor_clip: str | os.PathLike | None = None, floor_note: str | None = None) -> dict:
    """Score OUTPUT against ORIGINAL (same frame count and size); ``sources`` are the photos put in.

    ``floor_clip``: the original rendered with no face replaced, stamped and encoded as OUTPUT was
    (:func:`facecomp.render.floor.score_with_floor` makes it): read the same way, it gives the landmark
    figures' floor; ``floor_note`` is reported with it."""
    from ..faces.analyzer import FaceAnalyzer, FaceSettings, analyze_image
    from ..video.reader import VideoReader
    from .sources import read_photo

    orig = VideoReader(original, dtype="uint8", keep_alpha=False)
    out = VideoReader(output, dtype="uint8", keep_alpha=False)
    n = min(len(orig), len(out))
    if n == 0:
        raise EmptyMediaError("no frames to score", path=output)
    if (orig.info.width, orig.info.height) != (out.info.width, out.info.height):
        raise SettingsError(f"frame sizes differ: original {orig.info.width}x{orig.info.height}, output "
                            f"{out.info.width}x{out.info.height}", path=output,
                            hint="score compares a render with the clip it was rendered from")
    analyzer = analyzer or FaceAnalyzer(FaceSettings(selection="largest"), progress=None)
    identity_note = None
    if embedder is None:
        try:
            from ..faces.identity import DlibEmbedder
            embedder = DlibEmbedder(progress)
        except Exception as exc:  # ModelError (no dlib) or a model that cannot be fetched
            identity_note = f"identity not measured: {exc}"
            embedder = None
    if not sources and identity_note is None:
        identity_note = ("identity not measured: give --source PHOTO (the photo that was put in); the identity "
                         "measure also needs dlib: pip install 'facecomp[identity]'")
    src_embs = []
    if embedder is not None:
        for p in sources:
            rgb = read_photo(p)
            faces = analyze_image(rgb, analyzer=analyzer)
            if faces:
                src_embs.append(embedder.embed(rgb, faces[0].landmarks))
    if progress is not None:
        progress.start("score", n)
    tracks = analyzer.analyze_clip((i, f.image) for i, f in enumerate(orig.frames(0, n)))
    out_tracks = hand_finder = floor_tracks = floor_frames = reader = None
    if settings.realism:
        from ..faces.mediapipe import FaceMesh, roi_from_landmarks
        from .realism import read_jitters

        reader = (FaceMesh(iris=False), read_jitters(settings.mouth_reads))
        out_tracks = FaceAnalyzer(FaceSettings(selection="all"), progress=None).analyze_clip(
            (i, f.image) for i, f in enumerate(out.frames(0, n)))
        if floor_clip is not None:
            floor = VideoReader(floor_clip, dtype="uint8", keep_alpha=False)
            try:
                floor_tracks = FaceAnalyzer(FaceSettings(selection="all"), progress=None).analyze_clip(
                    (i, f.image) for i, f in enumerate(floor.frames(0, min(n, len(floor)))))
            finally:
                floor.close()
            floor = VideoReader(floor_clip, dtype="uint8", keep_alpha=False)
            floor_frames = (f.image[..., :3] for f in floor.frames(0, min(n, len(floor))))
        if settings.hands:
            from ..faces.hands import HandFinder

            hand_finder = HandFinder()
    per_frame = []
    prev = None
    for i, (tf, of) in enumerate(zip(orig.frames(0, n), out.frames(0, n))):
        o_img, t_img = of.image[..., :3], tf.image[..., :3]
        f_img = next(floor_frames, None) if floor_frames is not None else None
        faces = [f for f in tracks.frames.get(i, []) if f.selected] or tracks.frames.get(i, [])
        rec: dict = {"index": i, "face": bool(faces)}
        if faces:
            face = max(faces, key=lambda f: f.size)
            lm = geometry.to_cv(face.landmarks)
            hull = masks.hull_mask(lm, o_img.shape[:2], settings.forehead)
            inside = hull > 0.5
            ring = (cv2.dilate(inside.astype(np.uint8), np.ones((15, 15), np.uint8)) > 0) & ~inside
            diff = np.abs(o_img.astype(np.int16) - t_img.astype(np.int16)).mean(axis=2) / 255.0
            d_in, d_ring = float(diff[inside].mean()), float(diff[ring].mean()) if ring.any() else 0.0
            rec["change_inside"], rec["change_around"] = round(d_in, 5), round(d_ring, 5)
            # the share of pixels changed, not the mean change: a small or low-contrast face swapped changes
            # its mean by about what the watermark and the encode change around it (walking clip: 0.017
            # against 0.011), which a rule on the means read as no face replaced on every frame
            moved = diff > settings.replaced_levels / 255.0
            s_in, s_ring = float(moved[inside].mean()), float(moved[ring].mean()) if ring.any() else 0.0
            rec["changed_inside"], rec["changed_around"] = round(s_in, 4), round(s_ring, 4)
            rec["replaced"] = s_in > max(settings.replaced_share, 1.5 * s_ring)
            rec["seam_output"] = round(seam_strength(o_img, hull), 4)
            rec["seam_original"] = round(seam_strength(t_img, hull), 4)
            if prev is not None:
                po, pt, pin = prev
                both = inside & pin
                if both.any():
                    rec["flicker_output"] = round(float(np.abs(o_img[both].astype(np.float32)
                                                               - po[both]).mean() / 255.0), 5)
                    rec["flicker_original"] = round(float(np.abs(t_img[both].astype(np.float32)
                                                                 - pt[both]).mean() / 255.0), 5)
            prev = (o_img, t_img, inside)
            if out_tracks is not None:
                roi = roi_from_landmarks(np.asarray(face.landmarks))
                _realism(rec, o_img, t_img, face, lm, inside, out_tracks.frames.get(i, []), hand_finder, i,
                         reader, roi)
                if floor_tracks is not None:
                    _floor(rec, lm, floor_tracks.frames.get(i, []), f_img, reader, roi)
            if embedder is not None and i % settings.identity_step == 0:
                e_out = embedder.embed(o_img, face.landmarks)
                e_tgt = embedder.embed(t_img, face.landmarks)
                rec["d_target"] = round(float(np.linalg.norm(e_out - e_tgt)), 4)
                if src_embs:
                    rec["d_source"] = round(float(min(np.linalg.norm(e_out - s) for s in src_embs)), 4)
        else:
            rec["replaced"] = False
            prev = None
        per_frame.append(rec)
        if progress is not None:
            progress.advance(1)
    summary = summarise(per_frame)
    if identity_note:
        summary["identity_note"] = identity_note
    if floor_note and "realism" in summary:
        summary["realism"]["floor_note"] = floor_note
    if progress is not None:
        progress.finish(**{k: v for k, v in summary.items() if not isinstance(v, dict)})
    orig.close()
    out.close()
    if floor_frames is not None:
        floor.close()
    return {"schema": "facecomp.score/2", "original": os.fspath(original), "output": os.fspath(output),
            "sources": [os.fspath(s) for s in sources], "summary": summary, "frames": per_frame}


def _nearest(faces, lm: np.ndarray, width: float):
    """The face among ``faces`` whose centre is nearest the target's (within half a face width): its
    landmarks in cv convention, or None."""
    c = lm[:468].mean(axis=0)
    best, dist = None, 0.5 * width
    for f in faces:
        flm = geometry.to_cv(f.landmarks)
        d = float(np.linalg.norm(flm[:468].mean(0) - c))
        if d < dist:
            best, dist = flm, d
    return best


def _mouth(rec: dict, key: str, img, reader, roi) -> None:
    """``key``: the mean of the jittered reads of ``img``'s mouth in ``roi``; ``key``_reads: each read."""
    from . import realism

    reads = realism.mouth_reads(img, roi, *reader)
    rec[key] = round(float(reads.mean()), 4)
    rec[key + "_reads"] = [round(float(x), 4) for x in reads]


def _floor(rec: dict, lm: np.ndarray, floor_faces, f_img, reader, roi) -> None:
    from . import realism

    flm = _nearest(floor_faces, lm, masks.face_width(lm))
    if flm is not None:
        rec["expression_floor"] = round(realism.expression_error(flm, lm), 4)
        rec["mouth_floor_tracked"] = round(realism.mouth_opening(flm), 4)
        if f_img is not None:
            _mouth(rec, "mouth_floor", f_img, reader, roi)


def _realism(rec: dict, o_img, t_img, face, lm, inside, out_faces, hand_finder, index: int, reader, roi) -> None:
    from . import realism

    width = masks.face_width(lm)
    rec["mouth_target_tracked"] = round(realism.mouth_opening(lm), 4)
    _mouth(rec, "mouth_target", t_img, reader, roi)
    olm = _nearest(out_faces, lm, width)
    if olm is not None:
        rec["expression_error"] = round(realism.expression_error(olm, lm), 4)
        rec["mouth_output_tracked"] = round(realism.mouth_opening(olm), 4)
        _mouth(rec, "mouth_output", o_img, reader, roi)
    rec["lighting_corr"] = round(realism.lighting_correlation(o_img, t_img, inside, width), 4)
    smeared, torn = realism.anomalies(o_img, t_img, inside, width)
    rec["smeared_share"], rec["torn_share"] = round(smeared, 4), round(torn, 4)
    if hand_finder is not None:
        from ..faces.hands import hand_mask

        x0, y0 = lm.min(axis=0) + 0.5
        x1, y1 = lm.max(axis=0) + 0.5
        hands = hand_finder.near(t_img, (float(x0), float(y0), float(x1), float(y1)))  # detected afresh
        if hands:
            kept = realism.hands_kept(o_img, t_img, hand_mask(hands, t_img.shape[:2]), inside)
            if kept is not None:
                rec["hand_kept"] = round(kept, 4)


def _mean(vals) -> float | None:
    vals = [v for v in vals if v is not None and np.isfinite(v)]
    return round(float(np.mean(vals)), 4) if vals else None


def summarise(frames: list[dict]) -> dict:
    with_face = [f for f in frames if f["face"]]
    s: dict = {"frames": len(frames), "frames_with_face": len(with_face),
               "replaced_share": round(sum(f["replaced"] for f in with_face) / len(with_face), 4) if with_face else 0.0}
    ids = [f for f in with_face if "d_source" in f and "d_target" in f]
    if ids:
        s["identity"] = {"frames": len(ids), "mean_d_source": _mean(f["d_source"] for f in ids),
                         "mean_d_target": _mean(f["d_target"] for f in ids),
                         "closer_to_source_share": round(sum(f["d_source"] < f["d_target"] for f in ids) / len(ids), 4)}
    elif any("d_target" in f for f in with_face):
        s["identity"] = {"frames": sum("d_target" in f for f in with_face),
                         "mean_d_target": _mean(f.get("d_target") for f in with_face)}
    s["seam"] = {"output": _mean(f.get("seam_output") for f in with_face),
                 "original": _mean(f.get("seam_original") for f in with_face)}
    fo, ft = _mean(f.get("flicker_output") for f in with_face), _mean(f.get("flicker_original") for f in with_face)
    s["flicker"] = {"output": fo, "original": ft, "ratio": round(fo / ft, 4) if fo is not None and ft else None}
    so, sg = s["seam"]["output"], s["seam"]["original"]
    s["seam"]["ratio"] = round(so / sg, 4) if so is not None and sg else None
    if any("lighting_corr" in f for f in with_face):
        from .realism import cross_halves, pearson

        def corr(key: str, suffix: str = "") -> float | None:
            if suffix:
                c = pearson([f.get(key + suffix) for f in with_face], [f.get("mouth_target" + suffix) for f in with_face])
            else:
                c = cross_halves([f.get(key + "_reads") for f in with_face], [f.get("mouth_target_reads") for f in with_face])
            return round(c, 4) if c is not None else None

        def halves(key: str) -> float | None:
            reads = [f.get(key + "_reads") for f in with_face]
            c = cross_halves(reads, reads)
            return round(c, 4) if c is not None else None

        hands = [f["hand_kept"] for f in with_face if "hand_kept" in f]
        s["realism"] = {
            "expression_error": _mean(f.get("expression_error") for f in with_face),
            "mouth_corr": corr("mouth_output"),
            "expression_error_floor": _mean(f.get("expression_floor") for f in with_face),
            "mouth_corr_floor": corr("mouth_floor"),
            # how far each clip's mouth reading repeats itself (one half of the crops against the other):
            # the target's is what a render that changed nothing would reach
            "mouth_reliability": {"target": halves("mouth_target"), "output": halves("mouth_output")},
            # one read of the tracked landmarks, as the figure was before the jittered reads
            "mouth_corr_tracked": corr("mouth_output", "_tracked"),
            "mouth_corr_floor_tracked": corr("mouth_floor", "_tracked"),
            "lighting_corr": _mean(f.get("lighting_corr") for f in with_face),
            "smeared_share": _mean(f.get("smeared_share") for f in with_face),
            "torn_frames": sum(1 for f in with_face if f.get("torn_share", 0) > 0),
            "hand_frames": len(hands),
            "hand_kept": round(float(np.mean(hands)), 4) if hands else None,
        }
    return s
