"""End-to-end speed and memory of astro3s-infer against the I/O limit and Suite2p (a benchmark; prints figures).

    python experiments/benchmarks/bench_pipeline.py                         # d1_like and d4_like
    python experiments/benchmarks/bench_pipeline.py --large DIR             # + the 4.6 GB `large` movie
    python experiments/benchmarks/bench_pipeline.py --suite2p-python /work/s2p-venv/bin/python

For each movie (simulated once, seed 0, into ``--work``; ``large`` into the
``--large`` folder, ~4 min the first time and reused after):

- **I/O limit**: one plain pass that reads the movie file and averages it
  (``Movie.chunks``, float32), best of ``--repeats``;
- **astro3s**: ``infer_movie`` (the whole method and every output file) in a
  fresh process per repeat, best of ``--repeats`` by total time. Wall time per
  stage comes from the run's ``summary.json``; peak RSS per stage from the
  kernel's high-water mark (``VmHWM``), reset at each stage boundary through
  ``/proc/self/clear_refs`` (a 10 ms RSS sampler where that is not allowed).
  Stages: open, preprocess, soma_scale, network, combine, correlation, write;
- **Suite2p** (with ``--suite2p-python``, a Python that has Suite2p; see
  experiments/README.md): its TIFF-to-binary copy, registration and ROI
  detection on the same file, in that Python (``_suite2p_runner.py``).

Model: ``--checkpoint`` (default: the bundled model). When the bundled model is
missing, an untrained network of the same architecture (U-Net, depth 4, 16
base channels) is used with a warning: network time does not depend on the
weights, but the cell count does, so the CC stage then gets the simulated
ground-truth cells (``--cells truth``) and costs what it costs with a trained
model. Timings on a shared machine move with its load: the table says which
figures are best of N.
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import json
import os
import platform
import resource
import subprocess
import sys
import tempfile
import threading
import time
import warnings
from pathlib import Path

HERE = Path(__file__).resolve().parent
STAGES = ("open", "preprocess", "soma_scale", "network", "combine", "correlation", "write")
GIB = 2**30


# --------------------------------------------------------------------------- memory of stages (child process)


def _status_kb(field: str) -> int | None:
    try:
        with open("/proc/self/status", encoding="ascii") as handle:
            for line in handle:
                if line.startswith(field + ":"):
                    return int(line.split()[1])
    except OSError:
        return None
    return None


def _reset_peak() -> bool:
    """Reset the kernel's peak-RSS counter (VmHWM) to the current RSS; False where not allowed."""
    try:
        with open("/proc/self/clear_refs", "w", encoding="ascii") as handle:
            handle.write("5")
        return True
    except OSError:
        return False


class StageMeter:
    """Wall time and peak RSS of the outermost stage running at each moment.

    Nested stages (the network pass inside the soma-scale fit) count for the
    outer one. Time outside any stage counts as ``other``.
    """

    def __init__(self, interval: float = 0.01):
        self.current = "other"
        self.depth = 0
        self.peak_kb: dict[str, int] = {}
        self.exact = _reset_peak()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, args=(interval,), daemon=True)
        self._thread.start()

    def _sample(self, interval: float) -> None:
        while not self._stop.wait(interval):
            rss = _status_kb("VmRSS") or 0
            stage = self.current
            self.peak_kb[stage] = max(self.peak_kb.get(stage, 0), rss)

    def _fold(self) -> None:
        if self.exact:
            hwm = _status_kb("VmHWM") or 0
            self.peak_kb[self.current] = max(self.peak_kb.get(self.current, 0), hwm)
            _reset_peak()

    @contextlib.contextmanager
    def stage(self, name: str):
        if self.depth:
            self.depth += 1
            try:
                yield
            finally:
                self.depth -= 1
            return
        self._fold()
        self.current, self.depth = name, 1
        try:
            yield
        finally:
            self._fold()
            self.current, self.depth = "other", 0

    def stop(self) -> dict[str, float]:
        self._fold()
        self._stop.set()
        self._thread.join()
        return {k: round(v * 1024 / GIB, 3) for k, v in self.peak_kb.items()}


def _instrument(meter: StageMeter) -> None:
    """Wrap the functions ``infer_movie`` calls so that each runs inside its stage."""
    import astro3s.correlation
    import astro3s.inference.outputs
    import astro3s.inference.pipeline
    import astro3s.inference.segment
    import astro3s.io
    import astro3s.postprocess
    import astro3s.preprocess

    def wrap(module, name: str, stage: str) -> None:
        original = getattr(module, name)

        @functools.wraps(original)
        def wrapped(*args, **kwargs):
            with meter.stage(stage):
                return original(*args, **kwargs)

        setattr(module, name, wrapped)

    wrap(astro3s.io, "read_movie", "open")
    wrap(astro3s.preprocess, "preprocess", "preprocess")
    wrap(astro3s.inference.segment, "adapt_soma_scale", "soma_scale")
    wrap(astro3s.inference.segment, "predict_crops_zoomed", "network")
    wrap(astro3s.inference.segment, "predict_fov", "network")
    wrap(astro3s.postprocess, "combine", "combine")
    wrap(astro3s.correlation, "correlation_analysis", "correlation")
    original_staging = astro3s.inference.outputs.staging_folder

    @contextlib.contextmanager
    def staging(*args, **kwargs):
        with meter.stage("write"), original_staging(*args, **kwargs) as folder:
            yield folder

    astro3s.inference.outputs.staging_folder = staging
    # the figures, summary.json and the commit come after the staging block (on the output thread in a batch)
    wrap(astro3s.inference.pipeline, "_finish_outputs", "write")


def _truth_cells(movie: Path) -> None:
    """Give the CC stage the simulated cells (after the network and combination ran as usual)."""
    import dataclasses

    import numpy as np
    from scipy import ndimage as ndi

    import astro3s.inference.segment as segment
    from astro3s.io import read_labels

    truth = movie.parent / "ground_truth"
    soma = read_labels(truth / "soma.tif")
    processes = read_labels(truth / "processes.tif")
    ids = np.unique(soma[soma > 0])
    lut = np.zeros(int(max(soma.max(), processes.max())) + 1, np.uint16)
    lut[ids] = np.arange(1, ids.size + 1)
    soma, processes = lut[soma], lut[processes]
    processes[soma > 0] = 0
    index = np.arange(1, ids.size + 1)
    soma_area = np.bincount(soma.ravel(), minlength=ids.size + 1)[1:].astype(np.int64)
    process_area = np.bincount(processes.ravel(), minlength=ids.size + 1)[1:].astype(np.int64)
    centroid = np.asarray(ndi.center_of_mass(soma > 0, soma, index), np.float64).reshape(-1, 2)
    original = segment.segment_preprocessed

    def with_truth(*args, **kwargs):
        seg = original(*args, **kwargs)
        return dataclasses.replace(seg, soma=soma, processes=processes, soma_area=soma_area,
                                   process_area=process_area, centroid=centroid)

    segment.segment_preprocessed = with_truth


def _child(args: argparse.Namespace) -> None:
    warnings.filterwarnings("ignore")
    import logging

    logging.basicConfig(level=logging.WARNING)
    from astro3s.inference import infer_movie, load_inference_model

    movie = Path(args.child)
    model, options = load_inference_model(args.checkpoint, device=args.device)
    if args.cells == "truth":
        _truth_cells(movie)
    baseline = (_status_kb("VmRSS") or 0) * 1024 / GIB
    meter = StageMeter()
    _instrument(meter)
    with tempfile.TemporaryDirectory(dir=args.out) as out:
        start = time.perf_counter()
        result = infer_movie(movie, out, model, options, overwrite=True, progress=False)
        wall = time.perf_counter() - start
        summary = json.loads((result.output / "summary.json").read_text())
    peaks = meter.stop()
    print(json.dumps({
        "shape": summary["shape"], "n_cells": summary["n_cells"], "wall_s": round(wall, 3),
        "timings_s": summary["timings_s"], "peak_rss_gb": peaks, "baseline_rss_gb": round(baseline, 3),
        # clear_refs also resets ru_maxrss, so the run's peak is the largest stage peak
        "max_rss_gb": max(peaks.values()) if meter.exact else round(
            resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20, 3),
        "peaks_exact": meter.exact, "cells": args.cells}))


# --------------------------------------------------------------------------- parent


def plain_pass(path: Path, repeats: int) -> float:
    """Best wall time of one read-and-mean pass over the movie file."""
    import numpy as np

    from astro3s.io import read_movie

    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        with read_movie(path) as movie:
            total = np.zeros(movie.shape[1:], np.float64)
            for _, block in movie.chunks(256):
                total += block.sum(axis=0)
            _ = total / movie.n_frames
        best = min(best, time.perf_counter() - start)
    return best


def run_astro3s(movie: Path, args: argparse.Namespace, checkpoint: Path | str, cells: str, repeats: int) -> dict:
    runs = []
    for _ in range(repeats):
        cmd = [sys.executable, __file__, "--child", str(movie), "--checkpoint", str(checkpoint), "--cells", cells,
               "--device", args.device, "--out", str(args.work)]
        done = subprocess.run(cmd, capture_output=True, text=True,
                              env={**os.environ, "WANDB_MODE": "disabled"})
        if done.returncode != 0:
            raise SystemExit(f"astro3s run on {movie} failed:\n{done.stderr[-3000:]}")
        runs.append(json.loads(done.stdout.strip().splitlines()[-1]))
    best = min(runs, key=lambda r: r["timings_s"]["total_s"])
    best["repeats"] = repeats
    best["median_total_s"] = sorted(r["timings_s"]["total_s"] for r in runs)[len(runs) // 2]
    best["max_rss_all_gb"] = max(r["max_rss_gb"] for r in runs)
    return best


def _infer_command(inputs: Path, out: Path, args: argparse.Namespace) -> list[str]:
    return [sys.executable, "-m", "astro3s.cli.infer", f"input={inputs}", f"out={out}", "overwrite=true",
            f"checkpoint={args.checkpoint}", f"device={args.device}", "hydra.run.dir=" + str(out / ".hydra-run"),
            "hydra.output_subdir=null"]


def whole_process(movie: Path, args: argparse.Namespace, repeats: int) -> dict:
    """Wall time of the whole ``astro3s-infer`` command on one movie (start-up, model, every output)."""
    times = []
    for _ in range(repeats):
        with tempfile.TemporaryDirectory(dir=args.work) as out:
            start = time.perf_counter()
            done = subprocess.run(_infer_command(movie, Path(out), args), capture_output=True, text=True,
                                  env={**os.environ, "WANDB_MODE": "disabled"})
            times.append(time.perf_counter() - start)
        if done.returncode != 0:
            raise SystemExit(f"astro3s-infer on {movie} failed:\n{done.stderr[-3000:]}")
    return {"best_s": min(times), "median_s": sorted(times)[len(times) // 2], "repeats": repeats}


def batch_folder(n_movies: int, args: argparse.Namespace) -> dict:
    """One ``astro3s-infer`` process over a folder of ``n_movies`` d1_like movies (seeds 0..n-1): the model
    is loaded once and the next file is read ahead while a movie is analysed."""
    from astro3s.simulate import simulate_preset, write_simulation

    folder = args.work / f"batch_d1_like_{n_movies}"
    inputs = folder / "movies"
    inputs.mkdir(parents=True, exist_ok=True)
    for seed in range(n_movies):
        target = inputs / f"d1_like_s{seed:04d}.tif"
        if not target.is_file():
            print(f"simulating d1_like seed {seed} for the batch ...", flush=True)
            with tempfile.TemporaryDirectory(dir=folder) as tmp:
                out = write_simulation(simulate_preset("d1_like", seed=seed), Path(tmp), overview=False)
                (out / f"{out.name}.tif").rename(target)
    with tempfile.TemporaryDirectory(dir=args.work) as out:
        start = time.perf_counter()
        done = subprocess.run(_infer_command(inputs, Path(out), args), capture_output=True, text=True,
                              env={**os.environ, "WANDB_MODE": "disabled"})
        wall = time.perf_counter() - start
    if done.returncode != 0:
        raise SystemExit(f"astro3s-infer on the batch folder failed:\n{done.stderr[-3000:]}")
    return {"n_movies": n_movies, "wall_s": wall, "per_movie_s": wall / n_movies}


def error_latency(args: argparse.Namespace, repeats: int = 3) -> float:
    """Seconds until ``astro3s-infer`` refuses a file that is not a movie (best of ``repeats``)."""
    bad = args.work / "not_a_movie.txt"
    bad.write_text("not a movie\n")
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        done = subprocess.run(_infer_command(bad, args.work / "bad_out", args), capture_output=True, text=True,
                              env={**os.environ, "WANDB_MODE": "disabled"})
        best = min(best, time.perf_counter() - start)
    if done.returncode != 2:
        print(f"WARNING: expected exit code 2 for a bad input, got {done.returncode}", file=sys.stderr)
    return best


def run_suite2p(movie: Path, args: argparse.Namespace, fs: float | None, *, no_registration: bool = False,
                ) -> dict | None:
    if not args.suite2p_python:
        return None
    runs = []
    for _ in range(args.suite2p_repeats):
        work = Path(tempfile.mkdtemp(prefix="s2p-", dir=args.work))
        cmd = [str(args.suite2p_python), str(HERE / "_suite2p_runner.py"), str(movie), str(work),
               "--fs", str(fs or 10.0), *(["--no-registration"] if no_registration else [])]
        done = subprocess.run(cmd, capture_output=True, text=True)
        if done.returncode != 0:
            print(f"Suite2p failed on {movie.name}:\n{done.stderr[-2000:]}", file=sys.stderr)
            return {"error": done.stderr.strip().splitlines()[-1] if done.stderr.strip() else "failed"}
        runs.append(json.loads(done.stdout.strip().splitlines()[-1]))
    best = min(runs, key=lambda r: r["detection_s"] or float("inf"))
    best["repeats"] = len(runs)
    return best


def simulate(preset: str, folder: Path) -> Path:
    from astro3s.simulate import simulate_preset, write_simulation

    target = folder / f"{preset}_s0000" / f"{preset}_s0000.tif"
    if target.is_file():
        return target
    start = time.perf_counter()
    print(f"simulating {preset} into {folder} ...", flush=True)
    out = write_simulation(simulate_preset(preset, seed=0), folder, overview=False)
    print(f"  {time.perf_counter() - start:.0f} s", flush=True)
    return out / f"{out.name}.tif"


def resolve_checkpoint(spec: str, work: Path) -> tuple[Path | str, str]:
    """The checkpoint to time, and how the CC stage gets its cells ("network" or "truth")."""
    from astro3s.errors import CheckpointError
    from astro3s.models.checkpoint import bundled_model_dir

    if spec != "default":
        return Path(spec), "network"
    try:
        bundled_model_dir("default")
        return "default", "network"
    except CheckpointError:
        pass
    print("WARNING: the bundled default model is missing; timing an untrained U-Net of the same "
          "architecture (depth 4, 16 base channels). The CC stage gets the simulated cells.", flush=True)
    import pytorch_lightning as pl
    import torch

    from astro3s.models import SegmentationModule, UNet
    from astro3s.preprocess import PreprocessParams, save_params

    folder = work / "random_unet"
    folder.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(0)
    module = SegmentationModule(net=UNet(depth=4, base_channels=16))
    trainer = pl.Trainer(logger=False, enable_checkpointing=False, enable_progress_bar=False,
                         enable_model_summary=False, max_epochs=0)
    trainer.strategy.connect(module)
    trainer.save_checkpoint(folder / "model.ckpt", weights_only=True)
    save_params(PreprocessParams(), folder / "preprocess.yaml")
    return folder / "model.ckpt", "truth"


def machine() -> str:
    cpu = platform.processor() or "cpu"
    try:
        with open("/proc/cpuinfo", encoding="ascii", errors="replace") as handle:
            cpu = next(line.split(":", 1)[1].strip() for line in handle if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    mem = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    import torch

    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "no GPU"
    return f"{len(os.sched_getaffinity(0))} cores of {cpu}, {mem:.0f} GiB RAM, {gpu}, torch {torch.__version__}"


def _fmt(value: float | None, unit: str = "", digits: int = 1) -> str:
    return "—" if value is None else f"{value:.{digits}f}{unit}"


def report(rows: list[dict]) -> str:
    lines = ["| movie (T×H×W, file) | I/O pass | astro3s pipeline | × I/O pass | astro3s whole process "
             "| astro3s peak RSS (GiB) | Suite2p detection | Suite2p copy + registration + detection "
             "| astro3s pipeline ÷ Suite2p detection | astro3s whole ÷ Suite2p whole |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        a, s = r["astro3s"], r.get("suite2p")
        total = a["timings_s"]["total_s"]
        whole = r.get("whole")
        whole_txt = "not run" if whole is None else f"{whole['best_s']:.1f} s (median {whole['median_s']:.1f})"
        whole_ratio = "—"
        if s is None:
            s_det = s_all = ratio = "not installed"
        elif "error" in s:
            s_det = s_all = ratio = f"failed ({s['error'][:60]})"
        else:
            s_det = f"{s['detection_s']:.1f} s ({s['n_rois']} ROIs)"
            s_total = (s["convert_s"] or 0) + (s["registration_s"] or 0) + s["detection_s"]
            s_all = "not run (detection only)" if s.get("registration_skipped") else f"{s_total:.1f} s"
            ratio = f"{total / s['detection_s']:.2f}"
            if whole is not None and not s.get("registration_skipped"):
                whole_ratio = f"{whole['best_s'] / s_total:.2f}"
        shape = "×".join(map(str, a["shape"]))
        lines.append(f"| {r['name']} ({shape}, {r['file_gb']:.2f} GB) | {r['io_s']:.2f} s | {total:.1f} s "
                     f"(best of {a['repeats']}, median {a['median_total_s']:.1f}) | {total / r['io_s']:.0f}× | "
                     f"{whole_txt} | {a['max_rss_all_gb']:.2f} | {s_det} | {s_all} | {ratio} | {whole_ratio} |")
    lines += ["", "Per stage: wall time / peak RSS (GiB) while the stage ran.", "",
              "| movie | " + " | ".join(STAGES) + " |", "|---|" + "---|" * len(STAGES)]
    for r in rows:
        a = r["astro3s"]
        cells = []
        for stage in STAGES:
            seconds = a["timings_s"].get(f"{stage}_s")
            peak = a["peak_rss_gb"].get(stage)
            cells.append(f"{_fmt(seconds, ' s', 2)} / {_fmt(peak, '', 2)}")
        lines.append(f"| {r['name']} ({a['n_cells']} cells found) | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--presets", nargs="*", default=["d1_like", "d4_like"])
    parser.add_argument("--large", type=Path, metavar="DIR",
                        help="also the `large` preset (4.6 GB), simulated into DIR once (~4 min) and reused")
    parser.add_argument("--checkpoint", default="default")
    parser.add_argument("--cells", choices=["auto", "network", "truth"], default="auto",
                        help="cells for the CC stage: the network's, or the simulated ones (auto: truth for an "
                             "untrained network)")
    parser.add_argument("--suite2p-python", type=Path, help="a Python with Suite2p installed")
    parser.add_argument("--repeats", type=int, default=3, help="astro3s runs and I/O passes per movie (best is kept)")
    parser.add_argument("--large-repeats", type=int, default=1)
    parser.add_argument("--suite2p-repeats", type=int, default=1)
    parser.add_argument("--suite2p-large-registration", action="store_true",
                        help="also register the large movie with Suite2p (hours on 2 cores; default: detection only)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--batch", type=int, default=10, metavar="N",
                        help="also one astro3s-infer process over a folder of N d1_like movies (0: skip)")
    parser.add_argument("--work", type=Path, default=Path(tempfile.gettempdir()) / "astro3s-bench-pipeline")
    parser.add_argument("--json", type=Path, help="also write the raw figures here")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--out", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        _child(args)
        return
    os.environ.setdefault("WANDB_MODE", "disabled")
    args.work.mkdir(parents=True, exist_ok=True)
    checkpoint, cells = resolve_checkpoint(args.checkpoint, args.work)
    if args.cells != "auto":
        cells = args.cells
    movies = [(p, simulate(p, args.work), args.repeats) for p in args.presets]
    if args.large:
        movies.append(("large", simulate("large", args.large), args.large_repeats))
    print(f"machine: {machine()}; load average {os.getloadavg()[0]:.1f}", flush=True)
    rows = []
    from astro3s.io import read_movie

    for name, path, repeats in movies:
        with read_movie(path) as movie:
            fs = movie.fs
        row = {"name": name, "file_gb": path.stat().st_size / 1e9}
        row["io_s"] = plain_pass(path, max(repeats, 2))
        print(f"{name}: I/O pass {row['io_s']:.2f} s", flush=True)
        row["astro3s"] = run_astro3s(path, args, checkpoint, cells, repeats)
        if cells == "network":
            row["whole"] = whole_process(path, args, repeats)
            print(f"{name}: astro3s-infer whole process {row['whole']['best_s']:.1f} s", flush=True)
        print(f"{name}: astro3s {row['astro3s']['timings_s']['total_s']:.1f} s, peak RSS "
              f"{row['astro3s']['max_rss_all_gb']:.2f} GiB", flush=True)
        skip_registration = name == "large" and not args.suite2p_large_registration
        row["suite2p"] = run_suite2p(path, args, fs, no_registration=skip_registration)
        if row["suite2p"]:
            print(f"{name}: Suite2p {json.dumps(row['suite2p'])}", flush=True)
        rows.append(row)
    extra = {"error_latency_s": error_latency(args)}
    if args.batch and cells == "network":
        extra["batch"] = batch_folder(args.batch, args)
    print()
    print(report(rows))
    print(f"\nA file that is not a movie: refused (exit code 2) after {extra['error_latency_s']:.2f} s "
          "(whole process, best of 3).")
    if "batch" in extra:
        b = extra["batch"]
        print(f"A folder of {b['n_movies']} d1_like movies in one astro3s-infer process: {b['wall_s']:.1f} s, "
              f"{b['per_movie_s']:.2f} s per movie (start-up and model load included).")
    print(f"\nmachine: {machine()}; cells for the CC stage: {cells}; peak RSS per stage "
          f"{'from VmHWM' if rows and rows[0]['astro3s']['peaks_exact'] else 'sampled every 10 ms'}; "
          f"load average at the end {os.getloadavg()[0]:.1f}")
    if args.json:
        args.json.write_text(json.dumps({"movies": rows, **extra}, indent=2))


if __name__ == "__main__":
    main()
