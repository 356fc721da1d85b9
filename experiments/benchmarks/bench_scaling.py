"""How astro3s-infer's cost grows with movie length and field of view (a benchmark; prints figures).

    python experiments/benchmarks/bench_scaling.py            # T 500-10000 at 128², FOV 256-1024 px at T=200 (~6 min)
    python experiments/benchmarks/bench_scaling.py --quick    # fewer, smaller points (~2 min)
    python experiments/benchmarks/bench_scaling.py --full     # T up to 20000, FOV up to 2048 px (~40 min)
    python experiments/benchmarks/bench_scaling.py --long-wide  # the default grid + T = 10000 at 512² (~+12 min)

``--long-wide`` (also in ``--full``) adds a long movie of a D4-like field of
view, 10000 x 512 x 512 (5.2 GB of uint16, 24 cells at D1's density; its
corrected frames take 10.5 GB of temporary file): the point of issue 14,
whose target is a peak RSS of at most 1.5 GB at any length.

One ``d1_like`` movie (550 x 256 x 256, seed 0) is simulated once; every
point of the grid is cut from it by repeating it in time and tiling it in
space (cells and their ground truth repeat too, so the density of cells per
pixel stays that of D1). Each point runs the whole of ``infer_movie`` in a
fresh process (``bench_pipeline.py --child``): pre-processing time, total
time and peak RSS are printed as a table, and a log-log plot of time against
the number of voxels ``T*H*W`` with fitted slopes (1 = linear) is written to
``experiments/results/scaling.png``. One run per point on a shared 2-core
machine: single points move by +-30 %, the slopes much less.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
sys.path.insert(0, str(HERE))

GRIDS = {
    # (lengths at 128 x 128, FOV sides at 200 frames)
    "quick": ((500, 1000, 2000, 4000), (256, 512)),
    "default": ((500, 1000, 2000, 5000, 10000), (256, 512, 1024)),
    "full": ((500, 1000, 2000, 5000, 10000, 20000), (256, 512, 1024, 2048)),
}
SMALL_FOV = 128
SHORT_T = 200
LONG_WIDE = (10000, 512)  # (T, side) of --long-wide


def make_movie(base_dir: Path, out_root: Path, n_frames: int, side: int) -> Path:
    """A ``(n_frames, side, side)`` movie tiled from the base simulation, with tiled ground-truth labels."""
    import numpy as np

    from astro3s.io import read_labels, read_movie, write_labels, write_movie

    name = f"T{n_frames}_S{side}"
    folder = out_root / name
    target = folder / f"{name}.tif"
    if target.is_file():
        return target
    base_movie = base_dir / f"{base_dir.name}.tif"
    with read_movie(base_movie) as movie:
        base, fs = movie[:], movie.fs
    t0, h0, w0 = base.shape
    reps = (-(-side // h0), -(-side // w0))

    def blocks():
        for start in range(0, n_frames, 256):  # loop over blocks of frames; memory = one block
            index = np.arange(start, min(start + 256, n_frames)) % t0
            yield np.tile(base[index], (1, *reps))[:, :side, :side]

    write_movie(target, blocks(), shape=(n_frames, side, side), dtype=base.dtype, fs=fs)
    truth = base_dir / "ground_truth"
    soma, processes = read_labels(truth / "soma.tif"), read_labels(truth / "processes.tif")
    n_ids = int(max(soma.max(), processes.max()))
    offsets = (np.arange(reps[0] * reps[1]) * n_ids).reshape(reps)
    offset_map = np.kron(offsets, np.ones((h0, w0), np.int64))[:side, :side]
    for label, image in (("soma", soma), ("processes", processes)):
        tiled = np.tile(image.astype(np.int64), reps)[:side, :side]
        write_labels(folder / "ground_truth" / f"{label}.tif",
                     np.where(tiled > 0, tiled + offset_map, 0).astype(np.uint16))
    return target


def run_point(movie: Path, checkpoint: Path | str, cells: str, work: Path) -> dict:
    cmd = [sys.executable, str(HERE / "bench_pipeline.py"), "--child", str(movie), "--checkpoint", str(checkpoint),
           "--cells", cells, "--device", "cpu", "--out", str(work)]
    done = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, "WANDB_MODE": "disabled"})
    if done.returncode != 0:
        raise SystemExit(f"run on {movie} failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def fit_slope(x: list[float], y: list[float]) -> float:
    import numpy as np

    return float(np.polyfit(np.log(x), np.log(y), 1)[0]) if len(x) >= 2 else float("nan")


def plot(rows: list[dict], path: Path, slopes: dict[str, float]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    fig, (ax_t, ax_m) = plt.subplots(1, 2, figsize=(11, 4.5))
    for series, marker in (("length", "o"), ("fov", "s"), ("long-wide", "^")):
        sel = [r for r in rows if r["series"] == series]
        if not sel:
            continue
        vox = np.array([r["voxels"] for r in sel], float)
        label = {"length": f"T = {sel[0]['T']}…{sel[-1]['T']} at {SMALL_FOV}²",
                 "fov": f"FOV {sel[0]['side']}…{sel[-1]['side']} px at T = {SHORT_T}",
                 "long-wide": f"T = {LONG_WIDE[0]} at {LONG_WIDE[1]}²"}[series]
        ax_t.loglog(vox, [r["total_s"] for r in sel], marker, color="C0", label=f"total, {label}")
        ax_t.loglog(vox, [r["preprocess_s"] for r in sel], marker, color="C1", mfc="none",
                    label=f"pre-processing, {label}")
        ax_m.loglog(vox, [r["peak_rss_gib"] for r in sel], marker, color="C2", label=label)
    vox = np.array([r["voxels"] for r in rows], float)
    grid = np.geomspace(vox.min(), vox.max(), 20)
    for key, color in (("total", "C0"), ("preprocess", "C1")):
        values = np.array([r[f"{key}_s"] for r in rows], float)
        slope, intercept = np.polyfit(np.log(vox), np.log(values), 1)
        ax_t.loglog(grid, np.exp(intercept) * grid**slope, "-", color=color, lw=1,
                    label=f"fit {key}: slope {slopes[key]:.2f}")
    ax_t.set_xlabel("voxels T·H·W")
    ax_t.set_ylabel("wall time, s")
    ax_t.set_title("astro3s-infer time vs movie size")
    ax_t.legend(fontsize=7)
    ax_m.set_xlabel("voxels T·H·W")
    ax_m.set_ylabel("peak RSS, GiB")
    ax_m.set_title("peak memory vs movie size")
    ax_m.legend(fontsize=7, loc="lower right")
    for ax in (ax_t, ax_m):
        ax.grid(True, which="both", alpha=0.3)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    size = parser.add_mutually_exclusive_group()
    size.add_argument("--quick", action="store_true")
    size.add_argument("--full", action="store_true")
    parser.add_argument("--long-wide", action="store_true",
                        help=f"add T = {LONG_WIDE[0]} at {LONG_WIDE[1]}² (issue 14's memory point; on with --full)")
    parser.add_argument("--checkpoint", default="default")
    parser.add_argument("--cells", choices=["auto", "network", "truth"], default="auto",
                        help="cells for the CC stage: the network's, or the tiled simulated ones (auto: truth for an "
                             "untrained network); truth keeps the CC load at D1's density on every point")
    parser.add_argument("--work", type=Path, default=Path(tempfile.gettempdir()) / "astro3s-bench-scaling")
    parser.add_argument("--plot", type=Path, default=ROOT / "experiments" / "results" / "scaling.png")
    parser.add_argument("--json", type=Path, help="also write the raw figures here")
    args = parser.parse_args()
    os.environ.setdefault("WANDB_MODE", "disabled")
    from bench_pipeline import machine, resolve_checkpoint, simulate

    grid = "quick" if args.quick else "full" if args.full else "default"
    lengths, sides = GRIDS[grid]
    args.work.mkdir(parents=True, exist_ok=True)
    checkpoint, cells = resolve_checkpoint(args.checkpoint, args.work)
    if args.cells != "auto":
        cells = args.cells
    base = simulate("d1_like", args.work).parent
    points = [("length", t, SMALL_FOV) for t in lengths] + [("fov", SHORT_T, s) for s in sides]
    if args.long_wide or args.full:
        points.append(("long-wide", *LONG_WIDE))
    print(f"machine: {machine()}; grid {grid}; cells for the CC stage: {cells}", flush=True)
    print(f"{'series':<9} {'T':>6} {'H=W':>5} {'voxels':>10} {'cells':>5} {'preprocess s':>12} {'total s':>8} "
          f"{'µs/voxel':>8} {'peak RSS GiB':>12}", flush=True)
    rows = []
    start_all = time.perf_counter()
    for series, n_frames, side in points:
        movie = make_movie(base, args.work / "movies", n_frames, side)
        result = run_point(movie, checkpoint, cells, args.work)
        voxels = n_frames * side * side
        row = {"series": series, "T": n_frames, "side": side, "voxels": voxels, "n_cells": result["n_cells"],
               "preprocess_s": result["timings_s"]["preprocess_s"], "total_s": result["timings_s"]["total_s"],
               "peak_rss_gib": result["max_rss_gb"], "stages_s": result["timings_s"],
               "stage_peaks_gib": result["peak_rss_gb"]}
        rows.append(row)
        print(f"{series:<9} {n_frames:>6} {side:>5} {voxels:>10.3g} {row['n_cells']:>5} {row['preprocess_s']:>12.2f} "
              f"{row['total_s']:>8.2f} {1e6 * row['total_s'] / voxels:>8.3f} {row['peak_rss_gib']:>12.2f}",
              flush=True)
    vox = [r["voxels"] for r in rows]
    slopes = {"total": fit_slope(vox, [r["total_s"] for r in rows]),
              "preprocess": fit_slope(vox, [r["preprocess_s"] for r in rows])}
    for series in ("length", "fov"):
        sel = [r for r in rows if r["series"] == series]
        slopes[f"total_{series}"] = fit_slope([r["voxels"] for r in sel], [r["total_s"] for r in sel])
        slopes[f"memory_{series}"] = fit_slope([r["voxels"] for r in sel], [r["peak_rss_gib"] for r in sel])
    print(f"\nfitted log-log slopes of time vs T·H·W: total {slopes['total']:.2f} (length series "
          f"{slopes['total_length']:.2f}, FOV series {slopes['total_fov']:.2f}), pre-processing "
          f"{slopes['preprocess']:.2f}; peak RSS vs voxels: length series {slopes['memory_length']:.2f}, "
          f"FOV series {slopes['memory_fov']:.2f}; largest peak RSS {max(r['peak_rss_gib'] for r in rows):.2f} GiB")
    plot(rows, args.plot, slopes)
    print(f"plot: {args.plot}; {time.perf_counter() - start_all:.0f} s in all")
    if args.json:
        args.json.write_text(json.dumps({"rows": rows, "slopes": slopes, "grid": grid}, indent=2))


if __name__ == "__main__":
    main()
