"""Processes grown from the somata over a summary image (for FOVs segmented on a coarser grid)."""

from __future__ import annotations

from typing import Any

import numpy as np

__all__ = ["grow_processes", "with_grown_processes"]


def grow_processes(soma: np.ndarray, image: np.ndarray, *, level: float = 0.2, reach: float = 3.0,
                   smooth: float = 1.0) -> np.ndarray:
    """Process labels grown from each soma over the bright pixels of a summary image.

    A FOV binned k x k to the training scale is segmented on a grid where a
    10-px process is 2 px wide: the network draws few of the long branches
    that the movie's own median image shows. Here each cell takes the pixels
    that a watershed of the smoothed image, flooded from the somata, reaches
    through pixels brighter than ``bg + level * (s - bg)`` (``s``: the median
    brightness of the nearest soma, ``bg``: the image's lower quartile) within
    ``reach`` soma radii of that soma. Where two cells' branches meet, the
    watershed line of the image parts them.

    Parameters
    ----------
    soma : ndarray of int, shape (H, W)
        Soma labels ``1..n`` (0 background).
    image : ndarray of float, shape (H, W)
        Temporal median (or mean) image, not contrast-equalised.
    level : float
        Fraction of the way from background to soma brightness a pixel must reach.
    reach : float
        Farthest a process pixel may lie from its soma, in soma radii (``sqrt(area / pi)``).
    smooth : float
        Gaussian smoothing (px) of the image against pixel noise.

    Returns
    -------
    processes : ndarray of int32, shape (H, W)
        Same ids as ``soma``, 0 where no process; every process pixel is
        connected to its own soma. A soma no brighter than ``bg`` grows none.
    """
    from scipy import ndimage as ndi
    from skimage.segmentation import watershed

    labels = np.asarray(soma).astype(np.int32)
    n = int(labels.max(initial=0))
    if n == 0:
        return np.zeros(labels.shape, np.int32)
    img = ndi.gaussian_filter(np.asarray(image, dtype=np.float32), float(smooth))
    ids = np.arange(1, n + 1)
    background = float(np.percentile(img, 25))
    soma_level = np.asarray(ndi.median(img, labels, ids), dtype=np.float64)
    radius = np.sqrt(np.bincount(labels.ravel(), minlength=n + 1)[1:] / np.pi)
    distance, (iy, ix) = ndi.distance_transform_edt(labels == 0, return_indices=True)
    nearest = labels[iy, ix] - 1  # index of the nearest soma, for every pixel
    threshold = np.where(soma_level > background, background + float(level) * (soma_level - background), np.inf)
    allowed = (img >= threshold[nearest]) & (distance <= float(reach) * radius[nearest])
    grown = watershed(-img, markers=labels, mask=allowed | (labels > 0), connectivity=2)
    return np.where(labels > 0, 0, grown).astype(np.int32)


def with_grown_processes(seg: Any, image: np.ndarray, **options: Any) -> Any:
    """``seg`` with its processes replaced by :func:`grow_processes` of its somata; ``counts`` kept."""
    from astro3s.postprocess.combine import _segmentation

    processes = grow_processes(seg.soma, image, **options)
    return _segmentation(seg.soma, processes, seg.n_cells, seg.params, dict(seg.counts))
