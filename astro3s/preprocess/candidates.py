"""Stage 4: soma candidates by adaptive thresholding of the activity map.

ASTRA's search: threshold the activity map at a fraction of the number of
frames (0.6 T), keep connected components (8-connected) of at least a
minimum area, and lower first the area (in steps) and then the threshold
(in steps of 25 frames) until the expected number of components (4) is
found; at the lowest threshold the area keeps decreasing to a last value.
Components smaller than a tiny area are removed at the end.

Extension (not in ASTRA): the search stops as soon as the expected number of
components is found, so a faint soma in a FOV with several bright ones is
never reached. Candidates are proposals that the network accepts or rejects,
so recall matters most: components of the map above a lower
``extension_threshold`` (0.35 T; :func:`~astro3s.preprocess.fit_parameters`
fits it on annotated data) that touch no candidate and have at least the
minimum soma area are added. ``extension_threshold=None`` gives the
published search.

Fallback (not in ASTRA): in a FOV crowded with cells of one brightness the
activity map saturates (somata cover more than the fifth of each tile that
the 80th percentile lets through), so no component reaches the published
floor and the search returns nothing at all. When the published schedule
does not converge, the threshold keeps going down in the same steps to
``fallback_floor`` (0.30 T), each step with the last area schedule, and the
first threshold that finds the expected number of components is used (the
extension threshold moves down by as much); when none does, the published
result stands, so a sparse FOV with fewer cells than expected is searched
as before. Here every area
is a fraction of the smallest soma area ``A`` of the data
(``soma_area_range[0]``), the published pixel values being those fractions
for ``A = 89 px`` (ASTRA's D1), so the search follows the soma size.
"""

from __future__ import annotations

import logging
import math
from typing import Any

import numpy as np

__all__ = ["NOISY_CANDIDATE_Z", "NOISY_ENHANCE_SIGMA", "area_schedule", "blob_candidates", "fallback_schedule",
           "find_candidates", "significant_candidates", "threshold_schedule"]

log = logging.getLogger(__name__)

_EIGHT = np.ones((3, 3), dtype=bool)

#: robust SDs (1.4826 MAD) above the median of the smoothed activity map at which a movie too noisy for the
#: search's thresholds gets its candidates (significant_candidates): a 5-sigma level, which the smoothed map
#: of a movie without cells reaches by chance about once in 3 million pixels
NOISY_CANDIDATE_Z = 5.0
#: Gaussian smoothing (px) of such a movie's median image before CLAHE, which otherwise ranks its pixel noise
#: into full-contrast speckle; a 1-px blur is within the training's zoom augmentation
NOISY_ENHANCE_SIGMA = 1.0


def threshold_schedule(n_frames: int, *, start: float = 0.6, step: float = 0.045,
                       floor: float = 0.42) -> np.ndarray:
    """Activity thresholds tried, in frames, from ``start * T`` down to ``floor * T``.

    Returns
    -------
    thresholds : ndarray of float64, shape (n,)
    """
    count = int(math.floor((start - floor) / step + 1e-9)) + 1
    return n_frames * (start - step * np.arange(count))


def area_schedule(min_soma_area: float, *, start: float, low: float, step: float,
                  inclusive: bool = False) -> np.ndarray:
    """Minimum component areas tried at one threshold, px, decreasing.

    From ``start * A`` in steps of ``step * A``: values above ``low * A``
    (``inclusive=False``, the published search at all but the last threshold)
    or at least ``low * A`` (``inclusive=True``). At least one value.
    """
    a = float(min_soma_area)
    count = (start - low) / step + (1e-9 if inclusive else -1e-9)
    count = max(int(math.floor(count)) + 1, 1)
    return a * (start - step * np.arange(count))


def _try_threshold(activity: np.ndarray, threshold: float, areas_tried: np.ndarray,
                   expected_cells: int) -> tuple[tuple[float, float, np.ndarray, np.ndarray], bool]:
    """Components of ``activity > threshold``, with the first tried area that passes enough of them.

    Returns
    -------
    chosen : (threshold, min_area, labels, areas)
        ``labels`` int32 (H, W); ``areas`` of components ``1..n``; ``min_area``
        the first of ``areas_tried`` with ``expected_cells`` components at least
        that large, else the last one.
    converged : bool
        Whether some tried area passed ``expected_cells`` components.
    """
    from scipy import ndimage

    labels, _ = ndimage.label(activity > threshold, structure=_EIGHT)
    areas = np.bincount(labels.ravel())[1:]
    # components passing each area threshold, all areas at once
    passing = (areas[None, :] >= areas_tried[:, None]).sum(axis=1)
    hit = np.flatnonzero(passing >= expected_cells)
    k = int(hit[0]) if hit.size else len(areas_tried) - 1
    return (float(threshold), float(areas_tried[k]), labels, areas), bool(hit.size)


def fallback_schedule(n_frames: int, *, floor: float, step: float, fallback_floor: float) -> np.ndarray:
    """Thresholds tried below the published ``floor``, in frames: ``floor - step``, ... >= ``fallback_floor``.

    Returns
    -------
    thresholds : ndarray of float64, shape (n,)
        Empty when ``fallback_floor > floor - step``.
    """
    count = int(math.floor((floor - fallback_floor) / step + 1e-9))
    return n_frames * (floor - step * np.arange(1, max(count, 0) + 1))


def find_candidates(activity: np.ndarray, n_frames: int, *, soma_area_range: tuple[float, float] = (89, 345),
                    threshold_start: float = 0.6, threshold_step: float = 0.045,
                    threshold_floor: float = 0.42, expected_cells: int = 4,
                    start_area_fraction: float = 100 / 89, min_area_fraction: float = 80 / 89,
                    area_step_fraction: float = 10 / 89, last_area_fraction: float = 30 / 89,
                    tiny_area_fraction: float = 20 / 89,
                    extension_threshold: float | None = 0.35,
                    fallback_floor: float | None = None) -> tuple[np.ndarray, dict[str, Any]]:
    """Label the soma candidates of an activity map.

    Parameters
    ----------
    activity : ndarray, shape (H, W)
        Activity map in frames (:func:`astro3s.preprocess.activity_map`).
    n_frames : int
        Frames ``T`` the map was computed from.
    soma_area_range : (float, float)
        Soma areas of the data, px; the lower end ``A`` scales every area below.
    threshold_start, threshold_step, threshold_floor : float
        Threshold schedule as fractions of ``T``.
    expected_cells : int
        Stop when at least this many components pass the area threshold.
    start_area_fraction, min_area_fraction, area_step_fraction, last_area_fraction,
    tiny_area_fraction : float
        Area schedule as fractions of ``A`` (see :class:`PreprocessParams`).
    extension_threshold : float or None
        Fraction of ``T`` of the recall extension (see the module docstring).
    fallback_floor : float or None
        Lowest threshold, fraction of ``T``, of the fallback below
        ``threshold_floor`` when the published search does not converge (see
        the module docstring); None: no fallback (the published search).

    Returns
    -------
    labels : ndarray of uint16, shape (H, W)
        0 = background, candidates 1..N in raster order.
    details : dict
        ``threshold`` (frames), ``min_area`` (px), ``found`` (candidates),
        ``added`` (by the extension), ``converged`` (the expected number was
        reached), ``fallback`` (reached below the published floor).
    """
    from scipy import ndimage

    activity = np.asarray(activity, dtype=np.float32)
    a = float(soma_area_range[0])
    thresholds = threshold_schedule(n_frames, start=threshold_start, step=threshold_step,
                                    floor=threshold_floor)
    chosen: tuple[float, float, np.ndarray, np.ndarray] | None = None
    converged = False
    for i, threshold in enumerate(thresholds):  # a handful of thresholds
        last = i == len(thresholds) - 1
        areas_tried = area_schedule(a, start=start_area_fraction,
                                    low=last_area_fraction if last else min_area_fraction,
                                    step=area_step_fraction, inclusive=last)
        chosen, converged = _try_threshold(activity, threshold, areas_tried, expected_cells)
        if converged:
            break
    assert chosen is not None
    fallback = False
    if not converged and fallback_floor is not None:
        last_areas = area_schedule(a, start=start_area_fraction, low=last_area_fraction,
                                   step=area_step_fraction, inclusive=True)
        for threshold in fallback_schedule(n_frames, floor=threshold_floor, step=threshold_step,
                                           fallback_floor=fallback_floor):
            trial, ok = _try_threshold(activity, threshold, last_areas, expected_cells)
            if ok:
                chosen, converged, fallback = trial, True, True
                break
    threshold, min_area, labels, areas = chosen
    keep = np.concatenate([[False], areas >= min_area])
    mask = keep[labels]
    added = 0
    if extension_threshold is not None and fallback:
        # the extension keeps its distance below the threshold the search settled at
        extension_threshold -= threshold_floor - threshold / n_frames
    if extension_threshold is not None and extension_threshold * n_frames < threshold:
        low, _ = ndimage.label(activity > extension_threshold * n_frames, structure=_EIGHT)
        low_areas = np.bincount(low.ravel())
        touched = np.zeros(len(low_areas), bool)
        touched[np.unique(low[mask])] = True
        new = (low_areas >= min_area_fraction * a) & ~touched
        new[0] = False
        added = int(new.sum())
        mask |= new[low]
    # final clean-up of the published method: relabel, drop tiny fragments
    out = _components_of_at_least(mask, tiny_area_fraction * a)
    details = {"threshold": threshold, "min_area": min_area, "found": int(out.max(initial=0)), "added": added,
               "converged": converged, "fallback": fallback}
    log.info("soma candidates: %d (%d by the extension) at threshold %.0f of %d frames, "
             "min area %.0f px%s%s", details["found"], added, threshold, n_frames, min_area,
             " (below the published floor: the activity map is crowded)" if fallback else "",
             "" if converged else f" (fewer than the {expected_cells} expected)")
    return out, details


def significant_candidates(activity: np.ndarray, *, soma_area_range: tuple[float, float],
                           z: float = NOISY_CANDIDATE_Z, min_area_fraction: float = 80 / 89) -> np.ndarray:
    """Candidates of a movie too noisy for the search's thresholds: where the activity map stands out.

    Extension (not in ASTRA). The activity map counts the frames in which a
    pixel exceeds its tile's percentile; noise pulls every count towards that
    percentile's base rate (0.2 T for the 80th), so in a noisy movie visible,
    active cells stay far below thresholds that are fractions of ``T``. They
    still stand out against the map's own spread: the map is smoothed by a
    Gaussian of half the soma radius (at the centre of ``soma_area_range``)
    and its 8-connected components at least ``z`` robust SDs (1.4826 MAD)
    above its median, with at least ``min_area_fraction * A`` pixels, are
    returned.

    Parameters
    ----------
    activity : ndarray, shape (H, W)
        Activity map (any unit).
    soma_area_range : (float, float)
        Soma areas of the data, px (``A`` is the lower end).
    z : float
        Level, robust SDs above the median.
    min_area_fraction : float
        Smallest component, fraction of ``A``.

    Returns
    -------
    labels : ndarray of uint16, shape (H, W)
        0 = background, candidates 1..N in raster order (none for a flat map).
    """
    from scipy import ndimage

    lo, hi = (float(a) for a in soma_area_range)
    radius = math.sqrt(math.sqrt(lo * hi) / math.pi)
    smoothed = ndimage.gaussian_filter(np.asarray(activity, np.float64), radius / 2, mode="mirror")
    centre = float(np.median(smoothed))
    spread = 1.4826 * float(np.median(np.abs(smoothed - centre)))
    if not spread > 0:
        return np.zeros(smoothed.shape, np.uint16)
    return _components_of_at_least(smoothed > centre + z * spread, min_area_fraction * lo)


def _components_of_at_least(mask: np.ndarray, min_area: float) -> np.ndarray:
    """The 8-connected components of ``mask`` with at least ``min_area`` pixels, labelled 1..N (uint16) in raster
    order."""
    from scipy import ndimage

    labels, _ = ndimage.label(mask, structure=_EIGHT)
    areas = np.bincount(labels.ravel())
    keep = areas >= min_area
    keep[0] = False
    new_id = np.zeros(len(areas), np.uint16)
    new_id[keep] = np.arange(1, int(keep.sum()) + 1, dtype=np.uint16)
    return new_id[labels]


def blob_candidates(median_image: np.ndarray, candidates: np.ndarray, *, soma_area_range: tuple[float, float],
                    min_response: float = 0.5, max_added: int | None = None) -> tuple[np.ndarray, int]:
    """Add somata the median image shows but the activity search left without a candidate.

    Extension (not in ASTRA). The activity search converges on the expected
    number of components, so in a crowded FOV of dim cells many visible
    somata get no candidate, and without a candidate no crop and no
    whole-FOV input covers them. Blobs of the soma scale are read off the
    median image (scale-normalised Laplacian of Gaussian, sigma = soma
    radius / sqrt 2, at the centre of ``soma_area_range``); a local maximum
    whose response is at least ``min_response`` times the median response at
    the activity candidates' centres and that lies more than a soma radius
    from every candidate becomes a disc candidate of the smallest soma area.
    The network then accepts or rejects it like any other candidate.

    Parameters
    ----------
    median_image : ndarray, shape (H, W)
        Temporal median of the baseline-subtracted frames.
    candidates : ndarray of int, shape (H, W)
        Labels 1..N of the activity search (:func:`find_candidates`).
    soma_area_range : (float, float)
        Soma areas of the data, px.
    min_response : float
        Smallest blob response, relative to the activity candidates' median.
    max_added : int, optional
        At most this many blobs are added, the strongest first (default: as
        many as there are activity candidates), so the blobs complement the
        activity search and never swamp it (a giant soma's texture is full of
        soma-sized blobs).

    Returns
    -------
    labels : ndarray of ``candidates``' dtype, shape (H, W)
        ``candidates`` with the blobs as labels N+1...; unchanged when the
        activity search found nothing (no reference response: a FOV with no
        active cell gets no candidate from its image alone).
    added : int
    """
    from scipy import ndimage

    from astro3s.preprocess.local_filter import candidate_centres
    from astro3s.preprocess.scale import blob_responses

    labels = np.array(candidates, copy=True)
    n = int(labels.max()) if labels.size else 0
    lo, hi = (float(a) for a in soma_area_range)
    radius = math.sqrt(math.sqrt(lo * hi) / math.pi)
    response = blob_responses(median_image, [radius / math.sqrt(2.0)]) if n else None
    if response is None:  # no activity candidate, or a flat image
        return labels, 0
    response = response[0]
    peaks = (response == ndimage.maximum_filter(response, size=int(2 * radius) | 1)) & (response > 0)
    centres = candidate_centres(labels)
    centres = np.rint(centres[np.isfinite(centres).all(axis=1)]).astype(np.int64)  # absent labels: NaN rows
    reference = float(np.median(response[np.clip(centres[:, 0], 0, labels.shape[0] - 1),
                                         np.clip(centres[:, 1], 0, labels.shape[1] - 1)]))
    far = ndimage.distance_transform_edt(labels == 0) > radius
    ys, xs = np.nonzero(peaks & far & (response >= min_response * reference))
    limit = n if max_added is None else int(max_added)
    order = np.argsort(-response[ys, xs], kind="stable")[:max(limit, 0)]
    ys, xs = ys[order], xs[order]
    if len(ys) == 0:
        return labels, 0
    # each blob a disc of the smallest soma area around its peak, in pixels no candidate holds
    markers = np.zeros(labels.shape, labels.dtype)
    markers[ys, xs] = n + 1 + np.arange(len(ys))
    distance, (iy, ix) = ndimage.distance_transform_edt(markers == 0, return_indices=True)
    disc = (distance <= math.sqrt(lo / math.pi) + 0.5) & (labels == 0)
    labels[disc] = markers[iy[disc], ix[disc]]
    return labels, int(len(ys))
