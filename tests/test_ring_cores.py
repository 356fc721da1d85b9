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


def test_a_rim_around_a_dim_core_is_filled_to_the_rims_level() -> None:
    image = _ring_image()
    filled, cores = fill_ring_cores(image)
    core = _disc(image.shape, (40, 40), 5)  # well inside the rim
    assert cores[core].all()
    assert filled[core].min() > 0.6  # was 0.3: the level of the rim smoothed by 1 px (a 2-px rim peaks at ~0.7)
    # nothing outside the cores changes, and nothing is darkened
    np.testing.assert_array_equal(filled[~cores], image[~cores])
    assert (filled >= image).all()
    assert not cores[~_disc(image.shape, (40, 40), 9)].any()


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

