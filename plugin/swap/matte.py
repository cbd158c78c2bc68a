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


class _OverSwap:
    """What both matte processors share: they wrap the swap processor, and per clip its clip worker."""

    def __init__(self, swap):
        self.swap = swap

    def _clip_swap(self):
        make = getattr(self.swap, "for_clip", None)
        return make() if callable(make) else self.swap

    def close(self) -> None:
        close = getattr(self.swap, "close", None)
        if callable(close):
            close()


class MatteProcessor(_OverSwap):
    """A ``FrameProcessor`` whose output frame *is* the swap's replacement mask (same shape and dtype)."""

    name = "matte"

    def __init__(self, swap, main_output: str | None = None, main_manifest_id: str | None = None):
        super().__init__(swap)
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
        return MatteProcessor(self._clip_swap(), self.main_output, self.main_manifest_id)

    def process(self, frame: np.ndarray, ctx) -> ProcessResult:
        blend.check_frame(frame)
        matte = np.zeros(frame.shape[:2], np.float32)
        # the swap's own paste, so the matte is the output's: the clip's hand track and glasses decision too
        replaced = self.swap.replace(frame, ctx, matte=matte).replaced_tracks
        out = blend.from_float(np.repeat(matte[..., None], 3, axis=2), frame.dtype)
        if frame.shape[2] == 4:  # an RGBA source: the matte is opaque (its alpha is the source's)
            out = np.concatenate([out, frame[..., 3:]], axis=2)
        return ProcessResult(np.ascontiguousarray(out), tuple(replaced))

    def summary(self) -> dict:
        """The swap's face selection and tracks (the renderer's "no face replaced" note reads them)."""
        fn = getattr(self.swap, "summary", None)
        return fn() if callable(fn) else {}

    def model_records(self) -> list[dict]:
        return list(self.swap.model_records())

    def settings_dict(self) -> dict:
        return {"matte_of": {"output": self.main_output, "manifest_id": self.main_manifest_id},
                "white": "replaced (alpha of the paste)", "swap": self.swap.settings_dict()}

    def source_identity(self) -> dict | None:
        ident = getattr(self.swap, "source_identity", None)
        return ident() if callable(ident) else None


class AlphaMatteProcessor(_OverSwap):
    """The swap with its matte in the frame's alpha channel (``--matte-alpha``): a face layer.

    Why a layer and not the rendered frame: a compositor refines the matte (erodes, feathers, tracks it)
    and comps the result over the original plate. So the colour is the new face's own wherever the matte
    is above zero, and the original elsewhere; over the original with the matte as straight (unassociated)
    alpha it gives the render itself, to the quantisation of the two channels. A source's own alpha is
    multiplied in; a host's premultiplied frames get the layer premultiplied by the new alpha. The frame
    then takes the one stamping step like any other: the label's box is made opaque in the alpha channel,
    so the label survives the comp, and the watermark and tags are the output's. The renderer gives this
    processor RGBA frames (:attr:`needs_alpha`); a host must send them.
    """

    needs_alpha = True

    def __getattr__(self, name: str):
        # everything else (name, statistics, summary, look-ahead, manifest records) is the swap's own
        if name == "swap":
            raise AttributeError(name)
        return getattr(self.swap, name)

    def for_clip(self) -> "AlphaMatteProcessor":
        return AlphaMatteProcessor(self._clip_swap())

    def process(self, frame: np.ndarray, ctx) -> ProcessResult:
        blend.check_frame(frame)
        mode = getattr(ctx, "alpha", "straight")
        if frame.shape[2] != 4 or mode == "none":
            from ..errors import SettingsError

            raise SettingsError("Matte in alpha writes the matte into the frame's alpha channel, and these frames "
                                "have none" if frame.shape[2] != 4 else "Matte in alpha: the host says the "
                                "frames' fourth channel is not alpha",
                                hint="give the effect RGBA frames, or use Matte view for the matte as a picture")
        matte = np.zeros(frame.shape[:2], np.float32)
        layer = frame.copy()
        result = self.swap.replace(frame, ctx, matte=matte, layer=layer)
        a = matte * blend.to_float(frame[..., 3])
        if mode == "premultiplied":  # the host's colour is straight x alpha: the layer's colours too
            rgb = blend.to_float(layer[..., :3]) * a[..., None]
            layer[..., :3] = blend.from_float(rgb, frame.dtype)
        layer[..., 3] = blend.from_float(a, frame.dtype)
        return ProcessResult(layer, tuple(result.replaced_tracks))

    def settings_dict(self) -> dict:
        return {**self.swap.settings_dict(), "matte_in_alpha": "straight alpha; colour: the face layer"}
