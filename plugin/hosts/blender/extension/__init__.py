"""facecomp for Blender's Video Sequencer: bake a disclosed face replacement of the selected movie strips.

Blender's Python cannot reach the pixels of a strip frame by frame, so the operator bakes: it runs the
``facecomp`` engine (outside Blender's Python, which lacks its dependencies) on each strip's used source
range and adds the labelled result on the channel above. ``_params.py`` (the effect's parameters) and
``_bake.py`` (the engine runner) are written into the package by ``facecomp blender package``.
"""

from . import operators, panel, preferences, properties

_MODULES = (preferences, properties, operators, panel)


def register():
    done = []
    try:
        for module in _MODULES:
            module.register()
            done.append(module)
    except Exception:
        for module in reversed(done):  # a failed register leaves nothing half-registered
            module.unregister()
        raise


def unregister():
    for module in reversed(_MODULES):
        module.unregister()
