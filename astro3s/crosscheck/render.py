"""Render a :class:`~astro3s.crosscheck.scene.Scene` into a uint16 movie.

Per block of frames: the object (static image + components x time courses,
one matrix product per 64x64 canvas tile), darkened by the vessels; then the
lateral PSF and the frame's sub-pixel translation in one Fourier product on
the padded canvas; an optional bidirectional-scan offset of the odd rows;
bleaching; photon counting, detector gain, offset and read noise.
"""

from __future__ import annotations

import contextlib
import ctypes
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np

from astro3s.crosscheck.distractors import Patch
from astro3s.crosscheck.optics import kernel_otf

TILE = 64
BLOCK = 32


@dataclass
class _Tile:
    rows: slice
    cols: slice
    components: np.ndarray  # (K_t,) int
    maps: np.ndarray  # float32 (K_t, h * w)


def tile_matrices(patches: list[Patch], canvas: tuple[int, int], tile: int = TILE) -> list[_Tile]:
    """Cut the components into per-tile dense matrices (only components that reach a tile)."""
    H, W = canvas
    ny, nx = -(-H // tile), -(-W // tile)
    members: list[list[int]] = [[] for _ in range(ny * nx)]
    for k, p in enumerate(patches):
        h, w = p.data.shape
        ya, yb = max(0, p.y0), min(H, p.y0 + h)
        xa, xb = max(0, p.x0), min(W, p.x0 + w)
        if yb <= ya or xb <= xa:
            continue
        for ty in range(ya // tile, (yb - 1) // tile + 1):
            for tx in range(xa // tile, (xb - 1) // tile + 1):
                members[ty * nx + tx].append(k)
    tiles = []
    for idx, ks in enumerate(members):
        ty, tx = divmod(idx, nx)
        rows, cols = slice(ty * tile, min(H, (ty + 1) * tile)), slice(tx * tile, min(W, (tx + 1) * tile))
        th, tw = rows.stop - rows.start, cols.stop - cols.start
        maps = np.zeros((len(ks), th, tw), np.float32)
        for j, k in enumerate(ks):
            p = patches[k]
            h, w = p.data.shape
            ya, yb = max(rows.start, p.y0), min(rows.stop, p.y0 + h)
            xa, xb = max(cols.start, p.x0), min(cols.stop, p.x0 + w)
            if yb > ya and xb > xa:
                maps[j, ya - rows.start:yb - rows.start, xa - cols.start:xb - cols.start] = \
                    p.data[ya - p.y0:yb - p.y0, xa - p.x0:xb - p.x0]
        tiles.append(_Tile(rows, cols, np.asarray(ks, int), maps.reshape(len(ks), th * tw)))
    return tiles


def object_frames(static: np.ndarray, tiles: list[_Tile], traces: np.ndarray) -> np.ndarray:
    """Resting image plus components x dF/F for a block of frames.

    Parameters
    ----------
    static : ndarray of float32, shape (H, W)
    tiles : list of _Tile
    traces : ndarray of float32, shape (b, K)

    Returns
    -------
    frames : ndarray of float32, shape (b, H, W)
    """
    b = traces.shape[0]
    out = np.broadcast_to(static, (b,) + static.shape).copy()
    for tile in tiles:
        if tile.components.size == 0:
            continue
        th, tw = tile.rows.stop - tile.rows.start, tile.cols.stop - tile.cols.start
        out[:, tile.rows, tile.cols] += (traces[:, tile.components] @ tile.maps).reshape(b, th, tw)
    return out


def blur_and_shift(frames: np.ndarray, otf: np.ndarray, shifts: np.ndarray) -> np.ndarray:
    """Lateral PSF and sub-pixel translation ``shifts`` (b, 2) (dy, dx) of each frame, in Fourier space.

    Parameters
    ----------
    frames : ndarray of float32, shape (b, H, W)
    otf : ndarray of complex64, shape (H, W // 2 + 1)
    shifts : ndarray of float, shape (b, 2)

    Returns
    -------
    frames : ndarray of float32, shape (b, H, W)
    """
    import scipy.fft

    b, H, W = frames.shape
    ky = scipy.fft.fftfreq(H)[None, :]
    kx = scipy.fft.rfftfreq(W)[None, :]
    phase_y = np.exp(-2j * np.pi * ky * shifts[:, :1]).astype(np.complex64)  # (b, H)
    phase_x = np.exp(-2j * np.pi * kx * shifts[:, 1:]).astype(np.complex64)  # (b, W//2+1)
    spec = scipy.fft.rfft2(frames, workers=2)
    spec *= otf[None]
    spec *= phase_y[:, :, None]
    spec *= phase_x[:, None, :]
    return scipy.fft.irfft2(spec, s=(H, W), workers=2).astype(np.float32)


def line_offset(frames: np.ndarray, first_odd: int, offset: float) -> np.ndarray:
    """Shift every other row (starting at ``first_odd``) by ``offset`` px along x (bidirectional scan)."""
    import scipy.fft

    if offset == 0:
        return frames
    W = frames.shape[-1]
    rows = frames[:, first_odd::2, :]
    phase = np.exp(-2j * np.pi * scipy.fft.rfftfreq(W) * offset).astype(np.complex64)
    frames[:, first_odd::2, :] = scipy.fft.irfft(scipy.fft.rfft(rows, axis=-1) * phase, n=W, axis=-1)
    return frames


def detect(rng: np.random.Generator, photons: np.ndarray, gain: float, offset: float,
           read_noise: float) -> np.ndarray:
    """Detector counts from expected photon numbers.

    Counts are ``gain * Poisson(photons) + offset + N(0, read_noise)``, rounded and
    clipped to uint16.

    Parameters
    ----------
    rng : Generator
    photons : ndarray of float, shape (...)
        Expected photons per pixel and frame.
    gain, offset, read_noise : float
        Counts per photon, counts, counts.

    Returns
    -------
    counts : ndarray of uint16, shape of ``photons``
    """
    counts = rng.poisson(np.maximum(photons, 0.0)).astype(np.float32)
    counts *= np.float32(gain)
    noise = rng.standard_normal(counts.shape, dtype=np.float32)
    noise *= np.float32(read_noise)
    counts += noise
    counts += np.float32(offset + 0.5)  # + 0.5 then truncation: rounding
    np.clip(counts, 0, 65535, out=counts)
    return counts.astype(np.uint16)


def bleaching(n_frames: int, fraction: float) -> np.ndarray:
    """Exponential loss of ``fraction`` of the fluorescence over the movie -> float32 (T,)."""
    u = np.arange(n_frames) / max(n_frames - 1, 1)
    if fraction <= 0:
        return np.ones(n_frames, np.float32)
    return np.exp(np.log(1.0 - fraction) * u).astype(np.float32)


@contextlib.contextmanager
def one_blas_thread() -> Iterator[None]:
    """Run the block in one OpenBLAS thread (best effort; a no-op where OpenBLAS is not found).

    The per-tile products are small: on shared, busy cores several BLAS threads
    spin and wait far longer than the products take (measured: 0.1 s with one
    thread, 0.2-2.5 s with two, for the same 256 frames).
    """
    setter = getter = None
    try:
        with open("/proc/self/maps") as maps:
            paths = sorted({line.split()[-1] for line in maps if "openblas" in line.lower() and "/" in line})
        for path in paths:
            lib = ctypes.CDLL(path)
            for prefix, suffix in (("scipy_openblas", "64_"), ("openblas", "64_"), ("openblas", ""),
                                   ("scipy_openblas", "")):
                if hasattr(lib, f"{prefix}_set_num_threads{suffix}"):
                    setter = getattr(lib, f"{prefix}_set_num_threads{suffix}")
                    getter = getattr(lib, f"{prefix}_get_num_threads{suffix}")
                    break
            if setter is not None:
                break
    except OSError:
        setter = None
    if setter is None:
        yield
        return
    before = int(getter())
    setter(1)
    try:
        yield
    finally:
        setter(before)


def render_movie(scene, *, block: int = BLOCK) -> np.ndarray:
    """The movie of ``scene``.

    Parameters
    ----------
    scene : Scene
    block : int
        Frames rendered at a time.

    Returns
    -------
    movie : ndarray of uint16, shape (T, H, W)
    """
    p = scene.params
    rng = np.random.default_rng([p.seed, 7])
    tiles = tile_matrices(scene.patches, scene.canvas)
    otf = kernel_otf(scene.kernel, scene.canvas)
    bleach = bleaching(p.n_frames, p.bleach)
    movie = np.empty(p.shape, np.uint16)
    with one_blas_thread():
        _render_blocks(scene, movie, tiles, otf, bleach, rng, block)
    return movie


def _render_blocks(scene, movie: np.ndarray, tiles: list[_Tile], otf: np.ndarray, bleach: np.ndarray,
                   rng: np.random.Generator, block: int) -> None:
    """Fill ``movie`` (T, H, W) block by block."""
    p = scene.params
    m = scene.margin
    for start in range(0, p.n_frames, block):
        tb = slice(start, min(p.n_frames, start + block))
        frames = object_frames(scene.static, tiles, scene.traces[tb])
        if scene.vessel_depth is not None:
            frames *= 1.0 - scene.vessel_depth[None] * (1.0 + scene.vessel_trace[tb, None, None])
        frames = blur_and_shift(frames, otf, scene.shifts[tb])
        frames = line_offset(frames, m + 1, p.line_offset_px)
        fov = frames[:, m:m + p.height, m:m + p.width]
        photons = fov * (p.photons * bleach[tb, None, None])
        movie[tb] = detect(rng, photons, p.gain, p.offset, p.read_noise)
