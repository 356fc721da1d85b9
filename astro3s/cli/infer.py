"""``astro3s-infer``: raw movies -> cells, CC domains, traces and figures.

Examples
--------
``astro3s-infer input=movie.tif out=results/``
    the bundled default model; writes ``results/movie/`` and ``results/index.csv``.
``astro3s-infer input=movies/ out=results/``
    every movie of a folder; finished movies are skipped, failures reported.
``astro3s-infer input=movie.tif out=results/ rois=results/movie/RoiSet_edited.zip``
    curated cells: traces and CC domains only (never skipped; files of yours in
    ``results/movie/`` are kept).
``astro3s-infer input=movie.h5 out=results/ key=denoised fs=15``
    the dataset of an HDF5/Zarr file holding several, and the frame rate in Hz.
``astro3s-infer input=movie.tif out=results/ nwb=true``
    also ``results/movie/movie.nwb`` (extra ``astro3s[nwb]``; see :mod:`astro3s.io.nwb`).

Nothing here imports Lightning, TensorBoard or W&B: the network is loaded as
plain torch (:func:`astro3s.models.load_network`).

See ``conf/infer.yaml`` for every option.
"""

from __future__ import annotations

import dataclasses
import logging
from pathlib import Path
from typing import Any

import hydra
from omegaconf import DictConfig

from astro3s.cli._config import CONFIG_DIR, params_from_config, to_plain, whole_number
from astro3s.cli._task import (end_startup, exit_without_teardown, progress_setting, require, run_hydra_main,
                               startup_without_gc, task_wrapper)
from astro3s.errors import ConfigError, InputError

log = logging.getLogger(__name__)


def _movie_options(cfg: DictConfig) -> dict[str, Any]:
    """``key`` and ``fs`` of the config, checked (options of :class:`~astro3s.inference.InferenceOptions`)."""
    from astro3s.inference.pipeline import parse_frame_rate

    key, fs = cfg.get("key"), cfg.get("fs")
    if key is not None and (isinstance(key, bool) or not str(key).strip()):
        raise ConfigError(f"key={key!r} must name a dataset of the HDF5/Zarr movie. Fix: e.g. key=denoised.")
    chosen = {name: None if cfg.get(name) is None else whole_number(cfg.get(name), name, minimum=1)
              for name in ("channel", "plane")}
    return {"key": None if key is None else str(key), "fs": None if fs is None else parse_frame_rate(fs), **chosen}


def check_movies_open(movies: list[Path], options: dict[str, Any]) -> None:
    """Open a single movie once before the model is loaded, so that a bad one fails at once.

    With several movies nothing is checked here: each failure is recorded in
    the index and the others go on.

    Raises
    ------
    InputError
        Unknown format, unreadable file, missing dataset ``key=``, a bad
        ``fs=``, NaN in a sampled frame (see :func:`astro3s.io.read_movie`).
    """
    if len(movies) != 1:
        return
    from astro3s.io import read_movie

    with read_movie(movies[0], key=options.get("key"), fs=options.get("fs"), channel=options.get("channel"),
                    plane=options.get("plane")):
        pass


def event_params_from_config(section: Any) -> Any:
    """The ``events`` config group as :class:`~astro3s.events.EventParams` (stages take the dataclass).
    None or an empty section gives the defaults; see :func:`~astro3s.cli._config.params_from_config`.

    Raises
    ------
    ConfigError
        An unknown key (with the closest known one), a text where a number belongs, or a value out of range.
    """
    from astro3s.events import EventParams

    return params_from_config(EventParams, section, "events")


def inference_setup(cfg: DictConfig) -> tuple[Any, Any]:
    """The network and :class:`~astro3s.inference.InferenceOptions` of a composed ``infer`` config."""
    from astro3s.correlation import CorrelationParams
    from astro3s.inference import InferenceOptions, load_inference_model
    from astro3s.inference.network import TilingParams
    from astro3s.inference.rules import CellRules

    if cfg.get("params") and cfg.get("preprocess") is not None:
        raise ConfigError("give either params=FILE.yaml or preprocess=NAME, not both")
    preprocess = cfg.get("params") or to_plain(cfg.get("preprocess"))
    correlation_params = params_from_config(CorrelationParams, cfg.get("correlation"), "correlation")
    event_params = event_params_from_config(cfg.get("events"))
    tiling = params_from_config(TilingParams, cfg.get("tiling"), "tiling")
    rules = params_from_config(CellRules, cfg.get("rules"), "rules")
    model_spec = str(cfg.get("checkpoint") or "default")
    movie_options = _movie_options(cfg)
    # a key missing from the composed config falls back to the option's own default (defined once there)
    default = {f.name: f.default for f in dataclasses.fields(InferenceOptions)}
    needs_model = not cfg.get("rois")
    if not needs_model:
        from astro3s.preprocess.params import as_preprocess_params

        options = InferenceOptions(preprocess=as_preprocess_params(preprocess), correlation=correlation_params,
                                   events=event_params,
                                   figures=bool(cfg.get("figures", default["figures"])), model_name="(curated rois)",
                                   nwb=bool(cfg.get("nwb", default["nwb"])), **movie_options)
        return None, _with_input_rules(options, cfg)
    model, options = load_inference_model(
        model_spec, preprocess=preprocess, device=str(cfg.get("device", default["device"])),
        amp=bool(cfg.get("amp", default["amp"])),
        trusted=bool(cfg.get("trusted_checkpoint", False)), correlation=correlation_params, events=event_params,
        combine=dict(to_plain(cfg.get("combine")) or {}), normalize=str(cfg.get("normalize", default["normalize"])),
        batch_size=whole_number(cfg.get("batch_size", default["batch_size"]), "batch_size",
                                example=default["batch_size"], minimum=1),
        figures=bool(cfg.get("figures", default["figures"])),
        soma_scale=str(cfg.get("soma_scale", default["soma_scale"])), nwb=bool(cfg.get("nwb", default["nwb"])),
        tiling=tiling, rules=rules,
        bin_scales=whole_number(cfg.get("bin_scales", default["bin_scales"]), "bin_scales",
                                example=default["bin_scales"], minimum=1),
        binned_processes=str(cfg.get("binned_processes", default["binned_processes"])),
        somata=str(cfg.get("somata", default["somata"])),
        large_soma_pass=bool(cfg.get("large_soma_pass", default["large_soma_pass"])),
        extend_processes=bool(cfg.get("extend_processes", default["extend_processes"])),
        active_view=bool(cfg.get("active_view", default["active_view"])),
        correlation_view=bool(cfg.get("correlation_view", default["correlation_view"])),
        drop_fast_event_cells=bool(cfg.get("drop_fast_event_cells", default["drop_fast_event_cells"])),
        scale_clahe_tiles=bool(cfg.get("scale_clahe_tiles", default["scale_clahe_tiles"])),
        max_process_ratio=cfg.get("max_process_ratio", default["max_process_ratio"]),
        test_time_flips=whole_number(cfg.get("test_time_flips", default["test_time_flips"]), "test_time_flips",
                                     example=default["test_time_flips"], minimum=1),
        **movie_options)
    from astro3s.postprocess import CombineParams

    CombineParams.from_preprocess(options.preprocess, **options.combine)  # a typo fails now, not after hours
    return model, _with_input_rules(options, cfg)


def _with_input_rules(options: Any, cfg: DictConfig) -> Any:
    """``options`` with the pre-processing's input rules that ``cfg`` sets (null: the model's).

    ``morphology_image`` (dF movies, :mod:`astro3s.preprocess.baseline`),
    ``lift_dim_background`` (uneven illumination,
    :func:`astro3s.preprocess.enhance.lift_dim_background`),
    ``line_correction`` (a bidirectional scan's odd rows, :mod:`astro3s.preprocess.lines`) and
    ``fill_ring_cores`` (somata drawn as rims, :mod:`astro3s.preprocess.ring_cores`)
    are top-level keys of ``infer``, so that the fixes the warnings and logs print work as typed.
    :class:`~astro3s.preprocess.PreprocessParams` checks the values (one
    :class:`ConfigError` naming the key).
    """
    changes = {key: to_plain(cfg.get(key))
               for key in ("morphology_image", "lift_dim_background", "line_correction", "fill_ring_cores")
               if cfg.get(key) is not None}
    if not changes:
        return options
    return dataclasses.replace(options, preprocess=options.preprocess.replace(**changes))


@task_wrapper
def infer_task(cfg: DictConfig) -> list[Any]:
    """Run inference on every movie of ``input``; returns the :class:`MovieResult` list.

    Exits non-zero (after finishing the others) when any movie failed.
    """
    from astro3s.inference import run_batch
    from astro3s.io import find_movies

    if cfg.get("nwb"):
        from astro3s.io.nwb import require_nwb

        require_nwb()  # the missing extra is one line now, before any movie is read or folder made
    source = require(cfg, "input", "give the movie, folder or glob to analyse as input=PATH.")
    out = Path(str(require(cfg, "out", "give the output folder as out=DIR.")))
    movies = find_movies(str(source))
    rois = cfg.get("rois")
    if rois and len(movies) != 1:
        raise ConfigError(f"rois= curates the cells of one movie, but input={source} holds {len(movies)} movies; "
                          "give the movie file itself")
    check_movies_open(movies, _movie_options(cfg))  # a bad movie fails before the network is loaded
    model, options = inference_setup(cfg)
    end_startup()  # torch and the network are loaded: the garbage collector back on (see main)
    log.info("%d movie(s) -> %s (model %s, device %s)", len(movies), out, options.model_name, options.device)
    results = run_batch(movies, out, model, options, overwrite=bool(cfg.get("overwrite", False)), rois=rois,
                        index_name=str(cfg.get("index", "index.csv")), progress=progress_setting(cfg))
    failed = [r for r in results if r.status == "failed"]
    if failed:
        lines = "; ".join(f"{r.movie.name}: {r.error}" for r in failed)
        raise InputError(None, f"{len(failed)} of {len(results)} movie(s) failed: {lines}",
                         f"see the log and {out / str(cfg.get('index', 'index.csv'))}; the other movies' outputs "
                         "were written, and a rerun skips them.")
    return results


@hydra.main(config_path=CONFIG_DIR, config_name="infer", version_base="1.3")
def _hydra_main(cfg: DictConfig) -> None:
    infer_task(cfg)


def main() -> None:
    """Entry point ``astro3s-infer``; a config typo is one line on stderr and exit code 2. The garbage
    collector is off until the network is loaded (:func:`astro3s.cli._task.startup_without_gc`)."""
    with startup_without_gc():
        run_hydra_main(_hydra_main, "astro3s-infer")


def console_main() -> None:
    """The console script ``astro3s-infer``: :func:`main`, then the process ends without Python's teardown
    (:func:`astro3s.cli._task.exit_without_teardown`)."""
    exit_without_teardown(main)


if __name__ == "__main__":
    console_main()
