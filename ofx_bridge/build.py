"""Build and install the OpenFX bundle ``FaceReplace.ofx.bundle`` with the machine's C compiler.

Why at install time rather than a shipped binary: OpenFX hosts load a native shared object, so it must be
compiled for the machine (and its libc) it runs on; the C source ships as package data. The bundle's
``Resources/parameters.json`` is written from :func:`facecomp.spec.ofx_descriptors` at build time, so the
inspector always matches the installed facecomp, and ``Resources/facecomp_executable`` records which
``facecomp`` the plugin starts as its render server.
"""

from __future__ import annotations

import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

from ..errors import FacecompError, OutputError

BUNDLE_NAME = "FaceReplace.ofx.bundle"
BINARY_NAME = "FaceReplace.ofx"
PLUGIN_ID = "org.facecomp.FaceReplace"
SOURCES = ("facereplace.c", "fc_json.c", "fc_wire.c", "fc_banner.c")
DEFAULT_INSTALL_DIR = Path("/usr/OFX/Plugins")
SOURCE_DIR = Path(__file__).resolve().parent


class OfxBuildError(FacecompError):
    """The plugin could not be compiled or the bundle not written (no compiler, a compile error)."""


@dataclass(frozen=True)
class BuildResult:
    bundle: Path
    binary: Path
    compiler: str
    command: tuple[str, ...]


def arch_folder() -> str:
    """The bundle's architecture folder for this machine, as the OpenFX bundle layout names it."""
    machine = platform.machine().lower()
    if sys.platform.startswith("linux"):
        if machine in ("x86_64", "amd64"):
            return "Linux-x86-64"
        if machine in ("i386", "i686", "x86"):
            return "Linux-x86"
        return f"Linux-{machine}"
    if sys.platform == "darwin":
        return "MacOS"
    if sys.platform.startswith("win"):
        return "Win64"
    return f"{platform.system()}-{machine}"


def find_compiler() -> str:
    """``$CC``, else ``cc``, ``gcc`` or ``clang`` on PATH."""
    for cand in (os.environ.get("CC"), "cc", "gcc", "clang"):
        if cand and shutil.which(cand.split()[0]):
            return cand
    raise OfxBuildError("no C compiler found (install gcc or clang, or set CC)")


def facecomp_executable() -> str | None:
    """The ``facecomp`` command of this installation (next to the running Python first)."""
    beside = Path(sys.executable).with_name("facecomp")
    if beside.is_file() and os.access(beside, os.X_OK):
        return str(beside)
    found = shutil.which("facecomp")
    return str(Path(found).resolve()) if found else None


def info_plist(version: str) -> str:
    return f"""<?xml version="1.0" encoding="UTF-8"?>
<!DOCTYPE plist PUBLIC "-//Apple//DTD PLIST 1.0//EN" "http://www.apple.com/DTDs/PropertyList-1.0.dtd">
<plist version="1.0">
<dict>
  <key>CFBundleDevelopmentRegion</key><string>English</string>
  <key>CFBundleExecutable</key><string>{BINARY_NAME}</string>
  <key>CFBundleIdentifier</key><string>{PLUGIN_ID}</string>
  <key>CFBundleInfoDictionaryVersion</key><string>6.0</string>
  <key>CFBundleName</key><string>Face Replace (disclosed)</string>
  <key>CFBundlePackageType</key><string>BNDL</string>
  <key>CFBundleShortVersionString</key><string>{version}</string>
  <key>CFBundleVersion</key><string>{version}</string>
</dict>
</plist>
"""


def compile_command(compiler: str, out: Path, *, extra_flags: tuple[str, ...] = ()) -> list[str]:
    # messages are cut to their buffers on purpose (snprintf), so truncation warnings are off
    flags = ["-std=c11", "-O2", "-g", "-Wall", "-Wno-format-truncation", "-fPIC", "-fvisibility=hidden", "-shared"]
    if sys.platform == "darwin":
        flags = ["-std=c11", "-O2", "-fvisibility=hidden", "-bundle", "-arch", "x86_64", "-arch", "arm64"]
    libs = ["-lpthread", "-lm"] + (["-ldl"] if sys.platform.startswith("linux") else [])
    return [*compiler.split(), *flags, *extra_flags, "-o", str(out),
            *(str(SOURCE_DIR / s) for s in SOURCES), *libs]


def build_bundle(out_dir: str | os.PathLike = ".", *, compiler: str | None = None,
                 extra_flags: tuple[str, ...] = (), executable: str | None = None) -> BuildResult:
    """Compile the plugin and write ``out_dir/FaceReplace.ofx.bundle`` (replacing an older one whole).

    The bundle is assembled under a temporary name beside the target and renamed when complete, so a
    host scanning the folder never sees half a bundle.
    """
    from .. import __version__
    from ..spec import ofx_descriptors

    out_dir = Path(out_dir)
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise OutputError(f"cannot create {out_dir}: {exc.strerror}") from None
    cc = compiler or find_compiler()
    final = out_dir / BUNDLE_NAME
    tmp = Path(tempfile.mkdtemp(prefix=f".{BUNDLE_NAME}.", dir=out_dir))
    try:
        contents = tmp / "Contents"
        binary = contents / arch_folder() / BINARY_NAME
        (contents / "Resources").mkdir(parents=True)
        binary.parent.mkdir(parents=True)
        cmd = compile_command(cc, binary, extra_flags=extra_flags)
        proc = subprocess.run(cmd, capture_output=True, text=True)
        if proc.returncode != 0:
            raise OfxBuildError(f"compiling the plugin failed ({' '.join(cmd[:2])} ...):\n{proc.stderr.strip()}")
        (contents / "Info.plist").write_text(info_plist(__version__), encoding="utf-8")
        (contents / "Resources" / "parameters.json").write_text(
            json.dumps(ofx_descriptors(), indent=1, ensure_ascii=False), encoding="utf-8")
        exe = executable or facecomp_executable()
        if exe:
            (contents / "Resources" / "facecomp_executable").write_text(exe + "\n", encoding="utf-8")
        for doc in ("README.md",):
            if (SOURCE_DIR / doc).is_file():
                shutil.copy2(SOURCE_DIR / doc, contents / "Resources" / doc)
        for p in [tmp, *tmp.rglob("*")]:
            p.chmod(0o755 if p.is_dir() or p == binary else 0o644)
        _replace_dir(tmp, final)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return BuildResult(final, final / "Contents" / arch_folder() / BINARY_NAME, cc, tuple(cmd))


def _replace_dir(src: Path, dest: Path) -> None:
    """Move the finished folder ``src`` to ``dest``, replacing an older ``dest`` only once ``src`` is whole."""
    old = None
    if dest.exists():
        old = dest.with_name(f".{dest.name}.old-{os.getpid()}")
        os.rename(dest, old)
    try:
        os.rename(src, dest)
    except OSError:
        if old is not None:
            os.rename(old, dest)
        raise
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def install_bundle(bundle: str | os.PathLike, path: str | os.PathLike | None = None, *,
                   executable: str | None = None) -> Path:
    """Copy a built bundle into the host's plugin folder (default ``/usr/OFX/Plugins``).

    Records the ``facecomp`` executable in the installed copy, so hosts started from a desktop (without
    the virtual environment on PATH) still find the server.
    """
    bundle = Path(bundle)
    if not (bundle / "Contents").is_dir():
        raise OfxBuildError(f"{bundle} is not a built {BUNDLE_NAME} (run `facecomp ofx build` first)")
    target_dir = Path(path) if path else DEFAULT_INSTALL_DIR
    try:
        target_dir.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{BUNDLE_NAME}.", dir=target_dir))
    except PermissionError:
        raise OutputError(f"no permission to write {target_dir}: run with sudo, or install with --path DIR and "
                          "add DIR to OFX_PLUGIN_PATH") from None
    except OSError as exc:
        raise OutputError(f"cannot write {target_dir}: {exc.strerror}") from None
    try:
        shutil.rmtree(tmp)
        shutil.copytree(bundle, tmp, symlinks=False)
        exe = executable or facecomp_executable()
        if exe:
            (tmp / "Contents" / "Resources" / "facecomp_executable").write_text(exe + "\n", encoding="utf-8")
        tmp.chmod(0o755)
        _replace_dir(tmp, target_dir / bundle.name)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return target_dir / bundle.name
