"""One-Euro smoothing of landmark sequences (Casiez et al. 2012), over a bounded window.

Speed is measured in face sizes per second, so ``beta`` means the same for a face of 40 px or 800 px.
The filter starts fresh at the start of the window it is given: frame n's smoothed value depends only on
the window, which is what makes random access equal to a sequential pass.
"""

from __future__ import annotations

import math

import numpy as np


def _alpha(cutoff: np.ndarray | float, dt: float):
    tau = 1.0 / (2.0 * math.pi * np.asarray(cutoff, np.float64))
    return 1.0 / (1.0 + tau / dt)


def one_euro(seq: list[np.ndarray], sizes: list[float], fps: float, min_cutoff: float, beta: float,
             d_cutoff: float = 1.0) -> np.ndarray:
    """Smoothed value of the last element of ``seq`` (each (N,2)); ``sizes`` normalise the speed."""
    dt = 1.0 / max(fps, 1e-6)
    x_hat = np.asarray(seq[0], np.float64)
    dx_hat = np.zeros_like(x_hat)
    a_d = _alpha(d_cutoff, dt)
    for x, size in zip(seq[1:], sizes[1:]):
        x = np.asarray(x, np.float64)
        dx = (x - x_hat) / dt / max(size, 1.0)
        dx_hat = a_d * dx + (1 - a_d) * dx_hat
        speed = np.linalg.norm(dx_hat, axis=-1, keepdims=True)
        a = _alpha(min_cutoff + beta * speed, dt)
        x_hat = a * x + (1 - a) * x_hat
    return x_hat
