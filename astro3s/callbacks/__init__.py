"""Lightning callbacks of astro3s (sub-modules are imported on use)."""

from __future__ import annotations

import importlib
from typing import Any

_LAZY: dict[str, str] = {
    "AstraScore": "astro3s.callbacks.astra_score",
    "CorrelationAnalysis": "astro3s.callbacks.correlation",
    "FreezeThenFinetune": "astro3s.callbacks.finetune",
}

__all__ = [
    "AstraScore",
    "CorrelationAnalysis",
    "FreezeThenFinetune",
]


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'astro3s.callbacks' has no attribute {name!r}")
    return getattr(importlib.import_module(module), name)
