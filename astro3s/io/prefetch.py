"""Read the next movie of a batch into the page cache while the current one is analysed.

A batch spends most of a small movie's time computing, and the first read of
each file from disk (or a network share) waits on I/O. Reading the next file
in a background thread, and throwing the bytes away, leaves it in the
operating system's page cache, so that the real read (``tifffile``, ``h5py``,
``zarr``) finds it in memory. Only files that fit comfortably in memory are
read ahead: a movie larger than that would evict the one being analysed.
"""

from __future__ import annotations

import logging
import os
import threading
from pathlib import Path

log = logging.getLogger(__name__)

__all__ = ["available_memory_bytes", "prefetch"]

_CHUNK_BYTES = 8 << 20


def available_memory_bytes() -> int | None:
    """``MemAvailable`` of ``/proc/meminfo`` in bytes; None where the file does not exist (not Linux)."""
    try:
        with open("/proc/meminfo", encoding="ascii") as handle:
            for line in handle:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        return None
    return None


def _files(path: Path) -> list[Path]:
    """The file itself, or every file under a folder (a Zarr store, a folder of frames)."""
    if path.is_file():
        return [path]
    if path.is_dir():
        return sorted(p for p in path.rglob("*") if p.is_file())
    return []


def _read_through(files: list[Path]) -> None:
    for file in files:  # a loop over files, then over 8 MiB chunks: no per-pixel work
        try:
            with open(file, "rb", buffering=0) as handle:
                while handle.read(_CHUNK_BYTES):
                    pass
        except OSError as err:  # a read-ahead never fails the batch: the real read reports the problem
            log.debug("read-ahead of %s stopped: %s", file, err)
            return


def prefetch(path: str | os.PathLike[str], *, max_fraction: float = 0.25,
             max_bytes: int | None = None) -> threading.Thread | None:
    """Start reading ``path`` into the page cache in a daemon thread.

    Parameters
    ----------
    path : str or Path
        A movie file, or a folder (Zarr store) whose files are all read.
    max_fraction : float
        Read ahead only when the movie's bytes are at most this fraction of
        the memory available now (``MemAvailable``).
    max_bytes : int, optional
        A fixed limit instead (where ``/proc/meminfo`` is missing the limit is 1 GiB).

    Returns
    -------
    thread or None
        The running daemon thread (it does not keep the process alive); None
        when nothing is read (missing path, too large, empty).
    """
    try:
        files = _files(Path(path))
        size = sum(f.stat().st_size for f in files)
    except OSError:  # gone or unreadable: the real read reports it
        return None
    if max_bytes is None:
        available = available_memory_bytes()
        max_bytes = int(max_fraction * available) if available is not None else 1 << 30
    if not files or size == 0 or size > max_bytes:
        return None
    thread = threading.Thread(target=_read_through, args=(files,), name=f"prefetch {Path(path).name}",
                              daemon=True)
    thread.start()
    return thread
