"""One movie through the whole method: pre-processing, network, combination, CC analysis, outputs.

::

    from astro3s.inference import InferenceOptions, load_inference_model, infer_movie
    model, options = load_inference_model("default")
    result = infer_movie("movie.tif", "results/", model, options)
    result.output   # results/movie/ with soma.tif, ..., summary.json, overlay.png

With ``rois=EDITED_RoiSet.zip`` the segmentation is skipped and the given
cells (e.g. curated in Fiji) go straight to traces and CC domains.
"""

from __future__ import annotations

import dataclasses
import logging
import platform
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from astro3s.errors import Astro3sError, ConfigError, InputError

log = logging.getLogger(__name__)

__all__ = ["InferenceOptions", "MovieResult", "infer_movie", "load_inference_model", "movie_output_dir",
           "parse_frame_rate"]


#: ``InferenceOptions.somata``: outlines extended and cut at half maximum, extended only, the network's
SOMATA_MODES = ("refined", "extended", "network")
#: ``InferenceOptions.binned_processes``: grown and kept on ridges, every grown pixel, the network's
BINNED_PROCESS_MODES = ("ridges", "grown", "network")
# Most process area a cell keeps, as a multiple of its soma's: about the 90th percentile of the per-cell ratio
# in ASTRA's consensus annotations (D1 2.90, D2 1.78, D4 2.46; medians 1.48 / 1.20 / 1.16;
# experiments/measure_annotations.py). Chosen 2026-12-05 among 2.0 / 2.5 / 3.0 on the held-out family 0-3 and
# never-seen 100-103 and the training simulator's presets: 2.0 cut the processes of d1_like and d2_like cells
# that annotators would keep (process F1 0.647 -> 0.630, 0.646 -> 0.493); 2.5 moved none of them down and
# small-soma FOVs' process F1 0.538 -> 0.585 (experiments/results/heldout_ablation.md).
MAX_PROCESS_RATIO = 2.5
# the temporal percentile of the active view (InferenceOptions.active_view; tried 2026-12-05, fourth night session,
# on the held-out `faint` member, experiments/results/heldout_ablation.md; on by default since 2026-12-07)
ACTIVE_VIEW_PERCENTILE = 80.0
# how bright the correlation view draws an active cell (InferenceOptions.correlation_view, activity_brightened's
# weight: the 99th percentile of the significant correlation, 0.5x the median image's; the weight of the retrained
# candidate of 2026-12-05, experiments/results/heldout_ablation.md)
CORRELATION_VIEW_WEIGHT = 0.5


@dataclass(frozen=True)
class InferenceOptions:
    """Everything :func:`infer_movie` needs besides the model.

    Attributes
    ----------
    preprocess : PreprocessParams
        Pre-processing parameters (those the model was trained with, by default).
    combine : dict
        Overrides of :class:`astro3s.postprocess.CombineParams` (soma areas
        come from ``preprocess.soma_area_range``).
    correlation : CorrelationParams
        Traces and CC-domain options.
    events : EventParams or None
        Calcium-event detection options (None: the defaults).
    normalize : str
        Network input normalisation used in training.
    batch_size : int
        Crops per forward pass.
    device : str
        ``"auto"`` (GPU when present), ``"cpu"`` or ``"cuda[:i]"``, for the network.
    amp : bool
        On CUDA, run the network under bfloat16 autocast (faster on large batches; the
        probabilities move by up to a few tenths at single pixels, the cells agree:
        ``experiments/results/gpu_check_h200.md``). False: float32 everywhere. No effect on the CPU.
    figures : bool
        Write ``overlay.png``, ``traces.png`` and ``summary.png``.
    tiling : TilingParams
        Tiling of the whole-FOV network pass (:func:`astro3s.inference.predict_fov`);
        a mapping is converted (:meth:`TilingParams.from_dict`).
    model_name : str
        What the summary records as the model (a path or a bundled name).
    key : str or None
        Dataset of HDF5/Zarr movies holding several (see :func:`astro3s.io.read_movie`).
    channel, plane : int or None
        The channel (from 1, or a ScanImage channel number) and z-plane (from 1) of TIFF movies
        holding several (see :func:`astro3s.io.read_movie`); None: the movie must hold one.
    fs : float or None
        Frame rate in Hz; replaces the one the movie file records. None: the
        file's (without one, ``traces.csv`` has no ``time_s`` and the
        baseline F0 is a percentile of the whole trace; a warning says so).
    soma_scale : {"auto", "fixed"}
        ``auto``: fit the soma area range to each movie from a first network
        pass (:func:`astro3s.inference.segment.adapt_soma_scale`); ``fixed``:
        use ``preprocess.soma_area_range`` as given.
    nwb : bool
        Also write ``<stem>.nwb`` (:mod:`astro3s.io.nwb`; needs the extra
        ``astro3s[nwb]``, checked here, and the frame rate).
    bin_scales : int
        With ``soma_scale="auto"``, how many bin factors a large-soma FOV is
        segmented at: ``factor`` (the median image's blob scale), then
        ``factor - 1``, ... (down to 1, the FOV at its own scale), each adding
        the cells the ones before missed (:func:`astro3s.inference.cells.segment_movie`). 1:
        ``factor`` alone.
    binned_processes : {"ridges", "grown", "network"}
        Processes of a binned FOV's cells: grown from their somata over the
        movie's median image (:func:`astro3s.postprocess.grow_processes`) and
        kept on its bright ridges as wide as a process
        (:func:`astro3s.postprocess.keep_ridges`, ``ridges``), grown to
        ``FLOOD_LEVEL`` with every grown pixel kept (``grown``, before
        2026-12-05), or the network's, drawn on the binned grid and resampled
        (``network``).
    somata : {"refined", "extended", "network"}
        ``refined``: the network's somata extended over their bright plateau
        in the movie's median image, at the FOV's own resolution
        (:func:`astro3s.postprocess.refine_somata`: outlines drawn on a
        zoomed or binned grid are off by up to its step), on a binned FOV
        cells added at the image's bright compact blobs that no soma touches
        (:func:`astro3s.inference.cells.add_plateau_cells`), then every outline cut back to its
        half-maximum contour over the local background
        (:func:`astro3s.postprocess.trim_somata`); ``extended``: the same
        without the cut (the rule before 2026-12-05); ``network``: the
        network's as resampled, nothing added.
    test_time_flips : {1, 2, 4}
        The network's class probabilities averaged over this many mirror
        images of each input (:func:`astro3s.inference.network.flip_averaged`;
        1: the input alone). Each view costs one network pass.
    large_soma_pass : bool
        With ``soma_scale="auto"``, a FOV segmented at its own scale is also
        segmented binned 2x2, and the cells of that pass whose soma is large
        for the FOV, in focus, and touching no soma found are added
        (:func:`astro3s.inference.cells.add_large_cells`): FOVs whose somata span a wide range of
        sizes. Costs one more network pass on a quarter of the pixels.
    extend_processes : bool
        On a FOV segmented at its own scale, neither zoomed nor binned, the
        network's processes lengthened along the median image's bright ridges
        as wide as annotated processes
        (:func:`astro3s.postprocess.extend_processes`): they stop ~0.5 soma
        radii short of where annotators trace them.
    scale_clahe_tiles : bool
        With ``soma_scale="auto"``, when the fitted somata are larger than the
        parameters' (but not binned), the CLAHE tiles are widened with them
        before the second pass (:func:`astro3s.inference.segment.adapt_soma_scale`):
        a soma as wide as its tile is equalised into texture and missed.
    max_process_ratio : float or None
        Most process area a cell keeps, as a multiple of its soma's area; the
        pixels nearest the soma stay
        (:func:`astro3s.postprocess.limit_process_area`; about the 90th
        percentile of the ratio in ASTRA's consensus annotations). None: no
        limit. Applied last, on every path (binned or not).
    active_view : bool
        A FOV segmented at its own scale is also segmented on a second view,
        the same candidates' crops made from its temporal
        ``ACTIVE_VIEW_PERCENTILE``-th percentile image instead of its median
        (``PreprocessParams.active_percentile``, set here when unset), and the
        cells found only there are added when their soma is no blurrier and
        not much smaller than the cells found
        (:func:`astro3s.inference.cells.add_active_view_cells`): cells dim at
        rest look like background in the median image but not when active.
        On by default since 2026-12-07 (eighteenth session): off before, since
        on never-seen held-out movies of 2026-12-05 it added more neuropil
        patches and vessel-wall stretches than cells; with the later rules (the
        faint-cell rule of that session above all, which drops the ragged faint
        patches it adds) it added 25 true cells and 1 false one on the fresh
        never-seen 296-299 and cross-check 112-115 (experiments/README.md).
    correlation_view : bool
        Like ``active_view``, with a second view made from the median image brightened where the movie's
        local temporal-correlation image is significant
        (:func:`astro3s.preprocess.correlation_image.activity_brightened`, weight
        ``CORRELATION_VIEW_WEIGHT``; ``PreprocessParams.keep_correlation_image``, set here): a cell dim at rest
        but active is drawn as bright as the cells the median image shows, while the background, whatever
        its texture, stays the median image the network was trained on
        (:func:`astro3s.inference.cells.add_correlation_view_cells`; its cells must also be sharp on the
        correlation image itself, ``rules.correlation_view_max_blur``). Off by default: on fresh never-seen
        movies it added more active look-alikes (soft blobs, out-of-focus cells) than cells dim at rest.
    drop_fast_event_cells : bool
        Drop the cells whose somatic events are many (>= ``FAST_MIN_EVENTS``) and decay in a median under
        ``FAST_MAX_DECAY_S`` seconds (:func:`astro3s.events.kinetics.fast_event_cells`): neuron-like
        look-alikes; the CC analysis and events are redone without them. Needs the frame rate; never
        applied to curated cells (``rois=``). On since 2026-12-06: on 112 never-seen held-out movies
        (indices 180-187) and 56 on ASTRA's layouts it dropped 4 neuron-like false cells and 1 true one,
        on the cross-check family 25 false and 2 true (experiments/results/heldout_ablation.md).
    rules : CellRules or mapping
        Settings of the rules around the network's passes (:class:`astro3s.inference.rules.CellRules`;
        a mapping gives some of its fields, the rest keep their defaults): ``astro3s-infer rules.NAME=value``.
    """

    preprocess: Any
    combine: dict[str, Any] = field(default_factory=dict)
    correlation: Any = None
    events: Any = None
    normalize: str = "mean"
    batch_size: int = 32
    device: str = "auto"
    amp: bool = True
    figures: bool = True
    tiling: Any = None
    model_name: str = ""
    soma_scale: str = "auto"
    key: str | None = None
    channel: int | None = None
    plane: int | None = None
    fs: float | None = None
    nwb: bool = False
    bin_scales: int = 3
    binned_processes: str = "ridges"
    somata: str = "refined"
    large_soma_pass: bool = True
    test_time_flips: int = 1
    extend_processes: bool = True
    scale_clahe_tiles: bool = True
    max_process_ratio: float | None = MAX_PROCESS_RATIO
    active_view: bool = True
    correlation_view: bool = False
    drop_fast_event_cells: bool = True
    rules: Any = None

    def __post_init__(self) -> None:
        from astro3s.inference.rules import as_cell_rules

        object.__setattr__(self, "rules", as_cell_rules(self.rules))
        if self.nwb:
            from astro3s.io.nwb import require_nwb

            require_nwb()  # before any work, not after hours of it
        if self.fs is not None:
            fs = parse_frame_rate(self.fs)
            object.__setattr__(self, "fs", fs)
        if self.key is not None:
            object.__setattr__(self, "key", str(self.key))
        _check_selection(channel=self.channel, plane=self.plane)
        if self.soma_scale not in ("auto", "fixed"):
            raise ConfigError(f"soma_scale must be 'auto' or 'fixed', got {self.soma_scale!r}")
        if isinstance(self.bin_scales, bool) or not isinstance(self.bin_scales, int) or self.bin_scales < 1:
            raise ConfigError(f"bin_scales must be a whole number >= 1 (e.g. bin_scales=3), got {self.bin_scales!r}")
        if self.binned_processes not in BINNED_PROCESS_MODES:
            raise ConfigError(f"binned_processes must be 'ridges', 'grown' or 'network', "
                              f"got {self.binned_processes!r}")
        if self.somata not in SOMATA_MODES:
            raise ConfigError(f"somata must be one of {', '.join(repr(m) for m in SOMATA_MODES)}, "
                              f"got {self.somata!r}")
        if self.batch_size < 1:
            raise ConfigError(f"batch_size={self.batch_size} must be >= 1.")
        if self.max_process_ratio is not None:
            if isinstance(self.max_process_ratio, bool) or not isinstance(self.max_process_ratio, (int, float)) \
                    or not self.max_process_ratio > 0:
                raise ConfigError(f"max_process_ratio must be a number > 0 (e.g. max_process_ratio=2.5) or null "
                                  f"(no limit), got {self.max_process_ratio!r}")
            object.__setattr__(self, "max_process_ratio", float(self.max_process_ratio))
        from astro3s.inference.network import FLIP_VIEWS, TilingParams

        if isinstance(self.test_time_flips, bool) or self.test_time_flips not in FLIP_VIEWS:
            raise ConfigError(f"test_time_flips must be one of {', '.join(map(str, FLIP_VIEWS))} "
                              f"(e.g. test_time_flips=4), got {self.test_time_flips!r}")

        if not isinstance(self.tiling, TilingParams):
            object.__setattr__(self, "tiling", TilingParams.from_dict(self.tiling))
        if self.active_view and getattr(self.preprocess, "active_percentile", 0) is None:
            # the active image comes from the median's pass over the frames (preprocess)
            object.__setattr__(self, "preprocess",
                               dataclasses.replace(self.preprocess, active_percentile=ACTIVE_VIEW_PERCENTILE))
        if self.correlation_view and getattr(self.preprocess, "keep_correlation_image", True) is False:
            object.__setattr__(self, "preprocess", dataclasses.replace(self.preprocess, keep_correlation_image=True))


def _check_selection(**chosen: Any) -> None:
    """``channel`` / ``plane`` of :class:`InferenceOptions`: None or a whole number >= 1, else a ConfigError."""
    for name, value in chosen.items():
        if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
            raise ConfigError(f"{name}={value!r} must be a whole number >= 1 (they count from 1). Fix: e.g. {name}=1.")


def parse_frame_rate(value: Any) -> float:
    """``value`` as a frame rate in Hz, or a :class:`ConfigError` that says how to give one."""
    import math

    try:
        fs = float(value)
    except (TypeError, ValueError):
        fs = math.nan
    if isinstance(value, bool) or not math.isfinite(fs) or fs <= 0:
        raise ConfigError(f"fs={value!r} must be the frame rate in Hz, a number > 0. Fix: e.g. fs=15.0.")
    return fs


@dataclass
class MovieResult:
    """Outcome of one movie.

    Attributes
    ----------
    movie : Path
    output : Path or None
        The output folder (None when the run failed).
    status : str
        ``"done"``, ``"skipped"`` (outputs already complete) or ``"failed"``.
    n_cells : int or None
    seconds : float
    error : str or None
        The one-line error of a failed movie.
    threshold : float or None
        CC threshold used.
    """

    movie: Path
    output: Path | None
    status: str
    n_cells: int | None = None
    seconds: float = 0.0
    error: str | None = None
    threshold: float | None = None

    def as_row(self) -> dict[str, Any]:
        """A row of the batch index CSV."""
        return {"movie": str(self.movie), "status": self.status,
                "n_cells": "" if self.n_cells is None else self.n_cells,
                "threshold": "" if self.threshold is None or not np.isfinite(self.threshold)
                else f"{self.threshold:.3f}",
                "seconds": f"{self.seconds:.2f}", "output": "" if self.output is None else str(self.output),
                "error": self.error or ""}


def load_inference_model(model: str | Path = "default", *, preprocess: Any = None, device: str = "auto",
                         trusted: bool = False, **options: Any) -> tuple[Any, InferenceOptions]:
    """Load a model and the options it is run with.

    Parameters
    ----------
    model : str or Path
        ``"default"`` (bundled) or a ``.ckpt`` written by ``astro3s-train``.
    preprocess : PreprocessParams, mapping, path or None
        None: the parameters the model was trained with (``preprocess.yaml``
        beside the checkpoint / in the bundled folder), else ASTRA's.
    device : str
        Where the network runs.
    trusted : bool
        Allow pickled objects in the checkpoint (see :func:`astro3s.models.load_model`).
    **options
        Other fields of :class:`InferenceOptions`.

    Returns
    -------
    network : SegmentationNetwork
        The plain-torch network in eval mode (:func:`astro3s.models.load_network`;
        Lightning is not imported), its weights in channels-last layout on a CPU.
    options : InferenceOptions
    """
    from astro3s.correlation import CorrelationParams
    from astro3s.events import EventParams
    from astro3s.models.base import input_channels
    from astro3s.models.checkpoint import load_network, model_preprocess_params
    from astro3s.preprocess.params import as_preprocess_params
    from astro3s.utils.device import resolve_device

    dev = resolve_device(device)
    network = load_network(model, map_location=dev, trusted=trusted)
    if dev == "cpu":
        # the convolutions in channels-last layout: the U-Net's forward pass 1.3-1.7x faster on CPU cores
        # (16 crops of 96 px, 256 and 512 px FOVs; outputs equal to ~1e-5); this network is inference's own
        import torch

        network = network.to(memory_format=torch.channels_last)
    params = as_preprocess_params(preprocess) if preprocess is not None else model_preprocess_params(model)
    if params is None:
        log.warning("%s: no preprocess.yaml beside the checkpoint; using ASTRA's published parameters", model)
        params = as_preprocess_params(None)
    if input_channels(network) > 1 and not params.keep_correlation_image:
        # its second input channel is the movie's local correlation image (astro3s.preprocess.network_input)
        params = params.replace(keep_correlation_image=True)
    options.setdefault("correlation", CorrelationParams())
    options.setdefault("events", EventParams())
    known = {f.name for f in dataclasses.fields(InferenceOptions)}
    unknown = sorted(set(options) - known)
    if unknown:
        raise ConfigError(f"unknown inference option(s) {', '.join(unknown)}; valid: {', '.join(sorted(known))}")
    return network, InferenceOptions(preprocess=params, device=dev, model_name=str(model), **options)


def movie_output_dir(movie: str | Path, out_dir: str | Path) -> Path:
    """``out_dir/<movie stem>`` (a folder of frames keeps its name)."""
    movie = Path(movie)
    stem = movie.name
    for suffix in (".ome.tif", ".ome.tiff"):
        if stem.lower().endswith(suffix):
            return Path(out_dir) / stem[: -len(suffix)]
    return Path(out_dir) / (movie.stem if movie.suffix else movie.name)


def _versions() -> dict[str, str]:
    import scipy
    import torch

    import astro3s

    return {"astro3s": getattr(astro3s, "__version__", "unknown"), "python": platform.python_version(),
            "numpy": np.__version__, "scipy": scipy.__version__, "torch": torch.__version__}


def _cell_table(soma: np.ndarray, processes: np.ndarray, domains: Any, traces: Any,
                events: dict[int, dict[str, Any]] | None = None) -> list[dict[str, Any]]:
    """Per-cell rows of ``summary.json``; ``events``: :func:`astro3s.events.cell_event_summary` by cell id."""
    ids = np.asarray(domains.cell_ids, np.int64)
    n = int(max(soma.max(initial=0), processes.max(initial=0), ids.max(initial=0)))
    soma_area = np.bincount(soma.ravel(), minlength=n + 1)
    proc_area = np.bincount(processes.ravel(), minlength=n + 1)
    dom_area = np.bincount(np.asarray(domains.domains).ravel(), minlength=n + 1)
    events = events or {}
    n_proc: dict[int, int] = {}
    for c, k in zip(traces.cell_ids, traces.kinds, strict=True):
        if k == "process":
            n_proc[int(c)] = n_proc.get(int(c), 0) + 1
    cells = []
    for i, cid in enumerate(ids):  # loop over cells (tens), not pixels
        cells.append({"id": int(cid), "soma_area_px": int(soma_area[cid]),
                      "process_area_px": int(proc_area[cid]), "domain_area_px": int(dom_area[cid]),
                      "n_process_rois": n_proc.get(int(cid), 0),
                      "centroid_yx": [round(float(v), 2) for v in domains.centroids[i]],
                      "soma_event_rate": None, **events.get(int(cid), {})})
    return cells


def infer_movie(movie: str | Path, out_dir: str | Path, model: Any, options: InferenceOptions, *,
                rois: str | Path | None = None, overwrite: bool = True, progress: bool | None = None,
                ) -> MovieResult:
    """Run the whole method on one movie and write its output folder.

    Parameters
    ----------
    movie : str or Path
        Any movie :func:`astro3s.io.read_movie` reads.
    out_dir : str or Path
        Parent folder; the outputs go to ``out_dir/<movie stem>/``.
    model : SegmentationNetwork, SegmentationModule or None
        The network (unused with ``rois``).
    options : InferenceOptions
    rois : str or Path, optional
        A RoiSet zip of curated cells (``Soma_###``/``Proc_###_##``): skips the
        segmentation. Such a run is never skipped, and the file may lie in the
        output folder itself.
    overwrite : bool
        Redo a movie whose outputs are complete; False skips it (unless
        ``rois`` is given). Either way only files astro3s wrote in the output
        folder are replaced (see :func:`astro3s.inference.outputs.commit_outputs`).
    progress : bool, optional
        Progress bars (default: on a terminal).

    Returns
    -------
    MovieResult
        ``status="done"`` or ``"skipped"``.

    Raises
    ------
    Astro3sError
        Bad input (unreadable movie, NaNs, ...), a bad ROI file, or outputs
        that cannot be written; the output folder is left as it was then.
    RuntimeError
        A figure could not be drawn (the message names the movie and the figure).

    See Also
    --------
    begin_movie : the same, with the figures drawn and the folder finished on a
        background thread (what :func:`astro3s.inference.run_batch` uses).
    """
    return begin_movie(movie, out_dir, model, options, rois=rois, overwrite=overwrite, progress=progress).result()


def begin_movie(movie: str | Path, out_dir: str | Path, model: Any, options: InferenceOptions, *,
                rois: str | Path | None = None, overwrite: bool = True, progress: bool | None = None,
                outputs: Any = None) -> Any:
    """:func:`infer_movie`, the last part of which may run on an output worker.

    The analysis and every file but the figures are done here. With
    ``outputs`` (an :class:`~astro3s.inference.background.OutputWorker`) the
    three figures are drawn in its figure process while this one writes the
    other files, and its thread then writes ``summary.json`` and moves the
    folder into place; this function returns as soon as the job is handed
    over, so that the caller can go on with the next movie. Without
    ``outputs`` all of it is done before returning. Either way the files are
    the same.

    Parameters
    ----------
    movie, out_dir, model, options, rois, overwrite, progress
        As in :func:`infer_movie`.
    outputs : OutputWorker, optional

    Returns
    -------
    PendingMovie
        Its :meth:`~astro3s.inference.background.PendingMovie.result` waits
        for the output folder and gives the :class:`MovieResult` (or raises
        what :func:`infer_movie` raises).
    """
    from astro3s.inference.background import FIGURE_MODULES, PendingMovie, warm_imports
    from astro3s.inference.outputs import is_complete
    from astro3s.io import read_movie
    from astro3s.utils.progress import bar

    start = time.perf_counter()
    movie_path = Path(movie)
    final = movie_output_dir(movie_path, out_dir)
    if rois is None and not overwrite and is_complete(final, figures=options.figures, nwb=options.nwb):
        log.info("%s: outputs complete in %s, skipped (overwrite=true redoes them)", movie_path.name, final)
        return PendingMovie.now(movie_path, lambda: MovieResult(movie_path, final, "skipped"))
    timings: dict[str, float] = {"open_s": time.perf_counter()}
    mov = read_movie(movie_path, key=options.key, fs=options.fs, channel=options.channel, plane=options.plane)
    timings["open_s"] = time.perf_counter() - timings["open_s"]
    if mov.fs is None:
        log.warning("%s: the movie records no frame rate, so traces.csv has no time_s column and the baseline "
                    "F0 is a percentile of the whole trace. Fix: give the frame rate in Hz as fs=, e.g. fs=15",
                    movie_path.name)
    # matplotlib loads while the movie is analysed (its imports share nothing with the analysis'); an output
    # worker draws in its own process
    warmups = [warm_imports(FIGURE_MODULES)] if options.figures and outputs is None else []
    # one bar over the stages of this movie; the long ones (pre-processing, CC pass) add their own
    stages = bar(progress=progress, desc=f"{movie_path.name}: pre-processing", unit="stage", total=5)
    opened: list[Any] = []  # pre-processing results: their corrected movies (maybe temporary files) are closed
    try:
        run = _analyse(mov, movie_path, model, options, rois=rois, progress=progress, timings=timings,
                       stages=stages, warmups=warmups, opened=opened)
        _next_stage(stages, f"{movie_path.name}: writing")
        for warmup in warmups:  # done by now: nothing is imported by two threads at once
            warmup.join()
        pending = _write_outputs(run, final, options, outputs=outputs, start=start)
        stages.update(1)
    finally:
        stages.close()
        for warmup in warmups:
            warmup.join()
        _close_movies(opened, mov)
    return pending


@dataclass
class _Run:
    """What one movie's analysis gives the write stage (:func:`begin_movie`)."""

    movie: Path
    mov: Any
    pre: Any
    soma: np.ndarray
    processes: np.ndarray
    segmentation: dict[str, Any]
    combine_params: Any
    scale_info: dict[str, Any]
    traces: Any
    domains: Any
    territory: Any
    events: Any
    event_params: Any
    timings: dict[str, float]


def _analyse(mov: Any, movie_path: Path, model: Any, options: InferenceOptions, *, rois: str | Path | None,
             progress: bool | None, timings: dict[str, float], stages: Any, warmups: list[Any],
             opened: list[Any]) -> _Run:
    """Pre-processing, cells, CC analysis and events of one movie (stages of :func:`begin_movie`).

    Each pre-processing result is appended to ``opened`` (the caller closes their corrected movies), and the
    import warm-up of the RoiSet writer to ``warmups``.
    """
    from astro3s.inference.background import ROISET_MODULES, warm_imports
    from astro3s.preprocess import preprocess

    if options.nwb and mov.fs is None:
        raise InputError(movie_path, "records no frame rate, which the NWB file needs (its times are seconds).",
                         "give the frame rate in Hz as fs=, e.g. fs=15.")
    t = time.perf_counter()
    pre = preprocess(mov, options.preprocess, progress=progress,
                     scratch_dir=getattr(options.correlation, "scratch_dir", None))
    opened.append(pre)
    timings["preprocess_s"] = time.perf_counter() - t
    _next_stage(stages, f"{movie_path.name}: cells")
    pre, soma, processes, segmentation, combine_params, scale_info = _find_cells(
        pre, movie_path, model, options, rois=rois, timings=timings)
    opened.append(pre)
    # the segmentation imported skimage: its contour tracing (the RoiSet's) may load now, during the CC analysis
    warmups.append(warm_imports(ROISET_MODULES))
    _next_stage(stages, f"{movie_path.name}: CC domains")
    source_movie = pre.corrected if pre.corrected is not None else mov
    if pre.params.morphology_image == "noise_variance":
        # a dF movie's F0 is ~0: the dF/F of traces.csv divides by noise (NaN where F0 <= 0)
        log.warning("%s: the movie has no baseline (dF), so traces.csv's F column is already dF and its dF/F "
                    "is not meaningful; compute dF/F from the raw movie", movie_path.name)
    traces, domains, territory, events, event_params = _domains_and_events(
        source_movie, soma, processes, options, movie_path=movie_path, progress=progress, timings=timings,
        stages=stages)
    if options.drop_fast_event_cells and rois is None:
        fast, unfollowed = neuron_like_cells(traces, events, options.rules, event_params=event_params)
        segmentation = {**segmentation, "fast_event_cells_dropped": int(len(fast)),
                        "unfollowed_cells_dropped": int(len(unfollowed))}
        if len(fast) or len(unfollowed):
            from astro3s.events.kinetics import FAST_MAX_DECAY_S

            # neuron-like: their somatic events are many and decay within ~1 s, or fairly fast with processes that do
            # not follow the soma; the analysis is redone without them
            log.info("%s: neuron-like cells dropped: %d whose somatic events decay in under %.1f s %s, %d whose "
                     "processes do not follow their fairly fast soma %s", movie_path.name, len(fast),
                     FAST_MAX_DECAY_S, fast.tolist(), len(unfollowed), unfollowed.tolist())
            soma, processes = _without_cells(soma, processes, np.union1d(fast, unfollowed))
            traces, domains, territory, events, event_params = _domains_and_events(
                source_movie, soma, processes, options, movie_path=movie_path, progress=progress, timings=timings,
                stages=None)
    return _Run(movie_path, mov, pre, soma, processes, segmentation, combine_params, scale_info, traces,
                domains, territory, events, event_params, timings)


def neuron_like_cells(traces: Any, events: Any, rules: Any, *,
                      event_params: Any = None) -> tuple[np.ndarray, np.ndarray]:
    """The cells ``InferenceOptions.drop_fast_event_cells`` drops, by the two kinetics rules.

    Parameters
    ----------
    traces : RoiTraces
        The cells' soma and process traces.
    events : EventTable
        The run's events (judged when ``rules.fast_events_on_dff`` is off).
    rules : CellRules
    event_params : EventParams, optional

    Returns
    -------
    fast : ndarray of int64
        Cells with many somatic events that decay within ~1 s (:func:`astro3s.events.kinetics.fast_event_cells`).
    unfollowed : ndarray of int64
        The others whose somatic events are fairly fast and whose processes do not follow the soma
        (:func:`astro3s.events.kinetics.unfollowed_cells`, ``rules.unfollowed_max_correlation``).
    """
    from astro3s.events.kinetics import fast_event_cells, kinetics_events, unfollowed_cells

    # judged on the somata's dF/F events (a bleaching or flickering movie's noise is not stationary in F)
    somatic = kinetics_events(traces, params=event_params) if rules.fast_events_on_dff else events
    fast = fast_event_cells(somatic)
    unfollowed = unfollowed_cells(traces, somatic, max_correlation=rules.unfollowed_max_correlation)
    return fast, np.setdiff1d(unfollowed, fast)


def _without_cells(soma: np.ndarray, processes: np.ndarray, ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``soma`` and ``processes`` without the cells ``ids``, the others renumbered ``1..m`` in their order."""
    from astro3s.postprocess.combine import cell_renumbering

    drop = np.zeros(int(max(soma.max(initial=0), processes.max(initial=0))), bool)
    drop[np.asarray(ids, np.int64) - 1] = True
    new_id = cell_renumbering(drop).astype(soma.dtype)
    return new_id[soma], new_id[processes]


def _domains_and_events(movie: Any, soma: np.ndarray, processes: np.ndarray, options: InferenceOptions, *,
                        movie_path: Path, progress: bool | None, timings: dict[str, float], stages: Any,
                        ) -> tuple[Any, Any, Any, Any, Any]:
    """Traces and CC domains (:func:`~astro3s.correlation.correlation_analysis`), domain traces and events of the
    cells ``soma`` / ``processes``; ``timings`` accumulate ``correlation_s`` and ``events_s``."""
    from astro3s.correlation import CorrelationParams, correlation_analysis, domain_traces
    from astro3s.events import EventParams, roi_events

    t = time.perf_counter()
    traces, domains = correlation_analysis(movie, soma, processes, options.correlation, progress=progress)
    timings["correlation_s"] = timings.get("correlation_s", 0.0) + time.perf_counter() - t
    choice = domains.threshold_choice
    log.info("%s: CC threshold %.3f%s, %d domain(s)", movie_path.name, domains.threshold,
             "" if choice is None else f" (false rate {choice.false_rate:.3f})", len(domains.cell_ids))
    if stages is not None:
        _next_stage(stages, f"{movie_path.name}: events")
    t = time.perf_counter()
    event_params = options.events or EventParams()
    corr = options.correlation or CorrelationParams()
    territory = domain_traces(movie, domains.domains, soma, processes, fs=traces.fs,
                              f0_percentile=corr.f0_percentile, f0_window_s=corr.f0_window_s,
                              chunk_frames=corr.chunk_frames)
    events, _ = roi_events([traces, territory], params=event_params)
    timings["events_s"] = timings.get("events_s", 0.0) + time.perf_counter() - t
    log.info("%s: %d calcium event(s) in %d ROI(s)", movie_path.name, len(events), len(events.roi_names))
    return traces, domains, territory, events, event_params


def _find_cells(pre: Any, movie_path: Path, model: Any, options: InferenceOptions, *, rois: str | Path | None,
                timings: dict[str, float]) -> tuple[Any, np.ndarray, np.ndarray, dict[str, Any], Any, dict]:
    """Soma and process labels: the curated RoiSet's, or the network's
    (:func:`astro3s.inference.cells.segment_movie`).

    Returns
    -------
    pre, soma, processes, segmentation, combine_params, scale_info
        ``pre`` as ``segment_movie`` leaves it; ``segmentation`` and
        ``scale_info`` go to ``summary.json``; ``combine_params`` is None with ``rois``.
    """
    from astro3s.inference.cells import segment_movie
    from astro3s.inference.segment import fixed_scale_info
    from astro3s.io import read_roiset

    if rois is not None:
        height, width = pre.fov_map.shape
        soma, processes = read_roiset(rois, (height, width))
        soma = soma.astype(np.uint16)
        processes = processes.astype(np.uint16)
        log.info("%s: %d curated cell(s) from %s", movie_path.name, len(np.unique(soma)) - (soma == 0).any(),
                 Path(rois).name)
        return pre, soma, processes, {"source": "rois", "rois": str(rois)}, None, fixed_scale_info(pre.params)
    if model is None:
        raise ConfigError("infer_movie needs a model unless rois= gives the cells")
    pre, seg, scale_info = segment_movie(pre, model, options, timings=timings, name=movie_path.name)
    log.info("%s: %d cell(s) found", movie_path.name, seg.n_cells)
    segmentation = {"source": "network", "model": options.model_name, "counts": seg.counts}
    return pre, seg.soma, seg.processes, segmentation, seg.params, scale_info


def _close_movies(opened: list[Any], mov: Any) -> None:
    """Close the corrected movies of pre-processing results (a temporary frame file goes), then the movie."""
    objects = []
    for pre in opened:
        corrected = getattr(pre, "corrected", None)
        objects += [corrected, getattr(corrected, "movie", None)]
    for obj in (*objects, mov):
        close = getattr(obj, "close", None)
        if callable(close):
            close()


def _write_outputs(run: _Run, final: Path, options: InferenceOptions, *, outputs: Any, start: float) -> Any:
    """Write the files of ``run`` into a staging folder; the figures, ``summary.json`` and the commit follow
    on ``outputs`` (or here without it). Returns the :class:`~astro3s.inference.background.PendingMovie`."""
    import functools

    from astro3s.inference.background import PendingMovie
    from astro3s.inference.outputs import staging_folder

    t_write = time.perf_counter()
    figures = _figure_inputs(run, options) if options.figures else None
    with staging_folder(final) as stage:
        # with an output worker the figures are drawn in its process while this one writes the other files
        drawing = outputs.draw(figures, stage) if outputs is not None and figures is not None else None
        try:
            _write_files(run, stage, final, options)
        except BaseException:
            if drawing is not None:  # the figure process writes in the staging folder: let it finish first
                drawing.exception()
            raise
    # the job holds the summary, the timings and the figures' own inputs, not the pre-processing result
    finish = functools.partial(_finish_outputs, run.movie, stage, final, _summary(run, final, options),
                               run.timings, start=start, t_write=t_write,
                               figures=drawing if drawing is not None else figures,
                               result=(len(run.domains.cell_ids), float(run.domains.threshold)))
    return PendingMovie(run.movie, outputs.submit(finish)) if outputs is not None \
        else PendingMovie.now(run.movie, finish)


def _write_files(run: _Run, stage: Path, final: Path, options: InferenceOptions) -> None:
    """Every output file but the figures and ``summary.json``, in ``stage``."""
    from astro3s.events import write_events_csv
    from astro3s.inference.outputs import write_cc_maps, write_traces_csv
    from astro3s.io import write_labels, write_roiset

    write_labels(stage / "soma.tif", run.soma)
    write_labels(stage / "processes.tif", run.processes)
    write_labels(stage / "domains.tif", np.asarray(run.domains.domains, np.uint16))
    write_roiset(run.soma, run.processes, stage / "RoiSet.zip")
    write_traces_csv(stage / "traces.csv", run.traces)
    write_events_csv(stage / "events.csv", run.events)
    write_cc_maps(stage / "cc_maps.npz", run.domains)
    if options.nwb:
        from astro3s.io.nwb import content_from_results, nwb_name, summary_images, write_nwb

        write_nwb(stage / nwb_name(final), content_from_results(
            run.movie, name=final.name, n_frames=run.pre.shape[0], fs=run.traces.fs, soma=run.soma,
            processes=run.processes, domains=run.domains.domains, traces=run.traces, domain_traces=run.territory,
            events_csv=stage / "events.csv", images=summary_images(run.pre), key=options.key, channel=options.channel,
            plane=options.plane), nwb_dir=final)


def _motion_skipped(pre: Any, noise_image: bool) -> str | None:
    """Why no motion was corrected, for the summary page (None: it was)."""
    if not pre.params.motion_correction:
        return "dF movie: nothing static to register on" if noise_image else "turned off"
    if pre.details.get("motion_bin_frames") == 0:
        return "frames too noisy to register"
    return None


def _figure_inputs(run: _Run, options: InferenceOptions) -> Any:
    """The :class:`~astro3s.inference.report.FigureInputs` of ``run``: the few images of ``run.pre`` and the
    fields of ``run.domains`` the figures need, not ``pre`` itself (whose corrected movie may be large)."""
    from types import SimpleNamespace

    from astro3s.inference.report import FigureInputs
    from astro3s.preprocess.lines import recorded_line_shift

    pre, found = run.pre, run.domains
    # a baseline-subtracted (dF) movie's mean image is flat: its cells are shown on the noise-variance image
    # they were found on
    noise_image = pre.params.morphology_image == "noise_variance" and pre.median_image is not None
    images = SimpleNamespace(mean_image=pre.median_image if noise_image else pre.mean_image,
                             background_name="noise-variance image (dF movie)" if noise_image else "mean image",
                             motion_skipped=_motion_skipped(pre, noise_image),
                             motion_bin_frames=int(pre.details.get("motion_bin_frames") or 1),
                             activity_map=pre.activity_map, shifts=pre.shifts, shape=pre.shape, fs=pre.fs,
                             line_shift=recorded_line_shift(pre.details))
    # the domains without their CC maps (pickled to the figure process of a batch)
    domains = SimpleNamespace(domains=found.domains, cell_ids=found.cell_ids, centroids=found.centroids,
                              threshold=found.threshold, threshold_choice=found.threshold_choice)
    return FigureInputs(run.movie.name, images, run.soma, run.processes, domains, run.traces, run.events,
                        options.correlation.false_rate_band)


def _summary(run: _Run, final: Path, options: InferenceOptions) -> dict[str, Any]:
    """``summary.json`` of ``run`` but its ``timings_s`` and ``files`` (filled in by :func:`_finish_outputs`)."""
    from astro3s.events import cell_event_summary

    pre, domains, traces, events = run.pre, run.domains, run.traces, run.events
    choice = domains.threshold_choice
    return {
        "movie": str(run.movie), "name": final.name, "shape": list(pre.shape),
        "fs": traces.fs, "fs_source": None if run.mov.fs is None else ("fs=" if options.fs is not None else "file"),
        "key": options.key, "channel": options.channel, "plane": options.plane,
        "n_cells": len(domains.cell_ids),
        "cells": _cell_table(run.soma, run.processes, domains, traces, cell_event_summary(events)),
        "events": {"n_events": len(events),
                   "rate_unit": "1/min" if events.fs else "1/(100 frames)",
                   "auc_unit": "dF/F x s" if events.fs else "dF/F x frames",
                   "n_domain_traces": len(run.territory)},
        "segmentation": run.segmentation,
        "correlation": {
            # NaN (no cell) is not valid JSON: null
            "threshold": float(domains.threshold) if np.isfinite(domains.threshold) else None,
            "threshold_automatic": choice is not None,
            "false_rate": None if choice is None else choice.false_rate,
            "in_band": None if choice is None else choice.in_band,
            "tried": None if choice is None else choice.tried,
            "n_background": None if choice is None else choice.n_background,
            "f0_method": traces.f0_method,
        },
        "parameters": {
            "preprocess": pre.params.to_dict(),
            "combine": None if run.combine_params is None else dataclasses.asdict(run.combine_params),
            "correlation": dataclasses.asdict(options.correlation),
            "events": dataclasses.asdict(run.event_params),
            "normalize": options.normalize, "device": options.device, "amp": options.amp,
            # the settings of the rules around the network (astro3s-infer rules.NAME=; CellRules)
            "rules": dataclasses.asdict(options.rules),
        },
        "soma_scale": {"mode": options.soma_scale, **run.scale_info},
        "preprocess": {"n_candidates": int(len(pre.crop_boxes)),
                       "max_shift_px": float(np.abs(pre.shifts).max(initial=0.0)),
                       # "noise_variance" for a baseline-subtracted (dF) movie (astro3s.preprocess.baseline)
                       "morphology_image": pre.details.get("morphology_image", pre.params.morphology_image),
                       "baseline_check": pre.details.get("baseline_check"),
                       # fraction of the FOV raised before the clip at 0 (preprocess.enhance.lift_dim_background)
                       "dim_background_lifted": pre.details.get("dim_background_lifted"),
                       # a bidirectional scan's odd-row offset measured, and the shift given to those rows
                       # (0: as stored; astro3s.preprocess.lines)
                       "line_offset_px": pre.details.get("line_offset_px"),
                       "line_shift_px": pre.details.get("line_shift_px"),
                       # 1: frames registered one by one; k > 1: as means of k consecutive frames (too noisy
                       # one by one); 0: too noisy even so, not corrected (astro3s.preprocess.streaming)
                       "motion_bin_frames": pre.details.get("motion_bin_frames"),
                       "motion_jump_px": pre.details.get("motion_jump_px"),
                       # frames whose shift noise threw off their neighbours', given their median shift
                       "motion_repaired_frames": pre.details.get("motion_repaired_frames"),
                       # candidates where the activity map stands out from its own spread, when the movie was
                       # too noisy for the search's thresholds (preprocess.candidates.significant_candidates)
                       "significant_candidates": (pre.details.get("candidate_search") or {}).get("significant"),
                       # a detector's hot or stuck pixels filled in the summary images (preprocess.fill_hot_pixels)
                       "hot_pixels": pre.details.get("hot_pixels"),
                       # px of dim soma cores inside bright rims (a membrane-targeted indicator) raised to the
                       # rims' brightness in the median image (preprocess.fill_ring_cores), and how many cores
                       "ring_core_px": pre.details.get("ring_core_px"),
                       "ring_cores": len(pre.details.get("ring_core_areas") or ())},
        "versions": _versions(),
        "timings_s": None,
        # the files this run wrote, with their SHA-256: a rerun replaces these and nothing else
        "files": None,
    }


def _finish_outputs(movie: Path, stage: Path, final: Path, summary: dict[str, Any], timings: dict[str, float], *,
                    start: float, t_write: float, figures: Any, result: tuple[int, float]) -> MovieResult:
    """The figures, then ``summary.json``, then the staging folder moved into place (removed on failure).

    ``figures`` is None (no figures), the ``FigureInputs`` to draw here, or the future of the figures drawn
    by an output worker; ``result`` the cell count and CC threshold of the :class:`MovieResult`.
    """
    import shutil
    from concurrent.futures import Future

    from astro3s.inference.background import figures_result
    from astro3s.inference.outputs import SUMMARY_NAME, commit_outputs, file_digests
    from astro3s.inference.report import draw_figures
    from astro3s.io import write_json

    try:
        if isinstance(figures, Future):
            timings["figures_s"] = figures_result(figures, movie.name)
        elif figures is not None:
            timings["figures_s"] = draw_figures(figures, stage)
        summary["files"] = file_digests(stage, sorted(p.name for p in stage.iterdir() if p.is_file()))
        now = time.perf_counter()
        timings["write_s"], timings["total_s"] = now - t_write, now - start
        summary["timings_s"] = {k: round(v, 3) for k, v in timings.items()}
        write_json(stage / SUMMARY_NAME, summary)
        commit_outputs(stage, final)
    except BaseException:
        shutil.rmtree(stage, ignore_errors=True)
        raise
    seconds = time.perf_counter() - start
    log.info("%s: done in %.1f s -> %s", movie.name, seconds, final)
    return MovieResult(movie, final, "done", n_cells=result[0], seconds=seconds, threshold=result[1])


def _next_stage(stages: Any, label: str) -> None:
    """Count one stage done on the movie's bar and name the next."""
    stages.update(1)
    stages.set_description_str(label)


def describe_failure(err: BaseException) -> str:
    """One line for a failed movie: the astro3s message, or the exception type and text."""
    if isinstance(err, Astro3sError):
        return str(err).splitlines()[0] if str(err) else type(err).__name__
    text = str(err).splitlines()[0] if str(err) else ""
    return f"{type(err).__name__}: {text}"[:300]

