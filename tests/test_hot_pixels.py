"""A detector's hot or stuck pixels in the summary images (PreprocessParams.fill_hot_pixels).

Held-out `giant_0` with 40 pixels stuck at the 16-bit top gave no cell: those
pixels were the brightest points of its median image. They are single pixels
far above any structure of the image (the PSF spreads every real point over pixels).
"""

from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage

from astro3s.preprocess import PreprocessParams, preprocess
from astro3s.preprocess.enhance import fill_pixels, isolated_spikes

PARAMS = dict(soma_area_range=(60, 240), tile_size=64, tile_step=32, filter_box=48, crop_size=58,
              line_correction=False, motion_correction=False)
HOT = ((10, 12), (40, 100), (77, 77), (120, 5), (64, 127))


def _tissue(size: int = 128, seed: int = 0) -> np.ndarray:
    """A smooth image with bright blurred somata (the PSF spreads every point), float32."""
    rng = np.random.default_rng(seed)
    image = ndimage.gaussian_filter(rng.normal(size=(size, size)), 2) * 20 + 100
    yy, xx = np.mgrid[:size, :size]
    for cy, cx in ((30, 30), (90, 60), (60, 100)):
        image += 300 * np.exp(-((yy - cy) ** 2 + (xx - cx) ** 2) / (2 * 5.0**2))
    return (image + rng.normal(0, 2, size=image.shape)).astype(np.float32)


def test_isolated_spikes_find_stuck_pixels_not_tissue():
    image = _tissue()
    assert not isolated_spikes(image).any()  # bright somata are wider than a pixel
    hot = image.copy()
    for y, x in HOT:
        hot[y, x] = 65535
    spikes = isolated_spikes(hot)
    assert sorted(zip(*np.nonzero(spikes))) == sorted(HOT)
    assert not isolated_spikes(np.full((32, 32), 7.0)).any()
    # a sharp speck a little brighter than a dim background is tissue, not a defect (below the brightest cell)
    speck = image.copy()
    speck[100, 20] += 250
    assert not isolated_spikes(speck).any()
    assert not isolated_spikes(np.zeros((8, 8))).any()


def test_fill_pixels_takes_the_neighbours_median():
    image = np.arange(25, dtype=np.float32).reshape(5, 5)
    mask = np.zeros((5, 5), bool)
    mask[2, 2] = mask[2, 3] = mask[0, 0] = True
    out = fill_pixels(image, mask)
    assert out is not image and out.dtype == image.dtype
    # (2, 2): the median of its neighbours but the flagged (2, 3): 6 7 8 11 16 17 18 -> 11
    assert out[2, 2] == 11 and out[0, 0] == np.median([1, 5, 6, 1, 5, 6, 1, 5])  # edges clip to the border
    assert fill_pixels(image, np.zeros((5, 5), bool)) is image
    surrounded = np.zeros((5, 5), bool)
    surrounded[1:4, 1:4] = True
    assert fill_pixels(image, surrounded)[2, 2] == image[2, 2]  # nothing to take it from


@pytest.mark.parametrize("fill", [True, False])
def test_pipeline_fills_hot_pixels_in_the_summary_images(fill):
    rng = np.random.default_rng(1)
    tissue = _tissue()
    movie = tissue[None] + rng.normal(0, 5, size=(60, *tissue.shape)).astype(np.float32)
    for y, x in HOT:
        movie[:, y, x] = 65535
    result = preprocess(movie, PreprocessParams(**PARAMS, fill_hot_pixels=fill), progress=False)
    ys, xs = np.array(HOT).T
    if fill:
        assert result.details["hot_pixels"] == len(HOT)
        for image in (result.median_image, result.mean_image, result.activity_map):
            assert np.all(image[ys, xs] < 1000)  # filled from the neighbours
    else:
        assert "hot_pixels" not in result.details
        assert np.all(result.mean_image[ys, xs] == 65535)
    assert np.all(result.corrected.load()[:, ys, xs] == 65535)  # the frames keep them
