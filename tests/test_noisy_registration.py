"""Frames too noisy to register one by one (astro3s.preprocess.streaming._registration_for_noise).

A frame whose structure noise hides has its correlation peak anywhere in the
search window: a 172 x 298 px preset movie at 1.4 Hz was "corrected" by shifts
of +-44 px whose truth was +-5 px. The shifts of consecutive frames tell: real
motion moves a few px between two frames, noise jumps across the window.
"""

from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage

from astro3s.preprocess import PreprocessParams, preprocess
from astro3s.preprocess.motion import (correct_frames, frame_shifts_from_bins, isolated_shift_outliers,
                                       shift_jump_limit, shifts_consistent)

SIZE = 96
PARAMS = dict(reference_frames=64, tile_size=32, tile_step=16, filter_box=24, crop_size=34, soma_area_range=(20, 80),
              line_correction=False)


def drifting_movie(n_frames: int, *, noise: float, structure: float = 30.0, seed: int = 0
                   ) -> tuple[np.ndarray, np.ndarray]:
    """A textured image drifting slowly (+-4 px, Fourier shift) under Gaussian noise of SD ``noise``; float32."""
    rng = np.random.default_rng(seed)
    image = ndimage.gaussian_filter(rng.normal(size=(SIZE, SIZE)), 2.5)
    image = image / image.std() * structure + 200
    time = np.arange(n_frames)
    shifts = np.stack([4 * np.sin(2 * np.pi * time / 160), 3 * np.cos(2 * np.pi * time / 110)], 1).astype(np.float32)
    spectrum = np.fft.fft2(image)
    movie = np.stack([np.fft.ifft2(ndimage.fourier_shift(spectrum, d)).real for d in shifts])
    movie += rng.normal(scale=noise, size=movie.shape)
    return movie.astype(np.float32), shifts


def _errors(found: np.ndarray, truth: np.ndarray) -> np.ndarray:
    d = found - truth
    d -= np.median(d, axis=0)  # the reference's own position is arbitrary
    return np.hypot(*d.T)


def test_shift_jump_limit_and_consistency():
    assert shift_jump_limit(10) == 4.0  # small FOVs: the floor
    assert shift_jump_limit(100) == pytest.approx(10.0)
    rng = np.random.default_rng(1)
    walk = np.cumsum(rng.normal(scale=0.5, size=(33, 2)), axis=0)
    ok, jump = shifts_consistent(walk[:-1], walk[1:], max_shift=40)
    assert ok and jump < 2
    noise = rng.uniform(-40, 40, size=(64, 2))
    ok, jump = shifts_consistent(noise[:32], noise[32:], max_shift=40)
    assert not ok and jump > 20
    assert shifts_consistent(np.zeros((0, 2)), np.zeros((0, 2)), max_shift=40) == (True, 0.0)


def test_frame_shifts_from_bins_interpolates_between_bin_times():
    bins = np.array([[0.0, 0.0], [4.0, -4.0], [8.0, -8.0]])
    shifts = frame_shifts_from_bins(bins, 14, 4)  # 3 bins of 4 frames, the last 2 frames in none
    assert shifts.shape == (14, 2) and shifts.dtype == np.float32
    # bin j's time is the mean of its frames, 4 j + 1.5: one px per frame in between, held at the ends
    np.testing.assert_allclose(shifts[:, 0], np.clip(np.arange(14) - 1.5, 0, 8), atol=1e-6)
    np.testing.assert_allclose(shifts[:, 1], -shifts[:, 0])
    with pytest.raises(ValueError, match="3 .at least 1. expected"):
        frame_shifts_from_bins(bins[:2], 14, 4)


def test_clean_movie_is_registered_frame_by_frame_as_before():
    movie, truth = drifting_movie(120, noise=2.0)
    on = preprocess(movie, PreprocessParams(**PARAMS), progress=False)
    off = preprocess(movie, PreprocessParams(**PARAMS, register_noisy_frames=False), progress=False)
    assert on.details["motion_bin_frames"] == 1 and on.details["motion_jump_px"] < 1
    assert "motion_bin_frames" not in off.details
    np.testing.assert_array_equal(on.shifts, off.shifts)  # the check changes nothing here
    assert np.median(_errors(on.shifts, truth)) < 0.1


def test_noisy_movie_is_registered_on_means_of_frames():
    movie, truth = drifting_movie(480, noise=900.0, seed=2)
    off = preprocess(movie, PreprocessParams(**PARAMS, register_noisy_frames=False), progress=False)
    assert np.median(_errors(off.shifts, truth)) > 5  # one by one: the peaks of noise
    on = preprocess(movie, PreprocessParams(**PARAMS), progress=False)
    assert on.details["motion_bin_frames"] in (2, 4, 8, 16)
    errors = _errors(on.shifts, truth)
    assert np.median(errors) < 1.0 and errors.max() < 3.0
    assert on.corrected is not None and on.corrected.shifts is not None
    np.testing.assert_array_equal(on.corrected.shifts, on.shifts)  # the frames are corrected by those shifts


def test_pure_noise_is_left_uncorrected():
    rng = np.random.default_rng(3)
    movie = rng.normal(100, 10, size=(200, SIZE, SIZE)).astype(np.float32)
    result = preprocess(movie, PreprocessParams(**PARAMS), progress=False)
    assert result.details["motion_bin_frames"] == 0
    assert not np.any(result.shifts)
    np.testing.assert_array_equal(result.corrected.load(), movie)


def test_isolated_shift_outliers_keep_movements_of_three_frames():
    shifts = np.zeros((40, 2), np.float32)
    shifts[10:13] = (12.0, -9.0)  # a real movement, three frames long
    shifts[25] = (30.0, 5.0)  # one frame that noise hid
    shifts[30:32] = (0.0, 20.0)  # two frames
    outliers, repaired = isolated_shift_outliers(shifts, max_shift=40)
    assert np.flatnonzero(outliers).tolist() == [25, 30, 31]
    np.testing.assert_array_equal(repaired[10:13], shifts[10:13])
    assert not np.any(repaired[25]) and not np.any(repaired[30:32])
    small = shifts.copy()
    small[25] = (3.0, 0.0)  # within the jump limit (4 px): motion, left alone
    assert isolated_shift_outliers(small, max_shift=40)[0].sum() == 2
    assert not isolated_shift_outliers(np.ones((3, 2)), max_shift=40)[0].any()  # too short to judge


def test_isolated_shift_outliers_leave_a_jittering_movie_alone():
    # an awake animal imaged slowly: independent shifts of SD 1.5 px per axis leave their running median by
    # more than the 4-px floor every ~25 frames, but not by the limit that grows with the jitter itself
    rng = np.random.default_rng(4)
    shifts = rng.normal(0, 1.5, size=(5000, 2)).astype(np.float32)
    assert not isolated_shift_outliers(shifts, max_shift=30)[0].any()
    shifts[::100] += rng.choice([-1, 1], size=(50, 2)) * rng.uniform(15, 30, size=(50, 2))  # noise-hidden frames
    outliers, _ = isolated_shift_outliers(shifts, max_shift=30)
    assert outliers[::100].mean() > 0.9 and outliers.sum() <= 50


@pytest.mark.parametrize("cache", [None, False])
def test_frames_that_noise_threw_off_are_corrected_again(cache):
    # at this noise about 1 frame in 20 has its peak far away, the others register within ~1 px
    movie, truth = drifting_movie(480, noise=400.0, seed=2)
    off = preprocess(movie, PreprocessParams(**PARAMS, register_noisy_frames=False), progress=False)
    assert _errors(off.shifts, truth).max() > 20
    on = preprocess(movie, PreprocessParams(**PARAMS), progress=False, cache=cache)
    assert on.details["motion_bin_frames"] == 1 and on.details["motion_repaired_frames"] >= 5
    assert on.details["corrected_store"] == ("file" if cache is False else "memory")
    # the frames' own jitter here (~1 px from noise) sets the limit at ~6 px: what is left is within it
    assert _errors(on.shifts, truth).max() < 8
    # the stored corrected frames are those of the repaired shifts, from the raw frames
    np.testing.assert_array_equal(on.corrected.load(), correct_frames(movie, on.shifts))


def test_fast_real_motion_of_a_clear_movie_stays_frame_by_frame():
    # shifts that jump several px from frame to frame, on frames that match the reference well: real motion
    rng = np.random.default_rng(5)
    movie, _ = drifting_movie(160, noise=2.0, seed=5)
    jitter = rng.normal(0, 4.0, size=(len(movie), 2)).astype(np.float32)
    moved = correct_frames(movie, -jitter)  # each frame moved by its jitter
    on = preprocess(moved, PreprocessParams(**PARAMS), progress=False)
    off = preprocess(moved, PreprocessParams(**PARAMS, register_noisy_frames=False), progress=False)
    assert on.details["motion_jump_px"] > 4  # inconsistent by the jump test alone ...
    assert on.details["motion_bin_frames"] == 1 and on.details["motion_repaired_frames"] == 0  # ... but clear
    np.testing.assert_array_equal(on.shifts, off.shifts)
