"""Detected events against the simulator's event ground truth.

Rules (per pair of cells matched by soma IoU >= 0.5, per compartment, ROI by ROI):

- Each true ROI (the soma, each process ROI) is scored against the predicted
  ROIs that stand for it (:func:`roi_correspondence`: the matched cell's
  soma; the process ROI of the matched cell that a predicted one overlaps
  most). Events of a predicted ROI that stands for no true ROI are false
  detections. Counts add up over ROIs, cells and movies.
- On each side, events of one ROI whose onsets are closer than the tolerance
  ``max(tol_s, tol_frames / fs)`` (1.5 s, 2 frames) are one event (chains
  included): overlapping true events that close count as one.
- A detected and a true event match when their onsets (the earliest of each
  merged group) are within the tolerance; pairs are made one to one, closest
  first.
- True events an ideal detector could not see are optional: matched, they
  are neither a hit nor a false detection; missed, not a miss. They are those
  with a matched-filter SNR under ``min_snr`` (see
  :mod:`astro3s.simulate.events`), those that start before the first frame
  (matched at frame 0, where a detector sees them start) or peak after the
  last, and the events of *other* sources whose light reaches the ROI: a
  neighbouring cell's (its territory overlaps the ROI), distractors' (neuron
  transients, look-alikes), and the cell's own events of another compartment
  (a soma-only event blurred into a process ROI by the PSF, a microdomain
  event into the soma): whole-cell events and waves belong to every
  compartment, soma-only events to the soma, microdomain events to the
  processes. They are in the trace, so detecting them is no error, but they
  are not this compartment's events, so missing them is none either. A merged
  group is optional when all its events are (``own_only=False`` requires every
  visible event).
- Onset error: ``|detected - true|`` onset of matched required events, in
  frames. Delay error: for matched process events whose true event has a
  soma -> process delay and whose detection is linked to a somatic event,
  ``|detected delay - true delay|`` in seconds; reported over all of them and
  over those whose true delay exceeds 0.25 s (waves: a whole-cell event
  reaches soma and processes together).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

__all__ = ["CompartmentScores", "cluster_onsets", "match_compartment", "match_onsets",
           "required_events", "roi_correspondence", "score_movie"]

#: Matched-filter SNR below which a true event is optional.
MIN_SNR = 5.0
#: True delays longer than this (s) are reported apart (waves; whole-cell events have none).
NONZERO_DELAY_S = 0.25
#: Sources of true events that no astrocyte made (optional).
DISTRACTOR_SOURCES = ("neuron", "lookalike")


def cluster_onsets(onsets: np.ndarray, tol: float) -> np.ndarray:
    """Group labels ``0..g-1`` of onsets (any order) whose sorted gaps are all <= ``tol`` (chains).

    Parameters
    ----------
    onsets : ndarray of float, shape (n,)
    tol : float

    Returns
    -------
    labels : ndarray of int64, shape (n,)
        Increasing with time.
    """
    onsets = np.asarray(onsets, np.float64)
    if not len(onsets):
        return np.zeros(0, np.int64)
    order = np.argsort(onsets, kind="stable")
    new = np.concatenate(([True], np.diff(onsets[order]) > tol))
    labels = np.empty(len(onsets), np.int64)
    labels[order] = np.cumsum(new) - 1
    return labels


def match_onsets(pred: np.ndarray, true: np.ndarray, tol: float) -> tuple[np.ndarray, np.ndarray]:
    """One-to-one pairs of onsets within ``tol``, closest first.

    Returns
    -------
    pred_idx, true_idx : ndarray of int64, shape (m,)
    """
    pred, true = np.asarray(pred, np.float64), np.asarray(true, np.float64)
    if not len(pred) or not len(true):
        return np.zeros(0, np.int64), np.zeros(0, np.int64)
    dist = np.abs(pred[:, None] - true[None, :])
    ii, jj = np.nonzero(dist <= tol)
    order = np.argsort(dist[ii, jj], kind="stable")
    used_p, used_t = np.zeros(len(pred), bool), np.zeros(len(true), bool)
    out_p, out_t = [], []
    for i, j in zip(ii[order], jj[order]):  # a loop over candidate pairs
        if not used_p[i] and not used_t[j]:
            used_p[i] = used_t[j] = True
            out_p.append(i)
            out_t.append(j)
    return np.asarray(out_p, np.int64), np.asarray(out_t, np.int64)


@dataclass
class CompartmentScores:
    """Event counts and errors of one compartment: of one cell (:func:`match_compartment`), or pooled over
    cells and movies (:meth:`add`)."""

    tp: int = 0
    fp: int = 0
    fn: int = 0
    onset_errors_frames: list[float] = field(default_factory=list)
    delay_errors_s: list[float] = field(default_factory=list)
    true_delays_s: list[float] = field(default_factory=list)

    def add(self, other: CompartmentScores) -> None:
        self.tp += other.tp
        self.fp += other.fp
        self.fn += other.fn
        self.onset_errors_frames += list(other.onset_errors_frames)
        self.delay_errors_s += list(other.delay_errors_s)
        self.true_delays_s += list(other.true_delays_s)

    def as_dict(self) -> dict[str, Any]:
        """Precision, recall, F1, counts, median onset error (frames), median delay error (s)."""
        def ratio(a: int, b: int) -> float | None:
            return None if b == 0 else round(a / b, 4)

        precision, recall = ratio(self.tp, self.tp + self.fp), ratio(self.tp, self.tp + self.fn)
        f1 = ratio(2 * self.tp, 2 * self.tp + self.fp + self.fn)
        def med(v: Any) -> float | None:
            return None if not len(v) else round(float(np.median(v)), 4)

        delayed = np.abs(np.asarray(self.true_delays_s, np.float64)) > NONZERO_DELAY_S
        errors = np.asarray(self.delay_errors_s, np.float64)
        return {"precision": precision, "recall": recall, "f1": f1, "tp": self.tp, "fp": self.fp, "fn": self.fn,
                "median_onset_error_frames": med(self.onset_errors_frames),
                "median_delay_error_s": med(errors), "n_delays": len(errors),
                "median_delay_error_nonzero_s": med(errors[delayed]), "n_nonzero_delays": int(delayed.sum())}


def _groups(onsets: np.ndarray, values: list[np.ndarray], tol: float) -> tuple[np.ndarray, list[np.ndarray]]:
    """Merge onsets within ``tol``; per group the earliest onset and, for each array of ``values``,
    the value of the group's earliest member (for bool arrays: whether any member is True)."""
    labels = cluster_onsets(onsets, tol)
    n = int(labels.max(initial=-1)) + 1
    order = np.lexsort((onsets, labels))
    first = order[np.concatenate(([True], np.diff(labels[order]) != 0))] if len(order) else order
    merged = []
    for v in values:
        v = np.asarray(v)
        if v.dtype == bool:
            merged.append(np.bincount(labels, weights=v.astype(np.float64), minlength=n) > 0)
        else:
            merged.append(v[first])
    return np.asarray(onsets, np.float64)[first], merged


def match_compartment(pred_onsets: np.ndarray, pred_delays: np.ndarray, true_onsets: np.ndarray,
                      true_required: np.ndarray, true_delays: np.ndarray, *, tol: float,
                      fs: float) -> CompartmentScores:
    """Score one cell's compartment (all times in seconds; delays NaN where undefined)."""
    p_on, (p_delay,) = _groups(pred_onsets, [pred_delays], tol)
    t_on, (t_required, t_delay) = _groups(true_onsets, [np.asarray(true_required, bool), true_delays], tol)
    ip, it = match_onsets(p_on, t_on, tol)
    res = CompartmentScores()
    hit_required = t_required[it]
    res.tp = int(hit_required.sum())
    res.fn = int(t_required.sum()) - res.tp
    res.fp = len(p_on) - len(ip)
    ip, it = ip[hit_required], it[hit_required]
    res.onset_errors_frames = (np.abs(p_on[ip] - t_on[it]) * fs).tolist()
    both = np.isfinite(p_delay[ip]) & np.isfinite(t_delay[it])
    res.delay_errors_s = np.abs(p_delay[ip][both] - t_delay[it][both]).tolist()
    res.true_delays_s = t_delay[it][both].tolist()
    return res


def required_events(truth: Any, *, duration_s: float, min_snr: float = MIN_SNR, own_only: bool = True) -> np.ndarray:
    """Which true events a detector must find (the others are optional; see the module docstring).

    Parameters
    ----------
    truth : EventTruth
    duration_s : float
        Movie length (s): events peaking after it are optional.
    min_snr : float
    own_only : bool
        Only the cell's own events of the compartment are required.

    Returns
    -------
    ndarray of bool, shape (n,)
    """
    source = np.asarray(truth.source, dtype=object)
    onset = np.asarray(truth.onset_s, np.float64)
    required = (np.asarray(truth.snr) >= min_snr) & (onset >= 0) & (np.asarray(truth.peak_s) < duration_s) & \
        ~np.isin(source, DISTRACTOR_SOURCES)
    if own_only:
        compartment = np.asarray(truth.compartment, dtype=object)
        mine = np.isin(source, ("whole", "wave")) | ((source == "soma") & (compartment == "soma")) | \
            ((source == "micro") & (compartment == "process"))
        required &= (np.asarray(truth.source_cell) == np.asarray(truth.cell)) & mine
    return required


def roi_correspondence(pred_soma: np.ndarray, pred_processes: np.ndarray, gt_soma: np.ndarray,
                       gt_processes: np.ndarray, pred_ids: np.ndarray, gt_ids: np.ndarray) -> dict[str, str]:
    """Which ground-truth ROI each ROI of a matched predicted cell stands for.

    A predicted soma is its matched cell's true soma; a predicted process ROI
    (``Proc_###_##``) is the process ROI of the matched true cell that it
    overlaps most (none if it overlaps none).

    Parameters
    ----------
    pred_soma, pred_processes, gt_soma, gt_processes : ndarray of int, shape (H, W)
        Label images.
    pred_ids, gt_ids : ndarray of int, shape (m,)
        Matched cells.

    Returns
    -------
    dict of str to str
        Predicted ROI name -> true ROI name.
    """
    from astro3s.correlation.traces import roi_table

    p_names, p_cells, p_kinds, p_index = roi_table(np.asarray(pred_soma, np.int64),
                                                   np.asarray(pred_processes, np.int64))
    g_names, g_cells, g_kinds, g_index = roi_table(np.asarray(gt_soma, np.int64), np.asarray(gt_processes, np.int64))
    both = (p_index >= 0) & (g_index >= 0)
    overlap = np.zeros((len(p_names), len(g_names)), np.int64)
    np.add.at(overlap, (p_index[both], g_index[both]), 1)
    partner = dict(zip(np.asarray(pred_ids).tolist(), np.asarray(gt_ids).tolist()))
    out: dict[str, str] = {}
    for i, (name, cell, kind) in enumerate(zip(p_names, p_cells, p_kinds)):  # a loop over predicted ROIs
        gid = partner.get(int(cell))
        if gid is None:
            continue
        same = (g_cells == gid) & (np.asarray(g_kinds, dtype=object) == kind)
        if kind == "soma" and same.any():
            out[name] = g_names[int(np.flatnonzero(same)[0])]
            continue
        score = np.where(same, overlap[i], 0)
        if score.max(initial=0) > 0:
            out[name] = g_names[int(np.argmax(score))]
    return out


def score_movie(pred: Any, truth: Any, pred_ids: np.ndarray, gt_ids: np.ndarray, *, fs: float, n_frames: int,
                roi_map: dict[str, str] | None = None, min_snr: float = MIN_SNR, tol_s: float = 1.5,
                tol_frames: float = 2.0, own_only: bool = True) -> dict[str, CompartmentScores]:
    """Event scores of one movie, per compartment (``soma``, ``process``), over the matched cells.

    Events are compared ROI by ROI: the events of a true ROI against those of
    the predicted ROIs that stand for it (``roi_map``); the events of a
    predicted ROI that stands for no true ROI are false detections.

    Parameters
    ----------
    pred : EventTable
        Detected events (``kind`` soma/process; domain events are not scored).
    truth : EventTruth
        The simulator's ``ground_truth/events.csv``.
    pred_ids, gt_ids : ndarray of int, shape (m,)
        Matched cells (:func:`astro3s.metrics.match_instances`).
    fs : float
        Frame rate (Hz).
    n_frames : int
        Movie length; true events peaking after it are optional.
    roi_map : dict of str to str, optional
        Predicted ROI -> true ROI (:func:`roi_correspondence`); default: the
        same names (predictions made on the true ROIs).
    min_snr, tol_s, tol_frames, own_only
        See the module docstring.

    Returns
    -------
    dict of str to CompartmentScores
    """
    tol = max(float(tol_s), float(tol_frames) / float(fs))
    duration = n_frames / float(fs)
    p_roi = np.asarray(pred.roi, dtype=object)
    p_onset = np.asarray(pred.onset_frame, np.float64) / fs
    p_delay = np.asarray(pred.delay_frames, np.float64) / fs
    t_roi = np.asarray(truth.roi, dtype=object)
    required = required_events(truth, duration_s=duration, min_snr=min_snr, own_only=own_only)
    # an event under way at the start is seen to start at frame 0
    true_onset = np.maximum(np.asarray(truth.onset_s, np.float64), 0.0)
    true_delay = np.asarray(truth.delay_s, np.float64)
    out = {k: CompartmentScores() for k in ("soma", "process")}
    pred_cell, true_cell = np.asarray(pred.cell_id), np.asarray(truth.cell)
    for pid, gid in zip(np.asarray(pred_ids), np.asarray(gt_ids)):  # a loop over matched cells
        for kind, scores in out.items():
            mine_p = (pred_cell == pid) & (np.asarray(pred.kind, dtype=object) == kind)
            mine_t = (true_cell == gid) & (np.asarray(truth.compartment, dtype=object) == kind)
            target = {r: (roi_map.get(r) if roi_map is not None else r) for r in set(p_roi[mine_p])}
            for g in sorted(set(t_roi[mine_t]) | {v for v in target.values() if v is not None}):  # true ROIs
                ps = mine_p & np.isin(p_roi, [r for r, v in target.items() if v == g])
                ts = mine_t & (t_roi == g)
                scores.add(match_compartment(p_onset[ps], p_delay[ps], true_onset[ts], required[ts], true_delay[ts],
                                             tol=tol, fs=fs))
            for r in sorted(r for r, v in target.items() if v is None):  # predicted ROIs standing for none
                ps = mine_p & (p_roi == r)
                scores.add(match_compartment(p_onset[ps], p_delay[ps], np.zeros(0), np.zeros(0, bool), np.zeros(0),
                                             tol=tol, fs=fs))
    return out
