"""Procedural astrocyte morphology, cell placement, vessels and real-annotation layouts.

An astrocyte is drawn on a local grid around its soma, as a bushy protoplasmic
astrocyte seen with a cytosolic indicator:

- **soma**: an ellipse with a low-frequency radial perturbation, rescaled to hit
  the requested area;
- **processes**: 4-7 primary branches of varied calibre leave the soma with a
  conical base, arc gently (persistent random walk plus a steady turn) and
  taper; each gives off thinner, shorter side branches, up to 4 orders, more
  per length at higher orders, and some fork in two. Only branches of visible
  calibre (radius >= ``VISIBLE_BRANCH_RADIUS``) connected to the soma are
  annotated as processes (the real D1 consensus: process area / soma area
  median ~1.5, IQR ~1.1-2.1, ~3 processes reaching ~4 soma radii); the finer
  orders are dim and read as texture, part of the territory;
- **territory**: a roughly convex (star-shaped, smooth radius) region that the
  branches fill, fading out at its edge and declining away from the soma,
  filled with a *spongy haze*: a mottled, spatially correlated band-pass
  texture (the unresolved meshwork of fine processes), brighter clusters, and
  a halo along the branches. The haze carries the cell's whole-cell events
  (``territory_participation``) and its microdomain events.

Everything here is pure NumPy/SciPy; loops run over cells and branches, never
over pixels.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from scipy import ndimage as ndi
from scipy.signal import lfilter

from astro3s.annotation import (ANNOTATOR_SOMA_AREA_D1, ANNOTATOR_WIDTH_D1, ANNOTATOR_WIDTH_EXPONENT,  # noqa: F401
                                 annotator_process_width)
from astro3s.simulate.params import SimulationParams

__all__ = [
    "CellMorphology",
    "Layout",
    "cell_from_masks",
    "grow_branch",
    "layout_from_roiset",
    "make_astrocyte",
    "make_vessels",
    "membrane_appearance",
    "place_cells",
    "thin_branches",
    "annotator_process_width",
]

# Branch radius (px) below which a process is too thin to be annotated as one;
# thinner branches still light up as part of the cell's territory (domain).
VISIBLE_BRANCH_RADIUS = 0.6

# the width annotators draw a process at (ANNOTATOR_WIDTH_*, annotator_process_width): astro3s/annotation.py
# How far from the soma centre (in soma radii) annotators trace a process: the interquartile
# ranges over D1, D2 and D4 of the consensus processes' reach (95th percentile of their pixels'
# distance to the soma edge: D1 2.15-3.61 radii beyond the edge, D2 2.40-3.61, D4 1.61-2.63;
# `python experiments/measure_annotations.py`), plus the radius. (2.0, 3.2) until 2026-12-04,
# which traced about 1.7 radii beyond the edge where annotators trace 2-3.)
ANNOTATED_REACH = (2.6, 4.6)
_STEP = 0.5  # px per growth step: fine enough for thin branches to stay connected


@dataclass
class CellMorphology:
    """One astrocyte on a local grid whose top-left corner is ``origin`` (canvas px).

    Attributes
    ----------
    origin : tuple of int
        ``(y0, x0)`` of the local grid in canvas coordinates (may be negative or
        extend past the canvas; clip when pasting).
    center : tuple of float
        Soma centre ``(cy, cx)`` in canvas coordinates.
    soma, process, territory : ndarray of float32, shape (h, w)
        Continuous footprints in [0, 1] (soft edges, partial-volume weights).
    soma_mask, process_mask, territory_mask : ndarray of bool, shape (h, w)
        ``process_mask`` (the processes as an annotator draws them: polygons of
        :func:`annotator_process_width` around the visible branches) excludes
        the soma; ``territory_mask`` is the geometric territory including soma
        and processes. The ground-truth *domain* is the part of the cell's
        footprint whose activity detectably follows the cell (see
        :func:`astro3s.simulate.render.ground_truth`), not this mask.
    soma_radius, territory_radius : float
        Equivalent soma radius and mean territory radius (px).
    branch_mask : ndarray of bool, shape (h, w), optional
        The visible branches themselves at their drawn calibre (about 2 px wide),
        minus the soma: the thin-branch ground truth. Where the signal lives:
        microdomain events sit on these pixels. None: same as ``process_mask``.
    """

    origin: tuple[int, int]
    center: tuple[float, float]
    soma: np.ndarray
    soma_mask: np.ndarray
    process: np.ndarray
    process_mask: np.ndarray
    territory: np.ndarray
    territory_mask: np.ndarray
    soma_radius: float
    territory_radius: float
    branch_mask: np.ndarray | None = None

    @property
    def branches(self) -> np.ndarray:
        """The thin-branch mask (``branch_mask``, or ``process_mask`` when not given)."""
        return self.process_mask if self.branch_mask is None else self.branch_mask

    @property
    def shape(self) -> tuple[int, int]:
        """Shape ``(h, w)`` of the local grid."""
        return self.soma.shape

    @property
    def soma_area(self) -> int:
        """Soma area in px (whole soma, before any cropping to the FOV)."""
        return int(self.soma_mask.sum())


@dataclass
class Layout:
    """Cell masks taken from a real annotation, used as the morphology of a stand-in movie.

    Attributes
    ----------
    soma, processes : ndarray of uint16, shape (H, W)
        Label images with shared ids ``1..N`` (``processes`` all zero for
        soma-only annotations).
    source : Path
        The RoiSet zip.
    has_processes : bool
        False for soma-only annotations (e.g. D3).
    """

    soma: np.ndarray
    processes: np.ndarray
    source: Path
    has_processes: bool

    @property
    def n_cells(self) -> int:
        """Number of annotated cells (somata)."""
        return int(len(np.unique(self.soma[self.soma > 0])))

    @property
    def shape(self) -> tuple[int, int]:
        """FOV shape ``(H, W)``."""
        return self.soma.shape


def layout_from_roiset(path: str | Path, shape: tuple[int, int]) -> Layout:
    """Read a real ImageJ RoiSet (any ASTRA annotation convention) as a cell layout.

    Parameters
    ----------
    path : str or Path
        RoiSet zip, e.g. ``consensus/D1/RoiSet_SMALL_001.zip``.
    shape : tuple of int
        FOV shape ``(H, W)`` the ROIs refer to.

    Returns
    -------
    Layout
        Soma/process labels relabelled to consecutive ids ``1..N`` (order of
        the annotation). Soma-only annotations have ``has_processes=False``;
        :func:`cell_from_masks` can then synthesise processes.
    """
    from astro3s.io import read_roiset

    soma, processes = read_roiset(path, tuple(int(s) for s in shape))
    soma = np.asarray(soma, dtype=np.uint16)
    processes = np.asarray(processes, dtype=np.uint16)
    ids = np.unique(soma[soma > 0])
    lut = np.zeros(int(max(soma.max(), processes.max())) + 1, dtype=np.uint16)
    lut[ids] = np.arange(1, len(ids) + 1, dtype=np.uint16)
    # process pixels of a cell without a soma are orphans; they map to 0
    return Layout(soma=lut[soma], processes=lut[processes], source=Path(path),
                  has_processes=bool((lut[processes] > 0).any()))


# ---------------------------------------------------------------------------- shapes


def _radial_perturbation(theta: np.ndarray, amplitude: float, rng: np.random.Generator,
                         *, harmonics: tuple[int, ...] = (2, 3, 4)) -> np.ndarray:
    """Smooth multiplicative radius factor ``1 + sum_k a_k cos(k theta + phi_k)``."""
    factor = np.ones_like(theta)
    for k in harmonics:
        a = rng.normal(0.0, amplitude / math.sqrt(k))
        factor = factor + a * np.cos(k * theta + rng.uniform(0, 2 * np.pi))
    return np.clip(factor, 0.5, 1.6)


def _ellipse_radius(theta: np.ndarray, radius: float, elongation: float, angle: float) -> np.ndarray:
    # polar radius of an ellipse of area pi*radius^2 and axis ratio `elongation`
    a, b = radius * math.sqrt(elongation), radius / math.sqrt(elongation)
    phi = theta - angle
    return a * b / np.sqrt((b * np.cos(phi)) ** 2 + (a * np.sin(phi)) ** 2)


def _annotated_polygons(branch_mask: np.ndarray, centre_dist: np.ndarray, soma_mask: np.ndarray,
                        dist: np.ndarray, *, reach: float) -> np.ndarray:
    """The processes as an annotator draws them, from the visible branches of a cell.

    The branches connected to the soma are traced out to ``reach`` px from the
    soma centre (annotators follow the clearly visible, proximal part of each
    process; the arbor beyond is the domain's) and widened to
    :func:`annotator_process_width` around their centre lines (``centre_dist``:
    distance to the nearest centre-line pixel), so a polygon does not bulge into
    the gaps between neighbouring branches. Returns a bool mask without the soma.
    """
    traced = branch_mask & (dist <= reach)
    lab, n = ndi.label(traced | soma_mask, structure=np.ones((3, 3), bool))
    if n == 0 or not soma_mask.any():
        return traced & ~soma_mask
    traced &= np.isin(lab, np.unique(lab[soma_mask]))
    half_width = 0.5 * (annotator_process_width(float(soma_mask.sum())) - 1.0)
    if not traced.any() or half_width <= 0:
        return traced & ~soma_mask
    near = (ndi.distance_transform_edt(~traced) <= half_width) & (centre_dist <= half_width)
    return (traced | near) & ~soma_mask


def thin_branches(process_mask: np.ndarray) -> np.ndarray:
    """2-px-wide centre lines of annotated process polygons (bool, same shape)."""
    from skimage.morphology import skeletonize

    skeleton = skeletonize(process_mask)
    return ndi.binary_dilation(skeleton, structure=np.ones((2, 2), bool)) & process_mask


def _local_grid(center: tuple[float, float], half: int) -> tuple[tuple[int, int], np.ndarray, np.ndarray]:
    y0, x0 = int(math.floor(center[0])) - half, int(math.floor(center[1])) - half
    yy, xx = np.mgrid[y0:y0 + 2 * half + 1, x0:x0 + 2 * half + 1].astype(np.float32)
    dy, dx = yy - np.float32(center[0]), xx - np.float32(center[1])
    return (y0, x0), np.hypot(dy, dx), np.arctan2(dy, dx)


def grow_branch(start: np.ndarray, heading: float, length: float, radius_start: float,
                radius_end: float, tortuosity: float, rng: np.random.Generator, *,
                taper: float = 1.0, curvature: float = 0.0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Grow one tapering branch as a persistent random walk.

    Parameters
    ----------
    start : ndarray, shape (2,)
        Start point ``(y, x)``.
    heading : float
        Initial direction (radians, ``atan2(dy, dx)`` convention).
    length : float
        Branch length (px).
    radius_start, radius_end : float
        Branch radius at both ends (px).
    tortuosity : float
        Heading noise per sqrt(px); the heading relaxes back to its mean course
        over ~8 px so branches wiggle but keep their general direction.
    taper : float
        Shape of the taper: the radius goes from ``radius_start`` to
        ``radius_end`` as ``(1 - s / length) ** taper`` (1: linear; above 1:
        thick only near the start, as astrocyte processes that thin quickly
        after leaving the soma).
    curvature : float
        Steady turning of the mean course (radians per px): gentle arcs.

    Returns
    -------
    points : ndarray of float32, shape (n, 2)
    radii : ndarray of float32, shape (n,)
    headings : ndarray of float32, shape (n,)
    """
    n = max(int(math.ceil(length / _STEP)), 2)
    relax = math.exp(-_STEP / 8.0)
    wobble = lfilter([1.0], [1.0, -relax], rng.normal(0.0, tortuosity * math.sqrt(_STEP), n))
    headings = heading + curvature * _STEP * np.arange(n) + wobble
    steps = _STEP * np.stack([np.sin(headings), np.cos(headings)], axis=1)
    points = np.asarray(start, dtype=np.float64) + np.cumsum(steps, axis=0)
    frac = np.linspace(0.0, 1.0, n)
    radii = radius_end + (radius_start - radius_end) * (1.0 - frac) ** taper
    return points.astype(np.float32), radii.astype(np.float32), headings.astype(np.float32)


# Highest branching order: primary (0) -> secondary -> ... -> order 4. The higher
# orders are below the annotation radius: they make the bushy arbor, not "processes".
_MAX_ORDER = 4


def _branch_tree(center: tuple[float, float], soma_edge: callable, territory_edge: callable,
                 soma_radius: float, params: SimulationParams, rng: np.random.Generator,
                 *, n_primary: int) -> tuple[np.ndarray, np.ndarray]:
    """Points and radii of all branches of one cell (primary and up to 4 orders of side branches).

    Primary processes leave the soma thick (a conical base), taper quickly and
    arc gently; each branch gives off thinner, shorter side branches at
    30-70 degrees, more per length at higher orders, so that the arbor becomes
    denser and finer away from the soma, as a bushy protoplasmic astrocyte.
    Some primaries fork in two near their middle.
    """
    c = np.asarray(center, dtype=np.float64)
    theta0 = rng.uniform(0, 2 * np.pi)
    spacing = 2 * np.pi / max(n_primary, 1)
    all_pts, all_rad = [], []
    # (start, heading, length, r0, generation); primaries start inside the soma
    queue: list[tuple[np.ndarray, float, float, float, int]] = []
    for i in range(n_primary):
        th = theta0 + i * spacing + rng.normal(0, 0.25 * spacing)
        rs, rt = float(soma_edge(th)), float(territory_edge(th))
        start = c + 0.7 * rs * np.array([math.sin(th), math.cos(th)])
        length = max((rt - 0.7 * rs) * rng.uniform(0.7, 1.0), 2.0)
        # calibres differ: the thinnest primaries are not annotated as processes
        r0 = max(params.branch_width * soma_radius * rng.uniform(0.4, 1.3), 0.5)
        queue.append((start, th, length, r0, 0))
    while queue:
        start, th, length, r0, gen = queue.pop()
        r_end = max(0.3 * r0, 0.4 if gen == 0 else 0.25)
        pts, rad, hd = grow_branch(start, th, length, r0, r_end,
                                   params.branch_tortuosity * (1 + 0.4 * gen), rng,
                                   taper=0.8 if gen == 0 else 1.3,
                                   curvature=rng.normal(0.0, 0.012 * (1 + gen)))
        if gen == 0:
            # conical base: the process widens into the soma over ~1.5 branch radii
            s = np.arange(len(pts)) * _STEP
            rad = rad * (1 + 0.9 * np.exp(-s / (1.5 * r0 + 1.0)))
        # stop where the branch leaves the territory
        rel = pts - c
        outside = np.hypot(rel[:, 0], rel[:, 1]) > 0.97 * territory_edge(np.arctan2(rel[:, 0], rel[:, 1]))
        if outside.any():
            cut = int(np.argmax(outside))
            pts, rad, hd = pts[:cut], rad[:cut], hd[:cut]
        if len(pts) < 2:
            continue
        all_pts.append(pts)
        all_rad.append(rad)
        if gen >= _MAX_ORDER:
            continue
        # later generations are thinner, shorter and more numerous: the bushy look
        n_side = rng.poisson(params.branching_rate * (len(pts) * _STEP) / 10.0 * (1 + 0.8 * gen))
        for _ in range(n_side):
            k = int(rng.uniform(0.08, 0.92) * len(pts))
            side_heading = float(hd[k]) + rng.choice([-1.0, 1.0]) * rng.uniform(0.5, 1.2)
            side_length = (len(pts) - k) * _STEP * rng.uniform(0.35, 0.85) + 2.0
            queue.append((pts[k].astype(np.float64), side_heading, side_length,
                          max(rng.uniform(0.5, 0.75) * float(rad[k]), 0.25), gen + 1))
        if gen == 0 and len(pts) > 20 and rng.random() < 0.4:
            # a fork: two daughters of similar calibre continue the primary
            k = int(rng.uniform(0.3, 0.6) * len(pts))
            for sign in (-1.0, 1.0):
                queue.append((pts[k].astype(np.float64), float(hd[k]) + sign * rng.uniform(0.25, 0.5),
                              (len(pts) - k) * _STEP * rng.uniform(0.7, 1.0),
                              max(0.8 * float(rad[k]), 0.3), 1))
    if not all_pts:
        return np.zeros((0, 2), np.float32), np.zeros(0, np.float32)
    return np.concatenate(all_pts), np.concatenate(all_rad)


def _rasterise_tubes(points: np.ndarray, radii: np.ndarray, origin: tuple[int, int],
                     shape: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
    """Distance to the nearest centre-line pixel and that pixel's radius, on a grid.

    Returns ``(distance, radius_near)`` of shape ``shape``; ``distance`` is inf
    everywhere when there are no points.
    """
    rad_img = np.zeros(shape, np.float32)
    if len(points):
        idx = np.rint(points - np.asarray(origin, np.float32)).astype(np.int64)
        ok = (idx[:, 0] >= 0) & (idx[:, 0] < shape[0]) & (idx[:, 1] >= 0) & (idx[:, 1] < shape[1])
        np.maximum.at(rad_img, (idx[ok, 0], idx[ok, 1]), radii[ok])
    if not (rad_img > 0).any():
        return np.full(shape, np.inf, np.float32), rad_img
    dist, (iy, ix) = ndi.distance_transform_edt(rad_img == 0, return_indices=True)
    return dist.astype(np.float32), rad_img[iy, ix]


def _territory_fill(territory_soft: np.ndarray, territory_mask: np.ndarray, process: np.ndarray,
                    density: float, rng: np.random.Generator, *, blob_sigma: float = 0.8,
                    tube_dist: np.ndarray | None = None, reach: float = 10.0) -> np.ndarray:
    """Spongy fine-process haze in [0, 1]: a mottled texture filling the territory.

    Three parts, all spatially correlated at the scale of the fine processes
    (``blob_sigma``, below the optical resolution, so it scales with the zoom):

    - a **sponge**: band-pass random texture (struts and holes), the unresolved
      meshwork of fine processes and leaflets that fills the territory;
    - **clusters**: ``density`` small blobs per px^2 (at ``blob_sigma = 0.8``;
      larger blobs are proportionally sparser), the brighter nodes of the arbor;
    - a **halo** along the branches, where the fine processes emanate, fading
      over ``reach`` px away from them.

    The result is multiplied by ``territory_soft`` (which fades out at the edge).
    """
    shape = territory_mask.shape
    noise = rng.standard_normal(shape).astype(np.float32)
    fine = ndi.gaussian_filter(noise, blob_sigma)
    coarse = ndi.gaussian_filter(noise, 3.0 * blob_sigma)
    sponge = fine - 0.6 * coarse
    sponge /= max(float(sponge[territory_mask].std()) if territory_mask.any() else 1.0, 1e-6)
    # slow patchiness: some sectors of the arbor are denser than others
    patch = ndi.gaussian_filter(rng.standard_normal(shape).astype(np.float32), 6.0 * blob_sigma + 3.0)
    patch /= max(float(patch.std()), 1e-6)
    sponge = np.clip(0.6 + 0.25 * sponge + 0.1 * patch, 0, 1)
    n_blobs = rng.poisson(density * territory_mask.sum() * (0.8 / blob_sigma) ** 2)
    blobs = np.zeros(shape, np.float32)
    if n_blobs:
        iy, ix = np.nonzero(territory_mask)
        pick = rng.integers(0, len(iy), n_blobs)
        np.add.at(blobs, (iy[pick], ix[pick]), rng.uniform(0.3, 1.0, n_blobs).astype(np.float32))
        blobs = ndi.gaussian_filter(blobs, blob_sigma)
        top = np.percentile(blobs[territory_mask], 99.0)
        blobs = np.clip(blobs / max(top, 1e-6), 0, 1)
    if tube_dist is not None and np.isfinite(tube_dist).any():
        halo = np.exp(-np.minimum(tube_dist, 1e4) / max(reach, 1.0)).astype(np.float32)
    else:
        halo = ndi.gaussian_filter(process, 2.5 * blob_sigma)
        halo /= max(float(halo.max()), 1e-6)
    spongy = np.clip(sponge * (0.6 + 0.4 * halo) + 0.3 * blobs, 0, 1)
    return (territory_soft * spongy).astype(np.float32)


def make_astrocyte(center: tuple[float, float], soma_area: float, params: SimulationParams,
                   rng: np.random.Generator) -> CellMorphology:
    """Draw one procedural astrocyte.

    Parameters
    ----------
    center : tuple of float
        Soma centre ``(cy, cx)`` in canvas pixels.
    soma_area : float
        Target soma area (px); the rasterised soma is within a few % of it.
    params : SimulationParams
        Uses the morphology fields (elongation, irregularity, branches, territory...).
    rng : numpy.random.Generator

    Returns
    -------
    CellMorphology
    """
    radius = math.sqrt(soma_area / math.pi)
    elongation = rng.uniform(1.0, params.soma_elongation)
    angle = rng.uniform(0, np.pi)
    territory_radius = params.territory_radius * radius * rng.uniform(0.85, 1.15)
    # room for the largest radius territory_edge can take (its wobble is clipped at 1.5)
    half = int(math.ceil(1.5 * territory_radius + 4))
    origin, dist, theta = _local_grid(center, half)

    soma_rng = np.random.default_rng(rng.integers(2**63))
    soma_coef = soma_rng.normal(0.0, 1.0, 6)

    def soma_edge(th: np.ndarray | float, scale: float = 1.0) -> np.ndarray:
        th = np.asarray(th, dtype=np.float32)
        wobble = 1 + params.soma_irregularity * sum(
            soma_coef[2 * j] / math.sqrt(k) * np.cos(k * th + np.pi * soma_coef[2 * j + 1])
            for j, k in enumerate((2, 3, 4)))
        return scale * _ellipse_radius(th, radius, elongation, angle) * np.clip(wobble, 0.6, 1.4)

    # one rescaling step brings the pixel area to the target (discretisation,
    # perturbation and elongation all change it)
    scale = 1.0
    for _ in range(2):
        edge = soma_edge(theta, scale)
        area = float((dist < edge).sum())
        scale *= math.sqrt(soma_area / max(area, 1.0))
    edge = soma_edge(theta, scale)
    soma_mask = dist < edge
    soma = np.clip(edge - dist + 0.5, 0, 1).astype(np.float32)

    terr_coef = rng.normal(0.0, 1.0, 10)

    def territory_edge(th: np.ndarray | float) -> np.ndarray:
        th = np.asarray(th, dtype=np.float32)
        wobble = 1 + params.territory_irregularity * sum(
            terr_coef[2 * j] / math.sqrt(k) * np.cos(k * th + np.pi * terr_coef[2 * j + 1])
            for j, k in enumerate((1, 2, 3, 4, 5)))
        return territory_radius * np.clip(wobble, 0.55, 1.5)

    n_primary = max(1, params.n_branches + int(rng.integers(-1, 2)))
    points, radii = _branch_tree(center, lambda th: soma_edge(th, scale), territory_edge,
                                 radius, params, rng, n_primary=n_primary)
    return _assemble(origin, center, dist, theta, soma, soma_mask, points, radii,
                     territory_edge(theta), radius, territory_radius, params, rng)


def _assemble(origin, center, dist, theta, soma, soma_mask, points, radii, territory_edge_img,
              radius, territory_radius, params, rng, *, process_given: np.ndarray | None = None) -> CellMorphology:
    """Rasterise branches and territory around a soma and package a CellMorphology."""
    shape = soma.shape
    tube_dist = None
    if process_given is not None:
        # real annotated processes: soften the edge by half a pixel only
        process = np.clip(ndi.gaussian_filter(process_given.astype(np.float32), 0.5) * 1.3, 0, 1)
        process_mask = process_given & ~soma_mask
        branch_mask = thin_branches(process_mask)
    else:
        tube_dist, tube_radius = _rasterise_tubes(points, radii, origin, shape)
        # sub-resolution branches are dimmer (less indicator in the beam), so the
        # fine arbor reads as texture rather than as lines
        process = (np.clip(tube_radius + 0.5 - tube_dist, 0, 1)
                   * np.clip(tube_radius / 0.9, 0.25, 1.0) ** 1.5).astype(np.float32)
        # annotated processes: the branches of visible calibre only (a thin branch
        # crossing a thick one must not punch holes into it); +0.4 px keeps a
        # diagonal 1-px branch 4-connected, as a traced polygon would be
        visible = radii >= VISIBLE_BRANCH_RADIUS
        vis_dist, vis_radius = _rasterise_tubes(points[visible], radii[visible], origin, shape)
        process_mask = (vis_dist <= vis_radius + 0.4) & (vis_radius > 0) & ~soma_mask
        # an annotator traces processes out from the soma: visible pieces cut off
        # from it (where a thin branch crosses a thicker one's reach) are not processes
        lab, n = ndi.label(process_mask, structure=np.ones((3, 3), bool))
        if n:
            touching = np.unique(lab[ndi.binary_dilation(soma_mask, iterations=2)])
            keep = np.zeros(n + 1, bool)
            keep[touching] = True
            keep &= np.bincount(lab.ravel(), minlength=n + 1) >= 6  # no 1-5 px stubs
            keep[0] = False
            process_mask = keep[lab]
        branch_mask = process_mask
        process_mask = _annotated_polygons(branch_mask, vis_dist, soma_mask, dist,
                                           reach=radius * rng.uniform(*ANNOTATED_REACH))
    process = np.where(soma_mask, 0, process).astype(np.float32)
    # the territory fades out over its outer third: fine processes thin out
    # towards the edge, so there is no crisp disc; the domain ends where the
    # cell's share of the signal falls below ~15 % of its inner level
    edge = np.maximum(territory_edge_img, 1.0)
    fade = np.clip((edge - dist) / (0.4 * edge), 0, 1)
    # smoothstep (no crisp rim) times a radial decline: the fine arbor is denser
    # near the soma than at the territory's edge
    territory_soft = (fade * fade * (3 - 2 * fade)) ** 0.5 * (1 - 0.5 * np.clip(dist / edge, 0, 1))
    territory_soft = territory_soft.astype(np.float32)
    territory_mask = (territory_soft >= 0.15) | soma_mask | process_mask
    # fine processes are below the optical resolution, so their blobs scale with the
    # zoom, for which the soma radius is the proxy
    if tube_dist is None:
        tube_dist = ndi.distance_transform_edt(~(process_given | soma_mask)).astype(np.float32)
    territory = _territory_fill(territory_soft, territory_mask, process, params.spongy_density, rng,
                                blob_sigma=float(np.clip(0.06 * radius, 0.8, 2.5)),
                                tube_dist=tube_dist, reach=0.5 * radius + 2.0)
    return CellMorphology(origin=origin, center=(float(center[0]), float(center[1])), soma=soma,
                          soma_mask=soma_mask, process=process, process_mask=process_mask,
                          territory=territory, territory_mask=territory_mask,
                          soma_radius=float(radius), territory_radius=float(territory_radius),
                          branch_mask=branch_mask)


def cell_from_masks(soma_mask: np.ndarray, process_mask: np.ndarray, params: SimulationParams,
                    rng: np.random.Generator, *, synthesise_processes: bool = True) -> CellMorphology:
    """Build a cell from real soma/process masks (canvas-sized bool arrays).

    The soma and processes are taken as they are; the territory is a smooth
    star-shaped region reaching ``territory_radius`` soma radii and at least
    3 px beyond the farthest process in every direction. With no processes
    and ``synthesise_processes`` the branches are grown procedurally.
    """
    ys, xs = np.nonzero(soma_mask)
    center = (float(ys.mean()), float(xs.mean()))
    radius = math.sqrt(len(ys) / math.pi)
    territory_radius = params.territory_radius * radius * rng.uniform(0.85, 1.15)
    py, px = np.nonzero(process_mask)
    reach = np.hypot(py - center[0], px - center[1]).max() if len(py) else 0.0
    half = int(math.ceil(max(1.6 * territory_radius, reach + 4,
                             np.hypot(ys - center[0], xs - center[1]).max() + 2) + 4))
    origin, dist, theta = _local_grid(center, half)
    local = _crop_or_pad(soma_mask, origin, dist.shape)
    local_proc = _crop_or_pad(process_mask, origin, dist.shape) & ~local

    # radial reach of the processes per 10-degree sector, smoothed around the circle
    bins = 36
    reach_per_bin = np.zeros(bins, np.float32)
    if local_proc.any():
        sector = ((theta[local_proc] + np.pi) / (2 * np.pi) * bins).astype(int) % bins
        np.maximum.at(reach_per_bin, sector, dist[local_proc] + 3.0)
        reach_per_bin = ndi.maximum_filter1d(reach_per_bin, 5, mode="wrap")
        reach_per_bin = ndi.gaussian_filter1d(reach_per_bin, 1.5, mode="wrap")
    base = territory_radius * _radial_perturbation(np.linspace(-np.pi, np.pi, bins, endpoint=False),
                                                  params.territory_irregularity, rng,
                                                  harmonics=(1, 2, 3, 4, 5))
    edge_per_bin = np.maximum(base, reach_per_bin)
    sector_all = ((theta + np.pi) / (2 * np.pi) * bins) % bins
    lo = np.floor(sector_all).astype(int) % bins
    frac = sector_all - np.floor(sector_all)
    territory_edge_img = (1 - frac) * edge_per_bin[lo] + frac * edge_per_bin[(lo + 1) % bins]
    soma = np.clip(ndi.gaussian_filter(local.astype(np.float32), 0.5) * 1.3, 0, 1)

    if local_proc.any() or not synthesise_processes:
        return _assemble(origin, center, dist, theta, soma, local, None, None, territory_edge_img,
                         radius, territory_radius, params, rng, process_given=local_proc)

    def soma_edge(th: np.ndarray | float) -> np.ndarray:
        return np.full_like(np.asarray(th, dtype=np.float32), radius)

    def territory_edge(th: np.ndarray | float) -> np.ndarray:
        th = np.asarray(th, dtype=np.float32)
        pos = ((th + np.pi) / (2 * np.pi) * bins) % bins
        return edge_per_bin[np.floor(pos).astype(int) % bins]

    n_primary = max(1, params.n_branches + int(rng.integers(-1, 2)))
    points, radii = _branch_tree(center, soma_edge, territory_edge, radius, params, rng,
                                 n_primary=n_primary)
    return _assemble(origin, center, dist, theta, soma, local, points, radii, territory_edge_img,
                     radius, territory_radius, params, rng)


def _crop_or_pad(image: np.ndarray, origin: tuple[int, int], shape: tuple[int, int]) -> np.ndarray:
    """Window of ``image`` at ``origin`` with ``shape``; outside the image is zero."""
    out = np.zeros(shape, dtype=image.dtype)
    (sy, sx), (dy, dx) = clip_window(origin, shape, image.shape)
    out[dy, dx] = image[sy, sx]
    return out


def clip_window(origin: tuple[int, int], shape: tuple[int, int],
                canvas_shape: tuple[int, int]) -> tuple[tuple[slice, slice], tuple[slice, slice]]:
    """Slices pasting a local grid at ``origin`` into a canvas, clipped to both.

    Returns ``((canvas_y, canvas_x), (local_y, local_x))``.
    """
    y0, x0 = origin
    h, w = shape
    cy0, cx0 = max(y0, 0), max(x0, 0)
    cy1, cx1 = min(y0 + h, canvas_shape[0]), min(x0 + w, canvas_shape[1])
    cy1, cx1 = max(cy1, cy0), max(cx1, cx0)
    return ((slice(cy0, cy1), slice(cx0, cx1)),
            (slice(cy0 - y0, cy1 - y0), slice(cx0 - x0, cx1 - x0)))


# ---------------------------------------------------------------------------- placement


def place_cells(soma_radii: np.ndarray, territory_radii: np.ndarray, *, box: tuple[int, int, int, int],
                spacing: float, clearance: np.ndarray | None, rng: np.random.Generator,
                tries: int = 256) -> np.ndarray:
    """Place soma centres so that somata never overlap and territories mostly tile.

    Parameters
    ----------
    soma_radii, territory_radii : ndarray, shape (n,)
        Per-cell radii (px).
    box : tuple of int
        ``(y0, y1, x0, x1)`` region (canvas px) where centres may fall; each centre
        keeps half its soma radius inside it, so most of every soma is in the FOV.
    spacing : float
        Preferred minimum centre distance as a fraction of the sum of territory
        radii; relaxed to soma-only exclusion when a cell does not fit otherwise.
    clearance : ndarray of float32, shape (Hc, Wc), optional
        Distance to the nearest vessel wall; a centre needs ``clearance > radius``.
    rng : numpy.random.Generator

    Returns
    -------
    centers : ndarray of float64, shape (n, 2)
        NaN rows for cells that could not be placed.
    """
    n = len(soma_radii)
    centers = np.full((n, 2), np.nan)
    y0, y1, x0, x1 = box
    for i in range(n):
        r, big_r = soma_radii[i], territory_radii[i]
        m = 0.5 * r
        if y1 - y0 <= 2 * m or x1 - x0 <= 2 * m:
            continue
        placed = ~np.isnan(centers[:, 0])
        for strict in (True, False):
            cand = np.column_stack([rng.uniform(y0 + m, y1 - m, tries), rng.uniform(x0 + m, x1 - m, tries)])
            ok = np.ones(tries, bool)
            if clearance is not None:
                iy = np.clip(cand[:, 0].astype(int), 0, clearance.shape[0] - 1)
                ix = np.clip(cand[:, 1].astype(int), 0, clearance.shape[1] - 1)
                ok &= clearance[iy, ix] > r
            if placed.any():
                d = np.hypot(cand[:, None, 0] - centers[None, placed, 0], cand[:, None, 1] - centers[None, placed, 1])
                need = 1.15 * (r + soma_radii[placed]) + 2.0
                if strict:
                    need = np.maximum(need, spacing * (big_r + territory_radii[placed]))
                ok &= (d >= need[None, :]).all(axis=1)
            if ok.any():
                centers[i] = cand[int(np.argmax(ok))]
                break
    return centers


def make_vessels(canvas_shape: tuple[int, int], n: int, *, width: float, depth: float,
                 rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Blood-vessel shadows: dark, gently curving tubes crossing the canvas.

    Returns
    -------
    transmission : ndarray of float32, shape (Hc, Wc)
        Multiplicative light transmission in ``(0, 1]`` (1 away from vessels).
    clearance : ndarray of float32, shape (Hc, Wc)
        Distance (px) to the nearest vessel wall (large where there is none).
    """
    h, w = canvas_shape
    transmission = np.ones(canvas_shape, np.float32)
    clearance = np.full(canvas_shape, np.float32(h + w))
    for _ in range(n):
        radius = 0.5 * width * rng.uniform(0.6, 1.2)
        mid = np.array([rng.uniform(0.15, 0.85) * h, rng.uniform(0.15, 0.85) * w])
        heading = rng.uniform(0, np.pi)
        length = 1.5 * math.hypot(h, w)
        halves = []
        for direction in (0.0, np.pi):
            pts, _, _ = grow_branch(mid, heading + direction, length / 2, radius, radius, 0.03, rng)
            halves.append(pts)
        pts = np.concatenate([halves[1][::-1], halves[0]])
        dist, _ = _rasterise_tubes(pts, np.full(len(pts), radius, np.float32), (0, 0), canvas_shape)
        # soft vessel wall: full shadow in the lumen, 2 px ramp at the edge
        profile = np.clip((radius + 1.0 - dist) / 2.0, 0, 1)
        transmission *= 1 - depth * profile * rng.uniform(0.8, 1.0)
        clearance = np.minimum(clearance, np.maximum(dist - radius, 0))
    return transmission, clearance


def membrane_appearance(cell: CellMorphology, label: float) -> CellMorphology:
    """The cell's footprints as an indicator partly bound to the plasma membrane shows them.

    A membrane-targeted indicator (Lck-GCaMP) lights membrane, not volume.
    An optical section through a soma cuts its membrane at the edge only, so
    the soma shows as a rim around a dimmer core: the core (the soma mask
    eroded by 2 px, softened by a 1-px Gaussian) loses ``0.75 * label`` of its
    brightness. The fine processes of the territory have the most membrane
    per volume, so its footprint is raised to the power ``1 - 0.6 * label``
    (its faint parts gain most). Masks, and so the annotation, are unchanged.

    Parameters
    ----------
    cell : CellMorphology
        Footprints of a cytosolic indicator.
    label : float
        0 (or less): cytosolic, the cell unchanged; 1: fully membrane-bound.

    Returns
    -------
    CellMorphology
    """
    from dataclasses import replace

    w = float(np.clip(label, 0.0, 1.0))
    if w == 0.0:
        return cell
    core = ndi.gaussian_filter(ndi.binary_erosion(cell.soma_mask, iterations=2).astype(np.float32), 1.0)
    soma = (cell.soma * (1.0 - 0.75 * w * core)).astype(np.float32)
    territory = (np.clip(cell.territory, 0.0, 1.0) ** (1.0 - 0.6 * w)).astype(np.float32)
    return replace(cell, soma=soma, territory=territory)
