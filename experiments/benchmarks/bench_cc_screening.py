"""How far the first level of the CC search's screening could be cut: three probes that print their figures.

    python experiments/benchmarks/bench_cc_screening.py                   # d1_like seed 5000
    python experiments/benchmarks/bench_cc_screening.py --preset d4_like --seed 5000

The first level of the screened search (``astro3s.correlation.domains``, module docstring)
is a product of every ROI pixel's low-pass spectrum, rotated to every even lag, with
every candidate's: on a D1 movie ~90 GFLOP, the largest single cost of ``astro3s-infer``
(issue 14's CC target, <= 0.4 s, asks for a third of the CC stage). It runs
``find_domains`` on a simulated FOV with its true cells as ROIs, keeps the
first-level operands of each cell's domain search, and prints:

1. **Band.** The fraction of candidates the first level leaves to the later steps
   ("live": their bound reaches the threshold) when its band keeps only the first
   ``m`` of its ``n_low`` frequencies (the dropped power moves into the bound's
   high-pass term, the bend term is recomputed): the product's cost is
   ``(2 m + 2) / (2 n_low + 2)`` of today's, each live candidate costs the exact
   step 2 and, for most, the second level (about three first-level products).
2. **Pivot bounds.** Rows grouped by k-means into ``K`` clusters bound the
   product of a whole cluster by ``<centre, c> + radius * |c|`` (Cauchy-Schwarz),
   a ``K``-row product instead of one over every row: the fraction of candidates
   that bound alone rejects, and the clusters' median radius.
3. **Arithmetic.** float32, bfloat16 and float16 matrix products of the
   first level's shape on this CPU (GFLOP/s; the search uses bfloat16 only
   where ``torch.ops.mkldnn._is_mkldnn_bf16_supported()`` says it is native).

Figures move with the machine's load only in part 3; parts 1-2 are counts.
"""

from __future__ import annotations

import argparse
import math
import time

import numpy as np


def capture_first_level(preset: str, seed: int) -> tuple[list[tuple], float, int]:
    """First-level operands ``(rows, columns)`` of each cell's domain search, the threshold and ``n_fft``."""
    from bench_correlation import simulated

    from astro3s.correlation import domains

    _, _, movie, soma, processes, _ = simulated(preset, seed)
    captured, thresholds = [], []
    first_level, screen_near = domains._first_level, domains._screen_near

    def keep_operands(rows_s, cand_s, precision, n_sampled):
        captured.append((rows_s.clone(), cand_s.clone()))
        return first_level(rows_s, cand_s, precision, n_sampled)

    def keep_threshold(*args, **kwargs):
        thresholds.append(kwargs["threshold"])
        return screen_near(*args, **kwargs)

    domains._first_level, domains._screen_near = keep_operands, keep_threshold
    try:
        dom = domains.find_domains(movie, soma, processes, precision="float32")
    finally:
        domains._first_level, domains._screen_near = first_level, screen_near
    n_cells = int(np.unique(soma[soma > 0]).size)
    # the last n_cells captures are the domain searches (the earlier ones: the threshold search's background)
    n_frames = movie.shape[0] - dom.smooth_frames + 1
    n_fft = domains._fft_size(n_frames + dom.max_lag)
    return captured[-n_cells:], float(thresholds[-1]), n_fft


def truncated(operands, m: int, n_low: int, n_fft: int):
    """First-level rows or columns ``[Re, Im, high, bend]`` with only the first ``m`` frequencies."""
    import torch

    re, im = operands[:, :n_low], operands[:, n_low:2 * n_low]
    high, dropped = operands[:, 2 * n_low], (re[:, m:] ** 2 + im[:, m:] ** 2).sum(dim=1)
    curvature = (1 - torch.cos(torch.arange(m, dtype=torch.float64) * 2 * math.pi / n_fft)).float()
    bend = ((re[:, :m] ** 2 + im[:, :m] ** 2) * curvature).sum(dim=1).sqrt()
    return torch.cat([re[:, :m], im[:, :m], (high ** 2 + dropped).sqrt()[:, None], bend[:, None]], dim=1)


def kmeans(rows, k: int, iterations: int = 8):
    """Centres, assignment and distance to the centre of ``rows`` (Lloyd's iterations, seeded)."""
    import torch

    gen = torch.Generator().manual_seed(0)
    centres = rows[torch.randperm(len(rows), generator=gen)[:k]].clone()
    for _ in range(iterations):  # a loop over a few iterations
        assign = torch.cdist(rows, centres).argmin(dim=1)
        sums = torch.zeros_like(centres).index_add_(0, assign, rows)
        counts = torch.bincount(assign, minlength=len(centres)).clamp(min=1)[:, None]
        centres = sums / counts
    dist = torch.cdist(rows, centres)
    assign = dist.argmin(dim=1)
    return centres, assign, dist.gather(1, assign[:, None]).squeeze(1)


def main() -> None:
    import torch

    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--preset", default="d1_like")
    parser.add_argument("--seed", type=int, default=5000)
    parser.add_argument("--clusters", type=int, nargs="+", default=[32, 128, 512])
    args = parser.parse_args()
    torch.set_num_threads(2)

    cells, threshold, n_fft = capture_first_level(args.preset, args.seed)
    n_low = (cells[0][0].shape[1] - 2) // 2
    rows_total = sum(len(r) for r, _ in cells)
    cand_total = sum(len(c) for _, c in cells)
    print(f"{args.preset} seed {args.seed}: {len(cells)} cells, {rows_total} first-level rows, {cand_total} "
          f"candidates, n_low {n_low} of n_fft {n_fft}, threshold {threshold:.2f}; first level "
          f"{2 * sum(len(r) * len(c) for r, c in cells) * (2 * n_low + 2) / 1e9:.0f} GFLOP")

    print("\n1. band (m of n_low frequencies): candidates left live by the first level")
    for m in sorted({n_low, int(0.8 * n_low), int(0.65 * n_low), n_low // 2}, reverse=True):
        live = sum(int(((truncated(c, m, n_low, n_fft) @ truncated(r, m, n_low, n_fft).T).amax(dim=1) + 1e-4
                        >= threshold).sum()) for r, c in cells)
        print(f"   m = {m:3d}: product {(2 * m + 2) / (2 * n_low + 2):.2f}x today's, live {live / cand_total:.3f}")

    print("\n2. pivot bounds (k-means clusters of the rows): candidates the cluster bound alone rejects")
    for k in args.clusters:
        rejected, radii = 0, []
        for rows, cand in cells:
            centres, assign, dist = kmeans(rows, min(k, len(rows)))
            radius = torch.zeros(len(centres)).scatter_reduce(0, assign, dist, "amax", include_self=True)
            bound = (cand @ centres.T + radius[None, :] * cand.norm(dim=1)[:, None]).amax(dim=1)
            rejected += int((bound + 1e-4 < threshold).sum())
            radii.append(float(radius.median()))
        print(f"   K = {k:4d}: rejected {rejected / cand_total:.3f}, median cluster radius {np.median(radii):.2f} "
              "(rows have norm <= ~1.4)")

    print("\n3. arithmetic of a first-level product on this CPU (2 threads)")
    rows, cand = cells[0]
    native = bool(getattr(torch.ops.mkldnn, "_is_mkldnn_bf16_supported", lambda: False)())
    for dtype in (torch.float32, torch.bfloat16, torch.float16):
        a, b = cand.to(dtype), rows.T.contiguous().to(dtype)
        a @ b  # warm-up
        start, n = time.perf_counter(), 0
        while time.perf_counter() - start < 1.0:  # repeat for about a second
            a @ b
            n += 1
        seconds = (time.perf_counter() - start) / n
        print(f"   {str(dtype):15s} {2 * a.shape[0] * a.shape[1] * b.shape[1] / seconds / 1e9:7.1f} GFLOP/s")
    print(f"   native bfloat16 here: {native} (the search then uses {'bfloat16' if native else 'float32'})")


if __name__ == "__main__":
    main()
