"""U-Net and UNet++ (nested U-Net) baselines.

Both use the same building blocks as ASTRA's networks: double 3×3 convolutions
with batch norm and ReLU, 2×2 max pooling, bilinear ×2 up-sampling and
concatenated skip connections. Level ``i`` (0 = full resolution) has
``base_channels · 2**i`` channels; ``depth`` is the number of down-samplings,
so the total stride is ``2**depth``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import nn

from astro3s.models.base import (
    SegmentationNetwork,
    check_io_channels,
    check_positive_int,
    double_conv,
    upsample_to,
)
from astro3s.models.classes import NUM_CLASSES


class UNetEncoder(nn.Module):
    """Down path: ``depth + 1`` double-conv blocks separated by 2×2 max pooling.

    ``forward`` maps ``(B, in_channels, H, W)`` to ``depth + 1`` feature maps,
    level ``i`` of shape ``(B, base_channels·2**i, H/2**i, W/2**i)``.
    """

    def __init__(self, in_channels: int, *, depth: int, base_channels: int) -> None:
        super().__init__()
        self.out_channels = tuple(base_channels * 2**level for level in range(depth + 1))
        inputs = (in_channels, *self.out_channels[:-1])
        self.blocks = nn.ModuleList(
            double_conv(cin, cout) for cin, cout in zip(inputs, self.out_channels, strict=True)
        )
        self.pool = nn.MaxPool2d(2)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        features = []
        for level, block in enumerate(self.blocks):
            x = block(x if level == 0 else self.pool(x))
            features.append(x)
        return features


class UNet(SegmentationNetwork):
    """U-Net (Ronneberger et al. 2015) with bilinear up-sampling.

    Parameters
    ----------
    in_channels : int
        Input channels.
    num_classes : int
        Output channels (3: :data:`~astro3s.models.CLASS_NAMES`).
    depth : int
        Number of 2× down-samplings (4 → stride 16, as in ASTRA's U-Net).
    base_channels : int
        Channels of the full-resolution level (32 in ASTRA's baselines).
    encoder_ckpt : str or Path or None
        Weights to load into the encoder (see
        :func:`astro3s.models.checkpoint.load_encoder_weights`).

    Notes
    -----
    ``forward``: ``(B, in_channels, H, W)`` float → logits ``(B, num_classes, H, W)``.
    """

    name = "unet"

    def __init__(
        self,
        *,
        in_channels: int = 1,
        num_classes: int = NUM_CLASSES,
        depth: int = 4,
        base_channels: int = 32,
        encoder_ckpt: str | Path | None = None,
    ) -> None:
        super().__init__()
        in_channels, num_classes = check_io_channels(in_channels, num_classes)
        depth = check_positive_int("depth", depth)
        base_channels = check_positive_int("base_channels", base_channels)
        self.stride = 2**depth
        self.encoder = UNetEncoder(in_channels, depth=depth, base_channels=base_channels)
        channels = self.encoder.out_channels
        self.decoder = nn.ModuleList(
            double_conv(channels[level + 1] + channels[level], channels[level])
            for level in reversed(range(depth))
        )
        self.head = nn.Conv2d(channels[0], num_classes, 1)
        self.config = {
            "name": self.name,
            "in_channels": in_channels,
            "num_classes": num_classes,
            "depth": depth,
            "base_channels": base_channels,
        }
        self.encoder_load_report: Any = None
        if encoder_ckpt is not None:
            self.encoder_load_report = self.load_encoder_checkpoint(encoder_ckpt)


class UNetPlusPlus(SegmentationNetwork):
    """UNet++ (Zhou et al. 2018): nested U-Net with dense skip pathways.

    Node ``X[i][j]`` (level ``i``, column ``j``) is a double conv of the
    concatenation of ``X[i][0..j-1]`` and the up-sampled ``X[i+1][j-1]``; the
    full-resolution nodes ``X[0][1..depth]`` each feed a 1×1 output head.

    Parameters
    ----------
    in_channels, num_classes, depth, base_channels, encoder_ckpt
        As for :class:`UNet` (ASTRA's nested baseline: depth 4, base 32).
    deep_supervision : bool
        Train every head (:meth:`forward_heads` returns ``depth`` logit maps and
        the loss is averaged over them, as ASTRA does); ``forward`` then returns
        the mean of the heads' logits. Without it only the last head exists.

    Notes
    -----
    ``forward``: ``(B, in_channels, H, W)`` float → logits ``(B, num_classes, H, W)``.
    """

    name = "unetpp"

    def __init__(
        self,
        *,
        in_channels: int = 1,
        num_classes: int = NUM_CLASSES,
        depth: int = 4,
        base_channels: int = 32,
        deep_supervision: bool = False,
        encoder_ckpt: str | Path | None = None,
    ) -> None:
        super().__init__()
        in_channels, num_classes = check_io_channels(in_channels, num_classes)
        depth = check_positive_int("depth", depth)
        base_channels = check_positive_int("base_channels", base_channels)
        self.depth = depth
        self.stride = 2**depth
        self.deep_supervision = bool(deep_supervision)
        self.encoder = UNetEncoder(in_channels, depth=depth, base_channels=base_channels)
        channels = self.encoder.out_channels
        # nodes[f"{i}_{j}"] for j >= 1 and i + j <= depth
        self.nodes = nn.ModuleDict()
        for column in range(1, depth + 1):
            for level in range(depth - column + 1):
                in_ch = channels[level] * column + channels[level + 1]
                self.nodes[f"{level}_{column}"] = double_conv(in_ch, channels[level])
        n_heads = depth if self.deep_supervision else 1
        self.heads = nn.ModuleList(nn.Conv2d(channels[0], num_classes, 1) for _ in range(n_heads))
        self.config = {
            "name": self.name,
            "in_channels": in_channels,
            "num_classes": num_classes,
            "depth": depth,
            "base_channels": base_channels,
            "deep_supervision": self.deep_supervision,
        }
        self.encoder_load_report: Any = None
        if encoder_ckpt is not None:
            self.encoder_load_report = self.load_encoder_checkpoint(encoder_ckpt)

    def _forward_heads_padded(self, image: torch.Tensor) -> list[torch.Tensor]:
        grid: list[list[torch.Tensor]] = [[feature] for feature in self.encoder(image)]
        for column in range(1, self.depth + 1):
            for level in range(self.depth - column + 1):
                below = upsample_to(grid[level + 1][column - 1], grid[level][0])
                node = self.nodes[f"{level}_{column}"]
                grid[level].append(node(torch.cat([*grid[level][:column], below], dim=1)))
        if self.deep_supervision:
            return [head(grid[0][j + 1]) for j, head in enumerate(self.heads)]
        return [self.heads[0](grid[0][-1])]
