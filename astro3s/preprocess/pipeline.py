"""The whole pre-processing of one movie, streamed in time chunks, and its file.

One pass over the movie does stages 1-3: each chunk of frames is registered to
a reference (built beforehand from a sample of frames), corrected by Fourier
shift, and feeds the per-frame baselines, the temporal-median buffer and the
activity counts. Stage 4 works on the activity map alone; stages 5-6 need the
corrected movie around each candidate, which is read again (from a cache of
the corrected movie when it fits ``memory_budget_mb``, otherwise corrected
again chunk by chunk). The corrected movie is never written: the result keeps
a :class:`~astro3s.preprocess.motion.CorrectedMovie` handle. When the cache
holds every frame the temporal median is taken from it, with no buffer.

Parallel work: each chunk is split into blocks of a few MB of frames that run
side by side on the CPU cores, every stage 1-3 step of a block in a row while
its data are in cache (:func:`~astro3s.preprocess._backend.map_blocks`), and
the next chunk is read in the background meanwhile; the candidates' local
filters also run side by side. Every result is per frame, per pixel or an
integer count, so it does not depend on the number of threads nor on the
block size.

Exact versus approximate: everything is exact and independent of
``chunk_frames`` when the movie is small enough; for movies beyond the memory
budget the motion reference is built from fewer sampled frames, the temporal
median is the median of an even subsample of frames, and the local filter of
stage 5 uses an even subsample of frames per candidate (all logged, and counted
in ``details``). Per-frame percentiles use every ``percentile_stride``-th pixel.

Memory: besides those budgeted buffers, two raw float32 chunks (the one being
corrected, the one being read) and each thread's block in a few float32 /
complex64 copies (spectra, correlation, corrected frames) are held at a time;
no page of a memory-mapped movie stays resident (frames are read with plain
file reads, see :meth:`astro3s.io.Movie.frames`).

Timings (``details["timings"]``): the wall time of the streamed pass is shared
out among ``motion``, ``baseline`` and ``activity`` in proportion to their time
summed over the threads.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import threading
import time
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from astro3s.errors import InputError
from astro3s.preprocess._backend import (_workers, block_ranges, cache_block_frames, irfft2, map_blocks, resolve_device,
                                        rfft2)
from astro3s.preprocess.activity import activity_counts, tile_coverage, tile_thresholds
from astro3s.preprocess.candidates import find_candidates
from astro3s.preprocess.crops import extract_crops, fov_map
from astro3s.preprocess.enhance import enhance_image, frame_percentiles, temporal_median
from astro3s.preprocess.local_filter import candidate_boxes, candidate_centres, local_activity_filters
from astro3s.preprocess.motion import (CorrectedMovie, _reference_block, _reference_from_spectra, _shift_spectra,
                                       bandpass_filter, correct_frames, register_spectra)
from astro3s.preprocess.params import PreprocessParams, params_from_dict

__all__ = ["Preprocessed", "as_movie", "load_preprocessed", "preprocess", "save_preprocessed"]

log = logging.getLogger(__name__)

FORMAT_VERSION = 1
MIN_FRAMES = 2
MIN_SIDE = 8


def as_movie(movie: Any) -> Any:
    """Wrap an array as :class:`astro3s.io.Movie`; Movies and CorrectedMovies pass through."""
    from astro3s.io import Movie

    if isinstance(movie, (Movie, CorrectedMovie)):
        return movie
    if isinstance(movie, (str, Path)):
        from astro3s.io import read_movie

        return read_movie(movie)
    return Movie.from_array(np.asarray(movie) if not hasattr(movie, "shape") else movie)


@dataclass
class Preprocessed:
    """Result of :func:`preprocess` for one FOV.

    Attributes
    ----------
    shifts : ndarray of float32, shape (T, 2)
        ``(dy, dx)`` displacement of each frame relative to ``reference``
        (see :mod:`astro3s.preprocess.motion`).
    reference : ndarray of float32, shape (H, W)
        Motion-correction reference image.
    mean_image : ndarray of float32, shape (H, W)
        Temporal mean of the raw (uncorrected) movie.
    enhanced : ndarray of float32, shape (H, W)
        Enhanced image, values in [0, 1].
    activity_map : ndarray of float32, shape (H, W)
        Coverage-normalised supra-threshold counts, in frames [0, T].
    candidates : ndarray of uint16, shape (H, W)
        Soma candidate labels 1..N (0 = background).
    crop_boxes : ndarray of int32, shape (N, 4)
        ``(y0, x0, y1, x1)`` of each candidate's filter box in the FOV.
    crop_masks : ndarray of bool, shape (N, S, S)
        Local-activity masks, padded like ``crops``.
    crops : ndarray of float32, shape (N, S, S)
        Enhanced image x mask in each box, zero-padded to ``S = crop_size``;
        ``astro3s.preprocess.paste_crops`` puts arrays of this layout back.
    fov_map : ndarray of float32, shape (H, W)
        Enhanced image x union of the masks (the whole-FOV network input).
    fov_mask : ndarray of bool, shape (H, W)
        Union of the masks.
    params : PreprocessParams
        The parameters used.
    shape : (int, int, int)
        ``(T, H, W)`` of the movie.
    fs : float or None
        Frame rate in Hz.
    source : str or None
        Path of the movie file.
    details : dict
        Candidate search outcome, approximations used, timings (s) per stage.
    corrected : CorrectedMovie or None
        Lazy motion-corrected movie (original movie + shifts).
    median_image : ndarray of float32, shape (H, W), or None
        Temporal median of the baseline-subtracted frames, the image ``enhanced``
        is made from (kept so that the enhancement can be redone at another
        scale: :func:`reselect_candidates`); None when loaded from a file.
    """

    shifts: np.ndarray
    reference: np.ndarray
    mean_image: np.ndarray
    enhanced: np.ndarray
    activity_map: np.ndarray
    candidates: np.ndarray
    crop_boxes: np.ndarray
    crop_masks: np.ndarray
    crops: np.ndarray
    fov_map: np.ndarray
    fov_mask: np.ndarray
    params: PreprocessParams
    shape: tuple[int, int, int]
    fs: float | None = None
    source: str | None = None
    details: dict[str, Any] = field(default_factory=dict)
    corrected: CorrectedMovie | None = field(default=None, repr=False, compare=False)
    median_image: np.ndarray | None = field(default=None, repr=False, compare=False)

    @property
    def n_candidates(self) -> int:
        """Number of soma candidates ``N``."""
        return int(len(self.crop_boxes))


# ---------------------------------------------------------------------------------------------
# stages 1-3: one streamed pass


def _validate(movie: Any) -> tuple[int, int, int]:
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


def _even_subsample(n: int, count: int) -> np.ndarray:
    count = max(1, min(int(count), n))
    return np.unique(np.round(np.linspace(0, n - 1, count)).astype(np.int64))


def _read_frames(movie: Any, index: np.ndarray) -> np.ndarray:
    """Frames ``index`` of ``movie`` as one float32 array, checked for NaN/Inf."""
    if hasattr(movie, "frames"):
        # only those frames, into one preallocated array; memory maps by plain reads (no resident pages)
        frames = movie.frames(index, dtype=np.float32)
    else:
        frames = np.empty((len(index), *movie.shape[1:]), np.float32)
        for i, t in enumerate(index):  # a lazy reader fetches only those frames (I/O, not computation)
            frames[i] = movie[int(t)]
    finite = np.isfinite(frames).all(axis=(1, 2))
    if not finite.all():
        bad = int(index[np.argmin(finite)])
        raise InputError(movie.path, f"frame {bad} (counted from 0) contains NaN or Inf values.",
                         "fix or drop the damaged frames, e.g. replace them by a neighbouring frame.")
    return frames


def reference_sample_frames(params: PreprocessParams, shape: tuple[int, int]) -> int:
    """Frames of the reference sample: ``params.reference_frames``, capped by the memory budget.

    The sample is held as ``rfft2`` spectra (complex64, ``8 H (W // 2 + 1)``
    bytes a frame), which may take at most 1/8 of ``params.memory_budget_mb``.
    """
    height, width = shape
    room = int((params.memory_budget_mb * 2**20 / 8) // (8 * height * (width // 2 + 1)))
    return max(1, min(params.reference_frames, room))


def _reference(movie: Any, params: PreprocessParams, device: str,
               max_shift: float) -> tuple[np.ndarray, np.ndarray | None, int]:
    """(reference image, band-passed reference spectrum x band-pass or None, sample size)."""
    n_frames, height, width = (int(s) for s in movie.shape)
    shape2 = (height, width)
    # blocks of at most 64 MB (and 1/16 of the budget) of spectra; the block size depends on the
    # frame size and budget only, not on chunk_frames, so the reference's sums do not either
    block_frames = _reference_block((height, width), int(min(64 * 2**20, params.memory_budget_mb * 2**20 / 16)))
    if not params.motion_correction:
        # the mean of the sample: a running sum, nothing kept
        index = _even_subsample(n_frames, params.reference_frames)
        total = np.zeros(shape2, np.float32)
        for a in range(0, len(index), block_frames):
            total += _read_frames(movie, index[a:a + block_frames]).sum(axis=0)
        return total / len(index), None, len(index)
    count = reference_sample_frames(params, shape2)
    if count < params.reference_frames:
        log.info("motion reference from %d sampled frames instead of %d (memory budget %.0f MB)", count,
                 params.reference_frames, params.memory_budget_mb)
    index = _even_subsample(n_frames, count)
    # only the sample's spectra are kept: frames are read and transformed a block at a time
    spectra = np.empty((len(index), height, width // 2 + 1), np.complex64)
    for a in range(0, len(index), block_frames):
        frames = _read_frames(movie, index[a:a + block_frames])  # read here: readers may not be thread-safe
        sub_frames = cache_block_frames(4 * height * width, len(frames), device)

        def transform(span: tuple[int, int]) -> None:
            spectra[a + span[0]:a + span[1]] = rfft2(frames[span[0]:span[1]], device=device)  # noqa: F821 - bound before the call (deleted later)

        map_blocks(transform, block_ranges(len(frames), sub_frames))
        del frames
    reference, reference_spectrum = _reference_from_spectra(
        spectra, shape2, bandpass_sigmas=params.bandpass_sigmas, stable_fraction=params.reference_stable_fraction,
        upsample_factor=params.upsample_factor, max_shift=max_shift, device=device, block_frames=block_frames)
    del spectra
    return reference, reference_spectrum * bandpass_filter(shape2, params.bandpass_sigmas), len(index)


def _with_raw_statistics(chunks: Iterator[tuple[int, np.ndarray]]) -> Iterator[tuple[Any, ...]]:
    """``(t0, block, block's float32 sum over frames, its min, its max)`` for each chunk.

    The float32 sum over a chunk is exact for integer movies (< 2**24 per pixel
    for chunks of <= 256 16-bit frames); chunks are summed in float64.
    """
    for t0, block in chunks:
        yield t0, block, block.sum(axis=0), float(block.min()), float(block.max())


_END = object()


def _read_ahead(items: Iterator[Any]) -> Iterator[Any]:
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


class _PerThread:
    """One accumulator per thread, made on its first :meth:`get`; ``all`` lists them for the final sum."""

    def __init__(self, make: Any):
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


def effective_chunk_frames(params: PreprocessParams, frame_bytes: int) -> int:
    """``params.chunk_frames``, lowered so that a float32 chunk takes at most 1/16 of the memory budget.

    A chunk lives in about four copies at once (float32 block or spectra, product,
    correlation, corrected; the FFTs work in place where they can), so this keeps
    the working set near a quarter of the budget.
    """
    room = int((params.memory_budget_mb * 2**20 / 16) // frame_bytes)
    return max(1, min(params.chunk_frames, room))


def _stream(movie: Any, params: PreprocessParams, device: str, *,  # noqa: C901, PLR0915 - the streamed pass; to be split with the streaming engine (issue 14)
            activity_percentiles: Sequence[float], progress: bool | None,
            cache: bool | None = None) -> dict[str, Any]:
    """Stages 1-3 in one pass over ``movie``; returns the pieces the later stages need."""
    from tqdm.auto import tqdm

    n_frames, height, width = _validate(movie)
    shape2 = (height, width)
    budget = params.memory_budget_mb * 2**20
    frame_bytes = 4 * height * width
    timings: dict[str, float] = {}
    details: dict[str, Any] = {}

    chunk_frames = effective_chunk_frames(params, frame_bytes)

    # reference from an even sample of frames
    tick = time.perf_counter()
    max_shift = params.max_shift_fraction * min(height, width)
    reference, reference_filter, n_sample = _reference(movie, params, device, max_shift)
    details["reference_frames"] = n_sample
    timings["reference"] = time.perf_counter() - tick

    # buffers: corrected-movie cache, median frames
    if cache is None:
        cache = n_frames * frame_bytes <= budget / 2
    cache = np.empty((n_frames, height, width), np.float32) if cache else None
    median_room = int((budget / 4) // frame_bytes)
    median_index = _even_subsample(n_frames, min(params.median_max_frames, max(median_room, 1)))
    if len(median_index) < n_frames:
        log.info("temporal median from %d of %d frames (memory budget %.0f MB)", len(median_index),
                 n_frames, params.memory_budget_mb)
    details["median_frames"] = int(len(median_index))
    # with every frame in the cache the median is taken there (baseline subtracted block by block);
    # otherwise the baseline-subtracted median frames are kept in a buffer
    median_from_cache = cache is not None and len(median_index) == n_frames
    median_frames = None if median_from_cache else np.empty((len(median_index), height, width), np.float32)
    frame_baselines = np.empty(n_frames, np.float32)
    median_slot = np.full(n_frames, -1, np.int64)
    median_slot[median_index] = np.arange(len(median_index))

    shifts = np.zeros((n_frames, 2), np.float32)
    raw_sum = np.zeros(shape2, np.float64)
    lowest, highest = math.inf, -math.inf
    # counts and stage times per worker thread (no lock on the hot path), summed after the pass
    accumulators = _PerThread(lambda: {
        "counts": np.zeros((len(activity_percentiles), height, width), np.int64),
        "motion": 0.0, "baseline": 0.0, "activity": 0.0})

    def work(block: np.ndarray, t0: int, span: tuple[int, int]) -> None:
        # stages 1-3 on frames t0 + [a, b) of the chunk; every result is per frame (written into
        # disjoint rows of the shared arrays) or an integer count (per-thread sums: exact in any order)
        a, b = span
        t_a, t_b = t0 + a, t0 + b
        acc = accumulators.get()
        tick = time.perf_counter()
        if params.motion_correction:
            spectra = rfft2(block[a:b], device=device)
            # the band-pass rides on the reference: (S band) conj(R) = S conj(R band), one copy less
            shifts[t_a:t_b], _ = register_spectra(
                spectra, reference_filter, shape2, upsample_factor=params.upsample_factor,
                max_shift=max_shift, with_similarity=False, device=device)
            spectra = _shift_spectra(spectra, shifts[t_a:t_b], shape2, out=spectra)  # in place
            corrected = irfft2(spectra, shape2, device=device, overwrite_x=True)
            del spectra
            corrected = corrected.astype(np.float32, copy=False)
        else:
            corrected = block[a:b]
        if cache is not None:
            cache[t_a:t_b] = corrected
        acc["motion"] += time.perf_counter() - tick

        tick = time.perf_counter()
        baselines = frame_percentiles(corrected, params.baseline_percentile,
                                      stride=params.percentile_stride, device=device)
        frame_baselines[t_a:t_b] = baselines
        here = np.flatnonzero(median_slot[t_a:t_b] >= 0)
        if here.size and median_frames is not None:  # noqa: F821 - bound before the call (deleted later)
            # the block's median frames have consecutive slots: subtract straight into the buffer
            slot0 = int(median_slot[t_a + here[0]])
            target = median_frames[slot0:slot0 + here.size]  # noqa: F821 - bound before the call (deleted later)
            source = corrected if here.size == len(corrected) else corrected[here]
            np.subtract(source, baselines[here, None, None], out=target)
            np.maximum(target, 0, out=target)  # = subtract_baseline
        acc["baseline"] += time.perf_counter() - tick

        tick = time.perf_counter()
        thresholds = tile_thresholds(corrected, list(activity_percentiles), size=params.tile_size,
                                     step=params.tile_step, stride=params.percentile_stride, device=device)
        for k in range(len(activity_percentiles)):  # one percentile in normal use
            acc["counts"][k] += activity_counts(corrected, thresholds[k], size=params.tile_size,
                                                step=params.tile_step)
        acc["activity"] += time.perf_counter() - tick

    # the next chunk is read (and summed) in the background while the workers correct this one
    chunks = _read_ahead(_with_raw_statistics(movie.chunks(chunk_frames, dtype=np.float32)))
    bar = tqdm(chunks, total=math.ceil(n_frames / chunk_frames), desc="preprocess", unit="chunk",
               disable=(not progress) if progress is not None else None, leave=False)
    streamed = 0.0
    # one pool for the whole pass, so that the per-thread accumulators are made once
    with ThreadPoolExecutor(_workers()) as pool:
        for t0, block, block_sum, block_min, block_max in bar:
            # float64 sum of the chunks' float32 sums, in chunk order
            raw_sum += block_sum
            lowest, highest = min(lowest, block_min), max(highest, block_max)
            tick = time.perf_counter()
            spans = block_ranges(len(block), cache_block_frames(frame_bytes, len(block), device))
            map_blocks(lambda span: work(block, t0, span), spans, pool=pool)  # noqa: F821 - bound before the call (deleted later)
            streamed += time.perf_counter() - tick
            del block  # before the next chunk is read
    if highest == lowest:
        raise _constant_error(movie)
    counts = sum(acc["counts"] for acc in accumulators.all)
    # wall time of the pass shared out in proportion to each stage's time summed over the threads
    stage = {key: sum(acc[key] for acc in accumulators.all) for key in ("motion", "baseline", "activity")}
    busy = sum(stage.values())
    timings.update({key: streamed * value / busy if busy > 0 else 0.0 for key, value in stage.items()})

    tick = time.perf_counter()
    if median_from_cache:
        median = temporal_median(cache, baselines=frame_baselines, device=device)
    else:
        median = temporal_median(median_frames, device=device)
    del median_frames
    enhanced = enhance_image(median, clip_limit=params.clahe_clip_limit, tiles=params.clahe_tiles,
                             nbins=params.clahe_bins)
    timings["median_enhance"] = time.perf_counter() - tick
    coverage = tile_coverage(shape2, size=params.tile_size, step=params.tile_step)
    activity = (counts / coverage[None]).astype(np.float32)
    return {
        "shifts": shifts, "reference": reference.astype(np.float32),
        "mean_image": (raw_sum / n_frames).astype(np.float32), "enhanced": enhanced, "median": median,
        "activity": activity, "corrected": CorrectedMovie(movie, shifts, device=device, cache=cache),
        "timings": timings, "details": details,
    }


# ---------------------------------------------------------------------------------------------
# stage 5: local filters need each candidate's crop over time


def crop_filters(corrected: CorrectedMovie, boxes: np.ndarray, *, percentile: float,
                 pairs: Sequence[tuple[float, float]], stride: int = 1, chunk_frames: int = 256,
                 memory_budget_mb: float = 2048.0) -> tuple[np.ndarray, int]:
    """Local activity filter masks of every box, for one or more ``(th1, th2)`` pairs.

    Parameters
    ----------
    corrected : CorrectedMovie
    boxes : ndarray, shape (N, 4)
        Boxes of equal size ``h x w``.
    percentile : float
    pairs : sequence of (float, float)
    stride : int
        Pixel stride of the percentile estimates.
    chunk_frames : int
    memory_budget_mb : float
        The crops of all boxes over all frames are gathered in one pass when
        they fit a quarter of it; otherwise an even subsample of frames is used.

    Returns
    -------
    masks : ndarray of bool, shape (P, N, h, w)
    frames_used : int
        Frames the filter statistics were computed on.
    """
    boxes = np.asarray(boxes, dtype=np.int64).reshape(-1, 4)
    n_frames = corrected.shape[0]
    if len(boxes) == 0:
        return np.zeros((len(pairs), 0, 0, 0), bool), n_frames
    h, w = int(boxes[0, 2] - boxes[0, 0]), int(boxes[0, 3] - boxes[0, 1])
    out = np.zeros((len(pairs), len(boxes), h, w), bool)

    def one(n: int, stack: np.ndarray) -> None:
        out[:, n] = local_activity_filters(stack, percentile=percentile, pairs=pairs, stride=stride)

    if corrected.cache is not None:
        # candidates side by side on the cores (each filter is independent and single-threaded)
        map_blocks(lambda n: one(n, corrected.cache[:, boxes[n, 0]:boxes[n, 2], boxes[n, 1]:boxes[n, 3]]),
                   range(len(boxes)))
        return out, n_frames
    room = int((memory_budget_mb * 2**20 / 4) // (4 * h * w * len(boxes)))
    index = _even_subsample(n_frames, max(room, 1))
    if len(index) < n_frames:
        log.info("local activity filter on %d of %d frames (memory budget %.0f MB)", len(index), n_frames,
                 memory_budget_mb)
    stacks = np.empty((len(boxes), len(index), h, w), np.float32)
    # only the frames used are read and corrected (chunk_frames is already memory-capped)
    frame_bytes = 4 * corrected.shape[1] * corrected.shape[2]
    for a in range(0, len(index), chunk_frames):
        frames = index[a:a + chunk_frames]
        block = _read_frames(corrected.movie, frames)

        def gather(span: tuple[int, int]) -> None:
            # correct a block of frames (in cache) and copy its boxes out
            b0, b1 = span
            part = correct_frames(block[b0:b1], corrected.shifts[frames[b0:b1]], device=corrected.device)  # noqa: F821 - bound before the call (deleted later)
            for n, (y0, x0, y1, x1) in enumerate(boxes):  # loop over candidates
                stacks[n, a + b0:a + b1] = part[:, y0:y1, x0:x1]

        map_blocks(gather, block_ranges(len(frames), cache_block_frames(frame_bytes, len(frames), corrected.device)))
        del block
    map_blocks(lambda n: one(n, stacks[n]), range(len(boxes)))
    return out, len(index)


# ---------------------------------------------------------------------------------------------


def _candidate_stages(activity: np.ndarray, enhanced: np.ndarray, corrected: CorrectedMovie | None,
                      params: PreprocessParams, n_frames: int, timings: dict[str, float],
                      details: dict[str, Any]) -> tuple[np.ndarray, ...]:
    """Stages 4-6 (candidates, local activity filter, crops) from the maps of stages 1-3."""
    height, width = activity.shape
    tick = time.perf_counter()
    candidates, search = find_candidates(
        activity, n_frames, soma_area_range=params.soma_area_range, threshold_start=params.threshold_start,
        threshold_step=params.threshold_step, threshold_floor=params.threshold_floor,
        expected_cells=params.expected_cells, start_area_fraction=params.start_area_fraction,
        min_area_fraction=params.min_area_fraction, area_step_fraction=params.area_step_fraction,
        last_area_fraction=params.last_area_fraction, tiny_area_fraction=params.tiny_area_fraction,
        extension_threshold=params.extension_threshold)
    details["candidate_search"] = search
    timings["candidates"] = time.perf_counter() - tick

    tick = time.perf_counter()
    boxes = candidate_boxes(candidate_centres(candidates), (height, width), params.filter_box)
    if corrected is None and len(boxes):
        raise ValueError("the local activity filter needs the motion-corrected movie (pre.corrected)")
    masks, frames_used = crop_filters(corrected, boxes, percentile=params.filter_percentile,
                                      pairs=[(params.th1, params.th2)], stride=params.percentile_stride,
                                      chunk_frames=effective_chunk_frames(params, 4 * height * width),
                                      memory_budget_mb=params.memory_budget_mb)
    masks = masks[0]
    details["filter_frames"] = int(frames_used)
    timings["local_filter"] = time.perf_counter() - tick

    tick = time.perf_counter()
    crops = extract_crops(enhanced, boxes, masks, crop_size=params.crop_size)
    crop_masks = extract_crops(np.ones_like(enhanced), boxes, masks, crop_size=params.crop_size) > 0
    fov, union = fov_map(enhanced, boxes, masks)
    timings["crops"] = time.perf_counter() - tick
    return candidates, boxes, crop_masks, crops, fov, union, enhanced


def reselect_candidates(pre: Preprocessed, params: PreprocessParams) -> Preprocessed:
    """Stages 4-6 again (candidates, local filter, crops) with other parameters.

    Motion correction and the maps of stages 1-3 are kept, so this costs a
    fraction of :func:`preprocess`: used when the soma scale of a movie turns
    out to differ from the parameters' (``soma_area_range``), or to try
    candidate-search settings. The CLAHE settings of stage 2 may change too
    when ``pre.median_image`` is kept (the enhanced image is then made again
    from it).

    Parameters
    ----------
    pre : Preprocessed
        A result with its motion-corrected movie (``pre.corrected``), as
        :func:`preprocess` returns it.
    params : PreprocessParams
        New parameters; those of stages 1-3 must equal ``pre.params``'.

    Returns
    -------
    Preprocessed
        Shares the corrected movie with ``pre``.
    """
    early = ("motion_correction", "reference_frames", "reference_stable_fraction", "upsample_factor",
             "bandpass_sigmas", "max_shift_fraction", "baseline_percentile", "median_max_frames",
             "tile_size", "tile_step", "activity_percentile", "percentile_stride")
    enhancement = ("clahe_clip_limit", "clahe_tiles", "clahe_bins")
    changed = [k for k in early if getattr(params, k) != getattr(pre.params, k)]
    reenhance = any(getattr(params, k) != getattr(pre.params, k) for k in enhancement)
    if reenhance and pre.median_image is None:
        changed += [k for k in enhancement if getattr(params, k) != getattr(pre.params, k)]
    if changed:
        raise ValueError(f"reselect_candidates cannot change stage 1-3 parameters ({', '.join(changed)}); "
                         "run preprocess() again")
    timings: dict[str, float] = {}
    details = {k: v for k, v in pre.details.items() if k not in ("candidate_search", "filter_frames")}
    start = time.perf_counter()
    enhanced = pre.enhanced
    if reenhance:  # the CLAHE step again on the kept median image (cheap: one 2-D image)
        enhanced = enhance_image(pre.median_image, clip_limit=params.clahe_clip_limit, tiles=params.clahe_tiles,
                                 nbins=params.clahe_bins)
    candidates, boxes, crop_masks, crops, fov, union, enhanced = _candidate_stages(
        pre.activity_map, enhanced, pre.corrected, params, int(pre.shape[0]), timings, details)
    timings["total"] = time.perf_counter() - start
    details["reselect_timings"] = timings
    log.info("candidates again with soma areas %s px: %d candidate(s), %.2f s",
             tuple(round(a) for a in params.soma_area_range), len(boxes), timings["total"])
    return dataclasses.replace(pre, enhanced=enhanced, candidates=candidates, crop_boxes=boxes,
                               crop_masks=crop_masks, crops=crops, fov_map=fov, fov_mask=union, params=params,
                               details=details)


def preprocess(movie: Any, params: PreprocessParams | None = None, *,
               progress: bool | None = None, cache: bool | None = None) -> Preprocessed:
    """Pre-process one movie: motion correction to single-cell crops.

    Parameters
    ----------
    movie : Movie, ndarray or path
        ``(T, H, W)`` movie; read lazily in chunks of ``params.chunk_frames``.
    params : PreprocessParams, optional
        Defaults to ASTRA's published values.
    progress : bool, optional
        Show a progress bar (default: when writing to a terminal).
    cache : bool, optional
        Keep the corrected movie in memory for stage 5 (default: when it
        takes at most half of ``params.memory_budget_mb``); False re-reads and
        re-corrects the movie in chunks, as for movies larger than memory.

    Returns
    -------
    Preprocessed

    Raises
    ------
    InputError
        Fewer than 2 frames, frames smaller than 8 x 8, a constant movie, or
        NaN/Inf values.
    """
    params = params or PreprocessParams()
    movie = as_movie(movie)
    device = resolve_device(params.device)
    start = time.perf_counter()
    log.info("pre-processing %s (%d x %d x %d) on %s", movie.path or "array", *movie.shape, device)
    streamed = _stream(movie, params, device, activity_percentiles=[params.activity_percentile],
                       progress=progress, cache=cache)
    activity = streamed["activity"][0]
    n_frames, height, width = (int(s) for s in movie.shape)
    timings, details = streamed["timings"], streamed["details"]

    stages = _candidate_stages(activity, streamed["enhanced"], streamed["corrected"], params, n_frames,
                               timings, details)
    timings["total"] = time.perf_counter() - start
    details["timings"] = timings
    candidates, boxes, crop_masks, crops, fov, union, enhanced = stages
    log.info("pre-processed %s: %d candidate(s), max |shift| %.2f px, %.2f s",
             movie.path or "array", len(boxes),
             float(np.abs(streamed["shifts"]).max()) if n_frames else 0.0, timings["total"])
    return Preprocessed(
        shifts=streamed["shifts"], reference=streamed["reference"], mean_image=streamed["mean_image"],
        enhanced=enhanced, activity_map=activity, candidates=candidates, crop_boxes=boxes,
        crop_masks=crop_masks, crops=crops, fov_map=fov, fov_mask=union, params=params,
        shape=(n_frames, height, width), fs=getattr(movie, "fs", None),
        source=None if getattr(movie, "path", None) is None else str(movie.path),
        details=details, corrected=streamed["corrected"], median_image=streamed["median"])


# ---------------------------------------------------------------------------------------------
# file

_ARRAYS = ("shifts", "reference", "mean_image", "enhanced", "activity_map", "candidates", "crop_boxes",
           "crop_masks", "crops", "fov_map", "fov_mask")


def save_preprocessed(result: Preprocessed, path: str | Path) -> Path:
    """Write ``result`` to an ``.npz`` file atomically and return its path.

    The file holds the arrays of :class:`Preprocessed` under their names, plus
    ``params`` (JSON of the parameters), ``fs``, ``shape``, ``source`` and
    ``details`` (JSON), and ``format_version``.
    """
    from astro3s.io.atomic import atomic_path

    path = Path(path)
    meta = {"fs": result.fs, "shape": list(result.shape), "source": result.source,
            "format_version": FORMAT_VERSION}
    payload = {name: np.asarray(getattr(result, name)) for name in _ARRAYS}
    payload["params"] = np.asarray(json.dumps(result.params.to_dict()))
    payload["meta"] = np.asarray(json.dumps(meta))
    payload["details"] = np.asarray(json.dumps(result.details, default=_jsonable))
    # the figures and the loader need these too, without reading the JSON
    payload["fs"] = np.asarray(np.nan if result.fs is None else float(result.fs))
    payload["shape"] = np.asarray(result.shape, dtype=np.int64)
    payload["source"] = np.asarray("" if result.source is None else result.source)
    with atomic_path(path) as tmp, open(tmp, "wb") as handle:
        np.savez_compressed(handle, **payload)
    return path


def _jsonable(obj: Any) -> Any:
    if hasattr(obj, "tolist"):
        return obj.tolist()
    return str(obj)


def load_preprocessed(path: str | Path, *, movie: Any = None) -> Preprocessed:
    """Read a file written by :func:`save_preprocessed`.

    Parameters
    ----------
    path : str or Path
    movie : Movie or ndarray, optional
        The original movie, for ``result.corrected``; by default the file named
        in the result is opened lazily if it still exists (else ``corrected`` is None).

    Raises
    ------
    InputError
        When the file is missing, damaged or not a pre-processing result.
    """
    path = Path(path)
    try:
        with np.load(path, allow_pickle=False) as data:
            arrays = {name: data[name] for name in _ARRAYS}
            params = params_from_dict(json.loads(str(data["params"])))
            meta = json.loads(str(data["meta"]))
            details = json.loads(str(data["details"]))
    except FileNotFoundError:
        raise InputError(path, "not found.", "run astro3s-preprocess first.") from None
    except (OSError, ValueError, KeyError) as err:
        raise InputError(path, f"is not a readable pre-processing result ({err}).",
                         "run astro3s-preprocess again with overwrite=true.") from None
    if meta.get("format_version", 0) > FORMAT_VERSION:
        raise InputError(path, f"was written by a newer astro3s (format {meta['format_version']}).",
                         "upgrade astro3s.")
    shape = tuple(int(s) for s in meta["shape"])
    corrected = None
    if movie is None and meta.get("source") and Path(meta["source"]).exists():
        try:
            from astro3s.io import read_movie

            movie = read_movie(meta["source"], fs=meta.get("fs"))
        except InputError as err:
            log.warning("corrected movie unavailable: %s", err)
    if movie is not None:
        movie = as_movie(movie)
        if tuple(movie.shape) != shape:
            raise InputError(getattr(movie, "path", None), f"has shape {tuple(movie.shape)}, but the "
                             f"pre-processing result {path} was made from a {shape} movie.")
        corrected = CorrectedMovie(movie, arrays["shifts"], device=resolve_device(params.device))
    arrays["candidates"] = arrays["candidates"].astype(np.uint16, copy=False)
    return Preprocessed(**arrays, params=params, shape=shape, fs=meta.get("fs"), source=meta.get("source"),
                        details=details, corrected=corrected)
