"""Look-alikes among the cells found: a small classifier over what the summary image shows of each cell.

The network sees one contrast-equalised image, in which a faint patch of
neuropil texture, a soft blob or a fragment can take the shape of a soma. The
un-enhanced median image tells them apart better, cell by cell and relative to
the other cells of the same FOV (so that no absolute brightness, size or
point-spread function is assumed):

- ``relative_area``: log of the soma area over the FOV's typical soma area;
- ``contrast``: the soma's mean over a ring 2-6 px around it (other cells
  excluded), in standard deviations of that ring;
- ``relative_brightness``: log of the soma's brightness above the FOV's
  background (median of the pixels outside every cell) over the typical
  soma's;
- ``relative_blur``: the soma edge blur (:func:`~astro3s.postprocess.sharpness.soma_edge_blur`)
  over the FOV's typical soma's;
- ``process_ratio``: process area over soma area.

The FOV's typical soma is the median over its *reference* cells: those
whose contrast is at least the median contrast of the FOV's cells (the more
clearly visible half; ``LookalikeModel.reference_quantile``). With the
median over every cell, a FOV holding as many look-alikes as cells compared
each look-alike with a typical "soma" that was half look-alike, and kept it.

A logistic model over these (:class:`LookalikeModel`) was fitted on
development movies of the training simulator, whose look-alikes are known
(``experiments/fit_lookalike_model.py``, which also regenerates the shipped
``astro3s/resources/lookalike_model.json``), with its threshold just below
the score of every true cell there (on those movies it then removes 18 of
their 176 false cells and none of their 509 true ones). It needs a few cells
per FOV for its relative features (``min_cells``).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["CELL_FEATURES", "LookalikeModel", "cell_features", "default_lookalike_model", "elongated_somata",
           "ragged_somata", "remove_lookalikes", "soma_elongation", "soma_solidity"]

CELL_FEATURES = ("relative_area", "contrast", "relative_brightness", "relative_blur", "process_ratio")
DEFAULT_MODEL_PATH = Path(__file__).resolve().parents[1] / "resources" / "lookalike_model.json"


def cell_features(image: np.ndarray, soma: np.ndarray, processes: np.ndarray, *,
                  reference_quantile: float | None = None) -> np.ndarray:
    """The :data:`CELL_FEATURES` of every cell of a FOV.

    Parameters
    ----------
    image : ndarray of float, shape (H, W)
        Temporal median image, not contrast-equalised.
    soma, processes : ndarray of int, shape (H, W)
        Label images sharing ids ``1..n``.
    reference_quantile : float in [0, 1] or None
        The relative features compare each cell with the medians over the cells
        whose contrast is at least this quantile of the FOV's contrasts; None
        (or 0): with the medians over every cell.

    Returns
    -------
    features : ndarray of float64, shape (n, 5)
        Row ``k - 1`` for cell ``k``, columns in :data:`CELL_FEATURES` order;
        a cell with no ring pixels has contrast 0, one whose blur is undefined
        a relative blur of 1.
    """
    from scipy import ndimage as ndi

    from astro3s.postprocess.sharpness import soma_edge_blur

    img = np.asarray(image, dtype=np.float64)
    labels = np.asarray(soma).astype(np.int64)
    n = int(labels.max(initial=0))
    if n == 0:
        return np.zeros((0, len(CELL_FEATURES)))
    index = np.arange(1, n + 1)
    area = np.maximum(np.bincount(labels.ravel(), minlength=n + 1)[1:], 1).astype(np.float64)
    process_area = np.bincount(np.asarray(processes).astype(np.int64).ravel(), minlength=n + 1)[1:n + 1]
    in_cell = (labels > 0) | (np.asarray(processes) > 0)
    # the ring of each soma: 2-6 px out, outside every cell, owned by the nearest soma
    distance, (iy, ix) = ndi.distance_transform_edt(labels == 0, return_indices=True)
    ring = np.where((distance >= 2) & (distance <= 6) & ~in_cell, labels[iy, ix], 0)
    with np.errstate(invalid="ignore", divide="ignore"):
        inside = np.asarray(ndi.mean(img, labels, index))
        around = np.asarray(ndi.mean(img, ring, index))
        spread = np.asarray(ndi.standard_deviation(img, ring, index))
        contrast = np.where(np.isfinite(around), (inside - around) / (spread + 1e-6), 0.0)
    background = float(np.median(img[~in_cell])) if (~in_cell).any() else float(np.median(img))
    brightness = np.maximum(inside - background, 1e-3)
    reference = np.ones(n, bool)
    if reference_quantile is not None:
        reference = contrast >= np.quantile(contrast, float(reference_quantile))
    blur = soma_edge_blur(img, labels)
    finite = np.isfinite(blur)
    relative_blur = np.ones(n)
    if (finite & reference).any():
        relative_blur[finite] = blur[finite] / float(np.median(blur[finite & reference]))
    typical_inside = float(np.median(inside[reference]))
    return np.column_stack([np.log(area / np.median(area[reference])), contrast,
                            np.log(brightness / max(typical_inside - background, 1e-3)),
                            relative_blur, process_area / area])


@dataclass(frozen=True)
class LookalikeModel:
    """A logistic score over standardised :data:`CELL_FEATURES`; cells scoring below ``threshold`` go.

    Attributes
    ----------
    mean, scale, weights : tuple of float
        Per feature, in :data:`CELL_FEATURES` order.
    bias, threshold : float
    min_cells : int
        FOVs with fewer cells are left alone (no reliable relative features).
    reference_quantile : float or None
        Which cells define the FOV's typical soma for the relative features
        (``cell_features(reference_quantile=...)``); the model is only valid
        with the features it was fitted on. None: every cell (files written
        before 2026-12-03's refit).
    fitted_on : str
        Which movies the model was fitted on (provenance).
    """

    mean: tuple[float, ...]
    scale: tuple[float, ...]
    weights: tuple[float, ...]
    bias: float
    threshold: float
    min_cells: int = 3
    reference_quantile: float | None = None
    fitted_on: str = ""

    def score(self, features: np.ndarray) -> np.ndarray:
        """Logit of "a true cell" per row of ``features`` (shape (n, 5)), float64 (n,)."""
        z = (np.asarray(features, dtype=np.float64) - np.asarray(self.mean)) / np.asarray(self.scale)
        return z @ np.asarray(self.weights) + float(self.bias)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready fields, with the feature names."""
        return {"features": list(CELL_FEATURES), "mean": list(self.mean), "scale": list(self.scale),
                "weights": list(self.weights), "bias": self.bias, "threshold": self.threshold,
                "min_cells": self.min_cells, "reference_quantile": self.reference_quantile,
                "fitted_on": self.fitted_on}

    @classmethod
    def from_file(cls, path: str | Path) -> LookalikeModel:
        """Read a model written by :meth:`to_dict` (``experiments/fit_lookalike_model.py``).

        Raises
        ------
        InputError
            The file is missing, not JSON, or for other features.
        """
        from astro3s.errors import InputError

        path = Path(path)
        fix = "regenerate it with python experiments/fit_lookalike_model.py"
        try:
            data = json.loads(path.read_text())
        except (OSError, ValueError) as exc:
            raise InputError(path, f"cannot read the look-alike model ({exc}).", fix) from exc
        if tuple(data.get("features", ())) != CELL_FEATURES:
            raise InputError(path, f"the model is for features {data.get('features')}, not {list(CELL_FEATURES)}.",
                             fix)
        quantile = data.get("reference_quantile")
        return cls(mean=tuple(data["mean"]), scale=tuple(data["scale"]), weights=tuple(data["weights"]),
                   bias=float(data["bias"]), threshold=float(data["threshold"]),
                   min_cells=int(data.get("min_cells", 3)),
                   reference_quantile=None if quantile is None else float(quantile),
                   fitted_on=str(data.get("fitted_on", "")))


def default_lookalike_model() -> LookalikeModel:
    """The shipped model (``astro3s/resources/lookalike_model.json``)."""
    return LookalikeModel.from_file(DEFAULT_MODEL_PATH)


def remove_lookalikes(seg: Any, image: np.ndarray, *, model: LookalikeModel | None = None) -> Any:
    """Drop the cells the look-alike model scores below its threshold.

    Parameters
    ----------
    seg : Segmentation
    image : ndarray of float, shape (H, W)
        The FOV's median image, not contrast-equalised, of ``seg``'s shape.
    model : LookalikeModel, optional
        Default: :func:`default_lookalike_model`.

    Returns
    -------
    Segmentation
        The remaining cells renumbered ``1..m``; ``counts["lookalikes_removed"]``
        says how many went (0 with fewer than ``model.min_cells`` cells).
    """
    from astro3s.postprocess.combine import remove_cells

    model = default_lookalike_model() if model is None else model
    drop = np.zeros(seg.n_cells, bool)
    if seg.n_cells >= model.min_cells:
        features = cell_features(image, seg.soma, seg.processes, reference_quantile=model.reference_quantile)
        drop = model.score(features) < model.threshold
    return remove_cells(seg, drop, count_key="lookalikes_removed")


def soma_solidity(soma: np.ndarray) -> np.ndarray:
    """Each soma's area over the area of its convex hull (both in pixels, as ``skimage.measure.regionprops``).

    Parameters
    ----------
    soma : ndarray of int, shape (H, W)
        Soma labels ``1..n`` (0 background).

    Returns
    -------
    solidity : ndarray of float64, shape (n,)
        In (0, 1]; 1.0 for an id with no pixel.

    Examples
    --------
    >>> soma = np.zeros((9, 9), np.int32); soma[1:8, 1:8] = 1; soma[3:6, 3:8] = 0
    >>> round(float(soma_solidity(soma)[0]), 2)
    0.69
    """
    return _per_soma(soma, lambda region: float(region.solidity))  # a convex hull per soma (its box only)


def soma_elongation(soma: np.ndarray) -> np.ndarray:
    """Each soma's elongation: the major over the minor axis of its inertia ellipse (``skimage.measure.regionprops``).

    Parameters
    ----------
    soma : ndarray of int, shape (H, W)
        Soma labels ``1..n`` (0 background).

    Returns
    -------
    elongation : ndarray of float64, shape (n,)
        At least 1; ``inf`` for a soma one pixel thin (minor axis 0), 1.0 for an id with no pixel.

    Examples
    --------
    >>> soma = np.zeros((9, 30), np.int32); soma[3:6, 2:28] = 1
    >>> float(soma_elongation(soma)[0]) > 8
    True
    """
    def ratio(region) -> float:
        minor = float(region.axis_minor_length)
        return float(region.axis_major_length) / minor if minor > 0 else np.inf

    return _per_soma(soma, ratio)


def _per_soma(soma: np.ndarray, measure) -> np.ndarray:
    """``measure(region)`` of each soma's ``skimage.measure.regionprops`` region, float64 (n,); 1.0 where an id
    has no pixel."""
    from skimage.measure import regionprops

    labels = np.asarray(soma).astype(np.int32)
    out = np.ones(int(labels.max(initial=0)), np.float64)
    for region in regionprops(labels):  # a loop over somata
        out[region.label - 1] = measure(region)
    return out


def elongated_somata(soma: np.ndarray, *, max_elongation: float) -> np.ndarray:
    """Somata more elongated (:func:`soma_elongation`) than ``max_elongation``.

    ASTRA's experts draw roundish somata: of the 1526 consensus somata of D1-D4
    and the ~2500 of the three annotators none is more than 3.82 times as long
    as it is wide (the median 1.4; ``tests/test_elongated_somata.py`` checks the
    consensus files). A "soma" longer than that is a stretch of a fibre or of a
    process the network took for one (the cross-check's high-zoom FOVs, whose
    background is crossed by straight fibres).

    Parameters
    ----------
    soma : ndarray of int, shape (H, W)
        Soma labels ``1..n``.
    max_elongation : float
        0 or ``inf``: none flagged.

    Returns
    -------
    ndarray of bool, shape (n,)
    """
    labels = np.asarray(soma).astype(np.int32)
    n = int(labels.max(initial=0))
    if n == 0 or not 0 < max_elongation < np.inf:
        return np.zeros(n, bool)
    return soma_elongation(labels) > float(max_elongation)


def ragged_somata(soma: np.ndarray, *, min_solidity: float, max_area: float) -> np.ndarray:
    """Somata of at most ``max_area`` px whose solidity (:func:`soma_solidity`) is under ``min_solidity``.

    ASTRA's experts draw compact somata: of the 1526 consensus somata of D1-D4
    one has a solidity under 0.75 (the 0.5th percentile is 0.80 on D1 and
    0.86-0.87 on D2-D4). A "soma" as ragged as that is a patch of texture the
    network took for one. Larger somata (high zoom, ~3000 px) are left out:
    there the outline drawn keeps the bases of thick processes.

    Parameters
    ----------
    soma : ndarray of int, shape (H, W)
        Soma labels ``1..n``.
    min_solidity, max_area : float

    Returns
    -------
    ndarray of bool, shape (n,)
    """
    labels = np.asarray(soma).astype(np.int32)
    area = np.bincount(labels.ravel(), minlength=int(labels.max(initial=0)) + 1)[1:]
    small = (area > 0) & (area <= float(max_area))
    if not small.any() or min_solidity <= 0:
        return np.zeros(area.size, bool)
    return small & (soma_solidity(labels) < float(min_solidity))
