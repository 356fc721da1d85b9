"""The one place where configuration becomes typed parameters.

Where the Hydra configuration tree lives (:func:`config_dir`): in a source
checkout (including editable installs) the top-level ``conf/`` folder; a wheel
ships the same tree as ``astro3s/_conf``.

How config nodes reach the stages, which never see OmegaConf:

- objects a config describes with ``_target_`` (data modules, callbacks) are
  built by ``hydra.utils.instantiate``; their configs set ``_convert_: all``
  (``conf/data/shared/loader.yaml``, ``conf/callbacks/correlation_analysis.yaml``),
  so their constructors receive plain dicts and lists;
- a config section that becomes a parameter dataclass goes through
  :func:`params_from_config` (unknown keys, numbers, tuples); any other node
  is made plain by :func:`to_plain`;
- library code that needs a config by name (a simulation preset) composes it
  with :func:`compose_plain`, exactly as the entry point would, with or without
  a running Hydra app.

:func:`astro3s.errors.did_you_mean` is the one "did you mean" hint of every unknown-key message.
"""

from __future__ import annotations

import dataclasses
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any, TypeVar

from astro3s.errors import Astro3sError, ConfigError, did_you_mean

_PACKAGE_DIR = Path(__file__).resolve().parents[1]

P = TypeVar("P")

_COMPOSE_LOCK = threading.Lock()  # compose swaps Hydra's global state for a moment


def config_dir() -> Path:
    """Return the absolute path of the Hydra config folder."""
    for candidate in (_PACKAGE_DIR.parent / "conf", _PACKAGE_DIR / "_conf"):
        if (candidate / "paths").is_dir():
            return candidate
    raise FileNotFoundError(
        f"astro3s configuration folder not found next to {_PACKAGE_DIR}; reinstall astro3s."
    )


def _register_resolvers() -> None:
    # ${astro3s.resource:NAME} -> absolute path of a file shipped in astro3s/resources
    from omegaconf import OmegaConf

    from astro3s.resources import resource_path

    if not OmegaConf.has_resolver("astro3s.resource"):
        OmegaConf.register_new_resolver("astro3s.resource", lambda name: str(resource_path(name)))


CONFIG_DIR = str(config_dir())
_register_resolvers()


def to_plain(node: Any) -> Any:
    """A config node as plain Python (``DictConfig`` -> dict, ``ListConfig`` -> list, resolved); anything
    else unchanged."""
    from omegaconf import DictConfig, ListConfig, OmegaConf

    if isinstance(node, DictConfig | ListConfig):
        return OmegaConf.to_container(node, resolve=True)
    return node


def whole_number(value: Any, key: str, *, example: Any = None, minimum: int | None = None) -> int:
    """``value`` as an int (``32``, ``32.0``), or a :class:`ConfigError` that names ``key`` and an example.

    Parameters
    ----------
    value : Any
        The config value.
    key : str
        Its key, as the user writes it on the command line.
    example : Any, optional
        A valid value for the fix (default: ``minimum``, else 1).
    minimum : int, optional
        Smallest valid value.
    """
    try:
        if isinstance(value, bool):
            raise ValueError
        number = int(value)
        if number != float(value):
            raise ValueError
    except (TypeError, ValueError):
        example = example if example is not None else max(minimum or 0, 1)
        raise ConfigError(f"{key}={value!r} must be a whole number. Fix: e.g. {key}={example}.") from None
    if minimum is not None and number < minimum:
        raise ConfigError(f"{key}={number} must be >= {minimum}.")
    return number


def _typed(value: Any, default: Any, key: str) -> Any:
    """``value`` in the type of the field's ``default``: whole numbers, numbers and tuples are checked."""
    if value is None or default is None or isinstance(default, bool | str):
        return value
    if isinstance(default, int):
        return whole_number(value, key, example=default)
    if isinstance(default, float):
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ConfigError(f"{key}={value!r} must be a number. Fix: e.g. {key}={default}.")
        return float(value)
    if isinstance(default, tuple) and isinstance(value, Sequence) and not isinstance(value, str):
        return tuple(value)
    return value


def params_from_config(cls: type[P], section: Any, name: str) -> P:
    """A config section as the parameter dataclass ``cls`` (the one converter of such sections).

    Parameters
    ----------
    cls : dataclass type
        E.g. :class:`~astro3s.correlation.CorrelationParams`; its defaults give each field's type.
    section : DictConfig, mapping, ``cls`` instance or None
        The section; None or an empty one gives the defaults.
    name : str
        The section's key in the config (``"correlation"``), used in the messages.

    Raises
    ------
    ConfigError
        An unknown key (with the closest known one), a text where a number belongs, a fraction where a
        whole number belongs, or a value the dataclass rejects.
    """
    if isinstance(section, cls):
        return section
    values = dict(to_plain(section) or {})
    defaults = {f.name: f.default for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    for key in values:
        if key not in defaults:
            raise ConfigError(f"unknown {name} option {name}.{key}{did_you_mean(key, defaults, f'{name}.')}; "
                              f"valid: {', '.join(defaults)}.")
    values = {key: _typed(value, defaults[key], f"{name}.{key}") for key, value in values.items()}
    try:
        return cls(**values)
    except Astro3sError:
        raise
    except (TypeError, ValueError) as err:  # a check of the dataclass's own that is not a ConfigError
        raise ConfigError(f"{name}: {err}") from None


def compose(config_name: str, overrides: Sequence[str] = (), *, return_hydra_config: bool = False) -> Any:
    """Compose the entry point config ``config_name`` with ``overrides`` as its app would (the ``hydra`` node
    only with ``return_hydra_config``).

    Works anywhere: scripts, tests, library code, and inside a running Hydra app, whose own Hydra
    instance is put back afterwards.

    Raises
    ------
    hydra.errors.HydraException
        An override that does not parse or names no option of a group.
    """
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra
    from hydra.core.utils import JobRuntime

    with _COMPOSE_LOCK:
        running = GlobalHydra.instance().hydra if GlobalHydra.instance().is_initialized() else None
        job_name = JobRuntime.instance().get("name")  # initialize_config_dir renames the job "app"
        GlobalHydra.instance().clear()
        try:
            with initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3"):
                return hydra_compose(config_name=config_name, overrides=list(overrides),
                                     return_hydra_config=return_hydra_config)
        finally:
            GlobalHydra.instance().clear()
            if running is not None:
                GlobalHydra.instance().initialize(running)
            JobRuntime.instance().set("name", job_name)


def compose_plain(config_name: str, key: str, overrides: Sequence[str] = ()) -> Any:
    """``key`` of the composed ``config_name`` config (:func:`compose`) as plain Python, resolved."""
    from omegaconf import OmegaConf

    return to_plain(OmegaConf.select(compose(config_name, overrides), key, throw_on_missing=True))
