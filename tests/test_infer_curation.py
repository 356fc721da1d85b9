"""Curation round trip in the output folder: the user's files survive every rerun (issue 14, point 1).

The README's flow: ``astro3s-infer input=movie.tif out=results``, edit the cells in
Fiji, save ``results/movie/RoiSet_edited.zip``, then
``astro3s-infer input=movie.tif out=results rois=results/movie/RoiSet_edited.zip``.
A ``rois=`` run is never skipped as complete, and a rerun (with or without
``overwrite=true``) replaces astro3s's own outputs file by file and keeps
everything else in the folder.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

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


def _infer(tmp_path: Path, movie: Path, out: Path, checkpoint: Path, *overrides: str) -> list:
    """``infer_task`` in-process, as ``astro3s-infer input=MOVIE out=OUT checkpoint=... OVERRIDES``."""
    from astro3s.cli.infer import infer_task

    cfg = compose_config("infer", [f"input={movie}", f"out={out}", f"checkpoint={checkpoint}", "device=cpu",
                                   "soma_scale=fixed", "extras=quiet", *overrides], output_dir=tmp_path / "run")
    return infer_task(cfg)


def _n_cells(path: Path) -> int:
    from astro3s.io import read_labels

    return len(np.setdiff1d(np.unique(read_labels(path)), [0]))


def _first_run(tmp_path: Path, movie: Path, checkpoint: Path) -> Path:
    """A complete output folder with known cells (the ground truth as curated cells), figures included."""
    out = tmp_path / "results"
    (result,) = _infer(tmp_path, movie, out, checkpoint, f"rois={movie.parent / 'ground_truth' / 'RoiSet.zip'}")
    assert result.status == "done"
    return result.output


def _edit_roiset(folder: Path, name: str = "RoiSet_edited.zip") -> Path:
    """Remove the last cell from ``folder/RoiSet.zip`` and save the result as ``folder/name`` (as in Fiji)."""
    from astro3s.io import read_labels, read_roiset, write_roiset

    shape = read_labels(folder / "soma.tif").shape
    soma, processes = read_roiset(folder / "RoiSet.zip", shape)
    drop = int(soma.max())
    soma[soma == drop] = 0
    processes[processes == drop] = 0
    return write_roiset(soma, processes, folder / name)


@pytest.mark.parametrize("overwrite", [False, True])
def test_edited_roiset_in_the_output_folder_survives_and_is_used(overwrite: bool, tiny_movie: Path,
                                                                 random_checkpoint: Path, tmp_path: Path) -> None:
    from astro3s.inference import OUTPUT_FILES, is_complete

    folder = _first_run(tmp_path, tiny_movie, random_checkpoint)
    n_before = _n_cells(folder / "soma.tif")
    old_own = {name: (folder / name).read_bytes() for name in OUTPUT_FILES}
    edited = _edit_roiset(folder)
    edited_bytes = edited.read_bytes()
    (folder / "notes.txt").write_text("cell 3 looks odd\n")

    (result,) = _infer(tmp_path, tiny_movie, folder.parent, random_checkpoint, f"rois={edited}",
                       f"overwrite={str(overwrite).lower()}")
    assert result.status == "done"  # never "skipped": the curated cells are the point of the run
    assert edited.read_bytes() == edited_bytes
    assert (folder / "notes.txt").read_text() == "cell 3 looks odd\n"
    assert _n_cells(folder / "soma.tif") == n_before - 1  # the edited cells were used
    summary = json.loads((folder / "summary.json").read_text())
    assert summary["segmentation"] == {"source": "rois", "rois": str(edited)}
    assert summary["n_cells"] == n_before - 1
    # every own output was replaced (stale ones would still list the dropped cell)
    for name in ("soma.tif", "RoiSet.zip", "traces.csv", "cc_maps.npz", "summary.json", "overlay.png"):
        assert (folder / name).read_bytes() != old_own[name], name
    assert is_complete(folder)
    assert sorted(p.name for p in folder.parent.iterdir()) == ["index.csv", "index.html", folder.name]


def test_network_rerun_keeps_user_files_and_removes_stale_own_outputs(tiny_movie: Path, random_checkpoint: Path,
                                                                      tmp_path: Path) -> None:
    from astro3s.inference import is_complete

    folder = _first_run(tmp_path, tiny_movie, random_checkpoint)
    edited = _edit_roiset(folder)
    edited_bytes = edited.read_bytes()
    (result,) = _infer(tmp_path, tiny_movie, folder.parent, random_checkpoint)
    assert result.status == "skipped"  # complete, and no rois=
    (result,) = _infer(tmp_path, tiny_movie, folder.parent, random_checkpoint, "overwrite=true", "figures=false")
    assert result.status == "done"
    assert edited.read_bytes() == edited_bytes
    summary = json.loads((folder / "summary.json").read_text())
    assert summary["segmentation"]["source"] == "network"
    # the figures of the curated run show other cells: astro3s wrote them, so they go
    assert not (folder / "overlay.png").exists() and not (folder / "traces.png").exists()
    assert set(summary["files"]) == {"soma.tif", "processes.tif", "domains.tif", "RoiSet.zip", "traces.csv",
                                     "cc_maps.npz", "events.csv"}
    assert is_complete(folder, figures=False)


def test_roiset_edited_in_place_is_kept_under_a_new_name(tiny_movie: Path, random_checkpoint: Path,
                                                         tmp_path: Path) -> None:
    folder = _first_run(tmp_path, tiny_movie, random_checkpoint)
    n_before = _n_cells(folder / "soma.tif")
    edited = _edit_roiset(folder, "RoiSet.zip")  # saved over astro3s's own RoiSet.zip
    edited_bytes = edited.read_bytes()
    (result,) = _infer(tmp_path, tiny_movie, folder.parent, random_checkpoint, f"rois={edited}")
    assert result.status == "done" and _n_cells(folder / "soma.tif") == n_before - 1
    assert (folder / "RoiSet.edited-1.zip").read_bytes() == edited_bytes


def test_failed_commit_puts_the_previous_outputs_back(tiny_movie: Path, random_checkpoint: Path, tmp_path: Path,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    from astro3s.errors import InputError

    folder = _first_run(tmp_path, tiny_movie, random_checkpoint)
    edited = _edit_roiset(folder)
    before = {p.name: p.read_bytes() for p in folder.iterdir()}
    real_replace = os.replace

    pressed = []

    def interrupted(src, dst, *args, **kwargs):  # Ctrl-C once, after RoiSet.zip ... processes.tif were moved
        if Path(dst).parent == folder and Path(dst).name == "soma.tif" and not pressed:
            pressed.append(src)
            raise KeyboardInterrupt
        return real_replace(src, dst, *args, **kwargs)

    monkeypatch.setattr(os, "replace", interrupted)
    with pytest.raises((KeyboardInterrupt, SystemExit)):
        _infer(tmp_path, tiny_movie, folder.parent, random_checkpoint, f"rois={edited}")
    monkeypatch.setattr(os, "replace", real_replace)
    assert {p.name: p.read_bytes() for p in folder.iterdir()} == before
    assert not [p for p in folder.parent.iterdir() if p.name.startswith(".partial-")]

    def disk_full(src, dst, *args, **kwargs):
        staged = Path(src).parent.name.startswith(".partial-")  # not the put-back from .previous/
        if staged and Path(dst).parent == folder and Path(dst).name == "traces.csv":
            raise OSError(28, os.strerror(28), str(src))
        return real_replace(src, dst, *args, **kwargs)

    monkeypatch.setattr(os, "replace", disk_full)
    from astro3s.inference import infer_movie, load_inference_model

    _, options = load_inference_model(random_checkpoint, device="cpu", soma_scale="fixed")
    with pytest.raises(InputError, match="No space left"):
        infer_movie(tiny_movie, folder.parent, None, options, rois=edited)
    monkeypatch.setattr(os, "replace", real_replace)
    assert {p.name: p.read_bytes() for p in folder.iterdir()} == before


_KILL_DURING_COMMIT = """
import os, signal, sys
from pathlib import Path

real_replace = os.replace
moved = []
folder_name = sys.argv[1]

def replace(src, dst, *args, **kwargs):
    dst = Path(dst)
    if dst.parent.name == folder_name and Path(src).parent.name.startswith(".partial-"):
        moved.append(dst.name)
        if len(moved) == 3:  # the machine goes down with two own files replaced, the rest old
            os.kill(os.getpid(), signal.SIGKILL)
    return real_replace(src, dst, *args, **kwargs)

os.replace = replace
sys.argv = ["astro3s-infer", *sys.argv[2:]]
from astro3s.cli.infer import main
main()
"""


def test_killed_during_commit_leaves_whole_files_and_no_marker(tiny_movie: Path, random_checkpoint: Path,
                                                               tmp_path: Path) -> None:
    from astro3s.inference import OUTPUT_FILES, is_complete
    from astro3s.io import read_labels

    folder = _first_run(tmp_path, tiny_movie, random_checkpoint)
    edited = _edit_roiset(folder)
    edited_bytes = edited.read_bytes()
    env = {**os.environ, "WANDB_MODE": "disabled"}
    result = subprocess.run([sys.executable, "-c", _KILL_DURING_COMMIT, folder.name, f"input={tiny_movie}",
                             f"out={folder.parent}", f"rois={edited}", "device=cpu", "extras=quiet",
                             f"hydra.run.dir={tmp_path / 'run2'}"],
                            cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == -signal.SIGKILL, result.stderr[-2000:]
    assert not (folder / "summary.json").exists() and not is_complete(folder)  # no "complete" marker
    assert edited.read_bytes() == edited_bytes
    for name in ("soma.tif", "processes.tif", "domains.tif"):  # each file old or new, and whole
        assert read_labels(folder / name).ndim == 2
    # a rerun without overwrite=true redoes the movie (it is not complete) and cleans up
    (redo,) = _infer(tmp_path, tiny_movie, folder.parent, random_checkpoint)
    assert redo.status == "done" and is_complete(folder)
    assert all((folder / name).is_file() for name in OUTPUT_FILES)
    assert edited.read_bytes() == edited_bytes
    assert not [p for p in folder.parent.iterdir() if p.name.startswith(".partial-")]
