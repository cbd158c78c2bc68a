"""Queue figures on this machine: throughput with 1, 2 and 4 workers, resume cost after kill -9, Ray vs local.

Usage (real-face clips from ../shared/media; a few minutes on 2 cores):

    python examples/queue_bench.py [--workers 1 2 4] [--resume] [--ray]

Each figure is a fresh queue over the same batch (the three GRID clips, 75 frames each, one-shot swap
from a portrait, the default encode), so the fps include segment rendering, joining and the disclosure.
``--ray`` runs Ray only inside a network namespace of its own holding nothing but loopback (root and
``unshare`` needed), as the tests do.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
MEDIA = Path(os.environ.get("FACECOMP_SAMPLE_MEDIA", REPO.parent / "shared" / "media"))
CLIPS = ("grid_bbaf2n.mpg", "grid_lwbsza.mpg", "grid_swiz3n.mpg")
CLI = [sys.executable, "-c", "import sys; from facecomp.cli import main; sys.exit(main())"]


def write_batch(folder: Path, tag: str, segment: int) -> list[Path]:
    jobs = []
    for i, clip in enumerate(CLIPS):
        job = folder / f"{tag}_{i}.toml"
        job.write_text(f'''schema = "facecomp.job/1"
input = "{MEDIA / clip}"
output = "{folder / f'{tag}_{i}.mp4'}"
manifest_id = "bench-{i}"
[settings]
source = ["{MEDIA / 'skimage_astronaut_eileen_collins.png'}"]
[options]
segment_frames = {segment}
''')
        jobs.append(job)
    return jobs


def run_queue(folder: Path, tag: str, workers: int, segment: int, backend: str = "local") -> dict:
    q = folder / f"Q_{tag}"
    subprocess.run([*CLI, "queue", "--queue", str(q), "add", *map(str, write_batch(folder, tag, segment))],
                   check=True, capture_output=True)
    t0 = time.perf_counter()
    out = subprocess.run([*CLI, "queue", "--queue", str(q), "run", "--workers", str(workers), "--backend", backend,
                          "--progress", "json"], check=True, capture_output=True, text=True)
    wall = time.perf_counter() - t0
    summary = json.loads(out.stdout.splitlines()[-1])
    return {"tag": tag, "backend": backend, "workers": workers, "frames": summary["frames"], "wall_s": round(wall, 2),
            "fps_wall": round(summary["frames"] / wall, 2), "fps_runner": summary["fps"], "done": summary["done"]}


def resume_cost(folder: Path, segment: int) -> dict:
    """Kill -9 the runner after its first committed segment, rerun, compare with the uninterrupted time."""
    base = run_queue(folder, "uninterrupted", 1, segment)
    q = folder / "Q_killed"
    subprocess.run([*CLI, "queue", "--queue", str(q), "add", *map(str, write_batch(folder, "killed", segment))],
                   check=True, capture_output=True)
    t0 = time.perf_counter()
    proc = subprocess.Popen([*CLI, "queue", "--queue", str(q), "run", "--quiet"], stderr=subprocess.DEVNULL)
    while not [p for p in (q / "work").glob("*/seg_*.mp4") if Path(str(p) + ".synthetic.json").exists()]:
        time.sleep(0.02)
    time.sleep(0.5)  # into the next segment: its work is what a kill loses
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    before = time.perf_counter() - t0
    t0 = time.perf_counter()
    out = subprocess.run([*CLI, "queue", "--queue", str(q), "run", "--progress", "json"], check=True,
                         capture_output=True, text=True)
    after = time.perf_counter() - t0
    summary = json.loads(out.stdout.splitlines()[-1])
    return {"uninterrupted_s": base["wall_s"], "killed_after_s": round(before, 2), "resume_run_s": round(after, 2),
            "reused_frames": summary["reused_frames"], "rendered_on_resume": summary["frames"],
            "extra_s": round(before + after - base["wall_s"], 2)}


def ray_vs_local(folder: Path, workers: int, segment: int) -> list[dict]:
    script = (f"ip link set lo up && RAY_AUTH_MODE=disabled RAY_USAGE_STATS_ENABLED=0 exec {sys.executable} "
              f"{Path(__file__).resolve()} --inside-ns {folder} {workers} {segment}")
    out = subprocess.run(["unshare", "--net", "sh", "-c", script], capture_output=True, text=True, check=True)
    return [json.loads(x) for x in out.stdout.splitlines() if x.startswith("{")]


def main() -> None:
    if len(sys.argv) == 5 and sys.argv[1] == "--inside-ns":
        folder, workers, segment = Path(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
        for backend in ("local", "ray"):
            print(json.dumps(run_queue(folder, f"ns_{backend}", workers, segment, backend)), flush=True)
        return
    ap = argparse.ArgumentParser()
    ap.add_argument("--workers", type=int, nargs="*", default=[1, 2, 4])
    ap.add_argument("--segment", type=int, default=24)
    ap.add_argument("--resume", action="store_true")
    ap.add_argument("--ray", action="store_true")
    args = ap.parse_args()
    folder = Path(tempfile.mkdtemp(prefix="facecomp-queue-bench-"))
    try:
        for w in args.workers:
            print(json.dumps(run_queue(folder, f"w{w}", w, args.segment)), flush=True)
        if args.resume:
            print(json.dumps({"resume": resume_cost(folder, args.segment)}), flush=True)
        if args.ray:
            for row in ray_vs_local(folder, 2, args.segment):
                print(json.dumps(row), flush=True)
    finally:
        shutil.rmtree(folder, ignore_errors=True)


if __name__ == "__main__":
    main()
