"""Raw pixel traces read in one pass over a movie, held in memory, spilled to a temporary file, or read back
from the movie's own frames when those are in memory.

The CC analysis needs the whole time course of every pixel near a cell. On a
wide FOV of a long movie those traces outgrow memory (a 1024 x 1024 FOV with
40 cells, 2200 frames: ~3 GB of float32). :func:`cell_groups` cuts the cells
into groups whose traces fit a memory budget; :class:`TraceStore` keeps the
traces of one pass over the movie either in memory (one group) or in a
temporary file laid out so that the traces of any band of rows can be read
back with a few sequential reads per time block (several groups).
"""

from __future__ import annotations

import logging
import shutil
import tempfile
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import numpy as np

from astro3s.correlation._common import iter_blocks, movie_shape
from astro3s.errors import ConfigError

__all__ = ["TraceStore", "block_frames", "cell_groups", "one_pass", "release_freed_memory", "trace_bytes"]

log = logging.getLogger(__name__)

#: bytes of movie read per block of a pass: bounds the memory of the pass on wide frames
BLOCK_BYTES = 64 << 20
#: bytes of a transient slab while gathering or reading back traces
_SLAB_BYTES = 32 << 20


def release_freed_memory() -> None:
    """Hand memory freed by Python, NumPy and torch back to the system (glibc's ``malloc_trim``).

    glibc keeps freed blocks of a few MiB to reuse them (its mmap threshold rises
    after each large free), so analysing group after group of traces of changing
    sizes ratchets the resident memory up far beyond what is alive. Trimming
    between groups keeps the peak at one group's worth. A no-op where glibc is
    absent (macOS, Windows, musl).
    """
    global _TRIM
    if _TRIM is None:
        try:
            import ctypes

            _TRIM = ctypes.CDLL("libc.so.6").malloc_trim
        except (OSError, AttributeError):
            _TRIM = False
    if _TRIM:
        _TRIM(0)


_TRIM: Any = None


def block_frames(chunk_frames: int, frame_pixels: int) -> int:
    """Frames per block of a pass: ``chunk_frames``, fewer when a block would exceed 64 MiB of float32."""
    return max(1, min(int(chunk_frames), BLOCK_BYTES // (4 * max(int(frame_pixels), 1))))


def trace_bytes(n_frames: int) -> int:
    """Peak bytes one pixel trace costs the domain search: its float32 trace (``4 T``, normalised in its own
    memory), and its screening spectra and columns (``8 n_fine + 4 (2 n_low + 2)``, about ``2.3 T`` with
    the default moving average), rounded up."""
    return 7 * int(n_frames)


def cell_groups(roi_flat: list[np.ndarray], cand_flat: list[np.ndarray], centroids: np.ndarray,
                n_pixels: int, *, max_rows: int) -> list[np.ndarray]:
    """Cut the cells into groups whose pixels (ROI and disc candidates) number at most ``max_rows``.

    Parameters
    ----------
    roi_flat, cand_flat : list of ndarray of int64
        Flat pixel indices of each cell's ROI and candidates.
    centroids : ndarray of float, shape (N, 2)
        ``(y, x)`` of each cell; groups are bands of consecutive rows of the
        FOV (cells sorted by ``y``), so that the pixels of a group lie in a
        narrow range of flat indices.
    n_pixels : int
        ``H * W``.
    max_rows : int
        Pixel budget of a group. A cell that alone exceeds it forms a group of
        its own (the domain search reads its candidates in bands).

    Returns
    -------
    list of ndarray of int64
        Cell indices of each group, increasing within a group.
    """
    order = np.lexsort((centroids[:, 1], centroids[:, 0])) if len(centroids) else np.zeros(0, np.int64)
    groups: list[list[int]] = []
    taken = np.zeros(n_pixels, bool)
    count = 0
    for i in order:  # a loop over cells
        pix = np.concatenate([roi_flat[i], cand_flat[i]])
        new = int(np.count_nonzero(~taken[pix]))
        if groups and count + new > max_rows:
            taken[:] = False
            groups.append([])
            count = 0
            new = len(pix)
        elif not groups:
            groups.append([])
        groups[-1].append(int(i))
        taken[pix] = True
        count += new
    return [np.sort(np.asarray(g, np.int64)) for g in groups]


class TraceStore:
    """Raw float32 traces of the pixels ``flat``, filled block by block during one pass.

    Parameters
    ----------
    flat : ndarray of int64, shape (n,)
        Flat pixel indices, increasing and unique.
    n_frames : int
    spill : bool
        Keep the traces out of memory: in a temporary file, or, with
        ``frames``, in the movie itself.
    scratch_dir : str or Path, optional
        Folder of the temporary file (default: the system's, ``TMPDIR``).
    frames : ndarray of float32, shape (T, H*W), optional
        The whole movie, already in memory (the pre-processing's cache of the
        corrected movie). A spilled store then writes nothing during the pass
        and reads its rows from these frames (the same float32 values as the
        file would hold: a D4-size FOV's 250 000 traces are the movie itself,
        so the file was a second, transposed copy written and read back).
    """

    def __init__(self, flat: np.ndarray, n_frames: int, *, spill: bool = False,
                 scratch_dir: str | Path | None = None, frames: np.ndarray | None = None):
        self.flat = np.asarray(flat, np.int64)
        self.n_frames = int(n_frames)
        self._mask: np.ndarray | None = None
        self._array: np.ndarray | None = None
        self._file: Any = None
        self._frames: np.ndarray | None = None
        self._blocks: list[tuple[int, int, int]] = []  # (t0, frames, byte offset) of each written block
        n = len(self.flat)
        if spill and frames is not None:
            if frames.dtype != np.float32 or frames.shape[0] != self.n_frames or frames.ndim != 2:
                raise ValueError(f"frames must be float32 of shape ({self.n_frames}, H*W), got {frames.dtype} "
                                 f"{frames.shape}")
            self._frames = frames
            return
        if not spill:
            self._array = np.empty((n, self.n_frames), np.float32)
            return
        folder = Path(scratch_dir) if scratch_dir else Path(tempfile.gettempdir())
        need = 4 * n * self.n_frames
        try:
            free = shutil.disk_usage(folder).free
        except OSError as err:
            raise ConfigError(f"correlation.scratch_dir={str(folder)!r} cannot be used ({err.strerror}): "
                              "point it (or TMPDIR) at a writable folder.") from None
        if free < need * 1.02 + (64 << 20):
            raise ConfigError(f"the CC analysis of this FOV needs {need / 2**30:.1f} GiB of temporary traces "
                              f"but {folder} has {free / 2**30:.1f} GiB free: set correlation.scratch_dir "
                              "(or TMPDIR) to a folder on a larger disk, or raise correlation.memory_mb.")
        # closed by close() (find_domains calls it in a finally); the file is deleted on close
        self._file = tempfile.TemporaryFile(dir=folder, prefix="astro3s-traces-")  # noqa: SIM115
        log.info("CC traces of %d pixels x %d frames (%.1f GiB) spilled to a temporary file in %s",
                 n, self.n_frames, need / 2**30, folder)

    @property
    def spilled(self) -> bool:
        return self._file is not None or self._frames is not None

    def add(self, t0: int, block: np.ndarray) -> None:
        """Store frames ``t0 .. t0 + len(block)`` of the pass; ``block`` of shape (t, H*W)."""
        if self._frames is not None:
            return  # the rows are read from the frames themselves
        if self._mask is None:
            self._mask = np.zeros(block.shape[1], bool)
            self._mask[self.flat] = True
        step = max(1, _SLAB_BYTES // (4 * max(len(self.flat), 1)))
        for s in range(0, len(block), step):  # a loop over slabs of a block: bounds the transient copy
            part = np.compress(self._mask, block[s:s + step], axis=1)  # (t, n)
            if self._array is not None:
                self._array[:, t0 + s:t0 + s + len(part)] = part.T
            else:
                offset = self._file.tell()
                self._file.write(memoryview(np.ascontiguousarray(part.T)).cast("B"))  # pixel-major within the slab
                self._blocks.append((t0 + s, len(part), offset))

    def finish(self) -> None:
        """End of the pass: make what was written readable."""
        if self._file is not None:
            self._file.flush()

    def take(self) -> np.ndarray:
        """All traces, shape (n, T) float32, handed over (in-memory store only)."""
        if self._array is None:
            raise RuntimeError("take() needs an in-memory TraceStore")
        out, self._array = self._array, None
        return out

    def rows(self, index: np.ndarray) -> np.ndarray:
        """Traces of ``flat[index]`` (``index`` increasing), shape (len(index), T) float32."""
        index = np.asarray(index, np.int64)
        if self._array is not None:
            return self._array[index]
        out = np.empty((len(index), self.n_frames), np.float32)
        if self._frames is not None:
            # np.take along the pixels (sorted: sequential reads) of a slab of frames at a time, transposed
            # into place: the transient copy is one slab, not the whole (T, n) gather (D4-size group: 32
            # against 150 MB, at the same speed)
            pixels = self.flat[index]
            step = max(1, _SLAB_BYTES // (4 * max(len(pixels), 1)))
            for t0 in range(0, self.n_frames, step):  # a loop over slabs of frames
                out[:, t0:t0 + step] = np.take(self._frames[t0:t0 + step], pixels, axis=1).T
            return out
        if not len(index):
            return out
        lo, hi = int(index[0]), int(index[-1]) + 1  # read the band of rows, keep the group's
        local = index - lo
        # one buffer for every slab (a fresh one each time would be faulted into memory again)
        buf = np.empty((hi - lo) * max((frames for _, frames, _ in self._blocks), default=0), np.float32)
        for t0, frames, offset in self._blocks:  # a loop over the written slabs: sequential reads
            slab = buf[:(hi - lo) * frames].reshape(hi - lo, frames)
            self._file.seek(offset + 4 * lo * frames)
            if self._file.readinto(memoryview(slab).cast("B")) != slab.nbytes:
                raise OSError(f"short read from the temporary trace file at byte {offset}")
            out[:, t0:t0 + frames] = slab[local]
        return out

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None
        self._array = None
        self._frames = None


def one_pass(movie: Any, stores: Iterable[TraceStore], *, chunk_frames: int,
             on_block: Callable[[int, np.ndarray], None] | None = None, progress: bool | None = False,
             desc: str = "CC pass over the movie") -> None:
    """Read ``movie`` once in blocks, feeding every store and ``on_block(t0, block (t, H*W))``.

    ``progress`` shows a bar counting the frames read (see :mod:`astro3s.utils.progress`).
    """
    from astro3s.utils.progress import bar

    stores = list(stores)
    n_frames, height, width = movie_shape(movie)
    frames = block_frames(chunk_frames, height * width)
    with bar(progress=progress, desc=desc, unit="frame", total=n_frames) as shown:
        for t0, block in iter_blocks(movie, frames):  # a loop over time blocks
            block = block.reshape(len(block), -1)
            for store in stores:
                store.add(t0, block)
            if on_block is not None:
                on_block(t0, block)
            shown.update(len(block))
    for store in stores:
        store.finish()
