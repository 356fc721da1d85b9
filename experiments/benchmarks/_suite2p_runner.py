"""Run Suite2p's registration + ROI detection on one movie and print its timings as JSON.

Runs in Suite2p's own environment (see experiments/README.md, "Suite2p"), called by
``bench_pipeline.py --suite2p-python PYTHON``:

    PYTHON experiments/benchmarks/_suite2p_runner.py MOVIE.tif WORKDIR --fs 10 [--diameter 12]

Only the standard library, NumPy and Suite2p are imported (not astro3s). Suite2p
copies the TIFF to its binary format, registers it (rigid + non-rigid) and
detects ROIs (``sparsery``, its default); extraction, deconvolution and the
classifier run too unless ``--detect-only`` (the default here) stops after
detection. The printed JSON holds the wall time of each step, the ROI count and
the peak RSS of the process.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import sys
import time
from pathlib import Path


def main() -> None:  # noqa: C901, PLR0915 - a linear benchmark script
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("movie", type=Path)
    parser.add_argument("workdir", type=Path)
    parser.add_argument("--fs", type=float, default=10.0)
    parser.add_argument("--diameter", type=float, default=12.0)
    parser.add_argument("--full", action="store_true", help="also extraction, deconvolution, classification")
    parser.add_argument("--no-registration", action="store_true", help="detection on the unregistered movie")
    args = parser.parse_args()

    import logging

    logging.disable(logging.INFO)
    import numpy as np
    import suite2p

    if args.workdir.exists():
        shutil.rmtree(args.workdir)
    data = args.workdir / "data"
    data.mkdir(parents=True)
    os.symlink(args.movie.resolve(), data / args.movie.name)
    settings = suite2p.default_settings()
    settings["torch_device"] = "cpu"
    settings["fs"] = args.fs
    settings["diameter"] = [args.diameter, args.diameter]
    settings["run"]["do_regmetrics"] = False
    settings["run"]["do_registration"] = 0 if args.no_registration else 1
    settings["run"]["do_deconvolution"] = bool(args.full)
    settings["io"]["save_mat"] = False
    settings["io"]["delete_bin"] = True
    marks: dict[str, float] = {}
    import importlib

    run_module = importlib.import_module("suite2p.run_s2p")  # the module (suite2p.run_s2p is also a function)

    convert = run_module.files_to_binary["tif"]

    def timed_convert(*a, **kw):
        marks["convert_start"] = time.perf_counter()
        out = convert(*a, **kw)
        marks["convert_end"] = time.perf_counter()
        return out

    run_module.files_to_binary["tif"] = timed_convert
    if not args.full:
        # stop after ROI detection: Suite2p's pipeline returns right after detection when
        # extraction finds no work, so we cut it by raising once detection has saved stat.npy
        from suite2p import pipeline_s2p

        original = pipeline_s2p.detection.detection_wrapper

        def detection_then_stop(*a, **kw):
            marks["detect_start"] = time.perf_counter()
            out = original(*a, **kw)
            raise _Detected(out, time.perf_counter() - marks["detect_start"])

        pipeline_s2p.detection.detection_wrapper = detection_then_stop
    db = suite2p.default_db()
    db["data_path"] = [str(data)]
    db["save_path0"] = str(args.workdir)
    start = time.perf_counter()
    n_rois, detect_s = None, None
    try:
        suite2p.run_s2p(db=db, settings=settings)
    except _Detected as done:
        detect_s = done.seconds
        n_rois = len(done.outputs[1])
    total = time.perf_counter() - start
    plane = args.workdir / "suite2p" / "plane0"
    if n_rois is None and (plane / "stat.npy").exists():
        n_rois = len(np.load(plane / "stat.npy", allow_pickle=True))
    timing = {}
    if (plane / "ops.npy").exists():
        timing = np.load(plane / "ops.npy", allow_pickle=True).item().get("plane_times", {})
    convert_s = marks["convert_end"] - marks["convert_start"] if "convert_end" in marks else None
    register_s = marks["detect_start"] - marks["convert_end"] if "detect_start" in marks and convert_s else None
    print(json.dumps({"suite2p_total_s": round(total, 2), "detection_s": None if detect_s is None
                      else round(detect_s, 2), "convert_s": None if convert_s is None else round(convert_s, 2),
                      "registration_s": None if register_s is None else round(register_s, 2),
                      "plane_times": {k: round(float(v), 2) for k, v in timing.items()},
                      "n_rois": n_rois, "registration_skipped": bool(args.no_registration),
                      "peak_rss_gb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20, 3),
                      "python": sys.version.split()[0]}))
    shutil.rmtree(args.workdir, ignore_errors=True)


class _Detected(Exception):
    def __init__(self, outputs, seconds):
        super().__init__("detection finished")
        self.outputs = outputs
        self.seconds = seconds


if __name__ == "__main__":
    main()
