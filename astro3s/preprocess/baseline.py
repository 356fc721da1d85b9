"""Does the movie carry its resting fluorescence? A check, and a stand-in image when it does not.

ASTRA's pre-processing reads the cells' shapes from the temporal median of
the frames: the resting fluorescence ``F0`` of each pixel. A movie exported
as ``dF = F - F0`` (each pixel's baseline subtracted, as some pipelines
deliver their "processed" movies) has a median image of zeros plus noise:
no soma or process is left in it for the network (held-out movies turned
into dF: detection F1 0.98 -> 0.31). Its registration fails too: the
reference is noise, and frames were shifted by up to a quarter of the FOV.

What dF keeps is the noise. Two-photon recordings are shot-noise limited:
a pixel's frame-to-frame variance is ``g F0 + r^2`` (gain ``g``, read noise
``r``), an affine function of ``F0``. :func:`check_baseline` calls a movie
baseline-free when, on pairs of consecutive frames sampled over it, all three
hold (figures: 52 held-out movies and 52 never-seen ones, 24 development
movies of the training simulator, 13 held-out movies moved by 1.5-px random
motion or made dF, astroCaST's real dF crop):

- its median image is flat: smoothed by 2 px, its spatial variance is less
  than 15 times what its own noise would leave (``median_contrast``; dF
  0.8-8.3; raw movies 24 and more, but 7.2 on one whose noise is read noise);
- it does not look like its noise-variance image (half the mean squared
  difference of consecutive frames; rank correlation of the smoothed images
  below 0.5: dF -0.20-0.11, raw 0.52-1.00, but 0.01 on a textured movie
  whose frame-to-frame differences are motion);
- that noise-variance image is reproducible (the two halves of the sample
  correlate at least 0.4: dF 0.84-0.99 on 256-px FOVs, 0.52 on a 104 x 88 px
  movie of 68 frames; a movie whose noise is read noise, photon counts far
  below it, -0.02: nothing to recover from its noise).

The pipeline then skips the motion correction (nothing static to register
on: correct motion before computing dF) and uses :func:`noise_variance_image`
where the median image goes (the CLAHE step ranks each tile, so an affine
function of ``F0`` is as good as ``F0``). On the 13 held-out movies made dF,
detection F1 0.31 -> 0.96 (raw: 0.985; ``experiments/results/robustness.md``), and
0.22 -> 0.93 on 52 never-seen ones (``robustness_fresh64_dF.md``).
``dF / F0`` movies divide the noise by ``F0`` as well; one of the 13 was
recognised (detection F1 0.24 -> 0.51): give astro3s the raw movie.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np

from astro3s.preprocess.enhance import temporal_median
from astro3s.preprocess.scale import bin_frames

__all__ = ["BaselineCheck", "check_baseline", "noise_variance_image"]

# smoothing (px) of both images before they are compared: a single pixel's noise variance from
# 64 frame pairs is uncertain by ~18 %, a 2-px Gaussian averages ~50 pixels
_SMOOTH_PX = 2.0
# largest image side compared (wider frames are averaged over blocks of pixels first)
_COMPARE_SIDE = 256


@dataclass(frozen=True)
class BaselineCheck:
    """Outcome of :func:`check_baseline`.

    Attributes
    ----------
    baseline_free : bool
        The movie looks baseline-subtracted (dF): its median image is flat
        and unlike its noise-variance image, which has structure.
    median_contrast : float
        Spatial variance of the smoothed median image over the variance its
        noise alone would leave.
    median_noise_correlation : float
        Rank correlation of the smoothed median and noise-variance images.
    noise_reliability : float
        Rank correlation of the noise-variance images of two halves of the sample.
    pairs : int
        Pairs of consecutive frames the check used.
    """

    baseline_free: bool
    median_contrast: float
    median_noise_correlation: float
    noise_reliability: float
    pairs: int

    def as_dict(self) -> dict:
        """Plain-Python copy (for ``details``/``summary.json``)."""
        return {"baseline_free": self.baseline_free, "median_contrast": round(self.median_contrast, 2),
                "median_noise_correlation": round(self.median_noise_correlation, 4),
                "noise_reliability": round(self.noise_reliability, 4), "pairs": self.pairs}


def _rank_correlation(a: np.ndarray, b: np.ndarray, *, sigma: float) -> float:
    """Spearman's correlation of two images after a Gaussian smoothing (0 when either is flat)."""
    from scipy import ndimage

    a = ndimage.gaussian_filter(a, sigma, mode="mirror").ravel()
    b = ndimage.gaussian_filter(b, sigma, mode="mirror").ravel()
    if np.ptp(a) == 0 or np.ptp(b) == 0:
        return 0.0
    # ranks by a double argsort: scipy.stats.rankdata would import scipy.stats (0.5-0.9 s) on every run
    ranks = [np.argsort(np.argsort(v, kind="stable"), kind="stable").astype(np.float64) for v in (a, b)]
    ra, rb = (r - r.mean() for r in ranks)
    return float((ra * rb).sum() / np.sqrt((ra * ra).sum() * (rb * rb).sum()))


def check_baseline(pairs: np.ndarray, *, max_contrast: float = 15.0, max_correlation: float = 0.5,
                   min_reliability: float = 0.4) -> BaselineCheck:
    """Whether a movie lacks its resting fluorescence (a dF movie), from pairs of consecutive frames.

    Parameters
    ----------
    pairs : ndarray, shape (K, 2, H, W)
        ``K >= 4`` pairs of consecutive frames ``(t, t + 1)`` spread over the movie.
    max_contrast : float
        The movie is baseline-free when the smoothed median image's spatial
        variance is below this many times that of its noise...
    max_correlation : float
        ...the median and noise-variance images correlate less than this...
    min_reliability : float
        ...and the noise-variance image is reproducible: those of the two
        halves of the pairs correlate at least this much.

    Returns
    -------
    BaselineCheck

    Notes
    -----
    Frames wider than 256 px are first averaged over blocks of ``f x f`` px
    (shot noise stays affine in ``F0``), and the images are compared after a
    Gaussian smoothing of ``2 / f`` px (at least 1).
    """
    from scipy import ndimage

    pairs = np.asarray(pairs, np.float32)
    if pairs.ndim != 4 or pairs.shape[1] != 2 or len(pairs) < 4:
        raise ValueError(f"pairs must have shape (K >= 4, 2, H, W), got {pairs.shape}")
    factor = max(1, int(np.ceil(max(pairs.shape[2:]) / _COMPARE_SIDE)))
    pairs = bin_frames(pairs, factor)
    sigma = max(1.0, _SMOOTH_PX / factor)
    squared = np.square(pairs[:, 1] - pairs[:, 0])
    noise = squared.mean(axis=0)
    median = temporal_median(pairs.reshape(-1, *pairs.shape[2:]))
    # a median of n samples of white noise has variance (pi / 2) var / n; a Gaussian of sigma px divides
    # the variance of white noise by 4 pi sigma^2
    noise_left = (np.pi / 2) * float(noise.mean()) / 2 / (2 * len(pairs)) / (4 * np.pi * sigma**2)
    spread = float(ndimage.gaussian_filter(median, sigma, mode="mirror").var())
    contrast = spread / noise_left if noise_left > 0 else (np.inf if spread > 0 else 0.0)
    correlation = _rank_correlation(median, noise, sigma=sigma)
    reliability = _rank_correlation(squared[0::2].mean(axis=0), squared[1::2].mean(axis=0), sigma=sigma)
    free = contrast < max_contrast and correlation < max_correlation and reliability >= min_reliability
    return BaselineCheck(bool(free), contrast, correlation, reliability, int(len(pairs)))


def noise_variance_image(chunks: Iterable[tuple[int, np.ndarray]]) -> np.ndarray:
    """Half the mean squared difference of consecutive frames, per pixel.

    Parameters
    ----------
    chunks : iterable of (int, ndarray of shape (t, H, W))
        The movie's frames in order, a block at a time (e.g.
        ``CorrectedMovie.chunks()``); at least 2 frames in all.

    Returns
    -------
    variance : ndarray of float32, shape (H, W)
        ``g F0 + r^2`` under shot noise: the resting fluorescence up to an
        affine map (plus the variance of the activity, which marks active cells).
    """
    total = None
    previous = None
    count = 0
    for _, block in chunks:  # loop over blocks of frames (each vectorised)
        block = np.asarray(block, np.float32)
        if previous is not None:
            block = np.concatenate([previous[None], block])
        if len(block) >= 2:
            step = np.diff(block, axis=0)
            part = np.einsum("tij,tij->ij", step, step, dtype=np.float64)
            total = part if total is None else total + part
            count += len(step)
        previous = block[-1]
    if not count:
        raise ValueError("the noise-variance image needs at least 2 frames")
    return (total / (2 * count)).astype(np.float32)
