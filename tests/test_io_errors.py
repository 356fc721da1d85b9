"""Every bad input gives an InputError that names the file and says what to do."""

from __future__ import annotations

import numpy as np
import pytest

from astro3s.errors import InputError
from astro3s.io import Movie, read_labels, read_movie, write_labels, write_movie


def _movie(frames: int = 20) -> np.ndarray:
    return np.random.default_rng(1).random((frames, 10, 12)).astype(np.float32)


def _raises(match: str, func, *args, **kwargs) -> InputError:
    with pytest.raises(InputError, match=match) as info:
        func(*args, **kwargs)
    return info.value


def test_unknown_extension_lists_supported_formats(tmp_path):
    path = tmp_path / "movie.avi"
    path.write_bytes(b"RIFF")
    err = _raises("movie.avi", read_movie, path)
    assert "unknown movie format" in str(err) and ".tif" in str(err) and ".zarr" in str(err)


def test_missing_file(tmp_path):
    err = _raises("nothere.tif", read_movie, tmp_path / "nothere.tif")
    assert "not found" in str(err)


@pytest.mark.parametrize("options", [
    {},                               # ImageJ hyperstack, tifffile warns and shows one page
    {"bigtiff": True},                # BigTIFF with JSON shape description
])
def test_truncated_tiff(tmp_path, options):
    path = write_movie(tmp_path / "cut.tif", _movie(), fs=5, **options)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    err = _raises("cut.tif", read_movie, path)
    assert "truncated or corrupt" in str(err)


def test_truncated_compressed_and_header_only_tiff(tmp_path):
    import tifffile

    path = tmp_path / "zip.tif"
    tifffile.imwrite(path, _movie(), compression="zlib")
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    _raises("zip.tif.*truncated or corrupt", read_movie, path)
    path.write_bytes(data[:100])
    _raises("zip.tif.*truncated or corrupt", read_movie, path)


def test_garbage_files(tmp_path):
    for name in ("bad.tif", "bad.h5", "bad.npy"):
        (tmp_path / name).write_bytes(b"\x00garbage" * 20)
        _raises(name, read_movie, tmp_path / name)


def test_single_image_is_not_a_movie(tmp_path):
    import tifffile

    tifffile.imwrite(tmp_path / "frame.tif", _movie()[0])
    err = _raises("frame.tif", read_movie, tmp_path / "frame.tif")
    assert "single image" in str(err) and "(T, H, W)" in str(err)
    np.save(tmp_path / "frame.npy", _movie()[0])
    _raises("frame.npy.*single image", read_movie, tmp_path / "frame.npy")


def test_several_channels(tmp_path):
    import tifffile

    np.save(tmp_path / "two.npy", np.zeros((5, 2, 8, 8), np.float32))
    err = _raises("two.npy", read_movie, tmp_path / "two.npy")
    assert "(5, 2, 8, 8)" in str(err) and "(T, H, W)" in str(err) and "channel" in str(err)
    tifffile.imwrite(tmp_path / "tc.tif", np.zeros((5, 2, 8, 8), np.uint16), imagej=True,
                     metadata={"axes": "TCYX"})
    err = _raises("tc.tif: holds 2 channels", read_movie, tmp_path / "tc.tif")
    assert "TCYX" in str(err) and "channel=1" in str(err)  # the fix names the option that reads one


def test_empty_movie(tmp_path):
    np.save(tmp_path / "empty.npy", np.zeros((0, 8, 8), np.float32))
    _raises("empty.npy.*empty movie", read_movie, tmp_path / "empty.npy")
    np.save(tmp_path / "flat.npy", np.zeros((4, 0, 8), np.float32))
    _raises("flat.npy.*empty movie", read_movie, tmp_path / "flat.npy")


def test_nan_frame_is_named_by_chunks(tmp_path):
    data = _movie()
    data[7, 3, 4] = np.nan
    data[12] = np.inf
    np.save(tmp_path / "nan.npy", data)
    movie = read_movie(tmp_path / "nan.npy")  # frames 0, 10, 19 are sampled: fine
    with pytest.raises(InputError, match="nan.npy") as info:
        for _ in movie.chunks(5):
            pass
    assert "frame 7 " in str(info.value) and "interpolat" in str(info.value)
    _raises("nan.npy.*frame 7 ", movie.load)


def test_nan_in_sampled_frame_fails_at_open(tmp_path):
    data = _movie()
    data[10] = np.nan
    np.save(tmp_path / "mid.npy", data)
    _raises("mid.npy.*frame 10 ", read_movie, tmp_path / "mid.npy")
    assert read_movie(tmp_path / "mid.npy", validate=False).shape == data.shape


def test_hdf5_with_two_movies_needs_key(tmp_path):
    import h5py

    path = tmp_path / "two.h5"
    with h5py.File(path, "w") as f:
        f["green"] = _movie()
        f["red"] = _movie()
    err = _raises("two.h5", read_movie, path)
    assert "'green'" in str(err) and "'red'" in str(err) and "key=" in str(err)
    _raises("two.h5.*no dataset 'blue'", read_movie, path, key="blue")


def test_zarr_group_with_two_movies_needs_key(tmp_path):
    import zarr

    group = zarr.open_group(str(tmp_path / "two.zarr"), mode="w")
    for name in ("a", "b"):
        group.create_array(name, shape=(4, 5, 6), dtype="f4")
    _raises("two.zarr.*key=", read_movie, tmp_path / "two.zarr")


def test_folder_without_frames_and_with_odd_frame(tmp_path):
    import tifffile

    folder = tmp_path / "frames"
    folder.mkdir()
    _raises("frames.*no TIFF frames", read_movie, folder)
    tifffile.imwrite(folder / "a1.tif", np.zeros((4, 4), np.uint8))
    tifffile.imwrite(folder / "a2.tif", np.zeros((5, 4), np.uint8))
    movie = read_movie(folder, validate=False)
    _raises("a2.tif.*shape", movie.__getitem__, 1)


def test_bad_frame_rate(tmp_path):
    np.save(tmp_path / "m.npy", _movie())
    _raises("m.npy.*fs=-3", read_movie, tmp_path / "m.npy", fs=-3)
    _raises("frame rate", Movie.from_array, _movie(), fs=float("nan"))


def test_write_movie_wrong_suffix_and_missing_shape(tmp_path):
    _raises("out.avi.*TIFF only", write_movie, tmp_path / "out.avi", _movie())
    _raises("out.tif.*shape=", write_movie, tmp_path / "out.tif", iter([_movie()]))


def test_label_ids_above_uint16(tmp_path):
    import tifffile

    labels = np.zeros((6, 6), np.int64)
    labels[1, 1] = 70000
    _raises("many.tif.*65535", write_labels, tmp_path / "many.tif", labels)
    assert not (tmp_path / "many.tif").exists()
    tifffile.imwrite(tmp_path / "u32.tif", labels.astype(np.uint32))
    _raises("u32.tif.*70000.*65535", read_labels, tmp_path / "u32.tif")


def test_labels_must_be_2d_integers(tmp_path):
    import tifffile

    tifffile.imwrite(tmp_path / "stack.tif", np.ones((3, 4, 4), np.uint16))
    _raises("stack.tif.*2-D", read_labels, tmp_path / "stack.tif")
    tifffile.imwrite(tmp_path / "float.tif", np.full((4, 4), 0.5, np.float32))
    _raises("float.tif.*integers", read_labels, tmp_path / "float.tif")
    _raises("missing.tif.*not found", read_labels, tmp_path / "missing.tif")
