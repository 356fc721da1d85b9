"""Speed and memory of astro3s.preprocess (a benchmark, not a test; prints its figures).

    python experiments/benchmarks/bench_preprocess.py                 # d1_like speed
    python experiments/benchmarks/bench_preprocess.py --movie PATH    # speed on a movie file, read like inference
    python experiments/benchmarks/bench_preprocess.py --large PATH    # + peak RSS on a large movie file
    python experiments/benchmarks/bench_preprocess.py --simulate-large DIR   # simulate `large` first

Speed: a d1_like movie (550 x 256 x 256) is simulated, loaded into memory
(file reading excluded) and pre-processed ``--repeats`` times; the best and
median wall-clock times are printed next to one plain pass over the same data
(``movie.mean(0)``) and their ratio, with the CPU time of the best run, the
median system time and minor page faults per run (fresh memory touched: on
the development machine's virtual machine that costs up to ~8 ms per MB, so
it moves the wall time as much as the arithmetic does; a 2 MiB transparent
huge page counts as one fault) and the machine's load average (the machine may be shared:
compare medians of runs made back to back). ``--movie PATH`` times a movie file instead, opened lazily
for every run as the inference pipeline does (e.g. one made by
``astro3s-simulate simulate=d1_like out=/tmp/pp_d1 n_movies=1 seed=5000
overview=false``). Target: under 3 s on 2 CPU cores.

Memory: the large movie is pre-processed from its file in a subprocess, whose
peak RSS (``resource.getrusage(RUSAGE_SELF).ru_maxrss``) is printed. Target:
under 2 GB for the > 4 GB ``large`` preset.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path


def bench_speed(repeats: int, seed: int, path: Path | None = None) -> dict:
    import numpy as np

    from astro3s.io import read_movie
    from astro3s.preprocess import PreprocessParams, preprocess
    from astro3s.simulate import simulate_preset

    if path is None:
        movie = np.ascontiguousarray(simulate_preset("d1_like", seed=seed).movie)
    else:
        movie = read_movie(path)
    params = PreprocessParams()
    preprocess(movie[:64], params, progress=False)  # warm-up: imports, thread pools, first-touch memory
    times, cpu, system, touched, stages = [], [], [], [], []
    for _ in range(repeats):
        source = movie if path is None else read_movie(path)  # a file is opened anew, as inference does
        before = resource.getrusage(resource.RUSAGE_SELF)
        start, start_cpu = time.perf_counter(), time.process_time()
        result = preprocess(source, params, progress=False)
        times.append(time.perf_counter() - start)
        cpu.append(time.process_time() - start_cpu)
        after = resource.getrusage(resource.RUSAGE_SELF)
        system.append(after.ru_stime - before.ru_stime)
        # pages of fresh memory touched: 4 KiB pages, or 2 MiB transparent huge pages (NumPy asks for
        # them on large arrays) that count as one fault each
        touched.append(after.ru_minflt - before.ru_minflt)
        stages.append(result.details["timings"])
        n_candidates = result.n_candidates
        del result  # its corrected movie freed before the next run, as between movies
    plain = []
    for _ in range(max(repeats, 3)):
        start = time.perf_counter()
        np.asarray(movie[:]).mean(0)
        plain.append(time.perf_counter() - start)
    best = min(range(repeats), key=lambda i: times[i])
    return {
        "movie": str(path) if path else "d1_like (in memory)", "shape": list(movie.shape), "dtype": str(movie.dtype),
        "cores": len(os.sched_getaffinity(0)),
        "preprocess_best_s": round(times[best], 3), "preprocess_median_s": round(statistics.median(times), 3),
        "cpu_s_of_best": round(cpu[best], 3), "system_s_median": round(statistics.median(system), 3),
        "minor_page_faults_median": int(statistics.median(touched)), "plain_pass_best_s": round(min(plain), 4),
        "ratio_best": round(times[best] / min(plain), 1),
        "stages_of_best_s": {k: round(v, 3) for k, v in stages[best].items()},
        "candidates": int(n_candidates),
        "load_average": [round(x, 2) for x in os.getloadavg()],
    }


def _child(path: str, chunk_frames: int) -> None:
    # runs in a fresh process so that ru_maxrss is this pipeline's alone
    import resource

    from astro3s.io import read_movie
    from astro3s.preprocess import PreprocessParams, preprocess

    movie = read_movie(path)
    start = time.perf_counter()
    result = preprocess(movie, PreprocessParams(chunk_frames=chunk_frames), progress=False)
    elapsed = time.perf_counter() - start
    peak_kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    print(json.dumps({"movie": list(movie.shape), "file_gb": round(Path(path).stat().st_size / 1e9, 2),
                      "peak_rss_gb": round(peak_kb / 2**20, 3), "seconds": round(elapsed, 1),
                      "candidates": result.n_candidates, "details": {
                          k: v for k, v in result.details.items() if k != "timings"}}))


def bench_memory(path: Path, chunk_frames: int) -> dict:
    run = subprocess.run([sys.executable, __file__, "--child", str(path), "--chunk-frames", str(chunk_frames)],
                         capture_output=True, text=True)
    if run.returncode != 0:
        raise SystemExit(f"large-movie run failed:\n{run.stderr[-3000:]}")
    return json.loads(run.stdout.strip().splitlines()[-1])


def simulate_large(folder: Path) -> Path:
    from astro3s.simulate import simulate_preset, write_simulation

    sim = simulate_preset("large", seed=0)
    out = write_simulation(sim, folder, overview=False)
    return out / f"{out.name}.tif"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--movie", type=Path, help="time this movie file (read lazily, like inference)")
    parser.add_argument("--large", type=Path, help="a large movie file for the peak-RSS measurement")
    parser.add_argument("--simulate-large", type=Path, metavar="DIR",
                        help="simulate the `large` preset into DIR and measure it")
    parser.add_argument("--chunk-frames", type=int, default=64)
    parser.add_argument("--skip-speed", action="store_true")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        _child(args.child, args.chunk_frames)
        return
    if not args.skip_speed:
        print(json.dumps({"speed": bench_speed(args.repeats, args.seed, args.movie)}, indent=2))
    large = args.large
    if args.simulate_large:
        large = simulate_large(args.simulate_large)
    if large:
        print(json.dumps({"large": bench_memory(large, args.chunk_frames)}, indent=2))


if __name__ == "__main__":
    main()
