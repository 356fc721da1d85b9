"""Time the CC domain analysis on simulated FOVs and check it against the exhaustive search.

    python experiments/benchmarks/bench_correlation.py                    # d1_like seed 0, best of 5
    python experiments/benchmarks/bench_correlation.py --preset tiny --seeds 0 1 2
    python experiments/benchmarks/bench_correlation.py --precision float32 bfloat16
    python experiments/benchmarks/bench_correlation.py --reference        # + the float64 NumPy reference (slow)
    python experiments/benchmarks/bench_correlation.py --movie /tmp/cc_d1/d1_like_s5000   # a simulated folder
        (made by: astro3s-simulate simulate=d1_like out=/tmp/cc_d1 n_movies=1 seed=5000 overview=false)

For each movie, ``find_domains`` runs with the defaults (the screened search;
exhaustive for FOVs too small for screening to pay) and with ``exact_cc=True``
(the exhaustive search: every candidate's CC value from the full product, the
algorithm of the previous implementation), ``--repeats`` times each. Printed
per run: the best and the median time, split for the best run into reading and
normalising the traces (with their spectra when screened), threshold search
and domain search; the threshold and false rate; the mean per-cell IoU with
the simulated ground-truth domains. Then ``correlation_analysis`` (what the
inference pipeline calls: the domains and the ROI traces in one pass), with
the median of its steps (``Domains.timings_s``). Then per movie: the speed-up, and the
agreement of the default run with the exhaustive one (mean per-cell domain
IoU, pixels that differ, same threshold, CC-map tolerance), and with
``--reference`` with a literal float64 NumPy implementation of the definition
at the same threshold. Motion is undone with the simulator's true shifts
(Fourier shift), so the timing covers the CC analysis only. Timings depend on
the load of the machine (printed, with the cores other processes leave idle:
the search uses a second thread only on an idle core): run it on an idle one,
and compare best times.
"""

from __future__ import annotations

import argparse
import os
import statistics
import time

import numpy as np


def idle_cores_now() -> str:
    """The cores the search may use for its large products now (other processes hold the rest; see
    ``astro3s.correlation._common.idle_cores``), as text; the timings depend on it."""
    try:
        from astro3s.correlation._common import idle_cores
    except ImportError:  # an astro3s from before the check
        return "idle cores not checked"
    return f"{idle_cores()} idle now"


def mean_iou(a: np.ndarray, b: np.ndarray, ids: np.ndarray) -> float:
    """Mean over ``ids`` of the IoU of label ``id`` in ``a`` and in ``b``."""
    return float(np.mean([((a == k) & (b == k)).sum() / max(((a == k) | (b == k)).sum(), 1) for k in ids]))


def reference_domains(movie: np.ndarray, soma: np.ndarray, processes: np.ndarray, *, radius: float,
                      max_lag: int, smooth_frames: int, threshold: float, detrend: bool = True) -> np.ndarray:
    """Literal float64 NumPy domains of the definition (module docstring of astro3s.correlation.domains)."""
    from astro3s.correlation import cell_centroids, slow_trend

    n_frames, height, width = movie.shape
    x = movie.reshape(n_frames, -1).astype(np.float64)
    csum = np.cumsum(np.vstack([np.zeros((1, x.shape[1])), x]), axis=0)
    smooth = (csum[smooth_frames:] - csum[:-smooth_frames]) / smooth_frames
    smooth = smooth - smooth.mean(axis=0)
    n = smooth.shape[0]
    trend = slow_trend(x.mean(axis=1), smooth_frames=smooth_frames) if detrend else None
    if trend is not None:  # each trace less its component along the FOV's slow trend (photobleaching)
        smooth = smooth - np.outer(trend, trend.astype(np.float64) @ smooth)
    std = smooth.std(axis=0)
    z = np.where(std > 0, smooth / np.where(std > 0, std, 1), 0.0)
    roi = np.maximum(soma, processes)
    ids = np.unique(roi[roi > 0])
    yy, xx = np.mgrid[0:height, 0:width]
    cc = np.full((len(ids), height * width), -np.inf)
    for i, (cy, cx) in enumerate(cell_centroids(soma, processes, ids)):  # a loop over cells
        cand = np.flatnonzero(((np.hypot(yy - cy, xx - cx) <= radius) & (roi == 0)).ravel())
        r, c = z[:, (roi == ids[i]).ravel()], z[:, cand]
        best = np.full(len(cand), -np.inf)
        for lag in range(-max_lag, max_lag + 1):  # corr_l = 1/T' sum_t r(t + lag) c(t)
            g = (r[lag:].T @ c[:n - lag] if lag >= 0 else r[:n + lag].T @ c[-lag:]) / n
            best = np.maximum(best, g.max(axis=0))
        cc[i, cand] = best
    accepted = cc >= threshold
    labels = np.where(accepted.any(axis=0), ids[np.argmax(np.where(accepted, cc, -np.inf), axis=0)], 0)
    return np.where(roi > 0, roi, labels.reshape(height, width)).astype(np.uint16)


def simulated(preset: str, seed: int) -> tuple:
    """``(name, seed, movie, soma, processes, truth)`` of a simulated FOV, motion undone with the true shifts
    (so that the timing excludes motion), as the pipeline's cached CorrectedMovie."""
    from astro3s.io import Movie
    from astro3s.preprocess import CorrectedMovie, correct_frames
    from astro3s.simulate import simulate_preset

    sim = simulate_preset(preset, seed=seed)
    raw = np.asarray(sim.movie)
    movie = CorrectedMovie(Movie.from_array(raw, fs=sim.fs), sim.shifts, cache=correct_frames(raw, sim.shifts))
    return preset, seed, movie, sim.soma, sim.processes, sim.domains


def load_folder(folder: str) -> tuple:
    """:func:`simulated` of a folder written by ``astro3s-simulate``."""
    from pathlib import Path

    from astro3s.io import read_labels, read_movie
    from astro3s.preprocess import CorrectedMovie

    path = Path(folder)
    raw = read_movie(path / f"{path.name}.tif")
    shifts = np.loadtxt(path / "ground_truth" / "shifts.csv", delimiter=",", skiprows=1)[:, 1:]
    movie = CorrectedMovie(raw, shifts)
    movie = CorrectedMovie(raw, shifts, cache=movie.load())
    labels = {k: read_labels(path / "ground_truth" / f"{k}.tif") for k in ("soma", "processes", "domains")}
    return path.name[:8], 0, movie, labels["soma"], labels["processes"], labels["domains"]


def analysis_timing(movie: object, soma: np.ndarray, processes: np.ndarray, repeats: int) -> None:
    """Print the median time of ``correlation_analysis`` (the pipeline's CC stage) and of its steps."""
    from astro3s.correlation import correlation_analysis

    times, steps = [], {}
    for _ in range(repeats):
        start = time.perf_counter()
        _, dom = correlation_analysis(movie, soma, processes)
        times.append(time.perf_counter() - start)
        for key, value in dom.timings_s.items():
            steps.setdefault(key, []).append(value)
    print(f"  correlation_analysis: median {statistics.median(times):.3f} s, best {min(times):.3f} s of {repeats}; "
          "steps (median): " + ", ".join(f"{k} {statistics.median(v):.3f}" for k, v in steps.items()))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--preset", default="d1_like")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0])
    parser.add_argument("--movie", nargs="+", default=[], help="simulated folders (astro3s-simulate) instead of "
                        "--preset / --seeds")
    parser.add_argument("--precision", nargs="+", default=["auto"], help="auto, float32, bfloat16")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--repeats", type=int, default=5, help="runs per setting; best and median are printed")
    parser.add_argument("--reference", action="store_true", help="also compare with the float64 NumPy reference")
    args = parser.parse_args()

    import logging

    import torch

    from astro3s.correlation import extract_traces, find_domains

    logging.getLogger("astro3s.correlation").setLevel(logging.ERROR)  # the clamped-threshold warning
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads ({idle_cores_now()}), "
          f"cuda={'yes' if torch.cuda.is_available() else 'no'}; best of {args.repeats} (median); "
          f"load average {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    head = (f"{'preset':<8} {'seed':>4} {'T x H x W':>13} {'cells':>5} {'run':>8} {'search':>10} {'precision':>9} "
            f"{'find_domains s':>16} {'(read':>6} {'thresh':>6} {'search)':>7} {'traces s':>8} {'GMAC':>5} "
            f"{'thr':>5} {'rate':>6} {'IoU gt':>6}")
    print(head)
    inputs = ([load_folder(folder) for folder in args.movie] if args.movie
              else [simulated(args.preset, seed) for seed in args.seeds])
    for name, seed, movie, soma, processes, truth in inputs:
        frames = np.asarray(movie.cache)
        start = time.perf_counter()
        extract_traces(movie, soma, processes)
        t_traces = time.perf_counter() - start
        for precision in args.precision:
            runs = {}
            for run, exact_cc in (("default", False), ("exact_cc", True)):
                times, best = [], None
                for _ in range(args.repeats):
                    start = time.perf_counter()
                    dom = find_domains(movie, soma, processes, precision=precision, device=args.device,
                                       exact_cc=exact_cc)
                    times.append(time.perf_counter() - start)
                    if best is None or times[-1] < best[0]:
                        best = (times[-1], dom)
                runs[run] = (min(times), statistics.median(times), best[1])
                _, _, dom = runs[run]
                t = dom.timings_s
                # multiply-adds of the exhaustive search: (2L+1) * ROI px * candidates * T' per cell
                n_smooth = frames.shape[0] - dom.smooth_frames + 1
                roi = np.maximum(soma, processes)
                macs = sum((2 * dom.max_lag + 1) * int((roi == k).sum()) * int(np.isfinite(dom.cc[i]).sum()
                           - (roi == k).sum()) * n_smooth for i, k in enumerate(dom.cell_ids))
                rate = float("nan") if dom.false_rate is None else dom.false_rate
                timing = f"{runs[run][0]:.2f} ({runs[run][1]:.2f})"
                search = "exhaustive" if dom.exact_cc else "screened"  # small FOVs: exhaustive anyway
                read = t["read_normalise"] + t.get("screen_setup", 0.0)
                print(f"{name:<8} {seed:>4} {'x'.join(map(str, frames.shape)):>13} {len(dom.cell_ids):>5} "
                      f"{run:>8} {search:>10} {dom.precision:>9} {timing:>16} {read:>6.2f} "
                      f"{t['threshold']:>6.2f} {t['domains']:>7.2f} {t_traces:>8.2f} {macs / 1e9:>5.0f} "
                      f"{dom.threshold:>5.2f} {rate:>6.3f} {mean_iou(dom.domains, truth, dom.cell_ids):>6.3f}")
            if precision == args.precision[0]:
                analysis_timing(movie, soma, processes, args.repeats)
            fast, slow = runs["default"][2], runs["exact_cc"][2]
            print(f"  default vs exhaustive: speed-up {runs['exact_cc'][0] / runs['default'][0]:.2f}x "
                  f"(best times), domain IoU {mean_iou(fast.domains, slow.domains, fast.cell_ids):.4f} "
                  f"(mean over cells), {int((fast.domains != slow.domains).sum())} px differ, "
                  f"same threshold: {'yes' if fast.threshold == slow.threshold else 'NO'}, "
                  f"CC-map tolerance {fast.cc_tolerance:.3f}")
            if args.reference:
                start = time.perf_counter()
                ref = reference_domains(frames, soma, processes, radius=fast.radius, max_lag=fast.max_lag,
                                        smooth_frames=fast.smooth_frames, threshold=fast.threshold)
                print(f"  default vs float64 reference ({time.perf_counter() - start:.0f} s): domain IoU "
                      f"{mean_iou(fast.domains, ref, fast.cell_ids):.4f}, "
                      f"{int((fast.domains != ref).sum())} px differ")


if __name__ == "__main__":
    main()
