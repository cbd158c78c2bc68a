"""Blender VSE extension and its packaging."""
