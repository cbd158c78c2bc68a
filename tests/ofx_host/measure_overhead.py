"""Per-frame overhead of the OpenFX bridge: the plugin's round trip minus the engine time the server reports.

Run: ``python tests/ofx_host/measure_overhead.py [--frames N] [--sizes 1920x1080,3840x2160]``. It builds the
bundle and the test host in a temporary folder, starts a private ``facecomp serve``, renders a real portrait
placed on a 1080p / 4K canvas at byte and float depth (RGBA), and prints, per case, the median over frames
1..N-1 (frame 0 opens the session) of: round trip (plugin: shared memory made and filled, request, reply,
copy back), engine_ms (the server's own figure for ClipSession.render), and their difference.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[2]
MEDIA = Path(os.environ.get("FACECOMP_SAMPLE_MEDIA", ROOT.parent / "shared" / "media"))


def canvas(width: int, height: int) -> np.ndarray:
    from PIL import Image

    face = Image.open(MEDIA / "skimage_astronaut_eileen_collins.png").convert("RGBA")
    side = min(width, height) // 2
    face = face.resize((side, side), Image.LANCZOS)
    out = np.full((height, width, 4), 255, np.uint8)
    out[..., :3] = 96
    y, x = (height - side) // 2, (width - side) // 2
    out[y:y + side, x:x + side] = np.asarray(face)
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--frames", type=int, default=4)
    ap.add_argument("--sizes", default="1920x1080,3840x2160")
    ap.add_argument("--depths", default="byte,float")
    args = ap.parse_args()
    sys.path.insert(0, str(ROOT))
    from facecomp.ofx_bridge.build import build_bundle

    tmp = Path(tempfile.mkdtemp(prefix="ofx-measure-"))
    exe = str(Path(sys.executable).with_name("facecomp"))
    sock = tmp / "srv" / "serve.sock"
    sock.parent.mkdir(mode=0o700)
    env = dict(os.environ, FACECOMP_SERVER_SOCKET=str(sock), FACECOMP_OFX_TIMING="1", FACECOMP_EXECUTABLE=exe)
    server = subprocess.Popen([exe, "serve", "--idle-timeout", "600"], env=env, stdout=subprocess.DEVNULL,
                              stderr=subprocess.DEVNULL)
    try:
        bundle = build_bundle(tmp / "b")
        host = tmp / "ofx_host"
        subprocess.run([shutil.which("cc") or "gcc", "-std=c11", "-O2", "-o", str(host),
                        str(ROOT / "tests" / "ofx_host" / "host.c"), str(ROOT / "ofx_bridge" / "fc_json.c"),
                        "-ldl", "-lpthread"], check=True)
        photo = str(MEDIA / "face_recognition_obama.jpg")
        print(f"{'size':>10} {'depth':>6} {'MB/frame':>9} {'round trip ms':>14} {'engine ms':>10} {'overhead ms':>12}"
              f" {'plugin side':>12} {'server side':>12}")
        for size in args.sizes.split(","):
            w, h = (int(v) for v in size.split("x"))
            base = canvas(w, h)
            for depth in args.depths.split(","):
                frame = base if depth == "byte" else (base.astype(np.float32) / 255.0)
                d = tmp / f"{size}_{depth}"
                d.mkdir()
                for i in range(args.frames):
                    frame.tofile(d / f"in_{i}.raw")
                t0 = time.monotonic()
                out = subprocess.run([str(host), "--plugin", str(bundle.binary), "--in", str(d / "in_%d.raw"),
                                      "--width", str(w), "--height", str(h), "--comps", "4", "--depth", depth,
                                      "--frames", str(args.frames), "--param", f"source={photo}",
                                      "--param", "server_timeout=600"], env=env, capture_output=True, text=True)
                rt, eng, srv = [], [], []
                for line in out.stdout.splitlines():
                    if "facecomp timing:" in line:
                        parts = dict(p.split("=") for p in line.split("timing:")[1].split())
                        rt.append(float(parts["round_trip_ms"]))
                        eng.append(float(parts["engine_ms"]))
                        srv.append(float(parts["server_ms"]))
                if len(rt) < 2:
                    print(f"{size:>10} {depth:>6}: no timings ({out.stdout[-500:]} {out.stderr[-500:]})")
                    continue
                over = [a - b for a, b in zip(rt[1:], eng[1:])]
                mb = frame.nbytes / 2**20
                print(f"{size:>10} {depth:>6} {mb:9.1f} {statistics.median(rt[1:]):14.1f} "
                      f"{statistics.median(eng[1:]):10.1f} {statistics.median(over):12.1f}"
                      f" {statistics.median(a - b for a, b in zip(rt[1:], srv[1:])):12.1f}"
                      f" {statistics.median(a - b for a, b in zip(srv[1:], eng[1:])):12.1f}"
                      f"   (all {time.monotonic() - t0:.0f} s)")
                shutil.rmtree(d)
    finally:
        subprocess.run([exe, "serve", "--stop"], env=env, capture_output=True)
        try:
            server.wait(timeout=20)
        except subprocess.TimeoutExpired:
            server.kill()
        shutil.rmtree(tmp, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
