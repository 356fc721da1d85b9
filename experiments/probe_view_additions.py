"""Cells the second network views add (active, correlation): true and false ones, and how blurred each is.

The measurement behind ``rules.correlation_view_max_blur`` (:func:`astro3s.inference.cells.add_correlation_view_cells`,
2026-12-08, twentieth session). Every movie folder under the given roots is run through the shipped pipeline with
the correlation view on and that test off (the fast-event rule on, as ``evaluate_model.py`` runs it). For each
cell a view adds, the script records the view, its soma's edge blur relative to the cells found before it on the
movie's local correlation image and on its median image (:func:`astro3s.postprocess.sharpness.soma_edge_blur`,
the measure of the rule), whether it is still a cell at the end and whether it then matches a true soma
(IoU >= 0.5), and prints, for each bound, the true and false cells of the correlation view it keeps::

    python experiments/probe_view_additions.py --out view_additions.json data/heldout_family data/fresh300
"""

from __future__ import annotations

import dataclasses
import logging
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _probes import probe_main  # noqa: E402  (the experiments folder on the path first)

log = logging.getLogger("probe_view_additions")

#: the bounds on the relative blur on the correlation image the summary counts cells under
BOUNDS = (1.1, 1.2, 1.3, 1.5, 2.0, float("inf"))


def relative_blur(image: np.ndarray | None, soma: np.ndarray, n_before: int) -> np.ndarray:
    """Edge blur on ``image`` of each cell ``n_before + 1..`` of the label image ``soma`` over the median of cells
    ``1..n_before`` (float64, one per added cell; NaN without an image or reference cells)."""
    from astro3s.postprocess.sharpness import soma_edge_blur

    n = int(soma.max(initial=0))
    if image is None or n_before < 1 or n <= n_before:
        return np.full(max(n - n_before, 0), np.nan)
    blur = np.asarray(soma_edge_blur(image, soma), np.float64)
    return blur[n_before:n] / np.nanmedian(blur[:n_before])


def fate(added_soma: np.ndarray, final_soma: np.ndarray, matched: set[int]) -> tuple[bool, bool]:
    """Whether an added soma (bool mask) is still a cell at the end (a final soma holds over half of it) and
    whether that cell matches a true soma (its id in ``matched``)."""
    ids, counts = np.unique(final_soma[added_soma], return_counts=True)
    counts[ids == 0] = 0
    if not counts.any() or counts.max() * 2 <= int(added_soma.sum()):
        return False, False
    return True, int(ids[np.argmax(counts)]) in matched


def probe(folders: list[Path]) -> list[dict]:
    """One record per cell a view adds, the pipeline run with the correlation view on and its focus test off."""
    import evaluate_model as em

    from astro3s.inference import cells, load_inference_model
    from astro3s.metrics import match_instances

    model, options = load_inference_model("default", figures=False, correlation_view=True)
    options = dataclasses.replace(options, rules=dataclasses.replace(options.rules, correlation_view_max_blur=0.0))
    original = cells.add_view_cells
    added: list[tuple[str, np.ndarray, float, float]] = []  # the current movie's additions

    def recorded(seg, view, pre, *args, **kwargs):
        out = original(seg, view, pre, *args, **kwargs)
        on_correlation = relative_blur(getattr(pre, "correlation_image", None), out.soma, seg.n_cells)
        on_median = relative_blur(getattr(pre, "median_image", None), out.soma, seg.n_cells)
        for k in range(seg.n_cells + 1, out.n_cells + 1):
            added.append((kwargs["label"], out.soma == k, on_correlation[k - seg.n_cells - 1],
                          on_median[k - seg.n_cells - 1]))
        return out

    rows: list[dict] = []
    cells.add_view_cells = recorded
    try:
        for folder in folders:  # a loop over movies
            added.clear()
            _, seg, _ = em.segment_folder(folder, model, options)
            soma, _, _ = em._read_truth(folder)
            matched = set(match_instances(seg.soma, soma).pred_ids.tolist())
            for label, mask, blur_correlation, blur_median in added:
                kept, true = fate(mask, seg.soma, matched)
                rows.append({"movie": folder.name, "view": label, "kept": kept, "true": true,
                             "area": int(mask.sum()), "blur_on_correlation": float(blur_correlation),
                             "blur_on_median": float(blur_median)})
            log.info("%s: %d cell(s) added by the views", folder.name, len(added))
    finally:
        cells.add_view_cells = original
    return rows


def summary(rows: list[dict]) -> str:
    """Markdown: the views' additions still cells at the end, true / false; then the correlation view's kept
    under each bound on their relative blur on the correlation image."""
    lines = [f"{len({r['movie'] for r in rows})} movies with additions", "",
             "| view | added | still cells: true / false |", "|---|---|---|"]
    for view in sorted({r["view"] for r in rows}):
        own = [r for r in rows if r["view"] == view]
        kept = [r for r in own if r["kept"]]
        lines.append(f"| {view} | {len(own)} | {sum(r['true'] for r in kept)} / {sum(not r['true'] for r in kept)} |")
    lines += ["", "| correlation view, blur on the correlation image <= | true | false |", "|---|---|---|"]
    kept = [r for r in rows if r["view"] == "correlation_view" and r["kept"]]
    for bound in BOUNDS:
        under = [r for r in kept if not r["blur_on_correlation"] > bound]  # NaN (no reference) kept, as the rule
        lines.append(f"| {bound:g} | {sum(r['true'] for r in under)} | {sum(not r['true'] for r in under)} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    return probe_main(__doc__.splitlines()[0], probe, summary, argv)


if __name__ == "__main__":
    sys.exit(main())
