"""``summary.png``: one page per movie that shows at a glance whether the run worked.

Layout (:func:`plot_summary`)::

    title: movie name; outcome (green "OK: N cells ..." or red "FAILED: no cells found");
           in orange, the points to check (threshold search outside its band, large motion, silent somata)
    mean image | activity map | cells (soma + processes) | CC domains
    soma heat map (cell x time; with an events table: the neuropil-corrected     | CC-threshold search
      dF/F the events were detected on, and their marks; else traces.csv's dF/F)
    motion shifts (dy, dx over time)                                             | key numbers

The checks behind the verdict (:func:`run_checks`) and the numbers shown
(:func:`soma_rows`, :func:`detected_rows`, :func:`time_bins`, :func:`search_curve`) are small pure
functions; matplotlib (Agg, no pyplot) is imported inside :func:`plot_summary`
and the file is written atomically. The images reuse
:func:`astro3s.correlation.figures.compose_overlay`, ``stretch_image`` and
``cell_colours``, so the colours match ``overlay.png``.

:func:`draw_figures` draws all three figures of an output folder from one picklable
:class:`FigureInputs` (in this process, or in the figure process of a batch:
:class:`astro3s.inference.background.OutputWorker`).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from astro3s.correlation.figures import cell_colours, compose_overlay, save_figure, stretch_image

__all__ = ["FIGURE_NAMES", "SUMMARY_FIGURE", "Check", "FigureInputs", "detected_rows", "draw_figures", "event_marks",
           "plot_summary", "run_checks", "search_curve", "soma_rows", "summary_layout", "time_bins"]

#: File name of the one-page summary in every output folder.
SUMMARY_FIGURE = "summary.png"

#: colours of the verdict levels
_LEVEL_COLOURS = {"ok": "#1a7f37", "warn": "#b35900", "fail": "#c62828"}
#: motion larger than this fraction of the FOV's shorter side is reported
_LARGE_SHIFT = 0.1
#: most columns of the heat map (longer movies are binned, keeping each bin's maximum)
_MAX_COLUMNS = 1200
#: cell ids are written on the image panels up to this many cells
_MAX_LABELS = 60


@dataclass(frozen=True)
class Check:
    """One line of the verdict.

    Attributes
    ----------
    level : {"ok", "warn", "fail"}
    text : str
    """

    level: str
    text: str


def soma_rows(traces: Any) -> tuple[np.ndarray, np.ndarray]:
    """The soma traces of a :class:`~astro3s.correlation.RoiTraces`, a row per cell.

    Returns
    -------
    cell_ids : ndarray of int64, shape (N,)
    dff : ndarray of float32, shape (N, T)
        dF/F, NaN/Inf replaced by 0.
    """
    kinds = np.asarray(list(getattr(traces, "kinds", [])), dtype=object)
    dff = np.asarray(traces.dff, np.float32)
    pick = np.flatnonzero(kinds == "soma") if dff.ndim == 2 else np.zeros(0, np.int64)
    ids = np.asarray(traces.cell_ids, np.int64)[pick]
    rows = np.nan_to_num(dff[:, pick].T, nan=0.0, posinf=0.0, neginf=0.0) if dff.ndim == 2 \
        else np.zeros((0, 0), np.float32)
    return ids, rows.astype(np.float32, copy=False)


def time_bins(rows: np.ndarray, max_columns: int = _MAX_COLUMNS) -> tuple[np.ndarray, int]:
    """Rows binned along time to at most ``max_columns`` columns, keeping each bin's maximum.

    The maximum keeps brief transients visible in a long movie (a mean would
    flatten them).

    Parameters
    ----------
    rows : ndarray, shape (N, T)
    max_columns : int

    Returns
    -------
    binned : ndarray, shape (N, ceil(T / k))
    k : int
        Frames per column.
    """
    rows = np.asarray(rows)
    n, t = rows.shape
    k = max(1, math.ceil(t / max(1, int(max_columns))))
    if k == 1 or n == 0:
        return rows, 1
    pad = (-t) % k
    padded = np.pad(rows, ((0, 0), (0, pad)), mode="edge") if pad else rows
    return padded.reshape(n, -1, k).max(axis=2), k


def search_curve(choice: Any) -> tuple[np.ndarray, np.ndarray]:
    """``(thresholds, false rates)`` the automatic threshold search tried, by increasing threshold.

    Parameters
    ----------
    choice : ThresholdChoice or None
        ``Domains.threshold_choice``; None (threshold given, or no cells) gives empty arrays.
    """
    tried = np.asarray(getattr(choice, "tried", None) or np.zeros((0, 2)), np.float64).reshape(-1, 2)
    tried = tried[np.isfinite(tried).all(axis=1)]
    thresholds, first = np.unique(tried[:, 0], return_index=True)
    return thresholds, tried[first, 1]


def _event_column(events: Any, names: Sequence[str]) -> Any:
    """The first of the columns ``names`` of an events table: a mapping, a DataFrame or an object's attribute."""
    keys = set(events.keys()) if hasattr(events, "keys") else set()
    for name in names:
        if name in keys:
            return events[name]
        if not keys and hasattr(events, name):
            return getattr(events, name)
    return None


def event_marks(events: Any, rows_of: Mapping[str, int]) -> tuple[np.ndarray, np.ndarray]:
    """Row and onset frame of each event of a soma ROI shown in the heat map.

    Parameters
    ----------
    events : EventTable, mapping, DataFrame or None
        :class:`astro3s.events.EventTable` (``roi``, ``onset_frame``), or
        columns ``roi`` (ROI name, e.g. ``Soma_003``) and ``frame`` (onset
        frame; ``onset_frame``, ``onset`` or ``start_frame`` are read too).
    rows_of : mapping of str to int
        Heat-map row of each soma ROI name (names are matched exactly).

    Returns
    -------
    rows, frames : ndarray of int64
        Events of ROIs not in ``rows_of`` (processes, domains) are left out.
    """
    none = np.zeros(0, np.int64), np.zeros(0, np.int64)
    if events is None:
        return none
    rois = _event_column(events, ("roi",))
    frames = _event_column(events, ("frame", "onset_frame", "onset", "start_frame"))
    if rois is None or frames is None:
        return none
    rois = np.asarray(rois, dtype=object).astype(str)
    frames = np.asarray(frames, np.float64)
    row = np.array([rows_of.get(r, -1) for r in rois], np.int64)  # a lookup per event (a dict, not pixels)
    keep = (row >= 0) & np.isfinite(frames)
    return row[keep], frames[keep].astype(np.int64)


def run_checks(*, n_cells: int, threshold: float, choice: Any, band: Sequence[float] | None,
               shifts: np.ndarray, fov_shape: Sequence[int], soma_events: np.ndarray | None) -> list[Check]:
    """The outcome of a run, then what a person should look at.

    Parameters
    ----------
    n_cells : int
    threshold : float
        CC threshold used (NaN without cells).
    choice : ThresholdChoice or None
        The automatic search (None when the threshold was given).
    band : (float, float) or None
        Acceptance band of the false rate.
    shifts : ndarray, shape (T, 2)
        Motion-correction shifts (dy, dx), pixels.
    fov_shape : (int, int)
    soma_events : ndarray of int, shape (N,), or None
        Calcium events detected on each soma (:mod:`astro3s.events`); None:
        no events table, the check on silent somata is skipped.

    Returns
    -------
    list of Check
        First the outcome (``"fail"``: no cells; else ``"ok"``), then one
        ``"warn"`` per point to check: a threshold search that ended above
        its band, or below it by jumping over it (not at the lowest threshold
        tried: a quiet background, said on the outcome's line), no background
        pixels, motion above 10 % of the FOV, more than half of the somata
        without a detected calcium event.
    """
    searched = choice is not None and np.isfinite(choice.false_rate) and band is not None
    # below the band at the lowest threshold tried: the background barely correlates even there (a quiet FOV,
    # or one whose bleaching trend is removed), nothing to check; said on the verdict's line
    at_floor = searched and not choice.in_band and choice.clamped and choice.false_rate < band[0]
    if n_cells == 0:
        checks = [Check("fail", "no cells found (check the movie, the model and soma_scale)")]
    else:
        checks = [Check("ok", f"{n_cells} cell{'s' * (n_cells != 1)} with CC domains"
                              + (f", CC threshold {threshold:.2f}" if np.isfinite(threshold) else "")
                              + (" (the lowest tried)" if at_floor else ""))]
    if searched and not choice.in_band and not at_floor:
        side = "below" if choice.false_rate < band[0] else "above"
        checks.append(Check("warn", f"the CC threshold search ended {side} its false-rate band "
                                    f"{band[0]:.2f}-{band[1]:.2f} (rate {choice.false_rate:.3f} at {threshold:.2f})"))
    elif choice is not None and not np.isfinite(choice.false_rate):
        checks.append(Check("warn", f"no background pixels: CC threshold {threshold:.2f} not estimated"))
    shifts = np.asarray(shifts, np.float64).reshape(-1, 2)
    max_shift = float(np.hypot(shifts[:, 0], shifts[:, 1]).max(initial=0.0))
    if len(fov_shape) >= 2 and max_shift > _LARGE_SHIFT * min(fov_shape[:2]):
        checks.append(Check("warn", f"large motion: up to {max_shift:.1f} px (check the motion correction)"))
    if soma_events is not None and len(soma_events):
        silent = int(np.count_nonzero(np.asarray(soma_events) == 0))
        if 2 * silent > len(soma_events):
            checks.append(Check("warn", f"{silent} of {len(soma_events)} somata show no calcium event"))
    return checks


def summary_layout(fov_shape: Sequence[int], *, width: float = 13.0) -> dict[str, tuple[float, float, float, float]]:
    """Where each panel goes, ``(left, bottom, width, height)`` in inches, and the page size.

    The four image panels share the page width and take the FOV's aspect
    ratio (between 1:2 and 2:1), so that they fill their row.

    Parameters
    ----------
    fov_shape : (int, int)
        ``(H, W)`` of the movie.
    width : float
        Page width, inches.

    Returns
    -------
    dict
        ``page`` (0, 0, width, height), ``image0`` .. ``image3``, ``heat``,
        ``colourbar``, ``search``, ``shifts``, ``facts``.
    """
    left, right, gap, title = 0.65, 0.25, 0.3, 0.3
    panel_w = (width - left - right - 3 * gap) / 4
    aspect = float(np.clip(fov_shape[0] / max(fov_shape[1], 1), 0.5, 2.0))
    panel_h = panel_w * aspect
    header, heat_h, shift_h, bottom = 0.95, 2.3, 1.35, 0.5
    image_gap, row_gap = 0.6, 0.85  # the title above a row (and the axis labels below the one above)
    height = header + title + panel_h + image_gap + heat_h + row_gap + shift_h + bottom
    wide = 3 * panel_w + 2 * gap  # the heat map and the motion traces span three columns
    side_x = left + wide + gap + 0.3
    side_w = width - right - side_x
    heat_y = bottom + shift_h + row_gap
    boxes = {f"image{i}": (left + i * (panel_w + gap), height - header - title - panel_h, panel_w, panel_h)
             for i in range(4)}
    boxes.update(page=(0.0, 0.0, width, height),
                 heat=(left, heat_y, wide - 0.35, heat_h),
                 colourbar=(left + wide - 0.25, heat_y, 0.12, heat_h),
                 search=(side_x + 0.2, heat_y, side_w - 0.2, heat_h),
                 shifts=(left, bottom, wide - 0.35, shift_h),
                 facts=(side_x - 0.2, bottom, side_w + 0.2, shift_h + 0.3))
    return boxes


def _overlay_scale(shape: Sequence[int], panel_px: float) -> int:
    """Enlargement of an overlay raster so that it is about as large as its panel (1-4x)."""
    return int(min(4, max(1, math.ceil(panel_px / max(max(shape[:2]), 1)))))


def _image_panel(ax: Any, rgb: np.ndarray, title: str, *, cmap: str | None = None) -> None:
    height, width = rgb.shape[:2]
    ax.imshow(rgb, cmap=cmap, vmin=0, vmax=1, interpolation="antialiased", extent=(-0.5, width - 0.5,
                                                                                   height - 0.5, -0.5))
    ax.set_title(title, fontsize=9, loc="left")
    ax.set_xticks([])
    ax.set_yticks([])


def _label_cells(ax: Any, centroids: np.ndarray, ids: np.ndarray, scale: int) -> None:
    """Cell ids at the soma centroids, white with a dark edge (up to :data:`_MAX_LABELS` cells)."""
    from matplotlib import patheffects

    if len(ids) == 0 or len(ids) > _MAX_LABELS:
        return
    stroke = [patheffects.withStroke(linewidth=2.0, foreground="black")]
    for (cy, cx), cid in zip(centroids, ids):  # a loop over the cells labelled (<= _MAX_LABELS)
        ax.text((cx + 0.5) * scale - 0.5, (cy + 0.5) * scale - 0.5, str(int(cid)), color="white",
                fontsize=7, fontweight="bold", ha="center", va="center", path_effects=stroke, clip_on=True)


def detected_rows(events: Any, names: Sequence[str], rows: np.ndarray) -> tuple[np.ndarray, bool]:
    """The soma rows of the heat map as their events were detected, where the events table keeps them.

    Parameters
    ----------
    events : EventTable or None
        With :meth:`~astro3s.events.EventTable.detected_dff`: each ROI's
        neuropil-corrected dF/F over the detector's baseline.
    names : sequence of str
        The soma ROIs of ``rows``, in order.
    rows : ndarray, shape (N, T)
        Their uncorrected dF/F (:func:`soma_rows`), kept for a soma the table did not analyse.

    Returns
    -------
    rows : ndarray of float32, shape (N, T)
        NaN/Inf replaced by 0.
    corrected : bool
        Whether any row is a detected trace.
    """
    rows = np.asarray(rows, np.float32)
    if not hasattr(events, "detected_or"):
        return rows, False
    traces, have = events.detected_or(list(names), rows.T)
    out = np.where(have[:, None], np.nan_to_num(traces.T, nan=0.0, posinf=0.0, neginf=0.0), rows)
    return out.astype(np.float32, copy=False), bool(have.any())


def _heat_panel(ax: Any, cax: Any, ids: np.ndarray, rows: np.ndarray, lut: np.ndarray, fs: float | None,
                marks: tuple[np.ndarray, np.ndarray], *, label: str = "soma dF/F") -> None:
    """Soma traces (``label``) as a cell x time heat map, rows labelled in the cells' colours; event marks
    on top."""
    n, t = rows.shape
    if n == 0 or t == 0:
        ax.text(0.5, 0.5, "no soma traces (no cells)", ha="center", va="center", transform=ax.transAxes,
                fontsize=9, color="0.4")
        ax.set_xticks([])
        ax.set_yticks([])
        cax.set_axis_off()
        return
    binned, k = time_bins(rows)
    lo, hi = np.percentile(binned, [1.0, 99.5])
    lo, hi = min(float(lo), 0.0), max(float(hi), float(lo) + 1e-3)
    span = t / fs if fs else float(t)
    image = ax.imshow(binned, aspect="auto", cmap="magma", vmin=lo, vmax=hi, interpolation="nearest",
                      extent=(0.0, span, n - 0.5, -0.5))
    colourbar = ax.figure.colorbar(image, cax=cax)
    colourbar.ax.tick_params(labelsize=7)
    colourbar.ax.set_title("dF/F", fontsize=8, loc="left")
    # every row labelled with its cell id up to 40 rows, else about ten of them
    shown = np.arange(n) if n <= 40 else np.unique(np.linspace(0, n - 1, 10).round().astype(np.int64))
    ax.set_yticks(shown)
    ax.set_yticklabels([str(int(c)) for c in ids[shown]], fontsize=6.5 if n > 20 else 7.5)
    for tick, cid in zip(ax.get_yticklabels(), ids[shown]):  # a loop over <= 40 row labels
        tick.set_color(tuple(lut[cid] * 0.8))
        tick.set_fontweight("bold")
    ax.set_ylabel("cell", fontsize=8)
    ax.set_xlabel("time (s)" if fs else "frame", fontsize=8)
    ax.tick_params(labelsize=7)
    title = label + (f" (max over {k} frames per column)" if k > 1 else "")
    row, frame = marks
    if len(row):
        x = (frame + 0.5) / fs if fs else frame + 0.5
        ax.vlines(x, row - 0.42, row + 0.42, colors="#4fc3f7", linewidths=1.2)
        title += f", {len(row)} event{'s' * (len(row) != 1)} marked"
    ax.set_title(title, fontsize=9, loc="left")


def _search_panel(ax: Any, choice: Any, threshold: float, band: Sequence[float] | None) -> None:
    """False rate against the CC threshold: the thresholds tried, the band, the chosen value."""
    from matplotlib.ticker import MaxNLocator

    ax.set_title("CC threshold search", fontsize=9, loc="left")
    ax.tick_params(labelsize=7)
    if not np.isfinite(threshold):
        ax.text(0.5, 0.5, "no cells:\nno CC analysis", ha="center", va="center", transform=ax.transAxes,
                fontsize=9, color="0.4")
        ax.set_xticks([])
        ax.set_yticks([])
        return
    thresholds, rates = search_curve(choice)
    if band is not None:
        ax.axhspan(band[0], band[1], color="#2e7d32", alpha=0.15, lw=0, label="accepted band")
    if len(thresholds) == 0:  # threshold given: no search to show
        ax.axvline(threshold, color="#c62828", lw=1.5)
        ax.text(0.5, 0.5, f"threshold given: {threshold:.2f}\n(no search)", ha="center", va="center",
                transform=ax.transAxes, fontsize=9)
        ax.set_xlim(threshold - 0.15, threshold + 0.15)
        ax.set_ylim(0, max(0.1, band[1] * 1.5) if band is not None else 0.1)
    else:
        ax.plot(thresholds, rates, "-o", color="0.35", ms=3.5, lw=1.0, label="tried")
        colour = _LEVEL_COLOURS["ok" if choice.in_band else "warn"]
        ax.plot([choice.threshold], [choice.false_rate], "o", ms=8, mfc="none", mec=colour, mew=2.0)
        ax.axvline(choice.threshold, color=colour, lw=1.0, ls="--")
        right = choice.threshold > (thresholds.min() + thresholds.max()) / 2  # label inside the panel
        ax.annotate(f"chosen {choice.threshold:.2f}\nrate {choice.false_rate:.3f}", (choice.threshold,
                    choice.false_rate), xytext=(-6 if right else 6, 10), textcoords="offset points",
                    ha="right" if right else "left", fontsize=7.5, color=colour)
        top = max(float(rates.max(initial=0.0)), band[1] if band is not None else 0.0)
        ax.set_ylim(-0.02 * max(top, 0.05), max(top, 0.05) * 1.25)
        margin = 0.03
        ax.set_xlim(float(thresholds.min()) - margin, float(thresholds.max()) + margin)
    ax.xaxis.set_major_locator(MaxNLocator(5, steps=[1, 2, 2.5, 5, 10]))
    ax.set_xlabel("CC threshold", fontsize=8)
    ax.set_ylabel("false rate", fontsize=8)
    if band is not None:
        ax.legend(fontsize=6.5, loc="upper right", frameon=False)


def _shift_panel(ax: Any, shifts: np.ndarray, fs: float | None, *, skipped: str | None = None,
                 bin_frames: int = 1) -> None:
    """Motion-correction shifts over time (``skipped``: why no motion was corrected, in the title;
    ``bin_frames`` > 1: registered as means of that many consecutive frames)."""
    shifts = np.asarray(shifts, np.float64).reshape(-1, 2)
    t = np.arange(len(shifts)) / fs if fs else np.arange(len(shifts))
    for column, name, colour in ((0, "dy", "#1565c0"), (1, "dx", "#ef6c00")):
        ax.plot(t, shifts[:, column], lw=0.8, color=colour, label=name)
    max_shift = float(np.hypot(shifts[:, 0], shifts[:, 1]).max(initial=0.0))
    means = f" (means of {bin_frames} frames: too noisy one by one)" if bin_frames > 1 else ""
    title = f"motion correction{means}: max |shift| {max_shift:.1f} px"
    ax.set_title(title if skipped is None else f"motion correction: skipped ({skipped})", fontsize=9, loc="left")
    ax.axhline(0, color="0.7", lw=0.6)
    ax.set_xlabel("time (s)" if fs else "frame", fontsize=8)
    ax.set_ylabel("shift (px)", fontsize=8)
    ax.tick_params(labelsize=7)
    if len(t):
        ax.set_xlim(t[0], t[-1] if len(t) > 1 else t[0] + 1)
    ax.legend(fontsize=7, loc="lower right", bbox_to_anchor=(1.0, 1.0), ncol=2, frameon=False,
              borderaxespad=0.1)


def _facts(*, shape: Sequence[int], fs: float | None, n_cells: int, n_with_processes: int, n_process_rois: int,
           domain_areas: np.ndarray, roi_areas: np.ndarray, threshold: float, choice: Any,
           n_events: int | None, line_shift: float = 0.0) -> list[str]:
    """Key numbers of the run, one short line each."""
    n_frames, height, width = (int(s) for s in shape[:3])
    lines = [f"{n_frames} frames of {height} x {width} px",
             f"{n_frames / fs:.0f} s at {fs:.3g} Hz" if fs else "frame rate unknown",
             *([f"odd scan lines moved {line_shift:+.2f} px (bidirectional scan)"] if line_shift else []),
             f"{n_cells} cell{'s' * (n_cells != 1)}, {n_with_processes} with processes",
             f"{n_process_rois} process ROI{'s' * (n_process_rois != 1)}"]
    if n_cells:
        grown = np.asarray(domain_areas) - np.asarray(roi_areas)
        lines.append(f"CC domains: median {np.median(domain_areas):.0f} px")
        small = int(np.count_nonzero(grown <= 0))
        lines.append(f"{small} domain{'s' * (small != 1)} no larger than the cell" if small
                     else "every domain reaches beyond its cell")
        how = f"auto, false rate {choice.false_rate:.3f}" if choice is not None else "given"
        lines.append(f"CC threshold {threshold:.2f} ({how})")
    if n_events is not None:
        lines.append(f"{n_events} soma event{'s' * (n_events != 1)}")
    return lines


def plot_summary(pre: Any, soma: np.ndarray, processes: np.ndarray, domains: Any, traces: Any, *,
                 path: str | Path, title: str | None = None, false_rate_band: Sequence[float] | None = None,
                 events: Any = None, dpi: int = 100) -> Path:
    """One page that shows whether a movie's run worked (layout in the module docstring).

    Parameters
    ----------
    pre : Preprocessed
        Gives ``mean_image``, ``activity_map``, ``shifts``, ``shape`` and ``fs`` (and
        optionally ``background_name``, the first panel's title for ``mean_image``, and
        ``motion_skipped``, why no motion was corrected, ``motion_bin_frames``, the frames per mean
        registered when single frames were too noisy, and ``line_shift``, the px the odd scan
        lines were moved, ``Preprocessed.details["line_shift_px"]``).
    soma, processes : ndarray of int, shape (H, W)
        Label images with shared cell ids.
    domains : Domains
        The CC analysis (``domains``, ``cell_ids``, ``centroids``, ``threshold``,
        ``threshold_choice``).
    traces : RoiTraces
        dF/F of the ROIs; the soma rows make the heat map.
    path : str or Path
        Output image (PNG, PDF, ... by suffix), written atomically.
    title : str, optional
        The movie's name.
    false_rate_band : (float, float), optional
        Acceptance band of the threshold search (``CorrelationParams.false_rate_band``).
    events : EventTable, mapping or DataFrame, optional
        Calcium events (:class:`astro3s.events.EventTable`, or columns ``roi``
        and ``frame``; see :func:`event_marks`); the somata's onsets are
        marked on the heat map.
    dpi : int
        Resolution (the page is 13 inches wide, about 10 high for a square FOV;
        see :func:`summary_layout`).

    Returns
    -------
    path : Path
    """
    from matplotlib.figure import Figure

    soma = np.maximum(np.asarray(soma), 0).astype(np.int32)
    processes = np.maximum(np.asarray(processes), 0).astype(np.int32)
    domain_labels = np.maximum(np.asarray(domains.domains), 0).astype(np.int32)
    mean_image = np.asarray(pre.mean_image, np.float32)
    height, width = mean_image.shape
    cell_ids = np.asarray(domains.cell_ids, np.int64)
    n_max = int(max(soma.max(initial=0), processes.max(initial=0), domain_labels.max(initial=0),
                    cell_ids.max(initial=0)))
    lut = cell_colours(cell_ids, n_max)
    fs = getattr(traces, "fs", None) or getattr(pre, "fs", None)
    shifts = np.asarray(getattr(pre, "shifts", np.zeros((0, 2))), np.float64).reshape(-1, 2)
    band = None if false_rate_band is None else (float(false_rate_band[0]), float(false_rate_band[1]))
    choice = domains.threshold_choice
    threshold = float(domains.threshold)
    ids, rows = soma_rows(traces)
    soma_names = [name for name, kind in zip(traces.names, traces.kinds) if kind == "soma"]  # rows' order
    rows_of = {name: row for row, name in enumerate(soma_names)}
    marks = event_marks(events, rows_of)
    soma_events = None if events is None else np.bincount(marks[0], minlength=len(soma_names))
    checks = run_checks(n_cells=len(cell_ids), threshold=threshold, choice=choice, band=band, shifts=shifts,
                        fov_shape=(height, width), soma_events=soma_events)

    boxes = summary_layout((height, width))
    page_w, page_h = boxes["page"][2:]
    fig = Figure(figsize=(page_w, page_h), dpi=dpi)

    def axes(name: str) -> Any:
        x, y, w, h = boxes[name]
        return fig.add_axes((x / page_w, y / page_h, w / page_w, h / page_h))

    panel_px = boxes["image0"][2] * dpi
    scale = _overlay_scale((height, width), panel_px)
    blank = np.zeros_like(soma)
    images = (
        (np.repeat(stretch_image(mean_image)[..., None], 3, axis=2), getattr(pre, "background_name", "mean image"),
         None),
        (stretch_image(np.asarray(pre.activity_map, np.float32), (0.0, 99.7), gamma=0.8),
         "activity map", "inferno"),
        (compose_overlay(mean_image, soma, processes, blank, scale=scale, lut=lut, clean=False),
         f"cells: {len(cell_ids)} (soma, processes)", None),
        (compose_overlay(mean_image, soma, blank, domain_labels, scale=scale, lut=lut),
         f"CC domains (threshold {threshold:.2f})" if np.isfinite(threshold) else "CC domains: none", None),
    )
    for column, (raster, panel_title, cmap) in enumerate(images):  # four image panels
        ax = axes(f"image{column}")
        _image_panel(ax, raster, panel_title, cmap=cmap)
        if column >= 2:
            _label_cells(ax, np.asarray(domains.centroids), cell_ids, raster.shape[0] // height)

    # the heat map shows the traces the events were detected on, so that a mark sits on its rise; the
    # checks above keep the uncorrected dF/F of traces.csv
    heat, corrected = detected_rows(events, soma_names, rows)
    _heat_panel(axes("heat"), axes("colourbar"), ids, heat, lut, fs, marks,
                label="soma dF/F, neuropil-corrected as detected" if corrected else "soma dF/F")
    _search_panel(axes("search"), choice, threshold, band)
    _shift_panel(axes("shifts"), shifts, fs, skipped=getattr(pre, "motion_skipped", None),
                 bin_frames=int(getattr(pre, "motion_bin_frames", 1) or 1))

    facts_ax = axes("facts")
    facts_ax.set_axis_off()
    roi_areas = np.bincount(np.maximum(soma, processes).ravel(), minlength=n_max + 1)[cell_ids]
    domain_areas = np.bincount(domain_labels.ravel(), minlength=n_max + 1)[cell_ids]
    facts = _facts(shape=getattr(pre, "shape", (len(shifts), height, width)), fs=fs, n_cells=len(cell_ids),
                   n_with_processes=len(np.setdiff1d(np.unique(processes), [0])),
                   n_process_rois=sum(k == "process" for k in traces.kinds), domain_areas=domain_areas,
                   roi_areas=roi_areas, threshold=threshold, choice=choice,
                   n_events=None if events is None else len(marks[0]),
                   line_shift=float(getattr(pre, "line_shift", 0.0) or 0.0))
    facts_ax.text(0.0, 1.0, "\n".join(facts), ha="left", va="top", fontsize=8, linespacing=1.55,
                  transform=facts_ax.transAxes)

    x0 = boxes["image0"][0] / page_w
    fig.text(x0, 1 - 0.15 / page_h, title or "astro3s run", ha="left", va="top", fontsize=13, fontweight="bold")
    outcome, notes = checks[0], checks[1:]
    fig.text(x0, 1 - 0.47 / page_h, ("OK: " if outcome.level == "ok" else "FAILED: ") + outcome.text, ha="left",
             va="top", fontsize=10, fontweight="bold", color=_LEVEL_COLOURS[outcome.level])
    if notes:
        fig.text(x0, 1 - 0.72 / page_h, "check: " + "; ".join(c.text for c in notes), ha="left", va="top",
                 fontsize=8.5, color=_LEVEL_COLOURS["warn"])

    return save_figure(fig, path, dpi=dpi)


@dataclass(frozen=True)
class FigureInputs:
    """What the three figures of one output folder are drawn from; picklable, so that another process can
    draw them (:func:`draw_figures`).

    Attributes
    ----------
    name : str
        The movie's file name (the figures' titles, error messages).
    images : object
        ``mean_image``, ``activity_map``, ``shifts``, ``shape`` and ``fs`` of the
        pre-processing (not the ``Preprocessed`` itself, whose corrected movie may be large).
    soma, processes : ndarray of int, shape (H, W)
    domains : Domains or object
        ``domains``, ``cell_ids``, ``centroids``, ``threshold`` and ``threshold_choice``
        of the CC analysis (its CC maps are not needed).
    traces : RoiTraces
    events : EventTable
    false_rate_band : (float, float) or None
    """

    name: str
    images: Any
    soma: np.ndarray
    processes: np.ndarray
    domains: Any
    traces: Any
    events: Any
    false_rate_band: Sequence[float] | None


#: the figures of an output folder, in the order they are drawn
FIGURE_NAMES = ("overlay.png", "traces.png", SUMMARY_FIGURE)


def draw_figures(inputs: FigureInputs, folder: str | Path) -> float:
    """Draw ``overlay.png``, ``traces.png`` and ``summary.png`` into ``folder``; the seconds taken.

    Raises
    ------
    RuntimeError
        A figure failed: ``"<movie>: <figure> could not be drawn (<type>: <message>)"``, from the
        original exception (see :func:`astro3s.inference.background.draw_figure`).
    """
    import time

    from astro3s.correlation import plot_domains, plot_traces
    from astro3s.inference.background import draw_figure

    folder, start = Path(folder), time.perf_counter()
    images, domains, traces = inputs.images, inputs.domains, inputs.traces
    draws = (
        lambda: plot_domains(images.mean_image, inputs.soma, inputs.processes, domains.domains,
                             path=folder / FIGURE_NAMES[0], title=inputs.name, threshold=domains.threshold),
        lambda: plot_traces(traces, path=folder / FIGURE_NAMES[1], fs=traces.fs, events=inputs.events),
        lambda: plot_summary(images, inputs.soma, inputs.processes, domains, traces, path=folder / FIGURE_NAMES[2],
                             title=inputs.name, false_rate_band=inputs.false_rate_band, events=inputs.events),
    )
    for name, draw in zip(FIGURE_NAMES, draws):  # the three figures
        draw_figure(inputs.name, name, draw)
    return time.perf_counter() - start
