"""Check every disclosure layer of a file: visible label, container tags, sidecar manifest, C2PA, watermark.

The layers are independent on purpose (a crop removes the label, a remux strips tags and C2PA, a
re-encode keeps only pixels), so each is checked on its own and reported with a status:

- ``ok``       present and consistent;
- ``missing``  not there although it should be;
- ``invalid``  there but wrong (hash mismatch, broken signature, wrong tag value, label on only some frames);
- ``absent``   not there and not required (C2PA on an unsigned render, tags in a container without them).

:func:`inspect_file` builds the :class:`Report`; ``facecomp verify`` prints it and exits non-zero when a
layer that should be there is missing or invalid; ``facecomp inspect`` prints the same report for reading.
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

from ..errors import InvalidMediaError, MediaError
from ..wording import plural

LAYERS = ("label", "tags", "manifest", "c2pa", "watermark")
OK, MISSING, INVALID, ABSENT = "ok", "missing", "invalid", "absent"
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp", ".webp")
TAG_SUFFIXES = (".mp4", ".m4v", ".mov", ".mkv", ".webm")


@dataclass(frozen=True)
class LayerResult:
    """One layer's verdict; ``details`` is JSON-able."""

    layer: str
    status: str
    summary: str
    details: dict = field(default_factory=dict)

    @property
    def failed(self) -> bool:
        return self.status in (MISSING, INVALID)

    def to_dict(self) -> dict:
        return {"layer": self.layer, "status": self.status, "summary": self.summary, "details": self.details}


@dataclass(frozen=True)
class Report:
    path: str
    layers: tuple[LayerResult, ...]

    @property
    def ok(self) -> bool:
        return not any(layer.failed for layer in self.layers)

    @property
    def exit_code(self) -> int:
        return 0 if self.ok else 1

    def layer(self, name: str) -> LayerResult:
        return next(r for r in self.layers if r.layer == name)

    def to_dict(self) -> dict:
        return {"path": self.path, "ok": self.ok, "layers": {r.layer: r.to_dict() for r in self.layers}}

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, default=str)

    def format_text(self) -> str:
        mark = {OK: "ok", MISSING: "MISSING", INVALID: "INVALID", ABSENT: "-"}
        lines = [f"{self.path}"]
        for r in self.layers:
            lines.append(f"  {r.layer:<10} {mark.get(r.status, r.status):<8} {r.summary}")
        lines.append("  verdict    " + ("every expected layer is present and valid" if self.ok else
                                        "FAILED: " + ", ".join(f"{r.layer} {r.status}" for r in self.layers
                                                                if r.failed)))
        return "\n".join(lines)


# --------------------------------------------------------------------------------------------- layers

def _manifest_layer(path: Path, file_sha256: str) -> tuple[LayerResult, dict | None]:
    from . import manifest as mf
    side = mf.sidecar_path(path)
    if not side.is_file():
        return LayerResult("manifest", MISSING, f"no sidecar {side.name}", {"sidecar": str(side)}), None
    try:
        data = mf.load_manifest(side)
    except (ValueError, OSError) as exc:
        return LayerResult("manifest", INVALID, f"unreadable: {exc}", {"sidecar": str(side)}), None
    out = data.get("output") or {}
    recorded = out.get("sha256") or next((f.get("sha256") for f in out.get("files") or [] if f.get("sha256")), None)
    details = {"sidecar": str(side), "schema": data.get("schema"), "id": data.get("id"),
               "recorded_sha256": recorded, "file_sha256": file_sha256,
               "face_replaced": (data.get("replacement") or {}).get("face_replaced")}
    if not recorded:
        return LayerResult("manifest", INVALID, "the manifest records no output hash", details), data
    if recorded != file_sha256:
        return LayerResult("manifest", INVALID,
                           "output hash mismatch: the sidecar belongs to another file or the file was changed",
                           details), data
    return LayerResult("manifest", OK, f"{data.get('schema')} id {data.get('id')}, output hash matches",
                       details), data


def _tags_layer(path: Path, manifest: dict | None) -> LayerResult:
    from .metadata import IPTC_COMPOSITE_TRAINED, TAG_AIGC, TAG_SOURCE_TYPE, find_tag, parse_aigc
    try:
        import av
        with av.open(os.fspath(path)) as c:
            tags = dict(c.metadata)
    except (OSError, ValueError) as exc:
        return LayerResult("tags", INVALID, f"cannot read the container: {exc}")
    raw_aigc, source_type = find_tag(tags, TAG_AIGC), find_tag(tags, TAG_SOURCE_TYPE)
    details: dict[str, Any] = {"AIGC": raw_aigc, "DigitalSourceType": source_type}
    required = path.suffix.lower() in TAG_SUFFIXES
    if raw_aigc is None and source_type is None:
        return LayerResult("tags", MISSING if required else ABSENT,
                           "no AIGC / DigitalSourceType tags" + ("" if required else
                                                                 f" ({path.suffix} carries no custom tags)"),
                           details)
    problems = []
    aigc = parse_aigc(raw_aigc)
    if raw_aigc is None:
        problems.append("AIGC tag missing")
    elif aigc is None:
        problems.append("AIGC tag is not the Annex E JSON")
    elif str(aigc.get("Label")) != "1":
        problems.append(f"AIGC Label is {aigc.get('Label')!r}, not \"1\"")
    if source_type is None:
        problems.append("DigitalSourceType tag missing")
    elif source_type != IPTC_COMPOSITE_TRAINED:
        problems.append(f"DigitalSourceType is {source_type!r}")
    if aigc is not None and manifest is not None and manifest.get("id") and aigc.get("ProduceID") != manifest["id"]:
        problems.append("AIGC ProduceID differs from the manifest id")
    if problems:
        return LayerResult("tags", INVALID, "; ".join(problems), details)
    return LayerResult("tags", OK, "AIGC Label \"1\", IPTC compositeWithTrainedAlgorithmicMedia", details)


def _c2pa_layer(path: Path, manifest: dict | None, trust_anchors) -> LayerResult:
    try:
        from .c2pa_sign import C2paError, read_c2pa
        rep = read_c2pa(path, trust_anchors)
    except ImportError as exc:  # pragma: no cover - the extra is missing
        return LayerResult("c2pa", ABSENT, f"not checked: {exc}")
    except C2paError as exc:
        signed = bool(((manifest or {}).get("disclosure") or {}).get("c2pa", {}).get("signed"))
        return LayerResult("c2pa", MISSING if signed else ABSENT, f"not checked: {exc.message}")
    details = rep.to_dict()
    recorded = ((manifest or {}).get("disclosure") or {}).get("c2pa") or {}
    if not rep.present:
        if recorded.get("signed"):
            return LayerResult("c2pa", MISSING, "the manifest says the file was signed, but it carries no "
                                                "Content Credentials (remuxed or re-encoded?)", details)
        why = recorded.get("reason") or ("no sidecar to say whether it was signed" if manifest is None
                                         else "the render was not signed")
        return LayerResult("c2pa", ABSENT, f"no Content Credentials ({why})", details)
    if not rep.valid:
        return LayerResult("c2pa", INVALID, "Content Credentials do not validate: "
                           + (", ".join(rep.errors) or str(rep.validation_state)), details)
    if trust_anchors is not None and not rep.trusted:
        return LayerResult("c2pa", INVALID, "valid signature, but not issued under the given trust anchors",
                           details)
    src = "compositeWithTrainedAlgorithmicMedia" if any(
        t.endswith("compositeWithTrainedAlgorithmicMedia") for t in rep.digital_source_types) else "no source type"
    trust = "trusted" if rep.trusted else "valid (trust not checked: pass trust anchors)"
    return LayerResult("c2pa", OK, f"{trust}, signed by {rep.signer}, {src}", details)


def _watermark_layer(path: Path, manifest: dict | None, max_frames: int) -> LayerResult:
    from .watermark import decode_file, manifest_id_for
    try:
        dec = decode_file(path, max_frames=max_frames)
    except (MediaError, InvalidMediaError, ValueError) as exc:
        return LayerResult("watermark", INVALID, f"cannot decode frames: {exc}")
    details = dec.to_dict()
    if dec.payload is None:
        return LayerResult("watermark", MISSING, f"no watermark decoded ({dec.certainty()})", details)
    if not dec.payload.is_synthetic:
        return LayerResult("watermark", INVALID, f"unknown marker 0x{dec.payload.marker:04x}", details)
    expected = manifest_id_for(manifest["id"]) if manifest and manifest.get("id") else None
    details["manifest_id_expected"] = None if expected is None else f"{expected:08x}"
    if expected is not None and dec.payload.manifest_id != expected:
        return LayerResult("watermark", INVALID, f"watermark id {dec.payload.manifest_id:08x} does not link to "
                                                 f"the sidecar manifest ({expected:08x})", details)
    link = "links to the sidecar manifest" if expected is not None else "no manifest to link to"
    return LayerResult("watermark", OK, f"synthetic marker, id {dec.payload.manifest_id:08x} ({link}); "
                                        f"{dec.certainty()}", details)


def _sample_frames(path: Path, n: int) -> list:
    """``n`` decoded frames spread over the clip (the first, the last and between), as lumas in display
    orientation: the label detectors read grey, and a long clip is reached by seeks, not decoded whole."""
    import cv2

    from .watermark import sample_video_luma
    if path.suffix.lower() in IMAGE_SUFFIXES:
        img = cv2.imread(os.fspath(path), cv2.IMREAD_COLOR)
        if img is None:
            raise InvalidMediaError("cannot read the image", path=path)
        return [cv2.cvtColor(img, cv2.COLOR_BGR2RGB)]
    return list(sample_video_luma(path, n, burst=1))


def _label_layer(path: Path, manifest: dict | None, frames: int, method: str = "auto") -> LayerResult:
    try:
        from .detect_label import find_label
    except ImportError:  # pragma: no cover - the detector is another component
        return LayerResult("label", ABSENT, "not checked: the label detector is not installed")
    from .label import LabelSettings
    settings = None
    claimed = ((manifest or {}).get("disclosure") or {}).get("label")
    if claimed:
        try:
            settings = LabelSettings.from_dict(claimed)
        except (ValueError, TypeError):
            settings = None
    try:
        sample = _sample_frames(path, frames)
    except (MediaError, InvalidMediaError) as exc:
        return LayerResult("label", INVALID, f"cannot decode frames: {exc}")
    findings = [find_label(f, settings, method=method) for f in sample]
    seen = sum(1 for f in findings if f.found)
    details = {"frames_checked": len(findings), "frames_with_label": seen,
               "findings": [f.to_dict() for f in findings]}
    method = findings[0].method if findings else "none"
    if not findings:
        return LayerResult("label", MISSING, "no frame could be decoded", details)
    if seen == 0:
        return LayerResult("label", MISSING, f"no SYNTHETIC label on any of {plural(len(findings), 'sampled frame')} "
                                             f"({method}); cropped or covered?", details)
    if seen < len(findings):
        return LayerResult("label", INVALID, f"label on only {seen} of {plural(len(findings), 'sampled frame')} ({method})",
                           details)
    corners = sorted({f.corner for f in findings if f.corner})
    return LayerResult("label", OK, f"found on {seen} of {plural(len(findings), 'sampled frame')} ({method}, "
                                    f"{'/'.join(corners) or 'corner unknown'})", details)


def inspect_file(path: str | os.PathLike, trust_anchors: str | os.PathLike | bytes | Sequence | None = None,
                 *, label_frames: int = 5, watermark_frames: int = 60,
                 layers: Sequence[str] = LAYERS, label_method: str = "auto") -> Report:
    """Check each disclosure layer of ``path``. Never raises for a missing layer; raises
    :class:`~facecomp.errors.MediaError` only when the file itself cannot be read.

    ``label_method``: "auto" (OCR with tesseract when installed, else our label's signature), "ocr",
    "signature" (see :func:`facecomp.disclosure.detect_label.find_label`)."""
    from .manifest import sha256_file
    unknown = [name for name in layers if name not in LAYERS]
    if unknown:
        raise ValueError(f"unknown layer(s) {unknown}; choose from {LAYERS}")
    target = resolve_target(path)
    if target.pattern is not None:
        return _inspect_sequence(target, layers, label_frames, watermark_frames, label_method)
    p = target.files[0]
    mlayer, manifest = _manifest_layer(p, sha256_file(p))
    results = []
    for name in LAYERS:
        if name not in layers:
            continue
        if name == "label":
            results.append(_label_layer(p, manifest, label_frames, label_method))
        elif name == "tags":
            results.append(_tags_layer(p, manifest))
        elif name == "manifest":
            results.append(mlayer)
        elif name == "c2pa":
            results.append(_c2pa_layer(p, manifest, trust_anchors))
        elif name == "watermark":
            results.append(_watermark_layer(p, manifest, watermark_frames))
    return Report(os.fspath(p), tuple(results))


# ------------------------------------------------------------------------------------ image sequences

_NUMBERED = re.compile(r"^(.*?)(\d+)(\.[A-Za-z0-9]+)$")


@dataclass(frozen=True)
class Target:
    """What to verify: one file, a whole sequence, or one frame of a sequence (with the sequence's sidecar)."""

    display: str
    files: tuple[Path, ...]  # one file; every frame of a sequence; or the one frame asked about
    pattern: str | None = None  # the sequence's printf pattern (f_%05d.png) when it is part of one
    sidecar: Path | None = None


def resolve_target(path: str | os.PathLike) -> Target:
    """A file, a sequence pattern (``f_%05d.png``), a folder of frames, or one frame of a sequence.

    One frame of a sequence is recognised by the sequence's sidecar (``f_#####.png.synthetic.json``) beside
    it; a folder is taken as the largest run of numbered images in it.
    """
    from ..sequences import is_sequence_pattern
    from .manifest import sidecar_path

    p = Path(path)
    if is_sequence_pattern(p):
        files = _pattern_files(p)
        if not files:
            raise MediaError("no frames match the sequence pattern", path=p,
                             hint="check the folder and the %0Nd padding")
        return Target(os.fspath(p), tuple(files), os.fspath(p), sidecar_path(p))
    if p.is_dir():
        groups: dict[tuple[str, int, str], list[Path]] = {}
        for f in p.iterdir():
            m = _NUMBERED.match(f.name)
            if f.is_file() and m and f.suffix.lower() in IMAGE_SUFFIXES and not f.name.startswith("."):
                groups.setdefault((m.group(1), len(m.group(2)), m.group(3)), []).append(f)
        if not groups:
            raise MediaError("the folder holds no numbered image frames", path=p,
                             hint="give a video file, a pattern like f_%05d.png, or a folder of frames")
        (prefix, width, suffix), files = max(groups.items(), key=lambda kv: len(kv[1]))
        pattern = p / f"{prefix}%0{width}d{suffix}"
        return Target(os.fspath(pattern), tuple(sorted(files)), os.fspath(pattern), sidecar_path(pattern))
    if not p.is_file():
        raise MediaError("no such file", path=p, hint="give the rendered output file, sequence pattern or folder")
    m = _NUMBERED.match(p.name)
    if m and p.suffix.lower() in IMAGE_SUFFIXES and not sidecar_path(p).is_file():
        pattern = p.with_name(f"{m.group(1)}%0{len(m.group(2))}d{m.group(3)}")
        if sidecar_path(pattern).is_file():
            return Target(os.fspath(p), (p,), os.fspath(pattern), sidecar_path(pattern))
    return Target(os.fspath(p), (p,), None, sidecar_path(p))


def _pattern_files(pattern: Path) -> list[Path]:
    m = re.search(r"%0?(\d*)d", pattern.name)
    assert m is not None
    prefix, suffix = pattern.name[: m.start()], pattern.name[m.end():]
    width = int(m.group(1) or 0)
    out = []
    if not pattern.parent.is_dir():
        return out
    for f in pattern.parent.iterdir():
        if f.name.startswith(prefix) and f.name.endswith(suffix) and f.is_file():
            mid = f.name[len(prefix): len(f.name) - len(suffix) if suffix else None]
            if mid.isdigit() and (not width or len(mid) == width):
                out.append((int(mid), f))
    return [f for _, f in sorted(out)]


def _read_image(path: Path):
    import cv2
    img = cv2.imread(os.fspath(path), cv2.IMREAD_UNCHANGED)
    if img is None:
        raise InvalidMediaError("cannot read the image", path=path)
    if img.dtype != "uint8":  # 16-bit frames: the label and watermark are read at 8 bits
        img = (img.astype("float32") / 257.0 + 0.5).astype("uint8")
    if img.ndim == 2:
        return cv2.cvtColor(img, cv2.COLOR_GRAY2RGB)
    return cv2.cvtColor(img, cv2.COLOR_BGRA2RGB if img.shape[2] == 4 else cv2.COLOR_BGR2RGB)


def _spread(items: Sequence, n: int) -> list:
    if len(items) <= n:
        return list(items)
    idx = sorted({round(i * (len(items) - 1) / (n - 1)) for i in range(n)}) if n > 1 else [0]
    return [items[i] for i in idx]


def _inspect_sequence(target: Target, layers: Sequence[str], label_frames: int, watermark_frames: int,
                      label_method: str) -> Report:
    """The layers of an image sequence (or of one of its frames): images carry no tags and no C2PA here."""
    from . import manifest as mf
    from .detect_label import find_label
    from .label import LabelSettings
    from .watermark import decode_frames, manifest_id_for

    manifest = None
    results: list[LayerResult] = []
    side = target.sidecar
    if side is not None and side.is_file():
        try:
            manifest = mf.load_manifest(side)
        except (ValueError, OSError) as exc:
            mres = LayerResult("manifest", INVALID, f"unreadable: {exc}", {"sidecar": str(side)})
        else:
            recorded = {f.get("name"): f.get("sha256") for f in (manifest.get("output") or {}).get("files") or []}
            checked = [f for f in target.files]
            bad = [f.name for f in checked if recorded.get(f.name) != mf.sha256_file(f)]
            missing = sorted(set(recorded) - {f.name for f in target.files}) if len(target.files) > 1 else []
            details = {"sidecar": str(side), "id": manifest.get("id"), "files_checked": len(checked),
                       "files_recorded": len(recorded), "mismatched": bad[:20], "missing": missing[:20]}
            if bad:
                mres = LayerResult("manifest", INVALID, f"{len(bad)} of {len(checked)} frame files differ from "
                                                        f"the hashes the manifest records", details)
            elif missing:
                mres = LayerResult("manifest", INVALID, f"{len(missing)} frame files the manifest records are "
                                                        f"not there", details)
            else:
                mres = LayerResult("manifest", OK, f"{manifest.get('schema')} id {manifest.get('id')}, "
                                                   f"{plural(len(checked), 'frame file hash', 'frame file hashes')} match", details)
    else:
        mres = LayerResult("manifest", MISSING, f"no sidecar {side.name if side else ''}",
                           {"sidecar": str(side) if side else None})
    for name in LAYERS:
        if name not in layers:
            continue
        if name == "manifest":
            results.append(mres)
        elif name == "tags":
            results.append(LayerResult("tags", ABSENT, "image files carry no container tags (the manifest does)"))
        elif name == "c2pa":
            results.append(LayerResult("c2pa", ABSENT, "C2PA is applied to MP4/MOV outputs, not image sequences"))
        elif name == "label":
            claimed = ((manifest or {}).get("disclosure") or {}).get("label")
            try:
                settings = LabelSettings.from_dict(claimed) if claimed else None
            except (ValueError, TypeError):
                settings = None
            sample = [_read_image(f) for f in _spread(target.files, label_frames)]
            findings = [find_label(f, settings, method=label_method) for f in sample]
            seen = sum(1 for f in findings if f.found)
            details = {"frames_checked": len(findings), "frames_with_label": seen,
                       "findings": [f.to_dict() for f in findings]}
            how = findings[0].method if findings else "none"
            if seen == len(findings):
                results.append(LayerResult("label", OK, f"found on {seen} of {plural(len(findings), 'sampled frame')} ({how})",
                                           details))
            else:
                results.append(LayerResult("label", MISSING if seen == 0 else INVALID,
                                           f"label on {seen} of {plural(len(findings), 'sampled frame')} ({how})", details))
        elif name == "watermark":
            dec = decode_frames([_read_image(f) for f in _spread(target.files, watermark_frames)], watermark_frames)
            details = dec.to_dict()
            if dec.payload is None or not dec.payload.is_synthetic:
                results.append(LayerResult("watermark", MISSING, f"no watermark decoded ({dec.certainty()})",
                                           details))
                continue
            expected = manifest_id_for(manifest["id"]) if manifest and manifest.get("id") else None
            if expected is not None and dec.payload.manifest_id != expected:
                results.append(LayerResult("watermark", INVALID, f"watermark id {dec.payload.manifest_id:08x} does "
                                                                 f"not link to the manifest ({expected:08x})", details))
            else:
                link = "links to the sidecar manifest" if expected is not None else "no manifest to link to"
                results.append(LayerResult("watermark", OK, f"synthetic marker, id {dec.payload.manifest_id:08x} "
                                                            f"({link}); {dec.certainty()}", details))
    return Report(target.display, tuple(results))
