"""The render queue: job-file validation, segment renders joined without re-encoding, resume after kill -9.

Real parts throughout: real face clips (GRID corpus) rendered by the real pipeline in real worker
processes, joined by PyAV packet copy, checked by decoding frames, reading tags back, decoding the
watermark and validating C2PA.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import av
import pytest
from facecomp.errors import SettingsError
from facecomp.queue.jobs import MAX_BYTES, PathPolicy, load_job
from facecomp.queue.segments import plan_segments, source_keyframes
from facecomp.queue.store import QueueDir

CLI = [sys.executable, "-c", "import sys; from facecomp.cli import main; sys.exit(main())"]
CLIP = "grid_bbaf2n.mpg"
PHOTO = "skimage_astronaut_eileen_collins.png"


def facecomp(*args, env=None, check=True, **kw):
    proc = subprocess.run([*CLI, *map(str, args)], capture_output=True, text=True,
                          env=env, timeout=240, check=False, **kw)
    if check and proc.returncode != 0:
        raise AssertionError(f"facecomp {' '.join(map(str, args))} exited {proc.returncode}:\n{proc.stderr[-3000:]}")
    return proc


def frame_hashes(path) -> list[str]:
    with av.open(str(path)) as c:
        return [hashlib.sha256(f.to_ndarray(format="rgb24").tobytes()).hexdigest() for f in c.decode(video=0)]


def write_job(path: Path, media: Path, output: Path, *, end=36, segment=12, manifest_id="queue-test-1",
              extra_settings="", options="", clip: Path | None = None) -> Path:
    path.write_text(f'''schema = "facecomp.job/1"
input = "{clip or media / CLIP}"
output = "{output}"
manifest_id = "{manifest_id}"
end = {end}
[settings]
source = ["{media / PHOTO}"]
preset = "ultrafast"
{extra_settings}
[options]
segment_frames = {segment}
{options}
''', encoding="utf-8")
    return path


# ---------------------------------------------------------------------------------------------- validation

@pytest.fixture()
def clip(tmp_path, shared_media) -> Path:
    return shared_media / CLIP


def _job(tmp_path: Path, text: str, name="job.toml") -> Path:
    p = tmp_path / name
    p.write_text(text, encoding="utf-8")
    return p


def test_job_validation_messages(tmp_path, clip):
    ok = f'input = "{clip}"\noutput = "{tmp_path}/o.mp4"\n'
    job = load_job(_job(tmp_path, ok))
    assert job.input == str(clip.resolve()) and job.output == str(tmp_path.resolve() / "o.mp4")
    cases = {
        ok + "colour = 1\n": "unknown key(s) colour",
        ok + "[options]\nretries = 'two'\n": "options.retries: expected an integer",
        ok + "[options]\nsegment_frames = 0\n": "options.segment_frames: 0 is outside",
        ok + "[options]\nspeed = 1\n": "options: unknown key(s) speed",
        ok + "[settings]\nlabel_scale = 0.5\n": "label_scale",
        ok + "[settings]\nnot_a_setting = 1\n": "not_a_setting",
        ok + "[settings]\nsource = ['missing.jpg']\n": "no such file",
        f'input = "{tmp_path}/nope.mp4"\noutput = "{tmp_path}/o.mp4"\n': "input: no such file",
        f'input = "{clip}"\noutput = "{clip}"\n': "the output is the input",
        f'input = "{clip}"\noutput = "{tmp_path}/o.avi"\n': "the queue writes",
        f'input = "{clip}"\n': "output: missing",
        f'input = "{clip}"\noutput = "{tmp_path}/no/such/o.mp4"\n': "does not exist",
        ok + 'start = 30\nend = 10\n': "must be after start",
        ok + 'end = "soon"\n': "end: expected a frame number",
        ok + 'manifest_id = "../../etc"\n': "manifest_id",
        'schema = "facecomp.job/9"\n' + ok: "is not 'facecomp.job/1'",
    }
    for text, needle in cases.items():
        with pytest.raises(SettingsError) as e:
            load_job(_job(tmp_path, text))
        assert needle in str(e.value), (text, str(e.value))
        assert "job.toml" in str(e.value)  # the message names the job file
    (tmp_path / "exists.mp4").write_bytes(b"x")
    with pytest.raises(SettingsError, match="exists"):
        load_job(_job(tmp_path, f'input = "{clip}"\noutput = "{tmp_path}/exists.mp4"\n'))
    assert load_job(_job(tmp_path, f'input = "{clip}"\noutput = "{tmp_path}/exists.mp4"\n'
                                   '[options]\noverwrite = true\n')).options.overwrite


def test_hostile_job_files_are_refused(tmp_path, clip):
    big = tmp_path / "big.json"
    big.write_text('{"input": "' + "a" * (MAX_BYTES + 10) + '"}')
    deep = tmp_path / "deep.json"
    deep.write_text('{"settings": ' + "[" * 100000 + "]" * 100000 + "}")
    utf16 = tmp_path / "u16.toml"
    utf16.write_bytes(f'input = "{clip}"\n'.encode("utf-16"))
    latin = tmp_path / "latin.toml"
    latin.write_bytes(b'name = "caf\xe9"\n')
    dup = tmp_path / "dup.json"
    dup.write_text(json.dumps({"input": str(clip)})[:-1] + f', "input": "{clip}", "output": "x.mp4"}}')
    nested = tmp_path / "nested.json"
    nested.write_text(json.dumps({"input": str(clip), "output": "o.mp4", "settings": {"a": {"b": {"c": {"d": {"e": {"f": 1}}}}}}}))
    notjob = tmp_path / "job.yaml"
    notjob.write_text("input: x")
    expect = {big: "limited to", deep: "nested", utf16: "not UTF-8", latin: "not UTF-8", dup: "duplicate key",
              nested: "nested deeper", notjob: ".toml or .json"}
    for path, needle in expect.items():
        with pytest.raises(SettingsError) as e:
            load_job(path)
        assert needle in str(e.value), (path.name, str(e.value))


def test_non_finite_numbers_are_refused_naming_file_and_key(tmp_path, clip):
    """json reads NaN/Infinity (and 1e999 as inf), TOML has nan/inf: refused wherever they stand, the
    free-form encoder options included (those reached the queue's stored record before)."""
    base = {"input": str(clip), "output": str(tmp_path / "o.mp4")}
    cases = {
        "opts.json": ('{"input": "%s", "output": "%s", "settings": {"encoder_options": {"x264-params": NaN}}}',
                      "settings.encoder_options.x264-params: nan"),
        "big.json": ('{"input": "%s", "output": "%s", "settings": {"lighting": 1e999}}', "settings.lighting: inf"),
        "neg.json": ('{"input": "%s", "output": "%s", "settings": {"source": [-Infinity]}}', "settings.source[0]: -inf"),
        "t.toml": ('input = "%s"\noutput = "%s"\n[settings.encoder_options]\ng = nan\n', "settings.encoder_options.g: nan"),
    }
    for name, (text, needle) in cases.items():
        path = _job(tmp_path, text % (base["input"], base["output"]), name)
        with pytest.raises(SettingsError) as e:
            load_job(path)
        assert needle in str(e.value) and name in str(e.value) and "not a finite number" in str(e.value), str(e.value)
    fine = _job(tmp_path, json.dumps(dict(base, settings={"lighting": 0.5, "encoder_options": {"g": "12"}})), "ok.json")
    assert load_job(fine).settings["lighting"] == 0.5


def test_allowed_roots(tmp_path, shared_media):
    root = tmp_path / "root"
    (root / "in").mkdir(parents=True)
    (root / "out").mkdir()
    outside = tmp_path / "outside"
    outside.mkdir()
    src = root / "in" / "clip.mpg"
    src.write_bytes((shared_media / CLIP).read_bytes())
    (root / "in" / "escape.mpg").symlink_to(shared_media / CLIP)  # a symlink leading out of the root
    policy = PathPolicy([root])
    jobs = root / "jobs"
    jobs.mkdir()
    good = _job(jobs, 'input = "../in/clip.mpg"\noutput = "out.mp4"\n')
    with pytest.raises(SettingsError, match="climbs out"):
        load_job(good, policy)
    (jobs / "in").symlink_to(root / "in")
    good = _job(jobs, 'input = "in/clip.mpg"\noutput = "o.mp4"\n')
    assert load_job(good, policy).input == str(src.resolve())
    for text, needle in {
        f'input = "{src}"\noutput = "o.mp4"\n': "absolute path",
        'input = "in/escape.mpg"\noutput = "o.mp4"\n': "outside the queue's allowed roots",
        'input = "in/clip.mpg"\noutput = "../../outside/o.mp4"\n': "climbs out",
    }.items():
        with pytest.raises(SettingsError, match=needle):
            load_job(_job(jobs, text), policy)
    # the queue keeps its roots; two jobs may not write one output
    q = QueueDir(tmp_path / "Q", create=True, roots=[str(root)])
    a = _job(jobs, 'input = "in/clip.mpg"\noutput = "same.mp4"\n', "a.toml")
    b = _job(jobs, 'input = "in/clip.mpg"\noutput = "same.mp4"\n', "b.toml")
    with pytest.raises(SettingsError, match="also the output of"):
        q.add([a, b])
    assert q.ids() == []  # all or nothing
    (ida,) = q.add([a])
    with pytest.raises(SettingsError, match=f"already the output of queued job {ida}"):
        q.add([b])
    with pytest.raises(SettingsError, match="roots are fixed"):
        QueueDir(tmp_path / "Q", roots=[str(outside)])
    assert json.loads(q.job_path(ida).read_text())["manifest_id"]  # fixed at add time


def _small_queue(tmp_path: Path) -> tuple[QueueDir, str]:
    """A queue holding one job (validation needs only an input file; nothing here renders)."""
    src = tmp_path / "in.mp4"
    src.write_bytes(b"not rendered in this test")
    (jid,) = (q := QueueDir(tmp_path / "Q", create=True)).add([_job(tmp_path, f'input = "{src}"\noutput = "o.mp4"\n')])
    return q, jid


def test_cancel_reads_the_state_under_the_lock(tmp_path):
    """A runner that finishes the job between cancel's look and its lock: the job stays done."""
    q, jid = _small_queue(tmp_path)

    class FinishesFirst(QueueDir):
        def try_lock(self, job_id):
            if job_id == jid and self.state(job_id)["status"] == "queued":  # the runner ends the job now
                self.write_state(job_id, dict(self.state(job_id), status="done"))
            return super().try_lock(job_id)

    assert FinishesFirst(q.root).request_cancel(jid) == "done"
    assert q.state(jid)["status"] == "done"
    assert "cancelled" not in q.log_path(jid).read_text()


def test_clean_leaves_no_usable_lock_on_a_removed_lock_file(tmp_path, monkeypatch):
    """A runner that opened a job's lock file just before `clean` removed the job must not hold a lock on
    the removed file (the next runner would make a new file and take the job too)."""
    q, jid = _small_queue(tmp_path)
    q.write_state(jid, {"status": "done"})
    lock_path = q.root / "locks" / f"{jid}.lock"
    real_open, cleaned = os.open, []

    def open_then_clean(path, *args, **kw):
        fd = real_open(path, *args, **kw)
        if Path(path) == lock_path and not cleaned:
            cleaned.append(None)
            cleaned[0] = QueueDir(q.root).clean()  # clean runs between this open and its flock
        return fd

    monkeypatch.setattr(os, "open", open_then_clean)
    lock = q.try_lock(jid)
    monkeypatch.setattr(os, "open", real_open)
    assert cleaned == [[jid]] and not lock_path.exists()
    assert lock is None
    fresh = q.try_lock(jid)  # a later opener makes a new lock file and gets it
    assert fresh is not None and os.path.samestat(os.fstat(fresh.fd), os.stat(lock_path))
    fresh.release()


def _rooted_job(tmp_path, shared_media):
    """A 12-frame job whose input, photo and output folder lie in an allowed root, and a folder outside it:
    (root, outside, queue, job id)."""
    root, outside = tmp_path / "root", tmp_path / "outside"
    for d in (root / "in", root / "out", outside):
        d.mkdir(parents=True)
    shutil.copyfile(shared_media / CLIP, root / "in" / "clip.mpg")
    shutil.copyfile(shared_media / PHOTO, root / "in" / "face.png")
    job = _job(root, 'input = "in/clip.mpg"\noutput = "out/o.mp4"\nend = 12\n[settings]\nsource = ["in/face.png"]\n'
                     'preset = "ultrafast"\n[options]\nsegment_frames = 12\n')
    q = QueueDir(tmp_path / "Q", create=True, roots=[str(root)])
    (jid,) = q.add([job])
    return root, outside, q, jid


def test_output_is_checked_against_the_roots_again_at_the_join(tmp_path, shared_media):
    """The output's folder becomes a symlink out of the allowed roots while the job renders: the join
    refuses it and writes nothing there (the path was only checked when the job was added)."""
    import io

    from facecomp.queue.progress import JsonProgress
    from facecomp.queue.runner import LocalBackend, Runner
    root, outside, q, jid = _rooted_job(tmp_path, shared_media)

    class SwapsTheFolder(JsonProgress):
        def segment(self, job, frames, info):  # the last segment is in; the join comes next
            (root / "out").rename(root / "out.moved")
            (root / "out").symlink_to(outside)
            super().segment(job, frames, info)

    summary = Runner(q, LocalBackend(1), SwapsTheFolder(io.StringIO())).run()
    assert (summary["done"], summary["failed"]) == (0, 1)
    assert "outside the queue's allowed roots" in q.state(jid)["error"] and str(outside) in q.state(jid)["error"]
    assert list(outside.iterdir()) == [] and list((root / "out.moved").iterdir()) == []


@pytest.mark.parametrize("point", ["none", "join", "manifest"])
def test_output_folder_swapped_after_the_check_gets_nothing_outside(tmp_path, shared_media, monkeypatch, point):
    """The output's folder becomes a symlink out of the allowed roots right after the join's check: every
    write goes through the folder that was checked (held open), so the outside folder stays empty, and the
    job fails naming what happened. Swapped before the writes ("join": the join's entry, C2PA signing
    after it), nothing is left anywhere; swapped after the last look before the commit ("manifest": the
    sidecar's write), the output and its manifest are whole in the checked folder, which the error names.
    Not swapped ("none"): the job is done, written through the held folder to the user's path."""
    pytest.importorskip("c2pa", reason="the provenance extra is not installed")
    import io

    from facecomp.disclosure import c2pa_sign as cs
    from facecomp.disclosure import manifest as mf
    from facecomp.queue import runner
    from facecomp.queue.progress import JsonProgress
    from facecomp.queue.runner import LocalBackend, Runner
    root, outside, q, jid = _rooted_job(tmp_path, shared_media)
    chain = cs.make_dev_chain(tmp_path / "certs")
    sign = cs.render_finalizer(env={"FACECOMP_C2PA_CERT": str(chain.chain), "FACECOMP_C2PA_KEY": str(chain.key)})
    swapped, seen_outside = [], []

    def swap():
        if not swapped:
            swapped.append(True)
            (root / "out").rename(root / "out.moved")
            (root / "out").symlink_to(outside)

    def swapping(real):
        def call(*a, **k):
            swap()
            try:
                return real(*a, **k)
            finally:  # what the call left outside, before any cleanup after it
                seen_outside.append(sorted(os.listdir(outside)))
        return call

    if point == "join":  # the runner has checked the output's folder; nothing is written yet
        monkeypatch.setattr(runner, "join_segments", swapping(runner.join_segments))
    elif point == "manifest":  # media muxed and signed; the sidecar and the rename come next
        monkeypatch.setattr(mf, "write_manifest", swapping(mf.write_manifest))
    summary = Runner(q, LocalBackend(1), JsonProgress(io.StringIO()), finalize=sign).run()
    if point == "none":
        assert (summary["done"], summary["failed"]) == (1, 0) and list(outside.iterdir()) == []
        assert sorted(p.name for p in (root / "out").iterdir()) == ["o.mp4", "o.mp4.synthetic.json"]
        m = json.loads((root / "out" / "o.mp4.synthetic.json").read_text())
        assert m["output"]["sha256"] == hashlib.sha256((root / "out" / "o.mp4").read_bytes()).hexdigest()
        assert m["disclosure"]["c2pa"]["signed"] and len(frame_hashes(root / "out" / "o.mp4")) == 12
        assert f"done: {root / 'out' / 'o.mp4'}" in q.log_path(jid).read_text()
        return
    assert seen_outside == [[]] and list(outside.iterdir()) == []  # no output, temp, sidecar or C2PA temp
    assert (summary["done"], summary["failed"]) == (0, 1)
    error = q.state(jid)["error"]
    assert "was moved or replaced during the join" in error and str(outside) in error, error
    assert "/proc/" not in error and "/proc/" not in q.log_path(jid).read_text()  # the user's paths only
    assert summary["jobs"][0]["output"] == str(root / "out" / "o.mp4")
    if point == "join":
        assert list((root / "out.moved").iterdir()) == []  # the temp media and the signing's temp removed
        assert "nothing was written there" in error
        return
    assert sorted(p.name for p in (root / "out.moved").iterdir()) == ["o.mp4", "o.mp4.synthetic.json"]
    assert str(root / "out.moved") in error  # where the output went
    m = json.loads((root / "out.moved" / "o.mp4.synthetic.json").read_text())
    data = (root / "out.moved" / "o.mp4").read_bytes()
    assert m["output"]["sha256"] == hashlib.sha256(data).hexdigest() and m["disclosure"]["c2pa"]["signed"]
    assert m["output"]["path"] == "o.mp4" and m["output"]["files"][0]["name"] == "o.mp4"  # not the temp's name
    assert len(frame_hashes(root / "out.moved" / "o.mp4")) == 12


def test_held_output_folder_is_the_one_checked(tmp_path, monkeypatch):
    """A folder on the output's path becomes a symlink out of the roots between the join's check and its
    open: the opened folder is compared with the checked one and refused, with the recheck's wording."""
    root, outside = tmp_path / "root", tmp_path / "outside"
    (root / "a" / "out").mkdir(parents=True)
    (outside / "out").mkdir(parents=True)
    policy = PathPolicy([root])
    out = str(root / "a" / "out" / "o.mp4")
    with policy.hold_folder(out, "output") as held:  # unswapped: held, and it is the folder at the path
        assert held.held and os.path.samestat(os.fstat(held.fd), os.stat(root / "a" / "out"))
        assert held.moved() is None and held.user_text(f"{held.write_dir}/x") == f"{root / 'a' / 'out'}/x"
    real_open = os.open

    def swap_then_open(path, *args, **kw):
        if Path(path) == root / "a" / "out":
            (root / "a").rename(root / "a.moved")
            (root / "a").symlink_to(outside)
        return real_open(path, *args, **kw)

    monkeypatch.setattr(os, "open", swap_then_open)
    with pytest.raises(SettingsError, match="changed while it was being opened") as e:
        policy.hold_folder(out, "output")
    assert str(outside / "out") in str(e.value) and "allowed roots" in str(e.value)
    monkeypatch.setattr(os, "open", real_open)
    assert os.listdir(outside / "out") == []


def test_segments_follow_source_keyframes(shared_media):
    keys = source_keyframes(shared_media / CLIP)
    assert keys[:3] == [0, 12, 24]  # MPEG-1 GOP of 12
    segs = plan_segments(0, 75, 10, keys)
    assert [(s.start, s.end) for s in segs] == [(0, 12), (12, 24), (24, 36), (36, 48), (48, 60), (60, 75)]
    assert plan_segments(5, 40, 10, []) == plan_segments(5, 40, 10, None)
    fixed = plan_segments(5, 38, 10, [])
    assert [(s.start, s.end) for s in fixed] == [(5, 15), (15, 25), (25, 38)]  # a 3-frame tail joins the last one


# ---------------------------------------------------------------------------------------------- rendering

def _wait_for_commit(work: Path, proc: subprocess.Popen, timeout=120.0, count=1) -> list[Path]:
    t0 = time.monotonic()
    while time.monotonic() - t0 < timeout:
        done = sorted(p for p in work.glob("*/seg_*.mp4") if Path(str(p) + ".synthetic.json").exists())
        if len(done) >= count:
            return done
        if proc.poll() is not None:
            raise AssertionError(f"runner ended before a segment was committed: {proc.stderr.read()[-2000:]}")
        time.sleep(0.02)
    raise AssertionError("no segment committed in time")


def test_kill_minus_9_then_resume_is_identical(tmp_path, shared_media):
    """kill -9 after the first committed segment; the rerun finishes it; frames equal an uninterrupted run."""
    env = dict(os.environ, FACECOMP_C2PA_CERT="", FACECOMP_C2PA_KEY="")
    ref_job = write_job(tmp_path / "ref.toml", shared_media, tmp_path / "ref.mp4", end=60)
    job = write_job(tmp_path / "killed.toml", shared_media, tmp_path / "killed.mp4", end=60)
    facecomp("queue", "--queue", tmp_path / "QR", "add", ref_job, env=env)
    t0 = time.perf_counter()
    text = facecomp("queue", "--queue", tmp_path / "QR", "run", env=env).stderr
    uninterrupted = time.perf_counter() - t0
    assert "0001-ref (done)" in text and "60/60" in text  # rich bars: the queue and the job
    assert "queue: 1 done, 0 failed, 0 cancelled; 60 frames rendered" in text  # the exit summary
    facecomp("queue", "--queue", tmp_path / "QK", "add", job, env=env)
    proc = subprocess.Popen([*CLI, "queue", "--queue", str(tmp_path / "QK"), "run",
                             "--progress", "json"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    committed = _wait_for_commit(tmp_path / "QK" / "work", proc, count=2)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait(timeout=30)
    # as after a power cut before the data reached the disk: a committed segment cut short
    data = committed[0].read_bytes()
    committed[0].write_bytes(data[: len(data) // 2])
    assert not (tmp_path / "killed.mp4").exists()  # nothing under the final name
    st = QueueDir(tmp_path / "QK").summary()[0]
    assert st["status"] == "interrupted" and st["segments_done"] < st["segments"] == 5  # state may lag the disk
    t0 = time.perf_counter()
    out = facecomp("queue", "--queue", tmp_path / "QK", "run", "--progress", "json", env=env)
    resumed = time.perf_counter() - t0
    events = [json.loads(line) for line in out.stdout.splitlines()]
    start = next(e for e in events if e["event"] == "job_start")
    assert start["done"] >= 12  # resumed from the committed segments (less the cut one), not from frame 0
    rendered = [e for e in events if e["event"] == "segment"]
    assert len(rendered) == st["segments"] - st["segments_done"] or len(rendered) < st["segments"]
    done = next(e for e in events if e["event"] == "queue_done")
    assert done["done"] == 1 and done["reused_frames"] == start["done"]
    got, want = frame_hashes(tmp_path / "killed.mp4"), frame_hashes(tmp_path / "ref.mp4")
    assert got == want, f"frames differ: {[i for i, (a, b) in enumerate(zip(got, want)) if a != b]}"
    assert len(frame_hashes(tmp_path / "killed.mp4")) == 60
    m = json.loads((tmp_path / "killed.mp4.synthetic.json").read_text())
    assert m["id"] == "queue-test-1"
    assert m["disclosure"]["segments"]["ranges"] == [[0, 11], [12, 23], [24, 35], [36, 47], [48, 59]]
    assert m["replacement"]["face_replaced"] and m["replacement"]["frames_total"] == 60
    assert not list((tmp_path / "QK" / "work").glob("*/*"))  # segments removed once joined
    log = facecomp("queue", "--queue", tmp_path / "QK", "logs", QueueDir(tmp_path / "QK").ids()[0]).stdout
    assert "already committed" in log and "done:" in log and "incomplete; rendering it again" in log
    print(f"\nuninterrupted {uninterrupted:.1f} s, resumed run {resumed:.1f} s after kill -9")


def test_queue_batch_disclosure_retries_and_failures(tmp_path, shared_media):
    """Two jobs and a broken one: the broken one fails after bounded retries, the others finish, each
    output carries tags read back, one manifest, C2PA signed last, and the job's watermark id on every frame."""
    pytest.importorskip("c2pa", reason="the provenance extra is not installed")
    from facecomp.disclosure import c2pa_sign as cs
    from facecomp.disclosure.metadata import TAG_AIGC, parse_aigc, read_container_tags
    from facecomp.disclosure.verify import inspect_file
    from facecomp.disclosure.watermark import decode_frame, manifest_id_for
    chain = cs.make_dev_chain(tmp_path / "certs")
    env = dict(os.environ, FACECOMP_C2PA_CERT=str(chain.chain), FACECOMP_C2PA_KEY=str(chain.key))
    bad_model = tmp_path / "broken.dfm"
    bad_model.write_bytes(b"not an onnx model")
    a = write_job(tmp_path / "a.toml", shared_media, tmp_path / "a.mp4", end=30, manifest_id="batch-a")
    b = write_job(tmp_path / "b.toml", shared_media, tmp_path / "b.mkv", end=24, manifest_id="batch-b",
                  options="priority = 5")
    broken = write_job(tmp_path / "broken.toml", shared_media, tmp_path / "broken.mp4", end=36,
                       manifest_id="batch-x", extra_settings=f'model = "{bad_model}"', options="retries = 1")
    q = tmp_path / "Q"
    ids = facecomp("queue", "--queue", q, "add", a, broken, b, env=env).stdout.split()[::2]
    run = facecomp("queue", "--queue", q, "run", "--workers", "2", "--progress", "json", env=env, check=False)
    assert run.returncode == 1  # a job failed; the exit code says so
    events = [json.loads(line) for line in run.stdout.splitlines()]
    assert next(e["job"] for e in events if e["event"] == "job_start") == ids[2]  # priority 5 first
    summary = events[-1]
    assert summary["event"] == "queue_done" and (summary["done"], summary["failed"]) == (2, 1)
    status = json.loads(facecomp("queue", "--queue", q, "status", "--json").stdout)["jobs"]
    by = {row["id"]: row for row in status}
    assert by[ids[1]]["status"] == "failed" and by[ids[1]]["attempts"] == 2
    log = facecomp("queue", "--queue", q, "logs", ids[1]).stdout
    assert "failure 1 of at most 2" in log and "failure 2 of at most 2" in log and "retries exhausted" in log
    for out, mid, n in ((tmp_path / "a.mp4", "batch-a", 30), (tmp_path / "b.mkv", "batch-b", 24)):
        tags = read_container_tags(out)
        assert parse_aigc(tags.get(TAG_AIGC) or tags.get("AIGC"))["ProduceID"] == mid
        m = json.loads(Path(str(out) + ".synthetic.json").read_text())
        assert m["id"] == mid and m["replacement"]["frames_total"] == n
        assert m["disclosure"]["segments"]["count"] == len(m["disclosure"]["segments"]["ranges"]) >= 2
        assert m["input"]["frames_rendered"] == [0, n - 1]
        assert m["input"]["sha256"] == hashlib.sha256((shared_media / CLIP).read_bytes()).hexdigest()
        with av.open(str(out)) as c:
            frames = [f.to_ndarray(format="rgb24") for f in c.decode(video=0)]
            assert c.streams.audio, "the source's audio is carried"
        assert len(frames) == n
        want = manifest_id_for(mid)
        decoded = [decode_frame(f) for f in frames]
        ids_seen = {d.payload.manifest_id for d in decoded if d.payload is not None}
        assert ids_seen == {want}  # one watermark id across every segment
        assert sum(d.payload is not None for d in decoded) >= 0.8 * n
        layers = {r.layer: r for r in inspect_file(out, trust_anchors=chain.root_cert, label_method="signature",
                                                  watermark_frames=n).layers}
        assert layers["tags"].status == "ok" and layers["manifest"].status == "ok"
        assert layers["watermark"].status == "ok" and layers["label"].status == "ok"
        if out.suffix == ".mp4":
            assert m["disclosure"]["c2pa"]["signed"] and layers["c2pa"].status == "ok", layers["c2pa"]
    # retry puts the failed job back (it fails again the same way); cancel and clean
    facecomp("queue", "--queue", q, "retry", ids[1])
    assert QueueDir(q).state(ids[1])["status"] == "queued"
    assert "cancelled" in facecomp("queue", "--queue", q, "cancel", ids[1]).stdout
    cleaned = facecomp("queue", "--queue", q, "clean").stdout
    assert "removed 3" in cleaned and QueueDir(q).ids() == []
    assert (tmp_path / "a.mp4").exists()  # clean never touches outputs


_KILL_AFTER = {
    # right after the join renamed the output into place (its segments still on disk)
    "rename": "real = runner.join_segments\n"
              "def join(*a, **k):\n    m = real(*a, **k)\n    os.kill(os.getpid(), signal.SIGKILL)\n"
              "runner.join_segments = join\n",
    # after the segments were removed, before the state says done
    "cleanup": "real = runner.Runner._finish\n"
               "def finish(self, run, status, error=None):\n"
               "    if status == 'done':\n        os.kill(os.getpid(), signal.SIGKILL)\n"
               "    return real(self, run, status, error)\n"
               "runner.Runner._finish = finish\n",
}


@pytest.mark.parametrize("point", sorted(_KILL_AFTER))
def test_runner_killed_after_the_join_leaves_a_done_job(tmp_path, shared_media, point):
    """kill -9 between the join's rename and the job's state saying done: the next run recognises the
    output as the job's (manifest id, output hash read back) and marks it done; nothing is rendered again."""
    job = write_job(tmp_path / "j.toml", shared_media, tmp_path / "j.mp4", end=24, manifest_id="joined-once")
    q = QueueDir(tmp_path / "Q", create=True)
    (jid,) = q.add([job])
    script = ("import io, os, signal, sys\nfrom facecomp.queue import runner\n" + _KILL_AFTER[point]
              + "from facecomp.queue.progress import JsonProgress\nfrom facecomp.queue.store import QueueDir\n"
              f"runner.Runner(QueueDir({str(q.root)!r}), runner.LocalBackend(1), JsonProgress(io.StringIO())).run()\n")
    killed = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=240,
                            check=False)
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-2000:]
    assert q.state(jid)["status"] == "running"  # what the kill left: the job is not marked done
    written = (tmp_path / "j.mp4").read_bytes()
    assert json.loads((tmp_path / "j.mp4.synthetic.json").read_text())["id"] == "joined-once"
    out = facecomp("queue", "--queue", q.root, "run", "--progress", "json")
    summary = json.loads(out.stdout.splitlines()[-1])
    assert (summary["done"], summary["failed"], summary["frames"]) == (1, 0, 0), summary
    assert (tmp_path / "j.mp4").read_bytes() == written  # the output is the one the killed run wrote
    assert q.state(jid)["status"] == "done" and q.state(jid)["frames_done"] == 24
    assert "was joined by the last run" in q.log_path(jid).read_text()
    assert not q.work_dir(jid, q.job(jid)).exists()
    # a different file under the output's name is not taken for the job's: it is joined again, as before
    (tmp_path / "j.mp4").write_bytes(written[:-100] + bytes(100))
    q.write_state(jid, dict(q.state(jid), status="running"))
    out = facecomp("queue", "--queue", q.root, "run", "--progress", "json", check=False)
    assert json.loads(out.stdout.splitlines()[-1])["done"] == 0


def test_a_dead_worker_fails_only_its_own_task():
    """Real spawned workers: one ends mid-task; the task running beside it and the tasks queued behind it
    all complete (concurrent.futures' pool failed every one of them and killed the other worker)."""
    from facecomp.queue.pool import WorkerDiedError, WorkerPool
    pool = WorkerPool(2)
    try:
        beside = pool.submit(time.sleep, 1.5)
        time.sleep(0.2)  # the first worker has taken it; the next task goes to the second
        dies = pool.submit(os._exit, 3)
        queued = [pool.submit(pow, 2, k) for k in range(6)]
        with pytest.raises(WorkerDiedError, match="exited with status 3"):
            dies.result(timeout=60)
        assert [f.result(timeout=60) for f in queued] == [1, 2, 4, 8, 16, 32]
        assert beside.result(timeout=60) is None and pool.deaths == 1
        with pytest.raises(ZeroDivisionError):  # an error raised by the task comes back as itself
            pool.submit(divmod, 1, 0).result(timeout=60)
    finally:
        pool.close()


def _spawned_workers(pid: int) -> list[int]:
    """The runner's worker processes (spawned children: their command line runs spawn_main)."""
    out = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        for child in (task / "children").read_text().split():
            try:
                cmd = Path(f"/proc/{child}/cmdline").read_bytes()
            except OSError:
                continue
            if b"spawn_main" in cmd:
                out.append(int(child))
    return out


def test_a_killed_worker_charges_only_the_segment_it_ran(tmp_path, shared_media):
    """SIGKILL one of two local workers mid-render: at most the one segment it ran is charged to its job;
    the segments queued behind it (both jobs') are not, and both jobs finish whole."""
    a = write_job(tmp_path / "a.toml", shared_media, tmp_path / "a.mp4", end=36, manifest_id="dead-a",
                  options="retries = 1")
    b = write_job(tmp_path / "b.toml", shared_media, tmp_path / "b.mp4", end=36, manifest_id="dead-b",
                  options="retries = 1")
    q = QueueDir(tmp_path / "Q", create=True)
    ids = q.add([a, b])
    proc = subprocess.Popen([*CLI, "queue", "--queue", str(q.root), "run", "--workers", "2", "--progress", "json"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    _wait_for_commit(q.root / "work", proc)
    workers = _spawned_workers(proc.pid)
    assert len(workers) == 2, workers
    os.kill(workers[0], signal.SIGKILL)
    out, err = proc.communicate(timeout=240)
    summary = json.loads(out.splitlines()[-1])
    assert (summary["done"], summary["failed"]) == (2, 0), (summary, err[-2000:])
    attempts = {jid: q.state(jid)["attempts"] for jid in ids}
    assert sum(attempts.values()) <= 1, attempts  # the old pool charged every queued segment (4 or more)
    for jid, n in attempts.items():
        if n:
            assert "killed by SIGKILL" in q.log_path(jid).read_text()
    for name in ("a.mp4", "b.mp4"):
        assert len(frame_hashes(tmp_path / name)) == 36


def test_a_second_runner_never_takes_a_locked_job(tmp_path, shared_media):
    """The job's fcntl lock, held by another process, keeps `queue run` off it; released, the job renders."""
    job = write_job(tmp_path / "j.toml", shared_media, tmp_path / "j.mp4", end=12)
    q = QueueDir(tmp_path / "Q", create=True)
    (jid,) = q.add([job])
    holder = subprocess.Popen([sys.executable, "-c", (
        "import sys, time; from facecomp.queue.store import QueueDir; "
        f"lock = QueueDir({str(tmp_path / 'Q')!r}).try_lock({jid!r}); print(lock is not None, flush=True); "
        "sys.stdin.readline()")], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "True"
        out = facecomp("queue", "--queue", tmp_path / "Q", "run", "--progress", "json")
        summary = json.loads(out.stdout.splitlines()[-1])
        assert (summary["skipped"], summary["done"], summary["frames"]) == (1, 0, 0)
        assert not (tmp_path / "j.mp4").exists() and q.state(jid)["status"] == "queued"
    finally:
        holder.communicate("\n", timeout=30)
    out = facecomp("queue", "--queue", tmp_path / "Q", "run", "--progress", "json")
    assert json.loads(out.stdout.splitlines()[-1])["done"] == 1 and len(frame_hashes(tmp_path / "j.mp4")) == 12


def test_cancel_a_running_job(tmp_path, shared_media):
    """`queue cancel` while the runner renders: it stops the job after the segments in flight, writes no
    output, and the job can be queued again."""
    clip = tmp_path / "source.mpg"
    shutil.copyfile(shared_media / CLIP, clip)
    job = write_job(tmp_path / "c.toml", shared_media, tmp_path / "c.mp4", end=60, clip=clip)
    q = tmp_path / "Q"
    jid = facecomp("queue", "--queue", q, "add", job).stdout.split()[0]
    proc = subprocess.Popen([*CLI, "queue", "--queue", str(q), "run", "--progress", "json"], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    _wait_for_commit(q / "work", proc)
    assert "cancelling" in facecomp("queue", "--queue", q, "cancel", jid).stdout
    out, _ = proc.communicate(timeout=120)
    assert proc.returncode == 0
    summary = json.loads(out.splitlines()[-1])
    assert summary["cancelled"] == 1 and summary["done"] == 0
    assert not (tmp_path / "c.mp4").exists() and QueueDir(q).state(jid)["status"] == "cancelled"
    assert "cancelled by request" in facecomp("queue", "--queue", q, "logs", jid).stdout
    facecomp("queue", "--queue", q, "retry", jid)
    assert QueueDir(q).state(jid)["status"] == "queued"
    assert QueueDir(q).state(jid)["input"]["sha256"] == hashlib.sha256(clip.read_bytes()).hexdigest()
    # the source changes before the job runs again: its committed segments are not reused
    os.utime(clip, ns=(time.time_ns(), time.time_ns()))
    out = facecomp("queue", "--queue", q, "run", "--progress", "json").stdout
    assert json.loads(out.splitlines()[-1])["reused_frames"] == 0
    assert "the input changed since the last run" in facecomp("queue", "--queue", q, "logs", jid).stdout
    assert len(frame_hashes(tmp_path / "c.mp4")) == 60


def test_broken_records_stop_no_other_job(tmp_path, shared_media):
    """An unreadable state file counts as queued; an unreadable job record is reported, the rest runs."""
    a = write_job(tmp_path / "a.toml", shared_media, tmp_path / "a.mp4", end=12, manifest_id="a")
    b = write_job(tmp_path / "b.toml", shared_media, tmp_path / "b.mp4", end=12, manifest_id="b")
    q = QueueDir(tmp_path / "Q", create=True)
    garbage = tmp_path / "garbage.mp4"
    garbage.write_bytes(os.urandom(4096))
    c = tmp_path / "c.toml"
    c.write_text(f'input = "{garbage}"\noutput = "{tmp_path / "c.mp4"}"\n')
    ida, idb, idc = q.add([a, b, c])
    q.state_path(ida).write_text("{half a state fi")
    q.job_path(idb).write_text("[]")
    out = facecomp("queue", "--queue", tmp_path / "Q", "run", "--progress", "json", check=False)
    assert out.returncode == 1  # the garbage input failed
    events = [json.loads(x) for x in out.stdout.splitlines()]
    assert (events[-1]["done"], events[-1]["failed"]) == (1, 1) and len(frame_hashes(tmp_path / "a.mp4")) == 12
    failed = next(e for e in events if e["event"] == "job_failed")
    assert failed["job"] == idc and "garbage.mp4" in failed["error"]
    assert any(e["event"] == "message" and e["job"] == idb and "unreadable" in e["text"] for e in events)
    rows = {r["id"]: r for r in json.loads(facecomp("queue", "--queue", tmp_path / "Q", "status", "--json").stdout)["jobs"]}
    assert rows[ida]["status"] == "done" and rows[idb]["status"] == "broken"


def test_join_keeps_rotation_timecode_audio_and_b_frames(tmp_path):
    """Generated media (no face: label and watermark only): a rotated clip with a timecode, AAC audio and
    B-frames joins into one file whose rotation, offset timecode and audio packets are the source's."""
    from facecomp.video.reader import VideoReader
    from mediagen import packets, write_clip
    src = write_clip(tmp_path / "rot.mp4", n=40, rotation=90, timecode="01:00:00:00", audio=True)
    job = tmp_path / "j.toml"
    job.write_text(f'input = "{src}"\noutput = "{tmp_path / "out.mov"}"\nstart = 4\n'
                   '[settings]\ncrf = 20\n[options]\nsegment_frames = 10\n')
    facecomp("queue", "--queue", tmp_path / "Q", "add", job)
    facecomp("queue", "--queue", tmp_path / "Q", "run", "--quiet")
    out = tmp_path / "out.mov"
    info = VideoReader(out).info
    assert (info.rotation, info.timecode, info.frame_count) == (90, "01:00:00:04", 36)
    with av.open(str(out)) as c:
        vs = c.streams.video[0]
        pk = [(p.pts, p.dts) for p in c.demux(vs) if p.size]
    assert any(p != d for p, d in pk)  # B-frames: reordered packets came through the join
    assert all(a[1] < b[1] for a, b in itertools.pairwise(pk))  # decode timestamps strictly increasing across joins
    m = json.loads((tmp_path / "out.mov.synthetic.json").read_text())
    assert m["disclosure"]["segments"]["ranges"] == [[4, 13], [14, 23], [24, 33], [34, 39]]
    src_audio, out_audio = packets(src, "audio"), packets(out, "audio")
    assert out_audio and out_audio == src_audio[len(src_audio) - len(out_audio):]  # copied, not re-encoded
    assert len(out_audio) >= len(src_audio) * 0.85  # the source's audio from frame 4 on
