"""The local temporal-correlation image and the activity-brightened network image."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage

from astro3s.preprocess import PreprocessParams, preprocess, reselect_candidates
from astro3s.preprocess.correlation_image import (_bin_frames, activity_brightened, local_correlation_image,
                                                  temporal_bin_factor)


def _dim_active_cell_movie(seed: int = 0, *, n_frames: int = 240, fs: float = 4.0):
    """A 64 x 64 movie: one bright silent disc, one dim disc with large events, shot-like noise."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:64, :64]
    bright = ((yy - 20) ** 2 + (xx - 20) ** 2 <= 36).astype(np.float32)
    dim = ((yy - 44) ** 2 + (xx - 44) ** 2 <= 36).astype(np.float32)
    t = np.arange(n_frames) / fs
    events = np.zeros(n_frames, np.float32)
    for start in rng.uniform(0, t[-1] - 5, 8):  # eight slow events
        after = np.clip(t - start, 0, None)
        events += np.where(t >= start, 3.0 * (1 - np.exp(-after / 0.5)) * np.exp(-after / 3.0), 0)
    scene = 100.0 + 60.0 * bright[None] + 8.0 * dim[None] * (1.0 + events[:, None, None])
    movie = rng.poisson(scene).astype(np.float32)
    return movie, bright > 0, dim > 0


def test_bin_factor_follows_the_frame_rate_and_caps_the_bins() -> None:
    assert temporal_bin_factor(550, 2.15) == 4  # 2 s of frames
    assert temporal_bin_factor(300, None) == 1
    assert temporal_bin_factor(8200, 2.0) == 14  # at most MAX_BINS bins
    assert temporal_bin_factor(75, 30.0, bin_s=0.1) == 3


@pytest.mark.parametrize("factor", [1, 3, 4])
def test_binning_does_not_depend_on_the_chunks(factor: int) -> None:
    movie = np.random.default_rng(1).normal(size=(103, 9, 11)).astype(np.float32)
    expected = movie[:103 // factor * factor].reshape(-1, factor, 9, 11).mean(1)
    for size in (5, 16, 103):
        got = _bin_frames((movie[t:t + size] for t in range(0, 103, size)), 103, factor, (9, 11))
        np.testing.assert_allclose(got, expected, atol=1e-5)


def test_an_active_cell_dim_at_rest_stands_out_and_a_bright_silent_one_does_not() -> None:
    movie, bright, dim = _dim_active_cell_movie()
    corr = local_correlation_image(iter([movie[:100], movie[100:]]), len(movie), movie.shape[1:], fs=4.0)
    assert corr.shape == movie.shape[1:] and corr.dtype == np.float32
    background = ~ndimage.binary_dilation(bright | dim, iterations=4)
    assert np.median(corr[dim]) > np.percentile(corr[background], 99)
    assert np.median(corr[bright]) < np.percentile(corr[background], 90)
    # the median image shows the silent cell far more than the active one; the brightened image both
    median = np.median(movie, axis=0) - np.median(movie)
    brightened = activity_brightened(median, corr, weight=0.5)
    contrast = lambda image, mask: float(np.median(image[mask]) - np.median(image[background]))  # noqa: E731
    assert contrast(median, dim) < 0.3 * contrast(median, bright)
    assert contrast(brightened, dim) > 0.3 * contrast(brightened, bright)
    assert np.array_equal(activity_brightened(median, corr, weight=0.0), median.astype(np.float32))
    # too few bins: no correlation at all
    assert not local_correlation_image(iter([movie[:2]]), 2, movie.shape[1:], fs=None).any()


def test_a_silent_movie_is_left_as_it_is() -> None:
    rng = np.random.default_rng(2)
    movie = rng.poisson(100.0, size=(120, 32, 32)).astype(np.float32)
    corr = local_correlation_image(iter([movie]), len(movie), movie.shape[1:], fs=4.0)
    median = np.median(movie, axis=0)
    # noise alone: little above the robust noise floor, and that little scaled below the image's own level
    brightened = activity_brightened(median, corr, weight=0.5)
    assert np.abs(brightened - median).max() <= 0.5 * np.percentile(median, 99) + 1e-3


def test_preprocess_brightens_the_network_image_only_with_a_weight() -> None:
    movie, bright, dim = _dim_active_cell_movie(3)
    params = PreprocessParams(soma_area_range=(80, 160), tile_size=32, tile_step=16, filter_box=30,
                              crop_size=40, reference_frames=40, motion_correction=False)
    plain = preprocess(movie, params, progress=False)
    assert plain.correlation_image is None
    active = preprocess(movie, params.replace(activity_weight=0.5), progress=False)
    assert active.correlation_image is not None
    np.testing.assert_array_equal(active.median_image, plain.median_image)  # the rules' image is unchanged
    assert np.median(active.enhanced[dim]) > np.median(plain.enhanced[dim]) + 0.1
    # re-selection at another scale keeps the brightened image; it cannot add a weight it has no image for
    again = reselect_candidates(active, active.params.replace(clahe_clip_limit=0.6))
    assert np.median(again.enhanced[dim]) > np.median(plain.enhanced[dim]) + 0.1
    with pytest.raises(ValueError, match="activity_weight"):
        reselect_candidates(plain, plain.params.replace(activity_weight=0.5))
    with pytest.raises(Exception, match="activity_weight"):
        PreprocessParams(activity_weight=-1.0)


def test_the_preprocessing_figure_names_the_brightened_image(tmp_path, monkeypatch: pytest.MonkeyPatch) -> None:
    from matplotlib.axes import Axes

    from astro3s.preprocess.figure import plot_preprocessed

    movie, _, _ = _dim_active_cell_movie(4)
    params = PreprocessParams(soma_area_range=(80, 160), tile_size=32, tile_step=16, filter_box=30,
                              crop_size=40, reference_frames=40, motion_correction=False)
    titles: list[str] = []
    real = Axes.set_title

    def set_title(ax, label, *args, **kwargs):
        titles.append(label)
        return real(ax, label, *args, **kwargs)

    monkeypatch.setattr(Axes, "set_title", set_title)
    for weight in (0.0, 0.5):
        plot_preprocessed(preprocess(movie, params.replace(activity_weight=weight), progress=False),
                          tmp_path / f"w{weight}.png")
    enhanced = [t for t in titles if t.startswith("enhanced")]
    assert enhanced == ["enhanced (median, CLAHE, sharpen)", "enhanced (median + activity, CLAHE, sharpen)"]
