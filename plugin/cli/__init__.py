"""The ``facecomp`` command line.

Subcommands are declared as data in :data:`COMMANDS` (name -> module) and imported only when used, so
``facecomp --help`` stays fast and an optional extra that is not installed breaks only its command.
Each module defines ``add_arguments(parser)`` and ``run(args) -> int``. Library code raises
:class:`facecomp.errors.FacecompError`; this is the one place that turns errors into exit codes.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import os
import signal
import sys
import threading

from .. import __version__
from ..errors import FacecompError

# name -> (module, one-line help). Order is the order shown in --help.
COMMANDS: dict[str, tuple[str, str]] = {
    "demo": ("facecomp.cli.cmd_demo", "run the whole pipeline on real sample media"),
    "render": ("facecomp.cli.cmd_render", "render a clip through the effect; always labelled"),
    "inspect": ("facecomp.cli.cmd_inspect", "print every disclosure layer found in a file"),
    "verify": ("facecomp.cli.cmd_verify", "check every disclosure layer; exit non-zero when one is missing or invalid"),
    "certs": ("facecomp.cli.cmd_certs", "C2PA signing credentials: make a dev test chain, show status"),
    "bench": ("facecomp.cli.cmd_bench", "measure transcode-only vs full-pipeline fps side by side"),
    "score": ("facecomp.cli.cmd_score", "score a render: identity distance, seam, flicker, share replaced"),
    "models": ("facecomp.cli.cmd_models", "list, fetch and verify the models and samples (verified by sha256)"),
    "track": ("facecomp.cli.cmd_track", "analyse faces only: tracks as JSON and an overlay to check before rendering"),
    "extract": ("facecomp.cli.cmd_extract", "extract aligned faces from clips/photos into a faceset for training"),
    "train": ("facecomp.cli.cmd_train", "train (or resume) your own swap model from two facesets (extra: train)"),
    "export": ("facecomp.cli.cmd_export", "export a trained model to a .dfm (ONNX) for render --model"),
    "serve": ("facecomp.cli.cmd_serve", "the render server for editor plugins (Unix socket, shared memory)"),
    "spec": ("facecomp.cli.cmd_spec", "the effect's parameters as data: JSON, OpenFX descriptors, settings schema"),
    "ofx": ("facecomp.cli.cmd_ofx", "build or install the OpenFX plugin (Resolve, Nuke, Natron, Vegas...)"),
    "blender": ("facecomp.cli.cmd_blender", "build or install the Blender Sequencer extension"),
    "resolve": ("facecomp.cli.cmd_resolve", "install the DaVinci Resolve script (Workspace > Scripts > Utility)"),
    "queue": ("facecomp.cli.cmd_queue", "resumable batch renders from job files: add, run, status, retry, cancel, logs, clean"),
    "timeline": ("facecomp.cli.cmd_timeline", "render the selected clips of an editorial timeline (OTIO, EDL, FCP XML) through the queue"),
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="facecomp",
        description="Face replacement for video editors that always discloses (visible label, tags, manifest).",
    )
    parser.add_argument("--version", action="version", version=f"facecomp {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, (module, help_text) in COMMANDS.items():
        p = sub.add_parser(name, help=help_text, description=help_text)
        p.set_defaults(_module=module)
        # arguments are added lazily in main() once the command is known
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser()
    # Find the subcommand first, then let its module define the arguments.
    name = next((a for a in argv if not a.startswith("-")), None)
    if name not in COMMANDS:
        parser.parse_args(argv or ["--help"])
        return 2
    module_name, help_text = COMMANDS[name]
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        print(f"facecomp {name}: unavailable ({exc}); install the extra it needs, e.g. pip install 'facecomp[...]'",
              file=sys.stderr)
        return 2
    sub = argparse.ArgumentParser(prog=f"facecomp {name}", description=help_text)
    module.add_arguments(sub)
    idx = argv.index(name)
    args = sub.parse_args(argv[:idx] + argv[idx + 1:])
    _interruptible()
    try:
        with _native_threads(name):
            return int(module.run(args) or 0)
    except FacecompError as exc:
        print(f"facecomp {name}: error: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print(f"facecomp {name}: interrupted; no partial output was left under the final name", file=sys.stderr)
        return 130


def _interruptible() -> None:
    """Where a host asks for it (``FACECOMP_INTERRUPTIBLE=1``: it cancels with SIGINT), SIGINT raises
    KeyboardInterrupt even if this process inherited it ignored (Python then leaves it ignored): the render
    stops at its next frame and removes its partial output instead of waiting to be killed."""
    if os.environ.get("FACECOMP_INTERRUPTIBLE") != "1" or threading.current_thread() is not threading.main_thread():
        return
    if signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
        signal.signal(signal.SIGINT, signal.default_int_handler)


# Commands whose numeric work is large matrix products (training's own threads are set from its settings).
MULTI_THREADED_BLAS = frozenset({"train"})


@contextlib.contextmanager
def _native_threads(command: str):
    """One BLAS thread and one OpenCV thread for every command but training; both restored after.

    The pipeline's native calls are small (the watermark's bit read-out, 3x3 colour matrices, the
    occluder's labelling of a face-sized grid) and it already runs decoding, the effect and encoding on
    threads of their own. A multi-threaded OpenBLAS wakes a worker for such a product, which then spins
    in sched_yield until its timeout, taking a core from the encoder: on the 720p bench, 13 s of system
    time in a 23 s run, 3-4 s with one thread. OpenCV splits even a 65x65 labelling over its pool and
    waits for the slower part: 45 us instead of 18 us on an idle machine, and about 1.1 ms a call in a
    render, where the encoder holds the other core. The queue's workers already run with one of each
    (queue.work.WORKER_ENV).
    """
    if command in MULTI_THREADED_BLAS:
        yield
        return
    import cv2
    from threadpoolctl import threadpool_limits

    cv_threads = cv2.getNumThreads()
    cv2.setNumThreads(1)
    try:
        with threadpool_limits(limits=1, user_api="blas"):
            yield
    finally:
        cv2.setNumThreads(cv_threads)


def add_progress_arguments(parser: argparse.ArgumentParser) -> None:
    """The shared ``--progress text|json`` and ``--quiet`` flags of every long job."""
    parser.add_argument("--progress", choices=["text", "json"], default="text",
                        help="progress format: text for people, json lines for hosts")
    parser.add_argument("--quiet", action="store_true", help="print nothing but warnings and errors")
    parser.add_argument("-v", "--verbose", action="store_true",
                        help="repeat warnings that are otherwise shown once per run")


def progress_from_args(args: argparse.Namespace):
    from ..render.progress import make_progress
    return make_progress("quiet" if getattr(args, "quiet", False) else args.progress,
                         verbose=bool(getattr(args, "verbose", False)))


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
