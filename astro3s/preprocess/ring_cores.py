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
processes are left alone (their enclosing level is the neuropil's).
"""

from __future__ import annotations

import numpy as np

__all__ = ["fill_ring_cores"]


def fill_ring_cores(median_image: np.ndarray, *, min_depth: float = 0.2, min_rim: float = 0.3,
                    min_area: int = 12, max_area: int = 5000, smooth_sigma: float = 1.0
                    ) -> tuple[np.ndarray, np.ndarray]:
    """Fill the dim cores that bright closed rims enclose (membrane-labelled somata).

    Parameters
    ----------
    median_image : ndarray, shape (H, W)
        The movie's median image after the clip at 0 (non-negative).
    min_depth : float
        A core pixel lies at most ``1 - min_depth`` times its rim's level (the
        level the fill raises it to).
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

    Returns
    -------
    filled : ndarray of float32, shape (H, W)
        ``median_image`` with each kept core (and a 1-px band around it) raised
        to at least its rim's level; ``median_image`` as float32 where no core
        is kept.
    cores : ndarray of bool, shape (H, W)
        The pixels raised.
    """
    from scipy import ndimage
    from skimage.morphology import reconstruction

    from astro3s.preprocess.enhance import image_top

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
    deep = (level - smooth) >= min_depth * level
    deep &= level >= min_rim * top
    labels, count = ndimage.label(deep)
    if count == 0:
        return image, cores
    areas = np.bincount(labels.ravel(), minlength=count + 1)
    keep = (areas >= int(min_area)) & (areas <= int(max_area))
    keep[0] = False
    if not keep.any():
        return image, cores
    cores = ndimage.binary_dilation(keep[labels])
    filled = image.copy()
    filled[cores] = np.maximum(image[cores], level[cores])
    return filled, cores
