"""The pre-processing's memory-saving paths give the same bits as the plain computations they replace.

Fresh memory is slow to touch on the development machine (page faults, up to
~8 ms per MB on its virtual machine), so the streamed pass reads chunks into
the cache of the corrected movie (or two reused buffers), the reference's
spectra use the cache's pages and are summed group by group, CLAHE evaluates
its tables sparsely and counts are summed as bytes. Each must leave the
results unchanged, bit for bit.
"""

from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage

from astro3s.io import Movie
from astro3s.preprocess import PreprocessParams, clahe, preprocess
from astro3s.preprocess._backend import count_true
from astro3s.preprocess.enhance import _clahe_dense, _clahe_sparse
from astro3s.preprocess.motion import CorrectedMovie, _add_frames, build_reference
from astro3s.preprocess.streaming import read_ahead, read_chunks


def _moving(n_frames: int = 50, size: int = 48, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    image = ndimage.gaussian_filter(rng.normal(size=(size, size)), 2) * 30 + 100
    spectrum = np.fft.fft2(image)
    shifts = rng.normal(size=(n_frames, 2))
    movie = np.stack([np.fft.ifft2(ndimage.fourier_shift(spectrum, d)).real for d in shifts])
    return rng.poisson(np.clip(movie, 0, None)).astype(np.uint16)


@pytest.mark.parametrize("clip, tiles, nbins, shape", [
    (0.5, (8, 8), 65536, (96, 96)), (0.0, (8, 8), 65536, (96, 96)), (2.0, (4, 4), 65536, (64, 80)),
    (0.5, (8, 8), 256, (96, 96)), (0.5, (8, 8), 65536, (90, 77)), (40.0, (3, 5), 1024, (61, 64))])
def test_sparse_clahe_equals_dense_tables(clip, tiles, nbins, shape):
    rng = np.random.default_rng(1)
    smooth = ndimage.gaussian_filter(rng.random(shape), 3)
    for image in (smooth / smooth.max(), rng.random(shape) ** 4, np.zeros(shape), np.ones(shape)):
        image = image.astype(np.float32)
        expected = _clahe_dense(image, clip_limit=clip, tiles=tiles, nbins=nbins)
        np.testing.assert_array_equal(_clahe_sparse(image, clip_limit=clip, tiles=tiles, nbins=nbins), expected)
        np.testing.assert_array_equal(clahe(image, clip_limit=clip, tiles=tiles, nbins=nbins), expected)


@pytest.mark.parametrize("n", [1, 16, 255, 256, 600])
def test_count_true_is_the_integer_sum(n):
    mask = np.random.default_rng(n).random((n, 7, 5)) < 0.6
    counts = count_true(mask)
    np.testing.assert_array_equal(counts.astype(np.int64), mask.sum(axis=0))
    assert counts.dtype == (np.uint8 if n <= 255 else np.uint16)


def test_groups_add_up_to_the_block_sum_bit_for_bit():
    rng = np.random.default_rng(2)
    frames = (rng.normal(size=(37, 16, 9)) + 1j * rng.normal(size=(37, 16, 9))).astype(np.complex64) * 1e3
    for group in (1, 4, 10, 37):
        total = None
        for g in range(0, len(frames), group):
            total = _add_frames(total, frames[g:g + group])
        np.testing.assert_array_equal(total, frames.sum(axis=0))


def _reference_with_banded_copy(sample: np.ndarray, block_frames: int, max_shift: float):
    # the former reference: a sample-sized band-passed copy and block-sized sums (no groups, no scratch)
    from astro3s.preprocess._backend import irfft2, rfft2
    from astro3s.preprocess.motion import bandpass_filter, fourier_shift, register_spectra, spectral_energy

    shape = sample.shape[1:]
    spectra = rfft2(sample.astype(np.float32))
    band = bandpass_filter(shape, (1.0, 8.0))
    banded = spectra * band
    n = len(spectra)
    template = np.zeros(spectra.shape[1:], np.complex64)
    for a in range(0, n, block_frames):
        template += banded[a:a + block_frames].sum(axis=0)
    template = template / n
    n_keep = max(1, int(round(0.5 * n)))
    energies = spectral_energy(banded, shape)
    for _ in range(2):
        shifts, similarity = register_spectra(banded, template, shape, max_shift=max_shift, frame_energies=energies)
        keep = np.sort(np.argsort(-similarity, kind="stable")[:n_keep])
        aligned = np.zeros(spectra.shape[1:], np.complex64)
        for a in range(0, n_keep, block_frames):
            k = keep[a:a + block_frames]
            picked = spectra[k]
            aligned += fourier_shift(picked, shifts[k], shape, out=picked).sum(axis=0)
        aligned = aligned / n_keep
        template = aligned * band
    return irfft2(aligned, shape).astype(np.float32), template.astype(np.complex64)


@pytest.mark.parametrize("block_frames", [7, 64])
def test_reference_in_groups_and_scratch_equals_the_plain_one(block_frames):
    sample = _moving(41, 40).astype(np.float32)
    kwargs = dict(max_shift=8.0, block_bytes=block_frames * 8 * 40 * 21)
    expected = _reference_with_banded_copy(sample, block_frames, 8.0)
    plain = build_reference(sample, **kwargs)
    scratch = np.full(41 * 40 * 42, np.nan, np.float32)  # 8 S H (W // 2 + 1) bytes
    in_scratch = build_reference(sample, scratch=scratch, **kwargs)
    small = np.zeros(41 * 40 * 40, np.float32)  # a T = S movie's cache is too small: not used
    for got in (plain, in_scratch, build_reference(sample, scratch=small, **kwargs)):
        np.testing.assert_array_equal(got[0], expected[0])
        np.testing.assert_array_equal(got[1], expected[1])
    assert not np.isnan(scratch[:100]).any()  # the spectra were written there


@pytest.mark.parametrize("into, backend", [(False, "array"), (True, "array"), (False, "hdf5"), (True, "zarr")])
def test_read_chunks_equals_movie_chunks(into, backend):
    raw = _moving(23, 16)
    movie = Movie.from_array(raw)
    movie.backend = backend  # readers other than arrays and memory maps are read a chunk at a time
    cache = np.empty(raw.shape, np.float32) if into else None
    got = [(t0, block.copy()) for t0, block in read_ahead(read_chunks(movie, 5, into=cache))]
    expected = list(movie.chunks(5, dtype=np.float32))
    assert [t0 for t0, _ in got] == [t0 for t0, _ in expected]
    for (_, a), (_, b) in zip(got, expected, strict=True):
        np.testing.assert_array_equal(a, b)
    if into:
        np.testing.assert_array_equal(cache, raw.astype(np.float32))


@pytest.mark.parametrize("cache, motion", [(True, True), (False, True), (True, False)])
def test_cached_movie_is_corrected_in_place(cache, motion, tmp_path):
    # the chunks are read into the cache (where the reference's spectra were) and corrected there
    raw = _moving(60, 48)
    movie = Movie.from_array(raw)
    params = PreprocessParams(soma_area_range=(20, 80), tile_size=24, tile_step=12, filter_box=20, crop_size=32,
                              reference_frames=40, chunk_frames=16, motion_correction=motion)
    pre = preprocess(movie, params, progress=False, cache=cache, scratch_dir=tmp_path)
    on_read = CorrectedMovie(movie, pre.shifts).load()
    np.testing.assert_array_equal(pre.corrected.load(), on_read)
    assert (pre.corrected.cache is not None) == cache
    pre.corrected.close()
