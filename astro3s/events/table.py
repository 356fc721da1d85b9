"""The events of every ROI of a movie: one table, ``events.csv``, and the per-cell figures of ``summary.json``.

``events.csv`` has one row per event, ordered by cell, then ``soma``,
``process``, ``domain`` ROIs (in the order of ``traces.csv``), then onset:

============== =====================================================================
cell_id        the cell's label in ``soma.tif``
kind           ``soma`` | ``process`` | ``domain``
roi            ``Soma_###``, ``Proc_###_##`` or ``Domain_###`` (the domain without the
               cell's soma and processes)
onset_frame    first frame of the event (0-based)
peak_frame     frame of its peak
end_frame      last frame (back to 10 % of the amplitude, or the next event's onset)
onset_s        ``onset_frame / fs``; empty without a frame rate
peak_s         ``peak_frame / fs``; empty without a frame rate
amplitude_dff  peak minus the level the event rises from (baseline, or the trough
               of an event it rides on), dF/F
duration_s     ``(end_frame - onset_frame + 1) / fs``; empty without a frame rate
rise_s         10-90 % rise time; empty without a frame rate or when unmeasurable
decay_s        peak to 1/e of the amplitude; empty when the trace does not get there
auc            area above the starting level from onset to end, dF/F x s (dF/F x
               frames without a frame rate)
snr            amplitude / per-frame noise SD of the trace
soma_event     for a process or domain event: the 0-based row (in this file) of the
               somatic event it follows, or empty
delay_s        its onset minus that somatic event's onset (frames / fs); empty if none
============== =====================================================================
"""

from __future__ import annotations

import csv
import dataclasses
import io
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from astro3s.events.detect import TraceEvents, detect_events
from astro3s.events.link import link_to_soma
from astro3s.events.params import EventParams

__all__ = ["EVENT_CSV_COLUMNS", "EventTable", "cell_event_summary", "read_events_csv", "roi_events",
           "write_events_csv"]

EVENT_CSV_COLUMNS = ("cell_id", "kind", "roi", "onset_frame", "peak_frame", "end_frame", "onset_s", "peak_s",
                     "amplitude_dff", "duration_s", "rise_s", "decay_s", "auc", "snr", "soma_event", "delay_s")
_KIND_ORDER = {"soma": 0, "process": 1, "domain": 2}


@dataclass(frozen=True)
class EventTable:
    """Events of every ROI of one movie, one entry per event, times in frames.

    Attributes
    ----------
    cell_id : ndarray of int64, shape (n,)
    kind, roi : list of str, length n
    onset_frame, peak_frame, end_frame : ndarray of int64, shape (n,)
    amplitude_dff, rise_frames, decay_frames, auc_frames, snr : ndarray of float64, shape (n,)
        ``auc_frames`` in dF/F x frames; NaN where unmeasured.
    soma_event : ndarray of int64, shape (n,)
        Index of the linked somatic event, -1 for none.
    delay_frames : ndarray of float64, shape (n,)
        NaN where not linked.
    fs : float or None
    n_frames : int
    roi_names : list of str
        Every ROI that was analysed (with or without events), in order.
    roi_cells : ndarray of int64
        Their cells.
    roi_kinds : list of str
        Their kinds.
    roi_neuropil_coef : ndarray of float64
        Share of its neuropil surround's fluctuations taken off each ROI's
        trace before detection (0: none; NaN: no surround measured).
    roi_dff : ndarray of float32, shape (T, len(roi_names))
        The trace each ROI's events were detected on, as dF/F of the
        detector's baseline: the neuropil-corrected fluorescence over that
        baseline, minus 1 (for a trace set without raw fluorescence, its dF/F
        less the baseline); event amplitudes are heights on it. For figures;
        shape (0, 0) when not kept (a table read from ``events.csv``).
    """

    cell_id: np.ndarray
    kind: list[str]
    roi: list[str]
    onset_frame: np.ndarray
    peak_frame: np.ndarray
    end_frame: np.ndarray
    amplitude_dff: np.ndarray
    rise_frames: np.ndarray
    decay_frames: np.ndarray
    auc_frames: np.ndarray
    snr: np.ndarray
    soma_event: np.ndarray
    delay_frames: np.ndarray
    fs: float | None
    n_frames: int
    roi_names: list[str] = field(default_factory=list)
    roi_cells: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))
    roi_kinds: list[str] = field(default_factory=list)
    roi_neuropil_coef: np.ndarray = field(default_factory=lambda: np.zeros(0, np.float64))
    roi_dff: np.ndarray = field(default_factory=lambda: np.zeros((0, 0), np.float32))

    def __len__(self) -> int:
        return len(self.roi)

    def detected_dff(self, names: Sequence[str]) -> np.ndarray | None:
        """The traces the events of ROIs ``names`` were detected on (see ``roi_dff``), for figures.

        Returns
        -------
        ndarray of float32, shape (T, len(names)), or None
            NaN columns for ROIs that were not analysed; None when the table
            keeps no traces.
        """
        dff = np.asarray(self.roi_dff)
        if dff.ndim != 2 or dff.shape[1] != len(self.roi_names) or not dff.shape[1]:
            return None
        column = {name: j for j, name in enumerate(self.roi_names)}
        pick = np.array([column.get(name, -1) for name in names], np.int64)  # a lookup per ROI name
        out = np.full((dff.shape[0], len(pick)), np.nan, np.float32)
        out[:, pick >= 0] = dff[:, pick[pick >= 0]]
        return out

    def detected_or(self, names: Sequence[str], fallback: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Each ROI's detected trace (:meth:`detected_dff`) where it was analysed, else ``fallback``'s column.

        Parameters
        ----------
        names : sequence of str
            ROIs, in the order of ``fallback``'s columns.
        fallback : ndarray, shape (T, len(names))
            E.g. their uncorrected dF/F.

        Returns
        -------
        traces : ndarray, shape (T, len(names))
            ``fallback`` itself when no column is detected.
        detected : ndarray of bool, shape (len(names),)
            Which columns are detected traces (none when the table keeps no
            traces or they have another number of frames).
        """
        fallback = np.asarray(fallback)
        dff = self.detected_dff(names)
        if dff is None or dff.shape != fallback.shape:
            return fallback, np.zeros(fallback.shape[1] if fallback.ndim == 2 else 0, bool)
        have = np.isfinite(dff).any(axis=0)
        return np.where(have, dff, fallback), have

    def seconds(self, frames: np.ndarray) -> np.ndarray:
        """``frames / fs`` (NaN everywhere without a frame rate)."""
        frames = np.asarray(frames, np.float64)
        return frames / self.fs if self.fs else np.full(frames.shape, np.nan)


def roi_events(traces: Sequence[Any], *,
               params: EventParams | None = None) -> tuple[EventTable, dict[str, TraceEvents]]:
    """Detect the events of every ROI and link process/domain events to somatic ones.

    Parameters
    ----------
    traces : sequence of RoiTraces
        E.g. the soma/process traces and the domain traces of a movie; same
        number of frames and frame rate (the first one's ``fs`` is used).
        Events are detected on the raw fluorescence ``f`` (on ``dff`` for
        traces without one), less the fluctuations of the ROI's neuropil
        surround where the traces carry them (``fneu``; see
        ``params.neuropil_max_coef``), and amplitudes and areas expressed as dF/F of
        the detector's own baseline, which leaves the events out (the
        running-percentile F0 of ``dff`` is lifted by a busy stretch).
    params : EventParams, optional

    Returns
    -------
    table : EventTable
        With ``roi_dff``: each ROI's detected trace as dF/F of the
        detector's baseline, computed here once for the figures.
    per_roi : dict of str to TraceEvents
        Each ROI's detection (baseline, noise, events), for figures.
    """
    params = params or EventParams()
    traces = [t for t in traces if t is not None]
    fs = traces[0].fs if traces else None
    n_frames = int(traces[0].dff.shape[0]) if traces else 0
    names, cells, kinds, columns, coefs, is_raw = [], [], [], [], [], []
    for tr in traces:  # a loop over trace sets
        raw, coef = _corrected(tr, params)
        coefs.extend(coef.tolist())
        for j, name in enumerate(tr.names):  # a loop over ROIs
            names.append(name)
            cells.append(int(tr.cell_ids[j]))
            kinds.append(tr.kinds[j])
            columns.append(np.asarray(raw[:, j] if raw is not None else tr.dff[:, j]))
            is_raw.append(raw is not None)
    order = sorted(range(len(names)), key=lambda i: (cells[i], _KIND_ORDER.get(kinds[i], 3), i))
    per_roi: dict[str, TraceEvents] = {}
    rows: dict[str, list] = {k: [] for k in ("cell_id", "kind", "roi", "onset", "peak", "end", "amplitude", "rise",
                                             "decay", "auc", "snr")}
    detected = np.full((n_frames, len(order)), np.nan, np.float32)
    for k, i in enumerate(order):  # a loop over ROIs
        found = detect_events(columns[i], fs=fs, params=params)
        detected[:, k] = _over_baseline(columns[i], found.baseline, relative=is_raw[i])
        ev = _relative(found)
        per_roi[names[i]] = ev
        n = len(ev)
        rows["cell_id"].extend([cells[i]] * n)
        rows["kind"].extend([kinds[i]] * n)
        rows["roi"].extend([names[i]] * n)
        for key, value in (("onset", ev.onset), ("peak", ev.peak), ("end", ev.end), ("amplitude", ev.amplitude),
                           ("rise", ev.rise), ("decay", ev.decay), ("auc", ev.auc), ("snr", ev.snr)):
            rows[key].extend(np.asarray(value).tolist())
    frame = params.in_frames(fs)
    onset = np.asarray(rows["onset"], np.int64)
    soma_event, delay = link_to_soma(np.asarray(rows["cell_id"], np.int64), rows["kind"], onset,
                                     max_delay=frame.link_max_delay, lead=frame.link_lead)
    table = EventTable(cell_id=np.asarray(rows["cell_id"], np.int64), kind=rows["kind"], roi=rows["roi"],
                       onset_frame=onset, peak_frame=np.asarray(rows["peak"], np.int64),
                       end_frame=np.asarray(rows["end"], np.int64),
                       amplitude_dff=np.asarray(rows["amplitude"], np.float64),
                       rise_frames=np.asarray(rows["rise"], np.float64),
                       decay_frames=np.asarray(rows["decay"], np.float64),
                       auc_frames=np.asarray(rows["auc"], np.float64), snr=np.asarray(rows["snr"], np.float64),
                       soma_event=soma_event, delay_frames=delay, fs=fs, n_frames=n_frames,
                       roi_names=[names[i] for i in order], roi_cells=np.asarray([cells[i] for i in order], np.int64),
                       roi_kinds=[kinds[i] for i in order],
                       roi_neuropil_coef=np.asarray([coefs[i] for i in order], np.float64), roi_dff=detected)
    return table, per_roi


def _over_baseline(trace: np.ndarray, baseline: np.ndarray, *, relative: bool) -> np.ndarray:
    """A detected trace (T,) as dF/F of the detector's baseline: ``trace / baseline - 1`` (NaN where the
    baseline is not positive), or ``trace - baseline`` for a trace that is already dF/F."""
    x = np.asarray(trace, np.float64)
    base = np.asarray(baseline, np.float64)
    if len(base) != len(x):  # too short a trace to have a baseline
        return np.full(len(x), np.nan)
    if not relative:
        return x - base
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(base > 0, x / np.where(base > 0, base, 1.0) - 1.0, np.nan)


def _corrected(traces: Any, params: EventParams) -> tuple[np.ndarray | None, np.ndarray]:
    """Raw fluorescence of a trace set without its neuropil fluctuations (None: no raw traces) and the
    coefficient of each ROI (NaN without a surround trace, 0 with the correction off)."""
    raw = getattr(traces, "f", None)
    fneu = getattr(traces, "fneu", None)
    n_roi = len(traces.names)
    if raw is None or fneu is None or not n_roi:
        return raw, np.full(n_roi, np.nan)
    if params.neuropil_max_coef <= 0:
        return raw, np.zeros(n_roi)
    from astro3s.correlation.neuropil import neuropil_coefficients, subtract_neuropil

    coef = neuropil_coefficients(raw, fneu, fs=traces.fs, window_s=params.baseline_window_s,
                                 window_frames=int(params.baseline_window_frames),
                                 max_coef=params.neuropil_max_coef)
    return subtract_neuropil(raw, fneu, coef), coef


def _relative(ev: TraceEvents) -> TraceEvents:
    """Amplitudes and areas of events detected on raw fluorescence, as dF/F of the detector's baseline.

    The detector's baseline leaves the events out, unlike a running
    percentile, which a busy stretch lifts; so dF/F comes from it. NaN where
    the baseline is not positive (an offset-subtracted movie).
    """
    if not len(ev):
        return ev
    base = np.asarray(ev.baseline, np.float64)
    at_peak = base[ev.peak]
    span_mean = np.array([base[a:b + 1].mean() for a, b in zip(ev.onset, ev.end)])  # a loop over events
    with np.errstate(divide="ignore", invalid="ignore"):
        amplitude = np.where(at_peak > 0, ev.amplitude / at_peak, np.nan)
        auc = np.where(span_mean > 0, ev.auc / span_mean, np.nan)
    return dataclasses.replace(ev, amplitude=amplitude, auc=auc)


def _num(value: float, fmt: str) -> str:
    return "" if value is None or not np.isfinite(value) else format(float(value), fmt)


def write_events_csv(path: str | Path, table: EventTable) -> Path:
    """``events.csv`` (columns :data:`EVENT_CSV_COLUMNS`, see the module docstring), written atomically."""
    from astro3s.io import write_text

    sec = table.seconds
    onset_s, peak_s = sec(table.onset_frame), sec(table.peak_frame)
    duration_s = sec(table.end_frame - table.onset_frame + 1)
    rise_s, decay_s, delay_s = sec(table.rise_frames), sec(table.decay_frames), sec(table.delay_frames)
    auc = table.auc_frames / table.fs if table.fs else table.auc_frames
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(EVENT_CSV_COLUMNS)
    for i in range(len(table)):  # a loop over events
        writer.writerow([int(table.cell_id[i]), table.kind[i], table.roi[i], int(table.onset_frame[i]),
                         int(table.peak_frame[i]), int(table.end_frame[i]), _num(onset_s[i], ".4f"),
                         _num(peak_s[i], ".4f"), _num(table.amplitude_dff[i], ".5g"), _num(duration_s[i], ".4f"),
                         _num(rise_s[i], ".4f"), _num(decay_s[i], ".4f"), _num(auc[i], ".5g"),
                         _num(table.snr[i], ".4g"), "" if table.soma_event[i] < 0 else int(table.soma_event[i]),
                         _num(delay_s[i], ".4f")])
    return write_text(path, buf.getvalue())


def read_events_csv(path: str | Path, *, fs: float | None = None, n_frames: int = 0) -> EventTable:
    """Read an ``events.csv``; ``fs`` (default: inferred from ``onset_s``) converts the seconds back to frames."""
    with open(path, encoding="utf-8", newline="") as handle:
        rows = list(csv.DictReader(handle))

    def col(key: str, kind: type = float) -> np.ndarray:
        if kind is int:
            return np.array([int(r[key]) if r.get(key, "") != "" else -1 for r in rows], np.int64)
        return np.array([float(r[key]) if r.get(key, "") != "" else np.nan for r in rows], np.float64)

    onset = col("onset_frame", int)
    if fs is None:
        onset_s = col("onset_s")
        ok = np.isfinite(onset_s) & (onset > 0)
        fs = float(np.median(onset[ok] / onset_s[ok])) if ok.any() else None
    scale = float(fs) if fs else 1.0
    auc = col("auc")
    return EventTable(cell_id=col("cell_id", int), kind=[r["kind"] for r in rows], roi=[r["roi"] for r in rows],
                      onset_frame=onset, peak_frame=col("peak_frame", int), end_frame=col("end_frame", int),
                      amplitude_dff=col("amplitude_dff"), rise_frames=col("rise_s") * scale,
                      decay_frames=col("decay_s") * scale, auc_frames=auc * scale if fs else auc, snr=col("snr"),
                      soma_event=col("soma_event", int), delay_frames=col("delay_s") * scale if fs else
                      np.full(len(rows), np.nan), fs=fs, n_frames=int(n_frames))


def _rounded(value: float) -> float | None:
    return round(float(value), 4) if np.isfinite(value) else None


def cell_event_summary(table: EventTable) -> dict[int, dict[str, Any]]:
    """Per-cell event figures for ``summary.json``.

    Rates are events per minute (per 100 frames without a frame rate): the
    soma's; per process ROI (the cell's process events over its process ROIs);
    the domain's; and the process-only (microdomain) rate, per process ROI, of
    process events that follow no somatic event. ``soma_to_process_fraction``:
    the fraction of somatic events that at least one process event follows;
    ``soma_to_process_delay_s``: the median delay of those process events
    (frames in ``soma_to_process_delay_frames`` without a frame rate).
    ``soma_neuropil_coef`` and ``process_neuropil_coef_median``: the share of
    the neuropil surround's fluctuations taken off the soma's trace and (median)
    off its process traces before detection.

    Returns
    -------
    dict of int to dict
        Keyed by cell id; figures are None where undefined (no such ROI, or no
        somatic event).
    """
    span = table.n_frames / table.fs / 60.0 if table.fs else table.n_frames / 100.0
    span = span if span > 0 else np.nan
    cells = np.asarray(table.cell_id)
    kinds = np.asarray(table.kind, dtype=object)
    out: dict[int, dict[str, Any]] = {}
    roi_cells = np.asarray(table.roi_cells, np.int64)
    roi_kinds = np.asarray(table.roi_kinds, dtype=object)
    for cid in np.unique(roi_cells):  # a loop over cells
        cid = int(cid)
        n_roi = {k: int(np.sum((roi_cells == cid) & (roi_kinds == k))) for k in _KIND_ORDER}
        mine = cells == cid
        count = {k: int(np.sum(mine & (kinds == k))) for k in _KIND_ORDER}
        somatic = np.flatnonzero(mine & (kinds == "soma"))
        proc = mine & (kinds == "process")
        linked = proc & (table.soma_event >= 0)
        reached = np.isin(somatic, table.soma_event[linked])

        def rate(n: int, rois: int) -> float | None:
            return None if rois == 0 or not np.isfinite(span) else round(n / rois / span, 4)

        delays = table.delay_frames[linked]
        entry = {
            "n_events": count,
            "soma_event_rate": rate(count["soma"], n_roi["soma"]),
            "process_event_rate": rate(count["process"], n_roi["process"]),
            "domain_event_rate": rate(count["domain"], n_roi["domain"]),
            "process_only_event_rate": rate(int(np.sum(proc & (table.soma_event < 0))), n_roi["process"]),
            "soma_to_process_fraction": None if not len(somatic) or not n_roi["process"]
            else round(float(reached.mean()), 4),
        }
        coef = np.asarray(table.roi_neuropil_coef, np.float64)
        if len(coef) == len(roi_cells):
            soma_coef = coef[(roi_cells == cid) & (roi_kinds == "soma")]
            proc_coef = coef[(roi_cells == cid) & (roi_kinds == "process")]
            entry["soma_neuropil_coef"] = _rounded(soma_coef[0]) if len(soma_coef) else None
            entry["process_neuropil_coef_median"] = (_rounded(np.median(proc_coef))
                                                     if len(proc_coef) and np.isfinite(proc_coef).all() else None)
        median = float(np.median(delays)) if len(delays) else None
        if table.fs:
            entry["soma_to_process_delay_s"] = None if median is None else round(median / table.fs, 4)
        else:
            entry["soma_to_process_delay_frames"] = None if median is None else round(median, 3)
        out[cid] = entry
    return out
