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
with, for ``astro3s-preprocess params=...`` at inference), ``test_metrics.json``
(the best checkpoint's scores on the test FOVs), the loggers' files and
``train.log``.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

import hydra
from omegaconf import DictConfig, OmegaConf

from astro3s.cli._config import CONFIG_DIR
from astro3s.cli._task import task_wrapper

log = logging.getLogger(__name__)

PREPROCESS_PARAMS_NAME = "preprocess.yaml"
TEST_METRICS_NAME = "test_metrics.json"


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
    every test sample exactly once. The metrics are then in ``test_metrics.json``.
    """
    import pytorch_lightning as pl

    spawned = _spawned(trainer)
    if spawned:
        trainer = pl.Trainer(accelerator=str(cfg.trainer.get("accelerator", "auto")), devices=1,
                             precision=cfg.trainer.get("precision", "32-true"), logger=False,
                             enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False)
    results = trainer.test(model=model, datamodule=datamodule, ckpt_path=ckpt_path)
    return {k: float(v) for row in results for k, v in row.items()}


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
        ``trainer.callback_metrics`` after fitting (``train/...``, ``val/...``)
        and the test metrics of the best checkpoint (``test/...``).
    """
    import pytorch_lightning as pl
    from hydra.utils import instantiate

    from astro3s.io import write_json
    from astro3s.preprocess import save_params

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

    if cfg.get("test", True):
        ckpt_path = None
        callback = getattr(trainer, "checkpoint_callback", None)
        if cfg.get("train", True):
            ckpt_path = getattr(callback, "best_model_path", "") or None
            if ckpt_path is None:
                log.warning("no best checkpoint (fast_dev_run, or no monitored metric): testing the current weights")
        elif cfg.get("ckpt_path"):
            ckpt_path = str(cfg.ckpt_path)
        log.info("testing %s", ckpt_path or "the current weights")
        test_metrics = _test(trainer, model, datamodule, ckpt_path, cfg)
        metrics.update(test_metrics)
        if trainer.is_global_zero:
            write_json(Path(str(cfg.paths.output_dir)) / TEST_METRICS_NAME,
                       {"checkpoint": ckpt_path, "metrics": test_metrics})
    log.info("metrics: %s", ", ".join(f"{k}={v:.4g}" for k, v in sorted(metrics.items())))
    return metrics


@hydra.main(config_path=CONFIG_DIR, config_name="train", version_base="1.3")
def main(cfg: DictConfig) -> float | None:
    """Console entry point ``astro3s-train``; returns the optimised metric for sweepers."""
    metrics = train_task(cfg)
    monitor = OmegaConf.select(cfg, "optimized_metric", default=None)
    return metrics.get(monitor) if monitor else None


if __name__ == "__main__":
    main()
