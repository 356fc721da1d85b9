"""The file of a pre-processing result: ``preprocessed.npz``.

Layout (format version 1), one ``.npz`` written by :func:`save_preprocessed`:

- the arrays of :class:`~astro3s.preprocess.result.Preprocessed` under their
  names (``_ARRAYS``: shifts, reference, mean_image, enhanced, activity_map,
  candidates, crop_boxes, crop_masks, crops, fov_map, fov_mask), and those of
  ``_OPTIONAL_ARRAYS`` (correlation_image) when the result has them;
- ``params``: JSON of the :class:`~astro3s.preprocess.params.PreprocessParams`;
- ``meta``: JSON of ``fs``, ``shape``, ``source`` and ``format_version``;
- ``details``: JSON of ``Preprocessed.details`` (arrays as lists);
- ``fs`` (float, NaN when unknown), ``shape`` (int64, (3,)) and ``source``
  (str, "" when none) again as arrays, for readers that skip the JSON.

The corrected movie is not stored: :func:`load_preprocessed` rebuilds its lazy
handle from the original movie and the shifts.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import numpy as np

from astro3s.errors import InputError
from astro3s.preprocess._backend import resolve_device
from astro3s.preprocess.motion import CorrectedMovie, as_movie
from astro3s.preprocess.params import params_from_dict
from astro3s.preprocess.result import Preprocessed

__all__ = ["FORMAT_VERSION", "load_preprocessed", "save_preprocessed"]

log = logging.getLogger(__name__)

FORMAT_VERSION = 1
# the arrays of Preprocessed stored under their own names
_ARRAYS = ("shifts", "reference", "mean_image", "enhanced", "activity_map", "candidates", "crop_boxes",
           "crop_masks", "crops", "fov_map", "fov_mask")
# stored only when set (a network reading the correlation image as its second channel is trained on them)
_OPTIONAL_ARRAYS = ("correlation_image",)


def save_preprocessed(result: Preprocessed, path: str | Path) -> Path:
    """Write ``result`` to an ``.npz`` file atomically and return its path.

    The file holds the arrays of :class:`Preprocessed` under their names, plus
    ``params`` (JSON of the parameters), ``fs``, ``shape``, ``source`` and
    ``details`` (JSON), and ``format_version``.
    """
    from astro3s.io.atomic import atomic_path

    path = Path(path)
    meta = {"fs": result.fs, "shape": list(result.shape), "source": result.source,
            "format_version": FORMAT_VERSION}
    payload = {name: np.asarray(getattr(result, name)) for name in _ARRAYS}
    payload.update({name: np.asarray(getattr(result, name)) for name in _OPTIONAL_ARRAYS
                    if getattr(result, name, None) is not None})
    payload["params"] = np.asarray(json.dumps(result.params.to_dict()))
    payload["meta"] = np.asarray(json.dumps(meta))
    payload["details"] = np.asarray(json.dumps(result.details, default=_jsonable))
    # the figures and the loader need these too, without reading the JSON
    payload["fs"] = np.asarray(np.nan if result.fs is None else float(result.fs))
    payload["shape"] = np.asarray(result.shape, dtype=np.int64)
    payload["source"] = np.asarray("" if result.source is None else result.source)
    with atomic_path(path) as tmp, open(tmp, "wb") as handle:
        np.savez_compressed(handle, **payload)
    return path


def _jsonable(obj: Any) -> Any:
    if hasattr(obj, "tolist"):
        return obj.tolist()
    return str(obj)


def load_preprocessed(path: str | Path, *, movie: Any = None) -> Preprocessed:
    """Read a file written by :func:`save_preprocessed`.

    Parameters
    ----------
    path : str or Path
    movie : Movie or ndarray, optional
        The original movie, for ``result.corrected``; by default the file named
        in the result is opened lazily if it still exists (else ``corrected`` is None).

    Raises
    ------
    InputError
        When the file is missing, damaged or not a pre-processing result.
    """
    path = Path(path)
    try:
        with np.load(path, allow_pickle=False) as data:
            arrays = {name: data[name] for name in _ARRAYS}
            arrays.update({name: data[name] for name in _OPTIONAL_ARRAYS if name in data.files})
            params = params_from_dict(json.loads(str(data["params"])))
            meta = json.loads(str(data["meta"]))
            details = json.loads(str(data["details"]))
    except FileNotFoundError:
        raise InputError(path, "not found.", "run astro3s-preprocess first.") from None
    except (OSError, ValueError, KeyError) as err:
        raise InputError(path, f"is not a readable pre-processing result ({err}).",
                         "run astro3s-preprocess again with overwrite=true.") from None
    if meta.get("format_version", 0) > FORMAT_VERSION:
        raise InputError(path, f"was written by a newer astro3s (format {meta['format_version']}).",
                         "upgrade astro3s.")
    shape = tuple(int(s) for s in meta["shape"])
    corrected = None
    if movie is None and meta.get("source") and Path(meta["source"]).exists():
        try:
            from astro3s.io import read_movie

            # the dataset / channel / plane it was read from (details["source_options"], from Movie.open_options)
            movie = read_movie(meta["source"], fs=meta.get("fs"), **details.get("source_options", {}))
        except InputError as err:
            log.warning("corrected movie unavailable: %s", err)
    if movie is not None:
        movie = as_movie(movie)
        if tuple(movie.shape) != shape:
            raise InputError(getattr(movie, "path", None), f"has shape {tuple(movie.shape)}, but the "
                             f"pre-processing result {path} was made from a {shape} movie.")
        from astro3s.preprocess.lines import with_recorded_line_shift

        movie = with_recorded_line_shift(movie, details)  # the odd-row shift the pre-processing gave it
        corrected = CorrectedMovie(movie, arrays["shifts"], device=resolve_device(params.device))
    arrays["candidates"] = arrays["candidates"].astype(np.uint16, copy=False)
    return Preprocessed(**arrays, params=params, shape=shape, fs=meta.get("fs"), source=meta.get("source"),
                        details=details, corrected=corrected)
