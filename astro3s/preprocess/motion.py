"""Stage 1: rigid motion correction by sub-pixel cross-correlation.

Each frame's translation relative to a reference image is the position of the
peak of their cross-correlation, found on the FFT grid and then refined to
``1 / upsample_factor`` px by evaluating the correlation's Fourier series on a
fine grid around the peak (the matrix-multiply DFT of Guizar-Sicairos et al.
2008, the method of ``skimage.registration.phase_cross_correlation`` used by
ASTRA), batched over frames. Both images are band-passed in Fourier space
first: the high-pass removes the slow brightness changes of calcium transients
and bleaching that would otherwise pull the peak, the low-pass the shot noise.
Frames are corrected by a Fourier shift (phase ramp), so no interpolation
kernel blurs them.

Public steps, which the pipeline (:mod:`~astro3s.preprocess.streaming`)
calls: :func:`build_reference` (reference image from a sample of frames),
:func:`register_frames` (shifts of a block of frames and the corrected
block, from one FFT), :func:`register_spectra` (shifts from spectra),
:func:`fourier_shift` (the phase ramp) and :func:`correct_frames`;
:func:`estimate_shifts` registers a whole movie. :class:`CorrectedMovie` is
the corrected movie (in memory, in a temporary :class:`FrameFile`, or
corrected on read), and :func:`as_movie` wraps arrays and paths as movies.

Sign convention: ``shifts[t] = (dy, dx)`` is the displacement of frame ``t``
relative to the reference, ``frame_t(y, x) ~ reference(y - dy, x - dx)``; the
correction moves the frame by ``(-dy, -dx)``.
"""

from __future__ import annotations

import logging
import os
import tempfile
import threading
import weakref
from collections.abc import Iterator
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np

from astro3s.preprocess._backend import (_workers, block_ranges, cache_block_frames, irfft2, irfft2_rows, map_blocks,
                                         rfft2)

__all__ = [
    "CorrectedMovie",
    "FrameFile",
    "as_movie",
    "bandpass_filter",
    "build_reference",
    "correct_frames",
    "estimate_shifts",
    "fourier_shift",
    "frame_shifts_from_bins",
    "isolated_shift_outliers",
    "register_frames",
    "register_spectra",
    "shift_jump_limit",
    "shifts_consistent",
    "spectral_energy",
]

log = logging.getLogger(__name__)


def _freqs(shape: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
    height, width = shape
    return (np.fft.fftfreq(height).astype(np.float32), np.fft.rfftfreq(width).astype(np.float32))


def bandpass_filter(shape: tuple[int, int], sigmas: tuple[float, float]) -> np.ndarray:
    """Difference-of-Gaussians band-pass in the ``rfft2`` layout.

    Parameters
    ----------
    shape : (int, int)
        Image shape ``(H, W)``.
    sigmas : (float, float)
        Low-pass and high-pass Gaussian scales in px (low < high).

    Returns
    -------
    filt : ndarray of float32, shape (H, W // 2 + 1)
        Multiply an ``rfft2`` spectrum by it. Read-only: the same array is
        returned for the same arguments (it is made once per shape).
    """
    return _bandpass((int(shape[0]), int(shape[1])), (float(sigmas[0]), float(sigmas[1])))


@lru_cache(maxsize=16)
def _bandpass(shape: tuple[int, int], sigmas: tuple[float, float]) -> np.ndarray:
    fy, fx = _freqs(shape)
    f2 = fy[:, None] ** 2 + fx[None, :] ** 2
    low, high = sigmas
    lowpass = np.exp(-2 * np.pi**2 * low**2 * f2)
    highpass = 1 - np.exp(-2 * np.pi**2 * high**2 * f2)
    band = (lowpass * highpass).astype(np.float32)
    band.setflags(write=False)  # shared between calls
    return band


def _half_weights(width: int) -> np.ndarray:
    # an rfft row holds each frequency once; the full spectrum holds +f and -f
    w = np.full(width // 2 + 1, 2.0, dtype=np.float32)
    w[0] = 1.0
    if width % 2 == 0:
        w[-1] = 1.0
    return w


def register_spectra(spectra: np.ndarray, reference: np.ndarray, shape: tuple[int, int], *,
                     upsample_factor: int = 1, max_shift: float | None = None,
                     with_similarity: bool = True, frame_energies: np.ndarray | None = None,
                     device: str = "cpu") -> tuple[np.ndarray, np.ndarray]:
    """Sub-pixel translation of frames relative to a reference, from their spectra.

    Parameters
    ----------
    spectra : ndarray of complex64, shape (B, H, W // 2 + 1)
        ``rfft2`` of the (band-passed) frames.
    reference : ndarray of complex64, shape (H, W // 2 + 1)
        ``rfft2`` of the (band-passed) reference.
    shape : (int, int)
        ``(H, W)``.
    upsample_factor : int
        1: the peak of the FFT-grid correlation is refined by fitting a parabola
        through its 3 x 3 neighbourhood (no extra cost). U > 1: the correlation is
        first evaluated on a grid of step 1 / U px around the peak (upsampled
        DFT), then refined by a parabola. On simulated D1-like movies both give
        the same error (0.036 px RMS, dominated by noise), U = 10 costs about
        0.4 s more per 550 frames of 256 x 256 px on 2 cores.
    max_shift : float, optional
        Largest displacement searched along each axis, px.
    with_similarity : bool
        Also compute the similarity (else NaN).
    frame_energies : ndarray, shape (B,), optional
        :func:`spectral_energy` of ``spectra`` (its dtype), when known (e.g.
        the same frames registered again), for the similarity.
    device : str
        ``"cpu"`` or a CUDA device for the FFTs.

    Returns
    -------
    shifts : ndarray of float32, shape (B, 2)
        ``(dy, dx)`` displacement of each frame (see the module docstring).
    similarity : ndarray of float32, shape (B,)
        Peak correlation coefficient of the band-passed images, in [-1, 1]
        (NaN when ``with_similarity`` is False).
    """
    height, width = shape
    n = spectra.shape[0]
    if n == 0:
        return np.zeros((0, 2), np.float32), np.zeros(0, np.float32)
    upsample = max(int(upsample_factor), 1)
    product = spectra * np.conj(reference)[None]
    rows_allowed, cols_allowed, rows_needed, row_of = _search_window(
        (int(height), int(width)), None if max_shift is None else float(max_shift))
    # U = 1 needs the product no more: the inverse FFT may work in it. Only the rows of the
    # correlation that the search and the peak's 3 x 3 neighbourhood read are computed.
    cc = irfft2_rows(product, shape, rows_needed, device=device, overwrite_x=upsample == 1)
    if upsample == 1:
        del product
    # argmax over the displacements allowed by max_shift only (a copy of that window)
    window = cc[:, row_of[rows_allowed][:, None], cols_allowed[None, :]] if (
        len(rows_allowed) < cc.shape[1] or len(cols_allowed) < width) else cc
    peak = window.reshape(n, -1).argmax(axis=1)
    wy, wx = np.divmod(peak, window.shape[2])
    del window
    py, px = rows_allowed[wy], cols_allowed[wx]
    rows = np.arange(n)
    # wrap to signed displacements
    coarse_y = np.where(py > height // 2, py - height, py).astype(np.float32)
    coarse_x = np.where(px > width // 2, px - width, px).astype(np.float32)

    if upsample == 1:
        # 3 x 3 neighbourhood of the FFT-grid peak (circular)
        yy = (py[:, None] + np.arange(-1, 2)[None]) % height
        xx = (px[:, None] + np.arange(-1, 2)[None]) % width
        fine = cc[rows[:, None, None], row_of[yy][:, :, None], xx[:, None, :]].astype(np.float64)
        ys = coarse_y[:, None] + np.arange(-1, 2, dtype=np.float32)[None]
        xs = coarse_x[:, None] + np.arange(-1, 2, dtype=np.float32)[None]
    else:
        # Upsampled DFT of the correlation on an (R x R) grid of step 1/U around the
        # coarse peak: CC(y, x) = 1/(HW) sum_k P(k) exp(2 pi i (ky y + kx x)).
        half = int(np.ceil(0.8 * upsample))
        offsets = np.arange(-half, half + 1, dtype=np.float32) / upsample
        ys = coarse_y[:, None] + offsets[None]  # (B, R)
        xs = coarse_x[:, None] + offsets[None]
        fy, fx = _freqs(shape)
        # exp(2 pi i (c + o) f) = exp(2 pi i c f) exp(2 pi i o f): exponentials of vectors only
        kern_y = (_cis(coarse_y[:, None, None] * fy[None, None, :])
                  * _cis(offsets[None, :, None] * fy[None, None, :]))  # (B, R, H)
        kern_x = (_cis(fx[None, :, None] * coarse_x[:, None, None])
                  * _cis(fx[None, :, None] * offsets[None, None, :]))  # (B, Wr, R)
        weighted = product * _half_weights(width)[None, None, :]
        del product
        fine = np.matmul(np.matmul(kern_y, weighted), kern_x).real.astype(np.float64) / (height * width)
        del weighted
    del cc
    r = fine.shape[1]
    best = fine.reshape(n, -1).argmax(axis=1)
    jy, jx = np.divmod(best, r)
    peak_value = fine[rows, jy, jx]

    def vertex(minus: np.ndarray, centre: np.ndarray, plus: np.ndarray) -> np.ndarray:
        # vertex of the parabola through three samples, in units of the grid step
        denom = minus - 2 * centre + plus
        with np.errstate(divide="ignore", invalid="ignore"):
            delta = np.where(denom < 0, 0.5 * (minus - plus) / denom, 0.0)
        return np.clip(np.nan_to_num(delta), -0.5, 0.5)

    iy = np.clip(jy, 1, r - 2)
    ix = np.clip(jx, 1, r - 2)
    sub_y = np.where((jy > 0) & (jy < r - 1),
                     vertex(fine[rows, iy - 1, jx], peak_value, fine[rows, iy + 1, jx]), 0.0)
    sub_x = np.where((jx > 0) & (jx < r - 1),
                     vertex(fine[rows, jy, ix - 1], peak_value, fine[rows, jy, ix + 1]), 0.0)
    shifts = np.stack([ys[rows, jy] + sub_y / upsample, xs[rows, jx] + sub_x / upsample], axis=1)
    if not with_similarity:
        return shifts.astype(np.float32), np.full(n, np.nan, np.float32)

    # Parseval: energies of the band-passed images give the correlation coefficient
    energy_frames = spectral_energy(spectra, shape) if frame_energies is None else frame_energies
    energy_ref = float((np.abs(reference) ** 2 * _half_weights(width)[None, :]).sum()) / (height * width)
    with np.errstate(divide="ignore", invalid="ignore"):
        similarity = peak_value / np.sqrt(energy_frames * energy_ref)
    similarity = np.nan_to_num(similarity, nan=0.0)
    return shifts.astype(np.float32), similarity.astype(np.float32)


def spectral_energy(spectra: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """Energy (mean square, by Parseval) of each image from its ``rfft2`` spectrum.

    Parameters
    ----------
    spectra : ndarray of complex, shape (B, H, W // 2 + 1)
    shape : (int, int)
        ``(H, W)`` of the images.

    Returns
    -------
    energy : ndarray, shape (B,)
        ``sum |image|**2 / (H W)`` of each image; float32 for complex64 spectra.
    """
    height, width = shape
    w = _half_weights(width)[None, :]
    return (np.abs(spectra) ** 2 * w).sum(axis=(1, 2)) / (height * width)


@lru_cache(maxsize=16)
def _search_window(shape: tuple[int, int], max_shift: float | None) -> tuple[np.ndarray, ...]:
    """Rows and columns of the displacements searched, and the correlation rows that are read.

    Returns
    -------
    rows_allowed, cols_allowed : ndarray of int64
        Sorted rows / columns of the FFT-grid displacements within ``max_shift`` (circular).
    rows_needed : ndarray of int64
        Sorted rows within one of ``rows_allowed`` (the peak's 3 x 3 neighbourhood).
    row_of : ndarray of int64, shape (H,)
        Position of each row in ``rows_needed`` (-1 where absent).
    """
    height, width = shape
    limit_y = height // 2 if max_shift is None else min(int(np.floor(max_shift)), height // 2)
    limit_x = width // 2 if max_shift is None else min(int(np.floor(max_shift)), width // 2)
    rows_allowed = np.unique(np.r_[0:limit_y + 1, height - limit_y:height] % height)
    cols_allowed = np.unique(np.r_[0:limit_x + 1, width - limit_x:width] % width)
    rows_needed = np.unique((rows_allowed[:, None] + np.arange(-1, 2)[None]) % height)
    row_of = np.full(height, -1, np.int64)
    row_of[rows_needed] = np.arange(len(rows_needed))
    for array in (rows_allowed, cols_allowed, rows_needed, row_of):
        array.setflags(write=False)  # shared between calls
    return rows_allowed, cols_allowed, rows_needed, row_of


def _cis(angle_cycles: np.ndarray) -> np.ndarray:
    # exp(2 pi i angle) as complex64, via cos/sin in float32 (no complex128 temporaries)
    angle = (2 * np.pi) * np.asarray(angle_cycles, dtype=np.float32)
    out = np.empty(angle.shape, np.complex64)
    out.real = np.cos(angle)
    out.imag = np.sin(angle)
    return out


def fourier_shift(spectra: np.ndarray, shifts: np.ndarray, shape: tuple[int, int], *,
                  out: np.ndarray | None = None) -> np.ndarray:
    """Multiply ``rfft2`` spectra by the phase ramp that moves each frame by ``-shifts``.

    Parameters
    ----------
    spectra : ndarray of complex64, shape (B, H, W // 2 + 1)
    shifts : ndarray, shape (B, 2)
        ``(dy, dx)`` displacements to undo.
    shape : (int, int)
        ``(H, W)``.
    out : ndarray of complex64, shape (B, H, W // 2 + 1), optional
        Where to write the result; ``out=spectra`` shifts in place (no new
        spectrum array).

    Returns
    -------
    shifted : ndarray of complex64, shape (B, H, W // 2 + 1)
        Spectra of the corrected frames (the shift is circular: content moved
        out of one edge re-enters at the opposite edge); ``out`` when given.
    """
    fy, fx = _freqs(shape)
    shifts = np.asarray(shifts, dtype=np.float32)
    # separable ramp: exp(2 pi i (fy dy + fx dx)) = ramp_y * ramp_x
    ramp_y = _cis(shifts[:, 0, None] * fy[None, :])
    ramp_x = _cis(shifts[:, 1, None] * fx[None, :])
    out = np.multiply(spectra, ramp_y[:, :, None], out=out)
    out *= ramp_x[:, None, :]
    return out


def correct_frames(frames: np.ndarray, shifts: np.ndarray, *, device: str = "cpu") -> np.ndarray:
    """Undo the displacements ``shifts`` of ``frames`` by Fourier shift.

    Parameters
    ----------
    frames : ndarray, shape (B, H, W)
    shifts : ndarray, shape (B, 2)

    Returns
    -------
    corrected : ndarray of float32, shape (B, H, W)
    """
    frames = np.asarray(frames, dtype=np.float32)
    shape = frames.shape[1:]
    if not np.any(shifts):
        return frames.copy()
    spectra = rfft2(frames, device=device)
    spectra = fourier_shift(spectra, shifts, shape, out=spectra)  # in place: one spectrum array only
    return irfft2(spectra, shape, device=device, overwrite_x=True).astype(np.float32, copy=False)


def register_frames(frames: np.ndarray, reference_spectrum: np.ndarray, *,
                    bandpass_sigmas: tuple[float, float] = (1.0, 8.0), upsample_factor: int = 1,
                    max_shift: float | None = None, correct: bool = True,
                    device: str = "cpu") -> tuple[np.ndarray, np.ndarray | None]:
    """Displacement of each frame relative to a reference, and optionally the corrected frames.

    One forward FFT serves both: the frames' spectra are registered
    (:func:`register_spectra`), shifted in place (:func:`fourier_shift`) and
    transformed back. The band-pass rides on the reference,
    ``(S band) conj(R) = S conj(R band)``, so the frames' spectra are not
    filtered (one copy less).

    Parameters
    ----------
    frames : ndarray, shape (B, H, W)
        Converted to float32.
    reference_spectrum : ndarray of complex64, shape (H, W // 2 + 1)
        Band-passed ``rfft2`` of the reference, as :func:`build_reference` returns it.
    bandpass_sigmas : (float, float)
        Band-pass of the registration (see :func:`bandpass_filter`); the one
        ``reference_spectrum`` was made with.
    upsample_factor, max_shift
        As in :func:`register_spectra`.
    correct : bool
        Also return the corrected frames (else None, and no inverse FFT).
    device : str
        ``"cpu"`` or a CUDA device for the FFTs.

    Returns
    -------
    shifts : ndarray of float32, shape (B, 2)
        ``(dy, dx)`` displacement of each frame (see the module docstring).
    corrected : ndarray of float32, shape (B, H, W), or None
        ``correct_frames(frames, shifts)``, when ``correct``.
    """
    frames = np.asarray(frames, dtype=np.float32)
    shape = (int(frames.shape[1]), int(frames.shape[2]))
    spectra = rfft2(frames, device=device)
    reference = reference_spectrum * bandpass_filter(shape, bandpass_sigmas)
    shifts, _ = register_spectra(spectra, reference, shape, upsample_factor=upsample_factor, max_shift=max_shift,
                                 with_similarity=False, device=device)
    if not correct:
        return shifts, None
    spectra = fourier_shift(spectra, shifts, shape, out=spectra)  # in place
    corrected = irfft2(spectra, shape, device=device, overwrite_x=True)
    del spectra
    return shifts, corrected.astype(np.float32, copy=False)


def build_reference(sample: Any, *, bandpass_sigmas: tuple[float, float] = (1.0, 8.0),
                    stable_fraction: float = 0.5, upsample_factor: int = 1, max_shift: float | None = None,
                    device: str = "cpu", block_bytes: int = 64 * 2**20,
                    scratch: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Reference image: mean of the most stable frames of a sample, aligned, refined once.

    The sample's mean is the first template; every sample frame is registered
    to it, and the ``stable_fraction`` of frames most correlated with it
    (fewest transients, least motion blur) are aligned and averaged. This is
    repeated once against the new reference.

    Only the sample's spectra are kept: frames are read (``sample[a:b]``) and
    transformed a block at a time, and the later steps also work a block at a
    time, so that the temporaries are those of one block.

    Parameters
    ----------
    sample : ndarray or array-like, shape (S, H, W)
        Frames spread over the movie: an array, or any object with ``shape``
        whose slices ``sample[a:b]`` are frames (e.g. read from a file on
        demand; slices are taken from the calling thread only).
    bandpass_sigmas : (float, float)
        Band-pass of the registration (see :func:`bandpass_filter`).
    stable_fraction : float
        Fraction of the sample averaged into the reference.
    upsample_factor, max_shift
        As in :func:`register_spectra`.
    device : str
        ``"cpu"`` or a CUDA device for the FFTs.
    block_bytes : int
        Largest block of spectra (complex64, ``8 H (W // 2 + 1)`` bytes a
        frame). The sums depend on it, so the pipeline derives it from the
        frame size and memory budget only. Besides the sample's spectra
        (``S`` frames) the temporaries are a few MB per thread.
    scratch : ndarray, optional
        Memory that may hold the sample's spectra (overwritten), e.g. the
        pipeline's not yet filled cache of the corrected movie: fresh memory is
        slow to touch, so the spectra then use pages the cache needs anyway.
        Used when C-contiguous and large enough (``8 S H (W // 2 + 1)`` bytes).

    Returns
    -------
    reference : ndarray of float32, shape (H, W)
        The reference image (not band-passed).
    reference_spectrum : ndarray of complex64, shape (H, W // 2 + 1)
        Its band-passed ``rfft2``, ready for :func:`register_frames`.
    """
    shape = (int(sample.shape[1]), int(sample.shape[2]))
    block_frames = _spectra_block(shape, block_bytes)
    spectra = _sample_spectra(sample, block_frames=block_frames, device=device,
                              out=_spectra_scratch(scratch, (int(sample.shape[0]), *shape)))
    return _refine_reference(spectra, shape, bandpass_sigmas=bandpass_sigmas, stable_fraction=stable_fraction,
                             upsample_factor=upsample_factor, max_shift=max_shift, device=device,
                             block_frames=block_frames)


def _spectra_block(shape: tuple[int, int], block_bytes: int) -> int:
    # frames of complex64 rfft2 spectra in block_bytes (at least 1)
    return max(1, int(block_bytes) // (8 * shape[0] * (shape[1] // 2 + 1)))


def _spectra_scratch(scratch: np.ndarray | None, shape: tuple[int, int, int]) -> np.ndarray | None:
    """A complex64 (S, H, W // 2 + 1) view of the start of ``scratch``, or None when it does not fit."""
    n, height, width = shape
    items = n * height * (width // 2 + 1)
    if scratch is None or not scratch.flags.c_contiguous or not scratch.flags.writeable or scratch.nbytes < 8 * items:
        return None
    return scratch.reshape(-1).view(np.uint8)[:8 * items].view(np.complex64).reshape(n, height, width // 2 + 1)


def _sample_spectra(sample: Any, *, block_frames: int, device: str, out: np.ndarray | None = None) -> np.ndarray:
    """``rfft2`` of every frame of ``sample``, complex64, shape (S, H, W // 2 + 1).

    Slices of ``sample`` are read from the calling thread, a few MB at a time
    (one cache-sized block per core: fresh memory is slow to touch, and a
    sample-sized float32 copy took as many MB as the spectra themselves), and
    transformed on all cores. ``block_frames`` caps the slices. ``out``: where
    to write them (complex64, that shape), else a new array.
    """
    height, width = (int(sample.shape[1]), int(sample.shape[2]))
    n = int(sample.shape[0])
    spectra = np.empty((n, height, width // 2 + 1), np.complex64) if out is None else out
    sub_frames = cache_block_frames(4 * height * width, min(n, block_frames), device)
    step = max(1, min(int(block_frames), sub_frames * _workers()))
    for a in range(0, n, step):
        frames = np.asarray(sample[a:a + step], dtype=np.float32)  # read here: readers may not be thread-safe

        def transform(span: tuple[int, int], frames: np.ndarray = frames, a: int = a) -> None:
            spectra[a + span[0]:a + span[1]] = rfft2(frames[span[0]:span[1]], device=device)

        map_blocks(transform, block_ranges(len(frames), sub_frames))
        del frames, transform  # before the next slice is read
    return spectra


def _group_frames(shape: tuple[int, int]) -> int:
    # spectra (complex64) per group of _refine_reference's sums: about 4 MB
    return max(1, (4 * 2**20) // (8 * shape[0] * (shape[1] // 2 + 1)))


def _add_frames(total: np.ndarray | None, frames: np.ndarray) -> np.ndarray:
    """``total + frames[0] + frames[1] + ...``, added frame after frame; ``frames.sum(axis=0)`` for ``total`` None.

    NumPy sums over the first axis frame after frame, so a block summed group
    by group with this equals the block's ``sum(axis=0)`` bit for bit, without
    a block-sized temporary.
    """
    if total is None:
        return frames.sum(axis=0)
    return np.concatenate((total[None], frames)).sum(axis=0)


def _refine_reference(spectra: np.ndarray, shape: tuple[int, int], *,
                      bandpass_sigmas: tuple[float, float], stable_fraction: float,
                      upsample_factor: int, max_shift: float | None, device: str,
                      block_frames: int) -> tuple[np.ndarray, np.ndarray]:
    """The steps of :func:`build_reference` after the sample's ``rfft2`` spectra (S, H, W // 2 + 1).

    The sums run over ``block_frames`` spectra at a time (their rounding
    depends on it), each summed in groups of a few MB (:func:`_add_frames`),
    and the band-passed spectra are made per registration block: besides
    ``spectra`` the temporaries are a few MB per thread (fresh memory is slow
    to touch; a sample-sized band-passed copy took 53 MB on D1).
    """
    n = len(spectra)
    band = bandpass_filter(shape, bandpass_sigmas)
    block_frames = max(int(block_frames), 1)
    group = _group_frames(shape)
    template = np.zeros(spectra.shape[1:], np.complex64)
    for a in range(0, n, block_frames):
        total = None
        for g in range(a, min(a + block_frames, n), group):  # groups of the block, frame after frame
            total = _add_frames(total, spectra[g:min(g + group, a + block_frames, n)] * band)
        template += total
    template = template / n  # mean of the band-passed spectra
    n_keep = max(1, int(round(stable_fraction * n)))
    shifts = np.empty((n, 2), np.float32)
    similarity = np.empty(n, np.float32)
    energies = np.full(n, np.nan, np.float32)  # spectral_energy's dtype: the similarity as before

    def register(span: tuple[int, int]) -> None:
        a, b = span
        banded = spectra[a:b] * band  # the block's band-passed spectra, in cache (made again the second time)
        if np.isnan(energies[a]):  # first registration of this span (the spans are the same both times)
            energies[a:b] = spectral_energy(banded, shape)
        shifts[a:b], similarity[a:b] = register_spectra(
            banded, template, shape, upsample_factor=upsample_factor, max_shift=max_shift,
            frame_energies=energies[a:b], device=device)

    # frame by frame, so blocks of frames (smaller than block_frames, in cache) run side by side
    sub = cache_block_frames(4 * shape[0] * shape[1], min(n, block_frames), device)
    for _ in range(2):  # initial estimate, then one refinement
        map_blocks(register, block_ranges(n, sub))
        keep = np.sort(np.argsort(-similarity, kind="stable")[:n_keep])
        aligned = np.zeros(spectra.shape[1:], np.complex64)
        for a in range(0, n_keep, block_frames):
            total = None
            for g in range(a, min(a + block_frames, n_keep), group):  # groups of the block, frame after frame
                k = keep[g:min(g + group, a + block_frames, n_keep)]
                picked = spectra[k]  # a copy, shifted in place
                total = _add_frames(total, fourier_shift(picked, shifts[k], shape, out=picked))
                del picked
            aligned += total
        aligned = aligned / n_keep
        template = aligned * band
    reference = irfft2(aligned, shape, device=device).astype(np.float32)
    return reference, template.astype(np.complex64)


def estimate_shifts(movie: Any, reference_spectrum: np.ndarray, *, bandpass_sigmas: tuple[float, float] = (1.0, 8.0),
                    upsample_factor: int = 1, max_shift: float | None = None, chunk_frames: int = 256,
                    device: str = "cpu") -> np.ndarray:
    """Displacement of every frame of ``movie`` relative to a reference, chunk by chunk.

    :func:`register_frames` on each chunk, without the correction.

    Parameters
    ----------
    movie : Movie, ndarray or path, shape (T, H, W)
    reference_spectrum : ndarray of complex64, shape (H, W // 2 + 1)
        From :func:`build_reference`.
    bandpass_sigmas, upsample_factor, max_shift, device
        As in :func:`register_frames`.
    chunk_frames : int
        Frames read and registered at a time.

    Returns
    -------
    shifts : ndarray of float32, shape (T, 2)
    """
    movie = as_movie(movie)
    out = np.zeros((movie.shape[0], 2), np.float32)
    for t0, block in movie.chunks(chunk_frames, dtype=np.float32):
        out[t0:t0 + len(block)], _ = register_frames(
            block, reference_spectrum, bandpass_sigmas=bandpass_sigmas, upsample_factor=upsample_factor,
            max_shift=max_shift, correct=False, device=device)
    return out


# --------------------------------------------------------------------------- frames too noisy to register

#: the shifts of consecutive frames (or frame means) are trusted when 90 % of their jumps are at most
#: max(SHIFT_JUMP_PX, SHIFT_JUMP_FRACTION x the largest shift searched): a brain moves a few px between two
#: frames, while the correlation peaks of frames that noise hides land anywhere in the search window (jumps of
#: ~0.7 x its half-width; measured 37-63 px for a 172 x 298 px movie whose true jumps were ~1 px)
SHIFT_JUMP_PX = 4.0
SHIFT_JUMP_FRACTION = 0.1
#: quantile of the jumps that must stay under the limit (a few fast movements are real)
SHIFT_JUMP_QUANTILE = 0.9


def shift_jump_limit(max_shift: float) -> float:
    """Largest jump, px, between the shifts of consecutive frames (or frame means) read as motion, not noise."""
    return max(SHIFT_JUMP_PX, SHIFT_JUMP_FRACTION * float(max_shift))


def shifts_consistent(first: np.ndarray, second: np.ndarray, *, max_shift: float) -> tuple[bool, float]:
    """Whether the shifts of pairs of consecutive frames (or frame means) agree as real motion does.

    Parameters
    ----------
    first, second : ndarray, shape (P, 2)
        ``(dy, dx)`` shifts of the first and second member of each pair.
    max_shift : float
        Largest shift searched, px.

    Returns
    -------
    consistent : bool
        The ``SHIFT_JUMP_QUANTILE`` quantile of the jumps is at most
        :func:`shift_jump_limit` (True for no pairs).
    jump : float
        That quantile, px (0 for no pairs).
    """
    first, second = np.asarray(first, np.float64), np.asarray(second, np.float64)
    if len(first) == 0:
        return True, 0.0
    jumps = np.hypot(*(second - first).T)
    jump = float(np.quantile(jumps, SHIFT_JUMP_QUANTILE))
    return jump <= shift_jump_limit(max_shift), jump


#: frames of the running median that a frame's shift is compared with (isolated_shift_outliers): a movement
#: that lasts 3 frames or more is kept
SHIFT_MEDIAN_FRAMES = 5
#: ... and the limit is at least this x the median distance of a frame's shift from that running median (for
#: Gaussian jitter of SD s per axis that median is about 1.2 s x 0.85, so 6 x it is ~6 s: outside only 1 frame in
#: ~10^7; a noise-hidden frame's shift lands tens of px away)
SHIFT_JITTER_FACTOR = 6.0


def isolated_shift_outliers(shifts: np.ndarray, *, max_shift: float) -> tuple[np.ndarray, np.ndarray]:
    """Frames whose shift leaves the running median of its neighbours by more than real motion does.

    A frame that noise hides (a dim frame, one flash of the laser) has its
    correlation peak anywhere in the search window, while its neighbours are
    registered well. Its shift then stands away from the median of the
    ``SHIFT_MEDIAN_FRAMES`` frames around it by more than
    :func:`shift_jump_limit`, or ``SHIFT_JITTER_FACTOR`` times the median
    such distance when the movie jitters more; a real movement lasting 3
    frames or more moves that median with it.

    Parameters
    ----------
    shifts : ndarray, shape (T, 2)
    max_shift : float
        Largest shift searched, px.

    Returns
    -------
    outliers : ndarray of bool, shape (T,)
    repaired : ndarray of float32, shape (T, 2)
        ``shifts`` with each outlier replaced by that running median.
    """
    shifts = np.asarray(shifts, np.float32).reshape(-1, 2)
    n = len(shifts)
    if n < SHIFT_MEDIAN_FRAMES:
        return np.zeros(n, bool), shifts.copy()
    half = SHIFT_MEDIAN_FRAMES // 2
    padded = np.pad(shifts, ((half, half), (0, 0)), mode="edge")
    windows = np.lib.stride_tricks.sliding_window_view(padded, SHIFT_MEDIAN_FRAMES, axis=0)  # (T, 2, window)
    median = np.median(windows, axis=-1).astype(np.float32)
    deviation = np.hypot(*(shifts - median).T)
    # a movie that jitters from frame to frame (an awake animal at a low frame rate) moves its frames away
    # from their running median all the time: the limit grows with that jitter's own size
    jitter = float(np.median(deviation)) * SHIFT_JITTER_FACTOR
    outliers = deviation > max(shift_jump_limit(max_shift), jitter)
    return outliers, np.where(outliers[:, None], median, shifts)


def frame_shifts_from_bins(bin_shifts: np.ndarray, n_frames: int, bin_frames: int) -> np.ndarray:
    """Shifts of every frame from those of the means of ``bin_frames`` consecutive frames.

    Bin ``j`` holds frames ``[j k, (j + 1) k)``; a last part shorter than
    ``k`` frames has no bin of its own (a mean of fewer frames is noisier).
    Each bin's shift is placed at the mean time of its frames and the frames'
    shifts are interpolated linearly between those times (held at the ends).

    Parameters
    ----------
    bin_shifts : ndarray, shape (T // k, 2)
    n_frames : int
        ``T``.
    bin_frames : int
        ``k`` >= 1.

    Returns
    -------
    shifts : ndarray of float32, shape (T, 2)
    """
    k = int(bin_frames)
    n_bins = int(n_frames) // k
    bin_shifts = np.asarray(bin_shifts, np.float64)
    if len(bin_shifts) != n_bins or n_bins == 0:
        raise ValueError(f"{len(bin_shifts)} bin shifts for {n_frames} frames in bins of {k}; "
                         f"{n_bins} (at least 1) expected")
    centres = np.arange(n_bins) * k + (k - 1) / 2.0
    times = np.arange(int(n_frames), dtype=np.float64)
    return np.stack([np.interp(times, centres, bin_shifts[:, axis]) for axis in (0, 1)], axis=1).astype(np.float32)


def as_movie(movie: Any) -> Any:
    """A movie to read frames from: arrays are wrapped as :class:`astro3s.io.Movie`, paths read lazily.

    Movies and :class:`CorrectedMovie` pass through unchanged.
    """
    from astro3s.io import Movie, read_movie  # astro3s.io costs ~60 ms to import: only when used

    if isinstance(movie, (Movie, CorrectedMovie)):
        return movie
    if isinstance(movie, (str, Path)):
        return read_movie(movie)
    return Movie.from_array(np.asarray(movie) if not hasattr(movie, "shape") else movie)


def _read_into(fd: int, out: np.ndarray, offset: int, lock: threading.Lock, file: Any) -> None:
    """Fill the C-contiguous ``out`` with the bytes of ``fd`` from ``offset`` (plain reads, no mapping)."""
    view = memoryview(out).cast("B")
    done = 0
    while done < len(view):
        if hasattr(os, "preadv"):  # positional: no shared file offset, so threads need no lock
            n = os.preadv(fd, [view[done:]], offset + done)
        else:  # pragma: no cover - systems without preadv
            with lock:
                file.seek(offset + done)
                n = file.readinto(view[done:])
        if not n:
            raise OSError(f"unexpected end of the temporary frame file at byte {offset + done}")
        done += n


def _write_from(fd: int, data: np.ndarray, offset: int, lock: threading.Lock, file: Any) -> None:
    """Write the C-contiguous ``data`` into ``fd`` at ``offset``."""
    view = memoryview(data).cast("B")
    done = 0
    while done < len(view):
        if hasattr(os, "pwrite"):
            done += os.pwrite(fd, view[done:], offset + done)
        else:  # pragma: no cover - systems without pwrite
            with lock:
                file.seek(offset + done)
                done += file.write(view[done:])


class FrameFile:
    """A (T, H, W) float32 movie in an anonymous temporary file, frame after frame (raw bytes).

    The streamed pass writes each motion-corrected frame here once
    (:meth:`write`, from several threads: positional writes into disjoint
    frames), and :class:`CorrectedMovie` reads them back (:meth:`read`,
    :meth:`read_index`) instead of correcting them again. Reads are plain file
    reads into new arrays, as :meth:`astro3s.io.Movie.frames` does for
    memory-mapped movies: nothing is mapped, so no page of the file counts in
    the process's memory (the operating system's page cache holds what it
    can, as for the movie file itself).

    The file is made by :func:`tempfile.TemporaryFile` and its space reserved
    at once (``posix_fallocate``: ``OSError`` here when the disk is full).
    On POSIX systems it has no name from the start, so nothing is left on
    disk whichever way the process ends; its space is given back when it is
    closed (:meth:`close`, or when this object is garbage-collected, or at
    interpreter exit).

    Parameters
    ----------
    shape : (int, int, int)
        ``(T, H, W)``.
    folder : str or Path
        Where the file is made.

    Attributes
    ----------
    shape : (int, int, int)
    folder : Path
    nbytes : int
        Size of the file, ``4 T H W``.
    error : OSError or None
        The first failed write (the disk filled up, ...): the frames are then
        incomplete and must not be read.
    """

    def __init__(self, shape: tuple[int, int, int], folder: str | Path):
        self.shape = tuple(int(s) for s in shape)
        self.folder = Path(folder)
        self.frame_bytes = 4 * self.shape[1] * self.shape[2]
        self.nbytes = self.frame_bytes * self.shape[0]
        self.error: OSError | None = None
        self._lock = threading.Lock()
        self._file = tempfile.TemporaryFile(dir=self.folder, prefix="astro3s-corrected-")  # noqa: SIM115 - closed by close()/finalizer
        self._fd = self._file.fileno()
        try:  # reserve the space now, so that a full disk shows here rather than in the middle of the pass
            if hasattr(os, "posix_fallocate"):
                os.posix_fallocate(self._fd, 0, self.nbytes)
            else:  # pragma: no cover
                self._file.truncate(self.nbytes)
        except OSError:
            self._file.close()
            raise
        # closes (and so deletes) the file when this object goes, or at interpreter exit
        self._finalizer = weakref.finalize(self, self._file.close)

    @property
    def closed(self) -> bool:
        return not self._finalizer.alive

    def write(self, t: int, frames: np.ndarray) -> None:
        """Store ``frames`` (float32, shape (n, H, W)) as frames ``t .. t + n - 1``.

        A failed write is kept in ``error`` (not raised): the pass goes on and
        the caller drops the file afterwards.
        """
        if self.error is not None or self.closed:
            return
        data = np.ascontiguousarray(frames, dtype=np.float32)
        try:
            _write_from(self._fd, data, int(t) * self.frame_bytes, self._lock, self._file)
        except OSError as err:
            self.error = err

    def read(self, start: int, stop: int) -> np.ndarray:
        """Frames ``start .. stop - 1``; float32, shape (stop - start, H, W), a new array."""
        out = np.empty((max(int(stop) - int(start), 0), *self.shape[1:]), np.float32)
        if len(out):
            _read_into(self._fd, out, int(start) * self.frame_bytes, self._lock, self._file)
        return out

    def read_index(self, index: np.ndarray) -> np.ndarray:
        """Frames ``index`` (any order); float32, shape (len(index), H, W); one read per run of consecutive frames."""
        index = np.asarray(index, dtype=np.int64).reshape(-1)
        out = np.empty((len(index), *self.shape[1:]), np.float32)
        breaks = np.flatnonzero(np.diff(index) != 1) + 1
        for a, b in zip(np.r_[0, breaks], np.r_[breaks, len(index)], strict=True):
            if b > a:
                _read_into(self._fd, out[a:b], int(index[a]) * self.frame_bytes, self._lock, self._file)
        return out

    def close(self) -> None:
        """Close and so delete the file (again: nothing)."""
        self._finalizer()


class CorrectedMovie:
    """A motion-corrected view of a movie: from memory, from a temporary file, or computed on read.

    Parameters
    ----------
    movie : Movie
        The original (lazy) movie.
    shifts : ndarray, shape (T, 2)
        Displacements to undo (``(dy, dx)``, see the module docstring).
    device : str
        Where the Fourier shifts run.
    cache : ndarray of float32, shape (T, H, W), optional
        The corrected frames, when the pipeline kept them (small movies); reads
        then cost nothing.
    frames_file : FrameFile, optional
        The corrected frames written by the pipeline's pass when they do not
        fit in memory; reads are file reads, not corrections. This object
        owns it: :meth:`close` (or ``with``) deletes it, after which frames
        are corrected on read again.

    Attributes
    ----------
    shape : (int, int, int)
    fs : float or None
    path : Path or None
    """

    def __init__(self, movie: Any, shifts: np.ndarray, *, device: str = "cpu",
                 cache: np.ndarray | None = None, frames_file: FrameFile | None = None):
        self.movie = as_movie(movie)
        self.shifts = np.asarray(shifts, dtype=np.float32)
        if self.shifts.shape != (self.movie.shape[0], 2):
            raise ValueError(f"shifts must have shape ({self.movie.shape[0]}, 2), got {self.shifts.shape}")
        self.device = device
        self.cache = cache
        if frames_file is not None and tuple(frames_file.shape) != tuple(self.movie.shape):
            raise ValueError(f"frames_file has shape {frames_file.shape}, the movie {tuple(self.movie.shape)}")
        self.frames_file = frames_file
        #: local activity filter masks already computed on these frames, by box and filter settings
        #: (:func:`astro3s.preprocess.pipeline.crop_filters`): a re-selection of the candidates keeps most boxes
        self.filter_masks: dict[tuple, np.ndarray] = {}

    @property
    def shape(self) -> tuple[int, int, int]:
        return tuple(self.movie.shape)

    @property
    def fs(self) -> float | None:
        return self.movie.fs

    @property
    def path(self) -> Any:
        return self.movie.path

    @property
    def stored(self) -> FrameFile | None:
        """The open :class:`FrameFile` the frames are read from, or None (cache, or corrected on read)."""
        if self.cache is not None or self.frames_file is None or self.frames_file.closed:
            return None
        return self.frames_file

    def close(self) -> None:
        """Delete the temporary frame file, if any; later reads correct the frames again."""
        if self.frames_file is not None:
            self.frames_file.close()
            self.frames_file = None

    def __enter__(self) -> CorrectedMovie:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def __len__(self) -> int:
        return self.shape[0]

    def __repr__(self) -> str:
        return f"CorrectedMovie({self.movie!r}, cached={self.cache is not None}, stored={self.stored is not None})"

    def __getitem__(self, key: Any) -> np.ndarray:
        """Corrected frames: ``key`` is a frame index or slice, optionally followed by y, x indices."""
        if not isinstance(key, tuple):
            key = (key,)
        time_key, space_key = key[0], key[1:]
        if self.cache is not None:
            return self.cache[(time_key, *space_key)].astype(np.float32, copy=True)
        single = isinstance(time_key, (int, np.integer))
        if single:
            time_key = slice(int(time_key) % self.shape[0], int(time_key) % self.shape[0] + 1)
        if not isinstance(time_key, slice):
            raise TypeError("CorrectedMovie supports integer or slice time indices")
        index = np.arange(self.shape[0])[time_key]
        stored = self.stored
        if stored is not None:
            out = stored.read_index(index)
        else:
            frames = np.asarray(self.movie[time_key], dtype=np.float32)
            out = correct_frames(frames, self.shifts[index], device=self.device)
        if single:
            out = out[0]
        return out[(Ellipsis, *space_key)] if space_key else out

    def take(self, index: np.ndarray) -> np.ndarray:
        """Corrected frames ``index`` (int array); float32, shape (len(index), H, W)."""
        index = np.asarray(index, dtype=np.int64).reshape(-1)
        if self.cache is not None:
            return self.cache[index]
        stored = self.stored
        if stored is not None:
            return stored.read_index(index)
        from astro3s.preprocess.streaming import read_frames  # streaming imports this module

        return correct_frames(read_frames(self.movie, index), self.shifts[index], device=self.device)

    def chunks(self, chunk_frames: int = 256) -> Iterator[tuple[int, np.ndarray]]:
        """Yield ``(t0, corrected block)`` with blocks of float32, shape (t, H, W)."""
        if self.cache is not None:
            for t0 in range(0, self.shape[0], chunk_frames):
                yield t0, self.cache[t0:t0 + chunk_frames]
            return
        if self.stored is not None:
            for t0 in range(0, self.shape[0], chunk_frames):
                stored = self.stored
                if stored is None:  # closed meanwhile: correct the rest on read
                    yield from self._corrected_chunks(chunk_frames, t0)
                    return
                yield t0, stored.read(t0, min(t0 + chunk_frames, self.shape[0]))
            return
        yield from self._corrected_chunks(chunk_frames, 0)

    def _corrected_chunks(self, chunk_frames: int, start: int) -> Iterator[tuple[int, np.ndarray]]:
        for t0, block in self.movie.chunks(chunk_frames, dtype=np.float32):
            if t0 >= start:
                yield t0, correct_frames(block, self.shifts[t0:t0 + len(block)], device=self.device)

    def load(self) -> np.ndarray:
        """All corrected frames, float32, shape (T, H, W)."""
        if self.cache is not None:
            return self.cache.copy()
        if self.stored is not None:
            return self.stored.read(0, self.shape[0])
        out = np.empty(self.shape, np.float32)
        for t0, block in self.chunks():
            out[t0:t0 + len(block)] = block
        return out
