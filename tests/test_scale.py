"""Soma scale from the image (blob scale selection) and the re-scaled enhancement of large somata."""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import pytest


def _discs(radius: float, *, n: int = 6, size: int = 256, seed: int = 0) -> np.ndarray:
    """Bright soft discs of one radius on a noisy, uneven background."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32)
    image = 0.2 + 0.05 * np.sin(xx / 40.0) + rng.normal(0, 0.03, (size, size)).astype(np.float32)
    step = size / (math.ceil(math.sqrt(n)) + 1)
    centres = [(step * (1 + i // 3), step * (1 + i % 3)) for i in range(n)]
    for cy, cx in centres:
        image += 1.0 / (1.0 + np.exp(np.minimum((np.hypot(yy - cy, xx - cx) - radius) / 0.8, 50.0)))
    return image


@pytest.mark.parametrize("radius", [3.5, 8.0, 16.0, 30.0])
def test_blob_soma_area_reads_the_disc_size(radius: float) -> None:
    from astro3s.preprocess import blob_soma_area

    area = blob_soma_area(_discs(radius, size=max(256, int(12 * radius)), n=4 if radius > 20 else 6))
    # the scales are 1.25x apart (1.56x in area): the estimate is within one step
    assert area == pytest.approx(math.pi * radius**2, rel=0.6)


def test_blob_soma_area_of_one_large_cell_is_its_soma_not_its_branch_specks() -> None:
    # one 2800-px soma and 24 small bright specks along its branches (a single-cell D2 FOV): the
    # specks, within 3 radii of a blob twice as wide and twice as strong, are the cell's own texture
    from astro3s.preprocess import blob_soma_area

    size, radius = 192, 30.0
    yy, xx = np.mgrid[:size, :size]
    image = np.where(np.hypot(yy - 96, xx - 96) <= radius, 1.0, 0.0)
    angles = np.linspace(0, 2 * np.pi, 24, endpoint=False)
    for k, angle in enumerate(angles):  # specks at 1.3-2.6 radii, radius 3-4 px, 0.3x as bright
        d = radius * (1.3 + 1.3 * (k % 4) / 3)
        cy, cx = 96 + d * np.sin(angle), 96 + d * np.cos(angle)
        image = np.maximum(image, np.where(np.hypot(yy - cy, xx - cx) <= 3 + k % 2, 0.3, 0.0))
    area = blob_soma_area(image.astype(np.float32))
    assert area == pytest.approx(math.pi * radius**2, rel=0.6)
    # without the rules the specks outvote the soma
    assert blob_soma_area(image.astype(np.float32), dominance=np.inf, wide_dominance=np.inf) < 200


def test_blob_soma_area_of_a_lone_cell_whose_junctions_answer_as_strongly_as_its_soma() -> None:
    # a lone high-zoom astrocyte (cross-check `zoom`): 24 specks along its branches, 0.7x as bright as its
    # soma, answer the LoG 0.7x as strongly, so none is silenced for being twice as weak; they are 7-10x
    # narrower, which WIDE_DOMINANCE reads as the cell's own texture
    from astro3s.preprocess import blob_soma_area

    size, radius = 256, 30.0
    yy, xx = np.mgrid[:size, :size]
    image = np.where(np.hypot(yy - 128, xx - 128) <= radius, 1.0, 0.0)
    for k, angle in enumerate(np.linspace(0, 2 * np.pi, 24, endpoint=False)):
        d = radius * (1.5 + 1.5 * (k % 4) / 3)
        cy, cx = 128 + d * np.sin(angle), 128 + d * np.cos(angle)
        image = np.maximum(image, np.where(np.hypot(yy - cy, xx - cx) <= 3 + k % 2, 0.7, 0.0))
    image = image.astype(np.float32)
    assert blob_soma_area(image, wide_dominance=np.inf) < 200
    assert blob_soma_area(image) == pytest.approx(math.pi * radius**2, rel=0.6)


def test_blob_soma_area_of_a_fov_mixing_soma_sizes_keeps_its_small_somata() -> None:
    # a 800-px soma among 12 somata of 110 px as bright (held-out `mixed`: 100-800 px): 2.7x wider, under
    # WIDE_DOMINANCE, so the small somata near it still vote and the FOV reads at their scale
    from astro3s.preprocess import blob_soma_area

    image = _discs(6.0, size=256, n=12)
    yy, xx = np.mgrid[:256, :256]
    image = image + (np.hypot(yy - 128, xx - 128) <= 16).astype(np.float32)
    assert blob_soma_area(image) == blob_soma_area(image, wide_dominance=np.inf)
    assert blob_soma_area(image) < 300


def test_a_large_faint_blotch_silences_nothing(monkeypatch: pytest.MonkeyPatch) -> None:
    # a faint 40-px-radius blotch (a background patch, an out-of-focus cell) with 12 specks on it, beside two
    # bright small somata: the blotch is 18x wider than the specks and as strong, but under half the
    # strongest blob (WIDE_DOMINANCE_STRENGTH), so it silences none of them and the somata's scale is read
    from astro3s.preprocess import blob_soma_area, scale

    image = _discs(6.0, size=256, n=2)
    yy, xx = np.mgrid[:256, :256]
    image = image + 0.4 * (np.hypot(yy - 200, xx - 128) <= 40)
    for angle in np.linspace(0, 2 * np.pi, 12, endpoint=False):
        cy, cx = 200 + 25 * np.sin(angle), 128 + 25 * np.cos(angle)
        image = image + 0.4 * (np.hypot(yy - cy, xx - cx) <= 2)
    image = image.astype(np.float32)
    assert blob_soma_area(image) == blob_soma_area(image, wide_dominance=np.inf) < 300
    # the guard is what keeps them: without it the specks are silenced and the blotch sets the scale
    monkeypatch.setattr(scale, "WIDE_DOMINANCE_STRENGTH", 0.0)
    assert blob_soma_area(image) > 2000


def test_blob_soma_area_keeps_every_soma_of_a_crowded_fov() -> None:
    # neighbours of one size never silence each other: the rule needs a blob twice as wide and strong
    from astro3s.preprocess import blob_soma_area

    image = _discs(7.0, size=256, n=12)
    assert blob_soma_area(image) == blob_soma_area(image, dominance=np.inf, wide_dominance=np.inf)


def test_blob_soma_area_of_a_flat_image_is_none() -> None:
    from astro3s.preprocess import blob_soma_area

    assert blob_soma_area(np.ones((64, 64), np.float32)) is None


def test_clahe_tiles_for_scale() -> None:
    from astro3s.preprocess import clahe_tiles_for_scale

    assert clahe_tiles_for_scale((8, 8), 1.0) == (8, 8)
    assert clahe_tiles_for_scale((8, 8), 2.0) == (4, 4)
    assert clahe_tiles_for_scale((8, 8), 10.0) == (2, 2)
    assert clahe_tiles_for_scale((8, 8), 0.5) == (8, 8)  # never more tiles than the parameters'


def test_clahe_tiles_for_shape() -> None:
    from astro3s.preprocess import clahe_tiles_for_shape

    assert clahe_tiles_for_shape((8, 8), (256, 256), min_tile=32) == (8, 8)  # ASTRA's D1 grid unchanged
    assert clahe_tiles_for_shape((8, 8), (512, 512), min_tile=32) == (8, 8)  # never more tiles than asked
    assert clahe_tiles_for_shape((8, 8), (100, 100), min_tile=32) == (3, 3)
    assert clahe_tiles_for_shape((8, 8), (75, 125), min_tile=32) == (2, 4)
    assert clahe_tiles_for_shape((8, 8), (10, 300), min_tile=32) == (1, 8)
    assert clahe_tiles_for_shape((8, 8), (100, 100), min_tile=0) == (8, 8)  # 0: off


def test_small_fov_somata_are_enhanced_whole_not_into_texture() -> None:
    """On a 100-px FOV, 8 x 8 tiles are 12 px: a soma fills whole tiles, whose equalisation
    spreads its own pixels over the grey range; 32-px tiles keep it uniformly bright."""
    from astro3s.preprocess import enhance_image

    image = _discs(8.0, n=4, size=100)
    yy, xx = np.mgrid[0:100, 0:100]
    step = 100 / 3
    inside = np.zeros(image.shape, bool)
    for i in range(4):
        inside |= np.hypot(yy - step * (1 + i // 3), xx - step * (1 + i % 3)) < 6.0
    bright_whole = (enhance_image(image, min_tile=32)[inside] > 0.7).mean()
    bright_texture = (enhance_image(image, min_tile=0)[inside] > 0.7).mean()
    assert bright_whole > 0.9
    assert bright_texture < bright_whole - 0.2
    np.testing.assert_array_equal(enhance_image(image, min_tile=32), enhance_image(image, tiles=(3, 3)))


def test_clahe_min_tile_is_validated() -> None:
    from astro3s.errors import ConfigError
    from astro3s.preprocess import PreprocessParams

    with pytest.raises(ConfigError, match="clahe_min_tile"):
        PreprocessParams(clahe_min_tile=-1)


def test_reselect_with_other_clahe_tiles_equals_a_fresh_run(simulated) -> None:
    from astro3s.io import read_movie
    from astro3s.preprocess import PreprocessParams, preprocess, reselect_candidates

    folder = simulated("tiny", 3)
    # clahe_min_tile=0: on this ~100-px FOV the 32-px floor would make both grids 3 x 3
    params = PreprocessParams(soma_area_range=(20, 120), clahe_min_tile=0)
    other = params.replace(clahe_tiles=(4, 4), soma_area_range=(30, 200))
    with read_movie(folder / f"{folder.name}.tif") as movie:
        again = reselect_candidates(preprocess(movie, params, progress=False), other)
        fresh = preprocess(movie, other, progress=False)
    np.testing.assert_array_equal(again.enhanced, fresh.enhanced)
    np.testing.assert_array_equal(again.candidates, fresh.candidates)
    np.testing.assert_array_equal(again.crops, fresh.crops)
    # without the median image (a pre-processing loaded from a file) the enhancement cannot be redone
    import dataclasses

    with pytest.raises(ValueError, match="clahe_tiles"):
        reselect_candidates(dataclasses.replace(fresh, median_image=None), params)


def test_bin_frames_means_blocks_and_pads_odd_sides() -> None:
    from astro3s.preprocess import bin_frames

    frames = np.arange(2 * 5 * 6, dtype=np.float32).reshape(2, 5, 6)
    binned = bin_frames(frames, 2)
    assert binned.shape == (2, 3, 3) and binned.dtype == np.float32
    assert binned[0, 0, 0] == pytest.approx(frames[0, :2, :2].mean())
    # the last, half-filled row of blocks repeats the frame's last row
    assert binned[1, 2, 1] == pytest.approx(frames[1, 4, 2:4].mean())
    np.testing.assert_array_equal(bin_frames(frames, 1), frames)
    with pytest.raises(ValueError, match="factor"):
        bin_frames(frames, 0)


def test_binned_frames_is_a_lazy_binned_movie() -> None:
    from astro3s.io import Movie
    from astro3s.preprocess import BinnedFrames, bin_frames

    rng = np.random.default_rng(0)
    data = rng.random((7, 20, 18), dtype=np.float32)
    movie = Movie.from_array(BinnedFrames(Movie.from_array(data), 3), fs=5.0)
    assert movie.shape == (7, 7, 6)
    np.testing.assert_allclose(movie[2:5], bin_frames(data[2:5], 3), rtol=1e-6)
    np.testing.assert_allclose(movie[4], bin_frames(data, 3)[4], rtol=1e-6)
    np.testing.assert_allclose(movie[1:3, 2:4, 1:5], bin_frames(data, 3)[1:3, 2:4, 1:5], rtol=1e-6)
    blocks = np.concatenate([b for _, b in movie.chunks(3)])
    np.testing.assert_allclose(blocks, bin_frames(data, 3), rtol=1e-6)


def test_upsample_segmentation_keeps_ids_and_smooth_outlines() -> None:
    from astro3s.postprocess import CombineParams
    from astro3s.postprocess.combine import _segmentation, upsample_segmentation

    soma = np.zeros((12, 12), np.uint16)
    processes = np.zeros_like(soma)
    yy, xx = np.mgrid[:12, :12]
    soma[np.hypot(yy - 4, xx - 4) <= 2] = 1
    processes[(yy == 4) & (xx >= 7) & (xx <= 10)] = 1
    soma[np.hypot(yy - 9, xx - 9) <= 1] = 2
    seg = _segmentation(soma, processes, 2, CombineParams(), {"cells": 2})
    big = upsample_segmentation(seg, 4, (47, 46))
    assert big.soma.shape == (47, 46) and big.processes.shape == (47, 46)
    assert big.n_cells == 2 and big.counts["bin_factor"] == 4 and big.counts["cells"] == 2
    assert not ((big.soma > 0) & (big.processes > 0)).any()
    # areas scale with the factor squared (within the outline's resampling)
    assert big.soma_area[0] == pytest.approx(16 * seg.soma_area[0], rel=0.25)
    assert set(np.unique(big.processes)) == {0, 1}
    # each coarse pixel's centre keeps its label
    assert (big.soma[4 * 4 + 1, 4 * 4 + 1] == 1) and (big.soma[9 * 4 + 1, 9 * 4 + 1] == 2)


def test_add_missing_cells_adds_only_cells_whose_soma_is_new() -> None:
    from astro3s.postprocess import CombineParams, add_missing_cells
    from astro3s.postprocess.combine import _segmentation

    yy, xx = np.mgrid[:40, :40]
    disc = lambda y, x, r: np.hypot(yy - y, xx - x) <= r  # noqa: E731
    # primary: one cell at (10, 10) with a process running right along row 10
    soma = np.where(disc(10, 10, 3), 1, 0)
    processes = np.where((yy == 10) & (xx > 13) & (xx < 35), 1, 0)
    primary = _segmentation(soma, processes, 1, CombineParams(), {"cells": 1, "bin_factor": 3})
    # secondary: the same cell, shifted (touches the primary soma); a new cell at (10, 30) whose soma covers part
    # of the primary's process, with processes of its own, one of them over the primary's process pixels;
    # a third cell at (30, 30)
    soma2 = np.zeros((40, 40), np.int64)
    soma2[disc(11, 11, 3)] = 1
    soma2[disc(10, 30, 2)] = 2
    soma2[disc(30, 30, 2)] = 3
    processes2 = np.zeros_like(soma2)
    processes2[(xx == 30) & (yy > 12) & (yy < 20)] = 2
    processes2[(yy == 10) & (xx > 20) & (xx < 28)] = 2
    secondary = _segmentation(soma2, processes2, 3, CombineParams(), {"cells": 3})

    merged = add_missing_cells(primary, secondary)
    assert merged.n_cells == 3 and merged.counts["cells_added"] == 2 and merged.counts["cells"] == 3
    assert merged.counts["bin_factor"] == 3  # the primary's record
    assert (merged.soma[disc(10, 10, 3)] == 1).all()  # the primary's cell is untouched
    assert (merged.soma[disc(10, 30, 2)] == 2).all() and (merged.soma[disc(30, 30, 2)] == 3).all()
    assert not ((merged.soma > 0) & (merged.processes > 0)).any()
    # the new soma took its pixels from the primary's process; the new processes only free pixels
    assert merged.processes[10, 25] == 1 and merged.processes[10, 33] == 1 and merged.processes[15, 30] == 2
    assert merged.process_area[1] == 7
    # nothing to add: the primary comes back with its cells
    same = add_missing_cells(primary, primary)
    assert same.n_cells == 1 and same.counts["cells_added"] == 0
    np.testing.assert_array_equal(same.soma, primary.soma)
    with pytest.raises(ValueError, match="different shapes"):
        add_missing_cells(primary, _segmentation(soma2[:30], processes2[:30], 3, CombineParams(), {}))


def test_drop_small_additions_keeps_the_first_cells_and_additions_of_their_size() -> None:
    """Cells a finer pass adds go when their soma is under 0.4x the first cells' median (texture patches)."""
    from astro3s.inference.cells import drop_small_additions
    from astro3s.postprocess import CombineParams
    from astro3s.postprocess.combine import _segmentation

    yy, xx = np.mgrid[:80, :80]
    disc = lambda y, x, r: np.hypot(yy - y, xx - x) <= r  # noqa: E731
    soma = np.zeros((80, 80), np.int64)
    # first pass: three somata of ~310, ~250 and ~200 px (median ~250); the third is the smallest first cell
    for k, (y, x, r) in enumerate([(15, 15, 10), (15, 60, 9), (60, 15, 8)], start=1):
        soma[disc(y, x, r)] = k
    # added: one of ~0.6x (kept), one of ~0.2x (goes), one of ~0.45x (kept)
    for k, (y, x, r) in enumerate([(60, 60, 7), (40, 40, 4), (70, 40, 6)], start=4):
        soma[disc(y, x, r)] = k
    processes = np.where(disc(40, 40, 6) & (soma == 0), 5, 0)
    seg = _segmentation(soma, processes, 6, CombineParams(), {"cells": 6})
    typical = np.median(seg.soma_area[:3])
    assert seg.soma_area[4] < 0.4 * typical < seg.soma_area[5] and seg.soma_area[3] > 0.4 * typical

    kept, n_added = drop_small_additions(seg, 3)
    assert kept.n_cells == 5 and n_added == 2 and kept.counts["small_added_removed"] == 1
    np.testing.assert_array_equal(kept.soma_area, seg.soma_area[[0, 1, 2, 3, 5]])
    assert not (kept.processes > 0).any()  # the dropped cell's processes went with it
    # a small first cell is never judged; nothing added: unchanged
    same, n_added = drop_small_additions(seg, 6)
    assert same is seg and n_added == 0
    # counts add up over the finer passes
    again, _ = drop_small_additions(dataclasses.replace(seg, counts={"small_added_removed": 2}), 3)
    assert again.counts["small_added_removed"] == 3


def test_bin_scales_must_be_a_whole_number() -> None:
    from astro3s.errors import ConfigError
    from astro3s.inference.pipeline import InferenceOptions
    from astro3s.preprocess import PreprocessParams

    assert InferenceOptions(preprocess=PreprocessParams()).bin_scales == 3
    for bad in (0, 1.5, True, "2"):
        with pytest.raises(ConfigError, match="bin_scales"):
            InferenceOptions(preprocess=PreprocessParams(), bin_scales=bad)


def test_soma_bin_factor_acts_on_large_somata_only(simulated) -> None:
    from astro3s.inference.segment import soma_bin_factor
    from astro3s.io import read_movie
    from astro3s.preprocess import PreprocessParams, preprocess

    params = PreprocessParams(soma_area_range=(89, 345))
    big = simulated("d2_like", 1, overview=False, height=192, width=192, n_frames=60, n_cells=[1, 2],
                    n_vessels=0, neuron_density=0, defocus_density=0, blob_density=0)
    with read_movie(big / f"{big.name}.tif") as movie:
        pre = preprocess(movie, params, progress=False)
    factor, info = soma_bin_factor(pre)
    assert info["coarse_scale"] >= 2.0 and info["blob_area"] > 700
    assert factor == round(info["coarse_scale"]) and info["bin_factor"] == factor

    d1 = simulated("d1_like", 2, overview=False, n_frames=60)
    with read_movie(d1 / f"{d1.name}.tif") as movie:
        pre = preprocess(movie, params, progress=False)
    factor, info = soma_bin_factor(pre)
    assert factor == 1 and info["coarse_scale"] == 1.0 and info["blob_area"] < 4 * math.sqrt(89 * 345)


def test_large_somata_are_segmented_binned_on_the_movie_pixels(simulated) -> None:
    from astro3s.inference import load_inference_model
    from astro3s.inference.cells import segment_movie
    from astro3s.io import read_movie
    from astro3s.metrics import match_instances
    from astro3s.preprocess import preprocess

    big = simulated("d2_like", 1, overview=False, height=192, width=192, n_frames=60, n_cells=[1, 2],
                    n_vessels=0, neuron_density=0, defocus_density=0, blob_density=0)
    model, options = load_inference_model("default", device="cpu")
    with read_movie(big / f"{big.name}.tif") as movie:
        pre = preprocess(movie, options.preprocess, progress=False)
        same, seg, info = segment_movie(pre, model, options)
    assert same is pre and info["bin_factor"] >= 2 and info["rescaled"]
    assert seg.soma.shape == (192, 192) and seg.counts["bin_factor"] == info["bin_factor"]
    # the factor read off the median image first, then the next finer ones (bin_scales=3; never below 1,
    # the FOV at its own scale)
    coarse = info["bin_factors"][0]
    assert info["bin_factors"] == list(range(coarse, max(coarse - 3, 0), -1))
    assert info["bin_factor"] == coarse
    assert len(info["cells_added"]) == len(info["bin_factors"]) - 1
    assert info["cells_added_plateau"] >= 0 and seg.counts.get("plateau_added", 0) == info["cells_added_plateau"]
    # a binned FOV's size filters keep the lower end of the union of ranges (no small-soma slack there)
    lows = [r[0] for r in (info["configured"], info["estimated"], info["used"]) if r is not None]
    assert info["size_filter_range"][0] == min(lows)
    assert seg.params.keep_unmatched  # a binned FOV is a few crops wide: the crops decide alone
    import tifffile

    gt = tifffile.imread(big / "ground_truth" / "soma.tif")
    match = match_instances(seg.soma, gt)
    assert match.n_gt >= 1 and len(match.gt_ids) == match.n_gt  # every large soma found
    assert seg.process_area.sum() > 0


def test_binned_options_keep_crop_somata_unless_the_user_says_otherwise() -> None:
    from astro3s.inference import InferenceOptions
    from astro3s.inference.cells import binned_options
    from astro3s.preprocess import PreprocessParams

    options = InferenceOptions(preprocess=PreprocessParams(), combine={"split": "disc"})
    # the look-alike rule is the caller's, on the movie's pixels
    assert binned_options(options).combine == {"keep_unmatched": True, "split": "disc", "reject_lookalikes": False}
    assert options.combine == {"split": "disc"}  # the caller's options are left alone
    mine = InferenceOptions(preprocess=PreprocessParams(), combine={"keep_unmatched": False})
    assert binned_options(mine).combine == {"keep_unmatched": False, "reject_lookalikes": False}


def test_a_small_fov_of_ordinary_somata_is_not_binned(simulated) -> None:
    # an 88-107 px FOV: LoG scales near the FOV's size once read its background as one 3000-px soma
    from astro3s.inference.segment import soma_bin_factor
    from astro3s.io import read_movie
    from astro3s.preprocess import PreprocessParams, preprocess

    folder = simulated("tiny", 1, overview=False)
    with read_movie(folder / f"{folder.name}.tif") as movie:
        assert min(movie.shape[1:]) < 128
        pre = preprocess(movie, PreprocessParams(soma_area_range=(89, 345)), progress=False)
    factor, info = soma_bin_factor(pre)
    assert factor == 1 and info["blob_area"] < 400


def test_add_large_cells_adds_large_sharp_new_cells_of_the_binned_pass(monkeypatch) -> None:
    """The 2x2-binned pass adds a large in-focus soma; not a small one, a soft blob, nor one already found."""
    from types import SimpleNamespace

    from scipy import ndimage as ndi

    import astro3s.inference.cells as cell_stage
    import astro3s.inference.segment as segment
    from astro3s.inference import InferenceOptions
    from astro3s.postprocess import CombineParams
    from astro3s.postprocess.combine import _segmentation
    from astro3s.preprocess import PreprocessParams

    size = 160
    yy, xx = np.mgrid[:size, :size]
    image = np.zeros((size, size), np.float32)
    own = np.zeros((size, size), np.uint16)  # three small sharp somata found at the FOV's own scale
    # (centre, radius, edge blur); cell 4 large and sharp, 5 large and soft, 6 small, 7 over cell 1
    cells = [((25, 25), 6, 0.8), ((25, 75), 6, 0.8), ((25, 125), 6, 0.8), ((80, 40), 12, 0.8),
             ((80, 120), 12, 3.0), ((135, 40), 6, 0.8)]
    for k, ((cy, cx), radius, blur) in enumerate(cells, start=1):
        disc = np.hypot(yy - cy, xx - cx) <= radius
        image += ndi.gaussian_filter(disc.astype(np.float32), blur)
        if k <= 3:
            own[disc] = k
    image += np.random.default_rng(0).normal(0, 0.01, image.shape).astype(np.float32)
    seg = _segmentation(own, np.zeros_like(own), 3, CombineParams(), {"cells": 3})
    # the binned pass's cells, on the 80 x 80 binned grid
    yb, xb = np.mgrid[:size // 2, :size // 2]
    binned = np.zeros((size // 2, size // 2), np.uint16)
    for k, ((cy, cx), radius, _) in enumerate([*cells[3:], ((25, 27), 6, 0.8)], start=1):
        binned[np.hypot(yb - cy / 2, xb - cx / 2) <= radius / 2] = k
    small_seg = _segmentation(binned, np.zeros_like(binned), 4, CombineParams(), {"cells": 4})
    calls = []
    monkeypatch.setattr(segment, "binned_preprocess", lambda pre, factor: calls.append(factor) or "binned")
    monkeypatch.setattr(cell_stage, "segment_movie", lambda small, model, options, **kw: (small, small_seg, {}))
    pre = SimpleNamespace(corrected=np.zeros((2, size, size), np.float32), median_image=image,
                          fov_map=np.zeros((size, size), np.float32))
    options = InferenceOptions(preprocess=PreprocessParams())
    timings: dict[str, float] = {}
    out = cell_stage.add_large_cells(seg, pre, None, options, timings=timings)
    assert calls == [2] and timings["large_soma_pass_s"] >= 0
    assert out.n_cells == 4 and out.counts["large_added"] == 1 and out.counts["large_blurred_removed"] == 1
    np.testing.assert_array_equal(out.soma[own > 0], own[own > 0])  # the cells found first are untouched
    assert (out.soma[80, 40] == 4) and out.soma[80, 120] == 0 and out.soma[135, 40] == 0
    # nothing found at the FOV's own scale, or no motion-corrected movie: nothing to compare with, seg as it is
    empty = _segmentation(np.zeros_like(own), np.zeros_like(own), 0, CombineParams(), {"cells": 0})
    assert cell_stage.add_large_cells(empty, pre, None, options) is empty
    assert cell_stage.add_large_cells(seg, SimpleNamespace(corrected=None, median_image=image), None, options) is seg
    tiny = SimpleNamespace(corrected=pre.corrected, median_image=image, fov_map=np.zeros((size, 60), np.float32))
    assert cell_stage.add_large_cells(seg, tiny, None, options) is seg and calls == [2]  # a side under 64 px


def test_binned_frames_of_a_cached_corrected_movie_equal_those_read_through_it() -> None:
    """A corrected movie's cache is binned straight from memory (no copy of the frames first): same values."""
    from astro3s.preprocess import BinnedFrames
    from astro3s.preprocess.motion import CorrectedMovie

    movie = np.random.default_rng(0).random((20, 33, 47)).astype(np.float32)
    shifts = np.zeros((20, 2), np.float32)
    cached = BinnedFrames(CorrectedMovie(movie, shifts, cache=movie.copy()), 2)
    read = BinnedFrames(CorrectedMovie(movie, shifts), 2)
    for key in (3, slice(2, 9), (slice(0, 5), slice(1, 4))):
        np.testing.assert_array_equal(cached[key], read[key])
    assert cached[0:4].dtype == np.float32 and cached.shape == (20, 17, 24)


def test_drop_small_additions_takes_every_cell_s_median_when_the_additions_outnumber_the_first() -> None:
    from astro3s.inference.cells import drop_small_additions
    from astro3s.postprocess import CombineParams
    from astro3s.postprocess.combine import _segmentation

    yy, xx = np.mgrid[:120, :120]
    soma = np.zeros((120, 120), np.int64)
    soma[np.hypot(yy - 20, xx - 20) <= 16] = 1  # one large cell found first (~800 px)
    for k, (y, x) in enumerate([(20, 70), (20, 100), (60, 20), (60, 60), (60, 100), (100, 20)], start=2):
        soma[np.hypot(yy - y, xx - x) <= 7] = k  # six added of ~150 px (0.19x the first cell)
    soma[np.hypot(yy - 100, xx - 100) <= 3] = 8  # and a speck of ~30 px
    seg = _segmentation(soma, np.zeros_like(soma), 8, CombineParams(), {"cells": 8})
    kept, n_added = drop_small_additions(seg, 1)
    # the median of all cells (~150 px) is the reference: the six stay, the speck goes
    assert kept.n_cells == 7 and n_added == 6 and kept.counts["small_added_removed"] == 1
