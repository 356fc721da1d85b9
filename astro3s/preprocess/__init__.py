"""ASTRA's pre-processing: from a calcium-imaging movie to single-cell network inputs.

One module per stage, each a set of small pure functions on arrays:

1. :mod:`~astro3s.preprocess.motion` - rigid sub-pixel motion correction;
2. :mod:`~astro3s.preprocess.enhance` - the enhanced (sharpened) summary image
   (of the median image, or for a baseline-subtracted movie of its
   noise-variance image: :mod:`~astro3s.preprocess.baseline`);
3. :mod:`~astro3s.preprocess.activity` - the activity map;
4. :mod:`~astro3s.preprocess.candidates` - soma candidates;
5. :mod:`~astro3s.preprocess.local_filter` - local activity filter per candidate;
6. :mod:`~astro3s.preprocess.crops` - 96 x 96 crops and the FOV map;

and :mod:`~astro3s.preprocess.scale`, the soma scale of a FOV from its image.

:func:`preprocess` (:mod:`~astro3s.preprocess.pipeline`) runs them on a (lazy)
movie, stages 1-3 in one threaded pass over time chunks
(:mod:`~astro3s.preprocess.streaming`); its result
(:mod:`~astro3s.preprocess.result`) is saved and loaded by
:mod:`~astro3s.preprocess.storage`;
:func:`fit_parameters` estimates the data-dependent parameters from annotated
training movies. Importing this package does no work.
"""

from astro3s.preprocess.activity import activity_map, tile_coverage, tile_starts, tile_thresholds
from astro3s.preprocess.baseline import BaselineCheck, check_baseline, noise_variance_image
from astro3s.preprocess.candidates import find_candidates
from astro3s.preprocess.crops import crop_offsets, extract_crops, fov_map, paste_crops
from astro3s.preprocess.enhance import (
    clahe,
    clahe_tiles_for_shape,
    enhance,
    enhance_image,
    frame_percentiles,
    sharpen,
    temporal_median,
    temporal_percentiles,
)
from astro3s.preprocess.fit import fit_parameters
from astro3s.preprocess.local_filter import (candidate_boxes, candidate_centres, local_activity_filter,
                                             local_activity_filters)
from astro3s.preprocess.motion import (CorrectedMovie, bandpass_filter, build_reference, correct_frames,
                                       estimate_shifts, fourier_shift, register_frames, register_spectra)
from astro3s.preprocess.params import PreprocessParams, load_params, save_params
from astro3s.preprocess.pipeline import preprocess, reselect_candidates
from astro3s.preprocess.result import Preprocessed
from astro3s.preprocess.storage import load_preprocessed, save_preprocessed
from astro3s.preprocess.scale import BinnedFrames, bin_frames, blob_soma_area, clahe_tiles_for_scale

__all__ = [
    "BaselineCheck",
    "BinnedFrames",
    "CorrectedMovie",
    "PreprocessParams",
    "Preprocessed",
    "activity_map",
    "bandpass_filter",
    "bin_frames",
    "blob_soma_area",
    "build_reference",
    "candidate_boxes",
    "candidate_centres",
    "check_baseline",
    "clahe",
    "clahe_tiles_for_scale",
    "clahe_tiles_for_shape",
    "correct_frames",
    "crop_offsets",
    "enhance",
    "enhance_image",
    "estimate_shifts",
    "extract_crops",
    "find_candidates",
    "fit_parameters",
    "fourier_shift",
    "fov_map",
    "frame_percentiles",
    "load_params",
    "load_preprocessed",
    "local_activity_filter",
    "local_activity_filters",
    "noise_variance_image",
    "paste_crops",
    "plot_preprocessed",
    "preprocess",
    "register_frames",
    "register_spectra",
    "reselect_candidates",
    "save_params",
    "save_preprocessed",
    "sharpen",
    "temporal_median",
    "temporal_percentiles",
    "tile_coverage",
    "tile_starts",
    "tile_thresholds",
]


def plot_preprocessed(*args, **kwargs):  # noqa: D103 - documented in figure.py; matplotlib loads lazily
    from astro3s.preprocess.figure import plot_preprocessed as _plot

    return _plot(*args, **kwargs)


plot_preprocessed.__doc__ = "Draw the pre-processing panel; see :func:`astro3s.preprocess.figure.plot_preprocessed`."
