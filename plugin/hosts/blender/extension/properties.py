"""The effect's settings as scene properties, generated from the effect declaration: ``_params.py`` is
written from ``facecomp.spec.blender_properties()`` when the extension is packaged."""

import bpy

from . import _params, logic


def _annotations():
    return {e["name"]: getattr(bpy.props, e["type"])(**e["kwargs"]) for e in _params.PROPERTIES}


def _settings_class():
    # Built when registering so the class always matches the declaration the package was made from.
    return type("FACECOMP_PG_settings", (bpy.types.PropertyGroup,), {"__annotations__": _annotations()})


def values(context) -> dict:
    group = context.scene.facecomp
    return logic.settings_values(_params.PROPERTIES, _params.KINDS, lambda name: getattr(group, name),
                                 bpy.path.abspath)


def _registered_classes():
    # The generated class is found again through its base, so no module keeps a mutable reference.
    return [c for c in bpy.types.PropertyGroup.__subclasses__()
            if c.__name__ == "FACECOMP_PG_settings" and getattr(c, "is_registered", False)]


def register():
    cls = _settings_class()
    bpy.utils.register_class(cls)
    bpy.types.Scene.facecomp = bpy.props.PointerProperty(type=cls)


def unregister():
    if hasattr(bpy.types.Scene, "facecomp"):
        del bpy.types.Scene.facecomp
    for cls in _registered_classes():
        bpy.utils.unregister_class(cls)
