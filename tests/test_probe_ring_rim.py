"""``experiments/probe_ring_rim.py``: the cores each rim floor of the ring-core fill keeps, in and out of somata."""

from __future__ import annotations

import numpy as np


def _ring_scene() -> tuple[np.ndarray, np.ndarray]:
    """A 96² image: a bright blob (the brightest structure, 100), a soma drawn as a rim at 25 around a core at
    12 (the rim at 0.25 of the blob), and its truth."""
    yy, xx = np.mgrid[:96, :96]
    image = np.full((96, 96), 5.0, np.float32)
    image[np.hypot(yy - 20, xx - 20) <= 5] = 100.0
    distance = np.hypot(yy - 60, xx - 60)
    image[distance <= 9] = 25.0
    image[distance <= 6] = 12.0
    soma = (distance <= 9).astype(np.uint16)
    return image, soma


def test_a_dim_rim_is_filled_only_under_a_floor_below_its_brightness(experiment_script) -> None:
    probe = experiment_script("probe_ring_rim")
    image, soma = _ring_scene()
    counts = probe.floor_counts(image, soma, (0.3, 0.2), depth=0.1, fill="rim", contrast=1.1)
    assert counts["0.3"] == {"cores_in_soma": 0, "cores_elsewhere": 0, "somata_filled": 0}
    assert counts["0.2"] == {"cores_in_soma": 1, "cores_elsewhere": 0, "somata_filled": 1}


def test_the_summary_adds_each_member_per_floor(experiment_script) -> None:
    probe = experiment_script("probe_ring_rim")
    rows = [{"movie": f"cc_membrane_{i}", "member": "cc_membrane", "true_somata": 5,
             "0.3": {"cores_in_soma": 2, "cores_elsewhere": i, "somata_filled": 2},
             "0.2": {"cores_in_soma": 3, "cores_elsewhere": 2 * i, "somata_filled": 3}} for i in range(2)]
    text = probe.summary(rows)
    assert text.startswith("2 movies")
    assert "| cc_membrane | 2 | 10 | 4 / 4 / 1 | 6 / 6 / 2 |" in text
