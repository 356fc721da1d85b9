"""ImageJ RoiSet reading (all ASTRA annotation conventions) and writing."""

from __future__ import annotations

import os
from functools import lru_cache
from pathlib import Path

import numpy as np
import pytest

from astro3s.errors import InputError
from astro3s.io import read_roiset, read_roiset_meta, write_roiset

from astro3s.resources import annotations_dir

ANNOTATIONS = annotations_dir().resolve()
MISSING = f"ASTRA annotations not found at {ANNOTATIONS} (set ASTRO3S_ANNOTATIONS)"
SHAPES = {"D1": (256, 256), "D2": (512, 512), "D3": (430, 430), "D4": (512, 512)}
needs_annotations = pytest.mark.skipif(not ANNOTATIONS.is_dir(), reason=MISSING)

ALL_FILES = sorted(ANNOTATIONS.glob("*/D*/*.zip")) if ANNOTATIONS.is_dir() else []


def _rel(path: Path) -> str:
    return str(path.relative_to(ANNOTATIONS))


def _shape(path: Path) -> tuple[int, int]:
    return SHAPES[path.parent.name]


@lru_cache(maxsize=None)
def _read(rel: str, fill: str = "imagej") -> tuple[np.ndarray, np.ndarray]:
    path = ANNOTATIONS / rel
    return read_roiset(path, _shape(path), fill=fill)


def _iou(a: np.ndarray, b: np.ndarray) -> float:
    return float((a & b).sum() / max((a | b).sum(), 1))


def _cells(labels: np.ndarray) -> np.ndarray:
    return np.unique(labels[labels > 0])


# --------------------------------------------------------------------------- the real files


def test_annotations_present_when_ci():
    if ANNOTATIONS.is_dir():
        assert len(ALL_FILES) == 234
    elif os.environ.get("CI"):
        pytest.fail(MISSING)
    else:
        pytest.skip(MISSING)


@needs_annotations
@pytest.mark.parametrize("rel", [_rel(p) for p in ALL_FILES] or ["none"])
def test_every_annotation_file_loads(rel):
    path = ANNOTATIONS / rel
    soma, processes = _read(rel)
    assert soma.shape == processes.shape == _shape(path)
    assert soma.dtype == processes.dtype == np.uint16
    assert not np.any((soma > 0) & (processes > 0))
    cells = _cells(soma)
    assert cells.size > 0
    np.testing.assert_array_equal(cells, np.arange(1, cells.size + 1))  # dense ids
    assert set(_cells(processes)) <= set(cells)  # every process hangs on a soma
    if path.parent.name == "D3":
        assert not processes.any()  # soma-only annotation
    elif rel != "consensus/D2/RoiSet_SMALL_046.zip":  # two somata, no process drawn
        assert processes.any()


@needs_annotations
@pytest.mark.parametrize("rel", [_rel(p) for p in ALL_FILES if p.parts[-3] == "consensus"]
                         or ["none"])
def test_consensus_write_read_round_trip(rel, tmp_path):
    soma, processes = _read(rel)
    out = write_roiset(soma, processes, tmp_path / "RoiSet.zip")
    soma2, processes2 = read_roiset(out, soma.shape)
    for before, after in ((soma, soma2), (processes, processes2)):
        for cell in _cells(before):
            assert _iou(before == cell, after == cell) >= 0.95, (rel, cell)


# measured with fill="imagej" (pixel centres inside), all consensus files
EXPECTED = {  # dataset: (files, cells, README median soma area)
    "D1": (24, 121, 220), "D2": (25, 30, 3000), "D3": (7, 737, 57), "D4": (8, 638, 120),
}


@needs_annotations
@pytest.mark.parametrize("dataset", sorted(EXPECTED))
def test_consensus_counts_and_soma_areas(dataset):
    files, cells, readme_area = EXPECTED[dataset]
    rels = [_rel(p) for p in sorted((ANNOTATIONS / "consensus" / dataset).glob("*.zip"))]
    assert len(rels) == files
    areas = np.concatenate([np.bincount(_read(r)[0].ravel())[1:] for r in rels])
    assert areas.size == cells
    assert readme_area / 1.5 <= np.median(areas) <= readme_area * 1.5
    # ASTRA's own fill rule reproduces the README table closely
    astra = np.concatenate([np.bincount(_read(r, "astra")[0].ravel())[1:] for r in rels])
    assert np.median(astra) == pytest.approx(readme_area, rel=0.1)
    assert np.median(astra) > np.median(areas)


@needs_annotations
def test_soma_then_processes_consensus_d1():
    rel = "consensus/D1/RoiSet_SMALL_001.zip"
    soma, processes = _read(rel)
    meta = read_roiset_meta(ANNOTATIONS / rel, (256, 256))
    assert [r.kind for r in meta].count("soma") == 5
    assert [r.kind for r in meta].count("process") == 30
    assert _cells(soma).tolist() == _cells(processes).tolist() == [1, 2, 3, 4, 5]


@needs_annotations
def test_proc_names_point_at_their_soma_annot2():
    rel = "annot_2/D1/RoiSet_SMALL_007.zip"  # 31 processes listed before the 5 somata
    soma, processes = _read(rel)
    meta = read_roiset_meta(ANNOTATIONS / rel, (256, 256))
    named = [r for r in meta if r.name.startswith("PROC_")]
    assert len(named) == 30
    for roi in named:
        assert roi.cell == int(roi.name.split("_")[1])
    somata = {r.name: r.cell for r in meta if r.kind == "soma"}
    assert somata == {f"SOMA_{k}": k for k in range(1, 6)}
    # the pixels of PROC_04_* end up labelled 4 (apart from soma pixels and overlaps)
    proc4 = np.zeros(soma.shape, bool)
    for roi in named:
        if roi.cell == 4:
            proc4[roi.rows, roi.cols] = True
    labels = processes[proc4 & (soma == 0)]
    assert np.mean(labels == 4) > 0.95
    assert len(named[0].rows) == named[0].area > 0


@needs_annotations
def test_processes_listed_before_the_single_soma_d2():
    rel = "consensus/D2/RoiSet_SMALL_028.zip"  # 11 processes, SOMA, 5 processes
    meta = read_roiset_meta(ANNOTATIONS / rel, (512, 512))
    assert [r.name for r in meta if r.kind == "soma"] == ["SOMA"]
    assert all(r.cell == 1 for r in meta) and len(meta) == 17
    soma, processes = _read(rel)
    assert _cells(soma).tolist() == _cells(processes).tolist() == [1]


@needs_annotations
def test_d3_has_somata_only():
    rel = "consensus/D3/RoiSet_LARGE_001.zip"
    soma, processes = _read(rel)
    assert _cells(soma).size == 124 and not processes.any()
    with pytest.raises(InputError, match="RoiSet_LARGE_001.zip.*cannot be assigned"):
        read_roiset(ANNOTATIONS / rel, (430, 430), convention="order")


@needs_annotations
def test_d4_somata_first_processes_after():
    rel = "consensus/D4/FOV_001.zip"  # 77 somata, then processes, one more soma, 3 processes
    soma, processes = _read(rel)
    meta = read_roiset_meta(ANNOTATIONS / rel, (512, 512))
    assert _cells(soma).size == 78
    assert sum(r.kind == "process" for r in meta) == 178
    assert _cells(processes).size == 64  # the order rule would give 175 to one cell
    order_soma, order_proc = read_roiset(ANNOTATIONS / rel, (512, 512), convention="order")
    assert _cells(order_proc).size == 2


@needs_annotations
def test_unnamed_processes_go_to_the_nearest_soma_not_the_next():
    rel = "consensus/D1/RoiSet_SMALL_002.zip"  # 4 processes of SOMA_01 listed before SOMA_02
    meta = {r.name: r.cell for r in read_roiset_meta(ANNOTATIONS / rel, (256, 256))}
    assert meta["SOMA_01"] == 1 and meta["SOMA_02"] == 2
    assert [meta[n] for n in ("0009-0070", "0006-0075", "0014-0104", "0029-0087")] == [1] * 4
    by_order = {r.name: r.cell for r in read_roiset_meta(ANNOTATIONS / rel, (256, 256),
                                                          convention="order")}
    assert by_order["0009-0070"] == 2


@needs_annotations
def test_somata_without_distinct_numbers_keep_file_order():
    rel = "annot_1/D2/RoiSet_SMALL_045.zip"  # ..., SOMA2, SOMA3, SOMA, ...
    meta = read_roiset_meta(ANNOTATIONS / rel, (512, 512))
    assert {r.name: r.cell for r in meta if r.kind == "soma"} == {"SOMA2": 1, "SOMA3": 2,
                                                                  "SOMA": 3}


# --------------------------------------------------------------------------- synthetic RoiSets


def _square(x0: float, y0: float, size: float) -> np.ndarray:
    return np.array([[x0, y0], [x0 + size, y0], [x0 + size, y0 + size], [x0, y0 + size]],
                    dtype=np.float32)


def _write(path: Path, named_points: list[tuple[str, np.ndarray]]) -> Path:
    import roifile

    rois = [roifile.ImagejRoi.frompoints(pts, name=name) for name, pts in named_points]
    # zip entry names must be unique even where ROI names repeat (as in the D2 files)
    roifile.roiwrite(path, rois, name=[f"{i:04d}" for i in range(len(rois))], mode="w")
    return path


# two cells: somata at (x 10-20, y 10-20) and (x 60-70, y 60-70); a process touching each
SOMA_A, SOMA_B = _square(10, 10, 10), _square(60, 60, 10)
PROC_A, PROC_B = _square(20, 12, 15), _square(45, 62, 15)


def test_imagej_pixel_convention(tmp_path):
    path = _write(tmp_path / "one.zip", [("Soma_1", np.array([[2, 3], [6, 3], [6, 5], [2, 5]]))])
    soma, processes = read_roiset(path, (8, 8))
    expected = np.zeros((8, 8), np.uint16)
    expected[3:5, 2:6] = 1  # ImageJ rectangle x 2..6, y 3..5 covers columns 2-5, rows 3-4
    np.testing.assert_array_equal(soma, expected)


@pytest.mark.parametrize("order", ["soma first", "processes first"])
def test_unnamed_processes_follow_nearest_soma(tmp_path, order):
    entries = ([("SOMA", SOMA_A), ("p1", PROC_A), ("SOMA", SOMA_B), ("p2", PROC_B)]
               if order == "soma first" else
               [("p2", PROC_B), ("p1", PROC_A), ("SOMA", SOMA_A), ("SOMA", SOMA_B)])
    soma, processes = read_roiset(_write(tmp_path / "r.zip", entries), (100, 100))
    assert soma[15, 15] == 1 and soma[65, 65] == 2
    assert processes[18, 30] == 1 and processes[68, 50] == 2


def test_order_convention(tmp_path):
    # a process before any soma belongs to the next soma, the rest to the one before them
    entries = [("x0", PROC_A), ("SOMA_1", SOMA_A), ("x1", PROC_B), ("SOMA_2", SOMA_B),
               ("x2", _square(80, 80, 5))]
    path = _write(tmp_path / "r.zip", entries)
    meta = {r.name: r.cell for r in read_roiset_meta(path, (100, 100), convention="order")}
    assert meta == {"x0": 1, "SOMA_1": 1, "x1": 1, "SOMA_2": 2, "x2": 2}


def test_proc_names_win_over_distance(tmp_path):
    far = _square(50, 40, 8)  # nearer soma B, but named for soma A
    entries = [("PROC_1_01", far), ("PROC_2_01", PROC_B), ("SOMA_2", SOMA_B), ("SOMA_1", SOMA_A)]
    soma, processes = read_roiset(_write(tmp_path / "r.zip", entries), (100, 100))
    assert soma[15, 15] == 1 and soma[65, 65] == 2  # ids follow the soma numbers
    assert processes[44, 54] == 1 and processes[68, 50] == 2


def test_own_naming_round_trip_and_orphans(tmp_path):
    entries = [("Soma_001", SOMA_A), ("Proc_001_01", PROC_A), ("Soma_002", SOMA_B),
               ("Proc_002_01", PROC_B), ("Proc_007_01", _square(24, 24, 6))]
    soma, processes = read_roiset(_write(tmp_path / "r.zip", entries), (100, 100))
    assert _cells(soma).tolist() == [1, 2]
    assert processes[27, 27] == 1  # Proc_007 has no soma 7: the nearest soma (A) takes it
    only_procs = _write(tmp_path / "p.zip", [("Proc_003_01", PROC_A), ("Proc_009_01", PROC_B)])
    soma, processes = read_roiset(only_procs, (100, 100))
    assert not soma.any() and processes[18, 30] == 1 and processes[68, 50] == 2


def test_no_soma_names_means_every_roi_is_a_soma(tmp_path):
    path = _write(tmp_path / "d3.zip", [("0015-0015", SOMA_A), ("0065-0065", SOMA_B)])
    soma, processes = read_roiset(path, (100, 100))
    assert _cells(soma).tolist() == [1, 2] and not processes.any()


def test_overlap_rules(tmp_path):
    # both cells' processes cover columns 35-44; each pixel goes to the nearer soma
    # centroid (columns 14.5 and 74.5); the soma of A wins over B's process crossing it
    entries = [("Soma_1", _square(10, 40, 10)), ("Soma_2", _square(70, 40, 10)),
               ("Proc_1_01", _square(20, 42, 25)), ("Proc_2_01", _square(35, 42, 35)),
               ("Proc_2_02", _square(12, 44, 5))]
    soma, processes = read_roiset(_write(tmp_path / "r.zip", entries), (100, 100))
    assert not np.any((soma > 0) & (processes > 0))
    assert soma[46, 14] == 1 and processes[46, 14] == 0
    row = processes[50]
    assert (row[20:45] == 1).all() and (row[45:70] == 2).all()  # split at column 44.5
    # the rule does not depend on the order of the ROIs in the file
    soma2, processes2 = read_roiset(_write(tmp_path / "rev.zip", entries[::-1]), (100, 100))
    np.testing.assert_array_equal(processes, processes2)
    np.testing.assert_array_equal(soma, soma2)


def test_roi_clipped_to_shape(tmp_path):
    path = _write(tmp_path / "edge.zip", [("Soma_1", _square(95, 95, 10))])
    soma, _ = read_roiset(path, (100, 100))
    assert soma.sum() == 25


def test_rectangle_oval_and_composite_rois(tmp_path):
    import roifile
    from roifile import ROI_TYPE

    rect = roifile.ImagejRoi(roitype=ROI_TYPE.RECT, left=10, top=20, right=15, bottom=23,
                             name="Soma_1")
    oval = roifile.ImagejRoi(roitype=ROI_TYPE.OVAL, left=40, top=40, right=60, bottom=60,
                             name="Soma_2")
    outer, inner = _square(70, 70, 20), _square(75, 75, 10)
    path = [0.0, *outer[0]] + [v for p in outer[1:] for v in (1.0, *p)] + [4.0]
    path += [0.0, *inner[0]] + [v for p in inner[1:] for v in (1.0, *p)] + [4.0]
    ring = roifile.ImagejRoi(roitype=ROI_TYPE.RECT, left=70, top=70, right=90, bottom=90,
                             name="Soma_3", multi_coordinates=np.array(path, np.float32),
                             shape_roi_size=len(path))
    zip_path = tmp_path / "shapes.zip"
    roifile.roiwrite(zip_path, [rect, oval, ring], mode="w")
    soma, _ = read_roiset(zip_path, (100, 100))
    assert (soma == 1).sum() == 15 and soma[20:23, 10:15].all()
    assert abs((soma == 2).sum() - np.pi * 10**2) < 15
    assert (soma == 3).sum() == 400 - 100 and soma[80, 80] == 0  # the hole stays empty


def test_line_roi_and_unassignable_rois_are_errors(tmp_path):
    import roifile
    from roifile import ROI_TYPE

    line = roifile.ImagejRoi(roitype=ROI_TYPE.LINE, x1=1, y1=1, x2=9, y2=9, name="cut")
    zip_path = tmp_path / "line.zip"
    roifile.roiwrite(zip_path, [roifile.ImagejRoi.frompoints(SOMA_A, name="Soma_1"), line],
                     mode="w")
    with pytest.raises(InputError, match="line.zip.*'cut'.*line ROI"):
        read_roiset(zip_path, (100, 100))
    lonely = _write(tmp_path / "lonely.zip", [("Proc_1_01", PROC_A), ("stray", PROC_B)])
    with pytest.raises(InputError, match="lonely.zip.*'stray'.*cannot be assigned"):
        read_roiset(lonely, (100, 100))
    with pytest.raises(InputError, match="lonely.zip.*unknown RoiSet convention"):
        read_roiset(lonely, (100, 100), convention="by_color")


def test_missing_and_corrupt_roiset(tmp_path):
    with pytest.raises(InputError, match="nothere.zip.*not found.*annotation folder"):
        read_roiset(tmp_path / "nothere.zip", (10, 10))
    (tmp_path / "bad.zip").write_bytes(b"PK\x03\x04 broken")
    with pytest.raises(InputError, match="bad.zip.*could not be read"):
        read_roiset(tmp_path / "bad.zip", (10, 10))


# --------------------------------------------------------------------------- writing


def _random_cells(rng: np.random.Generator, shape=(160, 160), n_tiles=4):
    """Blob somata (~60 px) with thin processes (1-3 px wide), one cell per tile."""
    from scipy import ndimage as ndi
    from skimage.draw import line

    soma = np.zeros(shape, np.uint16)
    processes = np.zeros(shape, np.uint16)
    tile = shape[0] // n_tiles
    cell = 0
    for ty in range(n_tiles):
        for tx in range(n_tiles):
            cell += 1
            cy, cx = ty * tile + tile // 2, tx * tile + tile // 2
            # blob: a smoothed random field thresholded around the tile centre
            yy, xx = np.mgrid[:tile, :tile]
            field = ndi.gaussian_filter(rng.standard_normal((tile, tile)), 2) * 8
            radius = np.hypot(yy - tile // 2, xx - tile // 2)
            blob = radius + field < rng.uniform(3.5, 5.5)
            blob = ndi.binary_fill_holes(blob) & (radius < 9)
            soma_tile = soma[ty * tile:(ty + 1) * tile, tx * tile:(tx + 1) * tile]
            soma_tile[blob] = cell
            # processes: random polylines from the centre, 1 or 3 px wide
            mask = np.zeros(shape, bool)
            for _ in range(rng.integers(2, 5)):
                angle = rng.uniform(0, 2 * np.pi)
                length = rng.uniform(10, tile // 2 - 2)
                r1 = int(np.clip(cy + length * np.sin(angle), ty * tile + 1, (ty + 1) * tile - 2))
                c1 = int(np.clip(cx + length * np.cos(angle), tx * tile + 1, (tx + 1) * tile - 2))
                rr, cc = line(cy, cx, r1, c1)
                mask[rr, cc] = True
            if cell % 2:
                mask = ndi.binary_dilation(mask, np.ones((3, 3), bool))
            if cell % 3 == 0:  # a loop, i.e. a process piece with a hole
                r0, c0 = ty * tile + 2, tx * tile + 2
                mask[r0:r0 + 9, c0:c0 + 9] = True
                mask[r0 + 3:r0 + 6, c0 + 3:c0 + 6] = False
            mask &= soma == 0
            processes[mask] = cell
    return soma, processes


def test_write_read_round_trip_random_blobs(tmp_path):
    rng = np.random.default_rng(42)
    for trial in range(3):
        soma, processes = _random_cells(rng)
        areas = np.bincount(soma.ravel())[1:]
        assert 30 < np.median(areas) < 100  # small somata, ~60 px
        path = write_roiset(soma, processes, tmp_path / f"RoiSet_{trial}.zip")
        soma2, processes2 = read_roiset(path, soma.shape)
        for before, after in ((soma, soma2), (processes, processes2)):
            for cell in _cells(before):
                assert _iou(before == cell, after == cell) >= 0.95, (trial, cell)
        # the outlines are exact: same pixels, holes included
        np.testing.assert_array_equal(soma2, soma)
        np.testing.assert_array_equal(processes2, processes)
    assert sorted(os.listdir(tmp_path)) == [f"RoiSet_{t}.zip" for t in range(3)]


def test_written_names_and_order(tmp_path):
    import roifile

    soma = np.zeros((40, 40), np.uint16)
    processes = np.zeros((40, 40), np.uint16)
    soma[5:10, 5:10] = 1
    soma[5:9, 30:34] = 2
    soma[20:22, 30:32] = 2  # a second soma piece of cell 2
    processes[10:30, 7] = 1  # 1 px wide
    processes[2, 2:20] = 1
    processes[30:35, 30:35] = 3  # a cell without soma
    path = write_roiset(soma, processes, tmp_path / "RoiSet.zip")
    rois = roifile.roiread(path)
    assert [r.name for r in rois] == ["Soma_001", "Proc_001_01", "Proc_001_02", "Soma_002",
                                      "Soma_002_01", "Proc_003_01"]
    assert all(r.roitype == roifile.ROI_TYPE.FREEHAND for r in rois)
    soma2, processes2 = read_roiset(path, (40, 40))
    np.testing.assert_array_equal(soma2, soma)  # both pieces of soma 2 come back as cell 2
    np.testing.assert_array_equal(processes2[processes != 3], processes[processes != 3])
    assert (processes2[processes == 3] == 2).all()  # the orphan joins the nearest soma


def test_write_empty_labels(tmp_path):
    empty = np.zeros((10, 10), np.uint16)
    path = write_roiset(empty, empty, tmp_path / "RoiSet.zip")
    soma, processes = read_roiset(path, (10, 10))
    assert not soma.any() and not processes.any()


def test_write_rejects_bad_labels(tmp_path):
    with pytest.raises(InputError, match="out.zip.*differ in shape"):
        write_roiset(np.zeros((5, 5), int), np.zeros((5, 6), int), tmp_path / "out.zip")
    with pytest.raises(InputError, match="out.zip.*integers"):
        write_roiset(np.zeros((5, 5)), np.zeros((5, 5)), tmp_path / "out.zip")
    assert not (tmp_path / "out.zip").exists()
