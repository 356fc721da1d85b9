"""The streaming engine: stages 1-3 of the pre-processing in one threaded pass over a movie.

One pass over the movie does stages 1-3: each chunk of frames is registered to
a reference (built beforehand from a sample of frames), corrected by Fourier
shift, and feeds the per-frame baselines, the temporal-median buffer and the
activity counts (:func:`stream_movie`). Each frame is corrected once: the
result keeps a :class:`~astro3s.preprocess.motion.CorrectedMovie` that holds
the corrected frames in memory when they fit a quarter of ``memory_budget_mb``
(the temporal median is then taken from them, with no buffer), and
otherwise has the pass write them to a temporary float32 file
(:class:`~astro3s.preprocess.motion.FrameFile`, 4 bytes a pixel: twice a
16-bit movie) in ``scratch_dir`` (default: the system's temporary folder,
``TMPDIR``), which the later passes (local filter, CC analysis, domain
traces, binning) read instead of correcting the frames again. The file has
no name on disk and is deleted when the ``CorrectedMovie`` is closed or
dropped. Without room for it (its size plus 10 %, at least 1 GiB spare) a
warning is logged and the frames are corrected again on each later read,
as they were before.

Parallel work: each chunk is split into blocks of a few MB of frames that run
side by side on the CPU cores, every stage 1-3 step of a block in a row while
its data are in cache (:func:`~astro3s.preprocess._backend.map_blocks`), and
the next chunk is read in the background meanwhile (:func:`read_ahead`).
Every result is per frame, per pixel or an integer count, so it does not
depend on the number of threads nor on the block size.

Exact versus approximate: everything is exact and independent of
``chunk_frames`` when the movie is small enough; for movies beyond the memory
budget the motion reference is built from fewer sampled frames and the
temporal median is the median of an even subsample of frames (both logged,
and counted in ``details``). Per-frame percentiles use every
``percentile_stride``-th pixel.

Memory: besides those budgeted buffers, two raw float32 chunks (the one being
corrected, the one being read; none when the corrected movie is cached: the
chunks are read into the cache and corrected there, see :func:`read_chunks`)
and each thread's block in a few float32 / complex64 copies (spectra,
correlation, corrected frames) are held at a time;
no page of a memory-mapped movie stays resident (frames are read with plain
file reads, see :meth:`astro3s.io.Movie.frames`); the temporary frame file is
written and read the same way (never mapped).

Timings (``timings``): the wall time of the streamed pass is shared out among
``motion``, ``baseline`` and ``activity`` in proportion to their time summed
over the threads.
"""

from __future__ import annotations

import logging
import math
import shutil
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from astro3s.errors import InputError
from astro3s.preprocess._backend import _workers, block_ranges, cache_block_frames, map_blocks, rfft2
from astro3s.preprocess.activity import activity_counts, tile_coverage, tile_thresholds
from astro3s.preprocess.baseline import noise_variance_image
from astro3s.preprocess.correlation_image import local_correlation_image
from astro3s.preprocess.enhance import (enhance_network_image, fill_pixels, frame_percentiles, isolated_spikes,
                                        lift_dim_background, temporal_percentiles)
from astro3s.preprocess.motion import (CorrectedMovie, FrameFile, bandpass_filter, build_reference, correct_frames,
                                       frame_shifts_from_bins, isolated_shift_outliers, register_frames,
                                       register_spectra, shifts_consistent)
from astro3s.preprocess.params import PreprocessParams
from astro3s.preprocess.ring_cores import fill_ring_cores

__all__ = ["MIN_FRAMES", "MIN_SIDE", "MotionReference", "Streamed", "effective_chunk_frames", "even_subsample",
           "motion_reference", "read_ahead", "read_chunks", "read_frames", "reference_sample_frames",
           "sample_frame_pairs", "scratch_frame_file", "stream_movie", "validate_movie"]

log = logging.getLogger(__name__)

MIN_FRAMES = 2
MIN_SIDE = 8


# ---------------------------------------------------------------------------------------------
# reading frames


def validate_movie(movie: Any) -> tuple[int, int, int]:
    """``(T, H, W)`` of ``movie``; :class:`InputError` unless it is a 3-D movie of >= 2 frames of >= 8 x 8 px."""
    shape = tuple(int(s) for s in movie.shape)
    if len(shape) != 3:
        raise InputError(movie.path, f"is not a (T, H, W) movie (shape {shape}).",
                         "give a single-channel time series of 2-D frames.")
    t, h, w = shape
    if t < MIN_FRAMES:
        raise InputError(movie.path, f"has {t} frame(s); pre-processing needs a movie of at least "
                         f"{MIN_FRAMES} frames (activity is counted over time).",
                         "give the whole recording, not a single image.")
    if min(h, w) < MIN_SIDE:
        raise InputError(movie.path, f"frames are {h} x {w} px; at least {MIN_SIDE} x {MIN_SIDE} are needed.")
    return shape


def even_subsample(n: int, count: int) -> np.ndarray:
    """About ``count`` indices spread evenly over ``range(n)`` (sorted, unique, int64; first and last included)."""
    count = max(1, min(int(count), n))
    return np.unique(np.round(np.linspace(0, n - 1, count)).astype(np.int64))


def sample_frame_pairs(movie: Any, count: int = 64) -> np.ndarray:
    """About ``count`` pairs of consecutive frames ``(t, t + 1)`` spread evenly over ``movie``.

    Returns
    -------
    pairs : ndarray of float32, shape (K, 2, H, W)
        ``K = min(count, T // 2)`` (at least 1 for ``T >= 2``); the pairs do not overlap.
    """
    n_frames = int(movie.shape[0])
    first = even_subsample(n_frames - 1, max(1, min(int(count), n_frames // 2)))
    frames = read_frames(movie, np.stack([first, first + 1], axis=1).ravel())
    return frames.reshape(len(first), 2, *frames.shape[1:])


def read_frames(movie: Any, index: np.ndarray) -> np.ndarray:
    """Frames ``index`` of ``movie`` as one float32 array, shape (len(index), H, W), checked for NaN/Inf."""
    if hasattr(movie, "frames"):
        # only those frames, into one preallocated array; memory maps by plain reads (no resident pages)
        frames = movie.frames(index, dtype=np.float32)
    else:
        frames = np.empty((len(index), *movie.shape[1:]), np.float32)
        for i, t in enumerate(index):  # a lazy reader fetches only those frames (I/O, not computation)
            frames[i] = movie[int(t)]
    if np.dtype(getattr(movie, "dtype", np.float32)).kind in "iub":
        return frames  # integer samples converted to float32 are finite: no check needed
    finite = np.isfinite(frames).all(axis=(1, 2))
    if not finite.all():
        bad = int(index[np.argmin(finite)])
        raise InputError(movie.path, f"frame {bad} (counted from 0) contains NaN or Inf values.",
                         "fix or drop the damaged frames, e.g. replace them by a neighbouring frame.")
    return frames


class _FrameSample:
    """Frames ``index`` of a movie as a lazy (S, H, W) array: slices are read on demand (float32).

    With ``bin_frames`` k > 1, item ``i`` is the mean of frames ``index[i] .. index[i] + k - 1``.
    """

    def __init__(self, movie: Any, index: np.ndarray, bin_frames: int = 1):
        self.movie = movie
        self.index = np.asarray(index, np.int64)
        self.bin_frames = int(bin_frames)
        self.shape = (len(index), *(int(s) for s in movie.shape[1:]))

    def __len__(self) -> int:
        return self.shape[0]

    def __getitem__(self, key: slice) -> np.ndarray:
        first = self.index[key]
        total = read_frames(self.movie, first)
        if self.bin_frames == 1:
            return total
        # the k-th frame of every mean at a time: the memory of one frame per mean, not of k
        for offset in range(1, self.bin_frames):
            total += read_frames(self.movie, first + offset)
        total /= self.bin_frames
        return total


def _with_raw_statistics(chunks: Iterator[tuple[int, np.ndarray]]) -> Iterator[tuple[Any, ...]]:
    """``(t0, block, block's float32 sum over frames, its min, its max)`` for each chunk.

    The float32 sum over a chunk is exact for integer movies (< 2**24 per pixel
    for chunks of <= 256 16-bit frames); chunks are summed in float64.
    """
    for t0, block in chunks:
        yield t0, block, block.sum(axis=0), float(block.min()), float(block.max())


# bytes of float32 frames read at a time into a chunk (small: the allocator reuses that memory)
READ_BLOCK_BYTES = 4 * 2**20


def read_chunks(movie: Any, chunk_frames: int, into: np.ndarray | None = None) -> Iterator[tuple[int, np.ndarray]]:
    """``(t0, block)`` for consecutive chunks of ``movie``, float32, without a new chunk-sized array per chunk.

    Fresh memory is slow to touch (page faults; on a virtual machine whose
    freed pages go back to the host, up to ~8 ms per MB), and a new array per
    chunk touched fresh memory for every chunk (a D4-size movie's pass touched
    745 MB where its cache needs 326). Frames are read a few MB at a time
    (memory maps and arrays; other readers, whose own blocks may hold many
    frames, a chunk at a time; :func:`read_frames`: checked for NaN/Inf)
    straight into ``into[t0:t1]`` when given (the corrected movie's cache:
    each chunk is then corrected in place), otherwise into two buffers taken
    in turn, which is safe under :func:`read_ahead` (it holds the chunk being
    used and the one being read).

    Parameters
    ----------
    movie : Movie, shape (T, H, W)
        Objects without ``frames`` (lazy readers) are read with their own ``chunks``.
    chunk_frames : int
    into : ndarray of float32, shape (T, H, W), optional

    Yields
    ------
    t0 : int
    block : ndarray of float32, shape (t, H, W)
        A view of ``into`` or of a reused buffer: valid until the next chunk is asked for.
    """
    n_frames, height, width = (int(s) for s in movie.shape)
    if not hasattr(movie, "frames"):
        yield from movie.chunks(chunk_frames, dtype=np.float32)
        return
    # a few MB at a time from memory maps and arrays; other readers (HDF5, Zarr, compressed TIFF pages)
    # get the whole chunk in one call, as their own blocks may hold many frames (decoded once)
    small = getattr(movie, "backend", None) in ("memmap", "array")
    step = max(1, READ_BLOCK_BYTES // (4 * height * width)) if small else chunk_frames
    buffers: list[np.ndarray] = []
    for k, t0 in enumerate(range(0, n_frames, chunk_frames)):
        t1 = min(t0 + chunk_frames, n_frames)
        if into is not None:
            block = into[t0:t1]
        else:
            if len(buffers) < 2:
                buffers.append(np.empty((min(chunk_frames, n_frames), height, width), np.float32))
            block = buffers[k % 2][:t1 - t0]
        for a in range(t0, t1, step):  # a few MB at a time (I/O, not computation)
            b = min(a + step, t1)
            block[a - t0:b - t0] = read_frames(movie, np.arange(a, b))
        yield t0, block


_END = object()


def read_ahead(items: Iterator[Any]) -> Iterator[Any]:
    """Yield ``items``, making the next one in a background thread while the caller uses this one.

    Reading a chunk (file reads, conversion to float32, NaN check, sums) releases
    the GIL, so it overlaps the work on the previous chunk; two chunks are held
    at a time. Errors of the reader are raised here, in order.
    """
    with ThreadPoolExecutor(1) as reader:
        iterator = iter(items)
        pending = reader.submit(next, iterator, _END)
        while True:
            item = pending.result()
            if item is _END:
                return
            pending = reader.submit(next, iterator, _END)
            yield item
            del item


def _constant_error(movie: Any) -> InputError:
    return InputError(movie.path, "is constant (every pixel of every frame has the same value), "
                      "so it holds no image to segment.",
                      "check the acquisition channel and the export of the movie.")


# ---------------------------------------------------------------------------------------------
# memory budget


def reference_sample_frames(params: PreprocessParams, shape: tuple[int, int]) -> int:
    """Frames of the reference sample: ``params.reference_frames``, capped by the memory budget.

    The sample is held as ``rfft2`` spectra (complex64, ``8 H (W // 2 + 1)``
    bytes a frame), which may take at most 1/8 of ``params.memory_budget_mb``
    (before the pass's buffers are filled: in the cache of the corrected movie
    when there is one and it is large enough, see :func:`stream_movie`).
    """
    height, width = shape
    room = int((params.memory_budget_mb * 2**20 / 8) // (8 * height * (width // 2 + 1)))
    return max(1, min(params.reference_frames, room))


def effective_chunk_frames(params: PreprocessParams, frame_bytes: int) -> int:
    """``params.chunk_frames``, lowered so that a float32 chunk takes at most 1/16 of the memory budget.

    A chunk lives in about four copies at once (float32 block or spectra, product,
    correlation, corrected; the FFTs work in place where they can), so this keeps
    the working set near a quarter of the budget.
    """
    room = int((params.memory_budget_mb * 2**20 / 16) // frame_bytes)
    return max(1, min(params.chunk_frames, room))


SCRATCH_MARGIN = 0.10
SCRATCH_SPARE_BYTES = 1 << 30
#: what a user is told when the corrected frames cannot be kept in a file
_SCRATCH_HINT = ("so each later read corrects the frames again (slower). Point the scratch folder at a larger disk: "
                 "TMPDIR, or correlation.scratch_dir in astro3s-infer")


def scratch_frame_file(shape: tuple[int, int, int], scratch_dir: str | Path | None = None) -> FrameFile | None:
    """A temporary file for the corrected frames, or None (with a warning) when the disk lacks room.

    Parameters
    ----------
    shape : (int, int, int)
        ``(T, H, W)``; the file takes ``4 T H W`` bytes.
    scratch_dir : str or Path, optional
        Folder of the file (default: the system's temporary folder, ``TMPDIR``).
        It must have the file's size plus 10 % (at least 1 GiB) free, so that
        the disk is not filled to the last byte (the CC analysis may spill
        traces there too).

    Returns
    -------
    FrameFile or None
    """
    folder = Path(scratch_dir) if scratch_dir else Path(tempfile.gettempdir())
    need = 4 * math.prod(int(s) for s in shape)
    spare = max(int(need * SCRATCH_MARGIN), SCRATCH_SPARE_BYTES)
    try:
        free = shutil.disk_usage(folder).free
        if free >= need + spare:
            return FrameFile(shape, folder)
    except OSError as err:
        log.warning("the corrected movie (%.2f GiB) does not fit the memory budget and cannot be written to %s "
                    "(%s), %s", need / 2**30, folder, err.strerror or err, _SCRATCH_HINT)
        return None
    log.warning("the corrected movie (%.2f GiB) does not fit the memory budget and %s has %.2f GiB free "
                "(%.2f GiB needed with the margin), %s", need / 2**30, folder, free / 2**30,
                (need + spare) / 2**30, _SCRATCH_HINT)
    return None


# ---------------------------------------------------------------------------------------------
# the reference


@dataclass
class MotionReference:
    """The motion-correction reference of a movie and the sample it was built from.

    Attributes
    ----------
    image : ndarray of float32, shape (H, W)
    spectrum : ndarray of complex64, shape (H, W // 2 + 1), or None
        Band-passed ``rfft2`` of the reference (None without motion correction).
    index : ndarray of int64, shape (S,)
        The sampled frames (the first frame of each sampled mean when ``bin_frames`` > 1).
    bin_frames : int
        1: each frame is registered on its own as the pass reads it. ``k`` > 1:
        the frames were too noisy for that, and ``shifts`` are those of the
        means of ``k`` consecutive frames, interpolated. 0: too noisy even so;
        ``shifts`` are zero (not corrected).
    shifts : ndarray of float32, shape (T, 2), or None
        The shifts the pass applies, when ``bin_frames`` is not 1.
    jump_px : float or None
        90th percentile of the jumps between the shifts of consecutive frames
        (or means) of the registration kept, px (None: not measured).
    """

    image: np.ndarray
    spectrum: np.ndarray | None
    index: np.ndarray
    bin_frames: int = 1
    shifts: np.ndarray | None = None
    jump_px: float | None = None


def motion_reference(movie: Any, params: PreprocessParams, device: str, max_shift: float, *,
                     scratch: np.ndarray | None = None) -> MotionReference:
    """The motion-correction reference of ``movie``, from an even sample of its frames.

    Parameters
    ----------
    movie : Movie or CorrectedMovie, shape (T, H, W)
    params : PreprocessParams
        ``motion_correction`` False: the reference is the sample's mean and
        nothing is registered.
    device : str
    max_shift : float
        Largest displacement searched, px.
    scratch : ndarray, optional
        Memory the sample's spectra may use (see :func:`build_reference`).

    Returns
    -------
    MotionReference
    """
    n_frames, height, width = (int(s) for s in movie.shape)
    # blocks of at most 64 MB (and 1/16 of the budget) of spectra; the block size depends on the
    # frame size and budget only, not on chunk_frames, so the reference's sums do not either
    block_bytes = int(min(64 * 2**20, params.memory_budget_mb * 2**20 / 16))
    if not params.motion_correction:
        # the mean of the sample: a running sum, nothing kept
        index = even_subsample(n_frames, params.reference_frames)
        block_frames = max(1, block_bytes // (8 * height * (width // 2 + 1)))
        total = np.zeros((height, width), np.float32)
        for a in range(0, len(index), block_frames):
            total += read_frames(movie, index[a:a + block_frames]).sum(axis=0)
        return MotionReference(total / len(index), None, index)
    count = reference_sample_frames(params, (height, width))
    if count < params.reference_frames:
        log.info("motion reference from %d sampled frames instead of %d (memory budget %.0f MB)", count,
                 params.reference_frames, params.memory_budget_mb)
    index = even_subsample(n_frames, count)
    reference, spectrum = build_reference(
        _FrameSample(movie, index), bandpass_sigmas=params.bandpass_sigmas,
        stable_fraction=params.reference_stable_fraction, upsample_factor=params.upsample_factor,
        max_shift=max_shift, device=device, block_bytes=block_bytes, scratch=scratch)
    single = MotionReference(reference, spectrum, index)
    if not params.register_noisy_frames:
        return single
    return _registration_for_noise(movie, single, params, device, max_shift, count=count, block_bytes=block_bytes)


#: pairs of consecutive frames (or frame means) whose shifts test a registration (shifts_consistent)
CONSISTENCY_PAIRS = 32
#: frames per mean tried, in order, when single frames are too noisy to register
REGISTRATION_BINS = (2, 4, 8, 16)
#: fewest means a binned registration is built from (its reference and its pairs)
MIN_REGISTRATION_BINS = 16
#: median similarity (correlation coefficient of the band-passed frame and reference at the peak) from which
#: inconsistent shifts are read as fast real motion, not noise: the frames are then registered one by one
NOISY_SIMILARITY = 0.2


#: frames at least this wide (both sides) are tested 2 x 2 binned: a quarter of the work and memory, and px-size
#: jumps still show (the test reads jumps of px, not their hundredths)
BINNED_TEST_SIDE = 128


def _pair_shifts(sample: Any, reference: np.ndarray, params: PreprocessParams, device: str,
                 max_shift: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Shifts (px of the movie) of the first and second member of each pair of ``sample`` (P, 2, H, W) registered
    to the image ``reference`` (H, W), and their similarity; frames of sides >= ``BINNED_TEST_SIDE`` are
    registered 2 x 2 binned (band-pass and search scaled alike)."""
    from astro3s.preprocess.scale import bin_frames

    n_pairs, _, height, width = sample.shape
    factor = 2 if min(height, width) >= BINNED_TEST_SIDE else 1
    frames = bin_frames(sample.reshape(2 * n_pairs, height, width), factor)
    image = bin_frames(np.asarray(reference, np.float32), factor)
    shape = (int(frames.shape[1]), int(frames.shape[2]))
    band = bandpass_filter(shape, tuple(float(s) / factor for s in params.bandpass_sigmas))
    # both band-passed, as the reference sample is (_refine_reference), so that the similarity is theirs
    spectra = rfft2(frames, device=device)
    spectra *= band
    shifts, similarity = register_spectra(spectra, rfft2(image, device=device) * band, shape,
                                          max_shift=max_shift / factor, device=device)
    shifts = (shifts * factor).reshape(n_pairs, 2, 2)
    return shifts[:, 0], shifts[:, 1], similarity


def _registration_for_noise(movie: Any, single: MotionReference, params: PreprocessParams, device: str,
                            max_shift: float, *, count: int, block_bytes: int) -> MotionReference:
    """``single`` when frames register one by one consistently, else a registration of frame means.

    The shifts of about 32 pairs of consecutive frames are compared
    (:func:`astro3s.preprocess.motion.shifts_consistent`). When they jump as
    noise does and the frames match the reference poorly (median similarity
    under ``NOISY_SIMILARITY``), means of 2, 4, 8, 16 consecutive frames are
    tried in turn, each with its own reference: the first whose consecutive
    means agree is used for the whole movie (:func:`binned_shifts`). When none
    does, the movie is not corrected. Suite2p meets the same problem with a
    temporal smoothing of the frames chosen by the user (``smooth_sigma_time``).
    """
    n_frames = int(movie.shape[0])
    if n_frames < 4:
        return single
    first, second, similarity = _pair_shifts(sample_frame_pairs(movie, CONSISTENCY_PAIRS), single.image,
                                             params, device, max_shift)
    consistent, jump = shifts_consistent(first, second, max_shift=max_shift)
    single.jump_px = jump
    median_similarity = float(np.median(similarity))
    if consistent or median_similarity >= NOISY_SIMILARITY:
        if not consistent:
            log.info("motion: consecutive frames' shifts differ by up to %.1f px (90th percentile) at a median "
                     "similarity of %.2f to the reference: read as fast motion", jump, median_similarity)
        return single
    log.info("motion: consecutive frames' shifts differ by up to %.1f px (90th percentile; similarity %.2f): the "
             "frames are too noisy to register one by one; trying means of consecutive frames", jump,
             median_similarity)
    for bin_frames in REGISTRATION_BINS:  # loop over a few bin sizes, each tried once
        n_bins = n_frames // bin_frames
        if n_bins < MIN_REGISTRATION_BINS:
            break
        starts = even_subsample(n_bins, count) * bin_frames
        reference, spectrum = build_reference(
            _FrameSample(movie, starts, bin_frames), bandpass_sigmas=params.bandpass_sigmas,
            stable_fraction=params.reference_stable_fraction, upsample_factor=params.upsample_factor,
            max_shift=max_shift, device=device, block_bytes=block_bytes)
        pair_starts = even_subsample(n_bins - 1, max(1, min(CONSISTENCY_PAIRS, n_bins // 2))) * bin_frames
        pairs = _FrameSample(movie, np.stack([pair_starts, pair_starts + bin_frames], 1).ravel(), bin_frames)
        first, second, _ = _pair_shifts(pairs[:].reshape(len(pair_starts), 2, *pairs.shape[1:]), reference,
                                        params, device, max_shift)
        consistent, jump = shifts_consistent(first, second, max_shift=max_shift)
        if consistent:
            log.info("motion: registered as means of %d consecutive frames (their shifts differ by up to %.1f px)",
                     bin_frames, jump)
            shifts = binned_shifts(movie, spectrum, bin_frames, params, device, max_shift)
            return MotionReference(reference, spectrum, starts, bin_frames, shifts, jump)
        log.info("motion: means of %d frames still disagree (%.1f px)", bin_frames, jump)
    log.warning("motion: the frames are too noisy to register, even as means of up to %d consecutive frames: the "
                "movie is not motion-corrected (check it for motion by eye)", REGISTRATION_BINS[-1])
    return MotionReference(single.image, single.spectrum, single.index, 0,
                           np.zeros((n_frames, 2), np.float32), single.jump_px)


def binned_shifts(movie: Any, spectrum: np.ndarray, bin_frames: int, params: PreprocessParams, device: str,
                  max_shift: float) -> np.ndarray:
    """Shifts of every frame from the registration of means of ``bin_frames`` consecutive frames.

    One pass over ``movie`` in chunks (a multiple of ``bin_frames`` frames);
    each mean is registered to ``spectrum`` (:func:`register_frames` without
    the correction) and the frames' shifts are interpolated between the
    means' times (:func:`astro3s.preprocess.motion.frame_shifts_from_bins`),
    after any mean that noise threw off took its neighbours' median shift
    (:func:`astro3s.preprocess.motion.isolated_shift_outliers`).

    Parameters
    ----------
    movie : Movie, shape (T, H, W)
    spectrum : ndarray of complex64, shape (H, W // 2 + 1)
        Band-passed ``rfft2`` of a reference built from such means.
    bin_frames : int
    params : PreprocessParams
    device : str
    max_shift : float

    Returns
    -------
    shifts : ndarray of float32, shape (T, 2)
    """
    n_frames, height, width = (int(s) for s in movie.shape)
    k = int(bin_frames)
    chunk = max(k, effective_chunk_frames(params, 4 * height * width) // k * k)
    bins = np.zeros((n_frames // k, 2), np.float32)
    for t0, block in read_chunks(movie, chunk):
        n_means = len(block) // k  # the movie's last frames, fewer than k, take their neighbours' shift
        if n_means == 0:
            continue
        means = block[:n_means * k].reshape(n_means, k, height, width).mean(axis=1)
        bins[t0 // k:t0 // k + n_means], _ = register_frames(
            means, spectrum, bandpass_sigmas=params.bandpass_sigmas, upsample_factor=params.upsample_factor,
            max_shift=max_shift, correct=False, device=device)
    # a mean that noise still threw off takes its neighbours' median shift, as single frames do
    _, bins = isolated_shift_outliers(bins, max_shift=max_shift)
    return frame_shifts_from_bins(bins, n_frames, k)


# ---------------------------------------------------------------------------------------------
# the pass


@dataclass
class Streamed:
    """What the streamed pass (stages 1-3) gives the later stages.

    Attributes
    ----------
    shifts : ndarray of float32, shape (T, 2)
    reference : ndarray of float32, shape (H, W)
    mean_image : ndarray of float32, shape (H, W)
        Temporal mean of the raw movie.
    median : ndarray of float32, shape (H, W)
        Temporal median of the baseline-subtracted frames, or the noise-variance
        image when ``params.morphology_image`` is ``"noise_variance"``.
    enhanced : ndarray of float32, shape (H, W)
        ``median`` enhanced (CLAHE, sharpening), in [0, 1].
    activity : ndarray of float32, shape (Q, H, W)
        Activity map of each of the ``activity_percentiles``.
    corrected : CorrectedMovie
    correlation_image : ndarray of float32, shape (H, W), or None
        Local temporal-correlation image, with ``params.activity_weight > 0`` or
        ``params.keep_correlation_image``
        (:func:`~astro3s.preprocess.correlation_image.local_correlation_image`).
    active : ndarray of float32, shape (H, W), or None
        The ``params.active_percentile`` temporal percentile of the frames the
        median was taken over, each at its own level less the typical frame
        baseline, clipped at 0 (:meth:`_Buffers.median`); None without it.
    ring_cores : ndarray of bool, shape (H, W), or None
        The pixels of ``median`` that the ring-core fill raised
        (:func:`~astro3s.preprocess.ring_cores.fill_ring_cores`); None when none was.
    timings : dict of str to float
        Seconds per stage.
    details : dict
        Frames used by the approximations (reference, median).
    """

    shifts: np.ndarray
    reference: np.ndarray
    mean_image: np.ndarray
    median: np.ndarray
    enhanced: np.ndarray
    activity: np.ndarray
    corrected: CorrectedMovie
    correlation_image: np.ndarray | None = None
    active: np.ndarray | None = None
    ring_cores: np.ndarray | None = None
    timings: dict[str, float] = field(default_factory=dict)
    details: dict[str, Any] = field(default_factory=dict)


class _PerThread:
    """One accumulator per thread, made on its first :meth:`get`; ``all`` lists them for the final sum."""

    def __init__(self, make: Callable[[], Any]):
        self._make = make
        self._local = threading.local()
        self._lock = threading.Lock()
        self.all: list[Any] = []

    def get(self) -> Any:
        value = getattr(self._local, "value", None)
        if value is None:
            value = self._local.value = self._make()
            with self._lock:
                self.all.append(value)
        return value


@dataclass
class _Buffers:
    """The per-frame and per-pixel outputs of the pass, written by the blocks into disjoint rows.

    ``cache`` (T, H, W) holds the corrected movie (or is None); ``median_frames``
    (M, H, W) the baseline-subtracted frames of the median's subsample, at
    ``median_slot[t]`` (-1: not used), or is None when the median is taken
    from the full cache. ``frames_file`` receives the corrected frames when
    there is no cache (see :func:`scratch_frame_file`), or is None.
    """

    shifts: np.ndarray
    baselines: np.ndarray
    cache: np.ndarray | None
    median_slot: np.ndarray
    median_frames: np.ndarray | None
    frames_file: FrameFile | None = None

    @classmethod
    def make(cls, shape: tuple[int, int, int], params: PreprocessParams, cache: bool | None,
             details: dict[str, Any]) -> _Buffers:
        n_frames, height, width = shape
        budget = params.memory_budget_mb * 2**20
        frame_bytes = 4 * height * width
        if cache is None:
            # a quarter: with the crop stacks (another quarter) and the CC analysis beside it, the
            # process stays within ~1.5 GB at any length (a cache of half the budget took it to 1.9 GB)
            cache = n_frames * frame_bytes <= budget / 4
        cache_array = np.empty((n_frames, height, width), np.float32) if cache else None
        median_room = int((budget / 4) // frame_bytes)
        if params.morphology_image == "noise_variance":
            # the noise-variance image stands in for the median (astro3s.preprocess.baseline): no median frames
            median_index = np.zeros(0, np.int64)
        else:
            median_index = even_subsample(n_frames, min(params.median_max_frames, max(median_room, 1)))
        if 0 < len(median_index) < n_frames:
            log.info("temporal median from %d of %d frames (memory budget %.0f MB)", len(median_index),
                     n_frames, params.memory_budget_mb)
        details["median_frames"] = int(len(median_index))
        # with every frame in the cache the median is taken there (baseline subtracted block by block);
        # otherwise the baseline-subtracted median frames are kept in a buffer
        from_cache = cache_array is not None and len(median_index) == n_frames
        median_frames = None if from_cache else np.empty((len(median_index), height, width), np.float32)
        median_slot = np.full(n_frames, -1, np.int64)
        median_slot[median_index] = np.arange(len(median_index))
        return cls(shifts=np.zeros((n_frames, 2), np.float32), baselines=np.empty(n_frames, np.float32),
                   cache=cache_array, median_slot=median_slot, median_frames=median_frames)

    def median(self, device: str, active_percentile: float | None = None) -> tuple[np.ndarray, np.ndarray | None]:
        """Temporal median of the baseline-subtracted frames, and the ``active_percentile`` of the same
        frames at their own levels (None: not taken); float32, shape (H, W).

        The active image keeps each frame's own level, less the typical frame baseline (the median image's
        zero), clipped at 0: the percentile of the baseline-subtracted frames follows every frame's
        neuropil-wide swings pixel by pixel and, equalised, showed their texture as cell-like patches
        (never-seen held-out movies 156-159: 5 false cells added, 1 true).
        """
        if self.median_frames is None:
            median = temporal_percentiles(self.cache, (50.0,), baselines=self.baselines, device=device)[0]
            if active_percentile is None:
                return median, None
            active = temporal_percentiles(self.cache, (float(active_percentile),), device=device)[0]
            level = float(np.median(self.baselines))
        else:
            median = temporal_percentiles(self.median_frames, (50.0,), device=device)[0]
            if active_percentile is None:
                return median, None
            # the kept frames are baseline-subtracted: each frame's own baseline is added back and the
            # typical one taken off, so that the image sits on the median image's zero
            used = np.flatnonzero(self.median_slot >= 0)[np.argsort(self.median_slot[self.median_slot >= 0])]
            level = float(np.median(self.baselines[used]))
            active = temporal_percentiles(self.median_frames, (float(active_percentile),),
                                          baselines=level - self.baselines[used], device=device)[0]
            level = 0.0
        active -= np.float32(level)  # on the median image's zero (the typical frame baseline off), clipped there
        return median, np.maximum(active, 0, out=active)


class _BlockWorker:
    """Stages 1-3 on one block of frames; called side by side from the pass's threads.

    Every result is per frame (written into disjoint rows of the shared
    buffers) or an integer count (per-thread sums: exact in any order).
    """

    STAGES = ("motion", "baseline", "activity")

    def __init__(self, buffers: _Buffers, reference_spectrum: np.ndarray | None, params: PreprocessParams,
                 device: str, max_shift: float, activity_percentiles: Sequence[float], shape: tuple[int, int],
                 shifts: np.ndarray | None = None):
        self.buffers = buffers
        self.reference_spectrum = reference_spectrum
        self.given_shifts = shifts  # known before the pass (frames too noisy to register one by one)
        self.params = params
        self.device = device
        self.max_shift = max_shift
        self.percentiles = list(activity_percentiles)
        # counts and stage times per worker thread (no lock on the hot path), summed after the pass
        self.accumulators = _PerThread(lambda: {
            "counts": np.zeros((len(self.percentiles), *shape), np.int64),
            **{stage: 0.0 for stage in self.STAGES}})

    def __call__(self, block: np.ndarray, t0: int, span: tuple[int, int]) -> None:
        """Frames ``t0 + [a, b)`` of the movie, rows ``[a, b)`` of the chunk ``block``."""
        a, b = span
        acc = self.accumulators.get()
        tick = time.perf_counter()
        corrected = self._correct(block[a:b], t0 + a)
        acc["motion"] += time.perf_counter() - tick
        tick = time.perf_counter()
        self._baseline(corrected, t0 + a)
        acc["baseline"] += time.perf_counter() - tick
        tick = time.perf_counter()
        self._activity(corrected, acc["counts"])
        acc["activity"] += time.perf_counter() - tick

    def _correct(self, frames: np.ndarray, t: int) -> np.ndarray:
        params, buffers = self.params, self.buffers
        if params.motion_correction and self.given_shifts is not None:
            shifts = self.given_shifts[t:t + len(frames)]
            buffers.shifts[t:t + len(frames)] = shifts
            corrected = correct_frames(frames, shifts, device=self.device) if np.any(shifts) else frames
        elif params.motion_correction:
            buffers.shifts[t:t + len(frames)], corrected = register_frames(
                frames, self.reference_spectrum, bandpass_sigmas=params.bandpass_sigmas,
                upsample_factor=params.upsample_factor, max_shift=self.max_shift, device=self.device)
        else:
            corrected = frames
        if buffers.cache is not None:
            if not np.may_share_memory(corrected, buffers.cache):  # else not moved: already there
                buffers.cache[t:t + len(frames)] = corrected  # over the raw frames read there
        elif buffers.frames_file is not None:
            buffers.frames_file.write(t, corrected)
        return corrected

    def _baseline(self, corrected: np.ndarray, t: int) -> None:
        params, buffers = self.params, self.buffers
        n = len(corrected)
        baselines = frame_percentiles(corrected, params.baseline_percentile, stride=params.percentile_stride,
                                      device=self.device)
        buffers.baselines[t:t + n] = baselines
        here = np.flatnonzero(buffers.median_slot[t:t + n] >= 0)
        if here.size and buffers.median_frames is not None:
            # the block's median frames have consecutive slots: subtract straight into the buffer
            slot0 = int(buffers.median_slot[t + here[0]])
            target = buffers.median_frames[slot0:slot0 + here.size]
            source = corrected if here.size == n else corrected[here]
            np.subtract(source, baselines[here, None, None], out=target)  # clipped after the median

    def _activity(self, corrected: np.ndarray, counts: np.ndarray) -> None:
        params = self.params
        thresholds = tile_thresholds(corrected, self.percentiles, size=params.tile_size, step=params.tile_step,
                                     stride=params.percentile_stride, device=self.device)
        for k in range(len(self.percentiles)):  # one percentile in normal use
            counts[k] += activity_counts(corrected, thresholds[k], size=params.tile_size, step=params.tile_step)

    def counts(self) -> np.ndarray:
        """Activity counts summed over the threads; int64, shape (Q, H, W)."""
        return sum(acc["counts"] for acc in self.accumulators.all)

    def stage_times(self, wall: float) -> dict[str, float]:
        """``wall`` seconds shared out in proportion to each stage's time summed over the threads."""
        stage = {key: sum(acc[key] for acc in self.accumulators.all) for key in self.STAGES}
        busy = sum(stage.values())
        return {key: wall * value / busy if busy > 0 else 0.0 for key, value in stage.items()}


@dataclass
class _RawStatistics:
    """Float64 sum over the raw frames (H, W), and their min and max."""

    total: np.ndarray
    lowest: float = math.inf
    highest: float = -math.inf


def _run_pass(movie: Any, chunk_frames: int, worker: _BlockWorker, progress: bool | None,
              device: str) -> tuple[_RawStatistics, float]:
    """Feed every chunk of ``movie`` to ``worker`` in cache-sized blocks on all cores.

    Returns the raw movie's statistics and the wall time of the work on the
    chunks (reading excluded where it overlaps).
    """
    from tqdm.auto import tqdm

    n_frames, height, width = (int(s) for s in movie.shape)
    frame_bytes = 4 * height * width
    raw = _RawStatistics(np.zeros((height, width), np.float64))
    # the next chunk is read (and summed) in the background while the workers correct this one
    # read straight into the cache of the corrected movie when there is one (corrected there in place)
    chunks = read_ahead(_with_raw_statistics(read_chunks(movie, chunk_frames, into=worker.buffers.cache)))
    bar = tqdm(chunks, total=math.ceil(n_frames / chunk_frames), desc="preprocess", unit="chunk",
               disable=(not progress) if progress is not None else None, leave=False)
    wall = 0.0
    # one pool for the whole pass, so that the per-thread accumulators are made once
    with ThreadPoolExecutor(_workers()) as pool:
        for t0, block, block_sum, block_min, block_max in bar:
            # float64 sum of the chunks' float32 sums, in chunk order
            raw.total += block_sum
            raw.lowest, raw.highest = min(raw.lowest, block_min), max(raw.highest, block_max)
            tick = time.perf_counter()
            spans = block_ranges(len(block), cache_block_frames(frame_bytes, len(block), device))
            map_blocks(lambda span, block=block, t0=t0: worker(block, t0, span), spans, pool=pool)
            wall += time.perf_counter() - tick
            del block  # before the next chunk is read
    return raw, wall


def _repair_isolated_shifts(movie: Any, buffers: _Buffers, max_shift: float, device: str) -> int:
    """Give frames whose shift noise threw off their neighbours' running median, and correct them again.

    :func:`astro3s.preprocess.motion.isolated_shift_outliers` finds them. Their
    raw frames are read again and corrected with the new shifts into the
    stored corrected movie (cache or frame file), and the median sample's
    copies are made again; frames corrected on read take the new shifts from
    ``buffers.shifts``. The activity counts keep those few frames as first
    corrected.

    Returns
    -------
    int
        The number of frames repaired.
    """
    outliers, repaired = isolated_shift_outliers(buffers.shifts, max_shift=max_shift)
    frames = np.flatnonzero(outliers)
    if not frames.size:
        return 0
    log.info("motion: %d frame(s) whose shift noise threw off their neighbours' (e.g. frame %d: %s px) take their "
             "neighbours' median shift", frames.size, frames[0],
             "/".join(f"{v:+.1f}" for v in buffers.shifts[frames[0]]))
    buffers.shifts[frames] = repaired[frames]
    if buffers.cache is None and buffers.frames_file is None:
        return int(frames.size)  # corrected on read, with the new shifts
    for start in range(0, frames.size, 64):  # a few MB at a time
        index = frames[start:start + 64]
        fixed = correct_frames(read_frames(movie, index), buffers.shifts[index], device=device)
        if buffers.cache is not None:
            buffers.cache[index] = fixed
        else:
            for frame, image in zip(index, fixed, strict=True):
                buffers.frames_file.write(int(frame), image[None])
        slots = buffers.median_slot[index]
        if buffers.median_frames is not None and np.any(slots >= 0):
            keep = slots >= 0
            buffers.median_frames[slots[keep]] = fixed[keep] - buffers.baselines[index[keep], None, None]
    return int(frames.size)


def _corrected_store(buffers: _Buffers) -> str:
    """Where the corrected frames are kept: ``"memory"``, ``"file"`` or ``"none"`` (corrected on read).

    A frame file with a failed write is closed (deleted) and dropped, with a warning.
    """
    if buffers.cache is not None:
        return "memory"
    stored = buffers.frames_file
    if stored is not None and stored.error is not None:
        log.warning("writing the corrected movie to a temporary file in %s failed (%s), %s", stored.folder,
                    stored.error, _SCRATCH_HINT)
        stored.close()
        buffers.frames_file = None
    return "file" if buffers.frames_file is not None else "none"


def _without_hot_pixels(median: np.ndarray, active: np.ndarray | None,
                        details: dict[str, Any]) -> tuple[np.ndarray, np.ndarray | None, np.ndarray]:
    """The median (and active) image with a detector's hot or stuck pixels filled, and where they are.

    They are the brightest points of the median image, not tissue
    (:func:`~astro3s.preprocess.enhance.isolated_spikes`); ``details["hot_pixels"]`` counts them.
    """
    spikes = isolated_spikes(median)
    details["hot_pixels"] = int(spikes.sum())
    if not details["hot_pixels"]:
        return median, active, spikes
    log.info("%d hot or stuck pixel(s) (single pixels far above their neighbours) filled from their neighbours in "
             "the median, mean and activity images (fill_hot_pixels=false: kept)", details["hot_pixels"])
    return fill_pixels(median, spikes), None if active is None else fill_pixels(active, spikes), spikes


def _with_ring_cores_filled(median: np.ndarray, params: PreprocessParams,
                            details: dict[str, Any]) -> tuple[np.ndarray, np.ndarray | None]:
    """The median image with membrane-labelled somata's dim cores raised to their rims' brightness.

    :func:`~astro3s.preprocess.ring_cores.fill_ring_cores` when ``params.fill_ring_cores`` (else ``median``
    as it is); ``details["ring_core_px"]`` counts the pixels raised, ``details["ring_core_areas"]`` lists the
    cores' areas.

    Returns
    -------
    median : ndarray of float32, shape (H, W)
    cores : ndarray of bool, shape (H, W), or None
        The pixels raised; None when none was (or the fill is off).
    """
    if not params.fill_ring_cores:
        return median, None
    filled, cores = fill_ring_cores(median, min_depth=params.ring_core_depth, fill=params.ring_core_fill,
                                    min_rim_contrast=params.ring_core_contrast)
    details["ring_core_px"] = int(cores.sum())
    if not details["ring_core_px"]:
        return filled, None
    from scipy import ndimage

    labels, count = ndimage.label(cores)
    # each core's area (its basin and a 1-px band): the soma scale of a membrane-labelled FOV (inference.segment)
    details["ring_core_areas"] = np.bincount(labels.ravel(), minlength=count + 1)[1:].tolist()
    log.info("%d px of dim soma cores inside bright rims (a membrane-targeted indicator) raised to their rims' "
             "brightness in the median image (kept: fill_ring_cores=false for astro3s-infer, "
             "preprocess.fill_ring_cores=false for astro3s-preprocess)", details["ring_core_px"])
    return filled, cores


def stream_movie(movie: Any, params: PreprocessParams, device: str, *, activity_percentiles: Sequence[float],
                 progress: bool | None, cache: bool | None = None,
                 scratch_dir: str | Path | None = None) -> Streamed:
    """Stages 1-3 in one pass over ``movie``: the pieces the later stages need.

    Parameters
    ----------
    movie : Movie or CorrectedMovie, shape (T, H, W)
        Read in chunks of ``params.chunk_frames`` (lowered to fit the memory budget).
    params : PreprocessParams
    device : str
        ``"cpu"`` or a CUDA device.
    activity_percentiles : sequence of float
        Tile percentiles of the activity maps (one per map).
    progress : bool or None
        Show a progress bar (None: when writing to a terminal).
    cache : bool, optional
        Keep the corrected movie in memory (default: when it takes at most
        a quarter of ``params.memory_budget_mb``). Otherwise, with motion
        correction, the corrected frames are written once to a temporary
        file that ``Streamed.corrected`` reads (and deletes on ``close()``);
        without room for it, they are corrected again on each read.
    scratch_dir : str or Path, optional
        Folder of that file (default: the system's temporary folder, ``TMPDIR``).

    Returns
    -------
    Streamed

    Raises
    ------
    InputError
        Fewer than 2 frames, frames smaller than 8 x 8, a constant movie, or
        NaN/Inf values.
    """
    n_frames, height, width = validate_movie(movie)
    timings: dict[str, float] = {}
    details: dict[str, Any] = {}

    tick = time.perf_counter()
    max_shift = params.max_shift_fraction * min(height, width)
    buffer_details: dict[str, Any] = {}
    buffers = _Buffers.make((n_frames, height, width), params, cache, buffer_details)
    # the reference's spectra use the cache's pages (not written yet): fresh memory is slow to touch
    reference = motion_reference(movie, params, device, max_shift, scratch=buffers.cache)
    details["reference_frames"] = len(reference.index)
    if params.motion_correction and params.register_noisy_frames:
        details["motion_bin_frames"] = reference.bin_frames
        details["motion_jump_px"] = None if reference.jump_px is None else round(reference.jump_px, 2)
    details.update(buffer_details)
    timings["reference"] = time.perf_counter() - tick

    if buffers.cache is None and params.motion_correction:
        buffers.frames_file = scratch_frame_file((n_frames, height, width), scratch_dir)
    try:
        worker = _BlockWorker(buffers, reference.spectrum, params, device, max_shift, activity_percentiles,
                              (height, width), shifts=reference.shifts)
        raw, wall = _run_pass(movie, effective_chunk_frames(params, 4 * height * width), worker, progress, device)
        if raw.highest == raw.lowest:
            raise _constant_error(movie)
    except BaseException:
        if buffers.frames_file is not None:
            buffers.frames_file.close()  # nothing left behind
        raise
    details["corrected_store"] = _corrected_store(buffers)
    timings.update(worker.stage_times(wall))
    if params.motion_correction and params.register_noisy_frames and reference.bin_frames == 1:
        details["motion_repaired_frames"] = _repair_isolated_shifts(movie, buffers, max_shift, device)

    tick = time.perf_counter()
    corrected = CorrectedMovie(movie, buffers.shifts, device=device, cache=buffers.cache,
                               frames_file=buffers.frames_file)
    active = ring_cores = None
    spikes = None
    if params.morphology_image == "noise_variance":
        # a baseline-free (dF) movie: its noise carries the resting fluorescence (astro3s.preprocess.baseline)
        median = noise_variance_image(corrected.chunks(effective_chunk_frames(params, 4 * height * width)))
    else:
        median, active = buffers.median(device, params.active_percentile)
        if params.fill_hot_pixels:
            median, active, spikes = _without_hot_pixels(median, active, details)
        # ASTRA's clip at 0 of the baseline-subtracted median, dim regions raised first (vignetting)
        clipped = np.maximum(median, 0)
        median = lift_dim_background(median) if params.lift_dim_background else clipped
        lifted = float(np.mean(median > clipped))
        details["dim_background_lifted"] = round(lifted, 4)
        if lifted > 0:
            log.info("uneven illumination: a smooth fall-off below the clip at 0 lifted on %.1f %% of the FOV "
                     "(ASTRA's clip alone: lift_dim_background=false for astro3s-infer, "
                     "preprocess.lift_dim_background=false for astro3s-preprocess)", 100 * lifted)
        del clipped
    median, ring_cores = _with_ring_cores_filled(median, params, details)
    buffers.median_frames = None
    correlation = None
    if params.activity_weight > 0 or params.keep_correlation_image:
        # read back from memory or the frame file: the frames are not corrected again
        correlation = local_correlation_image(
            (block for _, block in corrected.chunks(effective_chunk_frames(params, 4 * height * width))),
            n_frames, (height, width),
            fs=getattr(movie, "fs", None), bin_s=params.activity_bin_s)
    enhanced = enhance_network_image(median, correlation, params)  # brightened only with activity_weight > 0
    timings["median_enhance"] = time.perf_counter() - tick
    coverage = tile_coverage((height, width), size=params.tile_size, step=params.tile_step)
    activity = (worker.counts() / coverage[None]).astype(np.float32)
    mean_image = (raw.total / n_frames).astype(np.float32)
    if spikes is not None and spikes.any():
        activity = np.stack([fill_pixels(a, spikes) for a in activity])
        mean_image = fill_pixels(mean_image, spikes)
    return Streamed(shifts=buffers.shifts, reference=reference.image.astype(np.float32),
                    mean_image=mean_image, median=median, enhanced=enhanced,
                    activity=activity, corrected=corrected, correlation_image=correlation, active=active,
                    ring_cores=ring_cores, timings=timings, details=details)

