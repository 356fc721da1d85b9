"""Shared wrapper for the Hydra entry points.

``run_task`` seeds everything, logs and saves the resolved config, runs the task
inside the Hydra run folder, closes loggers on failure, and turns the known
user errors (:class:`astro3s.errors.Astro3sError`) into one clear line on
stderr with a non-zero exit code.
"""

from __future__ import annotations

import functools
import logging
import os
import random
import sys
import time
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from astro3s.errors import Astro3sError, ConfigError

log = logging.getLogger(__name__)

T = TypeVar("T")


def seed_everything(seed: int | None) -> int:
    """Seed Python, NumPy and torch (if imported); return the seed used."""
    if seed is None:
        seed = int.from_bytes(os.urandom(4), "little") % (2**31)
    seed = int(seed)
    random.seed(seed)
    np.random.seed(seed % (2**32))
    torch = sys.modules.get("torch")
    if torch is not None:
        torch.manual_seed(seed)
    return seed


def apply_extras(cfg: DictConfig) -> None:
    """Apply the optional utilities of the ``extras`` config group."""
    extras = cfg.get("extras") or {}
    if extras.get("ignore_warnings"):
        warnings.filterwarnings("ignore")
    if extras.get("print_config"):
        print_config_tree(cfg, resolve=True)


def print_config_tree(cfg: DictConfig, *, resolve: bool = True) -> None:
    """Print the config as a tree (rich) and log it as YAML."""
    text = OmegaConf.to_yaml(cfg, resolve=resolve)
    log.debug("resolved config:\n%s", text)
    try:
        import rich
        import rich.syntax
        import rich.tree

        tree = rich.tree.Tree("CONFIG", style="dim")
        for key, value in cfg.items():
            branch = tree.add(str(key), style="bold")
            body = OmegaConf.to_yaml(value, resolve=resolve) if isinstance(value, DictConfig) else str(value)
            branch.add(rich.syntax.Syntax(body, "yaml"))
        rich.print(tree)
    except Exception:  # printing the tree is a nicety; never fail a run over it
        print(text)


def _close_loggers() -> None:
    wandb = sys.modules.get("wandb")
    if wandb is not None and getattr(wandb, "run", None) is not None:
        wandb.finish()


def task_wrapper(task: Callable[[DictConfig], T]) -> Callable[[DictConfig], T]:
    """Decorate a ``task(cfg)`` so that failures are logged and shown as one line.

    Known user errors exit with status 2 and a single message; anything else is
    logged with its traceback and re-raised. Loggers are closed either way.
    """

    @functools.wraps(task)
    def wrapped(cfg: DictConfig) -> T:
        start = time.perf_counter()
        try:
            apply_extras(cfg)
            seed = seed_everything(cfg.get("seed"))
            log.info("%s: seed %d, working in %s", task.__name__, seed, Path.cwd())
            return task(cfg)
        except Astro3sError as err:
            log.error("%s", err)
            print(f"astro3s: error: {err}", file=sys.stderr)
            raise SystemExit(2) from None
        except OmegaConfBaseException as err:
            msg = f"configuration problem: {err}".splitlines()[0]
            log.error("%s", msg)
            print(f"astro3s: error: {msg}. Check the spelling of your overrides.", file=sys.stderr)
            raise SystemExit(2) from None
        except KeyboardInterrupt:
            log.error("%s: interrupted; finished outputs are kept, partial ones removed", task.__name__)
            raise SystemExit(130) from None
        except Exception:
            log.exception("%s failed", task.__name__)
            raise
        finally:
            _close_loggers()
            log.info("%s: done in %.1f s", task.__name__, time.perf_counter() - start)

    return wrapped


def require(cfg: DictConfig, key: str, hint: str) -> Any:
    """Return ``cfg[key]`` or raise a :class:`ConfigError` that says how to set it."""
    value = OmegaConf.select(cfg, key, default=None)
    if value is None or value == "???":
        raise ConfigError(f"`{key}` is required: {hint}")
    return value
