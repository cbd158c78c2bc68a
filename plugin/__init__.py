"""facecomp: compositing-time face replacement that always discloses.

Every frame that leaves facecomp passes through :mod:`facecomp.disclosure.stamp`, which draws the
visible "SYNTHETIC · AI-altered" label; every file gets container tags and a sidecar manifest.
"""

__version__ = "0.1.0"

TOOL_NAME = "facecomp"
