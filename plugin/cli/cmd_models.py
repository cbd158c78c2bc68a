"""``facecomp models list | fetch [NAME...] | verify [NAME...]``: the model cache, by hand."""

from __future__ import annotations

import argparse
import json
import sys


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from . import add_progress_arguments

    sub = parser.add_subparsers(dest="action", metavar="ACTION", required=True)
    p = sub.add_parser("list", help="list the registry: name, kind, size, licence, cached or not")
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")
    p = sub.add_parser("fetch", help="download, verify and cache models (all models when no NAME is given)")
    p.add_argument("names", nargs="*", metavar="NAME")
    p.add_argument("--all", action="store_true", help="also fetch the samples (kind 'sample')")
    p.add_argument("--force", action="store_true", help="download again even when cached")
    add_progress_arguments(p)
    p = sub.add_parser("verify", help="re-hash cached files against the registry; non-zero exit on a mismatch")
    p.add_argument("names", nargs="*", metavar="NAME")


def run(args: argparse.Namespace) -> int:
    from facecomp.errors import ModelIntegrityError
    from facecomp.models import fetch, registry

    if args.action == "list":
        rows = []
        for spec in registry.all_specs():
            rows.append({**spec.as_dict(), "cached": registry.is_cached(spec.name),
                         "path": str(registry.cached_path(spec))})
        if args.json:
            print(json.dumps({"cache": str(registry.cache_dir()), "models": rows}, indent=2))
            return 0
        print(f"cache: {registry.cache_dir()}")
        print(f"{'name':16} {'kind':7} {'size':>10}  {'cached':6} {'commercial':10} licence")
        for r in rows:
            print(f"{r['name']:16} {r['kind']:7} {r['size']:>10}  {'yes' if r['cached'] else 'no':6} "
                  f"{'yes' if r['commercial_use'] else 'NO':10} {r['licence']}")
        return 0

    if args.action == "fetch":
        from . import progress_from_args

        names = args.names or registry.names(None if args.all else "model")
        paths = fetch.fetch(names, progress=progress_from_args(args), force=args.force)
        for name in names:
            print(f"{name}: {paths[name]}")
        return 0

    results = fetch.verify_all(args.names or None)
    bad = {n: r for n, r in results.items() if r.startswith("MISMATCH")}
    for name, result in results.items():
        print(f"{name}: {result}")
    if bad:
        first = next(iter(bad))
        raise ModelIntegrityError(f"{len(bad)} cached file(s) do not match the registry: {', '.join(bad)}",
                                  path=str(registry.cached_path(first)),
                                  hint=f"run `facecomp models fetch --force {' '.join(bad)}`")
    if args.names and any(r == "missing" for r in results.values()):
        print("some named models are not cached; `facecomp models fetch NAME` fetches them", file=sys.stderr)
        return 1
    return 0
