"""ASTRA and instance scores on hand-made label images, and the human agreement on D1."""

from __future__ import annotations

import math
import os
from pathlib import Path

import numpy as np
import pytest

from astro3s.metrics import (
    astra_fov,
    astra_scores,
    cell_instances,
    detect_somata,
    domain_iou,
    instance_scores,
    label_components,
    match_instances,
    prf,
)

SHAPE = (128, 128)


def blank() -> np.ndarray:
    return np.zeros(SHAPE, dtype=np.uint16)


def two_cells() -> tuple[np.ndarray, np.ndarray]:
    """Two separate cells: 10x10 somata, each with an L-shaped process."""
    soma, proc = blank(), blank()
    soma[20:30, 20:30] = 1
    proc[25, 30:45] = 1
    proc[5:20, 25] = 1
    soma[80:90, 80:90] = 2
    proc[85, 90:110] = 2
    return soma, proc


# --------------------------------------------------------------------------- basics


def test_prf_counts_and_zero_division() -> None:
    p, r, f = prf(np.array([8, 0]), np.array([2, 0]), np.array([0, 0]))
    assert np.allclose(p, [0.8, 0.0]) and np.allclose(r, [1.0, 0.0])
    assert np.isclose(f[0], 2 * 0.8 / 1.8) and f[1] == 0.0
    assert prf(0, 0, 0, zero_division=1.0)[2] == 1.0


def test_components_are_8_connected_by_default() -> None:
    mask = np.zeros((5, 5), bool)
    mask[1, 1] = mask[2, 2] = True  # touch by a corner only
    assert label_components(mask)[1] == 1
    assert label_components(mask, connectivity=1)[1] == 2


# --------------------------------------------------------------------------- ASTRA scores


def test_perfect_prediction_scores_one() -> None:
    soma, proc = two_cells()
    s = astra_scores(soma, proc, soma, proc)
    for key in ("detection_precision", "detection_recall", "detection_f1", "soma_precision",
                "soma_recall", "soma_f1", "process_precision", "process_recall", "process_f1"):
        assert getattr(s, key) == 1.0, key
    assert (s.n_pred, s.n_gt, s.n_matched, s.n_cell_pairs) == (2, 2, 2, 2)
    inst = instance_scores(soma, proc, soma, proc)
    assert inst.detection_f1 == inst.soma_f1 == inst.process_f1 == 1.0


def test_empty_prediction() -> None:
    soma, proc = two_cells()
    s = astra_scores(blank(), blank(), soma, proc)
    assert s.detection_recall == 0.0 and s.detection_precision == 0.0 and s.detection_f1 == 0.0
    assert (s.n_pred, s.n_gt, s.n_matched) == (0, 2, 0)
    assert math.isnan(s.soma_f1) and s.as_dict()["soma_f1"] is None  # no matched cell
    inst = instance_scores(blank(), blank(), soma, proc)
    assert inst.detection_recall == 0.0 and inst.n_matched == 0 and math.isnan(inst.soma_f1)


def test_empty_ground_truth() -> None:
    soma, proc = two_cells()
    s = astra_scores(soma, proc, blank(), None)
    assert s.detection_precision == 0.0 and s.detection_f1 == 0.0
    assert (s.n_pred, s.n_gt) == (2, 0)
    assert astra_scores(blank(), None, blank(), None).detection_f1 == 0.0


def test_split_cell_is_not_detected() -> None:
    gt = blank()
    gt[20:30, 20:30] = 1  # 100 px
    pred = blank()
    pred[20:30, 20:24] = 1  # 40 px each, a 2-px gap: IoU 0.4 with the GT soma
    pred[20:30, 26:30] = 2
    counts = detect_somata(pred, gt)
    assert (counts.n_pred, counts.n_gt, counts.n_matched) == (2, 1, 0)
    # ASTRA's containment rule would accept a half that lies inside the GT soma,
    # but one-to-one: never more than one hit per GT soma
    assert detect_somata(pred, gt, count_contained=True).n_matched == 1


def test_larger_half_matches_at_iou_exactly_half() -> None:
    gt = blank()
    gt[20:30, 20:30] = 1
    pred = blank()
    pred[20:30, 20:25] = 1  # 50 px inside: IoU exactly 0.5 (inclusive threshold)
    pred[20:30, 26:30] = 2
    s = astra_scores(pred, None, gt, None, soma_only=True)
    assert (s.n_matched, s.detection_precision, s.detection_recall) == (1, 0.5, 1.0)
    assert s.soma_precision == 1.0 and s.soma_recall == 0.5


def test_merged_cells_are_not_detected() -> None:
    gt = blank()
    gt[20:30, 20:30] = 1
    gt[20:30, 32:42] = 2
    pred = blank()
    pred[20:30, 20:42] = 1  # one blob over both: IoU 100/220 with each
    s = astra_scores(pred, None, gt, None)
    assert (s.n_pred, s.n_gt, s.n_matched, s.detection_f1) == (1, 2, 0, 0.0)


def test_one_pixel_shift_still_matches() -> None:
    soma, proc = two_cells()
    s = astra_scores(np.roll(soma, 1, axis=1), np.roll(proc, 1, axis=1), soma, proc)
    assert s.detection_f1 == 1.0
    # 10x10 soma shifted by one column: TP 90, FP 10, FN 10
    assert s.soma_f1 == pytest.approx(0.9)
    assert 0.0 < s.process_f1 < 1.0


def test_disc_split_of_component_with_two_somata() -> None:
    soma, proc = blank(), blank()
    soma[45:56, 25:36] = 1  # centroid (50, 30)
    soma[45:56, 85:96] = 2  # centroid (50, 90)
    proc[50, 36:85] = 1  # joins the two somata into one component
    proc[0:45, 30] = 1  # rises above soma 1; rows < 10 are beyond its 40-px disc
    cells = cell_instances(soma, proc)
    assert cells.n_cells == 2
    somata, processes = cells.masks()
    assert somata[0].sum() == somata[1].sum() == 121  # the other soma lies beyond 40 px
    cols_0 = np.flatnonzero(processes[0][50])
    cols_1 = np.flatnonzero(processes[1][50])
    assert cols_0.max() == 70 and cols_1.min() == 50  # discs overlap on columns 50..70
    assert processes[0][:, 30].nonzero()[0].min() == 10  # outside every disc: dropped
    assert not processes[1][:, 30].any()

    # one soma per component: the whole component, however far it reaches
    single = cell_instances(np.where(soma == 1, 1, 0), proc)
    assert single.n_cells == 1 and single.processes.sum() == (proc > 0).sum()


def test_disc_split_scores_touching_cells() -> None:
    soma, proc = blank(), blank()
    soma[45:56, 25:36] = 1
    soma[45:56, 85:96] = 2
    proc[50, 36:85] = 1
    s = astra_scores(soma, proc, soma, proc)
    assert (s.n_cell_pairs, s.soma_f1, s.process_f1) == (2, 1.0, 1.0)
    # merging the two somata in the prediction drops both matches
    merged = soma.copy()
    merged[45:56, 36:85] = 1
    assert astra_scores(merged, None, soma, proc).n_cell_pairs == 0


def test_cells_without_processes_score_zero_by_default() -> None:
    soma, _ = two_cells()
    fov = astra_fov(soma, None, soma, None)
    assert np.all(fov.processes.f1 == 0.0)  # scikit-learn's convention, as in ASTRA
    assert np.all(astra_fov(soma, None, soma, None, zero_division=1.0).processes.f1 == 1.0)
    assert math.isnan(astra_scores(soma, None, soma, None, soma_only=True).process_f1)


def test_pooling_over_fovs() -> None:
    soma, proc = two_cells()
    s = astra_scores([soma, soma], [proc, proc], [soma, soma], [proc, proc])
    assert s.n_fovs == 2 and (s.n_gt, s.n_matched) == (4, 4) and s.detection_f1 == 1.0
    # second FOV missed entirely: counts pool, pixel scores average matched cells only
    s = astra_scores([soma, blank()], [proc, blank()], [soma, soma], [proc, proc])
    assert (s.n_pred, s.n_gt, s.n_matched) == (2, 4, 2)
    assert s.detection_precision == 1.0 and s.detection_recall == 0.5
    assert s.detection_f1 == pytest.approx(2 / 3)
    assert s.soma_f1 == 1.0 and s.n_cell_pairs == 2
    # pixel scores: one mean over all matched cells, not a mean of FOV means
    shifted = np.roll(soma, 1, axis=1)
    one_cell = np.where(soma == 1, 1, 0).astype(np.uint16)
    s = astra_scores([shifted, one_cell], None, [soma, one_cell], None)
    assert s.soma_f1 == pytest.approx((0.9 + 0.9 + 1.0) / 3)


def test_shape_mismatch_is_refused() -> None:
    with pytest.raises(ValueError, match="shape"):
        astra_scores(blank(), None, np.zeros((64, 64), np.uint16), None)


# --------------------------------------------------------------------------- instances


def test_instance_matching_uses_ids() -> None:
    soma, proc = two_cells()
    # renumber the prediction (1 -> 7, 2 -> 3) and give each cell the other's processes
    pred_soma = np.select([soma == 1, soma == 2], [7, 3], 0).astype(np.uint16)
    pred_proc = np.select([proc == 1, proc == 2], [3, 7], 0).astype(np.uint16)
    match = match_instances(pred_soma, soma)
    assert sorted(zip(match.gt_ids.tolist(), match.pred_ids.tolist())) == [(1, 7), (2, 3)]
    assert np.allclose(match.iou, 1.0)
    inst = instance_scores(pred_soma, pred_proc, soma, proc)
    assert inst.detection_f1 == 1.0 and inst.soma_f1 == 1.0
    assert inst.process_f1 == 0.0  # the instance view sees the swap
    # ASTRA's semantic view does not
    assert astra_scores(pred_soma, pred_proc, soma, proc).process_f1 == 1.0


def test_hungarian_picks_the_best_one_to_one_pairs() -> None:
    gt = blank()
    gt[20:30, 20:30] = 1
    gt[20:30, 30:40] = 2  # two GT somata side by side (ids keep them apart)
    pred = blank()
    pred[20:30, 21:31] = 5  # best on gt 1 (IoU 90/110)
    pred[20:30, 31:40] = 6  # best on gt 2 (IoU 90/100)
    match = match_instances(pred, gt)
    assert dict(zip(match.gt_ids.tolist(), match.pred_ids.tolist())) == {1: 5, 2: 6}
    # one prediction over both has IoU exactly 0.5 with each: one-to-one keeps one pair
    assert match_instances(np.where(gt > 0, 1, 0), gt).gt_ids.size == 1


def test_domain_iou_per_matched_cell() -> None:
    soma, proc = two_cells()
    domains = blank()
    domains[10:40, 10:40] = 1
    domains[70:100, 70:100] = 2
    match = match_instances(soma, soma)
    assert np.allclose(domain_iou(domains, domains, match), 1.0)
    stack = np.stack([domains == 1, np.zeros(SHAPE, bool)])  # cell 2 without a domain
    iou = domain_iou(stack, domains, match)
    assert np.allclose(iou[match.gt_ids == 1], 1.0) and np.allclose(iou[match.gt_ids == 2], 0.0)
    inst = instance_scores([soma], [proc], [soma], [proc], pred_domains=[stack], gt_domains=[domains])
    assert inst.domain_iou == pytest.approx(0.5)


# --------------------------------------------------------------------------- human agreement


def _annotations() -> Path | None:
    from astro3s.resources import annotations_dir

    folder = annotations_dir()
    if (folder / "consensus" / "D1").is_dir():
        return folder
    if os.environ.get("CI"):
        pytest.fail(f"ASTRA annotations not found at {folder} (set ASTRO3S_ANNOTATIONS)")
    pytest.skip(f"ASTRA annotations not found at {folder}")
    return None


@pytest.mark.parametrize("annotator", ["annot_1", "annot_2", "annot_3"])
def test_human_agreement_on_d1_matches_the_paper(annotator: str, experiment_script) -> None:
    annotations = _annotations()
    result = experiment_script("annotator_agreement").score_annotator(annotations, "D1", annotator)
    s = result.scores
    # the README's ranges (0.90-0.92, 0.86-0.90, 0.62-0.73) widened by 0.01
    assert 0.89 <= s.detection_f1 <= 0.93
    assert 0.85 <= s.soma_f1 <= 0.91
    assert 0.61 <= s.process_f1 <= 0.74
    assert len(result.fovs) == 24
