"""Somata of a membrane-targeted indicator (bright rims, dim cores) filled before the network sees them.

:func:`astro3s.preprocess.ring_cores.fill_ring_cores` raises the dim core a bright closed rim encloses to the
rim's level and leaves everything else as it was; the cores' sizes give the soma scale of such a FOV
(:func:`astro3s.inference.segment.ring_soma_area`), which its bright territories would otherwise read as
giant somata.
"""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest

import astro3s.preprocess
from astro3s.inference.segment import ring_soma_area, soma_bin_factor
from astro3s.preprocess import PreprocessParams, preprocess
from astro3s.preprocess.ring_cores import fill_ring_cores


def _disc(shape: tuple[int, int], centre: tuple[float, float], radius: float) -> np.ndarray:
    yy, xx = np.mgrid[:shape[0], :shape[1]]
    return (yy - centre[0]) ** 2 + (xx - centre[1]) ** 2 <= radius ** 2


def _ring_image(*, core: float = 0.3, rim: float = 1.0, background: float = 0.1, radius: float = 9.0,
                centre: tuple[float, float] = (40.0, 40.0), shape: tuple[int, int] = (96, 96)) -> np.ndarray:
    """A soma as a 2-px rim of brightness ``rim`` around a core of ``core`` on a flat background."""
    outer = _disc(shape, centre, radius)
    inner = _disc(shape, centre, radius - 2)
    image = np.full(shape, background, np.float32)
    image[outer] = rim
    image[inner] = core
    return image


def test_a_rim_around_a_dim_core_is_filled_to_the_rims_brightness() -> None:
    image = _ring_image()
    filled, cores = fill_ring_cores(image)
    core = _disc(image.shape, (40, 40), 5)  # well inside the rim
    assert cores[core].all()
    assert filled[core].min() > 0.6  # was 0.3: at least the 1-px-smoothed rim's level (a 2-px rim peaks at ~0.7)
    # nothing outside the cores changes, and nothing is darkened
    np.testing.assert_array_equal(filled[~cores], image[~cores])
    assert (filled >= image).all()
    assert not cores[~_disc(image.shape, (40, 40), 9)].any()


def test_the_whole_core_is_raised_to_the_rims_median_not_to_its_lowest_level() -> None:
    """A core raised to the ring's lowest level stays a dim disc inside a brighter rim (read as processes)."""
    image = _ring_image(core=0.3, radius=12.0)
    inner = _disc(image.shape, (40, 40), 10)
    filled, cores = fill_ring_cores(image)
    assert cores[inner].all()
    assert filled[inner].min() == pytest.approx(1.0)  # the rim's median brightness, everywhere inside
    saddle, saddle_cores = fill_ring_cores(image, fill="saddle")
    assert saddle[inner].max() < 0.7  # the smoothed rim's lowest level: a dim disc inside the rim
    assert not cores[~_disc(image.shape, (40, 40), 12)].any()
    np.testing.assert_array_equal(filled[~cores], image[~cores])
    with pytest.raises(ValueError, match="fill must be one of"):
        fill_ring_cores(image, fill="level")


def test_a_core_a_tenth_under_its_rim_is_filled() -> None:
    """Membrane shells seen through an optical section: their top and bottom blur into the core."""
    image = _ring_image(core=0.7, radius=10.0)  # 0.1-0.2 under the smoothed rim's lowest level
    assert fill_ring_cores(image)[1].any()
    assert not fill_ring_cores(image, min_depth=0.2)[1].any()  # the threshold before 2026-12-07 (fifteenth)


def test_a_gap_enclosed_by_a_surround_as_bright_as_its_rim_is_not_filled() -> None:
    """A dip in a bright neuropil (or between two cells' processes) is enclosed, but its "rim" is no ridge."""
    image = np.full((96, 96), 1.0, np.float32)  # a bright field ...
    image[_disc(image.shape, (40, 40), 7)] = 0.6  # ... with a dim gap in it, as deep as a membrane soma's core
    assert not fill_ring_cores(image)[1].any()  # the ring around the gap is as bright as the field beyond
    assert fill_ring_cores(image, min_rim_contrast=0.0)[1].any()  # no contrast test: filled, as before 2026-12-07
    ringed = _ring_image(core=0.6, background=0.1)  # the same core inside a rim on a dim field: a soma
    assert fill_ring_cores(ringed)[1].any()


def test_a_cytosolic_soma_and_dim_gaps_are_left_alone() -> None:
    rng = np.random.default_rng(0)
    image = np.full((96, 96), 0.1, np.float32) + rng.normal(0, 0.01, (96, 96)).astype(np.float32)
    image[_disc(image.shape, (40, 40), 9)] = 1.0  # a soma brightest inside
    # a dark hole in dim neuropil (a neuron's shadow): enclosed, deep, but its surround is no rim
    image[_disc(image.shape, (70, 70), 12)] = 0.25
    image[_disc(image.shape, (70, 70), 8)] = 0.05
    filled, cores = fill_ring_cores(image)
    assert not cores.any()
    np.testing.assert_array_equal(filled, image.astype(np.float32))


def test_a_rim_open_to_the_fovs_edge_or_too_large_is_not_filled() -> None:
    cut = _ring_image(centre=(40.0, 2.0))  # the FOV's edge opens the core
    assert not fill_ring_cores(cut)[1][:, :3].any()
    big = _ring_image(radius=40.0, centre=(48.0, 48.0), shape=(100, 100))
    assert not fill_ring_cores(big, max_area=2000)[1].any()
    assert fill_ring_cores(big, max_area=5000)[1].any()


def test_shallow_cores_and_flat_images_are_not_filled() -> None:
    assert not fill_ring_cores(_ring_image(core=0.95))[1].any()  # a core 5 % under its rim: a cytosolic soma
    flat, cores = fill_ring_cores(np.zeros((32, 32)))
    assert not cores.any() and flat.dtype == np.float32


def test_ring_soma_area_adds_the_rim_to_the_cores() -> None:
    cores = [np.pi * 5.0 ** 2, np.pi * 7.0 ** 2, np.pi * 6.0 ** 2]
    assert ring_soma_area(cores, rim_px=2.0) == pytest.approx(np.pi * 8.0 ** 2)
    assert ring_soma_area([100.0]) is None  # one ring is no scale
    assert ring_soma_area(None) is None


def test_rings_refuse_binning_when_the_blobs_read_territories_as_giant_somata(monkeypatch) -> None:
    monkeypatch.setattr(astro3s.preprocess, "blob_soma_area", lambda image, **_: 1900.0)
    params = PreprocessParams()
    pre = SimpleNamespace(median_image=np.zeros((256, 256), np.float32), params=params, details={})
    assert soma_bin_factor(pre)[0] == 3  # the blobs alone: somata 3.3x wider than the parameters'
    pre.details["ring_core_areas"] = [150, 180, 120, 200]
    factor, info = soma_bin_factor(pre)
    assert factor == 1 and info["ring_area"] == pytest.approx(ring_soma_area([150, 180, 120, 200]), abs=0.1)
    pre.details["ring_core_areas"] = [417, 85]  # two dim nuclei of giant cytosolic somata: no veto
    assert soma_bin_factor(pre)[0] == 3
    pre.details["ring_core_areas"] = [900, 1000, 950]  # rims that say the somata are large: the blobs' factor stands
    assert soma_bin_factor(pre)[0] == 3
    monkeypatch.setattr(astro3s.preprocess, "blob_soma_area", lambda image, **_: 300.0)
    pre.details["ring_core_areas"] = [2500, 2600]  # rings never make a FOV binned that its blobs do not
    assert soma_bin_factor(pre)[0] == 1


def test_preprocess_fills_a_membrane_movies_soma_cores_and_records_them() -> None:
    from astro3s.heldout.write import render_member_movie

    movie, scene = render_member_movie("membrane", 0, n_frames=60)
    on = preprocess(movie.astype(np.float32), PreprocessParams(fill_ring_cores=True), progress=False)
    off = preprocess(movie.astype(np.float32), PreprocessParams(fill_ring_cores=False), progress=False)
    assert on.details["ring_core_px"] > 0 and "ring_core_px" not in off.details
    raised = on.median_image > off.median_image
    assert raised.any()
    assert (scene.soma[raised] > 0).mean() > 0.6  # the pixels raised are somata's
    assert len(on.details["ring_core_areas"]) >= 2
    # the raised pixels themselves travel with the result (the ring-cell rule reads them), none without the fill
    assert on.ring_cores is not None and on.ring_cores.dtype == bool and on.ring_cores.shape == raised.shape
    assert int(on.ring_cores.sum()) == on.details["ring_core_px"] and not raised[~on.ring_cores].any()
    assert off.ring_cores is None
    # the fill before 2026-12-07 (fifteenth session): fewer of the somata's pixels raised, and less
    saddle = preprocess(movie.astype(np.float32), PreprocessParams(ring_core_depth=0.2, ring_core_fill="saddle"),
                        progress=False)
    assert 0 < saddle.details["ring_core_px"] < on.details["ring_core_px"]
    soma = scene.soma > 0
    assert (on.median_image - off.median_image)[soma].sum() > (saddle.median_image - off.median_image)[soma].sum()


def test_the_fills_settings_are_checked() -> None:
    from astro3s.errors import ConfigError

    with pytest.raises(ConfigError, match="ring_core_fill must be one of rim, saddle"):
        PreprocessParams(ring_core_fill="level")
    with pytest.raises(ConfigError, match="ring_core_depth must be in"):
        PreprocessParams(ring_core_depth=1.5)



def _first_pass(shape: tuple[int, int], discs: list[tuple[float, float, float]]) -> np.ndarray:
    """Whole-FOV class probabilities (background, soma, processes) with soma on the given (row, col, radius) discs."""
    from astro3s.models.classes import BACKGROUND, SOMA

    probs = np.zeros((3, *shape), np.float32)
    probs[BACKGROUND] = 1.0
    for row, col, radius in discs:
        disc = _disc(shape, (row, col), radius)
        probs[BACKGROUND][disc], probs[SOMA][disc] = 0.0, 1.0
    return probs


def test_the_network_overrules_the_rings_when_one_voting_blob_holds_a_giant_somas_worth(monkeypatch) -> None:
    """Cores of a fibre mesh (cross-check zoom_84) or of a giant cell's processes (d2_like_s5001) refuse binning;
    the network's first pass, asked only then, splits the giant soma into fragments that add up to a giant soma
    inside the blob that voted, which a membrane-labelled FOV's somata (one small soma per territory) never do."""
    import astro3s.preprocess.scale as scale
    from astro3s.preprocess.scale import SomaBlobs

    monkeypatch.setattr(astro3s.preprocess, "blob_soma_area", lambda image, **_: 1900.0)
    blob = SomaBlobs(rows=np.array([100]), cols=np.array([100]), radii=np.array([30.0]),
                     strength=np.array([1.0], np.float32))
    monkeypatch.setattr(scale, "soma_blobs", lambda image, **_: blob)
    params = PreprocessParams()
    pre = SimpleNamespace(median_image=np.zeros((256, 256), np.float32), params=params,
                          details={"ring_core_areas": [150, 180, 120, 200]})
    asked: list[int] = []

    def first_pass(discs):
        def run() -> np.ndarray:
            asked.append(1)
            return _first_pass((256, 256), discs)
        return run

    # four fragments of ~ 250-450 px inside the blob: 1300 px of soma, a giant soma's worth
    split = [(85.0, 90.0, 9.0), (95.0, 112.0, 12.0), (112.0, 95.0, 10.0), (110.0, 112.0, 8.0)]
    factor, info = soma_bin_factor(pre, first_pass=first_pass(split))
    assert factor == 3 and info["bin_factor"] == 3 and info["first_pass_soma"] >= 700 and "ring_area" in info
    # a membrane-labelled FOV: one small soma in the territory's blob, others outside it
    territory = [(100.0, 100.0, 10.0), (30.0, 30.0, 10.0), (200.0, 200.0, 10.0), (30.0, 200.0, 12.0)]
    factor, info = soma_bin_factor(pre, first_pass=first_pass(territory))
    assert factor == 1 and info["first_pass_soma"] == pytest.approx(np.pi * 100, rel=0.1)
    # a giant soma drawn outside every blob that voted does not count
    assert soma_bin_factor(pre, first_pass=first_pass([(200.0, 60.0, 20.0)]))[0] == 1
    monkeypatch.setattr(scale, "soma_blobs", lambda image, **_: None)
    assert soma_bin_factor(pre, first_pass=first_pass(split))[0] == 1  # no blob to hold them
    monkeypatch.setattr(scale, "soma_blobs", lambda image, **_: blob)
    assert soma_bin_factor(pre)[0] == 1  # not asked (rules.first_pass_giant_soma=false): the rings' veto stands
    # the blobs read giant somata and no rings refuse: the network is not asked
    pre.details = {}
    asked.clear()
    assert soma_bin_factor(pre, first_pass=first_pass(territory))[0] == 3 and asked == []
    # nor when the blobs read no giant somata (a giant soma the blob vote misses is left to the soma-scale fit:
    # binning by the first pass's own median soma binned ASTRA's D2 layout RoiSet_SMALL_033 too little)
    monkeypatch.setattr(astro3s.preprocess, "blob_soma_area", lambda image, **_: 300.0)
    pre.details = {"ring_core_areas": [150, 180, 120, 200]}
    assert soma_bin_factor(pre, first_pass=first_pass(split))[0] == 1 and asked == []


def test_soma_px_in_blobs_counts_the_first_passs_soma_inside_each_large_enough_disc() -> None:
    from astro3s.inference.segment import soma_px_in_blobs
    from astro3s.preprocess.scale import SomaBlobs

    probs = _first_pass((128, 128), [(40.0, 40.0, 6.0), (46.0, 52.0, 5.0), (100.0, 100.0, 8.0)])
    blobs = SomaBlobs(rows=np.array([44, 100, 5]), cols=np.array([46, 100, 5]), radii=np.array([20.0, 4.0, 30.0]),
                      strength=np.ones(3, np.float32))
    both = float(_disc((128, 128), (40.0, 40.0), 6.0).sum() + _disc((128, 128), (46.0, 52.0), 5.0).sum())
    # the first blob holds both fragments; the second, too small, is skipped; the third (at the corner) holds none
    assert soma_px_in_blobs(probs, blobs, min_area=np.pi * 10**2) == pytest.approx(both, abs=2)
    assert soma_px_in_blobs(probs, blobs) == pytest.approx(both, abs=2)
    assert soma_px_in_blobs(probs, blobs, min_area=1e6) == 0.0


def test_the_first_pass_asked_about_binning_is_the_one_the_soma_scale_fit_uses(simulated, monkeypatch) -> None:
    """The network is asked only when ring cores refuse binning; its pass is then the soma-scale fit's (no pass
    more than with the rule off), and a giant soma's worth of it in a voting blob bins the FOV."""
    import dataclasses

    import astro3s.inference.network as network
    import astro3s.inference.segment as segment
    from astro3s.inference import load_inference_model
    from astro3s.inference.cells import segment_movie
    from astro3s.io import read_movie

    calls: list[float] = []
    real = network.predict_fov

    def counted(*args, **kwargs):
        calls.append(kwargs.get("zoom", 1.0))
        return real(*args, **kwargs)

    monkeypatch.setattr(network, "predict_fov", counted)
    monkeypatch.setattr(segment, "predict_fov", counted)
    model, options = load_inference_model("default", device="cpu")
    d1 = simulated("d1_like", 2, overview=False, n_frames=60)
    with read_movie(d1 / f"{d1.name}.tif") as movie:
        pre = preprocess(movie, options.preprocess, progress=False)

    def run(on: bool, **details):
        calls.clear()
        moved = dataclasses.replace(pre, details={**(pre.details or {}), **details})
        _, seg, info = segment_movie(moved, model, dataclasses.replace(options, rules={"first_pass_giant_soma": on}))
        return seg.soma.copy(), list(calls), info

    on, off = run(True), run(False)  # no ring cores: nothing asked, nothing changed
    assert on[1] == off[1] and np.array_equal(on[0], off[0]) and "first_pass_soma" not in on[2]
    # cores refuse the binning the (patched) blob scale asks for
    monkeypatch.setattr(astro3s.preprocess, "blob_soma_area", lambda image, **_: 1900.0)
    cores = {"ring_core_areas": [150, 180, 120, 200]}
    monkeypatch.setattr(segment, "soma_px_in_blobs", lambda probs, blobs, **_: 300.0)
    on, off = run(True, **cores), run(False, **cores)
    assert on[2]["first_pass_soma"] == 300.0 and on[2]["bin_factor"] == 1 and "first_pass_soma" not in off[2]
    assert on[1] == off[1] and np.array_equal(on[0], off[0])  # the pass asked is the fit's own
    monkeypatch.setattr(segment, "soma_px_in_blobs", lambda probs, blobs, **_: 1500.0)
    on = run(True, **cores)
    assert on[2]["bin_factor"] == 3 and on[2]["first_pass_soma"] == 1500.0 and on[0].shape == pre.median_image.shape


def test_astro3s_infer_takes_the_fills_settings_from_a_params_file(tiny_movie, tmp_path) -> None:
    """The fill before 2026-12-07's fifteenth session, asked for with ``params=`` (a saved PreprocessParams)."""
    from _hydra import infer_options

    from astro3s.preprocess import save_params

    assert infer_options(tiny_movie, tmp_path).preprocess.ring_core_fill == "rim"
    path = save_params(PreprocessParams(ring_core_depth=0.2, ring_core_fill="saddle", ring_core_contrast=0.0),
                       tmp_path / "before.yaml")
    options = infer_options(tiny_movie, tmp_path, f"params={path}").preprocess
    assert (options.ring_core_depth, options.ring_core_fill, options.ring_core_contrast) == (0.2, "saddle", 0.0)
