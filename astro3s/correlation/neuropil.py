"""Neuropil around each ROI and its contamination of the ROI's trace.

Out-of-focus light from the neuropil (the dense mesh of other cells' fine
processes, above and below the focal plane) adds to every pixel, ROI pixels
included. Its slow, spatially smooth fluctuations ride on every ROI trace and
look like small calcium events. As in Suite2p (Pachitariu et al. 2017; its
defaults: surround of >= 350 px, 2 px from any cell) each ROI gets a
*surround*: the pixels nearest to it that belong to no ROI, at least ``gap``
pixels away from every ROI, until ``min_pixels`` are collected. Its mean
``Fneu`` is accumulated in the same pass over the movie as the ROI means
(:class:`~astro3s.correlation.RoiMeans`).

The corrected trace is ``F - c * (Fneu - mean(Fneu))``: only the fluctuations
are removed, so the resting level (and with it dF/F) stays that of ``F``.
Suite2p fixes ``c = 0.7``; here ``c`` is fitted per ROI
(:func:`neuropil_coefficients`), because the share of neuropil light in an
ROI varies with the cell's brightness, the depth of focus and the
preparation: a least-squares slope of ``F`` on ``Fneu`` after both lose
their slow drift (medians of blocks of ``window_s`` / 4, interpolated), refitted
twice over the frames where the corrected trace is not in an event, clipped to
``[0, max_coef]``. Events of the cell are left out of the fit; a surround
that carries none of the ROI's fluctuations gets ``c ~ 0`` and changes
nothing. The gap keeps the cell's drawn ROIs out of the surround, not its
finest branches: around an astrocyte whose territory is active with it, the
surround carries some of the cell's own events, the fitted slope reaches the
clip (1 by default: an ROI holds no more out-of-focus light than its
surround), and the corrected events come out 5-15 % smaller than on ``F``
(simulated D1-like cells).
"""

from __future__ import annotations

import numpy as np

from astro3s.utils.robust import MAD_TO_SD

__all__ = ["neuropil_coefficients", "neuropil_weights", "subtract_neuropil"]

#: Suite2p's defaults (``min_neuropil_pixels``, ``inner_neuropil_radius`` + 1)
MIN_PIXELS = 350
GAP = 3
#: the surround is searched within this many pixels of the ROI, then within MAX_DISTANCE
_FIRST_DISTANCE = 20
MAX_DISTANCE = 60


def _surround(roi_index: np.ndarray, roi: int, box: tuple[slice, slice], allowed: np.ndarray, *,
              min_pixels: int) -> np.ndarray:
    """Flat indices of the ``min_pixels`` allowed pixels nearest to ROI ``roi`` (fewer if none are near)."""
    from scipy import ndimage as ndi

    height, width = roi_index.shape
    for reach in (_FIRST_DISTANCE, MAX_DISTANCE):  # widen once when the first reach holds too few pixels
        y0, y1 = max(box[0].start - reach, 0), min(box[0].stop + reach, height)
        x0, x1 = max(box[1].start - reach, 0), min(box[1].stop + reach, width)
        distance = ndi.distance_transform_edt(roi_index[y0:y1, x0:x1] != roi)
        ok = allowed[y0:y1, x0:x1] & (distance <= reach)
        if ok.sum() >= min_pixels or reach == MAX_DISTANCE:
            break
    d = distance[ok]
    if d.size > min_pixels:
        ok &= distance <= np.partition(d, min_pixels - 1)[min_pixels - 1]
    yy, xx = np.nonzero(ok)
    return (yy + y0) * width + (xx + x0)


def neuropil_weights(roi_index: np.ndarray, n_roi: int, *, gap: int = GAP, min_pixels: int = MIN_PIXELS,
                     ) -> tuple[np.ndarray, object, np.ndarray]:
    """Surround pixels of every ROI and the matrix that averages them.

    Parameters
    ----------
    roi_index : ndarray of int64, shape (H, W)
        ROI number ``0..R-1`` of each pixel, -1 outside every ROI
        (:func:`~astro3s.correlation.roi_table`).
    n_roi : int
        ``R``.
    gap : int
        Surround pixels are more than ``gap`` pixels (8-connected dilation)
        from every ROI.
    min_pixels : int
        Pixels per surround (the nearest ones; fewer where the FOV has no
        more within 60 px).

    Returns
    -------
    pixels : ndarray of int64, shape (P,)
        Flat indices of the pixels of any surround (sorted, unique).
    weights : scipy.sparse.csc_matrix, shape (P, R)
        ``frames[:, pixels] @ weights`` is each ROI's surround mean; an ROI
        with no surround has an empty column.
    n_pixels : ndarray of int64, shape (R,)
        Pixels in each surround.
    """
    import scipy.sparse as sp
    from scipy import ndimage as ndi

    roi_index = np.asarray(roi_index)
    in_roi = roi_index >= 0
    allowed = ~ndi.binary_dilation(in_roi, structure=np.ones((3, 3), bool), iterations=int(gap)) if gap > 0 \
        else ~in_roi
    boxes = ndi.find_objects(roi_index + 1, max_label=n_roi)
    flat, cols = [], []
    for roi, box in enumerate(boxes):  # a loop over ROIs; each surround is found with array operations
        if box is None:
            continue
        pix = _surround(roi_index, roi, box, allowed, min_pixels=int(min_pixels))
        flat.append(pix)
        cols.append(np.full(len(pix), roi, np.int64))
    flat_all = np.concatenate(flat) if flat else np.zeros(0, np.int64)
    col = np.concatenate(cols) if cols else np.zeros(0, np.int64)
    pixels, row = np.unique(flat_all, return_inverse=True)
    n_pixels = np.bincount(col, minlength=n_roi).astype(np.int64)
    weights = sp.csc_matrix((1.0 / n_pixels[col] if len(col) else np.zeros(0), (row, col)),
                            shape=(len(pixels), n_roi))
    return pixels.astype(np.int64), weights, n_pixels


def _without_drift(x: np.ndarray, window: int) -> np.ndarray:
    """``x`` (T, R) minus its slow drift: medians of blocks of a quarter ``window`` frames, interpolated
    linearly between the block centres (columns independently; O(T R), where a running median over
    ``window`` frames costs a sort per frame)."""
    n = len(x)
    block = max(1, min(int(window) // 4, n))
    n_blocks = n // block
    if n_blocks < 2:
        return x - np.median(x, axis=0)
    medians = np.median(x[:n_blocks * block].reshape(n_blocks, block, -1), axis=1)  # (B, R)
    centres = (np.arange(n_blocks) + 0.5) * block - 0.5
    t = np.arange(n, dtype=np.float64)
    # linear interpolation of every column at once (np.interp is 1-D): weights of the two nearest centres
    right = np.clip(np.searchsorted(centres, t), 1, n_blocks - 1)
    frac = np.clip((t - centres[right - 1]) / (centres[right] - centres[right - 1]), 0.0, 1.0)[:, None]
    return x - ((1.0 - frac) * medians[right - 1] + frac * medians[right])


def neuropil_coefficients(f: np.ndarray, fneu: np.ndarray, *, fs: float | None, window_s: float = 30.0,
                          window_frames: int = 150, max_coef: float = 1.0) -> np.ndarray:
    """Share of each ROI's surround fluctuation that is in the ROI's trace (see the module docstring).

    Parameters
    ----------
    f, fneu : ndarray of float, shape (T, R)
        Raw ROI means and surround means.
    fs : float or None
        Frame rate (Hz): the drift window is ``window_s`` seconds, else ``window_frames``.
    max_coef : float
        Upper clip of the coefficient.

    Returns
    -------
    ndarray of float64, shape (R,)
        In ``[0, max_coef]``; 0 where the surround is flat or missing.
    """
    f = np.asarray(f, np.float64)
    fneu = np.asarray(fneu, np.float64)
    if f.size == 0:
        return np.zeros(f.shape[1] if f.ndim == 2 else 0)
    window = int(round(window_s * fs)) if fs else int(window_frames)
    a, b = _without_drift(f, window), _without_drift(fneu, window)
    quiet = np.ones(a.shape, bool)
    for fit in range(3):  # fit, then refit twice on the frames whose residual is outside the ROI's events
        den = np.where(quiet, b * b, 0.0).sum(axis=0)
        num = np.where(quiet, a * b, 0.0).sum(axis=0)
        coef = np.clip(np.divide(num, den, out=np.zeros_like(num), where=den > 0), 0.0, float(max_coef))
        if fit == 2:
            break
        # events are picked on the residual, not on F: frames where F is high because the neuropil
        # is would otherwise be dropped, and the slope biased low
        residual = a - coef * b
        med = np.median(residual, axis=0)
        quiet = residual < med + 2.0 * MAD_TO_SD * np.median(np.abs(residual - med), axis=0)
    return coef


def subtract_neuropil(f: np.ndarray, fneu: np.ndarray, coef: np.ndarray) -> np.ndarray:
    """``f - coef * (fneu - mean(fneu))`` column by column, float64 (T, R)."""
    fneu = np.asarray(fneu, np.float64)
    return np.asarray(f, np.float64) - np.asarray(coef, np.float64) * (fneu - fneu.mean(axis=0))
