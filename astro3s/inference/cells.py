"""The cells of a pre-processed movie: :func:`segment_movie` and the rules around its network passes.

:func:`segment_movie` is the segmentation stage of :func:`astro3s.inference.infer_movie`:
the soma scale (a FOV of large somata binned, :func:`binned_pass`; otherwise the
scale fitted by a first pass, :func:`astro3s.inference.segment.adapt_soma_scale`),
the network and the combination (:func:`astro3s.inference.segment.segment_preprocessed`),
then the rules that add what a pass missed (:func:`add_large_cells`,
:func:`add_plateau_cells`) or remove what it should not have drawn
(:func:`drop_blurred_additions`, :func:`drop_small_additions`, :func:`reject_lookalikes`,
:func:`drop_blurred_pair`),
the somata and processes redrawn on the movie's median image
(:mod:`astro3s.postprocess.grow`), cells far smaller than the cell they are joined to
absorbed as its processes (:func:`with_fragments_absorbed`) and each cell's process
area limited (:func:`with_limited_processes`). The constants below are the rules' default settings, each
with the evidence it was chosen on (``experiments/results/heldout_ablation.md``); a run reads the settings
it is given from ``InferenceOptions.rules`` (:class:`astro3s.inference.rules.CellRules`, whose defaults they
are), so ``astro3s-infer rules.NAME=value`` changes one without editing code.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    from astro3s.inference.pipeline import InferenceOptions

log = logging.getLogger(__name__)

__all__ = [
    "add_large_cells", "add_plateau_cells", "binned_options", "binned_pass", "drop_blurred_additions",
    "drop_blurred_pair", "drop_faint_cells", "drop_ring_cells", "drop_small_additions", "reject_lookalikes",
    "ring_cell_processes", "segment_movie", "size_filter_overrides", "with_fragments_absorbed",
    "with_limited_processes", "with_pixel_widening_for"]

#: The finest factor of a binned FOV's passes (:func:`segment_movie`); 1: a FOV binned 2x2 is also
#: segmented at its own scale, which adds the smaller cells of FOVs mixing soma sizes (held-out
#: `mixed` movies binned 2x2: detection F1 0.77 -> 0.89; experiments/results/heldout_ablation.md).
FINEST_BIN_FACTOR = 1


def reject_lookalikes(seg: Any, pre: Any, options: InferenceOptions) -> Any:
    """``seg`` without the cells the look-alike classifier rejects, on ``pre``'s median image.

    Runs when ``CombineParams.reject_lookalikes`` (``options.combine``, default
    on) and the median image was kept; see :mod:`astro3s.postprocess.lookalike`.
    """
    from astro3s.postprocess import CombineParams

    # the option as given, else the field's default (a binned FOV's inner pass has it off: binned_options)
    if not options.combine.get("reject_lookalikes", CombineParams.reject_lookalikes) \
            or getattr(pre, "median_image", None) is None:
        return seg
    from astro3s.postprocess.lookalike import remove_lookalikes

    return remove_lookalikes(seg, pre.median_image)


def drop_blurred_additions(seg: Any, n_before: int, pre: Any, options: InferenceOptions, *,
                           image: np.ndarray | None = None, max_blur: float | None = None,
                           count_key: str = "added_blurred_removed") -> tuple[Any, int]:
    """Cells ``n_before + 1..`` of ``seg`` (added by a finer scale) without those blurrier than the others.

    A cell that only a second, finer scale finds must be in focus as the
    cells found before it are: its soma edge blur at most
    ``CombineParams.max_relative_blur`` times their median (every cell's median
    when the additions outnumber them, :func:`additions_dominate`)
    (:func:`astro3s.postprocess.sharpness.remove_blurred_cells` with them as
    the reference), on the movie's median image. At the finer scale the
    network also draws soft out-of-focus blobs (``d2_like`` development
    movies: blur 1.8-2.9 times the first cells'; the giant somata it added on
    diagnosed held-out movies: 0.8-1.35). With ``options.rules.border_additions``
    (``BORDER_ADDITIONS``), an added soma the FOV's edge cuts is judged by its
    edge width in pixels instead: its radius reads small.

    ``image`` and ``max_blur`` judge the edges on another summary image with another bound (defaults: the
    median image, ``CombineParams.max_relative_blur``); ``count_key`` names the count of cells removed.

    Returns
    -------
    seg : Segmentation
    n_added : int
        Added cells kept.
    """
    from astro3s.postprocess import CombineParams
    from astro3s.postprocess.sharpness import remove_blurred_cells

    if max_blur is None:
        max_blur = options.combine.get("max_relative_blur", CombineParams.max_relative_blur)
    if image is None:
        image = getattr(pre, "median_image", None)
    if max_blur is not None and image is not None and seg.n_cells > n_before:
        found_before = np.arange(seg.n_cells) < n_before
        # additions that outnumber the cells found before are the FOV's cells: their blur is judged against
        # every cell's median (the cells found before are kept either way)
        reference = None if additions_dominate(seg.soma_area, n_before) else found_before
        before = seg.counts.get("blurred_removed")
        seg = remove_blurred_cells(seg, image, max_relative_blur=float(max_blur), min_cells=1,
                                   reference=reference, keep=found_before,
                                   border_in_pixels=options.rules.border_additions)
        # the first pass's own count stays what it was; this one is counted apart
        counts = {**seg.counts, count_key: seg.counts["blurred_removed"]}
        if before is None:
            counts.pop("blurred_removed")
        else:
            counts["blurred_removed"] = before
        seg = dataclasses.replace(seg, counts=counts)
    return seg, seg.n_cells - n_before


#: additions that are at least this many and this many times the cells found before them are the FOV's own
#: cells, not a few extra ones: the rules on added cells then judge them with all the cells, as on a FOV
#: segmented at one scale (:func:`additions_dominate`)
MANY_ADDITIONS = (4, 2.0)
#: ... and whose median soma is at least this fraction of the median soma of the cells found before (cells of
#: the same field: on ASTRA's consensus annotations a FOV's largest soma is at most 5.5x its smallest)
DOMINANT_RELATIVE_AREA = 1.0 / 6.0


def additions_dominate(soma_area: Any, n_before: int, *, many: tuple[int, float] = MANY_ADDITIONS,
                       min_relative_area: float = DOMINANT_RELATIVE_AREA) -> bool:
    """Whether the cells a finer pass added (ids ``n_before + 1..``) are the FOV's cells rather than extras.

    The rules on added cells (:func:`drop_blurred_additions`, :func:`drop_small_additions`) judge them
    against the cells found before, which is right for a few extra cells beside many (the soft blobs a
    finer pass draws beside a giant astrocyte, ``d2_like``). When the coarser pass found one or two cells
    and the finer one most of the FOV's (its soma scale was misread: cross-check ``vessels_5``, whose
    edge blobs read ~1200-px somata for ~250-px ones, lost 8 of 9 added cells judged against one bright
    cell), the cells found before are no reference: every cell is judged with the others. That needs
    the additions to be many (``many``: at least ``many[0]`` and ``many[1]`` times the cells found
    before) and of a size cells of one field share (their median soma at least ``min_relative_area``
    of the first cells'): beside the two ~2100-px giants of held-out ``giant_184`` a finer pass adds
    four specks of ~90 px, which stay judged against the giants.

    Parameters
    ----------
    soma_area : array_like of int, shape (n_cells,)
        Soma areas, the cells found before first (``Segmentation.soma_area``).
    n_before : int
    """
    area = np.asarray(soma_area, np.float64)
    n_added = len(area) - int(n_before)
    if n_added < int(many[0]) or n_added < float(many[1]) * max(int(n_before), 1):
        return False
    if n_before < 1:
        return True
    return float(np.median(area[n_before:])) >= float(min_relative_area) * float(np.median(area[:n_before]))


# an added cell's soma area over the median of the cells found before it, below which it goes
# (:func:`drop_small_additions`; chosen 2026-12-05, experiments/results/heldout_ablation.md)
MIN_ADDED_RELATIVE_AREA = 0.4


def drop_small_additions(seg: Any, n_before: int, *, min_relative_area: float = MIN_ADDED_RELATIVE_AREA,
                         border_radii: bool = False) -> tuple[Any, int]:
    """Cells ``n_before + 1..`` of ``seg`` (added by a finer scale) without those far smaller than the others.

    A FOV is segmented binned at the scale its median image's blobs give
    (:func:`astro3s.inference.segment.soma_bin_factor`), and at finer scales
    for the cells that scale misses: it is read in steps of 1.56x in area and
    can be a step off. A cell only a finer pass finds, with a soma under
    ``min_relative_area`` times the median soma area of the cells found
    before it (0.4: about two such steps, 1 / 1.56^2 = 0.41, below the FOV's
    scale), is at that pass's scale of neuropil texture rather than of the
    FOV's cells. Measured when added: the held-out movies enlarged 1.5x
    (somata ~530 px, binned 2x2) got three faint patches from their
    own-scale pass on ``long_0`` (0.15-0.29x), a binned ``giant`` FOV one
    (0.32x); the added cells that were true on the development and held-out
    movies looked at were 0.45-0.98x (the smallest in a ``mixed`` FOV). When
    the additions outnumber the cells found before (:func:`additions_dominate`),
    the median is every cell's. With ``border_radii``, an added soma the FOV's
    edge cuts counts with the area of the disc its extent along the edge gives
    (:func:`astro3s.postprocess.border.apparent_soma_radii`): the edge hides part of
    it (the reference median stays that of the areas as found).

    Returns
    -------
    seg : Segmentation
    n_added : int
        Added cells kept.
    """
    from astro3s.postprocess.combine import remove_cells

    if seg.n_cells <= n_before or n_before < 1:
        return seg, seg.n_cells - n_before
    area = np.asarray(seg.soma_area, np.float64)
    typical = float(np.median(area if additions_dominate(area, n_before) else area[:n_before]))
    judged = area[n_before:]
    if border_radii:  # the added cells only: the reference stays what the cells found show
        from astro3s.postprocess.border import apparent_soma_radii

        judged = np.maximum(judged, np.pi * apparent_soma_radii(seg.soma)[n_before:] ** 2)
    drop = np.zeros(seg.n_cells, bool)
    drop[n_before:] = judged < float(min_relative_area) * typical
    before = seg.counts.get("small_added_removed", 0)
    seg = remove_cells(seg, drop, count_key="small_added_removed")
    seg = dataclasses.replace(seg, counts={**seg.counts, "small_added_removed": before + int(drop.sum())})
    return seg, seg.n_cells - n_before


# a soma the FOV's edge cuts that a finer pass adds is judged by what the edge leaves of it: its edge width in
# pixels (drop_blurred_additions) and the disc its extent along the edge gives (drop_small_additions), as its
# area and radius read small. Since 2026-12-06 (sixth session): on cross-check `zoom` 28-39 all four true cells
# missed were cut by the FOV's edge; two, bright and in focus, were dropped as blurred additions (edge width
# 1.04-1.05x the other cells' in pixels, 2.0-2.1x relative to their radii) and were small ones too (0.24-0.27x
# the median area); experiments/results/heldout_ablation.md. False turns it off
BORDER_ADDITIONS = True

# a candidate whose crop box the FOV's edge moved is also seen on a crop centred on it, the FOV mirrored beyond the
# edge (astro3s.inference.network.with_border_centred_predictions): the box moved inside the FOV puts a soma the edge
# cuts at its crop's edge, where the network sees none (the cross-check's missed cells are its border cells: 9 of 48
# against 1 of 239 inner ones). An option, off: tried 2026-12-06 (sixth session; heldout_ablation.md). Its second
# form (seventh session: only the centred crop's soma on the candidate, when the edge cuts it and the whole-FOV pass
# agrees) changed nothing on 112 never-seen FOVs and the layouts, +3 true / -1 false cells on cross-check 32-35
# where it was diagnosed, but -1 true cell on the fresh cross-check 36-39: still off
BORDER_CENTRED_CROPS = False

# with border_centred_crops, a centred crop is used only where the whole-FOV pass calls at least this fraction of
# its soma pixels soma too (the mirror doubles any bright structure at the edge, which the whole-FOV pass sees
# once); 0 uses every centred crop, as the first form did
BORDER_CENTRED_AGREEMENT = 0.5

# a candidate the FOV's edge cuts whose soma the centred, mirrored crop draws but neither network pass on the FOV
# itself does (the combination keeps a crop's soma only where the whole-FOV pass confirms it) becomes a cell when
# its soma stands out of its surround at least BORDER_CUT_CONTRAST times the FOV's cells' median
# (add_border_cut_cells). Never-seen 224-227: the 7 cells its `border`, `short` and `faint` members miss all lie
# within 10 px of the FOV's edge. Screened on 297 FOVs: +8 true / +5 false cells (never-seen 224-227 +2 / 0,
# cross-check 32-39 +6 / +4); on the fresh cross-check draw 40-43 +4 true, one true lost and +5 false
# (`neuropil` 0.986 -> 0.917), on never-seen 228-231 +1 true: an option, off (2026-12-06, seventh session;
# heldout_ablation.md)
BORDER_CUT_CELLS = False
BORDER_CUT_CONTRAST = 0.65

# a cell of a FOV at its own scale whose soma stands out of its surround less than this fraction of the FOV's
# median soma goes (drop_faint_cells(reference="median")), unless its soma looks like one: at least
# FAINT_SOMA_SOLIDITY solid and FAINT_SOMA_AREA x the FOV's median soma area; 0 turns it off. Off until
# 2026-12-07 (seventh session: at 0.25 alone `d1_like` lost true cells). On since the eighteenth session: on the
# final cells of own-scale FOVs of 12 `d1_like` movies, the held-out family 0-3, never-seen 284-291 and cross-check
# 100-107 (3 242 true and 115 false cells), those under 0.3 were 45 false (haze patches in the neuropil,
# out-of-focus cells, boutons, neurons) and 4 true, the 4 dim but compact, typical-size `d1_like` somata
# (solidity >= 0.91, area >= 0.8x); with the shape exemption 38 false and no true cell go (experiments/README.md).
# The held-out `faint` member's somata dim at rest read 0.30-0.39.
FAINT_OWN_SCALE_CONTRAST = 0.3
FAINT_SOMA_SOLIDITY = 0.9
FAINT_SOMA_AREA = 0.7

# a binned FOV's cell whose soma stands out of its surround less than this fraction of the FOV's clearest soma
# goes (drop_faint_cells); 0 turns it off. Chosen 2026-12-06 (fourth session) on 95 binned FOVs (cross-check
# `zoom` 0-27, the layouts' second D2 draw, held-out `giant` 164-199): the cells drawn in dim fibre texture
# beside a FOV's bright giant somata stood out 0.03-0.15 of the clearest soma (12 of the 23 false cells),
# the 208 true cells 0.34-1.00; experiments/results/heldout_ablation.md
FAINT_CELL_CONTRAST = 0.2

# the clearest soma's contrast, as the faint-cell rule's reference, is capped at this many times the median
# soma contrast of the FOV (0: no cap, as before 2026-12-07, fourteenth session): one outlier-bright soma must not
# set the bar for every other cell. `randomised_s5000`: one soma whose dark nucleus was filled as a ring core stood
# out 923 against 74-462 for the others, and 8 true cells fell under 0.2 of it (4 of 12 cells found; capped: 11,
# 10 true). On 63 binned development FOVs (held-out `giant` 0-3 and 256-267, cross-check `zoom` 0-1 and 80-91,
# ASTRA's D2 layouts r3, `d2_like`, `randomised`) nothing else changes; on fresh binned FOVs scored with and
# without (never-seen `giant` 272-275, cross-check `zoom` 92-95, `fast` and `thick` 80-83, `randomised` 5006-5011)
# `thick_81` gains a true cell and `randomised_s5008` three cells, nothing is lost (experiments/README.md)
FAINT_REFERENCE_CAP = 2.0


def drop_faint_cells(seg: Any, image: np.ndarray, *, min_relative_contrast: float | None = None,
                     reference: str = "clearest", reference_cap: float = 0.0, keep_solidity: float = 0.0,
                     keep_area_ratio: float = 0.0) -> Any:
    """``seg`` without the cells whose soma stands out of its surround far less than the FOV's clearest soma.

    On a FOV of large somata segmented binned, the network sometimes draws a "cell" in the dim fibre
    texture beside the bright giant ones: its outline is irregular and its soma barely brighter than
    the ring around it. A soma's contrast is its median brightness over the lower quartile of that
    ring on ``image`` (:func:`astro3s.postprocess.sharpness.soma_edges`); a cell whose contrast is
    under ``min_relative_contrast`` (None: ``FAINT_CELL_CONTRAST``, 0.2) times the highest of the FOV
    (at most ``reference_cap`` times the median soma's) goes, as does a soma no brighter than its ring. A
    FOV of one cell is left as it is. With ``keep_solidity`` or ``keep_area_ratio`` above 0, a faint cell
    whose soma looks like one stays: at least ``keep_solidity`` solid and at least ``keep_area_ratio`` times
    the FOV's median soma area (a dim soma in focus is still a compact disc of the FOV's size; haze patches,
    out-of-focus cells and boutons are ragged or small).
    ``counts["faint_removed"]`` says how many went.

    Parameters
    ----------
    seg : Segmentation
    image : ndarray of float, shape (H, W)
        The movie's median image, not contrast-equalised.
    min_relative_contrast : float or None
        0 turns the rule off.
    reference : {"clearest", "median"}
        What the contrast is relative to: the FOV's clearest soma, or the median of its somata (the
        rule at a FOV's own scale, :data:`FAINT_OWN_SCALE_CONTRAST`).
    reference_cap : float
        With ``"clearest"``, the reference is at most this many times the median soma's contrast
        (:data:`FAINT_REFERENCE_CAP`; 0: no cap).
    keep_solidity, keep_area_ratio : float
        The shape a faint soma keeps its cell with (:data:`FAINT_SOMA_SOLIDITY`, :data:`FAINT_SOMA_AREA`);
        both 0: no faint cell stays.

    Returns
    -------
    Segmentation
    """
    from astro3s.postprocess.combine import remove_cells
    from astro3s.postprocess.sharpness import soma_edges

    level = FAINT_CELL_CONTRAST if min_relative_contrast is None else float(min_relative_contrast)
    if level <= 0 or seg.n_cells < 2 or image.shape != seg.soma.shape:
        return seg
    if reference not in ("clearest", "median"):
        raise ValueError(f"reference must be 'clearest' or 'median', got {reference!r}")
    contrast, _ = soma_edges(image, seg.soma)
    reduce = np.nanmax if reference == "clearest" else np.nanmedian
    reference_contrast = reduce(contrast) if np.isfinite(contrast).any() else np.nan
    if reference == "clearest" and reference_cap > 0 and np.isfinite(contrast).any():
        reference_contrast = min(reference_contrast, float(reference_cap) * float(np.nanmedian(contrast)))
    if not reference_contrast > 0:
        return seg
    soma_area = np.asarray(seg.soma_area)
    drop = ~(contrast >= level * reference_contrast) & (soma_area > 0)
    if drop.any() and (keep_solidity > 0 or keep_area_ratio > 0):
        from astro3s.postprocess.lookalike import soma_solidity

        solidity = np.ones(soma_area.size)
        measured = soma_solidity(seg.soma)[:soma_area.size]  # one per id up to the highest with pixels
        solidity[:measured.size] = measured
        like_a_soma = (solidity >= keep_solidity) & (soma_area >= keep_area_ratio * np.median(soma_area[soma_area > 0]))
        drop &= ~like_a_soma
    return remove_cells(seg, drop, count_key="faint_removed")


def _median_image_at(pre: Any, seg: Any) -> np.ndarray | None:
    """``pre.median_image`` when it has ``seg``'s pixels (None: no median image, or another grid's)."""
    image = getattr(pre, "median_image", None)
    return image if image is not None and np.shape(image) == seg.soma.shape else None


def add_border_cut_cells(seg: Any, pre: Any, model: Any, options: InferenceOptions, *,
                         min_area: float) -> Any:
    """``seg`` with a cell for each soma the FOV's edge cuts that only a crop centred on it shows.

    Each candidate whose crop box the FOV's edge moved is seen on a crop
    centred on it, the FOV mirrored beyond the edge
    (:func:`astro3s.inference.network.border_centred_crops`); the soma that
    crop draws on the candidate, when the edge cuts it
    (:func:`astro3s.inference.network.cut_candidate_somata`), touches no soma
    of ``seg``, covers at least ``min_area`` px and stands out of its
    surround (:func:`astro3s.postprocess.sharpness.soma_edges` on
    ``pre.median_image``) at least :data:`BORDER_CUT_CONTRAST` times the
    median of ``seg``'s cells, becomes a cell without processes.
    ``counts["border_cut_added"]`` says how many.

    Parameters
    ----------
    seg : Segmentation
        The FOV's cells, at its own pixels.
    pre : Preprocessed
        The FOV's pre-processing (``crop_boxes``, ``candidates``, ``median_image``).
    model : SegmentationModule or SegmentationNetwork
    options : InferenceOptions
    min_area : float
        Least soma area, px (the size filter's lower end halved: the edge cuts the soma).

    Returns
    -------
    Segmentation
    """
    from astro3s.inference.network import border_centred_crops, cut_candidate_somata, predict_crops
    from astro3s.models.base import input_channels

    image = _median_image_at(pre, seg)
    if seg.n_cells == 0 or image is None:
        return seg
    index, crops, shift = border_centred_crops(pre, input_channels(model))
    if index.size == 0:
        return seg
    centred = predict_crops(model, dataclasses.replace(pre, crops=crops), normalize=options.normalize,
                            batch_size=options.batch_size, device=options.device, amp=options.amp)
    labels = np.zeros(seg.soma.shape, np.int32)
    for soma in cut_candidate_somata(pre, centred, index, shift):  # a few per FOV
        if soma is None or soma.sum() < min_area or (seg.soma[soma] > 0).any() or (labels[soma] > 0).any():
            continue
        labels[soma] = labels.max() + 1
    return _with_standing_out_somata(seg, image, labels, count_key="border_cut_added")


def _with_standing_out_somata(seg: Any, image: np.ndarray, labels: np.ndarray, *, count_key: str,
                              processes_of: Callable[[np.ndarray], np.ndarray] | None = None) -> Any:
    """``seg`` with the somata of ``labels`` that stand out of their surround like ``seg``'s cells, as cells.

    A soma of ``labels`` (``1..n``) is added (:func:`astro3s.postprocess.add_missing_cells`) when its
    contrast over its surround on ``image`` (:func:`astro3s.postprocess.sharpness.soma_edges`) is at
    least :data:`BORDER_CUT_CONTRAST` times the median of ``seg``'s cells. ``processes_of(soma)`` gives
    the processes of the somata kept (``soma``: their labels ``1..k``; the same ids), None: none.
    ``counts[count_key]`` says how many were added.
    """
    from astro3s.postprocess import add_missing_cells
    from astro3s.postprocess.combine import _segmentation
    from astro3s.postprocess.sharpness import soma_edges

    n = int(labels.max(initial=0))
    kept = np.zeros(0, np.int64)
    if n:
        reference, _ = soma_edges(image, seg.soma)
        contrast, _ = soma_edges(image, labels)
        level = BORDER_CUT_CONTRAST * np.nanmedian(reference) if np.isfinite(reference).any() else np.inf
        kept = np.flatnonzero(contrast >= level) + 1
    if kept.size == 0:
        return dataclasses.replace(seg, counts={**seg.counts, count_key: 0})
    new_id = np.zeros(n + 1, np.int32)
    new_id[kept] = np.arange(1, kept.size + 1)
    soma = new_id[labels]
    found = _segmentation(soma, np.zeros_like(soma) if processes_of is None else processes_of(soma),
                          int(kept.size), seg.params, {})
    merged = add_missing_cells(seg, found)
    return dataclasses.replace(merged, counts={**seg.counts, "cells": merged.n_cells,
                                               count_key: merged.n_cells - seg.n_cells})


# a soma the FOV's edge cuts (at least half a disc inside, as drop_border_slivers has it) that the whole-FOV pass
# draws on the FOV extended by its mirror image, and that no cell holds, becomes a cell when it stands out of its
# surround like the FOV's cells (BORDER_CUT_CONTRAST x their median; add_edge_fov_cells). Why:
# somata the edge cuts were missed ~5x as often as inner ones (cross-check 44-47: 10 of 56 against 15 of 408;
# never-seen 232-235: 3 of 18 against 7 of 643), most of them bright half-discs that no candidate's crop draws
# (the combination keeps a crop's soma only); the whole-FOV pass draws half of them as it is and most on the
# mirrored FOV. Whole pipeline, with and without (2026-12-06, eighth session; heldout_ablation.md): cross-check
# 44-47 +2 true / +1 false cells (a cut cell that truth leaves out), never-seen 232-235 +2 / 0, the reported family
# and the presets +2 / 0 (`d1_like` identical); 4 of 4 candidate somata under half a disc were truth's slivers, which
# ASTRA's annotators do not draw. Cost: one more whole-FOV pass (the FOV + max(32 px, a soma diameter) on each
# side; +0.02 s on 256², +0.05 s on 512²). Not on binned FOVs (nor their own-scale pass). False turns it off
EDGE_FOV_CELLS = True
#: px of mirror image beyond each edge for add_edge_fov_cells' whole-FOV pass, at least; a soma diameter more
#: where the FOV's somata are larger (the network then sees the whole cut soma and some surround)
EDGE_MIRROR_MIN = 32


def add_edge_fov_cells(seg: Any, pre: Any, model: Any, options: InferenceOptions, *, min_area: float,
                       max_area: float | None = None, zoom: float = 1.0, min_depth: float | None = None) -> Any:
    """``seg`` with a cell for each soma the FOV's edge cuts that only the mirrored whole-FOV pass draws.

    The whole-FOV pass is run once more on the FOV extended beyond each edge
    by its mirror image (:func:`astro3s.inference.network.predict_fov` with
    ``mirror``), so a soma the edge cuts looks whole to the network. Each
    soma it draws (connected argmax pixels) that touches the FOV's edge and
    reaches in at least half a disc (:func:`astro3s.postprocess.border.border_depth_ratio`
    at least ``min_depth``; the convention of :func:`drop_border_slivers`), touches no
    soma of ``seg``, covers ``min_area`` to ``max_area`` px and stands out of
    its surround (:func:`astro3s.postprocess.sharpness.soma_edges` on
    ``pre.median_image``) at least :data:`BORDER_CUT_CONTRAST` times the
    median of ``seg``'s cells becomes a cell, with the pass's process pixels
    that join it and that no cell holds. ``counts["edge_fov_added"]`` says
    how many.

    Parameters
    ----------
    seg : Segmentation
        The FOV's cells, at its own pixels.
    pre : Preprocessed
        The FOV's pre-processing (``fov_map``, ``median_image``).
    model : SegmentationModule or SegmentationNetwork
    options : InferenceOptions
    min_area, max_area : float
        Soma area range, px (``max_area`` None: no upper end).
    zoom : float
        The zoom of the FOV's network passes (:func:`astro3s.inference.network.predict_fov`).
    min_depth : float or None
        Least depth over half the chord along the edge (None: :data:`BORDER_SLIVER_RATIO`).

    Returns
    -------
    Segmentation
    """
    from scipy import ndimage as ndi

    from astro3s.inference.network import predict_fov
    from astro3s.models.classes import PROCESSES, SOMA
    from astro3s.postprocess.border import border_depth_ratio

    image = _median_image_at(pre, seg)
    if seg.n_cells == 0 or image is None:
        return seg
    diameter = 2.0 * np.sqrt(float(max_area or min_area) / np.pi)
    probs = predict_fov(model, pre, normalize=options.normalize, tiling=options.tiling,
                        batch_size=options.batch_size, device=options.device, amp=options.amp, zoom=zoom,
                        mirror=max(EDGE_MIRROR_MIN, int(np.ceil(diameter))))
    classes = probs.argmax(axis=0)
    eight = np.ones((3, 3), bool)
    drawn, n_drawn = ndi.label(classes == SOMA, structure=eight)
    depth = border_depth_ratio(drawn)  # inf where a soma does not touch the edge
    at_edge = np.concatenate([[False], np.isfinite(depth)
                              & (depth >= (BORDER_SLIVER_RATIO if min_depth is None else float(min_depth)))])
    area = np.bincount(drawn.ravel(), minlength=n_drawn + 1)
    held = np.zeros(n_drawn + 1, bool)
    held[np.unique(drawn[seg.soma > 0])] = True
    ok = at_edge & ~held & (area >= min_area) & (area <= (np.inf if max_area is None else max_area))
    if not ok.any():
        return dataclasses.replace(seg, counts={**seg.counts, "edge_fov_added": 0})
    _, labels = np.unique(np.where(ok[drawn], drawn, 0), return_inverse=True)
    labels = labels.reshape(drawn.shape).astype(np.int32)
    free = (classes == PROCESSES) & (seg.soma == 0) & (seg.processes == 0)

    def joined_processes(soma: np.ndarray) -> np.ndarray:
        # the pass's process pixels that no cell holds, joined to a kept soma through themselves
        joined, _ = ndi.label(free | (soma > 0), structure=eight)
        owner = np.zeros(int(joined.max()) + 1, np.int32)
        owner[joined[soma > 0]] = soma[soma > 0]
        return np.where(free, owner[joined], 0).astype(np.int32)

    return _with_standing_out_somata(seg, image, labels, count_key="edge_fov_added",
                                     processes_of=joined_processes)


def drop_border_slivers(seg: Any, *, min_ratio: float | None = None) -> Any:
    """``seg`` without the cells whose soma the FOV's edge cuts to less than half a disc.

    A soma touching the FOV's edge that reaches into the FOV less deep than
    half its width along that edge (:func:`astro3s.postprocess.border.border_slivers`)
    lies mostly outside it; ASTRA's annotators draw no such sliver.
    ``counts["border_slivers_removed"]`` says how many went.

    Parameters
    ----------
    seg : Segmentation
    min_ratio : float or None
        Least depth over half the chord (None: ``BORDER_SLIVER_RATIO``, 1.0); 0 turns the rule off.

    Returns
    -------
    Segmentation
    """
    from astro3s.postprocess.border import border_slivers
    from astro3s.postprocess.combine import remove_cells

    level = BORDER_SLIVER_RATIO if min_ratio is None else float(min_ratio)
    if level <= 0 or seg.n_cells == 0:
        return seg
    return remove_cells(seg, border_slivers(seg.soma, min_ratio=level), count_key="border_slivers_removed")


def add_plateau_cells(seg: Any, image: np.ndarray, pre: Any, options: InferenceOptions) -> tuple[Any, int]:
    """``seg`` with a cell at each bright compact blob of ``image`` that no soma touches.

    On a binned FOV the network passes miss some giant somata that the
    median image shows as clearly as the ones found: bright, round, well
    defined (diagnosed held-out giant movies: 10 of 111 giant somata missed
    by every pass). Each blob of :func:`astro3s.postprocess.plateau_somata`
    (as bright as half-way to the somata found, 0.5-2 times their median
    area, compact, away from the FOV's edge) becomes a cell without
    processes, kept only when its soma edge is no blurrier than the rule for
    added cells allows (:func:`drop_blurred_additions`).

    Returns
    -------
    seg : Segmentation
    n_added : int
        Cells added and kept.
    """
    from astro3s.postprocess import add_missing_cells, plateau_somata
    from astro3s.postprocess.combine import _segmentation

    candidates = plateau_somata(seg.soma, image, opening=options.rules.plateau_opening)
    m = int(candidates.max(initial=0))
    if m == 0:
        return seg, 0
    found = _segmentation(candidates, np.zeros_like(candidates), m, seg.params, {})
    counts = dict(seg.counts)
    merged, n_added = drop_blurred_additions(add_missing_cells(seg, found), seg.n_cells, pre, options)
    # the finer bin factor's counts stay what they were; these are counted apart
    counts.update(cells=merged.n_cells, plateau_added=n_added, plateau_candidates=m)
    return dataclasses.replace(merged, counts=counts), n_added


def active_view(pre: Any) -> Any:
    """``pre`` seen through its active image: the same candidates' crops and FOV map made from it.

    The enhancement of the median image (:func:`astro3s.preprocess.enhance.enhance_network_image`,
    ``pre.params``' CLAHE settings) applied to ``pre.active_image``, cut out with the same boxes and
    local-activity masks; None when ``pre`` has no active image.
    """
    from astro3s.preprocess.enhance import enhance_network_image

    if getattr(pre, "active_image", None) is None:
        return None
    return _seen_through(pre, enhance_network_image(pre.active_image, None, pre.params))


def _seen_through(pre: Any, enhanced: np.ndarray) -> Any:
    """``pre`` with another network image ``enhanced``: its crops cut with the same boxes and local-activity
    masks, its FOV map under the same mask (the second views of :func:`add_view_cells`)."""
    from astro3s.preprocess import extract_crops

    crops = extract_crops(enhanced, pre.crop_boxes, None, crop_size=pre.params.crop_size) * pre.crop_masks
    return dataclasses.replace(pre, enhanced=enhanced, crops=crops.astype(np.float32, copy=False),
                               fov_map=(enhanced * pre.fov_mask).astype(np.float32, copy=False))


def correlation_view(pre: Any, *, weight: float) -> Any:
    """``pre`` seen through its median image brightened where the movie is active.

    :func:`astro3s.preprocess.correlation_image.activity_brightened` of ``pre.median_image`` with
    ``pre.correlation_image`` (significant part above ``pre.params.activity_threshold`` robust z-scores,
    its 99th percentile ``weight`` times the median image's), enhanced as the median image is and cut
    out with the same boxes and local-activity masks; None without a correlation or median image.
    """
    from astro3s.preprocess.correlation_image import activity_brightened
    from astro3s.preprocess.enhance import enhance_network_image

    if getattr(pre, "correlation_image", None) is None or getattr(pre, "median_image", None) is None:
        return None
    brightened = activity_brightened(pre.median_image, pre.correlation_image, weight=weight,
                                     threshold=pre.params.activity_threshold)
    return _seen_through(pre, enhance_network_image(brightened, None, pre.params))


def add_active_view_cells(seg: Any, pre: Any, model: Any, options: InferenceOptions, *,
                          timings: dict[str, float] | None = None, name: str = "") -> Any:
    """``seg`` with the cells found on the FOV's active view and not in ``seg``.

    A cell dim at rest (GCaMP's resting fluorescence is low and varies from
    cell to cell) is lost in the median image, whose CLAHE equalises it into
    the background's noise, but it is bright in the temporal
    ``ACTIVE_VIEW_PERCENTILE``-th percentile image of the same frames. The
    FOV is segmented again on that view (:func:`active_view`) and the cells
    found there are added by :func:`add_view_cells`.
    ``counts["active_view_added"]`` says how many were kept. Run with
    ``options.active_view`` (on by default since 2026-12-07, eighteenth
    session; off before: on the never-seen movies of 2026-12-05 it added
    neuropil patches, a vessel wall's stretch and soft blobs, CLAHE turning
    the active image's texture into cell-like patches, before the faint-cell
    rule), experiments/results/heldout_ablation.md.
    """
    view = active_view(pre) if seg.n_cells else None
    return add_view_cells(seg, view, pre, model, options, label="active_view", timings=timings, name=name)


#: a cell the correlation view adds goes when its soma edge on the correlation image is more than this many times
#: as blurred as the median of the cells found before (:func:`add_correlation_view_cells`; 0: no such test)
CORRELATION_VIEW_MAX_BLUR = 1.3


def add_correlation_view_cells(seg: Any, pre: Any, model: Any, options: InferenceOptions, *,
                               timings: dict[str, float] | None = None, name: str = "") -> Any:
    """``seg`` with the cells found on the FOV's correlation view (:func:`correlation_view`) and not in ``seg``.

    The median image the network was trained on, with cells dim at rest but active brightened through the
    movie's local temporal-correlation image; added by :func:`add_view_cells`
    (``counts["correlation_view_added"]``). Run only with ``options.correlation_view``.

    The view draws what the correlation image shows, and that image draws an active out-of-focus cell or soft
    blob as a plateau as sharp-edged as a cell's, the median image's blur cue gone: a cell the view adds must
    also have a soma edge on the correlation image itself no more than
    ``options.rules.correlation_view_max_blur`` (:data:`CORRELATION_VIEW_MAX_BLUR`) times as blurred as the
    cells found before (``counts["correlation_view_unfocused_removed"]``). Measured 2026-12-08 (twentieth
    session) on 29 development movies where the view added cells: its 26 true additions at 1.10 or less, 14 of
    its 19 false ones at 1.46 or more (out-of-focus astrocytes and soft blobs),
    experiments/results/view_additions_probe.md.
    """
    from astro3s.inference.pipeline import CORRELATION_VIEW_WEIGHT

    view = correlation_view(pre, weight=CORRELATION_VIEW_WEIGHT) if seg.n_cells else None
    return add_view_cells(seg, view, pre, model, options, label="correlation_view", timings=timings, name=name,
                          focus_image=getattr(pre, "correlation_image", None),
                          max_focus_blur=options.rules.correlation_view_max_blur)


def add_view_cells(seg: Any, view: Any, pre: Any, model: Any, options: InferenceOptions, *, label: str,
                   timings: dict[str, float] | None = None, name: str = "", focus_image: np.ndarray | None = None,
                   max_focus_blur: float = 0.0) -> Any:
    """``seg`` with the cells the FOV's second ``view`` finds and ``seg`` lacks.

    ``view`` is ``pre`` with other crops and FOV map (:func:`active_view`, :func:`correlation_view`):
    it is segmented at its own scale with ``seg``'s soma scale (:func:`segment_movie` with
    ``soma_scale="fixed"``), and its cells whose soma overlaps no soma of ``seg`` are added
    (:func:`astro3s.postprocess.add_missing_cells`), unless their soma edge is blurrier than the cells
    found allow (:func:`drop_blurred_additions`: out-of-focus cells are active too) or their soma is
    under 0.4x their median area (:func:`drop_small_additions`). With ``focus_image`` and ``max_focus_blur``
    > 0, a cell added must also be no more than ``max_focus_blur`` times as blurred as the cells found before on
    ``focus_image`` (the summary image the view was made from; :func:`drop_blurred_additions`,
    ``counts[f"{label}_unfocused_removed"]``). Nothing is added to a FOV without
    cells (``view`` None: no reference for the rules). ``counts[f"{label}_added"]`` says how many
    were kept; ``timings[f"{label}_s"]`` how long it took.
    """
    from astro3s.postprocess import add_missing_cells

    if view is None:  # without cells found there is no blur or size to judge the view's cells by
        return seg
    start = time.perf_counter()
    inner: dict[str, float] = {}
    _, found, _ = segment_movie(view, model, dataclasses.replace(options, soma_scale="fixed"), timings=inner,
                                name=name, allow_binning=False)
    n_before = seg.n_cells
    counts = dict(seg.counts)
    merged, _ = drop_blurred_additions(add_missing_cells(seg, found), n_before, pre, options)
    unfocused = None  # the focus test's count, when it ran
    if focus_image is not None and max_focus_blur > 0:
        merged, _ = drop_blurred_additions(merged, n_before, pre, options, image=focus_image,
                                           max_blur=max_focus_blur, count_key="unfocused_removed")
        unfocused = merged.counts.get("unfocused_removed", 0)
    merged, n_added = drop_small_additions(merged, n_before, min_relative_area=options.rules.min_added_area,
                                           border_radii=options.rules.border_additions)
    if n_added:
        log.info("%s: %d cell(s) dim at rest added from the %s", name, n_added, label.replace("_", " "))
    # the first pass's counts stay what they were; this view's are counted apart
    counts.update(cells=merged.n_cells, **{f"{label}_added": n_added,
                                           f"{label}_blurred_removed": merged.counts.get("added_blurred_removed", 0)})
    if unfocused is not None:
        counts[f"{label}_unfocused_removed"] = unfocused
    if timings is not None:
        timings[f"{label}_s"] = time.perf_counter() - start
    return dataclasses.replace(merged, counts=counts)


#: A cell the coarse pass of :func:`add_large_cells` adds has a soma at least this many times the
#: median soma of the cells found at the FOV's own scale ...
LARGE_SOMA_RATIO = 1.5
#: ... and a soma edge at most this many times as wide, in pixels, as theirs (median).
LARGE_SOMA_MAX_EDGE_WIDTH = 1.3
#: FOVs with a side under this many pixels get no such pass (binned, a side under 32 px: too small
#: to hold a soma far larger than the others and the context around it).
LARGE_SOMA_MIN_FOV = 64


def add_large_cells(seg: Any, pre: Any, model: Any, options: InferenceOptions, *, name: str = "",
                    timings: dict[str, float] | None = None) -> Any:
    """``seg`` with the large in-focus cells that a 2x2-binned pass finds and it missed.

    A FOV segmented at its own scale is seen by the network at one zoom,
    fitted to its typical soma. Where somata span a wide range of sizes,
    those far above the typical one are drawn by neither network pass
    (held-out ``mixed`` movies: 1-4 somata of 370-620 px among somata of
    100-250 px). Binned 2x2, they are near the trained scale. The binned
    pass's cells (:func:`binned_pass`) are added when their soma

    - touches none of ``seg``'s somata (:func:`astro3s.postprocess.add_missing_cells`);
    - is at least ``LARGE_SOMA_RATIO`` times ``seg``'s median soma: the pass
      is there for large somata, and zoomed out, a neuron or a soft blob
      looks like a small sharp soma;
    - has an edge at most ``LARGE_SOMA_MAX_EDGE_WIDTH`` times as wide in
      pixels as ``seg``'s cells (median; :func:`astro3s.postprocess.sharpness.remove_blurred_cells`
      with ``in_pixels=True``, on the median image): defocus widens every
      edge by the same pixels, while relative to a large soma's radius a
      soft out-of-focus blob looks as sharp as the FOV's small somata. The
      cells that are the new cell's own fragments (joined to it, under
      ``FRAGMENT_SOMA_RATIO`` of its soma) are not part of that reference
      (:func:`_wide_edged_additions`).

    (Chosen on diagnosed held-out movies, indices 0-3 and 44-59: on the 13
    where the size condition alone changed the cells, the 13 true large
    cells it added had edges 1.00-1.18 times the reference width, 7 soft
    out-of-focus blobs 1.02-1.60, 5 of those above 1.3; confirmed on
    never-seen indices 60-63; experiments/results/heldout_ablation.md.)

    Nothing is done without cells in ``seg`` (no reference), without the
    motion-corrected movie or the median image, or on a FOV with a side
    under ``LARGE_SOMA_MIN_FOV`` px.

    Returns
    -------
    Segmentation
        ``counts["large_added"]``: cells added; ``counts["large_blurred_removed"]``:
        large new cells dropped for their edge.
    """
    from astro3s.postprocess import add_missing_cells
    from astro3s.postprocess.combine import remove_cells

    median_image = getattr(pre, "median_image", None)
    if (seg.n_cells == 0 or pre.corrected is None or median_image is None
            or min(pre.fov_map.shape) < LARGE_SOMA_MIN_FOV):
        return seg
    t = time.perf_counter()
    found, _, _ = binned_pass(pre, model, options, 2, timings={}, name=name)
    found = remove_cells(found, found.soma_area < options.rules.large_soma_ratio * float(np.median(seg.soma_area)),
                         count_key="small_removed")
    n_before = seg.n_cells
    merged = add_missing_cells(seg, found)
    merged = remove_cells(merged, _wide_edged_additions(merged, n_before, median_image,
                                                        fragment_ratio=options.rules.fragment_ratio),
                          count_key="blurred_removed")
    counts = {**seg.counts, "cells": merged.n_cells, "large_added": merged.n_cells - n_before,
              "large_blurred_removed": merged.counts["blurred_removed"]}
    if timings is not None:
        timings["large_soma_pass_s"] = time.perf_counter() - t
    if merged.n_cells > n_before:
        log.info("%s: %d large cell(s) added by a 2x2-binned pass", name, merged.n_cells - n_before)
    return dataclasses.replace(merged, counts=counts)


def _wide_edged_additions(merged: Any, n_before: int, median_image: np.ndarray, *,
                          fragment_ratio: float | None = None) -> np.ndarray:
    """Which cells of ``merged`` after the first ``n_before`` have a soma edge too wide to be in focus.

    A new cell goes when its soma edge is more than ``LARGE_SOMA_MAX_EDGE_WIDTH`` times as wide in
    pixels as the median of the first ``n_before`` cells' (:func:`astro3s.postprocess.soma_edge_blur`),
    leaving out of that reference the cells that may be its own pieces: those joined to it through
    soma or process pixels, and those under ``FRAGMENT_SOMA_RATIO`` of its soma's area. At high zoom
    the first pass draws a thick process's pieces as somata, and their narrow edges made the true soma
    look blurred (held-out movies on ASTRA's D2 layouts: 1.29-1.49x, three true cells lost). With no
    other reference the cell stays. ``fragment_ratio`` (None: ``FRAGMENT_SOMA_RATIO``; 0, the fragment
    rule off, keeps every earlier cell in the reference) is that fraction.

    Returns
    -------
    drop : ndarray of bool, shape (merged.n_cells,)
    """
    from astro3s.postprocess.sharpness import soma_edge_blur
    from astro3s.postprocess.split import soma_groups

    drop = np.zeros(merged.n_cells, bool)
    if merged.n_cells <= n_before:
        return drop
    width = soma_edge_blur(median_image, merged.soma, relative=False)
    _, group_of, _ = soma_groups(merged.soma, merged.processes)
    group_of = np.pad(group_of, (0, merged.n_cells + 1 - group_of.size))
    area = merged.soma_area.astype(np.float64)
    old = np.arange(n_before)
    ratio = FRAGMENT_SOMA_RATIO if fragment_ratio is None else float(fragment_ratio)
    for k in range(n_before, merged.n_cells):  # loop over the added cells (a few)
        own = np.zeros(n_before, bool)
        if ratio:  # with the fragment rule off, every earlier cell is the reference, as before
            own = (group_of[old + 1] == group_of[k + 1]) | (area[old] < ratio * area[k])
        reference = width[old[~own]]
        reference = reference[np.isfinite(reference)]
        if reference.size and np.isfinite(width[k]):
            drop[k] = width[k] > LARGE_SOMA_MAX_EDGE_WIDTH * float(np.median(reference))
    return drop


def binned_pass(pre: Any, model: Any, options: InferenceOptions, factor: int, *, timings: dict[str, float],
                name: str = "") -> tuple[Any, dict[str, Any], float]:
    """One network pass over the FOV binned ``factor x factor``, its cells on the FOV's own pixels.

    The motion-corrected movie is pre-processed again binned
    (:func:`astro3s.inference.segment.binned_preprocess`), segmented with
    :func:`binned_options` (crop somata decide alone) and its cells resampled
    (:func:`astro3s.postprocess.upsample_segmentation`).

    Returns
    -------
    found : Segmentation
        Label images of ``pre``'s FOV shape.
    scale_info : dict
        The binned pass's soma-scale record (binned pixels).
    binning_s : float
        Seconds spent pre-processing the binned movie; the pass's other
        stages are added to ``timings``.
    """
    from astro3s.inference.segment import binned_preprocess
    from astro3s.postprocess import upsample_segmentation

    t = time.perf_counter()
    small = binned_preprocess(pre, factor)
    binning_s = time.perf_counter() - t
    _, small_seg, info = segment_movie(small, model, binned_options(options), timings=timings, name=name,
                                       allow_binning=False)
    return upsample_segmentation(small_seg, factor, pre.fov_map.shape), info, binning_s


def binned_options(options: InferenceOptions) -> InferenceOptions:
    """The options of a FOV segmented binned: crop somata need no whole-FOV confirmation.

    A binned FOV is a few crops wide (52-171 px against 96-px crops on the
    development and held-out movies), so every crop already sees the
    neighbourhood the whole-FOV pass sees, at the same scale: the FOV pass's
    vote adds no context, while on these coarse images it sometimes draws a
    bright soma as a ring or a fragment below the size filter and so vetoes
    a cell the crops found. Crop somata are therefore kept without it
    (``CombineParams.keep_unmatched``), unless ``options.combine`` sets it.
    The look-alike rule is left to the caller, which runs it once on the
    movie's own pixels (:func:`reject_lookalikes`).
    (Chosen on development movies of the training simulator: seven
    ``d2_like`` movies detection F1 0.61 -> 0.64, the large-soma
    ``randomised_s8101`` 0.81 -> 0.86, no cell lost.)
    """
    return dataclasses.replace(options, combine={"keep_unmatched": True, **options.combine,
                                                 "reject_lookalikes": False})


# a binned FOV's somata drawn in part are completed to their bright body after they are refined
# (astro3s.postprocess.grow.complete_somata; 2026-12-05, fourth night session); False turns it off
COMPLETE_BINNED_SOMATA = True

# lower end of the soma-size filters of a FOV segmented at its own scale, x the fitted range's
# (:func:`size_filter_overrides`; chosen 2026-12-04, experiments/results/heldout_ablation.md)
SMALL_SOMA_SLACK = 0.8
# the same for a crowded FOV, whose first network pass drew at least CROWDED_SOMATA somata: its somata
# span a 3-4x range of areas, and the smallest, drawn at 40-48 px where the filter began at 45-48 px,
# were cut (never-seen `dense` movies 112-123: recall 0.941 -> 0.973, precision 0.999 both). 0.6 on
# every FOV let 3 soft blobs through on one `lookalikes` movie of 5 cells; FOVs of a few tens of cells
# give a reliable size distribution (chosen 2026-12-05, late night; experiments/results/heldout_ablation.md).
# 0.45 since 2026-12-06 (seventh session): the cross-check's dense FOVs hold somata of 40-60 px whose fitted
# range kept the parameters' lower end (89 px, so the filter began at 53 px) and their small somata were missed
# whole (recall of somata <= 60 px 0.70-0.72): 0.45 on 32-35 +4 true / +1 false cells, on never-seen dense
# 216-223 +5 / 0, on the annotated D3/D4 layouts +7 / +3, the presets +2 / +2; then on the fresh cross-check
# dense 36-39 +10 / +1
CROWDED_SOMA_SLACK = 0.45
CROWDED_SOMATA = 40
# the 2x2-binned large-soma pass (:func:`add_large_cells`) also on crowded FOVs (first pass >= CROWDED_SOMATA
# somata). It is off there since 2026-12-05 (night): on 94 crowded FOVs (68 held-out `dense` and preset
# movies, 26 on ASTRA's D3 and D4 layouts) it added 4 true and 4 false cells for 1.3-2 s a movie (D4 size:
# ~15 % of the whole run); large somata among tens of small ones were that rare (heldout_ablation.md)
LARGE_PASS_ON_CROWDED = False
# the out-of-focus rule's pixel condition (CombineParams.min_pixel_widening) also on FOVs that are not crowded
# (first pass < CROWDED_SOMATA somata). Off: there a soma far smaller than the others is more often a
# compact blob than a cell, and the edge relative to the radius, which reads small somata as blurred, kept
# removing them. Measured 2026-12-06 (third session) with and without the condition on 249 movies (both
# held-out generators, four draws, and the training simulator's presets): crowded FOVs 18 true cells more, 4
# false; the others 2 true, 5 false (the held-out generator's blobs, 66-115 px beside ~250-px cells, whose
# edges are not wider in pixels; experiments/results/heldout_ablation.md, "Blur in pixels")
PIXEL_WIDENING_ON_SPARSE = False
# ``options.extend_processes`` also on a FOV whose soma size range was refitted but that the network saw at its
# own pixels (zoom 1): the option is about where the network drew, and until 2026-12-05 (evening) it skipped
# every refitted FOV, 31 of 108 diagnosed held-out movies (experiments/results/heldout_ablation.md)
EXTEND_REFITTED_FOVS = True


def with_pixel_widening_for(overrides: dict[str, Any], *, crowded: bool,
                            on_sparse: bool | None = None) -> dict[str, Any]:
    """The combination's overrides with the out-of-focus rule's pixel condition set for a crowded FOV or not.

    :attr:`astro3s.postprocess.CombineParams.min_pixel_widening` applies on
    crowded FOVs (``crowded``: the first pass drew at least ``CROWDED_SOMATA``
    somata); on the others it is turned off (``None``) unless ``on_sparse``
    (None: ``PIXEL_WIDENING_ON_SPARSE``; ``CellRules.pixel_widening_on_sparse``)
    or ``overrides`` (which hold the user's :attr:`InferenceOptions.combine`) already set it.

    Returns
    -------
    dict
        A copy of ``overrides``.
    """
    out = dict(overrides)
    on_sparse = PIXEL_WIDENING_ON_SPARSE if on_sparse is None else bool(on_sparse)
    if not (crowded or on_sparse or "min_pixel_widening" in overrides):
        out["min_pixel_widening"] = None
    return out


def size_filter_overrides(combine: dict[str, Any], scale_info: dict[str, Any],
                          soma_area_range: tuple[float, float], *, low_slack: float = 1.0) -> dict[str, Any]:
    """The combination's overrides, with soma-size filters widened to the movie's fitted scale.

    :func:`astro3s.inference.segment.adapt_soma_scale` keeps the parameters'
    ``soma_area_range`` for the candidate search when the movie's estimated
    range is within its tolerance (re-selecting the candidates would change
    little), but the combination's area filters (``[0.9 lo, 1.15 hi]``,
    ``[1.0 lo, 1.15 hi]`` for the whole-FOV somata) cut the cells at the ends
    of the movie's own range. They therefore use the union of the two ranges:
    a movie whose largest somata exceed the parameters' keeps them, one whose
    smallest somata are smaller keeps those, and nothing the parameters'
    range accepts is dropped. (Using the estimate alone also narrows the
    filters, which removed a true cell of ``d1_like``.) Chosen on
    development movies of the training simulator: ``d4_like`` detection F1
    0.77 -> 0.80, ``d2_like`` 0.59 -> 0.61, ``randomised`` 0.359 -> 0.364,
    the others unchanged (experiments/results/heldout_ablation.md). A
    ``soma_area_range`` the user set in ``combine`` wins.

    With ``low_slack < 1`` and a fitted range, the lower end is that union's
    times ``low_slack``: the fit is an area-weighted median ``m`` and the range
    starts at ``m / 2``, but crowded FOVs hold somata over a 5x range of areas,
    and the smallest, which both network passes find (~40 px where
    ``m / 2`` is 45-55 px), fell under the filter (:func:`segment_movie`
    passes 0.8 for FOVs at their own scale; see there).

    Parameters
    ----------
    combine : dict
        :attr:`InferenceOptions.combine` (overrides of :class:`astro3s.postprocess.CombineParams`).
    scale_info : dict
        The soma-scale record (``estimated`` and ``configured``: ``[lo, hi]``
        or None); receives ``size_filter_range``, the range the filters use.
    soma_area_range : (float, float)
        The pre-processing's range (the parameters', or the fitted one when
        the candidates were re-selected).
    low_slack : float
        Factor (0, 1] on the lower end when ``scale_info["estimated"]`` is set.

    Returns
    -------
    dict
        ``combine`` with ``soma_area_range`` set.
    """
    if not 0 < float(low_slack) <= 1:
        raise ValueError(f"low_slack must be in (0, 1], got {low_slack}")
    overrides = dict(combine)
    lo, hi = (float(a) for a in soma_area_range)
    estimated = scale_info.get("estimated")
    if "soma_area_range" not in overrides:
        # the configured range too: once the candidates were re-selected at the estimate,
        # ``soma_area_range`` is the estimate, and a FOV mixing sizes lost its smallest somata
        for other in (estimated, scale_info.get("configured")):
            if other is not None:
                lo, hi = min(lo, float(other[0])), max(hi, float(other[1]))
        if estimated is not None:
            lo *= float(low_slack)
        overrides["soma_area_range"] = (lo, hi)
    scale_info["size_filter_range"] = [float(a) for a in overrides["soma_area_range"]]
    return overrides


def _segment_binned(pre: Any, model: Any, options: InferenceOptions, factor: int, coarse: dict[str, Any], *,
                    timings: dict[str, float], name: str, started: float) -> tuple[Any, dict[str, Any]]:
    """Cells of a large-soma FOV segmented binned ``factor x factor`` and finer (see :func:`segment_movie`)."""
    from astro3s.postprocess import add_missing_cells

    factors = list(range(factor, max(FINEST_BIN_FACTOR, factor - options.bin_scales + 1) - 1, -1))
    # the soma area that asked for binning: the median image's blobs', or the coarse check's smallest soma
    area = float(min(coarse["coarse_check_somata"])) if coarse.get("bin_source") == "coarse_check" \
        else coarse["blob_area"]
    log.info("%s: somata ~%.0f px, %.1fx wider than the parameters': segmenting the FOV binned %s",
             name, area, coarse["coarse_scale"], ", ".join(f"{f}x{f}" for f in factors))
    seg, added = None, []
    own_scale_somata = None  # somata added by a pass at the FOV's own scale: not grown over
    timings["binning_s"] = time.perf_counter() - started
    for scale_factor in factors:  # the blob scale's first: its cells and processes win
        inner: dict[str, float] = {}
        if scale_factor == 1:  # the FOV at its own scale, as an unbinned FOV is segmented
            _, found, info = segment_movie(pre, model, options, timings=inner, name=name,
                                           allow_binning=False)
        else:
            found, info, binning_s = binned_pass(pre, model, options, scale_factor, timings=inner, name=name)
            timings["binning_s"] += binning_s
        for key, seconds in inner.items():
            timings[key] = timings.get(key, 0.0) + seconds
        if seg is None:
            seg, scale_info = found, info
        else:
            n_before = seg.n_cells
            seg, n_added = drop_blurred_additions(add_missing_cells(seg, found), n_before, pre, options)
            seg, n_added = drop_small_additions(seg, n_before, min_relative_area=options.rules.min_added_area,
                                                border_radii=options.rules.border_additions)
            added.append(n_added)
            if scale_factor == 1:
                own_scale_somata = seg.soma > n_before
    scale_info.update(coarse, rescaled=True, bin_factor=factors[0], bin_factors=factors,
                      cells_added=added)
    seg = reject_lookalikes(seg, pre, options)
    # redrawn at the FOV's own resolution after the look-alike rule, whose features are the
    # network's outlines (its decisions stand); the plateau cells are judged by the blur rule
    median_image = getattr(pre, "median_image", None)
    if median_image is not None:
        # before the plateau cells, whose brightness reference is the somata found
        seg = drop_faint_cells(seg, median_image, min_relative_contrast=options.rules.faint_cell_contrast,
                               reference_cap=options.rules.faint_reference_cap)
        from astro3s.postprocess.grow import (FLOOD_LEVEL, with_completed_somata, with_grown_processes,
                                              with_refined_somata, with_trimmed_somata)

        if options.somata != "network":
            seg = with_refined_somata(seg, median_image, reach=options.rules.soma_reach)
            if options.rules.complete_binned_somata:
                seg = with_completed_somata(seg, median_image, reach=options.rules.soma_reach)
            seg, n_plateau = add_plateau_cells(seg, median_image, pre, options)
            scale_info["cells_added_plateau"] = n_plateau
        if options.somata == "refined":
            seg = with_trimmed_somata(seg, median_image)
        if options.binned_processes != "network":
            # cells found at the FOV's own scale keep the network's processes, drawn at that scale
            keep = None if own_scale_somata is None else np.bincount(
                seg.soma[own_scale_somata], minlength=seg.n_cells + 1)[1:] > 0
            flood_only = {} if options.binned_processes == "ridges" else {"level": FLOOD_LEVEL, "ridge_level": None}
            seg = with_grown_processes(seg, median_image, keep=keep, **flood_only)
    return seg, scale_info


def segment_movie(pre: Any, model: Any, options: InferenceOptions, *, timings: dict[str, float] | None = None,
                  name: str = "", allow_binning: bool = True) -> tuple[Any, Any, dict[str, Any]]:
    """Cells of a pre-processed movie: soma scale (``options.soma_scale``), network, combination.

    With ``soma_scale="auto"``, a FOV whose somata are at least twice as wide
    as the parameters' (read off its median image,
    :func:`astro3s.inference.segment.soma_bin_factor`) is segmented binned to
    the parameters' scale, crop somata kept without whole-FOV confirmation
    (:func:`binned_options`), and the cells are resampled to its own pixels
    (:func:`astro3s.postprocess.upsample_segmentation`). It is segmented at
    ``options.bin_scales`` bin factors (that one first, then the next finer
    ones, down to 1: the FOV at its own scale, whose cells keep the
    network's processes), each finer one adding only the cells whose soma
    touches no soma found before (:func:`astro3s.postprocess.add_missing_cells`)
    and is neither blurrier (:func:`drop_blurred_additions`) nor under 0.4x
    the area (:func:`drop_small_additions`) of the cells found before:
    the blob scale is read in steps of 1.56x in area and is off by a step
    either way on the held-out giant movies, and the network keeps or loses
    a large soma depending on its binned size and on how much of the small
    binned FOV the cells fill (CLAHE ranks them into flat white there).
    Chosen on development and diagnosed movies
    (experiments/results/heldout_ablation.md). The network draws few of the
    long branches on the binned grid and resampled soma outlines are off by
    up to the bin side, so after the look-alike rule (and :func:`drop_faint_cells`: cells whose soma
    stands out under ``FAINT_CELL_CONTRAST`` of the FOV's clearest go) the somata are extended
    over their bright plateau in the movie's median image
    (``options.somata="refined"``,
    :func:`astro3s.postprocess.grow.refine_somata`), a soma drawn in part is
    completed to the compact bright body it lies in
    (:func:`astro3s.postprocess.grow.complete_somata`,
    ``COMPLETE_BINNED_SOMATA``), bright compact blobs of
    that image that no soma touches become cells (:func:`add_plateau_cells`),
    and the processes are grown
    from them over the same image and kept on its ridges
    (``options.binned_processes="ridges"``,
    :func:`astro3s.postprocess.grow.grow_processes`). Then, and otherwise,
    the soma scale is fitted from a first network pass
    (:func:`astro3s.inference.segment.adapt_soma_scale`); the combination's
    soma-size filters widen to the fitted range whenever the fit gave one
    (:func:`size_filter_overrides`; on a FOV at its own scale, not a binned
    one, their lower end goes ``SMALL_SOMA_SLACK`` times lower, ``CROWDED_SOMA_SLACK``
    when the first pass drew at least ``CROWDED_SOMATA`` somata: crowded FOVs'
    smallest somata; on crowded FOVs only, the whole-FOV out-of-focus rule
    also needs a soma edge wider in pixels,
    :attr:`astro3s.postprocess.CombineParams.min_pixel_widening`,
    ``PIXEL_WIDENING_ON_SPARSE``); somata the FOV's edge cuts that the whole-FOV pass draws
    on the FOV extended by its mirror image are added (:func:`add_edge_fov_cells`,
    ``EDGE_FOV_CELLS``; with ``BORDER_CUT_CELLS``, off, those a crop centred on the candidate
    draws, :func:`add_border_cut_cells`); a FOV at its own scale is then also segmented binned
    2x2 and that pass's large in-focus cells added where none was found
    (``options.large_soma_pass``, :func:`add_large_cells`: FOVs mixing soma
    sizes; not on crowded FOVs, ``LARGE_PASS_ON_CROWDED``, where
    ``counts["large_pass_skipped_crowded"]`` says so); last, look-alikes are removed on the
    movie's pixels (:func:`reject_lookalikes`) and, with
    ``options.somata="refined"``, the somata are extended over their bright
    plateau in the median image (the network drew them on a grid zoomed to
    the training scale). Last, on both paths (:func:`_final_cells`): fragment
    somata are absorbed, the out-of-focus cell of a pair goes, so do slivers
    of cells the FOV's edge cuts to less than half a soma
    (:func:`drop_border_slivers`), each cell's process area is limited and
    its processes are kept where the median image shows a ridge under them
    (:func:`astro3s.postprocess.grow.keep_visible_processes`).

    Returns
    -------
    pre : Preprocessed
        ``pre``, or its candidates re-selected at the fitted soma scale (a
        binned FOV returns ``pre`` itself: its pixels are the movie's).
    segmentation : Segmentation
        Label images of ``pre``'s shape.
    scale_info : dict
        See :func:`astro3s.inference.segment.adapt_soma_scale`; ``bin_factor``
        and ``blob_area`` too with ``soma_scale="auto"``. Areas are in binned
        pixels when ``bin_factor > 1``: those of the first factor, which is
        ``bin_factor``; ``bin_factors`` lists every factor used,
        ``cells_added`` how many cells each finer one added, and
        ``cells_added_plateau`` how many the median image's bright blobs added
        (with ``options.somata="refined"``).
    """
    from astro3s.inference.segment import (
        adapt_soma_scale,
        fixed_scale_info,
        segment_preprocessed,
    )
    from astro3s.inference.network import flip_averaged
    from astro3s.postprocess import CombineParams

    model = flip_averaged(model, options.test_time_flips)  # once: a wrapped network is kept as it is
    rules = options.rules
    timings = {} if timings is None else timings
    scale_info, fov_probs = fixed_scale_info(pre.params), None
    first_pass_probs = None
    if options.soma_scale == "auto" and allow_binning:
        t = time.perf_counter()
        factor, coarse, first_pass_probs = _bin_factor(pre, model, options)
        if factor > 1 and pre.corrected is not None:
            seg, scale_info = _segment_binned(pre, model, options, factor, coarse, timings=timings, name=name,
                                              started=t)
            return pre, _final_cells(seg, pre, options), scale_info
        scale_info.update(coarse)
        timings["binning_s"] = time.perf_counter() - t
    if options.soma_scale == "auto":
        t = time.perf_counter()
        # a binned FOV's inner pass has no blob scale of its own: its blobs are binned to the parameters'
        pre, fitted, fov_probs = adapt_soma_scale(
            pre, model, normalize=options.normalize, device=options.device, amp=options.amp, tiling=options.tiling,
            blob_area=scale_info.get("blob_area") if allow_binning else None,
            scale_tiles=options.scale_clahe_tiles, shrink_tolerance=rules.shrink_tolerance,
            fov_probs=first_pass_probs)
        scale_info.update(fitted)
        timings["soma_scale_s"] = time.perf_counter() - t
        if scale_info["rescaled"]:
            log.info("%s: soma scale fitted to the movie: areas %s px (configured %s)", name,
                     scale_info["used"], scale_info["configured"])
    # the lower end loosened for FOVs at their own scale, not binned ones (held-out dense FOVs,
    # diagnosed: detection F1 0.90 -> 0.95; binned giant and d2_like FOVs lost precision 0.83 -> 0.76)
    crowded = scale_info.get("first_pass_somata", 0) >= rules.crowded_somata
    overrides = size_filter_overrides(options.combine, scale_info, pre.params.soma_area_range,
                                      low_slack=(rules.crowded_soma_slack if crowded else rules.small_soma_slack)
                                      if allow_binning else 1.0)
    overrides = with_pixel_widening_for(overrides, crowded=crowded, on_sparse=rules.pixel_widening_on_sparse)
    combine_params = CombineParams.from_preprocess(pre.params, **overrides)
    # the whole-FOV pass of the scale fit is reused when the candidates did not change
    seg = segment_preprocessed(pre, model, combine=combine_params, normalize=options.normalize,
                               batch_size=options.batch_size, device=options.device, amp=options.amp,
                               tiling=options.tiling, fov_probs=fov_probs,
                               zoom=scale_info.get("zoom", 1.0), timings=timings,
                               border_centred_crops=rules.border_centred_crops,
                               border_centred_agreement=rules.border_centred_agreement)
    if allow_binning:
        seg = _with_edge_cells(seg, pre, model, options, combine_params.soma_area_range,
                               zoom=scale_info.get("zoom", 1.0))
    if allow_binning and options.soma_scale == "auto" and options.large_soma_pass:
        if crowded and not rules.large_pass_on_crowded:
            seg = dataclasses.replace(seg, counts={**seg.counts, "large_pass_skipped_crowded": 1})
        else:
            seg = add_large_cells(seg, pre, model, options, name=name, timings=timings)
    seg = reject_lookalikes(seg, pre, options)
    median_image = getattr(pre, "median_image", None)
    # a FOV at its own scale (zoomed for the network or not); not a binned FOV's inner pass, whose
    # somata are refined after they are resampled to the movie's pixels
    if allow_binning and options.somata != "network" and median_image is not None:
        from astro3s.postprocess.grow import with_refined_somata, with_trimmed_somata

        seg = with_refined_somata(seg, median_image, reach=rules.soma_reach)
        if options.somata == "refined":
            seg = with_trimmed_somata(seg, median_image)
    # processes lengthened along the image's ridges where the network drew them at the FOV's own pixels
    at_own_pixels = scale_info.get("zoom", 1.0) == 1.0 if rules.extend_refitted_fovs else not scale_info["rescaled"]
    if allow_binning and options.extend_processes and median_image is not None and at_own_pixels:
        from astro3s.postprocess.grow import with_extended_processes

        seg = with_extended_processes(seg, median_image)
    if not allow_binning:
        return pre, seg, scale_info
    if options.active_view:
        seg = add_active_view_cells(seg, pre, model, options, timings=timings, name=name)
    if options.correlation_view:
        seg = add_correlation_view_cells(seg, pre, model, options, timings=timings, name=name)
    if rules.faint_own_scale_contrast > 0 and median_image is not None:  # (it checks the image's shape)
        seg = drop_faint_cells(seg, median_image, min_relative_contrast=rules.faint_own_scale_contrast,
                               reference="median", keep_solidity=rules.faint_soma_solidity,
                               keep_area_ratio=rules.faint_soma_area)
    return pre, _final_cells(seg, pre, options), scale_info


def _bin_factor(pre: Any, model: Any, options: InferenceOptions) -> tuple[int, dict[str, Any], Any]:
    """:func:`astro3s.inference.segment.soma_bin_factor` of ``pre``, asking the first network pass when cores refuse.

    Returns
    -------
    factor, info
        As ``soma_bin_factor``'s.
    fov_probs : ndarray of float, shape (3, H, W), or None
        The whole-FOV pass at the FOV's own pixels when it was run (reused by the soma-scale fit).
    """
    from astro3s.inference.network import predict_fov
    from astro3s.inference.segment import soma_bin_factor

    rules = options.rules
    first_pass: dict[str, Any] = {}

    def run_first_pass() -> Any:
        # asked only when ring cores refuse binning; kept for adapt_soma_scale, which runs it anyway
        if "fov_probs" not in first_pass:
            first_pass["fov_probs"] = predict_fov(model, pre, normalize=options.normalize, tiling=options.tiling,
                                                  device=options.device, amp=options.amp)
        return first_pass["fov_probs"]

    factor, info = soma_bin_factor(pre, own_reach=rules.own_reach, wide_dominance=rules.wide_dominance,
                                   first_pass=run_first_pass if rules.first_pass_giant_soma else None,
                                   min_blob_scale=rules.min_blob_scale)
    if factor == 1 and rules.coarse_scale_check:
        factor, info = _coarse_check(pre, model, options, info)
    return factor, info, first_pass.get("fov_probs")


def _coarse_check(pre: Any, model: Any, options: InferenceOptions, info: dict[str, Any]) -> tuple[int, dict[str, Any]]:
    """The bin factor that a whole-FOV pass over ``pre`` binned ``COARSE_CHECK_BIN`` times asks for.

    A FOV the blob scale leaves at its own pixels may still hold giant somata
    that small bright blobs outvoted (:data:`astro3s.inference.segment.COARSE_SCALE_CHECK`,
    :func:`astro3s.inference.segment.coarse_bin_factor`). Nothing is done without the
    motion-corrected movie, on a FOV narrower than ``LARGE_SOMA_MIN_FOV * COARSE_CHECK_BIN`` px, or when
    filled rim cores measure somata smaller than the coarse pass's giants (at least
    :data:`~astro3s.inference.segment.RING_VETO_MIN` cores, :func:`~astro3s.inference.segment.ring_soma_area`;
    the seventeenth session's form asked only where the cores had refused a binning the blobs asked for,
    ``info["ring_area"]``): a membrane-labelled FOV's bright territories look like giant somata to the coarse
    pass as they do to the blob search (fresh cross-check ``membrane_96``: somata of 208-425 px binned 4x4 on
    one coarse "soma" of 2512 px, 4 of 7 true cells lost; never-seen ``heldout_membrane_293``, six cores
    measuring ~176 px, binned 4x4 on a 2240-px territory, 0 of 5 true cells found).

    Returns
    -------
    factor, info
        ``info`` with ``coarse_check_somata`` (the pass's soma areas at the FOV's pixels) when the pass ran;
        when they ask for binning, ``coarse_scale``/``bin_factor`` set by them and ``bin_source`` ``"coarse_check"``.
    """
    from astro3s.inference.network import predict_fov
    from astro3s.inference.segment import (COARSE_CHECK_BIN, binned_preprocess, coarse_bin_factor, coarse_soma_scale,
                                           max_bin_factor, ring_soma_area)

    if pre.corrected is None or min(pre.fov_map.shape) < LARGE_SOMA_MIN_FOV * COARSE_CHECK_BIN:
        return 1, info
    core_soma_area = ring_soma_area((pre.details or {}).get("ring_core_areas"))
    if core_soma_area is not None and core_soma_area < COARSE_CHECK_BIN ** 2 * pre.params.soma_area_range[0]:
        return 1, info  # (where the cores refused binning, info["ring_area"], they always say so)
    small = binned_preprocess(pre, COARSE_CHECK_BIN)
    probs = predict_fov(model, small, normalize=options.normalize, tiling=options.tiling, device=options.device,
                        amp=options.amp)
    factor, areas = coarse_bin_factor(probs, COARSE_CHECK_BIN, pre.params.soma_area_range,
                                      max_factor=max_bin_factor(pre.fov_map.shape))
    info = {**info, "coarse_check_somata": areas}
    if factor > 1:
        info.update(coarse_scale=round(coarse_soma_scale(areas, pre.params.soma_area_range), 3), bin_factor=factor,
                    bin_source="coarse_check")
    return factor, info


def _with_edge_cells(seg: Any, pre: Any, model: Any, options: InferenceOptions,
                     soma_area_range: tuple[float, float] | None, *, zoom: float) -> Any:
    """``seg`` with the somata the FOV's edge cuts that the rules set to add (border-cut crops, mirrored FOV)."""
    lo, hi = soma_area_range or (0.0, None)
    if options.rules.border_cut_cells and zoom == 1.0:
        seg = add_border_cut_cells(seg, pre, model, options, min_area=0.5 * float(lo))
    if options.rules.edge_fov_cells:
        seg = add_edge_fov_cells(seg, pre, model, options, min_area=0.5 * float(lo),
                                 max_area=None if hi is None else float(hi), zoom=zoom,
                                 min_depth=options.rules.border_sliver_ratio)
    return seg


def _final_cells(seg: Any, pre: Any, options: InferenceOptions) -> Any:
    """The rules on the movie's whole segmentation, at both exits of :func:`segment_movie`."""
    rules = options.rules
    seg = with_fragments_absorbed(seg, max_ratio=rules.fragment_ratio)
    if rules.pair_blur_rule:
        seg = drop_blurred_pair(seg, pre, options)
    seg = drop_border_slivers(seg, min_ratio=rules.border_sliver_ratio)
    if rules.min_soma_solidity > 0:
        seg = drop_ragged_cells(seg, min_solidity=rules.min_soma_solidity)
    if rules.max_soma_elongation > 0:
        seg = drop_elongated_cells(seg, max_elongation=rules.max_soma_elongation)
    seg = with_limited_processes(seg, options)
    median_image = _median_image_at(pre, seg)
    if rules.visible_processes and median_image is not None:
        from astro3s.postprocess.grow import with_visible_processes

        seg = with_visible_processes(seg, median_image)
    if rules.separate_somata:
        seg = with_separate_somata(seg)
    if rules.ring_cell_process_ratio > 0:
        seg = drop_ring_cells(seg, getattr(pre, "ring_cores", None), min_process_ratio=rules.ring_cell_process_ratio)
    return seg


# a soma under this fraction of the largest soma joined to it (through soma or process pixels) is a
# swelling of that cell's process: its pixels become that cell's processes (with_fragments_absorbed;
# chosen 2026-12-05 on held-out movies on ASTRA's D2 layouts, experiments/results/heldout_ablation.md)
FRAGMENT_SOMA_RATIO = 0.15
# FOVs of two cells: the one whose soma edge is max_relative_blur times wider goes (drop_blurred_pair;
# 2026-12-05 night, held-out movies on ASTRA's D2 layouts); False turns it off
PAIR_BLUR_RULE = True
# ... and the wider-edged cell goes only if its soma's contrast over its surround is at most the other's. Since
# 2026-12-06 (fourth session): on cross-check `zoom_4` the rule dropped the FOV's one bright in-focus soma (the
# cross-check's 3-D cells have soft edges through the optical section) against a faint patch of fibre texture,
# whose low contrast over a steep fibre edge reads as a narrow edge (experiments/results/heldout_ablation.md)
PAIR_BLUR_CONTRAST = True
# last, every FOV's processes are kept only where the median image shows a ridge under them, with the width
# around it (astro3s.postprocess.grow.keep_visible_processes; 2026-12-06, fifth session: the network draws a star
# of processes around each soma, also over haze; experiments/results/heldout_ablation.md); False turns it off
VISIBLE_PROCESSES = True
# a cell whose soma the FOV's edge cuts to less than half a disc goes: it reaches into the FOV less deep than
# half its width along the edge (drop_border_slivers, astro3s.postprocess.border; 2026-12-06, fifth session: ASTRA's
# annotators draw no such sliver, 1 of ~1500 consensus somata; experiments/results/heldout_ablation.md); 0 turns it off
BORDER_SLIVER_RATIO = 1.0
# a cell whose soma (under RAGGED_MAX_AREA px) has a solidity under this goes (drop_ragged_cells; 2026-12-06, ninth
# session: ASTRA's experts drew 1 of 1526 consensus somata under 0.75; 0 turns it off)
MIN_SOMA_SOLIDITY = 0.0
RAGGED_MAX_AREA = 1000.0
# a cell whose soma is more than this many times as long as it is wide goes (drop_elongated_cells; 2026-12-07,
# thirteenth session: no soma of ASTRA's experts, 1526 consensus and ~2500 single-annotator ones, exceeds 3.82, the
# median is 1.4; on the cross-check's high-zoom FOVs the network drew stretches of straight fibres as somata;
# 0 turns it off)
MAX_SOMA_ELONGATION = 4.0
# at the very end, a one-pixel gap is opened wherever two cells' somata touch (with_separate_somata; 2026-12-06,
# ninth session): the soma *mask* read alone, as ASTRA's score and a threshold of the label image read it, joins
# touching somata into one (never-seen heldout_lookalikes_235: a true soma touching an out-of-focus blob's was
# scored one false soma); False turns it off
SEPARATE_SOMATA = True
# the fast-event rule (InferenceOptions.drop_fast_event_cells) judges the somata's events detected on their dF/F
# (astro3s.events.kinetics.kinetics_events; 2026-12-06, ninth session: on the raw fluorescence a bleaching movie's
# brighter, noisier early frames gave short noise events, and true cells were dropped as neurons); False: on F
FAST_EVENTS_ON_DFF = True
# a cell whose soma sits on a filled ring core (the soma holds at least half of a core's pixels) and whose
# processes reach beyond RING_CELL_REACH px of the soma over less than this fraction of the soma's area goes:
# a neuron's ring around its dark nucleus, filled like a membrane soma's (drop_ring_cells; 2026-12-07, sixteenth
# session, measured on the development and already-scored draws by experiments/probe_ring_cells.py: of 220 cells on
# filled cores, 8 of the 22 false ones and 1 of the 198 true ones under 0.1; at 0.2, 13 and 5;
# experiments/results/ring_cells_probe.md); 0 turns it off
RING_CELL_PROCESS_RATIO = 0.1
RING_CELL_REACH = 4.0


def with_fragments_absorbed(seg: Any, *, max_ratio: float | None = FRAGMENT_SOMA_RATIO) -> Any:
    """``seg`` with cells far smaller than the cell they are joined to absorbed as its processes.

    :func:`astro3s.postprocess.absorb_fragment_somata` with ``max_ratio``
    (None or 0: ``seg`` as it is); ``counts["fragments_absorbed"]`` says how many.
    At high zoom a thick process's branch points and swellings are as wide as
    a D1 soma, and the soma-size filters, which keep every size the
    configured range accepts, let them through as cells (the independent
    benchmark of issue 13 reported such fragments in place of high-zoom cells).
    """
    if not max_ratio:
        return seg
    from astro3s.postprocess.combine import _segmentation
    from astro3s.postprocess.split import absorb_fragment_somata

    soma, processes, absorbed = absorb_fragment_somata(seg.soma, seg.processes, max_ratio=max_ratio)
    counts = {**seg.counts, "fragments_absorbed": absorbed}
    if not absorbed:
        return dataclasses.replace(seg, counts=counts)
    counts["cells"] = seg.n_cells - absorbed
    return _segmentation(soma, processes, seg.n_cells - absorbed, seg.params, counts)


def drop_blurred_pair(seg: Any, pre: Any, options: InferenceOptions) -> Any:
    """A FOV of two cells without the one whose soma edge is much wider, in pixels, than the other's.

    The look-alike rule on soma blur (:func:`astro3s.postprocess.sharpness.remove_blurred_cells`)
    compares each cell with the median of at least ``CombineParams.min_cells_for_blur`` (3) cells:
    a FOV of one true cell and one out-of-focus astrocyte, as at high zoom, keeps both. With two
    cells the sharper one is the reference, and the other goes when its soma edge is more than
    ``max_relative_blur`` (1.5, the same factor) times as wide in pixels: defocus widens an edge
    by pixels whatever the soma's size, and two in-focus cells of different sizes have edges
    of about the same width in pixels (their widths relative to the radius differ). Only two cells
    apart (not joined through soma or process pixels) are compared. Measured: held-out movies on
    ASTRA's D2 layouts, out-of-focus cells 1.04-1.82x the true cell's edge width (7 of 10 over
    1.5, all 7 apart from it), two true cells 0.97-1.09x (experiments/results/heldout_ablation.md).
    The wider-edged cell goes only if it also stands out of its surround no more than the other
    (``PAIR_BLUR_CONTRAST``): defocus spreads a cell's light, so an out-of-focus cell is the dimmer
    of the two, while a faint patch of texture can have a steep edge and so a narrow one.
    ``counts["pair_blurred_removed"]`` says whether one went.
    """
    from astro3s.postprocess import CombineParams
    from astro3s.postprocess.combine import remove_cells
    from astro3s.postprocess.sharpness import soma_edges

    max_blur = options.combine.get("max_relative_blur", CombineParams.max_relative_blur)
    median_image = _median_image_at(pre, seg)
    if max_blur is None or median_image is None or seg.n_cells != 2:
        return seg
    from astro3s.postprocess.split import soma_groups

    # two cells joined through soma or process pixels are judged by nothing here: the sharper "soma" may
    # be a piece of the other's process (heldout_layout_d2_RoiSet_SMALL_044_r1: the true cell dropped
    # against a piece of its own process; the out-of-focus cells this rule removed all stood apart)
    groups, _, _ = soma_groups(seg.soma, seg.processes)
    drop = np.zeros(2, bool)
    if np.intersect1d(groups[seg.soma == 1], groups[seg.soma == 2]).size == 0:
        contrast, steep = soma_edges(median_image, seg.soma)
        if np.all(contrast > 0) and np.all(steep > 0):
            width = contrast / steep  # px (soma_edge_blur with relative=False)
            wider = int(np.argmax(width))
            drop[wider] = (width[wider] > float(max_blur) * width[1 - wider]
                           and (not options.rules.pair_blur_contrast or contrast[wider] <= contrast[1 - wider]))
    return remove_cells(seg, drop, count_key="pair_blurred_removed")


def drop_ragged_cells(seg: Any, *, min_solidity: float, max_area: float = RAGGED_MAX_AREA) -> Any:
    """``seg`` without the cells whose soma is as ragged as no annotated soma is
    (:func:`astro3s.postprocess.lookalike.ragged_somata`); ``counts["ragged_removed"]`` says how many went."""
    from astro3s.postprocess.combine import remove_cells
    from astro3s.postprocess.lookalike import ragged_somata

    if seg.n_cells == 0:
        return seg
    return remove_cells(seg, ragged_somata(seg.soma, min_solidity=min_solidity, max_area=max_area),
                        count_key="ragged_removed")


def drop_elongated_cells(seg: Any, *, max_elongation: float) -> Any:
    """``seg`` without the cells whose soma is more elongated than any annotated soma
    (:func:`astro3s.postprocess.lookalike.elongated_somata`); ``counts["elongated_removed"]`` says how many went."""
    from astro3s.postprocess.combine import remove_cells
    from astro3s.postprocess.lookalike import elongated_somata

    if seg.n_cells == 0:
        return seg
    return remove_cells(seg, elongated_somata(seg.soma, max_elongation=max_elongation),
                        count_key="elongated_removed")


def drop_ring_cells(seg: Any, ring_cores: np.ndarray | None, *,
                    min_process_ratio: float = RING_CELL_PROCESS_RATIO, reach: float = RING_CELL_REACH,
                    min_core_share: float = 0.5) -> Any:
    """``seg`` without the cells on a filled ring core that reach out with no processes.

    The ring-core fill (:func:`astro3s.preprocess.ring_cores.fill_ring_cores`)
    raises the dim core inside a bright closed rim so that a membrane-labelled
    soma reads as a disc; a neuron's ring around its dark nucleus (a cytosolic
    indicator) is filled alike and the network may call it a soma. An
    astrocyte reaches out with processes; such a ring does not. A cell goes
    when its soma holds at least ``min_core_share`` of one core's pixels and
    its process pixels farther than ``reach`` px from its soma number fewer
    than ``min_process_ratio`` times its soma's area.

    Parameters
    ----------
    seg : Segmentation
    ring_cores : ndarray of bool, shape (H, W), or None
        The pixels the fill raised (``Preprocessed.ring_cores``); None, or
        another grid's: ``seg`` as it is.
    min_process_ratio : float
        0: ``seg`` as it is.
    reach : float
        Px from the soma within which processes do not count (the rim band the
        network draws around a filled ring).
    min_core_share : float
        Fraction of a core's pixels the soma must hold.

    Returns
    -------
    Segmentation
        ``counts["ring_cells_removed"]`` says how many went (when the rule ran).
    """
    if ring_cores is None or not min_process_ratio or seg.n_cells == 0 \
            or np.shape(ring_cores) != seg.soma.shape or not np.any(ring_cores):
        return seg
    from astro3s.postprocess.combine import remove_cells

    cells_on, past_reach = ring_cell_processes(seg, ring_cores, reach=reach, min_core_share=min_core_share)
    drop = np.zeros(seg.n_cells, bool)
    drop[cells_on - 1] = past_reach < min_process_ratio * seg.soma_area[cells_on - 1]
    return remove_cells(seg, drop, count_key="ring_cells_removed")


def ring_cell_processes(seg: Any, ring_cores: np.ndarray, *, reach: float = RING_CELL_REACH,
                        min_core_share: float = 0.5) -> tuple[np.ndarray, np.ndarray]:
    """The cells of ``seg`` on a filled ring core, and how many of their process pixels lie past ``reach``.

    What :func:`drop_ring_cells` judges (and ``experiments/probe_ring_cells.py`` measures).

    Parameters
    ----------
    seg : Segmentation
    ring_cores : ndarray of bool, shape (H, W)
        The pixels the ring-core fill raised, on ``seg``'s grid.
    reach : float
        Px from the soma within which processes do not count.
    min_core_share : float
        Fraction of one core's pixels a cell's soma must hold.

    Returns
    -------
    cells : ndarray of int64, shape (k,)
        Ids of the cells whose soma holds at least ``min_core_share`` of a core, ascending.
    past_reach : ndarray of int64, shape (k,)
        Each one's process pixels farther than ``reach`` px from its soma.
    """
    from scipy import ndimage

    n = seg.n_cells
    core_labels, n_cores = ndimage.label(ring_cores)
    core_area = np.bincount(core_labels.ravel(), minlength=n_cores + 1)
    on = (core_labels > 0) & (seg.soma > 0)
    # soma pixels on each (cell, core) pair, as a share of that core
    pair = seg.soma[on].astype(np.int64) * (n_cores + 1) + core_labels[on]
    shares = np.bincount(pair, minlength=(n + 1) * (n_cores + 1)).reshape(n + 1, n_cores + 1) / np.maximum(core_area, 1)
    cells = np.flatnonzero(shares[1:, 1:].max(axis=1, initial=0.0) >= min_core_share) + 1
    past_reach = np.zeros(len(cells), np.int64)
    margin = int(np.ceil(reach)) + 1
    boxes = ndimage.find_objects(seg.soma, max_label=n)
    process_area = np.bincount(seg.processes.ravel(), minlength=n + 1)
    for k, cell in enumerate(cells):  # the few cells on cores (each holds core pixels, so has a box)
        window = tuple(slice(max(b.start - margin, 0), b.stop + margin) for b in boxes[cell - 1])
        distance = ndimage.distance_transform_edt(seg.soma[window] != cell)
        near = np.count_nonzero((seg.processes[window] == cell) & (distance <= reach))
        past_reach[k] = process_area[cell] - near
    return cells.astype(np.int64), past_reach


def with_separate_somata(seg: Any) -> Any:
    """``seg`` with a one-pixel gap wherever two somata touch (:func:`astro3s.postprocess.split.separate_somata`).

    The gap is cut from the larger soma of each touching pair; the pixels go to
    the background. ``counts["somata_separated"]`` says how many somata lost
    pixels; a soma the cut would leave empty (a sliver along a larger
    neighbour, in principle) takes its cell with it, counted as ``somata_emptied``.
    """
    from astro3s.postprocess.combine import _segmentation, remove_cells
    from astro3s.postprocess.split import separate_somata

    soma, n_cut = separate_somata(seg.soma)
    counts = {**seg.counts, "somata_separated": n_cut, "somata_emptied": 0}
    if not n_cut:
        return dataclasses.replace(seg, counts=counts)
    out = _segmentation(soma, seg.processes, seg.n_cells, seg.params, counts)  # the cut pixels were soma only
    emptied = (out.soma_area == 0) & (seg.soma_area > 0)
    return remove_cells(out, emptied, count_key="somata_emptied") if emptied.any() else out


def with_limited_processes(seg: Any, options: InferenceOptions) -> Any:
    """``seg`` with each cell's processes cut to ``options.max_process_ratio`` times its soma's area.

    :func:`astro3s.postprocess.limit_process_area`; ``seg`` itself when the
    option is None or no cell is over the limit. ``counts`` kept.
    """
    if options.max_process_ratio is None:
        return seg
    from astro3s.postprocess.combine import _segmentation
    from astro3s.postprocess.split import limit_process_area

    processes = limit_process_area(seg.soma, seg.processes, max_ratio=options.max_process_ratio)
    if np.array_equal(processes, seg.processes):
        return seg
    return _segmentation(seg.soma, processes, seg.n_cells, seg.params, dict(seg.counts))
