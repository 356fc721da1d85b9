"""Calcium events of one trace: baseline, noise, hysteresis detection, splitting of overlapping events.

The detector, in the order it runs (every step vectorised over frames; the
loops run over event stretches, the segments inside them and the events):

1. **Noise.** ``sigma``: the per-frame noise SD, from the median absolute
   deviation of the first differences (:func:`noise_sd`; slow events and drift
   barely change the differences, so it is the noise alone).
2. **Smoothing.** A Gaussian of ``smooth`` frames (0.4 s) averages the noise
   down (~3x at 8 Hz) while keeping the slow astrocytic events whole.
3. **Baseline and the noise of the smoothed trace** (:func:`running_baseline`).
   A running 10th percentile of the smoothed trace follows drift slower than
   ``baseline_window`` (30 s) under the events; the quiet frames pile up at
   some height above it, which the half-sample mode of the difference finds
   (events, a one-sided tail, do not move a mode), and the spread below that
   mode is a first noise estimate. Then, until the noise settles: the
   baseline is the running mean of the quiet frames (below it plus 2.5
   noise SDs, kept away from events), gaps interpolated (unbiased where a
   percentile is not, and a long busy stretch does not lift it), and the
   noise ``sigma_det`` is the RMS of the smoothed trace's deviations below
   that baseline (events only go up; slow noise such as active neuropil left
   after its correction is counted in; at least the white noise after
   smoothing). The mode alone puts the noise of a trace whose noise is mostly
   slow anywhere from half to 1.5 times its spread.
4. **Stretches.** Hysteresis on ``z = (smoothed - baseline) / sigma_det``:
   a stretch is a run above ``low_threshold`` (2) lasting ``min_duration``
   frames whose top reaches ``threshold`` (4.5). A lone noise excursion
   rarely does both.
5. **Splitting.** A stretch is cut at its troughs and at its
   *re-accelerations* (a minimum of the derivative while the trace still rises,
   followed by a climb of the derivative of ``split_rise`` noise SDs: a second
   event on the rise or plateau of the first, with no dip between them). A
   segment is a new event when its top climbs ``split_rise`` (4) noise SDs
   above where the previous event would have decayed to (its trough,
   extrapolated with 1.5 x the trace's typical decay time, measured from its
   clean events); otherwise it belongs to the current event. Two events on a
   still-elevated baseline are two events; a noise wiggle on a decay is not one.
6. **Timing.** Each event's rise is measured from its own starting level (the
   baseline, or the trough it rises from) to its peak: the 20 % and 50 %
   crossings, interpolated between frames, extrapolated back to the starting
   level give the onset (a crossing of a fixed threshold comes later the
   smaller the event, by up to the whole rise time). A clear event is timed
   on the raw trace, a weak one on a trace smoothed just enough (smoothing
   rounds the sharp start and moves the onset early). Amplitude: peak above
   the previous event's extrapolated decay (or the baseline); rise time
   10-90 %; decay time to 1/e of the amplitude; end where the trace falls back
   to 10 % of the amplitude (or the stretch ends, or the next event starts).
   An event already under way at the first frame is not reported (its onset
   is unknown).

A plain threshold on the dF/F (crossings of median + 3 MAD) misses small
events under noise-inflated or drifting baselines, merges events that overlap
on a still-elevated baseline, counts noise crossings and re-crossings as
events, and times events by the crossing, late by most of the rise.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage as ndi

from astro3s.events.params import EventParams, FrameParams
from astro3s.utils.robust import MAD_TO_SD

__all__ = ["TraceEvents", "detect_events", "half_sample_mode", "noise_sd", "running_baseline", "smooth_trace"]

#: a later event must rise split_rise above where the previous one would have decayed to, with this
#: multiple of the trace's typical decay time (a longer decay than measured: fewer false splits)
DECAY_MARGIN = 1.5
_QUIET_LEVEL = 2.5  # frames below baseline guess + this many smoothed-noise SDs are quiet (baseline) frames
_MAX_ROUNDS = 10  # rounds of baseline and noise in running_baseline
_CONVERGED = 0.01  # ... stopped when the noise changes by less than this fraction
_MIN_BELOW = 10  # frames below the baseline needed to measure the noise from them


@dataclass(frozen=True)
class TraceEvents:
    """Events of one trace, in frames.

    Attributes
    ----------
    onset, peak, end : ndarray of int64, shape (n,)
        First, peak and last frame of each event (``onset <= peak <= end``).
    amplitude : ndarray of float64, shape (n,)
        Peak above the baseline, or above where a preceding event would have
        decayed to, in the trace's units.
    rise : ndarray of float64, shape (n,)
        10-90 % rise time, frames (NaN when the rise is under two frames of data).
    decay : ndarray of float64, shape (n,)
        Time from the peak to 1/e of the amplitude, frames (NaN when the
        trace does not fall that far before the next event or the end).
    auc : ndarray of float64, shape (n,)
        Area of the smoothed trace above the event's starting level from onset
        to end, trace units x frames.
    snr : ndarray of float64, shape (n,)
        ``amplitude / sigma``.
    sigma : float
        Per-frame noise SD of the trace (trace units).
    sigma_det : float
        Noise SD of the smoothed trace (trace units), the unit of the thresholds.
    baseline : ndarray of float32, shape (T,)
        The running baseline.
    smoothed : ndarray of float32, shape (T,)
        The smoothed trace.
    """

    onset: np.ndarray
    peak: np.ndarray
    end: np.ndarray
    amplitude: np.ndarray
    rise: np.ndarray
    decay: np.ndarray
    auc: np.ndarray
    snr: np.ndarray
    sigma: float
    sigma_det: float
    baseline: np.ndarray
    smoothed: np.ndarray

    def __len__(self) -> int:
        return len(self.onset)


def noise_sd(trace: np.ndarray) -> float:
    """Per-frame noise SD of ``trace`` (T,): ``1.4826 * MAD(diff) / sqrt(2)``; 0 for fewer than 3 frames."""
    x = np.asarray(trace, np.float64)
    if len(x) < 3:
        return 0.0
    d = np.diff(x)
    return float(MAD_TO_SD * np.median(np.abs(d - np.median(d))) / np.sqrt(2.0))


def smooth_trace(trace: np.ndarray, sigma_frames: float) -> tuple[np.ndarray, float]:
    """Gaussian-smoothed trace and the factor by which it scales white noise.

    Parameters
    ----------
    trace : ndarray of float, shape (T,)
    sigma_frames : float
        Gaussian SD in frames (<= 0: no smoothing).

    Returns
    -------
    smoothed : ndarray of float64, shape (T,)
    noise_factor : float
        SD of smoothed white noise / SD of the white noise (``||kernel||_2``).
    """
    x = np.asarray(trace, np.float64)
    if sigma_frames <= 0:
        return x.copy(), 1.0
    impulse = np.zeros(2 * int(np.ceil(4 * sigma_frames)) + 1)
    impulse[len(impulse) // 2] = 1.0
    factor = float(np.sqrt((ndi.gaussian_filter1d(impulse, sigma_frames, mode="constant") ** 2).sum()))
    return ndi.gaussian_filter1d(x, sigma_frames, mode="nearest"), factor


def _masked_running_mean(x: np.ndarray, keep: np.ndarray, window: int) -> np.ndarray:
    """Running mean of ``x`` over the frames ``keep`` in a centred window; gaps interpolated."""
    w = int(min(window, len(x)))
    num = ndi.uniform_filter1d(np.where(keep, x, 0.0), w, mode="nearest")
    den = ndi.uniform_filter1d(keep.astype(np.float64), w, mode="nearest")
    ok = den > 0.1  # at least a tenth of the window is quiet
    if not ok.any():
        return np.full(len(x), float(np.median(x[keep])) if keep.any() else float(np.median(x)))
    mean = np.where(ok, num / np.where(ok, den, 1.0), 0.0)
    idx = np.arange(len(x))
    return np.interp(idx, idx[ok], mean[ok])


def half_sample_mode(values: np.ndarray) -> float:
    """Mode of a sample by repeated halving (the half-sample mode: robust to a one-sided tail).

    The shortest interval holding half of the sorted values is kept until
    three or fewer remain; their mean is the mode. ``O(n log n)``.
    """
    v = np.sort(np.asarray(values, np.float64).ravel())
    while len(v) > 3:  # a loop over halvings (log2 n of them)
        h = (len(v) + 1) // 2
        width = v[h - 1:] - v[:len(v) - h + 1]
        k = int(np.argmin(width))
        v = v[k:k + h]
    return float(v.mean()) if len(v) else 0.0


def running_baseline(trace: np.ndarray, smoothed: np.ndarray, *, window: int, sigma_smooth: float,
                     max_rounds: int = _MAX_ROUNDS) -> tuple[np.ndarray, float]:
    """Running baseline of a trace that follows drift slower than ``window`` frames, not events, and the
    noise SD of the smoothed trace around it.

    A running 10th percentile of the smoothed trace follows the drift under
    the events; the quiet frames pile up at some height above it, which the
    half-sample mode of the difference finds (events, a one-sided tail, do
    not move a mode), and the spread of the differences below that mode is a
    first noise estimate. Then, in rounds: the baseline is the running mean of
    the quiet frames (those below it plus 2.5 noise SDs, kept away from
    events), gaps interpolated (a mean is unbiased where a percentile is not),
    and the noise is the root mean square of the smoothed trace's deviations
    *below* that baseline (events only go up, so these frames are noise alone;
    slow noise such as active neuropil counts, as it must), until the noise
    changes by under 1 %. The mode alone is not enough: on a trace whose
    noise is mostly slow it lands on a lump at the bottom, where the spread
    below it is small, and the noise comes out 2-3x too low (false events);
    measured against the baseline the deviations below are the whole noise.

    Parameters
    ----------
    trace, smoothed : ndarray of float, shape (T,)
        The trace and its smoothed version.
    window : int
        Running window, frames.
    sigma_smooth : float
        White-noise SD of ``smoothed`` (a floor of the estimate).
    max_rounds : int
        Most rounds of baseline and noise (they converge in 3-6).

    Returns
    -------
    baseline : ndarray of float64, shape (T,)
    sigma_det : float
        Noise SD of ``smoothed`` around ``baseline`` (at least ``sigma_smooth``).
    """
    x = np.asarray(trace, np.float64)
    xs = np.asarray(smoothed, np.float64)
    w = int(min(window, len(x)))
    if w < 3:
        return np.full(len(x), float(np.median(x)) if len(x) else 0.0), float(sigma_smooth)
    low = ndi.percentile_filter(xs, 10, size=w, mode="nearest")
    low = ndi.uniform_filter1d(low, w, mode="nearest")
    above = xs - low
    mode = half_sample_mode(above)
    left = mode - above[above <= mode]
    sigma = max(float(sigma_smooth), MAD_TO_SD * float(np.median(left)) if len(left) else 0.0)
    guess = low + mode
    margin = max(int(round(w / 30)), 1)
    for _ in range(max(int(max_rounds), 1)):  # a loop over rounds (a few)
        quiet = xs <= guess + _QUIET_LEVEL * sigma
        # frames next to an event carry its rise or tail: keep away from them
        quiet = ~ndi.binary_dilation(~quiet, iterations=margin)
        guess = _masked_running_mean(x, quiet, w)
        below = (guess - xs)[xs < guess]
        if len(below) < _MIN_BELOW:
            break
        previous, sigma = sigma, max(float(sigma_smooth), float(np.sqrt(np.mean(below * below))))
        if abs(sigma - previous) <= _CONVERGED * previous:
            break
    return guess, sigma


def _derivative_factor(sigma_frames: float) -> float:
    """SD of ``np.gradient`` of Gaussian-smoothed white noise / SD of the noise."""
    half = int(np.ceil(4 * max(sigma_frames, 0.5))) + 2
    impulse = np.zeros(2 * half + 1)
    impulse[half] = 1.0
    smoothed = ndi.gaussian_filter1d(impulse, sigma_frames, mode="constant") if sigma_frames > 0 else impulse
    return float(np.sqrt((np.gradient(smoothed) ** 2).sum()))


def _derivative_z(smoothed: np.ndarray, white_sd: float) -> np.ndarray:
    """Derivative of the smoothed trace in units of its noise SD (robust: MAD, at least ``white_sd``)."""
    d = np.gradient(np.asarray(smoothed, np.float64))
    sd = max(float(MAD_TO_SD * np.median(np.abs(d - np.median(d)))), float(white_sd), 1e-12)
    return d / sd


def _runs(mask: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Starts and (exclusive) stops of the runs of True in a 1-D bool array."""
    edges = np.diff(np.concatenate(([0], mask.astype(np.int8), [0])))
    return np.flatnonzero(edges == 1), np.flatnonzero(edges == -1)


def _stretches(z: np.ndarray, p: FrameParams) -> tuple[np.ndarray, np.ndarray]:
    """Runs of ``z > low_threshold`` at least ``min_duration`` long whose maximum reaches ``threshold``."""
    starts, stops = _runs(z > p.low_threshold)
    if not len(starts):
        return starts, stops
    tops = np.maximum.reduceat(z, starts)
    # reduceat takes z[starts[i]:starts[i+1]]: the runs are separated by frames below the low threshold,
    # so each run's maximum is the segment's maximum
    keep = (tops >= p.threshold) & (stops - starts >= p.min_duration)
    return starts[keep], stops[keep]


def _boundaries(z: np.ndarray, dz: np.ndarray, lo: int, stop: int, *, reacceleration: float) -> np.ndarray:
    """Where an event may start within ``[lo, stop)``: ``lo``, the troughs of ``z`` and its re-accelerations.

    A trough is a local minimum of the smoothed trace. A re-acceleration is a
    local minimum of its derivative ``dz`` while it still rises (``dz > 0``)
    after which the derivative climbs again by ``reacceleration`` noise SDs
    before its next minimum: a second event starting on the rise or the plateau
    of the first, with no dip between them.
    """
    seg, d = z[lo:stop], dz[lo:stop]
    if len(seg) < 3:
        return np.array([lo], np.int64)
    troughs = np.flatnonzero((seg[1:-1] <= seg[:-2]) & (seg[1:-1] < seg[2:])) + 1
    dmin = np.flatnonzero((d[1:-1] <= d[:-2]) & (d[1:-1] < d[2:])) + 1
    again = np.zeros(0, np.int64)
    if len(dmin):
        climb = np.maximum.reduceat(d, dmin) - d[dmin]  # highest derivative before the next minimum
        again = dmin[(climb >= reacceleration) & (d[dmin] > 0)]
    return np.unique(np.concatenate(([0], troughs, again))).astype(np.int64) + lo


def _split(z: np.ndarray, dz: np.ndarray, lo: int, start: int, stop: int, *, split_rise: float,
           threshold: float, decay: float = np.inf) -> list[tuple[int, int, float]]:
    """Events of one stretch ``z[start:stop]``: ``(first frame the rise may start at, peak, base level)``.

    The stretch, from ``lo`` (the end of the previous stretch: the first rise
    begins below the low threshold), is cut at its troughs and re-accelerations
    (:func:`_boundaries`) into segments, each with its highest point. The first
    event rises from the baseline (level 0) and must reach ``threshold``; each
    later one rises from the lowest point since the previous event's peak and
    must climb ``split_rise`` above it: two events on a still-elevated baseline
    are two events, a noise wiggle on a decay is not one. A segment that does
    not qualify is part of the current event (its peak moves there when higher).
    """
    cuts = _boundaries(z, dz, lo, stop, reacceleration=split_rise)
    ends = np.append(cuts[1:], stop)
    events: list[list] = []
    for b, e in zip(cuts, ends):  # a loop over the segments of one stretch
        peak = int(b) + int(np.argmax(z[b:e]))
        if not events:
            if z[peak] >= threshold and z[peak] >= split_rise:
                events.append([lo, peak, 0.0])
            continue
        prev_peak = events[-1][1]
        trough = prev_peak + int(np.argmin(z[prev_peak:b + 1]))
        # the previous event would have gone on decaying from the trough (time constant ``decay``)
        expected = z[trough] * np.exp(-(peak - trough) / decay) if z[trough] > 0 else z[trough]
        if z[peak] - expected >= split_rise and z[peak] >= threshold:
            events.append([trough, peak, float(z[trough])])
        elif z[peak] > z[prev_peak]:
            events[-1][1] = peak
    if not events:
        return [(lo, start + int(np.argmax(z[start:stop])), 0.0)]
    return [(a, b, base) for a, b, base in events]


def _find(z: np.ndarray, dz: np.ndarray, starts: np.ndarray, stops: np.ndarray, p: FrameParams, *,
          decay: float) -> list[tuple[int, int, float, int]]:
    """Events of every stretch: ``(first frame the rise may start at, peak, base level, stretch stop)``."""
    found = []
    previous_stop = 0
    for start, stop in zip(starts, stops):  # a loop over event stretches
        # the first event's rise begins before the stretch (below the low threshold)
        for lo, peak, base in _split(z, dz, previous_stop, int(start), int(stop), split_rise=p.split_rise,
                                     threshold=p.threshold, decay=decay):
            found.append((lo, peak, base, int(stop)))
        previous_stop = int(stop)
    return found


def _typical_decay(z: np.ndarray, found: list[tuple[int, int, float, int]]) -> float:
    """Median time (frames) from an event's peak to 1/e of its rise, over the events that get there
    before the next one (at least three; else inf)."""
    falls = []
    for i, (_, peak, base, stop) in enumerate(found):  # a loop over events
        limit = found[i + 1][0] if i + 1 < len(found) and found[i + 1][3] == stop else stop
        if limit > peak + 1:
            falls.append(_crossing_forward(z, peak, limit, base + (z[peak] - base) / np.e) - peak)
    falls = np.asarray(falls, np.float64)
    falls = falls[np.isfinite(falls)]
    return float(np.median(falls)) if len(falls) >= 3 else np.inf


def _crossing_back(z: np.ndarray, lo: int, peak: int, level: float) -> float:
    """Last (fractional) frame in ``[lo, peak]`` where ``z`` climbs through ``level`` before the peak."""
    below = np.flatnonzero(z[lo:peak] < level)
    if not len(below):
        return float(lo)
    i = lo + int(below[-1])
    step = z[i + 1] - z[i]
    return float(i + (level - z[i]) / step) if step > 0 else float(i)


def _crossing_forward(z: np.ndarray, peak: int, stop: int, level: float) -> float:
    """First (fractional) frame in ``(peak, stop)`` where ``z`` falls to ``level``; NaN if it does not."""
    below = np.flatnonzero(z[peak:stop] <= level)
    if not len(below):
        return np.nan
    i = peak + int(below[0])
    step = z[i - 1] - z[i]
    return float(i - (level - z[i]) / step) if step > 0 else float(i)


def _timing_trace(x: np.ndarray, baseline: np.ndarray, sigma_det: float, snr: float, smooth: float,
                  cache: dict[float, np.ndarray]) -> np.ndarray:
    """The trace an event's onset is timed on, in units of ``sigma_det`` above the baseline.

    Smoothing rounds the sharp start of an event and moves its rise earlier
    (by ~2 frames at 8 Hz with 0.4 s); so a clear event (per-frame SNR >= 10)
    is timed on the raw trace, a weaker one on a trace smoothed just enough to
    bring its SNR to ~10 (Gaussian SD ``(10 / snr)^2 / (2 sqrt(pi))`` frames,
    at most ``smooth``), on one of a few cached levels.
    """
    want = min((10.0 / max(snr, 1e-6)) ** 2 / (2 * np.sqrt(np.pi)), smooth)
    level = 0.0 if want < 0.35 else float(min(2.0 ** (np.ceil(2 * np.log2(want)) / 2), smooth))
    if level not in cache:
        cache[level] = (smooth_trace(x, level)[0] - baseline) / sigma_det
    return cache[level]


def _empty(sigma: float, sigma_det: float, baseline: np.ndarray, smoothed: np.ndarray) -> TraceEvents:
    zi, zf = np.zeros(0, np.int64), np.zeros(0, np.float64)
    return TraceEvents(onset=zi, peak=zi, end=zi, amplitude=zf, rise=zf, decay=zf, auc=zf, snr=zf, sigma=sigma,
                       sigma_det=sigma_det, baseline=baseline.astype(np.float32), smoothed=smoothed.astype(np.float32))


def detect_events(trace: np.ndarray, *, fs: float | None = None, params: EventParams | None = None) -> TraceEvents:
    """Calcium events of one fluorescence or dF/F trace (see the module docstring for the method).

    Parameters
    ----------
    trace : ndarray of float, shape (T,)
        Raw fluorescence or dF/F (any trace with a resting level); NaN frames are
        interpolated over (a trace with fewer than half its frames finite has
        no events).
    fs : float, optional
        Frame rate in Hz: durations of ``params`` are then read in seconds
        (``*_s``), otherwise in frames (``*_frames``).
    params : EventParams, optional

    Returns
    -------
    TraceEvents
        In frames; sorted by onset.
    """
    p = (params or EventParams()).in_frames(fs)
    x = np.asarray(trace, np.float64).ravel()
    n = len(x)
    finite = np.isfinite(x)
    if n < 5 or finite.sum() < max(5, n // 2):
        return _empty(0.0, 0.0, np.zeros(n), np.nan_to_num(x))
    if not finite.all():
        idx = np.arange(n)
        x = np.interp(idx, idx[finite], x[finite])
    sigma = noise_sd(x)
    xs, factor = smooth_trace(x, p.smooth)
    factor_d = _derivative_factor(p.smooth)
    sigma_white = sigma * factor
    baseline, sigma_det = running_baseline(x, xs, window=p.baseline_window, sigma_smooth=sigma_white)
    resid = xs - baseline
    if not sigma_det > 0:
        return _empty(sigma, sigma_det, baseline, xs)
    z = resid / sigma_det
    starts, stops = _stretches(z, p)
    dz = _derivative_z(xs, sigma * factor_d)
    found = _find(z, dz, starts, stops, p, decay=np.inf)
    tau = _typical_decay(z, found)
    if np.isfinite(tau):
        found = _find(z, dz, starts, stops, p, decay=DECAY_MARGIN * tau)
    if not found:
        return _empty(sigma, sigma_det, baseline, xs)
    cols = {k: [] for k in ("onset", "peak", "end", "amplitude", "rise", "decay", "auc")}
    onsets_f = []
    timing: dict[float, np.ndarray] = {}
    for lo, peak, base, _ in found:  # a loop over events: onsets first (the ends need the next onset)
        amp = z[peak] - base
        zt = _timing_trace(x, baseline, sigma_det, amp * sigma_det / max(sigma, 1e-12), p.smooth, timing)
        t20 = _crossing_back(zt, lo, peak, base + 0.2 * amp)
        t50 = _crossing_back(zt, lo, peak, base + 0.5 * amp)
        onsets_f.append(float(np.clip(t20 - (t50 - t20) * (0.2 / 0.3), lo, peak)))
    onsets = np.rint(onsets_f).astype(np.int64)
    for i, (lo, peak, base, stop) in enumerate(found):  # a loop over events
        amp = z[peak] - base
        limit = int(onsets[i + 1]) if i + 1 < len(found) and found[i + 1][3] == stop else stop
        limit = max(limit, peak + 1)
        fall = _crossing_forward(z, peak, limit, base + 0.1 * amp)
        end = int(np.clip(np.ceil(fall) if np.isfinite(fall) else limit - 1, peak, n - 1))
        t10 = _crossing_back(z, lo, peak, base + 0.1 * amp)
        t90 = _crossing_back(z, lo, peak, base + 0.9 * amp)
        decay = _crossing_forward(z, peak, limit, base + amp / np.e) - peak
        span = slice(int(onsets[i]), end + 1)
        cols["onset"].append(int(onsets[i]))
        cols["peak"].append(int(peak))
        cols["end"].append(end)
        # the amplitude above where the previous event would have decayed to by the peak (the trough
        # underestimates it by that decay)
        under = base * np.exp(-(peak - lo) / tau) if base > 0 and np.isfinite(tau) else base
        cols["amplitude"].append((z[peak] - under) * sigma_det)
        cols["rise"].append(t90 - t10 if peak - lo >= 2 else np.nan)
        cols["decay"].append(decay)
        cols["auc"].append(float(np.clip(z[span] - base, 0, None).sum() * sigma_det))
    # an event already under way at the first frame has no onset, rise or amplitude to measure: not reported
    keep = ~((np.asarray(cols["onset"]) == 0) & (z[0] > p.low_threshold))
    arrays = {k: np.asarray(v, np.int64 if k in ("onset", "peak", "end") else np.float64)[keep]
              for k, v in cols.items()}
    amplitude = arrays["amplitude"]
    return TraceEvents(**arrays, snr=amplitude / sigma if sigma > 0 else np.full(len(amplitude), np.inf),
                       sigma=sigma, sigma_det=sigma_det, baseline=baseline.astype(np.float32),
                       smoothed=xs.astype(np.float32))
