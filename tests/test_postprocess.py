"""Tests of astro3s.postprocess: each combination rule, the split, the whole chain."""

from __future__ import annotations

import time

import numpy as np
import pytest

from astro3s.errors import ConfigError
from astro3s.models import BACKGROUND, CLASS_NAMES, PROCESSES, SOMA
from astro3s.postprocess import (CombineParams, Segmentation, blend_crops, class_masks, combine,
                                 combine_maps, merge_somata, remove_orphan_processes, small_somata_to_processes,
                                 soma_area_filter, split_disc, split_watershed)
from astro3s.preprocess import extract_crops

# ----------------------------------------------------------------------------- helpers


def disc(shape: tuple[int, int], cy: float, cx: float, r: float) -> np.ndarray:
    yy, xx = np.ogrid[:shape[0], :shape[1]]
    return (yy - cy) ** 2 + (xx - cx) ** 2 <= r * r


def blob(shape: tuple[int, int], area: int, y0: int, x0: int, width: int = 10) -> np.ndarray:
    """A connected blob of exactly ``area`` pixels: full rows of ``width``, then a partial row."""
    mask = np.zeros(shape, bool)
    flat = np.arange(area)
    mask[y0 + flat // width, x0 + flat % width] = True
    return mask


def probs_from(soma: np.ndarray, processes: np.ndarray, *, p: float = 0.9) -> np.ndarray:
    """(3, H, W) probabilities: ``p`` on the mask's class, the rest shared."""
    winner = np.full(soma.shape, BACKGROUND)
    winner[processes] = PROCESSES
    winner[soma] = SOMA
    out = np.full((3, *soma.shape), (1 - p) / 2, np.float32)
    np.put_along_axis(out, winner[None], p, axis=0)
    return out


def boxes_around(centres: np.ndarray, shape: tuple[int, int], side: int = 86) -> np.ndarray:
    """``(y0, x0, y1, x1)`` boxes of ``side`` around each centre, clipped to the FOV."""
    c = np.round(np.asarray(centres)).astype(int)
    lo = np.clip(c - side // 2, 0, None)
    hi = np.minimum(c - side // 2 + side, shape)
    return np.concatenate([lo, hi], axis=1)


def crops_of(probs: np.ndarray, boxes: np.ndarray) -> np.ndarray:
    """(N, 3, 96, 96) crops of a (3, H, W) map, laid out as the pre-processing does."""
    return np.stack([extract_crops(probs[c], boxes) for c in range(3)], axis=1)


def assert_contract(seg: Segmentation) -> None:
    assert seg.soma.dtype == np.uint16 and seg.processes.dtype == np.uint16
    assert not ((seg.soma > 0) & (seg.processes > 0)).any()
    ids = np.unique(seg.soma[seg.soma > 0])
    np.testing.assert_array_equal(ids, np.arange(1, seg.n_cells + 1))
    assert set(np.unique(seg.processes[seg.processes > 0])) <= set(ids)
    np.testing.assert_array_equal(seg.soma_area, np.bincount(seg.soma.ravel(), minlength=seg.n_cells + 1)[1:])


# ----------------------------------------------------------------------------- params, argmax, blend


def test_params_validation_and_preprocess_link():
    from astro3s.preprocess import PreprocessParams

    p = CombineParams.from_preprocess(PreprocessParams(soma_area_range=(50.0, 120.0)), split="disc")
    assert p.soma_area_range == (50.0, 120.0) and p.split == "disc"
    assert CombineParams(area_factors=[0.9, 1.15]).area_factors == (0.9, 1.15)
    with pytest.raises(ConfigError, match="unknown postprocess option"):
        CombineParams().replace(splitt="disc")
    with pytest.raises(ConfigError, match="split"):
        CombineParams(split="voronoi")
    with pytest.raises(ConfigError, match="soma_area_range"):
        CombineParams(soma_area_range=(200, 100))


def test_class_masks_follow_class_order():
    assert CLASS_NAMES == ("processes", "soma", "background")
    probs = np.zeros((3, 1, 3), np.float32)
    probs[:, 0, 0] = (0.6, 0.3, 0.1)
    probs[:, 0, 1] = (0.2, 0.7, 0.1)
    probs[:, 0, 2] = (0.1, 0.1, 0.8)
    soma, proc = class_masks(probs)
    np.testing.assert_array_equal(soma[0], [False, True, False])
    np.testing.assert_array_equal(proc[0], [True, False, False])


def test_blend_single_crop_is_exact_and_centre_crop_wins():
    shape = (120, 200)
    truth = probs_from(disc(shape, 60, 60, 8), np.zeros(shape, bool), p=0.8)
    boxes = boxes_around([[60, 60]], shape)
    out = blend_crops(crops_of(truth, boxes), boxes, shape)
    y0, x0, y1, x1 = boxes[0]
    np.testing.assert_allclose(out[:, y0:y1, x0:x1], truth[:, y0:y1, x0:x1], atol=1e-6)
    outside = np.ones(shape, bool)
    outside[y0:y1, x0:x1] = False
    assert (out[BACKGROUND][outside] == 1).all() and (out[SOMA][outside] == 0).all()

    # a second crop centred 35 px to the right calls the first soma background near its edge:
    # the Gaussian weight trusts the crop centred on the soma; the plain mean and the max do not
    boxes2 = boxes_around([[60, 60], [60, 95]], shape)
    crops = crops_of(truth, boxes2)
    crops[1] = 0
    crops[1, BACKGROUND] = 1
    gauss = blend_crops(crops, boxes2, shape)
    mean = blend_crops(crops, boxes2, shape, blend="mean")
    mx = blend_crops(crops, boxes2, shape, blend="max")
    np.testing.assert_allclose(gauss.sum(0), 1, atol=1e-5)
    np.testing.assert_allclose(mean[:, 60, 60], [0.05, 0.4, 0.55], atol=1e-6)
    assert np.argmax(gauss[:, 60, 60]) == SOMA
    assert np.argmax(mx[:, 60, 60]) == BACKGROUND  # max keeps the confident background


# ----------------------------------------------------------------------------- the rules, one at a time


def test_small_somata_become_processes():
    shape = (40, 60)
    soma = blob(shape, 59, 2, 2) | blob(shape, 60, 20, 2) | blob(shape, 200, 2, 30, width=20)
    proc = np.zeros(shape, bool)
    proc[30:32, 30:50] = True
    new_soma, new_proc = small_somata_to_processes(soma, proc, min_area=60)
    np.testing.assert_array_equal(new_soma, blob(shape, 60, 20, 2) | blob(shape, 200, 2, 30, width=20))
    np.testing.assert_array_equal(new_proc, proc | blob(shape, 59, 2, 2))
    assert not (new_soma & new_proc).any()


@pytest.mark.parametrize("overlap, merged", [(11, True), (10, False)])
def test_merge_needs_more_than_ten_percent(overlap, merged):
    shape = (40, 80)
    crop = blob(shape, 100, 5, 5)  # 10 x 10
    fov = blob(shape, 190, 15, 5)  # a larger FOV soma below the crop soma, reaching into it:
    fov[14, 5:15] = True  # its last row (10 px)...
    fov[13, 5:5 + overlap - 10] = True  # ...and one more pixel or none: 11 or 10 % of the smaller
    out = merge_somata(crop, fov, min_overlap=0.1)
    if merged:
        np.testing.assert_array_equal(out, crop | fov)  # the union of the pair
    else:
        assert not out.any()  # neither is confirmed by the other (ASTRA)
        np.testing.assert_array_equal(merge_somata(crop, fov, keep_unmatched=True), crop)


def test_merge_is_per_component():
    shape = (40, 120)
    crop = blob(shape, 100, 5, 5) | blob(shape, 100, 5, 50) | blob(shape, 100, 5, 100, width=10)
    fov = blob(shape, 100, 8, 5) | blob(shape, 100, 25, 50)  # overlaps the first only; third unmatched
    fov_only = blob(shape, 40, 30, 100)
    out = merge_somata(crop, fov | fov_only)
    np.testing.assert_array_equal(out, blob(shape, 100, 5, 5) | blob(shape, 100, 8, 5))


def test_soma_area_filter_boundaries():
    shape = (80, 120)
    lo, hi = 100, 200  # bounds 0.9 x 100 = 90 and 1.15 x 200 = 230, both inclusive
    keep = blob(shape, 90, 2, 2) | blob(shape, 230, 2, 40, width=20)
    drop = blob(shape, 89, 40, 2) | blob(shape, 231, 40, 40, width=20)
    out = soma_area_filter(keep | drop, min_area=0.9 * lo, max_area=1.15 * hi)
    np.testing.assert_array_equal(out, keep)
    seg = combine_maps(probs_from(keep | drop, np.zeros(shape, bool)), None, soma_area_range=(lo, hi))
    assert seg.n_cells == 2 and sorted(seg.soma_area) == [90, 230]


def test_orphan_processes_removed():
    shape = (40, 60)
    soma = disc(shape, 10, 10, 4)
    attached = np.zeros(shape, bool)
    attached[10, 14:30] = True
    diagonal = np.zeros(shape, bool)
    diagonal[np.arange(11, 17), np.arange(30, 36)] = True  # (11, 30) touches (10, 29) corner to corner
    orphan = np.zeros(shape, bool)
    orphan[5, 40:55] = True
    proc = attached | diagonal | orphan
    out8 = remove_orphan_processes(soma, proc, connectivity=2)
    assert not (out8 & orphan).any() and (out8 >= (attached & ~soma)).all()
    assert (out8 & diagonal).sum() == diagonal.sum()
    out4 = remove_orphan_processes(soma, proc, connectivity=1)
    assert not (out4 & diagonal).any() and (out4 >= (attached & ~soma)).all()


# ----------------------------------------------------------------------------- instance split


def two_touching_cells(shape=(100, 160)):
    """Somata at x = 40 and x = 110 (y = 40), a bridge between them, a long tail down from A."""
    soma_a, soma_b = disc(shape, 40, 40, 7), disc(shape, 40, 110, 7)
    proc = np.zeros(shape, bool)
    proc[39:42, 40:111] = True  # the bridge
    proc[40:99, 39:42] = True  # A's tail, 58 px long: leaves A's 40-px disc
    proc[20:41, 124:127] = True  # B's branch up-right, via a stub
    proc[39:42, 110:126] = True
    proc &= ~(soma_a | soma_b)
    labels = soma_a * 1 + soma_b * 2
    return labels.astype(np.int32), proc


def test_split_watershed_geodesic_and_probability_ridge():
    labels, proc = two_touching_cells()
    out = split_watershed(labels, proc)
    assert not (out[labels > 0]).any() and ((out > 0) == proc).all()  # every process pixel assigned
    assert (out[40:99, 39:42][proc[40:99, 39:42]] == 1).all()  # the whole tail, beyond 40 px
    assert (out[20:41, 124:127][proc[20:41, 124:127]] == 2).all()
    bridge = out[40, 48:103]
    cut = np.flatnonzero(np.diff(bridge))[0] + 48
    assert abs(cut - 75) <= 1 and bridge[0] == 1 and bridge[-1] == 2  # geodesic midpoint
    # a dip of the cell probability moves the boundary to it
    p_cell = np.ones(labels.shape, np.float32)
    p_cell[:, 60] = 0.55
    bridge = split_watershed(labels, proc, p_cell)[40, 48:103]
    assert np.flatnonzero(np.diff(bridge))[0] + 48 in (59, 60)


def test_split_disc_astra_rule():
    labels, proc = two_touching_cells()
    out = split_disc(labels, proc, radius=40)
    assert not (out[labels > 0]).any() and ((out > 0) <= proc).all()
    bridge = out[40, 48:103]
    assert np.flatnonzero(np.diff(bridge))[0] + 48 in (74, 75)  # nearest centroid
    tail = out[48:99, 40]  # rows 48-98, below A's soma; A's centroid is row 40
    assert (tail[:33] == 1).all() and (tail[33:] == 0).all()  # cut beyond 40 px
    # one cell alone keeps everything, whatever the distance
    alone = split_disc(np.where(labels == 1, 1, 0), proc & (np.arange(160) < 75)[None], radius=40)
    assert (alone[48:99, 40] == 1).all()


@pytest.mark.parametrize("split", ["watershed", "disc"])
def test_touching_cells_through_combine(split):
    labels, proc = two_touching_cells()
    probs = probs_from(labels > 0, proc)
    seg = combine_maps(probs, probs, soma_area_range=(140, 160), split=split)
    assert_contract(seg)
    assert seg.n_cells == 2
    np.testing.assert_array_equal(seg.soma, labels)
    assert (seg.processes[90, 40] == 1) == (split == "watershed")
    assert seg.processes[30, 125] == 2


# ----------------------------------------------------------------------------- the whole chain


def test_combine_three_cells_with_overlapping_crops():
    shape = (160, 170)
    centres = np.array([[40, 45], [50, 90], [115, 80]])
    somata = [disc(shape, cy, cx, 8) for cy, cx in centres]  # 197 px each
    proc = np.zeros(shape, bool)
    for cy, cx in centres:
        proc[cy - 1:cy + 2, cx:cx + 28] = True
        proc[cy:cy + 25, cx - 1:cx + 2] = True
    soma = np.logical_or.reduce(somata)
    proc &= ~soma
    truth = probs_from(soma, proc)
    boxes = boxes_around(centres, shape)
    crops = crops_of(truth, boxes)
    # crop 1 sees the right edge of cell 0's soma (x 47-53) and calls it background;
    # the Gaussian blend trusts crop 0, centred on that soma (a plain mean would cut the soma)
    _, ox = (96 - (boxes[1, 2:] - boxes[1, :2])) // 2
    crops[1, :, :, :ox + 54 - boxes[1, 1]] = np.array([0.0, 0.05, 0.95])[:, None, None]
    assert np.argmax(blend_crops(crops, boxes, shape, blend="mean")[:, 40, 50]) == BACKGROUND
    # a 60-px soma-class blob on a process of cell 2 (below 2/3 x 150 = 100 px): a process piece
    fake = disc(shape, 115, 100, 4.3) & ~soma
    fake_in_crop = extract_crops(fake.astype(np.float32), boxes[2:])[0] > 0
    crops[2][:, fake_in_crop] = np.array([0.05, 0.9, 0.05])[:, None]
    # the FOV pass: cell 0's soma shifted by 3 px, a spurious soma inside crop 2's box where that
    # crop sees none (outvoted: inside the boxes both passes must agree)
    fov_soma = np.roll(somata[0], 3, axis=1) | somata[1] | somata[2] | disc(shape, 145, 110, 8)
    fov = probs_from(fov_soma, proc & ~fov_soma)

    seg = combine(crops, boxes, fov, soma_area_range=(150, 300))
    assert_contract(seg)
    assert seg.n_cells == 3
    assert seg.counts["small_to_processes"] == 1
    # each cell: its soma (cell 0: union with the shifted FOV soma) and all its processes
    for k, (cy, cx) in enumerate(centres):
        cid = seg.soma[cy, cx]
        expected = somata[k] | (np.roll(somata[0], 3, axis=1) if k == 0 else False)
        np.testing.assert_array_equal(seg.soma == cid, expected)
        mine = (proc & disc(shape, cy + 12, cx + 12, 24)) & ~fov_soma
        assert (seg.processes[mine] == cid).all()
    assert seg.soma[145, 110] == 0 and seg.processes[115, 100] > 0
    np.testing.assert_allclose(seg.centroid[seg.soma[115, 80] - 1], [115, 80], atol=0.01)
    assert seg.summary()["params"]["split"] == "watershed"


def _painted(boxes: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """Union of ``(y0, x0, y1, x1)`` boxes, painted one by one."""
    painted = np.zeros(shape, bool)
    for y0, x0, y1, x1 in boxes:
        painted[max(y0, 0):max(y1, 0), max(x0, 0):max(x1, 0)] = True
    return painted


def test_blend_outside_every_box_takes_the_given_map():
    rng = np.random.default_rng(3)
    shape = (70, 90)
    boxes = np.concatenate([rng.integers(0, 60, (25, 2)), rng.integers(1, 40, (25, 2))], axis=1)
    boxes[:, 2:] = np.minimum(boxes[:, :2] + boxes[:, 2:], shape)  # (y0, x0, y1, x1) inside the FOV
    crops = rng.dirichlet(np.ones(3), (25, 96, 96)).transpose(0, 3, 1, 2).astype(np.float32)
    outside = rng.dirichlet(np.ones(3), shape).transpose(2, 0, 1).astype(np.float32)
    painted = _painted(boxes, shape)
    own = blend_crops(crops, boxes, shape)
    mixed = blend_crops(crops, boxes, shape, outside=outside)
    np.testing.assert_array_equal(mixed[:, painted], own[:, painted])
    np.testing.assert_array_equal(mixed[:, ~painted], outside[:, ~painted])
    assert (own[BACKGROUND, ~painted] == 1).all()
    no_boxes = blend_crops(np.zeros((0, 3, 96, 96), np.float32), np.zeros((0, 4), int), shape, outside=outside)
    np.testing.assert_array_equal(no_boxes, outside)
    with pytest.raises(ValueError, match="outside"):
        blend_crops(crops, boxes, shape, outside=outside[:, :10])


def test_fov_pass_alone_decides_where_no_crop_looked():
    shape = (160, 200)
    cell = disc(shape, 40, 45, 8)
    unseen = disc(shape, 120, 160, 8)  # no candidate, so no crop, covers this cell
    proc = np.zeros(shape, bool)
    proc[119:122, 168:185] = True
    proc &= ~unseen
    truth = probs_from(cell | unseen, proc)
    boxes = boxes_around([[40, 45]], shape)
    assert not _painted(boxes, shape)[unseen | proc].any()
    crops = crops_of(truth, boxes)
    seg = combine(crops, boxes, truth, soma_area_range=(150, 300))
    assert_contract(seg)
    assert seg.n_cells == 2 and seg.counts["merged_somata"] == 2
    cid = seg.soma[120, 160]
    np.testing.assert_array_equal(seg.soma == cid, unseen)
    assert (seg.processes[proc] == cid).all()  # its processes come from the FOV pass too
    astra = combine(crops, boxes, truth, soma_area_range=(150, 300), fov_outside_crops=False)
    assert astra.n_cells == 1 and astra.soma[120, 160] == 0


def test_combine_without_fov_pass_and_without_cells():
    shape = (100, 100)
    soma = disc(shape, 50, 50, 8)
    proc = np.zeros(shape, bool)
    proc[49:52, 58:80] = True
    proc &= ~soma
    truth = probs_from(soma, proc)
    boxes = boxes_around([[50, 50]], shape)
    seg = combine(crops_of(truth, boxes), boxes, None, shape=shape, soma_area_range=(150, 250))
    assert seg.n_cells == 1 and seg.process_area[0] == proc.sum() and "fov_somata" not in seg.counts
    with pytest.raises(ValueError, match="shape"):
        combine(crops_of(truth, boxes), boxes, None)
    no_crops = (np.zeros((0, 3, 96, 96), np.float32), np.zeros((0, 4), int))
    assert combine(*no_crops, truth, soma_area_range=(150, 250)).n_cells == 1  # the FOV pass alone
    empty = combine(*no_crops, truth, fov_outside_crops=False)
    assert empty.n_cells == 0 and empty.soma.shape == shape and empty.centroid.shape == (0, 2)
    assert not empty.soma.any() and not empty.processes.any()


def test_scale_80_cells_1024():
    shape = (1024, 1024)
    rng = np.random.default_rng(0)
    grid = np.stack(np.meshgrid(np.arange(9), np.arange(9), indexing="ij"), -1).reshape(-1, 2)[:80]
    centres = 60 + grid * 112 + rng.integers(-8, 9, grid.shape)
    yy, xx = np.ogrid[:shape[0], :shape[1]]
    soma = np.zeros(shape, bool)
    proc = np.zeros(shape, bool)
    for cy, cx in centres:  # building the test image only
        soma[cy - 8:cy + 9, cx - 8:cx + 9] |= disc((17, 17), 8, 8, 8)
        proc[cy - 1:cy + 2, cx - 35:cx + 36] = True
        proc[cy - 35:cy + 36, cx - 1:cx + 2] = True
    proc &= ~soma
    truth = probs_from(soma, proc, p=0.7) + rng.normal(0, 0.05, (3, *shape)).astype(np.float32)
    boxes = boxes_around(centres, shape)
    crops = crops_of(truth, boxes)
    for split in ("watershed", "disc"):
        tick = time.perf_counter()
        seg = combine(crops, boxes, truth, soma_area_range=(150, 260), split=split)
        took = time.perf_counter() - tick
        print(f"combine, 80 cells on 1024 x 1024, split={split}: {took:.3f} s")
        assert seg.n_cells == 80
        assert_contract(seg)


# ----------------------------------------------------------------------------- ground-truth round trip


@pytest.mark.parametrize("preset, overrides, min_process_f1", [
    ("tiny", {}, 0.99),
    ("d1_like", {"n_frames": 40}, 0.99),
    # 84 cells on 512 x 512, many touching: the split decides which cell a process belongs to
    ("d4_like", {"n_frames": 40}, 0.97),
])
@pytest.mark.parametrize("split", ["watershed", "disc"])
def test_ground_truth_round_trip(simulated, preset, overrides, min_process_f1, split):
    from astro3s.io import read_labels
    from astro3s.metrics import astra_scores, instance_scores
    from astro3s.postprocess import soma_centroids

    folder = simulated(preset, 0, overview=False, **overrides)
    gt_soma = read_labels(folder / "ground_truth" / "soma.tif")
    gt_proc = read_labels(folder / "ground_truth" / "processes.tif")
    shape = gt_soma.shape
    perfect = probs_from(gt_soma > 0, gt_proc > 0, p=1.0)
    centres, areas = soma_centroids(gt_soma)
    boxes = boxes_around(centres[areas > 0], shape)
    seg = combine(crops_of(perfect, boxes), boxes, perfect,
                  soma_area_range=(areas[areas > 0].min(), areas.max()), split=split)
    assert_contract(seg)
    scores = astra_scores(seg.soma, seg.processes, gt_soma, gt_proc)
    # ASTRA's metric scores the ground truth against itself below 1 where its 40-px discs
    # overlap (many touching cells): that is the ceiling
    ceiling = astra_scores(gt_soma, gt_proc, gt_soma, gt_proc)
    inst = instance_scores(seg.soma, seg.processes, gt_soma, gt_proc)
    print(f"{preset} {split}: {seg.n_cells} cells, ASTRA detection/soma/process F1 "
          f"{scores.detection_f1:.3f} {scores.soma_f1:.3f} {scores.process_f1:.3f} "
          f"(ground truth itself: {ceiling.soma_f1:.3f} {ceiling.process_f1:.3f}); "
          f"instance process F1 {inst.process_f1:.3f}")
    assert scores.detection_f1 == pytest.approx(1.0)
    assert scores.soma_f1 >= ceiling.soma_f1 - 0.005
    assert scores.process_f1 >= ceiling.process_f1 - 0.005
    if preset != "d4_like":
        # exact inside the crops; processes can reach beyond every crop (as real D1 ones
        # do, up to ~70 px from the soma) and only those pixels may be lost
        covered = np.zeros(shape, bool)
        for y0, x0, y1, x1 in boxes:
            covered[y0:y1, x0:x1] = True
        lost = (gt_proc > 0) & (seg.processes == 0)
        assert not (lost & covered).any()
        inside = astra_scores(seg.soma, seg.processes, gt_soma, np.where(covered, gt_proc, 0))
        assert inside.soma_f1 == pytest.approx(1.0) and inside.process_f1 == pytest.approx(1.0)
    # the ids too: every cell gets its own soma and (nearly all) its own processes
    assert inst.detection_f1 == pytest.approx(1.0) and inst.soma_f1 == pytest.approx(1.0)
    assert inst.process_f1 >= min_process_f1
