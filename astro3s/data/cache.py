"""On-disk cache of pre-processing results, keyed by the movie file and the parameters.

The key hashes the movie's resolved path, size and modification time (ns)
and every :class:`~astro3s.preprocess.PreprocessParams` field except the free
``note``: changing a parameter, or replacing the movie file, runs the
pre-processing again; nothing else does. Entries are
``cache_dir/<fov name>-<key>.npz`` files written by
:func:`astro3s.preprocess.save_preprocessed` (atomically, so concurrent
processes at worst both compute the same entry).
"""

from __future__ import annotations

import hashlib
import json
import logging
from pathlib import Path

from astro3s.errors import InputError

log = logging.getLogger(__name__)

__all__ = ["CACHE_VERSION", "cache_key", "cache_path"]

#: Bump to invalidate every cached entry (e.g. when the sample layout changes).
CACHE_VERSION = 2  # bump whenever the pre-processing output changes


def cache_key(movie: str | Path, params) -> str:
    """20 hex digits identifying ``(movie file, parameters)``.

    Raises
    ------
    InputError
        When the movie does not exist.
    """
    movie = Path(movie)
    try:
        stat = movie.stat()
    except FileNotFoundError:
        raise InputError(movie, "movie not found.", "check the FOV list / data folder.") from None
    values = params.to_dict()
    values.pop("note", None)
    payload = {"version": CACHE_VERSION, "movie": str(movie.resolve()), "size": stat.st_size,
               "mtime_ns": stat.st_mtime_ns, "params": values}
    return hashlib.sha256(json.dumps(payload, sort_keys=True, default=str).encode()).hexdigest()[:20]


def cache_path(cache_dir: str | Path, name: str, movie: str | Path, params) -> Path:
    """Where the pre-processing result of ``movie`` with ``params`` is cached."""
    safe = "".join(c if c.isalnum() or c in "-_." else "_" for c in name)
    return Path(cache_dir) / f"{safe}-{cache_key(movie, params)}.npz"
