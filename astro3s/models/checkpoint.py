"""Loading trained models.

:func:`load_network` turns a ``.ckpt`` file written by Lightning (or the name of a
bundled model) into an eval-mode network without importing Lightning (inference);
:func:`load_model` into the whole :class:`~astro3s.models.SegmentationModule`.
Reading the files and loading encoder weights live in
:mod:`astro3s.models.weights` (re-exported here): the dependencies go one way,
``weights`` <- ``base`` <- ``registry`` <- ``checkpoint`` (and ``module``, which
this module imports only inside :func:`load_model`, so that inference does not
import Lightning). Every failure a user can cause raises
:class:`~astro3s.errors.CheckpointError` naming the file.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from torch import nn

from astro3s.errors import CheckpointError
from astro3s.models.registry import build_network_from_config
from astro3s.models.weights import (BUNDLED_CHECKPOINT, BUNDLED_MODELS, PREPROCESS_PARAMS_NAME, EncoderLoadReport,
                                    bundled_model_dir, load_encoder_weights, model_preprocess_params,
                                    read_checkpoint_file, read_model_checkpoint)
from astro3s.models.weights import _FIX

if TYPE_CHECKING:
    from astro3s.models.module import SegmentationModule

__all__ = ["BUNDLED_CHECKPOINT", "BUNDLED_MODELS", "PREPROCESS_PARAMS_NAME", "EncoderLoadReport", "bundled_model_dir",
           "load_encoder_weights", "load_model", "load_network", "model_preprocess_params", "read_checkpoint_file",
           "read_model_checkpoint"]


def _incompatible(path: Path, error: BaseException) -> CheckpointError:
    return CheckpointError(
        f"{path}: its hyper-parameters do not build a model with this version of astro3s "
        f"({type(error).__name__}: {error}). Fix: re-train, or pass a different checkpoint=."
    )


def _weights_do_not_fit(path: Path, error: BaseException) -> CheckpointError:
    first_lines = " ".join(str(error).splitlines()[:3])
    return CheckpointError(
        f"{path}: its weights do not fit the network it describes ({first_lines}). Fix: {_FIX}."
    )


def _device_of(map_location: Any) -> Any:
    return map_location if not callable(map_location) else "cpu"


def load_network(
    path_or_name: str | Path, *, map_location: Any = "cpu", trusted: bool = False
) -> nn.Module:
    """Load the trained network of a checkpoint for inference (eval mode), without Lightning.

    The plain-torch :class:`~astro3s.models.SegmentationNetwork` is rebuilt from
    the checkpoint's ``net_config`` through the network registry and given the
    ``net.*`` weights; neither the LightningModule nor ``pytorch_lightning`` is
    imported, so this is what inference uses (:func:`load_model` gives the
    whole :class:`SegmentationModule`, for training code).

    Parameters
    ----------
    path_or_name : str or Path
        A ``.ckpt`` written by ``astro3s-train`` or a bundled model name (``"default"``).
    map_location : str or torch.device
        Device of the network.
    trusted : bool
        Allow arbitrary pickled objects in the file (see :func:`read_checkpoint_file`).

    Returns
    -------
    SegmentationNetwork
        In eval mode, on ``map_location``.

    Raises
    ------
    CheckpointError
        As :func:`load_model`.
    """
    path, hparams, state = read_model_checkpoint(path_or_name, map_location=map_location, trusted=trusted)
    try:
        network = build_network_from_config(hparams["net_config"])
    except Exception as error:  # incompatible hyper-parameters
        raise _incompatible(path, error) from None
    weights = {key[len("net."):]: value for key, value in state.items() if key.startswith("net.")}
    try:
        network.load_state_dict(weights, strict=True)
    except RuntimeError as error:
        raise _weights_do_not_fit(path, error) from None
    network.to(_device_of(map_location))
    network.eval()
    return network


def load_model(
    path_or_name: str | Path, *, map_location: Any = "cpu", trusted: bool = False
) -> SegmentationModule:
    """Load a trained :class:`SegmentationModule` (eval mode); imports Lightning.

    Inference needs only the network: :func:`load_network` gives it without
    importing Lightning.

    Parameters
    ----------
    path_or_name : str or Path
        A ``.ckpt`` file written by Lightning's ``ModelCheckpoint`` /
        ``Trainer.save_checkpoint``, or the name of a bundled model
        (``"default"``, see :func:`bundled_model_dir`).
    map_location : str or torch.device
        Device of the loaded weights.
    trusted : bool
        Allow arbitrary pickled objects in the file (see :func:`read_checkpoint_file`).

    Raises
    ------
    CheckpointError
        Unknown bundled model, missing / corrupt / truncated / incompatible file.
    """
    path, hparams, state = read_model_checkpoint(path_or_name, map_location=map_location, trusted=trusted)
    from astro3s.models.module import SegmentationModule  # imports Lightning: only when asked for

    try:
        module = SegmentationModule(**hparams)
    except Exception as error:  # incompatible hyper-parameters
        raise _incompatible(path, error) from None
    try:
        module.load_state_dict(state, strict=True)
    except RuntimeError as error:
        raise _weights_do_not_fit(path, error) from None
    module.to(_device_of(map_location))
    module.eval()
    return module
