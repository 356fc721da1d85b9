"""Logging helpers: one module-level logger per module, configured by Hydra."""

from __future__ import annotations

import logging


def get_logger(name: str) -> logging.Logger:
    """Return the logger ``name`` (use ``get_logger(__name__)``)."""
    return logging.getLogger(name)
