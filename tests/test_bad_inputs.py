"""Bad inputs through ``astro3s-infer``: one clear message, exit code 2, never a partial output.

Each case runs the entry point as a user does: in-process through
``infer_task`` on a config composed with Hydra's compose API (fast), and a few
through ``python -m astro3s.cli.infer`` in a subprocess (exit code, stderr,
no traceback, and a run killed with SIGKILL). "No partial output" means: no
``<stem>/`` folder without a complete output set, no ``.partial-*`` staging
folder and no half-written ``.part`` file left in ``out``.
"""

from __future__ import annotations

import errno
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import tifffile
from _hydra import compose_config
from hydra.core.global_hydra import GlobalHydra
from hydra.core.hydra_config import HydraConfig

REPO = Path(__file__).resolve().parents[1]


# --------------------------------------------------------------------------- fixtures and helpers


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory: pytest.TempPathFactory, untrained_checkpoint) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("ckpts")
    return {"random": untrained_checkpoint(root / "random", blank=False),
            "blank": untrained_checkpoint(root / "blank", blank=True)}


@pytest.fixture(scope="module")
def movies(simulated, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """The good tiny movie and every bad one, written once."""
    from astro3s.io import read_movie, write_movie

    folder = simulated("tiny", 3)
    good = folder / f"{folder.name}.tif"
    root = tmp_path_factory.mktemp("bad_movies")
    with read_movie(good) as mov:
        data, fs = mov[:], mov.fs
    paths = {"good": good}

    def path(name: str) -> Path:
        paths[name.split(".")[0]] = root / name
        return root / name

    path("movie.avi").write_bytes(b"RIFF" + bytes(200))
    raw = good.read_bytes()
    path("truncated.tif").write_bytes(raw[: len(raw) // 3])
    tifffile.imwrite(path("image2d.tif"), data[0])
    two_channels = np.stack([data, data[::-1]], axis=1)  # T, C, H, W
    tifffile.imwrite(path("channels.tif"), two_channels, imagej=True, metadata={"axes": "TCYX"})
    with_nan = data.astype(np.float32)
    with_nan[len(data) // 3, 5, 5] = np.nan  # not a frame that read_movie samples
    tifffile.imwrite(path("nan.tif"), with_nan)
    tifffile.imwrite(path("zeros.tif"), np.zeros_like(data))
    write_movie(path("three.tif"), data[:3], fs=fs)
    noise = np.random.default_rng(0).poisson(200, data.shape).astype(np.uint16)
    write_movie(path("noise.tif"), noise, fs=fs)
    write_movie(path("fast.tif"), data, fs=1e6)  # fs in the ImageJ metadata
    write_movie(path("slow.tif"), data, fs=1e-3)
    return paths


@pytest.fixture(autouse=True)
def _no_hydra_state():
    yield
    GlobalHydra.instance().clear()
    HydraConfig.instance().cfg = None


def _compose(tmp_path: Path, overrides: list[str]):
    cfg = compose_config("infer", overrides, output_dir=tmp_path / "run")
    cfg.extras.print_config = False
    return cfg


def _infer(tmp_path: Path, capsys: pytest.CaptureFixture, movie: Path, checkpoint: Path | str,
           *overrides: str, out: Path | None = None) -> tuple[int, str]:
    """Run ``infer_task`` in-process; returns (exit code, stderr)."""
    from astro3s.cli.infer import infer_task

    out = tmp_path / "out" if out is None else out
    cfg = _compose(tmp_path, [f"input={movie}", f"out={out}", f"checkpoint={checkpoint}", "device=cpu",
                              "figures=false", *overrides])
    capsys.readouterr()
    try:
        infer_task(cfg)
        code = 0
    except SystemExit as exit_:
        code = exit_.code
    return code, capsys.readouterr().err


def _cli(args: list[str], cwd: Path, timeout: float = 300) -> subprocess.CompletedProcess:
    env = {**os.environ, "WANDB_MODE": "disabled", "HYDRA_FULL_ERROR": "0"}
    return subprocess.run([sys.executable, "-m", "astro3s.cli.infer", *args, "extras=quiet",
                           f"hydra.run.dir={cwd / 'run'}"], cwd=cwd, env=env, capture_output=True, text=True,
                          timeout=timeout)


def _one_error(stderr: str) -> str:
    """The single ``astro3s: error:`` line of ``stderr``; fails on tracebacks or several messages."""
    assert "Traceback" not in stderr, stderr
    assert "HYDRA_FULL_ERROR" not in stderr, stderr
    lines = [line for line in stderr.splitlines() if line.startswith("astro3s: error:")]
    assert len(lines) == 1, stderr
    return lines[0]


def _assert_no_partial(out: Path) -> None:
    """Every output folder in ``out`` is complete; no staging folder or temporary file is left."""
    from astro3s.inference import is_complete

    if not out.exists():
        return
    for path in out.rglob("*"):
        assert not path.name.startswith(".partial-"), f"staging folder left: {path}"
        assert not (path.name.startswith(".") and ".part" in path.name), f"temporary file left: {path}"
    for folder in (p for p in out.iterdir() if p.is_dir()):
        assert is_complete(folder, figures=False), f"incomplete output folder: {folder}"


# --------------------------------------------------------------------------- bad movies

BAD_MOVIES = {
    # case: words the message must hold
    "movie": ("unknown movie format '.avi'", "Fix:"),
    "truncated": ("truncated or corrupt", "Fix:"),
    "image2d": ("single image", "(T, H, W)"),
    "channels": ("holds 2 channels", "TCYX", "channel=1"),
    "nan": ("NaN", "frame 22"),
    "zeros": ("constant", "Fix:"),
    "three": ("3 frames", "Fix:"),
}


@pytest.mark.parametrize("case", sorted(BAD_MOVIES))
def test_bad_movie_is_one_clear_error(case: str, movies: dict[str, Path], checkpoints: dict[str, Path],
                                      tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    code, err = _infer(tmp_path, capsys, movies[case], checkpoints["random"])
    assert code == 2
    line = _one_error(err)
    assert movies[case].name in line
    for words in BAD_MOVIES[case]:
        assert words in line, line
    out = tmp_path / "out"
    assert not out.exists() or list(out.iterdir()) == []


def test_chosen_channel_of_a_hyperstack_is_segmented(movies: dict[str, Path], checkpoints: dict[str, Path],
                                                     tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    """The fix the two-channel error names works as printed: ``channel=2`` reads the second channel (the
    movie reversed in time), a channel the file lacks is one clear error."""
    code, err = _infer(tmp_path, capsys, movies["channels"], checkpoints["random"], "channel=2",
                       "soma_scale=fixed")
    assert code == 0, err
    summary = json.loads((tmp_path / "out" / "channels" / "summary.json").read_text())
    assert summary["channel"] == 2 and summary["plane"] is None
    with tifffile.TiffFile(movies["channels"]) as tif:
        second = tif.asarray()[:, 1]
    assert summary["shape"] == list(second.shape)
    code, err = _infer(tmp_path, capsys, movies["channels"], checkpoints["random"], "channel=3",
                       out=tmp_path / "out3")
    assert code == 2
    line = _one_error(err)
    assert "no channel 3" in line and "1, 2" in line


def test_no_cells_succeeds_with_complete_outputs(movies: dict[str, Path], checkpoints: dict[str, Path],
                                                 tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    from astro3s.inference import OUTPUT_FILES, read_index
    from astro3s.io import read_labels, read_roiset

    code, err = _infer(tmp_path, capsys, movies["noise"], checkpoints["blank"], "figures=true")
    assert code == 0, err
    folder = tmp_path / "out" / "noise"
    for name in OUTPUT_FILES:
        assert (folder / name).is_file(), name
    text = (folder / "summary.json").read_text()
    summary = json.loads(text, parse_constant=lambda c: pytest.fail(f"summary.json holds {c}, not JSON"))
    assert summary["n_cells"] == 0 and summary["cells"] == []
    assert summary["correlation"]["threshold"] is None
    soma = read_labels(folder / "soma.tif")
    assert soma.shape == (104, 88) and not soma.any() and not read_labels(folder / "domains.tif").any()
    assert not any(a.any() for a in read_roiset(folder / "RoiSet.zip", soma.shape))
    assert (folder / "traces.csv").read_text().splitlines()[0] == "frame,time_s"
    assert np.load(folder / "cc_maps.npz")["cc"].shape[0] == 0
    rows = read_index(tmp_path / "out" / "index.csv")
    assert [(r["status"], r["n_cells"]) for r in rows] == [("done", "0")]
    _assert_no_partial(tmp_path / "out")


@pytest.mark.parametrize("case,fs", [("fast", 1e6), ("slow", 1e-3)])
def test_extreme_frame_rate_does_not_crash(case: str, fs: float, movies: dict[str, Path],
                                           checkpoints: dict[str, Path], tmp_path: Path,
                                           capsys: pytest.CaptureFixture) -> None:
    code, err = _infer(tmp_path, capsys, movies[case], checkpoints["random"], "soma_scale=fixed")
    assert code == 0, err
    folder = tmp_path / "out" / case
    summary = json.loads((folder / "summary.json").read_text())
    assert summary["fs"] == pytest.approx(fs)
    table = np.loadtxt(folder / "traces.csv", delimiter=",", skiprows=1, ndmin=2)
    # the time column tells every frame apart, whatever the frame rate
    np.testing.assert_allclose(table[:, 1], np.arange(len(table)) / fs, rtol=1e-6)
    _assert_no_partial(tmp_path / "out")


# --------------------------------------------------------------------------- outputs that cannot be written


def _raise_on(monkeypatch: pytest.MonkeyPatch, target: object, name: str, code: int, when) -> None:
    original = getattr(target, name)

    def failing(*args, **kwargs):
        if when(*args):
            raise OSError(code, os.strerror(code), str(args[0]))
        return original(*args, **kwargs)

    monkeypatch.setattr(target, name, failing)


def test_read_only_output_folder(movies: dict[str, Path], checkpoints: dict[str, Path], tmp_path: Path,
                                 capsys: pytest.CaptureFixture, monkeypatch: pytest.MonkeyPatch) -> None:
    out = tmp_path / "out"  # the test runs as root, so chmod would not stop it: the OS error is simulated
    _raise_on(monkeypatch, Path, "mkdir", errno.EROFS, lambda path, *a: out in (path, *path.parents))
    code, err = _infer(tmp_path, capsys, movies["good"], checkpoints["random"])
    assert code == 2
    line = _one_error(err)
    assert str(out) in line and "Read-only file system" in line and "Fix:" in line
    assert not out.exists()


def test_file_system_turns_read_only_mid_run(movies: dict[str, Path], checkpoints: dict[str, Path],
                                             tmp_path: Path, capsys: pytest.CaptureFixture,
                                             monkeypatch: pytest.MonkeyPatch) -> None:
    # the folder passes the write check, then the staging folder cannot be made
    _raise_on(monkeypatch, Path, "mkdir", errno.EROFS, lambda path, *a: path.name.startswith(".partial-"))
    code, err = _infer(tmp_path, capsys, movies["good"], checkpoints["random"])
    assert code == 2 and "Read-only file system" in _one_error(err)
    _assert_no_partial(tmp_path / "out")
    assert [p.name for p in (tmp_path / "out").iterdir()] == []


@pytest.mark.parametrize("where", ["file", "folder"])
def test_full_disk_leaves_nothing(where: str, movies: dict[str, Path], checkpoints: dict[str, Path],
                                  tmp_path: Path, capsys: pytest.CaptureFixture,
                                  monkeypatch: pytest.MonkeyPatch) -> None:
    # "file": a output file's rename (atomic writes); "folder": the rename of the finished output folder
    _raise_on(monkeypatch, os, "replace", errno.ENOSPC,
              lambda src, *a: Path(src).is_dir() == (where == "folder"))
    code, err = _infer(tmp_path, capsys, movies["good"], checkpoints["random"])
    assert code == 2
    line = _one_error(err)
    assert "No space left on device" in line and "Fix:" in line
    _assert_no_partial(tmp_path / "out")
    assert [p.name for p in (tmp_path / "out").iterdir()] == []


def test_failed_overwrite_keeps_the_previous_outputs(movies: dict[str, Path], checkpoints: dict[str, Path],
                                                     tmp_path: Path, capsys: pytest.CaptureFixture,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    code, err = _infer(tmp_path, capsys, movies["good"], checkpoints["random"])
    assert code == 0, err
    folder = tmp_path / "out" / movies["good"].stem
    before = {p.name: p.read_bytes() for p in folder.iterdir()}

    def moving_traces_into_place_fails(src, dst=None, *a):
        # the own files are replaced one by one: this fails after several were replaced already
        return Path(src).parent.name.startswith(".partial-") and Path(dst).parent == folder \
            and Path(dst).name == "traces.csv"

    _raise_on(monkeypatch, os, "replace", errno.ENOSPC, moving_traces_into_place_fails)
    code, err = _infer(tmp_path, capsys, movies["good"], checkpoints["random"], "overwrite=true")
    assert code == 2 and "No space left on device" in _one_error(err)
    # the old outputs were put back, untouched
    assert {p.name: p.read_bytes() for p in folder.iterdir()} == before
    _assert_no_partial(tmp_path / "out")


# --------------------------------------------------------------------------- bad checkpoints and configs


@pytest.mark.parametrize("kind", ["garbage", "truncated", "missing"])
def test_bad_checkpoint(kind: str, movies: dict[str, Path], checkpoints: dict[str, Path], tmp_path: Path,
                        capsys: pytest.CaptureFixture) -> None:
    bad = tmp_path / "model.ckpt"
    if kind == "garbage":
        bad.write_bytes(b"PK\x03\x04" + os.urandom(500))
    elif kind == "truncated":
        data = checkpoints["random"].read_bytes()
        bad.write_bytes(data[: len(data) // 2])
    code, err = _infer(tmp_path, capsys, movies["good"], bad)
    assert code == 2
    line = _one_error(err)
    assert str(bad) in line and "Fix:" in line
    assert not (tmp_path / "out").exists()


CONFIG_TYPOS = {
    # override: words the message must hold
    "+correlation.radus=3": ("correlation.radus", "did you mean correlation.radius"),
    "+tiling.x=1": ("tiling option", "x", "tile_size"),
    "+combine.splitt=disc": ("splitt", "split"),
    "batch_size=many": ("batch_size='many'", "whole number"),
    "correlation.radius=wide": ("correlation.radius='wide'", "number"),
    "tiling.tile_overlap=400": ("tiling.tile_overlap=400", "half the tile"),
    "device=tpu": ("device='tpu'", "cpu"),
    "soma_scale=big": ("soma_scale", "'auto' or 'fixed'"),
    "bin_scales=0": ("bin_scales=0", ">= 1"),
    "binned_processes=thin": ("binned_processes", "'ridges', 'grown' or 'network'"),
    "somata=big": ("somata", "'refined', 'extended', 'network'"),
    "test_time_flips=3": ("test_time_flips", "1, 2, 4"),
}


@pytest.mark.parametrize("override", sorted(CONFIG_TYPOS))
def test_config_typo_is_one_clear_error(override: str, movies: dict[str, Path], checkpoints: dict[str, Path],
                                        tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    code, err = _infer(tmp_path, capsys, movies["good"], checkpoints["random"], override)
    assert code == 2
    line = _one_error(err)
    for words in CONFIG_TYPOS[override]:
        assert words in line, line
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("override,words", [
    ("correlation.radus=3", "unknown config option correlation.radus (did you mean correlation.radius?)"),
    ("tilling.x=1", "unknown config option tilling (did you mean tiling?)"),
    ("combine.split=disc", "+combine.split=VALUE"),
    ("paths=nowhere", "Could not find 'paths/nowhere'; available: default"),
    ("preprocess=d1_standn", "Could not find 'preprocess/d1_standn'; available: astra, d1_standin"),
])
def test_hydra_config_error_is_one_line(override: str, words: str, tmp_path: Path) -> None:
    # Hydra's struct mode rejects these before astro3s runs; the user still sees one line, exit code 2
    result = _cli([f"input={tmp_path / 'm.tif'}", f"out={tmp_path / 'out'}", override], tmp_path, timeout=120)
    assert result.returncode == 2
    assert words in _one_error(result.stderr)
    assert result.stderr.strip().count("\n") == 0, result.stderr
    assert not (tmp_path / "out").exists()


# --------------------------------------------------------------------------- folders and interrupted runs


def test_folder_reports_every_bad_movie_and_finishes_the_rest(movies: dict[str, Path],
                                                              checkpoints: dict[str, Path],
                                                              tmp_path: Path) -> None:
    from astro3s.inference import read_index

    folder = tmp_path / "movies"
    folder.mkdir()
    names = {"good": "a_good.tif", "image2d": "b_image2d.tif", "channels": "c_channels.tif",
             "three": "d_three.tif", "zeros": "e_zeros.tif"}
    for case, name in names.items():
        shutil.copy(movies[case], folder / name)
    out = tmp_path / "out"
    result = _cli([f"input={folder}", f"out={out}", f"checkpoint={checkpoints['random']}", "figures=false"],
                  tmp_path)
    assert result.returncode == 2, result.stderr[-2000:]
    line = _one_error(result.stderr)
    assert "4 of 5 movie(s) failed" in line and "index.csv" in line
    for name in ("b_image2d.tif", "c_channels.tif", "d_three.tif", "e_zeros.tif"):
        assert name in line
    rows = {Path(r["movie"]).name: r for r in read_index(out / "index.csv")}
    assert rows["a_good.tif"]["status"] == "done"
    assert {n: rows[n]["status"] for n in names.values() if n != "a_good.tif"} == dict.fromkeys(
        ("b_image2d.tif", "c_channels.tif", "d_three.tif", "e_zeros.tif"), "failed")
    assert "single image" in rows["b_image2d.tif"]["error"] and "constant" in rows["e_zeros.tif"]["error"]
    assert sorted(p.name for p in out.iterdir()) == ["a_good", "index.csv", "index.html"]
    _assert_no_partial(out)


def _wait_for(predicate, proc: subprocess.Popen, timeout: float) -> None:
    end = time.monotonic() + timeout
    while not predicate():
        if proc.poll() is not None:
            pytest.fail(f"the run ended (status {proc.returncode}) before the awaited moment:\n"
                        f"{proc.stderr.read()[-2000:] if proc.stderr else ''}")
        if time.monotonic() > end:
            proc.kill()
            pytest.fail("timed out waiting for the run")
        time.sleep(0.02)


def test_killed_batch_leaves_no_corrupt_output_and_a_rerun_completes(
        movies: dict[str, Path], checkpoints: dict[str, Path], tmp_path: Path,
        capsys: pytest.CaptureFixture) -> None:
    from astro3s.inference import read_index
    from astro3s.io import read_movie, write_movie

    folder = tmp_path / "movies"
    folder.mkdir()
    shutil.copy(movies["good"], folder / "a_small.tif")
    with read_movie(movies["good"]) as mov:  # ~800 frames: seconds of work, killed midway
        write_movie(folder / "b_long.tif", np.concatenate([mov[:]] * 12), fs=mov.fs)
    out = tmp_path / "out"
    env = {**os.environ, "WANDB_MODE": "disabled"}
    proc = subprocess.Popen([sys.executable, "-m", "astro3s.cli.infer", f"input={folder}", f"out={out}",
                             f"checkpoint={checkpoints['random']}", "device=cpu", "figures=false",
                             "extras=quiet", f"hydra.run.dir={tmp_path / 'run'}"],
                            cwd=tmp_path, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    index, page = out / "index.csv", out / "index.html"
    # a_small is recorded once both the CSV and the page (written after it) list it; a kill between the two
    # would hit the page's own write, not b_long (the page's temporary copy is then young and kept by a rerun)
    _wait_for(lambda: all(f.is_file() and "a_small" in f.read_text() for f in (index, page)), proc, timeout=240)
    proc.send_signal(signal.SIGKILL)  # while b_long runs
    proc.wait(timeout=30)
    assert proc.returncode == -signal.SIGKILL
    assert not (out / "b_long").exists()
    assert [r["status"] for r in read_index(index)] == ["done"]
    for folder_out in (p for p in out.iterdir() if p.is_dir() and not p.name.startswith(".")):
        assert folder_out.name == "a_small"
    # the rerun skips the finished movie, does the other and leaves nothing behind
    code, err = _infer(tmp_path, capsys, folder, checkpoints["random"], out=out)
    assert code == 0, err
    rows = {Path(r["movie"]).name: r["status"] for r in read_index(index)}
    assert rows == {"a_small.tif": "skipped", "b_long.tif": "done"}
    _assert_no_partial(out)


_KILL_WHILE_WRITING = """
import os, signal, sys
import astro3s.inference.outputs as outputs

def killed(*args, **kwargs):
    os.kill(os.getpid(), signal.SIGKILL)  # as if the machine went down halfway through the outputs

outputs.write_cc_maps = killed
sys.argv = ["astro3s-infer", *sys.argv[1:]]
from astro3s.cli.infer import main
main()
"""


def test_killed_while_writing_then_rerun_cleans_up(movies: dict[str, Path], checkpoints: dict[str, Path],
                                                   tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    from astro3s.inference import OUTPUT_FILES

    out = tmp_path / "out"
    env = {**os.environ, "WANDB_MODE": "disabled"}
    result = subprocess.run([sys.executable, "-c", _KILL_WHILE_WRITING, f"input={movies['good']}", f"out={out}",
                             f"checkpoint={checkpoints['random']}", "device=cpu", "extras=quiet",
                             f"hydra.run.dir={tmp_path / 'run'}"],
                            cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == -signal.SIGKILL, result.stderr[-2000:]
    stem = movies["good"].stem
    assert not (out / stem).exists()  # the half-written outputs are only in the hidden staging folder
    assert [p.name.startswith(f".partial-{stem}-") for p in out.iterdir() if p.is_dir()] == [True]
    code, err = _infer(tmp_path, capsys, movies["good"], checkpoints["random"], "figures=true", out=out)
    assert code == 0, err
    assert all((out / stem / name).is_file() for name in OUTPUT_FILES)
    _assert_no_partial(out)
