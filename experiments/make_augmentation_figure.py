"""Regenerate ``docs/images/augmentations.png``: a training batch before and after augmentation.

    python experiments/make_augmentation_figure.py [--seed 0] [--out docs/images/augmentations.png]

Simulates a D1-like movie, pre-processes it, cuts its single-cell crop samples
(the network's training inputs and targets) and applies the training
augmentations of ``conf/data/shared/loader.yaml`` (``AugmentParams`` defaults,
ASTRA's set) with every probability raised to 0.6 so that each panel shows
several of them. Top rows: inputs and targets; bottom rows: augmented.
"""

from __future__ import annotations

import argparse
import dataclasses
import tempfile
from pathlib import Path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=Path("docs/images/augmentations.png"))
    args = parser.parse_args()

    import matplotlib

    matplotlib.use("Agg")
    import torch

    from astro3s.data.augment import Augmenter, AugmentParams, plot_augmentations
    from astro3s.data.samples import class_image, crop_samples
    from astro3s.io import read_labels, read_movie
    from astro3s.preprocess import preprocess
    from astro3s.simulate import simulate_preset, write_simulation

    with tempfile.TemporaryDirectory() as tmp:
        folder = write_simulation(simulate_preset("d1_like", seed=args.seed), Path(tmp), overview=False)
        pre = preprocess(read_movie(folder / f"{folder.name}.tif"), progress=False)
        classes = class_image(read_labels(folder / "ground_truth" / "soma.tif"),
                              read_labels(folder / "ground_truth" / "processes.tif"))
    samples = crop_samples(pre, classes)
    n = min(8, len(samples))
    batch = {"image": torch.from_numpy(samples.images[:n]), "target": torch.from_numpy(samples.targets[:n]).long()}
    params = AugmentParams()
    boosted = dataclasses.replace(params, **{f.name: 0.6 for f in dataclasses.fields(params)
                                             if f.name.startswith("p_")})
    after = Augmenter(boosted, seed=args.seed).batch(batch)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    plot_augmentations(batch, after, path=args.out, max_items=n)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
