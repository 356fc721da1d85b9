"""The whole pre-processing of one movie: the stages in order (orchestration).

:func:`preprocess` runs stages 1-3 in one streamed pass over the movie
(:func:`~astro3s.preprocess.streaming.stream_movie`: motion correction,
enhanced image, activity map), then stages 4-6 on their results
(:func:`_candidate_stages`: soma candidates, local activity filter, crops).
Stage 5 needs the corrected movie around each candidate, which is read again
(:func:`crop_filters`: from the cache of the corrected movie when it fits
``memory_budget_mb``, otherwise from the temporary file the streamed pass
wrote it to, or, without room for that file, corrected again chunk by chunk;
beyond the budget the local filter uses an even subsample of frames per
candidate, logged and counted in ``details``). :func:`reselect_candidates` redoes
stages 4-6 with other parameters.

The result, :class:`~astro3s.preprocess.result.Preprocessed`, is written and
read by :mod:`~astro3s.preprocess.storage`; both are re-exported here.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from astro3s.preprocess._backend import block_ranges, cache_block_frames, map_blocks, resolve_device
from astro3s.preprocess.baseline import BaselineCheck, check_baseline
from astro3s.preprocess.candidates import NOISY_ENHANCE_SIGMA, blob_candidates, find_candidates, significant_candidates
from astro3s.preprocess.crops import extract_crops, fov_map
from astro3s.preprocess.enhance import enhance_network_image
from astro3s.preprocess.local_filter import candidate_boxes, candidate_centres, local_activity_filters
from astro3s.preprocess.motion import CorrectedMovie, as_movie, correct_frames
from astro3s.preprocess.params import PreprocessParams
from astro3s.preprocess.result import Preprocessed
from astro3s.preprocess.storage import FORMAT_VERSION, load_preprocessed, save_preprocessed
from astro3s.preprocess.streaming import (MIN_FRAMES, MIN_SIDE, effective_chunk_frames, even_subsample, read_frames,
                                          reference_sample_frames, sample_frame_pairs, stream_movie, validate_movie)

__all__ = ["FORMAT_VERSION", "MIN_FRAMES", "MIN_SIDE", "Preprocessed", "as_movie", "crop_filters",
           "effective_chunk_frames", "load_preprocessed", "preprocess", "reference_sample_frames",
           "reselect_candidates", "resolve_morphology_image", "save_preprocessed"]

log = logging.getLogger(__name__)


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
        they fit a quarter of it; otherwise, for a movie within half of it,
        every frame for batches of boxes that fit (one read per batch), and
        beyond that an even subsample of frames.

    Returns
    -------
    masks : ndarray of bool, shape (P, N, h, w)
    frames_used : int
        Frames the filter statistics were computed on.

    Notes
    -----
    When every frame is used (the corrected movie is cached, or within half
    the budget), the masks are kept on ``corrected`` (``filter_masks``, by box
    and settings): :func:`reselect_candidates` finds most of the boxes of the
    first selection again (14 of 16 on a ``d1_like`` movie, 79 of 89 on a
    dense one), and their masks are taken from there, not computed again.
    """
    boxes = np.asarray(boxes, dtype=np.int64).reshape(-1, 4)
    n_frames = corrected.shape[0]
    if len(boxes) == 0:
        return np.zeros((len(pairs), 0, 0, 0), bool), n_frames
    memo = getattr(corrected, "filter_masks", None)
    if memo is None or not _filters_use_every_frame(corrected, memory_budget_mb):
        # a frame subsample depends on the number of boxes: computed as a whole, not kept
        return _crop_filters(corrected, boxes, percentile=percentile, pairs=pairs, stride=stride,
                             chunk_frames=chunk_frames, memory_budget_mb=memory_budget_mb)
    settings = (float(percentile), tuple((float(a), float(b)) for a, b in pairs), int(stride))
    keys = [(settings, *(int(v) for v in box)) for box in boxes]
    missing = list({key: n for n, key in enumerate(keys) if key not in memo}.values())
    if missing:
        masks, _ = _crop_filters(corrected, boxes[missing], percentile=percentile, pairs=pairs, stride=stride,
                                 chunk_frames=chunk_frames, memory_budget_mb=memory_budget_mb)
        for k, n in enumerate(missing):
            memo[keys[n]] = masks[:, k]
    return np.stack([memo[key] for key in keys], axis=1), n_frames


def _filters_use_every_frame(corrected: CorrectedMovie, memory_budget_mb: float) -> bool:
    """Whether :func:`crop_filters` reads every frame: the corrected movie is cached or within half the budget."""
    return corrected.cache is not None or 4 * math.prod(corrected.shape) <= memory_budget_mb * 2**20 / 2


def _crop_filters(corrected: CorrectedMovie, boxes: np.ndarray, *, percentile: float,
                  pairs: Sequence[tuple[float, float]], stride: int, chunk_frames: int,
                  memory_budget_mb: float) -> tuple[np.ndarray, int]:
    """:func:`crop_filters` computed for every box (``boxes``: int64, at least one)."""
    n_frames = corrected.shape[0]
    h, w = int(boxes[0, 2] - boxes[0, 0]), int(boxes[0, 3] - boxes[0, 1])
    out = np.zeros((len(pairs), len(boxes), h, w), bool)
    scratch = threading.local()  # one crop-sized buffer per thread, for the cache's (strided) crops

    def one(n: int, stack: np.ndarray) -> None:
        buffer = getattr(scratch, "buffer", None)
        if buffer is None and not stack.flags.c_contiguous:
            buffer = scratch.buffer = np.empty(stack.shape, np.float32)
        out[:, n] = local_activity_filters(stack, percentile=percentile, pairs=pairs, stride=stride, buffer=buffer)

    if corrected.cache is not None:
        # candidates side by side on the cores (each filter is independent and single-threaded)
        map_blocks(lambda n: one(n, corrected.cache[:, boxes[n, 0]:boxes[n, 2], boxes[n, 1]:boxes[n, 3]]),
                   range(len(boxes)))
        return out, n_frames
    quarter = memory_budget_mb * 2**20 / 4
    if _filters_use_every_frame(corrected, memory_budget_mb):
        # a movie within half the budget (as the cache once was): every frame, as from a cache, for batches
        # of candidates whose stacks fit a quarter of it (one read of the frames per batch)
        batch = max(1, int(quarter // (4 * h * w * n_frames)))
        for c0 in range(0, len(boxes), batch):  # a loop over batches of candidates (one when they fit)
            stacks = _crop_stacks(corrected, boxes[c0:c0 + batch], np.arange(n_frames), chunk_frames)
            map_blocks(lambda n, c0=c0, stacks=stacks: one(c0 + n, stacks[n]), range(len(stacks)))
            del stacks
        return out, n_frames
    index = even_subsample(n_frames, max(int(quarter // (4 * h * w * len(boxes))), 1))
    if len(index) < n_frames:
        log.info("local activity filter on %d of %d frames (memory budget %.0f MB)", len(index), n_frames,
                 memory_budget_mb)
    stacks = _crop_stacks(corrected, boxes, index, chunk_frames)
    map_blocks(lambda n: one(n, stacks[n]), range(len(boxes)))
    return out, len(index)


def _crop_stacks(corrected: CorrectedMovie, boxes: np.ndarray, index: np.ndarray, chunk_frames: int) -> np.ndarray:
    """The frames ``index`` of the corrected movie in each box, float32 (N, len(index), h, w)."""
    h, w = int(boxes[0, 2] - boxes[0, 0]), int(boxes[0, 3] - boxes[0, 1])
    stacks = np.empty((len(boxes), len(index), h, w), np.float32)
    # only the frames used are read and corrected (chunk_frames is already memory-capped); frames the
    # streamed pass stored in a file are read from it, already corrected
    stored = corrected.stored
    frame_bytes = 4 * corrected.shape[1] * corrected.shape[2]
    for a in range(0, len(index), chunk_frames):
        frames = index[a:a + chunk_frames]
        block = stored.read_index(frames) if stored is not None else read_frames(corrected.movie, frames)

        def gather(span: tuple[int, int], block: np.ndarray = block, frames: np.ndarray = frames,
                   a: int = a) -> None:
            # correct a block of frames (in cache) and copy its boxes out
            b0, b1 = span
            part = block[b0:b1] if stored is not None else correct_frames(
                block[b0:b1], corrected.shifts[frames[b0:b1]], device=corrected.device)
            for n, (y0, x0, y1, x1) in enumerate(boxes):  # loop over candidates
                stacks[n, a + b0:a + b1] = part[:, y0:y1, x0:x1]

        map_blocks(gather, block_ranges(len(frames), cache_block_frames(frame_bytes, len(frames), corrected.device)))
        del block, gather  # before the next chunk is read
    return stacks


# ---------------------------------------------------------------------------------------------
# stages 4-6 and the whole pipeline


def _candidate_stages(activity: np.ndarray, enhanced: np.ndarray, corrected: CorrectedMovie | None,
                      params: PreprocessParams, n_frames: int, timings: dict[str, float],
                      details: dict[str, Any], median_image: np.ndarray | None = None,
                      correlation_image: np.ndarray | None = None) -> tuple[np.ndarray, ...]:
    """Stages 4-6 (candidates, local activity filter, crops) from the maps of stages 1-3.

    ``median_image`` (stage 2's, optional) adds the median-image blobs of
    ``params.median_blob_response`` to the candidates. When the search finds
    nothing and ``params.noisy_candidates`` holds, the significant components
    of the activity map are the candidates and the network's image is made
    again from ``median_image`` (and ``correlation_image``) smoothed by
    ``NOISY_ENHANCE_SIGMA`` px; the returned ``enhanced`` is that image.
    """
    height, width = activity.shape
    tick = time.perf_counter()
    candidates, search = find_candidates(
        activity, n_frames, soma_area_range=params.soma_area_range, threshold_start=params.threshold_start,
        threshold_step=params.threshold_step, threshold_floor=params.threshold_floor,
        expected_cells=params.expected_cells, start_area_fraction=params.start_area_fraction,
        min_area_fraction=params.min_area_fraction, area_step_fraction=params.area_step_fraction,
        last_area_fraction=params.last_area_fraction, tiny_area_fraction=params.tiny_area_fraction,
        extension_threshold=params.extension_threshold, fallback_floor=params.fallback_floor)
    if search["found"] == 0 and params.noisy_candidates:
        candidates = significant_candidates(activity, soma_area_range=params.soma_area_range)
        search["significant"] = int(candidates.max(initial=0))
        if search["significant"]:
            log.info("soma candidates: %d where the activity map stands out from its own spread (the movie is too "
                     "noisy for the search's thresholds)%s", search["significant"],
                     f"; its median image smoothed by {NOISY_ENHANCE_SIGMA:g} px" if median_image is not None else "")
            if median_image is not None and params.enhance_sigma < NOISY_ENHANCE_SIGMA:
                enhanced = enhance_network_image(median_image, correlation_image,
                                                 params.replace(enhance_sigma=NOISY_ENHANCE_SIGMA))
    if params.median_blob_response is not None and median_image is not None:
        candidates, search["median_blobs"] = blob_candidates(
            median_image, candidates, soma_area_range=params.soma_area_range,
            min_response=params.median_blob_response)
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
    from it). Without the median image the median-image blob candidates
    (``median_blob_response``) are left out.

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
    early = ("line_correction", "min_line_offset", "motion_correction", "register_noisy_frames", "reference_frames",
             "reference_stable_fraction", "upsample_factor", "bandpass_sigmas", "max_shift_fraction",
             "baseline_percentile", "median_max_frames", "active_percentile", "fill_hot_pixels", "fill_ring_cores",
             "tile_size", "tile_step", "activity_percentile", "percentile_stride", "activity_bin_s")
    enhancement = ("enhance_sigma", "clahe_clip_limit", "clahe_tiles", "clahe_min_tile", "clahe_bins",
                   "activity_weight", "activity_threshold")
    changed = [k for k in early if getattr(params, k) != getattr(pre.params, k)]
    reenhance = any(getattr(params, k) != getattr(pre.params, k) for k in enhancement)
    # the correlation image is made by the pass over the movie, only when its weight is not 0
    if params.activity_weight > 0 and pre.correlation_image is None \
            and params.activity_weight != pre.params.activity_weight:
        changed.append("activity_weight")
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
        enhanced = enhance_network_image(pre.median_image, pre.correlation_image, params)
    candidates, boxes, crop_masks, crops, fov, union, enhanced = _candidate_stages(
        pre.activity_map, enhanced, pre.corrected, params, int(pre.shape[0]), timings, details,
        median_image=pre.median_image, correlation_image=pre.correlation_image)
    timings["total"] = time.perf_counter() - start
    details["reselect_timings"] = timings
    log.info("candidates again with soma areas %s px: %d candidate(s), %.2f s",
             tuple(round(a) for a in params.soma_area_range), len(boxes), timings["total"])
    return dataclasses.replace(pre, enhanced=enhanced, candidates=candidates, crop_boxes=boxes,
                               crop_masks=crop_masks, crops=crops, fov_map=fov, fov_mask=union, params=params,
                               details=details)


#: frames averaged for the line-offset estimate (an even subsample)
LINE_OFFSET_FRAMES = 128
#: the two halves of that sample must read the offset within this many px of each other ...
LINE_OFFSET_AGREEMENT = 0.15
#: ... and the odd rows match the even ones at least this well there (normalised cross-correlation; raw movies
#: 0.95-0.99, a low photon count 0.6, dF and dF/F exports 0.0-0.65; chosen 2026-12-06, ninth session, on held-out
#: index 0 as written, combed, dF and dF/F)
LINE_SIMILARITY = 0.5


def with_lines_in_place(movie: Any, params: PreprocessParams) -> tuple[Any, float | None]:
    """``movie`` read with a bidirectional scan's odd rows put back, when they are out of place.

    The offset is measured on the mean of an even subsample of
    :data:`LINE_OFFSET_FRAMES` frames (:func:`astro3s.preprocess.lines.estimate_line_offset`);
    at ``params.min_line_offset`` px or more, when the two halves of the sample
    (every other frame) read it within :data:`LINE_OFFSET_AGREEMENT` px of each
    other, the odd rows match the even ones at least :data:`LINE_SIMILARITY`
    there and it is not at the search's edge, the movie is read through
    :meth:`astro3s.io.Movie.with_line_shift` (logged), so that every later read,
    the corrected movie's included, sees the rows in place. The agreement test
    keeps movies without a static image (dF and dF/F exports, whose mean is
    mostly noise) from being "corrected" by a chance lag.

    Returns
    -------
    movie : Movie
        ``movie`` itself when nothing is corrected.
    offset : float or None
        The measured offset, px (None: not measured, ``params.line_correction``
        off or a movie that cannot be shifted, e.g. one already corrected).
    """
    from astro3s.io import Movie
    from astro3s.preprocess.lines import MAX_LINE_OFFSET, estimate_line_offset, measure_line_offset

    if (not params.line_correction or not isinstance(movie, Movie) or movie.line_shift
            or params.morphology_image == "noise_variance"):  # a dF movie has no static image to measure on
        return movie, None
    n_frames, height, width = validate_movie(movie)
    index = even_subsample(n_frames, min(LINE_OFFSET_FRAMES, n_frames))
    sums = np.zeros((2, height, width), np.float64)  # every other sampled frame: two halves of the sample
    step = 2 * max(1, (16 * 2**20) // (8 * height * width))  # ~32 MB of frames at a time
    for a in range(0, len(index), step):  # blocks of frames (I/O)
        block = read_frames(movie, index[a:a + step])
        sums[0] += block[0::2].sum(axis=0)
        sums[1] += block[1::2].sum(axis=0)
    offset, similarity = measure_line_offset(sums.sum(axis=0) / len(index))
    if abs(offset) < params.min_line_offset:
        return movie, offset
    # a scan's offset is the same in every frame and the rows it combs are alike: the two halves of the sample
    # (every other frame) must read it alike, and the odd rows must match the even ones there. A mean image
    # without static structure (a dF or dF/F export, noise) reads a chance lag.
    halves = [estimate_line_offset(half) for half in sums] if len(index) >= 4 else []
    why = ("its two halves read " + " and ".join(f"{h:.2f}" for h in halves) + " px"
           if len(halves) < 2 or abs(halves[0] - halves[1]) > LINE_OFFSET_AGREEMENT else
           f"the rows match only {similarity:.2f} there" if similarity < LINE_SIMILARITY else
           f"at the search's edge ({MAX_LINE_OFFSET:g} px)" if abs(offset) >= MAX_LINE_OFFSET - 0.05 else "")
    if why:
        log.info("%s: no bidirectional-scan offset corrected: the odd rows read %.2f px aside, but %s",
                 movie.path or "the movie", offset, why)
        return movie, offset
    log.info("%s: the odd rows sit %.2f px %s of the even ones (a bidirectional scan out of phase); they are "
             "read back in place (line_correction=false with astro3s-infer, preprocess.line_correction=false with "
             "astro3s-preprocess, keeps them as stored)",
             movie.path or "the movie", abs(offset), "right" if offset > 0 else "left")
    return movie.with_line_shift(-offset), offset


def resolve_morphology_image(movie: Any, params: PreprocessParams) -> tuple[PreprocessParams, BaselineCheck | None]:
    """``params`` with ``morphology_image="auto"`` resolved for ``movie`` (and the check, when made).

    A baseline-free (dF) movie gets the noise-variance image and no motion
    correction (:mod:`astro3s.preprocess.baseline`), with a warning.
    """
    if params.morphology_image != "auto":
        return params, None
    validate_movie(movie)
    pairs = sample_frame_pairs(movie)
    if len(pairs) < 4:  # too short to tell (fewer than 8 frames): ASTRA's median image
        return params.replace(morphology_image="median"), None
    check = check_baseline(pairs)
    del pairs
    if not check.baseline_free:
        return params.replace(morphology_image="median"), check
    log.warning("%s looks baseline-subtracted (dF): its median image is flat (spatial variance %.1fx its "
                "noise's) and unlike its noise-variance image (rank correlation %.2f), which has structure "
                "(%.2f between two halves of the sample). The cells' shapes are read from the noise-variance "
                "image instead and motion is not corrected (a dF movie has nothing static to register on). "
                "For the best results give the raw movie; morphology_image=median (astro3s-infer) or "
                "preprocess.morphology_image=median (astro3s-preprocess) keeps the median image.",
                movie.path or "the movie", check.median_contrast, check.median_noise_correlation,
                check.noise_reliability)
    return params.replace(morphology_image="noise_variance", motion_correction=False), check


def preprocess(movie: Any, params: PreprocessParams | None = None, *,
               progress: bool | None = None, cache: bool | None = None,
               scratch_dir: str | Path | None = None) -> Preprocessed:
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
        takes at most a quarter of ``params.memory_budget_mb``); False does as for
        movies larger than memory: the streamed pass writes the corrected
        frames to a temporary file, which ``corrected`` reads (or, without
        room on the disk, the movie is re-read and re-corrected in chunks).
    scratch_dir : str or Path, optional
        Folder of that temporary file (default: the system's, ``TMPDIR``).

    Returns
    -------
    Preprocessed
        ``corrected`` owns the temporary file, if any: ``result.corrected.close()``
        deletes it (as does dropping the result, or the end of the process).

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
    params, baseline = resolve_morphology_image(movie, params)
    movie, line_offset = with_lines_in_place(movie, params)
    streamed = stream_movie(movie, params, device, activity_percentiles=[params.activity_percentile],
                            progress=progress, cache=cache, scratch_dir=scratch_dir)
    activity = streamed.activity[0]
    n_frames, height, width = (int(s) for s in movie.shape)
    timings, details = streamed.timings, streamed.details
    if baseline is not None:
        details["baseline_check"] = baseline.as_dict()
    details["morphology_image"] = params.morphology_image
    if line_offset is not None:
        details["line_offset_px"] = line_offset
    if line_offset is not None or getattr(movie, "line_shift", 0.0):
        # also a shift the caller gave the movie: a saved result reads its movie again with it (storage)
        details["line_shift_px"] = float(getattr(movie, "line_shift", 0.0))

    try:
        stages = _candidate_stages(activity, streamed.enhanced, streamed.corrected, params, n_frames,
                                   timings, details, median_image=streamed.median,
                                   correlation_image=streamed.correlation_image)
    except BaseException:
        streamed.corrected.close()  # its temporary file, if any: nothing left behind
        raise
    timings["total"] = time.perf_counter() - start
    details["timings"] = timings
    if getattr(movie, "open_options", None):  # key / channel / plane: a later load opens the file alike
        details["source_options"] = dict(movie.open_options)
    candidates, boxes, crop_masks, crops, fov, union, enhanced = stages
    log.info("pre-processed %s: %d candidate(s), max |shift| %.2f px, %.2f s",
             movie.path or "array", len(boxes),
             float(np.abs(streamed.shifts).max()) if n_frames else 0.0, timings["total"])
    return Preprocessed(
        shifts=streamed.shifts, reference=streamed.reference, mean_image=streamed.mean_image,
        enhanced=enhanced, activity_map=activity, candidates=candidates, crop_boxes=boxes,
        crop_masks=crop_masks, crops=crops, fov_map=fov, fov_mask=union, params=params,
        shape=(n_frames, height, width), fs=getattr(movie, "fs", None),
        source=None if getattr(movie, "path", None) is None else str(movie.path),
        details=details, corrected=streamed.corrected, median_image=streamed.median,
        correlation_image=streamed.correlation_image, active_image=streamed.active,
        ring_cores=streamed.ring_cores)
