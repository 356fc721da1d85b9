"""Conventions of ASTRA's expert annotations that both the simulators and the inference follow.

Measured on the consensus RoiSets of ``shared/data/astra_annotations`` (Bonato et al. 2023, Apache-2.0)
by ``experiments/measure_annotations.py``. Only NumPy: the inference path imports this module.
"""

from __future__ import annotations

import numpy as np

__all__ = ["ANNOTATOR_SOMA_AREA_D1", "ANNOTATOR_WIDTH_D1", "ANNOTATOR_WIDTH_EXPONENT", "annotator_process_width"]

# Annotators draw processes as polygons wider than the branch. Per cell (the union of its process
# polygons, as the scores compare them), the median width (area / skeleton length) in ASTRA's
# consensus RoiSets is 3.7 px on D1 (somata ~190 px), 4.1 px on D4 (~100 px) and 9.0 px on D2
# (~2900 px); a power law through those three medians gives the width for any soma size
# (`python experiments/measure_annotations.py`). Polygon by polygon the medians read 5.4 / 5.6 /
# 10.1 px (a short polygon's skeleton stops short of its ends), the figure followed until 2026-12-04.
ANNOTATOR_WIDTH_D1 = 4.46
ANNOTATOR_SOMA_AREA_D1 = 223.0
ANNOTATOR_WIDTH_EXPONENT = 0.264


def annotator_process_width(soma_area: float) -> float:
    """Width (px) of a process polygon as ASTRA's annotators draw it for a soma of ``soma_area`` px.

    ``4.46 * (soma_area / 223) ** 0.264``, clipped to [3, 12] px: 4.3 px for a D1
    soma (~190 px), 3.6 px for a D4 soma (~100 px), 8.9 px for a D2 soma (~2900 px).
    """
    width = ANNOTATOR_WIDTH_D1 * (max(float(soma_area), 1.0) / ANNOTATOR_SOMA_AREA_D1) ** ANNOTATOR_WIDTH_EXPONENT
    return float(np.clip(width, 3.0, 12.0))
