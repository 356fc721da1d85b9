"""Process width and process / soma area of ASTRA's consensus annotations, per cell and per polygon.

Both simulators draw their process ground truth at the width ASTRA's annotators
draw (``astro3s.simulate.morphology.annotator_process_width``,
``astro3s.heldout.morphology.annotator_width``). Width is area / skeleton
length (``astro3s.metrics.process_width``). The scores compare a
cell's processes taken together, so the width the simulators follow is
measured the same way: the union of a cell's process
polygons. Measured polygon by polygon the figure is ~1.4x larger, because a
short polygon's skeleton stops about half a width short of each end (that
per-polygon figure, 5.3 px on D1, is what both simulators followed before
2026-12-04).

    python experiments/measure_annotations.py [--annotations DIR]   # default: the copy shipped in astro3s

Prints, per dataset (D1, D2, D4; D3 is soma-only): cells, median soma area,
percentiles of the per-cell width, the per-polygon median width, the per-cell
process / soma area ratio, how far the processes reach beyond the soma's edge
(95th percentile of their pixels' distance, in soma radii), and the power law ``width = a * (soma_area / 223) ** b``
fitted through the per-dataset medians (one point per dataset, least squares
in log-log), which is the law the simulators use.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

#: dataset -> FOV shape of its annotations (D3 is soma-only and has no processes)
DATASETS = {"D1": (256, 256), "D2": (512, 512), "D4": (512, 512)}


def polygon_widths(path: Path, shape: tuple[int, int], *, min_px: int = 10) -> list[float]:
    """Width of every non-soma polygon of a RoiSet, each on its own."""
    import roifile
    from skimage.draw import polygon

    from astro3s.metrics import process_width

    out = []
    for roi in roifile.roiread(path):  # loop over ROIs
        coords = roi.coordinates()
        if roi.name.lower().startswith("soma") or coords is None or len(coords) < 3:
            continue
        mask = np.zeros(shape, bool)
        mask[polygon(coords[:, 1], coords[:, 0], shape)] = True
        if mask.sum() >= min_px:
            out.append(process_width(mask))
    return out


def dataset_figures(annotations: Path) -> dict[str, np.ndarray]:
    """Dataset -> per-cell figures (:func:`astro3s.metrics.cell_process_figures`) of every consensus RoiSet
    of D1, D2 and D4."""
    from astro3s.io.roi import read_roiset
    from astro3s.metrics import cell_process_figures

    return {name: np.concatenate([cell_process_figures(*read_roiset(f, shape))
                                  for f in sorted((annotations / "consensus" / name).glob("*.zip"))])
            for name, shape in DATASETS.items()}


def width_law(figures: dict[str, np.ndarray]) -> tuple[float, float]:
    """``(a, b)`` of ``width = a * (soma_area / 223) ** b`` through the per-dataset median soma area and width."""
    medians = np.log([[np.median(f[:, 0]), np.median(f[:, 1])] for f in figures.values()])
    slope, intercept = np.polyfit(medians[:, 0], medians[:, 1], 1)
    return float(np.exp(intercept + slope * np.log(223.0))), float(slope)


def main(argv: list[str] | None = None) -> int:
    from astro3s.resources import annotations_dir

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--annotations", type=Path, default=None,
                        help="astra_annotations folder (with consensus/D1 ...); default: the shipped copy")
    args = parser.parse_args(argv)
    annotations = args.annotations or annotations_dir()
    if not (annotations / "consensus").is_dir():
        parser.error(f"{annotations / 'consensus'} not found: pass --annotations with the folder that holds "
                     "consensus/D1 ...")
    figures = dataset_figures(annotations)
    print("| dataset | cells | soma area (median px) | width per cell: p10 / p25 / median / p75 / p90 (px) "
          "| width per polygon (median px) | process / soma area (median) "
          "| reach beyond the soma's edge (soma radii): p10 / p25 / median / p75 / p90 |")
    print("|---|---|---|---|---|---|---|")
    for name, shape in DATASETS.items():  # loop over datasets
        cells = figures[name]
        per_polygon = [w for f in sorted((annotations / "consensus" / name).glob("*.zip"))
                       for w in polygon_widths(f, shape)]
        pct = np.percentile(cells[:, 1], [10, 25, 50, 75, 90])
        print(f"| {name} | {len(cells)} | {np.median(cells[:, 0]):.0f} | "
              + " / ".join(f"{v:.1f}" for v in pct)
              + f" | {np.median(per_polygon):.1f} | {np.median(cells[:, 2]):.2f} | "
              + " / ".join(f"{v:.2f}" for v in np.percentile(cells[:, 3], [10, 25, 50, 75, 90])) + " |")
    a, b = width_law(figures)
    print(f"\nwidth = {a:.2f} * (soma_area / 223) ** {b:.3f} (through the per-dataset medians of the per-cell width)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
