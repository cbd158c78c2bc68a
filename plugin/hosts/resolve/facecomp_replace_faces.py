"""facecomp: Replace Faces (disclosed), a DaVinci Resolve script for Workspace > Scripts > Utility.

Resolve's scripting API cannot touch pixels frame by frame, so this script bakes: for the clip under the
playhead (or every clip of a chosen colour on a chosen video track) it renders the clip's used source
range through the ``facecomp`` engine, which runs outside Resolve's Python, imports the labelled result
into the "Synthetic (facecomp)" bin, places it on a new video track above at the same record frame, and
marks it as synthetic: media pool metadata, a clip colour, and a timeline marker naming the manifest.

``facecomp resolve install`` writes this file into Resolve's Utility scripts folder with the engine
runner (facecomp.hosts.bake) and the effect declaration inlined where the two markers below are: the
installed script is one self-contained file for whatever Python Resolve runs.
"""

from __future__ import annotations

import json
import os
import sys

# @@FACECOMP_BAKE@@
# @@FACECOMP_PARAMS@@

BIN_NAME = "Synthetic (facecomp)"
SYNTHETIC_COLOR = "Orange"
MARKER_COLOR = "Red"
CLIP_COLORS = ("Orange", "Apricot", "Yellow", "Lime", "Olive", "Green", "Teal", "Navy", "Blue", "Purple",
               "Violet", "Pink", "Tan", "Beige", "Brown", "Chocolate")
CONFIG_PATH = os.path.join(os.path.expanduser("~"), ".facecomp", "resolve.json")
LOG_PATH = os.path.join(os.path.expanduser("~"), ".facecomp", "logs", "resolve.log")
FREE_EDITION_HELP = (
    "DaVinci Resolve did not hand this script its scripting object. Scripts run from Workspace > Scripts "
    "inside Resolve; running them from outside Resolve (a terminal, an IDE) needs DaVinci Resolve Studio "
    "with Preferences > System > General > External scripting using set to Local. See "
    "examples/resolve_walkthrough.md in facecomp.")

# The options of one run; "settings" holds effect settings keyed as in facecomp.spec.
DEFAULT_OPTIONS = {
    "mode": "playhead",  # or "track"
    "track": 1,
    "clip_color": "",  # "" = every clip on the track
    "executable": "",
    "output_dir": "",  # "" = a "facecomp" folder next to each source clip
    "settings": {"source": [], "faces": "all", "reference": [], "label_corner": "top-left", "label_scale": 1.0,
                 "color": "rct", "blend": "feather"},
}


class ResolveScriptError(Exception):
    """Something the person at the editor can fix; the message says what."""


def log(text: str) -> None:
    """Print to Resolve's Console (Workspace > Console) and keep a copy in LOG_PATH."""
    print(f"[facecomp] {text}")
    try:
        os.makedirs(os.path.dirname(LOG_PATH), exist_ok=True)
        with open(LOG_PATH, "a", encoding="utf-8") as f:
            f.write(text + "\n")
    except OSError:
        pass


# ---------------------------------------------------------------------------------------------------
# reading the timeline


def _fps(value, what: str) -> float:
    try:
        fps = float(str(value).strip().split()[0])
    except (ValueError, IndexError):
        raise ResolveScriptError(f"cannot read the frame rate of {what} ({value!r})")
    if fps <= 0:
        raise ResolveScriptError(f"{what} has no frame rate ({value!r})")
    return fps


def timeline_fps(project, timeline) -> float:
    value = timeline.GetSetting("timelineFrameRate") or project.GetSetting("timelineFrameRate")
    return _fps(value, f"timeline {timeline.GetName()!r}")


def source_range(item, clip_fps: float, tl_fps: float, clip_frames=None) -> tuple:
    """Source frames ``[a, b)`` a timeline item shows: its in point and its duration converted from
    timeline to clip frames. The in point is ``GetLeftOffset`` (the frames of media before the head,
    counted from the media's first frame, which is what ``facecomp render --start`` counts);
    ``GetSourceStartFrame`` only where an API lacks it."""
    if hasattr(item, "GetLeftOffset"):
        a = int(item.GetLeftOffset())
    else:
        a = int(item.GetSourceStartFrame())
    n = int(round(item.GetDuration() * clip_fps / tl_fps))
    b = a + n
    if clip_frames:
        b = min(b, int(clip_frames))
    if b <= a:
        raise ResolveScriptError(f"clip {item.GetName()!r} shows no frame of its media ({a}..{b})")
    return a, b


def clips_to_bake(timeline, options: dict) -> list:
    """The clip under the playhead, or every clip (of the chosen colour) on the chosen video track."""
    if options["mode"] == "playhead":
        item = timeline.GetCurrentVideoItem()
        if item is None:
            raise ResolveScriptError("no video clip under the playhead; move the playhead onto a clip")
        return [item]
    track = int(options["track"])
    if not 1 <= track <= timeline.GetTrackCount("video"):
        raise ResolveScriptError(f"the timeline has no video track V{track}")
    color = options.get("clip_color") or ""
    items = [i for i in (timeline.GetItemListInTrack("video", track) or [])
             if not color or i.GetClipColor() == color]
    if not items:
        what = f" with clip colour {color}" if color else ""
        raise ResolveScriptError(f"no clip{what} on video track V{track}")
    return items


def media_path(item) -> tuple:
    mpi = item.GetMediaPoolItem()
    if mpi is None:
        raise ResolveScriptError(f"clip {item.GetName()!r} has no media (a generator, title or compound clip)")
    path = mpi.GetClipProperty("File Path")
    if not path or not os.path.isfile(path):
        raise ResolveScriptError(f"clip {item.GetName()!r}: media file {path!r} is offline")
    return mpi, path


def ensure_bin(media_pool):
    root = media_pool.GetRootFolder()
    for folder in root.GetSubFolderList() or []:
        if folder.GetName() == BIN_NAME:
            return folder
    folder = media_pool.AddSubFolder(root, BIN_NAME)
    if folder is None:
        raise ResolveScriptError(f"could not create the {BIN_NAME!r} bin in the media pool")
    return folder


# ---------------------------------------------------------------------------------------------------
# baking and placing


def _remove_files(*paths) -> None:
    for p in paths:
        try:
            os.remove(p)
        except OSError:
            pass


def place_result(project, timeline, media_pool, bin_folder, track_index: int, item, video: str, manifest: str,
                 manifest_id: str, frames: int):
    """Import the baked clip, put it on ``track_index`` at the item's record frame, mark it synthetic.
    Anything that fails undoes what this call did (the clip leaves the media pool, the files go)."""
    media_pool.SetCurrentFolder(bin_folder)
    imported = media_pool.ImportMedia([video]) or []
    if not imported:
        _remove_files(video, manifest)
        raise ResolveScriptError(f"Resolve could not import {video}")
    mpi = imported[0]
    record = int(item.GetStart())
    placed = media_pool.AppendToTimeline([{
        "mediaPoolItem": mpi, "startFrame": 0, "endFrame": frames,  # endFrame is exclusive
        "mediaType": 1, "trackIndex": track_index, "recordFrame": record}]) or []
    new = placed[0] if placed else None
    if new is None or int(new.GetStart()) != record or int(new.GetDuration()) != int(item.GetDuration()):
        if new is not None:
            timeline.DeleteClips([new])
        media_pool.DeleteClips([mpi])
        _remove_files(video, manifest)
        raise ResolveScriptError(f"Resolve did not place the baked clip for {item.GetName()!r} at record frame "
                                 f"{record} with {item.GetDuration()} frames; nothing was kept")
    note = f"SYNTHETIC: AI-altered (faces replaced by facecomp). Manifest: {manifest}"
    mpi.SetMetadata("Comments", note)
    mpi.SetMetadata("Keywords", "SYNTHETIC")
    mpi.SetClipColor(SYNTHETIC_COLOR)
    new.SetClipColor(SYNTHETIC_COLOR)
    timeline.AddMarker(record - int(timeline.GetStartFrame()), MARKER_COLOR, "SYNTHETIC (facecomp)",
                       f"Manifest: {manifest}", max(1, int(item.GetDuration())), manifest_id)
    return new


def bake_clips(resolve, options: dict, on_event=None) -> list:
    """Bake every chosen clip; returns ``[(timeline item, video, manifest)]``. Stops at the first failure
    with a :class:`ResolveScriptError` (clips finished before stay, nothing half-made does)."""
    project = resolve.GetProjectManager().GetCurrentProject()
    if project is None:
        raise ResolveScriptError("no project is open")
    timeline = project.GetCurrentTimeline()
    if timeline is None:
        raise ResolveScriptError("no timeline is open; open the timeline with the clip first")
    media_pool = project.GetMediaPool()
    items = clips_to_bake(timeline, options)
    exe = find_executable(options.get("executable") or "")
    settings = settings_document(options.get("settings") or {}, PARAMS)
    tl_fps = timeline_fps(project, timeline)
    plans = []
    for item in items:  # check every clip before rendering any
        mpi, path = media_path(item)
        clip_fps = _fps(mpi.GetClipProperty("FPS"), f"clip {item.GetName()!r}")
        frames = mpi.GetClipProperty("Frames")
        a, b = source_range(item, clip_fps, tl_fps, int(frames) if str(frames).isdigit() else None)
        plans.append((item, path, a, b))
    bin_folder = track_index = None
    done = []
    for item, path, a, b in plans:
        dest = options.get("output_dir") or os.path.join(os.path.dirname(path), "facecomp")
        os.makedirs(dest, exist_ok=True)
        log(f"rendering {item.GetName()} source frames {a}..{b} -> {dest}")
        job = Bake(exe, path, dest, settings, a, b).start()
        try:
            video, manifest = job.wait(on_event=on_event)
        except BakeError as exc:
            raise ResolveScriptError(f"{item.GetName()}: {exc}")
        except BaseException:  # interrupted from the Console: stop the engine, keep nothing half-made
            job.cancel()
            raise
        if track_index is None:  # the project changes only once there is a finished clip to place
            bin_folder = ensure_bin(media_pool)
            if not timeline.AddTrack("video"):
                _remove_files(video, manifest)
                raise ResolveScriptError("Resolve could not add a video track")
            track_index = timeline.GetTrackCount("video")
            timeline.SetTrackName("video", track_index, "SYNTHETIC (facecomp)")
        place_result(project, timeline, media_pool, bin_folder, track_index, item, video, manifest,
                     job.manifest_id, b - a)
        log(f"placed {os.path.basename(video)} on V{track_index} at {item.GetStart()}; manifest {manifest}")
        done.append((item, video, manifest))
    return done


# ---------------------------------------------------------------------------------------------------
# options: saved defaults and the Fusion UI dialog


def load_options(path: str = CONFIG_PATH) -> dict:
    options = json.loads(json.dumps(DEFAULT_OPTIONS))
    try:
        with open(path, encoding="utf-8") as f:
            saved = json.load(f)
    except (OSError, ValueError):
        return options
    settings = dict(options["settings"], **(saved.get("settings") or {}))
    options.update({k: v for k, v in saved.items() if k in DEFAULT_OPTIONS})
    options["settings"] = settings
    return options


def save_options(options: dict, path: str = CONFIG_PATH) -> None:
    try:
        os.makedirs(os.path.dirname(path), exist_ok=True)
        tmp = path + ".tmp"
        with open(tmp, "w", encoding="utf-8") as f:
            json.dump(options, f, indent=2)
        os.replace(tmp, path)
    except OSError as exc:
        log(f"could not save the options in {path}: {exc}")


def ask_options(resolve, options: dict, bmd=None):
    """A small Fusion UI Manager dialog; ``None`` when cancelled. Without the UI Manager (some free
    edition builds, or outside Resolve) the saved options are used as they are."""
    try:
        fusion = resolve.Fusion()
        ui = fusion.UIManager
        disp = bmd.UIDispatcher(ui)
    except Exception:
        log(f"no dialog available: using the options in {CONFIG_PATH}")
        return options
    try:
        return _dialog(ui, disp, options)
    except Exception as exc:  # a UI Manager without one of the widgets: say so rather than guess
        log(f"the dialog could not be shown ({exc}); edit {CONFIG_PATH} and run the script again")
        return None


def _dialog(ui, disp, options: dict):
    s = options["settings"]
    corners = ["top-left", "top-right", "bottom-left", "bottom-right"]
    win = disp.AddWindow({"ID": "facecomp", "WindowTitle": "facecomp: Replace Faces (disclosed)",
                          "Geometry": [200, 200, 560, 330]}, ui.VGroup([
        ui.HGroup([ui.Label({"Text": "Source photo"}), ui.LineEdit({"ID": "source", "Text": ";".join(s.get("source") or [])})]),
        ui.HGroup([ui.Label({"Text": "Faces"}), ui.LineEdit({"ID": "faces", "Text": s.get("faces", "all")})]),
        ui.HGroup([ui.Label({"Text": "Reference photo"}), ui.LineEdit({"ID": "reference", "Text": ";".join(s.get("reference") or [])})]),
        ui.HGroup([ui.Label({"Text": "Label corner"}), ui.ComboBox({"ID": "corner"}),
                   ui.Label({"Text": "Label scale (>= 1)"}), ui.DoubleSpinBox({"ID": "scale", "Minimum": 1.0, "Maximum": 4.0, "Value": float(s.get("label_scale", 1.0)), "SingleStep": 0.25})]),
        ui.HGroup([ui.Label({"Text": "Clips"}), ui.ComboBox({"ID": "mode"}),
                   ui.Label({"Text": "Track V"}), ui.SpinBox({"ID": "track", "Minimum": 1, "Maximum": 99, "Value": int(options["track"])}),
                   ui.Label({"Text": "Clip colour"}), ui.ComboBox({"ID": "clip_color"})]),
        ui.HGroup([ui.Label({"Text": "facecomp executable"}), ui.LineEdit({"ID": "exe", "Text": options.get("executable", ""), "PlaceholderText": "found on PATH"})]),
        ui.Label({"Text": "Every frame of the result is labelled SYNTHETIC; the label cannot be turned off."}),
        ui.HGroup([ui.Button({"ID": "run", "Text": "Replace Faces"}), ui.Button({"ID": "cancel", "Text": "Cancel"})]),
    ]))
    items = win.GetItems()
    for c in corners:
        items["corner"].AddItem(c)
    items["corner"].CurrentIndex = corners.index(s.get("label_corner", "top-left"))
    for m in ("clip under the playhead", "clips on a track"):
        items["mode"].AddItem(m)
    items["mode"].CurrentIndex = 0 if options["mode"] == "playhead" else 1
    colors = ("(any)",) + CLIP_COLORS
    for c in colors:
        items["clip_color"].AddItem(c)
    items["clip_color"].CurrentIndex = colors.index(options["clip_color"]) if options["clip_color"] in colors else 0
    answer = {}

    def on_run(ev):
        split = lambda t: [p.strip() for p in str(t).split(";") if p.strip()]
        answer["options"] = dict(options, mode="playhead" if items["mode"].CurrentIndex == 0 else "track",
                                 track=int(items["track"].Value),
                                 clip_color="" if items["clip_color"].CurrentIndex == 0 else items["clip_color"].CurrentText,
                                 executable=items["exe"].Text.strip(),
                                 settings=dict(s, source=split(items["source"].Text), faces=items["faces"].Text.strip() or "all",
                                               reference=split(items["reference"].Text),
                                               label_corner=items["corner"].CurrentText,
                                               label_scale=max(1.0, float(items["scale"].Value))))
        disp.ExitLoop()

    def on_cancel(ev):
        disp.ExitLoop()

    win.On.run.Clicked = on_run
    win.On.cancel.Clicked = on_cancel
    win.On.facecomp.Close = on_cancel
    win.Show()
    disp.RunLoop()
    win.Hide()
    return answer.get("options")


def get_resolve(namespace=None):
    """Resolve's scripting object: the ``resolve`` global Resolve gives its menu scripts, else through
    DaVinciResolveScript (external scripting, Studio only)."""
    namespace = namespace if namespace is not None else globals()
    if namespace.get("resolve") is not None:
        return namespace["resolve"]
    try:
        import DaVinciResolveScript as dvr
    except ImportError:
        return None
    return dvr.scriptapp("Resolve")


def main(resolve=None, options=None, interactive=True) -> int:
    resolve = resolve if resolve is not None else get_resolve()
    if resolve is None:
        log(FREE_EDITION_HELP)
        return 2
    if options is None:
        options = load_options()
        if interactive:
            options = ask_options(resolve, options, globals().get("bmd"))
            if options is None:
                log("cancelled")
                return 130
            save_options(options)

    def on_event(ev):
        if ev.event == "progress" and ev.total:
            log(f"  {ev.done}/{ev.total} frames")
        elif ev.event == "message" and ev.level in ("warning", "error"):
            log(f"  {ev.level}: {ev.text}")

    try:
        done = bake_clips(resolve, options, on_event)
    except (ResolveScriptError, BakeError) as exc:
        log(f"error: {exc}")
        if "Studio" not in str(resolve.GetProductName() or ""):
            log("note: this is the free edition of DaVinci Resolve; if Workspace > Scripts does not list "
                "facecomp, see examples/resolve_walkthrough.md")
        return 1
    log(f"done: {len(done)} clip(s) baked and placed on a new track, each marked SYNTHETIC")
    return 0


if __name__ == "__main__":
    _code = main()
    if globals().get("resolve") is None:  # run from a terminal: an exit status; inside Resolve: none
        sys.exit(_code)
