"""The console scripts as a user runs them: subprocesses, exit codes, messages, multirun."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

BIN = Path(sys.executable).parent


def _run(args: list[str], cwd: Path) -> subprocess.CompletedProcess:
    exe = BIN / args[0]
    if not exe.exists():
        pytest.fail(f"console script {args[0]} is not installed; run `pip install -e .`")
    env = {**os.environ, "WANDB_MODE": "disabled", "HYDRA_FULL_ERROR": "0"}
    return subprocess.run([str(exe), *args[1:]], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=300)


@pytest.mark.parametrize(("command", "typo", "expected"), [
    ("astro3s-simulate", "simulatee=tiny", "simulatee (did you mean simulate?)"),
    ("astro3s-train", "model=unett", "Could not find 'model/unett'"),
    ("astro3s-train", "trainer.max_epoch=1", "trainer.max_epoch (did you mean trainer.max_epochs?)"),
    ("astro3s-eval", "iou_treshold=0.5", "iou_treshold"),
    ("astro3s-preprocess", "preprocess=astr", "Could not find 'preprocess/astr'"),
    ("astro3s-tune-preprocess", "fovz=3", "fovz"),
    ("astro3s-infer", "correlation.radus=3", "correlation.radus"),
    ("astro3s-infer", "rules.visible_process=false", "rules.visible_process (did you mean rules.visible_processes?)"),
])
def test_config_typo_is_one_line_and_exit_2_for_every_command(tmp_path: Path, command: str, typo: str,
                                                              expected: str) -> None:
    result = _run([command, typo], tmp_path)
    assert result.returncode == 2, result.stderr[-2000:]
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("astro3s: error:") and expected in lines[0], result.stderr
    assert "Fix:" in lines[0] and f"{command} --cfg job" in lines[0]


def test_unknown_preset_fails_with_one_line(tmp_path: Path) -> None:
    result = _run(["astro3s-simulate", "simulate=tinyy", f"out={tmp_path}"], tmp_path)
    assert result.returncode == 2
    lines = [line for line in result.stderr.splitlines() if line.startswith("astro3s: error")]
    assert len(lines) == 1 and "tinyy" in lines[0] and "d1_like" in lines[0]
    assert "Traceback" not in result.stderr


def test_joblib_multirun_of_two_simulations(tmp_path: Path) -> None:
    pytest.importorskip("hydra_plugins.hydra_joblib_launcher")
    out = tmp_path / "movies"
    result = _run(["astro3s-simulate", "-m", "simulate=tiny", "seed=0,1", f"out={out}",
                   "hydra/launcher=joblib", "hydra.launcher.n_jobs=2", "extras=quiet",
                   f"hydra.sweep.dir={tmp_path / 'sweep'}"], tmp_path)
    assert result.returncode == 0, result.stderr[-2000:]
    assert sorted(p.name for p in out.iterdir()) == ["tiny_s0000", "tiny_s0001"]
    for folder in out.iterdir():
        assert (folder / f"{folder.name}.tif").stat().st_size > 0
        assert (folder / "ground_truth" / "soma.tif").exists()
    assert (tmp_path / "sweep" / "multirun.yaml").exists()


def test_run_folder_holds_config_and_log(tmp_path: Path) -> None:
    out = tmp_path / "movies"
    result = _run(["astro3s-simulate", "simulate=tiny", f"out={out}", "extras=quiet",
                   f"hydra.run.dir={tmp_path / 'run'}"], tmp_path)
    assert result.returncode == 0, result.stderr[-2000:]
    run = tmp_path / "run"
    assert (run / ".hydra" / "config.yaml").exists()
    assert (run / "simulate.log").read_text().strip()
    shutil.rmtree(out)


@pytest.mark.parametrize("case", ["nan", "flat", "image2d", "avi", "missing"])
def test_preprocess_bad_movie_gives_one_line(tmp_path: Path, case: str) -> None:
    import numpy as np

    movie = np.random.default_rng(0).random((20, 32, 32)).astype(np.float32)
    path = tmp_path / f"{case}.npy"
    if case == "nan":
        movie[7, 3, 3] = np.nan
        np.save(path, movie)
    elif case == "flat":
        np.save(path, np.ones_like(movie))
    elif case == "image2d":
        np.save(path, movie[0])
    elif case == "avi":
        path = tmp_path / "movie.avi"
        path.write_bytes(b"not a movie")
    result = _run(["astro3s-preprocess", f"input={path}", f"out={tmp_path / 'out'}", "extras=quiet"],
                  tmp_path)
    assert result.returncode == 2
    lines = [line for line in result.stderr.splitlines() if line.startswith("astro3s: error")]
    assert len(lines) == 1, result.stderr
    assert str(path) in lines[0] and "Fix:" in lines[0]
    assert "Traceback" not in result.stderr
    expected = {"nan": "frame 7", "flat": "constant", "image2d": "(T, H, W)", "avi": ".avi",
                "missing": "does not exist"}[case]
    assert expected in lines[0]
    assert not (tmp_path / "out" / case).exists() or not any((tmp_path / "out" / case).iterdir())


@pytest.mark.parametrize("command", ["astro3s-infer", "astro3s-train", "astro3s-simulate", "astro3s-preprocess",
                                     "astro3s-eval", "astro3s-tune-preprocess", "astro3s-export"])
def test_help_is_short_and_specific(tmp_path: Path, command: str) -> None:
    result = _run([command, "--help"], tmp_path)
    assert result.returncode == 0, result.stderr[-2000:]
    text = result.stdout
    assert text.startswith(f"{command}: ") and "Options that matter" in text and "Examples:" in text
    assert text.count(f"\n  {command} ") >= 2  # two examples of this command
    assert f"{command} --cfg job" in text and len(text.splitlines()) <= 25
    assert "== Config ==" not in text and "Powered by Hydra" not in text


def test_infer_help_lists_the_rules_as_printed(tmp_path: Path) -> None:
    # --help names `astro3s-infer --cfg job --package rules` for every rule setting: it must work as printed
    assert "astro3s-infer --cfg job --package rules" in _run(["astro3s-infer", "--help"], tmp_path).stdout
    result = _run(["astro3s-infer", "--cfg", "job", "--package", "rules"], tmp_path)
    assert result.returncode == 0, result.stderr[-2000:]
    assert "visible_processes: true" in result.stdout and "border_sliver_ratio: 1.0" in result.stdout


def test_a_rule_swept_as_the_readme_prints_it(tmp_path: Path, tiny_movie: Path) -> None:
    # README "Using astro3s": one output folder per setting, the setting recorded in summary.json
    import json

    result = _run(["astro3s-infer", "-m", f"input={tiny_movie}", "out=results/visible_${rules.visible_processes}",
                   "rules.visible_processes=true,false", "extras=quiet", "figures=false"], tmp_path)
    assert result.returncode == 0, result.stderr[-2000:]
    for value in (True, False):
        summary = json.loads((tmp_path / "results" / f"visible_{value}" / tiny_movie.stem / "summary.json").read_text())
        assert summary["parameters"]["rules"]["visible_processes"] is value
    on = json.loads((tmp_path / "results" / "visible_True" / tiny_movie.stem / "summary.json").read_text())
    assert "unseen_process_px" in on["segmentation"]["counts"]
