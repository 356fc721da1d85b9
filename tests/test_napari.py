"""The napari plugin (extra ``astro3s[napari]``): reader, Find astrocytes, Curate, manifest; headless.

Qt runs on its ``offscreen`` platform. napari's Qt viewer needs an OpenGL
context as soon as a layer is added; where there is none (no display, no Xvfb)
the same tests run on ``napari.components.ViewerModel``, the viewer without its
window, which the widgets accept as well. With Xvfb
(``xvfb-run -a python -m pytest tests/test_napari.py``) they run on the Qt viewer.
"""

from __future__ import annotations

import os

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")  # before anything imports Qt

import contextlib  # noqa: E402
import importlib  # noqa: E402
import json  # noqa: E402
import logging  # noqa: E402
import shutil  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402
import pytest  # noqa: E402

pytestmark = [
    pytest.mark.filterwarnings("ignore:`json_encoders` is deprecated:DeprecationWarning"),  # napari's own models
    # with a Qt5 binding
    pytest.mark.filterwarnings("ignore:System theme detection requires a Qt6 backend:UserWarning"),
]

_RUN_TIMEOUT_MS = 60_000
_GL_PROBE = """
from qtpy import API_NAME
from qtpy.QtWidgets import QApplication
app = QApplication([])
from vispy import app as vispy_app
from vispy.gloo import gl
vispy_app.use_app(API_NAME)
canvas = vispy_app.Canvas(show=False)
print(bool(gl.glGetParameter(gl.GL_EXTENSIONS)))
"""


def _has_opengl() -> bool:
    """Whether Qt gets an OpenGL context here (checked in a child process: a failed try can abort Qt)."""
    try:
        run = subprocess.run([sys.executable, "-c", _GL_PROBE], capture_output=True, text=True, timeout=60)
    except subprocess.TimeoutExpired:
        return False
    return run.returncode == 0 and run.stdout.strip().endswith("True")


@pytest.fixture(scope="module")
def gl_available() -> bool:
    pytest.importorskip("napari")
    pytest.importorskip("pytestqt")
    return _has_opengl()


@pytest.fixture
def viewer(gl_available: bool, qtbot):
    """napari's Qt viewer (hidden) when OpenGL works, else a ``ViewerModel``.

    Not napari's ``make_napari_viewer``: its pytest plugin is off (``-p no:napari``
    in pyproject.toml), as it would change logging for the whole test session.
    """
    if not gl_available:
        import npe2
        from napari.components import ViewerModel

        npe2.PluginManager.instance().discover()  # the Qt viewer does this itself
        yield ViewerModel()
        return
    import napari
    from napari.settings import get_settings

    with contextlib.suppress(RuntimeError):  # set once per session
        get_settings(None)  # settings in memory: the user's napari settings are neither read nor written
    window = napari.Viewer(show=False)
    yield window
    window.close()


# --------------------------------------------------------------------------- without napari


def test_missing_extra_is_one_line_naming_the_install(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "napari", None)  # find_spec then says: not installed
    for name in [m for m in sys.modules if m == "astro3s.napari" or m.startswith("astro3s.napari.")]:
        monkeypatch.delitem(sys.modules, name)
    with pytest.raises(ImportError) as info:
        importlib.import_module("astro3s.napari")
    message = str(info.value)
    assert "\n" not in message and 'pip install "astro3s[napari]"' in message


def test_importing_astro3s_does_not_touch_napari_or_qt() -> None:
    code = ("import sys, astro3s, astro3s.io, astro3s.inference, astro3s.io.movie; "
            "gui = {'napari', 'qtpy', 'PyQt5', 'PyQt6', 'vispy', 'npe2'}; "
            "print(sorted({m.split('.')[0] for m in sys.modules} & gui))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


# --------------------------------------------------------------------------- manifest


def test_manifest_is_valid_and_ships_in_the_package() -> None:
    npe2 = pytest.importorskip("npe2")
    from importlib.resources import files

    assert files("astro3s").joinpath("napari.yaml").is_file()  # inside the package: the wheel carries it
    manifest = npe2.PluginManifest.from_distribution("astro3s")  # what `npe2 validate astro3s` loads
    manifest.validate_imports()  # every python_name imports
    assert manifest.name == "astro3s"
    (reader,) = manifest.contributions.readers
    assert reader.accepts_directories and "*.npy" in reader.filename_patterns
    assert sorted(w.display_name for w in manifest.contributions.widgets) == ["Curate", "Find astrocytes"]
    cli = subprocess.run([sys.executable, "-m", "npe2", "validate", "astro3s"], capture_output=True, text=True)
    assert cli.returncode == 0, cli.stdout + cli.stderr


# --------------------------------------------------------------------------- fixtures


@pytest.fixture(scope="module")
def tiny(simulated) -> Path:
    """The tiny simulated movie (shared, read-only)."""
    folder = simulated("tiny", 3)
    return folder / f"{folder.name}.tif"


def _curated_run(movie: Path, out: Path, rois: Path) -> Path:
    """A result folder of ``movie`` with the cells of ``rois`` (no network: fast and with known cells)."""
    from astro3s.correlation import CorrelationParams
    from astro3s.events import EventParams
    from astro3s.inference import InferenceOptions, infer_movie
    from astro3s.preprocess import PreprocessParams

    options = InferenceOptions(preprocess=PreprocessParams(), correlation=CorrelationParams(), events=EventParams(),
                               figures=False, model_name="(ground truth)")
    return infer_movie(movie, out, None, options, rois=rois, progress=False).output


@pytest.fixture(scope="module")
def result_folder(tiny: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A result folder of the tiny movie with its ground-truth cells (shared: copy it before changing it)."""
    return _curated_run(tiny, tmp_path_factory.mktemp("results"), tiny.parent / "ground_truth" / "RoiSet.zip")


def _wait(qtbot, widget) -> None:
    qtbot.waitUntil(lambda: not widget.running, timeout=_RUN_TIMEOUT_MS)


# --------------------------------------------------------------------------- reader


def test_reader_opens_a_4gb_movie_without_reading_it(viewer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from astro3s.io.movie import Movie

    path = tmp_path / "big.npy"
    shape = (2048, 1024, 1024)  # 4 GiB of uint16; the file is sparse, nothing is written
    np.lib.format.open_memmap(path, mode="w+", dtype=np.uint16, shape=shape).flush()
    reads: list[int] = []
    read = Movie.__getitem__

    def counted(self, key):
        out = read(self, key)
        reads.append(int(np.prod(out.shape)) // (shape[1] * shape[2]))  # frames read
        return out

    monkeypatch.setattr(Movie, "__getitem__", counted)
    (layer,) = viewer.open(path, plugin="astro3s")
    assert layer.data.shape == shape and not isinstance(layer.data, np.ndarray)
    assert Path(layer.source.path) == path
    # the frame for the contrast limits and the one napari shows (napari slices frame 0 on the way)
    assert len(reads) <= 4 and set(reads) == {1}, reads
    before = len(reads)
    viewer.dims.set_current_step(0, 10)
    assert reads[before:] == [1]


def test_reader_without_dask_gives_a_lazy_array_like(tiny: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from astro3s.io import read_movie
    from astro3s.napari._reader import lazy_frames

    monkeypatch.setitem(sys.modules, "dask.array", None)  # `import dask.array` now fails
    with read_movie(tiny) as movie:
        frames = lazy_frames(movie)
        assert not isinstance(frames, np.ndarray) and frames.shape == movie.shape and frames.ndim == 3
        np.testing.assert_array_equal(frames[5], movie[5])


def test_reader_on_a_result_folder(viewer, result_folder: Path, tmp_path: Path) -> None:
    from astro3s.io import read_labels

    layers = viewer.open(result_folder, plugin="astro3s")
    assert [(layer.name, type(layer).__name__) for layer in layers] == [
        (f"{result_folder.name} mean", "Image"), ("domains", "Labels"), ("processes", "Labels"), ("soma", "Labels")]
    soma = viewer.layers["soma"]
    truth = read_labels(result_folder / "soma.tif")
    np.testing.assert_array_equal(soma.data, truth)
    assert layers[0].data.shape == truth.shape
    cells = json.loads((result_folder / "summary.json").read_text())["cells"]
    assert len(cells) >= 2
    assert list(soma.features["index"]) == [c["id"] for c in cells] == sorted(set(np.unique(truth)) - {0})
    assert {"soma_area_px", "process_area_px", "domain_area_px", "soma_event_rate", "centroid_y"} <= set(
        soma.features.columns)
    assert list(soma.features["soma_area_px"]) == [c["soma_area_px"] for c in cells]

    # the movie moved away: the labels still open, without the image
    moved = shutil.copytree(result_folder, tmp_path / result_folder.name)
    summary = json.loads((moved / "summary.json").read_text())
    summary["movie"] = str(tmp_path / "gone.tif")
    (moved / "summary.json").write_text(json.dumps(summary))
    from astro3s.napari._reader import result_layers

    assert [kwargs["name"] for _, kwargs, _ in result_layers(moved)] == ["domains", "processes", "soma"]


# --------------------------------------------------------------------------- Find astrocytes


def _find_widget(viewer, qtbot, movie: Path, out: Path, checkpoint: Path):
    from astro3s.napari._widgets import FindAstrocytesWidget

    viewer.open(movie, plugin="astro3s")
    widget = FindAstrocytesWidget(viewer)
    qtbot.addWidget(widget)
    assert widget.movie.currentText() == movie.stem
    widget.checkpoint.setText(str(checkpoint))
    widget.out_dir.setText(str(out))
    widget.fit_soma.setChecked(False)  # soma_scale=fixed: one network pass
    widget.figures.setChecked(False)
    return widget


def test_find_astrocytes_runs_the_method_and_adds_the_layers(viewer, qtbot, tiny: Path, random_checkpoint: Path,
                                                            tmp_path: Path) -> None:
    widget = _find_widget(viewer, qtbot, tiny, tmp_path / "out", random_checkpoint)
    widget.run_button.click()
    assert widget.running and not widget.run_button.isEnabled() and widget.cancel_button.isEnabled()
    _wait(qtbot, widget)
    folder = tmp_path / "out" / tiny.stem
    assert widget.last_output == folder, widget.status.text()
    summary = json.loads((folder / "summary.json").read_text())
    assert summary["segmentation"]["source"] == "network" and summary["soma_scale"]["mode"] == "fixed"
    assert {"soma", "processes", "domains", f"{tiny.stem} mean"} <= {layer.name for layer in viewer.layers}
    np.testing.assert_array_equal(viewer.layers["soma"].data, np.asarray(_labels(folder / "soma.tif")))
    assert "cell(s)" in widget.status.text() and widget.run_button.isEnabled()

    widget.run_button.click()  # again: the layers are refreshed, not duplicated
    _wait(qtbot, widget)
    assert sum(layer.name.startswith("soma") for layer in viewer.layers) == 1


def test_two_channel_movie_opens_as_two_layers_and_runs_on_the_chosen_one(viewer, qtbot, tiny: Path,
                                                                         random_checkpoint: Path,
                                                                         tmp_path: Path) -> None:
    import tifffile

    from astro3s.io import read_movie
    from astro3s.napari._widgets import FindAstrocytesWidget

    with read_movie(tiny) as movie:
        frames = movie[:]
    path = tmp_path / "two.tif"  # channel 1: a structural stand-in (the first frame held), channel 2: the movie
    tifffile.imwrite(path, np.stack([np.broadcast_to(frames[:1], frames.shape), frames], axis=1),
                     imagej=True, metadata={"axes": "TCYX"})
    layers = viewer.open(path, plugin="astro3s")
    assert [layer.name for layer in layers] == ["two [channel 1]", "two [channel 2]"]
    np.testing.assert_array_equal(np.asarray(layers[1].data[4]), frames[4])
    widget = FindAstrocytesWidget(viewer)
    qtbot.addWidget(widget)
    widget.movie.setCurrentText("two [channel 2]")
    widget.checkpoint.setText(str(random_checkpoint))
    widget.out_dir.setText(str(tmp_path / "out"))
    widget.fit_soma.setChecked(False)
    widget.figures.setChecked(False)
    widget.run_button.click()
    _wait(qtbot, widget)
    folder = tmp_path / "out" / "two"
    assert widget.last_output == folder, widget.status.text()
    summary = json.loads((folder / "summary.json").read_text())
    assert summary["channel"] == 2
    mean = viewer.layers["two mean"].data  # the result's image is the chosen channel's
    np.testing.assert_allclose(mean, frames.mean(axis=0), rtol=1e-4, atol=1e-2)


def test_find_astrocytes_cancel_leaves_nothing(viewer, qtbot, tiny: Path, random_checkpoint: Path, tmp_path: Path,
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    import astro3s.inference

    widget = _find_widget(viewer, qtbot, tiny, tmp_path / "out", random_checkpoint)
    load = astro3s.inference.load_inference_model

    def load_until_cancelled(*args, **kwargs):  # holds the run at its first stage until Cancel is pressed
        widget._control.cancelled.wait(_RUN_TIMEOUT_MS / 1000)
        return load(*args, **kwargs)

    monkeypatch.setattr(astro3s.inference, "load_inference_model", load_until_cancelled)
    widget.run_button.click()
    widget.cancel_button.click()
    _wait(qtbot, widget)
    assert widget.status.text() == "cancelled: nothing was written" and widget.last_output is None
    assert not (tmp_path / "out" / tiny.stem).exists()


def test_widgets_open_from_the_plugins_menu(viewer, gl_available: bool) -> None:
    """napari builds both widgets from the manifest, handing them the viewer (needs the Qt window)."""
    if not gl_available:
        pytest.skip("no OpenGL here: napari's window cannot be made (run under xvfb-run)")
    from astro3s.napari._widgets import CurateWidget, FindAstrocytesWidget

    _, find = viewer.window.add_plugin_dock_widget("astro3s", "Find astrocytes")
    _, curate = viewer.window.add_plugin_dock_widget("astro3s", "Curate")
    assert isinstance(find, FindAstrocytesWidget) and isinstance(curate, CurateWidget)
    viewer.add_labels(np.zeros((4, 4), np.uint16), name="soma")  # the widgets follow this viewer's layers
    assert curate.soma.currentText() == "soma" and find.movie.count() == 0


def test_run_control_cancels_at_a_stage_line_but_not_while_writing() -> None:
    from astro3s.napari._widgets import RunCancelled, RunControl

    seen: list[str] = []
    control = RunControl(seen.append)
    stage = logging.getLogger("astro3s.preprocess.pipeline")
    pipeline = logging.getLogger("astro3s.inference.pipeline")
    with control.attached():
        stage.info("pre-processing %s", "m.tif")
        control.cancel()
        with pytest.raises(RunCancelled):
            stage.info("soma candidates: %d", 4)
        control.writing = True  # after the events line: outputs are being replaced, a cancel waits
        pipeline.info("m.tif: done")
    assert seen == ["pre-processing m.tif", "soma candidates: 4", "m.tif: done"]
    assert control not in logging.getLogger("astro3s").handlers


def test_run_control_sees_infer_movie_start_writing(tiny: Path, tmp_path: Path) -> None:
    """The line RunControl takes as "writing starts" is still the one infer_movie logs last before writing."""
    from astro3s.napari._widgets import RunControl

    seen: list[str] = []
    control = RunControl(seen.append)
    with control.attached():
        _curated_run(tiny, tmp_path, tiny.parent / "ground_truth" / "RoiSet.zip")
    assert control.writing, seen


# --------------------------------------------------------------------------- Curate


def _labels(path: Path) -> np.ndarray:
    from astro3s.io import read_labels

    return read_labels(path)


def test_curate_saves_the_edited_cells_and_analyses_them_again(viewer, qtbot, result_folder: Path,
                                                               tmp_path: Path) -> None:
    from astro3s.io import read_roiset
    from astro3s.napari._widgets import CURATED_ROISET, CurateWidget

    # the curated run writes into the folder: a copy beside the same movie (summary.json names it absolutely)
    folder = shutil.copytree(result_folder, tmp_path / result_folder.name)
    viewer.open(folder, plugin="astro3s")
    widget = CurateWidget(viewer)
    qtbot.addWidget(widget)
    assert (widget.soma.currentText(), widget.processes.currentText()) == ("soma", "processes")
    soma, processes = viewer.layers["soma"], viewer.layers["processes"]
    ids = sorted(set(np.unique(soma.data)) - {0})
    gone = ids[-1]
    # the eraser on one cell, in both layers
    soma.data = np.where(soma.data == gone, 0, soma.data).astype(soma.data.dtype)
    processes.data = np.where(processes.data == gone, 0, processes.data).astype(processes.data.dtype)

    widget.run_button.click()
    _wait(qtbot, widget)
    assert "analysed again" in widget.status.text(), widget.status.text()
    curated_soma, _ = read_roiset(folder / CURATED_ROISET, soma.data.shape)
    assert len(set(np.unique(curated_soma)) - {0}) == len(ids) - 1
    summary = json.loads((folder / "summary.json").read_text())
    assert summary["n_cells"] == len(ids) - 1
    assert summary["segmentation"] == {"source": "rois", "rois": str(folder.resolve() / CURATED_ROISET)}
    # the layers show the new analysis: cells renumbered 1..n-1, one feature row each
    assert sorted(set(np.unique(viewer.layers["soma"].data)) - {0}) == list(range(1, len(ids)))
    assert len(viewer.layers["soma"].features) == len(ids) - 1
    assert sum(layer.name == "soma" for layer in viewer.layers) == 1


def test_curate_says_when_the_movie_is_gone(viewer, qtbot, result_folder: Path, tmp_path: Path) -> None:
    from astro3s.napari._widgets import CurateWidget

    folder = shutil.copytree(result_folder, tmp_path / result_folder.name)
    summary = json.loads((folder / "summary.json").read_text())
    summary["movie"] = str(tmp_path / "moved_away.tif")
    (folder / "summary.json").write_text(json.dumps(summary))
    viewer.open(folder, plugin="astro3s")
    widget = CurateWidget(viewer)
    qtbot.addWidget(widget)
    widget.run_button.click()
    _wait(qtbot, widget)
    assert widget.status.text().startswith("failed:") and "moved_away.tif" in widget.status.text()
    assert widget.run_button.isEnabled()


def test_reader_declines_what_it_cannot_read(result_folder: Path, tmp_path: Path) -> None:
    from astro3s.napari._reader import get_reader, read_movie_path, read_result_folder

    (tmp_path / "notes.txt").write_text("x")
    assert get_reader(str(tmp_path / "notes.txt")) is None
    assert get_reader(str(result_folder.parent)) is None  # out/ holds result folders, it is not one
    assert get_reader([str(result_folder), str(result_folder)]) is None
    assert get_reader(str(result_folder)) is read_result_folder
    frames = tmp_path / "frames"
    frames.mkdir()
    (frames / "f_001.tif").write_bytes(b"")
    assert get_reader(str(frames)) is read_movie_path  # a folder of TIFF frames


def test_curated_labels_drop_processes_whose_soma_was_erased() -> None:
    from astro3s.napari._widgets import curated_labels

    soma = np.zeros((8, 8), np.uint16)
    processes = np.zeros((8, 8), np.uint16)
    soma[1:3, 1:3], processes[1:3, 4:6] = 1, 1
    processes[5:7, 5:7] = 2  # its soma was erased
    new_soma, new_processes, dropped = curated_labels(soma, processes)
    assert dropped == [2] and set(np.unique(new_processes)) == {0, 1}
    np.testing.assert_array_equal(new_soma, soma)
