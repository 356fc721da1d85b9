"""Stage 5: local activity filter around each soma candidate.

In a square around the candidate (ASTRA: 86 px), a pixel is kept when it is
above the crop's high percentile (90th, over all pixels and frames) in at
least ``th1 * T`` frames; a second pass repeats this on the pixels not kept,
with the percentile recomputed after removing the kept ones, and a lower
fraction ``th2``. The union of the two passes is the candidate's filter mask.

ASTRA removes the kept pixels by setting them to zero, which assumes
non-negative data; here they are set to the crop's minimum, which gives the
same result for non-negative data and also works for movies with negative
values (baseline-subtracted or offset recordings).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

from astro3s.preprocess._backend import count_true, select_pair

__all__ = ["candidate_boxes", "candidate_centres", "local_activity_filter", "local_activity_filters"]


def candidate_centres(labels: np.ndarray) -> np.ndarray:
    """Centroid of each label 1..N.

    Parameters
    ----------
    labels : ndarray of int, shape (H, W)

    Returns
    -------
    centres : ndarray of float64, shape (N, 2)
        ``(y, x)``; rows of absent labels are NaN.
    """
    labels = np.asarray(labels)
    n = int(labels.max()) if labels.size else 0
    flat = labels.ravel()
    yy, xx = np.indices(labels.shape)
    count = np.bincount(flat, minlength=n + 1)[1:].astype(np.float64)
    with np.errstate(invalid="ignore", divide="ignore"):
        cy = np.bincount(flat, weights=yy.ravel(), minlength=n + 1)[1:] / count
        cx = np.bincount(flat, weights=xx.ravel(), minlength=n + 1)[1:] / count
    return np.stack([cy, cx], axis=1)


def candidate_boxes(centres: np.ndarray, shape: tuple[int, int], box: int = 86) -> np.ndarray:
    """Square boxes of side ``box`` centred on ``centres``, moved inside the FOV.

    Parameters
    ----------
    centres : ndarray, shape (N, 2)
        ``(y, x)`` of each candidate.
    shape : (int, int)
        FOV ``(H, W)``; an axis shorter than ``box`` is taken whole.

    Returns
    -------
    boxes : ndarray of int32, shape (N, 4)
        ``(y0, x0, y1, x1)``, end exclusive: ``image[y0:y1, x0:x1]``.
    """
    centres = np.asarray(centres, dtype=np.float64).reshape(-1, 2)
    size = np.minimum(np.asarray(shape), box)
    # ASTRA truncates the centroid and starts the box half a side before it
    start = np.floor(centres).astype(np.int64) - size // 2
    start = np.clip(start, 0, np.asarray(shape) - size)
    return np.concatenate([start, start + size], axis=1).astype(np.int32)


def _round_half_up(x: float) -> int:
    return int(math.floor(x + 0.5))


def _percentile_of_sorted_merge(n_low: int, low_value: float, rest: np.ndarray, pos: float, *,
                                overwrite: bool = False) -> float:
    # percentile at fractional rank `pos` of (n_low copies of low_value) + rest, low_value <= rest;
    # overwrite=True lets the selection reorder `rest` (1-D, ours)
    lo = int(math.floor(pos))
    n = n_low + rest.size
    kth = following = None
    if lo >= n_low and rest.size:
        kth, following = select_pair(rest, lo - n_low, overwrite_input=overwrite)
    value = low_value if lo < n_low else kth
    if pos > lo and lo + 1 < n:
        if lo + 1 < n_low:
            upper = low_value
        elif kth is not None:
            upper = following
        else:  # lo is the last masked rank: the next one is the smallest of the rest
            upper = float(rest.min())
        value += (pos - lo) * (upper - value)
    return value


def local_activity_filters(crop_stack: np.ndarray, *, percentile: float = 90.0,
                           pairs: Sequence[tuple[float, float]] = ((0.25, 0.10),),
                           stride: int = 1, buffer: np.ndarray | None = None) -> np.ndarray:
    """Local activity filter masks of one crop for several ``(th1, th2)`` pairs.

    Parameters
    ----------
    crop_stack : ndarray, shape (T, h, w)
        The corrected movie inside the candidate's box.
    percentile : float
        Percentile (0-100) over all values of the crop.
    pairs : sequence of (float, float)
        ``(th1, th2)`` fractions of frames.
    stride : int
        The percentiles are taken on every ``stride``-th pixel along y and x
        (all frames); the counts use every pixel.
    buffer : ndarray of float32, shape (T, h, w), optional
        Where a non-contiguous ``crop_stack`` (a view of a larger movie) is
        copied; reused between calls, it spares touching fresh memory for
        every crop.

    Returns
    -------
    masks : ndarray of bool, shape (P, h, w)
    """
    # a crop of a larger movie is copied once: the passes below then run over contiguous memory
    # (on 86-px rows NumPy's per-row overhead makes each pass several times slower than the copy)
    if buffer is not None and not crop_stack.flags.c_contiguous and buffer.shape == crop_stack.shape:
        np.copyto(buffer, crop_stack)
        crop_stack = buffer
    crop_stack = np.ascontiguousarray(crop_stack, dtype=np.float32)
    n_frames = crop_stack.shape[0]
    stride = max(int(stride), 1)
    sample = np.ascontiguousarray(crop_stack[:, ::stride, ::stride])
    flat_sample = sample.reshape(n_frames, -1)
    minimum = float(sample.min())
    # percentiles depend on the multiset of values only; the sample is kept for the second pass, so it is
    # not reordered (the bracketed selection reads it; only its rare fallback partitions a copy)
    first = _percentile_of_sorted_merge(0, 0.0, sample.reshape(-1), percentile / 100.0 * (sample.size - 1),
                                        overwrite=False)
    count1 = _count_at_least(crop_stack, first)
    out = np.zeros((len(pairs),) + crop_stack.shape[1:], dtype=bool)
    for p, (th1, th2) in enumerate(pairs):  # a few threshold pairs
        keep1 = count1 >= _round_half_up(th1 * n_frames)
        # second pass: the kept pixels count as the crop's minimum value
        kept_sample = keep1[::stride, ::stride].reshape(-1)
        rest = flat_sample[:, ~kept_sample].reshape(-1)  # boolean indexing: a copy
        second = _percentile_of_sorted_merge(int(kept_sample.sum()) * n_frames, minimum, rest,
                                             percentile / 100.0 * (sample.size - 1), overwrite=True)
        del rest
        count2 = _count_at_least(crop_stack, second)
        keep2 = (count2 >= _round_half_up(th2 * n_frames)) & ~keep1
        out[p] = keep1 | keep2
    return out


def _count_at_least(stack: np.ndarray, threshold: float) -> np.ndarray:
    # frames in which each pixel reaches `threshold` (int64); the booleans summed as bytes (count_true)
    return count_true(stack >= threshold).astype(np.int64)


def local_activity_filter(crop_stack: np.ndarray, *, percentile: float = 90.0, th1: float = 0.25,
                          th2: float = 0.10, stride: int = 1) -> np.ndarray:
    """Local activity filter mask of one crop.

    Parameters
    ----------
    crop_stack : ndarray, shape (T, h, w)
    percentile : float
    th1, th2 : float
        Fractions of frames of the first and second pass.
    stride : int
        Pixel stride of the percentile estimate (see :func:`local_activity_filters`).

    Returns
    -------
    mask : ndarray of bool, shape (h, w)
    """
    return local_activity_filters(crop_stack, percentile=percentile, pairs=((th1, th2),), stride=stride)[0]
