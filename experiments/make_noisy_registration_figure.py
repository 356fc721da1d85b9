"""Regenerate ``docs/images/noisy_registration.png``: motion correction of frames that noise hides.

    python experiments/make_noisy_registration_figure.py [--seed 0] [--noise 100 45] [--out PNG]

Simulates a D1-like movie (its motion is known: ``ground_truth/shifts.csv``),
adds Gaussian noise of each ``--noise`` SD (counts) to every frame, and
pre-processes it twice: frame by frame only (``register_noisy_frames=False``,
the method before 2026-12-06, tenth session) and with the check of
consecutive frames' shifts (``register_noisy_frames=True``: means of
consecutive frames registered when single frames are too noisy, isolated
frames thrown off by noise given their neighbours' median shift;
:mod:`astro3s.preprocess.streaming`). Each row shows the true and estimated
``dy`` over time and the corrected movie's mean image around a cell, for
both. The registration errors are printed.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np


def _errors(found: np.ndarray, truth: np.ndarray) -> np.ndarray:
    d = found - truth
    d -= np.median(d, axis=0)  # the reference's own position is arbitrary
    return np.hypot(*d.T)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--noise", type=float, nargs="+", default=[100.0, 45.0])
    parser.add_argument("--out", type=Path, default=Path("docs/images/noisy_registration.png"))
    args = parser.parse_args()

    import matplotlib

    matplotlib.use("Agg")
    from matplotlib.figure import Figure

    from _figures import simulated_movie

    from astro3s.correlation.figures import save_figure
    from astro3s.preprocess import PreprocessParams, preprocess

    simulated = simulated_movie("d1_like", args.seed)
    clean, truth = simulated.frames, simulated.shifts
    mean_clean = clean.mean(axis=0)
    box = simulated.brightest_soma_box(30)  # a crop around the brightest soma

    rng = np.random.default_rng(args.seed)
    params = PreprocessParams().replace(morphology_image="median", line_correction=False)
    fig = Figure(figsize=(13, 3.6 * len(args.noise)), dpi=100)
    rows = len(args.noise)
    for row, noise in enumerate(args.noise):  # one row per noise level
        movie = clean + rng.normal(scale=noise, size=clean.shape).astype(np.float32)
        before = preprocess(movie, params.replace(register_noisy_frames=False), progress=False)
        after = preprocess(movie, params, progress=False)
        bins = after.details.get("motion_bin_frames")
        repaired = after.details.get("motion_repaired_frames") or 0
        how = (f"means of {bins} frames registered" if bins and bins > 1 else
               "not corrected (too noisy)" if bins == 0 else
               f"{repaired} frame(s) given their neighbours' shift" if repaired else "frame by frame")
        e_before, e_after = _errors(before.shifts, truth), _errors(after.shifts, truth)
        print(f"noise SD {noise:g}: frame by frame median / max error {np.median(e_before):.2f} / "
              f"{e_before.max():.2f} px; now ({how}) {np.median(e_after):.2f} / {e_after.max():.2f} px")
        top = 1 - (row + 1) / rows
        height = 1 / rows
        ax = fig.add_axes((0.05, top + 0.14 * height, 0.45, 0.7 * height))
        offset = np.median(before.shifts[:, 0] - truth[:, 0]), np.median(after.shifts[:, 0] - truth[:, 0])
        ax.plot(before.shifts[:, 0] - offset[0], lw=0.6, color="#c62828", label="frame by frame")
        ax.plot(after.shifts[:, 0] - offset[1], lw=1.0, color="#1565c0", label=f"now: {how}")
        ax.plot(truth[:, 0], lw=1.0, color="black", ls="--", label="true motion")
        ax.set_xlabel("frame", fontsize=8)
        ax.set_ylabel("dy (px)", fontsize=8)
        ax.tick_params(labelsize=7)
        ax.legend(fontsize=7, loc="upper right", ncol=3, frameon=False)
        ax.set_title(f"noise SD {noise:g} counts per frame (the movie's median level ~{np.median(clean):.0f}): "
                     f"error {np.median(e_before):.2f} -> {np.median(e_after):.2f} px (median), "
                     f"{e_before.max():.1f} -> {e_after.max():.1f} px (largest)", fontsize=8, loc="left")
        panels = [(before.corrected.load()[:, box[0], box[1]].mean(axis=0), "mean, corrected frame by frame"),
                  (after.corrected.load()[:, box[0], box[1]].mean(axis=0), "mean, corrected now"),
                  (mean_clean[box], "the movie never moved or noised")]
        lo, hi = np.percentile(np.concatenate([p[0].ravel() for p in panels]), [1, 99.8])
        for k, (image, title) in enumerate(panels):
            ax = fig.add_axes((0.53 + k * 0.155, top + 0.08 * height, 0.145, 0.78 * height))
            ax.imshow(image, cmap="gray", vmin=lo, vmax=hi, interpolation="nearest")
            ax.set_title(title, fontsize=7.5)
            ax.set_axis_off()
        for result in (before, after):
            result.corrected.close()
    save_figure(fig, args.out, dpi=100)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
