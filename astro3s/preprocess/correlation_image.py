"""The local temporal-correlation image, and the morphology image it brightens.

ASTRA reads the cells' shapes off the temporal median of the movie: a cell
that is dim at rest but active (GCaMP's resting fluorescence is low, and
expression and resting calcium vary from cell to cell) barely shows there. Its
activity does: neighbouring pixels of a cell rise and fall together, so each
pixel's correlation with the mean of its neighbours (the local correlation
image of Suite2p's and CaImAn's summary views) is high over active cells and
near its noise floor elsewhere. On the training simulator's ``d4_like_s5001``,
34 of 86 somata were missed by the median-image network, nearly all of them
within one texture SD of the background in the median image but plain in this
image (experiments/results/heldout_ablation.md, 2026-12-05 night).

:func:`local_correlation_image` computes it on frames binned in time
(``bin_s`` seconds: slow calcium events gain, shot noise averages out),
each bin's spatial median removed (bleaching and global flicker are not
activity); :func:`activity_brightened` adds its significant part to the
median image, which is what the network sees with
``PreprocessParams.activity_weight > 0`` (a model trained with it; the
morphology rules keep reading the plain median image).
"""

from __future__ import annotations

import math
from collections.abc import Iterable

import numpy as np

from astro3s.utils.robust import MAD_TO_SD

__all__ = ["MAX_BINS", "activity_brightened", "local_correlation_image", "temporal_bin_factor"]

#: Most time bins kept in memory: longer movies get wider bins (a 8200-frame movie at 2 Hz: 14 frames a bin).
MAX_BINS = 600
#: Half-side (px) of the square of neighbours, centre excluded, each pixel is correlated with.
NEIGHBOUR_RADIUS = 2


def temporal_bin_factor(n_frames: int, fs: float | None, *, bin_s: float = 2.0, max_bins: int = MAX_BINS) -> int:
    """Frames averaged into one time bin: ``bin_s`` seconds' worth, and no more than ``max_bins`` bins.

    Without a frame rate one frame a bin (before the ``max_bins`` cap).
    """
    per_bin = max(1, int(round(bin_s * fs))) if fs else 1
    return max(per_bin, math.ceil(n_frames / max_bins), 1)


def _bin_frames(chunks: Iterable[np.ndarray], n_frames: int, factor: int, shape: tuple[int, int]) -> np.ndarray:
    """Mean of each ``factor`` consecutive frames (a last partial bin dropped); float32 ``(B, H, W)``."""
    n_bins = n_frames // factor
    binned = np.zeros((n_bins, *shape), np.float32)
    t = 0
    for chunk in chunks:  # a few chunks of frames
        chunk = np.asarray(chunk, np.float32)
        bins = np.arange(t, t + len(chunk)) // factor
        t += len(chunk)
        kept = int(np.searchsorted(bins, n_bins))  # frames of the dropped partial bin are the last ones
        if kept == 0:
            continue
        bins = bins[:kept]
        # the chunk's frames summed bin by bin (a bin may start in one chunk and end in the next)
        starts = np.flatnonzero(np.r_[True, bins[1:] != bins[:-1]])
        binned[bins[starts]] += np.add.reduceat(chunk[:kept], starts, axis=0)
    if factor > 1:
        binned /= factor
    return binned


def _standardise(x: np.ndarray) -> None:
    """Each pixel's series (axis 0) to zero mean and unit SD, in place (SD 0 left at 0)."""
    x -= x.mean(axis=0, dtype=np.float64).astype(np.float32)
    sd = np.sqrt(np.mean(np.square(x), axis=0, dtype=np.float64)).astype(np.float32)
    np.divide(x, sd, out=x, where=sd > 0)


def local_correlation_image(chunks: Iterable[np.ndarray], n_frames: int, shape: tuple[int, int], *,
                            fs: float | None, bin_s: float = 2.0, smooth: float = 1.0) -> np.ndarray:
    """Correlation of each pixel's time course with its neighbours' mean.

    Parameters
    ----------
    chunks : iterable of ndarray, each of shape (t, H, W)
        The (motion-corrected) movie's frames in order, ``n_frames`` in all.
    n_frames : int
    shape : (int, int)
        ``(H, W)``.
    fs : float or None
        Frame rate (Hz); sets the time bins (:func:`temporal_bin_factor`).
    bin_s : float
        Seconds of frames averaged into one time bin.
    smooth : float
        Gaussian scale (px) of a spatial smoothing of each bin (0: none).

    Returns
    -------
    ndarray of float32, shape (H, W)
        Pearson correlation over the time bins, in [-1, 1]; 0 where a pixel
        or its neighbourhood is constant, and everywhere when there are fewer
        than 3 bins.
    """
    from scipy import ndimage

    factor = temporal_bin_factor(n_frames, fs, bin_s=bin_s)
    x = _bin_frames(chunks, n_frames, factor, shape)
    if len(x) < 3:
        return np.zeros(shape, np.float32)
    # a bin's spatial median (every 7th pixel) is the FOV's common level: bleaching, flicker, slow drift
    x -= np.median(x.reshape(len(x), -1)[:, ::7], axis=1).astype(np.float32)[:, None, None]
    if smooth > 0:
        ndimage.gaussian_filter(x, (0.0, smooth, smooth), output=x, mode="nearest", truncate=3.0)
    _standardise(x)
    side = 2 * NEIGHBOUR_RADIUS + 1
    # mean of the (side x side) square around a pixel, the pixel itself left out
    neighbours = ndimage.uniform_filter(x, (1, side, side), mode="nearest")
    neighbours *= side * side
    neighbours -= x
    _standardise(neighbours)
    neighbours *= x
    return neighbours.mean(axis=0, dtype=np.float64).astype(np.float32)


def activity_brightened(median_image: np.ndarray, correlation_image: np.ndarray, *, weight: float,
                        threshold: float = 2.0) -> np.ndarray:
    """The median image with the significant part of the local correlation image added.

    The correlation image is scored against its own noise floor (robust
    z-score: median and MAD over the FOV, most of which is not a
    cell), the part above ``threshold`` kept, and scaled so that its 99th
    percentile is ``weight`` times the median image's: a cell that is dim at
    rest but active is drawn about as bright as the cells the median image
    shows, while a silent FOV's image is left as it was.

    Parameters
    ----------
    median_image, correlation_image : ndarray, shape (H, W)
    weight : float
        0 returns ``median_image`` unchanged.
    threshold : float
        Robust z-score below which the correlation image adds nothing.

    Returns
    -------
    ndarray of float32, shape (H, W)
    """
    median_image = np.asarray(median_image, np.float32)
    if weight <= 0:
        return median_image
    corr = np.asarray(correlation_image, np.float32)
    centre = float(np.median(corr))
    spread = MAD_TO_SD * float(np.median(np.abs(corr - centre)))
    if not spread > 0:
        return median_image
    significant = np.maximum((corr - centre) / spread - threshold, 0.0)
    top = float(np.percentile(significant, 99))
    if top <= 0:
        return median_image
    scale = weight * float(np.percentile(median_image, 99)) / top
    return (median_image + scale * significant).astype(np.float32)
