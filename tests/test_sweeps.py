"""Reproduction experiments, sweeps and launchers: paper_d* configs, Optuna searches, joblib, submitit.

The runs use the ``tiny`` simulator preset, tiny networks and one epoch; the
console scripts run in subprocesses, as a user runs them. The FOVs and their
pre-processing cache are made once, in-process, before the parallel jobs.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, OmegaConf, open_dict

from astro3s.cli._config import CONFIG_DIR

BIN = Path(sys.executable).parent
REPO = Path(__file__).resolve().parents[1]
TINY = ["data=synthetic", "data.preset=tiny", "data.n_fovs=2", "data.batch_size=4", "extras=quiet",
        "callbacks.rich_progress_bar=null", "trainer.max_epochs=1", "model.image_log_every_n_epochs=0"]
TINY_UNET = ["model=unet", "model.net.base_channels=8", "model.net.depth=3"]
PAPER = [f"paper_d{d}{suffix}" for d in (1, 2, 3) for suffix in ("", "_standin", "_unet", "_unetpp")]
N_FOVS = {1: 24, 2: 25, 3: 7}


def _compose(config_name: str, overrides: list[str]) -> DictConfig:
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3"):
        cfg = compose(config_name=config_name, overrides=overrides, return_hydra_config=True)
    HydraConfig.instance().set_config(cfg)
    return cfg


def _run(args: list[str], cwd: Path, timeout: int = 300) -> subprocess.CompletedProcess:
    exe = BIN / args[0]
    if not exe.exists():
        pytest.fail(f"console script {args[0]} is not installed; run `pip install -e .`")
    env = {**os.environ, "WANDB_MODE": "disabled", "HYDRA_FULL_ERROR": "1", "OMP_NUM_THREADS": "1"}
    return subprocess.run([str(exe), *args[1:]], cwd=cwd, env=env, capture_output=True, text=True,
                          timeout=timeout, check=False)


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Tiny FOVs and their pre-processing cache, made once (parallel jobs would race to make them)."""
    from hydra.utils import instantiate

    root = tmp_path_factory.mktemp("sweep_data")
    cfg = _compose("train", [*TINY, f"paths.data_dir={root}"])
    instantiate(cfg.data).prepare_data()
    return root


# -- configs -------------------------------------------------------------------------------------


@pytest.mark.parametrize("experiment", PAPER)
def test_paper_experiments_compose_and_name_their_data(experiment: str) -> None:
    cfg = _compose("train", [f"experiment={experiment}"])
    dataset = int(experiment[7])
    standin = experiment.endswith("_standin")
    model = experiment.split("_")[-1] if experiment.endswith(("unet", "unetpp")) else "dense_up"
    data = f"d{dataset}_standin" if standin else f"d{dataset}"
    assert cfg.task_name == f"paper_{data}_{model}" and list(cfg.tags) == ["paper", data, model]
    assert cfg.data._target_.endswith("standin" if standin else "annotated")
    assert cfg.data.split == "loo" and cfg.test_ckpt == "last"
    assert cfg.model.scheduler is None and cfg.callbacks.early_stopping is None
    assert cfg.callbacks.model_checkpoint.monitor == "val/astra_f1"
    if model == "dense_up":
        assert cfg.model.net._target_ == "astro3s.models.DenseUp"
        assert cfg.callbacks.freeze_then_finetune.lr_factor == 0.05
    else:
        assert cfg.callbacks.freeze_then_finetune is None and cfg.model.optimizer.lr == 1e-4
    # data.fold=range(N) covers every annotated FOV
    zips = sorted(Path(cfg.data.annotations).glob("*.zip"))
    assert len(zips) == N_FOVS[dataset]
    assert str(cfg.hydra.sweep.dir).startswith(f"{cfg.paths.log_dir}/paper_{data}_{model}/multiruns/")


def test_a_stand_in_override_relabels_a_paper_run() -> None:
    cfg = _compose("train", ["experiment=paper_d1_unet", "data=d1_standin"])
    assert cfg.task_name == "paper_d1_standin_unet" and "d1_standin" in list(cfg.tags)
    assert cfg.data._target_.endswith("standin")


@pytest.mark.parametrize("search, config_name, overrides", [
    ("default_optuna", "train", []),
    ("default_optuna", "train", ["experiment=paper_d1_standin"]),
    ("unet_optuna", "train", ["model=unet"]),
    ("unet_optuna", "train", ["model=unetpp"]),
    ("preprocess_optuna", "tune_preprocess", ["data=d1_standin"]),
])
def test_search_spaces_name_existing_keys(search: str, config_name: str, overrides: list[str]) -> None:
    cfg = _compose(config_name, [f"hparams_search={search}", *overrides])
    sweeper = cfg.hydra.sweeper
    assert sweeper._target_.endswith("OptunaSweeper") and sweeper.direction == "maximize"
    assert sweeper.sampler._target_ == "optuna.samplers.TPESampler" and 0 < sweeper.max_failure_rate < 1
    assert cfg.optimized_metric == ("mean_f1" if config_name == "tune_preprocess" else "val/astra_f1")
    for key in sweeper.params:  # every searched key exists in the composed config
        assert OmegaConf.select(cfg, key, default="missing") != "missing", key
    if search != "preprocess_optuna":
        from astro3s.data.augment import AugmentParams

        augment = {k: v for k, v in cfg.data.augment.items() if k != "enabled"}
        assert AugmentParams(**augment).elastic_alpha == 1.5


def test_submitit_launcher_builds_for_a_paper_multirun() -> None:
    pytest.importorskip("hydra_plugins.hydra_submitit_launcher")
    from hydra.utils import instantiate

    cfg = _compose("train", ["hydra/launcher=submitit_slurm", "experiment=paper_d1_standin",
                             "hydra.launcher.partition=gpu", "trainer=gpu"])
    launcher = instantiate(cfg.hydra.launcher)
    assert type(launcher).__name__ == "SlurmLauncher"
    assert launcher.params["partition"] == "gpu" and launcher.params["gpus_per_node"] == 1
    assert "paper_d1_standin_dense_up/multiruns" in launcher.params["submitit_folder"]


# -- runs ------------------------------------------------------------------------------------------


def test_optuna_sweep_of_two_trials(tmp_path: Path, data_dir: Path) -> None:
    pytest.importorskip("hydra_plugins.hydra_optuna_sweeper")
    sweep = tmp_path / "sweep"
    result = _run(["astro3s-train", "hparams_search=unet_optuna", *TINY, *TINY_UNET,
                   "hydra.sweeper.n_trials=2", f"paths.data_dir={data_dir}", f"hydra.sweep.dir={sweep}"],
                  tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    best = yaml.safe_load((sweep / "optimization_results.yaml").read_text())
    assert set(best["best_params"]) >= {"model.optimizer.lr", "model.bce_weight", "data.augment.elastic_alpha"}
    assert "model.net.base_channels" not in best["best_params"]  # fixed on the command line
    values = []
    for trial in ("0", "1"):
        scores = json.loads((sweep / trial / "scores.json").read_text())
        assert scores["optimized_metric"] == "val/astra_f1" and "test/astra_f1" in scores["metrics"]
        values.append(scores["optimized_value"])
    assert best["best_value"] == pytest.approx(max(values))


def test_joblib_multirun_of_two_folds_then_the_fold_table(tmp_path: Path, data_dir: Path) -> None:
    pytest.importorskip("hydra_plugins.hydra_joblib_launcher")
    sweep = tmp_path / "folds"
    result = _run(["astro3s-train", "-m", "hydra/launcher=joblib", "hydra.launcher.n_jobs=2", "data.fold=0,1",
                   *TINY, *TINY_UNET, "test_ckpt=last", f"paths.data_dir={data_dir}",
                   f"hydra.sweep.dir={sweep}"], tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    folds = sorted(json.loads((sweep / n / "scores.json").read_text())["fold"] for n in ("0", "1"))
    assert folds == [0, 1]
    scores = json.loads((sweep / "1" / "scores.json").read_text())
    assert scores["checkpoint"] is None and scores["fovs"]["test"] == ["tiny_s0001"]
    assert scores["model"] == "unet" and scores["movies"] == "simulated" and "tiny_s0001" in scores["per_fov"]
    out = tmp_path / "table" / "folds.md"
    table = subprocess.run([sys.executable, str(REPO / "experiments" / "aggregate_folds.py"), str(sweep),
                            "--out", str(out)], capture_output=True, text=True, timeout=120,
                           check=False)
    assert table.returncode == 0, table.stderr
    text = out.read_text()
    assert "| 0 | tiny_s0000 |" in text and "| 1 | tiny_s0001 |" in text and "**simulated**" in text


def test_preprocessing_sweep_of_two_trials(tmp_path: Path, data_dir: Path) -> None:
    pytest.importorskip("hydra_plugins.hydra_optuna_sweeper")
    sweep = tmp_path / "pre"
    result = _run(["astro3s-tune-preprocess", "hparams_search=preprocess_optuna", "hydra.sweeper.n_trials=2",
                   "data.preset=tiny", "data.n_fovs=2", "extras=quiet", f"paths.data_dir={data_dir}",
                   f"hydra.sweep.dir={sweep}"], tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    best = yaml.safe_load((sweep / "optimization_results.yaml").read_text())
    assert {"data.preprocess.th1", "data.preprocess.activity_percentile"} <= set(best["best_params"])
    trials = [json.loads((sweep / n / "scores.json").read_text()) for n in ("0", "1")]
    assert best["best_value"] == pytest.approx(max(t["metrics"]["mean_f1"] for t in trials))
    for trial in trials:
        assert sorted(trial["per_fov"]) == ["tiny_s0000", "tiny_s0001"]
        assert trial["per_fov"]["tiny_s0000"]["n_cells"] > 0
        assert 0 <= trial["metrics"]["candidate_f1"] <= 1


def test_tune_preprocess_scores_and_errors(tmp_path: Path, data_dir: Path, capsys) -> None:
    from astro3s.cli.tune_preprocess import tune_preprocess_task

    cfg = _compose("tune_preprocess", ["data.preset=tiny", "data.n_fovs=2", "extras=quiet", "fovs=train",
                                       "data.fold=1", f"paths.data_dir={data_dir}"])
    with open_dict(cfg):
        cfg.paths.output_dir = str(tmp_path)
    result = tune_preprocess_task(cfg)
    assert result["fovs"] == ["tiny_s0000"]  # fold 1 holds tiny_s0001 out
    counts = result["per_fov"]["tiny_s0000"]
    assert counts["matched"] <= min(counts["n_cells"], counts["n_candidates"])
    assert json.loads((tmp_path / "scores.json").read_text())["metrics"] == pytest.approx(result["metrics"])
    cfg = _compose("tune_preprocess", ["data.preset=tiny", "data.n_fovs=2", "extras=quiet",
                                       "data.preprocess.threshold_start=0.3", f"paths.data_dir={data_dir}"])
    with pytest.raises(SystemExit) as info:
        tune_preprocess_task(cfg)
    assert info.value.code == 2 and "threshold_floor must be <= threshold_start" in capsys.readouterr().err


@pytest.mark.slow
def test_paper_d1_on_two_stand_ins_fast_dev_run(tmp_path: Path) -> None:
    result = _run(["astro3s-train", "experiment=paper_d1", "data=d1_standin", "data.n_fovs=2", "data.fold=1",
                   "data.batch_size=4", "model.net.depths=[1,1,1]", "model.net.width=0.125",
                   "+trainer.fast_dev_run=true", "extras=quiet", "callbacks.rich_progress_bar=null",
                   f"paths.root_dir={tmp_path}"], tmp_path, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    runs = list((tmp_path / "logs" / "paper_d1_standin_dense_up" / "runs").iterdir())
    assert len(runs) == 1
    scores = json.loads((runs[0] / "scores.json").read_text())
    assert scores["standin"] and scores["movies"] == "stand-in" and scores["data"] == "d1_standin"
    (test_fov,) = scores["fovs"]["test"]  # fold 1: the stand-in of the second D1 annotation
    assert "RoiSet_SMALL_002" in test_fov and scores["dataset"] == "D1"
    assert "test/detection_f1" in scores["metrics"]


def test_a_search_that_does_not_fit_the_model_is_refused_up_front(tmp_path) -> None:
    import os
    import subprocess
    import sys
    from pathlib import Path

    from astro3s.cli.train import search_params_missing

    assert search_params_missing(["hparams_search=default_optuna", "model=unet"]) == ["model.net.width"]
    assert search_params_missing(["hparams_search=default_optuna", "experiment=paper_d1_unet"]) == ["model.net.width"]
    assert search_params_missing(["hparams_search=unet_optuna", "model=unet"]) == []
    assert search_params_missing(["hparams_search=default_optuna"]) == []
    assert search_params_missing(["hparams_search=default_optuna", "model=unett"]) == []  # Hydra reports that
    exe = Path(sys.executable).parent / "astro3s-train"
    result = subprocess.run([str(exe), "hparams_search=default_optuna", "model=unet"], cwd=tmp_path,
                            env={**os.environ, "WANDB_MODE": "disabled"}, capture_output=True, text=True,
                            timeout=300)
    assert result.returncode == 2
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and "hparams_search=unet_optuna" in lines[0] and "model.net.width" in lines[0]
