"""Temporal traces of the held-out family: calcium transients and slow fluctuations.

Every trace is sampled at the frame times ``t`` (seconds, shape ``(T,)``) and
is a relative change (``dF/F``) unless stated otherwise. Events are stored as
arrays, so delayed or attenuated copies (propagation into the processes) are
cheap to make.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np

__all__ = [
    "Events",
    "bleach_curve",
    "event_trace",
    "sample_events",
    "slow_fluctuation",
]


@dataclass(frozen=True)
class Events:
    """A set of calcium events.

    Attributes
    ----------
    onset : ndarray of float64, shape (E,)
        Start times (s).
    amp : ndarray of float64, shape (E,)
        Peak amplitudes (dF/F).
    rise : ndarray of float64, shape (E,)
        Rise time constants (s).
    decay : ndarray of float64, shape (E,)
        Decay time constants (s).
    """

    onset: np.ndarray
    amp: np.ndarray
    rise: np.ndarray
    decay: np.ndarray

    @property
    def n(self) -> int:
        return int(self.onset.size)

    def delayed(self, delay: float | np.ndarray, *, gain: float | np.ndarray = 1.0) -> Events:
        """The same events later by ``delay`` s and scaled by ``gain`` (scalars or (E,))."""
        return replace(self, onset=self.onset + delay, amp=self.amp * gain)

    def subset(self, keep: np.ndarray) -> Events:
        """The events where ``keep`` (bool (E,)) is True."""
        return Events(self.onset[keep], self.amp[keep], self.rise[keep], self.decay[keep])


def sample_events(rng: np.random.Generator, *, duration: float, rate_per_min: float,
                  amp: tuple[float, float], rise: tuple[float, float], decay: tuple[float, float],
                  min_events: int = 0, lead: float = 5.0) -> Events:
    """Poisson-distributed events with log-uniform amplitudes and kinetics.

    Parameters
    ----------
    rng : numpy.random.Generator
    duration : float
        Movie duration (s).
    rate_per_min : float
        Mean number of events per minute.
    amp, rise, decay : (float, float)
        Ranges of the peak amplitude (dF/F) and of the rise and decay time
        constants (s); each event draws log-uniformly inside.
    min_events : int
        At least this many events start inside the movie.
    lead : float
        Events may start up to ``lead`` s before the first frame.

    Returns
    -------
    events : Events
    """
    span = duration + lead
    n = max(int(rng.poisson(rate_per_min * span / 60.0)), int(min_events))
    onset = rng.uniform(-lead, duration, n)
    if min_events and np.count_nonzero(onset >= 0) < min_events:
        onset[:min_events] = rng.uniform(0.0, max(duration - 1.0, 0.5), min_events)

    def loguniform(bounds: tuple[float, float]) -> np.ndarray:
        return np.exp(rng.uniform(np.log(bounds[0]), np.log(bounds[1]), n))

    return Events(onset=onset, amp=loguniform(amp), rise=loguniform(rise), decay=loguniform(decay))


def _kernel(tau: np.ndarray, rise: np.ndarray, decay: np.ndarray) -> np.ndarray:
    """Asymmetric transient of unit peak: ``(1 - exp(-tau/r))^2 exp(-tau/d)`` for tau >= 0.

    The peak sits at ``r * log(1 + 2 d / r)``; inputs broadcast, output float64.
    """
    tau = np.maximum(tau, 0.0)
    shape = (-np.expm1(-tau / rise)) ** 2 * np.exp(-tau / decay)
    t_peak = rise * np.log1p(2.0 * decay / rise)
    peak = (-np.expm1(-t_peak / rise)) ** 2 * np.exp(-t_peak / decay)
    return shape / peak


def event_trace(events: Events, t: np.ndarray, *, exposure: float = 0.0, oversample: int = 1) -> np.ndarray:
    """Sum of the events' transients at the frame times.

    Parameters
    ----------
    events : Events
    t : ndarray of float64, shape (T,)
        Frame times (s).
    exposure : float
        Integration time of a frame (s); with ``oversample > 1`` the trace is
        averaged over ``oversample`` instants spread over it, so that events
        shorter than a frame are not missed.
    oversample : int
        Sub-samples per frame.

    Returns
    -------
    trace : ndarray of float32, shape (T,)
    """
    if events.n == 0:
        return np.zeros(t.shape, dtype=np.float32)
    sub = (np.arange(oversample) + 0.5) / oversample - 0.5 if oversample > 1 else np.zeros(1)
    times = (t[:, None] + exposure * sub[None, :]).ravel()  # (T * oversample,)
    tau = times[None, :] - events.onset[:, None]
    k = _kernel(tau, events.rise[:, None], events.decay[:, None])
    return (events.amp @ k).reshape(t.size, -1).mean(axis=1).astype(np.float32)


def slow_fluctuation(rng: np.random.Generator, t: np.ndarray, *, tau: float) -> np.ndarray:
    """Smooth zero-mean, unit-variance noise with correlation time ``tau`` (s).

    Parameters
    ----------
    rng : numpy.random.Generator
    t : ndarray of float64, shape (T,)
        Evenly spaced frame times (s).
    tau : float
        Correlation time (s).

    Returns
    -------
    trace : ndarray of float32, shape (T,)
    """
    from scipy import ndimage as ndi

    dt = float(t[1] - t[0]) if t.size > 1 else 1.0
    sigma = max(tau / dt, 0.5)
    pad = int(np.ceil(3 * sigma))
    smooth = ndi.gaussian_filter1d(rng.standard_normal(t.size + 2 * pad), sigma)[pad: pad + t.size]
    sd = float(smooth.std())
    return ((smooth - smooth.mean()) / (sd if sd > 0 else 1.0)).astype(np.float32)


def bleach_curve(t: np.ndarray, *, fraction: float, tau: float) -> np.ndarray:
    """Multiplicative bleaching ``1 - fraction * (1 - exp(-t / tau))``, float32 (T,)."""
    return (1.0 - fraction * (-np.expm1(-t / tau))).astype(np.float32)
