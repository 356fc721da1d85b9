"""astro3s.preprocess on simulated movies with ground truth, the fit and the CLI."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from astro3s.io import read_labels, read_movie
from astro3s.preprocess import PreprocessParams, fit_parameters, load_preprocessed, preprocess
from astro3s.preprocess.fit import candidate_scores, soma_areas

ROOT = Path(__file__).resolve().parents[1]


def _load(folder: Path):
    movie = read_movie(folder / f"{folder.name}.tif")
    soma = read_labels(folder / "ground_truth" / "soma.tif")
    processes = read_labels(folder / "ground_truth" / "processes.tif")
    shifts = np.loadtxt(folder / "ground_truth" / "shifts.csv", delimiter=",", skiprows=1)[:, 1:]
    return movie, soma, processes, shifts


def _recall(result, soma) -> float:
    hit, n_cells, _, _ = candidate_scores(result.candidates, soma)
    return hit / n_cells


@pytest.fixture(scope="module")
def d1_result(simulated):
    movie, soma, _, shifts = _load(simulated("d1_like", 0, overview=False))
    return preprocess(movie, PreprocessParams(soma_area_range=(89, 345)), progress=False), soma, shifts


def test_shifts_on_simulated_motion(d1_result):
    result, _, true = d1_result
    error = result.shifts - true
    error -= np.median(error, axis=0)  # the reference's position is arbitrary
    assert np.abs(true).max() > 0.5
    assert np.sqrt((error**2).mean()) < 0.2


def test_candidate_recall_d1_like(d1_result):
    """One D1-like movie in the default run (the larger sweep is marked slow)."""
    result, soma, _ = d1_result
    assert _recall(result, soma) >= 0.95


@pytest.mark.slow
@pytest.mark.parametrize("preset, seeds, area_range", [
    ("d1_like", (1, 2, 3, 4), (89, 345)),
    ("d4_like", (0, 1, 2), (60, 200)),
])
def test_candidate_recall_presets(simulated, preset, seeds, area_range):
    hits = cells = 0
    for seed in seeds:
        movie, soma, _, _ = _load(simulated(preset, seed, overview=False))
        result = preprocess(movie, PreprocessParams(soma_area_range=area_range), progress=False)
        hit, n, _, _ = candidate_scores(result.candidates, soma)
        hits, cells = hits + hit, cells + n
    assert hits / cells >= 0.95


def test_fit_parameters_on_simulated(simulated, tmp_path):
    folders = [simulated("tiny", seed, overview=False) for seed in (0, 1, 2)]
    data = [_load(f) for f in folders]
    fitted = fit_parameters([d[0] for d in data], [(d[1], d[2]) for d in data],
                            percentiles=(50, 80), extensions=(0.45, 0.35, 0.25), progress=False)
    areas = np.concatenate([soma_areas(d[1]) for d in data])
    low, high = fitted.soma_area_range
    assert abs(low - areas.min()) <= 0.15 * areas.min() and abs(high - areas.max()) <= 0.15 * areas.max()
    # and within the simulator's configured range (tiny: soma_area [60, 250]), 15 % slack
    assert 60 * 0.85 <= low <= high <= 250 * 1.15
    assert fitted.activity_percentile in (50, 80)
    assert (fitted.th1, fitted.th2) in [(0.30, 0.15), (0.25, 0.10), (0.20, 0.07), (0.15, 0.05), (0.10, 0.03),
                                        (0.05, 0.02)]
    assert fitted.note.startswith("fit_parameters")
    # the fitted set changes behaviour: candidate areas follow the fitted soma size
    assert fitted.start_area_fraction * low != PreprocessParams().start_area_fraction * 89


def _cli(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    exe = Path(sys.executable).with_name("astro3s-preprocess")
    command = [str(exe)] if exe.exists() else [sys.executable, "-m", "astro3s.cli.preprocess"]
    env = {**os.environ, "PROJECT_ROOT": str(cwd)}
    return subprocess.run([*command, *args, "extras.print_config=false", f"hydra.run.dir={cwd}/run"],
                          cwd=cwd, env=env, capture_output=True, text=True, timeout=300)


def test_cli_folder(simulated, tmp_path):
    folder = simulated("tiny", 0)
    data = tmp_path / "data"
    data.mkdir()
    (data / folder.name).symlink_to(folder)
    np.save(data / "flat.npy", np.full((10, 32, 32), 3, np.uint16))  # a constant movie fails
    out = tmp_path / "out"
    run = _cli(f"input={data}", f"out={out}", cwd=tmp_path)
    assert run.returncode != 0
    assert "flat.npy" in run.stderr and "constant" in run.stderr
    npz = out / folder.name / "preprocessed.npz"
    assert npz.is_file() and (out / folder.name / "preprocessing.png").is_file()
    assert not (out / "soma").exists()  # ground_truth/*.tif are not movies
    result = load_preprocessed(npz)
    assert result.source.endswith(f"{folder.name}.tif") and result.corrected is not None
    assert result.crops.shape[1:] == (96, 96)
    # complete outputs are skipped; a single movie with a fitted set works
    mtime = npz.stat().st_mtime
    run = _cli(f"input={folder / (folder.name + '.tif')}", f"out={out}", "preprocess=astra", cwd=tmp_path)
    assert run.returncode == 0, run.stderr
    assert npz.stat().st_mtime == mtime


def test_reselect_candidates_equals_a_fresh_run(simulated):
    """Stages 4-6 again with other soma areas give what a full run with those areas gives."""
    from astro3s.preprocess import reselect_candidates

    folder = simulated("tiny", 1, overview=False)
    first = preprocess(read_movie(folder / f"{folder.name}.tif"), PreprocessParams(), progress=False)
    params = PreprocessParams(soma_area_range=(40.0, 160.0))
    again = reselect_candidates(first, params)
    fresh = preprocess(read_movie(folder / f"{folder.name}.tif"), params, progress=False)
    assert again.params == params
    np.testing.assert_array_equal(again.crop_boxes, fresh.crop_boxes)
    np.testing.assert_allclose(again.crops, fresh.crops)
    np.testing.assert_allclose(again.fov_map, fresh.fov_map)
    with pytest.raises(ValueError, match="stage 1-3"):
        reselect_candidates(first, params.replace(baseline_percentile=20.0))
    # the CLAHE settings may change (the enhancement is redone from the kept median image:
    # tests/test_scale.py), but not without that image
    import dataclasses

    with pytest.raises(ValueError, match="stage 1-3"):
        reselect_candidates(dataclasses.replace(first, median_image=None), params.replace(clahe_clip_limit=1.0))
