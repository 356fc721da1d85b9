"""ASTRA scores of the whole inference path on the validation and test FOVs.

Dice on crops says how well pixels are classified; what users get are cells,
after the combination rules. This callback runs the network on every
validation (test) FOV's crops and whole-FOV map, combines the outputs into
cells (:func:`astro3s.inference.segment_preprocessed`) and scores them against
the ground truth with ASTRA's definition (:func:`astro3s.metrics.astra_scores`),
so that checkpoints can be chosen, and sweeps optimised, on what matters.

Logged (``<stage>`` = ``val`` or ``test``): ``<stage>/detection_precision``,
``<stage>/detection_recall``, ``<stage>/detection_f1``, ``<stage>/soma_f1``,
``<stage>/process_f1`` and ``<stage>/astra_f1``, the mean of the detection,
soma and process F1 (0 for a FOV set with no match, so that the mean stays a
usable objective). With soma-only annotations (no process pixel in any
ground truth, as in D3) processes are not scored and ``astra_f1`` is the mean
of the detection and soma F1.
"""

from __future__ import annotations

import logging
import math
from typing import Any

import pytorch_lightning as pl

log = logging.getLogger(__name__)

__all__ = ["AstraScore"]


class AstraScore(pl.Callback):
    """Score cells (network -> combination) on the validation / test FOVs.

    Parameters
    ----------
    every_n_epochs : int
        Validation epochs between two scorings (the last epoch's scores stay
        in ``trainer.callback_metrics`` between them, so a checkpoint callback
        monitoring ``val/astra_f1`` keeps working).
    max_fovs : int or None
        Score at most this many FOVs of a stage (None: all).
    combine : mapping, optional
        Overrides of :class:`astro3s.postprocess.CombineParams`.
    normalize : str
        Input normalisation used in training (``data.normalize``).

    Attributes
    ----------
    last_scores : dict of str to dict
        The latest pooled scores per stage, and per-FOV scores under
        ``"<stage>_per_fov"`` (name -> scores dict).
    """

    def __init__(self, *, every_n_epochs: int = 1, max_fovs: int | None = None,
                 combine: dict[str, Any] | None = None, normalize: str = "mean") -> None:
        super().__init__()
        if int(every_n_epochs) < 1:
            from astro3s.errors import ConfigError

            raise ConfigError(f"AstraScore.every_n_epochs must be at least 1, got {every_n_epochs}")
        self.every_n_epochs = int(every_n_epochs)
        self.max_fovs = None if max_fovs is None else int(max_fovs)
        self.combine = dict(combine or {})
        self.normalize = str(normalize)
        self.last_scores: dict[str, Any] = {}
        self._metrics: dict[str, dict[str, float]] = {}  # the values logged last, per stage

    def _fovs(self, trainer: pl.Trainer, stage: str) -> list[tuple[str, Any, Any, Any]]:
        datamodule = getattr(trainer, "datamodule", None)
        if datamodule is None or not hasattr(datamodule, "evaluation_fovs"):
            return []
        fovs = datamodule.evaluation_fovs(stage)
        return fovs if self.max_fovs is None else fovs[: self.max_fovs]

    def score(self, pl_module: pl.LightningModule, fovs: list[tuple[str, Any, Any, Any]]) -> dict[str, Any]:
        """Pooled and per-FOV ASTRA scores of ``fovs`` ``(name, pre, soma, processes)``."""
        from astro3s.inference import segment_preprocessed
        from astro3s.metrics import astra_scores

        was_training = pl_module.training
        pl_module.eval()
        # soma-only annotations (e.g. D3): process scores would compare with nothing
        soma_only = all(not (processes is not None and processes.any()) for _, _, _, processes in fovs)
        preds, gts, per_fov = [], [], {}
        try:
            for name, pre, soma, processes in fovs:  # loop over FOVs
                seg = segment_preprocessed(pre, pl_module, combine=self.combine, normalize=self.normalize)
                preds.append((seg.soma, seg.processes))
                gts.append((soma, processes))
                per_fov[name] = astra_scores(seg.soma, seg.processes, soma, processes,
                                             soma_only=soma_only).as_dict()
        finally:
            pl_module.train(was_training)
        pooled = astra_scores([p[0] for p in preds], [p[1] for p in preds],
                              [g[0] for g in gts], [g[1] for g in gts], soma_only=soma_only).as_dict()
        return {"pooled": pooled, "per_fov": per_fov, "soma_only": soma_only}

    def _run(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        fovs = self._fovs(trainer, stage)
        if not fovs:
            return
        result = self.score(pl_module, fovs)
        pooled = result["pooled"]

        def value(key: str) -> float:
            v = pooled.get(key)
            return 0.0 if v is None or (isinstance(v, float) and math.isnan(v)) else float(v)

        metrics = {f"{stage}/{key}": value(key) for key in
                   ("detection_precision", "detection_recall", "detection_f1", "soma_f1", "process_f1")}
        parts = ["detection_f1", "soma_f1"] + ([] if result["soma_only"] else ["process_f1"])
        metrics[f"{stage}/astra_f1"] = sum(metrics[f"{stage}/{k}"] for k in parts) / len(parts)
        self._metrics[stage] = metrics
        self._log(pl_module, metrics)
        self.last_scores[stage] = pooled
        self.last_scores[f"{stage}_per_fov"] = result["per_fov"]
        log.info("%s ASTRA scores on %d FOV(s): detection F1 %.3f, soma F1 %.3f, process F1 %.3f",
                 stage, len(fovs), metrics[f"{stage}/detection_f1"], metrics[f"{stage}/soma_f1"],
                 metrics[f"{stage}/process_f1"])

    @staticmethod
    def _log(pl_module: pl.LightningModule, metrics: dict[str, float]) -> None:
        for key, v in metrics.items():
            pl_module.log(key, v, prog_bar=key.endswith("astra_f1"), sync_dist=False)

    def on_validation_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if trainer.sanity_checking:
            return
        epoch = int(trainer.current_epoch)
        last = trainer.max_epochs is not None and epoch + 1 >= int(trainer.max_epochs)
        if (epoch + 1) % self.every_n_epochs == 0 or last or "val" not in self._metrics:
            self._run(trainer, pl_module, "val")
        else:
            # re-log the latest scores so that monitors find the key every epoch
            self._log(pl_module, self._metrics["val"])

    def on_test_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._run(trainer, pl_module, "test")
