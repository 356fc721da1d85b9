"""Compare two runs of ``evaluate_model.py --save-segmentations`` movie by movie, without running the pipeline again.

    python experiments/evaluate_model.py --sets --heldout DIR --edge-fov-cells 0 --save-segmentations runs/before
    python experiments/evaluate_model.py --sets --heldout DIR --save-segmentations runs/after
    python experiments/compare_segmentations.py runs/before runs/after

Prints the movies whose true or false cells changed (ASTRA's detection count:
soma components matched one-to-one at IoU >= 0.5) and, per member or preset,
detection / soma / process F1 before and after, pooled over its movies
(:func:`astro3s.metrics.astra_scores`). Only the movies both folders hold are
compared. A rule screened this way on saved segmentations still needs a run of
its own on fresh movies before it is chosen (experiments/README.md).
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np


@dataclass(frozen=True)
class MovieChange:
    """True and false cells of one movie in the two runs."""

    name: str
    member: str
    true_before: int
    true_after: int
    false_before: int
    false_after: int


def load_segmentation(path: Path) -> dict[str, np.ndarray | str]:
    """One movie's arrays as ``evaluate_model.save_segmentation`` wrote them; ``member`` as a str."""
    from astro3s.errors import InputError

    try:
        with np.load(path) as data:
            arrays = {key: data[key] for key in data.files}
    except (OSError, ValueError) as err:
        raise InputError(path, f"cannot be read as a saved segmentation ({err}).",
                         "write it again with experiments/evaluate_model.py --save-segmentations DIR.") from None
    missing = {"soma", "processes", "gt_soma", "gt_processes"} - set(arrays)
    if missing:
        raise InputError(path, f"lacks {', '.join(sorted(missing))}.",
                         "write it again with experiments/evaluate_model.py --save-segmentations DIR.")
    arrays["member"] = str(arrays.get("member", ""))
    return arrays


def detection_counts(arrays: dict) -> tuple[int, int]:
    """(true cells, false cells) of one saved movie."""
    from astro3s.metrics import detect_somata

    counts = detect_somata(arrays["soma"], arrays["gt_soma"])
    return counts.n_matched, counts.n_pred - counts.n_matched


def compare(before_dir: Path, after_dir: Path) -> tuple[list[MovieChange], dict[str, tuple[dict, dict]]]:
    """Per-movie detection changes and per-member pooled ASTRA scores of two saved runs.

    Returns
    -------
    changes : list of MovieChange
        Every movie both folders hold, in name order.
    scores : dict
        Member -> (scores before, scores after), each :meth:`astro3s.metrics.AstraScores.as_dict`.
    """
    from astro3s.errors import InputError
    from astro3s.metrics import astra_scores

    names = sorted({p.stem for p in Path(before_dir).glob("*.npz")} & {p.stem for p in Path(after_dir).glob("*.npz")})
    if not names:
        raise InputError(after_dir, f"holds no saved segmentation of a movie that {before_dir} holds too.",
                         "save both runs of the same movies with evaluate_model.py --save-segmentations DIR.")
    changes: list[MovieChange] = []
    pooled: dict[str, tuple[list, list]] = {}
    for name in names:  # loop over movies
        before = load_segmentation(Path(before_dir) / f"{name}.npz")
        after = load_segmentation(Path(after_dir) / f"{name}.npz")
        member = str(after["member"] or before["member"] or name)
        (true_before, false_before), (true_after, false_after) = detection_counts(before), detection_counts(after)
        changes.append(MovieChange(name, member, true_before, true_after, false_before, false_after))
        runs = pooled.setdefault(member, ([], []))
        for run, arrays in zip(runs, (before, after), strict=True):
            run.append(arrays)
    scores = {}
    for member, runs in sorted(pooled.items()):  # loop over members
        scores[member] = tuple(
            astra_scores([a["soma"] for a in run], [a["processes"] for a in run], [a["gt_soma"] for a in run],
                         [a["gt_processes"] for a in run]).as_dict() for run in runs)
    return changes, scores


def _f1s(scores: dict) -> str:
    return " / ".join("–" if scores[key] is None else f"{scores[key]:.3f}"
                      for key in ("detection_f1", "soma_f1", "process_f1"))


def report(changes: list[MovieChange], scores: dict[str, tuple[dict, dict]]) -> str:
    """The comparison as text: changed movies, totals, then each member's F1 before -> after."""
    lines = ["movies whose cells changed (true, false: before -> after):"]
    for c in changes:
        if (c.true_before, c.false_before) != (c.true_after, c.false_after):
            lines.append(f"  {c.name}: true {c.true_before} -> {c.true_after}, false {c.false_before} -> "
                         f"{c.false_after}")
    true_gain = sum(c.true_after - c.true_before for c in changes)
    false_gain = sum(c.false_after - c.false_before for c in changes)
    lines.append(f"all {len(changes)} movies: true cells {true_gain:+d}, false cells {false_gain:+d}")
    lines.append("detection / soma / process F1 per member, before -> after:")
    for member, (before, after) in scores.items():
        lines.append(f"  {member}: {_f1s(before)} -> {_f1s(after)}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    from astro3s.errors import InputError

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("before", type=Path, help="folder of the first run's saved segmentations")
    parser.add_argument("after", type=Path, help="folder of the second run's")
    args = parser.parse_args(argv)
    try:
        print(report(*compare(args.before, args.after)))
    except InputError as err:
        print(f"compare_segmentations: {err}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
