"""Composing an entry point's config as Hydra does, for tests (one helper for every test file)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, open_dict

from astro3s.cli._config import CONFIG_DIR


def compose_config(config_name: str, overrides: list[str], *, output_dir: Path, **paths: Any) -> DictConfig:
    """Compose ``config_name`` with ``overrides``, set HydraConfig (so ``${hydra:...}`` resolves) and point
    ``paths.output_dir`` at ``output_dir``; ``paths`` sets other ``paths.*`` keys (e.g. ``data_dir``)."""
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3"):
        cfg = compose(config_name=config_name, overrides=overrides, return_hydra_config=True)
    HydraConfig.instance().set_config(cfg)
    with open_dict(cfg):
        cfg.paths.output_dir = str(output_dir)
        for key, value in paths.items():
            cfg.paths[key] = str(value)
    return cfg


def compose_train(overrides: list[str], tmp_path: Path, *, data_dir: Path | None = None) -> DictConfig:
    """The training config for ``overrides``, its run, logs and data (``data_dir``, default ``tmp_path/data``)
    under ``tmp_path``."""
    return compose_config("train", overrides, output_dir=tmp_path, log_dir=tmp_path / "logs",
                          data_dir=tmp_path / "data" if data_dir is None else data_dir)


def infer_options(movie: Path, tmp_path: Path, *overrides: str) -> Any:
    """The ``InferenceOptions`` that ``astro3s-infer input=<movie> ... <overrides>`` runs with (CPU, no movie read)."""
    from astro3s.cli.infer import inference_setup

    cfg = compose_config("infer", [f"input={movie}", f"out={tmp_path / 'out'}", "device=cpu", *overrides],
                         output_dir=tmp_path / "run", log_dir=tmp_path / "logs")
    return inference_setup(cfg)[1]
