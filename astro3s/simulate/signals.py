"""Temporal signals: calcium-event kinetics, event trains, motion, bleaching, slow noise.

All time arguments are in seconds, so kinetics stay physical at any frame rate
(1-10 Hz); events start at continuous times and are evaluated analytically at
the frame times, so there is no aliasing to the frame grid.
"""

from __future__ import annotations

import math

import numpy as np
from scipy.signal import lfilter

from astro3s.simulate.params import SimulationParams

__all__ = [
    "bleach_curve",
    "event_kernel",
    "event_times",
    "event_train",
    "motion_shifts",
    "ou_process",
]


def event_kernel(t: np.ndarray, rise: float | np.ndarray, decay: float | np.ndarray) -> np.ndarray:
    """Indicator response to one event, peak-normalised to 1.

    ``h(t) = (exp(-t/decay) - exp(-t/rise)) / peak`` for ``t >= 0``, 0 before.

    Parameters
    ----------
    t : ndarray
        Time since the event onset (s), any shape.
    rise, decay : float or ndarray
        Time constants (s), broadcastable against ``t``; ``decay`` is kept at
        least 1.5 x ``rise`` so the kernel is well defined.
    """
    rise = np.asarray(rise, dtype=np.float32)
    decay = np.maximum(np.asarray(decay, dtype=np.float32), 1.5 * rise)
    t_peak = rise * decay / (decay - rise) * np.log(decay / rise)
    peak = np.exp(-t_peak / decay) - np.exp(-t_peak / rise)
    tt = np.maximum(t, 0).astype(np.float32)
    h = (np.exp(-tt / decay) - np.exp(-tt / rise)) / peak
    return np.where(t > 0, h, 0).astype(np.float32)


def event_times(rate_per_min: float, duration_s: float, rng: np.random.Generator,
                *, lead_s: float = 0.0) -> np.ndarray:
    """Poisson event onsets (s) over ``[-lead_s, duration_s)``, sorted.

    ``lead_s`` lets events that began before the first frame still be decaying
    at the start, as in a real recording.
    """
    span = duration_s + lead_s
    n = rng.poisson(max(rate_per_min, 0.0) / 60.0 * span)
    return np.sort(rng.uniform(-lead_s, duration_s, n))


def event_train(times_s: np.ndarray, onsets: np.ndarray, amplitudes: np.ndarray,
                rise: np.ndarray, decay: np.ndarray) -> np.ndarray:
    """Sum of event kernels sampled at the frame times.

    Parameters
    ----------
    times_s : ndarray, shape (T,)
        Frame times (s).
    onsets, amplitudes, rise, decay : ndarray, shape (n,)
        One entry per event.

    Returns
    -------
    trace : ndarray of float32, shape (T,)
    """
    if len(onsets) == 0:
        return np.zeros(len(times_s), np.float32)
    h = event_kernel(times_s[None, :] - onsets[:, None], rise[:, None], decay[:, None])
    return (amplitudes.astype(np.float32) @ h).astype(np.float32)


def ou_process(n: int, fs: float, timescale_s: float, sd: float, rng: np.random.Generator,
               *, size: int | None = None) -> np.ndarray:
    """Stationary Ornstein-Uhlenbeck samples (mean 0, sd ``sd``) at ``fs`` Hz.

    Returns shape ``(n,)``, or ``(n, size)`` for ``size`` independent processes.
    """
    a = math.exp(-1.0 / (fs * max(timescale_s, 1e-6)))
    shape = (n,) if size is None else (n, size)
    noise = rng.normal(0.0, sd * math.sqrt(1 - a * a), shape)
    start = rng.normal(0.0, sd, () if size is None else (size,))
    # the initial condition makes the process stationary from the first frame
    zi = np.asarray(a * start)[None, ...] if size is not None else np.array([a * start])
    out, _ = lfilter([1.0], [1.0, -a], noise, axis=0, zi=zi)
    return out.astype(np.float32)


def motion_shifts(params: SimulationParams, rng: np.random.Generator) -> np.ndarray:
    """True rigid shifts ``(dy, dx)`` per frame (px): slow random walk plus jumps.

    Convention: frame ``t`` of the movie is the reference scene moved by
    ``shifts[t]``, i.e. ``frame_t(y, x) = reference(y - dy, x - dx)``
    (the :func:`scipy.ndimage.shift` convention). Shifting frame ``t`` by
    ``-shifts[t]`` registers it.

    Returns
    -------
    shifts : ndarray of float32, shape (T, 2)
    """
    n, fs = params.n_frames, params.fs
    t = np.arange(n) / fs
    # scanning microscopes move more along one axis (breathing/heartbeat); give
    # each axis its own amplitude
    axis_sd = params.motion_sd * rng.uniform(0.5, 1.0, 2)
    walk = ou_process(n, fs, params.motion_timescale, 1.0, rng, size=2) * axis_sd[None, :]
    onsets = event_times(params.jump_rate, params.duration_s, rng)
    jumps = np.zeros((n, 2), np.float32)
    for onset in onsets:
        angle = rng.uniform(0, 2 * np.pi)
        size = params.jump_amplitude * rng.uniform(0.5, 1.0)
        recovery = params.jump_recovery * rng.uniform(0.5, 1.5)
        decay = np.where(t >= onset, np.exp(-(t - onset) / recovery), 0.0)
        jumps += (decay[:, None] * size * np.array([np.sin(angle), np.cos(angle)])).astype(np.float32)
    return (walk + jumps).astype(np.float32)


def bleach_curve(params: SimulationParams) -> np.ndarray:
    """Photobleaching factor per frame: ``1 - amount * (1 - exp(-t / tau))``, shape (T,)."""
    t = np.arange(params.n_frames) / params.fs
    return (1 - params.bleach_amount * (1 - np.exp(-t / params.bleach_tau))).astype(np.float32)
