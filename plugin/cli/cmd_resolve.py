"""``facecomp resolve install [--dest DIR]``: the DaVinci Resolve script (Workspace > Scripts > Utility)."""

from __future__ import annotations

import argparse


def add_arguments(p: argparse.ArgumentParser) -> None:
    sub = p.add_subparsers(dest="action", metavar="ACTION", required=True)
    ins = sub.add_parser("install", help="copy the script into Resolve's Fusion/Scripts/Utility folder")
    ins.add_argument("--dest", metavar="DIR", help="another folder (default: this user's Utility folder)")
    sub.add_parser("path", help="print where the script is installed on this OS")


def run(args) -> int:
    from ..hosts.resolve import install

    if args.action == "path":
        print(install.utility_dir() / install.SCRIPT_NAME)
        return 0
    target = install.install(args.dest)
    print(f"installed {target}")
    print("in DaVinci Resolve (Studio): Workspace > Scripts > Utility > facecomp Replace Faces "
          "(restart Resolve if it is not listed yet)")
    return 0
