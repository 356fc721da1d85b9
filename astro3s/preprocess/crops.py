"""Stage 6: single-cell crops for the network, and pasting predictions back.

Each candidate's box (``filter_box`` px) of the enhanced image, multiplied by
its local-activity mask, is zero-padded (ASTRA: 5 px) to the network's input
size (96 x 96). The FOV map is the enhanced image multiplied by the union of
the masks. :func:`paste_crops` inverts the geometry for network outputs.
"""

from __future__ import annotations

import numpy as np

__all__ = ["crop_offsets", "extract_crops", "fov_map", "paste_crops"]


def crop_offsets(boxes: np.ndarray, crop_size: int = 96) -> np.ndarray:
    """Where each box sits inside its padded crop.

    Parameters
    ----------
    boxes : ndarray, shape (N, 4)
        ``(y0, x0, y1, x1)`` in the FOV.
    crop_size : int

    Returns
    -------
    offsets : ndarray of int32, shape (N, 2)
        ``(oy, ox)``: ``crop[oy:oy + h, ox:ox + w]`` is ``fov[y0:y1, x0:x1]``
        (the padding is split evenly, 5 px each side for 86-px boxes).
    """
    boxes = np.asarray(boxes, dtype=np.int64).reshape(-1, 4)
    sizes = boxes[:, 2:] - boxes[:, :2]
    return ((crop_size - sizes) // 2).astype(np.int32)


def extract_crops(image: np.ndarray, boxes: np.ndarray, masks: np.ndarray | None = None, *,
                  crop_size: int = 96) -> np.ndarray:
    """Cut boxes out of an image, optionally masked, and pad them to ``crop_size``.

    Parameters
    ----------
    image : ndarray, shape (H, W)
    boxes : ndarray, shape (N, 4)
        ``(y0, x0, y1, x1)``.
    masks : ndarray, shape (N, h, w), optional
        Multiplied into each box (the local activity filter).
    crop_size : int

    Returns
    -------
    crops : ndarray of float32, shape (N, crop_size, crop_size)
    """
    image = np.asarray(image)
    boxes = np.asarray(boxes, dtype=np.int64).reshape(-1, 4)
    offsets = crop_offsets(boxes, crop_size)
    out = np.zeros((len(boxes), crop_size, crop_size), np.float32)
    for n, ((y0, x0, y1, x1), (oy, ox)) in enumerate(zip(boxes, offsets)):  # loop over candidates
        part = image[y0:y1, x0:x1]
        if masks is not None:
            part = part * masks[n]
        out[n, oy:oy + y1 - y0, ox:ox + x1 - x0] = part
    return out


def paste_crops(crops: np.ndarray, boxes: np.ndarray, shape: tuple[int, int], *,
                reduce: str = "max", fill: float = 0.0) -> np.ndarray:
    """Paste crop-sized arrays (e.g. network outputs) back into the FOV.

    Parameters
    ----------
    crops : ndarray, shape (N, S, S) or (N, C, S, S)
        One array per box, laid out as :func:`extract_crops` made them.
    boxes : ndarray, shape (N, 4)
    shape : (int, int)
        FOV ``(H, W)``.
    reduce : {"max", "mean", "sum"}
        How overlapping boxes combine.
    fill : float
        Value of pixels outside every box.

    Returns
    -------
    fov : ndarray of float32, shape (H, W) or (C, H, W)
    """
    crops = np.asarray(crops, dtype=np.float32)
    squeeze = crops.ndim == 3
    if squeeze:
        crops = crops[:, None]
    boxes = np.asarray(boxes, dtype=np.int64).reshape(-1, 4)
    offsets = crop_offsets(boxes, crops.shape[-1])
    channels = crops.shape[1]
    if reduce == "max":
        out = np.full((channels, *shape), -np.inf, np.float32)
    elif reduce in ("mean", "sum"):
        out = np.zeros((channels, *shape), np.float32)
    else:
        raise ValueError(f"reduce must be 'max', 'mean' or 'sum', got {reduce!r}")
    hits = np.zeros(shape, np.int32)
    for crop, (y0, x0, y1, x1), (oy, ox) in zip(crops, boxes, offsets):  # loop over candidates
        part = crop[:, oy:oy + y1 - y0, ox:ox + x1 - x0]
        region = out[:, y0:y1, x0:x1]
        if reduce == "max":
            np.maximum(region, part, out=region)
        else:
            region += part
        hits[y0:y1, x0:x1] += 1
    if reduce == "mean":
        np.divide(out, np.maximum(hits, 1), out=out)
    out[:, hits == 0] = fill
    return out[0] if squeeze else out


def fov_map(image: np.ndarray, boxes: np.ndarray, masks: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Whole-FOV network input: the image inside the union of the candidates' filter masks.

    Parameters
    ----------
    image : ndarray, shape (H, W)
    boxes : ndarray, shape (N, 4)
    masks : ndarray of bool, shape (N, h, w)

    Returns
    -------
    fov : ndarray of float32, shape (H, W)
    union : ndarray of bool, shape (H, W)
    """
    image = np.asarray(image, dtype=np.float32)
    union = np.zeros(image.shape, bool)
    for (y0, x0, y1, x1), mask in zip(np.asarray(boxes, dtype=np.int64).reshape(-1, 4), masks):
        union[y0:y1, x0:x1] |= mask
    return image * union, union
