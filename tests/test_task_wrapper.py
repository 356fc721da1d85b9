"""The shared entry-point wrapper turns user errors into one clear line."""

from __future__ import annotations

import numpy as np
import pytest
from omegaconf import OmegaConf

from astro3s.cli._task import require, seed_everything, task_wrapper
from astro3s.errors import ConfigError, InputError


def _cfg(**kw):
    return OmegaConf.create({"seed": 3, "extras": {"print_config": False}, **kw})


def test_user_error_exits_2_with_one_line(capsys) -> None:
    @task_wrapper
    def failing(cfg):
        raise InputError("/data/movie.tif", "is empty (0 frames).", "check the export.")

    with pytest.raises(SystemExit) as exc:
        failing(_cfg())
    assert exc.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1
    assert "/data/movie.tif" in err[0] and "Fix: check the export." in err[0]
    assert "Traceback" not in err[0]


def test_bug_keeps_its_traceback() -> None:
    @task_wrapper
    def buggy(cfg):
        raise ZeroDivisionError("bug")

    with pytest.raises(ZeroDivisionError):
        buggy(_cfg())


def test_seed_makes_runs_repeatable() -> None:
    @task_wrapper
    def draw(cfg):
        return np.random.rand(3)

    assert np.array_equal(draw(_cfg()), draw(_cfg()))
    assert seed_everything(None) >= 0


def test_require_names_the_key() -> None:
    with pytest.raises(ConfigError, match="`input` is required"):
        require(_cfg(input=None), "input", "pass input=MOVIE")
