"""Progress bars of the long stages, all decided the same way.

``progress`` is three-valued everywhere in astro3s:

- ``None``: a bar when the output is a terminal (tqdm's ``disable=None``), so
  logs redirected to a file and test runs stay free of bar updates;
- ``False``: no bar (``extras=quiet`` on the command line);
- ``True``: a bar even when the output is not a terminal.

Log lines are written either way; a bar only adds the running count.
"""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Iterable, Iterator, Mapping
from typing import Any

__all__ = ["bar", "bar_disabled", "logs_above_bars", "progress_from_extras", "show_bars"]


def bar_disabled(progress: bool | None) -> bool | None:
    """tqdm's ``disable`` for a ``progress`` setting (None: decided by tqdm, on a terminal only)."""
    return None if progress is None else not progress


def show_bars(progress: bool | None, stream: Any = None) -> bool:
    """Whether a bar would be drawn: ``progress``, or for None whether ``stream`` (stderr) is a terminal."""
    if progress is not None:
        return bool(progress)
    stream = sys.stderr if stream is None else stream
    isatty = getattr(stream, "isatty", None)
    try:
        return bool(isatty()) if callable(isatty) else False
    except (OSError, ValueError):  # a closed or detached stream
        return False


def bar(iterable: Iterable[Any] | None = None, *, progress: bool | None, desc: str, unit: str = "it",
        total: float | None = None, leave: bool = False) -> Any:
    """A tqdm bar (``tqdm.auto``) over ``iterable``, or one updated by hand when ``iterable`` is None.

    Parameters
    ----------
    iterable : iterable, optional
        What the bar counts; None for a bar advanced with ``update(n)``.
    progress : bool or None
        See the module docstring.
    desc, unit : str
        Label and unit of the bar.
    total : float, optional
        Expected count (default ``len(iterable)`` when it has one).
    leave : bool
        Keep the finished bar on the screen (default: cleared, the log line says the result).

    Returns
    -------
    tqdm
        Usable as an iterator and as a context manager (closing it).
    """
    from tqdm.auto import tqdm

    return tqdm(iterable, desc=desc, unit=unit, total=total, leave=leave, disable=bar_disabled(progress),
                dynamic_ncols=True)


@contextlib.contextmanager
def logs_above_bars(progress: bool | None) -> Iterator[None]:
    """Inside, log lines on the console are printed above the bars instead of through them.

    The console handlers of the root logger (Hydra's) write through
    ``tqdm.write`` while bars may be shown; nothing changes when they are not.
    """
    if not show_bars(progress):
        yield
        return
    from tqdm.contrib.logging import logging_redirect_tqdm

    with logging_redirect_tqdm():
        yield


def progress_from_extras(extras: Mapping[str, Any] | None) -> bool | None:
    """The ``progress`` setting of a command's ``extras`` config group.

    ``extras.progress: false`` (set by ``extras=quiet``) turns every bar off;
    anything else leaves the decision to the terminal (None).
    """
    value = (extras or {}).get("progress", None)
    return False if value is False else None
