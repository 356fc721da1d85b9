"""The pre-processing panel: every stage of one FOV side by side."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from astro3s.preprocess.result import Preprocessed

__all__ = ["crop_mosaic", "plot_preprocessed"]


def crop_mosaic(crops: np.ndarray, *, columns: int | None = None, gap: int = 2) -> np.ndarray:
    """Tile crops ``(N, S, S)`` into one image (NaN between them); float32."""
    crops = np.asarray(crops, dtype=np.float32)
    n = len(crops)
    if n == 0:
        return np.full((8, 8), np.nan, np.float32)
    size = crops.shape[-1]
    columns = columns or int(np.ceil(np.sqrt(n)))
    rows = int(np.ceil(n / columns))
    out = np.full((rows * (size + gap) - gap, columns * (size + gap) - gap), np.nan, np.float32)
    for i, crop in enumerate(crops):  # loop over candidates
        r, c = divmod(i, columns)
        out[r * (size + gap):r * (size + gap) + size, c * (size + gap):c * (size + gap) + size] = crop
    return out


def plot_preprocessed(result: Preprocessed, path: str | Path, *, title: str | None = None,
                      max_crops: int = 25, dpi: int = 110) -> Path:
    """Draw mean raw image, enhanced image, activity map, candidates, FOV map, crops and shifts.

    Parameters
    ----------
    result : Preprocessed
    path : str or Path
        Image file (PNG); written atomically.
    title : str, optional
        Figure title (default: the movie's file name).
    max_crops : int
        Crops shown in the mosaic.

    Returns
    -------
    path : Path
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    from astro3s.io.atomic import atomic_path

    path = Path(path)
    n_frames = result.shape[0]
    fig = Figure(figsize=(16, 8.4), layout="constrained")
    FigureCanvasAgg(fig)
    axes = fig.subplots(2, 4)

    def show(ax, image, name, **kwargs):
        handle = ax.imshow(image, interpolation="nearest", **kwargs)
        ax.set_title(name, fontsize=10)
        ax.set_xticks([])
        ax.set_yticks([])
        return handle

    lo, hi = np.percentile(result.mean_image, [1, 99.7])
    show(axes[0, 0], result.mean_image, "mean raw", cmap="gray", vmin=lo, vmax=hi)
    source = "noise variance: dF movie" if result.params.morphology_image == "noise_variance" else "median"
    if result.params.activity_weight > 0:
        source += " + activity"  # brightened by the local correlation image (astro3s.preprocess.correlation_image)
    show(axes[0, 1], result.enhanced, f"enhanced ({source}, CLAHE, sharpen)", cmap="gray", vmin=0, vmax=1)
    handle = show(axes[0, 2], result.activity_map, "activity map (frames)", cmap="magma", vmin=0, vmax=n_frames)
    fig.colorbar(handle, ax=axes[0, 2], shrink=0.8)
    search = result.details.get("candidate_search", {})
    blobs = int(search.get("median_blobs", 0) or 0)
    title = f"{result.n_candidates} candidates (threshold {search.get('threshold', float('nan')):.0f} fr)"
    if search.get("significant"):
        title = f"{result.n_candidates} candidates (activity map >= 5 SD: a noisy movie)"
    show(axes[0, 3], result.enhanced, title + (f"\n{blobs} of them median-image blobs" if blobs else ""),
         cmap="gray", vmin=0, vmax=1)
    if result.n_candidates:
        axes[0, 3].contour(result.candidates > 0, levels=[0.5], colors="tab:red", linewidths=0.8)
        for y0, x0, y1, x1 in result.crop_boxes:
            axes[0, 3].plot([x0, x1, x1, x0, x0], [y0, y0, y1, y1, y0], color="tab:cyan", lw=0.5, alpha=0.6)
        centres = 0.5 * (result.crop_boxes[:, :2] + result.crop_boxes[:, 2:])
        for i, (cy, cx) in enumerate(centres):
            axes[0, 3].text(cx, cy, str(i + 1), color="yellow", fontsize=7, ha="center", va="center")
        axes[0, 3].set_xlim(-0.5, result.shape[2] - 0.5)
        axes[0, 3].set_ylim(result.shape[1] - 0.5, -0.5)
    show(axes[1, 0], result.fov_map, "filtered FOV map", cmap="gray", vmin=0, vmax=1)
    mosaic = crop_mosaic(result.crops[:max_crops])
    shown = min(result.n_candidates, max_crops)
    show(axes[1, 1], mosaic, f"crops {result.params.crop_size}x{result.params.crop_size} "
         f"({shown} of {result.n_candidates})", cmap="gray", vmin=0, vmax=1)
    ax = axes[1, 2]
    time_axis = np.arange(n_frames) / result.fs if result.fs else np.arange(n_frames)
    ax.plot(time_axis, result.shifts[:, 0], lw=0.8, label="dy")
    ax.plot(time_axis, result.shifts[:, 1], lw=0.8, label="dx")
    ax.set_xlabel("time (s)" if result.fs else "frame")
    ax.set_ylabel("shift (px)")
    bins = result.details.get("motion_bin_frames")
    repaired = result.details.get("motion_repaired_frames")
    ax.set_title("motion" + (f" (means of {bins} frames: too noisy one by one)" if bins and bins > 1 else
                             " (too noisy to register: not corrected)" if bins == 0 else
                             f" ({repaired} frame(s) given their neighbours' shift)" if repaired else ""),
                 fontsize=10)
    ax.legend(fontsize=8)
    show(axes[1, 3], result.reference, "motion reference", cmap="gray")
    t, h, w = result.shape
    fs = f"{result.fs:g} Hz" if result.fs else "fs unknown"
    fig.suptitle(title or f"{Path(result.source).name if result.source else 'movie'}: {t} x {h} x {w}, {fs}",
                 fontsize=12)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=dpi, format=path.suffix.lstrip(".") or "png")
    return path
