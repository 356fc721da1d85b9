"""ROI definitions and dF/F traces of somata and processes.

Each cell gives one soma ROI (``Soma_###``, all its soma pixels) and one ROI
per 8-connected component of its process pixels (``Proc_###_##``, numbered in
raster order of the component's first pixel), as ASTRA does with
``cv2.connectedComponents`` (without its optional k-means split of long
processes). The raw fluorescence F of an ROI is the mean of its pixels,
accumulated over the movie in one pass of time chunks through a sparse
ROI x pixel matrix, so memory depends on the chunk size, not on the movie length.

Baseline F0: the ``f0_percentile`` (20, ASTRA's value) of F in a centred
running window of ``f0_window_s`` seconds (30 s), edges padded by the nearest
value. A low running percentile follows bleaching and slow drifts of the
neuropil while staying under the transients. When the frame rate is unknown
or the movie is shorter than one window, F0 is the per-ROI percentile of the
whole trace (a constant). ``dF/F = (F - F0) / F0``.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

import numpy as np

from astro3s.correlation._common import check_pair, movie_shape
from astro3s.correlation._store import one_pass
from astro3s.correlation.neuropil import neuropil_weights
from astro3s.correlation.params import CorrelationParams, check_params

__all__ = ["RoiMeans", "RoiTraces", "baseline_f0", "domain_traces", "extract_traces", "roi_table"]

log = logging.getLogger(__name__)
_D = CorrelationParams()


@dataclass(frozen=True)
class RoiTraces:
    """dF/F traces of the soma and process ROIs of a movie.

    Attributes
    ----------
    names : list of str, length R
        ``Soma_###`` then the ``Proc_###_##`` of each cell, cells by id.
    cell_ids : ndarray of int64, shape (R,)
        Cell id of each ROI.
    kinds : list of str, length R
        ``"soma"`` or ``"process"`` (``"domain"`` for :func:`domain_traces`).
    dff : ndarray of float32, shape (T, R)
        dF/F, a column per ROI.
    f0 : ndarray of float32, shape (T, R)
        Baseline F0 (constant in time when the global percentile was used).
    f : ndarray of float32, shape (T, R)
        Raw mean fluorescence.
    n_pixels : ndarray of int64, shape (R,)
        Pixels per ROI.
    fs : float or None
        Frame rate in Hz.
    f0_method : str
        ``"running"`` or ``"global"`` (see the module docstring).
    fneu : ndarray of float32, shape (T, R), or None
        Mean raw fluorescence of each ROI's neuropil surround
        (:mod:`astro3s.correlation.neuropil`); None when not measured
        (domain traces).
    """

    names: list[str]
    cell_ids: np.ndarray
    kinds: list[str]
    dff: np.ndarray
    f0: np.ndarray
    f: np.ndarray
    n_pixels: np.ndarray
    fs: float | None
    f0_method: str
    fneu: np.ndarray | None = None

    def __len__(self) -> int:
        return len(self.names)


def roi_table(soma: np.ndarray, processes: np.ndarray) -> tuple[list[str], np.ndarray, list[str], np.ndarray]:
    """ROIs of a pair of label images.

    Parameters
    ----------
    soma, processes : ndarray of int, shape (H, W)
        Checked label images with shared ids.

    Returns
    -------
    names : list of str, length R
    cell_ids : ndarray of int64, shape (R,)
    kinds : list of str, length R
    roi_index : ndarray of int64, shape (H, W)
        ROI number ``0..R-1`` of each pixel, ``-1`` outside every ROI.
    """
    from scipy import ndimage as ndi

    roi_index = np.full(soma.shape, -1, np.int64)
    names: list[str] = []
    ids: list[int] = []
    kinds: list[str] = []
    cells = np.union1d(np.unique(soma[soma > 0]), np.unique(processes[processes > 0]))
    boxes_s = ndi.find_objects(soma)
    boxes_p = ndi.find_objects(processes)
    eight = np.ones((3, 3), bool)
    for cid in cells:  # a loop over cells; the work inside is vectorised
        cid = int(cid)
        if cid <= len(boxes_s) and boxes_s[cid - 1] is not None:
            box = boxes_s[cid - 1]
            sel = soma[box] == cid
            roi_index[box][sel] = len(names)
            names.append(f"Soma_{cid:03d}")
            ids.append(cid)
            kinds.append("soma")
        if cid <= len(boxes_p) and boxes_p[cid - 1] is not None:
            box = boxes_p[cid - 1]
            comp, n = ndi.label(processes[box] == cid, structure=eight)
            sub = roi_index[box]
            sub[comp > 0] = len(names) + comp[comp > 0] - 1
            names.extend(f"Proc_{cid:03d}_{j:02d}" for j in range(1, n + 1))
            ids.extend([cid] * n)
            kinds.extend(["process"] * n)
    return names, np.asarray(ids, np.int64), kinds, roi_index


def baseline_f0(f: np.ndarray, *, fs: float | None, f0_percentile: float = _D.f0_percentile,
                f0_window_s: float = _D.f0_window_s) -> tuple[np.ndarray, str]:
    """Baseline F0 of raw traces (see the module docstring).

    Parameters
    ----------
    f : ndarray of float, shape (T, R)
    fs : float or None
        Frame rate in Hz.

    Returns
    -------
    f0 : ndarray of float32, shape (T, R)
    method : str
        ``"running"`` or ``"global"``.
    """
    from scipy import ndimage as ndi

    f = np.asarray(f, dtype=np.float64)
    n_frames = f.shape[0]
    window = None if fs is None else int(round(f0_window_s * fs)) | 1  # odd: centred
    if window is None or window >= n_frames or f.shape[1] == 0:
        f0 = np.broadcast_to(np.percentile(f, f0_percentile, axis=0) if n_frames else 0.0, f.shape)
        return np.array(f0, dtype=np.float32), "global"
    f0 = ndi.percentile_filter(f, f0_percentile, size=(window, 1), mode="nearest")
    return f0.astype(np.float32), "running"


def extract_traces(movie: Any, soma: Any, processes: Any, *, f0_percentile: float = _D.f0_percentile,
                   f0_window_s: float = _D.f0_window_s, chunk_frames: int = _D.chunk_frames,
                   fs: float | None = None, progress: bool | None = False) -> RoiTraces:
    """dF/F of every soma and process ROI, in one chunked pass over the movie.

    Parameters
    ----------
    movie : Movie, CorrectedMovie or ndarray, shape (T, H, W)
        Motion-corrected movie; read lazily in chunks of ``chunk_frames``.
    soma, processes : ndarray of int, shape (H, W)
        Label images with shared cell ids (0 background); no pixel in both.
    f0_percentile, f0_window_s, chunk_frames
        See :class:`CorrelationParams`.
    fs : float, optional
        Frame rate in Hz; default ``movie.fs``.
    progress : bool or None
        A bar over the frames read (None: on a terminal; see :mod:`astro3s.utils.progress`).

    Returns
    -------
    RoiTraces
        With no cells in the labels, a result with ``R = 0`` (empty columns),
        not an error.

    Raises
    ------
    InputError
        Labels of another shape than the frames, overlapping soma/process
        pixels, or NaN/Inf in the movie.
    """
    check_params(f0_percentile=f0_percentile, f0_window_s=f0_window_s, chunk_frames=chunk_frames)
    n_frames, height, width = movie_shape(movie)
    fs = getattr(movie, "fs", None) if fs is None else float(fs)
    means = RoiMeans(soma, processes, n_frames=n_frames, shape=(height, width))
    if means.n_roi:
        one_pass(movie, (), chunk_frames=chunk_frames, on_block=means.add, progress=progress,
                 desc="traces: pass over the movie")
    return means.finish(fs=fs, f0_percentile=f0_percentile, f0_window_s=f0_window_s)


class RoiMeans:
    """Mean raw fluorescence of every soma and process ROI and of its neuropil surround, block by block.

    The ROI means of a block are one sparse product ``(t, H*W) @ (H*W, R)``;
    the surround means (:func:`~astro3s.correlation.neuropil.neuropil_weights`) another.
    :func:`extract_traces` feeds it from its own pass over the movie;
    :func:`~astro3s.correlation.correlation_analysis` from the domain search's.

    Parameters
    ----------
    soma, processes : ndarray of int, shape (H, W)
        Label images with shared cell ids (0 background); no pixel in both.
    n_frames : int
    shape : (int, int)
        ``(H, W)`` of the frames.
    """

    def __init__(self, soma: Any, processes: Any, *, n_frames: int, shape: tuple[int, int]):
        import scipy.sparse as sp

        height, width = shape
        soma, processes = check_pair(soma, processes, (height, width))
        self.names, self.cell_ids, self.kinds, roi_index = roi_table(soma, processes)
        self.n_roi = len(self.names)
        pix = np.flatnonzero(roi_index >= 0)
        rois = roi_index.ravel()[pix]
        self.n_pixels = np.bincount(rois, minlength=self.n_roi).astype(np.int64)
        # the product runs over the ROI pixels only: gathered first (float32), so that the float64
        # product touches P columns, not H*W (the same sums, in the same order)
        self._pix = pix
        self._weights = sp.csc_matrix((1.0 / self.n_pixels[rois], (np.arange(len(pix)), rois)),
                                      shape=(len(pix), self.n_roi))
        self.f = np.empty((int(n_frames), self.n_roi), np.float64)
        self._np_pix, self._np_weights, _ = neuropil_weights(roi_index, self.n_roi)
        self.fneu = np.empty((int(n_frames), self.n_roi), np.float64)

    def add(self, t0: int, block: np.ndarray) -> None:
        """Frames ``t0 .. t0 + len(block)``, ``block`` of shape (t, H*W)."""
        if self.n_roi:
            self.f[t0:t0 + len(block)] = np.asarray(np.take(block, self._pix, axis=1) @ self._weights)
            self.fneu[t0:t0 + len(block)] = np.asarray(np.take(block, self._np_pix, axis=1) @ self._np_weights)

    def finish(self, *, fs: float | None, f0_percentile: float = _D.f0_percentile,
               f0_window_s: float = _D.f0_window_s) -> RoiTraces:
        """dF/F of every ROI once every frame was added."""
        f, names = self.f, self.names
        if not self.n_roi:
            log.info("no cells in the labels: returning empty traces")
        f0, method = baseline_f0(f, fs=fs, f0_percentile=f0_percentile, f0_window_s=f0_window_s)
        bad = f0 <= 0
        if bad.any():
            # a dark-subtracted movie can have a baseline at or below zero, where dF/F has no meaning
            log.warning("baseline F0 <= 0 in %d ROI(s) (%s); their dF/F is set to NaN there. "
                        "Is the movie offset-subtracted?", int(bad.any(axis=0).sum()),
                        ", ".join(np.asarray(names)[bad.any(axis=0)][:5]))
        with np.errstate(divide="ignore", invalid="ignore"):
            dff = np.where(bad, np.nan, (f - f0) / np.where(bad, 1.0, f0))
        return RoiTraces(names=names, cell_ids=self.cell_ids, kinds=self.kinds, dff=dff.astype(np.float32), f0=f0,
                         f=f.astype(np.float32), n_pixels=self.n_pixels, fs=fs, f0_method=method,
                         fneu=self.fneu.astype(np.float32))


def domain_traces(movie: Any, domains: Any, soma: Any, processes: Any, *, fs: float | None = None,
                  f0_percentile: float = _D.f0_percentile, f0_window_s: float = _D.f0_window_s,
                  chunk_frames: int = _D.chunk_frames) -> RoiTraces:
    """dF/F of each cell's CC domain beyond its own soma and processes (``Domain_###``), in one pass.

    The soma and process ROIs have their own traces; the domain's is the mean
    of the pixels the cross-correlation added (its territory), where events of
    the cell's fine processes show. A cell whose domain is only its soma and
    processes has no domain trace. Baseline and dF/F as in :func:`extract_traces`.

    Parameters
    ----------
    movie : Movie, CorrectedMovie or ndarray, shape (T, H, W)
    domains, soma, processes : ndarray of int, shape (H, W)
        Label images with shared cell ids.
    fs, f0_percentile, f0_window_s, chunk_frames
        As in :func:`extract_traces`.

    Returns
    -------
    RoiTraces
        ``kinds`` all ``"domain"``; ``R = 0`` when no domain reaches beyond its cell.
    """
    import scipy.sparse as sp

    n_frames, height, width = movie_shape(movie)
    fs = getattr(movie, "fs", None) if fs is None else float(fs)
    dom = np.asarray(domains, np.int64)
    ring = np.where((dom > 0) & (np.asarray(soma) != dom) & (np.asarray(processes) != dom), dom, 0)
    ids = np.unique(ring[ring > 0])
    pix = np.flatnonzero(ring)
    col = np.searchsorted(ids, ring.ravel()[pix])
    n_pixels = np.bincount(col, minlength=len(ids)).astype(np.int64)
    f = np.empty((int(n_frames), len(ids)), np.float64)
    if len(ids):
        weights = sp.csc_matrix((1.0 / n_pixels[col], (np.arange(len(pix)), col)), shape=(len(pix), len(ids)))

        def add(t0: int, block: np.ndarray) -> None:  # the domain pixels gathered first, as in RoiMeans
            f[t0:t0 + len(block)] = np.asarray(np.take(block, pix, axis=1) @ weights)

        one_pass(movie, (), chunk_frames=chunk_frames, on_block=add)
    f0, method = baseline_f0(f, fs=fs, f0_percentile=f0_percentile, f0_window_s=f0_window_s)
    with np.errstate(divide="ignore", invalid="ignore"):
        dff = np.where(f0 > 0, (f - f0) / np.where(f0 > 0, f0, 1.0), np.nan)
    return RoiTraces(names=[f"Domain_{int(c):03d}" for c in ids], cell_ids=ids.astype(np.int64),
                     kinds=["domain"] * len(ids), dff=dff.astype(np.float32), f0=f0, f=f.astype(np.float32),
                     n_pixels=n_pixels, fs=fs, f0_method=method)
