"""Combination of network outputs into cells (ASTRA's post-processing).

::

    from astro3s.postprocess import combine, CombineParams
    seg = combine(crop_probs, pre.crop_boxes, fov_probs,
                  params=CombineParams.from_preprocess(pre.params))
    seg.soma, seg.processes          # uint16 (H, W) label images sharing ids

Modules: :mod:`~astro3s.postprocess.params` (settings),
:mod:`~astro3s.postprocess.blend` (crops into FOV coordinates),
:mod:`~astro3s.postprocess.rules` (one function per combination rule),
:mod:`~astro3s.postprocess.split` (one id per cell),
:mod:`~astro3s.postprocess.combine` (the whole chain), :mod:`~astro3s.postprocess.border` (somata cut by the
FOV's edge). Importing does no work.
"""

from astro3s.postprocess.blend import blend_crops, crop_weight
from astro3s.postprocess.border import border_depth_ratio, border_slivers
from astro3s.postprocess.grow import (complete_somata, extend_processes, grow_processes, keep_ridges, plateau_somata,
                                     keep_visible_processes, refine_somata, ridge_strength, trim_somata,
                                     with_completed_somata, with_extended_processes, with_grown_processes,
                                     with_refined_somata, with_trimmed_somata, with_visible_processes)
from astro3s.postprocess.combine import (
    Segmentation,
    add_missing_cells,
    combine,
    combine_maps,
    remove_cells,
    upsample_segmentation,
)
from astro3s.postprocess.params import BLENDS, SPLITS, CombineParams
from astro3s.postprocess.rules import (class_masks, component_areas, merge_somata, remove_orphan_processes,
                                       small_somata_to_processes, soma_area_filter)
from astro3s.postprocess.split import (absorb_fragment_somata, keep_connected_to_soma, label_somata,
                                       limit_process_area, separate_somata, soma_centroids, split_disc,
                                       split_watershed)

__all__ = [
    "BLENDS",
    "SPLITS",
    "CombineParams",
    "Segmentation",
    "absorb_fragment_somata",
    "add_missing_cells",
    "blend_crops",
    "border_depth_ratio",
    "border_slivers",
    "class_masks",
    "combine",
    "combine_maps",
    "complete_somata",
    "component_areas",
    "crop_weight",
    "extend_processes",
    "grow_processes",
    "keep_ridges",
    "keep_connected_to_soma",
    "keep_visible_processes",
    "label_somata",
    "limit_process_area",
    "merge_somata",
    "plateau_somata",
    "refine_somata",
    "ridge_strength",
    "remove_cells",
    "remove_orphan_processes",
    "separate_somata",
    "small_somata_to_processes",
    "soma_area_filter",
    "soma_centroids",
    "split_disc",
    "split_watershed",
    "trim_somata",
    "with_extended_processes",
    "upsample_segmentation",
    "with_completed_somata",
    "with_grown_processes",
    "with_refined_somata",
    "with_trimmed_somata",
    "with_visible_processes",
]
