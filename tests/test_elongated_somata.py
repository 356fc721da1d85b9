"""Somata more elongated than any annotated soma (astro3s.postprocess.lookalike.elongated_somata,
astro3s.inference.cells.drop_elongated_cells, CellRules.max_soma_elongation)."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest


def _layout() -> np.ndarray:
    yy, xx = np.ogrid[:60, :120]
    soma = np.zeros((60, 120), np.int32)
    soma[(yy - 15) ** 2 + (xx - 15) ** 2 <= 64] = 1  # a disc: elongation 1
    soma[((yy - 15) / 4.0) ** 2 + ((xx - 50) / 12.0) ** 2 <= 1] = 2  # an ellipse 3 x as long as wide
    soma[40:44, 20:70] = 3  # a bar 4 px wide, 50 long: a stretch of fibre
    soma[50, 90:110] = 4  # a line one pixel thin
    return soma


def test_elongation_of_discs_ellipses_and_bars() -> None:
    from astro3s.postprocess.lookalike import soma_elongation

    elongation = soma_elongation(_layout())
    assert elongation.shape == (4,)
    assert elongation[0] == pytest.approx(1.0, abs=0.05)
    assert elongation[1] == pytest.approx(3.0, rel=0.1)
    assert elongation[2] > 10 and np.isinf(elongation[3])
    assert soma_elongation(np.zeros((5, 5), np.int32)).shape == (0,)


def test_only_somata_beyond_the_bound_are_flagged() -> None:
    from astro3s.postprocess.lookalike import elongated_somata

    soma = _layout()
    assert elongated_somata(soma, max_elongation=4.0).tolist() == [False, False, True, True]
    assert elongated_somata(soma, max_elongation=2.0).tolist() == [False, True, True, True]
    assert not elongated_somata(soma, max_elongation=0.0).any()
    assert not elongated_somata(soma, max_elongation=np.inf).any()


def test_no_annotated_soma_is_as_elongated_as_the_bound() -> None:
    # the bound is the experts' own: no consensus soma of D1-D4 reaches it (the largest reads 3.5)
    from astro3s.inference.cells import MAX_SOMA_ELONGATION
    from astro3s.io.roi import read_roiset
    from astro3s.postprocess.lookalike import soma_elongation
    from astro3s.resources import annotations_dir

    shapes = {"D1": (256, 256), "D2": (512, 512), "D3": (512, 512), "D4": (512, 512)}
    values = []
    for name, shape in shapes.items():
        for path in sorted((annotations_dir() / "consensus" / name).glob("*.zip")):
            soma, _ = read_roiset(path, shape)
            areas = np.bincount(soma.ravel())[1:]
            values.append(soma_elongation(soma)[areas >= 10])
    values = np.concatenate(values)
    assert values.size > 1400
    assert values.max() < MAX_SOMA_ELONGATION and np.median(values) < 1.6


def test_drop_elongated_cells_removes_them_with_their_processes() -> None:
    from astro3s.inference.cells import drop_elongated_cells
    from astro3s.postprocess import CombineParams
    from astro3s.postprocess.combine import _segmentation

    soma = _layout()
    processes = np.zeros_like(soma)
    processes[15, 24:30] = 1
    processes[45:48, 30:40] = 3
    seg = _segmentation(soma, processes, 4, CombineParams(), {"cells": 4})
    out = drop_elongated_cells(seg, max_elongation=4.0)
    assert out.n_cells == 2 and out.counts["elongated_removed"] == 2 and out.counts["cells"] == 2
    assert not out.processes[45:48, 30:40].any() and out.processes[15, 24:30].all()
    assert np.array_equal(out.soma > 0, np.isin(soma, [1, 2]))


def test_the_rule_runs_by_default_and_turns_off(tiny_movie: Path, record_calls) -> None:
    from astro3s.inference import cells, load_inference_model
    from astro3s.io import read_movie
    from astro3s.preprocess import preprocess

    model, options = load_inference_model("default", device="cpu")
    assert options.rules.max_soma_elongation == cells.MAX_SOMA_ELONGATION == 4.0
    pre = preprocess(read_movie(tiny_movie), options.preprocess, progress=False)
    calls = record_calls(cells, "drop_elongated_cells")
    _, on, _ = cells.segment_movie(pre, model, options)
    assert [k["max_elongation"] for _, k in calls] == [4.0] and "elongated_removed" in on.counts
    calls.clear()
    cells.segment_movie(pre, model, dataclasses.replace(options, rules={"max_soma_elongation": 0}))
    assert calls == []


def test_the_setting_is_checked() -> None:
    from astro3s.errors import ConfigError
    from astro3s.inference.rules import CellRules

    for bad in (-1.0, 0.5, 1.0):
        with pytest.raises(ConfigError, match="rules.max_soma_elongation"):
            CellRules(max_soma_elongation=bad)
    assert CellRules(max_soma_elongation=0).max_soma_elongation == 0.0
