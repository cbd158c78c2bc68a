"""``facecomp.replace_faces``: bake the selected movie strips through the engine, thin over ``logic`` and
``_bake``. The UI path is modal (status-bar progress, Esc cancels, a timer polls the engine's JSON lines);
``execute`` runs the same steps synchronously for scripts and headless Blender."""

import os
import shutil
import tempfile
import time

import bpy

from . import _bake, _params, logic, preferences, properties


# Results that are not one media frame per scene frame are numbered images, listed frame by frame.
SEQUENCE_PATTERN = "f_%06d.png"


class Plan:
    """What one strip becomes: its media, the source frames ``[start, end)`` to bake, where the result goes,
    and ``shown``: the media frame Blender shows at each scene frame between the strip's handles."""

    __slots__ = ("channel", "end", "frame_start", "length", "path", "shown", "start", "strip_name")

    def __init__(self, strip_name, path, start, end, channel, frame_start, length, shown=None):
        self.strip_name, self.path, self.start, self.end = strip_name, path, start, end
        self.channel, self.frame_start, self.length = channel, frame_start, length
        self.shown = list(shown) if shown is not None else list(range(start, end))

    @property
    def as_sequence(self) -> bool:
        """A plain movie clip can only sit frame for frame; any other mapping is baked as images."""
        return not logic.is_consecutive(self.shown)

    @property
    def elements(self) -> list:
        return [SEQUENCE_PATTERN % frame for frame in self.shown]


def native_frames(path: str) -> int:
    """The media's own frame count, as Blender reads it (a movie clip loaded and freed again)."""
    try:
        clip = bpy.data.movieclips.load(path, check_existing=False)
    except RuntimeError as exc:
        raise _bake.BakeError(f"Blender cannot read {path}: {exc}") from exc
    try:
        return int(clip.frame_duration)
    finally:
        bpy.data.movieclips.remove(clip)


def selected_movie_strips(scene):
    editor = scene.sequence_editor
    if editor is None:
        return []
    return [s for s in logic.strip_collection(editor) if s.select and s.type == "MOVIE"]


def output_dir(context) -> str:
    configured = preferences.get(context).output_dir or "//facecomp/"
    if configured.startswith("//") and not bpy.data.filepath:
        return os.path.join(tempfile.gettempdir(), "facecomp-blender")  # unsaved .blend: no '//' yet
    return bpy.path.abspath(configured)


def _speed_effects_on(scene, strip) -> list:
    """Speed Control effects that take ``strip`` as input (what the scene shows is their remapping)."""
    return [s.name for s in logic.all_strips(scene.sequence_editor)
            if s.type == "SPEED" and (getattr(s, "input_1", None) == strip or getattr(s, "input_2", None) == strip)]


def strip_timing(scene, strip, native: int):
    """The strip's :class:`logic.Timing` as Blender 5.0 evaluates it (checked against its renders); a
    :class:`_bake.BakeError` naming what to change where that cannot be known exactly from what Blender
    exposes to Python."""
    name = strip.name
    effects = _speed_effects_on(scene, strip)
    if effects:
        raise _bake.BakeError(
            f"strip {name!r} is retimed by the Speed Control effect {effects[0]!r}, which facecomp cannot "
            "follow frame for frame; delete the effect and set the speed on the strip itself (select it, "
            "Strip > Retiming > Set Speed), then bake again")
    content = native - strip.animation_offset_start - strip.animation_offset_end
    if content <= 0:
        raise _bake.BakeError(f"strip {name!r}: its animation offsets leave no frame of its media")
    scene_fps = logic.f32(logic.f32(float(scene.render.fps)) / logic.f32(scene.render.fps_base))
    factor = logic.f32(logic.f32(strip.fps) / scene_fps) if strip.fps > 0 else 1.0
    common = dict(start=strip.frame_start, content_frames=content, anim_start=strip.animation_offset_start,
                  reverse=strip.use_reverse_frames, strobe=strip.strobe)
    keys = [k.timeline_frame for k in getattr(strip, "retiming_keys", ())]
    if keys:
        if len(keys) > 2:
            raise _bake.BakeError(
                f"strip {name!r} has {len(keys)} retiming keys (more than one speed); Blender does not tell "
                "add-ons where the inner keys sit in the media, so the frames cannot be followed exactly. "
                "Reset its retiming (Strip > Retiming > Reset Retiming) and set one speed for the whole "
                "strip (Strip > Retiming > Set Speed) before trimming it, or split it so each part has one speed")
        if factor != 1.0:
            raise _bake.BakeError(
                f"strip {name!r} is retimed and its media runs at {strip.fps:g} fps in a "
                f"{scene.render.fps / scene.render.fps_base:g} fps scene; set the scene's frame rate to the "
                "media's (Output Properties > Format > Frame Rate) or reset the strip's retiming")
        if strip.frame_start != int(strip.frame_start):
            raise _bake.BakeError(f"strip {name!r} is retimed and starts between frames; move it onto a "
                                  "whole frame (or reset its retiming)")
        # the first key holds content frame 0 at the start, the last the content's end: the strip's length
        return logic.Timing(factor=1.0, retimed_length=strip.frame_duration, **common)
    # Blender does not expose whether it adjusts the strip's playback rate; its length tells.
    candidates = [t for t in (logic.Timing(factor=1.0, **common), logic.Timing(factor=factor, **common))
                  if t.length() == strip.frame_duration]
    shown = {tuple(t.shown(strip.frame_final_start, strip.frame_final_end)) for t in candidates}
    if len(shown) != 1:
        raise _bake.BakeError(
            f"strip {name!r}: cannot tell whether Blender adjusts its {strip.fps:g} fps media to the scene's "
            f"{scene.render.fps / scene.render.fps_base:g} fps (its length is {strip.frame_duration} frames); "
            "add the strip again, with or without 'Adjust Playback Rate'")
    return candidates[0]


def make_plans(context, strips) -> list:
    scene = context.scene
    occupied = [(s.channel, s.frame_final_start, s.frame_final_end)
                for s in logic.strip_collection(scene.sequence_editor)]
    plans = []
    for strip in strips:
        path = bpy.path.abspath(strip.filepath)
        if not os.path.isfile(path):
            raise _bake.BakeError(f"strip {strip.name!r}: media file {path} is missing")
        native = native_frames(path)
        timing = strip_timing(scene, strip, native)
        shown = timing.shown(strip.frame_final_start, strip.frame_final_end)
        if not shown or min(shown) < 0 or max(shown) >= native:
            raise _bake.BakeError(f"strip {strip.name!r} shows no frame of its media")
        if not logic.is_consecutive(shown) and bpy.app.version < (5, 0, 0):
            raise _bake.BakeError(
                f"strip {strip.name!r} does not show one media frame per scene frame (rate, reverse, strobe, "
                "retiming or a hold); facecomp follows such strips on Blender 5.0 and later only: use Blender "
                "5.0, or reset those settings")
        start, length = strip.frame_final_start, len(shown)
        channel = logic.free_channel_above(occupied, strip.channel, start, start + length)
        occupied.append((channel, start, start + length))
        plans.append(Plan(strip.name, path, min(shown), max(shown) + 1, channel, start, length, shown))
    return plans


# Blender reallocates an image strip's element array on every append (quadratic: 20 000 appends take
# about 25 s), so long image results are split into consecutive strips of this many frames.
ELEMENTS_PER_STRIP = 2500


def _tag(new, plan: Plan, manifest: str, manifest_id: str, shown, part=None):
    new.color_tag = logic.SYNTHETIC_COLOR_TAG
    new["facecomp_synthetic"] = True
    new["facecomp_manifest"] = manifest
    new["facecomp_manifest_id"] = manifest_id
    new["facecomp_source_strip"] = plan.strip_name
    new["facecomp_source_frames"] = [plan.start, plan.end]
    new["facecomp_shown_frames"] = list(shown)
    if part is not None:
        new["facecomp_part"] = list(part)
    new.select = False


def add_result_strips(scene, plan: Plan, video: str, manifest: str, manifest_id: str) -> list:
    """The baked result as tagged strips above the original: one movie strip where the strip shows one
    media frame per scene frame, else image strips listing, scene frame by scene frame, the baked image
    of the frame Blender shows. Removed again if Blender reads them at another length or channel."""
    strips = logic.strip_collection(scene.sequence_editor)
    name = f"{plan.strip_name} [SYNTHETIC]"
    if not plan.as_sequence:
        parts = [(0, plan.length)]
    else:
        parts = [(i, min(i + ELEMENTS_PER_STRIP, plan.length)) for i in range(0, plan.length, ELEMENTS_PER_STRIP)]
    made = []
    try:
        for k, (a, b) in enumerate(parts):
            label = name if k == 0 else f"{name} {k + 1}"
            if plan.as_sequence:
                elements = plan.elements[a:b]
                new = strips.new_image(name=label, filepath=os.path.join(os.path.dirname(video), elements[0]),
                                       channel=plan.channel, frame_start=plan.frame_start + a)
                made.append(new)
                for element in elements[1:]:
                    new.elements.append(element)
            else:
                new = strips.new_movie(name=label, filepath=video, channel=plan.channel,
                                       frame_start=plan.frame_start)
                made.append(new)
            if (new.frame_final_start, new.frame_final_duration, new.channel) != (plan.frame_start + a, b - a,
                                                                                  plan.channel):
                got = (new.channel, new.frame_final_start, new.frame_final_duration)
                raise _bake.BakeError(f"the baked clip for {plan.strip_name!r} came in at channel/start/length "
                                      f"{got}, expected {(plan.channel, plan.frame_start + a, b - a)}; it was "
                                      "not placed")
    except Exception:
        for new in made:
            strips.remove(new)
        raise
    for k, (new, (a, b)) in enumerate(zip(made, parts)):
        _tag(new, plan, manifest, manifest_id, plan.shown[a:b], (k + 1, len(parts)) if len(parts) > 1 else None)
    return made


class Runner:
    """Bakes the plans one after another; polled by the modal timer or by ``execute``'s loop."""

    def __init__(self, context, plans, settings: dict):
        self.scene = context.scene
        self.plans = list(plans)
        self.settings = settings
        self.exe = _bake.find_executable(preferences.get(context).executable)
        self.dest = output_dir(context)
        try:
            os.makedirs(self.dest, exist_ok=True)
        except OSError as exc:
            raise _bake.BakeError(f"cannot create the output folder {self.dest}: {exc} (set another in the "
                                  "add-on's preferences)") from exc
        self.index = 0
        self.bake = None
        self.created = []  # names of the strips added so far
        self.cancelled = []  # cancelled bakes (their engine is stopped and their files removed in the background)

    def _start_current(self):
        plan = self.plans[self.index]
        self.bake = _bake.Bake(self.exe, plan.path, self.dest, self.settings, plan.start, plan.end,
                               image_sequence=SEQUENCE_PATTERN if plan.as_sequence else None).start()

    def step(self) -> bool:
        """Advance; True when every plan is done. Raises BakeError on a failure (nothing half is left)."""
        if self.index >= len(self.plans):
            return True
        if self.bake is None:
            self._start_current()
        self.bake.poll()
        if self.bake.running:
            return False
        video, manifest = self.bake.result()
        try:
            made = add_result_strips(self.scene, self.plans[self.index], video, manifest, self.bake.manifest_id)
        except Exception as exc:  # not placed: the files go too, so nothing half-made stays
            if self.plans[self.index].as_sequence:
                shutil.rmtree(os.path.dirname(video), ignore_errors=True)
            for path in (video, manifest):
                if os.path.exists(path):
                    os.remove(path)
            if isinstance(exc, _bake.BakeError):
                raise
            raise _bake.BakeError(f"Blender could not add the baked clip {video}: {exc}") from exc
        self.created.extend(strip.name for strip in made)
        self.index += 1
        self.bake = None
        return self.index >= len(self.plans)

    @property
    def percent(self) -> float:
        fraction = self.bake.fraction if self.bake is not None else 0.0
        return logic.progress_percent(self.index, len(self.plans), fraction)

    def cancel(self):
        """Stop the bake in progress without waiting for it (the UI thread never blocks on the engine)."""
        if self.bake is not None:
            self.bake.cancel()
            self.cancelled.append(self.bake)
            self.bake = None


class FACECOMP_OT_replace_faces(bpy.types.Operator):
    """Replace faces in the selected movie strips; the result is labelled SYNTHETIC on every frame and
    added on the channel above"""

    bl_idname = "facecomp.replace_faces"
    bl_label = "Replace Faces (disclosed)"
    bl_options = {"REGISTER"}

    @classmethod
    def poll(cls, context):
        return context.scene is not None and bool(selected_movie_strips(context.scene))

    def _prepare(self, context):
        strips = selected_movie_strips(context.scene)
        if not strips:
            raise _bake.BakeError("select one or more movie strips first")
        try:
            values = properties.values(context)
        except ValueError as exc:
            raise _bake.BakeError(str(exc)) from exc
        settings = _bake.settings_document(values, _params.PARAMS)
        return Runner(context, make_plans(context, strips), settings)

    def _done(self, runner):
        names = ", ".join(runner.created)
        self.report({"INFO"}, f"facecomp: added {len(runner.created)} labelled strip(s): {names}")

    def execute(self, context):
        try:
            runner = self._prepare(context)
        except _bake.BakeError as exc:
            self.report({"ERROR"}, f"facecomp: {exc}")
            return {"CANCELLED"}
        try:
            while not runner.step():
                time.sleep(0.1)
        except _bake.BakeError as exc:
            self.report({"ERROR"}, f"facecomp: {exc}")
            return {"CANCELLED"}
        except BaseException:  # Ctrl+C in a headless Blender: stop the engine, keep nothing half-made
            runner.cancel()
            raise
        self._done(runner)
        return {"FINISHED"}

    def invoke(self, context, event):
        if bpy.app.background:  # no event loop delivers timer events to a modal operator headless
            return self.execute(context)
        try:
            self._runner = self._prepare(context)
        except _bake.BakeError as exc:
            self.report({"ERROR"}, f"facecomp: {exc}")
            return {"CANCELLED"}
        wm = context.window_manager
        self._timer = wm.event_timer_add(0.2, window=context.window)
        wm.progress_begin(0, 100)
        wm.modal_handler_add(self)
        self._status(context, "facecomp: rendering… (Esc to cancel)")
        return {"RUNNING_MODAL"}

    def _status(self, context, text):
        if context.workspace is not None:
            context.workspace.status_text_set(text)

    def _end(self, context):
        wm = context.window_manager
        wm.event_timer_remove(self._timer)
        wm.progress_end()
        self._status(context, None)

    def modal(self, context, event):
        if event.type == "ESC":
            self._runner.cancel()
            self._end(context)
            self.report({"WARNING"}, f"facecomp: cancelled; {len(self._runner.created)} strip(s) were "
                                     "finished before; the unfinished render is stopped and its files removed")
            return {"CANCELLED"}
        if event.type != "TIMER":
            return {"PASS_THROUGH"}
        try:
            finished = self._runner.step()
        except _bake.BakeError as exc:
            self._end(context)
            self.report({"ERROR"}, f"facecomp: {exc}")
            return {"CANCELLED"}
        context.window_manager.progress_update(self._runner.percent)
        if finished:
            self._end(context)
            self._done(self._runner)
            return {"FINISHED"}
        return {"RUNNING_MODAL"}


def register():
    bpy.utils.register_class(FACECOMP_OT_replace_faces)


def unregister():
    bpy.utils.unregister_class(FACECOMP_OT_replace_faces)
