"""Baking a clip through the ``facecomp`` command from inside an editor's own Python.

Blender and Resolve run Python interpreters that do not have facecomp's dependencies, so the engine runs
as a separate process (``facecomp render ... --progress json``) and this module drives it. It is
standard-library only and works on Python 3.7 and later (Resolve's scripting Python), because it is
copied into the Blender extension (as ``_bake.py``) and inlined into the Resolve script at install time;
for the same reason it raises its own :class:`BakeError` rather than ``facecomp.errors`` (the editor's
Python cannot import facecomp).

Nothing half-made ever reaches the final name: the engine renders into a private staging folder next to
the destination, and the video and its manifest are moved out only when the process exited cleanly. A
cancel or a failure removes the staging folder. A cancel never blocks the editor's UI thread: the engine is
interrupted at once and killed if it has not stopped after a short grace, and the staging folder is removed
by a background thread once the process is gone (and at interpreter exit for any still pending).
"""

from __future__ import annotations

import atexit
import json
import os
import queue
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
import uuid

SCHEMA = "facecomp.effect/1"
ENV_EXECUTABLE = "FACECOMP_EXECUTABLE"

# Exit codes of ``facecomp`` (README "Exit codes"), for messages people can act on.
EXIT_MEANINGS = {
    2: "bad settings", 3: "disclosure refused", 4: "invalid media", 5: "no video stream", 6: "no frames",
    7: "output cannot be written", 8: "a disclosure tag did not survive the write", 9: "model missing",
    10: "model hash mismatch", 11: "no face found", 12: "C2PA signing failed", 13: "invalid faceset",
    130: "cancelled",
}


class BakeError(Exception):
    """A bake could not start or did not finish; the message says what to do."""


class EngineNotFound(BakeError):
    """No ``facecomp`` executable was found where it was looked for."""


def _exe_name() -> str:
    return "facecomp.exe" if os.name == "nt" else "facecomp"


def candidate_executables(home: str | None = None) -> list:
    """Common places a ``facecomp`` install lands when it is not on the editor's PATH (editors started from
    a desktop menu rarely inherit a shell's PATH)."""
    home = home or os.path.expanduser("~")
    name = _exe_name()
    bindir = "Scripts" if os.name == "nt" else "bin"
    places = [
        os.path.join(home, ".local", "bin", name),
        os.path.join(home, ".local", "pipx", "venvs", "facecomp", bindir, name),
        os.path.join(home, ".venv", bindir, name),
        os.path.join(home, "venv", bindir, name),
        os.path.join(home, "facecomp", ".venv", bindir, name),
        os.path.join(home, ".facecomp", "venv", bindir, name),
    ]
    if sys.platform == "darwin":
        places += ["/opt/homebrew/bin/facecomp", "/usr/local/bin/facecomp"]
    elif os.name != "nt":
        places += ["/usr/local/bin/facecomp"]
    return places


def _runnable(path: str) -> bool:
    return os.path.isfile(path) and os.access(path, os.X_OK)


def find_executable(configured: str = "", env=None, home: str | None = None) -> str:
    """The ``facecomp`` to run: the editor's setting, then ``$FACECOMP_EXECUTABLE``, then PATH, then the
    usual virtual-environment places. A setting that points nowhere is an error, not silently skipped."""
    env = os.environ if env is None else env
    for origin, value in (("the facecomp executable setting", configured),
                          (ENV_EXECUTABLE, env.get(ENV_EXECUTABLE, ""))):
        value = (value or "").strip()
        if not value:
            continue
        path = os.path.expanduser(value)
        if os.path.isdir(path):
            path = os.path.join(path, _exe_name())
        if _runnable(path):
            return os.path.abspath(path)
        raise EngineNotFound(f"{origin} points to {value!r}, which is not an executable facecomp "
                             "(set it to the 'facecomp' inside the virtual environment where you installed it)")
    found = shutil.which("facecomp", path=env.get("PATH"))
    if found:
        return found
    for path in candidate_executables(home):
        if _runnable(path):
            return path
    raise EngineNotFound("facecomp executable not found on PATH nor in the usual virtual-environment places; "
                         "install it (pip install facecomp) and set its path in the host's facecomp setting "
                         f"or in ${ENV_EXECUTABLE}")


def _hashed(pattern: str) -> str:
    """A sequence pattern as the engine writes it in names: ``f_%06d.png`` -> ``f_######.png``."""
    return re.sub(r"%0?(\d*)d", lambda m: "#" * int(m.group(1) or 1), pattern)


def new_manifest_id() -> str:
    return str(uuid.uuid4())


def output_name(source: str, start: int, end: int, manifest_id: str, ext: str = ".mp4") -> str:
    """A result's file name: readable, unique per bake, saying what it is."""
    stem = os.path.splitext(os.path.basename(source))[0] or "clip"
    return f"{stem}.synthetic.{start}-{end}.{manifest_id[:8]}{ext}"


def settings_document(values: dict, params) -> dict:
    """The settings file for ``--settings``: the chosen values that differ from the declared defaults.

    ``params`` is the effect declaration as dicts (``facecomp spec --json``); keys it does not declare are
    refused here so a host bug shows as a clear message rather than an engine error later."""
    declared = {p["name"]: p for p in params}
    doc = {}
    for key, value in values.items():
        if key not in declared:
            raise BakeError(f"setting {key!r} is not part of the effect declaration")
        p = declared[key]
        if value is None or value == "" or value == []:
            continue
        if p.get("kind") == "paths" and isinstance(value, str):
            value = [value]
        if value == p.get("default"):
            continue
        doc[key] = value
    doc["schema"] = SCHEMA
    return doc


#: set in the engine's environment by a bake: SIGINT interrupts it (see facecomp.cli.main)
ENV_INTERRUPTIBLE = "FACECOMP_INTERRUPTIBLE"


def render_command(exe: str, source: str, output: str, settings_path: str, manifest_id: str,
                   start: int, end: int) -> list:
    """The argument vector hosts run (docs/hosts-contract.md): end is exclusive, frames are source frames."""
    if start < 0 or end <= start:
        raise BakeError(f"empty or negative frame range {start}..{end} for {source}")
    return [exe, "render", source, "-o", output, "--settings", settings_path, "--manifest-id", manifest_id,
            "-y", "--start", str(int(start)), "--end", str(int(end)), "--progress", "json"]


class ProgressEvent:
    """One line of ``--progress json``: ``event`` in start/progress/message/finish, plus its fields."""

    __slots__ = ("data", "done", "event", "level", "text", "total")

    def __init__(self, event, done=0, total=None, text="", level="info", data=None):
        self.event = event
        self.done = done
        self.total = total
        self.text = text
        self.level = level
        self.data = data or {}

    @property
    def fraction(self):
        if not self.total:
            return None
        return max(0.0, min(1.0, self.done / self.total))

    def __repr__(self):
        return f"ProgressEvent({self.event!r}, done={self.done}, total={self.total})"


def parse_progress_line(line: str):
    """A :class:`ProgressEvent` for a JSON progress line, ``None`` for anything else (a library's stray
    print on stdout must not break the host)."""
    line = line.strip()
    if not line.startswith("{"):
        return None
    try:
        rec = json.loads(line)
    except ValueError:
        return None
    if not isinstance(rec, dict) or "event" not in rec:
        return None
    done = rec.get("done") or 0
    total = rec.get("total")
    return ProgressEvent(str(rec["event"]), int(done) if isinstance(done, (int, float)) else 0,
                         int(total) if isinstance(total, (int, float)) else None,
                         str(rec.get("text", "")), str(rec.get("level", "info")), rec)


_PENDING = set()  # cancelled bakes whose engine may still be running


def _finish_pending():
    for bake in list(_PENDING):
        bake._reap(grace=0.0)


atexit.register(_finish_pending)


class Bake:
    """One engine run for one clip range, polled by the host (a Blender timer, a Resolve loop).

    ``start()`` writes the settings file and starts the process; ``poll()`` returns the progress events
    that arrived since the last call without blocking; ``cancel()`` interrupts the engine and returns at
    once (see :meth:`cancel`). When the process has exited 0, ``result()`` moves the video and its manifest
    to ``dest_dir`` and returns their paths.

    ``image_sequence`` (a file pattern such as ``f_%06d.png``) renders numbered images, one per source
    frame and named by it, into a folder instead of a video; ``result()`` then returns the folder's
    pattern path and the manifest inside the folder.
    """

    def __init__(self, exe: str, source: str, dest_dir: str, settings: dict, start: int, end: int,
                 manifest_id: str | None = None, ext: str = ".mp4", image_sequence: str | None = None):
        self.exe = exe
        self.source = os.path.abspath(source)
        self.dest_dir = os.path.abspath(dest_dir)
        self.settings = dict(settings)
        self.start_frame = int(start)
        self.end_frame = int(end)
        self.manifest_id = manifest_id or new_manifest_id()
        self.image_sequence = image_sequence
        self.name = output_name(self.source, self.start_frame, self.end_frame, self.manifest_id,
                                "" if image_sequence else ext)
        self.staging = os.path.join(self.dest_dir, f".facecomp-staging-{self.manifest_id[:8]}")
        self.output = os.path.join(self.dest_dir, self.name)
        self.manifest = self.output + ".synthetic.json"
        if image_sequence:  # the engine names a sequence's manifest after the pattern, '%06d' as '######'
            self.output = os.path.join(self.dest_dir, self.name, image_sequence)
            self.manifest = os.path.join(self.dest_dir, self.name, _hashed(image_sequence) + ".synthetic.json")
        self.done = 0
        self.total = self.end_frame - self.start_frame
        self.messages = []
        self._proc = None
        self._lines = queue.Queue()
        self._stderr = []
        self._threads = []
        self._cancelled = False
        self._reaper = None
        self._reaped = threading.Event()

    # -- lifecycle ------------------------------------------------------------------------------------
    def _staged(self) -> str:
        if self.image_sequence:
            return os.path.join(self.staging, self.name, self.image_sequence)
        return os.path.join(self.staging, self.name)

    def command(self) -> list:
        return render_command(self.exe, self.source, self._staged(), os.path.join(self.staging, "settings.json"),
                              self.manifest_id, self.start_frame, self.end_frame)

    def start(self) -> Bake:
        if not os.path.isfile(self.source):
            raise BakeError(f"{self.source}: the clip's media file is missing")
        final = os.path.join(self.dest_dir, self.name) if self.image_sequence else self.output
        if os.path.exists(final):
            raise BakeError(f"{final} already exists; nothing was overwritten")
        try:
            os.makedirs(self.staging, exist_ok=False)
            if self.image_sequence:
                os.mkdir(os.path.join(self.staging, self.name))
        except OSError as exc:
            raise BakeError(f"cannot write in {self.dest_dir}: {exc}") from exc
        try:
            with open(os.path.join(self.staging, "settings.json"), "w", encoding="utf-8") as f:
                json.dump(self.settings, f, indent=2)
            # a cancel interrupts with SIGINT: the engine takes it even where this process was started with
            # SIGINT ignored (a background job of a script, some launchers), which its child would inherit
            kw = {"env": {**os.environ, ENV_INTERRUPTIBLE: "1"}}
            if os.name == "nt":
                kw["creationflags"] = subprocess.CREATE_NEW_PROCESS_GROUP
            else:
                kw["start_new_session"] = True  # its own process group: a cancel reaches all of it
            self._proc = subprocess.Popen(self.command(), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                          stdin=subprocess.DEVNULL, text=True, encoding="utf-8",
                                          errors="replace", bufsize=1, **kw)
        except OSError as exc:
            self._remove_staging()
            raise BakeError(f"cannot run {self.exe}: {exc}") from exc
        for stream, sink in ((self._proc.stdout, self._lines.put), (self._proc.stderr, self._stderr.append)):
            t = threading.Thread(target=self._pump, args=(stream, sink), daemon=True)
            t.start()
            self._threads.append(t)
        return self

    @staticmethod
    def _pump(stream, sink):
        for line in stream:
            sink(line)
        stream.close()

    def poll(self) -> list:
        """Events since the last call (never blocks)."""
        events = []
        while True:
            try:
                line = self._lines.get_nowait()
            except queue.Empty:
                break
            ev = parse_progress_line(line)
            if ev is None:
                continue
            if ev.event in ("progress", "finish"):
                self.done = ev.done
                if ev.total:
                    self.total = ev.total
            elif ev.event == "message":
                self.messages.append((ev.level, ev.text))
            events.append(ev)
        return events

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    @property
    def fraction(self) -> float:
        return max(0.0, min(1.0, self.done / self.total)) if self.total else 0.0

    def wait(self, poll_s: float = 0.1, on_event=None) -> tuple:
        """Block until the engine finishes (headless hosts, scripts); returns :meth:`result`."""
        while self.running:
            for ev in self.poll():
                if on_event:
                    on_event(ev)
            time.sleep(poll_s)
        for ev in self.poll():
            if on_event:
                on_event(ev)
        return self.result()

    def result(self) -> tuple:
        """``(video, manifest)`` at their final names, once the engine exited 0; else a :class:`BakeError`
        with the engine's own message, and nothing left behind."""
        if self._proc is None:
            raise BakeError("the bake was not started")
        code = self._proc.wait()
        for t in self._threads:
            t.join(timeout=5)
        self.poll()
        if self._cancelled:
            self._remove_staging()
            raise BakeError("cancelled; nothing was written")
        if self.image_sequence:
            return self._sequence_result(code)
        staged = os.path.join(self.staging, self.name)
        staged_manifest = staged + ".synthetic.json"
        if code != 0 or not os.path.isfile(staged) or not os.path.isfile(staged_manifest):
            self._remove_staging()
            raise BakeError(self._failure_message(code))
        if os.path.exists(self.output):
            self._remove_staging()
            raise BakeError(f"{self.output} appeared while rendering; nothing was overwritten")
        os.replace(staged, self.output)
        try:
            os.replace(staged_manifest, self.manifest)
        except OSError as exc:  # no video without its manifest
            os.unlink(self.output)
            self._remove_staging()
            raise BakeError(f"the manifest could not be moved beside {self.output} ({exc}); nothing was kept")
        self._remove_staging()
        return self.output, self.manifest

    def _sequence_result(self, code: int) -> tuple:
        folder = os.path.join(self.staging, self.name)
        manifest = os.path.join(folder, os.path.basename(self.manifest))
        frames = [self.image_sequence % i for i in range(self.start_frame, self.end_frame)]
        if code != 0 or not os.path.isfile(manifest) or not all(os.path.isfile(os.path.join(folder, f))
                                                                for f in frames):
            self._remove_staging()
            raise BakeError(self._failure_message(code))
        final = os.path.join(self.dest_dir, self.name)
        if os.path.exists(final):
            self._remove_staging()
            raise BakeError(f"{final} appeared while rendering; nothing was overwritten")
        os.replace(folder, final)  # the images and their manifest move as one folder
        self._remove_staging()
        return self.output, self.manifest

    def _failure_message(self, code: int) -> str:
        lines = [ln.strip() for ln in self._stderr if ln.strip() and not ln.startswith("INFO:")]
        detail = lines[-1] if lines else "no message"
        meaning = EXIT_MEANINGS.get(code, "failed")
        return f"facecomp render {meaning} (exit code {code}): {detail}"

    def cancel(self, grace: float = 4.0, wait: bool = False) -> None:
        """Interrupt the engine and remove everything this bake wrote, without blocking the caller.

        The engine gets SIGINT now (it stops at its next frame); one that has not exited after ``grace``
        seconds (busy in native code, stopped) is killed with its whole process group. A background thread
        waits for that and then removes the staging folder; :attr:`cleaned` says when it is done, and
        ``wait=True`` blocks until then (scripts, tests)."""
        self._cancelled = True
        if self._reaper is None:
            self._signal(kill=False)
            _PENDING.add(self)
            self._reaper = threading.Thread(target=self._reap, args=(grace,), daemon=True)
            self._reaper.start()
        if wait:
            self._reaped.wait()

    @property
    def cleaned(self) -> bool:
        """A cancel finished: the engine has exited and the staging folder is gone."""
        return self._reaped.is_set()

    def _signal(self, kill: bool) -> None:
        proc = self._proc
        if proc is None or proc.poll() is not None:
            return
        try:
            if os.name == "nt" and kill:
                proc.kill()
            elif os.name == "nt":
                proc.send_signal(signal.CTRL_BREAK_EVENT)
            else:
                os.killpg(proc.pid, signal.SIGKILL if kill else signal.SIGINT)
        except OSError:  # already gone
            pass

    def _reap(self, grace: float) -> None:
        proc = self._proc
        if proc is not None:
            try:
                proc.wait(timeout=grace)
            except subprocess.TimeoutExpired:
                self._signal(kill=True)
                proc.wait()
        for t in self._threads:
            t.join(timeout=5)
        self._remove_staging()
        _PENDING.discard(self)
        self._reaped.set()

    def _remove_staging(self) -> None:
        shutil.rmtree(self.staging, ignore_errors=True)
