"""Cells cut by the FOV's border (astro3s.postprocess.border, inference.cells.drop_border_slivers)."""

from __future__ import annotations

import numpy as np
import pytest


def _disc(shape: tuple[int, int], centre: tuple[float, float], radius: float) -> np.ndarray:
    yy, xx = np.mgrid[:shape[0], :shape[1]]
    return np.hypot(yy - centre[0], xx - centre[1]) <= radius


@pytest.mark.parametrize("side", ["top", "bottom", "left", "right"])
def test_depth_ratio_tells_more_than_half_a_disc_from_less(side: str) -> None:
    from astro3s.postprocess.border import border_depth_ratio, border_slivers

    shape, r = (64, 80), 8.0
    soma = np.zeros(shape, np.int32)
    # centre 4 px inside the edge (more than half inside), 4 px outside (less), one inside grazing nothing
    inside, outside = 4.0, -4.0
    where = {"top": lambda d, x: (d, x), "bottom": lambda d, x: (shape[0] - 1 - d, x),
             "left": lambda d, y: (y, d), "right": lambda d, y: (y, shape[1] - 1 - d)}[side]
    soma[_disc(shape, where(inside, 20), r)] = 1
    soma[_disc(shape, where(outside, 45), r)] = 2
    soma[_disc(shape, (32, 40), r)] = 3
    ratio = border_depth_ratio(soma)
    assert ratio[0] > 1.0 > ratio[1] > 0 and np.isinf(ratio[2])
    np.testing.assert_array_equal(border_slivers(soma), [False, True, False])
    assert not border_slivers(soma, min_ratio=0).any()                 # 0 flags none


def test_a_soma_grazing_the_edge_and_exactly_half_a_disc_are_kept() -> None:
    from astro3s.postprocess.border import border_depth_ratio, border_slivers

    soma = np.zeros((40, 40), np.int32)
    soma[_disc((40, 40), (8.0, 20.0), 8.0)] = 1                        # touches the top row in one pixel
    soma[20:31, 0:6] = 2                                               # a half "disc": 11 along the edge, 6 deep
    soma[_disc((40, 40), (39.0, 39.0), 5.0)] = 3                       # a corner quarter, judged by its worse side
    ratio = border_depth_ratio(soma)
    assert ratio[0] >= 8 and ratio[1] == pytest.approx(6 / 5.5)
    assert border_slivers(soma).tolist() == [False, False, False]
    assert border_depth_ratio(np.zeros((5, 5), np.int32)).shape == (0,)


def test_drop_border_slivers_removes_and_counts_and_can_be_switched_off(monkeypatch: pytest.MonkeyPatch) -> None:
    from astro3s.inference import cells
    from astro3s.postprocess import CombineParams
    from astro3s.postprocess.combine import _segmentation

    shape = (64, 64)
    soma = np.zeros(shape, np.int32)
    soma[_disc(shape, (30, 30), 7)] = 1
    soma[_disc(shape, (-3, 50), 7)] = 2                                # a sliver on the top edge
    processes = np.zeros(shape, np.int32)
    processes[29:32, 38:50] = 1
    processes[4:12, 49:52] = 2
    seg = _segmentation(soma, processes, 2, CombineParams(), {"cells": 2})
    out = cells.drop_border_slivers(seg)
    assert out.n_cells == 1 and out.counts["border_slivers_removed"] == 1
    np.testing.assert_array_equal(out.soma > 0, soma == 1)             # its processes went with it
    np.testing.assert_array_equal(out.processes > 0, processes == 1)
    assert cells.drop_border_slivers(seg, min_ratio=0) is seg
    monkeypatch.setattr(cells, "BORDER_SLIVER_RATIO", 0.0)
    assert cells.drop_border_slivers(seg) is seg


def test_apparent_radius_of_a_cut_soma_is_read_from_its_extent_along_the_edge() -> None:
    from astro3s.postprocess.border import apparent_soma_radii

    shape = (80, 80)
    soma = np.zeros(shape, np.int32)
    soma[_disc(shape, (40, 40), 10.0)] = 1                             # inside: the disc of its area
    soma[_disc(shape, (0, 20), 10.0)] = 2                              # half a disc on the top edge
    soma[_disc(shape, (50, 79), 10.0)] = 3                             # half a disc on the right edge
    soma[_disc(shape, (84, 60), 10.0)] = 4                             # a sliver: its chord, under its width
    radii = apparent_soma_radii(soma)
    assert radii[0] == pytest.approx(np.sqrt((soma == 1).sum() / np.pi))
    assert radii[1] == pytest.approx(10.5) and radii[2] == pytest.approx(10.5)   # 21 px along the edge
    assert np.sqrt((soma == 2).sum() / np.pi) < 8                    # its area alone reads ~7.3 px
    assert radii[3] < 10
    assert apparent_soma_radii(np.zeros((4, 4), np.int32)).shape == (0,)


def _edge_scene(blur_of_cut: float) -> tuple:
    # two in-focus somata inside the FOV (radius 12) and a third of the same radius cut in half by the top edge,
    # its edge as sharp as theirs (blur_of_cut 1.5) or defocused (blur_of_cut 5)
    from scipy import ndimage as ndi

    from astro3s.postprocess import CombineParams
    from astro3s.postprocess.combine import _segmentation

    shape = (120, 160)
    inside = (_disc(shape, (50, 40), 12) | _disc(shape, (70, 110), 12)).astype(float)
    cut = _disc(shape, (0, 80), 12).astype(float)
    image = (10 + 100 * ndi.gaussian_filter(inside, 1.5)
             + 100 * ndi.gaussian_filter(cut, blur_of_cut, mode="nearest")).astype(np.float32)
    soma = np.zeros(shape, np.int32)
    soma[_disc(shape, (50, 40), 12)] = 1
    soma[_disc(shape, (70, 110), 12)] = 2
    soma[_disc(shape, (0, 80), 12)] = 3
    return _segmentation(soma, np.zeros_like(soma), 3, CombineParams(), {"cells": 3}), image


def test_a_cut_soma_a_finer_pass_adds_is_judged_by_its_edge_in_pixels() -> None:
    from astro3s.postprocess.sharpness import remove_blurred_cells, soma_edge_blur

    seg, sharp = _edge_scene(1.5)
    first = np.array([True, True, False])
    # relative to its radius, read from half a disc's area, the cut soma looks blurred ...
    blur = soma_edge_blur(sharp, seg.soma)
    assert blur[2] > 1.3 * np.median(blur[:2])
    judged = {"max_relative_blur": 1.3, "min_cells": 1, "reference": first, "keep": first}
    assert remove_blurred_cells(seg, sharp, **judged).n_cells == 2
    # ... while its edge in pixels is as narrow as the others': kept; defocused, it goes either way
    assert remove_blurred_cells(seg, sharp, border_in_pixels=True, **judged).n_cells == 3
    seg, soft = _edge_scene(5.0)
    assert remove_blurred_cells(seg, soft, border_in_pixels=True, **judged).n_cells == 2


def test_a_cut_soma_a_finer_pass_adds_counts_with_the_disc_its_extent_gives() -> None:
    from astro3s.inference.cells import drop_small_additions

    seg, _ = _edge_scene(1.5)
    # half a disc is 0.5x the others' area, under a 0.6 floor; the disc of its extent is as large as theirs
    assert drop_small_additions(seg, 2, min_relative_area=0.6)[1] == 0
    kept, n_added = drop_small_additions(seg, 2, min_relative_area=0.6, border_radii=True)
    assert n_added == 1 and kept.n_cells == 3
