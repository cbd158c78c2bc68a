"""``facecomp blender package -o DIR`` and ``facecomp blender install [ZIP]``: the Sequencer extension."""

from __future__ import annotations

import argparse
import tempfile


def add_arguments(p: argparse.ArgumentParser) -> None:
    sub = p.add_subparsers(dest="action", metavar="ACTION", required=True)
    pk = sub.add_parser("package", help="build and validate the extension zip")
    pk.add_argument("-o", "--output", required=True, metavar="DIR", help="folder for facecomp-<version>.zip")
    pk.add_argument("--blender-ext", metavar="PATH", help="Blender's blender_ext.py (default: the bpy wheel's)")
    ins = sub.add_parser("install", help="install and enable the extension for the current user")
    ins.add_argument("zip", nargs="?", help="the extension zip (default: build one first)")
    ins.add_argument("--blender-version", metavar="X.Y",
                     help="copy into that Blender version's user extensions folder instead of using bpy")


def run(args) -> int:
    from ..hosts.blender import package

    if args.action == "package":
        print(package.build(args.output, blender_ext=args.blender_ext))
        return 0
    if args.zip:
        where = package.install(args.zip, version=args.blender_version)
    else:
        with tempfile.TemporaryDirectory(prefix="facecomp-blender-") as tmp:
            where = package.install(package.build(tmp), version=args.blender_version)
    print(f"installed the facecomp extension in {where}")
    if args.blender_version:
        print("enable it in Blender: Edit > Preferences > Add-ons, search 'facecomp'")
    return 0
