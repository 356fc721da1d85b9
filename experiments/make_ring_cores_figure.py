"""Regenerate ``docs/images/ring_cores.png``: membrane-labelled somata before and after their cores are filled.

    python experiments/make_ring_cores_figure.py [--family crosscheck] [--index 1] [--out docs/images/ring_cores.png]

Renders movie ``--index`` of the ``membrane`` member of the cross-check family
(:mod:`astro3s.crosscheck`: 3-D membrane shells through an optical section, the
harder case) or of the held-out family (:mod:`astro3s.heldout`: bright rims
around a dimmer core); indices 0-15 are development movies, not scored draws. It
shows the median image as the pre-processing reads it (baseline subtracted, clip
at 0), the fill before 2026-12-07's fifteenth session (the deep pixels raised to
the ring's lowest level, ``ring_core_fill="saddle"``, depth 0.2, no contrast
test), the fill now (:func:`astro3s.preprocess.ring_cores.fill_ring_cores` with
its defaults: each core's whole basin raised to its rim's median brightness; red:
the pixels raised), and the true somata's outlines on the filled image. The
number of cores filled and the share of their pixels inside true somata are
printed and written into the panels' titles.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--family", choices=("crosscheck", "heldout"), default="crosscheck")
    parser.add_argument("--index", type=int, default=1)
    parser.add_argument("--frames", type=int, default=120)
    parser.add_argument("--out", type=Path, default=Path("docs/images/ring_cores.png"))
    args = parser.parse_args()

    import matplotlib

    matplotlib.use("Agg")
    from matplotlib.figure import Figure
    from scipy import ndimage

    from _figures import image_row, write_figure
    from astro3s.preprocess import PreprocessParams, preprocess
    from astro3s.preprocess.ring_cores import fill_ring_cores

    if args.family == "crosscheck":
        from astro3s.crosscheck.write import render_member_movie
    else:
        from astro3s.heldout.write import render_member_movie
    movie, scene = render_member_movie("membrane", args.index, n_frames=args.frames)
    pre = preprocess(movie.astype(np.float32), PreprocessParams(fill_ring_cores=False), progress=False)
    median = pre.median_image
    truth = np.asarray(scene.soma) > 0

    def described(cores: np.ndarray) -> tuple[int, float]:
        return int(ndimage.label(cores)[1]), float(truth[cores].mean()) if cores.any() else 0.0

    before, before_cores = fill_ring_cores(median, min_depth=0.2, fill="saddle", min_rim_contrast=0.0)
    filled, cores = fill_ring_cores(median)
    count, inside = described(cores)
    count_before, inside_before = described(before_cores)
    print(f"before: {count_before} core(s), {int(before_cores.sum())} px, {100 * inside_before:.0f} % inside true "
          f"somata; now: {count} core(s), {int(cores.sum())} px, {100 * inside:.0f} % inside true somata")

    hi = float(np.percentile(median, 99.7))
    fig = Figure(figsize=(16.0, 4.6), dpi=100)
    panels = [(median, "median image as read"),
              (before, f"before: {count_before} cores, deep pixels to the ring's lowest level"),
              (filled, f"now: {count} cores, whole basin to the rim's median (red)"),
              (filled, "true somata (yellow)")]
    _, with_before, with_cores, with_truth = image_row(fig, panels, vmin=0, vmax=hi)
    for ax, raised in ((with_before, before_cores), (with_cores, cores)):
        if raised.any():
            ax.contour(raised, levels=[0.5], colors="red", linewidths=0.8)
    with_truth.contour(truth, levels=[0.5], colors="yellow", linewidths=0.8)
    fig.suptitle(f"Membrane-labelled somata (preprocess.fill_ring_cores): {args.family} `membrane_{args.index}`; "
                 f"{100 * inside:.0f} % of the pixels raised now inside true somata "
                 f"({100 * inside_before:.0f} % before)", fontsize=10)
    write_figure(fig, args.out, dpi=100)


if __name__ == "__main__":
    main()
