"""The crowded-FOV fallback of the soma-candidate search (astro3s.preprocess.candidates)."""

from __future__ import annotations

import numpy as np
import pytest

from astro3s.preprocess import PreprocessParams, find_candidates
from astro3s.preprocess.candidates import fallback_schedule
from astro3s.errors import ConfigError

T = 100


def _discs(centres: list[tuple[int, int]], value: float, *, size: int = 128, radius: int = 6) -> np.ndarray:
    """Activity map (frames) with one disc of ``value`` frames per centre on a background of 5."""
    activity = np.full((size, size), 5.0, np.float32)
    yy, xx = np.mgrid[:size, :size]
    for cy, cx in centres:
        activity[(yy - cy) ** 2 + (xx - cx) ** 2 <= radius**2] = value
    return activity


GRID = [(20 + 30 * i, 20 + 30 * j) for i in range(4) for j in range(4)]


def test_fallback_schedule_steps_below_the_floor():
    np.testing.assert_allclose(fallback_schedule(T, floor=0.42, step=0.045, fallback_floor=0.30), [37.5, 33.0])
    assert fallback_schedule(T, floor=0.42, step=0.045, fallback_floor=0.40).size == 0


def test_saturated_map_finds_somata_only_with_the_fallback():
    # 16 somata active in 34 % of frames: below the published floor (0.42 T) and extension (0.35 T),
    # above the fallback's 0.33 T
    activity = _discs(GRID, 34.0)
    published, details = find_candidates(activity, T, soma_area_range=(89, 345), fallback_floor=None)
    assert published.max() == 0 and not details["converged"] and not details["fallback"]
    crowded, details = find_candidates(activity, T, soma_area_range=(89, 345), fallback_floor=0.30)
    assert crowded.max() == 16 and details["converged"] and details["fallback"]
    assert details["threshold"] == pytest.approx(33.0)


def test_fallback_stops_at_its_floor():
    activity = _discs(GRID, 28.0)  # below 0.30 T: still nothing
    labels, details = find_candidates(activity, T, soma_area_range=(89, 345), fallback_floor=0.30)
    assert labels.max() == 0 and not details["fallback"]


def test_sparse_fov_keeps_the_published_result():
    # two bright somata and one at 0.36 T: fewer than the expected 4 at any threshold, so the
    # published search's answer (the two bright ones) stands instead of a lower threshold's
    activity = _discs([(30, 30), (30, 90)], 90.0) + _discs([(90, 60)], 36.0) - 5.0
    with_fallback, details = find_candidates(activity, T, soma_area_range=(89, 345), extension_threshold=None,
                                             fallback_floor=0.30)
    published, _ = find_candidates(activity, T, soma_area_range=(89, 345), extension_threshold=None,
                                   fallback_floor=None)
    np.testing.assert_array_equal(with_fallback, published)
    assert published.max() == 2 and not details["fallback"]


def test_converged_search_is_unchanged_by_the_fallback():
    activity = _discs(GRID, 80.0)
    a, da = find_candidates(activity, T, fallback_floor=0.30)
    b, db = find_candidates(activity, T, fallback_floor=None)
    np.testing.assert_array_equal(a, b)
    assert da["threshold"] == db["threshold"] == pytest.approx(60.0) and not da["fallback"]


def test_extension_moves_down_with_the_fallback():
    # 16 somata at 0.36 T and one faint one at 0.28 T: the fallback settles at 0.33 T and the
    # extension (0.35 T published, 0.07 T below the floor) at 0.26 T adds the faint one
    activity = np.maximum(_discs(GRID, 36.0, size=160), _discs([(145, 145)], 28.0, size=160, radius=7))
    labels, details = find_candidates(activity, T, soma_area_range=(89, 345), extension_threshold=0.35,
                                      fallback_floor=0.30)
    assert details["fallback"] and details["added"] == 1 and labels.max() == 17


def test_fallback_floor_is_checked():
    assert PreprocessParams().fallback_floor == pytest.approx(0.30)
    assert PreprocessParams(fallback_floor=None).fallback_floor is None
    with pytest.raises(ConfigError, match="fallback_floor"):
        PreprocessParams(fallback_floor=0.5)
