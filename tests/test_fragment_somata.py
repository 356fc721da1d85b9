"""A "soma" far smaller than the soma it is joined to is that cell's process swelling (2026-12-05, night)."""

from __future__ import annotations

import numpy as np
import pytest


def _giant_with_swelling() -> tuple[np.ndarray, np.ndarray]:
    """Cell 1: a 40x40 soma (1600 px) with a 4-px wide process carrying a 6x6 "soma" (cell 2, 36 px,
    0.0225x); cell 3: a 12x12 soma (144 px) alone; cell 4: a 30x30 soma joined to cell 1 by a process
    (900 px, 0.56x: a neighbour, not a fragment)."""
    soma = np.zeros((200, 200), np.int32)
    processes = np.zeros_like(soma)
    soma[20:60, 20:60] = 1
    processes[38:42, 60:100] = 1
    soma[37:43, 100:106] = 2
    processes[38:42, 106:120] = 2
    soma[150:162, 150:162] = 3
    processes[60:120, 38:42] = 1
    soma[120:150, 25:55] = 4
    return soma, processes


def test_a_small_soma_on_a_large_cells_process_becomes_its_processes() -> None:
    from astro3s.postprocess import absorb_fragment_somata

    soma, processes = _giant_with_swelling()
    new_soma, new_processes, absorbed = absorb_fragment_somata(soma, processes, max_ratio=0.15)
    assert absorbed == 1
    # the swelling and its own processes are cell 1's processes now; the cells after it renumbered
    assert np.all(new_processes[37:43, 100:106] == 1) and np.all(new_processes[38:42, 106:120] == 1)
    assert not new_soma[37:43, 100:106].any()
    assert np.all(new_soma[150:162, 150:162] == 2) and np.all(new_soma[120:150, 25:55] == 3)
    # nothing added or lost: the same foreground, no pixel in both images
    np.testing.assert_array_equal((new_soma > 0) | (new_processes > 0), (soma > 0) | (processes > 0))
    assert not np.any((new_soma > 0) & (new_processes > 0))
    assert sorted(np.unique(new_soma[new_soma > 0])) == [1, 2, 3]


def test_neighbours_of_similar_size_and_lone_small_cells_stay() -> None:
    from astro3s.postprocess import absorb_fragment_somata

    soma, processes = _giant_with_swelling()
    # at 0.02 the 0.0225x swelling is kept too: nothing changes
    new_soma, new_processes, absorbed = absorb_fragment_somata(soma, processes, max_ratio=0.02)
    assert absorbed == 0
    np.testing.assert_array_equal(new_soma, soma)
    np.testing.assert_array_equal(new_processes, processes)
    # one cell alone: nothing to compare
    one = np.where(soma == 3, 1, 0)
    assert absorb_fragment_somata(one, np.zeros_like(one), max_ratio=0.15)[2] == 0
    with pytest.raises(ValueError, match="max_ratio"):
        absorb_fragment_somata(soma, processes, max_ratio=1.5)


def test_segment_movie_rule_counts_and_can_be_turned_off() -> None:
    from astro3s.inference.cells import with_fragments_absorbed
    from astro3s.postprocess import CombineParams
    from astro3s.postprocess.combine import _segmentation

    soma, processes = _giant_with_swelling()
    seg = _segmentation(soma, processes, 4, CombineParams(), {"cells": 4})
    kept = with_fragments_absorbed(seg, max_ratio=0.15)
    assert kept.n_cells == 3 and kept.counts["fragments_absorbed"] == 1 and kept.counts["cells"] == 3
    assert kept.process_area[0] == seg.process_area[0] + seg.soma_area[1] + seg.process_area[1]
    assert with_fragments_absorbed(seg, max_ratio=None) is seg
    assert with_fragments_absorbed(seg, max_ratio=0) is seg


def _two_discs(blur_second: float) -> tuple[np.ndarray, np.ndarray]:
    """A median image with a sharp 15-px-radius disc and a second disc blurred by ``blur_second`` px,
    and their soma labels (1: the sharp one)."""
    from scipy import ndimage

    yy, xx = np.mgrid[:160, :160]
    first = np.hypot(yy - 50, xx - 50) < 15
    second = np.hypot(yy - 110, xx - 110) < 15
    image = 10 + 100 * ndimage.gaussian_filter(first.astype(float), 1.0) \
        + 100 * ndimage.gaussian_filter(second.astype(float), blur_second)
    soma = first.astype(np.int32) + 2 * second
    return image.astype(np.float32), soma


@pytest.mark.parametrize(("blur_second", "kept"), [(1.0, 2), (1.3, 2), (4.0, 1)])
def test_of_two_cells_the_one_with_a_much_wider_edge_goes(blur_second: float, kept: int) -> None:
    from types import SimpleNamespace

    from astro3s.inference.cells import drop_blurred_pair
    from astro3s.inference.pipeline import InferenceOptions
    from astro3s.postprocess import CombineParams
    from astro3s.preprocess import PreprocessParams
    from astro3s.postprocess.combine import _segmentation

    image, soma = _two_discs(blur_second)
    seg = _segmentation(soma, np.zeros_like(soma), 2, CombineParams(), {"cells": 2})
    out = drop_blurred_pair(seg, SimpleNamespace(median_image=image), InferenceOptions(PreprocessParams()))
    assert out.n_cells == kept and out.counts["pair_blurred_removed"] == 2 - kept
    if kept == 1:
        np.testing.assert_array_equal(out.soma > 0, soma == 1)  # the sharp one stays
    # three cells: the median rule's business, not this one's
    three = np.where(soma == 0, 0, soma)
    three[5:15, 140:150] = 3
    seg3 = _segmentation(three, np.zeros_like(three), 3, CombineParams(), {"cells": 3})
    assert drop_blurred_pair(seg3, SimpleNamespace(median_image=image), InferenceOptions(PreprocessParams())) is seg3
    # the rule is the combination's blur rule: off with it
    off = InferenceOptions(PreprocessParams(), combine={"max_relative_blur": None})
    assert drop_blurred_pair(seg, SimpleNamespace(median_image=image), off) is seg


def test_a_large_cell_is_not_judged_against_its_own_fragments() -> None:
    """The large-soma pass's edge test: a soft-edged large soma among sharp small cells goes, unless those
    small cells are its own pieces (joined to it, or under FRAGMENT_SOMA_RATIO of its area)."""
    from scipy import ndimage

    from astro3s.inference.cells import _wide_edged_additions
    from astro3s.postprocess import CombineParams
    from astro3s.postprocess.combine import _segmentation

    yy, xx = np.mgrid[:300, :300]
    big = np.hypot(yy - 150, xx - 150) < 28  # ~2460 px, the added cell (id 4)
    small = [np.hypot(yy - y, xx - x) < 10 for y, x in ((40, 40), (40, 260), (260, 40))]  # ~310 px each
    image = 10 + 100 * ndimage.gaussian_filter(big.astype(float), 3.0)
    for disc in small:
        image += 100 * ndimage.gaussian_filter(disc.astype(float), 1.0)
    soma = np.zeros((300, 300), np.int32)
    for k, disc in enumerate(small, start=1):
        soma[disc] = k
    soma[big] = 4
    seg = _segmentation(soma, np.zeros_like(soma), 4, CombineParams(), {})
    # three cells of its size class elsewhere in the FOV: its wide edge is out of focus
    many = [np.hypot(yy - y, xx - x) < 16 for y, x in ((40, 40), (40, 260), (260, 40))]
    soma_many = np.where(big, 4, 0)
    image_many = 10 + 100 * ndimage.gaussian_filter(big.astype(float), 3.0)
    for k, disc in enumerate(many, start=1):
        soma_many[disc] = k
        image_many += 100 * ndimage.gaussian_filter(disc.astype(float), 1.0)
    seg_many = _segmentation(soma_many, np.zeros_like(soma_many), 4, CombineParams(), {})
    assert _wide_edged_additions(seg_many, 3, image_many.astype(np.float32)).tolist() == [False] * 3 + [True]
    # small cells (0.13x its area): pieces, not a reference for its focus -> it stays
    assert not _wide_edged_additions(seg, 3, image.astype(np.float32)).any()
    # without the fragment rule (rules.fragment_ratio=0) they are the reference again (the test before
    # 2026-12-05 night)
    processes = np.zeros_like(soma)
    assert _wide_edged_additions(_segmentation(soma, processes, 4, CombineParams(), {}), 3,
                                 image.astype(np.float32), fragment_ratio=0.0)[3]


def test_two_joined_cells_are_not_judged_by_their_edges() -> None:
    # a soft cell joined to a sharp one through a process: the sharp "soma" may be a piece of the other's
    # process, so neither goes
    from types import SimpleNamespace

    from astro3s.inference.cells import drop_blurred_pair
    from astro3s.inference.pipeline import InferenceOptions
    from astro3s.postprocess import CombineParams
    from astro3s.postprocess.combine import _segmentation
    from astro3s.preprocess import PreprocessParams

    image, soma = _two_discs(4.0)
    processes = np.zeros_like(soma)
    diagonal = np.arange(50, 111)
    processes[diagonal, diagonal] = 1  # a process from one disc to the other
    processes[diagonal[:-1], diagonal[:-1] + 1] = 1
    processes[soma > 0] = 0
    seg = _segmentation(soma, processes, 2, CombineParams(), {"cells": 2})
    out = drop_blurred_pair(seg, SimpleNamespace(median_image=image), InferenceOptions(PreprocessParams()))
    assert out.n_cells == 2 and out.counts["pair_blurred_removed"] == 0


def test_of_two_cells_the_wider_edged_one_goes_only_if_it_is_also_the_dimmer(monkeypatch: pytest.MonkeyPatch) -> None:
    # cross-check `zoom_4`: the FOV's one bright, soft-edged astrocyte and a faint patch of texture with a
    # steep edge; by edge width alone the bright cell went. Defocus spreads a cell's light: the out-of-focus
    # one of two is also the dimmer, so here neither goes
    from types import SimpleNamespace

    from scipy import ndimage

    import astro3s.inference.cells as cells
    from astro3s.inference.pipeline import InferenceOptions
    from astro3s.postprocess import CombineParams
    from astro3s.postprocess.combine import _segmentation
    from astro3s.preprocess import PreprocessParams

    yy, xx = np.mgrid[:160, :160]
    bright = np.hypot(yy - 50, xx - 50) < 15
    faint = np.hypot(yy - 110, xx - 110) < 15
    image = (10 + 100 * ndimage.gaussian_filter(bright.astype(float), 4.0)
             + 12 * ndimage.gaussian_filter(faint.astype(float), 1.0)).astype(np.float32)
    soma = bright.astype(np.int32) + 2 * faint
    seg = _segmentation(soma, np.zeros_like(soma), 2, CombineParams(), {"cells": 2})
    pre, options = SimpleNamespace(median_image=image), InferenceOptions(PreprocessParams())
    out = cells.drop_blurred_pair(seg, pre, options)
    assert out.n_cells == 2 and out.counts["pair_blurred_removed"] == 0
    before = InferenceOptions(PreprocessParams(), rules={"pair_blur_contrast": False})  # the rule before
    out = cells.drop_blurred_pair(seg, pre, before)  # the bright cell went
    assert out.n_cells == 1
    np.testing.assert_array_equal(out.soma > 0, faint)


def test_a_binned_fov_loses_its_cells_far_fainter_than_its_clearest_soma() -> None:
    # cross-check `zoom`: beside a FOV's bright giant soma the network drew "cells" in the dim fibre texture,
    # standing out 0.03-0.15 of the clearest soma; true cells stood out >= 0.34
    from scipy import ndimage

    from astro3s.inference.cells import drop_faint_cells
    from astro3s.postprocess import CombineParams
    from astro3s.postprocess.combine import _segmentation

    yy, xx = np.mgrid[:200, :200]
    discs = [np.hypot(yy - y, xx - x) < 20 for y, x in ((50, 50), (50, 150), (150, 100))]
    image = 10.0 + 100 * ndimage.gaussian_filter(discs[0].astype(float), 1.5)   # the clearest soma
    image += 40 * ndimage.gaussian_filter(discs[1].astype(float), 1.5)           # a dimmer true cell: 0.4
    image += 8 * ndimage.gaussian_filter(discs[2].astype(float), 1.5)            # a faint patch: 0.08
    soma = np.zeros((200, 200), np.int32)
    for k, disc in enumerate(discs, start=1):
        soma[disc] = k
    processes = np.where(np.abs(yy - 100) < 2, 3, 0).astype(np.int32) * (soma == 0)
    seg = _segmentation(soma, processes, 3, CombineParams(), {"cells": 3})
    out = drop_faint_cells(seg, image.astype(np.float32))
    assert out.n_cells == 2 and out.counts["faint_removed"] == 1
    np.testing.assert_array_equal(out.soma > 0, discs[0] | discs[1])
    assert not (out.processes > 0).any()  # the faint cell's processes went with it
    # off, a higher bar, and a FOV of one cell
    assert drop_faint_cells(seg, image.astype(np.float32), min_relative_contrast=0).n_cells == 3
    assert drop_faint_cells(seg, image.astype(np.float32), min_relative_contrast=0.5).n_cells == 1
    one = _segmentation((soma == 3).astype(np.int32), np.zeros_like(soma), 1, CombineParams(), {"cells": 1})
    assert drop_faint_cells(one, image.astype(np.float32)) is one


def test_at_a_fovs_own_scale_the_faint_rule_can_read_contrast_against_the_median_soma() -> None:
    # the option of 2026-12-06 (seventh session): relative to the FOV's median soma, not its clearest
    from scipy import ndimage

    from astro3s.inference.cells import drop_faint_cells
    from astro3s.postprocess import CombineParams
    from astro3s.postprocess.combine import _segmentation

    yy, xx = np.mgrid[:200, :300]
    centres = ((50, 50), (50, 150), (50, 250), (150, 100), (150, 200))
    discs = [np.hypot(yy - y, xx - x) < 15 for y, x in centres]
    image = np.full((200, 300), 10.0)
    for disc, height in zip(discs, (200, 40, 40, 40, 8)):   # one very clear soma, three alike, one faint
        image += height * ndimage.gaussian_filter(disc.astype(float), 1.5)
    soma = np.zeros((200, 300), np.int32)
    for k, disc in enumerate(discs, start=1):
        soma[disc] = k
    seg = _segmentation(soma, np.zeros_like(soma), 5, CombineParams(), {"cells": 5})
    image = image.astype(np.float32)
    # against the clearest (200) the alike cells read 0.2 and go with the faint one at 0.25; against the
    # median (40) only the faint one (0.2) goes
    assert drop_faint_cells(seg, image, min_relative_contrast=0.25).n_cells == 1
    out = drop_faint_cells(seg, image, min_relative_contrast=0.25, reference="median")
    assert out.n_cells == 4 and out.counts["faint_removed"] == 1
    np.testing.assert_array_equal(out.soma > 0, soma.astype(bool) & ~discs[4])
    with pytest.raises(ValueError, match="reference"):
        drop_faint_cells(seg, image, min_relative_contrast=0.25, reference="mean")


def test_the_faint_rules_reference_can_be_capped_so_one_outlier_bright_soma_does_not_set_the_bar() -> None:
    # randomised_s5000: one soma far brighter than the rest (its dark nucleus filled as a ring core) took the
    # clearest contrast to 923 against 102-462, and 8 true cells fell under 0.2 of it

    from astro3s.inference.cells import drop_faint_cells
    from astro3s.postprocess import CombineParams
    from astro3s.postprocess.combine import _segmentation

    yy, xx = np.mgrid[:200, :400]
    centres = ((50, 50), (50, 150), (50, 250), (50, 350), (150, 100), (150, 300))
    levels = (400.0, 60.0, 50.0, 70.0, 55.0, 4.0)  # one outlier, four ordinary cells, one faint patch
    discs = [np.hypot(yy - y, xx - x) < 18 for y, x in centres]
    seg, image = _painted_somata(discs, levels, sigma=1.5)
    assert drop_faint_cells(seg, image).n_cells == 1  # against the outlier, every ordinary cell is faint
    capped = drop_faint_cells(seg, image, reference_cap=2.0)  # at most 2x the median soma: only the patch goes
    assert capped.n_cells == 5 and capped.counts["faint_removed"] == 1
    assert not (capped.soma[discs[-1]] > 0).any()
    # a FOV without an outlier reads the same with the cap
    soma = seg.soma
    tame = _segmentation(np.where(soma == 1, 0, soma), np.zeros_like(soma), len(discs), CombineParams(), {})
    assert drop_faint_cells(tame, image).n_cells == drop_faint_cells(tame, image, reference_cap=2.0).n_cells


def test_a_faint_soma_that_looks_like_one_keeps_its_cell() -> None:
    # eighteenth session: under 0.3 of the FOV's median soma lay haze patches, out-of-focus cells and boutons
    # (ragged or small) and the dim, compact, typical-size somata of `d1_like`; only the first go

    from astro3s.inference.cells import drop_faint_cells

    yy, xx = np.mgrid[:200, :500]
    radius = np.hypot(yy - 150, xx - 100)
    shapes = [np.hypot(yy - 50, xx - x) < 15 for x in (50, 150, 250, 350)]   # four ordinary somata
    shapes.append(np.hypot(yy - 150, xx - 200) < 15)                          # a dim compact soma of their size
    shapes.append(np.hypot(yy - 150, xx - 300) < 7)                           # a dim small blob (0.2x)
    star = (radius < 22) & ((np.abs(yy - 150) < 4) | (np.abs(xx - 100) < 4) | (radius < 8))
    shapes.append(star)                                                       # a dim ragged patch
    seg, image = _painted_somata(shapes, (40.0, 40.0, 40.0, 40.0, 8.0, 8.0, 8.0), sigma=1.0)
    strict = drop_faint_cells(seg, image, min_relative_contrast=0.3, reference="median")
    assert strict.n_cells == 4 and strict.counts["faint_removed"] == 3
    kept = drop_faint_cells(seg, image, min_relative_contrast=0.3, reference="median", keep_solidity=0.9,
                            keep_area_ratio=0.7)
    assert kept.n_cells == 5 and kept.counts["faint_removed"] == 2
    np.testing.assert_array_equal(kept.soma > 0, np.any(shapes[:5], axis=0))
    # each condition alone lets the small blob (solid) or the ragged patch (of the somata's size) through
    assert drop_faint_cells(seg, image, min_relative_contrast=0.3, reference="median",
                            keep_solidity=0.9).n_cells == 6
    assert drop_faint_cells(seg, image, min_relative_contrast=0.3, reference="median",
                            keep_area_ratio=0.7).n_cells == 6


def _painted_somata(masks: list[np.ndarray], levels: tuple[float, ...], *, sigma: float):
    """A segmentation of one cell per mask (ids in order, no processes) and a median image of 10 plus each mask
    blurred by ``sigma`` px at its level."""
    from scipy import ndimage

    from astro3s.postprocess import CombineParams
    from astro3s.postprocess.combine import _segmentation

    image = np.full(masks[0].shape, 10.0)
    soma = np.zeros(masks[0].shape, np.int32)
    for k, (mask, level) in enumerate(zip(masks, levels), start=1):
        image += level * ndimage.gaussian_filter(mask.astype(float), sigma)
        soma[mask] = k
    seg = _segmentation(soma, np.zeros_like(soma), len(masks), CombineParams(), {"cells": len(masks)})
    return seg, image.astype(np.float32)
