"""Fit the pre-processing parameters on simulated stand-ins of ASTRA's D1-D4 FOVs.

For each dataset, a few consensus annotations (``shared/data/astra_annotations/
consensus/D*/RoiSet_*.zip``) are turned into simulated movies with those cells
(``astro3s.simulate.simulate_preset(..., layout=zip)``), and
:func:`astro3s.preprocess.fit_parameters` estimates the soma area range, the
activity percentile, the recall-extension threshold and th1/th2 from the
simulated ground truth. The results are written to
``conf/preprocess/d{1..4}_standin.yaml``.

    python experiments/fit_standin_params.py                       # 3 FOVs per dataset, 250 frames
    python experiments/fit_standin_params.py --fovs 6 --frames 550 --datasets D1 D4

Runtime with the defaults: a few minutes on 2 CPU cores.
"""

from __future__ import annotations

import argparse
import logging
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DATASETS = {  # preset, FOV shape (README of the annotations)
    "D1": ("d1_like", (256, 256)),
    "D2": ("d2_like", (512, 512)),
    "D3": ("d3_like", (430, 430)),
    "D4": ("d4_like", (512, 512)),
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--annotations", type=Path,
                        default=None, help="consensus folder (default: the annotations shipped with astro3s)")
    parser.add_argument("--datasets", nargs="+", default=list(DATASETS))
    parser.add_argument("--fovs", type=int, default=3, help="annotated FOVs per dataset")
    parser.add_argument("--frames", type=int, default=250, help="frames per simulated movie")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=ROOT / "conf" / "preprocess")
    args = parser.parse_args()
    if args.annotations is None:
        from astro3s.resources import annotations_dir

        args.annotations = annotations_dir() / "consensus"
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")

    from astro3s.preprocess import PreprocessParams, fit_parameters, save_params
    from astro3s.simulate import simulate_preset

    for name in args.datasets:
        preset, shape = DATASETS[name]
        zips = sorted((args.annotations / name).glob("*.zip"))[: args.fovs]
        if not zips:
            raise SystemExit(f"no RoiSet zips in {args.annotations / name}")
        start = time.perf_counter()
        movies, truths = [], []
        for i, path in enumerate(zips):  # loop over FOVs
            sim = simulate_preset(preset, seed=args.seed + i, layout=path, shape=shape,
                                  n_frames=(args.frames, args.frames))
            movies.append(sim.movie)
            truths.append((sim.soma, sim.processes))
        params = fit_parameters(movies, truths, base=PreprocessParams(), progress=False)
        note = (f"{name} stand-ins: {params.note}; simulated with {preset} on "
                f"{', '.join(p.name for p in zips)}, {args.frames} frames "
                f"(experiments/fit_standin_params.py --fovs {args.fovs} --frames {args.frames})")
        path = save_params(params.replace(note=note), args.out / f"{name.lower()}_standin.yaml")
        print(f"{name}: {path} in {time.perf_counter() - start:.0f} s: area {params.soma_area_range}, "
              f"percentile {params.activity_percentile}, extension {params.extension_threshold}, "
              f"th1/th2 {params.th1}/{params.th2}")


if __name__ == "__main__":
    main()
