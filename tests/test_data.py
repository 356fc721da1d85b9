"""AstroDataModule on simulated `tiny` FOVs: samples, targets, splits, cache, sources."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from astro3s.data.datamodule import AstroDataModule
from astro3s.data.fovs import AnnotatedFOVs, SyntheticFOVs, simulated_fov
from astro3s.data.splits import split_fovs
from astro3s.errors import ConfigError, InputError
from astro3s.models.classes import BACKGROUND, IGNORE_INDEX, SOMA

SEEDS = (0, 1, 2)


@pytest.fixture(scope="module")
def fov_folders(simulated) -> list[Path]:
    return [simulated("tiny", seed, overview=False) for seed in SEEDS]


@pytest.fixture(scope="module")
def cache_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("pp_cache")


def _datamodule(fov_folders: list[Path], cache_dir: Path, **options) -> AstroDataModule:
    options.setdefault("batch_size", 4)
    dm = AstroDataModule([str(f) for f in fov_folders], cache_dir=cache_dir, **options)
    dm.setup("fit")
    return dm


@pytest.fixture(scope="module")
def datamodule(fov_folders: list[Path], cache_dir: Path) -> AstroDataModule:
    return _datamodule(fov_folders, cache_dir, split="loo", fold=0)


def test_batches_have_the_documented_shapes_and_dtypes(datamodule: AstroDataModule) -> None:
    batch = next(iter(datamodule.train_dataloader()))
    assert batch["image"].dtype == torch.float32 and batch["image"].shape[1:] == (1, 96, 96)
    assert batch["target"].dtype == torch.int64 and batch["target"].shape[1:] == (96, 96)
    assert batch["image"].shape[0] == batch["target"].shape[0] <= 4
    assert set(torch.unique(batch["target"]).tolist()) <= {0, 1, 2}
    val = next(iter(datamodule.val_dataloader()))
    assert val["image"].shape[1:] == (1, 96, 96)
    # per-crop mean subtraction (ASTRA's normalisation)
    images = datamodule.dataset("train").images
    assert np.abs(images.mean(axis=(1, 2, 3))).max() < 1e-5


def test_targets_label_the_true_somata_with_the_inputs_geometry(fov_folders, cache_dir) -> None:
    from astro3s.io import read_labels
    from astro3s.preprocess import crop_offsets

    dm = _datamodule(fov_folders, cache_dir, split="explicit", train=[f.name for f in fov_folders],
                     outside_mask="keep")
    checked = 0
    for spec in dm.fov_specs:  # loop over FOVs
        soma = read_labels(spec.soma)
        pre = dm._pre[spec.name]
        boxes = np.asarray(pre.crop_boxes)
        offsets = crop_offsets(boxes, 96)
        targets = dm.dataset("train").targets[dm.dataset("train").fov_index == dm.fov_specs.index(spec)]
        for label in range(1, int(soma.max()) + 1):  # loop over true somata
            ys, xs = np.nonzero(soma == label)
            if len(ys) == 0:
                continue
            # the soma pixel closest to the centroid (inside the soma even if it is not convex)
            k = np.argmin((ys - ys.mean()) ** 2 + (xs - xs.mean()) ** 2)
            cy, cx = ys[k], xs[k]
            for n, ((y0, x0, y1, x1), (oy, ox)) in enumerate(zip(boxes, offsets)):
                if y0 <= cy < y1 and x0 <= cx < x1:
                    assert targets[n][cy - y0 + oy, cx - x0 + ox] == SOMA
                    checked += 1
    assert checked >= len(fov_folders)


def test_pixels_outside_the_activity_mask_follow_outside_mask(fov_folders, cache_dir) -> None:
    background = _datamodule(fov_folders, cache_dir, split="loo", fold=0)
    ignore = _datamodule(fov_folders, cache_dir, split="loo", fold=0, outside_mask="ignore")
    name = background.split_names.train[0]
    masks = np.asarray(background._pre[name].crop_masks, bool)
    n = len(masks)
    assert np.all(background.dataset("train").targets[:n][~masks] == BACKGROUND)
    assert np.all(ignore.dataset("train").targets[:n][~masks] == IGNORE_INDEX)
    # inputs are zero outside the mask before normalisation: constant after it
    images = background.dataset("train").images[:n, 0]
    for image, mask in zip(images, masks):
        assert np.ptp(image[~mask]) < 1e-6


@pytest.mark.parametrize("fold", range(len(SEEDS)))
def test_leave_one_out_never_trains_on_the_held_out_fov(fov_folders, cache_dir, fold: int) -> None:
    dm = _datamodule(fov_folders, cache_dir, split="loo", fold=fold)
    held_out = fov_folders[fold].name
    assert dm.split_names.val == dm.split_names.test == (held_out,)
    assert held_out not in dm.split_names.train and len(dm.split_names.train) == len(SEEDS) - 1
    assert fold not in set(dm.dataset("train").fov_index.tolist())
    assert set(dm.dataset("val").fov_index.tolist()) == {fold}
    seen = {int(i) for batch in dm.train_dataloader() for i in batch["fov_index"]}
    assert fold not in seen


def test_kfold_covers_every_fov_exactly_once(fov_folders, cache_dir) -> None:
    names = [f.name for f in fov_folders]
    held = []
    for fold in range(3):
        dm = _datamodule(fov_folders, cache_dir, split="kfold", n_folds=3, fold=fold)
        assert not set(dm.split_names.val) & set(dm.split_names.train)
        held += dm.split_names.val
    assert sorted(held) == sorted(names)
    many = [f"fov{i}" for i in range(7)]
    for seed in (None, 3):
        folds = [split_fovs(many, split="kfold", n_folds=3, fold=k, shuffle_seed=seed) for k in range(3)]
        assert sorted(n for s in folds for n in s.val) == sorted(many)
    with pytest.raises(ConfigError, match="fold"):
        split_fovs(many, split="kfold", n_folds=3, fold=3)


def test_explicit_split_and_its_errors(fov_folders, cache_dir) -> None:
    a, b, c = (f.name for f in fov_folders)
    dm = _datamodule(fov_folders, cache_dir, split="explicit", train=[a, b], val=[c])
    assert dm.split_names.train == (a, b) and dm.split_names.test == (c,)
    with pytest.raises(ConfigError, match="unknown FOV"):
        split_fovs([a, b], split="explicit", train=[a], val=["nope"])
    with pytest.raises(ConfigError, match="split must be one of"):
        split_fovs([a, b], split="lo")


def test_second_setup_reads_the_cache_without_preprocessing(fov_folders, cache_dir, datamodule) -> None:
    entries = sorted(cache_dir.glob("*.npz"))
    assert len(entries) == len(SEEDS)
    mtimes = [p.stat().st_mtime_ns for p in entries]
    again = _datamodule(fov_folders, cache_dir, split="loo", fold=1)
    assert again.n_preprocessed == 0 and again.n_cache_hits == len(SEEDS)
    assert [p.stat().st_mtime_ns for p in entries] == mtimes
    # another parameter set is another cache entry
    other = AstroDataModule([str(fov_folders[0])], cache_dir=cache_dir,
                            preprocess=again.preprocess_params.replace(th1=0.3))
    other.prepare_data()
    assert other.n_preprocessed == 1 and len(list(cache_dir.glob("*.npz"))) == len(SEEDS) + 1


def test_whole_fov_samples(fov_folders, cache_dir) -> None:
    dm = _datamodule(fov_folders, cache_dir, split="loo", fold=0, use_fov_samples=True)
    kinds = set(dm.dataset("train").kinds.tolist())
    assert kinds == {"crop", "fov_tile"}
    fov = dm.fov_dataset("val")[0]
    height, width = dm._pre[dm.split_names.val[0]].fov_map.shape
    assert fov["image"].shape == (1, height, width) and fov["target"].shape == (height, width)
    assert (fov["target"] == SOMA).any()


def test_augmentation_only_on_training_batches(datamodule: AstroDataModule) -> None:
    batch = next(iter(datamodule.val_dataloader()))
    datamodule.trainer = SimpleNamespace(training=False, global_rank=0)
    assert datamodule.on_after_batch_transfer(batch, 0) is batch
    datamodule.trainer = SimpleNamespace(training=True, global_rank=0)
    augmented = datamodule.on_after_batch_transfer(batch, 0)
    assert augmented["image"].shape == batch["image"].shape and augmented["target"].dtype == torch.int64
    datamodule.trainer = None


def test_synthetic_source_generates_once(tmp_path: Path) -> None:
    source = SyntheticFOVs(preset="tiny", n_fovs=2, root=tmp_path, first_seed=5)
    specs = source.fovs()
    assert [s.name for s in specs] == ["tiny_s0005", "tiny_s0006"]
    mtimes = [s.movie.stat().st_mtime_ns for s in specs]
    assert [s.movie.stat().st_mtime_ns for s in source.fovs()] == mtimes
    assert simulated_fov(specs[0].movie.parent).soma.name == "soma.tif"


def test_real_dataset_without_movies_says_where_to_put_them(tmp_path: Path) -> None:
    source = AnnotatedFOVs(movies_dir=tmp_path / "D1", annotations=tmp_path, shape=(256, 256), dataset="D1")
    with pytest.raises(InputError, match="d1_standin") as info:
        source.fovs()
    assert str(tmp_path / "D1") in str(info.value)


def test_mixed_sources_carry_their_own_preprocessing(tmp_path: Path, fov_folders, cache_dir) -> None:
    from astro3s.data.fovs import MixedFOVs, soma_area_range_of

    mixed = MixedFOVs([{"kind": "synthetic", "preset": "tiny", "n_fovs": 2, "first_seed": 0,
                        "soma_area": "truth"},
                       {"kind": "synthetic", "preset": "tiny", "n_fovs": 1, "first_seed": 5,
                        "preprocess": {"th1": 0.3}}], root=tmp_path)
    specs = mixed.fovs()
    assert [s.name for s in specs] == ["tiny_s0000", "tiny_s0001", "tiny_s0005"]
    lo, hi = soma_area_range_of(specs[0], margin=0.0)
    soma, _ = specs[0].read_labels()
    areas = np.bincount(soma.ravel())[1:]
    assert (lo, hi) == (float(areas[areas > 0].min()), float(areas.max()))
    assert specs[0].preprocess["soma_area_range"] == list(soma_area_range_of(specs[0]))
    assert specs[2].preprocess == {"th1": 0.3}
    dm = AstroDataModule(mixed, cache_dir=tmp_path / "cache", split="explicit", val=["tiny_s0005"],
                         batch_size=2)
    dm.setup("fit")
    assert dm.split_names.train == ("tiny_s0000", "tiny_s0001")  # train=None: every FOV not held out
    assert dm._pre["tiny_s0005"].params.th1 == 0.3
    assert dm._pre["tiny_s0000"].params.soma_area_range == tuple(specs[0].preprocess["soma_area_range"])
    fovs = dm.evaluation_fovs("val")
    assert [f[0] for f in fovs] == ["tiny_s0005"] and fovs[0][2].shape == fovs[0][1].fov_map.shape


def test_mixed_source_errors(tmp_path: Path) -> None:
    from astro3s.data.fovs import MixedFOVs

    with pytest.raises(ConfigError, match="kind must be one of"):
        MixedFOVs([{"kind": "nope"}])
    with pytest.raises(ConfigError, match="soma_area"):
        MixedFOVs([{"kind": "synthetic", "preset": "tiny", "n_fovs": 1, "soma_area": "guess"}], root=tmp_path)
    twice = MixedFOVs([{"kind": "synthetic", "preset": "tiny", "n_fovs": 1},
                       {"kind": "synthetic", "preset": "tiny", "n_fovs": 1}], root=tmp_path)
    with pytest.raises(ConfigError, match="two sources give a FOV named"):
        twice.fovs()
