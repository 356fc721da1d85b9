"""Writing held-out movies and the whole family to disk.

One movie is a folder ``<out>/<name>/`` (``name = heldout_<member>_<k>``)::

    <name>.tif                  uint16 movie (T, H, W), frame rate in the metadata
    ground_truth/soma.tif       uint16 labels, ids 1..N
    ground_truth/processes.tif  annotator-width processes, same ids, no soma pixel
    ground_truth/processes_thin.tif  2-px main branches, same ids, no soma pixel
    meta.json                   family, member, seed, fs, shape, cells, distractors, params
    overview.png                mean image with the ground-truth outlines

The folder is written under a hidden temporary name and renamed when complete,
so a folder with ``meta.json`` is always whole.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np

__all__ = ["generate_family", "render_member_movie", "write_member_movie", "write_overview", "write_scene_folder"]

log = logging.getLogger(__name__)

FAMILY = "heldout"


def render_member_movie(member: str, index: int = 0, *, scale: float = 1.0,
                        n_frames: int | None = None):
    """Sample, lay out and render one movie of a member.

    Parameters
    ----------
    member : str
        A key of :data:`~astro3s.heldout.members.MEMBERS`.
    index : int
        Movie number within the member.
    scale : float
        Spatial scale (1 = the member as specified; smaller for tests).
    n_frames : int, optional
        Override the number of frames.

    Returns
    -------
    movie : ndarray of uint16, shape (T, H, W)
    scene : Scene
        Layout, labels and parameters of the movie.
    """
    from astro3s.heldout.members import sample_params
    from astro3s.heldout.render import render_movie
    from astro3s.heldout.scene import build_scene

    scene = build_scene(sample_params(member, index, scale=scale, n_frames=n_frames))
    return render_movie(scene), scene


def _meta(scene, movie_shape: tuple[int, int, int]) -> dict:
    """The ``meta.json`` record of a rendered scene."""
    p = scene.params
    areas = np.bincount(scene.soma.ravel(), minlength=len(scene.cells) + 1)[1:]
    params = dataclasses.asdict(p)
    for key in ("member", "seed", "fs", "shape"):
        params.pop(key)
    params["requested_soma_areas"] = params.pop("soma_areas")
    params["margin"] = scene.margin
    params["motion_sd_measured"] = [round(float(v), 3) for v in scene.shifts.std(axis=0)]
    params["cells"] = scene.cells
    params["objects"] = scene.objects
    return {"family": FAMILY, "member": p.member, "seed": p.seed, "fs": p.fs, "shape": list(movie_shape),
            "n_cells": len(scene.cells), "soma_areas": [int(a) for a in areas],
            "distractors": dict(scene.distractors), "params": params}


def write_overview(path: str | Path, movie: np.ndarray, soma: np.ndarray, processes: np.ndarray, *,
                   title: str = "", objects: Sequence[dict] = ()) -> Path:
    """Save a small picture: mean image, activity image, mean with ground-truth outlines.

    The activity image is the maximum minus the mean of a 5-frame running mean.

    Parameters
    ----------
    path : str or Path
        Destination ``.png`` (written atomically).
    movie : ndarray of uint16, shape (T, H, W)
    soma, processes : ndarray of uint16, shape (H, W)
    title : str
    objects : sequence of dict
        Unlabelled objects (``kind``, ``centre``), marked with small symbols.

    Returns
    -------
    path : Path
    """
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt
    from scipy import ndimage as ndi
    from skimage.segmentation import find_boundaries

    from astro3s.io import atomic_path

    mean = movie.mean(axis=0, dtype=np.float32)
    smooth = ndi.uniform_filter1d(movie.astype(np.float32), size=min(5, movie.shape[0]), axis=0)
    activity = smooth.max(axis=0) - smooth.mean(axis=0)

    def contrast(img: np.ndarray) -> np.ndarray:
        lo, hi = np.percentile(img, [1.0, 99.7])
        return np.clip((img - lo) / max(hi - lo, 1e-6), 0.0, 1.0)

    over = np.repeat(contrast(mean)[..., None], 3, axis=2)
    over[find_boundaries(processes, mode="inner")] = (0.2, 0.9, 1.0)
    over[find_boundaries(soma, mode="inner")] = (1.0, 0.85, 0.1)
    fig, axes = plt.subplots(1, 3, figsize=(11.0, 4.0), dpi=90)
    for ax, img, name in zip(axes, (contrast(mean), contrast(activity), over),
                             ("mean", "activity (max - mean)", "ground truth: soma / processes")):
        ax.imshow(img, cmap="gray", interpolation="nearest")
        ax.set_title(name, fontsize=9)
        ax.set_axis_off()
    marks = {"out_of_focus": ("o", "magenta"), "blob": ("s", "orange"), "neuron": ("^", "red"),
             "outside": ("x", "lime")}
    h, w = soma.shape
    for obj in objects:
        if obj.get("kind") in marks and "centre" in obj:
            marker, colour = marks[obj["kind"]]
            # cells outside the FOV are marked on its edge
            y, x = np.clip(obj["centre"][0], 1, h - 2), np.clip(obj["centre"][1], 1, w - 2)
            axes[2].plot(x, y, marker, ms=4, mfc="none", mec=colour, mew=0.8)
    axes[2].set_xlim(-0.5, w - 0.5)
    axes[2].set_ylim(h - 0.5, -0.5)
    fig.suptitle(title + "   (o out-of-focus, □ blob, △ neuron, x outside cell)" if objects else title,
                 fontsize=9)
    fig.tight_layout(rect=(0.0, 0.0, 1.0, 0.95))
    path = Path(path)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png")
    plt.close(fig)
    return path


def write_member_movie(member: str, index: int, out_dir: str | Path, *, overview: bool = True,
                       scale: float = 1.0, n_frames: int | None = None) -> Path:
    """Render movie ``index`` of ``member`` and write its folder under ``out_dir``.

    Parameters
    ----------
    member : str
    index : int
    out_dir : str or Path
    overview : bool
        Also write ``overview.png``.
    scale : float
        Spatial scale (1 = full size).
    n_frames : int, optional
        Override the number of frames.

    Returns
    -------
    folder : Path
        ``out_dir / heldout_<member>_<index>``.
    """
    from astro3s.heldout.members import movie_name

    movie, scene = render_member_movie(member, index, scale=scale, n_frames=n_frames)
    return write_scene_folder(movie, scene, out_dir, name=movie_name(member, index), overview=overview)


def write_scene_folder(movie: np.ndarray, scene, out_dir: str | Path, *, name: str, overview: bool = True,
                       extra_meta: dict | None = None) -> Path:
    """Write a rendered movie and its scene's truth as ``out_dir/name/`` (the layout of this module).

    ``extra_meta`` adds keys to ``meta.json``.

    The folder is written under a hidden temporary name and renamed when
    complete; a folder of that name is replaced.

    Returns
    -------
    folder : Path
    """
    from astro3s.io import atomic_folder, write_json, write_labels, write_movie

    final = Path(out_dir) / name
    with atomic_folder(final) as tmp:
        (tmp / "ground_truth").mkdir()
        write_movie(tmp / f"{name}.tif", movie, fs=scene.params.fs)
        write_labels(tmp / "ground_truth" / "soma.tif", scene.soma)
        write_labels(tmp / "ground_truth" / "processes.tif", scene.processes)
        write_labels(tmp / "ground_truth" / "processes_thin.tif", scene.thin)
        if overview:
            p = scene.params
            title = (f"{name}  {movie.shape[1]}x{movie.shape[2]}x{movie.shape[0]} @ {p.fs:.2f} Hz, "
                     f"{len(scene.cells)} cells")
            write_overview(tmp / "overview.png", movie, scene.soma, scene.processes, title=title,
                           objects=scene.objects)
        write_json(tmp / "meta.json", {**_meta(scene, movie.shape), **(extra_meta or {})})
    return final


def generate_family(out_dir: str | Path, *, members: Sequence[str] | None = None, per_member: int = 4,
                    overview: bool = True, scale: float = 1.0, n_frames: int | None = None,
                    progress: bool = True, first_index: int = 0) -> list[Path]:
    """Write the held-out family: ``per_member`` movies of every member.

    Folders that are already complete (``meta.json`` present) are kept as they
    are. ``out_dir/family.json`` lists members, seeds and names.

    Parameters
    ----------
    out_dir : str or Path
    members : sequence of str, optional
        Members to write (default: all, in :data:`~astro3s.heldout.members.MEMBER_ORDER`).
    per_member : int
        Movies per member (indices ``first_index..first_index+per_member-1``).
    overview : bool
        Write ``overview.png`` for each movie.
    scale : float
        Spatial scale (1 = full size).
    n_frames : int, optional
        Override every member's number of frames.
    progress : bool
        Show a tqdm progress bar.
    first_index : int
        Index of each member's first movie: a set of fresh seeds, none of
        which an earlier set used, starts above the earlier sets' indices
        (the reported family is indices 0-3; 4-7 are the fresh-seed check).

    Returns
    -------
    folders : list of Path
        One per movie, in member order.
    """
    from tqdm import tqdm

    from astro3s.heldout.members import MEMBER_ORDER, MEMBERS, SEED_BASE, member_seed, movie_name
    from astro3s.io import write_json

    members = list(MEMBER_ORDER if members is None else members)
    unknown = [m for m in members if m not in MEMBERS]
    if unknown:
        raise KeyError(f"unknown held-out member(s) {unknown}; choose from {', '.join(MEMBER_ORDER)}")
    if per_member < 1:
        raise ValueError(f"per_member must be >= 1, got {per_member}")
    if first_index < 0:
        raise ValueError(f"first_index must be >= 0, got {first_index}")
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    jobs = [(m, k) for m in members for k in range(first_index, first_index + per_member)]
    folders, entries = [], []
    for member, k in tqdm(jobs, desc="held-out family", unit="movie", disable=not progress):
        folder = out_dir / movie_name(member, k)
        if (folder / "meta.json").is_file():
            log.info("%s: complete, kept", folder.name)
        else:
            start = time.perf_counter()
            write_member_movie(member, k, out_dir, overview=overview, scale=scale, n_frames=n_frames)
            log.info("%s: written in %.1f s", folder.name, time.perf_counter() - start)
        meta = json.loads((folder / "meta.json").read_text())
        entries.append({"name": folder.name, "member": member, "index": k, "seed": member_seed(member, k),
                        "shape": meta["shape"], "fs": meta["fs"], "n_cells": meta["n_cells"]})
        folders.append(folder)
    write_json(out_dir / "family.json", {
        "family": FAMILY, "seed_base": SEED_BASE, "per_member": per_member, "first_index": first_index,
        "scale": scale,
        "members": {m: MEMBERS[m].description for m in members}, "movies": entries})
    return folders
