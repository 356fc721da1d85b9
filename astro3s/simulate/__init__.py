"""Synthetic two-photon astrocyte movies with ground truth.

Every physical parameter is drawn per movie from a preset's ranges
(``conf/simulate/*.yaml``), so that a set of movies spans many conditions:
noise, brightness, cell size and density, event kinds and rates, kinetics,
motion, distractors, bleaching and frame rate.

Typical use::

    from astro3s.simulate import simulate_preset, write_simulation
    sim = simulate_preset("d1_like", seed=0)
    write_simulation(sim, "out/")

Main pieces: :class:`PresetRanges` / :func:`load_preset` (ranges),
:func:`sample_params` -> :class:`SimulationParams` (one movie),
:func:`simulate` -> :class:`SimulatedMovie`, :func:`write_simulation` (files),
:func:`layout_from_roiset` (stand-ins for real annotated FOVs).
"""

from astro3s.simulate.api import SimulatedMovie, simulate, simulate_preset
from astro3s.simulate.morphology import CellMorphology, Layout, layout_from_roiset, make_astrocyte
from astro3s.simulate.output import plot_overview, write_simulation
from astro3s.simulate.params import (
    PresetRanges,
    SimulationParams,
    available_presets,
    load_preset,
    ranges_from_config,
    sample_params,
    widen_ranges,
)
from astro3s.simulate.render import GroundTruth, Scene, build_scene, ground_truth, iter_chunks, render_frames

__all__ = [
    "CellMorphology",
    "GroundTruth",
    "Layout",
    "PresetRanges",
    "Scene",
    "SimulatedMovie",
    "SimulationParams",
    "available_presets",
    "build_scene",
    "ground_truth",
    "iter_chunks",
    "layout_from_roiset",
    "load_preset",
    "make_astrocyte",
    "plot_overview",
    "write_simulation",
    "ranges_from_config",
    "render_frames",
    "sample_params",
    "simulate",
    "simulate_preset",
    "widen_ranges",
]
