"""Neuron-like cells by the kinetics of their somatic events (astro3s.events.kinetics) and the option of
astro3s-infer that drops them (InferenceOptions.drop_fast_event_cells)."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest


def _table(cells, kinds, decay_frames, fs, snr=None):
    from astro3s.events import EventTable

    n = len(cells)
    zeros = np.zeros(n, np.int64)
    return EventTable(cell_id=np.asarray(cells, np.int64), kind=list(kinds), roi=[f"R{c}" for c in cells],
                      onset_frame=zeros, peak_frame=zeros, end_frame=zeros, amplitude_dff=np.ones(n),
                      rise_frames=np.ones(n), decay_frames=np.asarray(decay_frames, np.float64),
                      auc_frames=np.ones(n), snr=np.full(n, 50.0) if snr is None else np.asarray(snr, float),
                      soma_event=np.full(n, -1),
                      delay_frames=np.full(n, np.nan), fs=fs, n_frames=500)


def test_fast_event_cells_needs_many_fast_somatic_events_and_a_frame_rate() -> None:
    from astro3s.events.kinetics import FAST_MAX_DECAY_S, FAST_MIN_EVENTS, fast_event_cells

    assert (FAST_MIN_EVENTS, FAST_MAX_DECAY_S) == (5, 1.2)
    fs = 10.0  # decays in frames: 8 frames = 0.8 s (fast), 30 frames = 3 s (an astrocyte's)
    cells = [1] * 6 + [2] * 6 + [3] * 4 + [4] * 6 + [5] * 6
    kinds = ["soma"] * 6 + ["soma"] * 6 + ["soma"] * 4 + ["process"] * 6 + ["soma"] * 6
    decay = [8] * 6 + [30] * 6 + [8] * 4 + [8] * 6 + [8, 8, 8, np.nan, np.nan, np.nan]
    # 1: six fast somatic events; 2: slow; 3: too few; 4: fast processes only (microdomains); 5: the median is over
    # the three measured decays, the events count all six
    table = _table(cells, kinds, decay, fs)
    np.testing.assert_array_equal(fast_event_cells(table), [1, 5])
    assert fast_event_cells(table, min_events=7).size == 0
    assert fast_event_cells(table, max_decay_s=0.5).size == 0
    assert fast_event_cells(_table(cells, kinds, decay, None)).size == 0  # decays in frames say nothing
    assert fast_event_cells(_table([], [], [], fs)).size == 0
    # a bright soma's many small fluctuations (SNR under FAST_MIN_SNR) do not count, its one big event decays slowly
    snr = [4.0] * 8 + [260.0]
    small = _table([1] * 9, ["soma"] * 9, [3] * 8 + [29], fs, snr=snr)
    assert fast_event_cells(small).size == 0 and fast_event_cells(small, min_snr=0).tolist() == [1]


def test_infer_drops_fast_event_cells_and_analyses_the_others_again(tiny_movie, tmp_path, monkeypatch) -> None:
    import json

    from astro3s.events import kinetics
    from astro3s.inference import infer_movie, load_inference_model

    _, options = load_inference_model("default", device="cpu", soma_scale="fixed", figures=False)
    assert options.drop_fast_event_cells is True  # the default since 2026-12-06
    options = dataclasses.replace(options, drop_fast_event_cells=False)
    truth = tiny_movie.parent / "ground_truth" / "RoiSet.zip"
    # curated cells are never dropped, whatever their events
    monkeypatch.setattr(kinetics, "fast_event_cells", lambda events, **_: np.array([1], np.int64))
    # the second rule (processes that do not follow) names cell 1 too and cell 2: each cell is dropped once
    monkeypatch.setattr(kinetics, "unfollowed_cells", lambda traces, events, **_: np.array([1, 2], np.int64))
    on = dataclasses.replace(options, drop_fast_event_cells=True)
    curated = infer_movie(tiny_movie, tmp_path / "curated", None, on, rois=truth, progress=False)
    from astro3s.io import read_labels, read_roiset_meta

    shape = read_labels(curated.output / "soma.tif").shape
    n_true = len({roi.cell for roi in read_roiset_meta(truth, shape) if roi.kind == "soma"})
    assert n_true >= 2 and json.loads((curated.output / "summary.json").read_text())["n_cells"] == n_true
    # the network's cells: the first one named goes, the others keep their outlines, renumbered
    plain = infer_movie(tiny_movie, tmp_path / "plain", _model(), options, progress=False)
    dropped = infer_movie(tiny_movie, tmp_path / "dropped", _model(), on, progress=False)
    before = json.loads((plain.output / "summary.json").read_text())
    after = json.loads((dropped.output / "summary.json").read_text())
    if before["n_cells"] < 3:
        pytest.skip("the tiny movie gave fewer than 3 cells")
    assert after["n_cells"] == before["n_cells"] - 2
    assert after["segmentation"]["fast_event_cells_dropped"] == 1
    assert after["segmentation"]["unfollowed_cells_dropped"] == 1
    soma_before, soma_after = read_labels(plain.output / "soma.tif"), read_labels(dropped.output / "soma.tif")
    np.testing.assert_array_equal(soma_after, np.where(soma_before > 2, soma_before - 2, 0))
    # traces and summary describe the remaining cells only
    header = (dropped.output / "traces.csv").read_text().splitlines()[0].split(",")
    assert [c for c in header if c.startswith("Soma_")] == [f"Soma_{k:03d}" for k in range(1, after["n_cells"] + 1)]
    assert len(after["cells"]) == after["n_cells"]


def _model():
    from astro3s.inference import load_inference_model

    return load_inference_model("default", device="cpu")[0]


def test_evaluate_model_drops_what_the_rule_names(experiment_script, monkeypatch) -> None:
    from astro3s.events import kinetics
    from astro3s.postprocess import CombineParams
    from astro3s.postprocess.combine import _segmentation

    module = experiment_script("evaluate_model")
    soma = np.zeros((40, 40), np.int32)
    soma[5:12, 5:12], soma[25:32, 25:32] = 1, 2
    seg = _segmentation(soma, np.zeros_like(soma), 2, CombineParams(), {"cells": 2})
    movie = np.random.default_rng(0).normal(100, 5, (60, 40, 40)).astype(np.float32)
    seen = []

    def named(events, **_):
        seen.append(list(events.roi_names))  # every ROI analysed, with events or not
        return np.array([1], np.int64)

    monkeypatch.setattr(kinetics, "fast_event_cells", named)
    from astro3s.inference.rules import CellRules

    out = module._without_fast_event_cells(seg, movie, rules=CellRules())
    assert out.n_cells == 1 and out.counts["fast_event_cells_dropped"] == 1
    np.testing.assert_array_equal(out.soma, np.where(soma == 2, 1, 0))
    assert len(seen) == 1 and {"Soma_001", "Soma_002"} <= set(seen[0])  # both cells' traces were analysed


def _traces(soma_dff, process_dff, *, fs=4.0):
    """RoiTraces of one cell per column of ``soma_dff`` (T, n), its processes ``process_dff`` (list of (T, k))."""
    from astro3s.correlation.traces import RoiTraces

    columns, ids, kinds, names = [], [], [], []
    for cell, (soma, processes) in enumerate(zip(soma_dff.T, process_dff), start=1):
        columns.append(soma), ids.append(cell), kinds.append("soma"), names.append(f"Soma_{cell:03d}")
        for j, trace in enumerate(np.asarray(processes).T):
            columns.append(trace), ids.append(cell), kinds.append("process"), names.append(f"P_{cell:03d}_{j}")
    dff = np.stack(columns, axis=1).astype(np.float32)
    return RoiTraces(names=names, cell_ids=np.asarray(ids, np.int64), kinds=kinds, dff=dff, f0=np.ones_like(dff),
                     f=dff, n_pixels=np.ones(dff.shape[1], np.int64), fs=fs, f0_method="percentile")


def test_process_following_is_the_correlation_of_the_processes_mean_with_the_soma() -> None:
    from astro3s.events.kinetics import process_following

    rng = np.random.default_rng(0)
    soma = rng.normal(size=(400, 3))
    follow = np.stack([soma[:, 0] + 0.3 * rng.normal(size=400), soma[:, 0] + 0.3 * rng.normal(size=400)], axis=1)
    other = rng.normal(size=(400, 2))  # neuropil round a neuron: its own activity
    traces = _traces(soma, [follow, other, np.zeros((400, 0))])
    following = process_following(traces)
    assert set(following) == {1, 2}  # cell 3 has no process trace: not judged
    assert following[1] > 0.9 and abs(following[2]) < 0.2
    assert set(process_following(traces, [2, 3])) == {2}  # only the cells asked for
    flat = _traces(np.ones((50, 1)), [rng.normal(size=(50, 1))])
    assert np.isnan(process_following(flat)[1])  # a flat soma says nothing


def test_unfollowed_cells_need_fairly_fast_events_and_processes_that_do_not_follow() -> None:
    from astro3s.events.kinetics import (UNFOLLOWED_MAX_CORRELATION, UNFOLLOWED_MAX_DECAY_S, UNFOLLOWED_MIN_EVENTS,
                                         fast_event_cells, somatic_kinetics, unfollowed_cells)

    assert (UNFOLLOWED_MAX_CORRELATION, UNFOLLOWED_MAX_DECAY_S, UNFOLLOWED_MIN_EVENTS) == (0.4, 1.6, 3)
    rng = np.random.default_rng(1)
    soma = rng.normal(size=(400, 4))
    followed = soma[:, [2]] + 0.2 * rng.normal(size=(400, 1))
    unfollowed = rng.normal(size=(400, 2))
    # 1: unfollowed, 3 events of 1.4 s (a neuron the fast-event rule misses); 2: unfollowed but slow (3 s);
    # 3: fast but followed (an astrocyte with fast events); 4: unfollowed, fast, but only 2 events
    traces = _traces(soma, [unfollowed, unfollowed, followed, unfollowed])
    fs = 4.0
    cells = [1] * 3 + [2] * 3 + [3] * 3 + [4] * 2
    decay = [1.4 * fs] * 3 + [3.0 * fs] * 3 + [1.4 * fs] * 3 + [1.0 * fs] * 2
    table = _table(cells, ["soma"] * len(cells), decay, fs)
    assert unfollowed_cells(traces, table).tolist() == [1]
    assert fast_event_cells(table).size == 0  # too few and too slow for the first rule
    assert unfollowed_cells(traces, table, max_correlation=0).size == 0  # off
    assert unfollowed_cells(traces, table, max_correlation=1.01).tolist() == [1, 3]
    assert unfollowed_cells(traces, table, min_events=2).tolist() == [1, 4]
    ids, counts, decay_s = somatic_kinetics(table, min_snr=5.0)
    assert ids.tolist() == [1, 2, 3, 4] and counts.tolist() == [3, 3, 3, 2]
    np.testing.assert_allclose(decay_s, [1.4, 3.0, 1.4, 1.0])
    assert unfollowed_cells(traces, _table(cells, ["soma"] * len(cells), decay, None)).size == 0  # no frame rate


def test_neuron_like_cells_reads_the_rules(monkeypatch) -> None:
    from astro3s.events import kinetics
    from astro3s.inference.pipeline import neuron_like_cells
    from astro3s.inference.rules import CellRules

    rng = np.random.default_rng(2)
    soma = rng.normal(size=(300, 2))
    traces = _traces(soma, [rng.normal(size=(300, 2)), rng.normal(size=(300, 2))])  # nothing follows
    fs = 4.0
    # cell 1: six events of 0.8 s (the fast-event rule's); cell 2: three of 1.4 s (only the second rule's)
    table = _table([1] * 6 + [2] * 3, ["soma"] * 9, [0.8 * fs] * 6 + [1.4 * fs] * 3, fs)
    monkeypatch.setattr(kinetics, "kinetics_events", lambda traces, **_: table)
    on = CellRules(unfollowed_max_correlation=0.4)
    fast, unfollowed = neuron_like_cells(traces, None, on)
    assert fast.tolist() == [1] and unfollowed.tolist() == [2]
    assert CellRules().unfollowed_max_correlation == 0  # off by default (a true low-SNR cell lost on 304-307)
    assert neuron_like_cells(traces, None, CellRules())[1].size == 0
    # with fast_events_on_dff off the run's own events are judged
    raw = CellRules(fast_events_on_dff=False, unfollowed_max_correlation=0.4)
    fast, unfollowed = neuron_like_cells(traces, table, raw)
    assert fast.tolist() == [1] and unfollowed.tolist() == [2]
