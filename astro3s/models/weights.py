"""Checkpoint files and weights, below every network and module class.

:func:`read_checkpoint_file` and :func:`read_model_checkpoint` read a ``.ckpt``
file (or a bundled model) into plain data; :func:`load_encoder_weights` loads
the matching part of any state dict into a network's encoder. Nothing here
builds a network, so :mod:`astro3s.models.base`, :mod:`~astro3s.models.module`
and :mod:`~astro3s.models.checkpoint` (which builds networks from checkpoints)
all import this module, and it imports none of them. Every failure a user can
cause raises :class:`~astro3s.errors.CheckpointError` naming the file.
"""

from __future__ import annotations

import logging
import pickle
import zipfile
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from astro3s.errors import CheckpointError

log = logging.getLogger(__name__)

#: Names reserved for models shipped with astro3s.
BUNDLED_MODELS: tuple[str, ...] = ("default",)
#: File names inside a bundled model's folder.
BUNDLED_CHECKPOINT = "model.ckpt"
PREPROCESS_PARAMS_NAME = "preprocess.yaml"


def bundled_model_dir(name: str) -> Path:
    """Folder of a model shipped inside the package (``astro3s/resources/models/<name>/``).

    It holds ``model.ckpt`` (weights and hyper-parameters), ``preprocess.yaml``
    (the pre-processing parameters the model was trained with) and
    ``MODEL_CARD.md``.

    Raises
    ------
    CheckpointError
        Unknown name, or the files are missing from the installation.
    """
    from astro3s.resources import _HERE

    if name not in BUNDLED_MODELS:
        raise CheckpointError(f"no bundled model named {name!r}; bundled: {', '.join(BUNDLED_MODELS)}. "
                              "Fix: pass checkpoint=default or the path of a .ckpt file.")
    folder = _HERE / "models" / name
    if not (folder / BUNDLED_CHECKPOINT).is_file():
        raise CheckpointError(f"{folder / BUNDLED_CHECKPOINT}: the bundled {name} model is missing from this "
                              "installation. Fix: reinstall astro3s (pip install --force-reinstall astro3s), "
                              "or pass checkpoint=PATH/TO/model.ckpt.")
    return folder


def model_preprocess_params(path_or_name: str | Path):
    """The pre-processing parameters a model was trained with.

    Looks for ``preprocess.yaml`` in the bundled model's folder or beside the
    checkpoint file (``astro3s-train`` writes it into ``checkpoints/``).

    Returns
    -------
    PreprocessParams or None
        None when no such file exists.
    """
    from astro3s.preprocess import load_params

    if isinstance(path_or_name, str) and path_or_name in BUNDLED_MODELS:
        candidate = bundled_model_dir(path_or_name) / PREPROCESS_PARAMS_NAME
    else:
        candidate = Path(path_or_name).parent / PREPROCESS_PARAMS_NAME
    return load_params(candidate) if candidate.is_file() else None

_FIX = "re-download or re-train it, or pass a different checkpoint="


def read_checkpoint_file(
    path: str | Path, *, map_location: Any = "cpu", trusted: bool = False
) -> Any:
    """``torch.load`` a checkpoint, turning every failure into :class:`CheckpointError`.

    Parameters
    ----------
    path : str or Path
        The file.
    map_location : str or torch.device
        Passed to ``torch.load``.
    trusted : bool
        Allow arbitrary pickled Python objects (``weights_only=False``). Only for
        files from a source you trust: unpickling can run code.
    """
    path = Path(path)
    if not path.exists():
        raise CheckpointError(f"{path}: no such checkpoint file. Fix: check the path, or {_FIX}.")
    if not path.is_file():
        raise CheckpointError(f"{path}: is not a file. Fix: pass the .ckpt file itself.")
    if path.stat().st_size == 0:
        raise CheckpointError(f"{path}: the checkpoint file is empty. Fix: {_FIX}.")
    try:
        return torch.load(path, map_location=map_location, weights_only=not trusted)
    except pickle.UnpicklingError as error:
        if "weights only" in str(error).lower() and not trusted:
            raise CheckpointError(
                f"{path}: the checkpoint holds Python objects other than tensors and plain "
                "containers, which are not loaded by default. Fix: if you trust its source, "
                "pass trusted=True; otherwise re-train it with this version of astro3s."
            ) from None
        raise CheckpointError(
            f"{path}: the checkpoint file is corrupt or not a PyTorch checkpoint ({error}). "
            f"Fix: {_FIX}."
        ) from None
    except (RuntimeError, EOFError, OSError, ValueError, zipfile.BadZipFile, KeyError) as error:
        raise CheckpointError(
            f"{path}: the checkpoint file is corrupt, truncated or not a PyTorch checkpoint "
            f"({type(error).__name__}: {str(error).splitlines()[0] if str(error) else ''}). "
            f"Fix: {_FIX}."
        ) from None


@dataclass
class EncoderLoadReport:
    """What :func:`load_encoder_weights` loaded.

    Attributes
    ----------
    path : Path
        The file.
    loaded : list of str
        Encoder keys that received weights.
    missing : list of str
        Encoder keys with no matching weight in the file (left as initialised).
    unexpected : list of str
        Keys of the file that matched nothing in the encoder.
    shape_mismatched : list of str
        Encoder keys whose weight in the file has another shape (left as initialised).
    source_prefix, target_prefix : str
        Key prefix removed from the file's keys / added to match the encoder.
    """

    path: Path
    loaded: list[str] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)
    unexpected: list[str] = field(default_factory=list)
    shape_mismatched: list[str] = field(default_factory=list)
    source_prefix: str = ""
    target_prefix: str = ""


def _extract_state_dict(raw: Any, path: Path) -> dict[str, torch.Tensor]:
    state = raw
    if isinstance(raw, Mapping):
        for key in ("state_dict", "model_state_dict", "model"):
            if isinstance(raw.get(key), Mapping):
                state = raw[key]
                break
    if not isinstance(state, Mapping) or not state:
        raise CheckpointError(
            f"{path}: holds no state dict (expected a mapping of parameter names to tensors, "
            f"or a Lightning checkpoint with 'state_dict'). Fix: {_FIX}."
        )
    tensors = {str(k): v for k, v in state.items() if isinstance(v, torch.Tensor)}
    if not tensors:
        raise CheckpointError(f"{path}: its state dict holds no tensors. Fix: {_FIX}.")
    return tensors


def _dotted_splits(key: str) -> list[int]:
    """Positions just after each '.' of ``key`` (where a prefix can end)."""
    return [i + 1 for i, ch in enumerate(key) if ch == "."]


def _best_prefixes(
    source: Mapping[str, torch.Tensor], target: Mapping[str, torch.Tensor]
) -> tuple[str, str]:
    """The (strip, add) prefix pair that maps the most source keys onto target keys of equal shape."""
    votes: Counter[tuple[str, str]] = Counter()
    for key, tensor in source.items():
        for split in [0, *_dotted_splits(key)]:
            rest = key[split:]
            if rest in target and target[rest].shape == tensor.shape:
                votes[(key[:split], "")] += 1
    for key, tensor in target.items():
        for split in _dotted_splits(key):
            rest = key[split:]
            if rest in source and source[rest].shape == tensor.shape:
                votes[("", key[:split])] += 1
    if not votes:
        return "", ""
    return max(votes.items(), key=lambda item: (item[1], -len(item[0][0]) - len(item[0][1])))[0]


def load_encoder_weights(
    encoder: nn.Module, path: str | Path, *, prefix: str | None = None
) -> EncoderLoadReport:
    """Load the weights of ``path`` whose names match ``encoder``'s parameters.

    Parameters
    ----------
    encoder : nn.Module
        The module to fill (e.g. ``network.encoder``); modified in place.
    path : str or Path
        A ``torch.save``-d state dict, or a Lightning checkpoint (its
        ``state_dict`` is used).
    prefix : str or None
        Key prefix to strip from the file's keys (e.g. ``"net.encoder."`` for a
        whole astro3s checkpoint). ``None`` finds the prefix pair (one to strip
        from the file's keys, one to add) that matches the most weights, so that
        a whole-network state dict, a Lightning checkpoint, an encoder state dict
        and an ImageNet Inception-ResNet-v2 state dict (into
        ``DenseUp.encoder.inception``) all load.

    Returns
    -------
    EncoderLoadReport
        Loaded, missing, unexpected and shape-mismatched keys (also logged).

    Raises
    ------
    CheckpointError
        The file is missing, corrupt, holds no state dict, or no weight matches.
    """
    path = Path(path)
    state = _extract_state_dict(read_checkpoint_file(path), path)
    target = encoder.state_dict()
    if prefix is None:
        strip, add = _best_prefixes(state, target)
    else:
        strip, add = prefix, ""
    report = EncoderLoadReport(path=path, source_prefix=strip, target_prefix=add)
    selected: dict[str, torch.Tensor] = {}
    for key, tensor in state.items():
        if not key.startswith(strip):
            report.unexpected.append(key)
            continue
        name = add + key[len(strip) :]
        if name not in target:
            report.unexpected.append(key)
        elif target[name].shape != tensor.shape:
            report.shape_mismatched.append(name)
        else:
            selected[name] = tensor
    if not selected:
        raise CheckpointError(
            f"{path}: no weight in this file matches the encoder "
            f"({len(state)} tensors in the file, {len(target)} in the encoder, "
            f"{len(report.shape_mismatched)} with the right name but another shape). "
            "Fix: pass a checkpoint of the same network and width, or encoder_ckpt=null."
        )
    encoder.load_state_dict(selected, strict=False)
    report.loaded = sorted(selected)
    report.missing = sorted(set(target) - set(selected) - set(report.shape_mismatched))
    log.info(
        "%s: loaded %d encoder tensors (strip %r, add %r); %d missing, %d unexpected, "
        "%d of another shape",
        path,
        len(report.loaded),
        strip,
        add,
        len(report.missing),
        len(report.unexpected),
        len(report.shape_mismatched),
    )
    return report


def _checkpoint_path(path_or_name: str | Path) -> Path:
    """The ``.ckpt`` file of a bundled model name or a path."""
    if isinstance(path_or_name, str) and path_or_name in BUNDLED_MODELS:
        return bundled_model_dir(path_or_name) / BUNDLED_CHECKPOINT
    return Path(path_or_name)


def read_model_checkpoint(
    path_or_name: str | Path, *, map_location: Any = "cpu", trusted: bool = False
) -> tuple[Path, dict[str, Any], dict[str, torch.Tensor]]:
    """Read an astro3s checkpoint without building anything (no Lightning import).

    Parameters
    ----------
    path_or_name : str or Path
        A ``.ckpt`` written by ``astro3s-train`` or a bundled model name.
    map_location : str or torch.device
        Device of the loaded tensors.
    trusted : bool
        Allow arbitrary pickled objects in the file (see :func:`read_checkpoint_file`).

    Returns
    -------
    path : Path
        The file read.
    hparams : dict
        The ``SegmentationModule`` hyper-parameters; ``hparams["net_config"]``
        rebuilds the network (:func:`astro3s.models.build_network_from_config`).
    state_dict : dict of str to Tensor
        The module's weights (the network's under ``net.``).

    Raises
    ------
    CheckpointError
        Unknown bundled model, missing / corrupt / truncated file, or a file
        that is not an astro3s ``SegmentationModule`` checkpoint.
    """
    path = _checkpoint_path(path_or_name)
    raw = read_checkpoint_file(path, map_location=map_location, trusted=trusted)
    if not isinstance(raw, Mapping) or not isinstance(raw.get("state_dict"), Mapping):
        raise CheckpointError(
            f"{path}: is not a Lightning checkpoint (no 'state_dict'). Fix: pass the .ckpt "
            "written during training, or re-train."
        )
    hparams = raw.get("hyper_parameters") or {}
    if not isinstance(hparams, Mapping) or not hparams.get("net_config"):
        raise CheckpointError(
            f"{path}: is not an astro3s SegmentationModule checkpoint (no 'net_config' in its "
            f"hyper-parameters). Fix: pass a checkpoint written by astro3s-train, or re-train."
        )
    return path, dict(hparams), dict(raw["state_dict"])
