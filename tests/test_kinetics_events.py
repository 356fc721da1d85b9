"""The fast-event rule reads the somata's dF/F events (astro3s.events.kinetics.kinetics_events,
CellRules.fast_events_on_dff): a bleaching astrocyte is not a neuron."""

from __future__ import annotations

import numpy as np


def _traces(f: np.ndarray, fs: float):
    from astro3s.correlation.traces import RoiTraces, baseline_f0

    f0, method = baseline_f0(f, fs=fs)
    names = [f"Soma_{k + 1:03d}" for k in range(f.shape[1])] + ["Proc_001_01"]
    f = np.concatenate([f, f[:, :1]], axis=1)  # a process ROI beside the somata (left out by the rule)
    f0 = np.concatenate([f0, f0[:, :1]], axis=1)
    return RoiTraces(names=names, cell_ids=np.r_[np.arange(1, len(names)), 1], kinds=["soma"] * (len(names) - 1)
                     + ["process"], dff=((f - f0) / f0).astype(np.float32), f0=f0.astype(np.float32),
                     f=f.astype(np.float32), n_pixels=np.full(len(names), 100), fs=fs, f0_method=method)


def _event(t: np.ndarray, onset: float, rise_s: float, decay_s: float, amplitude: float) -> np.ndarray:
    dt = t - onset
    return np.where(dt > 0, amplitude * (1 - np.exp(-dt / rise_s)) * np.exp(-dt / decay_s), 0.0)


def test_a_bleaching_astrocyte_is_not_read_as_a_neuron_and_a_neuron_still_is() -> None:
    from astro3s.events import roi_events
    from astro3s.events.kinetics import fast_event_cells, kinetics_events

    fs, n = 5.0, 1500
    t = np.arange(n) / fs
    rng = np.random.default_rng(0)
    # cell 1: an astrocyte with slow events (decay ~4 s) in a movie that bleaches to 40 %, its noise bleaching with it
    slow = 1.0 + sum(_event(t, onset, 1.0, 4.0, 0.8) for onset in (20, 80, 150, 210, 270))
    bleach = 0.4 + 0.6 * np.exp(-3 * t / t[-1])
    astrocyte = 1000 * bleach * (slow + 0.05 * rng.normal(size=n))
    # cell 2: a neuron with many fast events (decay 0.4 s), no bleaching
    fast = 1.0 + sum(_event(t, onset, 0.05, 0.4, 1.5) for onset in np.arange(10, 290, 12.0))
    neuron = 1000 * (fast + 0.05 * rng.normal(size=n))
    traces = _traces(np.stack([astrocyte, neuron], axis=1), fs)
    events = kinetics_events(traces)
    assert set(events.kind) == {"soma"} and set(np.asarray(events.cell_id).tolist()) <= {1, 2}
    assert fast_event_cells(events).tolist() == [2]
    # the event table of the run (raw fluorescence) is left as it was: the rule reads its own events
    assert {"soma", "process"} <= set(roi_events([traces])[0].kind)
