"""Footprints of the objects an ideal method must ignore: neurons, blobs, vessels, endfeet.

Out-of-focus astrocytes are ordinary astrocytes (:mod:`.morphology`) drawn
with a defocused PSF, so they need nothing here.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

__all__ = ["Vessel", "blob_footprint", "endfoot_mask", "neuron_footprint", "trace_vessel"]


def _soft_ellipse(shape: tuple[int, int], centre: tuple[float, float], radius: float, *,
                  axis_ratio: float = 1.0, angle: float = 0.0) -> np.ndarray:
    """Anti-aliased filled ellipse of equivalent radius ``radius``, float32 (h, w) in [0, 1]."""
    yy, xx = np.mgrid[: shape[0], : shape[1]].astype(np.float32)
    dy, dx = yy - centre[0], xx - centre[1]
    c, s = np.cos(angle), np.sin(angle)
    a, b = radius * np.sqrt(axis_ratio), radius / np.sqrt(axis_ratio)
    rho = np.hypot((dx * c + dy * s) / a, (-dx * s + dy * c) / b)  # 1 on the border
    return np.clip((1.0 - rho) * min(a, b) + 0.5, 0.0, 1.0).astype(np.float32)


def neuron_footprint(rng: np.random.Generator, area: float, *, offset: tuple[float, float],
                     pad: int) -> np.ndarray:
    """A round neuronal soma with a dark nucleus (a bright ring), no processes.

    Parameters
    ----------
    rng : numpy.random.Generator
    area : float
        Soma area (px), 80-200 for the family.
    offset : (float, float)
        Sub-pixel offset of the centre from the patch centre.
    pad : int
        Extra border (px), e.g. for the PSF tails.

    Returns
    -------
    footprint : ndarray of float32, shape (2k + 1, 2k + 1)
        Peak ~1 on the ring, 0.1-0.35 in the nucleus.
    """
    r = float(np.sqrt(area / np.pi))
    half = int(np.ceil(r * 1.3)) + 2 + int(pad)
    shape = (2 * half + 1, 2 * half + 1)
    centre = (half + offset[0], half + offset[1])
    angle = rng.uniform(0.0, np.pi)
    body = _soft_ellipse(shape, centre, r, axis_ratio=rng.uniform(1.0, 1.3), angle=angle)
    shift = rng.uniform(-0.15, 0.15, 2) * r
    nucleus = _soft_ellipse(shape, (centre[0] + shift[0], centre[1] + shift[1]),
                            r * rng.uniform(0.55, 0.72), axis_ratio=rng.uniform(1.0, 1.2), angle=angle)
    return (body * (1.0 - (1.0 - rng.uniform(0.1, 0.35)) * nucleus)).astype(np.float32)


def blob_footprint(sigma: float, *, offset: tuple[float, float], pad: int) -> np.ndarray:
    """A soft round Gaussian blob of peak 1, float32 (2k + 1, 2k + 1), ``k ~ 3 sigma + pad``."""
    half = int(np.ceil(3.0 * sigma)) + int(pad)
    yy, xx = np.mgrid[-half: half + 1, -half: half + 1].astype(np.float32)
    return np.exp(-0.5 * ((yy - offset[0]) ** 2 + (xx - offset[1]) ** 2) / sigma ** 2).astype(np.float32)


@dataclass(frozen=True)
class Vessel:
    """A blood vessel crossing the canvas.

    Attributes
    ----------
    dist : ndarray of float32, shape (H, W)
        Distance of every canvas pixel to the centre line (px).
    arc : ndarray of float32, shape (H, W)
        Arc length (px) of the nearest centre-line point.
    side : ndarray of int8, shape (H, W)
        Which side of the centre line the pixel is on (+1 / -1).
    half_width : float
        Lumen half-width (px).
    arc_inside : (float, float)
        Arc-length range of the centre line inside the FOV.
    """

    dist: np.ndarray
    arc: np.ndarray
    side: np.ndarray
    half_width: float
    arc_inside: tuple[float, float]

    def lumen(self) -> np.ndarray:
        """Anti-aliased lumen mask, float32 (H, W) in [0, 1]."""
        return np.clip(self.half_width + 0.5 - self.dist, 0.0, 1.0).astype(np.float32)


def trace_vessel(rng: np.random.Generator, shape: tuple[int, int], *, width: float,
                 fov: tuple[int, int, int, int]) -> Vessel:
    """A gently curving vessel crossing the canvas through the FOV.

    Parameters
    ----------
    rng : numpy.random.Generator
    shape : (int, int)
        Canvas shape.
    width : float
        Lumen width (px).
    fov : (int, int, int, int)
        ``(y0, x0, y1, x1)`` of the FOV inside the canvas.

    Returns
    -------
    vessel : Vessel
    """
    from scipy import ndimage as ndi

    y0, x0, y1, x1 = fov
    p0 = np.array([rng.uniform(y0 + 0.2 * (y1 - y0), y1 - 0.2 * (y1 - y0)),
                   rng.uniform(x0 + 0.2 * (x1 - x0), x1 - 0.2 * (x1 - x0))])
    theta = rng.uniform(0.0, np.pi)
    u = np.array([np.sin(theta), np.cos(theta)])
    n = np.array([u[1], -u[0]])
    length = float(np.hypot(*shape))
    s = np.arange(-length, length, 0.4)
    wave = rng.uniform(0.0, 12.0) * np.sin(2 * np.pi * s / rng.uniform(80.0, 250.0) + rng.uniform(0, 2 * np.pi))
    pts = p0[None, :] + s[:, None] * u[None, :] + wave[:, None] * n[None, :]
    tangent = np.gradient(pts, axis=0)
    ij = np.rint(pts).astype(np.int64)
    ok = (ij[:, 0] >= 0) & (ij[:, 0] < shape[0]) & (ij[:, 1] >= 0) & (ij[:, 1] < shape[1])
    index = np.full(shape, -1, dtype=np.int64)
    index[ij[ok, 0], ij[ok, 1]] = np.flatnonzero(ok)
    dist, (iy, ix) = ndi.distance_transform_edt(index < 0, return_indices=True)
    near = index[iy, ix]
    yy, xx = np.mgrid[: shape[0], : shape[1]]
    cross = tangent[near, 0] * (xx - pts[near, 1]) - tangent[near, 1] * (yy - pts[near, 0])
    inside = ok & (ij[:, 0] >= y0) & (ij[:, 0] < y1) & (ij[:, 1] >= x0) & (ij[:, 1] < x1)
    s_in = s[inside] if inside.any() else s[ok]
    return Vessel(dist=dist.astype(np.float32), arc=s[near].astype(np.float32),
                  side=np.where(cross >= 0, 1, -1).astype(np.int8), half_width=0.5 * float(width),
                  arc_inside=(float(s_in.min()), float(s_in.max())))


def endfoot_mask(vessel: Vessel, *, side: int, start: float, length: float, thickness: float) -> np.ndarray:
    """A bright astrocytic endfoot hugging one wall of a vessel.

    Parameters
    ----------
    vessel : Vessel
    side : {1, -1}
    start, length : float
        Arc-length interval covered (px).
    thickness : float
        Radial thickness (px).

    Returns
    -------
    footprint : ndarray of float32, shape (H, W), in [0, 1]
    """
    from scipy import ndimage as ndi

    hw = vessel.half_width
    mask = ((vessel.dist >= hw) & (vessel.dist <= hw + thickness) & (vessel.side == side)
            & (vessel.arc >= start) & (vessel.arc <= start + length))
    return ndi.gaussian_filter(mask.astype(np.float32), 0.7)
