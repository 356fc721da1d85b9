"""Bidirectional-scan line offset: how far the return lines of a frame sit beside the forward ones.

Resonant two-photon microscopes scan every other line backwards. When the
timing of the return sweep is off, every odd row is displaced along x from the
even rows by the same amount, and each edge in the image is combed. The offset
is a property of the acquisition (it changes with the zoom and the scan
settings), so movies from another set-up can carry one that our simulators
do not draw. :func:`estimate_line_offset` measures it on a mean image; the
pre-processing reads the movie back in place with
:meth:`astro3s.io.Movie.with_line_shift` (Suite2p does the same with whole
pixels, its ``do_bidiphase`` option; here the offset is found to 0.01 px).

How: each odd row is compared with the mean of the two even rows around it,
which removes the structure's own slope (a diagonal edge moves by the same
amount from the row above to the row below, so their mean lines up with the
row between), and the cross-correlation of the two, summed over all rows, is
evaluated on a 0.01-px grid from the rows' spectra. Hot or dead detector
pixels would dominate that sum (40 pixels stuck at the type's maximum read as
offsets of up to 3.6 px on clean movies), so isolated pixels far outside their
eight neighbours are replaced first and the image is clipped at its 0.5th and
99.5th percentiles.
"""

from __future__ import annotations

from typing import Any

import numpy as np

__all__ = ["MAX_LINE_OFFSET", "MIN_LINE_OFFSET", "estimate_line_offset", "measure_line_offset", "recorded_line_shift",
           "with_recorded_line_shift"]

#: offsets searched, px either way
MAX_LINE_OFFSET = 4.0
#: smaller offsets are left as they are: on every clean movie of both held-out families the estimate is within
#: 0.07 px of 0, and a quarter pixel does not change a segmentation (chosen 2026-12-06, ninth session)
MIN_LINE_OFFSET = 0.25


def estimate_line_offset(image: np.ndarray, *, max_offset: float = MAX_LINE_OFFSET, step: float = 0.01) -> float:
    """The x offset (px) of the odd rows (1, 3, ...) of ``image`` relative to its even rows.

    Parameters
    ----------
    image : ndarray, shape (H, W)
        A mean (or median) of frames as stored, ``H >= 3``, ``W >= 8``.
    max_offset : float
        Largest offset searched, px either way.
    step : float
        Resolution of the search, px.

    Returns
    -------
    float
        Positive when the odd rows sit to the right (larger x);
        ``Movie.with_line_shift(-offset)`` puts them back. 0.0 for an image
        with no horizontal structure (constant rows) or too small to tell.
        An offset beyond ``max_offset`` reads as ``±max_offset``; an image
        without static structure reads a chance lag (the pre-processing
        checks the estimate on two halves of its frames).

    Examples
    --------
    >>> x = np.arange(64, dtype=np.float32)
    >>> image = np.tile(np.exp(-0.5 * ((x - 30) / 3) ** 2), (16, 1))
    >>> from astro3s.io.movie import shift_odd_rows
    >>> offset = estimate_line_offset(shift_odd_rows(image, 2.0))
    >>> bool(abs(offset - 2.0) < 0.1)
    True
    """
    return measure_line_offset(image, max_offset=max_offset, step=step)[0]


def measure_line_offset(image: np.ndarray, *, max_offset: float = MAX_LINE_OFFSET,
                        step: float = 0.01) -> tuple[float, float]:
    """:func:`estimate_line_offset` and how alike the odd and even rows are there.

    Parameters
    ----------
    image : ndarray, shape (H, W)
    max_offset, step : float
        As for :func:`estimate_line_offset`.

    Returns
    -------
    offset : float
        px (:func:`estimate_line_offset`).
    similarity : float
        The normalised cross-correlation of the odd rows with the mean of the
        even rows around them at that offset, in [-1, 1]: 0.95-0.99 on the mean
        of a raw movie, 0.6 at a low photon count, 0.0-0.65 on dF and dF/F
        exports, whose mean has little static structure (0.0 for an image too
        small or without horizontal structure).
    """
    img = np.asarray(image, dtype=np.float64)
    if img.ndim != 2 or img.shape[0] < 3 or img.shape[1] < 8:
        return 0.0, 0.0
    img = _without_outliers(img)
    last = img.shape[0] - 1 if img.shape[0] % 2 == 0 else img.shape[0]  # an odd count: rows above and below
    odd = img[1:last:2]
    even = 0.5 * (img[0:last - 1:2] + img[2:last:2])
    window = np.hanning(img.shape[1])  # the rows' ends are not periodic
    odd = (odd - odd.mean(axis=1, keepdims=True)) * window
    even = (even - even.mean(axis=1, keepdims=True)) * window
    cross = (np.fft.rfft(odd, axis=1) * np.conj(np.fft.rfft(even, axis=1))).sum(axis=0)
    energy = float(np.sqrt((odd**2).sum() * (even**2).sum()))
    if not np.any(np.abs(cross[1:]) > 0) or energy == 0.0:
        return 0.0, 0.0
    freq = np.fft.rfftfreq(img.shape[1])
    weight = np.full(freq.size, 2.0)  # the real spectrum's other half
    weight[0] = 1.0
    if img.shape[1] % 2 == 0:
        weight[-1] = 1.0  # the Nyquist bin has no twin
    lags = np.arange(-float(max_offset), float(max_offset) + step / 2, step)
    correlation = np.real(np.exp(2j * np.pi * np.outer(lags, freq)) @ (weight * cross))
    best = int(np.argmax(correlation))
    # the rfft sums above are W times the products' sum over x (Parseval)
    return float(np.round(lags[best], 6)), float(correlation[best] / (img.shape[1] * energy))


def recorded_line_shift(details: dict | None) -> float:
    """The shift (px) the pre-processing gave a movie's odd rows, from ``Preprocessed.details`` (0.0: none)."""
    return float((details or {}).get("line_shift_px", 0.0) or 0.0)


def with_recorded_line_shift(movie: Any, details: dict | None) -> Any:
    """``movie`` (opened again from its file) read with the odd-row shift its pre-processing gave it.

    A saved result's corrected movie is rebuilt from the raw file and the
    shifts: without the line shift its frames would not be those the
    candidates and the cells were found on. ``movie`` itself when no shift was
    given, or when it already carries one.
    """
    shift = recorded_line_shift(details)
    if shift and hasattr(movie, "with_line_shift") and not movie.line_shift:
        return movie.with_line_shift(shift)
    return movie


def _without_outliers(image: np.ndarray) -> np.ndarray:
    """``image`` with isolated outlying pixels set to their 3 x 3 median, clipped at its 0.5th / 99.5th percentiles.

    A pixel is an isolated outlier when it lies above the largest (below the
    smallest) of its eight neighbours by more than half the image's 1st-99th
    percentile range: a stuck or dead detector pixel, not a cell's edge, which
    has neighbours of its own brightness.
    """
    from scipy import ndimage as ndi

    ring = np.ones((3, 3), bool)
    ring[1, 1] = False
    low, high = np.percentile(image, [1.0, 99.0])
    margin = 0.5 * (high - low)
    outlier = ((image > ndi.maximum_filter(image, footprint=ring, mode="nearest") + margin)
               | (image < ndi.minimum_filter(image, footprint=ring, mode="nearest") - margin))
    if outlier.any():
        image = np.where(outlier, ndi.median_filter(image, size=3, mode="nearest"), image)
    return np.clip(image, *np.percentile(image, [0.5, 99.5]))
