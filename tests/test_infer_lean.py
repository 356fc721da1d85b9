"""``astro3s-infer`` imports no training stack: no Lightning, TensorBoard or W&B (issue 14, point 2), and no
pynwb without ``nwb=true``.

Each check runs the entry point in a fresh interpreter, so that nothing the
test session imported (the checkpoint fixture imports Lightning) hides an
import chain, and then looks at ``sys.modules``.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

#: top-level packages the inference path must not import
TRAINING_ONLY = ("pytorch_lightning", "lightning", "lightning_fabric", "tensorboard", "tensorboardX", "wandb")

_RUN_AND_REPORT = """
import gc, json, sys
sys.argv = ["astro3s-infer", *sys.argv[1:]]
from astro3s.cli.infer import main
code = 0
try:
    main()
except SystemExit as exit_:
    code = exit_.code
loaded = sorted({name.split(".")[0] for name in sys.modules} & set(%r))
print("REPORT " + json.dumps({"code": code, "loaded": loaded, "torch": "torch" in sys.modules,
                              "gc_enabled": gc.isenabled(), "gc_frozen": gc.get_freeze_count(),
                              "nwb": sorted({name.split(".")[0] for name in sys.modules} & {"pynwb", "hdmf"}),
                              "astro3s_training": sorted(m for m in sys.modules if m in
                                                         ("astro3s.data.datamodule", "astro3s.models.module"))}))
""" % (TRAINING_ONLY,)


def _run_infer(tmp_path: Path, *args: str) -> tuple[dict, subprocess.CompletedProcess]:
    """``astro3s-infer ARGS`` in a fresh interpreter; its report (exit code, modules loaded) and the process."""
    env = {**os.environ, "WANDB_MODE": "disabled", "HYDRA_FULL_ERROR": "0"}
    proc = subprocess.run([sys.executable, "-c", _RUN_AND_REPORT, *args, "extras=quiet",
                           f"hydra.run.dir={tmp_path / 'run'}"], cwd=tmp_path, env=env, capture_output=True,
                          text=True, timeout=600)
    lines = [line for line in proc.stdout.splitlines() if line.startswith("REPORT ")]
    assert lines, proc.stdout[-2000:] + proc.stderr[-2000:]
    return json.loads(lines[-1][len("REPORT "):]), proc


def test_inference_imports_no_lightning_tensorboard_or_wandb(simulated, random_checkpoint: Path,
                                                             tmp_path: Path) -> None:
    from astro3s.inference import OUTPUT_FILES

    folder = simulated("tiny", 3)
    movie = folder / f"{folder.name}.tif"
    out = tmp_path / "out"
    report, proc = _run_infer(tmp_path, f"input={movie}", f"out={out}", f"checkpoint={random_checkpoint}",
                              "device=cpu")
    assert report["code"] == 0, proc.stderr[-3000:]
    assert all((out / movie.stem / name).is_file() for name in OUTPUT_FILES)  # the whole path ran
    assert report["loaded"] == [], f"inference imported {report['loaded']}"
    assert report["astro3s_training"] == []
    assert report["nwb"] == []  # pynwb only with nwb=true
    # the garbage collector was off while torch and the network loaded, then their objects were frozen
    # and it was turned back on (astro3s.cli._task.startup_without_gc)
    assert report["gc_enabled"] and report["gc_frozen"] > 100_000


def test_bad_input_is_one_line_before_torch_is_imported(tmp_path: Path) -> None:
    bad = tmp_path / "movie.txt"
    bad.write_text("not a movie\n")
    report, proc = _run_infer(tmp_path, f"input={bad}", f"out={tmp_path / 'out'}")
    assert report["code"] == 2
    assert "Traceback" not in proc.stderr
    errors = [line for line in proc.stderr.splitlines() if line.startswith("astro3s: error:")]
    assert len(errors) == 1 and "unknown movie format '.txt'" in errors[0] and "Fix:" in errors[0]
    assert report["loaded"] == []
    assert not report["torch"]  # the movie is checked before the network is loaded: the error comes at once
    assert report["gc_enabled"] and report["gc_frozen"] == 0  # turned back on when start-up failed
