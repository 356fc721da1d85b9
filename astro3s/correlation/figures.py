"""Figures of the CC analysis: domain outlines over an image, stacked dF/F traces.

matplotlib (Agg) is imported inside the functions; files are written atomically.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from astro3s.correlation.traces import RoiTraces
from astro3s.io import atomic_path

__all__ = ["plot_domains", "plot_traces"]


def _outline(ax: Any, labels: np.ndarray, cid: int, box: Any, colour: Any, width: float,
             style: str = "solid") -> None:
    """Outline of ``labels == cid`` drawn from its bounding ``box`` (slices, or None when absent) plus a
    1-pixel margin, so that each cell costs its own size, not the FOV's."""
    if box is None:
        return
    ys, xs = box
    mask = np.pad(labels[ys, xs] == cid, 1).astype(np.float32)
    ax.contour(np.arange(xs.start - 1, xs.stop + 1), np.arange(ys.start - 1, ys.stop + 1), mask, levels=[0.5],
               colors=[colour], linewidths=width, linestyles=style)


def plot_domains(image: np.ndarray, soma: np.ndarray, processes: np.ndarray, domains: np.ndarray, *,
                 path: str | Path, title: str | None = None, dpi: int = 150) -> Path:
    """Outlines of each cell's soma, processes and CC domain over an image, with cell ids.

    Parameters
    ----------
    image : ndarray, shape (H, W)
        Enhanced or mean image (shown with a 1-99.5 percentile stretch).
    soma, processes, domains : ndarray of int, shape (H, W)
        Label images with shared ids.
    path : str or Path
        Output image (PNG, PDF, ... by suffix).

    Returns
    -------
    path : Path
    """
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt
    from scipy import ndimage

    image = np.asarray(image, dtype=np.float32)
    lo, hi = np.percentile(image, [1, 99.5]) if image.size else (0.0, 1.0)
    height, width = image.shape
    fig, ax = plt.subplots(figsize=(6, 6 * height / max(width, 1)))
    ax.imshow(image, cmap="gray", vmin=lo, vmax=hi if hi > lo else lo + 1, interpolation="nearest")
    soma, processes, domains = (np.asarray(a, np.int64) for a in (soma, processes, domains))
    ids = np.union1d(np.unique(soma[soma > 0]), np.unique(domains[domains > 0]))
    n_max = int(ids.max(initial=0))
    boxes = {name: ndimage.find_objects(labels, max_label=n_max)
             for name, labels in (("soma", soma), ("processes", processes), ("domains", domains))}
    # label positions: the soma's centroid, else the domain's
    index = np.arange(1, n_max + 1)
    with np.errstate(invalid="ignore", divide="ignore"):  # ids absent from one image: NaN, not used
        yx = np.stack(ndimage.center_of_mass(np.ones_like(soma), soma, index)) if n_max else np.zeros((0, 2))
        yx_domain = np.stack(ndimage.center_of_mass(np.ones_like(domains), domains, index)) if n_max else yx
    cmap = plt.get_cmap("tab10")
    for n, cid in enumerate(ids):  # a loop over cells
        colour = cmap(n % 10)
        _outline(ax, domains, cid, boxes["domains"][cid - 1], colour, 1.0, "dashed")
        _outline(ax, processes, cid, boxes["processes"][cid - 1], colour, 0.7)
        _outline(ax, soma, cid, boxes["soma"][cid - 1], colour, 1.6)
        y, x = yx[cid - 1] if boxes["soma"][cid - 1] is not None else yx_domain[cid - 1]
        ax.text(x, y, str(int(cid)), color="white", fontsize=8, ha="center", va="center",
                bbox={"facecolor": colour, "alpha": 0.7, "pad": 1, "edgecolor": "none"})
    ax.set_title(title or "soma (thick), processes (thin), CC domain (dashed)", fontsize=9)
    ax.set_axis_off()
    fig.tight_layout()
    path = Path(path)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=dpi, format=path.suffix.lstrip(".") or "png")
    plt.close(fig)
    return path


def plot_traces(traces: RoiTraces, *, path: str | Path, fs: float | None = None, max_traces: int = 10,
                names: list[str] | None = None, dpi: int = 150) -> Path:
    """A few dF/F traces stacked vertically.

    Parameters
    ----------
    traces : RoiTraces
    path : str or Path
        Output image.
    fs : float, optional
        Frame rate in Hz for a time axis in seconds (default ``traces.fs``;
        frames when unknown).
    max_traces : int
        How many ROIs to show (the first ones, or ``names``).
    names : list of str, optional
        ROIs to show.

    Returns
    -------
    path : Path
    """
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    fs = traces.fs if fs is None else fs
    pick = [traces.names.index(n) for n in names] if names else list(range(min(max_traces, len(traces))))
    n_frames = traces.dff.shape[0]
    t = np.arange(n_frames) / fs if fs else np.arange(n_frames)
    fig, ax = plt.subplots(figsize=(8, 1 + 0.6 * max(len(pick), 1)))
    offset = 0.0
    for col in pick:  # a loop over the few ROIs shown
        y = np.nan_to_num(traces.dff[:, col])
        ax.plot(t, y + offset, lw=0.8)
        ax.text(t[0] if len(t) else 0, offset, traces.names[col] + " ", ha="right", va="bottom", fontsize=7)
        offset += float(np.ptp(y)) * 1.1 + 0.2 if len(y) else 1.0
    ax.set_xlabel("time (s)" if fs else "frame")
    ax.set_yticks([])
    ax.set_title("dF/F (offset per ROI)", fontsize=9)
    for side in ("top", "right", "left"):
        ax.spines[side].set_visible(False)
    fig.tight_layout()
    path = Path(path)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=dpi, format=path.suffix.lstrip(".") or "png")
    plt.close(fig)
    return path
