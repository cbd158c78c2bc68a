"""The render server for native plugins and editors (``facecomp serve``)."""
