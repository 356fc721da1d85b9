"""Movie and label-image reading/writing: round trips, laziness, chunking."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

from astro3s.errors import InputError
from astro3s.io import Movie, read_labels, read_movie, write_labels, write_movie


@pytest.fixture
def movie_data() -> np.ndarray:
    rng = np.random.default_rng(0)
    return (rng.random((20, 12, 16)) * 1000).astype(np.float32)


def _listing(folder: Path) -> list[str]:
    return sorted(os.listdir(folder))


# --------------------------------------------------------------------------- TIFF


def test_tiff_round_trip_is_imagej_memmap_with_fs(tmp_path, movie_data):
    import tifffile

    path = write_movie(tmp_path / "movie.tif", movie_data, fs=7.5)
    with tifffile.TiffFile(path) as tif:  # Fiji shows the frame interval
        assert tif.is_imagej and not tif.is_bigtiff
        assert tif.imagej_metadata["finterval"] == pytest.approx(1 / 7.5)
    movie = read_movie(path)
    assert movie.backend == "memmap" and isinstance(movie._data, np.memmap)
    assert movie.shape == movie_data.shape and movie.dtype == np.float32
    assert movie.fs == pytest.approx(7.5)
    np.testing.assert_array_equal(movie[:], movie_data)
    assert _listing(tmp_path) == ["movie.tif"]  # no temporary files left


def test_bigtiff_round_trip(tmp_path, movie_data):
    import tifffile

    path = write_movie(tmp_path / "big.tif", movie_data, fs=12.5, bigtiff=True)
    with tifffile.TiffFile(path) as tif:
        assert tif.is_bigtiff
    movie = read_movie(path)
    assert movie.backend == "memmap"
    assert movie.fs == pytest.approx(12.5)
    np.testing.assert_array_equal(movie[:], movie_data)


def test_non_imagej_dtype_keeps_fs_in_description(tmp_path, movie_data):
    data = movie_data.astype(np.float64)
    movie = read_movie(write_movie(tmp_path / "f64.tif", data, fs=3.0))
    assert movie.dtype == np.float64 and movie.fs == pytest.approx(3.0)
    np.testing.assert_array_equal(movie[:], data)


def test_write_movie_without_fs_reads_fs_none(tmp_path, movie_data):
    assert read_movie(write_movie(tmp_path / "m.tif", movie_data)).fs is None


def test_imagej_hyperstack_with_singleton_channel(tmp_path, movie_data):
    import tifffile

    path = tmp_path / "hyper.tif"
    stack = movie_data.astype(np.uint16)[:, None, None]  # T Z C Y X with Z = C = 1
    tifffile.imwrite(path, stack, imagej=True, metadata={"axes": "TZCYX", "finterval": 0.05})
    movie = read_movie(path)
    assert movie.shape == movie_data.shape
    assert movie.fs == pytest.approx(20.0)
    np.testing.assert_array_equal(movie[3:7, 2:5], stack[3:7, 0, 0, 2:5])


def test_plain_stack_and_fps_field(tmp_path, movie_data):
    import tifffile

    path = tmp_path / "stack.tif"  # ImageJ calls an un-annotated stack slices/channels
    tifffile.imwrite(path, movie_data, imagej=True, metadata={"fps": 4.0})
    movie = read_movie(path)
    assert movie.shape == movie_data.shape and movie.fs == pytest.approx(4.0)


def test_compressed_tiff_is_read_page_by_page(tmp_path, movie_data):
    import tifffile

    path = tmp_path / "zlib.tif"
    tifffile.imwrite(path, movie_data, compression="zlib", metadata={"fs": 2.0})
    with read_movie(path) as movie:
        assert movie.backend == "tiff-pages"
        assert movie.fs == pytest.approx(2.0)
        np.testing.assert_array_equal(movie[5:9:2, 1:4, ::3], movie_data[5:9:2, 1:4, ::3])
        np.testing.assert_array_equal(movie.load(), movie_data)


def test_fs_argument_overrides_file(tmp_path, movie_data):
    path = write_movie(tmp_path / "m.tif", movie_data, fs=7.5)
    assert read_movie(path, fs=30).fs == 30.0


# --------------------------------------------------------------------------- npy


def test_npy_is_memory_mapped_and_squeezes_singleton_axis(tmp_path, movie_data):
    path = tmp_path / "movie.npy"
    np.save(path, movie_data[:, None])  # (T, 1, H, W)
    movie = read_movie(path, fs=10)
    assert movie.backend == "memmap" and isinstance(movie._data, np.memmap)
    assert movie.shape == movie_data.shape and movie.fs == 10
    np.testing.assert_array_equal(movie[4], movie_data[4])


def test_trailing_singleton_channel_is_squeezed(tmp_path, movie_data):
    path = tmp_path / "movie.npy"
    np.save(path, movie_data[..., None])  # (T, H, W, 1)
    movie = read_movie(path)
    assert movie.shape == movie_data.shape
    np.testing.assert_array_equal(movie[:, 3], movie_data[:, 3])


class _TrackingArray:
    """Array-like that records which keys were read."""

    def __init__(self, array: np.ndarray):
        self._array = array
        self.shape, self.dtype = array.shape, array.dtype
        self.keys: list = []

    def __getitem__(self, key):
        self.keys.append(key)
        return self._array[key]


def test_indexing_reads_only_what_is_needed(movie_data):
    tracked = _TrackingArray(movie_data)
    movie = Movie.from_array(tracked, fs=5)
    np.testing.assert_array_equal(movie[3:5, 2:4], movie_data[3:5, 2:4])
    assert tracked.keys == [(slice(3, 5, 1), slice(2, 4, 1), slice(0, 16, 1))]
    tracked.keys.clear()
    list(movie.chunks(8, start=4, stop=12))
    assert [k[0] for k in tracked.keys] == [slice(4, 12, 1)]


@pytest.mark.parametrize("key", [
    5, -1, slice(None, None, -2), (Ellipsis, 3), ([1, 4, 2],), (slice(2, 9, 3), slice(1, 10), [3, 0]),
    (np.arange(20) % 3 == 0,), (2, slice(None), -4), (slice(15, 3, -4), 0), (slice(3, 3),),
])
def test_indexing_matches_numpy(movie_data, key):
    movie = Movie.from_array(movie_data)
    np.testing.assert_array_equal(movie[key], movie_data[key])


def test_index_out_of_range_raises_indexerror(movie_data):
    movie = Movie.from_array(movie_data)
    with pytest.raises(IndexError):
        movie[20]
    with pytest.raises(IndexError):
        movie[0, 0, 0, 0]


# --------------------------------------------------------------------------- HDF5 and Zarr


def test_hdf5_key_auto_and_fs_attribute(tmp_path, movie_data):
    import h5py

    path = tmp_path / "movie.h5"
    with h5py.File(path, "w") as f:
        f.create_dataset("acq/movie", data=movie_data, chunks=(4, 12, 16))
        f["acq/movie"].attrs["fs"] = 15.0
        f["mean"] = movie_data.mean(0)  # a 2-D dataset does not compete
    with read_movie(path) as movie:
        assert movie.backend == "hdf5" and movie.fs == 15.0
        np.testing.assert_array_equal(movie[2:6, ::2], movie_data[2:6, ::2])
    assert not movie._data.id.valid  # the file was closed


def test_hdf5_explicit_key_and_file_level_frame_rate(tmp_path, movie_data):
    import h5py

    path = tmp_path / "two.hdf5"
    with h5py.File(path, "w") as f:
        f["a"] = movie_data
        f["b"] = movie_data[:, None] * 2  # (T, 1, H, W)
        f.attrs["frame_rate"] = 8.0
    with read_movie(path, key="b") as movie:
        assert movie.shape == movie_data.shape and movie.fs == 8.0
        np.testing.assert_array_equal(movie[-3:], movie_data[-3:] * 2)


@pytest.mark.parametrize("zarr_format", [2, 3])
def test_zarr_group_and_array(tmp_path, movie_data, zarr_format):
    import zarr

    path = tmp_path / f"movie_v{zarr_format}.zarr"
    group = zarr.open_group(str(path), mode="w", zarr_format=zarr_format)
    array = group.create_array("raw/data", shape=movie_data.shape, dtype=movie_data.dtype,
                               chunks=(5, 12, 16))
    array[:] = movie_data
    array.attrs["fps"] = 6.0
    movie = read_movie(path)
    assert movie.backend == "zarr" and movie.fs == 6.0
    np.testing.assert_array_equal(movie[1:19:4], movie_data[1:19:4])
    np.testing.assert_array_equal(read_movie(path, key="raw/data")[:], movie_data)

    lone = tmp_path / f"array_v{zarr_format}.zarr"
    z = zarr.create_array(str(lone), shape=movie_data.shape, dtype=movie_data.dtype,
                          chunks=(5, 12, 16), zarr_format=zarr_format)
    z[:] = movie_data
    z.attrs["fs"] = 2.5
    movie = read_movie(lone)
    assert movie.fs == 2.5
    np.testing.assert_array_equal(movie[:], movie_data)


# --------------------------------------------------------------------------- folder of TIFFs


def test_folder_of_frames_sorted_naturally(tmp_path):
    import tifffile

    folder = tmp_path / "frames"
    folder.mkdir()
    for i in range(1, 13):  # frame_2 must come before frame_10
        tifffile.imwrite(folder / f"frame_{i}.tif", np.full((6, 7), i, dtype=np.uint16))
    (folder / "notes.txt").write_text("ignored")
    movie = read_movie(folder, fs=2)
    assert movie.backend == "tiff-folder" and movie.shape == (12, 6, 7) and movie.fs == 2
    np.testing.assert_array_equal(movie[:, 0, 0], np.arange(1, 13))
    np.testing.assert_array_equal(movie[::-5, 1:3, 2], np.arange(12, 0, -5)[:, None]
                                  * np.ones((1, 2)))


def test_folder_reads_a_frame_only_when_indexed(tmp_path):
    import tifffile

    folder = tmp_path / "frames"
    folder.mkdir()
    for i in range(4):
        tifffile.imwrite(folder / f"f{i}.tif", np.full((5, 5), i, dtype=np.uint8))
    movie = read_movie(folder, validate=False)
    (folder / "f2.tif").write_bytes(b"not a tiff")  # damaged after opening
    assert movie[1][0, 0] == 1
    with pytest.raises(InputError, match="f2.tif"):
        movie[2]


# --------------------------------------------------------------------------- chunks, load


def test_chunks_cover_all_frames_in_order(movie_data):
    movie = Movie.from_array(movie_data)
    starts, blocks = zip(*movie.chunks(7))
    assert starts == (0, 7, 14)
    assert [len(b) for b in blocks] == [7, 7, 6]
    np.testing.assert_array_equal(np.concatenate(blocks), movie_data)
    starts = [t0 for t0, _ in movie.chunks(4, start=3, stop=10)]
    assert starts == [3, 7]


def test_chunks_give_writable_float32_copies_of_a_memmap(tmp_path, movie_data):
    path = tmp_path / "movie.npy"
    np.save(path, movie_data.astype(np.uint16))
    movie = read_movie(path)
    for _, block in movie.chunks(8, dtype=np.float32):
        assert block.dtype == np.float32 and block.flags.writeable
        block[:] = -1
    for _, block in movie.chunks(8, dtype=np.uint16):
        assert block.flags.writeable
        block[:] = 0  # must not touch the file
    np.testing.assert_array_equal(movie[:], movie_data.astype(np.uint16))
    np.testing.assert_array_equal(movie.load(), movie_data.astype(np.uint16).astype(np.float32))


@pytest.mark.parametrize("kind", ["tiff", "npy", "array"])
def test_frames_equal_indexing_for_memmaps_and_arrays(tmp_path, movie_data, kind):
    data = movie_data.astype(np.uint16)
    if kind == "tiff":
        movie = read_movie(write_movie(tmp_path / "movie.tif", data))
    elif kind == "npy":
        np.save(tmp_path / "movie.npy", data)
        movie = read_movie(tmp_path / "movie.npy")
    else:
        movie = Movie.from_array(data)
    assert movie.backend == ("array" if kind == "array" else "memmap")
    for index in ([0, 5, 19], [3, 4, 5, 6, 12, 2, 2, -1], np.arange(20), [], [7]):
        out = movie.frames(index)
        assert out.dtype == np.float32 and out.shape == (len(index), 12, 16)
        assert out.flags.writeable and out.flags.c_contiguous
        np.testing.assert_array_equal(out, movie[np.asarray(index, dtype=np.int64)].astype(np.float32))
    np.testing.assert_array_equal(movie.frames([1, 2], dtype=np.uint16), data[[1, 2]])
    np.testing.assert_array_equal(movie.frames(np.arange(20) % 3 == 0), movie[::3].astype(np.float32))
    with pytest.raises(IndexError):
        movie.frames([20])
    if kind != "array":
        assert movie._read_file_frames(0, 2) is not None  # the file-read path was the one used


def test_movie_properties(movie_data):
    movie = Movie.from_array(movie_data, fs=4)
    assert len(movie) == movie.n_frames == 20
    assert movie.nbytes == movie_data.nbytes
    assert "fs=4 Hz" in repr(movie)
    np.testing.assert_array_equal(np.asarray(movie), movie_data)


def test_constant_and_single_frame_movies_are_accepted(tmp_path):
    path = tmp_path / "flat.npy"
    np.save(path, np.zeros((1, 4, 4), np.uint8))
    assert read_movie(path).shape == (1, 4, 4)


# --------------------------------------------------------------------------- writing


def test_write_from_iterator_of_blocks(tmp_path, movie_data):
    def blocks():
        for t in range(0, 20, 6):
            yield movie_data[t:t + 6]

    path = write_movie(tmp_path / "it.tif", blocks(), shape=movie_data.shape,
                       dtype=np.float32, fs=9)
    movie = read_movie(path)
    assert movie.fs == 9
    np.testing.assert_array_equal(movie[:], movie_data)


def test_write_from_movie_with_dtype_and_fs_carried(tmp_path, movie_data):
    source = Movie.from_array(movie_data, fs=11)
    path = write_movie(tmp_path / "u16.tiff", source, dtype=np.uint16, chunk_frames=3)
    movie = read_movie(path)
    assert movie.dtype == np.uint16 and movie.fs == 11
    np.testing.assert_array_equal(movie[:], movie_data.astype(np.uint16))


def test_failed_write_leaves_nothing(tmp_path, movie_data):
    def broken():
        yield movie_data[:5]
        raise RuntimeError("acquisition stopped")

    with pytest.raises(RuntimeError):
        write_movie(tmp_path / "out.tif", broken(), shape=movie_data.shape, dtype=np.float32)
    assert _listing(tmp_path) == []


def test_iterator_with_wrong_frame_count_is_an_error(tmp_path, movie_data):
    with pytest.raises(InputError, match="out.tif"):
        write_movie(tmp_path / "out.tif", iter([movie_data[:5]]), shape=movie_data.shape,
                    dtype=np.float32)
    assert _listing(tmp_path) == []


# --------------------------------------------------------------------------- labels


def test_labels_round_trip(tmp_path):
    labels = np.zeros((9, 11), dtype=np.int64)
    labels[2:4, 3:6] = 3
    labels[6, 1] = 65535
    path = write_labels(tmp_path / "soma.tif", labels)
    back = read_labels(path)
    assert back.dtype == np.uint16
    np.testing.assert_array_equal(back, labels)
    assert _listing(tmp_path) == ["soma.tif"]


def test_mean_image_of_every_frame_or_of_an_even_sample(tmp_path) -> None:
    from astro3s.io import mean_image

    movie = np.arange(50 * 6 * 5, dtype=np.float32).reshape(50, 6, 5)
    path = tmp_path / "movie.npy"
    np.save(path, movie)
    full = mean_image(path)
    assert full.dtype == np.float32 and full.shape == (6, 5)
    np.testing.assert_allclose(full, movie.mean(axis=0), rtol=1e-6)
    index = np.unique(np.linspace(0, 49, 7).round().astype(int))
    np.testing.assert_allclose(mean_image(path, max_frames=7), movie[index].mean(axis=0), rtol=1e-6)
    np.testing.assert_allclose(mean_image(path, max_frames=500), full, rtol=1e-6)  # more than the movie has
