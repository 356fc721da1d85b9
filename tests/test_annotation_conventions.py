"""Both simulators draw processes as ASTRA's annotators do, measured on the shipped consensus RoiSets."""

from __future__ import annotations


import numpy as np
import pytest


@pytest.fixture(scope="module")
def measured(experiment_script) -> tuple:
    from astro3s.resources import annotations_dir

    module = experiment_script("measure_annotations")
    return module, module.dataset_figures(annotations_dir())


def test_the_simulators_width_law_is_the_one_measured_cell_by_cell(measured) -> None:
    from astro3s.heldout import morphology as heldout
    from astro3s.simulate import morphology as simulate

    module, figures = measured
    a, b = module.width_law(figures)
    assert (simulate.ANNOTATOR_WIDTH_D1, simulate.ANNOTATOR_WIDTH_EXPONENT) == pytest.approx((a, b), abs=0.01)
    assert (heldout._D1_WIDTH, heldout._WIDTH_EXPONENT) == pytest.approx((a, b), abs=0.01)
    for name, cells in figures.items():  # each dataset's median cell within 20 % of the law
        soma_area, width = np.median(cells[:, 0]), np.median(cells[:, 1])
        assert simulate.annotator_process_width(soma_area) == pytest.approx(width, rel=0.2), name


def test_a_cells_width_is_narrower_than_its_polygons_one_by_one(measured) -> None:
    # the per-polygon median (5.4 px on D1) is what the simulators followed before 2026-12-04: a short
    # polygon's skeleton stops short of its ends, so one by one the polygons measure ~1.4x wider
    from astro3s.resources import annotations_dir

    module, figures = measured
    d1 = sorted((annotations_dir() / "consensus" / "D1").glob("*.zip"))[:6]
    per_polygon = np.median([w for f in d1 for w in module.polygon_widths(f, (256, 256))])
    assert per_polygon > 1.25 * np.median(figures["D1"][:, 1])


def test_the_training_simulator_traces_processes_as_far_as_annotators(measured) -> None:
    from astro3s.simulate.morphology import ANNOTATED_REACH

    _, figures = measured
    # reach beyond the soma's edge in soma radii; the simulator cuts at a distance from the centre
    quartiles = {name: np.percentile(cells[:, 3], [25, 75]) for name, cells in figures.items()}
    assert ANNOTATED_REACH[0] == pytest.approx(1 + min(q[0] for q in quartiles.values()), abs=0.05)
    assert ANNOTATED_REACH[1] == pytest.approx(1 + max(q[1] for q in quartiles.values()), abs=0.05)


def test_cell_process_figures_of_a_drawn_cell() -> None:
    from astro3s.metrics import cell_process_figures

    soma = np.zeros((64, 64), np.uint16)
    processes = np.zeros_like(soma)
    yy, xx = np.indices(soma.shape)
    soma[np.hypot(yy - 32, xx - 32) <= 5] = 1
    processes[30:35, 37:57] = 1  # one 5-px wide process running 20 px out from the soma's edge
    (area, width, ratio, reach), = cell_process_figures(soma, processes)
    assert area == np.count_nonzero(soma)
    assert width == pytest.approx(5.0, rel=0.3)
    assert ratio == pytest.approx(100 / area)
    radius = np.sqrt(area / np.pi)
    assert reach == pytest.approx(19.0 / radius, rel=0.15)
