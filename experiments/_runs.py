"""Shared by the experiment scripts: run folders, their scores, tables and plots (``aggregate_folds.py``,
``compare.py``), and the ``PRESET:COUNT`` lists of the evaluation scripts.

A *run folder* is what one ``astro3s-train`` job leaves: ``scores.json``
(written by :mod:`astro3s.cli.train` after testing) and Hydra's
``.hydra/overrides.yaml`` (the command-line overrides of that job). A
multirun folder holds one run folder per job (``0/``, ``1/``, ...).
"""

from __future__ import annotations

import csv
import io
import json
import math
import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

SCORES_NAME = "scores.json"
HYDRA_DIR = ".hydra"
PARTS = ("detection", "soma", "process")
STATS = ("precision", "recall", "f1")
#: ASTRA score names, e.g. "detection_f1"
ASTRA_KEYS = tuple(f"{part}_{stat}" for part in PARTS for stat in STATS)
SHORT = {"precision": "P", "recall": "R", "f1": "F1"}


class RunsError(Exception):
    """Run folders that cannot be gathered; the message says why and what to do."""


@dataclass
class Run:
    """One training job: its folder, ``scores.json`` and command-line overrides."""

    path: Path
    scores: dict[str, Any]
    overrides: list[str] = field(default_factory=list)

    @property
    def label(self) -> str:
        """The folder, relative to the working directory when it lies below it."""
        return display_path(self.path)

    def params(self) -> dict[str, str]:
        """The overrides as ``{key: value}`` (``+``/``++`` prefixes dropped, deletions skipped)."""
        out: dict[str, str] = {}
        for item in self.overrides:
            if item.startswith("~") or "=" not in item:
                continue
            key, value = item.split("=", 1)
            out[key.lstrip("+")] = value
        return out


def display_path(path: Path) -> str:
    """``path`` relative to the working directory if below it (stable text across machines), else absolute."""
    path = Path(path).resolve()
    try:
        return str(path.relative_to(Path.cwd().resolve()))
    except ValueError:
        return str(path)


def _read_overrides(run_dir: Path) -> list[str]:
    path = run_dir / HYDRA_DIR / "overrides.yaml"
    if not path.is_file():
        return []
    import yaml

    loaded = yaml.safe_load(path.read_text()) or []
    return [str(x) for x in loaded]


def find_runs(roots: Iterable[str | Path]) -> tuple[list[Run], list[Path]]:
    """Every run folder below ``roots``.

    Returns
    -------
    runs : list of Run
        Folders with a ``scores.json``, sorted by path (job numbers in numeric order).
    unfinished : list of Path
        Hydra job folders (with ``.hydra/``) but no ``scores.json``: failed or
        still running jobs.

    Raises
    ------
    RunsError
        A root that does not exist, an unreadable ``scores.json``, or no run at all.
    """
    runs: list[Run] = []
    unfinished: list[Path] = []
    for root in roots:
        root = Path(root)
        if not root.is_dir():
            raise RunsError(f"{root}: no such folder; give a multirun folder such as "
                            "logs/<task_name>/multiruns/<date>")
        for dirpath, dirnames, filenames in os.walk(root):
            dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
            here = Path(dirpath)
            if SCORES_NAME in filenames:
                try:
                    scores = json.loads((here / SCORES_NAME).read_text())
                except (OSError, ValueError) as err:
                    raise RunsError(f"{here / SCORES_NAME}: unreadable ({err}); delete it or rerun that job") from None
                runs.append(Run(here, scores, _read_overrides(here)))
            elif (here / HYDRA_DIR).is_dir() and (here / HYDRA_DIR / "config.yaml").is_file() \
                    and not (here / "multirun.yaml").is_file():
                unfinished.append(here)
    if not runs:
        where = ", ".join(str(r) for r in roots)
        raise RunsError(f"no {SCORES_NAME} under {where}: the folder holds no finished astro3s-train run "
                        "(runs write it after testing, with test=true)")
    runs.sort(key=lambda r: _natural(r.path))
    unfinished.sort(key=_natural)
    return runs, unfinished


def _natural(path: Path) -> list[Any]:
    return [int(p) if p.isdigit() else p for p in Path(path).parts]


def _number(value: Any) -> float | None:
    if value is None or isinstance(value, bool):
        return None
    try:
        value = float(value)
    except (TypeError, ValueError):
        return None
    return None if math.isnan(value) else value


def astra_values(scores: dict[str, Any]) -> dict[str, float | None]:
    """ASTRA precision/recall/F1 of a ``per_fov`` entry, a pooled ``astra`` dict or ``metrics`` (``test/...``)."""
    return {key: _number(scores.get(key, scores.get(f"test/{key}"))) for key in ASTRA_KEYS}


def fov_rows(run: Run) -> list[dict[str, Any]]:
    """One row per test FOV of a run: ``fold``, ``fov``, ``run`` and the :data:`ASTRA_KEYS`.

    Per-FOV scores come from ``per_fov``; without them (no AstraScore
    callback), the run's pooled ``astra`` scores, or its ``test/...``
    metrics, stand for its test FOVs together.
    """
    scores = run.scores
    base = {"fold": scores.get("fold"), "run": run.label}
    per_fov = scores.get("per_fov") or {}
    if per_fov:
        return [{**base, "fov": name, **astra_values(values)} for name, values in per_fov.items()]
    test = (scores.get("fovs") or {}).get("test") or []
    pooled = scores.get("astra") or scores.get("metrics") or {}
    return [{**base, "fov": "+".join(test) or "?", **astra_values(pooled)}]


def mean_sd(values: Iterable[float | None]) -> tuple[float | None, float | None, int]:
    """Mean, sample standard deviation (ddof 1; None for one value) and count of the non-missing values."""
    finite = [v for v in values if v is not None and not math.isnan(v)]
    n = len(finite)
    if not n:
        return None, None, 0
    mean = sum(finite) / n
    sd = math.sqrt(sum((v - mean) ** 2 for v in finite) / (n - 1)) if n > 1 else None
    return mean, sd, n


def fmt(value: float | None, digits: int = 3) -> str:
    """A number with ``digits`` decimals, or an en dash when missing."""
    return "–" if value is None else f"{value:.{digits}f}"


def fmt_mean_sd(values: Iterable[float | None]) -> str:
    """``mean ± sd`` (or the mean alone for one value; en dash for none)."""
    mean, sd, _ = mean_sd(values)
    if mean is None:
        return "–"
    return fmt(mean) if sd is None else f"{fmt(mean)} ± {fmt(sd)}"


def markdown_table(header: Sequence[str], rows: Iterable[Sequence[Any]]) -> str:
    """A GitHub-flavoured Markdown table."""
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def csv_text(header: Sequence[str], rows: Iterable[Sequence[Any]]) -> str:
    """CSV text (missing values empty)."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(header)
    for row in rows:
        writer.writerow(["" if c is None else c for c in row])
    return buffer.getvalue()


def output_paths(out: str | Path) -> tuple[Path, Path, Path]:
    """``NAME.md`` -> (``NAME.md``, ``NAME.csv``, ``NAME.png``)."""
    out = Path(out)
    if out.suffix.lower() != ".md":
        out = out.with_suffix(out.suffix + ".md") if out.suffix else out.with_suffix(".md")
    return out, out.with_suffix(".csv"), out.with_suffix(".png")


def write_outputs(out: str | Path, markdown: str, csv_body: str, figure: Any) -> tuple[Path, Path, Path]:
    """Write the Markdown, CSV and figure (each atomically) and return their paths."""
    from astro3s.io.atomic import atomic_path, write_text

    md_path, csv_path, png_path = output_paths(out)
    md_path.parent.mkdir(parents=True, exist_ok=True)
    write_text(md_path, markdown)
    write_text(csv_path, csv_body)
    with atomic_path(png_path, suffix=".png") as tmp:
        figure.savefig(tmp, dpi=120, bbox_inches="tight")
    import matplotlib.pyplot as plt

    plt.close(figure)
    return md_path, csv_path, png_path


def box_strip(ax: Any, groups: Sequence[Sequence[float | None]], labels: Sequence[str], *,
              title: str = "", ylim: tuple[float, float] | None = (0.0, 1.02), seed: int = 0) -> None:
    """Box plot of each group with its points scattered (jittered) on top; empty groups are left blank."""
    import numpy as np

    rng = np.random.default_rng(seed)
    data = [[v for v in g if v is not None and not math.isnan(v)] for g in groups]
    positions = [i + 1 for i, d in enumerate(data) if d]
    if positions:
        ax.boxplot([d for d in data if d], positions=positions, widths=0.5, showfliers=False,
                   medianprops={"color": "black"})
    for i, values in enumerate(data):  # loop over groups
        if values:
            ax.scatter(i + 1 + rng.uniform(-0.15, 0.15, len(values)), values, s=14, alpha=0.7, zorder=3)
        else:
            ax.text(i + 1, 0.5, "n/a", ha="center", va="center", color="grey")
    ax.set_xticks(range(1, len(labels) + 1))
    ax.set_xticklabels(labels)
    ax.set_xlim(0.4, len(labels) + 0.6)
    if ylim is not None:
        ax.set_ylim(*ylim)
    ax.set_title(title)
    ax.grid(axis="y", alpha=0.3)


def parse_sets(items: Iterable[str]) -> list[tuple[str, int]]:
    """``["d1_like:3", "d3_like"]`` -> ``[("d1_like", 3), ("d3_like", 1)]``."""
    out = []
    for item in items:
        name, _, count = item.partition(":")
        out.append((name, int(count or 1)))
    return out
