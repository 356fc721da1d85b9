"""One short GPU check: training precisions, network throughput, and GPU-vs-CPU inference agreement.

    python experiments/benchmarks/bench_gpu.py --out results/gpu             # CUDA machine, ~3-5 min
    python experiments/benchmarks/bench_gpu.py --accelerator cpu --quick     # CPU dry run, ~1-2 min

On a machine where astro3s is not installed, put the repository (and a folder
holding hydra-core, omegaconf, antlr4, roifile and rich) on the path, e.g.
``PYTHONPATH=$PWD/.devsite:$PWD WANDB_MODE=disabled python3 experiments/benchmarks/bench_gpu.py --out DIR``;
nothing calls a console script. Three parts, each timed on the accelerator
(``--accelerator``, default ``cuda`` when there is one):

1. **train**: ``python -m astro3s.cli.train experiment=example trainer=gpu
   trainer.precision=P`` (the Hydra entry point itself, one process per
   precision: 32-true, 16-mixed and bf16-mixed on CUDA; 32-true and
   bf16-mixed on CPU, where Lightning has no 16-mixed) for ``--epochs``
   epochs, CSV logger, outputs under ``--work``. One callback is added through
   the config (``+callbacks.bench_timer``) that records each epoch's
   training-loop time (CUDA-synchronised, validation excluded) and its
   samples. Reported: median seconds per training epoch excluding the first,
   training samples/s, whether every logged train/val loss is finite, whether
   ``val/astra_f1`` was logged, the test ``astra_f1`` and the peak GPU memory.
2. **throughput**: the bundled default model's network (U-Net depth 4, 16
   base channels, ``conf/experiment/default_model.yaml``): forward, ASTRA's
   loss, backward and an Adam step on random batches of ``--batch-size``
   96x96 crops (the data module's crop size), per precision (fp32; fp16
   autocast with a gradient scaler; bf16 autocast, as Lightning's
   precisions do), in samples/s, on the accelerator and on the CPU (after
   warm-up steps; the accelerator for at least ``--min-seconds``).
3. **inference**: a simulated movie (``--movie-preset``, seed 0) pre-processed
   once on the CPU; then ``segment_movie`` (the cell-finding stage of
   ``astro3s-infer``: soma-scale fit, both network passes, combination) with
   the bundled model on the CPU, on CUDA with bf16 autocast (what
   ``astro3s-infer`` does on CUDA by default) and on CUDA without it
   (``InferenceOptions.amp=False``, ``astro3s-infer amp=false``), each ``--repeats`` times (the last one reported).
   Reported per device: the network passes alone (``predict_crops`` +
   ``predict_fov``, best of ``--repeats``), the pipeline's ``network_s`` and
   ``soma_scale_s`` (which holds a whole-FOV pass) and the whole stage; the
   cells found, their agreement with the CPU's (soma and process mask IoU,
   detection and soma F1 of one set of cells against the other, the largest
   difference of the whole-FOV probabilities) and the detection F1 against
   the simulator's ground truth.

Prints one summary (checks, then the three tables) and writes it to
``--out`` as ``gpu_check.md`` and ``gpu_check.json`` (every figure, the
environment, and the tail of any failed run's log). Writes nothing outside
``--out``, ``--work`` (a temporary folder, removed unless ``--keep``) and the
repository's ``__pycache__`` folders. Timings depend on the machine and its
load: the report names the device.
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import json
import math
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import traceback
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
TIMER_NAME = "bench_timer.json"
CROP = 96  # the data module's crop size (conf/preprocess/astra.yaml: crop_size)
GIB = 2**30


# --------------------------------------------------------------------------- helpers


def _sync(device: Any) -> None:
    import torch

    if getattr(device, "type", str(device)).startswith("cuda"):
        torch.cuda.synchronize()


def _fmt(value: Any, spec: str = ".4g") -> str:
    if value is None:
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "NO"
    if isinstance(value, float):
        return "nan" if math.isnan(value) else format(value, spec)
    return str(value)


def _table(header: list[str], rows: list[list[Any]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(_fmt(v) for v in row) + " |" for row in rows]
    return "\n".join(lines)


def _environment(accelerator: str) -> dict[str, Any]:
    import numpy as np
    import pytorch_lightning as pl
    import torch

    env: dict[str, Any] = {
        "python": platform.python_version(), "platform": platform.platform(), "cpu_count": os.cpu_count(),
        "torch": torch.__version__, "torch_cuda": torch.version.cuda, "lightning": pl.__version__,
        "numpy": np.__version__, "torch_threads": torch.get_num_threads(), "accelerator": accelerator,
        "cuda_available": torch.cuda.is_available(),
    }
    if torch.cuda.is_available():
        props = torch.cuda.get_device_properties(0)
        env.update(gpu=torch.cuda.get_device_name(0), gpu_memory_gib=round(props.total_memory / GIB, 1),
                   capability=f"{props.major}.{props.minor}", cudnn=torch.backends.cudnn.version(),
                   bf16_supported=torch.cuda.is_bf16_supported(),
                   cudnn_allow_tf32=torch.backends.cudnn.allow_tf32,
                   matmul_precision=torch.get_float32_matmul_precision())
    return env


# --------------------------------------------------------------------------- 1. training through astro3s-train


def epoch_timer() -> Any:
    """A Lightning callback (instantiated by Hydra in the training process) that times training epochs.

    Writes ``<trainer.default_root_dir>/bench_timer.json`` after every epoch:
    ``train_s`` (training loop only, validation excluded), ``epoch_s`` (with
    validation), ``samples`` per epoch, ``precision``, ``device`` and
    ``peak_gpu_gib``.
    """
    import pytorch_lightning as pl
    import torch

    class EpochTimer(pl.Callback):
        def __init__(self) -> None:
            self.record: dict[str, Any] = {"train_s": [], "epoch_s": [], "samples": []}
            self._start = self._train_end = None
            self._samples = 0

        def _now(self, pl_module: Any) -> float:
            _sync(pl_module.device)
            return time.perf_counter()

        def on_train_epoch_start(self, trainer: Any, pl_module: Any) -> None:
            self._start, self._train_end, self._samples = self._now(pl_module), None, 0

        def on_train_batch_end(self, trainer: Any, pl_module: Any, outputs: Any, batch: Any,
                               batch_idx: int) -> None:
            image = batch.get("image") if isinstance(batch, dict) else None
            self._samples += int(image.shape[0]) if image is not None else 0

        def on_validation_epoch_start(self, trainer: Any, pl_module: Any) -> None:
            if not trainer.sanity_checking and self._start is not None and self._train_end is None:
                self._train_end = self._now(pl_module)

        def on_train_epoch_end(self, trainer: Any, pl_module: Any) -> None:
            end = self._now(pl_module)
            self.record["train_s"].append((self._train_end or end) - self._start)
            self.record["epoch_s"].append(end - self._start)
            self.record["samples"].append(self._samples)
            self.record["precision"] = str(trainer.precision)
            self.record["device"] = str(pl_module.device)
            if pl_module.device.type == "cuda":
                self.record["peak_gpu_gib"] = torch.cuda.max_memory_allocated() / GIB
            path = Path(trainer.default_root_dir) / TIMER_NAME
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(json.dumps(self.record))

    return EpochTimer()


def _read_metrics(run_dir: Path) -> dict[str, Any]:
    """Finite losses and logged validation metrics from the CSV logger's ``metrics.csv``."""
    files = sorted(run_dir.glob("csv/**/metrics.csv"))
    if not files:
        return {"metrics_csv": None}
    with open(files[-1], newline="", encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle))

    def values(key: str) -> list[float]:
        return [float(r[key]) for r in rows if r.get(key) not in (None, "")]

    losses = {k: values(k) for k in ("train/loss_epoch", "train/loss_step", "val/loss")}
    astra = values("val/astra_f1")
    return {
        "metrics_csv": str(files[-1]),
        "loss_finite": all(losses.values()) and all(math.isfinite(v) for vs in losses.values() for v in vs),
        "last_train_loss": (losses["train/loss_epoch"] or [None])[-1],
        "last_val_loss": (losses["val/loss"] or [None])[-1],
        "val_astra_f1_logged": bool(astra),
        "last_val_astra_f1": (astra or [None])[-1],
    }


def train_once(precision: str, args: argparse.Namespace, work: Path) -> dict[str, Any]:
    """One ``python -m astro3s.cli.train`` process at ``precision``; its timings and checks."""
    run_dir = work / f"train_{precision}"
    overrides = [
        "experiment=example", f"trainer={'gpu' if args.accelerator == 'cuda' else 'cpu'}",
        f"trainer.precision={precision}", f"trainer.max_epochs={args.epochs}", f"trainer.min_epochs={args.epochs}",
        "logger=csv", "extras=quiet", f"paths.root_dir={work}", f"hydra.run.dir={run_dir}",
        "+callbacks.bench_timer._target_=bench_gpu.epoch_timer",
    ]
    env = dict(os.environ, WANDB_MODE="disabled", HYDRA_FULL_ERROR="1", PYTHONUNBUFFERED="1")
    env["PYTHONPATH"] = os.pathsep.join([str(HERE), str(REPO), *filter(None, [os.environ.get("PYTHONPATH")])])
    log_path = work / f"train_{precision}.log"
    start = time.perf_counter()
    with open(log_path, "w", encoding="utf-8") as log:
        try:
            proc = subprocess.run([sys.executable, "-m", "astro3s.cli.train", *overrides], cwd=REPO, env=env,
                                  stdout=log, stderr=subprocess.STDOUT, timeout=args.train_timeout)
            rc = proc.returncode
        except subprocess.TimeoutExpired:
            rc = "timeout"
    result: dict[str, Any] = {"precision": precision, "rc": rc, "wall_s": time.perf_counter() - start,
                              "command": "python -m astro3s.cli.train " + " ".join(overrides)}
    timer_path = run_dir / TIMER_NAME
    if timer_path.exists():
        timer = json.loads(timer_path.read_text())
        later = timer["train_s"][1:] or timer["train_s"]
        samples = timer["samples"][1:] or timer["samples"]
        result.update(epochs=len(timer["train_s"]), train_s_epochs=timer["train_s"], epoch_s=timer["epoch_s"],
                      s_per_epoch=statistics.median(later), samples_per_epoch=statistics.median(samples),
                      samples_per_s=sum(samples) / max(sum(later), 1e-9), device=timer.get("device"),
                      lightning_precision=timer.get("precision"), peak_gpu_gib=timer.get("peak_gpu_gib"))
    result.update(_read_metrics(run_dir))
    scores = run_dir / "scores.json"
    if scores.exists():
        result["test_astra_f1"] = json.loads(scores.read_text()).get("metrics", {}).get("test/astra_f1")
    result["ok"] = (rc == 0 and bool(result.get("loss_finite")) and bool(result.get("val_astra_f1_logged"))
                    and result.get("epochs") == args.epochs
                    and str(result.get("device", "")).startswith(args.accelerator))
    if not result["ok"]:
        result["log_tail"] = log_path.read_text(errors="replace")[-3000:]
    return result


# --------------------------------------------------------------------------- 2. network throughput


def throughput(device_name: str, precision: str, *, batch_size: int, min_seconds: float, min_steps: int,
               max_steps: int, warmup: int) -> dict[str, Any]:
    """Training samples/s of the default model's U-Net (depth 4, base 16) at one Lightning-style precision."""
    import torch

    from astro3s.models import AstraLoss, build_network

    device = torch.device(device_name)
    torch.manual_seed(0)
    net = build_network("unet", depth=4, base_channels=16).to(device).train()
    optimizer = torch.optim.Adam(net.parameters(), lr=1e-3)
    loss_fn = AstraLoss()
    dtype = {"16-mixed": torch.float16, "bf16-mixed": torch.bfloat16}.get(precision)
    scaler = torch.amp.GradScaler(device.type, enabled=dtype is torch.float16)
    generator = torch.Generator().manual_seed(0)
    image = torch.randn(batch_size, 1, CROP, CROP, generator=generator).to(device)
    target = torch.randint(0, 3, (batch_size, CROP, CROP), generator=generator).to(device)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats()

    def step() -> float:
        optimizer.zero_grad(set_to_none=True)
        autocast = torch.autocast(device_type=device.type, dtype=dtype) if dtype else contextlib.nullcontext()
        with autocast:
            loss = torch.stack([loss_fn(h, target) for h in net.forward_heads(image)]).mean()
        scaler.scale(loss).backward()
        scaler.step(optimizer)
        scaler.update()
        return loss

    for _ in range(warmup):
        loss = step()
    _sync(device)
    steps, start = 0, time.perf_counter()
    while steps < max_steps and (steps < min_steps or time.perf_counter() - start < min_seconds):
        loss = step()
        steps += 1
        if steps % 10 == 0:
            _sync(device)
    _sync(device)
    seconds = time.perf_counter() - start
    out = {"device": device_name, "precision": precision, "steps": steps, "batch_size": batch_size,
           "samples_per_s": steps * batch_size / seconds, "ms_per_step": 1e3 * seconds / steps,
           "loss_finite": bool(torch.isfinite(loss.detach()).item())}
    if device.type == "cuda":
        out["peak_gpu_gib"] = torch.cuda.max_memory_allocated() / GIB
    return out


# --------------------------------------------------------------------------- 3. inference GPU vs CPU


def _iou(a: Any, b: Any) -> float:
    import numpy as np

    a, b = np.asarray(a) > 0, np.asarray(b) > 0
    union = np.logical_or(a, b).sum()
    return float(np.logical_and(a, b).sum() / union) if union else 1.0


def _infer_one(pre: Any, label: str, device: str, amp: bool, repeats: int) -> dict[str, Any]:
    from astro3s.inference import load_inference_model, predict_crops, predict_fov, segment_movie

    net, options = load_inference_model("default", device=device, amp=amp, figures=False)
    out: dict[str, Any] = {"config": label, "device": device, "amp": amp}
    net_times = []
    for _ in range(repeats):
        _sync(device)
        t = time.perf_counter()
        predict_crops(net, pre, normalize=options.normalize, batch_size=options.batch_size, device=device, amp=amp)
        fov_probs = predict_fov(net, pre, normalize=options.normalize, tiling=options.tiling, device=device, amp=amp)
        _sync(device)
        net_times.append(time.perf_counter() - t)
    for r in range(repeats):
        timings: dict[str, float] = {}
        t = time.perf_counter()
        _, seg, info = segment_movie(pre, net, options, timings=timings, name=label)
        out[f"segment_s_run{r + 1}"] = time.perf_counter() - t
    out.update(net_passes_s=min(net_times), net_passes_first_s=net_times[0],
               network_s=timings.get("network_s"), soma_scale_s=timings.get("soma_scale_s"),
               segment_s=out[f"segment_s_run{repeats}"], n_cells=int(seg.n_cells), zoom=info.get("zoom"))
    return out | {"_seg": seg, "_fov_probs": fov_probs}


def inference_check(args: argparse.Namespace) -> dict[str, Any]:
    """Segment one simulated movie on the CPU and on the accelerator (autocast on and off); compare."""
    import numpy as np

    from astro3s.inference import load_inference_model
    from astro3s.metrics import astra_scores
    from astro3s.preprocess import preprocess
    from astro3s.simulate import simulate_preset

    t = time.perf_counter()
    sim = simulate_preset(args.movie_preset, seed=0)
    simulate_s = time.perf_counter() - t
    _, options = load_inference_model("default", device="cpu")
    t = time.perf_counter()
    pre = preprocess(sim.movie, options.preprocess, progress=False)
    preprocess_s = time.perf_counter() - t
    configs = [("cpu", "cpu", False)]
    if args.accelerator == "cuda":
        configs += [("cuda fp32", "cuda", False), ("cuda bf16 autocast", "cuda", True)]
    else:  # dry run: the comparison code on a second CPU run
        configs += [("cpu again", "cpu", True)]
    runs = [_infer_one(pre, label, device, amp, args.repeats) for label, device, amp in configs]
    segs = [run.pop("_seg") for run in runs]
    probs = [run.pop("_fov_probs") for run in runs]
    ref, ref_seg, truth = runs[0], segs[0], sim.truth
    for run, seg, fov_probs in zip(runs, segs, probs):
        vs_cpu = astra_scores(seg.soma, seg.processes, ref_seg.soma, ref_seg.processes)
        vs_truth = astra_scores(seg.soma, seg.processes, truth.soma, truth.processes)
        run.update(soma_iou_vs_cpu=_iou(seg.soma, ref_seg.soma),
                   processes_iou_vs_cpu=_iou(seg.processes, ref_seg.processes),
                   detection_f1_vs_cpu=float(vs_cpu.detection_f1), soma_f1_vs_cpu=float(vs_cpu.soma_f1),
                   fov_prob_max_abs_diff=float(np.abs(fov_probs - probs[0]).max()),
                   detection_f1_vs_truth=float(vs_truth.detection_f1))
        min_iou = args.min_iou_amp if run["amp"] and run["device"] != "cpu" else args.min_iou
        run["agrees"] = run["n_cells"] == ref["n_cells"] and run["soma_iou_vs_cpu"] >= min_iou
    close = getattr(pre, "close", None)
    if callable(close):
        close()
    return {"movie": {"preset": args.movie_preset, "seed": 0, "shape": list(sim.movie.shape),
                      "true_cells": int(truth.soma.max()), "crops": int(len(pre.crops)),
                      "simulate_s": simulate_s, "preprocess_s": preprocess_s}, "runs": runs}


# --------------------------------------------------------------------------- report


def _part(name: str, func: Any, *a: Any, **k: Any) -> Any:
    print(f"\n=== {name} ===", flush=True)
    start = time.perf_counter()
    try:
        result = func(*a, **k)
    except Exception as err:  # one part failing must not lose the others' figures
        traceback.print_exc()
        result = {"error": f"{type(err).__name__}: {err}", "traceback": traceback.format_exc()[-3000:]}
    print(f"[{name}: {time.perf_counter() - start:.1f} s]", flush=True)
    return result


def _checks(report: dict[str, Any], args: argparse.Namespace) -> list[list[Any]]:
    rows = []
    for run in report["train"]:
        if "error" in run:
            rows.append([f"train {run.get('precision', '?')}", False, run["error"]])
            continue
        rows.append([f"train {run['precision']}", run["ok"],
                     f"rc {run['rc']}, loss finite {_fmt(run.get('loss_finite'))}, val/astra_f1 logged "
                     f"{_fmt(run.get('val_astra_f1_logged'))}, {run.get('epochs', 0)}/{args.epochs} epochs on "
                     f"{run.get('device')} ({run.get('lightning_precision')})"])
    for run in report["throughput"]:
        if "error" in run:
            rows.append([f"throughput {run.get('device')} {run.get('precision')}", False, run["error"]])
        else:
            rows.append([f"throughput {run['device']} {run['precision']}", run["loss_finite"], "loss finite"])
    inference = report["inference"]
    if "error" in inference:
        rows.append(["inference", False, inference["error"]])
    elif inference["runs"]:
        ref = inference["runs"][0]
        for run in inference["runs"][1:]:
            rows.append([f"inference {run['config']} vs cpu", run["agrees"],
                         f"cells {run['n_cells']} vs {ref['n_cells']}, soma IoU {run['soma_iou_vs_cpu']:.3f}"])
    return rows


def render(report: dict[str, Any], args: argparse.Namespace) -> str:
    env = report["environment"]
    device = env.get("gpu") or f"CPU ({env['cpu_count']} cores)"
    parts = [f"# astro3s GPU check ({time.strftime('%Y-%m-%d %H:%M')})", "",
             f"device: {device}; accelerator {args.accelerator}; torch {env['torch']} (CUDA {env['torch_cuda']}); "
             f"Lightning {env['lightning']}; Python {env['python']}; {env['cpu_count']} CPU cores, "
             f"torch threads {env['torch_threads']}; total {report['total_s']:.0f} s", ""]
    checks = _checks(report, args)
    parts += ["## Checks", "", _table(["check", "pass", "detail"], checks), ""]
    train = [r for r in report["train"] if "error" not in r]
    parts += [f"## Training: `python -m astro3s.cli.train experiment=example` ({args.epochs} epochs, "
              "s/epoch = median training loop without validation, first epoch excluded)", "",
              _table(["precision", "rc", "s/epoch", "samples/epoch", "samples/s", "first epoch s", "wall s",
                      "last train loss", "last val loss", "val astra_f1", "test astra_f1", "peak GPU GiB"],
                     [[r["precision"], r["rc"], r.get("s_per_epoch"), r.get("samples_per_epoch"),
                       r.get("samples_per_s"), (r.get("train_s_epochs") or [None])[0], r["wall_s"],
                       r.get("last_train_loss"), r.get("last_val_loss"), r.get("last_val_astra_f1"),
                       r.get("test_astra_f1"), r.get("peak_gpu_gib")] for r in train]), ""]
    thr = [r for r in report["throughput"] if "error" not in r]
    parts += [f"## Throughput: U-Net depth 4, base 16 (default model), batch {args.batch_size} x 1 x {CROP} x "
              f"{CROP}, forward + loss + backward + Adam", "",
              _table(["device", "precision", "samples/s", "ms/step", "steps", "peak GPU GiB"],
                     [[r["device"], r["precision"], r["samples_per_s"], r["ms_per_step"], r["steps"],
                       r.get("peak_gpu_gib")] for r in thr]), ""]
    inference = report["inference"]
    if "movie" in inference:
        movie = inference["movie"]
        parts += [f"## Inference: bundled model on a simulated `{movie['preset']}` movie (seed 0, "
                  f"{'x'.join(map(str, movie['shape']))}, {movie['true_cells']} true cells, {movie['crops']} crops; "
                  f"simulated in {movie['simulate_s']:.1f} s, pre-processed once on the CPU in "
                  f"{movie['preprocess_s']:.1f} s); seconds of run {args.repeats}", "",
                  _table(["config", "net passes s", "first net passes s", "network_s", "soma_scale_s",
                          "segment_movie s", "cells", "soma IoU vs cpu", "process IoU vs cpu",
                          "detection F1 vs cpu", "soma F1 vs cpu", "max abs dP FOV", "detection F1 vs truth"],
                         [[r["config"], r["net_passes_s"], r["net_passes_first_s"], r["network_s"],
                           r["soma_scale_s"], r["segment_s"], r["n_cells"], r["soma_iou_vs_cpu"],
                           r["processes_iou_vs_cpu"], r["detection_f1_vs_cpu"], r["soma_f1_vs_cpu"],
                           r["fov_prob_max_abs_diff"], r["detection_f1_vs_truth"]] for r in inference["runs"]]), ""]
    errors = [f"- {name}: {r['error']}" for name in ("throughput", "train")
              for r in report[name] if "error" in r]
    if "error" in inference:
        errors.append(f"- inference: {inference['error']}")
    if errors:
        parts += ["## Errors", "", *errors, ""]
    return "\n".join(parts)


def main() -> None:  # noqa: PLR0915 - a flat sequence of the three parts and the report
    import torch

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--accelerator", choices=["cuda", "cpu"], default="cuda" if torch.cuda.is_available()
                        else "cpu")
    parser.add_argument("--out", type=Path, default=None, help="folder for gpu_check.md and gpu_check.json")
    parser.add_argument("--work", type=Path, default=None, help="scratch folder (default: a temporary one)")
    parser.add_argument("--keep", action="store_true", help="keep the scratch folder")
    parser.add_argument("--quick", action="store_true", help="CPU dry run sizes: 3 epochs, tiny movie, few steps")
    parser.add_argument("--precisions", nargs="+", default=None,
                        help="default: 32-true 16-mixed bf16-mixed (cuda), 32-true bf16-mixed (cpu)")
    parser.add_argument("--epochs", type=int, default=None, help="training epochs per precision (default 5)")
    parser.add_argument("--train-timeout", type=float, default=120.0, help="seconds per training process")
    parser.add_argument("--batch-size", type=int, default=16, help="throughput batch of 96x96 crops")
    parser.add_argument("--min-seconds", type=float, default=3.0, help="timed seconds per accelerator throughput")
    parser.add_argument("--cpu-steps", type=int, default=None, help="timed CPU throughput steps (default 5)")
    parser.add_argument("--movie-preset", default=None, help="simulator preset (default d1_like; --quick: tiny)")
    parser.add_argument("--repeats", type=int, default=2, help="inference runs per device")
    parser.add_argument("--min-iou", type=float, default=0.95, help="soma IoU vs CPU for fp32 runs to agree")
    parser.add_argument("--min-iou-amp", type=float, default=0.9, help="soma IoU vs CPU for autocast runs")
    parser.add_argument("--skip", nargs="*", default=[], choices=["train", "throughput", "inference"])
    args = parser.parse_args()
    if args.accelerator == "cuda" and not torch.cuda.is_available():
        parser.error("--accelerator cuda but torch sees no CUDA device (torch.cuda.is_available() is False)")
    args.precisions = args.precisions or (["32-true", "16-mixed", "bf16-mixed"] if args.accelerator == "cuda"
                                          else ["32-true", "bf16-mixed"])
    args.epochs = args.epochs or (3 if args.quick else 5)
    args.cpu_steps = args.cpu_steps or (2 if args.quick else 5)
    args.movie_preset = args.movie_preset or ("tiny" if args.quick else "d1_like")
    if args.quick:
        args.min_seconds = min(args.min_seconds, 1.0)

    sys.path.insert(0, str(REPO))
    os.environ.setdefault("WANDB_MODE", "disabled")
    work = args.work or Path(tempfile.mkdtemp(prefix="astro3s_gpu_check_"))
    work.mkdir(parents=True, exist_ok=True)
    os.environ.setdefault("MPLCONFIGDIR", str(work / "mpl"))  # matplotlib's cache stays in the scratch folder
    start = time.perf_counter()
    report: dict[str, Any] = {"environment": _environment(args.accelerator), "args": {
        k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()}}
    print(json.dumps(report["environment"], indent=1), flush=True)

    report["train"] = []
    if "train" not in args.skip:
        for precision in args.precisions:
            result = _part(f"train {precision}", train_once, precision, args, work)
            result.setdefault("precision", precision)
            print({k: v for k, v in result.items() if k not in ("log_tail", "traceback")}, flush=True)
            if "log_tail" in result:
                print(result["log_tail"], flush=True)
            report["train"].append(result)

    report["throughput"] = []
    if "throughput" not in args.skip:
        devices = [args.accelerator] + (["cpu"] if args.accelerator != "cpu" else [])
        for device in devices:
            cpu = device == "cpu"
            for precision in args.precisions:
                if cpu and precision == "16-mixed":
                    continue  # Lightning has no fp16 autocast on CPU
                result = _part(f"throughput {device} {precision}", throughput, device, precision,
                               batch_size=args.batch_size, min_seconds=0.0 if cpu else args.min_seconds,
                               min_steps=args.cpu_steps if cpu else 10, max_steps=args.cpu_steps if cpu else 2000,
                               warmup=1 if cpu else 5)
                result.setdefault("device", device)
                result.setdefault("precision", precision)
                print(result, flush=True)
                report["throughput"].append(result)

    report["inference"] = {"runs": []}
    if "inference" not in args.skip:
        report["inference"] = _part("inference", inference_check, args)
        print(json.dumps(report["inference"], indent=1, default=str), flush=True)

    report["total_s"] = time.perf_counter() - start
    text = render(report, args)
    print("\n" + text, flush=True)
    if args.out is not None:
        args.out.mkdir(parents=True, exist_ok=True)
        (args.out / "gpu_check.md").write_text(text + "\n", encoding="utf-8")
        (args.out / "gpu_check.json").write_text(json.dumps(report, indent=1, default=str) + "\n", encoding="utf-8")
        print(f"written: {args.out / 'gpu_check.md'}, {args.out / 'gpu_check.json'}", flush=True)
    if args.work is None and not args.keep:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
