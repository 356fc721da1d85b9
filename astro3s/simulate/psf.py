"""The simulator's point-spread function: one place for its blur in space and in frequency.

The PSF is a Gaussian of sd ``psf_sigma`` px, optionally elongated along one
image axis (``psf_anisotropy`` = sd along y / sd along x, the area kept: what
line averaging, resampling or an astigmatic scan leaves) and optionally with a
broad halo (``psf_halo``, the fraction of the light scattered into a Gaussian
:data:`HALO_SCALE` times wider: what deep tissue does). With the defaults
(anisotropy 1, no halo) every function here makes exactly the calls the
simulator made before these options existed, so earlier movies are redrawn
byte for byte.
"""

from __future__ import annotations

import math

import numpy as np
from scipy import ndimage as ndi

__all__ = ["HALO_SCALE", "psf_blur", "psf_margin", "psf_otf", "psf_reach"]

#: The halo's sd in units of the core's.
HALO_SCALE = 3.0


def _core_sigmas(params) -> tuple[float, float]:
    root = math.sqrt(float(params.psf_anisotropy))
    return params.psf_sigma * root, params.psf_sigma / root


def _is_plain(params) -> bool:
    return params.psf_anisotropy == 1.0 and params.psf_halo == 0.0


def psf_reach(params) -> float:
    """4 sd of the PSF's widest component, in px: beyond it the blur has no weight."""
    sy, sx = _core_sigmas(params)
    return 4 * max(sy, sx) * (HALO_SCALE if params.psf_halo > 0 else 1.0)


def psf_margin(params) -> int:
    """Whole pixels of margin a window needs around what it blurs."""
    return int(math.ceil(psf_reach(params))) + 1


def psf_blur(image: np.ndarray, params, *, mode: str = "nearest", output: np.ndarray | None = None) -> np.ndarray:
    """Blur the last two axes of ``image`` by the PSF of ``params``.

    Parameters
    ----------
    image : ndarray, shape (..., H, W), float
    params : SimulationParams
    mode : str
        Border mode of :func:`scipy.ndimage.gaussian_filter`.
    output : ndarray, optional
        Written in place when given (same shape and dtype as ``image``).

    Returns
    -------
    ndarray, same shape as ``image``
    """
    lead = (0,) * (image.ndim - 2)
    if _is_plain(params):
        sigma = params.psf_sigma if image.ndim == 2 else (*lead, params.psf_sigma, params.psf_sigma)
        return ndi.gaussian_filter(image, sigma, mode=mode, output=output)
    sy, sx = _core_sigmas(params)
    halo = float(params.psf_halo)
    core = ndi.gaussian_filter(image, (*lead, sy, sx), mode=mode)
    if halo > 0:
        wide = ndi.gaussian_filter(image, (*lead, sy * HALO_SCALE, sx * HALO_SCALE), mode=mode)
        core = (1 - halo) * core + halo * wide
    if output is None:
        return core.astype(image.dtype, copy=False)
    output[...] = core
    return output


def psf_otf(params, ky: np.ndarray, kx: np.ndarray) -> np.ndarray:
    """The PSF's transfer function on a frequency grid (cycles/px).

    Parameters
    ----------
    params : SimulationParams
    ky : ndarray, shape (Hc,), float32
    kx : ndarray, shape (Wc // 2 + 1,), float32
        As :func:`scipy.fft.fftfreq` / ``rfftfreq`` give them.

    Returns
    -------
    ndarray of float32, shape (Hc, Wc // 2 + 1)
    """
    if _is_plain(params):
        s2 = 2 * np.pi**2 * params.psf_sigma**2
        return np.exp(-s2 * (ky[:, None] ** 2 + kx[None, :] ** 2)).astype(np.float32)
    sy, sx = _core_sigmas(params)

    def gaussian(scale: float) -> np.ndarray:
        return np.exp(-2 * np.pi**2 * scale**2 * ((sy * ky[:, None]) ** 2 + (sx * kx[None, :]) ** 2))

    halo = float(params.psf_halo)
    otf = gaussian(1.0) if halo == 0 else (1 - halo) * gaussian(1.0) + halo * gaussian(HALO_SCALE)
    return otf.astype(np.float32)
