"""Segmentation scores: ASTRA's cell-wise definition and an instance variant.

Two families of scores compare a predicted segmentation with a reference one
(ground truth, GT). Both take the label images of the project contract
(``uint16``, ``H x W``, 0 background, cell ``k >= 1``; ``soma`` and
``processes`` share ids), one field of view (FOV) or a list of FOVs.

ASTRA scores (:func:`astra_scores`)
-----------------------------------
The definition of Bonato et al. 2023 (repository ``jbonato1/ASTRA``,
``ASTRA/modules/score_fun.py`` and the notebook
``pipelines/Tr_Inf/Results_Inspection.ipynb``), which works on *semantic*
masks, ``soma > 0`` and ``processes > 0``; the ids are ignored:

* Components use 8-connectivity (OpenCV's ``connectedComponents`` default).
* Detection: the soma mask of each side is split into connected components;
  a GT component and a predicted one match when their IoU is >= 0.5.
  Matching is one-to-one. Above 0.5 a match is unique anyway; only an
  exact tie at 0.5 (a soma cut into two exact halves) could pair a component
  twice, and ASTRA's pair counter would then report a recall above 1.
  ASTRA also counts a predicted component lying wholly inside a GT component
  as a hit whatever its IoU; that rule is off by default
  (``count_contained=False``) because in ASTRA's pair counter it lets one GT
  soma be "detected" many times; the published human agreement is reproduced
  either way (see below).
* Cells: connected components of ``soma | processes``. A component that
  holds one soma component (or none) is one cell. A component holding several
  somata is split by a disc of radius 40 px around each soma (centred on the
  soma's centroid, truncated to whole pixels): the cell of a soma is every
  soma and process pixel of the component inside its disc. As in ASTRA,
  discs may overlap, and a pixel in two discs then belongs to both cells;
  pixels of the component outside every disc belong to no cell.
* Pixel scores: every pair of a GT cell and a predicted cell whose soma IoU is
  >= 0.5 gives a soma and a process precision/recall/F1 (GT as the reference,
  the prediction as the prediction), counted over the whole FOV. The
  reported soma and process figures are the mean over all such pairs, pooled
  over FOVs (each matched cell weighs the same, wherever it is). As in
  scikit-learn, which ASTRA used, a score whose denominator is zero (a cell
  with no process on either side) counts as 0 (``zero_division=0.0``).
* Detection precision, recall and F1 are pooled over FOVs: true positives,
  predicted and GT components are summed first. (ASTRA's notebook averages
  per-FOV ratios; that is undefined for a FOV without cells. Both reproduce
  the published human agreement.)

Reproducing the published human inter-rater agreement
(``experiments/annotator_agreement.py``, which details every check): with
this definition all nine annotator/dataset figures fall in the published
ranges. What mattered: (1) the polygon fill of the annotations: ASTRA's
rule (``read_roiset(..., fill="astra")``: grid points inside or on the
polygon) is needed; ImageJ's pixel-centre rule shrinks the small D1/D3 somata
enough to push eight of the 24 figures out of range; (2) 8-connectivity: with
4-connectivity a D2 consensus soma whose parts touch diagonally splits and
D2 detection F1 leaves its range. Which side is the prediction, ASTRA's
containment rule, per-FOV vs pooled detection, the disc split and the
zero-division value each move the figures by at most 0.015 and keep them in
range.

Instance scores (:func:`instance_scores`)
-----------------------------------------
Uses the cell ids: somata are matched one-to-one (Hungarian assignment on soma
IoU, pairs below 0.5 rejected), then each matched cell gets soma and process
precision/recall/F1 from its own pixels, and optionally the IoU of its
correlated domain (:func:`domain_iou`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Union

import numpy as np
from scipy import ndimage, sparse

__all__ = [
    "AstraFov",
    "AstraScores",
    "CellInstances",
    "DetectionCounts",
    "InstanceFov",
    "InstanceMatch",
    "InstanceScores",
    "PairScores",
    "astra_fov",
    "astra_scores",
    "cell_instances",
    "cell_pair_scores",
    "cell_process_figures",
    "detect_somata",
    "domain_iou",
    "instance_fov",
    "instance_scores",
    "label_components",
    "match_instances",
    "prf",
    "process_width",
]

ArrayOrList = Union[np.ndarray, Sequence[np.ndarray]]

#: ASTRA's disc radius (px) for splitting a component that holds several somata
DISC_RADIUS = 40
#: IoU a pair of somata needs to count as the same cell
IOU_THRESHOLD = 0.5


# --------------------------------------------------------------------------- basics


def prf(tp: np.ndarray, fp: np.ndarray, fn: np.ndarray, *,
        zero_division: float = 0.0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Precision, recall and F1 from counts, element-wise.

    Parameters
    ----------
    tp, fp, fn : array_like of int, same shape
        True positives, false positives, false negatives.
    zero_division : float, optional
        Value of a ratio whose denominator is 0 (scikit-learn's convention,
        which ASTRA used, is 0).

    Returns
    -------
    precision, recall, f1 : ndarray of float64, the shape of ``tp``
    """
    tp, fp, fn = (np.asarray(x, dtype=np.float64) for x in (tp, fp, fn))

    def ratio(num: np.ndarray, den: np.ndarray) -> np.ndarray:
        out = np.full(np.broadcast(num, den).shape, zero_division, dtype=np.float64)
        np.divide(num, den, out=out, where=den > 0)
        return out

    # F1 from counts (2TP / (2TP + FP + FN)) equals the harmonic mean whenever
    # it is defined, and stays defined when precision or recall is 0
    return ratio(tp, tp + fp), ratio(tp, tp + fn), ratio(2 * tp, 2 * tp + fp + fn)


def label_components(mask: np.ndarray, *, connectivity: int = 2) -> tuple[np.ndarray, int]:
    """Label the connected components of a binary mask.

    Parameters
    ----------
    mask : (H, W) array_like of bool
    connectivity : {1, 2}, optional
        1 for 4-connectivity, 2 (default, ASTRA/OpenCV) for 8-connectivity.

    Returns
    -------
    labels : (H, W) ndarray of int32
        0 background, components 1..n.
    n : int
    """
    if connectivity not in (1, 2):
        raise ValueError(f"connectivity must be 1 or 2, got {connectivity}")
    structure = ndimage.generate_binary_structure(2, connectivity)
    labels, n = ndimage.label(np.asarray(mask, dtype=bool), structure=structure)
    return labels.astype(np.int32, copy=False), int(n)


def _contingency(labels_a: np.ndarray, n_a: int, labels_b: np.ndarray, n_b: int) -> np.ndarray:
    """Pixel counts of every (label a, label b) pair, shape (n_a + 1, n_b + 1)."""
    pair_index = labels_a.ravel().astype(np.int64) * (n_b + 1) + labels_b.ravel()
    counts = np.bincount(pair_index, minlength=(n_a + 1) * (n_b + 1))
    return counts.reshape(n_a + 1, n_b + 1)


def _iou_from_overlap(overlap: np.ndarray, area_a: np.ndarray, area_b: np.ndarray) -> np.ndarray:
    """IoU matrix from an overlap matrix and the two area vectors."""
    union = area_a[:, None] + area_b[None, :] - overlap
    iou = np.zeros(overlap.shape, dtype=np.float64)
    np.divide(overlap, union, out=iou, where=union > 0)
    return iou


def _one_to_one(iou: np.ndarray, threshold: float) -> tuple[np.ndarray, np.ndarray]:
    """Hungarian assignment maximising total IoU; pairs below ``threshold`` dropped."""
    if iou.size == 0:
        return np.empty(0, dtype=np.intp), np.empty(0, dtype=np.intp)
    # imported here, not on inference's path (~0.2 s alone, ~0.06 s once scipy.linalg is loaded)
    from scipy.optimize import linear_sum_assignment

    rows, cols = linear_sum_assignment(iou, maximize=True)
    keep = iou[rows, cols] >= threshold
    return rows[keep], cols[keep]


def _as_fov_list(x: ArrayOrList | None, name: str) -> list[np.ndarray | None]:
    if x is None:
        return [None]
    if isinstance(x, np.ndarray) and x.ndim == 2:
        return [x]
    items = list(x)
    for item in items:
        if item is not None and np.ndim(item) != 2:
            raise ValueError(f"{name}: every FOV must be a 2-D (H, W) label image, "
                             f"got shape {np.shape(item)}")
    return items


def _fov_lists(pred_soma: ArrayOrList, pred_processes: ArrayOrList | None,
               gt_soma: ArrayOrList, gt_processes: ArrayOrList | None) -> list[tuple]:
    """Pair up the four inputs FOV by FOV, checking counts and shapes."""
    ps, gs = _as_fov_list(pred_soma, "pred_soma"), _as_fov_list(gt_soma, "gt_soma")
    pp = _as_fov_list(pred_processes, "pred_processes") if pred_processes is not None else [None] * len(ps)
    gp = _as_fov_list(gt_processes, "gt_processes") if gt_processes is not None else [None] * len(gs)
    if not len(ps) == len(pp) == len(gs) == len(gp):
        raise ValueError(f"different numbers of FOVs: pred_soma {len(ps)}, pred_processes "
                         f"{len(pp)}, gt_soma {len(gs)}, gt_processes {len(gp)}")
    fovs = []
    for k, quad in enumerate(zip(ps, pp, gs, gp)):
        shapes = {np.shape(a) for a in quad if a is not None}
        if len(shapes) > 1:
            raise ValueError(f"FOV {k}: label images differ in shape: {sorted(shapes)}")
        fovs.append(quad)
    return fovs


# --------------------------------------------------------------------------- detection


@dataclass(frozen=True)
class DetectionCounts:
    """Soma detection counts of one or more FOVs.

    Attributes
    ----------
    n_pred, n_gt : int
        Predicted and GT soma components.
    n_matched : int
        One-to-one matched pairs (true positives).
    """

    n_pred: int
    n_gt: int
    n_matched: int

    def __add__(self, other: DetectionCounts) -> DetectionCounts:
        return DetectionCounts(self.n_pred + other.n_pred, self.n_gt + other.n_gt,
                               self.n_matched + other.n_matched)

    def scores(self) -> tuple[float, float, float]:
        """Precision, recall and F1 (0 where undefined)."""
        p, r, f = prf(self.n_matched, self.n_pred - self.n_matched, self.n_gt - self.n_matched)
        return float(p), float(r), float(f)


def detect_somata(pred_soma: np.ndarray, gt_soma: np.ndarray, *,
                  iou_threshold: float = IOU_THRESHOLD, connectivity: int = 2,
                  count_contained: bool = False) -> DetectionCounts:
    """Match the soma components of one FOV (ASTRA's detection count).

    Parameters
    ----------
    pred_soma, gt_soma : (H, W) array_like
        Soma label images or masks; only ``> 0`` is used.
    iou_threshold : float, optional
        Minimum IoU of a matched pair (inclusive).
    connectivity : {1, 2}, optional
        Component connectivity; 2 (8-connectivity) as in ASTRA.
    count_contained : bool, optional
        Also accept a predicted component lying wholly inside a GT component,
        whatever its IoU (a rule in ASTRA's code). Pairs are still one-to-one.

    Returns
    -------
    DetectionCounts
    """
    pred_labels, n_pred = label_components(np.asarray(pred_soma) > 0, connectivity=connectivity)
    gt_labels, n_gt = label_components(np.asarray(gt_soma) > 0, connectivity=connectivity)
    if n_pred == 0 or n_gt == 0:
        return DetectionCounts(n_pred, n_gt, 0)
    table = _contingency(gt_labels, n_gt, pred_labels, n_pred)
    overlap = table[1:, 1:]
    area_gt, area_pred = table[1:, :].sum(1), table[:, 1:].sum(0)
    iou = _iou_from_overlap(overlap, area_gt, area_pred)
    if count_contained:
        contained = (overlap == area_pred[None, :]) & (overlap > 0)
        # any score above the threshold makes a contained pair eligible;
        # the real IoU still ranks competing candidates
        iou = np.where(contained & (iou < iou_threshold), iou_threshold, iou)
    rows, _ = _one_to_one(iou, iou_threshold)
    return DetectionCounts(n_pred, n_gt, int(rows.size))


# --------------------------------------------------------------------------- cells


@dataclass(frozen=True)
class CellInstances:
    """ASTRA cells of one FOV, as sparse pixel-membership matrices.

    Cells may share pixels (overlapping discs), so they are not a label image.

    Attributes
    ----------
    soma, processes : scipy.sparse.csr_matrix of bool, shape (n_cells, H * W)
        Row ``i`` marks the soma (process) pixels of cell ``i`` (row-major
        flat indices).
    shape : tuple of int
        ``(H, W)``.
    """

    soma: sparse.csr_matrix
    processes: sparse.csr_matrix
    shape: tuple[int, int]

    @property
    def n_cells(self) -> int:
        return self.soma.shape[0]

    def masks(self) -> tuple[np.ndarray, np.ndarray]:
        """Dense ``(n_cells, H, W)`` bool stacks (soma, processes), for inspection."""
        return (self.soma.toarray().reshape(-1, *self.shape),
                self.processes.toarray().reshape(-1, *self.shape))


def _membership(cell: np.ndarray, pixel: np.ndarray, n_cells: int, n_pixels: int) -> sparse.csr_matrix:
    data = np.ones(cell.size, dtype=bool)
    return sparse.csr_matrix((data, (cell, pixel)), shape=(n_cells, n_pixels), dtype=bool)


def cell_instances(soma: np.ndarray, processes: np.ndarray | None = None, *,
                   disc_radius: float = DISC_RADIUS, connectivity: int = 2) -> CellInstances:
    """Split semantic soma/process masks into ASTRA cells.

    Parameters
    ----------
    soma : (H, W) array_like
        Soma labels or mask (``> 0`` is soma).
    processes : (H, W) array_like, optional
        Process labels or mask; None for soma-only annotations.
    disc_radius : float, optional
        Radius (px) of the disc that assigns pixels to each soma of a
        component holding several somata.
    connectivity : {1, 2}, optional
        2 (8-connectivity) as in ASTRA.

    Returns
    -------
    CellInstances
        One cell per component of ``soma | processes`` holding at most one
        soma component, and one per soma of the other components (pixels
        within ``disc_radius`` of the soma centroid; shared when discs
        overlap, dropped when outside every disc). Cells are ordered by
        component, then by soma.
    """
    soma_mask = np.asarray(soma) > 0
    shape = soma_mask.shape
    proc_mask = np.zeros(shape, bool) if processes is None else np.asarray(processes) > 0
    if proc_mask.shape != shape:
        raise ValueError(f"soma {shape} and processes {proc_mask.shape} differ in shape")
    # a pixel in both masks counts as soma; as a process too would be double counting
    proc_mask = proc_mask & ~soma_mask
    n_pixels = soma_mask.size

    comp_labels, n_comp = label_components(soma_mask | proc_mask, connectivity=connectivity)
    soma_labels, n_soma = label_components(soma_mask, connectivity=connectivity)
    comp_flat, soma_flat = comp_labels.ravel(), soma_labels.ravel()

    # each soma component lies inside exactly one component of the union
    soma_parent = np.zeros(n_soma + 1, dtype=np.int64)
    soma_parent[soma_flat] = comp_flat
    somata_per_comp = np.bincount(soma_parent[1:], minlength=n_comp + 1)
    split = somata_per_comp > 1
    split[0] = False

    pixels = np.flatnonzero(comp_flat)
    pixel_comp = comp_flat[pixels]
    pixel_is_soma = soma_mask.ravel()[pixels]

    # components with at most one soma: one cell each, numbered by component
    whole = ~split[pixel_comp]
    whole_comps = np.flatnonzero(~split[1:]) + 1
    cell_of_comp = np.full(n_comp + 1, -1, dtype=np.int64)
    cell_of_comp[whole_comps] = np.arange(whole_comps.size)
    cells = [cell_of_comp[pixel_comp[whole]]]
    cell_pixels = [pixels[whole]]
    cell_soma = [pixel_is_soma[whole]]
    n_cells = whole_comps.size

    split_somata = np.flatnonzero(split[soma_parent[1:]]) + 1
    if split_somata.size:
        # disc centres: soma centroids truncated to whole pixels, as ASTRA's int()
        rows, cols = np.divmod(np.arange(n_pixels), shape[1])
        area = np.bincount(soma_flat, minlength=n_soma + 1).astype(np.float64)
        centre_r = np.floor(np.bincount(soma_flat, rows, n_soma + 1)[split_somata] / area[split_somata])
        centre_c = np.floor(np.bincount(soma_flat, cols, n_soma + 1)[split_somata] / area[split_somata])

        # join every pixel of a split component with every soma of that component
        in_split = ~whole
        sp_pixels, sp_comp, sp_soma = pixels[in_split], pixel_comp[in_split], pixel_is_soma[in_split]
        order = np.argsort(sp_comp, kind="stable")
        sp_pixels, sp_comp, sp_soma = sp_pixels[order], sp_comp[order], sp_soma[order]
        comp_start = np.searchsorted(sp_comp, np.arange(n_comp + 2))
        parent = soma_parent[split_somata]
        start, stop = comp_start[parent], comp_start[parent + 1]
        size = stop - start
        which_soma = np.repeat(np.arange(split_somata.size), size)
        # offsets 0..size-1 within each soma's block, then shifted to its component's pixels
        offset = np.arange(size.sum()) - np.repeat(np.cumsum(size) - size, size)
        joined = np.repeat(start, size) + offset
        pr, pc = np.divmod(sp_pixels[joined], shape[1])
        inside = (pr - centre_r[which_soma]) ** 2 + (pc - centre_c[which_soma]) ** 2 <= disc_radius ** 2
        cells.append(n_cells + which_soma[inside])
        cell_pixels.append(sp_pixels[joined][inside])
        cell_soma.append(sp_soma[joined][inside])
        n_cells += split_somata.size

    cell = np.concatenate(cells)
    pixel = np.concatenate(cell_pixels)
    is_soma = np.concatenate(cell_soma)
    return CellInstances(
        soma=_membership(cell[is_soma], pixel[is_soma], n_cells, n_pixels),
        processes=_membership(cell[~is_soma], pixel[~is_soma], n_cells, n_pixels),
        shape=shape,
    )


@dataclass(frozen=True)
class PairScores:
    """Pixel precision/recall/F1 of matched cell pairs.

    Attributes
    ----------
    precision, recall, f1 : ndarray of float64, shape (n_pairs,)
    """

    precision: np.ndarray = field(default_factory=lambda: np.empty(0))
    recall: np.ndarray = field(default_factory=lambda: np.empty(0))
    f1: np.ndarray = field(default_factory=lambda: np.empty(0))

    @classmethod
    def from_counts(cls, tp: np.ndarray, n_pred: np.ndarray, n_gt: np.ndarray, *,
                    zero_division: float = 0.0) -> PairScores:
        """Scores from true positives and the pixel counts of both sides."""
        tp = np.asarray(tp, dtype=np.int64)
        return cls(*prf(tp, np.asarray(n_pred) - tp, np.asarray(n_gt) - tp,
                        zero_division=zero_division))

    @classmethod
    def concatenate(cls, items: Sequence[PairScores]) -> PairScores:
        """Pool the pairs of several FOVs."""
        if not items:
            return cls()
        return cls(*(np.concatenate([getattr(s, k) for s in items])
                     for k in ("precision", "recall", "f1")))

    def mean(self) -> tuple[float, float, float]:
        """Mean precision, recall, F1 over pairs (NaN when there is none)."""
        if self.f1.size == 0:
            return (float("nan"),) * 3
        return float(self.precision.mean()), float(self.recall.mean()), float(self.f1.mean())


def cell_pair_scores(pred: CellInstances, gt: CellInstances, *,
                     iou_threshold: float = IOU_THRESHOLD,
                     zero_division: float = 0.0) -> tuple[PairScores, PairScores]:
    """Soma and process pixel scores of every cell pair with soma IoU >= threshold.

    Parameters
    ----------
    pred, gt : CellInstances
        Cells of the same FOV.
    iou_threshold : float, optional
    zero_division : float, optional
        Value of a ratio with a zero denominator (0 as in scikit-learn/ASTRA).

    Returns
    -------
    soma, processes : PairScores
        One entry per pair (GT-major order). Every qualifying pair counts, as
        in ASTRA; above IoU 0.5 a cell can pair with one cell only, except
        where overlapping discs duplicate somata.
    """
    soma_overlap = (gt.soma.astype(np.int64) @ pred.soma.astype(np.int64).T).tocoo()
    area_gt = np.asarray(gt.soma.sum(axis=1)).ravel()
    area_pred = np.asarray(pred.soma.sum(axis=1)).ravel()
    i, j, inter = soma_overlap.row, soma_overlap.col, soma_overlap.data
    union = area_gt[i] + area_pred[j] - inter
    keep = inter >= iou_threshold * union
    order = np.lexsort((j[keep], i[keep]))
    i, j, inter = i[keep][order], j[keep][order], inter[keep][order]
    soma = PairScores.from_counts(inter, area_pred[j], area_gt[i], zero_division=zero_division)

    # process overlap of the matched pairs only: row-wise product of two
    # gathered membership matrices
    proc_inter = np.asarray(gt.processes[i].multiply(pred.processes[j]).sum(axis=1)).ravel()
    proc_gt = np.asarray(gt.processes.sum(axis=1)).ravel()[i]
    proc_pred = np.asarray(pred.processes.sum(axis=1)).ravel()[j]
    processes = PairScores.from_counts(proc_inter, proc_pred, proc_gt, zero_division=zero_division)
    return soma, processes


# --------------------------------------------------------------------------- ASTRA scores


@dataclass(frozen=True)
class AstraFov:
    """Raw ASTRA results of one FOV, ready to be pooled.

    Attributes
    ----------
    detection : DetectionCounts
    soma, processes : PairScores
        Per matched cell pair. ``processes`` is None for soma-only scoring.
    """

    detection: DetectionCounts
    soma: PairScores
    processes: PairScores | None


@dataclass(frozen=True)
class AstraScores:
    """ASTRA scores pooled over one or more FOVs.

    Detection figures pool the counts; soma and process figures are means over
    all matched cell pairs of all FOVs. Process figures are NaN for
    soma-only scoring; pixel figures are NaN when no cell matched.
    """

    detection_precision: float
    detection_recall: float
    detection_f1: float
    soma_precision: float
    soma_recall: float
    soma_f1: float
    process_precision: float
    process_recall: float
    process_f1: float
    n_pred: int
    n_gt: int
    n_matched: int
    n_cell_pairs: int
    n_fovs: int

    @classmethod
    def from_fovs(cls, fovs: Sequence[AstraFov]) -> AstraScores:
        """Pool per-FOV results."""
        detection = sum((f.detection for f in fovs), DetectionCounts(0, 0, 0))
        soma = PairScores.concatenate([f.soma for f in fovs])
        if any(f.processes is None for f in fovs):
            proc_mean = (float("nan"),) * 3
        else:
            proc_mean = PairScores.concatenate([f.processes for f in fovs]).mean()
        return cls(*detection.scores(), *soma.mean(), *proc_mean,
                   n_pred=detection.n_pred, n_gt=detection.n_gt, n_matched=detection.n_matched,
                   n_cell_pairs=int(soma.f1.size), n_fovs=len(fovs))

    def as_dict(self) -> dict[str, float | int | None]:
        """Plain dict; NaN becomes None (JSON null)."""
        return {k: (None if isinstance(v, float) and np.isnan(v) else v)
                for k, v in asdict(self).items()}


def astra_fov(pred_soma: np.ndarray, pred_processes: np.ndarray | None,
              gt_soma: np.ndarray, gt_processes: np.ndarray | None, *,
              soma_only: bool = False, iou_threshold: float = IOU_THRESHOLD,
              disc_radius: float = DISC_RADIUS, connectivity: int = 2,
              count_contained: bool = False, zero_division: float = 0.0) -> AstraFov:
    """ASTRA's detection counts and cell pair scores for one FOV.

    Parameters
    ----------
    pred_soma, gt_soma : (H, W) array_like
        Soma label images or masks.
    pred_processes, gt_processes : (H, W) array_like or None
        Process label images or masks (None: no processes).
    soma_only : bool, optional
        Skip process scores (``processes`` of the result is None); use it for
        soma-only annotations such as D3.
    iou_threshold, disc_radius, connectivity, count_contained, zero_division
        See :func:`detect_somata`, :func:`cell_instances` and
        :func:`cell_pair_scores`.

    Returns
    -------
    AstraFov
    """
    detection = detect_somata(pred_soma, gt_soma, iou_threshold=iou_threshold,
                              connectivity=connectivity, count_contained=count_contained)
    pred_cells = cell_instances(pred_soma, pred_processes, disc_radius=disc_radius,
                                connectivity=connectivity)
    gt_cells = cell_instances(gt_soma, gt_processes, disc_radius=disc_radius,
                              connectivity=connectivity)
    soma, processes = cell_pair_scores(pred_cells, gt_cells, iou_threshold=iou_threshold,
                                       zero_division=zero_division)
    return AstraFov(detection, soma, None if soma_only else processes)


def astra_scores(pred_soma: ArrayOrList, pred_processes: ArrayOrList | None,
                 gt_soma: ArrayOrList, gt_processes: ArrayOrList | None, *,
                 soma_only: bool = False, iou_threshold: float = IOU_THRESHOLD,
                 disc_radius: float = DISC_RADIUS, connectivity: int = 2,
                 count_contained: bool = False, zero_division: float = 0.0) -> AstraScores:
    """ASTRA scores of one FOV or pooled over a list of FOVs.

    Parameters
    ----------
    pred_soma, pred_processes, gt_soma, gt_processes : (H, W) array or list of them
        Label images (or masks) of each FOV; the processes may be None.
    soma_only : bool, optional
        Report process scores as NaN.
    iou_threshold, disc_radius, connectivity, count_contained, zero_division
        See :func:`astra_fov`.

    Returns
    -------
    AstraScores

    Examples
    --------
    >>> soma = np.zeros((64, 64), np.uint16); soma[10:20, 10:20] = 1
    >>> astra_scores(soma, None, soma, None).detection_f1
    1.0
    """
    fovs = [astra_fov(*quad, soma_only=soma_only, iou_threshold=iou_threshold,
                      disc_radius=disc_radius, connectivity=connectivity,
                      count_contained=count_contained, zero_division=zero_division)
            for quad in _fov_lists(pred_soma, pred_processes, gt_soma, gt_processes)]
    return AstraScores.from_fovs(fovs)


# --------------------------------------------------------------------------- instances


@dataclass(frozen=True)
class InstanceMatch:
    """One-to-one soma matches of one FOV.

    Attributes
    ----------
    pred_ids, gt_ids : ndarray of int64, shape (n_matched,)
        Cell ids (label values) of the matched pairs.
    iou : ndarray of float64, shape (n_matched,)
        Their soma IoU.
    n_pred, n_gt : int
        Cells with a soma on each side.
    """

    pred_ids: np.ndarray
    gt_ids: np.ndarray
    iou: np.ndarray
    n_pred: int
    n_gt: int


def _relabel(labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Dense labels 0..n (0 kept for background) and the original id of each."""
    ids, dense = np.unique(np.asarray(labels).ravel(), return_inverse=True)
    if ids.size == 0 or ids[0] != 0:  # no background pixel: shift so 0 stays free
        ids = np.concatenate([[0], ids])
        dense = dense + 1
    return dense.reshape(np.shape(labels)), ids.astype(np.int64)


def _dense_soma_table(pred_soma: np.ndarray, gt_soma: np.ndarray):
    pred_dense, pred_ids = _relabel(pred_soma)
    gt_dense, gt_ids = _relabel(gt_soma)
    table = _contingency(gt_dense, gt_ids.size - 1, pred_dense, pred_ids.size - 1)
    return table, pred_ids, gt_ids


def match_instances(pred_soma: np.ndarray, gt_soma: np.ndarray, *,
                    iou_threshold: float = IOU_THRESHOLD) -> InstanceMatch:
    """Match cells one-to-one by soma IoU (Hungarian assignment).

    Parameters
    ----------
    pred_soma, gt_soma : (H, W) ndarray of int
        Soma label images (0 background).
    iou_threshold : float, optional
        Assigned pairs below it are dropped.

    Returns
    -------
    InstanceMatch
    """
    table, pred_ids, gt_ids = _dense_soma_table(np.asarray(pred_soma), np.asarray(gt_soma))
    iou = _iou_from_overlap(table[1:, 1:], table[1:, :].sum(1), table[:, 1:].sum(0))
    rows, cols = _one_to_one(iou, iou_threshold)
    return InstanceMatch(pred_ids=pred_ids[1:][cols], gt_ids=gt_ids[1:][rows],
                         iou=iou[rows, cols], n_pred=pred_ids.size - 1, n_gt=gt_ids.size - 1)


def _pair_scores_by_id(pred: np.ndarray, gt: np.ndarray, pred_ids: np.ndarray,
                       gt_ids: np.ndarray, *, zero_division: float) -> PairScores:
    """Pixel scores of label ``pred_ids[k]`` in ``pred`` against ``gt_ids[k]`` in ``gt``."""
    pred, gt = np.asarray(pred).ravel().astype(np.int64), np.asarray(gt).ravel().astype(np.int64)
    size = max(int(pred.max(initial=0)), int(gt.max(initial=0)), int(pred_ids.max(initial=0)),
               int(gt_ids.max(initial=0))) + 1
    area_pred = np.bincount(pred, minlength=size)
    area_gt = np.bincount(gt, minlength=size)
    # pixel counts of every overlapping (pred id, gt id) pair, looked up per matched pair;
    # a sentinel key beyond every real one keeps the look-up in bounds
    both = (pred > 0) & (gt > 0)
    pair_keys, pair_counts = np.unique(pred[both] * size + gt[both], return_counts=True)
    pair_keys = np.append(pair_keys, size * size)
    pair_counts = np.append(pair_counts, 0)
    query = pred_ids.astype(np.int64) * size + gt_ids.astype(np.int64)
    at = np.searchsorted(pair_keys, query)
    tp = np.where(pair_keys[at] == query, pair_counts[at], 0)
    return PairScores.from_counts(tp, area_pred[pred_ids], area_gt[gt_ids],
                                  zero_division=zero_division)


def _membership_from_domains(domains: np.ndarray) -> sparse.csr_matrix:
    """(max id + 1, H*W) membership from a label image or a (K, H, W) stack (layer k = id k+1)."""
    domains = np.asarray(domains)
    if domains.ndim == 2:
        flat = domains.ravel().astype(np.int64)
        pixels = np.flatnonzero(flat)
        return _membership(flat[pixels], pixels, int(flat.max(initial=0)) + 1, flat.size)
    if domains.ndim == 3:
        layer, pixels = np.nonzero(domains.reshape(domains.shape[0], -1))
        return _membership(layer + 1, pixels, domains.shape[0] + 1, domains[0].size)
    raise ValueError(f"domains must be (H, W) labels or a (K, H, W) stack, got {domains.shape}")


def domain_iou(pred_domains: np.ndarray, gt_domains: np.ndarray,
               match: InstanceMatch) -> np.ndarray:
    """IoU of the correlated domains of matched cells.

    Parameters
    ----------
    pred_domains, gt_domains : ndarray
        Either an ``(H, W)`` label image (domain of cell ``k`` = pixels equal to
        ``k``) or a ``(K, H, W)`` bool stack whose layer ``k - 1`` is the domain
        of cell ``k`` (domains may overlap).
    match : InstanceMatch
        From :func:`match_instances`.

    Returns
    -------
    iou : ndarray of float64, shape (n_matched,)
        0 for a cell without a domain on either side.
    """
    pred = _membership_from_domains(pred_domains).astype(np.int64)
    gt = _membership_from_domains(gt_domains).astype(np.int64)

    def rows(m: sparse.csr_matrix, ids: np.ndarray) -> sparse.csr_matrix:
        # ids beyond the last domain have an empty domain
        padded = sparse.vstack([m, sparse.csr_matrix((1, m.shape[1]), dtype=np.int64)]).tocsr()
        return padded[np.where(ids < m.shape[0], ids, m.shape[0])]

    p, g = rows(pred, match.pred_ids), rows(gt, match.gt_ids)
    inter = np.asarray(p.multiply(g).sum(axis=1)).ravel()
    union = np.asarray(p.sum(axis=1)).ravel() + np.asarray(g.sum(axis=1)).ravel() - inter
    out = np.zeros(inter.shape, dtype=np.float64)
    np.divide(inter, union, out=out, where=union > 0)
    return out


@dataclass(frozen=True)
class InstanceFov:
    """Raw instance results of one FOV: the match and per-pair scores."""

    match: InstanceMatch
    soma: PairScores
    processes: PairScores | None
    domain_iou: np.ndarray | None = None


@dataclass(frozen=True)
class InstanceScores:
    """Instance scores pooled over FOVs.

    Detection pools one-to-one matches; pixel and domain figures are means
    over matched cells of all FOVs (NaN when none, or when not computed).
    """

    detection_precision: float
    detection_recall: float
    detection_f1: float
    soma_precision: float
    soma_recall: float
    soma_f1: float
    process_precision: float
    process_recall: float
    process_f1: float
    domain_iou: float
    n_pred: int
    n_gt: int
    n_matched: int
    n_fovs: int

    @classmethod
    def from_fovs(cls, fovs: Sequence[InstanceFov]) -> InstanceScores:
        detection = DetectionCounts(sum(f.match.n_pred for f in fovs),
                                    sum(f.match.n_gt for f in fovs),
                                    sum(int(f.match.gt_ids.size) for f in fovs))
        soma = PairScores.concatenate([f.soma for f in fovs]).mean()
        if any(f.processes is None for f in fovs):
            proc = (float("nan"),) * 3
        else:
            proc = PairScores.concatenate([f.processes for f in fovs]).mean()
        if fovs and all(f.domain_iou is not None for f in fovs):
            values = np.concatenate([f.domain_iou for f in fovs])
            dom = float(values.mean()) if values.size else float("nan")
        else:
            dom = float("nan")
        return cls(*detection.scores(), *soma, *proc, dom, detection.n_pred, detection.n_gt,
                   detection.n_matched, len(fovs))

    as_dict = AstraScores.as_dict


def instance_fov(pred_soma: np.ndarray, pred_processes: np.ndarray | None,
                 gt_soma: np.ndarray, gt_processes: np.ndarray | None, *,
                 pred_domains: np.ndarray | None = None, gt_domains: np.ndarray | None = None,
                 soma_only: bool = False, iou_threshold: float = IOU_THRESHOLD,
                 zero_division: float = 0.0) -> InstanceFov:
    """Instance matching and per-cell scores for one FOV.

    Parameters
    ----------
    pred_soma, gt_soma : (H, W) ndarray of int
        Soma label images.
    pred_processes, gt_processes : (H, W) ndarray of int or None
        Process label images sharing the soma ids (None: no processes).
    pred_domains, gt_domains : ndarray, optional
        Domains (see :func:`domain_iou`); both needed for domain scores.
    soma_only : bool, optional
        Skip process scores.
    iou_threshold, zero_division : float, optional

    Returns
    -------
    InstanceFov
    """
    match = match_instances(pred_soma, gt_soma, iou_threshold=iou_threshold)
    soma = _pair_scores_by_id(pred_soma, gt_soma, match.pred_ids, match.gt_ids,
                              zero_division=zero_division)
    processes = None
    if not soma_only:
        empty = np.zeros(np.shape(gt_soma), np.uint16)
        processes = _pair_scores_by_id(empty if pred_processes is None else pred_processes,
                                       empty if gt_processes is None else gt_processes,
                                       match.pred_ids, match.gt_ids, zero_division=zero_division)
    domains = None
    if pred_domains is not None and gt_domains is not None:
        domains = domain_iou(pred_domains, gt_domains, match)
    return InstanceFov(match, soma, processes, domains)


def instance_scores(pred_soma: ArrayOrList, pred_processes: ArrayOrList | None,
                    gt_soma: ArrayOrList, gt_processes: ArrayOrList | None, *,
                    pred_domains: ArrayOrList | None = None, gt_domains: ArrayOrList | None = None,
                    soma_only: bool = False, iou_threshold: float = IOU_THRESHOLD,
                    zero_division: float = 0.0) -> InstanceScores:
    """Instance scores of one FOV or pooled over a list of FOVs.

    Parameters
    ----------
    pred_soma, pred_processes, gt_soma, gt_processes : (H, W) array or list of them
    pred_domains, gt_domains : array or list of arrays, optional
        One per FOV (see :func:`domain_iou`).
    soma_only, iou_threshold, zero_division
        See :func:`instance_fov`.

    Returns
    -------
    InstanceScores
    """
    quads = _fov_lists(pred_soma, pred_processes, gt_soma, gt_processes)
    if pred_domains is None or gt_domains is None:
        pd_list = gd_list = [None] * len(quads)
    else:
        single = isinstance(pred_soma, np.ndarray) and pred_soma.ndim == 2
        pd_list = [pred_domains] if single else list(pred_domains)
        gd_list = [gt_domains] if single else list(gt_domains)
        if not len(pd_list) == len(gd_list) == len(quads):
            raise ValueError("domains must be given for every FOV")
    fovs = [instance_fov(*quad, pred_domains=pdom, gt_domains=gdom, soma_only=soma_only,
                         iou_threshold=iou_threshold, zero_division=zero_division)
            for quad, pdom, gdom in zip(quads, pd_list, gd_list)]
    return InstanceScores.from_fovs(fovs)


# --------------------------------------------------------------------------- process shape


def process_width(mask: np.ndarray) -> float:
    """Width of a process mask as the annotation statistics define it: area / skeleton length.

    Parameters
    ----------
    mask : ndarray of bool, shape (h, w)

    Returns
    -------
    width : float
        Pixel count over the pixel count of its skeleton (0 for an empty mask).
    """
    from skimage.morphology import skeletonize

    length = int(np.count_nonzero(skeletonize(mask)))
    return float(np.count_nonzero(mask)) / length if length else 0.0


def cell_process_figures(soma: np.ndarray, processes: np.ndarray, *, min_process_px: int = 10) -> np.ndarray:
    """Size, width, area ratio and reach of each cell's processes.

    Parameters
    ----------
    soma, processes : ndarray of int, shape (H, W)
        Label images sharing ids (0 background).
    min_process_px : int
        Cells with fewer process pixels (or no soma) are left out.

    Returns
    -------
    figures : ndarray of float64, shape (n_cells, 4)
        Per cell: soma area (px); process width (:func:`process_width` of the
        union of its processes, px); process area / soma area; and reach, the
        95th percentile of the process pixels' distance to the soma's edge in
        soma radii (``sqrt(area / pi)``).
    """
    cells = np.maximum(soma, processes)
    rows = []
    for k, box in enumerate(ndimage.find_objects(cells), start=1):  # loop over cells
        if box is None:
            continue
        box = tuple(slice(max(b.start - 2, 0), b.stop + 2) for b in box)  # room for the edge distance
        own_soma, process = soma[box] == k, processes[box] == k
        soma_area = int(np.count_nonzero(own_soma))
        if soma_area == 0 or process.sum() < min_process_px:
            continue
        to_edge = ndimage.distance_transform_edt(~own_soma)[process]
        rows.append((soma_area, process_width(process), process.sum() / soma_area,
                     np.percentile(to_edge, 95) / np.sqrt(soma_area / np.pi)))
    return np.asarray(rows, dtype=np.float64).reshape(-1, 4)
