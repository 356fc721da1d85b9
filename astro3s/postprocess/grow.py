"""Somata and processes redrawn over a summary image (for FOVs segmented on a coarser grid).

A FOV binned k x k to the training scale is segmented on a grid k times
coarser than its pixels, and the cells are resampled to its own pixels: the
soma outlines are off by up to k px (a 3000-px soma's edge drawn inside its
bright disc) and few of the long processes are drawn at all. Here both are
redrawn at the FOV's own resolution from the movie's median image:
:func:`refine_somata` extends each soma over its bright plateau,
:func:`complete_somata` completes a soma drawn in part to the compact
bright body it lies in, :func:`trim_somata` cuts every soma's outline back to its half-maximum
contour over the local background (the convention for a soma's edge, in
any FOV, binned or not), :func:`plateau_somata` finds bright compact blobs
as bright as the somata that no soma touches (somata the network missed), and
:func:`grow_processes` grows processes from the somata and keeps those on
a bright ridge as wide as a process (:func:`keep_ridges`).
"""

from __future__ import annotations

from typing import Any

import numpy as np

__all__ = ["complete_somata", "extend_processes", "grow_processes", "keep_ridges", "plateau_somata", "refine_somata",
           "ridge_strength", "trim_somata", "with_completed_somata", "with_extended_processes", "with_grown_processes",
           "with_refined_somata", "with_trimmed_somata"]

# The ridge test of grown processes (keep_ridges). Scale: the Gaussian that best matches a bright bar of
# width w has sigma ~ w / (2 sqrt 3); ASTRA's annotators draw the processes of D2's ~3000-px somata
# 10.1 px wide, 0.33 soma radii, so sigma ~ 0.1 radii. Level: how strongly curved, as a fraction of the
# soma's brightness over the background (chosen 2026-12-05 on diagnosed movies of both simulators,
# experiments/results/heldout_ablation.md).
RIDGE_SCALE = 0.1
RIDGE_LEVEL = 0.025
# How far from background to soma brightness the flood of grow_processes goes: 0.2 alone (2026-12-04);
# 0.1 with the ridge test, which then does the selecting (chosen with RIDGE_LEVEL, same ablation)
FLOOD_LEVEL = 0.2
RIDGE_FLOOD_LEVEL = 0.1


def grow_processes(soma: np.ndarray, image: np.ndarray, *, level: float = RIDGE_FLOOD_LEVEL, reach: float = 3.0,
                   smooth: float = 1.0, ridge_level: float | None = RIDGE_LEVEL,
                   ridge_scale: float = RIDGE_SCALE) -> np.ndarray:
    """Process labels grown from each soma over the bright pixels of a summary image.

    A FOV binned k x k to the training scale is segmented on a grid where a
    10-px process is 2 px wide: the network draws few of the long branches
    that the movie's own median image shows. Here each cell takes the pixels
    that a watershed of the smoothed image, flooded from the somata, reaches
    through pixels brighter than ``bg + level * (s - bg)`` (``s``: the median
    brightness of the nearest soma, ``bg``: the image's lower quartile) within
    ``reach`` soma radii of that soma. Where two cells' branches meet, the
    watershed line of the image parts them. Then only the pixels on a bright
    ridge as wide as a process stay (:func:`keep_ridges`): the flood also
    covers the blurred halo around a soma and dim out-of-focus cells next to
    it, which are bright but not ridges.

    Parameters
    ----------
    soma : ndarray of int, shape (H, W)
        Soma labels ``1..n`` (0 background).
    image : ndarray of float, shape (H, W)
        Temporal median (or mean) image, not contrast-equalised.
    level : float
        Fraction of the way from background to soma brightness a pixel must
        reach: ``RIDGE_FLOOD_LEVEL`` (0.1) with the ridge test, ``FLOOD_LEVEL``
        (0.2) without it (``binned_processes=grown``).
    reach : float
        Farthest a process pixel may lie from its soma, in soma radii (``sqrt(area / pi)``).
    smooth : float
        Gaussian smoothing (px) of the image against pixel noise.
    ridge_level, ridge_scale : float
        :func:`keep_ridges`' ``level`` and ``scale``; ``ridge_level=None``
        keeps every grown pixel.

    Returns
    -------
    processes : ndarray of int32, shape (H, W)
        Same ids as ``soma``, 0 where no process; every process pixel is
        connected to its own soma. A soma no brighter than ``bg`` grows none.
    """
    labels = np.asarray(soma).astype(np.int32)
    if labels.max(initial=0) == 0:
        return np.zeros(labels.shape, np.int32)
    img, soma_level = _smoothed_soma_levels(labels, image, smooth)
    processes = _flooded_processes(labels, img, soma_level, level=level, reach=reach)
    if ridge_level is None:
        return processes
    return _kept_on_ridges(processes, labels, image, img, soma_level, level=ridge_level,
                           sigma=_binned_ridge_scale(labels, ridge_scale))


def _smoothed_soma_levels(labels: np.ndarray, image: np.ndarray, smooth: float) -> tuple[np.ndarray, np.ndarray]:
    """The image smoothed by ``smooth`` px (float32) and each soma's median on it (float64, (n,)); ``n >= 1``."""
    from scipy import ndimage as ndi

    img = ndi.gaussian_filter(np.asarray(image, dtype=np.float32), float(smooth))
    return img, np.asarray(ndi.median(img, labels, np.arange(1, int(labels.max()) + 1)), dtype=np.float64)


def _flooded_processes(labels: np.ndarray, img: np.ndarray, soma_level: np.ndarray, *, level: float,
                       reach: float) -> np.ndarray:
    """The flood of :func:`grow_processes` without its somata (int32)."""
    grown = _flood_from_somata(labels, img, soma_level, level=level, reach=reach)
    return np.where(labels > 0, 0, grown).astype(np.int32)


def _median_soma_area(labels: np.ndarray) -> float:
    """The median area (px) of the somata ``1..n`` of ``labels`` that have pixels."""
    area = np.bincount(labels.ravel(), minlength=int(labels.max()) + 1)[1:]
    return float(np.median(area[area > 0]))


def _binned_ridge_scale(labels: np.ndarray, scale: float) -> float:
    """:func:`keep_ridges`' scale (px): ``scale`` median soma radii, or :func:`process_ridge_scale` if larger, >= 1."""
    median_area = _median_soma_area(labels)
    return max(1.0, float(scale) * float(np.sqrt(median_area / np.pi)), process_ridge_scale(median_area))


def ridge_strength(image: np.ndarray, *, sigma: float) -> np.ndarray:
    """How strongly the image curves down across a bright line or blob at scale ``sigma``.

    ``-sigma**2`` times the smaller eigenvalue of the Hessian of the image
    smoothed by a Gaussian of ``sigma`` px (scale-normalised): large on a
    bright ridge or blob about ``2 sqrt(3) sigma`` px wide, near 0 on flat
    ground and on a smooth slope (a soma's blurred rim), negative in valleys.

    Parameters
    ----------
    image : ndarray of float, shape (H, W)
    sigma : float
        Scale in px (> 0).

    Returns
    -------
    ndarray of float32, shape (H, W)
        In the image's units.
    """
    from scipy import ndimage as ndi

    img = np.asarray(image, dtype=np.float32)
    d_rr = ndi.gaussian_filter(img, sigma, order=(2, 0))
    d_cc = ndi.gaussian_filter(img, sigma, order=(0, 2))
    d_rc = ndi.gaussian_filter(img, sigma, order=(1, 1))
    smaller = 0.5 * (d_rr + d_cc) - np.sqrt((0.5 * (d_rr - d_cc)) ** 2 + d_rc**2)
    return (-float(sigma) ** 2 * smaller).astype(np.float32)


def keep_ridges(processes: np.ndarray, soma: np.ndarray, image: np.ndarray, *, level: float = RIDGE_LEVEL,
                scale: float = RIDGE_SCALE, smooth: float = 1.0) -> np.ndarray:
    """Process pixels on a bright ridge as wide as a process, still joined to their own soma.

    A pixel of cell ``i`` stays where :func:`ridge_strength` is at least
    ``level * (s_i - bg)`` (``s_i``: the median of the soma on the image
    smoothed by ``smooth`` px, ``bg``: that image's lower quartile); of what
    stays, only the pixels a path of the cell's own pixels joins to its soma
    are kept. The scale is ``scale * r`` (``r``: the FOV's median soma
    radius), or the scale of the width annotators draw for that soma
    (:func:`process_ridge_scale`) where that is larger (cells of a few
    hundred px, whose processes are wide for their radius), at least 1 px.

    Why (measured 2026-12-05): processes grown over the median image of a
    binned FOV fill the blurred halo around each soma and the dim
    out-of-focus cells beside it, so their pixel precision was 0.39 on
    held-out giant cells and 0.64 on the training simulator's ``d2_like``;
    kept on ridges (the flood at 0.1 instead of 0.2) it rose to 0.52 and
    0.80, and process F1 to 0.58 and 0.70 (from 0.48 and 0.64;
    ``experiments/results/heldout_ablation.md``).

    Parameters
    ----------
    processes : ndarray of int, shape (H, W)
        Process labels sharing ids with ``soma``.
    soma : ndarray of int, shape (H, W)
        Soma labels ``1..n`` (0 background).
    image : ndarray of float, shape (H, W)
        Temporal median (or mean) image, not contrast-equalised.
    level : float
        Least ridge strength, as a fraction of the soma's brightness over the background.
    scale : float
        Ridge scale in soma radii.
    smooth : float
        Gaussian smoothing (px) of the image for the soma and background levels.

    Returns
    -------
    processes : ndarray of int32, shape (H, W)
        A subset of ``processes``.
    """
    labels = np.asarray(soma).astype(np.int32)
    if labels.max(initial=0) == 0:
        return np.zeros(labels.shape, np.int32)
    img, soma_level = _smoothed_soma_levels(labels, image, smooth)
    return _kept_on_ridges(processes, labels, image, img, soma_level, level=level,
                           sigma=_binned_ridge_scale(labels, scale))


def _kept_on_ridges(processes: np.ndarray, labels: np.ndarray, image: np.ndarray, img: np.ndarray,
                    soma_level: np.ndarray, *, level: float, sigma: float, reach: float = 0.0) -> np.ndarray:
    """:func:`keep_ridges` at scale ``sigma``, given ``img`` and ``soma_level`` (:func:`_smoothed_soma_levels`).

    With ``reach`` > 0 a cell's pixels within ``reach`` px of a ridge pixel stay too (:func:`keep_visible_processes`).
    """
    from astro3s.postprocess.split import keep_connected_to_soma

    kept = _ridge_pixels(processes, image, img, soma_level, level=level, sigma=sigma)
    if reach > 0 and kept.any():
        from scipy import ndimage as ndi

        near = ndi.distance_transform_edt(kept == 0) <= float(reach)
        kept = np.where(near, np.asarray(processes), 0).astype(np.int32)
    return keep_connected_to_soma(labels, kept)


def process_ridge_scale(soma_area: float) -> float:
    """The Gaussian scale (px) that best matches a process as wide as annotators draw it for a soma of ``soma_area`` px.

    ``w / (2 sqrt 3)`` for the annotators' width ``w``
    (:func:`astro3s.annotation.annotator_process_width`): 1.3 px at D1 size,
    2.6 px at D2 size.
    """
    from astro3s.annotation import annotator_process_width

    return annotator_process_width(soma_area) / (2.0 * np.sqrt(3.0))


def _ridge_pixels(processes: np.ndarray, image: np.ndarray, img: np.ndarray, soma_level: np.ndarray, *,
                  level: float, sigma: float) -> np.ndarray:
    """``processes`` (int32) where :func:`ridge_strength` of ``image`` at ``sigma`` reaches ``level * (s - bg)``.

    ``s``: the cell's ``soma_level`` (its soma's median on ``img``, the image
    smoothed for the levels), ``bg``: ``img``'s lower quartile.
    """
    cells = np.asarray(processes).astype(np.int32)
    if not cells.any():
        return cells
    strength = ridge_strength(image, sigma=sigma)
    background = float(np.percentile(img, 25))
    threshold = np.concatenate([[np.inf], float(level) * np.maximum(soma_level - background, 0.0)])
    return np.where(strength >= threshold[cells], cells, 0).astype(np.int32)


# every FOV's final processes: a pixel stays within VISIBLE_REACH px of a pixel of its own cell on a ridge of
# RIDGE_LEVEL (keep_visible_processes; 2026-12-06, fifth session, chosen on cross-check 16-19 and never-seen 200-203,
# experiments/results/heldout_ablation.md: the network draws a star of processes around every soma, also where
# the image shows none)
VISIBLE_REACH = 1.5


def keep_visible_processes(processes: np.ndarray, soma: np.ndarray, image: np.ndarray, *,
                           level: float = RIDGE_LEVEL, reach: float = VISIBLE_REACH,
                           smooth: float = 1.0) -> np.ndarray:
    """Process pixels the image shows as a ridge, with the width around it, still joined to their soma.

    A pixel of cell ``i`` is on a ridge where :func:`ridge_strength` (at the
    scale of the width annotators draw for the FOV's median soma,
    :func:`process_ridge_scale`, at least 1 px) is at least
    ``level * (s_i - bg)`` (``s_i``: the median of the soma on the image
    smoothed by ``smooth`` px, ``bg``: that image's lower quartile). Pixels
    of the cell within ``reach`` px of such a pixel stay, so a visible
    branch keeps its drawn width and a branch with no ridge under it goes;
    of what stays, only the pixels a path of the cell's own pixels joins to
    its soma are kept.

    Why (measured 2026-12-06): the network draws a star of processes around
    each soma, also where the median image shows only haze (out-of-focus
    light, thick or dim branches of the cross-check family): process
    precision 0.44-0.69 there. Chosen on cross-check draw 16-19 (process F1
    0.514 -> 0.552, every member) and never-seen 200-203 (0.641 -> 0.644);
    on draws written before the choice: cross-check 20-23 0.493 -> 0.519
    and 24-27 0.529 -> 0.569, never-seen 204-207 0.621 -> 0.624; no cell
    added or lost
    (``experiments/results/heldout_ablation.md``).

    Parameters
    ----------
    processes : ndarray of int, shape (H, W)
        Process labels sharing ids with ``soma``.
    soma : ndarray of int, shape (H, W)
        Soma labels ``1..n`` (0 background).
    image : ndarray of float, shape (H, W)
        Temporal median (or mean) image, not contrast-equalised.
    level : float
        Least ridge strength, as a fraction of the soma's brightness over the background.
    reach : float
        How far (px) from a ridge pixel of its cell a process pixel may lie.
    smooth : float
        Gaussian smoothing (px) of the image for the soma and background levels.

    Returns
    -------
    processes : ndarray of int32, shape (H, W)
        A subset of ``processes``.

    Examples
    --------
    >>> image = np.zeros((40, 40), np.float32); image[15:25, 5:15] = 10.0; image[19:21, 15:35] = 5.0
    >>> soma = np.zeros((40, 40), np.int32); soma[15:25, 5:15] = 1
    >>> processes = np.zeros((40, 40), np.int32); processes[18:22, 15:35] = 1; processes[5:15, 8:11] = 1
    >>> kept = keep_visible_processes(processes, soma, image)
    >>> bool(kept[19, 30]), bool(kept[8, 9])
    (True, False)
    """
    labels = np.asarray(soma).astype(np.int32)
    if labels.max(initial=0) == 0:
        return np.zeros(labels.shape, np.int32)
    img, soma_level = _smoothed_soma_levels(labels, image, smooth)
    return _kept_on_ridges(processes, labels, image, img, soma_level, level=level,
                           sigma=max(1.0, process_ridge_scale(_median_soma_area(labels))), reach=reach)


def with_visible_processes(seg: Any, image: np.ndarray, **options: Any) -> Any:
    """``seg`` with its processes cut to those the image shows (:func:`keep_visible_processes`).

    ``counts["unseen_process_px"]`` says how many process pixels went.
    """
    from astro3s.postprocess.combine import _segmentation

    processes = keep_visible_processes(seg.processes, seg.soma, image, **options)
    removed = int(np.count_nonzero(seg.processes)) - int(np.count_nonzero(processes))
    return _segmentation(seg.soma, processes, seg.n_cells, seg.params,
                         {**seg.counts, "unseen_process_px": removed})


# Own-scale FOVs' processes extended along the median image's ridges (extend_processes): the flood's level
# and the ridge level (chosen 2026-12-05 on diagnosed movies of both simulators, heldout_ablation.md)
EXTEND_FLOOD_LEVEL = 0.2
EXTEND_RIDGE_LEVEL = 0.05


def extend_processes(soma: np.ndarray, processes: np.ndarray, image: np.ndarray, *,
                     level: float = EXTEND_FLOOD_LEVEL, ridge_level: float = EXTEND_RIDGE_LEVEL, reach: float = 3.0,
                     smooth: float = 1.0) -> np.ndarray:
    """The network's processes lengthened along bright ridges of a summary image as wide as annotated processes.

    The network's processes of a FOV at its own scale are as wide as the
    annotators draw them but stop short: they reach ~1.5-2 soma radii beyond
    the soma where annotators trace 2-3 (``experiments/measure_annotations.py``).
    Here the pixels that :func:`grow_processes` floods from each soma at
    ``level`` (with no ridge test) and that lie on a ridge of the image
    (:func:`ridge_strength` at least ``ridge_level * (s - bg)``, at the
    scale of the width annotators draw for the FOV's median soma,
    ``sigma = w / (2 sqrt 3)``) join the network's processes; what a path of
    the cell's own pixels joins to its soma is kept. Network process pixels
    all stay; a soma grows nothing it did not flood.

    Parameters
    ----------
    soma, processes : ndarray of int, shape (H, W)
        Soma labels ``1..n`` and the network's process labels with the same ids.
    image : ndarray of float, shape (H, W)
        Temporal median (or mean) image, not contrast-equalised.
    level, reach, smooth : float
        The flood's (:func:`grow_processes`).
    ridge_level : float
        Least ridge strength, as a fraction of the soma's brightness over the background.

    Returns
    -------
    processes : ndarray of int32, shape (H, W)
        A superset of ``processes`` (where their own soma joins them).
    """
    from astro3s.postprocess.split import keep_connected_to_soma

    labels = np.asarray(soma).astype(np.int32)
    own = np.asarray(processes).astype(np.int32)
    if labels.max(initial=0) == 0:
        return own
    img, soma_level = _smoothed_soma_levels(labels, image, smooth)
    flooded = _flooded_processes(labels, img, soma_level, level=level, reach=reach)
    added = _ridge_pixels(np.where(own > 0, 0, flooded), image, img, soma_level, level=ridge_level,
                          sigma=process_ridge_scale(_median_soma_area(labels)))
    return keep_connected_to_soma(labels, np.where(own > 0, own, added))


def with_extended_processes(seg: Any, image: np.ndarray, **options: Any) -> Any:
    """``seg`` with its processes lengthened by :func:`extend_processes`; ``counts`` kept."""
    from astro3s.postprocess.combine import _segmentation

    processes = extend_processes(seg.soma, seg.processes, image, **options)
    return _segmentation(seg.soma, processes, seg.n_cells, seg.params, dict(seg.counts))


def _flood_from_somata(labels: np.ndarray, img: np.ndarray, soma_level: np.ndarray, *, level: float,
                       reach: float, opening: int = 0) -> np.ndarray:
    """Watershed of ``-img`` flooded from the somata through their bright surroundings.

    A pixel may be reached when it is brighter than ``bg + level * (s - bg)``
    of its nearest soma (``s``: that soma's ``soma_level``, ``bg``: the
    image's lower quartile; none for a soma no brighter than ``bg``) and lies
    within ``reach`` of that soma's radii from its edge. The one mechanism of
    :func:`grow_processes` and :func:`refine_somata`.

    Parameters
    ----------
    labels : ndarray of int32, shape (H, W)
        Soma labels ``1..n``, with at least one soma.
    img : ndarray of float32, shape (H, W)
        The (smoothed) summary image.
    soma_level : ndarray of float64, shape (n,)
        Brightness of each soma.
    opening : int
        Radius (px) of a disc that opens the reachable pixels first (0: none): structures
        narrower than its diameter, such as processes, are not reached.

    Returns
    -------
    flooded : ndarray of int32, shape (H, W)
        Same ids, somata included.
    """
    from scipy import ndimage as ndi
    from skimage.segmentation import watershed

    n = soma_level.size
    inside = labels > 0
    background = float(np.percentile(img, 25))
    radius = np.sqrt(np.bincount(labels.ravel(), minlength=n + 1)[1:] / np.pi)
    distance, (iy, ix) = ndi.distance_transform_edt(~inside, return_indices=True)
    nearest = labels[iy, ix] - 1  # index of the nearest soma, for every pixel
    threshold = np.where(soma_level > background, background + float(level) * (soma_level - background), np.inf)
    allowed = (img >= threshold[nearest]) & (distance <= float(reach) * radius[nearest])
    if opening > 0:
        from skimage.morphology import disk

        allowed = ndi.binary_opening(allowed, structure=disk(opening))
    return watershed(-img, markers=labels, mask=allowed | inside, connectivity=2).astype(np.int32)


def _label_quantile(values: np.ndarray, labels: np.ndarray, n: int, quantile: float) -> np.ndarray:
    """The ``quantile`` (lower order statistic) of ``values`` over each label ``1..n``; NaN for an empty label."""
    order = np.lexsort((values, labels))
    sorted_values, sorted_labels = values[order], labels[order]
    ids = np.arange(1, n + 1)
    start = np.searchsorted(sorted_labels, ids)
    count = np.searchsorted(sorted_labels, ids, side="right") - start
    out = np.full(n, np.nan)
    has = count > 0
    out[has] = sorted_values[start[has] + np.floor(quantile * (count[has] - 1)).astype(np.int64)]
    return out


def _smoothed_quantile_levels(labels: np.ndarray, image: np.ndarray, smooth: float,
                              quantile: float) -> tuple[np.ndarray, np.ndarray]:
    """The image smoothed by ``smooth`` px (float32) and each soma's ``quantile`` brightness on it
    (:func:`_label_quantile`, float64, (n,)); ``labels`` int32 with ``n >= 1`` somata."""
    from scipy import ndimage as ndi

    img = ndi.gaussian_filter(np.asarray(image, dtype=np.float32), float(smooth))
    inside = labels > 0
    return img, _label_quantile(img[inside], labels[inside], int(labels.max()), float(quantile))


# how far (in radii of the soma as drawn) refine_somata may extend a soma over its plateau. One radius
# since 2026-12-05 (was 0.5): the network draws part of a soma that is large for its FOV (its interior
# equalised into texture by CLAHE, labelled process), often at half its radius, where half a radius of
# growth cannot restore it (held-out `heldout_mixed_96`: 2 somata at IoU 0.47 and 0.39 -> matched); the
# plateau level, not the reach, bounds a soma drawn whole (experiments/results/heldout_ablation.md)
SOMA_REACH = 1.0


def refine_somata(soma: np.ndarray, image: np.ndarray, *, level: float = 0.8, reach: float | None = None,
                  smooth: float = 1.0, quantile: float = 0.9) -> np.ndarray:
    """Soma labels extended over the bright plateau of a summary image.

    Each soma takes the pixels that a watershed of the smoothed image, flooded
    from the somata, reaches through pixels brighter than
    ``bg + level * (s - bg)`` (``s``: the soma's ``quantile`` brightness,
    ``bg``: the image's lower quartile) within ``reach`` soma radii of its
    edge. Somata only grow: a pixel a soma already has stays its own.

    Parameters
    ----------
    soma : ndarray of int, shape (H, W)
        Soma labels ``1..n`` (0 background).
    image : ndarray of float, shape (H, W)
        Temporal median (or mean) image, not contrast-equalised.
    level : float
        Fraction of the way from background to the soma's brightness a pixel must reach.
    reach : float
        Farthest a new pixel may lie from the soma's edge, in soma radii (``sqrt(area / pi)``)
        of the soma as drawn; None: ``SOMA_REACH``, read when called.
    smooth : float
        Gaussian smoothing (px) of the image against pixel noise.
    quantile : float
        Which brightness of the soma's pixels is its level, in [0, 1].

    Returns
    -------
    soma : ndarray of int32, shape (H, W)
        Same ids; every pixel of ``soma`` keeps its label.
    """
    labels = np.asarray(soma).astype(np.int32)
    if int(labels.max(initial=0)) == 0:
        return labels
    img, soma_level = _smoothed_quantile_levels(labels, image, smooth, quantile)
    return _flood_from_somata(labels, img, soma_level, level=level, reach=SOMA_REACH if reach is None else reach)


# a soma's edge: half-way from the local background to its bright level (half maximum), see trim_somata
SOMA_EDGE_LEVEL = 0.5
# how near (px) the cell's own processes a pixel cut from its soma's rim must lie to join them (with_trimmed_somata)
RIM_TO_PROCESS = 2


# complete_somata: which growth marks a soma drawn in part, and how compact its completed body must be
# (chosen 2026-12-05 on the captured binned FOVs of 52 held-out giant movies and 56 D2-like ones;
# experiments/results/heldout_ablation.md, "Session of 2026-12-05 (night, fourth)")
COMPLETE_GAIN = (1.3, 2.5)
COMPLETE_MIN_SOLIDITY = 0.9
COMPLETE_OPENING = 0.35
COMPLETE_BODY = 0.6


def complete_somata(soma: np.ndarray, image: np.ndarray, *, level: float = SOMA_EDGE_LEVEL,
                    gain: tuple[float, float] = COMPLETE_GAIN, min_solidity: float = COMPLETE_MIN_SOLIDITY,
                    opening: float = COMPLETE_OPENING, body: float = COMPLETE_BODY, reach: float | None = None,
                    smooth: float = 1.0, quantile: float = 0.9) -> np.ndarray:
    """Somata drawn in part completed to the compact bright body they lie in.

    On a FOV segmented binned, the network sometimes draws only the
    brighter part of a giant soma (the rest as processes or nothing): the
    soma is then matched below IoU 0.5 and counted both missed and false,
    and :func:`refine_somata`, which floods only pixels 0.8 of the way to
    the soma's brightness, cannot restore a soma whose brightness varies
    across it. Here each soma is flooded (watershed of the smoothed image
    from all somata) through pixels at least half-way (``level``) from the
    background to its ``quantile`` brightness, within ``reach`` soma radii
    of its edge, after those pixels are opened with a disc of ``opening``
    times the median soma radius, so that processes, narrower than that
    disc, are not reached. A soma takes its flood only when that is a
    completion, not a spill:

    - the flood is ``gain[0]`` to ``gain[1]`` times the soma's area (less is
      an outline already whole, more is a spill over a bright neighbourhood
      or an out-of-focus blob);
    - its solidity (area over convex-hull area) is at least ``min_solidity``;
    - then only its body is kept: the flood opened with a disc of ``body``
      times its own radius (a thick proximal process is cut off), joined
      to the soma as drawn, holes filled.

    Somata only grow, and never over another soma.

    Parameters
    ----------
    soma : ndarray of int, shape (H, W)
        Soma labels ``1..n`` (0 background).
    image : ndarray of float, shape (H, W)
        Temporal median (or mean) image, not contrast-equalised.
    level : float
        Fraction of the way from the image's lower quartile to the soma's brightness.
    gain : (float, float)
        Lowest and highest flooded area, times the soma's area, for the soma to take it.
    min_solidity : float
        Lowest solidity of the flooded soma.
    opening : float
        Radius of the disc that opens the floodable pixels, times the median soma radius.
    body : float
        Radius of the disc that opens each soma's flood, times the flood's radius.
    reach : float
        Farthest a new pixel may lie from the soma's edge, in soma radii; None: ``SOMA_REACH``.
    smooth : float
        Gaussian smoothing (px) of the image against pixel noise.
    quantile : float
        Which brightness of the soma's pixels is its level, in [0, 1].

    Returns
    -------
    soma : ndarray of int32, shape (H, W)
        Same ids; every pixel of ``soma`` keeps its label.
    """
    from scipy import ndimage as ndi
    from skimage.measure import regionprops
    from skimage.morphology import disk

    labels = np.asarray(soma).astype(np.int32)
    n = int(labels.max(initial=0))
    if n == 0:
        return labels
    img, soma_level = _smoothed_quantile_levels(labels, image, smooth, quantile)
    area = np.bincount(labels.ravel(), minlength=n + 1)[1:]
    radius = np.sqrt(area[area > 0] / np.pi)
    flooded = _flood_from_somata(labels, img, soma_level, level=level, reach=SOMA_REACH if reach is None else reach,
                                 opening=max(2, int(round(float(opening) * float(np.median(radius))))))
    flooded_area = np.bincount(flooded.ravel(), minlength=n + 1)[1:]
    candidate = (flooded_area >= float(gain[0]) * area) & (flooded_area <= float(gain[1]) * area) & (area > 0)
    out = labels.copy()
    for region in regionprops(np.where(candidate[flooded - 1] & (flooded > 0), flooded, 0)):  # the few somata grown
        if region.solidity < float(min_solidity):
            continue
        k = region.label
        (y0, x0, y1, x1), pad = region.bbox, 1
        window = (slice(max(y0 - pad, 0), y1 + pad), slice(max(x0 - pad, 0), x1 + pad))
        own = labels[window] == k
        grown = ndi.binary_opening(flooded[window] == k,
                                   structure=disk(max(1, int(round(float(body) * np.sqrt(region.area / np.pi))))))
        parts, _ = ndi.label(grown | own)
        kept = ndi.binary_fill_holes(np.isin(parts, np.unique(parts[own])))
        free = (out[window] == 0) | own
        out[window][kept & free] = k
    return out


def trim_somata(soma: np.ndarray, image: np.ndarray, *, level: float = SOMA_EDGE_LEVEL, smooth: float = 1.0,
                quantile: float = 0.9, ring: tuple[float, float] = (2.0, 6.0), min_kept: float = 0.5,
                processes: np.ndarray | None = None) -> np.ndarray:
    """Soma labels cut back to their half-maximum contour over the local background.

    A soma's edge is taken where the smoothed summary image crosses
    ``bg + level * (s - bg)``: ``s`` is the soma's ``quantile`` brightness and
    ``bg`` the median of its ring (``ring`` px outside it, outside every
    cell, owned by the nearest soma), so neither a vignetted corner nor a
    bright neighbourhood moves the edge. Pixels of the soma below that level
    go; the largest connected part of the rest, holes filled, is kept. A soma
    with fewer than 5 ring pixels, or whose kept part would be under
    ``min_kept`` of its area, is left as it is.

    Why (measured 2026-12-05): the network's outlines, extended by
    :func:`refine_somata`, are ~5 % larger than the true somata on both
    simulators (per matched cell, pixel precision 0.90 and recall 0.965 on
    the training simulator's ``d1_like`` and on held-out movies): a
    PSF-blurred soma's dim rim is drawn as soma. Cut at half maximum, the
    per-cell soma pixel F1 rose 0.937 -> 0.958 and 0.931 -> 0.957; levels
    0.3, 0.4 and 0.6 gave less on both (``experiments/results/heldout_ablation.md``).
    Half maximum is also where an outline is conventionally drawn on a
    blurred object, not a value fitted to either simulator.

    Parameters
    ----------
    soma : ndarray of int, shape (H, W)
        Soma labels ``1..n`` (0 background).
    image : ndarray of float, shape (H, W)
        Temporal median (or mean) image, not contrast-equalised.
    level : float
        Fraction of the way from the ring's brightness to the soma's that an
        edge pixel must reach (0.5: half maximum).
    smooth : float
        Gaussian smoothing (px) of the image against pixel noise.
    quantile : float
        Which brightness of the soma's pixels is its level, in [0, 1].
    ring : (float, float)
        Inner and outer distance (px) of the background ring from the soma.
    min_kept : float
        Smallest share of a soma's area the cut may keep.
    processes : ndarray of int, shape (H, W), optional
        Process labels: their pixels are left out of the background rings.

    Returns
    -------
    soma : ndarray of int32, shape (H, W)
        Same ids; every soma keeps at least ``min_kept`` of its pixels.
    """
    from scipy import ndimage as ndi

    labels = np.asarray(soma).astype(np.int32)
    n = int(labels.max(initial=0))
    if n == 0:
        return labels
    img = ndi.gaussian_filter(np.asarray(image, dtype=np.float32), float(smooth))
    background, soma_level = _edge_levels(labels, img, processes, quantile=quantile, ring=ring)
    return _cut_somata(labels, img, background, soma_level, level=level, min_kept=min_kept)


def _cut_somata(labels: np.ndarray, img: np.ndarray, background: np.ndarray, soma_level: np.ndarray, *,
                level: float, min_kept: float) -> np.ndarray:
    """The cut of :func:`trim_somata`, given the smoothed image and each soma's levels (:func:`_edge_levels`)."""
    from scipy import ndimage as ndi

    n = background.size
    edge = np.where(np.isfinite(background), background + float(level) * (soma_level - background), -np.inf)
    below = (labels > 0) & (img < np.concatenate([[-np.inf], edge])[labels])
    out = labels.copy()
    area = np.bincount(labels.ravel(), minlength=n + 1)
    boxes = ndi.find_objects(labels)
    for k in np.unique(labels[below]):  # loop over the somata with pixels to cut (tens), not pixels
        box = boxes[k - 1]
        own = labels[box] == k
        parts, m = ndi.label(own & ~below[box], structure=np.ones((3, 3)))
        if m == 0:
            continue
        kept = ndi.binary_fill_holes(parts == 1 + int(np.argmax(np.bincount(parts.ravel())[1:]))) & own
        if kept.sum() < float(min_kept) * area[k]:
            continue
        out[box][own & ~kept] = 0
    return out


def _edge_levels(labels: np.ndarray, img: np.ndarray, processes: np.ndarray | None, *, quantile: float,
                 ring: tuple[float, float]) -> tuple[np.ndarray, np.ndarray]:
    """Each soma's local background (median of its ring) and bright level (``quantile``), float64 (n,).

    The background is NaN for a soma with fewer than 5 ring pixels or no
    brighter than its ring (nothing to measure an edge against).
    """
    from scipy import ndimage as ndi

    n = int(labels.max(initial=0))
    inside = labels > 0
    in_cell = inside if processes is None else inside | (np.asarray(processes) > 0)
    distance, (iy, ix) = ndi.distance_transform_edt(~inside, return_indices=True)
    ring_labels = np.where((distance >= ring[0]) & (distance <= ring[1]) & ~in_cell, labels[iy, ix], 0)
    ring_count = np.bincount(ring_labels.ravel(), minlength=n + 1)[1:]
    in_ring = ring_labels > 0
    background = _label_quantile(img[in_ring], ring_labels[in_ring], n, 0.5)
    soma_level = _label_quantile(img[inside], labels[inside], n, float(quantile))
    background[(ring_count < 5) | ~(soma_level > background)] = np.nan
    return background, soma_level


# plateau_somata's opening disc, in radii of the median soma. 0.5 since 2026-12-06 (fourth session; none
# before): on binned giant FOVs the bright processes join a missed soma to its neighbours' plateau, whose
# component is then neither compact nor of a soma's area (never-seen `giant_198`: 2 of 4 somata missed, both
# separate once opened); the processes of ASTRA's D2 cells are 0.33 soma radii wide, under the disc's 1.0
# diameter (experiments/results/heldout_ablation.md)
PLATEAU_OPENING = 0.5


def _opened(mask: np.ndarray, radius: float) -> np.ndarray:
    """``mask`` opened by a Euclidean disc of ``radius`` px (pixels within it of a pixel whose disc fits).

    Through two distance transforms rather than a structuring element: a 40-px-wide disc costs as little as
    a small one. The FOV's edge does not erode (a blob cut by it keeps its cut side).
    """
    from scipy import ndimage as ndi

    if radius < 1.0 or not mask.any():
        return mask
    core = ndi.distance_transform_edt(mask) > radius
    if not core.any():
        return np.zeros_like(mask)
    return ndi.distance_transform_edt(~core) <= radius


def plateau_somata(soma: np.ndarray, image: np.ndarray, *, level: float = 0.5,
                   area_factors: tuple[float, float] = (0.5, 2.0), min_solidity: float = 0.85,
                   smooth: float = 1.0, quantile: float = 0.9,
                   opening: float | None = None) -> np.ndarray:
    """Bright compact blobs of a summary image that no soma touches, as soma labels.

    The plateau is every pixel of the smoothed image brighter than
    ``bg + level * (s - bg)`` (``s``: the median over the somata of each
    soma's ``quantile`` brightness, ``bg``: the image's lower quartile),
    opened by a disc of ``opening`` times the median soma's radius: what is
    narrower than the disc (a soma's bright processes, a bundle of them
    joining two somata) falls away, and somata joined that way come apart.
    A connected component of it (8-connectivity) is a soma candidate when it
    touches no soma of ``soma``, does not touch the FOV's edge (a cut blob's
    area and shape say nothing), its area lies within ``area_factors`` times
    the median soma area and its solidity (area over convex-hull area) is at
    least ``min_solidity``.

    Parameters
    ----------
    soma : ndarray of int, shape (H, W)
        Soma labels ``1..n`` (0 background): the cells found, whose brightness
        and size are the reference.
    image : ndarray of float, shape (H, W)
        Temporal median (or mean) image, not contrast-equalised.
    level : float
        Fraction of the way from background to the somata's brightness.
    area_factors : (float, float)
        Lowest and highest candidate area, times the median soma area.
    min_solidity : float
        Lowest area / convex-hull area (a soma is compact; a branch junction is not).
    smooth : float
        Gaussian smoothing (px) of the image against pixel noise.
    quantile : float
        Which brightness of a soma's pixels is its level, in [0, 1].
    opening : float or None
        Radius of the opening disc, in radii of the median soma (that of a
        disc of its area); None: :data:`PLATEAU_OPENING`, 0.5; 0: the plateau
        as thresholded.

    Returns
    -------
    candidates : ndarray of int32, shape (H, W)
        Labels ``1..m`` of the candidates, 0 elsewhere; none without somata.
    """
    from scipy import ndimage as ndi
    from skimage.measure import regionprops

    labels = np.asarray(soma).astype(np.int32)
    n = int(labels.max(initial=0))
    out = np.zeros(labels.shape, np.int32)
    if n == 0:
        return out
    img, soma_level = _smoothed_quantile_levels(labels, image, smooth, quantile)
    inside = labels > 0
    areas = np.bincount(labels.ravel(), minlength=n + 1)[1:]
    if not np.isfinite(soma_level).any():
        return out
    background = float(np.percentile(img, 25))
    reference = float(np.nanmedian(soma_level))
    if reference <= background:
        return out
    typical = float(np.median(areas[areas > 0]))
    bright = img >= background + float(level) * (reference - background)
    opening = PLATEAU_OPENING if opening is None else float(opening)
    if opening > 0:
        bright = _opened(bright, opening * np.sqrt(typical / np.pi))
    plateau, m = ndi.label(bright, structure=np.ones((3, 3)))
    if m == 0:
        return out
    area = np.bincount(plateau.ravel(), minlength=m + 1)
    ok = (area >= area_factors[0] * typical) & (area <= area_factors[1] * typical)
    ok[0] = False
    ok[np.unique(plateau[inside])] = False                                     # touches a soma
    edge = np.concatenate([plateau[0], plateau[-1], plateau[:, 0], plateau[:, -1]])
    ok[np.unique(edge)] = False                                                # cut by the FOV's edge
    ok[0] = False
    kept = np.zeros(m + 1, np.int32)
    for region in regionprops(np.where(ok[plateau], plateau, 0)):  # loop over the few candidates left
        if region.solidity >= float(min_solidity):
            kept[region.label] = 1
    kept[1:] = np.where(kept[1:] > 0, np.cumsum(kept[1:]), 0)
    return kept[plateau].astype(np.int32)


def with_refined_somata(seg: Any, image: np.ndarray, **options: Any) -> Any:
    """``seg`` with its somata extended by :func:`refine_somata`; processes lose the pixels somata took."""
    from astro3s.postprocess.combine import _segmentation

    soma = refine_somata(seg.soma, image, **options)
    processes = np.where(soma > 0, 0, seg.processes)
    return _segmentation(soma, processes, seg.n_cells, seg.params, dict(seg.counts))


def with_completed_somata(seg: Any, image: np.ndarray, **options: Any) -> Any:
    """``seg`` with its somata completed by :func:`complete_somata`; processes lose the pixels somata took.

    ``counts["somata_completed"]`` says how many somata grew.
    """
    from astro3s.postprocess.combine import _segmentation

    soma = complete_somata(seg.soma, image, **options)
    grown = int(np.count_nonzero(np.bincount(soma.ravel(), minlength=seg.n_cells + 1)[1:]
                                 > np.bincount(np.asarray(seg.soma).ravel(), minlength=seg.n_cells + 1)[1:]))
    counts = {**seg.counts, "somata_completed": grown}
    return _segmentation(soma, np.where(soma > 0, 0, seg.processes), seg.n_cells, seg.params, counts)


def with_trimmed_somata(seg: Any, image: np.ndarray, *, level: float = SOMA_EDGE_LEVEL,
                        process_level: float = FLOOD_LEVEL,
                        smooth: float = 1.0, quantile: float = 0.9, ring: tuple[float, float] = (2.0, 6.0),
                        min_kept: float = 0.5) -> Any:
    """``seg`` with its somata cut back by :func:`trim_somata`; where a process leaves, the rim cut joins it.

    The cut pixels brighter than ``bg + process_level * (s - bg)`` of their
    soma (the levels of :func:`trim_somata`; 0.2 is ``FLOOD_LEVEL``, the level
    of :func:`grow_processes` without its ridge test) and within ``RIM_TO_PROCESS`` px of the cell's
    own processes join those processes: that is where a process leaves the
    soma, and the processes stay connected to it. The other cut pixels
    become background (a blurred soma's rim above 0.2 is a closed ring, so
    brightness alone would wrap every soma in process). Measured 2026-12-05
    on development and held-out movies (21 groups, the cut itself applied
    to the cached outputs): with every cut pixel made background, process F1
    fell by up to 0.04 (``low_snr`` 0.583 -> 0.544, ``randomised`` 0.50 ->
    0.46); with the whole bright ring made process the mean went
    0.599 -> 0.601, with this rule 0.603 (1-3 px alike).
    """
    from scipy import ndimage as ndi

    from astro3s.postprocess.combine import _segmentation

    labels = np.asarray(seg.soma).astype(np.int32)
    if seg.n_cells == 0 or not labels.any():
        return seg
    img = ndi.gaussian_filter(np.asarray(image, dtype=np.float32), float(smooth))
    background, soma_level = _edge_levels(labels, img, seg.processes, quantile=quantile, ring=ring)
    soma = _cut_somata(labels, img, background, soma_level, level=level, min_kept=min_kept)
    cut = (labels > 0) & (soma == 0)
    processes = seg.processes
    if cut.any():
        floor = np.concatenate([[np.inf], background + float(process_level) * (soma_level - background)])
        bright = cut & (img >= np.nan_to_num(floor, nan=np.inf)[seg.soma])
        # only where the cell's own processes are, within RIM_TO_PROCESS px (not the whole bright ring)
        near_process = ndi.grey_dilation(np.asarray(seg.processes).astype(np.int32),
                                         size=(2 * RIM_TO_PROCESS + 1,) * 2)
        bright &= near_process == seg.soma
        processes = np.where(bright, seg.soma, seg.processes)
    return _segmentation(soma, processes, seg.n_cells, seg.params, dict(seg.counts))


def with_grown_processes(seg: Any, image: np.ndarray, *, keep: np.ndarray | None = None, **options: Any) -> Any:
    """``seg`` with its processes replaced by :func:`grow_processes` of its somata; ``counts`` kept.

    ``keep`` (bool, one flag per cell, cell ``k`` at index ``k - 1``) marks
    cells whose own processes stay: the grown ones of the other cells fill
    only pixels those do not hold, and what would grow from a kept cell is
    left out.
    """
    from astro3s.postprocess.combine import _segmentation

    processes = grow_processes(seg.soma, image, **options)
    if keep is not None and np.any(keep):
        flags = np.concatenate([[False], np.asarray(keep, bool)])
        own = flags[seg.processes]
        processes = np.where(own, seg.processes, np.where(flags[processes], 0, processes))
    return _segmentation(seg.soma, processes, seg.n_cells, seg.params, dict(seg.counts))
