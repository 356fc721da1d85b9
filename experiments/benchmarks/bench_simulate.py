"""Time the simulator per preset.

    python experiments/benchmarks/bench_simulate.py            # tiny, d1_like, d4_like
    python experiments/benchmarks/bench_simulate.py --large    # also the 4.6 GB streamed movie

Prints seconds to simulate (scene + ground truth + render) and to write, and the
peak resident memory of the process so far.
"""

from __future__ import annotations

import argparse
import resource
import tempfile
import time


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--presets", nargs="+", default=["tiny", "d1_like", "d4_like"])
    parser.add_argument("--seeds", type=int, default=2, help="movies per preset")
    parser.add_argument("--large", action="store_true", help="also write one `large` movie (4.6 GB)")
    parser.add_argument("--write", action="store_true", help="also time writing (tif, ground truth, overview)")
    args = parser.parse_args()

    from astro3s.simulate import simulate_preset, write_simulation

    presets = list(args.presets) + (["large"] if args.large else [])
    print(f"{'preset':<10} {'seed':>4} {'T x H x W':>18} {'simulate s':>10} {'write s':>8} {'peak RSS GB':>11}")
    with tempfile.TemporaryDirectory() as tmp:
        for preset in presets:
            for seed in range(1 if preset == "large" else args.seeds):
                start = time.perf_counter()
                sim = simulate_preset(preset, seed=seed)
                t_sim = time.perf_counter() - start
                t_write = float("nan")
                if args.write or preset == "large":
                    start = time.perf_counter()
                    write_simulation(sim, tmp, overview=preset != "large")
                    t_write = time.perf_counter() - start
                rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
                shape = "x".join(map(str, sim.shape))
                print(f"{preset:<10} {seed:>4} {shape:>18} {t_sim:>10.2f} {t_write:>8.1f} {rss:>11.2f}", flush=True)


if __name__ == "__main__":
    main()
