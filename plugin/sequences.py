"""Image-sequence path notation (``frame_%05d.png``), shared by the video layer and the disclosure files.

Why a module of its own: the writer (``facecomp.video``) needs the stamp and tags from
``facecomp.disclosure``, and the manifest and the verifier name sequence outputs; with the notation here
neither package imports the other in a circle. ``facecomp.video.info`` re-exports both functions.
"""

from __future__ import annotations

import re
from pathlib import Path

#: the printf-style frame-number field of a sequence path (``%d``, ``%05d``, ``%5d``)
FRAME_FIELD = re.compile(r"%0?\d*d")


def is_sequence_pattern(path: str | Path) -> bool:
    """True for printf-style image-sequence paths such as ``shots/frame_%05d.png``."""
    return bool(FRAME_FIELD.search(Path(path).name))


def sequence_display_name(path: str | Path) -> str:
    """``frame_%05d.png`` -> ``frame_#####.png``: the padding notation compositors use."""
    p = Path(path)

    def hashes(m: re.Match) -> str:
        return "#" * int(re.sub(r"\D", "", m.group(0)) or "1")

    return str(p.with_name(FRAME_FIELD.sub(hashes, p.name)))
