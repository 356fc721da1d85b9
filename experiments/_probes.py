"""What the probe scripts share (``probe_ring_cells.py``, ``probe_coarse_check.py``): their movie folders and
their command line (roots in, per-movie or per-cell records to JSON, a Markdown summary printed)."""

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
