"""Candidates of a movie too noisy for the activity search's thresholds (PreprocessParams.noisy_candidates).

The search thresholds the activity map at fractions of T (0.6 T down to 0.42 T,
0.30 T in the crowded fallback). Noise pulls every pixel's count towards the
tile percentile's base rate (0.2 T for the 80th), so a movie with a hundredth
of the light found no candidate at all, though its five cells were plain in
its mean image, and without a candidate the whole-FOV input is empty.
"""

from __future__ import annotations

import numpy as np
import pytest

from astro3s.preprocess import PreprocessParams, preprocess
from astro3s.preprocess.candidates import significant_candidates

SIZE = 128
CENTRES = ((30, 30), (30, 95), (95, 40), (90, 100))
PARAMS = dict(soma_area_range=(60, 240), tile_size=64, tile_step=32, filter_box=48, crop_size=58,
              line_correction=False, motion_correction=False)


def _discs(radius: float = 6.0) -> np.ndarray:
    yy, xx = np.mgrid[:SIZE, :SIZE]
    return np.any([(yy - cy) ** 2 + (xx - cx) ** 2 <= radius**2 for cy, cx in CENTRES], axis=0)


def test_significant_candidates_find_what_stands_out():
    rng = np.random.default_rng(0)
    noise = rng.normal(60, 7, size=(SIZE, SIZE))  # binomial-like counts around 0.2 T of 300 frames
    assert not significant_candidates(noise, soma_area_range=(60, 240)).any()
    assert not significant_candidates(np.full((SIZE, SIZE), 60.0), soma_area_range=(60, 240)).any()
    labels = significant_candidates(noise + 25 * _discs(), soma_area_range=(60, 240))
    assert labels.dtype == np.uint16 and labels.max() == 4
    for cy, cx in CENTRES:
        assert labels[cy, cx] > 0
    # components smaller than 0.9 A are not candidates: one hot pixel stands out, but on a few pixels only
    hot = noise.copy()
    hot[64, 64] += 400
    smoothed_peak = significant_candidates(hot, soma_area_range=(60, 240), min_area_fraction=0)
    assert smoothed_peak[64, 64] > 0 and significant_candidates(hot, soma_area_range=(60, 240)).max() == 0


def _noisy_movie(n_frames: int = 240, *, noise: float = 15.0, seed: int = 1) -> np.ndarray:
    """Four discs a little brighter at rest and active in random frames, under noise of SD ``noise``; float32."""
    rng = np.random.default_rng(seed)
    discs = _discs()
    active = rng.random((n_frames, len(CENTRES))) < 0.3
    yy, xx = np.mgrid[:SIZE, :SIZE]
    which = np.zeros((SIZE, SIZE), int) - 1
    for k, (cy, cx) in enumerate(CENTRES):
        which[(yy - cy) ** 2 + (xx - cx) ** 2 <= 36] = k
    signal = np.where(discs[None], 3.0 + 6.0 * active[:, np.clip(which, 0, None)], 0.0)
    return (100 + signal + rng.normal(0, noise, size=(n_frames, SIZE, SIZE))).astype(np.float32)


@pytest.fixture(scope="module")
def noisy():
    movie = _noisy_movie()
    return (movie, preprocess(movie, PreprocessParams(**PARAMS), progress=False),
            preprocess(movie, PreprocessParams(**PARAMS, noisy_candidates=False), progress=False))


def test_noisy_movie_gets_candidates_where_its_activity_stands_out(noisy):
    _, on, off = noisy
    assert off.details["candidate_search"]["found"] == 0 and len(off.crop_boxes) == 0  # the search alone
    assert not off.fov_map.any()  # ... leaves the network nothing to look at
    search = on.details["candidate_search"]
    assert search["found"] == 0 and search["significant"] == 4
    assert len(on.crop_boxes) == 4
    for cy, cx in CENTRES:
        assert on.candidates[cy, cx] > 0
    assert on.fov_map.any()


def test_noisy_movie_network_image_is_smoothed(noisy):
    movie, on, off = noisy
    from astro3s.preprocess.enhance import enhance_network_image

    np.testing.assert_array_equal(on.median_image, off.median_image)
    expected = enhance_network_image(on.median_image, None, PreprocessParams(**PARAMS, enhance_sigma=1.0))
    np.testing.assert_array_equal(on.enhanced, expected)
    assert not np.array_equal(on.enhanced, off.enhanced)


def test_a_clear_movie_is_searched_as_before():
    movie = _noisy_movie(noise=1.0)  # the same cells, clear
    on = preprocess(movie, PreprocessParams(**PARAMS), progress=False)
    off = preprocess(movie, PreprocessParams(**PARAMS, noisy_candidates=False), progress=False)
    assert on.details["candidate_search"]["found"] > 0 and "significant" not in on.details["candidate_search"]
    np.testing.assert_array_equal(on.candidates, off.candidates)
    np.testing.assert_array_equal(on.enhanced, off.enhanced)
