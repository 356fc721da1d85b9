"""The active image (a temporal percentile above the median) and the second network view made from it."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest


def test_temporal_percentiles_match_numpy_in_one_pass() -> None:
    from astro3s.preprocess import temporal_median, temporal_percentiles

    rng = np.random.default_rng(0)
    movie = rng.normal(size=(57, 23, 19)).astype(np.float32)
    baselines = rng.normal(size=57).astype(np.float32)
    want = np.percentile(movie - baselines[:, None, None], [50, 80, 20], axis=0)
    for block_pixels in (None, 50, 7):
        got = temporal_percentiles(movie, (50, 80, 20), baselines=baselines, block_pixels=block_pixels)
        assert got.shape == (3, 23, 19) and got.dtype == np.float32
        np.testing.assert_allclose(got, want, atol=1e-5)
        # the median of the pair is the median alone, bit for bit (the second selection reads the same values)
        np.testing.assert_array_equal(got[0], temporal_median(movie, baselines=baselines, block_pixels=block_pixels))
    np.testing.assert_allclose(temporal_percentiles(movie.astype(np.uint16), (80,))[0],
                               np.percentile(movie.astype(np.uint16), 80, axis=0), atol=1e-3)


def test_active_percentile_is_checked() -> None:
    from astro3s.errors import ConfigError
    from astro3s.preprocess import PreprocessParams

    assert PreprocessParams().active_percentile is None
    assert PreprocessParams(active_percentile=80).active_percentile == 80
    for bad in (50, 20, 101):
        with pytest.raises(ConfigError, match="active_percentile"):
            PreprocessParams(active_percentile=bad)


def test_preprocessing_keeps_the_active_image_only_when_asked(tiny_movie) -> None:
    from astro3s.io import read_movie
    from astro3s.preprocess import PreprocessParams, preprocess

    with read_movie(tiny_movie) as movie:
        plain = preprocess(movie, PreprocessParams(), progress=False)
        active = preprocess(movie, PreprocessParams(active_percentile=80), progress=False)
    assert plain.active_image is None
    assert active.active_image.shape == active.median_image.shape and active.active_image.dtype == np.float32
    np.testing.assert_array_equal(active.median_image, plain.median_image)   # the median is untouched
    np.testing.assert_array_equal(active.crops, plain.crops)
    # brighter than the median where the cells are active (their events lift the 80th percentile)
    cells = plain.candidates > 0
    assert cells.any() and np.median(active.active_image[cells] - active.median_image[cells]) > 0


def test_inference_options_ask_for_the_active_image() -> None:
    from astro3s.inference.pipeline import ACTIVE_VIEW_PERCENTILE, InferenceOptions
    from astro3s.preprocess import PreprocessParams

    on = InferenceOptions(preprocess=PreprocessParams(), active_view=True)
    assert on.preprocess.active_percentile == ACTIVE_VIEW_PERCENTILE
    kept = InferenceOptions(preprocess=PreprocessParams(active_percentile=90), active_view=True)
    assert kept.preprocess.active_percentile == 90
    default = InferenceOptions(preprocess=PreprocessParams())                 # on by default since 2026-12-07
    assert default.active_view and default.preprocess.active_percentile == ACTIVE_VIEW_PERCENTILE
    off = InferenceOptions(preprocess=PreprocessParams(), active_view=False)  # off: nothing computed
    assert not off.active_view and off.preprocess.active_percentile is None


@dataclasses.dataclass
class _Pre:
    """What the second views and the rules on their cells read of a pre-processed movie."""

    median_image: np.ndarray
    crop_boxes: np.ndarray
    crop_masks: np.ndarray
    fov_mask: np.ndarray
    params: object
    active_image: np.ndarray | None = None
    correlation_image: np.ndarray | None = None
    enhanced: np.ndarray | None = None
    crops: np.ndarray | None = None
    fov_map: np.ndarray | None = None


def _scene() -> tuple[np.ndarray, np.ndarray]:
    # four sharp discs of radius 8 in the median image (cells 1-2 found, 3-4 not), one soft blob, one speck
    yy, xx = np.mgrid[:120, :160]
    image = np.full((120, 160), 1.0, np.float32)
    soma = np.zeros((120, 160), np.int32)
    for k, (y, x) in enumerate(((30, 30), (30, 80), (90, 30), (90, 80)), start=1):
        disc = np.hypot(yy - y, xx - x) <= 8
        image[disc] = 10.0 if k <= 2 else 3.0                               # 3 and 4: dim at rest
        if k <= 2:
            soma[disc] = k
    from scipy import ndimage as ndi

    blob = np.hypot(yy - 60, xx - 130) <= 8
    image += ndi.gaussian_filter(blob.astype(np.float32) * 40.0, 6.0)       # out of focus
    return image, soma


def _view_cells(shape: tuple[int, int]) -> np.ndarray:
    # what the active view draws: cell 1 again (shifted), the two dim cells, the blurred blob, a speck
    yy, xx = np.mgrid[:shape[0], :shape[1]]
    found = np.zeros(shape, np.int32)
    for k, (y, x, r) in enumerate(((32, 31, 8), (90, 30, 8), (90, 80, 8), (60, 130, 8), (10, 140, 2)), start=1):
        found[np.hypot(yy - y, xx - x) <= r] = k
    return found


def test_the_active_view_adds_the_sharp_cells_it_alone_finds(monkeypatch: pytest.MonkeyPatch) -> None:
    from astro3s.inference import cells
    from astro3s.inference.pipeline import InferenceOptions
    from astro3s.postprocess import CombineParams
    from astro3s.postprocess.combine import _segmentation
    from astro3s.preprocess import PreprocessParams

    image, soma = _scene()
    seg = _segmentation(soma, np.zeros_like(soma), 2, CombineParams(), {"cells": 2, "cells_added": 0})
    found = _view_cells(image.shape)
    view_seg = _segmentation(found, np.zeros_like(found), 5, CombineParams(), {})
    seen = []

    def fake_segment_movie(pre, model, options, **kwargs):
        seen.append((pre, options, kwargs))
        return pre, view_seg, {}

    monkeypatch.setattr(cells, "segment_movie", fake_segment_movie)

    pre = _Pre(image, np.array([[0, 0, 96, 96]], np.int32), np.ones((1, 96, 96), bool), np.ones(image.shape, bool),
               PreprocessParams(), active_image=image * 2)
    options = InferenceOptions(preprocess=PreprocessParams(), active_view=True)
    timings: dict[str, float] = {}
    added = cells.add_active_view_cells(seg, pre, model=None, options=options, timings=timings, name="x")
    # the view was segmented at the FOV's own scale, fixed, on crops of the enhanced active image
    (view, view_options, kwargs), = seen
    assert view_options.soma_scale == "fixed" and kwargs["allow_binning"] is False
    assert view.enhanced.shape == image.shape and view.crops.shape == (1, 96, 96) and view.fov_map.shape == image.shape
    # cell 1 seen again is not added; the two dim cells are; the soft blob (blur rule) and the speck (size) go
    assert added.n_cells == 4 and added.counts["active_view_added"] == 2
    assert added.counts["cells"] == 4 and added.counts["cells_added"] == 0        # the first pass's count kept
    np.testing.assert_array_equal(added.soma == 1, soma == 1)
    assert added.soma[90, 30] == 3 and added.soma[90, 80] == 4
    assert added.soma[60, 130] == 0 and added.soma[10, 140] == 0
    assert timings["active_view_s"] >= 0
    # without an active image, or without cells to judge by, nothing is run or added
    assert cells.add_active_view_cells(seg, dataclasses.replace(pre, active_image=None), None, options) is seg
    empty = _segmentation(np.zeros_like(soma), np.zeros_like(soma), 0, CombineParams(), {"cells": 0})
    assert cells.add_active_view_cells(empty, pre, None, options) is empty
    assert len(seen) == 1


def test_segment_movie_runs_the_active_view_when_asked(tiny_movie, record_calls) -> None:
    from astro3s.inference import cells, load_inference_model
    from astro3s.io import read_movie
    from astro3s.preprocess import preprocess

    calls = record_calls(cells, "add_active_view_cells")
    model, options = load_inference_model("default", device="cpu", active_view=True)
    assert options.active_view and options.preprocess.active_percentile == 80
    with read_movie(tiny_movie) as movie:
        pre = preprocess(movie, options.preprocess, progress=False)
        _, seg, _ = cells.segment_movie(pre, model, options)
        assert len(calls) == 1 and "active_view_added" in seg.counts
        _, off, _ = cells.segment_movie(pre, model, dataclasses.replace(options, active_view=False))
    assert len(calls) == 1 and "active_view_added" not in off.counts


# --------------------------------------------------------------------------- the correlation view (tried, off)


def test_preprocessing_keeps_the_correlation_image_only_when_asked(tiny_movie) -> None:
    from astro3s.io import read_movie
    from astro3s.preprocess import PreprocessParams, preprocess

    with read_movie(tiny_movie) as movie:
        plain = preprocess(movie, PreprocessParams(), progress=False)
        kept = preprocess(movie, PreprocessParams(keep_correlation_image=True), progress=False)
    assert plain.correlation_image is None
    assert kept.correlation_image.shape == kept.median_image.shape
    np.testing.assert_array_equal(kept.enhanced, plain.enhanced)   # the network's image is untouched
    np.testing.assert_array_equal(kept.crops, plain.crops)
    cells = plain.candidates > 0  # the active cells' pixels rise and fall with their neighbours
    assert np.median(kept.correlation_image[cells]) > np.median(kept.correlation_image[~cells]) + 0.05


def test_correlation_view_brightens_active_pixels_only(tiny_movie) -> None:
    from astro3s.inference import cells, load_inference_model
    from astro3s.inference.pipeline import CORRELATION_VIEW_WEIGHT
    from astro3s.io import read_movie
    from astro3s.preprocess import preprocess

    calls = []
    # the active view (on by default) left out, so that the correlation view's pass is the only second view
    model, options = load_inference_model("default", device="cpu", correlation_view=True, active_view=False)
    assert options.correlation_view and options.preprocess.keep_correlation_image
    with read_movie(tiny_movie) as movie:
        pre = preprocess(movie, options.preprocess, progress=False)
    view = cells.correlation_view(pre, weight=CORRELATION_VIEW_WEIGHT)
    assert view.crops.shape == pre.crops.shape and view.fov_map.shape == pre.fov_map.shape
    assert cells.correlation_view(dataclasses.replace(pre, correlation_image=None), weight=0.5) is None
    # a cell dim at rest but active: as bright as the bright cell in the view, the background as it was
    yy, xx = np.mgrid[:128, :128]
    bright, dim = np.hypot(yy - 40, xx - 40) < 6, np.hypot(yy - 90, xx - 90) < 6
    rng = np.random.default_rng(0)
    median = (10 + rng.normal(0, 0.5, (128, 128)) + 20 * bright + 0.2 * dim).astype(np.float32)
    corr = (rng.normal(0.05, 0.02, (128, 128)) + 0.8 * (bright | dim)).astype(np.float32)
    synthetic = dataclasses.replace(pre, median_image=median, correlation_image=corr,
                                    crop_boxes=np.array([[0, 0, 96, 96]], np.int32),
                                    crop_masks=np.ones((1, 96, 96), bool), fov_mask=np.ones((128, 128), bool))
    seen = cells.correlation_view(synthetic, weight=CORRELATION_VIEW_WEIGHT)
    from astro3s.preprocess.enhance import enhance_network_image

    plain = enhance_network_image(median, None, pre.params)
    assert seen.enhanced[dim].mean() > plain[dim].mean() + 0.2
    background = (np.hypot(yy - 90, xx - 90) >= 20) & (np.hypot(yy - 40, xx - 40) >= 20)
    assert abs(float(np.median(seen.enhanced[background] - plain[background]))) < 0.05
    original = cells.add_view_cells

    def recorded(seg, view, *args, **kwargs):
        calls.append(kwargs["label"])
        return original(seg, view, *args, **kwargs)

    cells.add_view_cells = recorded
    try:
        _, seg, _ = cells.segment_movie(pre, model, options)
        _, off, _ = cells.segment_movie(pre, model, dataclasses.replace(options, correlation_view=False))
    finally:
        cells.add_view_cells = original
    assert calls == ["correlation_view"] and "correlation_view_added" in seg.counts
    assert "correlation_view_added" not in off.counts


def test_correlation_view_additions_must_be_sharp_on_the_correlation_image(monkeypatch: pytest.MonkeyPatch) -> None:
    from scipy import ndimage as ndi

    from astro3s.inference import cells
    from astro3s.inference.pipeline import InferenceOptions
    from astro3s.inference.rules import CellRules
    from astro3s.postprocess import CombineParams
    from astro3s.postprocess.combine import _segmentation
    from astro3s.preprocess import PreprocessParams

    image, soma = _scene()
    seg = _segmentation(soma, np.zeros_like(soma), 2, CombineParams(), {"cells": 2})
    yy, xx = np.mgrid[:120, :160]
    found = np.zeros(image.shape, np.int32)
    for k, (y, x) in enumerate(((90, 30), (90, 80)), start=1):   # the two cells dim at rest, sharp in the median
        found[np.hypot(yy - y, xx - x) <= 8] = k
    view_seg = _segmentation(found, np.zeros_like(found), 2, CombineParams(), {})
    monkeypatch.setattr(cells, "segment_movie", lambda pre, model, options, **kwargs: (pre, view_seg, {}))
    # the correlation image: cells 1-3 active with sharp edges; at (90, 80) a blurred plateau (an active
    # out-of-focus cell seen through a dim in-focus one's outline in the median image)
    sharp = np.zeros(image.shape, np.float32)
    for y, x in ((30, 30), (30, 80), (90, 30)):
        sharp[np.hypot(yy - y, xx - x) <= 8] = 0.9
    soft = ndi.gaussian_filter((np.hypot(yy - 90, xx - 80) <= 8).astype(np.float32), 4.0)
    correlation = 0.05 + sharp + 0.9 * soft / soft.max()

    pre = _Pre(image, np.array([[0, 0, 96, 96]], np.int32), np.ones((1, 96, 96), bool), np.ones(image.shape, bool),
               PreprocessParams(), correlation_image=correlation)
    judged = InferenceOptions(preprocess=PreprocessParams(), correlation_view=True)
    assert judged.rules.correlation_view_max_blur == cells.CORRELATION_VIEW_MAX_BLUR == 1.3
    added = cells.add_correlation_view_cells(seg, pre, None, judged)
    assert added.n_cells == 3 and added.soma[90, 30] == 3 and added.soma[90, 80] == 0
    assert added.counts["correlation_view_added"] == 1 and added.counts["correlation_view_unfocused_removed"] == 1
    # without the test both go in; the median image's own blur rule sees two sharp discs
    unjudged = dataclasses.replace(judged, rules=CellRules(correlation_view_max_blur=0.0))
    both = cells.add_correlation_view_cells(seg, pre, None, unjudged)
    assert both.n_cells == 4 and both.soma[90, 80] == 4 and both.counts["correlation_view_added"] == 2
    assert "correlation_view_unfocused_removed" not in both.counts
