"""Everything that is not a truth cell: tissue, neuropil boutons, neurons and dark vessels.

All maps are canvas-sized or patches in canvas coordinates, in the same
brightness units as the astrocytes (an in-focus resting soma peaks near 1).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from astro3s.crosscheck.cells3d import _splat, project_volume
from astro3s.crosscheck.optics import axial_weight


#: most bouton groups (axons) of a scene; each is one component of the movie
MAX_AXONS = 200


@dataclass
class Patch:
    """A spatial map placed at canvas row ``y0`` and column ``x0`` (float32 ``data``, shape (h, w))."""

    y0: int
    x0: int
    data: np.ndarray


def _smooth_field(rng: np.random.Generator, shape: tuple[int, int], sigma: float) -> np.ndarray:
    """Zero-mean, unit-sd smooth Gaussian random field -> float64 (H, W)."""
    from scipy.ndimage import gaussian_filter

    f = gaussian_filter(rng.normal(size=shape), sigma, mode="wrap")
    return (f - f.mean()) / max(f.std(), 1e-12)


def _fibre_points(rng: np.random.Generator, n: int, shape: tuple[int, int], theta0: float, kappa: float,
                  px: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Points every 0.5 px along ``n`` gently curved fibres 5-30 um long: x, y, fibre index."""
    theta = rng.vonmises(theta0, kappa, n)
    length = rng.uniform(5, 30, n) / px
    steps = np.ceil(length / 0.5).astype(int) + 1
    idx = np.repeat(np.arange(n), steps)
    s = np.concatenate([np.arange(k) * 0.5 for k in steps])
    bend = rng.normal(0, 0.012 * px, n)  # curvature, rad / px
    angle = theta[idx] + bend[idx] * s
    x0 = rng.uniform(0, shape[1], n)[idx]
    y0 = rng.uniform(0, shape[0], n)[idx]
    return x0 + s * np.cos(angle), y0 + s * np.sin(angle), idx


def tissue_background(rng: np.random.Generator, shape: tuple[int, int], level: float,
                      um_per_px: float) -> np.ndarray:
    """Static tissue fluorescence: oriented thin fibres on a patchy smooth floor.

    Parameters
    ----------
    rng : Generator
    shape : (int, int)
        Canvas (H, W).
    level : float
        Median of the result.
    um_per_px : float
        Pixel size: fibres are 0.3-1 um thick and 5-30 um long, the floor varies over 10-25 um.

    Returns
    -------
    background : ndarray of float32, shape (H, W)
    """
    from scipy.ndimage import gaussian_filter

    n = int(shape[0] * shape[1] * um_per_px ** 2 / rng.uniform(15, 40))
    x, y, idx = _fibre_points(rng, n, shape, rng.uniform(0, np.pi), rng.uniform(0.3, 3.0), um_per_px)
    weight = rng.lognormal(0.0, 0.6, n)[idx]
    thick = rng.random(n)[idx] < 0.3
    fibres = np.zeros(shape)
    for sel, sigma_um in ((~thick, 0.3), (thick, 0.6)):
        sigma = max(0.6, sigma_um / um_per_px)
        img = _splat(weight[sel], x[sel], y[sel], np.zeros(int(sel.sum()), int), 1, shape)[0]
        fibres += gaussian_filter(img, sigma) * sigma
    fibres /= max(np.percentile(fibres, 99.5), 1e-9)
    floor = np.exp(0.25 * _smooth_field(rng, shape, rng.uniform(10, 25) / um_per_px))
    rows, cols = np.mgrid[0:shape[0], 0:shape[1]]
    r2 = ((rows - shape[0] / 2) / shape[0]) ** 2 + ((cols - shape[1] / 2) / shape[1]) ** 2
    vignette = 1.0 - rng.uniform(0.0, 0.5) * r2
    bg = floor * (0.8 + rng.uniform(0.15, 0.4) * fibres) * vignette
    return (bg * level / np.median(bg)).astype(np.float32)


def bouton_groups(rng: np.random.Generator, shape: tuple[int, int], density: float, fwhm_z: float,
                  brightness: float, um_per_px: float) -> list[Patch]:
    """Boutons (0.5-1 um puncta) strung along axons; each axon's boutons share one patch (and trace).

    Parameters
    ----------
    rng : Generator
    shape : (int, int)
        Canvas (H, W).
    density : float
        Boutons per um^2.
    fwhm_z : float
        Axial FWHM, px (an axon crosses depths within +-2 FWHM).
    brightness : float
        Median in-focus peak of a bouton at rest.
    um_per_px : float

    Returns
    -------
    patches : list of Patch
    """
    from scipy.ndimage import gaussian_filter

    n_boutons = int(density * shape[0] * shape[1] * um_per_px ** 2)
    per_axon = max(1.0, n_boutons / MAX_AXONS)  # at most MAX_AXONS components: long axons when dense
    patches = []
    while n_boutons > 0:
        k = int(min(n_boutons, max(rng.integers(4, 16), rng.uniform(0.7, 1.3) * per_axon)))
        n_boutons -= k
        angle, tilt = rng.uniform(0, np.pi), rng.normal(0, 0.2)
        s = np.cumsum(rng.uniform(2, 6, k)) / um_per_px
        s -= s.mean()
        cx, cy, cz = rng.uniform(0, shape[1]), rng.uniform(0, shape[0]), rng.uniform(-2, 2) * fwhm_z
        x = cx + s * np.cos(angle) + rng.normal(0, 0.5 / um_per_px, k)
        y = cy + s * np.sin(angle) + rng.normal(0, 0.5 / um_per_px, k)
        sigma = max(0.5, rng.uniform(0.25, 0.45) / um_per_px)
        mass = brightness * rng.lognormal(0, 0.4, k) * axial_weight(cz + tilt * s, fwhm_z) * 2 * np.pi * sigma ** 2
        pad = int(np.ceil(3 * sigma)) + 2
        x0, y0 = int(np.floor(x.min())) - pad, int(np.floor(y.min())) - pad
        h, w = int(np.ceil(y.max())) - y0 + pad + 1, int(np.ceil(x.max())) - x0 + pad + 1
        img = _splat(mass, x - x0, y - y0, np.zeros(k, int), 1, (h, w))[0]
        patches.append(Patch(y0, x0, gaussian_filter(img, sigma).astype(np.float32)))
    return patches


@dataclass
class Neuron:
    """A neuron soma: a sphere with a dark (nucleus-excluded) nucleus."""

    centre: np.ndarray  # (3,) x, y, z, px
    radius: float  # px
    nucleus: float  # nucleus radius, px
    nucleus_offset: np.ndarray  # (3,), px


def draw_neuron(rng: np.random.Generator, centre: np.ndarray, um_per_px: float) -> Neuron:
    """A neuron of 7-12 um diameter whose nucleus takes 55-75 % of it."""
    r = rng.uniform(3.5, 6.0) / um_per_px
    nuc = r * rng.uniform(0.55, 0.75)
    return Neuron(np.asarray(centre, float), float(r), float(nuc), rng.normal(0, 0.1 * r, 3))


def neuron_patch(neuron: Neuron, fwhm_z: float, brightness: float) -> Patch:
    """Projected resting image of a neuron (a ring in focus, a blurred disc away from it)."""
    c = neuron.centre
    reach = int(np.ceil(neuron.radius)) + 2
    box = (int(np.floor(c[1])) - reach, int(np.floor(c[0])) - reach, 2 * reach + 2, 2 * reach + 2)

    def inside(p: np.ndarray) -> np.ndarray:
        shell = ((p - c) ** 2).sum(-1) <= neuron.radius ** 2
        return shell & (((p - c - neuron.nucleus_offset) ** 2).sum(-1) > neuron.nucleus ** 2)

    img = project_volume(inside, float(c[2]), neuron.radius, box, fwhm_z)
    return Patch(box[0], box[1], (img * brightness).astype(np.float32))


@dataclass
class Vessel:
    """A dark blood vessel crossing the FOV."""

    depth: np.ndarray  # float32 (H, W): fraction of fluorescence removed at rest, 0 outside
    width: float  # px
    distance: np.ndarray  # float32 (H, W): distance to the centre line, px


def draw_vessel(rng: np.random.Generator, shape: tuple[int, int], um_per_px: float) -> Vessel:
    """A vessel 4-12 um wide (6-60 px) on a smooth path across the canvas, fluorescence 10-40 % inside."""
    from scipy.ndimage import distance_transform_edt, gaussian_filter

    from astro3s.crosscheck.cells3d import _ou

    h, w = shape
    width = float(np.clip(rng.uniform(4.0, 12.0) / um_per_px, 6.0, 60.0))
    side = rng.integers(4)
    start = {0: (0.0, rng.uniform(0, h)), 1: (w - 1.0, rng.uniform(0, h)),
             2: (rng.uniform(0, w), 0.0), 3: (rng.uniform(0, w), h - 1.0)}[int(side)]
    heading = {0: 0.0, 1: np.pi, 2: np.pi / 2, 3: -np.pi / 2}[int(side)] + rng.uniform(-0.6, 0.6)
    n = int(3 * (h + w))
    angle = heading + _ou(rng, n, 60.0, 0.35)
    x = start[0] + np.cumsum(np.cos(angle))
    y = start[1] + np.cumsum(np.sin(angle))
    ok = (x >= 0) & (x < w) & (y >= 0) & (y < h)
    line = np.ones(shape, bool)
    line[np.rint(y[ok]).astype(int).clip(0, h - 1), np.rint(x[ok]).astype(int).clip(0, w - 1)] = False
    dist = distance_transform_edt(line)
    edge = gaussian_filter(np.clip(width / 2 + 0.5 - dist, 0.0, 1.0), 1.0)  # a smooth wall, no staircase
    return Vessel((edge * rng.uniform(0.6, 0.9)).astype(np.float32), width, dist.astype(np.float32))
