"""Somata as ragged as no annotated soma is (astro3s.postprocess.lookalike.ragged_somata,
astro3s.inference.cells.drop_ragged_cells, CellRules.min_soma_solidity)."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest


def _layout() -> np.ndarray:
    yy, xx = np.ogrid[:100, :140]
    soma = np.zeros((100, 140), np.int32)
    soma[(yy - 15) ** 2 + (xx - 15) ** 2 <= 64] = 1  # a disc
    soma[5:25, 35:55] = 2  # a square patch ...
    soma[9:21, 41:55] = 0  # ... open on one side: a "C", solidity ~0.6
    soma[(yy - 45) ** 2 + (xx - 20) ** 2 <= 100] = 3  # a larger disc
    soma[50:98, 60:138] = 4  # a large patch (1296 px) ...
    soma[56:92, 70:138] = 0  # ... as ragged, but above the area bound
    return soma


def test_solidity_of_compact_and_ragged_somata() -> None:
    from astro3s.postprocess.lookalike import soma_solidity

    solidity = soma_solidity(_layout())
    assert solidity.shape == (4,)
    assert solidity[0] > 0.9 and solidity[2] > 0.9
    assert solidity[1] < 0.75 and solidity[3] < 0.75
    assert soma_solidity(np.zeros((5, 5), np.int32)).shape == (0,)


def test_only_small_ragged_somata_are_flagged() -> None:
    from astro3s.postprocess.lookalike import ragged_somata

    soma = _layout()
    assert ragged_somata(soma, min_solidity=0.75, max_area=1000).tolist() == [False, True, False, False]
    assert ragged_somata(soma, min_solidity=0.75, max_area=5000).tolist() == [False, True, False, True]
    assert not ragged_somata(soma, min_solidity=0.0, max_area=1000).any()


def test_drop_ragged_cells_removes_them_with_their_processes() -> None:
    from astro3s.inference.cells import drop_ragged_cells
    from astro3s.postprocess import CombineParams
    from astro3s.postprocess.combine import _segmentation

    soma = _layout()
    processes = np.zeros_like(soma)
    processes[15, 24:30] = 1
    processes[2:5, 40:50] = 2
    seg = _segmentation(soma, processes, 4, CombineParams(), {"cells": 4})
    out = drop_ragged_cells(seg, min_solidity=0.75)
    assert out.n_cells == 3 and out.counts["ragged_removed"] == 1 and out.counts["cells"] == 3
    assert not out.processes[2:5, 40:50].any() and out.processes[15, 24:30].all()
    assert np.array_equal(out.soma > 0, (soma > 0) & (soma != 2))


def test_the_rule_runs_only_when_set(tiny_movie: Path, record_calls) -> None:
    from astro3s.inference import cells, load_inference_model
    from astro3s.io import read_movie
    from astro3s.preprocess import preprocess

    model, options = load_inference_model("default", device="cpu")
    assert options.rules.min_soma_solidity == 0.0
    pre = preprocess(read_movie(tiny_movie), options.preprocess, progress=False)
    calls = record_calls(cells, "drop_ragged_cells")
    cells.segment_movie(pre, model, options)
    assert calls == []
    _, on, _ = cells.segment_movie(pre, model, dataclasses.replace(options, rules={"min_soma_solidity": 0.75}))
    assert [k["min_solidity"] for _, k in calls] == [0.75] and "ragged_removed" in on.counts


def test_the_setting_is_checked() -> None:
    from astro3s.errors import ConfigError
    from astro3s.inference.rules import CellRules

    with pytest.raises(ConfigError, match="rules.min_soma_solidity"):
        CellRules(min_soma_solidity=-0.5)
