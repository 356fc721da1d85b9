"""The coarse look at FOVs the blob scale leaves unbinned: which FOVs it would bin, and whether they hold giants.

The measurement behind ``rules.coarse_scale_check`` (:func:`astro3s.inference.segment.coarse_bin_factor`,
2026-12-07, seventeenth session). Every movie folder under the given roots (a held-out or cross-check family
folder, a preset folder of ``evaluate_model.py``'s ``--data-dir``) is pre-processed as ``astro3s-infer`` does;
where the median image's blob scale (and the first network pass it may ask) leaves the FOV at its own pixels,
the FOV is looked at binned ``COARSE_CHECK_BIN`` times by the whole-FOV network pass, and the script records the
somata of the parameters' size that pass draws (their areas at the FOV's pixels), the bin factor they ask for,
and the true somata's areas, then prints how many FOVs the look bins with and without a giant soma
(>= ``GIANT_PX``) in their truth::

    python experiments/probe_coarse_check.py --out coarse_check.json data/heldout_family data/crosscheck_dev

Nothing is segmented: each movie costs its pre-processing and at most two network passes.
"""

from __future__ import annotations

import logging
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _probes import probe_main  # noqa: E402  (the experiments folder on the path first)

log = logging.getLogger("probe_coarse_check")

#: a true soma at least this large (px) is a giant (issue 13's size extremes: >= 2000 px, with a margin below)
GIANT_PX = 1500


def probe(folders: list[Path]) -> list[dict]:
    """One record per movie: ``movie``, ``vote_factor`` (the blob scale's bin factor), and when it is 1 and the
    FOV wide enough, ``coarse_somata`` (px) and ``coarse_factor``; ``true_somata`` (px, sorted)."""
    import evaluate_model as em
    from scipy import ndimage as ndi

    from astro3s.inference import load_inference_model
    from astro3s.inference.cells import _bin_factor, _coarse_check
    from astro3s.io import read_movie
    from astro3s.preprocess import preprocess

    model, options = load_inference_model("default", figures=False)
    rows: list[dict] = []
    for folder in folders:  # a loop over movies
        movie = read_movie(folder / f"{folder.name}.tif")
        try:
            pre = preprocess(movie, options.preprocess, progress=False)
            # the vote as the pipeline casts it, the coarse look apart (the rule off for the first call)
            vote, info, _ = _bin_factor(pre, model, _with_rule(options, False))
            row: dict = {"movie": folder.name, "vote_factor": int(vote)}
            if vote == 1:
                factor, checked = _coarse_check(pre, model, options, info)
                if "coarse_check_somata" in checked:
                    row.update(coarse_somata=checked["coarse_check_somata"], coarse_factor=int(factor))
        finally:
            movie.close()
        soma, _, _ = em._read_truth(folder)
        labels = np.unique(soma)[1:]
        row["true_somata"] = sorted(int(a) for a in ndi.sum(soma > 0, soma, labels)) if labels.size else []
        rows.append(row)
        log.info("%s: %s", folder.name, {k: v for k, v in row.items() if k != "movie"})
    return rows


def _with_rule(options, on: bool):
    import dataclasses

    return dataclasses.replace(options, rules=dataclasses.replace(options.rules, coarse_scale_check=on))


def summary(rows: list[dict]) -> str:
    """Markdown: FOVs looked at, and those the look bins, with and without a giant soma in their truth."""
    looked = [r for r in rows if "coarse_somata" in r]
    binned = [r for r in looked if r["coarse_factor"] > 1]
    drawn = [r for r in looked if r["coarse_somata"]]

    def giant(row: dict) -> bool:
        return bool(row["true_somata"]) and max(row["true_somata"]) >= GIANT_PX

    lines = [f"{len(rows)} movies; {sum(r['vote_factor'] > 1 for r in rows)} binned by the blob scale; "
             f"{len(looked)} looked at binned", "",
             "| FOVs looked at | with a true soma >= 1500 px | without |", "|---|---|---|",
             f"| all | {sum(map(giant, looked))} | {sum(not giant(r) for r in looked)} |",
             f"| the coarse pass draws a soma of the parameters' size | {sum(map(giant, drawn))} | "
             f"{sum(not giant(r) for r in drawn)} |",
             f"| ... and asks for binning | {sum(map(giant, binned))} | {sum(not giant(r) for r in binned)} |", ""]
    for row in binned:
        lines.append(f"- `{row['movie']}`: coarse somata {row['coarse_somata']} px -> binned "
                     f"{row['coarse_factor']}x{row['coarse_factor']}; true somata {row['true_somata']} px")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    return probe_main(__doc__.split("\n\n")[0], probe, summary, argv)

if __name__ == "__main__":
    raise SystemExit(main())
