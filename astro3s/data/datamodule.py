"""``AstroDataModule``: pre-processed, annotated FOVs as single-cell crop batches.

Pipeline per FOV (see :mod:`astro3s.data.fovs` for where FOVs come from):

1. the movie is pre-processed with :func:`astro3s.preprocess.preprocess`; the
   result is cached on disk (:mod:`astro3s.data.cache`) and reused as long as
   the movie file and the parameters are unchanged;
2. the ground truth becomes a class image (soma -> ``SOMA``, processes ->
   ``PROCESSES``, else ``BACKGROUND``) and is cut with the inputs' boxes
   (:mod:`astro3s.data.samples`, which also documents the normalisation and
   the labels of pixels outside a crop's mask);
3. FOVs are split by name (:mod:`astro3s.data.splits`).

Batches are ``{"image": (B, 1, S, S) float32, "target": (B, S, S) int64,
"fov_index": (B,) int64}`` with ``S = crop_size`` (96).

Augmentation is applied to *training* batches only, on the batch after it
reached the device, in this data module's ``on_after_batch_transfer`` hook
(:class:`astro3s.data.augment.Augmenter`, geometric transforms move image and
target together; seeded with ``seed + 1000 * global_rank``). Validation and
test batches are never augmented. Lightning calls the data module's hook in
place of the model's, so the model needs nothing.
"""

from __future__ import annotations

import dataclasses
import logging
import time
import zlib
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pytorch_lightning as pl
import torch
from torch.utils.data import DataLoader

from astro3s.data.fovs import (
    AnnotatedFOVs,
    FOVSource,
    FOVSpec,
    MixedFOVs,
    StandinFOVs,
    SyntheticFOVs,
    as_source,
)
from astro3s.data.samples import (
    NORMALIZATIONS,
    OUTSIDE_MASK_RULES,
    FOVDataset,
    SampleArrays,
    SampleDataset,
    check_choice,
    class_image,
    crop_samples,
    fov_tile_samples,
    silence_cells,
    whole_fov_sample,
)
from astro3s.data.splits import Split, split_fovs
from astro3s.errors import ConfigError, InputError
from astro3s.preprocess.params import as_preprocess_params

log = logging.getLogger(__name__)

__all__ = ["AstroDataModule"]

STAGES = ("train", "val", "test")


def _as_augment(augment: Any):
    from astro3s.data.augment import AugmentParams

    if augment is None or augment is False:
        return None
    if augment is True:
        return AugmentParams()
    if isinstance(augment, AugmentParams):
        return augment
    if isinstance(augment, Mapping):
        values = {k: tuple(v) if isinstance(v, list) else v for k, v in augment.items()}
        if values.pop("enabled", True) is False:
            return None
        try:
            return AugmentParams(**values)
        except TypeError as err:
            raise ConfigError(f"data.augment: {err}") from None
    raise ConfigError(f"data.augment must be true/false/null or a mapping of AugmentParams, got {augment!r}")


def _close_corrected(pre) -> None:
    """Close the movie that ``load_preprocessed`` may open for ``pre.corrected`` (unused here), and the
    temporary file of corrected frames that ``preprocess`` writes for movies larger than its budget."""
    corrected = getattr(pre, "corrected", None)
    for obj in (corrected, getattr(corrected, "movie", None)):
        close = getattr(obj, "close", None)
        if callable(close):
            close()
    pre.corrected = None


class AstroDataModule(pl.LightningDataModule):
    """Annotated FOVs -> pre-processed single-cell crops, split by FOV.

    Parameters
    ----------
    fovs : FOVSource or sequence
        A source (:class:`~astro3s.data.fovs.SyntheticFOVs`, ...) or a list of
        :class:`~astro3s.data.fovs.FOVSpec`, dicts with its fields, or
        simulator output folders.
    preprocess : PreprocessParams or mapping or path or None
        Pre-processing parameters (see :func:`astro3s.preprocess.params.as_preprocess_params`: a dict of
        fields, a YAML file from :func:`astro3s.preprocess.save_params`, ...); None: ASTRA's.

    Arguments are plain Python: the data configs set ``_convert_: all``
    (``conf/data/shared/loader.yaml``), so ``hydra.utils.instantiate`` passes
    dicts and lists, never config nodes.
    cache_dir : str or Path
        Folder of the cached pre-processing results.
    split : {"loo", "kfold", "explicit"}
    fold, n_folds : int
        Fold of ``loo`` (the held-out FOV's position) or ``kfold``.
    train, val, test : sequence of str or None
        FOV names of ``split="explicit"``.
    shuffle_folds : bool
        ``kfold``: shuffle the FOV order with ``seed`` before cutting folds.
    batch_size, num_workers : int
    pin_memory : bool
        Page-locked host memory for faster GPU copies (leave off on CPU).
    seed : int
        Seeds the training shuffle, the fold shuffle and the augmentations.
    augment : AugmentParams or mapping or bool or None
        Training augmentations (True: the defaults; None/False: none).
    use_fov_samples : bool
        Add whole-FOV samples, as crop-size tiles of the FOV map (see
        :func:`~astro3s.data.samples.fov_tile_samples`), to every stage.
    fov_tile_stride : int
        Step between FOV-map tiles, px.
    normalize : {"mean", "none", "standardize"}
        Per-sample input normalisation (``mean``: ASTRA's mean subtraction).
    outside_mask : {"background", "ignore", "keep"}
        Target of pixels outside a sample's valid mask.
    drop_last : bool
        Drop the last incomplete training batch.
    silence_fraction : float
        With two input channels, each cell of a training FOV is silenced in its correlation image with
        this probability (:func:`~astro3s.data.samples.silence_cells`; drawn once per FOV from ``seed``):
        the network learns that a cell still is one when it is silent. Validation and test FOVs keep theirs.
    input_channels : int
        Channels of every sample (the network's ``in_channels``): 1 the enhanced median image, ASTRA's
        input; 2 also the local temporal-correlation image
        (:mod:`astro3s.preprocess.network_input`; the pre-processing then keeps it:
        ``keep_correlation_image`` is set).

    Attributes
    ----------
    n_preprocessed, n_cache_hits : int
        Pre-processing runs and cache reads done by this instance.
    fov_specs : list of FOVSpec
        All FOVs, after :meth:`setup`.
    split_names : Split
        FOV names per stage, after :meth:`setup`.
    """

    def __init__(
        self,
        fovs: FOVSource | Sequence[Any],
        *,
        preprocess: Any = None,
        cache_dir: str | Path,
        split: str = "loo",
        fold: int = 0,
        n_folds: int = 5,
        train: Sequence[str] | None = None,
        val: Sequence[str] | None = None,
        test: Sequence[str] | None = None,
        shuffle_folds: bool = False,
        batch_size: int = 8,
        num_workers: int = 0,
        pin_memory: bool = False,
        seed: int = 0,
        augment: Any = True,
        use_fov_samples: bool = False,
        fov_tile_stride: int = 48,
        normalize: str = "mean",
        outside_mask: str = "background",
        drop_last: bool = False,
        input_channels: int = 1,
        silence_fraction: float = 0.0,
    ) -> None:
        super().__init__()
        self.source = as_source(fovs)
        self.params = as_preprocess_params(preprocess)
        self.input_channels = int(input_channels)
        self.silence_fraction = float(silence_fraction)
        if not 0.0 <= self.silence_fraction <= 1.0:
            raise ConfigError(f"data.silence_fraction must lie in [0, 1], got {silence_fraction}")
        if self.input_channels not in (1, 2):
            raise ConfigError(f"data.input_channels must be 1 (median image) or 2 (and correlation image), "
                              f"got {input_channels}")
        if self.input_channels > 1 and not self.params.keep_correlation_image:
            # the second channel is cut from it; the flag is part of the cache key and of the model's preprocess.yaml
            self.params = self.params.replace(keep_correlation_image=True)
        self.cache_dir = Path(cache_dir)
        self.split = str(split)
        self.fold = int(fold)
        self.n_folds = int(n_folds)
        self.explicit = {"train": train, "val": val, "test": test}
        self.shuffle_folds = bool(shuffle_folds)
        if int(batch_size) < 1:
            raise ConfigError(f"data.batch_size must be at least 1, got {batch_size}")
        self.batch_size = int(batch_size)
        self.num_workers = int(num_workers)
        self.pin_memory = bool(pin_memory)
        self.seed = int(seed)
        self.augment_params = _as_augment(augment)
        self.use_fov_samples = bool(use_fov_samples)
        self.fov_tile_stride = int(fov_tile_stride)
        self.normalize = check_choice("data.normalize", str(normalize), NORMALIZATIONS)
        self.outside_mask = check_choice("data.outside_mask", str(outside_mask), OUTSIDE_MASK_RULES)
        self.drop_last = bool(drop_last)
        self.n_preprocessed = 0
        self.n_cache_hits = 0
        self.fov_specs: list[FOVSpec] = []
        self.split_names: Split | None = None
        self._samples: dict[str, list[SampleArrays]] = {}
        self._classes: dict[str, np.ndarray] = {}
        self._pre: dict[str, Any] = {}
        self._labels: dict[str, tuple[np.ndarray, np.ndarray]] = {}
        self._datasets: dict[str, SampleDataset] = {}
        self._augmenter = None

    # -- constructors used by the configs ------------------------------------------------------

    @classmethod
    def synthetic(cls, *, preset: str, n_fovs: int, root: str | Path, seeds: Sequence[int] | None = None,
                  first_seed: int = 0, overview: bool = False, **options: Any) -> AstroDataModule:
        """Data module on ``n_fovs`` simulated movies of ``preset`` (see :class:`SyntheticFOVs`)."""
        source = SyntheticFOVs(preset=preset, n_fovs=n_fovs, root=root, seeds=seeds,
                               first_seed=first_seed, overview=overview)
        return cls(source, **options)

    @classmethod
    def standin(cls, *, annotations: str | Path, shape: Sequence[int], root: str | Path,
                preset: str = "d1_like", n_fovs: int | None = None, sim_seed: int = 0,
                **options: Any) -> AstroDataModule:
        """Data module on simulated stand-ins of annotated FOVs (see :class:`StandinFOVs`)."""
        source = StandinFOVs(annotations=annotations, shape=shape, root=root, preset=preset,
                             n_fovs=n_fovs, seed=sim_seed)
        return cls(source, **options)

    @classmethod
    def mixed(cls, *, sources: Sequence[Mapping[str, Any]], root: str | Path | None = None,
              **options: Any) -> AstroDataModule:
        """Data module on the union of several sources (see :class:`MixedFOVs`)."""
        return cls(MixedFOVs(sources, root=root), **options)

    @classmethod
    def annotated(cls, *, movies_dir: str | Path, annotations: str | Path, shape: Sequence[int],
                  n_fovs: int | None = None, dataset: str = "", **options: Any) -> AstroDataModule:
        """Data module on real movies matched to RoiSet zips (see :class:`AnnotatedFOVs`)."""
        source = AnnotatedFOVs(movies_dir=movies_dir, annotations=annotations, shape=shape,
                               n_fovs=n_fovs, dataset=dataset)
        return cls(source, **options)

    # -- pre-processing and its cache -------------------------------------------------------------

    @property
    def preprocess_params(self):
        """The :class:`~astro3s.preprocess.PreprocessParams` used for every FOV."""
        return self.params

    def params_for(self, spec: FOVSpec):
        """The pre-processing parameters of one FOV: the module's, with the FOV's own overrides."""
        if not spec.preprocess:
            return self.params
        values = {k: tuple(v) if isinstance(v, list) else v for k, v in spec.preprocess.items()}
        try:
            return self.params.replace(**values)
        except TypeError as err:
            raise ConfigError(f"FOV {spec.name}: bad pre-processing override ({err})") from None

    def cache_file(self, spec: FOVSpec) -> Path:
        """Cache entry of one FOV's pre-processing result."""
        from astro3s.data.cache import cache_path

        return cache_path(self.cache_dir, spec.name, spec.movie, self.params_for(spec))

    def preprocessed(self, spec: FOVSpec):
        """The pre-processing result of ``spec``: read from the cache, else computed and cached.

        Returns
        -------
        Preprocessed
        """
        from astro3s.preprocess import load_preprocessed, preprocess, save_preprocessed

        path = self.cache_file(spec)
        if path.is_file():
            try:
                pre = load_preprocessed(path)
                _close_corrected(pre)
                self.n_cache_hits += 1
                return pre
            except InputError as err:
                log.warning("cache entry unusable, pre-processing again: %s", err)
        from astro3s.io import read_movie

        start = time.perf_counter()
        movie = read_movie(spec.movie)
        try:
            pre = preprocess(movie, self.params_for(spec), progress=False)
        finally:
            movie.close()
        _close_corrected(pre)
        path.parent.mkdir(parents=True, exist_ok=True)
        save_preprocessed(pre, path)
        self.n_preprocessed += 1
        log.info("%s: pre-processed in %.1f s, %d crop(s), cached as %s", spec.name,
                 time.perf_counter() - start, len(pre.crop_boxes), path.name)
        return pre

    def prepare_data(self) -> None:
        """Create the FOVs (synthetic sources) and fill the pre-processing cache (rank 0 only)."""
        for spec in self.source.fovs():  # loop over FOVs
            if not self.cache_file(spec).is_file():
                self.preprocessed(spec)

    # -- samples --------------------------------------------------------------------------------

    def _load_fov(self, spec: FOVSpec, *, training: bool = False) -> None:
        pre = self.preprocessed(spec)
        soma, processes = spec.read_labels()
        if soma.shape != tuple(pre.fov_map.shape):
            raise InputError(spec.soma or spec.roiset, f"ground truth shape {soma.shape} differs from the "
                             f"movie's FOV {tuple(pre.fov_map.shape)}.", "give the annotation of this movie.")
        classes = class_image(soma, processes)
        sampled = pre
        if training and self.input_channels > 1 and self.silence_fraction > 0 and pre.correlation_image is not None:
            rng = np.random.default_rng([self.seed, zlib.crc32(spec.name.encode())])
            sampled = dataclasses.replace(pre, correlation_image=silence_cells(
                pre.correlation_image, soma, processes, fraction=self.silence_fraction, rng=rng))
        parts = [crop_samples(sampled, classes, normalize=self.normalize, outside_mask=self.outside_mask,
                              channels=self.input_channels)]
        if self.use_fov_samples:
            parts.append(fov_tile_samples(sampled, classes, tile_size=int(self.params.crop_size),
                                          stride=self.fov_tile_stride, normalize=self.normalize,
                                          outside_mask=self.outside_mask, channels=self.input_channels))
        self._samples[spec.name] = parts
        self._classes[spec.name] = classes
        self._labels[spec.name] = (soma, processes)
        self._pre[spec.name] = pre

    def setup(self, stage: str | None = None) -> None:
        """Load (or compute) every FOV's samples and build the split's datasets; idempotent."""
        if self._datasets:
            return
        self.fov_specs = self.source.fovs()
        names = [spec.name for spec in self.fov_specs]
        self.split_names = split_fovs(
            names, split=self.split, fold=self.fold, n_folds=self.n_folds, train=self.explicit["train"],
            val=self.explicit["val"], test=self.explicit["test"],
            shuffle_seed=self.seed if self.shuffle_folds else None)
        needed = set(self.split_names.train) | set(self.split_names.val) | set(self.split_names.test)
        for spec in self.fov_specs:  # loop over FOVs
            if spec.name in needed:
                self._load_fov(spec, training=spec.name in self.split_names.train)
        index_of = {name: i for i, name in enumerate(names)}
        for stage_name in STAGES:
            parts = [(index_of[name], arrays) for name in getattr(self.split_names, stage_name)
                     for arrays in self._samples[name]]
            self._datasets[stage_name] = SampleDataset(parts)
        if len(self._datasets["train"]) == 0:
            raise InputError(None, f"the training FOVs ({', '.join(self.split_names.train)}) gave no sample: "
                             "the pre-processing found no soma candidate.",
                             "check the movies and the preprocess parameters (e.g. preprocess=d1_standin).")
        log.info("samples: %s", ", ".join(f"{s} {len(self._datasets[s])}" for s in STAGES))

    def dataset(self, stage: str) -> SampleDataset:
        """The crop (+ FOV-tile) dataset of ``stage`` ("train", "val" or "test")."""
        if stage not in STAGES:
            raise ValueError(f"stage must be one of {STAGES}, got {stage!r}")
        if not self._datasets:
            self.setup()
        return self._datasets[stage]

    def fov_dataset(self, stage: str) -> FOVDataset:
        """Whole-FOV samples of ``stage`` (any size; load with ``batch_size=1``)."""
        self.dataset(stage)
        assert self.split_names is not None
        index_of = {spec.name: i for i, spec in enumerate(self.fov_specs)}
        items = []
        for name in getattr(self.split_names, stage):  # loop over FOVs
            image, target = whole_fov_sample(self._pre[name], self._classes[name], normalize=self.normalize,
                                             outside_mask=self.outside_mask, channels=self.input_channels)
            items.append((index_of[name], image, target, self._pre[name].crop_boxes))
        return FOVDataset(items)

    def evaluation_fovs(self, stage: str) -> list[tuple[str, Any, np.ndarray, np.ndarray]]:
        """FOVs of ``stage`` for whole-pipeline scoring.

        Returns
        -------
        list of (name, Preprocessed, soma, processes)
            The pre-processing result and the ground-truth label images
            ``(H, W)`` of every FOV of the stage, in split order.
        """
        self.dataset(stage)
        assert self.split_names is not None
        return [(name, self._pre[name], *self._labels[name]) for name in getattr(self.split_names, stage)]

    def summary(self) -> dict[str, Any]:
        """Plain-data description for the loggers: FOVs per stage, sample counts, options."""
        self.dataset("train")
        assert self.split_names is not None
        return {
            "fovs": {s: list(getattr(self.split_names, s)) for s in STAGES},
            "n_samples": {s: len(self._datasets[s]) for s in STAGES},
            "split": self.split, "fold": self.fold,
            "normalize": self.normalize, "outside_mask": self.outside_mask,
            "use_fov_samples": self.use_fov_samples, "batch_size": self.batch_size,
            "input_channels": self.input_channels, "silence_fraction": self.silence_fraction,
            "augment": self.augment_params is not None,
        }

    # -- loaders --------------------------------------------------------------------------------

    def _loader(self, stage: str, *, shuffle: bool) -> DataLoader:
        generator = torch.Generator()
        generator.manual_seed(self.seed)
        return DataLoader(
            self.dataset(stage),
            batch_size=self.batch_size,
            shuffle=shuffle,
            num_workers=self.num_workers,
            pin_memory=self.pin_memory,
            drop_last=self.drop_last and shuffle,
            persistent_workers=self.num_workers > 0,
            generator=generator if shuffle else None,
        )

    def train_dataloader(self) -> DataLoader:
        return self._loader("train", shuffle=True)

    def val_dataloader(self) -> DataLoader:
        return self._loader("val", shuffle=False)

    def test_dataloader(self) -> DataLoader:
        return self._loader("test", shuffle=False)

    def predict_dataloader(self) -> DataLoader:
        return self._loader("test", shuffle=False)

    # -- augmentation -------------------------------------------------------------------------------

    def on_after_batch_transfer(self, batch: Any, dataloader_idx: int) -> Any:
        """Augment training batches (on their device); other batches pass unchanged."""
        trainer = getattr(self, "trainer", None)
        if self.augment_params is None or trainer is None or not trainer.training:
            return batch
        if self._augmenter is None:
            from astro3s.data.augment import Augmenter

            self._augmenter = Augmenter(self.augment_params, seed=self.seed + 1000 * int(trainer.global_rank))
        return self._augmenter.batch(batch)

    def state_dict(self) -> dict[str, Any]:
        """Saved in checkpoints: the split and the pre-processing parameters (for inference)."""
        split = None if self.split_names is None else {s: list(getattr(self.split_names, s)) for s in STAGES}
        return {"split": split, "preprocess": self.params.to_dict()}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Nothing to restore: the data are rebuilt from the config (the state is informative)."""
