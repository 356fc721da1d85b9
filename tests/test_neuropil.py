"""Neuropil surrounds of ROIs, the fitted contamination coefficient, and events detected without the
neuropil's fluctuations."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage as ndi

from astro3s.correlation import RoiMeans, roi_table
from astro3s.correlation.neuropil import neuropil_coefficients, neuropil_weights, subtract_neuropil
from astro3s.errors import ConfigError
from astro3s.events import EventParams, cell_event_summary, roi_events
from astro3s.simulate.signals import event_train

FS = 4.0


def _two_cells(shape: tuple[int, int] = (96, 96)) -> tuple[np.ndarray, np.ndarray]:
    yy, xx = np.mgrid[:shape[0], :shape[1]]
    soma = np.zeros(shape, np.uint16)
    soma[np.hypot(yy - 30, xx - 30) < 6] = 1
    soma[np.hypot(yy - 60, xx - 66) < 5] = 2
    processes = np.zeros(shape, np.uint16)
    processes[29:32, 37:52] = 1  # a process of cell 1 pointing right
    return soma, processes


def test_surrounds_keep_away_from_every_roi_and_hold_min_pixels() -> None:
    soma, processes = _two_cells()
    names, _, _, roi_index = roi_table(soma, processes)
    pixels, weights, n_pixels = neuropil_weights(roi_index, len(names), gap=3, min_pixels=350)
    # the nearest 350 allowed pixels (a few more where several lie at the cut distance)
    assert (n_pixels >= 350).all() and (n_pixels <= 385).all()
    near_roi = ndi.binary_dilation(roi_index >= 0, structure=np.ones((3, 3), bool), iterations=3)
    assert not near_roi.ravel()[pixels].any()
    # each column averages its own surround: weights sum to one
    np.testing.assert_allclose(np.asarray(weights.sum(axis=0)).ravel(), 1.0)
    # the surround of the soma of cell 1 is close to it (the nearest allowed pixels)
    col = weights[:, 0].toarray().ravel() > 0
    yy, xx = np.unravel_index(pixels[col], soma.shape)
    assert np.hypot(yy - 30, xx - 30).max() < 25


def test_roi_filling_the_fov_has_no_surround() -> None:
    soma = np.ones((20, 20), np.uint16)
    names, _, _, roi_index = roi_table(soma, np.zeros_like(soma))
    pixels, weights, n_pixels = neuropil_weights(roi_index, len(names))
    assert n_pixels.tolist() == [0] and len(pixels) == 0 and weights.shape == (0, 1)


def _ou(n: int, tau_frames: float, rng: np.random.Generator) -> np.ndarray:
    a = np.exp(-1.0 / tau_frames)
    noise = rng.normal(0, np.sqrt(1 - a * a), n)
    out = np.empty(n)
    out[0] = rng.normal()
    for i in range(1, n):  # a short test trace: the recursion is clearer than a filter call
        out[i] = a * out[i - 1] + noise[i]
    return out


def test_coefficient_recovers_the_contamination_and_ignores_an_unrelated_surround() -> None:
    rng = np.random.default_rng(1)
    n = 1200
    t = np.arange(n) / FS
    own = event_train(t, np.array([40.0, 120.0, 200.0]), np.array([0.5, 0.8, 0.6]), np.full(3, 0.5), np.full(3, 4.0))
    neuropil = 0.2 * _ou(n, 12.0, rng)
    f = np.column_stack([10 + own + 0.8 * neuropil + rng.normal(0, 0.02, n),
                         10 + own + rng.normal(0, 0.02, n)])
    fneu = np.column_stack([5 + neuropil + rng.normal(0, 0.01, n), 5 + 0.2 * _ou(n, 12.0, rng)])
    coef = neuropil_coefficients(f, fneu, fs=FS)
    assert coef[0] == pytest.approx(0.8, abs=0.08)
    assert coef[1] < 0.1
    corrected = subtract_neuropil(f, fneu, coef)
    # the resting level stays that of F; the neuropil's fluctuation is gone
    assert corrected[:, 0].mean() == pytest.approx(f[:, 0].mean(), abs=1e-9)
    assert np.std(corrected[:, 0] - own) < 0.25 * np.std(f[:, 0] - own)
    assert neuropil_coefficients(f, fneu, fs=FS, max_coef=0.5)[0] == 0.5


def test_events_are_detected_without_the_neuropil_fluctuations() -> None:
    """A dim cell under a bright, slowly fluctuating neuropil: the raw trace gives many false events,
    the corrected one the cell's own."""
    rng = np.random.default_rng(3)
    n, shape = 1200, (64, 64)
    t = np.arange(n) / FS
    soma, processes = np.zeros(shape, np.uint16), np.zeros(shape, np.uint16)
    yy, xx = np.mgrid[:shape[0], :shape[1]]
    soma[np.hypot(yy - 32, xx - 32) < 6] = 1
    onsets = np.array([50.0, 140.0, 230.0])
    own = event_train(t, onsets, np.full(3, 1.0), np.full(3, 0.5), np.full(3, 4.0))
    neuropil = 0.5 * _ou(n, 10.0, rng)  # slow, spatially uniform: seen in the soma and around it
    movie = (20.0 + 10.0 * (soma > 0)[None] * (1 + own)[:, None, None] + 20.0 * neuropil[:, None, None]
             + rng.normal(0, 1.0, (n, *shape))).astype(np.float32)
    means = RoiMeans(soma, processes, n_frames=n, shape=shape)
    means.add(0, movie.reshape(n, -1))
    traces = means.finish(fs=FS)
    assert traces.fneu is not None and traces.fneu.shape == (n, 1)
    corrected, per_roi = roi_events([traces], params=EventParams())
    raw, _ = roi_events([traces], params=EventParams(neuropil_max_coef=0))

    def errors(table: object) -> tuple[int, int]:
        found = table.onset_frame / FS
        hit = np.abs(found[:, None] - onsets[None]) < 1.5
        return int((~hit.any(axis=1)).sum()), int((~hit.any(axis=0)).sum())  # false, missed

    assert errors(corrected)[1] == 0 and errors(corrected)[0] <= 1
    assert sum(errors(raw)) >= 3  # the neuropil's swings are taken for events and hide the cell's
    # the coefficient each ROI got is in the table and in the cell's summary.json entry
    assert corrected.roi_neuropil_coef.tolist() == pytest.approx([1.0], abs=0.05)
    assert raw.roi_neuropil_coef.tolist() == [0.0]
    assert cell_event_summary(corrected)[1]["soma_neuropil_coef"] == pytest.approx(1.0, abs=0.05)
    assert cell_event_summary(corrected)[1]["process_neuropil_coef_median"] is None  # no process ROI
    # the table keeps the trace the events were found on, for the figures: the corrected F over the
    # detector's baseline, flat between events, without the neuropil's swings
    shown = corrected.detected_dff(["Soma_001", "Proc_001_01"])
    assert shown.shape == (n, 2) and np.isnan(shown[:, 1]).all()  # an ROI it did not analyse: NaN
    expected = subtract_neuropil(traces.f, traces.fneu, corrected.roi_neuropil_coef)[:, 0] / \
        per_roi["Soma_001"].baseline - 1
    np.testing.assert_allclose(shown[:, 0], expected, rtol=1e-5, atol=1e-6)
    quiet = np.abs(t[:, None] - (onsets[None] + 10.0)).min(axis=1) > 15.0
    assert np.std(shown[quiet, 0]) < 0.3 * np.std(raw.detected_dff(["Soma_001"])[quiet, 0])
    peak = corrected.peak_frame[0]
    assert shown[peak, 0] == pytest.approx(corrected.amplitude_dff[0], rel=0.3)


def test_neuropil_option_is_checked() -> None:
    with pytest.raises(ConfigError, match="neuropil_max_coef"):
        EventParams(neuropil_max_coef=-1)
