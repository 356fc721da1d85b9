"""``FreezeThenFinetune``: train the decoder on a frozen encoder, then everything at a lower rate.

ASTRA trains DenseUp with its Inception-ResNet stages frozen (ImageNet
weights) and then fine-tunes the whole network with the learning rate
multiplied by 0.05.
"""

from __future__ import annotations

import logging
from typing import Any

import pytorch_lightning as pl
from torch import nn

from astro3s.errors import ConfigError

log = logging.getLogger(__name__)

__all__ = ["FreezeThenFinetune", "frozen_parameters"]


def frozen_parameters(pl_module: pl.LightningModule, which: str = "auto") -> list[nn.Parameter]:
    """The parameters frozen during the first phase.

    Parameters
    ----------
    pl_module : LightningModule
        A :class:`~astro3s.models.SegmentationModule` (its ``net``) or any
        module with ``encoder_parameters()``.
    which : {"auto", "inception", "encoder"}
        ``"inception"``: ``net.inception_parameters()`` (DenseUp's
        Inception-ResNet stages, its stem stays trainable, as in ASTRA);
        ``"encoder"``: ``encoder_parameters()``; ``"auto"``: inception when the
        network has it, else encoder.
    """
    net = getattr(pl_module, "net", pl_module)
    if which in ("auto", "inception") and hasattr(net, "inception_parameters"):
        return list(net.inception_parameters())
    if which == "inception":
        raise ConfigError(f"{type(net).__name__} has no Inception-ResNet stages; use which=encoder")
    if which not in ("auto", "encoder"):
        raise ConfigError(f"which must be 'auto', 'inception' or 'encoder', got {which!r}")
    if hasattr(net, "encoder_parameters"):
        return list(net.encoder_parameters())
    if hasattr(pl_module, "encoder_parameters"):
        return list(pl_module.encoder_parameters())
    raise ConfigError(f"{type(net).__name__} has no encoder_parameters(); cannot freeze its encoder")


class FreezeThenFinetune(pl.Callback):
    """Freeze the encoder until ``unfreeze_epoch``, then unfreeze it and scale the learning rate.

    Parameters
    ----------
    unfreeze_epoch : int
        First epoch (0-based) trained with everything unfrozen; 0 = never frozen.
    lr_factor : float
        Every parameter group's learning rate is multiplied by this at the
        unfreezing (ASTRA: 0.05).
    which : {"auto", "inception", "encoder"}
        What is frozen (see :func:`frozen_parameters`).
    freeze_batchnorm : bool
        Also keep the frozen part's BatchNorm layers in eval mode (running
        statistics fixed, as Keras does for non-trainable layers).

    Notes
    -----
    Freezing sets ``requires_grad=False``; the frozen parameters stay in the
    optimizer (built by ``configure_optimizers`` over all parameters) but get
    no gradient, so Adam neither moves nor decays them and keeps no state for
    them until they are unfrozen.

    Schedulers: at the unfreezing the optimizer groups' ``lr`` *and* every
    scheduler's ``base_lrs`` are multiplied by ``lr_factor``, so epoch- and
    step-based schedulers (StepLR, cosine, ...) continue their shape from the
    lowered rate. ``ReduceLROnPlateau`` works on the current rate and keeps
    its patience counter and ``min_lrs``; it lowers the new rate further when
    the monitored metric stalls. Warm-up schedulers that *set* ``lr`` from
    their own formula without ``base_lrs`` would undo the factor.

    Resuming from a checkpoint restores whether the unfreezing happened (the
    optimizer's restored learning rate already carries the factor).
    """

    def __init__(self, *, unfreeze_epoch: int = 10, lr_factor: float = 0.05, which: str = "auto",
                 freeze_batchnorm: bool = True) -> None:
        super().__init__()
        if int(unfreeze_epoch) < 0:
            raise ConfigError(f"unfreeze_epoch must be >= 0, got {unfreeze_epoch}")
        if not float(lr_factor) > 0:
            raise ConfigError(f"lr_factor must be > 0, got {lr_factor}")
        self.unfreeze_epoch = int(unfreeze_epoch)
        self.lr_factor = float(lr_factor)
        self.which = str(which)
        self.freeze_batchnorm = bool(freeze_batchnorm)
        self.unfrozen = False
        self._frozen: list[nn.Parameter] = []

    # -- phases ---------------------------------------------------------------------------------
    def _freeze(self, pl_module: pl.LightningModule) -> None:
        self._frozen = [p for p in frozen_parameters(pl_module, self.which) if p.requires_grad]
        for parameter in self._frozen:
            parameter.requires_grad_(False)
        log.info("FreezeThenFinetune: %d parameter tensor(s) frozen until epoch %d",
                 len(self._frozen), self.unfreeze_epoch)

    def _unfreeze(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        for parameter in frozen_parameters(pl_module, self.which):
            parameter.requires_grad_(True)
        self._frozen = []
        for optimizer in trainer.optimizers:
            for group in optimizer.param_groups:
                group["lr"] = group["lr"] * self.lr_factor
                if "initial_lr" in group:
                    group["initial_lr"] = group["initial_lr"] * self.lr_factor
        for config in trainer.lr_scheduler_configs:
            base_lrs = getattr(config.scheduler, "base_lrs", None)
            if base_lrs is not None:
                config.scheduler.base_lrs = [lr * self.lr_factor for lr in base_lrs]
        self.unfrozen = True
        lrs = [group["lr"] for opt in trainer.optimizers for group in opt.param_groups]
        log.info("FreezeThenFinetune: epoch %d, all parameters trainable, lr now %s",
                 trainer.current_epoch, ", ".join(f"{lr:.3g}" for lr in lrs))

    def _frozen_modules(self, pl_module: pl.LightningModule) -> list[nn.Module]:
        frozen = {id(p) for p in self._frozen}
        return [m for m in pl_module.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)
                and any(id(p) in frozen for p in m.parameters(recurse=False))]

    # -- hooks ----------------------------------------------------------------------------------
    def on_train_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if self.unfrozen or self.unfreeze_epoch == 0:
            return
        if trainer.current_epoch < self.unfreeze_epoch:
            if not self._frozen:
                self._freeze(pl_module)
        else:
            self._unfreeze(trainer, pl_module)

    def on_train_batch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule, batch: Any,
                             batch_idx: int) -> None:
        # Lightning switches the module back to train mode after each validation
        if self.freeze_batchnorm and self._frozen:
            for module in self._frozen_modules(pl_module):
                module.eval()

    def state_dict(self) -> dict[str, Any]:
        return {"unfrozen": self.unfrozen, "unfreeze_epoch": self.unfreeze_epoch, "lr_factor": self.lr_factor}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.unfrozen = bool(state_dict.get("unfrozen", False))
