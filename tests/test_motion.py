"""The public motion-correction steps of astro3s.preprocess.motion, and that the pipeline uses them."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage

from astro3s.preprocess import PreprocessParams, preprocess
from astro3s.preprocess._backend import rfft2
from astro3s.preprocess.motion import (CorrectedMovie, as_movie, bandpass_filter, build_reference, correct_frames,
                                       estimate_shifts, fourier_shift, register_frames, register_spectra,
                                       spectral_energy)
from astro3s.preprocess.streaming import even_subsample


def moving_movie(n_frames: int = 40, size: int = 64, *, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """A textured image moved by known sub-pixel shifts (Fourier shift), with a little noise; float32."""
    rng = np.random.default_rng(seed)
    image = ndimage.gaussian_filter(rng.normal(size=(size, size)), 2) * 30 + 100
    shifts = rng.normal(size=(n_frames, 2)).astype(np.float32)
    spectrum = np.fft.fft2(image)
    movie = np.stack([np.fft.ifft2(ndimage.fourier_shift(spectrum, d)).real for d in shifts])
    movie += rng.normal(scale=0.5, size=movie.shape)
    return movie.astype(np.float32), shifts


@pytest.fixture(scope="module")
def moving():
    return moving_movie()


def test_bandpass_filter_is_cached_and_read_only():
    band = bandpass_filter((32, 48), (1.0, 8.0))
    assert band.shape == (32, 25) and band.dtype == np.float32
    assert bandpass_filter((32, 48), (1, 8)) is band
    assert not band.flags.writeable
    assert band[0, 0] == 0  # the high-pass removes the mean


def test_fourier_shift_in_place_and_integer_roll():
    rng = np.random.default_rng(0)
    frames = rng.random((3, 16, 20)).astype(np.float32)
    shifts = np.array([[2, -3], [0, 1], [-1, 0]], np.float32)
    spectra = rfft2(frames)
    shifted = fourier_shift(spectra, shifts, (16, 20))
    assert shifted is not spectra
    in_place = spectra.copy()
    assert fourier_shift(in_place, shifts, (16, 20), out=in_place) is in_place
    np.testing.assert_array_equal(in_place, shifted)
    # an integer shift is a circular roll by -shift
    back = np.fft.irfft2(shifted, s=(16, 20))
    for frame, moved, (dy, dx) in zip(frames, back, shifts.astype(int)):
        np.testing.assert_allclose(moved, np.roll(frame, (-dy, -dx), axis=(0, 1)), atol=1e-5)


def test_register_frames_recovers_shifts_and_corrects(moving):
    movie, true = moving
    reference, spectrum = build_reference(movie, stable_fraction=1.0, max_shift=8)
    shifts, corrected = register_frames(movie, spectrum, max_shift=8)
    error = shifts - true
    error -= np.median(error, axis=0)  # the reference's own position is arbitrary
    assert np.sqrt((error**2).mean()) < 0.1
    assert shifts.dtype == np.float32 and shifts.shape == (len(movie), 2)
    assert corrected.dtype == np.float32 and corrected.shape == movie.shape
    np.testing.assert_allclose(corrected, correct_frames(movie, shifts), rtol=0, atol=1e-3)
    only, none = register_frames(movie, spectrum, max_shift=8, correct=False)
    np.testing.assert_array_equal(only, shifts)
    assert none is None
    # the reference spectrum is the band-passed spectrum of the reference image
    np.testing.assert_allclose(spectrum, rfft2(reference) * bandpass_filter(reference.shape, (1.0, 8.0)),
                               rtol=0, atol=1e-3 * np.abs(spectrum).max())


def test_build_reference_reads_lazy_samples_block_by_block(moving):
    movie, _ = moving
    reads = []

    class Lazy:
        shape = movie.shape

        def __getitem__(self, key):
            reads.append(key)
            return movie[key].astype(np.uint16)

    kwargs = dict(max_shift=8, block_bytes=10 * 8 * 64 * 33)  # 10 frames of spectra a block
    lazy = build_reference(Lazy(), **kwargs)
    eager = build_reference(movie.astype(np.uint16), **kwargs)
    np.testing.assert_array_equal(lazy[0], eager[0])
    np.testing.assert_array_equal(lazy[1], eager[1])
    assert reads == [slice(a, a + 10) for a in range(0, len(movie), 10)]


def test_estimate_shifts_matches_register_frames_in_any_chunks(moving):
    movie, _ = moving
    _, spectrum = build_reference(movie, max_shift=8)
    whole, _ = register_frames(movie, spectrum, max_shift=8, correct=False)
    for chunk in (7, 64):
        np.testing.assert_array_equal(estimate_shifts(movie, spectrum, max_shift=8, chunk_frames=chunk), whole)


def test_pipeline_uses_the_public_steps(moving):
    """preprocess's reference and shifts are build_reference's and register_frames' (bit for bit)."""
    movie, _ = moving
    params = PreprocessParams(reference_frames=25, tile_size=32, tile_step=16, filter_box=24, crop_size=34,
                              soma_area_range=(20, 80))
    result = preprocess(movie, params, progress=False)
    max_shift = params.max_shift_fraction * 64
    sample = movie[even_subsample(len(movie), params.reference_frames)]
    reference, spectrum = build_reference(sample, bandpass_sigmas=params.bandpass_sigmas,
                                          stable_fraction=params.reference_stable_fraction,
                                          upsample_factor=params.upsample_factor, max_shift=max_shift)
    np.testing.assert_array_equal(result.reference, reference)
    shifts = estimate_shifts(movie, spectrum, bandpass_sigmas=params.bandpass_sigmas,
                             upsample_factor=params.upsample_factor, max_shift=max_shift)
    np.testing.assert_array_equal(result.shifts, shifts)
    np.testing.assert_array_equal(result.corrected.load(), CorrectedMovie(movie, shifts).load())


def test_as_movie_passes_movies_through(moving):
    movie, _ = moving
    wrapped = as_movie(movie)
    assert as_movie(wrapped) is wrapped and tuple(wrapped.shape) == movie.shape
    corrected = CorrectedMovie(wrapped, np.zeros((len(movie), 2), np.float32))
    assert as_movie(corrected) is corrected
    np.testing.assert_array_equal(corrected[3], movie[3])


def test_known_frame_energies_give_the_same_registration(moving):
    movie, _ = moving
    spectra = rfft2(movie) * bandpass_filter((64, 64), (1.0, 8.0))
    template = spectra.mean(axis=0)
    energies = spectral_energy(spectra, (64, 64))
    assert energies.dtype == np.float32 and energies.shape == (len(movie),)
    plain = register_spectra(spectra, template, (64, 64), max_shift=8)
    known = register_spectra(spectra, template, (64, 64), max_shift=8, frame_energies=energies)
    np.testing.assert_array_equal(plain[0], known[0])
    np.testing.assert_array_equal(plain[1], known[1])
    assert np.all(plain[1] <= 1.0 + 1e-6)
