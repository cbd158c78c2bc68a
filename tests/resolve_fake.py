"""A FAKE of DaVinci Resolve's scripting object model, for tests only (Resolve itself cannot run here).

It models the documented object graph the facecomp script uses: Resolve -> ProjectManager -> Project
-> MediaPool (Folder, MediaPoolItem) and Timeline -> TimelineItem, with Resolve's documented semantics
(the scripting README shipped with Resolve, "Basic Resolve API"), and the behaviour observed on real
Resolve where the README is silent:

- ``MediaPool.AppendToTimeline([{clipInfo}])``: ``mediaPoolItem``, ``startFrame``, ``endFrame``, optional
  ``mediaType`` (1 video only, 2 audio only), ``trackIndex`` and ``recordFrame``. ``endFrame`` is
  exclusive (an item is ``endFrame - startFrame`` frames long, confirmed by read-back on Resolve Studio)
  and ``recordFrame`` is an absolute timeline frame (a timeline starts at 01:00:00:00, i.e. frame
  3600 * fps). Without ``recordFrame`` the clip goes to the end of the track. Overlapping an existing
  item is not documented; the fake refuses it (returns an empty list) so no test can rely on it.
- ``TimelineItem.GetStart/GetEnd`` are absolute record frames, ``GetEnd`` exclusive; ``GetLeftOffset``
  and ``GetSourceStartFrame`` are the source frame at the item's head.
- ``Timeline.AddMarker(frameId, ...)``: ``frameId`` counts from the timeline's start; one marker per frame.
- Media is real: ``ImportMedia`` probes each file with PyAV (frame rate, frame count, resolution), so the
  script under test works on real renders; a file that is not media is not imported.
- ``Resolve.Fusion()`` returns None unless a ``user`` is given: then ``Fusion().UIManager`` and
  ``bmd.UIDispatcher`` model the Fusion UI Manager's documented calls (``AddWindow``, ``GetItems``,
  widget ``Text``/``Value``/``AddItem``/``CurrentIndex``/``CurrentText``, ``On.<ID>.<Event>`` handlers,
  ``Show``/``RunLoop``/``ExitLoop``/``Hide``), and ``RunLoop`` calls ``user(window)`` to play the person
  at the dialog.
"""

from __future__ import annotations

import os
from fractions import Fraction

import av

CLIP_COLORS = {"Orange", "Apricot", "Yellow", "Lime", "Olive", "Green", "Teal", "Navy", "Blue", "Purple",
               "Violet", "Pink", "Tan", "Beige", "Brown", "Chocolate"}
MARKER_COLORS = {"Blue", "Cyan", "Green", "Yellow", "Red", "Pink", "Purple", "Fuchsia", "Rose", "Lavender",
                 "Sky", "Mint", "Lemon", "Sand", "Cocoa", "Cream"}


class _Ids:
    """Unique ids per fake session (Resolve's GetUniqueId strings)."""

    def __init__(self):
        self.n = 0

    def next(self, kind: str) -> str:
        self.n += 1
        return f"{kind}-{self.n:04d}"


class MediaPoolItem:
    def __init__(self, ids: _Ids, path: str):
        with av.open(path) as c:
            st = c.streams.video[0]
            rate = st.average_rate or st.guessed_rate
            frames = st.frames or sum(1 for _ in c.decode(video=0))
            width, height = st.codec_context.width, st.codec_context.height
        self._id = ids.next("mpi")
        self._path = os.path.abspath(path)
        self._fps = Fraction(rate)
        self._props = {"File Path": self._path, "File Name": os.path.basename(path), "Clip Name": os.path.basename(path),
                       "FPS": f"{float(rate):.3f}", "Frames": str(frames), "Resolution": f"{width}x{height}",
                       "Type": "Video"}
        self._metadata: dict[str, str] = {}
        self._color = ""

    def GetName(self):
        return self._props["Clip Name"]

    def GetUniqueId(self):
        return self._id

    def GetMediaId(self):
        return self._id

    def GetClipProperty(self, name=None):
        return dict(self._props) if name is None else self._props.get(name, "")

    def GetMetadata(self, name=None):
        return dict(self._metadata) if name is None else self._metadata.get(name, "")

    def SetMetadata(self, name, value):
        self._metadata[str(name)] = str(value)
        return True

    def GetClipColor(self):
        return self._color

    def SetClipColor(self, color):
        if color not in CLIP_COLORS:
            return False
        self._color = color
        return True

    def ClearClipColor(self):
        self._color = ""
        return True


class Folder:
    def __init__(self, ids: _Ids, name: str):
        self._id = ids.next("folder")
        self._name = name
        self.clips: list[MediaPoolItem] = []
        self.subfolders: list[Folder] = []

    def GetName(self):
        return self._name

    def GetUniqueId(self):
        return self._id

    def GetClipList(self):
        return list(self.clips)

    def GetSubFolderList(self):
        return list(self.subfolders)


class TimelineItem:
    def __init__(self, ids: _Ids, timeline: Timeline, mpi: MediaPoolItem, track: int, start: int,
                 source_start: int, duration: int):
        self._id = ids.next("item")
        self._timeline = timeline
        self._mpi = mpi
        self.track = track
        self._start = start
        self._source_start = source_start
        self._duration = duration
        self._color = ""

    def GetName(self):
        return self._mpi.GetName()

    def GetUniqueId(self):
        return self._id

    def GetStart(self):
        return self._start

    def GetEnd(self):
        return self._start + self._duration  # exclusive

    def GetDuration(self):
        return self._duration

    def GetLeftOffset(self):
        return self._source_start

    def GetRightOffset(self):
        return int(self._mpi.GetClipProperty("Frames")) - self._source_start - self._source_frames()

    def GetSourceStartFrame(self):
        return self._source_start

    def GetSourceEndFrame(self):
        return self._source_start + self._source_frames()

    def _source_frames(self):
        return int(round(self._duration * self._mpi._fps / self._timeline._fps))

    def GetMediaPoolItem(self):
        return self._mpi

    def GetClipColor(self):
        return self._color

    def SetClipColor(self, color):
        if color not in CLIP_COLORS:
            return False
        self._color = color
        return True


def _tc_to_frame(tc: str, fps: int) -> int:
    h, m, s, f = (int(x) for x in tc.replace(";", ":").split(":"))
    return ((h * 60 + m) * 60 + s) * fps + f


def _frame_to_tc(frame: int, fps: int) -> str:
    s, f = divmod(frame, fps)
    m, s = divmod(s, 60)
    h, m = divmod(m, 60)
    return f"{h:02d}:{m:02d}:{s:02d}:{f:02d}"


class Timeline:
    def __init__(self, ids: _Ids, name: str, fps: Fraction):
        self._ids = ids
        self._id = ids.next("timeline")
        self._name = name
        self._fps = Fraction(fps)
        self._start = 3600 * int(round(float(fps)))  # 01:00:00:00
        self.tracks: list[list[TimelineItem]] = [[]]  # video tracks, V1 first
        self.track_names = ["Video 1"]
        self.markers: dict[int, dict] = {}
        self._playhead = self._start

    def GetName(self):
        return self._name

    def GetUniqueId(self):
        return self._id

    def GetSetting(self, name=None):
        settings = {"timelineFrameRate": f"{float(self._fps):g}"}
        return settings if name is None else settings.get(name, "")

    def GetStartFrame(self):
        return self._start

    def GetEndFrame(self):
        ends = [i.GetEnd() for t in self.tracks for i in t]
        return max(ends, default=self._start)

    def GetTrackCount(self, track_type):
        return len(self.tracks) if track_type == "video" else 0

    def AddTrack(self, track_type, *args):
        if track_type != "video":
            return False
        self.tracks.append([])
        self.track_names.append(f"Video {len(self.tracks)}")
        return True

    def GetTrackName(self, track_type, index):
        return self.track_names[index - 1] if track_type == "video" and 1 <= index <= len(self.tracks) else ""

    def SetTrackName(self, track_type, index, name):
        if track_type != "video" or not 1 <= index <= len(self.tracks):
            return False
        self.track_names[index - 1] = name
        return True

    def GetItemListInTrack(self, track_type, index):
        if track_type != "video" or not 1 <= index <= len(self.tracks):
            return None
        return sorted(self.tracks[index - 1], key=lambda i: i.GetStart())

    def GetCurrentTimecode(self):
        return _frame_to_tc(self._playhead, int(round(float(self._fps))))

    def SetCurrentTimecode(self, tc):
        self._playhead = _tc_to_frame(tc, int(round(float(self._fps))))
        return True

    def GetCurrentVideoItem(self):
        for track in reversed(self.tracks):  # the topmost clip under the playhead is what is seen
            for item in track:
                if item.GetStart() <= self._playhead < item.GetEnd():
                    return item
        return None

    def AddMarker(self, frame_id, color, name, note, duration, custom_data=""):
        frame_id = int(frame_id)
        if color not in MARKER_COLORS or frame_id in self.markers or frame_id < 0 or duration < 1:
            return False
        self.markers[frame_id] = {"color": color, "duration": int(duration), "note": note, "name": name,
                                  "customData": custom_data}
        return True

    def GetMarkers(self):
        return {k: dict(v) for k, v in self.markers.items()}

    def DeleteClips(self, items, ripple=False):
        for item in items:
            for track in self.tracks:
                if item in track:
                    track.remove(item)
        return True

    def _place(self, mpi, track, start_frame, end_frame, record):
        if not 1 <= track <= len(self.tracks):
            return None
        total = int(mpi.GetClipProperty("Frames"))
        if not 0 <= start_frame < end_frame <= total:
            return None
        duration = int(round((end_frame - start_frame) * self._fps / mpi._fps))
        items = self.tracks[track - 1]
        if record is None:
            record = max((i.GetEnd() for i in items), default=self._start)
        if any(i.GetStart() < record + duration and record < i.GetEnd() for i in items):
            return None
        item = TimelineItem(self._ids, self, mpi, track, int(record), int(start_frame), duration)
        items.append(item)
        return item


class MediaPool:
    def __init__(self, ids: _Ids, project: Project):
        self._ids = ids
        self._project = project
        self._root = Folder(ids, "Master")
        self._current = self._root

    def GetRootFolder(self):
        return self._root

    def GetCurrentFolder(self):
        return self._current

    def SetCurrentFolder(self, folder):
        self._current = folder
        return True

    def AddSubFolder(self, folder, name):
        sub = Folder(self._ids, name)
        folder.subfolders.append(sub)
        return sub

    def ImportMedia(self, items):
        out = []
        for path in items:
            if not isinstance(path, str) or not os.path.isfile(path):
                continue
            try:
                mpi = MediaPoolItem(self._ids, path)
            except (av.error.FFmpegError, IndexError):
                continue
            self._current.clips.append(mpi)
            out.append(mpi)
        return out

    def DeleteClips(self, clips):
        def walk(folder):
            folder.clips = [c for c in folder.clips if c not in clips]
            for sub in folder.subfolders:
                walk(sub)
        walk(self._root)
        return True

    def CreateEmptyTimeline(self, name):
        fps = Fraction(self._project.GetSetting("timelineFrameRate"))
        tl = Timeline(self._ids, name, fps)
        self._project.timelines.append(tl)
        if self._project.GetCurrentTimeline() is None:
            self._project.SetCurrentTimeline(tl)
        return tl

    def AppendToTimeline(self, *clips):
        if len(clips) == 1 and isinstance(clips[0], list):
            clips = clips[0]
        timeline = self._project.GetCurrentTimeline()
        if timeline is None:
            return []
        placed = []
        for clip in clips:
            if isinstance(clip, MediaPoolItem):
                clip = {"mediaPoolItem": clip, "startFrame": 0, "endFrame": int(clip.GetClipProperty("Frames"))}
            unknown = set(clip) - {"mediaPoolItem", "startFrame", "endFrame", "mediaType", "trackIndex", "recordFrame"}
            if unknown or not isinstance(clip.get("mediaPoolItem"), MediaPoolItem):
                return []
            if clip.get("mediaType", 1) != 1:  # this fake holds video tracks only
                return []
            item = timeline._place(clip["mediaPoolItem"], int(clip.get("trackIndex", 1)), int(clip["startFrame"]),
                                   int(clip["endFrame"]), clip.get("recordFrame"))
            if item is None:
                return placed
            placed.append(item)
        return placed


class Project:
    def __init__(self, ids: _Ids, name: str, fps: str):
        self._name = name
        self._settings = {"timelineFrameRate": fps}
        self.timelines: list[Timeline] = []
        self._current: Timeline | None = None
        self._pool = MediaPool(ids, self)

    def GetName(self):
        return self._name

    def GetMediaPool(self):
        return self._pool

    def GetSetting(self, name=None):
        return dict(self._settings) if name is None else self._settings.get(name, "")

    def SetSetting(self, name, value):
        self._settings[name] = str(value)
        return True

    def GetTimelineCount(self):
        return len(self.timelines)

    def GetTimelineByIndex(self, index):
        return self.timelines[index - 1] if 1 <= index <= len(self.timelines) else None

    def GetCurrentTimeline(self):
        return self._current

    def SetCurrentTimeline(self, timeline):
        self._current = timeline
        return True


class ProjectManager:
    def __init__(self, ids: _Ids):
        self._ids = ids
        self._current: Project | None = None

    def CreateProject(self, name, fps: str = "25"):
        self._current = Project(self._ids, name, fps)
        return self._current

    def GetCurrentProject(self):
        return self._current


class Widget:
    def __init__(self, kind, props=None, children=()):
        props = dict(props or {})
        self.kind, self.ID, self.children = kind, props.get("ID"), list(children)
        self.Text = props.get("Text", "")
        self.Value = props.get("Value", 0)
        self.Minimum, self.Maximum = props.get("Minimum"), props.get("Maximum")
        self.items: list[str] = []
        self.CurrentIndex = 0

    def AddItem(self, text):
        self.items.append(str(text))

    @property
    def CurrentText(self):
        return self.items[self.CurrentIndex] if 0 <= self.CurrentIndex < len(self.items) else ""

    def set_value(self, v):  # a spin box keeps its value within its range, as Qt's does
        lo = self.Minimum if self.Minimum is not None else v
        hi = self.Maximum if self.Maximum is not None else v
        self.Value = min(max(v, lo), hi)


class UIManager:
    """Widget factories: ``ui.Kind({props})``, ``ui.Kind([children])`` or ``ui.Kind({props}, [children])``."""

    def __getattr__(self, kind):
        def make(props=None, children=None):
            if isinstance(props, list):
                props, children = None, props
            return Widget(kind, props, children or ())
        return make


class _Handlers:
    def __init__(self):
        self.__dict__["events"] = {}

    def __getattr__(self, widget_id):
        return self.events.setdefault(widget_id, type("On", (), {})())


class Window:
    def __init__(self, props, root):
        self.props, self.root = props, root
        self.On = _Handlers()
        self.shown = False

    def GetItems(self):
        found, todo = {}, [self.root]
        while todo:
            w = todo.pop()
            if w.ID:
                found[w.ID] = w
            todo.extend(w.children)
        return found

    def Show(self):
        self.shown = True

    def Hide(self):
        self.shown = False


class UIDispatcher:
    def __init__(self, ui, user):
        self.ui, self.user, self.window, self.running = ui, user, None, False

    def AddWindow(self, props, root):
        self.window = Window(props, root)
        return self.window

    def RunLoop(self):
        self.running = True
        self.user(self.window)

    def ExitLoop(self):
        self.running = False


class Bmd:
    """The ``bmd`` module Resolve gives scripts (only what the UI needs)."""

    def __init__(self, user):
        self.user = user

    def UIDispatcher(self, ui):
        return UIDispatcher(ui, self.user)


class Resolve:
    """The fake ``resolve`` object a script receives."""

    def __init__(self, product: str = "DaVinci Resolve Studio", user=None):
        self._product = product
        self._pm = ProjectManager(_Ids())
        self._fusion = type("Fusion", (), {"UIManager": UIManager()})() if user else None
        self.bmd = Bmd(user) if user else None

    def GetProductName(self):
        return self._product

    def GetVersionString(self):
        return "19.1.4.11"

    def GetProjectManager(self):
        return self._pm

    def Fusion(self):
        return self._fusion
