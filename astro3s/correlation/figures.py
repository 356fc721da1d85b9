"""Figures of the CC analysis: cells and CC domains over the mean image, stacked dF/F traces.

:func:`plot_domains` composes the overlay as one RGB raster (:func:`compose_overlay`):
colour look-up tables indexed by the label images give every fill and outline at
once, so the cost does not grow with the number of cells. matplotlib (Agg) is
imported inside the functions; files are written atomically.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np

from astro3s.correlation.traces import RoiTraces
from astro3s.io import atomic_path

__all__ = ["cell_colours", "clean_domains", "compose_overlay", "plot_domains", "plot_traces", "save_figure",
           "stretch_image"]

#: Bright, mutually distinct colours (no grey, nothing dark) that stay visible over a grey image.
PALETTE = np.array([
    (0.98, 0.24, 0.24), (0.20, 0.85, 0.30), (0.25, 0.60, 1.00), (1.00, 0.62, 0.10), (0.95, 0.35, 0.95),
    (0.10, 0.90, 0.95), (1.00, 0.92, 0.20), (0.70, 0.50, 1.00), (0.65, 1.00, 0.35), (1.00, 0.55, 0.70),
], dtype=np.float32)

# display styles (alpha of the fill, outline width in output pixels, alpha of the outline)
_SOMA_FILL, _SOMA_LINE = 0.35, (2, 1.0)
_PROCESS_FILL, _PROCESS_LINE = 0.30, (1, 0.55)
_DOMAIN_FILL, _DOMAIN_LINE = 0.16, (1, 0.9)
# raster size aimed at (pixels along the longer side) and the most an image pixel is enlarged
_TARGET_PX, _MAX_SCALE, _MAX_PX = 900, 8, 1600
#: zlib level of PNG figures: lossless like the default (6), the same pixels, ~3x faster to encode for
#: files ~10-20 % larger (issue 14: ~0.3 s of the three figures of a D1 movie)
PNG_COMPRESS_LEVEL = 2


def stretch_image(image: np.ndarray, percentiles: tuple[float, float] = (1.0, 99.7),
                  gamma: float = 0.6) -> np.ndarray:
    """Percentile contrast stretch of an image to [0, 1], then a gamma.

    Parameters
    ----------
    image : ndarray, shape (H, W)
        Any real image (NaN/Inf are shown black).
    percentiles : (float, float)
        Values mapped to 0 and 1 (clipped beyond).
    gamma : float
        Exponent applied after the stretch; below 1 brightens faint structure.

    Returns
    -------
    out : ndarray of float32, shape (H, W)
        Values in [0, 1]; all zeros when the image is constant or empty.
    """
    image = np.asarray(image, dtype=np.float32)
    finite = np.isfinite(image)
    if not finite.any():
        return np.zeros(image.shape, np.float32)
    lo, hi = np.percentile(image[finite], percentiles)
    if not hi > lo:
        return np.zeros(image.shape, np.float32)
    out = np.clip((np.where(finite, image, lo) - lo) / (hi - lo), 0.0, 1.0)
    return (out ** gamma if gamma != 1 else out).astype(np.float32)


def cell_colours(ids: np.ndarray, n_max: int | None = None) -> np.ndarray:
    """Colour look-up table: row ``i`` is the RGB colour of cell id ``i`` (row 0: unused, black).

    Parameters
    ----------
    ids : ndarray of int
        Sorted cell ids present (> 0); the k-th gets ``PALETTE[k % len(PALETTE)]``.
    n_max : int, optional
        Largest id the table must cover (default ``ids.max()``).

    Returns
    -------
    lut : ndarray of float32, shape (n_max + 1, 3)
    """
    ids = np.asarray(ids, dtype=np.int64)
    n_max = int(ids.max(initial=0)) if n_max is None else int(n_max)
    lut = np.zeros((n_max + 1, 3), np.float32)
    lut[ids] = PALETTE[np.arange(len(ids)) % len(PALETTE)]
    return lut


def clean_domains(domains: np.ndarray, *, closing_radius: int = 1, min_size: int = 6,
                  max_hole: int = 30) -> np.ndarray:
    """The CC domains as closed regions, for display only.

    Pieces of a domain (4-connected) smaller than ``min_size`` pixels are
    dropped, except the largest piece of each domain so that no domain
    disappears; then a binary closing of the union of domains and the filling
    of its holes up to ``max_hole`` pixels add pixels, which take the label of
    the nearest domain pixel (a gap between two domains is split, never
    bridged into one).

    Parameters
    ----------
    domains : ndarray of int, shape (H, W)
        Domain labels (0 = none).
    closing_radius : int
        Radius of the disk of the closing (0: no closing).
    min_size : int
        Smallest piece kept, in pixels.
    max_hole : int
        Largest hole filled, in pixels.

    Returns
    -------
    cleaned : ndarray, shape (H, W), the dtype of ``domains``
    """
    from scipy import ndimage
    from skimage.measure import label as label_pieces

    labels = np.asarray(domains)
    out = labels.copy()
    if not (labels > 0).any():
        return out
    # pieces: connected regions of one label each, sized at once
    pieces = label_pieces(labels, background=0, connectivity=1)
    sizes = np.bincount(pieces.ravel())
    owner = np.zeros(sizes.size, np.int64)
    owner[pieces.ravel()] = labels.ravel()
    largest = np.zeros(int(labels.max()) + 1, np.int64)
    np.maximum.at(largest, owner[1:], sizes[1:])
    keep = (sizes >= min_size) | (sizes == largest[owner])
    keep[0] = False
    out[~keep[pieces]] = 0
    fg = out > 0
    grown = fg.copy()
    if closing_radius > 0:
        r = int(closing_radius)
        yy, xx = np.mgrid[-r:r + 1, -r:r + 1]
        disk = yy**2 + xx**2 <= r * r + r  # r=1: the 3 x 3 square; r=2: a round 5 x 5
        grown |= ndimage.binary_closing(fg, structure=disk)
    if max_hole > 0:
        holes, n_holes = ndimage.label(ndimage.binary_fill_holes(grown) & ~grown)
        if n_holes:
            small = np.bincount(holes.ravel(), minlength=n_holes + 1) <= max_hole
            small[0] = False
            grown |= small[holes]
    added = grown & ~fg
    if added.any():
        _, (iy, ix) = ndimage.distance_transform_edt(~fg, return_indices=True)
        out[added] = out[iy[added], ix[added]]
    return out


def _upsample(labels: np.ndarray, scale: int, sigma: float = 0.0) -> np.ndarray:
    """Labels enlarged ``scale`` times, the outer edges following the bilinear interpolation
    of the foreground (round, not staircase), after a Gaussian blur of ``sigma`` pixels."""
    from scipy import ndimage

    fg = (labels > 0).astype(np.float32)
    if (scale == 1 and sigma <= 0) or not fg.any():
        return _enlarge(labels, scale)
    if sigma > 0:
        fg = ndimage.gaussian_filter(fg, sigma, mode="nearest")
    if scale > 1:
        fg = ndimage.zoom(fg, scale, order=1, grid_mode=True, mode="nearest")
    inside = fg[:labels.shape[0] * scale, :labels.shape[1] * scale] >= 0.5
    up = _enlarge(labels, scale)
    grow = inside & (up == 0)
    if grow.any():
        # grown pixels lie within ~sigma + 1 image pixels of a label: take the largest one near
        reach = 2 * (1 + int(math.ceil(sigma))) + 1
        up[grow] = _enlarge(ndimage.maximum_filter(labels, size=reach), scale)[grow]
    up[~inside] = 0
    # ids that vanished (counted with bincount, ~4x faster than np.unique on the enlarged image)
    n_ids = int(labels.max()) + 1
    lost = np.flatnonzero((np.bincount(labels.ravel(), minlength=n_ids) > 0)
                          & (np.bincount(up.ravel(), minlength=n_ids)[:n_ids] == 0))
    if lost.size:  # a region too small to survive the smoothing keeps its blocky shape
        blocky = _enlarge(labels, scale)
        keep = np.isin(blocky, lost)
        up[keep] = blocky[keep]
    return up


def _enlarge(array: np.ndarray, scale: int) -> np.ndarray:
    """Each pixel repeated ``scale x scale`` times (nearest-neighbour enlargement; a copy)."""
    return np.repeat(np.repeat(array, scale, axis=0), scale, axis=1) if scale > 1 else array.copy()


def _edges(labels: np.ndarray, width: int) -> np.ndarray:
    """Pixels of each region within ``width`` pixels (8-neighbourhood) of another value: its inner outline.

    Pixels at the image's border are not an edge unless their neighbours in the image differ.
    """
    edge = np.zeros(labels.shape, bool)
    height, width_px = labels.shape
    for dy in range(-width, width + 1):  # a loop over the (2 width + 1)^2 - 1 shifts, not over pixels
        for dx in range(-width, width + 1):
            if dy == 0 and dx == 0:
                continue
            a = labels[max(0, dy):height + min(0, dy), max(0, dx):width_px + min(0, dx)]
            b = labels[max(0, -dy):height + min(0, -dy), max(0, -dx):width_px + min(0, -dx)]
            edge[max(0, dy):height + min(0, dy), max(0, dx):width_px + min(0, dx)] |= a != b
    return edge & (labels > 0)


def _blend(out: np.ndarray, labels: np.ndarray, mask: np.ndarray, lut: np.ndarray, alpha: float) -> None:
    """``out = out (1 - a) + colour a`` on ``mask``, with the colours of ``lut[labels]`` (in place)."""
    if mask.any():
        out[mask] = out[mask] * (1.0 - alpha) + lut[labels[mask]] * alpha


def compose_overlay(image: np.ndarray, soma: np.ndarray, processes: np.ndarray, domains: np.ndarray, *,
                    scale: int = 1, lut: np.ndarray | None = None, percentiles: tuple[float, float] = (1.0, 99.7),
                    gamma: float = 0.6, clean: bool = True) -> np.ndarray:
    """RGB raster of the cells and their CC domains over a grey image.

    Bottom to top: the image (percentile stretch, gamma), each domain as a
    translucent fill and a thin outline of its closed region
    (:func:`clean_domains`), processes as a light fill with a faint outline,
    somata as a fill and a solid outline, all in the colour of their cell.

    Parameters
    ----------
    image : ndarray, shape (H, W)
        Background, e.g. the mean projection of the movie.
    soma, processes, domains : ndarray of int, shape (H, W)
        Label images with shared cell ids (0 = none).
    scale : int
        Each image pixel becomes ``scale x scale`` output pixels; the label
        edges are smoothed when enlarged, and outlines keep their width in
        output pixels (1-2 px).
    lut : ndarray, shape (>= max id + 1, 3), optional
        Colour of each cell id (default :func:`cell_colours` of the ids present).
    percentiles, gamma
        Contrast of the background (:func:`stretch_image`).
    clean : bool
        Close the domains for display (:func:`clean_domains`).

    Returns
    -------
    rgb : ndarray of float32, shape (H * scale, W * scale, 3)
        Values in [0, 1].
    """
    image = np.asarray(image)
    if image.ndim != 2:
        raise ValueError(f"image must be 2-D (H, W), got shape {image.shape}")
    layers = [np.asarray(a) for a in (soma, processes, domains)]
    for name, arr in zip(("soma", "processes", "domains"), layers):
        if arr.shape != image.shape:
            raise ValueError(f"{name} has shape {arr.shape}, the image {image.shape}")
        if arr.dtype.kind not in "iub":
            raise ValueError(f"{name} must be an integer label image, got {arr.dtype}")
    soma, processes, domains = (np.maximum(a, 0).astype(np.int32) for a in layers)
    scale = max(1, int(scale))
    if lut is None:
        ids = np.union1d(np.union1d(np.unique(soma), np.unique(processes)), np.unique(domains))
        lut = cell_colours(ids[ids > 0])
    n_max = max(int(a.max(initial=0)) for a in (soma, processes, domains))
    if len(lut) <= n_max:
        raise ValueError(f"lut has {len(lut)} rows, ids go up to {n_max}")
    lut = np.asarray(lut, np.float32)[:, :3]

    grey = stretch_image(image, percentiles, gamma)
    if scale > 1:
        grey = np.repeat(np.repeat(grey, scale, axis=0), scale, axis=1)
    out = np.repeat(grey[..., None], 3, axis=2)
    if clean:
        domains = clean_domains(domains)
    # widths are in output pixels: enlarged images get thin lines, not blocks
    for labels, sigma, fill, (width, line_alpha) in ((domains, 0.7 if clean else 0.0, _DOMAIN_FILL, _DOMAIN_LINE),
                                                    (processes, 0.0, _PROCESS_FILL, _PROCESS_LINE),
                                                    (soma, 0.0, _SOMA_FILL, _SOMA_LINE)):
        if not labels.any():
            continue
        up = _upsample(labels, scale, sigma)
        _blend(out, up, up > 0, lut, fill)
        _blend(out, up, _edges(up, width if scale > 1 else max(1, width - 1)), lut, line_alpha)
    np.clip(out, 0.0, 1.0, out=out)
    return out


def _scale_bar_um(width_um: float) -> float:
    """A round length (1, 2 or 5 x 10^n µm) near 15 % of the image width, at most 40 %."""
    target = 0.15 * width_um
    choices = np.array([m * 10.0**e for e in range(-1, 5) for m in (1, 2, 5)])
    fits = choices[choices <= 0.4 * width_um]
    return float(fits[np.argmin(np.abs(np.log(fits / target)))]) if fits.size else float(choices[0])


def _label_positions(boxes: list[tuple[float, float, float, float]], size: tuple[float, float],
                     shape: tuple[int, int]) -> list[tuple[float, float]]:
    """Centres of the id labels, in image pixels: just outside a corner of each box (a soma's, in overlays).

    The first corner (top right, top left, bottom right, bottom left) whose label stays in
    the image and does not overlap an earlier label wins; else the first in the image,
    moved down (or up) until it is clear of the earlier labels, within a few tries.
    """
    half_w, half_h = size[0] / 2, size[1] / 2
    height, width = shape
    placed = np.zeros((0, 2))
    out = []
    for y0, y1, x0, x1 in boxes:  # a loop over cells
        corners = [(x1 + half_w, y0 - half_h), (x0 - half_w, y0 - half_h),
                   (x1 + half_w, y1 + half_h), (x0 - half_w, y1 + half_h)]
        # inside the image (1 pixel of slack), else the first pulled back into it
        lo_x, hi_x = half_w - 1.5, max(width + 0.5 - half_w, half_w - 1.5)
        lo_y, hi_y = half_h - 1.5, max(height + 0.5 - half_h, half_h - 1.5)
        inside = [(x, y) for x, y in corners if lo_x <= x <= hi_x and lo_y <= y <= hi_y]
        cands = inside or [(float(np.clip(corners[0][0], lo_x, hi_x)), float(np.clip(corners[0][1], lo_y, hi_y)))]

        def clear(x: float, y: float) -> bool:
            return not len(placed) or not np.any((np.abs(placed[:, 0] - x) < 2 * half_w)
                                                 & (np.abs(placed[:, 1] - y) < 2 * half_h))

        pick = next(((x, y) for x, y in cands if clear(x, y)), None)
        if pick is None:
            x, y = cands[0]
            step = 2 * half_h * (1 if y < height / 2 else -1)
            for k in range(1, 6):  # nudge along y, a few label heights at most
                if clear(x, y + k * step):
                    y = y + k * step
                    break
            pick = (x, float(np.clip(y, lo_y, hi_y)))
        out.append(pick)
        placed = np.vstack([placed, pick])
    return out


def save_figure(fig: Any, path: str | Path, *, dpi: float) -> Path:
    """Write a matplotlib ``Figure`` to ``path`` atomically, in the format of its suffix (PNG by default).

    PNG files are compressed at :data:`PNG_COMPRESS_LEVEL`.

    Returns
    -------
    path : Path
    """
    path = Path(path)
    fmt = path.suffix.lstrip(".") or "png"
    extra = {"pil_kwargs": {"compress_level": PNG_COMPRESS_LEVEL}} if fmt.lower() == "png" else {}
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=dpi, format=fmt, **extra)
    return path


def plot_domains(image: np.ndarray, soma: np.ndarray, processes: np.ndarray, domains: np.ndarray, *,  # noqa: C901, PLR0915 - one figure drawn layer by layer
                 path: str | Path, title: str | None = None, threshold: float | None = None,
                 pixel_size_um: float | None = None, subtitle: str | None = None, dpi: int = 150) -> Path:
    """Each cell's soma, processes and CC domain over the mean image, with cell ids.

    One raster (:func:`compose_overlay`) holds the picture: the image with a
    1-99.7 percentile stretch and a gamma of 0.6, each CC domain as a
    translucent fill with the outline of its closed region, processes as a
    light fill and somata as a fill with a solid outline, in one colour per
    cell. Cell ids sit just outside a corner of the soma's bounding box (the
    processes' when a cell has no soma), in the cell's colour with a dark edge. Small images are enlarged (up to 8x)
    so that outlines stay thin.

    Parameters
    ----------
    image : ndarray, shape (H, W)
        Background: the mean projection of the movie (or any summary image).
    soma, processes, domains : ndarray of int, shape (H, W)
        Label images with shared ids.
    path : str or Path
        Output image (PNG, PDF, ... by suffix), written atomically.
    title : str, optional
        First line of the title (e.g. the movie's name).
    threshold : float, optional
        CC threshold used for the domains, shown with the counts.
    pixel_size_um : float, optional
        Pixel size in µm; draws a scale bar when given.
    subtitle : str, optional
        Second line of the title; default: the counts of cells, processes and
        domains and the CC threshold.
    dpi : int
        Resolution of the file.

    Returns
    -------
    path : Path
    """
    from matplotlib import patheffects
    from matplotlib.figure import Figure
    from matplotlib.patches import Patch
    from scipy import ndimage

    image = np.asarray(image)
    if image.ndim != 2:
        raise ValueError(f"image must be 2-D (H, W), got shape {image.shape}")
    height, width = image.shape
    soma, processes, domains = (np.maximum(np.asarray(a), 0).astype(np.int32) for a in (soma, processes, domains))
    present = [np.unique(a)[1:] if a.any() else np.zeros(0, np.int32) for a in (soma, processes, domains)]
    ids = np.union1d(np.union1d(present[0], present[1]), present[2])
    lut = cell_colours(ids)
    scale = int(min(_MAX_SCALE, max(1, math.ceil(_TARGET_PX / max(height, width, 1)))))
    rgb = compose_overlay(image, soma, processes, domains, scale=scale, lut=lut)

    # layout in inches: the raster at one output pixel per figure pixel (shrunk past _MAX_PX)
    shrink = min(1.0, _MAX_PX / max(rgb.shape[:2]))
    ax_w, ax_h = rgb.shape[1] * shrink / dpi, rgb.shape[0] * shrink / dpi
    top, bottom, side = 0.45, 0.28, 0.06
    fig_w = max(ax_w + 2 * side, 3.6)
    fig_h = ax_h + top + bottom
    fig = Figure(figsize=(fig_w, fig_h), dpi=dpi)  # no pyplot: no global state, nothing to close
    ax = fig.add_axes(((fig_w - ax_w) / 2 / fig_w, bottom / fig_h, ax_w / fig_w, ax_h / fig_h))
    ax.imshow(rgb, extent=(-0.5, width - 0.5, height - 0.5, -0.5), interpolation="antialiased",
              interpolation_stage="rgba")
    ax.set_xlim(-0.5, width - 0.5)
    ax.set_ylim(height - 0.5, -0.5)
    ax.set_axis_off()

    # cell ids: size of a label in image pixels, from the font size and the pixels per image pixel
    px_per_pixel = ax_w * dpi / max(width, 1)
    fontsize = 7.5
    label_h = fontsize * dpi / 72 * 1.15 / px_per_pixel
    label_w = fontsize * dpi / 72 * 0.62 * len(str(int(ids.max(initial=1)))) / px_per_pixel + label_h * 0.3
    if len(ids):
        # the soma's box, not the whole cell's: a cell with long processes has a box reaching its
        # neighbours, and a label at that box's corner reads as theirs
        n_max = int(ids.max())
        soma_boxes = ndimage.find_objects(soma, max_label=n_max)
        cell_boxes = ndimage.find_objects(processes, max_label=n_max)
        domain_boxes = ndimage.find_objects(domains, max_label=n_max)
        boxes = []
        for cid in ids:  # a loop over cells
            box = soma_boxes[cid - 1] or cell_boxes[cid - 1] or domain_boxes[cid - 1]
            boxes.append((box[0].start - 0.5, box[0].stop - 0.5, box[1].start - 0.5, box[1].stop - 0.5))
        stroke = [patheffects.withStroke(linewidth=2.0, foreground="black")]
        for cid, (x, y) in zip(ids, _label_positions(boxes, (label_w, label_h), (height, width))):
            ax.text(x, y, str(int(cid)), color=tuple(lut[cid]), fontsize=fontsize, fontweight="bold",
                    ha="center", va="center", path_effects=stroke, clip_on=True)

    if pixel_size_um is not None and np.isfinite(pixel_size_um) and pixel_size_um > 0:
        bar_um = _scale_bar_um(width * pixel_size_um)
        bar_px = bar_um / pixel_size_um
        margin = 0.04 * min(height, width)
        x1, y = width - 0.5 - margin, height - 0.5 - margin
        outline = [patheffects.withStroke(linewidth=4.5, foreground="black")]
        ax.plot([x1 - bar_px, x1], [y, y], color="white", linewidth=3, solid_capstyle="butt",
                path_effects=outline)
        ax.text(x1 - bar_px / 2, y - 8 / px_per_pixel, f"{bar_um:g} µm", color="white", fontsize=7,
                ha="center", va="bottom", path_effects=[patheffects.withStroke(linewidth=2, foreground="black")])

    if subtitle is None:
        n_cells, n_proc, n_dom = (len(p) for p in present)
        parts = [f"{n_cells} cell{'s' * (n_cells != 1)}", f"{n_proc} with processes",
                 f"{n_dom} CC domain{'s' * (n_dom != 1)}"]
        if threshold is not None and np.isfinite(threshold):
            parts.append(f"CC threshold {threshold:.2f}")
        subtitle = ", ".join(parts)
    fig.text(0.5, 1 - 0.08 / fig_h, title or "cells and CC domains", ha="center", va="top", fontsize=9)
    fig.text(0.5, 1 - 0.26 / fig_h, subtitle, ha="center", va="top", fontsize=7.5, color="0.25")
    grey = (0.55, 0.55, 0.55)
    handles = [Patch(facecolor=(*grey, 0.6), edgecolor=grey, linewidth=1.5, label="soma"),
               Patch(facecolor=(*grey, 0.35), edgecolor=(*grey, 0.5), linewidth=0.5, label="processes"),
               Patch(facecolor=(*grey, 0.15), edgecolor=grey, linewidth=0.8, label="CC domain")]
    fig.legend(handles=handles, loc="lower center", ncol=3, fontsize=7, frameon=False,
               bbox_to_anchor=(0.5, 0.0), handlelength=1.4, columnspacing=1.2, borderaxespad=0.2)

    return save_figure(fig, path, dpi=dpi)


def plot_traces(traces: RoiTraces, *, path: str | Path, fs: float | None = None, max_traces: int = 10,
                names: list[str] | None = None, dpi: int = 150, events: object | None = None) -> Path:
    """A few ROI traces stacked vertically, with their calcium events marked.

    With an events table that keeps its traces (:func:`astro3s.events.roi_events`),
    each ROI is drawn as its events were detected: the neuropil-corrected
    fluorescence as dF/F of the detector's baseline
    (:meth:`~astro3s.events.EventTable.detected_dff`), so an event's mark sits
    on the rise it was found on and its height is its ``amplitude_dff``. Without
    one (or for an ROI it did not analyse), the uncorrected dF/F of ``traces``
    (that of ``traces.csv``); the title says which.

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
    events : EventTable, optional
        Events to mark: on the trace of its ROI, each event's onset a tick,
        its peak a dot, and onset to end drawn thick.

    Returns
    -------
    path : Path
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fs = traces.fs if fs is None else fs
    pick = [traces.names.index(n) for n in names] if names else list(range(min(max_traces, len(traces))))
    n_frames = traces.dff.shape[0]
    t = np.arange(n_frames) / fs if fs else np.arange(n_frames)
    # each ROI as its events were detected; an ROI the events table did not analyse: its dF/F
    shown, detected = (events.detected_or([traces.names[c] for c in pick], traces.dff[:, pick])
                       if hasattr(events, "detected_or") else (traces.dff[:, pick], np.zeros(len(pick), bool)))
    n_raw = int((~detected).sum())
    fig = Figure(figsize=(8, 1 + 0.6 * max(len(pick), 1)))  # no pyplot: no global state, any thread
    FigureCanvasAgg(fig)
    ax = fig.subplots()
    offset = 0.0
    roi_of_event = np.asarray(events.roi, dtype=object) if events is not None else np.zeros(0, dtype=object)
    n_marked = 0
    for k, col in enumerate(pick):  # a loop over the few ROIs shown
        y = np.nan_to_num(shown[:, k])
        (line,) = ax.plot(t, y + offset, lw=0.8)
        ax.text(t[0] if len(t) else 0, offset, traces.names[col] + " ", ha="right", va="bottom", fontsize=7)
        mine = np.flatnonzero(roi_of_event == traces.names[col])
        if len(mine):
            onset, peak, end = events.onset_frame[mine], events.peak_frame[mine], events.end_frame[mine]
            for a, b in zip(onset, end):  # a loop over this ROI's events
                span = slice(int(a), min(int(b), n_frames - 1) + 1)
                ax.plot(t[span], y[span] + offset, lw=2.6, color=line.get_color(), alpha=0.35,
                        solid_capstyle="butt")
            ax.plot(t[onset], y[onset] + offset, "|", color="k", ms=6, mew=1.0)
            ax.plot(t[peak], y[peak] + offset, "o", color=line.get_color(), mec="k", mew=0.4, ms=3)
            n_marked += len(mine)
        offset += float(np.ptp(y)) * 1.1 + 0.2 if len(y) else 1.0
    ax.set_xlabel("time (s)" if fs else "frame")
    ax.set_yticks([])
    if n_raw < len(pick):
        title = "neuropil-corrected dF/F, as the events were detected (F0: detector baseline; offset per ROI)"
        if n_raw:
            title += f"; {n_raw} uncorrected"
    else:
        title = "dF/F (offset per ROI)"
    if events is not None:
        title += f"\n{n_marked} of {len(events)} event(s) shown: | onset, o peak, thick onset to end"
    ax.set_title(title, fontsize=9)
    for side in ("top", "right", "left"):
        ax.spines[side].set_visible(False)
    fig.tight_layout()
    return save_figure(fig, path, dpi=dpi)
