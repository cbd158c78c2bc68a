"""Resumable batch render jobs, timelines in and out, and the Ray backend."""
