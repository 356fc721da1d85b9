"""A membrane-targeted indicator (Lck-GCaMP) in both simulators: somata as rims, bright fine territory.

The held-out member ``membrane`` (:func:`astro3s.heldout.morphology.membrane_labelled`) and the training
preset ``membrane`` (:func:`astro3s.simulate.morphology.membrane_appearance`) are written apart; both must
show a soma's core dimmer than its edge and leave the masks (the annotation) as they were, and neither may
change a movie that does not ask for it.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage as ndi

from astro3s.heldout.members import MEMBER_ORDER, MEMBERS, sample_params
from astro3s.heldout.morphology import build_astrocyte, membrane_labelled
from astro3s.heldout.write import render_member_movie


def _core_and_rim(mask: np.ndarray, *, rim: int = 2, core: int = 3) -> tuple[np.ndarray, np.ndarray]:
    return ndi.binary_erosion(mask, iterations=core), mask & ~ndi.binary_erosion(mask, iterations=rim)


def test_heldout_membrane_label_dims_the_soma_core_and_keeps_the_annotation() -> None:
    cell = build_astrocyte(np.random.default_rng(3), 300.0)
    labelled = membrane_labelled(cell, np.random.default_rng(4))
    core, rim = _core_and_rim(cell.soma)
    assert core.any()
    # cytosolic: the core as bright as the edge or brighter; membrane: the core clearly dimmer than the rim
    assert np.median(cell.soma_soft[core]) >= 0.9 * np.median(cell.soma_soft[rim])
    assert np.median(labelled.soma_soft[core]) < 0.8 * np.median(labelled.soma_soft[rim])
    # thin processes gain on the trunks: faint territory pixels brighten relative to the brightest
    faint = (cell.processes > 0.02) & (cell.processes < 0.2)
    assert np.median(labelled.processes[faint] / labelled.processes.max()) > \
        1.5 * np.median(cell.processes[faint] / cell.processes.max())
    for name in ("soma", "annotated", "thin", "band"):  # the shape and its annotation are the cell's own
        np.testing.assert_array_equal(getattr(labelled, name), getattr(cell, name))
    assert labelled.info["label"] == "membrane" and "label" not in cell.info


def test_only_the_membrane_member_draws_a_membrane_label() -> None:
    assert MEMBER_ORDER[-1] == "membrane"  # appended: every earlier member keeps its seeds
    assert MEMBERS["membrane"].label == "membrane"
    assert all(sample_params(member, 0).label == "cytosolic" for member in MEMBER_ORDER if member != "membrane")
    assert sample_params("membrane", 0).label == "membrane"


def test_membrane_member_movie_shows_somata_as_rims() -> None:
    movie, scene = render_member_movie("membrane", 0, n_frames=60)
    median = np.median(movie.astype(np.float32), axis=0)
    background = np.median(median[(scene.soma == 0) & (scene.processes == 0)])
    ratios = []
    for cell in scene.cells:  # a few cells
        core, rim = _core_and_rim(scene.soma == cell["id"])
        if core.sum() >= 10:
            ratios.append((np.median(median[core]) - background) / (np.median(median[rim]) - background))
    assert len(ratios) >= 3
    assert np.median(ratios) < 0.9  # a cytosolic soma is brightest in its core (its edge is blurred by the PSF)


def test_training_membrane_appearance_rims_the_soma_and_brightens_the_territory() -> None:
    from astro3s.simulate.morphology import make_astrocyte, membrane_appearance
    from astro3s.simulate.params import load_preset, sample_params as sample_simulation

    params = sample_simulation(load_preset("d1_like"), np.random.default_rng(0))
    cell = make_astrocyte((0.0, 0.0), 300.0, params, np.random.default_rng(1))
    assert membrane_appearance(cell, 0.0) is cell and membrane_appearance(cell, -0.5) is cell
    labelled = membrane_appearance(cell, 1.0)
    core, rim = _core_and_rim(cell.soma_mask)
    assert np.median(labelled.soma[core]) < 0.5 * np.median(labelled.soma[rim])
    assert np.median(cell.soma[core]) >= 0.9 * np.median(cell.soma[rim])
    assert np.all(labelled.territory >= cell.territory - 1e-6)
    faint = (cell.territory > 0.02) & (cell.territory < 0.3)
    assert np.median(labelled.territory[faint] / cell.territory[faint]) > 1.5
    for name in ("soma_mask", "process_mask", "territory_mask", "process"):
        np.testing.assert_array_equal(getattr(labelled, name), getattr(cell, name))


def test_training_presets_draw_no_membrane_label_but_the_membrane_preset() -> None:
    from astro3s.simulate.params import available_presets, load_preset

    for name in available_presets():
        low, high = load_preset(name).membrane_label
        if name == "membrane":
            assert 0 < low < high <= 1.0
        else:
            assert (low, high) == (0.0, 0.0), name  # their movies stay byte for byte what they were
