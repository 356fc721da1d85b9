"""Candidates at median-image blobs the activity search left uncovered (astro3s.preprocess.candidates)."""

from __future__ import annotations

import numpy as np
import pytest

from astro3s.errors import ConfigError
from astro3s.preprocess import PreprocessParams
from astro3s.preprocess.candidates import blob_candidates

AREAS = (89.0, 345.0)  # soma radius at the range's centre ~7.5 px
GRID = [(24 + 40 * i, 24 + 40 * j) for i in range(3) for j in range(3)]  # 9 somata, 40 px apart


def _median(brightness: list[float], *, size: int = 128, radius: float = 8.0, seed: int = 0) -> np.ndarray:
    """Median image: soft discs of the given brightness on a noisy background of 1."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:size, :size].astype(np.float32)
    image = 1.0 + rng.normal(0, 0.05, (size, size)).astype(np.float32)
    for (cy, cx), value in zip(GRID, brightness, strict=False):
        image += value / (1.0 + np.exp(np.minimum((np.hypot(yy - cy, xx - cx) - radius) / 0.8, 50.0)))
    return image


def _labelled(indices: list[int], *, size: int = 128, radius: int = 6) -> np.ndarray:
    """Activity-search labels: a disc on each listed soma."""
    labels = np.zeros((size, size), np.int32)
    yy, xx = np.mgrid[:size, :size]
    for k, i in enumerate(indices, 1):
        cy, cx = GRID[i]
        labels[(yy - cy) ** 2 + (xx - cx) ** 2 <= radius**2] = k
    return labels


def _covered(labels: np.ndarray) -> set[int]:
    return {i for i, (cy, cx) in enumerate(GRID) if labels[cy, cx] > 0}


def test_visible_somata_without_a_candidate_become_candidates() -> None:
    median = _median([1.0] * 9)
    found = _labelled([0, 4, 8, 2, 6])
    labels, added = blob_candidates(median, found, soma_area_range=AREAS)
    assert added == 4 and _covered(labels) == set(range(9))
    np.testing.assert_array_equal(labels[found > 0], found[found > 0])  # the activity search's own kept
    assert labels.max() == 9 and labels.dtype == found.dtype
    # each new candidate is one disc of about the smallest soma area, on its soma
    areas = np.bincount(labels.ravel())[6:]
    assert np.all(np.abs(areas - AREAS[0]) < 0.3 * AREAS[0])


def test_at_most_as_many_blobs_as_activity_candidates_strongest_first() -> None:
    median = _median([0.9, 0.8, 0.7, 0.65, 1.0, 0.6, 0.55, 0.75, 1.0])
    labels, added = blob_candidates(median, _labelled([4, 8]), soma_area_range=AREAS)
    assert added == 2 and _covered(labels) == {4, 8, 0, 1}
    _, added = blob_candidates(median, _labelled([4, 8]), soma_area_range=AREAS, max_added=1)
    assert added == 1


def test_faint_blobs_and_blank_searches_add_nothing() -> None:
    # blobs at a tenth of the candidates' response stay out (min_response 0.5)
    median = _median([1.0, 0.1, 0.1, 0.1, 1.0, 0.1, 0.1, 0.1, 1.0])
    labels, added = blob_candidates(median, _labelled([0, 4, 8]), soma_area_range=AREAS)
    assert added == 0 and _covered(labels) == {0, 4, 8}
    # no activity candidate: no reference response, nothing from the image alone
    labels, added = blob_candidates(_median([1.0] * 9), np.zeros((128, 128), np.int32), soma_area_range=AREAS)
    assert added == 0 and labels.max() == 0


def test_median_blob_response_is_validated_and_can_be_switched_off() -> None:
    assert PreprocessParams().median_blob_response == pytest.approx(0.5)
    assert PreprocessParams(median_blob_response=None).median_blob_response is None
    with pytest.raises(ConfigError, match="median_blob_response"):
        PreprocessParams(median_blob_response=-1.0)


def test_preprocess_reports_the_blobs_and_reselect_can_drop_them(simulated) -> None:
    from astro3s.io import read_movie
    from astro3s.preprocess import preprocess, reselect_candidates

    folder = simulated("tiny", 3)
    # a low bar, so that this small FOV gets blob candidates at all
    params = PreprocessParams(soma_area_range=(20, 120), median_blob_response=0.1)
    with read_movie(folder / f"{folder.name}.tif") as movie:
        pre = preprocess(movie, params, progress=False)
    added = pre.details["candidate_search"]["median_blobs"]
    assert added > 0
    off = reselect_candidates(pre, params.replace(median_blob_response=None))
    assert "median_blobs" not in off.details["candidate_search"]
    assert int(pre.candidates.max()) == int(off.candidates.max()) + added
    assert len(pre.crop_boxes) == len(off.crop_boxes) + added
