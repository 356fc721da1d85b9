"""The segmentation network on a pre-processed FOV: single-cell crops and the whole FOV.

ASTRA runs its network twice per FOV: once on every single-cell crop (the
candidate's box, local-activity filtered, zero-padded to ``S x S``) and once
on the whole-FOV map (every cell at once). Both inputs are normalised as in
training (:func:`astro3s.data.samples.normalize_images`).

The whole-FOV pass runs in overlapping tiles when the FOV is larger than
``TilingParams.max_fov_pixels`` (wide mesoscope FOVs), blended with the same Gaussian
weights as the crops, so memory stays bounded. The normalisation uses the
statistics of the whole map, so a tiled pass sees the same input values as
a single pass; only the context at the tile borders differs, and the
blending weights give those borders little say.
"""

from __future__ import annotations

import dataclasses
import logging
import math
from typing import Any

import numpy as np

from astro3s.models.classes import BACKGROUND, NUM_CLASSES

log = logging.getLogger(__name__)

__all__ = ["TilingParams", "border_centred_crops", "cut_candidate_somata", "flip_averaged", "predict_crops",
           "predict_crops_zoomed", "predict_fov", "tile_boxes", "with_border_centred_predictions"]

#: the mirror images of a flip-averaged pass, as tensor dims of ``(N, C, H, W)``, by number of views
FLIP_VIEWS = {1: [()], 2: [(), (3,)], 4: [(), (3,), (2,), (2, 3)]}


@dataclasses.dataclass(frozen=True)
class TilingParams:
    """How the whole-FOV network pass is tiled (``tiling`` of ``astro3s-infer``).

    Attributes
    ----------
    max_fov_pixels : int
        FOVs with more pixels (after any zoom) run in overlapping tiles.
    tile_size : int
        Tile side, px (>= 32).
    tile_overlap : int
        Least overlap of neighbouring tiles, px (0 to ``tile_size // 2``).
    """

    max_fov_pixels: int = 512 * 512
    tile_size: int = 384
    tile_overlap: int = 64

    def __post_init__(self) -> None:
        from astro3s.errors import ConfigError

        if self.max_fov_pixels < 1:
            raise ConfigError(f"tiling.max_fov_pixels={self.max_fov_pixels} must be >= 1.")
        if self.tile_size < 32 or not 0 <= self.tile_overlap <= self.tile_size // 2:
            raise ConfigError(f"tiling.tile_size={self.tile_size} must be >= 32 px and tiling.tile_overlap="
                              f"{self.tile_overlap} between 0 and half the tile size. Fix: e.g. "
                              "tiling.tile_size=384 tiling.tile_overlap=64.")

    @classmethod
    def from_dict(cls, values: dict[str, Any] | None) -> TilingParams:
        """From a config section; an unknown key is a :class:`ConfigError` naming the closest valid one."""
        from astro3s.errors import ConfigError

        values = dict(values or {})
        valid = [f.name for f in dataclasses.fields(cls)]
        unknown = sorted(set(values) - set(valid))
        if unknown:
            from astro3s.errors import did_you_mean

            hint = did_you_mean(unknown[0], valid, "tiling.")
            raise ConfigError(f"unknown tiling option(s) {', '.join(unknown)}{hint}; valid: {', '.join(valid)}")
        return cls(**values)


def flip_averaged(model: Any, views: int) -> Any:
    """The network with its class probabilities averaged over mirror images of its input.

    Test-time flips: the input, its left-right mirror (``views=2``) and its
    up-down and double mirrors (``views=4``) go through the network, each
    output is mirrored back, and the softmax probabilities are averaged. The
    network was trained with both flips (``astro3s.data.augment``), so each
    view is as valid as the input. Measured 2026-12-05 on the held-out family
    and the presets, the gain was not uniform (``d2_like`` lost detection) and
    each view costs one more pass, so inference defaults to one view
    (``experiments/results/heldout_ablation.md``).

    Parameters
    ----------
    model : torch.nn.Module or SegmentationModule
        A network mapping ``(N, 1, H, W)`` to logits ``(N, 3, H, W)`` (a
        Lightning module's ``.net`` is used).
    views : {1, 2, 4}
        1 returns ``model`` unchanged.

    Returns
    -------
    torch.nn.Module
        Returns log-probabilities, so that the softmax taken by the callers
        gives the averaged probabilities. Wrapping twice wraps once.
    """
    import torch

    views = int(views)
    if views not in FLIP_VIEWS:
        raise ValueError(f"views must be one of {sorted(FLIP_VIEWS)}, got {views}")
    net = getattr(model, "net", model)
    if views == 1 or isinstance(net, _FlipAveraged):
        return net

    class FlipAveraged(_FlipAveraged, torch.nn.Module):
        def __init__(self, inner: Any, dims: list[tuple[int, ...]]) -> None:
            torch.nn.Module.__init__(self)
            self.inner = inner
            self.dims = dims

        def forward(self, x: Any) -> Any:
            total = None
            for dims in self.dims:  # loop over the (2 or 4) views
                view = torch.flip(x, dims) if dims else x
                probs = torch.softmax(self.inner(view).float(), dim=1)
                probs = torch.flip(probs, dims) if dims else probs
                total = probs if total is None else total + probs
            return torch.log(total / len(self.dims) + 1e-12)

    return FlipAveraged(net, FLIP_VIEWS[views])


class _FlipAveraged:
    """Marker base of :func:`flip_averaged`'s wrapper (the torch class is made on first use)."""


def _net_and_device(model: Any, device: str | None) -> tuple[Any, Any]:
    import torch

    net = getattr(model, "net", model)
    if device is None:
        try:
            target = next(net.parameters()).device
        except StopIteration:
            target = torch.device("cpu")
    else:
        from astro3s.utils.device import resolve_device

        target = torch.device(resolve_device(device))
        net.to(target)
    net.eval()
    return net, target


def _run_batches(net: Any, images: np.ndarray, *, device: Any, batch_size: int, amp: bool) -> np.ndarray:
    """Softmax of ``net`` on ``images (N, C, h, w)`` float32 -> ``(N, 3, h, w)`` float32."""
    import torch

    out = np.empty((images.shape[0], NUM_CLASSES, *images.shape[2:]), np.float32)
    use_amp = bool(amp) and device.type == "cuda"
    with torch.inference_mode():
        for start in range(0, images.shape[0], batch_size):  # loop over batches, not pixels
            batch = torch.from_numpy(images[start:start + batch_size]).to(device)
            with torch.autocast(device_type=device.type, dtype=torch.bfloat16, enabled=use_amp):
                logits = net(batch)
            out[start:start + batch_size] = torch.softmax(logits.float(), dim=1).cpu().numpy()
    return out


def predict_crops(model: Any, pre: Any, *, normalize: str = "mean", batch_size: int = 32,
                  device: str | None = None, amp: bool = True) -> np.ndarray:
    """Class probabilities of every single-cell crop of a pre-processed FOV.

    Parameters
    ----------
    model : SegmentationModule or SegmentationNetwork
        Trained network (its ``net`` is used when it has one).
    pre : Preprocessed
        Uses ``crops (N, S, S)`` float (or already stacked ``(N, C, S, S)``), and for a network of two
        input channels the correlation image (:func:`astro3s.preprocess.network_input.crop_channels`).
    normalize : {"mean", "none", "standardize"}
        Per-crop (and per-channel) normalisation, as in training (``data.normalize``).
    batch_size : int
        Crops per forward pass.
    device : str, optional
        ``"auto"``, ``"cpu"`` or ``"cuda[:i]"``; None keeps the model where it is.
    amp : bool
        bfloat16 autocast on CUDA (ignored on CPU).

    Returns
    -------
    crop_probs : ndarray of float32, shape (N, 3, S, S)
        Softmax over :data:`astro3s.models.CLASS_NAMES`.
    """
    from astro3s.data.samples import normalize_channels
    from astro3s.models.base import input_channels
    from astro3s.preprocess.network_input import crop_channels

    crops = np.asarray(pre.crops, dtype=np.float32)
    size = int(pre.params.crop_size)
    if crops.ndim not in (3, 4) or crops.shape[0] == 0:
        return np.zeros((0, NUM_CLASSES, size, size), np.float32)
    net, dev = _net_and_device(model, device)
    images = normalize_channels(crop_channels(pre, input_channels(net)), normalize)
    return _run_batches(net, images, device=dev, batch_size=max(1, int(batch_size)), amp=amp)


def predict_crops_zoomed(model: Any, pre: Any, zoom: float = 1.0, *, normalize: str = "mean",
                         batch_size: int = 32, device: str | None = None,
                         amp: bool = True) -> tuple[np.ndarray, np.ndarray]:
    """:func:`predict_crops` with the cells enlarged ``zoom`` times, and the boxes the outputs cover.

    The central ``m = round(side / zoom)`` px of each candidate's box (side
    ``side``) are resampled (bilinear) to ``side`` px and padded as usual;
    the network's probabilities are resampled back to ``m`` px. So a FOV whose
    somata are ``zoom**2`` times smaller than the training data's reaches the
    network at the scale it was trained on, around the same candidates.

    Parameters
    ----------
    model, pre, normalize, batch_size, device, amp
        As for :func:`predict_crops`.
    zoom : float
        Enlargement, >= 1; 1 is :func:`predict_crops` itself.

    Returns
    -------
    crop_probs : ndarray of float32, shape (N, 3, S, S)
        Each box's probabilities centred in its crop (background around them).
    crop_boxes : ndarray of int32, shape (N, 4)
        ``(y0, x0, y1, x1)`` of the central ``m x m`` of each box
        (``pre.crop_boxes`` when ``zoom`` is 1): what :func:`astro3s.postprocess.combine` needs.
    """
    from skimage.transform import resize

    from astro3s.models.base import input_channels
    from astro3s.preprocess.network_input import crop_channels

    boxes = np.asarray(pre.crop_boxes, dtype=np.int64).reshape(-1, 4)
    if zoom <= 1.0 or len(boxes) == 0:
        return predict_crops(model, pre, normalize=normalize, batch_size=batch_size, device=device,
                             amp=amp), np.asarray(pre.crop_boxes, np.int32)
    crops = crop_channels(pre, input_channels(model))  # (N, C, S, S): every channel zoomed alike
    size = crops.shape[-1]
    hw = boxes[:, 2:] - boxes[:, :2]
    side = int(hw.min())  # equal-sized boxes (an axis shorter than filter_box is taken whole)
    m = max(8, int(round(side / float(zoom))))
    o = (size - side) // 2          # box in its crop (crop_offsets)
    c = o + (side - m) // 2         # central m x m in the crop
    zoomed = np.zeros_like(crops)
    for n in range(len(crops)):  # loop over candidates
        zoomed[n, :, o:o + side, o:o + side] = resize(crops[n, :, c:c + m, c:c + m], (crops.shape[1], side, side),
                                                      order=1, preserve_range=True, anti_aliasing=False)
    probs = predict_crops(model, dataclasses.replace(pre, crops=zoomed), normalize=normalize,
                          batch_size=batch_size, device=device, amp=amp)
    out = np.zeros_like(probs)
    out[:, BACKGROUND] = 1.0
    oo = (size - m) // 2
    for n in range(len(probs)):  # loop over candidates
        out[n, :, oo:oo + m, oo:oo + m] = resize(probs[n, :, o:o + side, o:o + side], (NUM_CLASSES, m, m),
                                                 order=1, preserve_range=True, anti_aliasing=True)
    inner = boxes.copy()
    inner[:, :2] += (side - m) // 2
    inner[:, 2:] = inner[:, :2] + m
    return out, inner.astype(np.int32)


#: a centred crop's soma counts as cut by the FOV's edge when it comes this close to it, px (the network's soma
#: often stops a pixel or two short of the edge)
EDGE_BAND = 3


def border_centred_crops(pre: Any, channels: int = 1) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Crops centred on the candidates whose box the FOV's edge moved, the FOV mirrored beyond the edge.

    A candidate's box (:func:`astro3s.preprocess.candidate_boxes`) is moved
    inside the FOV, so a soma the edge cuts sits at its crop's edge with
    nothing beyond it, where the network sees no soma. Here each such
    candidate gets a crop centred on it as far as its box allowed, whose
    part beyond the FOV's edge is the mirror image of the part inside
    (``enhanced`` times the candidate's local-filter mask, mirrored about
    the edge): the network then sees a whole soma. ``pre.candidates`` must
    hold one label per box (the boxes' order). With ``channels`` 2 the
    correlation channel (:mod:`astro3s.preprocess.network_input`) is centred alike.

    Returns
    -------
    index : ndarray of int64, shape (K,)
        The boxes that moved (rows of ``pre.crop_boxes``).
    crops : ndarray of float32, shape (K, S, S), or (K, channels, S, S) when ``channels`` > 1
        Their centred crops, in the layout of ``pre.crops``.
    shift : ndarray of int64, shape (K, 2)
        ``(dy, dx)``: pixel ``(u, v)`` of a centred crop is pixel ``(u + dy, v + dx)`` of the box's own crop.
    """
    from astro3s.preprocess import crop_offsets
    from astro3s.preprocess.local_filter import candidate_centres
    from astro3s.preprocess.network_input import channel_images

    boxes = np.asarray(pre.crop_boxes, dtype=np.int64).reshape(-1, 4)
    size = int(np.asarray(pre.crops).shape[-1]) if len(boxes) else 0
    layout = (size, size) if channels == 1 else (channels, size, size)
    empty = (np.zeros(0, np.int64), np.zeros((0, *layout), np.float32), np.zeros((0, 2), np.int64))
    centres = candidate_centres(pre.candidates) if len(boxes) else np.zeros((0, 2))
    if len(boxes) == 0 or len(centres) != len(boxes):
        return empty
    side = boxes[:, 2:] - boxes[:, :2]
    wanted = np.floor(np.nan_to_num(centres, nan=0.0)).astype(np.int64) - side // 2   # the box before it was moved
    shift = wanted - boxes[:, :2]
    moved = np.flatnonzero(np.isfinite(centres).all(axis=1) & (shift != 0).any(axis=1))
    if moved.size == 0:
        return empty
    offsets = crop_offsets(boxes, size)
    images = [np.asarray(pre.enhanced, np.float32), *channel_images(pre, channels)]
    masks = np.asarray(pre.crop_masks, bool)
    crops = np.zeros((moved.size, len(images), size, size), np.float32)
    for j, n in enumerate(moved):  # loop over the moved boxes (a few per FOV)
        (y0, x0, y1, x1), (oy, ox) = boxes[n], offsets[n]
        h, w = y1 - y0, x1 - x0
        wy, wx = wanted[n] - boxes[n, :2] + (h, w)
        for c, image in enumerate(images):  # loop over the input channels (1 or 2)
            inside = image[y0:y1, x0:x1] * masks[n, oy:oy + h, ox:ox + w]
            # the box's content, mirrored about each edge the box touches, then the window centred on the candidate
            padded = np.pad(inside, ((h, h), (w, w)), mode="symmetric")
            crops[j, c, oy:oy + h, ox:ox + w] = padded[wy:wy + h, wx:wx + w]
    return moved.astype(np.int64), (crops[:, 0] if channels == 1 else crops), shift[moved]


def cut_candidate_somata(pre: Any, centred: np.ndarray, index: np.ndarray,
                         shift: np.ndarray) -> list[np.ndarray | None]:
    """The soma that each centred crop draws on its candidate, in FOV pixels, when the FOV's edge cuts it.

    Parameters
    ----------
    pre : Preprocessed
        Uses ``crop_boxes`` and ``candidates`` (one label per box, the boxes' order).
    centred : ndarray of float, shape (K, 3, S, S)
        The network's probabilities on the crops of :func:`border_centred_crops`.
    index, shift : ndarray
        As :func:`border_centred_crops` returns them.

    Returns
    -------
    list of (ndarray of bool, shape (H, W)) or None
        Per centred crop: its connected soma pixels (argmax) that meet the candidate's label, inside the
        box's FOV pixels, when they come within :data:`EDGE_BAND` px of the FOV's edge; None when the
        crop draws no soma on the candidate or the edge does not cut it (its box merely moved).
    """
    from scipy import ndimage as ndi

    from astro3s.models.classes import SOMA
    from astro3s.preprocess import crop_offsets

    boxes = np.asarray(pre.crop_boxes, dtype=np.int64).reshape(-1, 4)
    candidates = np.asarray(pre.candidates)
    height, width = candidates.shape
    size = int(np.asarray(centred).shape[-1])
    offsets = crop_offsets(boxes, size)
    rim = np.ones((height, width), bool)
    rim[EDGE_BAND:-EDGE_BAND, EDGE_BAND:-EDGE_BAND] = False
    out: list[np.ndarray | None] = []
    for j, n in enumerate(index):  # loop over the moved boxes (a few per FOV)
        (y0, x0, y1, x1), (oy, ox), (dy, dx) = boxes[n], offsets[n], shift[j]
        # centred pixel (u, v) is the box crop's (u + dy, v + dx), FOV pixel (y0 - oy + u + dy, x0 - ox + v + dx)
        u, v = np.nonzero(centred[j].argmax(axis=0) == SOMA)
        fy, fx = y0 - oy + u + dy, x0 - ox + v + dx
        inside = (fy >= y0) & (fy < y1) & (fx >= x0) & (fx < x1)
        drawn = np.zeros((height, width), bool)
        drawn[fy[inside], fx[inside]] = True
        parts, _ = ndi.label(drawn)
        own = np.unique(parts[(candidates == n + 1) & (parts > 0)])
        soma = np.isin(parts, own[own > 0]) if own.size else None
        out.append(soma if soma is not None and (soma & rim).any() else None)
    return out


def with_border_centred_predictions(model: Any, pre: Any, crop_probs: np.ndarray, *, normalize: str = "mean",
                                    batch_size: int = 32, device: str | None = None, amp: bool = True,
                                    fov_probs: np.ndarray | None = None, min_agreement: float = 0.0) -> np.ndarray:
    """``crop_probs`` (of :func:`predict_crops`) with each cut candidate's soma taken from its centred crop.

    For each box of :func:`border_centred_crops` whose candidate the FOV's
    edge cuts (:func:`cut_candidate_somata`), the centred crop's
    probabilities replace the box's own on that soma and a 2-px rim around
    it (a candidate the edge does not cut keeps its own crop, whose box
    merely moved). Every other pixel of the box, the other cells it holds
    among them, keeps the box's own.

    Parameters
    ----------
    fov_probs : ndarray of float, shape (3, H, W), optional
        The whole-FOV pass. With ``min_agreement > 0`` a centred crop is used only where the whole-FOV
        pass calls at least that fraction of its soma pixels soma too.
    min_agreement : float
        0 uses every centred crop.

    Returns
    -------
    ndarray of float32, shape (N, 3, S, S)
        A copy of ``crop_probs`` (``crop_probs`` itself when no box moved).
    """
    from scipy import ndimage as ndi

    from astro3s.models.base import input_channels
    from astro3s.models.classes import SOMA
    from astro3s.preprocess import crop_offsets

    index, crops, shift = border_centred_crops(pre, input_channels(model))
    if index.size == 0:
        return crop_probs
    centred = predict_crops(model, dataclasses.replace(pre, crops=crops), normalize=normalize,
                            batch_size=batch_size, device=device, amp=amp)
    boxes = np.asarray(pre.crop_boxes, dtype=np.int64).reshape(-1, 4)
    size = crop_probs.shape[-1]
    offsets = crop_offsets(boxes, size)
    fov_soma = np.asarray(fov_probs).argmax(axis=0) == SOMA if fov_probs is not None else None
    out = np.array(crop_probs, copy=True)
    for j, (n, soma) in enumerate(zip(index, cut_candidate_somata(pre, centred, index, shift))):
        if soma is None:
            continue
        if min_agreement > 0 and fov_soma is not None and fov_soma[soma].mean() < min_agreement:
            continue
        (y0, x0, y1, x1), (oy, ox), (dy, dx) = boxes[n], offsets[n], shift[j]
        region = np.zeros_like(soma)
        region[y0:y1, x0:x1] = ndi.binary_dilation(soma, iterations=2)[y0:y1, x0:x1]
        fy, fx = np.nonzero(region)
        by, bx = fy - y0 + oy, fx - x0 + ox            # the box crop's pixels
        cy, cx = by - dy, bx - dx                      # the centred crop's
        ok = (cy >= 0) & (cy < size) & (cx >= 0) & (cx < size)
        out[n][:, by[ok], bx[ok]] = centred[j][:, cy[ok], cx[ok]]
    return out


def tile_boxes(shape: tuple[int, int], *, tile: int, overlap: int) -> np.ndarray:
    """Boxes of square tiles covering a FOV with at least ``overlap`` px between neighbours.

    Parameters
    ----------
    shape : (int, int)
        FOV ``(H, W)``.
    tile : int
        Tile side, px (a FOV side smaller than ``tile`` gives tiles of that side).
    overlap : int
        Minimum overlap of neighbouring tiles, px (``< tile``).

    Returns
    -------
    boxes : ndarray of int64, shape (N, 4)
        ``(y0, x0, y1, x1)`` of each tile.
    """
    from astro3s.data.samples import tile_starts

    tile = int(tile)
    stride = max(1, tile - int(overlap))
    ys = tile_starts(int(shape[0]), tile, stride)
    xs = tile_starts(int(shape[1]), tile, stride)
    th, tw = min(tile, int(shape[0])), min(tile, int(shape[1]))
    return np.array([(y, x, y + th, x + tw) for y in ys for x in xs], dtype=np.int64)


def _zoomed_shape(shape: tuple[int, ...], zoom: float) -> tuple[int, int]:
    """The shape of a ``shape`` map resampled ``zoom`` times larger (as :func:`predict_fov` resamples it)."""
    return max(1, int(round(shape[0] * zoom))), max(1, int(round(shape[1] * zoom)))


def predict_fov(model: Any, pre: Any, *, normalize: str = "mean", tiling: TilingParams | None = None,
                batch_size: int = 4, device: str | None = None, amp: bool = True, zoom: float = 1.0,
                mirror: int = 0) -> np.ndarray:
    """Class probabilities of the whole-FOV pass, tiled when the FOV is large.

    Parameters
    ----------
    model : SegmentationModule or SegmentationNetwork
    pre : Preprocessed
        Uses ``fov_map (H, W)`` float (or already stacked ``(C, H, W)``), and for a network of two
        input channels the correlation image (:func:`astro3s.preprocess.network_input.fov_channels`).
    normalize : {"mean", "none", "standardize"}
        As in training; the statistics are those of the whole map, channel by channel.
    tiling : TilingParams, optional
        When and how the map is tiled (default: :class:`TilingParams`).
    batch_size : int
        Tiles per forward pass.
    device : str, optional
        None keeps the model where it is.
    amp : bool
        bfloat16 autocast on CUDA.
    zoom : float
        The map is resampled (bilinear) ``zoom`` times larger before the pass,
        and the probabilities back to ``(H, W)`` (see :func:`predict_crops_zoomed`);
        ``tiling.max_fov_pixels`` applies to the enlarged map.
    mirror : int
        The map is extended by its mirror image (``numpy.pad(mode="symmetric")``) this many px
        beyond each edge before the pass (before any zoom), and the probabilities cut back to
        ``(H, W)``: a soma the FOV's edge cuts then looks whole to the network (0: as it is). A map
        that ``tiling`` runs in one pass still runs in one pass with its mirror image.

    Returns
    -------
    fov_probs : ndarray of float32, shape (3, H, W)
        Softmax; background ``(0, 0, 1)`` nowhere forced (the network decides).
    """
    from astro3s.models.base import input_channels
    from astro3s.preprocess.network_input import fov_channels

    fov = fov_channels(pre, input_channels(model))  # (C, H, W): every channel mirrored and zoomed alike
    height, width = fov.shape[-2:]
    if mirror > 0:
        # per axis no wider than the map (wider symmetric padding would repeat it)
        pad_y, pad_x = min(int(mirror), height), min(int(mirror), width)
        extended = np.pad(fov, ((0, 0), (pad_y, pad_y), (pad_x, pad_x)), mode="symmetric")
        tiling = tiling or TilingParams()
        if math.prod(_zoomed_shape((height, width), zoom)) <= tiling.max_fov_pixels:
            # tiles cost ~2.7x one pass on a 512-px FOV (their overlaps) and read its edges differently
            tiling = dataclasses.replace(tiling, max_fov_pixels=max(
                int(tiling.max_fov_pixels), math.prod(_zoomed_shape(extended.shape[-2:], zoom))))
        probs = predict_fov(model, dataclasses.replace(pre, fov_map=extended), normalize=normalize,
                            tiling=tiling, batch_size=batch_size, device=device, amp=amp, zoom=zoom)
        return np.ascontiguousarray(probs[:, pad_y:pad_y + height, pad_x:pad_x + width])
    if zoom != 1.0:
        from skimage.transform import resize

        shape = _zoomed_shape((height, width), zoom)
        big = resize(fov, (fov.shape[0], *shape), order=1, preserve_range=True,
                     anti_aliasing=zoom < 1).astype(np.float32)
        probs = predict_fov(model, dataclasses.replace(pre, fov_map=big), normalize=normalize, tiling=tiling,
                            batch_size=batch_size, device=device, amp=amp)
        return resize(probs, (NUM_CLASSES, height, width), order=1, preserve_range=True,
                      anti_aliasing=zoom > 1).astype(np.float32)
    from astro3s.data.samples import normalize_channels
    from astro3s.postprocess.blend import crop_weight

    image = normalize_channels(fov[None], normalize)[0]
    net, dev = _net_and_device(model, device)
    tiling = tiling or TilingParams()
    if height * width <= int(tiling.max_fov_pixels):
        return _run_batches(net, image[None], device=dev, batch_size=1, amp=amp)[0]

    boxes = tile_boxes((height, width), tile=tiling.tile_size, overlap=tiling.tile_overlap)
    log.info("whole-FOV pass in %d tiles of %d px", len(boxes), tiling.tile_size)
    th, tw = int(boxes[0, 2] - boxes[0, 0]), int(boxes[0, 3] - boxes[0, 1])
    weight = crop_weight(max(th, tw))[:th, :tw] if th == tw else np.ones((th, tw), np.float32)
    num = np.zeros((NUM_CLASSES, height, width), np.float32)
    den = np.zeros((height, width), np.float32)
    bs = max(1, int(batch_size))
    for start in range(0, len(boxes), bs):  # loop over tile batches; memory = one batch of tiles
        chunk = boxes[start:start + bs]
        tiles = np.stack([image[:, y0:y1, x0:x1] for y0, x0, y1, x1 in chunk])
        probs = _run_batches(net, tiles, device=dev, batch_size=bs, amp=amp)
        for (y0, x0, y1, x1), p in zip(chunk, probs, strict=True):
            num[:, y0:y1, x0:x1] += p * weight
            den[y0:y1, x0:x1] += weight
    out = np.zeros_like(num)
    out[BACKGROUND] = 1.0
    covered = den > 0
    out[:, covered] = num[:, covered] / den[covered]
    return out
