"""Ground truth drawn the way ASTRA's annotators draw it.

* soma: the in-focus soma cross-section, the pixels where the soma's projected
  (and laterally blurred) in-focus weight is at least half its maximum;
* processes: the skeleton of the branches that are in focus (axial weight >= 0.5)
  and still connected to the soma through in-focus parts, drawn at the
  annotators' width :func:`annotator_width`, soma pixels excluded;
* processes_thin: the same skeleton 2 px wide.

Pixels two cells contend for go to the nearer soma; a cell cut by the FOV
border is truth when at least half its soma lies inside.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from astro3s.crosscheck.cells3d import Tree


def annotator_width(soma_area: float) -> float:
    """Width (px) at which annotators draw a cell's processes, from its soma area (px).

    ``5.3 * (A / 223) ** 0.26`` clipped to [3, 12] px (medians of real consensus
    annotations: 5.3 px on D1 with ~223 px somata, 10.1 px on D2 with ~3000 px somata).
    """
    return float(np.clip(5.3 * (max(float(soma_area), 1e-9) / 223.0) ** 0.26, 3.0, 12.0))


def traced_polylines(tree: Tree, fwhm_z: float, visible: np.ndarray) -> list[np.ndarray]:
    """The parts of a tree an annotator traces from the soma outward.

    A point is traced when it is in focus (``|z| <= fwhm_z / 2``, axial weight
    >= 0.5), bright enough to be seen (``visible``), and every point between it
    and the soma is traced: a branch is followed until it first fades.

    Parameters
    ----------
    tree : Tree
    fwhm_z : float
        Axial FWHM, px.
    visible : ndarray of bool, shape (N,)
        Points bright enough to be seen (:func:`process_contrast` over a threshold).

    Returns
    -------
    polylines : list of ndarray of float, shape (n, 2)
        (x, y) canvas coordinates; a branch starts at its parent's branch point.
    """
    ok = (np.abs(tree.xyz[:, 2]) <= 0.5 * fwhm_z) & visible
    traced = np.zeros(len(ok), bool)
    lines = []
    for start, stop, parent in zip(tree.seg_start, tree.seg_stop, tree.seg_parent):
        if parent >= 0 and not traced[parent]:
            continue
        bad = np.flatnonzero(~ok[start:stop])
        end = start + (bad[0] if bad.size else stop - start)
        traced[start:end] = True
        pts = tree.xyz[start:end, :2]
        if parent >= 0:
            pts = np.concatenate([tree.xyz[parent, None, :2], pts])
        if len(pts) >= 2:
            lines.append(pts)
    return lines


def process_contrast(tree: Tree, fwhm_z: float, gain: float, psf_sigma: float, sheath: float = 0.0) -> np.ndarray:
    """Peak brightness of each tree point's process in the image, relative to a thick in-focus soma.

    A process at depth z projects a line whose peak is its cross-section
    (:func:`~astro3s.crosscheck.cells3d.tube_section`) x axial weight x ``gain``,
    spread over a Gaussian of sd sqrt((r / 2)^2 + psf_sigma^2), divided by the
    projected brightness of a thick soma (:func:`~astro3s.crosscheck.optics.axial_integral`).

    Returns
    -------
    contrast : ndarray of float, shape (N,)
    """
    from astro3s.crosscheck.cells3d import tube_section
    from astro3s.crosscheck.optics import axial_integral, axial_weight

    r = tree.radius
    spread = np.sqrt(2 * np.pi * ((r / 2) ** 2 + psf_sigma ** 2))
    section = tube_section(r, sheath)
    return gain * section * axial_weight(tree.xyz[:, 2], fwhm_z) / (spread * axial_integral(fwhm_z))


def rasterise(polylines: list[np.ndarray], box: tuple[int, int, int, int]) -> np.ndarray:
    """One-pixel skeleton of ``polylines`` in ``box`` -> bool (h, w).

    Each segment is sampled every 0.25 px and the samples rounded to pixels.
    """
    y0, x0, h, w = box
    out = np.zeros((h, w), bool)
    for pts in polylines:
        seg = np.diff(pts, axis=0)
        n = np.maximum(1, np.ceil(np.hypot(seg[:, 0], seg[:, 1]) / 0.25)).astype(int)
        frac = np.concatenate([np.arange(k) / k for k in n])
        base = np.repeat(np.arange(len(seg)), n)
        dense = np.concatenate([pts[base] + seg[base] * frac[:, None], pts[-1:]])
        col = np.rint(dense[:, 0]).astype(int) - x0
        row = np.rint(dense[:, 1]).astype(int) - y0
        inside = (row >= 0) & (row < h) & (col >= 0) & (col < w)
        out[row[inside], col[inside]] = True
    return out


@dataclass
class CellTruth:
    """What :func:`assemble_truth` needs of one truth-candidate cell (canvas coordinates)."""

    box: tuple[int, int, int, int]  # (y0, x0, h, w)
    soma: np.ndarray  # bool (h, w): half-maximum cross-section
    skeleton: np.ndarray  # bool (h, w)
    centre: tuple[float, float]  # (x, y)


def _box_slices(box: tuple[int, int, int, int], shape: tuple[int, int]):
    """Canvas and box slices of the part of ``box`` inside a canvas of ``shape``."""
    y0, x0, h, w = box
    ya, xa = max(0, y0), max(0, x0)
    yb, xb = min(shape[0], y0 + h), min(shape[1], x0 + w)
    if yb <= ya or xb <= xa:
        return None
    return (slice(ya, yb), slice(xa, xb)), (slice(ya - y0, yb - y0), slice(xa - x0, xb - x0))


def _centre_distance(cell: CellTruth, canvas_sl) -> np.ndarray:
    rows = np.arange(canvas_sl[0].start, canvas_sl[0].stop)[:, None]
    cols = np.arange(canvas_sl[1].start, canvas_sl[1].stop)[None, :]
    return np.hypot(cols - cell.centre[0], rows - cell.centre[1])


def _paint(masks: list[np.ndarray], cells: list[CellTruth], ids: list[int], shape: tuple[int, int],
           offsets: list[float]) -> np.ndarray:
    """Labels of several cells' masks; contested pixels go to the nearest centre (minus ``offsets``)."""
    labels = np.zeros(shape, np.int32)
    best = np.full(shape, np.inf)
    for mask, cell, k, off in zip(masks, cells, ids, offsets):
        sl = _box_slices(cell.box, shape)
        if sl is None:
            continue
        canvas_sl, box_sl = sl
        d = _centre_distance(cell, canvas_sl) - off
        win = mask[box_sl] & (d < best[canvas_sl])
        best[canvas_sl][win] = d[win]
        labels[canvas_sl][win] = k
    return labels


def _traced_pieces(proc: np.ndarray, soma: np.ndarray, skeleton: np.ndarray, min_length: float) -> np.ndarray:
    """Pixels of ``proc`` an annotator keeps: 8-connected pieces within one pixel of ``soma`` whose
    skeleton outside the soma is at least ``min_length`` px (no stub shorter than the brush).

    Parameters
    ----------
    proc, soma, skeleton : ndarray of bool, shape (h, w)
    min_length : float

    Returns
    -------
    keep : ndarray of bool, shape (h, w)
    """
    from scipy.ndimage import binary_dilation, label

    comp, n = label(proc, structure=np.ones((3, 3)))
    if n == 0:
        return proc
    near = binary_dilation(soma, structure=np.ones((3, 3)), iterations=2)
    keep = np.zeros(n + 1, bool)
    keep[np.unique(comp[near & proc])] = True
    length = np.bincount(comp[skeleton & proc], minlength=n + 1)
    keep &= length >= min_length
    keep[0] = False
    return keep[comp]


def _process_masks(cells: list[CellTruth], areas: list[float]) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """Annotator-width and 2-px-wide masks of each cell's skeleton (box arrays)."""
    from scipy.ndimage import distance_transform_edt

    wide, thin = [], []
    for cell, area in zip(cells, areas):
        skel = cell.skeleton
        if skel.any():
            wide.append(distance_transform_edt(~skel) <= annotator_width(area) / 2.0)
        else:
            wide.append(skel.copy())
        t = skel.copy()
        t[1:, :] |= skel[:-1, :]
        t[:, 1:] |= t[:, :-1]
        thin.append(t)
    return wide, thin


def assemble_truth(cells: list[CellTruth], canvas: tuple[int, int], margin: int,
                   fov: tuple[int, int]) -> tuple[np.ndarray, np.ndarray, np.ndarray, list[int]]:
    """Label images of the truth cells, cropped to the FOV.

    Parameters
    ----------
    cells : list of CellTruth
        Truth candidates (in-focus somata), canvas coordinates.
    canvas : (int, int)
        Canvas (H + 2 margin, W + 2 margin).
    margin : int
    fov : (int, int)
        (H, W).

    Returns
    -------
    soma, processes, processes_thin : ndarray of uint16, shape (H, W)
        0 background, cells 1..n (same ids in all three), soma and processes disjoint.
    kept : list of int
        Index into ``cells`` of truth cell 1, 2, ... n.
    """
    ids = list(range(1, len(cells) + 1))
    soma = _paint([c.soma for c in cells], cells, ids, canvas, [0.0] * len(cells))
    fov_sl = (slice(margin, margin + fov[0]), slice(margin, margin + fov[1]))
    total = np.bincount(soma.ravel(), minlength=len(cells) + 1)
    inside = np.bincount(soma[fov_sl].ravel(), minlength=len(cells) + 1)
    ok = [k for k in ids if total[k] >= 4 and inside[k] >= 0.5 * total[k]]
    soma[~np.isin(soma, ok)] = 0
    kept_cells = [cells[k - 1] for k in ok]
    areas = [float(total[k]) for k in ok]
    wide, thin = _process_masks(kept_cells, areas)
    radii = [np.sqrt(a / np.pi) for a in areas]
    proc = _paint(wide, kept_cells, ok, canvas, radii)
    proc[soma > 0] = 0
    outside = np.ones(canvas, bool)
    outside[fov_sl] = False
    proc[outside] = 0  # a piece must join its soma inside the FOV, where the annotator sees it
    soma[outside] = 0
    thin_lab = _paint(thin, kept_cells, ok, canvas, radii)
    for cell, k, area in zip(kept_cells, ok, areas):
        sl = _box_slices(cell.box, canvas)
        if sl is None:
            continue
        canvas_sl, box_sl = sl
        mine = proc[canvas_sl] == k
        drop = mine & ~_traced_pieces(mine, soma[canvas_sl] == k, cell.skeleton[box_sl], annotator_width(area))
        proc[canvas_sl][drop] = 0
    thin_lab[(thin_lab != proc)] = 0
    lut = np.zeros(len(cells) + 1, np.uint16)
    lut[ok] = np.arange(1, len(ok) + 1)
    crop = [lut[a[fov_sl]] for a in (soma, proc, thin_lab)]
    return crop[0], crop[1], crop[2], [k - 1 for k in ok]
