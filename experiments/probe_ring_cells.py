"""Cells on filled ring cores: how far their processes reach past the rim, true cells against false ones.

The measurement behind ``rules.ring_cell_process_ratio`` (:func:`astro3s.inference.cells.drop_ring_cells`,
2026-12-07, sixteenth session). Every movie folder under the given roots (a held-out or cross-check family
folder, a preset folder of ``evaluate_model.py``'s ``--data-dir``) is run through the shipped pipeline with that
rule off (and the fast-event rule on, as ``evaluate_model.py`` runs it); for each cell whose soma holds at least
half of one core the ring-core fill raised (``Preprocessed.ring_cores``), the script records its soma area, its
process pixels farther than 4 px from the soma and whether it matches a true soma (IoU >= 0.5), then prints how
many true and false cells fall under each candidate ratio::

    python experiments/probe_ring_cells.py --out ring_cells.json data/heldout_family data/crosscheck_dev

Movies without a filled core are pre-processed only.
"""

from __future__ import annotations

import dataclasses
import logging
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _probes import probe_main  # noqa: E402  (the experiments folder on the path first)

log = logging.getLogger("probe_ring_cells")

#: the ratios (process pixels past the reach / soma area) the summary counts cells under
RATIOS = (0.05, 0.1, 0.15, 0.2, 0.3, 0.5)


def cells_on_cores(seg, cores: np.ndarray, matched: set[int]) -> list[dict]:
    """One record per cell of ``seg`` on a core of ``cores``, as the rule judges it
    (:func:`astro3s.inference.cells.ring_cell_processes`, the rule's reach and core share)."""
    from astro3s.inference.cells import ring_cell_processes

    cells, past_reach = ring_cell_processes(seg, cores)
    process_area = np.bincount(seg.processes.ravel(), minlength=seg.n_cells + 1)
    return [{"cell": int(cell), "matched": int(cell) in matched, "soma_area": int(seg.soma_area[cell - 1]),
             "process_px": int(process_area[cell]), "process_px_past_reach": int(past)}
            for cell, past in zip(cells, past_reach)]


def probe(folders: list[Path]) -> list[dict]:
    """:func:`cells_on_cores` of every movie, the pipeline run with the ring-cell rule off."""
    import evaluate_model as em

    from astro3s.inference import load_inference_model, segment_movie
    from astro3s.io import read_movie
    from astro3s.metrics import match_instances
    from astro3s.preprocess import preprocess

    model, options = load_inference_model("default", figures=False)
    options = dataclasses.replace(options, rules=dataclasses.replace(options.rules, ring_cell_process_ratio=0.0))
    rows: list[dict] = []
    for folder in folders:  # a loop over movies
        movie = read_movie(folder / f"{folder.name}.tif")
        try:
            pre = preprocess(movie, options.preprocess, progress=False)
            if pre.ring_cores is None:
                continue
            cores = pre.ring_cores
            pre, seg, _ = segment_movie(pre, model, options, name=folder.name)
            if options.drop_fast_event_cells:
                seg = em._without_fast_event_cells(seg, pre.corrected if pre.corrected is not None else movie,
                                                   rules=options.rules)
        finally:
            movie.close()
        soma, _, _ = em._read_truth(folder)
        matched = set(match_instances(seg.soma, soma).pred_ids.tolist())
        for row in cells_on_cores(seg, cores, matched):
            rows.append({"movie": folder.name, **row})
        log.info("%s: %d cell(s) on filled cores", folder.name, sum(r["movie"] == folder.name for r in rows))
    return rows


def summary(rows: list[dict]) -> str:
    """Markdown: true and false cells under each ratio of :data:`RATIOS`."""
    lines = [f"{len(rows)} cells on filled cores, {sum(not r['matched'] for r in rows)} false", "",
             "| process px past 4 px / soma area under | false cells | true cells |", "|---|---|---|"]
    for ratio in RATIOS:
        under = [r for r in rows if r["process_px_past_reach"] < ratio * r["soma_area"]]
        lines.append(f"| {ratio} | {sum(not r['matched'] for r in under)} | {sum(r['matched'] for r in under)} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    return probe_main(__doc__.split("\n\n")[0], probe, summary, argv)

if __name__ == "__main__":
    raise SystemExit(main())
