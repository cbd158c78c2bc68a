"""Effect settings as a value: frozen, hashable, checked, and stored as JSON or TOML files.

Why a value: hosts (OpenFX, Blender, Resolve), the render queue and the render server all pass the same
effect around, compare it and cache engines by it, so it must be immutable and hashable, and a file must
be refused loudly (naming the key) rather than half-applied. The fields are generated from
:data:`facecomp.spec.PARAMS`, so a parameter declared there is a field here too.

Schema ``facecomp.effect/1``; :func:`upgrade` maps older files forward and refuses newer ones.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import re
import tomllib
from pathlib import Path
from typing import Any, Callable, Mapping

from .errors import DisclosureError, SettingsError
from .spec import FACES_PATTERN, PARAMS, Param, param_map

__all__ = ["SCHEMA", "VERSION", "EffectSettings", "upgrade", "load_settings", "save_settings", "dumps_toml"]

SCHEMA_FAMILY = "facecomp.effect/"
VERSION = 1
SCHEMA = f"{SCHEMA_FAMILY}{VERSION}"

_PARAMS = param_map(PARAMS)
_HIDING_WORDS = frozenset({"enable", "enabled", "disable", "disabled", "visible", "hidden", "hide", "off", "show",
                           "no", "without", "remove", "skip"})

_TYPES: dict[str, Any] = {"path": "str | None", "paths": "tuple[str, ...]", "str": "str | None",
                          "choice": "str | int | None", "float": "float", "int": "int | None",
                          "bool": "bool | None", "options": "tuple[tuple[str, str], ...]"}


def _refuse(p: Param, what: str, value: Any = None, *, show: bool = True) -> SettingsError:
    got = f", got {value!r}" if show else ""
    # a label value out of range is an attempt to hide or shrink the disclosure (its own exit code)
    cls = DisclosureError if p.group == "label" else SettingsError
    return cls(f"setting {p.name!r}: {what}{got}", hint=f"command-line flag {p.flag}")


def _check(p: Param, v: Any) -> Any:
    """The normalised value of ``p`` (tuples for lists, float for numbers) or a SettingsError naming it."""
    k = p.kind
    if isinstance(v, str) and not v.strip() and p.default is None and k in ("path", "str"):
        v = None  # a host's empty text field: not set
    if v is None:
        if p.default is None:
            return None
        raise _refuse(p, "may not be empty", v)
    if k == "path":
        if isinstance(v, os.PathLike):
            v = os.fspath(v)
        if not isinstance(v, str) or not v.strip() or "\0" in v:
            raise _refuse(p, "expects a file path", v)
        return v
    if k == "paths":
        if isinstance(v, str):  # a host's text field: one path per line
            v = tuple(line.strip() for line in v.splitlines() if line.strip())
        elif isinstance(v, os.PathLike):
            v = (v,)
        if not isinstance(v, (list, tuple)):
            raise _refuse(p, "expects a list of file paths", v)
        out = []
        for item in v:
            item = os.fspath(item) if isinstance(item, os.PathLike) else item
            if not isinstance(item, str) or not item.strip() or "\0" in item:
                raise _refuse(p, "expects file paths", item)
            out.append(item)
        return tuple(out)
    if k == "str":
        if not isinstance(v, str):
            raise _refuse(p, "expects text", v)
        if p.name == "faces" and not FACES_PATTERN.match(v):
            raise _refuse(p, "expects all, largest, reference, except-reference or track:N[,M]", v)
        return v
    if k == "choice":
        if isinstance(v, bool) or v not in p.choices or type(v) is not type(p.choices[0]):
            raise _refuse(p, f"expects one of {', '.join(map(str, p.choices))}", v)
        return v
    if k in ("float", "int"):
        if isinstance(v, bool) or not isinstance(v, (int, float)) or (k == "int" and not isinstance(v, int)):
            raise _refuse(p, "expects " + ("a whole number" if k == "int" else "a number"), v)
        if not math.isfinite(v):
            raise _refuse(p, "expects a finite number", v)
        if p.minimum is not None and v < p.minimum:
            raise _refuse(p, f"{v:g} is below the minimum {p.minimum:g}", show=False)
        if p.maximum is not None and v > p.maximum:
            raise _refuse(p, f"{v:g} is above the maximum {p.maximum:g}", show=False)
        return float(v) if k == "float" else int(v)
    if k == "bool":
        if not isinstance(v, bool):
            raise _refuse(p, "expects true or false", v)
        return v
    # options: a KEY=VALUE map, stored as sorted pairs so equal maps are equal settings
    if isinstance(v, str):  # a host's text field: one KEY=VALUE per line
        lines = [line.strip() for line in v.splitlines() if line.strip()]
        bad = [line for line in lines if "=" not in line or line.startswith("=")]
        if bad:
            raise _refuse(p, "expects one KEY=VALUE per line", bad[0])
        v = dict(line.split("=", 1) for line in lines)
    items = v.items() if isinstance(v, Mapping) else v
    try:
        pairs = [(key, val) for key, val in items]
    except (TypeError, ValueError):
        raise _refuse(p, "expects a table of KEY = VALUE", v) from None
    out_map: dict[str, str] = {}
    for key, val in pairs:
        if not isinstance(key, str) or not key or "=" in key:
            raise _refuse(p, "expects option names (text without '=')", key)
        if isinstance(val, bool) or not isinstance(val, (str, int, float)):
            raise _refuse(p, f"option {key!r} expects text or a number", val)
        out_map[key] = str(val)
    return tuple(sorted(out_map.items()))


class _EffectMethods:
    """Behaviour of :class:`EffectSettings` (its fields come from the spec)."""

    def __post_init__(self) -> None:
        for p in PARAMS:
            value = getattr(self, p.name)
            checked = _check(p, value)
            if checked is not value:
                object.__setattr__(self, p.name, checked)
        from .disclosure.label import LabelSettings

        for key, kw in (("label_text", {"text": self.label_text}),
                        ("label_extra_line", {"extra_line": self.label_extra_line})):
            try:
                LabelSettings(**kw)
            except DisclosureError as exc:
                raise DisclosureError(f"setting {key!r}: {exc.message}", hint=exc.hint) from None
        if self.matte_view and self.matte_alpha:
            raise SettingsError("settings 'matte_view' and 'matte_alpha' exclude each other: the matte view's "
                                "picture is the matte itself", hint="choose one (--matte-view or --matte-alpha)")
        if (self.matte_view or self.matte_alpha) and not (self.source or self.model):
            which = "matte_view" if self.matte_view else "matte_alpha"
            raise SettingsError(f"setting {which!r}: a matte needs a face replacement",
                                hint="add --source PHOTO or --model FILE")

    # ---- dicts

    @classmethod
    def from_dict(cls, d: Mapping[str, Any], *, base_dir: str | os.PathLike | None = None,
                  check_paths: bool = True) -> "EffectSettings":
        """Settings from a mapping (a settings file, a job's ``[settings]``, a host's JSON).

        Relative paths resolve against ``base_dir`` (the settings file's folder) when given; with
        ``check_paths`` every path must exist. Unknown keys and bad values raise SettingsError naming the key.
        """
        if not isinstance(d, Mapping):
            raise SettingsError(f"settings must be a table of key = value, got {type(d).__name__}")
        d = upgrade(dict(d))
        d.pop("schema", None)
        unknown = sorted(str(k) for k in d if k not in _PARAMS)
        if unknown:
            for key in unknown:
                words = set(re.split(r"[^a-z]+", key.lower()))
                if "label" in words and words & _HIDING_WORDS:
                    raise DisclosureError(f"setting {key!r} refused: the disclosure label cannot be disabled")
            raise SettingsError(f"unknown setting{'s' if len(unknown) > 1 else ''} {', '.join(map(repr, unknown))}",
                                hint="see `facecomp spec --json` for the keys")
        for key, value in list(d.items()):
            p = _PARAMS[key]
            if p.kind in ("path", "paths") and value is not None:
                value = _check(p, value)
                if value is None:  # an empty text field
                    d[key] = None
                    continue
                items = (value,) if p.kind == "path" else value
                items = tuple(_resolve_path(x, base_dir) for x in items)
                if check_paths:
                    for x in items:
                        if not os.path.exists(x):
                            raise SettingsError(f"setting {key!r}: no such file", path=x,
                                                hint=f"check the path given to {p.flag}")
                d[key] = items[0] if p.kind == "path" else items
        return cls(**d)

    def to_dict(self) -> dict:
        """JSON-able: the schema and only the keys that differ from their defaults."""
        out: dict[str, Any] = {"schema": SCHEMA}
        for p in PARAMS:
            v = getattr(self, p.name)
            if v == p.default:
                continue
            if p.kind == "options":
                v = dict(v)
            elif isinstance(v, tuple):
                v = list(v)
            out[p.name] = v
        return out

    def replace(self, **changes) -> "EffectSettings":
        unknown = sorted(set(changes) - set(_PARAMS))
        if unknown:
            raise SettingsError(f"unknown setting(s) {', '.join(map(repr, unknown))}")
        return dataclasses.replace(self, **changes)

    def with_absolute_paths(self, base_dir: str | os.PathLike | None = None) -> "EffectSettings":
        """The same settings with every path absolute (against ``base_dir``, default the working folder)."""
        changes: dict[str, Any] = {}
        for p in PARAMS:
            v = getattr(self, p.name)
            if p.kind == "path" and v is not None:
                changes[p.name] = os.path.abspath(_resolve_path(v, base_dir))
            elif p.kind == "paths" and v:
                changes[p.name] = tuple(os.path.abspath(_resolve_path(x, base_dir)) for x in v)
        return dataclasses.replace(self, **changes) if changes else self

    # ---- the parts the engine and the renderer take

    @property
    def swaps(self) -> bool:
        """True when a face is replaced (source photos or a model given)."""
        return bool(self.source or self.model)

    @property
    def label(self):
        from .disclosure.label import LabelSettings

        kw: dict[str, Any] = {"corner": self.label_corner, "scale": self.label_scale,
                              "opacity": self.label_opacity, "text": self.label_text}
        if self.label_extra_line:
            kw["extra_line"] = self.label_extra_line
        return LabelSettings(**kw)

    @property
    def encode(self):
        from .video.encode import EncodeSettings

        return EncodeSettings(codec=self.codec, bit_depth=self.bit_depth, crf=self.crf, preset=self.preset,
                              alpha=self.alpha, options=self.encoder_options)

    @property
    def identity(self):
        from .disclosure.metadata import AigcIdentity

        kw = {}
        if self.producer:
            kw["content_producer"] = self.producer
        if self.propagator:
            kw["content_propagator"] = self.propagator
        return AigcIdentity(**kw)


def _resolve_path(value: str, base_dir: str | os.PathLike | None) -> str:
    value = os.path.expanduser(value)
    if base_dir is not None and not os.path.isabs(value):
        return os.path.join(os.fspath(base_dir), value)
    return value


EffectSettings = dataclasses.make_dataclass(
    "EffectSettings", [(p.name, _TYPES[p.kind], dataclasses.field(default=p.default)) for p in PARAMS],
    bases=(_EffectMethods,), frozen=True)
EffectSettings.__module__ = __name__
EffectSettings.__doc__ = ("Every effect parameter of facecomp.spec.PARAMS as a frozen, hashable value; "
                          "checked on construction (SettingsError naming the key).")


# --------------------------------------------------------------------------------------------------
# versions


def _from_v0(d: dict) -> dict:
    """``facecomp.effect/0``: keys spelled as the render flags (``label-corner``), encoder options as the
    list of ``KEY=VALUE`` strings ``--encoder-option`` collects (``encoder-option``)."""
    out: dict[str, Any] = {}
    for key, value in d.items():
        if key == "schema":
            continue
        if key in ("encoder-option", "encoder_option"):
            if not isinstance(value, list) or not all(isinstance(x, str) for x in value):
                raise SettingsError(f"setting {key!r} (schema 0) expects a list of KEY=VALUE", hint=repr(value))
            from .spec import parse_options

            out["encoder_options"] = parse_options(value, "encoder-option")
            continue
        out[key.replace("-", "_")] = value
    return out


# _STEPS[n] maps version n to n + 1
_STEPS: tuple[Callable[[dict], dict], ...] = (_from_v0,)
assert len(_STEPS) == VERSION


def upgrade(d: Mapping[str, Any]) -> dict:
    """The settings mapping in the current schema. No ``schema`` key means the current one; a newer
    version than this facecomp knows, or another family, is refused."""
    d = dict(d)
    schema = d.get("schema", SCHEMA)
    if not isinstance(schema, str) or not schema.startswith(SCHEMA_FAMILY) \
            or not schema[len(SCHEMA_FAMILY):].isdigit():
        raise SettingsError(f"setting 'schema': {schema!r} is not a facecomp effect schema",
                            hint=f'expected "{SCHEMA}"')
    version = int(schema[len(SCHEMA_FAMILY):])
    if version > VERSION:
        raise SettingsError(f"setting 'schema': {schema} was written by a newer facecomp; this one reads up to "
                            f"{SCHEMA}", hint="upgrade facecomp to read these settings")
    while version < VERSION:
        d = _STEPS[version](d)
        version += 1
    d["schema"] = SCHEMA
    return d


# --------------------------------------------------------------------------------------------------
# files


def _format(path: Path) -> str:
    ext = path.suffix.lower()
    if ext == ".json":
        return "json"
    if ext == ".toml":
        return "toml"
    raise SettingsError("settings files are .json or .toml", path=path, hint="rename the file")


def load_settings(path: str | os.PathLike, *, check_paths: bool = True) -> EffectSettings:
    """Settings from a .json or .toml file; relative paths in it are relative to the file's folder."""
    p = Path(path)
    fmt = _format(p)
    try:
        data = p.read_bytes()
    except FileNotFoundError:
        raise SettingsError("settings file not found", path=p) from None
    except OSError as exc:
        raise SettingsError(f"cannot read the settings file ({exc.strerror or exc})", path=p) from None
    try:
        text = data.decode("utf-8")
        d = json.loads(text) if fmt == "json" else tomllib.loads(text)
    except UnicodeDecodeError:
        raise SettingsError("the settings file is not UTF-8 text", path=p) from None
    except json.JSONDecodeError as exc:
        raise SettingsError(f"not valid JSON: {exc.msg} at line {exc.lineno}", path=p) from None
    except tomllib.TOMLDecodeError as exc:
        raise SettingsError(f"not valid TOML: {exc}", path=p) from None
    try:
        return EffectSettings.from_dict(d, base_dir=p.resolve().parent, check_paths=check_paths)
    except SettingsError as exc:
        exc.path = exc.path or str(p)
        exc.args = (str(exc),)
        raise


def _toml_value(v: Any) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, (int, float)):
        return repr(v)
    if isinstance(v, str):
        return json.dumps(v, ensure_ascii=False)  # a JSON string is a valid TOML basic string
    if isinstance(v, list):
        return "[" + ", ".join(_toml_value(x) for x in v) + "]"
    raise TypeError(f"no TOML form for {type(v).__name__}")


def dumps_toml(d: Mapping[str, Any]) -> str:
    """The settings dict as TOML: scalars and lists first, then one table per mapping value."""
    lines, tables = [], []
    for k, v in d.items():
        if isinstance(v, Mapping):
            tables.append((k, v))
        else:
            lines.append(f"{k} = {_toml_value(v)}")
    for k, table in tables:
        lines += ["", f"[{k}]"] + [f"{json.dumps(str(tk))} = {_toml_value(tv)}" for tk, tv in table.items()]
    text = "\n".join(lines) + "\n"
    if tomllib.loads(text) != dict(d):  # refuse to write what would not read back the same
        raise SettingsError("these settings have no faithful TOML form", hint="save them as .json")
    return text


def save_settings(settings: EffectSettings, path: str | os.PathLike) -> Path:
    """Write ``settings`` (paths made absolute) to a .json or .toml file, atomically (temp file + rename)."""
    p = Path(path)
    fmt = _format(p)
    d = settings.with_absolute_paths().to_dict()
    text = json.dumps(d, indent=2, ensure_ascii=False) + "\n" if fmt == "json" else dumps_toml(d)
    folder = p.parent if str(p.parent) else Path(".")
    if not folder.is_dir():
        raise SettingsError("the folder for the settings file does not exist", path=folder)
    from .atomic import atomic_write

    atomic_write(p, text)  # the umask's mode, as the media gets
    return p


