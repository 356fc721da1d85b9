"""Human inter-rater agreement on the ASTRA annotations (datasets D1-D3).

Scores each annotator (``annot_1..3``) against the consensus with ASTRA's
definition (:func:`astro3s.metrics.astra_scores`; the annotator plays the
prediction, the consensus the ground truth) and writes a markdown table beside
the ranges published in the annotations' README, which it reads from there.

Usage::

    python experiments/annotator_agreement.py [--annotations DIR]
        [--out experiments/results/annotator_agreement.md] [--fill astra|imagej]

What mattered to reproduce the published figures
------------------------------------------------
With the definition in :mod:`astro3s.metrics` (8-connected components,
IoU >= 0.5, 40-px disc split, pixel scores averaged over matched cells pooled
across FOVs, detection pooled across FOVs) every annotator lands inside the
published range once rounded to two decimals. The checks that were made:

* Polygon fill is what matters most. ASTRA rasterised ROIs with
  ``skimage.measure.grid_points_in_poly`` (grid point ``(row, col) = (y, x)``
  inside *or on* the polygon; reader option ``fill="astra"``), which covers
  about half a perimeter more pixels than ImageJ's pixel-centre rule
  (``fill="imagej"``, the reader's default). With the ImageJ rule the small
  D1 and D3 somata lose IoU: annot_2 drops to D1 detection/soma/process F1
  0.884/0.848/0.569, D3 annot_2 and annot_3 to detection F1 0.79 and soma
  F1 0.82, and D2 annot_3 process F1 to 0.685, all out of range. Hence
  ``--fill astra`` is the default here.
* Connectivity: with 4-connectivity the consensus soma of D2
  ``RoiSet_SMALL_028`` (parts touching only diagonally) counts as two, and
  annot_1's D2 detection F1 drops from 0.98 to 0.97 (range 0.98-1.00). ASTRA
  uses OpenCV's default, 8-connectivity.
* Which side is the prediction does not change any F1 (detection F1 and the
  per-pair pixel F1 are symmetric); it only swaps precision and recall.
* Counting a predicted soma wholly inside a GT soma as detected (a rule in
  ASTRA's code), or averaging detection per FOV instead of pooling, moves
  detection F1 by at most 0.015 and keeps every figure in range.
* Without the disc split (one cell per component) D1 soma F1 moves by 0.004;
  a 20-px disc moves D1 process F1 by 0.01. No matched D1/D2 cell lacks
  processes on both sides, so the zero-division convention does not matter.
* D3 is read on the 430 x 430 grid (ROIs drawn on 435 x 435 are clipped), as
  soma-only annotation; process scores are not reported. Reading it on
  435 x 435 instead gives the same figures to three decimals.
* Files without a consensus counterpart (annot_3 D1 ``RoiSet_SMALL_020.zip``,
  annot_3 D3 ``RoiSet_LARGE_08.zip``) are skipped and listed.
"""

from __future__ import annotations

import argparse
import re
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from astro3s.io import read_roiset
from astro3s.io.atomic import write_text
from astro3s.resources import annotations_dir
from astro3s.metrics import AstraScores, astra_scores

#: FOV shape (H, W) used to read each dataset; D3 is drawn on 435 x 435, scored on 430 x 430
DATASET_SHAPES = {"D1": (256, 256), "D2": (512, 512), "D3": (430, 430)}
SOMA_ONLY = {"D3"}
ANNOTATORS = ("annot_1", "annot_2", "annot_3")
CONSENSUS = "consensus"
DEFAULT_ANNOTATIONS = annotations_dir()
DEFAULT_OUT = Path(__file__).resolve().parent / "results" / "annotator_agreement.md"


@dataclass(frozen=True)
class Agreement:
    """One annotator against the consensus on one dataset."""

    dataset: str
    annotator: str
    scores: AstraScores
    fovs: tuple[str, ...]
    only_annotator: tuple[str, ...]  # files with no consensus counterpart
    only_consensus: tuple[str, ...]  # consensus files the annotator lacks


def paired_files(annotations: Path, dataset: str, annotator: str) -> tuple[list[str], list[str], list[str]]:
    """File names present on both sides, only in the annotator's folder, only in the consensus."""
    mine = {p.name for p in (annotations / annotator / dataset).glob("*.zip")}
    consensus = {p.name for p in (annotations / CONSENSUS / dataset).glob("*.zip")}
    return sorted(mine & consensus), sorted(mine - consensus), sorted(consensus - mine)


def score_annotator(annotations: Path, dataset: str, annotator: str, *,
                    fill: str = "astra") -> Agreement:
    """Score one annotator against the consensus on one dataset (ASTRA definition)."""
    both, only_mine, only_consensus = paired_files(annotations, dataset, annotator)
    if not both:
        raise FileNotFoundError(f"no RoiSet of {annotator}/{dataset} has a consensus "
                                f"counterpart under {annotations}")
    shape = DATASET_SHAPES[dataset]
    pred = [read_roiset(annotations / annotator / dataset / name, shape, fill=fill) for name in both]
    gt = [read_roiset(annotations / CONSENSUS / dataset / name, shape, fill=fill) for name in both]
    scores = astra_scores([s for s, _ in pred], [p for _, p in pred],
                          [s for s, _ in gt], [p for _, p in gt],
                          soma_only=dataset in SOMA_ONLY)
    return Agreement(dataset, annotator, scores, tuple(both), tuple(only_mine), tuple(only_consensus))


def published_ranges(readme: Path) -> dict[str, list[str]]:
    """The agreement table of the annotations README: dataset -> [det F1, soma F1, process F1]."""
    ranges: dict[str, list[str]] = {}
    text = readme.read_text(encoding="utf-8")
    section = text.split("## Agreement figures", 1)[-1]
    for line in section.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) == 4 and re.fullmatch(r"D\d", cells[0]):
            ranges[cells[0]] = cells[1:]
    return ranges


def _in_range(value: float | None, text: str) -> str:
    match = re.fullmatch(r"\s*([\d.]+)\s*[-–]\s*([\d.]+)\s*", text)
    if value is None or not match:
        return ""
    low, high = float(match.group(1)), float(match.group(2))
    return "yes" if low <= round(value, 2) <= high else "**no**"


def _fmt(value: float | None) -> str:
    return "–" if value is None or (isinstance(value, float) and np.isnan(value)) else f"{value:.3f}"



def _shown(path: Path) -> str:
    """``path`` relative to the repository when inside it, so the report is the same on every machine."""
    try:
        return str(Path(path).resolve().relative_to(Path(__file__).resolve().parents[1]))
    except ValueError:
        return str(path)


def markdown(results: list[Agreement], ranges: dict[str, list[str]], *,
             annotations: Path, fill: str) -> str:
    """The result page."""
    lines = [
        "# Human inter-rater agreement (ASTRA definition)",
        "",
        "Generated by `python experiments/annotator_agreement.py`; do not edit by hand.",
        f"Annotations: `{_shown(annotations)}`; polygon fill `{fill}`.",
        "Each annotator is scored as the prediction against the consensus as ground truth",
        "(`astro3s.metrics.astra_scores`: 8-connected components, soma IoU >= 0.5, 40-px disc",
        "split, detection pooled over FOVs, pixel F1 averaged over matched cells of all FOVs).",
        "",
        "| dataset | annotator | FOVs | cells (annot / cons.) | detection P | detection R "
        "| detection F1 | soma F1 | process F1 |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in results:
        s = r.scores.as_dict()
        lines.append(
            f"| {r.dataset} | {r.annotator} | {len(r.fovs)} | {s['n_pred']} / {s['n_gt']} "
            f"| {_fmt(s['detection_precision'])} | {_fmt(s['detection_recall'])} "
            f"| {_fmt(s['detection_f1'])} | {_fmt(s['soma_f1'])} | {_fmt(s['process_f1'])} |")
    lines += ["", "## Against the published ranges", "",
              "Ranges from the annotations' README (one row per dataset, the spread over the",
              "three annotators); *in range* compares our figure rounded to two decimals.", "",
              "| dataset | published detection F1 | ours | in range | published soma F1 | ours "
              "| in range | published process F1 | ours | in range |",
              "|---|---|---|---|---|---|---|---|---|---|"]
    for dataset in DATASET_SHAPES:
        rows = [r for r in results if r.dataset == dataset]
        if not rows or dataset not in ranges:
            continue
        cells = [dataset]
        for key, published in zip(("detection_f1", "soma_f1", "process_f1"), ranges[dataset]):
            values = [r.scores.as_dict()[key] for r in rows]
            ours = ", ".join(_fmt(v) for v in values)
            verdict = ", ".join(filter(None, (_in_range(v, published) for v in values))) or "–"
            cells += [published, ours, verdict]
        lines.append("| " + " | ".join(cells) + " |")
    skipped = [(r, name) for r in results for name in r.only_annotator]
    missing = [(r, name) for r in results for name in r.only_consensus]
    lines += ["", "## Files on one side only", ""]
    if not skipped and not missing:
        lines.append("None.")
    for r, name in skipped:
        lines.append(f"- `{r.annotator}/{r.dataset}/{name}`: no consensus counterpart, skipped.")
    for r, name in missing:
        lines.append(f"- `{CONSENSUS}/{r.dataset}/{name}`: missing from {r.annotator}, skipped.")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--annotations", type=Path, default=DEFAULT_ANNOTATIONS,
                        help="folder with consensus/ and annot_1..3/ (default: %(default)s)")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT,
                        help="markdown file to write (default: %(default)s)")
    parser.add_argument("--fill", choices=("astra", "imagej"), default="astra",
                        help="polygon fill rule of the RoiSet reader (default: %(default)s)")
    args = parser.parse_args(argv)
    readme = args.annotations / "README.md"
    if not (args.annotations / CONSENSUS).is_dir():
        print(f"{args.annotations}: no consensus/ folder; pass --annotations DIR", file=sys.stderr)
        return 2

    start = time.perf_counter()
    results = []
    for dataset in DATASET_SHAPES:
        for annotator in ANNOTATORS:
            if not (args.annotations / annotator / dataset).is_dir():
                print(f"skipping {annotator}/{dataset}: folder absent", file=sys.stderr)
                continue
            result = score_annotator(args.annotations, dataset, annotator, fill=args.fill)
            s = result.scores
            print(f"{dataset} {annotator}: detection F1 {s.detection_f1:.3f}, soma F1 "
                  f"{s.soma_f1:.3f}, process F1 {_fmt(s.as_dict()['process_f1'])} "
                  f"({len(result.fovs)} FOVs)")
            results.append(result)
    ranges = published_ranges(readme) if readme.exists() else {}
    text = markdown(results, ranges, annotations=args.annotations, fill=args.fill)
    write_text(args.out, text)
    print(f"wrote {args.out} in {time.perf_counter() - start:.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
