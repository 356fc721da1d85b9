"""A cross-check scene: 3-D cells and distractors placed, projected, truth drawn, activity drawn.

:func:`build_scene` returns a :class:`Scene`: a static resting image, a list of
spatial components (patches) with one dF/F-weighted time course each, the
vessels' modulation, the motion path and the truth. :mod:`astro3s.crosscheck.render`
turns it into a movie.

Random streams (``np.random.default_rng([seed, k])``): 1 parameters, 2 placement
and morphology, 3 gliapil haze, 4 tissue and neuropil, 5 activity, 6 motion,
7 detection noise. Each part draws from its own stream, so changing one part
leaves the others' draws unchanged.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from astro3s.crosscheck import activity
from astro3s.crosscheck.cells3d import (
    Astrocyte,
    draw_soma,
    grow_tree,
    project_haze,
    project_soma,
    project_tree,
)
from astro3s.crosscheck.distractors import (
    Neuron,
    Patch,
    Vessel,
    bouton_groups,
    draw_neuron,
    draw_vessel,
    neuron_patch,
    tissue_background,
)
from astro3s.crosscheck.members import MovieParams
from astro3s.crosscheck.optics import blur, lateral_kernel
from astro3s.crosscheck.truth import CellTruth, assemble_truth, process_contrast, rasterise, traced_polylines

#: faintest process an annotator still traces: :func:`~astro3s.crosscheck.truth.process_contrast` over
#: the peak of the cell's own soma in the (blurred) projection
TRACE_CONTRAST = 0.12
#: path-distance bands of a cell's processes and haze (events reach them with increasing delays)
N_BANDS = 5
#: median area of the half-maximum cross-section of an in-focus soma over its ellipsoid's pi a b
#: (measured on this family: 0.68-0.88 by member): somata are drawn 1 / SECTION_FRACTION larger
#: so that the truth somata, what the annotators see, fall in the member's soma-area range
SECTION_FRACTION = 0.78


@dataclass
class Scene:
    """Everything needed to render a movie and its truth.

    Attributes
    ----------
    params : MovieParams
    margin : int
        The FOV is canvas rows/columns ``margin .. margin + H - 1`` / ``+ W - 1``.
    canvas : (int, int)
    kernel : ndarray of float64, shape (k, k)
        Lateral PSF.
    static : ndarray of float32, shape canvas
        Resting fluorescence of everything (before the lateral PSF).
    patches : list of Patch
        Spatial components (resting maps of the compartments that change).
    traces : ndarray of float32, shape (T, K)
        dF/F of each component (one column per patch).
    vessel_depth : ndarray of float32, shape canvas, or None
        Fraction of fluorescence the vessels remove at rest.
    vessel_trace : ndarray of float32, shape (T,), or None
        Relative pulsation of the vessels' darkening.
    shifts : ndarray of float64, shape (T, 2)
        (dy, dx) translation of each frame, px, mean zero.
    soma, processes, processes_thin : ndarray of uint16, shape (H, W)
        Truth labels 1..n.
    cells : list of Astrocyte
        Truth cell k is ``cells[k - 1]`` (canvas coordinates).
    objects : dict
        FOV (x, y, z) positions: ``true``, ``out_of_focus``, ``neurons``, ``cut`` (not truth).
    distractors : dict of int
        Counts by kind.
    """

    params: MovieParams
    margin: int
    canvas: tuple[int, int]
    kernel: np.ndarray
    static: np.ndarray
    patches: list[Patch]
    traces: np.ndarray
    vessel_depth: np.ndarray | None
    vessel_trace: np.ndarray | None
    shifts: np.ndarray
    soma: np.ndarray
    processes: np.ndarray
    processes_thin: np.ndarray
    cells: list[Astrocyte]
    objects: dict = field(default_factory=dict)
    distractors: dict = field(default_factory=dict)

    @property
    def n_cells(self) -> int:
        """Number of truth cells."""
        return len(self.cells)


def _rngs(seed: int) -> dict[str, np.random.Generator]:
    """The scene's independent random streams (see the module docstring)."""
    names = ("geometry", "haze", "tissue", "activity", "motion")
    return {name: np.random.default_rng([seed, k]) for k, name in enumerate(names, start=2)}


def _frame_layout(p: MovieParams) -> tuple[int, tuple[int, int], np.ndarray]:
    """Margin, canvas shape (FFT-friendly) and lateral PSF kernel."""
    import scipy.fft

    radius = int(np.clip(np.ceil(max(4 * p.psf_sigma, 4 * p.psf_gamma)), 5, 16))
    kernel = lateral_kernel(p.psf_sigma, p.psf_tail, p.psf_gamma, radius)
    margin = radius + int(np.ceil(p.drift_px + p.breath_px + p.line_offset_px)) + 3
    canvas = (scipy.fft.next_fast_len(p.height + 2 * margin, real=True),
              scipy.fft.next_fast_len(p.width + 2 * margin, real=True))
    return margin, canvas, kernel


# ---------------------------------------------------------------------------- placement


@dataclass
class _Slot:
    centre: np.ndarray  # (3,)
    area: float
    territory: float
    in_focus: bool


def _fits(c: np.ndarray, territory: float, slots: list[_Slot], vessels: list[Vessel], r_soma: float) -> bool:
    """Whether an astrocyte centred at ``c`` tiles with the placed ones and keeps its soma off the vessels."""
    for s in slots:
        if np.linalg.norm(c - s.centre) < 0.75 * (territory + s.territory):
            return False
    ix, iy = int(np.clip(round(c[0]), 0, 10 ** 6)), int(np.clip(round(c[1]), 0, 10 ** 6))
    for v in vessels:
        if iy < v.distance.shape[0] and ix < v.distance.shape[1] and v.distance[iy, ix] < v.width / 2 + r_soma + 1:
            return False
    return True


def place_astrocytes(rng: np.random.Generator, p: MovieParams, canvas: tuple[int, int], margin: int,
                     vessels: list[Vessel]) -> list[_Slot]:
    """Soma centres of the in-focus (truth candidates) and out-of-focus astrocytes.

    Territories (3-4 soma radii) tile: centres are at least 0.75 x the sum of
    the two territory radii apart in 3-D. In-focus somata sit within 0.5 axial
    FWHM of the plane, laterally in the FOV (up to 0.3 radius past its border);
    out-of-focus ones 1.5-3 FWHM above or below it, anywhere on the canvas.
    Requests that find no room after 300 tries are dropped.
    """
    slots: list[_Slot] = []
    for in_focus, count in ((True, p.n_true), (False, p.n_out_of_focus)):
        for _ in range(count):
            area = float(rng.uniform(*p.soma_area))
            r = np.sqrt(area / np.pi)
            territory = float(rng.uniform(3.0, 4.0) * r)
            for _try in range(300):
                if in_focus:
                    xy = margin - 0.3 * r + rng.uniform(0, 1, 2) * (np.array([p.width, p.height]) + 0.6 * r)
                    z = rng.uniform(-0.5, 0.5) * p.fwhm_z
                else:
                    xy = rng.uniform(0, 1, 2) * np.array([canvas[1], canvas[0]])
                    z = rng.choice([-1, 1]) * rng.uniform(1.5, 3.0) * p.fwhm_z
                c = np.array([xy[0], xy[1], z])
                if _fits(c, territory, slots, vessels, r):
                    slots.append(_Slot(c, area, territory, in_focus))
                    break
    return slots


# ---------------------------------------------------------------------------- astrocytes


@dataclass
class _AstroMaps:
    cell: Astrocyte
    box: tuple[int, int, int, int]
    soma: np.ndarray  # float32 (h, w), resting, x brightness
    bands: np.ndarray  # float32 (B, h, w)
    band_dist: np.ndarray  # (B,) path distance of each band, px
    d_max: float
    microdomains: list[Patch]
    truth: CellTruth | None


def _cell_box(cell: Astrocyte, pad: float) -> tuple[int, int, int, int]:
    """Square canvas box (y0, x0, h, w) holding the cell's tree and territory plus ``pad`` px."""
    rel = cell.tree.xyz[:, :2] - cell.soma.centre[:2]
    ext = max(cell.territory, float(np.abs(rel).max() + 2 * cell.tree.radius.max())) + pad
    x0, y0 = int(np.floor(cell.soma.centre[0] - ext)), int(np.floor(cell.soma.centre[1] - ext))
    side = int(np.ceil(2 * ext)) + 2
    return (y0, x0, side, side)


def _band_maps(rng_haze: np.random.Generator, cell: Astrocyte, box, p: MovieParams) -> tuple:
    """Process + haze maps in path-distance bands, band distances and the tree's extent."""
    d_max = float(cell.tree.dist.max())
    step = max(3.0, d_max / N_BANDS)
    edges = np.concatenate([step * np.arange(N_BANDS), [np.inf]])
    bands = project_tree(cell.tree, box, p.fwhm_z, edges, p.process_gain, cell.soma,
                         p.sheath_um2 / p.um_per_px ** 2)
    haze = project_haze(rng_haze, cell.soma, cell.territory, box, p.fwhm_z, p.haze_density)
    y0, x0, h, w = box
    rows, cols = np.mgrid[y0:y0 + h, x0:x0 + w]
    lateral = np.hypot(cols - cell.soma.centre[0], rows - cell.soma.centre[1]) - cell.soma.lateral_radius
    which = np.clip((lateral // step).astype(int), 0, N_BANDS - 1)
    for b in range(N_BANDS):
        bands[b] += np.where(which == b, haze, 0.0)
    return bands, step * (np.arange(N_BANDS) + 0.5), d_max


def _microdomains(rng: np.random.Generator, nonsoma: np.ndarray, box, cell: Astrocyte,
                  p: MovieParams) -> list[Patch]:
    """Small patches (2-6 um) of a cell's processes and haze that flash on their own."""
    diam = float(np.clip(rng.uniform(2.0, 6.0) / p.um_per_px, 3.0, 40.0))
    n = int(np.clip(round((cell.territory / (1.5 * diam)) ** 2), 4, 30))
    weight = np.sqrt(np.clip(nonsoma, 0, None)).ravel()
    if weight.sum() <= 0:
        return []
    picks = rng.choice(weight.size, size=n, replace=False, p=weight / weight.sum()) if n < weight.size else []
    sigma = diam / 2.5
    half = int(np.ceil(3 * sigma))
    out = []
    h, w = nonsoma.shape
    for flat in picks:
        r, c = divmod(int(flat), w)
        ra, rb, ca, cb = max(0, r - half), min(h, r + half + 1), max(0, c - half), min(w, c + half + 1)
        rr, cc = np.mgrid[ra:rb, ca:cb]
        window = np.exp(-((rr - r) ** 2 + (cc - c) ** 2) / (2 * sigma ** 2))
        out.append(Patch(box[0] + ra, box[1] + ca, (nonsoma[ra:rb, ca:cb] * window).astype(np.float32)))
    return out


def _soma_truth(cell: Astrocyte, soma_map: np.ndarray, box, kernel: np.ndarray, p: MovieParams) -> CellTruth:
    """Half-maximum soma cross-section and traced skeleton of an in-focus cell (box arrays)."""
    seen = blur(soma_map, kernel)
    mask = seen >= 0.5 * seen.max() if seen.max() > 0 else np.zeros(seen.shape, bool)
    # relative to the cell's own soma as it appears (annotators stretch the image to the somata)
    contrast = process_contrast(cell.tree, p.fwhm_z, p.process_gain, p.psf_sigma, p.sheath_um2 / p.um_per_px ** 2)
    visible = contrast >= TRACE_CONTRAST * seen.max()
    skeleton = rasterise(traced_polylines(cell.tree, p.fwhm_z, visible), box)
    return CellTruth(box=box, soma=mask, skeleton=skeleton,
                     centre=(float(cell.soma.centre[0]), float(cell.soma.centre[1])))


def draw_astrocyte(rngs: dict, p: MovieParams, slot: _Slot, kernel: np.ndarray) -> _AstroMaps:
    """Grow one astrocyte in 3-D, project it through the section and cut it into components."""
    rng = rngs["geometry"]
    soma = draw_soma(rng, slot.centre, slot.area / SECTION_FRACTION)
    tree = grow_tree(rng, soma, r0=rng.uniform(0.7, 1.2) / p.um_per_px,
                     spread=float(np.clip(p.elevation_spread * rng.uniform(0.8, 1.2), 0.05, 0.95)),
                     max_order=int(rng.integers(3, 5)), branch_rate=p.branch_rate)
    cell = Astrocyte(soma, tree, slot.territory, float(rng.uniform(0.4, 1.5)), slot.in_focus)
    box = _cell_box(cell, pad=3 * max(1.0, float(tree.radius.max())) + 3)
    soma_map = project_soma(soma, box, p.fwhm_z)
    bands, band_dist, d_max = _band_maps(rngs["haze"], cell, box, p)
    # the truth is the soma's cross-section whatever the indicator (annotators draw the whole soma)
    truth = _soma_truth(cell, soma_map, box, kernel, p) if slot.in_focus else None
    if p.membrane_shell > 0:  # a membrane-bound indicator: a rim as bright as a cytosolic soma's peak
        shell = project_soma(soma, box, p.fwhm_z, shell=p.membrane_shell)
        shell *= soma_map.max() / max(float(shell.max()), 1e-9)
        soma_map = ((1.0 - p.membrane_volume) * shell + p.membrane_volume * soma_map).astype(np.float32)
    soma_map *= cell.brightness
    bands *= cell.brightness
    mds = _microdomains(rng, bands.sum(0), box, cell, p)
    return _AstroMaps(cell, box, soma_map, bands, band_dist, d_max, mds, truth)


# ---------------------------------------------------------------------------- other objects


def _neuron_fits(c: np.ndarray, r: float, slots: list[_Slot], neurons: list[Neuron], vessels: list[Vessel],
                 truth_any: np.ndarray, margin: int) -> bool:
    """Whether a neuron at ``c`` stays clear of astrocyte somata, other neurons, vessels and the truth."""
    for s in slots:
        if np.linalg.norm(c - s.centre) < np.sqrt(s.area / np.pi) * 1.3 + r + 1:
            return False
    for nb in neurons:
        if np.linalg.norm(c - nb.centre) < r + nb.radius + 1:
            return False
    ix, iy = int(round(c[0])), int(round(c[1]))
    for v in vessels:
        if 0 <= iy < v.distance.shape[0] and 0 <= ix < v.distance.shape[1] and v.distance[iy, ix] < v.width / 2 + r:
            return False
    fy, fx = iy - margin, ix - margin
    rad = int(max(2, r / 2))
    window = truth_any[max(0, fy - rad):fy + rad + 1, max(0, fx - rad):fx + rad + 1]
    return not window.any()


def place_neurons(rng: np.random.Generator, p: MovieParams, canvas, margin: int, slots: list[_Slot],
                  vessels: list[Vessel], truth_any: np.ndarray) -> list[Neuron]:
    """Neurons within 1.5 axial FWHM of the plane, clear of astrocyte somata, vessels and the truth."""
    neurons: list[Neuron] = []
    for _ in range(p.n_neurons):
        for _try in range(200):
            c = np.array([rng.uniform(0, canvas[1]), rng.uniform(0, canvas[0]), rng.uniform(-1.5, 1.5) * p.fwhm_z])
            nb = draw_neuron(rng, c, p.um_per_px)
            if _neuron_fits(c, nb.radius, slots, neurons, vessels, truth_any, margin):
                neurons.append(nb)
                break
    return neurons


def _motion(rng: np.random.Generator, p: MovieParams) -> np.ndarray:
    """(T, 2) (dy, dx): a slow drift of ``drift_px`` in all plus breathing, mean zero."""
    t = np.arange(p.n_frames) / p.fs
    u = t / max(t[-1], 1e-9)
    heading = rng.uniform(0, 2 * np.pi)
    wander = activity.slow_traces(rng, 2, p.n_frames, p.fs, 0.02, 0.15 * p.drift_px + 1e-6).T.astype(float)
    drift = p.drift_px * (u - 0.5)[:, None] * np.array([np.sin(heading), np.cos(heading)]) + wander
    axis = rng.normal(np.pi / 2, 0.3)  # breathing moves mostly along y
    breath = p.breath_px * np.sin(2 * np.pi * p.breath_hz * t + rng.uniform(0, 2 * np.pi))
    shifts = drift + breath[:, None] * np.array([np.sin(axis), np.cos(axis)])
    return shifts - shifts.mean(0)


# ---------------------------------------------------------------------------- activity


def _astro_components(rng: np.random.Generator, p: MovieParams, maps: _AstroMaps, t: np.ndarray,
                      silent: bool) -> tuple[list[Patch], np.ndarray]:
    """The patches of one astrocyte and their (K, T) dF/F traces."""
    y0, x0 = maps.box[:2]
    patches = [Patch(y0, x0, maps.soma)] + [Patch(y0, x0, b) for b in maps.bands]
    kin = activity.CellKinetics(rate=0.0 if silent else rng.uniform(*p.event_rate), amp=p.event_amp,
                                rise=rng.uniform(*p.rise_s), decay=rng.uniform(*p.decay_s), speed=p.speed_px_s)
    dist = np.concatenate([[0.0], maps.band_dist])
    traces = [activity.cell_traces(rng, t, dist, kin, maps.d_max)]
    n_md = len(maps.microdomains)
    if n_md:
        rates = p.md_rate * rng.uniform(0.5, 1.5, n_md) * (0.15 if silent else 1.0)
        traces.append(activity.spike_traces(rng, t, rates, rng.uniform(0.4, 1.2), rng.uniform(0.1, 0.3),
                                            rng.uniform(*p.md_decay_s, n_md)))
        patches += maps.microdomains
    return patches, np.concatenate(traces)


def _distractor_components(rng: np.random.Generator, p: MovieParams, t: np.ndarray, neurons: list[Patch],
                           boutons: list[Patch], slow: list[Patch]) -> np.ndarray:
    """(K, T) dF/F traces of neurons, bouton groups and slow neuropil modes (in that order)."""
    parts = []
    if neurons:
        n = len(neurons)
        parts.append(activity.spike_traces(rng, t, p.neuron_rate * rng.uniform(0.5, 1.5, n), rng.uniform(0.6, 2.0),
                                           rng.uniform(0.05, 0.1), rng.uniform(0.3, 1.0, n)))
    if boutons:
        n = len(boutons)
        parts.append(activity.spike_traces(rng, t, p.bouton_rate * rng.uniform(0.5, 1.5, n), p.bouton_amp, 0.03,
                                           rng.uniform(0.1, 0.4, n)))
    if slow:
        parts.append(activity.slow_traces(rng, len(slow), t.size, p.fs, rng.uniform(0.02, 0.1),
                                          rng.uniform(0.05, 0.15)))
    return np.concatenate(parts) if parts else np.zeros((0, t.size), np.float32)


def _slow_modes(rng: np.random.Generator, tissue: np.ndarray, um_per_px: float) -> list[Patch]:
    """Three smooth positive maps (10-30 um) over the smoothed tissue that fluctuate slowly (neuropil)."""
    from scipy.ndimage import gaussian_filter

    out = []
    tissue = gaussian_filter(tissue, 2.0 / um_per_px)
    for _ in range(3):
        f = gaussian_filter(rng.normal(size=tissue.shape), rng.uniform(10, 30) / um_per_px, mode="wrap")
        f = np.clip(0.5 + 0.5 * f / max(f.std(), 1e-12), 0, None)
        out.append(Patch(0, 0, (tissue * f).astype(np.float32)))
    return out


def _paste(canvas: np.ndarray, patch: Patch) -> None:
    """Add ``patch`` to ``canvas`` in place (the part inside it)."""
    h, w = patch.data.shape
    ya, xa = max(0, patch.y0), max(0, patch.x0)
    yb, xb = min(canvas.shape[0], patch.y0 + h), min(canvas.shape[1], patch.x0 + w)
    if yb > ya and xb > xa:
        canvas[ya:yb, xa:xb] += patch.data[ya - patch.y0:yb - patch.y0, xa - patch.x0:xb - patch.x0]


# ---------------------------------------------------------------------------- the scene


def _fov_xyz(c: np.ndarray, margin: int) -> list[float]:
    """Canvas (x, y, z) -> FOV (x, y, z)."""
    return [float(c[0] - margin), float(c[1] - margin), float(c[2])]


def _components(rngs: dict, p: MovieParams, t: np.ndarray, astros: list[_AstroMaps], extra: list[Patch],
                canvas: tuple[int, int]) -> tuple[np.ndarray, list[Patch], np.ndarray]:
    """Resting image, patches and (T, K) traces of the astrocytes, neurons, boutons and neuropil."""
    neurons, boutons = extra
    tissue = tissue_background(rngs["tissue"], canvas, p.background, p.um_per_px)
    slow = _slow_modes(rngs["tissue"], tissue, p.um_per_px)
    static = tissue.copy()
    patches: list[Patch] = []
    traces = []
    silent = rngs["activity"].random(len(astros)) < p.silent_frac
    for a, quiet in zip(astros, silent):
        _paste(static, Patch(a.box[0], a.box[1], a.soma))
        _paste(static, Patch(a.box[0], a.box[1], a.bands.sum(0)))
        comp, tr = _astro_components(rngs["activity"], p, a, t, bool(quiet))
        patches += comp
        traces.append(tr)
    for patch in neurons + boutons:
        _paste(static, patch)
    patches += neurons + boutons + slow
    traces.append(_distractor_components(rngs["activity"], p, t, neurons, boutons, slow))
    return static, patches, np.concatenate(traces).T.copy()


def build_scene(p: MovieParams) -> Scene:
    """Draw a whole scene for ``p`` (deterministic in ``p.seed``).

    Returns
    -------
    scene : Scene
    """
    rngs = _rngs(p.seed)
    margin, canvas, kernel = _frame_layout(p)
    t = np.arange(p.n_frames) / p.fs
    vessels = [draw_vessel(rngs["geometry"], canvas, p.um_per_px) for _ in range(p.n_vessels)]
    slots = place_astrocytes(rngs["geometry"], p, canvas, margin, vessels)
    astros = [draw_astrocyte(rngs, p, s, kernel) for s in slots]
    candidates = [a for a in astros if a.truth is not None]
    soma, proc, thin, kept = assemble_truth([a.truth for a in candidates], canvas, margin, (p.height, p.width))
    neurons = place_neurons(rngs["geometry"], p, canvas, margin, slots, vessels, (soma > 0) | (proc > 0))
    neuron_patches = [neuron_patch(nb, p.fwhm_z, p.neuron_brightness * rngs["geometry"].uniform(0.6, 1.4))
                      for nb in neurons]
    boutons = bouton_groups(rngs["tissue"], canvas, p.bouton_density, p.fwhm_z, p.bouton_brightness, p.um_per_px)
    static, patches, traces = _components(rngs, p, t, astros, [neuron_patches, boutons], canvas)
    v_depth, v_trace = _vessel_modulation(rngs["activity"], vessels, t)
    cut = [i for i in range(len(candidates)) if i not in kept]
    objects = {"true": [_fov_xyz(candidates[i].cell.soma.centre, margin) for i in kept],
               "cut": [_fov_xyz(candidates[i].cell.soma.centre, margin) for i in cut],
               "out_of_focus": [_fov_xyz(a.cell.soma.centre, margin) for a in astros if not a.cell.in_focus],
               "neurons": [_fov_xyz(nb.centre, margin) for nb in neurons]}
    distractors = {"out_of_focus_astrocytes": len(objects["out_of_focus"]), "neurons": len(neurons),
                   "vessels": len(vessels), "bouton_axons": len(boutons), "cut_cells": len(cut)}
    return Scene(params=p, margin=margin, canvas=canvas, kernel=kernel, static=static, patches=patches,
                 traces=traces, vessel_depth=v_depth, vessel_trace=v_trace, shifts=_motion(rngs["motion"], p),
                 soma=soma, processes=proc, processes_thin=thin, cells=[candidates[i].cell for i in kept],
                 objects=objects, distractors=distractors)


def _vessel_modulation(rng: np.random.Generator, vessels: list[Vessel], t: np.ndarray):
    """Summed darkening of the vessels and its slow pulsation (vasomotion, 2-8 %)."""
    if not vessels:
        return None, None
    depth = np.clip(np.sum([v.depth for v in vessels], axis=0), 0.0, 0.95).astype(np.float32)
    pulse = rng.uniform(0.02, 0.08) * np.sin(2 * np.pi * rng.uniform(0.05, 0.2) * t + rng.uniform(0, 2 * np.pi))
    return depth, pulse.astype(np.float32)
