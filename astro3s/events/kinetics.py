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
"""

from __future__ import annotations

from typing import Any

import numpy as np

__all__ = ["FAST_MAX_DECAY_S", "FAST_MIN_EVENTS", "FAST_MIN_SNR", "fast_event_cells", "kinetics_events"]

#: fewest somatic events a cell needs before its kinetics are judged (one or two fast events prove nothing)
FAST_MIN_EVENTS = 5
#: median somatic decay (s, the event table's ``decay_s``) below which a cell's events are a neuron's
FAST_MAX_DECAY_S = 1.2
#: only events at least this far above the noise count: a bright soma's many small fluctuations just over the
#: detector's threshold decay fast whatever the cell (a true giant astrocyte of never-seen heldout_giant_177 had
#: eight such events, SNR 3-6, beside one of SNR 260 decaying in 2.9 s)
FAST_MIN_SNR = 5.0


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
    fs = getattr(events, "fs", None)
    if not fs or not len(events):
        return np.zeros(0, np.int64)
    soma = np.array([kind == "soma" for kind in events.kind]) & (np.asarray(events.snr, np.float64) >= min_snr)
    cells = np.asarray(events.cell_id)[soma]
    decay_s = np.asarray(events.decay_frames, np.float64)[soma] / float(fs)
    fast = []
    for cell in np.unique(cells):  # a loop over the cells with somatic events
        mine = decay_s[cells == cell]
        measured = mine[np.isfinite(mine)]  # an event cut by the movie's end has no decay
        if len(mine) >= min_events and len(measured) and np.median(measured) < max_decay_s:
            fast.append(int(cell))
    return np.asarray(fast, np.int64)


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
