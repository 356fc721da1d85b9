"""The result of the pre-processing of one movie (:class:`Preprocessed`)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from astro3s.preprocess.motion import CorrectedMovie
from astro3s.preprocess.params import PreprocessParams

__all__ = ["Preprocessed"]


@dataclass
class Preprocessed:
    """Result of :func:`~astro3s.preprocess.preprocess` for one FOV.

    Attributes
    ----------
    shifts : ndarray of float32, shape (T, 2)
        ``(dy, dx)`` displacement of each frame relative to ``reference``
        (see :mod:`astro3s.preprocess.motion`).
    reference : ndarray of float32, shape (H, W)
        Motion-correction reference image.
    mean_image : ndarray of float32, shape (H, W)
        Temporal mean of the raw (uncorrected) movie.
    enhanced : ndarray of float32, shape (H, W)
        Enhanced image, values in [0, 1].
    activity_map : ndarray of float32, shape (H, W)
        Coverage-normalised supra-threshold counts, in frames [0, T].
    candidates : ndarray of uint16, shape (H, W)
        Soma candidate labels 1..N (0 = background).
    crop_boxes : ndarray of int32, shape (N, 4)
        ``(y0, x0, y1, x1)`` of each candidate's filter box in the FOV.
    crop_masks : ndarray of bool, shape (N, S, S)
        Local-activity masks, padded like ``crops``.
    crops : ndarray of float32, shape (N, S, S)
        Enhanced image x mask in each box, zero-padded to ``S = crop_size``;
        ``astro3s.preprocess.paste_crops`` puts arrays of this layout back.
    fov_map : ndarray of float32, shape (H, W)
        Enhanced image x union of the masks (the whole-FOV network input).
    fov_mask : ndarray of bool, shape (H, W)
        Union of the masks.
    params : PreprocessParams
        The parameters used.
    shape : (int, int, int)
        ``(T, H, W)`` of the movie.
    fs : float or None
        Frame rate in Hz.
    source : str or None
        Path of the movie file.
    details : dict
        Candidate search outcome, approximations used, timings (s) per stage.
    corrected : CorrectedMovie or None
        The motion-corrected movie: from memory, from the temporary file the
        streamed pass wrote (movies beyond the memory budget), or corrected on
        read (original movie + shifts); ``corrected.close()`` deletes the file.
    median_image : ndarray of float32, shape (H, W), or None
        Temporal median of the baseline-subtracted frames, the image ``enhanced``
        is made from (kept so that the enhancement can be redone at another
        scale: :func:`~astro3s.preprocess.reselect_candidates`); None when loaded from a file.
    correlation_image : ndarray of float32, shape (H, W), or None
        Local temporal-correlation image, computed when ``params.activity_weight > 0``
        (added to the median image before the enhancement) or ``params.keep_correlation_image``;
        None otherwise and when loaded from a file.
    active_image : ndarray of float32, shape (H, W), or None
        The ``params.active_percentile`` temporal percentile of the frames the
        median was taken over, each frame at its own level less the typical
        frame baseline, clipped at 0 (on the median image's zero): the FOV as
        it looks when active. None without that parameter and when
        loaded from a file.
    ring_cores : ndarray of bool, shape (H, W), or None
        The pixels of ``median_image`` that the ring-core fill raised: dim cores
        inside bright closed rims (membrane-labelled somata, and the dark
        nuclei of some neurons; :func:`~astro3s.preprocess.ring_cores.fill_ring_cores`).
        Read by :func:`astro3s.inference.cells.drop_ring_cells`. None when none
        was raised and when loaded from a file.
    """

    shifts: np.ndarray
    reference: np.ndarray
    mean_image: np.ndarray
    enhanced: np.ndarray
    activity_map: np.ndarray
    candidates: np.ndarray
    crop_boxes: np.ndarray
    crop_masks: np.ndarray
    crops: np.ndarray
    fov_map: np.ndarray
    fov_mask: np.ndarray
    params: PreprocessParams
    shape: tuple[int, int, int]
    fs: float | None = None
    source: str | None = None
    details: dict[str, Any] = field(default_factory=dict)
    corrected: CorrectedMovie | None = field(default=None, repr=False, compare=False)
    median_image: np.ndarray | None = field(default=None, repr=False, compare=False)
    correlation_image: np.ndarray | None = field(default=None, repr=False, compare=False)
    active_image: np.ndarray | None = field(default=None, repr=False, compare=False)
    ring_cores: np.ndarray | None = field(default=None, repr=False, compare=False)

    @property
    def n_candidates(self) -> int:
        """Number of soma candidates ``N``."""
        return int(len(self.crop_boxes))
