"""The images a network reads, stacked as channels: the enhanced median image, then the correlation image.

A network trained with ``in_channels: 1`` reads ASTRA's input only: the
enhanced (CLAHE-sharpened) median image, as single-cell crops
(``Preprocessed.crops``) and as the whole-FOV map (``Preprocessed.fov_map``).
One trained with ``in_channels: 2`` also reads the movie's local temporal
correlation image (:func:`~astro3s.preprocess.correlation_image.local_correlation_image`)
cut with the same boxes and masks: the enhanced median image is close to a
rank transform, so a cell as bright at rest as the neuropil texture around
it becomes texture there, while its pixels' activity still rises and falls
together (experiments/README.md, "Cells dim at rest").

The second channel is :func:`correlation_channel`: the correlation with the
neighbours through Fisher's transform, scaled to [0, 1]. It is read in
absolute terms (no statistic of the FOV enters it), so a FOV crowded with
cells and one with none are drawn on one scale.

Both training (:mod:`astro3s.data.samples`) and inference
(:mod:`astro3s.inference.network`) stack their inputs here, so that the
network sees the same channels in both.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from astro3s.errors import ConfigError

__all__ = ["MAX_INPUT_CHANNELS", "channel_images", "correlation_channel", "crop_channels", "fov_channels"]

#: Channels a network may read: 1 the enhanced median image, 2 also the correlation image.
MAX_INPUT_CHANNELS = 2
#: Correlations are clipped here before Fisher's transform (arctanh(1) is infinite).
_MAX_CORRELATION = 0.999


def correlation_channel(correlation_image: np.ndarray) -> np.ndarray:
    """The local correlation image as a network channel.

    Parameters
    ----------
    correlation_image : ndarray, shape (H, W)
        Pearson correlations in [-1, 1].

    Returns
    -------
    ndarray of float32, shape (H, W)
        ``arctanh(clip(r, 0, 0.999)) / arctanh(0.999)``, in [0, 1]: Fisher's
        transform spreads the values near 1 where cells and a smooth
        background differ (a cell 0.98-1.00 on a background of 0.79 becomes
        0.61-1.00 on 0.28); anti-correlation reads as none.
    """
    corr = np.clip(np.nan_to_num(np.asarray(correlation_image, np.float32), nan=0.0), 0.0, _MAX_CORRELATION)
    return np.minimum(np.arctanh(corr) / np.float32(np.arctanh(_MAX_CORRELATION)), 1.0).astype(np.float32)


def _second_image(pre: Any) -> np.ndarray:
    image = getattr(pre, "correlation_image", None)
    if image is None:
        raise ConfigError("this network reads the local correlation image as its second input channel, but the "
                          "pre-processing result has none. Fix: pre-process with keep_correlation_image=true "
                          "(the model's preprocess.yaml sets it; astro3s-infer does so for such a model).")
    image = np.asarray(image)
    if image.shape != tuple(np.asarray(pre.enhanced).shape):
        raise ValueError(f"correlation image {image.shape} and enhanced image {np.asarray(pre.enhanced).shape} "
                         "differ in shape")
    return correlation_channel(image)


def _check_channels(channels: int) -> int:
    channels = int(channels)
    if not 1 <= channels <= MAX_INPUT_CHANNELS:
        raise ConfigError(f"a network reads 1 (median image) or 2 (and correlation image) input channels, "
                          f"not {channels}. Fix: in_channels: 1 or 2.")
    return channels


def channel_images(pre: Any, channels: int) -> list[np.ndarray]:
    """The full-FOV images of the channels after the first (``channels - 1`` of them), each ``(H, W)`` float32."""
    return [_second_image(pre)] if _check_channels(channels) > 1 else []


def crop_channels(pre: Any, channels: int = 1) -> np.ndarray:
    """The single-cell crops of every input channel.

    Parameters
    ----------
    pre : Preprocessed
        Uses ``crops (N, S, S)``, ``crop_boxes``, ``crop_masks`` and, for a
        second channel, ``correlation_image``. Crops already stacked
        ``(N, C, S, S)`` (a caller that resampled or moved them) are returned as they are.
    channels : int
        1 or 2.

    Returns
    -------
    ndarray of float32, shape (N, channels, S, S)
        Channel 0 ``pre.crops``; channel 1 the correlation channel cut with
        the same boxes and zeroed outside the same masks.
    """
    from astro3s.preprocess.crops import extract_crops

    crops = np.asarray(pre.crops, np.float32)
    if crops.ndim == 4:
        if crops.shape[1] != channels:
            raise ValueError(f"crops have {crops.shape[1]} channel(s), the network reads {channels}")
        return crops
    if len(crops) == 0:  # no candidate: nothing to cut, whatever the pre-processing kept
        return np.zeros((0, _check_channels(channels), *crops.shape[1:]), np.float32)
    masks = np.asarray(pre.crop_masks, bool)
    extra = [extract_crops(image, pre.crop_boxes, crop_size=crops.shape[-1]) * masks
             for image in channel_images(pre, channels)]
    return np.stack([crops, *extra], axis=1)


def fov_channels(pre: Any, channels: int = 1) -> np.ndarray:
    """The whole-FOV map of every input channel.

    Parameters
    ----------
    pre : Preprocessed
        Uses ``fov_map (H, W)``, ``fov_mask`` and, for a second channel,
        ``correlation_image``. A map already stacked ``(C, H, W)`` is returned as it is.
    channels : int

    Returns
    -------
    ndarray of float32, shape (channels, H, W)
        Channel 0 ``pre.fov_map``; channel 1 the correlation channel inside ``pre.fov_mask``.
    """
    fov = np.asarray(pre.fov_map, np.float32)
    if fov.ndim == 3:
        if fov.shape[0] != channels:
            raise ValueError(f"the FOV map has {fov.shape[0]} channel(s), the network reads {channels}")
        return fov
    extra = channel_images(pre, channels)
    if not extra:
        return fov[None]
    mask = np.asarray(pre.fov_mask, bool)
    return np.stack([fov, *(image * mask for image in extra)])
