"""``astro3s-tune-preprocess``: score the pre-processing on annotated FOVs, without training.

Examples
--------
``astro3s-tune-preprocess``
    3 simulated d1_like FOVs, the data config's parameters; prints and saves the scores.
``astro3s-tune-preprocess data=d1_standin data.n_fovs=6 data.preprocess.activity_percentile=70``
    one parameter changed, on 6 stand-ins of real D1 FOVs.
``astro3s-tune-preprocess hparams_search=preprocess_optuna data=d1_standin``
    an Optuna search of the pre-processing parameters (``conf/hparams_search/preprocess_optuna.yaml``).

Every FOV of the data config (``fovs=all``, or only the training FOVs of its
split with ``fovs=train``) is pre-processed with the data config's parameters
(``data.preprocess``, which a sweep overrides) and compared with its ground
truth:

- candidates (``candidate_*``): soma candidates against the annotated
  somata, matched one to one as :func:`astro3s.preprocess.fit.candidate_scores`
  does (the score :func:`~astro3s.preprocess.fit_parameters` maximises);
- crop masks (``mask_*``): the union of the local-activity masks (the pixels
  the network sees) against the annotated cell pixels (soma or process):
  precision is the share of mask pixels on a cell, recall the share of cell
  pixels kept. ``th1``/``th2`` act only here, not on the candidates.

``mean_f1`` is the mean of ``candidate_f1`` and ``mask_f1``. Counts are
pooled over FOVs before the ratios are taken. The scores, per FOV and pooled,
go to ``<output_dir>/scores.json``; the task returns the value of
``optimized_metric`` for the sweeper. Nothing is cached: each run
pre-processes its FOVs again (the FOV movies themselves are made once).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import hydra
import numpy as np
from omegaconf import DictConfig

from astro3s.cli._config import CONFIG_DIR
from astro3s.cli._task import metric_value, run_hydra_main, sweep_job, task_wrapper
from astro3s.errors import ConfigError

log = logging.getLogger(__name__)

SCORES_NAME = "scores.json"
FOV_CHOICES = ("all", "train")
#: the pooled figures a run reports (any of them can be ``optimized_metric``)
METRICS = ("candidate_precision", "candidate_recall", "candidate_f1", "mask_precision", "mask_recall",
           "mask_f1", "mean_f1")
_COUNTS = ("hit_cells", "n_cells", "matched", "n_candidates", "cell_pixels", "mask_pixels", "kept_pixels")


def fov_counts(candidates: np.ndarray, fov_mask: np.ndarray, soma: np.ndarray,
               processes: np.ndarray | None) -> dict[str, int]:
    """Counts of one FOV behind the candidate and crop-mask scores.

    Parameters
    ----------
    candidates : (H, W) int array
        Candidate labels (``Preprocessed.candidates``).
    fov_mask : (H, W) bool array
        Union of the local-activity masks (``Preprocessed.fov_mask``).
    soma, processes : (H, W) int arrays
        Ground-truth label images (processes may be None).

    Returns
    -------
    dict of str to int
        ``hit_cells, n_cells, matched, n_candidates`` of
        :func:`astro3s.preprocess.fit.candidate_scores`, and ``cell_pixels``
        (annotated soma or process pixels), ``mask_pixels`` and
        ``kept_pixels`` (cell pixels inside the mask).
    """
    from astro3s.preprocess.fit import candidate_scores

    hit, n_cells, matched, n_cands = candidate_scores(candidates, soma)
    cell = np.asarray(soma) > 0
    if processes is not None:
        cell |= np.asarray(processes) > 0
    mask = np.asarray(fov_mask, bool)
    return {"hit_cells": hit, "n_cells": n_cells, "matched": matched, "n_candidates": n_cands,
            "cell_pixels": int(cell.sum()), "mask_pixels": int(mask.sum()), "kept_pixels": int((cell & mask).sum())}


def _ratio(num: int, den: int) -> float:
    return num / den if den else 0.0


def pooled_scores(counts: Sequence[dict[str, int]]) -> dict[str, float]:
    """Candidate and crop-mask precision, recall and F1 of summed :func:`fov_counts`, and ``mean_f1``."""
    from astro3s.preprocess.fit import candidate_prf

    total = {key: int(sum(c[key] for c in counts)) for key in _COUNTS}
    precision, recall, f1 = candidate_prf(total["hit_cells"], total["n_cells"], total["matched"],
                                          total["n_candidates"])
    mask_p = _ratio(total["kept_pixels"], total["mask_pixels"])
    mask_r = _ratio(total["kept_pixels"], total["cell_pixels"])
    mask_f1 = 2 * mask_p * mask_r / (mask_p + mask_r) if mask_p + mask_r else 0.0
    return {"candidate_precision": precision, "candidate_recall": recall, "candidate_f1": f1,
            "mask_precision": mask_p, "mask_recall": mask_r, "mask_f1": mask_f1,
            "mean_f1": (f1 + mask_f1) / 2.0}


def _selected_fovs(datamodule: Any, which: str) -> list[Any]:
    """The FOV specs of the data module, all or only the training FOVs of its split."""
    from astro3s.data.splits import split_fovs

    specs = datamodule.source.fovs()
    if which == "all":
        return specs
    split = split_fovs([s.name for s in specs], split=datamodule.split, fold=datamodule.fold,
                       n_folds=datamodule.n_folds, train=datamodule.explicit["train"],
                       val=datamodule.explicit["val"], test=datamodule.explicit["test"],
                       shuffle_seed=datamodule.seed if datamodule.shuffle_folds else None)
    return [s for s in specs if s.name in set(split.train)]


@task_wrapper
def tune_preprocess_task(cfg: DictConfig) -> dict[str, Any]:
    """Pre-process the FOVs of ``cfg.data`` and score candidates and crop masks.

    Returns
    -------
    dict
        ``metrics`` (the pooled :data:`METRICS`), ``per_fov`` (counts and
        scores by FOV name), ``params`` (the pre-processing parameters) and
        ``fovs`` (names); also written to ``<output_dir>/scores.json``.
    """
    from hydra.utils import instantiate

    from astro3s.io import read_movie, write_json
    from astro3s.preprocess import preprocess

    which = str(cfg.get("fovs", "all"))
    if which not in FOV_CHOICES:
        raise ConfigError(f"fovs must be one of {', '.join(FOV_CHOICES)}, got {which!r}")
    name = cfg.get("optimized_metric")
    if name and name not in METRICS:
        raise ConfigError(f"optimized_metric must be one of {', '.join(METRICS)}, got {name!r}")
    datamodule = instantiate(cfg.data)
    params = datamodule.preprocess_params  # validated here: a bad trial value fails before any work
    specs = _selected_fovs(datamodule, which)
    log.info("scoring the pre-processing on %d FOV(s): %s", len(specs), ", ".join(s.name for s in specs))
    per_fov: dict[str, dict[str, Any]] = {}
    for spec in specs:  # loop over FOVs
        start = time.perf_counter()
        movie = read_movie(spec.movie)
        try:
            pre = preprocess(movie, datamodule.params_for(spec), progress=False)
        finally:
            movie.close()
        pre.corrected = None  # a handle on the closed movie
        soma, processes = spec.read_labels()
        counts = fov_counts(pre.candidates, pre.fov_mask, soma, processes)
        per_fov[spec.name] = {**counts, **pooled_scores([counts])}
        log.info("%s: %d candidate(s) for %d soma(ta), candidate F1 %.3f, mask F1 %.3f (%.1f s)", spec.name,
                 counts["n_candidates"], counts["n_cells"], per_fov[spec.name]["candidate_f1"],
                 per_fov[spec.name]["mask_f1"], time.perf_counter() - start)
    metrics = pooled_scores([per_fov[s.name] for s in specs])
    log.info("pooled: %s", ", ".join(f"{k}={v:.3f}" for k, v in metrics.items()))
    result = {"metrics": metrics, "per_fov": per_fov, "fovs": [s.name for s in specs],
              "params": params.to_dict(), "optimized_metric": name,
              "data": str(cfg.data.get("_target_", "")).rsplit(".", 1)[-1], "seed": cfg.get("seed")}
    path = write_json(Path(str(cfg.paths.output_dir)) / SCORES_NAME, result)
    log.info("scores saved to %s", path)
    return result


@hydra.main(config_path=CONFIG_DIR, config_name="tune_preprocess", version_base="1.3")
def _hydra_main(cfg: DictConfig) -> float | None:
    """The Hydra app of ``astro3s-tune-preprocess`` (run by :func:`main`); returns ``optimized_metric``'s value."""
    result = sweep_job(tune_preprocess_task, cfg)
    return metric_value(result["metrics"], cfg.get("optimized_metric"))


def main() -> float | None:
    """Console entry point ``astro3s-tune-preprocess``; a config typo is one line on stderr and exit code 2."""
    return run_hydra_main(_hydra_main, "astro3s-tune-preprocess")


if __name__ == "__main__":
    main()
