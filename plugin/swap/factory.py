"""The face-swap processor built from :class:`~facecomp.settings.EffectSettings` (no argparse).

``Engine.from_settings`` calls :func:`processor_from_settings`; no source photo and no model means no
swap (the render is then label + tags only).
"""

from __future__ import annotations

import os

from ..errors import SettingsError
from ..hashing import sha256_file


def face_settings(settings, fps: float | None = None, iris: bool = True):
    """The analysis settings: which faces, how often the detector runs, the clip's frame rate."""
    from ..faces.analyzer import FaceSettings

    kw: dict = {"selection": settings.faces, "iris": iris, "detect_every": settings.detect_every,
                "small_faces": settings.small_faces}
    if settings.reference:
        kw["references"] = tuple(os.fspath(p) for p in settings.reference)
    if fps:
        kw["fps"] = fps
    return FaceSettings(**kw)


def blend_settings(settings, interiors_default: bool):
    """Mask, colour and blend; open mouth/eyes show through by the swapper's default unless set."""
    from .masks import MaskSettings
    from .processor import BlendSettings

    keep_mouth = interiors_default if settings.keep_mouth is None else settings.keep_mouth
    keep_eyes = interiors_default if settings.keep_eyes is None else settings.keep_eyes
    mask = MaskSettings(erode=settings.mask_erode, feather=settings.mask_feather, forehead=settings.mask_forehead,
                        keep_mouth=keep_mouth, keep_eyes=keep_eyes, lip_detail=getattr(settings, "lip_detail", 1.0),
                        lip_motion=getattr(settings, "lip_motion", 0.0),
                        # the morph: the target's mouth and eyes at any opening (lip sync, blinks)
                        open_ratio=0.0 if interiors_default else MaskSettings.open_ratio)
    from .occlusion import OcclusionSettings

    occlusion = OcclusionSettings(hands=getattr(settings, "hands", True), glasses=getattr(settings, "glasses", True),
                                  objects=getattr(settings, "occluders", True))
    return BlendSettings(color=settings.color, blend=settings.blend, mask=mask,
                         color_smoothing=settings.color_smoothing, interiors=keep_mouth or keep_eyes,
                         lighting=getattr(settings, "lighting", 1.0), occlusion=occlusion,
                         detail_match=getattr(settings, "detail_match", 0.0))


def processor_from_settings(settings, progress=None, fps: float | None = None):
    """The FaceSwapProcessor for ``settings``, or None when neither source photos nor a model are given.

    ``fps``: the clip's frame rate, which the landmark smoothing is tuned for (default 25).
    """
    if not settings.swaps:
        if settings.reference:
            raise SettingsError("reference photos (--reference) select whose face to replace, but nothing "
                                "replaces it", hint="add --source PHOTO or --model FILE")
        return None
    if settings.faces in ("reference", "except-reference") and not settings.reference:
        raise SettingsError(f"faces {settings.faces} (--faces) needs reference photos: --reference PHOTO")

    from ..faces.analyzer import FaceAnalyzer
    from .processor import FaceSwapProcessor
    from .sources import photo_face, read_photo

    notify = (lambda text: progress.message(text, "warning")) if progress is not None else None
    photos = []
    for p in settings.source:
        rgb = read_photo(p)
        photos.append((p, rgb, photo_face(rgb, p, progress=progress)))
    if settings.model:
        from .onnx_swappers import open_model

        swapper = open_model(settings.model, arcface=settings.arcface, provider=settings.provider, notify=notify,
                             sources=[(rgb, f.landmarks) for _, rgb, f in photos], dfm_morph=settings.dfm_morph)
    else:
        from .morph import MorphSource, MorphSwapper
        from .texture import TextureSettings

        swapper = MorphSwapper([MorphSource.from_image(rgb, f.landmarks, name=os.path.basename(os.fspath(p)))
                                for p, rgb, f in photos],
                               texture_settings=TextureSettings(glasses_paint=getattr(settings, "glasses_paint", 1.0)))
    # the morph needs the 468 mesh points only; the iris model (eye centres for ONNX alignment) costs
    # two more inferences per face per frame
    analyzer = FaceAnalyzer(face_settings(settings, fps=fps, iris=bool(settings.model)), progress=progress)
    blend = blend_settings(settings, swapper.target_interiors)
    hashes = [sha256_file(p) for p, _, _ in photos]
    return FaceSwapProcessor(swapper, analyzer, blend, source_hashes=hashes)
