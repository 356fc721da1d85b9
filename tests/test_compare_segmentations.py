"""Saved segmentations of evaluate_model.py (--save-segmentations) and their comparison
(experiments/compare_segmentations.py)."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest


def _truth():
    soma = np.zeros((48, 48), np.uint16)
    soma[4:12, 4:12] = 1
    soma[30:38, 30:38] = 2
    processes = np.zeros_like(soma)
    processes[12:20, 7:9] = 1
    return soma, processes, processes.copy()


def _save(module, folder: Path, name: str, soma: np.ndarray, processes: np.ndarray, member: str = "d1") -> None:
    seg = SimpleNamespace(soma=soma, processes=processes)
    module.save_segmentation(folder / f"{name}.npz", seg, _truth(), member=member,
                             median_image=np.ones(soma.shape, np.float32))


def test_two_saved_runs_are_compared_movie_by_movie(experiment_script, tmp_path: Path) -> None:
    evaluate_model = experiment_script("evaluate_model")
    compare = experiment_script("compare_segmentations")
    gt_soma, gt_processes, _ = _truth()
    found_one = np.where(gt_soma == 1, 1, 0).astype(np.uint16)                 # cell 2 missed
    false_one = found_one.copy()
    false_one[40:46, 4:10] = 2                                                  # a false cell
    _save(evaluate_model, tmp_path / "before", "m_0", found_one, np.where(gt_processes == 1, 1, 0))
    _save(evaluate_model, tmp_path / "after", "m_0", gt_soma, gt_processes)    # cell 2 found
    _save(evaluate_model, tmp_path / "before", "m_1", found_one, found_one * 0)
    _save(evaluate_model, tmp_path / "after", "m_1", false_one, found_one * 0)  # a false cell more
    _save(evaluate_model, tmp_path / "before", "only_before", gt_soma, gt_processes)
    assert not list((tmp_path / "after").glob("*.tmp*"))                        # written under a temporary name
    saved = compare.load_segmentation(tmp_path / "after" / "m_0.npz")
    assert saved["member"] == "d1" and saved["median_image"].dtype == np.float32
    np.testing.assert_array_equal(saved["soma"], gt_soma)

    changes, scores = compare.compare(tmp_path / "before", tmp_path / "after")
    assert [c.name for c in changes] == ["m_0", "m_1"]                          # only movies both runs hold
    assert (changes[0].true_before, changes[0].true_after, changes[0].false_after) == (1, 2, 0)
    assert (changes[1].true_before, changes[1].false_before, changes[1].false_after) == (1, 0, 1)
    before, after = scores["d1"]
    assert before["detection_recall"] == pytest.approx(0.5) and after["detection_recall"] == pytest.approx(0.75)
    text = compare.report(changes, scores)
    assert "m_0: true 1 -> 2, false 0 -> 0" in text and "true cells +1, false cells +1" in text
    assert compare.main([str(tmp_path / "before"), str(tmp_path / "after")]) == 0


def test_comparing_folders_without_common_movies_or_with_a_bad_file_says_so(experiment_script, tmp_path: Path,
                                                                          capsys) -> None:
    compare = experiment_script("compare_segmentations")
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    assert compare.main([str(tmp_path / "a"), str(tmp_path / "b")]) == 2
    assert "no saved segmentation" in capsys.readouterr().err
    (tmp_path / "a" / "m.npz").write_text("not a npz")
    np.savez(tmp_path / "b" / "m.npz", soma=np.zeros((4, 4)))
    assert compare.main([str(tmp_path / "a"), str(tmp_path / "b")]) == 2
    err = capsys.readouterr().err
    assert "m.npz" in err and "--save-segmentations" in err


def test_process_width_probe_reads_widths_and_the_1px_wider_scores(experiment_script, tmp_path: Path) -> None:
    # experiments/process_width_probe.py on a saved run: the truth's processes 2 px wide, those found 1 px wide
    evaluate_model = experiment_script("evaluate_model")
    probe = experiment_script("process_width_probe")
    soma, truth_processes, _ = _truth()
    found = np.zeros_like(soma)
    found[12:24, 7] = 1  # one of the truth's two process columns, 4 px longer (a cell needs >= 10 process px)
    _save(evaluate_model, tmp_path, "movie_0", soma, found, member="thin")
    figures = probe.member_figures(tmp_path)["thin"]
    assert figures["precision"] == pytest.approx(8 / 12) and figures["recall"] == pytest.approx(0.5)
    assert figures["width_true"] > figures["width_found"]
    # drawn 1 px wider the found process covers the truth, plus the pixels beside it
    assert figures["recall_wider"] == 1.0 and figures["precision_wider"] < 1.0
    (tmp_path / "broken.npz").write_bytes(b"not an npz")
    from astro3s.errors import InputError

    with pytest.raises(InputError, match="broken.npz"):
        probe.member_figures(tmp_path)
