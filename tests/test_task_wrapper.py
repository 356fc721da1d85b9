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


def test_the_last_log_line_says_failed_or_done(caplog) -> None:
    # a run that stopped on an error must not end its log with "done"
    @task_wrapper
    def failing(cfg):
        raise ConfigError("max_process_ratio must be a number > 0")

    @task_wrapper
    def fine(cfg):
        return 7

    with caplog.at_level("INFO", logger="astro3s.cli._task"):
        with pytest.raises(SystemExit):
            failing(_cfg())
        assert fine(_cfg()) == 7
    last = [r.getMessage() for r in caplog.records if r.name == "astro3s.cli._task" and " s" in r.getMessage()
            and ("done in" in r.getMessage() or "failed after" in r.getMessage())]
    assert last[0].startswith("failing: failed after") and last[1].startswith("fine: done in")


def test_seed_makes_runs_repeatable() -> None:
    @task_wrapper
    def draw(cfg):
        return np.random.rand(3)

    assert np.array_equal(draw(_cfg()), draw(_cfg()))
    assert seed_everything(None) >= 0


def test_require_names_the_key() -> None:
    with pytest.raises(ConfigError, match="`input` is required"):
        require(_cfg(input=None), "input", "pass input=MOVIE")


def test_a_user_error_inside_instantiate_is_one_line(capsys) -> None:
    from hydra.utils import instantiate

    @task_wrapper
    def build(cfg):
        return instantiate({"_target_": "astro3s.preprocess.PreprocessParams", "th1": 2.0})

    with pytest.raises(SystemExit) as exc:
        build(_cfg())
    assert exc.value.code == 2
    assert "th1 must be a fraction" in capsys.readouterr().err


def test_in_a_multirun_a_user_error_fails_the_job_not_the_sweep(tmp_path) -> None:
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra
    from hydra.core.hydra_config import HydraConfig

    from astro3s.cli._config import CONFIG_DIR
    from astro3s.cli._task import JobFailed, sweep_job

    @task_wrapper
    def failing(cfg):
        raise ConfigError("bad value")

    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3"):
        for mode, expected in (("RUN", SystemExit), ("MULTIRUN", JobFailed)):
            cfg = compose(config_name="eval", overrides=[f"hydra.mode={mode}", "hydra.job.num=3",
                                                         f"hydra.runtime.output_dir={tmp_path}"],
                          return_hydra_config=True)
            HydraConfig.instance().set_config(cfg)
            with pytest.raises(expected, match="job 3" if expected is JobFailed else None):
                sweep_job(failing, _cfg())
    assert sweep_job(task_wrapper(lambda cfg: 7), _cfg()) == 7


def test_metric_value_names_the_logged_metrics() -> None:
    from astro3s.cli._task import metric_value

    assert metric_value({"val/astra_f1": 0.5}, "val/astra_f1") == 0.5
    assert metric_value({}, None) is None
    with pytest.raises(ConfigError, match=r"val/astra_f1.*logged: val/loss"):
        metric_value({"val/loss": 1.0}, "val/astra_f1")


def test_extras_torch_threads_caps_torch_and_is_checked(tmp_path) -> None:
    import torch
    from omegaconf import OmegaConf

    from astro3s.cli._task import apply_extras
    from astro3s.errors import ConfigError

    before = torch.get_num_threads()
    try:
        apply_extras(OmegaConf.create({"extras": {"torch_threads": 1}, "paths": {"output_dir": str(tmp_path)}}))
        assert torch.get_num_threads() == 1
        with pytest.raises(ConfigError, match="torch_threads"):
            apply_extras(OmegaConf.create({"extras": {"torch_threads": 0},
                                           "paths": {"output_dir": str(tmp_path)}}))
    finally:
        torch.set_num_threads(before)


@pytest.mark.parametrize(("body", "code", "stderr"), [
    ("pass", 0, ""),
    ("raise SystemExit(3)", 3, ""),
    ("raise SystemExit('astro3s: a message')", 1, "astro3s: a message"),
    ("raise RuntimeError('a bug')", 1, "RuntimeError: a bug"),
])
def test_exit_without_teardown_flushes_runs_atexit_and_keeps_the_exit_code(tmp_path, body, code, stderr) -> None:
    """The console scripts end without Python's teardown, but nothing a normal exit does for the user is lost:
    buffered output, log records, atexit handlers and the exit code; a bug still prints its traceback."""
    import subprocess
    import sys

    marker = tmp_path / "atexit.txt"
    script = f"""
import atexit, logging, pathlib, sys, threading, time
from astro3s.cli._task import exit_without_teardown
logging.basicConfig(filename={str(tmp_path / 'run.log')!r}, level=logging.INFO)
atexit.register(lambda: pathlib.Path({str(marker)!r}).write_text("ran"))
def main():
    print("output " * 2000)  # buffered: a pipe is not a terminal
    logging.getLogger("astro3s").info("logged")
    # a thread still at work when main returns is waited for, as a normal exit does
    threading.Thread(target=lambda: (time.sleep(0.3), logging.getLogger("astro3s").info("late"))).start()
    {body}
exit_without_teardown(main)
"""
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60)
    assert proc.returncode == code, proc.stderr
    assert proc.stdout.count("output") == 2000
    assert stderr in proc.stderr
    assert "logged" in (tmp_path / "run.log").read_text()
    assert "late" in (tmp_path / "run.log").read_text()
    assert marker.read_text() == "ran"


def test_startup_without_gc_turns_the_collector_back_on_and_freezes_startup():
    import gc

    from astro3s.cli._task import end_startup, startup_without_gc

    assert gc.isenabled()
    frozen = gc.get_freeze_count()
    end_startup()  # outside a start-up block: nothing
    # (frozen objects of earlier tests may be freed meanwhile, by another thread too: the count never grows here)
    assert gc.isenabled() and gc.get_freeze_count() <= frozen
    try:
        with startup_without_gc():
            assert not gc.isenabled()
            made = [[i] for i in range(1000)]  # objects of the start-up
            end_startup()
            assert gc.isenabled() and gc.get_freeze_count() >= frozen + 1000
            end_startup()  # twice: no second freeze
        assert gc.isenabled()
        del made
        # a start-up that fails before its end: the collector is back on, nothing frozen
        count = gc.get_freeze_count()
        with pytest.raises(RuntimeError), startup_without_gc():
            assert not gc.isenabled()
            raise RuntimeError("the model could not be loaded")
        assert gc.isenabled() and gc.get_freeze_count() <= count
        # a collector the caller had turned off stays off
        gc.disable()
        with startup_without_gc():
            end_startup()
            assert not gc.isenabled()
        assert not gc.isenabled()
    finally:
        gc.enable()
        gc.unfreeze()


def test_preprocess_entry_point_freezes_its_start_up(tiny_movie, tmp_path) -> None:
    # astro3s-preprocess, like astro3s-infer, runs its imports with the collector off and freezes them
    # (a fresh interpreter: the test session's own objects stay out of it)
    import json
    import os
    import subprocess
    import sys

    script = ("import gc, json, sys\n"
              "sys.argv = ['astro3s-preprocess', *sys.argv[1:]]\n"
              "from astro3s.cli.preprocess import main\n"
              "main()\n"
              "print('REPORT ' + json.dumps({'enabled': gc.isenabled(), 'frozen': gc.get_freeze_count()}))\n")
    proc = subprocess.run([sys.executable, "-c", script, f"input={tiny_movie}", f"out={tmp_path / 'out'}",
                           "figure=false", f"hydra.run.dir={tmp_path / 'run'}", "extras=quiet"],
                          capture_output=True, text=True, timeout=600, cwd=tmp_path,
                          env={**os.environ, "WANDB_MODE": "disabled"})
    lines = [line for line in proc.stdout.splitlines() if line.startswith("REPORT ")]
    assert proc.returncode == 0 and lines, proc.stderr[-2000:]
    report = json.loads(lines[-1][len("REPORT "):])
    assert report["enabled"] and report["frozen"] > 100_000
    assert (tmp_path / "out").is_dir()
