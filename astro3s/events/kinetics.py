"""Cells whose somatic calcium events are too fast for an astrocyte: neuron-like look-alikes.

An astrocyte's somatic calcium transients rise and fall over seconds; a
neuron's GCaMP transients decay within about a second (GCaMP6f: ~0.4-0.7 s
half-decay after a burst of action potentials; Chen et al. 2013, Nature 499:295).
A cell drawn by the segmentation whose soma fires many events that all decay
that fast is therefore more likely a neuron than an astrocyte. Measured on 80
held-out movies (experiments/results/heldout_ablation.md, 2026-12-06): cells
with at least ``FAST_MIN_EVENTS`` somatic events of median decay under
``FAST_MAX_DECAY_S`` were 5 of 23 false cells and none of 862 true ones; on
the training simulator's presets, no cell at all. On never-seen movies it
also dropped a true giant astrocyte whose many small events decayed fast:
events under ``FAST_MIN_SNR`` no longer count. With that floor, on movies
no choice was made on (never-seen held-out indices 180-187 and the third
draw of ASTRA's layouts, 168 movies) it dropped 4 false cells and one true
astrocyte (a D4-layout cell whose four measured decays, at 3.3 Hz, had a
median of 1.15 s): on by default since 2026-12-06
(``InferenceOptions.drop_fast_event_cells``).

A neuron whose events decay a little slower than that bound is still told
from an astrocyte by a second signature: the network draws "processes"
round any bright soma, and round a neuron they are neuropil whose activity
does not follow the soma, while an astrocyte's processes carry its somatic
events (issue 13: "an astrocyte's processes follow its soma").
:func:`unfollowed_cells` returns the cells whose somatic events are fairly
fast (median decay under ``UNFOLLOWED_MAX_DECAY_S``, at least
``UNFOLLOWED_MIN_EVENTS`` of them) *and* whose processes' mean dF/F
correlates with the soma's under ``UNFOLLOWED_MAX_CORRELATION``. Measured
2026-12-07 (nineteenth session) on 312 development movies of both
independent families and of ASTRA's annotated layouts
(experiments/results/unfollowed_cells_probe.md): 10 false cells beyond
those of the fast-event rule, no true one; of the cells with so few
followers and >= 3 strong events, every true one decayed in 1.77 s or
more, every false one in 1.51 s or less. Scored once on fresh draws
written before that choice (never-seen 300-303, cross-check 116-119) it
dropped nothing; on the next fresh draw (never-seen 304-307) it dropped a
true astrocyte of a low-SNR movie (six noisy somatic events of median
decay 1.44 s, processes following at 0.23) and no false cell: the noise of
a dim movie lowers both measures. So ``rules.unfollowed_max_correlation``
ships at 0 (off); ``UNFOLLOWED_MAX_CORRELATION`` is the setting measured.
"""

from __future__ import annotations

from typing import Any

import numpy as np

__all__ = ["FAST_MAX_DECAY_S", "FAST_MIN_EVENTS", "FAST_MIN_SNR", "UNFOLLOWED_MAX_CORRELATION",
           "UNFOLLOWED_MAX_DECAY_S", "UNFOLLOWED_MIN_EVENTS", "fast_event_cells", "kinetics_events",
           "process_following", "somatic_kinetics", "unfollowed_cells"]

#: fewest somatic events a cell needs before its kinetics are judged (one or two fast events prove nothing)
FAST_MIN_EVENTS = 5
#: median somatic decay (s, the event table's ``decay_s``) below which a cell's events are a neuron's
FAST_MAX_DECAY_S = 1.2
#: only events at least this far above the noise count: a bright soma's many small fluctuations just over the
#: detector's threshold decay fast whatever the cell (a true giant astrocyte of never-seen heldout_giant_177 had
#: eight such events, SNR 3-6, beside one of SNR 260 decaying in 2.9 s)
FAST_MIN_SNR = 5.0
#: the second signature (:func:`unfollowed_cells`; off in astro3s-infer, ``rules.unfollowed_max_correlation`` 0):
#: processes whose mean dF/F correlates with the soma's under this
UNFOLLOWED_MAX_CORRELATION = 0.4
#: ... with somatic events of median decay (s) under this (between a neuron's, <= ~1.5 s as measured at 1-10 Hz,
#: and the fastest true astrocytes with so few followers, >= 1.77 s) ...
UNFOLLOWED_MAX_DECAY_S = 1.6
#: ... and at least this many of them (SNR >= FAST_MIN_SNR)
UNFOLLOWED_MIN_EVENTS = 3


def fast_event_cells(events: Any, *, min_events: int = FAST_MIN_EVENTS, max_decay_s: float = FAST_MAX_DECAY_S,
                     min_snr: float = FAST_MIN_SNR) -> np.ndarray:
    """Ids of the cells whose somatic events are many and fast.

    Parameters
    ----------
    events : EventTable
        Events of a movie (:func:`astro3s.events.roi_events`).
    min_events : int
        Fewest somatic events (the median is over those whose decay was measured).
    max_decay_s : float
        Median decay (seconds) under which the cell is returned.
    min_snr : float
        Events with a lower SNR (the table's ``snr``) are left out, of the count and of the median.

    Returns
    -------
    ndarray of int64
        Sorted cell ids; empty without a frame rate (decays in frames say nothing about kinetics).
    """
    cells, counts, decay_s = somatic_kinetics(events, min_snr=min_snr)
    return cells[(counts >= min_events) & (decay_s < max_decay_s)]


def somatic_kinetics(events: Any, *, min_snr: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per cell with somatic events of SNR >= ``min_snr``: its id, how many, and their median decay (s).

    Returns
    -------
    cells : ndarray of int64, shape (n,)
    counts : ndarray of int64, shape (n,)
    decay_s : ndarray of float64, shape (n,)
        NaN where no decay was measured (an event cut by the movie's end has none). All empty without a frame
        rate: decays in frames say nothing about kinetics.
    """
    fs = getattr(events, "fs", None)
    if not fs or not len(events):
        return np.zeros(0, np.int64), np.zeros(0, np.int64), np.zeros(0)
    soma = np.array([kind == "soma" for kind in events.kind]) & (np.asarray(events.snr, np.float64) >= min_snr)
    ids = np.asarray(events.cell_id, np.int64)[soma]
    decays = np.asarray(events.decay_frames, np.float64)[soma] / float(fs)
    cells, counts = np.unique(ids, return_counts=True)
    decay_s = np.full(cells.size, np.nan)
    for j, cell in enumerate(cells):  # a loop over the cells with somatic events (tens)
        measured = decays[(ids == cell) & np.isfinite(decays)]
        if measured.size:
            decay_s[j] = float(np.median(measured))
    return cells, counts.astype(np.int64), decay_s


def process_following(traces: Any, cells: Any = None) -> dict[int, float]:
    """How closely each cell's processes follow its soma: the correlation of their mean dF/F with the soma's.

    Parameters
    ----------
    traces : RoiTraces
        Soma and process traces (:func:`astro3s.correlation.extract_traces`).
    cells : array_like of int, optional
        Only these cells (None: every cell).

    Returns
    -------
    dict of int to float
        Cell id -> Pearson correlation over the frames where both are finite, for every cell with a soma trace
        and at least one process trace (NaN where either is flat).
    """
    dff = traces.dff  # (T, R), read a cell's columns at a time
    ids = np.asarray(traces.cell_ids, np.int64)
    is_soma = np.array([kind == "soma" for kind in traces.kinds], bool)
    is_process = np.array([kind == "process" for kind in traces.kinds], bool)
    judged = np.unique(ids[is_soma]) if cells is None else np.intersect1d(ids[is_soma], np.asarray(cells, np.int64))
    following: dict[int, float] = {}
    for cell in judged:  # a loop over the cells (tens)
        mine = ids == cell
        if not (mine & is_process).any():
            continue
        soma = np.asarray(dff[:, np.flatnonzero(mine & is_soma)[0]], np.float64)
        processes = np.asarray(dff[:, np.flatnonzero(mine & is_process)], np.float64).mean(axis=1)
        finite = np.isfinite(soma) & np.isfinite(processes)
        a, b = soma[finite] - soma[finite].mean(), processes[finite] - processes[finite].mean()
        scale = float(np.sqrt((a * a).sum() * (b * b).sum()))
        following[int(cell)] = float((a * b).sum() / scale) if scale > 0 else float("nan")
    return following


def unfollowed_cells(traces: Any, events: Any, *, max_correlation: float = UNFOLLOWED_MAX_CORRELATION,
                     max_decay_s: float = UNFOLLOWED_MAX_DECAY_S, min_events: int = UNFOLLOWED_MIN_EVENTS,
                     min_snr: float = FAST_MIN_SNR) -> np.ndarray:
    """Ids of the cells whose somatic events are fairly fast and whose processes do not follow the soma.

    Parameters
    ----------
    traces : RoiTraces
        The cells' soma and process traces (:func:`process_following`).
    events : EventTable
        Their somatic events (:func:`kinetics_events`).
    max_correlation : float
        A cell's processes follow its soma when their mean dF/F correlates with the soma's at least this much
        (0: no cell is returned).
    max_decay_s, min_events, min_snr : float, int, float
        As :func:`fast_event_cells`'s, looser by default: the correlation is the second signature.

    Returns
    -------
    ndarray of int64
        Sorted cell ids; empty without a frame rate. A cell with no process trace, or whose traces are flat, is
        not judged.
    """
    if max_correlation <= 0:
        return np.zeros(0, np.int64)
    cells, counts, decay_s = somatic_kinetics(events, min_snr=min_snr)
    candidates = cells[(counts >= min_events) & (decay_s < max_decay_s)]
    if not candidates.size:
        return candidates
    following = process_following(traces, candidates)
    return np.asarray([c for c in candidates.tolist() if following.get(c, np.nan) < max_correlation], np.int64)


def kinetics_events(traces: Any, *, params: Any = None) -> Any:
    """The somatic events :func:`fast_event_cells` judges: detected on each soma's dF/F.

    The event table of a run (:func:`astro3s.events.roi_events`) is detected on
    the raw fluorescence against one noise SD per trace. A movie that bleaches
    (or flickers) is brighter, and so noisier, in some stretches than in others:
    there its fluctuations pass the threshold as short events, and a bleaching
    astrocyte read as a neuron (held-out movies bleached to 40 %: 9 true cells
    dropped of 177; experiments/results/heldout_ablation.md, 2026-12-06 ninth
    session). dF/F, the trace over its running baseline F0, scales signal and
    noise alike, so multiplicative changes of brightness leave its events as
    they are; decay times, which this rule reads, do not depend on the scale.

    Parameters
    ----------
    traces : RoiTraces
        The run's soma and process traces (:func:`astro3s.correlation.extract_traces`); only the somata are used.
    params : EventParams, optional

    Returns
    -------
    EventTable
    """
    import dataclasses

    from astro3s.events import roi_events

    soma = [j for j, kind in enumerate(traces.kinds) if kind == "soma"]
    somata = dataclasses.replace(
        traces, names=[traces.names[j] for j in soma], cell_ids=np.asarray(traces.cell_ids)[soma],
        kinds=["soma"] * len(soma), dff=np.asarray(traces.dff)[:, soma], f0=np.asarray(traces.f0)[:, soma],
        f=None, n_pixels=np.asarray(traces.n_pixels)[soma], fneu=None)
    events, _ = roi_events([somata], **({} if params is None else {"params": params}))
    return events
