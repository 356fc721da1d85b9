"""Simulation parameters: ranges per preset, concrete values per movie.

A *preset* (:class:`PresetRanges`, one YAML file in ``conf/simulate/``) holds a
``[low, high]`` range for every physical parameter. :func:`sample_params`
draws one concrete :class:`SimulationParams` per movie from those ranges, so
that a set of movies spans a wide range of conditions instead of one tuned
value. Rates and brightness-like quantities are drawn log-uniformly (they span
orders of magnitude), everything else uniformly.
"""

from __future__ import annotations

import dataclasses
import functools
import math
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

import numpy as np

from astro3s.errors import ConfigError

__all__ = [
    "PresetRanges",
    "SimulationParams",
    "available_presets",
    "load_preset",
    "ranges_from_config",
    "sample_params",
    "widen_ranges",
]

Range = tuple[float, float]


def _r(low: float, high: float, *, log: bool = False, unit: str = "", doc: str = "") -> Any:
    # every range field carries how it is sampled and a one-line meaning (used in
    # error messages and the preset table)
    return field(default=(float(low), float(high)), metadata={"log": log, "unit": unit, "doc": doc})


@dataclass(frozen=True)
class PresetRanges:
    """Ranges ``(low, high)`` of every simulation parameter, for one preset.

    Each field is sampled per movie by :func:`sample_params`; fields with the
    same name in :class:`SimulationParams` receive the sample. ``soma_area``
    is special: it bounds the per-cell soma areas, and
    ``soma_area_median`` is the per-movie median drawn inside it.
    A range with ``low == high`` fixes the value.
    """

    preset: str = "base"
    # --- field of view and acquisition
    height: Range = _r(256, 256, unit="px", doc="FOV height")
    width: Range = _r(256, 256, unit="px", doc="FOV width")
    n_frames: Range = _r(550, 550, unit="frames", doc="movie length")
    fs: Range = _r(2, 8, log=True, unit="Hz", doc="frame rate")
    # --- cells and morphology
    n_cells: Range = _r(3, 8, unit="cells", doc="astrocytes placed in the FOV")
    soma_area: Range = _r(89, 345, unit="px", doc="bounds of per-cell soma areas")
    soma_area_median: Range = _r(150, 280, log=True, unit="px", doc="per-movie median soma area")
    soma_area_spread: Range = _r(0.15, 0.35, doc="log-sd of soma areas within a movie")
    soma_elongation: Range = _r(1.0, 1.6, doc="soma axis ratio")
    soma_irregularity: Range = _r(0.03, 0.15, doc="low-frequency radial perturbation of the soma")
    n_branches: Range = _r(4, 7, doc="primary processes per cell")
    branch_width: Range = _r(0.11, 0.24, doc="primary-branch radius / soma radius")
    branch_tortuosity: Range = _r(0.15, 0.35, unit="rad/sqrt(px)", doc="branch curvature")
    branching_rate: Range = _r(0.3, 0.7, unit="1/10px", doc="side branches per 10 px of branch")
    territory_radius: Range = _r(3.5, 5.5, doc="territory radius / soma radius")
    territory_irregularity: Range = _r(0.08, 0.25, doc="territory shape perturbation")
    spongy_density: Range = _r(0.05, 0.2, log=True, unit="1/px^2", doc="fine-process blobs per territory pixel")
    cell_spacing: Range = _r(0.6, 1.0, doc="min centre distance / sum of territory radii")
    process_brightness: Range = _r(0.3, 0.7, doc="process baseline / soma baseline")
    territory_brightness: Range = _r(0.15, 0.5, doc="territory baseline / soma baseline")
    territory_participation: Range = _r(0.5, 1.0, doc="territory dF/F of whole-cell events / soma dF/F")
    # --- brightness, optics and noise
    soma_photons: Range = _r(2, 30, log=True, unit="photons/px/frame", doc="soma baseline")
    background_photons: Range = _r(0.5, 5, log=True, unit="photons/px/frame", doc="tissue baseline")
    background_texture: Range = _r(0.1, 0.4, doc="relative spatial modulation of the tissue")
    brightness_spread: Range = _r(0.2, 0.5, doc="log-sd of cell brightness")
    faint_fraction: Range = _r(0.0, 0.3, doc="fraction of cells made faint")
    faint_factor: Range = _r(0.15, 0.45, doc="brightness factor of faint cells")
    gain: Range = _r(1, 20, log=True, unit="ADU/photon", doc="detector gain")
    offset: Range = _r(0, 400, unit="ADU", doc="detector offset")
    read_noise: Range = _r(0, 10, unit="ADU", doc="Gaussian read noise sd")
    psf_sigma: Range = _r(0.5, 1.2, unit="px", doc="Gaussian PSF sd")
    # --- calcium signals (rates per cell, amplitudes in dF/F)
    silent_fraction: Range = _r(0.0, 0.15, doc="fraction of cells without any event")
    whole_rate: Range = _r(0.5, 6.0, log=True, unit="1/min", doc="whole-cell events per cell")
    whole_amplitude: Range = _r(0.6, 3.0, log=True, unit="dF/F", doc="whole-cell event amplitude")
    soma_rate: Range = _r(0.2, 1.5, log=True, unit="1/min", doc="soma-only events per cell")
    soma_amplitude: Range = _r(0.3, 1.5, log=True, unit="dF/F", doc="soma-only event amplitude")
    micro_sites: Range = _r(5, 25, doc="microdomain sites per cell")
    micro_rate: Range = _r(0.5, 4.0, log=True, unit="1/min", doc="events per microdomain site")
    micro_amplitude: Range = _r(0.5, 3.0, log=True, unit="dF/F", doc="microdomain event amplitude")
    micro_size: Range = _r(0.8, 3.5, unit="px", doc="microdomain blob sd")
    wave_rate: Range = _r(0.0, 0.4, unit="1/min", doc="propagating waves per cell")
    wave_speed: Range = _r(3, 30, log=True, unit="px/s", doc="wave propagation speed")
    wave_amplitude: Range = _r(0.5, 2.0, unit="dF/F", doc="wave amplitude")
    rise_slow: Range = _r(0.3, 1.0, unit="s", doc="rise time constant of whole-cell/soma/wave events")
    decay_slow: Range = _r(2.0, 8.0, unit="s", doc="decay time constant of whole-cell/soma/wave events")
    rise_fast: Range = _r(0.1, 0.4, unit="s", doc="rise time constant of microdomain events")
    decay_fast: Range = _r(0.5, 2.0, unit="s", doc="decay time constant of microdomain events")
    # --- distractors
    neuropil_amplitude: Range = _r(0.0, 0.15, unit="dF/F", doc="active neuropil fluctuation")
    neuropil_components: Range = _r(3, 8, doc="spatial modes of the neuropil")
    neuropil_scale: Range = _r(8, 40, unit="px", doc="spatial smoothness of the neuropil")
    neuropil_timescale: Range = _r(1, 10, log=True, unit="s", doc="temporal correlation of the neuropil")
    neuron_density: Range = _r(0, 2, unit="1/(100px)^2", doc="neuron-like distractors per 10^4 px")
    neuron_rate: Range = _r(0.02, 0.3, log=True, unit="Hz", doc="neuron transient rate")
    neuron_amplitude: Range = _r(0.5, 3.0, unit="dF/F", doc="neuron transient amplitude")
    neuron_decay: Range = _r(0.15, 0.7, unit="s", doc="neuron transient decay")
    neuron_brightness: Range = _r(0.2, 0.8, doc="neuron baseline / soma baseline")
    defocus_density: Range = _r(0, 0.4, unit="1/(100px)^2",
                                doc="out-of-focus astrocytes (blurred, dimmer, active; not ground truth) per 10^4 px")
    blob_density: Range = _r(0, 0.4, unit="1/(100px)^2",
                             doc="soft round fluorescent blobs with slow fluctuations (not ground truth) per 10^4 px")
    n_vessels: Range = _r(0, 2, doc="blood-vessel shadows")
    vessel_width: Range = _r(4, 16, unit="px", doc="vessel diameter")
    vessel_depth: Range = _r(0.3, 0.9, doc="fraction of light lost at vessel centre")
    bleach_amount: Range = _r(0.0, 0.4, doc="fraction of baseline lost asymptotically")
    bleach_tau: Range = _r(60, 1200, log=True, unit="s", doc="photobleaching time constant")
    # --- motion (rigid, sub-pixel)
    motion_sd: Range = _r(0.0, 1.0, unit="px", doc="sd of the slow random-walk motion")
    motion_timescale: Range = _r(0.5, 8, log=True, unit="s", doc="correlation time of the random walk")
    jump_rate: Range = _r(0.0, 0.8, unit="1/min", doc="sudden displacements")
    jump_amplitude: Range = _r(1.0, 4.0, unit="px", doc="jump size")
    jump_recovery: Range = _r(2, 30, log=True, unit="s", doc="time to return after a jump")
    # --- ground-truth definition (a fixed value, not randomised, never widened)
    domain_min_correlation: Range = _r(0.6, 0.6, doc="least expected correlation of a domain pixel "
                                                   "with its cell's soma signal")
    # --- nuisance structure added 2026-12-04 (after the definition above so that the draws of every
    # earlier field, and the movies of presets that keep these fixed at their defaults, are unchanged)
    texture_fine_scale: Range = _r(3, 3, log=True, unit="px", doc="correlation length of the fine tissue texture")
    texture_coarse_scale: Range = _r(20, 20, log=True, unit="px",
                                     doc="correlation length of the coarse tissue texture")
    texture_fine_weight: Range = _r(0.7, 0.7, doc="weight of the fine texture in the tissue modulation "
                                                  "(the coarse one weighs 0.5)")
    noise_correlation: Range = _r(0, 0, doc="fraction of the detector noise variance that is spatially "
                                            "correlated (resampled, line-averaged or denoised recordings)")
    noise_correlation_length: Range = _r(1, 1, log=True, unit="px", doc="sd of the correlated noise's kernel")
    psf_anisotropy: Range = _r(1, 1, log=True, doc="PSF sd along y / sd along x (area kept)")
    psf_halo: Range = _r(0, 0, doc="fraction of the light scattered into a halo 3x wider than the PSF")
    # --- added 2026-12-07 (last, so that every earlier draw, and the movies of presets that keep it at 0,
    # are unchanged)
    membrane_label: Range = _r(0, 0, doc="how much of the indicator sits on the plasma membrane "
                                         "(Lck-GCaMP) rather than in the cytosol: 0 (or less) cytosolic, "
                                         "1 membrane-bound (a dim soma inside a bright rim, bright fine "
                                         "territory)")
    # --- added 2026-12-08 (last, so that every earlier draw, and the movies of presets that keep them at 0,
    # are unchanged): the ground-truth convention of cells without events, and rarely active cells
    sparse_fraction: Range = _r(0, 0, doc="fraction of the active cells that are rarely active: one or two "
                                          "small whole-cell events in the movie, no soma-only event, no wave, "
                                          "a third of the microdomain sites")
    silent_labelled: Range = _r(0, 0, doc="ground-truth convention, not a scene property: 1 labels silent "
                                          "cells (no event in the movie) as cells, as annotators draw an "
                                          "astrocyte from its shape; 0 leaves them out (nothing in the "
                                          "activity reveals them)")


# Fields of SimulationParams that are whole numbers.
_INT_FIELDS = frozenset({"height", "width", "n_frames", "n_cells", "n_branches", "micro_sites",
                         "neuropil_components", "n_vessels"})
# Fields that are fractions: their high end must not exceed 1.
_FRACTION_FIELDS = frozenset({"faint_fraction", "silent_fraction", "vessel_depth", "bleach_amount",
                              "territory_participation", "faint_factor", "domain_min_correlation",
                              "noise_correlation", "psf_halo", "sparse_fraction",
                              "silent_labelled"})
# Fields that define the ground truth rather than the scene: never widened.
_DEFINITION_FIELDS = frozenset({"domain_min_correlation", "silent_labelled"})
# Fields that must be strictly positive at their low end.
_POSITIVE_FIELDS = frozenset({"height", "width", "n_frames", "fs", "soma_area", "soma_area_median",
                              "gain", "psf_sigma", "rise_slow", "decay_slow", "rise_fast",
                              "decay_fast", "soma_photons", "neuropil_scale", "neuropil_timescale",
                              "motion_timescale", "jump_recovery", "bleach_tau", "wave_speed",
                              "neuron_decay", "micro_size", "territory_radius", "vessel_width",
                              "soma_elongation", "texture_fine_scale",
                              "texture_coarse_scale", "noise_correlation_length", "psf_anisotropy"})


def _range_fields() -> list[dataclasses.Field]:
    return [f for f in fields(PresetRanges) if f.name != "preset"]


@dataclass(frozen=True)
class SimulationParams:
    """Concrete parameters of ONE simulated movie (see :class:`PresetRanges` for meanings).

    Attributes have the names of the preset fields; ``soma_area_min`` and
    ``soma_area_max`` carry the preset's per-cell soma-area bounds.
    """

    height: int
    width: int
    n_frames: int
    fs: float
    n_cells: int
    soma_area_min: float
    soma_area_max: float
    soma_area_median: float
    soma_area_spread: float
    soma_elongation: float
    soma_irregularity: float
    n_branches: int
    branch_width: float
    branch_tortuosity: float
    branching_rate: float
    territory_radius: float
    territory_irregularity: float
    spongy_density: float
    cell_spacing: float
    process_brightness: float
    territory_brightness: float
    territory_participation: float
    soma_photons: float
    background_photons: float
    background_texture: float
    brightness_spread: float
    faint_fraction: float
    faint_factor: float
    gain: float
    offset: float
    read_noise: float
    psf_sigma: float
    silent_fraction: float
    whole_rate: float
    whole_amplitude: float
    soma_rate: float
    soma_amplitude: float
    micro_sites: int
    micro_rate: float
    micro_amplitude: float
    micro_size: float
    wave_rate: float
    wave_speed: float
    wave_amplitude: float
    rise_slow: float
    decay_slow: float
    rise_fast: float
    decay_fast: float
    neuropil_amplitude: float
    neuropil_components: int
    neuropil_scale: float
    neuropil_timescale: float
    neuron_density: float
    neuron_rate: float
    neuron_amplitude: float
    neuron_decay: float
    neuron_brightness: float
    defocus_density: float
    blob_density: float
    n_vessels: int
    vessel_width: float
    vessel_depth: float
    bleach_amount: float
    bleach_tau: float
    motion_sd: float
    motion_timescale: float
    jump_rate: float
    jump_amplitude: float
    jump_recovery: float
    domain_min_correlation: float = 0.6
    texture_fine_scale: float = 3.0
    texture_coarse_scale: float = 20.0
    texture_fine_weight: float = 0.7
    noise_correlation: float = 0.0
    noise_correlation_length: float = 1.0
    psf_anisotropy: float = 1.0
    psf_halo: float = 0.0
    membrane_label: float = 0.0
    sparse_fraction: float = 0.0
    silent_labelled: float = 0.0

    @property
    def shape(self) -> tuple[int, int, int]:
        """Movie shape ``(T, H, W)``."""
        return (self.n_frames, self.height, self.width)

    @property
    def duration_s(self) -> float:
        """Movie duration in seconds."""
        return self.n_frames / self.fs

    def replace(self, **changes: Any) -> SimulationParams:
        """Return a copy with some fields changed (e.g. ``motion_sd=0`` for a still movie)."""
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict[str, Any]:
        """Plain ``{name: value}`` dict (JSON-ready)."""
        return dataclasses.asdict(self)


def sample_params(ranges: PresetRanges, rng: np.random.Generator | int) -> SimulationParams:
    """Draw the parameters of one movie from a preset's ranges.

    Parameters
    ----------
    ranges : PresetRanges
        Validated ranges (see :func:`ranges_from_config`).
    rng : numpy.random.Generator or int
        Random generator, or a seed.

    Returns
    -------
    SimulationParams
        One value per field; integers are drawn uniformly over ``[low, high]``
        inclusive, log-marked fields log-uniformly when ``low > 0``.
    """
    rng = np.random.default_rng(rng)
    values: dict[str, Any] = {}
    for f in _range_fields():
        low, high = getattr(ranges, f.name)
        if f.name == "soma_area":
            values["soma_area_min"], values["soma_area_max"] = float(low), float(high)
            continue
        if f.name in _INT_FIELDS:
            values[f.name] = int(rng.integers(round(low), round(high) + 1))
        elif f.metadata["log"] and 0 < low < high:  # a fixed value is kept exactly (exp(log(x)) may not be x)
            values[f.name] = float(math.exp(rng.uniform(math.log(low), math.log(high))))
        else:
            values[f.name] = float(rng.uniform(low, high))
    # the median must lie inside the per-cell bounds whatever the overrides say
    values["soma_area_median"] = float(np.clip(values["soma_area_median"], values["soma_area_min"],
                                               values["soma_area_max"]))
    return SimulationParams(**values)


def widen_ranges(ranges: PresetRanges, factor: float) -> PresetRanges:
    """Widen every range about its centre, for domain randomisation.

    Log-sampled ranges are widened multiplicatively (``low / factor``,
    ``high * factor``); the others additively by ``(factor - 1) * width / 2``
    on each side, and by ``(factor - 1) * centre / 2`` when the range is a single
    value. FOV size, movie length and fraction bounds are kept valid (sizes are
    not widened; fractions are clipped to ``[0, 1]``; nothing goes below 0).
    """
    if factor < 1:
        raise ConfigError(f"widen must be >= 1 (got {factor}).")
    if factor == 1:
        return ranges
    changes: dict[str, Range] = {}
    for f in _range_fields():
        if f.name in {"height", "width", "n_frames"} | _DEFINITION_FIELDS:
            continue
        low, high = getattr(ranges, f.name)
        if f.metadata["log"] and low > 0:
            low, high = low / factor, high * factor
        else:
            half = (factor - 1) * max(high - low, 0.5 * abs(high + low) / 2) / 2
            low, high = low - half, high + half
        low = max(low, 0.0)
        if f.name in _POSITIVE_FIELDS and low <= 0:
            low = getattr(ranges, f.name)[0] / factor
        if f.name in _FRACTION_FIELDS:
            high = min(high, 1.0)
        if f.name == "soma_elongation":
            low = max(low, 1.0)
        if f.name in _INT_FIELDS:
            low, high = float(math.floor(low)), float(math.ceil(high))
        changes[f.name] = (low, high)
    if "fs" in changes:  # frame rates beyond 1-10 Hz are not what the software is meant for
        changes["fs"] = (max(changes["fs"][0], 0.5), min(changes["fs"][1], 30.0))
    return dataclasses.replace(ranges, **changes)


def ranges_from_config(cfg: Mapping[str, Any]) -> PresetRanges:
    """Build and validate :class:`PresetRanges` from a mapping (a Hydra ``simulate`` node).

    Each value is ``[low, high]`` or a single number (a fixed value). Keys
    ``defaults`` and ``_target_`` are ignored.

    Raises
    ------
    ConfigError
        Unknown key, non-numeric value, ``low > high``, negative or zero where a
        positive value is needed, or a fraction above 1.
    """
    known = {f.name: f for f in fields(PresetRanges)}
    kwargs: dict[str, Any] = {}
    for key, value in dict(cfg).items():
        if key in {"defaults", "_target_"}:
            continue
        if key not in known:
            from astro3s.errors import did_you_mean

            raise ConfigError(f"simulate.{key} is not a simulation parameter{did_you_mean(key, known, 'simulate.')}; "
                              f"known: {', '.join(sorted(known))}.")
        if key == "preset":
            kwargs[key] = str(value)
            continue
        kwargs[key] = _as_range(key, value)
    ranges = PresetRanges(**kwargs)
    validate_ranges(ranges)
    return ranges


def _as_range(key: str, value: Any) -> Range:
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return (float(value), float(value))
    if isinstance(value, (str, bytes, bool)):
        raise ConfigError(f"simulate.{key} must be a number or [low, high], got {value!r}.")
    try:
        items = list(value)
    except TypeError:
        raise ConfigError(f"simulate.{key} must be a number or [low, high], got {value!r}.") from None
    if len(items) != 2:
        raise ConfigError(f"simulate.{key} must be [low, high], got {items!r}.")
    try:
        low, high = float(items[0]), float(items[1])
    except (TypeError, ValueError):
        raise ConfigError(f"simulate.{key} must hold numbers, got {items!r}.") from None
    return (low, high)


def validate_ranges(ranges: PresetRanges) -> None:
    """Raise :class:`ConfigError` when a range is inverted, negative or out of bounds."""
    for f in _range_fields():
        low, high = getattr(ranges, f.name)
        unit = f" {f.metadata['unit']}" if f.metadata["unit"] else ""
        where = f"simulate.{f.name} ({f.metadata['doc']})"
        if not (math.isfinite(low) and math.isfinite(high)):
            raise ConfigError(f"{where} must be finite, got [{low}, {high}].")
        if low > high:
            raise ConfigError(f"{where}: min {low}{unit} is larger than max {high}{unit}.")
        if low < 0:
            raise ConfigError(f"{where} must not be negative, got [{low}, {high}].")
        if f.name in _POSITIVE_FIELDS and low <= 0:
            raise ConfigError(f"{where} must be positive, got [{low}, {high}].")
        if f.name in _FRACTION_FIELDS and high > 1:
            raise ConfigError(f"{where} is a fraction and must be <= 1, got [{low}, {high}].")
    if min(ranges.height[0], ranges.width[0]) < 16:
        raise ConfigError(f"the FOV must be at least 16x16 px, got height {ranges.height}, "
                          f"width {ranges.width}.")
    if ranges.n_frames[0] < 2:
        raise ConfigError(f"simulate.n_frames must be at least 2, got {ranges.n_frames}.")
    if ranges.soma_elongation[0] < 1:
        raise ConfigError(f"simulate.soma_elongation is an axis ratio >= 1, got {ranges.soma_elongation}.")
    if ranges.soma_area[0] < 4:
        raise ConfigError(f"simulate.soma_area must be at least 4 px, got {ranges.soma_area}.")


def _preset_dir() -> Path:
    from astro3s.cli._config import CONFIG_DIR

    return Path(CONFIG_DIR) / "simulate"


def available_presets() -> list[str]:
    """Names of the presets in ``conf/simulate/``."""
    return sorted(p.stem for p in _preset_dir().glob("*.yaml"))


@functools.cache
def _preset_values(name: str) -> tuple[tuple[str, Any], ...]:
    # composed as astro3s-simulate composes simulate=NAME (defaults lists, base ranges), once per preset
    from astro3s.cli._config import compose_plain

    values = compose_plain("simulate", "simulate", [f"simulate={name}"])
    return tuple((key, tuple(value) if isinstance(value, list) else value) for key, value in values.items())


def load_preset(name: str, **overrides: Any) -> PresetRanges:
    """Load a preset by name from ``conf/simulate/<name>.yaml``, composed as ``astro3s-simulate simulate=<name>``
    composes it (its Hydra defaults list honoured); no running Hydra app is needed.

    Parameters
    ----------
    name : str
        Preset name, e.g. ``"d1_like"``.
    **overrides
        Field values replacing the preset's (number or ``(low, high)``).

    Raises
    ------
    ConfigError
        Unknown preset or bad values.
    """
    if name not in available_presets():
        raise ConfigError(f"unknown simulation preset {name!r}; choose one of "
                          f"{', '.join(available_presets())}.")
    values = dict(_preset_values(name))
    values.update(overrides)
    return ranges_from_config(values)
