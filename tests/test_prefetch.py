"""Read-ahead of the next movie of a batch (astro3s.io.prefetch)."""

from __future__ import annotations

import numpy as np

from astro3s.io.prefetch import available_memory_bytes, prefetch


def test_prefetch_reads_a_file_and_a_folder(tmp_path):
    movie = tmp_path / "movie.tif"
    movie.write_bytes(np.arange(3 << 20, dtype=np.uint8).tobytes())
    thread = prefetch(movie)
    assert thread is not None
    thread.join(timeout=30)
    assert not thread.is_alive()

    store = tmp_path / "movie.zarr"
    (store / "0").mkdir(parents=True)
    (store / "0" / "0.0.0").write_bytes(b"x" * 1000)
    thread = prefetch(store)
    assert thread is not None
    thread.join(timeout=30)
    assert not thread.is_alive()


def test_prefetch_skips_what_it_should_not_read(tmp_path):
    assert prefetch(tmp_path / "missing.tif") is None
    empty = tmp_path / "empty.tif"
    empty.write_bytes(b"")
    assert prefetch(empty) is None
    big = tmp_path / "big.tif"
    big.write_bytes(b"x" * 4096)
    assert prefetch(big, max_bytes=1024) is None  # larger than the limit: it would evict the movie in use


def test_available_memory_is_positive_or_unknown():
    available = available_memory_bytes()
    assert available is None or available > 0
