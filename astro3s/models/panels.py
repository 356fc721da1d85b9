"""Image panels of inputs, targets and predictions, as RGB tensors for loggers."""

from __future__ import annotations

import torch

from astro3s.models.classes import IGNORE_INDEX, PROCESSES, SOMA

#: Overlay colour (RGB, 0–1) of each foreground class; background stays grey.
CLASS_COLOURS: dict[int, tuple[float, float, float]] = {
    PROCESSES: (0.1, 0.9, 0.1),
    SOMA: (1.0, 0.2, 0.8),
}
_IGNORE_COLOUR = (0.2, 0.4, 1.0)


def _grey_rgb(image: torch.Tensor) -> torch.Tensor:
    """``(H, W)`` float image → ``(3, H, W)`` in [0, 1], stretched between its 1st and 99th percentiles."""
    image = image.detach().float().cpu()
    flat = image.flatten()
    low, high = torch.quantile(flat, 0.01), torch.quantile(flat, 0.99)
    scaled = ((image - low) / (high - low).clamp_min(1e-8)).clamp(0, 1)
    return scaled.expand(3, -1, -1).clone()


def overlay_labels(grey: torch.Tensor, labels: torch.Tensor, *, alpha: float = 0.5) -> torch.Tensor:
    """Blend class colours over a ``(3, H, W)`` grey image where ``labels (H, W)`` is foreground."""
    out = grey.clone()
    labels = labels.detach().cpu()
    for label, colour in [*CLASS_COLOURS.items(), (IGNORE_INDEX, _IGNORE_COLOUR)]:
        where = labels == label
        for channel in range(3):
            out[channel][where] = (1 - alpha) * out[channel][where] + alpha * colour[channel]
    return out


def render_panels(
    image: torch.Tensor,
    target: torch.Tensor | None,
    prediction: torch.Tensor,
    *,
    max_items: int = 4,
    gap: int = 2,
) -> torch.Tensor:
    """A grid with one row per sample: input, target overlay, prediction overlay.

    Parameters
    ----------
    image : Tensor
        ``(B, C, H, W)`` inputs (channel 0 is shown).
    target : Tensor or None
        ``(B, H, W)`` integer labels (column left out if None).
    prediction : Tensor
        ``(B, H, W)`` predicted labels.
    max_items : int
        Rows shown (the first ``max_items`` samples).
    gap : int
        White pixels between tiles.

    Returns
    -------
    Tensor
        ``(3, rows·(H+gap)-gap, cols·(W+gap)-gap)`` uint8 RGB image (CHW, as
        TensorBoard's ``add_image`` expects).
    """
    rows = []
    n_items = min(int(max_items), image.shape[0])
    for index in range(n_items):
        grey = _grey_rgb(image[index, 0])
        tiles = [grey]
        if target is not None:
            tiles.append(overlay_labels(grey, target[index]))
        tiles.append(overlay_labels(grey, prediction[index]))
        rows.append(tiles)
    height, width = image.shape[-2:]
    n_cols = len(rows[0])
    canvas = torch.ones(3, n_items * (height + gap) - gap, n_cols * (width + gap) - gap)
    for r, tiles in enumerate(rows):
        for c, tile in enumerate(tiles):
            top, left = r * (height + gap), c * (width + gap)
            canvas[:, top : top + height, left : left + width] = tile
    return (canvas * 255).round().to(torch.uint8)
