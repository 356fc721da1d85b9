"""How sharply each soma stands out of its summary image: out-of-focus look-alikes are blurred.

An astrocyte in the focal plane has a soma edge as sharp as the microscope's
point-spread function allows; an astrocyte a few micrometres above or below
the plane, or a diffuse fluorescent blob, shows a soft disc whose edge spreads
over a good part of its radius. The enhancement that feeds the network (CLAHE)
equalises local contrast and so hides this difference; it is measured here on
the un-enhanced median image.

The edge width of a soma is its contrast over its steepest edge gradient,
``w = (I_soma - I_around) / |grad I|_edge`` (px): a step blurred by a
Gaussian of width ``s`` has ``w = sqrt(2 pi) s``. Divided by the soma's
equivalent radius it is scale-free: :func:`soma_edge_blur`.
"""

from __future__ import annotations

from typing import Any

import numpy as np

__all__ = ["remove_blurred_cells", "soma_edge_blur", "soma_edges", "touches_border"]


def touches_border(labels: np.ndarray) -> np.ndarray:
    """Which cells of a label image touch its border.

    Parameters
    ----------
    labels : ndarray of int, shape (H, W)
        Labels ``1..n`` (0 background).

    Returns
    -------
    ndarray of bool, shape (n,)
        True at index ``k - 1`` when label ``k`` has a pixel in the first or
        last row or column.
    """
    labels = np.asarray(labels)
    n = int(labels.max(initial=0))
    rim = np.concatenate([labels[0], labels[-1], labels[:, 0], labels[:, -1]]).astype(np.int64)
    return np.bincount(rim, minlength=n + 1)[1:n + 1] > 0


def _soma_radii(labels: np.ndarray, n: int) -> np.ndarray:
    """Equivalent radius ``max(sqrt(area / pi), 1)`` (px, float64, (n,)) of labels ``1..n``: the radius
    :func:`soma_edge_blur` divides by."""
    area = np.bincount(np.asarray(labels).ravel().astype(np.int64), minlength=n + 1)[1:n + 1]
    return np.maximum(np.sqrt(area / np.pi), 1.0)


def soma_edge_blur(image: np.ndarray, soma: np.ndarray, *, smooth: float = 1.0,
                   edge_percentile: float = 90.0, relative: bool = True) -> np.ndarray:
    """Edge width of each soma on a summary image, relative to its radius (or in pixels).

    Parameters
    ----------
    image : ndarray of float, shape (H, W)
        Temporal median (or mean) image, not contrast-equalised.
    soma : ndarray of int, shape (H, W)
        Soma labels ``1..n`` (0 background).
    smooth : float
        Gaussian smoothing (px) against pixel noise before the gradient.
    edge_percentile : float
        The edge gradient is this percentile of ``|grad I|`` in a band of
        ``+- max(2, r / 3)`` px around the soma outline (the steep part of the
        edge, wherever the outline drawn by the network lies in it).
    relative : bool
        Divide the edge width ``w`` by the soma's radius ``r`` (True), or give
        ``w`` in pixels (False).

    Returns
    -------
    blur : ndarray of float64, shape (n,)
        ``w / r`` (``w`` with ``relative=False``) for cell ``k`` at index
        ``k - 1``: about 0.1-0.5 for somata in focus, larger for
        out-of-focus cells and soft blobs; ``inf`` for a soma no brighter than
        its surround, NaN for an id without pixels.
    """
    contrast, steep = soma_edges(image, soma, smooth=smooth, edge_percentile=edge_percentile)
    with np.errstate(divide="ignore", invalid="ignore"):
        width = np.where((contrast > 0) & (steep > 0), contrast / steep, np.inf)
    width[np.isnan(contrast)] = np.nan
    if relative:
        width = width / _soma_radii(soma, contrast.size)
    return width


def soma_edges(image: np.ndarray, soma: np.ndarray, *, smooth: float = 1.0,
               edge_percentile: float = 90.0) -> tuple[np.ndarray, np.ndarray]:
    """Each soma's contrast over its surround and its steep edge gradient on a summary image.

    The two measures :func:`soma_edge_blur` divides (its parameters).

    Returns
    -------
    contrast : ndarray of float64, shape (n,)
        Median brightness of the soma minus the lower quartile of a ring
        around it (from ``max(2, r / 3)`` px to one radius beyond that, other
        somata left out), in the image's units (smoothed by ``smooth``).
    steep : ndarray of float64, shape (n,)
        The ``edge_percentile``-th percentile of ``|grad I|`` in the band
        around its outline (units per px).
        Both NaN for an id without pixels.
    """
    from scipy import ndimage as ndi

    img = ndi.gaussian_filter(np.asarray(image, dtype=np.float32), float(smooth))
    gy, gx = np.gradient(img)
    gradient = np.hypot(gy, gx)
    labels = np.asarray(soma)
    n = int(labels.max(initial=0))
    contrast_of, steep_of = np.full(n, np.nan), np.full(n, np.nan)
    boxes = ndi.find_objects(labels)
    height, width = labels.shape
    for k, box in enumerate(boxes, start=1):  # loop over cells (tens), not pixels
        if box is None:
            continue
        area = int((labels[box] == k).sum())
        radius = max(float(np.sqrt(area / np.pi)), 1.0)
        band = max(2, int(round(radius / 3.0)))
        reach = int(np.ceil(radius)) + band
        y0, y1 = max(box[0].start - reach, 0), min(box[0].stop + reach, height)
        x0, x1 = max(box[1].start - reach, 0), min(box[1].stop + reach, width)
        mask = labels[y0:y1, x0:x1] == k
        others = (labels[y0:y1, x0:x1] > 0) & ~mask
        near = ndi.binary_dilation(mask, iterations=band)
        edge = near & ~ndi.binary_erosion(mask, iterations=band)
        # the surround: a ring from one band to one radius out, other somata excluded; its lower
        # quartile (processes of the cell itself are bright and thin)
        ring = ndi.binary_dilation(mask, iterations=reach) & ~near & ~others
        window = img[y0:y1, x0:x1]
        inside = float(np.median(window[mask]))
        around = float(np.percentile(window[ring], 25)) if ring.any() else float(window[~near].min(initial=inside))
        contrast_of[k - 1] = inside - around
        steep_of[k - 1] = float(np.percentile(gradient[y0:y1, x0:x1][edge], edge_percentile))
    return contrast_of, steep_of


def remove_blurred_cells(seg: Any, image: np.ndarray, *, max_relative_blur: float = 1.5,
                         min_cells: int = 3, reference: np.ndarray | None = None, in_pixels: bool = False,
                         keep: np.ndarray | None = None, min_pixel_widening: float | None = None,
                         border_in_pixels: bool = False) -> Any:
    """Drop the cells whose soma is much more blurred than the FOV's typical soma.

    Every cell of a FOV is seen through the same optics, so an in-focus soma's
    edge blur (:func:`soma_edge_blur`) is close to the FOV's median; a cell
    ``max_relative_blur`` times blurrier is out of focus (or a diffuse blob).
    Comparing within the FOV, not with a fixed value, keeps the rule valid
    for any point-spread function and zoom.

    Parameters
    ----------
    seg : Segmentation
    image : ndarray of float, shape (H, W)
        The median (or mean) image of the FOV, not contrast-equalised.
    max_relative_blur : float
        Ratio to the median blur above which a cell goes.
    min_cells : int
        With fewer cells (reference cells, when given) nothing is removed (no
        reliable median).
    reference : ndarray of bool, shape (n_cells,), optional
        The cells whose median blur is the reference; they are kept whatever
        their blur, and only the others can go (e.g. cells added by a second
        pass, judged against those the first found). None: every cell.
    keep : ndarray of bool, shape (n_cells,), optional
        Cells never removed, whatever their blur (the reference cells are kept anyway).
    in_pixels : bool
        Compare the edges' widths in pixels (``soma_edge_blur(relative=False)``)
        instead of relative to each soma's radius. Defocus widens every edge by the
        same pixels whatever the soma's size, so where the judged cells are
        larger than the reference (cells a coarser pass adds), an
        out-of-focus one shows a wider edge, while its width relative to its
        larger radius looks as sharp as the reference's.
    min_pixel_widening : float, optional
        With the relative comparison, a cell also needs an edge at least this
        many times as wide in pixels as the reference's median to go: an
        in-focus soma smaller than the others has a larger edge width
        relative to its radius (the point-spread function sets the width in
        pixels), but no wider an edge (:attr:`CombineParams.min_pixel_widening`).
        Cells whose soma touches the image border are judged by the relative
        comparison alone: their visible soma is a part of a disc, so their
        radius reads small and their edge is measured on part of its outline,
        and these are the fragments of cells whose soma lies mostly outside
        the FOV (on the movies it was measured on, 11 false and 1 true border
        cell would have been let back by the pixel condition).
        None: the relative comparison alone.
    border_in_pixels : bool
        Judge the cells whose soma touches the image border by their edge width in pixels against the
        reference's median width in pixels, the others as ``in_pixels`` says: the edge hides part of such a
        soma, so its radius reads small and its width relative to it large, while its width in pixels is
        measured on the part of its outline that is inside (used for the cells a finer pass adds,
        :func:`astro3s.inference.cells.drop_blurred_additions`).

    Returns
    -------
    Segmentation
        The remaining cells renumbered ``1..m`` in their order;
        ``counts["blurred_removed"]`` says how many went.
    """
    from astro3s.postprocess.combine import remove_cells

    judged = np.ones(seg.n_cells, bool) if reference is None else np.asarray(reference, bool)
    if judged.shape != (seg.n_cells,):
        raise ValueError(f"reference must hold one flag per cell ({seg.n_cells}), got shape {judged.shape}")
    drop = np.zeros(seg.n_cells, bool)
    if judged.sum() >= int(min_cells):
        # one edge measurement serves both comparisons: relative = width / radius (soma_edge_blur)
        width = soma_edge_blur(image, seg.soma, relative=False)
        blur = width if in_pixels else width / _soma_radii(seg.soma, seg.n_cells)
        finite = np.isfinite(blur)
        if (finite & judged).any():
            drop = finite & (blur > float(max_relative_blur) * float(np.median(blur[finite & judged])))
            if not in_pixels and (min_pixel_widening is not None or border_in_pixels):
                # the reference's median width in pixels (a finite relative blur has a finite width)
                typical_width = float(np.median(width[np.isfinite(width) & judged]))
                cut = touches_border(seg.soma)
                if min_pixel_widening is not None:
                    drop &= (width >= float(min_pixel_widening) * typical_width) | cut
                if border_in_pixels:
                    drop = np.where(cut, np.isfinite(width) & (width > float(max_relative_blur) * typical_width), drop)
            if reference is not None:
                drop &= ~judged
            if keep is not None:
                drop &= ~np.asarray(keep, bool)
    return remove_cells(seg, drop, count_key="blurred_removed")
