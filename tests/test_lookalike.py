"""The look-alike classifier: features per cell, the model file, the rule."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from scipy import ndimage as ndi

from astro3s.errors import InputError


def _fov() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Four sharp bright somata (ids 1-4) and a faint, blurred blob (id 5) on a noisy background."""
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[:160, :160]
    sharp = np.zeros((160, 160))
    soma = np.zeros((160, 160), np.uint16)
    for k, (y, x) in enumerate([(30, 30), (30, 120), (120, 30), (120, 120)], start=1):
        disc = (yy - y) ** 2 + (xx - x) ** 2 <= 8 ** 2
        sharp[disc] = 100.0
        soma[disc] = k
    blob = np.exp(-((yy - 75) ** 2 + (xx - 75) ** 2) / (2 * 9.0 ** 2)) * 30.0
    soma[(yy - 75) ** 2 + (xx - 75) ** 2 <= 8 ** 2] = 5
    image = ndi.gaussian_filter(sharp, 1.0) + blob + 10.0 + rng.normal(0, 1.0, sharp.shape)
    processes = np.zeros_like(soma)
    processes[28:32, 39:50] = 1  # a short process of cell 1
    return image, soma, processes


def test_cell_features_single_out_a_faint_blurred_blob() -> None:
    from astro3s.postprocess.lookalike import CELL_FEATURES, cell_features

    image, soma, processes = _fov()
    features = cell_features(image, soma, processes)
    assert features.shape == (5, len(CELL_FEATURES)) and np.isfinite(features).all()
    area, contrast, brightness, blur, ratio = features.T
    assert np.allclose(area, 0.0, atol=0.1)  # all somata the same size
    assert contrast[4] < contrast[:4].min() and brightness[4] < brightness[:4].min()
    assert blur[4] > 1.5 * np.median(blur[:4])
    assert ratio[0] == pytest.approx(44 / (soma == 1).sum()) and (ratio[1:] == 0).all()
    assert cell_features(image, np.zeros_like(soma), processes).shape == (0, len(CELL_FEATURES))


def _crowded_fov() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Three sharp bright somata (ids 1-3) and four faint, blurred blobs (ids 4-7): more look-alikes than cells."""
    rng = np.random.default_rng(1)
    yy, xx = np.mgrid[:200, :200]
    sharp = np.zeros((200, 200))
    soft = np.zeros((200, 200))
    soma = np.zeros((200, 200), np.uint16)
    centres = [(30, 30), (30, 170), (170, 30), (100, 100), (170, 170), (30, 100), (170, 100)]
    for k, (y, x) in enumerate(centres, start=1):
        disc = (yy - y) ** 2 + (xx - x) ** 2 <= 8 ** 2
        soma[disc] = k
        if k <= 3:
            sharp[disc] = 100.0
        else:
            soft += np.exp(-((yy - y) ** 2 + (xx - x) ** 2) / (2 * 9.0 ** 2)) * 30.0
    image = ndi.gaussian_filter(sharp, 1.0) + soft + 10.0 + rng.normal(0, 1.0, sharp.shape)
    return image, soma, np.zeros_like(soma)


def test_reference_of_the_relative_features_is_the_clearly_visible_half() -> None:
    """With more look-alikes than cells, the median over every cell is a look-alike's; over the
    higher-contrast half it is a cell's, and the look-alikes stand out again."""
    from astro3s.postprocess.lookalike import cell_features

    image, soma, processes = _crowded_fov()
    every = cell_features(image, soma, processes)
    visible = cell_features(image, soma, processes, reference_quantile=0.5)
    assert every.shape == visible.shape == (7, 5)
    # contrast and process ratio are not relative: unchanged
    assert np.array_equal(every[:, 1], visible[:, 1]) and np.array_equal(every[:, 4], visible[:, 4])
    blobs, cells = slice(3, 7), slice(0, 3)
    # against every cell the blobs look typical (a blob is the median); against the visible half they do not
    assert np.median(every[blobs, 3]) == pytest.approx(1.0, abs=0.05)
    assert visible[blobs, 3].min() > 1.5 * visible[cells, 3].max()
    assert visible[blobs, 2].max() < every[blobs, 2].min()
    assert np.allclose(visible[cells, 2], 0.0, atol=0.1)  # the cells are now the typical soma
    assert np.array_equal(cell_features(image, soma, processes, reference_quantile=0.0), every)


def _cells_of(soma: np.ndarray):
    """The Segmentation whose somata are exactly ``soma``'s discs (network certain, no processes)."""
    from astro3s.postprocess import combine_maps

    probs = np.zeros((3, *soma.shape), np.float32)
    probs[2] = 1
    probs[:, soma > 0] = np.array([0, 1, 0], np.float32)[:, None]
    return combine_maps(probs, None, soma_area_range=(100, 400))


def test_remove_lookalikes_drops_low_scores_and_renumbers() -> None:
    from astro3s.postprocess.lookalike import LookalikeModel, remove_lookalikes

    image, soma, processes = _fov()
    seg = _cells_of(soma)
    assert seg.n_cells == 5
    # contrast alone, threshold between the blob and the somata
    by_contrast = LookalikeModel(mean=(0,) * 5, scale=(1,) * 5, weights=(0, 1, 0, 0, 0), bias=0.0, threshold=20.0)
    kept = remove_lookalikes(seg, image, model=by_contrast)
    assert kept.n_cells == 4 and kept.counts["lookalikes_removed"] == 1
    assert set(np.unique(kept.soma)) == {0, 1, 2, 3, 4}
    assert (kept.soma[soma == 5] == 0).all()
    few = LookalikeModel(mean=(0,) * 5, scale=(1,) * 5, weights=(0, 1, 0, 0, 0), bias=0.0, threshold=20.0,
                         min_cells=6)
    assert remove_lookalikes(seg, image, model=few).counts["lookalikes_removed"] == 0


def test_remove_lookalikes_uses_the_models_reference() -> None:
    from astro3s.postprocess.lookalike import LookalikeModel, remove_lookalikes

    image, soma, _ = _crowded_fov()
    seg = _cells_of(soma)
    assert seg.n_cells == 7
    # relative blur alone: a cell goes when it is > 1.5x as blurred as the typical soma
    by_blur = {"mean": (0,) * 5, "scale": (1,) * 5, "weights": (0, 0, 0, -1, 0), "bias": 0.0, "threshold": -1.5}
    every = remove_lookalikes(seg, image, model=LookalikeModel(**by_blur))
    visible = remove_lookalikes(seg, image, model=LookalikeModel(**by_blur, reference_quantile=0.5))
    assert every.counts["lookalikes_removed"] == 0
    assert visible.n_cells == 3 and visible.counts["lookalikes_removed"] == 4
    assert (visible.soma[soma > 3] == 0).all() and (visible.soma[(soma > 0) & (soma <= 3)] > 0).all()


def test_model_file_round_trip_and_clear_errors(tmp_path: Path) -> None:
    from astro3s.postprocess.lookalike import CELL_FEATURES, LookalikeModel, default_lookalike_model

    shipped = default_lookalike_model()
    assert len(shipped.weights) == len(CELL_FEATURES) and np.isfinite(shipped.threshold)
    assert "development movies" in shipped.fitted_on
    path = tmp_path / "model.json"
    path.write_text(json.dumps(shipped.to_dict()))
    assert LookalikeModel.from_file(path) == shipped
    path.write_text(json.dumps({**shipped.to_dict(), "features": ["contrast"]}))
    with pytest.raises(InputError, match="model.json.*features"):
        LookalikeModel.from_file(path)
    # a file written before the reference quantile existed: features relative to every cell
    path.write_text(json.dumps({k: v for k, v in shipped.to_dict().items() if k != "reference_quantile"}))
    assert LookalikeModel.from_file(path).reference_quantile is None
    assert shipped.reference_quantile == 0.5
    path.write_text("{not json")
    with pytest.raises(InputError, match="fit_lookalike_model"):
        LookalikeModel.from_file(path)


def test_the_rule_is_an_option_of_the_combination() -> None:
    from astro3s.errors import ConfigError
    from astro3s.postprocess import CombineParams

    assert CombineParams().reject_lookalikes is True
    assert CombineParams.from_dict({"reject_lookalikes": False}).reject_lookalikes is False
    with pytest.raises(ConfigError, match="reject_lookalike"):
        CombineParams.from_dict({"reject_lookalike": False})


def test_shipped_model_drops_lookalikes_that_outnumber_the_cells() -> None:
    # four faint blurred blobs and three sharp somata: the previous classifier (medians over every
    # cell, commit 5ec7de2) kept all seven; the shipped one compares with the clearly visible half
    from astro3s.postprocess.lookalike import remove_lookalikes

    image, soma, _ = _crowded_fov()
    kept = remove_lookalikes(_cells_of(soma), image)
    assert kept.counts["lookalikes_removed"] == 4 and kept.n_cells == 3
    assert (kept.soma[soma > 3] == 0).all() and (kept.soma[(soma > 0) & (soma <= 3)] > 0).all()
