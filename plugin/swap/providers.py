"""ONNX Runtime execution providers: chosen by a setting, with a logged fallback, and IO binding on GPU."""

from __future__ import annotations

import logging
import os
from typing import Callable

import numpy as np

from ..errors import ModelError, SettingsError

log = logging.getLogger("facecomp.swap")

PROVIDER_CHOICES = ("cpu", "cuda", "tensorrt")
_CHAINS = {
    "cpu": ["CPUExecutionProvider"],
    "cuda": ["CUDAExecutionProvider", "CPUExecutionProvider"],
    "tensorrt": ["TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider"],
}


def available() -> list[str]:
    import onnxruntime as ort
    return list(ort.get_available_providers())


def select(preference: str, notify: Callable[[str], None] | None = None) -> list[str]:
    """The provider list for a setting ("cpu" | "cuda" | "tensorrt"), dropping what this build lacks.

    Each dropped provider is logged (and passed to ``notify``, e.g. a Progress message) so a user who
    asked for the GPU learns it runs on the CPU, instead of silently getting slower output.
    """
    if preference not in _CHAINS:
        raise SettingsError(f"unknown provider {preference!r}: use one of {', '.join(PROVIDER_CHOICES)}")
    have = set(available())
    chosen = [p for p in _CHAINS[preference] if p in have]
    missing = [p for p in _CHAINS[preference] if p not in have]
    if missing:
        text = (f"execution provider(s) {', '.join(missing)} not available in this onnxruntime build; "
                f"falling back to {chosen[0] if chosen else 'none'} (install onnxruntime-gpu for CUDA/TensorRT)")
        log.warning(text)
        if notify is not None:
            notify(text)
    if not chosen:
        raise ModelError("no usable ONNX Runtime execution provider", hint="reinstall onnxruntime")
    return chosen


def make_session(path: str | os.PathLike, preference: str = "cpu", notify: Callable[[str], None] | None = None,
                 threads: int | None = None):
    """An InferenceSession on the chosen providers; a corrupt file becomes a ModelError naming it."""
    import onnxruntime as ort

    providers = select(preference, notify)
    opts = ort.SessionOptions()
    opts.log_severity_level = 3
    if threads:
        opts.intra_op_num_threads = threads
    try:
        return ort.InferenceSession(os.fspath(path), sess_options=opts, providers=providers)
    except Exception as exc:  # onnxruntime raises its own Fail/InvalidGraph/NoSuchFile types
        raise ModelError(f"ONNX Runtime cannot load the model ({str(exc).strip().splitlines()[0]})",
                         path=path, hint="the file must be a valid ONNX model") from exc


def on_gpu(session) -> bool:
    return session.get_providers()[0] in ("CUDAExecutionProvider", "TensorrtExecutionProvider")


def run(session, outputs: list[str], feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
    """Run a session; on a GPU provider through IO binding so outputs stay on the device until copied once."""
    if not on_gpu(session):
        return session.run(outputs, feeds)
    binding = session.io_binding()
    for name, value in feeds.items():
        binding.bind_cpu_input(name, np.ascontiguousarray(value))
    for name in outputs:
        binding.bind_output(name, "cuda")
    session.run_with_iobinding(binding)
    return binding.copy_outputs_to_cpu()
