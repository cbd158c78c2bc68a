"""The effect as data: one declaration of every effect parameter, and everything derived from it.

Why one table: the CLI, the OpenFX bridge, the Blender extension, Resolve and the render queue's job
files all expose the same effect. Each of them is generated from :data:`PARAMS`, so a parameter added
here appears everywhere (``facecomp render`` flags, ``facecomp spec --ofx-json``, Blender properties,
the job-file schema) and none can drift. Render-run options (range, workers, output, progress) are not
part of the effect and are not declared here.

The label has no "off" parameter and its scale has minimum 1: every host can move or enlarge the
disclosure label, none can hide or shrink it. This module imports nothing heavy (hosts read it fast).
"""

from __future__ import annotations

import argparse
import re
from dataclasses import dataclass
from typing import Any, Iterable, Mapping

from .disclosure.label import CORNERS, DEFAULT_TEXT, MAX_SCALE, MIN_OPACITY

__all__ = ["Param", "PARAMS", "KINDS", "HOSTS", "FACES_PATTERN", "param_map", "add_arguments",
           "values_from_args", "ofx_descriptors", "blender_properties", "settings_json_schema", "spec_json"]

KINDS = frozenset({"path", "paths", "str", "choice", "float", "int", "bool", "options"})
HOSTS = frozenset({"cli", "ofx", "blender", "resolve", "job"})
_FILE_HOSTS = HOSTS - {"ofx"}  # settings that only matter when facecomp writes the file itself

#: the ``faces`` selection: all | largest | reference | except-reference | track:N[,M...]
FACES_PATTERN = re.compile(r"^(all|largest|reference|except-reference|track:\d+(,\d+)*)$")

# argparse group titles for the CLI, in the order they are shown
CLI_GROUPS: dict[str, str] = {
    "swap": "face replacement",
    "faces": "face replacement",
    "mask": "face replacement",
    "color": "face replacement",
    "label": "disclosure label (can be moved or enlarged, never removed or shrunk)",
    "provenance": "disclosure label (can be moved or enlarged, never removed or shrunk)",
    "encode": "encoding",
}


@dataclass(frozen=True)
class Param:
    """One effect parameter. ``default`` None on a bool/choice means "automatic" (decided per clip)."""

    name: str  # settings key, snake_case
    kind: str  # one of KINDS
    default: Any = None
    choices: tuple = ()
    minimum: float | None = None
    maximum: float | None = None
    group: str = ""
    help: str = ""
    hosts: frozenset = HOSTS
    flag: str = ""  # CLI flag; "" = "--" + name with dashes
    metavar: str | None = None
    label: str = ""  # UI label; "" = from the name

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"parameter {self.name}: unknown kind {self.kind!r}")
        if not re.fullmatch(r"[a-z][a-z0-9_]*", self.name):
            raise ValueError(f"parameter name {self.name!r} is not snake_case")
        if not self.hosts <= HOSTS:
            raise ValueError(f"parameter {self.name}: unknown hosts {sorted(self.hosts - HOSTS)}")
        if self.kind == "choice" and not self.choices:
            raise ValueError(f"parameter {self.name}: a choice needs choices")
        if not self.flag:
            object.__setattr__(self, "flag", "--" + self.name.replace("_", "-"))
        if not self.label:
            object.__setattr__(self, "label", self.name.replace("_", " ").capitalize())


_MASK_HELP = "as a fraction of the face width"

PARAMS: tuple[Param, ...] = (
    # --- swap: what is put in
    Param("source", "paths", (), group="swap", metavar="PHOTO", label="Source photos",
          help="photo(s) of the person to put in; several: the closest pose is used per frame "
               "(morph, the default swapper: no model to download)"),
    Param("model", "path", None, group="swap", metavar="FILE", label="Swap model",
          help="a DeepFaceLab/DeepFaceLive .dfm or insightface inswapper_128.onnx (user-supplied)"),
    Param("arcface", "path", None, group="swap", metavar="FILE", label="ArcFace model",
          help="ArcFace recogniser for inswapper (insightface w600k_r50.onnx)"),
    Param("provider", "choice", "cpu", choices=("cpu", "cuda", "tensorrt"), group="swap",
          label="Execution provider",
          help="ONNX Runtime execution provider for --model (falls back to CPU, with a warning)"),
    Param("dfm_morph", "float", 0.75, minimum=0.0, maximum=1.0, group="swap", metavar="V", label="DFM morph",
          help="morph_value fed to .dfm models that take one (0..1, default 0.75)"),
    # --- faces: which faces
    Param("faces", "str", "all", group="faces", metavar="all|largest|reference|except-reference|track:N",
          label="Faces", help="which faces to replace (default: all)"),
    Param("reference", "paths", (), group="faces", metavar="PHOTO", label="Reference photos",
          help="photo(s) of the person to (not) replace, for --faces reference|except-reference"),
    Param("detect_every", "int", 5, minimum=1, maximum=1000, group="faces", metavar="N",
          label="Detect every N frames",
          help="run the face detector every N frames, tracking landmarks between (default 5)"),
    Param("small_faces", "bool", False, group="faces", label="Small faces",
          help="also look for small faces (down to ~24 px in HD frames) on tiles: slower keyframes"),
    # --- mask
    Param("mask_erode", "float", 0.01, minimum=-0.2, maximum=0.5, group="mask", metavar="F",
          label="Mask erode", help=f"mask inset {_MASK_HELP} (default 0.01)"),
    Param("mask_feather", "float", 0.05, minimum=-0.2, maximum=0.5, group="mask", metavar="F",
          label="Mask feather", help=f"soft-edge width {_MASK_HELP} (default 0.05)"),
    Param("mask_forehead", "float", 0.6, minimum=0.01, maximum=1.0, group="mask", metavar="F",
          label="Mask forehead", help="share of the forehead above the eyes that is replaced (default 0.6)"),
    Param("keep_mouth", "bool", None, group="mask", label="Keep mouth",
          help="the target's open mouth shows through (default for the morph)"),
    Param("keep_eyes", "bool", None, group="mask", label="Keep eyes",
          help="the target's open eyes show through (default for the morph)"),
    Param("lip_detail", "float", 1.0, minimum=0.0, maximum=1.0, group="mask", metavar="K", label="Target lip detail",
          help="how much of the target's fine lip structure (lip line, mouth gap) the morph keeps, 0..1 "
               "(default 1): lip sync follows the target's speech; lower keeps more of the source's lips"),
    Param("lip_motion", "float", 0.0, minimum=0.0, maximum=1.0, group="mask", metavar="K", label="Target lip motion",
          help="how much of the target's own change below the mouth as it speaks (against a closed-mouth frame "
               "of the clip) the morph adds, 0..1 (default 0; 0.7 for dubbing talking heads): lip sync reads "
               "closer to the target's, at some cost in likeness on small or moving faces"),
    # --- colour and blend
    Param("color", "choice", "rct", choices=("none", "rct", "lct", "mkl", "idt"), group="color",
          label="Colour transfer", help="colour transfer onto the target (default rct)"),
    Param("blend", "choice", "multiband", choices=("feather", "seamless", "multiband"), group="color", label="Blend",
          help="multiband (default: each frequency band blended over its own width, no edge, no grain on flat "
               "backgrounds), feathered alpha, or a seamless (Poisson) clone under it"),
    Param("color_smoothing", "float", 0.7, minimum=0.0, maximum=0.99, group="color", metavar="K",
          label="Colour smoothing",
          help="weight of the past in per-track colour statistics, 0..0.99 (default 0.7)"),
    Param("lighting", "float", 1.0, minimum=0.0, maximum=1.0, group="color", metavar="K", label="Target lighting",
          help="how much of the target's own light (low-frequency luminance) the face takes, 0..1 (default 1)"),
    Param("detail_match", "float", 0.0, minimum=0.0, maximum=1.0, group="color", metavar="K",
          label="Match target detail",
          help="how far the new face's fine contrast (creases, nostrils, eye whites) is brought to the target's "
               "own, 0..1 (default 0; with target lighting and rct colour): 1 takes out the blotches a shaded "
               "target gives a photo's texture, at some cost in likeness to the photo"),
    Param("hands", "bool", True, group="mask", label="Hands in front",
          help="hands over the face stay in front (MediaPipe hand models, only near faces; default on)"),
    Param("matte_view", "bool", False, group="mask", label="Matte view",
          help="output the replacement matte (white = replaced, labelled like every frame) instead of the "
               "picture: a second instance of the effect gives the host the matte to refine the blend with"),
    Param("matte_alpha", "bool", False, group="mask", hosts=frozenset({"cli", "job", "ofx"}), label="Matte in alpha",
          help="write the replacement matte into the output's alpha channel, the colour being the new face as a "
               "layer (over the original it gives the render); files: .mov (ProRes 4444), .mkv (FFV1) or "
               "PNG/TIFF; a host: RGBA frames"),
    Param("glasses", "bool", True, group="mask", label="Target's glasses stay",
          help="the target's glasses stay in front (default on)"),
    Param("glasses_paint", "float", 1.0, minimum=0.0, maximum=1.0, group="mask", metavar="K",
          label="Paint over photo's glasses",
          help="the source photo's glasses are painted out of the face; how much of that paint is drawn, 0..1 "
               "(default 1; the morph): 0 shows the target's own skin there instead, with no pale ghost of "
               "the frames, but the likeness to the photo falls with it (the eyes' surroundings are the "
               "target's)"),
    Param("occluders", "bool", True, group="mask", label="Objects in front",
          help="objects in front of the face (colours no face has) stay in front (default on)"),
    # --- label: move or enlarge only
    Param("label_corner", "choice", "top-left", choices=tuple(CORNERS), group="label", label="Label corner",
          help="corner of the SYNTHETIC label"),
    Param("label_scale", "float", 1.0, minimum=1.0, maximum=MAX_SCALE, group="label", label="Label scale",
          help="enlarge the label (>= 1.0)"),
    Param("label_opacity", "float", 0.92, minimum=MIN_OPACITY, maximum=1.0, group="label",
          label="Label box opacity", help="box opacity (never below the minimum)"),
    Param("label_text", "str", DEFAULT_TEXT, group="label", label="Label text",
          help='label text; must contain "SYNTHETIC" and "AI"'),
    Param("label_extra_line", "str", None, group="label", label="Label extra line",
          help='an extra line for other locales, e.g. "AI合成"'),
    # --- provenance (file tags)
    Param("producer", "str", None, group="provenance", hosts=_FILE_HOSTS, label="AIGC producer",
          help="ContentProducer code for the GB 45438 AIGC tag"),
    Param("propagator", "str", None, group="provenance", hosts=_FILE_HOSTS, label="AIGC propagator",
          help="ContentPropagator code for the AIGC tag"),
    # --- encode (files written by facecomp itself)
    Param("codec", "choice", None, choices=("h264", "h265", "prores", "prores4444", "qtrle", "ffv1", "png", "tiff"),
          group="encode", hosts=_FILE_HOSTS, label="Codec",
          help="default: by output extension and source (mp4: h264, mov with alpha: prores4444, ...)"),
    Param("crf", "int", None, minimum=0, maximum=51, group="encode", hosts=_FILE_HOSTS, label="CRF",
          help="h264/h265 quality (default 18)"),
    Param("preset", "str", None, group="encode", hosts=_FILE_HOSTS, label="Encoder preset",
          help="h264/h265 preset (default medium)"),
    Param("bit_depth", "choice", None, choices=(8, 10, 16), group="encode", hosts=_FILE_HOSTS,
          label="Bit depth", help="default: follows the source"),
    Param("alpha", "bool", None, group="encode", hosts=_FILE_HOSTS, label="Keep alpha",
          help="keep alpha (default: if any)"),
    Param("encoder_options", "options", (), group="encode", hosts=_FILE_HOSTS, flag="--encoder-option",
          metavar="KEY=VALUE", label="Encoder options",
          help="pass an option to the encoder (repeatable), e.g. tune=film"),
)


def param_map(params: Iterable[Param] = PARAMS) -> dict[str, Param]:
    return {p.name: p for p in params}


# --------------------------------------------------------------------------------------------------
# CLI


def add_arguments(parser: argparse.ArgumentParser, params: Iterable[Param] = PARAMS,
                  groups: Iterable[str] | None = None) -> None:
    """The effect flags. Every flag defaults to SUPPRESS, so the namespace holds only flags actually given
    (a settings file's values are then overridden by exactly those); :func:`values_from_args` reads them."""
    titles: dict[str, argparse._ArgumentGroup] = {}
    wanted = None if groups is None else set(groups)
    for p in params:
        if "cli" not in p.hosts or (wanted is not None and p.group not in wanted):
            continue
        title = CLI_GROUPS.get(p.group, p.group or "effect")
        g = titles.get(title) or titles.setdefault(title, parser.add_argument_group(title))
        kw: dict[str, Any] = {"dest": p.name, "default": argparse.SUPPRESS, "help": p.help}
        if p.kind == "bool":
            g.add_argument(p.flag, action="store_true", **kw)
            g.add_argument("--no-" + p.flag[2:], dest=p.name, action="store_false", default=argparse.SUPPRESS)
            continue
        if p.metavar:
            kw["metavar"] = p.metavar
        if p.kind == "paths":
            kw["nargs"] = "+"
        elif p.kind == "options":
            kw["action"] = "append"
        elif p.kind == "choice":
            kw["choices"] = list(p.choices)
            if all(isinstance(c, int) for c in p.choices):
                kw["type"] = int
        elif p.kind == "float":
            kw["type"] = float
        elif p.kind == "int":
            kw["type"] = int
        g.add_argument(p.flag, **kw)


def values_from_args(args: argparse.Namespace, params: Iterable[Param] = PARAMS) -> dict[str, Any]:
    """The effect values the user gave on the command line (settings keys; options parsed to a dict)."""
    out: dict[str, Any] = {}
    for p in params:
        if not hasattr(args, p.name):
            continue
        v = getattr(args, p.name)
        if p.kind == "options" and isinstance(v, list):
            v = parse_options(v, p.flag)
        out[p.name] = v
    return out


def parse_options(items: Iterable[str], flag: str = "--encoder-option") -> dict[str, str]:
    from .errors import SettingsError

    opts: dict[str, str] = {}
    for item in items:
        if "=" not in item or not item.split("=", 1)[0]:
            raise SettingsError(f"{flag} expects KEY=VALUE, got {item!r}")
        k, v = item.split("=", 1)
        opts[k] = v
    return opts


# --------------------------------------------------------------------------------------------------
# hosts


def _ui_options(p: Param) -> tuple[list[str], list[Any]]:
    """Menu entries (strings) and the settings value each stands for; "auto" first when None is allowed."""
    if p.kind == "bool":
        opts, vals = ["on", "off"], [True, False]
    else:
        opts, vals = [str(c) for c in p.choices], list(p.choices)
    if p.default is None:
        opts, vals = ["auto"] + opts, [None] + vals
    return opts, vals


def _int_auto(p: Param) -> int:
    """The integer a host UI shows for "automatic": one below the minimum (0 is a real CRF)."""
    return int(p.minimum if p.minimum is not None else 0) - 1


def ofx_descriptors(params: Iterable[Param] = PARAMS) -> list[dict]:
    """OpenFX parameter descriptors (``facecomp spec --ofx-json``).

    Types: string (``string_mode`` file | single | multi: one path or KEY=VALUE per line), choice, double,
    integer, boolean. A choice's ``default`` is an index into ``options``, and ``values`` says which
    settings value each entry stands for (``null`` = automatic; a bool that may be automatic is such a
    choice: auto | on | off). An integer that may be automatic has ``none_value`` (its minimum - 1).
    """
    out = []
    for p in params:
        if "ofx" not in p.hosts:
            continue
        d: dict[str, Any] = {"name": p.name, "label": p.label, "hint": p.help, "group": p.group,
                             "default": None, "min": p.minimum, "max": p.maximum, "options": None,
                             "string_mode": None}
        if p.kind in ("path", "paths", "str", "options"):
            d["type"] = "string"
            d["string_mode"] = {"path": "file", "paths": "multi", "options": "multi"}.get(p.kind, "single")
            default = p.default
            if p.kind == "paths":
                default = "\n".join(default)
            elif p.kind == "options":
                default = "\n".join(f"{k}={v}" for k, v in dict(default).items())
            d["default"] = "" if default is None else default
        elif p.kind == "choice" or (p.kind == "bool" and p.default is None):
            opts, vals = _ui_options(p)
            d.update(type="choice", options=opts, values=vals, default=vals.index(p.default))
        elif p.kind == "bool":
            d.update(type="boolean", default=bool(p.default))
        elif p.kind == "float":
            d.update(type="double", default=p.default)
        elif p.kind == "int":
            if p.default is None:
                auto = _int_auto(p)
                d.update(type="integer", default=auto, min=auto, none_value=auto,
                         hint=f"{p.help}; {auto} = automatic")
            else:
                d.update(type="integer", default=p.default)
        out.append(d)
    return out


def blender_properties(params: Iterable[Param] = PARAMS) -> list[dict]:
    """Blender property descriptions as plain data (the extension cannot import facecomp; a module is
    generated from this at packaging time). ``type`` is the ``bpy.props`` constructor's name; ``kwargs``
    its keyword arguments; ``none_value`` the property value that means "automatic" (maps to None)."""
    out = []
    for p in params:
        if "blender" not in p.hosts:
            continue
        kw: dict[str, Any] = {"name": p.label, "description": p.help}
        none_value = None
        if p.kind in ("path", "paths", "str", "options"):
            typ = "StringProperty"
            default = p.default
            if p.kind == "paths":
                default = ";".join(default)
                kw["description"] = f"{p.help} (several: separated by ';')"
            elif p.kind == "options":
                default = ";".join(f"{k}={v}" for k, v in dict(default).items())
                kw["description"] = f"{p.help} (KEY=VALUE; separated by ';')"
            kw["default"] = "" if default is None else default
            if p.kind == "path":
                kw["subtype"] = "FILE_PATH"
            none_value = "" if p.default is None else None
        elif p.kind == "choice" or (p.kind == "bool" and p.default is None):
            typ = "EnumProperty"
            opts, vals = _ui_options(p)
            kw["items"] = [(o.upper() if o in ("auto", "on", "off") else o, o, "") for o in opts]
            kw["default"] = kw["items"][vals.index(p.default)][0]
            out.append({"name": p.name, "type": typ, "kwargs": kw, "group": p.group,
                        "values": {item[0]: v for item, v in zip(kw["items"], vals)}})
            continue
        elif p.kind == "bool":
            typ = "BoolProperty"
            kw["default"] = bool(p.default)
        elif p.kind == "float":
            typ = "FloatProperty"
            kw["default"] = float(p.default)
        else:  # int
            typ = "IntProperty"
            kw["default"] = _int_auto(p) if p.default is None else int(p.default)
            none_value = _int_auto(p) if p.default is None else None
        if p.kind in ("float", "int"):
            if p.minimum is not None:
                kw["min"] = p.minimum if p.kind == "float" else int(p.minimum)
            if p.maximum is not None:
                kw["max"] = p.maximum if p.kind == "float" else int(p.maximum)
            if p.default is None:
                kw["min"] = _int_auto(p)
        entry = {"name": p.name, "type": typ, "kwargs": kw, "group": p.group}
        if none_value is not None:
            entry["none_value"] = none_value
        out.append(entry)
    return out


def _json_type(p: Param) -> dict:
    if p.kind == "path":
        s: dict = {"type": "string", "minLength": 1}
    elif p.kind == "paths":
        s = {"type": "array", "items": {"type": "string", "minLength": 1}}
    elif p.kind == "str":
        s = {"type": "string"}
        if p.name == "faces":
            s["pattern"] = FACES_PATTERN.pattern
    elif p.kind == "choice":
        s = {"enum": list(p.choices)}
    elif p.kind == "float":
        s = {"type": "number"}
    elif p.kind == "int":
        s = {"type": "integer"}
    elif p.kind == "bool":
        s = {"type": "boolean"}
    else:  # options
        s = {"type": "object", "additionalProperties": {"type": ["string", "number", "boolean"]}}
    if p.minimum is not None:
        s["minimum"] = p.minimum
    if p.maximum is not None:
        s["maximum"] = p.maximum
    s["description"] = p.help
    if p.default not in (None, ()):
        s["default"] = p.default
    return s


def settings_json_schema(params: Iterable[Param] = PARAMS, schema: str = "facecomp.effect/1") -> dict:
    """JSON Schema (2020-12) of a settings file / a job file's ``[settings]`` table. Absent keys take
    their default; unknown keys are refused."""
    props: dict[str, Any] = {"schema": {"const": schema}}
    for p in params:
        if "job" in p.hosts:
            props[p.name] = _json_type(p)
    return {"$schema": "https://json-schema.org/draft/2020-12/schema", "title": "facecomp effect settings",
            "type": "object", "properties": props, "additionalProperties": False}


def _jsonable(v: Any) -> Any:
    if isinstance(v, (tuple, list)):
        return [_jsonable(x) for x in v]
    if isinstance(v, frozenset):
        return sorted(v)
    if isinstance(v, Mapping):
        return {k: _jsonable(x) for k, x in v.items()}
    return v


def spec_json(params: Iterable[Param] = PARAMS, schema: str = "facecomp.effect/1") -> dict:
    """The whole declaration (``facecomp spec --json``): every parameter, and the settings schema."""
    return {"schema": schema,
            "params": [{"name": p.name, "kind": p.kind, "default": _jsonable(p.default),
                        "choices": _jsonable(p.choices), "minimum": p.minimum, "maximum": p.maximum,
                        "group": p.group, "help": p.help, "hosts": sorted(p.hosts), "flag": p.flag,
                        "label": p.label} for p in params],
            "settings_schema": settings_json_schema(params, schema)}

