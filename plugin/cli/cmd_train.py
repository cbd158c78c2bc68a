"""``facecomp train --src A --dst B -o MODEL_DIR``: train (or resume) a swap model from two facesets.

Needs the ``train`` extra (torch). Running the same command again resumes from the last checkpoint;
Ctrl-C saves a checkpoint first. ``--benchmark`` measures iterations/s at given resolutions instead.
"""

from __future__ import annotations

import argparse
import json
import sys

from . import add_progress_arguments, progress_from_args


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--src", help="faceset of the identity to put in (made by facecomp extract)")
    p.add_argument("--dst", help="faceset of the faces it replaces")
    p.add_argument("-o", "--output", help="model directory (created, or resumed when it holds a model)")
    stop = p.add_argument_group("stop (total iterations across sessions, or wall time of this session)")
    stop.add_argument("--iterations", type=int, help="stop when the model has this many iterations")
    stop.add_argument("--time", type=float, metavar="MINUTES", help="stop after this many minutes")
    arch = p.add_argument_group("architecture (new models only; a resumed model keeps its own)")
    arch.add_argument("--resolution", type=int, help="face resolution, multiple of 16 in 64..512 (default 128)")
    arch.add_argument("--arch", choices=["df", "liae"], help="df: per-identity decoders (default); "
                      "liae: shared decoder with two inters, for very different face shapes")
    arch.add_argument("--e-dims", type=int, help="encoder width (default 64)")
    arch.add_argument("--ae-dims", type=int, help="bottleneck size (default 256)")
    arch.add_argument("--d-dims", type=int, help="decoder width (default 64)")
    arch.add_argument("--d-mask-dims", type=int, help="mask decoder width (default 22)")
    t = p.add_argument_group("training")
    t.add_argument("--batch-size", type=int, default=8)
    t.add_argument("--lr", type=float, default=5e-5, help="Adam learning rate (default 5e-5)")
    t.add_argument("--seed", type=int, default=0)
    t.add_argument("--gan-power", type=float, default=0.0, help="adversarial loss weight, 0 = off (try 0.1 late)")
    t.add_argument("--no-warp", action="store_true", help="disable the random warp of inputs")
    t.add_argument("--no-flip", action="store_true", help="disable random horizontal flips")
    t.add_argument("--no-color", action="store_true", help="disable colour augmentation")
    t.add_argument("--save-every", type=int, default=250, help="iterations between checkpoints")
    t.add_argument("--preview-every", type=int, default=100, help="iterations between preview grids")
    t.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:N")
    t.add_argument("--no-mixed-precision", action="store_true", help="float32 on CUDA too")
    t.add_argument("--threads", type=int, help="torch CPU threads")
    p.add_argument("--benchmark", type=int, nargs="*", metavar="RES",
                   help="measure iterations/s at these resolutions (default 64 128 256) and exit")
    p.add_argument("--benchmark-seconds", type=float, default=10.0)
    add_progress_arguments(p)


def run(args: argparse.Namespace) -> int:
    from ..errors import SettingsError
    from ..models.train import TrainSettings, benchmark, train

    if args.benchmark is not None:
        for res in args.benchmark or [64, 128, 256]:
            r = benchmark(res, seconds=args.benchmark_seconds, batch_size=args.batch_size,
                          device=args.device)
            print(json.dumps(r) if args.progress == "json" else
                  f"{res:4d} px  batch {r['batch_size']}  {r['iterations_per_s']:.3f} it/s  "
                  f"{r['faces_per_s']:.1f} faces/s  ({r['iterations']} its in {r['seconds']} s, {r['device']}, "
                  f"{r['threads']} threads, {r['parameters'] / 1e6:.1f} M params)")
        return 0
    for name in ("src", "dst", "output"):
        if not getattr(args, name):
            raise SettingsError(f"--{name} is required (or use --benchmark)")
    if args.iterations is None and args.time is None:
        raise SettingsError("give --iterations N or --time MINUTES")
    from pathlib import Path

    from ..models.autoencoder import ModelConfig
    overrides = {k: getattr(args, k) for k in ("resolution", "arch", "e_dims", "ae_dims", "d_dims", "d_mask_dims")
                 if getattr(args, k) is not None}
    resuming = (Path(args.output) / "latest.json").exists()
    config = None
    if not resuming:
        config = ModelConfig(**overrides)
    elif overrides:
        from ..models.train import read_model_info
        saved = ModelConfig.from_dict(read_model_info(args.output)[0]["config"])
        config = ModelConfig(**{**saved.to_dict(), **overrides})
    settings = TrainSettings(batch_size=args.batch_size, lr=args.lr, seed=args.seed, gan_power=args.gan_power,
                             warp=not args.no_warp, flip=not args.no_flip, color=not args.no_color,
                             save_every=args.save_every, preview_every=args.preview_every, device=args.device,
                             mixed_precision=not args.no_mixed_precision, threads=args.threads)
    progress = progress_from_args(args)
    res = train(args.src, args.dst, args.output, config=config, settings=settings, iterations=args.iterations,
                time_limit_s=None if args.time is None else args.time * 60, progress=progress)
    if not args.quiet and args.progress == "text":
        last = res.losses[-1] if res.losses else {}
        print(f"model {args.output}: iteration {res.iteration} ({res.iteration - res.start_iteration} this run, "
              f"{res.iterations_per_s:.2f} it/s on {res.device}); last loss src {last.get('src', float('nan')):.4f} "
              f"dst {last.get('dst', float('nan')):.4f}; preview {res.preview}", file=sys.stderr)
    return 0
