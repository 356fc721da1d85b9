"""``experiments/probe_unfollowed_cells.py``: per cell of saved segmentations, its somatic kinetics and how closely
its processes follow its soma, and the false / true cells each setting of the rule removes."""

from __future__ import annotations

import json

import numpy as np


def _events(rng, n_frames: int, fs: float, decay_s: float, count: int) -> np.ndarray:
    """A dF/F-like trace with ``count`` events of instant rise and ``decay_s`` decay, spread over the movie."""
    t = np.arange(n_frames) / fs
    trace = np.zeros(n_frames)
    for onset in np.linspace(5.0, t[-1] - 10.0, count):
        trace += np.where(t >= onset, np.exp(-(t - onset) / decay_s), 0.0) * (t >= onset)
    return trace


def _saved_movie(folder, name: str) -> None:
    """A movie of two cells: 1, fairly fast somatic events (1 s) beside processes of their own (a neuron's
    neuropil); 2, the same events with processes that follow; the truth holds cell 2 only."""
    from astro3s.io import write_movie

    rng = np.random.default_rng(3)
    fs, n_frames = 5.0, 600
    soma = np.zeros((40, 80), np.int32)
    processes = np.zeros_like(soma)
    soma[15:25, 10:20], soma[15:25, 50:60] = 1, 2
    processes[18:22, 20:36], processes[18:22, 60:76] = 1, 2
    events = _events(rng, n_frames, fs, 1.0, 8)
    own = _events(rng, n_frames, fs, 1.0, 8)[::-1]  # events of their own, at other times
    movie = np.full((n_frames, 40, 80), 100.0) + rng.normal(0, 1.0, (n_frames, 40, 80))
    movie[:, soma == 1] += 40 * events[:, None]
    movie[:, soma == 2] += 40 * events[:, None]
    movie[:, processes == 1] += 40 * own[:, None]
    movie[:, processes == 2] += 40 * events[:, None]
    (folder / "data" / name).mkdir(parents=True)
    write_movie(folder / "data" / name / f"{name}.tif", movie.astype(np.float32), fs=fs)
    (folder / "segs").mkdir(exist_ok=True)
    np.savez(folder / "segs" / f"{name}.npz", soma=soma, processes=processes, gt_soma=np.where(soma == 2, 1, 0))


def test_cells_are_recorded_with_kinetics_following_and_truth(experiment_script, tmp_path, capsys) -> None:
    probe = experiment_script("probe_unfollowed_cells")
    _saved_movie(tmp_path, "fov_a")
    records = {r["cell"]: r for r in probe.cell_records(tmp_path / "segs" / "fov_a.npz",
                                                          tmp_path / "data" / "fov_a" / "fov_a.tif")}
    assert [records[k]["true"] for k in (1, 2)] == [False, True]
    assert records[1]["events"] >= 5 and records[2]["events"] >= 5
    assert 1.0 < records[1]["decay_s"] < 1.6 and 1.0 < records[2]["decay_s"] < 1.6  # fairly fast, not fast
    assert records[1]["following"] < 0.4 < 0.9 < records[2]["following"]
    assert probe.removed(list(records.values()), 0.4, 1.6, 3) == (1, 0)
    assert probe.removed(list(records.values()), 0.4, 0.9, 3) == (0, 0)  # decays too slow for that setting
    assert probe.main([f"{tmp_path / 'segs'}={tmp_path / 'data'}", "--out", str(tmp_path / "cells.json")]) == 0
    text = capsys.readouterr().out
    assert "| segs | 1 | 1 |" in text and "| 0.4 | 1.6 | 3 | -1 / -0 | -1 / -0 |" in text
    assert len(json.loads((tmp_path / "cells.json").read_text())["segs"]) == 2
