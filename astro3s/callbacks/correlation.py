"""The cross-correlation (CC) domain analysis of the validation and test FOVs during training.

Every ``every_n_epochs`` validation epochs, and at the end of the test epoch,
:class:`CorrelationAnalysis` runs the standalone analysis
(:func:`astro3s.correlation.correlation_analysis`) on up to ``max_fovs`` FOVs
of the stage, with the FOV's ground-truth cells (``cells="ground_truth"``) or
the cells the model finds (``cells="prediction"``: network on crops and FOV,
then the combination rules, :func:`astro3s.inference.segment_preprocessed`).
The motion-corrected movie is the pre-processing's; when the cached result no
longer holds it, the movie file is opened again and corrected with the cached
shifts.

Logged (``<stage>`` = ``val`` or ``test``; means over the FOVs analysed):

- ``<stage>/cc_threshold``: the CC threshold (chosen per FOV by false
  discovery, or the configured one);
- ``<stage>/cc_n_domains``: cells with a domain;
- ``<stage>/cc_domain_area``: mean domain area, px (own soma and processes
  included);
- ``<stage>/cc_domain_iou``: mean IoU of the domains of matched cells with the
  simulated ground-truth domains (``ground_truth/domains.tif`` beside the
  FOV's soma labels), only when every FOV analysed has them.

A domain figure per FOV (:func:`astro3s.correlation.plot_domains` over the
enhanced image) is written to ``<log dir>/correlation/<stage>_epoch<NNN>_<fov>.png``
and sent, as ``<stage>/cc_domains/<fov>``, to the loggers that take images
(TensorBoard, W&B). The analysis runs on the global-rank-0 process only.
"""

from __future__ import annotations

import logging
import math
from pathlib import Path
from typing import Any

import numpy as np
import pytorch_lightning as pl

log = logging.getLogger(__name__)

__all__ = ["CorrelationAnalysis"]

CELLS = ("ground_truth", "prediction")


class CorrelationAnalysis(pl.Callback):
    """Run the CC domain analysis on validation / test FOVs and log its outcome.

    Parameters
    ----------
    every_n_epochs : int
        Analyse after every ``every_n_epochs``-th validation epoch (epochs
        ``n - 1, 2n - 1, ...``); the test epoch is always analysed.
    max_fovs : int or None
        Analyse at most this many FOVs of a stage, in split order (None: all).
    cells : {"ground_truth", "prediction"}
        Whose cells: the FOV's annotation, or the model's segmentation.
    correlation : mapping, optional
        Overrides of :class:`astro3s.correlation.CorrelationParams`.
    normalize : str
        ``cells="prediction"``: the input normalisation used in training
        (``data.normalize``).
    combine : mapping, optional
        ``cells="prediction"``: overrides of :class:`astro3s.postprocess.CombineParams`.
    figures : bool
        Write and log the domain figure of each FOV.

    Attributes
    ----------
    last_results : dict of str to dict
        Per stage, the latest per-FOV results (FOV name -> ``threshold``,
        ``false_rate``, ``n_domains``, ``domain_area``, ``domain_iou``,
        ``n_cells``, ``figure``, ``seconds``).

    Raises
    ------
    ConfigError
        An option out of range or an unknown ``cells`` value.
    """

    def __init__(self, *, every_n_epochs: int = 5, max_fovs: int | None = 2, cells: str = "ground_truth",
                 correlation: dict[str, Any] | None = None, normalize: str = "mean",
                 combine: dict[str, Any] | None = None, figures: bool = True) -> None:
        super().__init__()
        from astro3s.errors import ConfigError

        if int(every_n_epochs) < 1:
            raise ConfigError(f"CorrelationAnalysis.every_n_epochs must be at least 1, got {every_n_epochs}")
        if max_fovs is not None and int(max_fovs) < 1:
            raise ConfigError(f"CorrelationAnalysis.max_fovs must be at least 1 (or null: all), got {max_fovs}")
        if cells not in CELLS:
            raise ConfigError(f"CorrelationAnalysis.cells must be one of {', '.join(CELLS)}, got {cells!r}")
        self.every_n_epochs = int(every_n_epochs)
        self.max_fovs = None if max_fovs is None else int(max_fovs)
        self.cells = str(cells)
        self.correlation = _correlation_params(correlation)
        self.normalize = str(normalize)
        self.combine = dict(combine or {})
        self.figures = bool(figures)
        self.last_results: dict[str, dict[str, dict[str, Any]]] = {}

    # -- Lightning hooks ---------------------------------------------------------------------------

    def on_validation_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if trainer.sanity_checking or (int(trainer.current_epoch) + 1) % self.every_n_epochs:
            return
        self._run(trainer, pl_module, "val")

    def on_test_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._run(trainer, pl_module, "test")

    # -- the analysis ------------------------------------------------------------------------------

    def analyse(self, pl_module: pl.LightningModule | None, fovs: list[tuple[str, Any, Any, Any]], *,
                specs: dict[str, Any] | None = None, figure_dir: str | Path | None = None,
                tag: str = "") -> dict[str, dict[str, Any]]:
        """CC analysis of ``fovs``.

        Parameters
        ----------
        pl_module : LightningModule or None
            The model (needed for ``cells="prediction"``).
        fovs : list of (name, Preprocessed, soma, processes)
            As :meth:`astro3s.data.AstroDataModule.evaluation_fovs` gives them.
        specs : dict of str to FOVSpec, optional
            The FOVs' specs by name: the movie file and the ground-truth folder.
        figure_dir : str or Path, optional
            Where the domain figures go (none without it).
        tag : str
            Prefix of the figure names.

        Returns
        -------
        dict of str to dict
            Per FOV name: ``threshold``, ``false_rate`` (None when the
            threshold was given), ``n_cells``, ``n_domains``, ``domain_area``,
            ``domain_iou`` (None without ground-truth domains or matched
            cells), ``figure`` (path or None), ``seconds``.
        """
        import time

        from astro3s.correlation import correlation_analysis, plot_domains

        specs = specs or {}
        results: dict[str, dict[str, Any]] = {}
        for name, pre, gt_soma, gt_processes in fovs:  # a loop over the few FOVs analysed
            start = time.perf_counter()
            soma, processes = self._cells(pl_module, pre, gt_soma, gt_processes)
            movie, opened = _corrected_movie(pre, specs.get(name), pl_module)
            try:
                _, domains = correlation_analysis(movie, soma, processes, self.correlation)
            finally:
                if opened is not None:
                    opened.close()
            labels = np.asarray(domains.domains)
            areas = np.bincount(labels.ravel(), minlength=int(labels.max()) + 1)[1:]
            areas = areas[areas > 0]
            truth = _truth_domains(specs.get(name), labels.shape)
            iou = None
            if truth is not None:
                from astro3s.metrics import domain_iou, match_instances

                match = match_instances(soma, gt_soma)
                values = domain_iou(labels, truth, match)
                iou = float(values.mean()) if len(values) else None
            figure = None
            if self.figures and figure_dir is not None:
                figure = Path(figure_dir) / f"{tag}{_safe(name)}.png"
                figure.parent.mkdir(parents=True, exist_ok=True)
                plot_domains(pre.mean_image, soma, processes, labels, path=figure,
                             title=f"{name} ({self.cells.replace('_', ' ')} cells)",
                             threshold=domains.threshold if math.isfinite(domains.threshold) else None)
            results[name] = {
                "threshold": float(domains.threshold), "false_rate": domains.false_rate,
                "n_cells": len(domains.cell_ids), "n_domains": len(areas),
                "domain_area": float(areas.mean()) if len(areas) else 0.0, "domain_iou": iou,
                "figure": None if figure is None else str(figure), "seconds": time.perf_counter() - start,
            }
        return results

    def _cells(self, pl_module: Any, pre: Any, soma: np.ndarray, processes: np.ndarray,
               ) -> tuple[np.ndarray, np.ndarray]:
        if self.cells == "ground_truth":
            return np.asarray(soma, np.uint16), np.asarray(processes, np.uint16)
        from astro3s.inference import segment_preprocessed

        was_training = pl_module.training
        pl_module.eval()
        try:
            seg = segment_preprocessed(pre, pl_module, combine=self.combine, normalize=self.normalize)
        finally:
            pl_module.train(was_training)
        return np.asarray(seg.soma, np.uint16), np.asarray(seg.processes, np.uint16)

    def _run(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        datamodule = getattr(trainer, "datamodule", None)
        if not trainer.is_global_zero or datamodule is None or not hasattr(datamodule, "evaluation_fovs"):
            return
        fovs = datamodule.evaluation_fovs(stage)
        fovs = fovs if self.max_fovs is None else fovs[: self.max_fovs]
        if not fovs:
            return
        specs = {spec.name: spec for spec in getattr(datamodule, "fov_specs", [])}
        epoch = int(trainer.current_epoch)
        log_dir = Path(trainer.log_dir or trainer.default_root_dir)
        results = self.analyse(pl_module, fovs, specs=specs, figure_dir=log_dir / "correlation",
                               tag=f"{stage}_epoch{epoch:03d}_")
        self.last_results[stage] = results
        rows = list(results.values())
        thresholds = [r["threshold"] for r in rows if math.isfinite(r["threshold"])]  # NaN: no cells
        metrics = {
            f"{stage}/cc_threshold": float(np.mean(thresholds)) if thresholds else math.nan,
            f"{stage}/cc_n_domains": float(np.mean([r["n_domains"] for r in rows])),
            f"{stage}/cc_domain_area": float(np.mean([r["domain_area"] for r in rows])),
        }
        if all(r["domain_iou"] is not None for r in rows):
            metrics[f"{stage}/cc_domain_iou"] = float(np.mean([r["domain_iou"] for r in rows]))
        for key, value in metrics.items():
            if math.isfinite(value):
                pl_module.log(key, value, rank_zero_only=True)
        self._log_figures(trainer, results, stage)
        log.info("%s CC analysis of %d FOV(s) (%s cells): threshold %.2f, %.1f domain(s) of %.0f px%s",
                 stage, len(rows), self.cells, metrics[f"{stage}/cc_threshold"], metrics[f"{stage}/cc_n_domains"],
                 metrics[f"{stage}/cc_domain_area"],
                 f", domain IoU {metrics[f'{stage}/cc_domain_iou']:.3f}" if f"{stage}/cc_domain_iou" in metrics
                 else "")

    def _log_figures(self, trainer: pl.Trainer, results: dict[str, dict[str, Any]], stage: str) -> None:
        from astro3s.models.module import _log_image, _takes_images

        loggers = [lg for lg in trainer.loggers if _takes_images(lg)]
        if not loggers:
            return
        import torch
        from matplotlib import image as mpimg

        for name, result in results.items():  # a loop over the few FOVs analysed
            if result["figure"] is None:
                continue
            rgba = mpimg.imread(result["figure"])  # float in [0, 1], (H, W, 4)
            panel = torch.from_numpy(np.ascontiguousarray(
                (np.clip(rgba[..., :3], 0, 1) * 255).round().astype(np.uint8).transpose(2, 0, 1)))
            for logger in loggers:
                _log_image(logger, f"{stage}/cc_domains/{name}", panel, step=int(trainer.global_step))


def _correlation_params(values: Any) -> Any:
    """A :class:`~astro3s.correlation.CorrelationParams` from a mapping of overrides (or one)."""
    from astro3s.correlation import CorrelationParams
    from astro3s.errors import ConfigError

    if isinstance(values, CorrelationParams):
        return values
    # plain dicts and lists: the callback's config sets _convert_: all (conf/callbacks/correlation_analysis.yaml)
    values = {k: tuple(v) if isinstance(v, list) else v for k, v in dict(values or {}).items()}
    try:
        return CorrelationParams(**values)
    except TypeError as err:
        raise ConfigError(f"CorrelationAnalysis.correlation: {err}") from None


def _corrected_movie(pre: Any, spec: Any, pl_module: Any) -> tuple[Any, Any]:
    """The motion-corrected movie of a pre-processing result, and the movie opened for it (or None).

    ``pre.corrected`` when it is there; else the movie file (the spec's, or the
    one the result names) opened again and corrected on read with ``pre.shifts``.
    """
    if getattr(pre, "corrected", None) is not None:
        return pre.corrected, None
    from astro3s.errors import InputError
    from astro3s.io import read_movie
    from astro3s.preprocess import CorrectedMovie

    path = getattr(spec, "movie", None) or getattr(pre, "source", None)
    if path is None or not Path(path).exists():
        raise InputError(path, "the movie of this pre-processing result is not available for the CC analysis.",
                         "keep the movie files of the training FOVs where they were pre-processed.")
    from astro3s.preprocess.lines import with_recorded_line_shift

    movie = with_recorded_line_shift(read_movie(path, fs=getattr(pre, "fs", None)), getattr(pre, "details", None))
    device = "cpu"
    if pl_module is not None and getattr(getattr(pl_module, "device", None), "type", "cpu") == "cuda":
        device = str(pl_module.device)
    return CorrectedMovie(movie, pre.shifts, device=device), movie


def _truth_domains(spec: Any, shape: tuple[int, ...]) -> np.ndarray | None:
    """Ground-truth domain labels ``domains.tif`` beside the spec's soma labels (or RoiSet), if any."""
    if spec is None:
        return None
    for base in (getattr(spec, "soma", None), getattr(spec, "roiset", None)):
        if base is not None and (Path(base).parent / "domains.tif").is_file():
            from astro3s.io import read_labels

            labels = read_labels(Path(base).parent / "domains.tif")
            return labels if labels.shape == tuple(shape) else None
    return None


def _safe(name: str) -> str:
    """A file-name-safe version of a FOV name."""
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in str(name))
