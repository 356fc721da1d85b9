"""Scene construction and chunked rendering of a simulated movie.

A :class:`Scene` is the whole movie in factored form: a static baseline image,
sparse spatial footprints times temporal traces (whole-cell, soma-only,
microdomain and neuron components), a dense low-rank neuropil, and a list of
propagating waves, each bounded in space and time. :func:`render_frames`
turns any frame range into pixels:

    canvas  = (baseline + traces[t] @ footprints + neuropil + waves) * vessels * bleach[t]
    optics  = irfft2(rfft2(canvas) * OTF * exp(-2 pi i k . shift[t]))   # PSF blur and motion
    movie   = uint16(offset + gain * Poisson(optics) + read noise)

The canvas is larger than the field of view by the largest shift plus the PSF
support, so moved-in content is real scene, never wrapped-around edges. Memory
per chunk is bounded by :attr:`Scene.chunk_frames`.

Ground truth (:func:`ground_truth`): somata and annotated processes of the
cells that some event reveals, and their **domains**: each cell's soma and
process pixels plus the pixels of its footprint whose activity *detectably*
follows the cell, i.e. whose expected correlation with the cell's soma (or one
of its processes') signal reaches ``params.domain_min_correlation`` (0.6, the
lowest threshold of the CC analysis' automatic search). The expected
correlation (:func:`expected_domain_correlation`) is computed from the
noiseless scene for the 5-frame moving average at the best lag within +-10
frames (ASTRA's CC definition), with the shot + read noise variance of the
smoothed measurement known analytically from the photon counts, gain and read
noise. A territory whose shared signal is buried in shot noise is not a domain,
just as a cell without events is not a cell: nothing in the data reveals it.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import scipy.fft as sfft
import scipy.sparse as sp
from scipy import ndimage as ndi

from astro3s.simulate.morphology import (
    CellMorphology,
    Layout,
    cell_from_masks,
    clip_window,
    make_astrocyte,
    make_vessels,
    membrane_appearance,
    place_cells,
    thin_branches,
)
from astro3s.simulate.params import SimulationParams
from astro3s.simulate.psf import psf_blur, psf_margin, psf_otf, psf_reach
from astro3s.simulate.signals import (
    bleach_curve,
    event_kernel,
    event_times,
    event_train,
    motion_shifts,
    ou_process,
)

__all__ = ["CellInfo", "ComponentEvents", "GroundTruth", "Scene", "Wave", "build_scene", "ground_truth",
           "iter_chunks", "render_frames"]

# Canvas pixels per chunk (~64 MB of float32): bounds memory for any FOV size.
_CHUNK_PIXELS = 16_000_000
_COMPONENT_KINDS = ("whole", "soma", "micro", "neuron", "lookalike")


@dataclass
class Wave:
    """One propagating event: ``footprint * h(t - onset - delay)`` on a local grid.

    ``origin`` is the grid's canvas position; ``footprint`` (photons per unit
    dF/F) and ``delay`` (s) have the grid's shape.
    """

    cell: int
    origin: tuple[int, int]
    footprint: np.ndarray
    delay: np.ndarray
    onset: float
    rise: float
    decay: float

    @property
    def end(self) -> float:
        """Time (s) after which the wave is negligible."""
        return self.onset + float(self.delay.max()) + 8 * self.decay


@dataclass(frozen=True)
class ComponentEvents:
    """The events one component's trace sums: ``trace = event_train(times, onsets, amplitudes, rise, decay)``.

    Attributes
    ----------
    onsets, amplitudes, rise, decay : ndarray of float, shape (n,)
        Onset (s, may be < 0: an event decaying at the start), peak amplitude
        (dF/F of the component's footprint), rise and decay time constants (s).
    """

    onsets: np.ndarray
    amplitudes: np.ndarray
    rise: np.ndarray
    decay: np.ndarray


@dataclass
class CellInfo:
    """Per-astrocyte draw: brightness and events of each kind."""

    brightness: float
    faint: bool
    silent: bool
    n_whole: int = 0
    n_soma: int = 0
    n_micro: int = 0
    n_wave: int = 0
    sparse: bool = False

    @property
    def active(self) -> bool:
        """Whether an event involving the soma reveals the cell (it enters the ground truth)."""
        return (self.n_whole + self.n_soma + self.n_wave) > 0


@dataclass
class Scene:
    """Everything needed to render any frame of one movie (canvas coordinates).

    Attributes
    ----------
    params : SimulationParams
    seed : int
    canvas_shape : tuple of int
        ``(Hc, Wc)``; the FOV is ``[pad_y:pad_y+H, pad_x:pad_x+W]``.
    fov_origin : tuple of int
        ``(pad_y, pad_x)``.
    baseline : ndarray of float32, shape (Hc, Wc)
        Resting fluorescence (photons / px / frame).
    transmission : ndarray of float32, shape (Hc, Wc)
        Vessel shadows (multiplicative).
    footprints : scipy.sparse.csr_matrix of float32, shape (K, Hc*Wc)
        Photons per unit of trace, per component.
    traces : ndarray of float32, shape (T, K)
        Component activity (dF/F units).
    component_kind : ndarray of int8, shape (K,)
        Index into ``("whole", "soma", "micro", "neuron", "lookalike")``.
    component_cell : ndarray of int32, shape (K,)
        Astrocyte index, or neuron index for neurons.
    neuropil_fields : ndarray of float32, shape (Kn, Hc*Wc)
    neuropil_traces : ndarray of float32, shape (T, Kn)
    waves : list of Wave
    bleach : ndarray of float32, shape (T,)
    shifts : ndarray of float32, shape (T, 2)
        True ``(dy, dx)`` per frame (see :func:`~astro3s.simulate.signals.motion_shifts`).
    cells : list of CellMorphology
    cell_info : list of CellInfo
    neurons : ndarray of uint16, shape (Hc, Wc)
        Neuron distractor labels (not ground truth).
    n_unplaced : int
        Cells requested but not fitting in the FOV.
    chunk_frames : int
        Frames per rendering chunk (fixed per scene so noise is reproducible).
    component_events : list of ComponentEvents or None, length K
        The events each component's trace is the sum of (neuron spikes
        included): the event ground truth (:mod:`astro3s.simulate.events`).
    """

    params: SimulationParams
    seed: int
    canvas_shape: tuple[int, int]
    fov_origin: tuple[int, int]
    baseline: np.ndarray
    transmission: np.ndarray
    footprints: sp.csr_matrix
    traces: np.ndarray
    component_kind: np.ndarray
    component_cell: np.ndarray
    neuropil_fields: np.ndarray
    neuropil_traces: np.ndarray
    waves: list[Wave]
    bleach: np.ndarray
    shifts: np.ndarray
    cells: list[CellMorphology]
    cell_info: list[CellInfo]
    neurons: np.ndarray
    n_unplaced: int
    chunk_frames: int
    layout_source: str | None = None
    salt: int = 0
    component_events: list[ComponentEvents | None] = field(default_factory=list)
    _fft_cache: dict = field(default_factory=dict, repr=False)

    @property
    def times(self) -> np.ndarray:
        """Frame times (s), shape (T,)."""
        return np.arange(self.params.n_frames) / self.params.fs

    @property
    def fov(self) -> tuple[slice, slice]:
        """Slices of the FOV within the canvas."""
        py, px = self.fov_origin
        return slice(py, py + self.params.height), slice(px, px + self.params.width)


@dataclass
class GroundTruth:
    """Ground truth of the active cells, ids ``1..N`` shared by every array.

    Attributes
    ----------
    soma, processes, domains : ndarray of uint16, shape (H, W)
        No pixel is both soma and process; ``domains`` contains each cell's own
        soma and process pixels plus the territory pixels whose expected
        correlation with the cell's soma signal reaches
        ``params.domain_min_correlation`` (see :func:`ground_truth`).
    traces : ndarray of float32, shape (T, N)
        Noiseless dF/F over each cell's soma+process pixels (no motion, blur or bleaching).
    cell_index : ndarray of int, shape (N,)
        Scene cell index of GT id ``k`` at ``cell_index[k - 1]``.
    dropped : list of int
        Scene cell indices left out because no event revealed them.
    domain_correlation : ndarray of float32, shape (H, W), optional
        Expected correlation of each domain pixel with its cell's soma signal
        (1 on somata and processes, 0 outside every domain).
    processes_thin : ndarray of uint16, shape (H, W), optional
        The 2-px-wide centre lines of ``processes`` (the branches themselves):
        the thin-branch ground truth, scored as a second figure
        beside the annotator-width ``processes``.
    """

    soma: np.ndarray
    processes: np.ndarray
    domains: np.ndarray
    traces: np.ndarray
    cell_index: np.ndarray
    dropped: list[int]
    domain_correlation: np.ndarray | None = None
    processes_thin: np.ndarray | None = None


# ---------------------------------------------------------------------------- build


def _odd_fast_len(n: int) -> int:
    # odd sizes have no Nyquist bin, so a sub-pixel Fourier shift is exactly
    # unitary (real in, real out); 3/5/7/11-smooth keeps the FFT fast
    n += (n + 1) % 2
    while True:
        m = n
        for p in (3, 5, 7, 11):
            while m % p == 0:
                m //= p
        if m == 1:
            return n
        n += 2


def _smooth_field(shape: tuple[int, int], scale: float, rng: np.random.Generator, *, count: int = 1) -> np.ndarray:
    """``count`` smooth random fields (zero mean, unit sd) with correlation length ``scale`` px.

    Drawn on a grid coarsened by ~scale/4 and interpolated up, so cost does not
    grow with the smoothness.
    """
    factor = max(1, int(scale // 4))
    small = (math.ceil(shape[0] / factor) + 2, math.ceil(shape[1] / factor) + 2)
    out = np.empty((count, *shape), np.float32)
    for k in range(count):
        noise = ndi.gaussian_filter(rng.standard_normal(small).astype(np.float32), scale / factor,
                                    mode="wrap")
        up = ndi.zoom(noise, factor, order=1)[: shape[0], : shape[1]]
        out[k] = (up - up.mean()) / max(float(up.std()), 1e-6)
    return out


def _paste(canvas: np.ndarray, local: np.ndarray, origin: tuple[int, int], *, op: str = "add") -> None:
    (cy, cx), (ly, lx) = clip_window(origin, local.shape, canvas.shape)
    if op == "add":
        canvas[cy, cx] += local[ly, lx]
    else:
        np.maximum(canvas[cy, cx], local[ly, lx], out=canvas[cy, cx])


def _sparse_rows(locals_: list[tuple[np.ndarray, tuple[int, int]]], canvas_shape: tuple[int, int]) -> sp.csr_matrix:
    """Stack local footprints (each a grid + origin) into a (K, Hc*Wc) CSR matrix."""
    rows, cols, vals = [], [], []
    for k, (img, origin) in enumerate(locals_):
        (cy, cx), (ly, lx) = clip_window(origin, img.shape, canvas_shape)
        sub = img[ly, lx]
        iy, ix = np.nonzero(sub > 1e-4)
        rows.append(np.full(len(iy), k, np.int32))
        cols.append(((iy + cy.start) * canvas_shape[1] + ix + cx.start).astype(np.int64))
        vals.append(sub[iy, ix].astype(np.float32))
    n_pix = canvas_shape[0] * canvas_shape[1]
    if not rows:
        return sp.csr_matrix((0, n_pix), dtype=np.float32)
    return sp.csr_matrix((np.concatenate(vals), (np.concatenate(rows), np.concatenate(cols))),
                         shape=(len(locals_), n_pix), dtype=np.float32)


def _disk(radius: float, *, ring: bool, rng: np.random.Generator) -> np.ndarray:
    half = int(math.ceil(radius + 2))
    yy, xx = np.mgrid[-half:half + 1, -half:half + 1].astype(np.float32)
    d = np.hypot(yy, xx)
    body = np.clip(radius + 0.5 - d, 0, 1)
    if ring:
        # cytosolic indicator: the nucleus is darker than the rim
        body *= 1 - rng.uniform(0.3, 0.6) * np.clip(0.6 * radius - d + 0.5, 0, 1)
    return body.astype(np.float32)


def _add_lookalikes(params: SimulationParams, cells: list[CellMorphology], canvas_shape: tuple[int, int],
                    pad: int, times: np.ndarray, baseline: np.ndarray, add: Any, soma_occupied: np.ndarray,
                    rng: np.random.Generator) -> None:
    """Out-of-focus astrocytes and soft blobs: active, astrocyte-like, and never ground truth.

    A method must learn to reject them: an astrocyte above or below the focal
    plane is a whole cell blurred by the defocus (sigma 0.3-0.7 soma radii)
    and dimmer, with slow whole-cell events; a blob is a soft Gaussian spot of
    soma size with slow, shallow fluctuations (debris, out-of-plane somata).
    Each is pasted into ``baseline`` and registered with ``add(..., "lookalike", j)``.
    """
    area_px = params.height * params.width / 1e4
    n_defocus = rng.poisson(params.defocus_density * area_px)
    n_blobs = rng.poisson(params.blob_density * area_px)
    if n_defocus + n_blobs == 0:
        return
    duration = params.duration_s
    ref_area = params.soma_area_median
    for j in range(n_defocus + n_blobs):  # a loop over look-alikes
        cy = float(rng.uniform(pad, pad + params.height))
        cx = float(rng.uniform(pad, pad + params.width))
        area = float(np.clip(ref_area * np.exp(rng.normal(0, 0.4)), params.soma_area_min, params.soma_area_max))
        radius = math.sqrt(area / math.pi)
        if j < n_defocus:
            cell = make_astrocyte((cy, cx), area, params, rng)
            body = np.maximum.reduce([cell.soma, params.process_brightness * cell.process,
                                      params.territory_brightness * cell.territory])
            footprint = ndi.gaussian_filter(body, rng.uniform(0.3, 0.7) * radius)
            origin = cell.origin
            level = rng.uniform(0.25, 0.6)
            amplitude = params.whole_amplitude
        else:
            sigma = radius * rng.uniform(0.5, 1.0)
            half = int(math.ceil(3 * sigma))
            yy, xx = np.mgrid[-half:half + 1, -half:half + 1].astype(np.float32)
            footprint = np.exp(-(yy**2 + xx**2) / (2 * sigma**2))
            origin = (int(round(cy)) - half, int(round(cx)) - half)
            level = rng.uniform(0.3, 1.0)
            amplitude = 0.3 * params.whole_amplitude
        footprint = (params.soma_photons * level * footprint / max(float(footprint.max()), 1e-6)).astype(np.float32)
        (sy, sx), (ly, lx) = clip_window(origin, footprint.shape, canvas_shape)
        if (soma_occupied[sy, sx] & (footprint[ly, lx] > 0.5 * footprint.max())).any():
            continue  # not on top of a real soma: it would change that cell, not imitate one
        _paste(baseline, footprint, origin)
        onsets = event_times(params.whole_rate, duration, rng, lead_s=4 * params.decay_slow)
        n = len(onsets)
        drawn = (onsets, amplitude * np.exp(rng.normal(0, 0.35, n)), params.rise_slow * np.exp(rng.normal(0, 0.2, n)),
                 params.decay_slow * np.exp(rng.normal(0, 0.2, n)))
        add(footprint, origin, event_train(times, *drawn), "lookalike", j, events=drawn)


def build_scene(params: SimulationParams, seed: int, *, layout: Layout | None = None,  # noqa: C901, PLR0915 - draws every scene element in turn
                synthesise_processes: bool = True, salt: int = 0) -> Scene:
    """Draw every random element of one movie (morphology, events, distractors, motion).

    Parameters
    ----------
    params : SimulationParams
        With ``layout``, ``height``/``width`` must equal the layout's shape.
    seed : int
        Every random draw derives from it; the same seed gives the same scene.
    layout : Layout, optional
        Real annotated cells to use as the morphology (stand-in mode).
    synthesise_processes : bool
        For soma-only layouts, grow procedural processes around the somata
        (otherwise the cells have somata and territory only).
    salt : int
        Mixed into the seed (the preset name's CRC in :func:`simulate_preset`), so
        that equal seeds of different presets do not share random streams.

    Returns
    -------
    Scene
    """
    entropy = [int(seed), int(salt)] if salt else int(seed)
    streams = [np.random.default_rng(s) for s in np.random.SeedSequence(entropy).spawn(6)]
    rng_motion, rng_vessel, rng_cells, rng_signal, rng_neuron, rng_bg = streams
    n_frames, fs = params.n_frames, params.fs
    times = np.arange(n_frames) / fs
    duration = params.duration_s

    shifts = motion_shifts(params, rng_motion)
    pad = int(math.ceil(float(np.abs(shifts).max(initial=0)) + psf_reach(params) + 2))
    canvas_shape = (_odd_fast_len(params.height + 2 * pad), _odd_fast_len(params.width + 2 * pad))
    fov_origin = (pad, pad)
    hc, wc = canvas_shape

    transmission, clearance = make_vessels(canvas_shape, params.n_vessels, width=params.vessel_width,
                                           depth=params.vessel_depth, rng=rng_vessel)

    # --- astrocytes
    cells: list[CellMorphology] = []
    n_unplaced = 0
    if layout is not None:
        soma_c = np.zeros(canvas_shape, np.uint16)
        proc_c = np.zeros(canvas_shape, np.uint16)
        soma_c[pad:pad + params.height, pad:pad + params.width] = layout.soma
        proc_c[pad:pad + params.height, pad:pad + params.width] = layout.processes
        for k in range(1, layout.n_cells + 1):
            cells.append(cell_from_masks(soma_c == k, proc_c == k, params, rng_cells,
                                         synthesise_processes=synthesise_processes))
    else:
        areas = params.soma_area_median * np.exp(rng_cells.normal(0, params.soma_area_spread, params.n_cells))
        areas = np.sort(np.clip(areas, params.soma_area_min, params.soma_area_max))[::-1]
        radii = np.sqrt(areas / np.pi)
        centers = place_cells(radii, params.territory_radius * radii,
                              box=(pad, pad + params.height, pad, pad + params.width),
                              spacing=params.cell_spacing, clearance=clearance, rng=rng_cells)
        for area, center in zip(areas, centers):
            if np.isnan(center[0]):
                n_unplaced += 1
                continue
            cells.append(make_astrocyte((float(center[0]), float(center[1])), float(area), params, rng_cells))

    # a membrane-targeted indicator: the same cells, other footprints (no draw: the streams stay as they were)
    cells = [membrane_appearance(cell, params.membrane_label) for cell in cells]

    # --- per-cell brightness and events
    n_cells = len(cells)
    brightness = params.soma_photons * np.exp(rng_signal.normal(0, params.brightness_spread, n_cells))
    faint = rng_signal.random(n_cells) < params.faint_fraction
    brightness = np.where(faint, brightness * params.faint_factor, brightness)
    silent = rng_signal.random(n_cells) < params.silent_fraction
    infos = [CellInfo(float(b), bool(f), bool(s)) for b, f, s in zip(brightness, faint, silent)]
    # rarely active cells come from a stream of their own, drawn only when asked for: a preset without them
    # keeps every movie it wrote
    rng_sparse = np.random.default_rng(np.random.SeedSequence(entropy).spawn(8)[7]) \
        if params.sparse_fraction > 0 else None

    baseline = params.background_photons * np.clip(
        1 + params.background_texture * (
            params.texture_fine_weight * _smooth_field(canvas_shape, params.texture_fine_scale, rng_bg)[0]
            + 0.5 * _smooth_field(canvas_shape, params.texture_coarse_scale, rng_bg)[0]), 0.1, None)
    tissue = baseline.copy()
    comps: list[tuple[np.ndarray, tuple[int, int]]] = []
    comp_trace: list[np.ndarray] = []
    comp_kind: list[int] = []
    comp_cell: list[int] = []
    comp_events: list[ComponentEvents | None] = []
    waves: list[Wave] = []

    def add(img: np.ndarray, origin: tuple[int, int], trace: np.ndarray, kind: str, owner: int,
            events: tuple[np.ndarray, ...] | None = None) -> None:
        comps.append((img, origin))
        comp_trace.append(trace)
        comp_kind.append(_COMPONENT_KINDS.index(kind))
        comp_cell.append(owner)
        comp_events.append(None if events is None else ComponentEvents(*(np.asarray(a, np.float64) for a in events)))

    def slow_events(rate: float, amplitude: float) -> tuple[np.ndarray, ...]:
        onsets = event_times(rate, duration, rng_signal, lead_s=4 * params.decay_slow)
        n = len(onsets)
        return (onsets, amplitude * np.exp(rng_signal.normal(0, 0.35, n)),
                params.rise_slow * np.exp(rng_signal.normal(0, 0.2, n)),
                params.decay_slow * np.exp(rng_signal.normal(0, 0.2, n)))

    for i, (cell, info) in enumerate(zip(cells, infos)):
        b = info.brightness
        rest = b * np.maximum.reduce([cell.soma, params.process_brightness * cell.process,
                                      params.territory_brightness * cell.territory])
        _paste(baseline, rest, cell.origin)
        if info.silent:
            continue
        # whole-cell events: soma, processes and (weaker) territory together
        whole_fp = b * np.maximum.reduce([cell.soma, params.process_brightness * cell.process,
                                          params.territory_brightness * params.territory_participation
                                          * cell.territory])
        ev = slow_events(params.whole_rate, params.whole_amplitude)
        soma_ev = slow_events(params.soma_rate, params.soma_amplitude)
        wave_onsets = event_times(params.wave_rate, duration, rng_signal)
        visible = (ev[0] > -params.decay_slow).any() or (soma_ev[0] > -params.decay_slow).any()
        if not visible and not len(wave_onsets):
            # a non-silent cell must show itself at least once inside the movie
            onset = rng_signal.uniform(0, max(duration - 2 * params.decay_slow, 0.5 * duration))
            ev = tuple(np.append(a, v) for a, v in zip(ev, (onset, params.whole_amplitude,
                                                             params.rise_slow, params.decay_slow)))
        if rng_sparse is not None and rng_sparse.random() < params.sparse_fraction:
            ev, soma_ev, wave_onsets = _sparse_events(params, duration, rng_sparse)
            info.sparse = True
        info.n_whole = int((ev[0] > -params.decay_slow).sum())
        info.n_soma = int((soma_ev[0] > -params.decay_slow).sum())
        add(whole_fp, cell.origin, event_train(times, *ev), "whole", i, events=ev)
        if len(soma_ev[0]):
            add(b * cell.soma, cell.origin, event_train(times, *soma_ev), "soma", i, events=soma_ev)

        # microdomains: recurrent hot spots on processes and in the territory
        n_sites = rng_signal.poisson(params.micro_sites * max(cell.territory_radius / (3.5 * cell.soma_radius), 0.3)) \
            if params.micro_sites > 0 else 0
        if info.sparse:
            n_sites //= 3
        on_process = np.flatnonzero(cell.branches.ravel())
        in_territory = np.flatnonzero((cell.territory_mask & ~cell.soma_mask).ravel())
        local_rest = b * np.maximum(params.process_brightness * cell.process,
                                    params.territory_brightness * cell.territory)
        for _ in range(n_sites):
            pool = on_process if (len(on_process) and rng_signal.random() < 0.6) else in_territory
            if not len(pool):
                break
            cy, cx = np.unravel_index(pool[rng_signal.integers(len(pool))], cell.shape)
            sigma = params.micro_size * rng_signal.uniform(0.6, 1.4)
            half = int(math.ceil(3 * sigma))
            y0, y1 = max(cy - half, 0), min(cy + half + 1, cell.shape[0])
            x0, x1 = max(cx - half, 0), min(cx + half + 1, cell.shape[1])
            yy, xx = np.mgrid[y0:y1, x0:x1]
            blob = np.exp(-((yy - cy) ** 2 + (xx - cx) ** 2) / (2 * sigma**2)).astype(np.float32)
            # local dF/F is uniform over the blob; photons follow the local baseline,
            # floored so that a hot spot on a dim fine process is still visible
            fp = blob * np.maximum(local_rest[y0:y1, x0:x1], 0.15 * params.process_brightness * b)
            onsets = event_times(params.micro_rate, duration, rng_signal, lead_s=4 * params.decay_fast)
            n = len(onsets)
            if n == 0:
                continue
            # drawn in the same order as before (amplitudes, rise, decay): the random streams are unchanged
            micro_ev = (onsets, params.micro_amplitude * np.exp(rng_signal.normal(0, 0.4, n)),
                        params.rise_fast * np.exp(rng_signal.normal(0, 0.25, n)),
                        params.decay_fast * np.exp(rng_signal.normal(0, 0.25, n)))
            trace = event_train(times, *micro_ev)
            add(fp, (cell.origin[0] + y0, cell.origin[1] + x0), trace, "micro", i, events=micro_ev)
            info.n_micro += int((onsets > 0).sum())

        # propagating waves over the whole territory, delay proportional to distance
        origins_pool = np.flatnonzero(cell.territory_mask.ravel())
        yy, xx = np.mgrid[0:cell.shape[0], 0:cell.shape[1]].astype(np.float32)
        for onset in wave_onsets:
            oy, ox = np.unravel_index(origins_pool[rng_signal.integers(len(origins_pool))], cell.shape)
            speed = params.wave_speed * np.exp(rng_signal.normal(0, 0.2))
            delay = (np.hypot(yy - oy, xx - ox) / speed).astype(np.float32)
            amp = params.wave_amplitude * np.exp(rng_signal.normal(0, 0.3))
            waves.append(Wave(cell=i, origin=cell.origin, footprint=(amp * whole_fp).astype(np.float32),
                              delay=delay, onset=float(onset),
                              rise=float(params.rise_slow * np.exp(rng_signal.normal(0, 0.2))),
                              decay=float(params.decay_slow * np.exp(rng_signal.normal(0, 0.2)))))
            info.n_wave += 1

    # --- neuron-like distractors: small round cells with fast transients
    n_neurons = rng_neuron.poisson(params.neuron_density * params.height * params.width / 1e4)
    neurons = np.zeros(canvas_shape, np.uint16)
    soma_occupied = np.zeros(canvas_shape, bool)
    for cell in cells:
        (cy, cx), (ly, lx) = clip_window(cell.origin, cell.shape, canvas_shape)
        soma_occupied[cy, cx] |= ndi.binary_dilation(cell.soma_mask, iterations=2)[ly, lx]
    ref_radius = math.sqrt(params.soma_area_median / math.pi)
    for j in range(n_neurons):
        radius = max(2.0, ref_radius * rng_neuron.uniform(0.7, 1.1))
        disk = _disk(radius, ring=True, rng=rng_neuron)
        half = disk.shape[0] // 2
        for _ in range(20):  # a few tries to land off astrocyte somata and vessels
            cy = int(rng_neuron.integers(pad, pad + params.height))
            cx = int(rng_neuron.integers(pad, pad + params.width))
            origin = (cy - half, cx - half)
            (sy, sx), (ly, lx) = clip_window(origin, disk.shape, canvas_shape)
            if not (soma_occupied[sy, sx] & (disk[ly, lx] > 0)).any() and clearance[cy, cx] > radius:
                break
        else:
            continue
        b = params.soma_photons * params.neuron_brightness * np.exp(rng_neuron.normal(0, 0.3))
        _paste(baseline, b * disk, origin)
        soma_occupied[sy, sx] |= disk[ly, lx] > 0
        label = neurons[sy, sx]
        label[disk[ly, lx] > 0.5] = j + 1
        # bursty firing: Poisson bursts of 1-4 spikes a few tens of ms apart
        bursts = event_times(params.neuron_rate * 60, duration, rng_neuron, lead_s=2.0)
        spikes = np.concatenate([o + np.arange(rng_neuron.integers(1, 5)) * 0.05 for o in bursts]) \
            if len(bursts) else np.zeros(0)
        n = len(spikes)
        spike_ev = (spikes, params.neuron_amplitude / 2 * np.exp(rng_neuron.normal(0, 0.3, n)),
                    np.full(n, 0.04), params.neuron_decay * np.exp(rng_neuron.normal(0, 0.2, n)))
        add(b * disk, origin, event_train(times, *spike_ev), "neuron", j, events=spike_ev)

    # --- look-alikes (not ground truth): out-of-focus astrocytes and soft round blobs
    _add_lookalikes(params, cells, canvas_shape, pad, times, baseline, add, soma_occupied,
                    np.random.default_rng(np.random.SeedSequence(entropy).spawn(7)[6]))

    # --- active neuropil: smooth spatial modes with slow fluctuations, riding on the tissue
    n_np = params.neuropil_components if params.neuropil_amplitude > 0 else 0
    if n_np:
        fields = _smooth_field(canvas_shape, params.neuropil_scale, rng_bg, count=n_np)
        fields = np.clip(fields, 0, None) * tissue[None] * params.neuropil_amplitude
        np_traces = ou_process(n_frames, fs, params.neuropil_timescale, 1.0, rng_bg, size=n_np)
    else:
        fields = np.zeros((0, hc, wc), np.float32)
        np_traces = np.zeros((n_frames, 0), np.float32)

    traces = np.stack(comp_trace, axis=1) if comp_trace else np.zeros((n_frames, 0), np.float32)
    chunk_frames = int(np.clip(_CHUNK_PIXELS // (hc * wc), 4, 256))
    return Scene(params=params, seed=int(seed), canvas_shape=canvas_shape, fov_origin=fov_origin,
                 baseline=baseline.astype(np.float32), transmission=transmission,
                 footprints=_sparse_rows(comps, canvas_shape), traces=traces.astype(np.float32),
                 component_kind=np.asarray(comp_kind, np.int8), component_cell=np.asarray(comp_cell, np.int32),
                 neuropil_fields=fields.reshape(n_np, hc * wc).astype(np.float32),
                 neuropil_traces=np_traces.astype(np.float32), waves=waves, bleach=bleach_curve(params),
                 shifts=shifts, cells=cells, cell_info=infos, neurons=neurons, n_unplaced=n_unplaced,
                 chunk_frames=chunk_frames,
                 layout_source=None if layout is None else str(layout.source), salt=int(salt),
                 component_events=comp_events)


# ---------------------------------------------------------------------------- render


def _wave_block(wave: Wave, times: np.ndarray) -> np.ndarray:
    """Wave photons on its local grid at ``times`` (s): shape (len(times), h, w)."""
    return wave.footprint[None] * event_kernel(times[:, None, None] - wave.onset - wave.delay[None],
                                               wave.rise, wave.decay)


def render_signal(scene: Scene, t0: int, t1: int) -> np.ndarray:
    """Noiseless fluorescence on the canvas before optics (photons), shape (t1-t0, Hc, Wc).

    Includes vessel shadows and bleaching; no blur, motion or noise.
    """
    hc, wc = scene.canvas_shape
    n = t1 - t0
    # dense @ sparse: (n, K) @ (K, P) -> (n, P), computed as (P, K) @ (K, n) by scipy
    dynamic = np.asarray(scene.footprints.T @ scene.traces[t0:t1].T, dtype=np.float32).T
    canvas = np.ascontiguousarray(dynamic).reshape(n, hc, wc)
    canvas += scene.baseline[None]
    if len(scene.neuropil_fields):
        canvas += (scene.neuropil_traces[t0:t1] @ scene.neuropil_fields).reshape(n, hc, wc)
    times = scene.times[t0:t1]
    for wave in scene.waves:
        if wave.end < times[0] or wave.onset > times[-1]:
            continue
        inside = np.flatnonzero((times >= wave.onset) & (times <= wave.end))
        block = _wave_block(wave, times[inside])
        (cy, cx), (ly, lx) = clip_window(wave.origin, wave.footprint.shape, scene.canvas_shape)
        canvas[inside[0]:inside[-1] + 1, cy, cx] += block[:, ly, lx]
    canvas *= scene.transmission[None]
    canvas *= scene.bleach[t0:t1, None, None]
    return canvas


def _optics(scene: Scene, canvas: np.ndarray, shifts: np.ndarray | None) -> np.ndarray:
    """PSF blur and sub-pixel rigid motion in one Fourier multiplication; crop to the FOV."""
    hc, wc = scene.canvas_shape
    key = "otf"
    if key not in scene._fft_cache:
        ky = sfft.fftfreq(hc).astype(np.float32)
        kx = sfft.rfftfreq(wc).astype(np.float32)
        scene._fft_cache[key] = (ky, kx, psf_otf(scene.params, ky, kx))
    ky, kx, otf = scene._fft_cache[key]
    spec = sfft.rfft2(canvas, workers=-1)
    spec *= otf[None]
    if shifts is not None and np.any(shifts):
        # moving content by +s multiplies its spectrum by exp(-2 pi i k s)
        spec *= np.exp(-2j * np.pi * ky[None, :, None] * shifts[:, 0, None, None]).astype(np.complex64)
        spec *= np.exp(-2j * np.pi * kx[None, None, :] * shifts[:, 1, None, None]).astype(np.complex64)
    out = sfft.irfft2(spec, s=(hc, wc), workers=-1)
    fy, fx = scene.fov
    return np.ascontiguousarray(out[:, fy, fx], dtype=np.float32)


def _correlate_noise(counts: np.ndarray, expected: np.ndarray, variance: np.ndarray, fraction: float,
                     length: float, rng: np.random.Generator) -> None:
    """Make ``fraction`` of the noise variance of ``counts`` (T, H, W) spatially correlated, in place.

    The noise (``counts - expected``) keeps ``1 - fraction`` of its variance; the
    rest comes from independent Gaussian noise of the pixel's ``variance``,
    smoothed by a Gaussian of sd ``length`` px and rescaled to the variance it
    had. Each pixel keeps its mean and (up to the local variation of the shot
    noise) its variance. Resampling, line averaging and denoising leave such
    noise: neighbouring pixels of real recordings co-vary.
    """
    impulse = np.zeros((int(8 * length) + 3,) * 2, np.float32)
    impulse[impulse.shape[0] // 2, impulse.shape[1] // 2] = 1
    gain = 1.0 / math.sqrt(float((ndi.gaussian_filter(impulse, length, mode="constant") ** 2).sum()))
    extra = rng.standard_normal(counts.shape, dtype=np.float32)
    extra *= np.sqrt(variance, dtype=np.float32)
    ndi.gaussian_filter(extra, (0, length, length), mode="reflect", output=extra)
    counts -= expected
    counts *= np.float32(math.sqrt(1 - fraction))
    counts += np.float32(math.sqrt(fraction) * gain) * extra
    counts += expected


def render_frames(scene: Scene, t0: int, t1: int, *, motion: bool = True, noise: bool = True) -> np.ndarray:
    """Render frames ``t0:t1`` of the movie.

    Parameters
    ----------
    scene : Scene
    t0, t1 : int
        Frame range.
    motion : bool
        Apply the scene's shifts (False renders the registered reference view).
    noise : bool
        Apply Poisson shot noise, read noise (its spatially correlated share, if any) and uint16
        quantisation.

    Returns
    -------
    frames : ndarray, shape (t1-t0, H, W)
        uint16 counts with ``noise=True``; otherwise float32 expected counts
        ``offset + gain * photons``.

    Notes
    -----
    Noise is drawn from a generator keyed on ``(seed, salt, t0)``, so the same call
    always returns the same frames; :func:`iter_chunks` uses fixed chunk bounds.
    """
    p = scene.params
    canvas = render_signal(scene, t0, t1)
    photons = _optics(scene, canvas, scene.shifts[t0:t1] if motion else None)
    del canvas
    np.maximum(photons, 0, out=photons)  # Fourier ringing can dip just below zero
    if not noise:
        return (p.offset + p.gain * photons).astype(np.float32)
    rng = np.random.default_rng([scene.seed, scene.salt, 0x5EED, t0])
    counts = rng.poisson(photons).astype(np.float32)
    counts *= np.float32(p.gain)
    counts += np.float32(p.offset)
    if p.read_noise > 0:
        counts += np.float32(p.read_noise) * rng.standard_normal(counts.shape, dtype=np.float32)
    if p.noise_correlation > 0:
        # float32 throughout (NumPy keeps an array's dtype against Python floats): no extra copies
        _correlate_noise(counts, p.offset + p.gain * photons, p.gain**2 * photons + p.read_noise**2,
                         p.noise_correlation, p.noise_correlation_length, rng)
    np.rint(counts, out=counts)
    np.clip(counts, 0, 65535, out=counts)
    return counts.astype(np.uint16)


def iter_chunks(scene: Scene, *, motion: bool = True, noise: bool = True) -> Iterator[tuple[int, np.ndarray]]:
    """Yield ``(t0, frames)`` over the whole movie in chunks of ``scene.chunk_frames``."""
    for t0 in range(0, scene.params.n_frames, scene.chunk_frames):
        yield t0, render_frames(scene, t0, min(t0 + scene.chunk_frames, scene.params.n_frames),
                                motion=motion, noise=noise)


def _sparse_events(params: SimulationParams, duration: float,
                   rng: np.random.Generator) -> tuple[tuple[np.ndarray, ...], tuple[np.ndarray, ...], np.ndarray]:
    """Events of a rarely active cell: one or two small whole-cell events inside the movie, nothing else.

    Returns
    -------
    whole, soma : tuple of 4 float64 arrays
        ``(onsets, amplitudes, rise, decay)`` of the whole-cell events (1 or 2) and of the soma-only ones (none).
    wave_onsets : ndarray of float64, shape (0,)
    """
    n = int(rng.integers(1, 3))
    # inside the movie, far enough from its end for the event to be seen rising and falling
    onsets = rng.uniform(0, max(duration - 2 * params.decay_slow, 0.5 * duration), n)
    amplitudes = params.whole_amplitude * rng.uniform(0.25, 0.6, n)
    whole = (onsets, amplitudes, np.full(n, params.rise_slow), np.full(n, params.decay_slow))
    empty = np.zeros(0)
    return whole, (empty, empty, empty, empty), empty


# ---------------------------------------------------------------------------- ground truth


def ground_truth(scene: Scene) -> GroundTruth:
    """Label images and noiseless dF/F traces of the active cells.

    Somata and processes are the cells' drawn masks. A cell's **domain** is its
    soma and process pixels plus the territory pixels whose activity detectably
    follows the cell: those whose *expected* correlation with the cell's soma
    signal (:func:`expected_domain_correlation`) reaches
    ``params.domain_min_correlation``, in components connected to the cell's
    soma or processes. A territory whose shared signal is buried in shot noise
    is therefore not a domain, as a cell without events is not a cell: nothing
    in the data reveals it (unless ``params.silent_labelled`` says that silent
    cells are cells, as annotators draw an astrocyte from its shape: their
    domain is then their soma and processes).

    Each pixel has one owner: somata beat processes beat domains; between
    somata (or processes) of several cells the larger footprint wins, between
    domains the higher expected correlation. Only the cells of the ground truth
    compete (an unlabelled inactive cell is invisible in the activity, so its
    pixels belong to whoever's signal is there); ids ``1..N`` follow the scene
    order.
    """
    hc, wc = scene.canvas_shape
    silent_labelled = scene.params.silent_labelled >= 0.5
    active = [i for i, info in enumerate(scene.cell_info) if info.active or (silent_labelled and info.silent)]
    dropped = sorted(set(range(len(scene.cell_info))) - set(active))
    best = np.zeros(canvas_shape := (hc, wc), np.float32)
    owner = np.zeros(canvas_shape, np.uint16)
    kind = np.zeros(canvas_shape, np.uint8)  # 1 soma, 2 process, 3 domain
    corr_c = np.zeros(canvas_shape, np.float32)
    level = float(scene.params.domain_min_correlation)
    revealed: dict[int, np.ndarray] = {}
    on_branch = np.zeros(canvas_shape, bool)
    for gt_id, i in enumerate(active, start=1):
        cell = scene.cells[i]
        # a silent cell labelled by convention has no signal: its domain is its soma and processes
        rho = expected_domain_correlation(scene, i) if scene.cell_info[i].active else np.zeros(cell.shape, np.float32)
        roi = cell.soma_mask | cell.process_mask
        # candidates: wherever the cell has a footprint (its territory fades out
        # beyond territory_mask, and still carries its signal there)
        own = cell.territory_mask | (cell.territory > 1e-3) | (cell.process > 1e-3)
        dom = ((rho >= level) & own) | roi
        # only what is connected to the cell's own soma/processes is its domain
        lab, n = ndi.label(dom, structure=np.ones((3, 3), bool))
        keep = np.zeros(n + 1, bool)
        keep[np.unique(lab[roi])] = True
        keep[0] = False
        dom = keep[lab]
        revealed[i] = rho
        score = np.where(cell.soma_mask, 3 + cell.soma,
                         np.where(cell.process_mask, 2 + cell.process,
                                  np.where(dom, 1 + np.clip(rho, 0, 0.999), 0))).astype(np.float32)
        rank = np.where(cell.soma_mask, 1, np.where(cell.process_mask, 2, np.where(dom, 3, 0)))
        (cy, cx), (ly, lx) = clip_window(cell.origin, cell.shape, canvas_shape)
        on_branch[cy, cx] |= thin_branches(cell.process_mask)[ly, lx]
        win = score[ly, lx] > best[cy, cx]
        best[cy, cx] = np.where(win, score[ly, lx], best[cy, cx])
        owner[cy, cx] = np.where(win, gt_id, owner[cy, cx])
        kind[cy, cx] = np.where(win, rank[ly, lx], kind[cy, cx])
        corr_c[cy, cx] = np.where(win, np.where(rank[ly, lx] == 3, rho[ly, lx], 1.0), corr_c[cy, cx])
    # somata of silent cells are not anyone's soma or process, whatever overlaps them
    silent_soma = np.zeros(canvas_shape, bool)
    for i in dropped:
        cell = scene.cells[i]
        (cy, cx), (ly, lx) = clip_window(cell.origin, cell.shape, canvas_shape)
        silent_soma[cy, cx] |= cell.soma_mask[ly, lx]
    soma_c = np.where(kind == 1, owner, 0).astype(np.uint16)
    proc_c = np.where((kind == 2) & ~silent_soma, owner, 0).astype(np.uint16)
    owner = _connected_domains(owner, np.maximum(soma_c, proc_c))
    corr_c = np.where(owner > 0, corr_c, 0).astype(np.float32)
    fy, fx = scene.fov
    soma, processes, domains = soma_c[fy, fx], proc_c[fy, fx], owner[fy, fx].copy()

    # cells whose soma lies outside the FOV after ownership cannot be ground truth
    present = np.unique(soma[soma > 0])
    keep = np.zeros(len(active) + 1, bool)
    keep[present] = True
    if not keep[1:].all():
        dropped += [active[k - 1] for k in range(1, len(active) + 1) if not keep[k]]
        lut = np.zeros(len(active) + 1, np.uint16)
        lut[present] = np.arange(1, len(present) + 1, dtype=np.uint16)
        soma, processes, domains = lut[soma], lut[processes], lut[domains]
        soma_c, proc_c = lut[soma_c], lut[proc_c]
        active = [active[k - 1] for k in present]

    traces = _gt_traces(scene, soma_c, proc_c, len(active))
    return GroundTruth(soma=soma, processes=processes, domains=domains, traces=traces,
                       cell_index=np.asarray(active, dtype=np.int64), dropped=sorted(dropped),
                       domain_correlation=np.where(domains > 0, corr_c[fy, fx], 0).astype(np.float32),
                       processes_thin=np.where(on_branch[fy, fx], processes, 0).astype(np.uint16))


def _connected_domains(owner: np.ndarray, roi: np.ndarray) -> np.ndarray:
    """Drop domain pixels that ownership cut off from their cell's soma/processes."""
    out = owner.copy()
    loose = (owner > 0) & (roi == 0)
    if not loose.any():
        return out
    # components of equal owner (8-connected); keep those holding an ROI pixel of that owner
    for k in np.unique(owner[loose]):
        sl = ndi.find_objects((owner == k).astype(np.uint8))[0]
        sub = owner[sl] == k
        lab, n = ndi.label(sub, structure=np.ones((3, 3), bool))
        good = np.zeros(n + 1, bool)
        good[np.unique(lab[roi[sl] == k])] = True
        good[0] = False
        out[sl][sub & ~good[lab]] = 0
    return out


# ASTRA's CC definition (Bonato et al. 2023), which the ground-truth domains are
# defined against: 5-frame moving average, lags of up to +-10 frames.
DOMAIN_SMOOTH_FRAMES = 5
DOMAIN_MAX_LAG = 10


def expected_domain_correlation(scene: Scene, index: int, *, smooth_frames: int = DOMAIN_SMOOTH_FRAMES,  # noqa: C901, PLR0915 - one term per signal component
                                max_lag: int = DOMAIN_MAX_LAG) -> np.ndarray:
    """Expected correlation of each pixel's measured trace with cell ``index``'s soma signal.

    For every pixel of the cell's local grid, the pixel's noiseless signal is
    computed from the scene (every component, neighbours' and neuropil
    included; blurred by the PSF; vessel shadows applied; bleaching only as its
    mean level: the trend is a nuisance that the CC analysis removes,
    :func:`astro3s.correlation.slow_trend`) and smoothed
    by a ``smooth_frames`` moving average. Its variance is that signal's
    variance plus the expected noise of the smoothed measurement, known
    analytically: ``(mean photons + (read_noise / gain)^2 + 1 / (12 gain^2)) /
    smooth_frames`` (Poisson shot noise, Gaussian read noise and rounding to
    ADU, all independent between pixels and frames, in photon units). The
    reference is the cell's soma signal: the noiseless mean over its soma
    pixels, smoothed alike. The value is the largest correlation over lags of
    up to ``max_lag`` frames (``1/T' sum_t ref(t + l) pixel(t)``, as the CC
    analysis computes it).

    Returns
    -------
    rho : ndarray of float32, shape ``scene.cells[index].shape``
        In [-1, 1]; 0 where the pixel lies outside the canvas.
    """
    p = scene.params
    cell = scene.cells[index]
    wc = scene.canvas_shape[1]
    m = psf_margin(p)
    origin = (cell.origin[0] - m, cell.origin[1] - m)
    shape = (cell.shape[0] + 2 * m, cell.shape[1] + 2 * m)
    (cy, cx), (ly, lx) = clip_window(origin, shape, scene.canvas_shape)
    h, w = cy.stop - cy.start, cx.stop - cx.start
    rho = np.zeros(cell.shape, np.float32)
    if h <= 0 or w <= 0:
        return rho
    n_frames = p.n_frames
    flat = (np.arange(cy.start, cy.stop)[:, None] * wc + np.arange(cx.start, cx.stop)[None, :]).ravel()
    if "footprints_csc" not in scene._fft_cache:
        scene._fft_cache["footprints_csc"] = scene.footprints.tocsc()
    fp = scene._fft_cache["footprints_csc"][:, flat]
    rows = np.flatnonzero(np.diff(fp.tocsr().indptr))
    signal = np.zeros((n_frames, h * w), np.float32)
    if len(rows):
        sub = fp.tocsr()[rows]
        signal += np.asarray((sub.T @ scene.traces[:, rows].T).T, dtype=np.float32)
    if len(scene.neuropil_fields):
        signal += scene.neuropil_traces @ scene.neuropil_fields[:, flat]
    signal = signal.reshape(n_frames, h, w)
    times = scene.times
    for wave in scene.waves:
        (wy, wx), _ = clip_window(wave.origin, wave.footprint.shape, scene.canvas_shape)
        y0, y1 = max(wy.start, cy.start), min(wy.stop, cy.stop)
        x0, x1 = max(wx.start, cx.start), min(wx.stop, cx.stop)
        if y0 >= y1 or x0 >= x1:
            continue
        inside = np.flatnonzero((times >= wave.onset) & (times <= wave.end))
        if not len(inside):
            continue
        oy, ox = wave.origin
        fpw = wave.footprint[y0 - oy:y1 - oy, x0 - ox:x1 - ox]
        dl = wave.delay[y0 - oy:y1 - oy, x0 - ox:x1 - ox]
        # the kernel only where the wave's footprint is non-zero (often a small part of the window)
        rr, cc = np.nonzero(fpw)
        if not len(rr):
            continue
        block = fpw[rr, cc][None] * event_kernel(times[inside, None] - wave.onset - dl[rr, cc][None], wave.rise,
                                                 wave.decay)
        frames = slice(inside[0], inside[-1] + 1)
        signal[frames, rr + (y0 - cy.start), cc + (x0 - cx.start)] += block
    level = float(np.mean(scene.bleach))
    trans = scene.transmission[cy, cx]
    base = scene.baseline[cy, cx] * trans * level
    signal *= (trans * level)[None]
    if p.psf_sigma > 0:
        base = psf_blur(base, p)
        psf_blur(signal, p, output=signal)
    photons = np.maximum(base + signal.mean(axis=0), 0)
    noise_var = (photons + (p.read_noise / p.gain) ** 2 + 1.0 / (12 * p.gain**2)) / smooth_frames
    # moving average over full windows only (in place: memory stays ~2 copies), then centre
    k = max(1, min(int(smooth_frames), n_frames))
    flat_signal = signal.reshape(n_frames, -1)
    n = n_frames - k + 1
    smooth = flat_signal[:n].copy()
    for j in range(1, k):
        smooth += flat_signal[j:j + n]
    del signal, flat_signal
    smooth /= k
    smooth -= smooth.mean(axis=0, keepdims=True)
    # references: the cell's soma signal and each process's signal (mean over
    # their pixels); a pixel follows the cell when it follows any of them (the
    # CC analysis takes the best soma or process pixel)
    corr = np.full(h * w, -1.0, np.float32)
    lags = range(-min(max_lag, n - 1), min(max_lag, n - 1) + 1)
    var_pix = np.einsum("ij,ij->j", smooth, smooth) / n + noise_var.ravel()
    proc_lab, n_proc = ndi.label(cell.process_mask, structure=np.ones((3, 3), bool))
    refs = [cell.soma_mask] + [proc_lab == k for k in range(1, n_proc + 1)]
    for mask in refs:
        grid = np.zeros(shape, bool)
        grid[m:m + cell.shape[0], m:m + cell.shape[1]] = mask
        sel = grid[ly, lx].ravel()
        if not sel.any():
            continue
        ref = smooth[:, sel].mean(axis=1)
        var_ref = float(np.mean(ref.astype(np.float64) ** 2))
        if var_ref <= 0:
            continue
        shifted = np.zeros((len(lags), n), np.float32)
        for j, lag in enumerate(lags):  # cov_l = 1/T' sum_t ref(t + l) pixel(t)
            if lag >= 0:
                shifted[j, :n - lag] = ref[lag:]
            else:
                shifted[j, -lag:] = ref[:n + lag]
        cov = (shifted @ smooth).max(axis=0) / n
        np.maximum(corr, (cov / np.sqrt(var_ref * var_pix)).astype(np.float32), out=corr)
    corr = corr.reshape(h, w)
    full = np.zeros(shape, np.float32)
    full[ly, lx] = corr
    rho[:] = full[m:m + cell.shape[0], m:m + cell.shape[1]]
    return rho


def _gt_traces(scene: Scene, soma_c: np.ndarray, proc_c: np.ndarray, n: int) -> np.ndarray:
    """Noiseless dF/F per GT cell over its soma+process pixels (FOV part only)."""
    n_frames = scene.params.n_frames
    if n == 0:
        return np.zeros((n_frames, 0), np.float32)
    fov_only = np.zeros(scene.canvas_shape, bool)
    fov_only[scene.fov] = True
    labels = np.where(fov_only, np.maximum(soma_c, proc_c), 0).ravel()
    pix = np.flatnonzero(labels)
    mask = sp.csc_matrix((np.ones(len(pix), np.float32), (pix, labels[pix].astype(np.int64) - 1)),
                         shape=(labels.size, n))
    f0 = np.asarray(mask.T @ scene.baseline.ravel()).ravel()
    delta = scene.traces @ np.asarray((scene.footprints @ mask).todense(), dtype=np.float32)
    if len(scene.neuropil_fields):
        delta += scene.neuropil_traces @ (scene.neuropil_fields @ mask)
    times = scene.times
    label_img = labels.reshape(scene.canvas_shape)
    for wave in scene.waves:
        inside = np.flatnonzero((times >= wave.onset) & (times <= wave.end))
        if not len(inside):
            continue
        (cy, cx), (ly, lx) = clip_window(wave.origin, wave.footprint.shape, scene.canvas_shape)
        lab = label_img[cy, cx]
        sel = lab > 0
        if not sel.any():
            continue
        block = _wave_block(wave, times[inside])[:, ly, lx][:, sel]  # (tw, npix)
        ids = lab[sel].astype(np.int64) - 1
        onehot = sp.csr_matrix((np.ones(len(ids), np.float32), (np.arange(len(ids)), ids)),
                               shape=(len(ids), n))
        delta[inside] += np.asarray((onehot.T @ block.T).T, dtype=np.float32)
    return (delta / np.maximum(f0, 1e-6)[None]).astype(np.float32)
