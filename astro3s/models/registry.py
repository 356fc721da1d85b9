"""Network names and :func:`build_network`."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from astro3s.errors import ConfigError
from astro3s.models.base import SegmentationNetwork, plain

#: Network name -> "module:Class" (imported on use).
NETWORKS: dict[str, str] = {
    "dense_up": "astro3s.models.dense_up:DenseUp",
    "unet": "astro3s.models.unet:UNet",
    "unetpp": "astro3s.models.unet:UNetPlusPlus",
}


def network_class(name: str) -> type[SegmentationNetwork]:
    """The network class registered under ``name`` (see :data:`NETWORKS`)."""
    import importlib

    if name not in NETWORKS:
        raise ConfigError(f"unknown network {name!r}; choose one of {sorted(NETWORKS)}")
    module_name, class_name = NETWORKS[name].split(":")
    return getattr(importlib.import_module(module_name), class_name)


def build_network(name: str, **kwargs: Any) -> SegmentationNetwork:
    """Build the network ``name`` (``dense_up``, ``unet`` or ``unetpp``) with ``kwargs``.

    Unknown names and unknown or invalid arguments raise :class:`ConfigError`.
    """
    cls = network_class(name)
    try:
        return cls(**plain(kwargs))
    except TypeError as error:
        raise ConfigError(f"network {name!r}: {error}") from None


def build_network_from_config(config: Mapping[str, Any]) -> SegmentationNetwork:
    """Rebuild a network from its ``config`` dict (``{"name": ..., **kwargs}``)."""
    config = dict(plain(config))
    name = config.pop("name", None)
    if name is None:
        raise ConfigError(f"network config has no 'name': {config!r}")
    return build_network(name, **config)
