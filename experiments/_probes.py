"""What the probe scripts share (``probe_ring_cells.py``, ``probe_coarse_check.py``): their movie folders and
their command line (roots in, per-movie or per-cell records to JSON, a Markdown summary printed); and for the probes
of saved segmentations (``probe_faint_cells.py``, ``probe_unfollowed_cells.py``) their command line (``SEGS=OTHER``
pairs in, per-cell records of each set to JSON) and the table of each set's true and false cells."""

from __future__ import annotations

import argparse
import json
import logging
from collections.abc import Callable
from pathlib import Path


def movie_folders(roots: list[Path]) -> list[Path]:
    """Folders ``<name>/<name>.tif`` directly under each root (or the root itself when it is one), each movie
    name once (development folders overlap: a family's first draw and a member's development set)."""
    folders: dict[str, Path] = {}
    for root in roots:
        found = [root] if (root / f"{root.name}.tif").exists() else sorted(
            p for p in root.iterdir() if p.is_dir() and (p / f"{p.name}.tif").exists())
        for folder in found:
            folders.setdefault(folder.name, folder)
    return list(folders.values())


def probe_main(description: str, probe: Callable[[list[Path]], list[dict]], summary: Callable[[list[dict]], str],
               argv: list[str] | None = None) -> int:
    """Run ``probe`` on the movie folders under the roots given in ``argv``; write its records
    (``--out``, JSON) and print ``summary`` of them."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("roots", nargs="+", type=Path, help="family, preset or movie folders")
    parser.add_argument("--out", type=Path, default=None, help="the records as JSON")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    rows = probe(movie_folders(args.roots))
    if args.out is not None:
        args.out.write_text(json.dumps(rows, indent=1))
    print(summary(rows))
    return 0


def segmentation_sets_main(description: str, pair_help: str,
                           records: Callable[[Path, Path], list[dict]], summary: Callable[[dict[str, list[dict]]], str],
                           argv: list[str] | None = None) -> int:
    """Read ``SEGMENTATIONS_DIR=OTHER`` pairs from ``argv`` (``pair_help`` names ``OTHER``), take
    ``records(segmentations_dir, other)`` of each as one set named after the folder, write the sets (``--out``,
    JSON) and print ``summary`` of them."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("sets", nargs="+", help=f"SEGMENTATIONS_DIR={pair_help}")
    parser.add_argument("--out", type=Path, default=None, help="the per-cell records as JSON")
    args = parser.parse_args(argv)
    sets: dict[str, list[dict]] = {}
    for spec in args.sets:
        folder, _, other = spec.partition("=")
        if not other:
            parser.error(f"{spec}: give SEGMENTATIONS_DIR={pair_help.split(' ')[0]}")
        sets[Path(folder).name] = records(Path(folder), Path(other))
    if args.out is not None:
        args.out.write_text(json.dumps(sets, indent=1))
    print(summary(sets))
    return 0


def set_table(sets: dict[str, list[dict]]) -> list[str]:
    """Markdown lines: each set's true and false cells (records with a ``true`` flag)."""
    lines = ["| set | true cells | false cells |", "|---|---|---|"]
    return lines + [f"| {n} | {sum(r['true'] for r in rs)} | {sum(not r['true'] for r in rs)} |"
                    for n, rs in sets.items()]


def grid_table(sets: dict[str, list[dict]], settings: list[tuple[list[str], Callable[[list[dict]], tuple[int, int]]]],
               header: list[str]) -> list[str]:
    """Markdown lines: one row per setting (its ``header`` column labels, then the false / true cells its
    function removes from each set and from all)."""
    names = list(sets)
    lines = ["| " + " | ".join(header + names) + " | all |", "|" + "---|" * (len(header) + len(names) + 1)]
    for labels, removes in settings:
        counts = [removes(sets[n]) for n in names]
        cells = [f"-{f} / -{t}" for f, t in counts] + [f"-{sum(f for f, _ in counts)} / -{sum(t for _, t in counts)}"]
        lines.append("| " + " | ".join(labels + cells) + " |")
    return lines
