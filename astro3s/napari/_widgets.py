"""The widgets *Find astrocytes* and *Curate* (npe2 widget contributions).

*Find astrocytes* runs what ``astro3s-infer`` runs (:func:`~astro3s.inference.load_inference_model`
and :func:`~astro3s.inference.infer_movie`) on a movie layer, in a worker
thread, and adds the result layers as the reader shows a result folder.
*Curate* writes the edited ``soma``/``processes`` Labels layers as
``RoiSet_curated.zip`` in the result folder and runs the analysis again on
those cells (``infer_movie(..., rois=...)``: traces, CC domains, events), then
refreshes the layers. Painting, erasing and undo are napari's own.

Both take a ``napari.Viewer`` (or a ``napari.components.ViewerModel``, as
the tests do) and run one job at a time, with a busy bar, the stage being
worked on and a Cancel button.
"""

from __future__ import annotations

import contextlib
import logging
import threading
from collections.abc import Callable, Iterator
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
from napari.layers import Image, Labels, Layer
from qtpy.QtCore import QObject, Signal
from qtpy.QtWidgets import (
    QCheckBox,
    QComboBox,
    QFileDialog,
    QFormLayout,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QProgressBar,
    QPushButton,
    QVBoxLayout,
    QWidget,
)

from astro3s.errors import InputError
from astro3s.io.movie import MOVIE_SUFFIXES
from astro3s.napari._reader import (
    MOVIE_KEY,
    RESULT_KEY,
    LayerData,
    load_summary,
    result_layers,
    summary_movie,
)

__all__ = ["CURATED_ROISET", "DEFAULT_OUT", "CurateWidget", "FindAstrocytesWidget", "RunCancelled", "RunControl",
           "curate_cells", "curated_labels", "curation_options", "find_cells", "layer_movie", "show_results"]

#: Output folder of *Find astrocytes* when none is given, beside the movie.
DEFAULT_OUT = "astro3s_results"
#: What *Curate* writes in the result folder and analyses.
CURATED_ROISET = "RoiSet_curated.zip"
_LAYER_TYPES = {"image": Image, "labels": Labels}


# --------------------------------------------------------------------------- running in a worker thread


class RunCancelled(Exception):
    """The user pressed Cancel; raised inside the run at its next stage."""


class RunControl(logging.Handler):
    """The stage messages of one run, for the widget, and its cancellation.

    astro3s logs a line at each stage of a movie (pre-processing, candidates,
    cells, CC threshold, events). Attached to the ``astro3s`` logger during
    the run (:meth:`attached`), this handler passes each line of the run's
    thread to ``report`` and, once :meth:`cancel` was called, raises
    :class:`RunCancelled` from it: ``infer_movie`` unwinds as from any error,
    its staging folder is removed and the output folder stays as it was.
    A thread cannot be stopped from outside, so this is the earliest safe point.
    After the events line the run only writes its outputs; a cancel there is
    ignored, so that no run stops half-way through replacing files.

    Parameters
    ----------
    report : callable
        Called with each message, in the worker thread.
    """

    def __init__(self, report: Callable[[str], None]):
        super().__init__(logging.INFO)
        self.report = report
        self.cancelled = threading.Event()
        self.writing = False
        self._thread: int | None = None

    def cancel(self) -> None:
        """Ask the run to stop at its next stage (thread-safe)."""
        self.cancelled.set()

    def check(self) -> None:
        """Raise :class:`RunCancelled` when a cancel is pending and the run is not writing yet."""
        if self.cancelled.is_set() and not self.writing:
            raise RunCancelled

    def emit(self, record: logging.LogRecord) -> None:
        if record.thread != self._thread:
            return  # another run, or the GUI thread
        try:
            text = record.getMessage()
        except (TypeError, ValueError):  # arguments that do not fit the format: the bare message still says the stage
            text = str(record.msg)
        self.report(text.strip())
        self.check()
        if record.name == "astro3s.inference.pipeline" and "calcium event" in text:
            self.writing = True  # infer_movie's last line before its outputs are written

    @contextlib.contextmanager
    def attached(self) -> Iterator[RunControl]:
        """This handler on the ``astro3s`` logger for the calling thread, its INFO lines let through."""
        logger = logging.getLogger("astro3s")
        level = logger.level
        self._thread = threading.get_ident()
        if logger.getEffectiveLevel() > logging.INFO:
            logger.setLevel(logging.INFO)  # stage lines are INFO; without this they are dropped before any handler
        logger.addHandler(self)
        try:
            yield self
        finally:
            logger.removeHandler(self)
            logger.setLevel(level)


def find_cells(movie: Path, out_dir: Path, checkpoint: str, *, control: RunControl, soma_scale: str = "auto",
               figures: bool = True, device: str = "auto", key: str | None = None, channel: int | None = None,
               plane: int | None = None) -> tuple[Path, list[LayerData]] | None:
    """The whole method on one movie, as ``astro3s-infer input=MOVIE out=OUT_DIR checkpoint=CHECKPOINT``.

    Runs in the worker thread.

    Parameters
    ----------
    movie : Path
        The movie file.
    out_dir : Path
        Parent of the output folder (``out_dir/<movie stem>/``).
    checkpoint : str
        ``"default"`` or a ``.ckpt`` file.
    control : RunControl
        Stage messages and cancellation.
    soma_scale : {"auto", "fixed"}, figures : bool, device : str, key : str or None, channel, plane : int or None
        As the ``astro3s-infer`` options of the same names.

    Returns
    -------
    (folder, layers) or None
        The output folder and its layers (:func:`~astro3s.napari._reader.result_layers`);
        None when cancelled.
    """
    from astro3s.inference import infer_movie, load_inference_model

    with control.attached():
        try:
            control.report(f"loading the model {checkpoint}")
            model, options = load_inference_model(checkpoint, device=device, soma_scale=soma_scale, figures=figures,
                                                  key=key, channel=channel, plane=plane)
            control.check()
            result = infer_movie(movie, out_dir, model, options, progress=False)
        except RunCancelled:
            return None
    control.report("loading the results")
    return result.output, result_layers(result.output)


def curated_labels(soma: np.ndarray, processes: np.ndarray) -> tuple[np.ndarray, np.ndarray, list[int]]:
    """Edited label images made consistent: a cell is its soma.

    Process pixels whose id has no soma pixel left are removed: erasing a
    soma removes its cell. (Read back from a RoiSet, such processes would go
    to the nearest other soma.) To merge cell B into cell A, fill both B's
    soma and B's processes with A's id.

    Returns
    -------
    soma, processes : ndarray of uint16, shape (H, W)
    dropped : list of int
        Ids whose processes were removed.
    """
    soma = np.asarray(soma).astype(np.uint16, copy=True)
    processes = np.asarray(processes).astype(np.uint16, copy=True)
    if soma.shape != processes.shape:
        raise InputError(None, f"the soma labels {soma.shape} and the process labels {processes.shape} differ in "
                         "shape.", "choose the soma and processes layers of one result folder.")
    orphans = np.setdiff1d(np.unique(processes), np.unique(soma))
    orphans = orphans[orphans > 0]
    processes[np.isin(processes, orphans)] = 0
    return soma, processes, [int(i) for i in orphans]


def _dataclass_from(cls: type, values: Any) -> Any:
    """``cls(**values)`` from a JSON dict: unknown keys left out, lists back to tuples."""
    import dataclasses

    if not isinstance(values, dict):
        return cls()
    known = {f.name for f in dataclasses.fields(cls)}
    return cls(**{k: tuple(v) if isinstance(v, list) else v for k, v in values.items() if k in known})


def curation_options(summary: dict[str, Any], folder: Path) -> Any:
    """:class:`~astro3s.inference.InferenceOptions` of a ``rois=`` run that repeats the run of ``summary``.

    The pre-processing, CC and event parameters, dataset key, a frame rate
    given as ``fs=``, and whether figures and an NWB file were written are
    those recorded in ``summary.json``, so the curated cells are analysed as
    the first run analysed its own.
    """
    from astro3s.correlation import CorrelationParams
    from astro3s.events import EventParams
    from astro3s.inference import InferenceOptions
    from astro3s.preprocess.params import as_preprocess_params

    params = summary.get("parameters") or {}
    files = summary.get("files") or {}
    fs = summary.get("fs") if summary.get("fs_source") == "fs=" else None
    return InferenceOptions(preprocess=as_preprocess_params(params.get("preprocess")),
                            correlation=_dataclass_from(CorrelationParams, params.get("correlation")),
                            events=_dataclass_from(EventParams, params.get("events")),
                            figures="overlay.png" in files, nwb=f"{folder.name}.nwb" in files,
                            model_name="(curated rois)", key=summary.get("key"), channel=summary.get("channel"),
                            plane=summary.get("plane"), fs=fs)


def curate_cells(folder: Path, soma: np.ndarray, processes: np.ndarray, *, control: RunControl,
                 ) -> tuple[Path, list[LayerData], list[int]] | None:
    """Write the edited cells as ``folder/RoiSet_curated.zip`` and analyse them again.

    Runs in the worker thread; as ``astro3s-infer input=MOVIE out=OUT rois=folder/RoiSet_curated.zip``.

    Returns
    -------
    (folder, layers, dropped) or None
        The refreshed Labels layers (no image: the movie did not change) and
        the ids whose orphan processes were removed (:func:`curated_labels`);
        None when cancelled (the RoiSet is written by then).

    Raises
    ------
    InputError
        The movie named in ``summary.json`` is gone, or the folder is not
        named after it (``infer_movie`` writes ``out/<movie stem>/``).
    """
    from astro3s.inference import infer_movie, movie_output_dir
    from astro3s.io import write_roiset

    folder = Path(folder).resolve()
    summary = load_summary(folder)
    movie = summary_movie(summary, folder)
    if movie is None:
        raise InputError(folder / "summary.json", f"names the movie {summary.get('movie')!r}, which is not there.",
                         "put the movie back where it was, or run Find astrocytes on it again.")
    if movie_output_dir(movie, folder.parent).resolve() != folder:
        raise InputError(folder, f"is not named after its movie {movie.name}, so a new analysis would go elsewhere.",
                         "rename the folder back to the movie's name.")
    soma, processes, dropped = curated_labels(soma, processes)
    rois = write_roiset(soma, processes, folder / CURATED_ROISET)
    options = curation_options(summary, folder)
    with control.attached():
        try:
            control.report(f"saved {rois.name}; analysing the curated cells")
            infer_movie(movie, folder.parent, None, options, rois=rois, progress=False)
        except RunCancelled:
            return None
    return folder, result_layers(folder, with_image=False), dropped


# --------------------------------------------------------------------------- layers in the viewer


def show_results(viewer: Any, layers: list[LayerData]) -> list[Any]:
    """Add result layers to ``viewer``, or refresh those it already shows of the same result folder.

    A layer of the same name, type and result folder (``metadata[RESULT_KEY]``)
    gets the new data, features and metadata in place, so its place in the
    layer list and its display settings are kept.

    Returns
    -------
    list of Layer
        The layers, in the order given.
    """
    shown = []
    for data, kwargs, layer_type in layers:
        folder = kwargs.get("metadata", {}).get(RESULT_KEY)
        same = [layer for layer in viewer.layers if layer.name == kwargs["name"]
                and isinstance(layer, _LAYER_TYPES[layer_type]) and layer.metadata.get(RESULT_KEY) == folder]
        if same:
            layer = same[0]
            layer.data = data
            if "features" in kwargs:
                layer.features = kwargs["features"]
            layer.metadata.update(kwargs.get("metadata", {}))
        else:
            layer = viewer.add_layer(Layer.create(data, kwargs, layer_type))
        shown.append(layer)
    return shown


def layer_movie(layer: Any) -> Path | None:
    """The movie file an Image layer shows: read by the astro3s reader, or any reader from a movie file.

    Returns None for layers made in memory, 2-D images, and files that
    :func:`astro3s.io.read_movie` does not read.
    """
    if not isinstance(layer, Image) or layer.ndim < 3:
        return None
    path = layer.metadata.get(MOVIE_KEY) or getattr(getattr(layer, "source", None), "path", None)
    if not path:
        return None
    path = Path(path)
    if not path.exists() or not (path.is_dir() or path.suffix.lower() in MOVIE_SUFFIXES):
        return None
    return path


def _n_cells(layers: list[LayerData]) -> Any:
    """The cell count of a result folder's layers (recorded in each one's metadata)."""
    return layers[-1][1]["metadata"].get("n_cells")


def _one_line(err: BaseException) -> str:
    from astro3s.inference.pipeline import describe_failure

    return describe_failure(err)


class _Messages(QObject):
    """Carries stage messages from the worker thread to the GUI thread (a queued signal)."""

    text = Signal(str)


class _RunPanel(QWidget):
    """What both widgets share: a run button, Cancel, a busy bar, a status line; one run at a time.

    Parameters
    ----------
    viewer : napari.Viewer or ViewerModel
    run_text : str
        The run button's label.
    """

    def __init__(self, viewer: Any, run_text: str):
        super().__init__()
        self.viewer = viewer
        self.worker: Any = None
        self._control: RunControl | None = None
        self.form = QFormLayout()
        self.run_button = QPushButton(run_text)
        self.cancel_button = QPushButton("Cancel")
        self.cancel_button.setEnabled(False)
        self.cancel_button.setToolTip("Stop at the next stage; the output folder stays as it was.")
        self.progress = QProgressBar()
        self.progress.setVisible(False)
        self.status = QLabel("")
        self.status.setWordWrap(True)
        self._messages = _Messages(self)
        self._messages.text.connect(self.status.setText)
        buttons = QHBoxLayout()
        buttons.addWidget(self.run_button)
        buttons.addWidget(self.cancel_button)
        layout = QVBoxLayout(self)
        layout.addLayout(self.form)
        layout.addLayout(buttons)
        layout.addWidget(self.progress)
        layout.addWidget(self.status)
        layout.addStretch(1)
        self.cancel_button.clicked.connect(self.cancel)

    @property
    def running(self) -> bool:
        """Whether a run is under way."""
        return self._control is not None

    def cancel(self) -> None:
        """Stop the run at its next stage."""
        if self._control is not None:
            self._control.cancel()
            self.status.setText("cancelling at the next stage…")

    def _start(self, job: Callable[..., Any], on_done: Callable[[Any], None]) -> None:
        """Run ``job(control=...)`` in a worker thread; ``on_done`` gets its result in the GUI thread."""
        from napari.qt.threading import create_worker

        self._control = RunControl(self._messages.text.emit)
        # _ignore_errors: a bad movie is reported in the status line, not raised again in the GUI thread
        self.worker = create_worker(job, control=self._control, _start_thread=False, _ignore_errors=True)
        self.worker.returned.connect(on_done)
        self.worker.errored.connect(self._failed)
        self.worker.finished.connect(self._finished)
        self._set_running(True)
        self.worker.start()

    def _set_running(self, running: bool) -> None:
        self.run_button.setEnabled(not running)
        self.cancel_button.setEnabled(running)
        self.progress.setVisible(running)
        self.progress.setRange(0, 0)  # busy: the stages take unknown, very different times

    def _failed(self, err: BaseException) -> None:
        self.status.setText(f"failed: {_one_line(err)}")

    def _finished(self) -> None:
        self._control = None
        self._set_running(False)


# --------------------------------------------------------------------------- Find astrocytes


class FindAstrocytesWidget(_RunPanel):
    """Find astrocytes in an open movie, as ``astro3s-infer`` does, and show the result layers.

    Parameters
    ----------
    napari_viewer : napari.Viewer or ViewerModel
        Given by napari.

    Attributes
    ----------
    movie : QComboBox
        Image layers read from a movie file (``layer.source.path``).
    checkpoint : QLineEdit
        ``default`` (the bundled model) or a ``.ckpt`` file.
    out_dir : QLineEdit
        Parent of the output folder; empty: ``astro3s_results`` beside the movie.
    fit_soma : QCheckBox
        ``soma_scale=auto`` (checked) or ``fixed``.
    figures : QCheckBox
        Write the PNG figures.
    last_output : Path or None
        The output folder of the last finished run.
    """

    def __init__(self, napari_viewer: Any):
        super().__init__(napari_viewer, "Find astrocytes")
        self.last_output: Path | None = None
        self.movie = QComboBox()
        self.checkpoint = QLineEdit("default")
        self.checkpoint.setToolTip("'default' (the bundled model) or a .ckpt file written by astro3s-train")
        browse = QPushButton("…")
        browse.setMaximumWidth(30)
        browse.clicked.connect(self._browse_checkpoint)
        checkpoint_row = QHBoxLayout()
        checkpoint_row.addWidget(self.checkpoint)
        checkpoint_row.addWidget(browse)
        self.out_dir = QLineEdit()
        self.out_dir.setPlaceholderText(f"beside the movie: {DEFAULT_OUT}/")
        self.fit_soma = QCheckBox("fit the soma size to the movie")
        self.fit_soma.setChecked(True)
        self.figures = QCheckBox("write the figures (PNG)")
        self.figures.setChecked(True)
        self.form.addRow("movie", self.movie)
        self.form.addRow("model", checkpoint_row)
        self.form.addRow("output folder", self.out_dir)
        self.form.addRow(self.fit_soma)
        self.form.addRow(self.figures)
        self.run_button.clicked.connect(self.run)
        napari_viewer.layers.events.inserted.connect(self._refresh_movies)
        napari_viewer.layers.events.removed.connect(self._refresh_movies)
        self._refresh_movies()

    def _refresh_movies(self, *_: Any) -> None:
        """List the movie layers, keeping the current choice when it is still there."""
        current = self.movie.currentText()
        self.movie.clear()
        for layer in self.viewer.layers:
            if layer_movie(layer) is not None:
                self.movie.addItem(layer.name)
        if current:
            self.movie.setCurrentText(current)

    def _browse_checkpoint(self) -> None:
        path, _ = QFileDialog.getOpenFileName(self, "astro3s checkpoint", "", "checkpoints (*.ckpt)")
        if path:
            self.checkpoint.setText(path)

    def selected_movie(self) -> tuple[Path, Any] | None:
        """(movie path, layer) of the chosen layer, or None."""
        name = self.movie.currentText()
        layer = next((layer for layer in self.viewer.layers if layer.name == name), None)
        path = None if layer is None else layer_movie(layer)
        return None if path is None else (path, layer)

    def run(self) -> None:
        """Start the run on the chosen movie (the Find astrocytes button)."""
        if self.running:
            return
        chosen = self.selected_movie()
        if chosen is None:
            self.status.setText("open a movie first (File > Open, or drop it on the viewer)")
            return
        movie, layer = chosen
        out_dir = Path(self.out_dir.text().strip() or movie.parent / DEFAULT_OUT)
        checkpoint = self.checkpoint.text().strip() or "default"
        self.status.setText(f"starting on {movie.name}")
        self._start(partial(find_cells, movie, out_dir, checkpoint,
                            soma_scale="auto" if self.fit_soma.isChecked() else "fixed",
                            figures=self.figures.isChecked(), key=layer.metadata.get("key"),
                            channel=layer.metadata.get("channel"), plane=layer.metadata.get("plane")), self._show)

    def _show(self, result: tuple[Path, list[LayerData]] | None) -> None:
        if result is None:
            self.status.setText("cancelled: nothing was written")
            return
        folder, layers = result
        show_results(self.viewer, layers)
        self.last_output = folder
        self.status.setText(f"{_n_cells(layers)} cell(s); results in {folder}")


# --------------------------------------------------------------------------- Curate


class CurateWidget(_RunPanel):
    """Save the edited cells as ``RoiSet_curated.zip`` and analyse them again.

    Edit the ``soma`` and ``processes`` Labels layers of a result folder with
    napari's brush, eraser and fill (one id per cell, shared by both layers;
    erasing a soma removes its cell), then press the button: the RoiSet opens
    in Fiji, and traces, CC domains and events are recomputed for these cells.

    Parameters
    ----------
    napari_viewer : napari.Viewer or ViewerModel
        Given by napari.

    Attributes
    ----------
    soma, processes : QComboBox
        The Labels layers to save (default: those named ``soma`` and ``processes``).
    """

    def __init__(self, napari_viewer: Any):
        super().__init__(napari_viewer, "Save and analyse again")
        self.soma = QComboBox()
        self.processes = QComboBox()
        self.form.addRow("soma layer", self.soma)
        self.form.addRow("processes layer", self.processes)
        self.form.addRow(QLabel("One id per cell in both layers; erasing a soma removes its cell."))
        self.run_button.clicked.connect(self.run)
        napari_viewer.layers.events.inserted.connect(self._refresh_layers)
        napari_viewer.layers.events.removed.connect(self._refresh_layers)
        self._refresh_layers()

    def _refresh_layers(self, *_: Any) -> None:
        names = [layer.name for layer in self.viewer.layers if isinstance(layer, Labels)]
        for combo, default in ((self.soma, "soma"), (self.processes, "processes")):
            current = combo.currentText()
            combo.clear()
            combo.addItems(names)
            combo.setCurrentText(current if current in names else default)

    def _layer(self, combo: QComboBox) -> Any:
        return next((layer for layer in self.viewer.layers if layer.name == combo.currentText()), None)

    def run(self) -> None:
        """Save and analyse (the button)."""
        if self.running:
            return
        soma, processes = self._layer(self.soma), self._layer(self.processes)
        if soma is None or processes is None:
            self.status.setText("open an astro3s result folder first (its soma and processes layers)")
            return
        folder = soma.metadata.get(RESULT_KEY)
        if not folder:
            self.status.setText(f"layer {soma.name!r} does not come from an astro3s result folder")
            return
        # copies: the user may go on painting while the run reads them
        soma_data, process_data = np.array(soma.data, copy=True), np.array(processes.data, copy=True)
        self.status.setText(f"saving {CURATED_ROISET}")
        self._start(partial(curate_cells, Path(folder), soma_data, process_data), self._show)

    def _show(self, result: tuple[Path, list[LayerData], list[int]] | None) -> None:
        if result is None:
            self.status.setText(f"{CURATED_ROISET} saved; the analysis was cancelled")
            return
        folder, layers, dropped = result
        show_results(self.viewer, layers)
        note = f"; processes without a soma removed (cell {', '.join(map(str, dropped))})" if dropped else ""
        self.status.setText(f"{CURATED_ROISET} saved in {folder}, {_n_cells(layers)} cell(s) analysed again{note}")

