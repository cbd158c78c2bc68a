"""Rendering: the pipelined clip renderer, progress reporting and (later) the job queue."""
