"""Write cross-check movies, their truth, metadata and overview pictures.

Layout of ``DIR/crosscheck_<member>_<index>/``: ``<name>.tif`` (uint16 movie),
``ground_truth/soma.tif``, ``processes.tif``, ``processes_thin.tif`` (uint16
labels), ``meta.json`` and ``overview.png``. A folder is written under the
hidden name ``DIR/.<name>.part`` and renamed when complete; a complete folder
(``meta.json`` present) is kept as it is.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np

log = logging.getLogger("astro3s.crosscheck")

FAMILY = "crosscheck"


def render_member_movie(member: str, index: int, *, scale: float = 1.0, n_frames: int | None = None):
    """Draw and render movie ``index`` of ``member``.

    Returns
    -------
    movie : ndarray of uint16, shape (T, H, W)
    scene : Scene
    """
    from astro3s.crosscheck.members import draw_params
    from astro3s.crosscheck.render import render_movie
    from astro3s.crosscheck.scene import build_scene

    scene = build_scene(draw_params(member, index, scale=scale, n_frames=n_frames))
    return render_movie(scene), scene


def _outline(labels: np.ndarray) -> np.ndarray:
    """Boundary pixels of a label image (a pixel whose 4-neighbour has another label) -> bool."""
    edge = np.zeros(labels.shape, bool)
    edge[:-1] |= labels[:-1] != labels[1:]
    edge[1:] |= labels[1:] != labels[:-1]
    edge[:, :-1] |= labels[:, :-1] != labels[:, 1:]
    edge[:, 1:] |= labels[:, 1:] != labels[:, :-1]
    return edge & (labels > 0)


def _stretch(image: np.ndarray, lo: float = 1.0, hi: float = 99.5) -> np.ndarray:
    a, b = np.percentile(image, [lo, hi])
    return np.clip((image - a) / max(b - a, 1e-9), 0, 1)


def write_overview(path: str | Path, movie: np.ndarray, soma: np.ndarray, processes: np.ndarray, *,
                   title: str) -> Path:
    """Mean image, max-minus-median activity image and the truth outlines over the mean image.

    Parameters
    ----------
    path : str or Path
        Destination PNG, written atomically.
    movie : ndarray, shape (T, H, W)
    soma, processes : ndarray of int, shape (H, W)
    title : str

    Returns
    -------
    path : Path
    """
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    from astro3s.io import atomic_path

    frames = movie[:: max(1, movie.shape[0] // 400)].astype(np.float32)
    mean = _stretch(movie.mean(0, dtype=np.float64))
    active = _stretch(frames.max(0) - np.median(frames, axis=0))
    rgb = np.repeat(mean[..., None], 3, axis=2)
    rgb[_outline(processes)] = (0.1, 0.9, 1.0)
    rgb[_outline(soma)] = (1.0, 0.8, 0.0)
    fig, axes = plt.subplots(1, 3, figsize=(15, 5.4))
    for ax, img, name in zip(axes, (mean, active, rgb), ("mean", "max - median", "truth: soma / processes")):
        ax.imshow(img, cmap="gray", interpolation="nearest")
        ax.set_title(name)
        ax.set_axis_off()
    fig.suptitle(title)
    fig.tight_layout()
    path = Path(path)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=100)
    plt.close(fig)
    return path


def _meta(scene, movie_shape: tuple[int, ...]) -> dict:
    p = scene.params
    areas = np.bincount(scene.soma.ravel(), minlength=scene.n_cells + 1)[1:]
    return {"family": FAMILY, "member": p.member, "index": p.index, "seed": p.seed, "fs": p.fs,
            "shape": [int(s) for s in movie_shape], "n_cells": int(scene.n_cells),
            "soma_areas": [int(a) for a in areas], "distractors": dict(scene.distractors),
            "objects": scene.objects, "params": dataclasses.asdict(p)}


def _write_folder(tmp: Path, name: str, movie: np.ndarray, scene, overview: bool) -> None:
    from astro3s.io import write_json, write_labels, write_movie

    (tmp / "ground_truth").mkdir(parents=True)
    write_movie(tmp / f"{name}.tif", movie, fs=scene.params.fs)
    write_labels(tmp / "ground_truth" / "soma.tif", scene.soma)
    write_labels(tmp / "ground_truth" / "processes.tif", scene.processes)
    write_labels(tmp / "ground_truth" / "processes_thin.tif", scene.processes_thin)
    if overview:
        T, H, W = movie.shape
        title = f"{name}  {H}x{W}x{T} @ {scene.params.fs:.2f} Hz, {scene.n_cells} cells"
        write_overview(tmp / "overview.png", movie, scene.soma, scene.processes, title=title)
    write_json(tmp / "meta.json", _meta(scene, movie.shape))


def write_member_movie(out_dir: str | Path, member: str, index: int, *, scale: float = 1.0,
                       n_frames: int | None = None, overview: bool = True) -> Path:
    """Render movie ``index`` of ``member`` and write its folder (kept when already complete).

    Returns
    -------
    folder : Path
        ``out_dir / crosscheck_<member>_<index>``.
    """
    from astro3s.crosscheck.members import movie_name
    from astro3s.io import atomic_folder

    out_dir = Path(out_dir)
    name = movie_name(member, index)
    final = out_dir / name
    if (final / "meta.json").exists():
        log.info("%s: complete, kept", name)
        return final
    start = time.perf_counter()
    movie, scene = render_member_movie(member, index, scale=scale, n_frames=n_frames)
    seconds = time.perf_counter() - start
    with atomic_folder(final) as tmp:  # a crash leaves no half folder under the final name
        _write_folder(tmp, name, movie, scene, overview)
    T, H, W = movie.shape
    log.info("%s: %dx%dx%d @ %.2f Hz, %d cells, rendered in %.1f s", name, H, W, T, scene.params.fs,
             scene.n_cells, seconds)
    return final


def generate_family(out_dir: str | Path, *, members: Sequence[str] | None = None, per_member: int = 4,
                    first_index: int = 0, overview: bool = True, scale: float = 1.0,
                    n_frames: int | None = None, progress: bool = True) -> list[Path]:
    """Write ``per_member`` movies of each member and ``out_dir/family.json``.

    Parameters
    ----------
    out_dir : str or Path
    members : sequence of str, optional
        Default: all of :data:`~astro3s.crosscheck.members.MEMBER_ORDER`.
    per_member : int
        Movies per member, indices ``first_index .. first_index + per_member - 1``.
    first_index : int
    overview : bool
        Write ``overview.png`` in each folder.
    scale : float
        FOV side x ``scale``, object counts x ``scale**2``.
    n_frames : int, optional
        Override every movie's number of frames.
    progress : bool
        Show a tqdm progress bar.

    Returns
    -------
    folders : list of Path
    """
    import json

    from tqdm import tqdm

    from astro3s.crosscheck.members import MEMBER_ORDER, MEMBERS, SEED_BASE, member_seed, movie_name
    from astro3s.io import write_json

    members = list(MEMBER_ORDER if members is None else members)
    for m in members:
        if m not in MEMBERS:
            raise KeyError(f"unknown cross-check member {m!r}; choose from {', '.join(MEMBER_ORDER)}")
    jobs = [(m, i) for m in members for i in range(first_index, first_index + per_member)]
    out_dir = Path(out_dir)
    folders, entries = [], []
    for member, index in tqdm(jobs, desc="cross-check movies", unit="movie", disable=not progress):
        folder = write_member_movie(out_dir, member, index, scale=scale, n_frames=n_frames, overview=overview)
        meta = json.loads((folder / "meta.json").read_text())
        folders.append(folder)
        entries.append({"name": movie_name(member, index), "member": member, "index": index,
                        "seed": member_seed(member, index), "shape": meta["shape"], "fs": meta["fs"],
                        "n_cells": meta["n_cells"]})
    write_json(out_dir / "family.json", {
        "family": FAMILY, "seed_base": SEED_BASE, "per_member": per_member, "first_index": first_index,
        "scale": scale, "n_frames": n_frames,
        "members": {m: MEMBERS[m].description for m in members}, "movies": entries})
    return folders
