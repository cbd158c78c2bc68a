"""``facecomp spec``: the effect's parameters as data, for hosts and job files.

``--json`` prints the whole declaration (with the settings-file JSON schema), ``--ofx-json`` the OpenFX
parameter descriptors, ``--blender-json`` the Blender property descriptions, ``--schema`` the JSON
schema of a settings file / a job's ``[settings]`` table. Without a flag: a table for people.
"""

from __future__ import annotations

import argparse
import json


def add_arguments(p: argparse.ArgumentParser) -> None:
    g = p.add_mutually_exclusive_group()
    g.add_argument("--json", action="store_true", help="the whole declaration as JSON")
    g.add_argument("--ofx-json", action="store_true", help="OpenFX parameter descriptors as JSON")
    g.add_argument("--blender-json", action="store_true", help="Blender property descriptions as JSON")
    g.add_argument("--schema", action="store_true", help="JSON schema of a settings file / a job's [settings]")


def run(args) -> int:
    from .. import spec
    from ..settings import SCHEMA

    if args.json:
        out = spec.spec_json(schema=SCHEMA)
    elif args.ofx_json:
        out = spec.ofx_descriptors()
    elif args.blender_json:
        out = spec.blender_properties()
    elif args.schema:
        out = spec.settings_json_schema(schema=SCHEMA)
    else:
        rows = [(p.name, p.kind, _show(p.default), _range(p), p.help) for p in spec.PARAMS]
        w = [max(len(r[i]) for r in rows) for i in range(4)]
        print(f"effect settings ({SCHEMA}); CLI flag = --name-with-dashes")
        for r in rows:
            print("  " + "  ".join(r[i].ljust(w[i]) for i in range(4)) + "  " + r[4])
        return 0
    print(json.dumps(out, indent=2, ensure_ascii=False))
    return 0


def _show(v) -> str:
    if v is None:
        return "auto"
    if isinstance(v, tuple):
        return "[]" if not v else ",".join(map(str, v))
    return str(v)


def _range(p) -> str:
    if p.choices:
        return "|".join(map(str, p.choices))
    if p.minimum is not None or p.maximum is not None:
        lo = "" if p.minimum is None else f"{p.minimum:g}"
        hi = "" if p.maximum is None else f"{p.maximum:g}"
        return f"{lo}..{hi}"
    return ""
