"""Time courses (dF/F) of the scene's components.

Astrocytic events are differences of exponentials with slow kinetics that
spread through a cell with a delay proportional to path distance; microdomain,
neuronal and bouton transients are spike trains filtered by two exponentials.
Every function returns float32 traces sampled at the frame times.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


def event_kernel(t: np.ndarray, rise: float, decay: float) -> np.ndarray:
    """Difference of exponentials, peak 1, zero for t < 0.

    Parameters
    ----------
    t : ndarray of float
        Time since the event onset, s.
    rise, decay : float
        Time constants, s (``decay > rise``).

    Returns
    -------
    k : ndarray of float64, shape of ``t``
    """
    decay = max(decay, rise * 1.05)
    t_peak = rise * decay / (decay - rise) * np.log(decay / rise)
    peak = np.exp(-t_peak / decay) - np.exp(-t_peak / rise)
    tp = np.maximum(t, 0.0)
    return np.where(t > 0, (np.exp(-tp / decay) - np.exp(-tp / rise)) / peak, 0.0)


def poisson_times(rng: np.random.Generator, rate_per_min: float, t0: float, t1: float) -> np.ndarray:
    """Sorted onset times of a Poisson process on [t0, t1), s."""
    n = rng.poisson(max(rate_per_min, 0.0) / 60.0 * (t1 - t0))
    return np.sort(rng.uniform(t0, t1, n))


def _lognormal(rng: np.random.Generator, median: float, n: int, sigma: float = 0.5) -> np.ndarray:
    return median * np.exp(rng.normal(0.0, sigma, n))


@dataclass(frozen=True)
class CellKinetics:
    """Somatic/whole-cell event statistics of one astrocyte."""

    rate: float  # events per minute
    amp: float  # median dF/F
    rise: float  # s
    decay: float  # s
    speed: float  # px / s


def cell_traces(rng: np.random.Generator, t: np.ndarray, distances: np.ndarray, kin: CellKinetics,
                d_max: float) -> np.ndarray:
    """Traces of a cell's soma and process bands under propagating events.

    Most events start in the soma and spread outward; some start in a process
    (at 30-100 % of ``d_max``) and spread inward. An event's amplitude falls
    with distance from its origin (length scale 0.4-1.5 ``d_max``) and arrives
    with a delay of distance / ``kin.speed``.

    Parameters
    ----------
    rng : Generator
    t : ndarray of float, shape (T,)
        Frame times, s.
    distances : ndarray of float, shape (B,)
        Path distance of each compartment from the soma (0 for the soma), px.
    kin : CellKinetics
    d_max : float
        Extent of the cell's tree, px.

    Returns
    -------
    traces : ndarray of float32, shape (B, T)
    """
    onsets = poisson_times(rng, kin.rate, t[0] - 4 * kin.decay, t[-1] + 1e-9)
    n = onsets.size
    if n == 0:
        return np.zeros((len(distances), t.size), np.float32)
    amp = _lognormal(rng, kin.amp, n)
    origin = np.where(rng.random(n) < 0.7, 0.0, rng.uniform(0.3, 1.0, n) * d_max)
    extent = rng.uniform(0.4, 1.5, n) * max(d_max, 1.0)
    gap = np.abs(distances[None, :] - origin[:, None])  # (E, B)
    gain = amp[:, None] * np.exp(-gap / extent[:, None])
    start = onsets[:, None] + gap / kin.speed
    k = event_kernel(t[None, None, :] - start[:, :, None], kin.rise, kin.decay)
    return (gain[:, :, None] * k).sum(0).astype(np.float32)


def spike_traces(rng: np.random.Generator, t: np.ndarray, rates: np.ndarray, amp: float, rise: float,
                 decay: np.ndarray) -> np.ndarray:
    """Independent transients (onsets on the frame grid) filtered by two exponentials.

    Parameters
    ----------
    rng : Generator
    t : ndarray of float, shape (T,)
        Frame times, s (uniform).
    rates : ndarray of float, shape (N,)
        Events per minute of each trace.
    amp : float
        Median dF/F (lognormal amplitudes).
    rise : float
        Rise time, s.
    decay : ndarray of float, shape (N,)
        Decay time of each trace, s.

    Returns
    -------
    traces : ndarray of float32, shape (N, T)
    """
    from scipy.signal import lfilter

    n, n_t = len(rates), t.size
    dt = float(t[1] - t[0]) if n_t > 1 else 1.0
    lead = int(np.ceil(4 * float(np.max(decay, initial=1.0)) / dt))
    counts = rng.poisson(np.asarray(rates)[:, None] / 60.0 * dt, (n, n_t + lead)).astype(float)
    train = counts * _lognormal(rng, amp, counts.size).reshape(counts.shape)
    out = np.empty((n, n_t), np.float32)
    a_r = np.exp(-dt / max(rise, 1e-3))
    steps = np.arange(lead + 2)
    for i in range(n):  # one filter per trace (N is tens to hundreds)
        a_d = np.exp(-dt / max(decay[i], 1.5 * rise, 1e-3))
        y = lfilter([1.0], [1.0, -a_d], train[i]) - lfilter([1.0], [1.0, -a_r], train[i])
        peak = max(float(np.max(a_d ** steps - a_r ** steps)), 1e-6)  # a lone event peaks at its amplitude
        out[i] = (y[lead:] / peak).astype(np.float32)
    return out


def slow_traces(rng: np.random.Generator, n: int, n_t: int, fs: float, cutoff_hz: float, sd: float) -> np.ndarray:
    """Smooth zero-mean fluctuations (Gaussian noise low-passed at ``cutoff_hz``) -> float32 (n, T)."""
    from scipy.ndimage import gaussian_filter1d

    sigma = max(fs / (2 * np.pi * cutoff_hz), 0.5)
    pad = int(4 * sigma)
    x = gaussian_filter1d(rng.normal(size=(n, n_t + 2 * pad)), sigma, axis=1)[:, pad:pad + n_t]
    x -= x.mean(1, keepdims=True)
    x *= sd / np.maximum(x.std(1, keepdims=True), 1e-9)
    return x.astype(np.float32)
