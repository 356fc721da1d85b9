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


def test_no_moved_box_no_change_and_predictions_merge_where_the_crops_overlap() -> None:
    from astro3s.inference import load_inference_model
    from astro3s.inference.network import border_centred_crops, predict_crops, with_border_centred_predictions

    pre = _scene()
    model, _ = load_inference_model("default", device="cpu")
    probs = predict_crops(model, pre)
    merged = with_border_centred_predictions(model, pre, probs)
    np.testing.assert_array_equal(merged[1], probs[1])                # the inner candidate's crop as it was
    index, crops, shift = border_centred_crops(pre)
    dy = int(shift[0, 0])
    centred = predict_crops(model, dataclasses.replace(pre, crops=crops))
    np.testing.assert_allclose(merged[0][:, 0:96 + dy], centred[0][:, -dy:96])   # the overlap from the centred crop
    np.testing.assert_array_equal(merged[0][:, 96 + dy:], probs[0][:, 96 + dy:])  # the rest from the box's own
    inner = dataclasses.replace(pre, crop_boxes=pre.crop_boxes[1:], crops=pre.crops[1:], crop_masks=pre.crop_masks[1:],
                                candidates=np.where(pre.candidates == 2, 1, 0).astype(np.int32))
    assert border_centred_crops(inner)[0].size == 0
    own = probs[1:]
    assert with_border_centred_predictions(model, inner, own) is own     # nothing moved: the same array
