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


def frame_number(pattern: str | Path, name: str) -> int | None:
    """The frame number when ``name`` is exactly what ``pattern``'s name prints for it, else None.

    Exactly: ``f_%05d.png`` gives ``f_00007.png`` for 7, so ``f_0007.png``, ``f_000007.png``, ``f_7.png`` or
    ``xf_00007.png`` are not frames of it. This is the test for files the sequence owns (an overwrite removes
    the old render's extra frames with it, and nothing else).
    """
    pname = Path(pattern).name
    fields = list(FRAME_FIELD.finditer(pname))
    if not fields:
        return None
    parts = [re.escape(pname[i:j]) for i, j in zip([0] + [m.end() for m in fields],
                                                     [m.start() for m in fields] + [len(pname)])]
    rx = r" *(\d+)".join(parts)
    m = re.fullmatch(rx, name)
    if m is None:
        return None
    n = int(m.group(1))
    printed = FRAME_FIELD.sub(lambda f: f.group(0) % n, pname)
    return n if printed == name else None


def sequence_frames(pattern: str | Path) -> list[Path]:
    """The files in the pattern's folder that are frames of it (:func:`frame_number`), in frame order."""
    folder = Path(pattern).parent
    if not folder.is_dir():
        return []
    found = []
    for p in folder.iterdir():
        n = frame_number(pattern, p.name)
        if n is not None and not p.is_dir():
            found.append((n, p))
    return [p for _, p in sorted(found)]


def sequence_display_name(path: str | Path) -> str:
    """``frame_%05d.png`` -> ``frame_#####.png``: the padding notation compositors use."""
    p = Path(path)

    def hashes(m: re.Match) -> str:
        return "#" * int(re.sub(r"\D", "", m.group(0)) or "1")

    return str(p.with_name(FRAME_FIELD.sub(hashes, p.name)))
