"""The CorrelationAnalysis callback: config composition, options, and runs inside training."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from _hydra import compose_train
from omegaconf import DictConfig

from astro3s.errors import ConfigError

TINY_TRAIN = ["data=synthetic", "data.preset=tiny", "data.n_fovs=2", "data.batch_size=4",
              "extras.print_config=false", "model=unet", "model.net.base_channels=8", "model.net.depth=3",
              "trainer.max_epochs=1"]
METRICS = ("cc_threshold", "cc_n_domains", "cc_domain_area", "cc_domain_iou")


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Shared by the runs: the synthetic FOVs and the pre-processing cache are made once."""
    return tmp_path_factory.mktemp("cc_callback_data")


def _compose(overrides: list[str], tmp_path: Path, data_dir: Path) -> DictConfig:
    return compose_train(overrides, tmp_path, data_dir=data_dir)


@pytest.mark.parametrize("group", ["correlation_analysis", "[default,correlation_analysis]"])
def test_config_composes_with_train(group: str, tmp_path: Path, data_dir: Path) -> None:
    from hydra.utils import instantiate

    from astro3s.callbacks import CorrelationAnalysis
    from astro3s.correlation import CorrelationParams

    cfg = _compose([f"callbacks={group}", "data.normalize=standardize"], tmp_path, data_dir)
    node = cfg.callbacks.correlation_analysis
    assert node._target_ == "astro3s.callbacks.CorrelationAnalysis"
    assert ("astra_score" in cfg.callbacks) == group.startswith("[default")
    callback = instantiate(node)
    assert isinstance(callback, CorrelationAnalysis)
    assert (callback.every_n_epochs, callback.max_fovs, callback.cells) == (5, 2, "ground_truth")
    assert callback.normalize == "standardize" and callback.correlation == CorrelationParams()
    # CorrelationParams overrides pass through, lists become tuples
    cfg = _compose([f"callbacks={group}", "+callbacks.correlation_analysis.correlation.radius=40",
                    "+callbacks.correlation_analysis.correlation.false_rate_band=[0.01,0.05]"], tmp_path, data_dir)
    callback = instantiate(cfg.callbacks.correlation_analysis)
    assert callback.correlation.radius == 40 and callback.correlation.false_rate_band == (0.01, 0.05)


def test_bad_options_are_config_errors() -> None:
    from astro3s.callbacks import CorrelationAnalysis

    with pytest.raises(ConfigError, match="cells"):
        CorrelationAnalysis(cells="annotation")
    with pytest.raises(ConfigError, match="every_n_epochs"):
        CorrelationAnalysis(every_n_epochs=0)
    with pytest.raises(ConfigError, match="max_fovs"):
        CorrelationAnalysis(max_fovs=0)
    with pytest.raises(ConfigError, match="radus"):
        CorrelationAnalysis(correlation={"radus": 3})
    with pytest.raises(ConfigError, match="radius"):
        CorrelationAnalysis(correlation={"radius": -1})


def _image_tags(tensorboard_dir: Path) -> set[str]:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    tags: set[str] = set()
    for events in tensorboard_dir.rglob("events.out.tfevents.*"):  # loop over event files
        accumulator = EventAccumulator(str(events), size_guidance={"images": 0})
        accumulator.Reload()
        tags |= set(accumulator.Tags().get("images", []))
    return tags


def test_runs_in_training_logs_metrics_and_figures(tmp_path: Path, data_dir: Path) -> None:
    pytest.importorskip("tensorboard")
    from astro3s.cli.train import train_task

    cfg = _compose([*TINY_TRAIN, "callbacks=correlation_analysis", "callbacks.correlation_analysis.every_n_epochs=1",
                    "logger=[csv,tensorboard]"], tmp_path, data_dir)
    metrics = train_task(cfg)
    for stage in ("val", "test"):
        for name in METRICS:
            assert np.isfinite(metrics[f"{stage}/{name}"]), (stage, name, metrics)
        assert 0.6 <= metrics[f"{stage}/cc_threshold"] <= 0.95
        assert metrics[f"{stage}/cc_n_domains"] >= 1 and metrics[f"{stage}/cc_domain_area"] > 0
        # ground-truth cells: each domain holds at least its own soma and processes
        assert 0 < metrics[f"{stage}/cc_domain_iou"] <= 1
    # one figure per stage and FOV (loo split of 2 FOVs: val = test = 1 FOV), under the first logger's dir
    figures = sorted(p.name for p in (tmp_path / "csv" / "version_0" / "correlation").glob("*.png"))
    assert figures == ["test_epoch001_tiny_s0000.png", "val_epoch000_tiny_s0000.png"], figures
    assert {"val/cc_domains/tiny_s0000", "test/cc_domains/tiny_s0000"} <= _image_tags(tmp_path / "tensorboard")
    # the CSV logger has the metrics too
    csv = (tmp_path / "csv" / "version_0" / "metrics.csv").read_text()
    assert "val/cc_domain_iou" in csv and "test/cc_threshold" in csv


def test_every_n_epochs_and_max_fovs(tmp_path: Path, data_dir: Path) -> None:
    from astro3s.callbacks import CorrelationAnalysis
    from astro3s.cli.train import train_task

    cfg = _compose([*TINY_TRAIN, "callbacks=correlation_analysis", "callbacks.correlation_analysis.every_n_epochs=2",
                    "trainer.max_epochs=2", "data.n_fovs=3", "data.split=explicit", "data.train=[tiny_s0000]",
                    "data.val=[tiny_s0001,tiny_s0002]", "data.test=[tiny_s0001,tiny_s0002]",
                    "callbacks.correlation_analysis.max_fovs=1", "test=false", "logger=csv"], tmp_path, data_dir)
    seen: list[int] = []
    original = CorrelationAnalysis._run

    def spy(self, trainer, pl_module, stage):
        seen.append(int(trainer.current_epoch))
        return original(self, trainer, pl_module, stage)

    CorrelationAnalysis._run = spy
    try:
        metrics = train_task(cfg)
    finally:
        CorrelationAnalysis._run = original
    assert seen == [1]  # epochs 0 and 1: analysed after the 2nd only
    assert "val/cc_threshold" in metrics
    figures = sorted(p.name for p in (tmp_path / "csv" / "version_0" / "correlation").glob("*.png"))
    assert figures == ["val_epoch001_tiny_s0001.png"]


def test_prediction_cells(tmp_path: Path, data_dir: Path) -> None:
    try:
        from astro3s.inference import segment_preprocessed  # noqa: F401
    except ImportError:
        pytest.skip("astro3s.inference.segment_preprocessed is not available yet")
    from hydra.utils import instantiate

    from astro3s.callbacks import CorrelationAnalysis

    cfg = _compose(TINY_TRAIN, tmp_path, data_dir)
    datamodule = instantiate(cfg.data)
    datamodule.setup()
    model = instantiate(cfg.model)
    fovs = datamodule.evaluation_fovs("val")
    specs = {spec.name: spec for spec in datamodule.fov_specs}
    callback = CorrelationAnalysis(cells="prediction", normalize=cfg.data.normalize, max_fovs=1)
    results = callback.analyse(model, fovs, specs=specs, figure_dir=tmp_path / "figs", tag="val_")
    assert list(results) == [fovs[0][0]]
    result = results[fovs[0][0]]
    assert result["n_domains"] == result["n_cells"] >= 0
    assert Path(result["figure"]).is_file() and model.training  # the model's mode is restored
    # ground truth through the same path: the cells are the annotation's
    gt = CorrelationAnalysis(max_fovs=1).analyse(None, fovs, specs=specs)[fovs[0][0]]
    assert gt["n_cells"] == len(np.unique(fovs[0][2])) - 1 and gt["figure"] is None
    assert gt["domain_iou"] is not None and gt["domain_iou"] > 0
