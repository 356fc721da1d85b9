"""experiments/compare_reports.py: the movies a change of code moved, between two evaluate_model.py reports."""

from __future__ import annotations

import json

import pytest


def _movie(name: str, found: int, true_cells: int, n_gt: int, soma: float | None = 0.95) -> dict:
    f1 = 2.0 * true_cells / (found + n_gt) if found + n_gt else 0.0
    return {"name": name, "n_cells": found, "n_gt": n_gt, "detection_f1": f1, "soma_f1": soma, "process_f1": 0.6}


def _report(movies: dict[str, list[dict]], *, kind: str = "sets") -> dict:
    return {kind: {group: {"pooled": {"detection_f1": 0.9, "soma_f1": 0.95, "process_f1": 0.6}, "movies": rows}
                   for group, rows in movies.items()}}


def test_only_the_movies_that_moved_are_listed(experiment_script, tmp_path, capsys) -> None:
    compare = experiment_script("compare_reports")
    before = _report({"d2_like": [_movie("d2_like_s5000", 2, 2, 2), _movie("d2_like_s5001", 16, 0, 3, soma=None)],
                      "d1_like": [_movie("d1_like_s5000", 7, 7, 7)]})
    after = _report({"d2_like": [_movie("d2_like_s5000", 2, 2, 2), _movie("d2_like_s5001", 3, 3, 3, soma=0.956)],
                     "d1_like": [_movie("d1_like_s5000", 7, 7, 7, soma=0.95 + 1e-9)]})
    deltas = compare.movie_deltas(before, after)
    assert [d.name for d in deltas] == ["d2_like_s5001"]  # a rounding-sized soma change is no change
    (moved,) = deltas
    assert moved.found == (16, 3) and moved.true == (0, 3) and moved.n_gt == 3
    assert moved.scores["soma_f1"] == (None, 0.956)
    assert compare.movie_deltas(before, after, tolerance=0.0)[-1].name == "d1_like_s5000"
    a, b = tmp_path / "a.json", tmp_path / "b.json"
    a.write_text(json.dumps(before))
    b.write_text(json.dumps(after))
    assert compare.main([str(a), str(b)]) == 0
    out = capsys.readouterr().out
    assert "1 of 3 movies in both reports changed" in out
    assert "d2_like_s5001: cells 16 -> 3 (true 0 -> 3 of 3)" in out and "| d2_like | 0.900 -> 0.900" in out


def test_a_movie_in_one_report_only_is_left_out_and_bad_files_get_one_clear_error(experiment_script, tmp_path,
                                                                                 capsys) -> None:
    from astro3s.errors import InputError

    compare = experiment_script("compare_reports")
    before = _report({"giant": [_movie("heldout_giant_0", 1, 1, 1)]}, kind="heldout")
    after = _report({"giant": [_movie("heldout_giant_9", 3, 0, 1)]}, kind="heldout")
    assert compare.movie_deltas(before, after) == []
    with pytest.raises(InputError, match="no such report"):
        compare.load_report(tmp_path / "missing.json")
    broken = tmp_path / "broken.json"
    broken.write_text("{ not json")
    with pytest.raises(InputError, match="not a JSON report"):
        compare.load_report(broken)
    other = tmp_path / "other.json"
    other.write_text(json.dumps({"scores": []}))
    with pytest.raises(InputError, match="no 'heldout' or 'sets'"):
        compare.load_report(other)
    assert compare.main([str(other), str(other)]) == 2
    assert "error:" in capsys.readouterr().err
