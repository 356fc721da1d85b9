"""Can a movie's figures be drawn while the next movie is pre-processed? (issue 14: the write stage of a batch)

    python experiments/benchmarks/bench_figure_overlap.py MOVIE.tif [--repeats 3]

Runs :func:`astro3s.inference.infer_movie` once on MOVIE (bundled model) to get the
figures' inputs (:class:`astro3s.inference.report.FigureInputs`), then per repeat
times, in one process:

- the pre-processing of MOVIE alone, and the three figures alone;
- both at once with the figures on a thread of this process;
- both at once with the figures in a separate (spawned, already started) process,
  as :class:`astro3s.inference.background.OutputWorker` draws them in a batch.

"Together" near "sum" means no overlap; near the larger of the two, full overlap.
On 2 cores (2026-12-03, load ~1.1): the thread gave none (matplotlib holds the GIL),
the process most of it. Prints one line per repeat and the load average.
"""

from __future__ import annotations

import argparse
import multiprocessing
import tempfile
import threading
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any


def figure_inputs(movie: Path, work: Path) -> Any:
    """The :class:`FigureInputs` of one ``infer_movie`` run on ``movie`` (bundled model)."""
    import astro3s.inference.pipeline as pipeline
    from astro3s.inference import infer_movie, load_inference_model

    captured = []
    real = pipeline._figure_inputs

    def capture(run: Any, options: Any) -> Any:
        captured.append(real(run, options))
        return captured[-1]

    pipeline._figure_inputs = capture
    try:
        model, options = load_inference_model("default", device="cpu")
        infer_movie(movie, work, model, options, progress=False)
    finally:
        pipeline._figure_inputs = real
    return captured[-1]


def preprocess_once(movie: Path, params: Any) -> float:
    """Seconds of one pre-processing of ``movie``."""
    from astro3s.io import read_movie
    from astro3s.preprocess import preprocess

    start = time.perf_counter()
    with read_movie(movie) as mov:
        pre = preprocess(mov, params, progress=False)
        close = getattr(pre.corrected, "close", None)
        if callable(close):
            close()
    return time.perf_counter() - start


def one_repeat(movie: Path, params: Any, inputs: Any, folder: Path, pool: ProcessPoolExecutor) -> str:
    """Pre-processing and figures alone, then together on a thread and in a process; one line."""
    from astro3s.inference.report import draw_figures

    pre_s = preprocess_once(movie, params)
    start = time.perf_counter()
    draw_figures(inputs, folder)
    figures_s = time.perf_counter() - start
    start = time.perf_counter()
    thread = threading.Thread(target=draw_figures, args=(inputs, folder))
    thread.start()
    preprocess_once(movie, params)
    thread.join()
    thread_s = time.perf_counter() - start
    start = time.perf_counter()
    future = pool.submit(draw_figures, inputs, folder)
    preprocess_once(movie, params)
    future.result()
    process_s = time.perf_counter() - start
    load = open("/proc/loadavg").read().split()[0]
    return (f"pre-processing {pre_s:.2f} s, figures {figures_s:.2f} s, sum {pre_s + figures_s:.2f} s; together: "
            f"thread {thread_s:.2f} s, process {process_s:.2f} s (load {load})")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("movie", type=Path)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    from astro3s.inference.report import draw_figures
    from astro3s.models.checkpoint import model_preprocess_params

    with tempfile.TemporaryDirectory() as work:
        inputs = figure_inputs(args.movie, Path(work))
        params = model_preprocess_params("default")
        with ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("spawn")) as pool:
            pool.submit(draw_figures, inputs, Path(work)).result()  # started and warm
            preprocess_once(args.movie, params)
            for _ in range(args.repeats):
                print(one_repeat(args.movie, params, inputs, Path(work), pool), flush=True)


if __name__ == "__main__":
    main()
