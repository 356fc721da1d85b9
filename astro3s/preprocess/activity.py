"""Stage 3: activity map, how often each pixel is among the brightest of its neighbourhood.

The FOV is covered by overlapping square tiles (ASTRA: 96 px every 40 px).
In every frame the tile's high percentile (80th) is its local threshold; a
pixel scores one for each (frame, tile) in which it reaches the threshold,
and its total is divided by the number of tiles covering it. The map is in
frames: 0 (never above its neighbourhood) to ``T`` (always above).
Everything is a sum over frames, so chunks of frames accumulate exactly.
"""

from __future__ import annotations

from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor

import numpy as np

from astro3s.preprocess._backend import _workers, count_true, quantile_lastaxis

__all__ = ["activity_counts", "activity_map", "tile_coverage", "tile_starts", "tile_thresholds"]

# largest gathered tile array per step of tile_thresholds (float32 values)
_GATHER_LIMIT = 16 * 2**20


def tile_starts(n: int, size: int, step: int) -> np.ndarray:
    """First pixel of each tile along one axis of length ``n``.

    Tiles start every ``step`` px; one more tile is aligned with the far edge
    when the regular ones do not reach it (ASTRA's 256-px FOVs need none:
    0, 40, ..., 160). An axis shorter than ``size`` has one tile.

    Returns
    -------
    starts : ndarray of int64, shape (n_tiles,)
    """
    size = min(int(size), int(n))
    starts = np.arange(0, n - size + 1, int(step), dtype=np.int64)
    if starts[-1] + size < n:
        starts = np.append(starts, n - size)
    return starts


def _grid(shape: tuple[int, int], size: int, step: int) -> tuple[np.ndarray, np.ndarray, int, int]:
    height, width = shape
    return (tile_starts(height, size, step), tile_starts(width, size, step),
            min(size, height), min(size, width))


def tile_coverage(shape: tuple[int, int], *, size: int = 96, step: int = 40) -> np.ndarray:
    """Number of tiles covering each pixel; int32, shape (H, W), all >= 1."""
    ys, xs, sy, sx = _grid(shape, size, step)
    rows = np.zeros(shape[0], np.int32)
    cols = np.zeros(shape[1], np.int32)
    # coverage is separable: (tiles over row y) x (tiles over column x)
    np.add.at(rows, (ys[:, None] + np.arange(sy)).ravel(), 1)
    np.add.at(cols, (xs[:, None] + np.arange(sx)).ravel(), 1)
    return rows[:, None] * cols[None, :]


def tile_thresholds(frames: np.ndarray, q: float | Sequence[float], *, size: int = 96, step: int = 40,
                    stride: int = 1, device: str = "cpu") -> np.ndarray:
    """Per-frame, per-tile percentile(s).

    Parameters
    ----------
    frames : ndarray, shape (B, H, W)
    q : float or sequence of float
        Percentile(s) in [0, 100].
    size, step : int
        Tile side and spacing, px.
    stride : int
        Use every ``stride``-th pixel of a tile along y and x (1 = exact).

    Returns
    -------
    thresholds : ndarray of float32, shape (B, ny, nx), or (Q, B, ny, nx) for a sequence ``q``
    """
    frames = np.asarray(frames, dtype=np.float32)
    qs = np.atleast_1d(np.asarray(q, dtype=np.float64))
    n = frames.shape[0]
    ys, xs, sy, sx = _grid(frames.shape[1:], size, step)
    stride = max(int(stride), 1)
    # the samples of a tile are the pixels of the global grid (every stride-th
    # row and column) inside it: size // stride per axis from the first grid line
    ky, kx = max(sy // stride, 1), max(sx // stride, 1)
    sub = frames[:, ::stride, ::stride] if stride > 1 else frames
    gy = np.minimum(-(-ys // stride), sub.shape[1] - ky)
    gx = np.minimum(-(-xs // stride), sub.shape[2] - kx)
    # a view, tile positions first: gathering tiles then gives a C-contiguous (ny, nx, b, ky, kx)
    # copy whose rows are the tiles' samples (no second copy to lay them out as rows)
    windows = np.lib.stride_tricks.sliding_window_view(sub, (ky, kx), axis=(1, 2)).transpose(1, 2, 0, 3, 4)
    per_frame = len(ys) * len(xs) * ky * kx
    batch = max(1, _GATHER_LIMIT // per_frame)
    out = np.empty((len(qs), n, len(ys), len(xs)), np.float32)
    # frames in batches only to bound the gathered copy; each batch is vectorised
    for b0 in range(0, n, batch):
        rows = windows[gy[:, None], gx[None, :], b0:b0 + batch]  # (ny, nx, b, ky, kx) copy
        b = rows.shape[2]
        rows = rows.reshape(-1, ky * kx)
        for k, level in enumerate(qs):
            # the copy is ours: partition it in place (reordering keeps every quantile)
            values = quantile_lastaxis(rows, float(level), device=device, overwrite_input=True)
            out[k, b0:b0 + b] = values.reshape(len(ys), len(xs), b).transpose(2, 0, 1)
        del rows
    return out if np.ndim(q) else out[0]


def activity_counts(frames: np.ndarray, thresholds: np.ndarray, *, size: int = 96,
                    step: int = 40) -> np.ndarray:
    """Sum over tiles of the number of frames in which each pixel reaches its tile's threshold.

    Parameters
    ----------
    frames : ndarray, shape (B, H, W)
    thresholds : ndarray, shape (B, ny, nx)
        From :func:`tile_thresholds`.

    Returns
    -------
    counts : ndarray of int32, shape (H, W)
        Divide the sum over all chunks by :func:`tile_coverage` for the map.
    """
    frames = np.asarray(frames)
    ys, xs, sy, sx = _grid(frames.shape[1:], size, step)

    def rows_of_tiles(first: int, last: int) -> np.ndarray:
        counts = np.zeros(frames.shape[1:], np.int32)
        for i in range(first, last):  # loop over tiles; frames and pixels are vectorised
            y0 = ys[i]
            for j, x0 in enumerate(xs):
                above = frames[:, y0:y0 + sy, x0:x0 + sx] >= thresholds[:, i, j, None, None]
                counts[y0:y0 + sy, x0:x0 + sx] += count_true(above)  # byte sums for a block of frames
        return counts

    workers = min(_workers(), len(ys))
    if workers == 1 or frames.size < 1 << 22:
        return rows_of_tiles(0, len(ys))
    # NumPy releases the GIL in the comparisons and counts: rows of tiles side by side,
    # each into its own counts (tiles overlap), summed (integers: exact)
    edges = np.linspace(0, len(ys), workers + 1).astype(int)
    with ThreadPoolExecutor(workers) as pool:
        parts = list(pool.map(rows_of_tiles, edges[:-1], edges[1:]))
    return np.sum(parts, axis=0, dtype=np.int32)


def activity_map(frames: np.ndarray, *, percentile: float = 80.0, size: int = 96, step: int = 40,
                 stride: int = 1, device: str = "cpu") -> np.ndarray:
    """The whole stage on an in-memory movie.

    Parameters
    ----------
    frames : ndarray, shape (T, H, W)
        Motion-corrected frames.

    Returns
    -------
    activity : ndarray of float32, shape (H, W)
        Coverage-normalised count of supra-threshold frames, in [0, T].
    """
    thresholds = tile_thresholds(frames, percentile, size=size, step=step, stride=stride, device=device)
    counts = activity_counts(frames, thresholds, size=size, step=step)
    return (counts / tile_coverage(frames.shape[1:], size=size, step=step)).astype(np.float32)
