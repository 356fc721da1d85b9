"""Each cell's processes kept to at most ``max_process_ratio`` times its soma's area (2026-12-05, evening)."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
from _hydra import compose_config
from hydra.core.global_hydra import GlobalHydra
from hydra.core.hydra_config import HydraConfig


@pytest.fixture(autouse=True)
def _no_hydra_state():
    yield
    GlobalHydra.instance().clear()
    HydraConfig.instance().cfg = None


def _star_cell() -> tuple[np.ndarray, np.ndarray]:
    """Cell 1: a 5x5 soma with four 1-px wide arms, 20 px long each (80 process px, 3.2x the soma);
    cell 2: a 5x5 soma with one 10-px arm (0.4x); an orphan process piece with id 3 and no soma."""
    soma = np.zeros((80, 80), np.int32)
    processes = np.zeros_like(soma)
    soma[28:33, 28:33] = 1
    processes[30, 33:53] = 1
    processes[30, 8:28] = 1
    processes[33:53, 30] = 1
    processes[8:28, 30] = 1
    soma[60:65, 60:65] = 2
    processes[62, 65:75] = 2
    processes[70:72, 5:8] = 3
    return soma, processes


def test_processes_over_the_limit_keep_the_pixels_nearest_their_soma() -> None:
    from astro3s.postprocess import limit_process_area

    soma, processes = _star_cell()
    out = limit_process_area(soma, processes, max_ratio=2.0)
    # cell 1 keeps 2 x 25 = 50 of its 80 pixels: the inner 12-13 of each arm (distance ties in raster order)
    assert (out == 1).sum() == 50
    kept_distance = np.abs(np.argwhere(out == 1) - 30).max(axis=1) - 2
    dropped_distance = np.abs(np.argwhere((processes == 1) & (out == 0)) - 30).max(axis=1) - 2
    assert kept_distance.max() <= dropped_distance.min()
    assert ((out == 1) <= (processes == 1)).all()                  # a subset: nothing added
    np.testing.assert_array_equal(out == 2, processes == 2)         # under the limit: unchanged
    np.testing.assert_array_equal(out == 3, processes == 3)         # no soma: unchanged
    assert out.dtype == np.int32


def test_a_cut_that_strands_a_piece_drops_it() -> None:
    from astro3s.postprocess import limit_process_area

    soma = np.zeros((40, 60), np.int32)
    soma[18:21, 18:21] = 1                                            # 9 px
    processes = np.zeros_like(soma)
    processes[19, 21:51] = 1                                          # an arm 30 px long ...
    processes[5:8, 20:23] = 1                                         # ... and a nearer 9-px piece not joined to it
    out = limit_process_area(soma, processes, max_ratio=2.0)          # 18 px allowed
    assert (out[5:8, 20:23] == 0).all()                               # stranded: gone although near
    assert (out[19, 21:30] == 1).all() and (out > 0).sum() <= 18


def test_the_limit_must_be_positive() -> None:
    from astro3s.postprocess import limit_process_area

    soma, processes = _star_cell()
    with pytest.raises(ValueError, match="max_ratio"):
        limit_process_area(soma, processes, max_ratio=0)


@pytest.mark.parametrize("value", [0, -1.0, "many", True])
def test_inference_options_refuse_a_bad_limit_in_one_line(value) -> None:
    from astro3s.errors import ConfigError
    from astro3s.inference import InferenceOptions

    with pytest.raises(ConfigError, match=r"max_process_ratio must be a number > 0 \(e\.g\. max_process_ratio=2\.5\)"):
        InferenceOptions(preprocess=None, max_process_ratio=value)


def test_astro3s_infer_sets_and_lifts_the_limit(tmp_path) -> None:
    from astro3s.cli.infer import inference_setup
    from astro3s.inference.pipeline import MAX_PROCESS_RATIO

    base = [f"input={tmp_path / 'movie.tif'}", f"out={tmp_path / 'out'}", "device=cpu", "extras=quiet"]
    _, default = inference_setup(compose_config("infer", base, output_dir=tmp_path / "a"))
    _, lifted = inference_setup(compose_config("infer", [*base, "max_process_ratio=null"], output_dir=tmp_path / "b"))
    _, tighter = inference_setup(compose_config("infer", [*base, "max_process_ratio=1.5"], output_dir=tmp_path / "c"))
    assert default.max_process_ratio == MAX_PROCESS_RATIO == 2.5
    assert lifted.max_process_ratio is None and tighter.max_process_ratio == 1.5


def test_segment_movie_applies_the_limit_last(tiny_movie) -> None:
    from astro3s.inference import load_inference_model
    from astro3s.inference.cells import segment_movie
    from astro3s.io import read_movie
    from astro3s.preprocess import preprocess

    model, options = load_inference_model("default", device="cpu")
    with read_movie(tiny_movie) as movie:
        pre = preprocess(movie, options.preprocess, progress=False)
        _, free, _ = segment_movie(pre, model, dataclasses.replace(options, max_process_ratio=None))
        _, limited, _ = segment_movie(pre, model, dataclasses.replace(options, max_process_ratio=0.5))
    np.testing.assert_array_equal(limited.soma, free.soma)
    assert free.n_cells >= 1 and (free.process_area > 0.5 * free.soma_area).any()   # the limit has work to do
    assert (limited.process_area <= np.floor(0.5 * limited.soma_area)).all()
    assert ((limited.processes == free.processes) | (limited.processes == 0)).all()  # only removes
    np.testing.assert_array_equal(limited.process_area, np.bincount(limited.processes.ravel(),
                                                                    minlength=limited.n_cells + 1)[1:])
