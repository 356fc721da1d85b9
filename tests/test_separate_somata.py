"""A one-pixel gap between touching somata (astro3s.postprocess.split.separate_somata,
astro3s.inference.cells.with_separate_somata, CellRules.separate_somata)."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest
from scipy import ndimage as ndi


def _discs(rng: np.random.Generator, shape=(48, 48), n=9) -> np.ndarray:
    """Overlapping discs drawn one over the other: neighbours touch along arcs and at corners."""
    labels = np.zeros(shape, np.int32)
    yy, xx = np.ogrid[:shape[0], :shape[1]]
    for k in range(1, n + 1):
        y, x = rng.integers(0, shape[0]), rng.integers(0, shape[1])
        r = rng.integers(2, 8)
        labels[((yy - y) ** 2 + (xx - x) ** 2 <= r * r) & (labels == 0)] = k
    return labels


def test_no_two_somata_touch_afterwards_and_each_stays_one_piece() -> None:
    from astro3s.metrics import label_components
    from astro3s.postprocess import separate_somata

    rng = np.random.default_rng(0)
    cut_any = 0
    for _ in range(60):  # random layouts
        labels = _discs(rng)
        out, n_cut = separate_somata(labels)
        cut_any += n_cut
        assert out.dtype == np.int32
        assert np.all((out == labels) | (out == 0))  # only removes pixels, never moves them
        ids = np.unique(labels[labels > 0])
        # no component of the mask alone holds two ids; a soma the cut touched has no more pieces than before
        components, n_components = label_components(out > 0, connectivity=2)
        pairs = np.unique(np.stack([components[out > 0], out[out > 0]]), axis=1)
        assert np.unique(pairs[0]).size == pairs.shape[1] == n_components
        for k in np.unique(labels[(labels != out)]):
            assert k == 0 or label_components(out == k)[1] <= label_components(labels == k)[1]
        # a soma is never emptied by a soma that is smaller
        area_before = np.bincount(labels.ravel(), minlength=ids.max() + 1)
        area_after = np.bincount(out.ravel(), minlength=ids.max() + 1)
        for k in ids:
            if area_after[k] < area_before[k]:  # it lost its contact with a smaller neighbour
                near = np.unique(labels[ndi.binary_dilation(labels == k, np.ones((3, 3), bool)) & (labels != k)])
                near = near[near > 0]
                assert np.any(area_before[near] <= area_before[k])
    assert cut_any > 0  # the layouts did have touching somata


def test_the_smaller_soma_keeps_its_outline() -> None:
    from astro3s.postprocess import separate_somata

    labels = np.zeros((12, 20), np.int32)
    labels[2:10, 2:10] = 1  # 64 px
    labels[3:9, 10:16] = 2  # 36 px, sharing an edge with soma 1
    out, n_cut = separate_somata(labels)
    assert n_cut == 1
    assert np.array_equal(out == 2, labels == 2)
    # soma 1 loses the pixels of its column 9 that touch soma 2, diagonally too (rows 2-9), and nothing else
    assert not out[2:10, 9].any() and out[2:10, 2:9].all()
    assert (out == 1).sum() == 64 - 8


def test_a_piece_the_soma_had_before_the_cut_stays() -> None:
    from astro3s.postprocess import separate_somata

    labels = np.zeros((14, 12), np.int32)
    labels[1:6, 1:6] = 1
    labels[8:11, 1:4] = 1  # a second piece of soma 1, away from the contact
    labels[1:4, 6:9] = 2  # smaller, touching the first piece
    out, n_cut = separate_somata(labels)
    assert n_cut == 1 and (out[8:11, 1:4] == 1).all() and np.array_equal(out == 2, labels == 2)
    # a cut that parts a soma's neck leaves its larger part only
    neck = np.zeros((9, 14), np.int32)
    neck[1:8, 1:6] = 1
    neck[4, 6:8] = 1  # a one-pixel neck to a small bulb
    neck[3:6, 8:10] = 1
    neck[5:8, 6:8] = 2  # touches the neck from below
    out, _ = separate_somata(neck)
    assert out[3:6, 8:10].sum() == 0 and (out[1:8, 1:5] == 1).all()


def test_apart_or_single_somata_are_returned_as_they_are() -> None:
    from astro3s.postprocess import separate_somata

    labels = np.zeros((10, 10), np.int32)
    labels[1:4, 1:4] = 1
    labels[5:8, 5:8] = 2  # one pixel of diagonal gap: not 8-adjacent
    out, n_cut = separate_somata(labels)
    assert n_cut == 0 and np.array_equal(out, labels)
    one, n_cut = separate_somata(np.where(labels == 1, 1, 0))
    assert n_cut == 0 and one.max() == 1


def test_with_separate_somata_keeps_processes_and_records_the_count() -> None:
    from astro3s.inference.cells import with_separate_somata
    from astro3s.postprocess import CombineParams
    from astro3s.postprocess.combine import _segmentation

    soma = np.zeros((16, 24), np.int32)
    soma[4:12, 2:10] = 1
    soma[5:11, 10:16] = 2
    processes = np.zeros_like(soma)
    processes[7:9, 16:22] = 2
    processes[0:4, 5:7] = 1
    seg = _segmentation(soma, processes, 2, CombineParams(), {"cells": 2})
    out = with_separate_somata(seg)
    assert out.n_cells == 2 and out.counts["somata_separated"] == 1 and out.counts["cells"] == 2
    assert np.array_equal(out.processes, seg.processes)
    assert out.soma_area.tolist() == [64 - 8, 36]
    untouched = with_separate_somata(out)
    assert untouched.counts["somata_separated"] == 0 and np.array_equal(untouched.soma, out.soma)


def test_the_rule_is_on_by_default_and_off_when_set(tiny_movie: Path, record_calls) -> None:
    from astro3s.inference import cells, load_inference_model
    from astro3s.io import read_movie
    from astro3s.preprocess import preprocess

    model, options = load_inference_model("default", device="cpu")
    assert options.rules.separate_somata
    pre = preprocess(read_movie(tiny_movie), options.preprocess, progress=False)
    calls = record_calls(cells, "with_separate_somata")
    _, seg, _ = cells.segment_movie(pre, model, options)
    assert len(calls) == 1 and "somata_separated" in seg.counts
    _, off, _ = cells.segment_movie(pre, model, dataclasses.replace(options, rules={"separate_somata": False}))
    assert len(calls) == 1 and "somata_separated" not in off.counts


@pytest.mark.parametrize("value", ["yes", 1])
def test_the_setting_must_be_a_bool(value) -> None:
    from astro3s.errors import ConfigError
    from astro3s.inference.rules import CellRules

    with pytest.raises(ConfigError, match="rules.separate_somata"):
        CellRules(separate_somata=value)
