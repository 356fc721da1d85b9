"""The correlation image as the network's second input channel (astro3s.preprocess.network_input).

A network widened from one input channel to two, its new channel's weights at zero, must compute what the
one-channel network computed on every network pass of inference (crops, zoomed crops, border-centred crops,
the whole-FOV pass mirrored, zoomed and tiled): so each pass must stack the channels with the same geometry.
Then, with weight on the new channel, the correlation image must change the output, and a model without it
must be told how to get it.
"""

from __future__ import annotations

import dataclasses
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from astro3s.errors import ConfigError


def _pre(tiny_movie: Path):
    from astro3s.io import read_movie
    from astro3s.preprocess import PreprocessParams, preprocess

    return preprocess(read_movie(tiny_movie), PreprocessParams(keep_correlation_image=True), progress=False)


@pytest.fixture(scope="module")
def pre(tiny_movie: Path):
    return _pre(tiny_movie)


def _nets():
    from astro3s.models import UNet
    from astro3s.models.base import widened_input_weights

    torch.manual_seed(1)
    one = UNet(depth=2, base_channels=4).eval()
    two = UNet(in_channels=2, depth=2, base_channels=4).eval()
    state = dict(one.state_dict())
    widened = widened_input_weights(state, two.state_dict())
    assert len(widened) == 1 and widened[0].endswith("weight")
    two.load_state_dict(state, strict=True)
    return one, two


def test_correlation_channel_is_fishers_transform_on_an_absolute_scale() -> None:
    from astro3s.preprocess.network_input import correlation_channel

    corr = np.array([[-0.5, 0.0, 0.79], [0.98, 1.0, np.nan]], np.float32)
    out = correlation_channel(corr)
    assert out.dtype == np.float32 and out.shape == corr.shape
    assert out[0, 0] == 0 and out[0, 1] == 0 and out[1, 2] == 0      # anti-correlation and NaN read as none
    assert out[1, 1] == pytest.approx(1.0)
    assert 0.25 < out[0, 2] < 0.3 and 0.6 < out[1, 0] < 0.62        # 0.79 -> 0.28, 0.98 -> 0.61
    # no statistic of the FOV: a crop of the image gets the same values
    np.testing.assert_array_equal(correlation_channel(corr[:, :2]), out[:, :2])


def test_channels_are_cut_with_the_crops_boxes_and_masks(pre) -> None:
    from astro3s.preprocess import extract_crops
    from astro3s.preprocess.network_input import correlation_channel, crop_channels, fov_channels

    assert len(pre.crop_boxes) > 0 and pre.correlation_image is not None
    one = crop_channels(pre, 1)
    np.testing.assert_array_equal(one[:, 0], pre.crops)
    two = crop_channels(pre, 2)
    assert two.shape == (len(pre.crops), 2, *pre.crops.shape[-2:])
    np.testing.assert_array_equal(two[:, 0], pre.crops)
    want = extract_crops(correlation_channel(pre.correlation_image), pre.crop_boxes,
                         crop_size=pre.crops.shape[-1]) * pre.crop_masks
    np.testing.assert_array_equal(two[:, 1], want)
    assert (two[:, 1][~pre.crop_masks] == 0).all() and two[:, 1].max() > 0
    fov = fov_channels(pre, 2)
    np.testing.assert_array_equal(fov[0], pre.fov_map)
    np.testing.assert_array_equal(fov[1], correlation_channel(pre.correlation_image) * pre.fov_mask)
    # already stacked inputs pass through
    assert crop_channels(dataclasses.replace(pre, crops=two), 2) is not None
    with pytest.raises(ValueError, match="channel"):
        crop_channels(dataclasses.replace(pre, crops=two), 1)


def test_a_network_of_two_channels_without_the_correlation_image_says_how_to_get_it(pre) -> None:
    from astro3s.preprocess.network_input import crop_channels, fov_channels

    bare = dataclasses.replace(pre, correlation_image=None)
    for cut in (crop_channels, fov_channels):
        with pytest.raises(ConfigError, match="keep_correlation_image=true"):
            cut(bare, 2)
    with pytest.raises(ConfigError, match="in_channels: 1 or 2"):
        fov_channels(pre, 3)


def test_widened_network_computes_what_the_narrow_one_did_on_every_pass(pre) -> None:
    from astro3s.inference.network import (TilingParams, border_centred_crops, predict_crops, predict_crops_zoomed,
                                           predict_fov, with_border_centred_predictions)
    from astro3s.models.base import input_channels

    one, two = _nets()
    assert input_channels(one) == 1 and input_channels(two) == 2
    np.testing.assert_allclose(predict_crops(two, pre), predict_crops(one, pre), atol=1e-5)
    for zoom in (1.0, 1.6):
        (p1, b1), (p2, b2) = predict_crops_zoomed(one, pre, zoom), predict_crops_zoomed(two, pre, zoom)
        np.testing.assert_array_equal(b1, b2)
        np.testing.assert_allclose(p2, p1, atol=1e-5)
    tiles = TilingParams(max_fov_pixels=1, tile_size=48, tile_overlap=24)
    for kwargs in ({}, {"mirror": 8}, {"zoom": 1.5}, {"tiling": tiles}):
        np.testing.assert_allclose(predict_fov(two, pre, **kwargs), predict_fov(one, pre, **kwargs), atol=1e-5)
    # a FOV whose candidates sit at its edge: the centred crops carry both channels, mirrored alike
    index, crops, _ = border_centred_crops(pre, 2)
    index1, crops1, _ = border_centred_crops(pre, 1)
    np.testing.assert_array_equal(index, index1)
    assert crops.shape == (len(index), 2, *pre.crops.shape[-2:]) and crops1.shape == (len(index), *pre.crops.shape[-2:])
    np.testing.assert_array_equal(crops[:, 0], crops1)
    base = predict_crops(one, pre)
    np.testing.assert_allclose(with_border_centred_predictions(two, pre, base),
                               with_border_centred_predictions(one, pre, base), atol=1e-5)


def test_weight_on_the_second_channel_changes_the_output(pre) -> None:
    from astro3s.inference.network import predict_crops, predict_fov

    one, two = _nets()
    first = [m for m in two.modules() if isinstance(m, torch.nn.Conv2d)][0]
    with torch.no_grad():
        first.weight[:, 1] = 0.5
    assert np.abs(predict_fov(two, pre) - predict_fov(one, pre)).max() > 1e-3
    assert np.abs(predict_crops(two, pre) - predict_crops(one, pre)).max() > 1e-3


def test_samples_and_storage_carry_the_second_channel(pre, tmp_path: Path) -> None:
    from astro3s.data.samples import class_image, crop_samples, fov_tile_samples, whole_fov_sample
    from astro3s.preprocess import load_preprocessed, save_preprocessed

    classes = class_image(np.asarray(pre.candidates) > 0, np.zeros(pre.candidates.shape, np.uint16))
    crops = crop_samples(pre, classes, channels=2)
    assert crops.images.shape == (len(pre.crops), 2, *pre.crops.shape[-2:])
    # each channel of each sample normalised on its own (mean subtracted)
    np.testing.assert_allclose(crops.images.mean(axis=(2, 3)), 0.0, atol=1e-5)
    np.testing.assert_allclose(crops.images[:, :1], crop_samples(pre, classes).images, atol=1e-6)
    tiles = fov_tile_samples(pre, classes, tile_size=48, stride=48, channels=2)
    assert tiles.images.shape[1] == 2 and len(tiles) > 0
    image, _ = whole_fov_sample(pre, classes, channels=2)
    assert image.shape == (2, *pre.fov_map.shape)
    path = save_preprocessed(pre, tmp_path / "pre.npz")
    np.testing.assert_array_equal(load_preprocessed(path).correlation_image, pre.correlation_image)
    bare = save_preprocessed(dataclasses.replace(pre, correlation_image=None), tmp_path / "bare.npz")
    assert load_preprocessed(bare).correlation_image is None


def test_a_widened_checkpoint_runs_through_astro3s_infer(tiny_movie: Path, random_checkpoint: Path,
                                                         tmp_path: Path) -> None:
    # init_weights from a one-channel checkpoint, saved, loaded for inference: the pre-processing is told to
    # keep the correlation image even when the model's preprocess.yaml does not say so
    import pytorch_lightning as pl

    from astro3s.inference import infer_movie, load_inference_model
    from astro3s.models import SegmentationModule, UNet

    module = SegmentationModule(net=UNet(in_channels=2, depth=2, base_channels=4),
                                init_weights=str(random_checkpoint))
    folder = tmp_path / "ckpt"
    folder.mkdir()
    trainer = pl.Trainer(logger=False, enable_checkpointing=False, enable_progress_bar=False,
                         enable_model_summary=False, max_epochs=0)
    trainer.strategy.connect(module)
    trainer.save_checkpoint(folder / "model.ckpt", weights_only=True)
    shutil.copy(random_checkpoint.parent / "preprocess.yaml", folder / "preprocess.yaml")
    network, options = load_inference_model(folder / "model.ckpt", device="cpu", figures=False)
    assert options.preprocess.keep_correlation_image
    narrow, narrow_options = load_inference_model(random_checkpoint, device="cpu", figures=False)
    assert not narrow_options.preprocess.keep_correlation_image
    wide = infer_movie(tiny_movie, tmp_path / "wide", network, options)
    plain = infer_movie(tiny_movie, tmp_path / "plain", narrow, narrow_options)
    # the zero-weight channel changes nothing downstream
    import tifffile

    assert wide.status == plain.status == "done" and wide.n_cells == plain.n_cells
    for name in ("soma.tif", "processes.tif"):
        np.testing.assert_array_equal(tifffile.imread(wide.output / name), tifffile.imread(plain.output / name))


def test_training_composes_and_runs_with_two_input_channels(tmp_path: Path) -> None:
    from _hydra import compose_train

    from astro3s.cli.train import train_task

    overrides = ["data=synthetic", "data.preset=tiny", "data.n_fovs=2", "data.batch_size=4",
                 "extras.print_config=false", "callbacks.rich_progress_bar=null", "model=unet",
                 "model.net.base_channels=8", "model.net.depth=3", "model.net.in_channels=2", "debug=fast_dev_run"]
    cfg = compose_train(overrides, tmp_path)
    assert cfg.data.input_channels == 2
    metrics = train_task(cfg)
    assert "train/loss" in metrics and all(np.isfinite(float(v)) for v in metrics.values())
    from astro3s.preprocess import load_params

    # the model's preprocess.yaml tells inference to compute the correlation image
    assert load_params(tmp_path / "checkpoints" / "preprocess.yaml").keep_correlation_image


def test_the_correlation_experiments_compose_as_two_stages(tmp_path: Path) -> None:
    from _hydra import compose_train

    first = compose_train(["experiment=default_model_correlation_stage1"], tmp_path)
    assert first.model.net.in_channels == 2 and first.data.input_channels == 2
    assert first.data.silence_fraction == 0.35 and first.model.get("init_weights") is None
    assert first.trainer.max_epochs == 20
    second = compose_train(["experiment=default_model_correlation", "model.init_weights=RUN/checkpoints/last.ckpt"],
                           tmp_path)
    assert second.model.net.in_channels == 2 and second.data.silence_fraction == 0.35
    assert second.trainer.max_epochs == 6 and second.model.optimizer.lr == pytest.approx(3e-4)
    # without a stage-1 checkpoint it widens the bundled model (the warm start that was tried)
    assert compose_train(["experiment=default_model_correlation"], tmp_path).model.init_weights == "default"

def test_silenced_cells_lose_their_correlation_and_their_territory_only() -> None:
    from astro3s.data.samples import silence_cells

    rng = np.random.default_rng(0)
    image = (0.3 + 0.02 * rng.standard_normal((96, 96))).astype(np.float32)
    soma = np.zeros((96, 96), np.uint16)
    processes = np.zeros_like(soma)
    soma[20:26, 20:26] = 1
    soma[60:66, 60:66] = 2
    processes[26:34, 22:24] = 1
    image[12:40, 12:40] += 0.5            # cell 1's correlated territory
    image[52:74, 52:74] += 0.5            # cell 2's
    out = silence_cells(image, soma, processes, fraction=1.0, rng=np.random.default_rng(1))
    for box in (np.s_[12:40, 12:40], np.s_[52:74, 52:74]):
        assert abs(float(out[box].mean()) - 0.3) < 0.03       # back to the background's level
    assert out[80:, :10].tolist() == image[80:, :10].tolist()  # far from every cell: untouched
    assert silence_cells(image, soma, processes, fraction=0.0, rng=rng) is image
    # one of two: the other cell keeps its activity
    kept = [silence_cells(image, soma, processes, fraction=0.5, rng=np.random.default_rng(s)) for s in range(20)]
    partial = [k for k in kept if (k[60:66, 60:66].mean() > 0.7) != (k[20:26, 20:26].mean() > 0.7)]
    assert partial


def test_the_data_module_silences_training_fovs_only(simulated, tmp_path: Path) -> None:
    from astro3s.data import AstroDataModule

    folders = [str(simulated("tiny", seed, overview=False)) for seed in (0, 1)]
    names = [Path(f).name for f in folders]

    def channel_two(fraction: float):
        dm = AstroDataModule(folders, cache_dir=tmp_path / "cache", split="explicit", train=names[:1],
                             val=names[1:], input_channels=2, silence_fraction=fraction, augment=False)
        dm.setup("fit")
        return dm.dataset("train").images[:, 1], dm.dataset("val").images[:, 1]

    train_on, val_on = channel_two(1.0)
    train_off, val_off = channel_two(0.0)
    np.testing.assert_array_equal(val_on, val_off)
    assert np.abs(train_on - train_off).max() > 0.05
    with pytest.raises(ConfigError, match="silence_fraction"):
        AstroDataModule(folders, cache_dir=tmp_path / "cache", silence_fraction=1.5)
