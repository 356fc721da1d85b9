"""Regenerate ``docs/images/ring_cores.png``: membrane-labelled somata before and after their cores are filled.

    python experiments/make_ring_cores_figure.py [--index 0] [--out docs/images/ring_cores.png]

Renders movie ``--index`` of the held-out family's ``membrane`` member
(:mod:`astro3s.heldout`: somata as bright rims around a dimmer core, bright fine
territory; index 0 is a development movie, not one of the scored draws) and shows its median
image as the pre-processing reads it (baseline subtracted, clip at 0), the same
image with the dim cores that bright closed rims enclose raised to the rims'
level (:func:`astro3s.preprocess.ring_cores.fill_ring_cores`, red: the pixels
raised), and the true somata's outlines on it. The number of cores filled and
the share of their pixels inside true somata are printed and written into the
figure's title.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--index", type=int, default=0)
    parser.add_argument("--frames", type=int, default=120)
    parser.add_argument("--out", type=Path, default=Path("docs/images/ring_cores.png"))
    args = parser.parse_args()

    import matplotlib

    matplotlib.use("Agg")
    from matplotlib.figure import Figure
    from scipy import ndimage

    from _figures import image_row, write_figure

    from astro3s.heldout.write import render_member_movie
    from astro3s.preprocess import PreprocessParams, preprocess
    from astro3s.preprocess.ring_cores import fill_ring_cores

    movie, scene = render_member_movie("membrane", args.index, n_frames=args.frames)
    pre = preprocess(movie.astype(np.float32), PreprocessParams(fill_ring_cores=False), progress=False)
    median = pre.median_image
    filled, cores = fill_ring_cores(median)
    count = int(ndimage.label(cores)[1])
    inside = float((scene.soma[cores] > 0).mean()) if cores.any() else 0.0
    print(f"{count} core(s) filled, {int(cores.sum())} px, {100 * inside:.0f} % of them inside true somata")

    hi = float(np.percentile(median, 99.7))
    fig = Figure(figsize=(12.0, 4.4), dpi=100)
    panels = [(median, "median image as read"), (filled, f"cores filled (red): {count}"),
              (filled, "true somata (yellow)")]
    _, with_cores, with_truth = image_row(fig, panels, vmin=0, vmax=hi)
    if cores.any():
        with_cores.contour(cores, levels=[0.5], colors="red", linewidths=0.8)
    with_truth.contour(scene.soma > 0, levels=[0.5], colors="yellow", linewidths=0.8)
    fig.suptitle(f"Membrane-labelled somata (preprocess.fill_ring_cores): held-out `membrane_{args.index}`; "
                 f"{100 * inside:.0f} % of the filled pixels inside true somata", fontsize=10)
    write_figure(fig, args.out, dpi=100)


if __name__ == "__main__":
    main()
