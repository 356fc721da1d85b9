"""Each frame is motion-corrected once: beyond the memory budget the streamed pass writes them to a temporary file.

The frames read back from the file are those the pass computed (bit for bit
what correcting on read gives), the later passes read them instead of
correcting again, and the file goes away when closed, dropped, or when a
stage fails; without room on the disk the frames are corrected on read.
"""

from __future__ import annotations

import dataclasses
import gc
import logging
import os
import sys
from pathlib import Path

import numpy as np
import pytest

import astro3s.preprocess.motion as motion
from astro3s.errors import InputError
from astro3s.io import Movie
from astro3s.preprocess import CorrectedMovie, PreprocessParams, preprocess

# a budget far below the test movies' corrected size: no in-memory cache
TINY_BUDGET_MB = 0.25


def _moving_movie(n_frames: int = 48, size: int = 64, seed: int = 0, dtype: type = np.uint16) -> np.ndarray:
    """A smooth random texture with blinking blobs, moved by sub-pixel shifts (no two frames aligned)."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:size, :size].astype(np.float32)
    base = np.zeros((size, size), np.float32)
    for _ in range(12):
        cy, cx, r = rng.uniform(8, size - 8), rng.uniform(8, size - 8), rng.uniform(2, 5)
        base += rng.uniform(200, 600) * np.exp(-((yy - cy) ** 2 + (xx - cx) ** 2) / (2 * r * r))
    spectrum = np.fft.rfft2(base)
    fy, fx = np.fft.fftfreq(size)[:, None], np.fft.rfftfreq(size)[None, :]
    frames = np.empty((n_frames, size, size), np.float32)
    for t in range(n_frames):
        dy, dx = rng.normal(0, 1.5, 2)
        moved = np.fft.irfft2(spectrum * np.exp(-2j * np.pi * (fy * dy + fx * dx)), s=(size, size))
        frames[t] = 300 + moved * (1 + 0.5 * np.sin(t / 3.0)) + rng.normal(0, 5, (size, size))
    return np.clip(frames, 0, None).astype(dtype)


def _params(**kw) -> PreprocessParams:
    return PreprocessParams(memory_budget_mb=TINY_BUDGET_MB, device="cpu", soma_area_range=(20.0, 80.0),
                            tile_size=32, tile_step=16, filter_box=22, crop_size=32, clahe_tiles=(4, 4), **kw)


def _scratch_fds(folder: Path) -> list[str]:
    """Open descriptors of this process on files in ``folder`` (Linux: the temporary files, even nameless)."""
    if not Path("/proc/self/fd").is_dir():
        pytest.skip("needs /proc/self/fd")
    found = []
    for fd in os.listdir("/proc/self/fd"):
        try:
            target = os.readlink(f"/proc/self/fd/{fd}")
        except OSError:
            continue
        if target.startswith(str(folder)):
            found.append(target)
    return found


class _ShiftCounter:
    """Counts the frames Fourier-shifted to correct them (the reference's own shifts of its sample excluded)."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch):
        self.frames = 0
        self.reference = 0
        original = motion.fourier_shift

        def counting(spectra, shifts, shape, **kw):
            if sys._getframe(1).f_code.co_name == "_refine_reference":
                self.reference += len(spectra)
            else:
                self.frames += len(spectra)
            return original(spectra, shifts, shape, **kw)

        monkeypatch.setattr(motion, "fourier_shift", counting)


def test_file_backed_frames_equal_corrected_on_read(tmp_path: Path) -> None:
    movie = Movie.from_array(_moving_movie(), fs=10.0)
    scratch = tmp_path / "scratch"
    scratch.mkdir()
    pre = preprocess(movie, _params(), progress=False, scratch_dir=scratch)
    stored = pre.corrected
    assert stored.cache is None and stored.stored is not None
    assert pre.details["corrected_store"] == "file"
    assert np.abs(pre.shifts).max() > 0.5  # the frames really move
    on_read = CorrectedMovie(movie, pre.shifts, device="cpu")  # today's path: corrected on every read
    expected = on_read.load()
    np.testing.assert_array_equal(stored.load(), expected)
    for chunk in (1, 7, 256):
        got = dict(stored.chunks(chunk))
        assert sorted(got) == list(range(0, len(expected), chunk))
        for t0, block in got.items():
            np.testing.assert_array_equal(block, expected[t0:t0 + chunk])
    np.testing.assert_array_equal(stored[5], expected[5])
    np.testing.assert_array_equal(stored[-1], expected[-1])
    np.testing.assert_array_equal(stored[3:40:4], expected[3:40:4])
    np.testing.assert_array_equal(stored[10:20, 5:9, ::2], expected[10:20, 5:9, ::2])
    np.testing.assert_array_equal(stored.take(np.array([40, 2, 3, 4, 17])), expected[[40, 2, 3, 4, 17]])
    # and the same as the in-memory cache of the same pass (stage 5 differs: with the cache it takes every
    # frame, beyond the budget a subsample, as before)
    cached = preprocess(movie, _params(), progress=False, cache=True)
    np.testing.assert_array_equal(cached.corrected.cache, expected)
    np.testing.assert_array_equal(cached.shifts, pre.shifts)
    np.testing.assert_array_equal(cached.candidates, pre.candidates)
    np.testing.assert_array_equal(cached.enhanced, pre.enhanced)
    # closing deletes the file; reads go back to correcting
    stored.close()
    assert stored.stored is None and not _scratch_fds(scratch) and not list(scratch.iterdir())
    np.testing.assert_array_equal(stored[3:9], expected[3:9])


def test_each_frame_corrected_once_through_preprocess_and_correlation(tmp_path: Path,
                                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    from astro3s.correlation import correlation_analysis, domain_traces

    arr = _moving_movie()
    movie = Movie.from_array(arr, fs=10.0)
    counter = _ShiftCounter(monkeypatch)
    pre = preprocess(movie, _params(), progress=False, scratch_dir=tmp_path)
    soma = np.zeros(arr.shape[1:], np.uint16)
    soma[20:28, 20:28] = 1
    soma[40:46, 36:44] = 2
    processes = np.zeros_like(soma)
    processes[28:34, 20:28] = 1
    traces, domains = correlation_analysis(pre.corrected, soma, processes, progress=False)
    domain_traces(pre.corrected, domains.domains, soma, processes, fs=traces.fs)
    assert counter.frames == len(arr)
    # without the file every later pass corrects the frames again
    on_read = dataclasses.replace(pre, corrected=CorrectedMovie(movie, pre.shifts, device="cpu"))
    counter.frames = 0
    correlation_analysis(on_read.corrected, soma, processes, progress=False)
    assert counter.frames >= len(arr)
    pre.corrected.close()


def test_infer_movie_corrects_each_frame_once(tiny_movie: Path, random_checkpoint: Path, tmp_path: Path,
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    from astro3s.correlation import CorrelationParams
    from astro3s.inference import infer_movie, load_inference_model
    from astro3s.io import read_movie

    n_frames = read_movie(tiny_movie).shape[0]
    model, options = load_inference_model(random_checkpoint, device="cpu")
    scratch = tmp_path / "scratch"
    scratch.mkdir()
    options = dataclasses.replace(options, preprocess=options.preprocess.replace(memory_budget_mb=TINY_BUDGET_MB),
                                  correlation=CorrelationParams(scratch_dir=str(scratch)))
    counter = _ShiftCounter(monkeypatch)
    made: list[motion.FrameFile] = []
    original_init = motion.FrameFile.__init__

    def recording_init(self, *args, **kw):
        original_init(self, *args, **kw)
        made.append(self)

    monkeypatch.setattr(motion.FrameFile, "__init__", recording_init)
    result = infer_movie(tiny_movie, tmp_path / "out", model, options, progress=False)
    assert result.status == "done"
    assert len(made) == 1 and made[0].folder == scratch
    assert counter.frames == n_frames
    assert made[0].closed and not _scratch_fds(scratch) and not list(scratch.iterdir())


def test_scratch_file_gone_after_errors_and_when_dropped(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import astro3s.preprocess.pipeline as pipeline

    arr = _moving_movie(dtype=np.float32)
    # dropped without close(): the finalizer deletes the file
    pre = preprocess(Movie.from_array(arr), _params(), progress=False, scratch_dir=tmp_path)
    assert pre.corrected.stored is not None and _scratch_fds(tmp_path)
    del pre
    gc.collect()
    assert not _scratch_fds(tmp_path)
    # an error during the streamed pass (a damaged frame near the end)
    bad = arr.copy()
    bad[-3, 5, 5] = np.nan
    with pytest.raises(InputError, match="NaN"):
        preprocess(Movie.from_array(bad), _params(), progress=False, scratch_dir=tmp_path)
    assert not _scratch_fds(tmp_path)

    # an error in a later stage
    def failing(*args, **kw):
        raise RuntimeError("stage 4 failed")

    monkeypatch.setattr(pipeline, "_candidate_stages", failing)
    with pytest.raises(RuntimeError, match="stage 4"):
        preprocess(Movie.from_array(arr), _params(), progress=False, scratch_dir=tmp_path)
    assert not _scratch_fds(tmp_path) and not list(tmp_path.iterdir())


def test_no_room_on_disk_falls_back_to_correcting_on_read(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                          caplog: pytest.LogCaptureFixture) -> None:
    import shutil

    import astro3s.preprocess.streaming as streaming

    movie = Movie.from_array(_moving_movie(), fs=10.0)
    reference = preprocess(movie, _params(), progress=False, scratch_dir=tmp_path)
    usage = shutil.disk_usage(tmp_path)
    monkeypatch.setattr(streaming.shutil, "disk_usage", lambda path: usage._replace(free=100 << 20))
    with caplog.at_level(logging.WARNING, logger="astro3s.preprocess.streaming"):
        pre = preprocess(movie, _params(), progress=False, scratch_dir=tmp_path)
    assert pre.corrected.stored is None and pre.details["corrected_store"] == "none"
    message = " ".join(r.getMessage() for r in caplog.records)
    assert "GiB needed" in message and "TMPDIR" in message and "correlation.scratch_dir" in message
    np.testing.assert_array_equal(pre.corrected.load(), reference.corrected.load())
    np.testing.assert_array_equal(pre.crops, reference.crops)
    reference.corrected.close()


def test_failed_write_drops_the_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                     caplog: pytest.LogCaptureFixture) -> None:
    movie = Movie.from_array(_moving_movie(), fs=10.0)

    def full_disk(*args, **kw):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(motion, "_write_from", full_disk)
    with caplog.at_level(logging.WARNING, logger="astro3s.preprocess.streaming"):
        pre = preprocess(movie, _params(), progress=False, scratch_dir=tmp_path)
    assert pre.corrected.stored is None and pre.details["corrected_store"] == "none"
    assert "No space left" in caplog.text
    assert not _scratch_fds(tmp_path)
    np.testing.assert_array_equal(pre.corrected[0:4], CorrectedMovie(movie, pre.shifts)[0:4])


def test_space_not_reserved_falls_back(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                       caplog: pytest.LogCaptureFixture) -> None:
    if not hasattr(os, "posix_fallocate"):
        pytest.skip("needs posix_fallocate")
    movie = Movie.from_array(_moving_movie(), fs=10.0)

    def full_disk(*args, **kw):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(motion.os, "posix_fallocate", full_disk)
    with caplog.at_level(logging.WARNING, logger="astro3s.preprocess.streaming"):
        pre = preprocess(movie, _params(), progress=False, scratch_dir=tmp_path)
    assert pre.corrected.stored is None and "No space left" in caplog.text and "TMPDIR" in caplog.text
    assert not _scratch_fds(tmp_path)
