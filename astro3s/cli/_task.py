"""Shared wrapper for the Hydra entry points.

``task_wrapper`` seeds everything, logs and saves the resolved config, runs the task
inside the Hydra run folder, closes loggers on failure, and turns the known
user errors (:class:`astro3s.errors.Astro3sError`) into one clear line on
stderr with a non-zero exit code. ``sweep_job`` and ``metric_value`` serve
the ``hydra.main`` functions of tasks that sweepers run and optimise.
"""

from __future__ import annotations

import contextlib
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
from omegaconf import DictConfig, ListConfig, OmegaConf
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


#: the resolved config as a tree, written to every run folder
CONFIG_TREE_NAME = "config_tree.log"


def apply_extras(cfg: DictConfig) -> None:
    """Apply the optional utilities of the ``extras`` config group.

    The resolved config tree always goes to ``config_tree.log`` in the run
    folder (:func:`save_config_tree`); it is printed on the screen too only
    with ``extras.print_config=true``. ``extras.torch_threads`` caps torch's
    CPU threads (several jobs of a joblib multirun on one machine).
    """
    extras = cfg.get("extras") or {}
    if extras.get("ignore_warnings"):
        warnings.filterwarnings("ignore")
    threads = extras.get("torch_threads")
    if threads is not None:
        import torch

        if int(threads) < 1:
            raise ConfigError(f"extras.torch_threads must be >= 1 or null, got {threads}.")
        torch.set_num_threads(int(threads))
    save_config_tree(cfg)
    if extras.get("print_config"):
        print_config_tree(cfg, resolve=True)


def run_folder(cfg: DictConfig) -> Path | None:
    """This run's folder: ``paths.output_dir``, else Hydra's output folder; None outside a Hydra run."""
    folder = None
    with contextlib.suppress(Exception):  # unresolvable outside Hydra (API use, plain test configs)
        folder = OmegaConf.select(cfg, "paths.output_dir", default=None)
    if not folder:
        with contextlib.suppress(Exception):
            from hydra.core.hydra_config import HydraConfig

            folder = HydraConfig.get().runtime.output_dir if HydraConfig.initialized() else None
    return Path(str(folder)) if folder and str(folder) != "???" else None


def config_tree_text(cfg: DictConfig, *, resolve: bool = True, width: int = 100) -> str:
    """The config as the plain-text tree :func:`print_config_tree` shows (YAML when rich is missing)."""
    import io

    try:
        import rich.console

        buffer = io.StringIO()
        console = rich.console.Console(file=buffer, width=width, color_system=None, force_terminal=False,
                                       no_color=True, highlight=False)
        console.print(_config_tree(cfg, resolve=resolve))
        return "".join(line.rstrip() + "\n" for line in buffer.getvalue().splitlines())  # no padding
    except ImportError:
        import textwrap

        return "".join(f"{key}:\n{textwrap.indent(_branch_text(cfg, str(key), resolve=resolve), '  ')}\n"
                       for key in cfg.keys() if key != "hydra")


def save_config_tree(cfg: DictConfig, folder: str | Path | None = None) -> Path | None:
    """Write the resolved config tree to ``folder/config_tree.log`` (default: the run folder).

    Returns the file, or None when there is no run folder or it cannot be
    written (logged; the tree is a record, never a reason to fail a run).
    """
    from astro3s.io import write_text

    folder = run_folder(cfg) if folder is None else Path(folder)
    if folder is None:
        return None
    try:
        return write_text(folder / CONFIG_TREE_NAME, config_tree_text(cfg, resolve=True))
    except Exception as err:  # noqa: BLE001 - an unresolvable key or an unwritable folder: say so, go on
        log.warning("could not write %s in %s: %s", CONFIG_TREE_NAME, folder, str(err).splitlines()[0] if
                    str(err) else type(err).__name__)
        return None


def _branch_text(cfg: DictConfig, key: str, *, resolve: bool) -> str:
    """YAML of ``cfg[key]``, resolved when ``resolve`` and possible (else as written)."""
    for attempt in ((True, False) if resolve else (False,)):
        try:
            node = cfg._get_node(key)
            if isinstance(node, (DictConfig, ListConfig)):
                return OmegaConf.to_yaml(node, resolve=attempt)
            return str(cfg[key] if attempt else node._value())
        except OmegaConfBaseException:  # an interpolation that cannot be resolved here
            continue
    return "???"


def _config_tree(cfg: DictConfig, *, resolve: bool) -> Any:
    """The rich tree of a config: a branch per top-level key (Hydra's own settings left out), YAML under it."""
    import rich.syntax
    import rich.tree

    tree = rich.tree.Tree("CONFIG", style="dim")
    for key in cfg.keys():
        if key == "hydra":
            continue
        branch = tree.add(str(key), style="bold")
        branch.add(rich.syntax.Syntax(_branch_text(cfg, str(key), resolve=resolve), "yaml"))
    return tree


def print_config_tree(cfg: DictConfig, *, resolve: bool = True) -> None:
    """Print the config as a tree (rich; plain text without it)."""
    try:
        import rich

        rich.print(_config_tree(cfg, resolve=resolve))
    except ImportError:
        print(config_tree_text(cfg, resolve=resolve))


def progress_setting(cfg: DictConfig) -> bool | None:
    """Progress bars of a command: False with ``extras=quiet`` (``extras.progress=false``), else None
    (on a terminal only); see :mod:`astro3s.utils.progress`."""
    from astro3s.utils.progress import progress_from_extras

    return progress_from_extras(cfg.get("extras"))


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
        outcome = "failed after"  # until the task returns: the last line must not call a failure done
        try:
            apply_extras(cfg)
            seed = seed_everything(cfg.get("seed"))
            log.info("%s: seed %d, working in %s", task.__name__, seed, Path.cwd())
            result = task(cfg)
            outcome = "done in"
            return result
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
            log.info("%s: %s %.1f s", task.__name__, outcome, time.perf_counter() - start)

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
    from astro3s.errors import did_you_mean

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
        hint = did_you_mean(key, known, prefix) or (
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


# whether the cyclic garbage collector was enabled when each open startup_without_gc block began
_STARTUP_GC: list[bool] = []


@contextlib.contextmanager
def startup_without_gc() -> Any:
    """Python's cyclic garbage collector off while an entry point starts (imports, model), on after.

    Importing torch, SciPy and Hydra creates some million objects; each full
    collection walks all of them again, and an ``astro3s-infer`` run of a D1
    movie spent 0.32-0.36 s in five of them (of 4.7-5.2 s; 2 cores,
    2026-12-05). With the collector off until :func:`end_startup`, which
    freezes what start-up created (``gc.freeze``: never examined again, as
    modules and weights live to the end anyway) and turns it back on, the run
    spends ~0.04 s in collections. Leaving the block turns the collector back
    on in any case (an error before :func:`end_startup`). Reference counting
    frees nearly everything anyway; only cyclic garbage waits.
    """
    import gc

    _STARTUP_GC.append(gc.isenabled())
    gc.disable()
    try:
        yield
    finally:
        if _STARTUP_GC.pop():
            gc.enable()


def end_startup() -> None:
    """Inside :func:`startup_without_gc`: freeze the objects made so far and turn the collector on.
    Elsewhere (the task called in-process, e.g. by tests) nothing is done."""
    import gc

    if _STARTUP_GC and _STARTUP_GC[-1] and not gc.isenabled():
        gc.freeze()
        gc.enable()


def exit_without_teardown(main: Callable[[], Any]) -> None:
    """Run a console entry point, then end the process without the interpreter's teardown.

    A finished ``astro3s-infer`` run of a D1 movie spent 0.7-1.0 s in
    Python's shutdown, freeing torch's and the pipeline's objects one by one
    (2 cores: 6.1-6.4 -> 5.1-5.6 s whole process; experiments/README.md).
    Every output is written and renamed into place before the entry point
    returns, so the process may end at once: threads that are not daemons
    are waited for, ``atexit`` handlers run, log handlers and the standard
    streams are flushed, then :func:`os._exit` ends the process with the
    entry point's exit code (0, or that of its ``SystemExit``). An unexpected
    exception, or a ``SystemExit`` carrying a message, takes Python's normal
    path (traceback or message, teardown). For the console scripts and
    ``python -m`` only: called in-process (tests), ``main`` itself is used.
    """
    import atexit
    import threading

    try:
        main()
        code = 0
    except SystemExit as err:
        if err.code is not None and not isinstance(err.code, int):
            raise  # a message as exit code: Python prints it
        code = int(err.code or 0)
    for thread in threading.enumerate():  # as a normal exit does: wait for the threads that are not daemons
        if thread is not threading.current_thread() and not thread.daemon:
            thread.join()
    atexit._run_exitfuncs()  # what a normal exit would run (tqdm's monitor thread, loggers of libraries)
    logging.shutdown()
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(Exception):
            stream.flush()
    os._exit(code)


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
