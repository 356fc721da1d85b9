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


def _save_untrained_checkpoint(folder: Path, *, blank: bool = False) -> Path:
    """A tiny untrained U-Net checkpoint (``blank``: one that calls every pixel background)."""
    import pytorch_lightning as pl
    import torch

    from astro3s.models import SegmentationModule, UNet
    from astro3s.models.classes import BACKGROUND
    from astro3s.preprocess import PreprocessParams, save_params

    torch.manual_seed(0)
    module = SegmentationModule(net=UNet(depth=2, base_channels=4))
    if blank:
        head = [m for m in module.net.modules() if isinstance(m, torch.nn.Conv2d) and m.out_channels == 3][-1]
        with torch.no_grad():
            head.weight.zero_()
            head.bias.zero_()
            head.bias[BACKGROUND] = 20.0
    folder.mkdir(parents=True, exist_ok=True)
    trainer = pl.Trainer(logger=False, enable_checkpointing=False, enable_progress_bar=False,
                         enable_model_summary=False, max_epochs=0)
    trainer.strategy.connect(module)
    trainer.save_checkpoint(folder / "model.ckpt", weights_only=True)
    save_params(PreprocessParams(), folder / "preprocess.yaml")
    return folder / "model.ckpt"


@pytest.fixture(scope="session")
def untrained_checkpoint() -> Callable[..., Path]:
    """``untrained_checkpoint(folder, blank=False) -> folder/model.ckpt``: a tiny untrained U-Net saved as an
    astro3s checkpoint with a ``preprocess.yaml`` beside it (``blank=True``: one that calls every pixel
    background). For tests of the inference plumbing, whose results do not depend on the weights."""
    return _save_untrained_checkpoint


@pytest.fixture(scope="module")
def random_checkpoint(tmp_path_factory: pytest.TempPathFactory, untrained_checkpoint) -> Path:
    """A small untrained U-Net checkpoint, with a preprocess.yaml beside it."""
    return untrained_checkpoint(tmp_path_factory.mktemp("ckpt"))


@pytest.fixture(scope="module")
def tiny_movie(simulated) -> Path:
    """The movie file of the ``tiny`` preset, seed 3 (shared, read-only)."""
    folder = simulated("tiny", 3)
    return folder / f"{folder.name}.tif"


@pytest.fixture
def record_calls(monkeypatch: pytest.MonkeyPatch) -> Callable[..., list]:
    """``record_calls(module, name) -> calls``: ``module.name`` still runs, each call's ``(args, kwargs)`` is appended.

    The replacement is undone after the test (``monkeypatch``).
    """

    def record(module, name: str) -> list:
        calls: list = []
        real = getattr(module, name)

        def spy(*args, **kwargs):
            calls.append((args, kwargs))
            return real(*args, **kwargs)

        monkeypatch.setattr(module, name, spy)
        return calls

    return record


@pytest.fixture(scope="session")
def experiment_script() -> Callable[[str], object]:
    """``experiment_script(name)``: the module ``experiments/<name>.py``, loaded once per session."""
    import importlib.util
    import sys

    loaded: dict[str, object] = {}

    def load(name: str):
        if name not in loaded:
            path = Path(__file__).resolve().parents[1] / "experiments" / f"{name}.py"
            spec = importlib.util.spec_from_file_location(name, path)
            module = importlib.util.module_from_spec(spec)
            sys.modules[spec.name] = module  # dataclasses look their module up there
            spec.loader.exec_module(module)
            loaded[name] = module
        return loaded[name]

    return load
