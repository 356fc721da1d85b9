"""NWB export: ``astro3s-infer nwb=true``, ``astro3s-export input=DIR format=nwb`` and :mod:`astro3s.io.nwb`.

Every file written is checked with nwbinspector (no CRITICAL, ERROR, PYNWB_VALIDATION or
BEST_PRACTICE_VIOLATION message) and read back with pynwb: the ROI masks give back the
label images, the traces and events those of traces.csv and events.csv.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest
from _hydra import compose_config
from hydra.core.global_hydra import GlobalHydra
from hydra.core.hydra_config import HydraConfig

pytest.importorskip("pynwb")
pytest.importorskip("nwbinspector")

#: nwbinspector importance levels a file must not have
BAD_LEVELS = {"CRITICAL", "ERROR", "PYNWB_VALIDATION", "BEST_PRACTICE_VIOLATION"}


@pytest.fixture(autouse=True)
def _no_hydra_state():
    yield
    GlobalHydra.instance().clear()
    HydraConfig.instance().cfg = None


def _run(task_name: str, tmp_path: Path, *overrides: str) -> list:
    """``astro3s-<task_name> OVERRIDES`` in-process (``infer_task`` or ``export_task``)."""
    if task_name == "infer":
        from astro3s.cli.infer import infer_task as task
    else:
        from astro3s.cli.export import export_task as task
    cfg = compose_config(task_name, [*overrides, "extras=quiet"], output_dir=tmp_path / f"run_{task_name}")
    return task(cfg)


def _curated_run(tmp_path: Path, movie: Path, out: Path, *overrides: str) -> Path:
    """``astro3s-infer`` with the simulator's cells as curated ROIs (cells known, no network needed)."""
    rois = movie.parent / "ground_truth" / "RoiSet.zip"
    (result,) = _run("infer", tmp_path, f"input={movie}", f"out={out}", f"rois={rois}", *overrides)
    assert result.status == "done"
    return result.output


def _inspect(path: Path) -> list:
    from nwbinspector import inspect_nwbfile

    messages = list(inspect_nwbfile(nwbfile_path=str(path)))
    bad = [f"{m.importance.name} {m.check_function_name}: {m.message}" for m in messages
           if m.importance.name in BAD_LEVELS]
    assert not bad, bad
    return messages


def _read_back(path: Path) -> dict:
    """What the NWB file holds, as plain arrays."""
    from pynwb import NWBHDF5IO

    with NWBHDF5IO(str(path), mode="r") as io:
        nwb = io.read()
        ophys = nwb.processing["ophys"]
        table = ophys["ImageSegmentation"]["PlaneSegmentation"]
        dff = ophys["DfOverF"]["RoiResponseSeries"]
        out = {
            "masks": np.asarray(table["image_mask"][:]) > 0,
            "names": [str(n) for n in table["roi_name"][:]],
            "cells": np.asarray(table["cell_id"][:]),
            "types": [str(t) for t in table["roi_type"][:]],
            "dff": np.asarray(dff.data[:]), "dff_rows": np.asarray(dff.rois.data[:]), "rate": dff.rate,
            "f": (np.asarray(ophys["Fluorescence"]["RoiResponseSeries"].data[:])
                  if "Fluorescence" in ophys.data_interfaces else None),
            "images": sorted(ophys["SummaryImages"].images) if "SummaryImages" in ophys.data_interfaces else [],
            "events": nwb.events["events"].to_dataframe(index=True) if nwb.events else None,
            "event_rows": np.asarray(nwb.events["events"]["roi_row"].data[:]) if nwb.events else None,
            "start": nwb.session_start_time, "identifier": nwb.identifier,
            "external": [str(f) for f in nwb.acquisition["TwoPhotonSeries"].external_file[:]]
            if "TwoPhotonSeries" in nwb.acquisition else [],
            "movie_rate": nwb.acquisition["TwoPhotonSeries"].rate if "TwoPhotonSeries" in nwb.acquisition else None,
            "series_description": (nwb.acquisition["TwoPhotonSeries"].description
                                   if "TwoPhotonSeries" in nwb.acquisition else None),
            "notes": nwb.notes, "species": nwb.subject.species,
            "plane": {k: getattr(nwb.imaging_planes["ImagingPlane"], k) for k in ("location", "indicator",
                                                                                 "excitation_lambda")},
        }
    return out


def _check_against_folder(back: dict, folder: Path) -> None:
    """Masks give back soma/processes/domains.tif; dF/F and events those of traces.csv and events.csv."""
    from astro3s.io import read_labels
    from astro3s.io.nwb import read_event_columns

    soma, processes, domains = (read_labels(folder / f"{n}.tif") for n in ("soma", "processes", "domains"))
    types, cells, masks = np.asarray(back["types"]), back["cells"], back["masks"]
    assert masks.shape[1:] == soma.shape and set(types) == {"soma", "process", "domain"}

    def labels(kinds: tuple[str, ...]) -> np.ndarray:
        pick = np.isin(types, kinds)
        return (masks[pick] * cells[pick][:, None, None]).sum(axis=0)

    assert np.array_equal(labels(("soma",)), soma)
    assert np.array_equal(labels(("process",)), processes)
    assert np.array_equal(labels(("soma", "process", "domain")), domains)  # a cell's ROIs tile its domain
    # the process ROIs are the components traces.csv and the RoiSet name
    header = (folder / "traces.csv").read_text().splitlines()[0].split(",")[2:]
    csv = np.loadtxt(folder / "traces.csv", delimiter=",", skiprows=1)[:, 2:]
    names = [back["names"][i] for i in back["dff_rows"]]
    assert names[:len(header)] == header
    np.testing.assert_allclose(back["dff"][:, :len(header)], csv, rtol=1e-5, atol=1e-6)
    events = read_event_columns(folder / "events.csv")
    table = back["events"]
    assert len(table) == len(events["roi"]) > 0
    assert [back["names"][i] for i in back["event_rows"]] == list(events["roi"])
    np.testing.assert_array_equal(table["onset_frame"], events["onset_frame"])
    np.testing.assert_array_equal(table["soma_event"], events["soma_event"])
    np.testing.assert_allclose(table["timestamp"], events["onset_s"], atol=1e-4)
    np.testing.assert_allclose(table["duration"], events["duration_s"], atol=1e-4)
    np.testing.assert_allclose(table["amplitude_dff"], events["amplitude_dff"], rtol=1e-4, equal_nan=True)


@pytest.fixture(scope="module")
def nwb_run(simulated, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A complete output folder of ``astro3s-infer nwb=true`` (curated cells of the tiny movie)."""
    folder = simulated("tiny", 3)
    tmp = tmp_path_factory.mktemp("nwb_run")
    return _curated_run(tmp, folder / f"{folder.name}.tif", tmp / "results", "nwb=true")


def test_infer_nwb_true_writes_a_valid_file_that_reads_back(nwb_run: Path, simulated) -> None:
    from astro3s.inference import is_complete

    movie = simulated("tiny", 3) / f"{nwb_run.name}.tif"
    path = nwb_run / f"{nwb_run.name}.nwb"
    assert path.is_file() and is_complete(nwb_run, nwb=True)
    summary = json.loads((nwb_run / "summary.json").read_text())
    from astro3s.inference.outputs import own_output

    assert path.name in summary["files"] and own_output(nwb_run, path.name)  # curation logic covers it
    _inspect(path)
    back = _read_back(path)
    _check_against_folder(back, nwb_run)
    # the domain traces and raw F ride along (not in traces.csv)
    assert back["f"] is not None and back["f"].shape == back["dff"].shape
    assert np.isfinite(back["f"]).all() and (back["f"] > 0).all()
    assert {"domain"} <= {back["types"][i] for i in back["dff_rows"]}
    assert back["rate"] == pytest.approx(summary["fs"]) == back["movie_rate"]
    assert back["images"] == ["activity_map", "enhanced", "mean", "reference"]
    # the movie is linked, relative to the file, not copied
    assert len(back["external"]) == 1 and not Path(back["external"][0]).is_absolute()
    assert (nwb_run / back["external"][0]).resolve() == movie.resolve()
    assert path.stat().st_size < movie.stat().st_size
    assert back["start"].tzinfo is not None
    assert back["start"].timestamp() == pytest.approx(movie.stat().st_mtime, abs=1e-3)
    assert "modification time" in back["notes"]
    import uuid

    uuid.UUID(back["identifier"])


def test_export_converts_folders_written_before(simulated, tmp_path: Path) -> None:
    folder = simulated("tiny", 3)
    movie = folder / f"{folder.name}.tif"
    out = tmp_path / "results"
    run = _curated_run(tmp_path, movie, out)
    path = run / f"{run.name}.nwb"
    assert not path.exists()
    user_file = run / "notes.txt"
    user_file.write_text("mine\n")

    assert _run("export", tmp_path, f"input={out}", "format=nwb") == [path]
    _inspect(path)
    back = _read_back(path)
    _check_against_folder(back, run)
    assert back["f"] is None and "No Fluorescence" in back["notes"]  # traces.csv holds dF/F only
    assert back["images"] == ["mean"]
    summary = json.loads((run / "summary.json").read_text())
    assert "traces.csv" in summary["files"] and path.name in summary["files"]

    # done already: skipped; one movie folder as input; overwrite=true redoes it
    stamp = path.stat().st_mtime_ns
    assert _run("export", tmp_path, f"input={run}", "format=nwb") == []
    assert path.stat().st_mtime_ns == stamp
    assert back["plane"]["location"] == "unknown" and np.isnan(back["plane"]["excitation_lambda"])
    assert _run("export", tmp_path, f"input={run}", "format=nwb", "overwrite=true", "subject.species=Mus musculus",
                "subject.age=P90D", "imaging_plane.indicator=GCaMP6f", "imaging_plane.excitation_lambda=920"
                ) == [path]
    again = _read_back(path)
    assert again["identifier"] != back["identifier"] and again["species"] == "Mus musculus"
    # a mouse's location must be an Allen CCF term: "root" (the whole brain) when not given
    assert again["plane"] == {"location": "root", "indicator": "GCaMP6f", "excitation_lambda": 920.0}
    _inspect(path)

    # a later run without nwb=true removes it with the other stale outputs; the user's file stays
    _curated_run(tmp_path, movie, out, "overwrite=true")
    assert not path.exists() and user_file.read_text() == "mine\n"

    # an .nwb the user made is never overwritten: kept under a new name
    path.write_bytes(b"not ours")
    assert _run("export", tmp_path, f"input={out}", "format=nwb") == [path]
    assert (run / f"{run.name}.edited-1.nwb").read_bytes() == b"not ours"


def test_infer_movie_api_with_nwb(simulated, tmp_path: Path) -> None:
    from astro3s.inference import infer_movie, load_inference_model

    folder = simulated("tiny", 3)
    _, options = load_inference_model("default", device="cpu", soma_scale="fixed", nwb=True, figures=False)
    result = infer_movie(folder / f"{folder.name}.tif", tmp_path, None, options,
                         rois=folder / "ground_truth" / "RoiSet.zip", progress=False)
    assert (result.output / f"{folder.name}.nwb").is_file()
    # complete only with its NWB file: an earlier folder without one is redone, not skipped
    (result.output / f"{folder.name}.nwb").unlink()
    from astro3s.inference import is_complete

    assert is_complete(result.output, figures=False) and not is_complete(result.output, figures=False, nwb=True)


@pytest.mark.parametrize("command", ["infer", "export"])
def test_missing_extra_is_one_line_and_writes_nothing(command: str, simulated, nwb_run: Path, tmp_path: Path,
                                                      monkeypatch: pytest.MonkeyPatch,
                                                      capsys: pytest.CaptureFixture) -> None:
    folder = simulated("tiny", 3)
    before = {p.name: p.read_bytes() for p in nwb_run.iterdir()}
    (nwb_run / f"{nwb_run.name}.nwb").rename(tmp_path / "aside.nwb")  # would be written, were pynwb there
    monkeypatch.setitem(sys.modules, "pynwb", None)  # `import pynwb` raises ImportError
    out = tmp_path / "results"
    overrides = ([f"input={folder / (folder.name + '.tif')}", f"out={out}", "nwb=true"] if command == "infer"
                 else [f"input={nwb_run.parent}", "format=nwb"])
    capsys.readouterr()
    with pytest.raises(SystemExit) as exit_:
        _run(command, tmp_path, *overrides)
    err = capsys.readouterr().err.strip().splitlines()
    assert exit_.value.code == 2
    assert len(err) == 1 and err[0].startswith("astro3s: error:") and 'pip install "astro3s[nwb]"' in err[0]
    assert not out.exists()
    (tmp_path / "aside.nwb").rename(nwb_run / f"{nwb_run.name}.nwb")
    assert {p.name: p.read_bytes() for p in nwb_run.iterdir()} == before


def test_nwb_needs_the_frame_rate_and_says_so_before_any_work(simulated, tmp_path: Path) -> None:
    from astro3s.errors import InputError
    from astro3s.io import read_movie

    folder = simulated("tiny", 3)
    with read_movie(folder / f"{folder.name}.tif") as mov:
        np.save(tmp_path / "nofs.npy", mov.load())  # .npy records no frame rate
    out = tmp_path / "results"
    with pytest.raises(SystemExit):
        _run("infer", tmp_path, f"input={tmp_path / 'nofs.npy'}", f"out={out}", "nwb=true",
             f"rois={folder / 'ground_truth' / 'RoiSet.zip'}")
    assert not (out / "nofs").exists()
    from astro3s.io.nwb import recording_info

    with pytest.raises(InputError, match="fs="):
        recording_info(None, name="x", n_frames=3, shape=(4, 4), fs=None)


def test_roi_masks_split_processes_and_keep_domains_beyond_the_cell() -> None:
    from astro3s.io.nwb import roi_masks

    soma = np.zeros((8, 10), np.uint16)
    processes = np.zeros_like(soma)
    domains = np.zeros_like(soma)
    soma[1:3, 1:3] = 1
    processes[1, 4:6] = 1  # two separate pieces of cell 1's processes
    processes[5:7, 1] = 1
    soma[5:7, 7:9] = 2  # cell 2: soma only, no domain beyond it
    domains[:4, :7] = 1
    domains[5:7, 1] = 1
    domains[5:7, 7:9] = 2
    rois = roi_masks(soma, processes, domains)
    assert rois.names == ["Soma_001", "Proc_001_01", "Proc_001_02", "Domain_001", "Soma_002"]
    assert rois.kinds == ["soma", "process", "process", "domain", "soma"]
    assert rois.cell_ids.tolist() == [1, 1, 1, 1, 2] and rois.masks.dtype == bool
    assert rois.masks[1].sum() == 2 and rois.masks[2].sum() == 2
    assert not (rois.masks[3] & (soma > 0)).any() and not (rois.masks[3] & (processes > 0)).any()
    assert np.array_equal(rois.masks[:4].any(axis=0), domains == 1)
    empty = roi_masks(np.zeros((3, 4), np.uint16), np.zeros((3, 4), np.uint16), np.zeros((3, 4), np.uint16))
    assert len(empty) == 0 and empty.masks.shape == (0, 3, 4)


def test_event_columns_of_an_empty_events_csv(tmp_path: Path) -> None:
    from astro3s.events.table import EVENT_CSV_COLUMNS
    from astro3s.io.nwb import read_event_columns

    (tmp_path / "events.csv").write_text(",".join(EVENT_CSV_COLUMNS) + "\n")
    columns = read_event_columns(tmp_path / "events.csv")
    assert list(columns) == list(EVENT_CSV_COLUMNS) and all(len(v) == 0 for v in columns.values())
    assert columns["onset_frame"].dtype == np.int64 and columns["snr"].dtype == np.float64


@pytest.mark.parametrize(("override", "message"), [
    ("format=csv", "format='csv'"),
    ("imaging_plane.excitation_lambda=blue", "wavelength in nm"),
])
def test_export_config_errors_are_one_line(override: str, message: str, nwb_run: Path, tmp_path: Path,
                                           capsys: pytest.CaptureFixture) -> None:
    capsys.readouterr()
    with pytest.raises(SystemExit) as exit_:
        _run("export", tmp_path, f"input={nwb_run}", override)
    err = capsys.readouterr().err.strip().splitlines()
    assert exit_.value.code == 2 and len(err) == 1 and message in err[0] and "Fix:" in err[0]


def test_pixel_size_of_a_calibrated_tiff_and_a_file_from_the_api(tmp_path: Path) -> None:
    import tifffile

    from astro3s.io.nwb import NwbContent, recording_info, roi_masks, tiff_pixel_size_um, write_nwb

    movie = tmp_path / "movies" / "cal.tif"
    movie.parent.mkdir()
    rng = np.random.default_rng(0)
    frames = rng.integers(100, 200, (12, 16, 20)).astype(np.uint16)
    tifffile.imwrite(movie, frames, imagej=True, resolution=(2.0, 2.0), metadata={"unit": "um", "axes": "TYX"})
    assert tiff_pixel_size_um(movie) == pytest.approx(0.5)
    plain = tmp_path / "plain.tif"
    tifffile.imwrite(plain, frames)
    assert tiff_pixel_size_um(plain) is None  # a default resolution is no calibration
    soma = np.zeros((16, 20), np.uint16)
    soma[4:8, 4:8] = 1
    processes = np.zeros_like(soma)
    processes[4, 9:14] = 1
    rois = roi_masks(soma, processes, np.where((soma > 0) | (processes > 0), 1, 0).astype(np.uint16))
    dff = rng.normal(size=(12, 2)).astype(np.float32)
    content = NwbContent(recording=recording_info(movie, name="cal", n_frames=12, shape=(16, 20), fs=5.0),
                         rois=rois, trace_names=["Soma_001", "Proc_001_01"], dff=dff, f=dff + 10,
                         events={"roi": np.array(["Proc_001_01"]), "onset_frame": np.array([2]),
                                 "end_frame": np.array([5]), "snr": np.array([4.0])},
                         neuropil=(["Proc_001_01"], dff[:, 1:] + 3))
    path = write_nwb(tmp_path / "out" / "cal.nwb", content)
    _inspect(path)
    from pynwb import NWBHDF5IO

    with NWBHDF5IO(str(path), mode="r") as io:
        nwb = io.read()
        assert list(nwb.imaging_planes["ImagingPlane"].grid_spacing[:]) == [0.5, 0.5]
        np.testing.assert_allclose(nwb.acquisition["TwoPhotonSeries"].field_of_view[:], [10e-6, 8e-6])
        assert nwb.acquisition["TwoPhotonSeries"].external_file[0] == "../movies/cal.tif"
        np.testing.assert_array_equal(nwb.processing["ophys"]["Fluorescence"]["RoiResponseSeries"].data[:], dff + 10)
        # the neuropil surround traces, Suite2p's "Neuropil" series, pointing at their own ROIs
        neuropil = nwb.processing["ophys"]["Fluorescence"]["Neuropil"]
        np.testing.assert_array_equal(neuropil.data[:], dff[:, 1:] + 3)
        assert list(neuropil.rois.data[:]) == [int(rois.rows(["Proc_001_01"], what="t")[0])]
        assert nwb.events["events"]["timestamp"][0] == pytest.approx(0.4)


def test_nwb_of_one_channel_of_a_two_channel_movie(simulated, tmp_path: Path) -> None:
    import tifffile

    from astro3s.inference import infer_movie, load_inference_model
    from astro3s.io import read_movie
    from astro3s.io.nwb import content_from_folder, write_nwb

    folder = simulated("tiny", 3)
    with read_movie(folder / f"{folder.name}.tif") as movie:
        frames, fs = movie[:], movie.fs
    two = tmp_path / "two.tif"  # channel 1: the first frame held (a structural channel), channel 2: the movie
    tifffile.imwrite(two, np.stack([np.broadcast_to(frames[:1], frames.shape), frames], axis=1), imagej=True,
                     metadata={"axes": "TCYX", "finterval": 1.0 / fs})
    _, options = load_inference_model("default", device="cpu", soma_scale="fixed", nwb=True, figures=False,
                                      channel=2)
    result = infer_movie(two, tmp_path / "out", None, options, rois=folder / "ground_truth" / "RoiSet.zip",
                         progress=False)
    content = content_from_folder(result.output)  # what astro3s-export reads: the same channel again
    assert content.recording.channel == 2 and content.recording.plane is None
    np.testing.assert_allclose(content.images["mean"][0], frames.mean(axis=0), rtol=1e-4, atol=1e-2)
    path = write_nwb(tmp_path / "again.nwb", content, nwb_dir=tmp_path)
    back = _read_back(path)
    assert "channel 2" in back["series_description"]
