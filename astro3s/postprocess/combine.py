"""Network outputs to cells: :func:`combine` and its result, :class:`Segmentation`.

Inputs are class probabilities in the order of
:data:`astro3s.models.CLASS_NAMES` (processes, soma, background): one
``(3, S, S)`` map per single-cell crop, with the crops' FOV boxes, and one
``(3, H, W)`` map of the whole FOV. :func:`combine` pastes and blends the crop
maps into FOV coordinates (:func:`~astro3s.postprocess.blend_crops`), then
:func:`combine_maps` applies the rules of :mod:`astro3s.postprocess.rules`
and the instance split of :mod:`astro3s.postprocess.split`:

0. (in :func:`combine`) pixels outside every crop box take the FOV map's
   probabilities in the crop map: no crop judged them, so the FOV pass alone
   decides there (``CombineParams.fov_outside_crops``; ASTRA drops them);
1. argmax of the blended crop map and of the FOV map;
2. crop somata smaller than ``2/3 x`` the minimum soma area become processes;
3. FOV somata outside ``[1.0 x min, 1.15 x max]`` are ignored; each crop soma
   overlapping a FOV soma by more than 10 % of the smaller is merged with it
   (union); unconfirmed somata are dropped;
4. somata below ``0.9 x min`` or above ``1.15 x max`` are removed;
5. processes not connected to a kept soma are removed;
6. one id per soma component; processes of touching cells are split by
   watershed (default) or ASTRA's 40-px discs.

Differences from ASTRA's scripts, and why: ASTRA applies rule 2 to each crop
before pasting and sums one-hot votes of overlapping crops; here the crops'
probabilities are blended first (a soma clipped at one crop's edge is then
outvoted by the crop centred on it, so it is not turned into processes) and
rule 2 runs once on the FOV. ASTRA removes a too-large soma together with its
whole connected group (and skips the removal when two or more are too large),
then repeats the large-soma removal at 1.0 x max; here only the soma goes and
rule 5 decides about its processes, so a neighbour touching it survives, and
the limit is the published 1.15 x max. ASTRA needs both passes to see a
soma everywhere; here only where a crop looked (rule 0): the crops exist only
around the candidates of the activity-based search, and a cell that search
missed (crowded, small, or quiet somata) was otherwise lost even when the
FOV pass found it.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from astro3s.models.classes import PROCESSES, SOMA
from astro3s.postprocess.blend import blend_crops
from astro3s.postprocess.params import CombineParams
from astro3s.postprocess.rules import (class_masks, component_areas, merge_somata, remove_orphan_processes,
                                       small_somata_to_processes, soma_area_filter)
from astro3s.postprocess.split import label_somata, soma_centroids, split_disc, split_watershed

__all__ = ["Segmentation", "add_missing_cells", "combine", "combine_maps", "remove_cells", "upsample_segmentation"]

_MAX_ID = np.iinfo(np.uint16).max


@dataclass(frozen=True)
class Segmentation:
    """Cells of one FOV: label images and per-cell figures.

    Attributes
    ----------
    soma : ndarray of uint16, shape (H, W)
        0 background, cell ``k`` in ``1..n_cells`` (every id has a soma).
    processes : ndarray of uint16, shape (H, W)
        Same ids; no pixel is in both images.
    soma_area, process_area : ndarray of int64, shape (n_cells,)
        Pixels of each cell (index ``k - 1`` for id ``k``).
    centroid : ndarray of float64, shape (n_cells, 2)
        ``(y, x)`` soma centroid of each cell, px.
    params : CombineParams
        The parameters used.
    counts : dict of str to int
        What each rule did (components found, moved, merged, removed).
    """

    soma: np.ndarray
    processes: np.ndarray
    soma_area: np.ndarray
    process_area: np.ndarray
    centroid: np.ndarray
    params: CombineParams
    counts: dict[str, int] = field(default_factory=dict)

    @property
    def n_cells(self) -> int:
        """Number of cells."""
        return int(self.soma_area.size)

    @property
    def shape(self) -> tuple[int, int]:
        """FOV ``(H, W)``."""
        return (int(self.soma.shape[0]), int(self.soma.shape[1]))

    def cell_table(self) -> list[dict[str, Any]]:
        """Per-cell figures as JSON-ready dicts (``id``, areas in px, centroid ``(y, x)``)."""
        return [{"id": k + 1, "soma_area_px": int(self.soma_area[k]),
                 "process_area_px": int(self.process_area[k]),
                 "centroid_yx": [float(self.centroid[k, 0]), float(self.centroid[k, 1])]}
                for k in range(self.n_cells)]

    def summary(self) -> dict[str, Any]:
        """JSON-ready record: cells, rule counts and parameters."""
        return {"n_cells": self.n_cells, "cells": self.cell_table(), "counts": dict(self.counts),
                "params": self.params.as_dict()}


def _resolve(params: CombineParams | None, overrides: dict[str, Any]) -> CombineParams:
    params = CombineParams() if params is None else params
    return params.replace(**overrides) if overrides else params


def _n_components(mask: np.ndarray, connectivity: int) -> int:
    return int(component_areas(mask, connectivity=connectivity)[1].size - 1)


def _check_map(probs: np.ndarray, name: str) -> np.ndarray:
    probs = np.asarray(probs, dtype=np.float32)
    if probs.ndim != 3 or probs.shape[0] != 3:
        raise ValueError(f"{name} must be (3, H, W) class probabilities, got shape {probs.shape}")
    return probs


def combine_maps(cell_probs: np.ndarray, fov_probs: np.ndarray | None = None, *,
                 params: CombineParams | None = None, **overrides: Any) -> Segmentation:
    """Combine crop predictions already in FOV coordinates with the whole-FOV prediction.

    Parameters
    ----------
    cell_probs : array_like of float, shape (3, H, W)
        Class probabilities from the single-cell crops, pasted and blended
        into the FOV (:func:`~astro3s.postprocess.blend_crops`).
    fov_probs : array_like of float, shape (3, H, W), optional
        Class probabilities of the whole-FOV pass. None skips the merge
        (every crop soma is kept).
    params : CombineParams, optional
        Defaults: the published values (:class:`CombineParams`).
    **overrides
        Fields of :class:`CombineParams` replacing those of ``params``.

    Returns
    -------
    Segmentation

    Raises
    ------
    ConfigError
        Unknown or bad option.
    ValueError
        Maps of the wrong shape.
    """
    p = _resolve(params, overrides)
    conn = p.connectivity
    cell_probs = _check_map(cell_probs, "cell_probs")
    lo, hi = p.soma_area_range
    counts: dict[str, int] = {}

    soma, processes = class_masks(cell_probs)
    if p.process_threshold is not None:
        processes = ~soma & (cell_probs[PROCESSES] >= p.process_threshold)
    counts["crop_somata"] = _n_components(soma, conn)
    soma, processes = small_somata_to_processes(soma, processes, min_area=p.small_soma_factor * lo,
                                                connectivity=conn)
    counts["small_to_processes"] = counts["crop_somata"] - _n_components(soma, conn)

    if fov_probs is not None:
        fov_probs = _check_map(fov_probs, "fov_probs")
        if fov_probs.shape != cell_probs.shape:
            raise ValueError(f"fov_probs {fov_probs.shape} and cell_probs {cell_probs.shape} differ in shape")
        fov_soma, _ = class_masks(fov_probs)
        counts["fov_somata"] = _n_components(fov_soma, conn)
        if p.fov_area_factors is not None:
            f0, f1 = p.fov_area_factors
            fov_soma = soma_area_filter(fov_soma, min_area=f0 * lo, max_area=f1 * hi, connectivity=conn)
        counts["fov_somata_in_range"] = _n_components(fov_soma, conn)
        soma = merge_somata(soma, fov_soma, min_overlap=p.merge_overlap, keep_unmatched=p.keep_unmatched,
                            connectivity=conn)
        # FOV soma pixels the crops called processes are soma now
        processes &= ~soma
    counts["merged_somata"] = _n_components(soma, conn)

    f0, f1 = p.area_factors
    kept = soma_area_filter(soma, min_area=f0 * lo, max_area=f1 * hi, connectivity=conn)
    counts["size_removed"] = counts["merged_somata"] - _n_components(kept, conn)
    soma = kept

    before = int(processes.sum())
    processes = remove_orphan_processes(soma, processes, connectivity=conn)
    counts["orphan_process_px"] = before - int(processes.sum())

    soma_labels, n_cells = label_somata(soma, connectivity=conn)
    if n_cells > _MAX_ID:
        raise ValueError(f"{n_cells} cells do not fit uint16 label images (at most {_MAX_ID})")
    if p.split == "watershed":
        cell_probability = cell_probs[SOMA] + cell_probs[PROCESSES]
        process_labels = split_watershed(soma_labels, processes, cell_probability, connectivity=conn)
    else:
        process_labels = split_disc(soma_labels, processes, radius=p.disc_radius, connectivity=conn)
    counts["split_dropped_px"] = int(processes.sum()) - int((process_labels > 0).sum())
    counts["cells"] = n_cells
    return _segmentation(soma_labels, process_labels, n_cells, p, counts)


def _segmentation(soma_labels: np.ndarray, process_labels: np.ndarray, n_cells: int,
                  params: CombineParams, counts: dict[str, int]) -> Segmentation:
    centroid, soma_area = soma_centroids(soma_labels, n_cells)
    process_area = np.bincount(process_labels.ravel(), minlength=n_cells + 1)[1:n_cells + 1]
    return Segmentation(soma=soma_labels.astype(np.uint16), processes=process_labels.astype(np.uint16),
                        soma_area=soma_area.astype(np.int64), process_area=process_area.astype(np.int64),
                        centroid=centroid, params=params, counts=counts)


def combine(crop_probs: np.ndarray, crop_boxes: np.ndarray, fov_probs: np.ndarray | None, *,
            shape: tuple[int, int] | None = None, params: CombineParams | None = None,
            **overrides: Any) -> Segmentation:
    """Combine single-cell crop predictions and the whole-FOV prediction into cells.

    Parameters
    ----------
    crop_probs : array_like of float, shape (N, 3, S, S)
        Class probabilities of each crop (softmax of the network output),
        channels ordered as :data:`astro3s.models.CLASS_NAMES`.
    crop_boxes : array_like of int, shape (N, 4)
        ``(y0, x0, y1, x1)`` FOV box of each crop
        (:attr:`astro3s.preprocess.Preprocessed.crop_boxes`); the box sits
        centred in its crop (:func:`astro3s.preprocess.crop_offsets`).
    fov_probs : array_like of float, shape (3, H, W), or None
        Class probabilities of the whole-FOV pass; None skips the merge.
    shape : (int, int), optional
        FOV ``(H, W)``; needed only when ``fov_probs`` is None.
    params : CombineParams, optional
        Defaults: the published values.
    **overrides
        Fields of :class:`CombineParams` replacing those of ``params``, e.g.
        ``soma_area_range=(89, 345)``, ``split="disc"``.

    Returns
    -------
    Segmentation

    Raises
    ------
    ConfigError
        Unknown or bad option.
    ValueError
        Inputs of the wrong shape, or no FOV shape.

    Examples
    --------
    >>> probs = np.zeros((1, 3, 96, 96), np.float32); probs[:, 2] = 1
    >>> probs[0, :, 38:58, 38:58] = np.array([0, 1, 0])[:, None, None]   # a 400-px soma
    >>> fov = np.zeros((3, 128, 128), np.float32); fov[2] = 1; fov[:, 35:55, 35:55] = probs[0, :, 38:58, 38:58]
    >>> combine(probs, [[2, 2, 88, 88]], fov, soma_area_range=(300, 500)).n_cells
    1
    """
    p = _resolve(params, overrides)
    if fov_probs is not None:
        fov_probs = _check_map(fov_probs, "fov_probs")
        shape = fov_probs.shape[1:]
    if shape is None:
        raise ValueError("give fov_probs or the FOV shape")
    # rule 0: where no crop looked, the crop map is the FOV pass's (fov_outside_crops)
    outside = fov_probs if fov_probs is not None and p.fov_outside_crops else None
    cell_probs = blend_crops(crop_probs, crop_boxes, (int(shape[0]), int(shape[1])), blend=p.blend,
                             sigma=p.blend_sigma, outside=outside)
    return combine_maps(cell_probs, fov_probs, params=p)


def remove_cells(seg: Segmentation, drop: np.ndarray, *, count_key: str) -> Segmentation:
    """``seg`` without the cells flagged in ``drop``, the others renumbered ``1..m`` in their order.

    Parameters
    ----------
    seg : Segmentation
    drop : ndarray of bool, shape (n_cells,)
        Cell ``k`` at index ``k - 1``.
    count_key : str
        ``counts[count_key]`` records how many went (0 included).

    Returns
    -------
    Segmentation
    """
    drop = np.asarray(drop, bool)
    counts = {**seg.counts, count_key: int(drop.sum())}
    if not drop.any():
        return dataclasses.replace(seg, counts=counts)
    new_id = cell_renumbering(drop)
    counts["cells"] = int(new_id.max())
    return _segmentation(new_id[seg.soma], new_id[seg.processes], int(new_id.max()), seg.params, counts)


def cell_renumbering(drop: np.ndarray) -> np.ndarray:
    """The lookup ``new_id[old_id]`` that removes the cells flagged in ``drop`` and renumbers the others.

    Parameters
    ----------
    drop : ndarray of bool, shape (n_cells,)
        Cell ``k`` at index ``k - 1``.

    Returns
    -------
    ndarray of int64, shape (n_cells + 1,)
        0 for the background and the dropped cells, ``1..m`` for the kept ones in their order.
    """
    keep = ~np.asarray(drop, bool)
    new_id = np.zeros(len(keep) + 1, np.int64)
    new_id[1:][keep] = np.arange(1, int(keep.sum()) + 1)
    return new_id


def upsample_segmentation(seg: Segmentation, factor: int, shape: tuple[int, int], *,
                          channel_batch: int = 16) -> Segmentation:
    """A segmentation made on a ``factor x factor``-binned FOV, on the FOV's own pixels.

    Each cell's soma and process masks are resampled bilinearly (pixel centres
    as :func:`astro3s.preprocess.bin_frames` places them) and every pixel goes
    to the mask that covers it most, background included: outlines come out
    smooth instead of ``factor``-px staircases, and no pixel is in two cells.

    Parameters
    ----------
    seg : Segmentation
        Label images of shape ``(ceil(H / factor), ceil(W / factor))``.
    factor : int
        The bin side, px.
    shape : (int, int)
        ``(H, W)`` of the FOV.
    channel_batch : int
        Masks resampled at once (memory: ``channel_batch * H * W`` float32).

    Returns
    -------
    Segmentation
        Same ids, ``soma`` and ``processes`` of shape ``(H, W)``; ``counts``
        gains ``bin_factor``.
    """
    import torch
    import torch.nn.functional as F

    k = int(factor)
    height, width = (int(s) for s in shape)
    n = seg.n_cells
    # one label image over 2n + 1 classes: background, soma of cell i (i), processes of cell i (n + i)
    joint = seg.soma.astype(np.int64)
    joint = np.where((joint == 0) & (seg.processes > 0), seg.processes.astype(np.int64) + n, joint)
    best = torch.full((height, width), -1.0)
    which = torch.zeros((height, width), dtype=torch.int64)
    source = torch.from_numpy(joint)
    for start in range(0, 2 * n + 1, int(channel_batch)):  # loop over batches of masks, not pixels
        classes = torch.arange(start, min(start + int(channel_batch), 2 * n + 1))
        onehot = (source[None] == classes[:, None, None]).float()[None]
        big = F.interpolate(onehot, scale_factor=k, mode="bilinear", align_corners=False)[0, :, :height, :width]
        value, index = big.max(dim=0)
        better = value > best
        best = torch.where(better, value, best)
        which = torch.where(better, classes[index], which)
    labels = which.numpy()
    soma = np.where((labels >= 1) & (labels <= n), labels, 0)
    processes = np.where(labels > n, labels - n, 0)
    counts = {**seg.counts, "bin_factor": k}
    return _segmentation(soma, processes, n, seg.params, counts)


def add_missing_cells(primary: Segmentation, secondary: Segmentation) -> Segmentation:
    """``primary`` with the cells of ``secondary`` whose soma touches no soma of ``primary``.

    Two segmentations of one FOV (e.g. made at two scales) rarely miss the
    same cells: a cell of ``secondary`` is added when none of its soma pixels
    is a soma pixel of ``primary``; its soma takes its pixels (a soma is
    never a neighbour's process), its processes only the pixels no cell holds.
    Cells of ``primary`` keep their ids; added cells follow, in ``secondary``'s
    order.

    Parameters
    ----------
    primary, secondary : Segmentation
        Label images of the same shape ``(H, W)``.

    Returns
    -------
    Segmentation
        ``primary``'s parameters; ``counts["cells_added"]`` says how many came from ``secondary``.
    """
    if primary.soma.shape != secondary.soma.shape:
        raise ValueError(f"segmentations of different shapes: {primary.soma.shape} and {secondary.soma.shape}")
    n, m = primary.n_cells, secondary.n_cells
    touching = np.bincount(secondary.soma[primary.soma > 0].ravel(), minlength=m + 1)[1:m + 1] > 0
    added = ~touching & (secondary.soma_area > 0)
    new_id = np.zeros(m + 1, np.int64)
    new_id[1:][added] = np.arange(n + 1, n + 1 + int(added.sum()))
    soma = primary.soma.astype(np.int64)
    processes = primary.processes.astype(np.int64)
    new_soma = new_id[secondary.soma]
    soma = np.where(new_soma > 0, new_soma, soma)
    processes[new_soma > 0] = 0
    new_processes = new_id[secondary.processes]
    processes = np.where((new_processes > 0) & (soma == 0) & (processes == 0), new_processes, processes)
    counts = {**primary.counts, "cells_added": int(added.sum())}
    n_cells = n + int(added.sum())
    counts["cells"] = n_cells
    return _segmentation(soma, processes, n_cells, primary.params, counts)
