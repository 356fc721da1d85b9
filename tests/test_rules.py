"""The rules' settings as one typed set (astro3s.inference.rules.CellRules): defaults, checks, and every
way a run sets them (InferenceOptions, astro3s-infer rules.NAME=, experiments/evaluate_model.py --flags)."""

from __future__ import annotations

import dataclasses

import pytest
from _hydra import compose_config
from hydra.core.global_hydra import GlobalHydra


@pytest.fixture(autouse=True)
def _clear_hydra():
    yield
    GlobalHydra.instance().clear()


def test_the_defaults_are_the_constants_that_record_why() -> None:
    from astro3s.inference import cells, segment
    from astro3s.inference.rules import CellRules
    from astro3s.postprocess import grow
    from astro3s.preprocess import scale

    rules = CellRules()
    assert rules == CellRules(
        soma_reach=grow.SOMA_REACH, shrink_tolerance=segment.SHRINK_TOLERANCE, crowded_somata=cells.CROWDED_SOMATA,
        large_pass_on_crowded=cells.LARGE_PASS_ON_CROWDED, pixel_widening_on_sparse=cells.PIXEL_WIDENING_ON_SPARSE,
        extend_refitted_fovs=cells.EXTEND_REFITTED_FOVS, fragment_ratio=cells.FRAGMENT_SOMA_RATIO,
        pair_blur_rule=cells.PAIR_BLUR_RULE, pair_blur_contrast=cells.PAIR_BLUR_CONTRAST,
        complete_binned_somata=cells.COMPLETE_BINNED_SOMATA, own_reach=scale.OWN_REACH,
        wide_dominance=scale.WIDE_DOMINANCE, plateau_opening=grow.PLATEAU_OPENING,
        faint_cell_contrast=cells.FAINT_CELL_CONTRAST, border_sliver_ratio=cells.BORDER_SLIVER_RATIO,
        visible_processes=cells.VISIBLE_PROCESSES, border_additions=cells.BORDER_ADDITIONS,
        small_soma_slack=cells.SMALL_SOMA_SLACK, crowded_soma_slack=cells.CROWDED_SOMA_SLACK,
        min_added_area=cells.MIN_ADDED_RELATIVE_AREA, large_soma_ratio=cells.LARGE_SOMA_RATIO,
        border_centred_crops=cells.BORDER_CENTRED_CROPS)
    assert isinstance(rules.crowded_somata, int) and isinstance(rules.soma_reach, float)
    assert CellRules(fragment_ratio=0).fragment_ratio == 0.0          # a whole number where a number belongs
    assert CellRules(wide_dominance=float("inf")).wide_dominance == float("inf")  # the rule off


@pytest.mark.parametrize(("changes", "message"), [
    ({"visible_processes": 0}, r"rules\.visible_processes=0 must be true or false\. Fix: e\.g\. "
                               r"rules\.visible_processes=true"),
    ({"crowded_somata": 7.5}, r"rules\.crowded_somata=7\.5 must be a whole number >= 1"),
    ({"crowded_somata": 0}, r"rules\.crowded_somata=0 must be a whole number >= 1"),
    ({"border_sliver_ratio": -1.0}, r"rules\.border_sliver_ratio=-1\.0 must be a number >= 0"),
    ({"soma_reach": "far"}, r"rules\.soma_reach='far' must be a number >= 0"),
    ({"plateau_opening": float("nan")}, r"rules\.plateau_opening=nan must be a number >= 0"),
    ({"shrink_tolerance": 0.8}, r"rules\.shrink_tolerance=0\.8 must be >= 1"),
    ({"wide_dominance": 0.0}, r"rules\.wide_dominance=0\.0 must be > 0 \(inf turns the rule off\)"),
    ({"small_soma_slack": 1.2}, r"rules\.small_soma_slack=1\.2 must be in \(0, 1\]"),
    ({"crowded_soma_slack": 0.0}, r"rules\.crowded_soma_slack=0\.0 must be in \(0, 1\]"),
    ({"border_centred_agreement": 1.5}, r"rules\.border_centred_agreement=1\.5 must be in \[0, 1\]"),
])
def test_a_bad_setting_is_refused_in_one_line_naming_it(changes, message) -> None:
    from astro3s.errors import ConfigError
    from astro3s.inference.rules import CellRules

    with pytest.raises(ConfigError, match=message):
        CellRules(**changes)


def test_inference_options_take_rules_as_a_mapping_and_name_an_unknown_one() -> None:
    from astro3s.errors import ConfigError
    from astro3s.inference import InferenceOptions
    from astro3s.inference.rules import CellRules

    assert InferenceOptions(preprocess=None).rules == CellRules()
    options = InferenceOptions(preprocess=None, rules={"visible_processes": False, "border_sliver_ratio": 0})
    assert options.rules == CellRules(visible_processes=False, border_sliver_ratio=0.0)
    assert dataclasses.replace(options, rules={"fragment_ratio": 0}).rules == CellRules(fragment_ratio=0.0)
    with pytest.raises(ConfigError, match=r"unknown rules option rules\.visible_process \(did you mean "
                                          r"rules\.visible_processes\?\)"):
        InferenceOptions(preprocess=None, rules={"visible_process": False})
    with pytest.raises(ConfigError, match="rules must be a mapping"):
        InferenceOptions(preprocess=None, rules=["visible_processes"])


def test_astro3s_infer_sets_a_rule_and_refuses_a_typo_with_the_fix(tmp_path) -> None:
    from astro3s.cli.infer import inference_setup
    from astro3s.errors import ConfigError
    from astro3s.inference.rules import CellRules

    base = [f"input={tmp_path / 'movie.tif'}", f"out={tmp_path / 'out'}", "device=cpu", "extras=quiet"]
    _, default = inference_setup(compose_config("infer", base, output_dir=tmp_path / "a"))
    assert default.rules == CellRules()
    _, changed = inference_setup(compose_config(
        "infer", [*base, "rules.visible_processes=false", "rules.border_sliver_ratio=0", "rules.wide_dominance=inf",
                  "rules.crowded_somata=1000000"], output_dir=tmp_path / "b"))
    assert changed.rules == CellRules(visible_processes=False, border_sliver_ratio=0.0, wide_dominance=float("inf"),
                                      crowded_somata=1000000)
    with pytest.raises(ConfigError, match=r"rules\.border_sliver_ration.*did you mean rules\.border_sliver_ratio"):
        inference_setup(compose_config("infer", [*base, "+rules.border_sliver_ration=0"], output_dir=tmp_path / "c"))
    with pytest.raises(ConfigError, match=r"rules\.crowded_somata=2\.5"):
        inference_setup(compose_config("infer", [*base, "rules.crowded_somata=2.5"], output_dir=tmp_path / "d"))


def test_segment_movie_hands_each_setting_to_the_step_that_reads_it(tiny_movie, record_calls,
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    # the settings that lower-level functions read reach them as arguments (no module constant is patched)
    import astro3s.inference.cells as cells
    import astro3s.inference.segment as segment
    import astro3s.postprocess as postprocess
    import astro3s.postprocess.grow as grow
    from astro3s.inference import load_inference_model
    from astro3s.io import read_movie
    from astro3s.preprocess import preprocess

    rules = {"own_reach": 2.5, "wide_dominance": 6.0, "shrink_tolerance": 1.7, "soma_reach": 0.5,
             "border_sliver_ratio": 0.7, "faint_cell_contrast": 0.1, "faint_reference_cap": 3.0,
             "plateau_opening": 0.25, "fragment_ratio": 0.05,
             "small_soma_slack": 0.9, "crowded_soma_slack": 0.55, "min_added_area": 0.3, "min_blob_scale": 2.7}
    model, options = load_inference_model("default", device="cpu", rules=rules)
    scales, fits = record_calls(segment, "soma_bin_factor"), record_calls(segment, "adapt_soma_scale")
    refined, slivers = record_calls(grow, "with_refined_somata"), record_calls(cells, "drop_border_slivers")
    absorbed = record_calls(cells, "with_fragments_absorbed")
    with read_movie(tiny_movie) as movie:
        pre = preprocess(movie, options.preprocess, progress=False)
    _, _, info = cells.segment_movie(pre, model, options)
    lower = min(info["configured"][0], *(info["estimated"] or [info["configured"][0]]))
    slack = 0.55 if info.get("first_pass_somata", 0) >= options.rules.crowded_somata else 0.9
    assert info["estimated"] is not None  # the tiny movie's first pass gives a fitted range ...
    assert info["size_filter_range"][0] == pytest.approx(slack * lower)  # ... whose lower end the setting loosens
    asked = scales[0][1].pop("first_pass")  # rules.first_pass_giant_soma: the network's first pass
    assert callable(asked) and scales[0][1] == {"own_reach": 2.5, "wide_dominance": 6.0, "min_blob_scale": 2.7}
    assert fits[0][1]["shrink_tolerance"] == 1.7
    assert refined and all(kwargs["reach"] == 0.5 for _, kwargs in refined)
    assert slivers[0][1] == {"min_ratio": 0.7} and absorbed[0][1] == {"max_ratio": 0.05}
    # a binned FOV: the faint-cell rule, the completion's reach and the plateau's opening
    monkeypatch.setattr(segment, "soma_bin_factor",
                        lambda pre, **k: (2, {"blob_area": 800.0, "coarse_scale": 2.0, "bin_factor": 2}))
    faint, plateau = record_calls(cells, "drop_faint_cells"), record_calls(postprocess, "plateau_somata")
    small = record_calls(cells, "drop_small_additions")
    completed = record_calls(grow, "with_completed_somata")
    cells.segment_movie(pre, model, options)
    assert faint[0][1] == {"min_relative_contrast": 0.1, "reference_cap": 3.0}
    assert completed[0][1] == {"reach": 0.5}
    assert plateau and plateau[0][1] == {"opening": 0.25}
    assert small and all(kwargs["min_relative_area"] == 0.3 for _, kwargs in small)


def test_evaluate_model_flags_are_the_rule_settings(experiment_script, monkeypatch: pytest.MonkeyPatch) -> None:
    # experiments/evaluate_model.py --soma-reach, --visible-processes 0 ... reproduce the runs before each rule:
    # one flag per CellRules field, typed as the field, handed to the inference options and recorded
    import astro3s.inference
    from astro3s.inference.rules import CellRules

    module = experiment_script("evaluate_model")
    assert sorted(module.RULE_FLAGS) == sorted(spec.name for spec in dataclasses.fields(CellRules))
    settings = module.rule_settings({"soma_reach": "0.5", "shrink_tolerance": None, "crowded_somata": 7,
                                     "visible_processes": 0, "large_pass_on_crowded": 1, "wide_dominance": "inf"})
    assert settings == {"soma_reach": 0.5, "crowded_somata": 7, "visible_processes": False,
                        "large_pass_on_crowded": True, "wide_dominance": float("inf")}
    assert isinstance(settings["crowded_somata"], int) and settings["visible_processes"] is False
    seen = {}

    class Stop(Exception):
        pass

    def load(checkpoint, **kwargs):
        seen.update(kwargs)
        raise Stop

    monkeypatch.setattr(astro3s.inference, "load_inference_model", load)
    with pytest.raises(Stop):
        module.main(["--sets", "--visible-processes", "0", "--border-sliver-ratio", "0"])
    assert seen["rules"] == {"visible_processes": False, "border_sliver_ratio": 0.0}


@pytest.mark.parametrize(("blob_area", "min_blob_scale", "factor"),
                         [(785.0, 2.0, 2), (785.0, 2.4, 1), (1226.0, 2.0, 3), (1226.0, 2.4, 3), (3000.0, 2.4, 4)])
def test_min_blob_scale_sets_the_smallest_blob_scale_that_bins(blob_area, min_blob_scale, factor,
                                                               monkeypatch: pytest.MonkeyPatch) -> None:
    # the parameters' centre soma is sqrt(89 * 345) = 175 px: 785 px read 2.12x wider, 1226 px 2.65x, 3000 px 4.1x
    from types import SimpleNamespace

    import numpy as np

    import astro3s.preprocess
    import astro3s.preprocess.scale as scale
    from astro3s.inference.segment import soma_bin_factor
    from astro3s.preprocess import PreprocessParams
    from astro3s.preprocess.scale import SomaBlobs

    monkeypatch.setattr(astro3s.preprocess, "blob_soma_area", lambda image, **_: blob_area)
    blob = SomaBlobs(rows=np.array([100]), cols=np.array([100]), radii=np.array([(blob_area / np.pi) ** 0.5]),
                     strength=np.array([1.0], np.float32))
    monkeypatch.setattr(scale, "soma_blobs", lambda image, **_: blob)
    pre = SimpleNamespace(median_image=np.zeros((256, 256), np.float32), params=PreprocessParams(), details={})
    got, info = soma_bin_factor(pre, min_blob_scale=min_blob_scale)
    assert got == factor and info["blob_area"] == blob_area
    assert info["bin_factor"] == factor


def test_min_blob_scale_defaults_to_the_shipped_setting_and_is_checked() -> None:
    from astro3s.errors import ConfigError
    from astro3s.inference import segment
    from astro3s.inference.rules import CellRules

    assert CellRules().min_blob_scale == segment.MIN_BLOB_SCALE
    with pytest.raises(ConfigError, match="rules.min_blob_scale"):
        CellRules(min_blob_scale=-1)
