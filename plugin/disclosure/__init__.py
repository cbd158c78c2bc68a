"""Disclosure: the visible label, container tags, the sidecar manifest and (later) C2PA and watermark.

Disclosure is structural: :class:`facecomp.disclosure.stamp.Stamper` is the single step every output
frame passes through, and writers accept only :class:`~facecomp.disclosure.stamp.StampedFrame`.
"""
