"""Calcium-event detection on simulated movies, scored against the simulator's event ground truth.

For each movie (``d1_like`` x3, ``d3_like`` x1, ``randomised`` x3 by default; seeds
7000+, simulated once under ``--root`` and reused), ``astro3s-infer``'s path runs
on the *true* cells (the ground-truth RoiSet, as ``rois=`` does: no network), so
the figures are those of the event detector alone: traces, CC domains,
``events.csv``, ``traces.png`` with the events marked. The events are scored
with :mod:`astro3s.events.score` (cells paired by soma IoU >= 0.5, ROI by ROI,
onsets within max(1.5 s, 2 frames), true events closer than that count as one;
optional: true events under matched-filter SNR 5, other sources' events):

- event precision, recall, F1 of somatic and process events, per preset and pooled;
- the median onset error (frames) of the matched events;
- the median error of the soma -> process delay (s), over all linked matched
  process events and over those with a true delay > 0.25 s (waves);
- the same with every visible event required (``strict``: neighbours' events
  and other compartments' events too);
- a naive detector on the same traces, for comparison: an event at each upward
  crossing of median + 3 x 1.4826 MAD of the dF/F trace.

    python experiments/evaluate_events.py
    python experiments/evaluate_events.py --sets d1_like:3 d3_like:1 randomised:3 --out experiments/results/events.md

Writes a Markdown report and a JSON file beside it (per-movie scores).
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from pathlib import Path

import numpy as np

if __package__ in (None, ""):  # run as a script: _runs sits beside it
    sys.path.insert(0, str(Path(__file__).resolve().parent))

from _runs import parse_sets  # noqa: E402

log = logging.getLogger("evaluate_events")

DEFAULT_SETS = ("d1_like:3", "d3_like:1", "randomised:3")
FIRST_SEED = 7000
#: the issue's "done when" figures
TARGETS = {"soma_f1": 0.90, "process_f1": 0.80, "onset_error_frames": 1.0, "delay_error_s": 0.5}



def ensure_event_truth(folder: Path) -> Path:
    """``ground_truth/events.csv`` of a simulated movie folder, computed from its scene when missing
    (folders written before the simulator exported events; the scene is rebuilt, not rendered)."""
    path = folder / "ground_truth" / "events.csv"
    if not path.is_file():
        from astro3s.simulate import simulate_preset
        from astro3s.simulate.events import event_truth, write_event_truth

        meta = json.loads((folder / "meta.json").read_text())
        sim = simulate_preset(meta["preset"], seed=int(meta["seed"]), name=folder.name, stream=True)
        write_event_truth(path, event_truth(sim.scene, sim.truth))
    return path


def naive_events(dff: np.ndarray, names: list[str], cells: np.ndarray, kinds: list[str], fs: float) -> object:
    """Events of the naive detector: onset at each upward crossing of median + 3 robust SDs, per ROI."""
    from astro3s.events import EventTable

    dff = np.asarray(dff, np.float64)
    med = np.nanmedian(dff, axis=0)
    mad = 1.4826 * np.nanmedian(np.abs(dff - med), axis=0)
    above = np.nan_to_num(dff) > med + 3 * np.maximum(mad, 1e-12)
    t, r = np.nonzero(above[1:] & ~above[:-1])
    onset = (t + 1).astype(np.int64)
    n = len(onset)
    nan = np.full(n, np.nan)
    return EventTable(cell_id=cells[r].astype(np.int64), kind=[kinds[i] for i in r], roi=[names[i] for i in r],
                      onset_frame=onset, peak_frame=onset, end_frame=onset, amplitude_dff=nan, rise_frames=nan,
                      decay_frames=nan, auc_frames=nan, snr=nan, soma_event=np.full(n, -1, np.int64),
                      delay_frames=nan, fs=fs, n_frames=dff.shape[0])


def read_traces_csv(path: Path) -> tuple[np.ndarray, list[str], np.ndarray, list[str]]:
    """``traces.csv`` -> dF/F (T, R), ROI names, their cells and kinds."""
    header = path.read_text().splitlines()[0].split(",")
    first = 2 if len(header) > 1 and header[1] == "time_s" else 1
    data = np.loadtxt(path, delimiter=",", skiprows=1, ndmin=2)
    names = header[first:]
    cells = np.array([int(n.split("_")[1]) for n in names], np.int64)
    kinds = ["soma" if n.startswith("Soma_") else "process" for n in names]
    return data[:, first:], names, cells, kinds


def score_one(folder: Path, out: Path) -> dict:
    """Scores of one movie's outputs ``out`` against its ground truth ``folder/ground_truth``."""
    from astro3s.events import read_events_csv
    from astro3s.events.score import roi_correspondence, score_movie
    from astro3s.io import read_labels
    from astro3s.metrics import match_instances
    from astro3s.simulate.events import read_event_truth

    summary = json.loads((out / "summary.json").read_text())
    fs, n_frames = float(summary["fs"]), int(summary["shape"][0])
    gt = folder / "ground_truth"
    truth = read_event_truth(gt / "events.csv")
    pred_soma, pred_proc = read_labels(out / "soma.tif"), read_labels(out / "processes.tif")
    gt_soma, gt_proc = read_labels(gt / "soma.tif"), read_labels(gt / "processes.tif")
    match = match_instances(pred_soma, gt_soma, iou_threshold=0.5)
    roi_map = roi_correspondence(pred_soma, pred_proc, gt_soma, gt_proc, match.pred_ids, match.gt_ids)
    pred = read_events_csv(out / "events.csv", fs=fs, n_frames=n_frames)
    dff, names, cells, kinds = read_traces_csv(out / "traces.csv")
    naive = naive_events(dff, names, cells, kinds, fs)
    common = dict(fs=fs, n_frames=n_frames, roi_map=roi_map)
    return {"fs": fs, "n_frames": n_frames, "n_cells_gt": int(match.n_gt), "n_cells_paired": len(match.gt_ids),
            "events": score_movie(pred, truth, match.pred_ids, match.gt_ids, **common),
            "strict": score_movie(pred, truth, match.pred_ids, match.gt_ids, own_only=False, **common),
            "naive": score_movie(naive, truth, match.pred_ids, match.gt_ids, **common),
            "files": {name: (out / name).is_file() for name in ("events.csv", "traces.png")}}


def pooled(rows: list[dict], variant: str) -> dict[str, dict]:
    """Pool the compartment scores of ``rows`` for one variant."""
    from astro3s.events.score import CompartmentScores

    acc = {k: CompartmentScores() for k in ("soma", "process")}
    for row in rows:
        for k in acc:
            acc[k].add(row[variant][k])
    return {k: v.as_dict() for k, v in acc.items()}


def _f(v: object, digits: int = 3) -> str:
    return "-" if v is None else f"{v:.{digits}f}"


#: said in every report: where the detector's parameters come from
PROVENANCE = ("The detector and its default parameters were developed on the movies of seeds 7000+ "
              "(d1_like 7000-7002, d3_like 7000, randomised 7000-7002); `--first-seed 9000` gave an "
              "independent set of the same presets (`experiments/results/events_seeds9000.md`), on which the "
              "neuropil correction (`EventParams.neuropil_max_coef`) was then chosen, so seeds 9000+ are "
              "development movies too; `--first-seed 11000` (`experiments/results/events_seeds11000.md`) was "
              "first run after that choice. The noise measured below the running baseline "
              "(`astro3s.events.detect.running_baseline`) was chosen on seeds 7000 and 9000 only, then run once "
              "on 11000 and once on the fresh seeds 13000 (`experiments/results/events_seeds13000.md`), which "
              "no choice has seen.")


def report(results: dict[str, list[dict]], *, seconds: float, sets: list[tuple[str, int]], first_seed: int) -> str:
    """The Markdown report."""
    groups = {**{preset: rows for preset, rows in results.items()},
              "all": [r for rows in results.values() for r in rows]}
    lines = ["# Calcium events on simulated movies (true cells)", "",
             f"`python experiments/evaluate_events.py --sets {' '.join(f'{p}:{n}' for p, n in sets)} "
             f"--first-seed {first_seed}` ({seconds / 60:.1f} min). " + PROVENANCE + " "
             "The inference path of `astro3s-infer rois=` on the "
             "ground-truth cells; scored by `astro3s.events.score` (cells paired by soma IoU >= 0.5, ROI by ROI, "
             "onsets within max(1.5 s, 2 frames), true events closer than that count as one). Required true "
             "events: the cell's own events of the compartment (whole-cell events and waves in every compartment, "
             "soma-only events in the soma, microdomain events in the processes) with a matched-filter SNR >= 5, "
             "starting in the movie; events of other sources visible in the ROI (neighbours' territories, neurons, "
             "look-alikes, a soma-only event blurred into a process ROI) are optional: detecting them is no error, "
             "missing them none. `strict` requires every visible event with SNR >= 5.", "",
             "| set | movies | compartment | P | R | F1 | onset err (frames, median) | delay err (s, median, all / "
             "true delay > 0.25 s) | strict F1 | naive F1 |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for name, rows in groups.items():
        ev, strict, naive = pooled(rows, "events"), pooled(rows, "strict"), pooled(rows, "naive")
        for kind in ("soma", "process"):
            s = ev[kind]
            delay = "-" if kind == "soma" else (f"{_f(s['median_delay_error_s'], 2)} (n={s['n_delays']}) / "
                                                 f"{_f(s['median_delay_error_nonzero_s'], 2)} "
                                                 f"(n={s['n_nonzero_delays']})")
            lines.append(f"| {name} | {len(rows)} | {kind} | {_f(s['precision'])} | {_f(s['recall'])} | "
                         f"{_f(s['f1'])} | {_f(s['median_onset_error_frames'], 2)} | {delay} | "
                         f"{_f(strict[kind]['f1'])} | {_f(naive[kind]['f1'])} |")
    everything = pooled(groups["all"], "events")
    onset = max(everything[k]["median_onset_error_frames"] or 0 for k in ("soma", "process"))
    delay = everything["process"]["median_delay_error_s"]
    checks = [("somatic event F1 >= 0.90", everything["soma"]["f1"], everything["soma"]["f1"] is not None
               and everything["soma"]["f1"] >= TARGETS["soma_f1"]),
              ("process event F1 >= 0.80", everything["process"]["f1"], everything["process"]["f1"] is not None
               and everything["process"]["f1"] >= TARGETS["process_f1"]),
              ("median onset error <= 1 frame", onset, onset <= TARGETS["onset_error_frames"]),
              ("soma -> process delay error <= 0.5 s (median)", delay, delay is not None
               and delay <= TARGETS["delay_error_s"])]
    files = all(all(r["files"].values()) for r in groups["all"])
    lines += ["", "Done-when figures (all movies pooled):", ""]
    lines += [f"- {text}: {_f(value)} ({'met' if ok else 'NOT met'})" for text, value, ok in checks]
    lines += [f"- events.csv and traces.png written for every movie: {'yes' if files else 'NO'}", "",
              "Per movie:", "", "| movie | fs (Hz) | frames | cells paired / true | soma F1 | process F1 | "
              "onset err soma / process (frames) |", "|---|---|---|---|---|---|---|"]
    for name, rows in results.items():
        for r in rows:
            e = {k: v.as_dict() for k, v in r["events"].items()}
            lines.append(f"| {r['movie']} | {r['fs']:.2f} | {r['n_frames']} | {r['n_cells_paired']} / "
                         f"{r['n_cells_gt']} | {_f(e['soma']['f1'])} | {_f(e['process']['f1'])} | "
                         f"{_f(e['soma']['median_onset_error_frames'], 2)} / "
                         f"{_f(e['process']['median_onset_error_frames'], 2)} |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    """Simulate (once), run the inference path on the true cells, score, write the report."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sets", nargs="+", default=list(DEFAULT_SETS), help="PRESET:N ...")
    parser.add_argument("--root", default="data/events_eval", help="simulated movies (reused when present)")
    parser.add_argument("--work", default="data/events_eval_outputs", help="inference outputs")
    parser.add_argument("--first-seed", type=int, default=FIRST_SEED)
    parser.add_argument("--out", default="experiments/results/events.md")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    logging.getLogger("astro3s").setLevel(logging.WARNING)

    from astro3s.correlation import CorrelationParams
    from astro3s.data.fovs import SyntheticFOVs
    from astro3s.events import EventParams
    from astro3s.inference.pipeline import InferenceOptions, infer_movie
    from astro3s.preprocess.params import as_preprocess_params

    sets = parse_sets(args.sets)
    options = InferenceOptions(preprocess=as_preprocess_params(None), correlation=CorrelationParams(),
                               events=EventParams(), figures=True, model_name="(true rois)")
    start = time.perf_counter()
    results: dict[str, list[dict]] = {}
    for preset, count in sets:  # a loop over presets
        specs = SyntheticFOVs(preset=preset, n_fovs=count, root=args.root, first_seed=args.first_seed).fovs()
        for spec in specs:  # a loop over movies
            folder = spec.movie.parent
            ensure_event_truth(folder)
            t = time.perf_counter()
            res = infer_movie(spec.movie, Path(args.work) / preset, None, options,
                              rois=folder / "ground_truth" / "RoiSet.zip", progress=False)
            row = {"movie": spec.name, "seconds": time.perf_counter() - t, **score_one(folder, res.output)}
            results.setdefault(preset, []).append(row)
            e = {k: v.as_dict() for k, v in row["events"].items()}
            log.info("%s: soma F1 %s, process F1 %s (%.0f s)", spec.name, e["soma"]["f1"], e["process"]["f1"],
                     row["seconds"])
    text = report(results, seconds=time.perf_counter() - start, sets=sets, first_seed=args.first_seed)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(text)
    per_movie = {r["movie"]: {"preset": p, "fs": r["fs"], "n_frames": r["n_frames"],
                              **{v: {k: s.as_dict() for k, s in r[v].items()} for v in ("events", "strict", "naive")}}
                 for p, rows in results.items() for r in rows}
    out.with_suffix(".json").write_text(json.dumps(per_movie, indent=1))
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
