"""Train / validation / test splits of a list of FOV names.

- ``loo`` (leave-one-FOV-out): fold ``k`` holds out FOV ``k`` as validation
  *and* test set and trains on all the others (ASTRA's protocol). A checkpoint
  chosen on ``val/*`` would then be chosen on the test FOV: the ``paper_*``
  experiments train a fixed number of epochs and test the last weights
  (``test_ckpt: last``), as ASTRA chose its weights on training crops only.
- ``kfold``: the FOVs, in their given order, are cut into ``n_folds``
  contiguous, near-equal groups (``numpy.array_split``); fold ``k`` holds out
  group ``k`` as validation and test set. With ``shuffle_seed`` the order is
  shuffled first (reproducibly).
- ``explicit``: ``train``, ``val`` and ``test`` list names; an empty ``test``
  is the ``val`` list; ``train=None`` is every FOV not in ``val`` or ``test``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from astro3s.errors import ConfigError

__all__ = ["SPLITS", "Split", "split_fovs"]

SPLITS = ("loo", "kfold", "explicit")


@dataclass(frozen=True)
class Split:
    """Names of the FOVs of each stage."""

    train: tuple[str, ...]
    val: tuple[str, ...]
    test: tuple[str, ...]


def _check_names(kind: str, names: Sequence[str] | None, known: Sequence[str]) -> tuple[str, ...]:
    names = tuple(str(n) for n in (names or ()))
    unknown = [n for n in names if n not in known]
    if unknown:
        raise ConfigError(f"split {kind}: unknown FOV name(s) {', '.join(unknown)}; known: {', '.join(known)}")
    return names


def split_fovs(names: Sequence[str], *, split: str = "loo", fold: int = 0, n_folds: int = 5,
               train: Sequence[str] | None = None, val: Sequence[str] | None = None,
               test: Sequence[str] | None = None, shuffle_seed: int | None = None) -> Split:
    """Split FOV names into train / val / test (see the module notes).

    Raises
    ------
    ConfigError
        Unknown split kind, fold out of range, duplicate or unknown names, or
        a split that leaves no training FOV.
    """
    names = [str(n) for n in names]
    if len(set(names)) != len(names):
        duplicates = sorted({n for n in names if names.count(n) > 1})
        raise ConfigError(f"FOV names must be unique; repeated: {', '.join(duplicates)}")
    if split == "loo":
        if len(names) < 2:
            raise ConfigError(f"split=loo needs at least 2 FOVs, got {len(names)}")
        if not 0 <= int(fold) < len(names):
            raise ConfigError(f"split=loo: fold must be in [0, {len(names) - 1}] (one per FOV), got {fold}")
        held_out = (names[int(fold)],)
        return Split(tuple(n for n in names if n not in held_out), held_out, held_out)
    if split == "kfold":
        n_folds = int(n_folds)
        if not 2 <= n_folds <= len(names):
            raise ConfigError(f"split=kfold: n_folds must be in [2, {len(names)}] (the number of FOVs), got {n_folds}")
        if not 0 <= int(fold) < n_folds:
            raise ConfigError(f"split=kfold: fold must be in [0, {n_folds - 1}], got {fold}")
        order = list(names)
        if shuffle_seed is not None:
            order = [order[i] for i in np.random.default_rng(int(shuffle_seed)).permutation(len(order))]
        groups = np.array_split(np.arange(len(order)), n_folds)
        held_out = tuple(order[i] for i in groups[int(fold)])
        return Split(tuple(n for n in order if n not in held_out), held_out, held_out)
    if split == "explicit":
        val_names = _check_names("val", val, names)
        test_names = _check_names("test", test, names) or val_names
        if train is None:  # every FOV not held out
            held_out = set(val_names) | set(test_names)
            train_names = tuple(n for n in names if n not in held_out)
        else:
            train_names = _check_names("train", train, names)
        if not train_names:
            raise ConfigError("split=explicit: list the training FOVs as data.train=[name, ...]")
        return Split(train_names, val_names, test_names)
    raise ConfigError(f"split must be one of {', '.join(SPLITS)}, got {split!r}")
