"""``SegmentationModule``: the LightningModule that trains and runs the networks."""

from __future__ import annotations

import functools
import importlib
import logging
from collections.abc import Callable, Mapping
from typing import Any

import pytorch_lightning as pl
import torch
from torch import nn
from torchmetrics.segmentation import DiceScore, MeanIoU

from astro3s.errors import ConfigError
from astro3s.models.base import input_channels, plain, widened_input_weights
from astro3s.models.classes import BACKGROUND, CLASS_NAMES, IGNORE_INDEX, NUM_CLASSES
from astro3s.models.losses import AstraLoss
from astro3s.models.panels import render_panels
from astro3s.models.registry import build_network_from_config
from astro3s.models.weights import read_model_checkpoint

log = logging.getLogger(__name__)

OptimizerFactory = Callable[..., torch.optim.Optimizer]
SchedulerFactory = Callable[..., Any]

#: The optimizer used when none is given: Adam, lr 1e-4 (ASTRA's setting).
DEFAULT_OPTIMIZER: dict[str, Any] = {"_target_": "torch.optim.Adam", "_partial_": True, "lr": 1e-4}


def describe_partial(factory: Any) -> dict[str, Any] | None:
    """A Hydra-style ``{"_target_", "_partial_", **kwargs}`` dict of a class/partial, or None.

    Used to keep optimizer and scheduler settings in the checkpoint's
    hyper-parameters as plain data (no pickled callables).
    """
    if factory is None:
        return None
    if isinstance(factory, Mapping):
        return dict(plain(factory))
    keywords: dict[str, Any] = {}
    func = factory
    if isinstance(factory, functools.partial):
        if factory.args:
            return None
        keywords = dict(factory.keywords)
        func = factory.func
    qualname = getattr(func, "__qualname__", "")
    module = getattr(func, "__module__", None)
    if not module or "<" in qualname:
        return None
    simple = int | float | str | bool | type(None) | list | tuple
    if not all(isinstance(value, simple) for value in keywords.values()):
        return None
    return {"_target_": f"{module}.{qualname}", "_partial_": True, **plain(keywords)}


def resolve_factory(spec: Any, *, what: str) -> Callable[..., Any] | None:
    """A callable from a callable, a Hydra-style ``_target_`` mapping, or None."""
    if spec is None or callable(spec):
        return spec
    if isinstance(spec, Mapping):
        spec = dict(plain(spec))
        target = spec.pop("_target_", None)
        spec.pop("_partial_", None)
        if not isinstance(target, str) or "." not in target:
            raise ConfigError(f"{what}: needs a '_target_' like 'torch.optim.Adam', got {target!r}")
        module_name, _, attribute = target.rpartition(".")
        try:
            obj = getattr(importlib.import_module(module_name), attribute)
        except (ImportError, AttributeError):
            raise ConfigError(f"{what}: cannot import {target!r}") from None
        return functools.partial(obj, **spec)
    raise ConfigError(f"{what}: expected a callable or a _target_ mapping, got {type(spec).__name__}")


class SegmentationModule(pl.LightningModule):
    """Trains a segmentation network on ``{"image", "target"}`` batches with :class:`AstraLoss`.

    Parameters
    ----------
    net : nn.Module or None
        The network (a :class:`~astro3s.models.base.SegmentationNetwork`; Hydra
        instantiates it from ``model.net``). Not stored in the hyper-parameters:
        its ``config`` is, as ``net_config``.
    net_config : mapping or None
        ``{"name": ..., **kwargs}`` to build the network when ``net`` is None —
        how :meth:`load_from_checkpoint` and :func:`~astro3s.models.load_model`
        rebuild it without Hydra.
    optimizer : callable or mapping or None
        ``optimizer(params) -> Optimizer``, e.g. ``functools.partial(torch.optim.Adam,
        lr=1e-4)`` (Hydra ``_partial_: true``), or the equivalent ``_target_`` mapping;
        None → Adam, lr 1e-4.
    scheduler : callable or mapping or None
        ``scheduler(optimizer) -> LRScheduler``, or None.
    scheduler_monitor : str
        Metric a ``ReduceLROnPlateau`` scheduler watches.
    scheduler_interval : str
        ``"epoch"`` or ``"step"``.
    bce_weight, dice_processes_weight, dice_soma_weight, dice_background_weight, dice_smooth
        Loss weights (see :class:`~astro3s.models.losses.AstraLoss`).
    cldice_processes_weight, cldice_iterations
        The optional clDice term on the processes (0: ASTRA's loss; see
        :func:`~astro3s.models.losses.cldice_loss`).
    ignore_index : int
        Target label of unannotated pixels.
    image_log_every_n_epochs : int
        Log image panels of the first validation batch every this many epochs
        (0: never). Only loggers that take images (TensorBoard, W&B) get them.
    num_image_panels : int
        Samples per panel.
    init_weights : str or None
        Start from the network weights of this checkpoint or bundled model
        (``"default"``): fine-tuning. The network must have the same
        architecture. Not stored in the hyper-parameters (the weights are).

    Notes
    -----
    Batches: ``{"image": (B, 1, H, W) float32, "target": (B, H, W) int64}``.
    Logged: ``train/loss`` (+ ``train/bce``, ``train/dice_*`` loss terms),
    ``val/loss``, ``val/dice_<class>`` and ``val/iou_<class>`` for each class of
    :data:`CLASS_NAMES`, and ``val/dice_mean`` (soma and processes).
    """

    def __init__(
        self,
        net: nn.Module | None = None,
        *,
        net_config: Mapping[str, Any] | None = None,
        optimizer: OptimizerFactory | Mapping[str, Any] | None = None,
        scheduler: SchedulerFactory | Mapping[str, Any] | None = None,
        scheduler_monitor: str = "val/loss",
        scheduler_interval: str = "epoch",
        bce_weight: float = 0.5,
        dice_processes_weight: float = 1.0,
        dice_soma_weight: float = 1.0,
        dice_background_weight: float = 0.0,
        dice_smooth: float = 0.5,
        cldice_processes_weight: float = 0.0,
        cldice_iterations: int = 6,
        ignore_index: int = IGNORE_INDEX,
        image_log_every_n_epochs: int = 5,
        num_image_panels: int = 4,
        init_weights: str | None = None,
    ) -> None:
        super().__init__()
        if net is None:
            if not net_config:
                raise ConfigError("SegmentationModule needs a network: pass net= or net_config=")
            net = build_network_from_config(net_config)
        config = getattr(net, "config", None)
        if not config:
            raise ConfigError(
                f"{type(net).__name__} has no 'config' dict; use an astro3s network "
                "(astro3s.models.DenseUp, UNet, UNetPlusPlus) so the checkpoint can be reloaded"
            )
        self.net = net
        self._optimizer_factory = resolve_factory(optimizer, what="optimizer") or resolve_factory(
            DEFAULT_OPTIMIZER, what="optimizer"
        )
        self._scheduler_factory = resolve_factory(scheduler, what="scheduler")
        if scheduler_interval not in ("epoch", "step"):
            raise ConfigError(
                f"scheduler_interval must be 'epoch' or 'step', got {scheduler_interval!r}"
            )
        # plain-data hyper-parameters (read by save_hyperparameters from these locals)
        net_config = dict(plain(config))
        optimizer = describe_partial(optimizer) if optimizer is not None else dict(DEFAULT_OPTIMIZER)
        scheduler = describe_partial(scheduler)
        self.save_hyperparameters(ignore=["net", "init_weights"])
        if init_weights:
            self._load_net_weights(init_weights)

        self.loss = AstraLoss(
            bce_weight=bce_weight,
            dice_processes_weight=dice_processes_weight,
            dice_soma_weight=dice_soma_weight,
            dice_background_weight=dice_background_weight,
            smooth=dice_smooth,
            cldice_processes_weight=cldice_processes_weight,
            cldice_iterations=cldice_iterations,
            ignore_index=ignore_index,
        )
        self.ignore_index = ignore_index
        self.val_dice = DiceScore(
            num_classes=NUM_CLASSES, average="none", input_format="index", aggregation_level="global"
        )
        self.val_iou = MeanIoU(num_classes=NUM_CLASSES, per_class=True, input_format="index")

    def _load_net_weights(self, source: str) -> None:
        """Copy the network weights of a checkpoint or bundled model into ``self.net``."""
        path, _, state = read_model_checkpoint(source)
        net_state = {k[len("net."):]: v for k, v in state.items() if k.startswith("net.")}
        widened = widened_input_weights(net_state, self.net.state_dict())
        if widened:
            log.info("init_weights: %s widened to %d input channels (the new ones start at zero weight)",
                     ", ".join(widened), input_channels(self.net))
        try:
            self.net.load_state_dict(net_state, strict=True)
        except RuntimeError as error:
            raise ConfigError(f"init_weights={source!r} ({path}): its network does not fit this one's "
                              f"({str(error).splitlines()[0]}). Fix: use a checkpoint of the same network "
                              "and width, or init_weights=null.") from None
        log.info("network weights initialised from %s", path)

    # -- inference ------------------------------------------------------
    def forward(self, image: torch.Tensor) -> torch.Tensor:
        """Logits ``(B, 3, H, W)`` of an image batch ``(B, 1, H, W)``."""
        return self.net(image)

    @torch.no_grad()
    def predict_proba(self, image: torch.Tensor) -> torch.Tensor:
        """Class probabilities ``(B, 3, H, W)`` in :data:`CLASS_NAMES` order."""
        return torch.softmax(self.net(image), dim=1)

    def predict_step(self, batch: Any, batch_idx: int, dataloader_idx: int = 0) -> torch.Tensor:
        """Class probabilities ``(B, 3, H, W)`` of a batch (a dict with ``"image"`` or a tensor)."""
        image = batch["image"] if isinstance(batch, Mapping) else batch
        if isinstance(image, list | tuple):
            image = image[0]
        return torch.softmax(self.net(image), dim=1)

    def encoder_parameters(self) -> list[nn.Parameter]:
        """Parameters of the network's encoder (for freeze-then-finetune schedules)."""
        return self.net.encoder_parameters()

    # -- training -------------------------------------------------------
    @staticmethod
    def _unpack(batch: Mapping[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        try:
            return batch["image"], batch["target"]
        except (KeyError, TypeError):
            raise ValueError(
                "batches must be dicts {'image': (B,1,H,W) float32, 'target': (B,H,W) int64}"
            ) from None

    def _loss_terms(self, heads: list[torch.Tensor], target: torch.Tensor) -> dict[str, torch.Tensor]:
        """Loss terms averaged over the output heads (deep supervision as in ASTRA)."""
        per_head = [self.loss.terms(logits, target) for logits in heads]
        return {key: torch.stack([t[key] for t in per_head]).mean() for key in per_head[0]}

    def training_step(self, batch: Mapping[str, torch.Tensor], batch_idx: int) -> torch.Tensor:
        image, target = self._unpack(batch)
        terms = self._loss_terms(self.net.forward_heads(image), target)
        batch_size = image.shape[0]
        self.log(
            "train/loss", terms["loss"], prog_bar=True, on_step=True, on_epoch=True, batch_size=batch_size
        )
        self.log_dict(
            {f"train/{k}": v.detach() for k, v in terms.items() if k != "loss"},
            on_step=False,
            on_epoch=True,
            batch_size=batch_size,
        )
        return terms["loss"]

    def validation_step(self, batch: Mapping[str, torch.Tensor], batch_idx: int) -> None:
        self._evaluation_step(batch, batch_idx, stage="val")

    def test_step(self, batch: Mapping[str, torch.Tensor], batch_idx: int) -> None:
        self._evaluation_step(batch, batch_idx, stage="test")

    def on_validation_epoch_end(self) -> None:
        self._log_epoch_scores(stage="val")

    def on_test_epoch_end(self) -> None:
        self._log_epoch_scores(stage="test")

    def _evaluation_step(self, batch: Mapping[str, torch.Tensor], batch_idx: int, *, stage: str) -> None:
        # validation and test never run at the same time, so they share the metric objects
        image, target = self._unpack(batch)
        logits = self.net(image)
        terms = self.loss.terms(logits, target)
        batch_size = image.shape[0]
        self.log(
            f"{stage}/loss",
            terms["loss"],
            prog_bar=True,
            on_epoch=True,
            batch_size=batch_size,
            sync_dist=True,
        )
        prediction = logits.argmax(dim=1)
        # unannotated pixels: count both as background, which changes no foreground score
        ignored = target == self.ignore_index
        metric_target = target.masked_fill(ignored, BACKGROUND)
        metric_prediction = prediction.masked_fill(ignored, BACKGROUND)
        self.val_dice.update(metric_prediction, metric_target)
        self.val_iou.update(metric_prediction, metric_target)
        if batch_idx == 0 and stage == "val":
            self._log_panels(image, target, prediction)

    def _log_epoch_scores(self, *, stage: str) -> None:
        dice = self.val_dice.compute()
        iou = self.val_iou.compute()
        scores = {}
        for index, name in enumerate(CLASS_NAMES):
            scores[f"{stage}/dice_{name}"] = dice[index]
            scores[f"{stage}/iou_{name}"] = iou[index]
        scores[f"{stage}/dice_mean"] = (scores[f"{stage}/dice_soma"] + scores[f"{stage}/dice_processes"]) / 2
        # torchmetrics already reduced the scores over processes: identical on every rank
        self.log_dict(scores, prog_bar=False, sync_dist=True)
        self.val_dice.reset()
        self.val_iou.reset()

    def _log_panels(self, image: torch.Tensor, target: torch.Tensor, prediction: torch.Tensor) -> None:
        every = int(self.hparams.get("image_log_every_n_epochs", 0) or 0)
        if every <= 0 or self.trainer is None or self.trainer.sanity_checking:
            return
        if self.current_epoch % every != 0 or not self.loggers:
            return
        loggers = [lg for lg in self.loggers if _takes_images(lg)]
        if not loggers:
            return
        panel = render_panels(
            image, target, prediction, max_items=int(self.hparams.get("num_image_panels", 4))
        )
        tag = "val/panels"
        for logger in loggers:
            _log_image(logger, tag, panel, step=self.global_step)

    def configure_optimizers(self) -> Any:
        optimizer = self._optimizer_factory(self.parameters())
        if self._scheduler_factory is None:
            return optimizer
        scheduler = self._scheduler_factory(optimizer)
        return {
            "optimizer": optimizer,
            "lr_scheduler": {
                "scheduler": scheduler,
                "monitor": self.hparams.scheduler_monitor,
                "interval": self.hparams.scheduler_interval,
            },
        }


def _takes_images(logger: Any) -> bool:
    from pytorch_lightning.loggers import TensorBoardLogger, WandbLogger

    return isinstance(logger, TensorBoardLogger | WandbLogger)


def _log_image(logger: Any, tag: str, panel: torch.Tensor, *, step: int) -> None:
    """Send a ``(3, H, W)`` uint8 panel to a TensorBoard or W&B logger."""
    from pytorch_lightning.loggers import TensorBoardLogger, WandbLogger

    if isinstance(logger, TensorBoardLogger):
        logger.experiment.add_image(tag, panel, global_step=step, dataformats="CHW")
    elif isinstance(logger, WandbLogger):
        logger.log_image(key=tag, images=[panel.permute(1, 2, 0).numpy()], step=step)
