"""Held-out movies on the cell layouts that ASTRA's experts annotated (real shapes, this renderer).

Every other member of the held-out family draws its cells from a procedural
morphology generator. This one takes them from the consensus annotations of
ASTRA's datasets D1-D4 (``RoiSet`` zips, Bonato et al. 2023; see
``../shared/data/astra_annotations``): each annotated soma and its annotated
processes become one cell, at the annotated position, size and shape. What is
simulated is everything else, by this package's code path (never
:mod:`astro3s.simulate`): the fluorescence between the annotated processes
(spongy territory that annotators leave out), soma events propagating
outward along the processes, microdomains, the PSF, photomultiplier noise,
neuropil, motion, bleaching and distractors. The ground truth is the
annotation itself, so real cell sizes, densities, process shapes and the
annotators' conventions are what the model is scored against:

- ``layout_d1``: D1, 256 x 256, ~5 cells of ~220 px, 550 frames;
- ``layout_d2``: D2, 512 x 512, high zoom, ~1 cell of ~3000 px;
- ``layout_d3``: D3, 430 x 430, ~105 small somata (soma-only annotation: no
  process truth, so no process score);
- ``layout_d4``: D4, 512 x 512, ~80 cells of ~120 px.

The layouts that train the bundled model (``conf/data/default_mix.yaml``:
stand-ins on the first 6 D1 and the first 2 D4 consensus files, rendered by
the training simulator) are left out unless asked for
(:data:`TRAINING_LAYOUTS`). Seeds: ``LAYOUT_SEED_BASE + 1000 * dataset + 100 *
repeat + file position`` (no member of the family and no training seed is that
high; ``repeat`` draws the same layouts' movies again).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from astro3s.heldout.members import MemberRecipe, MovieParams, draw_params
from astro3s.heldout.morphology import AstrocyteShape, _sponge_field, _thin_lines
from astro3s.heldout.scene import (
    MARGIN,
    N_BANDS,
    Scene,
    _add_astrocyte,
    _blobs,
    _finish_scene,
    _neurons,
    _out_of_focus,
    _scene_start,
)

__all__ = ["LAYOUT_RECIPES", "LAYOUT_SEED_BASE", "TRAINING_LAYOUTS", "build_layout_scene", "layout_astrocyte",
           "layout_files", "layout_params", "write_layout_family"]

LAYOUT_SEED_BASE = 950_000

#: Dataset -> (FOV shape of its annotations, recipe of everything but the cells). The recipes' cell
#: counts and soma areas are unused (the annotation gives them); frame counts and zooms follow the
#: datasets' descriptions (README of the annotations; ASTRA's paper: D1 550 frames of 256 x 256).
LAYOUT_RECIPES: dict[str, tuple[tuple[int, int], MemberRecipe]] = {
    "D1": ((256, 256), MemberRecipe("layout_d1", "D1's annotated layouts: ~5 cells of ~220 px", n_frames=550,
                                    fs=(1.0, 5.0), psf_fwhm=(1.2, 2.4), n_out_of_focus=(0, 2), n_blobs=(0, 2),
                                    n_neurons=(0, 6))),
    "D2": ((512, 512), MemberRecipe("layout_d2", "D2's annotated layouts: high zoom, ~1 cell of ~3000 px",
                                    n_frames=300, fs=(1.0, 3.0), psf_fwhm=(2.5, 5.0), n_out_of_focus=(0, 1),
                                    n_blobs=(0, 1))),
    "D3": ((430, 430), MemberRecipe("layout_d3", "D3's annotated layouts: ~105 small somata (soma-only truth)",
                                    n_frames=300, fs=(2.0, 10.0), psf_fwhm=(1.0, 1.6), n_out_of_focus=(0, 3),
                                    n_blobs=(0, 2), n_neurons=(0, 10))),
    "D4": ((512, 512), MemberRecipe("layout_d4", "D4's annotated layouts: ~80 cells of ~120 px", n_frames=300,
                                    fs=(1.0, 4.0), psf_fwhm=(1.0, 2.0), n_out_of_focus=(0, 3), n_blobs=(0, 2),
                                    n_neurons=(0, 8))),
}
DATASET_ORDER = tuple(LAYOUT_RECIPES)

#: Dataset -> how many of its first consensus files (name order) train the bundled model
#: (``conf/data/default_mix.yaml``'s stand-in sources; a test keeps the two in step).
TRAINING_LAYOUTS = {"D1": 6, "D4": 2}


def layout_files(annotations: str | Path, dataset: str, *, include_training: bool = False) -> list[Path]:
    """The consensus RoiSet zips of ``dataset`` in name order, without the training layouts.

    Parameters
    ----------
    annotations : str or Path
        The consensus folder (holding ``D1`` ... ``D4``).
    dataset : {"D1", "D2", "D3", "D4"}
    include_training : bool
        Keep the files that train the bundled model (:data:`TRAINING_LAYOUTS`).

    Returns
    -------
    files : list of Path
    """
    if dataset not in LAYOUT_RECIPES:
        raise KeyError(f"unknown dataset {dataset!r}; choose from {', '.join(DATASET_ORDER)}")
    files = sorted((Path(annotations) / dataset).glob("*.zip"))
    if not files:
        raise FileNotFoundError(f"{Path(annotations) / dataset} holds no RoiSet .zip: point --layouts at the "
                                "consensus folder of ASTRA's annotations (holding D1 ... D4), or give --layouts "
                                "without a folder for the copy shipped with astro3s")
    return files if include_training else files[TRAINING_LAYOUTS.get(dataset, 0):]


def layout_params(dataset: str, position: int, name: str, soma_areas: Sequence[float], *,
                  repeat: int = 0) -> MovieParams:
    """Parameters of the movie on the ``position``-th consensus file of ``dataset``.

    Everything is drawn from the dataset's recipe (:data:`LAYOUT_RECIPES`) with
    the seed ``LAYOUT_SEED_BASE + 1000 * dataset + 100 * repeat + position``
    (``repeat``: another draw of the same layouts, 0-9), but the cells
    (``soma_areas``: the annotated ones) and the FOV shape; no cut, outside
    or vessel objects (the annotation decides what is a cell at the border,
    and a drawn vessel could cross an annotated cell).
    """
    import dataclasses

    shape, recipe = LAYOUT_RECIPES[dataset]
    if not (0 <= int(repeat) < 10 and 0 <= int(position) < 100):
        raise ValueError(f"repeat must be in 0..9 and position in 0..99, got {repeat} and {position}")
    seed = LAYOUT_SEED_BASE + 1000 * DATASET_ORDER.index(dataset) + 100 * int(repeat) + int(position)
    params = draw_params(recipe, seed=seed, name=name, index=position)
    return dataclasses.replace(params, shape=(recipe.n_frames, *shape),
                               soma_areas=tuple(round(float(a), 1) for a in soma_areas),
                               n_cut=0, n_outside=0, n_vessels=0)


def layout_astrocyte(rng: np.random.Generator, soma: np.ndarray, processes: np.ndarray, *,
                     n_bands: int = N_BANDS) -> AstrocyteShape:
    """One annotated cell as a drawn astrocyte of this package.

    Parameters
    ----------
    rng : numpy.random.Generator
    soma, processes : ndarray of bool, shape (h, w)
        The cell's annotated soma and processes in a square patch whose centre
        pixel is the soma's centroid (rounded), with room around them for the
        territory and the PSF.
    n_bands : int
        Distance bands of the processes (for the events' propagation delays).

    Returns
    -------
    cell : AstrocyteShape
        ``annotated`` is ``processes``; ``processes`` (the fluorescence) adds
        spongy territory around the cell that the annotation leaves out, the
        annotated processes dimming with distance from the soma.
    """
    from scipy import ndimage as ndi
    from skimage.morphology import skeletonize

    shape = soma.shape
    area = float(soma.sum())
    r0 = float(np.sqrt(max(area, 1.0) / np.pi))
    ys, xs = np.nonzero(soma)
    centre = (float(ys.mean()), float(xs.mean())) if ys.size else ((shape[0] - 1) / 2, (shape[1] - 1) / 2)
    soma_dist = ndi.distance_transform_edt(~soma) if soma.any() else np.full(shape, np.inf)
    has_processes = bool(processes.any())
    reach = float(np.percentile(soma_dist[processes], 95)) if has_processes else 0.0
    # spongy fine processes out to about where the annotated ones end (soma-only truth: 1-2 radii beyond)
    territory = (r0 + reach) * rng.uniform(0.95, 1.15) if has_processes else r0 * rng.uniform(2.0, 3.0)
    sponge = _sponge_field(rng, centre, shape, territory=territory, fraction=rng.uniform(0.3, 0.45))
    soma_soft = np.clip(ndi.gaussian_filter(soma.astype(np.float32), 0.7) * 1.25, 0.0, 1.0)
    yy, xx = np.mgrid[: shape[0], : shape[1]]
    nuc = rng.uniform(0.0, 0.3)
    nuc_c = np.asarray(centre) + rng.uniform(-0.2, 0.2, 2) * r0
    soma_soft = (soma_soft * (1.0 - nuc * np.exp(-0.5 * ((yy - nuc_c[0]) ** 2 + (xx - nuc_c[1]) ** 2)
                                                / (0.45 * r0) ** 2))).astype(np.float32)
    far = max(reach, 1.0)
    tube_level = rng.uniform(0.45, 0.8) * (1.0 - 0.4 * np.clip(soma_dist / far, 0.0, 1.0))
    tubes = ndi.gaussian_filter(processes.astype(np.float32), 0.6) * tube_level
    fluorescence = np.maximum(tubes, rng.uniform(0.15, 0.3) * sponge) * (1.0 - soma_soft)

    # distance bands: along the annotated processes (soma-only truth: the territory) by distance to the soma
    carrier = ndi.binary_dilation(processes, iterations=2) if has_processes else (sponge > 0.05)
    carrier &= ~soma
    edges = np.linspace(0.0, float(soma_dist[carrier].max()) + 1e-6 if carrier.any() else 1.0, n_bands + 1)
    band = np.where(carrier, np.clip(np.searchsorted(edges, soma_dist, side="right") - 1, 0, n_bands - 1), -1)
    band_dist = 0.5 * (edges[:-1] + edges[1:])
    distal = np.flatnonzero((carrier & (soma_dist > 0.3 * edges[-1])).ravel())
    n_micro = min(int(rng.integers(2, 7)), distal.size)
    picked = rng.choice(distal, size=n_micro, replace=False) if n_micro else np.zeros(0, np.int64)
    micro = np.stack(np.unravel_index(picked, shape), axis=1).astype(np.float64)
    thin = _thin_lines(skeletonize(processes)) & ~soma if has_processes else np.zeros(shape, bool)
    info = {"annotated_ratio": round(float(processes.sum()) / max(area, 1.0), 3),
            "reach_over_radius": round(reach / r0, 2)}
    return AstrocyteShape(centre=centre, soma_area=area, soma=soma, soma_soft=soma_soft,
                          processes=fluorescence.astype(np.float32), band=band, band_dist=band_dist,
                          micro_centres=micro, annotated=processes.copy(), thin=thin, info=info)


def _cell_patch(labels_soma: np.ndarray, labels_proc: np.ndarray, cell_id: int, *,
                pad: int) -> tuple[np.ndarray, np.ndarray, tuple[int, int]]:
    """Square patch around cell ``cell_id`` (soma centroid at its centre): soma, processes, top-left."""
    soma = labels_soma == cell_id
    ys, xs = np.nonzero(soma | (labels_proc == cell_id))
    cy, cx = np.nonzero(soma) if soma.any() else (ys, xs)
    iy, ix = int(round(float(cy.mean()))), int(round(float(cx.mean())))
    r0 = np.sqrt(max(float(soma.sum()), 1.0) / np.pi)
    extent = max(np.abs(ys - iy).max(), np.abs(xs - ix).max())
    # room for the territory (1.35x its radius, as the family's cells) and the PSF's tails
    half = int(np.ceil(max(extent * 1.5, 4.0 * r0))) + 3 + pad
    top = (iy - half, ix - half)
    size = 2 * half + 1
    patch_soma = np.zeros((size, size), bool)
    patch_proc = np.zeros((size, size), bool)
    y0, x0 = max(top[0], 0), max(top[1], 0)
    y1, x1 = min(top[0] + size, soma.shape[0]), min(top[1] + size, soma.shape[1])
    patch_soma[y0 - top[0]:y1 - top[0], x0 - top[1]:x1 - top[1]] = soma[y0:y1, x0:x1]
    patch_proc[y0 - top[0]:y1 - top[0], x0 - top[1]:x1 - top[1]] = labels_proc[y0:y1, x0:x1] == cell_id
    return patch_soma, patch_proc, top


def build_layout_scene(params: MovieParams, soma: np.ndarray, processes: np.ndarray) -> Scene:
    """A held-out scene whose true astrocytes are the annotated cells.

    Parameters
    ----------
    params : MovieParams
        From :func:`layout_params`.
    soma, processes : ndarray of uint16, shape (H, W)
        Annotated label images (:func:`astro3s.io.read_roiset`), ids shared.

    Returns
    -------
    scene : Scene
        Its labels are the annotation's (thin processes: their skeletons, 2 px).
    """
    T, H, W = params.shape
    if soma.shape != (H, W) or processes.shape != (H, W):
        raise ValueError(f"labels of shape {soma.shape} / {processes.shape} do not fit the movie's {(H, W)}")
    canvas, t, (rng_m, rng_a, rng_p, rng_b), kernel = _scene_start(params)
    pad = kernel.shape[0] // 2 + 1

    thin = np.zeros((H, W), np.uint16)
    cells, taken = [], []
    for cell_id in np.unique(soma[soma > 0]):  # loop over annotated cells
        patch_soma, patch_proc, top = _cell_patch(soma, processes, int(cell_id), pad=pad)
        cell = layout_astrocyte(rng_m, patch_soma, patch_proc)
        active = bool(rng_a.uniform() >= params.silent_fraction)
        _add_astrocyte(canvas, rng_m, rng_a, cell, top, kernel=kernel, brightness=rng_m.uniform(0.7, 1.3),
                       active=active, t=t, margin=MARGIN)
        ys, xs = np.nonzero(cell.thin)
        ys, xs = ys + top[0], xs + top[1]
        inside = (ys >= 0) & (ys < H) & (xs >= 0) & (xs < W)
        ys, xs = ys[inside], xs[inside]
        free = (soma[ys, xs] == 0) & (thin[ys, xs] == 0)
        thin[ys[free], xs[free]] = cell_id
        centre = (cell.centre[0] + top[0], cell.centre[1] + top[1])
        taken.append((centre[0], centre[1], np.sqrt(cell.soma_area / np.pi)))
        cells.append({"id": int(cell_id), "centre": [round(float(v), 2) for v in centre],
                      "soma_area": int(cell.soma.sum()), "active": active,
                      "process_area": int(np.count_nonzero(processes == cell_id)), **cell.info})
    taken_array = np.asarray(taken, np.float64).reshape(-1, 3)
    areas = taken_array[:, 2] ** 2 * np.pi if len(taken) else np.array([200.0])
    objects: list[dict] = []
    n_oof = _out_of_focus(canvas, rng_p, rng_m, rng_a, params, t, kernel=kernel, margin=MARGIN, objects=objects,
                          area_range=(float(np.percentile(areas, 10)), 1.5 * float(np.percentile(areas, 90))))
    n_neurons = _neurons(canvas, rng_p, rng_m, rng_a, params, t, taken=taken_array, kernel=kernel,
                         clearance=None, margin=MARGIN, objects=objects)
    n_blobs = _blobs(canvas, rng_p, rng_m, rng_a, params, t, kernel=kernel, margin=MARGIN, objects=objects)
    return _finish_scene(params, canvas, rng_b, t, transmission=np.ones(canvas.shape, np.float32),
                         soma=soma.astype(np.uint16), processes=processes.astype(np.uint16), thin=thin,
                         cells=cells, objects=objects,
                         distractors={"out_of_focus": n_oof, "blobs": n_blobs, "neurons": n_neurons, "vessels": 0})


def write_layout_family(annotations: str | Path, out_dir: str | Path, *, datasets: Sequence[str] | None = None,
                        include_training: bool = False, overview: bool = True, n_frames: int | None = None,
                        progress: bool = True, repeat: int = 0) -> list[Path]:
    """Render a movie on every (held-out) consensus layout and write ``out_dir/heldout_layout_<d>_<file>/``.

    ``repeat > 0`` draws everything but the cells again (:func:`layout_params`)
    and appends ``_r<repeat>`` to the names.

    Folders already complete (``meta.json`` present) are kept. The folders
    follow :mod:`astro3s.heldout.write`'s layout; ``meta.json``'s member is
    ``layout_d1`` ... ``layout_d4`` and ``layout`` names the RoiSet.

    Parameters
    ----------
    annotations : str or Path
        Consensus folder of ASTRA's annotations (holding ``D1`` ... ``D4``).
    out_dir : str or Path
    datasets : sequence of str, optional
        Default: all four.
    include_training : bool
        Also the layouts that train the bundled model (:data:`TRAINING_LAYOUTS`).
    overview : bool
        Write ``overview.png`` for each movie.
    n_frames : int, optional
        Override the datasets' frame counts (tests).
    progress : bool
        Show a progress bar.

    Returns
    -------
    folders : list of Path
    """
    import dataclasses
    import logging

    from tqdm import tqdm

    from astro3s.heldout.render import render_movie
    from astro3s.heldout.write import write_scene_folder
    from astro3s.io import read_roiset

    log = logging.getLogger(__name__)
    if not 0 <= int(repeat) < 10:
        raise ValueError(f"repeat must be in 0..9, got {repeat}")
    datasets = list(DATASET_ORDER if datasets is None else datasets)
    jobs = []
    for dataset in datasets:  # the four datasets
        every = layout_files(annotations, dataset, include_training=True)
        kept = set(layout_files(annotations, dataset, include_training=include_training))
        jobs += [(dataset, position, path) for position, path in enumerate(every) if path in kept]
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    folders = []
    for dataset, position, path in tqdm(jobs, desc="annotated layouts", unit="movie", disable=not progress):
        name = f"heldout_layout_{dataset.lower()}_{path.stem}" + (f"_r{repeat}" if repeat else "")
        folder = out_dir / name
        if not (folder / "meta.json").is_file():
            shape = LAYOUT_RECIPES[dataset][0]
            soma, processes = read_roiset(path, shape)
            areas = np.bincount(soma.ravel())[1:]
            params = layout_params(dataset, position, name, areas[areas > 0], repeat=repeat)
            if n_frames is not None:
                params = dataclasses.replace(params, shape=(int(n_frames), *params.shape[1:]))
            scene = build_layout_scene(params, soma, processes)
            write_scene_folder(render_movie(scene), scene, out_dir, name=name, overview=overview,
                               extra_meta={"layout": f"{dataset}/{path.name}"})
            log.info("%s: %d annotated cells on %s", name, len(scene.cells), path.name)
        folders.append(folder)
    return folders
