"""Machine-readable disclosure in the container: GB 45438-2025 ``AIGC`` tag, IPTC source type, comment.

MP4/MOV drop custom keys unless the muxer runs with ``movflags=use_metadata_tags``; Matroska keeps them
natively. Whatever the container, every write is read back and a missing or altered tag is an error
(:class:`~facecomp.errors.MetadataError`), because a file that silently lost its disclosure is worse
than no file.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, asdict

import av

from .. import TOOL_NAME, __version__
from ..errors import InvalidMediaError, MetadataError

IPTC_COMPOSITE_TRAINED = "http://cv.iptc.org/newscodes/digitalsourcetype/compositeWithTrainedAlgorithmicMedia"
TAG_AIGC = "AIGC"
TAG_SOURCE_TYPE = "DigitalSourceType"
TAG_MANIFEST = "SyntheticManifest"

# Containers whose muxers keep arbitrary string tags (mov/mp4 with use_metadata_tags).
TAGGABLE_FORMATS = ("mp4", "mov", "matroska", "webm", "ipod")


@dataclass(frozen=True)
class AigcIdentity:
    """Who produced and who propagates the content (GB 45438-2025 Annex E fields).

    ``content_producer`` defaults to the tool; studios set their own producer code. Propagator fields stay
    empty unless a distributor fills them.
    """

    content_producer: str = f"{TOOL_NAME}/{__version__}"
    content_propagator: str = ""
    propagate_id: str = ""

    def to_dict(self) -> dict:
        return asdict(self)


def aigc_json(produce_id: str, identity: AigcIdentity = AigcIdentity(), reserved1: str = "") -> str:
    """The Annex E JSON: ``{"AIGC": {"Label": "1", ...}}`` (Label "1": the content is AI-generated)."""
    body = {
        "Label": "1",
        "ContentProducer": identity.content_producer,
        "ProduceID": produce_id,
        "ReservedCode1": reserved1,
        "ContentPropagator": identity.content_propagator,
        "PropagateID": identity.propagate_id,
        "ReservedCode2": "",
    }
    return json.dumps({"AIGC": body}, ensure_ascii=False, separators=(",", ":"))


def human_text(replaced: bool) -> str:
    what = "a face in this video was replaced" if replaced else "this video passed through a face-replacement tool"
    return (f"SYNTHETIC / AI-altered: {what} by {TOOL_NAME} {__version__}. "
            f"Every frame carries a visible label; see the .synthetic.json manifest for provenance.")


def disclosure_tags(manifest_id: str, manifest_name: str, *, replaced: bool,
                    identity: AigcIdentity = AigcIdentity(), reserved1: str = "") -> dict[str, str]:
    """All container tags facecomp writes, as one dict (the writer sets them, then reads them back)."""
    text = human_text(replaced)
    return {
        TAG_AIGC: aigc_json(manifest_id, identity, reserved1),
        TAG_SOURCE_TYPE: IPTC_COMPOSITE_TRAINED,
        "comment": text,
        "description": text,
        TAG_MANIFEST: f"{manifest_name}#{manifest_id}",
    }


def container_options(fmt_name: str) -> dict[str, str]:
    """Muxer options needed for tags to survive in this container."""
    if fmt_name in ("mp4", "mov", "ipod") or "mp4" in fmt_name or "mov" in fmt_name:
        return {"movflags": "use_metadata_tags"}
    return {}


def read_container_tags(path: str | os.PathLike) -> dict[str, str]:
    """Container-level tags as FFmpeg reads them (keys as written; Matroska keys read back upper-case)."""
    try:
        with av.open(os.fspath(path)) as c:
            return dict(c.metadata)
    except (av.error.FFmpegError, OSError) as exc:
        raise InvalidMediaError(f"cannot read tags ({exc})", path=path) from exc


def _lookup(tags: dict[str, str], key: str) -> str | None:
    if key in tags:
        return tags[key]
    low = {k.lower(): v for k, v in tags.items()}
    return low.get(key.lower())


def verify_tags(path: str | os.PathLike, expected: dict[str, str], display: str | os.PathLike | None = None
                ) -> dict[str, str]:
    """Read the tags back and raise :class:`MetadataError` naming every missing or altered one.

    ``display`` is the name to put in the error (the final output name, when ``path`` is a temp file).
    """
    found = read_container_tags(path)
    problems = []
    for key, value in expected.items():
        got = _lookup(found, key)
        if got is None:
            problems.append(f"{key} missing")
        elif got != value:
            problems.append(f"{key} altered")
    if problems:
        raise MetadataError("disclosure tags did not survive the write: " + ", ".join(problems),
                            path=display or path,
                            hint="use an MP4, MOV or MKV output; report this if it persists")
    return found


def parse_aigc(value: str | None) -> dict | None:
    """The Annex E object from a tag value, or None when absent or malformed."""
    if not value:
        return None
    try:
        data = json.loads(value)
    except ValueError:
        return None
    if not isinstance(data, dict) or not isinstance(data.get("AIGC"), dict):
        return None
    return data["AIGC"]


def find_tag(tags: dict[str, str], key: str) -> str | None:
    """Case-insensitive tag lookup (Matroska upper-cases keys)."""
    return _lookup(tags, key)
