"""One-call simulation: parameters (or a preset) in, movie plus ground truth out."""

from __future__ import annotations

import dataclasses
import time
import zlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from astro3s.errors import ConfigError
from astro3s.simulate.morphology import Layout, layout_from_roiset
from astro3s.simulate.params import PresetRanges, SimulationParams, load_preset, sample_params
from astro3s.simulate.render import GroundTruth, Scene, build_scene, ground_truth, iter_chunks

__all__ = ["SimulatedMovie", "simulate", "simulate_preset"]

# Movies above this size are rendered lazily, chunk by chunk, when written.
STREAM_BYTES = 1 << 30


@dataclass
class SimulatedMovie:
    """A simulated movie with its ground truth.

    Attributes
    ----------
    name : str
        Folder/file stem used by :func:`~astro3s.simulate.write_simulation`.
    preset : str
    seed : int
    params : SimulationParams
    scene : Scene
        The factored movie (render any frames again with
        :func:`~astro3s.simulate.render.render_frames`).
    truth : GroundTruth
    movie : ndarray of uint16, shape (T, H, W), or None
        None when the movie is streamed (large movies); use :meth:`chunks`.
    ranges : PresetRanges or None
        The ranges the parameters were drawn from.
    timings : dict
        Seconds spent per step.
    """

    name: str
    preset: str
    seed: int
    params: SimulationParams
    scene: Scene
    truth: GroundTruth
    movie: np.ndarray | None
    ranges: PresetRanges | None = None
    timings: dict[str, float] = field(default_factory=dict)

    @property
    def fs(self) -> float:
        """Frame rate (Hz)."""
        return self.params.fs

    @property
    def shape(self) -> tuple[int, int, int]:
        """Movie shape ``(T, H, W)``."""
        return self.params.shape

    @property
    def soma(self) -> np.ndarray:
        """Soma labels, uint16 (H, W)."""
        return self.truth.soma

    @property
    def processes(self) -> np.ndarray:
        """Process labels, uint16 (H, W)."""
        return self.truth.processes

    @property
    def processes_thin(self) -> np.ndarray:
        """Thin-branch process labels (the branches themselves, ~2 px wide), uint16 (H, W)."""
        thin = self.truth.processes_thin
        return self.truth.processes if thin is None else thin

    @property
    def domains(self) -> np.ndarray:
        """Domain labels, uint16 (H, W)."""
        return self.truth.domains

    @property
    def shifts(self) -> np.ndarray:
        """True ``(dy, dx)`` per frame, float32 (T, 2); shift frame t by ``-shifts[t]`` to register it."""
        return self.scene.shifts

    @property
    def traces(self) -> np.ndarray:
        """Noiseless ground-truth dF/F, float32 (T, N)."""
        return self.truth.traces

    @property
    def n_cells(self) -> int:
        """Cells in the ground truth."""
        return int(self.truth.traces.shape[1])

    def chunks(self) -> Iterator[tuple[int, np.ndarray]]:
        """Yield ``(t0, uint16 block)`` over the movie (rendered on the fly when streamed)."""
        if self.movie is not None:
            step = self.scene.chunk_frames
            for t0 in range(0, self.shape[0], step):
                yield t0, self.movie[t0:t0 + step]
        else:
            yield from iter_chunks(self.scene)


def simulate(params: SimulationParams, *, seed: int, layout: Layout | None = None,
             synthesise_processes: bool = True, stream: bool | None = None,
             name: str | None = None, preset: str = "custom",
             ranges: PresetRanges | None = None, salt: int = 0) -> SimulatedMovie:
    """Simulate one movie from concrete parameters.

    Parameters
    ----------
    params : SimulationParams
    seed : int
        Seeds every random draw; the same seed gives a byte-identical movie.
    layout : Layout, optional
        Real annotated cells to stand in for (``params`` height/width are set
        to the layout's shape).
    synthesise_processes : bool
        For soma-only layouts, grow procedural processes (default) or leave the
        cells without processes.
    stream : bool, optional
        Do not render the movie now; :meth:`SimulatedMovie.chunks` renders it
        chunk by chunk. Default: stream when the movie exceeds 1 GiB.
    name : str, optional
        Default ``<preset>_s<seed:04d>``.
    preset : str
        Recorded in the metadata.
    ranges : PresetRanges, optional
        Recorded in the metadata.
    salt : int
        Mixed into the seed (see :func:`~astro3s.simulate.render.build_scene`).

    Returns
    -------
    SimulatedMovie
    """
    if layout is not None and (params.height, params.width) != layout.shape:
        params = params.replace(height=int(layout.shape[0]), width=int(layout.shape[1]))
    timings: dict[str, float] = {}
    start = time.perf_counter()
    scene = build_scene(params, seed, layout=layout, synthesise_processes=synthesise_processes,
                        salt=salt)
    timings["scene_s"] = time.perf_counter() - start
    start = time.perf_counter()
    truth = ground_truth(scene)
    timings["ground_truth_s"] = time.perf_counter() - start
    if stream is None:
        stream = params.n_frames * params.height * params.width * 2 > STREAM_BYTES
    movie = None
    if not stream:
        start = time.perf_counter()
        movie = np.empty(params.shape, np.uint16)
        for t0, block in iter_chunks(scene):
            movie[t0:t0 + len(block)] = block
        timings["render_s"] = time.perf_counter() - start
    return SimulatedMovie(name=name or f"{preset}_s{int(seed):04d}", preset=preset, seed=int(seed),
                          params=params, scene=scene, truth=truth, movie=movie, ranges=ranges,
                          timings=timings)


def simulate_preset(preset: str | PresetRanges, *, seed: int, layout: str | Path | Layout | None = None,
                    shape: tuple[int, int] | None = None, synthesise_processes: bool = True,
                    stream: bool | None = None, name: str | None = None,
                    **overrides: Any) -> SimulatedMovie:
    """Draw parameters from a preset with ``seed`` and simulate.

    Parameters
    ----------
    preset : str or PresetRanges
        Preset name (``"tiny"``, ``"d1_like"``, ...) or ranges.
    seed : int
        Seeds both the parameter draw and the movie.
    layout : path or Layout, optional
        A real RoiSet zip (read with ``shape``) or a :class:`Layout`.
    shape : tuple of int, optional
        FOV ``(H, W)`` of ``layout``; required when ``layout`` is a path.
    **overrides
        Range overrides (number or ``(low, high)``), e.g. ``motion_sd=0``.
    """
    ranges = load_preset(preset, **overrides) if isinstance(preset, str) else preset
    if isinstance(preset, PresetRanges) and overrides:
        from astro3s.simulate.params import ranges_from_config

        ranges = ranges_from_config({**dataclasses.asdict(preset), **overrides})
    # the preset name salts every stream: seed 0 of d1_like and of d4_like are
    # unrelated draws, not the same quantiles of different ranges
    salt = zlib.crc32(ranges.preset.encode()) & 0x7FFFFFFF
    params = sample_params(ranges, np.random.default_rng([int(seed), salt, 1]))
    if layout is not None and not isinstance(layout, Layout):
        if shape is None:
            raise ConfigError("a layout RoiSet needs the FOV shape: pass shape=[H, W].")
        layout = layout_from_roiset(layout, shape)
    if layout is not None and name is None:
        name = f"{ranges.preset}_{layout.source.stem}_s{int(seed):04d}"
    return simulate(params, seed=seed, layout=layout, synthesise_processes=synthesise_processes,
                    stream=stream, name=name, preset=ranges.preset, ranges=ranges, salt=salt)
