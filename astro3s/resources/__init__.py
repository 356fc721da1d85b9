"""Data files shipped inside the package, and where to find them.

``astra_annotations/``
    The expert annotations of ASTRA's datasets D1-D4 (consensus and three
    annotators), Apache-2.0, copyright the ASTRA authors (Bonato et al. 2023,
    repository jbonato1/ASTRA, folder ``zip_mask/``); see the ``LICENSE`` and
    ``README.md`` inside that folder. Copied unchanged from the project's
    ``shared/data/astra_annotations``; they let the simulator build stand-ins of
    the real FOVs and the tests reproduce the published human agreement on any
    machine. Regenerate by copying that folder again.
"""

from __future__ import annotations

import os
from pathlib import Path

__all__ = ["annotations_dir", "resource_path"]

_HERE = Path(__file__).resolve().parent


def resource_path(name: str) -> Path:
    """Absolute path of the shipped resource ``name`` (a file or folder in this package)."""
    path = _HERE / name
    if not path.exists():
        raise FileNotFoundError(f"astro3s resource {name!r} is missing from {_HERE}; reinstall astro3s.")
    return path


def annotations_dir() -> Path:
    """Folder of the ASTRA annotations: ``$ASTRO3S_ANNOTATIONS`` if set, else the shipped copy."""
    env = os.environ.get("ASTRO3S_ANNOTATIONS")
    return Path(env) if env else resource_path("astra_annotations")
