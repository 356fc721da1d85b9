"""Shared wrapper for the Hydra entry points.

``task_wrapper`` seeds everything, logs and saves the resolved config, runs the task
inside the Hydra run folder, closes loggers on failure, and turns the known
user errors (:class:`astro3s.errors.Astro3sError`) into one clear line on
stderr with a non-zero exit code. ``sweep_job`` and ``metric_value`` serve
the ``hydra.main`` functions of tasks that sweepers run and optimise.
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
        except Exception as err:
            cause = err.__cause__
            if isinstance(cause, Astro3sError):  # raised inside hydra.utils.instantiate, which wraps it
                log.error("%s", cause)
                print(f"astro3s: error: {cause}", file=sys.stderr)
                raise SystemExit(2) from None
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


class JobFailed(RuntimeError):
    """A job of a Hydra multirun (a fold, a sweep trial) stopped with a user error.

    Raised in place of the wrapper's ``SystemExit`` so that Hydra records the
    job as failed instead of ending the whole sweep: the Optuna sweeper counts
    it against ``hydra.sweeper.max_failure_rate``, the basic sweeper reports
    it after the batch.
    """


def _in_multirun() -> bool:
    try:
        from hydra.core.hydra_config import HydraConfig
        from hydra.types import RunMode

        return HydraConfig.initialized() and HydraConfig.get().mode == RunMode.MULTIRUN
    except Exception:  # outside Hydra (tests, API use): not a multirun
        return False


def sweep_job(task: Callable[[DictConfig], T], cfg: DictConfig) -> T:
    """Run a wrapped ``task(cfg)``; inside a multirun a user error fails the job, not the sweep.

    Parameters
    ----------
    task : callable
        A :func:`task_wrapper`-decorated task.
    cfg : DictConfig

    Raises
    ------
    JobFailed
        In a multirun, when the task exited with a non-zero status (its
        one-line message is already on stderr and in the job's log).
    """
    try:
        return task(cfg)
    except SystemExit as err:
        if err.code in (0, None) or not _in_multirun():
            raise
        from hydra.core.hydra_config import HydraConfig

        hydra_cfg = HydraConfig.get()
        raise JobFailed(f"job {hydra_cfg.job.num} failed with exit status {err.code}; its error is printed "
                        f"above and logged in {hydra_cfg.runtime.output_dir}") from None


def metric_value(metrics: dict[str, float], name: str | None) -> float | None:
    """The value of ``optimized_metric`` among a task's metrics (None when no metric is named).

    Raises
    ------
    ConfigError
        When ``name`` is not among ``metrics``; the message lists those that are.
    """
    if not name:
        return None
    if name not in metrics:
        known = ", ".join(sorted(metrics)) or "none"
        raise ConfigError(f"optimized_metric={name!r} was not logged by this run (logged: {known}); "
                          "set optimized_metric to one of them")
    return float(metrics[name])


def describe_config_error(err: BaseException, command: str = "astro3s") -> str:
    """One line for a Hydra composition error: the bad key, a close match, and the fix.

    Parameters
    ----------
    err : Exception
        A ``hydra.errors`` composition, missing-config or override-parse error.
    command : str
        The console script, named in the hint (``astro3s-infer --cfg job``).
    """
    import difflib

    cause = err.__cause__
    full_key = getattr(cause, "full_key", None)
    parent = getattr(cause, "parent_node", None)
    if full_key and isinstance(parent, DictConfig):
        key = str(getattr(cause, "key", full_key))
        prefix = str(full_key)[: -len(key)] if str(full_key).endswith(key) else ""
        known = [str(k) for k in parent.keys() if str(k) != "hydra"]
        if not known and prefix:  # an empty section such as combine: {}, filled with +section.key=value
            return (f"{prefix.rstrip('.')} has no option {key} until you add it. Fix: write "
                    f"+{full_key}=VALUE (with a leading +).")
        close = difflib.get_close_matches(key, known, n=1)
        hint = f" (did you mean {prefix}{close[0]}?)" if close else (
            f" (options there: {', '.join(known)})" if known and len(known) <= 20 else "")
        return (f"unknown config option {full_key}{hint}. Fix: check the spelling (`{command} --cfg job` "
                "prints every option); a leading + (+key=value) adds a new option on purpose.")
    text = str(err).strip()
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    if "Config search path:" in lines:  # MissingConfigException: keep the problem and the options
        lines = lines[: lines.index("Config search path:")]
    first = lines[0] if lines else type(err).__name__
    options = [line for line in lines[1:] if not line.startswith(("Available options", "See https"))]
    extra = f"; available: {', '.join(options)}" if options and "Available options" in text else ""
    reason = f" ({str(cause).splitlines()[0]})" if cause is not None and str(cause) else ""
    return (f"configuration problem: {first.rstrip('.')}{reason}{extra}. Fix: check the spelling of your "
            f"overrides (`{command} --cfg job` prints the composed config).")


def run_hydra_main(hydra_main: Callable[[], Any], command: str) -> Any:
    """Call a ``@hydra.main`` function; Hydra's own config errors become one line on stderr, exit 2.

    Hydra reports an unknown key (``correlation.radus=3``), a missing config
    group option or an unparsable override itself, in several lines ending
    with a hint about ``HYDRA_FULL_ERROR``, before any astro3s code runs. This
    lets those errors through to us and prints them as the task wrapper
    prints astro3s errors. ``HYDRA_FULL_ERROR=1`` keeps Hydra's full report.

    Parameters
    ----------
    hydra_main : callable
        The decorated function, called without arguments.
    command : str
        The console script's name, used in the message.
    """
    from hydra.errors import ConfigCompositionException, MissingConfigException, OverrideParseException

    user_full = os.environ.get("HYDRA_FULL_ERROR") == "1"
    saved = os.environ.get("HYDRA_FULL_ERROR")
    os.environ["HYDRA_FULL_ERROR"] = "1"  # Hydra then raises composition errors instead of printing them
    try:
        return hydra_main()
    except (ConfigCompositionException, MissingConfigException, OverrideParseException) as err:
        if user_full:
            raise
        print(f"astro3s: error: {describe_config_error(err, command)}", file=sys.stderr)
        raise SystemExit(2) from None
    finally:
        if saved is None:
            os.environ.pop("HYDRA_FULL_ERROR", None)
        else:
            os.environ["HYDRA_FULL_ERROR"] = saved
