"""Progress reporting lives in :mod:`facecomp.progress`, a module of its own: training and face-set
extraction report progress too, and must not import the renderer for it. This name stays for the
imports that use it (hosts, tests)."""

from ..progress import JsonProgress, Progress, QuietProgress, TextProgress, make_progress

__all__ = ["JsonProgress", "Progress", "QuietProgress", "TextProgress", "make_progress"]
