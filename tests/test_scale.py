"""Soma scale from the image (blob scale selection) and the re-scaled enhancement of large somata."""

from __future__ import annotations

import math

import numpy as np
import pytest


def _discs(radius: float, *, n: int = 6, size: int = 256, seed: int = 0) -> np.ndarray:
    """Bright soft discs of one radius on a noisy, uneven background."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32)
    image = 0.2 + 0.05 * np.sin(xx / 40.0) + rng.normal(0, 0.03, (size, size)).astype(np.float32)
    step = size / (math.ceil(math.sqrt(n)) + 1)
    centres = [(step * (1 + i // 3), step * (1 + i % 3)) for i in range(n)]
    for cy, cx in centres:
        image += 1.0 / (1.0 + np.exp(np.minimum((np.hypot(yy - cy, xx - cx) - radius) / 0.8, 50.0)))
    return image


@pytest.mark.parametrize("radius", [3.5, 8.0, 16.0, 30.0])
def test_blob_soma_area_reads_the_disc_size(radius: float) -> None:
    from astro3s.preprocess import blob_soma_area

    area = blob_soma_area(_discs(radius, size=max(256, int(12 * radius)), n=4 if radius > 20 else 6))
    # the scales are 1.25x apart (1.56x in area): the estimate is within one step
    assert area == pytest.approx(math.pi * radius**2, rel=0.6)


def test_blob_soma_area_of_a_flat_image_is_none() -> None:
    from astro3s.preprocess import blob_soma_area

    assert blob_soma_area(np.ones((64, 64), np.float32)) is None


def test_clahe_tiles_for_scale() -> None:
    from astro3s.preprocess import clahe_tiles_for_scale

    assert clahe_tiles_for_scale((8, 8), 1.0) == (8, 8)
    assert clahe_tiles_for_scale((8, 8), 2.0) == (4, 4)
    assert clahe_tiles_for_scale((8, 8), 10.0) == (2, 2)
    assert clahe_tiles_for_scale((8, 8), 0.5) == (8, 8)  # never more tiles than the parameters'


def test_reselect_with_other_clahe_tiles_equals_a_fresh_run(simulated) -> None:
    from astro3s.io import read_movie
    from astro3s.preprocess import PreprocessParams, preprocess, reselect_candidates

    folder = simulated("tiny", 3)
    params = PreprocessParams(soma_area_range=(20, 120))
    other = params.replace(clahe_tiles=(4, 4), soma_area_range=(30, 200))
    with read_movie(folder / f"{folder.name}.tif") as movie:
        again = reselect_candidates(preprocess(movie, params, progress=False), other)
        fresh = preprocess(movie, other, progress=False)
    np.testing.assert_array_equal(again.enhanced, fresh.enhanced)
    np.testing.assert_array_equal(again.candidates, fresh.candidates)
    np.testing.assert_array_equal(again.crops, fresh.crops)
    # without the median image (a pre-processing loaded from a file) the enhancement cannot be redone
    import dataclasses

    with pytest.raises(ValueError, match="clahe_tiles"):
        reselect_candidates(dataclasses.replace(fresh, median_image=None), params)


def test_coarse_scale_acts_on_large_somata_only(simulated) -> None:
    from astro3s.inference.segment import coarse_soma_scale
    from astro3s.io import read_movie
    from astro3s.preprocess import PreprocessParams, preprocess

    params = PreprocessParams(soma_area_range=(89, 345))
    big = simulated("d2_like", 1, overview=False, height=192, width=192, n_frames=60, n_cells=[1, 2],
                    n_vessels=0, neuron_density=0, defocus_density=0, blob_density=0)
    with read_movie(big / f"{big.name}.tif") as movie:
        pre = preprocess(movie, params, progress=False)
    scaled, info = coarse_soma_scale(pre)
    assert info["coarse_scale"] >= 2.0 and info["blob_area"] > 700
    assert tuple(scaled.params.clahe_tiles) == tuple(info["clahe_tiles"]) and info["clahe_tiles"][0] < 8
    assert scaled.params.soma_area_range[0] == pytest.approx(89 * info["coarse_scale"] ** 2, rel=0.01)
    assert not np.array_equal(scaled.enhanced, pre.enhanced)

    d1 = simulated("d1_like", 2, overview=False, n_frames=60)
    with read_movie(d1 / f"{d1.name}.tif") as movie:
        pre = preprocess(movie, params, progress=False)
    same, info = coarse_soma_scale(pre)
    assert same is pre and info["coarse_scale"] == 1.0 and info["blob_area"] < 4 * math.sqrt(89 * 345)
