"""Markdown tables in the repository render: each header row has as many cells as its delimiter row.

GitHub's Markdown (GFM) does not recognise a table whose delimiter row has a different number of
cells from its header row: the whole table shows as plain text.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
_DELIMITER = re.compile(r"^\s*\|?\s*:?-{3,}:?\s*(\|\s*:?-{3,}:?\s*)*\|?\s*$")


def _cells(row: str) -> int:
    """Cells of a table row: pipes inside backticks or escaped do not split."""
    text = row.strip()
    text = text[1:] if text.startswith("|") else text
    text = text[:-1] if text.endswith("|") and not text.endswith("\\|") else text
    count, in_code, escaped = 1, False, False
    for char in text:  # a loop over the characters of one row
        if escaped:
            escaped = False
        elif char == "\\":
            escaped = True
        elif char == "`":
            in_code = not in_code
        elif char == "|" and not in_code:
            count += 1
    return count


def _mismatches(text: str) -> list[tuple[int, int, int]]:
    lines = text.splitlines()
    return [(i + 1, _cells(lines[i - 1]), _cells(lines[i])) for i in range(1, len(lines))
            if "|" in lines[i] and _DELIMITER.match(lines[i]) and lines[i - 1].lstrip().startswith("|")
            and _cells(lines[i - 1]) != _cells(lines[i])]


def _documents() -> list[Path]:
    skip = {".venv", "logs", "example", "node_modules"}
    return sorted(p for p in ROOT.rglob("*.md")
                  if not any(part in skip or part.startswith(".") for part in p.relative_to(ROOT).parts))


def test_the_cell_counter() -> None:
    assert _cells("| a | b | c |") == 3 and _cells("|---|---|---|") == 3
    assert _cells("| `a | b` | c |") == 2 and _cells(r"| a \| b | c |") == 2
    assert _mismatches("| a | b |\n|---|---|---|\n| 1 | 2 |") == [(2, 2, 3)]
    assert _mismatches("| a | b |\n|---|---|\n| 1 | 2 |") == []


@pytest.mark.parametrize("path", _documents(), ids=lambda p: str(p.relative_to(ROOT)))
def test_every_table_renders(path: Path) -> None:
    bad = _mismatches(path.read_text(errors="replace"))
    assert not bad, f"{path}: (line, header cells, delimiter cells) {bad}"


def test_evaluate_model_writes_tables_that_render(experiment_script) -> None:
    module = experiment_script("evaluate_model")
    pooled = {k: 0.5 for k in ("detection_precision", "detection_recall", "detection_f1", "soma_f1", "process_f1",
                               "process_precision", "process_recall", "thin_process_f1", "id_process_f1")}
    pooled.update(giant_recall=None, small_recall=1.0, n_giant=0, n_small=3, n_pred=4, n_gt=5,
                  reach_pred=1.5, reach_gt=2.0, width_pred=3.6, width_gt=4.4)
    entry = {"pooled": pooled, "movies": [{}], "seconds_per_movie": 1.0}
    report = {"checkpoint": "default", "soma_scale": "auto", "heldout": {"giant": entry},
              "sets": {"d1_like": {**entry, "held_out_preset": False}}}
    text = module.markdown(report, "python experiments/evaluate_model.py")
    assert sum(bool(_DELIMITER.match(line)) for line in text.splitlines()) == 2 and _mismatches(text) == []
    rows = [line for line in text.splitlines() if line.startswith("| giant") or line.startswith("| d1_like")]
    assert len(rows) == 2 and all(_cells(row) == 16 for row in rows)
    assert "| 1.50 / 2.00 | 3.6 / 4.4 |" in rows[0]
