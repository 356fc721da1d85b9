"""The cross-check family: a second, independent held-out yardstick of synthetic astrocyte movies.

Why it exists
-------------
The method is trained on :mod:`astro3s.simulate` and checked on the held-out
family :mod:`astro3s.heldout`. Both draw flat, two-dimensional cells; a method
can learn the way those two draw movies rather than astrocytes. This family
draws the same kind of recording by a different route, so that a score on it
tells whether the method over-fits the other two generators:

* every astrocyte is a three-dimensional object (an irregular ellipsoidal soma,
  tapered process trees grown as persistent random walks in 3-D, and an
  unresolved "gliapil" haze filling a tiled territory), imaged through an
  optical section: an axial Gaussian PSF weights each element by its distance
  from the focal plane and a Gaussian-plus-Cauchy lateral PSF blurs the
  projection, so processes fade as they leave the plane and cells above or
  below it are dim, blurred distractors;
* the truth follows how ASTRA's annotators draw: the in-focus soma cross-section
  at half maximum, and the skeleton of the in-focus branches still connected to
  the soma, drawn at the annotators' width;
* activity, neuropil (boutons along axons), nucleus-excluded neurons, dark
  vessels, fibrous tissue background, photon-counting detection, bleaching,
  drift, breathing and bidirectional-scan offsets are drawn here from scratch.

The family shares no code with the training simulator or the held-out family:
it imports only NumPy, SciPy, tqdm, matplotlib (for the overview) and
:mod:`astro3s.io`. It is never used to choose a rule or tune a parameter of the
method, only to report a score.

Members (see :data:`~astro3s.crosscheck.members.MEMBERS`): ``d1``, ``zoom``,
``dense``, ``dim``, ``thick``, ``neuropil``, ``vessels``, ``fast``; seeds
``970_000 + 1000 * member_position + index``.

Write the family with ``python -m astro3s.crosscheck --out DIR`` or
:func:`generate_family`. Importing this package does no work: the names below
are loaded on first use.
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
    "draw_params": "members",
    "member_seed": "members",
    "movie_name": "members",
    "annotator_width": "truth",
    "Scene": "scene",
    "build_scene": "scene",
    "render_movie": "render",
    "generate_family": "write",
    "render_member_movie": "write",
    "write_member_movie": "write",
    "write_overview": "write",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        module = importlib.import_module(f"astro3s.crosscheck.{_EXPORTS[name]}")
        return getattr(module, name)
    raise AttributeError(f"module 'astro3s.crosscheck' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
