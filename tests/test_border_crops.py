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


def _scene():
    # a 128x128 FOV, a soma cut by the top edge (centre row 3) and one inside; boxes of 86 px as the
    # pipeline makes them, the first moved down to row 0, crops = enhanced x mask padded to 96
    from astro3s.preprocess import crop_offsets, extract_crops
    from astro3s.preprocess.local_filter import candidate_boxes, candidate_centres

    yy, xx = np.mgrid[:128, :128]
    enhanced = (0.1 + np.exp(-((yy - 3) ** 2 + (xx - 64) ** 2) / 60.0)
                + np.exp(-((yy - 70) ** 2 + (xx - 60) ** 2) / 60.0)).astype(np.float32)
    candidates = np.zeros((128, 128), np.int32)
    candidates[np.hypot(yy - 3, xx - 64) < 6] = 1
    candidates[np.hypot(yy - 70, xx - 60) < 6] = 2
    boxes = candidate_boxes(candidate_centres(candidates), (128, 128), 86)
    masks = np.ones((2, 86, 86), np.float32)
    masks[0, :, :5] = 0                                                # a local-filter mask with a hole
    crops = extract_crops(enhanced, boxes, masks, crop_size=96)
    crop_masks = extract_crops(np.ones_like(enhanced), boxes, masks, crop_size=96) > 0
    assert crop_offsets(boxes, 96).tolist() == [[5, 5], [5, 5]]
    return _Pre(crop_boxes=boxes, crops=crops, crop_masks=crop_masks, candidates=candidates,
                enhanced=enhanced, params=SimpleNamespace(crop_size=96))


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
    from astro3s.preprocess import extract_crops
    from astro3s.preprocess.local_filter import candidate_boxes, candidate_centres

    pre = _scene()
    yy, xx = np.mgrid[:128, :128]                     # the first soma 16 rows inside: its box still moves
    enhanced = (0.1 + np.exp(-((yy - 16) ** 2 + (xx - 64) ** 2) / 60.0)
                + np.exp(-((yy - 70) ** 2 + (xx - 60) ** 2) / 60.0)).astype(np.float32)
    candidates = np.zeros((128, 128), np.int32)
    candidates[np.hypot(yy - 16, xx - 64) < 6] = 1
    candidates[np.hypot(yy - 70, xx - 60) < 6] = 2
    boxes = candidate_boxes(candidate_centres(candidates), (128, 128), 86)
    masks = np.ones((2, 86, 86), np.float32)
    pre = dataclasses.replace(pre, enhanced=enhanced, candidates=candidates, crop_boxes=boxes,
                              crops=extract_crops(enhanced, boxes, masks, crop_size=96),
                              crop_masks=extract_crops(np.ones_like(enhanced), boxes, masks, crop_size=96) > 0)
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
