"""Inference end to end: outputs, curation round trip, folders with bad movies, skipping, tiling."""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import stat
from pathlib import Path

import numpy as np
import pytest

from astro3s.errors import Astro3sError, InputError


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
    assert cc["cc"].shape[0] == len(ids) and cc["cc"].dtype == np.float16 and cc["origin"].shape == (len(ids), 2)
    # each box, placed at its origin, holds 1 on its cell's own soma pixels
    for box, (y0, x0), cell in zip(cc["cc"], cc["origin"], cc["cell_ids"]):
        ys, xs = np.nonzero(soma == cell)
        assert np.all(box[ys - y0, xs - x0] == 1)
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
    assert sorted(p.name for p in out.iterdir()) == ["a_good", "index.csv", "index.html"]
    # a rerun skips the finished movie and keeps one row per movie
    again = run_batch(find_movies(movies), out, model, options)
    assert {r.movie.name: r.status for r in again}["a_good.tif"] == "skipped"
    assert len(read_index(out / "index.csv")) == 3


def test_overwrite_replaces_and_skip_keeps(tiny_movie: Path, random_checkpoint: Path, tmp_path: Path) -> None:
    from astro3s.inference import infer_movie

    model, options = _options(random_checkpoint, figures=False, soma_scale="fixed")
    first = infer_movie(tiny_movie, tmp_path, model, options)
    stamp = (first.output / "summary.json").stat().st_mtime_ns
    skipped = infer_movie(tiny_movie, tmp_path, model, options, overwrite=False)
    assert skipped.status == "skipped" and (first.output / "summary.json").stat().st_mtime_ns == stamp
    redone = infer_movie(tiny_movie, tmp_path, model, options, overwrite=True)
    assert redone.status == "done" and (first.output / "summary.json").stat().st_mtime_ns != stamp
    # curated cells are never skipped as complete: they are what the user changed
    curated = infer_movie(tiny_movie, tmp_path, None, options, overwrite=False,
                          rois=tiny_movie.parent / "ground_truth" / "RoiSet.zip")
    assert curated.status == "done"
    assert json.loads((first.output / "summary.json").read_text())["segmentation"]["source"] == "rois"


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
    from astro3s.inference.network import TilingParams

    tiled = predict_fov(model, pre, tiling=TilingParams(max_fov_pixels=1, tile_size=48, tile_overlap=24))
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


def test_cpu_inference_network_is_channels_last_and_gives_the_same_output(random_checkpoint: Path) -> None:
    """The network inference loads on a CPU runs its convolutions channels-last (faster there); its output
    is the checkpoint network's, and the network training would load is left as it is."""
    import torch

    from astro3s.inference import load_inference_model
    from astro3s.models import load_network

    net, _ = load_inference_model(random_checkpoint, device="cpu")
    plain = load_network(random_checkpoint)
    convs = [m.weight for m in net.modules() if isinstance(m, torch.nn.Conv2d) and m.kernel_size != (1, 1)]
    assert convs and all(w.is_contiguous(memory_format=torch.channels_last) for w in convs)
    assert all(m.weight.is_contiguous() for m in plain.modules() if isinstance(m, torch.nn.Conv2d))
    image = torch.randn(3, 1, 72, 88)
    with torch.inference_mode():
        torch.testing.assert_close(net(image), plain(image), rtol=1e-4, atol=1e-4)


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
    # a clear movie: registered frame by frame, none repaired, candidates from the published search
    assert summary["parameters"]["preprocess"]["register_noisy_frames"] is True
    assert summary["preprocess"]["motion_bin_frames"] == 1 and summary["preprocess"]["motion_repaired_frames"] == 0
    assert summary["preprocess"]["significant_candidates"] is None and summary["preprocess"]["hot_pixels"] == 0
    # the membrane-indicator check ran (on by default) and is recorded, whatever it found
    rings = summary["preprocess"]
    assert isinstance(rings["ring_core_px"], int) and isinstance(rings["ring_cores"], int)
    assert (rings["ring_core_px"] > 0) == (rings["ring_cores"] > 0)
    from astro3s.inference.rules import CellRules

    assert summary["parameters"]["rules"] == dataclasses.asdict(CellRules())  # the rules' settings, recorded


def test_default_model_finds_the_cells_of_unseen_d1_like_movies(simulated, tmp_path: Path) -> None:
    """Quality of the shipped model through the whole path (held-out seeds; see experiments/evaluate_model.py).

    Pooled over three movies: with look-alikes in the simulator (out-of-focus astrocytes, blobs)
    one movie's score moves by +-0.1 with a single extra cell reported.
    """
    from astro3s.inference import infer_movie, load_inference_model
    from astro3s.io import read_labels
    from astro3s.metrics import astra_scores

    model, options = load_inference_model("default", device="cpu", figures=False)
    pred, truth = [], []
    for seed in (5000, 5001, 5002):
        folder = simulated("d1_like", seed, overview=False)
        result = infer_movie(folder / f"{folder.name}.tif", tmp_path, model, options)
        pred.append([read_labels(result.output / f"{k}.tif") for k in ("soma", "processes")])
        truth.append([read_labels(folder / "ground_truth" / f"{k}.tif") for k in ("soma", "processes")])
    scores = astra_scores([p[0] for p in pred], [p[1] for p in pred], [t[0] for t in truth], [t[1] for t in truth])
    assert scores.detection_f1 >= 0.8 and scores.soma_f1 >= 0.8, scores
    assert scores.detection_recall >= 0.9, scores


def test_streaming_settings_give_the_in_memory_results(tiny_movie: Path, random_checkpoint: Path,
                                                      tmp_path: Path, caplog: pytest.LogCaptureFixture,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    # tiny time chunks in pre-processing and a CC memory budget far below the traces (groups of cells
    # read back from a temporary file, as for a corrected movie not kept in memory: the reads from the
    # cached one are tested in test_correlation.py): the same outputs as in memory
    from astro3s.inference import infer_movie
    from astro3s.io import read_labels

    model, options = _options(random_checkpoint, figures=False)
    gt_rois = tiny_movie.parent / "ground_truth" / "RoiSet.zip"
    whole = infer_movie(tiny_movie, tmp_path / "whole", model, options, rois=gt_rois)
    streamed_options = dataclasses.replace(
        options, preprocess=options.preprocess.replace(chunk_frames=7),
        correlation=dataclasses.replace(options.correlation, memory_mb=0.3, chunk_frames=5,
                                        scratch_dir=str(tmp_path / "scratch")))
    (tmp_path / "scratch").mkdir()
    from astro3s.correlation import domains

    monkeypatch.setattr(domains, "frames_in_memory", lambda movie: None)
    with caplog.at_level("INFO", logger="astro3s.correlation"):
        streamed = infer_movie(tiny_movie, tmp_path / "streamed", model, streamed_options, rois=gt_rois)
    assert " groups: " in caplog.text and "spilled to a temporary file" in caplog.text
    for name in ("soma.tif", "processes.tif", "domains.tif"):
        np.testing.assert_array_equal(read_labels(streamed.output / name), read_labels(whole.output / name))
    a, b = (np.loadtxt(r.output / "traces.csv", delimiter=",", skiprows=1) for r in (whole, streamed))
    np.testing.assert_allclose(b, a, rtol=1e-4, atol=1e-5)
    summaries = [json.loads((r.output / "summary.json").read_text()) for r in (whole, streamed)]
    assert summaries[0]["correlation"]["threshold"] == summaries[1]["correlation"]["threshold"]
    assert [c["domain_area_px"] for c in summaries[0]["cells"]] == [c["domain_area_px"] for c in summaries[1]["cells"]]
    assert not any((tmp_path / "scratch").iterdir())


def _three_square_somata(pre, side: int):
    """A stand-in for the whole-FOV network pass: three ``side x side`` somata on background."""
    def predict(*args, **kwargs):
        probs = np.zeros((3, *pre.fov_map.shape), np.float32)
        probs[2] = 1
        for y, x in [(5, 5), (40, 40), (60, 10)]:
            probs[:, y:y + side, x:x + side] = np.array([0, 1, 0])[:, None, None]
        return probs
    return predict


def test_soma_scale_is_compared_with_the_centre_of_the_range(tiny_movie: Path, random_checkpoint: Path,
                                                            monkeypatch: pytest.MonkeyPatch) -> None:
    # a movie whose somata have a median of 100 px against a configured range of (89, 345) px: inside
    # the range, but half its somata would fall under the area filters, so the scale is refitted and
    # the network sees the cells enlarged by sqrt(centre / median)
    from astro3s.inference import segment
    from astro3s.io import read_movie
    from astro3s.preprocess import preprocess

    model, options = _options(random_checkpoint)
    pre = preprocess(read_movie(tiny_movie), options.preprocess.replace(soma_area_range=(89.0, 345.0)),
                     progress=False)

    monkeypatch.setattr(segment, "predict_fov", _three_square_somata(pre, 10))  # 100-px somata
    refit, info, fov_probs = segment.adapt_soma_scale(pre, model)
    centre = (89.0 * 345.0) ** 0.5
    assert info["rescaled"] and info["used"] == [50.0, 200.0] and fov_probs is None
    assert info["zoom"] == pytest.approx((centre / 100.0) ** 0.5)
    assert tuple(refit.params.soma_area_range) == (50.0, 200.0)
    monkeypatch.setattr(segment, "predict_fov", _three_square_somata(pre, 13))  # 169-px somata: near the centre, kept
    same, info, fov_probs = segment.adapt_soma_scale(pre, model)
    assert same is pre and not info["rescaled"] and info["zoom"] == 1.0 and fov_probs is not None
    # the 100-px somata again, but the median image's blobs say ~205 px (above the centre): the two
    # estimates disagree about a shrink, so the scale stays (a first pass fragmenting neuropil texture)
    monkeypatch.setattr(segment, "predict_fov", _three_square_somata(pre, 10))
    kept, info, fov_probs = segment.adapt_soma_scale(pre, model, blob_area=205.7)
    assert kept is pre and info["shrink_refused"] and not info["rescaled"] and info["zoom"] == 1.0
    assert info["estimated"] == [50.0, 200.0] and fov_probs is not None
    # blobs that agree (small) let the shrink through
    _, info, _ = segment.adapt_soma_scale(pre, model, blob_area=60.0)
    assert info["rescaled"] and "shrink_refused" not in info
    # 121-px somata, 1.45x below the centre: a shrink (segment.SHRINK_TOLERANCE, 1.25), where the same
    # factor above the centre would leave the scale alone (the first pass misses a crowded FOV's smallest
    # somata, so its median overstates theirs)
    monkeypatch.setattr(segment, "predict_fov", _three_square_somata(pre, 11))
    _, info, _ = segment.adapt_soma_scale(pre, model)
    assert info["rescaled"] and info["zoom"] == pytest.approx((centre / 121.0) ** 0.5)
    _, info, _ = segment.adapt_soma_scale(pre, model, shrink_tolerance=1.5)
    assert not info["rescaled"] and info["zoom"] == 1.0


def test_larger_somata_get_wider_clahe_tiles(tiny_movie: Path, random_checkpoint: Path,
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    # somata 1.7x wider than the configured centre's are not shrunk for the network: the CLAHE tiles
    # are widened as much instead, so that a soma is not ranked against itself within its tile;
    # somata 1.45x wider (under segment.TILE_WIDENING_MIN) are refitted but keep the tiles
    from astro3s.inference import segment
    from astro3s.io import read_movie
    from astro3s.preprocess import preprocess

    model, options = _options(random_checkpoint)
    params = options.preprocess.replace(soma_area_range=(40.0, 160.0), clahe_tiles=(8, 8), clahe_min_tile=8)
    pre = preprocess(read_movie(tiny_movie), params, progress=False)

    monkeypatch.setattr(segment, "predict_fov", _three_square_somata(pre, 15))  # 225-px somata
    widened, info, _ = segment.adapt_soma_scale(pre, model)
    widening = (225.0 / 80.0) ** 0.5
    assert widening >= segment.TILE_WIDENING_MIN
    assert info["rescaled"] and info["zoom"] == 1.0
    assert info["clahe_tiles"] == [round(8 / widening)] * 2 == list(widened.params.clahe_tiles)
    assert widened.params.clahe_min_tile == round(8 * widening)
    assert not np.array_equal(widened.enhanced, pre.enhanced)  # enhanced again from the median image
    kept, info, _ = segment.adapt_soma_scale(pre, model, scale_tiles=False)
    assert info["rescaled"] and "clahe_tiles" not in info
    assert tuple(kept.params.clahe_tiles) == (8, 8) and np.array_equal(kept.enhanced, pre.enhanced)
    monkeypatch.setattr(segment, "predict_fov", _three_square_somata(pre, 13))  # 169-px somata: 1.45x wider
    kept, info, _ = segment.adapt_soma_scale(pre, model)
    assert info["rescaled"] and "clahe_tiles" not in info and tuple(kept.params.clahe_tiles) == (8, 8)


def test_size_filters_widen_to_the_fitted_scale_within_tolerance(tiny_movie: Path, random_checkpoint: Path,
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    # somata of 256 px against a configured (89, 345): close enough to the centre (175 px) that the
    # candidate search keeps its parameters, but the combination filters by the union of both ranges,
    # so that a 440-px soma is not cut by the configured upper limit (1.15 * 345 = 397 px) and an
    # 89-px one is not cut by the estimate's lower limit (128 px)
    from astro3s.inference import segment
    from astro3s.inference.cells import segment_movie, size_filter_overrides
    from astro3s.io import read_movie
    from astro3s.preprocess import preprocess

    model, options = _options(random_checkpoint)
    pre = preprocess(read_movie(tiny_movie), options.preprocess.replace(soma_area_range=(89.0, 345.0)),
                     progress=False)

    def predict(*args, **kwargs):
        probs = np.zeros((3, *pre.fov_map.shape), np.float32)
        probs[2] = 1
        for y, x in [(2, 2), (2, 30), (2, 60), (40, 2), (40, 30)]:
            probs[:, y:y + 16, x:x + 16] = np.array([0, 1, 0])[:, None, None]
        return probs

    monkeypatch.setattr(segment, "predict_fov", predict)
    same, seg, info = segment_movie(pre, model, options)
    assert same is pre and not info["rescaled"] and tuple(same.params.soma_area_range) == (89.0, 345.0)
    # (the lower end loosened by SMALL_SOMA_SLACK for a FOV at its own scale: crowded FOVs' smallest somata)
    assert info["estimated"] == [128.0, 512.0] and info["size_filter_range"] == pytest.approx([0.8 * 89.0, 512.0])
    assert tuple(seg.params.soma_area_range) == pytest.approx((0.8 * 89.0, 512.0))
    assert seg.params.area_factors[1] * seg.params.soma_area_range[1] > 440 > 1.15 * 345
    assert info["first_pass_somata"] == 5
    # a crowded FOV (a first pass of at least CROWDED_SOMATA somata) loosens it to CROWDED_SOMA_SLACK
    from astro3s.inference import cells

    crowded_rules = dataclasses.replace(options, rules={"crowded_somata": 5})
    passes = []
    original_pass = cells.add_large_cells
    monkeypatch.setattr(cells, "add_large_cells", lambda seg, *a, **k: passes.append(1) or original_pass(seg, *a, **k))
    _, crowded_seg, crowded = segment_movie(pre, model, crowded_rules)
    assert crowded["size_filter_range"] == pytest.approx([cells.CROWDED_SOMA_SLACK * 89.0, 512.0])
    # ... and gets no 2x2-binned large-soma pass (LARGE_PASS_ON_CROWDED), which the counts say
    assert options.large_soma_pass and passes == [] and crowded_seg.counts["large_pass_skipped_crowded"] == 1
    segment_movie(pre, model, dataclasses.replace(options, rules={"crowded_somata": 5, "large_pass_on_crowded": True}))
    assert passes == [1]
    _, sparse_seg, _ = segment_movie(pre, model, options)  # 5 somata: not crowded, the pass runs
    assert passes == [1, 1] and "large_pass_skipped_crowded" not in sparse_seg.counts
    # smaller somata widen the lower end only; a range the user set wins; no estimate: the parameters'
    record = {"estimated": [40.0, 160.0]}
    assert size_filter_overrides({}, record, (89.0, 345.0))["soma_area_range"] == (40.0, 345.0)
    record = {"estimated": [128.0, 512.0]}
    assert size_filter_overrides({"soma_area_range": (50, 60)}, record, (89, 345))["soma_area_range"] == (50, 60)
    assert record["size_filter_range"] == [50.0, 60.0]
    record = {"estimated": None}
    assert size_filter_overrides({"split": "disc"}, record, (89, 345)) == {"split": "disc",
                                                                          "soma_area_range": (89.0, 345.0)}
    assert record["size_filter_range"] == [89.0, 345.0]
    # candidates re-selected at a larger fitted scale (the pre-processing's range is the estimate):
    # the filters still accept what the configured range accepts (a mixed FOV's smaller somata)
    record = {"estimated": [171.5, 686.0], "configured": [89.0, 345.0]}
    assert size_filter_overrides({}, record, (171.5, 686.0))["soma_area_range"] == (89.0, 686.0)
    # low_slack loosens the lower end of a fitted range only, never a user's range or the parameters' alone
    assert size_filter_overrides({}, record, (171.5, 686.0), low_slack=0.5)["soma_area_range"] == (44.5, 686.0)
    assert size_filter_overrides({}, {"estimated": None}, (89, 345), low_slack=0.5)["soma_area_range"] == (89.0, 345.0)
    assert size_filter_overrides({"soma_area_range": (50, 60)}, {"estimated": [40.0, 160.0]}, (89, 345),
                                 low_slack=0.5)["soma_area_range"] == (50, 60)
    with pytest.raises(ValueError, match="low_slack"):
        size_filter_overrides({}, record, (89, 345), low_slack=0)


def test_lookalike_rule_runs_once_on_the_movie_pixels_and_can_be_switched_off(
        tiny_movie: Path, random_checkpoint: Path, record_calls) -> None:
    import astro3s.postprocess.lookalike as lookalike
    from astro3s.inference.cells import segment_movie
    from astro3s.io import read_movie
    from astro3s.preprocess import preprocess

    model, options = _options(random_checkpoint)
    pre = preprocess(read_movie(tiny_movie), options.preprocess, progress=False)
    calls = record_calls(lookalike, "remove_lookalikes")
    _, seg, _ = segment_movie(pre, model, options)
    # once per pass: the FOV's and the active view's (on by default; its cells are judged as the FOV's are)
    assert [args[1].shape for args, _ in calls] == [pre.median_image.shape] * 2 and "lookalikes_removed" in seg.counts
    calls.clear()
    options = dataclasses.replace(options, active_view=False)
    _, seg, _ = segment_movie(pre, model, options)
    assert [args[1].shape for args, _ in calls] == [pre.median_image.shape] and "lookalikes_removed" in seg.counts
    off = dataclasses.replace(options, combine={"reject_lookalikes": False})
    _, seg, _ = segment_movie(pre, model, off)
    assert len(calls) == 1 and "lookalikes_removed" not in seg.counts


def test_visible_process_and_border_rules_run_last_on_the_movie_pixels(
        tiny_movie: Path, record_calls, monkeypatch: pytest.MonkeyPatch) -> None:
    import astro3s.postprocess.grow as grow
    from astro3s.inference import cells, load_inference_model
    from astro3s.io import read_movie
    from astro3s.preprocess import preprocess

    model, options = load_inference_model("default", device="cpu")
    pre = preprocess(read_movie(tiny_movie), options.preprocess, progress=False)
    calls = record_calls(grow, "with_visible_processes")
    slivers = record_calls(cells, "drop_border_slivers")
    _, seg, _ = cells.segment_movie(pre, model, options)
    assert [args[1].shape for args, _ in calls] == [pre.median_image.shape]
    assert len(slivers) == 1 and "border_slivers_removed" in seg.counts     # the border rule runs on every path too
    assert seg.n_cells >= 1 and seg.counts["unseen_process_px"] >= 0
    _, off, _ = cells.segment_movie(pre, model, dataclasses.replace(options, rules={"visible_processes": False}))
    assert len(calls) == 1 and "unseen_process_px" not in off.counts
    np.testing.assert_array_equal(seg.soma, off.soma)                    # somata untouched
    assert ((seg.processes == off.processes) | (seg.processes == 0)).all()   # processes only lose pixels
    assert int((off.processes > 0).sum() - (seg.processes > 0).sum()) == seg.counts["unseen_process_px"]


def test_zoomed_network_passes_map_back_to_the_fov(tiny_movie: Path, random_checkpoint: Path) -> None:
    from astro3s.inference import predict_crops, predict_crops_zoomed, predict_fov
    from astro3s.io import read_movie
    from astro3s.preprocess import preprocess

    model, options = _options(random_checkpoint)
    pre = preprocess(read_movie(tiny_movie), options.preprocess, progress=False)
    assert len(pre.crop_boxes) > 0
    probs, boxes = predict_crops_zoomed(model, pre, 1.0)
    np.testing.assert_array_equal(probs, predict_crops(model, pre))
    np.testing.assert_array_equal(boxes, pre.crop_boxes)
    probs, boxes = predict_crops_zoomed(model, pre, 2.0)
    side = int((pre.crop_boxes[:, 2] - pre.crop_boxes[:, 0]).min())
    m = round(side / 2)
    assert probs.shape == (len(pre.crop_boxes), 3, *pre.crops.shape[-2:])
    np.testing.assert_allclose(probs.sum(1), 1.0, atol=1e-4)
    np.testing.assert_array_equal(boxes[:, 2:] - boxes[:, :2], m)
    # the inner boxes are centred in the candidates' boxes
    np.testing.assert_array_equal(boxes[:, :2] - pre.crop_boxes[:, :2], (side - m) // 2)
    fov = predict_fov(model, pre, zoom=1.7)
    assert fov.shape == (3, *pre.fov_map.shape)
    np.testing.assert_allclose(fov.sum(0), 1.0, atol=1e-4)


def test_write_index_removes_temporary_copies_left_by_a_killed_run(tmp_path: Path) -> None:
    import time

    from astro3s.inference.batch import read_index, write_index
    from astro3s.inference.pipeline import MovieResult

    stale = tmp_path / ".index.abc123.part.csv"
    stale.write_text("frame")
    old = time.time() - 3600
    os.utime(stale, (old, old))
    fresh = tmp_path / ".index.def456.part.csv"  # another job writing right now
    fresh.write_text("frame")
    write_index(tmp_path / "index.csv", [MovieResult(tmp_path / "m.tif", tmp_path / "m", "done", n_cells=2,
                                                     seconds=1.0)])
    assert not stale.exists() and fresh.exists()
    assert [r["status"] for r in read_index(tmp_path / "index.csv")] == ["done"]


def test_amp_false_reaches_every_network_pass(tiny_movie, tmp_path: Path, record_calls) -> None:
    """``astro3s-infer amp=false``: float32 on CUDA too (the CPU never autocasts; the flag must still arrive)."""
    import astro3s.inference.network as network
    from astro3s.cli.infer import inference_setup
    from astro3s.inference.cells import segment_movie
    from astro3s.io import read_movie
    from astro3s.preprocess import preprocess

    cfg = _compose_infer([f"input={tiny_movie}", f"out={tmp_path / 'out'}", "device=cpu", "amp=false",
                          "extras=quiet"], tmp_path)
    model, options = inference_setup(cfg)
    assert options.amp is False
    calls = record_calls(network, "_run_batches")
    with read_movie(tiny_movie) as movie:
        pre = preprocess(movie, options.preprocess, progress=False)
    segment_movie(pre, model, options)
    assert calls and all(kwargs["amp"] is False for _, kwargs in calls)
    default = _compose_infer([f"input={tiny_movie}", f"out={tmp_path / 'out'}", "device=cpu"], tmp_path)
    assert inference_setup(default)[1].amp is True


def test_a_model_trained_on_the_activity_image_gets_it_at_inference(tiny_movie: Path, random_checkpoint: Path,
                                                                    tmp_path: Path, record_calls) -> None:
    # the option travels in the model's preprocess.yaml (astro3s.preprocess.correlation_image): every
    # pre-processing of the run (the FOV's own and any binned pass) computes the correlation image
    from astro3s.inference import OUTPUT_FILES, infer_movie
    from astro3s.models.weights import model_preprocess_params
    from astro3s.preprocess import correlation_image, save_params

    folder = tmp_path / "ckpt"
    folder.mkdir()
    checkpoint = folder / random_checkpoint.name
    shutil.copy(random_checkpoint, checkpoint)
    save_params(model_preprocess_params(random_checkpoint).replace(activity_weight=0.5), folder / "preprocess.yaml")
    calls = record_calls(correlation_image, "activity_brightened")
    model, options = _options(checkpoint, figures=False)
    assert options.preprocess.activity_weight == 0.5
    result = infer_movie(tiny_movie, tmp_path / "out", model, options)
    assert all((result.output / n).is_file() for n in OUTPUT_FILES if n.endswith((".tif", ".csv", ".json")))
    summary = json.loads((result.output / "summary.json").read_text())
    assert summary["parameters"]["preprocess"]["activity_weight"] == 0.5
    assert calls, "the network's image was not brightened"


def test_evaluate_model_gives_no_process_figure_against_soma_only_truth(experiment_script) -> None:
    # ASTRA's D3 annotations hold somata only: a process F1 of 0 there would be a wrong figure, not a score
    module = experiment_script("evaluate_model")
    soma = np.zeros((40, 40), np.uint16)
    soma[5:12, 5:12] = 1
    processes = np.zeros_like(soma)
    processes[8, 12:20] = 1
    movie = {"name": "m", "size_recall": {"giant": [0, 0], "small": [0, 0]}}
    pooled = module._pool([movie], [(soma, processes)], [(soma, np.zeros_like(soma), np.zeros_like(soma))])
    assert pooled["detection_f1"] == 1.0
    assert pooled["process_f1"] is None and pooled["thin_process_f1"] is None and pooled["id_process_f1"] is None
    row = module._row("layout_d3", {"pooled": pooled, "movies": [movie], "seconds_per_movie": 1.0})
    assert "| – | – | – |" in row
    # with process truth the figures are there
    pooled = module._pool([movie], [(soma, processes)], [(soma, processes, processes)])
    assert pooled["process_f1"] == 1.0


def test_evaluate_model_names_the_family_it_scored_and_drops_fast_event_cells_by_default(
        experiment_script, tmp_path: Path) -> None:
    # the table's heading says which generator drew the movies (meta.json's family); the fast-event rule
    # follows astro3s-infer's default and --keep-fast-event-cells gives the figures before it
    import json

    module = experiment_script("evaluate_model")
    for family, name in (("crosscheck", "crosscheck_d1_0"), ("heldout", "heldout_d1_0")):
        folder = tmp_path / family / name
        folder.mkdir(parents=True)
        (folder / "meta.json").write_text(json.dumps({"family": family, "member": "d1"}))
        assert module.family_name(tmp_path / family) == family
    assert module.family_name(tmp_path / "empty") is None
    movie = {"name": "m", "size_recall": {"giant": [0, 0], "small": [0, 0]}}
    soma = np.zeros((20, 20), np.uint16)
    soma[5:10, 5:10] = 1
    entry = {"pooled": module._pool([movie], [(soma, soma * 0)], [(soma, soma * 0, soma * 0)]), "movies": [movie],
             "seconds_per_movie": 1.0}
    base = {"checkpoint": "default", "soma_scale": "auto", "heldout": {"d1": entry}}
    assert "Cross-check family" in module.markdown({**base, "heldout_family": "crosscheck"}, "cmd")
    assert "Cross-check family" not in module.markdown({**base, "heldout_family": "heldout"}, "cmd")
    assert "Held-out family" in module.markdown({**base, "heldout_family": "heldout"}, "cmd")
    parser_defaults = []
    original = module.evaluate
    try:
        module.evaluate = lambda *a, **k: parser_defaults.append(k["drop_fast_event_cells"]) or {
            **base, "heldout": {}, "sets": {}}
        module.main(["--sets"])
        module.main(["--sets", "--keep-fast-event-cells"])
        module.main(["--sets", "--drop-fast-event-cells"])
    finally:
        module.evaluate = original
    assert parser_defaults == [True, False, True]


def test_the_border_cut_cells_rule_runs_only_when_set(tiny_movie: Path, record_calls) -> None:
    from astro3s.inference import cells, load_inference_model
    from astro3s.io import read_movie
    from astro3s.preprocess import preprocess

    model, options = load_inference_model("default", device="cpu")
    pre = preprocess(read_movie(tiny_movie), options.preprocess, progress=False)
    calls = record_calls(cells, "add_border_cut_cells")
    _, off, _ = cells.segment_movie(pre, model, options)
    assert not options.rules.border_cut_cells and calls == [] and "border_cut_added" not in off.counts
    _, on, info = cells.segment_movie(pre, model, dataclasses.replace(options, rules={"border_cut_cells": True}))
    assert len(calls) == 1
    # the soma-size filter's lower end, halved (the edge cuts the soma)
    assert calls[0][1]["min_area"] == pytest.approx(0.5 * info["size_filter_range"][0])


def test_the_own_scale_faint_rule_runs_with_its_shape_exemption_unless_off(tiny_movie: Path, record_calls) -> None:
    from astro3s.inference import cells, load_inference_model
    from astro3s.io import read_movie
    from astro3s.preprocess import preprocess

    model, options = load_inference_model("default", device="cpu")
    pre = preprocess(read_movie(tiny_movie), options.preprocess, progress=False)
    calls = record_calls(cells, "drop_faint_cells")
    cells.segment_movie(pre, model, dataclasses.replace(options, rules={"faint_own_scale_contrast": 0}))
    assert [k.get("reference") for _, k in calls] == []
    cells.segment_movie(pre, model, options)
    assert [(k.get("reference"), k.get("min_relative_contrast"), k.get("keep_solidity"), k.get("keep_area_ratio"))
            for _, k in calls] == [("median", 0.3, 0.9, 0.7)]
