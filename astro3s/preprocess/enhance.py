"""Stage 2: spatial enhancement, one sharpened summary image per FOV.

ASTRA's recipe: subtract each frame's low percentile (removes the global
brightness drift of the frame), take the temporal median, clip at 0 (here
after raising a smooth illumination fall-off below 0, so that a vignetted
FOV's dim corners keep their cells: :func:`lift_dim_background`), rescale
to the 16-bit range, apply CLAHE (OpenCV semantics, clip 0.5 on
8 x 8 tiles) and a 3 x 3 sharpening kernel. The result here is float32 in
[0, 1] (the 16-bit range divided by 65535). Optionally the median image is
smoothed first (``PreprocessParams.enhance_sigma``, 0 by default): CLAHE on
65536 levels ranks each tile's pixels, so shot noise becomes texture as
bright as a thin process.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

import numpy as np

from astro3s.preprocess._backend import block_ranges, map_blocks, quantile_lastaxis, transpose_2d

if TYPE_CHECKING:
    from astro3s.preprocess.params import PreprocessParams

__all__ = ["clahe", "clahe_tiles_for_shape", "enhance", "enhance_image", "enhance_network_image", "fill_pixels",
           "frame_percentiles", "isolated_spikes",
           "lift_dim_background", "sharpen", "temporal_median", "temporal_percentiles"]

# bytes of one block of temporal_median (about the size of a core's L2 cache)
_MEDIAN_BLOCK_BYTES = 2**20
# CLAHE evaluates its tables sparsely when they have this many times more cells than the image pixels
_SPARSE_CLAHE_RATIO = 32
_SHARPEN = np.array([[-1, -1, -1], [-1, 9, -1], [-1, -1, -1]], dtype=np.float32)


def frame_percentiles(frames: np.ndarray, q: float, *, stride: int = 1, device: str = "cpu") -> np.ndarray:
    """Percentile ``q`` of each frame.

    Parameters
    ----------
    frames : ndarray, shape (B, H, W)
    q : float
        Percentile in [0, 100].
    stride : int
        Use every ``stride``-th pixel along y and x (1 = exact over all pixels).

    Returns
    -------
    values : ndarray of float32, shape (B,)
    """
    frames = np.asarray(frames)
    rows = frames[:, ::stride, ::stride].reshape(len(frames), -1)
    # a strided subsample is a copy already: partition it in place
    return quantile_lastaxis(rows, q, device=device, overwrite_input=not np.may_share_memory(rows, frames))


def lift_dim_background(median_image: np.ndarray, *, tile: int = 32, percentile: float = 5.0,
                        min_blocks: int = 16) -> np.ndarray:
    """Raise a smooth illumination fall-off whose floor lies below zero to zero, then clip at zero.

    ASTRA subtracts each frame's global 10th percentile and clips at 0, so a
    part of the FOV dimmer than most of it (the corners of a vignetted field,
    a dim side under uneven illumination) goes black in the median image and
    every image made from it. Here the ``percentile``-th value of each
    ``tile`` x ``tile`` block is the block's floor, and a quadratic surface
    fitted to the floors (robustly: blocks below the surface by more than 1.5
    robust SDs or above it by more than 2.5 are left out, up to five refits;
    a plane when the quadratic curves upwards anywhere, which illumination
    falling off outwards does not) is the illumination's floor. Where it
    dips below zero by more than 3 robust SDs of the blocks' scatter about
    it, the image is raised by its negative part, so the structure there
    survives the clip. Only a smooth, significant fall-off is lifted:
    dark structures of a block or two (a vessel's lumen, the background of
    a sparse binned FOV) stay black as ASTRA makes them (lifting every
    negative block floor turned a binned ``d2_like`` FOV's background into
    texture the network read as cells: ``d2_like`` detection F1 0.83 ->
    0.59, 7 -> 12 cells for 5). An evenly lit image
    comes out as ``max(median_image, 0)``, ASTRA's clipped median (88 of
    the 91 plain held-out, preset and development movies; the other three,
    bright cells filling blocks, are raised on 4-8 % of their pixels).

    Parameters
    ----------
    median_image : ndarray, shape (H, W)
        Temporal median of the baseline-subtracted frames, not clipped.
    tile : int
        Block side, px.
    percentile : float
        Percentile of each block taken as its floor.
    min_blocks : int
        Fewest blocks a surface is fitted to (fewer: ASTRA's clip alone).

    Returns
    -------
    lifted : ndarray of float32, shape (H, W), non-negative
    """
    image = np.asarray(median_image, np.float32)
    height, width = image.shape
    rows, cols = height // tile, width // tile
    if rows * cols < min_blocks:
        return np.maximum(image, 0)
    # whole blocks, centred in the image (the margins left over are under 1 block)
    y0, x0 = (height - rows * tile) // 2, (width - cols * tile) // 2
    blocks = image[y0:y0 + rows * tile, x0:x0 + cols * tile].reshape(rows, tile, cols, tile)
    floor = np.percentile(blocks.transpose(0, 2, 1, 3).reshape(rows * cols, tile * tile), percentile, axis=-1)
    if float(floor.min()) >= 0:
        return np.maximum(image, 0)

    # the blocks' centres in coordinates scaled to [-1, 1]; terms 1, y, x, y^2, y x, x^2
    centre_y = 2 * (y0 + (np.arange(rows) + 0.5) * tile - 0.5) / max(height - 1, 1) - 1
    centre_x = 2 * (x0 + (np.arange(cols) + 0.5) * tile - 0.5) / max(width - 1, 1) - 1
    by, bx = (v.ravel() for v in np.meshgrid(centre_y, centre_x, indexing="ij"))
    terms = np.column_stack([np.ones_like(by), by, bx, by * by, by * bx, bx * bx])
    keep = np.ones(rows * cols, bool)
    for _ in range(5):  # robust: blocks holding a vessel or a giant soma are not illumination
        coef = np.linalg.lstsq(terms[keep], floor[keep], rcond=None)[0]
        residual = floor - terms @ coef
        spread = 1.4826 * float(np.median(np.abs(residual[keep] - np.median(residual[keep])))) + 1e-6
        # dark structures (a vessel's lumen) are trimmed harder than bright ones (a giant soma)
        new_keep = (residual >= -1.5 * spread) & (residual <= 2.5 * spread)
        if new_keep.sum() < min_blocks or np.array_equal(new_keep, keep):
            break
        keep = new_keep
    # illumination falls off outwards: a surface curved upwards somewhere (a dark band across the middle,
    # held-out vessels) is a structure, not illumination; then only its plane is taken
    hessian = np.array([[2 * coef[3], coef[4]], [coef[4], 2 * coef[5]]])
    if float(np.linalg.eigvalsh(hessian).max()) > 0:
        coef = np.concatenate([np.linalg.lstsq(terms[keep, :3], floor[keep], rcond=None)[0], np.zeros(3)])
    # evaluated by broadcasting one row and one column (no H x W x 6 array of terms on large FOVs)
    yy = 2 * np.arange(height, dtype=np.float64)[:, None] / max(height - 1, 1) - 1
    xx = 2 * np.arange(width, dtype=np.float64)[None, :] / max(width - 1, 1) - 1
    surface = (coef[0] + coef[1] * yy + coef[3] * yy * yy) + (coef[2] + coef[4] * yy + coef[5] * xx) * xx
    # a dip below zero within the blocks' own scatter is no fall-off (a sparse binned FOV's dark background)
    if float(surface.min()) >= -3 * spread:
        return np.maximum(image, 0)
    lifted = image - np.minimum(surface, 0).astype(np.float32)
    return np.maximum(lifted, 0, out=lifted)


def temporal_median(frames: np.ndarray, *, baselines: np.ndarray | None = None, block_pixels: int | None = None,
                    device: str = "cpu") -> np.ndarray:
    """Per-pixel median over time (NumPy's definition: mean of the two middle values).

    Parameters
    ----------
    frames : ndarray, shape (T, H, W)
    baselines : ndarray, shape (T,), optional
        Per-frame values to subtract first (not clipped: the median of
        ``frames - baselines[:, None, None]`` without that full-size copy;
        clip the median, :func:`lift_dim_background`).
    block_pixels : int, optional
        Pixels handled at once (bounds the temporary transposed copy); by
        default about 1 MB of values on the CPU, 65536 pixels on a GPU.

    Returns
    -------
    median : ndarray of float32, shape (H, W)
    """
    return temporal_percentiles(frames, (50.0,), baselines=baselines, block_pixels=block_pixels, device=device)[0]


def temporal_percentiles(frames: np.ndarray, percentiles: Sequence[float], *, baselines: np.ndarray | None = None,
                         block_pixels: int | None = None, device: str = "cpu") -> np.ndarray:
    """Per-pixel percentiles over time (NumPy's linear definition), all from one pass over the frames.

    Each block of pixels is copied out and transposed once, then selected
    for every percentile in turn while it is in cache: a second percentile
    costs a selection, not another pass (see :func:`temporal_median`, the
    50th alone).

    Parameters
    ----------
    frames : ndarray, shape (T, H, W)
    percentiles : sequence of float
        Percentiles in [0, 100].
    baselines : ndarray, shape (T,), optional
        Per-frame values subtracted first, as in :func:`temporal_median`.
    block_pixels : int, optional
        Pixels handled at once, as in :func:`temporal_median`.

    Returns
    -------
    images : ndarray of float32, shape (P, H, W)
        One image per percentile, in the order given.
    """
    frames = np.asarray(frames)
    levels = [float(q) for q in percentiles]
    n, height, width = frames.shape
    out = np.empty((len(levels), height * width), np.float32)
    if device != "cpu":
        if baselines is not None:
            frames = np.asarray(frames, np.float32) - np.asarray(baselines, np.float32)[:, None, None]
        flat = frames.reshape(n, -1)
        block_pixels = block_pixels or 65536
        # selection along a contiguous axis is several times faster: transpose block-wise
        for a in range(0, flat.shape[1], block_pixels):
            block = transpose_2d(flat[:, a:a + block_pixels])
            for row, q in zip(out, levels):
                row[a:a + block.shape[0]] = quantile_lastaxis(block, q, device=device, overwrite_input=True)
        return out.reshape(len(levels), height, width)
    flat = frames.reshape(n, -1)
    offsets = None if baselines is None else np.asarray(baselines, np.float32)[:, None]

    itemsize = 4 if offsets is not None else frames.itemsize
    block_pixels = block_pixels or max(64, _MEDIAN_BLOCK_BYTES // (itemsize * max(n, 1)))
    scratch = threading.local()  # each thread's block buffers, reused (fresh memory is slow to touch)

    def one(span: tuple[int, int]) -> None:
        # selection along a contiguous axis is several times faster, so each block of pixels is copied
        # out (frames x pixels, the baseline subtracted there), transposed while in cache and partitioned;
        # blocks run side by side (2 cores, 550 x 256 x 256: 0.14 s instead of 0.21 s for a whole-movie
        # transpose and the selection). Into reused buffers: new ones per block made single-threaded
        # D4 (311 x 512 x 512) take 1.1-1.4 s instead of 0.5-0.6 s
        a, b = span
        if getattr(scratch, "rows", None) is None:
            dtype = np.float32 if offsets is not None else frames.dtype
            scratch.block = np.empty((n, block_pixels), dtype)
            scratch.rows = np.empty((block_pixels, n), dtype)
        block, rows = scratch.block[:, :b - a], scratch.rows[:b - a]
        if offsets is None:
            np.copyto(block, flat[:, a:b])
        else:  # the baseline subtracted on the block (in float32), not clipped
            np.subtract(flat[:, a:b] if flat.dtype == np.float32 else flat[:, a:b].astype(np.float32), offsets,
                        out=block)
        np.copyto(rows, block.T)
        for row, q in zip(out, levels):  # a partition leaves every value's multiset in place: the next is exact
            row[a:b] = quantile_lastaxis(rows, q, overwrite_input=True)

    map_blocks(one, block_ranges(flat.shape[1], block_pixels))
    return out.reshape(len(levels), height, width)


def clahe(image: np.ndarray, *, clip_limit: float = 0.5, tiles: tuple[int, int] = (8, 8),
          nbins: int = 65536) -> np.ndarray:
    """Contrast-limited adaptive histogram equalisation with OpenCV's semantics.

    Matches ``cv2.createCLAHE(clipLimit, tileGridSize).apply`` on a 16-bit
    image when ``nbins = 65536``: the histogram of each tile is clipped at
    ``max(clip_limit * tile_area / nbins, 1)`` counts, the excess spread over
    all bins, and the per-tile mappings are interpolated bilinearly between
    tile centres. The image is padded by reflection to a multiple of the grid.

    When the image has far fewer pixels than the dense per-tile tables have
    cells (``tiles`` x ``nbins``: 32 MB of counts and 16 MB of mappings, for
    256 x 256 px against 8 x 8 x 65536), each tile's mapping is evaluated
    where it is needed, at the grey levels of the pixels that interpolate it,
    from the tile's sorted distinct levels (:func:`_tile_cdf`): no fresh
    48 MB, and 24 instead of 28 ms. Larger images use the dense tables
    (:func:`_clahe_dense`; at 512 x 512 px the searches cost 190 against
    74 ms). Same integers, same float32 steps: both give the same bits.

    Parameters
    ----------
    image : ndarray, shape (H, W)
        Values in [0, 1] (quantised to ``nbins`` grey levels).
    clip_limit : float
        OpenCV ``clipLimit`` (0 disables clipping).
    tiles : (int, int)
        Tile grid (rows, columns).
    nbins : int
        Grey levels.

    Returns
    -------
    out : ndarray of float32, shape (H, W), values in [0, 1]
    """
    height, width = np.shape(image)
    pixels = (height + (-height) % int(tiles[0])) * (width + (-width) % int(tiles[1]))
    if pixels * _SPARSE_CLAHE_RATIO > int(tiles[0]) * int(tiles[1]) * nbins:
        return _clahe_dense(image, clip_limit=clip_limit, tiles=tiles, nbins=nbins)
    return _clahe_sparse(image, clip_limit=clip_limit, tiles=tiles, nbins=nbins)


def _clahe_sparse(image: np.ndarray, *, clip_limit: float, tiles: tuple[int, int], nbins: int) -> np.ndarray:
    """:func:`clahe` from each tile's sorted distinct levels (:func:`_tile_cdf`): no dense tables."""
    levels, padded, (ty, tx), (tile_h, tile_w) = _clahe_levels(image, tiles, nbins)
    height, width = levels.shape
    area = tile_h * tile_w
    tile_id = (np.arange(padded.shape[0]) // tile_h)[:, None] * tx + (np.arange(padded.shape[1]) // tile_w)[None]
    cdf = _tile_cdf(tile_id.ravel(), padded.ravel(), ty * tx, area, clip_limit, nbins)
    scale = (nbins - 1) / area

    def lut(tile_y: np.ndarray, tile_x: np.ndarray) -> np.ndarray:
        # the dense table's entry lut[tile_y, tile_x, levels]: the same float32 steps on the same integers
        value = cdf(tile_y[:, None] * tx + tile_x[None, :], levels).astype(np.float32)
        np.multiply(value, scale, out=value)
        np.rint(value, out=value)
        return np.minimum(value, nbins - 1, out=value)

    y1, y2, wy = _clahe_coords(height, tile_h, ty)
    x1, x2, wx = _clahe_coords(width, tile_w, tx)
    top = lut(y1, x1) * (1 - wx)[None] + lut(y1, x2) * wx[None]
    bottom = lut(y2, x1) * (1 - wx)[None] + lut(y2, x2) * wx[None]
    out = top * (1 - wy)[:, None] + bottom * wy[:, None]
    return (np.rint(out) / (nbins - 1)).astype(np.float32)


def _clahe_levels(image: np.ndarray, tiles: tuple[int, int],
                  nbins: int) -> tuple[np.ndarray, np.ndarray, tuple[int, int], tuple[int, int]]:
    """Grey levels of ``image`` (int64, (H, W)), reflected to a multiple of the grid, the grid and the tile size."""
    image = np.asarray(image, dtype=np.float32)
    height, width = image.shape
    ty, tx = int(tiles[0]), int(tiles[1])
    levels = np.clip(image, 0, 1) * (nbins - 1)
    levels = levels.astype(np.int64)  # truncation, like a cast to uint16
    pad_y, pad_x = (-height) % ty, (-width) % tx
    padded = np.pad(levels, ((0, pad_y), (0, pad_x)), mode="reflect") if (pad_y or pad_x) else levels
    return levels, padded, (ty, tx), (padded.shape[0] // ty, padded.shape[1] // tx)


def _clahe_coords(n: int, tile: int, count: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Both tiles interpolated along one axis (int64, (n,)) and the second's float32 weight."""
    pos = np.arange(n, dtype=np.float32) / tile - 0.5
    first = np.floor(pos).astype(np.int64)
    weight = (pos - first).astype(np.float32)
    return np.maximum(first, 0), np.minimum(first + 1, count - 1), weight


def _tile_cdf(tile: np.ndarray, level: np.ndarray, n_tiles: int, area: int, clip_limit: float,
              nbins: int) -> Callable[[np.ndarray, np.ndarray], np.ndarray]:
    """The clipped and redistributed cumulative histogram of each tile, as a function of (tile, level).

    Parameters
    ----------
    tile, level : ndarray of int64, shape (N,)
        Tile and grey level of every pixel of the padded image.
    n_tiles, area : int
        Tiles, and pixels per tile.
    clip_limit, nbins
        As in :func:`clahe`.

    Returns
    -------
    cdf : callable
        ``cdf(t, v)`` (int arrays of one shape) is the dense table's
        ``cumsum(hist[t])[v]``; int64.
    """
    keys, counts = np.unique(tile * nbins + level, return_counts=True)  # sorted by tile, then level
    owner = keys // nbins
    if clip_limit > 0:
        limit = max(int(clip_limit * area / nbins), 1)
        clipped = np.minimum(counts, limit)
        excess = area - np.bincount(owner, weights=clipped, minlength=n_tiles).astype(np.int64)
    else:
        clipped = counts
        excess = np.zeros(n_tiles, np.int64)
    # OpenCV adds excess // nbins to every bin, then one more to bins k * step for k < residual
    batch = excess // nbins
    residual = excess - batch * nbins
    step = np.maximum(nbins // np.maximum(residual, 1), 1)
    running = np.cumsum(clipped)
    before = np.zeros(n_tiles + 1, np.int64)  # clipped counts of the tiles before each tile
    np.cumsum(np.bincount(owner, weights=clipped, minlength=n_tiles).astype(np.int64), out=before[1:])

    def cdf(t: np.ndarray, v: np.ndarray) -> np.ndarray:
        last = np.searchsorted(keys, t * nbins + v, side="right")  # distinct levels <= v of tile t (and earlier)
        below = np.where(last > 0, running[np.maximum(last - 1, 0)], 0) - before[t]
        return below + batch[t] * (v + 1) + np.minimum(residual[t], v // step[t] + 1)

    return cdf


def _clahe_dense(image: np.ndarray, *, clip_limit: float = 0.5, tiles: tuple[int, int] = (8, 8),
                 nbins: int = 65536) -> np.ndarray:
    """:func:`clahe` with dense per-tile histograms and tables (large images; the reference of the sparse path)."""
    levels, padded, (ty, tx), (tile_h, tile_w) = _clahe_levels(image, tiles, nbins)
    height, width = levels.shape
    area = tile_h * tile_w
    # histogram of every tile in one bincount
    tile_id = (np.arange(padded.shape[0]) // tile_h)[:, None] * tx + (np.arange(padded.shape[1]) // tile_w)[None]
    hist = np.bincount((tile_id * nbins + padded).ravel(), minlength=ty * tx * nbins).reshape(ty * tx, nbins)
    if clip_limit > 0:
        limit = max(int(clip_limit * area / nbins), 1)
        # in place: the histograms are ty * tx * nbins counts (4M for OpenCV's 16-bit default)
        total = hist.sum(axis=1)
        np.minimum(hist, limit, out=hist)
        excess = total - hist.sum(axis=1)
        batch = excess // nbins
        residual = excess - batch * nbins
        hist += batch[:, None]
        # OpenCV adds the remaining counts one per bin, every `step` bins from bin 0: bins
        # k * step for k < residual (all below nbins), indexed directly
        step = np.maximum(nbins // np.maximum(residual, 1), 1)
        tile = np.repeat(np.arange(len(residual)), residual)
        k = np.arange(tile.size) - np.repeat(np.cumsum(residual) - residual, residual)
        hist[tile, k * step[tile]] += 1
    lut = np.cumsum(hist, axis=1, out=hist).astype(np.float32)
    np.multiply(lut, (nbins - 1) / area, out=lut)
    np.rint(lut, out=lut)
    lut = np.minimum(lut, nbins - 1, out=lut).reshape(ty, tx, nbins)
    y1, y2, wy = _clahe_coords(height, tile_h, ty)
    x1, x2, wx = _clahe_coords(width, tile_w, tx)
    val = levels
    top = lut[y1[:, None], x1[None], val] * (1 - wx)[None] + lut[y1[:, None], x2[None], val] * wx[None]
    bottom = lut[y2[:, None], x1[None], val] * (1 - wx)[None] + lut[y2[:, None], x2[None], val] * wx[None]
    out = top * (1 - wy)[:, None] + bottom * wy[:, None]
    return (np.rint(out) / (nbins - 1)).astype(np.float32)


def sharpen(image: np.ndarray) -> np.ndarray:
    """3 x 3 sharpening (centre 9, neighbours -1), reflected borders, clipped to [0, 1].

    Parameters
    ----------
    image : ndarray, shape (H, W), values in [0, 1]

    Returns
    -------
    out : ndarray of float32, shape (H, W)
    """
    from scipy import ndimage

    # 'mirror' is OpenCV's default BORDER_REFLECT_101
    out = ndimage.convolve(np.asarray(image, np.float32), _SHARPEN, mode="mirror")
    return np.clip(out, 0, 1).astype(np.float32)


def image_top(image: np.ndarray, *, isolated_ratio: float = 3.0) -> float:
    """The value an image is scaled by before CLAHE: its maximum, unless that is an isolated pixel.

    ASTRA divides the median image by its maximum before CLAHE quantises it
    to 65536 levels. A few isolated pixels far above everything else (hot
    pixels of a camera, a stuck detector channel) then squeeze the cells into
    a few hundred levels (held-out movies with 40 hot pixels: detection recall
    0.99 -> 0.88). When the maximum exceeds ``isolated_ratio`` times the
    brightest value a 3 x 3 median filter keeps (the brightest structure
    wider than a pixel), that value is used instead and brighter pixels clip
    at 1. The PSF spreads every point of an optical image over several
    pixels: the ratio is 1.0-1.26 on the 52 held-out and 24 development
    movies' median images and 1.87 on astroCaST's real (denoised dF) crop,
    against ~100 with hot pixels; those images keep ASTRA's scaling exactly.

    Parameters
    ----------
    image : ndarray, shape (H, W)
    isolated_ratio : float

    Returns
    -------
    float
    """
    top = float(np.max(image))
    if top <= 0:
        return top
    compact = _compact_top(image)
    return compact if 0 < compact * isolated_ratio < top else top


def _compact_top(image: np.ndarray) -> float:
    """The brightest value a 3 x 3 median filter keeps: the brightest structure wider than a pixel."""
    from scipy import ndimage

    return float(ndimage.median_filter(np.asarray(image, np.float32), size=3, mode="mirror").max())


def isolated_spikes(image: np.ndarray, *, ratio: float = 3.0) -> np.ndarray:
    """Single pixels far brighter than any structure of the image: a detector's hot or stuck pixels.

    The PSF spreads every point of an optical image over several pixels, so
    the brightest tissue survives a 3 x 3 median filter; a pixel more than
    ``ratio`` times the brightest value that filter keeps is not tissue (the
    rule of :func:`image_top`, whose ratio of the maximum to that value is
    1.0-1.26 on clean median images, 1.87 on astroCaST's real crop and ~100
    with pixels stuck at a 16-bit detector's top). Left in, such pixels are the
    brightest points of the image: held-out `giant_0` with 40 of them gave no
    cell. Hot pixels less bright than the brightest cell are not found.

    Parameters
    ----------
    image : ndarray, shape (H, W)
    ratio : float

    Returns
    -------
    spikes : ndarray of bool, shape (H, W)
    """
    image = np.asarray(image, np.float32)
    compact = _compact_top(image)
    if not compact > 0:
        return np.zeros(image.shape, bool)
    return image > ratio * compact


def fill_pixels(image: np.ndarray, pixels: np.ndarray) -> np.ndarray:
    """``image`` with the ``pixels`` (bool mask) replaced by the median of their 3 x 3 neighbourhood.

    The neighbourhood's other flagged pixels are left out of the median (a
    pixel whose eight neighbours are all flagged keeps its value).

    Returns
    -------
    ndarray of ``image``'s dtype, shape (H, W)
        A copy (``image`` itself when no pixel is flagged).
    """
    pixels = np.asarray(pixels, bool)
    if not pixels.any():
        return image
    height, width = image.shape
    ys, xs = np.nonzero(pixels)
    offsets = np.array([(dy, dx) for dy in (-1, 0, 1) for dx in (-1, 0, 1) if dy or dx])
    ny = np.clip(ys[:, None] + offsets[None, :, 0], 0, height - 1)
    nx = np.clip(xs[:, None] + offsets[None, :, 1], 0, width - 1)
    values = np.where(pixels[ny, nx], np.nan, image[ny, nx].astype(np.float64))  # (K, 8)
    out = np.array(image, copy=True)
    usable = ~np.all(np.isnan(values), axis=1)
    out[ys[usable], xs[usable]] = np.nanmedian(values[usable], axis=1).astype(out.dtype)
    return out


def enhance_image(median_image: np.ndarray, *, clip_limit: float = 0.5, tiles: tuple[int, int] = (8, 8),
                  nbins: int = 65536, min_tile: int = 0, smooth_sigma: float = 0.0) -> np.ndarray:
    """Rescale, CLAHE and sharpen a temporal-median image (optionally smoothed first).

    Parameters
    ----------
    median_image : ndarray, shape (H, W)
        Temporal median of the baseline-subtracted frames (non-negative).
    clip_limit, tiles, nbins
        CLAHE's (:func:`clahe`).
    min_tile : int
        Smallest tile side, px (0: ``tiles`` as given); see :func:`clahe_tiles_for_shape`.
    smooth_sigma : float
        Gaussian scale, px, of a smoothing before CLAHE (0: none, ASTRA's recipe).

    Returns
    -------
    enhanced : ndarray of float32, shape (H, W), values in [0, 1]
    """
    median_image = np.asarray(median_image, np.float32)
    if smooth_sigma > 0:
        from scipy import ndimage

        median_image = ndimage.gaussian_filter(median_image, smooth_sigma, mode="mirror")
    top = image_top(median_image)
    scaled = np.minimum(median_image / top, 1.0) if top > 0 else np.zeros_like(median_image)
    tiles = clahe_tiles_for_shape(tiles, median_image.shape, min_tile=min_tile)
    return sharpen(clahe(scaled, clip_limit=clip_limit, tiles=tiles, nbins=nbins))


def enhance_network_image(median_image: np.ndarray, correlation_image: np.ndarray | None,
                          params: PreprocessParams) -> np.ndarray:
    """The image the network sees: :func:`enhance_image` of the median image with ``params``' settings.

    With ``params.activity_weight > 0`` and a correlation image, the median
    image is first brightened where the movie is active
    (:func:`~astro3s.preprocess.correlation_image.activity_brightened`).

    Returns
    -------
    enhanced : ndarray of float32, shape (H, W), values in [0, 1]
    """
    from astro3s.preprocess.correlation_image import activity_brightened

    image = median_image
    if correlation_image is not None:
        image = activity_brightened(median_image, correlation_image, weight=params.activity_weight,
                                    threshold=params.activity_threshold)
    return enhance_image(image, clip_limit=params.clahe_clip_limit, tiles=params.clahe_tiles,
                         nbins=params.clahe_bins, min_tile=params.clahe_min_tile, smooth_sigma=params.enhance_sigma)


def clahe_tiles_for_shape(tiles: tuple[int, int], shape: tuple[int, int], *, min_tile: int = 0) -> tuple[int, int]:
    """CLAHE tile counts with tiles at least ``min_tile`` px wide (to the nearest count).

    CLAHE with OpenCV's clip on 65536 bins is close to a rank transform of
    each tile. A tile little wider than a soma is ranked mostly within
    background noise or within one soma, both equalised into black-and-white
    texture. ASTRA's 8 x 8 tiles on its 256-px D1 FOVs are 32 px: on a
    100-px FOV that grid would make 12-px tiles, so it gets 3 x 3 instead.
    Only ever fewer tiles than ``tiles``.

    Parameters
    ----------
    tiles : (int, int)
        Tiles per axis asked for.
    shape : (int, int)
        Image shape ``(H, W)``.
    min_tile : int
        Smallest tile side, px (0: ``tiles`` unchanged).

    Returns
    -------
    (int, int)
    """
    if min_tile <= 0:
        return (int(tiles[0]), int(tiles[1]))
    return tuple(max(1, min(int(t), int(round(side / min_tile)))) for t, side in zip(tiles, shape, strict=True))


def enhance(frames: np.ndarray, *, baseline_percentile: float = 10.0, stride: int = 1,
            clip_limit: float = 0.5, tiles: tuple[int, int] = (8, 8), nbins: int = 65536, min_tile: int = 0,
            smooth_sigma: float = 0.0, lift_background: bool = True, device: str = "cpu") -> np.ndarray:
    """The whole stage on an in-memory movie.

    Parameters
    ----------
    frames : ndarray, shape (T, H, W)
        Motion-corrected frames.
    lift_background : bool
        Raise a smooth illumination fall-off below 0 before the clip
        (:func:`lift_dim_background`); False: ASTRA's clip alone.

    Returns
    -------
    enhanced : ndarray of float32, shape (H, W), values in [0, 1]
    """
    baselines = frame_percentiles(frames, baseline_percentile, stride=stride, device=device)
    median = temporal_median(frames, baselines=baselines, device=device)
    median = lift_dim_background(median) if lift_background else np.maximum(median, 0)
    return enhance_image(median, clip_limit=clip_limit, tiles=tiles, nbins=nbins, min_tile=min_tile,
                         smooth_sigma=smooth_sigma)
