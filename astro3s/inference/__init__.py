"""Inference: a raw movie to cells, traces, domains and output files.

- :func:`load_inference_model` -> the network and :class:`InferenceOptions`
  (the bundled ``"default"`` model or a checkpoint, with the pre-processing
  parameters it was trained with);
- :func:`infer_movie`: one movie -> ``DIR/<stem>/`` (see :mod:`astro3s.inference.outputs`);
- :func:`run_batch`: many movies, past failures, with an index CSV;
- :func:`segment_movie`: the cells of a pre-processed movie (:mod:`astro3s.inference.cells`: soma
  scale, network passes, the rules that add and remove cells, somata and processes redrawn);
- :func:`segment_preprocessed`: network on the crops and the whole FOV, then
  the combination rules -> :class:`~astro3s.postprocess.Segmentation`;
- :func:`predict_crops`, :func:`predict_fov`: the two network passes
  (:func:`predict_crops_zoomed`: crops enlarged to the training data's cell size).

Importing this package imports no torch.
"""

from __future__ import annotations

import importlib
from typing import Any

_LAZY = {
    "predict_crops": "astro3s.inference.network",
    "predict_crops_zoomed": "astro3s.inference.network",
    "predict_fov": "astro3s.inference.network",
    "TilingParams": "astro3s.inference.network",
    "tile_boxes": "astro3s.inference.network",
    "segment_preprocessed": "astro3s.inference.segment",
    "InferenceOptions": "astro3s.inference.pipeline",
    "MovieResult": "astro3s.inference.pipeline",
    "infer_movie": "astro3s.inference.pipeline",
    "load_inference_model": "astro3s.inference.pipeline",
    "movie_output_dir": "astro3s.inference.pipeline",
    "segment_movie": "astro3s.inference.cells",
    "run_batch": "astro3s.inference.batch",
    "read_index": "astro3s.inference.batch",
    "OUTPUT_FILES": "astro3s.inference.outputs",
    "is_complete": "astro3s.inference.outputs",
}

__all__ = sorted(_LAZY)


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'astro3s.inference' has no attribute {name!r}")
