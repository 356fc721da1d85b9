"""The steps of the CC domain search (astro3s.correlation.domains), its options, and the ROI means."""

from __future__ import annotations

import numpy as np
import pytest

from astro3s.correlation import CorrelationParams, find_domains
from astro3s.errors import ConfigError


def _fov(seed: int = 0, n_frames: int = 160):
    """A small FOV: two cells whose surroundings follow them (one at a lag of 4 frames), noise elsewhere."""
    rng = np.random.default_rng(seed)
    height, width = 40, 56
    yy, xx = np.mgrid[0:height, 0:width]
    soma = np.zeros((height, width), np.uint16)
    processes = np.zeros((height, width), np.uint16)
    movie = rng.normal(100.0, 3.0, (n_frames, height, width)).astype(np.float32)
    for cell, (cy, cx, lag) in enumerate([(14, 16, 0), (24, 38, 4)], start=1):
        signal = np.convolve(rng.random(n_frames + 20) < 0.05, np.exp(-np.arange(15) / 4.0))[:n_frames + 20]
        disc = np.hypot(yy - cy, xx - cx)
        soma[disc <= 2.5] = cell
        processes[(disc > 2.5) & (disc <= 4.5) & (xx > cx)] = cell
        domain = (disc <= 9) & (soma == 0) & (processes == 0)
        movie[:, (disc <= 4.5) & ((soma == cell) | (processes == cell))] += 30 * signal[10:10 + n_frames, None]
        movie[:, domain] += 20 * signal[10 - lag:10 - lag + n_frames, None]
    return movie, soma, processes


def test_params_and_overrides_give_the_same_domains():
    movie, soma, processes = _fov()
    params = CorrelationParams(radius=12.0, threshold=0.5, device="cpu", precision="float32")
    by_params = find_domains(movie, soma, processes, params=params)
    by_kwargs = find_domains(movie, soma, processes, radius=12.0, threshold=0.5, device="cpu", precision="float32")
    np.testing.assert_array_equal(by_params.domains, by_kwargs.domains)
    np.testing.assert_array_equal(by_params.cc_boxes, by_kwargs.cc_boxes)
    # overrides replace the fields of params; lists become tuples
    mixed = find_domains(movie, soma, processes, params=CorrelationParams(radius=5.0), radius=12.0, threshold=0.5,
                         device="cpu", precision="float32", threshold_up=[0.9, 0.95])
    np.testing.assert_array_equal(mixed.domains, by_params.domains)
    assert by_params.radius == 12.0 and by_params.max_lag == 10 and by_params.smooth_frames == 5
    assert (by_params.domains == 2).sum() > (soma == 2).sum() + (processes == 2).sum()


def test_bad_options_are_refused():
    movie, soma, processes = _fov()
    with pytest.raises(TypeError, match="unknown option"):
        find_domains(movie, soma, processes, radius=12.0, max_lag_s=1.0)
    with pytest.raises(ConfigError, match="max_lag"):
        find_domains(movie, soma, processes, max_lag=-1)
    with pytest.raises(ConfigError, match="threshold_up"):
        find_domains(movie, soma, processes, threshold_up=[0.9, 0.8])


def test_pixel_sets():
    from astro3s.correlation._common import check_pair
    from astro3s.correlation.domains import pixel_sets

    movie, soma, processes = _fov()
    soma, processes = check_pair(soma, processes, soma.shape)
    params = CorrelationParams(radius=12.0, n_background=50, border=2)
    pix = pixel_sets(soma, processes, params)
    np.testing.assert_array_equal(pix.cell_ids, [1, 2])
    roi = np.maximum(soma, processes).ravel()
    height, width = soma.shape
    for i, cell in enumerate(pix.cell_ids):
        np.testing.assert_array_equal(pix.roi_flat[i], np.flatnonzero(roi == cell))
        cand = pix.cand_flat[i]
        assert np.all(np.diff(cand) > 0) and np.all(roi[cand] == 0)
        ys, xs = np.divmod(cand, width)
        assert np.all(np.hypot(ys - pix.centroids[i, 0], xs - pix.centroids[i, 1]) <= 12.0)
    assert len(pix.bg_flat) == 50 and np.all(roi[pix.bg_flat] == 0)
    assert not np.isin(pix.bg_flat, np.concatenate(pix.cand_flat)).any()
    assert np.array_equal(pix.cell_pixels(), np.unique(np.concatenate([*pix.roi_flat, *pix.cand_flat])))
    # a given threshold needs no background
    assert len(pixel_sets(soma, processes, CorrelationParams(radius=12.0, threshold=0.5)).bg_flat) == 0


def test_near_lags_and_second_level_gather_the_lag_stack_rows():
    import torch

    from astro3s.correlation.domains import _lag_stack, _lag_windows, _near_lags

    rng = np.random.default_rng(1)
    roi = torch.from_numpy(rng.normal(size=(7, 50)).astype(np.float32))
    cand = torch.from_numpy(rng.normal(size=(9, 50)).astype(np.float32))
    max_lag = 3
    n_lags = 2 * max_lag + 1
    stack = _lag_stack(roi, max_lag)
    windows = _lag_windows(roi, max_lag)
    pixel = torch.from_numpy(rng.integers(0, 7, 9))
    lag = torch.from_numpy(rng.integers(0, n_lags, 9))
    want = torch.full((9,), -np.inf)
    for step in (-1, 0, 1):
        row = pixel * n_lags + torch.clamp(lag + step, 0, n_lags - 1)
        want = torch.maximum(want, (stack[row] * cand).sum(dim=1))
    assert torch.equal(_near_lags(windows, cand, pixel, lag), want)
    union = torch.tensor([0, 5, 13, 20, 48])
    assert torch.equal(windows[union // n_lags, union % n_lags], stack[union])


def test_screened_max_builds_second_level_rows_only_when_needed(monkeypatch):
    from astro3s.correlation import domains

    monkeypatch.setattr(domains, "_SCREEN_MIN_MACS", 0)
    calls = []
    fine_rows = domains._fine_rows

    def counting(*args, **kwargs):
        calls.append(1)
        return fine_rows(*args, **kwargs)

    monkeypatch.setattr(domains, "_fine_rows", counting)
    movie, soma, processes = _fov(n_frames=300)
    # noise only: no candidate comes near the threshold, every one is rejected by the first level
    noise = np.random.default_rng(5).normal(100.0, 3.0, movie.shape).astype(np.float32)
    quiet = find_domains(noise, soma, processes, radius=12.0, threshold=0.9, precision="float32")
    assert not quiet.exact_cc and not calls
    assert np.array_equal(quiet.domains, np.maximum(soma, processes))
    low = find_domains(movie, soma, processes, radius=12.0, threshold=0.3, precision="float32")
    exact = find_domains(movie, soma, processes, radius=12.0, threshold=0.3, precision="float32", exact_cc=True)
    np.testing.assert_array_equal(low.domains, exact.domains)
    assert calls  # near the low threshold some candidates needed the second level


def test_roi_means_equal_the_whole_frame_product():
    import scipy.sparse as sp

    from astro3s.correlation import RoiMeans, roi_table

    movie, soma, processes = _fov()
    n_frames, height, width = movie.shape
    means = RoiMeans(soma, processes, n_frames=n_frames, shape=(height, width))
    block = movie.reshape(n_frames, -1)
    means.add(0, block[:70])
    means.add(70, block[70:])
    # the product over the whole frame, as before the ROI pixels were gathered first
    _, _, _, index = roi_table(soma, processes)
    pix = np.flatnonzero(index >= 0)
    rois = index.ravel()[pix]
    weights = sp.csc_matrix((1.0 / np.bincount(rois)[rois], (pix, rois)), shape=(height * width, len(means.names)))
    np.testing.assert_array_equal(means.f, np.asarray(block @ weights))


def test_gathering_in_slabs_gives_the_same_domains(monkeypatch):
    # long movies: the screened search gathers candidates and lagged ROI rows in slabs of _GATHER_BYTES
    from astro3s.correlation import domains

    monkeypatch.setattr(domains, "_SCREEN_MIN_MACS", 0)
    movie, soma, processes = _fov(n_frames=300)
    kw = dict(radius=12.0, threshold=0.3, device="cpu")
    whole = find_domains(movie, soma, processes, **kw)
    monkeypatch.setattr(domains, "_GATHER_BYTES", 4 * 300 * 7)  # a few rows per slab
    for precision in ("float32", "bfloat16"):
        slabs = find_domains(movie, soma, processes, precision=precision, **kw)
        assert not slabs.exact_cc
        np.testing.assert_array_equal(slabs.domains, whole.domains)
        fin = np.isfinite(whole.cc)
        assert np.all(np.abs(slabs.cc[fin] - whole.cc[fin]) <= slabs.cc_tolerance + whole.cc_tolerance + 2e-5)
