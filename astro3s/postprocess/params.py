"""Parameters of the combination of network outputs into cells.

Published values are those of ASTRA's inference scripts (Bonato et al. 2023,
``jbonato1/ASTRA``, ``pipelines/Tr_Inf/Inf_data1.py`` and
``modules/test_fun.py``). Soma areas are not fixed numbers: every area
threshold is a factor of ``soma_area_range``, the smallest and largest soma
area of the training data, which the pre-processing fit estimates
(:attr:`astro3s.preprocess.PreprocessParams.soma_area_range`).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

from astro3s.errors import ConfigError
from astro3s.metrics import DISC_RADIUS

if TYPE_CHECKING:
    from astro3s.preprocess.params import PreprocessParams

__all__ = ["BLENDS", "SPLITS", "CombineParams"]

#: Ways of splitting a connected group of cells, see :mod:`astro3s.postprocess.split`.
SPLITS: tuple[str, ...] = ("watershed", "disc")
#: Ways of combining overlapping crops, see :func:`astro3s.postprocess.blend_crops`.
BLENDS: tuple[str, ...] = ("gaussian", "mean", "max")


@dataclass(frozen=True)
class CombineParams:
    """Every setting of :func:`astro3s.postprocess.combine`.

    Attributes
    ----------
    soma_area_range : (float, float)
        Smallest and largest soma area of the data, px (D1: (89, 345)); use
        the fitted pre-processing value (:meth:`from_preprocess`).
    small_soma_factor : float
        Somata of the crop map smaller than ``small_soma_factor * min area``
        are relabelled as processes (ASTRA: 2/3).
    merge_overlap : float
        A crop soma and a whole-FOV soma are merged (their union kept) when
        they share more than this fraction of the smaller one's pixels
        (ASTRA: 0.1).
    area_factors : (float, float)
        Merged somata with area below ``area_factors[0] * min area`` or above
        ``area_factors[1] * max area`` are removed (ASTRA: 0.9, 1.15).
    fov_area_factors : (float, float) or None
        Whole-FOV somata outside ``[f0 * min area, f1 * max area]`` take no
        part in the merge (ASTRA's ``prob_calc``: 1.0, 1.15); None keeps all.
    keep_unmatched : bool
        Keep crop somata that overlap no whole-FOV soma. ASTRA (False) keeps
        only somata confirmed by both predictions.
    fov_outside_crops : bool
        Pixels outside every crop box take the whole-FOV pass's probabilities
        in the crop map (:func:`astro3s.postprocess.combine`), so a cell no
        candidate crop covers is decided by the FOV pass alone; inside the
        boxes both passes must agree, as in ASTRA. False: ASTRA (such cells
        are lost: the crops exist only around the activity-based candidates,
        which miss crowded, small and quiet somata).
        (On 21 development movies of the training simulator, seeds 8000+,
        detection F1: d3_like 0.71 -> 0.79 (recall 0.65 -> 0.81), d4_like
        0.74 -> 0.77, d2_like 0.40 -> 0.50, randomised 0.35 -> 0.36; d1_like
        0.56 -> 0.51, all from 9 more false cells on the neuropil texture of
        d1_like_s8004, which already had 30.)
    split : {"watershed", "disc"}
        How a connected group of several cells is divided: ``"watershed"``
        (default) floods ``1 - P(cell)`` from the somata inside the cell mask,
        so each process pixel goes to the soma it is best connected to;
        ``"disc"`` is ASTRA's rule (pixels within ``disc_radius`` of a soma
        centroid), kept for benchmark fidelity.
    disc_radius : float
        Radius (px) of the discs of ``split="disc"`` (ASTRA: 40).
    blend : {"gaussian", "mean", "max"}
        How the probabilities of overlapping crops combine in FOV
        coordinates (see :func:`astro3s.postprocess.blend_crops`).
    blend_sigma : float
        Width of the ``"gaussian"`` weight, as a fraction of the crop side.
    connectivity : {1, 2}
        Pixel connectivity of every connected component; 2 (8-connectivity,
        OpenCV's default) as in ASTRA.
    max_relative_blur : float or None
        Cells whose soma edge is more than this many times as blurred as the
        FOV's median soma (:func:`astro3s.postprocess.sharpness.soma_edge_blur`
        on the median image) are removed as out-of-focus look-alikes; needs
        at least ``min_cells_for_blur`` cells and the median image (applied by
        :func:`astro3s.inference.segment_preprocessed`). None: keep all.
        (1.5: on 14 development movies of the training simulator, seeds
        8000+, it removed 5 of 103 false cells and none of 127 true ones.)
    min_cells_for_blur : int
        Fewer cells give no reliable median blur; the rule is then skipped.
    min_pixel_widening : float or None
        ... and whose soma edge is also at least this many times as wide *in
        pixels* as the FOV's median edge. Defocus widens an edge by the same
        pixels whatever the soma's size, while an in-focus soma's edge is as
        wide as the point-spread function makes it, so the edge relative to
        the radius alone calls small in-focus somata blurred (``w / r`` grows
        as ``r`` shrinks). Measured 2026-12-06 on 193 movies of four
        generators (network outlines, the whole-FOV rule): in-focus edges 1.00x
        the median in pixels (median), 1.09x (90th percentile), 1.17-1.27x
        (99th); every true cell the relative rule alone removed (26, most of
        them the smallest somata of crowded FOVs) was under 1.18x, while with
        1.2x the rule still removes 46 of the 56 false cells it removed (35
        by their edge, 11 at the border), the simulators' out-of-focus cells
        among them
        (``experiments/results/heldout_ablation.md``, "Blur in pixels"). Cells
        whose soma touches the FOV border keep the relative rule alone
        (:func:`astro3s.postprocess.sharpness.remove_blurred_cells`).
        None: the relative rule alone, as before.
    process_threshold : float or None
        A crop-map pixel that is not soma is a process pixel when its process
        probability reaches this value; None: when processes win the argmax
        (ASTRA). The network is cautious on thin distal branches: on 10
        development movies of the training simulator (seeds 8000+) process
        F1 rose from 0.46 (argmax) to 0.52 at 0.10-0.15 and fell below 0.07.
    reject_lookalikes : bool
        Remove the cells the look-alike classifier scores as not astrocytes
        (:func:`astro3s.postprocess.lookalike.remove_lookalikes`, on the FOV's
        un-enhanced median image; applied by
        :func:`astro3s.inference.segment_movie` on the movie's own pixels).
        (Fitted on development movies of the training simulator, its
        threshold just below every true cell's score there; it removes about
        an eighth of their false cells.)
    """

    soma_area_range: tuple[float, float] = (89.0, 345.0)
    small_soma_factor: float = 2.0 / 3.0
    merge_overlap: float = 0.1
    area_factors: tuple[float, float] = (0.9, 1.15)
    fov_area_factors: tuple[float, float] | None = (1.0, 1.15)
    keep_unmatched: bool = False
    fov_outside_crops: bool = True
    split: Literal["watershed", "disc"] = "watershed"
    disc_radius: float = float(DISC_RADIUS)
    blend: Literal["gaussian", "mean", "max"] = "gaussian"
    blend_sigma: float = 0.25
    connectivity: int = 2
    max_relative_blur: float | None = 1.5
    min_cells_for_blur: int = 3
    min_pixel_widening: float | None = 1.2
    process_threshold: float | None = 0.15
    reject_lookalikes: bool = True

    def __post_init__(self) -> None:  # noqa: C901, PLR0915 - one check per field
        # configs (YAML, Hydra) hand over lists; the dataclass stays hashable with tuples
        for name in ("soma_area_range", "area_factors", "fov_area_factors"):
            value = getattr(self, name)
            if value is not None:
                if len(value) != 2:
                    raise ConfigError(f"postprocess.{name} must be a pair (low, high), got {value!r}.")
                object.__setattr__(self, name, (float(value[0]), float(value[1])))
        low, high = self.soma_area_range
        if not 0 < low <= high:
            raise ConfigError(f"postprocess.soma_area_range must satisfy 0 < low <= high, "
                              f"got {self.soma_area_range}.")
        for name in ("area_factors", "fov_area_factors"):
            value = getattr(self, name)
            if value is not None and not 0 <= value[0] <= value[1]:
                raise ConfigError(f"postprocess.{name} must satisfy 0 <= low <= high, got {value}.")
        if not 0 <= self.small_soma_factor:
            raise ConfigError(f"postprocess.small_soma_factor must be >= 0, got {self.small_soma_factor}.")
        if not 0 <= self.merge_overlap < 1:
            raise ConfigError(f"postprocess.merge_overlap must be in [0, 1), got {self.merge_overlap}.")
        if self.split not in SPLITS:
            raise ConfigError(f"postprocess.split must be one of {', '.join(SPLITS)}, got {self.split!r}.")
        if self.blend not in BLENDS:
            raise ConfigError(f"postprocess.blend must be one of {', '.join(BLENDS)}, got {self.blend!r}.")
        if not self.disc_radius > 0:
            raise ConfigError(f"postprocess.disc_radius must be > 0, got {self.disc_radius}.")
        if not self.blend_sigma > 0:
            raise ConfigError(f"postprocess.blend_sigma must be > 0, got {self.blend_sigma}.")
        if self.connectivity not in (1, 2):
            raise ConfigError(f"postprocess.connectivity must be 1 or 2, got {self.connectivity}.")
        if self.process_threshold is not None and not 0 < self.process_threshold < 1:
            raise ConfigError(f"postprocess.process_threshold must be in (0, 1) or null, got {self.process_threshold}.")
        if self.max_relative_blur is not None and not self.max_relative_blur > 1:
            raise ConfigError(f"postprocess.max_relative_blur must be > 1 or null, got {self.max_relative_blur}.")
        if self.min_pixel_widening is not None and not self.min_pixel_widening >= 1:
            raise ConfigError(f"postprocess.min_pixel_widening must be >= 1 or null, got {self.min_pixel_widening}.")

    @classmethod
    def from_preprocess(cls, params: PreprocessParams, **overrides: Any) -> CombineParams:
        """Parameters whose soma areas come from fitted pre-processing parameters.

        Parameters
        ----------
        params : PreprocessParams
            Supplies ``soma_area_range``.
        **overrides
            Any other field of :class:`CombineParams`.
        """
        return cls.from_dict({"soma_area_range": params.soma_area_range, **overrides})

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> CombineParams:
        """Build from a mapping (a config section), naming unknown keys in the error.

        Raises
        ------
        ConfigError
            Unknown key or bad value.
        """
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ConfigError(f"unknown postprocess option(s) {', '.join(unknown)}; "
                              f"known: {', '.join(sorted(known))}.")
        return cls(**values)

    def replace(self, **changes: Any) -> CombineParams:
        """A copy with some fields changed (unknown names raise :class:`ConfigError`)."""
        return self.from_dict({**dataclasses.asdict(self), **changes})

    def as_dict(self) -> dict[str, Any]:
        """Plain, JSON-ready dict of the fields."""
        return dataclasses.asdict(self)
