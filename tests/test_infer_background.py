"""Work beside the main thread (issue 14): figures drawn in a figure process and folders finished on a thread
(:class:`~astro3s.inference.background.OutputWorker`) while a batch analyses the next movie, imports warmed up.

A batch's files must be those of each movie run alone, a failing figure (or a figure process that
dies) must name its movie, and nothing may be left half-written.
"""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

import numpy as np
import pytest


@pytest.fixture(scope="module")
def two_movies(simulated, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A folder with two small simulated movies (copies; the simulated folders are shared)."""
    folder = tmp_path_factory.mktemp("two_movies")
    for seed in (3, 4):
        source = simulated("tiny", seed)
        shutil.copy(source / f"{source.name}.tif", folder / f"{source.name}.tif")
    return folder


@pytest.fixture(scope="module")
def default_model():
    from astro3s.inference import load_inference_model

    return load_inference_model("default", device="cpu", soma_scale="fixed")


def _same_outputs(a: Path, b: Path) -> None:
    """Every file of two output folders byte-identical, ``summary.json`` but its timings."""
    names = sorted(p.name for p in a.iterdir())
    assert names == sorted(p.name for p in b.iterdir())
    for name in names:
        if name == "summary.json":
            left, right = (json.loads((d / name).read_text()) for d in (a, b))
            left.pop("timings_s"), right.pop("timings_s")
            assert left == right
        else:
            assert (a / name).read_bytes() == (b / name).read_bytes(), name


def test_batch_outputs_equal_those_of_movies_run_alone(two_movies: Path, default_model, tmp_path: Path) -> None:
    from astro3s.inference import OUTPUT_FILES, infer_movie, read_index, run_batch

    model, options = default_model
    movies = sorted(two_movies.glob("*.tif"))
    results = run_batch(movies, tmp_path / "batch", model, options, progress=False)
    assert [r.status for r in results] == ["done", "done"]
    rows = read_index(tmp_path / "batch" / "index.csv")
    assert [Path(r["movie"]).name for r in rows] == [m.name for m in movies]
    for movie, result in zip(movies, results):
        alone = infer_movie(movie, tmp_path / "alone", model, options, progress=False)
        assert all((result.output / name).is_file() for name in OUTPUT_FILES)
        _same_outputs(result.output, alone.output)
        summary = json.loads((result.output / "summary.json").read_text())
        assert summary["timings_s"]["figures_s"] > 0
    assert not list((tmp_path / "batch").glob(".partial-*"))  # no staging folder left


def test_a_failing_figure_names_its_movie_and_leaves_no_folder(two_movies: Path, default_model, tmp_path: Path,
                                                               monkeypatch: pytest.MonkeyPatch) -> None:
    import dataclasses

    import astro3s.correlation as correlation
    import astro3s.inference.pipeline as pipeline
    from astro3s.inference import read_index, run_batch

    model, options = default_model
    movies = sorted(two_movies.glob("*.tif"))
    real = pipeline._figure_inputs

    def broken_first(run, options):  # the figure process draws traces.png of the first movie from no traces
        inputs = real(run, options)
        return dataclasses.replace(inputs, traces=None) if run.movie == movies[0] else inputs

    monkeypatch.setattr(pipeline, "_figure_inputs", broken_first)
    results = run_batch(movies, tmp_path, model, options, progress=False)
    assert [r.status for r in results] == ["failed", "done"]
    assert results[0].error.startswith(f"RuntimeError: {movies[0].name}: traces.png could not be drawn")
    assert "AttributeError" in results[0].error
    assert not (tmp_path / movies[0].stem).exists() and not list(tmp_path.glob(".partial-*"))
    assert [row["status"] for row in read_index(tmp_path / "index.csv")] == ["failed", "done"]

    # a single movie is drawn here: the error itself, naming the movie, from the original exception
    def plot_traces(*args, **kwargs):
        raise ValueError("no room for the legend")

    monkeypatch.setattr(correlation, "plot_traces", plot_traces)
    monkeypatch.setattr(pipeline, "_figure_inputs", real)
    with pytest.raises(RuntimeError, match=f"{movies[0].name}: traces.png could not be drawn") as caught:
        run_batch(movies[:1], tmp_path / "single", model, options, progress=False)
    assert isinstance(caught.value.__cause__, ValueError)
    assert not list((tmp_path / "single").glob(".partial-*"))


class _KillsItsProcess:
    """Unpickled in the figure process, ends it at once (as the kernel's OOM killer would)."""

    def __reduce__(self):
        import os

        return os._exit, (3,)


def test_a_dead_figure_process_names_the_movie_and_is_replaced(tmp_path: Path) -> None:
    from astro3s.inference.background import OutputWorker, figures_result
    from astro3s.inference.report import FigureInputs

    dead = FigureInputs("dead.tif", _KillsItsProcess(), None, None, None, None, None, None)
    broken = FigureInputs("next.tif", None, None, None, None, None, None, None)
    with OutputWorker() as worker:
        with pytest.raises(RuntimeError, match="dead.tif: the figure process ended"):
            figures_result(worker.draw(dead, tmp_path), "dead.tif")
        # the next movie gets a new process, which runs the figure code (and reports its own error)
        with pytest.raises(RuntimeError, match="next.tif: overlay.png could not be drawn"):
            figures_result(worker.draw(broken, tmp_path), "next.tif")


def test_infer_movie_draws_a_failing_figure_here_and_names_the_movie(two_movies: Path, default_model,
                                                                     tmp_path: Path,
                                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    import astro3s.inference.report as report
    from astro3s.inference import infer_movie

    model, options = default_model
    movie = sorted(two_movies.glob("*.tif"))[0]

    def plot_summary(*args, **kwargs):
        raise KeyError("heat")

    monkeypatch.setattr(report, "plot_summary", plot_summary)
    with pytest.raises(RuntimeError, match=f"{movie.name}: summary.png could not be drawn"):
        infer_movie(movie, tmp_path, model, options, progress=False)
    assert list(tmp_path.iterdir()) == []


def test_warm_imports_loads_modules_and_ignores_failures(monkeypatch: pytest.MonkeyPatch) -> None:
    from astro3s.inference.background import warm_imports

    monkeypatch.delitem(sys.modules, "colorsys", raising=False)
    warm_imports(["astro3s_no_such_module", "colorsys"]).join()
    assert "colorsys" in sys.modules


def test_output_worker_finishes_jobs_in_order_and_waits_at_close() -> None:
    from astro3s.inference.background import OutputWorker

    done = []
    with OutputWorker(processes=False) as outputs:
        futures = [outputs.submit(lambda k=k: done.append(k) or k) for k in range(5)]
    assert done == list(range(5)) and [f.result() for f in futures] == list(range(5))


def test_png_figures_keep_their_pixels(tmp_path: Path) -> None:
    """The faster PNG compression changes the bytes, never the pixels."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from PIL import Image

    from astro3s.correlation.figures import save_figure

    fig = Figure(figsize=(3, 2))
    FigureCanvasAgg(fig)
    fig.subplots().imshow(np.random.default_rng(0).random((40, 60)), cmap="magma")
    save_figure(fig, tmp_path / "fast.png", dpi=100)
    fig.savefig(tmp_path / "default.png", dpi=100)
    fast, default = (np.asarray(Image.open(tmp_path / name)) for name in ("fast.png", "default.png"))
    assert np.array_equal(fast, default)
