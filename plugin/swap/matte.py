"""The replacement matte for compositors: ``facecomp render ... --matte PATH``.

Why a separate clip, rendered by the same path as every output: the matte leaves the tool, so it is
disclosed like any other frame. Each matte frame is the replacement mask (white where the face was
replaced, in proportion to its alpha; black elsewhere), and then goes through the one stamping step —
the SYNTHETIC label (so a matte cannot be passed off as unlabelled footage; the label box is not matte
data), the invisible watermark, the container tags, its own sidecar manifest and C2PA, exactly as the
main output. The link: the matte's manifest id is the main output's id + ``.matte``, and its manifest's
engine settings name the main output and its manifest id. Frame count, timing and timecode are the
source's, so the matte lines up with the output frame for frame in an editor. Any container the writer
supports works (ProRes 4444 / PNG sequences keep it lossless; H.264 is fine for a guide matte).
"""

from __future__ import annotations

import numpy as np

from ..frames import ProcessResult
from . import blend

MATTE_SUFFIX = ".matte"


class MatteProcessor:
    """A ``FrameProcessor`` whose output frame *is* the swap's replacement mask (same shape and dtype)."""

    name = "matte"

    def __init__(self, swap, main_output: str | None = None, main_manifest_id: str | None = None):
        self.swap = swap
        self.main_output = main_output
        self.main_manifest_id = main_manifest_id

    # the renderer's and the session's view of the processor: the swap's own
    @property
    def thread_safe(self) -> bool:
        return bool(getattr(self.swap, "thread_safe", False))

    @property
    def lookahead(self) -> int:
        return int(getattr(self.swap, "lookahead", 0) or 0)

    def for_clip(self) -> "MatteProcessor":
        make = getattr(self.swap, "for_clip", None)
        return MatteProcessor(make() if callable(make) else self.swap, self.main_output, self.main_manifest_id)

    def close(self) -> None:
        close = getattr(self.swap, "close", None)
        if callable(close):
            close()

    def process(self, frame: np.ndarray, ctx) -> ProcessResult:
        blend.check_frame(frame)
        sw = self.swap
        matte = np.zeros(frame.shape[:2], np.float32)
        faces = sw.faces_for(frame, ctx)
        replaced = []
        if faces:
            scratch = frame.copy()
            patches = sw.swapper.swap(frame, faces)
            target_stats = getattr(sw, "_target_stats", None)
            tstats = (target_stats(frame, ctx, {p.track_id for p in patches if p.track_id is not None})
                      if callable(target_stats) else {})
            for p in patches:
                if sw.blender.paste(scratch, p, ctx.index if ctx.index >= 0 else None, tstats.get(p.track_id),
                                    matte=matte) and p.track_id is not None:
                    replaced.append(int(p.track_id))
        out = blend.from_float(np.repeat(matte[..., None], 3, axis=2), frame.dtype)
        if frame.shape[2] == 4:  # an RGBA source: the matte is opaque (its alpha is the source's)
            out = np.concatenate([out, frame[..., 3:]], axis=2)
        return ProcessResult(np.ascontiguousarray(out), tuple(sorted(set(replaced))))

    def model_records(self) -> list[dict]:
        return list(self.swap.model_records())

    def settings_dict(self) -> dict:
        return {"matte_of": {"output": self.main_output, "manifest_id": self.main_manifest_id},
                "white": "replaced (alpha of the paste)", "swap": self.swap.settings_dict()}

    def source_identity(self) -> dict | None:
        ident = getattr(self.swap, "source_identity", None)
        return ident() if callable(ident) else None
