"""astro3s.cli.train end to end through Hydra compose, and the FreezeThenFinetune callback."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from _hydra import compose_train
from hydra.errors import ConfigCompositionException
from omegaconf import DictConfig

from astro3s.cli._config import CONFIG_DIR

TINY_DATA = ["data=synthetic", "data.preset=tiny", "data.n_fovs=2", "data.batch_size=4",
             "extras.print_config=false", "callbacks.rich_progress_bar=null"]
TINY_NETS = {
    "unet": ["model.net.base_channels=8", "model.net.depth=3"],
    "unetpp": ["model.net.base_channels=8", "model.net.depth=3"],
    "dense_up_small": ["model.net.depths=[1,1,1]", "model.net.width=0.125"],
}


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Shared by the runs: the synthetic FOVs and the pre-processing cache are made once."""
    return tmp_path_factory.mktemp("train_data")


def _compose(overrides: list[str], tmp_path: Path, data_dir: Path) -> DictConfig:
    return compose_train(overrides, tmp_path, data_dir=data_dir)


@pytest.mark.parametrize("model", sorted(TINY_NETS))
def test_fast_dev_run_each_model(model: str, tmp_path: Path, data_dir: Path) -> None:
    from astro3s.cli.train import train_task
    from astro3s.preprocess import PreprocessParams, load_params

    cfg = _compose([*TINY_DATA, f"model={model}", *TINY_NETS[model], "debug=fast_dev_run"], tmp_path, data_dir)
    metrics = train_task(cfg)
    assert "train/loss" in metrics and "test/loss" in metrics and "test/dice_soma" in metrics
    assert all(torch.isfinite(torch.tensor(v)) for v in metrics.values())
    params = load_params(tmp_path / "checkpoints" / "preprocess.yaml")
    assert params == PreprocessParams(**{k: v for k, v in cfg.data.preprocess.items() if not k.startswith("_")})
    assert (tmp_path / "scores.json").is_file()
    assert (data_dir / "synthetic" / "tiny" / "tiny_s0001").is_dir()


def test_one_epoch_saves_and_tests_the_best_checkpoint(tmp_path: Path, data_dir: Path) -> None:
    import json

    from astro3s.cli.train import train_task

    cfg = _compose([*TINY_DATA, "model=unet", *TINY_NETS["unet"], "trainer.max_epochs=1"], tmp_path, data_dir)
    metrics = train_task(cfg)
    saved = json.loads((tmp_path / "scores.json").read_text())
    assert Path(saved["checkpoint"]).parent == tmp_path / "checkpoints"
    assert saved["metrics"]["test/loss"] == pytest.approx(metrics["test/loss"])
    # what produced the scores, and the held-out FOV's ASTRA scores (AstraScore callback)
    assert (saved["model"], saved["data"], saved["movies"], saved["split"], saved["fold"]) == \
        ("unet", "synthetic", "simulated", "loo", 0)
    assert saved["fovs"]["test"] == ["tiny_s0000"] and saved["seed"] == cfg.seed
    assert "model=unet" in saved["overrides"] and saved["test_ckpt"] == "best"
    assert set(saved["per_fov"]) == {"tiny_s0000"} and "soma_recall" in saved["per_fov"]["tiny_s0000"]
    assert saved["metrics"]["test/detection_f1"] == pytest.approx(saved["astra"]["detection_f1"])
    hparams = (tmp_path / "csv" / "version_0" / "hparams.yaml").read_text()
    assert "preprocess" in hparams and "data_summary" in hparams


def test_last_checkpoint_holds_the_last_epoch(tmp_path: Path, data_dir: Path) -> None:
    # the best checkpoint stops at epoch 0 (its metric, the epoch, is minimised); last.ckpt must still
    # be rewritten every epoch (Lightning >= 2.4 refreshes a monitored callback's last.ckpt only with a new best)
    from astro3s.cli.train import train_task

    cfg = _compose([*TINY_DATA, "model=unet", *TINY_NETS["unet"], "trainer.max_epochs=2", "test=false",
                    "callbacks.model_checkpoint.monitor=epoch", "callbacks.model_checkpoint.mode=min",
                    "callbacks.early_stopping=null"], tmp_path, data_dir)
    train_task(cfg)
    folder = tmp_path / "checkpoints"
    assert sorted(p.name for p in folder.glob("*.ckpt")) == ["epoch_000.ckpt", "last.ckpt"]
    assert torch.load(folder / "last.ckpt", map_location="cpu", weights_only=False)["epoch"] == 1


def test_optimized_metric_and_test_ckpt_are_checked(tmp_path: Path, data_dir: Path, capsys) -> None:
    from astro3s.cli.train import train_task

    cfg = _compose([*TINY_DATA, "model=unet", *TINY_NETS["unet"], "test_ckpt=first"], tmp_path, data_dir)
    with pytest.raises(SystemExit) as info:
        train_task(cfg)
    assert info.value.code == 2 and "test_ckpt must be one of best, last" in capsys.readouterr().err
    # no training: the test scores of the initial weights, and a metric that was never logged
    cfg = _compose([*TINY_DATA, "model=unet", *TINY_NETS["unet"], "train=false", "logger=[]",
                    "optimized_metric=val/astra_f1"], tmp_path, data_dir)
    with pytest.raises(SystemExit) as info:
        train_task(cfg)
    err = capsys.readouterr().err
    assert info.value.code == 2 and "optimized_metric='val/astra_f1' was not logged" in err and "test/loss" in err
    assert (tmp_path / "scores.json").is_file()  # written before the check


def test_ddp_sim_two_processes_one_epoch(tmp_path: Path, data_dir: Path) -> None:
    from astro3s.cli.train import train_task

    cfg = _compose([*TINY_DATA, "model=unet", *TINY_NETS["unet"], "trainer=ddp_sim", "trainer.max_epochs=1"],
                   tmp_path, data_dir)
    metrics = train_task(cfg)
    assert "test/loss" in metrics
    assert any((tmp_path / "checkpoints").glob("epoch_*.ckpt"))


def test_a_misspelled_override_is_a_clear_error(tmp_path: Path, data_dir: Path, capsys) -> None:
    from astro3s.cli.train import train_task

    with pytest.raises(ConfigCompositionException, match="n_fovz"):
        _compose([*TINY_DATA, "data.n_fovz=2"], tmp_path, data_dir)
    cfg = _compose([*TINY_DATA, "data.split=lo"], tmp_path, data_dir)
    with pytest.raises(SystemExit) as info:
        train_task(cfg)
    assert info.value.code == 2
    assert "split must be one of" in capsys.readouterr().err


@pytest.mark.parametrize("dataset", ["d1", "d2", "d3", "d4"])
def test_real_data_without_movies_says_where_to_put_them(dataset: str, tmp_path: Path, capsys) -> None:
    from astro3s.cli.train import train_task

    cfg = _compose([f"data={dataset}", "extras.print_config=false"], tmp_path, tmp_path / "data")
    with pytest.raises(SystemExit) as info:
        train_task(cfg)
    err = capsys.readouterr().err
    assert info.value.code == 2
    assert str(tmp_path / "data" / dataset.upper()) in err and f"data={dataset}_standin" in err


@pytest.mark.parametrize("dataset, shape, preset", [
    ("d2", [512, 512], "d2_like"), ("d3", [430, 430], "d3_like"), ("d4", [512, 512], "d4_like")])
def test_standin_configs_of_every_dataset_compose(dataset, shape, preset, tmp_path: Path,
                                                   data_dir: Path) -> None:
    from omegaconf import OmegaConf

    from astro3s.resources import annotations_dir

    cfg = _compose([f"data={dataset}_standin"], tmp_path, data_dir)
    assert list(cfg.data.shape) == shape and cfg.data.preset == preset
    fitted = OmegaConf.load(Path(CONFIG_DIR) / "preprocess" / f"{dataset}_standin.yaml")
    assert list(cfg.data.preprocess.soma_area_range) == list(fitted.soma_area_range)
    zips = sorted(Path(cfg.data.annotations).glob("*.zip"))
    assert zips and Path(cfg.data.annotations) == annotations_dir() / "consensus" / dataset.upper()


def test_d1_standin_and_experiment_configs_compose(tmp_path: Path, data_dir: Path) -> None:
    cfg = _compose(["experiment=astra_d1_standin"], tmp_path, data_dir)
    assert cfg.data._target_.endswith("standin") and list(cfg.data.shape) == [256, 256]
    assert cfg.data.preprocess.soma_area_range[0] == 126.0  # conf/preprocess/d1_standin.yaml
    assert cfg.callbacks.freeze_then_finetune.lr_factor == 0.05
    cfg = _compose(["experiment=example"], tmp_path, data_dir)
    assert cfg.model.net._target_ == "astro3s.models.UNet" and cfg.data.n_fovs == 4


def test_cldice_experiment_adds_the_term_to_the_default_model_recipe(tmp_path: Path, data_dir: Path) -> None:
    from hydra.utils import instantiate

    cfg = _compose(["experiment=default_model_cldice", "model.init_weights=null"], tmp_path, data_dir)
    assert cfg.trainer.max_epochs == 6 and cfg.model.optimizer.lr == 3.0e-4  # default_model_finetune's
    assert list(cfg.data.augment.scale_range) == [0.5, 2.0]
    module = instantiate(cfg.model)
    assert module.loss.cldice_weight == 0.5 and module.loss.cldice_iterations == 6
    logits = torch.randn(2, 3, 32, 32)
    target = torch.randint(0, 3, (2, 32, 32))
    assert "cldice_processes" in module.loss.terms(logits, target)
    control = instantiate(_compose(["experiment=default_model_cldice", "model.init_weights=null",
                                    "model.cldice_processes_weight=0"], tmp_path, data_dir).model)
    assert "cldice_processes" not in control.loss.terms(logits, target)


def test_freeze_then_finetune_freezes_then_scales_the_learning_rate() -> None:
    import pytorch_lightning as pl
    from torch.utils.data import DataLoader

    from astro3s.callbacks import FreezeThenFinetune
    from astro3s.models import DenseUp, SegmentationModule

    net = DenseUp(depths=(1, 1, 1), width=0.125)
    module = SegmentationModule(net, optimizer={"_target_": "torch.optim.Adam", "lr": 1e-3},
                                image_log_every_n_epochs=0)
    inception = {id(p) for p in net.inception_parameters()}
    seen: list[tuple[int, bool, bool, float]] = []

    class Probe(pl.Callback):
        def on_train_epoch_end(self, trainer, pl_module) -> None:
            params = list(pl_module.parameters())
            seen.append((trainer.current_epoch,
                         any(p.requires_grad for p in params if id(p) in inception),
                         all(p.requires_grad for p in params if id(p) not in inception),
                         trainer.optimizers[0].param_groups[0]["lr"]))

    generator = torch.Generator().manual_seed(0)
    samples = [{"image": torch.randn(1, 32, 32, generator=generator),
                "target": torch.randint(0, 3, (32, 32), generator=generator)} for _ in range(4)]
    before = [p.detach().clone() for p in net.inception_parameters()]
    trainer = pl.Trainer(max_epochs=2, accelerator="cpu", logger=False, enable_checkpointing=False,
                         enable_progress_bar=False, enable_model_summary=False, limit_val_batches=0,
                         callbacks=[FreezeThenFinetune(unfreeze_epoch=1, lr_factor=0.05), Probe()])
    trainer.fit(module, DataLoader(samples, batch_size=2))
    assert seen[0][:3] == (0, False, True) and seen[0][3] == pytest.approx(1e-3)
    assert seen[1][:3] == (1, True, True) and seen[1][3] == pytest.approx(5e-5)
    # frozen in epoch 0, trained in epoch 1: the Inception weights moved only then
    assert any(not torch.equal(a, b) for a, b in zip(before, net.inception_parameters()))
