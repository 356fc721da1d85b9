"""npe2 reader: calcium-imaging movies (lazily) and astro3s result folders.

A movie becomes one Image layer whose data is a dask array (or, without dask,
a thin array-like) over :class:`astro3s.io.Movie`: napari reads the frame it
shows and nothing else, so a movie larger than memory opens at once.

A result folder ``out/<stem>/`` of ``astro3s-infer`` becomes a mean image of
its movie (when the movie is still where ``summary.json`` says) and three
Labels layers, ``domains``, ``processes`` and ``soma``, with the cell ids of
``soma.tif`` and the per-cell rows of ``summary.json`` as their ``features``
(``index`` is the cell id).
"""

from __future__ import annotations

import math
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from astro3s.io.movie import MOVIE_SUFFIXES, Movie

__all__ = ["LABEL_LAYERS", "MOVIE_KEY", "RESULT_KEY", "cell_features", "get_reader", "is_result_folder",
           "lazy_frames", "load_summary", "movie_layer", "read_movie_path", "read_result_folder",
           "result_layers", "summary_movie"]

#: The Labels layers of a result folder, bottom to top, and how opaque each is drawn.
LABEL_LAYERS = {"domains": 0.3, "processes": 0.6, "soma": 0.7}
#: ``layer.metadata`` key holding the result folder a layer comes from (the Curate widget reads it).
RESULT_KEY = "astro3s_result"
#: ``layer.metadata`` key holding the movie file an Image layer shows.
MOVIE_KEY = "astro3s_movie"
#: The mean image averages at most this many frames, evenly spaced: enough for a picture, bounded time.
MEAN_FRAMES = 200
_TIFF_SUFFIXES = (".tif", ".tiff")

LayerData = tuple[Any, dict[str, Any], str]


# --------------------------------------------------------------------------- what can be read


def is_result_folder(path: str | Path) -> bool:
    """Whether ``path`` is an ``astro3s-infer`` output folder (``summary.json`` and ``soma.tif`` in it)."""
    path = Path(path)
    return path.is_dir() and (path / "summary.json").is_file() and (path / "soma.tif").is_file()


def _is_movie(path: Path) -> bool:
    """A movie file, a Zarr store or a folder of TIFF frames (checked by name only, nothing is opened)."""
    if path.is_file():
        return path.suffix.lower() in MOVIE_SUFFIXES
    if not path.is_dir():
        return False
    if path.suffix.lower() == ".zarr" or any((path / n).exists() for n in (".zarray", ".zgroup", "zarr.json")):
        return True
    # any() stops at the first frame file: a folder of 100 000 frames is not listed
    return any(f.suffix.lower() in _TIFF_SUFFIXES for f in path.iterdir() if f.is_file())


def get_reader(path: str | list[str]) -> Callable[[str | list[str]], list[LayerData]] | None:
    """The npe2 reader hook: a reader function for ``path``, or None when astro3s cannot read it.

    Parameters
    ----------
    path : str or list of str
        What napari is asked to open; a list is accepted when it holds one path.

    Returns
    -------
    callable or None
        :func:`read_result_folder` for an output folder, :func:`read_movie_path`
        for a movie, None for anything else (napari then asks other readers).
    """
    if isinstance(path, list):
        if len(path) != 1:
            return None
        path = path[0]
    target = Path(path)
    if is_result_folder(target):
        return read_result_folder
    if _is_movie(target):
        return read_movie_path
    return None


def _single(path: str | list[str]) -> Path:
    return Path(path[0] if isinstance(path, list) else path)


# --------------------------------------------------------------------------- movies


class _FrameReader:
    """The array-like napari gets when dask is missing: ``shape``, ``dtype``, ``ndim``, ``__getitem__``.

    Every index goes to :meth:`Movie.__getitem__`, which reads only the
    requested pixels; nothing is cached, napari keeps the slice it shows.
    """

    def __init__(self, movie: Movie):
        self.movie = movie
        self.shape = movie.shape
        self.dtype = movie.dtype
        self.ndim = 3

    @property
    def size(self) -> int:
        return math.prod(self.shape)

    def __len__(self) -> int:
        return self.shape[0]

    def __getitem__(self, key: Any) -> np.ndarray:
        return self.movie[key]


def lazy_frames(movie: Movie) -> Any:
    """``movie`` as an array napari slices lazily: a dask array of one-frame chunks, or a :class:`_FrameReader`.

    Parameters
    ----------
    movie : Movie
        An open movie; it must stay open as long as the layer exists.

    Returns
    -------
    dask.array.Array or _FrameReader
        Shape ``(T, H, W)`` and the movie's dtype; indexing reads only the
        frames asked for.
    """
    reader = _FrameReader(movie)
    try:
        import dask.array as da
    except ImportError:  # napari depends on dask, but a plain array-like works as well
        return reader
    # name= and meta= keep dask from hashing or probing the data (either would read the file);
    # lock=True serialises reads, which HDF5 and compressed TIFF need across napari's threads.
    return da.from_array(reader, chunks=(1, *movie.shape[1:]), name=f"astro3s-movie-{uuid.uuid4().hex}",
                         meta=np.empty((0, 0, 0), dtype=movie.dtype), lock=True, asarray=True)


def _contrast(frame: np.ndarray) -> tuple[float, float]:
    """Display range of one frame: its 0.5 and 99.8 percentiles, so a few bright pixels do not wash it out."""
    finite = frame[np.isfinite(frame)] if frame.dtype.kind == "f" else frame
    if finite.size == 0:
        return 0.0, 1.0
    low, high = (float(v) for v in np.percentile(finite, [0.5, 99.8]))
    return (low, high) if high > low else (low, low + 1.0)


def movie_layer(path: str | Path, *, key: str | None = None, channel: int | None = None,
                plane: int | None = None) -> LayerData:
    """The Image layer of a movie, read lazily.

    Parameters
    ----------
    path : str or Path
        Anything :func:`astro3s.io.read_movie` opens.
    key : str, optional
        HDF5/Zarr dataset, for files holding several.
    channel, plane : int, optional
        Channel / z-plane of a TIFF holding several (:func:`astro3s.io.read_movie`); named in the
        layer's name and kept in its metadata, so that a run on the layer reads the same movie.

    Returns
    -------
    (data, kwargs, "image")
        ``data`` from :func:`lazy_frames`; the contrast limits come from the
        middle frame (the one frame read here), the metadata name the file and
        the frame rate.
    """
    from astro3s.io import read_movie

    path = Path(path)
    # validate=False: the viewer reads what it shows; infer_movie checks the frames before analysing them
    movie = read_movie(path, key=key, channel=channel, plane=plane, validate=False)
    # napari opens a stack on its middle frame, (T - 1) // 2: the frame read here is the one shown first
    middle = movie[(movie.n_frames - 1) // 2]
    name = path.stem if path.suffix else path.name
    chosen = [f"{option} {value}" for option, value in (("channel", channel), ("plane", plane)) if value is not None]
    kwargs = {"name": f"{name} [{', '.join(chosen)}]" if chosen else name, "contrast_limits": _contrast(middle),
              "colormap": "gray", "rgb": False, "multiscale": False,
              "metadata": {MOVIE_KEY: str(path), "fs": movie.fs, "key": key, "channel": channel, "plane": plane}}
    return lazy_frames(movie), kwargs, "image"


def read_movie_path(path: str | list[str]) -> list[LayerData]:
    """Reader function of movies (see :func:`movie_layer`): one layer per channel and z-plane of the file."""
    from astro3s.io import movie_choices

    path = _single(path)
    return [movie_layer(path, **choice) for choice in movie_choices(path)]


# --------------------------------------------------------------------------- result folders


def load_summary(folder: str | Path) -> dict[str, Any]:
    """``folder/summary.json`` as a dict.

    Raises
    ------
    InputError
        Missing, unreadable or not a JSON object.
    """
    from astro3s.inference.outputs import read_summary

    return read_summary(folder, fix="open a folder written by astro3s-infer.")


def summary_movie(summary: dict[str, Any], folder: str | Path) -> Path | None:
    """The movie a result folder was made from, if it is still there.

    ``summary.json`` records the path as given to ``astro3s-infer``, which may
    be relative to where it ran: it is tried as it is, then from the folder
    holding ``out/`` (``out/<stem>/`` sits two levels below it).
    """
    recorded = summary.get("movie")
    if not recorded:
        return None
    path = Path(recorded)
    candidates = [path] if path.is_absolute() else [path, Path(folder).resolve().parent.parent / path]
    return next((p for p in candidates if p.exists()), None)


def _flat(row: dict[str, Any]) -> dict[str, Any]:
    """One cell row of ``summary.json`` as flat scalar columns.

    ``centroid_yx`` becomes ``centroid_y``/``centroid_x``, a nested dict
    (``n_events``) ``n_events_soma``, ...; other lists are left out, as a
    features table holds one value per cell and column.
    """
    out: dict[str, Any] = {}
    for name, value in row.items():
        if name == "centroid_yx" and isinstance(value, list | tuple) and len(value) == 2:
            out["centroid_y"], out["centroid_x"] = value
        elif isinstance(value, dict):
            out.update({f"{name}_{k}": v for k, v in value.items() if not isinstance(v, dict | list)})
        elif not isinstance(value, list | tuple):
            out[name] = np.nan if value is None else value
    return out


def cell_features(summary: dict[str, Any]) -> Any:
    """The per-cell table of ``summary.json`` as a pandas DataFrame with ``index`` = cell id.

    napari matches a label value to the row whose ``index`` equals it, so the
    table needs no row for the background.
    """
    import pandas as pd

    rows = [_flat(cell) for cell in summary.get("cells") or [] if isinstance(cell, dict) and "id" in cell]
    table = pd.DataFrame(rows)
    if table.empty:
        return pd.DataFrame({"index": pd.Series([], dtype=int)})
    table = table.rename(columns={"id": "index"})
    return table[["index", *(c for c in table.columns if c != "index")]]


def result_layers(folder: str | Path, *, with_image: bool = True) -> list[LayerData]:
    """The layers of an ``astro3s-infer`` output folder.

    Parameters
    ----------
    folder : str or Path
        ``out/<stem>/`` holding ``summary.json``, ``soma.tif``,
        ``processes.tif`` and ``domains.tif``.
    with_image : bool
        Add the mean image of the movie (left out when the movie named in
        ``summary.json`` is gone).

    Returns
    -------
    list of (data, kwargs, layer_type)
        The mean image (``"<name> mean"``), then the Labels layers
        ``domains``, ``processes`` and ``soma`` (uint16, shared cell ids),
        each with the per-cell features and ``metadata[RESULT_KEY]`` = the
        folder.
    """
    from astro3s.io import mean_image, read_labels

    folder = Path(folder).resolve()
    summary = load_summary(folder)
    metadata = {RESULT_KEY: str(folder), "n_cells": summary.get("n_cells")}
    layers: list[LayerData] = []
    movie = summary_movie(summary, folder) if with_image else None
    if movie is not None:
        image = mean_image(movie, key=summary.get("key"), channel=summary.get("channel"), plane=summary.get("plane"),
                           max_frames=MEAN_FRAMES, validate=False)
        layers.append((image, {"name": f"{summary.get('name', folder.name)} mean", "colormap": "gray",
                               "contrast_limits": _contrast(image), "metadata": {**metadata, MOVIE_KEY: str(movie)}},
                       "image"))
    features = cell_features(summary)
    for name, opacity in LABEL_LAYERS.items():
        labels = read_labels(folder / f"{name}.tif")
        layers.append((labels, {"name": name, "opacity": opacity, "features": features.copy(),
                                "metadata": dict(metadata)}, "labels"))
    return layers


def read_result_folder(path: str | list[str]) -> list[LayerData]:
    """Reader function of result folders (see :func:`result_layers`)."""
    return result_layers(_single(path))
