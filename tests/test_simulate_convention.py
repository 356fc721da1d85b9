"""The training simulator's convention for cells without events, and rarely active cells.

``silent_labelled`` decides whether a silent astrocyte (no event in the movie) is ground truth;
``sparse_fraction`` makes some active cells rarely active (one or two small whole-cell events). Both default
to 0, which leaves every preset's movies and truth as they were; a data source passes them as simulator
overrides (``conf/data/default_mix_all_cells.yaml``).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from astro3s.errors import ConfigError
from astro3s.simulate import simulate_preset
from astro3s.simulate.render import render_frames

# every cell silent, or every active cell rarely active: the effect is certain on any draw
SILENT = {"silent_fraction": 1.0, "n_cells": 3, "neuropil_amplitude": 0.0}


def _truth_ids(sim) -> set[int]:
    return {int(i) for i in sim.truth.cell_index}


def test_silent_cells_are_left_out_unless_labelled() -> None:
    unlabelled = simulate_preset("tiny", seed=5, **SILENT)
    labelled = simulate_preset("tiny", seed=5, silent_labelled=1, **SILENT)
    n_placed = len(labelled.scene.cells)
    assert n_placed >= 2 and all(info.silent for info in labelled.scene.cell_info)
    assert unlabelled.n_cells == 0 and not unlabelled.truth.soma.any()
    assert labelled.n_cells >= 1 and _truth_ids(labelled) <= set(range(n_placed))
    # the convention changes the truth, never the movie
    assert np.array_equal(render_frames(unlabelled.scene, 0, 5), render_frames(labelled.scene, 0, 5))
    # a silent cell's domain is its soma and processes: no activity reveals any pixel beyond them
    t = labelled.truth
    assert np.array_equal(t.domains, np.maximum(t.soma, t.processes))
    assert not t.domain_correlation[(t.domains > 0) & (t.soma == 0) & (t.processes == 0)].any()
    # and their traces carry no event (only what neighbours' and look-alikes' light spills onto them)
    assert float(np.abs(t.traces).max()) < 0.1


def test_labelled_silent_cells_join_the_active_ones() -> None:
    values = {"silent_fraction": 0.5, "n_cells": 4}
    for seed in range(20):
        plain = simulate_preset("tiny", seed=seed, **values)
        labelled = simulate_preset("tiny", seed=seed, silent_labelled=1, **values)
        silent = {i for i, info in enumerate(labelled.scene.cell_info) if info.silent}
        if silent and len(silent) < len(labelled.scene.cell_info):
            break
    else:
        pytest.fail("no draw with both silent and active cells")
    assert _truth_ids(labelled) - _truth_ids(plain) <= silent
    assert _truth_ids(labelled) & silent, "a silent cell whose soma lies in the FOV is ground truth"
    assert _truth_ids(plain) <= _truth_ids(labelled)


def test_sparse_cells_have_one_or_two_small_whole_cell_events_only() -> None:
    sim = simulate_preset("d1_like", seed=3, n_frames=200, sparse_fraction=1.0, silent_fraction=0.0)
    p = sim.scene.params
    infos = sim.scene.cell_info
    assert infos and all(info.sparse for info in infos)
    assert all(1 <= info.n_whole <= 2 and info.n_soma == 0 and info.n_wave == 0 for info in infos)
    whole = np.flatnonzero(sim.scene.component_kind == 0)
    # each whole-cell trace peaks well under the preset's typical amplitude
    assert len(whole) == len(infos)
    assert float(sim.scene.traces[:, whole].max()) <= 0.6 * p.whole_amplitude * 1.01
    dense = simulate_preset("d1_like", seed=3, n_frames=200, silent_fraction=0.0)
    assert sum(info.n_micro for info in infos) < sum(info.n_micro for info in dense.scene.cell_info)
    assert not any(info.sparse for info in dense.scene.cell_info)


def test_presets_without_the_new_fields_keep_their_movies() -> None:
    # the rarely-active stream is drawn only when asked for: 0 leaves the random streams of every cell alone
    base = simulate_preset("tiny", seed=11)
    explicit = simulate_preset("tiny", seed=11, sparse_fraction=0, silent_labelled=0)
    assert np.array_equal(render_frames(base.scene, 0, 8), render_frames(explicit.scene, 0, 8))
    assert np.array_equal(base.truth.domains, explicit.truth.domains)
    assert base.scene.params.sparse_fraction == 0 and base.scene.params.silent_labelled == 0


def test_a_source_passes_simulator_overrides_and_refuses_unknown_names(tmp_path: Path) -> None:
    import json

    from omegaconf import OmegaConf

    from astro3s.data.fovs import MixedFOVs, SyntheticFOVs

    overrides = OmegaConf.create({"silent_labelled": 1, "sparse_fraction": [1.0, 1.0]})
    source = SyntheticFOVs(preset="tiny", n_fovs=1, root=tmp_path, first_seed=2, simulate=overrides)
    (spec,) = source.fovs()
    meta = json.loads((tmp_path / "tiny" / "tiny_s0002" / "meta.json").read_text())
    assert meta["params"]["silent_labelled"] == 1 and meta["params"]["sparse_fraction"] == 1.0
    assert all(cell["sparse"] or cell["silent"] for cell in meta["cells"])
    with pytest.raises(ConfigError, match="silent_labeled"):
        MixedFOVs([{"kind": "synthetic", "preset": "tiny", "n_fovs": 1, "simulate": {"silent_labeled": 1}}],
                  root=tmp_path)


def test_the_all_cells_experiments_compose_as_two_stages(tmp_path: Path) -> None:
    from _hydra import compose_train

    first = compose_train(["experiment=default_model_all_cells_stage1"], tmp_path)
    assert first.model.net.in_channels == 2 and first.data.input_channels == 2
    assert first.data.root.endswith("default_mix_all_cells") and first.model.get("init_weights") is None
    assert first.data.silence_fraction == 0
    for source in first.data.sources:
        assert source.simulate.silent_labelled == 1 and list(source.simulate.sparse_fraction) == [0.1, 0.4]
    second = compose_train(["experiment=default_model_all_cells", "model.init_weights=RUN/checkpoints/last.ckpt"],
                           tmp_path)
    assert second.model.net.in_channels == 2 and second.data.root == first.data.root
    assert second.trainer.max_epochs == 6
