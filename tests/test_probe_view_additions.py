"""``experiments/probe_view_additions.py``: the added cells' blur, their fate, and the summary per bound."""

from __future__ import annotations

import numpy as np
from scipy import ndimage as ndi


def _discs(shape: tuple[int, int], centres: list[tuple[int, int]], radius: float = 7) -> np.ndarray:
    yy, xx = np.mgrid[:shape[0], :shape[1]]
    labels = np.zeros(shape, np.int32)
    for k, (y, x) in enumerate(centres, start=1):
        labels[np.hypot(yy - y, xx - x) <= radius] = k
    return labels


def test_an_added_cell_blurred_on_the_image_reads_blurrier_than_the_cells_before(experiment_script) -> None:
    probe = experiment_script("probe_view_additions")
    soma = _discs((100, 140), [(25, 25), (25, 75), (75, 25), (75, 100)])  # 1-2 found before, 3-4 added
    image = 0.05 + 0.9 * np.isin(soma, (1, 2, 3)).astype(np.float32)
    soft = ndi.gaussian_filter((soma == 4).astype(np.float32), 4.0)
    image += 0.9 * soft / soft.max()
    blur = probe.relative_blur(image, soma, 2)
    assert blur.shape == (2,) and 0.8 < blur[0] < 1.2 and blur[1] > 1.5
    assert np.isnan(probe.relative_blur(None, soma, 2)).all() and probe.relative_blur(image, soma, 4).size == 0


def test_an_added_soma_is_still_a_cell_when_a_final_soma_holds_most_of_it(experiment_script) -> None:
    probe = experiment_script("probe_view_additions")
    added = _discs((40, 40), [(20, 20)]) == 1
    final = np.zeros((40, 40), np.int32)
    assert probe.fate(added, final, {1}) == (False, False)
    final[added] = 5
    assert probe.fate(added, final, {5}) == (True, True) and probe.fate(added, final, {1}) == (True, False)
    final[:22] = 0                                                       # under half of it left: gone
    assert probe.fate(added, final, {5}) == (False, False)


def test_the_summary_counts_each_view_and_the_correlation_view_under_each_bound(experiment_script) -> None:
    probe = experiment_script("probe_view_additions")
    rows = [{"movie": "a", "view": "correlation_view", "kept": True, "true": True, "blur_on_correlation": 1.0},
            {"movie": "a", "view": "correlation_view", "kept": True, "true": False, "blur_on_correlation": 1.6},
            {"movie": "b", "view": "correlation_view", "kept": False, "true": False, "blur_on_correlation": 3.0},
            {"movie": "b", "view": "active_view", "kept": True, "true": True, "blur_on_correlation": float("nan")}]
    text = probe.summary(rows)
    assert text.startswith("2 movies")
    assert "| active_view | 1 | 1 / 0 |" in text and "| correlation_view | 3 | 1 / 1 |" in text
    assert "| 1.3 | 1 | 0 |" in text and "| 2 | 1 | 1 |" in text and "| inf | 1 | 1 |" in text
