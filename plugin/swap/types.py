"""The swapper contract: what every face swapper (morph, .dfm, inswapper) gives the blending stage.

A swapper turns the selected faces of one frame into :class:`SwapPatch` es: the new face in the
swapper's own working space (a frame crop for the morph, an aligned square for the ONNX models), the
target's pixels and landmarks in that same space, and the affine that maps the space back into the
frame. Masks, colour transfer and paste-back are then the same code for every swapper.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol, Sequence, runtime_checkable

import numpy as np


@runtime_checkable
class FaceLike(Protocol):
    """The part of ``facecomp.faces.types.Face`` a swapper reads."""

    bbox: object
    landmarks: np.ndarray   # (468|478, 2) float32, frame pixels
    track_id: int | None


@dataclass(frozen=True, eq=False)
class SwapPatch:
    """One swapped face, ready for masks, colour and paste-back (all arrays float32 0..1)."""

    face: np.ndarray        # (h, w, 3) the new face
    mask: np.ndarray        # (h, w) where the swapper produced face: coverage or the model's own mask
    target: np.ndarray      # (h, w, 3) the target frame's pixels in the same space
    landmarks: np.ndarray   # (468, 2) the target's landmarks in the same space
    to_frame: np.ndarray    # (2, 3) affine: patch pixel -> frame pixel
    track_id: int | None = None
    #: where the face's colours count for colour statistics and relighting, when that is more than
    #: ``mask`` (texels the swapper drew but chose not to show); None: ``mask``
    stats_mask: np.ndarray | None = None

    @property
    def translation_only(self) -> tuple[int, int] | None:
        """(x0, y0) when the patch is an unscaled, integer-offset frame crop (no resampling needed)."""
        m = self.to_frame
        if np.allclose(m[:, :2], np.eye(2)) and np.allclose(m[:, 2], np.round(m[:, 2])):
            return int(round(m[0, 2])), int(round(m[1, 2]))
        return None


class Swapper(Protocol):
    """Replaces faces. ``swap`` receives the full frame (any supported dtype) and all selected faces of it,
    so ONNX swappers can run them as one batch."""

    name: str
    #: should the target's own open mouth and eyes show through (True for the morph, whose source photo
    #: has a closed mouth and fixed gaze; False for models that generate them)
    target_interiors: bool

    def swap(self, frame: np.ndarray, faces: Sequence[FaceLike]) -> list[SwapPatch]: ...
    def model_records(self) -> list[dict]: ...
    def settings_dict(self) -> dict: ...
