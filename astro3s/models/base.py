"""Building blocks shared by the segmentation networks.

:class:`SegmentationNetwork` is the common base: it pads any ``(B, C, H, W)``
input up to a multiple of the network's total stride, runs the subclass's
``_forward_padded`` and crops the logits back, so that every network accepts
any image size (96×96 crops, 256×256 or 512×512 fields of view, or odd sizes).
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from astro3s.errors import ConfigError
from astro3s.models.weights import EncoderLoadReport, load_encoder_weights


def double_conv(in_channels: int, out_channels: int) -> nn.Sequential:
    """Two 3×3 convolutions, each followed by batch norm and ReLU.

    Parameters
    ----------
    in_channels, out_channels : int
        Channels of the input ``(B, in_channels, H, W)`` and of the output
        ``(B, out_channels, H, W)``; the spatial size is kept.
    """
    block = nn.Sequential(
        nn.Conv2d(in_channels, out_channels, 3, padding=1),
        nn.BatchNorm2d(out_channels),
        nn.ReLU(inplace=True),
        nn.Conv2d(out_channels, out_channels, 3, padding=1),
        nn.BatchNorm2d(out_channels),
        nn.ReLU(inplace=True),
    )
    for layer in block:
        if isinstance(layer, nn.Conv2d):
            nn.init.kaiming_uniform_(layer.weight, nonlinearity="relu")
    return block


def upsample_to(features: torch.Tensor, reference: torch.Tensor) -> torch.Tensor:
    """Bilinearly resize ``features (B, C, h, w)`` to the spatial size of ``reference``."""
    return F.interpolate(features, size=reference.shape[-2:], mode="bilinear", align_corners=True)


def scaled_channels(channels: int, width: float) -> int:
    """Channel count ``channels × width``, rounded, at least 1."""
    return max(1, int(round(channels * width)))


def check_positive_int(name: str, value: Any, *, minimum: int = 1) -> int:
    """Return ``value`` as an int, raising :class:`ConfigError` if it is not an integer ≥ ``minimum``."""
    if isinstance(value, bool) or not isinstance(value, int | float) or int(value) != value:
        raise ConfigError(f"{name} must be an integer >= {minimum}, got {value!r}")
    if int(value) < minimum:
        raise ConfigError(f"{name} must be an integer >= {minimum}, got {value!r}")
    return int(value)


def check_positive_float(name: str, value: Any) -> float:
    """Return ``value`` as a float, raising :class:`ConfigError` unless it is a number > 0."""
    if isinstance(value, bool) or not isinstance(value, int | float) or not value > 0:
        raise ConfigError(f"{name} must be a number > 0, got {value!r}")
    return float(value)


class SegmentationNetwork(nn.Module):
    """Base class of the astro3s segmentation networks.

    Subclasses set ``self.stride`` (the product of all down-samplings), build an
    ``encoder`` sub-module, store their constructor arguments in ``self.config``
    (a plain dict with a ``"name"`` key understood by
    :func:`astro3s.models.build_network`) and implement ``_forward_heads_padded``.

    Inputs are ``(B, in_channels, H, W)`` float tensors of any size: they are
    reflect-padded on the bottom/right up to a multiple of ``stride`` and the
    output is cropped back to ``H × W``.
    """

    stride: int = 1
    name: str = ""

    def __init__(self) -> None:
        super().__init__()
        self.config: dict[str, Any] = {}

    # -- subclass hooks -------------------------------------------------
    def _forward_heads_padded(self, image: torch.Tensor) -> list[torch.Tensor]:
        """Logits of every output head for an input whose size is a multiple of ``stride``.

        The default is the U-Net pattern shared by ``unet`` and ``dense_up``: an
        ``encoder`` returning its feature maps from fine to coarse, ``decoder``
        blocks that each take the up-sampled coarser map concatenated with the
        matching skip, and one 1x1 ``head``. Other topologies override it.
        """
        features = self.encoder(image)
        x = features[-1]
        for block, skip in zip(self.decoder, reversed(features[:-1]), strict=True):
            x = block(torch.cat([upsample_to(x, skip), skip], dim=1))
        return [self.head(x)]

    # -- public API -----------------------------------------------------
    def forward_heads(self, image: torch.Tensor) -> list[torch.Tensor]:
        """Logits of every output head (one head unless deep supervision is on).

        Parameters
        ----------
        image : Tensor
            ``(B, in_channels, H, W)`` float input, any ``H, W``.

        Returns
        -------
        list of Tensor
            Each ``(B, 3, H, W)`` logits in :data:`CLASS_NAMES` order.
        """
        if image.ndim != 4:
            raise ValueError(f"expected an image batch (B, C, H, W), got shape {tuple(image.shape)}")
        height, width = image.shape[-2:]
        pad_bottom = (-height) % self.stride
        pad_right = (-width) % self.stride
        if pad_bottom or pad_right:
            mode = "reflect" if pad_bottom < height and pad_right < width else "replicate"
            image = F.pad(image, (0, pad_right, 0, pad_bottom), mode=mode)
        heads = self._forward_heads_padded(image)
        return [head[..., :height, :width] for head in heads]

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        """Class logits ``(B, 3, H, W)`` for an image batch ``(B, in_channels, H, W)``.

        With several heads (deep supervision) the logits are their mean.
        """
        heads = self.forward_heads(image)
        if len(heads) == 1:
            return heads[0]
        return torch.stack(heads).mean(dim=0)

    @torch.no_grad()
    def predict_proba(self, image: torch.Tensor) -> torch.Tensor:
        """Class probabilities ``(B, 3, H, W)`` (softmax over channels; sums to 1 per pixel)."""
        return torch.softmax(self.forward(image), dim=1)

    def encoder_parameters(self) -> list[nn.Parameter]:
        """Parameters of the encoder (down-sampling path), e.g. to freeze them."""
        return list(self.encoder.parameters())

    def load_encoder_checkpoint(self, path: str | Path, *, prefix: str | None = None) -> EncoderLoadReport:
        """Load matching encoder weights from ``path`` into ``self.encoder``.

        Returns the :class:`~astro3s.models.weights.EncoderLoadReport`; see
        :func:`~astro3s.models.weights.load_encoder_weights`.
        """
        return load_encoder_weights(self.encoder, path, prefix=prefix)


def input_channels(model: Any) -> int:
    """Input channels a network reads (``config["in_channels"]``, else its first convolution's).

    ``model`` may be a :class:`SegmentationNetwork`, a Lightning module with a ``net``, or a wrapper
    (test-time flips) with an ``inner`` network; 1 when none of these tells.
    """
    net = getattr(model, "net", model)
    net = getattr(net, "inner", net)
    config = getattr(net, "config", None) or {}
    if "in_channels" in config:
        return int(config["in_channels"])
    for module in net.modules() if isinstance(net, nn.Module) else ():  # the first convolution reads the input
        if isinstance(module, nn.Conv2d):
            return int(module.in_channels)
    return 1


def widened_input_weights(state: dict[str, torch.Tensor], target: Mapping[str, torch.Tensor]) -> list[str]:
    """Fit a checkpoint's weights of a narrower input onto a network that reads more channels, in place.

    Every tensor of ``state`` that differs from ``target``'s only by having fewer input channels (axis 1 of a
    convolution's weight) gets the missing channels as zeros: the widened network first computes exactly
    what the checkpoint's did, and learns what the new channels add (the correlation image,
    :mod:`astro3s.preprocess.network_input`).

    Returns
    -------
    list of str
        The names widened.
    """
    widened = []
    for name, value in list(state.items()):
        want = target.get(name)
        if want is None or value.shape == want.shape or value.ndim != 4 or value.shape[0] != want.shape[0] \
                or value.shape[2:] != want.shape[2:] or value.shape[1] >= want.shape[1]:
            continue
        grown = torch.zeros(want.shape, dtype=value.dtype, device=value.device)
        grown[:, : value.shape[1]] = value
        state[name] = grown
        widened.append(name)
    return widened


def check_io_channels(in_channels: Any, num_classes: Any) -> tuple[int, int]:
    in_channels = check_positive_int("in_channels", in_channels)
    num_classes = check_positive_int("num_classes", num_classes, minimum=2)
    return in_channels, num_classes


def plain(value: Any) -> Any:
    """Convert OmegaConf containers / tuples inside ``value`` to plain lists and dicts."""
    if isinstance(value, Mapping):
        return {str(k): plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple) or type(value).__name__ == "ListConfig":
        return [plain(v) for v in value]
    return value
