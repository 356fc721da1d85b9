"""Training-set fit of the data-dependent pre-processing parameters.

ASTRA tunes three things per dataset by hand, from the annotated training
FOVs (``notebook/Set_parameters.ipynb`` of the reference implementation):
the soma area range (D1: 89-345 px), the local-filter thresholds ``th1/th2``
(the most selective pair that loses fewer than 5 % of the annotated cell
pixels) and the activity-map percentile (best candidate F1 over 30-90).
:func:`fit_parameters` does the same automatically, plus the threshold of the
candidates' recall extension (see :mod:`astro3s.preprocess.candidates`), so
that inference needs no hand-tuning.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

import numpy as np

from astro3s.errors import InputError
from astro3s.preprocess._backend import resolve_device
from astro3s.preprocess.candidates import find_candidates
from astro3s.preprocess.local_filter import candidate_boxes, candidate_centres
from astro3s.preprocess.motion import as_movie
from astro3s.preprocess.params import PreprocessParams
from astro3s.preprocess.pipeline import crop_filters
from astro3s.preprocess.streaming import effective_chunk_frames, stream_movie

__all__ = ["candidate_prf", "candidate_scores", "fit_parameters", "soma_areas"]

log = logging.getLogger(__name__)

#: ASTRA's (th1, th2) grid, most selective first, extended by two looser pairs
FILTER_PAIRS = ((0.30, 0.15), (0.25, 0.10), (0.20, 0.07), (0.15, 0.05), (0.10, 0.03), (0.05, 0.02))
PERCENTILES = (30.0, 40.0, 50.0, 60.0, 70.0, 80.0, 90.0)
EXTENSIONS = (0.55, 0.5, 0.45, 0.4, 0.35, 0.3, 0.25, 0.2)


def _split_annotation(annotation: Any) -> tuple[np.ndarray, np.ndarray | None]:
    if isinstance(annotation, dict):
        return np.asarray(annotation["soma"]), annotation.get("processes")
    if isinstance(annotation, (tuple, list)):
        soma, processes = annotation[0], (annotation[1] if len(annotation) > 1 else None)
        return np.asarray(soma), None if processes is None else np.asarray(processes)
    return np.asarray(annotation), None


def soma_areas(soma: np.ndarray) -> np.ndarray:
    """Pixel count of each soma label present; int64, shape (N,)."""
    counts = np.bincount(np.asarray(soma, dtype=np.int64).ravel())[1:]
    return counts[counts > 0]


def candidate_scores(candidates: np.ndarray, soma: np.ndarray) -> tuple[int, int, int, int]:
    """Overlap counts between candidate labels and ground-truth somata.

    Returns
    -------
    hit_cells, n_cells, matched, n_candidates : int
        Somata touched by a candidate; somata; one-to-one matches (each soma's
        most-overlapping candidate, counted once per candidate, so that one
        component merging several somata is one match); candidates.
    """
    candidates = np.asarray(candidates, dtype=np.int64)
    soma = np.asarray(soma, dtype=np.int64)
    both = (candidates > 0) & (soma > 0)
    n_cells = len(np.unique(soma[soma > 0]))
    n_cands = len(np.unique(candidates[candidates > 0]))
    if not both.any():
        return 0, n_cells, 0, n_cands
    pairs, overlap = np.unique(np.stack([soma[both], candidates[both]]), axis=1, return_counts=True)
    order = np.lexsort((-overlap, pairs[0]))  # per soma, largest overlap first
    first = np.ones(order.size, bool)
    first[1:] = pairs[0, order][1:] != pairs[0, order][:-1]
    best_candidate = pairs[1, order][first]
    return int(first.sum()), n_cells, len(np.unique(best_candidate)), n_cands


def candidate_prf(hit: int, n_cells: int, matched: int, n_cands: int) -> tuple[float, float, float]:
    """Candidate precision, recall and F1 from the counts of :func:`candidate_scores` (summed over FOVs).

    Somata and candidates are matched one to one, so a component merging
    several somata is one true candidate; ratios with a zero denominator are 0.

    Returns
    -------
    precision, recall, f1 : float
    """
    recall = matched / n_cells if n_cells else 0.0
    precision = matched / n_cands if n_cands else 0.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return precision, recall, f1


def _f1(hit: int, n_cells: int, matched: int, n_cands: int) -> float:
    return candidate_prf(hit, n_cells, matched, n_cands)[2]


def fit_parameters(movies: Sequence[Any], annotations: Sequence[Any], *,
                   base: PreprocessParams | None = None, percentiles: Sequence[float] = PERCENTILES,
                   filter_pairs: Sequence[tuple[float, float]] = FILTER_PAIRS,
                   extensions: Sequence[float] = EXTENSIONS, max_pixel_loss: float = 0.05,
                   min_recall: float = 0.95, progress: bool | None = None) -> PreprocessParams:
    """Estimate the data-dependent parameters from annotated training movies.

    Parameters
    ----------
    movies : sequence of Movie or ndarray (T, H, W)
    annotations : sequence
        Per movie, ``(soma, processes)`` uint16 label images (as returned by
        :func:`astro3s.io.read_roiset`), a dict with those keys, or a soma
        label image alone (soma-only annotations; the filter fit then uses the somata).
    base : PreprocessParams, optional
        Everything not fitted is taken from here (default: published values).
    percentiles : sequence of float
        Activity-map percentiles tried.
    filter_pairs : sequence of (float, float)
        ``(th1, th2)`` pairs tried, most selective first.
    extensions : sequence of float
        Recall-extension thresholds tried (fractions of ``T``), highest first.
    max_pixel_loss : float
        Largest fraction of annotated cell pixels (inside the candidate boxes)
        that the local filter may remove (0.05).
    min_recall : float
        Candidate recall the extension threshold must reach (0.95).

    Returns
    -------
    PreprocessParams
        ``base`` with ``soma_area_range``, ``activity_percentile``,
        ``extension_threshold``, ``th1`` and ``th2`` replaced, and a ``note``.

    Notes
    -----
    - soma area range: smallest and largest annotated soma (ASTRA's choice).
    - activity percentile: the one maximising the candidate F1 pooled over
      the movies, with the published search (no extension); somata and
      candidates are matched one to one (each soma to its most-overlapping
      candidate, a candidate at most once). Ties go to the value nearest the base.
    - extension threshold: off when the published search already touches
      ``min_recall`` of the somata, else the highest threshold that does.
    - ``th1/th2``: the first pair (most selective) that keeps all but
      ``max_pixel_loss`` of the annotated cell pixels inside boxes centred on
      the annotated somata, like ASTRA's tuning.
    """
    base = base or PreprocessParams()
    if len(movies) != len(annotations) or not movies:
        raise InputError(None, f"fit_parameters needs one annotation per movie (got {len(movies)} movies, "
                         f"{len(annotations)} annotations).")
    labels = [_split_annotation(a) for a in annotations]
    areas = np.concatenate([soma_areas(soma) for soma, _ in labels])
    if areas.size == 0:
        raise InputError(None, "the annotations contain no soma.", "check the RoiSets' soma names.")
    area_range = (float(areas.min()), float(areas.max()))
    params = base.replace(soma_area_range=area_range)
    log.info("fit: %d somata, area %.0f-%.0f px", areas.size, *area_range)
    device = resolve_device(params.device)
    percentiles = [float(q) for q in percentiles]

    search = dict(soma_area_range=area_range, threshold_start=params.threshold_start,
                  threshold_step=params.threshold_step, threshold_floor=params.threshold_floor,
                  expected_cells=params.expected_cells, start_area_fraction=params.start_area_fraction,
                  min_area_fraction=params.min_area_fraction, area_step_fraction=params.area_step_fraction,
                  last_area_fraction=params.last_area_fraction, tiny_area_fraction=params.tiny_area_fraction,
                  fallback_floor=params.fallback_floor)
    score_ext = np.zeros((len(percentiles), len(extensions) + 1, 4), np.int64)
    lost = np.zeros(len(filter_pairs), np.int64)
    total = 0
    for movie, (soma, processes) in zip(movies, labels):  # loop over training movies
        movie = as_movie(movie)
        n_frames, height, width = movie.shape
        if soma.shape != (height, width):
            raise InputError(getattr(movie, "path", None), f"annotation shape {soma.shape} differs from the "
                             f"movie's frames {(height, width)}.")
        streamed = stream_movie(movie, params, device, activity_percentiles=percentiles, progress=progress)
        for k in range(len(percentiles)):
            for e, ext in enumerate([None, *extensions]):
                cands, _ = find_candidates(streamed.activity[k], n_frames, extension_threshold=ext, **search)
                score_ext[k, e] += candidate_scores(cands, soma)
        # local filter around the annotated somata
        boxes = candidate_boxes(candidate_centres(soma), (height, width), params.filter_box)
        boxes = boxes[~np.isnan(candidate_centres(soma)).any(axis=1)]
        cell = soma > 0 if processes is None else (soma > 0) | (processes > 0)
        masks, _ = crop_filters(streamed.corrected, boxes, percentile=params.filter_percentile,
                                pairs=list(filter_pairs), stride=params.percentile_stride,
                                chunk_frames=effective_chunk_frames(params, 4 * height * width),
                                memory_budget_mb=params.memory_budget_mb)
        inside = np.zeros((height, width), bool)
        kept = np.zeros((len(filter_pairs), height, width), bool)
        for n, (y0, x0, y1, x1) in enumerate(boxes):  # loop over annotated cells
            inside[y0:y1, x0:x1] = True
            kept[:, y0:y1, x0:x1] |= masks[:, n]
        total += int((cell & inside).sum())
        lost += ((cell & inside)[None] & ~kept).sum(axis=(1, 2))
    score_q = score_ext[:, 0]

    f1 = np.array([_f1(*s) for s in score_q])
    # ties: prefer the percentile closest to the base value
    order = np.lexsort((np.abs(np.asarray(percentiles) - base.activity_percentile), -np.round(f1, 6)))
    best_q = int(order[0])
    recall = score_ext[best_q, :, 0] / np.maximum(score_ext[best_q, :, 1], 1)
    if recall[0] >= min_recall:
        extension = None
    else:
        ok = np.flatnonzero(recall[1:] >= min_recall)
        extension = float(extensions[ok[0]] if ok.size else extensions[int(np.argmax(recall[1:]))])
    loss = lost / max(total, 1)
    ok = np.flatnonzero(loss < max_pixel_loss)
    th1, th2 = filter_pairs[int(ok[0]) if ok.size else len(filter_pairs) - 1]
    log.info("fit: activity percentile %g (candidate F1 %s), extension %s (recall %s), th1/th2 %g/%g "
             "(pixel loss %s)", percentiles[best_q], np.round(f1, 3).tolist(), extension,
             np.round(recall, 3).tolist(), th1, th2, np.round(loss, 3).tolist())
    note = (f"fit_parameters on {len(movies)} movie(s), {areas.size} somata: candidate F1 "
            f"{f1[best_q]:.3f} at percentile {percentiles[best_q]:g}; recall "
            f"{recall[0 if extension is None else 1 + list(extensions).index(extension)]:.3f}; "
            f"filter pixel loss {loss[list(filter_pairs).index((th1, th2))]:.3f}")
    return params.replace(activity_percentile=percentiles[best_q], extension_threshold=extension,
                          th1=float(th1), th2=float(th2), note=note)
