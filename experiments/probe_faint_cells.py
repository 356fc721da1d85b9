"""Cells whose soma barely stands out at a FOV's own scale: how many are true, and what shape they have.

The measurement behind ``rules.faint_own_scale_contrast`` with its shape exemption (``rules.faint_soma_solidity``,
``rules.faint_soma_area``; :func:`astro3s.inference.cells.drop_faint_cells`, 2026-12-07, eighteenth session).
Reads the segmentations ``evaluate_model.py --save-segmentations DIR`` wrote (one ``.npz`` per movie: the final
cells, the truth, the median image) and, next to each folder, the report that run wrote (``--out X.md`` also
writes ``X.json``: the bin factor of each movie, so that binned FOVs, which the rule does not touch, are left out).
For every cell of a FOV at its own scale it records its soma's contrast over the FOV's median soma
(:func:`astro3s.postprocess.sharpness.soma_edges`), its solidity, its area over the FOV's median soma area and
whether it matches a true soma (IoU >= 0.5), then prints, for each setting of a small grid, the false and true
cells the rule would remove::

    python experiments/evaluate_model.py --sets --heldout data/cc104 --save-segmentations /tmp/segs_cc104 \\
        --out /tmp/cc104.md
    python experiments/probe_faint_cells.py /tmp/segs_cc104=/tmp/cc104.json --out faint_cells.json
"""

from __future__ import annotations

import itertools
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))  # compare_reports, _probes, beside this script
from _probes import grid_table, segmentation_sets_main, set_table  # noqa: E402  (the experiments folder on the path first)

#: the grid printed: relative contrast under which a cell is faint, and the shape that exempts it (0: none)
CONTRASTS = (0.25, 0.3, 0.35)
SOLIDITIES = (0.0, 0.85, 0.9)
AREA_RATIOS = (0.0, 0.6, 0.7)


def cell_records(segmentation: Path) -> list[dict]:
    """One record per cell of the FOV in ``segmentation`` (an ``.npz`` of ``evaluate_model.py``): ``movie``,
    ``cell``, ``true``, ``contrast`` (over the FOV's median soma), ``solidity``, ``area_ratio`` (over the FOV's
    median soma area). FOVs of fewer than two cells give none (the rule leaves them alone)."""
    from astro3s.metrics import match_instances
    from astro3s.postprocess.lookalike import soma_solidity
    from astro3s.postprocess.sharpness import soma_edges

    data = np.load(segmentation)
    soma, truth = data["soma"].astype(np.int32), data["gt_soma"].astype(np.int32)
    ids = np.unique(soma)[1:]
    if ids.size < 2:
        return []
    contrast = np.asarray(soma_edges(data["median_image"], soma)[0])[ids - 1]
    solidity = soma_solidity(soma)[ids - 1]
    area = np.bincount(soma.ravel())[ids]
    matched = set(int(k) for k in match_instances(soma, truth).pred_ids)  # IoU >= 0.5, one to one
    return [{"movie": segmentation.stem, "cell": int(k), "true": bool(k in matched),
             "contrast": float(c / np.nanmedian(contrast)), "solidity": float(s),
             "area_ratio": float(a / np.median(area))} for k, c, s, a in zip(ids, contrast, solidity, area)]


def bin_factors(report: Path) -> dict[str, int]:
    """Movie name -> bin factor, from an ``evaluate_model.py`` JSON report (1 where it records none)."""
    from compare_reports import load_report, movies_of

    return {name: int((row.get("soma_scale") or {}).get("bin_factor", 1))
            for name, (_, row) in movies_of(load_report(report)).items()}


def removed(records: list[dict], contrast: float, solidity: float, area_ratio: float) -> tuple[int, int]:
    """(false, true) cells a rule removes: contrast under ``contrast``, and (when either shape bound is set) a
    soma less solid than ``solidity`` or smaller than ``area_ratio`` x the median."""
    def goes(r: dict) -> bool:
        if not r["contrast"] < contrast:
            return False
        if solidity == 0 and area_ratio == 0:
            return True
        return r["solidity"] < solidity or r["area_ratio"] < area_ratio

    gone = [r for r in records if goes(r)]
    return sum(not r["true"] for r in gone), sum(r["true"] for r in gone)


def summary(sets: dict[str, list[dict]]) -> str:
    """Markdown: the cells of each set, then per grid setting the false / true cells removed per set."""
    settings = [([f"{c:g}", "–" if s == 0 else f"{s:g}", "–" if a == 0 else f"{a:g}"],
                 lambda records, c=c, s=s, a=a: removed(records, c, s, a))
                for c, s, a in itertools.product(CONTRASTS, SOLIDITIES, AREA_RATIOS)
                if (s == 0) == (a == 0)]  # the exemption takes both bounds
    header = ["faint under", "exempt: solidity >=", "and area >= x median"]
    lines = set_table(sets) + [""] + grid_table(sets, settings, header)
    return "\n".join(lines + ["", "Each cell of the grid: false / true cells removed."])


def set_records(segmentations: Path, report: Path) -> list[dict]:
    """The records of every saved segmentation of a folder whose FOV was not binned (``report``'s bin factors)."""
    factors = bin_factors(report)
    return [r for path in sorted(segmentations.glob("*.npz")) if factors.get(path.stem, 1) == 1
            for r in cell_records(path)]


def main(argv: list[str] | None = None) -> int:
    return segmentation_sets_main(__doc__.split("\n\n")[0], "REPORT.json (evaluate_model.py's outputs)",
                                  set_records, summary, argv)


if __name__ == "__main__":
    sys.exit(main())
