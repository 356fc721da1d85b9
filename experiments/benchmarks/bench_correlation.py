"""Time the CC domain analysis on simulated FOVs (movie in memory, motion undone).

    python experiments/benchmarks/bench_correlation.py                    # d1_like seed 0
    python experiments/benchmarks/bench_correlation.py --preset tiny --seeds 0 1 2
    python experiments/benchmarks/bench_correlation.py --precision float32 bfloat16

For each movie prints: the time of ``find_domains`` (split into read/normalise,
threshold search and domain search), of ``extract_traces``, the number of
multiply-adds of the exhaustive correlation, the achieved GFLOP/s, the
threshold and false rate, and the mean per-cell IoU with the ground-truth
domains. Motion is undone with the simulator's true shifts (Fourier shift), so
the timing covers the CC analysis only. Timings depend on the load of the
machine; run it on an idle one.
"""

from __future__ import annotations

import argparse
import time

import numpy as np


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--preset", default="d1_like")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0])
    parser.add_argument("--precision", nargs="+", default=["auto"], help="auto, float32, bfloat16")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--repeats", type=int, default=1, help="runs per setting; the best is printed")
    args = parser.parse_args()

    import torch

    from astro3s.correlation import extract_traces, find_domains
    from astro3s.io import Movie
    from astro3s.preprocess import correct_frames
    from astro3s.simulate import simulate_preset

    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, "
          f"cuda={'yes' if torch.cuda.is_available() else 'no'}")
    head = (f"{'preset':<8} {'seed':>4} {'T x H x W':>15} {'cells':>5} {'precision':>9} {'domains s':>9} "
            f"{'(read':>6} {'thresh':>6} {'search)':>7} {'traces s':>8} {'GMAC':>6} {'GFLOP/s':>7} "
            f"{'thr':>5} {'rate':>6} {'IoU':>5}")
    print(head)
    for seed in args.seeds:
        sim = simulate_preset(args.preset, seed=seed)
        frames = correct_frames(np.asarray(sim.movie), sim.shifts)  # the true shifts: timing excludes motion
        movie = Movie.from_array(frames, fs=sim.fs)
        soma, processes, truth = sim.soma, sim.processes, sim.domains
        for precision in args.precision:
            best = None
            for _ in range(args.repeats):
                start = time.perf_counter()
                dom = find_domains(movie, soma, processes, precision=precision, device=args.device)
                elapsed = time.perf_counter() - start
                if best is None or elapsed < best[0]:
                    best = (elapsed, dom)
            elapsed, dom = best
            start = time.perf_counter()
            extract_traces(movie, soma, processes)
            t_traces = time.perf_counter() - start
            # multiply-adds of the exhaustive search: (2L+1) * ROI px * candidates * T' per cell
            n_frames = frames.shape[0] - dom.smooth_frames + 1
            roi = np.maximum(soma, processes)
            macs = sum((2 * dom.max_lag + 1) * int((roi == k).sum()) * int(np.isfinite(dom.cc[i]).sum()
                       - (roi == k).sum()) * n_frames for i, k in enumerate(dom.cell_ids))
            ious = [((dom.domains == k) & (truth == k)).sum() / max(((dom.domains == k) | (truth == k)).sum(), 1)
                    for k in dom.cell_ids]
            t = dom.timings_s
            rate = float("nan") if dom.false_rate is None else dom.false_rate
            print(f"{args.preset:<8} {seed:>4} {'x'.join(map(str, frames.shape)):>15} {len(dom.cell_ids):>5} "
                  f"{dom.precision:>9} {elapsed:>9.2f} {t['read_normalise']:>6.2f} {t['threshold']:>6.2f} "
                  f"{t['domains']:>7.2f} {t_traces:>8.2f} {macs / 1e9:>6.0f} "
                  f"{2 * macs / 1e9 / max(t['domains'], 1e-9):>7.0f} {dom.threshold:>5.2f} {rate:>6.3f} "
                  f"{np.mean(ious) if ious else float('nan'):>5.2f}")


if __name__ == "__main__":
    main()
