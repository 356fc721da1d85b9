"""Regenerate the README picture, ``docs/images/example.png``.

    python experiments/make_readme_figure.py [--seed 0] [--out docs/images/example.png]

Simulates a D1-like movie (as the Quickstart does), pre-processes it, and draws
five panels: mean image with the ground-truth outlines, activity (max − median)
image, enhanced image, activity map, and the soma candidates found.
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import numpy as np


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=Path("docs/images/example.png"))
    args = parser.parse_args()

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from skimage.segmentation import find_boundaries

    from astro3s.io import atomic_path, read_movie
    from astro3s.preprocess import preprocess
    from astro3s.simulate import simulate_preset, write_simulation

    with tempfile.TemporaryDirectory() as tmp:
        folder = write_simulation(simulate_preset("d1_like", seed=args.seed), Path(tmp), overview=False)
        movie = read_movie(folder / f"{folder.name}.tif")
        frames = movie.load()
        result = preprocess(movie)
        from astro3s.io import read_labels

        soma = read_labels(folder / "ground_truth" / "soma.tif")
        processes = read_labels(folder / "ground_truth" / "processes.tif")

    def outline(ax, labels, colour):
        edges = find_boundaries(labels, mode="inner")
        overlay = np.zeros((*labels.shape, 4))
        overlay[edges] = (*matplotlib.colors.to_rgb(colour), 1.0)
        ax.imshow(overlay, interpolation="nearest")

    mean = frames.mean(axis=0)
    activity = frames.max(axis=0) - np.median(frames, axis=0)
    fig, axes = plt.subplots(1, 5, figsize=(17, 3.9), layout="constrained")
    panels = [
        (mean, "simulated movie (mean) + ground truth", "gray"),
        (activity, "max − median", "gray"),
        (result.enhanced, "enhanced image", "gray"),
        (result.activity_map, "activity map", "magma"),
        (result.enhanced, f"soma candidates ({result.n_candidates})", "gray"),
    ]
    for ax, (image, title, cmap) in zip(axes, panels):
        lo, hi = np.percentile(image, [1, 99.7])
        ax.imshow(image, cmap=cmap, vmin=lo, vmax=hi, interpolation="nearest")
        ax.set_title(title, fontsize=11)
        ax.set_axis_off()
    outline(axes[0], processes, "lime")
    outline(axes[0], soma, "red")
    outline(axes[4], result.candidates, "orange")
    with atomic_path(args.out) as tmp_png:
        fig.savefig(tmp_png, dpi=80, format="png")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
