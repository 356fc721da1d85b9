"""Soma edge blur and the removal of out-of-focus look-alikes."""

from __future__ import annotations

import numpy as np
import pytest


def _scene(blurs: list[float], *, radius: float = 7.0, size: int = 160, seed: int = 0):
    """Discs of one radius, each blurred by its own Gaussian width, and their soma labels."""
    from scipy import ndimage as ndi

    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:size, :size]
    image = np.zeros((size, size), np.float32)
    labels = np.zeros((size, size), np.uint16)
    for k, sigma in enumerate(blurs, start=1):
        cy, cx = 30 + 50 * ((k - 1) // 3), 30 + 50 * ((k - 1) % 3)
        disc = (np.hypot(yy - cy, xx - cx) <= radius).astype(np.float32)
        image += ndi.gaussian_filter(disc, sigma) if sigma > 0 else disc
        labels[np.hypot(yy - cy, xx - cx) <= radius] = k
    return image + rng.normal(0, 0.01, image.shape).astype(np.float32), labels


def test_soma_edge_blur_grows_with_the_blur() -> None:
    from astro3s.postprocess.sharpness import soma_edge_blur

    image, labels = _scene([0.0, 1.0, 2.5, 5.0])
    blur = soma_edge_blur(image, labels)
    assert blur.shape == (4,)
    assert np.all(np.diff(blur) > 0)
    assert blur[0] < 0.6 and blur[3] > 1.5 * blur[0]
    # in pixels: the same widths times each soma's radius (all discs of radius 7 here)
    radius = np.sqrt(np.bincount(labels.ravel())[1:] / np.pi)
    np.testing.assert_allclose(soma_edge_blur(image, labels, relative=False), blur * radius, rtol=1e-12)
    # an id without pixels is NaN; a soma no brighter than around it is inf
    labels[labels == 2] = 0
    dark = image.copy()
    dark[labels == 3] = -1.0
    blur = soma_edge_blur(dark, labels)
    assert np.isnan(blur[1]) and np.isinf(blur[2])


def test_remove_blurred_cells_drops_only_the_outlier() -> None:
    from astro3s.postprocess import CombineParams
    from astro3s.postprocess.combine import _segmentation
    from astro3s.postprocess.sharpness import remove_blurred_cells

    image, labels = _scene([0.7, 0.8, 0.6, 0.7, 5.0])
    processes = np.zeros_like(labels)
    processes[labels == 0] = 0
    seg = _segmentation(labels, processes, 5, CombineParams(), {"cells": 5})
    kept = remove_blurred_cells(seg, image, max_relative_blur=1.5)
    assert kept.n_cells == 4 and kept.counts["blurred_removed"] == 1 and kept.counts["cells"] == 4
    assert set(np.unique(kept.soma)) == {0, 1, 2, 3, 4}
    assert (kept.soma[labels == 5] == 0).all()
    # too few cells for a median: nothing goes
    few = _segmentation(np.where(labels >= 4, labels - 3, 0).astype(np.uint16), processes, 2, CombineParams(), {})
    assert remove_blurred_cells(few, image, min_cells=3).n_cells == 2


def test_remove_blurred_cells_judges_only_the_cells_outside_the_reference() -> None:
    from astro3s.postprocess import CombineParams
    from astro3s.postprocess.combine import _segmentation
    from astro3s.postprocess.sharpness import remove_blurred_cells

    image, labels = _scene([0.7, 5.0, 0.6, 0.7, 5.0])
    seg = _segmentation(labels, np.zeros_like(labels), 5, CombineParams(), {"cells": 5})
    # cells 1-3 are the reference: blurred cell 2 stays (a reference cell is never judged), blurred cell 5 goes,
    # sharp cell 4 stays; the reference's median is that of its three cells
    reference = np.array([True, True, True, False, False])
    kept = remove_blurred_cells(seg, image, max_relative_blur=1.5, min_cells=1, reference=reference)
    assert kept.n_cells == 4 and kept.counts["blurred_removed"] == 1
    assert (kept.soma[labels == 5] == 0).all() and (kept.soma[labels == 2] > 0).all()
    # one reference cell is enough with min_cells=1; fewer reference cells than min_cells: nothing goes
    one = np.array([True, False, False, False, False])
    assert remove_blurred_cells(seg, image, min_cells=1, reference=one).counts["blurred_removed"] == 2
    assert remove_blurred_cells(seg, image, min_cells=2, reference=one).n_cells == 5
    with pytest.raises(ValueError, match="one flag per cell"):
        remove_blurred_cells(seg, image, reference=np.ones(3, bool))


def test_remove_blurred_cells_in_pixels_judges_large_soft_somata_by_their_edge_width() -> None:
    """Defocus widens edges by pixels: relative to a large soma's radius a soft blob looks sharp."""
    from scipy import ndimage as ndi

    from astro3s.postprocess import CombineParams
    from astro3s.postprocess.combine import _segmentation
    from astro3s.postprocess.sharpness import remove_blurred_cells

    yy, xx = np.mgrid[:200, :200]
    # three small sharp somata (the reference), a large sharp soma and a large soft blob of the same size
    cells = [(30, 30, 6, 0.8), (30, 80, 6, 0.8), (30, 130, 6, 0.8), (110, 50, 12, 0.8), (110, 140, 12, 2.5)]
    image = np.zeros((200, 200), np.float32)
    labels = np.zeros((200, 200), np.uint16)
    for k, (cy, cx, radius, sigma) in enumerate(cells, start=1):
        disc = np.hypot(yy - cy, xx - cx) <= radius
        image += ndi.gaussian_filter(disc.astype(np.float32), sigma)
        labels[disc] = k
    image += np.random.default_rng(0).normal(0, 0.01, image.shape).astype(np.float32)
    seg = _segmentation(labels, np.zeros_like(labels), 5, CombineParams(), {"cells": 5})
    reference = np.arange(5) < 3
    relative = remove_blurred_cells(seg, image, max_relative_blur=1.3, min_cells=1, reference=reference)
    assert relative.n_cells == 5  # the blob's edge is ~1.9x as wide, but under 1.3x relative to its radius
    in_pixels = remove_blurred_cells(seg, image, max_relative_blur=1.3, min_cells=1, reference=reference,
                                     in_pixels=True)
    assert in_pixels.n_cells == 4 and in_pixels.counts["blurred_removed"] == 1
    assert (in_pixels.soma[labels == 5] == 0).all() and (in_pixels.soma[labels == 4] > 0).all()


def test_max_relative_blur_is_checked() -> None:
    from astro3s.errors import ConfigError
    from astro3s.postprocess import CombineParams

    assert CombineParams().max_relative_blur == pytest.approx(1.5)
    assert CombineParams(max_relative_blur=None).max_relative_blur is None
    with pytest.raises(ConfigError, match="max_relative_blur"):
        CombineParams(max_relative_blur=0.5)


def test_remove_blurred_cells_never_removes_the_cells_kept() -> None:
    from astro3s.postprocess import CombineParams
    from astro3s.postprocess.combine import _segmentation
    from astro3s.postprocess.sharpness import remove_blurred_cells

    image, labels = _scene([5.0, 0.7, 0.6, 0.7, 5.0])
    seg = _segmentation(labels, np.zeros_like(labels), 5, CombineParams(), {"cells": 5})
    # every cell's median is the reference; cell 1 is as blurred as cell 5 but kept
    keep = np.array([True, False, False, False, False])
    kept = remove_blurred_cells(seg, image, max_relative_blur=1.5, min_cells=1, keep=keep)
    assert kept.n_cells == 4 and (kept.soma[labels == 1] > 0).all() and (kept.soma[labels == 5] == 0).all()
    assert remove_blurred_cells(seg, image, max_relative_blur=1.5, min_cells=1).n_cells == 3


def test_additions_that_outnumber_the_cells_found_before_are_judged_with_all_cells() -> None:
    """One sharp cell of a misjudged coarse pass must not remove the FOV's cells a finer pass finds."""
    from astro3s.inference import InferenceOptions, load_inference_model
    from astro3s.inference.cells import additions_dominate, drop_blurred_additions
    from astro3s.postprocess import CombineParams
    from astro3s.postprocess.combine import _segmentation

    same = np.full(8, 200)
    assert not additions_dominate(same[:4], 1) and additions_dominate(same[:5], 1) and additions_dominate(same[:6], 2)
    assert not additions_dominate(same, 3) and not additions_dominate(same[:3], 0) and additions_dominate(same[:4], 0)
    # specks beside giants are not the field's cells, however many
    assert not additions_dominate([2100, 2200, 90, 80, 95, 85], 2)
    assert additions_dominate([2100, 2200, 400, 380, 420, 390], 2)
    # cell 1 (found first) is sharp; four added ones are 1.6x softer (more than max_relative_blur 1.5), as
    # in-focus cells at another depth can be, and the fifth is a soft blob
    image, labels = _scene([0.3, 2.0, 2.0, 2.2, 2.0, 9.0])
    seg = _segmentation(labels, np.zeros_like(labels), 6, CombineParams(), {"cells": 6})

    class Pre:
        median_image = image

    _, options = load_inference_model("default", device="cpu", figures=False)
    assert isinstance(options, InferenceOptions)
    kept, n_added = drop_blurred_additions(seg, 1, Pre(), options)
    # judged with all cells: only the blob goes, the first cell stays
    assert n_added == 4 and kept.n_cells == 5 and (kept.soma[labels == 6] == 0).all()
    assert kept.counts["added_blurred_removed"] == 1
    # two additions beside one cell: judged against that cell, as before (both softer than 1.5x it)
    few = _segmentation(np.where(labels <= 3, labels, 0).astype(np.uint16), np.zeros_like(labels), 3,
                        CombineParams(), {"cells": 3})
    judged, n_few = drop_blurred_additions(few, 1, Pre(), options)
    assert n_few == 0 and judged.n_cells == 1


def _discs(cells: list[tuple[int, int, float, float]], size: int = 200):
    """Discs ``(cy, cx, radius, blur sigma)`` on a dark field with a little noise, and their soma labels."""
    from scipy import ndimage as ndi

    yy, xx = np.mgrid[:size, :size]
    image = np.zeros((size, size), np.float32)
    labels = np.zeros((size, size), np.uint16)
    for k, (cy, cx, radius, sigma) in enumerate(cells, start=1):
        disc = np.hypot(yy - cy, xx - cx) <= radius
        image += ndi.gaussian_filter(disc.astype(np.float32), sigma)
        labels[disc] = k
    return image + np.random.default_rng(0).normal(0, 0.01, image.shape).astype(np.float32), labels


def test_touches_border() -> None:
    from astro3s.postprocess.sharpness import touches_border

    labels = np.zeros((20, 30), np.uint16)
    labels[0, 5] = 1          # top row
    labels[10, 10:12] = 2     # inside
    labels[8:12, 29] = 3      # right column
    labels[19, 0] = 5         # bottom-left corner; id 4 has no pixel
    assert touches_border(labels).tolist() == [True, False, True, False, True]
    assert touches_border(np.zeros((4, 4), np.uint8)).shape == (0,)


def test_small_in_focus_somata_are_not_called_blurred() -> None:
    """The edge relative to the radius grows as a soma shrinks; its width in pixels does not."""
    from astro3s.postprocess import CombineParams
    from astro3s.postprocess.combine import _segmentation
    from astro3s.postprocess.sharpness import remove_blurred_cells, soma_edge_blur

    psf = 1.0
    # five D1-size somata, two small in-focus ones (a dense FOV's), one out-of-focus blob, and a small
    # in-focus fragment cut by the right border of the image
    cells = [(30, 30, 8, psf), (30, 80, 8, psf), (30, 130, 8, psf), (80, 30, 8, psf), (80, 80, 8, psf),
             (80, 130, 3.5, psf), (130, 30, 3.5, psf), (130, 100, 6, 3.0), (150, 197, 4.5, psf)]
    image, labels = _discs(cells)
    seg = _segmentation(labels, np.zeros_like(labels), len(cells), CombineParams(), {"cells": len(cells)})
    relative = soma_edge_blur(image, labels)
    assert relative[5] > 1.5 * np.median(relative)  # the small in-focus somata read blurred relative to r
    alone = remove_blurred_cells(seg, image, max_relative_blur=1.5)
    assert all((alone.soma[labels == k] == 0).all() for k in (6, 7, 8, 9))
    widened = remove_blurred_cells(seg, image, max_relative_blur=1.5, min_pixel_widening=1.2)
    # the small in-focus somata stay, the blob goes, and so does the border fragment (judged relative to r)
    assert widened.n_cells == len(cells) - 2 and widened.counts["blurred_removed"] == 2
    assert (widened.soma[labels == 6] > 0).all() and (widened.soma[labels == 7] > 0).all()
    assert (widened.soma[labels == 8] == 0).all() and (widened.soma[labels == 9] == 0).all()


def test_min_pixel_widening_is_checked_and_on_by_default() -> None:
    from astro3s.errors import ConfigError
    from astro3s.postprocess import CombineParams

    assert CombineParams().min_pixel_widening == pytest.approx(1.2)
    assert CombineParams(min_pixel_widening=None).min_pixel_widening is None
    with pytest.raises(ConfigError, match="min_pixel_widening"):
        CombineParams(min_pixel_widening=0.9)


@pytest.mark.parametrize("widening", [1.2, None])
def test_segment_preprocessed_passes_the_pixel_condition(monkeypatch, widening) -> None:
    """The whole-FOV look-alike rule gets CombineParams.min_pixel_widening (None: the relative test alone)."""
    from types import SimpleNamespace

    import astro3s.inference.segment as segment
    import astro3s.postprocess as postprocess
    import astro3s.postprocess.sharpness as sharpness
    from astro3s.postprocess import CombineParams

    seen: dict = {}
    monkeypatch.setattr(segment, "predict_crops_zoomed", lambda *a, **k: (np.zeros((0, 3, 8, 8)), np.zeros((0, 4))))
    monkeypatch.setattr(segment, "predict_fov", lambda *a, **k: np.zeros((3, 8, 8)))
    monkeypatch.setattr(postprocess, "combine", lambda *a, **k: "seg")
    monkeypatch.setattr(sharpness, "remove_blurred_cells", lambda seg, image, **k: seen.update(k) or seg)
    pre = SimpleNamespace(params=None, median_image=np.ones((8, 8), np.float32))
    out = segment.segment_preprocessed(pre, model=None, combine=CombineParams(min_pixel_widening=widening))
    assert out == "seg" and seen["min_pixel_widening"] == widening and seen["max_relative_blur"] == 1.5


def test_the_pixel_condition_is_for_crowded_fovs(monkeypatch) -> None:
    import astro3s.inference.cells as cells

    base = {"soma_area_range": (40.0, 300.0)}
    # crowded: the CombineParams default (1.2) stays; not crowded: off, unless the user's combine set it
    assert "min_pixel_widening" not in cells.with_pixel_widening_for(base, crowded=True)
    sparse = cells.with_pixel_widening_for(base, crowded=False)
    assert sparse == {**base, "min_pixel_widening": None} and "min_pixel_widening" not in base
    mine = {**base, "min_pixel_widening": 1.3}
    assert cells.with_pixel_widening_for(mine, crowded=False) == mine
    # segment_movie's overrides hold the user's combine (size_filter_overrides copies it)
    user = cells.size_filter_overrides({"min_pixel_widening": 1.3}, {}, (89.0, 345.0))
    assert cells.with_pixel_widening_for(user, crowded=False)["min_pixel_widening"] == 1.3
    assert "min_pixel_widening" not in cells.with_pixel_widening_for(base, crowded=False, on_sparse=True)
    monkeypatch.setattr(cells, "PIXEL_WIDENING_ON_SPARSE", True)  # the default, read when on_sparse is None
    assert "min_pixel_widening" not in cells.with_pixel_widening_for(base, crowded=False)
