"""``facecomp ofx build [-o DIR] | install [--path DIR] [--bundle B]``: the OpenFX plugin bundle."""

from __future__ import annotations

import argparse
import os


def add_arguments(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="action", metavar="ACTION", required=True)
    p = sub.add_parser("build", help="compile FaceReplace.ofx.bundle with the machine's C compiler ($CC or cc)")
    p.add_argument("-o", "--output", default=".", metavar="DIR", help="folder to write the bundle into (default: .)")
    p = sub.add_parser("install", help="build (unless --bundle) and copy the bundle into the host's plugin folder")
    p.add_argument("--path", default=None, metavar="DIR",
                   help="plugin folder (default /usr/OFX/Plugins; hosts also scan the folders in OFX_PLUGIN_PATH)")
    p.add_argument("--bundle", default=None, metavar="BUNDLE", help="an already built FaceReplace.ofx.bundle")


def run(args: argparse.Namespace) -> int:
    import tempfile

    from facecomp.ofx_bridge.build import BUNDLE_NAME, build_bundle, install_bundle

    if args.action == "build":
        res = build_bundle(args.output)
        print(f"built {res.bundle}")
        print(f"  binary: {res.binary} ({res.compiler})")
        return 0
    if args.bundle:
        dest = install_bundle(args.bundle, args.path)
    else:
        with tempfile.TemporaryDirectory(prefix="facecomp-ofx-") as tmp:
            res = build_bundle(tmp)
            dest = install_bundle(res.bundle, args.path)
    print(f"installed {dest}")
    if args.path and args.path not in os.environ.get("OFX_PLUGIN_PATH", "").split(os.pathsep):
        print(f"  hosts look in /usr/OFX/Plugins and OFX_PLUGIN_PATH: export OFX_PLUGIN_PATH={args.path}"
              f" before starting the host (the bundle is {BUNDLE_NAME})")
    return 0
