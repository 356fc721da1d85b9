"""Many movies: keep going when one fails, skip finished ones, and keep an index of all.

The index (``DIR/index.csv``) has one row per movie: path, status
(``done``, ``skipped``, ``failed``), cell count, CC threshold, seconds, output
folder and the one-line error of a failed movie. It is rewritten atomically
after every movie, so an interrupted batch leaves a valid index of what was
finished, and a rerun (``overwrite=false``) skips those movies. ``DIR/index.html``
(:mod:`astro3s.inference.index_page`) shows the same rows with each movie's
overlay, links to its files and its error, and is rewritten with it.
"""

from __future__ import annotations

import csv
import logging
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from astro3s.errors import Astro3sError
from astro3s.inference.pipeline import InferenceOptions, MovieResult, begin_movie, describe_failure

log = logging.getLogger(__name__)

__all__ = ["INDEX_COLUMNS", "read_index", "run_batch", "write_index"]

INDEX_COLUMNS = ("movie", "status", "n_cells", "threshold", "seconds", "output", "error")


def check_writable(folder: Path) -> None:
    """Create ``folder`` and check that files can be written in it.

    Raises
    ------
    InputError
        Read-only or otherwise unwritable folder (checked before any work).
    """
    import uuid

    from astro3s.errors import InputError

    probe = folder / f".astro3s-write-test-{uuid.uuid4().hex[:8]}"
    try:
        folder.mkdir(parents=True, exist_ok=True)
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as err:
        raise InputError(folder, f"cannot write the outputs here ({err.strerror or err}).",
                         "choose a writable out= folder (and check the free disk space).") from None


#: an index is written in milliseconds: a temporary copy older than this was left by a killed run
_STALE_INDEX_S = 120.0


def write_index(path: str | Path, results: Sequence[MovieResult]) -> Path:
    """Write the batch index CSV atomically (columns :data:`INDEX_COLUMNS`).

    Temporary copies of the index left by a killed run (``.<stem>.*.part<suffix>``,
    see :func:`astro3s.io.atomic_path`) are removed first; those of runs writing
    right now are younger than two minutes and kept.
    """
    from astro3s.io import atomic_path
    from astro3s.io.atomic import remove_stale_parts

    path = Path(path)
    remove_stale_parts(path, older_than_s=_STALE_INDEX_S)
    with atomic_path(path) as tmp:
        with open(tmp, "w", newline="", encoding="utf-8") as handle:
            writer = csv.DictWriter(handle, fieldnames=list(INDEX_COLUMNS))
            writer.writeheader()
            for result in results:
                writer.writerow(result.as_row())
    return Path(path)


def read_index(path: str | Path) -> list[dict[str, str]]:
    """Rows of a batch index CSV."""
    with open(path, newline="", encoding="utf-8") as handle:
        return list(csv.DictReader(handle))


def _merge(previous: list[dict[str, str]], results: list[MovieResult]) -> list[MovieResult]:
    """Rows of earlier runs for movies not in this run, then this run's."""
    mine = {str(r.movie) for r in results}
    kept = [MovieResult(Path(row["movie"]), Path(row["output"]) if row.get("output") else None,
                        row.get("status", ""), int(row["n_cells"]) if row.get("n_cells") else None,
                        float(row.get("seconds") or 0.0), row.get("error") or None,
                        float(row["threshold"]) if row.get("threshold") else None)
            for row in previous if row.get("movie") not in mine]
    return kept + results


def run_batch(movies: Sequence[str | Path], out_dir: str | Path, model: Any, options: InferenceOptions, *,
              overwrite: bool = False, rois: str | Path | None = None, index_name: str = "index.csv",
              progress: bool | None = None) -> list[MovieResult]:
    """Run :func:`~astro3s.inference.infer_movie` on every movie, keeping going past failures.

    Parameters
    ----------
    movies : sequence of path
    out_dir : str or Path
        Outputs go to ``out_dir/<movie stem>/``; the index to ``out_dir/index_name``.
    model : SegmentationModule
    options : InferenceOptions
    overwrite : bool
        Redo movies whose outputs are complete.
    rois : path, optional
        Curated cells (only with a single movie).
    index_name : str
        File name of the index CSV; the page ``index.html`` goes beside it
        (:func:`astro3s.inference.index_page.page_path`).
    progress : bool, optional
        Progress bars (None: on a terminal; False: none).

    Returns
    -------
    list of MovieResult
        One per movie, in order; failures have ``status="failed"`` and ``error``.
    """
    from astro3s.inference.index_page import page_path
    from astro3s.utils.progress import logs_above_bars

    out_dir = Path(out_dir)
    check_writable(out_dir)
    index_path = out_dir / index_name
    with logs_above_bars(progress):
        results = _run_movies(movies, out_dir, model, options, overwrite=overwrite, rois=rois,
                              index_path=index_path, progress=progress)
    counts = {s: sum(r.status == s for r in results) for s in ("done", "skipped", "failed")}
    log.info("%d movie(s): %d done, %d skipped, %d failed; index: %s (%s)", len(results), counts["done"],
             counts["skipped"], counts["failed"], index_path, page_path(index_path).name)
    return results


def _run_movies(movies: Sequence[str | Path], out_dir: Path, model: Any, options: InferenceOptions, *,
                overwrite: bool, rois: str | Path | None, index_path: Path,
                progress: bool | None) -> list[MovieResult]:
    """The loop of :func:`run_batch`: each movie, then the index CSV and page rewritten.

    With several movies a movie's figures are drawn in a figure process and its
    folder finished on a thread (:class:`~astro3s.inference.background.OutputWorker`)
    while the next movie is read and analysed; a movie enters the index (as done
    or failed) once its folder is finished, and every folder is finished before
    this returns (or an error goes up).
    """
    import contextlib

    from astro3s.inference.background import OutputWorker
    from astro3s.io.prefetch import prefetch
    from astro3s.utils.progress import bar

    results: list[MovieResult] = []
    single = len(movies) == 1
    movies_bar = bar(movies, progress=False if len(movies) < 2 else progress, desc="movies", unit="movie",
                     leave=True)
    pending: tuple[Any, float] | None = None  # the movie whose folder is being finished, and its start
    worker = OutputWorker() if len(movies) > 1 and options.figures else contextlib.nullcontext()
    with worker as outputs:
        try:
            for position, movie in enumerate(movies_bar):  # loop over movies
                movie = Path(movie)
                movies_bar.set_postfix_str(movie.name)
                start = time.perf_counter()
                # the next file comes into the page cache while this movie is analysed
                if position + 1 < len(movies):
                    prefetch(movies[position + 1])
                try:
                    handle = begin_movie(movie, out_dir, model, options, rois=rois, overwrite=overwrite,
                                         progress=progress, outputs=outputs)
                except Exception as err:  # noqa: BLE001 - recorded as failed (one movie: raised)
                    handle = _failed(movie, err, start, single=single)
                if pending is not None:
                    _record(out_dir, index_path, results, _finished(*pending, single=single))
                    pending = None
                if isinstance(handle, MovieResult) or handle.future.done():
                    _record(out_dir, index_path, results, _finished(handle, start, single=single))
                else:
                    pending = (handle, start)
            if pending is not None:
                _record(out_dir, index_path, results, _finished(*pending, single=single))
                pending = None
        finally:
            if pending is not None:  # interrupted: the folder being finished is finished and indexed first
                handle, _ = pending
                if handle.future.exception() is None:
                    _record(out_dir, index_path, results, handle.result())
    return results


def _failed(movie: Path, err: Exception, start: float, *, single: bool) -> MovieResult:
    """The result of a movie that failed (logged); with a single movie the error is raised instead."""
    if single:
        raise err
    if isinstance(err, Astro3sError):
        log.error("%s: failed: %s", movie.name, err)
    else:  # keep going; the traceback goes to the log
        log.error("%s: failed with an unexpected error", movie.name, exc_info=err)
    return MovieResult(movie, None, "failed", seconds=time.perf_counter() - start, error=describe_failure(err))


def _finished(handle: Any, start: float, *, single: bool) -> MovieResult:
    """The result of a movie once its folder is finished: ``handle`` is a ``MovieResult`` (it failed early)
    or a :class:`~astro3s.inference.background.PendingMovie`, waited for here."""
    if isinstance(handle, MovieResult):
        return handle
    try:
        return handle.result()
    except Exception as err:  # noqa: BLE001 - recorded as failed (one movie: raised)
        return _failed(handle.movie, err, start, single=single)


def _record(out_dir: Path, index_path: Path, results: list[MovieResult], result: MovieResult) -> None:
    """Append ``result`` and rewrite the index CSV and page (re-read first: jobs of a multirun share it)."""
    from astro3s.inference.index_page import page_path, write_index_html

    results.append(result)
    previous = read_index(index_path) if index_path.is_file() else []
    merged = _merge(previous, results)
    write_index(index_path, merged)
    write_index_html(out_dir, [r.as_row() for r in merged], name=page_path(index_path).name, index_csv=index_path)
