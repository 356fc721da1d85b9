"""``astro3s-infer key=... fs=...``: the HDF5/Zarr dataset and the frame rate (issue 14, point 3)."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
import pytest
from _hydra import compose_config
from hydra.core.global_hydra import GlobalHydra
from hydra.core.hydra_config import HydraConfig


@pytest.fixture(autouse=True)
def _no_hydra_state():
    yield
    GlobalHydra.instance().clear()
    HydraConfig.instance().cfg = None


@pytest.fixture(scope="module")
def two_datasets(simulated, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """An HDF5 movie with datasets ``denoised`` (no frame rate) and ``raw`` (noise, ``fs=8`` attribute),
    and the RoiSet of its cells."""
    import h5py

    from astro3s.io import read_movie

    folder = simulated("tiny", 3)
    with read_movie(folder / f"{folder.name}.tif") as movie:
        data = np.asarray(movie[:])
    path = tmp_path_factory.mktemp("h5") / "two.h5"
    with h5py.File(path, "w") as handle:
        handle.create_dataset("denoised", data=data)
        noise = np.random.default_rng(0).poisson(data.astype(np.float64).mean(), data.shape)
        handle.create_dataset("raw", data=noise.astype(data.dtype)).attrs["fs"] = 8.0
    return path, folder / "ground_truth" / "RoiSet.zip"


def _infer(tmp_path: Path, capsys: pytest.CaptureFixture, movie: Path, rois: Path, *overrides: str,
           ) -> tuple[int, str, dict | None]:
    """``astro3s-infer input=MOVIE rois=ROIS OVERRIDES`` in-process: exit code, stderr, summary.json."""
    from astro3s.cli.infer import infer_task

    out = tmp_path / "out"
    cfg = compose_config("infer", [f"input={movie}", f"out={out}", f"rois={rois}", "figures=false", "device=cpu",
                                   "extras=quiet", *overrides], output_dir=tmp_path / "run")
    capsys.readouterr()
    try:
        infer_task(cfg)
        code = 0
    except SystemExit as exit_:
        code = exit_.code
    summary = out / movie.stem / "summary.json"
    return code, capsys.readouterr().err, json.loads(summary.read_text()) if code == 0 else None


def _fs_warnings(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING and "fs=" in r.getMessage()]


def test_without_key_the_error_suggests_the_key_option_that_works(two_datasets, tmp_path: Path,
                                                                   capsys: pytest.CaptureFixture) -> None:
    movie, rois = two_datasets
    code, err, _ = _infer(tmp_path, capsys, movie, rois)
    assert code == 2
    (line,) = [line for line in err.splitlines() if line.startswith("astro3s: error:")]
    assert "several 3-D datasets" in line and "key=denoised" in line and "input.key" not in line


def test_key_chooses_the_dataset_and_a_missing_frame_rate_warns_once(two_datasets, tmp_path: Path,
                                                                      capsys: pytest.CaptureFixture,
                                                                      caplog: pytest.LogCaptureFixture) -> None:
    movie, rois = two_datasets
    caplog.set_level(logging.WARNING)
    code, err, denoised = _infer(tmp_path, capsys, movie, rois, "key=denoised")
    assert code == 0, err
    assert denoised["key"] == "denoised" and denoised["fs"] is None and denoised["fs_source"] is None
    assert len(_fs_warnings(caplog)) == 1
    header = (tmp_path / "out" / movie.stem / "traces.csv").read_text().splitlines()[0]
    assert "time_s" not in header
    caplog.clear()
    code, err, raw = _infer(tmp_path, capsys, movie, rois, "key=raw")
    assert code == 0, err
    assert raw["key"] == "raw" and raw["fs"] == 8.0 and raw["fs_source"] == "file"  # the dataset's attribute
    assert _fs_warnings(caplog) == []
    # another dataset, other traces: the soma event rates differ
    assert [c["soma_event_rate"] for c in raw["cells"]] != [c["soma_event_rate"] for c in denoised["cells"]]


def test_fs_overrides_the_file_and_fills_a_missing_one(two_datasets, tmp_path: Path,
                                                       capsys: pytest.CaptureFixture,
                                                       caplog: pytest.LogCaptureFixture) -> None:
    movie, rois = two_datasets
    caplog.set_level(logging.WARNING)
    for key in ("raw", "denoised"):
        code, err, summary = _infer(tmp_path, capsys, movie, rois, f"key={key}", "fs=20", "overwrite=true")
        assert code == 0, err
        assert summary["fs"] == 20.0 and summary["fs_source"] == "fs="
        header = (tmp_path / "out" / movie.stem / "traces.csv").read_text().splitlines()[0].split(",")
        assert header[:2] == ["frame", "time_s"]
    assert _fs_warnings(caplog) == []


@pytest.mark.parametrize("value", ["fast", "0", "-3"])
def test_bad_fs_is_one_clear_error(value: str, two_datasets, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    movie, rois = two_datasets
    code, err, _ = _infer(tmp_path, capsys, movie, rois, "key=raw", f"fs={value}")
    assert code == 2
    (line,) = [line for line in err.splitlines() if line.startswith("astro3s: error:")]
    assert "fs=" in line and "Fix: e.g. fs=15" in line
