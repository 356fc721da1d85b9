"""The scene of one held-out movie: objects as footprints x traces, and the labels.

Everything is laid out on a *canvas*: the FOV plus a ``margin`` on each side
that rigid motion can bring into view. Every object contributes

- a static footprint (its resting fluorescence), summed into one image, and
- a few dynamic footprints with one trace each (``dF/F`` times the resting
  footprint), kept in a small patch around the object.

Footprints are blurred by the PSF here, once; :mod:`.render` only multiplies
traces by footprints. Labels are painted in FOV coordinates for the true
astrocytes only (soma centre inside the FOV).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from astro3s.heldout.activity import bleach_curve, event_trace, sample_events, slow_fluctuation
from astro3s.heldout.distractors import blob_footprint, endfoot_mask, neuron_footprint, trace_vessel
from astro3s.heldout.members import MEMBERS, MovieParams, rng_for
from astro3s.heldout.morphology import AstrocyteShape, build_astrocyte, membrane_labelled
from astro3s.heldout.optics import (
    PSF,
    Detector,
    blur_stack,
    defocus_kernel,
    pink_field,
    psf_kernel,
    random_walk_shifts,
)

__all__ = ["Patch", "Scene", "build_scene"]

#: Canvas margin (px) around the FOV; the motion is clipped to ``MARGIN - 2``.
MARGIN = 5
N_BANDS = 4


@dataclass(frozen=True)
class Patch:
    """Dynamic footprints of one object, on a rectangle of the canvas.

    Attributes
    ----------
    rows, cols : slice
        Where the footprints sit on the canvas.
    footprints : ndarray of float32, shape (K, h, w)
    traces : ndarray of float32, shape (K, T)
    """

    rows: slice
    cols: slice
    footprints: np.ndarray
    traces: np.ndarray


@dataclass
class Scene:
    """Everything :func:`~astro3s.heldout.render.render_movie` needs, plus the labels.

    Attributes
    ----------
    params : MovieParams
    margin : int
    static : ndarray of float32, shape (Hc, Wc)
        Resting fluorescence of all objects (canvas, ``Hc = H + 2 margin``).
    patches : list of Patch
    fields : ndarray of float32, shape (F, Hc, Wc)
        Neuropil background fields.
    field_traces : ndarray of float32, shape (F, T)
    transmission : ndarray of float32, shape (Hc, Wc)
        Multiplicative map: vessel lumens and vignetting.
    bleach : ndarray of float32, shape (T,)
    shifts : ndarray of float64, shape (T, 2)
        Rigid motion ``(dy, dx)`` per frame.
    detector : Detector
    soma, processes, thin : ndarray of uint16, shape (H, W)
        Ground-truth labels (ids 1..N shared by the three).
    cells : list of dict
        One record per labelled cell.
    distractors : dict of str to int
        ``out_of_focus``, ``blobs``, ``neurons``, ``vessels`` actually placed.
    objects : list of dict
        ``kind`` and ``centre`` (FOV coordinates) of every unlabelled object.
    """

    params: MovieParams
    margin: int
    static: np.ndarray
    patches: list[Patch]
    fields: np.ndarray
    field_traces: np.ndarray
    transmission: np.ndarray
    bleach: np.ndarray
    shifts: np.ndarray
    detector: Detector
    soma: np.ndarray
    processes: np.ndarray
    thin: np.ndarray
    cells: list[dict] = field(default_factory=list)
    distractors: dict = field(default_factory=dict)
    objects: list[dict] = field(default_factory=list)


# --------------------------------------------------------------------------- geometry helpers


def _overlap(y0: int, x0: int, h: int, w: int, shape: tuple[int, int]) -> tuple[slice, slice, slice, slice] | None:
    """Slices of a ``(h, w)`` rectangle at ``(y0, x0)`` that fall inside ``shape``.

    Returns ``(rows, cols, patch_rows, patch_cols)`` or None when disjoint.
    """
    ys, ye = max(y0, 0), min(y0 + h, shape[0])
    xs, xe = max(x0, 0), min(x0 + w, shape[1])
    if ys >= ye or xs >= xe:
        return None
    return slice(ys, ye), slice(xs, xe), slice(ys - y0, ye - y0), slice(xs - x0, xe - x0)


def _split_centre(centre: tuple[float, float]) -> tuple[tuple[int, int], tuple[float, float]]:
    """Integer pixel and sub-pixel offset of a centre."""
    iy, ix = int(np.rint(centre[0])), int(np.rint(centre[1]))
    return (iy, ix), (float(centre[0] - iy), float(centre[1] - ix))


def _pick_position(candidates: np.ndarray, radius: float, taken: np.ndarray, *, spacing: float,
                   clearance: np.ndarray | None, margin: int) -> np.ndarray | None:
    """First candidate far enough from placed objects and from vessels.

    Parameters
    ----------
    candidates : ndarray of float64, shape (n, 2)
        FOV coordinates to try, in order.
    radius : float
        Radius of the new object (px).
    taken : ndarray of float64, shape (m, 3)
        ``(y, x, radius)`` of objects to keep away from.
    spacing : float
        Required centre distance in units of the sum of radii.
    clearance : ndarray of float32, shape (Hc, Wc), optional
        Distance of canvas pixels to the nearest vessel wall (inf without vessels).
    margin : int
        Canvas margin (FOV -> canvas offset).
    """
    ok = np.ones(candidates.shape[0], dtype=bool)
    if taken.size:
        d = np.hypot(candidates[:, None, 0] - taken[None, :, 0], candidates[:, None, 1] - taken[None, :, 1])
        ok &= (d >= spacing * (radius + taken[None, :, 2])).all(axis=1)
    if clearance is not None:
        ij = np.clip(np.rint(candidates).astype(np.int64) + margin, 0, np.array(clearance.shape) - 1)
        ok &= clearance[ij[:, 0], ij[:, 1]] > radius + 2.0
    hit = np.flatnonzero(ok)
    return candidates[hit[0]] if hit.size else None


def _inside_candidates(rng: np.random.Generator, n: int, shape: tuple[int, int], border: float) -> np.ndarray:
    """Uniform positions at least ``border`` px inside the FOV, float64 (n, 2)."""
    lo = min(border, shape[0] / 2 - 1), min(border, shape[1] / 2 - 1)
    return np.stack([rng.uniform(lo[0], shape[0] - 1 - lo[0], n), rng.uniform(lo[1], shape[1] - 1 - lo[1], n)], 1)


def _edge_candidates(rng: np.random.Generator, n: int, shape: tuple[int, int], depth: tuple[float, float],
                     along: float) -> np.ndarray:
    """Positions at a signed distance ``depth`` from a random FOV edge (negative = outside).

    ``along`` keeps the other coordinate that far from the corners. float64 (n, 2).
    """
    edge = rng.integers(0, 4, n)
    d = rng.uniform(depth[0], depth[1], n)
    pos = np.stack([rng.uniform(along, shape[0] - 1 - along, n), rng.uniform(along, shape[1] - 1 - along, n)], 1)
    pos[edge == 0, 0] = d[edge == 0]
    pos[edge == 1, 0] = shape[0] - 1 - d[edge == 1]
    pos[edge == 2, 1] = d[edge == 2]
    pos[edge == 3, 1] = shape[1] - 1 - d[edge == 3]
    return pos


# --------------------------------------------------------------------------- object builders


class _Canvas:
    """Accumulates static fluorescence and dynamic patches on the canvas."""

    def __init__(self, shape: tuple[int, int], *, label_rng: np.random.Generator | None = None):
        self.shape = shape
        self.static = np.zeros(shape, dtype=np.float32)
        self.patches: list[Patch] = []
        #: the stream of a membrane-labelled movie's astrocytes (None: a cytosolic indicator, nothing drawn)
        self.label_rng = label_rng

    def add(self, top_left: tuple[int, int], static: np.ndarray | None, dynamic: np.ndarray,
            traces: np.ndarray) -> None:
        """Add an object whose footprints ((h, w) and (K, h, w)) start at canvas ``top_left``."""
        h, w = dynamic.shape[1:]
        cut = _overlap(top_left[0], top_left[1], h, w, self.shape)
        if cut is None:
            return
        rows, cols, pr, pc = cut
        if static is not None:
            self.static[rows, cols] += static[pr, pc]
        if dynamic.shape[0]:
            self.patches.append(Patch(rows, cols, np.ascontiguousarray(dynamic[:, pr, pc]),
                                      np.ascontiguousarray(traces, dtype=np.float32)))


def _astro_footprints(rng: np.random.Generator, cell: AstrocyteShape, *,
                      brightness: float, rest_scale: float = 1.0) -> tuple[np.ndarray, np.ndarray, int]:
    """Resting footprint and dynamic footprints of an astrocyte (before the PSF).

    ``rest_scale`` dims the resting footprint only: the events of a cell dim at
    rest are as bright, in photons, as those of the others (a large dF/F).

    Returns ``static (h, w)``, ``dynamic (1 + N_BANDS + 1 + M, h, w)`` float32 in
    the order soma, bands, far territory, microdomains, and ``M``.
    """
    rest = brightness * (cell.soma_soft + cell.processes)
    proc = brightness * cell.processes
    bands = (cell.band[None] == np.arange(N_BANDS)[:, None, None]) * proc[None]
    far = proc * (cell.band < 0)
    yy, xx = np.mgrid[: cell.shape[0], : cell.shape[1]].astype(np.float32)
    mc = cell.micro_centres
    r0 = np.sqrt(cell.soma_area / np.pi)
    sig = rng.uniform(1.0, 2.0, mc.shape[0]) * max(1.0, np.sqrt(r0 / 8.0))
    spots = np.exp(-0.5 * ((yy[None] - mc[:, 0, None, None]) ** 2 + (xx[None] - mc[:, 1, None, None]) ** 2)
                   / sig[:, None, None] ** 2) * rest[None]
    dynamic = np.concatenate([brightness * cell.soma_soft[None], bands, far[None], spots]).astype(np.float32)
    return (rest_scale * rest).astype(np.float32), dynamic, int(mc.shape[0])


def _astro_traces(rng: np.random.Generator, cell: AstrocyteShape, t: np.ndarray, *, n_micro: int) -> np.ndarray:
    """Traces (dF/F) of an active astrocyte, float32 (1 + N_BANDS + 1 + n_micro, T).

    Soma events propagate outward band by band with a delay set by a wave
    speed of 1-3 soma radii per second, up to a per-event extent, attenuating
    on the way; microdomains have their own, faster, process-only events.
    """
    duration = float(t[-1] - t[0]) + (float(t[1] - t[0]) if t.size > 1 else 1.0)
    r0 = np.sqrt(cell.soma_area / np.pi)
    soma_ev = sample_events(rng, duration=duration, rate_per_min=rng.uniform(0.5, 3.0), amp=(0.4, 3.0),
                            rise=(0.3, 2.0), decay=(1.0, 8.0), min_events=1)
    speed = rng.uniform(1.0, 3.0) * r0
    extent = rng.uniform(0.3, 1.3, soma_ev.n) * cell.band_dist.max()
    rows = [event_trace(soma_ev, t)]
    for b, dist in enumerate(cell.band_dist):  # a few bands
        reach = extent >= dist
        gain = rng.uniform(0.6, 1.0, soma_ev.n) * (1.0 - 0.3 * b / max(N_BANDS - 1, 1))
        rows.append(event_trace(soma_ev.subset(reach).delayed(dist / speed, gain=gain[reach]), t))
    far_reach = extent >= cell.band_dist[-1]
    rows.append(event_trace(soma_ev.subset(far_reach).delayed(cell.band_dist[-1] / speed + 0.5, gain=0.5), t))
    for _ in range(n_micro):  # a few microdomains per cell
        ev = sample_events(rng, duration=duration, rate_per_min=rng.uniform(1.0, 6.0), amp=(0.5, 2.5),
                           rise=(0.3, 1.0), decay=(1.0, 4.0))
        rows.append(event_trace(ev, t))
    return np.stack(rows).astype(np.float32)


def _add_astrocyte(canvas: _Canvas, rng_m: np.random.Generator, rng_a: np.random.Generator,
                   cell: AstrocyteShape, top: tuple[int, int], *, kernel: np.ndarray, brightness: float,
                   active: bool, t: np.ndarray, margin: int, rest_scale: float = 1.0) -> None:
    """Blur one drawn astrocyte, give it traces and add it to the canvas.

    ``top`` is the patch's top-left pixel in FOV coordinates; ``rest_scale``
    dims its resting fluorescence only (:func:`_astro_footprints`).
    """
    static, dynamic, n_micro = _astro_footprints(rng_m, cell, brightness=brightness, rest_scale=rest_scale)
    if not active:
        dynamic = dynamic[:0]
    blurred = blur_stack(np.concatenate([static[None], dynamic]), kernel)
    traces = _astro_traces(rng_a, cell, t, n_micro=n_micro) if active else np.zeros((0, t.size), np.float32)
    canvas.add((top[0] + margin, top[1] + margin), blurred[0], blurred[1:], traces)


def _place_astrocyte(canvas: _Canvas, rng_m: np.random.Generator, rng_a: np.random.Generator,
                     area: float, centre: np.ndarray, *, kernel: np.ndarray, brightness: float,
                     active: bool, t: np.ndarray, margin: int,
                     params: MovieParams | None = None,
                     rest_scale: float = 1.0) -> tuple[AstrocyteShape, tuple[int, int]]:
    """Draw, blur and add one astrocyte; return its shape and patch top-left in FOV coordinates.

    ``params`` gives the member's process reach and annotation (defaults of
    :func:`~astro3s.heldout.morphology.build_astrocyte` without it);
    ``rest_scale`` dims its resting fluorescence only (:func:`_astro_footprints`).
    """
    (iy, ix), offset = _split_centre(tuple(centre))
    shape_options = {} if params is None else {"reach_radii": params.process_reach,
                                               "annotation": params.annotation}
    cell = build_astrocyte(rng_m, area, offset=offset, pad=kernel.shape[0] // 2 + 1, n_bands=N_BANDS,
                           **shape_options)
    if canvas.label_rng is not None:  # a membrane-targeted indicator: every astrocyte of the movie looks so
        cell = membrane_labelled(cell, canvas.label_rng)
    half = (cell.shape[0] - 1) // 2
    top = (iy - half, ix - half)
    _add_astrocyte(canvas, rng_m, rng_a, cell, top, kernel=kernel, brightness=brightness, active=active, t=t,
                   margin=margin, rest_scale=rest_scale)
    return cell, top


def _dim_rest_scales(params: MovieParams, n_cells: int) -> np.ndarray:
    """Resting-brightness factor of each labelled cell: 1, or ``params.dim_rest`` for the dim ones.

    Drawn from a stream of its own, and only when ``params.dim_fraction > 0``,
    so that members without dim cells draw exactly what they drew before.
    """
    if params.dim_fraction <= 0 or n_cells == 0:
        return np.ones(n_cells)
    rng = rng_for(params.seed, "dim_cells")
    dim = rng.uniform(size=n_cells) < params.dim_fraction
    return np.where(dim, rng.uniform(*params.dim_rest, size=n_cells), 1.0)


def _paint(labels: np.ndarray, mask: np.ndarray, top: tuple[int, int], value: int, free: np.ndarray) -> int:
    """Write ``value`` where a patch ``mask`` lies on free FOV pixels; return pixels written."""
    cut = _overlap(top[0], top[1], mask.shape[0], mask.shape[1], labels.shape)
    if cut is None:
        return 0
    rows, cols, pr, pc = cut
    sel = mask[pr, pc] & free[rows, cols]
    labels[rows, cols][sel] = value
    return int(sel.sum())


# --------------------------------------------------------------------------- the scene


def _vessels(rng: np.random.Generator, params: MovieParams, canvas: _Canvas, t: np.ndarray, *,
             kernel: np.ndarray, margin: int) -> tuple[np.ndarray, np.ndarray, list[dict]]:
    """Vessels (lumen in the transmission map) with active endfeet on their walls.

    Returns ``transmission (Hc, Wc)``, ``clearance (Hc, Wc)`` (distance to the
    nearest wall, inf without vessels) and the object records.
    """
    _, H, W = params.shape
    trans = np.ones(canvas.shape, dtype=np.float32)
    clearance = np.full(canvas.shape, np.inf, dtype=np.float32)
    records = []
    fov = (margin, margin, margin + H, margin + W)
    duration = t.size / params.fs
    for _ in range(params.n_vessels):  # 1-3 vessels
        width = rng.uniform(5.0, max(6.0, min(25.0, 0.12 * min(H, W))))
        vessel = trace_vessel(rng, canvas.shape, width=width, fov=fov)
        trans *= 1.0 - rng.uniform(0.55, 0.85) * vessel.lumen()
        clearance = np.minimum(clearance, vessel.dist - vessel.half_width)
        lo, hi = vessel.arc_inside
        for _ in range(int(rng.integers(2, 6))):  # 2-5 endfeet per vessel
            length = rng.uniform(12.0, 50.0)
            start = rng.uniform(lo, max(lo, hi - length))
            foot = endfoot_mask(vessel, side=int(rng.choice([-1, 1])), start=start, length=length,
                                thickness=rng.uniform(2.0, 4.0))
            ys, xs = np.nonzero(foot > 0.02)
            if ys.size == 0:
                continue
            pad = kernel.shape[0] // 2 + 1
            y0, x0 = max(ys.min() - pad, 0), max(xs.min() - pad, 0)
            y1, x1 = min(ys.max() + pad + 1, canvas.shape[0]), min(xs.max() + pad + 1, canvas.shape[1])
            rest = rng.uniform(0.5, 1.0) * foot[y0:y1, x0:x1]
            ev = sample_events(rng, duration=duration, rate_per_min=rng.uniform(1.0, 4.0), amp=(0.4, 2.5),
                               rise=(0.3, 2.0), decay=(1.0, 8.0), min_events=1)
            blurred = blur_stack(np.stack([rest, rest]), kernel)
            canvas.add((y0, x0), blurred[0], blurred[1:], event_trace(ev, t)[None])
        records.append({"kind": "vessel", "width": round(float(width), 1)})
    return trans, clearance, records


def _scene_start(params: MovieParams) -> tuple[_Canvas, np.ndarray, tuple[np.random.Generator, ...], np.ndarray]:
    """An empty canvas, the frame times, the four random streams (morphology, activity, placement,
    background) and the PSF kernel of a movie."""
    T, H, W = params.shape
    streams = tuple(rng_for(params.seed, name) for name in ("morphology", "activity", "placement", "background"))
    # a stream of its own, made only for a membrane-targeted indicator: the other members' draws stay as they were
    label_rng = rng_for(params.seed, "membrane_label") if params.label == "membrane" else None
    return (_Canvas((H + 2 * MARGIN, W + 2 * MARGIN), label_rng=label_rng), np.arange(T) / params.fs, streams,
            psf_kernel(PSF(**params.psf)))


def build_scene(params: MovieParams) -> Scene:
    """Lay out every object of a movie and paint its ground truth.

    Parameters
    ----------
    params : MovieParams

    Returns
    -------
    scene : Scene
    """
    T, H, W = params.shape
    margin = MARGIN
    canvas, t, (rng_m, rng_a, rng_p, rng_b), kernel = _scene_start(params)

    transmission, clearance, objects = _vessels(rng_b, params, canvas, t, kernel=kernel, margin=margin)
    vessel_clearance = clearance if params.n_vessels else None
    taken = np.zeros((0, 3))

    # true astrocytes: soma inside the FOV, then the ones cut by the border
    n_full = len(params.soma_areas) - params.n_cut
    placed = []  # (area, centre, cut)
    for i, area in enumerate(params.soma_areas):
        r0 = np.sqrt(area / np.pi)
        cut = i >= n_full
        cand = (_edge_candidates(rng_p, 400, (H, W), (0.1 * r0, 0.8 * r0), 2 * r0) if cut
                else _inside_candidates(rng_p, 400, (H, W), 1.4 * r0 + 1))
        pos = _pick_position(cand, r0, taken, spacing=params.min_spacing, clearance=vessel_clearance,
                             margin=margin)
        if pos is None:
            continue
        taken = np.vstack([taken, [pos[0], pos[1], r0]])
        placed.append((area, pos, cut))

    soma = np.zeros((H, W), dtype=np.uint16)
    processes = np.zeros((H, W), dtype=np.uint16)
    thin = np.zeros((H, W), dtype=np.uint16)
    drawn = []
    rest_scales = _dim_rest_scales(params, len(placed))
    for (area, pos, cut), rest_scale in zip(placed, rest_scales):  # loop over cells
        active = rng_a.uniform() >= params.silent_fraction or rest_scale < 1.0  # a dim silent cell: invisible
        cell, top = _place_astrocyte(canvas, rng_m, rng_a, area, pos, kernel=kernel,
                                     brightness=rng_m.uniform(0.7, 1.3), active=active, t=t, margin=margin,
                                     params=params, rest_scale=rest_scale)
        drawn.append((cell, top, pos, cut, active, rest_scale))
    cells = _paint_labels(drawn, soma, processes, thin)

    recipe = MEMBERS[params.member]
    lo, hi = recipe.soma_area
    # look-alike fragments: soma centre outside the FOV, processes reaching in (no labels)
    for _ in range(params.n_outside):
        area = float(np.exp(rng_p.uniform(np.log(lo), np.log(hi))))
        r0 = np.sqrt(area / np.pi)
        pos = _pick_position(_edge_candidates(rng_p, 200, (H, W), (-1.7 * r0, -1.1 * r0), r0), r0, taken,
                             spacing=1.5, clearance=None, margin=margin)
        if pos is None:
            continue
        taken = np.vstack([taken, [pos[0], pos[1], r0]])
        _place_astrocyte(canvas, rng_m, rng_a, area, pos, kernel=kernel, brightness=rng_m.uniform(0.7, 1.3),
                         active=True, t=t, margin=margin, params=params)
        objects.append({"kind": "outside", "centre": [round(float(v), 1) for v in pos]})

    n_oof = _out_of_focus(canvas, rng_p, rng_m, rng_a, params, t, kernel=kernel, margin=margin,
                          objects=objects, area_range=(lo, hi * 1.5))
    n_neurons = _neurons(canvas, rng_p, rng_m, rng_a, params, t, taken=taken, kernel=kernel,
                         clearance=vessel_clearance, margin=margin, objects=objects)
    n_blobs = _blobs(canvas, rng_p, rng_m, rng_a, params, t, kernel=kernel, margin=margin, objects=objects)

    return _finish_scene(params, canvas, rng_b, t, transmission=transmission, soma=soma, processes=processes,
                         thin=thin, cells=cells, objects=objects,
                         distractors={"out_of_focus": n_oof, "blobs": n_blobs, "neurons": n_neurons,
                                      "vessels": params.n_vessels})


def _out_of_focus(canvas: _Canvas, rng_p: np.random.Generator, rng_m: np.random.Generator,
                  rng_a: np.random.Generator, params: MovieParams, t: np.ndarray, *, kernel: np.ndarray,
                  margin: int, objects: list, area_range: tuple[float, float]) -> int:
    """Astrocytes of another plane (defocused, dimmer, never labelled); returns how many were placed.

    Their soma areas are log-uniform in ``area_range``; no spacing from the
    true cells (another plane).
    """
    _, H, W = params.shape
    for _ in range(params.n_out_of_focus):  # a few
        area = float(np.exp(rng_p.uniform(np.log(area_range[0]), np.log(area_range[1]))))
        r0 = np.sqrt(area / np.pi)
        pos = _inside_candidates(rng_p, 1, (H, W), 0.0)[0]
        wide = defocus_kernel(kernel, rng_m.uniform(2.5, 5.0) * np.sqrt(max(r0, 4.0) / 8.0))
        _place_astrocyte(canvas, rng_m, rng_a, area, pos, kernel=wide, brightness=rng_m.uniform(0.3, 0.6),
                         active=rng_a.uniform() >= params.silent_fraction, t=t, margin=margin, params=params)
        objects.append({"kind": "out_of_focus", "centre": [round(float(v), 1) for v in pos]})
    return params.n_out_of_focus


def _finish_scene(params: MovieParams, canvas: _Canvas, rng_b: np.random.Generator, t: np.ndarray, *,
                  transmission: np.ndarray, soma: np.ndarray, processes: np.ndarray, thin: np.ndarray,
                  cells: list[dict], objects: list[dict], distractors: dict) -> Scene:
    """Neuropil, vignetting, detector, motion and bleaching around the laid-out objects: the Scene."""
    T = params.shape[0]
    fields, field_traces = _neuropil(rng_b, params, canvas.shape, t)
    transmission = transmission * _vignette(rng_b, canvas.shape)
    detector = Detector(**params.detector)
    shifts = random_walk_shifts(rng_for(params.seed, "motion"), T, sd=params.motion_sd, limit=MARGIN - 2.0)
    return Scene(params=params, margin=MARGIN, static=canvas.static, patches=canvas.patches, fields=fields,
                 field_traces=field_traces, transmission=transmission,
                 bleach=bleach_curve(t, fraction=params.bleach_fraction, tau=params.bleach_tau),
                 shifts=shifts, detector=detector, soma=soma, processes=processes, thin=thin, cells=cells,
                 distractors=distractors, objects=objects)


def _paint_labels(drawn: list, soma: np.ndarray, processes: np.ndarray, thin: np.ndarray) -> list[dict]:
    """Paint somata first, then processes and thin processes on pixels no soma owns.

    ``drawn`` holds ``(cell, top, centre, cut, active, rest_scale)``; only cells whose
    soma centre is inside the FOV get an id. Returns one record per id.
    """
    H, W = soma.shape
    labelled = [d for d in drawn if 0 <= d[2][0] <= H - 1 and 0 <= d[2][1] <= W - 1]
    records, kept = [], []
    for cell, top, pos, cut, active, rest_scale in labelled:  # loop over cells
        cell_id = len(records) + 1
        area = _paint(soma, cell.soma, top, cell_id, soma == 0)
        if area == 0:
            continue
        records.append({"id": cell_id, "centre": [round(float(v), 2) for v in pos], "soma_area": area,
                        "requested_area": round(cell.soma_area, 1), "cut_by_border": bool(cut),
                        "active": bool(active), "rest_scale": round(float(rest_scale), 3), **cell.info})
        kept.append((cell, top))
    free = soma == 0
    for record, (cell, top) in zip(records, kept):
        _paint(processes, cell.annotated, top, record["id"], free & (processes == 0))
        _paint(thin, cell.thin, top, record["id"], free & (thin == 0))
    for record in records:
        record["process_area"] = int(np.count_nonzero(processes == record["id"]))
    return records


def _neurons(canvas: _Canvas, rng_p: np.random.Generator, rng_m: np.random.Generator,
             rng_a: np.random.Generator, params: MovieParams, t: np.ndarray, *, taken: np.ndarray,
             kernel: np.ndarray, clearance: np.ndarray | None, margin: int, objects: list) -> int:
    """Round neuronal somata with a dark nucleus and fast transients; returns how many were placed."""
    _, H, W = params.shape
    duration = t.size / params.fs
    neurons = np.zeros((0, 3))
    count = 0
    for _ in range(params.n_neurons):  # loop over neurons
        area = rng_p.uniform(80.0, 200.0)
        r = np.sqrt(area / np.pi)
        cand = _inside_candidates(rng_p, 200, (H, W), 0.5 * r)
        pos = _pick_position(cand, r, np.vstack([taken, neurons]), spacing=1.15, clearance=clearance,
                             margin=margin)
        if pos is None:
            continue
        neurons = np.vstack([neurons, [pos[0], pos[1], r]])
        (iy, ix), offset = _split_centre(tuple(pos))
        k = defocus_kernel(kernel, rng_m.uniform(0.3, 1.2))
        rest = rng_m.uniform(0.4, 0.9) * neuron_footprint(rng_m, area, offset=offset, pad=k.shape[0] // 2 + 1)
        ev = sample_events(rng_a, duration=duration, rate_per_min=rng_a.uniform(3.0, 20.0), amp=(0.3, 1.5),
                           rise=(0.03, 0.12), decay=(0.2, 0.8))
        trace = event_trace(ev, t, exposure=1.0 / params.fs, oversample=5)
        blurred = blur_stack(np.stack([rest, rest]), k)
        half = (rest.shape[0] - 1) // 2
        canvas.add((iy - half + margin, ix - half + margin), blurred[0], blurred[1:], trace[None])
        objects.append({"kind": "neuron", "centre": [round(float(v), 1) for v in pos]})
        count += 1
    return count


def _blobs(canvas: _Canvas, rng_p: np.random.Generator, rng_m: np.random.Generator,
           rng_a: np.random.Generator, params: MovieParams, t: np.ndarray, *, kernel: np.ndarray,
           margin: int, objects: list) -> int:
    """Soft round Gaussian blobs with slow fluctuations; returns how many were placed."""
    _, H, W = params.shape
    for _ in range(params.n_blobs):  # loop over blobs
        sigma = rng_m.uniform(3.0, 8.0)
        pos = _inside_candidates(rng_p, 1, (H, W), sigma)[0]
        (iy, ix), offset = _split_centre(tuple(pos))
        foot = blob_footprint(sigma, offset=offset, pad=kernel.shape[0] // 2 + 1)
        level = rng_m.uniform(0.3, 0.8)
        trace = level * np.maximum(1.0 + rng_a.uniform(0.15, 0.4)
                                   * slow_fluctuation(rng_a, t, tau=rng_a.uniform(5.0, 30.0)), 0.2)
        blurred = blur_stack(foot[None], kernel)
        half = (foot.shape[0] - 1) // 2
        canvas.add((iy - half + margin, ix - half + margin), None, blurred, trace[None])
        objects.append({"kind": "blob", "centre": [round(float(v), 1) for v in pos]})
    return params.n_blobs


def _neuropil(rng: np.random.Generator, params: MovieParams, shape: tuple[int, int],
              t: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Three 1/f background fields, each with a slow modulation.

    Two smooth fields (exponent around ``neuropil["exponent"]``) and one fine,
    speckled one (exponent 0.6-1.2) for the grain of the neuropil.

    Returns ``fields (3, Hc, Wc)`` (levels included) and ``traces (3, T)``.
    """
    npl = params.neuropil
    weights = rng.dirichlet(np.full(3, 2.0)) * npl["level"]
    exponents = [npl["exponent"] + rng.uniform(-0.3, 0.3), npl["exponent"], rng.uniform(0.6, 1.2)]
    fields = np.stack([w * pink_field(rng, shape, exponent=e, contrast=npl["contrast"])
                       for w, e in zip(weights, exponents)])
    traces = np.stack([1.0 + npl["modulation"] * slow_fluctuation(rng, t, tau=npl["tau"] * rng.uniform(0.5, 2.0))
                       for _ in weights])
    return fields.astype(np.float32), np.maximum(traces, 0.0).astype(np.float32)


def _vignette(rng: np.random.Generator, shape: tuple[int, int]) -> np.ndarray:
    """Smooth illumination fall-off toward an off-centre point, float32 (Hc, Wc) in (0, 1]."""
    yy, xx = np.mgrid[: shape[0], : shape[1]].astype(np.float32)
    cy, cx = rng.uniform(0.3, 0.7, 2) * np.asarray(shape)
    rho2 = ((yy - cy) ** 2 + (xx - cx) ** 2) / float(max(shape) ** 2)
    return (1.0 - rng.uniform(0.0, 0.5) * rho2).astype(np.float32)
