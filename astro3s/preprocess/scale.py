"""Soma scale of a FOV from its summary image alone: blob scale selection.

The network and every area threshold of the pipeline assume somata of a given
size, and so does the enhancement: CLAHE equalises contrast in tiles of a fixed
number per FOV side, so a soma larger than about half a tile loses its uniform
brightness (its interior turns to equalised noise) and the network splits it.
Before any network pass, the somata's size can be read off the image with
Lindeberg's scale selection: the scale-normalised Laplacian of Gaussian
``-sigma**2 * LoG(image)`` of a bright disc of radius ``r`` peaks at
``sigma = r / sqrt(2)`` (Lindeberg 1998, Int. J. Comput. Vis. 30:79). The
strongest blobs of the image vote for the soma radius, each in proportion to
its response and its radius.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np

__all__ = ["BinnedFrames", "SomaBlobs", "bin_frames", "blob_responses", "blob_soma_area", "clahe_tiles_for_scale",
           "soma_blobs"]


def blob_responses(image: np.ndarray, sigmas) -> np.ndarray | None:
    """Scale-normalised Laplacian-of-Gaussian responses of a summary image, bright blobs positive.

    The image is first scaled so that its median is 0 and its 99.5th
    percentile 1, so responses compare across FOVs; ``-s**2 * LoG_s`` peaks
    at blobs of radius ``sqrt(2) * s`` (Lindeberg's scale selection).

    Parameters
    ----------
    image : ndarray of float, shape (H, W)
        Temporal median or mean image.
    sigmas : iterable of float
        Gaussian scales, px.

    Returns
    -------
    responses : ndarray of float, shape (S, H, W), or None
        None for a flat image (no span between the median and the 99.5th percentile).
    """
    from scipy import ndimage as ndi

    img = np.asarray(image, dtype=np.float32)
    floor = float(np.median(img))
    span = float(np.percentile(img, 99.5)) - floor
    if not np.isfinite(span) or span <= 0:
        return None
    img = (img - floor) / span
    return np.stack([-(s**2) * ndi.gaussian_laplace(img, s) for s in sigmas])


#: How far (soma radii from a blob's centre) the specks of that cell's own processes are ignored by
#: :func:`blob_soma_area` (3 until 2026-12-05 night: on held-out movies on ASTRA's D2 layouts, the
#: thick processes' specks beyond 3 radii outvoted the soma on 5 of 50 FOVs; experiments/results/heldout_ablation.md)
OWN_REACH = 4.0
#: A blob at least this many times wider than another and at least as strong, within :data:`OWN_REACH` of
#: its radii of it, also silences it in :func:`blob_soma_area` (``inf``: only the ``dominance`` rule). Since
#: 2026-12-06 (fourth session): the process junctions and varicosities of a lone high-zoom astrocyte
#: answer the LoG as strongly as its soma (the 2x-stronger condition never held), and 20-30 of them
#: outvoted it: 7 of 28 cross-check `zoom` FOVs (one 1700-4600-px soma each) were read at D1's scale and
#: not binned. A soma four times wider than a true soma within its reach is rarer than a cell's own
#: specks: screened on the median images of 809 movies of both held-out generators, ASTRA's layouts and
#: the presets (with WIDE_DOMINANCE_STRENGTH): 6 FOVs binned that were not and one binned 6x6 instead of
#: 2x2, as their truth says; none binned that should not be (experiments/results/heldout_ablation.md)
WIDE_DOMINANCE = 4.0
#: ... when that wider blob answers at least this fraction of the FOV's strongest blob (held-out
#: `mixed_192`: a faint 48-px-radius blotch, 0.38 of the strongest, silenced specks around true somata and
#: the FOV read 2x too wide; screened on the same 809 median images)
WIDE_DOMINANCE_STRENGTH = 0.5


@dataclass(frozen=True)
class SomaBlobs:
    """The blobs of a summary image that vote for its soma scale (:func:`soma_blobs`).

    Attributes
    ----------
    rows, cols : ndarray of int64, shape (n,)
        Blob centres, px.
    radii : ndarray of float64, shape (n,)
        Blob radii, ``sqrt(2) * sigma`` px.
    strength : ndarray of float32, shape (n,)
        Scale-normalised LoG response.
    """

    rows: np.ndarray
    cols: np.ndarray
    radii: np.ndarray
    strength: np.ndarray


def soma_blobs(image: np.ndarray, *, min_sigma: float = 1.2, step: float = 1.25, n_scales: int = 16,
               n_blobs: int = 30, min_response: float = 0.25, dominance: float = 2.0,
               own_reach: float | None = None, wide_dominance: float | None = None) -> SomaBlobs | None:
    """The blobs of a summary image that vote for its typical soma size.

    Parameters
    ----------
    image : ndarray of float, shape (H, W)
        Temporal median or mean image (bright somata on a darker background).
    min_sigma, step, n_scales : float, float, int
        The Gaussian scales tried: ``min_sigma * step ** k`` px for
        ``k < n_scales`` (1.2 to 34 px by default: somata of ~10 to ~7000 px),
        those up to a sixth of the FOV's shorter side.
    n_blobs : int
        How many of the strongest blobs vote.
    min_response : float
        Blobs weaker than this fraction of the strongest do not vote.
    dominance, own_reach : float
        A blob within ``own_reach`` radii of one at least ``dominance`` times
        wider and ``dominance`` times stronger does not vote: it is a speck of
        that cell's own processes, not a soma. (A FOV holding one large
        astrocyte, as most of ASTRA's D2 FOVs do, has a single soma blob
        against 20-30 specks along its branches, which outvoted it.)
        ``own_reach`` (None: :data:`OWN_REACH`, 4) covers a cell's processes as far as
        annotators trace them: 2-3 soma radii beyond the soma's edge (D2 2.97,
        ``experiments/measure_annotations.py``), 3-4 radii from its centre.
    wide_dominance : float or None
        A blob within ``own_reach`` radii of one at least ``wide_dominance``
        times wider and at least as strong, itself at least
        :data:`WIDE_DOMINANCE_STRENGTH` (0.5) times the strongest blob, does
        not vote either (a lone high-zoom cell's bright junctions answer as
        strongly as its soma; None: :data:`WIDE_DOMINANCE`, 4; ``inf``: only
        the rule above).

    Returns
    -------
    SomaBlobs or None
        The voting blobs, strongest first; None for a flat image.
    """
    from scipy import ndimage as ndi

    own_reach = OWN_REACH if own_reach is None else float(own_reach)
    img = np.asarray(image, dtype=np.float32)
    if img.ndim != 2 or img.size == 0:
        return None
    sigmas = min_sigma * step ** np.arange(n_scales)
    # a blob must fit the FOV several times over: at scales near the FOV's size the LoG answers to
    # the uneven background as a whole (a 88-px FOV of 100-px somata read as one 3000-px "soma")
    sigmas = sigmas[sigmas <= max(min(img.shape) / 6.0, min_sigma)]
    response = blob_responses(img, sigmas)
    if response is None:
        return None
    best, which = response.max(axis=0), response.argmax(axis=0)
    peaks = (best == ndi.maximum_filter(best, size=7)) & (best > 0)
    ys, xs = np.nonzero(peaks)
    if len(ys) == 0:
        return None
    values = best[ys, xs]
    order = np.argsort(values)[::-1][:n_blobs]
    order = order[values[order] >= min_response * values[order[0]]]
    radii = math.sqrt(2.0) * sigmas[which[ys[order], xs[order]]]
    strength = values[order]
    apart = np.hypot(ys[order][:, None] - ys[order][None, :], xs[order][:, None] - xs[order][None, :])
    within_reach = apart <= own_reach * radii[None, :]
    dominated = ((radii[None, :] >= dominance * radii[:, None]) & (strength[None, :] >= dominance * strength[:, None])
                 & within_reach).any(axis=1)
    wide_dominance = WIDE_DOMINANCE if wide_dominance is None else float(wide_dominance)
    if np.isfinite(wide_dominance):
        # only a clearly visible soma silences its specks: a large faint blob (a background blotch,
        # an out-of-focus cell) must not silence the small somata around it
        visible = strength >= WIDE_DOMINANCE_STRENGTH * strength.max()
        dominated |= ((radii[None, :] >= wide_dominance * radii[:, None]) & visible[None, :]
                      & (strength[None, :] >= strength[:, None]) & within_reach).any(axis=1)
    keep = order[~dominated]
    return SomaBlobs(rows=ys[keep].astype(np.int64), cols=xs[keep].astype(np.int64),
                     radii=np.asarray(radii[~dominated], np.float64), strength=values[keep])


def blob_soma_area(image: np.ndarray, *, blobs: SomaBlobs | None = None, **options: Any) -> float | None:
    """Typical soma area (px) of a FOV from the blobs of its summary image.

    Parameters
    ----------
    image : ndarray of float, shape (H, W)
        Temporal median or mean image (bright somata on a darker background).
    blobs : SomaBlobs, optional
        ``soma_blobs(image, **options)`` when the caller already has them (the search is not run again);
        None runs it.
    **options
        Those of :func:`soma_blobs` (scales, how many blobs vote, which are a cell's own process specks).

    Returns
    -------
    float or None
        ``pi * r**2`` for the median radius ``r`` of the voting blobs, each weighted
        by its response times its radius; None for a flat image.
    """
    if blobs is None:
        blobs = soma_blobs(image, **options)
    if blobs is None:
        return None
    # votes weighted by response x radius: a few large somata outweigh the many small
    # bright specks of the fine-process texture, which respond as strongly per blob, while
    # one large out-of-focus blob does not outvote several somata (as with area weights)
    weights = blobs.strength * blobs.radii
    by_radius = np.argsort(blobs.radii)
    cumulative = np.cumsum(weights[by_radius])
    radius = float(blobs.radii[by_radius][np.searchsorted(cumulative, cumulative[-1] / 2.0)])
    return math.pi * radius**2


def clahe_tiles_for_scale(tiles: tuple[int, int], scale: float, *, min_tiles: int = 2) -> tuple[int, int]:
    """CLAHE tile counts that keep the tile / soma size ratio when somata are ``scale`` times wider.

    Parameters
    ----------
    tiles : (int, int)
        Tiles per axis for somata of the parameters' size.
    scale : float
        Linear size of the FOV's somata relative to the parameters' (>= 1).
    min_tiles : int
        Fewest tiles per axis.

    Returns
    -------
    (int, int)
    """
    return tuple(max(int(min_tiles), int(round(t / max(float(scale), 1.0)))) for t in tiles)


def bin_frames(frames: np.ndarray, factor: int) -> np.ndarray:
    """Mean of ``factor x factor`` pixel blocks of each frame.

    Parameters
    ----------
    frames : ndarray, shape (..., H, W)
    factor : int
        Block side, px (>= 1). A side that ``factor`` does not divide is
        padded by repeating its last row / column.

    Returns
    -------
    ndarray of float32, shape (..., ceil(H / factor), ceil(W / factor))
    """
    frames = np.asarray(frames, dtype=np.float32)
    k = int(factor)
    if k < 1:
        raise ValueError(f"factor must be >= 1, got {factor}")
    if k == 1:
        return frames
    height, width = frames.shape[-2:]
    pad_y, pad_x = -height % k, -width % k
    if pad_y or pad_x:
        frames = np.pad(frames, [(0, 0)] * (frames.ndim - 2) + [(0, pad_y), (0, pad_x)], mode="edge")
    # a sum of the k * k strided sub-grids: ~7x faster than a mean over the reshaped block axes,
    # whose strided reductions dominated a 2x2-binned pass (550 x 256^2: 0.52 -> 0.08 s)
    binned = frames[..., 0::k, 0::k].copy()
    for dy in range(k):
        for dx in range(k):
            if dy or dx:
                binned += frames[..., dy::k, dx::k]
    binned *= np.float32(1.0 / (k * k))
    return binned


class BinnedFrames:
    """A lazy ``(T, ceil(H/k), ceil(W/k))`` view of a movie, each frame binned ``k x k`` on read.

    Wrap it in :class:`astro3s.io.Movie` (``Movie.from_array``) to pre-process
    a movie of large somata at the scale of the network's training data.

    Parameters
    ----------
    movie : Movie or CorrectedMovie
        Anything indexable by frame (int or slice) that returns ``(t, H, W)``.
    factor : int
        Bin side, px.
    """

    dtype = np.dtype(np.float32)

    def __init__(self, movie: object, factor: int):
        self.movie = movie
        self.factor = int(factor)
        n_frames, height, width = (int(s) for s in movie.shape)  # type: ignore[attr-defined]
        self.shape = (n_frames, -(-height // self.factor), -(-width // self.factor))

    def __getitem__(self, key: object) -> np.ndarray:
        parts = key if isinstance(key, tuple) else (key,)
        time_key, space = parts[0], tuple(parts[1:])
        # frames kept in memory (a corrected movie's cache) are binned straight from it: binning copies anyway
        source = getattr(self.movie, "cache", None)
        if not isinstance(source, np.ndarray):
            source = self.movie
        if isinstance(time_key, (int, np.integer)):
            return bin_frames(source[int(time_key)][None], self.factor)[0][space]  # type: ignore[index]
        frames = source[time_key]  # type: ignore[index]
        return bin_frames(frames, self.factor)[(slice(None), *space)]
