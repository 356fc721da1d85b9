"""astro3s-eval on label-image folders and RoiSet zips, its JSON and its errors."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import tifffile
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, open_dict

from astro3s.cli._config import CONFIG_DIR
from astro3s.cli.eval import load_pairs, run_eval
from astro3s.errors import InputError

REPO = Path(__file__).resolve().parents[1]
TOP_KEYS = {"detection_precision", "detection_recall", "detection_f1", "soma_precision",
            "soma_recall", "soma_f1", "process_precision", "process_recall", "process_f1",
            "n_pred", "n_gt", "n_matched", "instance", "per_fov"}


def _cfg(tmp_path: Path, **overrides) -> DictConfig:
    GlobalHydra.instance().clear()
    args = [f"{k}={v}" for k, v in overrides.items()]
    with initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3"):
        cfg = compose(config_name="eval", overrides=args, return_hydra_config=True)
    HydraConfig.instance().set_config(cfg)
    with open_dict(cfg):
        cfg.paths.output_dir = str(tmp_path / "run")
        cfg.paths.log_dir = str(tmp_path / "logs")
        cfg.extras.print_config = False
    return cfg


def _write_fov(folder: Path, soma: np.ndarray, processes: np.ndarray | None,
               domains: np.ndarray | None = None) -> None:
    folder.mkdir(parents=True)
    tifffile.imwrite(folder / "soma.tif", soma)
    if processes is not None:
        tifffile.imwrite(folder / "processes.tif", processes)
    if domains is not None:
        tifffile.imwrite(folder / "domains.tif", domains)


def _cells(shift: int = 0) -> tuple[np.ndarray, np.ndarray]:
    soma = np.zeros((96, 96), np.uint16)
    proc = np.zeros((96, 96), np.uint16)
    soma[20:30, 20 + shift:30 + shift] = 1
    proc[25, 30 + shift:50 + shift] = 1
    soma[60:70, 60:70] = 2
    proc[70:85, 65] = 2
    return soma, proc


@pytest.fixture
def label_folders(tmp_path: Path) -> tuple[Path, Path]:
    pred, gt = tmp_path / "pred", tmp_path / "gt"
    _write_fov(pred / "fov_a", *_cells(shift=1))
    _write_fov(pred / "fov_b", *_cells())
    # ground truth as the simulator writes it: <name>/ground_truth/
    _write_fov(gt / "fov_a" / "ground_truth", *_cells())
    _write_fov(gt / "fov_b" / "ground_truth", *_cells(), domains=np.maximum(*_cells()))
    return pred, gt


def _annotations() -> Path:
    from astro3s.resources import annotations_dir

    folder = annotations_dir()
    if not (folder / "consensus" / "D1").is_dir():
        if os.environ.get("CI"):
            pytest.fail(f"ASTRA annotations not found at {folder} (set ASTRO3S_ANNOTATIONS)")
        pytest.skip(f"ASTRA annotations not found at {folder}")
    return folder


def test_label_image_folders(label_folders, tmp_path: Path, capsys) -> None:
    pred, gt = label_folders
    out = tmp_path / "scores.json"
    run_eval(_cfg(tmp_path, pred=pred, gt=gt, out=out))
    scores = json.loads(out.read_text())
    assert TOP_KEYS <= set(scores)
    assert set(scores["per_fov"]) == {"fov_a", "fov_b"}
    assert scores["detection_f1"] == 1.0 and scores["n_gt"] == 4
    assert scores["soma_f1"] == pytest.approx((0.9 + 1 + 1 + 1) / 4)
    assert scores["per_fov"]["fov_b"]["process_f1"] == 1.0
    assert scores["instance"]["detection_f1"] == 1.0
    assert {"domain_iou", "soma_f1", "process_f1"} <= set(scores["instance"])
    assert scores["instance"]["domain_iou"] is None  # only the ground truth has domains
    table = capsys.readouterr().out
    assert "fov_a" in table and "pooled" in table


def test_domains_on_both_sides_give_domain_iou(tmp_path: Path) -> None:
    soma, proc = _cells()
    domains = np.maximum(soma, proc)
    _write_fov(tmp_path / "pred" / "f", soma, proc, domains)
    _write_fov(tmp_path / "gt" / "f", soma, proc, domains)
    out = tmp_path / "scores.json"
    run_eval(_cfg(tmp_path, pred=tmp_path / "pred", gt=tmp_path / "gt", out=out))
    assert json.loads(out.read_text())["instance"]["domain_iou"] == 1.0


def test_soma_only_ground_truth_reports_null_process_scores(tmp_path: Path) -> None:
    soma, _ = _cells()
    _write_fov(tmp_path / "pred" / "f", soma, None)
    _write_fov(tmp_path / "gt" / "f", soma, np.zeros_like(soma))
    out = tmp_path / "scores.json"
    run_eval(_cfg(tmp_path, pred=tmp_path / "pred", gt=tmp_path / "gt", out=out))
    scores = json.loads(out.read_text())
    assert scores["soma_only"] is True and scores["process_f1"] is None
    assert scores["instance"]["process_f1"] is None and scores["soma_f1"] == 1.0


def test_roiset_zips_against_themselves(tmp_path: Path) -> None:
    consensus = _annotations() / "consensus" / "D1"
    folder = tmp_path / "zips"
    folder.mkdir()
    for name in ("RoiSet_SMALL_001.zip", "RoiSet_SMALL_002.zip"):
        shutil.copy(consensus / name, folder / name)
    out = tmp_path / "scores.json"
    run_eval(_cfg(tmp_path, pred=folder, gt=folder, shape="[256,256]", out=out))
    scores = json.loads(out.read_text())
    for key in ("detection_f1", "soma_f1", "process_f1"):
        assert scores[key] == 1.0 and scores["instance"][key] == 1.0
    assert set(scores["per_fov"]) == {"SMALL_001", "SMALL_002"}  # matching names


def test_missing_counterpart_is_one_clear_error(label_folders, tmp_path: Path, capsys) -> None:
    pred, gt = label_folders
    shutil.rmtree(gt / "fov_b")
    with pytest.raises(InputError, match=r"no ground truth in .*gt for fov_b/soma.tif") as err:
        load_pairs(pred, gt, None, fill="astra")
    assert err.value.fix and "same FOVs" in err.value.fix
    # through the entry point: exit status 2 and one line, no traceback
    with pytest.raises(SystemExit) as exit_:
        run_eval(_cfg(tmp_path, pred=pred, gt=gt, out=tmp_path / "s.json"))
    assert exit_.value.code == 2
    message = capsys.readouterr().err.strip().splitlines()
    assert len(message) == 1 and "fov_b" in message[0] and "Fix:" in message[0]
    assert not (tmp_path / "s.json").exists()


def test_shape_mismatch_and_empty_folder(label_folders, tmp_path: Path) -> None:
    pred, gt = label_folders
    tifffile.imwrite(pred / "fov_a" / "soma.tif", np.zeros((64, 64), np.uint16))
    with pytest.raises(InputError, match="shape"):
        load_pairs(pred, gt, None, fill="astra")
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(InputError, match="holds no RoiSet zip"):
        load_pairs(empty, gt, None, fill="astra")
    with pytest.raises(InputError, match="not found"):
        load_pairs(tmp_path / "nowhere", gt, None, fill="astra")


def test_roiset_needs_a_shape(tmp_path: Path) -> None:
    consensus = _annotations() / "consensus" / "D1"
    folder = tmp_path / "zips"
    folder.mkdir()
    shutil.copy(consensus / "RoiSet_SMALL_001.zip", folder)
    with pytest.raises(InputError, match=r"pass shape=\[H,W\]"):
        load_pairs(folder, folder, None, fill="astra")


def test_module_entry_point(label_folders, tmp_path: Path) -> None:
    pred, gt = label_folders
    out = tmp_path / "cli.json"
    done = subprocess.run(
        [sys.executable, "-m", "astro3s.cli.eval", f"pred={pred}", f"gt={gt}", f"out={out}",
         f"paths.log_dir={tmp_path / 'logs'}", "extras.print_config=false"],
        capture_output=True, text=True, cwd=tmp_path, timeout=120)
    assert done.returncode == 0, done.stderr
    assert json.loads(out.read_text())["detection_f1"] == 1.0


def test_pred_fill_scores_our_own_roisets_exactly(tmp_path: Path) -> None:
    from astro3s.io import write_roiset

    gt = tmp_path / "gt"
    _write_fov(gt / "fov_a", *_cells())
    pred = tmp_path / "pred"
    write_roiset(*_cells(), pred / "fov_a.zip")
    out = tmp_path / "scores.json"
    # astro3s' RoiSets outline pixel edges: filled by pixel centres they give the labels back
    run_eval(_cfg(tmp_path, pred=pred, gt=gt, out=out, pred_fill="imagej"))
    exact = json.loads(out.read_text())
    assert exact["pred_fill"] == "imagej" and exact["fill"] == "astra"
    assert exact["soma_f1"] == 1.0 and exact["process_f1"] == 1.0
    # ASTRA's inclusive rule grows them by half a pixel all round
    run_eval(_cfg(tmp_path, pred=pred, gt=gt, out=out))
    grown = json.loads(out.read_text())
    assert grown["pred_fill"] == "astra" and grown["soma_f1"] < 1.0
