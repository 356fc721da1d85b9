"""Memory of the CC domain search (issue 14): one group of traces at a time, bounded transients, and
values that do not depend on how the pixels are grouped."""

from __future__ import annotations

import gc
import logging
import weakref

import numpy as np
import pytest
import torch

from astro3s.correlation import domains, find_domains
from astro3s.correlation._store import TraceStore

from test_correlation import synthetic_fov


@pytest.fixture
def screened(monkeypatch):
    """The screened search on the small test FOVs (exhaustive below its cost threshold otherwise)."""
    monkeypatch.setattr(domains, "_SCREEN_MIN_MACS", 0)
    monkeypatch.setattr(domains, "_SCREEN_MIN_MACS_GPU", 0)


def _unit_traces(n: int, n_frames: int, seed: int = 0) -> torch.Tensor:
    x = np.random.default_rng(seed).standard_normal((n, n_frames + 4)).astype(np.float32)
    return torch.from_numpy(domains._normalise_in_place(x, 5))


def test_spectral_features_of_a_row_do_not_depend_on_the_rows_beside_it(monkeypatch):
    # each row's spectra and bounds are its own: computed in blocks of 7 rows, for all 300 at once, or for
    # a few rows alone, every value is the same to the bit (a group of pixels then gives the same CC
    # values whatever the memory budget cut the FOV into)
    z = _unit_traces(300, 296)
    band = domains._screen_band(296, 10, 5)
    whole = domains._spectral_features(z, *band)
    monkeypatch.setattr(domains, "_BLOCK_ELEMENTS", 7 * 4 * band[0])  # 7 rows a block
    blocked = domains._spectral_features(z, *band)
    rows = torch.tensor([0, 5, 6, 7, 150, 299])
    alone = domains._spectral_features(z[rows].contiguous(), *band)
    for key in ("spec", "high", "high_fine", "bend"):
        assert torch.equal(blocked[key], whole[key]), key
        assert torch.equal(alone[key], whole[key][rows]), key


@pytest.mark.parametrize("slab_bytes", [4 * 3 * 10, 4 * 7 * 10, 1 << 20])
def test_rows_read_from_frames_in_slabs_are_the_traces(monkeypatch, slab_bytes):
    # a spilled store over frames in memory gathers a slab of frames at a time (a bounded transient copy);
    # slabs that do not divide the movie's length included
    from astro3s.correlation import _store

    monkeypatch.setattr(_store, "_SLAB_BYTES", slab_bytes)
    rng = np.random.default_rng(1)
    frames = rng.standard_normal((53, 40 * 30)).astype(np.float32)
    flat = np.sort(rng.choice(frames.shape[1], 200, replace=False)).astype(np.int64)
    store = TraceStore(flat, 53, spill=True, frames=frames)
    index = np.array([0, 1, 2, 50, 51, 120, 199])
    got = store.rows(index)
    assert got.shape == (len(index), 53) and got.dtype == np.float32 and got.flags.c_contiguous
    np.testing.assert_array_equal(got, frames[:, flat[index]].T)
    assert store.rows(np.zeros(0, np.int64)).shape == (0, 53)


@pytest.mark.parametrize("exact_cc", [True, False])
def test_grouped_search_of_frames_in_memory_gives_the_same_values(screened, exact_cc):
    # the FOV cut into groups by a small budget, traces read from the frames in memory: every CC value,
    # not only the domains, is that of the search over one group
    movie, soma, processes, _ = synthetic_fov(seed=2, n_frames=300)
    kw = dict(radius=14.0, n_background=150, border=2, exact_cc=exact_cc, device="cpu", chunk_frames=7)
    whole = find_domains(movie, soma, processes, **kw)
    grouped = find_domains(movie, soma, processes, memory_mb=1.2, **kw)
    np.testing.assert_array_equal(grouped.domains, whole.domains)
    np.testing.assert_array_equal(grouped.cc, whole.cc)
    assert grouped.threshold == whole.threshold


def test_a_group_is_freed_before_the_next_one_is_loaded(screened, monkeypatch, caplog):
    # the peak memory of the search is one group of traces: when a group's traces are normalised, no
    # earlier group is alive (the caller's own reference to it included)
    movie, soma, processes, _ = synthetic_fov(seed=2, n_frames=300)
    loaded: list[weakref.ref] = []
    alive_at_load: list[int] = []
    original_group = domains._Traces.group
    original_prepare = domains._Traces._prepare

    def prepare(self, key, flat, raw, **options):
        if key is not None:  # a group (not a band of candidates read beside a loaded group)
            gc.collect()
            alive_at_load.append(sum(ref() is not None for ref in loaded))
        return original_prepare(self, key, flat, raw, **options)

    def group(self, g, **options):
        out = original_group(self, g, **options)
        if not any(ref() is out for ref in loaded):
            loaded.append(weakref.ref(out))
        return out

    monkeypatch.setattr(domains._Traces, "_prepare", prepare)
    monkeypatch.setattr(domains._Traces, "group", group)
    with caplog.at_level(logging.INFO, logger="astro3s.correlation"):
        find_domains(movie, soma, processes, radius=14.0, n_background=150, border=2, device="cpu",
                     chunk_frames=7, memory_mb=1.2)
    assert " groups: " in caplog.text
    assert len(alive_at_load) >= 4  # the threshold search's groups, then the domain search's
    assert alive_at_load == [0] * len(alive_at_load)


def test_groups_read_from_frames_in_memory_get_half_the_budget(screened):
    # the frames of a movie held in memory take memory the trace budget does not count: spilled traces
    # read from them are grouped under half the budget; traces that fit are kept whole either way
    movie, soma, processes, _ = synthetic_fov(seed=2, n_frames=300)
    params = domains.CorrelationParams(radius=14.0, n_background=150, border=2, device="cpu", memory_mb=3.0)
    pixels = domains.pixel_sets(soma, processes, params)  # 1763 pixels; the budget holds 1497 traces
    from_file = domains._plan(pixels, 300, params)
    from_frames = domains._plan(pixels, 300, params, from_frames=True)
    assert from_file.spill and from_frames.spill
    assert from_frames.max_rows == from_file.max_rows // 2
    assert len(from_file.groups) == 2 and len(from_frames.groups) == 3
    roomy = domains.CorrelationParams(radius=14.0, n_background=150, border=2, device="cpu", memory_mb=256)
    whole = domains._plan(pixels, 300, roomy, from_frames=True)
    assert not whole.spill and whole.max_rows == domains._plan(pixels, 300, roomy).max_rows
