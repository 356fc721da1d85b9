"""Crop predictions into FOV coordinates.

The network sees one ``S x S`` crop per soma candidate (the candidate's
filter box, zero-padded; geometry of :mod:`astro3s.preprocess.crops`). Boxes
of neighbouring candidates overlap, so a FOV pixel may have several
predictions. ASTRA sums one-hot votes (a pixel is soma when any crop says so,
a process when more crops say process than soma). Here the class
probabilities are averaged with a weight that falls off with the distance to
each crop's centre (``blend="gaussian"``, default): a crop is most reliable
about the cell it is centred on and least about the clipped cells at its
edge, where it sees only part of the context. ``"mean"`` (equal weights) and
``"max"`` (per-class maximum, renormalised) are alternatives. Where a single
crop covers a pixel, every rule gives that crop's probabilities; pixels
outside every box are background.
"""

from __future__ import annotations

import numpy as np

from astro3s.models.classes import BACKGROUND, NUM_CLASSES
from astro3s.preprocess.crops import paste_crops

__all__ = ["blend_crops", "crop_weight"]


def crop_weight(crop_size: int, *, sigma: float = 0.25) -> np.ndarray:
    """Gaussian weight of a crop's pixels by their distance to the crop centre.

    Parameters
    ----------
    crop_size : int
        Side ``S`` of the crops.
    sigma : float
        Standard deviation as a fraction of ``S`` (0.25: 24 px for 96-px
        crops, so a pixel at the box edge, 43 px out, weighs 0.2 of the centre).

    Returns
    -------
    weight : ndarray of float32, shape (S, S)
        1 at the centre, > 0 everywhere (so a pixel covered by one crop keeps
        that crop's probabilities exactly).
    """
    centre = (crop_size - 1) / 2.0
    r = np.arange(crop_size, dtype=np.float64) - centre
    s = sigma * crop_size
    profile = np.exp(-(r ** 2) / (2 * s * s))
    return np.outer(profile, profile).astype(np.float32)


def blend_crops(crop_probs: np.ndarray, crop_boxes: np.ndarray, shape: tuple[int, int], *,
                blend: str = "gaussian", sigma: float = 0.25, outside: np.ndarray | None = None) -> np.ndarray:
    """Combine per-crop class probabilities into one FOV probability map.

    Parameters
    ----------
    crop_probs : array_like of float, shape (N, C, S, S)
        Class probabilities of each crop, channels in the order of
        :data:`astro3s.models.CLASS_NAMES` (``C = 3``); the crops laid out as
        :func:`astro3s.preprocess.extract_crops` made them (box centred in the
        padded crop).
    crop_boxes : array_like of int, shape (N, 4)
        ``(y0, x0, y1, x1)`` of each crop's box in the FOV
        (:attr:`astro3s.preprocess.Preprocessed.crop_boxes`).
    shape : (int, int)
        FOV ``(H, W)``.
    blend : {"gaussian", "mean", "max"}
        Rule for pixels covered by several crops: average weighted by
        :func:`crop_weight`, plain average, or per-class maximum
        (renormalised to sum 1).
    sigma : float
        Width of the ``"gaussian"`` weight, fraction of ``S``.
    outside : array_like of float, shape (C, H, W), optional
        Probabilities of the pixels outside every box (e.g. the whole-FOV
        pass's, where no crop looked); None: background ``(0, 0, 1)``.

    Returns
    -------
    probs : ndarray of float32, shape (C, H, W)
        Probabilities summing to 1 per pixel; ``outside`` (default background)
        outside every box.

    Raises
    ------
    ValueError
        Shapes that do not fit together, or an unknown ``blend``.
    """
    crop_probs = np.asarray(crop_probs, dtype=np.float32)
    boxes = np.asarray(crop_boxes, dtype=np.int64).reshape(-1, 4)
    if crop_probs.ndim != 4 or crop_probs.shape[1] != NUM_CLASSES or crop_probs.shape[2] != crop_probs.shape[3]:
        raise ValueError(f"crop_probs must be (N, {NUM_CLASSES}, S, S), got {crop_probs.shape}")
    if len(crop_probs) != len(boxes):
        raise ValueError(f"{len(crop_probs)} crops but {len(boxes)} boxes")
    height, width = (int(s) for s in shape)
    if outside is None:
        out = np.zeros((NUM_CLASSES, height, width), np.float32)
        out[BACKGROUND] = 1.0
    else:
        out = np.array(outside, dtype=np.float32)  # a copy: the caller's map is not written to
        if out.shape != (NUM_CLASSES, height, width):
            raise ValueError(f"outside must be ({NUM_CLASSES}, {height}, {width}), got {out.shape}")
    if len(boxes) == 0:
        return out
    size = crop_probs.shape[-1]
    if blend == "gaussian":
        weight = np.broadcast_to(crop_weight(size, sigma=sigma), (len(boxes), size, size))
    elif blend == "mean":
        weight = np.ones((len(boxes), size, size), np.float32)
    elif blend == "max":
        best = paste_crops(crop_probs, boxes, (height, width), reduce="max", fill=0.0)
        total = best.sum(axis=0)
        covered = total > 0
        out[:, covered] = best[:, covered] / total[covered]
        return out
    else:
        raise ValueError(f"blend must be 'gaussian', 'mean' or 'max', got {blend!r}")
    # weighted sum over crops and sum of weights, both pasted with the crop geometry's own helper
    num = paste_crops(crop_probs * weight[:, None], boxes, (height, width), reduce="sum", fill=0.0)
    den = paste_crops(weight, boxes, (height, width), reduce="sum", fill=0.0)
    covered = den > 0
    out[:, covered] = num[:, covered] / den[covered]
    return out
