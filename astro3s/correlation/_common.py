"""Input checks and movie access shared by the trace and domain modules."""

from __future__ import annotations

import contextlib
import contextvars
from collections.abc import Iterator
from typing import Any

import numpy as np

from astro3s.errors import InputError
from astro3s.utils.device import resolve_device

__all__ = ["as_labels", "check_pair", "few_threads", "idle_cores", "iter_blocks", "movie_shape", "parallel",
           "resolve_device"]

# torch threads of the large products while :func:`few_threads` holds the others to one
_WIDE: contextvars.ContextVar[int | None] = contextvars.ContextVar("astro3s_correlation_threads", default=None)


def _set_threads(n: int) -> None:
    import torch

    if torch.get_num_threads() != n:
        torch.set_num_threads(n)


@contextlib.contextmanager
def few_threads() -> Iterator[None]:
    """Run torch on one thread inside, except in :func:`parallel` blocks (the caller's count).

    Many small torch calls on two threads each wait for both: on a machine
    shared with other work that wait, not the arithmetic, dominates. Only the
    large products are worth two threads. The caller's setting is restored.
    The count does not follow the machine's load (:func:`idle_cores`; on 2
    cores with one other busy process the domain search took twice as long
    on two threads as on one), because float32 products summed over another
    number of threads differ in the last bit, and a CC value at the threshold
    would then put a pixel in or out of a domain depending on the load: set
    ``torch.set_num_threads(1)`` on a shared machine instead.
    """
    import torch

    wide = torch.get_num_threads()
    token = _WIDE.set(wide)
    _set_threads(1)
    try:
        yield
    finally:
        _WIDE.reset(token)
        _set_threads(wide)


def idle_cores(samples: int = 5, pause_s: float = 0.002) -> int:
    """Cores that no other runnable task holds now (at least 1; the CPU count where unknown).

    For the benchmarks' reports (timings depend on it); the analysis itself does not adapt to it.

    The running-task count of ``/proc/loadavg`` (which includes the calling thread) sampled
    ``samples`` times ``pause_s`` apart; the median is taken, since other tasks come and go.
    """
    import os
    import statistics
    import time

    try:
        cores = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        cores = os.cpu_count() or 1
    running = []
    for _ in range(samples):  # a few reads of a small file
        try:
            with open("/proc/loadavg") as f:
                running.append(int(f.read().split()[3].split("/")[0]))
        except (OSError, ValueError, IndexError):
            return cores
        time.sleep(pause_s)
    others = max(0, int(statistics.median(running)) - 1)
    return max(1, min(cores, cores - others))


@contextlib.contextmanager
def parallel() -> Iterator[None]:
    """Inside :func:`few_threads`: the caller's thread count for a large product; else nothing."""
    wide = _WIDE.get()
    if wide is None or wide == 1:
        yield
        return
    _set_threads(wide)
    try:
        yield
    finally:
        _set_threads(1)


def movie_shape(movie: Any) -> tuple[int, int, int]:
    """``(T, H, W)`` of a Movie, CorrectedMovie or array; InputError when not 3-D."""
    shape = tuple(int(s) for s in getattr(movie, "shape", ()))
    if len(shape) != 3:
        raise InputError(getattr(movie, "path", None), f"a (T, H, W) movie is needed, got shape {shape}.",
                         "pass the movie time first, e.g. Movie.from_array(arr, fs=...).")
    return shape  # type: ignore[return-value]


def iter_blocks(movie: Any, chunk_frames: int) -> Iterator[tuple[int, np.ndarray]]:
    """Yield ``(t0, block)`` float32 blocks of shape (t, H, W) from any kind of movie.

    ``Movie`` and ``CorrectedMovie`` are read through their own ``chunks`` (lazy;
    NaN/Inf checked by ``Movie``); a plain array is wrapped in a ``Movie`` so that
    the same checks apply.
    """
    if not hasattr(movie, "chunks"):
        from astro3s.io import Movie

        movie = Movie.from_array(np.asarray(movie))
    for t0, block in movie.chunks(int(chunk_frames)):
        yield t0, np.asarray(block, dtype=np.float32)


def as_labels(labels: Any, name: str, shape: tuple[int, int]) -> np.ndarray:
    """Check a label image and return it as a C-contiguous integer array.

    Raises
    ------
    InputError
        When it is not 2-D, does not have the movie's frame shape, is not
        integer-valued, or has negative ids.
    """
    arr = np.asarray(labels)
    if arr.ndim != 2:
        raise InputError(None, f"the {name} label image must be 2-D (H, W), got shape {arr.shape}.")
    if arr.shape != tuple(shape):
        raise InputError(None, f"the {name} label image has shape {arr.shape}, but the movie frames are "
                         f"{tuple(shape)}.", "use labels made from this movie (same height and width).")
    if arr.dtype.kind == "b":
        arr = arr.astype(np.uint16)
    elif arr.dtype.kind == "f":
        if not (np.isfinite(arr).all() and np.array_equal(arr, np.round(arr))):
            raise InputError(None, f"the {name} label image must hold integer cell ids, got non-integer values.")
        arr = arr.astype(np.int64)
    elif arr.dtype.kind not in "iu":
        raise InputError(None, f"the {name} label image must be an integer array, got dtype {arr.dtype}.")
    if arr.size and arr.min() < 0:
        raise InputError(None, f"the {name} label image has negative ids; cell ids are >= 1, 0 is background.")
    return np.ascontiguousarray(arr)


def check_pair(soma: Any, processes: Any, shape: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
    """Validate the soma and process label images together (no pixel may be in both)."""
    soma = as_labels(soma, "soma", shape)
    processes = as_labels(processes, "processes", shape)
    both = (soma > 0) & (processes > 0)
    if both.any():
        y, x = np.argwhere(both)[0]
        raise InputError(None, f"{int(both.sum())} pixel(s) are both soma and process (first at y={y}, x={x}); "
                         "every pixel must be one or the other.",
                         "remove the soma pixels from the process labels.")
    return soma, processes
