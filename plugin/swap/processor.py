"""The face-swap frame processor: faces at this frame -> swapper -> masks, colour, blend -> frame.

It implements the render spine's ``FrameProcessor`` protocol. Faces come from the faces package's
analyzer (random access through ``ctx.source``); the swapper turns the selected ones into patches; this
module applies the shared mask, colour and paste-back rules, so every swapper gets the same guarantees:
pixels outside the mask bit-identical at every bit depth, alpha channel untouched.
"""

from __future__ import annotations

import hashlib
import threading
from collections import OrderedDict
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import asdict, dataclass, field, replace
from typing import Sequence

import numpy as np

from ..frames import ProcessResult
from ..errors import SettingsError
from . import blend, color, hold, lighting, lips, masks, pyramid
from .occlusion import ClipFrames, OcclusionSettings, Occluder
from .types import SwapPatch, Swapper

BLEND_MODES = ("feather", "seamless", "multiband")


@dataclass(frozen=True)
class BlendSettings:
    """How a swapped face is merged into the frame."""

    color: str = "rct"
    blend: str = "feather"
    mask: masks.MaskSettings = field(default_factory=masks.MaskSettings)
    color_smoothing: float = 0.7   # weight of the past in the per-track colour statistics (0 = off)
    interiors: bool | None = None  # target's open mouth/eyes show through; None = the swapper's default
    lighting: float = 0.0          # how much of the target's own low-frequency light the face takes (0 = off;
    #                                the effect's default, spec ``lighting``, is 1)
    occlusion: OcclusionSettings = field(default_factory=OcclusionSettings)
    # how far rct brings the face's fine lightness contrast to the target's own (0..1, with the lighting
    # step; see lighting.detail_ratio): 0 scales it by the whole faces' spreads, as rct does
    detail_match: float = 0.0
    # round the eyes (the eye loops grown by this many face widths, 0 = off), rct's lightness contrast is at
    # most ``eye_ring_cap`` times the detail-matched one (with the lighting step): there the photo's lids
    # and sockets, scaled by the whole faces' spreads, drew pale lid lines and dark rings that boiled
    # against the target's own eyes from frame to frame
    eye_ring: float = 0.08
    eye_ring_cap: float = 1.4
    # the same cap round the lower nose (its loop grown by this many face widths, 0 = off): the photo's
    # nostrils and alar creases, scaled like the lids, came out as black holes on a softly lit target
    nose_ring: float = 0.04

    def __post_init__(self) -> None:
        if not 0.0 <= self.lighting <= 1.0:
            raise SettingsError(f"lighting must be in [0, 1], got {self.lighting}")
        if not 0.0 <= self.detail_match <= 1.0:
            raise SettingsError(f"detail match must be in [0, 1], got {self.detail_match}")
        if not 0.0 <= self.eye_ring <= 0.3:
            raise SettingsError(f"eye ring must be in [0, 0.3] face widths, got {self.eye_ring}")
        if not 0.0 <= self.nose_ring <= 0.3:
            raise SettingsError(f"nose ring must be in [0, 0.3] face widths, got {self.nose_ring}")
        if self.eye_ring_cap < 1.0:
            raise SettingsError(f"eye ring cap must be at least 1, got {self.eye_ring_cap}")
        if self.color not in color.MODES:
            raise SettingsError(f"unknown colour mode {self.color!r}: use one of {', '.join(color.MODES)}")
        if self.blend not in BLEND_MODES:
            raise SettingsError(f"unknown blend mode {self.blend!r}: use one of {', '.join(BLEND_MODES)}")
        if not 0.0 <= self.color_smoothing < 1.0:
            raise SettingsError(f"colour smoothing must be in [0, 1), got {self.color_smoothing}")


def feature_band(lm: np.ndarray, shape: tuple[int, int], width: float, eye: float, nose: float) -> np.ndarray:
    """Where rct's lightness contrast is capped (0..1): round the eyes and round the lower nose, each loop
    grown by its own size in face widths (0: none), the larger weight where they meet."""
    if eye > 0.0:
        band = masks.loop_bands(lm, (masks.EYE_RIGHT, masks.EYE_LEFT), shape, width, ((eye, eye),))[0]
    else:
        band = np.zeros(shape, np.float32)
    if nose > 0.0:  # a small loop: worked out in its window only
        masks.loop_band_into(band, lm, (masks.NOSE_LOWER,), width, nose, nose)
    return band


class Blender:
    """Masks + colour transfer + paste-back of :class:`SwapPatch` es into a frame (in place)."""

    def __init__(self, settings: BlendSettings = BlendSettings(), target_interiors: bool = True,
                 shared: "Blender | None" = None):
        self.settings = settings
        self.interiors = target_interiors if settings.interiors is None else settings.interiors
        self.smoother = color.ColorSmoother(settings.color_smoothing)
        # per clip: its own occlusion state; ``shared``: the blender whose loaded models it reuses
        base = shared.occluder if shared is not None else None
        self.occluder = Occluder(settings.occlusion, shared=base) if settings.occlusion.any else None

    def alpha_and_face(self, patch: SwapPatch, index: int | None = None,
                       target_stats: "color.ColorStats | None" = None,
                       keep: np.ndarray | None = None,
                       lip_reference: "tuple[np.ndarray, np.ndarray] | None" = None) -> tuple[np.ndarray, np.ndarray]:
        """The final face colours and alpha in patch space. ``target_stats``: the track's smoothed colour
        statistics from a clip session (:class:`ClipColour`); without them the in-order smoother is used.
        ``keep`` (0..1): where the target stays in front (hands, glasses, objects). ``lip_reference``: the
        track's closed-mouth frame (RGB uint8, full frame) and its landmarks (OpenCV convention), for the
        lips' motion (:func:`.lips.carry_motion`; a clip session's worker finds it)."""
        s = self.settings
        shape = patch.mask.shape
        width = masks.face_width(patch.landmarks)
        hull = masks.hull_mask(patch.landmarks, shape, s.mask.forehead)
        # what the swapper drew, shown or not (see SwapPatch.stats_mask): colour and light are read over it
        # and the soft edge measured from its outline; what is not shown leaves only through ``patch.mask``
        drawn = patch.mask if patch.stats_mask is None else patch.stats_mask
        hard = (hull > 0.5) & (drawn > 0.5)
        soft = None
        if self.interiors and (s.mask.keep_mouth or s.mask.keep_eyes):
            inner = masks.interior_mask(patch.landmarks, shape, s.mask)
            if inner.any():
                soft = 1.0 - blend.feather(inner, -0.01 * width, 0.015 * width)
        face = patch.face
        if s.color != "none":
            sel = hard if soft is None else hard & (soft > 0.5)
            if s.color == "idt":
                face = color.transfer("idt", face, sel, target=patch.target, target_mask=sel,
                                      seed=index or 0)
            else:
                tstats = target_stats or self.smoother.update(patch.track_id, index, color.stats(patch.target, sel))
                # with the lighting step the shading is its own: rct may match the detail's contrast instead of
                # the whole face's (which takes the target's shading for texture contrast: blotches)
                weight = s.detail_match * s.lighting if s.color == "rct" else 0.0
                ring = s.color == "rct" and s.lighting > 0.0 and (s.eye_ring > 0.0 or s.nose_ring > 0.0)
                ratio = lighting.detail_ratio(face, patch.target, sel, 0.06 * width) if weight > 0.0 or ring else None
                band = band_scale = None
                if ring and ratio is not None:  # the band is drawn only where the cap acts (see color.transfer)
                    def band() -> np.ndarray:
                        return feature_band(patch.landmarks, shape, width, s.eye_ring, s.nose_ring)
                    band_scale = s.eye_ring_cap * ratio
                face = color.transfer(s.color, face, sel, target_stats=tstats, l_scale=ratio if weight > 0.0 else None,
                                      l_weight=weight, l_band=band, band_l_scale=band_scale)
        if s.lighting > 0.0:  # the target's own low-frequency light (see .lighting)
            sel = hard if soft is None else hard & (soft > 0.5)
            if keep is not None:
                sel = sel & (keep < 0.5)
            face = lighting.relight(face, patch.target, sel, 0.06 * width, s.lighting)
        if self.interiors and s.mask.keep_mouth and s.mask.lip_detail > 0.0:
            # lip sync: the target's own lip line, gap and the fine detail moving with them (see .lips)
            lip_settings = lips.LipSettings(strength=s.mask.lip_detail, motion=s.mask.lip_motion)
            face = lips.carry_lips(face, patch.target, patch.landmarks, lip_settings, inplace=face is not patch.face)
            if lip_reference is not None:
                face = lips.carry_motion(face, patch.target, patch.landmarks, lip_reference[0], lip_reference[1],
                                         lip_settings, inplace=True)
        if patch.stats_mask is not None:
            # what is drawn but not shown takes the target's colour too, so the blend's coarse bands do not
            # spread it into what is shown
            shown = np.clip((patch.mask + 1e-6) / (patch.stats_mask + 1e-6), 0.0, 1.0)[..., None]
            face = patch.target + (face - patch.target) * shown
        # distance-based soft edge: zero within `erode` of the hull edge, 1 after `feather` more; measured
        # from the outline only (holes the swapper leaves, e.g. the morph's mouth and eyes, keep their own
        # soft edge from the swapper's mask instead of growing by the feather width)
        alpha = blend.ramp_alpha(masks.fill_holes(hard), s.mask.erode * width, s.mask.feather * width)
        alpha *= patch.mask  # a model's own soft mask (a 0/1 coverage mask changes nothing here)
        if soft is not None:
            alpha *= soft
        if keep is not None:
            alpha *= 1.0 - keep
        if s.blend == "seamless":
            face = blend.membrane_clone(face, patch.target, alpha > 0.5)
        elif s.blend == "multiband":
            # outside the face's own pixels the bands see the target, so no foreign colour bleeds in
            inside = (alpha > 0).astype(np.float32)[..., None]
            face, alpha = pyramid.blend(patch.target + (face - patch.target) * inside, patch.target, alpha)
            # the coarse bands spread past the mask: what must stay the target's (hands, glasses, objects,
            # the mouth and eyes) is held to it again
            if keep is not None:
                alpha *= 1.0 - keep
            if soft is not None:
                alpha *= soft
        return face, alpha

    def paste(self, frame: np.ndarray, patch: SwapPatch, index: int | None = None,
              target_stats: "color.ColorStats | None" = None, matte: np.ndarray | None = None,
              clip: ClipFrames | None = None, layer: np.ndarray | None = None,
              lip_reference: "tuple[np.ndarray, np.ndarray] | None" = None) -> bool:
        """Blend one patch into ``frame`` in place; True when any pixel was written. ``matte`` (float32
        H x W, optional) gathers the replacement mask: the largest alpha written at each pixel. ``clip``:
        the frames around this one, for the occluder's hand track. ``layer`` (frame-shaped, with
        ``matte``): takes the face's own colours wherever this patch's alpha is the matte's, so that the
        layer over the original with the matte as straight alpha gives ``frame`` (the compositor's view).
        ``lip_reference``: see :meth:`alpha_and_face`."""
        if layer is not None and matte is None:
            raise ValueError("a face layer is gathered together with its matte")
        keep = self.occluder.keep_mask(frame, patch, index, clip) if self.occluder is not None else None
        face, alpha = self.alpha_and_face(patch, index, target_stats, keep, lip_reference)
        if not (alpha > 0).any():
            return False
        offset = patch.translation_only
        if offset is not None:
            f_frame, a_frame, (x0, y0) = face, alpha, offset
        else:
            H, W = frame.shape[:2]
            f_frame, x0, y0 = blend.warp_patch_to_frame(face, patch.to_frame, (H, W))
            a_frame, _, _ = blend.warp_patch_to_frame(alpha, patch.to_frame, (H, W))
            if a_frame.size == 0:
                return False
            a_frame[a_frame < 1.0 / 1024.0] = 0.0
        blend.composite(frame, f_frame, a_frame, x0, y0)
        if matte is not None:
            _gather(matte, a_frame, x0, y0, face=f_frame, layer=layer)
        return True


def _gather(matte: np.ndarray, alpha: np.ndarray, x0: int, y0: int, face: np.ndarray | None = None,
            layer: np.ndarray | None = None) -> None:
    """Max-accumulate a patch's alpha into a frame-sized matte at (x0, y0), clipped to the frame; with a
    ``layer``, the patch's ``face`` colours go into it where this alpha is the largest so far."""
    h, w = alpha.shape
    H, W = matte.shape[:2]
    fx0, fy0, fx1, fy1 = max(x0, 0), max(y0, 0), min(x0 + w, W), min(y0 + h, H)
    if fx1 > fx0 and fy1 > fy0:
        region = matte[fy0:fy1, fx0:fx1]
        a = alpha[fy0 - y0:fy1 - y0, fx0 - x0:fx1 - x0]
        if layer is not None and face is not None:
            wins = (a > 0) & (a >= region)
            if wins.any():
                lay = layer[fy0:fy1, fx0:fx1, :3]
                lay[wins] = blend.from_float(face[fy0 - y0:fy1 - y0, fx0 - x0:fx1 - x0, :3][wins], layer.dtype)
        np.maximum(region, a, out=region)


class ClipColour:
    """Per-track colour statistics of one clip, smoothed the same whatever order frames are asked in.

    Why not the running smoother: an exponential average carried from call to call makes frame n depend
    on which frames were rendered before it. Here the statistics at frame n are an exponential average
    started fresh ``window`` frames back (long enough that older frames weigh under 1%), over the raw
    statistics of the track's face on the clip's own 8-bit frames (the landmark hull, interiors left out
    as the blend leaves them out). Raw statistics are cached, so a render in order computes each once.
    A track absent for more than ``gap`` frames starts afresh, as the running smoother does.
    """

    def __init__(self, settings: "BlendSettings", interiors: bool, gap: int = 2, cache: int = 512):
        import math

        self.settings, self.interiors, self.gap, self.keep = settings, interiors, gap, settings.color_smoothing
        self.window = 0 if self.keep <= 0.0 else min(48, int(math.ceil(math.log(0.01) / math.log(self.keep))))
        self._raw: "OrderedDict[tuple[int, int], color.ColorStats]" = OrderedDict()
        self._cache = cache

    def raw(self, rgb: np.ndarray, face) -> color.ColorStats:
        """Statistics of one face on one RGB uint8 frame (computed on a crop around its landmarks)."""
        lm = np.asarray(face.landmarks, np.float32)
        h, w = rgb.shape[:2]
        pad = 2
        x0, y0 = (max(0, int(np.floor(v)) - pad) for v in lm[:468].min(0))
        x1, y1 = (int(np.ceil(v)) + pad for v in lm[:468].max(0))
        x1, y1 = min(w, max(x1, x0 + 1)), min(h, max(y1, y0 + 1))
        # smooth moments need no every-pixel sample (color._samples thins big faces the same way): a face
        # box over 8000 px is read on a 2x stride, its masks drawn on that grid (sample j is pixel 2j),
        # a quarter of the crop, mask and gather work
        step = 2 if (y1 - y0) * (x1 - x0) > 8000 else 1
        crop = rgb[y0:y1:step, x0:x1:step].astype(np.float32) * np.float32(1.0 / 255.0)
        local = (lm - np.float32([x0, y0])) / np.float32(step)
        m = self.settings.mask
        sel = masks.hull_mask(local, crop.shape[:2], m.forehead) > 0.5
        if self.interiors and (m.keep_mouth or m.keep_eyes):
            sel &= masks.interior_mask(local, crop.shape[:2], m) < 0.5
        return color.stats(crop, sel)

    def at(self, track: int, index: int, raw_at) -> color.ColorStats | None:
        """The smoothed statistics of ``track`` at frame ``index``; ``raw_at(j)`` gives the raw ones at
        frame j (None where the track is absent). None when the track is absent at ``index``."""
        got = self._get(track, index, raw_at)
        if got is None:
            return None
        items = [got]
        last = index
        for j in range(index - 1, max(-1, index - self.window - 1), -1):
            if last - j > self.gap:
                break
            st = self._get(track, j, raw_at)
            if st is not None:
                items.append(st)
                last = j
        return color.ema(items, self.keep)

    def _get(self, track: int, j: int, raw_at) -> color.ColorStats | None:
        key = (track, j)
        if key in self._raw:
            self._raw.move_to_end(key)
            return self._raw[key]
        st = raw_at(j)
        if st is not None:
            self._raw[key] = st
            while len(self._raw) > self._cache:
                self._raw.popitem(last=False)
        return st


class FaceSwapProcessor:
    """``FrameProcessor`` that replaces the selected faces of each frame.

    ``analyzer`` is a ``facecomp.faces.analyzer.FaceAnalyzer`` (or anything with ``faces_at(index,
    source)``); for a lone frame (``ctx.source is None``) the frame itself is analysed.

    ``prefetch``: on a source that is read front to back (a render's own decode says so with a true
    ``sequential`` attribute), the analysis of frame n+1 runs on a helper thread while frame n is
    swapped, blended and stamped: the two halves of the work overlap on a second core. The analyzer is
    never used by two threads at once, and its answers do not depend on call order, so the output is
    the same with or without it.
    """

    name = "swap"

    def __init__(self, swapper: Swapper, analyzer, settings: BlendSettings = BlendSettings(),
                 source_hashes: Sequence[str] = (), prefetch: bool = True):
        self.swapper = swapper
        self.analyzer = analyzer
        self.settings = settings
        self.blender = Blender(settings, swapper.target_interiors)
        self.source_hashes = tuple(source_hashes)
        self.thread_safe = bool(getattr(analyzer, "thread_safe", False))
        self.prefetch = prefetch
        self._lock = threading.Lock()
        self._pending: tuple[object, int, Future] | None = None  # (source, index, analysis)
        self._executor: ThreadPoolExecutor | None = None
        self._colour: ClipColour | None = None  # a clip session's worker (for_clip) has one
        self._faces_cache: OrderedDict[int, list] = OrderedDict()
        self._holds: tuple[object, hold.Holds] | None = None  # (source, its anchors): a clip session's worker
        self._lip_refs: tuple[object, OrderedDict] | None = None  # (source, (track, span) -> closed-mouth frame)
        self.stats = {"frames": 0, "faces": 0, "replaced": 0}

    def for_clip(self) -> "FaceSwapProcessor":
        """The per-clip worker a clip session holds: the same swapper and models, its own analysis caches,
        colour statistics and look-ahead thread (statistics counters stay shared with this processor)."""
        import copy

        clone = copy.copy(self)
        make = getattr(self.analyzer, "for_clip", None)
        clone.analyzer = make() if callable(make) else self.analyzer
        clone.blender = Blender(self.settings, self.swapper.target_interiors, shared=self.blender)
        # no running smoother in a session: with the clip, ClipColour smooths; without it, frames stand alone
        clone.blender.smoother = color.ColorSmoother(0.0)
        clone._colour = ClipColour(self.settings, clone.blender.interiors)
        clone._faces_cache = OrderedDict()
        clone._lip_refs = None
        clone._holds = None
        clone._pending = None
        clone._executor = None
        return clone

    def close(self) -> None:
        """Stop the look-ahead thread (a clip session calls this when it closes)."""
        self._drain()
        if self._executor is not None:
            self._executor.shutdown(wait=True)
            self._executor = None

    @property
    def lookahead(self) -> int:
        """Frames after the current one the analysis reads (the renderer decodes that far ahead)."""
        return int(getattr(self.analyzer, "lookahead", 0) or 0) + (1 if self.prefetch else 0)

    def faces_for(self, frame: np.ndarray, ctx) -> list:
        """The faces to replace on this frame (those the analyzer marked selected), in ``frame``'s pixels.

        A window of a larger frame (``ctx.window``) gets the clip's full-frame faces shifted into it when
        there is a clip, else the faces found on the window alone."""
        if ctx.source is not None and ctx.index >= 0:
            faces = _in_window(self._faces_at(ctx.index, ctx.source), ctx)
        else:
            self._drain()
            faces = _analyze_lone(frame, self.analyzer)
        return [f for f in faces if getattr(f, "selected", True)]

    def _all_faces(self, index: int, source) -> list:
        """Every face at ``index`` (clip session workers cache them for the colour history)."""
        if index in self._faces_cache:
            self._faces_cache.move_to_end(index)
            return self._faces_cache[index]
        self._drain()  # the analyzer is not used by two threads at once
        return self._remember(index, self.analyzer.faces_at(index, source))

    def _remember(self, index: int, faces: list) -> list:
        if self._colour is not None:
            self._faces_cache[index] = faces
            while len(self._faces_cache) > 64:
                self._faces_cache.popitem(last=False)
        return faces

    def _target_stats(self, frame: np.ndarray, ctx, tracks: set, own_frame: bool = True) -> dict:
        """Smoothed colour statistics per track from the clip (a clip session's worker with a source).
        ``own_frame``: ``frame`` is the clip's frame ``ctx.index`` (not when that frame is held, see .hold)."""
        if (self._colour is None or ctx.source is None or ctx.index < 0 or self._colour.keep <= 0.0
                or self.settings.color in ("none", "idt") or not tracks):
            return {}
        source, n = ctx.source, ctx.index
        own = _own_pixels(frame, ctx) if own_frame else None
        pixels: dict[int, np.ndarray] = {}

        def raw_for(track: int):
            def raw_at(j: int):
                face = next((f for f in self._all_faces(j, source) if f.track_id == track), None)
                if face is None:
                    return None
                if j not in pixels:  # the host's own 8-bit frame stands for the clip's frame n
                    pixels[j] = own if (j == n and own is not None) else np.asarray(source.frame(j))
                return self._colour.raw(pixels[j], face)
            return raw_at

        out = {}
        for t in tracks:
            st = self._colour.at(int(t), n, raw_for(int(t)))
            if st is not None:
                out[int(t)] = st
        return out

    def _drain(self) -> tuple[object, int, Future] | None:
        """Take the pending analysis (waiting for it: the analyzer is then free)."""
        pending, self._pending = self._pending, None
        if pending is not None:
            try:
                pending[2].result()
            except Exception:  # noqa: BLE001 - a failed look-ahead is recomputed (and raised) in order
                pass
        return pending

    def _faces_at(self, index: int, source) -> list:
        pending = self._drain()
        if index in self._faces_cache:
            faces = self._faces_cache[index]
        elif pending is not None and pending[0] is source and pending[1] == index and pending[2].exception() is None:
            faces = self._remember(index, pending[2].result())
        else:
            faces = self._remember(index, self.analyzer.faces_at(index, source))
        if (self.prefetch and getattr(source, "sequential", False)
                and index + 1 < min(len(source), int(getattr(source, "end", len(source))))):
            if self._executor is None:
                self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="facecomp-analysis")
            self._pending = (source, index + 1, self._executor.submit(self.analyzer.faces_at, index + 1, source))
        return faces

    def process(self, frame: np.ndarray, ctx) -> ProcessResult:
        return self.replace(frame, ctx)

    def replace(self, frame: np.ndarray, ctx, matte: np.ndarray | None = None,
                layer: np.ndarray | None = None) -> ProcessResult:
        """The swapped frame; ``matte`` (float32 H x W, zeros) and ``layer`` (a copy of the frame) gather
        the replacement mask and the face layer of this same paste (see :meth:`Blender.paste`), so a matte
        is always the one of the output: the same faces, colours, hands and glasses decisions."""
        blend.check_frame(frame)
        faces = self.faces_for(frame, ctx)
        if not faces:
            self._count(0, 0)
            return ProcessResult(frame, ())
        own = True
        anchor = self._anchor(ctx, frame)
        if anchor != ctx.index:  # this picture repeats frame `anchor`'s: its faces are that frame's
            ctx, own = replace(ctx, index=anchor), False
            faces = self._selected_at(anchor, ctx)
        out = frame.copy()
        patches = self.swapper.swap(frame, faces)
        tstats = self._target_stats(frame, ctx, {p.track_id for p in patches if p.track_id is not None}, own)
        clip = self._hand_clip(frame, ctx, own)
        replaced = []
        for p in patches:
            if self.blender.paste(out, p, ctx.index if ctx.index >= 0 else None,
                                  tstats.get(p.track_id), matte=matte, clip=clip, layer=layer,
                                  lip_reference=self._lip_reference(ctx, p.track_id)) and p.track_id is not None:
                replaced.append(int(p.track_id))
        self._count(len(faces), len(patches))
        return ProcessResult(out, tuple(sorted(set(replaced))))

    #: a closed-mouth reference is chosen from the span of this many frames a frame falls in
    LIP_SPAN = 48

    def _lip_reference(self, ctx, track) -> tuple[np.ndarray, np.ndarray] | None:
        """The frame of ``track`` with its mouth most closed in this frame's span of :attr:`LIP_SPAN` frames
        (RGB uint8, full frame) and its landmarks (OpenCV convention), for :func:`.lips.carry_motion`; None
        outside a clip session, with the lip motion off, or where this frame is that frame. Chosen from the
        span's landmarks alone (the earliest of the most closed), so a frame rendered alone, or in any
        order, gets the same; a render in order finds it once per span and track."""
        b, m = self.blender, self.settings.mask
        if (self._colour is None or ctx.source is None or ctx.index < 0 or track is None or not b.interiors
                or not m.keep_mouth or m.lip_detail <= 0.0 or m.lip_motion <= 0.0):
            return None
        from ..faces.geometry import to_rgb8
        from .geometry import to_cv

        source, n, track = ctx.source, ctx.index, int(track)
        if self._lip_refs is None or self._lip_refs[0] is not source:
            self._lip_refs = (source, OrderedDict())
        refs = self._lip_refs[1]
        span = n // self.LIP_SPAN
        key = (track, span)
        if key not in refs:
            best = None
            for j in range(span * self.LIP_SPAN, min((span + 1) * self.LIP_SPAN, len(source))):
                face = next((f for f in self._all_faces(j, source) if f.track_id == track), None)
                if face is not None:
                    lm = to_cv(face.landmarks)
                    gap = lips.mouth_gap(lm)
                    if best is None or gap < best[0]:
                        best = (gap, j, lm)
            refs[key] = None if best is None else (best[1], to_rgb8(np.asarray(source.frame(best[1]))), best[2])
            while len(refs) > 8:  # eight (track, span) references
                refs.popitem(last=False)
        ref = refs[key]
        if ref is None or ref[0] == n:
            return None
        return ref[1], ref[2]

    def _selected_at(self, index: int, ctx) -> list:
        """The selected faces of the clip's frame ``index`` in the pixels of ``ctx``'s window."""
        return [f for f in _in_window(self._all_faces(index, ctx.source), ctx) if getattr(f, "selected", True)]

    def _anchor(self, ctx, frame: np.ndarray) -> int:
        """The frame whose faces this frame takes (see .hold): a clip session's worker with the clip only.
        ``frame``: the host's pixels of this frame, which stand for the clip's (as for the colour)."""
        n, source = ctx.index, ctx.source
        if self._colour is None or source is None or n <= 0:
            return n
        if self._holds is None or self._holds[0] is not source:
            from ..faces.geometry import to_rgb8

            def faces(j: int):
                sel = [f for f in self._all_faces(j, source) if getattr(f, "selected", True)]
                return (frozenset(f.track_id for f in sel),
                        hold.region_of([f.bbox for f in sel], None, hold.HoldSettings()))

            self._holds = (source, hold.Holds(lambda j: to_rgb8(np.asarray(source.frame(j))), faces))
        return self._holds[1].anchor(n, _own_pixels(frame, ctx))

    def _hand_clip(self, frame: np.ndarray, ctx, own_frame: bool = True) -> ClipFrames | None:
        """The clip's frames and faces for the occluder's hand track and glasses decision (a clip
        session's worker with a source; elsewhere both are decided on the frame alone). The host's own
        8-bit frame stands for the clip's frame ``ctx.index``: the render has handed that frame's RGB over
        to the effect, so the clip would convert it from the decoded picture a second time (about 4 ms at
        720p)."""
        occ = self.blender.occluder
        if (self._colour is None or ctx.source is None or ctx.index < 0 or occ is None
                or not (occ.settings.hands or occ.settings.glasses)):
            return None
        from ..faces.geometry import to_rgb8

        source, n = ctx.source, ctx.index
        own = _own_pixels(frame, ctx) if own_frame else None

        def landmarks(track: int, j: int):
            if not 0 <= j < len(source):  # the glasses decision reads ahead on a track's first frames
                return None
            face = next((f for f in self._all_faces(j, source) if f.track_id == track), None)
            if face is None:
                return None
            rgb = own if (j == n and own is not None) else to_rgb8(np.asarray(source.frame(j)))
            return rgb, np.asarray(face.landmarks, np.float32)

        def at(track: int, j: int):
            got = landmarks(track, j)
            if got is None:
                return None
            lo, hi = got[1].min(axis=0), got[1].max(axis=0)
            return got[0], (float(lo[0]) + 0.5, float(lo[1]) + 0.5, float(hi[0]) + 0.5, float(hi[1]) + 0.5)

        window = getattr(ctx, "window", None)
        return ClipFrames(ctx.index, at, (0.0, 0.0) if window is None else (float(window[0]), float(window[1])),
                          landmarks=landmarks if occ.settings.glasses else None)

    def _count(self, faces: int, replaced: int) -> None:
        with self._lock:
            self.stats["frames"] += 1
            self.stats["faces"] += faces
            self.stats["replaced"] += replaced

    def summary(self) -> dict:
        """The face selection and the tracks the analysis has seen on this clip (for the render's checks)."""
        fs = getattr(self.analyzer, "settings", None)
        seen = getattr(self.analyzer, "tracks_seen", None)
        return {"selection": getattr(fs, "selection", None), "tracks": sorted(seen()) if callable(seen) else None}

    def model_records(self) -> list[dict]:
        recs = list(self.swapper.model_records())
        analyzer_recs = getattr(self.analyzer, "model_records", None)
        if callable(analyzer_recs):
            recs.extend(analyzer_recs())
        return recs

    def settings_dict(self) -> dict:
        s = asdict(self.settings)
        fs = getattr(self.analyzer, "settings", None)
        faces = fs.as_dict() if hasattr(fs, "as_dict") else None
        return {"swapper": self.swapper.settings_dict(), "blend": s, "faces": faces}

    def source_identity(self) -> dict | None:
        """A hash reference of the identity put into the video (sha256 of the source photos), never pixels."""
        if not self.source_hashes:
            recs = self.swapper.model_records()
            if not recs:
                return None
            return {"kind": "model", "sha256": recs[0]["sha256"]}
        joined = hashlib.sha256("".join(sorted(self.source_hashes)).encode()).hexdigest()
        return {"kind": "photos", "count": len(self.source_hashes), "sha256": joined}


def _own_pixels(frame: np.ndarray, ctx) -> np.ndarray | None:
    """``frame`` where it can stand for the clip's own RGB uint8 frame ``ctx.index`` (a whole 8-bit RGB
    frame: the render hands that frame's pixels over, and converting the decoded frame again costs about
    4 ms at 720p), else None."""
    return frame if (getattr(ctx, "window", None) is None and frame.dtype == np.uint8
                     and frame.shape[2] == 3) else None


def _in_window(faces: list, ctx) -> list:
    """The clip's full-frame faces in the pixels of ``ctx``'s window (as they are without one)."""
    window = getattr(ctx, "window", None)
    return faces if window is None else [_shifted(f, -window[0], -window[1]) for f in faces]


def _shifted(face, dx: float, dy: float):
    """The face moved by (dx, dy) pixels (full-frame faces into a render window)."""
    x1, y1, x2, y2 = face.bbox
    return replace(face, bbox=(x1 + dx, y1 + dy, x2 + dx, y2 + dy),
                   landmarks=(np.asarray(face.landmarks) + np.float32([dx, dy])).astype(np.float32))


def _analyze_lone(frame: np.ndarray, analyzer) -> list:
    """Faces of a frame with no clip around it (a host's single frame): detection + landmarks on it alone.

    There are no tracks to select from, so "all" keeps every face and every other mode the largest.
    """
    from ..faces.analyzer import analyze_image
    from ..faces.geometry import to_rgb8

    faces = analyze_image(to_rgb8(frame), analyzer=analyzer if hasattr(analyzer, "_index_step") else None)
    settings = getattr(analyzer, "settings", None)
    if getattr(settings, "selection", "all") == "all":
        return faces
    return faces[:1]  # analyze_image sorts largest first
