"""Networks, loss, LightningModule, Hydra model configs and checkpoint loading."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from hydra.utils import instantiate
from torch.utils.data import DataLoader, Dataset

from astro3s.cli._config import CONFIG_DIR
from astro3s.errors import CheckpointError, ConfigError
from astro3s.models import (
    CLASS_NAMES,
    AstraLoss,
    DenseUp,
    SegmentationModule,
    UNet,
    UNetPlusPlus,
    build_network,
    load_encoder_weights,
    load_model,
    render_panels,
)

MODEL_CONFIGS = sorted(p.stem for p in (Path(CONFIG_DIR) / "model").glob("*.yaml"))
SMALL = {
    "dense_up": dict(depths=[1, 1, 1], width=0.125),
    "unet": dict(depth=3, base_channels=8),
    "unetpp": dict(depth=3, base_channels=8, deep_supervision=True),
}
#: overrides that make each config fast enough for a CPU fit in a test
FAST_NET = {
    "dense_up": ["net.depths=[1,1,1]", "net.width=0.125"],
    "dense_up_small": ["net.width=0.125"],
    "unet": ["net.depth=3", "net.base_channels=8"],
    "unetpp": ["net.depth=3", "net.base_channels=8"],
}


@pytest.fixture(autouse=True)
def _few_threads():
    threads = torch.get_num_threads()
    torch.set_num_threads(2)
    yield
    torch.set_num_threads(threads)


def blob_crops(n: int, *, size: int = 96, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Synthetic crops: a soma disc with four process lines.

    Returns ``(n, 1, size, size)`` float32 images and ``(n, size, size)`` int64 labels.
    """
    g = torch.Generator().manual_seed(seed)
    yy, xx = torch.meshgrid(torch.arange(size).float(), torch.arange(size).float(), indexing="ij")
    targets = torch.full((n, size, size), 2, dtype=torch.long)
    for i in range(n):
        cy, cx = (size / 2 + (torch.rand(2, generator=g) - 0.5) * size / 3).tolist()
        radius = 7 + 4 * torch.rand(1, generator=g).item()
        for k in range(4):
            angle = 2 * math.pi * (k / 4 + 0.2 * torch.rand(1, generator=g).item())
            dx, dy = math.cos(angle), math.sin(angle)
            along = (xx - cx) * dx + (yy - cy) * dy
            across = ((xx - cx) * dy - (yy - cy) * dx).abs()
            targets[i][(across <= 1.5) & (along > 0) & (along < radius + 25)] = 0
        targets[i][(xx - cx) ** 2 + (yy - cy) ** 2 <= radius**2] = 1
    image = torch.where(targets == 1, 1.0, torch.where(targets == 0, 0.6, 0.0))
    image = image + 0.1 * torch.randn(image.shape, generator=g)
    image = image - image.mean(dim=(1, 2), keepdim=True)
    return image[:, None].float(), targets


class BlobDataset(Dataset):
    def __init__(self, n: int = 4, size: int = 96) -> None:
        self.image, self.target = blob_crops(n, size=size)

    def __len__(self) -> int:
        return len(self.image)

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        return {"image": self.image[index], "target": self.target[index]}


def _compose_model(name: str, overrides: list[str] = ()) -> object:
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(Path(CONFIG_DIR) / "model"), version_base="1.3"):
        return compose(config_name=name, overrides=list(overrides))


def _dice(prediction: torch.Tensor, target: torch.Tensor, label: int) -> float:
    p, t = prediction == label, target == label
    return float(2 * (p & t).sum() / (p.sum() + t.sum()).clamp_min(1))


# -- networks -------------------------------------------------------------------------------


def test_class_order_is_defined_once() -> None:
    assert CLASS_NAMES == ("processes", "soma", "background")


@pytest.mark.parametrize("name", sorted(SMALL))
@pytest.mark.parametrize("size", [(96, 96), (100, 120)])
def test_forward_shape_any_size(name: str, size: tuple[int, int]) -> None:
    net = build_network(name, **SMALL[name]).eval()
    with torch.no_grad():
        logits = net(torch.randn(2, 1, *size))
        heads = net.forward_heads(torch.randn(1, 1, *size))
        proba = net.predict_proba(torch.randn(1, 1, *size))
    assert logits.shape == (2, 3, *size)
    assert logits.dtype == torch.float32
    assert all(h.shape == (1, 3, *size) for h in heads)
    assert len(heads) == (3 if name == "unetpp" else 1)
    torch.testing.assert_close(proba.sum(1), torch.ones(1, *size))


def test_dense_up_paper_size_and_structure() -> None:
    net = DenseUp()  # paper network: depths (10, 20, 10), width 1
    n_params = sum(p.numel() for p in net.parameters())
    n_encoder = sum(p.numel() for p in net.encoder_parameters())
    n_inception = sum(p.numel() for p in net.inception_parameters())
    # Inception-ResNet-v2 has ~55.8 M parameters, ~54 M of them in the three stages used
    assert 52e6 < n_inception < 56e6
    assert n_inception < n_encoder < n_params
    assert 90e6 < n_params < 105e6, n_params
    assert net.encoder.out_channels == (96, 192, 320, 1088, 1536)
    assert len(net.encoder.inception.repeat) == 10
    assert len(net.encoder.inception.repeat_1) == 20
    assert len(net.encoder.inception.repeat_2) == 9  # + the final block8 without ReLU
    assert net.stride == 16
    # key names and shapes of the common PyTorch port of Inception-ResNet-v2 (ImageNet weights)
    stages = net.encoder.inception.state_dict()
    for key, shape in {
        "mixed_5b.branch0.conv.weight": (96, 192, 1, 1),
        "mixed_5b.branch3.1.conv.weight": (64, 192, 1, 1),
        "repeat.9.branch2.2.bn.running_mean": (64,),
        "mixed_6a.branch1.2.conv.weight": (384, 256, 3, 3),
        "repeat_1.19.branch1.1.conv.weight": (160, 128, 1, 7),
        "mixed_7a.branch2.2.conv.weight": (320, 288, 3, 3),
        "repeat_2.8.conv2d.weight": (2080, 448, 1, 1),
        "block8.conv2d.weight": (2080, 448, 1, 1),
        "conv2d_7b.conv.weight": (1536, 2080, 1, 1),
    }.items():
        assert tuple(stages[key].shape) == shape, key


def test_small_dense_up_is_fast_and_trainable() -> None:
    net = DenseUp(depths=[1, 2, 1], width=0.25)
    assert sum(p.numel() for p in net.parameters()) < 5e6
    logits = net(torch.randn(2, 1, 96, 96))
    logits.sum().backward()
    assert all(p.grad is not None for p in net.parameters() if p.requires_grad)


def test_unetpp_without_deep_supervision_has_one_head() -> None:
    net = UNetPlusPlus(depth=2, base_channels=4)
    assert len(net.forward_heads(torch.randn(1, 1, 32, 32))) == 1


@pytest.mark.parametrize(
    "kwargs",
    [dict(depths=[1, 2]), dict(width=0), dict(depths=[1, -1, 1]), dict(in_channels=0)],
)
def test_bad_network_arguments_raise_config_error(kwargs: dict) -> None:
    with pytest.raises(ConfigError):
        DenseUp(**kwargs)


def test_build_network_errors() -> None:
    with pytest.raises(ConfigError, match="unknown network"):
        build_network("resnet")
    with pytest.raises(ConfigError, match="unet"):
        build_network("unet", depht=3)


# -- loss -----------------------------------------------------------------------------------


def test_loss_matches_astra_definition() -> None:
    torch.manual_seed(0)
    logits = 3 * torch.randn(2, 3, 16, 16)
    target = torch.randint(0, 3, (2, 16, 16))
    terms = AstraLoss().terms(logits, target)
    probs = torch.softmax(logits, 1)
    one_hot = torch.nn.functional.one_hot(target, 3).permute(0, 3, 1, 2).float()
    bce = torch.nn.BCELoss()(probs, one_hot)

    def dice(c: int) -> torch.Tensor:
        inter = (probs[:, c] * one_hot[:, c]).sum((1, 2))
        total = probs[:, c].sum((1, 2)) + one_hot[:, c].sum((1, 2))
        return (1 - (2 * inter + 0.5) / (total + 0.5)).mean()

    torch.testing.assert_close(terms["bce"], bce, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(terms["loss"], 0.5 * bce + dice(0) + dice(1), rtol=1e-5, atol=1e-5)


def test_loss_ignores_unannotated_pixels() -> None:
    logits = torch.randn(1, 3, 8, 8)
    target = torch.randint(0, 3, (1, 8, 8))
    ignored = target.clone()
    ignored[:, :4] = 255
    changed = logits.clone()
    changed[..., :4, :] = 100 * torch.randn(1, 3, 4, 8)
    loss = AstraLoss()
    torch.testing.assert_close(loss(logits, ignored), loss(changed, ignored))
    assert torch.isfinite(loss(logits, ignored))
    with pytest.raises(ValueError):
        loss(logits, torch.full((1, 8, 8), 7))


def test_soft_skeleton_is_the_centre_line_of_a_bar() -> None:
    from astro3s.models import soft_skeleton

    bar = torch.zeros(1, 40, 40)
    bar[0, 18:23, 5:35] = 1  # 5 px wide
    skeleton = soft_skeleton(bar, iterations=8)
    rows = (skeleton[0].sum(1) > 0.5).nonzero().flatten().tolist()
    assert rows == [20]
    assert (skeleton <= 1).all() and (skeleton >= 0).all()


def test_cldice_weighs_a_lost_thin_branch_more_than_dice() -> None:
    from astro3s.models import cldice_loss
    from astro3s.models.losses import soft_dice_loss

    target = torch.zeros(1, 64, 64)
    target[0, 30:35, 0:60] = 1  # a 5-px process ...
    target[0, 10:30, 20:23] = 1  # ... with a 3-px distal branch (60 px)
    branch_lost = target.clone()
    branch_lost[0, 10:30, 20:23] = 0
    base_lost = target.clone()
    base_lost[0, 30:35, 0:12] = 0  # the same 60 px taken from the wide base
    dice = [float(soft_dice_loss(p, target)) for p in (branch_lost, base_lost)]
    cl = [float(cldice_loss(p, target)) for p in (branch_lost, base_lost)]
    assert dice[0] == pytest.approx(dice[1])
    assert cl[0] > cl[1] + 0.03
    assert float(cldice_loss(target, target)) == pytest.approx(0.0, abs=1e-6)
    assert float(cldice_loss(torch.zeros_like(target), target)) > 0.9


def test_cldice_term_joins_the_loss_only_when_weighted() -> None:
    torch.manual_seed(0)
    logits = torch.randn(2, 3, 32, 32, requires_grad=True)
    target = torch.randint(0, 3, (2, 32, 32))
    target[:, :4] = 255
    plain = AstraLoss().terms(logits, target)
    assert "cldice_processes" not in plain
    terms = AstraLoss(cldice_processes_weight=0.5).terms(logits, target)
    torch.testing.assert_close(terms["loss"], plain["loss"] + 0.5 * terms["cldice_processes"])
    terms["loss"].backward()
    assert torch.isfinite(logits.grad).all() and logits.grad.abs().sum() > 0
    with pytest.raises(ValueError, match="cldice_iterations"):
        AstraLoss(cldice_processes_weight=0.5, cldice_iterations=0)


def test_overfit_one_batch_to_high_dice() -> None:
    torch.manual_seed(0)
    image, target = blob_crops(4, size=64)
    net = UNet(depth=3, base_channels=8)
    loss_fn = AstraLoss()
    optimizer = torch.optim.Adam(net.parameters(), lr=1e-2)
    soma_dice = 0.0
    for step in range(100):
        net.train()
        optimizer.zero_grad()
        loss_fn(net(image), target).backward()
        optimizer.step()
        if step % 10 == 9:
            net.eval()
            with torch.no_grad():
                prediction = net(image).argmax(1)
            soma_dice = _dice(prediction, target, 1)
            if soma_dice >= 0.9 and step >= 39:
                break
    assert soma_dice >= 0.9, soma_dice
    assert _dice(prediction, target, 0) >= 0.7


# -- Hydra configs and the LightningModule --------------------------------------------------


def test_model_configs_exist() -> None:
    assert {"dense_up", "dense_up_small", "unet", "unetpp"} <= set(MODEL_CONFIGS)
    cfg = _compose_model("dense_up")
    assert list(cfg.net.depths) == [10, 20, 10]
    assert cfg.optimizer.lr == pytest.approx(1e-4)
    assert cfg.bce_weight == 0.5


@pytest.mark.parametrize("name", MODEL_CONFIGS)
def test_model_config_instantiates_and_fits(name: str, tmp_path: Path) -> None:
    import pytorch_lightning as pl
    from pytorch_lightning.loggers import CSVLogger

    cfg = _compose_model(name, FAST_NET[name])
    module = instantiate(cfg)
    assert isinstance(module, SegmentationModule)
    assert module.hparams.net_config["name"] == name.removesuffix("_small")
    loader = DataLoader(BlobDataset(4), batch_size=2)
    trainer = pl.Trainer(
        fast_dev_run=True,
        accelerator="cpu",
        logger=CSVLogger(tmp_path),
        enable_progress_bar=False,
        enable_model_summary=False,
    )
    trainer.fit(module, train_dataloaders=loader, val_dataloaders=loader)
    logged = trainer.callback_metrics
    for key in ["train/loss", "val/loss", "val/dice_soma", "val/dice_processes", "val/iou_soma"]:
        assert key in logged, sorted(logged)
    assert torch.isfinite(logged["val/loss"])
    predictions = trainer.predict(module, DataLoader(BlobDataset(2), batch_size=2))
    assert predictions[0].shape == (2, 3, 96, 96)
    torch.testing.assert_close(predictions[0].sum(1), torch.ones(2, 96, 96))


def test_module_logs_image_panels_to_tensorboard(tmp_path: Path) -> None:
    pytest.importorskip("tensorboard")
    import pytorch_lightning as pl
    from pytorch_lightning.loggers import CSVLogger, TensorBoardLogger

    module = SegmentationModule(UNet(depth=2, base_channels=4), image_log_every_n_epochs=1)
    calls = []
    tb = TensorBoardLogger(tmp_path / "tb")
    original = tb.experiment.add_image
    def add_image(tag: str, img: torch.Tensor, **kwargs) -> None:
        calls.append((tag, img.shape))
        original(tag, img, **kwargs)

    tb.experiment.add_image = add_image
    loader = DataLoader(BlobDataset(2, size=32), batch_size=2)
    trainer = pl.Trainer(
        max_epochs=1,
        limit_train_batches=1,
        limit_val_batches=1,
        num_sanity_val_steps=0,
        accelerator="cpu",
        logger=[CSVLogger(tmp_path), tb],
        enable_progress_bar=False,
        enable_model_summary=False,
        enable_checkpointing=False,
    )
    trainer.fit(module, loader, loader)
    assert calls and calls[0][0] == "val/panels" and calls[0][1][0] == 3


def test_render_panels_shape() -> None:
    image, target = blob_crops(3, size=32)
    panel = render_panels(image, target, target, max_items=2)
    assert panel.dtype == torch.uint8
    assert panel.shape == (3, 2 * 32 + 2, 3 * 32 + 4)


def test_scheduler_and_encoder_parameters() -> None:
    cfg = _compose_model("unet", FAST_NET["unet"])
    module = instantiate(cfg)
    setup = module.configure_optimizers()
    assert isinstance(setup["optimizer"], torch.optim.Adam)
    assert setup["optimizer"].param_groups[0]["lr"] == pytest.approx(1e-4)
    assert setup["lr_scheduler"]["monitor"] == "val/loss"
    encoder = {id(p) for p in module.encoder_parameters()}
    assert encoder and encoder < {id(p) for p in module.parameters()}
    assert module.hparams.optimizer["_target_"] == "torch.optim.adam.Adam"


# -- checkpoints ----------------------------------------------------------------------------


def _trained_checkpoint(tmp_path: Path) -> tuple[SegmentationModule, Path]:
    import pytorch_lightning as pl

    cfg = _compose_model("dense_up_small", FAST_NET["dense_up_small"])
    module = instantiate(cfg)
    loader = DataLoader(BlobDataset(2), batch_size=2)
    trainer = pl.Trainer(
        max_steps=1,
        limit_val_batches=1,
        num_sanity_val_steps=0,
        accelerator="cpu",
        logger=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        enable_checkpointing=False,
        default_root_dir=tmp_path,
    )
    trainer.fit(module, loader, loader)
    path = tmp_path / "model.ckpt"
    trainer.save_checkpoint(path)
    return module.eval(), path


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> tuple[SegmentationModule, Path]:
    return _trained_checkpoint(tmp_path_factory.mktemp("ckpt"))


def test_checkpoint_round_trip(trained: tuple[SegmentationModule, Path]) -> None:
    module, path = trained
    image, _ = blob_crops(2)
    expected = module.predict_proba(image)
    loaded = load_model(path)
    assert not loaded.training
    torch.testing.assert_close(loaded.predict_proba(image), expected)
    # and through Lightning's own loader, without Hydra
    again = SegmentationModule.load_from_checkpoint(path, map_location="cpu").eval()
    torch.testing.assert_close(again.predict_proba(image), expected)


@pytest.mark.parametrize("damage", ["random", "truncated", "empty", "text"])
def test_corrupt_checkpoint_raises_checkpoint_error(
    trained: tuple[SegmentationModule, Path], tmp_path: Path, damage: str
) -> None:
    _, good = trained
    bad = tmp_path / f"{damage}.ckpt"
    data = good.read_bytes()
    bad.write_bytes(
        {
            "random": torch.randint(0, 256, (4096,), dtype=torch.uint8).numpy().tobytes(),
            "truncated": data[: len(data) // 2],
            "empty": b"",
            "text": b"not a checkpoint\n",
        }[damage]
    )
    with pytest.raises(CheckpointError, match=bad.name) as info:
        load_model(bad)
    assert "Fix" in str(info.value)


def test_wrong_checkpoints_raise_checkpoint_error(tmp_path: Path) -> None:
    with pytest.raises(CheckpointError, match="missing.ckpt"):
        load_model(tmp_path / "missing.ckpt")
    plain = tmp_path / "weights.pt"
    torch.save(UNet(depth=2, base_channels=4).state_dict(), plain)
    with pytest.raises(CheckpointError, match="weights.pt"):
        load_model(plain)


def test_bundled_default_model_loads_with_its_parameters() -> None:
    from astro3s.models import bundled_model_dir, model_preprocess_params

    folder = bundled_model_dir("default")
    assert (folder / "MODEL_CARD.md").is_file()
    assert (folder / "model.ckpt").stat().st_size < 30 * 2**20  # small enough to ship
    module = load_model("default")
    assert not module.training
    params = model_preprocess_params("default")
    assert params is not None and params.crop_size == 96
    probs = module.predict_proba(torch.zeros(1, 1, 96, 96))
    assert probs.shape == (1, 3, 96, 96)


def test_unknown_bundled_name_is_a_checkpoint_error() -> None:
    from astro3s.models import bundled_model_dir

    with pytest.raises(CheckpointError, match="no bundled model named 'fancy'"):
        bundled_model_dir("fancy")


# -- encoder checkpoints --------------------------------------------------------------------


def test_encoder_checkpoint_loads_matching_keys(
    trained: tuple[SegmentationModule, Path], tmp_path: Path
) -> None:
    module, path = trained
    kwargs = {k: v for k, v in module.hparams.net_config.items() if k != "name"}
    # from a whole Lightning checkpoint: only the encoder is taken
    fresh = DenseUp(**kwargs, encoder_ckpt=path)
    report = fresh.encoder_load_report
    assert report.source_prefix == "net.encoder."
    assert not report.missing and not report.shape_mismatched
    assert any(key.startswith("net.decoder") for key in report.unexpected)
    for key, value in module.net.encoder.state_dict().items():
        torch.testing.assert_close(fresh.encoder.state_dict()[key], value)
    decoder_key = "decoder.0.0.weight"
    assert not torch.equal(fresh.state_dict()[decoder_key], module.net.state_dict()[decoder_key])
    # from a state dict of the Inception-ResNet stages alone (as an ImageNet port would be)
    stages = tmp_path / "inception.pt"
    torch.save(module.net.encoder.inception.state_dict(), stages)
    other = DenseUp(**kwargs)
    report = load_encoder_weights(other.encoder, stages)
    assert report.target_prefix == "inception."
    assert {k for k in report.missing} == {
        k for k in other.encoder.state_dict() if k.startswith("conv_block")
    }


def test_encoder_checkpoint_errors(tmp_path: Path) -> None:
    garbage = tmp_path / "garbage.pt"
    garbage.write_bytes(b"\x00\x01garbage")
    with pytest.raises(CheckpointError, match="garbage.pt"):
        UNet(depth=2, base_channels=4, encoder_ckpt=garbage)
    unrelated = tmp_path / "unrelated.pt"
    torch.save({"linear.weight": torch.zeros(3, 3)}, unrelated)
    with pytest.raises(CheckpointError, match="no weight in this file matches"):
        UNet(depth=2, base_channels=4, encoder_ckpt=unrelated)
