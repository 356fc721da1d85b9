"""Atomic file writing: write to a temporary name beside the target, then rename.

A crash (exception, Ctrl-C, killed process) therefore never leaves a half-written
file under the final name.
"""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from astro3s.errors import InputError

__all__ = ["atomic_folder", "atomic_path", "remove_stale_parts", "write_json", "write_text"]


@contextlib.contextmanager
def atomic_path(path: str | Path, *, suffix: str | None = None) -> Iterator[Path]:
    """Yield a temporary path that is renamed to ``path`` when the block succeeds.

    Parameters
    ----------
    path : str or Path
        Final destination. Its parent folder is created if needed.
    suffix : str, optional
        Suffix of the temporary file (default: the suffix of ``path``, so that
        writers that dispatch on the extension keep working).

    Yields
    ------
    tmp : Path
        Where the caller writes. On an exception the temporary file is removed
        and the exception propagates; ``path`` is left untouched.
    """
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise InputError(path.parent, f"cannot create the output folder ({err.strerror}).",
                         "choose a writable output folder.") from None
    if suffix is None:
        suffix = "".join(path.suffixes) or ".tmp"
    try:
        fd, tmp_name = tempfile.mkstemp(prefix=f".{path.stem}.", suffix=f".part{suffix}",
                                        dir=path.parent)
    except OSError as err:
        raise InputError(path.parent, f"cannot write in the output folder ({err.strerror}).",
                         "choose a writable output folder.") from None
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        yield tmp
        # mkstemp creates 0600 files; give outputs the usual permissions (umask)
        if tmp.exists():
            os.chmod(tmp, 0o666 & ~_current_umask())
        os.replace(tmp, path)
    except BaseException as err:
        with contextlib.suppress(OSError):
            tmp.unlink()
        if isinstance(err, OSError) and not isinstance(err, FileNotFoundError):
            raise InputError(path, f"could not be written ({err.strerror or err}).",
                             "check free disk space and permissions of the output folder.") from err
        raise


@contextlib.contextmanager
def atomic_folder(path: str | Path) -> Iterator[Path]:
    """Yield a hidden temporary folder that replaces the folder ``path`` when the block succeeds.

    For outputs that are a whole folder (a simulated movie with its truth): the
    folder is written as ``.<name>.part`` beside ``path`` (a leftover of a killed
    run is removed first) and renamed into place once complete; a folder already
    at ``path`` is replaced. On an exception the temporary folder is removed and
    ``path`` is left as it was.

    Yields
    ------
    tmp : Path
        An empty folder to write in.
    """
    import shutil

    path = Path(path)
    tmp = path.parent / f".{path.name}.part"
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir(parents=True)
    try:
        yield tmp
        if path.exists():
            shutil.rmtree(path)
        os.replace(tmp, path)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def remove_stale_parts(path: str | Path, *, older_than_s: float) -> None:
    """Remove the temporary copies of ``path`` (``.<stem>.*.part<suffix>``, see :func:`atomic_path`)
    older than ``older_than_s`` seconds: those a killed run left. Younger ones may be another
    process writing right now and are kept; errors (gone already, not ours) are ignored."""
    import time

    path = Path(path)
    for stale in path.parent.glob(f".{path.stem}.*.part{''.join(path.suffixes)}"):  # a few files at most
        with contextlib.suppress(OSError):
            if time.time() - stale.stat().st_mtime > older_than_s:
                stale.unlink()


def _current_umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def write_text(path: str | Path, text: str) -> Path:
    """Write ``text`` to ``path`` atomically (UTF-8) and return the path."""
    path = Path(path)
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")
    return path


def _json_default(obj: Any) -> Any:
    # numpy scalars/arrays and paths appear in summaries; make them plain JSON
    if hasattr(obj, "tolist"):
        return obj.tolist()
    if isinstance(obj, Path):
        return str(obj)
    raise TypeError(f"{type(obj).__name__} is not JSON serialisable")


def write_json(path: str | Path, data: Any, *, indent: int = 2) -> Path:
    """Write ``data`` as JSON atomically; NumPy values become plain numbers/lists."""
    return write_text(path, json.dumps(data, indent=indent, default=_json_default) + "\n")
