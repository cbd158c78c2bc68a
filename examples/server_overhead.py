"""What the render server costs per frame on top of the effect itself.

    python examples/server_overhead.py [--frames N] [--sizes 1080p,4k] [--clients 1,4] [--json]

Starts a private ``facecomp serve`` (its own socket in a temp folder; the user's server is not touched),
opens a label-only session (no source photo: label + watermark, so the figures are about the server,
not the swap) and renders RGBA frames through it from 1 and 4 concurrent clients, as a native plugin
does: pixels in a reused memfd, the result written back in place. Per frame it reports

- round trip: client send to reply received (pixels already in the shared memory),
- engine: ``ClipSession.render`` inside the server (reported by the server as ``engine_ms``),
- overhead = round trip - engine: validation, mapping, JSON and the socket, and any wait for a CPU
  (on a loaded machine this dominates); the result is stamped straight into the shared memory, so
  there is no copy of it,
- cpu: the CPU time the overhead takes (the client's thread plus the server's connection thread outside
  the engine), which does not grow with other load: what the server itself costs,

and, for one client, the same through ``Client.render`` with an ordinary array (adds the Python client's
own copy in and out, which a native client that renders into the memfd does not pay).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

SIZES = {"1080p": (1080, 1920), "4k": (2160, 3840), "720p": (720, 1280)}


def _percentile(values: list[float], q: float) -> float:
    values = sorted(values)
    return values[min(len(values) - 1, int(round(q * (len(values) - 1))))]


def run_case(socket_path: Path, size: tuple[int, int], dtype: str, clients: int, frames: int,
             zero_copy: bool = True) -> dict:
    from facecomp.server import connect

    h, w = size
    rng = np.random.default_rng(0)
    base = rng.random((h, w, 4), dtype=np.float32)
    pixels = base if dtype == "float32" else (base * 255).astype(np.uint8)
    setup = connect(start=False, socket_path=socket_path, timeout=10)
    sid = setup.open_clip(None, {}, clip_id="overhead")
    rows: list[tuple[float, float, float]] = []
    lock = threading.Lock()
    barrier = threading.Barrier(clients)

    def worker(k: int) -> None:
        with connect(start=False, socket_path=socket_path, timeout=10, request_timeout=300) as c:
            if zero_copy:
                buf = c.frame_buffer(pixels.shape, pixels.dtype)
            c.render(sid, pixels.copy(), 0, 0.0)  # warm: engine sprites, the server's mapping
            barrier.wait()
            for n in range(frames):
                if zero_copy:
                    buf[...] = pixels  # the host writes its frame into the memfd (not timed)
                    arg = buf
                else:
                    arg = pixels
                t0, c0 = time.perf_counter(), time.thread_time()
                c.render(sid, arg, n + 1, (n + 1) / 25)
                rt, cpu = (time.perf_counter() - t0) * 1e3, (time.thread_time() - c0) * 1e3
                reply = c.last_reply
                with lock:
                    rows.append((rt, float(reply["engine_ms"]), float(reply["server_ms"]),
                                 cpu + float(reply["server_cpu_ms"])))

    threads = [threading.Thread(target=worker, args=(k,)) for k in range(clients)]
    t0 = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wall = time.perf_counter() - t0
    setup.close_clip(sid)
    setup.close()
    over = [r[0] - r[1] for r in rows]
    inside = [r[2] - r[1] for r in rows]
    return {"size": f"{w}x{h}", "dtype": dtype, "channels": 4, "clients": clients, "frames": len(rows),
            "zero_copy": zero_copy, "mb_per_frame": round(pixels.nbytes / 2**20, 1),
            "round_trip_ms": round(statistics.median(r[0] for r in rows), 3),
            "engine_ms": round(statistics.median(r[1] for r in rows), 3),
            "overhead_ms": round(statistics.median(over), 3),
            "overhead_p90_ms": round(_percentile(over, 0.9), 3),
            "overhead_min_ms": round(min(over), 3),
            "server_side_overhead_ms": round(statistics.median(inside), 3),
            "overhead_cpu_ms": round(statistics.median(r[3] for r in rows), 3),
            "frames_per_s": round(len(rows) / wall, 2)}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--frames", type=int, default=12, help="frames per client per case (default 12)")
    ap.add_argument("--sizes", default="1080p,4k", help=f"comma list of {', '.join(SIZES)}")
    ap.add_argument("--dtypes", default="uint8,float32")
    ap.add_argument("--clients", default="1,4")
    ap.add_argument("--json", action="store_true", help="print JSON lines instead of a table")
    args = ap.parse_args(argv)

    from facecomp.server import connect

    tmp = Path(tempfile.mkdtemp(prefix="fc-overhead-"))
    sock = tmp / "serve.sock"
    proc = subprocess.Popen([sys.executable, "-m", "facecomp.server", "--socket", str(sock), "--idle-timeout", "120"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                connect(start=False, socket_path=sock, timeout=1).close()
                break
            except Exception:
                if time.monotonic() > deadline or proc.poll() is not None:
                    raise SystemExit("the server did not start")
                time.sleep(0.05)
        with connect(start=False, socket_path=sock, timeout=5) as c:  # the floor: a request with no pixels
            trips = []
            for _ in range(200):
                t0 = time.perf_counter()
                c.stats()
                trips.append((time.perf_counter() - t0) * 1e3)
        floor = {"stats_round_trip_ms": round(statistics.median(trips), 3), "min_ms": round(min(trips), 3),
                 "load_average": os.getloadavg()[0], "cpus": os.cpu_count()}
        print(json.dumps(floor) if args.json else
              f"bare request (stats) round trip: median {floor['stats_round_trip_ms']:.3f} ms, min "
              f"{floor['min_ms']:.3f} ms; load average {floor['load_average']:.1f} on {floor['cpus']} CPUs")
        cases = []
        for size in args.sizes.split(","):
            for dtype in args.dtypes.split(","):
                for n in (int(c) for c in args.clients.split(",")):
                    cases.append((SIZES[size], dtype, n, True))
                cases.append((SIZES[size], dtype, 1, False))
        if not args.json:
            print(f"{'frame':>10} {'dtype':>7} {'clients':>7} {'path':>9} {'MB':>6} {'round trip':>10} "
                  f"{'engine':>8} {'overhead':>8} {'p90':>7} {'min':>6} {'in server':>9} {'cpu':>6} {'fps':>6}   (ms, medians)")
        for size, dtype, n, zero in cases:
            r = run_case(sock, size, dtype, n, args.frames, zero)
            if args.json:
                print(json.dumps(r), flush=True)
            else:
                print(f"{r['size']:>10} {dtype:>7} {n:>7} {'memfd' if zero else 'py copy':>9} {r['mb_per_frame']:>6} "
                      f"{r['round_trip_ms']:>10.2f} {r['engine_ms']:>8.2f} {r['overhead_ms']:>8.2f} "
                      f"{r['overhead_p90_ms']:>7.2f} {r['overhead_min_ms']:>6.2f} {r['server_side_overhead_ms']:>9.2f} {r['overhead_cpu_ms']:>6.2f} "
                      f"{r['frames_per_s']:>6.1f}",
                      flush=True)
    finally:
        try:
            connect(start=False, socket_path=sock, timeout=2).shutdown()
        except Exception:
            proc.kill()
        proc.wait(10)
        for p in tmp.iterdir():
            p.unlink()
        tmp.rmdir()
    return 0


if __name__ == "__main__":
    sys.exit(main())
