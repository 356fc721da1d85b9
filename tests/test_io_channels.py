"""Multi-channel and multi-plane TIFFs: ``channel=`` / ``plane=`` choose the movie, every read path agrees,
ScanImage metadata give the frame rate and the channel numbers, and every refusal names its fix."""

from __future__ import annotations

import struct
from types import SimpleNamespace

import numpy as np
import pytest
import tifffile

from astro3s.errors import InputError
from astro3s.io import movie_choices, read_movie
from astro3s.io.movie import _scanimage_frame_data, _select_axes


@pytest.fixture
def two_channels() -> np.ndarray:
    rng = np.random.default_rng(3)
    return rng.integers(0, 4000, (12, 2, 10, 14), dtype=np.uint16)  # T, C, H, W


def _all_reads(movie) -> list[np.ndarray]:
    """The movie through every way the pipeline reads it."""
    chunks = np.concatenate([block for _, block in movie.chunks(5)])
    return [movie[:].astype(np.float32), chunks, movie.frames([0, 1, 2, 7, 11]), movie[3][None].astype(np.float32),
            movie.load()]


def _check(movie, expected: np.ndarray) -> None:
    reads = _all_reads(movie)
    assert movie.shape == expected.shape
    for got, want in zip(reads, [expected, expected, expected[[0, 1, 2, 7, 11]], expected[3:4], expected]):
        np.testing.assert_array_equal(got, want.astype(np.float32))


@pytest.mark.parametrize("writer", ["imagej", "ome_zlib"])
def test_channel_chosen_from_a_hyperstack(tmp_path, two_channels, writer):
    path = tmp_path / "movie.tif"
    if writer == "imagej":  # uncompressed: memory-mapped, read with plain file reads
        tifffile.imwrite(path, two_channels, imagej=True, metadata={"axes": "TCYX", "finterval": 0.5})
    else:  # compressed OME-TIFF: read page by page
        tifffile.imwrite(path, two_channels, ome=True, compression="zlib", metadata={"axes": "TCYX"})
    for channel in (1, 2):
        with read_movie(path, channel=channel) as movie:
            assert movie.backend == ("memmap" if writer == "imagej" else "tiff-pages")
            assert movie.open_options == {"channel": channel}
            _check(movie, two_channels[:, channel - 1])
    if writer == "imagej":
        assert read_movie(path, channel=1).fs == pytest.approx(2.0)
    with pytest.raises(InputError, match=r"holds 2 channels .*channels 1, 2\).*channel=1"):
        read_movie(path)
    with pytest.raises(InputError, match=r"no channel 3: its channels are 1, 2"):
        read_movie(path, channel=3)
    with pytest.raises(InputError, match=r"channel=0 is not a channel number.*count from 1"):
        read_movie(path, channel=0)


def test_plane_and_channel_of_a_volume_movie(tmp_path):
    data = np.arange(6 * 3 * 2 * 5 * 7, dtype=np.uint16).reshape(6, 3, 2, 5, 7)  # T, Z, C, H, W
    path = tmp_path / "volume.tif"
    tifffile.imwrite(path, data, imagej=True, metadata={"axes": "TZCYX"})
    with read_movie(path, channel=2, plane=3) as movie:
        np.testing.assert_array_equal(movie[:], data[:, 2, 1])
        np.testing.assert_array_equal(np.concatenate([b for _, b in movie.chunks(4)]), data[:, 2, 1])
    with pytest.raises(InputError, match=r"holds 3 z-planes.*plane=1"):
        read_movie(path, channel=1)
    with pytest.raises(InputError, match=r"no plane 4: its planes are 1, 2, 3"):
        read_movie(path, channel=1, plane=4)


def test_plain_stacks_are_unchanged_and_accept_channel_one(tmp_path, two_channels):
    movie_data = two_channels[:, 0]
    # ImageJ labels an un-annotated stack's frames channels (CYX): one long axis is time, not a channel
    tifffile.imwrite(tmp_path / "stack.tif", movie_data, imagej=True)
    np.save(tmp_path / "stack.npy", movie_data)
    for name in ("stack.tif", "stack.npy"):
        with read_movie(tmp_path / name, channel=1, plane=1) as movie:
            np.testing.assert_array_equal(movie[:], movie_data)
        with pytest.raises(InputError, match="channel=2 was asked for, but the movie"):
            read_movie(tmp_path / name, channel=2)


def test_rgb_movie_channel(tmp_path):
    rgb = np.random.default_rng(0).integers(0, 255, (5, 9, 11, 3), dtype=np.uint8)
    tifffile.imwrite(tmp_path / "rgb.tif", rgb, photometric="rgb")
    with read_movie(tmp_path / "rgb.tif", channel=2) as movie:  # green
        np.testing.assert_array_equal(movie[:], rgb[..., 1])
    with pytest.raises(InputError, match="holds 3 channels"):
        read_movie(tmp_path / "rgb.tif")


def test_scanimage_channel_numbers_and_axes():
    # tifffile reads ScanImage files as (Z, T, C, Y, X); channels 1 and 3 saved: channel=3 is the second
    keep, fixed = _select_axes((1, 40, 2, 8, 8), None, axes="ZTCYX", channel=3, channel_ids=[1, 3])
    assert keep == (1, 3, 4) and fixed == {2: 1}
    with pytest.raises(InputError, match=r"no channel 2: its channels are 1, 3"):
        _select_axes((1, 40, 2, 8, 8), None, axes="ZTCYX", channel=2, channel_ids=[1, 3])
    # one saved channel, numbered 2: channel=2 names it
    assert _select_axes((1, 40, 1, 8, 8), None, axes="ZTCYX", channel=2, channel_ids=[2])[1] == {}


def test_scanimage_frame_rate_and_fast_z(tmp_path):
    def tif(frame_data):
        return SimpleNamespace(is_scanimage=True, scanimage_metadata={"FrameData": frame_data})

    data = _scanimage_frame_data(tif({"SI.hRoiManager.scanFrameRate": 30.0, "SI.hScan2D.logAverageFactor": 4,
                                      "SI.hChannels.channelSave": [1, 2]}), tmp_path / "a.tif")
    assert data == {"fs": 7.5, "channel_ids": [1, 2]}
    assert _scanimage_frame_data(tif({"SI.hChannels.channelSave": 2}), tmp_path / "a.tif") == {"channel_ids": [2]}
    assert _scanimage_frame_data(SimpleNamespace(is_scanimage=False), tmp_path / "a.tif") == {}
    with pytest.raises(InputError, match=r"fast-z volume recording \(4 planes.*Deinterleave"):
        _scanimage_frame_data(tif({"SI.hFastZ.enable": True, "SI.hStackManager.actualNumSlices": 4}),
                              tmp_path / "a.tif")


def test_preprocessed_result_reopens_the_chosen_channel(tmp_path):
    from astro3s.preprocess import PreprocessParams, load_preprocessed, preprocess, save_preprocessed

    rng = np.random.default_rng(1)
    data = (rng.random((40, 2, 32, 32)) * 100 + 100).astype(np.float32)
    data[:, 1] *= 3.0
    path = tmp_path / "two.tif"
    tifffile.imwrite(path, data, imagej=True, metadata={"axes": "TCYX"})
    with read_movie(path, channel=2) as movie:
        result = preprocess(movie, PreprocessParams(soma_area_range=(20, 60)), progress=False)
    assert result.details["source_options"] == {"channel": 2}
    npz = save_preprocessed(result, tmp_path / "pre.npz")
    loaded = load_preprocessed(npz)
    assert loaded.corrected is not None  # the source opened again, as the channel it was read from
    # channel 2 is three times as bright as channel 1 (frames shifted by the motion correction of noise)
    assert float(np.mean(loaded.corrected[0:40])) == pytest.approx(float(data[:, 1].mean()), rel=0.02)


def _write_scanimage(path, pages: np.ndarray, frame_data: str) -> None:
    """A ScanImage-format BigTIFF: its static metadata block at byte 16 (magic 0x07030301, version 3), then
    one uncompressed uint16 page after another, each marked ``SI.`` in its Software tag (what tifffile reads
    as ScanImage). ``pages`` ``(N, H, W)`` in acquisition order: the saved channels interleaved frame by frame."""
    n, h, w = pages.shape
    head, roi = frame_data.encode() + b"\0", b"{}\0"
    out = bytearray(b"II" + struct.pack("<HHHQ", 43, 8, 0, 0))
    out += struct.pack("<IIII", 0x07030301, 3, len(head), len(roi)) + head + roi
    software = b"SI.LINE_FORMAT_VERSION = 1\0"
    link = 8  # where the offset of the next IFD is written
    for page in pages:  # a few pages
        out += b"\0" * (-len(out) % 8)
        software_at = len(out)
        out += software + b"\0" * (-len(software) % 8)
        data_at = len(out)
        out += page.astype("<u2").tobytes() + b"\0" * (-(h * w * 2) % 8)
        tags = [(256, 4, 1, w), (257, 4, 1, h), (258, 3, 1, 16), (259, 3, 1, 1), (262, 3, 1, 1),
                (273, 16, 1, data_at), (277, 3, 1, 1), (278, 4, 1, h), (279, 16, 1, h * w * 2),
                (305, 2, len(software), software_at)]
        struct.pack_into("<Q", out, link, len(out))
        out += struct.pack("<Q", len(tags)) + b"".join(struct.pack("<HHQQ", *tag) for tag in tags)
        link = len(out)
        out += struct.pack("<Q", 0)
    path.write_bytes(bytes(out))


def test_a_scanimage_file_read_as_the_channel_it_names(tmp_path):
    movie = np.random.default_rng(2).integers(0, 1000, (12, 2, 8, 12), dtype=np.uint16)  # T, C, H, W
    frame_data = ("SI.hChannels.channelSave = [1;3]\nSI.hRoiManager.scanFrameRate = 30\n"
                  "SI.hScan2D.logAverageFactor = 2\nSI.hStackManager.framesPerSlice = 12\n"
                  "SI.hStackManager.numSlices = 1\nSI.hFastZ.enable = false\n")
    path = tmp_path / "file_00001.tif"
    _write_scanimage(path, movie.reshape(24, 8, 12), frame_data)
    with tifffile.TiffFile(path) as tif:  # the format as tifffile sees it
        assert tif.is_scanimage and tif.series[0].axes == "TCYX"
    assert movie_choices(path) == [{"channel": 1}, {"channel": 3}]
    with read_movie(path, channel=3) as scan:  # ScanImage's channel 3, the second saved
        assert scan.backend == "tiff-pages" and scan.fs == pytest.approx(15.0)  # 30 Hz, 2 frames averaged
        _check(scan, movie[:, 1])
    with pytest.raises(InputError, match=r"holds 2 channels .*channels 1, 3\).*channel=1"):
        read_movie(path)
    with pytest.raises(InputError, match=r"no channel 2: its channels are 1, 3"):
        read_movie(path, channel=2)
    _write_scanimage(tmp_path / "volume.tif", movie.reshape(24, 8, 12),
                     frame_data.replace("numSlices = 1", "numSlices = 4").replace("enable = false", "enable = true"))
    with pytest.raises(InputError, match=r"fast-z volume recording \(4 planes"):
        read_movie(tmp_path / "volume.tif")
