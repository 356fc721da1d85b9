"""Cells of a pre-processed FOV: network on crops and FOV, then the combination rules."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any

from astro3s.inference.network import predict_crops_zoomed, predict_fov

log = logging.getLogger(__name__)

#: somata at least this many times wider than the parameters' get CLAHE tiles as much wider
#: (:func:`adapt_soma_scale`); below it the network has seen such cells with the parameters' tiles
#: (the training FOVs are enhanced with fixed tiles at their own soma scale), and widening the tiles
#: of the held-out family's FOVs whose somata are 1.2-1.4x wider cost as many cells as it gained
#: (experiments/results/heldout_ablation.md, 2026-12-05)
TILE_WIDENING_MIN = 1.5

#: filled rim cores (:func:`ring_soma_area`) needed to refuse binning a FOV whose blobs read giant somata:
#: one or two giant cytosolic somata with a dim nucleus give
#: cores of a fifth of their area (never-seen ``heldout_giant_262``: 2 cores, both giant cells lost when 2 refused);
#: a membrane-labelled FOV's several cells give one each (the cross-check's `membrane` movies: 3-7)
RING_VETO_MIN = 3

#: the whole-FOV network pass at the FOV's own pixels is a second witness of giant somata when the filled rim
#: cores refuse binning (:func:`soma_bin_factor`): the network, trained on somata up to ~2x the parameters'
#: centre, splits a giant soma into fragments, but when the fragments inside one blob that voted for binning add
#: up to a giant soma (``min_scale`` times wider than the centre) the cores' refusal is overruled (cross-check
#: ``zoom_84``: 5 gaps of a fibre mesh filled as cores, 1147 px of first-pass soma in the soma's blob;
#: ``d2_like_s5001``: 9 gaps between a giant cell's processes, 847 px in one blob; the 13 membrane-labelled
#: development FOVs whose cores refuse binning: at most 468 px in a blob, for 700 px needed). Binning a FOV whose
#: blob scale reads no giant somata on the first pass's own median soma was tried and dropped (it binned too
#: little: ASTRA's D2 layout ``RoiSet_SMALL_033`` 1 -> 4 cells). experiments/README.md, fourteenth session
FIRST_PASS_GIANT_SOMA = True

#: a FOV that the median image's blob scale leaves at its own pixels is also looked at binned
#: ``COARSE_CHECK_BIN x COARSE_CHECK_BIN`` by the whole-FOV network pass (:func:`coarse_bin_factor`): a soma that
#: pass draws at the parameters' size is ``COARSE_CHECK_BIN**2`` times larger at the FOV's pixels, a giant that the
#: blob vote missed where small bright blobs outnumber the giants (cross-check ``zoom_107``: out-of-focus discs and
#: axon boutons read 321 px for three somata of 1950-3213 px, which the pass at the FOV's own pixels split into 49
#: fragments). Of 187 development FOVs the vote leaves unbinned, the coarse pass drew somata of that size on exactly
#: the 6 whose truth holds a soma of >= 1500 px and on none of the 181 others
#: (experiments/results/coarse_check_probe.md); fresh cross-check ``zoom`` 108-111 0.308 -> 0.889 (the median's form)
#: (experiments/README.md, seventeenth session). Not where >= 3 filled rim cores measure smaller somata (they
#: measured the somata; eighteenth session: also where they had not refused a binning, ``heldout_membrane_293``).
#: ``CellRules.coarse_scale_check`` switches it
COARSE_SCALE_CHECK = True
#: bin factor of that look (a FOV narrower than ``cells.LARGE_SOMA_MIN_FOV * COARSE_CHECK_BIN`` px, 256, gets none)
COARSE_CHECK_BIN = 4
#: the coarse look bins only when the largest soma it draws is at least this many times the parameters' smallest
#: area (at the FOV's pixels: 1.2 x 1424 px); the smallest one still sets the factor. On the 6 development FOVs
#: with giants the largest coarse soma read 1.39-3.25x (1984-4624 px); on never-seen ``heldout_low_snr_286`` (the
#: draw 284-287, written before the look and not scored with it by the seventeenth session) one coarse "soma" of
#: 1456 px (1.02x) in a low-SNR haze binned a FOV of ~150-px somata 3x3 and added a false cell (eighteenth session)
COARSE_MIN_LARGEST = 1.2
#: narrowest side (px) of a binned FOV (:func:`max_bin_factor`)
MIN_BINNED_SIDE = 32

#: the median image's blob scale bins a FOV only from this width ratio to the parameters' centre soma (the
#: bin factor still rounds the scale; :func:`soma_bin_factor`'s ``min_blob_scale``). The vote's areas come in
#: steps of 1.56x; its lowest binning step, 785 px (2.12x the centre of 89-345 px, binned 2x2), held a giant soma
#: on 6 of 101 FOVs over every report, and binning lost the small cells of the others (development screen:
#: `heldout_mixed_309`/`_315`/`_317` 4 true cells more, `crosscheck_zoom_36` 43 false fewer, `crosscheck_thick`
#: 3 false more; a D2 layout's 3000-px soma that read 785 px is binned 4x4 by the coarse look instead, process
#: F1 0.02 -> 0.79; fresh 320-323 and cross-check 132-135: detection unchanged, soma and process F1 up on the
#: 2 FOVs it changed). 2.0 before the twenty-second session (experiments/README.md)
MIN_BLOB_SCALE = 2.4

#: factor below the parameters' centre soma area at which the first pass's median soma makes
#: :func:`adapt_soma_scale` shrink the scale (read when called). Lower than the enlarging side's 1.5:
#: at the parameters' scale the first pass misses many of a crowded FOV's smallest somata, so its
#: median overstates theirs (held-out `dense` movies: first-pass medians 117-121 px for true medians
#: of 82-91 px, left unzoomed at 1.5 and missing 3-13 somata of 40-55 px each; experiments/results/heldout_ablation.md)
SHRINK_TOLERANCE = 1.25

__all__ = ["adapt_soma_scale", "binned_preprocess", "coarse_bin_factor", "coarse_soma_scale",
           "estimate_soma_area_range", "factor_for_scale", "fixed_scale_info", "max_bin_factor",
           "segment_preprocessed", "soma_bin_factor", "soma_component_areas", "soma_px_in_blobs"]


def segment_preprocessed(pre: Any, model: Any, *, combine: Any = None, normalize: str = "mean",
                         batch_size: int = 32, device: str | None = None, amp: bool = True,
                         tiling: Any = None, fov_probs: Any = None, zoom: float = 1.0,
                         timings: dict[str, float] | None = None, border_centred_crops: bool = False,
                         border_centred_agreement: float = 0.0) -> Any:
    """Segment one pre-processed FOV into cells.

    Parameters
    ----------
    pre : Preprocessed
        Output of :func:`astro3s.preprocess.preprocess` (crops, boxes, FOV map).
    model : SegmentationModule or SegmentationNetwork
        Trained network.
    combine : CombineParams or mapping, optional
        Combination settings; soma areas default to ``pre.params.soma_area_range``.
        A mapping gives overrides of :meth:`CombineParams.from_preprocess`.
    normalize : {"mean", "none", "standardize"}
        Input normalisation used in training.
    batch_size : int
        Crops per forward pass.
    device : str, optional
        ``"auto"``, ``"cpu"``, ``"cuda"``; None keeps the model where it is.
    amp : bool
        bfloat16 autocast on CUDA.
    tiling : TilingParams, optional
        Tiling of the whole-FOV pass (:func:`predict_fov`).
    fov_probs : ndarray of float, shape (3, H, W), optional
        The whole-FOV pass of this ``pre`` when it was already run (e.g. by
        :func:`adapt_soma_scale`) at the same ``zoom``; None runs it.
    zoom : float
        The network sees crops and FOV map enlarged by this factor (``info["zoom"]``
        of :func:`adapt_soma_scale`: cells of the size it was trained on); its
        outputs are resampled back to the FOV's pixels. 1: as they are.
    timings : dict, optional
        Receives ``network_s`` and ``combine_s``.
    border_centred_crops : bool
        At ``zoom`` 1, the candidates whose box the FOV's edge moved are also seen on a crop centred on
        them, the FOV mirrored beyond the edge (:func:`astro3s.inference.network.with_border_centred_predictions`;
        ``CellRules.border_centred_crops``).
    border_centred_agreement : float
        A centred crop is used only where the whole-FOV pass calls at least this fraction of its soma pixels
        soma too (``CellRules.border_centred_agreement``; 0: always).

    Returns
    -------
    Segmentation
        ``soma`` and ``processes`` uint16 ``(H, W)`` label images sharing cell ids.
        Out-of-focus look-alikes are removed by their soma blur when
        ``pre.median_image`` is kept (``CombineParams.max_relative_blur``).
    """
    from astro3s.postprocess import CombineParams
    from astro3s.postprocess import combine as combine_cells

    if combine is None:
        params = CombineParams.from_preprocess(pre.params)
    elif isinstance(combine, CombineParams):
        params = combine
    else:
        params = CombineParams.from_preprocess(pre.params, **dict(combine))
    t0 = time.perf_counter()
    crop_probs, crop_boxes = predict_crops_zoomed(model, pre, zoom, normalize=normalize, batch_size=batch_size,
                                                  device=device, amp=amp)
    if fov_probs is None:
        fov_probs = predict_fov(model, pre, normalize=normalize, tiling=tiling, device=device, amp=amp, zoom=zoom)
    if border_centred_crops and zoom <= 1.0:
        from astro3s.inference.network import with_border_centred_predictions

        crop_probs = with_border_centred_predictions(model, pre, crop_probs, normalize=normalize,
                                                     batch_size=batch_size, device=device, amp=amp,
                                                     fov_probs=fov_probs, min_agreement=border_centred_agreement)
    t1 = time.perf_counter()
    seg = combine_cells(crop_probs, crop_boxes, fov_probs, params=params)
    if params.max_relative_blur is not None and getattr(pre, "median_image", None) is not None:
        from astro3s.postprocess.sharpness import remove_blurred_cells

        seg = remove_blurred_cells(seg, pre.median_image, max_relative_blur=params.max_relative_blur,
                                   min_cells=params.min_cells_for_blur,
                                   min_pixel_widening=params.min_pixel_widening)
    if timings is not None:
        timings["network_s"] = t1 - t0
        timings["combine_s"] = time.perf_counter() - t1
    return seg


def estimate_soma_area_range(fov_probs: Any, *, min_area: int = 10, spread: float = 2.0,
                             ) -> tuple[float, float] | None:
    """Soma area range of a FOV from the network's whole-FOV soma prediction.

    Parameters
    ----------
    fov_probs : array_like of float, shape (3, H, W)
        Whole-FOV class probabilities.
    min_area : int
        Soma components smaller than this (px) are ignored as specks.
    spread : float
        The range is ``(m / spread, m * spread)`` around the area-weighted
        median ``m`` of the component areas (2: a ratio of 4, as in D1's
        89-345 px).

    Returns
    -------
    (float, float) or None
        None when the network sees no soma.
    """
    return _area_range(soma_component_areas(fov_probs, min_area=min_area), spread=spread)


def _area_range(areas: Any, *, spread: float = 2.0) -> tuple[float, float] | None:
    """:func:`estimate_soma_area_range` from the sorted component areas (None when there are none)."""
    import numpy as np

    if areas.size == 0:
        return None
    # area-weighted median: the size of the component holding the median soma pixel, so that
    # a crowd of small fragments (edges, distractors) does not pull the scale down
    cumulative = np.cumsum(areas)
    median = float(areas[np.searchsorted(cumulative, cumulative[-1] / 2.0)])
    return (round(median / spread, 1), round(median * spread, 1))


def soma_px_in_blobs(fov_probs: Any, blobs: Any, *, min_area: float = 0.0) -> float:
    """Most soma pixels of a whole-FOV pass inside the disc of one blob (0 when none qualifies).

    Parameters
    ----------
    fov_probs : array_like of float, shape (3, H, W)
        Whole-FOV class probabilities; a pixel is soma where that class is the most probable.
    blobs : SomaBlobs
        Blobs of the FOV's summary image (:func:`astro3s.preprocess.scale.soma_blobs`).
    min_area : float
        Only blobs whose disc (``pi * radius**2``) is at least this large, px.

    Returns
    -------
    float
        The largest count over the qualifying blobs.
    """
    import numpy as np

    from astro3s.models.classes import SOMA

    soma = np.asarray(fov_probs).argmax(axis=0) == SOMA
    height, width = soma.shape
    best = 0
    for row, col, radius in zip(blobs.rows, blobs.cols, blobs.radii):  # a few dozen blobs at most
        if np.pi * radius**2 < min_area:
            continue
        r = int(np.ceil(radius))
        top, left = max(int(row) - r, 0), max(int(col) - r, 0)
        window = soma[top:int(row) + r + 1, left:int(col) + r + 1]
        yy, xx = np.ogrid[top:top + window.shape[0], left:left + window.shape[1]]
        disc = (yy - int(row)) ** 2 + (xx - int(col)) ** 2 <= radius**2
        best = max(best, int(np.count_nonzero(window & disc)))
    return float(best)


def soma_component_areas(fov_probs: Any, *, min_area: int = 10) -> Any:
    """Sorted areas (px, int64) of the soma components of a whole-FOV pass, specks under ``min_area`` left out.

    Parameters
    ----------
    fov_probs : array_like of float, shape (3, H, W)
        Whole-FOV class probabilities; a pixel is soma where that class is the most probable.
    """
    import numpy as np
    from scipy import ndimage as ndi

    from astro3s.models.classes import SOMA

    soma = np.asarray(fov_probs).argmax(axis=0) == SOMA
    labels, n = ndi.label(soma, structure=np.ones((3, 3), bool))
    if n == 0:
        return np.zeros(0, np.int64)
    areas = np.bincount(labels.ravel())[1:]
    return np.sort(areas[areas >= int(min_area)])


def fixed_scale_info(params: Any) -> dict[str, Any]:
    """The :func:`adapt_soma_scale` record of a run that keeps ``params.soma_area_range``."""
    configured = [float(a) for a in params.soma_area_range]
    return {"configured": configured, "estimated": None, "used": list(configured), "rescaled": False, "zoom": 1.0}


def ring_soma_area(core_areas: Any, *, rim_px: float = 2.0, min_rings: int = RING_VETO_MIN) -> float | None:
    """Typical soma area (px) of a FOV from the cores its somata's bright rims enclose.

    With a membrane-targeted indicator a soma is a bright rim around a dim core
    (:func:`astro3s.preprocess.ring_cores.fill_ring_cores`, which records the
    cores' areas in ``Preprocessed.details["ring_core_areas"]``): a core of
    equivalent radius ``r`` belongs to a soma of area about ``pi * (r + rim_px)**2``.
    A core is the basin its rim encloses (``PreprocessParams.ring_core_fill="rim"``):
    on the held-out and cross-check membrane development movies (8 and 12) the
    estimate is 0.61-1.20x the true median soma (0.42-1.0x with the deep pixels
    alone, ``"saddle"``, before 2026-12-07, fifteenth session), and
    :func:`soma_bin_factor` uses it only to refuse binning.

    Parameters
    ----------
    core_areas : sequence of int or None
        Areas (px) of the filled cores.
    rim_px : float
        Width of the rim beyond a core, px.
    min_rings : int
        Fewer cores than this give no estimate.

    Returns
    -------
    float or None
        The median soma area over the cores.
    """
    import numpy as np

    if core_areas is None or len(core_areas) < int(min_rings):
        return None
    radii = np.sqrt(np.asarray(core_areas, np.float64) / np.pi)
    return float(np.median(np.pi * (radii + float(rim_px)) ** 2))


def soma_bin_factor(pre: Any, *, min_scale: float = 2.0, own_reach: float | None = None,
                    wide_dominance: float | None = None,
                    first_pass: Callable[[], Any] | None = None,
                    min_blob_scale: float | None = None) -> tuple[int, dict[str, Any]]:
    """How much to bin a FOV whose somata are much larger than the parameters', read off its image.

    The typical soma area is read off the median image by blob scale selection
    (:func:`astro3s.preprocess.blob_soma_area`), before any network pass:
    the network's own first pass cannot see somata far larger than those it
    was trained on (CLAHE equalises their interior into texture, the network
    splits them into soma-sized fragments, which look like a plausible soma
    scale, and their processes run far beyond the crop boxes). When the somata
    are ``scale >= min_scale`` times wider than the centre of
    ``soma_area_range``, the FOV is best segmented binned ``round(scale)``
    times (:func:`binned_preprocess`): every stage then sees cells of the
    training data's size, processes included.

    ``own_reach`` and ``wide_dominance`` go to :func:`~astro3s.preprocess.blob_soma_area`
    (None: its defaults; ``CellRules.own_reach`` and ``.wide_dominance``).
    ``min_blob_scale`` (None: :data:`MIN_BLOB_SCALE`; ``CellRules.min_blob_scale``) is the
    smallest blob scale that bins, when above ``min_scale``: the vote's scale is read off
    blobs, and haze or a bright territory around a soma answers it as a somewhat wider one.

    A membrane-labelled FOV's bright territories also answer the blob search
    as giant somata; when at least :data:`RING_VETO_MIN` dim cores inside
    bright rims were filled (``pre.details["ring_core_areas"]``) and the
    somata they imply (:func:`ring_soma_area`) are not giant, binning is
    refused.

    ``first_pass`` (None: not asked) runs the whole-FOV network pass at the
    FOV's own pixels; it is called only when the cores refuse binning, and
    the FOV is then binned by the blob scale after all
    (:data:`FIRST_PASS_GIANT_SOMA`) when the pass's soma pixels inside one
    blob that voted for binning add up to a soma ``min_scale`` times wider
    than the centre: a giant soma that the network, trained on smaller ones,
    splits into fragments, beside gaps of a fibre mesh or of its own
    processes that were filled as cores.

    Returns
    -------
    factor : int
        1: leave the FOV as it is.
    info : dict
        ``blob_area`` (px, or None), ``coarse_scale`` (1 when below ``min_scale``), ``bin_factor``;
        ``ring_area`` when the cores refused binning; ``first_pass_soma`` (px) when the network was asked:
        its most soma pixels inside one blob that voted for binning.
    """
    from astro3s.preprocess import blob_soma_area
    from astro3s.preprocess.scale import soma_blobs

    info: dict[str, Any] = {"blob_area": None, "coarse_scale": 1.0, "bin_factor": 1}
    if pre.median_image is None:
        return 1, info
    # the voting blobs found once: their median is the scale, and the network's evidence is read inside them
    blobs = soma_blobs(pre.median_image, own_reach=own_reach, wide_dominance=wide_dominance)
    area = blob_soma_area(pre.median_image, blobs=blobs)
    if area is None:
        return 1, info
    lo, hi = (float(a) for a in pre.params.soma_area_range)
    centre = (lo * hi) ** 0.5
    scale = (area / centre) ** 0.5
    info["blob_area"] = round(float(area), 1)
    if scale < max(min_scale, MIN_BLOB_SCALE if min_blob_scale is None else float(min_blob_scale)):
        return 1, info
    rings = ring_soma_area((pre.details or {}).get("ring_core_areas"))
    if rings is not None and (rings / centre) ** 0.5 < min_scale:
        # a membrane-labelled FOV whose bright territories answer the blob search as giant somata: its
        # somata's rims say they are not, unless the network draws a giant
        # soma's worth of soma inside one of the blobs that voted
        info["ring_area"] = round(float(rings), 1)
        probs = None if first_pass is None else first_pass()
        if probs is None:
            return 1, info
        giant = min_scale**2 * centre
        in_blob = 0.0 if blobs is None else soma_px_in_blobs(probs, blobs, min_area=giant)
        info["first_pass_soma"] = round(in_blob, 1)
        if in_blob < giant:
            return 1, info
    factor = factor_for_scale(scale, min_scale=min_scale, max_factor=max_bin_factor(pre.median_image.shape))
    info["coarse_scale"] = round(float(scale), 3)
    if factor == 1:
        return 1, info
    info["bin_factor"] = factor
    return factor, info


def factor_for_scale(scale: float, *, min_scale: float = 2.0, max_factor: int | None = None) -> int:
    """Bin factor for somata ``scale`` times wider than the parameters' centre: ``round(scale)``, at most
    ``max_factor``; 1 (no binning) when ``scale < min_scale`` or the factor is under 2. The rule of
    :func:`soma_bin_factor` and :func:`coarse_bin_factor`."""
    factor = int(round(scale)) if max_factor is None else min(int(round(scale)), int(max_factor))
    return factor if scale >= min_scale and factor >= 2 else 1


def max_bin_factor(fov_shape: tuple[int, ...]) -> int:
    """Largest bin factor of a FOV of ``fov_shape`` (H, W): a binned FOV narrower than
    :data:`MIN_BINNED_SIDE` px leaves the network nothing to see."""
    return min(fov_shape) // MIN_BINNED_SIDE


def coarse_bin_factor(coarse_probs: Any, factor: int, soma_area_range: tuple[float, float], *,
                      min_scale: float = 2.0, max_factor: int | None = None,
                      min_largest: float = COARSE_MIN_LARGEST) -> tuple[int, list[int]]:
    """Bin factor that the somata of a whole-FOV pass over the FOV binned ``factor x factor`` ask for.

    The pass sees the FOV ``factor`` times smaller; a soma it draws with at
    least the parameters' smallest area (``soma_area_range[0]``, binned pixels)
    is ``factor**2`` times that at the FOV's own pixels. The smallest of them,
    ``scale`` times wider than the centre ``sqrt(lo * hi)`` of the range
    (:func:`coarse_soma_scale`), asks for binning ``round(scale)`` times when
    ``scale >= min_scale``, as :func:`soma_bin_factor` does with the median
    image's blob scale. The smallest, not the median: binned to it, every
    giant is at least the training data's size (the binned pass fits its own
    soma range to larger ones), and a patch of haze the coarse pass draws as a
    soma, larger than the cells, cannot bin them out of sight (cross-check
    ``zoom_111``: 1584 and 7552 px; the median binned 5x5 and lost the cell,
    the smallest 3x3 finds it; ``zoom_47`` and ``zoom_49``, binned 4x4 by the
    median, read the same 3x3).

    Parameters
    ----------
    coarse_probs : array_like of float, shape (3, h, w)
        Class probabilities of the pass over the binned FOV.
    factor : int
        The bin factor of that pass.
    soma_area_range : (float, float)
        The parameters' soma areas (px).
    min_scale : float
        Smallest width ratio that bins.
    max_factor : int or None
        Largest factor returned (None: no limit).
    min_largest : float
        No binning unless the largest of those somata is at least this many times the smallest area
        (:data:`COARSE_MIN_LARGEST`; 1: any).

    Returns
    -------
    bin_factor : int
        1: no soma of that size, none large enough, or not wide enough to bin.
    areas : list of int
        Those somata's areas at the FOV's own pixels (px), sorted.
    """
    import numpy as np

    lo, hi = (float(a) for a in soma_area_range)
    binned = soma_component_areas(coarse_probs, min_area=max(int(np.ceil(lo)), 1))
    areas = [int(a) * int(factor) ** 2 for a in binned]
    if not areas or max(areas) < float(min_largest) * lo * int(factor) ** 2:
        return 1, areas
    return factor_for_scale(coarse_soma_scale(areas, (lo, hi)), min_scale=min_scale, max_factor=max_factor), areas


def coarse_soma_scale(areas: Any, soma_area_range: tuple[float, float]) -> float:
    """How many times wider than the centre ``sqrt(lo * hi)`` of ``soma_area_range`` the smallest of ``areas`` (px) is.

    The scale :func:`coarse_bin_factor` bins by; ``areas`` must not be empty.
    """
    lo, hi = (float(a) for a in soma_area_range)
    return (float(min(areas)) / (lo * hi) ** 0.5) ** 0.5


def binned_preprocess(pre: Any, factor: int, *, progress: bool | None = False) -> Any:
    """Pre-process the motion-corrected movie of ``pre`` again, binned ``factor x factor``.

    Motion correction is not redone (the frames are ``pre.corrected``'s); the
    other parameters are ``pre.params``', in binned pixels, so cells ``factor``
    times wider than the parameters' are seen at the parameters' scale. The
    CLAHE tiles, given as a count per FOV side, are made ``factor`` times fewer
    (:func:`astro3s.preprocess.clahe_tiles_for_scale`), so that they keep
    their size in pixels.

    Returns
    -------
    Preprocessed
        Of a movie ``(T, ceil(H / factor), ceil(W / factor))``.
    """
    from astro3s.io import Movie
    from astro3s.preprocess import BinnedFrames, clahe_tiles_for_scale, preprocess

    if pre.corrected is None:
        raise ValueError("binned_preprocess needs the motion-corrected movie (pre.corrected)")
    movie = Movie.from_array(BinnedFrames(pre.corrected, factor), fs=pre.fs, path=pre.source)
    # the binned frames come from the corrected movie: motion and scan lines were put right there (binned rows
    # are not scan lines)
    params = pre.params.replace(motion_correction=False, line_correction=False,
                                clahe_tiles=clahe_tiles_for_scale(tuple(pre.params.clahe_tiles), factor))
    return preprocess(movie, params, progress=progress)


def adapt_soma_scale(pre: Any, model: Any, *, normalize: str = "mean", device: str | None = None, amp: bool = True,
                     tolerance: float = 1.5, shrink_tolerance: float | None = None, max_zoom: float = 3.0,
                     tiling: Any = None, blob_area: float | None = None,
                     scale_tiles: bool = True, fov_probs: Any = None) -> tuple[Any, dict[str, Any], Any]:
    """Fit the soma scale of the pre-processing to the movie, from a first network pass.

    Cell sizes vary tenfold between microscopes, zooms and preparations, and
    every area threshold of the candidate search and of the combination is a
    multiple of ``soma_area_range``. The whole-FOV network pass (trained on
    a wide spread of cell sizes) gives the somata's median area; when it
    differs from the centre ``sqrt(lo * hi)`` of the parameters' range by
    more than a factor ``tolerance`` (above) or ``shrink_tolerance`` (below),
    the candidate stages run again with the estimated range (:func:`astro3s.preprocess.reselect_candidates`). (The
    median is compared with the centre, not with the ends: a movie whose
    median soma is near ``lo`` has half its somata below ``lo``, and the
    combination's area filters, ``[1.0 lo, 1.15 hi]`` for the whole-FOV
    somata, drop them.)

    Somata smaller than the parameters' (those of the training data) are
    also shown to the network enlarged, by ``zoom = sqrt(centre / median)``
    (at most ``max_zoom``; never shrunk, as the crops hold no more than their
    box): the network finds small somata at its training scale that it
    misses at their own (:func:`segment_preprocessed`).

    Somata larger than the parameters' are not shrunk; with ``scale_tiles``,
    when they are at least ``TILE_WIDENING_MIN`` times wider, the
    enhancement is made again with CLAHE tiles as much wider as the somata
    are (:func:`astro3s.preprocess.clahe_tiles_for_scale`): CLAHE on
    65536 bins is close to a rank transform of each tile, so a soma as wide
    as its tile is ranked against itself and equalised into black-and-white
    texture, which the network does not take for a soma (held-out
    ``heldout_mixed_97``: 3 of 6 somata, 1.45-1.8x wider than the training
    data's, missed that way). Somata much larger than the parameters' are
    handled before, by binning the FOV (:func:`soma_bin_factor`, used by
    :func:`astro3s.inference.segment_movie`).

    A shrink needs a second opinion: with ``blob_area`` (the median image's
    blob scale, :func:`soma_bin_factor`) at least the configured centre, the
    estimate is recorded but the candidates and the zoom stay as configured
    (``shrink_refused``). On a FOV of neuropil texture the first pass draws
    the texture as small "somata" and the fit collapses onto them
    (``d1_like_s8004``: 33 false cells, ``tiny_s8400``); somata really
    smaller than the parameters' are small blobs too (every ``dense``,
    ``small``, ``d3_like`` and ``d4_like`` movie). Chosen on development
    movies (experiments/results/heldout_ablation.md).

    Parameters
    ----------
    pre : Preprocessed
    model : SegmentationNetwork or SegmentationModule
    normalize, device, amp, tiling
        As for :func:`astro3s.inference.predict_fov`.
    tolerance : float
        Factor above the configured median soma area within which nothing changes.
    shrink_tolerance : float or None
        The same below it (None: ``SHRINK_TOLERANCE``).
    max_zoom : float
        Largest enlargement of the network inputs.
    blob_area : float or None
        Typical soma area of the median image, px (None: no second opinion).
    scale_tiles : bool
        Widen the CLAHE tiles with the somata when they are larger than the
        parameters' (the re-selection then enhances again from the median image).
    fov_probs : ndarray of float, shape (3, H, W), optional
        The whole-FOV pass of ``pre`` at its own pixels when already run
        (:func:`soma_bin_factor`'s ``first_pass``); None runs it.

    Returns
    -------
    pre : Preprocessed
        ``pre`` itself, or the re-selected result.
    info : dict
        ``configured`` and ``used`` ranges, ``estimated`` range (or None),
        ``rescaled`` flag and ``zoom`` of the network inputs;
        ``shrink_refused`` when ``blob_area`` vetoed a shrink; ``first_pass_somata``:
        how many somata (of 10 px or more) the first pass drew.
    fov_probs : ndarray of float, shape (3, H, W), or None
        The whole-FOV pass of the returned ``pre`` (pass it on to
        :func:`segment_preprocessed`), None when it was not run or the
        candidates changed.
    """
    import dataclasses

    from astro3s.preprocess import clahe_tiles_for_scale, reselect_candidates

    info = fixed_scale_info(pre.params)
    centre = (info["configured"][0] * info["configured"][1]) ** 0.5
    if pre.corrected is None or len(pre.crop_boxes) == 0 and pre.fov_mask.sum() == 0:
        return pre, info, None
    if fov_probs is None:
        fov_probs = predict_fov(model, pre, normalize=normalize, tiling=tiling, device=device, amp=amp)
    areas = soma_component_areas(fov_probs)
    info["first_pass_somata"] = int(areas.size)
    estimate = _area_range(areas)
    if estimate is None:
        return pre, info, fov_probs
    info["estimated"] = list(estimate)
    median = (estimate[0] * estimate[1]) ** 0.5
    shrink_tolerance = SHRINK_TOLERANCE if shrink_tolerance is None else float(shrink_tolerance)
    if centre / shrink_tolerance <= median <= centre * tolerance:
        return pre, info, fov_probs
    if median < centre / shrink_tolerance and blob_area is not None and blob_area >= centre:
        log.info("soma scale: the first pass's somata (median %.0f px) are smaller than the parameters', "
                 "but the median image's blobs are not (%.0f px): keeping the parameters' scale",
                 median, blob_area)
        info["shrink_refused"] = True
        return pre, info, fov_probs
    params = dataclasses.replace(pre.params, soma_area_range=estimate)
    widening = (median / centre) ** 0.5
    if scale_tiles and widening >= TILE_WIDENING_MIN and pre.median_image is not None:
        tiles = clahe_tiles_for_scale(tuple(pre.params.clahe_tiles), widening)
        params = dataclasses.replace(params, clahe_tiles=tiles,
                                     clahe_min_tile=int(round(pre.params.clahe_min_tile * widening)))
        info["clahe_tiles"] = list(tiles)
    info.update(used=list(estimate), rescaled=True,
                zoom=float(min(max((centre / median) ** 0.5, 1.0), max_zoom)))
    return reselect_candidates(pre, params), info, None
