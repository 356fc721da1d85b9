"""Datasets, augmentations and the LightningDataModule (sub-modules are imported on use).

::

    from astro3s.data import AstroDataModule, SyntheticFOVs
    dm = AstroDataModule(SyntheticFOVs(preset="tiny", n_fovs=3, root="data/synthetic"),
                         cache_dir="data/cache", split="loo", fold=0)
"""

from __future__ import annotations

import importlib
from typing import Any

_LAZY: dict[str, str] = {
    "AstroDataModule": "astro3s.data.datamodule",
    "FOVSpec": "astro3s.data.fovs",
    "FOVSource": "astro3s.data.fovs",
    "FOVList": "astro3s.data.fovs",
    "SyntheticFOVs": "astro3s.data.fovs",
    "StandinFOVs": "astro3s.data.fovs",
    "AnnotatedFOVs": "astro3s.data.fovs",
    "simulated_fov": "astro3s.data.fovs",
    "Split": "astro3s.data.splits",
    "split_fovs": "astro3s.data.splits",
    "class_image": "astro3s.data.samples",
    "crop_samples": "astro3s.data.samples",
    "fov_tile_samples": "astro3s.data.samples",
    "AugmentParams": "astro3s.data.augment",
    "Augmenter": "astro3s.data.augment",
    "augment_batch": "astro3s.data.augment",
}

__all__ = [
    "AnnotatedFOVs",
    "AstroDataModule",
    "AugmentParams",
    "Augmenter",
    "FOVList",
    "FOVSource",
    "FOVSpec",
    "Split",
    "StandinFOVs",
    "SyntheticFOVs",
    "augment_batch",
    "class_image",
    "crop_samples",
    "fov_tile_samples",
    "simulated_fov",
    "split_fovs",
]


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'astro3s.data' has no attribute {name!r}")
    return getattr(importlib.import_module(module), name)


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY))
