"""experiments/aggregate_folds.py and experiments/compare.py on fake run folders."""

from __future__ import annotations

import csv
import importlib
import json
import sys
from pathlib import Path

import pytest
import yaml

EXPERIMENTS = Path(__file__).resolve().parents[1] / "experiments"


@pytest.fixture(scope="module")
def scripts():
    """The two scripts as modules (they import their helper ``_runs`` from their own folder)."""
    sys.path.insert(0, str(EXPERIMENTS))
    try:
        yield importlib.import_module("aggregate_folds"), importlib.import_module("compare")
    finally:
        sys.path.remove(str(EXPERIMENTS))


def _astra(f1: float, *, processes: bool = True) -> dict:
    proc = f1 - 0.2 if processes else None
    return {"detection_precision": f1, "detection_recall": f1, "detection_f1": f1,
            "soma_precision": f1 - 0.1, "soma_recall": f1 - 0.1, "soma_f1": f1 - 0.1,
            "process_precision": proc, "process_recall": proc, "process_f1": proc,
            "n_pred": 3, "n_gt": 3, "n_matched": 3, "n_cell_pairs": 3, "n_fovs": 1}


def fake_run(folder: Path, *, fold: int, fov: str, f1: float, model: str = "dense_up", data: str = "d1_standin",
             overrides: list[str] | None = None, objective: float | None = None, processes: bool = True) -> Path:
    """A run folder as astro3s-train leaves it: scores.json and .hydra/{config,overrides}.yaml."""
    (folder / ".hydra").mkdir(parents=True)
    (folder / ".hydra" / "config.yaml").write_text("task_name: x\n")
    overrides = overrides if overrides is not None else [f"data.fold={fold}"]
    (folder / ".hydra" / "overrides.yaml").write_text(yaml.safe_dump(overrides))
    astra = _astra(f1, processes=processes)
    metrics = {f"test/{k}": v for k, v in astra.items() if k.endswith(("_f1", "precision", "recall")) and v is not None}
    metrics["test/astra_f1"] = (astra["detection_f1"] + astra["soma_f1"] + (astra["process_f1"] or 0.0)) / 3
    scores = {"task_name": f"paper_d1_{data}_{model}", "model": model, "data": data,
              "standin": "standin" in data, "movies": "stand-in" if "standin" in data else "real",
              "dataset": "D1", "split": "loo", "fold": fold,
              "fovs": {"train": [], "val": [fov], "test": [fov]}, "seed": 1, "checkpoint": None,
              "test_ckpt": "last", "overrides": overrides, "metrics": metrics, "astra": astra,
              "per_fov": {fov: astra}, "optimized_metric": "val/astra_f1" if objective is not None else None,
              "optimized_value": objective}
    (folder / "scores.json").write_text(json.dumps(scores))
    return folder


def fake_multirun(root: Path, f1s: list[float], **kw) -> Path:
    root.mkdir(parents=True)
    (root / "multirun.yaml").write_text("hydra: {}\n")
    for fold, f1 in enumerate(f1s):  # loop over folds
        fake_run(root / str(fold), fold=fold, fov=f"RoiSet_SMALL_{fold + 1:03d}", f1=f1, **kw)
    return root


def test_aggregate_folds_writes_the_paper_table(scripts, tmp_path: Path) -> None:
    aggregate, _ = scripts
    root = fake_multirun(tmp_path / "multi", [0.9, 0.7, 0.8])
    (root / "3" / ".hydra").mkdir(parents=True)  # a failed fold: config, no scores
    (root / "3" / ".hydra" / "config.yaml").write_text("task_name: x\n")
    out = tmp_path / "results" / "paper_d1_standin.md"
    assert aggregate.main([str(root), "--out", str(out)]) == 0
    text = out.read_text()
    assert "**stand-ins**" in text and "`dense_up`" in text and "`d1_standin`" in text
    assert "| 0 | RoiSet_SMALL_001 | 0.900 |" in text
    assert "**mean ± sd** | 0.800 ± 0.100 |" in text  # detection P of 0.9, 0.7, 0.8
    assert "without scores" in text and str(Path("multi") / "3") in text
    rows = list(csv.DictReader(out.with_suffix(".csv").open()))
    assert [r["fov"] for r in rows] == ["RoiSet_SMALL_001", "RoiSet_SMALL_002", "RoiSet_SMALL_003", "mean", "sd"]
    assert float(rows[3]["soma_f1"]) == pytest.approx(0.7) and float(rows[4]["detection_f1"]) == pytest.approx(0.1)
    assert out.with_suffix(".png").stat().st_size > 1000


def test_aggregate_folds_soma_only_and_refusals(scripts, tmp_path: Path, capsys) -> None:
    aggregate, _ = scripts
    root = fake_multirun(tmp_path / "d3", [0.9, 0.8], data="d3", processes=False)
    assert aggregate.main([str(root)]) == 0
    text = (root / "folds.md").read_text()
    assert "the real movies" in text and "| – | – | – |" in text
    root = fake_multirun(tmp_path / "d3_zero", [0.9, 0.8], data="d3")
    assert aggregate.main([str(root), "--soma-only"]) == 0
    text = (root / "folds.md").read_text()
    assert "| 0 | RoiSet_SMALL_001 | 0.900 | 0.900 | 0.900 | 0.800 | 0.800 | 0.800 | – | – | – |" in text
    assert "annotations are soma-only" in text
    # two multiruns of one protocol in one folder: a FOV tested twice
    both = tmp_path / "both"
    fake_multirun(both / "a", [0.9])
    fake_multirun(both / "b", [0.8])
    assert aggregate.main([str(both)]) == 2
    assert "tested by two runs" in capsys.readouterr().err
    mixed = tmp_path / "mixed"
    fake_multirun(mixed / "a", [0.9], model="unet")
    fake_run(mixed / "b" / "0", fold=1, fov="RoiSet_SMALL_002", f1=0.8)
    assert aggregate.main([str(mixed)]) == 2
    assert "mix several" in capsys.readouterr().err
    assert aggregate.main([str(tmp_path / "nothing")]) == 2
    (tmp_path / "empty").mkdir()
    assert aggregate.main([str(tmp_path / "empty")]) == 2
    assert "no scores.json" in capsys.readouterr().err


def test_compare_groups_a_model_comparison(scripts, tmp_path: Path) -> None:
    _, compare = scripts
    dense = fake_multirun(tmp_path / "dense", [0.9, 0.8, 0.85],
                          overrides=None)  # experiment fixed on the command line: only the fold varies
    unet = fake_multirun(tmp_path / "unet", [0.6, 0.7], model="unet")
    out = tmp_path / "cmp" / "models.md"
    assert compare.main([str(dense), str(unet), "--out", str(out)]) == 0
    text = out.read_text()
    lines = [line for line in text.splitlines() if line.startswith("| ")]
    assert lines[0].startswith("| model | runs | test/detection_f1")
    assert lines[1].startswith("| dense_up | 3 | 0.850 ± 0.050") and lines[2].startswith("| unet | 2 |")
    assert "**stand-ins**" in text
    rows = list(csv.DictReader(out.with_suffix(".csv").open()))
    assert len(rows) == 5 and {r["model"] for r in rows} == {"dense_up", "unet"}
    assert out.with_suffix(".png").stat().st_size > 1000


def test_compare_ranks_sweep_trials_by_their_objective(scripts, tmp_path: Path) -> None:
    _, compare = scripts
    root = tmp_path / "sweep"
    for trial, (lr, objective) in enumerate([(1e-4, 0.5), (3.3333e-3, 0.7), (1e-5, None)]):
        fake_run(root / str(trial), fold=0, fov="a", f1=0.8, data="synthetic",
                 overrides=[f"model.optimizer.lr={lr}", "hparams_search=default_optuna", "data.preset=tiny"],
                 objective=objective)
    assert compare.main([str(root)]) == 0
    text = (root / "compare.md").read_text()
    lines = [line for line in text.splitlines() if line.startswith("| ")]
    assert lines[0].startswith("| model.optimizer.lr | runs |") and lines[0].rstrip(" |").endswith("objective")
    assert lines[1].startswith("| 0.003333 | 1 |") and lines[1].rstrip(" |").endswith("0.700")
    assert lines[3].startswith("| 1e-05 | 1 |") and lines[3].rstrip(" |").endswith("–")
    assert compare.main([str(root), "--by", "data.preset"]) == 0
    assert "| tiny | 3 |" in (root / "compare.md").read_text()
    assert compare.main([str(root), "--metric", "val/nothing"]) == 2
