"""How wide processes are drawn, found and true, and what drawing them 1 px wider would score.

    python experiments/process_width_probe.py SEGMENTATIONS_DIR [...]

``SEGMENTATIONS_DIR``: a folder written by ``evaluate_model.py --save-segmentations``
(one ``.npz`` per movie with the cells found and the truth). Per member, printed:

- the median over cells of the process width (area / skeleton length of a
  cell's processes, px; :func:`astro3s.metrics.cell_process_figures`), of the
  cells found and of the true ones. ASTRA's annotators draw 3.7 px on D1, 4.1 px
  on D4 and 9.0 px on D2 (``astro3s/annotation.py``);
- process pixel precision, recall and F1 (every process pixel of the movie,
  pooled over the member's movies, ids ignored), as found and with the found
  processes dilated by 1 px (outside the somata found): a probe of how much of
  a process score is the width convention of the truth rather than the cells'
  extent.
"""

from __future__ import annotations

import argparse
import collections
from pathlib import Path

import numpy as np


def member_figures(folder: Path) -> dict[str, dict[str, float]]:
    """Per member: median process widths (found, true) and process pixel P / R / F1 as drawn and dilated."""
    from compare_segmentations import load_segmentation
    from scipy import ndimage

    from astro3s.metrics import cell_process_figures

    widths = collections.defaultdict(lambda: ([], []))
    counts = collections.defaultdict(lambda: np.zeros(5))  # truth, found, overlap, dilated, dilated overlap
    for path in sorted(folder.glob("*.npz")):  # a loop over movies
        seg = load_segmentation(path)
        member = seg["member"]
        widths[member][0].append(cell_process_figures(seg["soma"], seg["processes"])[:, 1])
        widths[member][1].append(cell_process_figures(seg["gt_soma"], seg["gt_processes"])[:, 1])
        truth, found = seg["gt_processes"] > 0, seg["processes"] > 0
        wider = ndimage.binary_dilation(found) & ~(seg["soma"] > 0)
        counts[member] += [truth.sum(), found.sum(), (truth & found).sum(), wider.sum(), (truth & wider).sum()]
    out = {}
    for member, (found_w, true_w) in sorted(widths.items()):
        n_true, n_found, hit, n_wider, hit_wider = counts[member]
        found_w, true_w = np.concatenate(found_w), np.concatenate(true_w)
        out[member] = {
            "width_found": float(np.median(found_w)) if found_w.size else float("nan"),
            "width_true": float(np.median(true_w)) if true_w.size else float("nan"),
            "precision": hit / max(n_found, 1), "recall": hit / max(n_true, 1),
            "f1": 2 * hit / max(n_true + n_found, 1),
            "precision_wider": hit_wider / max(n_wider, 1), "recall_wider": hit_wider / max(n_true, 1),
            "f1_wider": 2 * hit_wider / max(n_true + n_wider, 1),
        }
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("folders", nargs="+", type=Path, help="evaluate_model.py --save-segmentations folders")
    args = parser.parse_args()
    for folder in args.folders:
        print(f"\n{folder}")
        print("| member | width found / true (px) | process pixel P / R / F1 | drawn 1 px wider: P / R / F1 |")
        print("|---|---|---|---|")
        for member, f in member_figures(folder).items():
            print(f"| {member} | {f['width_found']:.1f} / {f['width_true']:.1f} "
                  f"| {f['precision']:.3f} / {f['recall']:.3f} / {f['f1']:.3f} "
                  f"| {f['precision_wider']:.3f} / {f['recall_wider']:.3f} / {f['f1_wider']:.3f} |")


if __name__ == "__main__":
    main()
