"""``astro3s-infer``: raw movies -> cells, CC domains, traces and figures.

Examples
--------
``astro3s-infer input=movie.tif out=results/``
    the bundled default model; writes ``results/movie/`` and ``results/index.csv``.
``astro3s-infer input=movies/ out=results/``
    every movie of a folder; finished movies are skipped, failures reported.
``astro3s-infer input=movie.tif out=results/ rois=RoiSet_edited.zip``
    curated cells: traces and CC domains only.

See ``conf/infer.yaml`` for every option.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import hydra
from omegaconf import DictConfig, OmegaConf

from astro3s.cli._config import CONFIG_DIR
from astro3s.cli._task import require, task_wrapper
from astro3s.errors import ConfigError, InputError

log = logging.getLogger(__name__)


def _plain(node: Any) -> Any:
    return OmegaConf.to_container(node, resolve=True) if isinstance(node, DictConfig) else node


def inference_setup(cfg: DictConfig) -> tuple[Any, Any]:
    """The model and :class:`~astro3s.inference.InferenceOptions` of a composed ``infer`` config."""
    from astro3s.correlation import CorrelationParams
    from astro3s.inference import load_inference_model

    if cfg.get("params") and cfg.get("preprocess") is not None:
        raise ConfigError("give either params=FILE.yaml or preprocess=NAME, not both")
    preprocess = cfg.get("params") or (_plain(cfg.preprocess) if cfg.get("preprocess") is not None else None)
    correlation = dict(_plain(cfg.get("correlation")) or {})
    for key in ("false_rate_band",):
        if key in correlation and correlation[key] is not None:
            correlation[key] = tuple(correlation[key])
    try:
        correlation_params = CorrelationParams(**correlation)
    except TypeError as err:
        raise ConfigError(f"correlation: {err}") from None
    tiling = dict(_plain(cfg.get("tiling")) or {})
    unknown = sorted(set(tiling) - {"max_fov_pixels", "tile_size", "tile_overlap"})
    if unknown:
        raise ConfigError(f"unknown tiling option(s) {', '.join(unknown)}; valid: max_fov_pixels, tile_size, "
                          "tile_overlap")
    model_spec = str(cfg.get("checkpoint") or "default")
    needs_model = not cfg.get("rois")
    if not needs_model:
        from astro3s.inference.pipeline import InferenceOptions
        from astro3s.data.datamodule import _as_params

        options = InferenceOptions(preprocess=_as_params(preprocess), correlation=correlation_params,
                                   figures=bool(cfg.get("figures", True)), model_name="(curated rois)")
        return None, options
    return load_inference_model(
        model_spec, preprocess=preprocess, device=str(cfg.get("device", "auto")),
        trusted=bool(cfg.get("trusted_checkpoint", False)), correlation=correlation_params,
        combine=dict(_plain(cfg.get("combine")) or {}), normalize=str(cfg.get("normalize", "mean")),
        batch_size=int(cfg.get("batch_size", 32)), figures=bool(cfg.get("figures", True)),
        soma_scale=str(cfg.get("soma_scale", "auto")),
        **{k: int(v) for k, v in tiling.items()})


@task_wrapper
def infer_task(cfg: DictConfig) -> list[Any]:
    """Run inference on every movie of ``input``; returns the :class:`MovieResult` list.

    Exits non-zero (after finishing the others) when any movie failed.
    """
    from astro3s.inference import run_batch
    from astro3s.io import find_movies

    source = require(cfg, "input", "give the movie, folder or glob to analyse as input=PATH.")
    out = Path(str(require(cfg, "out", "give the output folder as out=DIR.")))
    movies = find_movies(str(source))
    rois = cfg.get("rois")
    if rois and len(movies) != 1:
        raise ConfigError(f"rois= curates the cells of one movie, but input={source} holds {len(movies)} movies; "
                          "give the movie file itself")
    model, options = inference_setup(cfg)
    log.info("%d movie(s) -> %s (model %s, device %s)", len(movies), out, options.model_name, options.device)
    results = run_batch(movies, out, model, options, overwrite=bool(cfg.get("overwrite", False)), rois=rois,
                        index_name=str(cfg.get("index", "index.csv")))
    failed = [r for r in results if r.status == "failed"]
    if failed:
        lines = "; ".join(f"{r.movie.name}: {r.error}" for r in failed)
        raise InputError(None, f"{len(failed)} of {len(results)} movie(s) failed: {lines}",
                         f"see the log and {out / str(cfg.get('index', 'index.csv'))}; the other movies' outputs "
                         "were written, and a rerun skips them.")
    return results


@hydra.main(config_path=CONFIG_DIR, config_name="infer", version_base="1.3")
def main(cfg: DictConfig) -> None:
    """Console entry point ``astro3s-infer``."""
    infer_task(cfg)


if __name__ == "__main__":
    main()
