"""The queue's Ray backend with a real Ray, confined to loopback inside a network namespace of its own.

The test re-executes this file under ``unshare --net`` (root only: a namespace whose only interface is
``lo``, brought up first), so Ray cannot bind or reach any address but 127.0.0.1; where no namespace can
be made, it skips with the reason. Inside, the same job runs on the local backend and on Ray (``address=
"local"``, auth disabled, segments on a separate "shared storage" folder), and one Ray worker is killed
with SIGKILL while it renders a segment: Ray retries that task on another worker and the output's decoded
frames must equal the local backend's. The two-node tests start a second node in a mount namespace of its
own (an empty tmpfs over a folder, another file bound over a photo) to show that the probes before a job
renders refuse a segment folder or an input file that node does not see as the driver does.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

CLIP = "grid_lwbsza.mpg"
PHOTO = "grace_hopper.jpg"


def _hashes(path) -> list[str]:
    import av
    with av.open(str(path)) as c:
        return [hashlib.sha256(f.to_ndarray(format="rgb24").tobytes()).hexdigest() for f in c.decode(video=0)]


def _interfaces() -> list[str]:
    """This network namespace's interfaces (/proc/net/dev follows the namespace; /sys/class/net may not)."""
    lines = Path("/proc/net/dev").read_text().splitlines()[2:]
    return sorted(line.split(":", 1)[0].strip() for line in lines)


def _listening() -> list[str]:
    """Local addresses of this namespace's listening TCP sockets (/proc/net/tcp and tcp6, hex)."""
    out = []
    for name in ("tcp", "tcp6"):
        for line in Path(f"/proc/net/{name}").read_text().splitlines()[1:]:
            fields = line.split()
            if fields[3] == "0A":  # LISTEN
                out.append(fields[1].split(":")[0])
    return sorted(set(out))


def _is_loopback(hex_addr: str) -> bool:
    if len(hex_addr) == 8:  # IPv4, little-endian: 0100007F is 127.0.0.1
        return hex_addr[6:8] == "7F"
    return hex_addr in ("00000000000000000000000001000000", "0000000000000000FFFF00000100007F")


def _write_job(path: Path, media: Path, out: Path, storage: Path | None, end: int = 48, *,
               clip: Path | None = None, photo: Path | None = None) -> Path:
    storage_line = f'storage = "{storage}"\n' if storage else ""
    path.write_text(f'''schema = "facecomp.job/1"
input = "{clip or media / CLIP}"
output = "{out}"
manifest_id = "ray-vs-local"
end = {end}
{storage_line}[settings]
source = ["{photo or media / PHOTO}"]
preset = "ultrafast"
[options]
segment_frames = 12
''', encoding="utf-8")
    return path


def _killer(storage: Path, report: dict, stop: threading.Event) -> None:
    """SIGKILL one Ray worker while it is encoding a segment (its temp file is there, not yet renamed)."""
    while not stop.is_set():
        if any(storage.rglob(".seg_*")):
            for entry in Path("/proc").iterdir():
                if not entry.name.isdigit():
                    continue
                try:
                    cmd = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
                except OSError:
                    continue
                if cmd.startswith("ray::render_segment"):
                    os.kill(int(entry.name), signal.SIGKILL)
                    report["killed_pid"] = int(entry.name)
                    return
        time.sleep(0.01)


def helper(work: Path, media: Path) -> None:
    """Runs inside the namespace: local run, Ray run with a worker killed, results as JSON on stdout."""
    interfaces = _interfaces()
    assert interfaces == ["lo"], f"the namespace has more than loopback: {interfaces}"
    os.environ["RAY_AUTH_MODE"] = "disabled"
    from facecomp.queue.progress import JsonProgress
    from facecomp.queue.runner import LocalBackend, Runner
    from facecomp.queue.store import QueueDir
    result: dict = {"interfaces": interfaces}
    devnull = io.StringIO()  # the JSON progress lines are not needed here
    qa = QueueDir(work / "QL", create=True)
    qa.add([_write_job(work / "local.toml", media, work / "local.mp4", None)])
    t0 = time.perf_counter()
    result["local_summary"] = Runner(qa, LocalBackend(2), JsonProgress(devnull)).run()
    result["local_s"] = time.perf_counter() - t0

    from facecomp.queue.ray_backend import RayBackend
    storage = work / "shared-storage"
    storage.mkdir()
    qr = QueueDir(work / "QR", create=True)
    (jid,) = qr.add([_write_job(work / "ray.toml", media, work / "ray.mp4", storage)])
    t0 = time.perf_counter()
    backend = RayBackend(workers=2)
    result["ray_start_s"] = time.perf_counter() - t0
    import ray
    result["ray_node_ips"] = sorted({n["NodeManagerAddress"] for n in ray.nodes()})
    result["listening"] = _listening()
    stop = threading.Event()
    kill: dict = {}
    killer = threading.Thread(target=_killer, args=(storage, kill, stop), daemon=True)
    killer.start()
    t0 = time.perf_counter()
    result["ray_summary"] = Runner(qr, backend, JsonProgress(devnull)).run()
    result["ray_s"] = time.perf_counter() - t0
    stop.set()
    result["kill"] = kill
    result["ray_log"] = qr.log_path(jid).read_text()
    result["local_hashes"] = _hashes(work / "local.mp4")
    result["ray_hashes"] = _hashes(work / "ray.mp4")
    result["ray_manifest"] = json.loads((work / "ray.mp4.synthetic.json").read_text())
    print("RESULT " + json.dumps(result))


def _need_namespace() -> None:
    if os.geteuid() != 0 or shutil.which("unshare") is None or shutil.which("ip") is None:
        pytest.skip("a private network namespace (unshare --net, as root, with iproute2) cannot be made here; "
                    "Ray is never run outside one in tests")
    probe = subprocess.run(["unshare", "--net", "sh", "-c", "ip link set lo up && tail -n +3 /proc/net/dev"],
                           capture_output=True, text=True, check=False)
    if probe.returncode != 0 or [x.split(":")[0].strip() for x in probe.stdout.splitlines()] != ["lo"]:
        pytest.skip(f"unshare --net failed here ({probe.stderr.strip() or probe.stdout.strip()})")


def _in_namespace(mode: str, tmp_path: Path, media: Path) -> dict:
    """Run this file's helper in a new network namespace holding only loopback; its RESULT line as a dict."""
    script = f"ip link set lo up && exec {sys.executable} {Path(__file__).resolve()} {mode} {tmp_path} {media}"
    env = dict(os.environ, RAY_AUTH_MODE="disabled", RAY_USAGE_STATS_ENABLED="0")
    proc = subprocess.run(["unshare", "--net", "sh", "-c", script], capture_output=True, text=True, timeout=280,
                          env=env, cwd=tmp_path, check=False)
    line = next((x for x in proc.stdout.splitlines() if x.startswith("RESULT ")), None)
    assert proc.returncode == 0 and line, f"helper failed ({proc.returncode}):\n{proc.stdout[-2000:]}\n{proc.stderr[-4000:]}"
    return json.loads(line[len("RESULT "):])


def test_ray_backend_matches_local_and_survives_a_killed_worker(tmp_path, shared_media):
    pytest.importorskip("ray", reason="the distributed extra (Ray) is not installed")
    _need_namespace()
    r = _in_namespace("--helper", tmp_path, shared_media)
    assert r["interfaces"] == ["lo"] and r["ray_node_ips"] == ["127.0.0.1"]
    assert r["listening"] and all(_is_loopback(a) for a in r["listening"]), r["listening"]  # Ray bound loopback only
    assert r["local_summary"]["done"] == 1 and r["ray_summary"]["done"] == 1, (r["local_summary"], r["ray_summary"])
    assert r["ray_summary"]["backend"] == "ray"
    diff = [i for i, (a, b) in enumerate(zip(r["ray_hashes"], r["local_hashes"])) if a != b]
    assert len(r["ray_hashes"]) == len(r["local_hashes"]) == 48 and not diff, f"frames differ: {diff}"
    assert r["kill"].get("killed_pid"), "no Ray worker was caught mid-segment"
    committed_by = re.findall(r" committed \(.* on [^:]+:(\d+)", r["ray_log"])
    assert len(committed_by) == 4 and str(r["kill"]["killed_pid"]) not in committed_by  # retried elsewhere
    m = r["ray_manifest"]
    assert m["id"] == "ray-vs-local" and m["disclosure"]["segments"]["ranges"] == [[0, 11], [12, 23], [24, 35], [36, 47]]
    print(f"\nlocal 2 workers {r['local_s']:.1f} s; ray start {r['ray_start_s']:.1f} s + run {r['ray_s']:.1f} s "
          f"(one worker killed mid-segment)")


def cluster_helper(work: Path, media: Path) -> None:
    """Inside the namespace: a head and a second node on 127.0.0.1 (``ray start``), the driver joins with
    ``--address`` as on a real cluster; the result must equal the local backend's, frame for frame. The
    second node does not see the queue folder's segment folder: a job using it is refused before rendering."""
    assert _interfaces() == ["lo"]
    os.environ["RAY_AUTH_MODE"] = "disabled"
    from facecomp.queue.progress import JsonProgress
    from facecomp.queue.runner import LocalBackend, Runner
    from facecomp.queue.store import QueueDir
    ray_cli = str(Path(sys.executable).parent / "ray")
    common = ["--node-ip-address=127.0.0.1", "--num-cpus=1", "--disable-usage-stats"]
    result: dict = {}
    qa = QueueDir(work / "QL", create=True)
    qa.add([_write_job(work / "local.toml", media, work / "local.mp4", None, end=24)])
    Runner(qa, LocalBackend(2), JsonProgress(io.StringIO())).run()
    subprocess.run([ray_cli, "start", "--head", "--port=6390", "--include-dashboard=false", *common], check=True,
                   capture_output=True)
    try:
        storage = work / "shared-storage"
        storage.mkdir()
        qr = QueueDir(work / "QR", create=True)
        # the second node is a machine of its own as far as the queue folder goes: in a mount namespace
        # where an empty tmpfs lies over QR/work (the shared-storage folder it sees as this machine does)
        mount = f"mount -t tmpfs tmpfs {qr.root / 'work'} && exec {ray_cli} start --address=127.0.0.1:6390 " + " ".join(common)
        subprocess.run(["unshare", "--mount", "sh", "-c", mount], check=True, capture_output=True)
        from facecomp.queue.ray_backend import RayBackend
        # no storage: its segments would go to QR/work, which the second node does not see: refused
        (nostore,) = qr.add([_write_job(work / "nostore.toml", media, work / "nostore.mp4", None, end=24)])
        (jid,) = qr.add([_write_job(work / "ray.toml", media, work / "ray.mp4", storage, end=24)])
        t0 = time.perf_counter()
        backend = RayBackend(address="127.0.0.1:6390")
        import ray
        deadline = time.monotonic() + 60
        while len([n for n in ray.nodes() if n["Alive"]]) < 2 and time.monotonic() < deadline:
            time.sleep(0.5)
        result["nodes"] = sorted({(n["NodeManagerAddress"], n["NodeID"][:12]) for n in ray.nodes() if n["Alive"]})
        result["summary"] = Runner(qr, backend, JsonProgress(io.StringIO())).run()
        result["ray_s"] = time.perf_counter() - t0
        ray.shutdown()
        result["log"] = qr.log_path(jid).read_text()
        result["nostore_log"] = qr.log_path(nostore).read_text()
        result["nostore_state"] = qr.state(nostore)
        result["nostore_written"] = sorted(p.name for p in work.glob("nostore.mp4*")) + sorted(
            str(p.relative_to(qr.root)) for p in (qr.root / "work").rglob("*"))
    finally:
        subprocess.run([ray_cli, "stop", "--force"], capture_output=True, check=False)
    result["local_hashes"] = _hashes(work / "local.mp4")
    result["ray_hashes"] = _hashes(work / "ray.mp4")
    print("RESULT " + json.dumps(result))


@pytest.mark.slow
def test_ray_two_nodes_on_loopback_by_address(tmp_path, shared_media):
    pytest.importorskip("ray", reason="the distributed extra (Ray) is not installed")
    _need_namespace()
    r = _in_namespace("--cluster-helper", tmp_path, shared_media)
    assert [ip for ip, _ in r["nodes"]] == ["127.0.0.1", "127.0.0.1"]
    assert r["summary"]["done"] == 1 and r["summary"]["backend"] == "ray"
    assert r["summary"]["refused"] == 1 and r["summary"]["failed"] == 0  # the job without storage
    refused = next(j for j in r["summary"]["jobs"] if j["status"] == "refused")
    assert "is not seen by 1 node(s)" in refused["error"] and 'storage = "FOLDER"' in refused["error"]
    assert any(node in refused["error"] for _, node in r["nodes"])
    assert "--backend local" in r["nostore_log"] and r["nostore_state"]["status"] == "queued"
    assert r["nostore_written"] == []  # nothing of it rendered or written
    used = set(re.findall(r"Ray node ([0-9a-f]+)", r["log"]))
    assert used and used <= {node for _, node in r["nodes"]}
    assert len(r["ray_hashes"]) == 24 and r["ray_hashes"] == r["local_hashes"]
    print(f"\ntwo-node Ray (by address): {r['ray_s']:.1f} s including connecting; segments on {len(used)} node(s)")


def test_input_probe_names_what_differs(tmp_path):
    """The check a node runs on its copies of a job's files (no Ray needed: it is a plain function)."""
    from facecomp.queue.ray_backend import _check_inputs, fingerprint
    data = bytes(range(256)) * 400
    a = tmp_path / "a.jpg"
    a.write_bytes(data)
    want = fingerprint(str(a))
    assert want.whole and want.size == len(data) and want.sha256 == hashlib.sha256(data).hexdigest()
    assert _check_inputs([want]) == []
    a.write_bytes(data[:-1] + b"\x00")
    assert _check_inputs([want]) == [(str(a), "content differs (sha256 of the whole file; same size)")]
    a.write_bytes(data + b"!")
    assert _check_inputs([want]) == [(str(a), f"size differs ({len(data) + 1} bytes there, {len(data)} here)")]
    a.unlink()
    assert _check_inputs([want]) == [(str(a), "missing there")]
    a.mkdir()  # something at the path that cannot be read as a file
    assert _check_inputs([want]) == [(str(a), "unreadable there (Is a directory)")]


def test_big_clip_probe_reads_its_ends_and_samples(tmp_path):
    """A clip over WHOLE_HASH_LIMIT is compared by its size, first and last MiB and 16 samples between."""
    from facecomp.queue import ray_backend as rb
    big = tmp_path / "big.mov"
    with open(big, "wb") as f:  # sparse: reads as zeros, costs no disk
        f.truncate(rb.WHOLE_HASH_LIMIT + 1)
    want = rb.fingerprint(str(big))
    assert not want.whole and want.size == rb.WHOLE_HASH_LIMIT + 1
    assert rb._check_inputs([want]) == []

    def changed_at(offset: int) -> list:
        with open(big, "r+b") as f:
            f.seek(offset)
            f.write(b"\x01")
        try:
            return rb._check_inputs([want])
        finally:
            with open(big, "r+b") as f:
                f.seek(offset)
                f.write(b"\x00")

    sample = (want.size - rb.SAMPLE_BYTES) * 5 // (rb.SAMPLES + 1)
    for offset in (10, want.size - 1, sample + 100):  # head, tail, inside the fifth sample
        why = "content differs (sha256 of its first and last MiB and 16 samples between; same size)"
        assert changed_at(offset) == [(str(big), why)], offset
    # what the sampled check does not cover: a change between samples (the price of not reading GiBs per node)
    assert changed_at(sample + rb.SAMPLE_BYTES + 10) == []


def test_job_inputs_lists_the_clip_and_every_path_setting(tmp_path, shared_media):
    from facecomp.queue.ray_backend import job_inputs
    from facecomp.queue.store import QueueDir
    job_file = tmp_path / "j.toml"
    _write_job(job_file, shared_media, tmp_path / "o.mp4", None)
    text = job_file.read_text().replace("[settings]\n", f'[settings]\nreference = ["{shared_media / PHOTO}", '
                                                         f'"{shared_media / "face_recognition_obama.jpg"}"]\n')
    job_file.write_text(text)
    q = QueueDir(tmp_path / "Q", create=True)
    (jid,) = q.add([job_file])
    assert job_inputs(q.job(jid)) == [("input", str(shared_media / CLIP)), ("settings.source", str(shared_media / PHOTO)),
                                      ("settings.reference", str(shared_media / PHOTO)),
                                      ("settings.reference", str(shared_media / "face_recognition_obama.jpg"))]


def inputs_helper(work: Path, media: Path) -> None:
    """Inside the namespace: a head and a second node on 127.0.0.1, the second in a mount namespace where an
    empty tmpfs covers the folder holding one job's input clip, and another file (same size, one byte
    changed) lies over another job's source photo. Both jobs are refused before rendering, naming the
    second node; a third job, whose files every node sees alike, renders."""
    assert _interfaces() == ["lo"]
    os.environ["RAY_AUTH_MODE"] = "disabled"
    from facecomp.queue.progress import JsonProgress
    from facecomp.queue.runner import Runner
    from facecomp.queue.store import QueueDir
    ray_cli = str(Path(sys.executable).parent / "ray")
    common = ["--node-ip-address=127.0.0.1", "--num-cpus=1", "--disable-usage-stats"]
    hidden, photos, storage = work / "hidden", work / "photos", work / "shared-storage"
    for d in (hidden, photos, storage):
        d.mkdir()
    shutil.copy(media / CLIP, hidden / CLIP)
    shutil.copy(media / PHOTO, photos / PHOTO)
    other = bytearray((media / PHOTO).read_bytes())
    other[len(other) // 2] ^= 0xFF  # the same size, another file
    (work / "other.jpg").write_bytes(bytes(other))
    result: dict = {}
    subprocess.run([ray_cli, "start", "--head", "--port=6391", "--include-dashboard=false", *common], check=True,
                   capture_output=True)
    try:
        mounts = (f"mount -t tmpfs tmpfs {hidden} && mount --bind {work / 'other.jpg'} {photos / PHOTO} && "
                  f"exec {ray_cli} start --address=127.0.0.1:6391 " + " ".join(common))
        subprocess.run(["unshare", "--mount", "sh", "-c", mounts], check=True, capture_output=True)
        q = QueueDir(work / "Q", create=True)
        ids = {}
        for name, kw in (("hidden_clip", {"clip": hidden / CLIP}), ("other_photo", {"photo": photos / PHOTO}),
                         ("seen", {})):
            (ids[name],) = q.add([_write_job(work / f"{name}.toml", media, work / f"{name}.mp4", storage, end=24,
                                             **kw)])
        from facecomp.queue.ray_backend import RayBackend
        backend = RayBackend(address="127.0.0.1:6391")
        import ray
        deadline = time.monotonic() + 60
        while len([n for n in ray.nodes() if n["Alive"]]) < 2 and time.monotonic() < deadline:
            time.sleep(0.5)
        head = ray.get_runtime_context().get_node_id()
        result["head"] = head
        result["second"] = [n["NodeID"] for n in ray.nodes() if n["Alive"] and n["NodeID"] != head]
        backend.unshared_nodes(storage)  # the folder probe, so what follows times the input probes alone
        before = result["folder_probe_s"] = getattr(backend, "probe_seconds", 0.0)
        t0 = time.perf_counter()
        result["summary"] = Runner(q, backend, JsonProgress(io.StringIO())).run()
        result["run_s"] = time.perf_counter() - t0
        result["input_probe_s"] = getattr(backend, "probe_seconds", 0.0) - before
        ray.shutdown()
        for name, jid in ids.items():
            result[name] = {"state": q.state(jid)["status"], "log": q.log_path(jid).read_text(),
                            "written": sorted(str(p.relative_to(work)) for p in
                                              [*work.glob(f"{name}.mp4*"), *(storage / jid).rglob("*")])}
    finally:
        subprocess.run([ray_cli, "stop", "--force"], capture_output=True, check=False)
    result["seen_hashes"] = _hashes(work / "seen.mp4")
    print("RESULT " + json.dumps(result))


@pytest.fixture(scope="module")
def inputs_run(tmp_path_factory, shared_media) -> dict:
    """One two-node cluster run shared by the input-probe tests (a cluster takes ~20 s to start here)."""
    pytest.importorskip("ray", reason="the distributed extra (Ray) is not installed")
    _need_namespace()
    r = _in_namespace("--inputs-helper", tmp_path_factory.mktemp("inputs"), shared_media)
    print(f"\nprobes: segment folder {r['folder_probe_s']:.2f} s (first tasks on the nodes), then the inputs of "
          f"3 jobs {r['input_probe_s']:.2f} s, of a {r['run_s']:.1f} s run")
    return r


def _refusal(r: dict, name: str) -> str:
    jid_error = [j["error"] for j in r["summary"]["jobs"] if j["status"] == "refused" and j["output"].endswith(
        f"/{name}.mp4")]
    assert jid_error, f"{name} was not refused: {r['summary']['jobs']}"
    return jid_error[0]


@pytest.mark.slow
def test_ray_refuses_an_input_clip_a_node_does_not_see(inputs_run):
    r = inputs_run
    assert len(r["second"]) == 1
    err = _refusal(r, "hidden_clip")
    assert f"node {r['second'][0][:12]} (127.0.0.1)" in err and r["head"][:12] not in err  # the node lacking it
    assert re.search(r"input \S+/hidden/grid_lwbsza\.mpg missing there", err), err
    assert "settings.source" not in err and PHOTO not in err  # the photo it names is seen alike
    assert "shared storage that every node and this machine mount at the same path" in err
    assert r["hidden_clip"]["state"] == "queued" and "not taken: its input files" in r["hidden_clip"]["log"]
    assert r["hidden_clip"]["written"] == []  # no segment rendered, no output


@pytest.mark.slow
def test_ray_refuses_a_source_photo_that_differs_on_a_node(inputs_run):
    r = inputs_run
    err = _refusal(r, "other_photo")
    assert f"node {r['second'][0][:12]} (127.0.0.1)" in err and r["head"][:12] not in err
    assert re.search(r"settings\.source \S+/photos/grace_hopper\.jpg content differs \(sha256 of the whole file",
                     err), err
    assert CLIP not in err  # its clip is seen alike
    assert r["other_photo"]["state"] == "queued" and r["other_photo"]["written"] == []
    # the job whose files every node sees alike renders, on the same cluster
    assert r["summary"]["done"] == 1 and r["summary"]["refused"] == 2 and r["summary"]["failed"] == 0
    assert r["seen"]["state"] == "done" and len(r["seen_hashes"]) == 24


if __name__ == "__main__" and len(sys.argv) == 4 and sys.argv[1] == "--inputs-helper":
    inputs_helper(Path(sys.argv[2]), Path(sys.argv[3]))
if __name__ == "__main__" and len(sys.argv) == 4 and sys.argv[1] == "--helper":
    helper(Path(sys.argv[2]), Path(sys.argv[3]))
if __name__ == "__main__" and len(sys.argv) == 4 and sys.argv[1] == "--cluster-helper":
    cluster_helper(Path(sys.argv[2]), Path(sys.argv[3]))
