"""Inference end to end: outputs, curation round trip, folders with bad movies, skipping, tiling."""

from __future__ import annotations

import json
import os
import shutil
import stat
from pathlib import Path

import numpy as np
import pytest

from astro3s.errors import Astro3sError, InputError


@pytest.fixture(scope="module")
def random_checkpoint(tmp_path_factory: pytest.TempPathFactory, untrained_checkpoint) -> Path:
    """A small untrained U-Net checkpoint, with a preprocess.yaml beside it."""
    return untrained_checkpoint(tmp_path_factory.mktemp("ckpt"))


@pytest.fixture(scope="module")
def tiny_movie(simulated) -> Path:
    folder = simulated("tiny", 3)
    return folder / f"{folder.name}.tif"


def _options(checkpoint: Path, **kw):
    from astro3s.inference import load_inference_model

    kw.setdefault("device", "cpu")
    return load_inference_model(checkpoint, **kw)


def test_outputs_exist_load_and_share_ids(tiny_movie: Path, random_checkpoint: Path, tmp_path: Path) -> None:
    from astro3s.inference import OUTPUT_FILES, infer_movie
    from astro3s.io import read_labels, read_roiset

    model, options = _options(random_checkpoint)
    gt_rois = tiny_movie.parent / "ground_truth" / "RoiSet.zip"
    # the curated path gives known cells, so ids can be checked whatever the untrained network does
    result = infer_movie(tiny_movie, tmp_path, model, options, rois=gt_rois)
    assert result.status == "done" and result.output == tmp_path / tiny_movie.stem
    for name in OUTPUT_FILES:
        assert (result.output / name).is_file(), name
    soma = read_labels(result.output / "soma.tif")
    processes = read_labels(result.output / "processes.tif")
    domains = read_labels(result.output / "domains.tif")
    ids = set(np.unique(soma)) - {0}
    assert ids and set(np.unique(processes)) - {0} <= ids and set(np.unique(domains)) - {0} <= ids
    assert not np.any((soma > 0) & (processes > 0))
    # every soma pixel lies in its own cell's domain
    assert np.all(domains[soma > 0] == soma[soma > 0])
    soma_back, proc_back = read_roiset(result.output / "RoiSet.zip", soma.shape)
    assert np.array_equal(soma_back > 0, soma > 0) and np.array_equal(proc_back > 0, processes > 0)
    summary = json.loads((result.output / "summary.json").read_text())
    assert summary["n_cells"] == len(ids) == len(summary["cells"])
    assert {c["id"] for c in summary["cells"]} == ids
    assert summary["segmentation"]["source"] == "rois"
    assert 0.5 <= summary["correlation"]["threshold"] <= 0.96
    assert {"preprocess_s", "correlation_s", "total_s"} <= set(summary["timings_s"])
    header = (result.output / "traces.csv").read_text().splitlines()[0].split(",")
    assert header[0] == "frame" and any(h.startswith("Soma_") for h in header)
    cc = np.load(result.output / "cc_maps.npz")
    assert cc["cc"].shape == (len(ids), *soma.shape) and cc["cc"].dtype == np.float16
    assert not list(tmp_path.glob(".partial-*"))


def test_curation_round_trip_drops_a_cell(tiny_movie: Path, random_checkpoint: Path, tmp_path: Path) -> None:
    from astro3s.inference import infer_movie
    from astro3s.io import read_labels, read_roiset, write_roiset

    model, options = _options(random_checkpoint)
    first = infer_movie(tiny_movie, tmp_path / "a", model, options,
                        rois=tiny_movie.parent / "ground_truth" / "RoiSet.zip")
    soma = read_labels(first.output / "soma.tif")
    soma_r, proc_r = read_roiset(first.output / "RoiSet.zip", soma.shape)
    drop = int(np.max(soma_r))
    soma_r[soma_r == drop] = 0
    proc_r[proc_r == drop] = 0
    edited = write_roiset(soma_r, proc_r, tmp_path / "edited_RoiSet.zip")
    second = infer_movie(tiny_movie, tmp_path / "b", None, options, rois=edited)
    assert second.n_cells == first.n_cells - 1
    summary = json.loads((second.output / "summary.json").read_text())
    assert summary["segmentation"] == {"source": "rois", "rois": str(edited)}


def test_network_path_writes_everything(tiny_movie: Path, random_checkpoint: Path, tmp_path: Path) -> None:
    from astro3s.inference import OUTPUT_FILES, infer_movie

    model, options = _options(random_checkpoint, soma_scale="fixed")
    result = infer_movie(tiny_movie, tmp_path, model, options)
    assert all((result.output / n).is_file() for n in OUTPUT_FILES)
    summary = json.loads((result.output / "summary.json").read_text())
    assert summary["segmentation"]["source"] == "network"
    assert summary["soma_scale"]["mode"] == "fixed" and not summary["soma_scale"]["rescaled"]
    assert {"network_s", "combine_s"} <= set(summary["timings_s"])


def test_folder_keeps_going_past_a_corrupt_movie(tiny_movie: Path, random_checkpoint: Path,
                                                 tmp_path: Path) -> None:
    from astro3s.inference import read_index, run_batch

    movies = tmp_path / "movies"
    movies.mkdir()
    shutil.copy(tiny_movie, movies / "a_good.tif")
    data = tiny_movie.read_bytes()
    (movies / "b_truncated.tif").write_bytes(data[: len(data) // 3])
    np.save(movies / "c_nan.npy", np.full((20, 32, 32), np.nan, np.float32))
    model, options = _options(random_checkpoint, figures=False)
    from astro3s.io import find_movies

    out = tmp_path / "out"
    results = run_batch(find_movies(movies), out, model, options)
    status = {r.movie.name: r.status for r in results}
    assert status == {"a_good.tif": "done", "b_truncated.tif": "failed", "c_nan.npy": "failed"}
    rows = {Path(r["movie"]).name: r for r in read_index(out / "index.csv")}
    assert rows["b_truncated.tif"]["error"] and "b_truncated" in rows["b_truncated.tif"]["error"]
    assert rows["a_good.tif"]["status"] == "done"
    # failed movies leave no folder, no staging leftovers
    assert sorted(p.name for p in out.iterdir()) == ["a_good", "index.csv"]
    # a rerun skips the finished movie and keeps one row per movie
    again = run_batch(find_movies(movies), out, model, options)
    assert {r.movie.name: r.status for r in again}["a_good.tif"] == "skipped"
    assert len(read_index(out / "index.csv")) == 3


def test_overwrite_replaces_and_skip_keeps(tiny_movie: Path, random_checkpoint: Path, tmp_path: Path) -> None:
    from astro3s.inference import infer_movie

    model, options = _options(random_checkpoint, figures=False)
    rois = tiny_movie.parent / "ground_truth" / "RoiSet.zip"
    first = infer_movie(tiny_movie, tmp_path, model, options, rois=rois)
    stamp = (first.output / "summary.json").stat().st_mtime_ns
    skipped = infer_movie(tiny_movie, tmp_path, model, options, rois=rois, overwrite=False)
    assert skipped.status == "skipped" and (first.output / "summary.json").stat().st_mtime_ns == stamp
    redone = infer_movie(tiny_movie, tmp_path, model, options, rois=rois, overwrite=True)
    assert redone.status == "done" and (first.output / "summary.json").stat().st_mtime_ns != stamp


def test_crash_while_writing_leaves_nothing(tiny_movie: Path, random_checkpoint: Path, tmp_path: Path,
                                            monkeypatch: pytest.MonkeyPatch) -> None:
    import astro3s.inference.outputs as outputs
    from astro3s.inference import infer_movie

    model, options = _options(random_checkpoint, figures=False)

    def boom(*args, **kwargs):
        raise KeyboardInterrupt  # as if the user pressed Ctrl-C while the outputs are written

    monkeypatch.setattr(outputs, "write_cc_maps", boom)
    with pytest.raises(KeyboardInterrupt):
        infer_movie(tiny_movie, tmp_path, model, options, rois=tiny_movie.parent / "ground_truth" / "RoiSet.zip")
    assert list(tmp_path.iterdir()) == []


@pytest.mark.skipif(os.name != "posix" or os.geteuid() == 0, reason="needs a non-root POSIX user")
def test_read_only_output_folder_is_one_clear_error(tiny_movie: Path, random_checkpoint: Path,
                                                    tmp_path: Path) -> None:
    from astro3s.inference import run_batch

    out = tmp_path / "ro"
    out.mkdir()
    out.chmod(stat.S_IRUSR | stat.S_IXUSR)
    model, options = _options(random_checkpoint)
    try:
        with pytest.raises(InputError, match="cannot write the outputs here"):
            run_batch([tiny_movie], out, model, options)
    finally:
        out.chmod(stat.S_IRWXU)


def test_tiled_fov_pass_matches_single_pass(tiny_movie: Path, random_checkpoint: Path) -> None:
    from astro3s.inference import predict_fov
    from astro3s.io import read_movie
    from astro3s.preprocess import preprocess

    model, options = _options(random_checkpoint)
    pre = preprocess(read_movie(tiny_movie), options.preprocess, progress=False)
    whole = predict_fov(model, pre)
    tiled = predict_fov(model, pre, max_fov_pixels=1, tile_size=48, tile_overlap=24)
    assert tiled.shape == whole.shape
    np.testing.assert_allclose(tiled.sum(0), 1.0, atol=1e-5)
    # same class almost everywhere: only tile borders see less context
    assert np.mean(tiled.argmax(0) == whole.argmax(0)) > 0.9


def test_estimate_soma_area_range() -> None:
    from astro3s.inference.segment import estimate_soma_area_range

    probs = np.zeros((3, 100, 100), np.float32)
    probs[2] = 1
    for y, x in [(10, 10), (50, 50), (80, 20)]:  # three 100-px somata
        probs[:, y:y + 10, x:x + 10] = np.array([0, 1, 0])[:, None, None]
    assert estimate_soma_area_range(probs) == (50.0, 200.0)
    probs[1] = 0
    probs[2] = 1
    assert estimate_soma_area_range(probs) is None


def test_bad_checkpoint_is_a_checkpoint_error(tmp_path: Path) -> None:
    from astro3s.errors import CheckpointError
    from astro3s.inference import load_inference_model

    bad = tmp_path / "bad.ckpt"
    bad.write_bytes(b"not a checkpoint")
    with pytest.raises(CheckpointError, match="bad.ckpt"):
        load_inference_model(bad, device="cpu")


def test_unknown_option_is_a_config_error(random_checkpoint: Path) -> None:
    from astro3s.errors import ConfigError
    from astro3s.inference import load_inference_model

    with pytest.raises(ConfigError, match="unknown inference option"):
        load_inference_model(random_checkpoint, device="cpu", bacth_size=3)
    assert issubclass(ConfigError, Astro3sError)


def _compose_infer(overrides: list[str], tmp_path: Path):
    from _hydra import compose_config

    return compose_config("infer", overrides, output_dir=tmp_path / "run", log_dir=tmp_path / "logs")


def test_astro3s_infer_on_tiny_end_to_end_with_the_default_model(simulated, tmp_path: Path) -> None:
    """The command users run: bundled model, no parameter set, a folder of simulated tiny movies."""
    from astro3s.cli.infer import infer_task
    from astro3s.inference import OUTPUT_FILES, read_index

    folder = simulated("tiny", 7)
    out = tmp_path / "out"
    cfg = _compose_infer([f"input={folder.parent}", f"out={out}", "device=cpu", "extras=quiet"], tmp_path)
    results = infer_task(cfg)
    assert results and all(r.status == "done" for r in results)
    result = next(r for r in results if r.movie.parent == folder)
    assert all((result.output / n).is_file() for n in OUTPUT_FILES)
    assert len(read_index(out / "index.csv")) == len(results)
    summary = json.loads((result.output / "summary.json").read_text())
    assert summary["segmentation"]["model"] == "default"
    assert summary["parameters"]["preprocess"]["crop_size"] == 96


def test_default_model_finds_the_cells_of_an_unseen_d1_like_movie(simulated, tmp_path: Path) -> None:
    """Quality of the shipped model through the whole path (held-out seed; see experiments/evaluate_model.py)."""
    from astro3s.inference import infer_movie, load_inference_model
    from astro3s.io import read_labels
    from astro3s.metrics import astra_scores

    folder = simulated("d1_like", 5000, overview=False)
    model, options = load_inference_model("default", device="cpu", figures=False)
    result = infer_movie(folder / f"{folder.name}.tif", tmp_path, model, options)
    soma = read_labels(result.output / "soma.tif")
    processes = read_labels(result.output / "processes.tif")
    scores = astra_scores(soma, processes, read_labels(folder / "ground_truth" / "soma.tif"),
                          read_labels(folder / "ground_truth" / "processes.tif"))
    assert scores.detection_f1 >= 0.8 and scores.soma_f1 >= 0.8, scores
