"""``facecomp queue add|run|status|retry|cancel|logs|clean``: resumable batch renders from job files."""

from __future__ import annotations

import argparse
import json
import sys

from ..errors import SettingsError


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--queue", metavar="DIR", default=None,
                   help="the queue folder (default: $FACECOMP_QUEUE, else the user state folder)")
    sub = p.add_subparsers(dest="action", metavar="ACTION", required=True)
    a = sub.add_parser("add", help="validate job files (.toml/.json, schema facecomp.job/1) and queue them")
    a.add_argument("jobs", nargs="+", metavar="JOB")
    a.add_argument("--root", action="append", default=[], metavar="DIR",
                   help="allowed root for job paths (repeatable; fixed when the queue is made)")
    r = sub.add_parser("run", help="render the queued jobs (resumes interrupted ones)")
    r.add_argument("--workers", type=int, default=1, help="segments rendered at once (local worker processes)")
    r.add_argument("--backend", choices=["local", "ray"], default="local")
    r.add_argument("--address", default=None,
                   help="Ray cluster address (ray://HOST:10001 or HOST:6379); default: a local Ray on this machine")
    r.add_argument("--progress", choices=["text", "json"], default="text")
    r.add_argument("--quiet", action="store_true")
    s = sub.add_parser("status", help="every job, its state and progress")
    s.add_argument("--json", action="store_true")
    for name, text in (("retry", "queue a failed or cancelled job again (committed segments are reused)"),
                       ("cancel", "cancel a job (a running one stops after its segments in flight)"),
                       ("logs", "print a job's log")):
        c = sub.add_parser(name, help=text)
        c.add_argument("id")
    sub.add_parser("clean", help="remove done and cancelled jobs and their segments")
    for action in sub.choices.values():  # --queue also after the action: facecomp queue add JOB --queue DIR
        action.add_argument("--queue", metavar="DIR", default=argparse.SUPPRESS, help=argparse.SUPPRESS)


def _queue(args, create: bool = False, roots=None):
    from ..queue.store import QueueDir, default_queue_dir
    return QueueDir(args.queue or default_queue_dir(), create=create, roots=roots)


def run(args) -> int:
    action = args.action
    if action == "add":
        q = _queue(args, create=True, roots=args.root or None)
        ids = q.add(args.jobs)
        for jid, path in zip(ids, args.jobs):
            print(f"{jid}\t{path}")
        return 0
    q = _queue(args)
    if action == "run":
        return _run(q, args)
    if action == "status":
        rows = q.summary()
        if args.json:
            print(json.dumps({"queue": str(q.root), "jobs": rows}, indent=1))
            return 0
        if not rows:
            print(f"queue {q.root}: empty")
        for row in rows:
            if row["status"] == "broken":
                print(f"{row['id']:<24} broken  {row['error']}")
                continue
            total = row["frames_total"]
            prog = f"{row['frames_done']}/{total} frames" if total else "not started"
            segs = f", {row['segments_done']}/{row['segments']} segments" if row["segments"] else ""
            err = f"  ({row['error']})" if row["error"] and row["status"] == "failed" else ""
            print(f"{row['id']:<24} {row['status']:<11} {prog}{segs}  -> {row['output']}{err}")
        return 0
    if action == "retry":
        q.retry(args.id)
        print(f"{args.id}: queued again")
        return 0
    if action == "cancel":
        print(f"{args.id}: {q.request_cancel(args.id)}")
        return 0
    if action == "logs":
        q.check_id(args.id)
        try:
            sys.stdout.write(q.log_path(args.id).read_text(encoding="utf-8"))
        except FileNotFoundError:
            print(f"{args.id}: no log yet")
        return 0
    if action == "clean":
        removed = q.clean()
        print(f"removed {len(removed)} job(s)" + (": " + ", ".join(removed) if removed else ""))
        return 0
    raise SettingsError(f"unknown queue action {action!r}")


def _run(q, args) -> int:
    summary = run_queue(q, args)
    return 1 if summary["failed"] or summary.get("refused") else 0


def run_queue(q, args) -> dict:
    """Run the queue ``q`` with the flags' backend, workers and progress (also ``facecomp timeline``'s)."""
    from ..queue.progress import JsonProgress, RichProgress
    from ..queue.runner import LocalBackend, Runner
    if args.workers < 1:
        raise SettingsError("--workers must be >= 1")
    progress = JsonProgress() if args.progress == "json" else RichProgress(quiet=args.quiet)
    if args.backend == "ray":
        from ..queue.ray_backend import RayBackend
        backend = RayBackend(address=args.address, workers=args.workers)
    else:
        backend = LocalBackend(args.workers)
    finalize = None
    try:
        from ..disclosure import c2pa_sign
        finalize = c2pa_sign.render_finalizer(_MessageAdapter(progress))
    except ImportError:
        pass
    return Runner(q, backend, progress, finalize=finalize).run()


class _MessageAdapter:
    """The C2PA hook's progress: only ``message`` is used (one warning when no credentials are set)."""

    def __init__(self, progress):
        self.progress = progress

    def message(self, text: str, level: str = "info") -> None:
        self.progress.message(text, level)
