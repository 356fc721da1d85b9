"""The training simulator's nuisance structure: tissue texture scales, correlated noise, PSF shape."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
from scipy import ndimage as ndi

from astro3s.simulate import build_scene, load_preset, render_frames, sample_params, simulate_preset
from astro3s.simulate.psf import HALO_SCALE, psf_blur, psf_margin, psf_otf

NUISANCE = ("texture_fine_scale", "texture_coarse_scale", "texture_fine_weight", "noise_correlation",
            "noise_correlation_length", "psf_anisotropy", "psf_halo")
DEFAULTS = {"texture_fine_scale": 3.0, "texture_coarse_scale": 20.0, "texture_fine_weight": 0.7,
            "noise_correlation": 0.0, "noise_correlation_length": 1.0, "psf_anisotropy": 1.0, "psf_halo": 0.0}


def _params(**changes):
    return dataclasses.replace(sample_params(load_preset("tiny"), 0), **changes)


@pytest.mark.parametrize("preset", ["tiny", "d1_like", "d2_like", "d3_like", "d4_like", "large"])
def test_presets_other_than_randomised_keep_the_defaults_exactly(preset: str) -> None:
    # exact values (not exp(log(x))): the movies of these presets are the ones drawn before the options existed
    params = sample_params(load_preset(preset), np.random.default_rng(7))
    assert {k: getattr(params, k) for k in NUISANCE} == DEFAULTS


def test_randomised_draws_the_nuisance_widely() -> None:
    ranges = load_preset("randomised")
    draws = [sample_params(ranges, np.random.default_rng(s)) for s in range(40)]
    fine = [d.texture_fine_scale for d in draws]
    assert min(fine) < 1.5 and max(fine) > 5
    assert max(d.noise_correlation for d in draws) > 0.3
    assert min(d.psf_anisotropy for d in draws) < 0.8 < 1.25 < max(d.psf_anisotropy for d in draws)
    assert max(d.psf_halo for d in draws) > 0.25


def test_plain_psf_is_the_gaussian_it_always_was() -> None:
    params = _params(psf_sigma=1.3)
    image = np.random.default_rng(0).random((40, 50)).astype(np.float32)
    assert np.array_equal(psf_blur(image, params), ndi.gaussian_filter(image, 1.3, mode="nearest"))
    stack = np.stack([image, image * 2])
    assert np.array_equal(psf_blur(stack, params), ndi.gaussian_filter(stack, (0, 1.3, 1.3), mode="nearest"))
    assert psf_margin(params) == int(np.ceil(4 * 1.3)) + 1


def _moments(image: np.ndarray) -> tuple[float, float]:
    yy, xx = np.indices(image.shape)
    w = image / image.sum()
    cy, cx = (w * yy).sum(), (w * xx).sum()
    return float(np.sqrt((w * (yy - cy) ** 2).sum())), float(np.sqrt((w * (xx - cx) ** 2).sum()))


def test_elongated_psf_has_the_axis_ratio_and_keeps_the_light() -> None:
    params = _params(psf_sigma=1.5, psf_anisotropy=2.25)
    delta = np.zeros((61, 61), np.float32)
    delta[30, 30] = 1
    spot = psf_blur(delta, params, mode="constant")
    sy, sx = _moments(spot)
    assert sy / sx == pytest.approx(2.25, rel=0.03)  # the sd ratio
    assert sy * sx == pytest.approx(1.5**2, rel=0.05)  # area kept
    assert spot.sum() == pytest.approx(1.0, abs=1e-4)


def test_halo_moves_light_into_the_tails() -> None:
    delta = np.zeros((81, 81), np.float32)
    delta[40, 40] = 1
    plain = psf_blur(delta, _params(psf_sigma=1.0), mode="constant")
    halo = psf_blur(delta, _params(psf_sigma=1.0, psf_halo=0.3), mode="constant")
    assert halo.sum() == pytest.approx(1.0, abs=1e-4)
    assert halo[40, 40] == pytest.approx(0.7 * plain[40, 40] + 0.3 / (2 * np.pi * HALO_SCALE**2), rel=0.02)
    far = np.hypot(*np.indices(delta.shape) - 40) > 6
    assert plain[far].sum() < 1e-6
    assert halo[far].sum() == pytest.approx(0.3 * np.exp(-(6**2) / (2 * HALO_SCALE**2)), rel=0.15)
    assert psf_margin(_params(psf_sigma=1.0, psf_halo=0.3)) == int(np.ceil(4 * HALO_SCALE)) + 1


@pytest.mark.parametrize("changes", [{}, {"psf_anisotropy": 0.6}, {"psf_halo": 0.35, "psf_anisotropy": 1.4}])
def test_the_transfer_function_is_the_spatial_blur(changes: dict) -> None:
    # the movie is blurred through psf_otf, the expected domain correlation through psf_blur: they must agree
    params = _params(psf_sigma=1.2, **changes)
    n = 96
    delta = np.zeros((n, n), np.float32)
    delta[0, 0] = 1
    spatial = psf_blur(delta, params, mode="wrap")
    ky, kx = np.fft.fftfreq(n).astype(np.float32), np.fft.rfftfreq(n).astype(np.float32)
    spectral = np.fft.irfft2(psf_otf(params, ky, kx), s=(n, n))
    assert np.abs(spatial - spectral).max() < 5e-3 * spatial.max()  # sampled, truncated kernel


def _noise_neighbour_correlation(params) -> tuple[float, float]:
    scene = build_scene(params, seed=3)
    clean = render_frames(scene, 0, 40, noise=False)
    noisy = render_frames(scene, 0, 40).astype(np.float32)
    noise = noisy - clean
    lag1 = float((noise[:, :, 1:] * noise[:, :, :-1]).mean() / (noise**2).mean())
    return lag1, float(noise.var())


def test_correlated_noise_correlates_neighbours_and_keeps_the_variance() -> None:
    flat = {"n_cells": 0, "n_frames": 40, "background_photons": 20.0, "gain": 5.0, "read_noise": 4.0,
            "motion_sd": 0.0, "jump_rate": 0.0, "n_vessels": 0, "neuron_density": 0.0, "defocus_density": 0.0,
            "blob_density": 0.0, "neuropil_amplitude": 0.0}
    white_lag1, white_var = _noise_neighbour_correlation(_params(**flat))
    corr_lag1, corr_var = _noise_neighbour_correlation(_params(**flat, noise_correlation=0.3,
                                                               noise_correlation_length=1.0))
    assert abs(white_lag1) < 0.03
    # a unit Gaussian kernel correlates its output 0.78 at 1 px: 0.3 of the variance gives ~0.23
    assert 0.18 < corr_lag1 < 0.28
    assert corr_var == pytest.approx(white_var, rel=0.08)


def test_randomised_movie_with_every_option_renders_with_consistent_truth() -> None:
    sim = simulate_preset("randomised", seed=4, height=96, width=96, n_frames=60, n_cells=[3, 3],
                          soma_area=[60, 120], soma_area_median=[80, 80], psf_halo=[0.3, 0.3],
                          psf_anisotropy=[1.4, 1.4], noise_correlation=[0.3, 0.3], texture_fine_scale=[1, 1])
    assert sim.movie.shape == (60, 96, 96) and sim.movie.dtype == np.uint16
    assert sim.params.psf_halo == 0.3 and sim.params.noise_correlation == 0.3
    assert np.all(sim.soma[sim.processes > 0] == 0)
    assert (sim.soma > 0).any()
