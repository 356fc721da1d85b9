"""Baseline-free (dF) movies: the check, the noise-variance image and the pipeline's choice."""

from __future__ import annotations

import logging

import numpy as np
import pytest
from scipy import ndimage

from astro3s.errors import ConfigError
from astro3s.preprocess import PreprocessParams, check_baseline, noise_variance_image, preprocess
from astro3s.preprocess.streaming import sample_frame_pairs

CENTRES = [(30, 30), (30, 80), (75, 50)]


def resting_image(size: int = 112, *, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Photons per frame of three bright discs on a dim textured background, and their labels."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:size, :size]
    labels = np.zeros((size, size), np.uint16)
    for k, (cy, cx) in enumerate(CENTRES, start=1):
        labels[(yy - cy) ** 2 + (xx - cx) ** 2 <= 49] = k
    texture = 4 + 2 * ndimage.gaussian_filter(rng.normal(size=(size, size)), 3) / 0.1
    cells = ndimage.gaussian_filter((labels > 0).astype(float), 1) * 30
    return np.clip(texture, 0.5, None) + cells, labels


def shot_noise_movie(n_frames: int = 160, *, seed: int = 0, read_noise: float = 0.0,
                     resting: np.ndarray | None = None) -> np.ndarray:
    """Poisson frames of :func:`resting_image` (with events on the discs) plus Gaussian read noise."""
    rng = np.random.default_rng(seed)
    base, labels = resting_image(seed=seed) if resting is None else (resting, None)
    activity = 1 + (rng.random((n_frames, 1, 1)) < 0.1) * 0.5 * (base > 20)
    movie = rng.poisson(base[None] * activity).astype(np.float32)
    return movie + rng.normal(0, read_noise, movie.shape).astype(np.float32)


def test_raw_movie_has_a_baseline_and_its_dF_does_not():
    raw = shot_noise_movie()
    check = check_baseline(sample_frame_pairs(raw))
    assert not check.baseline_free
    assert check.median_noise_correlation > 0.8
    dF = raw - np.median(raw, axis=0)  # each pixel's baseline subtracted
    check = check_baseline(sample_frame_pairs(dF))
    assert check.baseline_free
    assert check.median_noise_correlation < 0.5 and check.noise_reliability >= 0.4
    # an offset, a gain or a float copy of the raw movie changes nothing
    for variant in (raw * 0.01, raw - 32768, raw * 40):
        assert not check_baseline(sample_frame_pairs(variant)).baseline_free


def test_read_noise_limited_movie_keeps_its_median_image():
    # photon counts far below the read noise: the noise has no structure, so nothing is recovered from it
    movie = shot_noise_movie(read_noise=60.0)
    check = check_baseline(sample_frame_pairs(movie))
    assert check.noise_reliability < 0.2
    assert not check.baseline_free
    assert not check_baseline(sample_frame_pairs(movie - np.median(movie, axis=0))).baseline_free


def test_check_baseline_validates_its_input():
    with pytest.raises(ValueError, match="K >= 4"):
        check_baseline(np.zeros((3, 2, 16, 16)))
    with pytest.raises(ValueError, match="shape"):
        check_baseline(np.zeros((8, 16, 16)))


def test_sample_frame_pairs_are_consecutive_and_disjoint():
    movie = np.arange(75, dtype=np.float32)[:, None, None] * np.ones((1, 8, 8), np.float32)
    pairs = sample_frame_pairs(movie, 64)
    assert pairs.shape == (37, 2, 8, 8)
    first, second = pairs[:, 0, 0, 0], pairs[:, 1, 0, 0]
    np.testing.assert_array_equal(second - first, 1)
    assert np.all(np.diff(first) >= 2)


def test_noise_variance_image_is_blockwise_exact():
    rng = np.random.default_rng(3)
    movie = rng.normal(size=(37, 9, 11)).astype(np.float32) * np.arange(1, 12, dtype=np.float32)
    expected = (np.diff(movie.astype(np.float64), axis=0) ** 2).mean(axis=0) / 2
    for step in (1, 4, 37):
        chunks = ((t, movie[t:t + step]) for t in range(0, len(movie), step))
        np.testing.assert_allclose(noise_variance_image(chunks), expected, rtol=1e-5)
    # shot noise: the variance image is affine in the resting fluorescence
    base, _ = resting_image()
    variance = noise_variance_image([(0, shot_noise_movie(resting=base, n_frames=400))])
    assert np.corrcoef(ndimage.gaussian_filter(variance, 2).ravel(), base.ravel())[0, 1] > 0.9
    with pytest.raises(ValueError, match="2 frames"):
        noise_variance_image([(0, movie[:1])])


def test_preprocess_reads_a_dF_movie_from_its_noise(caplog):
    raw = shot_noise_movie()
    params = PreprocessParams(soma_area_range=(120, 200), tile_size=48, tile_step=20, filter_box=40, crop_size=50,
                              reference_frames=60)
    kept = preprocess(raw, params, progress=False)
    assert kept.params.morphology_image == "median" and kept.params.motion_correction
    assert kept.details["morphology_image"] == "median"
    assert not kept.details["baseline_check"]["baseline_free"]

    dF = raw - np.median(raw, axis=0)
    with caplog.at_level(logging.WARNING, logger="astro3s.preprocess.pipeline"):
        result = preprocess(dF, params, progress=False)
    assert "baseline-subtracted" in caplog.text and "morphology_image=median" in caplog.text
    assert result.params.morphology_image == "noise_variance"
    assert not result.params.motion_correction  # noise has nothing static to register on
    np.testing.assert_array_equal(result.shifts, 0)
    assert result.details["baseline_check"]["baseline_free"]
    assert result.details["median_frames"] == 0  # no median-frame buffer is filled for a dF movie
    uncached = preprocess(dF, params, progress=False, cache=False)  # frames read back from the scratch file
    assert uncached.details["median_frames"] == 0
    np.testing.assert_allclose(uncached.median_image, result.median_image, rtol=1e-5)
    uncached.corrected.close()
    # the stand-in image shows the discs, as the raw movie's median image does
    _, labels = resting_image()
    inside, outside = result.median_image[labels > 0].mean(), np.median(result.median_image[labels == 0])
    assert inside > 3 * outside
    assert result.enhanced[labels > 0].mean() > result.enhanced[labels == 0].mean() + 0.2

    forced = preprocess(dF, params.replace(morphology_image="median"), progress=False)
    assert forced.params.morphology_image == "median" and "baseline_check" not in forced.details


def test_morphology_image_is_validated():
    with pytest.raises(ConfigError, match="morphology_image"):
        PreprocessParams(morphology_image="mean")


def test_the_warnings_fixes_work_on_both_entry_points(tiny_movie, tmp_path):
    """``morphology_image=median`` (astro3s-infer) and ``preprocess.morphology_image=median`` (astro3s-preprocess)."""
    from _hydra import compose_config, infer_options

    from astro3s.cli.preprocess import _params

    def infer(*overrides: str):
        return infer_options(tiny_movie, tmp_path, *overrides)

    assert infer().preprocess.morphology_image == "auto"  # the bundled model's preprocess.yaml predates the key
    assert infer("morphology_image=median").preprocess.morphology_image == "median"
    with pytest.raises(ConfigError, match="morphology_image must be one of auto, median, noise_variance"):
        infer("morphology_image=mean")
    cfg = compose_config("preprocess", [f"input={tiny_movie}", f"out={tmp_path / 'pre'}",
                                        "preprocess.morphology_image=median"], output_dir=tmp_path / "run2")
    assert _params(cfg).morphology_image == "median"
    # with another input rule on the same command line
    assert infer("lift_dim_background=false", "morphology_image=median").preprocess.morphology_image == "median"


@pytest.mark.parametrize("key", ["lift_dim_background", "line_correction", "fill_ring_cores"])
def test_the_input_rules_logged_fixes_work_on_both_entry_points(key, tiny_movie, tmp_path):
    """``KEY=false`` (astro3s-infer) and ``preprocess.KEY=false`` (astro3s-preprocess), as the logs print them.

    Uneven illumination (``lift_dim_background``), a bidirectional scan's line offset (``line_correction``),
    somata drawn as rims by a membrane-targeted indicator (``fill_ring_cores``): on by default (the bundled
    model's preprocess.yaml predates the keys), each turned off by the fix its log prints, a bad value refused.
    """
    from _hydra import compose_config, infer_options

    from astro3s.cli.preprocess import _params

    assert getattr(infer_options(tiny_movie, tmp_path).preprocess, key) is True
    assert getattr(infer_options(tiny_movie, tmp_path, f"{key}=false").preprocess, key) is False
    with pytest.raises(ConfigError, match=f"{key} must be true or false"):
        infer_options(tiny_movie, tmp_path, f"{key}=sometimes")
    cfg = compose_config("preprocess", [f"input={tiny_movie}", f"out={tmp_path / 'pre'}", f"preprocess.{key}=false"],
                         output_dir=tmp_path / "run2")
    assert getattr(_params(cfg), key) is False


def test_astro3s_infer_on_a_dF_movie_says_what_it_read(tiny_movie, tmp_path, caplog):
    """The whole command on a dF export: warned, recorded in summary.json, cells shown on the image used."""
    import json

    from _hydra import compose_config

    from astro3s.cli.infer import infer_task
    from astro3s.io import read_movie, write_movie

    with read_movie(tiny_movie) as movie:
        frames, fs = movie.load(), movie.fs
    path = write_movie(tmp_path / "dF.tif", frames - np.median(frames, axis=0), fs=fs)
    cfg = compose_config("infer", [f"input={path}", f"out={tmp_path / 'out'}", "device=cpu", "extras=quiet"],
                         output_dir=tmp_path / "run", log_dir=tmp_path / "logs")
    with caplog.at_level(logging.WARNING):
        (result,) = infer_task(cfg)
    assert "dF/F is not meaningful" in caplog.text
    assert result.status == "done" and "baseline-subtracted" in caplog.text
    summary = json.loads((result.output / "summary.json").read_text())
    assert summary["preprocess"]["morphology_image"] == "noise_variance"
    assert summary["preprocess"]["baseline_check"]["baseline_free"]
    assert summary["preprocess"]["max_shift_px"] == 0
    assert summary["parameters"]["preprocess"]["motion_correction"] is False
