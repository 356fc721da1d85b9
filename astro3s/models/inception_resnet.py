"""Inception-ResNet-v2 stages (Szegedy et al. 2017) as used inside ASTRA's ``dense_up``.

ASTRA keeps the three middle stages of Inception-ResNet-v2 — mixed-5b with
block35 ×10 (35×35 grid in the original), reduction-A (mixed-6a) with block17
×20, reduction-B (mixed-7a) with block8 ×10 and the final 1×1 convolution — and
drops the original stem. The modules here are written from the published
architecture; sub-module names follow the common PyTorch port of
Inception-ResNet-v2 (``mixed_5b``, ``repeat``, ``mixed_6a``, ``repeat_1``,
``mixed_7a``, ``repeat_2``, ``block8``, ``conv2d_7b``; ``branchN``, ``conv``,
``bn``) so that a state dict of that port loads into
:class:`InceptionResNetStages` with full width by key.

Every channel count is multiplied by ``width`` so that a small variant is a
config change. Unlike the original (valid padding in the reductions), the
stride-2 layers pad by 1 so that an even input size is halved exactly, as ASTRA
obtains by zero-padding before each reduction.
"""

from __future__ import annotations

import torch
from torch import nn

from astro3s.models.base import scaled_channels


class ConvBNReLU(nn.Module):
    """Bias-free convolution, batch norm (eps 1e-3) and ReLU: ``(B, Cin, H, W) -> (B, Cout, H', W')``."""

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int | tuple[int, int],
        *,
        stride: int = 1,
        padding: int | tuple[int, int] = 0,
    ) -> None:
        super().__init__()
        self.conv = nn.Conv2d(
            in_channels, out_channels, kernel_size, stride=stride, padding=padding, bias=False
        )
        self.bn = nn.BatchNorm2d(out_channels, eps=1e-3, momentum=0.1)
        self.relu = nn.ReLU(inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.relu(self.bn(self.conv(x)))


class Mixed5b(nn.Module):
    """Inception block entering the first stage: ``(B, Cin, H, W) -> (B, out_channels, H, W)``.

    Four branches (1×1; 1×1→5×5; 1×1→3×3→3×3; 3×3 average pool→1×1), with
    96, 64, 96 and 64 channels at full width (320 in total).
    """

    def __init__(self, in_channels: int, *, width: float = 1.0) -> None:
        super().__init__()
        c = lambda n: scaled_channels(n, width)  # noqa: E731
        self.branch0 = ConvBNReLU(in_channels, c(96), 1)
        self.branch1 = nn.Sequential(
            ConvBNReLU(in_channels, c(48), 1), ConvBNReLU(c(48), c(64), 5, padding=2)
        )
        self.branch2 = nn.Sequential(
            ConvBNReLU(in_channels, c(64), 1),
            ConvBNReLU(c(64), c(96), 3, padding=1),
            ConvBNReLU(c(96), c(96), 3, padding=1),
        )
        self.branch3 = nn.Sequential(
            nn.AvgPool2d(3, stride=1, padding=1, count_include_pad=False),
            ConvBNReLU(in_channels, c(64), 1),
        )
        self.out_channels = c(96) + c(64) + c(96) + c(64)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([self.branch0(x), self.branch1(x), self.branch2(x), self.branch3(x)], 1)


class Block35(nn.Module):
    """Residual inception block of stage 1: ``(B, C, H, W) -> (B, C, H, W)``, ``C`` 320 at full width."""

    def __init__(self, channels: int, *, width: float = 1.0, scale: float = 0.17) -> None:
        super().__init__()
        c = lambda n: scaled_channels(n, width)  # noqa: E731
        self.scale = scale
        self.branch0 = ConvBNReLU(channels, c(32), 1)
        self.branch1 = nn.Sequential(
            ConvBNReLU(channels, c(32), 1), ConvBNReLU(c(32), c(32), 3, padding=1)
        )
        self.branch2 = nn.Sequential(
            ConvBNReLU(channels, c(32), 1),
            ConvBNReLU(c(32), c(48), 3, padding=1),
            ConvBNReLU(c(48), c(64), 3, padding=1),
        )
        self.conv2d = nn.Conv2d(c(32) + c(32) + c(64), channels, 1)
        self.relu = nn.ReLU(inplace=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        mixed = torch.cat([self.branch0(x), self.branch1(x), self.branch2(x)], 1)
        return self.relu(x + self.scale * self.conv2d(mixed))


class Mixed6a(nn.Module):
    """Reduction-A: ``(B, C, H, W) -> (B, C + 2·384·width, H/2, W/2)`` (1088 channels at full width)."""

    def __init__(self, in_channels: int, *, width: float = 1.0) -> None:
        super().__init__()
        c = lambda n: scaled_channels(n, width)  # noqa: E731
        self.branch0 = ConvBNReLU(in_channels, c(384), 3, stride=2, padding=1)
        self.branch1 = nn.Sequential(
            ConvBNReLU(in_channels, c(256), 1),
            ConvBNReLU(c(256), c(256), 3, padding=1),
            ConvBNReLU(c(256), c(384), 3, stride=2, padding=1),
        )
        self.branch2 = nn.MaxPool2d(3, stride=2, padding=1)
        self.out_channels = c(384) + c(384) + in_channels

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([self.branch0(x), self.branch1(x), self.branch2(x)], 1)


class Block17(nn.Module):
    """Residual inception block of stage 2 (1×7 / 7×1 factorised): ``(B, C, H, W) -> (B, C, H, W)``."""

    def __init__(self, channels: int, *, width: float = 1.0, scale: float = 0.10) -> None:
        super().__init__()
        c = lambda n: scaled_channels(n, width)  # noqa: E731
        self.scale = scale
        self.branch0 = ConvBNReLU(channels, c(192), 1)
        self.branch1 = nn.Sequential(
            ConvBNReLU(channels, c(128), 1),
            ConvBNReLU(c(128), c(160), (1, 7), padding=(0, 3)),
            ConvBNReLU(c(160), c(192), (7, 1), padding=(3, 0)),
        )
        self.conv2d = nn.Conv2d(c(192) + c(192), channels, 1)
        self.relu = nn.ReLU(inplace=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        mixed = torch.cat([self.branch0(x), self.branch1(x)], 1)
        return self.relu(x + self.scale * self.conv2d(mixed))


class Mixed7a(nn.Module):
    """Reduction-B: ``(B, C, H, W) -> (B, C + (384+288+320)·width, H/2, W/2)`` (2080 at full width)."""

    def __init__(self, in_channels: int, *, width: float = 1.0) -> None:
        super().__init__()
        c = lambda n: scaled_channels(n, width)  # noqa: E731
        self.branch0 = nn.Sequential(
            ConvBNReLU(in_channels, c(256), 1), ConvBNReLU(c(256), c(384), 3, stride=2, padding=1)
        )
        self.branch1 = nn.Sequential(
            ConvBNReLU(in_channels, c(256), 1), ConvBNReLU(c(256), c(288), 3, stride=2, padding=1)
        )
        self.branch2 = nn.Sequential(
            ConvBNReLU(in_channels, c(256), 1),
            ConvBNReLU(c(256), c(288), 3, padding=1),
            ConvBNReLU(c(288), c(320), 3, stride=2, padding=1),
        )
        self.branch3 = nn.MaxPool2d(3, stride=2, padding=1)
        self.out_channels = c(384) + c(288) + c(320) + in_channels

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([self.branch0(x), self.branch1(x), self.branch2(x), self.branch3(x)], 1)


class Block8(nn.Module):
    """Residual inception block of stage 3 (1×3 / 3×1 factorised): ``(B, C, H, W) -> (B, C, H, W)``.

    ``final=True`` leaves out the closing ReLU (the last block of the stage).
    """

    def __init__(
        self, channels: int, *, width: float = 1.0, scale: float = 0.20, final: bool = False
    ) -> None:
        super().__init__()
        c = lambda n: scaled_channels(n, width)  # noqa: E731
        self.scale = scale
        self.branch0 = ConvBNReLU(channels, c(192), 1)
        self.branch1 = nn.Sequential(
            ConvBNReLU(channels, c(192), 1),
            ConvBNReLU(c(192), c(224), (1, 3), padding=(0, 1)),
            ConvBNReLU(c(224), c(256), (3, 1), padding=(1, 0)),
        )
        self.conv2d = nn.Conv2d(c(192) + c(256), channels, 1)
        self.relu = None if final else nn.ReLU(inplace=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        mixed = torch.cat([self.branch0(x), self.branch1(x)], 1)
        out = x + self.scale * self.conv2d(mixed)
        return out if self.relu is None else self.relu(out)


class InceptionResNetStages(nn.Module):
    """The three Inception-ResNet-v2 stages ASTRA uses as its deep encoder.

    Parameters
    ----------
    in_channels : int
        Channels of the input (192 at full width in ``dense_up``).
    depths : tuple of int
        Residual blocks per stage: (block35, block17, block8) — (10, 20, 10) in
        Inception-ResNet-v2 and ASTRA. The last block8 has no closing ReLU.
    width : float
        Channel multiplier (1.0 = the published network).
    block_scales : tuple of float
        Residual scaling of the three block types (0.17, 0.10, 0.20).

    Notes
    -----
    ``forward`` maps ``(B, in_channels, H, W)`` (``H, W`` multiples of 4) to
    three feature maps: ``(B, c3, H, W)``, ``(B, c4, H/2, W/2)`` and
    ``(B, c5, H/4, W/4)`` with ``c3, c4, c5 = out_channels`` (320, 1088, 1536
    at full width).
    """

    def __init__(
        self,
        in_channels: int,
        *,
        depths: tuple[int, int, int] = (10, 20, 10),
        width: float = 1.0,
        block_scales: tuple[float, float, float] = (0.17, 0.10, 0.20),
    ) -> None:
        super().__init__()
        depth35, depth17, depth8 = depths
        scale35, scale17, scale8 = block_scales
        self.mixed_5b = Mixed5b(in_channels, width=width)
        c3 = self.mixed_5b.out_channels
        self.repeat = nn.Sequential(
            *[Block35(c3, width=width, scale=scale35) for _ in range(depth35)]
        )
        self.mixed_6a = Mixed6a(c3, width=width)
        c4 = self.mixed_6a.out_channels
        self.repeat_1 = nn.Sequential(
            *[Block17(c4, width=width, scale=scale17) for _ in range(depth17)]
        )
        self.mixed_7a = Mixed7a(c4, width=width)
        c_mixed = self.mixed_7a.out_channels
        self.repeat_2 = nn.Sequential(
            *[Block8(c_mixed, width=width, scale=scale8) for _ in range(max(depth8 - 1, 0))]
        )
        self.block8: nn.Module = (
            Block8(c_mixed, width=width, scale=scale8, final=True) if depth8 > 0 else nn.Identity()
        )
        c5 = scaled_channels(1536, width)
        self.conv2d_7b = ConvBNReLU(c_mixed, c5, 1)
        self.out_channels: tuple[int, int, int] = (c3, c4, c5)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        stage1 = self.repeat(self.mixed_5b(x))
        stage2 = self.repeat_1(self.mixed_6a(stage1))
        stage3 = self.conv2d_7b(self.block8(self.repeat_2(self.mixed_7a(stage2))))
        return [stage1, stage2, stage3]
