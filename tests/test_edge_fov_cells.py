"""Somata the FOV's edge cuts, from the whole-FOV pass on the FOV extended by its mirror image
(astro3s.inference.network.predict_fov(mirror=), astro3s.inference.cells.add_edge_fov_cells;
CellRules.edge_fov_cells)."""

from __future__ import annotations

import dataclasses
from types import SimpleNamespace

import numpy as np
import pytest
import torch


@dataclasses.dataclass
class _Pre:
    fov_map: np.ndarray
    median_image: np.ndarray | None = None


class _Blur(torch.nn.Module):
    """Soma logit = a 9x9 box mean of the input: near an edge the zero padding darkens it, as a network's does."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        mean = torch.nn.functional.avg_pool2d(x, 9, stride=1, padding=4, count_include_pad=True)
        return torch.cat([torch.zeros_like(x), 8 * (mean - 0.5), torch.zeros_like(x)], dim=1)


def test_the_mirrored_pass_sees_the_fov_extended_by_its_mirror_image() -> None:
    from astro3s.inference.network import predict_fov

    rng = np.random.default_rng(0)
    fov = rng.random((40, 52)).astype(np.float32)
    pre = _Pre(fov_map=fov)
    net = _Blur()
    plain = predict_fov(net, pre, normalize="none", device="cpu")
    mirrored = predict_fov(net, pre, normalize="none", device="cpu", mirror=6)
    assert mirrored.shape == plain.shape == (3, 40, 52)
    by_hand = predict_fov(net, _Pre(fov_map=np.pad(fov, 6, mode="symmetric")), normalize="none",
                          device="cpu")[:, 6:46, 6:58]
    np.testing.assert_allclose(mirrored, by_hand, atol=1e-6)
    # far from the edges the padding changes nothing; at the edges it does
    np.testing.assert_allclose(mirrored[:, 10:30, 10:42], plain[:, 10:30, 10:42], atol=1e-6)
    assert np.abs(mirrored[:, 0] - plain[:, 0]).max() > 1e-3
    # a mirror wider than the map is cut to the map's side on each axis (symmetric padding would repeat it)
    assert predict_fov(net, pre, normalize="none", device="cpu", mirror=500).shape == (3, 40, 52)
    thin = np.random.default_rng(2).random((5, 60)).astype(np.float32)
    on_thin = predict_fov(net, _Pre(fov_map=thin), normalize="none", device="cpu", mirror=12)
    by_hand = predict_fov(net, _Pre(fov_map=np.pad(thin, ((5, 5), (12, 12)), mode="symmetric")), normalize="none",
                          device="cpu")[:, 5:10, 12:72]
    np.testing.assert_allclose(on_thin, by_hand, atol=1e-6)


class _Shapes(_Blur):
    """``_Blur`` that records the shape of every batch it sees."""

    def __init__(self) -> None:
        super().__init__()
        self.seen: list[tuple[int, ...]] = []

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.seen.append(tuple(x.shape))
        return super().forward(x)


def test_a_map_run_in_one_pass_still_runs_in_one_pass_with_its_mirror_image() -> None:
    from astro3s.inference.network import TilingParams, predict_fov

    fov = np.random.default_rng(1).random((64, 64)).astype(np.float32)
    net = _Shapes()
    one_pass = TilingParams(max_fov_pixels=64 * 64, tile_size=48, tile_overlap=8)
    predict_fov(net, _Pre(fov_map=fov), normalize="none", device="cpu", tiling=one_pass, mirror=8)
    assert net.seen == [(1, 1, 80, 80)]
    # ... also zoomed; and a map that is tiled as it is stays tiled
    net.seen.clear()
    predict_fov(net, _Pre(fov_map=fov), normalize="none", device="cpu", zoom=0.5,
                tiling=TilingParams(max_fov_pixels=32 * 32, tile_size=32, tile_overlap=8), mirror=8)
    assert net.seen == [(1, 1, 40, 40)]
    net.seen.clear()
    tiled = TilingParams(max_fov_pixels=32 * 32, tile_size=48, tile_overlap=8)
    predict_fov(net, _Pre(fov_map=fov), normalize="none", device="cpu", tiling=tiled, mirror=8)
    assert len(net.seen) >= 1 and all(shape[-2:] == (48, 48) for shape in net.seen)


def _scene():
    """A 96x96 FOV: a cell inside (found), a bright soma cut by the top edge with a process (not found), a faint
    blob at the left edge, a speck at the right edge, a bright sliver (less than half a disc) at the bottom edge
    and a bright soma near the edge that does not touch it; the 'network' draws all of them as soma."""
    from astro3s.models.classes import BACKGROUND, PROCESSES, SOMA
    from astro3s.postprocess import CombineParams
    from astro3s.postprocess.combine import _segmentation

    yy, xx = np.mgrid[:96, :96]
    inner = np.hypot(yy - 60, xx - 50) < 6
    cut = np.hypot(yy - 1, xx - 40) < 7
    process = (np.abs(xx - 40) <= 1) & (yy >= 8) & (yy < 20)
    faint = np.hypot(yy - 30, xx - 1) < 6
    speck = (yy >= 40) & (yy < 43) & (xx >= 94)
    sliver = (yy >= 93) & (xx >= 20) & (xx < 40)
    near = np.hypot(yy - 60, xx - 88) < 5
    image = (0.1 + 1.0 * inner + 1.0 * cut + 0.5 * process + 0.12 * faint + 1.0 * speck + 1.0 * sliver
             + 1.0 * near).astype(np.float32)
    probs = np.zeros((3, 96, 96), np.float32)
    probs[BACKGROUND] = 1.0
    for mask, cls in ((inner, SOMA), (cut, SOMA), (faint, SOMA), (speck, SOMA), (sliver, SOMA), (near, SOMA),
                      (process, PROCESSES)):
        probs[:, mask] = 0.0
        probs[cls, mask] = 1.0
    seg = _segmentation(inner.astype(np.uint16), np.zeros((96, 96), np.uint16), 1,
                        CombineParams(soma_area_range=(60, 400)), {})
    pre = _Pre(fov_map=image, median_image=image)
    return pre, seg, probs, cut, process


def test_a_cut_soma_only_the_mirrored_fov_pass_draws_becomes_a_cell(monkeypatch: pytest.MonkeyPatch) -> None:
    import astro3s.inference.cells as cells
    import astro3s.inference.network as network
    pre, seg, probs, cut, process = _scene()
    calls = []

    def fake_predict_fov(model, pre_, **kwargs):
        calls.append(kwargs)
        return probs

    monkeypatch.setattr(network, "predict_fov", fake_predict_fov)
    options = SimpleNamespace(normalize="mean", tiling=None, batch_size=4, device="cpu", amp=False)
    added = cells.add_edge_fov_cells(seg, pre, object(), options, min_area=30, max_area=400, zoom=1.5)
    # the pass ran mirrored, at least EDGE_MIRROR_MIN px, a soma diameter of the range's upper end otherwise
    assert calls[0]["mirror"] == max(cells.EDGE_MIRROR_MIN, int(np.ceil(2 * np.sqrt(400 / np.pi))))
    assert calls[0]["zoom"] == 1.5
    # the cut soma becomes cell 2 with its process; not the faint blob (contrast), the speck (area), the sliver
    # (less than half a disc inside, as drop_border_slivers has it) or the soma that does not touch the edge
    assert added.n_cells == 2 and added.counts["edge_fov_added"] == 1
    np.testing.assert_array_equal(added.soma == 1, seg.soma == 1)
    np.testing.assert_array_equal(added.soma == 2, cut)
    np.testing.assert_array_equal(added.processes == 2, process)
    # a soma already held is not added twice; too large a soma is not added
    assert cells.add_edge_fov_cells(added, pre, object(), options, min_area=30, max_area=400).n_cells == 2
    assert cells.add_edge_fov_cells(seg, pre, object(), options, min_area=30, max_area=50).n_cells == 1
    # a lower contrast bar lets the faint blob in too; no depth bar, the sliver
    monkeypatch.setattr(cells, "BORDER_CUT_CONTRAST", 0.05)
    assert cells.add_edge_fov_cells(seg, pre, object(), options, min_area=30, max_area=400).n_cells == 3
    shallow = cells.add_edge_fov_cells(seg, pre, object(), options, min_area=30, max_area=400, min_depth=0.1)
    assert shallow.n_cells == 4 and (shallow.soma[93:] > 0).any()


def test_the_edge_fov_cells_rule_runs_by_default_and_not_when_off(tiny_movie, record_calls) -> None:
    from astro3s.inference import cells, load_inference_model
    from astro3s.io import read_movie
    from astro3s.preprocess import preprocess

    model, options = load_inference_model("default", device="cpu")
    pre = preprocess(read_movie(tiny_movie), options.preprocess, progress=False)
    calls = record_calls(cells, "add_edge_fov_cells")
    _, off, _ = cells.segment_movie(pre, model, dataclasses.replace(options, rules={"edge_fov_cells": False}))
    assert calls == [] and "edge_fov_added" not in off.counts
    assert options.rules.edge_fov_cells
    _, on, info = cells.segment_movie(pre, model, options)
    assert len(calls) == 1 and "edge_fov_added" in on.counts
    lo, hi = info["size_filter_range"]
    assert calls[0][1]["min_area"] == pytest.approx(0.5 * lo) and calls[0][1]["max_area"] == pytest.approx(hi)
    assert calls[0][1]["min_depth"] == options.rules.border_sliver_ratio
