"""Array back end of the pre-processing: FFTs and order statistics, CPU or GPU.

Measured on 2 CPU cores (550 x 256 x 256 float32): ``scipy.fft`` with
``workers`` is 1.3-3x faster than ``torch.fft`` on CPU, and ``np.partition``
(run on row blocks in threads; NumPy releases the GIL) is 2-5x faster than
``torch.kthvalue``. So the CPU path uses SciPy/NumPy; a CUDA device uses torch
for the same operations. Every function takes and returns NumPy arrays.
Rechecked single-threaded on 16-frame blocks (2026-12-03): torch's MKL
``rfft2`` is faster (1.5-1.7 against 2.5-4 ms) and so is its real transform
along x, but its complex transform along y (strided) is 2.7x slower; a mix
(torch forward and along x, SciPy along y) gave no CPU gain on the whole
pre-processing of D1 (2.63 against 2.59 s, 6 alternations) and is not
bit-identical (MKL rounds differently: the enhanced image moved by up to 2.7 %
of its range, 161 activity-map pixels changed), so it is not used.

Code that runs independent blocks side by side (:func:`map_blocks`) makes the
calls inside each block single-threaded (:func:`single_threaded`): the work is
then split once, at the outermost level, and the elementwise NumPy steps
between the FFTs and partitions (single-threaded, memory-bound on whole
chunks) run on every core on blocks that stay in cache. The values do not
depend on the split: each FFT lane, partition row and elementwise result is
computed by the same operations whatever the number of threads.
"""

from __future__ import annotations

import itertools
import math
import os
import threading
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from functools import lru_cache
from typing import Any, TypeVar

import numpy as np

from astro3s.utils.device import resolve_device

__all__ = ["block_ranges", "cache_block_frames", "count_true", "irfft2", "irfft2_rows", "map_blocks", "quantile_flat",
           "quantile_lastaxis", "resolve_device", "rfft2", "select_pair", "single_threaded", "transpose_2d"]

_T = TypeVar("_T")
_state = threading.local()


@lru_cache(maxsize=1)
def _cores() -> int:
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # pragma: no cover - non-Linux
        return max(1, os.cpu_count() or 1)


def _workers() -> int:
    """Threads a back-end call may use: every core, or 1 inside :func:`single_threaded`."""
    return 1 if getattr(_state, "single", False) else _cores()


@contextmanager
def single_threaded() -> Iterator[None]:
    """Back-end calls made by this thread inside the block use one thread each."""
    previous = getattr(_state, "single", False)
    _state.single = True
    try:
        yield
    finally:
        _state.single = previous


# float32 bytes of the frames one thread works on at a time (see cache_block_frames)
CACHE_BLOCK_BYTES = 4 * 2**20
# fewest frames per block: the per-call overheads (per tile, per FFT) are paid once per block
MIN_BLOCK_FRAMES = 8


def cache_block_frames(frame_bytes: int, limit: int, device: str = "cpu") -> int:
    """Frames per block when ``limit`` frames are split by :func:`map_blocks`.

    On the CPU a block's float32 frames take about ``CACHE_BLOCK_BYTES``
    (4 MB), so that its spectra, correlations and corrected frames stay in
    cache from one step to the next (2 cores, 550 x 256 x 256 px: 16-frame
    blocks take the motion-correction, baseline and activity pass from 0.68 s
    to 0.39 s), but at least ``MIN_BLOCK_FRAMES`` frames: with 1024 x 1024 px
    frames, one-frame blocks would pay the per-tile overheads of the activity
    map once per frame. The number of blocks is a multiple of the threads, so
    that none waits for the last block. A GPU gets ``limit`` frames at once.

    Parameters
    ----------
    frame_bytes : int
        Bytes of one float32 frame.
    limit : int
        Frames to split (e.g. one chunk).
    device : str

    Returns
    -------
    int
        Frames per block, at least 1.
    """
    limit = max(int(limit), 1)
    if device != "cpu":
        return limit
    target = max(MIN_BLOCK_FRAMES, CACHE_BLOCK_BYTES // max(int(frame_bytes), 1))
    blocks = -(-limit // target)
    workers = _workers()
    blocks = -(-blocks // workers) * workers
    return max(1, -(-limit // blocks))


def block_ranges(n: int, block: int) -> list[tuple[int, int]]:
    """``[(0, block), (block, 2 block), ...]`` covering ``range(n)``; the last range may be shorter."""
    block = max(int(block), 1)
    return [(a, min(a + block, n)) for a in range(0, n, block)]


def map_blocks(fn: Callable[..., _T], items: Sequence[Any], *, pool: ThreadPoolExecutor | None = None) -> list[_T]:
    """``[fn(item) for item in items]``, side by side on the cores, each call single-threaded.

    One task per thread takes the items in turn from a shared counter (so
    uneven items balance out), rather than one task per item: a few Python
    objects per call however many items, which keeps the garbage collector's
    schedule (and its full collections) as it was.

    Parameters
    ----------
    fn : callable
        Works on one item; may write into disjoint parts of shared arrays.
    items : sequence
        Independent pieces of work (e.g. ranges of frames, candidates).
    pool : ThreadPoolExecutor, optional
        Reuse these threads (e.g. so that per-thread accumulators live across
        calls); by default a pool of ``min(cores, len(items))`` threads.

    Returns
    -------
    list
        The results in the order of ``items``; the first error raised by
        ``fn`` is raised here (the other threads stop taking items).
    """
    items = list(items)
    n = len(items)
    workers = min(_workers(), n)
    if workers <= 1:
        return [fn(item) for item in items]
    results: list[Any] = [None] * n
    counter = itertools.count()  # next() is atomic under the GIL
    failed = threading.Event()

    def drain() -> None:
        with single_threaded():
            while not failed.is_set():
                i = next(counter)
                if i >= n:
                    return
                try:
                    results[i] = fn(items[i])
                except BaseException:
                    failed.set()
                    raise

    if pool is not None:
        tasks = [pool.submit(drain) for _ in range(workers)]
        for task in tasks:
            task.result()
        return results
    with ThreadPoolExecutor(workers) as own:
        tasks = [own.submit(drain) for _ in range(workers)]
        for task in tasks:
            task.result()
    return results


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


def irfft2_rows(spectrum: np.ndarray, shape: tuple[int, int], rows: np.ndarray, *, device: str = "cpu",
                overwrite_x: bool = False) -> np.ndarray:
    """Rows ``rows`` of :func:`irfft2` ``(spectrum, shape)``, computed without the others.

    The inverse transform over y is needed in full, but the real inverse
    transforms over x only for the rows asked for (e.g. the rows of the
    shifts searched in a cross-correlation). Same values as those rows of
    :func:`irfft2`: each row's transform is the same computation.

    Parameters
    ----------
    spectrum : ndarray of complex, shape (..., H, W // 2 + 1)
    shape : (int, int)
        ``(H, W)``.
    rows : ndarray of int, shape (R,)
    overwrite_x : bool
        As in :func:`irfft2`.

    Returns
    -------
    out : ndarray of float32 (complex64 input), shape (..., R, W)
    """
    rows = np.asarray(rows, dtype=np.int64)
    spectrum = np.asarray(spectrum)
    height, width = int(shape[0]), int(shape[1])
    if (device != "cpu" or spectrum.ndim < 2 or spectrum.shape[-2] != height
            or spectrum.shape[-1] < width // 2 + 1):
        return irfft2(spectrum, shape, device=device, overwrite_x=overwrite_x)[..., rows, :]
    import scipy.fft

    inplace = (overwrite_x and spectrum.dtype in (np.complex64, np.complex128)
               and spectrum.flags.c_contiguous and spectrum.flags.writeable)
    work = spectrum if inplace else np.array(
        spectrum, dtype=np.result_type(spectrum.dtype, np.complex64), order="C")
    work = scipy.fft.ifft(work, axis=-2, overwrite_x=True, workers=_workers())
    return scipy.fft.irfft(work[..., rows, :], n=width, axis=-1, overwrite_x=True, workers=_workers())


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
        keys = _order_keys(block)
        if inplace:
            keys.partition(lo, axis=1)
            part = keys
        else:
            part = np.partition(keys, lo, axis=1)
        vlo = _from_keys(part[:, lo], block.dtype).astype(np.float32)
        if hi == lo or frac == 0:
            return vlo
        vhi = _from_keys(part[:, hi:].min(axis=1), block.dtype).astype(np.float32)
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


# below this many values select_pair partitions directly (the bracketing passes would not pay off)
_BRACKET_MIN = 1 << 15
# values sorted to bracket the rank
_BRACKET_SAMPLE = 4096


def select_pair(values: np.ndarray, k: int, *, overwrite_input: bool = False) -> tuple[float, float | None]:
    """The ``k``-th and ``(k + 1)``-th smallest of ``values`` (0-based), without sorting them.

    The same two numbers as ``part[k]`` and ``part[k + 1:].min()`` for
    ``part = np.partition(values, k)``: both depend on the multiset of values
    only. For large inputs the rank is first bracketed between two values
    taken from a sorted even subsample; the values in the bracket are then
    partitioned (a few percent of them), which costs a few compare passes
    instead of a partition of everything (575k values: 0.8 ms instead of
    3.8 ms). When the bracket misses the rank (adversarial orderings) the
    whole input is partitioned, so the result is always exact.

    Parameters
    ----------
    values : ndarray, 1-D
        Not NaN.
    k : int
        Rank, ``0 <= k < values.size``.
    overwrite_input : bool
        Allow reordering ``values`` (only used by the direct partition).

    Returns
    -------
    kth : float
    next : float or None
        None when ``k`` is the last rank.
    """
    values = np.asarray(values).reshape(-1)
    n = values.size
    k = int(k)
    if not 0 <= k < n:
        raise ValueError(f"rank {k} outside 0..{n - 1}")
    need = 2 if k + 1 < n else 1
    if n >= _BRACKET_MIN:
        sample = np.sort(values[::n // _BRACKET_SAMPLE])
        m = sample.size
        centre = k * (m - 1) / max(n - 1, 1)
        # +-4 standard deviations of the sample rank (binomial): the bracket misses rarely
        spread = 4.0 * math.sqrt(m * 0.25) + 2
        low = sample[max(int(centre - spread), 0)]
        high = sample[min(int(math.ceil(centre + spread)) + 1, m - 1)]
        below = int(np.count_nonzero(values < low))
        inside = values[(values >= low) & (values <= high)]
        if below <= k and k + need - 1 < below + inside.size:
            return _pair_by_partition(inside, k - below, overwrite=True)
    return _pair_by_partition(values, k, overwrite=overwrite_input)


def _pair_by_partition(values: np.ndarray, k: int, *, overwrite: bool) -> tuple[float, float | None]:
    keys = _order_keys(values)
    if overwrite and values.flags.c_contiguous and values.flags.writeable:
        keys.partition(k)
        part = keys
    else:
        part = np.partition(keys, k)
    kth = float(_from_keys(part[k:k + 1], values.dtype)[0])
    return kth, (float(_from_keys(part[k + 1:].min(keepdims=True), values.dtype)[0]) if k + 1 < part.size else None)


def _order_keys(values: np.ndarray) -> np.ndarray:
    """``values`` or, for non-negative float32, the same memory viewed as int32 (same order, faster selection).

    The bits of a non-negative IEEE float, read as a signed integer, increase
    with the float (-0.0 reads as the smallest int32, below +0.0, which it
    equals), so partitioning them selects the same values; NumPy partitions
    int32 about 1.1-1.3x faster than float32. Values with a negative one are
    returned unchanged (a min pass decides: one read, cheaper than the saving).
    """
    if values.dtype == np.float32 and values.size and values.flags.c_contiguous and float(values.min()) >= 0:
        return values.view(np.int32)
    return values


def _from_keys(keys: np.ndarray, dtype: np.dtype) -> np.ndarray:
    """Inverse of :func:`_order_keys` on selected keys (a view when they were float bits)."""
    return keys.view(np.float32) if dtype == np.float32 and keys.dtype == np.int32 else keys


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


def count_true(mask: np.ndarray) -> np.ndarray:
    """Number of True values along the first axis, in the smallest unsigned type that holds it.

    NumPy adds bytes 4-5x faster than it converts booleans to int32 and adds
    those (16 frames of 96 x 96 px: 7 against 33 us), so the booleans are
    summed as ``uint8`` when there are at most 255 of them per pixel
    (``uint16`` up to 65535). Exact: integer sums that cannot overflow.

    Parameters
    ----------
    mask : ndarray of bool, shape (n, ...)

    Returns
    -------
    counts : ndarray of uint8, uint16 or int64, shape (...)
    """
    mask = np.asarray(mask, dtype=bool)
    n = mask.shape[0]
    dtype = np.uint8 if n <= 0xFF else np.uint16 if n <= 0xFFFF else np.int64
    return mask.view(np.uint8).sum(axis=0, dtype=dtype)


def transpose_2d(x: np.ndarray) -> np.ndarray:
    """Contiguous transpose of a 2-D float array (torch's copy runs on all cores)."""
    import torch

    return torch.from_numpy(np.ascontiguousarray(x) if not x.flags.c_contiguous else x).T.contiguous().numpy()
