"""Work beside the main thread of :func:`~astro3s.inference.pipeline.begin_movie` (issue 14: start-up and writing).

Two helpers, both optional and both invisible in the outputs:

- :func:`warm_imports` imports, in a daemon thread, modules that a later stage
  imports on first use (matplotlib for the figures, ~0.3-0.5 s; skimage's
  contour tracing and roifile for the RoiSet), while the main thread's
  NumPy/SciPy/torch work goes on (imports
  hold the GIL much of the time, so only part of their cost is hidden: D1's
  write stage 2.3 -> 1.2 s, the stages before it ~0.3-0.9 s slower on a loaded
  machine). The caller joins it (:meth:`ImportWarmup.join`) before the
  stage that needs the modules, so that the two threads never import the same
  package at once (Python's import locks would then wait, or refuse a
  cross-thread cycle); each group is chosen so that nothing the main thread
  imports meanwhile belongs to it.
- :class:`OutputWorker` (a batch of several movies) draws a movie's figures
  in one separate process (matplotlib's object-oriented ``Figure`` API, never
  pyplot) and finishes its folder (``summary.json``, the move into place) on one
  thread, while the main thread reads and analyses the next movie.
  :class:`PendingMovie` is the handle the main thread keeps: its
  :meth:`~PendingMovie.result` waits for the folder and re-raises a failure,
  whose message names the movie.

Why a process for the figures: drawing holds the GIL, and on a thread of this
process it slowed the next movie's pre-processing by about as much as it took
(D1: pre-processing 1.5-1.8 s and figures 1.0-1.4 s took 2.9-3.5 s together on
a thread, 1.8-2.5 s with the figures in a process; 2 cores, 2026-12-03).
"""

from __future__ import annotations

import importlib
import logging
import threading
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

__all__ = ["FIGURE_MODULES", "ROISET_MODULES", "ImportWarmup", "OutputWorker", "PendingMovie", "draw_figure",
           "figures_result", "warm_imports"]

#: what the figures import: matplotlib's closure (PIL, fontTools, dateutil, ...) holds nothing that the
#: pre-processing and the segmentation import, so it may load while they run
FIGURE_MODULES = ("matplotlib.figure", "matplotlib.backends.backend_agg", "matplotlib.patheffects",
                  "matplotlib.patches", "matplotlib.ticker", "matplotlib.colorbar")
#: what :func:`astro3s.io.write_roiset` imports: skimage's contour tracing and roifile; skimage is
#: imported by the segmentation, so these start after it
ROISET_MODULES = ("skimage.measure._find_contours", "roifile")


class ImportWarmup:
    """Modules imported in a daemon thread; :meth:`join` waits for them.

    A module that fails to import is skipped silently here: the stage that
    needs it imports it again and reports the error there.

    Parameters
    ----------
    modules : sequence of str
        Dotted module names, imported in order.
    """

    def __init__(self, modules: Sequence[str]):
        self.modules = tuple(modules)
        self._thread = threading.Thread(target=self._run, name="astro3s-imports", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        for name in self.modules:  # a loop over a few module names
            try:
                importlib.import_module(name)
            except Exception as err:  # noqa: BLE001 - best effort: the real import reports it
                log.debug("warm-up import of %s failed: %s", name, err)

    def join(self) -> None:
        """Wait until every module is imported (or has failed)."""
        self._thread.join()


def warm_imports(modules: Sequence[str]) -> ImportWarmup:
    """Start importing ``modules`` in the background (see :class:`ImportWarmup`)."""
    return ImportWarmup(modules)


def draw_figure(movie: str, name: str, draw: Callable[[], Any]) -> None:
    """Call ``draw()``; a failure other than an astro3s error is re-raised naming the movie and the figure.

    Raises
    ------
    RuntimeError
        ``"<movie>: <name> could not be drawn (<type>: <message>)"``, from the original exception
        (whose traceback is kept: a figure that fails is a bug).
    """
    from astro3s.errors import Astro3sError

    try:
        draw()
    except Astro3sError:
        raise
    except Exception as err:
        raise RuntimeError(f"{movie}: {name} could not be drawn ({type(err).__name__}: {err})") from err


def _warm_figures() -> None:
    """First job of the figure process: import what the figures need, while the first movie is analysed."""
    for name in ("astro3s.inference.report", "astro3s.correlation", *FIGURE_MODULES):
        importlib.import_module(name)


def _draw_in_process(inputs: Any, folder: Path) -> float:
    """:func:`astro3s.inference.report.draw_figures` in the figure process; any failure comes back as a
    plain ``RuntimeError`` whose first line names the movie (an astro3s error's own class may not unpickle)."""
    from astro3s.errors import Astro3sError
    from astro3s.inference.report import draw_figures

    try:
        return draw_figures(inputs, folder)
    except Astro3sError as err:
        raise RuntimeError(f"{inputs.name}: the figures could not be written ({err})") from None


class OutputWorker:
    """Finishes output folders on one thread and draws their figures in one other process.

    A batch hands each movie's figures (:meth:`draw`) and then the job that
    writes ``summary.json`` and moves the folder into place (:meth:`submit`)
    to the worker, and goes on with the next movie. The figures are drawn in a
    separate process (``spawn``: no fork of a process running torch threads)
    because matplotlib holds the GIL: drawn on a thread of this process they
    slowed the next movie's pre-processing by as much as they took. The
    finishing thread mostly waits (for the figure process, on file I/O).

    Use it as a context manager: leaving the block waits for every job.

    Parameters
    ----------
    processes : bool
        Draw in a figure process (False: on the finishing thread, e.g. where
        processes cannot be started).
    """

    def __init__(self, *, processes: bool = True) -> None:
        self._thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="astro3s-outputs")
        self._processes = processes
        self._pool: Any = None
        if processes:
            self._start_pool()

    def _start_pool(self) -> None:
        import multiprocessing
        from concurrent.futures import ProcessPoolExecutor

        try:
            self._pool = ProcessPoolExecutor(max_workers=1, mp_context=multiprocessing.get_context("spawn"))
            self._pool.submit(_warm_figures)  # matplotlib loads there while the first movie is analysed
        except (OSError, RuntimeError) as err:  # no processes here: draw on the thread
            log.warning("figures drawn in this process (no figure process: %s)", err)
            self._pool, self._processes = None, False

    def draw(self, inputs: Any, folder: Path) -> Future:
        """Draw the figures of ``inputs`` into ``folder`` (:func:`astro3s.inference.report.draw_figures`);
        the future gives the seconds taken or raises the figure's error (naming the movie)."""
        from concurrent.futures.process import BrokenProcessPool

        if self._pool is not None:
            try:
                return self._pool.submit(_draw_in_process, inputs, folder)
            except BrokenProcessPool:  # the process died (killed for memory?) with an earlier movie: a new one
                self._pool.shutdown(wait=False)
                self._start_pool()
                if self._pool is not None:
                    return self._pool.submit(_draw_in_process, inputs, folder)
        from astro3s.inference.report import draw_figures

        return self._thread.submit(draw_figures, inputs, folder)

    def submit(self, job: Callable[[], Any]) -> Future:
        """Run ``job()`` on the finishing thread, after the jobs submitted before; its future."""
        return self._thread.submit(job)

    def close(self) -> None:
        """Wait for every job, then end the thread and the figure process."""
        self._thread.shutdown(wait=True)
        if self._pool is not None:
            self._pool.shutdown(wait=True)

    def __enter__(self) -> OutputWorker:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def figures_result(future: Future, movie: str) -> float:
    """The seconds a figure job took, or its error: a dead figure process becomes a ``RuntimeError``
    that names the movie."""
    from concurrent.futures.process import BrokenProcessPool

    try:
        return future.result()
    except BrokenProcessPool as err:
        raise RuntimeError(f"{movie}: the figure process ended while drawing this movie's figures ({err}); "
                           "the next movie gets a new one") from err


@dataclass
class PendingMovie:
    """A movie whose output folder is being finished, or was: :meth:`result` gives its ``MovieResult``.

    Attributes
    ----------
    movie : Path
    future : Future
        Of the job that finishes the folder; it returns the ``MovieResult``.
    """

    movie: Path
    future: Future

    def result(self) -> Any:
        """Wait for the outputs; the ``MovieResult``, or the job's exception re-raised."""
        return self.future.result()

    @classmethod
    def now(cls, movie: Path, job: Callable[[], Any]) -> PendingMovie:
        """Run ``job`` here and now (no output thread; its exception goes up at once): a finished pending movie."""
        future: Future = Future()
        future.set_result(job())
        return cls(movie, future)
