"""Files of one inference run, written into a folder that appears complete or not at all.

Layout of ``DIR/<movie stem>/``::

    soma.tif, processes.tif, domains.tif   uint16 label images, shared cell ids
    RoiSet.zip                             Fiji ROIs, Soma_### and Proc_###_##
    traces.csv                             a row per frame, a column per ROI (dF/F)
    cc_maps.npz                            per-cell CC maps (float16 boxes + origins) + ids, threshold
    summary.json                           per-cell table, parameters, versions, timings
    overlay.png, traces.png                figures

The files go to a hidden staging folder beside the final one, which is
renamed into place at the end (:func:`commit_folder`): a crash, Ctrl-C or a
full disk leaves either the previous complete folder or nothing, never half
an output. ``summary.json`` is written last inside the staging folder, so a
folder with it is complete (:func:`is_complete`).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from astro3s.errors import InputError

__all__ = ["OUTPUT_FILES", "SUMMARY_NAME", "commit_folder", "event_rates", "is_complete", "staging_folder",
           "write_cc_maps", "write_traces_csv"]

SUMMARY_NAME = "summary.json"
#: Files every complete output folder holds.
OUTPUT_FILES = ("soma.tif", "processes.tif", "domains.tif", "RoiSet.zip", "traces.csv", "cc_maps.npz",
                SUMMARY_NAME, "overlay.png", "traces.png")
_STAGING_PREFIX = ".partial-"


def is_complete(folder: str | Path, *, figures: bool = True) -> bool:
    """Whether ``folder`` holds a complete output set (written by a finished run)."""
    folder = Path(folder)
    names = OUTPUT_FILES if figures else tuple(n for n in OUTPUT_FILES if not n.endswith(".png"))
    return all((folder / name).is_file() for name in names)


@contextlib.contextmanager
def staging_folder(final: str | Path) -> Iterator[Path]:
    """A fresh hidden folder beside ``final``, removed if the block fails.

    Raises
    ------
    InputError
        The parent folder cannot be created or written (read-only, full disk).
    """
    final = Path(final)
    try:
        final.parent.mkdir(parents=True, exist_ok=True)
        for stale in stale_staging_folders(final.parent, name=final.name):  # left by a killed run
            shutil.rmtree(stale, ignore_errors=True)
        stage = final.parent / f"{_STAGING_PREFIX}{final.name}-{uuid.uuid4().hex[:8]}"
        stage.mkdir()
    except OSError as err:
        raise InputError(final.parent, f"cannot write the outputs here ({err.strerror or err}).",
                         "choose a writable out= folder with free space.") from None
    try:
        yield stage
    except BaseException:
        shutil.rmtree(stage, ignore_errors=True)
        raise


def commit_folder(stage: Path, final: str | Path) -> Path:
    """Move a finished staging folder to ``final``, replacing an older output folder.

    Raises
    ------
    InputError
        The rename failed (read-only or full file system); an older output
        folder is put back.
    """
    final = Path(final)
    old = None
    try:
        if final.exists():
            old = final.parent / f"{_STAGING_PREFIX}old-{final.name}-{uuid.uuid4().hex[:8]}"
            os.replace(final, old)
        os.replace(stage, final)
    except OSError as err:
        if old is not None and old.exists() and not final.exists():
            with contextlib.suppress(OSError):
                os.replace(old, final)
        raise InputError(final, f"the outputs could not be moved into place ({err.strerror or err}).",
                         "choose a writable out= folder with free space.") from None
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)
    return final


def stale_staging_folders(parent: str | Path, *, name: str | None = None) -> list[Path]:
    """Staging folders left by killed runs in ``parent`` (safe to delete when no run is active).

    Parameters
    ----------
    parent : str or Path
    name : str, optional
        Only those of the output folder ``name`` (safe to delete before that
        movie is redone, even while other movies run in parallel).
    """
    import re

    parent = Path(parent)
    if not parent.is_dir():
        return []
    if name is None:
        return sorted(p for p in parent.iterdir() if p.is_dir() and p.name.startswith(_STAGING_PREFIX))
    pattern = re.compile(rf"{re.escape(_STAGING_PREFIX)}(old-)?{re.escape(name)}-[0-9a-f]{{8}}")
    return sorted(p for p in parent.iterdir() if p.is_dir() and pattern.fullmatch(p.name))


def write_traces_csv(path: str | Path, traces: Any) -> Path:
    """``traces.csv``: column ``frame``, then ``time_s`` when the frame rate is known, then one per ROI.

    Parameters
    ----------
    path : str or Path
    traces : RoiTraces
        ``dff (T, R)`` float32 and ``names`` (R).
    """
    from astro3s.io import atomic_path

    dff = np.asarray(traces.dff, dtype=np.float32)
    n_frames = dff.shape[0]
    columns = [np.arange(n_frames, dtype=np.float64)[:, None]]
    header = ["frame"]
    if traces.fs:
        columns.append((np.arange(n_frames) / float(traces.fs))[:, None])
        header.append("time_s")
    header += list(traces.names)
    with atomic_path(path) as tmp:
        with open(tmp, "w", encoding="utf-8") as handle:
            handle.write(",".join(header) + "\n")
            body = np.hstack(columns + [dff.astype(np.float64)]) if dff.size else np.hstack(columns)
            # enough decimals to tell frames apart at any frame rate (1e6 Hz: 8)
            decimals = max(4, int(np.ceil(np.log10(float(traces.fs)))) + 2) if traces.fs else 0
            fmt = ["%d"] + ([f"%.{decimals}f"] if traces.fs else []) + ["%.6g"] * dff.shape[1]
            np.savetxt(handle, body, fmt=fmt, delimiter=",")
    return Path(path)


def write_cc_maps(path: str | Path, domains: Any) -> Path:
    """``cc_maps.npz``: each cell's CC map in a box around its disc, ``cc (N, h, w) float16`` (NaN
    where not a candidate), placed in the FOV at ``origin (N, 2)`` (``(y, x)`` of the box's first
    pixel; ``Domains.cc_map`` rebuilds a whole-FOV map), ``cell_ids``, ``threshold``, ``centroids``,
    ``radius``, ``max_lag``, ``exact_cc`` and ``cc_tolerance`` (the bound on ``|cc - exact|`` away
    from the threshold when the maps were screened)."""
    from astro3s.io import atomic_path

    with atomic_path(path, suffix=".npz") as tmp:
        np.savez_compressed(tmp, cc=np.asarray(domains.cc_boxes, dtype=np.float16),
                            origin=np.asarray(domains.cc_origins, np.int64),
                            cell_ids=np.asarray(domains.cell_ids, np.int64),
                            threshold=np.float32(domains.threshold),
                            centroids=np.asarray(domains.centroids, np.float64),
                            radius=np.float32(domains.radius), max_lag=np.int64(domains.max_lag),
                            exact_cc=np.bool_(getattr(domains, "exact_cc", True)),
                            cc_tolerance=np.float32(domains.cc_tolerance))
    return Path(path)


def event_rates(dff: np.ndarray, *, fs: float | None, z: float = 3.0) -> np.ndarray:
    """Calcium events per minute (per 100 frames when the frame rate is unknown) of each trace.

    An event is an upward crossing of ``median + z * 1.4826 * MAD`` of the
    trace (a robust noise estimate, so slow baselines and large events do
    not inflate it).

    Parameters
    ----------
    dff : ndarray of float, shape (T, R)
    fs : float or None
        Frame rate, Hz.
    z : float
        Threshold in robust standard deviations.

    Returns
    -------
    rates : ndarray of float64, shape (R,)
    """
    dff = np.asarray(dff, dtype=np.float64)
    if dff.ndim != 2 or dff.shape[0] < 2 or dff.shape[1] == 0:
        return np.zeros(dff.shape[1] if dff.ndim == 2 else 0)
    med = np.median(dff, axis=0)
    mad = np.median(np.abs(dff - med), axis=0) * 1.4826
    above = dff > (med + z * np.maximum(mad, 1e-9))
    crossings = np.count_nonzero(above[1:] & ~above[:-1], axis=0)
    span = dff.shape[0] / float(fs) / 60.0 if fs else dff.shape[0] / 100.0
    return crossings / span
