"""Event ground truth of a simulated movie: every calcium event as each ROI's trace shows it.

The scene's traces are sums of event kernels (:func:`~astro3s.simulate.signals.event_train`)
whose onsets, amplitudes and time constants the scene keeps
(:attr:`Scene.component_events`), plus propagating waves. An ROI (a cell's soma,
or one of its ``Proc_###_##`` components, as :func:`astro3s.correlation.roi_table`
names them) sees a component's event scaled by how much of the component's
footprint its pixels collect, through the PSF and the vessel shadows::

    w_r(p)      = transmission(p) * (G_psf * mask_r)(p)       (G symmetric)
    S0_r        = sum_p baseline(p) * w_r(p)                  (resting photons of the ROI)
    amplitude   = event amplitude * sum_p footprint_k(p) w_r(p) / S0_r     (dF/F of the ROI)

so soma-only events leak into the process ROIs that touch the soma, a
neighbour's whole-cell event shows faintly where territories overlap, and a
microdomain shows in the process it sits on, diluted by the process's area.
A wave reaches the ROI's pixels at different delays; its ROI response is
computed on a fine time grid and its onset is where that response reaches 10 %
of its peak, less the 10 % time of the kernel alone (so an undelayed event keeps
its own onset).

Each row gets an SNR. First the matched-filter SNR: the event's ROI dF/F
sampled at the frame times, ``sqrt(sum_t s(t)^2) / sigma``, with ``sigma`` the
analytic per-frame noise of the ROI's dF/F (shot noise of the resting photons,
read noise and rounding, independent between pixels and frames): the SNR of an
ideal detector that knew the event's shape and time. The active neuropil is a
second noise, slow like the events, so no averaging over the event removes it:
with ``n`` the SD of the neuropil's dF/F in the ROI (known from the scene),
``1 / snr^2 = 1 / snr_mf^2 + (n / amplitude)^2``. Rows with an SNR under
:data:`MIN_SNR_ROW` are left out (nothing of them is in the data).

Columns of ``ground_truth/events.csv`` (:func:`write_event_truth`): ``cell``
(ground-truth id of the ROI's cell), ``compartment`` (``soma`` | ``process``),
``roi``, ``source`` (``whole`` | ``soma`` | ``micro`` | ``wave`` for
astrocyte events; ``neuron`` | ``lookalike`` for distractors whose light
reaches the ROI), ``source_cell`` (ground-truth id of the cell that made the
event; 0 for a distractor or a cell outside the ground truth), ``source_id``
(one id per drawn event, shared by the rows of every ROI that shows it),
``onset_s``, ``peak_s``, ``amplitude`` (peak dF/F of the ROI, offset-free),
``snr``, ``delay_s`` (for the cell's own events: onset in this process ROI
minus onset of the same event in its soma ROI; empty for soma rows, for
events the soma does not show, and for other cells' or distractors' events).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import scipy.sparse as sp
from scipy import ndimage as ndi

from astro3s.simulate.morphology import clip_window
from astro3s.simulate.psf import psf_blur, psf_margin
from astro3s.simulate.signals import event_kernel

__all__ = ["EVENT_COLUMNS", "MIN_SNR_ROW", "EventTruth", "event_truth", "read_event_truth", "write_event_truth"]

#: Rows whose matched-filter SNR is below this are left out of the table.
MIN_SNR_ROW = 1.0
#: Columns of ``ground_truth/events.csv``, in order.
EVENT_COLUMNS = ("cell", "compartment", "roi", "source", "source_cell", "source_id", "onset_s", "peak_s",
                 "amplitude", "snr", "delay_s")
_SOURCES = ("whole", "soma", "micro", "neuron", "lookalike")
#: Sources made by an astrocyte of the scene (the others are distractors: neuron transients, look-alikes).
_ASTROCYTE_SOURCES = ("whole", "soma", "micro")


@dataclass(frozen=True)
class EventTruth:
    """True events per ROI of a simulated movie, one entry per (event, ROI).

    Attributes
    ----------
    cell, source_cell, source_id : ndarray of int64, shape (n,)
    compartment, roi, source : list of str, length n
    onset_s, peak_s, amplitude, snr, delay_s : ndarray of float64, shape (n,)
        ``delay_s`` is NaN where undefined.
    """

    cell: np.ndarray
    compartment: list[str]
    roi: list[str]
    source: list[str]
    source_cell: np.ndarray
    source_id: np.ndarray
    onset_s: np.ndarray
    peak_s: np.ndarray
    amplitude: np.ndarray
    snr: np.ndarray
    delay_s: np.ndarray

    def __len__(self) -> int:
        return len(self.roi)


def _peak_time(rise: np.ndarray, decay: np.ndarray) -> np.ndarray:
    """Time (s) from onset to the peak of :func:`event_kernel` (same clipping of ``decay``)."""
    rise = np.asarray(rise, np.float64)
    decay = np.maximum(np.asarray(decay, np.float64), 1.5 * rise)
    return rise * decay / (decay - rise) * np.log(decay / rise)


def _roi_weights(scene, roi_index: np.ndarray) -> tuple[sp.csc_matrix, np.ndarray]:
    """Per-ROI canvas weights ``w_r`` (P x R, sparse) and the ROI's noise variance in photons^2 (R,).

    ``roi_index`` is the FOV's ROI number per pixel (-1 outside). The loop runs
    over ROIs, each blurred in its own bounding box.
    """
    p = scene.params
    hc, wc = scene.canvas_shape
    fy, fx = scene.fov_origin
    n_roi = int(roi_index.max(initial=-1)) + 1
    margin = psf_margin(p)
    rows, cols, vals = [], [], []
    level = float(np.mean(scene.bleach))
    rest = scene.baseline * scene.transmission * level
    if p.psf_sigma > 0:
        rest = psf_blur(rest, p)
    per_pixel = rest + (p.read_noise / p.gain) ** 2 + 1.0 / (12 * p.gain**2)
    noise_var = np.zeros(n_roi)
    boxes = ndi.find_objects(roi_index + 1)
    for r, box in enumerate(boxes):  # a loop over ROIs
        if box is None:
            continue
        y0, y1 = max(box[0].start + fy - margin, 0), min(box[0].stop + fy + margin, hc)
        x0, x1 = max(box[1].start + fx - margin, 0), min(box[1].stop + fx + margin, wc)
        mask = np.zeros((y1 - y0, x1 - x0), np.float32)
        sub = roi_index[box] == r
        mask[box[0].start + fy - y0:box[0].stop + fy - y0, box[1].start + fx - x0:box[1].stop + fx - x0] = sub
        noise_var[r] = float(per_pixel[y0:y1, x0:x1][mask > 0].sum())
        if p.psf_sigma > 0:
            mask = psf_blur(mask, p, mode="constant")
        mask *= scene.transmission[y0:y1, x0:x1]
        yy, xx = np.nonzero(mask > 1e-4)
        rows.append((yy + y0) * wc + (xx + x0))
        cols.append(np.full(len(yy), r))
        vals.append(mask[yy, xx])
    if not rows:
        return sp.csc_matrix((hc * wc, n_roi), dtype=np.float64), noise_var
    weights = sp.csc_matrix((np.concatenate(vals).astype(np.float64),
                             (np.concatenate(rows), np.concatenate(cols))), shape=(hc * wc, n_roi))
    return weights, noise_var


def _wave_response(wave, w_local: np.ndarray, times: np.ndarray,
                   fine_dt: float) -> tuple[float, float, float, np.ndarray] | None:
    """A wave as one ROI sees it: ``(onset_s, peak_s, peak photons, photons at the frame times)``.

    ``w_local`` is the ROI's weight on the wave's grid; the response
    ``sum_p w(p) footprint(p) h(t - onset - delay(p))`` is the histogram of the
    weighted delays (bins of ``fine_dt``) convolved with the kernel. None when
    the wave's footprint misses the ROI.
    """
    weight = (w_local * wave.footprint).ravel()
    sel = weight > 0
    if not sel.any():
        return None
    weight, delay = weight[sel], wave.delay.ravel()[sel]
    d0 = float(delay.min())
    hist = np.bincount(np.rint((delay - d0) / fine_dt).astype(np.int64), weights=weight)
    t_peak = float(_peak_time(wave.rise, wave.decay))
    own = np.arange(0.0, t_peak + 8 * float(wave.decay), fine_dt)
    kernel = event_kernel(own, wave.rise, wave.decay).astype(np.float64)
    resp = np.convolve(hist, kernel)
    fine = wave.onset + d0 + fine_dt * np.arange(len(resp))
    k = int(np.argmax(resp))
    peak = float(resp[k])
    # onset: 10 % of the peak, less the kernel's own 10 % time
    t10 = fine[int(np.argmax(resp >= 0.1 * peak))]
    own_t10 = own[int(np.argmax(kernel >= 0.1))]
    at_frames = np.interp(times, fine, resp, left=0.0, right=0.0)
    return float(t10 - own_t10), float(fine[k]), peak, at_frames


def event_truth(scene, truth) -> EventTruth:  # noqa: C901, PLR0915 - one branch per event kind
    """Every event of ``scene`` in every ground-truth ROI that shows it (see the module docstring).

    Parameters
    ----------
    scene : Scene
        With ``component_events`` (scenes built by this version of the simulator).
    truth : GroundTruth
        Its ``soma`` and ``processes`` define the ROIs.

    Returns
    -------
    EventTruth
        Sorted by ROI, then onset.
    """
    from astro3s.correlation.traces import roi_table

    p = scene.params
    names, cell_ids, kinds, roi_index = roi_table(truth.soma.astype(np.int64), truth.processes.astype(np.int64))
    n_roi = len(names)
    weights, noise_var = _roi_weights(scene, roi_index)
    s0 = np.asarray(weights.T @ (scene.baseline.ravel().astype(np.float64) * float(np.mean(scene.bleach)))).ravel()
    s0 = np.maximum(s0, 1e-9)
    sigma = np.sqrt(noise_var) / s0  # per-frame noise of the ROI's dF/F
    neuropil = _neuropil_sd(scene, weights, s0)
    gt_of_scene = {int(i): k for k, i in enumerate(truth.cell_index, start=1)}
    times = scene.times
    level = float(np.mean(scene.bleach))
    gain = np.asarray((scene.footprints @ weights).todense()) * level / s0[None, :] if n_roi else \
        np.zeros((scene.footprints.shape[0], 0))  # (K, R): ROI dF/F per unit of component trace

    out: dict[str, list] = {c: [] for c in EVENT_COLUMNS}
    next_source = 0
    for k, ev in enumerate(scene.component_events):  # a loop over components
        if ev is None or not len(ev.onsets):
            continue
        rois = np.flatnonzero(gain[k] > 0)
        ids = next_source + np.arange(len(ev.onsets))
        next_source += len(ev.onsets)
        if not len(rois):
            continue
        shape = event_kernel(times[None, :] - ev.onsets[:, None], ev.rise[:, None], ev.decay[:, None])
        norm = np.sqrt((shape.astype(np.float64) ** 2).sum(axis=1))  # (n,)
        peak = ev.onsets + _peak_time(ev.rise, ev.decay)
        source = _SOURCES[int(scene.component_kind[k])]
        # neurons and look-alikes are numbered apart from the astrocytes and belong to no cell
        source_cell = gt_of_scene.get(int(scene.component_cell[k]), 0) if source in _ASTROCYTE_SOURCES else 0
        for r in rois:  # a loop over the ROIs this component reaches
            amp = ev.amplitudes * gain[k, r]
            snr = _with_neuropil(amp * norm / sigma[r], amp, neuropil[r])
            keep = snr >= MIN_SNR_ROW
            n = int(keep.sum())
            if not n:
                continue
            _append(out, cell=int(cell_ids[r]), compartment=kinds[r], roi=names[r],
                    source=source, source_cell=source_cell, source_id=ids[keep],
                    onset_s=ev.onsets[keep], peak_s=peak[keep], amplitude=amp[keep], snr=snr[keep])
    wc = scene.canvas_shape[1]
    fine_dt = min(0.02, 0.1 / p.fs)
    weights_rows = weights.tocsr()
    for wave in scene.waves:  # a loop over waves
        source_id = next_source
        next_source += 1
        (cy, cx), (ly, lx) = clip_window(wave.origin, wave.footprint.shape, scene.canvas_shape)
        flat = (np.arange(cy.start, cy.stop)[:, None] * wc + np.arange(cx.start, cx.stop)[None, :]).ravel()
        local = weights_rows[flat].tocsc() if n_roi else None
        if local is None:
            continue
        # an upper bound of each ROI's SNR (all of the wave's photons at once, the kernel's norm at the
        # frame rate plus one for the sampling) skips the ROIs that it cannot reach detectably
        total = np.asarray(local.T @ wave.footprint[ly, lx].ravel().astype(np.float64)).ravel()
        fine = np.arange(0.0, 10 * float(wave.decay) + 1.0, fine_dt)
        bound = math.sqrt(p.fs * fine_dt * float((event_kernel(fine, wave.rise, wave.decay) ** 2).sum())) + 1.0
        touched = np.flatnonzero(total * level / s0 * bound / sigma >= MIN_SNR_ROW)
        source_cell = gt_of_scene.get(int(wave.cell), 0)
        for r in touched:  # a loop over the ROIs the wave reaches
            w_grid = np.zeros(wave.footprint.shape)
            w_grid[ly, lx] = local[:, r].toarray().reshape(cy.stop - cy.start, cx.stop - cx.start)
            response = _wave_response(wave, w_grid, times, fine_dt)
            if response is None:
                continue
            onset, peak_s, peak, at_frames = response
            amp = peak * level / s0[r]
            snr = float(_with_neuropil(np.sqrt(((at_frames * level / s0[r]) ** 2).sum()) / sigma[r], amp,
                                       neuropil[r]))
            if snr < MIN_SNR_ROW:
                continue
            _append(out, cell=int(cell_ids[r]), compartment=kinds[r], roi=names[r], source="wave",
                    source_cell=source_cell, source_id=np.array([source_id]), onset_s=np.array([onset]),
                    peak_s=np.array([peak_s]), amplitude=np.array([amp]), snr=np.array([snr]))
    return _finish(out, names=names)


def _neuropil_sd(scene, weights: sp.csc_matrix, s0: np.ndarray) -> np.ndarray:
    """SD over time of the active neuropil's dF/F in each ROI, shape (R,) (zeros without neuropil)."""
    n_roi = weights.shape[1]
    if not len(scene.neuropil_fields) or not n_roi:
        return np.zeros(n_roi)
    per_roi = np.asarray(weights.T @ scene.neuropil_fields.T.astype(np.float64))  # (R, Kn)
    trace = scene.neuropil_traces.astype(np.float64) @ per_roi.T * float(np.mean(scene.bleach)) / s0[None, :]
    return trace.std(axis=0)


def _with_neuropil(snr_white: np.ndarray, amplitude: np.ndarray, neuropil_sd: float) -> np.ndarray:
    """SNR with the neuropil's fluctuation as a second noise, not averaged down over the event:
    ``1 / snr^2 = 1 / snr_white^2 + (neuropil_sd / amplitude)^2``."""
    snr_white = np.asarray(snr_white, np.float64)
    amplitude = np.maximum(np.asarray(amplitude, np.float64), 1e-12)
    return 1.0 / np.sqrt(1.0 / np.maximum(snr_white, 1e-12) ** 2 + (neuropil_sd / amplitude) ** 2)


def _append(out: dict[str, list], *, cell: int, compartment: str, roi: str, source: str, source_cell: int,
            source_id: np.ndarray, onset_s: np.ndarray, peak_s: np.ndarray, amplitude: np.ndarray,
            snr: np.ndarray) -> None:
    n = len(source_id)
    out["cell"].append(np.full(n, cell, np.int64))
    out["compartment"].extend([compartment] * n)
    out["roi"].extend([roi] * n)
    out["source"].extend([source] * n)
    out["source_cell"].append(np.full(n, source_cell, np.int64))
    for key, value in (("source_id", source_id), ("onset_s", onset_s), ("peak_s", peak_s),
                       ("amplitude", amplitude), ("snr", snr)):
        out[key].append(np.asarray(value))


def _finish(out: dict[str, list], *, names: list[str]) -> EventTruth:
    """Concatenate, sort by ROI then onset, and fill ``delay_s``."""
    def cat(key: str, dtype) -> np.ndarray:
        return np.concatenate(out[key]).astype(dtype) if out[key] else np.zeros(0, dtype)

    cell, source_cell, source_id = cat("cell", np.int64), cat("source_cell", np.int64), cat("source_id", np.int64)
    onset, peak, amp, snr = (cat(k, np.float64) for k in ("onset_s", "peak_s", "amplitude", "snr"))
    roi_order = {name: j for j, name in enumerate(names)}
    order = np.lexsort((onset, np.array([roi_order[r] for r in out["roi"]], np.int64)))
    compartment = [out["compartment"][i] for i in order]
    roi = [out["roi"][i] for i in order]
    source = [out["source"][i] for i in order]
    cell, source_cell, source_id = cell[order], source_cell[order], source_id[order]
    onset, peak, amp, snr = onset[order], peak[order], amp[order], snr[order]
    # delay: this process row's onset minus the same event's onset in its own cell's soma ROI
    # (only for the cell's own events: a neighbour's or a distractor's event has no delay in this cell)
    own = cell == source_cell
    soma_onset = {(int(c), int(s)): float(o) for c, s, o, k, m in zip(cell, source_id, onset, compartment, own)
                  if k == "soma" and m}
    delay = np.array([o - soma_onset[(int(c), int(s))] if k == "process" and m and (int(c), int(s)) in soma_onset
                      else np.nan for c, s, o, k, m in zip(cell, source_id, onset, compartment, own)], np.float64)
    return EventTruth(cell=cell, compartment=compartment, roi=roi, source=source, source_cell=source_cell,
                      source_id=source_id, onset_s=onset, peak_s=peak, amplitude=amp, snr=snr,
                      delay_s=delay.reshape(-1))


def write_event_truth(path: str | Path, table: EventTruth) -> Path:
    """``ground_truth/events.csv``: one row per (event, ROI), columns :data:`EVENT_COLUMNS`."""
    import csv
    import io

    from astro3s.io import write_text

    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(EVENT_COLUMNS)
    for i in range(len(table)):  # a loop over events
        writer.writerow([int(table.cell[i]), table.compartment[i], table.roi[i], table.source[i],
                         int(table.source_cell[i]), int(table.source_id[i]), f"{table.onset_s[i]:.4f}",
                         f"{table.peak_s[i]:.4f}", f"{table.amplitude[i]:.5g}", f"{table.snr[i]:.4g}",
                         "" if not np.isfinite(table.delay_s[i]) else f"{table.delay_s[i]:.4f}"])
    return write_text(path, buf.getvalue())


def read_event_truth(path: str | Path) -> EventTruth:
    """Read a table written by :func:`write_event_truth`."""
    import csv

    with open(path, encoding="utf-8", newline="") as handle:
        rows = list(csv.DictReader(handle))

    def floats(key: str) -> np.ndarray:
        return np.array([float(r[key]) if r[key] != "" else np.nan for r in rows], np.float64)

    def ints(key: str) -> np.ndarray:
        return np.array([int(r[key]) for r in rows], np.int64)

    return EventTruth(cell=ints("cell"), compartment=[r["compartment"] for r in rows], roi=[r["roi"] for r in rows],
                      source=[r["source"] for r in rows], source_cell=ints("source_cell"),
                      source_id=ints("source_id"), onset_s=floats("onset_s"), peak_s=floats("peak_s"),
                      amplitude=floats("amplitude"), snr=floats("snr"), delay_s=floats("delay_s"))
