"""``experiments/probe_faint_cells.py``: the faint cells of saved segmentations, true or not, and their shape."""

from __future__ import annotations

import json

import numpy as np
from scipy import ndimage


def _saved_fov(path) -> None:
    """Three ordinary somata (one of them false), one dim compact true soma and one dim small false blob."""
    yy, xx = np.mgrid[:120, :400]
    shapes = [np.hypot(yy - 40, xx - x) < 12 for x in (40, 120, 200, 280)] + [np.hypot(yy - 90, xx - 340) < 5]
    levels = (40.0, 40.0, 40.0, 8.0, 8.0)
    image = np.full(yy.shape, 10.0)
    soma = np.zeros(yy.shape, np.int32)
    for k, (shape, level) in enumerate(zip(shapes, levels), start=1):
        image += level * ndimage.gaussian_filter(shape.astype(float), 1.0)
        soma[shape] = k
    truth = np.where(np.isin(soma, (1, 2, 4)), soma, 0)
    np.savez(path, soma=soma, gt_soma=truth, median_image=image.astype(np.float32))


def test_cells_are_recorded_with_contrast_shape_and_truth(experiment_script, tmp_path) -> None:
    probe = experiment_script("probe_faint_cells")
    _saved_fov(tmp_path / "fov_a.npz")
    records = {r["cell"]: r for r in probe.cell_records(tmp_path / "fov_a.npz")}
    assert [records[k]["true"] for k in range(1, 6)] == [True, True, False, True, False]
    assert records[4]["contrast"] < 0.3 and records[5]["contrast"] < 0.3 and records[1]["contrast"] > 0.8
    assert records[4]["area_ratio"] == 1.0 and records[5]["area_ratio"] < 0.3 and records[4]["solidity"] > 0.9
    # the rule alone takes the dim true soma too; with the shape exemption only the small blob goes
    assert probe.removed(list(records.values()), 0.3, 0.0, 0.0) == (1, 1)
    assert probe.removed(list(records.values()), 0.3, 0.9, 0.7) == (1, 0)


def test_binned_fovs_are_left_out_and_the_grid_is_printed(experiment_script, tmp_path, capsys) -> None:
    probe = experiment_script("probe_faint_cells")
    segs = tmp_path / "segs"
    segs.mkdir()
    _saved_fov(segs / "fov_a.npz")
    _saved_fov(segs / "fov_b.npz")
    report = tmp_path / "report.json"
    report.write_text(json.dumps({"heldout": {"m": {"movies": [{"name": "fov_a", "soma_scale": {"bin_factor": 1}},
                                                               {"name": "fov_b", "soma_scale": {"bin_factor": 3}}]}}}))
    assert probe.main([f"{segs}={report}", "--out", str(tmp_path / "cells.json")]) == 0
    text = capsys.readouterr().out
    assert "| segs | 3 | 2 |" in text  # fov_b, binned, left out
    assert "| 0.3 | – | – | -1 / -1 | -1 / -1 |" in text and "| 0.3 | 0.9 | 0.7 | -1 / -0 | -1 / -0 |" in text
    assert len(json.loads((tmp_path / "cells.json").read_text())["segs"]) == 5
