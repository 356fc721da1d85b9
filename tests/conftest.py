"""Shared pytest fixtures."""

from __future__ import annotations

import os

os.environ.setdefault("WANDB_MODE", "disabled")

from collections.abc import Callable  # noqa: E402
from pathlib import Path  # noqa: E402

import pytest  # noqa: E402


@pytest.fixture(scope="session")
def simulated(tmp_path_factory: pytest.TempPathFactory) -> Callable[..., Path]:
    """Factory ``simulated(preset, seed, **overrides) -> Path`` of a written simulated movie.

    Each distinct call is simulated and written once per test session; the
    returned folder holds ``<name>.tif``, ``ground_truth/`` (soma.tif,
    processes.tif, domains.tif, RoiSet.zip, shifts.csv, traces.csv), ``meta.json``
    and ``overview.png`` (see :func:`astro3s.simulate.write_simulation`).
    ``overrides`` replace preset ranges, e.g. ``motion_sd=0``. Treat the folder
    as read-only: it is shared between tests.
    """
    cache: dict[tuple, Path] = {}
    root = tmp_path_factory.mktemp("simulated")

    def make(preset: str = "tiny", seed: int = 0, *, overview: bool = True, **overrides) -> Path:
        key = (preset, int(seed), overview, tuple(sorted((k, str(v)) for k, v in overrides.items())))
        if key not in cache:
            from astro3s.simulate import simulate_preset, write_simulation

            name = f"{preset}_s{int(seed):04d}" + (f"_{len(cache):03d}" if overrides else "")
            sim = simulate_preset(preset, seed=seed, name=name, **overrides)
            cache[key] = write_simulation(sim, root, overview=overview)
        return cache[key]

    return make
