"""Cross-correlation (CC) domains of astrocytes, with a per-FOV automatic threshold.

Definition (following ASTRA's ``CC.py``; differences are marked *):

- **Pixel traces.** Every pixel trace is smoothed by a ``smooth_frames`` (5)
  moving average and z-scored (population standard deviation), which here is
  the same as scaling it to unit Euclidean norm. *The moving average keeps only
  the frames where the window is full (``T' = T - smooth_frames + 1``); ASTRA
  pads with zeros, which pulls the first and last frames of every raw trace
  towards 0 and so correlates all pixels with each other.
- **Lagged correlation** between traces ``a`` (an ROI pixel) and ``b`` (a
  candidate pixel) at lag ``l`` is ``sum_t a(t + l) b(t)`` over the frames where
  both exist, for ``|l| <= max_lag`` (10). It is divided by ``T'``, not by the
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

Speed: the correlations of a cell are one blocked matrix product of the ROI
pixel traces stacked at every lag (``(2L+1) P x T'``) with the candidate
traces (``T' x C``), reduced by a running max over ROI pixels and lags, in
torch on the GPU when present. On CPUs with native bfloat16 the product is
first computed in bfloat16 (about twice as fast); its rounding error is
bounded (:func:`bf16_error_bound`), and every candidate whose screened value
lies within that bound of the threshold, or of a competing cell's value, is
recomputed in float32, so the domains are the same as with float32 throughout.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from astro3s.correlation._common import check_pair, iter_blocks, movie_shape, resolve_device
from astro3s.correlation.params import CorrelationParams, check_params
from astro3s.errors import InputError

__all__ = [
    "Domains",
    "ThresholdChoice",
    "background_pixels",
    "bf16_error_bound",
    "cell_centroids",
    "choose_threshold",
    "false_rate",
    "find_domains",
    "lagged_max_correlation",
    "normalise_traces",
]

log = logging.getLogger(__name__)
_D = CorrelationParams()
# elements of one block of the correlation matrix (64 MiB in float32): bounds the peak memory
_BLOCK_ELEMENTS = 1 << 24


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
    cc : ndarray of float32, shape (N, H, W)
        CC value (max lagged correlation with the cell's ROI pixels) of each
        candidate pixel; 1 on the cell's own ROI pixels; NaN where the pixel is
        not a candidate (outside the disc, or another cell's ROI).
    threshold : float
        Threshold used (NaN when there are no cells).
    threshold_choice : ThresholdChoice or None
        The automatic search, or None when ``threshold`` was given.
    centroids : ndarray of float64, shape (N, 2)
        Soma centroids ``(y, x)`` (of the processes for a cell without soma).
    radius : float
    max_lag : int
    smooth_frames : int
    precision : str
        ``"float32"`` or ``"bfloat16"`` (screening, see the module docstring).
    cc_tolerance : float
        Bound on ``|cc - exact|`` (0 in float32 up to float32 rounding).
    device : str
    """

    domains: np.ndarray
    cell_ids: np.ndarray
    cc: np.ndarray
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

    @property
    def false_rate(self) -> float | None:
        """False-correlation rate at the chosen threshold (None when it was given)."""
        return None if self.threshold_choice is None else self.threshold_choice.false_rate


# ----------------------------------------------------------------------------- pieces


def normalise_traces(x: np.ndarray, *, smooth_frames: int = _D.smooth_frames) -> np.ndarray:
    """Smooth pixel traces by a moving average and scale them to zero mean, unit norm.

    Parameters
    ----------
    x : ndarray, shape (n, T)
        One trace per row.
    smooth_frames : int
        Moving-average length; only full windows are kept.

    Returns
    -------
    z : ndarray of float32, shape (n, T - smooth_frames + 1)
        ``z @ z.T`` holds Pearson correlations. Constant traces become 0.
    """
    x = np.asarray(x, dtype=np.float32)
    n_out = x.shape[1] - smooth_frames + 1
    if n_out < 1:
        raise InputError(None, f"traces of {x.shape[1]} frames are shorter than the {smooth_frames}-frame "
                         "moving average.")
    # centre first, with a float64 mean: raw values of several thousand summed in float32 lose digits
    x = x - x.mean(axis=1, keepdims=True, dtype=np.float64).astype(np.float32)
    z = x[:, :n_out].copy()
    for s in range(1, smooth_frames):  # a loop over the window's offsets, each a whole-array add
        z += x[:, s:s + n_out]
    z -= z.mean(axis=1, keepdims=True, dtype=np.float64).astype(np.float32)
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


def _lag_stack(roi: Any, max_lag: int) -> Any:
    """ROI traces at every lag: row ``p * (2L+1) + j`` at time t holds ``roi[p, t + lag_j]`` (0 outside)."""
    n_roi, n = roi.shape
    out = roi.new_zeros((n_roi, 2 * max_lag + 1, n))
    for j, lag in enumerate(range(-max_lag, max_lag + 1)):  # a loop over the 2L+1 lags only
        if lag >= 0:
            out[:, j, :n - lag] = roi[:, lag:]
        else:
            out[:, j, -lag:] = roi[:, :n + lag]
    return out.reshape(n_roi * (2 * max_lag + 1), n)


def _blocked_max(stack: Any, cand: Any) -> Any:
    """``max over rows of stack @ cand.T`` per candidate, in memory-bounded blocks; float32 (C,)."""
    import torch

    n_rows = stack.shape[0]
    n_cand = cand.shape[0]
    out = torch.full((n_cand,), -math.inf, dtype=torch.float32, device=cand.device)
    if n_rows == 0 or n_cand == 0:
        return out
    c_block = int(min(n_cand, max(256, _BLOCK_ELEMENTS // n_rows)))
    r_block = int(min(n_rows, max(1, _BLOCK_ELEMENTS // c_block)))
    for c0 in range(0, n_cand, c_block):
        cb = cand[c0:c0 + c_block]
        best = out[c0:c0 + c_block]
        for r0 in range(0, n_rows, r_block):
            prod = stack[r0:r0 + r_block] @ cb.T
            torch.maximum(best, torch.amax(prod, dim=0).float(), out=best)
    return out


def lagged_max_correlation(roi: Any, cand: Any, *, max_lag: int = _D.max_lag, device: str = "cpu",
                           precision: str = "float32",
                           refine_near: float | tuple[float, ...] | None = None) -> tuple[np.ndarray, np.ndarray]:
    """For each candidate trace, the largest lagged correlation with any ROI trace.

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
    stack = _lag_stack(roi, max_lag)
    if precision == "float32":
        cc = _blocked_max(stack, cand)
        exact = torch.ones(cand.shape[0], dtype=torch.bool, device=device)
    else:
        cc = _blocked_max(stack.to(torch.bfloat16), cand.to(torch.bfloat16))
        exact = torch.zeros(cand.shape[0], dtype=torch.bool, device=device)
        if refine_near is not None:
            marks = torch.as_tensor(np.atleast_1d(np.asarray(refine_near, np.float32)), device=cc.device)
            gap = (cc[:, None] - marks[None, :]).abs().amin(dim=1)
            near = torch.nonzero(gap <= bf16_error_bound(cand.shape[1])).flatten()
            if len(near):
                cc[near] = _blocked_max(stack, cand[near])
                exact[near] = True
    return cc.cpu().numpy(), exact.cpu().numpy()


def cell_centroids(soma: np.ndarray, processes: np.ndarray, cell_ids: np.ndarray) -> np.ndarray:
    """Soma centroid ``(y, x)`` of each cell (process centroid for a cell without soma); (N, 2) float64."""
    from scipy import ndimage as ndi

    if len(cell_ids) == 0:
        return np.zeros((0, 2))
    ones = np.ones(soma.shape)
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
    yy, xx = np.mgrid[0:height, 0:width]
    dist = np.full((height, width), np.inf)
    for cy, cx in centroids:  # a loop over cells
        np.minimum(dist, np.hypot(yy - cy, xx - cx), out=dist)
    flat = np.flatnonzero(eligible & (dist > radius))
    if len(flat) < n_background:
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
    log.warning("false-correlation rate %.3f at the lowest threshold %.2f is still below %.2f; using %.2f",
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


def _gather(movie: Any, flat: np.ndarray, n_frames: int, chunk_frames: int) -> np.ndarray:
    """Traces of the pixels ``flat`` as a (n, T) float32 array, read in time chunks."""
    out = np.empty((len(flat), n_frames), np.float32)
    for t0, block in iter_blocks(movie, chunk_frames):
        out[:, t0:t0 + len(block)] = block.reshape(len(block), -1)[:, flat].T
    return out


def _empty(shape: tuple[int, int], **kw: Any) -> Domains:
    log.info("no cells in the labels: returning empty domains")
    return Domains(domains=np.zeros(shape, np.uint16), cell_ids=np.zeros(0, np.int64),
                   cc=np.zeros((0, *shape), np.float32), threshold=float("nan"), threshold_choice=None,
                   centroids=np.zeros((0, 2)), **kw)


def find_domains(movie: Any, soma: Any, processes: Any, *, radius: float = _D.radius,
                 max_lag: int = _D.max_lag, smooth_frames: int = _D.smooth_frames,
                 threshold: float | None = _D.threshold, threshold_start: float = _D.threshold_start,
                 threshold_up: tuple[float, ...] = _D.threshold_up,
                 threshold_down: tuple[float, ...] = _D.threshold_down,
                 false_rate_band: tuple[float, float] = _D.false_rate_band,
                 n_background: int = _D.n_background, border: int = _D.border, seed: int = _D.seed,
                 device: str = _D.device, precision: str = _D.precision,
                 chunk_frames: int = _D.chunk_frames) -> Domains:
    """CC domains of every cell of a FOV (definition in the module docstring).

    Parameters
    ----------
    movie : Movie, CorrectedMovie or ndarray, shape (T, H, W)
        Motion-corrected movie. The traces of the pixels that matter (ROIs,
        candidates, background) are read into memory once: ``n_pixels x T``
        float32.
    soma, processes : ndarray of int, shape (H, W)
        Label images with shared cell ids (0 background); no pixel in both.
    radius, max_lag, smooth_frames, threshold, threshold_start, threshold_up,
    threshold_down, false_rate_band, n_background, border, seed, device,
    precision, chunk_frames
        See :class:`CorrelationParams`.

    Returns
    -------
    Domains
        With no cells in the labels, an empty result (all-zero label image,
        ``N = 0``, threshold NaN), not an error.

    Raises
    ------
    InputError
        Labels of another shape than the frames, overlapping soma/process
        pixels, NaN/Inf in the movie, or a movie too short for the lags
        (fewer than ``2 * max_lag + smooth_frames`` frames).
    ConfigError
        An option out of range.
    """
    import time

    import torch

    check_params(radius=radius, max_lag=max_lag, smooth_frames=smooth_frames, threshold=threshold,
                 threshold_start=threshold_start, threshold_up=tuple(threshold_up),
                 threshold_down=tuple(threshold_down), false_rate_band=tuple(false_rate_band),
                 n_background=n_background, border=border, precision=precision, device=device,
                 chunk_frames=chunk_frames)
    timings: dict[str, float] = {}
    clock = time.perf_counter()
    n_frames, height, width = movie_shape(movie)
    soma, processes = check_pair(soma, processes, (height, width))
    max_lag, smooth_frames = int(max_lag), int(smooth_frames)
    need = 2 * max_lag + smooth_frames
    if n_frames < need:
        raise InputError(getattr(movie, "path", None),
                         f"the movie has {n_frames} frames, too few for the CC analysis with max_lag={max_lag} "
                         f"and smooth_frames={smooth_frames}: at least {need} are needed.",
                         "analyse a longer recording, or lower max_lag.")
    dev = resolve_device(device)
    prec = _resolve_precision(precision, dev)
    common = dict(radius=float(radius), max_lag=max_lag, smooth_frames=smooth_frames, precision=prec,
                  cc_tolerance=bf16_error_bound(n_frames - smooth_frames + 1) if prec == "bfloat16" else 0.0,
                  device=dev, timings_s=timings)
    roi_label = np.maximum(soma, processes)  # no pixel is in both
    cell_ids = np.unique(roi_label[roi_label > 0]).astype(np.int64)
    if len(cell_ids) == 0:
        return _empty((height, width), **common)
    n_cells = len(cell_ids)
    centroids = cell_centroids(soma, processes, cell_ids)
    roi_mask = roi_label > 0

    # pixels each cell needs: its ROI pixels and its disc's candidates
    yy, xx = np.mgrid[0:height, 0:width]
    roi_flat = [np.flatnonzero(roi_label == cid) for cid in cell_ids]
    cand_flat = [np.flatnonzero((np.hypot(yy - cy, xx - cx) <= radius) & ~roi_mask) for cy, cx in centroids]
    bg_flat = (background_pixels(roi_mask, centroids, radius=radius, n_background=n_background, border=border,
                                 seed=seed) if threshold is None else np.zeros(0, np.int64))
    needed = np.unique(np.concatenate([*roi_flat, *cand_flat, bg_flat]))
    row_of = np.full(height * width, -1, np.int64)
    row_of[needed] = np.arange(len(needed))
    timings["setup"] = time.perf_counter() - clock

    clock = time.perf_counter()
    traces = normalise_traces(_gather(movie, needed, n_frames, chunk_frames), smooth_frames=smooth_frames)
    z = torch.from_numpy(traces).to(dev)
    del traces
    timings["read_normalise"] = time.perf_counter() - clock

    saved_precision = torch.get_float32_matmul_precision()
    torch.set_float32_matmul_precision("highest")  # TF32 on a GPU would blur the threshold decisions
    try:
        clock = time.perf_counter()
        choice = None
        if threshold is None:
            bg_rows = torch.from_numpy(row_of[bg_flat]).to(dev)
            # few background pixels: float32 costs little here (bfloat16 conversion would cost more)
            bg_cc = np.stack([lagged_max_correlation(z[torch.from_numpy(row_of[r]).to(dev)], z[bg_rows],
                                                     max_lag=max_lag, device=dev)[0] for r in roi_flat])
            choice = choose_threshold(bg_cc, threshold_start=threshold_start, threshold_up=tuple(threshold_up),
                                      threshold_down=tuple(threshold_down),
                                      false_rate_band=tuple(false_rate_band))
            threshold = choice.threshold
            log.info("CC threshold %.2f (false-correlation rate %.3f over %d background pixels%s)", threshold,
                     choice.false_rate, choice.n_background, "" if choice.in_band else ", outside the band")
        timings["threshold"] = time.perf_counter() - clock

        clock = time.perf_counter()
        cc = np.full((n_cells, height * width), np.nan, np.float32)
        exact = np.zeros((n_cells, height * width), bool)
        for i in range(n_cells):  # a loop over cells; each is a few large matrix products
            roi_t = z[torch.from_numpy(row_of[roi_flat[i]]).to(dev)]
            values, ok = lagged_max_correlation(roi_t, z[torch.from_numpy(row_of[cand_flat[i]]).to(dev)],
                                                max_lag=max_lag, device=dev, precision=prec,
                                                refine_near=threshold)
            cc[i, cand_flat[i]] = values
            exact[i, cand_flat[i]] = ok
            cc[i, roi_flat[i]] = 1.0  # a pixel's own trace at lag 0
            exact[i, roi_flat[i]] = True
        timings["domains"] = time.perf_counter() - clock

        # a pixel accepted by several cells goes to the highest CC value; screened values
        # that could change the winner are made exact first
        clock = time.perf_counter()
        accepted = np.nan_to_num(cc, nan=-np.inf) >= threshold
        accepted[:, roi_mask.ravel()] = False
        contested = np.flatnonzero(accepted.sum(axis=0) >= 2)
        if len(contested) and prec != "float32":
            for i in range(n_cells):
                redo = contested[accepted[i, contested] & ~exact[i, contested]]
                if len(redo):
                    roi_t = z[torch.from_numpy(row_of[roi_flat[i]]).to(dev)]
                    cc[i, redo] = lagged_max_correlation(roi_t, z[torch.from_numpy(row_of[redo]).to(dev)],
                                                         max_lag=max_lag, device=dev)[0]
        timings["overlaps"] = time.perf_counter() - clock
    finally:
        torch.set_float32_matmul_precision(saved_precision)

    score = np.where(accepted, np.nan_to_num(cc, nan=-np.inf), -np.inf)
    winner = np.argmax(score, axis=0)  # ties go to the lower id
    labels = np.where(accepted.any(axis=0), cell_ids[winner], 0).reshape(height, width)
    labels = np.where(roi_mask, roi_label, labels).astype(np.uint16)
    return Domains(domains=labels, cell_ids=cell_ids, cc=cc.reshape(n_cells, height, width),
                   threshold=float(threshold), threshold_choice=choice, centroids=centroids, **common)
