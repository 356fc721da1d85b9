"""Held-out movies on ASTRA's annotated layouts (astro3s.heldout.layouts)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from astro3s.heldout.layouts import (
    LAYOUT_RECIPES,
    LAYOUT_SEED_BASE,
    TRAINING_LAYOUTS,
    build_layout_scene,
    layout_astrocyte,
    layout_files,
    layout_params,
)
from astro3s.resources import annotations_dir

CONSENSUS = annotations_dir() / "consensus"


def test_training_layouts_match_the_default_mix():
    """The layouts left out are exactly those the bundled model's training data uses."""
    from omegaconf import OmegaConf

    mix = OmegaConf.to_container(OmegaConf.load(Path(__file__).parents[1] / "conf" / "data" / "default_mix.yaml"),
                                 resolve=False)
    used = {}
    for source in mix["sources"]:
        if source["kind"] == "standin":
            used[source["annotations"].rstrip("/").rsplit("/", 1)[-1]] = int(source["n_fovs"])
    assert used == TRAINING_LAYOUTS


def test_layout_files_leave_out_the_training_layouts():
    every = layout_files(CONSENSUS, "D1", include_training=True)
    held = layout_files(CONSENSUS, "D1")
    assert held == every[TRAINING_LAYOUTS["D1"]:]
    assert len(layout_files(CONSENSUS, "D2")) == len(layout_files(CONSENSUS, "D2", include_training=True))
    with pytest.raises(KeyError, match="D5"):
        layout_files(CONSENSUS, "D5")


def test_layout_seeds_are_above_every_member_and_training_seed():
    from astro3s.heldout.members import MEMBER_ORDER, member_seed

    highest_member = max(member_seed(m, 999) for m in MEMBER_ORDER)
    params = layout_params("D1", 0, "x", [200.0])
    assert params.seed == LAYOUT_SEED_BASE > highest_member
    assert params.member == "layout_d1" and params.shape[1:] == LAYOUT_RECIPES["D1"][0]
    assert (params.n_cut, params.n_outside, params.n_vessels) == (0, 0, 0)


def test_layout_scene_keeps_the_annotation_as_truth():
    from astro3s.heldout.render import render_movie
    from astro3s.io import read_roiset

    path = layout_files(CONSENSUS, "D1")[0]
    soma, processes = read_roiset(path, LAYOUT_RECIPES["D1"][0])
    areas = np.bincount(soma.ravel())[1:]
    params = layout_params("D1", 6, "t", areas[areas > 0])
    params = type(params)(**{**params.__dict__, "shape": (24, *params.shape[1:])})
    scene = build_layout_scene(params, soma, processes)
    np.testing.assert_array_equal(scene.soma, soma)
    np.testing.assert_array_equal(scene.processes, processes)
    assert len(scene.cells) == len(np.unique(soma[soma > 0]))
    # thin processes lie on their cell's annotated processes (2-px skeleton lines) and on no soma
    near = np.zeros_like(scene.thin, dtype=bool)
    from scipy import ndimage

    for cell_id in np.unique(scene.thin[scene.thin > 0]):
        near |= (scene.thin == cell_id) & ndimage.binary_dilation(processes == cell_id, iterations=2)
    assert near.sum() == (scene.thin > 0).sum() > 0
    assert not np.any((scene.thin > 0) & (soma > 0))
    movie = render_movie(scene).astype(np.float64)
    mean = movie.mean(axis=0)
    background = np.median(mean[ndimage.binary_dilation((soma > 0) | (processes > 0), iterations=8) == 0])
    assert np.median(mean[soma > 0]) > 1.5 * background  # the annotated somata are bright in the movie


def test_soma_only_cell_gets_territory_but_no_process_truth():
    yy, xx = np.mgrid[:61, :61]
    soma = np.hypot(yy - 30, xx - 30) < 4.5
    cell = layout_astrocyte(np.random.default_rng(0), soma, np.zeros_like(soma))
    assert not cell.annotated.any() and not cell.thin.any()
    assert cell.processes[~soma].max() > 0  # fluorescence around the soma all the same
    assert (cell.band >= 0).any() and len(cell.band_dist) == 4


def test_cli_writes_layout_movies(tmp_path):
    from astro3s.heldout.__main__ import main

    consensus = tmp_path / "consensus"
    (consensus / "D1").mkdir(parents=True)
    shutil.copy(layout_files(CONSENSUS, "D1")[0], consensus / "D1")
    out = tmp_path / "out"
    assert main(["--layouts", str(consensus), "--datasets", "D1", "--include-training-layouts",
                 "--frames", "12", "--no-overview", "--out", str(out)]) == 0
    (folder,) = out.iterdir()
    meta = json.loads((folder / "meta.json").read_text())
    assert meta["member"] == "layout_d1" and meta["layout"].startswith("D1/") and meta["shape"][0] == 12
    assert (folder / "ground_truth" / "processes.tif").is_file()
    # a consensus folder without the dataset, or a repeat out of range: one clear error, exit 2, nothing written
    assert main(["--layouts", str(consensus), "--datasets", "D2", "--out", str(out)]) == 2
    assert main(["--layouts", str(consensus), "--repeat", "12", "--out", str(tmp_path / "none")]) == 2
    assert not (tmp_path / "none").exists()
