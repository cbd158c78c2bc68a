"""Install the Resolve script: one self-contained file in Resolve's per-user Utility scripts folder.

The script runs in Resolve's own Python, which cannot import facecomp, so the installed file is the
script source with the engine runner (:mod:`facecomp.hosts.bake`) and the Resolve-visible part of the
effect declaration (:mod:`facecomp.spec`) inlined at its two markers.
"""

from __future__ import annotations

import os
import pprint
import sys
from pathlib import Path

from ...errors import FacecompError, OutputError

SCRIPT_NAME = "facecomp Replace Faces.py"
_HERE = Path(__file__).resolve().parent
_BAKE_MARK = "# @@FACECOMP_BAKE@@"
_PARAMS_MARK = "# @@FACECOMP_PARAMS@@"


def utility_dir(platform: str | None = None, home: str | None = None, env=None) -> Path:
    """Resolve's per-user ``Fusion/Scripts/Utility`` folder on this OS."""
    platform = platform or sys.platform
    env = os.environ if env is None else env
    home_p = Path(home or os.path.expanduser("~"))
    if platform.startswith("win"):
        appdata = Path(env.get("APPDATA") or home_p / "AppData" / "Roaming")
        return appdata / "Blackmagic Design" / "DaVinci Resolve" / "Support" / "Fusion" / "Scripts" / "Utility"
    if platform == "darwin":
        return (home_p / "Library" / "Application Support" / "Blackmagic Design" / "DaVinci Resolve" / "Fusion"
                / "Scripts" / "Utility")
    return home_p / ".local" / "share" / "DaVinciResolve" / "Fusion" / "Scripts" / "Utility"


def _bake_body() -> str:
    """bake.py without its docstring and ``__future__`` import (the script has its own, first)."""
    lines = (_HERE.parent / "bake.py").read_text(encoding="utf-8").splitlines()
    out, in_doc, seen_doc = [], False, False
    for line in lines:
        if not seen_doc and line.startswith('"""'):
            in_doc = line.count('"""') != 2
            seen_doc = True
            continue
        if in_doc:
            in_doc = '"""' not in line
            continue
        if line.startswith("from __future__"):
            continue
        out.append(line)
    return "\n".join(out).strip("\n")


def script_text() -> str:
    """The installed script: source + inlined engine runner + the effect parameters Resolve can set."""
    from ... import spec

    src = (_HERE / "facecomp_replace_faces.py").read_text(encoding="utf-8")
    if _BAKE_MARK not in src or _PARAMS_MARK not in src:
        raise FacecompError("the Resolve script lost its inlining markers")
    params = [p for p in spec.spec_json()["params"] if "resolve" in p["hosts"]]
    bake = "# --- inlined from facecomp.hosts.bake by 'facecomp resolve install' ---\n" + _bake_body()
    decl = ("# --- inlined from facecomp.spec: the effect parameters a Resolve run may set ---\n"
            f"PARAMS = {pprint.pformat(params, width=110, sort_dicts=False)}")
    return src.replace(_BAKE_MARK, bake, 1).replace(_PARAMS_MARK, decl, 1)


def install(dest: str | os.PathLike | None = None) -> Path:
    """Write the script into ``dest`` (default :func:`utility_dir`) atomically; returns its path."""
    folder = Path(dest) if dest else utility_dir()
    try:
        folder.mkdir(parents=True, exist_ok=True)
        target = folder / SCRIPT_NAME
        tmp = folder / f".{SCRIPT_NAME}.part"
        tmp.write_text(script_text(), encoding="utf-8")
        os.replace(tmp, target)
    except OSError as exc:
        raise OutputError(f"cannot write the Resolve script into {folder}: {exc}", path=folder) from exc
    return target
