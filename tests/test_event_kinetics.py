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
    if before["n_cells"] < 2:
        pytest.skip("the tiny movie gave fewer than 2 cells")
    assert after["n_cells"] == before["n_cells"] - 1
    assert after["segmentation"]["fast_event_cells_dropped"] == 1
    soma_before, soma_after = read_labels(plain.output / "soma.tif"), read_labels(dropped.output / "soma.tif")
    np.testing.assert_array_equal(soma_after, np.where(soma_before > 1, soma_before - 1, 0))
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
    out = module._without_fast_event_cells(seg, movie)
    assert out.n_cells == 1 and out.counts["fast_event_cells_dropped"] == 1
    np.testing.assert_array_equal(out.soma, np.where(soma == 2, 1, 0))
    assert len(seen) == 1 and {"Soma_001", "Soma_002"} <= set(seen[0])  # both cells' traces were analysed
