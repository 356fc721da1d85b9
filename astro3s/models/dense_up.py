"""``DenseUp``: ASTRA's segmentation network (Bonato et al. 2023).

A U-Net-style shallow encoder (two double-convolution blocks, 1→96→192
channels, each followed by 2×2 max pooling) feeds the three middle stages of
Inception-ResNet-v2; a decoder of bilinear ×2 up-sampling, concatenation with
the matching encoder features and a double convolution climbs back to full
resolution, and a 1×1 convolution gives the class logits.

Shapes at full width for a ``(B, 1, 96, 96)`` crop::

    conv_block1  (B,   96, 96, 96)  ─────────────────────────────┐
    conv_block2  (B,  192, 48, 48)  ───────────────────────┐     │
    stage 1      (B,  320, 24, 24)  ─────────────────┐     │     │
    stage 2      (B, 1088, 12, 12)  ───────────┐     │     │     │
    stage 3      (B, 1536,  6,  6) ─ up ─ cat ─ dec4 ─ up/cat dec3 ─ dec2 ─ dec1 ─ head (B, 3, 96, 96)

The total stride is 16; other sizes are padded internally (see
:class:`~astro3s.models.base.SegmentationNetwork`).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

from astro3s.errors import ConfigError
from astro3s.models.base import (
    SegmentationNetwork,
    check_io_channels,
    check_positive_float,
    check_positive_int,
    double_conv,
    scaled_channels,
)
from astro3s.models.classes import NUM_CLASSES
from astro3s.models.inception_resnet import InceptionResNetStages


class DenseUpEncoder(nn.Module):
    """Shallow double-conv encoder followed by the Inception-ResNet-v2 stages.

    ``forward`` returns five feature maps, finest first:
    ``(B, c1, H, W)``, ``(B, c2, H/2, W/2)``, ``(B, c3, H/4, W/4)``,
    ``(B, c4, H/8, W/8)``, ``(B, c5, H/16, W/16)``; ``self.out_channels`` lists
    ``c1 … c5`` (96, 192, 320, 1088, 1536 at full width).
    """

    def __init__(
        self,
        in_channels: int,
        *,
        stem_channels: tuple[int, int],
        depths: tuple[int, int, int],
        width: float,
        block_scales: tuple[float, float, float],
    ) -> None:
        super().__init__()
        c1, c2 = stem_channels
        self.conv_block1 = double_conv(in_channels, c1)
        self.conv_block2 = double_conv(c1, c2)
        self.pool = nn.MaxPool2d(2)
        self.inception = InceptionResNetStages(
            c2, depths=depths, width=width, block_scales=block_scales
        )
        self.out_channels: tuple[int, ...] = (c1, c2, *self.inception.out_channels)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        level1 = self.conv_block1(x)
        level2 = self.conv_block2(self.pool(level1))
        deep = self.inception(self.pool(level2))
        return [level1, level2, *deep]


class DenseUp(SegmentationNetwork):
    """ASTRA's ``dense_up`` network: double-conv stem + Inception-ResNet-v2 encoder, U-Net decoder.

    Parameters
    ----------
    in_channels : int
        Input channels (1: one enhanced / activity image per crop).
    num_classes : int
        Output channels (3: :data:`~astro3s.models.CLASS_NAMES`).
    depths : sequence of 3 int
        Residual blocks per Inception-ResNet stage (block35, block17, block8);
        the paper uses ``(10, 20, 10)``.
    width : float
        Channel multiplier applied to every layer (1.0 = the paper network).
    stem_channels : sequence of 2 int
        Channels of the two double-conv blocks at ``width=1`` (96, 192).
    block_scales : sequence of 3 float
        Residual scaling of block35 / block17 / block8.
    encoder_ckpt : str or Path or None
        Weights to load into the encoder after construction (matching keys of a
        state dict or of a Lightning checkpoint's ``state_dict``; see
        :func:`astro3s.models.checkpoint.load_encoder_weights`). ImageNet weights
        of Inception-ResNet-v2 in the common PyTorch port (``width=1``) load into
        ``encoder.inception``; the key prefix is found automatically.

    Notes
    -----
    ``forward`` maps ``(B, in_channels, H, W)`` float to logits
    ``(B, num_classes, H, W)``; :meth:`predict_proba` applies the softmax that
    ASTRA's module applies in ``forward``.
    """

    name = "dense_up"
    stride = 16

    def __init__(
        self,
        *,
        in_channels: int = 1,
        num_classes: int = NUM_CLASSES,
        depths: Sequence[int] = (10, 20, 10),
        width: float = 1.0,
        stem_channels: Sequence[int] = (96, 192),
        block_scales: Sequence[float] = (0.17, 0.10, 0.20),
        encoder_ckpt: str | Path | None = None,
    ) -> None:
        super().__init__()
        in_channels, num_classes = check_io_channels(in_channels, num_classes)
        depths = _triple("depths", depths, kind=int)
        block_scales = _triple("block_scales", block_scales, kind=float)
        width = check_positive_float("width", width)
        if len(list(stem_channels)) != 2:
            raise ConfigError(f"stem_channels must list 2 channel counts, got {stem_channels!r}")
        stem = tuple(
            scaled_channels(check_positive_int("stem_channels", c), width) for c in stem_channels
        )
        self.encoder = DenseUpEncoder(
            in_channels,
            stem_channels=stem,  # type: ignore[arg-type]
            depths=depths,  # type: ignore[arg-type]
            width=width,
            block_scales=block_scales,  # type: ignore[arg-type]
        )
        c1, c2, c3, c4, c5 = self.encoder.out_channels
        self.decoder = nn.ModuleList(
            [
                double_conv(c5 + c4, c4),
                double_conv(c4 + c3, c3),
                double_conv(c3 + c2, c2),
                double_conv(c2 + c1, c1),
            ]
        )
        self.head = nn.Conv2d(c1, num_classes, 1)
        nn.init.kaiming_uniform_(self.head.weight, nonlinearity="linear")
        self.config = {
            "name": self.name,
            "in_channels": in_channels,
            "num_classes": num_classes,
            "depths": list(depths),
            "width": width,
            "stem_channels": [int(c) for c in stem_channels],
            "block_scales": list(block_scales),
        }
        self.encoder_load_report: Any = None
        if encoder_ckpt is not None:
            self.encoder_load_report = self.load_encoder_checkpoint(encoder_ckpt)

    def inception_parameters(self) -> list[nn.Parameter]:
        """Parameters of the Inception-ResNet stages only (what ASTRA freezes at first)."""
        return list(self.encoder.inception.parameters())


def _triple(name: str, values: Sequence[Any], *, kind: type) -> tuple:
    try:
        items = list(values)
    except TypeError:
        raise ConfigError(f"{name} must list 3 values, got {values!r}") from None
    if len(items) != 3:
        raise ConfigError(f"{name} must list 3 values, got {values!r}")
    if kind is int:
        return tuple(check_positive_int(name, v, minimum=0) for v in items)
    return tuple(check_positive_float(name, v) for v in items)
