"""Optics and detection of the held-out family: PSF, background fields, motion, PMT noise.

The PSF is a Moffat or an anisotropic Gaussian profile with a random
orientation, drawn per movie; out-of-focus objects get the same PSF convolved
with a wide Gaussian (axial defocus). Detection follows a photomultiplier: the
photon count of a pixel is Poisson, every photon is amplified by a
gamma-distributed gain (the sum of ``n`` such gains is again gamma
distributed, so the excess noise is exact), then a dark offset and Gaussian
read noise are added and the result is quantised to ``uint16``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

__all__ = [
    "Detector",
    "PSF",
    "blur_stack",
    "defocus_kernel",
    "detect",
    "pink_field",
    "psf_kernel",
    "random_walk_shifts",
    "shift_crop",
]


@dataclass(frozen=True)
class PSF:
    """Lateral point-spread function.

    Attributes
    ----------
    kind : {"moffat", "gaussian"}
    fwhm : float
        Full width at half maximum along the major axis (px).
    beta : float
        Moffat exponent (ignored for a Gaussian); small = heavy tails.
    axis_ratio : float
        Major / minor axis (>= 1).
    angle : float
        Orientation of the major axis (radians).
    """

    kind: str
    fwhm: float
    beta: float
    axis_ratio: float
    angle: float


def psf_kernel(psf: PSF) -> np.ndarray:
    """Normalised kernel of a PSF.

    Returns
    -------
    kernel : ndarray of float32, shape (2k + 1, 2k + 1)
        Sums to 1; ``k`` covers the tails (about 4 FWHM for Moffat, 2 for Gaussian).
    """
    reach = psf.fwhm * (2.2 if psf.kind == "moffat" else 1.3)
    k = max(2, int(np.ceil(reach)))
    yy, xx = np.mgrid[-k: k + 1, -k: k + 1].astype(np.float64)
    c, s = np.cos(psf.angle), np.sin(psf.angle)
    u = xx * c + yy * s
    v = (-xx * s + yy * c) * psf.axis_ratio
    r2 = u ** 2 + v ** 2
    if psf.kind == "moffat":
        alpha = psf.fwhm / (2.0 * np.sqrt(2.0 ** (1.0 / psf.beta) - 1.0))
        kernel = (1.0 + r2 / alpha ** 2) ** (-psf.beta)
    elif psf.kind == "gaussian":
        sigma = psf.fwhm / 2.3548
        kernel = np.exp(-0.5 * r2 / sigma ** 2)
    else:
        raise ValueError(f"unknown PSF kind {psf.kind!r}")
    return (kernel / kernel.sum()).astype(np.float32)


def defocus_kernel(kernel: np.ndarray, sigma: float) -> np.ndarray:
    """A PSF kernel widened by a Gaussian of ``sigma`` px (an object out of the focal plane).

    Parameters
    ----------
    kernel : ndarray of float32, shape (m, m)
    sigma : float

    Returns
    -------
    wide : ndarray of float32, shape (m + 2j, m + 2j), sums to 1
    """
    j = int(np.ceil(3 * sigma))
    g = np.exp(-0.5 * (np.arange(-j, j + 1) / sigma) ** 2)
    out = blur_stack(np.pad(kernel, j)[None], np.outer(g, g).astype(np.float32))[0]
    return (out / out.sum()).astype(np.float32)


def blur_stack(stack: np.ndarray, kernel: np.ndarray) -> np.ndarray:
    """Convolve every image of a stack with one odd-sized kernel (same size, zero outside).

    Parameters
    ----------
    stack : ndarray of float32, shape (K, h, w)
    kernel : ndarray of float32, shape (m, n), ``m`` and ``n`` odd

    Returns
    -------
    blurred : ndarray of float32, shape (K, h, w), non-negative
    """
    from scipy import fft

    h, w = stack.shape[1:]
    m, n = kernel.shape
    full = (h + m - 1, w + n - 1)
    size = [fft.next_fast_len(v, real=True) for v in full]
    spec = fft.rfft2(stack, size, axes=(1, 2)) * fft.rfft2(kernel, size)
    out = fft.irfft2(spec, size, axes=(1, 2))[:, (m - 1) // 2: (m - 1) // 2 + h, (n - 1) // 2: (n - 1) // 2 + w]
    return np.maximum(out, 0.0).astype(np.float32)


def pink_field(rng: np.random.Generator, shape: tuple[int, int], *, exponent: float,
               contrast: float) -> np.ndarray:
    """A positive 1/f^exponent spatial noise field of mean 1.

    Parameters
    ----------
    rng : numpy.random.Generator
    shape : (int, int)
    exponent : float
        Power-spectrum exponent (1 = pink, 2 = brown).
    contrast : float
        Standard deviation of the log-field.

    Returns
    -------
    field : ndarray of float32, shape (H, W)
    """
    fy = np.fft.fftfreq(shape[0])[:, None]
    fx = np.fft.rfftfreq(shape[1])[None, :]
    f = np.hypot(fy, fx)
    f[0, 0] = np.inf
    amp = f ** (-exponent / 2.0)
    spec = np.fft.rfft2(rng.standard_normal(shape)) * amp
    z = np.fft.irfft2(spec, s=shape)
    z = (z - z.mean()) / max(float(z.std()), 1e-12)
    field = np.exp(contrast * z)
    return (field / field.mean()).astype(np.float32)


def random_walk_shifts(rng: np.random.Generator, n_frames: int, *, sd: float, limit: float) -> np.ndarray:
    """Rigid sub-pixel motion: a zero-mean random walk scaled to a standard deviation.

    Parameters
    ----------
    rng : numpy.random.Generator
    n_frames : int
    sd : float
        Wanted standard deviation per axis (px); 0 gives no motion.
    limit : float
        Largest absolute shift (px).

    Returns
    -------
    shifts : ndarray of float64, shape (T, 2)
        ``(dy, dx)`` per frame.
    """
    if sd <= 0 or n_frames < 2:
        return np.zeros((n_frames, 2))
    walk = np.cumsum(rng.standard_normal((n_frames, 2)), axis=0)
    walk += 0.5 * rng.standard_normal((n_frames, 2))  # jitter on top of the drift
    walk -= walk.mean(axis=0)
    walk *= sd / np.maximum(walk.std(axis=0), 1e-9)
    return np.clip(walk, -limit, limit)


def shift_crop(frames: np.ndarray, shifts: np.ndarray, *, margin: int, out_shape: tuple[int, int]) -> np.ndarray:
    """Shift every frame by its own sub-pixel offset (bilinear) and crop the margin away.

    Parameters
    ----------
    frames : ndarray of float32, shape (t, H + 2 margin, W + 2 margin)
    shifts : ndarray of float64, shape (t, 2)
        Content displacement ``(dy, dx)`` per frame, ``|shift| < margin - 1``.
    margin : int
    out_shape : (int, int)
        ``(H, W)``.

    Returns
    -------
    out : ndarray of float32, shape (t, H, W)
    """
    if not np.any(shifts):
        return frames[:, margin: margin + out_shape[0], margin: margin + out_shape[1]].copy()
    src = margin - shifts  # source coordinate of output pixel 0 (content moves by +shift)
    base = np.floor(src).astype(np.int64)
    frac = (src - base).astype(np.float32)
    t = np.arange(frames.shape[0])[:, None, None]
    rows = base[:, 0, None, None] + np.arange(out_shape[0])[None, :, None]
    cols = base[:, 1, None, None] + np.arange(out_shape[1])[None, None, :]
    fy = frac[:, 0, None, None]
    fx = frac[:, 1, None, None]
    out = frames[t, rows, cols] * ((1 - fy) * (1 - fx))
    out += frames[t, rows + 1, cols] * (fy * (1 - fx))
    out += frames[t, rows, cols + 1] * ((1 - fy) * fx)
    out += frames[t, rows + 1, cols + 1] * (fy * fx)
    return out


@dataclass(frozen=True)
class Detector:
    """Photomultiplier detection chain.

    Attributes
    ----------
    photons_per_unit : float
        Mean detected photons per frame for a fluorescence of 1 (a resting soma).
    gain : float
        Mean output (ADU) per photon.
    gain_shape : float
        Shape of the per-photon gamma gain; excess noise factor ``1 + 1 / gain_shape``.
    offset : float
        Dark offset (ADU).
    read_noise : float
        Gaussian read noise (ADU).
    correlated_fraction : float
        Fraction of the noise variance that is spatially correlated (0: white
        noise, the shot and read noise of independent pixels). Recordings
        that were resampled, line-averaged or denoised have neighbouring pixels'
        noise correlated: frame differences of the astroCaST test crop
        correlate 0.15 at 1 px and 0.07 at 2 px, which a fraction of 0.2 with
        ``correlated_sigma`` 1 reproduces (0.16 and 0.07).
    correlated_sigma : float
        Gaussian scale (px) of the correlated part.
    """

    photons_per_unit: float
    gain: float
    gain_shape: float
    offset: float
    read_noise: float
    correlated_fraction: float = 0.0
    correlated_sigma: float = 1.0


def detect(rng: np.random.Generator, clean: np.ndarray, detector: Detector) -> np.ndarray:
    """Turn noise-free fluorescence into PMT counts.

    Parameters
    ----------
    rng : numpy.random.Generator
    clean : ndarray of float32, shape (t, H, W)
        Fluorescence (1 = resting soma), non-negative.
    detector : Detector

    Returns
    -------
    counts : ndarray of uint16, shape (t, H, W)
    """
    photons = rng.poisson(np.maximum(clean, 0.0) * detector.photons_per_unit)
    amplified = rng.standard_gamma(photons * detector.gain_shape).astype(np.float32)
    amplified *= detector.gain / detector.gain_shape
    amplified += detector.offset
    amplified += rng.standard_normal(clean.shape, dtype=np.float32) * detector.read_noise
    if detector.correlated_fraction > 0:
        amplified = _correlate_noise(rng, amplified, clean, detector)
    return np.clip(np.rint(amplified), 0, 65535).astype(np.uint16)


def _correlate_noise(rng: np.random.Generator, amplified: np.ndarray, clean: np.ndarray,
                     detector: Detector) -> np.ndarray:
    """Replace a fraction of the noise variance by spatially smooth noise of the same local variance."""
    from scipy import ndimage

    fraction, sigma = float(detector.correlated_fraction), float(detector.correlated_sigma)
    photons = np.maximum(clean, 0.0) * np.float32(detector.photons_per_unit)
    expected = photons * np.float32(detector.gain) + np.float32(detector.offset)
    # variance of the gamma-amplified Poisson count plus the read noise
    variance = photons * np.float32(detector.gain ** 2 * (1.0 + 1.0 / detector.gain_shape)) + np.float32(
        detector.read_noise ** 2)
    smooth = ndimage.gaussian_filter(rng.standard_normal(clean.shape, dtype=np.float32), (0, sigma, sigma))
    delta = np.zeros((1, 33, 33), np.float32)
    delta[0, 16, 16] = 1.0
    smooth /= np.float32(np.sqrt(np.sum(ndimage.gaussian_filter(delta, (0, sigma, sigma)) ** 2)))  # unit variance
    noise = amplified - expected
    return expected + np.float32(np.sqrt(1.0 - fraction)) * noise + np.float32(np.sqrt(fraction)) * np.sqrt(
        variance) * smooth
