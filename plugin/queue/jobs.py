"""Job files (schema ``facecomp.job/1``): what to render, validated before anything is queued.

A job names an ``input``, an ``output``, the effect ``[settings]`` (the keys of a ``--save-settings``
file, validated by :meth:`facecomp.settings.EffectSettings.from_dict`), an optional ``manifest_id`` (fixed,
so a re-run or a resumed run gives the same watermark id and the same frames), an optional source range
(``start``/``end``: frame or timecode), an optional ``storage`` folder for segments (shared storage for
the Ray backend) and ``[options]``. Job files come from other people's tools and scripts, so reading one
is defensive: bounded size, strict UTF-8, bounded nesting, duplicate keys refused, every path resolved and
kept inside the queue's allowed roots when it has them.
"""

from __future__ import annotations

import json
import math
import os
import re
import tomllib
from collections.abc import Iterable
from dataclasses import dataclass, field, replace
from pathlib import Path, PurePath
from typing import Any, Self

from ..errors import OutputError, SettingsError

SCHEMA = "facecomp.job/1"
MAX_BYTES = 1 << 20  # a job is a few hundred bytes; anything near this is not a job file
MAX_DEPTH = 6
OUTPUT_SUFFIXES = (".mp4", ".m4v", ".mov", ".mkv")
_MANIFEST_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:-]{0,127}$")
_TOP_KEYS = {"schema", "name", "input", "output", "settings", "manifest_id", "start", "end", "storage", "options"}


@dataclass(frozen=True)
class JobOptions:
    priority: int = 0  # higher runs first
    retries: int = 2  # failed segment renders retried this many times per job, then the job fails
    segment_frames: int = 48  # about this many frames per segment (boundaries follow source keyframes)
    overwrite: bool = False  # replace an existing output at the end

    def to_dict(self) -> dict:
        return {"priority": self.priority, "retries": self.retries, "segment_frames": self.segment_frames,
                "overwrite": self.overwrite}


_OPTION_LIMITS = {"priority": (-1000, 1000), "retries": (0, 20), "segment_frames": (1, 100_000)}


@dataclass(frozen=True)
class Job:
    """A validated job: every path absolute and checked, the settings as a validated dict."""

    name: str
    input: str
    output: str
    settings: dict = field(default_factory=dict)
    manifest_id: str | None = None
    start: int | str | None = None
    end: int | str | None = None
    storage: str | None = None
    options: JobOptions = field(default_factory=JobOptions)

    def to_dict(self) -> dict:
        return {"schema": SCHEMA, "name": self.name, "input": self.input, "output": self.output,
                "settings": self.settings, "manifest_id": self.manifest_id, "start": self.start, "end": self.end,
                "storage": self.storage, "options": self.options.to_dict()}

    def with_manifest_id(self, manifest_id: str) -> Job:
        return replace(self, manifest_id=manifest_id)

    @classmethod
    def from_stored(cls, d: dict) -> Job:
        """A job as the queue stored it (already validated when it was added)."""
        return cls(name=d["name"], input=d["input"], output=d["output"], settings=dict(d.get("settings") or {}),
                   manifest_id=d.get("manifest_id"), start=d.get("start"), end=d.get("end"),
                   storage=d.get("storage"), options=JobOptions(**(d.get("options") or {})))


def _err(where: str | os.PathLike | None, message: str, hint: str | None = None) -> SettingsError:
    return SettingsError(message, path=where, hint=hint)


def _depth(value: Any, level: int = 0) -> int:
    if level > MAX_DEPTH:
        return level
    if isinstance(value, dict):
        return max([_depth(v, level + 1) for v in value.values()] + [level + 1])
    if isinstance(value, list):
        return max([_depth(v, level + 1) for v in value] + [level + 1])
    return level


def _no_duplicates(pairs):
    out = {}
    for k, v in pairs:
        if k in out:
            raise ValueError(f"duplicate key {k!r}")
        out[k] = v
    return out


def read_job_file(path: str | os.PathLike) -> dict:
    """The raw table of a job file (.toml or .json), refusing hostile files with a clear message."""
    p = Path(path)
    if p.suffix.lower() not in (".toml", ".json"):
        raise _err(p, "a job file is .toml or .json")
    try:
        if not p.is_file():
            raise _err(p, "no such job file")
        size = p.stat().st_size
        if size > MAX_BYTES:
            raise _err(p, f"the job file is {size} bytes; job files are limited to {MAX_BYTES} bytes")
        raw = p.read_bytes()[:MAX_BYTES + 1]
    except OSError as exc:
        raise _err(p, f"cannot read the job file ({exc.strerror or exc})") from exc
    if len(raw) > MAX_BYTES:
        raise _err(p, f"the job file is over {MAX_BYTES} bytes")
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise _err(p, f"the job file is not UTF-8 (byte {exc.start})", hint="save it as UTF-8") from exc
    if "\x00" in text:
        raise _err(p, "the job file holds NUL characters (binary or UTF-16?)", hint="save it as UTF-8")
    try:
        if p.suffix.lower() == ".json":
            data = json.loads(text, object_pairs_hook=_no_duplicates)
        else:
            data = tomllib.loads(text)
    except RecursionError as exc:
        raise _err(p, "the job file is nested too deeply") from exc
    except (ValueError, tomllib.TOMLDecodeError) as exc:
        raise _err(p, f"the job file does not parse: {exc}") from exc
    if not isinstance(data, dict):
        raise _err(p, "the job file must hold a table (an object) at the top")
    if _depth(data) > MAX_DEPTH:
        raise _err(p, f"the job file is nested deeper than {MAX_DEPTH} levels")
    bad = _non_finite(data)
    if bad is not None:
        key, value = bad
        raise _err(p, f"{key}: {value!r} is not a finite number",
                   hint="NaN and infinities are not settings; give a number")
    return data


def _non_finite(value: Any, key: str = "") -> tuple[str, float] | None:
    """The first NaN or infinity in a parsed job table, with its dotted key.

    json reads ``NaN``/``Infinity`` (and overflows such as ``1e999``) as floats, TOML has ``nan``/``inf``:
    they pass range checks written as ``not lo <= x <= hi`` one way or the other, so none reaches them.
    """
    if isinstance(value, float) and not math.isfinite(value):
        return key or "(top)", value
    if isinstance(value, dict):
        items = ((f"{key}.{k}" if key else str(k), v) for k, v in value.items())
    elif isinstance(value, list):
        items = ((f"{key}[{i}]", v) for i, v in enumerate(value))
    else:
        return None
    for k, v in items:
        found = _non_finite(v, k)
        if found is not None:
            return found
    return None


def _within(path: str, root: str) -> bool:
    try:
        return os.path.commonpath([path, root]) == root
    except ValueError:
        return False


class PathPolicy:
    """Resolves job paths against the job file's folder and keeps them inside the allowed roots.

    With roots set, a job path must be relative (to the job file's folder), must not climb with ``..``,
    and must resolve (symlinks followed) inside one of the roots. Without roots, any path is taken.
    """

    def __init__(self, roots: Iterable[str | os.PathLike] = ()):
        self.roots = tuple(os.path.realpath(os.fspath(r)) for r in roots)

    def resolve(self, raw: Any, key: str, base_dir: Path, where, *, must_exist: bool) -> str:
        if not isinstance(raw, str) or not raw.strip():
            raise _err(where, f"{key}: expected a path (a non-empty string), got {type(raw).__name__}")
        if "\x00" in raw or len(raw) > 4096:
            raise _err(where, f"{key}: not a usable path")
        pure = PurePath(os.path.expanduser(raw) if not self.roots else raw)
        if self.roots:
            if pure.is_absolute():
                raise _err(where, f"{key}: absolute path {raw!r} refused: this queue only takes paths relative to "
                                  f"the job file, inside its allowed roots", hint=f"roots: {', '.join(self.roots)}")
            if ".." in pure.parts:
                raise _err(where, f"{key}: {raw!r} climbs out with '..'; refused in a queue with allowed roots")
        full = os.path.realpath(os.path.join(base_dir, pure))
        if self.roots and not any(_within(full, r) for r in self.roots):
            raise _err(where, f"{key}: {raw!r} resolves to {full}, outside the queue's allowed roots "
                              f"(a symlink leading out?)", hint=f"roots: {', '.join(self.roots)}")
        if must_exist and not os.path.exists(full):
            raise _err(where, f"{key}: no such file {full}")
        return full


    def _inside_now(self, path: str, real_dir: str, key: str, where) -> None:
        full = os.path.join(real_dir, os.path.basename(path))
        if not any(_within(full, r) for r in self.roots):
            raise _err(where or path, f"{key}: {path} now resolves to {full}, outside the queue's allowed roots "
                                      f"(a folder on its path was replaced by a symlink since the job was added?)",
                       hint=f"roots: {', '.join(self.roots)}")

    def hold_folder(self, path: str, key: str, where=None) -> HeldFolder:
        """A stored output path checked again before it is written, and the folder that was checked held
        open for writing ``path`` through it.

        Why: a folder on the path may have become a symlink out of the roots since ``add``, and between a
        check by path and the write it still can. Only the folder is resolved: the final rename replaces a
        symlink under the name itself, it does not follow it. The folder is resolved once, checked, opened (``O_DIRECTORY``, the last part not followed)
        and the opened folder compared with what was checked (same inode, and the kernel's own name for it
        inside the roots); every write then goes through ``/proc/self/fd/N``, which Linux resolves to that
        folder whatever happens to the path since. Without roots, or without ``/proc/self/fd`` (not
        Linux), nothing is held and writes go by path as before (the window stays open there).
        """
        folder = os.path.dirname(path)
        if not self.roots:
            return HeldFolder(Path(folder))
        real = os.path.realpath(folder)
        self._inside_now(path, real, key, where)
        if not os.path.isdir("/proc/self/fd"):
            return HeldFolder(Path(folder))
        try:
            fd = os.open(real, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC)
        except OSError as exc:
            raise OutputError(f"cannot open the output's folder ({exc.strerror or exc})", path=folder,
                              hint="check that it exists and can be written") from exc
        held = HeldFolder(Path(folder), fd)
        try:
            opened = os.readlink(held.write_dir)
            same = os.path.samestat(os.fstat(fd), os.stat(real))
        except OSError:
            opened, same = "?", False
        if not same or not any(_within(opened, r) for r in self.roots):
            held.close()
            raise _err(where or path, f"{key}: the folder of {path} changed while it was being opened (it now "
                                      f"resolves to {opened}); refused, a folder on its path may be a symlink "
                                      f"out of the queue's allowed roots", hint=f"roots: {', '.join(self.roots)}")
        return held


class HeldFolder:
    """An output's folder, checked and held open for the writes of one join (see ``PathPolicy.hold_folder``).

    ``display`` is the user's folder, for messages and the job's record; ``write_dir`` is where the files
    are written: ``/proc/self/fd/N`` while held, else ``display`` itself.
    """

    def __init__(self, display: Path, fd: int | None = None):
        self.display, self.fd = display, fd
        self._proc = f"/proc/self/fd/{fd}" if fd is not None else None  # kept after close, for messages

    @property
    def held(self) -> bool:
        return self.fd is not None

    @property
    def write_dir(self) -> Path:
        return Path(f"/proc/self/fd/{self.fd}") if self.fd is not None else self.display

    def moved(self) -> str | None:
        """Where the user's folder leads now when that is no longer the folder held; None while it is."""
        if self.fd is None:
            return None
        try:
            if os.path.samestat(os.stat(self.display), os.fstat(self.fd)):
                return None
        except FileNotFoundError:
            return "nowhere (it is gone)"
        return os.path.realpath(self.display)

    def now_at(self) -> str:
        """The held folder's current name (the kernel's; a removed folder reads ``... (deleted)``)."""
        try:
            return os.readlink(self.write_dir)
        except OSError:
            return "an unknown place"

    def user_text(self, text: str) -> str:
        """A message with the ``/proc/self/fd/N`` write path put back to the user's folder."""
        if self._proc is None:
            return text
        return re.sub(re.escape(self._proc) + r"(?!\d)", lambda _: str(self.display), text)

    def close(self) -> None:
        if self.fd is not None:
            os.close(self.fd)
            self.fd = None

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def _path_keys() -> dict[str, str]:
    from ..spec import PARAMS
    return {p.name: p.kind for p in PARAMS if p.kind in ("path", "paths")}


def validate_settings(settings: Any, base_dir: Path, policy: PathPolicy, where) -> dict:
    """The ``[settings]`` table with its paths resolved, checked by ``EffectSettings.from_dict``."""
    from ..settings import EffectSettings
    if settings is None:
        settings = {}
    if not isinstance(settings, dict):
        raise _err(where, f"settings: expected a table, got {type(settings).__name__}")
    resolved = dict(settings)
    for key, kind in _path_keys().items():
        if key not in resolved or resolved[key] is None:
            continue
        value = resolved[key]
        if kind == "paths":
            items = [value] if isinstance(value, str) else value
            if not isinstance(items, list):
                raise _err(where, f"settings.{key}: expected a list of paths, got {type(value).__name__}")
            resolved[key] = [policy.resolve(v, f"settings.{key}", base_dir, where, must_exist=True) for v in items]
        else:
            resolved[key] = policy.resolve(value, f"settings.{key}", base_dir, where, must_exist=True)
    try:
        EffectSettings.from_dict(resolved, base_dir=base_dir, check_paths=True)
    except SettingsError as exc:
        raise _err(where, f"settings: {exc.message}", hint=exc.hint) from exc
    return resolved


def _range_value(value: Any, key: str, where) -> int | str | None:
    if value is None or (isinstance(value, int) and not isinstance(value, bool) and value >= 0):
        return value
    if isinstance(value, str) and re.fullmatch(r"\d{1,2}:\d{2}:\d{2}[:;]\d{2}", value):
        return value
    raise _err(where, f"{key}: expected a frame number >= 0 or a timecode HH:MM:SS:FF, got {value!r}")


def _options(raw: Any, where) -> JobOptions:
    if raw is None:
        return JobOptions()
    if not isinstance(raw, dict):
        raise _err(where, f"options: expected a table, got {type(raw).__name__}")
    known = set(JobOptions.__dataclass_fields__)
    unknown = sorted(set(raw) - known)
    if unknown:
        raise _err(where, f"options: unknown key(s) {', '.join(unknown)}", hint=f"known: {', '.join(sorted(known))}")
    kw = {}
    for key, value in raw.items():
        if key == "overwrite":
            if not isinstance(value, bool):
                raise _err(where, f"options.overwrite: expected true or false, got {value!r}")
        else:
            lo, hi = _OPTION_LIMITS[key]
            if isinstance(value, bool) or not isinstance(value, int):
                raise _err(where, f"options.{key}: expected an integer, got {type(value).__name__}")
            if not lo <= value <= hi:
                raise _err(where, f"options.{key}: {value} is outside {lo}..{hi}")
        kw[key] = value
    return JobOptions(**kw)


def validate_job(data: dict, *, base_dir: str | os.PathLike, policy: PathPolicy | None = None,
                 where: str | os.PathLike | None = None, name: str | None = None) -> Job:
    """A :class:`Job` from a job table, or a :class:`SettingsError` naming the first problem."""
    policy = policy or PathPolicy()
    base = Path(os.path.realpath(os.fspath(base_dir)))
    unknown = sorted(set(data) - _TOP_KEYS)
    if unknown:
        raise _err(where, f"unknown key(s) {', '.join(unknown)}", hint=f"known: {', '.join(sorted(_TOP_KEYS))}")
    schema = data.get("schema", SCHEMA)
    if schema != SCHEMA:
        raise _err(where, f"schema {schema!r} is not {SCHEMA!r}")
    for key in ("input", "output"):
        if key not in data:
            raise _err(where, f"{key}: missing (a job needs an input and an output)")
    for key in ("name", "manifest_id", "storage"):
        if data.get(key) is not None and not isinstance(data[key], str):
            raise _err(where, f"{key}: expected a string, got {type(data[key]).__name__}")
    inp = policy.resolve(data["input"], "input", base, where, must_exist=True)
    if not os.path.isfile(inp):
        raise _err(where, f"input: {inp} is not a file (the queue renders video files)")
    out = policy.resolve(data["output"], "output", base, where, must_exist=False)
    if out == inp or (os.path.exists(out) and os.path.samefile(out, inp)):
        raise _err(where, "output: the output is the input file; facecomp never modifies its source")
    if Path(out).suffix.lower() not in OUTPUT_SUFFIXES:
        raise _err(where, f"output: the queue writes {', '.join(OUTPUT_SUFFIXES)} files, not {Path(out).suffix or '(none)'}")
    if not os.path.isdir(os.path.dirname(out)):
        raise _err(where, f"output: the folder {os.path.dirname(out)} does not exist", hint="create it first")
    settings = validate_settings(data.get("settings"), base, policy, where)
    for key, kind in _path_keys().items():
        for p in (settings.get(key) or []) if kind == "paths" else [settings.get(key)]:
            if p and os.path.realpath(p) == out:
                raise _err(where, f"output: the output is settings.{key}; choose another name")
    options = _options(data.get("options"), where)
    if os.path.exists(out) and not options.overwrite:
        raise _err(where, f"output: {out} exists", hint="set options.overwrite = true to replace it")
    mid = data.get("manifest_id")
    if mid is not None and not _MANIFEST_ID.match(mid):
        raise _err(where, f"manifest_id: {mid!r} is not a usable id (letters, digits, . _ : -, up to 128)")
    storage = None
    if data.get("storage") is not None:
        storage = policy.resolve(data["storage"], "storage", base, where, must_exist=True)
        if not os.path.isdir(storage):
            raise _err(where, f"storage: {storage} is not a folder")
    start = _range_value(data.get("start"), "start", where)
    end = _range_value(data.get("end"), "end", where)
    if isinstance(start, int) and isinstance(end, int) and end <= start:
        raise _err(where, f"end ({end}) must be after start ({start})")
    job_name = data.get("name") or name or Path(out).stem
    if len(job_name) > 200:
        raise _err(where, "name: longer than 200 characters")
    return Job(name=job_name, input=inp, output=out, settings=settings, manifest_id=mid, start=start, end=end,
               storage=storage, options=options)


def load_job(path: str | os.PathLike, policy: PathPolicy | None = None) -> Job:
    """Read and validate a job file; relative paths count from the file's folder."""
    p = Path(path)
    data = read_job_file(p)
    return validate_job(data, base_dir=p.parent if str(p.parent) else ".", policy=policy, where=p, name=p.stem)
