"""The optical section: axial weighting of 3-D elements and the lateral PSF.

z is measured in lateral pixels (the pixel size is :attr:`MovieParams.um_per_px`
in both directions), the focal plane is z = 0.
"""

from __future__ import annotations

import numpy as np

_FOUR_LN2 = 4.0 * np.log(2.0)


def axial_weight(z: np.ndarray, fwhm_z: float) -> np.ndarray:
    """Weight of an element at depth ``z`` (Gaussian axial PSF, 1 in the focal plane).

    Parameters
    ----------
    z : ndarray of float
        Depth(s) from the focal plane, lateral-pixel units.
    fwhm_z : float
        Axial FWHM, same units.

    Returns
    -------
    weight : ndarray of float, shape of ``z``, in (0, 1]
    """
    z = np.asarray(z, dtype=np.float64)
    return np.exp(-_FOUR_LN2 * (z / fwhm_z) ** 2)


def axial_integral(fwhm_z: float) -> float:
    """Integral of :func:`axial_weight` over all z (a thick slab's projected brightness)."""
    return float(fwhm_z * np.sqrt(np.pi / _FOUR_LN2))


def lateral_kernel(sigma: float, tail: float, gamma: float, radius: int) -> np.ndarray:
    """Lateral PSF: a Gaussian core mixed with a 2-D Cauchy (Lorentzian) tail, sum 1.

    Parameters
    ----------
    sigma : float
        Standard deviation of the Gaussian core, px.
    tail : float
        Fraction of the kernel's mass in the Cauchy tail, in [0, 1).
    gamma : float
        Half-width of the Cauchy tail, px.
    radius : int
        The kernel is truncated to ``(2 * radius + 1)`` px square.

    Returns
    -------
    kernel : ndarray of float64, shape (2 * radius + 1, 2 * radius + 1)
    """
    r = np.arange(-radius, radius + 1, dtype=np.float64)
    rr = r[:, None] ** 2 + r[None, :] ** 2
    core = np.exp(-0.5 * rr / sigma ** 2)
    cauchy = (1.0 + rr / gamma ** 2) ** -1.5  # 2-D Cauchy profile
    kernel = (1.0 - tail) * core / core.sum() + tail * cauchy / cauchy.sum()
    return kernel / kernel.sum()


def kernel_otf(kernel: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """Optical transfer function of a centred kernel on a canvas (for ``scipy.fft.rfft2``).

    Parameters
    ----------
    kernel : ndarray, shape (k, k), k odd
    shape : (int, int)
        Canvas (H, W), each at least k.

    Returns
    -------
    otf : ndarray of complex64, shape (H, W // 2 + 1)
    """
    import scipy.fft

    k = kernel.shape[0] // 2
    padded = np.zeros(shape, dtype=np.float64)
    padded[: 2 * k + 1, : 2 * k + 1] = kernel
    padded = np.roll(padded, (-k, -k), axis=(0, 1))
    return scipy.fft.rfft2(padded).astype(np.complex64)


def blur(image: np.ndarray, kernel: np.ndarray) -> np.ndarray:
    """``image`` convolved with ``kernel`` ('same' size, zero outside).

    Parameters
    ----------
    image : ndarray of float, shape (H, W)
    kernel : ndarray of float, shape (k, k)

    Returns
    -------
    blurred : ndarray of float64, shape (H, W)
    """
    from scipy.signal import fftconvolve

    return fftconvolve(np.asarray(image, dtype=np.float64), kernel, mode="same")
