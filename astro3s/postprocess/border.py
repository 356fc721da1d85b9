"""Cells cut by the FOV's border: how much of a soma the field of view holds.

An annotator draws a soma the FOV's edge cuts when most of it is inside,
and leaves out a sliver of one that lies mostly outside: of the ~1500
consensus somata of ASTRA's D1, D3 and D4 annotations
(``../shared/data/astra_annotations``), 20 touch the FOV's edge, and all
but one (a 16-px D3 soma) reach into the FOV at least as deep as half
their width along the edge, i.e. hold at least half a disc. The network,
trained on whole cells, draws such slivers as cells all the same.
"""

from __future__ import annotations

import numpy as np

__all__ = ["apparent_soma_radii", "border_depth_ratio", "border_slivers"]


def border_depth_ratio(soma: np.ndarray) -> np.ndarray:
    """How deep each soma reaches into the FOV from the edge it touches, over half its width there.

    For each side of the FOV a soma touches, ``depth / (chord / 2)``:
    ``chord`` is the number of its pixels in the FOV's outermost row or
    column on that side, ``depth`` how many rows (columns) in from that
    side its pixels reach. A disc cut by a straight edge gives 1 when
    exactly half of it is inside, less when less is, more when more is;
    a soma inside the FOV that only grazes the edge gives a large value.
    The smallest value over the sides touched is returned (a corner cell
    is judged by its worse side; its quarter shape is not modelled).

    Parameters
    ----------
    soma : ndarray of int, shape (H, W)
        Soma labels ``1..n`` (0 background).

    Returns
    -------
    ratio : ndarray of float64, shape (n,)
        Cell ``k`` at index ``k - 1``; ``inf`` for a soma that touches no edge.

    Examples
    --------
    >>> soma = np.zeros((20, 20), np.int32)
    >>> soma[0:3, 5:15] = 1                      # a flat sliver on the top edge: depth 3, chord 10
    >>> soma[8:12, 8:12] = 2                     # inside
    >>> border_depth_ratio(soma)
    array([0.6, inf])
    """

    labels = np.asarray(soma)
    n = int(labels.max(initial=0))
    ratio = np.full(n, np.inf)
    if n == 0:
        return ratio
    height, width = labels.shape
    first_row, stop_row, first_col, stop_col = _spans(labels, n)
    sides = ((labels[0], stop_row), (labels[-1], height - first_row),
             (labels[:, 0], stop_col), (labels[:, -1], width - first_col))
    for line, depth in sides:  # loop over the four sides
        chord = np.bincount(line.ravel().astype(np.int64), minlength=n + 1)[1:]
        side_ratio = np.where(chord > 0, depth / np.maximum(chord / 2.0, 1e-9), np.inf)
        ratio = np.minimum(ratio, side_ratio)
    return ratio


def _spans(labels: np.ndarray, n: int) -> np.ndarray:
    """Per cell ``1..n``, the rows and columns its pixels span, ``[first, stop)``: int64 ``(4, n)`` as
    first row, stop row, first column, stop column; a missing id spans nothing (``(H, 0, W, 0)``)."""
    from scipy import ndimage as ndi

    height, width = labels.shape
    boxes = ndi.find_objects(labels, max_label=n)
    return np.array([(box[0].start, box[0].stop, box[1].start, box[1].stop) if box is not None
                     else (height, 0, width, 0) for box in boxes], np.int64).reshape(-1, 4).T


def border_slivers(soma: np.ndarray, *, min_ratio: float = 1.0) -> np.ndarray:
    """Somata the FOV's edge cuts to less than half a disc (:func:`border_depth_ratio` under ``min_ratio``).

    Parameters
    ----------
    soma : ndarray of int, shape (H, W)
        Soma labels ``1..n`` (0 background).
    min_ratio : float
        Least depth over half the chord a soma touching the edge keeps; 0 flags none.

    Returns
    -------
    ndarray of bool, shape (n,)
        Cell ``k`` at index ``k - 1``.
    """
    return border_depth_ratio(soma) < float(min_ratio)


def apparent_soma_radii(soma: np.ndarray) -> np.ndarray:
    """Each soma's radius, read from its extent along the FOV's edge when the edge cuts it.

    A soma inside the FOV has the radius of a disc of its area,
    ``sqrt(area / pi)``. The edge hides part of a soma it cuts, so its area
    reads small (half a disc: ``r / sqrt(2)``), while its extent along the
    edge is still its width as long as half of it or more is inside: such a
    soma's radius is the larger of the two, ``max(sqrt(area / pi), extent / 2)``
    (the extent along every side it touches; a sliver's extent is its chord,
    shorter than its width, so its radius stays underestimated).

    Parameters
    ----------
    soma : ndarray of int, shape (H, W)
        Soma labels ``1..n`` (0 background).

    Returns
    -------
    radii : ndarray of float64, shape (n,)
        Cell ``k`` at index ``k - 1`` (px); 0 for an id without pixels.

    Examples
    --------
    >>> yy, xx = np.mgrid[:40, :40]
    >>> soma = (np.hypot(yy - 0, xx - 20) <= 10).astype(np.int32)   # half a disc of radius 10 on the top edge
    >>> round(float(apparent_soma_radii(soma)[0]), 1)
    10.5
    """
    labels = np.asarray(soma)
    n = int(labels.max(initial=0))
    if n == 0:
        return np.zeros(0)
    radii = np.sqrt(np.bincount(labels.ravel().astype(np.int64), minlength=n + 1)[1:] / np.pi)
    height, width = labels.shape
    first_row, stop_row, first_col, stop_col = _spans(labels, n)
    # the extent along each side a soma touches: its columns on the top or bottom, its rows on the left or right
    along_rows_edge = np.where((first_row == 0) | (stop_row == height), stop_col - first_col, 0)
    along_cols_edge = np.where((first_col == 0) | (stop_col == width), stop_row - first_row, 0)
    return np.maximum(radii, np.maximum(along_rows_edge, along_cols_edge) / 2.0)
