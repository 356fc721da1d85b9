"""Cross-correlation (CC) domains of astrocytes, with a per-FOV automatic threshold.

Definition (following ASTRA's ``CC.py``; differences are marked *):

- **Pixel traces.** Every pixel trace is smoothed by a ``smooth_frames`` (5
  frames) moving average and z-scored (population standard deviation), which here is
  the same as scaling it to unit Euclidean norm. *The moving average keeps only
  the frames where the window is full (``T' = T - smooth_frames + 1``); ASTRA
  pads with zeros, which pulls the first and last frames of every raw trace
  towards 0 and so correlates all pixels with each other.
- *Photobleaching trend.* Before they are scaled, the smoothed traces lose
  their component along the FOV's slow trend (``detrend``, default on): the
  mean frame's time course, smoothed alike and fitted by a constant plus a
  decaying exponential (:func:`slow_trend`). Bleaching scales every pixel's fluorescence
  by the same decaying factor, so it adds to each trace a copy of one curve,
  in proportion to the pixel's brightness; left in, it correlates every
  bright pixel with the cell (the CC values of a territory rise by up to 0.2
  on a movie that bleaches by a third) although none of it is calcium
  activity. One direction of the T' is removed, so the activity loses at most
  its part along that curve. ASTRA correlates the traces with their trend.
- **Lagged correlation** between traces ``a`` (an ROI pixel) and ``b`` (a
  candidate pixel) at lag ``l`` is ``sum_t a(t + l) b(t)`` over the frames where
  both exist, for ``|l| <= max_lag`` (10 frames). It is divided by ``T'``, not by the
  overlap (the biased estimate of ASTRA's zero-padded ``conv1d``), so it is
  Pearson's r at lag 0 and never exceeds 1 in magnitude.
- **Candidates** of a cell are the pixels within ``radius`` (50) px of the
  centroid of its soma, as ASTRA's disc (``cv2.circle`` around the soma
  contour's centre of mass); pixels of any cell's soma or processes are never
  candidates (they belong to their own cell).
- **CC value** of a candidate: the largest lagged correlation with any pixel of
  the cell's soma or processes, over all lags (ASTRA accepts a pixel when any
  ROI pixel at any lag reaches the threshold, which is the same test).
- **Domain** of a cell: its own soma and process pixels, plus the candidates
  whose CC value is ``>= threshold``. *A pixel accepted by several cells goes to
  the cell with the highest CC value (ASTRA keeps overlapping per-cell masks).
  *Every accepted pixel stays: ASTRA's pipeline notebook drops domain pieces
  under 25 px beyond the ROIs (``cleanCC``), which did not help here
  (experiments/README.md, "CC domains against the simulated truth").
- **Threshold** (when not given): background pixels are drawn at random
  (``n_background``, 300; ASTRA 250, repeated 5 times) among the pixels outside
  every cell's disc, not in any ROI and at least ``border`` (6) px from the FOV
  edge. For each cell, the false rate is the fraction of them whose CC value
  with that cell reaches the threshold; the FOV's false rate is the mean over
  cells. The search starts at 0.85; while the rate is at or above the band's
  upper end (0.06) it walks up ``threshold_up`` (0.88, 0.90, 0.91 ... 0.95) and
  stops at the first threshold below it; while the rate is below the band's
  lower end (0.02) it walks down ``threshold_down`` (0.80 ... 0.60 in steps of
  0.05) and stops at the first threshold inside the band, or keeps the previous
  one if a step jumps over the band. If the end of a list is reached, the last
  threshold is used and a warning is logged. *ASTRA uses lags of +-5 frames for
  the background and +-10 for the domains; here both use ``max_lag``.

Speed: all correlations of a cell are products of the ROI pixel traces
stacked at every lag (``(2L+1) P x T'``) with the candidate traces
(``T' x C``), reduced by a running max over ROI pixels and lags, in
memory-bounded blocks, in torch on the GPU when present. Two searches give
the same domains and threshold:

- **Exhaustive** (``exact_cc=True``, and FOVs too small for screening to
  pay): every candidate's CC value, from the full product. On CPUs with
  native bfloat16 the product is first computed in bfloat16 (about twice as
  fast); its rounding error is bounded (:func:`bf16_error_bound`), and every
  candidate whose value lies within that bound of the threshold, or that
  competes with another cell for a pixel, is recomputed in float32, so the
  domains are the same as with float32.
- **Screened** (default): most of the product is replaced by bounds from
  low-pass spectra. The smoothed traces keep most of their energy below
  ``~0.5 / smooth_frames`` cycles per frame. With ``a_lo, b_lo`` the first
  Fourier coefficients of the traces (zero-padded to ``n_fft >= T' + L``,
  scaled to keep the norm) and ``|a_hi|, |b_hi|`` the norms of the others,
  Parseval and Cauchy-Schwarz give at every lag ``l``:
  ``|corr_l(a, b) - Re<a_lo e^{i w l}, b_lo>| <= |a_hi| |b_hi|``; and the
  low-pass term at a lag exceeds the mean of its two neighbours by at most
  ``|a_bend| |b_bend|`` (``a_bend``: ``a_lo`` weighted by
  ``sqrt(1 - cos w)``). Both terms ride in extra columns, so one product of
  ``2 f_c n_fft + 2`` columns (about a quarter of ``T'``) over the even lags
  only (half the rows) bounds every candidate's CC value from above
  (:func:`_screen_rows`):

  1. candidates whose bound is below the threshold are rejected (most of
     the disc);
  2. for the others, the exact float32 correlation at the best-bounded
     (pixel, lag) and the two lags beside it is computed; reaching the
     threshold accepts the candidate (most domain pixels);
  3. the rest get second-level bounds (a wider band, every lag) per ROI row,
     and the exhaustive search over only the rows whose bound reaches the
     threshold for a candidate of their block (no other row can).

  Every bound carries the bfloat16 error bound plus a float32 margin, so the
  decisions are those of the exhaustive search. The CC values are exact
  only where a decision needs them (pixels claimed by several cells, and
  candidates accepted by step 3); elsewhere they are the midpoint of their
  bounds: within ``Domains.cc_tolerance`` of the exact value, and always on
  the right side of the threshold. The background pixels of the threshold
  search are screened the same way: only those whose bound reaches the
  lowest threshold tried are computed exactly, which leaves the choice
  unchanged.

Memory: the movie is read once, in blocks of at most 64 MiB, and the ROI
means of the traces ride on the same pass (:func:`correlation_analysis`).
The traces of the pixels near the cells are kept in memory up to
``memory_mb``; beyond it the cells are analysed in groups (bands of rows of
the FOV) whose traces fit, one group in memory at a time, read back from the
movie's frames when those are already in memory (the pre-processing's cache
of the corrected movie; the groups then get half of ``memory_mb``, as those
frames take memory of their own), otherwise from a temporary file the pass writes
(:mod:`astro3s.correlation._store`). A cell whose disc alone
exceeds ``memory_mb`` (a long movie: ``7 T`` bytes a pixel, ~7800 candidates)
is analysed beside its whole ROI in bands of its candidates (consecutive rows
of the FOV) read back from that file one at a time; the threshold search
reads only the ROI pixels. So the peak memory of the search does not grow
with the movie's length beyond the ROI pixels' own traces and screening rows
(issue 14). Every decision of a cell uses only its own traces and the
background's, so the result does not depend on the grouping nor on the
bands (the blocks of step 3 of the screened search are formed over the
whole disc either way). The CC maps are kept in a box around each cell's
disc (:attr:`Domains.cc_boxes`), so memory grows with the number of cells,
not with cells x FOV.
"""

from __future__ import annotations

import contextlib
import logging
import math
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, fields, replace
from functools import partial
from typing import Any

import numpy as np

from astro3s.correlation._common import (
    check_pair,
    few_threads,
    movie_shape,
    parallel,
    resolve_device,
)
from astro3s.correlation._store import TraceStore, cell_groups, one_pass, release_freed_memory, trace_bytes
from astro3s.correlation.params import CorrelationParams
from astro3s.errors import InputError
from astro3s.utils.progress import bar

__all__ = [
    "Domains",
    "PixelSets",
    "ThresholdChoice",
    "background_pixels",
    "bf16_error_bound",
    "cell_centroids",
    "choose_threshold",
    "false_rate",
    "find_domains",
    "lagged_max_correlation",
    "normalise_traces",
    "pixel_sets",
    "slow_trend",
]

log = logging.getLogger(__name__)
_D = CorrelationParams()
# bytes of one block of the correlation matrix: bounds the peak memory (few large products are
# also what keeps two threads busy on a shared machine, where each torch call waits for both)
_BLOCK_BYTES = 64 << 20
_BLOCK_ELEMENTS = _BLOCK_BYTES // 4
# spectral screening: bands up to _SCREEN_BAND (first level) and _SCREEN_FINE_BAND (second level)
# / smooth_frames cycles per frame (the moving average's main lobe ends at 1 / smooth_frames); used
# only when the first level's columns are at most _SCREEN_MAX_FRACTION of T'
_SCREEN_BAND = 0.52
_SCREEN_FINE_BAND = 0.8
_SCREEN_MAX_FRACTION = 0.6
# below this many multiply-adds of the exhaustive search (~0.1 s on a CPU, ~0.1-0.2 s in float32 on a
# GPU) screening costs more than it saves
_SCREEN_MIN_MACS = 2e10
_SCREEN_MIN_MACS_GPU = 5e12
# candidates of the second level per product (bounds its memory with the ROI rows)
_FINE_BLOCK = 512
# traces gathered at once by the screened search's exact steps (candidates, or lagged ROI rows), bytes:
# bounds their memory on long movies (a D1-size FOV of 550 frames needs one slab)
_GATHER_BYTES = 32 << 20
# second-level rows built at once (those of a block of ROI pixels), bytes: bounds their memory on long movies
_FINE_ROWS_BYTES = 32 << 20
# fewest candidates of a band (a cell whose disc's traces exceed memory_mb is analysed in bands of its
# candidates, beside its whole ROI)
_MIN_BAND = 256
# an ROI pixel of a banded cell costs about this many candidates' traces (its spectra, lag windows and
# first-level screening rows, 11 rows of ~T/5 values, stay for every band)
_ROI_WEIGHT = 3
# raw traces normalised at once (a block of rows that stays in the CPU cache), bytes
_NORMALISE_BYTES = 256 << 10
#: time constants of the bleaching decay tried by :func:`slow_trend`, in units of the movie's length: from an
#: eighth of it (faster bleaching is over within the first frames) to 50 times it (a straight drift)
TREND_TAUS = np.geomspace(0.125, 50.0, 40)
#: fewest smoothed frames for a trend fit
TREND_MIN_FRAMES = 8
# first-level screening rows kept between the threshold search and the domain search, bytes
_ROWS_CACHE_BYTES = 256 << 20
# float32 slack added to every screening bound (FFT and accumulation rounding of unit-norm traces)
_SCREEN_SLACK = 1e-4
# added to the squared high-pass norms (float32 rounding of FFT and norms, < 1e-5 for unit-norm traces)
_HIGH_SLACK = 1e-4


@dataclass(frozen=True)
class ThresholdChoice:
    """Outcome of the automatic threshold search.

    Attributes
    ----------
    threshold : float
        The chosen threshold.
    false_rate : float
        Mean over cells of the fraction of background pixels reaching it.
    in_band : bool
        Whether ``false_rate`` lies in the acceptance band.
    clamped : bool
        True when the search ran off the end of its list (a warning was logged).
    tried : list of (float, float)
        ``(threshold, false_rate)`` in the order of the search.
    n_background : int
        Background pixels used.
    """

    threshold: float
    false_rate: float
    in_band: bool
    clamped: bool
    tried: list[tuple[float, float]]
    n_background: int


@dataclass(frozen=True)
class Domains:
    """CC domains of the cells of one FOV.

    Attributes
    ----------
    domains : ndarray of uint16, shape (H, W)
        Cell id of each pixel's domain (0: none); a cell's own soma and process
        pixels are in its domain.
    cell_ids : ndarray of int64, shape (N,)
        Cell ids, increasing; ``cc[i]`` belongs to ``cell_ids[i]``.
    cc_boxes : ndarray of float32, shape (N, h, w)
        Each cell's CC map in a box around its disc and ROI (one size for all
        cells, so memory grows with the cells, not with cells x FOV): CC
        value (max lagged correlation with the cell's ROI pixels) of each
        candidate pixel; 1 on the cell's own ROI pixels; NaN where the pixel is
        not a candidate (outside the disc, another cell's ROI, or outside the
        FOV). Always on the same side of ``threshold`` as the exact value, and
        within ``cc_tolerance`` of it (screened search: exact only where a
        decision needed it, see the module docstring). :attr:`cc` places them
        in whole-FOV maps.
    cc_origins : ndarray of int64, shape (N, 2)
        ``(y, x)`` in the FOV of each box's first pixel (the box may run past
        the FOV's last row or column).
    threshold : float
        Threshold used (NaN when there are no cells).
    threshold_choice : ThresholdChoice or None
        The automatic search, or None when ``threshold`` was given.
    centroids : ndarray of float64, shape (N, 2)
        Soma centroids ``(y, x)`` (of the processes for a cell without soma).
    radius : float
        Disc radius, px.
    max_lag : int
        Largest lag, frames.
    smooth_frames : int
        Moving-average length, frames.
    precision : str
        ``"float32"`` or ``"bfloat16"`` (screening, see the module docstring).
    cc_tolerance : float
        Bound on ``|cc - exact|`` over the candidates (0 with ``exact_cc`` in
        float32, up to float32 rounding).
    device : str
    timings_s : dict of str to float
        Seconds spent per step (``setup``, ``read_normalise``, ``screen_setup``
        (spectra of the screened search), ``threshold``, ``domains``,
        ``overlaps``).
    exact_cc : bool
        True when every CC value was computed by the exhaustive search.
    """

    domains: np.ndarray
    cell_ids: np.ndarray
    cc_boxes: np.ndarray
    cc_origins: np.ndarray
    threshold: float
    threshold_choice: ThresholdChoice | None
    centroids: np.ndarray
    radius: float
    max_lag: int
    smooth_frames: int
    precision: str
    cc_tolerance: float
    device: str
    timings_s: dict[str, float] = field(default_factory=dict)
    exact_cc: bool = True

    @property
    def cc(self) -> np.ndarray:
        """Whole-FOV CC maps, float32 (N, H, W), NaN outside each cell's candidates and ROI (built on
        every access from :attr:`cc_boxes`: ``4 N H W`` bytes; use :meth:`cc_map` for one cell)."""
        out = np.full((len(self.cell_ids), *self.domains.shape), np.nan, np.float32)
        for i in range(len(out)):  # a loop over cells
            out[i] = self.cc_map(i)
        return out

    def cc_map(self, i: int) -> np.ndarray:
        """CC map of the ``i``-th cell (``cell_ids[i]``) over the FOV, float32 (H, W)."""
        height, width = self.domains.shape
        out = np.full((height, width), np.nan, np.float32)
        (y0, x0), box = self.cc_origins[i], self.cc_boxes[i]
        h, w = min(box.shape[0], height - y0), min(box.shape[1], width - x0)
        out[y0:y0 + h, x0:x0 + w] = box[:h, :w]
        return out

    @property
    def false_rate(self) -> float | None:
        """False-correlation rate at the chosen threshold (None when it was given)."""
        return None if self.threshold_choice is None else self.threshold_choice.false_rate


# ----------------------------------------------------------------------------- pieces


def slow_trend(frame_means: np.ndarray, *, smooth_frames: int = _D.smooth_frames) -> np.ndarray | None:
    """The FOV's slow trend (photobleaching) as one unit-norm direction of the smoothed traces.

    The smoothed frame means are fitted by ``a + b exp(-t / tau)``, the shape of
    photobleaching, with ``tau`` the best of :data:`TREND_TAUS` (times the
    movie's length; the longest make the fit a straight line, a slow drift).
    A decay cannot follow the rise and fall of calcium events, so the activity
    the FOV's mean also carries stays in the traces, even in a short movie
    where a polynomial of a few degrees would fit an event.

    Parameters
    ----------
    frame_means : ndarray, shape (T,)
        Mean of each frame over the FOV.
    smooth_frames : int
        Moving-average length of the traces it will be removed from.

    Returns
    -------
    trend : ndarray of float32, shape (T - smooth_frames + 1,), or None
        Centred and of unit norm; None when the fit is flat (a constant
        movie) or the movie has too few frames for the fit.
    """
    means = np.asarray(frame_means, dtype=np.float64).ravel()
    n_out = means.size - int(smooth_frames) + 1
    if n_out < TREND_MIN_FRAMES or not np.all(np.isfinite(means)):
        return None
    csum = np.concatenate([[0.0], np.cumsum(means)])
    smooth = (csum[smooth_frames:] - csum[:-smooth_frames]) / smooth_frames
    smooth -= smooth.mean()
    # for each tau, the least-squares fit by a constant and the decay is the projection on the decay centred
    decays = np.exp(-np.arange(n_out)[None, :] / (TREND_TAUS[:, None] * n_out))  # (n_tau, T')
    decays -= decays.mean(axis=1, keepdims=True)
    decays /= np.linalg.norm(decays, axis=1, keepdims=True)
    along = decays @ smooth
    best = int(np.argmax(np.abs(along)))
    fit = along[best] * decays[best]
    norm = float(np.linalg.norm(fit))
    # flat: a fit at rounding level of the movie's values (nothing to remove)
    if not norm > 1e-9 * max(float(np.abs(means).max()), 1e-30) * np.sqrt(n_out):
        return None
    return (fit / norm).astype(np.float32)


def normalise_traces(x: np.ndarray, *, smooth_frames: int = _D.smooth_frames,
                     trend: np.ndarray | None = None) -> np.ndarray:
    """Smooth pixel traces by a moving average and scale them to zero mean, unit norm.

    Parameters
    ----------
    x : ndarray, shape (n, T)
        One trace per row.
    smooth_frames : int
        Moving-average length; only full windows are kept.
    trend : ndarray, shape (T - smooth_frames + 1,), optional
        A centred unit-norm direction (:func:`slow_trend`) removed from every
        smoothed trace before it is scaled.

    Returns
    -------
    z : ndarray of float32, shape (n, T - smooth_frames + 1)
        ``z @ z.T`` holds Pearson correlations (of the traces less their
        trend). Constant traces become 0.
    """
    return _normalise_in_place(np.array(x, dtype=np.float32, order="C"), smooth_frames, trend)


def _normalise_in_place(x: np.ndarray, smooth_frames: int, trend: np.ndarray | None = None) -> np.ndarray:
    """:func:`normalise_traces` of a C-contiguous float32 array (n, T), computed in its own memory.

    Returns a view ``(n, T')`` of the start of ``x``'s buffer: no second copy of the traces. The
    rows are processed in blocks that stay in the CPU cache (each step of a whole-array pass would
    stream the traces through memory again); every value is the one of the whole-array arithmetic.
    """
    n_rows, n_frames = x.shape
    n_out = n_frames - smooth_frames + 1
    if n_out < 1:
        raise InputError(None, f"traces of {n_frames} frames are shorter than the {smooth_frames}-frame "
                         "moving average.")
    if trend is not None and np.shape(trend) != (n_out,):
        raise ValueError(f"trend of shape {np.shape(trend)} for traces of {n_out} smoothed frames")
    if not x.flags.c_contiguous:
        x = np.ascontiguousarray(x)
    flat = x.reshape(-1)  # a view
    step = max(1, _NORMALISE_BYTES // (4 * n_frames))
    for r0 in range(0, n_rows, step):  # a loop over blocks of rows
        r1 = min(n_rows, r0 + step)
        z = _normalise_block(x[r0:r1], smooth_frames, n_out, trend)
        # row r's result lies before its raw trace: writing block after block never overwrites a raw
        # value still to be read
        flat[r0 * n_out:r1 * n_out] = z.reshape(-1)
    return flat[:n_rows * n_out].reshape(n_rows, n_out)


def _normalise_block(x: np.ndarray, smooth_frames: int, n_out: int, trend: np.ndarray | None = None) -> np.ndarray:
    """Smoothed, centred, detrended, unit-norm traces of the rows ``x`` (overwritten), float32 (k, T')."""
    # centre first, with a float64 mean: raw values of several thousand summed in float32 lose digits
    x -= x.mean(axis=1, keepdims=True, dtype=np.float64).astype(np.float32)
    z = x[:, :n_out].copy()
    for s in range(1, smooth_frames):  # a loop over the window's offsets
        z += x[:, s:s + n_out]
    z -= z.mean(axis=1, keepdims=True, dtype=np.float64).astype(np.float32)
    if trend is not None:
        # einsum's own loop, not BLAS: the same values whatever the block's place in memory (BLAS kernels
        # round differently on unaligned rows), so traces read from a file or from frames in memory
        # normalise alike
        z -= np.einsum("ij,j->i", z, trend)[:, None] * trend[None, :]
    norm = np.linalg.norm(z, axis=1, keepdims=True)
    np.divide(z, norm, out=z, where=norm > 0)
    z[(norm == 0)[:, 0]] = 0
    return z


def bf16_error_bound(n_frames: int) -> float:
    """Bound on the error of a bfloat16 correlation of unit-norm traces of ``n_frames``.

    Each input is rounded with relative error ``u = 2**-8``, so each product
    ``a_t b_t`` with relative error ``2u + u**2``; summed, that is at most
    ``(2u + u**2) * sum|a_t b_t| <= 2u + u**2`` (Cauchy-Schwarz, unit norms). The
    float32 accumulation adds ``n * 2**-24`` and rounding the result (``|r| <= 1``)
    to bfloat16 ``2**-9``; a small margin covers the float32 normalisation.
    """
    u = 2.0 ** -8
    gamma = n_frames * 2.0 ** -24
    return float((2 * u + u * u) * (1 + gamma) + 2 * gamma + 2.0 ** -9 + 1e-5)


def _lag_windows(roi: Any, max_lag: int) -> Any:
    """The rows of :func:`_lag_stack` as a view ``(P, 2L+1, T')`` of the zero-padded traces (no copy)."""
    n_roi, n = roi.shape
    padded = roi.new_zeros((n_roi, n + 2 * max_lag))
    padded[:, max_lag:max_lag + n] = roi
    return padded.unfold(1, n, 1)


def _lag_stack(roi: Any, max_lag: int) -> Any:
    """ROI traces at every lag: row ``p * (2L+1) + j`` at time t holds ``roi[p, t + lag_j]`` (0 outside)."""
    n_roi, n = roi.shape
    return _lag_windows(roi, max_lag).reshape(n_roi * (2 * max_lag + 1), n)


def _blocked_max(rows: Any, cand: Any) -> Any:
    """``max over rows of cand @ rows.T`` per candidate, in memory-bounded blocks; float32 (C,).

    The product of a block is ``(candidates, rows)`` so that the max runs along
    contiguous memory, and it is written into one reused buffer.
    """
    import torch

    n_rows, n_cand = rows.shape[0], cand.shape[0]
    out = torch.full((n_cand,), -math.inf, dtype=torch.float32, device=cand.device)
    if n_rows == 0 or n_cand == 0:
        return out
    elements = _BLOCK_BYTES // rows.element_size()
    r_block = int(min(n_rows, elements // 64))
    c_block = int(min(n_cand, max(64, elements // r_block)))
    buf = torch.empty(c_block * r_block, dtype=rows.dtype, device=rows.device)
    with parallel():
        for c0 in range(0, n_cand, c_block):  # a loop over blocks of a few thousand candidates
            cb = cand[c0:c0 + c_block]
            best = out[c0:c0 + c_block]
            for r0 in range(0, n_rows, r_block):  # usually one pass over the rows
                rb = rows[r0:r0 + r_block]
                prod = buf[:len(cb) * len(rb)].view(len(cb), len(rb))
                torch.matmul(cb, rb.T, out=prod)
                torch.maximum(best, torch.amax(prod, dim=1).float(), out=best)
    return out


def _dense_max(stack: Any, cand: Any, *, precision: str, refine_near: Any = None) -> tuple[Any, Any]:
    """Exhaustive ``max over rows of cand @ stack.T``: (values float32 (C,), computed-in-float32 bool (C,)).

    With bfloat16, the candidates whose value lies within :func:`bf16_error_bound`
    of any of ``refine_near`` are recomputed in float32.
    """
    import torch

    if precision == "float32":
        return _blocked_max(stack, cand), torch.ones(cand.shape[0], dtype=torch.bool, device=cand.device)
    cc = _blocked_max(stack.to(torch.bfloat16), cand.to(torch.bfloat16))
    exact = torch.zeros(cand.shape[0], dtype=torch.bool, device=cand.device)
    if refine_near is not None and len(cc):
        marks = torch.as_tensor(np.atleast_1d(np.asarray(refine_near, np.float32)), device=cc.device)
        gap = (cc[:, None] - marks[None, :]).abs().amin(dim=1)
        near = torch.nonzero(gap <= bf16_error_bound(cand.shape[1])).flatten()
        if len(near):
            cc[near] = _blocked_max(stack, cand[near])
            exact[near] = True
    return cc, exact


def _exact_max(roi: Any, cand: Any, max_lag: int) -> Any:
    """Exhaustive float32 ``max over p, l of corr_l(roi[p], cand[c])``, float32 (C,).

    The lags are stacked on the smaller side: with few candidates, their
    ``(2L+1) C`` shifted copies meet the ``P`` ROI traces (the max over lags
    ``-L..L`` is the same either way).
    """
    n_lags = 2 * max_lag + 1
    if cand.shape[0] >= roi.shape[0]:
        return _blocked_max(_lag_stack(roi, max_lag), cand)
    if cand.shape[0] == 0:
        return _blocked_max(roi[:0], cand)
    return _blocked_max(roi, _lag_stack(cand, max_lag)).view(cand.shape[0], n_lags).amax(dim=1)


def lagged_max_correlation(roi: Any, cand: Any, *, max_lag: int = _D.max_lag, device: str = "cpu",
                           precision: str = "float32",
                           refine_near: float | tuple[float, ...] | None = None) -> tuple[np.ndarray, np.ndarray]:
    """For each candidate trace, the largest lagged correlation with any ROI trace (exhaustive).

    Parameters
    ----------
    roi : ndarray or Tensor, shape (P, T')
        Normalised ROI pixel traces (:func:`normalise_traces`).
    cand : ndarray or Tensor, shape (C, T')
        Normalised candidate traces.
    max_lag : int
        Lags ``-max_lag .. max_lag`` frames.
    device : str
        Torch device of the computation.
    precision : str
        ``"float32"`` or ``"bfloat16"``.
    refine_near : float or tuple of float, optional
        With bfloat16: recompute in float32 the candidates whose screened
        value lies within :func:`bf16_error_bound` of this value (of any of them).

    Returns
    -------
    cc : ndarray of float32, shape (C,)
        ``max over p, |l| <= max_lag of sum_t roi[p, t + l] cand[c, t]`` (-inf when P = 0).
    exact : ndarray of bool, shape (C,)
        True where ``cc`` was computed in float32.
    """
    import torch

    roi = torch.as_tensor(roi, dtype=torch.float32, device=device)
    cand = torch.as_tensor(cand, dtype=torch.float32, device=device)
    cc, exact = _dense_max(_lag_stack(roi, max_lag), cand, precision=precision, refine_near=refine_near)
    return cc.cpu().numpy(), exact.cpu().numpy()


# ----------------------------------------------------------------------------- screening


def _fft_size(n: int) -> int:
    """Smallest ``2**a 3**b 5**c >= n`` (a fast FFT length)."""
    best = 1 << max(0, (int(n) - 1).bit_length())
    p5 = 1
    while p5 < best:  # a loop over a few dozen small products
        p35 = p5
        while p35 < best:
            p = p35
            while p < n:
                p *= 2
            best = min(best, p)
            p35 *= 3
        p5 *= 5
    return best


def _screen_band(n_frames: int, max_lag: int, smooth_frames: int) -> tuple[int, int, int] | None:
    """``(n_fft, n_low, n_fine)`` of the spectral screening of ``n_frames``-long traces (frequencies
    ``< n_low`` at the first level, ``< n_fine`` at the second), or None when it would not pay
    (little smoothing: the low band would hold most of the coefficients)."""
    n_fft = _fft_size(n_frames + max_lag)
    n_half = n_fft // 2 + 1
    width = n_fft / max(smooth_frames, 1)
    n_low = min(n_half, math.ceil(_SCREEN_BAND * width) + 1)
    n_fine = min(n_half, max(n_low, math.ceil(_SCREEN_FINE_BAND * width) + 1))
    if 2 * n_low + 2 > _SCREEN_MAX_FRACTION * n_frames:
        return None
    return n_fft, n_low, n_fine


def _spectral_features(z: Any, n_fft: int, n_low: int, n_fine: int) -> dict[str, Any]:
    """Low-pass spectra of traces, and the norms that bound what they leave out.

    Parameters
    ----------
    z : Tensor of float32, shape (n, T')
        Unit-norm traces (or zero).
    n_fft, n_low, n_fine : int
        FFT length and the two bands (``n_low <= n_fine``).

    Returns
    -------
    dict with
        ``spec``: Tensor of complex64, shape (n, n_fine): real-FFT coefficients
        ``0 .. n_fine - 1`` of the traces zero-padded to ``n_fft``, scaled so that
        the squared norm of all of them is ``|z|**2``;
        ``high``, ``high_fine``: float32 (n,), norms of the coefficients
        ``>= n_low`` and ``>= n_fine`` (rounded up);
        ``bend``: float32 (n,), ``sqrt(sum_{f < n_low} |spec_f|**2 (1 - cos w_f))``,
        ``w_f = 2 pi f / n_fft`` (see :func:`_screen_rows`).
    """
    import torch

    weight = torch.full((n_fine,), math.sqrt(2.0 / n_fft), dtype=torch.float32, device=z.device)
    weight[0] = math.sqrt(1.0 / n_fft)
    if n_fine == n_fft // 2 + 1 and n_fft % 2 == 0:
        weight[-1] = math.sqrt(1.0 / n_fft)
    n = z.shape[0]
    spec = torch.empty((n, n_fine), dtype=torch.complex64, device=z.device)
    high, high_fine, bend = (torch.empty(n, dtype=torch.float32, device=z.device) for _ in range(3))
    omega = torch.arange(n_low, dtype=torch.float64, device=z.device) * (2 * math.pi / n_fft)
    curvature = (1 - torch.cos(omega)).float()
    step = max(1, _BLOCK_ELEMENTS // (4 * n_fft))
    with parallel():
        # a loop over row blocks: bounds the memory of the FFT and of the powers (each row's figures are
        # its own, so the blocks change no value)
        for r0 in range(0, n, step):
            block = spec[r0:r0 + step]
            block[:] = torch.fft.rfft(z[r0:r0 + step], n=n_fft, dim=1)[:, :n_fine] * weight
            power = torch.view_as_real(block).square().sum(dim=2)  # (rows, n_fine)
            total = torch.linalg.vector_norm(z[r0:r0 + step], dim=1).square()
            # Parseval: |high|^2 = |z|^2 - |low|^2; the float32 rounding of the FFT and of the norms
            # (< 1e-5 for unit-norm traces) is covered by _HIGH_SLACK, which can only widen the bounds
            high[r0:r0 + step] = ((total - power[:, :n_low].sum(dim=1)).clamp(min=0) + _HIGH_SLACK).sqrt()
            high_fine[r0:r0 + step] = ((total - power.sum(dim=1)).clamp(min=0) + _HIGH_SLACK).sqrt()
            # a row-wise sum, not a matrix product: its rounding is then the same in any block of rows
            bend[r0:r0 + step] = ((power[:, :n_low] * curvature).sum(dim=1) * (1 + 1e-4) + 1e-8).sqrt()
    return {"spec": spec, "high": high, "high_fine": high_fine, "bend": bend}


def _screen_columns(spec: Any, high: Any, bend: Any | None = None) -> Any:
    """Candidate side of a screening product: ``[Re spec, Im spec, high(, bend)]``, float32 (C, D)."""
    import torch

    extra = [high[:, None]] if bend is None else [high[:, None], bend[:, None]]
    return torch.cat([spec.real, spec.imag, *extra], dim=1)


def _rotated_rows(spec: Any, extra: list[Any], lags: list[int], n_fft: int, *, lag_major: bool = False) -> Any:
    """``[Re c, Im c, *extra]`` with ``c = spec_p e^{2 pi i f lag / n_fft}``: row ``p * len(lags) + k``
    (pixel-major), or ``k * P + p`` with ``lag_major``."""
    import torch

    n_roi, n_spec = spec.shape
    lag = torch.tensor(lags, dtype=torch.float64, device=spec.device)
    freqs = torch.arange(n_spec, dtype=torch.float64, device=spec.device)
    phase = torch.polar(torch.ones((), dtype=torch.float64, device=spec.device),
                        2 * math.pi * lag[:, None] * freqs[None, :] / n_fft).to(torch.complex64)
    if lag_major:
        rotated = phase[:, None, :] * spec[None]  # (lags, P, n_spec)
        columns = torch.stack(extra, dim=1)[None, :, :].expand(len(lags), n_roi, len(extra))
    else:
        rotated = spec[:, None, :] * phase[None]  # (P, lags, n_spec)
        columns = torch.stack(extra, dim=1)[:, None, :].expand(n_roi, len(lags), len(extra))
    return torch.cat([rotated.real, rotated.imag, columns], dim=2).reshape(n_roi * len(lags), -1)


def _screen_rows(spec: Any, high: Any, bend: Any, max_lag: int, n_fft: int) -> Any:
    """ROI side of the first-level screening product: one row per ROI pixel and lag ``-L, -L+2, ..., L``.

    Row ``k * P + p`` (lag-major, so that :func:`_first_level` reduces over the lags with whole-row
    maxima; lag ``-L + 2k`` of pixel ``p``, row ``p * (2L+1) + 2k`` of :func:`_lag_stack`) is
    ``[Re c, Im c, high_p, bend_p]`` with ``c = spec_p e^{2 pi i f lag / n_fft}`` over the first
    band. Its product with a candidate's column (:func:`_screen_columns` with ``bend``) is
    ``g(lag) + high_p high_b + bend_p bend_b``, where ``g`` is the low-pass correlation: the
    correlation differs from ``g`` by at most ``high_p high_b`` (Cauchy-Schwarz on the rest of
    the spectrum), and ``g`` at a lag between two rows exceeds their mean by at most
    ``bend_p bend_b`` (``g(l) - (g(l-1) + g(l+1)) / 2 = sum_f Re(...) (1 - cos w_f)``). So the
    largest product over a pixel's rows bounds its correlation at every lag, with half the
    rows. float32, shape ((L+1) P, 2 n_low + 2).
    """
    return _rotated_rows(spec, [high, bend], list(range(-max_lag, max_lag + 1, 2)), n_fft, lag_major=True)


def _fine_rows(spec: Any, high: Any, max_lag: int, n_fft: int) -> Any:
    """ROI side of the second-level screening product: one row per row of :func:`_lag_stack`,
    ``[Re c, Im c, high_p]`` over the second band: its product with a candidate's column bounds
    that row's correlation. float32, shape (P (2L+1), 2 n_fine + 1)."""
    return _rotated_rows(spec, [high], list(range(-max_lag, max_lag + 1)), n_fft)


def _screen_margin(precision: str, n_fft: int, n_low: int) -> float:
    """Bound on the rounding error of one screening product in ``precision``.

    First-level rows and columns have norms at most ``sqrt(1 + max_f (1 - cos w_f))``
    (the bend column), which scales the bfloat16 bound; _SCREEN_SLACK covers float32
    and the second level.
    """
    if precision != "bfloat16":
        return _SCREEN_SLACK
    norm2 = 1 + (1 - math.cos(2 * math.pi * (n_low - 1) / n_fft)) + _HIGH_SLACK
    return bf16_error_bound(2 * n_low + 2) * norm2 + _SCREEN_SLACK


def _f32_below(value: float) -> np.float32:
    """Largest float32 strictly below ``value``."""
    v = np.float32(value)
    return v if float(v) < value else np.nextafter(v, np.float32(-np.inf))


def _screened_max(roi: Any, cand: Any, rows_s: Any, roi_extra: Any, cand_s: Any, fine_rows: Callable[..., Any],
                  fine_cand: Callable[[Any], Any], *, max_lag: int, threshold: float, precision: str,
                  margin: float) -> tuple[Any, Any, Any]:
    """Decide ``max over p, l of corr_l(roi[p], cand[c]) >= threshold`` per candidate, exact only where needed.

    Three steps (module docstring): first-level bounds (:func:`_first_level`),
    the exact correlations beside the best-bounded lag (:func:`_near_lags`),
    and for the rest second-level bounds and the exhaustive search over the
    rows they leave (:func:`_second_level`).

    Parameters
    ----------
    roi : Tensor of float32, shape (P, T')
        Normalised ROI pixel traces.
    cand : Tensor of float32, shape (C, T'), or _Gathered
        Normalised candidate traces (only those of the candidates that need them are read).
    rows_s : Tensor of float32, shape ((L+1) P, D)
        First-level screening rows (:func:`_screen_rows`).
    roi_extra : Tensor of float32, shape (P, 2)
        ``high`` and ``bend`` of each ROI pixel.
    cand_s : Tensor of float32, shape (C, D)
        First-level screening columns (:func:`_screen_columns` with ``bend``).
    fine_rows : callable
        ``fine_rows(p0, p1)``: second-level rows (:func:`_fine_rows`) of the
        ROI pixels ``p0 .. p1``, float32 ((p1 - p0) (2L+1), D'); called only
        when some candidate needs them, for blocks of ROI pixels.
    fine_cand : callable
        ``fine_cand(index)``: second-level columns of the candidates ``index``
        (:func:`_screen_columns` without ``bend``), float32 (k, D').
    max_lag : int
        Lags ``-max_lag .. max_lag``, in frames.
    threshold : float
    precision : str
        Precision of the screening products and of the exhaustive step
        (``"float32"`` or ``"bfloat16"``).
    margin : float
        Bound on the error of one screening product in ``precision`` (:func:`_screen_margin`).

    Returns
    -------
    values : Tensor of float32, shape (C,)
        ``>= threshold`` exactly when the exhaustive max is; the exhaustive max
        where the exhaustive step accepted the candidate, else the midpoint of
        the bounds.
    half : Tensor of float32, shape (C,)
        Bound on ``|values - exhaustive max|``.
    exact : Tensor of bool, shape (C,)
        ``values`` computed in float32.
    """
    import torch

    n_roi, n_cand = roi.shape[0], cand.shape[0]
    if n_cand == 0 or n_roi == 0:
        dev = cand.device
        return (torch.full((n_cand,), -math.inf, device=dev), torch.zeros(n_cand, device=dev),
                torch.zeros(n_cand, dtype=torch.bool, device=dev))
    windows = _lag_windows(roi, max_lag)
    screen = _screen_near(windows, cand, rows_s, roi_extra, cand_s, threshold=threshold, precision=precision,
                          margin=margin)
    if len(screen.rest):
        # 3. the rest: second-level bounds, then the exhaustive search over the rows they leave
        rest = screen.rest
        th = float(np.float32(threshold))
        screen.settle(rest, *_second_level(windows, cand.index_select(0, rest), fine_rows, fine_cand, rest,
                                           threshold=th, precision=precision, margin=margin), threshold=th)
    return screen.finish(threshold)


@dataclass(frozen=True)
class _Gathered:
    """The rows ``z[index]`` of a Tensor of traces, copied only when taken (:meth:`index_select`)."""

    z: Any  # Tensor float32 (n, T')
    index: Any  # Tensor int64 (k,)

    @property
    def shape(self) -> tuple[int, int]:
        return (len(self.index), self.z.shape[1])

    @property
    def device(self) -> Any:
        return self.z.device

    def index_select(self, dim: int, at: Any) -> Any:
        """``z[index[at]]``, float32 (len(at), T') (``dim`` 0 only, as Tensor.index_select)."""
        if dim != 0:
            raise ValueError("only rows can be taken")
        return self.z.index_select(0, self.index[at])


@dataclass
class _Screen:
    """Bounds of the candidates' CC values during :func:`_screened_max` (Tensors of shape (C,))."""

    hi: Any  # float32: >= the exhaustive max
    lo: Any  # float32: <= the exhaustive max
    accept: Any  # bool: the exhaustive max reaches the threshold
    exact: Any  # bool: computed in float32 by an exhaustive search
    rest: Any  # int64 (k,), increasing: the candidates left to step 3

    @classmethod
    def cat(cls, parts: list[_Screen], offsets: list[int]) -> _Screen:
        """The screens of consecutive bands of candidates (starting at ``offsets``) as one."""
        import torch

        def join(name: str) -> Any:
            return torch.cat([getattr(part, name) for part in parts])

        return cls(hi=join("hi"), lo=join("lo"), accept=join("accept"), exact=join("exact"),
                   rest=torch.cat([part.rest + o for part, o in zip(parts, offsets)]))

    def settle(self, at: Any, got: Any, err: Any, got_exact: Any, *, threshold: float) -> None:
        """Step 3's outcome (:func:`_second_level`) for the candidates ``at``; ``threshold`` float32-rounded."""
        import torch

        took = got >= threshold
        self.accept[at] = took
        # an accepted value is the exhaustive max (the rows left out stay below the threshold)
        self.hi[at] = torch.where(took, got + err, torch.clamp(self.hi[at], max=threshold))
        self.lo[at] = torch.where(took, got - err, torch.maximum(self.lo[at], got - err))
        self.exact[at] = took & got_exact

    def finish(self, threshold: float) -> tuple[Any, Any, Any]:
        """``(values, half, exact)`` of :func:`_screened_max`."""
        import torch

        mid = 0.5 * (self.lo + self.hi)
        th, below = float(np.float32(threshold)), float(_f32_below(threshold))
        values = torch.where(self.accept, torch.clamp(mid, min=th), torch.clamp(mid, max=below))
        return values, 0.5 * (self.hi - self.lo), self.exact


def _screen_near(windows: Any, cand: Any, rows_s: Any, roi_extra: Any, cand_s: Any, *, threshold: float,
                 precision: str, margin: float) -> _Screen:
    """Steps 1 and 2 of :func:`_screened_max` (``windows``: :func:`_lag_windows` of the ROI traces). Each
    candidate's outcome depends only on its own trace and the ROI's (so bands of candidates give the same)."""
    import torch

    n_cand, dev = cand.shape[0], cand.device
    n_sampled = (windows.shape[1] + 1) // 2  # even lags
    th = float(np.float32(threshold))
    exact = torch.zeros(n_cand, dtype=torch.bool, device=dev)
    # 1. first level: the largest bound of each candidate, and the (pixel, even lag) row giving it
    top, arg = _first_level(rows_s, cand_s, precision, n_sampled)
    hi = top + margin  # >= the correlation at every lag
    pixel = torch.div(arg, n_sampled, rounding_mode="floor")
    lo = top - 2 * (roi_extra[pixel] * cand_s[:, -2:]).sum(dim=1) - margin  # <= that row's correlation
    accept = torch.zeros(n_cand, dtype=torch.bool, device=dev)
    live = torch.nonzero(hi >= th).flatten()
    rest = live[:0]
    if len(live):
        # 2. exact correlations at the best-bounded row's lag and the two beside it: accepts most domain pixels
        best = torch.empty(len(live), device=dev)
        step = max(1, _GATHER_BYTES // (4 * cand.shape[1]))
        for b0 in range(0, len(live), step):  # a loop over blocks of candidates: bounds the gathered traces
            at = live[b0:b0 + step]
            best[b0:b0 + step] = _near_lags(windows, cand.index_select(0, at), pixel[at], 2 * (arg[at] % n_sampled))
        lo[live] = torch.maximum(lo[live], best)
        accept[live] = best >= th
        rest = live[best < th]
    return _Screen(hi=hi, lo=lo, accept=accept, exact=exact, rest=rest)


def _first_level(rows_s: Any, cand_s: Any, precision: str, n_sampled: int) -> tuple[Any, Any]:
    """Step 1 of :func:`_screened_max`: the largest first-level product of each candidate.

    Parameters
    ----------
    rows_s : Tensor of float32, shape (n_sampled P, D)
        First-level rows (:func:`_screen_rows`, lag-major), ``P >= 1``.
    cand_s : Tensor of float32, shape (C, D)
        First-level columns.
    precision : str
        ``"float32"`` or ``"bfloat16"``: precision of the product.
    n_sampled : int
        Lags per ROI pixel in ``rows_s`` (``L + 1``).

    Returns
    -------
    top : Tensor of float32, shape (C,)
        ``max over rows of cand_s @ rows_s.T``.
    arg : Tensor of int64, shape (C,)
        The row giving it, numbered pixel-major (``p * n_sampled + k``); of equal products, the one of
        the lowest pixel, then the lowest lag.
    """
    import torch

    dtype = torch.bfloat16 if precision == "bfloat16" else torch.float32
    n_cand, n_rows = cand_s.shape[0], rows_s.shape[0]
    dev = cand_s.device
    rows_lp, cand_lp = rows_s.to(dtype), cand_s.to(dtype)
    top = torch.empty(n_cand, dtype=torch.float32, device=dev)
    arg = torch.empty(n_cand, dtype=torch.int64, device=dev)
    # few large products: each call packs the rows again
    c_block = int(min(n_cand, max(64, (_BLOCK_BYTES // rows_lp.element_size()) // n_rows)))
    buf = torch.empty(c_block * n_rows, dtype=dtype, device=dev)
    with parallel():
        for c0 in range(0, n_cand, c_block):  # a loop over a few blocks of candidates
            c1 = min(n_cand, c0 + c_block)
            prod = buf[:(c1 - c0) * n_rows].view(c1 - c0, n_sampled, n_rows // n_sampled)
            torch.matmul(cand_lp[c0:c1], rows_lp.T, out=prod.view(c1 - c0, n_rows))
            top[c0:c1], arg[c0:c1] = _lag_major_argmax(prod)
    return top, arg


def _lag_major_argmax(prod: Any) -> tuple[Any, Any]:
    """Max and pixel-major argmax of each candidate's products ``prod`` (C, lags, P).

    A max with its index costs several times a plain max (and more in bfloat16), so the lags are
    reduced by a plain max first, the index is taken over the P pixels only, and the lag is found
    among the chosen pixel's values. The first pixel reaching the max, then its first lag: the
    row a pixel-major ``torch.max`` returns.
    """
    import torch

    n_cand, n_sampled = prod.shape[0], prod.shape[1]
    best, pixel = torch.max(torch.amax(prod, dim=1), dim=1)  # (C,): over lags, then pixels
    at_pixel = prod[torch.arange(n_cand, device=prod.device), :, pixel]  # (C, lags)
    lag = torch.argmax((at_pixel == best[:, None]).to(torch.uint8), dim=1)
    return best.float(), pixel * n_sampled + lag


def _near_lags(windows: Any, cand: Any, pixel: Any, lag: Any) -> Any:
    """Step 2 of :func:`_screened_max`: exact float32 correlation of each candidate with one ROI pixel at
    lag index ``lag`` and the two beside it (clipped to the lags), the largest of the three.

    Parameters
    ----------
    windows : Tensor of float32, shape (P, 2L+1, T')
        :func:`_lag_windows` of the ROI traces (a view; only the rows used are gathered).
    cand : Tensor of float32, shape (k, T')
    pixel, lag : Tensor of int64, shape (k,)
        ROI pixel and lag index (``0 .. 2L``) of each candidate.

    Returns
    -------
    Tensor of float32, shape (k,)
    """
    import torch

    n_lags = windows.shape[1]
    best = torch.full((cand.shape[0],), -math.inf, device=cand.device)
    for step in (-1, 0, 1):  # three lags
        at = torch.clamp(lag + step, 0, n_lags - 1)
        torch.maximum(best, (windows[pixel, at] * cand).sum(dim=1), out=best)
    return best


def _second_level(windows: Any, cand: Any, fine_rows: Callable[..., Any], fine_cand: Callable[[Any], Any],
                  index: Any, *,
                  threshold: float, precision: str, margin: float) -> tuple[Any, Any, Any]:
    """Step 3 of :func:`_screened_max`: exhaustive max over only the rows whose second-level bound reaches
    the threshold for some candidate of the block (no other row can accept one).

    Parameters
    ----------
    windows : Tensor of float32, shape (P, 2L+1, T')
        :func:`_lag_windows` of the ROI traces.
    cand : Tensor of float32, shape (k, T')
        The candidates' traces.
    fine_rows : callable
        ``fine_rows(p0, p1)``: :func:`_fine_rows` of the ROI pixels ``p0 .. p1``.
    fine_cand : callable
        ``fine_cand(index[b0:b1])``: second-level columns, float32 (b, D').
    index : Tensor of int64, shape (k,)
        The candidates' indices for ``fine_cand``.
    threshold : float
        float32-rounded threshold.
    precision, margin
        As in :func:`_screened_max`.

    Returns
    -------
    got : Tensor of float32, shape (k,)
        The exhaustive max when it reaches the threshold, else a value below it.
    err : Tensor of float32, shape (k,)
        Bound on the bfloat16 error of ``got`` (0 where computed in float32).
    exact : Tensor of bool, shape (k,)
        Computed in float32.
    """
    import torch

    dev = cand.device
    n_lags = windows.shape[1]
    dtype = torch.bfloat16 if precision == "bfloat16" else torch.float32
    got = torch.empty(len(cand), dtype=torch.float32, device=dev)
    exact = torch.ones(len(cand), dtype=torch.bool, device=dev)
    err = torch.zeros(len(cand), device=dev)
    unions = _fine_unions(windows.shape[0], n_lags, fine_rows, fine_cand, index, dtype=dtype,
                          threshold=threshold, margin=margin)
    for k, b0 in enumerate(range(0, len(cand), _FINE_BLOCK)):  # a loop over blocks of candidates
        b1 = min(len(cand), b0 + _FINE_BLOCK)
        union = unions[k]
        # the union's traces are gathered in slabs of at most _GATHER_BYTES (one slab on short movies)
        slab = max(1, _GATHER_BYTES // (4 * cand.shape[1]))
        slabs = [(union[r0:r0 + slab] // n_lags, union[r0:r0 + slab] % n_lags) for r0 in range(0, len(union), slab)]
        rows_x = partial(_gather_rows, windows, slabs)
        if precision == "bfloat16":
            got[b0:b1], err[b0:b1], exact[b0:b1] = _bf16_max(rows_x, cand[b0:b1], threshold)
        else:
            got[b0:b1] = _slabs_max(rows_x, cand[b0:b1], torch.float32)
    return got, err, exact


def _fine_unions(n_roi: int, n_lags: int, fine_rows: Callable[..., Any], fine_cand: Callable[[Any], Any],
                 index: Any, *, dtype: Any, threshold: float, margin: float) -> list[Any]:
    """For each block of ``_FINE_BLOCK`` candidates, the rows of :func:`_lag_stack` whose second-level bound
    reaches ``threshold - margin`` for one of them (increasing int64). The rows are built for a block of
    ROI pixels at a time (at most ``_FINE_ROWS_BYTES``), so their memory does not grow with P x T."""
    import torch

    columns = [fine_cand(index[b0:b0 + _FINE_BLOCK]).to(dtype) for b0 in range(0, len(index), _FINE_BLOCK)]
    width = columns[0].shape[1] if columns else 1
    step = max(1, _FINE_ROWS_BYTES // (4 * n_lags * width))
    found: list[list[Any]] = [[] for _ in columns]
    for p0 in range(0, n_roi, step):  # a loop over blocks of ROI pixels (one on short movies)
        rows = fine_rows(p0, min(n_roi, p0 + step)).to(dtype)
        for k, block in enumerate(columns):  # a loop over blocks of candidates
            with parallel():
                bound = torch.amax(rows @ block.T, dim=1)  # over the block's candidates
            found[k].append(torch.nonzero(bound.float() >= threshold - margin).flatten() + p0 * n_lags)
    return [torch.cat(rows) for rows in found]


def _gather_rows(windows: Any, slabs: list[tuple[Any, Any]]) -> Iterator[Any]:
    """The rows ``windows[pixel, lag]`` of each slab ``(pixel, lag)``, float32 (k, T'), one slab at a time."""
    if not slabs:
        yield windows[:0, 0]
    for pixel, lag in slabs:
        yield windows[pixel, lag]


def _slabs_max(rows: Callable[[], Iterator[Any]], cand: Any, dtype: Any) -> Any:
    """:func:`_blocked_max` over the rows of every slab of ``rows()``, in ``dtype``; float32 (C,)."""
    import torch

    out = None
    for slab in rows():  # a loop over slabs of rows (one on short movies)
        values = _blocked_max(slab.to(dtype), cand.to(dtype))
        out = values if out is None else torch.maximum(out, values)
    return out


def _bf16_max(rows: Callable[[], Iterator[Any]], cand: Any, threshold: float) -> tuple[Any, Any, Any]:
    """:func:`_slabs_max` in bfloat16, redone in float32 within the bfloat16 error of ``threshold``:
    (values float32 (C,), error bound float32 (C,), computed-in-float32 bool (C,))."""
    import torch

    eb = bf16_error_bound(cand.shape[1])
    values = _slabs_max(rows, cand, torch.bfloat16)
    near = torch.nonzero((values - threshold).abs() <= eb).flatten()
    values[near] = _slabs_max(rows, cand[near], torch.float32)
    exact = torch.zeros(len(cand), dtype=torch.bool, device=cand.device)
    exact[near] = True
    err = torch.full((len(cand),), eb, device=cand.device)
    err[near] = 0.0
    return values, err, exact


def cell_centroids(soma: np.ndarray, processes: np.ndarray, cell_ids: np.ndarray) -> np.ndarray:
    """Soma centroid ``(y, x)`` of each cell (process centroid for a cell without soma); (N, 2) float64."""
    from scipy import ndimage as ndi

    if len(cell_ids) == 0:
        return np.zeros((0, 2))
    ones = np.ones(soma.shape)
    with np.errstate(invalid="ignore", divide="ignore"):  # a cell without soma (or processes): NaN, resolved below
        by_soma = np.asarray(ndi.center_of_mass(ones, soma, cell_ids), dtype=np.float64).reshape(-1, 2)
        by_proc = np.asarray(ndi.center_of_mass(ones, processes, cell_ids), dtype=np.float64).reshape(-1, 2)
    return np.where(np.isfinite(by_soma), by_soma, by_proc)


def background_pixels(roi_mask: np.ndarray, centroids: np.ndarray, *, radius: float = _D.radius,
                      n_background: int = _D.n_background, border: int = _D.border,
                      seed: int = _D.seed) -> np.ndarray:
    """Random background pixels for the false-discovery estimate.

    Drawn without replacement among the pixels outside every cell's disc (distance
    to every centroid > ``radius``), outside every ROI and at least ``border`` px from
    the FOV edge. When fewer than ``n_background`` such pixels exist (a crowded
    FOV), the pool becomes the ``2 * n_background`` eligible pixels farthest from
    any centroid, and a warning is logged.

    Parameters
    ----------
    roi_mask : ndarray of bool, shape (H, W)
        Soma or process pixel of any cell.
    centroids : ndarray, shape (N, 2)

    Returns
    -------
    flat : ndarray of int64, shape (n,)
        Flat pixel indices, ``n <= n_background`` (0 when no pixel is eligible).
    """
    height, width = roi_mask.shape
    eligible = ~roi_mask
    if border:
        eligible[:border] = eligible[-border:] = False
        eligible[:, :border] = eligible[:, -border:] = False
    near = _near_any(centroids, radius, (height, width))
    flat = np.flatnonzero(eligible & ~near)
    if len(flat) < n_background:
        yy, xx = np.mgrid[0:height, 0:width]
        dist = np.full((height, width), np.inf)
        for cy, cx in centroids:  # a loop over cells
            np.minimum(dist, np.hypot(yy - cy, xx - cx), out=dist)
        pool = np.flatnonzero(eligible)
        keep = min(len(pool), 2 * n_background)
        far = np.argsort(-dist.ravel()[pool], kind="stable")[:keep]
        flat = np.sort(pool[far])
        reach = float(dist.ravel()[flat].min()) if len(flat) else float("nan")
        log.warning("only %d background pixels lie outside every cell's %.0f px disc; using the %d pixels "
                    "farthest from any cell (>= %.1f px) for the false-discovery threshold",
                    int(np.count_nonzero(eligible & (dist > radius))), radius, len(flat), reach)
    rng = np.random.default_rng(seed)
    return np.sort(rng.choice(flat, size=min(n_background, len(flat)), replace=False)).astype(np.int64)


def _near_any(centroids: np.ndarray, radius: float, shape: tuple[int, int]) -> np.ndarray:
    """Pixels within ``radius`` of any centroid, bool (H, W): each disc marked in its bounding box (the
    same distances as over the whole FOV, at a fraction of the cost with many cells)."""
    near = np.zeros(shape, bool)
    nowhere = np.zeros(shape, bool)  # no pixel excluded
    for cy, cx in centroids:  # a loop over cells
        near.ravel()[_disc_pixels(cy, cx, radius, nowhere)] = True
    return near


def false_rate(bg_cc: np.ndarray, threshold: float) -> float:
    """Mean over cells of the fraction of background pixels with CC value ``>= threshold``.

    Parameters
    ----------
    bg_cc : ndarray, shape (N, n)
        CC value of each background pixel with each cell.
    """
    bg_cc = np.asarray(bg_cc)
    if bg_cc.size == 0:
        return float("nan")
    return float((bg_cc >= threshold).mean(axis=1).mean())


def choose_threshold(bg_cc: np.ndarray, *, threshold_start: float = _D.threshold_start,
                     threshold_up: tuple[float, ...] = _D.threshold_up,
                     threshold_down: tuple[float, ...] = _D.threshold_down,
                     false_rate_band: tuple[float, float] = _D.false_rate_band) -> ThresholdChoice:
    """ASTRA's threshold search over the false-correlation rate (see the module docstring).

    Parameters
    ----------
    bg_cc : ndarray, shape (N, n)
        CC value of each of ``n`` background pixels with each of ``N`` cells.

    Returns
    -------
    ThresholdChoice
    """
    low, high = false_rate_band
    n_bg = int(np.asarray(bg_cc).shape[-1]) if np.asarray(bg_cc).ndim == 2 else 0
    tried: list[tuple[float, float]] = []

    def rate(th: float) -> float:
        r = false_rate(bg_cc, th)
        tried.append((float(th), r))
        return r

    def done(th: float, r: float, clamped: bool = False) -> ThresholdChoice:
        return ThresholdChoice(threshold=float(th), false_rate=float(r), in_band=bool(low <= r < high),
                               clamped=clamped, tried=tried, n_background=n_bg)

    r = rate(threshold_start)
    if not math.isfinite(r):
        log.warning("no background pixels: the false-discovery threshold cannot be estimated; using %.2f",
                    threshold_start)
        return done(threshold_start, r, clamped=True)
    if low <= r < high:
        return done(threshold_start, r)
    if r >= high:
        th = threshold_start
        for th in threshold_up:
            r = rate(th)
            if r < high:
                return done(th, r)
        log.warning("false-correlation rate %.3f at the highest threshold %.2f is still above %.2f; "
                    "using %.2f", r, th, high, th)
        return done(th, r, clamped=True)
    prev = (threshold_start, r)
    for th in threshold_down:
        r = rate(th)
        if r >= high:  # the step jumped over the band: keep the stricter threshold
            return done(*prev)
        if r >= low:
            return done(th, r)
        prev = (th, r)
    # not a warning: the background barely correlates even at the lowest threshold (a quiet FOV)
    log.info("false-correlation rate %.3f at the lowest threshold %.2f is still below %.2f; using %.2f",
             prev[1], prev[0], low, prev[0])
    return done(*prev, clamped=True)


# ----------------------------------------------------------------------------- the analysis


def _resolve_precision(precision: str, device: str) -> str:
    if precision != "auto":
        return precision
    if device != "cpu":
        return "float32"  # a GPU is fast enough in float32, and its bf16 reductions are not bounded
    import torch

    try:
        native = bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):
        native = False
    return "bfloat16" if native else "float32"


def _disc_pixels(cy: float, cx: float, radius: float, roi_mask: np.ndarray) -> np.ndarray:
    """Flat indices, increasing, of the pixels within ``radius`` of ``(cy, cx)`` outside ``roi_mask``."""
    height, width = roi_mask.shape
    y0, y1 = max(0, math.floor(cy - radius)), min(height, math.ceil(cy + radius) + 1)
    x0, x1 = max(0, math.floor(cx - radius)), min(width, math.ceil(cx + radius) + 1)
    yy, xx = np.mgrid[y0:y1, x0:x1]
    inside = (np.hypot(yy - cy, xx - cx) <= radius) & ~roi_mask[y0:y1, x0:x1]
    return (yy[inside] * width + xx[inside]).astype(np.int64)


def _empty(shape: tuple[int, int], **kw: Any) -> Domains:
    log.info("no cells in the labels: returning empty domains")
    return Domains(domains=np.zeros(shape, np.uint16), cell_ids=np.zeros(0, np.int64),
                   cc_boxes=np.zeros((0, 0, 0), np.float32), cc_origins=np.zeros((0, 2), np.int64),
                   threshold=float("nan"), threshold_choice=None,
                   centroids=np.zeros((0, 2)), **kw)


def find_domains(movie: Any, soma: Any, processes: Any, *, params: CorrelationParams | None = None,
                 on_block: Callable[[int, np.ndarray], None] | None = None, progress: bool | None = False,
                 **overrides: Any) -> Domains:
    """CC domains of every cell of a FOV (definition in the module docstring).

    The steps: the pixels each cell needs (:func:`pixel_sets`), one pass over
    the movie for their traces (:class:`_Traces`), the background CC values
    and the threshold they give (:func:`_background_cc`,
    :func:`_pick_threshold`), the screened CC values of each cell's
    candidates (:func:`_domain_cc`), the exact values of the pixels several
    cells claim (:func:`_exact_contested`) and the labels
    (:func:`_label_domains`).

    Parameters
    ----------
    movie : Movie, CorrectedMovie or ndarray, shape (T, H, W)
        Motion-corrected movie, read once, in blocks of at most
        ``chunk_frames`` frames and 64 MiB. The traces of the pixels that
        matter (ROIs, candidates, background) are kept, ``n_pixels x T``
        float32: in memory when they fit ``memory_mb``; otherwise in a
        temporary file (in ``scratch_dir``), from which the cells are
        analysed in groups that fit. The result does not depend on
        ``memory_mb``.
    soma, processes : ndarray of int, shape (H, W)
        Label images with shared cell ids (0 background); no pixel in both.
    params : CorrelationParams, optional
        Options (default: the published values; ``f0_percentile`` and
        ``f0_window_s`` are not used here).
    on_block : callable, optional
        Called as ``on_block(t0, block)`` with every block of the pass over
        the movie (float32, shape (t, H*W), frames ``t0 .. t0 + t``), so
        that other per-frame statistics need no second pass (see
        :func:`correlation_analysis`). Not called when there are no cells.
    progress : bool or None
        Bars over the pass over the movie (frames) and the threshold and
        domain searches (cells); None: on a terminal (see
        :mod:`astro3s.utils.progress`).
    **overrides
        Fields of :class:`CorrelationParams` that replace those of
        ``params`` (e.g. ``radius=40, threshold=0.7``; ``max_lag`` and
        ``smooth_frames`` in frames).

    Returns
    -------
    Domains
        With no cells in the labels, an empty result (all-zero label image,
        ``N = 0``, threshold NaN), not an error. The domains and the threshold
        do not depend on ``exact_cc`` or ``precision``; the CC values away
        from the threshold do, within ``Domains.cc_tolerance``.

    Raises
    ------
    InputError
        Labels of another shape than the frames, overlapping soma/process
        pixels, NaN/Inf in the movie, or a movie too short for the lags
        (fewer than ``2 * max_lag + smooth_frames`` frames).
    ConfigError
        An option out of range.
    TypeError
        An override that is not a field of :class:`CorrelationParams`.
    """
    import time

    params = _with_overrides(params, overrides)
    timings: dict[str, float] = dict.fromkeys(("setup", "read_normalise", "screen_setup", "threshold", "domains",
                                               "overlaps"), 0.0)
    clock = time.perf_counter()
    n_frames, soma, processes = _check_inputs(movie, soma, processes, params)
    pixels = pixel_sets(soma, processes, params)
    frames = frames_in_memory(movie)
    plan = _plan(pixels, n_frames, params, from_frames=frames is not None)
    common = dict(radius=float(params.radius), max_lag=int(params.max_lag), smooth_frames=int(params.smooth_frames),
                  precision=plan.precision, device=plan.device, timings_s=timings, exact_cc=plan.band is None,
                  cc_tolerance=bf16_error_bound(plan.n_smooth) if plan.precision == "bfloat16" else 0.0)
    if len(pixels.cell_ids) == 0:
        common["exact_cc"] = True
        return _empty(soma.shape, **common)
    timings["setup"] = time.perf_counter() - clock
    release_freed_memory()  # what earlier stages freed, before the pass (glibc keeps it otherwise)
    traces = _Traces(pixels, plan, params, timings, frames=frames)
    try:
        traces.read(movie, on_block=on_block, progress=progress)
        with _search_context(plan.device):
            traces.prepare_background()
            choice, threshold = None, params.threshold
            if threshold is None:
                choice = _pick_threshold(_background_cc(traces, params, progress=progress), params)
                threshold = choice.threshold
            cc = _domain_cc(traces, threshold, params, progress=progress)
            accepted, claims = _exact_contested(traces, cc, threshold)
    finally:
        traces.close()
    if plan.band is not None:
        common["cc_tolerance"] = max(cc.half_max, 0.0)
    labels = _label_domains(pixels, cc.values, accepted, claims)
    cc_boxes, cc_origins = _cc_boxes(pixels.cand_flat, cc.values, pixels.roi_flat, soma.shape)
    return Domains(domains=labels, cell_ids=pixels.cell_ids, cc_boxes=cc_boxes, cc_origins=cc_origins,
                   threshold=float(threshold), threshold_choice=choice, centroids=pixels.centroids, **common)


def _with_overrides(params: CorrelationParams | None, overrides: dict[str, Any]) -> CorrelationParams:
    """``params`` (default: the published values) with ``overrides`` replacing its fields, checked."""
    params = CorrelationParams() if params is None else params
    if not overrides:
        return params
    names = {f.name for f in fields(CorrelationParams)}
    unknown = sorted(set(overrides) - names)
    if unknown:
        raise TypeError(f"find_domains() got unknown option(s) {', '.join(unknown)}; the options are the fields "
                        "of CorrelationParams.")
    for key in ("threshold_up", "threshold_down", "false_rate_band"):
        if key in overrides:
            overrides = {**overrides, key: tuple(overrides[key])}
    return replace(params, **overrides)  # __post_init__ checks the values (ConfigError)


def _check_inputs(movie: Any, soma: Any, processes: Any,
                  params: CorrelationParams) -> tuple[int, np.ndarray, np.ndarray]:
    """``(T, soma, processes)`` after checking the movie's shape and length and the labels."""
    n_frames, height, width = movie_shape(movie)
    soma, processes = check_pair(soma, processes, (height, width))
    max_lag, smooth_frames = int(params.max_lag), int(params.smooth_frames)
    need = 2 * max_lag + smooth_frames
    if n_frames < need:
        raise InputError(getattr(movie, "path", None),
                         f"the movie has {n_frames} frames, too few for the CC analysis with max_lag={max_lag} "
                         f"and smooth_frames={smooth_frames}: at least {need} are needed.",
                         "analyse a longer recording, or lower max_lag.")
    return n_frames, soma, processes


@dataclass(frozen=True)
class PixelSets:
    """The pixels the CC analysis of a FOV needs (:func:`pixel_sets`).

    Attributes
    ----------
    roi_label : ndarray of int, shape (H, W)
        Cell id of each soma or process pixel (0: none).
    cell_ids : ndarray of int64, shape (N,)
        Cell ids, increasing.
    centroids : ndarray of float64, shape (N, 2)
        Soma centroids ``(y, x)`` (:func:`cell_centroids`).
    roi_flat : list of ndarray of int64
        Flat indices, increasing, of each cell's soma and process pixels.
    cand_flat : list of ndarray of int64
        Flat indices, increasing, of each cell's candidates (its disc, less every ROI pixel).
    bg_flat : ndarray of int64, shape (n,)
        Background pixels of the threshold search (empty when the threshold is given).
    """

    roi_label: np.ndarray
    cell_ids: np.ndarray
    centroids: np.ndarray
    roi_flat: list[np.ndarray]
    cand_flat: list[np.ndarray]
    bg_flat: np.ndarray

    @property
    def shape(self) -> tuple[int, int]:
        return self.roi_label.shape  # type: ignore[return-value]

    def cell_pixels(self) -> np.ndarray:
        """Flat indices, increasing and unique, of every cell's ROI and candidate pixels; int64 (n,)."""
        return union_flat([*self.roi_flat, *self.cand_flat], self.roi_label.size)


def union_flat(parts: list[np.ndarray], n_pixels: int) -> np.ndarray:
    """``np.unique`` of the concatenated flat pixel indices ``parts`` (each in ``0 .. n_pixels - 1``), int64:
    marked in a mask of the FOV instead of sorted (the discs of many cells hold ~10^5 pixels)."""
    mask = np.zeros(n_pixels, bool)
    for part in parts:  # a loop over the cells' pixel sets
        mask[part] = True
    return np.flatnonzero(mask).astype(np.int64, copy=False)


def pixel_sets(soma: np.ndarray, processes: np.ndarray, params: CorrelationParams) -> PixelSets:
    """Step (a): ROI pixels, candidate disc pixels and background pixels of every cell.

    Parameters
    ----------
    soma, processes : ndarray of int, shape (H, W)
        Checked label images (:func:`~astro3s.correlation._common.check_pair`).
    params : CorrelationParams
        ``radius`` (px) of the discs; ``n_background``, ``border`` and ``seed``
        of the background draw, made only when ``threshold`` is None.

    Returns
    -------
    PixelSets
    """
    roi_label = np.maximum(soma, processes)  # no pixel is in both
    cell_ids, counts = np.unique(roi_label[roi_label > 0], return_counts=True)
    cell_ids = cell_ids.astype(np.int64)
    centroids = cell_centroids(soma, processes, cell_ids)
    roi_mask = roi_label > 0
    order = np.argsort(roi_label.ravel(), kind="stable")  # flat indices grouped by id, increasing
    roi_flat = np.split(order[len(order) - counts.sum():], np.cumsum(counts)[:-1]) if len(cell_ids) else []
    cand_flat = [_disc_pixels(cy, cx, params.radius, roi_mask) for cy, cx in centroids]
    draw = params.threshold is None and len(cell_ids)
    bg_flat = (background_pixels(roi_mask, centroids, radius=params.radius, n_background=params.n_background,
                                 border=params.border, seed=params.seed) if draw else np.zeros(0, np.int64))
    return PixelSets(roi_label=roi_label, cell_ids=cell_ids, centroids=centroids, roi_flat=roi_flat,
                     cand_flat=cand_flat, bg_flat=bg_flat)


@dataclass(frozen=True)
class _Plan:
    """How the search of one FOV runs (:func:`_plan`)."""

    n_frames: int
    n_smooth: int  # T' = T - smooth_frames + 1
    device: str
    precision: str  # "float32" or "bfloat16"
    band: tuple[int, int, int] | None  # (n_fft, n_low, n_fine) of the screened search; None: exhaustive
    margin: float  # rounding bound of one first-level screening product
    cell_pixels: np.ndarray  # int64 (n,), every cell's ROI and candidate pixels
    groups: list[np.ndarray]  # cell indices of each group whose traces fit memory_mb
    max_rows: int  # pixels whose traces fit memory_mb (trace_bytes each)

    @property
    def spill(self) -> bool:
        """Traces in a temporary file: several groups, or one cell whose traces alone exceed memory_mb."""
        return len(self.groups) > 1 or len(self.cell_pixels) > self.max_rows

    def band_rows(self, n_roi: int) -> int:
        """Candidates analysed at once beside a cell's ``n_roi`` ROI pixels when its disc exceeds the budget."""
        return max(_MIN_BAND, self.max_rows - _ROI_WEIGHT * int(n_roi))


def _plan(pixels: PixelSets, n_frames: int, params: CorrelationParams, *, from_frames: bool = False) -> _Plan:
    """Device, precision, exhaustive or screened search, and the groups of cells of a FOV.

    With ``from_frames`` (the movie's frames are held in memory, :func:`frames_in_memory`) and traces
    that exceed ``memory_mb``, the groups get half of it: they are read from those frames, which already
    take memory the budget does not count (a D4-size movie, 311 x 512 x 512, cached by the pre-processing:
    peak RSS 1.53-1.59 -> 1.39-1.43 GiB, its CC stage as fast). Traces that fit are kept whole as before.
    """
    max_lag, smooth_frames = int(params.max_lag), int(params.smooth_frames)
    device = resolve_device(params.device)
    precision = _resolve_precision(params.precision, device)
    n_smooth = n_frames - smooth_frames + 1
    macs = (2 * max_lag + 1) * n_smooth * sum(len(r) * len(c) for r, c in zip(pixels.roi_flat, pixels.cand_flat))
    pays = macs >= (_SCREEN_MIN_MACS if device == "cpu" else _SCREEN_MIN_MACS_GPU)
    band = _screen_band(n_smooth, max_lag, smooth_frames) if pays and not params.exact_cc else None
    cell_pixels = pixels.cell_pixels()
    height, width = pixels.shape
    max_rows = max(1, int(float(params.memory_mb) * 2**20) // trace_bytes(n_frames))
    if from_frames and len(cell_pixels) > max_rows:
        max_rows = max(1, max_rows // 2)
    groups = cell_groups(pixels.roi_flat, pixels.cand_flat, pixels.centroids, height * width, max_rows=max_rows)
    if len(groups) > 1 or len(cell_pixels) > max_rows:
        log.info("CC analysis of %d cells in %d groups: the traces of their %d pixels exceed memory_mb=%g",
                 len(pixels.cell_ids), len(groups), len(cell_pixels), params.memory_mb)
    margin = _screen_margin(precision, band[0], band[1]) if band is not None else 0.0
    return _Plan(n_frames=n_frames, n_smooth=n_smooth, device=device, precision=precision, band=band,
                 margin=margin, cell_pixels=cell_pixels, groups=groups, max_rows=max_rows)


@contextlib.contextmanager
def _search_context(device: str) -> Iterator[None]:
    """One torch thread for the many small steps, all of them for the large products (:func:`few_threads`),
    and float32 products in full precision (TF32 on a GPU would blur the threshold decisions)."""
    import torch

    saved = torch.get_float32_matmul_precision()
    with few_threads() if device == "cpu" else contextlib.nullcontext():
        torch.set_float32_matmul_precision("highest")
        try:
            yield
        finally:
            torch.set_float32_matmul_precision(saved)


@dataclass
class _GroupTraces:
    """Normalised traces of the pixels of one group of cells, and their screening spectra."""

    index: Any  # (group, ROI pixels only) of a loaded group; None for a band of candidates
    flat: np.ndarray  # int64 (n,), increasing flat pixel indices
    z: Any  # Tensor float32 (n, T')
    feats: dict[str, Any] | None  # _spectral_features of z (screened search)
    columns: Any  # Tensor float32 (n, D): first-level screening columns, or None

    def rows(self, flat: np.ndarray) -> Any:
        """Row indices in ``z`` of the pixels ``flat`` (all in the group), as a tensor on z's device."""
        import torch

        return torch.from_numpy(np.searchsorted(self.flat, flat)).to(self.z.device)

    def fine_columns(self, rows: Any, index: Any) -> Any:
        """Second-level columns (:func:`_screen_columns` without ``bend``) of the rows ``rows[index]``,
        float32 (k, D')."""
        r = rows[index]
        return _screen_columns(self.feats["spec"][r], self.feats["high_fine"][r])


def frames_in_memory(movie: Any) -> np.ndarray | None:
    """The frames of ``movie`` as a float32 ``(T, H*W)`` view when they are already in memory, else None.

    That is a float32 array, or a :class:`~astro3s.preprocess.motion.CorrectedMovie`
    whose frames the pre-processing kept (``cache``), C-contiguous; a lazily
    read movie (a file, or :class:`~astro3s.io.Movie`) is not.
    """
    frames = movie if isinstance(movie, np.ndarray) else getattr(movie, "cache", None)
    if (not isinstance(frames, np.ndarray) or frames.ndim != 3 or frames.dtype != np.float32
            or not frames.flags.c_contiguous):
        return None  # (a strided array would be copied whole by the reshape)
    return frames.reshape(frames.shape[0], -1)


class _Traces:
    """Pixel traces of one FOV's search: one pass over the movie fills them; the cells' are then
    normalised (with their screening spectra) one group of cells at a time, the background's once.

    Parameters
    ----------
    pixels : PixelSets
    plan : _Plan
    params : CorrelationParams
    timings : dict of str to float
        Seconds per step, added to (``read_normalise``, ``screen_setup``).
    frames : ndarray of float32, shape (T, H*W), optional
        The movie in memory (:func:`frames_in_memory`): traces that exceed
        ``memory_mb`` are then read from it, group by group, instead of from a
        temporary file (:class:`~astro3s.correlation._store.TraceStore`).
    """

    def __init__(self, pixels: PixelSets, plan: _Plan, params: CorrelationParams, timings: dict[str, float], *,
                 frames: np.ndarray | None = None):
        self.pixels, self.plan, self.params, self.timings = pixels, plan, params, timings
        self.max_lag, self.smooth_frames = int(params.max_lag), int(params.smooth_frames)
        self.store = TraceStore(plan.cell_pixels, plan.n_frames, spill=plan.spill, scratch_dir=params.scratch_dir,
                                frames=frames)
        self.bg_store = TraceStore(pixels.bg_flat, plan.n_frames)
        self.trend: np.ndarray | None = None  # slow_trend of the movie, removed from every trace (detrend)
        self.bg_z: Any = None  # Tensor float32 (n_bg, T')
        self.bg_columns: Any = None  # Tensor float32 (n_bg, D), screened search only
        self.bg_feats: dict[str, Any] | None = None  # _spectral_features of bg_z, screened search only
        self._loaded: _GroupTraces | None = None  # the group whose traces are in memory (at most one)
        self._cached: dict[int, Any] = {}  # first-level rows of cells, kept from threshold to domain search
        self._cache_bytes = min(_ROWS_CACHE_BYTES, int(float(params.memory_mb) * 2**20) // 4)

    def read(self, movie: Any, *, on_block: Callable[[int, np.ndarray], None] | None,
             progress: bool | None) -> None:
        """The pass over the movie; normalises the background traces."""
        import time

        import torch

        clock = time.perf_counter()
        frame_means = np.zeros(self.plan.n_frames, np.float64)

        def each_block(t0: int, block: np.ndarray) -> None:
            frame_means[t0:t0 + len(block)] = block.mean(axis=1)  # float32 pairwise sums: ample for a trend
            if on_block is not None:
                on_block(t0, block)

        # the frame means only where the trend is removed (a pass over each block)
        one_pass(movie, (self.store, self.bg_store), chunk_frames=self.params.chunk_frames,
                 on_block=each_block if self.params.detrend else on_block, progress=progress)
        if self.params.detrend:
            self.trend = slow_trend(frame_means, smooth_frames=self.smooth_frames)
        self.bg_z = torch.from_numpy(_normalise_in_place(self.bg_store.take(), self.smooth_frames,
                                                         self.trend)).to(self.plan.device)
        self.timings["read_normalise"] += time.perf_counter() - clock

    def prepare_background(self) -> None:
        """Screening spectra and first-level columns of the background traces (screened search)."""
        import time

        clock = time.perf_counter()
        band = self.plan.band
        if band is not None:
            self.bg_feats = _spectral_features(self.bg_z, *band)
            self.bg_columns = _screen_columns(self.bg_feats["spec"][:, :band[1]], self.bg_feats["high"],
                                              self.bg_feats["bend"])
        self.timings["screen_setup"] += time.perf_counter() - clock

    def group(self, g: int, *, roi_only: bool = False) -> _GroupTraces:
        """The normalised traces of group ``g`` (of only its cells' ROI pixels with ``roi_only``, when the
        traces are in a file), loaded (and the previous group freed) when needed."""
        plan, pixels = self.plan, self.pixels
        key = (g, roi_only and plan.spill)
        if self._loaded is not None and self._loaded.index == key:
            return self._loaded
        self._loaded = None  # free the previous group first
        release_freed_memory()
        if not plan.spill:
            self._loaded = self._prepare(key, plan.cell_pixels, self.store.take())
            return self._loaded
        sets = (pixels.roi_flat,) if key[1] else (pixels.roi_flat, pixels.cand_flat)
        flat = union_flat([s[i] for i in plan.groups[g] for s in sets], pixels.roi_label.size)
        self._loaded = self.load(flat, key=key)
        return self._loaded

    def load(self, flat: np.ndarray, *, key: Any = None, features: bool = True) -> _GroupTraces:
        """The normalised traces (with their screening spectra when ``features``) of the pixels ``flat``
        (increasing), read from the temporary file."""
        import time

        clock = time.perf_counter()
        raw = self.store.rows(np.searchsorted(self.plan.cell_pixels, flat))
        self.timings["read_normalise"] += time.perf_counter() - clock
        return self._prepare(key, flat, raw, features=features)

    def _prepare(self, key: Any, flat: np.ndarray, raw: np.ndarray, *, features: bool = True) -> _GroupTraces:
        """Normalise raw traces (overwritten) and compute their screening spectra."""
        import time

        import torch

        plan = self.plan
        clock = time.perf_counter()
        z = torch.from_numpy(_normalise_in_place(raw, self.smooth_frames, self.trend)).to(plan.device)
        del raw
        self.timings["read_normalise"] += time.perf_counter() - clock
        clock = time.perf_counter()
        feats = columns = None
        if plan.band is not None and features:
            feats = _spectral_features(z, *plan.band)
            columns = _screen_columns(feats["spec"][:, :plan.band[1]], feats["high"], feats["bend"])  # (n, D)
        self.timings["screen_setup"] += time.perf_counter() - clock
        return _GroupTraces(key, flat, z, feats, columns)

    def fits(self, g: int) -> bool:
        """Whether the traces of group ``g`` (ROIs and candidates) fit memory_mb."""
        pixels, cells = self.pixels, self.plan.groups[g]
        flat = union_flat([s[i] for i in cells for s in (pixels.roi_flat, pixels.cand_flat)], pixels.roi_label.size)
        return len(cells) > 0 and len(flat) <= self.plan.max_rows

    def screen_rows(self, i: int, grp: _GroupTraces) -> Any:
        """First-level screening rows of cell ``i`` (:func:`_screen_rows`), kept for the domain search
        while they fit a cache of ``_ROWS_CACHE_BYTES``."""
        if i in self._cached:
            return self._cached[i]
        r = grp.rows(self.pixels.roi_flat[i])
        n_low = self.plan.band[1]
        out = _screen_rows(grp.feats["spec"][r, :n_low], grp.feats["high"][r], grp.feats["bend"][r],
                           self.max_lag, self.plan.band[0])
        if sum(t.numel() for t in self._cached.values()) * 4 + out.numel() * 4 <= self._cache_bytes:
            self._cached[i] = out
        return out

    def fine_rows(self, i: int, grp: _GroupTraces, p0: int, p1: int) -> Any:
        """Second-level screening rows (:func:`_fine_rows`) of the ROI pixels ``p0 .. p1`` of cell ``i``."""
        r = grp.rows(self.pixels.roi_flat[i][p0:p1])
        return _fine_rows(grp.feats["spec"][r], grp.feats["high_fine"][r], self.max_lag, self.plan.band[0])

    def forget_rows(self) -> None:
        self._cached.clear()

    def close(self) -> None:
        self._loaded = None
        self._cached.clear()
        self.store.close()
        self.bg_store.close()


def _background_cc(traces: _Traces, params: CorrelationParams, *, progress: bool | None = False) -> np.ndarray:
    """Step (b): CC value of each background pixel with each cell, float32 (N, n_bg).

    Exact where it reaches the lowest threshold the search can try (screened
    search: below it, only bounded), so the false rates of every threshold
    tried are those of the exhaustive search.
    """
    import time

    plan = traces.plan
    lowest = min(params.threshold_start, *params.threshold_up, *params.threshold_down)
    bg_cc = np.empty((len(traces.pixels.cell_ids), len(traces.pixels.bg_flat)), np.float32)
    # each group's work is a call, so that nothing outlives it but the loaded group
    with bar(progress=progress, desc="CC threshold search", unit="cell", total=len(bg_cc)) as shown:
        for g, cells in enumerate(plan.groups):  # a loop over groups of cells
            grp = traces.group(g, roi_only=True)  # the candidates are not needed here
            clock = time.perf_counter()
            for i in cells:  # a loop over cells; few background pixels: float32 throughout
                bg_cc[i] = _background_cc_of_cell(traces, grp, int(i), lowest)
                shown.update(1)
            traces.timings["threshold"] += time.perf_counter() - clock
            grp = None  # no reference of ours keeps this group alive while the next one is loaded
    return bg_cc


def _background_cc_of_cell(traces: _Traces, grp: _GroupTraces, i: int, lowest: float) -> np.ndarray:
    """CC values of the background pixels with cell ``i``, float32 (n_bg,) (see :func:`_background_cc`).

    Screened search: whether each value reaches ``lowest`` is decided as for the domains
    (:func:`_screened_max`); only the pixels that reach it, whose values the false rates of every
    threshold tried need, are computed by the exhaustive search. The others are below ``lowest``,
    which is all the threshold search needs of them: their value is their upper bound, capped just
    below ``lowest``.
    """
    import torch

    roi_rows = grp.rows(traces.pixels.roi_flat[i])
    roi_z = grp.z[roi_rows]
    if traces.plan.band is None:
        return _exact_max(roi_z, traces.bg_z, traces.max_lag).cpu().numpy()
    plan, feats = traces.plan, traces.bg_feats
    rows = traces.screen_rows(i, grp)
    values, half, _ = _screened_max(
        roi_z, traces.bg_z, rows, grp.columns[roi_rows, -2:], traces.bg_columns, partial(traces.fine_rows, i, grp),
        lambda index: _screen_columns(feats["spec"][index], feats["high_fine"][index]), max_lag=traces.max_lag,
        threshold=lowest, precision=plan.precision, margin=plan.margin)
    reach = torch.nonzero(values >= float(np.float32(lowest))).flatten()
    out = torch.minimum(values + half, torch.tensor(_f32_below(lowest), device=values.device))
    if len(reach):
        out[reach] = _exact_max(roi_z, traces.bg_z[reach], traces.max_lag)
    return out.cpu().numpy()


def _pick_threshold(bg_cc: np.ndarray, params: CorrelationParams) -> ThresholdChoice:
    """Step (b): the automatic threshold (:func:`choose_threshold`) from the background CC values (N, n_bg)."""
    choice = choose_threshold(bg_cc, threshold_start=params.threshold_start,
                              threshold_up=tuple(params.threshold_up), threshold_down=tuple(params.threshold_down),
                              false_rate_band=tuple(params.false_rate_band))
    log.info("CC threshold %.2f (false-correlation rate %.3f over %d background pixels%s)",
             choice.threshold, choice.false_rate, choice.n_background, "" if choice.in_band else ", outside the band")
    return choice


@dataclass
class _CandidateCC:
    """CC values of every cell's candidates (aligned with ``PixelSets.cand_flat``)."""

    values: list[np.ndarray]  # float32 (C_i,) per cell
    exact: list[np.ndarray]  # bool (C_i,): computed in float32 by an exhaustive search
    half_max: float = 0.0  # largest bound on |value - exact| (screened search)


def _domain_cc(traces: _Traces, threshold: float, params: CorrelationParams, *,
               progress: bool | None = False) -> _CandidateCC:
    """Step (c): the CC value of every candidate of every cell, on the right side of ``threshold``.

    The last group loaded (by the threshold search) is analysed first.
    """
    import time

    n_cells = len(traces.pixels.cell_ids)
    cc = _CandidateCC(values=[np.zeros(0, np.float32)] * n_cells, exact=[np.zeros(0, bool)] * n_cells)
    with bar(progress=progress, desc="CC domains", unit="cell", total=n_cells) as shown:
        for g in reversed(range(len(traces.plan.groups))):  # a loop over groups of cells
            whole = not traces.plan.spill or traces.fits(g)
            grp = traces.group(g, roi_only=not whole)
            clock = time.perf_counter()
            for i in traces.plan.groups[g]:  # a loop over cells; each is a few large matrix products
                if whole:
                    cc.values[i], cc.exact[i] = _cell_cc(traces, grp, grp, int(i), traces.pixels.cand_flat[i],
                                                         threshold, cc)
                else:
                    _banded_cell_cc(traces, grp, int(i), threshold, cc)
                shown.update(1)
            traces.timings["domains"] += time.perf_counter() - clock
            # without this the next load would hold two groups at once, ours and the one it loads (D4-size
            # movie: resident 1.57 GiB at the end of its last group's load, now 1.34)
            grp = None
    traces.forget_rows()
    return cc


def _cell_cc(traces: _Traces, grp: _GroupTraces, part: _GroupTraces, i: int, cand_flat: np.ndarray,
             threshold: float, cc: _CandidateCC) -> tuple[np.ndarray, np.ndarray]:
    """CC values of the candidates ``cand_flat`` (in ``part``) of cell ``i`` (ROI in ``grp``):
    (values float32, computed-in-float32 bool), and ``cc.half_max`` updated (see :func:`_domain_cc`)."""
    plan = traces.plan
    cand_rows = part.rows(cand_flat)
    roi_rows = grp.rows(traces.pixels.roi_flat[i])
    roi_z = grp.z[roi_rows]
    if plan.band is None:
        values, ok = _dense_max(_lag_stack(roi_z, traces.max_lag), part.z[cand_rows], precision=plan.precision,
                                refine_near=threshold)
    else:
        # the screened search reads the traces of only the candidates its bounds leave
        cand = _Gathered(part.z, cand_rows)
        values, half, ok = _screened_max(roi_z, cand, traces.screen_rows(i, grp), grp.columns[roi_rows, -2:],
                                         part.columns[cand_rows], partial(traces.fine_rows, i, grp),
                                         partial(part.fine_columns, cand_rows), max_lag=traces.max_lag,
                                         threshold=threshold, precision=plan.precision, margin=plan.margin)
        if len(half):
            cc.half_max = max(cc.half_max, float(half.max()))
    return values.cpu().numpy().astype(np.float32, copy=False), ok.cpu().numpy()


def _banded_cell_cc(traces: _Traces, grp: _GroupTraces, i: int, threshold: float, cc: _CandidateCC) -> None:
    """:func:`_cell_cc` of a cell whose disc's traces exceed memory_mb: its candidates in bands of rows of
    the FOV (consecutive flat indices), each read from the file beside the cell's whole ROI (in ``grp``).
    Each candidate's value depends only on its own trace and the ROI's, except through the blocks of
    candidates that share step 3 of the screened search: those are formed over the whole disc, as
    without bands, so the values are the same (:func:`_banded_screen`)."""
    cand_flat = traces.pixels.cand_flat[i]
    step = traces.plan.band_rows(len(traces.pixels.roi_flat[i]))
    if not len(cand_flat):  # an ROI over the budget by itself, with no candidate left around it
        cc.values[i], cc.exact[i] = np.zeros(0, np.float32), np.zeros(0, bool)
        return
    if traces.plan.band is not None:
        values, half, exact = _banded_screen(traces, grp, i, threshold, step)
        if len(half):
            cc.half_max = max(cc.half_max, float(half.max()))
        cc.values[i], cc.exact[i] = values.cpu().numpy().astype(np.float32, copy=False), exact.cpu().numpy()
        return
    values, exact = np.empty(len(cand_flat), np.float32), np.zeros(len(cand_flat), bool)
    for c0 in range(0, len(cand_flat), step):  # a loop over bands of candidates: bounds their traces
        flat = cand_flat[c0:c0 + step]
        values[c0:c0 + step], exact[c0:c0 + step] = _cell_cc(traces, grp, traces.load(flat), i, flat, threshold, cc)
        release_freed_memory()
    cc.values[i], cc.exact[i] = values, exact


def _banded_screen(traces: _Traces, grp: _GroupTraces, i: int, threshold: float, step: int) -> tuple[Any, ...]:
    """:func:`_screened_max` of cell ``i``'s candidates read in bands of ``step``: steps 1-2 band by band,
    then step 3 over the candidates left, in bands that are whole multiples of its blocks."""
    import torch

    plan, cand_flat = traces.plan, traces.pixels.cand_flat[i]
    roi_rows = grp.rows(traces.pixels.roi_flat[i])
    windows = _lag_windows(grp.z[roi_rows], traces.max_lag)
    rows_s, roi_extra = traces.screen_rows(i, grp), grp.columns[roi_rows, -2:]
    kw = dict(threshold=threshold, precision=plan.precision, margin=plan.margin)
    parts = []
    for c0 in range(0, len(cand_flat), step):  # a loop over bands of candidates: steps 1 and 2
        part = traces.load(cand_flat[c0:c0 + step])
        parts.append(_screen_near(windows, part.z, rows_s, roi_extra, part.columns, **kw))
        del part
        release_freed_memory()
    screen = _Screen.cat(parts, list(range(0, len(cand_flat), step)))
    del parts
    th = float(np.float32(threshold))
    chunk = max(1, step // _FINE_BLOCK) * _FINE_BLOCK
    for r0 in range(0, len(screen.rest), chunk):  # a loop over bands of the candidates left: step 3
        at = screen.rest[r0:r0 + chunk]
        part = traces.load(cand_flat[at.cpu().numpy()])
        index = torch.arange(len(at), device=part.z.device)
        screen.settle(at, *_second_level(windows, part.z, partial(traces.fine_rows, i, grp),
                                         partial(part.fine_columns, index), index, threshold=th,
                                         precision=plan.precision, margin=plan.margin), threshold=th)
        del part
    return screen.finish(threshold)


def _exact_contested(traces: _Traces, cc: _CandidateCC, threshold: float) -> tuple[list[np.ndarray], np.ndarray]:
    """Step (d): pixels accepted by several cells go to the highest CC value; the values that could
    change the winner (screened or bfloat16) are made exact here, in ``cc``.

    Returns
    -------
    accepted : list of ndarray of int64
        Positions in ``cand_flat[i]`` of the candidates cell ``i`` accepts.
    claims : ndarray of int32, shape (H * W,)
        Cells accepting each pixel.
    """
    import time

    pixels = traces.pixels
    height, width = pixels.shape
    accepted = [np.flatnonzero(values >= np.float32(threshold)) for values in cc.values]
    claims = np.zeros(height * width, np.int32)
    for i, pos in enumerate(accepted):  # a loop over cells; a cell accepts each pixel once
        claims[pixels.cand_flat[i][pos]] += 1
    redo = [pos[(claims[pixels.cand_flat[i][pos]] >= 2) & ~cc.exact[i][pos]] for i, pos in enumerate(accepted)]
    for g, cells in enumerate(traces.plan.groups):  # a loop over groups (the first is still loaded)
        cells = [int(i) for i in cells if len(redo[i])]
        if not cells:
            continue
        grp = traces.group(g, roi_only=True)  # with the traces in a file, the contested candidates are read alone
        clock = time.perf_counter()
        for i in cells:  # a loop over cells
            cc.values[i][redo[i]] = _exact_values(traces, grp, i, pixels.cand_flat[i][redo[i]])
        traces.timings["overlaps"] += time.perf_counter() - clock
        grp = None  # (see _domain_cc)
    return accepted, claims


def _exact_values(traces: _Traces, grp: _GroupTraces, i: int, flat: np.ndarray) -> np.ndarray:
    """Exhaustive float32 CC values of cell ``i``'s candidates ``flat`` (increasing), float32; read from the
    file in bands when the traces are there (``grp`` then holds only the ROI pixels)."""
    roi_z = grp.z[grp.rows(traces.pixels.roi_flat[i])]
    if not traces.plan.spill:
        return _exact_max(roi_z, grp.z[grp.rows(flat)], traces.max_lag).cpu().numpy()
    out = np.empty(len(flat), np.float32)
    step = traces.plan.band_rows(len(roi_z))
    for c0 in range(0, len(flat), step):  # a loop over bands of candidates (one unless many are contested)
        part = traces.load(flat[c0:c0 + step], features=False)
        out[c0:c0 + step] = _exact_max(roi_z, part.z, traces.max_lag).cpu().numpy()
    return out


def _label_domains(pixels: PixelSets, values: list[np.ndarray], accepted: list[np.ndarray],
                   claims: np.ndarray) -> np.ndarray:
    """Domain label image, uint16 (H, W): each claimed pixel to the cell with the highest CC value
    (ties to the lower id), each ROI pixel to its own cell."""
    height, width = pixels.shape
    best = np.full(height * width, -np.inf, np.float32)
    winner = np.zeros(height * width, np.int64)
    for i, pos in enumerate(accepted):  # a loop over cells: strictly higher wins, so ties go to the lower id
        flat = pixels.cand_flat[i][pos]
        higher = values[i][pos] > best[flat]
        best[flat[higher]] = values[i][pos][higher]
        winner[flat[higher]] = i
    labels = np.where(claims > 0, pixels.cell_ids[winner], 0).reshape(height, width)
    return np.where(pixels.roi_label > 0, pixels.roi_label, labels).astype(np.uint16)


def _cc_boxes(cand_flat: list[np.ndarray], cand_cc: list[np.ndarray], roi_flat: list[np.ndarray],
              shape: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
    """Each cell's CC map in a box around its disc and ROI: ``(N, h, w)`` float32 (one box size for
    all, NaN where not a candidate), and the ``(y, x)`` of each box's first pixel in the FOV."""
    width = shape[1]
    spans = []
    for cand, roi in zip(cand_flat, roi_flat):  # a loop over cells
        ys, xs = np.divmod(np.concatenate([cand, roi]), width)
        spans.append((ys.min(), xs.min(), ys.max() + 1, xs.max() + 1))
    spans = np.asarray(spans, np.int64).reshape(-1, 4)
    h, w = (int((spans[:, 2] - spans[:, 0]).max()), int((spans[:, 3] - spans[:, 1]).max())) if len(spans) else (0, 0)
    boxes = np.full((len(spans), h, w), np.nan, np.float32)
    for i, (cand, values, roi) in enumerate(zip(cand_flat, cand_cc, roi_flat)):  # a loop over cells
        for flat, value in ((cand, values), (roi, np.float32(1.0))):  # 1: a pixel's own trace at lag 0
            ys, xs = np.divmod(flat, width)
            boxes[i, ys - spans[i, 0], xs - spans[i, 1]] = value
    return boxes, spans[:, :2].copy()
