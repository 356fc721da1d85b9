"""Calcium events: detection on synthetic traces, frames vs seconds, events.csv, linking, scoring rules,
the simulator's event ground truth, and events.csv from a tiny inference run end to end."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest

from astro3s.events import (EVENT_CSV_COLUMNS, EventParams, cell_event_summary, detect_events, link_to_soma,
                            read_events_csv, roi_events, write_events_csv)
from astro3s.events.score import (cluster_onsets, match_compartment, match_onsets, roi_correspondence,
                                  score_movie)
from astro3s.simulate.signals import event_train

FS = 5.0


def _trace(onsets: list[float], amplitudes: list[float], *, fs: float = FS, seconds: float = 160.0,
           noise: float = 0.04, drift: float = 0.15, rise: float = 0.5, decay: float = 4.0,
           seed: int = 0) -> np.ndarray:
    """Fluorescence-like trace (T,): events of known onsets (s) on a slow drift (bleaching by ``drift`` over
    the movie and a slow wave of half that), with white noise."""
    t = np.arange(int(seconds * fs)) / fs
    n = len(onsets)
    signal = event_train(t, np.asarray(onsets, float), np.asarray(amplitudes, float), np.full(n, rise),
                         np.full(n, decay))
    rng = np.random.default_rng(seed)
    trend = drift * (np.exp(-t / seconds) - 1) + 0.5 * drift * np.sin(2 * np.pi * t / 400.0)
    return 1.0 + signal + trend + rng.normal(0, noise, len(t))


def _closest(found_s: np.ndarray, true_s: float) -> float:
    return float(found_s[np.argmin(np.abs(found_s - true_s))] - true_s)


def test_isolated_and_overlapping_events_on_drift_are_found_and_timed() -> None:
    # 12 s and 60 s alone; 90 s and 93.5 s overlap (the second starts on the still-elevated decay of the
    # first); 130 s is small (5 noise SDs)
    onsets = [12.0, 60.0, 90.0, 93.5, 130.0]
    x = _trace(onsets, [1.0, 0.6, 1.0, 0.8, 0.2])
    ev = detect_events(x, fs=FS)
    found = ev.onset / FS
    assert len(ev) == len(onsets), found
    for o in onsets:
        assert abs(_closest(found, o)) <= 1.5 / FS  # within ~1 frame
    assert np.all(ev.onset <= ev.peak) and np.all(ev.peak <= ev.end)
    # the overlapping pair: two events, the first ends where the second starts
    i = int(np.argmin(np.abs(found - 90.0)))
    assert ev.end[i] <= ev.onset[i + 1]
    # amplitudes are measured from the level each event rises from
    assert 0.7 < ev.amplitude[0] < 1.3 and 0.5 < ev.amplitude[i + 1] < 1.1
    assert np.all(ev.snr > 3) and ev.sigma == pytest.approx(0.04, rel=0.25)
    assert np.all(np.isfinite(ev.rise[:2])) and 0.5 < ev.rise[0] / FS < 2.0  # 10-90 % of a 0.5 s rise
    assert 2.0 < ev.decay[0] / FS < 7.0  # ~ the 4 s decay


def test_second_event_on_the_plateau_of_the_first_is_split() -> None:
    # no dip between them: the second rises while the first has not decayed yet (a derivative step finds it)
    x = _trace([20.0, 22.5], [1.0, 1.0], rise=0.6, decay=6.0, drift=0.0)
    ev = detect_events(x, fs=FS)
    assert len(ev) == 2
    assert abs(ev.onset[0] / FS - 20.0) <= 0.4 and abs(ev.onset[1] / FS - 22.5) <= 0.6


def test_noise_and_drift_alone_give_no_event() -> None:
    for seed in range(5):
        x = _trace([], [], seed=seed, drift=0.3)
        assert len(detect_events(x, fs=FS)) == 0


def test_frames_without_fs_equal_seconds_with_fs() -> None:
    x = _trace([12.0, 60.0, 90.0, 93.5], [1.0, 0.6, 1.0, 0.8])
    params = EventParams()
    in_frames = EventParams(**{f"{k}_frames": getattr(params, f"{k}_s") * FS
                               for k in ("smooth", "min_duration", "baseline_window", "link_max_delay", "link_lead")})
    with_fs = detect_events(x, fs=FS, params=params)
    without = detect_events(x, fs=None, params=in_frames)
    assert np.array_equal(with_fs.onset, without.onset) and np.array_equal(with_fs.peak, without.peak)
    assert params.in_frames(None).smooth == params.smooth_frames  # the frame values without a frame rate
    assert params.in_frames(2.0).min_duration == pytest.approx(params.min_duration_s * 2.0)


def test_nan_frames_and_short_traces() -> None:
    x = _trace([30.0], [1.0])
    x[100:110] = np.nan
    assert len(detect_events(x, fs=FS)) == 1
    assert len(detect_events(np.full(50, np.nan), fs=FS)) == 0
    assert len(detect_events(np.ones(3), fs=FS)) == 0


def test_bad_parameters_are_config_errors() -> None:
    from astro3s.errors import ConfigError

    with pytest.raises(ConfigError):
        EventParams(threshold=-1)
    with pytest.raises(ConfigError):
        EventParams(low_threshold=5, threshold=4)


def test_linking_picks_the_nearest_somatic_event_within_the_window() -> None:
    cells = np.array([1, 1, 1, 1, 1, 2, 2])
    kinds = ["soma", "soma", "process", "process", "domain", "soma", "process"]
    onsets = np.array([10.0, 40.0, 12.0, 30.0, 39.0, 5.0, 4.0])
    soma_event, delay = link_to_soma(cells, kinds, onsets, max_delay=5.0, lead=2.0)
    assert soma_event.tolist() == [-1, -1, 0, -1, 1, -1, 5]
    assert delay[2] == 2.0 and delay[4] == -1.0 and delay[6] == -1.0 and np.isnan(delay[3])


class _Traces:
    """A stand-in for RoiTraces: names, cells, kinds, dff (T, R), fs (no raw F)."""

    def __init__(self, dff: np.ndarray, names: list[str], fs: float | None):
        self.dff, self.names, self.fs, self.f = dff, names, fs, None
        self.cell_ids = np.array([int(n.split("_")[1]) for n in names])
        self.kinds = ["soma" if n.startswith("Soma") else "domain" if n.startswith("Domain") else "process"
                      for n in names]


def _movie_traces(fs: float | None) -> _Traces:
    soma = _trace([20.0, 70.0, 120.0], [1.0, 1.0, 1.0])
    proc = _trace([20.6, 70.4, 100.0], [0.8, 0.8, 0.8], seed=1)  # follows two somatic events, one alone
    dom = _trace([21.0], [0.5], seed=2)
    return _Traces(np.stack([soma, proc, dom], axis=1), ["Soma_001", "Proc_001_01", "Domain_001"], fs)


def test_events_csv_columns_linking_and_summary(tmp_path: Path) -> None:
    table, per_roi = roi_events([_movie_traces(FS)])
    assert set(per_roi) == {"Soma_001", "Proc_001_01", "Domain_001"}
    assert table.kind == sorted(table.kind, key=["soma", "process", "domain"].index)  # soma rows first
    path = write_events_csv(tmp_path / "events.csv", table)
    rows = list(csv.DictReader(path.open()))
    assert tuple(rows[0]) == EVENT_CSV_COLUMNS and len(rows) == len(table) == 7
    procs = [r for r in rows if r["kind"] == "process"]
    linked = [r for r in procs if r["soma_event"] != ""]
    assert len(linked) == 2 and all(rows[int(r["soma_event"])]["kind"] == "soma" for r in linked)
    assert all(0.0 <= float(r["delay_s"]) <= 1.5 for r in linked)
    assert all(float(r["onset_s"]) == pytest.approx(int(r["onset_frame"]) / FS, abs=1e-3) for r in rows)
    back = read_events_csv(path)
    assert back.fs == pytest.approx(FS) and np.array_equal(back.onset_frame, table.onset_frame)
    # dF/F-only traces: the detected trace is the dF/F less the detector's baseline, kept in the table
    # (not in the CSV)
    dff = _movie_traces(FS).dff
    shown = table.detected_dff(["Proc_001_01", "Soma_001"])
    np.testing.assert_allclose(shown, dff[:, [1, 0]] - np.stack([per_roi["Proc_001_01"].baseline,
                                                                  per_roi["Soma_001"].baseline], axis=1), atol=1e-6)
    assert back.detected_dff(["Soma_001"]) is None
    cell = cell_event_summary(table)[1]
    assert cell["n_events"] == {"soma": 3, "process": 3, "domain": 1}
    assert cell["soma_to_process_fraction"] == pytest.approx(2 / 3, abs=1e-3)
    assert cell["process_only_event_rate"] == pytest.approx(1 / (len(_movie_traces(FS).dff) / FS / 60), rel=1e-3)
    assert 0 <= cell["soma_to_process_delay_s"] <= 1.5


def test_events_csv_without_frame_rate_leaves_seconds_empty(tmp_path: Path) -> None:
    table, _ = roi_events([_movie_traces(None)])
    rows = list(csv.DictReader(write_events_csv(tmp_path / "events.csv", table).open()))
    assert rows and all(r[c] == "" for r in rows for c in ("onset_s", "peak_s", "duration_s", "delay_s"))
    assert all(r["onset_frame"].isdigit() for r in rows)
    assert "soma_to_process_delay_frames" in cell_event_summary(table)[1]


def test_matching_rules() -> None:
    # chains of onsets within the tolerance are one event
    assert cluster_onsets(np.array([0.0, 1.0, 2.0, 5.0]), 1.5).tolist() == [0, 0, 0, 1]
    # one to one, closest first
    ip, it = match_onsets(np.array([10.0, 10.4]), np.array([10.5]), 1.5)
    assert ip.tolist() == [1] and it.tolist() == [0]
    # two true events closer than the tolerance count as one; an optional true event is neither hit nor miss
    res = match_compartment(np.array([10.2, 30.0]), np.full(2, np.nan), np.array([10.0, 11.0, 30.5, 50.0]),
                            np.array([True, True, False, True]), np.full(4, np.nan), tol=1.5, fs=4.0)
    assert (res.tp, res.fp, res.fn) == (1, 0, 1)
    assert res.onset_errors_frames == [pytest.approx(0.8)]


def test_score_movie_tolerance_optional_events_and_delays() -> None:
    from astro3s.events import EventTable
    from astro3s.simulate.events import EventTruth

    fs = 10.0
    truth = EventTruth(cell=np.array([1, 1, 1, 1, 1]), compartment=["soma", "soma", "process", "process", "soma"],
                       roi=["Soma_001", "Soma_001", "Proc_001_01", "Proc_001_01", "Soma_001"],
                       source=["whole", "whole", "whole", "micro", "neuron"], source_cell=np.array([1, 1, 1, 1, 0]),
                       source_id=np.arange(5), onset_s=np.array([-1.0, 20.0, 21.0, 40.0, 60.0]),
                       peak_s=np.array([0.5, 21.0, 22.0, 41.0, 61.0]), amplitude=np.ones(5),
                       snr=np.array([50.0, 50.0, 50.0, 2.0, 50.0]), delay_s=np.array([np.nan, np.nan, 1.0, np.nan,
                                                                                       np.nan]))
    n = 6
    pred = EventTable(cell_id=np.full(n, 1), kind=["soma"] * 4 + ["process"] * 2,
                      roi=["Soma_001"] * 4 + ["Proc_001_01"] * 2,
                      onset_frame=np.array([0, 214, 600, 900, 211, 400]), peak_frame=np.zeros(n, np.int64),
                      end_frame=np.zeros(n, np.int64), amplitude_dff=np.ones(n), rise_frames=np.ones(n),
                      decay_frames=np.ones(n), auc_frames=np.ones(n), snr=np.ones(n),
                      soma_event=np.array([-1, -1, -1, -1, 1, -1]),
                      delay_frames=np.array([np.nan, np.nan, np.nan, np.nan, -3.0, np.nan]), fs=fs, n_frames=1000)
    scores = score_movie(pred, truth, np.array([1]), np.array([1]), fs=fs, n_frames=1000)
    soma, proc = scores["soma"].as_dict(), scores["process"].as_dict()
    # frame 0 matches the event under way at the start (optional), 21.4 s the one at 20 s (1.4 s <= 1.5 s),
    # 60 s a neuron's transient (optional), 90 s nothing
    assert (soma["tp"], soma["fp"], soma["fn"]) == (1, 1, 0)
    # the micro event (SNR 2) is optional: the detection at 40 s is neither hit nor false
    assert (proc["tp"], proc["fp"], proc["fn"]) == (1, 0, 0)
    assert proc["median_delay_error_s"] == pytest.approx(1.3)  # detected -0.3 s, true 1.0 s


def test_roi_correspondence_by_overlap() -> None:
    soma = np.zeros((20, 20), np.int64)
    soma[2:6, 2:6] = 1
    proc = np.zeros_like(soma)
    proc[2:4, 8:18] = 1  # Proc_001_01
    proc[10:12, 2:6] = 1  # Proc_001_02
    pred_proc = np.zeros_like(soma)
    pred_proc[10:13, 3:7] = 4  # one predicted process over the second true one
    pred_soma = np.where(soma > 0, 4, 0)
    mapping = roi_correspondence(pred_soma, pred_proc, soma, proc, np.array([4]), np.array([1]))
    assert mapping == {"Soma_004": "Soma_001", "Proc_004_01": "Proc_001_02"}


def test_simulator_event_truth_matches_its_traces(simulated) -> None:
    from astro3s.simulate import simulate_preset
    from astro3s.simulate.events import EVENT_COLUMNS, event_truth, read_event_truth

    sim = simulate_preset("tiny", seed=3, stream=True)
    scene = sim.scene
    # each component's trace is the sum of its recorded events
    for k, ev in enumerate(scene.component_events):
        assert ev is not None
        assert np.allclose(scene.traces[:, k], event_train(scene.times, ev.onsets, ev.amplitudes, ev.rise, ev.decay),
                           atol=1e-5)
    table = event_truth(scene, sim.truth)
    assert len(table) and np.all(table.snr >= 1.0) and np.all(table.peak_s > table.onset_s)
    assert set(table.compartment) <= {"soma", "process"} and set(table.cell) <= set(range(1, sim.n_cells + 1))
    # a whole-cell event shows in its soma and its processes at once: delay 0
    whole = np.array([s == "whole" for s in table.source]) & np.isfinite(table.delay_s)
    assert whole.any() and np.allclose(table.delay_s[whole], 0.0)
    # the written table reads back
    folder = simulated("tiny", 3)
    header = (folder / "ground_truth" / "events.csv").read_text().splitlines()[0].split(",")
    assert tuple(header) == EVENT_COLUMNS
    back = read_event_truth(folder / "ground_truth" / "events.csv")
    assert len(back) == len(table) and np.allclose(back.onset_s, table.onset_s, atol=1e-3)


def test_event_config_group_and_converter() -> None:
    import yaml

    from astro3s.cli.infer import event_params_from_config
    from astro3s.errors import ConfigError

    conf = yaml.safe_load((Path(__file__).parents[1] / "conf" / "events" / "default.yaml").read_text())
    assert EventParams(**conf) == EventParams()
    assert event_params_from_config({"threshold": 5}).threshold == 5.0
    assert event_params_from_config(None) == EventParams()
    with pytest.raises(ConfigError, match="did you mean events.threshold"):
        event_params_from_config({"treshold": 5})


def test_tiny_inference_writes_events_csv_and_marked_traces(simulated, tmp_path: Path) -> None:
    from astro3s.cli.eval import evaluate_events
    from astro3s.inference import OUTPUT_FILES, infer_movie
    from astro3s.inference.pipeline import InferenceOptions
    from astro3s.preprocess.params import as_preprocess_params

    folder = simulated("tiny", 3)
    from astro3s.correlation import CorrelationParams

    options = InferenceOptions(preprocess=as_preprocess_params(None), correlation=CorrelationParams(),
                               events=EventParams(), device="cpu")
    result = infer_movie(folder / f"{folder.name}.tif", tmp_path / "out", None, options,
                         rois=folder / "ground_truth" / "RoiSet.zip")
    assert "events.csv" in OUTPUT_FILES and all((result.output / n).is_file() for n in OUTPUT_FILES)
    rows = list(csv.DictReader((result.output / "events.csv").open()))
    assert rows and tuple(rows[0]) == EVENT_CSV_COLUMNS
    assert {r["kind"] for r in rows} <= {"soma", "process", "domain"}
    summary = json.loads((result.output / "summary.json").read_text())
    assert summary["parameters"]["events"] == EventParams().__dict__
    assert summary["events"]["n_events"] == len(rows)
    cell = summary["cells"][0]
    assert {"soma_event_rate", "process_event_rate", "process_only_event_rate",
            "soma_to_process_fraction"} <= set(cell)
    # astro3s-eval scores the events when both sides have them
    (tmp_path / "gt").mkdir()
    (tmp_path / "gt" / folder.name).symlink_to(folder)
    scores = evaluate_events(tmp_path / "out", tmp_path / "gt", iou_threshold=0.5)
    assert scores is not None and scores["soma"]["tp"] > 0 and folder.name in scores["per_fov"]


def test_infer_config_has_the_events_group(tmp_path: Path) -> None:
    from _hydra import compose_config

    from astro3s.cli.infer import event_params_from_config

    cfg = compose_config("infer", ["input=movie.tif", "events.threshold=5", "events.smooth_s=0.2"],
                         output_dir=tmp_path)
    params = event_params_from_config(cfg.events)
    assert params.threshold == 5.0 and params.smooth_s == 0.2 and params.split_rise == EventParams().split_rise


def _slow_noise(n: int, *, tau_frames: float, sd: float, rng: np.random.Generator) -> np.ndarray:
    """Stationary AR(1) noise (T,) of SD ``sd`` and correlation time ``tau_frames`` (a leftover neuropil)."""
    from scipy.signal import lfilter

    a = np.exp(-1.0 / tau_frames)
    return sd * lfilter([1.0], [1.0, -a], rng.normal(0.0, np.sqrt(1 - a * a), n))


@pytest.mark.parametrize("seed", [0, 1, 2, 3])
def test_noise_of_a_slow_noise_trace_is_its_spread_around_the_baseline(seed: int) -> None:
    """Noise mostly slow and no event: the noise the thresholds need is the smoothed trace's spread around
    its slow baseline. The spread below the half-sample mode alone lands anywhere from half to 1.5 times it
    (the mode falls on whichever lump of the slow noise is densest)."""
    from astro3s.events import running_baseline, smooth_trace
    from astro3s.events.detect import _masked_running_mean

    rng = np.random.default_rng(seed)
    n, window = 2000, 151
    x = 1.0 + _slow_noise(n, tau_frames=15.0, sd=0.05, rng=rng) + rng.normal(0, 0.01, n)
    smoothed, factor = smooth_trace(x, 2.0)
    _, sigma_det = running_baseline(x, smoothed, window=window, sigma_smooth=0.01 * factor)
    spread = np.std(smoothed - _masked_running_mean(smoothed, np.ones(n, bool), window))
    assert sigma_det == pytest.approx(spread, rel=0.15)
    assert len(detect_events(x, params=EventParams(smooth_frames=2.0, baseline_window_frames=window))) <= 1


def test_noise_of_an_event_dense_trace_stays_that_of_the_quiet_frames() -> None:
    """Events every 7 s, each before the last has decayed: measured below the baseline, the noise stays
    near the white noise (the events, above it, do not count), and every event is found."""
    from astro3s.events import running_baseline, smooth_trace

    onsets = np.arange(5.0, 155.0, 7.0)
    x = _trace(list(onsets), [0.3] * len(onsets), drift=0.0, seed=5)
    smoothed, factor = smooth_trace(x, 2.0)
    _, sigma_det = running_baseline(x, smoothed, window=151, sigma_smooth=0.04 * factor)
    assert sigma_det < 2.0 * 0.04 * factor
    found = detect_events(x, fs=FS).onset / FS
    assert len(found) == len(onsets)
    assert np.abs(found[:, None] - onsets[None]).min(axis=0).max() < 1.0
