"""The score's floor: a render of the clip that changes no face, stamped and encoded as the output was.

Why here and not in :mod:`facecomp.swap.score`: making it takes the engine and the renderer, which build
on the swap package; the score itself only reads the clip this makes.
"""

from __future__ import annotations

import os
import tempfile

from ..errors import FacecompError


def score_with_floor(original: str | os.PathLike, output: str | os.PathLike, sources=(), settings=None,
                     progress=None, **kwargs) -> dict:
    """:func:`facecomp.swap.score.score_clips` with the landmark figures' floor: the reference render is
    made in a temporary folder and removed after. A reference render that fails leaves the score standing,
    with a note saying why (the floor is a reference figure)."""
    from ..swap.score import ScoreSettings, score_clips
    from ..video.reader import VideoReader

    settings = settings or ScoreSettings()
    if not settings.realism:
        return score_clips(original, output, sources, settings, progress, **kwargs)
    with VideoReader(output, dtype="uint8", keep_alpha=False) as r:
        frames = len(r)
    with tempfile.TemporaryDirectory(prefix="facecomp-score-") as tmp:
        try:
            path, note = floor_render(original, output, tmp, frames)
        except FacecompError as exc:
            path, note = None, f"no floor: the reference render failed ({exc})"
        return score_clips(original, output, sources, settings, progress, floor_clip=path, floor_note=note,
                           **kwargs)


def floor_render(original: str | os.PathLike, output: str | os.PathLike, folder: str | os.PathLike,
                 frames: int) -> tuple[str, str | None]:
    """Render ``original`` with no face replaced, stamped and encoded as ``output`` was (its manifest's
    id, label and encode settings, the same container), into ``folder``: the clip whose reading is the
    measures' floor. Returns (its path, a note or None); without a readable manifest the id is fixed and
    the encode the container's default, and the note says so.

    Only the manifest's typed encode fields are replayed, never its free-form encoder options: the
    sidecar comes with the file being scored, and an option such as x264's ``stats=`` names a file the
    encoder writes."""
    from ..disclosure.label import LabelSettings
    from ..disclosure.manifest import load_manifest
    from ..effect import Engine
    from ..sequences import is_sequence_pattern
    from ..video.encode import EncodeSettings
    from .clip import RenderSettings, render_clip

    note = None
    try:
        man = load_manifest(output)
        mid = str(man["id"])
        label = LabelSettings.from_dict(man.get("disclosure", {}).get("label"))
        enc = dict(man.get("settings", {}).get("render", {}).get("encode") or {})
        encode = EncodeSettings(**{k: enc.get(k) for k in ("codec", "bit_depth", "crf", "preset", "alpha")})
        if enc.get("options"):
            note = "floor encoded without the output's own encoder options (options from a file are not run)"
    except Exception as exc:  # no sidecar, or one this version cannot read: a floor is still worth having
        mid, label, encode = "facecomp.score", LabelSettings(), EncodeSettings()
        note = (f"floor rendered with a fixed watermark id and the container's default encode: the output's "
                f"manifest could not be read ({exc})")
    # without a manifest the output may not be facecomp's at all (an .mpg, say): the default container then
    suffix = os.path.splitext(os.path.basename(os.fspath(output)))[1] if note is None else ".mp4"
    path = os.path.join(os.fspath(folder), ("floor_%06d" if is_sequence_pattern(output) else "floor") + suffix)
    render_clip(original, path, Engine(label=label),
                RenderSettings(encode=encode, manifest_id=mid, end=frames, overwrite=True))
    return path, note
