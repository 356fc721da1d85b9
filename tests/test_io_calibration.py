"""ImageJ value calibrations in read_movie: signed 16-bit data stored as uint16 with ``c0=-32768``."""

from __future__ import annotations

import logging

import numpy as np
import pytest
import tifffile

from astro3s.io import Movie, read_movie


def _signed_movie(shape=(6, 5, 7), seed: int = 0) -> np.ndarray:
    """Real values of a dF movie, negatives included (int16 range)."""
    return np.random.default_rng(seed).integers(-200, 300, size=shape).astype(np.int16)


def _write_imagej(path, stored: np.ndarray, **extra) -> None:
    tifffile.imwrite(path, stored, imagej=True, metadata={"axes": "TYX", "finterval": 0.5, **extra})


def test_signed_16bit_imagej_calibration_is_applied(tmp_path):
    real = _signed_movie()
    stored = (real.astype(np.int32) + 32768).astype(np.uint16)
    path = tmp_path / "signed.tif"
    _write_imagej(path, stored, cf=0, c0=-32768.0, c1=1.0, vunit="Gray Value", min=32700.0, max=33100.0)
    with read_movie(path) as movie:
        assert movie.backend == "memmap" and movie.calibration == (-32768.0, 1.0)
        assert movie.dtype == np.float32 and movie.fs == pytest.approx(2.0)
        assert "calibration" in repr(movie)
        np.testing.assert_array_equal(movie[:], real.astype(np.float32))
        assert movie[:].min() < 0
        np.testing.assert_array_equal(movie[2, 1:3, ::2], real[2, 1:3, ::2])
        np.testing.assert_array_equal(movie.load(), real)
        np.testing.assert_array_equal(np.concatenate([b for _, b in movie.chunks(4)]), real)
        np.testing.assert_array_equal(movie.frames([5, 0, 1]), real[[5, 0, 1]])
        np.testing.assert_array_equal(np.asarray(movie), real)


def test_calibration_of_compressed_pages_and_a_slope(tmp_path):
    stored = np.random.default_rng(1).integers(0, 4000, size=(4, 6, 6)).astype(np.uint16)
    path = tmp_path / "compressed.tif"
    tifffile.imwrite(path, stored, imagej=True, compression="zlib",
                     metadata={"axes": "TYX", "cf": 0, "c0": 10.0, "c1": 0.5})
    with read_movie(path) as movie:
        assert movie.backend == "tiff-pages" and movie.calibration == (10.0, 0.5)
        np.testing.assert_allclose(movie[:], 10.0 + 0.5 * stored.astype(np.float32))
        np.testing.assert_allclose(movie.load(), 10.0 + 0.5 * stored.astype(np.float32))


def test_no_calibration_keeps_the_stored_values(tmp_path):
    stored = np.random.default_rng(2).integers(0, 4000, size=(3, 4, 5)).astype(np.uint16)
    plain = tmp_path / "plain.tif"
    _write_imagej(plain, stored)
    identity = tmp_path / "identity.tif"
    _write_imagej(identity, stored, cf=0, c0=0.0, c1=1.0)
    for path in (plain, identity):
        with read_movie(path) as movie:
            assert movie.calibration is None and movie.dtype == np.uint16 and movie.backend == "memmap"
            np.testing.assert_array_equal(movie[:], stored)
    assert Movie.from_array(stored).calibration is None


def test_other_calibration_functions_and_float_images_are_not_applied(tmp_path, caplog):
    stored = np.random.default_rng(3).integers(0, 4000, size=(3, 4, 5)).astype(np.uint16)
    poly = tmp_path / "poly.tif"
    _write_imagej(poly, stored, cf=1, c0=1.0, c1=2.0, c2=0.1)  # ImageJ's POLY2
    with caplog.at_level(logging.WARNING, logger="astro3s.io.movie"):
        with read_movie(poly) as movie:
            assert movie.calibration is None
            np.testing.assert_array_equal(movie[:], stored)
    assert "cf=1" in caplog.text and "poly.tif" in caplog.text

    floats = tmp_path / "float.tif"
    _write_imagej(floats, stored.astype(np.float32), cf=0, c0=-32768.0, c1=1.0)
    with read_movie(floats) as movie:
        assert movie.calibration is None
        np.testing.assert_array_equal(movie[:], stored.astype(np.float32))
