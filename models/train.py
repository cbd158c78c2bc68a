"""Training a swap model from two facesets: resumable, deterministic, measurable.

A model directory holds everything needed to resume or export::

    MODEL_DIR/
      model.json                     schema "facecomp.swapmodel/1": architecture, template, facesets
      latest.json                    {"iteration": N, "checkpoint": "checkpoints/000000N"} (atomic pointer)
      checkpoints/000000N/
        model.safetensors            autoencoder weights
        optimizer.safetensors        Adam moments + step per parameter, torch RNG state, (GAN critic)
        state.json                   iteration, training settings, optimizer hyper-parameters, AMP scaler
      previews/preview_000000N.png   src | src rec | dst | dst rec | swap | swap composited, every K its
      previews/preview_latest.png
      losses.jsonl                   one line per iteration (truncated to the checkpoint on resume)

Why resume is exact: every iteration draws its batch and augmentation from a generator seeded by
``(seed, iteration, side)`` alone, so no sampler state has to survive; the weights, Adam state and
torch RNG are restored bit for bit from safetensors (never pickle). A run interrupted after checkpoint
K and resumed produces the same losses and weights as an uninterrupted run from K on the same device
and thread count. A checkpoint is a new directory renamed into place, then ``latest.json`` is replaced
atomically, so a kill at any moment leaves the previous checkpoint intact.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import threading
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import cv2
import numpy as np

from ..errors import CancelledError, ModelError, SettingsError
from ..progress import Progress, make_progress
from .faceset import Faceset, FacesetError

MODEL_SCHEMA = "facecomp.swapmodel/1"


@dataclass(frozen=True)
class TrainSettings:
    """How to train (may change between sessions of one model, unlike :class:`ModelConfig`)."""

    batch_size: int = 8
    lr: float = 5e-5
    seed: int = 0
    gan_power: float = 0.0          # weight of the adversarial loss on the src decoder; 0 = off
    warp: bool = True               # random grid warp of the input (the target stays unwarped)
    flip: bool = True               # random horizontal flip (part of the random affine)
    color: bool = True              # random brightness/contrast/saturation/channel gains
    save_every: int = 250           # iterations between checkpoints
    preview_every: int = 100        # iterations between preview grids (0 = only at the end)
    keep_checkpoints: int = 2
    device: str = "auto"            # "auto", "cpu", "cuda", "cuda:1"...
    mixed_precision: bool = True    # float16 autocast + grad scaling, CUDA only
    threads: int | None = None      # torch CPU threads; None = torch's default

    def __post_init__(self) -> None:
        if not 1 <= self.batch_size <= 512:
            raise SettingsError(f"batch size {self.batch_size} outside 1..512")
        if not 0 < self.lr < 1:
            raise SettingsError(f"learning rate {self.lr} outside (0, 1)")
        if self.gan_power < 0:
            raise SettingsError("gan_power must be >= 0")
        if self.save_every < 1 or self.preview_every < 0 or self.keep_checkpoints < 1:
            raise SettingsError("save_every and keep_checkpoints must be >= 1, preview_every >= 0")


@dataclass(frozen=True)
class TrainResult:
    iteration: int                       # iterations completed in total (all sessions)
    start_iteration: int                 # where this session started (0 or the resumed checkpoint)
    losses: tuple[dict, ...] = field(repr=False, default=())  # this session, one dict per iteration
    iterations_per_s: float = 0.0
    checkpoint: Path | None = None
    preview: Path | None = None
    device: str = "cpu"
    mixed_precision: bool = False


# ----------------------------------------------------------------------------------------------- data


def _iteration_rng(seed: int, iteration: int, side: int) -> np.random.Generator:
    return np.random.default_rng(np.random.SeedSequence([int(seed), int(iteration), int(side)]))


def random_warp(img: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Grid jitter + remap: a coarse grid of control points is displaced at random and the smooth
    displacement field it spans bends the face. The model must undo it, which forces it to learn the
    face rather than copy pixels."""
    r = img.shape[0]
    n = int(rng.integers(3, 6))               # cells per side
    cell = r / n
    off = rng.normal(0.0, 0.12 * cell, size=(2, n + 1, n + 1)).astype(np.float32)
    off[:, 0, :] = off[:, -1, :] = off[:, :, 0] = off[:, :, -1] = 0
    dx = cv2.resize(off[0], (r, r), interpolation=cv2.INTER_CUBIC)
    dy = cv2.resize(off[1], (r, r), interpolation=cv2.INTER_CUBIC)
    ys, xs = np.mgrid[0:r, 0:r].astype(np.float32)
    return cv2.remap(img, xs + dx, ys + dy, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)


def random_affine(rng: np.random.Generator, r: int, flip: bool) -> np.ndarray:
    ang = rng.uniform(-10, 10)
    scale = rng.uniform(0.95, 1.05)
    tx, ty = rng.uniform(-0.05, 0.05, 2) * r
    m = cv2.getRotationMatrix2D((r / 2, r / 2), ang, scale)
    m[:, 2] += (tx, ty)
    if flip and rng.random() < 0.5:
        m = np.array([[-1, 0, r], [0, 1, 0]], np.float64) @ np.vstack([m, [0, 0, 1]])
    return m


def random_color(x: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Brightness, contrast, saturation and per-channel gain: footage from different cameras and
    lights should not teach the model that identity = white balance."""
    gray = x.mean(axis=2, keepdims=True)
    x = gray + (x - gray) * rng.uniform(0.8, 1.2)
    x = (x - 0.5) * rng.uniform(0.85, 1.15) + 0.5 + rng.uniform(-0.08, 0.08)
    x = x * (1 + rng.uniform(-0.06, 0.06, 3)).astype(np.float32)
    return np.clip(x, 0, 1)


def make_batch(images: np.ndarray, masks: np.ndarray, rng: np.random.Generator, batch: int,
               s: TrainSettings) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(warped input, target, target mask) as float32 NCHW 0..1."""
    n, r = images.shape[0], images.shape[1]
    idx = rng.integers(0, n, batch)
    inp = np.empty((batch, 3, r, r), np.float32)
    tgt = np.empty((batch, 3, r, r), np.float32)
    tmask = np.empty((batch, 1, r, r), np.float32)
    for k, i in enumerate(idx):
        m = random_affine(rng, r, s.flip)
        img = cv2.warpAffine(images[i], m, (r, r), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
        mk = cv2.warpAffine(masks[i], m, (r, r), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT)
        t = img.astype(np.float32) / 255
        w = random_warp(t, rng) if s.warp else t
        if s.color:
            seed = int(rng.integers(0, 2**32))
            t = random_color(t, np.random.default_rng(seed))
            w = random_color(w, np.random.default_rng(seed))   # same colour change on input and target
        inp[k] = w.transpose(2, 0, 1)
        tgt[k] = t.transpose(2, 0, 1)
        tmask[k, 0] = mk.astype(np.float32) / 255
    return inp, tgt, tmask


# ------------------------------------------------------------------------------------------ checkpoints


def _atomic_write_text(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)


def read_model_info(model_dir: str | os.PathLike) -> tuple[dict, dict]:
    """(model.json, latest.json) of a model directory; typed errors when either is missing/bad."""
    d = Path(model_dir)
    try:
        info = json.loads((d / "model.json").read_text(encoding="utf-8"))
        latest = json.loads((d / "latest.json").read_text(encoding="utf-8"))
    except FileNotFoundError as exc:
        raise ModelError("not a trained model directory (model.json/latest.json missing)", path=d,
                         hint="train one with: facecomp train --src A --dst B -o MODEL_DIR") from exc
    except (OSError, json.JSONDecodeError) as exc:
        raise ModelError(f"unreadable model directory: {exc}", path=d) from exc
    if info.get("schema") != MODEL_SCHEMA:
        raise ModelError(f"unsupported model schema {info.get('schema')!r} (expected {MODEL_SCHEMA})", path=d)
    return info, latest


def _opt_to_tensors(opt, prefix: str) -> tuple[dict, list]:
    sd = opt.state_dict()
    tensors = {}
    for pid, st in sd["state"].items():
        for k, v in st.items():
            tensors[f"{prefix}.{pid}.{k}"] = v.detach().clone().contiguous()
    return tensors, sd["param_groups"]


def _opt_from_tensors(opt, tensors: dict, prefix: str, groups: list) -> None:
    import torch
    state: dict[int, dict] = {}
    for key, v in tensors.items():
        if not key.startswith(prefix + "."):
            continue
        pid, k = key[len(prefix) + 1:].split(".", 1)
        state.setdefault(int(pid), {})[k] = v
    opt.load_state_dict({"state": state, "param_groups": groups})
    # load_state_dict casts moments to the param dtype/device; step stays a CPU float tensor as saved
    for st in opt.state.values():
        for k, v in list(st.items()):
            if k == "step" and isinstance(v, torch.Tensor):
                st[k] = v.to("cpu")


def save_checkpoint(model_dir: Path, iteration: int, model, opt, disc, disc_opt, scaler, settings: TrainSettings,
                    keep: int) -> Path:
    import torch
    from safetensors.torch import save_file

    ck_root = model_dir / "checkpoints"
    ck_root.mkdir(parents=True, exist_ok=True)
    name = f"{iteration:09d}"
    tmp = ck_root / f".{name}.tmp-{os.getpid()}"
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir()
    save_file({k: v.detach().contiguous() for k, v in model.state_dict().items()}, str(tmp / "model.safetensors"),
              metadata={"schema": MODEL_SCHEMA, "iteration": str(iteration)})
    opt_t, groups = _opt_to_tensors(opt, "opt")
    opt_t["rng.torch"] = torch.get_rng_state()
    disc_groups = None
    if disc is not None:
        opt_t.update({f"disc.{k}": v.detach().contiguous() for k, v in disc.state_dict().items()})
        dt, disc_groups = _opt_to_tensors(disc_opt, "disc_opt")
        opt_t.update(dt)
    save_file(opt_t, str(tmp / "optimizer.safetensors"))
    state = {"iteration": iteration, "settings": asdict(settings), "param_groups": groups,
             "disc_param_groups": disc_groups,
             "scaler": None if scaler is None else {k: (float(v) if isinstance(v, float) else v)
                                                    for k, v in scaler.state_dict().items()}}
    (tmp / "state.json").write_text(json.dumps(state, indent=1), encoding="utf-8")
    final = ck_root / name
    if final.exists():
        shutil.rmtree(final)
    os.replace(tmp, final)
    _atomic_write_text(model_dir / "latest.json",
                       json.dumps({"iteration": iteration, "checkpoint": f"checkpoints/{name}"}))
    done = sorted(p for p in ck_root.iterdir() if p.is_dir() and not p.name.startswith("."))
    for old in done[:-keep]:
        shutil.rmtree(old, ignore_errors=True)
    return final


def load_weights(model_dir: str | os.PathLike, device: str = "cpu"):
    """The autoencoder of a model directory's latest checkpoint (for export and previews)."""
    from safetensors.torch import load_file

    from .autoencoder import ModelConfig, SwapAutoencoder

    info, latest = read_model_info(model_dir)
    config = ModelConfig.from_dict(info["config"])
    model = SwapAutoencoder(config)
    path = Path(model_dir) / latest["checkpoint"] / "model.safetensors"
    try:
        sd = load_file(str(path), device=device)
    except (OSError, Exception) as exc:  # safetensors raises its own error types
        raise ModelError(f"cannot read checkpoint weights: {exc}", path=path) from exc
    missing, unexpected = model.load_state_dict(sd, strict=False)
    if missing or unexpected:
        raise ModelError(f"checkpoint does not match the architecture (missing {missing[:3]}, "
                         f"unexpected {unexpected[:3]})", path=path)
    return model.to(device).eval(), info, int(latest["iteration"])


# ---------------------------------------------------------------------------------------------- preview


def _to_u8(t) -> np.ndarray:
    return (t.detach().float().clamp(0, 1).cpu().numpy().transpose(0, 2, 3, 1) * 255 + 0.5).astype(np.uint8)


COLUMNS = ("src", "src rec", "dst", "dst rec", "swap", "swap in dst")


def preview_grid(model, src_imgs: np.ndarray, dst_imgs: np.ndarray, device) -> np.ndarray:
    """Rows of: src | src reconstructed | dst | dst reconstructed | dst->src swap | swap composited into
    the dst crop with the predicted mask. RGB uint8 with a caption row."""
    import torch

    def t(x: np.ndarray):
        return torch.from_numpy(x.astype(np.float32).transpose(0, 3, 1, 2) / 255).to(device)

    n = min(len(src_imgs), len(dst_imgs))
    s, d = t(src_imgs[:n]), t(dst_imgs[:n])
    was_training = model.training
    model.eval()
    with torch.no_grad():
        rs, _ = model.reconstruct_src(s)
        rd, _ = model.reconstruct_dst(d)
        _, celeb, cmask = model.swap(d)
        comp = celeb * cmask + d * (1 - cmask)
    model.train(was_training)
    cols = [src_imgs[:n], _to_u8(rs), dst_imgs[:n], _to_u8(rd), _to_u8(celeb), _to_u8(comp)]
    r = src_imgs.shape[1]
    tile = max(r, 96)
    head = 16
    grid = np.full((head + n * tile, len(cols) * tile, 3), 24, np.uint8)
    for c, name in enumerate(COLUMNS):
        cv2.putText(grid, name, (c * tile + 3, 12), cv2.FONT_HERSHEY_SIMPLEX, 0.35, (230, 230, 230), 1, cv2.LINE_AA)
        for i in range(n):
            im = cols[c][i]
            if tile != r:
                im = cv2.resize(im, (tile, tile), interpolation=cv2.INTER_NEAREST)
            grid[head + i * tile:head + (i + 1) * tile, c * tile:(c + 1) * tile] = im
    return grid


def _write_png(path: Path, rgb: np.ndarray) -> None:
    """A preview picture, labelled like every image the project writes (the label on a band above it)."""
    from ..disclosure.stills import write_png

    write_png(path, rgb, watermark_id=f"facecomp.train:{path.parent.parent.name}")


# ---------------------------------------------------------------------------------------------- trainer


def _resolve_device(name: str):
    import torch
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    dev = torch.device(name)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise SettingsError(f"device {name!r} requested but CUDA is not available to torch",
                            hint="use --device cpu, or install a CUDA build of torch")
    return dev


def _load_faceset(path, role: str) -> Faceset:
    try:
        fs = Faceset(path)
    except FacesetError as exc:
        raise FacesetError(f"--{role} faceset: {exc.message}", path=exc.path, hint=exc.hint) from exc
    if len(fs) == 0:
        raise FacesetError(f"--{role} faceset holds no faces", path=path)
    return fs


def train(src: str | os.PathLike, dst: str | os.PathLike, model_dir: str | os.PathLike, *,
          config=None, settings: TrainSettings = TrainSettings(), iterations: int | None = None,
          time_limit_s: float | None = None, progress: Progress | None = None,
          stop_event: threading.Event | None = None, log_every: int = 10) -> TrainResult:
    """Train (or resume) the model in ``model_dir`` on faceset ``src`` (the identity to put in) and
    ``dst`` (the faces it replaces) until ``iterations`` in total or ``time_limit_s`` of this session.

    ``config`` (a :class:`~facecomp.models.autoencoder.ModelConfig`) is required for a new model and,
    when given for an existing one, must match it. Ctrl-C saves a checkpoint and raises
    :class:`CancelledError`; a hard kill loses at most ``settings.save_every`` iterations."""
    import torch

    from .autoencoder import ModelConfig, PatchDiscriminator, SwapAutoencoder, reconstruction_loss

    if iterations is None and time_limit_s is None:
        raise SettingsError("give a stop condition: iterations or a time limit")
    if iterations is not None and iterations < 0:
        raise SettingsError("iterations must be >= 0")
    progress = progress or make_progress("quiet")
    mdir = Path(model_dir)
    src_fs, dst_fs = _load_faceset(src, "src"), _load_faceset(dst, "dst")
    if src_fs.template != dst_fs.template:
        raise FacesetError(f"facesets use different alignment templates ({src_fs.template} vs {dst_fs.template})",
                           path=dst, hint="extract both with the same version and options")

    resuming = (mdir / "latest.json").exists()
    if resuming:
        info, latest = read_model_info(mdir)
        saved = ModelConfig.from_dict(info["config"])
        if config is not None and config != saved:
            raise SettingsError(f"model directory holds a {saved} model; the requested {config} differs",
                                path=mdir, hint="omit the architecture options to resume, or use a new -o")
        config = saved
    else:
        if config is None:
            raise SettingsError("a new model needs its architecture (ModelConfig)")
        if mdir.exists() and any(mdir.iterdir()):
            raise SettingsError("output folder exists and is not a facecomp model", path=mdir,
                                hint="choose an empty or new folder")
        info = {"schema": MODEL_SCHEMA, "config": config.to_dict(), "template": src_fs.template,
                "src": str(Path(src).resolve()), "dst": str(Path(dst).resolve()),
                "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}

    if settings.threads:
        torch.set_num_threads(settings.threads)
    device = _resolve_device(settings.device)
    amp = bool(settings.mixed_precision and device.type == "cuda")
    torch.manual_seed(settings.seed)
    res = config.resolution
    model = SwapAutoencoder(config).to(device)
    opt = torch.optim.Adam(model.parameters(), lr=settings.lr, betas=(0.5, 0.999))
    disc = disc_opt = None
    if settings.gan_power > 0:
        disc = PatchDiscriminator().to(device)
        disc_opt = torch.optim.Adam(disc.parameters(), lr=settings.lr * 2, betas=(0.5, 0.999))
    scaler = torch.amp.GradScaler("cuda") if amp else None

    start = 0
    if resuming:
        from safetensors.torch import load_file
        ck = mdir / latest["checkpoint"]
        try:
            state = json.loads((ck / "state.json").read_text(encoding="utf-8"))
            model.load_state_dict(load_file(str(ck / "model.safetensors"), device=str(device)))
            ot = load_file(str(ck / "optimizer.safetensors"))
        except Exception as exc:
            raise ModelError(f"cannot read checkpoint: {exc}", path=ck,
                             hint="delete latest.json's checkpoint to fall back, or start a new model") from exc
        _opt_from_tensors(opt, {k: v.to(device) if not k.endswith(".step") else v for k, v in ot.items()},
                          "opt", state["param_groups"])
        for g in opt.param_groups:     # a new learning rate may be given on resume
            g["lr"] = settings.lr
        torch.set_rng_state(ot["rng.torch"])
        if disc is not None:
            dsd = {k[5:]: v.to(device) for k, v in ot.items() if k.startswith("disc.")}
            if dsd and state.get("disc_param_groups"):
                disc.load_state_dict(dsd)
                _opt_from_tensors(disc_opt, {k: v.to(device) if not k.endswith(".step") else v
                                             for k, v in ot.items()}, "disc_opt", state["disc_param_groups"])
        if scaler is not None and state.get("scaler"):
            scaler.load_state_dict(state["scaler"])
        start = int(state["iteration"])
        for stale in (mdir / "checkpoints").glob(".*.tmp-*"):      # a save cut short by a kill
            shutil.rmtree(stale, ignore_errors=True)
        progress.message(f"resuming {mdir} at iteration {start}")
    else:
        mdir.mkdir(parents=True, exist_ok=True)
        _atomic_write_text(mdir / "model.json", json.dumps(info, indent=1))

    src_imgs, src_masks = src_fs.load_arrays(res)
    dst_imgs, dst_masks = dst_fs.load_arrays(res)
    (mdir / "previews").mkdir(exist_ok=True)
    loss_log = mdir / "losses.jsonl"
    if loss_log.exists():           # drop lines after the checkpoint we resume from
        kept = [ln for ln in loss_log.read_text(encoding="utf-8").splitlines()
                if ln.strip() and json.loads(ln)["it"] <= start]
        _atomic_write_text(loss_log, "".join(ln + "\n" for ln in kept))
    log_f = open(loss_log, "a", encoding="utf-8")

    target = iterations
    total = None if target is None else max(0, target - start)
    progress.start("train", total, unit="it")
    progress.message(f"training {config.arch} {res}px on {device.type}{' (mixed precision)' if amp else ''}: "
                     f"{len(src_fs)} src / {len(dst_fs)} dst faces, batch {settings.batch_size}")
    bce = torch.nn.BCEWithLogitsLoss()
    autocast = (lambda: torch.autocast("cuda", dtype=torch.float16)) if amp else (lambda: _Null())
    losses: list[dict] = []
    it = start
    t0 = time.perf_counter()
    last_ck = None
    last_preview = None
    model.train()

    def to_dev(a: np.ndarray):
        return torch.from_numpy(a).to(device, non_blocking=True)

    def checkpoint() -> Path:
        return save_checkpoint(mdir, it, model, opt, disc, disc_opt, scaler, settings, settings.keep_checkpoints)

    def preview() -> Path:
        grid = preview_grid(model, src_imgs[:4], dst_imgs[:4], device)
        p = mdir / "previews" / f"preview_{it:09d}.png"
        _write_png(p, grid)
        _write_png(mdir / "previews" / "preview_latest.png", grid)
        return p

    try:
        while True:
            if target is not None and it >= target:
                break
            if time_limit_s is not None and time.perf_counter() - t0 >= time_limit_s:
                break
            if stop_event is not None and stop_event.is_set():
                break
            bs = settings.batch_size
            ws, ts, ms = (to_dev(a) for a in make_batch(src_imgs, src_masks, _iteration_rng(settings.seed, it, 0), bs,
                                                         settings))
            wd, td, md = (to_dev(a) for a in make_batch(dst_imgs, dst_masks, _iteration_rng(settings.seed, it, 1), bs,
                                                         settings))
            with autocast():
                ps, pms = model.reconstruct_src(ws)
                pd, pmd = model.reconstruct_dst(wd)
                l_src = reconstruction_loss(ps.float(), pms.float(), ts, ms)
                l_dst = reconstruction_loss(pd.float(), pmd.float(), td, md)
                loss = l_src + l_dst
                l_gan = None
                if disc is not None:
                    logits = disc(ps * ms)
                    l_gan = bce(logits.float(), torch.ones_like(logits, dtype=torch.float32))
                    loss = loss + settings.gan_power * l_gan
            opt.zero_grad(set_to_none=True)
            if scaler is not None:
                scaler.scale(loss).backward()
                scaler.step(opt)
            else:
                loss.backward()
                opt.step()
            rec = {"it": it + 1, "src": float(l_src.detach()), "dst": float(l_dst.detach())}
            if disc is not None:
                disc_opt.zero_grad(set_to_none=True)
                with autocast():
                    real = disc(ts * ms)
                    fake = disc(ps.detach() * ms)
                    l_d = 0.5 * (bce(real.float(), torch.ones_like(real, dtype=torch.float32))
                                 + bce(fake.float(), torch.zeros_like(fake, dtype=torch.float32)))
                if scaler is not None:
                    scaler.scale(l_d).backward()
                    scaler.step(disc_opt)
                else:
                    l_d.backward()
                    disc_opt.step()
                rec["gan_g"] = float(l_gan.detach())
                rec["gan_d"] = float(l_d.detach())
            if scaler is not None:
                scaler.update()
            if not all(math.isfinite(v) for k, v in rec.items() if k != "it"):
                raise ModelError(f"training diverged at iteration {it + 1} (loss {rec})", path=mdir,
                                 hint="resume from the last checkpoint with a lower --lr")
            it += 1
            losses.append(rec)
            log_f.write(json.dumps(rec) + "\n")
            progress.advance(1)
            if log_every and it % log_every == 0:
                ips = (it - start) / max(1e-9, time.perf_counter() - t0)
                progress.message(f"it {it}: src {rec['src']:.4f} dst {rec['dst']:.4f}  {ips:.2f} it/s")
            if it % settings.save_every == 0:
                log_f.flush()
                last_ck = checkpoint()
            if settings.preview_every and it % settings.preview_every == 0:
                last_preview = preview()
    except KeyboardInterrupt:
        log_f.flush()
        ck = checkpoint() if it > start else last_ck
        log_f.close()
        raise CancelledError(f"training interrupted at iteration {it}; checkpoint saved", path=ck or mdir,
                             hint="run the same command again to resume")
    elapsed = time.perf_counter() - t0
    log_f.close()
    if last_ck is None or last_ck.name != f"{it:09d}":
        if it > start or not resuming:
            last_ck = checkpoint()
        else:
            last_ck = mdir / latest["checkpoint"]
    if last_preview is None or last_preview.name != f"preview_{it:09d}.png":
        last_preview = preview()
    ips = (it - start) / elapsed if elapsed > 0 and it > start else 0.0
    progress.finish(iteration=it, iterations_per_s=round(ips, 3), checkpoint=str(last_ck),
                    preview=str(last_preview))
    return TrainResult(iteration=it, start_iteration=start, losses=tuple(losses), iterations_per_s=ips,
                       checkpoint=last_ck, preview=last_preview, device=str(device), mixed_precision=amp)


class _Null:
    def __enter__(self):
        return self

    def __exit__(self, *a):
        return False


def benchmark(resolution: int, *, seconds: float = 10.0, batch_size: int = 4, config_overrides: dict | None = None,
              device: str = "auto", warmup: int = 3, min_iterations: int = 3) -> dict:
    """Iterations/s of the full training step (augmentation + forward + backward + Adam) on random
    faces, for the README's "how long does it take" figures. No files are written.

    The first steps are slow (lazy imports, oneDNN primitive creation per shape), so ``warmup`` steps
    are not timed and at least ``min_iterations`` are."""
    import torch

    from .autoencoder import ModelConfig, SwapAutoencoder, reconstruction_loss
    cfg = ModelConfig(resolution=resolution, **(config_overrides or {}))
    dev = _resolve_device(device)
    amp = dev.type == "cuda"
    model = SwapAutoencoder(cfg).to(dev)
    opt = torch.optim.Adam(model.parameters(), lr=5e-5, betas=(0.5, 0.999))
    scaler = torch.amp.GradScaler("cuda") if amp else None
    rng = np.random.default_rng(0)
    imgs = rng.integers(0, 256, (8, resolution, resolution, 3), dtype=np.uint8)
    masks = np.zeros((8, resolution, resolution), np.uint8)
    cv2.circle(masks[0], (resolution // 2, resolution // 2), resolution // 3, 255, -1)
    masks[:] = masks[0]
    s = TrainSettings(batch_size=batch_size)
    autocast = (lambda: torch.autocast("cuda", dtype=torch.float16)) if amp else (lambda: _Null())

    def step():
        tensors = []
        for side in (0, 1):
            tensors += [torch.from_numpy(a).to(dev) for a in make_batch(imgs, masks, rng, batch_size, s)]
        ws, ts, ms, wd, td, md = tensors
        with autocast():
            ps, pms = model.reconstruct_src(ws)
            pd, pmd = model.reconstruct_dst(wd)
            loss = (reconstruction_loss(ps.float(), pms.float(), ts, ms)
                    + reconstruction_loss(pd.float(), pmd.float(), td, md))
        opt.zero_grad(set_to_none=True)
        if scaler is not None:
            scaler.scale(loss).backward()
            scaler.step(opt)
            scaler.update()
        else:
            loss.backward()
            opt.step()

    for _ in range(warmup):
        step()
    if dev.type == "cuda":
        torch.cuda.synchronize()
    n, t0 = 0, time.perf_counter()
    while time.perf_counter() - t0 < seconds or n < min_iterations:
        step()
        n += 1
    if dev.type == "cuda":
        torch.cuda.synchronize()
    el = time.perf_counter() - t0
    params = sum(p.numel() for p in model.parameters())
    return {"resolution": resolution, "batch_size": batch_size, "iterations": n, "seconds": round(el, 2),
            "iterations_per_s": round(n / el, 3), "faces_per_s": round(2 * n * batch_size / el, 2),
            "device": str(dev), "mixed_precision": amp, "threads": torch.get_num_threads(),
            "parameters": params, "config": cfg.to_dict()}
