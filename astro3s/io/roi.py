"""ImageJ/Fiji RoiSet zips <-> soma and process label images.

Reading turns the ROIs of a ``RoiSet.zip`` into two ``uint16`` label images
that share one id per cell (see :func:`read_roiset` for the naming
conventions it understands); writing outlines every connected component of the
label images as one polygon ROI that Fiji opens (see :func:`write_roiset`).

Coordinates follow ImageJ: a ROI vertex ``(x, y)`` lies on the pixel grid, so
pixel ``(row, col)`` spans ``[col, col + 1) x [row, row + 1)`` and has its
centre at ``(col + 0.5, row + 0.5)``. A pixel belongs to a ROI when its centre
lies inside the polygon, which is how ImageJ fills polygon masks. Rasterising
therefore shifts vertices by -0.5 before :func:`skimage.draw.polygon`, which
tests integer pixel centres.
"""

from __future__ import annotations

import re
import zipfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np

from astro3s.errors import InputError
from astro3s.io.atomic import atomic_path

__all__ = ["Roi", "read_roiset", "read_roiset_meta", "write_roiset", "CONVENTIONS"]

#: Values accepted by ``read_roiset(convention=...)``.
CONVENTIONS = ("auto", "nearest", "order", "soma_only")

Convention = Literal["auto", "nearest", "order", "soma_only"]
Fill = Literal["imagej", "astra"]

# Any name starting with "soma" is a soma. "Soma_012", "SOMA2", "soma-3" also give
# its number; a second number marks an extra piece of that soma, as written by
# write_roiset for somata split in several pieces.
_SOMA_NAME = re.compile(r"^soma", re.IGNORECASE)
_SOMA_NUMBERS = re.compile(r"^soma[\s_-]*(\d+)(?:[\s_-]+(\d+))?\s*$", re.IGNORECASE)
# "PROC_3_07", "Proc_012_01", "proc-1-2"; a bare "proc" is an unnamed process.
_PROC_NAME = re.compile(r"^proc[\s_-]*(\d+)[\s_-]+(\d+)\s*$", re.IGNORECASE)

SOMA = "soma"
PROCESS = "process"


@dataclass(frozen=True)
class Roi:
    """One area ROI of a RoiSet, rasterised.

    Attributes
    ----------
    name : str
        The ROI name in the zip.
    index : int
        Position of the ROI in the zip (0-based).
    kind : {"soma", "process"}
        What the ROI outlines, after applying the naming convention.
    cell : int
        Cell id (>= 1) the ROI was assigned to.
    rows, cols : ndarray of intp, shape (n,)
        Pixels inside the ROI, clipped to the image shape.
    """

    name: str
    index: int
    kind: str
    cell: int
    rows: np.ndarray
    cols: np.ndarray

    @property
    def area(self) -> int:
        """Number of pixels inside the ROI (before overlaps are resolved)."""
        return int(self.rows.size)


# --------------------------------------------------------------------------- reading


def _load_rois(path: Path) -> list:
    import roifile

    if not path.exists():
        raise InputError(path, "RoiSet file not found.",
                         "check the annotation folder and the file name.")
    if path.is_dir():
        raise InputError(path, "is a folder, not an ImageJ RoiSet (.zip) or ROI (.roi) file.",
                         "pass the RoiSet.zip inside it.")
    try:
        rois = roifile.roiread(path)
    except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile, RuntimeError) as err:
        raise InputError(path, f"could not be read as an ImageJ RoiSet ({_short(err)}).",
                         "re-export the ROIs from Fiji's ROI Manager (More > Save...).") from err
    if not isinstance(rois, list):
        rois = [rois]
    return rois


def _short(err: BaseException, limit: int = 120) -> str:
    text = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _polygon_pixels(xy: np.ndarray, shape: tuple[int, int],
                    fill: str = "imagej") -> tuple[np.ndarray, np.ndarray]:
    """Rows and columns of the pixels inside an ImageJ ``(x, y)`` polygon, clipped to ``shape``."""
    from skimage.draw import polygon
    from skimage.measure import grid_points_in_poly

    xy = np.asarray(xy, dtype=np.float64)
    if fill == "imagej":
        # ImageJ vertex (x, y) -> skimage point (row, col) with pixel centres on integers
        return polygon(xy[:, 1] - 0.5, xy[:, 0] - 0.5, shape)
    # "astra": the grid point (row, col) = (y, x) is tested, boundary included,
    # as ASTRA's own scoring code does; only the polygon's bounding box is gridded
    lo = np.maximum(np.floor(xy.min(axis=0)).astype(int), 0)
    hi = np.minimum(np.ceil(xy.max(axis=0)).astype(int) + 1, [shape[1], shape[0]])
    if np.any(hi <= lo):
        return np.empty(0, np.intp), np.empty(0, np.intp)
    verts = xy[:, ::-1] - lo[::-1]
    inside = grid_points_in_poly((hi[1] - lo[1], hi[0] - lo[0]), verts, binarize=True)
    rows, cols = np.nonzero(inside)
    return rows + lo[1], cols + lo[0]


def _roi_pixels(roi, shape: tuple[int, int], path: Path,
                fill: str = "imagej") -> tuple[np.ndarray, np.ndarray]:
    """Rows and columns of the pixels inside one ImageJ ROI, clipped to ``shape``."""
    from roifile import ROI_TYPE

    area_types = {ROI_TYPE.POLYGON, ROI_TYPE.FREEHAND, ROI_TYPE.TRACED,
                  ROI_TYPE.RECT, ROI_TYPE.OVAL}
    if roi.roitype not in area_types:
        raise InputError(path, f"ROI {roi.name!r} is a {roi.roitype.name.lower()} ROI, "
                         "which outlines no area.",
                         "delete it in Fiji's ROI Manager or convert it to an area "
                         "(Edit > Selection > Line to Area).")
    if roi.multi_coordinates is not None and roi.subpixel_coordinates is None \
            and roi.integer_coordinates is None:
        # composite (ShapeRoi): sub-paths combine by the even-odd rule, so a path
        # inside another one is a hole
        inside = np.zeros(shape, dtype=bool)
        for sub in roi.coordinates(multi=True):
            if len(sub) >= 3:
                rr, cc = _polygon_pixels(sub, shape, fill)
                inside[rr, cc] ^= True
        return np.nonzero(inside)
    xy = roi.coordinates()
    if len(xy) < 3:
        return np.empty(0, np.intp), np.empty(0, np.intp)
    return _polygon_pixels(xy, shape, fill)


def _check_shape(shape: Sequence[int], path: Path) -> tuple[int, int]:
    try:
        height, width = (int(s) for s in shape)
    except (TypeError, ValueError):
        raise InputError(path, f"shape must be (height, width) of the image, got {shape!r}.",
                         "pass shape=(H, W), e.g. movie.shape[1:].") from None
    if height <= 0 or width <= 0:
        raise InputError(path, f"shape must be positive, got {shape!r}.",
                         "pass shape=(H, W), e.g. movie.shape[1:].")
    return height, width


def _check_fill(fill: str, path: Path) -> None:
    if fill not in ("imagej", "astra"):
        raise InputError(path, f"unknown polygon fill rule {fill!r}.", "use 'imagej' or 'astra'.")


def _classify(name: str) -> tuple[str | None, int | None, int | None]:
    """Return (kind, cell number, part number) that a ROI name states."""
    if _SOMA_NAME.match(name):
        numbers = _SOMA_NUMBERS.match(name)
        if numbers is None:
            return SOMA, None, None  # "SOMA", "Soma left": a soma without number
        part = int(numbers.group(2)) if numbers.group(2) is not None else None
        return SOMA, int(numbers.group(1)), part
    proc = _PROC_NAME.match(name)
    if proc:
        return PROCESS, int(proc.group(1)), int(proc.group(2))
    return None, None, None


def _nearest_cell(rows: np.ndarray, cols: np.ndarray, nearest_label: np.ndarray,
                  distance: np.ndarray) -> int:
    """Cell whose soma comes closest to any pixel of a ROI (0 if the ROI is empty)."""
    if rows.size == 0:
        return 0
    closest = np.argmin(distance[rows, cols])
    return int(nearest_label[rows[closest], cols[closest]])


def _assign(rois: list, shape: tuple[int, int], convention: str, path: Path,  # noqa: C901, PLR0915 - one branch per RoiSet naming convention
            fill: str = "imagej") -> list[Roi]:
    """Apply a naming convention: give every ROI a kind and a cell id."""
    from scipy import ndimage as ndi

    pixels = [_roi_pixels(roi, shape, path, fill) for roi in rois]
    parsed = [_classify(roi.name) for roi in rois]
    has_soma = any(kind == SOMA for kind, _, _ in parsed)
    has_named_proc = any(kind == PROCESS for kind, _, _ in parsed)

    if convention == "auto":
        # D3 annotations carry no soma names at all: every ROI outlines a soma
        convention = "nearest" if (has_soma or has_named_proc) else "soma_only"

    if convention == "soma_only":
        kept = [i for i in range(len(rois)) if pixels[i][0].size]
        return [Roi(rois[i].name, i, SOMA, cell, *pixels[i]) for cell, i in enumerate(kept, 1)]

    # --- somata: cell ids 1..N. Sorted by the number in their names when every
    # soma has a distinct one (keeps ids of files we wrote), else in file order.
    # Somata that fall wholly outside the image are dropped so that ids stay dense.
    soma_idx = [i for i, (kind, _, part) in enumerate(parsed)
                if kind == SOMA and part is None and pixels[i][0].size]
    part_idx = [i for i, (kind, _, part) in enumerate(parsed)
                if kind == SOMA and part is not None and pixels[i][0].size]
    numbers = [parsed[i][1] for i in soma_idx]
    if numbers and None not in numbers and len(set(numbers)) == len(numbers):
        soma_idx = [i for _, i in sorted(zip(numbers, soma_idx))]
        cell_of_number = {parsed[i][1]: cell for cell, i in enumerate(soma_idx, 1)}
    else:
        # numbers are ambiguous (e.g. three ROIs all named "SOMA"): a number that
        # still names exactly one soma can be used to resolve PROC_ names
        counts: dict[int, int] = {}
        for n in numbers:
            if n is not None:
                counts[n] = counts.get(n, 0) + 1
        cell_of_number = {parsed[i][1]: cell for cell, i in enumerate(soma_idx, 1)
                          if parsed[i][1] is not None and counts[parsed[i][1]] == 1}
    cell_of_index = {i: cell for cell, i in enumerate(soma_idx, 1)}

    # extra soma parts ("Soma_003_02") join soma 3; without soma 3 they found a cell
    for i in part_idx:
        number = parsed[i][1]
        if number not in cell_of_number:
            cell = len(cell_of_index) + 1
            cell_of_number[number] = cell
            soma_idx.append(i)
        cell_of_index[i] = cell_of_number[number]

    n_soma_cells = len(set(cell_of_index.values()))
    process_idx = [i for i in range(len(rois)) if i not in cell_of_index
                   and parsed[i][0] != SOMA]

    if n_soma_cells == 0:
        if not has_named_proc or convention == "order":
            name = rois[process_idx[0]].name if process_idx else "?"
            raise InputError(path, f"ROI {name!r} cannot be assigned to a cell: the RoiSet "
                             "holds no soma ROI that would be visible in an image of shape "
                             f"{shape}.",
                             "name soma ROIs 'Soma_<n>', check shape=, or use "
                             "convention='soma_only' if every ROI is a soma.")
        # only PROC_<c>_<k> names: cells without soma, one per distinct <c>
        for i in process_idx:
            kind, number, _ = parsed[i]
            if kind == PROCESS and number not in cell_of_number:
                cell_of_number[number] = len(cell_of_number) + 1
        unnamed = [i for i in process_idx if parsed[i][0] != PROCESS]
        if unnamed:
            raise InputError(path, f"ROI {rois[unnamed[0]].name!r} cannot be assigned to a "
                             "cell: it has no PROC_<cell>_<k> name and the RoiSet holds no "
                             "soma ROI.",
                             "name it 'Proc_<cell>_<k>' or add the soma ROI 'Soma_<cell>'.")
        return [Roi(rois[i].name, i, PROCESS, cell_of_number[parsed[i][1]], *pixels[i])
                for i in process_idx]

    result = [Roi(rois[i].name, i, SOMA, cell, *pixels[i])
              for i, cell in sorted(cell_of_index.items())]

    if convention == "order":
        # a soma is followed by its processes; processes before the first soma
        # belong to the next soma
        current = 0
        pending: list[int] = []
        for i in range(len(rois)):
            if i in cell_of_index:
                current = cell_of_index[i]
                result += [Roi(rois[j].name, j, PROCESS, current, *pixels[j]) for j in pending]
                pending = []
            elif parsed[i][0] == SOMA:
                continue  # a soma wholly outside the image
            elif current == 0:
                pending.append(i)
            else:
                result.append(Roi(rois[i].name, i, PROCESS, current, *pixels[i]))
        return sorted(result, key=lambda roi: roi.index)

    if convention != "nearest":
        raise InputError(path, f"unknown RoiSet convention {convention!r}.",
                         f"use one of {', '.join(CONVENTIONS)}.")

    # "nearest": PROC_<c>_<k> follows its name when SOMA_<c> names exactly one
    # soma; every other process goes to the soma that comes closest to it. The
    # annotation files list processes in no reliable order (all somata first,
    # processes before their soma, ...), but a process nearly always touches
    # its own soma.
    soma_label = np.zeros(shape, dtype=np.int32)
    for roi in result:
        soma_label[roi.rows, roi.cols] = roi.cell
    distance, (near_r, near_c) = ndi.distance_transform_edt(soma_label == 0,
                                                             return_indices=True)
    nearest_label = soma_label[near_r, near_c]
    for i in process_idx:
        kind, number, _ = parsed[i]
        cell = cell_of_number.get(number) if kind == PROCESS else None
        if cell is None:
            cell = _nearest_cell(*pixels[i], nearest_label, distance)
        if cell == 0:
            continue  # wholly outside the image: nothing to draw
        result.append(Roi(rois[i].name, i, PROCESS, cell, *pixels[i]))
    return sorted(result, key=lambda roi: roi.index)


def _paint(rois: list[Roi], shape: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
    """Label images from assigned ROIs, resolving overlaps.

    A pixel inside any soma ROI is soma. A pixel claimed by several cells (two
    somata, or processes of two cells) goes to the claimant whose soma centroid
    is nearest, which does not depend on the order of the ROIs in the file.
    """
    height, width = shape
    soma = np.zeros(shape, dtype=np.uint16)
    processes = np.zeros(shape, dtype=np.uint16)
    if not rois:
        return soma, processes
    n_cells = max(roi.cell for roi in rois)
    # centroid per cell: of its soma pixels, or of its processes if it has no soma
    centroid = np.zeros((n_cells + 1, 2))
    known = np.zeros(n_cells + 1, dtype=bool)
    for kind in (SOMA, PROCESS):
        chosen = [r for r in rois if r.kind == kind and r.rows.size]
        if not chosen:
            continue
        cells = np.concatenate([np.full(r.rows.size, r.cell) for r in chosen])
        rows = np.concatenate([r.rows for r in chosen])
        cols = np.concatenate([r.cols for r in chosen])
        counts = np.bincount(cells, minlength=n_cells + 1)
        new = (counts > 0) & ~known
        centroid[new, 0] = np.bincount(cells, rows, n_cells + 1)[new] / counts[new]
        centroid[new, 1] = np.bincount(cells, cols, n_cells + 1)[new] / counts[new]
        known |= new

    for kind, target in ((SOMA, soma), (PROCESS, processes)):
        chosen = [r for r in rois if r.kind == kind and r.rows.size]
        if not chosen:
            continue
        cells = np.concatenate([np.full(r.rows.size, r.cell, dtype=np.int64) for r in chosen])
        flat = np.concatenate([r.rows * width + r.cols for r in chosen]).astype(np.int64)
        # one claim per (pixel, cell); the nearest centroid claims first
        claim = np.unique(flat * (n_cells + 1) + cells)
        flat, cells = claim // (n_cells + 1), claim % (n_cells + 1)
        rr, cc = np.divmod(flat, width)
        dist2 = (rr - centroid[cells, 0]) ** 2 + (cc - centroid[cells, 1]) ** 2
        order = np.lexsort((cells, dist2, flat))
        flat, cells = flat[order], cells[order]
        first = np.ones(flat.size, dtype=bool)
        first[1:] = flat[1:] != flat[:-1]
        target.ravel()[flat[first]] = cells[first]
    processes[soma > 0] = 0
    # a cell whose every pixel went to neighbours vanishes: keep ids dense 1..N
    present = np.zeros(n_cells + 1, dtype=bool)
    present[soma] = True
    present[processes] = True
    present[0] = True
    if not present.all():
        new_id = (np.cumsum(present) - 1).astype(np.uint16)
        soma, processes = new_id[soma], new_id[processes]
    return soma, processes


def read_roiset(path: str | Path, shape: Sequence[int], *,
                convention: Convention = "auto",
                fill: Fill = "imagej") -> tuple[np.ndarray, np.ndarray]:
    """Read an ImageJ RoiSet into soma and process label images.

    Parameters
    ----------
    path : str or Path
        ``RoiSet.zip`` (or a single ``.roi`` file) as saved by Fiji's ROI Manager.
    shape : (int, int)
        ``(H, W)`` of the field of view. ROIs are clipped to it, so an annotation
        drawn on a slightly larger image (D3: 435 x 435 drawn, 430 x 430 used)
        reads correctly.
    convention : {"auto", "nearest", "order", "soma_only"}
        How ROIs become cells:

        - ``"nearest"``: ROIs named ``SOMA...`` (any case, e.g. ``SOMA``,
          ``Soma_012``, ``SOMA2``) are somata. ``PROC_<c>_<k>`` is a process of
          the soma named with number ``<c>`` when exactly one soma carries it.
          Every other ROI is a process of the soma that comes closest to it
          (smallest pixel distance; the annotation files list processes in no
          reliable order, but a process nearly always touches its soma).
          ``Soma_<c>_<k>`` is an extra piece of soma ``<c>`` (as written by
          :func:`write_roiset`).
        - ``"order"``: a soma is followed by its processes; processes listed
          before the first soma belong to the next soma.
        - ``"soma_only"``: every ROI is a soma (the D3 annotations).
        - ``"auto"`` (default): ``"soma_only"`` when no ROI has a soma or
          ``PROC_`` name, else ``"nearest"``.
    fill : {"imagej", "astra"}
        Which pixels a polygon covers. ``"imagej"`` (default): those whose
        centre lies inside, as Fiji's masks and :func:`write_roiset` do.
        ``"astra"``: the rule of ASTRA's scoring code (the grid point
        ``(row, col) = (y, x)`` inside or on the polygon), which covers about
        half a perimeter more pixels; use it to reproduce the paper's figures.

    Returns
    -------
    soma, processes : ndarray of uint16, shape (H, W)
        Label images with one id per cell (1..N, 0 background), shared by both.
        Cells are numbered by the numbers in the soma names when every soma
        has a distinct number, else in file order, then renumbered densely
        (a soma wholly outside ``shape`` or wholly covered by nearer
        neighbours leaves no gap). No pixel is in both: a
        pixel inside any soma ROI is soma. A pixel claimed by several cells
        goes to the cell whose soma centroid is nearest. A file without somata
        but with ``PROC_<c>_<k>`` names gives cells without soma.

    Raises
    ------
    InputError
        Missing or unreadable file, an unknown convention, a ROI without area
        (line, point), or a ROI that cannot be assigned to any cell.
    """
    path = Path(path)
    if convention not in CONVENTIONS:
        raise InputError(path, f"unknown RoiSet convention {convention!r}.",
                         f"use one of {', '.join(CONVENTIONS)}.")
    _check_fill(fill, path)
    shape2 = _check_shape(shape, path)
    rois = _assign(_load_rois(path), shape2, convention, path, fill)
    if len({r.cell for r in rois}) > np.iinfo(np.uint16).max:
        raise InputError(path, "holds more than 65535 cells, more than a uint16 label "
                         "image can number.", "split the field of view.")
    return _paint(rois, shape2)


def read_roiset_meta(path: str | Path, shape: Sequence[int], *,
                     convention: Convention = "auto", fill: Fill = "imagej") -> list[Roi]:
    """List the ROIs of a RoiSet with the kind and cell that :func:`read_roiset` gives them.

    Parameters are those of :func:`read_roiset`. Returns one :class:`Roi` per
    ROI that covers at least one pixel of ``shape``, in file order, before
    overlaps between ROIs are resolved.
    """
    path = Path(path)
    if convention not in CONVENTIONS:
        raise InputError(path, f"unknown RoiSet convention {convention!r}.",
                         f"use one of {', '.join(CONVENTIONS)}.")
    _check_fill(fill, path)
    return _assign(_load_rois(path), _check_shape(shape, path), convention, path, fill)


# --------------------------------------------------------------------------- writing


def _ring_area(ring: np.ndarray) -> float:
    rows, cols = ring[:, 0], ring[:, 1]
    return abs(np.dot(rows, np.roll(cols, 1)) - np.dot(cols, np.roll(rows, 1))) / 2


def _bridge_hole(ring: np.ndarray, hole: np.ndarray) -> np.ndarray:
    """Splice a hole into a ring through a horizontal, there-and-back bridge.

    The bridge runs along a half-integer row: it holds no pixel centre, and its
    two coincident horizontal edges never count in a scanline fill, so an
    even-odd fill of the result (ImageJ's and skimage's) is ring minus hole.
    """
    # a hole vertex on a half-integer row (every ring has one: it crosses
    # between pixel-centre rows), the left-most for a short bridge
    on_half_row = np.flatnonzero(np.abs(hole[:, 0] - np.floor(hole[:, 0]) - 0.5) < 1e-6)
    start = on_half_row[np.argmin(hole[on_half_row, 1])]
    y, x = hole[start]
    # where the ring crosses that row left of the hole vertex: the nearest crossing
    a, b = ring, np.roll(ring, -1, axis=0)
    crosses = (a[:, 0] - y) * (b[:, 0] - y) <= 0
    crosses &= a[:, 0] != b[:, 0]
    idx = np.flatnonzero(crosses)
    t = (y - a[idx, 0]) / (b[idx, 0] - a[idx, 0])
    xs = a[idx, 1] + t * (b[idx, 1] - a[idx, 1])
    left = xs < x
    if not left.any():  # cannot happen for a hole inside the ring; keep the fill right anyway
        left = np.ones_like(left)
    pick = np.flatnonzero(left)[np.argmax(xs[left])]
    seg, meet = idx[pick], np.array([y, xs[pick]])
    hole_loop = np.concatenate([hole[start:], hole[:start], hole[start:start + 1]])
    return np.concatenate([ring[:seg + 1], meet[None], hole_loop, meet[None], ring[seg + 1:]])


def _outline(mask: np.ndarray) -> np.ndarray:
    """ImageJ ``(x, y)`` polygon whose pixel-centre, even-odd fill is ``mask``.

    Parameters
    ----------
    mask : ndarray of bool, shape (h, w)
        One 8-connected component (holes allowed).

    Returns
    -------
    xy : ndarray of float32, shape (n, 2)
        Vertices on the iso-line half-way between inside and outside pixel
        centres, so every pixel centre is at least 0.35 px from the outline
        and filling the polygon by pixel centres gives back the mask. Holes are
        joined to the outer boundary by zero-width horizontal bridges.
    """
    from skimage.measure import find_contours

    padded = np.pad(mask, 1).astype(np.float32)
    # 'high': diagonal neighbours inside the mask stay joined in one outline
    contours = find_contours(padded, 0.5, fully_connected="high")
    # find_contours closes rings by repeating the first point. (skimage's approximate_polygon with
    # tolerance 0, used here before, returns its input unchanged, and importing it cost 0.5-0.9 s
    # of scipy.signal/scipy.stats on every run.)
    rings = [c[:-1] for c in contours]
    rings.sort(key=_ring_area, reverse=True)
    # the outer boundary encloses every hole, hence the largest area
    outline = rings[0]
    for hole in rings[1:]:
        outline = _bridge_hole(outline, hole)
    rows = outline[:, 0] - 1  # undo the padding
    cols = outline[:, 1] - 1
    # skimage pixel centres are integers, ImageJ's are at +0.5
    return np.stack([cols + 0.5, rows + 0.5], axis=1).astype(np.float32)


def _components(labels: np.ndarray, cell: int, box: tuple[slice, slice]) -> list[np.ndarray]:
    """ImageJ outlines of the 8-connected pieces of ``labels == cell``, largest first."""
    from skimage.measure import label, regionprops

    crop = labels[box] == cell
    pieces = regionprops(label(crop, connectivity=2))
    pieces.sort(key=lambda p: (-p.area, p.bbox))
    outlines = []
    for piece in pieces:
        r0, c0, _, _ = piece.bbox
        xy = _outline(piece.image)
        xy += np.array([c0 + box[1].start, r0 + box[0].start], dtype=np.float32)
        outlines.append(xy)
    return outlines


def _check_labels(name: str, labels: np.ndarray, path: Path) -> np.ndarray:
    labels = np.asarray(labels)
    if labels.ndim != 2:
        raise InputError(path, f"{name} labels must be a 2-D (H, W) image, got shape "
                         f"{labels.shape}.", "pass one label image per field of view.")
    if labels.dtype.kind not in "ui" and labels.dtype != bool:
        raise InputError(path, f"{name} labels must be integers, got {labels.dtype}.",
                         "label the mask first, e.g. with skimage.measure.label.")
    if labels.size and labels.min() < 0:
        raise InputError(path, f"{name} labels contain negative ids.",
                         "use 0 for background and 1..N for cells.")
    return labels


def write_roiset(soma: np.ndarray, processes: np.ndarray, path: str | Path) -> Path:
    """Write soma and process label images as an ImageJ/Fiji RoiSet zip.

    Parameters
    ----------
    soma, processes : ndarray of int, shape (H, W)
        Label images sharing one id per cell (0 background). Where both are
        non-zero the soma wins.
    path : str or Path
        Destination ``.zip``; written atomically.

    Returns
    -------
    path : Path

    Notes
    -----
    Per cell, in increasing id order: ``Soma_###`` (3-digit id; wider ids keep
    all their digits) outlining the largest soma piece, ``Soma_###_##`` for
    further soma pieces, then ``Proc_###_##`` for each 8-connected process
    piece, largest first. Every ROI is a sub-pixel FREEHAND polygon traced
    half-way between inside and outside pixel centres, so Fiji and
    :func:`read_roiset` fill it back to the same pixels. Holes inside a piece
    are kept: each is joined to the outer boundary by a zero-width horizontal
    bridge, which an even-odd fill (ImageJ's and skimage's) ignores.

    A cell with processes but no soma is written with its processes only,
    named with its id; :func:`read_roiset` gives such processes to the
    nearest soma, or keeps them as soma-less cells when the file has no soma
    at all.
    """
    import roifile
    from scipy import ndimage as ndi

    path = Path(path)
    soma = _check_labels("soma", soma, path)
    processes = _check_labels("process", processes, path)
    if soma.shape != processes.shape:
        raise InputError(path, f"soma labels {soma.shape} and process labels "
                         f"{processes.shape} differ in shape.",
                         "pass label images of the same field of view.")
    processes = np.where(soma > 0, 0, processes)
    n = int(max(soma.max(initial=0), processes.max(initial=0)))
    soma_boxes = ndi.find_objects(soma.astype(np.int64), max_label=n)
    proc_boxes = ndi.find_objects(processes.astype(np.int64), max_label=n)

    rois = []
    for cell in range(1, n + 1):
        tag = f"{cell:03d}"
        if soma_boxes[cell - 1] is not None:
            for k, xy in enumerate(_components(soma, cell, soma_boxes[cell - 1])):
                name = f"Soma_{tag}" if k == 0 else f"Soma_{tag}_{k:02d}"
                rois.append(roifile.ImagejRoi.frompoints(xy, name=name))
        if proc_boxes[cell - 1] is not None:
            for k, xy in enumerate(_components(processes, cell, proc_boxes[cell - 1]), 1):
                rois.append(roifile.ImagejRoi.frompoints(xy, name=f"Proc_{tag}_{k:02d}"))

    with atomic_path(path, suffix=".zip") as tmp:
        if rois:
            roifile.roiwrite(tmp, rois, mode="w")
        else:
            # roifile writes nothing for an empty list; an empty zip is a valid empty RoiSet
            with zipfile.ZipFile(tmp, "w"):
                pass
    return path
