"""Lazy reading and atomic writing of calcium-imaging movies and label images.

A movie is time first, ``(T, H, W)``, and carries its frame rate ``fs`` in Hz.
:func:`read_movie` opens TIFF/BigTIFF, ``.npy``, HDF5, Zarr and folders of
single-frame TIFFs without loading them: pixels are read when indexed, so a
movie larger than memory is processed chunk by chunk with :meth:`Movie.chunks`.
"""

from __future__ import annotations

import logging
import math
import operator
import re
import struct
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from astro3s.errors import InputError
from astro3s.io.atomic import atomic_path

__all__ = ["MOVIE_SUFFIXES", "Movie", "movie_choices", "read_labels", "read_movie", "write_labels", "write_movie"]

#: File suffixes :func:`read_movie` understands (a folder of TIFFs is also accepted).
MOVIE_SUFFIXES = (".tif", ".tiff", ".btf", ".npy", ".h5", ".hdf5", ".zarr")
_TIFF_SUFFIXES = (".tif", ".tiff", ".btf")
_FS_ATTRIBUTES = ("fs", "frame_rate", "fps")
# ImageJ cannot open non-BigTIFF files past 4 GiB in the usual way, and tifffile
# needs headroom for the IFDs; above this many bytes of pixels we write BigTIFF.
_BIGTIFF_THRESHOLD = 2**32 - 2**25
_IMAGEJ_DTYPES = (np.dtype(np.uint8), np.dtype(np.uint16), np.dtype(np.float32))
_NAN_FIX = ("replace the NaN/Inf frames, e.g. by interpolating from their neighbours, "
            "or crop them, e.g. Movie.from_array(movie[a:b], fs=movie.fs).")
_READ_ERRORS = (OSError, ValueError, RuntimeError, KeyError, EOFError, MemoryError)


def _short(err: BaseException, limit: int = 120) -> str:
    text = str(err).strip()
    text = text.splitlines()[0] if text else type(err).__name__
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _valid_fs(value: Any) -> float | None:
    """Frame rate from a file's metadata, or None when absent or meaningless."""
    try:
        value = float(np.asarray(value).reshape(-1)[0])
    except (TypeError, ValueError, IndexError):
        return None
    return value if math.isfinite(value) and value > 0 else None


def _check_fs(fs: float | None, path: Path | None) -> float | None:
    if fs is None:
        return None
    value = _valid_fs(fs)
    if value is None:
        raise InputError(path, f"frame rate fs={fs!r} is not a positive number of Hz.",
                         "pass fs= in Hz, e.g. fs=15.0.")
    return value


# --------------------------------------------------------------------------- backends


class _TiffFolder:
    """A folder of single-frame TIFFs as a lazy ``(T, H, W)`` array; one file per frame."""

    def __init__(self, files: list[Path], frame_shape: tuple[int, int], dtype: np.dtype):
        self.files = files
        self.shape = (len(files), *frame_shape)
        self.dtype = dtype

    def __getitem__(self, key: tuple) -> np.ndarray:
        import tifffile

        t_key, *space = key
        files = self.files[t_key] if isinstance(t_key, slice) else [self.files[t_key]]
        out = np.empty((len(files), *self.shape[1:]), dtype=self.dtype)[(slice(None), *space)]
        for i, file in enumerate(files):  # one file per frame: the read is per file anyway
            try:
                frame = tifffile.imread(file)
            except (*_READ_ERRORS, tifffile.TiffFileError) as err:
                raise InputError(file, f"could not be read as TIFF ({_short(err)}).",
                                 "replace or remove this frame file.") from err
            if frame.shape != self.shape[1:] and frame.size == math.prod(self.shape[1:]):
                frame = frame.reshape(self.shape[1:])  # e.g. a (1, H, W) page
            if frame.shape != self.shape[1:]:
                raise InputError(file, f"frame has shape {frame.shape}, but the first frame "
                                 f"of the folder has {self.shape[1:]}.",
                                 "keep only frames of one size in the folder.")
            out[i] = frame[tuple(space)]
        return out if isinstance(t_key, slice) else out[0]


class Movie:
    """A lazy ``(T, H, W)`` movie with its frame rate.

    Indexing (``movie[t]``, ``movie[a:b, y0:y1, x0:x1]``, ...) reads only the
    requested pixels and returns a NumPy array. Use :func:`read_movie` to open
    a file and :meth:`from_array` to wrap an array.

    Attributes
    ----------
    path : Path or None
        The file or folder the movie comes from.
    fs : float or None
        Frame rate in Hz, if known.
    backend : str
        How pixels are read: ``"memmap"``, ``"array"``, ``"hdf5"``, ``"zarr"``,
        ``"tiff-pages"`` (compressed or scattered TIFF, page by page) or
        ``"tiff-folder"``.
    calibration : (float, float) or None
        ``(offset, slope)`` turning stored values into real ones,
        ``offset + slope * stored`` (an ImageJ linear calibration, e.g.
        ``(-32768, 1)`` for signed 16-bit data stored as uint16). When set,
        pixels are read as float32 and ``dtype`` is float32.
    line_shift : float
        Shift (px along x) given to every odd row (1, 3, ...) as frames are
        read, 0 for none: the correction of a bidirectional scan whose
        return lines are out of phase (:meth:`with_line_shift`; estimated by
        :func:`astro3s.preprocess.lines.estimate_line_offset`). When set,
        pixels are read as float32 and ``dtype`` is float32.
    """

    def __init__(self, data: Any, *, fs: float | None = None, path: str | Path | None = None,
                 backend: str | None = None, closers: Sequence[Any] = (),
                 calibration: tuple[float, float] | None = None, axes: str | None = None,
                 channel: int | None = None, plane: int | None = None,
                 channel_ids: Sequence[int] | None = None):
        self.path = None if path is None else Path(path)
        self.fs = _check_fs(fs, self.path)
        if not (hasattr(data, "shape") and hasattr(data, "dtype") and hasattr(data, "__getitem__")):
            data = np.asarray(data)
        self._data = data
        self._closers = list(closers)
        self._native_shape = tuple(int(s) for s in data.shape)
        try:
            self._keep, self._fixed = _select_axes(self._native_shape, self.path, axes=axes, channel=channel,
                                                   plane=plane, channel_ids=channel_ids)
        except InputError:
            self.close()
            raise
        #: how :func:`read_movie` opened the file (``key``, ``channel``, ``plane``), to open it again alike
        self.open_options: dict[str, Any] = {}
        self.shape: tuple[int, int, int] = tuple(self._native_shape[a] for a in self._keep)
        self.dtype = np.dtype(data.dtype)
        self.line_shift = 0.0
        self.calibration = None
        if calibration is not None and tuple(float(c) for c in calibration) != (0.0, 1.0):
            self.calibration = (float(calibration[0]), float(calibration[1]))
            self.dtype = np.dtype(np.float32)
        if backend is None:
            backend = "memmap" if isinstance(data, np.memmap) else (
                "array" if isinstance(data, np.ndarray) else type(data).__module__.split(".")[0])
        self.backend = backend

    # -- construction -----------------------------------------------------------------

    @classmethod
    def from_array(cls, array: Any, fs: float | None = None,
                   path: str | Path | None = None) -> Movie:
        """Wrap an in-memory or memory-mapped array (or any lazy array) as a Movie.

        Parameters
        ----------
        array : array_like, shape (T, H, W)
            Time first. Singleton extra axes, e.g. ``(T, 1, H, W)``, are
            squeezed away. Objects with ``shape``, ``dtype`` and numpy-style
            ``__getitem__`` (h5py datasets, zarr arrays) stay lazy.
        fs : float, optional
            Frame rate in Hz.
        path : str or Path, optional
            Where the data come from, named in error messages.
        """
        return cls(array, fs=fs, path=path)

    # -- array protocol -----------------------------------------------------------------

    def with_line_shift(self, shift: float) -> Movie:
        """The same movie with every odd row shifted ``shift`` px along x as it is read.

        Bidirectional (resonant) scanners write every other line on the
        return sweep; out of phase, those rows sit ``d`` px beside the others
        and every edge is combed. ``with_line_shift(-d)`` reads them back in
        place (linear interpolation along the row; a whole-pixel shift is
        exact; the row's end pixels are repeated where the shift uncovers
        them). The shift replaces any the movie had (it is not added to it).
        A shallow copy: the file handles are shared, so closing either closes
        both.

        Parameters
        ----------
        shift : float
            px, positive to the right (0: the movie as stored).

        Returns
        -------
        Movie
        """
        import copy

        shift = float(shift)
        if not np.isfinite(shift):
            raise ValueError(f"line shift must be finite, got {shift}")
        out = copy.copy(self)
        out.line_shift = shift
        stored = self._data.dtype if self.calibration is None else np.float32
        out.dtype = np.dtype(np.float32 if shift != 0.0 else stored)
        return out

    def _shift_lines(self, frames: np.ndarray, *, first_row: int = 0) -> np.ndarray:
        """``frames`` (``(..., h, W)``, whole rows from row ``first_row`` on) with :attr:`line_shift` given to the
        frame's odd rows, float32."""
        if not self.line_shift:
            return frames
        return shift_odd_rows(frames, self.line_shift, first_row=first_row)

    def _shifted_window(self, parts: list[Any]) -> np.ndarray:
        """``self[parts]`` for a key with a spatial part, when :attr:`line_shift` is set.

        Whole rows of the rows the key spans are read (their parity kept), shifted,
        then cut as the key says, so index arrays pair up as in NumPy.
        """
        rows = parts[1]
        if isinstance(rows, slice):  # a stepped slice reads whole frames (their rows' parity kept)
            span, local = (rows, slice(None)) if rows.step in (None, 1) else (slice(None), rows)
        else:  # an integer or an index array: the span of rows it reads, and where in that span (checked)
            span, local = _split_index(rows, self.shape[1])
            if local is None:
                span, local = slice(span, span + 1), 0
        if isinstance(parts[0], slice):
            return self[(parts[0], span, slice(None))][(Ellipsis, local, parts[2])]
        span_t, local_t = _split_index(parts[0], self.shape[0])
        window = self[(span_t, span, slice(None))]
        # an integer frame drops the time axis; an index array pairs up with the spatial ones, as in NumPy
        return window[(Ellipsis, local, parts[2]) if local_t is None else (local_t, local, parts[2])]

    @property
    def n_frames(self) -> int:
        """Number of frames ``T``."""
        return self.shape[0]

    def __len__(self) -> int:
        return self.shape[0]

    @property
    def ndim(self) -> int:
        return 3

    @property
    def nbytes(self) -> int:
        """Size of the whole movie in memory, in bytes, at its own dtype."""
        return math.prod(self.shape) * self.dtype.itemsize

    def __repr__(self) -> str:
        fs = "unknown" if self.fs is None else f"{self.fs:g} Hz"
        where = "" if self.path is None else f", path='{self.path}'"
        calibrated = "" if self.calibration is None else f", calibration={self.calibration}"
        shifted = f", line_shift={self.line_shift:g}" if self.line_shift else ""
        return (f"Movie(shape={self.shape}, dtype={self.dtype}, fs={fs}, "
                f"backend={self.backend}{calibrated}{shifted}{where})")

    def __array__(self, dtype: Any = None, copy: bool | None = None) -> np.ndarray:
        # np.asarray(movie) reads everything: allowed, but be explicit about it
        out = self[:]
        return out if dtype is None else out.astype(dtype, copy=False)

    def __getitem__(self, key: Any) -> np.ndarray:
        """Read pixels with numpy-style indexing on ``(T, H, W)``.

        Integers, slices (any step), ``...`` and one integer/boolean array per
        axis are supported; only the bounding range of an index array is read.
        Returns a new ndarray (or a read-only view of a memory map).
        """
        parts = _expand_key(key)
        shifting = bool(self.line_shift)
        if shifting and not (isinstance(parts[2], slice) and parts[2] == slice(None)
                             and isinstance(parts[1], slice) and parts[1].step in (None, 1)):
            return self._shifted_window(parts)  # the shift needs whole rows and their parity
        first_row = parts[1].indices(self.shape[1])[0] if shifting else 0
        native: list[Any] = []
        post: list[Any] = []
        for comp, n in zip(parts, self.shape):
            fetch, after = _split_index(comp, n)
            native.append(fetch)
            if after is not None:
                post.append(after)
        full = [0] * len(self._native_shape)  # squeezed singleton axes read index 0
        for axis, index in self._fixed.items():  # the channel / plane chosen
            full[axis] = index
        for axis, fetch in zip(self._keep, native):
            full[axis] = fetch
        try:
            out = self._data[tuple(full)]
        except InputError:
            raise
        except _READ_ERRORS as err:
            raise InputError(self.path, f"could not be read ({_short(err)}).",
                             "check that the file is complete; copy it again if it was "
                             "truncated.") from err
        out = np.asarray(out)
        if any(not (isinstance(p, slice) and p == slice(None)) for p in post):
            out = out[tuple(post)]
        return self._shift_lines(self._calibrate(out), first_row=first_row)

    def _calibrate(self, raw: np.ndarray) -> np.ndarray:
        """``offset + slope * raw`` as float32 when the movie has a calibration, else ``raw``."""
        if self.calibration is None:
            return raw
        offset, slope = self.calibration
        out = raw.astype(np.float32)  # a new array: exact for 8- and 16-bit values
        if slope != 1.0:
            out *= np.float32(slope)
        out += np.float32(offset)
        return out

    # -- chunked access -------------------------------------------------------------------

    def chunks(self, chunk_frames: int = 256, *, dtype: Any = np.float32, start: int = 0,
               stop: int | None = None) -> Iterator[tuple[int, np.ndarray]]:
        """Yield consecutive blocks of frames, checked for NaN/Inf.

        Parameters
        ----------
        chunk_frames : int
            Frames per block (the last block may be shorter).
        dtype : dtype
            Type of the blocks (default float32).
        start, stop : int
            Frame range to cover (default: all frames).

        Yields
        ------
        t0 : int
            Index of the block's first frame in the movie.
        block : ndarray of ``dtype``, shape (t, H, W)
            A writable array owned by the caller.

        Raises
        ------
        InputError
            When a block contains NaN or Inf; the message names the file and
            the first bad frame.
        """
        chunk_frames = int(chunk_frames)
        if chunk_frames < 1:
            raise ValueError(f"chunk_frames must be >= 1, got {chunk_frames}")
        dtype = np.dtype(dtype)
        start, stop, _ = slice(start, stop).indices(self.n_frames)
        for t0 in range(start, stop, chunk_frames):
            t1 = min(t0 + chunk_frames, stop)
            raw = self._read_file_frames(t0, t1)
            if raw is None:
                raw = self[t0:t1]
            block = raw.astype(dtype, copy=False)
            if block is raw and not (raw.flags.owndata and raw.flags.writeable):
                block = raw.copy()  # a view of a read-only memmap: give the caller its own
            if block.dtype.kind in "fc":
                self._check_finite(block, t0)
            elif raw.dtype.kind in "fc":
                self._check_finite(raw, t0)
            yield t0, block

    def frames(self, index: Any, *, dtype: Any = np.float32) -> np.ndarray:
        """Read the frames ``index`` (any order, repeats allowed) into one new array.

        Unlike ``movie[index]``, which reads the whole range spanned by an index
        array, only the requested frames are read: runs of consecutive frames
        together, in reads of at most 64 MB. Memory-mapped files are read with
        plain file reads, so no page of the map stays resident (RSS holds the
        output only).

        Parameters
        ----------
        index : sequence of int, or boolean mask of length ``T``
            Frames to read; negative values count from the end.
        dtype : dtype
            Type of the output (default float32).

        Returns
        -------
        frames : ndarray of ``dtype``, shape (len(index), H, W)
            Equal to ``movie[index].astype(dtype)``; not checked for NaN/Inf.
        """
        index = np.asarray(index)
        n = self.n_frames
        if index.dtype == bool:
            if index.shape != (n,):
                raise IndexError(f"boolean index of shape {index.shape} does not match {n} frames")
            index = np.flatnonzero(index)
        elif index.size and index.dtype.kind not in "iu":
            raise IndexError(f"frame indices must be integers, got {index.dtype}")
        index = index.astype(np.int64).reshape(-1)
        if index.size and (index.min() < -n or index.max() >= n):
            raise IndexError(f"frame index out of range for a movie of {n} frames")
        index %= n
        out = np.empty((len(index), *self.shape[1:]), dtype=np.dtype(dtype))
        if not len(index):
            return out
        frame_bytes = math.prod(self.shape[1:]) * self.dtype.itemsize
        max_run = max(1, (64 * 2**20) // frame_bytes)
        breaks = np.flatnonzero(np.diff(index) != 1) + 1
        for s, e in zip(np.r_[0, breaks], np.r_[breaks, len(index)]):  # runs of consecutive frames
            for a in range(int(s), int(e), max_run):  # reads of at most 64 MB
                b = min(a + max_run, int(e))
                t0 = int(index[a])
                raw = self._read_file_frames(t0, t0 + b - a)
                out[a:b] = raw if raw is not None else self[t0:t0 + b - a]
        return out

    def _read_file_frames(self, t0: int, t1: int) -> np.ndarray | None:
        """Read frames ``t0:t1`` of a memory-mapped file with plain file reads.

        Streaming through a memory map leaves every touched page resident, so
        one pass over a 5 GB movie would show 5 GB of RSS; reading each block
        into a fresh buffer keeps the footprint at one block. Returns None when
        the backend is not a C-contiguous file memory map.
        """
        data = self._data
        if not (isinstance(data, np.memmap) and data.flags.c_contiguous
                and getattr(data, "filename", None)):
            return None
        frame_items = math.prod(self._native_shape[1:]) if self._keep[0] == 0 else None
        if frame_items is None:
            return None  # time is not the leading axis of the file: use the generic path
        count = (t1 - t0) * frame_items  # every channel / plane of a frame: one plain read, then the chosen one
        out = np.empty(count, dtype=data.dtype)
        try:
            with open(data.filename, "rb") as fh:
                fh.seek(int(data.offset) + t0 * frame_items * data.dtype.itemsize)
                n_read = fh.readinto(memoryview(out).cast("B"))
        except OSError as err:
            raise InputError(self.path, f"could not be read ({_short(err)}).",
                             "check that the file is complete and readable.") from err
        if n_read != out.nbytes:
            raise InputError(self.path, f"ends early: frames {t0}-{t1 - 1} are missing.",
                             "the file is truncated; copy it again.")
        if self._fixed:
            index = [slice(None)] + [self._fixed.get(a, slice(None) if a in self._keep else 0)
                                     for a in range(1, len(self._native_shape))]
            return self._shift_lines(self._calibrate(
                np.ascontiguousarray(out.reshape((t1 - t0, *self._native_shape[1:]))[tuple(index)])))
        return self._shift_lines(self._calibrate(out.reshape((t1 - t0, *self.shape[1:]))))

    def _check_finite(self, block: np.ndarray, t0: int) -> None:
        finite = np.isfinite(block).all(axis=(1, 2))
        if not finite.all():
            bad = t0 + int(np.argmin(finite))
            count = int(np.count_nonzero(~finite))
            raise InputError(self.path, f"frame {bad} (counted from 0) contains NaN or Inf "
                             f"values ({count} bad frame(s) among frames {t0}-"
                             f"{t0 + len(block) - 1}).", _NAN_FIX)

    def load(self, dtype: Any = np.float32) -> np.ndarray:
        """Read the whole movie into memory as ``dtype``, checking it for NaN/Inf.

        Returns
        -------
        movie : ndarray of ``dtype``, shape (T, H, W)
        """
        out = np.empty(self.shape, dtype=dtype)
        for t0, block in self.chunks(dtype=dtype):
            out[t0:t0 + len(block)] = block
        return out

    def validate_samples(self) -> None:
        """Check that the first, middle and last frames are finite (cheap)."""
        if self.dtype.kind not in "fc":
            _ = self[0]  # still proves the file can be read
            _ = self[-1]
            return
        for t in sorted({0, self.n_frames // 2, self.n_frames - 1}):
            frame = self[t]
            if not np.isfinite(frame).all():
                raise InputError(self.path, f"frame {t} (counted from 0) contains NaN or Inf "
                                 "values.", _NAN_FIX)

    # -- resources --------------------------------------------------------------------------

    def close(self) -> None:
        """Close open file handles (HDF5, TIFF); a no-op for other backends."""
        for closer in self._closers:
            closer.close()
        self._closers = []

    def __enter__(self) -> Movie:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def shift_odd_rows(frames: np.ndarray, shift: float, *, first_row: int = 0) -> np.ndarray:
    """``frames`` with every odd row (1, 3, ...) shifted ``shift`` px along x.

    Linear interpolation between the two nearest pixels of the row (exact for
    a whole-pixel shift); where the shift uncovers the row's end, its end
    pixel is repeated.

    Parameters
    ----------
    frames : ndarray, shape (..., H, W)
        Whole rows (one frame or a stack).
    shift : float
        px, positive to the right.
    first_row : int
        The frame's row that ``frames[..., 0, :]`` is (rows of a window keep
        their parity in the frame).

    Returns
    -------
    ndarray of float32, shape (..., H, W)
        A new array (``frames`` is not modified).

    Examples
    --------
    >>> frame = np.tile(np.arange(6, dtype=np.float32), (2, 1))
    >>> shift_odd_rows(frame, 1.5)[1].tolist()
    [0.0, 0.0, 0.5, 1.5, 2.5, 3.5]
    """
    out = np.array(frames, dtype=np.float32)
    width = out.shape[-1]
    whole = int(np.floor(shift))
    frac = np.float32(shift - whole)
    # output x reads input x - shift: between x - whole - 1 and x - whole
    source = np.clip(np.arange(width) - whole, 0, width - 1)
    odd_rows = slice(1 - int(first_row) % 2, None, 2)
    odd = out[..., odd_rows, :]
    shifted = odd[..., source]
    if frac:
        before = odd[..., np.clip(np.arange(width) - whole - 1, 0, width - 1)]
        shifted = (1 - frac) * shifted + frac * before
    out[..., odd_rows, :] = shifted
    return out


def _expand_key(key: Any) -> list[Any]:
    """Split an index into exactly three per-axis parts (Ellipsis expanded)."""
    parts = list(key) if isinstance(key, tuple) else [key]
    if any(p is None for p in parts):
        raise IndexError("Movie indexing does not support np.newaxis; index the result")
    n_ellipsis = sum(p is Ellipsis for p in parts)
    if n_ellipsis > 1:
        raise IndexError("an index can only have a single ellipsis ('...')")
    if n_ellipsis:
        i = next(i for i, p in enumerate(parts) if p is Ellipsis)
        fill = 3 - (len(parts) - 1)
        if fill < 0:
            raise IndexError(f"too many indices for a 3-D movie: {len(parts) - 1}")
        parts = parts[:i] + [slice(None)] * fill + parts[i + 1:]
    if len(parts) > 3:
        raise IndexError(f"too many indices for a 3-D movie: {len(parts)}")
    return parts + [slice(None)] * (3 - len(parts))


def _split_index(comp: Any, n: int) -> tuple[Any, Any]:
    """Turn one axis index into (what the backend reads, what numpy applies after).

    Backends get only non-negative ints and positive-step slices (all that
    h5py, zarr and the TIFF readers support); reversal and index arrays are
    applied to the fetched block. ``after`` is None when the axis disappears.
    """
    if isinstance(comp, slice):
        start, stop, step = comp.indices(n)
        if step > 0:
            return slice(start, stop, step), slice(None)
        picked = range(start, stop, step)
        if len(picked) == 0:
            return slice(0, 0), slice(None)
        return slice(picked[-1], picked[0] + 1, -step), slice(None, None, -1)
    if isinstance(comp, (bool, np.bool_)):
        raise IndexError("boolean scalars are not supported as Movie indices")
    try:
        i = operator.index(comp)
    except TypeError:
        pass
    else:
        if not -n <= i < n:
            raise IndexError(f"index {i} is out of bounds for axis with size {n}")
        return i % n, None
    index = np.asarray(comp)
    if index.dtype == bool:
        if index.shape != (n,):
            raise IndexError(f"boolean index of shape {index.shape} does not match axis of "
                             f"size {n}")
        index = np.flatnonzero(index)
    elif index.dtype.kind not in "iu":
        raise IndexError(f"only integers, slices, '...' and integer or boolean arrays are valid "
                         f"Movie indices, got {comp!r}")
    if index.size == 0:
        return slice(0, 0), index.astype(np.intp)
    if index.min() < -n or index.max() >= n:
        raise IndexError(f"index array is out of bounds for axis with size {n}")
    index = index % n
    lo = int(index.min())
    return slice(lo, int(index.max()) + 1), index - lo


def _time_space_axes(shape: tuple[int, ...], path: Path | None) -> tuple[int, int, int]:
    """Axes of a native array that hold (T, H, W); every other axis must have length 1.

    The last two axes are space. Of the leading axes, the one longer than 1 is
    time (ImageJ often calls it Z or C in plain stacks); if all are 1, the
    first is time.
    """
    it = "" if path is not None else "the array "  # the path, if any, starts the message
    if len(shape) < 2:
        raise InputError(path, f"{it}has shape {shape}, not a movie.",
                         "save the movie as a (T, H, W) array, time first.")
    if len(shape) == 2:
        raise InputError(path, f"{it}is a single image of shape {shape}, but a movie must be 3-D "
                         "(T, H, W), time first.",
                         "pass the whole recording, not one frame or a projection.")
    if 0 in shape:
        raise InputError(path, f"{it}is an empty movie (shape {shape}).",
                         "check that the recording was saved completely.")
    # a length-1 axis after (H, W), as in (T, H, W, 1), is a channel or sample axis
    width_axis = len(shape) - 2 if len(shape) >= 4 and shape[-1] == 1 else len(shape) - 1
    height_axis = width_axis - 1
    lead = list(range(height_axis))
    long_axes = [a for a in lead if shape[a] != 1]
    if len(long_axes) > 1:
        raise InputError(path, f"{it}has shape {shape}, but a (T, H, W) movie was expected: more "
                         "than one axis besides height and width is longer than 1 (several "
                         "channels or z-planes?).",
                         "save one channel/plane as a (T, H, W) stack (in Fiji: Image > Color > "
                         "Split Channels), or for HDF5/Zarr pick a 3-D dataset with key=.")
    axes = (long_axes[0] if long_axes else lead[0], height_axis, width_axis)
    return axes


#: axis letters (tifffile's) of channels and of the samples of an RGB pixel, and of time-like axes
_CHANNEL_LETTERS = "CS"
_TIME_LETTERS = "TIQ"


def _choose(name: str, value: int) -> str:
    """The fix that names the option choosing a channel or plane, on the command line and in Python."""
    return (f"choose one with {name}={value} on the astro3s-infer / astro3s-preprocess command line "
            f"(read_movie(..., {name}={value}) in Python).")


def _axis_roles(shape: tuple[int, ...], axes: str, channel_ids: Sequence[int] | None = None,
                ) -> tuple[int | None, list[int], int | None, int] | None:
    """The channel axis and its channel numbers, the z-plane axis and its length, of a labelled TIFF series.

    Returns ``(channel_axis, channel_numbers, plane_axis, n_planes)``; an axis is None when the movie
    has one channel / plane (``channel_numbers`` then holds the one number that names it: 1, or the
    ScanImage channel saved). None when the series has several channel axes (e.g. ``C`` and ``S``).
    The rules are :func:`_select_axes`'s.
    """
    ids = [int(i) for i in channel_ids] if channel_ids else None
    long_axes = [a for a, letter in enumerate(axes) if letter not in "YX" and shape[a] > 1]
    channel_axes = [a for a in long_axes if axes[a] in _CHANNEL_LETTERS]
    if channel_axes == long_axes and [axes[a] for a in channel_axes] == ["C"]:
        channel_axes = []  # ImageJ may call a plain stack's frames channels: the one long axis is time
    if len(channel_axes) > 1:
        return None
    channel_axis = channel_axes[0] if channel_axes else None
    n_channels = 1 if channel_axis is None else shape[channel_axis]
    names = ids if ids and len(ids) == n_channels else list(range(1, n_channels + 1))
    z_axes = [a for a in long_axes if axes[a] == "Z"]
    time_axes = [a for a in long_axes if a != channel_axis and a not in z_axes]
    plane_axis = z_axes[0] if z_axes and time_axes else None
    return channel_axis, names, plane_axis, 1 if plane_axis is None else shape[plane_axis]


def movie_choices(path: str | Path) -> list[dict[str, int]]:
    """The movies a file holds, as the ``channel`` / ``plane`` options of :func:`read_movie` that open each.

    ``[{}]`` for a plain ``(T, H, W)`` movie (and for every format but TIFF); for a TIFF holding
    several channels and/or z-planes, one dict per channel x plane, e.g. ``[{"channel": 1}, {"channel":
    2}]``. Reads the file's metadata only.

    Raises
    ------
    InputError
        The file cannot be read as TIFF, or is a fast-z ScanImage recording.
    """
    import tifffile

    path = Path(path)
    if path.suffix.lower() not in _TIFF_SUFFIXES or path.is_dir():
        return [{}]
    try:
        with tifffile.TiffFile(path) as tif:
            series = tif.series[0]
            roles = _axis_roles(series.shape, series.axes, _scanimage_frame_data(tif, path).get("channel_ids"))
    except (*_READ_ERRORS, tifffile.TiffFileError, IndexError) as err:
        raise InputError(path, f"could not be read as TIFF ({_short(err)}).",
                         "copy or export the movie again.") from err
    if roles is None:
        return [{}]  # read_movie names what is wrong
    channel_axis, names, plane_axis, n_planes = roles
    channels = [{"channel": c} for c in names] if channel_axis is not None else [{}]
    planes = [{"plane": z} for z in range(1, n_planes + 1)] if plane_axis is not None else [{}]
    return [{**c, **z} for c in channels for z in planes]


def _select_axes(shape: tuple[int, ...], path: Path | None, *, axes: str | None = None,
                 channel: int | None = None, plane: int | None = None,
                 channel_ids: Sequence[int] | None = None) -> tuple[tuple[int, int, int], dict[int, int]]:
    """The native axes that hold ``(T, H, W)`` and the index read on each chosen channel / plane axis.

    Without axis letters (``.npy``, HDF5, Zarr, unlabelled TIFF) the shape alone decides
    (:func:`_time_space_axes`), and ``channel`` / ``plane`` may only name the one there is (1).
    With tifffile's letters (ImageJ hyperstack, OME-TIFF, ScanImage): ``Y``/``X`` are space; a
    channel axis (``C``, or ``S``: an RGB pixel's samples) longer than 1 beside another long axis
    needs ``channel``; a ``Z`` axis beside a longer-than-1 time axis (``T``, ``I``, ``Q``) needs
    ``plane``. A ``C`` or ``Z`` axis alone is time: ImageJ calls a plain stack's frames channels or
    slices. ``channel`` counts from 1 (Fiji, ScanImage), or names a ScanImage channel id
    (``channel_ids``, the channels the file saved); ``plane`` counts from 1.
    """
    for name, value in (("channel", channel), ("plane", plane)):
        if value is not None and (isinstance(value, bool) or not isinstance(value, (int, np.integer))
                                  or value < 1):
            raise InputError(path, f"{name}={value!r} is not a {name} number.",
                             f"pass {name}=1 for the first {name} (they count from 1).")
    if axes is None or len(axes) != len(shape) or "Y" not in axes or "X" not in axes:
        keep = _time_space_axes(shape, path)
        for name, value in (("channel", channel), ("plane", plane)):
            if value not in (None, 1):
                raise InputError(path, f"{name}={value} was asked for, but the movie (shape {shape}) has "
                                 f"one {name} only, or its axes are not named in the file.",
                                 f"leave {name}= out, or save the {name} you want as a (T, H, W) stack.")
        return keep, {}
    named = f"shape {shape}, axes {axes}"
    roles = _axis_roles(shape, axes, channel_ids)
    if roles is None:
        raise InputError(path, f"has several channel axes ({named}).",
                         "save one channel as a (T, H, W) stack (in Fiji: Image > Color > Split Channels).")
    channel_axis, names, plane_axis, n_planes = roles
    fixed = {**_chosen_index(path, "channel", channel, channel_axis, names, named),
             **_chosen_index(path, "plane", plane, plane_axis, list(range(1, n_planes + 1)), named)}
    return _time_and_space(shape, axes, fixed, path, named), fixed


def _chosen_index(path: Path | None, name: str, value: int | None, axis: int | None, numbers: list[int],
                  named: str) -> dict[int, int]:
    """``{axis: index}`` of the channel / plane ``value`` names among ``numbers``; {} when the movie has one."""
    what = "channels" if name == "channel" else "z-planes"
    listing = ", ".join(str(i) for i in numbers)
    if axis is None:
        if value is not None and value != numbers[0]:
            raise InputError(path, f"{name}={value} was asked for, but the movie has one {name} only ({named}).",
                             f"leave {name}= out.")
        return {}
    if value is None:
        raise InputError(path, f"holds {len(numbers)} {what} ({named}; {name}s {listing}).",
                         _choose(name, numbers[0]))
    if value not in numbers:
        raise InputError(path, f"has no {name} {value}: its {name}s are {listing} ({named}).",
                         f"pass {name}= one of {listing}.")
    return {axis: numbers.index(value)}


def _time_and_space(shape: tuple[int, ...], axes: str, fixed: dict[int, int], path: Path | None,
                    named: str) -> tuple[int, int, int]:
    """``(time, Y, X)`` axes of a labelled series once ``fixed`` axes are read at one index."""
    others = [a for a, letter in enumerate(axes) if letter not in "YX" and a not in fixed]
    left = [a for a in others if shape[a] > 1]
    if len(left) > 1:
        raise InputError(path, f"has {named}, but a (T, H, W) movie was expected: more than one axis "
                         "besides height and width is longer than 1.",
                         "save one channel/plane as a (T, H, W) stack (in Fiji: Image > Color > Split Channels).")
    time_axis = left[0] if left else next((a for a in others if axes[a] in _TIME_LETTERS),
                                          others[0] if others else None)
    y_axis, x_axis = axes.index("Y"), axes.index("X")
    if time_axis is None:
        raise InputError(path, f"is a single image ({named}), but a movie must be 3-D (T, H, W), time first.",
                         "pass the whole recording, not one frame or a projection.")
    if not time_axis < y_axis < x_axis:
        raise InputError(path, f"stores its axes in an order astro3s does not read ({named}).",
                         "save the movie time first, then height, then width (T, Y, X).")
    if 0 in shape:
        raise InputError(path, f"is an empty movie ({named}).", "check that the recording was saved completely.")
    return time_axis, y_axis, x_axis


# --------------------------------------------------------------------------- readers


def read_movie(path: str | Path, *, key: str | None = None, fs: float | None = None,
               channel: int | None = None, plane: int | None = None, validate: bool = True) -> Movie:
    """Open a movie lazily.

    Parameters
    ----------
    path : str or Path
        A TIFF/BigTIFF (``.tif``, ``.tiff``, ``.btf``; multi-page, ImageJ
        hyperstack, OME), a ``.npy`` array, an HDF5 file (``.h5``, ``.hdf5``), a
        Zarr store (``.zarr`` folder, v2 or v3, array or group) or a folder of
        single-frame TIFFs (sorted naturally: ``frame_2`` before ``frame_10``).
    key : str, optional
        HDF5/Zarr dataset to read. Default: the only dataset with 3 or more
        dimensions.
    fs : float, optional
        Frame rate in Hz; overrides the file's value (ImageJ ``finterval``/
        ``fps``, ScanImage's frame rate over its frame averaging, a JSON ``fs``
        in the TIFF description, or an ``fs``, ``frame_rate`` or ``fps``
        attribute in HDF5/Zarr).
    channel : int, optional
        The channel to read from a TIFF holding several (ImageJ hyperstack,
        OME-TIFF, ScanImage, RGB), counted from 1 as in Fiji; for ScanImage
        files, the channel's number in ScanImage (its saved channels, e.g. 1
        or 2). Required when the file holds several; ``1`` is accepted for a
        single-channel movie of any format.
    plane : int, optional
        The z-plane to read from a TIFF holding a movie per plane (axes ``Z``
        and ``T``), counted from 1.
    validate : bool
        Check that the first, middle and last frames read and are finite.
        The full NaN/Inf check happens in :meth:`Movie.chunks`.

    Returns
    -------
    movie : Movie
        ``(T, H, W)``; singleton extra axes (a channel of length 1) are
        squeezed. Memory-mapped when the data are uncompressed and contiguous
        (``backend == "memmap"``). Close it (or use ``with``) to release HDF5
        and compressed-TIFF file handles.

    Raises
    ------
    InputError
        Missing file, unknown format, unreadable or truncated file, a 2-D
        image, several channels or planes and none chosen, an empty movie,
        NaN/Inf in a sampled frame.
    """
    path = Path(path)
    if not path.exists():
        raise InputError(path, "movie file not found.",
                         "check the path; supported inputs are "
                         f"{', '.join(MOVIE_SUFFIXES)} files and folders of TIFF frames.")
    suffix = path.suffix.lower()
    if path.is_dir():
        if suffix == ".zarr" or _looks_like_zarr(path):
            movie = _read_zarr(path, key)
        else:
            movie = _read_tiff_folder(path)
    elif suffix in _TIFF_SUFFIXES:
        movie = _read_tiff(path, channel=channel, plane=plane)
    elif suffix == ".npy":
        movie = _read_npy(path)
    elif suffix in (".h5", ".hdf5", ".hdf", ".he5"):
        movie = _read_hdf5(path, key)
    else:
        raise InputError(path, f"unknown movie format {path.suffix!r}.",
                         f"convert it to one of {', '.join(MOVIE_SUFFIXES)} or a folder of "
                         "single-frame TIFFs.")
    if suffix not in _TIFF_SUFFIXES or path.is_dir():
        try:  # formats without axis names: channel=1 / plane=1 pass, anything else is refused
            _select_axes(movie._native_shape, path, channel=channel, plane=plane)
        except InputError:
            movie.close()
            raise
    movie.open_options = {name: value for name, value in (("key", key), ("channel", channel), ("plane", plane))
                          if value is not None}
    if fs is not None:
        movie.fs = _check_fs(fs, path)
    if validate:
        try:
            movie.validate_samples()
        except BaseException:
            movie.close()
            raise
    return movie


def _looks_like_zarr(path: Path) -> bool:
    return any((path / name).exists() for name in (".zarray", ".zgroup", "zarr.json"))


def _read_npy(path: Path) -> Movie:
    try:
        data = np.load(path, mmap_mode="r", allow_pickle=False)
    except (ValueError, OSError, EOFError) as err:
        # np.load calls any non-.npy content "pickled data": say what it means here
        reason = "not a .npy file" if "pickle" in str(err) else _short(err)
        raise InputError(path, f"could not be read as a NumPy .npy array ({reason}).",
                         "save it with numpy.save; the file may be truncated.") from err
    if data.dtype.kind not in "uif":
        raise InputError(path, f"holds {data.dtype} values, not numbers.",
                         "save the movie as an integer or float array.")
    return Movie(data, path=path, backend="memmap")


class _TiffLogCapture(logging.Handler):
    """Collects tifffile's warnings: it reports damaged files by logging, not raising."""

    def __init__(self) -> None:
        super().__init__(level=logging.WARNING)
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(record.getMessage())


def _read_tiff(path: Path, *, channel: int | None = None, plane: int | None = None) -> Movie:
    import tifffile

    logger = logging.getLogger("tifffile")
    capture = _TiffLogCapture()
    logger.addHandler(capture)
    tif = None
    try:
        tif = tifffile.TiffFile(path)
        series = tif.series[0] if tif.series else None
        if series is None:
            raise InputError(path, "TIFF file holds no image.", "check the file.")
        scanimage = _scanimage_frame_data(tif, path)
        fs = _tiff_fs(tif) or _valid_fs(scanimage.get("fs"))
        calibration = _tiff_calibration(tif, path)
        expected = _tiff_expected_shape(tif)
        shape, dtype, offset = series.shape, series.dtype, series.dataoffset
        selection = {"axes": series.axes, "channel": channel, "plane": plane,
                     "channel_ids": scanimage.get("channel_ids")}
        # tifffile prefixes its warnings with the object's repr: keep the reason only
        problems = [re.sub(r"^(<[^>]*>\s*)+", "", m) for m in capture.messages if _is_damage(m)]
    except InputError:
        if tif is not None:
            tif.close()
        raise
    except (*_READ_ERRORS, tifffile.TiffFileError, struct.error) as err:
        if tif is not None:
            tif.close()
        raise InputError(path, f"could not be read as TIFF (file is truncated or corrupt: "
                         f"{_short(err)}).", "copy or export the movie again.") from err
    finally:
        logger.removeHandler(capture)

    size = path.stat().st_size
    truncated = None
    if problems:
        truncated = problems[0]
    elif expected is not None and math.prod(expected) != math.prod(shape):
        truncated = f"its metadata describe {expected} pixels but {shape} were found"
    elif offset is not None and offset + math.prod(shape) * dtype.itemsize > size:
        truncated = (f"{offset + math.prod(shape) * dtype.itemsize} bytes expected, "
                     f"{size} found")
    if truncated:
        tif.close()
        raise InputError(path, f"could not be read as TIFF (file is truncated or corrupt: "
                         f"{truncated}).", "copy or export the movie again.")

    if offset is not None:
        # uncompressed and contiguous: map it, nothing is read until indexed
        tif.close()
        try:
            data = tifffile.memmap(path, mode="r")
        except (*_READ_ERRORS, tifffile.TiffFileError) as err:
            raise InputError(path, f"could not be memory-mapped ({_short(err)}).",
                             "copy or export the movie again.") from err
        if tuple(data.shape) != tuple(shape):  # the map's axes are the series' (tifffile squeezes both alike)
            selection["axes"] = None
        return Movie(data, fs=fs, path=path, backend="memmap", calibration=calibration, **selection)

    import zarr

    # compressed or scattered pages: tifffile's zarr view decodes only the pages
    # (and strips) that an index touches
    store = series.aszarr()
    data = zarr.open(store, mode="r")
    return Movie(data, fs=fs, path=path, backend="tiff-pages", closers=[store, tif], calibration=calibration,
                 **selection)


def _scanimage_frame_data(tif: Any, path: Path) -> dict[str, Any]:
    """Frame rate and saved channel ids of a ScanImage TIFF (empty for other TIFFs).

    ScanImage (Vidrio) records ``SI.hRoiManager.scanFrameRate`` and, when frames are averaged before
    they are logged, ``SI.hScan2D.logAverageFactor``: a logged frame lasts that many scanned ones.
    ``SI.hChannels.channelSave`` lists the channels saved, interleaved frame by frame (tifffile reads
    them as the ``C`` axis). A fast-z volume recording interleaves its planes in the same way, which
    tifffile does not separate: refused with a clear message rather than read as one movie.
    """
    if not getattr(tif, "is_scanimage", False):
        return {}
    try:
        frame_data = (tif.scanimage_metadata or {}).get("FrameData", {})
    except Exception:  # noqa: BLE001 - damaged metadata: read the pages as a plain stack
        return {}
    out: dict[str, Any] = {}
    rate = _valid_fs(frame_data.get("SI.hRoiManager.scanFrameRate"))
    average = _valid_fs(frame_data.get("SI.hScan2D.logAverageFactor")) or 1.0
    if rate is not None:
        out["fs"] = rate / average
    saved = frame_data.get("SI.hChannels.channelSave")
    if saved is not None:
        out["channel_ids"] = [int(c) for c in np.asarray(saved).reshape(-1)]
    slices = _valid_fs(frame_data.get("SI.hStackManager.actualNumSlices", frame_data.get("SI.hStackManager.numSlices")))
    if bool(frame_data.get("SI.hFastZ.enable", False)) and slices is not None and slices > 1:
        raise InputError(path, f"is a ScanImage fast-z volume recording ({int(slices)} planes interleaved "
                         "frame by frame), which astro3s does not separate.",
                         "save each plane as its own (T, H, W) movie (e.g. in Fiji: Image > Stacks > Tools > "
                         f"Deinterleave, {int(slices)} planes) and pass one.")
    return out


def _is_damage(message: str) -> bool:
    words = ("corrupt", "truncat", "invalid page offset", "failed to read")
    return any(w in message.lower() for w in words)


def _tiff_fs(tif: Any) -> float | None:
    meta = tif.imagej_metadata or {}
    finterval = _valid_fs(meta.get("finterval"))
    if finterval is not None:
        return 1.0 / finterval
    if tif.shaped_metadata:
        for name in _FS_ATTRIBUTES:
            value = _valid_fs(tif.shaped_metadata[0].get(name))
            if value is not None:
                return value
    return _valid_fs(meta.get("fps"))


def _tiff_calibration(tif: Any, path: Path) -> tuple[float, float] | None:
    """ImageJ's linear value calibration ``(c0, c1)`` of an integer ImageJ TIFF, or None.

    ImageJ writes ``cf=0`` (a straight line), ``c0`` and ``c1`` in the image
    description when a calibration maps stored values to real ones, ``c0 + c1 *
    stored``; signed 16-bit data are stored as uint16 with ``c0=-32768, c1=1``.
    Other calibration functions are not applied (a warning says so); float
    images are never calibrated (ImageJ ignores calibrations of 32-bit images).
    The ``min``/``max`` entries are the display range, not a calibration.
    """
    meta = tif.imagej_metadata if tif.is_imagej else None
    if not meta or "c0" not in meta or tif.series[0].dtype.kind not in "iu":
        return None
    function = meta.get("cf", 0)
    try:
        function = int(function)
        coefficients = (float(meta["c0"]), float(meta.get("c1", 1.0)))
    except (TypeError, ValueError):
        return None
    if function != 0:
        logging.getLogger(__name__).warning(
            "%s: ImageJ calibration function cf=%s is not a straight line; stored values are used as they are",
            path.name, function)
        return None
    if not all(math.isfinite(c) for c in coefficients) or coefficients[1] == 0:
        return None
    return None if coefficients == (0.0, 1.0) else coefficients


def _tiff_expected_shape(tif: Any) -> tuple[int, ...] | None:
    """Shape the metadata promise, to detect files cut short (tifffile only warns)."""
    if tif.is_imagej and tif.imagej_metadata and "images" in tif.imagej_metadata:
        meta = tif.imagej_metadata
        return (int(meta["images"]), *tif.pages.first.shape)
    if tif.is_shaped and tif.shaped_metadata and "shape" in tif.shaped_metadata[0]:
        return tuple(int(s) for s in tif.shaped_metadata[0]["shape"])
    return None


def _natural_key(path: Path) -> list[Any]:
    return [int(part) if part.isdigit() else part.lower()
            for part in re.split(r"(\d+)", path.name)]


def _read_tiff_folder(path: Path) -> Movie:
    import tifffile

    files = sorted((f for f in path.iterdir() if f.is_file() and not f.name.startswith(".")
                    and f.suffix.lower() in _TIFF_SUFFIXES), key=_natural_key)
    if not files:
        raise InputError(path, "folder holds no TIFF frames (.tif/.tiff) and is not a Zarr "
                         "store.", "point to a movie file, a .zarr store or a folder of "
                         "single-frame TIFFs.")
    try:
        with tifffile.TiffFile(files[0]) as tif:
            first = tif.series[0]
            shape, dtype = first.shape, first.dtype
    except (*_READ_ERRORS, tifffile.TiffFileError) as err:
        raise InputError(files[0], f"could not be read as TIFF ({_short(err)}).",
                         "replace or remove this frame file.") from err
    squeezed = tuple(s for s in shape if s != 1) if len(shape) > 2 else shape
    if len(squeezed) != 2:
        raise InputError(path, f"folder of TIFFs: {files[0].name} has shape {shape}, but each "
                         "file must hold a single (H, W) frame.",
                         "pass a multi-page TIFF movie as a file, not its folder.")
    return Movie(_TiffFolder(files, squeezed, dtype), path=path, backend="tiff-folder")


def _find_datasets(root: Any, is_array: Any, children: Any,
                   prefix: str = "") -> list[tuple[str, Any]]:
    """(path, array) of every array below ``root``, depth first."""
    found = []
    for name, obj in children(root):
        full = f"{prefix}/{name}" if prefix else name
        if is_array(obj):
            found.append((full, obj))
        else:
            found.extend(_find_datasets(obj, is_array, children, full))
    return found


def _pick_dataset(path: Path, datasets: list[tuple[str, Any]], key: str | None,
                  kind: str) -> tuple[str, Any]:
    if not datasets:
        raise InputError(path, f"{kind} holds no dataset.", "check the file.")
    movies = [(name, d) for name, d in datasets if len(d.shape) >= 3]
    if len(movies) == 1:
        return movies[0]
    if not movies:
        if len(datasets) == 1:
            return datasets[0]  # the shape rules explain what is wrong with it
        listing = ", ".join(f"{n} {tuple(d.shape)}" for n, d in datasets)
        raise InputError(path, f"{kind} holds no 3-D (T, H, W) dataset, only: {listing}.",
                         "save the movie as a 3-D dataset, time first.")
    listing = ", ".join(f"'{n}' {tuple(d.shape)}" for n, d in movies)
    raise InputError(path, f"{kind} holds several 3-D datasets: {listing}.",
                     f"choose one with key=..., e.g. key={movies[0][0]} on the command line "
                     f"(read_movie(..., key='{movies[0][0]}') in Python).")


def _attr_fs(*attr_sets: Any) -> float | None:
    for attrs in attr_sets:
        for name in _FS_ATTRIBUTES:
            if name in attrs:
                value = _valid_fs(attrs[name])
                if value is not None:
                    return value
    return None


def _read_hdf5(path: Path, key: str | None) -> Movie:
    import h5py

    try:
        file = h5py.File(path, "r")
    except (OSError, ValueError) as err:
        raise InputError(path, f"could not be read as HDF5 (file is truncated or corrupt: "
                         f"{_short(err)}).", "copy or export the movie again.") from err
    try:
        if key is not None:
            if key not in file or not isinstance(file[key], h5py.Dataset):
                names = [n for n, _ in _find_datasets(
                    file, lambda o: isinstance(o, h5py.Dataset), lambda g: g.items())]
                raise InputError(path, f"has no dataset {key!r}; datasets: "
                                 f"{', '.join(names) or 'none'}.", "pass one of them as key=.")
            name, dataset = key, file[key]
        else:
            datasets = _find_datasets(file, lambda o: isinstance(o, h5py.Dataset),
                                      lambda g: g.items())
            name, dataset = _pick_dataset(path, datasets, None, "HDF5 file")
        if dataset.dtype.kind not in "uif":
            raise InputError(path, f"dataset {name!r} holds {dataset.dtype} values, not numbers.",
                             "pick a numeric dataset with key=.")
        parent = dataset.parent
        fs = _attr_fs(dataset.attrs, parent.attrs, file.attrs)
        return Movie(dataset, fs=fs, path=path, backend="hdf5", closers=[file])
    except BaseException:
        file.close()
        raise


def _read_zarr(path: Path, key: str | None) -> Movie:
    import zarr

    try:
        node = zarr.open(str(path), mode="r")
    except Exception as err:  # zarr raises many unrelated types for a bad store
        raise InputError(path, f"could not be read as Zarr ({_short(err)}).",
                         "check that the store is complete.") from err

    def is_array(obj: Any) -> bool:
        return hasattr(obj, "shape") and hasattr(obj, "dtype")

    group_attrs: list[Any] = []
    if is_array(node):
        name, array = str(path.name), node
    elif key is not None:
        try:
            array = node[key]
        except KeyError:
            array = None
        if array is None or not is_array(array):
            names = [n for n, _ in _find_datasets(node, is_array, _zarr_children)]
            raise InputError(path, f"has no array {key!r}; arrays: {', '.join(names) or 'none'}.",
                             "pass one of them as key=.")
        name = key
        group_attrs = [node.attrs]
    else:
        name, array = _pick_dataset(path, _find_datasets(node, is_array, _zarr_children),
                                    None, "Zarr store")
        group_attrs = [node.attrs]
    if np.dtype(array.dtype).kind not in "uif":
        raise InputError(path, f"array {name!r} holds {array.dtype} values, not numbers.",
                         "pick a numeric array with key=.")
    return Movie(array, fs=_attr_fs(array.attrs, *group_attrs), path=path, backend="zarr")


def _zarr_children(group: Any) -> list[tuple[str, Any]]:
    # zarr 2 and 3 both offer .arrays() and .groups() yielding (name, node)
    return [*group.arrays(), *group.groups()]


# --------------------------------------------------------------------------- writers


def _blocks_of(movie: Any, chunk_frames: int) -> tuple[tuple[int, int, int] | None, Any, Any]:
    """(shape, dtype, block iterator) for an array, a Movie or an iterable of blocks."""
    if isinstance(movie, Movie):
        return movie.shape, movie.dtype, (movie[t:t + chunk_frames]
                                          for t in range(0, movie.n_frames, chunk_frames))
    if isinstance(movie, np.ndarray) or (hasattr(movie, "shape") and hasattr(movie, "dtype")):
        wrapped = Movie.from_array(movie)
        return _blocks_of(wrapped, chunk_frames)
    return None, None, iter(movie)


def write_movie(path: str | Path, movie: Any, *, fs: float | None = None,
                bigtiff: bool | None = None, chunk_frames: int = 256, dtype: Any = None,
                shape: Sequence[int] | None = None) -> Path:
    """Write a movie as an uncompressed TIFF that :func:`read_movie` can memory-map.

    Parameters
    ----------
    path : str or Path
        Destination ``.tif``/``.tiff``/``.btf``; written atomically.
    movie : array_like (T, H, W), Movie, or iterable of (t, H, W) blocks
        For an iterable, pass ``shape=(T, H, W)`` and ``dtype``; blocks are
        written one at a time, so memory stays bounded.
    fs : float, optional
        Frame rate in Hz (default: ``movie.fs`` for a Movie).
    bigtiff : bool, optional
        Force BigTIFF (True) or classic TIFF (False). Default: BigTIFF when the
        pixels exceed ~4 GB, otherwise an ImageJ hyperstack (for uint8, uint16
        and float32) so that Fiji shows the frame interval.
    chunk_frames : int
        Frames copied at a time.
    dtype : dtype, optional
        Convert to this type (default: the movie's own).
    shape : (int, int, int), optional
        Required with an iterable of blocks.

    Returns
    -------
    path : Path

    Notes
    -----
    ImageJ files store ``finterval = 1 / fs``; other files store ``{"fs": ...}``
    in the JSON image description. Both are read back by :func:`read_movie`.
    """
    import tifffile

    path = Path(path)
    if path.suffix.lower() not in _TIFF_SUFFIXES:
        raise InputError(path, "write_movie writes TIFF only.",
                         "name the output .tif, .tiff or .btf.")
    if fs is None and isinstance(movie, Movie):
        fs = movie.fs
    fs = _check_fs(fs, path)
    native_shape, native_dtype, blocks = _blocks_of(movie, int(chunk_frames))
    if native_shape is None:
        if shape is None or dtype is None:
            raise InputError(path, "writing from an iterable of blocks needs shape=(T, H, W) "
                             "and dtype=.", "pass both keyword arguments.")
        native_shape = tuple(int(s) for s in shape)
        native_dtype = np.dtype(dtype)
    elif shape is not None and tuple(shape) != tuple(native_shape):
        raise InputError(path, f"shape={tuple(shape)} differs from the movie's {native_shape}.",
                         "leave shape= out for arrays and Movies.")
    out_dtype = np.dtype(dtype) if dtype is not None else np.dtype(native_dtype)
    if len(native_shape) != 3 or 0 in native_shape:
        raise InputError(path, f"cannot write a movie of shape {native_shape}; expected a "
                         "non-empty (T, H, W).", "pass a time-first 3-D array.")
    nbytes = math.prod(native_shape) * out_dtype.itemsize
    if bigtiff is None:
        bigtiff = nbytes > _BIGTIFF_THRESHOLD
    imagej = not bigtiff and out_dtype in _IMAGEJ_DTYPES
    options: dict[str, Any] = {"bigtiff": bool(bigtiff)}
    if imagej:
        options["imagej"] = True
        options["metadata"] = {"axes": "TYX", **({"finterval": 1.0 / fs} if fs else {})}
    else:
        options["metadata"] = {"fs": fs} if fs else {}

    with atomic_path(path) as tmp:
        # tifffile lays out an empty contiguous file (header + data area); the
        # blocks are then written with plain file writes at the data offset.
        # Filling through the memory map instead would keep every written page
        # resident (RSS = file size for a 5 GB movie).
        layout = tifffile.memmap(tmp, shape=native_shape, dtype=out_dtype, **options)
        data_offset = int(layout.offset)
        file_dtype = layout.dtype
        del layout
        with open(tmp, "r+b") as fh:
            fh.seek(data_offset)
            t = 0
            for block in blocks:
                block = np.asarray(block)
                if block.ndim == 2:
                    block = block[None]
                if block.shape[1:] != native_shape[1:] or t + len(block) > native_shape[0]:
                    raise InputError(path, f"block of shape {block.shape} at frame {t} does not "
                                     f"fit a movie of shape {native_shape}.",
                                     "yield (t, H, W) blocks that add up to shape=.")
                fh.write(np.ascontiguousarray(block, dtype=file_dtype).tobytes())
                t += len(block)
            if t != native_shape[0]:
                raise InputError(path, f"the blocks held {t} frames, but shape= promised "
                                 f"{native_shape[0]}.", "pass the true number of frames.")
    return path


def mean_image(path: str | Path, *, key: str | None = None, channel: int | None = None, plane: int | None = None,
               max_frames: int | None = None, validate: bool = True) -> np.ndarray:
    """Temporal mean of a movie file, read a few frames at a time (memory: a chunk of frames).

    Parameters
    ----------
    path : str or Path
        Any movie :func:`read_movie` opens.
    key : str, optional
        Dataset of an HDF5/Zarr file holding several.
    channel, plane : int, optional
        Channel / z-plane of a TIFF holding several (see :func:`read_movie`).
    max_frames : int, optional
        Average at most this many evenly spaced frames (a quick look at a long
        movie); None: every frame, checked for NaN/Inf.
    validate : bool
        Passed to :func:`read_movie`.

    Returns
    -------
    ndarray of float32, shape (H, W)
    """
    with read_movie(path, key=key, channel=channel, plane=plane, validate=validate) as movie:
        total = np.zeros(movie.shape[1:], np.float64)
        if max_frames is None:
            for _, block in movie.chunks(256):
                total += block.sum(axis=0, dtype=np.float64)
            return (total / max(movie.n_frames, 1)).astype(np.float32)
        index = np.unique(np.linspace(0, movie.n_frames - 1, min(int(max_frames), movie.n_frames)).round().astype(int))
        for start in range(0, len(index), 16):  # 16 frames per read
            total += movie.frames(index[start:start + 16], dtype=np.float32).sum(axis=0, dtype=np.float64)
    return (total / len(index)).astype(np.float32)


def write_labels(path: str | Path, labels: np.ndarray) -> Path:
    """Write a label image as an uncompressed ``uint16`` TIFF, atomically.

    Parameters
    ----------
    path : str or Path
        Destination ``.tif``.
    labels : ndarray of int, shape (H, W)
        0 background, cells 1..65535.

    Returns
    -------
    path : Path
    """
    import tifffile

    path = Path(path)
    labels = _as_uint16_labels(np.asarray(labels), path)
    with atomic_path(path) as tmp:
        tifffile.imwrite(tmp, labels, imagej=True, metadata={"axes": "YX"})
    return path


def read_labels(path: str | Path) -> np.ndarray:
    """Read a 2-D integer label image.

    Returns
    -------
    labels : ndarray of uint16, shape (H, W)

    Raises
    ------
    InputError
        Missing or unreadable file, not 2-D, not integer, negative ids or ids
        above 65535.
    """
    import tifffile

    path = Path(path)
    if not path.exists():
        raise InputError(path, "label image not found.", "check the path.")
    try:
        data = tifffile.imread(path)
    except (*_READ_ERRORS, tifffile.TiffFileError) as err:
        raise InputError(path, f"could not be read as TIFF ({_short(err)}).",
                         "write it again with astro3s.io.write_labels.") from err
    if data.ndim > 2:
        data = data.reshape([s for s in data.shape if s != 1] or [1])
    return _as_uint16_labels(data, path)


def _as_uint16_labels(labels: np.ndarray, path: Path) -> np.ndarray:
    if labels.ndim != 2:
        raise InputError(path, f"a label image must be 2-D (H, W), got shape {labels.shape}.",
                         "save one label image per field of view.")
    if labels.dtype == bool:
        return labels.astype(np.uint16)
    if labels.dtype.kind == "f" and labels.size and np.all(np.isfinite(labels)) \
            and np.all(labels == np.round(labels)):
        labels = labels.astype(np.int64)  # whole numbers saved as float by some tools
    if labels.dtype.kind not in "ui":
        raise InputError(path, f"a label image must hold integers, got {labels.dtype}.",
                         "label the mask first, e.g. with skimage.measure.label.")
    if labels.size and labels.min() < 0:
        raise InputError(path, "label image has negative ids.", "use 0 for background, 1..N "
                         "for cells.")
    top = int(labels.max(initial=0))
    if top > np.iinfo(np.uint16).max:
        raise InputError(path, f"label ids go up to {top}, above the uint16 limit 65535.",
                         "relabel the cells 1..N, e.g. skimage.segmentation.relabel_sequential.")
    return labels.astype(np.uint16, copy=False)
