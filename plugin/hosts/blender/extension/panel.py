"""The Sequencer sidebar panel (View > Sidebar, tab "facecomp")."""

import bpy

from . import _params, operators


class FACECOMP_PT_sequencer(bpy.types.Panel):
    bl_idname = "FACECOMP_PT_sequencer"
    bl_label = "Replace Faces"
    bl_space_type = "SEQUENCE_EDITOR"
    bl_region_type = "UI"
    bl_category = "facecomp"

    def draw(self, context):
        layout = self.layout
        group = getattr(context.scene, "facecomp", None)
        if group is None:
            return
        current = None
        box = layout
        for entry in _params.PROPERTIES:
            if entry.get("group") != current:
                current = entry.get("group")
                box = layout.box()
                box.label(text=_params.GROUP_TITLES.get(current, str(current).capitalize()))
            box.prop(group, entry["name"])
        n = len(operators.selected_movie_strips(context.scene))
        col = layout.column()
        col.operator(operators.FACECOMP_OT_replace_faces.bl_idname, icon="RENDER_ANIMATION",
                     text=f"Replace Faces in {n} strip(s)")
        col.label(text="Every frame is labelled SYNTHETIC", icon="INFO")


def register():
    bpy.utils.register_class(FACECOMP_PT_sequencer)


def unregister():
    bpy.utils.unregister_class(FACECOMP_PT_sequencer)
