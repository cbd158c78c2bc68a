"""The sidecar manifest ``<output>.synthetic.json``: what was changed, by what, from what.

Versioned (``schema``) so readers can rely on its fields. It names the source identity only by hash,
never by pixels, and records the output's sha256 so a manifest cannot be moved onto another file
unnoticed. Written atomically after the media file is final (after C2PA signing, which rewrites it).
"""

from __future__ import annotations

import datetime as _dt
import json
import os
import uuid
from pathlib import Path

from .. import TOOL_NAME, __version__
from ..errors import OutputError
from ..hashing import sha256_file  # noqa: F401  (re-exported: manifests name files by it)
from ..sequences import is_sequence_pattern, sequence_display_name

SCHEMA = "facecomp.manifest/1"
SUFFIX = ".synthetic.json"


def new_manifest_id() -> str:
    return str(uuid.uuid4())


def sidecar_path(output: str | os.PathLike) -> Path:
    """``clip.mp4`` -> ``clip.mp4.synthetic.json``; ``f_%05d.png`` -> ``f_#####.png.synthetic.json``."""
    p = Path(output)
    if is_sequence_pattern(p):
        p = Path(sequence_display_name(p))
    return p.with_name(p.name + SUFFIX)


def frame_ranges(indices) -> list[list[int]]:
    """Sorted frame indices -> inclusive ``[first, last]`` ranges."""
    out: list[list[int]] = []
    for i in sorted(set(int(x) for x in indices)):
        if out and i == out[-1][1] + 1:
            out[-1][1] = i
        else:
            out.append([i, i])
    return out


def build_manifest(*, manifest_id: str, input_path: str, input_sha256: str | None, output_path: str,
                   output_files: list[dict], settings: dict, models: list[dict], source_identity: dict | None,
                   replaced_frames: dict[int, list[int]], frames_total: int, first_frame: int,
                   disclosure: dict, warnings: list[str] | None = None) -> dict:
    """Assemble the manifest dict. ``replaced_frames`` maps track id -> output frame indices."""
    all_frames = sorted({f for frames in replaced_frames.values() for f in frames})
    return {
        "schema": SCHEMA,
        "id": manifest_id,
        "synthetic": True,
        "tool": {"name": TOOL_NAME, "version": __version__},
        "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "input": {"path": os.path.basename(input_path), "sha256": input_sha256},
        "output": {"path": os.path.basename(output_path), "files": output_files},
        "settings": settings,
        "models": models,
        "source_identity": source_identity,
        "replacement": {
            "face_replaced": bool(all_frames),
            "note": None if all_frames else "no face was replaced in this render (no swapper configured or no face selected)",
            "frames_total": frames_total,
            "first_source_frame": first_frame,
            "ranges": frame_ranges(all_frames),
            "tracks": {str(t): frame_ranges(f) for t, f in sorted(replaced_frames.items())},
        },
        "disclosure": disclosure,
        "warnings": list(warnings or []),
    }


def write_manifest(output: str | os.PathLike, manifest: dict, *,
                   directory: str | os.PathLike | None = None) -> Path:
    """Write the sidecar next to ``output`` atomically (temp file + rename); returns the path written.

    ``directory``: the folder to write it through instead of ``output``'s (the queue's join writes through
    its held output folder, ``/proc/self/fd/N``); messages still name the sidecar beside ``output``.
    """
    from ..atomic import atomic_write

    dest = sidecar_path(output)
    target = Path(directory) / dest.name if directory is not None else dest
    try:  # the umask's mode, as the media itself gets
        atomic_write(target, json.dumps(manifest, indent=2, ensure_ascii=False) + "\n")
    except OSError as exc:
        raise OutputError(f"cannot write the manifest ({exc.strerror or exc})", path=dest,
                          hint="check free space and permissions") from exc
    return target


def load_manifest(path: str | os.PathLike) -> dict:
    """Load a manifest by its own path or by the media path it belongs to."""
    p = Path(path)
    if not p.name.endswith(SUFFIX):
        p = sidecar_path(p)
    with open(p, encoding="utf-8") as f:
        data = json.load(f)
    if not isinstance(data, dict) or not str(data.get("schema", "")).startswith("facecomp.manifest/"):
        raise ValueError(f"{p}: not a facecomp manifest (schema missing)")
    return data
