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
    """Smoothed value of the last element of ``seq`` (each (N,2)); ``sizes`` normalise the speed.

    Runs once per face per frame over the window, so the loop body is kept to a few in-place array
    operations (alpha = c / (c + 1) with c = 2 pi cutoff dt is the same smoothing factor as :func:`_alpha`).
    """
    dt = 1.0 / max(fps, 1e-6)
    xs = np.asarray(seq, np.float64)
    x_hat = xs[0].copy()
    dx_hat = np.zeros_like(x_hat)
    a_d = float(_alpha(d_cutoff, dt))
    k = 2.0 * math.pi * dt
    speed = np.empty(x_hat.shape[:-1] + (1,), np.float64)
    for x, size in zip(xs[1:], sizes[1:]):
        dx = (x - x_hat) * (1.0 / (dt * max(size, 1.0)))
        dx -= dx_hat
        dx *= a_d
        dx_hat += dx  # a_d * dx + (1 - a_d) * dx_hat
        np.sqrt(np.einsum("...i,...i->...", dx_hat, dx_hat), out=speed[..., 0])
        c = speed * (k * beta)
        c += k * min_cutoff
        a = c / (c + 1.0)
        x_hat += a * (x - x_hat)
    return x_hat
