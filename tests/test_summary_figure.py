"""summary.png, index.html, the progress switch and the config tree (issue 16, part 1; issue 14)."""

from __future__ import annotations

import json
import shutil
import sys
from html.parser import HTMLParser
from pathlib import Path
from types import SimpleNamespace
from urllib.parse import unquote

import numpy as np
import pytest
from _hydra import compose_config
from hydra.core.global_hydra import GlobalHydra
from hydra.core.hydra_config import HydraConfig


@pytest.fixture(scope="module")
def blank_checkpoint(tmp_path_factory: pytest.TempPathFactory, untrained_checkpoint) -> Path:
    return untrained_checkpoint(tmp_path_factory.mktemp("blank"), blank=True)


@pytest.fixture(autouse=True)
def _no_hydra_state():
    yield
    GlobalHydra.instance().clear()
    HydraConfig.instance().cfg = None


def _curated_options(**kw):
    from astro3s.correlation import CorrelationParams
    from astro3s.inference.pipeline import InferenceOptions
    from astro3s.preprocess.params import as_preprocess_params

    return InferenceOptions(preprocess=as_preprocess_params(None), correlation=CorrelationParams(),
                            model_name="(curated rois)", **kw)


def _png_size(path: Path) -> tuple[int, int]:
    from PIL import Image

    with Image.open(path) as image:
        return image.size


def _colourful(path: Path) -> float:
    """Fraction of pixels that are neither white nor grey: something was drawn."""
    from PIL import Image

    with Image.open(path) as image:
        rgb = np.asarray(image.convert("RGB"), np.int16)
    return float(np.mean(rgb.max(axis=2) - rgb.min(axis=2) > 30))


# ----------------------------------------------------------------------------- summary.png


def test_tiny_run_writes_a_summary_page(tiny_movie: Path, tmp_path: Path) -> None:
    from astro3s.inference import OUTPUT_FILES, infer_movie, is_complete

    result = infer_movie(tiny_movie, tmp_path, None, _curated_options(),
                         rois=tiny_movie.parent / "ground_truth" / "RoiSet.zip", progress=False)
    page = result.output / "summary.png"
    assert "summary.png" in OUTPUT_FILES and page.is_file()
    width, height = _png_size(page)
    assert 1000 <= width <= 1600 and 800 <= height <= 1400
    assert _colourful(page) > 0.05  # images, heat map and curves, not an empty page
    assert "summary.png" in json.loads((result.output / "summary.json").read_text())["files"]
    page.unlink()
    assert not is_complete(result.output)  # a page missing means the run did not finish
    assert is_complete(result.output, figures=False)


def test_no_figures_means_no_summary_page(tiny_movie: Path, tmp_path: Path) -> None:
    from astro3s.inference import infer_movie, is_complete

    result = infer_movie(tiny_movie, tmp_path, None, _curated_options(figures=False),
                         rois=tiny_movie.parent / "ground_truth" / "RoiSet.zip", progress=False)
    assert not list(result.output.glob("*.png"))
    assert is_complete(result.output, figures=False)


def test_run_without_cells_still_writes_the_page_and_a_failed_movie_its_error(
        tiny_movie: Path, blank_checkpoint: Path, tmp_path: Path) -> None:
    from astro3s.inference import load_inference_model, read_index, run_batch

    movies = tmp_path / "movies"
    movies.mkdir()
    odd = "a <b>&'odd\" name.tif"
    shutil.copy(tiny_movie, movies / odd)
    data = tiny_movie.read_bytes()
    (movies / "z_broken.tif").write_bytes(data[: len(data) // 3])
    model, options = load_inference_model(blank_checkpoint, device="cpu", soma_scale="fixed")
    out = tmp_path / "out"
    results = run_batch(sorted(movies.iterdir()), out, model, options, progress=False)
    assert [r.status for r in results] == ["done", "failed"]
    assert results[0].n_cells == 0
    folder = results[0].output
    assert _png_size(folder / "summary.png")[0] >= 1000 and (folder / "overlay.png").is_file()

    page = out / "index.html"
    assert page.is_file()
    parsed = _parse(page.read_text(encoding="utf-8"))
    assert parsed.errors == []
    # every movie, its name escaped (the text reads back exactly), its status
    assert odd in parsed.text and "z_broken.tif" in parsed.text
    assert "<b>" not in page.read_text(encoding="utf-8").replace("<body>", "")
    assert {"done", "failed"} <= set(parsed.text_parts)
    failed_row = read_index(out / "index.csv")[1]
    assert failed_row["error"] and failed_row["error"] in parsed.text
    # every local link and image exists; the thumbnail is the movie's overlay, not a copy
    targets = parsed.links + parsed.images
    assert targets and all(not t.startswith(("http:", "https:")) for t in targets)
    for target in targets:
        assert (out / unquote(target)).exists(), target
    assert any(unquote(t) == f"{folder.name}/overlay.png" for t in parsed.images)
    assert sorted(p.name for p in out.iterdir()) == sorted([folder.name, "index.csv", "index.html"])


class _Page(HTMLParser):
    """Links, image sources and text of a page, and unbalanced tags."""

    _VOID = {"meta", "img", "br", "link", "input", "hr"}

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.links: list[str] = []
        self.images: list[str] = []
        self.text_parts: list[str] = []
        self.errors: list[str] = []
        self._open: list[str] = []

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        if tag == "a" and attrs.get("href"):
            self.links.append(attrs["href"])
        if tag == "img":
            self.images.append(attrs["src"])
        if tag not in self._VOID:
            self._open.append(tag)

    def handle_endtag(self, tag):
        if not self._open or self._open.pop() != tag:
            self.errors.append(f"unbalanced </{tag}>")

    def handle_data(self, data):
        if data.strip():
            self.text_parts.append(data.strip())

    @property
    def text(self) -> str:
        return "\n".join(self.text_parts)


def _parse(text: str) -> _Page:
    parser = _Page()
    parser.feed(text)
    parser.close()
    if parser._open:
        parser.errors.append(f"unclosed {parser._open}")
    return parser


def test_index_page_escapes_and_links_relative(tmp_path: Path) -> None:
    from astro3s.inference.index_page import index_entries, render_index, write_index_html

    out = tmp_path / "res"
    done = out / "m&1"
    done.mkdir(parents=True)
    for name in ("overlay.png", "summary.png", "traces.csv"):
        (done / name).write_bytes(b"x")
    rows = [{"movie": "/data/m&1.tif", "status": "done", "n_cells": "3", "threshold": "0.700", "seconds": "2.5",
             "output": str(done), "error": ""},
            {"movie": "/data/<script>alert(1)<script>.tif", "status": "failed", "n_cells": "", "threshold": "",
             "seconds": "0.1", "output": "", "error": "could not read <it> & more"}]
    entries = index_entries(rows, out)
    assert entries[0].thumbnail == "m%261/overlay.png" and entries[0].target == "m%261/summary.png"
    assert [label for label, _ in entries[0].links] == ["summary.png", "overlay.png", "traces.csv"]
    assert entries[1].thumbnail is None and entries[1].links == ()
    text = render_index(entries, title="t <x>", generated="now")
    assert "<script>" not in text and "&lt;script&gt;" in text and "could not read &lt;it&gt; &amp; more" in text
    page = _parse(text)
    assert page.errors == [] and "<script>alert(1)<script>.tif" in page.text
    path = write_index_html(out, rows, index_csv=out / "index.csv")
    assert path == out / "index.html" and not list(out.glob(".index.*"))
    # an index written from another working directory: folders are found by name under the output folder
    moved = [dict(rows[0], output="elsewhere/m&1")]
    assert index_entries(moved, out)[0].thumbnail == "m%261/overlay.png"


# ----------------------------------------------------------------------------- pieces of the page


def test_time_bins_keep_brief_transients() -> None:
    from astro3s.inference.report import time_bins

    rows = np.zeros((2, 5000), np.float32)
    rows[0, 1234] = 5.0
    binned, k = time_bins(rows, max_columns=1000)
    assert k == 5 and binned.shape == (2, 1000) and binned[0].max() == 5.0 and binned[1].max() == 0.0
    same, one = time_bins(rows[:, :800], max_columns=1000)
    assert one == 1 and same.shape == (2, 800)


def test_search_curve_and_checks() -> None:
    from astro3s.correlation import ThresholdChoice
    from astro3s.inference.report import run_checks, search_curve

    choice = ThresholdChoice(threshold=0.8, false_rate=0.07, in_band=False, clamped=True,
                             tried=[(0.85, 0.03), (0.9, 0.01), (0.8, 0.07)], n_background=300)
    thresholds, rates = search_curve(choice)
    np.testing.assert_allclose(thresholds, [0.8, 0.85, 0.9])
    np.testing.assert_allclose(rates, [0.07, 0.03, 0.01])
    assert search_curve(None)[0].size == 0
    checks = run_checks(n_cells=3, threshold=0.8, choice=choice, band=(0.02, 0.06), shifts=np.zeros((100, 2)),
                        fov_shape=(64, 64), soma_events=np.array([0, 0, 1]))
    assert checks[0].level == "ok" and [c.level for c in checks[1:]] == ["warn", "warn"]
    assert "above" in checks[1].text and "2 of 3 somata show no calcium event" in checks[2].text
    # below the band at the lowest threshold: a quiet background, said on the verdict's line, nothing to check;
    # below it after a step jumped over the band: to check
    floor = ThresholdChoice(threshold=0.6, false_rate=0.001, in_band=False, clamped=True,
                            tried=[(0.85, 0.0), (0.8, 0.0), (0.75, 0.0), (0.7, 0.0), (0.65, 0.0), (0.6, 0.001)],
                            n_background=300)
    quiet = run_checks(n_cells=3, threshold=0.6, choice=floor, band=(0.02, 0.06), shifts=np.zeros((100, 2)),
                       fov_shape=(64, 64), soma_events=np.array([2, 2, 1]))
    assert [c.level for c in quiet] == ["ok"] and "CC threshold 0.60 (the lowest tried)" in quiet[0].text
    jumped = ThresholdChoice(threshold=0.7, false_rate=0.013, in_band=False, clamped=False,
                             tried=[(0.85, 0.0), (0.8, 0.0), (0.75, 0.001), (0.7, 0.013), (0.65, 0.062)],
                             n_background=300)
    over = run_checks(n_cells=3, threshold=0.7, choice=jumped, band=(0.02, 0.06), shifts=np.zeros((100, 2)),
                      fov_shape=(64, 64), soma_events=np.array([2, 2, 1]))
    assert [c.level for c in over] == ["ok", "warn"] and "ended below" in over[1].text
    calm = run_checks(n_cells=3, threshold=0.8, choice=None, band=None, shifts=np.zeros((100, 2)),
                      fov_shape=(64, 64), soma_events=np.array([0, 2, 1]))
    assert [c.level for c in calm] == ["ok"]
    unknown = run_checks(n_cells=3, threshold=0.8, choice=None, band=None, shifts=np.zeros((100, 2)),
                         fov_shape=(64, 64), soma_events=None)
    assert [c.level for c in unknown] == ["ok"]  # no events table: nothing said about silent somata
    shaky = run_checks(n_cells=3, threshold=0.8, choice=None, band=None, shifts=np.full((100, 2), 9.0),
                       fov_shape=(64, 64), soma_events=np.array([1, 1, 1]))
    assert "large motion" in shaky[1].text
    none = run_checks(n_cells=0, threshold=float("nan"), choice=None, band=(0.02, 0.06),
                      shifts=np.zeros((5, 2)), fov_shape=(64, 64), soma_events=np.zeros(0, int))
    assert none[0].level == "fail"


def test_event_marks_pick_the_soma_rows() -> None:
    from astro3s.inference.report import event_marks

    rows, frames = event_marks({"roi": ["Soma_002", "Proc_002_01", "Soma_001"], "frame": [10, 11, 12]},
                               {"Soma_001": 0, "Soma_002": 1})
    assert rows.tolist() == [1, 0] and frames.tolist() == [10, 12]
    assert event_marks(None, {})[0].size == 0
    assert event_marks({"something": [1]}, {"Soma_001": 0})[0].size == 0
    table = SimpleNamespace(roi=["Soma_001", "Dom_001"], onset_frame=np.array([7, 8]))  # as astro3s.events.EventTable
    rows, frames = event_marks(table, {"Soma_001": 0})
    assert rows.tolist() == [0] and frames.tolist() == [7]


def test_layout_follows_the_fov_and_events_are_drawn(tmp_path: Path) -> None:
    from astro3s.correlation import find_domains, extract_traces
    from astro3s.inference.report import plot_summary, summary_layout

    square, wide = summary_layout((256, 256)), summary_layout((128, 512))
    assert square["image0"][2] == pytest.approx(square["image0"][3])
    assert wide["image0"][3] == pytest.approx(wide["image0"][2] / 2) and wide["page"][3] < square["page"][3]
    rng = np.random.default_rng(0)
    movie = rng.normal(100, 1, (60, 40, 48)).astype(np.float32)
    soma = np.zeros((40, 48), np.uint16)
    soma[10:15, 10:15] = 1
    soma[25:30, 30:35] = 2
    movie[20:25, 10:15, 10:15] += 30
    processes = np.zeros_like(soma)
    domains = find_domains(movie, soma, processes, radius=10, threshold=0.5)
    traces = extract_traces(movie, soma, processes, fs=5.0)
    pre = SimpleNamespace(mean_image=movie.mean(0), activity_map=movie.std(0), shifts=np.zeros((60, 2)),
                          shape=movie.shape, fs=5.0)
    path = plot_summary(pre, soma, processes, domains, traces, path=tmp_path / "s.png", title="synthetic",
                        events={"roi": ["Soma_001"], "frame": [20]})
    assert path.is_file() and _colourful(path) > 0.02


# ----------------------------------------------------------------------------- progress and the config tree


def test_progress_bars_follow_the_switch(tiny_movie: Path, tmp_path: Path, capsys,
                                         monkeypatch: pytest.MonkeyPatch) -> None:
    from astro3s.inference import infer_movie

    rois = tiny_movie.parent / "ground_truth" / "RoiSet.zip"
    capsys.readouterr()
    monkeypatch.setattr(sys.stderr, "isatty", lambda: True, raising=False)  # as on a terminal
    infer_movie(tiny_movie, tmp_path / "a", None, _curated_options(figures=False), rois=rois, progress=None)
    shown = capsys.readouterr().err
    assert "CC pass over the movie" in shown and "CC domains" in shown and "CC threshold search" in shown
    # the movie's own bar over its stages
    assert f"{tiny_movie.name}: pre-processing" in shown and f"{tiny_movie.name}: writing" in shown
    assert "4/5" in shown  # (the last refresh may be skipped: the bar is cleared when done)
    infer_movie(tiny_movie, tmp_path / "b", None, _curated_options(figures=False), rois=rois, progress=False)
    assert "%|" not in capsys.readouterr().err


def test_extras_quiet_silences_the_simulator_and_the_tree_goes_to_the_run_folder(
        tmp_path: Path, capsys, monkeypatch: pytest.MonkeyPatch) -> None:
    from astro3s.cli._task import CONFIG_TREE_NAME, progress_setting
    from astro3s.cli.simulate import simulate_task

    def run(name: str, *overrides: str) -> str:
        cfg = compose_config("simulate", ["simulate=tiny", "simulate.n_frames=[40,40]", f"out={tmp_path / name}",
                                          f"name={name}", *overrides], output_dir=tmp_path / f"run_{name}")
        capsys.readouterr()
        simulate_task(cfg)
        assert progress_setting(cfg) is (False if "extras=quiet" in overrides else None)
        captured = capsys.readouterr()
        return captured.err + captured.out

    monkeypatch.setattr(sys.stderr, "isatty", lambda: True, raising=False)  # as on a terminal
    loud = run("loud")
    assert "%|" in loud  # the simulator's bar, on a terminal
    assert "CONFIG" not in loud  # no tree on the screen by default ...
    tree = (tmp_path / "run_loud" / CONFIG_TREE_NAME).read_text()
    assert "CONFIG" in tree and "simulate" in tree  # ... it is in the run folder
    quiet = run("quiet", "extras=quiet")
    assert "%|" not in quiet and "CONFIG" not in quiet
    assert (tmp_path / "run_quiet" / CONFIG_TREE_NAME).is_file()
    asked = run("asked", "extras.print_config=true")
    assert "CONFIG" in asked
