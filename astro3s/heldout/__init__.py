"""A held-out family of synthetic astrocyte movies, independent of the training simulator.

The family is a yardstick that no training run ever sees and that differs
from :mod:`astro3s.simulate` by code path, not only by seed: morphology grown
by space colonisation, Moffat / anisotropic Gaussian PSFs, photomultiplier
noise, 1/f neuropil, propagating soma events and microdomains, and
distractors (out-of-focus astrocytes, blobs, neurons, vessels with endfeet).
It imports nothing from ``astro3s.simulate``, ``astro3s.data``,
``astro3s.models``, ``astro3s.preprocess`` or ``astro3s.inference``.

Members (see :data:`MEMBERS`): ``giant``, ``small``, ``lookalikes``,
``neurons``, ``vessels``, ``border``, ``dense``, ``low_snr``, ``short``,
``mixed``, ``crop``, ``long`` (processes traced to their tips, as far out
as ASTRA's annotators trace them), ``correlated`` (spatially correlated
detector noise) and ``faint`` (cells dim at rest but as active as the others:
seen by their activity more than in a summary image); seeds
``900_000 + 1000 * member_position + index``.

Write the family with ``python -m astro3s.heldout --out DIR`` or
:func:`generate_family`. :mod:`astro3s.heldout.layouts` renders movies whose
cells are the ones ASTRA's experts annotated on D1-D4 (the annotation is the
truth; ``python -m astro3s.heldout --layouts --out DIR``; seeds 950000+).
Importing this package does no work: the names below are loaded on first use.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "MEMBERS": "members",
    "MEMBER_ORDER": "members",
    "SEED_BASE": "members",
    "MemberRecipe": "members",
    "MovieParams": "members",
    "member_seed": "members",
    "movie_name": "members",
    "sample_params": "members",
    "Scene": "scene",
    "build_scene": "scene",
    "render_movie": "render",
    "generate_family": "write",
    "render_member_movie": "write",
    "write_member_movie": "write",
    "write_overview": "write",
    "write_scene_folder": "write",
    "build_layout_scene": "layouts",
    "write_layout_family": "layouts",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        module = importlib.import_module(f"astro3s.heldout.{_EXPORTS[name]}")
        return getattr(module, name)
    raise AttributeError(f"module 'astro3s.heldout' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
