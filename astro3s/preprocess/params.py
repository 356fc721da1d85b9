"""Parameters of the pre-processing, and their YAML files.

Every number of ASTRA's pre-processing (Bonato et al. 2023; values of the
reference implementation, github.com/jbonato1/ASTRA, ``dict_param`` of the
D1 pipelines) is a field of :class:`PreprocessParams`. Areas are not given in
pixels but as fractions of the lower end of ``soma_area_range`` so that a
parameter set fitted on another dataset (:func:`astro3s.preprocess.fit_parameters`)
moves every area threshold with the size of its somata; temporal thresholds
are fractions of the number of frames ``T``.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from astro3s.errors import CheckpointError, ConfigError, did_you_mean
from astro3s.preprocess.lines import MIN_LINE_OFFSET
from astro3s.preprocess.ring_cores import CORE_FILL, MIN_CORE_DEPTH, MIN_RIM_CONTRAST, RING_FILLS

__all__ = ["MORPHOLOGY_IMAGES", "PreprocessParams", "as_preprocess_params", "load_params", "params_from_dict",
           "save_params"]

# values of PreprocessParams.morphology_image
MORPHOLOGY_IMAGES = ("auto", "median", "noise_variance")


@dataclass(frozen=True)
class PreprocessParams:
    """Every setting of :func:`astro3s.preprocess.preprocess`.

    Published values are the ASTRA D1 settings; ``T`` is the number of frames and
    ``A`` the lower end of ``soma_area_range`` (89 px on D1).

    Motion correction
    -----------------
    motion_correction : bool
        Estimate and correct rigid translations (default True).
    line_correction : bool
        Measure the bidirectional-scan offset of the odd rows on a mean of 128
        frames (:func:`astro3s.preprocess.lines.estimate_line_offset`) and,
        when it is at least ``min_line_offset``, read every frame with the odd
        rows put back (:meth:`astro3s.io.Movie.with_line_shift`), before
        everything else (default True). ``Preprocessed.details`` records
        ``line_offset_px`` (measured) and ``line_shift_px`` (applied).
    min_line_offset : float
        Smallest offset corrected, px (0.25).
    register_noisy_frames : bool
        Check that consecutive frames' shifts agree as real motion does
        (:func:`astro3s.preprocess.motion.shifts_consistent`); when they jump
        as noise does, register means of 2-16 consecutive frames instead, or
        leave the movie uncorrected when even those disagree (default True).
        ``Preprocessed.details`` records ``motion_bin_frames`` (1: frame by
        frame; 0: not corrected) and ``motion_jump_px``.
    reference_frames : int
        Frames sampled evenly over the movie to build the reference (200); fewer
        when their spectra (complex64, ``8 H (W // 2 + 1)`` bytes a frame) would
        exceed 1/8 of ``memory_budget_mb`` (47 frames of 1024 x 1024 px at the
        default budget; 256 x 256 px frames are not capped).
    reference_stable_fraction : float
        Fraction of the sample, the most similar to the template, averaged into
        the reference (0.5).
    upsample_factor : int
        1 (default): sub-pixel shifts by a parabola through the correlation
        peak's neighbours; U > 1: correlation first upsampled to a grid of
        ``1 / U`` px by matrix DFT (ASTRA: skimage's upsampled registration).
        Same accuracy on simulated data, U = 10 is slower (see ``register_spectra``).
    bandpass_sigmas : (float, float)
        Gaussian low-pass and high-pass scales (px) of the images used for the
        shift estimate: the high-pass removes slow brightness changes (bright
        transients, bleaching), the low-pass the shot noise ((1, 8)).
    max_shift_fraction : float
        Largest shift searched, as a fraction of the FOV side (0.25).

    Spatial enhancement
    -------------------
    baseline_percentile : float
        Per-frame percentile subtracted before the temporal median ([10]).
    median_max_frames : int
        The temporal median is exact when ``T`` is at most this (and the frames
        fit ``memory_budget_mb``); otherwise it is the median of an even
        subsample of that many frames (1000).
    active_percentile : float or None
        Also keep this temporal percentile of the frames the median is taken
        over, as corrected (their baselines not subtracted):
        ``Preprocessed.active_image``, the FOV as it looks when its cells are
        active, where a cell dim at rest is bright. None (default): not
        computed. ``InferenceOptions.active_view`` sets it.
    morphology_image : str
        The image the cells' shapes are read from: ``"median"`` (ASTRA's: the
        temporal median of the baseline-subtracted frames), ``"noise_variance"``
        (half the mean squared difference of consecutive frames, for movies
        whose baseline was subtracted, dF) or ``"auto"`` (default: the median
        unless :func:`~astro3s.preprocess.baseline.check_baseline` finds the
        movie baseline-free, which also turns the motion correction off).
        :func:`~astro3s.preprocess.preprocess` resolves ``"auto"``; the result's
        ``params`` hold the choice.
    lift_dim_background : bool
        Before ASTRA's clip at 0 of the median image, raise a smooth,
        significant illumination fall-off whose floor is below zero (a
        vignetted FOV's corners, a dim side) to zero, so that the cells there
        keep their contrast (:func:`~astro3s.preprocess.enhance.lift_dim_background`;
        an evenly lit median image is unchanged). False: ASTRA's clip alone.
    fill_hot_pixels : bool
        A detector's hot or stuck pixels, single pixels of the median image
        more than 3 times its brightest structure wider than a pixel
        (:func:`~astro3s.preprocess.enhance.isolated_spikes`), are filled from
        their neighbours in the median, mean and activity images (default
        True; ``Preprocessed.details["hot_pixels"]`` counts them). The frames
        themselves, and so the traces, keep them.
    fill_ring_cores : bool
        Somata of a membrane-targeted indicator (Lck-GCaMP), bright rims
        around a dim core, get their core raised to the rim's level in the
        median image (:func:`~astro3s.preprocess.ring_cores.fill_ring_cores`;
        ``Preprocessed.details["ring_core_px"]`` counts the pixels raised), so
        that they look like the cytosolic somata the network knows (default
        True since 2026-12-07; an image without such rims is unchanged).
    ring_core_depth : float
        How far under its rim's lowest level, as a fraction of it, a core
        lies (``min_depth`` of :func:`~astro3s.preprocess.ring_cores.fill_ring_cores`;
        0.1 since 2026-12-07, fifteenth session; 0.2 before).
    ring_core_fill : {"rim", "saddle"}
        What a core is raised to (``fill`` of
        :func:`~astro3s.preprocess.ring_cores.fill_ring_cores`): its whole
        basin to its rim's median brightness (``"rim"``, since 2026-12-07,
        fifteenth session), or its deep pixels to the rim's lowest level
        (``"saddle"``, before).
    ring_core_contrast : float
        A core's rim is at least this many times as bright as the annulus
        beyond it (``min_rim_contrast`` of
        :func:`~astro3s.preprocess.ring_cores.fill_ring_cores`; 1.1 since
        2026-12-07, fifteenth session; 0: no test, as before).
    enhance_sigma : float
        Gaussian scale (px) of a smoothing of the median image before CLAHE
        (0: none, ASTRA's recipe). CLAHE on 65536 levels ranks each tile's
        pixels, which turns shot noise into full-contrast texture as bright as
        a thin process; a model trained with a smoothing needs the same at
        inference (it travels in the model's ``preprocess.yaml``). A model
        trained with 1.0 generalised far worse to the held-out family than
        ASTRA's unsmoothed input (``experiments/results/heldout_ablation.md``,
        2026-12-04 afternoon): kept as an option, off by default.
    activity_weight : float
        0 (default, ASTRA's): the network sees the median image. Above 0, the
        significant part of the local temporal-correlation image is added to
        it first, its 99th percentile ``activity_weight`` times the median
        image's, so that cells dim at rest but active show
        (:mod:`~astro3s.preprocess.correlation_image`); the morphology rules
        keep the plain median image. A model trained with it needs the same at
        inference (it travels in the model's ``preprocess.yaml``).
    activity_threshold : float
        Robust z-score of the correlation image below which it adds nothing (2).
    keep_correlation_image : bool
        Compute the local temporal-correlation image (``Preprocessed.correlation_image``) even with
        ``activity_weight`` 0, the network's image unchanged (False). ``InferenceOptions.correlation_view``
        sets it.
    activity_bin_s : float
        Seconds of frames averaged into one time bin of the correlation image (2).
    clahe_clip_limit : float
        CLAHE clip limit, OpenCV semantics ([0.5]).
    clahe_tiles : (int, int)
        CLAHE tile grid ([8, 8]).
    clahe_min_tile : int
        Smallest CLAHE tile side, px (32; 0: off). A FOV side narrower than
        ``clahe_tiles`` tiles of this size gets fewer tiles, so that small FOVs
        are equalised like ASTRA's 256-px ones (8 tiles of 32 px): a tile
        holding little more than a soma equalises noise into texture.
    clahe_bins : int
        Grey levels of the CLAHE histograms (65536, OpenCV on 16-bit images).

    Activity map
    ------------
    tile_size, tile_step : int
        Overlapping square tiles for the local thresholds ([96], [40] px).
    activity_percentile : float
        Per-tile, per-frame percentile used as the local threshold ([80]).
    percentile_stride : int
        Per-frame percentiles (tile thresholds, frame baselines) are taken on
        every ``percentile_stride``-th pixel in y and x (1 = all pixels). 2 keeps
        2304 of a tile's 9216 pixels: the estimated percentile level is within
        about 1 % of the requested one, and the computation is 4 times faster.

    Soma candidates
    ---------------
    soma_area_range : (float, float)
        Smallest and largest soma area of the data, px ([89, 345] on D1).
    threshold_start : float
        First activity threshold, fraction of ``T`` ([0.6]).
    threshold_step : float
        Threshold decrement, fraction of ``T`` ([25 frames] = 0.045 T at T=550).
    threshold_floor : float
        Lowest threshold tried, fraction of ``T`` (0.42: the published search
        stops lowering after about 105 frames per 750).
    expected_cells : int
        The search stops when this many components are found ([4]).
    start_area_fraction, min_area_fraction, area_step_fraction : float
        Minimum component area starts at ``start_area_fraction * A`` and is
        lowered by ``area_step_fraction * A`` down to ``min_area_fraction * A``
        at each threshold ([100, 80, 10 px] for A = 89).
    last_area_fraction : float
        At the lowest threshold the area keeps decreasing down to this
        (0.3 x 100 px = 30 px for A = 89).
    tiny_area_fraction : float
        Components smaller than this are removed at the end ([80 // 4 px]).
    extension_threshold : float or None
        Recall extension (not in ASTRA): components above this fraction of
        ``T`` that touch no candidate and have at least ``min_area_fraction * A``
        pixels are added (0.35; fitted by ``fit_parameters``; null = off).
    fallback_floor : float or None
        Fallback (not in ASTRA) for crowded FOVs whose activity map saturates:
        when the published search finds fewer than ``expected_cells``
        components, the threshold keeps going down in ``threshold_step``
        steps to this fraction of ``T``, and the first threshold that finds
        them is used (0.30, chosen on development movies of the training
        simulator; null = the published search; see
        :mod:`astro3s.preprocess.candidates`).
    median_blob_response : float or None
        Candidates from the median image (not in ASTRA): soma-scale blobs of
        the median image that lie more than a soma radius from every
        candidate and respond at least this fraction of the candidates'
        median response become candidates too, at most as many as the
        activity search found (0.5, chosen on development movies of the
        training simulator; null = off; see
        :func:`astro3s.preprocess.candidates.blob_candidates`).
    noisy_candidates : bool
        Fallback (not in ASTRA) for movies too noisy for the search's
        thresholds, which are fractions of ``T``: noise pulls every pixel's
        activity count towards the tile percentile's base rate, so clearly
        visible, active cells stay below the floor and nothing at all is
        found, and without a candidate the whole-FOV input is empty too.
        When the search (with its fallback and extension) finds no candidate,
        components of the activity map smoothed over half a soma radius that
        stand ``NOISY_CANDIDATE_Z`` robust SDs above its median become the
        candidates, and the median image is smoothed by ``NOISY_ENHANCE_SIGMA``
        px before CLAHE (default True; see
        :func:`astro3s.preprocess.candidates.significant_candidates`).
        ``details["candidate_search"]["significant"]`` records how many.

    Local activity filter and crops
    -------------------------------
    filter_box : int
        Side of the square around a candidate analysed by the filter ([86] px).
    filter_percentile : float
        Percentile of the crop's values over space and time ([90]).
    th1, th2 : float
        Fractions of frames a pixel must exceed the first / second-pass
        percentile to be kept ([0.25], [0.10]).
    crop_pad : int
        Zero padding around each filtered crop ([5] px).
    crop_size : int
        Side of the network's input; crops are padded to it ([96] px).

    Execution
    ---------
    chunk_frames : int
        Frames read and processed at once (256; lowered for large frames so
        that a chunk takes at most 1/16 of ``memory_budget_mb``).
    memory_budget_mb : float
        Memory the pipeline plans for (1536): the corrected movie is kept in
        memory when it takes at most a quarter of it (else written once to a
        temporary file and read back from there),
        the temporal-median frames and the candidates' crop stacks take at most
        a quarter each (else even subsamples of frames), the reference sample's
        spectra 1/8 (else fewer sampled frames, see ``reference_frames``), a
        float32 chunk 1/16 (a chunk lives in about four such copies at once).
        Peak RSS is about 1.1 GB on a 2200 x 1024 x 1024 movie (4.6 GB file).
    device : str
        ``"auto"`` (CUDA when available, else CPU), ``"cpu"`` or ``"cuda[:i]"``.
    """

    # motion correction
    motion_correction: bool = True
    line_correction: bool = True
    min_line_offset: float = MIN_LINE_OFFSET
    register_noisy_frames: bool = True
    reference_frames: int = 200
    reference_stable_fraction: float = 0.5
    upsample_factor: int = 1
    bandpass_sigmas: tuple[float, float] = (1.0, 8.0)
    max_shift_fraction: float = 0.25
    # spatial enhancement
    baseline_percentile: float = 10.0
    median_max_frames: int = 1000
    active_percentile: float | None = None
    morphology_image: str = "auto"
    lift_dim_background: bool = True
    fill_hot_pixels: bool = True
    fill_ring_cores: bool = True
    ring_core_depth: float = MIN_CORE_DEPTH
    ring_core_fill: str = CORE_FILL
    ring_core_contrast: float = MIN_RIM_CONTRAST
    enhance_sigma: float = 0.0
    activity_weight: float = 0.0
    activity_threshold: float = 2.0
    keep_correlation_image: bool = False
    activity_bin_s: float = 2.0
    clahe_clip_limit: float = 0.5
    clahe_tiles: tuple[int, int] = (8, 8)
    clahe_min_tile: int = 32
    clahe_bins: int = 65536
    # activity map
    tile_size: int = 96
    tile_step: int = 40
    activity_percentile: float = 80.0
    percentile_stride: int = 2
    # soma candidates
    soma_area_range: tuple[float, float] = (89.0, 345.0)
    threshold_start: float = 0.6
    threshold_step: float = 0.045
    threshold_floor: float = 0.42
    expected_cells: int = 4
    start_area_fraction: float = 100 / 89
    min_area_fraction: float = 80 / 89
    area_step_fraction: float = 10 / 89
    last_area_fraction: float = 30 / 89
    tiny_area_fraction: float = 20 / 89
    extension_threshold: float | None = 0.35
    fallback_floor: float | None = 0.30
    median_blob_response: float | None = 0.5
    noisy_candidates: bool = True
    # local activity filter and crops
    filter_box: int = 86
    filter_percentile: float = 90.0
    th1: float = 0.25
    th2: float = 0.10
    crop_pad: int = 5
    crop_size: int = 96
    # execution
    chunk_frames: int = 256
    memory_budget_mb: float = 1536.0
    device: str = "auto"
    # free text saying where the values come from (e.g. "fit_parameters on 24 FOVs")
    note: str = field(default="", compare=False)

    def __post_init__(self) -> None:
        # YAML/Hydra hand over lists and ints; store tuples and floats so that
        # parameter sets compare and hash reliably
        for name in ("bandpass_sigmas", "soma_area_range"):
            _set(self, name, _pair(name, getattr(self, name), float))
        _set(self, "clahe_tiles", _pair("clahe_tiles", self.clahe_tiles, int))
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if f.type in ("int", int) and not isinstance(value, bool):
                if isinstance(value, float) and value.is_integer():
                    _set(self, f.name, int(value))
                elif not isinstance(value, int):
                    raise ConfigError(f"preprocess.{f.name} must be an integer, got {value!r}")
            elif f.type in ("float", float):
                if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
                    raise ConfigError(f"preprocess.{f.name} must be a finite number, got {value!r}")
                _set(self, f.name, float(value))
            elif f.type == "float | None" and value is not None:
                if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
                    raise ConfigError(f"preprocess.{f.name} must be a finite number or null, got {value!r}")
                _set(self, f.name, float(value))
            elif f.type in ("bool", bool) and not isinstance(value, bool):
                raise ConfigError(f"preprocess.{f.name} must be true or false, got {value!r}")
        self._check()

    def _check(self) -> None:
        def need(ok: bool, what: str) -> None:
            if not ok:
                raise ConfigError(f"preprocess: {what}")

        lo, hi = self.soma_area_range
        need(0 < lo <= hi, f"soma_area_range must be 0 < low <= high, got {self.soma_area_range}")
        for name in ("baseline_percentile", "activity_percentile", "filter_percentile"):
            need(0 <= getattr(self, name) <= 100, f"{name} must be within [0, 100]")
        for name in ("th1", "th2", "threshold_start", "threshold_floor", "threshold_step",
                     "reference_stable_fraction", "max_shift_fraction"):
            need(0 <= getattr(self, name) <= 1, f"{name} must be a fraction within [0, 1]")
        if self.extension_threshold is not None:
            need(0 <= self.extension_threshold <= 1, "extension_threshold must be a fraction within [0, 1] or null")
        need(self.threshold_floor <= self.threshold_start, "threshold_floor must be <= threshold_start")
        if self.fallback_floor is not None:
            need(0 <= self.fallback_floor <= self.threshold_floor,
                 "fallback_floor must be a fraction within [0, threshold_floor] or null")
        if self.median_blob_response is not None:
            need(self.median_blob_response >= 0, "median_blob_response must be >= 0 or null")
        if self.active_percentile is not None:
            need(50 < self.active_percentile <= 100, "active_percentile must be within (50, 100] or null")
        need(self.threshold_step > 0, "threshold_step must be > 0")
        need(self.min_line_offset >= 0, "min_line_offset must be >= 0")
        need(self.area_step_fraction > 0, "area_step_fraction must be > 0")
        need(self.min_area_fraction <= self.start_area_fraction,
             "min_area_fraction must be <= start_area_fraction")
        for name in ("reference_frames", "upsample_factor", "tile_size", "tile_step", "percentile_stride",
                     "expected_cells", "filter_box", "crop_size", "chunk_frames", "median_max_frames",
                     "clahe_bins"):
            need(getattr(self, name) >= 1, f"{name} must be >= 1")
        need(self.crop_pad >= 0, "crop_pad must be >= 0")
        need(self.crop_size >= self.filter_box + 2 * self.crop_pad,
             f"crop_size ({self.crop_size}) must be >= filter_box + 2 * crop_pad "
             f"({self.filter_box + 2 * self.crop_pad})")
        need(min(self.clahe_tiles) >= 1, "clahe_tiles must be >= 1")
        need(self.clahe_min_tile >= 0, "clahe_min_tile must be >= 0 (0: tiles as clahe_tiles says)")
        need(0 < self.bandpass_sigmas[0] < self.bandpass_sigmas[1],
             "bandpass_sigmas must be 0 < low-pass < high-pass")
        need(self.clahe_clip_limit >= 0, "clahe_clip_limit must be >= 0")
        need(self.morphology_image in MORPHOLOGY_IMAGES,
             f"morphology_image must be one of {', '.join(MORPHOLOGY_IMAGES)}, got {self.morphology_image!r}")
        need(0 < self.ring_core_depth < 1, f"ring_core_depth must be in (0, 1), got {self.ring_core_depth!r}")
        need(self.ring_core_contrast >= 0, "ring_core_contrast must be >= 0 (0: no test)")
        need(self.ring_core_fill in RING_FILLS,
             f"ring_core_fill must be one of {', '.join(RING_FILLS)}, got {self.ring_core_fill!r}")
        need(self.enhance_sigma >= 0, "enhance_sigma must be >= 0 (0: no smoothing)")
        need(self.activity_weight >= 0, "activity_weight must be >= 0 (0: the median image alone)")
        need(self.activity_bin_s > 0, "activity_bin_s must be > 0 (seconds)")
        need(self.memory_budget_mb > 0, "memory_budget_mb must be > 0")
        device = str(self.device)
        need(device in ("auto", "cpu") or device.startswith("cuda"),
             f"device must be 'auto', 'cpu' or 'cuda[:i]', got {device!r}")

    # -- derived values ---------------------------------------------------------------------

    @property
    def min_soma_area(self) -> float:
        """Lower end of the soma area range, px (``A``)."""
        return self.soma_area_range[0]

    def to_dict(self) -> dict[str, Any]:
        """Plain-Python (YAML/JSON-ready) copy of the fields."""
        out = dataclasses.asdict(self)
        for key, value in out.items():
            if isinstance(value, tuple):
                out[key] = list(value)
        return out

    def replace(self, **changes: Any) -> PreprocessParams:
        """Return a copy with ``changes`` applied (validated)."""
        return dataclasses.replace(self, **changes)


def _set(obj: Any, name: str, value: Any) -> None:
    object.__setattr__(obj, name, value)


def _pair(name: str, value: Any, kind: type) -> tuple:
    try:
        a, b = value
        out = (kind(a), kind(b))
    except (TypeError, ValueError):
        raise ConfigError(f"preprocess.{name} must be a pair of numbers, got {value!r}") from None
    if kind is int and (out[0] != a or out[1] != b):
        raise ConfigError(f"preprocess.{name} must be a pair of integers, got {value!r}")
    return out


def params_from_dict(values: Any) -> PreprocessParams:
    """Build :class:`PreprocessParams` from a mapping of fields (the CLI makes config nodes plain first).

    Keys starting with ``_`` (such as Hydra's ``_target_``) are ignored; unknown
    keys raise :class:`~astro3s.errors.ConfigError` naming the valid ones.
    """
    if not isinstance(values, Mapping):
        raise ConfigError(f"preprocess parameters must be a mapping, got {type(values).__name__}")
    names = {f.name for f in dataclasses.fields(PreprocessParams)}
    values = {k: v for k, v in values.items() if not str(k).startswith("_")}
    unknown = sorted(set(values) - names)
    if unknown:
        raise ConfigError(f"unknown preprocess parameter(s) {', '.join(unknown)}"
                          f"{did_you_mean(unknown[0], names, 'preprocess.')}; valid ones: {', '.join(sorted(names))}")
    return PreprocessParams(**values)


def as_preprocess_params(preprocess: Any = None) -> PreprocessParams:
    """:class:`PreprocessParams` from whatever a config or a caller gives.

    Parameters
    ----------
    preprocess : PreprocessParams, mapping, str, Path or None
        None: ASTRA's published parameters (the defaults); a mapping (see
        :func:`params_from_dict`); a path of a YAML file
        written by :func:`save_params`.

    Raises
    ------
    ConfigError
        Unknown keys or values out of range.
    CheckpointError
        A parameter file that is missing or not YAML.
    """
    if preprocess is None:
        return PreprocessParams()
    if isinstance(preprocess, PreprocessParams):
        return preprocess
    if isinstance(preprocess, str | Path):
        return load_params(preprocess)
    return params_from_dict(preprocess)


def save_params(params: PreprocessParams, path: str | Path) -> Path:
    """Write ``params`` as a YAML file (atomically) and return its path.

    The file is also a valid Hydra config of the ``preprocess`` group (it names
    its ``_target_``), so it can be copied into ``conf/preprocess/``.
    """
    import yaml

    from astro3s.io.atomic import write_text

    body = {"_target_": "astro3s.preprocess.PreprocessParams", **params.to_dict()}
    header = ("# astro3s pre-processing parameters (astro3s.preprocess.PreprocessParams).\n"
              "# Load with astro3s.preprocess.load_params(path) or pass params=<this file>.\n")
    return write_text(path, header + yaml.safe_dump(body, sort_keys=False))


def load_params(path: str | Path) -> PreprocessParams:
    """Read a YAML file written by :func:`save_params` (or a ``conf/preprocess`` file).

    Raises
    ------
    CheckpointError
        When the file is missing or not valid YAML.
    ConfigError
        When a key is unknown or a value is out of range.
    """
    import yaml

    path = Path(path)
    try:
        values = yaml.safe_load(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise CheckpointError(f"{path}: parameter file not found.") from None
    except (OSError, yaml.YAMLError) as err:
        raise CheckpointError(f"{path}: not a readable YAML parameter file ({err}).") from None
    if values is None:
        values = {}
    try:
        return params_from_dict(values)
    except ConfigError as err:
        raise ConfigError(f"{path}: {err}") from None
