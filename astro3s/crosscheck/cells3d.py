"""Three-dimensional astrocytes: an irregular ellipsoidal soma, tapered process trees, gliapil haze.

Coordinates are canvas pixels: x (columns), y (rows) and z (depth from the
focal plane, in the same pixel units). Nothing here knows about the movie's
time axis; :mod:`astro3s.crosscheck.scene` turns the projected maps into
components.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from astro3s.crosscheck.optics import axial_integral, axial_weight

#: radius classes of process points (px) and the Gaussian width each class is drawn with
_RADIUS_EDGES = np.array([0.0, 1.0, 2.0, 4.0, 8.0, np.inf])
_CLASS_SIGMA = np.array([0.35, 0.7, 1.4, 2.8, 5.0])
#: path step of the process random walks, px
STEP = 0.7


@dataclass
class Soma3D:
    """An ellipsoid with a low-order irregular surface.

    Attributes
    ----------
    centre : ndarray of float, shape (3,)
        (x, y, z), px.
    radii : ndarray of float, shape (3,)
        Semi-axes (a, b) in the lateral plane (rotated by ``angle``) and c along z.
    angle : float
        Lateral rotation of the a axis, rad.
    coef : ndarray of float, shape (19,)
        Coefficients of the radial noise on the monomials of degree 1-3 of the unit direction.
    """

    centre: np.ndarray
    radii: np.ndarray
    angle: float
    coef: np.ndarray

    @property
    def lateral_radius(self) -> float:
        """Equivalent lateral radius sqrt(a b), px."""
        return float(np.sqrt(self.radii[0] * self.radii[1]))


@dataclass
class Tree:
    """Sample points of a process tree (all arrays of length N, in growth order).

    Attributes
    ----------
    xyz : ndarray of float, shape (N, 3)
    radius : ndarray of float, shape (N,)
        Tube radius, px.
    dist : ndarray of float, shape (N,)
        Path distance from the soma surface, px.
    order : ndarray of int, shape (N,)
        1 for primary processes, 2 for their branches, ...
    seg_start, seg_stop : ndarray of int, shape (S,)
        Point range of each segment.
    seg_parent : ndarray of int, shape (S,)
        Index of the point a segment branches from; -1 for a primary (it leaves the soma).
    """

    xyz: np.ndarray
    radius: np.ndarray
    dist: np.ndarray
    order: np.ndarray
    seg_start: np.ndarray
    seg_stop: np.ndarray
    seg_parent: np.ndarray


@dataclass
class Astrocyte:
    """One astrocyte of the scene."""

    soma: Soma3D
    tree: Tree
    territory: float  # radius of the gliapil territory, px
    brightness: float  # resting brightness factor
    in_focus: bool  # a truth candidate (soma centre within ~0.6 axial FWHM of the plane)


# ---------------------------------------------------------------------------- soma


def _monomials(u: np.ndarray) -> np.ndarray:
    """Monomials of degree 1-3 of unit vectors ``u`` (..., 3) -> (..., 19)."""
    x, y, z = u[..., 0], u[..., 1], u[..., 2]
    terms = [x, y, z, x * x - 1 / 3, y * y - 1 / 3, x * y, x * z, y * z,
             x ** 3, y ** 3, z ** 3, x * x * y, x * x * z, y * y * x, y * y * z, z * z * x, z * z * y, x * y * z,
             z * z - 1 / 3]
    return np.stack(terms, axis=-1)


def draw_soma(rng: np.random.Generator, centre: np.ndarray, area: float) -> Soma3D:
    """A soma of lateral equivalent area ``area`` (px) with an irregular surface.

    Parameters
    ----------
    rng : Generator
    centre : ndarray of float, shape (3,)
    area : float
        pi a b, px.

    Returns
    -------
    soma : Soma3D
    """
    r = np.sqrt(area / np.pi)
    ecc = rng.uniform(-0.25, 0.25)
    radii = np.array([r * np.exp(ecc), r * np.exp(-ecc), r * rng.uniform(0.8, 1.15)])
    irregular = rng.uniform(0.06, 0.14)
    coef = rng.normal(0.0, irregular, 19) * np.sqrt(3.0 / 19)
    return Soma3D(np.asarray(centre, float), radii, float(rng.uniform(0, np.pi)), coef)


def _soma_frame(soma: Soma3D, rel: np.ndarray) -> np.ndarray:
    """Points relative to the centre (..., 3) in the soma's own (rotated) frame."""
    c, s = np.cos(soma.angle), np.sin(soma.angle)
    x = c * rel[..., 0] + s * rel[..., 1]
    y = -s * rel[..., 0] + c * rel[..., 1]
    return np.stack([x, y, rel[..., 2]], axis=-1)


def _radial_factor(soma: Soma3D, local: np.ndarray) -> np.ndarray:
    """1 + radial noise for directions given in the soma frame (..., 3)."""
    norm = np.linalg.norm(local, axis=-1, keepdims=True)
    u = local / np.maximum(norm, 1e-9)
    return np.clip(1.0 + _monomials(u) @ soma.coef, 0.6, 1.5)


def soma_inside(soma: Soma3D, points: np.ndarray) -> np.ndarray:
    """Whether ``points`` (..., 3) lie inside the soma -> bool (...)."""
    local = _soma_frame(soma, points - soma.centre)
    rho = np.sqrt(((local / soma.radii) ** 2).sum(-1))
    inside = rho <= 0.6  # the radial factor lies in [0.6, 1.5]: only the shell needs it
    shell = (rho > 0.6) & (rho <= 1.5)
    inside[shell] = rho[shell] <= _radial_factor(soma, local[shell])
    return inside


def surface_distance(soma: Soma3D, directions: np.ndarray) -> np.ndarray:
    """Distance from the centre to the surface along unit ``directions`` (n, 3) -> (n,)."""
    local = _soma_frame(soma, directions)
    base = 1.0 / np.sqrt(((local / soma.radii) ** 2).sum(-1))
    return base * _radial_factor(soma, local)


def project_volume(inside, z_centre: float, half_depth: float, box: tuple[int, int, int, int],
                   fwhm_z: float) -> np.ndarray:
    """In-focus weight of a uniformly fluorescent solid projected on the plane, per pixel of ``box``.

    Parameters
    ----------
    inside : callable
        ``inside(points)`` -> bool, points of shape (..., 3) in canvas (x, y, z).
    z_centre, half_depth : float
        The solid lies within ``z_centre +- half_depth``, px.
    box : (y0, x0, h, w)
        Canvas rows y0..y0+h-1 and columns x0..x0+w-1.
    fwhm_z : float
        Axial FWHM, px.

    Returns
    -------
    weight : ndarray of float32, shape (h, w)
        Sum over z of inside x axial weight x dz, divided by :func:`axial_integral`
        (an in-focus solid much thicker than the section peaks near 1).
    """
    y0, x0, h, w = box
    dz = max(0.4, half_depth / 24)
    zs = z_centre + np.arange(-half_depth, half_depth + dz / 2, dz)
    wz = axial_weight(zs, fwhm_z)
    keep = wz > 1e-4
    zs, wz = zs[keep], wz[keep]
    ys = y0 + np.arange(h, dtype=float)
    xs = x0 + np.arange(w, dtype=float)
    out = np.zeros((h, w), np.float64)
    for chunk in np.array_split(np.arange(zs.size), max(1, zs.size * h * w // 250_000)):
        if chunk.size == 0:
            continue
        grid = np.stack(np.broadcast_arrays(xs[None, None, :], ys[None, :, None], zs[chunk, None, None]), -1)
        out += (inside(grid) * wz[chunk, None, None]).sum(0)
    return (out * dz / axial_integral(fwhm_z)).astype(np.float32)


def project_soma(soma: Soma3D, box: tuple[int, int, int, int], fwhm_z: float, *, shell: float = 0.0) -> np.ndarray:
    """:func:`project_volume` of a soma, computed around the soma only -> float32 (h, w) of ``box``.

    ``shell`` > 0 (px): only a layer that thick under the soma's surface fluoresces, as with an
    indicator bound to the plasma membrane (Lck-GCaMP; the layer stands for the membrane blurred by
    the lateral resolution): the section then shows a rim around a dimmer core.
    """
    if shell > 0:
        core = Soma3D(soma.centre, np.maximum(soma.radii - float(shell), 0.25), soma.angle, soma.coef)

        def inside(pts: np.ndarray) -> np.ndarray:
            return soma_inside(soma, pts) & ~soma_inside(core, pts)
    else:
        def inside(pts: np.ndarray) -> np.ndarray:
            return soma_inside(soma, pts)
    y0, x0, h, w = box
    reach = 1.5 * float(soma.radii[:2].max()) + 2
    ya, yb = max(y0, int(np.floor(soma.centre[1] - reach))), min(y0 + h, int(np.ceil(soma.centre[1] + reach)) + 1)
    xa, xb = max(x0, int(np.floor(soma.centre[0] - reach))), min(x0 + w, int(np.ceil(soma.centre[0] + reach)) + 1)
    out = np.zeros((h, w), np.float32)
    if yb > ya and xb > xa:
        out[ya - y0:yb - y0, xa - x0:xb - x0] = project_volume(
            inside, float(soma.centre[2]), 1.6 * float(soma.radii[2]),
            (ya, xa, yb - ya, xb - xa), fwhm_z)
    return out


# ---------------------------------------------------------------------------- process trees


def _ou(rng: np.random.Generator, n: int, corr_steps: float, sd: float) -> np.ndarray:
    """Stationary Ornstein-Uhlenbeck path of ``n`` steps (correlation ``corr_steps``), sd ``sd``."""
    from scipy.signal import lfilter

    a = float(np.exp(-1.0 / max(corr_steps, 1e-3)))
    noise = rng.normal(0.0, sd * np.sqrt(1 - a * a), n)
    noise[0] = rng.normal(0.0, sd)
    return lfilter([1.0], [1.0, -a], noise)


def _walk(rng: np.random.Generator, start: np.ndarray, azimuth: float, elevation: float, length: float,
          scale: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """A persistent random walk in 3-D: points (n, 3), azimuths (n,), elevations (n,)."""
    n = max(2, int(np.ceil(length / STEP)))
    az = azimuth + _ou(rng, n, 2.0 * scale / STEP, 0.3) + _ou(rng, n, 4.0 / STEP, 0.25)
    el = np.clip(elevation + _ou(rng, n, 2.0 * scale / STEP, 0.12), -1.4, 1.4)
    d = np.stack([np.cos(el) * np.cos(az), np.cos(el) * np.sin(az), np.sin(el)], -1)
    xyz = start + STEP * np.cumsum(d, axis=0) - STEP * d[0]
    return xyz, az, el


@dataclass
class _Segment:
    start: np.ndarray
    azimuth: float
    elevation: float
    length: float
    r0: float
    order: int
    dist0: float
    parent: int


def _grow_segment(rng: np.random.Generator, seg: _Segment, r_soma: float, tip: float):
    """Points, radii, path distances, azimuths and elevations of one segment."""
    xyz, az, el = _walk(rng, seg.start, seg.azimuth, seg.elevation, seg.length, r_soma)
    s = STEP * np.arange(len(xyz))
    radius = seg.r0 * (1.0 - (1.0 - tip) * s / max(s[-1], 1e-9))
    if seg.order == 1:  # a cone that merges the process into the soma
        radius = radius + max(0.0, 0.38 * r_soma - seg.r0) * np.exp(-s / (0.3 * r_soma))
    return xyz, radius, seg.dist0 + s, az, el


def _children(rng: np.random.Generator, seg: _Segment, first: int, radius, az, el, xyz, dist,
              r_soma: float, branch_rate: float) -> list[_Segment]:
    """Branches of a grown segment (points ``first``.. of the tree)."""
    n = len(radius)
    count = min(3, rng.poisson(branch_rate * seg.length / r_soma))
    out = []
    for j in np.sort(rng.integers(int(0.15 * n), max(int(0.15 * n) + 1, int(0.85 * n)), count)):
        remaining = (n - j) * STEP
        out.append(_Segment(start=xyz[j], azimuth=float(az[j] + rng.choice([-1, 1]) * rng.uniform(0.45, 1.2)),
                            elevation=float(el[j] + rng.normal(0.0, 0.25)),
                            length=float(rng.uniform(0.35, 0.7) * remaining + rng.uniform(0.3, 0.8) * r_soma),
                            r0=float(seg.r0 * rng.uniform(0.6, 0.8)), order=seg.order + 1,
                            dist0=float(dist[j]), parent=first + int(j)))
    return out


def _primaries(rng: np.random.Generator, soma: Soma3D, r0: float, spread: float) -> list[_Segment]:
    """4-8 primary processes leaving the soma surface in 3-D directions."""
    n = int(rng.integers(4, 9))
    az = 2 * np.pi * (np.arange(n) + rng.uniform(-0.35, 0.35, n)) / n + rng.uniform(0, 2 * np.pi)
    el = np.arcsin(spread * rng.uniform(-1, 1, n))
    d = np.stack([np.cos(el) * np.cos(az), np.cos(el) * np.sin(az), np.sin(el)], -1)
    starts = soma.centre + d * (0.8 * surface_distance(soma, d))[:, None]
    r_soma = soma.lateral_radius
    reach = rng.uniform(2.0, 5.0, n) * r_soma  # from the centre
    return [_Segment(start=starts[i], azimuth=float(az[i]), elevation=float(el[i]),
                     length=float(max(reach[i] - 0.8 * r_soma, 0.8 * r_soma)),
                     r0=float(r0 * rng.uniform(0.8, 1.2)), order=1, dist0=0.0, parent=-1) for i in range(n)]


def grow_tree(rng: np.random.Generator, soma: Soma3D, *, r0: float, spread: float, max_order: int,
              branch_rate: float = 0.7) -> Tree:
    """Process tree of an astrocyte.

    Parameters
    ----------
    rng : Generator
    soma : Soma3D
    r0 : float
        Typical base radius of a primary process, px.
    spread : float
        Largest |sin elevation| of the primary processes (0: all in the soma's plane).
    max_order : int
        Highest branch order (1: primaries only).
    branch_rate : float
        Expected branches per soma radius of parent length.

    Returns
    -------
    tree : Tree
    """
    r_soma = soma.lateral_radius
    queue = _primaries(rng, soma, r0, spread)
    parts: list[tuple] = []
    starts, stops, parents = [], [], []
    n_points = 0
    while queue:
        seg = queue.pop(0)
        xyz, radius, dist, az, el = _grow_segment(rng, seg, r_soma, tip=rng.uniform(0.3, 0.45))
        parts.append((xyz, radius, dist, np.full(len(xyz), seg.order)))
        starts.append(n_points)
        stops.append(n_points + len(xyz))
        parents.append(seg.parent)
        if seg.order < max_order:
            queue.extend(_children(rng, seg, n_points, radius, az, el, xyz, dist, r_soma,
                                   branch_rate * (1.6 if seg.order > 1 else 1.0)))
        n_points += len(xyz)
    return Tree(xyz=np.concatenate([p[0] for p in parts]), radius=np.concatenate([p[1] for p in parts]),
                dist=np.concatenate([p[2] for p in parts]), order=np.concatenate([p[3] for p in parts]),
                seg_start=np.array(starts), seg_stop=np.array(stops), seg_parent=np.array(parents))


def _splat(values: np.ndarray, x: np.ndarray, y: np.ndarray, channel: np.ndarray, n_channels: int,
           shape: tuple[int, int]) -> np.ndarray:
    """Bilinear deposit of ``values`` at (x, y) into ``n_channels`` images -> (n_channels, h, w)."""
    h, w = shape
    x0, y0 = np.floor(x).astype(np.int64), np.floor(y).astype(np.int64)
    fx, fy = x - x0, y - y0
    out = np.zeros(n_channels * h * w)
    for dy, dx, wt in ((0, 0, (1 - fy) * (1 - fx)), (0, 1, (1 - fy) * fx), (1, 0, fy * (1 - fx)), (1, 1, fy * fx)):
        yy, xx = y0 + dy, x0 + dx
        ok = (yy >= 0) & (yy < h) & (xx >= 0) & (xx < w)
        flat = (channel[ok] * h + yy[ok]) * w + xx[ok]
        out += np.bincount(flat, weights=(values * wt)[ok], minlength=out.size)
    return out.reshape(n_channels, h, w)


def tube_section(radius: np.ndarray, sheath: float) -> np.ndarray:
    """Fluorescent cross-section of a process (px^2): its tube, pi r^2, plus a sheath of
    unresolved leaflets around it (``sheath`` px^2, the same for thin and thick branches)."""
    return np.pi * np.asarray(radius) ** 2 + sheath


def project_tree(tree: Tree, box: tuple[int, int, int, int], fwhm_z: float, band_edges: np.ndarray,
                 gain: float, soma: Soma3D | None = None, sheath: float = 0.0) -> np.ndarray:
    """The tree's in-focus weight per pixel of ``box``, split in bands of path distance.

    Each point carries the volume of its piece of process (:func:`tube_section` x STEP)
    times its axial weight and is drawn as a Gaussian as wide as the tube.

    Parameters
    ----------
    tree : Tree
    box : (y0, x0, h, w)
    fwhm_z : float
    band_edges : ndarray of float, shape (B + 1,)
        Path-distance edges of the bands (the last band is open-ended).
    gain : float
        Brightness of processes relative to the soma (per unit volume).
    soma : Soma3D, optional
        Tube pieces inside this soma are not drawn (the soma already is).
    sheath : float
        Cross-section of the leaflets around every branch, px^2.

    Returns
    -------
    maps : ndarray of float32, shape (B, h, w)
    """
    from scipy.ndimage import gaussian_filter

    y0, x0, h, w = box
    n_bands = len(band_edges) - 1
    band = np.clip(np.searchsorted(band_edges, tree.dist, side="right") - 1, 0, n_bands - 1)
    cls = np.clip(np.searchsorted(_RADIUS_EDGES, tree.radius, side="right") - 1, 0, len(_CLASS_SIGMA) - 1)
    mass = tube_section(tree.radius, sheath) * STEP * axial_weight(tree.xyz[:, 2], fwhm_z) * gain
    mass /= axial_integral(fwhm_z)
    if soma is not None:
        mass = mass * ~soma_inside(soma, tree.xyz)
    out = np.zeros((n_bands, h, w), np.float64)
    for c in np.unique(cls):
        sel = cls == c
        img = _splat(mass[sel], tree.xyz[sel, 0] - x0, tree.xyz[sel, 1] - y0, band[sel], n_bands, (h, w))
        out += gaussian_filter(img, sigma=(0, _CLASS_SIGMA[c], _CLASS_SIGMA[c]), mode="constant")
    return out.astype(np.float32)


# ---------------------------------------------------------------------------- gliapil haze


def project_haze(rng: np.random.Generator, soma: Soma3D, territory: float, box: tuple[int, int, int, int],
                 fwhm_z: float, density: float) -> np.ndarray:
    """Unresolved fine processes: a smooth 3-D random density in a roughly spherical territory.

    Parameters
    ----------
    rng : Generator
    soma : Soma3D
    territory : float
        Territory radius, px.
    box : (y0, x0, h, w)
    fwhm_z : float
    density : float
        Mean 3-D density inside the territory (soma = 1).

    Returns
    -------
    weight : ndarray of float32, shape (h, w)
        Projected in-focus weight (same units as :func:`project_soma`).
    """
    from scipy.ndimage import gaussian_filter, zoom

    y0, x0, h, w = box
    out = np.zeros((h, w), np.float32)
    cx, cy, cz = (float(v) for v in soma.centre)
    reach = 1.45 * territory  # the boundary wobbles by at most +-45 %
    ya, yb = max(y0, int(np.floor(cy - reach))), min(y0 + h, int(np.ceil(cy + reach)) + 1)
    xa, xb = max(x0, int(np.floor(cx - reach))), min(x0 + w, int(np.ceil(cx + reach)) + 1)
    step = max(1.5, soma.lateral_radius / 5.0)
    zs = np.arange(max(cz - reach, -2.5 * fwhm_z), min(cz + reach, 2.5 * fwhm_z) + step / 2, step)
    if yb - ya < 2 or xb - xa < 2 or zs.size < 2:
        return out
    ny, nx = max(2, int(np.ceil((yb - ya) / step)) + 1), max(2, int(np.ceil((xb - xa) / step)) + 1)
    ys, xs = ya + np.linspace(0, yb - ya - 1, ny), xa + np.linspace(0, xb - xa - 1, nx)
    field = gaussian_filter(rng.normal(size=(zs.size, ny, nx)), 1.3, mode="wrap")
    field = np.exp(0.6 * field / max(field.std(), 1e-9))
    envelope = _territory_envelope(rng, soma, territory, xs, ys, zs, step)
    dens = density * field / field.mean() * envelope
    coarse = (dens * axial_weight(zs, fwhm_z)[:, None, None]).sum(0) * step / axial_integral(fwhm_z)
    fine = zoom(coarse, ((yb - ya) / ny, (xb - xa) / nx), order=1)
    out[ya - y0:yb - y0, xa - x0:xb - x0] = np.clip(fine[:yb - ya, :xb - xa], 0, None)
    return out


def _territory_envelope(rng: np.random.Generator, soma: Soma3D, territory: float, xs: np.ndarray, ys: np.ndarray,
                        zs: np.ndarray, step: float) -> np.ndarray:
    """Soft, irregular ball of radius ~``territory`` on the grid (zs, ys, xs), 0 inside the soma."""
    cx, cy, cz = (float(v) for v in soma.centre)
    dx, dy, dz = (xs - cx)[None, None, :], (ys - cy)[None, :, None], (zs - cz)[:, None, None]
    dist = np.sqrt(dx * dx + dy * dy + dz * dz) + 1e-9
    ux, uy, uz = dx / dist, dy / dist, dz / dist
    a = rng.normal(0, 1, 8) / np.sqrt(8)
    wobble = 1.0 + 0.15 * (a[0] * ux + a[1] * uy + a[2] * uz + a[3] * (ux * ux - 1 / 3) + a[4] * (uy * uy - 1 / 3)
                           + a[5] * ux * uy + a[6] * ux * uz + a[7] * uy * uz)
    rho = dist / (territory * np.clip(wobble, 0.6, 1.45))
    envelope = np.clip(1.0 - rho ** 2, 0.0, 1.0) ** 0.6
    core = np.nonzero(dist < 1.5 * float(soma.radii.max()) + step)
    if core[0].size:
        pts = np.stack([xs[core[2]], ys[core[1]], zs[core[0]]], -1)
        envelope[core] *= ~soma_inside(soma, pts)
    return envelope
