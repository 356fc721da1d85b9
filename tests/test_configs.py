"""Config composition of every entry point and of the shared config groups.

Composes with Hydra's compose API (as the entry points do), sets HydraConfig so
that `${hydra:...}` interpolations resolve, and instantiates what the groups
describe: trainers, loggers, callbacks and launchers.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from _hydra import compose_config
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

from astro3s.cli._config import CONFIG_DIR

ENTRY_CONFIGS = ["simulate", "preprocess", "eval", "export"]
GROUPS = {
    group: sorted(p.stem for p in (Path(CONFIG_DIR) / group).glob("*.yaml"))
    for group in ["trainer", "logger", "callbacks", "debug", "extras", "paths"]
}


def _compose(config_name: str, overrides: list[str], tmp_path: Path) -> DictConfig:
    return compose_config(config_name, overrides, output_dir=tmp_path, log_dir=tmp_path / "logs")


@pytest.mark.parametrize("config_name", ENTRY_CONFIGS)
def test_entry_config_composes_and_resolves(config_name: str, tmp_path: Path) -> None:
    cfg = _compose(config_name, [], tmp_path)
    assert cfg.task_name == config_name
    # every value outside Hydra's own node resolves (no missing interpolation);
    # hydra.* keys such as ${hydra.job.num} only exist inside a running job
    OmegaConf.to_container(OmegaConf.masked_copy(cfg, [k for k in cfg if k != "hydra"]), resolve=True)


def test_every_group_option_is_listed() -> None:
    assert {"cpu", "gpu", "ddp", "ddp_sim"} <= set(GROUPS["trainer"])
    assert {"csv", "tensorboard", "wandb", "many_loggers"} <= set(GROUPS["logger"])
    assert {"fast_dev_run", "overfit", "profiler"} <= set(GROUPS["debug"])
    launchers = {p.stem for p in (Path(CONFIG_DIR) / "hydra" / "launcher").glob("*.yaml")}
    assert {"joblib", "submitit_slurm"} <= launchers


@pytest.mark.parametrize("trainer", ["cpu", "gpu", "ddp", "ddp_sim", "default"])
def test_trainer_configs_compose(trainer: str, tmp_path: Path) -> None:
    cfg = _compose("simulate", [f"+trainer={trainer}"], tmp_path)
    assert cfg.trainer._target_ == "pytorch_lightning.Trainer"
    if trainer in ("cpu", "ddp_sim", "default"):
        obj = instantiate(cfg.trainer)
        assert obj.max_epochs == cfg.trainer.max_epochs


@pytest.mark.parametrize("debug", ["fast_dev_run", "overfit", "profiler"])
def test_debug_configs_compose(debug: str, tmp_path: Path) -> None:
    cfg = _compose("simulate", ["+trainer=cpu", f"+debug={debug}"], tmp_path)
    assert cfg.task_name == "debug"
    assert cfg.trainer.max_epochs >= 1


class _TinyModule:
    """A two-parameter LightningModule used to run the logger/callback configs."""

    @staticmethod
    def build():
        import pytorch_lightning as pl

        class Tiny(pl.LightningModule):
            def __init__(self) -> None:
                super().__init__()
                self.layer = torch.nn.Linear(2, 1)

            def training_step(self, batch, batch_idx):
                loss = self.layer(batch[0]).pow(2).mean()
                self.log("train/loss", loss)
                return loss

            def validation_step(self, batch, batch_idx):
                self.log("val/loss", self.layer(batch[0]).pow(2).mean())

            def configure_optimizers(self):
                return torch.optim.SGD(self.parameters(), lr=0.1)

            def _loader(self):
                data = torch.utils.data.TensorDataset(torch.randn(8, 2))
                return torch.utils.data.DataLoader(data, batch_size=4)

            def train_dataloader(self):
                return self._loader()

            def val_dataloader(self):
                return self._loader()

        return Tiny()


def test_loggers_and_callbacks_run_fast_dev_run(tmp_path: Path, monkeypatch) -> None:
    pytest.importorskip("tensorboard")
    monkeypatch.setenv("WANDB_MODE", "disabled")
    cfg = _compose(
        "simulate",
        ["+trainer=cpu", "+logger=many_loggers", "+callbacks=default", "+debug=fast_dev_run"],
        tmp_path,
    )
    assert cfg.logger.wandb.mode == "disabled"
    loggers = [instantiate(c) for c in cfg.logger.values()]
    callbacks = [instantiate(c) for c in cfg.callbacks.values()]
    assert len(loggers) == 3 and len(callbacks) == 7
    assert any(type(c).__name__ == "AstraScore" for c in callbacks)  # no data module here: it does nothing
    trainer = instantiate(cfg.trainer, logger=loggers, callbacks=callbacks, enable_progress_bar=True)
    trainer.fit(_TinyModule.build())
    assert trainer.state.finished


def test_wandb_defaults_to_offline(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.delenv("WANDB_MODE", raising=False)
    cfg = _compose("simulate", ["+logger=wandb"], tmp_path)
    assert cfg.logger.wandb.mode == "offline"


@pytest.mark.parametrize("launcher", ["joblib", "submitit_slurm"])
def test_launcher_configs_compose(launcher: str, tmp_path: Path) -> None:
    cfg = _compose("simulate", [f"hydra/launcher={launcher}"], tmp_path)
    assert cfg.hydra.launcher._target_.startswith("hydra_plugins.")


def test_config_typo_is_reported_clearly(tmp_path: Path) -> None:
    from hydra.errors import ConfigCompositionException

    with pytest.raises(ConfigCompositionException, match="trainerr|Could not"):
        _compose("simulate", ["trainerr.max_epochs=3"], tmp_path)


def test_infer_tiling_config_mirrors_the_one_definition_of_its_defaults() -> None:
    import dataclasses

    from astro3s.inference.network import TilingParams

    cfg = OmegaConf.load(Path(CONFIG_DIR) / "infer.yaml")
    assert dict(cfg.tiling) == dataclasses.asdict(TilingParams())


def test_infer_rules_config_mirrors_the_one_definition_of_their_defaults() -> None:
    import dataclasses

    from astro3s.inference.rules import CellRules

    cfg = OmegaConf.load(Path(CONFIG_DIR) / "infer.yaml")
    assert dict(cfg.rules) == dataclasses.asdict(CellRules())
    assert list(cfg.rules) == [spec.name for spec in dataclasses.fields(CellRules)]


def test_infer_config_lists_every_inference_option_with_its_default() -> None:
    # astro3s-infer's options are the fields of InferenceOptions; conf/infer.yaml documents each one
    # and must not drift from the one definition of its default (an option added to the dataclass
    # but not to the config could not be set from the command line as `name=value`)
    import dataclasses

    from astro3s.inference import InferenceOptions

    cfg = OmegaConf.load(Path(CONFIG_DIR) / "infer.yaml")
    not_flat = {"preprocess", "combine", "correlation", "events", "tiling", "rules", "model_name"}
    for field in dataclasses.fields(InferenceOptions):
        if field.name in not_flat:
            continue
        assert field.name in cfg, f"conf/infer.yaml does not list {field.name}"
        assert cfg[field.name] == field.default, field.name
