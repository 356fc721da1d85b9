"""Traces and the cross-correlation (CC) domain analysis of ASTRA.

- :func:`extract_traces` -> :class:`RoiTraces`: dF/F of every soma and process
  ROI, one chunked pass over a lazy movie.
- :func:`find_domains` -> :class:`Domains`: per-cell CC domains, CC maps and
  the per-FOV automatic threshold (:func:`choose_threshold`).
- :func:`correlation_analysis`: both, from one :class:`CorrelationParams`.
- :func:`plot_domains`, :func:`plot_traces`: figures.

Importing this package does no work; torch, SciPy and matplotlib are imported
inside the functions that need them.
"""

from __future__ import annotations

from typing import Any

from astro3s.correlation.domains import (Domains, ThresholdChoice, background_pixels, bf16_error_bound,
                                         cell_centroids, choose_threshold, false_rate, find_domains,
                                         lagged_max_correlation, normalise_traces, slow_trend)
from astro3s.correlation.figures import plot_domains, plot_traces
from astro3s.correlation.params import CorrelationParams
from astro3s.correlation.traces import RoiMeans, RoiTraces, baseline_f0, domain_traces, extract_traces, roi_table

__all__ = [
    "CorrelationParams",
    "Domains",
    "RoiMeans",
    "RoiTraces",
    "ThresholdChoice",
    "background_pixels",
    "baseline_f0",
    "bf16_error_bound",
    "cell_centroids",
    "choose_threshold",
    "correlation_analysis",
    "domain_traces",
    "extract_traces",
    "false_rate",
    "find_domains",
    "lagged_max_correlation",
    "normalise_traces",
    "plot_domains",
    "plot_traces",
    "roi_table",
    "slow_trend",
]


def correlation_analysis(movie: Any, soma: Any, processes: Any, params: CorrelationParams | None = None, *,
                         progress: bool | None = False) -> tuple[RoiTraces, Domains]:
    """Traces and CC domains of one FOV.

    Parameters
    ----------
    movie : Movie, CorrectedMovie or ndarray, shape (T, H, W)
        Motion-corrected movie.
    soma, processes : ndarray of int, shape (H, W)
        Label images with shared cell ids.
    params : CorrelationParams, optional
        Options (default: the published values).
    progress : bool or None
        Bars over the pass over the movie and the cells (None: on a terminal;
        see :func:`find_domains`).

    Returns
    -------
    traces : RoiTraces
    domains : Domains
    """
    from astro3s.correlation._common import movie_shape

    params = params or CorrelationParams()
    n_frames, height, width = movie_shape(movie)
    # the ROI means ride on the domain search's pass over the movie (a motion-corrected movie is
    # shifted on every read, so a second pass costs as much as the first)
    means = RoiMeans(soma, processes, n_frames=n_frames, shape=(height, width))
    domains = find_domains(movie, soma, processes, params=params, on_block=means.add, progress=progress)
    return means.finish(fs=getattr(movie, "fs", None), f0_percentile=params.f0_percentile,
                        f0_window_s=params.f0_window_s), domains
