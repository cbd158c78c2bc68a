"""The trainer: faceset format, loss falls, exact resume (stop and hard kill), previews, errors.

Tiny on purpose: 64 px, narrow layers, a few iterations, CPU. Synthetic facesets (cartoon faces of two
"identities" with mesh-like landmarks) keep these tests independent of the face detector.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import cv2
import numpy as np
import pytest

from facecomp.errors import SettingsError
from facecomp.models.faceset import SCHEMA, Faceset, FacesetError, FacesetWriter, mask_from_landmarks

REPO = Path(__file__).resolve().parents[1]
TINY = dict(resolution=64, e_dims=8, ae_dims=32, d_dims=8, d_mask_dims=4)


def synthetic_face(rng: np.random.Generator, ident: int, size: int) -> tuple[np.ndarray, np.ndarray]:
    """A cartoon face whose head shape, skin, eyes and moustache depend on ``ident``; pose and mouth vary.
    Returns (RGB uint8, 468 landmarks spread over the head ellipse)."""
    s = size
    img = np.empty((s, s, 3), np.uint8)
    img[:] = np.array([40, 60, 90] if ident == 0 else [90, 70, 40]) + rng.integers(-10, 10, 3)
    cx, cy = s / 2 + rng.normal(0, s * 0.02), s / 2 + rng.normal(0, s * 0.02)
    ax, ay = (s * 0.33, s * 0.40) if ident == 0 else (s * 0.26, s * 0.42)
    ang = float(rng.normal(0, 6))
    skin = (225, 180, 150) if ident == 0 else (150, 105, 80)
    cv2.ellipse(img, (int(cx), int(cy)), (int(ax), int(ay)), ang, 0, 360, skin, -1, cv2.LINE_AA)
    eye = (40, 90, 200) if ident == 0 else (40, 140, 40)
    for sx in (-1, 1):
        c = (int(cx + sx * ax * 0.45), int(cy - ay * 0.2))
        cv2.circle(img, c, max(2, s // 18), (255, 255, 255), -1, cv2.LINE_AA)
        cv2.circle(img, c, max(1, s // 36), eye, -1, cv2.LINE_AA)
    mo = rng.uniform(0.2, 1.0)
    cv2.ellipse(img, (int(cx), int(cy + ay * 0.45)), (int(ax * 0.4), max(1, int(s * 0.04 * mo))), 0, 0, 360,
                (120, 30, 40), -1, cv2.LINE_AA)
    if ident == 1:
        y = int(cy + ay * 0.3)
        cv2.line(img, (int(cx - ax * 0.4), y), (int(cx + ax * 0.4), y), (50, 30, 20), max(1, s // 24))
    t = np.linspace(0, 14 * np.pi, 468, endpoint=False)
    rr = np.sqrt(np.linspace(0.05, 1, 468))
    a = np.deg2rad(ang)
    x, y = ax * rr * np.cos(t), ay * rr * np.sin(t)
    lm = np.stack([cx + x * np.cos(a) - y * np.sin(a), cy + x * np.sin(a) + y * np.cos(a)], 1) + 0.5
    return img, lm.astype(np.float32)


def make_faceset(path: Path, ident: int, n: int = 8, size: int = 64, seed: int = 0) -> Path:
    rng = np.random.default_rng(seed + 100 * ident)
    with FacesetWriter(path, size) as w:
        for i in range(n):
            img, lm = synthetic_face(rng, ident, size)
            w.add(img, lm, source=f"synthetic-{ident}", frame=i, sharpness=100.0 + i)
    return path


@pytest.fixture(scope="module")
def facesets(tmp_path_factory) -> tuple[Path, Path]:
    d = tmp_path_factory.mktemp("facesets")
    return make_faceset(d / "A", 0), make_faceset(d / "B", 1)


def _settings(**kw):
    from facecomp.models.train import TrainSettings
    base = dict(batch_size=2, lr=5e-4, seed=3, save_every=3, preview_every=0, threads=2)
    base.update(kw)
    return TrainSettings(**base)


def _config(**kw):
    from facecomp.models.autoencoder import ModelConfig
    return ModelConfig(**{**TINY, **kw})


# --------------------------------------------------------------------------------------------- faceset

def test_faceset_round_trip_and_errors(tmp_path):
    fs = Faceset(make_faceset(tmp_path / "fs", 0, n=3, size=48))
    assert len(fs) == 3 and fs.size == 48 and fs.template == "face"
    rng = np.random.default_rng(0)
    img, lm = synthetic_face(rng, 0, 48)                 # same generator, same first face
    assert np.array_equal(fs.image(0), img)               # PNG is lossless, RGB order preserved
    assert np.allclose(fs.landmarks(0), lm, atol=1e-3)
    mask = fs.mask(0)
    assert np.array_equal(mask, mask_from_landmarks(lm, 48))
    assert mask[24, 24] == 255 and mask[1, 1] == 0        # face centre in, corner out
    index = json.loads((tmp_path / "fs" / "faceset.json").read_text())
    assert index["schema"] == SCHEMA and index["faces"][2]["frame"] == 2 and index["faces"][1]["sharpness"] == 101.0
    imgs, masks = fs.load_arrays(32)
    assert imgs.shape == (3, 32, 32, 3) and masks.shape == (3, 32, 32)

    index["schema"] = "facecomp.faceset/99"
    (tmp_path / "fs" / "faceset.json").write_text(json.dumps(index))
    with pytest.raises(FacesetError, match="unsupported faceset schema"):
        Faceset(tmp_path / "fs")
    with pytest.raises(FacesetError, match="not a faceset"):
        Faceset(tmp_path)
    with pytest.raises(FacesetError, match="already exists"):
        FacesetWriter(tmp_path / "fs", 48)


def test_faceset_writer_leaves_nothing_on_error(tmp_path):
    with pytest.raises(SettingsError):
        with FacesetWriter(tmp_path / "x", 48) as w:
            w.add(np.zeros((48, 48, 3), np.uint8), np.zeros((468, 2)))
            w.add(np.zeros((40, 40, 3), np.uint8), np.zeros((468, 2)))   # wrong size
    assert list(tmp_path.iterdir()) == []


def test_core_does_not_import_torch():
    code = ("import sys, facecomp, facecomp.cli, facecomp.models, facecomp.models.faceset;"
            "from facecomp.cli import build_parser; build_parser();"
            "print('torch' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


# --------------------------------------------------------------------------------------------- trainer

torch_required = pytest.mark.skipif(
    __import__("importlib").util.find_spec("torch") is None, reason="the train extra (torch) is not installed")


@torch_required
def test_augmentation_is_a_pure_function_of_seed_and_iteration(facesets):
    from facecomp.models.train import TrainSettings, _iteration_rng, make_batch
    imgs, masks = Faceset(facesets[0]).load_arrays()
    s = TrainSettings()
    a = make_batch(imgs, masks, _iteration_rng(1, 5, 0), 3, s)
    b = make_batch(imgs, masks, _iteration_rng(1, 5, 0), 3, s)
    c = make_batch(imgs, masks, _iteration_rng(1, 6, 0), 3, s)
    assert all(np.array_equal(x, y) for x, y in zip(a, b))
    assert not np.array_equal(a[0], c[0])
    inp, tgt, m = a
    assert inp.shape == (3, 3, 64, 64) and m.shape == (3, 1, 64, 64)
    assert 0 <= inp.min() and inp.max() <= 1
    assert not np.allclose(inp, tgt)                    # input warped, target not
    assert np.abs(inp - tgt).mean() < 0.15              # ... but it is the same face
    plain = make_batch(imgs, masks, _iteration_rng(1, 5, 0), 3, TrainSettings(warp=False, color=False))
    assert np.array_equal(plain[0], plain[1])


@torch_required
def test_loss_falls_and_preview_shows_the_faces(facesets, tmp_path):
    from facecomp.models.train import COLUMNS, train
    r = train(*facesets, tmp_path / "m", config=_config(),
              settings=_settings(save_every=100, batch_size=4, lr=2e-3), iterations=16, log_every=0)
    assert r.iteration == 16 and len(r.losses) == 16
    tot = np.array([l["src"] + l["dst"] for l in r.losses])
    assert tot[-4:].mean() < 0.6 * tot[:4].mean(), tot
    grid = cv2.cvtColor(cv2.imread(str(r.preview)), cv2.COLOR_BGR2RGB)
    tile = 96
    band = grid.shape[0] - (16 + 4 * tile)                                     # the label's band on top
    assert band > 0 and grid.shape[1:] == (len(COLUMNS) * tile, 3)
    assert grid[:band].max() > 200 and np.median(grid[:band]) < 40            # white label text on dark
    grid = grid[band:]
    src0 = cv2.resize(Faceset(facesets[0]).image(0), (tile, tile), interpolation=cv2.INTER_NEAREST)
    diff = np.abs(grid[16:16 + tile, :tile].astype(int) - src0)                # column 0 is the src face,
    assert diff.mean() < 3 and diff.max() <= 16                                # under the faint watermark
    rec = grid[16:16 + tile, tile:2 * tile].astype(int)                        # column 1 its reconstruction
    face = cv2.resize(Faceset(facesets[0]).mask(0), (tile, tile)) > 200
    assert np.abs(rec[face] - src0[face].astype(int)).mean() < 40              # learnt the face colours
    assert (tmp_path / "m" / "previews" / "preview_latest.png").is_file()
    log = [json.loads(x) for x in (tmp_path / "m" / "losses.jsonl").read_text().splitlines()]
    assert [x["it"] for x in log] == list(range(1, 17)) and log[-1]["src"] == r.losses[-1]["src"]


def _weights(model_dir: Path) -> dict:
    from safetensors.numpy import load_file
    latest = json.loads((model_dir / "latest.json").read_text())
    return load_file(str(model_dir / latest["checkpoint"] / "model.safetensors"))


@torch_required
@pytest.mark.parametrize("arch,gan", [("df", 0.0), ("liae", 0.1)])
def test_resume_is_exact(facesets, tmp_path, arch, gan):
    from facecomp.models.train import train
    cfg, st = _config(arch=arch), _settings(gan_power=gan, save_every=2)
    full = train(*facesets, tmp_path / "full", config=cfg, settings=st, iterations=4, log_every=0)
    first = train(*facesets, tmp_path / "part", config=cfg, settings=st, iterations=2, log_every=0)
    assert first.iteration == 2
    rest = train(*facesets, tmp_path / "part", settings=st, iterations=4, log_every=0)
    assert rest.start_iteration == 2 and [l["it"] for l in rest.losses] == [3, 4]
    assert rest.losses == full.losses[2:]                                  # bit-identical losses
    if gan:
        assert "gan_d" in rest.losses[0]
    a, b = _weights(tmp_path / "full"), _weights(tmp_path / "part")
    assert a.keys() == b.keys() and all(np.array_equal(a[k], b[k]) for k in a)
    log = [json.loads(x)["it"] for x in (tmp_path / "part" / "losses.jsonl").read_text().splitlines()]
    assert log == [1, 2, 3, 4]


@torch_required
def test_hard_kill_then_resume_loses_nothing_beyond_the_checkpoint(facesets, tmp_path):
    """SIGKILL a CLI training run mid-way, resume it, and compare with an uninterrupted run."""
    from facecomp.models.train import train
    mdir = tmp_path / "killed"
    cmd = [sys.executable, "-c", "import sys; from facecomp.cli import main; sys.exit(main())", "train"]
    cmd += ["--src", str(facesets[0]), "--dst", str(facesets[1]), "-o", str(mdir), "--iterations", "10000",
            "--save-every", "1", "--preview-every", "0", "--batch-size", "2", "--lr", "5e-4", "--seed", "3",
            "--threads", "2", "--quiet"] + [f"--{k.replace('_', '-')}={v}" for k, v in TINY.items()]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            latest = mdir / "latest.json"
            if latest.exists() and json.loads(latest.read_text())["iteration"] >= 2:
                break
            if proc.poll() is not None:
                pytest.fail(f"training exited early: {proc.stderr.read().decode()[-2000:]}")
            time.sleep(0.05)
        else:
            pytest.fail("no checkpoint within 60 s")
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    k = json.loads((mdir / "latest.json").read_text())["iteration"]
    assert k >= 2
    resumed = train(facesets[0], facesets[1], mdir, settings=_settings(save_every=1), iterations=k + 1, log_every=0)
    assert resumed.start_iteration == k and len(resumed.losses) == 1
    ref = train(*facesets, tmp_path / "ref", config=_config(), settings=_settings(save_every=100), iterations=k + 1,
                log_every=0)
    assert resumed.losses == ref.losses[k:]
    a, b = _weights(mdir), _weights(tmp_path / "ref")
    assert all(np.array_equal(a[key], b[key]) for key in a)


@torch_required
def test_stop_by_time_and_bad_inputs(facesets, tmp_path):
    from facecomp.models.train import train
    r = train(*facesets, tmp_path / "t", config=_config(), settings=_settings(), time_limit_s=0.5, log_every=0)
    assert r.iteration >= 1 and r.checkpoint is not None and r.checkpoint.name == f"{r.iteration:09d}"
    with pytest.raises(SettingsError, match="differs"):       # architecture is fixed for a model's life
        train(*facesets, tmp_path / "t", config=_config(d_dims=16), settings=_settings(), iterations=1)
    with pytest.raises(SettingsError, match="stop condition"):
        train(*facesets, tmp_path / "u", config=_config(), settings=_settings())
    with pytest.raises(FacesetError, match="--dst faceset"):
        train(facesets[0], tmp_path, tmp_path / "v", config=_config(), settings=_settings(), iterations=1)
    with pytest.raises(SettingsError, match="multiple of 16"):
        _config(resolution=100)


@torch_required
def test_cli_train_resume_and_progress_json(facesets, tmp_path):
    from facecomp.cli import main
    def args(n: int) -> list[str]:
        return ["train", "--src", str(facesets[0]), "--dst", str(facesets[1]), "-o", str(tmp_path / "m"),
                "--iterations", str(n), "--batch-size", "2", "--preview-every", "1", "--quiet"] + \
               [f"--{k.replace('_', '-')}={v}" for k, v in TINY.items()]
    assert main(args(2)) == 0
    assert json.loads((tmp_path / "m" / "latest.json").read_text())["iteration"] == 2
    assert main(args(3)) == 0                                                     # resumes to 3
    assert json.loads((tmp_path / "m" / "latest.json").read_text())["iteration"] == 3
    info = json.loads((tmp_path / "m" / "model.json").read_text())
    assert info["schema"] == "facecomp.swapmodel/1" and info["config"]["resolution"] == 64
    assert main(["train", "--src", str(facesets[0]), "-o", str(tmp_path / "n"), "--iterations", "1"]) == 2


@torch_required
@pytest.mark.gpu
def test_cuda_mixed_precision(facesets, tmp_path):
    import torch
    if not torch.cuda.is_available():
        pytest.skip("no CUDA device (mixed precision runs only on CUDA)")
    from facecomp.models.train import train
    st = _settings(device="cuda", mixed_precision=True)
    full = train(*facesets, tmp_path / "full", config=_config(), settings=st, iterations=6, log_every=0)
    assert full.mixed_precision and full.device.startswith("cuda")
    train(*facesets, tmp_path / "part", config=_config(), settings=st, iterations=3, log_every=0)
    rest = train(*facesets, tmp_path / "part", settings=st, iterations=6, log_every=0)
    assert np.allclose([l["src"] for l in rest.losses], [l["src"] for l in full.losses[3:]], rtol=1e-3)
    state = json.loads((tmp_path / "part" / "checkpoints" / "000000006" / "state.json").read_text())
    assert state["scaler"]["scale"] > 0
