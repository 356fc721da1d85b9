"""Crops centred on candidates whose box the FOV's edge moved, the FOV mirrored beyond the edge
(astro3s.inference.network.border_centred_crops, with_border_centred_predictions; CellRules.border_centred_crops)."""

from __future__ import annotations

import dataclasses
from types import SimpleNamespace

import numpy as np


@dataclasses.dataclass
class _Pre:
    crop_boxes: np.ndarray
    crops: np.ndarray
    crop_masks: np.ndarray
    candidates: np.ndarray
    enhanced: np.ndarray
    params: SimpleNamespace
    median_image: np.ndarray | None = None


def _scene(row: int = 3):
    # a 128x128 FOV, a soma cut by the top edge (centre row 3) and one inside; boxes of 86 px as the
    # pipeline makes them, the first moved down to row 0, crops = enhanced x mask padded to 96
    from astro3s.preprocess import crop_offsets, extract_crops
    from astro3s.preprocess.local_filter import candidate_boxes, candidate_centres

    yy, xx = np.mgrid[:128, :128]
    enhanced = (0.1 + np.exp(-((yy - row) ** 2 + (xx - 64) ** 2) / 60.0)
                + np.exp(-((yy - 70) ** 2 + (xx - 60) ** 2) / 60.0)).astype(np.float32)
    candidates = np.zeros((128, 128), np.int32)
    candidates[np.hypot(yy - row, xx - 64) < 6] = 1
    candidates[np.hypot(yy - 70, xx - 60) < 6] = 2
    boxes = candidate_boxes(candidate_centres(candidates), (128, 128), 86)
    masks = np.ones((2, 86, 86), np.float32)
    masks[0, :, :5] = 0                                                # a local-filter mask with a hole
    crops = extract_crops(enhanced, boxes, masks, crop_size=96)
    crop_masks = extract_crops(np.ones_like(enhanced), boxes, masks, crop_size=96) > 0
    assert crop_offsets(boxes, 96).tolist() == [[5, 5], [5, 5]]
    return _Pre(crop_boxes=boxes, crops=crops, crop_masks=crop_masks, candidates=candidates,
                enhanced=enhanced, params=SimpleNamespace(crop_size=96), median_image=enhanced)


def test_a_moved_box_gets_a_crop_centred_on_its_candidate_the_fov_mirrored() -> None:
    from astro3s.inference.network import border_centred_crops

    pre = _scene()
    index, crops, shift = border_centred_crops(pre)
    # only the box the top edge moved; its candidate (centroid row ~3.5) wanted to start 40 rows above it
    assert index.tolist() == [0]
    dy, dx = shift[0]
    assert dy < -30 and dx == 0
    crop = crops[0]
    # the box's own rows sit |dy| rows lower in the centred crop; above them, their mirror image
    np.testing.assert_array_equal(crop[5 - dy:91, 5:91], pre.crops[0, 5:91 + dy, 5:91])
    np.testing.assert_array_equal(crop[5 - dy - 1, 5:91], crop[5 - dy, 5:91])      # symmetric about the edge
    np.testing.assert_array_equal(crop[5 - dy - 4, 5:91], crop[5 - dy + 3, 5:91])
    assert (crop[:, :10] == 0).all()                                   # the mask's hole and the padding stay
    # the soma and its mirror image now near the crop's centre (row 48), not at its top as in the box's own crop
    assert abs(int(crop[5:91, 5:91].argmax()) // 86 + 5 - 48) <= 8
    assert int(pre.crops[0, 5:91, 5:91].argmax()) // 86 + 5 < 12


def _fov_probs(shape, soma: bool) -> np.ndarray:
    from astro3s.models.classes import BACKGROUND, SOMA

    probs = np.zeros((3, *shape), np.float32)
    probs[SOMA if soma else BACKGROUND] = 1.0
    return probs


def test_only_the_cut_candidates_own_soma_comes_from_its_centred_crop() -> None:
    from scipy import ndimage as ndi

    from astro3s.inference import load_inference_model
    from astro3s.inference.network import border_centred_crops, predict_crops, with_border_centred_predictions
    from astro3s.models.classes import SOMA

    pre = _scene()
    model, _ = load_inference_model("default", device="cpu")
    probs = predict_crops(model, pre)
    merged = with_border_centred_predictions(model, pre, probs)
    np.testing.assert_array_equal(merged[1], probs[1])                # the inner candidate's crop as it was
    index, crops, shift = border_centred_crops(pre)
    dy = int(shift[0, 0])
    centred = predict_crops(model, dataclasses.replace(pre, crops=crops))
    changed = (merged[0] != probs[0]).any(axis=0)
    assert changed.sum() > 50                                          # the cut soma is redrawn
    # every changed pixel holds the centred crop's probabilities, at the centred crop's pixel u - dy
    np.testing.assert_array_equal(merged[0][:, 0:96 + dy][:, changed[0:96 + dy]],
                                  centred[0][:, -dy:96][:, changed[0:96 + dy]])
    assert not changed[96 + dy:].any()                                 # beyond the centred crop: the box's own
    # and lies within 2 px of the soma the centred crop draws on the candidate
    soma = np.zeros((96, 96), bool)
    soma[0:96 + dy] = centred[0][:, -dy:96].argmax(axis=0) == SOMA
    assert not (changed & ~ndi.binary_dilation(soma, iterations=2)).any()
    # the inner (second) soma of the box keeps the box's own probabilities: rows 70 +- 8 of the FOV
    assert not changed[5 + 62:5 + 78].any()


def test_agreement_with_the_whole_fov_pass_gates_the_centred_crop() -> None:
    from astro3s.inference import load_inference_model
    from astro3s.inference.network import predict_crops, with_border_centred_predictions

    pre = _scene()
    model, _ = load_inference_model("default", device="cpu")
    probs = predict_crops(model, pre)
    no = with_border_centred_predictions(model, pre, probs, fov_probs=_fov_probs((128, 128), soma=False),
                                         min_agreement=0.5)
    np.testing.assert_array_equal(no, probs)                          # the whole-FOV pass sees no soma there
    yes = with_border_centred_predictions(model, pre, probs, fov_probs=_fov_probs((128, 128), soma=True),
                                          min_agreement=0.5)
    np.testing.assert_array_equal(yes, with_border_centred_predictions(model, pre, probs))
    assert not np.array_equal(yes, probs)


def test_a_moved_box_whose_soma_the_edge_does_not_cut_keeps_its_own_crop() -> None:
    from astro3s.inference import load_inference_model
    from astro3s.inference.network import border_centred_crops, predict_crops, with_border_centred_predictions

    pre = _scene(row=16)                              # the first soma 16 rows inside: its box still moves
    assert border_centred_crops(pre)[0].tolist() == [0]
    model, _ = load_inference_model("default", device="cpu")
    probs = predict_crops(model, pre)
    np.testing.assert_array_equal(with_border_centred_predictions(model, pre, probs), probs)


def test_no_moved_box_no_change() -> None:
    from astro3s.inference import load_inference_model
    from astro3s.inference.network import border_centred_crops, predict_crops, with_border_centred_predictions

    pre = _scene()
    model, _ = load_inference_model("default", device="cpu")
    inner = dataclasses.replace(pre, crop_boxes=pre.crop_boxes[1:], crops=pre.crops[1:], crop_masks=pre.crop_masks[1:],
                                candidates=np.where(pre.candidates == 2, 1, 0).astype(np.int32))
    assert border_centred_crops(inner)[0].size == 0
    own = predict_crops(model, inner)
    assert with_border_centred_predictions(model, inner, own) is own     # nothing moved: the same array


def _inner_cell_only(pre):
    from astro3s.postprocess import CombineParams
    from astro3s.postprocess.combine import _segmentation

    yy, xx = np.mgrid[:128, :128]
    soma = (np.hypot(yy - 70, xx - 60) < 6).astype(np.uint16)
    return _segmentation(soma, np.zeros_like(soma), 1, CombineParams(soma_area_range=(89, 345)), {})


def test_a_cut_soma_only_the_centred_crop_draws_becomes_a_cell() -> None:
    import astro3s.inference.cells as cells
    from astro3s.inference import load_inference_model
    from astro3s.inference.cells import add_border_cut_cells
    from astro3s.inference.network import EDGE_BAND

    pre = _scene()
    model, options = load_inference_model("default", device="cpu")
    seg = _inner_cell_only(pre)
    added = add_border_cut_cells(seg, pre, model, options, min_area=20)
    assert added.n_cells == 2 and added.counts["border_cut_added"] == 1
    np.testing.assert_array_equal(added.soma == 1, seg.soma == 1)          # the cell found before unchanged
    new = added.soma == 2
    assert new[:EDGE_BAND].any() and new.sum() > 30                          # the cut soma, at the top edge
    assert np.hypot(*(np.argwhere(new).mean(axis=0) - (3, 64))) < 6
    assert not (added.processes == 2).any()                                  # a cell without processes
    # too small, or not standing out like the FOV's cells: nothing added
    assert add_border_cut_cells(seg, pre, model, options, min_area=10_000).n_cells == 1
    level = cells.BORDER_CUT_CONTRAST
    try:
        cells.BORDER_CUT_CONTRAST = 100.0
        assert add_border_cut_cells(seg, pre, model, options, min_area=20).n_cells == 1
    finally:
        cells.BORDER_CUT_CONTRAST = level
    # a soma already found there: not added twice
    assert add_border_cut_cells(added, pre, model, options, min_area=20).n_cells == 2
