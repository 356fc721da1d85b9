"""Writing a simulated movie and its ground truth to a folder, plus the overview figure."""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import os
import shutil
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import scipy.sparse as sp

from astro3s.simulate.api import SimulatedMovie
from astro3s.simulate.render import DOMAIN_MAX_LAG, DOMAIN_SMOOTH_FRAMES

DOMAIN_DEFINITION = (
    "domains.tif: each cell's soma and process pixels, plus the pixels of its footprint (territory) "
    "whose expected correlation with the cell's soma or process signal reaches {level}, in components "
    "connected (8-connectivity) to the cell's soma/processes. Expected correlation: from the noiseless "
    "scene (all components, PSF blur, vessel shadows, mean bleaching level, no bleaching trend, no "
    "motion), the pixel's {smooth}-frame moving-average signal against the mean signal of the cell's "
    "soma (or of one of its processes), best lag within +-{lag} frames; the pixel's variance adds the "
    "analytic shot + read + rounding noise of the smoothed measurement ((photons + (read_noise/gain)^2 "
    "+ 1/(12 gain^2)) / {smooth}). A pixel claimed by several cells goes to the highest correlation; "
    "somata and processes always belong to their own cell.")

__all__ = ["MovieSummary", "plot_overview", "write_simulation"]

log = logging.getLogger(__name__)

_MEDIAN_FRAMES = 64  # frames kept (evenly spaced) to estimate the median image


class MovieSummary:
    """Running statistics of a movie seen chunk by chunk (bounded memory).

    Accumulates the mean, standard deviation and maximum images, an evenly
    spaced frame sample for the median, and mean traces inside label images.

    Parameters
    ----------
    shape : tuple of int
        Movie shape ``(T, H, W)``.
    labels : dict of str to ndarray of int, shape (H, W)
        Regions whose mean trace is recorded, e.g. ``{"cells": ..., "neurons": ...}``.
    """

    def __init__(self, shape: tuple[int, int, int], labels: dict[str, np.ndarray]):
        n_frames, h, w = shape
        self.n_frames = n_frames
        self._sum = np.zeros((h, w), np.float64)
        self._sumsq = np.zeros((h, w), np.float64)
        self.max = np.zeros((h, w), np.float32)
        self._sample_at = np.unique(np.linspace(0, n_frames - 1, min(_MEDIAN_FRAMES, n_frames)).astype(int))
        self._samples: list[np.ndarray] = []
        self._masks: dict[str, sp.csc_matrix] = {}
        self.traces: dict[str, np.ndarray] = {}
        for key, lab in labels.items():
            lab = np.asarray(lab).ravel().astype(np.int64)
            n = int(lab.max(initial=0))
            pix = np.flatnonzero(lab)
            counts = np.bincount(lab[pix] - 1, minlength=n).astype(np.float32)
            m = sp.csc_matrix((1.0 / counts[lab[pix] - 1], (pix, lab[pix] - 1)), shape=(lab.size, n),
                              dtype=np.float32)
            self._masks[key] = m
            self.traces[key] = np.zeros((n_frames, n), np.float32)

    def update(self, t0: int, block: np.ndarray) -> None:
        """Add frames ``t0 : t0 + len(block)``."""
        f = block.astype(np.float32)
        self._sum += f.sum(axis=0)
        self._sumsq += np.einsum("tij,tij->ij", f, f, dtype=np.float64)
        np.maximum(self.max, f.max(axis=0), out=self.max)
        take = self._sample_at[(self._sample_at >= t0) & (self._sample_at < t0 + len(f))]
        self._samples.extend(np.asarray(block)[take - t0])  # native dtype: 4x smaller for uint16
        flat = f.reshape(len(f), -1)
        for key, m in self._masks.items():
            self.traces[key][t0:t0 + len(f)] = np.asarray(flat @ m, dtype=np.float32) if m.shape[1] else 0

    @property
    def mean(self) -> np.ndarray:
        """Mean image, float32 (H, W)."""
        return (self._sum / self.n_frames).astype(np.float32)

    @property
    def std(self) -> np.ndarray:
        """Standard-deviation image, float32 (H, W)."""
        var = self._sumsq / self.n_frames - (self._sum / self.n_frames) ** 2
        return np.sqrt(np.maximum(var, 0)).astype(np.float32)

    @property
    def median(self) -> np.ndarray:
        """Median image over the sampled frames, float32 (H, W)."""
        return np.median(np.stack(self._samples).astype(np.float32), axis=0).astype(np.float32)

    def tap(self, chunks: Iterator[tuple[int, np.ndarray]]) -> Iterator[np.ndarray]:
        """Pass blocks through while accumulating them."""
        for t0, block in chunks:
            self.update(t0, block)
            yield block


def _dff(trace: np.ndarray, offset: float) -> np.ndarray:
    # the detector offset is not fluorescence; F0 = 20th percentile, as usual for astrocytes
    f = trace - offset
    f0 = np.percentile(f, 20, axis=0)
    return (f - f0) / np.maximum(np.abs(f0), 1e-3)


def plot_overview(sim: SimulatedMovie, summary: MovieSummary, path: str | Path) -> Path:
    """Save a figure to judge a simulated movie at a glance.

    Top row: mean, standard deviation, max minus median (activity), and the
    ground truth (soma, process, domain outlines with ids) over the mean. Bottom:
    dF/F of a few cells measured on the noisy movie with the noiseless ground
    truth underneath, one neuron-like distractor, and the motion trace.
    """
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt
    from skimage.segmentation import find_boundaries

    from astro3s.io import atomic_path

    p = sim.params
    mean, std, activity = summary.mean, summary.std, summary.max - summary.median
    fig = plt.figure(figsize=(16, 9.5), constrained_layout=True)
    grid = fig.add_gridspec(2, 4, height_ratios=[1.15, 1])

    def show(ax, img, title):
        lo, hi = np.percentile(img, [0.5, 99.7])
        ax.imshow(img, cmap="gray", vmin=lo, vmax=hi if hi > lo else lo + 1, interpolation="nearest")
        ax.set_title(title, fontsize=10)
        ax.set_axis_off()

    show(fig.add_subplot(grid[0, 0]), mean, "mean")
    show(fig.add_subplot(grid[0, 1]), std, "std")
    show(fig.add_subplot(grid[0, 2]), activity, "max - median (activity)")
    ax = fig.add_subplot(grid[0, 3])
    show(ax, mean, f"ground truth: {sim.n_cells} cells (dropped {len(sim.truth.dropped)})")
    overlay = np.zeros((*mean.shape, 4), np.float32)
    for lab, colour in ((sim.domains, (0.2, 0.6, 1.0)), (sim.processes, (0.2, 1.0, 0.3)),
                        (sim.soma, (1.0, 0.3, 0.2))):
        edge = find_boundaries(lab, mode="inner")
        overlay[edge] = (*colour, 0.9)
    ax.imshow(overlay, interpolation="nearest")
    if sim.n_cells <= 40:
        for k in range(1, sim.n_cells + 1):
            ys, xs = np.nonzero(sim.soma == k)
            if len(ys):
                ax.text(xs.mean(), ys.mean(), str(k), color="yellow", fontsize=7, ha="center", va="center")

    t = np.arange(p.n_frames) / p.fs
    ax = fig.add_subplot(grid[1, 0:3])
    cells = summary.traces["cells"]
    order = np.argsort(-sim.traces.std(axis=0))[:5] if sim.n_cells else []
    gap = 0.0
    for k in order:
        measured = _dff(cells[:, k], p.offset)
        truth = sim.traces[:, k]
        ax.plot(t, measured + gap, lw=0.7, color="k")
        ax.plot(t, truth + gap, lw=0.9, color="tab:orange", alpha=0.8)
        ax.text(t[0], gap + 0.1, f"cell {k + 1}", fontsize=8, color="tab:blue")
        gap += max(float(np.percentile(measured, 99.5)), float(truth.max()), 0.5) + 0.3
    neurons = summary.traces.get("neurons")
    if neurons is not None and neurons.shape[1]:
        j = int(np.argmax(neurons.std(axis=0)))
        ax.plot(t, _dff(neurons[:, j], p.offset) + gap, lw=0.7, color="tab:purple")
        ax.text(t[0], gap + 0.1, "neuron (distractor)", fontsize=8, color="tab:purple")
    ax.set_xlabel("time (s)")
    ax.set_ylabel("dF/F (stacked); black = movie, orange = ground truth")
    ax.set_title(f"{sim.name}: {p.n_frames} frames at {p.fs:.2f} Hz, {p.height}x{p.width} px", fontsize=10)
    ax = fig.add_subplot(grid[1, 3])
    ax.plot(t, sim.shifts[:, 0], lw=0.8, label="dy")
    ax.plot(t, sim.shifts[:, 1], lw=0.8, label="dx")
    ax.set_xlabel("time (s)")
    ax.set_ylabel("shift (px)")
    ax.legend(fontsize=8)
    ax.set_title(f"motion; photons/px soma {p.soma_photons:.1f}, bg {p.background_photons:.1f}",
                 fontsize=10)
    path = Path(path)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=90, format="png")
    plt.close(fig)
    return path


def _csv(header: list[str], rows: np.ndarray, first: np.ndarray) -> str:
    body = np.column_stack([first, rows])
    fmt = ["%d"] + ["%.6g"] * rows.shape[1]
    import io

    buf = io.StringIO()
    np.savetxt(buf, body, fmt=fmt, delimiter=",", header=",".join(header), comments="")
    return buf.getvalue()


def _meta(sim: SimulatedMovie, timings: dict[str, float]) -> dict[str, Any]:
    import astro3s

    scene, truth = sim.scene, sim.truth
    cells = []
    for gt_id, i in enumerate(truth.cell_index, start=1):
        cell, info = scene.cells[i], scene.cell_info[i]
        fy, fx = scene.fov_origin
        own = (truth.soma == gt_id) | (truth.processes == gt_id)
        cells.append({"id": gt_id, "scene_index": int(i),
                      "center_yx": [cell.center[0] - fy, cell.center[1] - fx],
                      "soma_area_px": cell.soma_area,
                      "domain_area_px": int((truth.domains == gt_id).sum()),
                      "domain_beyond_cell_px": int(((truth.domains == gt_id) & ~own).sum()),
                      **dataclasses.asdict(info)})
    dropped = [{"scene_index": int(i), "reason": "silent" if scene.cell_info[i].silent else
                ("no event" if not scene.cell_info[i].active else "soma outside the FOV"),
                **dataclasses.asdict(scene.cell_info[i])} for i in truth.dropped]
    kinds = np.bincount(scene.component_kind, minlength=5)
    return {
        "name": sim.name, "preset": sim.preset, "seed": sim.seed,
        "astro3s_version": astro3s.__version__,
        "shape": list(sim.shape), "fs": sim.fs, "dtype": "uint16",
        "n_cells": sim.n_cells, "cells": cells, "dropped_cells": dropped,
        "unplaced_cells": scene.n_unplaced,
        "n_neurons": int(scene.neurons.max(initial=0)),
        "components": {"whole": int(kinds[0]), "soma": int(kinds[1]), "micro": int(kinds[2]),
                       "neuron": int(kinds[3]), "lookalike": int(kinds[4]), "waves": len(scene.waves),
                       "neuropil": int(len(scene.neuropil_fields))},
        "layout": scene.layout_source,
        "domain_definition": DOMAIN_DEFINITION.format(level=sim.params.domain_min_correlation,
                                                      smooth=DOMAIN_SMOOTH_FRAMES, lag=DOMAIN_MAX_LAG),
        "domain_min_correlation": sim.params.domain_min_correlation,
        "shift_convention": "frame_t(y, x) = reference(y - dy_t, x - dx_t); "
                            "scipy.ndimage.shift(frame_t, (-dy_t, -dx_t)) registers it",
        "params": sim.params.to_dict(),
        "ranges": None if sim.ranges is None else {k: list(v) if isinstance(v, tuple) else v
                                                   for k, v in dataclasses.asdict(sim.ranges).items()},
        "timings_s": {**sim.timings, **timings},
    }


def write_simulation(sim: SimulatedMovie, out_dir: str | Path, *, overview: bool = True,
                     progress: bool = False) -> Path:
    """Write a simulated movie and its ground truth to ``out_dir/<name>/``.

    Layout::

        <name>/<name>.tif                 movie, uint16 (T, H, W), fs stored
        <name>/ground_truth/soma.tif      uint16 labels, ids 1..N
        <name>/ground_truth/processes.tif annotator-width processes (polygons as ASTRA's annotators draw them)
        <name>/ground_truth/processes_thin.tif  the branches themselves (~2 px wide), same ids
        <name>/ground_truth/domains.tif
        <name>/ground_truth/RoiSet.zip    Soma_### / Proc_###_## ROIs
        <name>/ground_truth/shifts.csv    frame,dy,dx
        <name>/ground_truth/traces.csv    frame,cell_001,... (noiseless dF/F)
        <name>/ground_truth/events.csv    every event in every ROI that shows it (astro3s.simulate.events)
        <name>/meta.json                  parameters, preset, seed, version, dropped cells
        <name>/overview.png               realism check

    The folder is assembled under a temporary name and renamed at the end, so
    it is complete or absent; an existing folder of that name is replaced.
    Streamed movies are rendered chunk by chunk while being written.

    Returns
    -------
    Path
        The movie folder.
    """
    from astro3s.io import write_json, write_labels, write_movie, write_roiset, write_text
    from astro3s.simulate.events import event_truth, write_event_truth

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    final = out_dir / sim.name
    work = Path(tempfile.mkdtemp(prefix=f".{sim.name}.", suffix=".part", dir=out_dir))
    # mkdtemp makes a private (0700) folder; the finished folder gets the usual permissions
    umask = os.umask(0)
    os.umask(umask)
    work.chmod(0o777 & ~umask)
    timings: dict[str, float] = {}
    try:
        fov = sim.scene.fov
        summary = MovieSummary(sim.shape, {"cells": np.maximum(sim.soma, sim.processes),
                                           "neurons": sim.scene.neurons[fov]})
        chunks = sim.chunks()
        if progress:
            from tqdm import tqdm

            chunks = tqdm(chunks, total=-(-sim.shape[0] // sim.scene.chunk_frames),
                          desc=f"{sim.name} (chunks of {sim.scene.chunk_frames} frames)", unit="chunk",
                          leave=False)
        start = time.perf_counter()
        write_movie(work / f"{sim.name}.tif", summary.tap(chunks), fs=sim.fs, shape=sim.shape,
                    dtype=np.uint16)
        timings["write_movie_s"] = time.perf_counter() - start
        gt = work / "ground_truth"
        write_labels(gt / "soma.tif", sim.soma)
        write_labels(gt / "processes.tif", sim.processes)
        write_labels(gt / "processes_thin.tif", sim.processes_thin)
        write_labels(gt / "domains.tif", sim.domains)
        write_roiset(sim.soma, sim.processes, gt / "RoiSet.zip")
        frames = np.arange(sim.shape[0])
        write_text(gt / "shifts.csv", _csv(["frame", "dy", "dx"], sim.shifts, frames))
        write_text(gt / "traces.csv", _csv(["frame", *[f"cell_{k:03d}" for k in range(1, sim.n_cells + 1)]],
                                           sim.traces, frames))
        write_event_truth(gt / "events.csv", event_truth(sim.scene, sim.truth))
        if overview:
            start = time.perf_counter()
            plot_overview(sim, summary, work / "overview.png")
            timings["overview_s"] = time.perf_counter() - start
        write_json(work / "meta.json", _meta(sim, timings))
        if final.exists():
            old = Path(tempfile.mkdtemp(prefix=f".{sim.name}.", suffix=".old", dir=out_dir))
            os.replace(final, old / "previous")
            os.replace(work, final)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(work, final)
    except BaseException:
        with contextlib.suppress(OSError):
            shutil.rmtree(work, ignore_errors=True)
        raise
    log.info("wrote %s (%d cells, %d frames at %.2f Hz)", final, sim.n_cells, sim.shape[0], sim.fs)
    return final
