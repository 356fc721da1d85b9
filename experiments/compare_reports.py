"""Compare two reports of ``evaluate_model.py`` movie by movie: which movies a change of code moved.

    python experiments/compare_reports.py experiments/results/default_model.json runs/after.json

Both files are the ``.json`` that ``evaluate_model.py --out NAME.md`` writes beside ``NAME.md``. Prints
each movie both reports hold whose cells found, true cells (detection F1 x (found + true) / 2) or
detection / soma / process F1 differ by more than ``--tolerance``, then, per held-out member and preset,
the pooled detection / soma / process F1 of each report. Re-run the model card's table
(``evaluate_model.py --heldout data/heldout_family --data-dir data/eval_presets``) after every rule
change and compare it with the shipped ``experiments/results/default_model.json``: its table had drifted
for three sessions before anyone saw (experiments/README.md, fourteenth session).
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import dataclass
from pathlib import Path

SCORES = ("detection_f1", "soma_f1", "process_f1")


@dataclass(frozen=True)
class MovieDelta:
    """One movie's figures in the two reports (``None`` where a score is undefined)."""

    group: str
    name: str
    found: tuple[int, int]
    true: tuple[int, int]
    n_gt: int
    scores: dict[str, tuple[float | None, float | None]]


def load_report(path: Path) -> dict:
    """An ``evaluate_model.py`` report; one clear error when the file is missing or not such a report."""
    from astro3s.errors import InputError

    path = Path(path)
    fix = "give the .json that evaluate_model.py --out NAME.md wrote beside NAME.md."
    if not path.is_file():
        raise InputError(path, "no such report.", fix)
    try:
        report = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise InputError(path, f"not a JSON report ({err}).", fix) from None
    if not isinstance(report, dict) or not any(isinstance(report.get(k), dict) for k in ("heldout", "sets")):
        raise InputError(path, "holds no 'heldout' or 'sets' results.", fix)
    return report


def movies_of(report: dict) -> dict[str, tuple[str, dict]]:
    """Movie name -> (its member or preset, its row), over the report's held-out members and presets."""
    rows: dict[str, tuple[str, dict]] = {}
    for kind in ("heldout", "sets"):
        for group, entry in (report.get(kind) or {}).items():
            for movie in entry.get("movies", []):
                rows[movie["name"]] = (group, movie)
    return rows


def _true_cells(movie: dict) -> int:
    # ASTRA's detection F1 is 2 TP / (found + true): the matched cells, recovered from it
    return int(round(float(movie.get("detection_f1") or 0.0) * (movie["n_cells"] + movie["n_gt"]) / 2.0))


def movie_deltas(before: dict, after: dict, *, tolerance: float = 1e-6) -> list[MovieDelta]:
    """The movies of both reports whose cells or scores differ, in the order of ``before``.

    Parameters
    ----------
    before, after : dict
        Reports of ``evaluate_model.py`` (:func:`load_report`).
    tolerance : float
        Scores closer than this count as equal.
    """
    later = movies_of(after)
    deltas = []
    for name, (group, old) in movies_of(before).items():
        if name not in later:
            continue
        new = later[name][1]
        scores = {key: (old.get(key), new.get(key)) for key in SCORES}
        moved = any((a is None) != (b is None) or (a is not None and abs(a - b) > tolerance)
                    for a, b in scores.values())
        found, true = (old["n_cells"], new["n_cells"]), (_true_cells(old), _true_cells(new))
        if moved or found[0] != found[1] or true[0] != true[1]:
            deltas.append(MovieDelta(group, name, found, true, int(old["n_gt"]), scores))
    return deltas


def group_table(before: dict, after: dict) -> list[str]:
    """Markdown rows: each member and preset both reports hold, pooled F1 before -> after."""
    lines = ["| member / preset | detection F1 | soma F1 | process F1 |", "|---|---|---|---|"]
    for kind in ("heldout", "sets"):
        old_groups, new_groups = before.get(kind) or {}, after.get(kind) or {}
        for group in old_groups:
            if group not in new_groups:
                continue
            a, b = old_groups[group].get("pooled", {}), new_groups[group].get("pooled", {})
            cells = [f"{_fmt(a.get(k))} -> {_fmt(b.get(k))}" for k in SCORES]
            lines.append(f"| {group} | " + " | ".join(cells) + " |")
    return lines


def _fmt(value: float | None) -> str:
    return "–" if value is None else f"{value:.3f}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("before", type=Path,
                        help="report .json of evaluate_model.py (e.g. the shipped default_model.json)")
    parser.add_argument("after", type=Path, help="report .json of the run to compare")
    parser.add_argument("--tolerance", type=float, default=1e-6, help="scores closer than this are equal")
    args = parser.parse_args(argv)
    from astro3s.errors import InputError

    try:
        before, after = load_report(args.before), load_report(args.after)
    except InputError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    deltas = movie_deltas(before, after, tolerance=args.tolerance)
    shared = len(set(movies_of(before)) & set(movies_of(after)))
    print(f"{len(deltas)} of {shared} movies in both reports changed")
    for d in deltas:
        scores = ", ".join(f"{k.split('_')[0]} {_fmt(a)} -> {_fmt(b)}" for k, (a, b) in d.scores.items())
        print(f"  {d.group:16s} {d.name}: cells {d.found[0]} -> {d.found[1]} (true {d.true[0]} -> {d.true[1]} "
              f"of {d.n_gt}); {scores}")
    print("\n".join(group_table(before, after)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
