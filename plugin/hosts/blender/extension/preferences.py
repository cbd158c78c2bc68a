"""Add-on preferences: where the facecomp engine is and where results go."""

import bpy

from . import _bake


class FACECOMP_AP_preferences(bpy.types.AddonPreferences):
    bl_idname = __package__

    executable: bpy.props.StringProperty(
        name="facecomp executable", subtype="FILE_PATH", default="",
        description="The 'facecomp' command to run. Empty: $FACECOMP_EXECUTABLE, then PATH, then the usual "
                    "virtual-environment places")
    output_dir: bpy.props.StringProperty(
        name="Output folder", subtype="DIR_PATH", default="//facecomp/",
        description="Where baked clips and their manifests are written ('//' is the .blend's folder)")

    def draw(self, context):
        layout = self.layout
        layout.prop(self, "executable")
        layout.prop(self, "output_dir")
        try:
            layout.label(text=f"Engine: {_bake.find_executable(self.executable)}", icon="CHECKMARK")
        except _bake.BakeError as exc:
            layout.label(text=str(exc)[:200], icon="ERROR")


def get(context):
    """This add-on's preferences (the package name is ``bl_ext.<repo>.facecomp``)."""
    return context.preferences.addons[__package__].preferences


def register():
    bpy.utils.register_class(FACECOMP_AP_preferences)


def unregister():
    bpy.utils.unregister_class(FACECOMP_AP_preferences)
