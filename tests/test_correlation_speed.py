"""The faster pieces of the CC analysis give the values of the plain arithmetic they replace (issue 14)."""

from __future__ import annotations

import math
import os

import numpy as np
import pytest


def _whole_array_normalise(x: np.ndarray, smooth_frames: int) -> np.ndarray:
    """The normalisation's arithmetic on the whole array at once (one block of every row), float32."""
    from astro3s.correlation.domains import _normalise_block

    return _normalise_block(np.array(x, dtype=np.float32), smooth_frames, x.shape[1] - smooth_frames + 1)


@pytest.mark.parametrize("n_frames", [12, 311, 2000])
def test_blocked_normalisation_equals_the_whole_array_arithmetic(n_frames, monkeypatch):
    from astro3s.correlation import domains, normalise_traces

    rng = np.random.default_rng(n_frames)
    x = (rng.normal(size=(700, n_frames)) * 10 + 1000).astype(np.float32)
    x[3] = 5.0  # a constant trace becomes 0
    want = _whole_array_normalise(x, 5)
    monkeypatch.setattr(domains, "_NORMALISE_BYTES", 4 * n_frames * 7)  # blocks of 7 rows
    got = domains._normalise_in_place(x.copy(), 5)
    np.testing.assert_array_equal(got, want)
    assert got.flags.c_contiguous and not got[3].any()
    # the public function copies its input, whatever its layout
    np.testing.assert_array_equal(normalise_traces(np.asfortranarray(x), smooth_frames=5), want)


def test_first_level_argmax_is_the_pixel_major_one():
    import torch

    from astro3s.correlation.domains import _first_level, _rotated_rows, _screen_rows

    rng = np.random.default_rng(0)
    n_roi, max_lag, n_fft, n_spec = 37, 4, 64, 9
    spec = torch.from_numpy((rng.normal(size=(n_roi, n_spec)) + 1j * rng.normal(size=(n_roi, n_spec)))
                            .astype(np.complex64))
    high = torch.from_numpy(rng.random(n_roi).astype(np.float32))
    bend = torch.from_numpy(rng.random(n_roi).astype(np.float32))
    rows = _screen_rows(spec, high, bend, max_lag, n_fft)  # lag-major
    by_pixel = _rotated_rows(spec, [high, bend], list(range(-max_lag, max_lag + 1, 2)), n_fft)
    n_sampled = max_lag + 1
    assert torch.equal(rows.view(n_sampled, n_roi, -1).transpose(0, 1).reshape(n_roi * n_sampled, -1), by_pixel)
    # coarse columns: bfloat16 products tie often, and ties must go to the lowest pixel, then lag
    cand = torch.from_numpy(np.round(rng.normal(size=(300, rows.shape[1])), 1).astype(np.float32))
    for precision in ("bfloat16", "float32"):
        top, arg = _first_level(rows, cand, precision, n_sampled)
        dtype = torch.bfloat16 if precision == "bfloat16" else torch.float32
        want_top, want_arg = torch.max(cand.to(dtype) @ by_pixel.to(dtype).T, dim=1)
        assert torch.equal(top, want_top.float()) and torch.equal(arg, want_arg)


def test_union_flat_is_unique():
    from astro3s.correlation.domains import union_flat

    rng = np.random.default_rng(1)
    parts = [np.sort(rng.choice(5000, size=n, replace=False)) for n in (0, 10, 700, 3000)]
    got = union_flat(parts, 5000)
    np.testing.assert_array_equal(got, np.unique(np.concatenate(parts)))
    assert got.dtype == np.int64


@pytest.mark.parametrize("crowded", [False, True])
def test_background_pixels_equal_the_whole_fov_distances(crowded):
    from astro3s.correlation import background_pixels

    rng = np.random.default_rng(2)
    height, width, radius = 90, 120, 17.5
    centroids = rng.uniform([-5, -5], [height + 5, width + 5], size=(40 if crowded else 6, 2))
    roi = rng.random((height, width)) < 0.05
    got = background_pixels(roi, centroids, radius=radius, n_background=150, border=3, seed=4)
    # the former draw: the distance to the nearest centroid over the whole FOV
    eligible = ~roi
    eligible[:3] = eligible[-3:] = False
    eligible[:, :3] = eligible[:, -3:] = False
    yy, xx = np.mgrid[0:height, 0:width]
    dist = np.min([np.hypot(yy - cy, xx - cx) for cy, cx in centroids], axis=0)
    flat = np.flatnonzero(eligible & (dist > radius))
    assert (len(flat) < 150) == crowded  # the fallback to the farthest pixels is checked too
    if len(flat) < 150:
        pool = np.flatnonzero(eligible)
        flat = np.sort(pool[np.argsort(-dist.ravel()[pool], kind="stable")[:300]])
    want = np.sort(np.random.default_rng(4).choice(flat, size=min(150, len(flat)), replace=False))
    np.testing.assert_array_equal(got, want)


def test_thread_count_is_the_callers_whatever_the_load(monkeypatch):
    # the same products on the same number of threads whatever else runs: results do not depend on the load
    import torch

    from astro3s.correlation import _common

    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else math.inf
    assert 1 <= _common.idle_cores() <= cores
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        seen = []
        for idle in (1, 2):
            monkeypatch.setattr(_common, "idle_cores", lambda idle=idle: idle)
            with _common.few_threads():
                seen.append(torch.get_num_threads())
                with _common.parallel():
                    seen.append(torch.get_num_threads())
            assert torch.get_num_threads() == 2  # the caller's count, restored
        assert seen == [1, 2, 1, 2]  # small calls on one thread, large products on the caller's count
    finally:
        torch.set_num_threads(before)
