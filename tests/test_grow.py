"""Somata refined and processes grown over the median image (binned FOVs' cells)."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest


def _scene() -> tuple[np.ndarray, np.ndarray]:
    # two somata on a dark background: cell 1 with a bright branch running right from it, then a
    # gap, then a bright stretch that is not connected; cell 2 as bright as the background (grows none)
    yy, xx = np.mgrid[:60, :100]
    image = np.full((60, 100), 1.0, np.float32)
    soma = np.zeros((60, 100), np.int32)
    soma[np.hypot(yy - 30, xx - 15) <= 5] = 1
    image[soma == 1] = 10.0
    image[28:33, 20:60] = 6.0   # branch of cell 1 (5 px wide, 40 px long)
    image[28:33, 70:80] = 6.0   # a bright stretch beyond a gap
    soma[np.hypot(yy - 10, xx - 85) <= 3] = 2
    return image, soma


def test_processes_grow_along_the_bright_branch_and_stop_at_gaps_and_reach() -> None:
    from astro3s.postprocess import grow_processes

    image, soma = _scene()
    processes = grow_processes(soma, image, level=0.2, reach=8.0, smooth=0.5)
    assert processes.dtype == np.int32 and processes.shape == soma.shape
    assert not ((processes > 0) & (soma > 0)).any()
    branch = np.zeros_like(soma, bool)
    branch[29:32, 22:50] = True
    assert (processes[branch] == 1).all()                  # the branch's core is cell 1's
    # (its last pixels lie nearer to cell 2's soma, whose threshold and reach they take: not grown)
    assert (processes[:, 66:] == 0).all()                  # the stretch beyond the gap is not reached
    assert (processes[np.hypot(*np.mgrid[:60, :100] - np.array([10, 85])[:, None, None]) < 12] == 0).all()
    assert (processes == 2).sum() == 0                      # cell 2, no brighter than bg: none
    # a shorter reach stops the branch: 3 soma radii of a 5-px soma reach ~15 px from it
    short = grow_processes(soma, image, level=0.2, reach=3.0, smooth=0.5)
    assert (short[:, 40:] == 0).all() and (short == 1).sum() < (processes == 1).sum()
    # a higher level keeps only what is brighter than bg + level (soma - bg): the branch (6) is below 0.7
    assert (grow_processes(soma, image, level=0.7, reach=8.0, smooth=0.5) == 0).all()


def test_no_somata_no_processes_and_segmentation_wrapper() -> None:
    from astro3s.postprocess import CombineParams, grow_processes, with_grown_processes
    from astro3s.postprocess.combine import _segmentation

    image, soma = _scene()
    assert (grow_processes(np.zeros_like(soma), image) == 0).all()
    seg = _segmentation(soma, np.zeros_like(soma), 2, CombineParams(), {"cells": 2, "bin_factor": 3})
    grown = with_grown_processes(seg, image, reach=8.0, smooth=0.5)
    assert grown.n_cells == 2 and grown.counts == seg.counts
    np.testing.assert_array_equal(grown.soma, seg.soma)
    assert grown.process_area[0] > 150 and grown.process_area[1] == 0


def test_binned_processes_option_is_checked() -> None:
    from astro3s.errors import ConfigError
    from astro3s.inference.pipeline import InferenceOptions
    from astro3s.preprocess import PreprocessParams

    assert InferenceOptions(preprocess=PreprocessParams()).binned_processes == "ridges"
    for mode in ("grown", "network"):
        assert InferenceOptions(preprocess=PreprocessParams(), binned_processes=mode).binned_processes == mode
    with pytest.raises(ConfigError, match="binned_processes"):
        InferenceOptions(preprocess=PreprocessParams(), binned_processes="thin")


def test_ridge_strength_is_high_on_a_line_and_flat_on_a_slope() -> None:
    from astro3s.postprocess import ridge_strength

    xx = np.mgrid[:40, :80][1].astype(np.float32)
    line = np.exp(-0.5 * ((xx - 20) / 2.0) ** 2)          # a bright vertical line, 2-px Gaussian profile
    slope = xx / 80.0                                       # a plain ramp
    valley = -line
    on_line = ridge_strength(line, sigma=2.0)[20, 20]
    assert on_line > 0.1
    assert abs(ridge_strength(slope, sigma=2.0)[20, 40]) < 1e-3
    assert ridge_strength(valley, sigma=2.0)[20, 20] < 0
    # at a thin line's scale, a broad band as bright barely curves (the scale picks the width)
    band = np.exp(-0.5 * ((xx - 40) / 10.0) ** 2)
    assert ridge_strength(band, sigma=1.0)[20, 40] < 0.1 * ridge_strength(line, sigma=1.0)[20, 20]


def _soma_branch_blob(shape: tuple[int, int], *, soma_x: int, soma_radius: float, branch_end: int,
                      blob_x: int, blob_amplitude: float, blob_sigma: float) -> tuple[np.ndarray, np.ndarray]:
    # a bright soma on the middle row with a 4-px branch (level 6) running right from its edge to
    # branch_end and, touching it on the left, a broad dim out-of-focus blob (a Gaussian): both are
    # brighter than the growth's level, only the branch is a ridge
    cy = shape[0] // 2
    yy, xx = np.mgrid[:shape[0], :shape[1]].astype(np.float32)
    image = np.full(shape, 1.0, np.float32)
    image += blob_amplitude * np.exp(-0.5 * (np.hypot(yy - cy, xx - blob_x) / blob_sigma) ** 2)
    soma = np.zeros(shape, np.int32)
    soma[np.hypot(yy - cy, xx - soma_x) <= soma_radius] = 1
    image[soma == 1] = 10.0
    image[cy - 2:cy + 2, soma_x + int(soma_radius) - 1:branch_end] = 6.0
    return image, soma


def _halo_scene() -> tuple[np.ndarray, np.ndarray]:
    # a 15-px soma, a long branch and a 12-px blob
    return _soma_branch_blob((100, 160), soma_x=70, soma_radius=15, branch_end=130, blob_x=42,
                             blob_amplitude=5.0, blob_sigma=12.0)


def test_grown_processes_keep_the_branch_and_drop_the_broad_blob() -> None:
    from astro3s.postprocess import grow_processes, keep_ridges

    image, soma = _halo_scene()
    flooded = grow_processes(soma, image, level=0.2, reach=3.0, smooth=1.0, ridge_level=None)
    blob = np.zeros_like(soma, bool)
    blob[43:58, 34:50] = True
    branch = np.zeros_like(soma, bool)
    branch[49:51, 90:125] = True
    assert (flooded[blob] == 1).all() and (flooded[branch] == 1).all()     # the flood takes both
    kept = grow_processes(soma, image, level=0.2, reach=3.0, smooth=1.0)   # ridges: the default
    assert (kept[branch] == 1).all()                                       # the branch stays
    assert (kept[blob] == 0).mean() > 0.9                                  # the blob's middle goes
    assert not ((kept > 0) & (flooded == 0)).any()                         # a subset of the flood
    np.testing.assert_array_equal(kept, keep_ridges(flooded, soma, image))
    # every kept pixel is joined to its soma through pixels of its own cell
    from astro3s.postprocess.split import keep_connected_to_soma
    np.testing.assert_array_equal(keep_connected_to_soma(soma, kept), kept)
    # a level no ridge reaches keeps nothing; no somata, no processes
    assert (keep_ridges(flooded, soma, image, level=10.0) == 0).all()
    assert (keep_ridges(flooded, np.zeros_like(soma), image) == 0).all()


def _disc_scene() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    # a bright 12-px disc soma (drawn by the network too small: an 8-px disc off its centre), a dimmer
    # branch (process level) leaving it to the right, and a second bright blob 10 px beyond its edge
    yy, xx = np.mgrid[:80, :80]
    image = np.full((80, 80), 1.0, np.float32)
    true_soma = np.hypot(yy - 40, xx - 30) <= 12
    image[true_soma] = 10.0
    image[38:43, 42:70] = 4.0
    image[np.hypot(yy - 40, xx - 60) <= 4] = 10.0
    soma = np.zeros((80, 80), np.int32)
    soma[np.hypot(yy - 38, xx - 28) <= 8] = 1
    return image, soma, true_soma


def test_refined_soma_fills_its_bright_plateau_and_nothing_else() -> None:
    from astro3s.postprocess import refine_somata

    image, soma, true_soma = _disc_scene()
    refined = refine_somata(soma, image, smooth=0.5)
    assert refined.dtype == np.int32 and refined.shape == soma.shape
    assert (refined[soma > 0] == 1).all()                              # it only grows
    iou = ((refined > 0) & true_soma).sum() / ((refined > 0) | true_soma).sum()
    before = ((soma > 0) & true_soma).sum() / ((soma > 0) | true_soma).sum()
    assert before < 0.5 < 0.8 < iou                                    # a missed match becomes a good one
    assert (refined[:, 45:] == 0).all()                                 # neither the branch nor the far blob
    # reach bounds it: at 0.2 soma radii (~2 px) the 8-px disc cannot fill the 12-px one
    assert (refine_somata(soma, image, reach=0.2, smooth=0.5) > 0).sum() < 0.75 * true_soma.sum()
    # a level above the plateau adds nothing
    np.testing.assert_array_equal(refine_somata(soma, image, level=1.5, smooth=0.5), soma)
    assert (refine_somata(np.zeros_like(soma), image) == 0).all()


def test_a_soma_drawn_at_half_its_radius_is_refined_to_a_match() -> None:
    # the network draws part of a soma that is large for the FOV (its interior labelled process): a 5-px
    # disc in the 12-px plateau. Half a radius of growth leaves it under IoU 0.5 with the truth (0.38); the
    # default reach (one radius) makes it a match (0.70) and still stops at the branch and the far blob
    from astro3s.postprocess import refine_somata

    image, _, true_soma = _disc_scene()
    yy, xx = np.mgrid[:80, :80]
    soma = (np.hypot(yy - 40, xx - 28) <= 5).astype(np.int32)

    def iou(labels: np.ndarray) -> float:
        return float(((labels > 0) & true_soma).sum() / ((labels > 0) | true_soma).sum())

    assert iou(refine_somata(soma, image, reach=0.5, smooth=0.5)) < 0.5
    refined = refine_somata(soma, image, smooth=0.5)
    assert iou(refined) > 0.65 and (refined[:, 45:] == 0).all()


def test_refined_segmentation_keeps_ids_and_hands_soma_pixels_over() -> None:
    from astro3s.postprocess import CombineParams, with_refined_somata
    from astro3s.postprocess.combine import _segmentation

    image, soma, true_soma = _disc_scene()
    processes = np.zeros_like(soma)
    processes[true_soma & (soma == 0)] = 1                              # the network called the rim processes
    processes[38:43, 42:60] = 1
    seg = _segmentation(soma, processes, 1, CombineParams(), {"cells": 1})
    refined = with_refined_somata(seg, image, smooth=0.5)
    assert refined.n_cells == 1 and refined.counts == seg.counts
    assert not ((refined.soma > 0) & (refined.processes > 0)).any()
    assert refined.soma_area[0] > 1.5 * seg.soma_area[0]
    assert (refined.processes[38:43, 50:60] == 1).all()                 # the branch stays a process


def test_somata_option_is_checked() -> None:
    from astro3s.errors import ConfigError
    from astro3s.inference.pipeline import InferenceOptions
    from astro3s.preprocess import PreprocessParams

    assert InferenceOptions(preprocess=PreprocessParams()).somata == "refined"
    assert InferenceOptions(preprocess=PreprocessParams(), somata="extended").somata == "extended"
    with pytest.raises(ConfigError, match="somata"):
        InferenceOptions(preprocess=PreprocessParams(), somata="blob")


def _blob_scene() -> tuple[np.ndarray, np.ndarray]:
    # a found soma (cell 1) and, unfound: a second soma as bright, a dim blob, a small spot, a bright
    # branch junction (a cross: not compact), a soma cut by the FOV's edge and one touching cell 1
    yy, xx = np.mgrid[:120, :160]
    image = np.full((120, 160), 1.0, np.float32)
    soma = np.zeros((120, 160), np.int32)
    found = np.hypot(yy - 30, xx - 30) <= 10
    soma[found] = 1
    image[found] = 10.0
    image[np.hypot(yy - 30, xx - 80) <= 11] = 9.0     # missed soma: as bright, compact, same size
    image[np.hypot(yy - 85, xx - 30) <= 10] = 4.0     # dim blob: below half-way to the somata's level
    image[np.hypot(yy - 85, xx - 80) <= 3] = 10.0     # small spot: under half the somata's area
    image[82:88, 105:145] = 10.0                      # bright cross of soma area, not compact
    image[65:105, 122:128] = 10.0
    image[np.hypot(yy - 30, xx - 158) <= 10] = 10.0   # cut by the right edge
    image[np.hypot(yy - 30, xx - 48) <= 8] = 10.0     # touching cell 1
    return image, soma


def test_plateau_somata_finds_the_missed_bright_compact_soma_only() -> None:
    from astro3s.postprocess import plateau_somata

    image, soma = _blob_scene()
    candidates = plateau_somata(soma, image, smooth=0.5)
    assert candidates.dtype == np.int32 and candidates.max() == 1
    yy, xx = np.nonzero(candidates)
    assert abs(yy.mean() - 30) < 1 and abs(xx.mean() - 80) < 1
    assert 0.8 < (candidates > 0).sum() / (np.pi * 11 ** 2) < 1.2
    assert (plateau_somata(np.zeros_like(soma), image) == 0).all()
    # the options do what they say: without the opening a looser solidity takes the cross (with it, its 6-px
    # bars, under the disc's 10-px diameter, fall away); a higher level drops the missed soma
    assert plateau_somata(soma, image, smooth=0.5, min_solidity=0.0, opening=0).max() == 2
    assert plateau_somata(soma, image, smooth=0.5, min_solidity=0.0).max() == 1
    assert plateau_somata(soma, image, smooth=0.5, level=0.95).max() == 0


def test_plateau_somata_parts_a_missed_soma_from_the_processes_joining_it_to_found_ones() -> None:
    from astro3s.postprocess import plateau_somata

    # a found soma (cell 1) and a missed one as bright, joined by a bright 5-px bundle of processes, with
    # two more bright branches leaving the missed soma: one plateau component of neither a soma's area
    # nor shape, until it is opened
    yy, xx = np.mgrid[:100, :160]
    image = np.full((100, 160), 1.0, np.float32)
    soma = np.zeros((100, 160), np.int32)
    soma[np.hypot(yy - 50, xx - 35) <= 14] = 1
    image[soma > 0] = 10.0
    missed = np.hypot(yy - 50, xx - 110) <= 14
    image[missed] = 9.0
    image[48:53, 35:110] = 9.0
    image[10:90, 108:113] = 9.0
    image[48:53, 110:158] = 9.0
    assert plateau_somata(soma, image, smooth=0.5, opening=0).max() == 0
    candidates = plateau_somata(soma, image, smooth=0.5)
    assert candidates.max() == 1
    iou = ((candidates > 0) & missed).sum() / ((candidates > 0) | missed).sum()
    assert iou > 0.85


def test_plateau_cells_join_a_binned_segmentation_unless_blurred() -> None:
    from scipy import ndimage as ndi

    from astro3s.inference.cells import add_plateau_cells
    from astro3s.inference.pipeline import InferenceOptions
    from astro3s.postprocess import CombineParams, plateau_somata
    from astro3s.postprocess.combine import _segmentation
    from astro3s.preprocess import PreprocessParams

    image, soma = _blob_scene()
    seg = _segmentation(soma, np.zeros_like(soma), 1, CombineParams(), {"cells": 1, "cells_added": 0})
    options = InferenceOptions(preprocess=PreprocessParams())

    class Pre:  # what the rule reads of a pre-processed movie
        median_image = image

    added, n = add_plateau_cells(seg, image, Pre(), options)
    assert n == 1 and added.n_cells == 2 and added.counts["plateau_added"] == 1
    assert added.counts["cells_added"] == 0                              # the finer factor's count kept
    np.testing.assert_array_equal(added.soma == 1, soma == 1)
    # the same blob out of focus (a soft edge, blur well above cell 1's) is not added
    soft = image.copy()
    blob = np.zeros(image.shape, bool)
    blob[15:46, 65:96] = True
    soft[blob] = ndi.gaussian_filter(image, 6.0)[blob] * 1.6
    Pre.median_image = soft
    assert plateau_somata(soma, soft).max() == 1                          # still a candidate: the blur rule decides
    kept, n = add_plateau_cells(seg, soft, Pre(), options)
    assert n == 0 and kept.n_cells == 1


def test_somata_of_a_fov_at_its_own_scale_are_refined_unless_asked_not_to(tiny_movie, record_calls,
                                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    import astro3s.postprocess.grow as grow
    from astro3s.inference import load_inference_model
    from astro3s.inference.cells import segment_movie
    from astro3s.io import read_movie
    from astro3s.preprocess import preprocess

    calls = record_calls(grow, "with_refined_somata")
    trims = record_calls(grow, "with_trimmed_somata")
    # the visible-process test would remove pixels of the processes compared below, at levels set by each soma
    model, options = load_inference_model("default", device="cpu", extend_processes=False,
                                          rules={"visible_processes": False})
    with read_movie(tiny_movie) as movie:
        pre = preprocess(movie, options.preprocess, progress=False)
        _, network, info = segment_movie(pre, model, dataclasses.replace(options, somata="network"))
        assert calls == [] and trims == [] and info.get("bin_factor", 1) == 1
        _, extended, _ = segment_movie(pre, model, dataclasses.replace(options, somata="extended"))
        assert trims == []
        _, refined, _ = segment_movie(pre, model, options)
    # extended twice (extended, refined), on the movie's pixels; cut once (refined)
    assert [args[1].shape for args, _ in calls] == [pre.median_image.shape] * 2
    assert [args[1].shape for args, _ in trims] == [pre.median_image.shape]
    assert network.n_cells >= 1 and extended.n_cells == refined.n_cells == network.n_cells
    assert ((extended.soma == network.soma) | (network.soma == 0)).all()     # extended somata only grow
    assert ((refined.soma == extended.soma) | (refined.soma == 0)).all()     # then the cut only removes
    assert (refined.soma_area <= extended.soma_area).all() and (refined.soma_area >= 0.5 * extended.soma_area).all()
    # processes keep theirs and gain only rim pixels cut from their own soma
    gained = refined.processes != extended.processes
    assert (extended.processes[gained] == 0).all() and (refined.processes[gained] == extended.soma[gained]).all()
    assert not ((refined.soma > 0) & (refined.processes > 0)).any()


def test_processes_of_a_fov_at_its_own_scale_are_extended_unless_asked_not_to(tiny_movie) -> None:
    from astro3s.inference import load_inference_model
    from astro3s.inference.cells import segment_movie
    from astro3s.io import read_movie
    from astro3s.postprocess.split import keep_connected_to_soma
    from astro3s.preprocess import preprocess

    model, options = load_inference_model("default", device="cpu")
    assert options.extend_processes
    with read_movie(tiny_movie) as movie:
        pre = preprocess(movie, options.preprocess, progress=False)
        _, network, info = segment_movie(pre, model, dataclasses.replace(options, extend_processes=False))
        _, extended, _ = segment_movie(pre, model, options)
    assert not info["rescaled"] and network.n_cells >= 1
    np.testing.assert_array_equal(extended.soma, network.soma)               # somata untouched
    kept = network.processes > 0
    np.testing.assert_array_equal(extended.processes[kept], network.processes[kept])   # the network's all stay
    assert (extended.processes > 0).sum() > kept.sum()                       # and grow longer
    np.testing.assert_array_equal(keep_connected_to_soma(extended.soma, extended.processes), extended.processes)


def test_a_wide_process_of_a_mid_size_soma_stays_whole() -> None:
    # a ~500-px soma (a D1 cell enlarged 1.5x) with a 7-px branch: at 0.1 soma radii (1.3 px) its
    # flat middle would not curve, at the annotators' width for that soma (process_ridge_scale) it does
    from astro3s.postprocess import keep_ridges
    from astro3s.postprocess.grow import process_ridge_scale

    yy, xx = np.mgrid[:80, :140].astype(np.float32)
    image = np.full((80, 140), 1.0, np.float32)
    soma = np.zeros((80, 140), np.int32)
    soma[np.hypot(yy - 40, xx - 40) <= 12.6] = 1
    image[soma == 1] = 10.0
    image[37:44, 52:110] = 6.0
    branch = np.where((image == 6.0) & (soma == 0), 1, 0).astype(np.int32)
    assert process_ridge_scale(float(soma.sum())) > 0.1 * 12.6
    kept = keep_ridges(branch, soma, image)
    assert (kept[38:43, 55:105] == 1).all()


def _stub_scene() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    # a D1-size soma (r 8), a long branch of which the network drew only the first 6 px, a 9-px blob
    image, soma = _soma_branch_blob((80, 140), soma_x=45, soma_radius=8, branch_end=85, blob_x=26,
                                    blob_amplitude=4.0, blob_sigma=9.0)
    network = np.zeros_like(soma)
    network[38:42, 50:59] = 1
    network[soma > 0] = 0
    return image, soma, network


def test_extended_processes_follow_the_branch_not_the_blob() -> None:
    from astro3s.postprocess import extend_processes

    image, soma, network = _stub_scene()
    out = extend_processes(soma, network, image)
    assert out.dtype == np.int32
    assert (out[network > 0] == 1).all()                           # the network's pixels stay
    assert (out[39:41, 60:70] == 1).all()                          # the branch is followed out
    assert (out[35:46, 20:32] == 0).all()                          # the blob's middle is not taken
    assert not ((out > 0) & (soma > 0)).any()
    # no somata: the network's processes come back as they are; a ridge level no ridge reaches adds nothing
    np.testing.assert_array_equal(extend_processes(np.zeros_like(soma), network, image), network)
    np.testing.assert_array_equal(extend_processes(soma, network, image, ridge_level=10.0), network)


def test_visible_processes_keep_the_branch_and_drop_a_star_arm_over_haze() -> None:
    from astro3s.postprocess import keep_visible_processes

    image, soma, _ = _stub_scene()                                  # the branch runs right from the soma
    drawn = np.zeros_like(soma)
    drawn[38:42, 50:84] = 1                                         # the network's arm along the branch, 4 px wide
    drawn[22:33, 43:47] = 1                                         # an arm up into the broad dim haze: no ridge
    drawn[soma > 0] = 0
    kept = keep_visible_processes(drawn, soma, image)
    assert kept.dtype == np.int32
    assert (kept[38:42, 55:80] == 1).all()                          # the visible branch keeps its drawn width
    assert (kept[22:29, 43:47] == 0).all()                          # the arm over haze goes (its root on the
    assert (kept[22:33, 43:47] > 0).sum() <= 16                     # soma's curved rim may stay)
    assert not ((kept > 0) & (drawn == 0)).any()                    # nothing is added
    # a ridge level no ridge reaches keeps nothing; no somata: nothing; no processes: nothing to test
    assert not keep_visible_processes(drawn, soma, image, level=1e3).any()
    assert not keep_visible_processes(drawn, np.zeros_like(soma), image).any()
    np.testing.assert_array_equal(keep_visible_processes(np.zeros_like(soma), soma, image), np.zeros_like(soma))


def test_with_visible_processes_counts_what_went() -> None:
    from astro3s.postprocess import CombineParams, with_visible_processes
    from astro3s.postprocess.combine import _segmentation

    image, soma, _ = _stub_scene()
    drawn = np.zeros_like(soma)
    drawn[38:42, 50:84] = 1
    drawn[22:33, 43:47] = 1
    drawn[soma > 0] = 0
    seg = _segmentation(soma, drawn, 1, CombineParams(), {"cells": 1})
    out = with_visible_processes(seg, image)
    assert out.counts["unseen_process_px"] == int((drawn > 0).sum() - (out.processes > 0).sum()) > 0
    assert out.counts["cells"] == 1 and out.n_cells == 1
    np.testing.assert_array_equal(out.soma, seg.soma)


def test_kept_cells_keep_their_processes_when_the_others_grow() -> None:
    from astro3s.postprocess import CombineParams, with_grown_processes
    from astro3s.postprocess.combine import _segmentation

    image, soma = _scene()
    drawn = np.zeros_like(soma)
    drawn[29:32, 20:30] = 1                                            # cell 1's own, short process
    drawn[12:14, 88:95] = 2                                            # cell 2's own process
    seg = _segmentation(soma, drawn, 2, CombineParams(), {"cells": 2})
    grown = with_grown_processes(seg, image, reach=8.0, smooth=0.5)
    kept = with_grown_processes(seg, image, keep=np.array([False, True]), reach=8.0, smooth=0.5)
    np.testing.assert_array_equal(kept.processes == 2, drawn == 2)     # cell 2 (kept): its own
    np.testing.assert_array_equal(kept.processes == 1, grown.processes == 1)   # cell 1 grows as before
    assert (grown.processes == 2).sum() == 0                           # (cell 2 grows nothing anyway)
    mine = with_grown_processes(seg, image, keep=np.array([True, True]), reach=8.0, smooth=0.5)
    np.testing.assert_array_equal(mine.processes, drawn)


def test_a_fov_binned_2x2_is_also_segmented_at_its_own_scale(tiny_movie, monkeypatch, record_calls) -> None:
    import astro3s.inference.segment as segment
    from astro3s.inference import load_inference_model
    from astro3s.inference.cells import segment_movie
    from astro3s.io import read_movie
    from astro3s.preprocess import preprocess

    # whatever the tiny movie's blob scale, read it as twice the training scale
    monkeypatch.setattr(segment, "soma_bin_factor",
                        lambda pre, **k: (2, {"blob_area": 800.0, "coarse_scale": 2.0, "bin_factor": 2}))
    import astro3s.inference.cells as cells

    import astro3s.postprocess.grow as grow

    calls = record_calls(cells, "segment_movie")
    completions = record_calls(grow, "with_completed_somata")
    model, options = load_inference_model("default", device="cpu")
    with read_movie(tiny_movie) as movie:
        pre = preprocess(movie, options.preprocess, progress=False)
        _, seg, info = segment_movie(pre, model, options)
    assert info["bin_factors"] == [2, 1] and len(info["cells_added"]) == 1
    # the somata drawn in part are completed once, on the movie's pixels (COMPLETE_BINNED_SOMATA)
    assert [args[1].shape for args, _ in completions] == [pre.median_image.shape]
    assert "somata_completed" in seg.counts
    assert seg.soma.shape == pre.median_image.shape and seg.n_cells >= 1
    height, width = pre.median_image.shape
    # the binned pass on the 2x2-binned FOV, then the FOV itself, neither binned again
    passes = [(args[0].median_image.shape, kwargs.get("allow_binning", True)) for args, kwargs in calls]
    assert passes == [((-(-height // 2), -(-width // 2)), False), ((height, width), False)]
    no_completion = dataclasses.replace(options, rules={"complete_binned_somata": False})
    with read_movie(tiny_movie) as movie:
        _, off, _ = segment_movie(preprocess(movie, options.preprocess, progress=False), model, no_completion)
    assert len(completions) == 1 and "somata_completed" not in off.counts


def _blurred_disc(radius: float = 8.0, sigma: float = 1.5, background=10.0) -> tuple[np.ndarray, np.ndarray]:
    from scipy import ndimage as ndi

    yy, xx = np.mgrid[:64, :64]
    disc = np.hypot(yy - 32, xx - 32) <= radius
    image = ndi.gaussian_filter(disc * 100.0, sigma).astype(np.float32) + background
    return image, disc


def test_trim_cuts_an_over_drawn_soma_back_to_its_half_maximum_contour() -> None:
    from astro3s.postprocess import trim_somata

    image, disc = _blurred_disc()
    yy, xx = np.mgrid[:64, :64]
    drawn = (np.hypot(yy - 32, xx - 32) <= 11).astype(np.int32)            # the blurred rim drawn as soma
    trimmed = trim_somata(drawn, image)
    assert trimmed.dtype == np.int32 and ((trimmed == 0) | (trimmed == drawn)).all()
    overlap = (trimmed > 0) & disc
    assert 2 * overlap.sum() / ((trimmed > 0).sum() + disc.sum()) > 0.95    # the true disc, within a pixel
    assert (drawn > 0).sum() > 1.8 * disc.sum()
    # a soma drawn at its true outline keeps it, but for edge pixels right at half maximum
    kept = trim_somata(disc.astype(np.int32), image) > 0
    assert not (kept & ~disc).any() and kept.sum() >= 0.9 * disc.sum()


def test_trim_reads_the_background_around_each_soma_not_the_image() -> None:
    from astro3s.postprocess import trim_somata

    image, disc = _blurred_disc(background=0.0)
    yy, xx = np.mgrid[:64, :64]
    drawn = (np.hypot(yy - 32, xx - 32) <= 11).astype(np.int32)
    ramp = np.float32(3.0) * xx.astype(np.float32)                           # a bright ramp: 0 to 189 across
    on_ramp = trim_somata(drawn, image + 50 + ramp)
    flat = trim_somata(drawn, image + 50 + 3.0 * 32)                          # the ramp's value at the soma
    assert abs(int((on_ramp > 0).sum()) - int((flat > 0).sum())) <= 0.15 * disc.sum()
    # the lower quartile of this image (the ramp's left part) would put the edge far outside the disc
    assert (on_ramp > 0).sum() < 1.3 * disc.sum()


def test_trim_leaves_alone_what_it_cannot_measure_or_would_halve() -> None:
    from astro3s.postprocess import trim_somata

    image, disc = _blurred_disc(radius=4.0)
    yy, xx = np.mgrid[:64, :64]
    huge = (np.hypot(yy - 32, xx - 32) <= 12).astype(np.int32)               # the disc is 1/9 of it
    assert np.array_equal(trim_somata(huge, image), huge)                   # would keep < half: untouched
    assert (trim_somata(huge, image, min_kept=0.05) > 0).sum() < 0.3 * huge.sum()
    whole = np.ones((64, 64), np.int32)                                     # no ring: no background to read
    assert np.array_equal(trim_somata(whole, image), whole)
    empty = np.zeros((64, 64), np.int32)
    assert np.array_equal(trim_somata(empty, image), empty)
    # two touching somata are cut each on its own, ids kept
    two = np.where(xx < 32, 1, 2).astype(np.int32) * (np.hypot(yy - 32, xx - 32) <= 11)
    cut = trim_somata(two, _blurred_disc()[0])
    assert set(np.unique(cut)) == {0, 1, 2} and ((cut == 0) | (cut == two)).all()


def test_the_rim_cut_where_a_process_leaves_the_soma_joins_that_process() -> None:
    from scipy import ndimage as ndi

    from astro3s.postprocess import CombineParams, with_trimmed_somata
    from astro3s.postprocess.combine import _segmentation

    yy, xx = np.mgrid[:64, :64]
    disc = np.hypot(yy - 32, xx - 32) <= 8
    branch = (np.abs(yy - 32) <= 2) & (xx > 32) & (xx < 60)
    image = ndi.gaussian_filter(disc * 100.0 + branch * 40.0, 1.5).astype(np.float32) + 10
    soma = (np.hypot(yy - 32, xx - 32) <= 10).astype(np.int32)
    processes = np.where(branch & (soma == 0), 1, 0).astype(np.int32)
    seg = _segmentation(soma, processes, 1, CombineParams(), {})
    trimmed = with_trimmed_somata(seg, image)
    cut = (seg.soma > 0) & (trimmed.soma == 0)
    assert cut.sum() > 80
    joined = cut & (trimmed.processes == 1)
    assert joined.any() and (xx[joined] > 32 + 7).all()            # on the branch's side only
    assert (trimmed.processes[branch & (soma == 0)] == 1).all()    # the branch itself is kept
    lab, n = ndi.label((trimmed.soma > 0) | (trimmed.processes > 0), structure=np.ones((3, 3)))
    assert n == 1                                                   # still one cell, connected
    assert (trimmed.soma_area[0], trimmed.process_area[0]) == (int((trimmed.soma > 0).sum()),
                                                               int((trimmed.processes > 0).sum()))


@pytest.mark.parametrize(("fitted", "extend_refitted", "extended"), [
    ({"rescaled": True, "zoom": 1.0}, True, True),       # range refitted, the network at the FOV's pixels
    ({"rescaled": True, "zoom": 1.0}, False, False),     # as before 2026-12-05 (evening)
    ({"rescaled": True, "zoom": 1.6}, True, False),      # zoomed for the network: drawn on another grid
])
def test_refitted_fovs_at_their_own_pixels_have_their_processes_extended(
        fitted, extend_refitted, extended, tiny_movie, record_calls, monkeypatch: pytest.MonkeyPatch) -> None:
    import astro3s.inference.segment as segment
    import astro3s.postprocess.grow as grow
    from astro3s.inference import cells, load_inference_model
    from astro3s.io import read_movie
    from astro3s.preprocess import preprocess

    real_fit = segment.adapt_soma_scale

    def fit(*args, **kwargs):  # the real fit, its outcome relabelled
        pre, info, probs = real_fit(*args, **kwargs)
        return pre, {**info, **fitted}, probs

    monkeypatch.setattr(segment, "adapt_soma_scale", fit)
    calls = record_calls(grow, "with_extended_processes")
    model, options = load_inference_model("default", device="cpu", rules={"extend_refitted_fovs": extend_refitted})
    with read_movie(tiny_movie) as movie:
        pre = preprocess(movie, options.preprocess, progress=False)
        cells.segment_movie(pre, model, options)
    assert bool(calls) is extended


def _uneven_soma_scene() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    # a giant soma (radius 30) brighter on its left quarter than elsewhere (10 against 6 over a background
    # of 1), an 8-px process leaving its right side at the dim level, and the network's soma: a 20-px disc
    # over the bright part (IoU with the truth 0.43: missed and false at once)
    yy, xx = np.mgrid[:120, :160]
    image = np.full((120, 160), 1.0, np.float32)
    true_soma = np.hypot(yy - 60, xx - 60) <= 30
    image[true_soma] = np.where(xx[true_soma] < 45, 10.0, 6.0)
    image[56:64, 88:150] = 6.0
    soma = (np.hypot(yy - 60, xx - 48) <= 20).astype(np.int32)
    return image, soma, true_soma


def _iou(labels: np.ndarray, truth: np.ndarray) -> float:
    return float(((labels > 0) & truth).sum() / ((labels > 0) | truth).sum())


def test_a_soma_drawn_in_its_bright_part_is_completed_to_its_body() -> None:
    from astro3s.postprocess import complete_somata, refine_somata

    image, soma, true_soma = _uneven_soma_scene()
    assert _iou(soma, true_soma) < 0.5
    # the plateau flood (0.8 of the way to the bright part) cannot cross into the dimmer part
    assert _iou(refine_somata(soma, image, smooth=0.5), true_soma) < 0.5
    completed = complete_somata(soma, image, smooth=0.5)
    assert completed.dtype == np.int32 and (completed[soma > 0] == 1).all()   # it only grows
    assert _iou(completed, true_soma) > 0.9
    assert (completed[:, 95:] == 0).all()                                     # not along the process
    assert (complete_somata(np.zeros_like(soma), image) == 0).all()


def test_a_whole_soma_a_spill_or_a_neighbour_is_not_taken() -> None:
    from astro3s.postprocess import complete_somata

    image, _, true_soma = _uneven_soma_scene()
    whole = true_soma.astype(np.int32)
    np.testing.assert_array_equal(complete_somata(whole, image, smooth=0.5), whole)   # grows < gain[0]
    # a bright out-of-focus blob three times the drawn soma's area, touching it: with a reach that
    # spans it, its flood is over gain[1] times the soma, a spill, not a completion
    yy, xx = np.mgrid[:120, :160]
    drawn = (np.hypot(yy - 60, xx - 40) <= 14).astype(np.int32)
    spill = np.full((120, 160), 1.0, np.float32)
    spill[np.hypot(yy - 60, xx - 75) <= 24] = 8.0
    spill[drawn > 0] = 10.0
    loose = {"smooth": 0.5, "reach": 4.0, "min_solidity": 0.0}
    np.testing.assert_array_equal(complete_somata(drawn, spill, **loose), drawn)
    assert complete_somata(drawn, spill, gain=(1.3, 100.0), **loose).sum() > 2.5 * drawn.sum()
    # an unfound neighbour soma touching it: the flood over part of it is within the gain but not
    # compact (solidity 0.88 < 0.9)
    drawn = (np.hypot(yy - 60, xx - 50) <= 18).astype(np.int32)
    pair = np.full((120, 160), 1.0, np.float32)
    pair[np.hypot(yy - 60, xx - 82) <= 18] = 9.0
    pair[drawn > 0] = 10.0
    np.testing.assert_array_equal(complete_somata(drawn, pair, smooth=0.5), drawn)
    assert complete_somata(drawn, pair, smooth=0.5, min_solidity=0.0, body=0.0).sum() > 1.3 * drawn.sum()


def test_completed_segmentation_keeps_ids_and_counts_the_somata_grown() -> None:
    from astro3s.postprocess import CombineParams, with_completed_somata
    from astro3s.postprocess.combine import _segmentation

    image, soma, true_soma = _uneven_soma_scene()
    processes = np.zeros_like(soma)
    processes[true_soma & (soma == 0)] = 1                                    # the dim part called process
    processes[56:64, 92:150] = 1
    seg = _segmentation(soma, processes, 1, CombineParams(), {"cells": 1})
    completed = with_completed_somata(seg, image, smooth=0.5)
    assert completed.n_cells == 1 and completed.counts == {"cells": 1, "somata_completed": 1}
    assert not ((completed.soma > 0) & (completed.processes > 0)).any()
    assert (completed.processes[56:64, 100:150] == 1).all()                   # the process stays
    same = with_completed_somata(completed, image, smooth=0.5)
    assert same.counts["somata_completed"] == 0
    np.testing.assert_array_equal(same.soma, completed.soma)
