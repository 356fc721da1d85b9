"""Segmentation networks, losses and the LightningModule.

Names are imported on first use (no work at import time)::

    from astro3s.models import DenseUp, SegmentationModule, load_model, CLASS_NAMES

Only :class:`SegmentationModule` (and :func:`load_model`, which builds it) imports
Lightning; :func:`load_network` gives a checkpoint's plain-torch network.

Class order everywhere: :data:`CLASS_NAMES` = ("processes", "soma", "background").
"""

from __future__ import annotations

import importlib
from typing import Any

from astro3s.models.classes import (
    BACKGROUND,
    CLASS_NAMES,
    IGNORE_INDEX,
    NUM_CLASSES,
    PROCESSES,
    SOMA,
)

_LAZY: dict[str, str] = {
    "SegmentationNetwork": "astro3s.models.base",
    "DenseUp": "astro3s.models.dense_up",
    "UNet": "astro3s.models.unet",
    "UNetPlusPlus": "astro3s.models.unet",
    "NETWORKS": "astro3s.models.registry",
    "build_network": "astro3s.models.registry",
    "build_network_from_config": "astro3s.models.registry",
    "AstraLoss": "astro3s.models.losses",
    "soft_dice_loss": "astro3s.models.losses",
    "cldice_loss": "astro3s.models.losses",
    "soft_skeleton": "astro3s.models.losses",
    "softmax_binary_cross_entropy": "astro3s.models.losses",
    "SegmentationModule": "astro3s.models.module",
    "load_model": "astro3s.models.checkpoint",
    "load_network": "astro3s.models.checkpoint",
    "read_model_checkpoint": "astro3s.models.weights",
    "load_encoder_weights": "astro3s.models.weights",
    "bundled_model_dir": "astro3s.models.weights",
    "model_preprocess_params": "astro3s.models.weights",
    "EncoderLoadReport": "astro3s.models.weights",
    "render_panels": "astro3s.models.panels",
}

__all__ = [
    "BACKGROUND",
    "CLASS_NAMES",
    "IGNORE_INDEX",
    "NUM_CLASSES",
    "PROCESSES",
    "SOMA",
    *sorted(_LAZY),
]


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        value = getattr(importlib.import_module(_LAZY[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'astro3s.models' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY))
