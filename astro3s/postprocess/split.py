"""Instance split: one id per cell, shared by its soma and its processes.

Every soma component is one cell. A connected group of soma and process
pixels that holds one soma is that cell. A group that holds several somata
(touching cells) has to be divided; two rules:

``split_watershed`` (default)
    Floods ``1 - P(cell)`` from the somata inside the group
    (``skimage.segmentation.watershed``, markers = soma labels, mask = the
    group). A process pixel goes to the soma it is connected to through the
    most cell-like path; boundaries fall where the cell probability dips
    between two cells. With flat (e.g. one-hot) probabilities the flood is a
    breadth-first search, i.e. assignment by geodesic distance inside the
    mask. A process is never cut off by a distance limit and never given to
    a soma it is not connected to.

``split_disc`` (ASTRA, ``modules/test_fun.py`` ``gen_sc_mask``)
    Pixels within ``radius`` (40 px) of a soma's centroid (truncated to
    whole pixels) belong to that cell; pixels outside every disc are
    dropped, as are process pieces cut off from their soma. ASTRA lets
    overlapping discs share pixels and then removes from each cell the
    processes of the cell before it; here a pixel in several discs goes to
    the nearest centroid (ties to the lower id), so no pixel is in two cells.

Both are label-wise: the watershed is one call on the FOV; the disc rule
loops over the groups with several somata only, each on its bounding box.

Once split, :func:`keep_connected_to_soma` drops process pieces cut off from
their own soma and :func:`limit_process_area` keeps at most a set multiple of
each soma's area as its processes, the pixels nearest the soma;
:func:`absorb_fragment_somata` gives a "soma" far smaller than the soma it is
joined to (a swelling of that cell's process) to that cell as processes.
:func:`separate_somata` opens a one-pixel gap wherever two cells' somata
touch, so that a reading of the soma mask alone (ASTRA's score, a user's
threshold of the label image) still sees two somata.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage

from astro3s.metrics import DISC_RADIUS, label_components

__all__ = ["absorb_fragment_somata", "keep_connected_to_soma", "label_somata", "limit_process_area", "soma_centroids",
           "separate_somata", "soma_groups", "split_disc", "split_watershed"]


def label_somata(soma: np.ndarray, *, connectivity: int = 2) -> tuple[np.ndarray, int]:
    """One id per soma component.

    Parameters
    ----------
    soma : array_like of bool, shape (H, W)
    connectivity : {1, 2}

    Returns
    -------
    labels : ndarray of int32, shape (H, W)
        0 background, somata 1..n in raster order of their first pixel.
    n : int
    """
    return label_components(soma, connectivity=connectivity)


def soma_centroids(soma_labels: np.ndarray, n: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Centroid and area of every label.

    Parameters
    ----------
    soma_labels : array_like of int, shape (H, W)
        0 background, labels 1..n.
    n : int, optional
        Number of labels (default: the maximum label).

    Returns
    -------
    centroids : ndarray of float64, shape (n, 2)
        ``(y, x)`` in pixels; NaN for an empty label.
    areas : ndarray of int64, shape (n,)
    """
    labels = np.asarray(soma_labels)
    n = int(labels.max(initial=0)) if n is None else int(n)
    flat = labels.ravel().astype(np.int64)
    rows, cols = np.divmod(np.arange(flat.size), labels.shape[1])
    areas = np.bincount(flat, minlength=n + 1)[1:n + 1]
    with np.errstate(invalid="ignore", divide="ignore"):
        cy = np.bincount(flat, rows, minlength=n + 1)[1:n + 1] / areas
        cx = np.bincount(flat, cols, minlength=n + 1)[1:n + 1] / areas
    return np.stack([cy, cx], axis=1), areas


def keep_connected_to_soma(soma_labels: np.ndarray, process_labels: np.ndarray, *,
                           connectivity: int = 2) -> np.ndarray:
    """Drop process pixels cut off from the soma of their own cell.

    Parameters
    ----------
    soma_labels, process_labels : array_like of int, shape (H, W)
        Disjoint label images sharing ids.
    connectivity : {1, 2}

    Returns
    -------
    process_labels : ndarray of int32, shape (H, W)
        Each process pixel kept when a path of pixels of the same id
        (soma or process) joins it to that id's soma.
    """
    from skimage.measure import label

    soma_labels = np.asarray(soma_labels)
    cells = np.where(soma_labels > 0, soma_labels, process_labels).astype(np.int32)
    # skimage labels runs of equal value separately, so pieces of different cells stay apart
    pieces = label(cells, background=0, connectivity=connectivity)
    has_soma = np.bincount(pieces[soma_labels > 0], minlength=int(pieces.max(initial=0)) + 1) > 0
    has_soma[0] = False
    return np.where(has_soma[pieces] & (soma_labels == 0), cells, 0).astype(np.int32)


def separate_somata(soma_labels: np.ndarray) -> tuple[np.ndarray, int]:
    """Soma labels with a one-pixel gap wherever two somata touch, cut from the larger of the two.

    The output contract keeps cells apart by their ids, but ASTRA's score,
    and anyone who thresholds the soma label image, split the soma *mask*
    into 8-connected components: two somata that touch, even at one corner,
    are read as one soma of their joint area, which matches neither true
    soma (a true cell lost and a false one reported). Here every soma pixel
    that touches (8-neighbourhood) a pixel of a smaller soma (by area; at
    equal area, of a lower id) goes to the background, so the smaller soma
    keeps its outline and the larger loses one pixel row along the contact.
    A soma that the cut leaves in several pieces keeps its largest (of each
    piece it had before the cut).

    Parameters
    ----------
    soma_labels : array_like of int, shape (H, W)
        Soma ids ``1..n`` (0 background).

    Returns
    -------
    soma_labels : ndarray of int32, shape (H, W)
        The same ids; no two ids 8-adjacent.
    n_cut : int
        How many somata lost pixels.

    Examples
    --------
    >>> soma = np.zeros((5, 8), np.int32); soma[1:4, 1:4] = 1; soma[1:4, 4:7] = 2; soma[2, 7] = 2
    >>> out, n_cut = separate_somata(soma)
    >>> out[2].tolist(), n_cut
    ([0, 1, 1, 1, 0, 2, 2, 2], 1)
    """
    labels = np.asarray(soma_labels).astype(np.int32)
    n = int(labels.max(initial=0))
    if n < 2:
        return labels, 0
    area = np.bincount(labels.ravel(), minlength=n + 1)
    # rank 1..n by (area, id); the background ranks above every soma so that it never counts as smaller
    rank = np.empty(n + 1, np.int64)
    rank[1 + np.lexsort((np.arange(1, n + 1), area[1:]))] = np.arange(1, n + 1)
    rank[0] = n + 1
    ranks = rank[labels]
    smallest_near = ndimage.grey_erosion(ranks, size=(3, 3), mode="nearest")
    cut = (labels > 0) & (smallest_near < ranks)
    if not cut.any():
        return labels, 0
    out = np.where(cut, 0, labels)
    # a cut through a narrow part can leave a piece of a soma in pieces: it keeps the largest (pieces a soma
    # had before the cut stay as they were)
    from skimage.measure import label

    before = label(labels, background=0, connectivity=2)  # runs of one id each: a soma's own pieces
    pieces = label(out, background=0, connectivity=2)
    n_pieces = int(pieces.max(initial=0))
    inside = pieces > 0
    parent = np.zeros(n_pieces + 1, np.int64)
    parent[pieces[inside]] = before[inside]
    if np.unique(parent[1:]).size < n_pieces:
        size = np.bincount(pieces.ravel(), minlength=n_pieces + 1)
        order = np.lexsort((size[1:], parent[1:])) + 1  # pieces by their piece before the cut, largest last
        last = np.r_[parent[order][1:] != parent[order][:-1], True]
        keep = np.zeros(n_pieces + 1, bool)
        keep[order[last]] = True
        out = np.where(keep[pieces], out, 0).astype(np.int32)
    return out, int(np.unique(labels[cut]).size)


def limit_process_area(soma_labels: np.ndarray, process_labels: np.ndarray, *,
                       max_ratio: float) -> np.ndarray:
    """Keep at most ``max_ratio`` times each soma's area as its processes, the pixels nearest that soma.

    Annotators draw a cell's processes over 0.5-3x its soma's area (ASTRA's
    consensus annotations); where a segmentation draws more, it has followed
    branches or background texture farther than an annotator would, so the
    pixels farthest from the soma's edge (Euclidean distance to the cell's own
    soma) go first. Pieces of those cells that the cut separates from their
    soma are dropped too (:func:`keep_connected_to_soma`).

    Parameters
    ----------
    soma_labels, process_labels : array_like of int, shape (H, W)
        Disjoint label images sharing ids (0 background).
    max_ratio : float
        Most process pixels per soma pixel, > 0 (inference:
        :data:`astro3s.inference.pipeline.MAX_PROCESS_RATIO`).

    Returns
    -------
    process_labels : ndarray of int32, shape (H, W)
        A subset of ``process_labels``; cells within the limit, and processes
        whose id has no soma, are unchanged.
    """
    soma_labels = np.asarray(soma_labels)
    processes = np.asarray(process_labels).astype(np.int32)
    if max_ratio <= 0:
        raise ValueError(f"max_ratio must be > 0, got {max_ratio}")
    n = int(max(soma_labels.max(initial=0), processes.max(initial=0)))
    soma_area = np.bincount(soma_labels.ravel(), minlength=n + 1)
    allowed = np.floor(max_ratio * soma_area).astype(np.int64)
    over = np.flatnonzero((np.bincount(processes.ravel(), minlength=n + 1) > allowed) & (soma_area > 0))
    over = over[over > 0]
    if over.size == 0:
        return processes
    boxes = ndimage.find_objects(np.where(np.isin(soma_labels, over) | np.isin(processes, over),
                                          np.maximum(soma_labels, processes), 0))
    for k in over:  # loop over the cells over the limit, each on its bounding box
        box = boxes[k - 1]
        own = processes[box] == k
        to_soma = ndimage.distance_transform_edt(soma_labels[box] != k)[own]
        # the allowed count of nearest pixels stays (stable order: ties keep raster order)
        drop = np.argsort(to_soma, kind="stable")[allowed[k]:]
        rows, cols = np.nonzero(own)
        processes[box][rows[drop], cols[drop]] = 0
    # pieces the cut stranded go; other cells' processes stay as they came
    joined = keep_connected_to_soma(soma_labels, processes)
    return np.where(np.isin(processes, over), joined, processes).astype(np.int32)


def soma_groups(soma_labels: np.ndarray, processes: np.ndarray, *,
                connectivity: int = 2) -> tuple[np.ndarray, np.ndarray, int]:
    """Connected groups of soma and process pixels, and the group that holds each soma.

    Parameters
    ----------
    soma_labels : array_like of int, shape (H, W)
        Soma ids ``1..n`` (0 background).
    processes : array_like of bool or int, shape (H, W)
        Process pixels (any non-zero value).
    connectivity : {1, 2}

    Returns
    -------
    groups : ndarray of int32, shape (H, W)
        :func:`astro3s.metrics.label_components` of soma and process pixels.
    parent : ndarray of int64, shape (n + 1,)
        ``parent[k]``: the group of soma ``k`` (0 for ids without soma pixels).
    n_groups : int
    """
    soma_labels = np.asarray(soma_labels)
    soma = soma_labels > 0
    groups, n_groups = label_components(soma | (np.asarray(processes) > 0), connectivity=connectivity)
    parent = np.zeros(int(soma_labels.max(initial=0)) + 1, np.int64)
    parent[soma_labels[soma]] = groups[soma]
    return groups, parent, n_groups


def absorb_fragment_somata(soma_labels: np.ndarray, process_labels: np.ndarray, *,
                           max_ratio: float) -> tuple[np.ndarray, np.ndarray, int]:
    """Cells whose soma is far smaller than the largest soma joined to it become that cell's processes.

    The astrocytes of one FOV are imaged at one zoom, and their somata span a
    few-fold range of areas: in ASTRA's consensus annotations the smallest
    soma of a FOV is 0.26-0.6 of its largest (median over FOVs, D1/D2/D4), and
    cells whose drawings touch have somata 0.69-0.99 of each other's (one D2
    file holds a 3-px soma piece). A "soma" joined through soma or process
    pixels to one more than ``1 / max_ratio`` times larger is a swelling or
    branch point of that cell's thick process, not a cell (held-out movies on
    ASTRA's D2 layouts: 4 such fragments at 0.05-0.06 of their cell's soma,
    and no true cell under 0.28 of a joined soma on the 133 development and
    held-out movies looked at; experiments/results/heldout_ablation.md).

    Parameters
    ----------
    soma_labels, process_labels : array_like of int, shape (H, W)
        Disjoint label images sharing ids ``1..n`` (0 background).
    max_ratio : float
        In (0, 1): a soma under this fraction of the largest soma of its
        8-connected group of soma and process pixels is absorbed.

    Returns
    -------
    soma_labels, process_labels : ndarray of int32, shape (H, W)
        The fragments' soma and process pixels are processes of the group's
        largest cell; the remaining cells renumbered ``1..m`` in their order.
    absorbed : int
        How many cells were absorbed.
    """
    if not 0 < max_ratio < 1:
        raise ValueError(f"max_ratio must be in (0, 1), got {max_ratio}")
    soma = np.asarray(soma_labels).astype(np.int32)
    processes = np.asarray(process_labels).astype(np.int32)
    n = int(max(soma.max(initial=0), processes.max(initial=0)))
    area = np.bincount(soma.ravel(), minlength=n + 1)
    if np.count_nonzero(area[1:]) < 2:
        return soma, processes, 0
    # each soma's group (a soma lies in one group); the largest soma of every group
    _, group_of, n_groups = soma_groups(soma, processes)
    group_of = np.pad(group_of, (0, n + 1 - group_of.size))  # ids of processes without a soma: no group
    cells = np.flatnonzero(area[1:]) + 1
    order = cells[np.lexsort((cells, area[cells]))]  # ascending area: the last write per group wins
    largest = np.zeros(n_groups + 1, np.int64)
    largest[group_of[order]] = order
    big = largest[group_of[cells]]
    fragment = cells[(big != cells) & (area[cells] < max_ratio * area[big])]
    if fragment.size == 0:
        return soma, processes, 0
    owner = np.arange(n + 1)
    owner[fragment] = largest[group_of[fragment]]
    processes = np.where(np.isin(soma, fragment), owner[soma], owner[processes])
    soma = np.where(np.isin(soma, fragment), 0, soma)
    keep = np.ones(n + 1, bool)
    keep[fragment] = False
    keep[0] = False
    new_id = np.zeros(n + 1, np.int32)
    new_id[keep] = np.arange(1, int(keep.sum()) + 1)
    return new_id[soma], new_id[processes], int(fragment.size)


def split_watershed(soma_labels: np.ndarray, processes: np.ndarray, cell_probability: np.ndarray | None = None,
                    *, connectivity: int = 2) -> np.ndarray:
    """Give every process pixel to a soma by flooding the cell probability.

    Parameters
    ----------
    soma_labels : array_like of int, shape (H, W)
        Soma ids (the markers).
    processes : array_like of bool, shape (H, W)
    cell_probability : array_like of float, shape (H, W), optional
        ``P(soma) + P(processes)``; the flood runs on ``1 - P``. None: flat,
        i.e. assignment by geodesic distance.
    connectivity : {1, 2}

    Returns
    -------
    process_labels : ndarray of int32, shape (H, W)
        Id of the cell of each process pixel; 0 for background, soma pixels
        and process pixels connected to no soma.
    """
    from skimage.segmentation import watershed

    soma_labels = np.asarray(soma_labels).astype(np.int32, copy=False)
    processes = np.asarray(processes, dtype=bool) & (soma_labels == 0)
    if cell_probability is None:
        surface = np.zeros(soma_labels.shape, np.float32)
    else:
        surface = 1.0 - np.asarray(cell_probability, dtype=np.float32)
    flooded = watershed(surface, markers=soma_labels, mask=processes | (soma_labels > 0),
                        connectivity=connectivity)
    return np.where(processes, flooded, 0).astype(np.int32)


def split_disc(soma_labels: np.ndarray, processes: np.ndarray, *, radius: float = DISC_RADIUS,
               connectivity: int = 2) -> np.ndarray:
    """ASTRA's disc rule: process pixels of a multi-soma group go to the nearest soma centroid within ``radius``.

    Parameters
    ----------
    soma_labels : array_like of int, shape (H, W)
        Soma ids 1..n.
    processes : array_like of bool, shape (H, W)
    radius : float
        Disc radius, px (ASTRA: 40).
    connectivity : {1, 2}

    Returns
    -------
    process_labels : ndarray of int32, shape (H, W)
        Groups with one soma keep all their processes; in groups with several,
        pixels outside every disc and pieces cut off from their soma are 0.
    """
    soma_labels = np.asarray(soma_labels).astype(np.int32, copy=False)
    soma = soma_labels > 0
    processes = np.asarray(processes, dtype=bool) & ~soma
    n = int(soma_labels.max(initial=0))
    groups, parent, n_groups = soma_groups(soma_labels, processes, connectivity=connectivity)
    somata_in = np.bincount(parent[1:], minlength=n_groups + 1)

    # groups with one soma: all their processes belong to it
    owner = np.zeros(n_groups + 1, np.int32)
    single = np.flatnonzero(somata_in[parent[1:]] == 1) + 1
    owner[parent[single]] = single
    out = np.where(processes, owner[groups], 0).astype(np.int32)

    multi = np.flatnonzero(somata_in[1:] > 1) + 1
    if multi.size:
        centroids, _ = soma_centroids(soma_labels, n)
        centres = np.floor(centroids)  # ASTRA: int() of the moment centroid
        members = np.argsort(parent[1:], kind="stable") + 1  # soma ids sorted by group
        starts = np.searchsorted(parent[members], np.arange(n_groups + 2))
        boxes = ndimage.find_objects(groups)
        for g in multi:  # groups of touching cells only; work is local to each box
            box = boxes[g - 1]
            ids = members[starts[g]:starts[g + 1]]
            yy = np.arange(box[0].start, box[0].stop)[None, :, None]
            xx = np.arange(box[1].start, box[1].stop)[None, None, :]
            d2 = (yy - centres[ids - 1, 0, None, None]) ** 2 + (xx - centres[ids - 1, 1, None, None]) ** 2
            nearest = np.argmin(d2, axis=0)
            inside = np.take_along_axis(d2, nearest[None], axis=0)[0] <= radius ** 2
            here = processes[box] & (groups[box] == g) & inside
            out[box][here] = ids[nearest[here]]
    return keep_connected_to_soma(soma_labels, out, connectivity=connectivity)
