"""Bidirectional-scan line offsets: measured (astro3s.preprocess.lines), read back in place
(astro3s.io.Movie.with_line_shift) and applied by the pre-processing (PreprocessParams.line_correction)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest


def _texture(shape=(96, 128), seed=0) -> np.ndarray:
    """Smooth blobs and ridges at several scales, as a mean image of tissue."""
    from scipy import ndimage as ndi

    rng = np.random.default_rng(seed)
    noise = rng.normal(size=shape)
    return (100 + 40 * ndi.gaussian_filter(noise, 2.0) / ndi.gaussian_filter(noise, 2.0).std()
            + 20 * ndi.gaussian_filter(noise, 6.0) / ndi.gaussian_filter(noise, 6.0).std()).astype(np.float32)


def _fourier_shifted(image: np.ndarray, offset: float) -> np.ndarray:
    """``image`` with its odd rows displaced by ``offset`` px (a band-limited shift, as a scanner's)."""
    out = image.astype(np.float64).copy()
    phase = np.exp(-2j * np.pi * np.fft.rfftfreq(image.shape[1]) * offset)
    out[1::2] = np.fft.irfft(np.fft.rfft(out[1::2], axis=1) * phase, n=image.shape[1], axis=1)
    return out.astype(np.float32)


@pytest.mark.parametrize("offset", [-2.5, -1.0, -0.4, 0.3, 0.7, 1.0, 3.2])
def test_the_offset_is_measured_to_a_few_hundredths(offset: float) -> None:
    from astro3s.preprocess.lines import estimate_line_offset

    image = _texture()
    assert abs(estimate_line_offset(image)) < 0.03
    assert estimate_line_offset(_fourier_shifted(image, offset)) == pytest.approx(offset, abs=0.05)


@pytest.mark.parametrize("offset", [0.0, 1.0])
def test_hot_and_dead_pixels_do_not_make_an_offset(offset: float) -> None:
    from astro3s.preprocess.lines import estimate_line_offset

    image = _fourier_shifted(_texture(), offset)
    rng = np.random.default_rng(3)
    ys, xs = rng.integers(0, image.shape[0], 40), rng.integers(0, image.shape[1], 40)
    image[ys[:30], xs[:30]] = 65535.0  # stuck at the type's maximum
    image[ys[30:], xs[30:]] = 0.0  # dead
    assert estimate_line_offset(image) == pytest.approx(offset, abs=0.05)


def test_images_without_horizontal_structure_or_too_small_read_zero() -> None:
    from astro3s.preprocess.lines import estimate_line_offset

    assert estimate_line_offset(np.full((20, 30), 7.0)) == 0.0
    assert estimate_line_offset(np.tile(np.arange(20.0)[:, None], (1, 30))) == 0.0  # rows constant along x
    assert estimate_line_offset(np.ones((2, 30))) == 0.0
    assert estimate_line_offset(np.ones((20, 4))) == 0.0


def test_odd_rows_are_shifted_and_even_rows_kept() -> None:
    from astro3s.io.movie import shift_odd_rows

    frames = np.arange(2 * 4 * 10, dtype=np.uint16).reshape(2, 4, 10)
    out = shift_odd_rows(frames, -2.0)
    assert out.dtype == np.float32 and frames.dtype == np.uint16  # a new array; the input as it was
    assert np.array_equal(out[:, 0::2], frames[:, 0::2])
    assert np.array_equal(out[:, 1::2, :8], frames[:, 1::2, 2:])  # exact for whole pixels
    assert np.array_equal(out[:, 1::2, 8:], np.repeat(frames[:, 1::2, 9:], 2, axis=-1))  # the end repeated
    half = shift_odd_rows(frames[0], 0.5)
    assert half[1, 5] == pytest.approx(0.5 * (frames[0, 1, 5] + frames[0, 1, 4]))


def test_every_read_of_a_shifted_movie_agrees(tmp_path: Path) -> None:
    from astro3s.io import Movie, read_movie, write_movie
    from astro3s.io.movie import shift_odd_rows

    data = np.random.default_rng(1).integers(0, 4000, (7, 12, 16)).astype(np.uint16)
    expected = shift_odd_rows(data, -1.25)
    path = write_movie(tmp_path / "m.tif", data, fs=10.0)
    for movie in (Movie.from_array(data), read_movie(path)):  # an array and a memory-mapped file
        shifted = movie.with_line_shift(-1.25)
        assert shifted.dtype == np.float32 and shifted.fs == movie.fs and shifted.shape == movie.shape
        assert movie.line_shift == 0 and movie.dtype == np.uint16  # the movie itself unchanged
        assert np.allclose(shifted[:], expected)
        assert np.allclose(shifted[3], expected[3])
        assert np.allclose(shifted[2:6, 3:9, 4:11], expected[2:6, 3:9, 4:11])  # rows keep their parity
        assert np.allclose(shifted[4, 5, 2:7], expected[4, 5, 2:7])
        assert np.allclose(shifted.frames([6, 0, 3]), expected[[6, 0, 3]])
        assert np.allclose(np.concatenate([block for _, block in shifted.chunks(3)]), expected)
        assert np.array_equal(movie[:], data)
    with pytest.raises(ValueError, match="finite"):
        Movie.from_array(data).with_line_shift(float("nan"))
    # index arrays pair up as on the movie as stored, and a row window keeps its rows' parity
    shifted = Movie.from_array(data).with_line_shift(-1.25)
    for key in (np.s_[:, [1, 4], [2, 5]], np.s_[[0, 1], [2, 3]], np.s_[[0, 1], :, [2, 3]], np.s_[0, [1, 2], [3, 4]],
                np.s_[:, 1::3], np.s_[:, ::-1, 2], np.s_[2, -1, -1], np.s_[1:5, 3:8]):
        assert shifted[key].shape == data[key].shape
        assert np.allclose(shifted[key], expected[key])
    for key in (np.s_[:, [20], 1], np.s_[[9], 1, 1]):  # out of range: refused as on the movie as stored
        with pytest.raises(IndexError):
            shifted[key]
        with pytest.raises(IndexError):
            Movie.from_array(data)[key]
    back = shifted.with_line_shift(0.0)
    assert back.dtype == np.uint16 and np.array_equal(back[:], data) and "line_shift" in repr(shifted)


@pytest.fixture(scope="module")
def combed(simulated, tmp_path_factory) -> tuple[Path, Path]:
    """The ``tiny`` preset's movie as written, and the same with its odd rows 1.5 px to the right."""
    from astro3s.io import read_movie, write_movie

    folder = simulated("tiny", 5)
    clean = folder / f"{folder.name}.tif"
    movie = read_movie(clean)
    frames = movie[:].astype(np.float32)
    combed = np.stack([_fourier_shifted(frame, 1.5) for frame in frames])
    path = write_movie(tmp_path_factory.mktemp("combed") / "combed.tif", np.clip(np.round(combed), 0, 65535)
                       .astype(np.uint16), fs=movie.fs)
    return clean, path


def test_preprocess_puts_the_rows_back_and_records_it(combed) -> None:
    from astro3s.io import read_movie
    from astro3s.preprocess import PreprocessParams, preprocess

    clean_path, combed_path = combed
    params = PreprocessParams(soma_area_range=(20.0, 120.0), expected_cells=2)
    clean = preprocess(read_movie(clean_path), params, progress=False)
    fixed = preprocess(read_movie(combed_path), params, progress=False)
    kept = preprocess(read_movie(combed_path), params.replace(line_correction=False), progress=False)
    assert abs(clean.details["line_offset_px"]) < 0.1 and clean.details["line_shift_px"] == 0.0
    assert fixed.details["line_offset_px"] == pytest.approx(1.5, abs=0.1)
    assert fixed.details["line_shift_px"] == -fixed.details["line_offset_px"]
    assert "line_offset_px" not in kept.details
    # the corrected movie (what the CC analysis reads) has its rows in place: close to the clean movie's
    inner = np.s_[:, :, 4:-4]
    error_fixed = np.abs(fixed.corrected[:][inner] - clean.corrected[:][inner]).mean()
    error_kept = np.abs(kept.corrected[:][inner] - clean.corrected[:][inner]).mean()
    assert error_fixed < 0.5 * error_kept
    for result in (clean, fixed, kept):
        result.corrected.close()


def test_a_movie_without_a_static_image_is_left_as_it_is(combed) -> None:
    """A dF/F-like export (noise around 0 with a few active patches) reads chance lags: nothing is corrected."""
    from astro3s.io import Movie
    from astro3s.preprocess import PreprocessParams
    from astro3s.preprocess.pipeline import with_lines_in_place

    chance = []
    for seed in range(6):
        noise = np.random.default_rng(seed).normal(size=(200, 64, 96)).astype(np.float32)
        movie, offset = with_lines_in_place(Movie.from_array(noise), PreprocessParams())
        assert movie.line_shift == 0.0
        chance.append(abs(offset))
    assert max(chance) > 1.0  # the chance lags were large: the halves' test and the row match turned them down
    # a movie the caller already shifted is recorded as such (a saved result reads it again alike)
    from astro3s.io import read_movie
    from astro3s.preprocess import preprocess

    _, combed_path = combed
    params = PreprocessParams(soma_area_range=(20.0, 120.0), expected_cells=2)
    given = preprocess(read_movie(combed_path).with_line_shift(-1.5), params, progress=False)
    assert given.details["line_shift_px"] == -1.5 and "line_offset_px" not in given.details
    given.corrected.close()


def test_a_saved_result_reads_its_movie_with_the_same_correction(combed, tmp_path: Path) -> None:
    from astro3s.io import read_movie
    from astro3s.preprocess import PreprocessParams, load_preprocessed, preprocess, save_preprocessed

    _, combed_path = combed
    params = PreprocessParams(soma_area_range=(20.0, 120.0), expected_cells=2)
    result = preprocess(read_movie(combed_path), params, progress=False, cache=False)
    path = save_preprocessed(result, tmp_path / "pre.npz")
    loaded = load_preprocessed(path)
    assert loaded.corrected.movie.line_shift == pytest.approx(result.details["line_shift_px"])
    assert np.allclose(loaded.corrected[:5], result.corrected[:5], atol=1e-3)
    result.corrected.close()
    loaded.corrected.close()


def test_the_setting_is_checked() -> None:
    from astro3s.errors import ConfigError
    from astro3s.preprocess import PreprocessParams

    assert PreprocessParams().line_correction and PreprocessParams().min_line_offset == 0.25
    with pytest.raises(ConfigError, match="min_line_offset"):
        PreprocessParams(min_line_offset=-1.0)
    with pytest.raises(ConfigError, match="line_correction"):
        PreprocessParams(line_correction="yes")


def test_astro3s_infer_reports_the_offset_in_summary_json(combed, tmp_path: Path) -> None:
    import json

    from astro3s.inference import infer_movie, load_inference_model

    _, combed_path = combed
    model, options = load_inference_model("default", device="cpu", figures=False)
    result = infer_movie(combed_path, tmp_path, model, options, progress=False)
    summary = json.loads((Path(result.output) / "summary.json").read_text())
    assert summary["preprocess"]["line_offset_px"] == pytest.approx(1.5, abs=0.1)
    assert summary["preprocess"]["line_shift_px"] == pytest.approx(-summary["preprocess"]["line_offset_px"])


def test_the_summary_page_says_when_scan_lines_were_moved() -> None:
    from astro3s.inference.report import _facts

    common = dict(shape=(100, 64, 64), fs=10.0, n_cells=0, n_with_processes=0, n_process_rois=0,
                  domain_areas=np.zeros(0), roi_areas=np.zeros(0), threshold=0.5, choice=None, n_events=None)
    assert "odd scan lines moved -1.50 px (bidirectional scan)" in _facts(**common, line_shift=-1.5)
    assert not any("scan lines" in line for line in _facts(**common))


def test_the_log_says_what_was_done_and_names_the_fix(combed, caplog) -> None:
    import logging

    from astro3s.io import read_movie
    from astro3s.preprocess import PreprocessParams
    from astro3s.preprocess.pipeline import with_lines_in_place

    _, combed_path = combed
    with caplog.at_level(logging.INFO, logger="astro3s.preprocess.pipeline"):
        with_lines_in_place(read_movie(combed_path), PreprocessParams().replace(morphology_image="median"))
    assert "px right of the even ones" in caplog.text
    assert "line_correction=false with astro3s-infer" in caplog.text
    assert "preprocess.line_correction=false with astro3s-preprocess" in caplog.text
