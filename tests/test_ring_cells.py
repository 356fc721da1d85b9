"""Cells on filled ring cores that reach out with no processes: neurons' rings, dropped.

The ring-core fill (:func:`astro3s.preprocess.ring_cores.fill_ring_cores`) raises the dim core inside any bright
closed rim, so a neuron's ring around its dark nucleus reads as a disc like a membrane-labelled soma's;
:func:`astro3s.inference.cells.drop_ring_cells` drops such a cell when its processes do not reach beyond the rim.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest

from astro3s.inference.cells import RING_CELL_PROCESS_RATIO, drop_ring_cells
from astro3s.postprocess import CombineParams
from astro3s.postprocess.combine import _segmentation
from astro3s.preprocess.ring_cores import fill_ring_cores


def _disc(shape: tuple[int, int], centre: tuple[float, float], radius: float) -> np.ndarray:
    yy, xx = np.mgrid[:shape[0], :shape[1]]
    return (yy - centre[0]) ** 2 + (xx - centre[1]) ** 2 <= radius ** 2


SHAPE = (96, 160)
NEURON, ASTROCYTE, CYTOSOLIC = (30.0, 30.0), (30.0, 90.0), (70.0, 135.0)


def _field() -> tuple[np.ndarray, np.ndarray]:
    """A median image of a neuron's ring, a membrane astrocyte's rim with branches, a cytosolic soma; their somata."""
    image = np.full(SHAPE, 0.1, np.float32)
    soma = np.zeros(SHAPE, np.uint16)
    for cell, centre in enumerate((NEURON, ASTROCYTE), start=1):
        image[_disc(SHAPE, centre, 9)] = 1.0
        image[_disc(SHAPE, centre, 7)] = 0.3  # the dark core: a nucleus, or a membrane soma's cytoplasm
        soma[_disc(SHAPE, centre, 9)] = cell
    image[29:32, 99:125] = 0.8  # the astrocyte's branches
    image[10:21, 89:92] = 0.8
    image[_disc(SHAPE, CYTOSOLIC, 8)] = 1.0
    soma[_disc(SHAPE, CYTOSOLIC, 8)] = 3
    return image, soma


def _segmentation_of(soma: np.ndarray, processes: np.ndarray):
    return _segmentation(soma, processes, int(soma.max()), CombineParams(), {"cells": int(soma.max())})


def _processes() -> np.ndarray:
    """What the network draws: a rim band around every soma, branches only where the astrocyte has them."""
    _, soma = _field()
    processes = np.zeros(SHAPE, np.uint16)
    for cell, (centre, radius) in enumerate(((NEURON, 9), (ASTROCYTE, 9), (CYTOSOLIC, 8)), start=1):
        processes[_disc(SHAPE, centre, radius + 2) & (soma == 0)] = cell
    processes[29:32, 101:125] = 2
    processes[10:19, 89:92] = 2
    return processes


def test_a_ring_with_no_processes_goes_and_an_astrocyte_on_its_core_stays() -> None:
    image, soma = _field()
    _, cores = fill_ring_cores(image)
    assert cores[_disc(SHAPE, NEURON, 6)].all() and cores[_disc(SHAPE, ASTROCYTE, 6)].all()
    assert not cores[_disc(SHAPE, CYTOSOLIC, 8)].any()
    seg = _segmentation_of(soma, _processes())
    out = drop_ring_cells(seg, cores)
    assert out.counts["ring_cells_removed"] == 1 and out.n_cells == 2
    assert not out.soma[_disc(SHAPE, NEURON, 9)].any() and not out.processes[_disc(SHAPE, NEURON, 12)].any()
    # the astrocyte and the cytosolic soma (no core: never judged, though it has no processes either) stay
    assert out.soma[_disc(SHAPE, ASTROCYTE, 9)].all() and out.soma[_disc(SHAPE, CYTOSOLIC, 8)].all()
    assert np.array_equal(out.processes > 0, np.isin(seg.processes, [2, 3]))


def test_the_processes_must_reach_beyond_the_rim_band_over_a_tenth_of_the_soma() -> None:
    image, soma = _field()
    _, cores = fill_ring_cores(image)
    processes = _processes()
    area = int((soma == 1).sum())
    far = np.argwhere(processes == 0)
    far = far[np.hypot(far[:, 0] - NEURON[0], far[:, 1] - NEURON[1]) > 9 + 5.5][:, :]
    far = far[(far[:, 1] < 60) & (far[:, 0] < 80)]  # away from the other cells
    short = processes.copy()
    short[tuple(far[:int(0.09 * area)].T)] = 1
    assert drop_ring_cells(_segmentation_of(soma, short), cores).counts["ring_cells_removed"] == 1
    enough = processes.copy()
    enough[tuple(far[:int(0.11 * area) + 1].T)] = 1
    assert drop_ring_cells(_segmentation_of(soma, enough), cores).counts["ring_cells_removed"] == 0
    assert drop_ring_cells(_segmentation_of(soma, short), cores, min_process_ratio=0.05).n_cells == 3


def test_a_soma_that_holds_little_of_a_core_is_not_judged() -> None:
    image, soma = _field()
    _, cores = fill_ring_cores(image)
    shifted = np.zeros_like(soma)
    shifted[soma == 3] = 3
    # the neuron's soma drawn beside its ring: it overlaps the core's edge only
    shifted[_disc(SHAPE, (NEURON[0], NEURON[1] + 13), 8) & (shifted == 0)] = 1
    processes = np.zeros(SHAPE, np.uint16)
    seg = _segmentation(shifted, processes, 3, CombineParams(), {"cells": 3})
    assert (shifted[cores] == 1).any()
    assert drop_ring_cells(seg, cores).counts["ring_cells_removed"] == 0


def test_nothing_happens_without_cores_or_with_the_rule_off() -> None:
    image, soma = _field()
    _, cores = fill_ring_cores(image)
    seg = _segmentation_of(soma, _processes())
    for out in (drop_ring_cells(seg, None), drop_ring_cells(seg, np.zeros(SHAPE, bool)),
                drop_ring_cells(seg, cores[:50]), drop_ring_cells(seg, cores, min_process_ratio=0)):
        assert out is seg
    empty = _segmentation_of(np.zeros(SHAPE, np.uint16), np.zeros(SHAPE, np.uint16))
    assert drop_ring_cells(empty, cores) is empty


def test_the_rule_runs_by_default_with_the_fills_cores_and_turns_off(tiny_movie: Path, record_calls) -> None:
    from astro3s.inference import cells, load_inference_model
    from astro3s.io import read_movie
    from astro3s.preprocess import preprocess

    model, options = load_inference_model("default", device="cpu")
    assert options.rules.ring_cell_process_ratio == RING_CELL_PROCESS_RATIO == 0.1
    pre = preprocess(read_movie(tiny_movie), options.preprocess, progress=False)
    cores = np.zeros(pre.enhanced.shape, bool)
    cores[5:9, 5:9] = True
    pre = dataclasses.replace(pre, ring_cores=cores)
    calls = record_calls(cells, "drop_ring_cells")
    cells.segment_movie(pre, model, options)
    assert len(calls) == 1 and calls[0][0][1] is cores and calls[0][1]["min_process_ratio"] == 0.1
    calls.clear()
    cells.segment_movie(pre, model, dataclasses.replace(options, rules={"ring_cell_process_ratio": 0}))
    assert calls == []


def test_the_setting_is_checked() -> None:
    from astro3s.errors import ConfigError
    from astro3s.inference.rules import CellRules

    with pytest.raises(ConfigError, match="rules.ring_cell_process_ratio"):
        CellRules(ring_cell_process_ratio=-0.1)
    assert CellRules(ring_cell_process_ratio=0).ring_cell_process_ratio == 0.0


def test_the_probe_measures_the_cells_on_cores_as_the_rule_judges_them(experiment_script) -> None:
    probe = experiment_script("probe_ring_cells")
    image, soma = _field()
    _, cores = fill_ring_cores(image)
    seg = _segmentation_of(soma, _processes())
    rows = probe.cells_on_cores(seg, cores, matched={2, 3})
    assert [r["cell"] for r in rows] == [1, 2]  # the cytosolic soma holds no core
    ring, astrocyte = rows
    assert not ring["matched"] and astrocyte["matched"]
    assert ring["process_px_past_reach"] < RING_CELL_PROCESS_RATIO * ring["soma_area"]
    assert astrocyte["process_px_past_reach"] >= RING_CELL_PROCESS_RATIO * astrocyte["soma_area"]
    text = probe.summary(rows)
    assert "2 cells on filled cores, 1 false" in text and "| 0.1 | 1 | 0 |" in text


def test_the_probes_read_each_movie_once(experiment_script, tmp_path) -> None:
    probe = experiment_script("_probes")  # probe_ring_cells.py's and probe_coarse_check.py's folders
    for root in ("family", "member_dev"):
        for name in ("movie_0", "movie_1") if root == "family" else ("movie_1", "movie_2"):
            (tmp_path / root / name).mkdir(parents=True)
            (tmp_path / root / name / f"{name}.tif").write_bytes(b"")
    (tmp_path / "family" / "notes").mkdir()
    folders = probe.movie_folders([tmp_path / "family", tmp_path / "member_dev", tmp_path / "family" / "movie_0"])
    assert [f.name for f in folders] == ["movie_0", "movie_1", "movie_2"]
    assert folders[1].parent.name == "family"
