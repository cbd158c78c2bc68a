"""The CLI runs its commands with one BLAS thread and one OpenCV thread (a multi-threaded OpenBLAS spins a
core away from the encoder on the pipeline's small products; OpenCV's pool waits for its slowest part on
small patches), except training, whose matrix products are large. Both are restored afterwards."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

TESTS = Path(__file__).parent


def _threads_under(command: str, tmp_path: Path) -> tuple[dict, list[int]]:
    out = tmp_path / f"{command}.json"
    # a fresh interpreter: OpenBLAS starts with its own default (2 or more on a multi-core machine)
    code = ("import json, sys; sys.path.insert(0, %r)\n"
            "import numpy, cv2\n"
            "from threadpoolctl import threadpool_info\n"
            "from facecomp import cli\n"
            "cv2.setNumThreads(3)\n"
            "before = [p['num_threads'] for p in threadpool_info() if p['user_api'] == 'blas']\n"
            "cli.COMMANDS[%r] = ('blas_probe_cmd', 'test probe')\n"
            "rc = cli.main([%r, %r])\n"
            "after = [p['num_threads'] for p in threadpool_info() if p['user_api'] == 'blas']\n"
            "print(json.dumps([rc, before, after, cv2.getNumThreads()]))\n") % (str(TESTS), command, command, str(out))
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                         env={"PATH": "/usr/bin:/bin", "OPENBLAS_NUM_THREADS": "2"})
    assert run.returncode == 0, run.stderr
    rc, before, after, cv_after = json.loads(run.stdout.strip().splitlines()[-1])
    assert rc == 0 and before and after == before and cv_after == 3  # restored once the command returns
    # numpy's OpenBLAS starts with the environment's 2 (OpenCV's own bundled one, loaded with cv2, with 1)
    assert max(before) == 2
    return json.loads(out.read_text()), before


def test_commands_run_with_one_blas_thread(tmp_path):
    inside, before = _threads_under("render", tmp_path)
    assert inside == {"blas": [1] * len(before), "opencv": 1}


def test_training_keeps_its_blas_threads(tmp_path):
    inside, before = _threads_under("train", tmp_path)
    assert inside == {"blas": before, "opencv": 3}
