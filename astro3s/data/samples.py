"""Training samples from a pre-processed FOV and its ground truth.

Inputs and targets share one geometry: targets are cut from the FOV's class
image with :func:`astro3s.preprocess.extract_crops` and the same boxes as the
inputs (``Preprocessed.crop_boxes``), so pixel ``(i, j)`` of a target labels
pixel ``(i, j)`` of its input.

Conventions
-----------
- Class image: soma pixels -> ``SOMA``, process pixels -> ``PROCESSES``, the
  rest -> ``BACKGROUND`` (soma wins where both are set). Every cell of the
  FOV is labelled, also the neighbours that reach into a cell's crop.
- Invalid pixels: a crop's pixels outside its local-activity mask (the input
  is zero there) and its zero padding. ``outside_mask="background"`` (default)
  labels them ``BACKGROUND``, which is what the network must output for an
  all-zero region and what the paste-back at inference assumes;
  ``"ignore"`` labels them ``IGNORE_INDEX`` (no loss, no metric);
  ``"keep"`` keeps the ground truth there (padding stays ``BACKGROUND``).
- Normalisation (``normalize="mean"``, ASTRA's): every input has its own
  mean (over all its pixels, padding included) subtracted, so crops of bright
  and dim FOVs are centred alike; ``"none"`` leaves the enhanced values
  (in [0, 1]); ``"standardize"`` also divides by the standard deviation.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import numpy as np
import torch
from torch.utils.data import Dataset

from astro3s.errors import ConfigError
from astro3s.models.classes import BACKGROUND, IGNORE_INDEX, PROCESSES, SOMA

__all__ = [
    "NORMALIZATIONS",
    "OUTSIDE_MASK_RULES",
    "FOVDataset",
    "SampleArrays",
    "SampleDataset",
    "class_image",
    "crop_samples",
    "fov_tile_samples",
    "normalize_channels",
    "normalize_images",
    "silence_cells",
]

Normalization = Literal["mean", "none", "standardize"]
OutsideMask = Literal["background", "ignore", "keep"]
NORMALIZATIONS = ("mean", "none", "standardize")
OUTSIDE_MASK_RULES = ("background", "ignore", "keep")


def check_choice(name: str, value: str, choices: Sequence[str]) -> str:
    """``value`` if it is one of ``choices``, else a :class:`ConfigError` listing them."""
    if value not in choices:
        raise ConfigError(f"{name} must be one of {', '.join(map(repr, choices))}, got {value!r}")
    return value


def class_image(soma: np.ndarray, processes: np.ndarray) -> np.ndarray:
    """Per-pixel class of a FOV.

    Parameters
    ----------
    soma, processes : ndarray of int, shape (H, W)
        Label images (0 = none).

    Returns
    -------
    classes : ndarray of uint8, shape (H, W)
        ``SOMA``, ``PROCESSES`` or ``BACKGROUND``.
    """
    classes = np.full(soma.shape, BACKGROUND, np.uint8)
    classes[np.asarray(processes) > 0] = PROCESSES
    classes[np.asarray(soma) > 0] = SOMA
    return classes


def _invalid_label(outside_mask: str) -> int:
    return IGNORE_INDEX if outside_mask == "ignore" else BACKGROUND


def _cut_classes(classes: np.ndarray, boxes: np.ndarray, crop_size: int) -> tuple[np.ndarray, np.ndarray]:
    """Class crops with the inputs' geometry and the padding mask.

    Returns
    -------
    crops : ndarray of uint8, shape (N, S, S)
    padding : ndarray of bool, shape (N, S, S)
        True where the crop lies outside its box (zero padding).
    """
    from astro3s.preprocess import extract_crops

    # shifted by one so that extract_crops' zero padding is told apart from class 0 (processes)
    shifted = extract_crops(classes.astype(np.float32) + 1.0, boxes, crop_size=crop_size)
    padding = shifted < 0.5
    crops = np.clip(np.rint(shifted) - 1, 0, 255).astype(np.uint8)
    return crops, padding


def normalize_images(images: np.ndarray, how: str) -> np.ndarray:
    """Per-image normalisation of ``(N, ...)`` float images (see the module notes)."""
    check_choice("normalize", how, NORMALIZATIONS)
    images = np.asarray(images, dtype=np.float32)
    if how == "none" or images.size == 0:
        return images.copy()
    axes = tuple(range(1, images.ndim))
    out = images - images.mean(axis=axes, keepdims=True)
    if how == "standardize":
        out /= np.maximum(out.std(axis=axes, keepdims=True), 1e-6)
    return out.astype(np.float32)


def normalize_channels(images: np.ndarray, how: str) -> np.ndarray:
    """:func:`normalize_images` of each channel of each image of ``(N, C, H, W)`` on its own."""
    images = np.asarray(images, dtype=np.float32)
    n, c = images.shape[:2]
    return normalize_images(images.reshape(n * c, *images.shape[2:]), how).reshape(images.shape)


class SampleArrays:
    """Stacked samples of one FOV: ``images (N, C, S, S) float32``, ``targets (N, S, S) uint8``.

    ``kind`` is ``"crop"`` (single-cell crops) or ``"fov_tile"`` (tiles of the FOV map).
    """

    def __init__(self, images: np.ndarray, targets: np.ndarray, kind: str) -> None:
        if images.ndim != 4 or targets.shape != (images.shape[0], *images.shape[2:]):
            raise ValueError(f"images (N,C,S,S) and targets (N,S,S) expected, got {images.shape}, {targets.shape}")
        self.images = images
        self.targets = targets
        self.kind = kind

    def __len__(self) -> int:
        return int(self.images.shape[0])


def crop_samples(pre, classes: np.ndarray, *, normalize: str = "mean",
                 outside_mask: str = "background", channels: int = 1) -> SampleArrays:
    """Single-cell crop samples of a pre-processed FOV.

    Parameters
    ----------
    pre : Preprocessed
        Uses ``crops (N, S, S)``, ``crop_boxes (N, 4)`` and ``crop_masks (N, S, S)``.
    classes : ndarray of uint8, shape (H, W)
        From :func:`class_image`.
    normalize, outside_mask : str
        See the module notes.
    channels : int
        Input channels (:func:`astro3s.preprocess.network_input.crop_channels`): 1 the enhanced
        median image, 2 also the local correlation image (``pre.correlation_image``).

    Returns
    -------
    SampleArrays
        ``images (N, channels, S, S)`` float32, ``targets (N, S, S)`` uint8 class indices.
    """
    from astro3s.preprocess.network_input import crop_channels

    check_choice("outside_mask", outside_mask, OUTSIDE_MASK_RULES)
    crops = np.asarray(pre.crops, dtype=np.float32)
    size = crops.shape[-1] if crops.ndim == 3 else int(pre.params.crop_size)
    if classes.shape != tuple(pre.fov_map.shape):
        raise ValueError(f"ground truth shape {classes.shape} differs from the movie's FOV {pre.fov_map.shape}")
    boxes = np.asarray(pre.crop_boxes).reshape(-1, 4)
    if len(boxes) == 0:
        return SampleArrays(np.zeros((0, channels, size, size), np.float32), np.zeros((0, size, size), np.uint8),
                            "crop")
    targets, padding = _cut_classes(classes, boxes, size)
    if outside_mask == "keep":
        targets[padding] = BACKGROUND
    else:
        invalid = ~np.asarray(pre.crop_masks, dtype=bool) | padding
        targets[invalid] = _invalid_label(outside_mask)
    images = normalize_channels(crop_channels(pre, channels), normalize)
    return SampleArrays(images, targets, "crop")


def silence_cells(correlation_image: np.ndarray, soma: np.ndarray, processes: np.ndarray, *, fraction: float,
                  rng: np.random.Generator) -> np.ndarray:
    """The correlation image with a random part of the cells made silent, for training.

    The training simulator's astrocytes have many events or none (and its silent ones are not ground
    truth), so a network that reads the correlation image learns that a cell without activity is no cell;
    real FOVs (and the held-out family) hold rarely active astrocytes, which the annotators draw from the
    morphology. Each cell is silenced with probability ``fraction``: over its soma and processes, dilated
    by 3 px, and the pixels above the image's Otsu threshold within 30 px of it and nearer to it than to
    any other cell (its correlated territory: the training simulator draws one around each cell, and a
    silent hole in it would be a cue no real movie gives), the image is replaced by smooth noise with the
    mean and SD of the 6-px ring around that region (its pixels below the threshold when those are enough
    and the FOV is mostly below it, of no cell).

    Parameters
    ----------
    correlation_image : ndarray of float32, shape (H, W)
    soma, processes : ndarray of int, shape (H, W)
        Label images (a cell's soma and processes share its id).
    fraction : float
        Probability that a cell is silenced.
    rng : numpy.random.Generator

    Returns
    -------
    ndarray of float32, shape (H, W)
        A new image (``correlation_image`` itself when no cell was chosen).
    """
    from scipy import ndimage as ndi
    from skimage.filters import threshold_otsu

    soma, processes = np.asarray(soma), np.asarray(processes)
    ids = np.unique(soma[soma > 0])
    chosen = ids[rng.random(len(ids)) < float(fraction)]
    image = np.asarray(correlation_image, np.float32)
    if chosen.size == 0 or np.ptp(image) <= 0:
        return correlation_image
    region = ndi.binary_dilation(np.isin(soma, chosen) | np.isin(processes, chosen), iterations=3)
    above = image > threshold_otsu(image)
    cells = np.where(soma > 0, soma, processes)
    distance, (iy, ix) = ndi.distance_transform_edt(cells == 0, return_indices=True)
    nearest = cells[iy, ix]
    region |= above & (distance <= 30) & np.isin(nearest, chosen)
    ring = ndi.binary_dilation(region, iterations=6) & ~region & (cells == 0)
    # a FOV mostly above the threshold (correlated nearly everywhere) keeps that level around a silent cell
    quiet = ring & ~above if above.mean() < 0.5 and (ring & ~above).sum() >= 16 else ring
    background = image[quiet]
    if background.size < 16:
        return correlation_image
    noise = ndi.gaussian_filter(rng.standard_normal(image.shape).astype(np.float32), 1.0)
    noise *= float(background.std()) / max(float(noise.std()), 1e-6)
    out = image.copy()
    out[region] = noise[region] + float(background.mean())
    return out


def tile_starts(length: int, tile: int, stride: int) -> list[int]:
    """Starts of tiles of side ``tile`` covering ``[0, length)`` with steps of at most ``stride``."""
    if length <= tile:
        return [0]
    starts = list(range(0, length - tile + 1, stride))
    if starts[-1] != length - tile:
        starts.append(length - tile)
    return starts


def fov_tile_samples(pre, classes: np.ndarray, *, tile_size: int = 96, stride: int = 48,
                     normalize: str = "mean", outside_mask: str = "background",
                     min_valid_fraction: float = 0.01, channels: int = 1) -> SampleArrays:
    """Whole-FOV samples served as ``tile_size`` tiles of the FOV map, so that they batch with the crops.

    The networks are fully convolutional: tiles of the FOV map teach them the
    whole-FOV input (every cell at once, no single-cell box) that ASTRA's FOV
    branch sees at inference. Tiles with less than ``min_valid_fraction`` of
    their pixels inside the union mask are skipped. Pixels outside the union
    mask follow ``outside_mask``; a FOV smaller than a tile is zero-padded
    (padding labelled like invalid pixels, ``BACKGROUND`` under ``"keep"``).

    Returns
    -------
    SampleArrays
        ``images (N, channels, T, T)`` float32 (:func:`astro3s.preprocess.network_input.fov_channels`),
        ``targets (N, T, T)`` uint8, ``kind="fov_tile"``.
    """
    from astro3s.preprocess.network_input import fov_channels

    check_choice("outside_mask", outside_mask, OUTSIDE_MASK_RULES)
    fov = fov_channels(pre, channels)
    valid = np.asarray(pre.fov_mask, dtype=bool)
    height, width = fov.shape[-2:]
    targets_full = classes.copy()
    if outside_mask != "keep":
        targets_full[~valid] = _invalid_label(outside_mask)
    pad_label = BACKGROUND if outside_mask == "keep" else _invalid_label(outside_mask)
    images, targets = [], []
    for y0 in tile_starts(height, tile_size, stride):  # loop over tile rows
        for x0 in tile_starts(width, tile_size, stride):  # loop over tile columns
            y1, x1 = min(y0 + tile_size, height), min(x0 + tile_size, width)
            if valid[y0:y1, x0:x1].mean() < min_valid_fraction:
                continue
            image = np.zeros((channels, tile_size, tile_size), np.float32)
            target = np.full((tile_size, tile_size), pad_label, np.uint8)
            image[:, : y1 - y0, : x1 - x0] = fov[:, y0:y1, x0:x1]
            target[: y1 - y0, : x1 - x0] = targets_full[y0:y1, x0:x1]
            images.append(image)
            targets.append(target)
    if not images:
        return SampleArrays(np.zeros((0, channels, tile_size, tile_size), np.float32),
                            np.zeros((0, tile_size, tile_size), np.uint8), "fov_tile")
    return SampleArrays(normalize_channels(np.stack(images), normalize), np.stack(targets), "fov_tile")


class SampleDataset(Dataset):
    """Samples of several FOVs as ``{"image", "target", "fov_index"}`` dicts.

    Parameters
    ----------
    parts : sequence of (int, SampleArrays)
        ``(fov_index, samples)`` pairs; all samples must have the same spatial size.

    Notes
    -----
    Items: ``image (C, S, S) float32``, ``target (S, S) int64``,
    ``fov_index`` int64 scalar (position of the FOV in the data module's list).
    """

    def __init__(self, parts: Sequence[tuple[int, SampleArrays]]) -> None:
        parts = [(index, arrays) for index, arrays in parts if len(arrays)]
        if parts:
            sizes = {arrays.images.shape[-2:] for _, arrays in parts}
            if len(sizes) > 1:
                raise ValueError(f"samples of different sizes {sorted(sizes)} cannot be batched together")
            self.images = np.concatenate([arrays.images for _, arrays in parts])
            self.targets = np.concatenate([arrays.targets for _, arrays in parts])
            self.fov_index = np.concatenate([np.full(len(arrays), index, np.int64) for index, arrays in parts])
            self.kinds = np.concatenate([np.full(len(arrays), arrays.kind) for _, arrays in parts])
        else:
            self.images = np.zeros((0, 1, 96, 96), np.float32)
            self.targets = np.zeros((0, 96, 96), np.uint8)
            self.fov_index = np.zeros(0, np.int64)
            self.kinds = np.zeros(0, str)

    def __len__(self) -> int:
        return int(self.images.shape[0])

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        return {
            "image": torch.from_numpy(self.images[index]),
            "target": torch.from_numpy(self.targets[index].astype(np.int64)),
            "fov_index": torch.tensor(self.fov_index[index], dtype=torch.int64),
        }


class FOVDataset(Dataset):
    """Whole-FOV samples (one per FOV, any size): for evaluation and prediction with ``batch_size=1``.

    Items: ``image (C, H, W) float32`` (the normalised FOV map's channels),
    ``target (H, W) int64`` (full ground truth; outside the union mask per
    ``outside_mask``), ``fov_index``, ``crop_boxes (N, 4) int64``.
    """

    def __init__(self, items: Sequence[tuple[int, np.ndarray, np.ndarray, np.ndarray]]) -> None:
        self.items = list(items)

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        fov_index, image, target, boxes = self.items[index]
        return {
            "image": torch.from_numpy(image),
            "target": torch.from_numpy(target.astype(np.int64)),
            "fov_index": torch.tensor(fov_index, dtype=torch.int64),
            "crop_boxes": torch.from_numpy(np.asarray(boxes, dtype=np.int64).reshape(-1, 4)),
        }


def whole_fov_sample(pre, classes: np.ndarray, *, normalize: str = "mean", outside_mask: str = "background",
                     channels: int = 1) -> tuple[np.ndarray, np.ndarray]:
    """One whole-FOV sample: ``image (channels, H, W) float32`` and ``target (H, W) uint8``."""
    from astro3s.preprocess.network_input import fov_channels

    check_choice("outside_mask", outside_mask, OUTSIDE_MASK_RULES)
    target = classes.copy()
    if outside_mask != "keep":
        target[~np.asarray(pre.fov_mask, dtype=bool)] = _invalid_label(outside_mask)
    image = normalize_channels(fov_channels(pre, channels)[None], normalize)[0]
    return image, target
