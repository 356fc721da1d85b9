"""``astro3s-train``: train a segmentation network on pre-processed single-cell crops.

Examples
--------
``python -m astro3s.cli.train``
    DenseUp-small on 3 simulated d1_like FOVs, leave-one-out fold 0, CPU.
``python -m astro3s.cli.train data=synthetic data.preset=tiny data.n_fovs=4 model=unet``
``python -m astro3s.cli.train data=d1_standin data.fold=3 trainer=gpu``
``python -m astro3s.cli.train experiment=astra_d1_standin data.fold=0``
``python -m astro3s.cli.train debug=fast_dev_run``

Outputs (``paths.output_dir``): ``checkpoints/`` (Lightning checkpoints and
``preprocess.yaml``, the pre-processing parameters the network was trained
with, for ``astro3s-preprocess params=...`` at inference), ``scores.json``
(the test scores, see :func:`scores_record`), the loggers' files and
``train.log``.

For sweepers, ``main`` returns the value of ``optimized_metric`` (e.g.
``val/astra_f1``; for a metric that ``model_checkpoint`` monitors, the best
value, the one of the kept checkpoint).
"""

from __future__ import annotations

import logging
import math
import os
from pathlib import Path
from typing import Any

import hydra
from omegaconf import DictConfig, OmegaConf

from astro3s.cli._config import CONFIG_DIR, compose
from astro3s.cli._task import metric_value, run_hydra_main, sweep_job, task_wrapper
from astro3s.errors import ConfigError
from astro3s.models.checkpoint import PREPROCESS_PARAMS_NAME

log = logging.getLogger(__name__)

SCORES_NAME = "scores.json"
TEST_CKPT_CHOICES = ("best", "last")


def instantiate_group(group: DictConfig | None, *, what: str) -> list[Any]:
    """Instantiate every ``_target_`` entry of a callbacks / logger group (others are skipped)."""
    from hydra.utils import instantiate

    objects: list[Any] = []
    if not group:
        return objects
    for name, node in group.items():  # loop over entries
        if isinstance(node, DictConfig) and "_target_" in node:
            log.info("instantiating %s <%s>", what, node._target_)
            objects.append(instantiate(node))
        else:
            log.debug("%s.%s has no _target_, skipped", what, name)
    return objects


def _plain_config(cfg: DictConfig) -> dict[str, Any]:
    """The resolved config without Hydra's own node."""
    keys = [k for k in cfg if k != "hydra"]
    return OmegaConf.to_container(OmegaConf.masked_copy(cfg, keys), resolve=True)  # type: ignore[return-value]


def log_hyperparameters(trainer: Any, model: Any, datamodule: Any, cfg: DictConfig) -> dict[str, Any]:
    """Send the config, the pre-processing parameters and the data summary to every logger.

    Returns the logged dict. Loggers merge it with the model's own
    ``save_hyperparameters`` values, which Lightning logs at fit start.
    """
    params = datamodule.preprocess_params.to_dict()
    hparams: dict[str, Any] = {
        "config": _plain_config(cfg),
        "preprocess": params,
        "data_summary": datamodule.summary(),
        "model/params/total": sum(p.numel() for p in model.parameters()),
        "model/params/trainable": sum(p.numel() for p in model.parameters() if p.requires_grad),
    }
    for logger in trainer.loggers:  # loop over loggers
        logger.log_hyperparams(hparams)
    return hparams


def _checkpoint_dir(trainer: Any, cfg: DictConfig) -> Path:
    callback = getattr(trainer, "checkpoint_callback", None)
    dirpath = getattr(callback, "dirpath", None)
    return Path(dirpath) if dirpath else Path(str(cfg.paths.output_dir)) / "checkpoints"


def _test(trainer: Any, model: Any, datamodule: Any, ckpt_path: str | None, cfg: DictConfig) -> dict[str, float]:
    """Score ``ckpt_path`` (or the current weights) on the test FOVs; metrics named ``test/...``.

    After a spawned multi-process fit (``trainer=ddp_sim``, ``ddp_spawn``), the
    test runs in this process on one device without loggers: Lightning's CSV
    logger cannot append a second spawned stage to the file of the first
    (it rewrites it without the first stage's columns), and one device scores
    every test sample exactly once. The scoring callbacks (those with
    ``last_scores``, such as :class:`~astro3s.callbacks.AstraScore`) come
    along; the metrics are then in ``scores.json``.
    """
    import pytorch_lightning as pl

    if _spawned(trainer):
        trainer = pl.Trainer(accelerator=str(cfg.trainer.get("accelerator", "auto")), devices=1,
                             precision=cfg.trainer.get("precision", "32-true"), logger=False,
                             callbacks=_scoring_callbacks(trainer),
                             enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False)
    results = trainer.test(model=model, datamodule=datamodule, ckpt_path=ckpt_path)
    metrics = {k: float(v) for row in results for k, v in row.items()}
    # metrics logged outside test_step (callbacks' epoch-end hooks) are in callback_metrics
    metrics.update({k: float(v) for k, v in trainer.callback_metrics.items()
                    if k.startswith("test/") and k not in metrics})
    return metrics


def _scoring_callbacks(trainer: Any) -> list[Any]:
    """Callbacks that score whole FOVs and keep their results in ``last_scores`` (AstraScore)."""
    return [cb for cb in trainer.callbacks if isinstance(getattr(cb, "last_scores", None), dict)]


def _choice(group: str) -> str | None:
    """The option of a config group used by this run (``model=unet`` -> "unet"), if Hydra knows it."""
    from hydra.core.hydra_config import HydraConfig

    if not HydraConfig.initialized():
        return None
    choice = HydraConfig.get().runtime.choices.get(group)
    return None if choice is None else str(choice)


def _overrides() -> list[str]:
    from hydra.core.hydra_config import HydraConfig

    if not HydraConfig.initialized():
        return []
    return [str(o) for o in HydraConfig.get().overrides.task]


def scores_record(cfg: DictConfig, trainer: Any, datamodule: Any, test_metrics: dict[str, float],
                  ckpt_path: str | None) -> dict[str, Any]:
    """What ``scores.json`` holds: the run's test scores and what produced them.

    Returns
    -------
    dict
        ``task_name``, ``model`` and ``data`` (the config group options, e.g.
        ``dense_up``, ``d1_standin``), ``standin`` (whether the movies are
        simulated stand-ins of real annotated FOVs), ``movies`` ("real",
        "stand-in" or "simulated"), ``split``, ``fold``, ``fovs`` (names per stage),
        ``seed``, ``checkpoint`` (the checkpoint tested; null: the weights at
        the end of training), ``test_ckpt``, ``overrides`` (the command-line
        overrides), ``metrics`` (every ``test/...`` value: loss, Dice and the
        ASTRA scores of the held-out FOVs), ``astra`` (the pooled ASTRA scores
        of the test FOVs with precision, recall, F1 and counts, from
        :class:`~astro3s.callbacks.AstraScore`; null without that callback) and
        ``per_fov`` (the same per test FOV, by name). ``train_task`` adds
        ``optimized_metric`` and its ``optimized_value``.
    """
    data_choice = _choice("data")
    target = str(cfg.data.get("_target_", ""))
    summary = datamodule.summary() if getattr(datamodule, "split_names", None) is not None else {}
    astra, per_fov = None, {}
    for callback in _scoring_callbacks(trainer):
        astra = callback.last_scores.get("test", astra)
        per_fov = callback.last_scores.get("test_per_fov", per_fov)
    return {
        "task_name": str(cfg.get("task_name")),
        "model": _choice("model") or str(cfg.model.net.get("_target_", "")).rsplit(".", 1)[-1],
        "data": data_choice or target.rsplit(".", 1)[-1],
        "standin": target.endswith(".standin") or "standin" in (data_choice or ""),
        "movies": "real" if target.endswith(".annotated") else "stand-in" if target.endswith(".standin")
        else "simulated",
        "dataset": cfg.data.get("dataset") or Path(str(cfg.data.get("annotations", ""))).name or None,
        "split": summary.get("split", cfg.data.get("split")),
        "fold": summary.get("fold", cfg.data.get("fold")),
        "fovs": summary.get("fovs", {}),
        "seed": cfg.get("seed"),
        "checkpoint": ckpt_path,
        "test_ckpt": str(cfg.get("test_ckpt", "best")),
        "overrides": _overrides(),
        "metrics": dict(sorted(test_metrics.items())),
        "astra": astra,
        "per_fov": per_fov,
    }


def _best_value(trainer: Any, name: str) -> float | None:
    """The kept checkpoint's value of ``name`` when ``model_checkpoint`` monitors it, else None."""
    callback = getattr(trainer, "checkpoint_callback", None)
    best = getattr(callback, "best_model_score", None)
    if callback is None or best is None or getattr(callback, "monitor", None) != name:
        return None
    value = float(best)
    return None if math.isnan(value) else value  # NaN: no real best


def _spawned(trainer: Any) -> bool:
    """Whether the trainer runs its stages in spawned/forked worker processes (ddp_spawn)."""
    launcher = getattr(trainer.strategy, "launcher", None)
    return type(launcher).__name__ == "_MultiProcessingLauncher"


@task_wrapper
def train_task(cfg: DictConfig) -> dict[str, float]:
    """Train (``cfg.train``) and test (``cfg.test``) a model; returns the metrics.

    Returns
    -------
    dict of str to float
        ``trainer.callback_metrics`` after fitting (``train/...``, ``val/...``;
        ``optimized_metric``, when ``model_checkpoint`` monitors it, is the
        kept checkpoint's value) and the test metrics of the checkpoint chosen
        by ``test_ckpt`` (``test/...``), also written to ``scores.json``.
    """
    import pytorch_lightning as pl
    from hydra.utils import instantiate

    from astro3s.io import write_json
    from astro3s.preprocess import save_params

    if str(cfg.get("test_ckpt", "best")) not in TEST_CKPT_CHOICES:
        raise ConfigError(f"test_ckpt must be one of {', '.join(TEST_CKPT_CHOICES)}, got {cfg.test_ckpt!r}")
    if cfg.get("seed") is not None:
        # also exported as PL_GLOBAL_SEED, so that spawned DDP processes seed alike
        pl.seed_everything(int(cfg.seed), workers=True)
    log.info("instantiating datamodule <%s>", cfg.data._target_)
    datamodule = instantiate(cfg.data)
    # Fail early (before any model is built) when data are missing; in multi-process runs
    # launched per rank (ddp via torchrun) only local rank 0 prepares, Lightning syncs the rest.
    if int(os.environ.get("LOCAL_RANK", "0")) == 0:
        datamodule.prepare_data()
        datamodule.setup("fit")
    log.info("instantiating model <%s>", cfg.model._target_)
    model = instantiate(cfg.model)
    callbacks = instantiate_group(cfg.get("callbacks"), what="callback")
    loggers = instantiate_group(cfg.get("logger"), what="logger")
    log.info("instantiating trainer <%s>", cfg.trainer._target_)
    trainer = instantiate(cfg.trainer, callbacks=callbacks, logger=loggers or False)

    if loggers and int(os.environ.get("LOCAL_RANK", "0")) == 0:
        log_hyperparameters(trainer, model, datamodule, cfg)

    metrics: dict[str, float] = {}
    try:
        if cfg.get("train", True):
            log.info("training")
            trainer.fit(model=model, datamodule=datamodule, ckpt_path=cfg.get("ckpt_path"))
            metrics.update({k: float(v) for k, v in trainer.callback_metrics.items()})
    finally:
        # after fit starts (ModelCheckpoint warns about a non-empty folder otherwise), even if it fails;
        # checkpoints also hold the parameters, in the data module's state ("AstroDataModule")
        if int(os.environ.get("LOCAL_RANK", "0")) == 0:
            params_path = save_params(datamodule.preprocess_params,
                                      _checkpoint_dir(trainer, cfg) / PREPROCESS_PARAMS_NAME)
            log.info("pre-processing parameters saved to %s", params_path)

    name = cfg.get("optimized_metric")
    best = _best_value(trainer, name) if name and cfg.get("train", True) else None
    if best is not None:
        metrics[name] = best
    if cfg.get("test", True):
        ckpt_path = _test_checkpoint(trainer, cfg)
        log.info("testing %s", ckpt_path or "the current weights")
        test_metrics = _test(trainer, model, datamodule, ckpt_path, cfg)
        metrics.update(test_metrics)
        if trainer.is_global_zero:
            record = scores_record(cfg, trainer, datamodule, test_metrics, ckpt_path)
            record.update(optimized_metric=name, optimized_value=metrics.get(name) if name else None)
            path = write_json(Path(str(cfg.paths.output_dir)) / SCORES_NAME, record)
            log.info("test scores saved to %s", path)
    log.info("metrics: %s", ", ".join(f"{k}={v:.4g}" for k, v in sorted(metrics.items())))
    metric_value(metrics, name)  # a missing optimized_metric is a clear error here, not a failed trial later
    return metrics


def _test_checkpoint(trainer: Any, cfg: DictConfig) -> str | None:
    """The checkpoint to test: ``test_ckpt=best`` (kept by ``model_checkpoint``) or ``last`` (None: current weights)."""
    if not cfg.get("train", True):
        return str(cfg.ckpt_path) if cfg.get("ckpt_path") else None
    if str(cfg.get("test_ckpt", "best")) == "last":
        return None
    callback = getattr(trainer, "checkpoint_callback", None)
    ckpt_path = getattr(callback, "best_model_path", "") or None
    if ckpt_path is None:
        log.warning("no best checkpoint (fast_dev_run, or no monitored metric): testing the current weights")
    return ckpt_path


@hydra.main(config_path=CONFIG_DIR, config_name="train", version_base="1.3")
def _hydra_main(cfg: DictConfig) -> float | None:
    """The Hydra app of ``astro3s-train`` (run by :func:`main`); returns ``optimized_metric``'s value for sweepers."""
    metrics = sweep_job(train_task, cfg)
    return metric_value(metrics, cfg.get("optimized_metric"))


def search_params_missing(overrides: list[str]) -> list[str]:
    """Keys an ``hparams_search`` would set that the composed model has not.

    A search written for one network (``model.net.width`` of DenseUp) fails
    on every trial of another (U-Net has ``base_channels``); composing once
    up front finds that before any trial runs.

    Parameters
    ----------
    overrides : list of str
        The command line's ``key=value`` overrides.

    Returns
    -------
    list of str
        Empty when every searched key exists, or when the overrides do not
        compose (Hydra then reports that itself).
    """
    from hydra.errors import HydraException

    try:
        cfg = compose("train", overrides, return_hydra_config=True)
    except (HydraException, ValueError, KeyError):
        return []
    params = OmegaConf.select(cfg, "hydra.sweeper.params", default=None) or {}
    missing = object()
    return [key for key in params if OmegaConf.select(cfg, key, default=missing) is missing]


def main() -> float | None:
    """Console entry point ``astro3s-train``; a config typo is one line on stderr and exit code 2."""
    import sys

    overrides = [arg for arg in sys.argv[1:] if "=" in arg and not arg.startswith("-")]
    if any(arg.startswith("hparams_search=") for arg in overrides):
        missing = search_params_missing(overrides)
        if missing:
            print(f"astro3s: error: this hparams_search sets {', '.join(missing)}, which the chosen model has "
                  "not. Fix: for model=unet or unetpp use hparams_search=unet_optuna.", file=sys.stderr)
            raise SystemExit(2)
    return run_hydra_main(_hydra_main, "astro3s-train")


if __name__ == "__main__":
    main()
