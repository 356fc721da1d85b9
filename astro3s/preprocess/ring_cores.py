"""Somata of a membrane-targeted indicator: bright rims around a dim core, filled in.

With the indicator on the plasma membrane (Lck-GCaMP: Shigetomi et al. 2013,
J Gen Physiol 141:633; Srinivasan et al. 2015, Nat Neurosci 18:708) an optical
section through a soma shows its membrane as a bright ring and its cytosol as a
dimmer core. The network and the rules around it know somata brightest inside
(a cytosolic indicator): they read such a ring as processes and miss the cell.
:func:`fill_ring_cores` raises every dim core that a bright, closed rim encloses
to the rim's level, so that the soma looks like a cytosolic one to every later
stage (the enhanced image, the candidates, the soma refinement).

The cores are the regional minima of the (lightly smoothed) median image that
do not reach the FOV's edge, found by grey-level hole filling (morphological
reconstruction by erosion, Soille 2003, "Morphological Image Analysis", ch. 6):
the fill raises each enclosed dip to the lowest level of the ring around it.
Only dips that are deep relative to that level, small enough for a soma and
enclosed by a rim that is bright relative to the FOV's brightest structure are
kept, so the dim gaps of a cytosolic FOV's neuropil and the dark spaces between
processes are left alone (their enclosing level is the neuropil's). A kept
core's whole basin is then raised to the median brightness of the rim around
it: a core raised only to the ring's lowest level stays a dim disc inside a
brighter rim, which the network still reads as processes.
"""

from __future__ import annotations

import numpy as np

__all__ = ["CORE_FILL", "MIN_CORE_DEPTH", "MIN_RIM_CONTRAST", "RING_FILLS", "fill_ring_cores"]


#: ``fill`` values of :func:`fill_ring_cores`
RING_FILLS = ("rim", "saddle")
#: inner and outer distance (px) from a core's region of the annulus its rim must outshine (``min_rim_contrast``)
OUTER_ANNULUS_PX = (4, 8)
#: the defaults of :func:`fill_ring_cores`'s ``min_depth``, ``fill`` and ``min_rim_contrast``, and so of
#: ``PreprocessParams.ring_core_depth``, ``.ring_core_fill`` and ``.ring_core_contrast`` (the evidence: the
#: parameters' descriptions below)
MIN_CORE_DEPTH = 0.1
CORE_FILL = "rim"
MIN_RIM_CONTRAST = 1.1


def fill_ring_cores(median_image: np.ndarray, *, min_depth: float = MIN_CORE_DEPTH, min_rim: float = 0.3,
                    min_area: int = 12, max_area: int = 5000, smooth_sigma: float = 1.0,
                    fill: str = CORE_FILL, basin_depth: float = 0.05, rim_px: int = 2,
                    min_rim_contrast: float = MIN_RIM_CONTRAST) -> tuple[np.ndarray, np.ndarray]:
    """Fill the dim cores that bright closed rims enclose (membrane-labelled somata).

    Parameters
    ----------
    median_image : ndarray, shape (H, W)
        The movie's median image after the clip at 0 (non-negative).
    min_depth : float
        A core pixel lies at most ``1 - min_depth`` times its rim's level (the
        lowest level of the ring around it). 0.1: on the membrane
        development movies (the cross-check's 3-D membrane shells, whose top
        and bottom blur into the core, and the held-out family's rims) 20 of
        the 111 cores inside somata lie 0.1-0.2 under their rims
        (``experiments/README.md``, fifteenth session); the dips of that depth
        in a cytosolic FOV's textured neuropil are refused by
        ``min_rim_contrast``.
    min_rim : float
        The rim's level is at least ``min_rim`` times the image's brightest
        structure (:func:`~astro3s.preprocess.enhance.image_top` of the
        smoothed image).
    min_area, max_area : int
        Area range of a core, px (a core smaller than ``min_area`` is noise; one
        larger than ``max_area`` is no soma's).
    smooth_sigma : float
        Gaussian scale, px, of the smoothing before the fill (the fill of a
        raw image raises every noise pit).
    fill : {"rim", "saddle"}
        ``"rim"``: the whole basin of each kept core (its pixels at least
        ``basin_depth`` under the ring's level, connected to the core, with a
        1-px band) is raised to the median brightness of the ``rim_px`` wide
        ring just outside it, so that the soma reads as a uniformly bright
        disc like a cytosolic one. ``"saddle"`` (before 2026-12-07, fifteenth
        session): only the core's deep pixels and a 1-px band, to the ring's
        lowest level, which leaves a dim annulus inside a brighter rim that
        the network still reads as processes (cross-check membrane
        development movies: detection F1 0.48 with ``"saddle"`` and depth 0.2,
        0.79 with ``"rim"`` and 0.1).
    basin_depth : float
        With ``fill="rim"``: how far under the ring's level, as a fraction of
        it, a pixel of a core's basin lies.
    rim_px : int
        Width of the ring just outside a core's region, px, whose median
        brightness is the rim's (what ``fill="rim"`` raises the basin to).
    min_rim_contrast : float
        The rim's median brightness is at least this many times the median of
        the annulus 4-8 px beyond the region (``OUTER_ANNULUS_PX``): a soma's
        membrane is a ridge. 1.1: on the development movies (cross-check and
        held-out membrane, 20 FOVs) every core inside a soma and deeper than
        0.2 passes (91 of 91) and 17 of 20 shallower ones, against 13 of 55
        other cores there and 75 of 210 cores of cytosolic FOVs (the gaps of a
        bright, textured neuropil, and between the processes of two cells:
        a "rim" no brighter than its surround). 0: no test.

    Returns
    -------
    filled : ndarray of float32, shape (H, W)
        ``median_image`` with each kept core raised as ``fill`` says (never
        lowered); ``median_image`` as float32 where no core is kept.
    cores : ndarray of bool, shape (H, W)
        The pixels raised (each core's basin with its band).
    """
    from scipy import ndimage
    from skimage.morphology import reconstruction

    from astro3s.preprocess.enhance import image_top

    if fill not in RING_FILLS:
        raise ValueError(f"fill must be one of {', '.join(RING_FILLS)}, got {fill!r}")
    image = np.asarray(median_image, np.float32)
    cores = np.zeros(image.shape, bool)
    if image.ndim != 2 or min(image.shape) < 3:
        return image, cores
    smooth = ndimage.gaussian_filter(image, smooth_sigma, mode="mirror") if smooth_sigma > 0 else image
    top = image_top(smooth)
    if not top > 0:
        return image, cores
    seed = np.full_like(smooth, smooth.max())
    seed[0], seed[-1], seed[:, 0], seed[:, -1] = smooth[0], smooth[-1], smooth[:, 0], smooth[:, -1]
    level = reconstruction(seed, smooth, method="erosion").astype(np.float32)  # each dip raised to its rim
    dip = level - smooth
    rimmed = level >= min_rim * top
    labels, count = ndimage.label((dip >= min_depth * level) & rimmed)
    if count == 0:
        return image, cores
    areas = np.bincount(labels.ravel(), minlength=count + 1)
    keep = (areas >= int(min_area)) & (areas <= int(max_area))
    keep[0] = False
    if not keep.any():
        return image, cores
    kept = keep[labels]
    if fill == "saddle":
        cores = ndimage.binary_dilation(kept)
    else:
        # each kept core's whole basin: the shallower pixels around its deep ones, under the same ring
        basins, n_basins = ndimage.label((dip > basin_depth * level) & rimmed)
        chosen = np.zeros(n_basins + 1, bool)
        chosen[basins[kept]] = True
        chosen &= np.bincount(basins.ravel(), minlength=n_basins + 1) <= int(max_area)
        chosen[0] = False
        cores = ndimage.binary_dilation(chosen[basins] | kept)
    regions, n_regions = ndimage.label(cores)
    index = np.arange(1, n_regions + 1)
    # the ring just outside each region and an annulus beyond it, each pixel given to its nearest region (the
    # regions' labels grown, as skimage's expand_labels does, from one distance transform)
    distance, nearest = ndimage.distance_transform_edt(regions == 0, return_indices=True)
    nearest_region = regions[tuple(nearest)]
    ring = np.where((distance > 0) & (distance <= int(rim_px)), nearest_region, 0)
    rim_level = _label_medians(image, ring, index)
    if min_rim_contrast > 0:
        beyond = (distance > OUTER_ANNULUS_PX[0]) & (distance <= OUTER_ANNULUS_PX[1])
        outer_level = _label_medians(image, np.where(beyond, nearest_region, 0), index)
        # a soma's rim is a ridge, brighter than what lies beyond it; the gaps of a textured neuropil or between
        # two cells' processes are enclosed by a "rim" as bright as their surround
        standing_out = np.ones(n_regions + 1, bool)
        standing_out[1:] = rim_level[1:] >= min_rim_contrast * outer_level[1:]
        standing_out[0] = False
        cores &= standing_out[regions]
        if not cores.any():
            return image, cores
    filled = image.copy()
    raised = np.maximum(image[cores], level[cores])
    filled[cores] = raised if fill == "saddle" else np.maximum(raised, rim_level[regions[cores]])
    return filled, cores


def _label_medians(image: np.ndarray, labels: np.ndarray, index: np.ndarray) -> np.ndarray:
    """Median of ``image`` over each label of ``index``, float32, shape ``(len(index) + 1,)`` (0 at 0 and for
    labels without pixels)."""
    from scipy import ndimage

    out = np.zeros(len(index) + 1, np.float32)
    if len(index) and labels.any():
        out[1:] = np.nan_to_num(np.asarray(ndimage.median(image, labels=labels, index=index), np.float64))
    return out
