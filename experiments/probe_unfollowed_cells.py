"""Cells whose somatic events are fairly fast and whose processes do not follow the soma: how many are true.

The measurement behind ``rules.unfollowed_max_correlation`` (:func:`astro3s.events.kinetics.unfollowed_cells`,
2026-12-07, nineteenth session). Reads the segmentations ``evaluate_model.py --keep-fast-event-cells
--save-segmentations DIR`` wrote (one ``.npz`` per movie: the cells before either kinetics rule, and the truth) and
the movies they came from (``DATA_DIR/<name>/<name>.tif``). For every cell it records its strong somatic events
(SNR >= ``FAST_MIN_SNR``, detected on the soma's dF/F as ``astro3s-infer`` detects them), their median decay, the
correlation of its processes' mean dF/F with its soma's (:func:`~astro3s.events.kinetics.process_following`) and
whether it matches a true soma (IoU >= 0.5); then prints, for each setting of a small grid, the false and true cells
the rule removes beyond those of the fast-event rule. The traces are read from the movie as written (the
pipeline reads its motion-corrected copy: the figures differ a little)::

    python experiments/evaluate_model.py --sets --heldout data/fresh284 --keep-fast-event-cells \\
        --save-segmentations /tmp/segs_284 --out /tmp/k284.md
    python experiments/probe_unfollowed_cells.py /tmp/segs_284=data/fresh284 --out unfollowed.json
"""

from __future__ import annotations

import itertools
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))  # _probes, beside this script
from _probes import grid_table, segmentation_sets_main, set_table  # noqa: E402  (the experiments folder on the path first)

#: the grid printed: the correlation under which processes do not follow, the decay and the events it needs
CORRELATIONS = (0.3, 0.4, 0.5)
DECAYS_S = (1.4, 1.6, 1.8, 2.0)
MIN_EVENTS = (3, 5)


def cell_records(segmentation: Path, movie_path: Path) -> list[dict]:
    """One record per cell of the FOV in ``segmentation``: ``movie``, ``cell``, ``true``, ``events`` (strong somatic
    events), ``decay_s`` (their median decay; None when none was measured), ``following`` (None without a
    process trace or a frame rate)."""
    from astro3s.correlation import extract_traces
    from astro3s.events.kinetics import FAST_MIN_SNR, kinetics_events, process_following, somatic_kinetics
    from astro3s.io import read_movie
    from astro3s.metrics import match_instances

    data = np.load(segmentation)
    soma, processes = data["soma"].astype(np.int32), data["processes"].astype(np.int32)
    ids = np.unique(soma)[1:]
    if not ids.size:
        return []
    movie = read_movie(movie_path)
    try:
        traces = extract_traces(movie, soma, processes, fs=getattr(movie, "fs", None))
    finally:
        movie.close()
    cells, counts, decay_s = somatic_kinetics(kinetics_events(traces), min_snr=FAST_MIN_SNR)
    kinetics = {int(c): (int(n), float(d)) for c, n, d in zip(cells, counts, decay_s)}
    following = process_following(traces) if traces.fs else {}
    matched = set(int(k) for k in match_instances(soma, data["gt_soma"].astype(np.int32)).pred_ids)
    records = []
    for k in ids.tolist():  # a loop over the cells (tens)
        events, decay = kinetics.get(k, (0, float("nan")))
        corr = following.get(k)
        records.append({"movie": segmentation.stem, "cell": k, "true": k in matched, "events": events,
                        "decay_s": None if np.isnan(decay) else decay,
                        "following": None if corr is None or np.isnan(corr) else corr})
    return records


def removed(records: list[dict], correlation: float, decay_s: float, min_events: int) -> tuple[int, int]:
    """(false, true) cells the rule removes at this setting that the fast-event rule (``FAST_MIN_EVENTS`` events
    of median decay under ``FAST_MAX_DECAY_S``) leaves."""
    from astro3s.events.kinetics import FAST_MAX_DECAY_S, FAST_MIN_EVENTS

    def fast(r: dict, events: int, decay: float) -> bool:
        return r["events"] >= events and r["decay_s"] is not None and r["decay_s"] < decay

    gone = [r for r in records if fast(r, min_events, decay_s) and r["following"] is not None
            and r["following"] < correlation and not fast(r, FAST_MIN_EVENTS, FAST_MAX_DECAY_S)]
    return sum(not r["true"] for r in gone), sum(r["true"] for r in gone)


def summary(sets: dict[str, list[dict]]) -> str:
    """Markdown: the cells of each set, then per grid setting the false / true cells removed per set."""
    settings = [([f"{c:g}", f"{d:g}", str(n)], lambda records, c=c, d=d, n=n: removed(records, c, d, n))
                for c, d, n in itertools.product(CORRELATIONS, DECAYS_S, MIN_EVENTS)]
    header = ["processes follow under", "decay under (s)", "events >="]
    lines = set_table(sets) + [""] + grid_table(sets, settings, header)
    return "\n".join(lines + ["", "Each cell of the grid: false / true cells removed beyond the fast-event rule's."])


def set_records(segmentations: Path, data: Path) -> list[dict]:
    """The records of every saved segmentation of a folder, each read with its movie ``data/<name>/<name>.tif``."""
    return [r for path in sorted(segmentations.glob("*.npz"))
            for r in cell_records(path, data / path.stem / f"{path.stem}.tif")]


def main(argv: list[str] | None = None) -> int:
    return segmentation_sets_main(__doc__.split("\n\n")[0], "DATA_DIR (evaluate_model.py's npz, the movies)",
                                  set_records, summary, argv)


if __name__ == "__main__":
    sys.exit(main())
