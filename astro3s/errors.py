"""Exceptions with one-line, user-facing messages.

Every error that a user can cause (a bad file, a bad parameter, a corrupt
checkpoint) is raised as a subclass of :class:`Astro3sError`. The entry points
catch these and print the message alone, without a traceback; anything else is
a bug and keeps its traceback.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path


class Astro3sError(Exception):
    """Base class of errors whose message is meant for the user."""


class InputError(Astro3sError, ValueError):
    """A movie, annotation or other input file cannot be used.

    Parameters
    ----------
    path : str or Path or None
        The offending file; it is named at the start of the message.
    problem : str
        What is wrong.
    fix : str, optional
        What the user can do about it.
    """

    def __init__(self, path: str | Path | None, problem: str, fix: str | None = None):
        self.path = None if path is None else Path(path)
        self.problem = problem
        self.fix = fix
        where = f"{self.path}: " if self.path is not None else ""
        message = f"{where}{problem}"
        if fix:
            message += f" Fix: {fix}"
        super().__init__(message)


class ConfigError(Astro3sError, ValueError):
    """A configuration value is missing, misspelled or out of range."""


class CheckpointError(Astro3sError):
    """A model checkpoint or parameter file cannot be loaded."""


def did_you_mean(word: str, options: Iterable[str], prefix: str = "") -> str:
    """``" (did you mean PREFIXclosest?)"`` for the option closest to ``word``, or ``""`` when none is close.

    Parameters
    ----------
    word : str
        The unknown key or name, as the user wrote it.
    options : iterable of str
        The valid ones.
    prefix : str
        Written before the suggestion, e.g. ``"tiling."`` for a key of that section.
    """
    import difflib

    close = difflib.get_close_matches(str(word), [str(o) for o in options], n=1)
    return f" (did you mean {prefix}{close[0]}?)" if close else ""
