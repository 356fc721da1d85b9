"""How bright a membrane soma's rim must be for the ring-core fill: the cores each floor keeps, in and out of somata.

The measurement behind ``PreprocessParams.ring_core_rim`` (the ``min_rim`` of
:func:`astro3s.preprocess.ring_cores.fill_ring_cores`, 2026-12-07, eighteenth session). Every movie folder under
the given roots is pre-processed as ``astro3s-infer`` does but with the fill off; the fill is then run on the
median image with each rim floor of ``FLOORS`` (the other tests at the model's settings) and the script records,
per floor, the cores it keeps (a core is "in a soma" when at least half its pixels lie in a true soma), and the
true somata it fills (at least a quarter of a soma's pixels raised)::

    python experiments/probe_ring_rim.py --out ring_rim.json data/crosscheck_membrane_dev data/heldout_family

Nothing is segmented: each movie costs its pre-processing.
"""

from __future__ import annotations

import logging
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _probes import probe_main  # noqa: E402  (the experiments folder on the path first)

log = logging.getLogger("probe_ring_rim")

#: rim floors probed (fractions of the image's brightest structure); 0.3 was the only one before
FLOORS = (0.3, 0.2, 0.15, 0.1)
#: a true soma counts as filled when at least this fraction of its pixels is raised
FILLED_FRACTION = 0.25


def probe(folders: list[Path], floors: tuple[float, ...] = FLOORS) -> list[dict]:
    """One record per movie: ``movie``, ``member`` (its name without the index), ``true_somata`` (count), and
    per floor ``f"{floor:g}"``: ``{"cores_in_soma", "cores_elsewhere", "somata_filled"}``."""
    import dataclasses

    import evaluate_model as em

    from astro3s.inference import load_inference_model
    from astro3s.io import read_movie
    from astro3s.preprocess import preprocess

    _, options = load_inference_model("default", figures=False)
    params = dataclasses.replace(options.preprocess, fill_ring_cores=False)
    rows: list[dict] = []
    for folder in folders:  # a loop over movies
        movie = read_movie(folder / f"{folder.name}.tif")
        try:
            median = preprocess(movie, params, progress=False).median_image
        finally:
            movie.close()
        soma, _, _ = em._read_truth(folder)
        row: dict = {"movie": folder.name, "member": folder.name.rstrip("0123456789").rstrip("_"),
                     "true_somata": int(np.count_nonzero(np.unique(soma)))}
        row.update(floor_counts(median, soma, floors, depth=params.ring_core_depth, fill=params.ring_core_fill,
                                contrast=params.ring_core_contrast))
        rows.append(row)
        log.info("%s: %s", folder.name, {k: v for k, v in row.items() if k != "movie"})
    return rows


def floor_counts(median: np.ndarray, soma: np.ndarray, floors: tuple[float, ...], *, depth: float, fill: str,
                 contrast: float) -> dict[str, dict[str, int]]:
    """Per rim floor ``f"{floor:g}"``: the cores the fill keeps in a true soma (half their pixels or more) and
    elsewhere, and the true somata it fills (``FILLED_FRACTION`` of their pixels raised).

    Parameters
    ----------
    median : ndarray of float32, shape (H, W)
        The median image, unfilled.
    soma : ndarray of int, shape (H, W)
        True soma labels (0: none).
    """
    from scipy import ndimage as ndi

    from astro3s.preprocess.ring_cores import fill_ring_cores

    in_soma = soma > 0
    soma_ids = np.unique(soma)[1:]
    soma_area = ndi.sum(in_soma, soma, soma_ids)
    counts = {}
    for floor in floors:
        _, cores = fill_ring_cores(median, min_rim=floor, min_depth=depth, fill=fill, min_rim_contrast=contrast)
        regions, count = ndi.label(cores)
        inside = ndi.mean(in_soma, regions, np.arange(1, count + 1)) if count else np.zeros(0)
        raised = ndi.sum(cores, soma, soma_ids) / np.maximum(soma_area, 1) if soma_ids.size else np.zeros(0)
        counts[f"{floor:g}"] = {"cores_in_soma": int((np.asarray(inside) >= 0.5).sum()),
                                "cores_elsewhere": int((np.asarray(inside) < 0.5).sum()),
                                "somata_filled": int((np.asarray(raised) >= FILLED_FRACTION).sum())}
    return counts


def summary(rows: list[dict]) -> str:
    """Markdown: per member and floor, true somata filled and cores kept in and out of somata."""
    floors = [key for key in rows[0] if key not in ("movie", "member", "true_somata")] if rows else []
    members = sorted({row["member"] for row in rows})
    head = " | ".join(f"rim >= {floor}: filled / cores in / elsewhere" for floor in floors)
    lines = [f"{len(rows)} movies", "", f"| member | movies | true somata | {head} |",
             "|---|---|---|" + "---|" * len(floors)]
    for member in members:
        own = [row for row in rows if row["member"] == member]
        cells = []
        for floor in floors:
            filled, inside, elsewhere = (sum(row[floor][key] for row in own)
                                         for key in ("somata_filled", "cores_in_soma", "cores_elsewhere"))
            cells.append(f"{filled} / {inside} / {elsewhere}")
        lines.append(f"| {member} | {len(own)} | {sum(row['true_somata'] for row in own)} | {' | '.join(cells)} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    return probe_main(__doc__.split("\n\n")[0], probe, summary, argv)


if __name__ == "__main__":
    raise SystemExit(main())
