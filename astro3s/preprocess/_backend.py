"""Array back end of the pre-processing: FFTs and order statistics, CPU or GPU.

Measured on 2 CPU cores (550 x 256 x 256 float32): ``scipy.fft`` with
``workers`` is 1.3-3x faster than ``torch.fft`` on CPU, and ``np.partition``
(run on row blocks in threads; NumPy releases the GIL) is 2-5x faster than
``torch.kthvalue``. So the CPU path uses SciPy/NumPy; a CUDA device uses torch
for the same operations. Every function takes and returns NumPy arrays.
"""

from __future__ import annotations

import math
import os
from concurrent.futures import ThreadPoolExecutor
from functools import lru_cache

import numpy as np

from astro3s.utils.device import resolve_device

__all__ = ["irfft2", "quantile_flat", "quantile_lastaxis", "resolve_device", "rfft2", "transpose_2d"]


@lru_cache(maxsize=1)
def _workers() -> int:
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # pragma: no cover - non-Linux
        return max(1, os.cpu_count() or 1)


def rfft2(x: np.ndarray, *, device: str = "cpu") -> np.ndarray:
    """2-D real FFT over the last two axes; complex64 for float32 input."""
    if device == "cpu":
        import scipy.fft

        return scipy.fft.rfft2(x, workers=_workers())
    import torch

    return torch.fft.rfft2(torch.as_tensor(x, device=device)).cpu().numpy()


def irfft2(spectrum: np.ndarray, shape: tuple[int, int], *, device: str = "cpu",
           overwrite_x: bool = False) -> np.ndarray:
    """Inverse of :func:`rfft2` for images of ``shape`` (H, W); float32 for complex64 input.

    ``overwrite_x=True`` lets the CPU path use ``spectrum`` (complex, C-contiguous,
    writable) as its work space, destroying it.
    """
    if device == "cpu":
        import scipy.fft

        spectrum = np.asarray(spectrum)
        height, width = int(shape[0]), int(shape[1])
        if spectrum.ndim < 2 or spectrum.shape[-2] != height or spectrum.shape[-1] < width // 2 + 1:
            return scipy.fft.irfft2(spectrum, s=shape, workers=_workers())
        # Two 1-D passes, the complex one over y in place: scipy's irfft2 does the
        # same passes but into a fresh complex temporary, and is ~1.7x slower on
        # large blocks (page faults of the temporary). Same values: the 1/H and
        # 1/W scalings are exact for power-of-two sides, within rounding otherwise.
        inplace = (overwrite_x and spectrum.dtype in (np.complex64, np.complex128)
                   and spectrum.flags.c_contiguous and spectrum.flags.writeable)
        work = spectrum if inplace else np.array(
            spectrum, dtype=np.result_type(spectrum.dtype, np.complex64), order="C")
        work = scipy.fft.ifft(work, axis=-2, overwrite_x=True, workers=_workers())
        return scipy.fft.irfft(work, n=width, axis=-1, workers=_workers())
    import torch

    return torch.fft.irfft2(torch.as_tensor(spectrum, device=device), s=shape).cpu().numpy()


def quantile_lastaxis(x: np.ndarray, q: float, *, device: str = "cpu", overwrite_input: bool = False) -> np.ndarray:
    """Percentile ``q`` (0-100) along the last axis, NumPy's default (linear) definition.

    Parameters
    ----------
    x : ndarray, shape (..., n)
    q : float
        Percentile in [0, 100].
    overwrite_input : bool
        Allow reordering ``x`` along its last axis (partition in place, no copy);
        only when ``x`` is C-contiguous (else a copy is partitioned anyway).

    Returns
    -------
    out : ndarray of float32, shape (...)
        Equal to ``np.percentile(x, q, axis=-1)`` up to float32 rounding.
    """
    x = np.asarray(x)
    n = x.shape[-1]
    lead = x.shape[:-1]
    if n == 0:
        raise ValueError("quantile of an empty axis")
    pos = q / 100.0 * (n - 1)
    lo = min(int(math.floor(pos)), n - 1)
    hi = min(lo + 1, n - 1)
    frac = np.float32(pos - lo)
    inplace = overwrite_input and x.flags.c_contiguous and x.flags.writeable
    rows = x.reshape(-1, n)
    if device != "cpu":
        import torch

        t = torch.as_tensor(rows, device=device)
        vlo = t.kthvalue(lo + 1, dim=1).values
        vhi = t.kthvalue(hi + 1, dim=1).values if hi != lo else vlo
        return (vlo + float(frac) * (vhi - vlo)).float().cpu().numpy().reshape(lead)

    def one(block: np.ndarray) -> np.ndarray:
        # one kth only: partitioning on two kth values costs 2-3x more than one
        # kth plus a min over the part above it
        if inplace:
            block.partition(lo, axis=1)
            part = block
        else:
            part = np.partition(block, lo, axis=1)
        vlo = part[:, lo].astype(np.float32)
        if hi == lo or frac == 0:
            return vlo
        vhi = part[:, hi:].min(axis=1).astype(np.float32)
        return vlo + frac * (vhi - vlo)

    n_rows = rows.shape[0]
    workers = _workers()
    if workers == 1 or rows.size < 1 << 20 or n_rows < 2:
        return one(rows).reshape(lead)
    # np.partition releases the GIL: run row blocks side by side
    edges = np.linspace(0, n_rows, min(workers, n_rows) + 1).astype(int)
    with ThreadPoolExecutor(len(edges) - 1) as pool:
        parts = list(pool.map(one, [rows[a:b] for a, b in zip(edges[:-1], edges[1:])]))
    return np.concatenate(parts).reshape(lead)


def quantile_flat(x: np.ndarray, q: float) -> float:
    """Percentile ``q`` (0-100) of all values of ``x`` (linear definition), as a float.

    ``np.partition`` of one long vector (no sort), about 4x faster than ``np.percentile``.
    """
    flat = np.asarray(x).reshape(-1)
    n = flat.size
    pos = q / 100.0 * (n - 1)
    lo = min(int(math.floor(pos)), n - 1)
    part = np.partition(flat, lo)
    value = float(part[lo])
    if lo + 1 < n and pos > lo:
        value += (pos - lo) * (float(part[lo + 1:].min()) - value)
    return value


def transpose_2d(x: np.ndarray) -> np.ndarray:
    """Contiguous transpose of a 2-D float array (torch's copy runs on all cores)."""
    import torch

    return torch.from_numpy(np.ascontiguousarray(x) if not x.flags.c_contiguous else x).T.contiguous().numpy()
