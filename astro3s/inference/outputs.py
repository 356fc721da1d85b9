"""Files of one inference run, each written whole or not at all; a folder is complete only at the end.

Layout of ``DIR/<movie stem>/``::

    soma.tif, processes.tif, domains.tif   uint16 label images, shared cell ids
    RoiSet.zip                             Fiji ROIs, Soma_### and Proc_###_##
    traces.csv                             a row per frame, a column per ROI (dF/F)
    events.csv                             a row per calcium event (see astro3s.events.table)
    cc_maps.npz                            per-cell CC maps (float16 boxes + origins) + ids, threshold
    summary.json                           per-cell table, parameters, versions, timings, files written
    overlay.png, traces.png                figures
    summary.png                            one page: images, cells, domains, threshold search, traces, motion
    <stem>.nwb                             NWB file, with nwb=true or from astro3s-export (astro3s.io.nwb)

The files go to a hidden staging folder beside the final one (:func:`staging_folder`)
and are then moved into place (:func:`commit_outputs`):

- a new output folder is the staging folder renamed (one atomic step);
- an existing one keeps every file astro3s did not write there (a RoiSet the
  user edited and saved in it, notes, ...): astro3s's own files are replaced
  one by one, each atomically by a rename, ``summary.json`` is taken away first
  and put back last, and a failure puts the previous files back.

``summary.json`` is the completeness marker: a folder with every output file
(:func:`is_complete`) was finished by a run. A crash, Ctrl-C or full disk
leaves each file either old or new and whole, and ``summary.json`` missing
unless the whole set is consistent, so a rerun redoes the movie.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import uuid
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any

import numpy as np

from astro3s.errors import InputError

log = logging.getLogger(__name__)

__all__ = ["OUTPUT_FILES", "SUMMARY_NAME", "add_output", "commit_folder", "commit_outputs",
           "file_digests", "is_complete", "own_output", "read_summary", "staging_folder", "write_cc_maps",
           "write_traces_csv"]

SUMMARY_NAME = "summary.json"
#: Files every complete output folder holds.
OUTPUT_FILES = ("soma.tif", "processes.tif", "domains.tif", "RoiSet.zip", "traces.csv", "events.csv",
                "cc_maps.npz", SUMMARY_NAME, "overlay.png", "traces.png", "summary.png")
_STAGING_PREFIX = ".partial-"
#: inside a staging folder: hard links (or copies) of the files a commit replaces, to put back on failure
_PREVIOUS = ".previous"


def is_complete(folder: str | Path, *, figures: bool = True, nwb: bool = False) -> bool:
    """Whether ``folder`` holds a complete output set (written by a finished run); with ``nwb``,
    ``<folder name>.nwb`` too (``astro3s-infer nwb=true``)."""
    folder = Path(folder)
    names = OUTPUT_FILES if figures else tuple(n for n in OUTPUT_FILES if not n.endswith(".png"))
    if nwb:
        names = (*names, f"{folder.name}.nwb")
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
            if stale.name.startswith(f"{_STAGING_PREFIX}old-"):
                # a whole earlier output folder set aside by an earlier astro3s version, maybe with user files
                log.warning("%s holds an earlier output folder of %s left by an interrupted run; "
                            "delete it once you have checked it", stale, final.name)
                continue
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


def file_digests(folder: str | Path, names: Iterable[str]) -> dict[str, str]:
    """SHA-256 (hex) of each file ``folder/name``, recorded in ``summary.json`` under ``files``.

    A later run compares them with the files it is about to replace, to tell
    its own outputs from files the user changed since (see :func:`commit_outputs`).
    """
    return {name: _sha256(Path(folder) / name) for name in names}


def _sha256(path: Path) -> str:
    import hashlib

    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def previous_outputs(folder: str | Path) -> dict[str, str | None]:
    """The files an earlier run wrote in ``folder``: name -> SHA-256 when recorded, else None.

    They are the ``files`` of its ``summary.json``; a summary without that
    record (older astro3s), or no summary (an interrupted run), means the
    :data:`OUTPUT_FILES` present in the folder, digests unknown.
    """
    import json

    folder = Path(folder)
    try:
        recorded = json.loads((folder / SUMMARY_NAME).read_text(encoding="utf-8")).get("files")
    except (OSError, ValueError, AttributeError):
        recorded = None
    if isinstance(recorded, dict) and all(isinstance(k, str) and k not in ("", ".", "..") and Path(k).name == k
                                          for k in recorded):
        found = {name: (str(value) if value else None) for name, value in recorded.items()}
        found.setdefault(SUMMARY_NAME, None)
    else:
        found = dict.fromkeys(OUTPUT_FILES)
    return {name: digest for name, digest in found.items() if (folder / name).is_file()}


def _free_name(path: Path, tag: str) -> Path:
    """``name.<tag>-<n>.ext``, the first that does not exist."""
    suffix = "".join(path.suffixes[-1:])
    stem = path.name[: len(path.name) - len(suffix)]
    n = 1
    while (candidate := path.with_name(f"{stem}.{tag}-{n}{suffix}")).exists():
        n += 1
    return candidate


def _keep_user_edits(final: Path, previous: dict[str, str | None]) -> dict[str, str | None]:
    """Rename the outputs the user changed since astro3s wrote them; the others (ours to replace).

    A file whose content no longer matches the digest recorded when it was
    written (a RoiSet.zip edited in Fiji and saved over) becomes
    ``name.edited-<n>.ext`` beside it, with a warning.
    """
    ours = {}
    for name, digest in previous.items():
        path = final / name
        if digest is not None and name != SUMMARY_NAME and _sha256(path) != digest:
            kept = _free_name(path, "edited")
            os.replace(path, kept)
            log.warning("%s was changed after astro3s wrote it; kept as %s", path, kept.name)
        else:
            ours[name] = digest
    return ours


def _back_up(final: Path, names: Iterable[str], backup: Path) -> dict[str, Path]:
    """Hard links (copies where links are not supported) of ``final/name`` in ``backup``."""
    backup.mkdir(exist_ok=True)
    saved = {}
    for name in names:
        try:
            os.link(final / name, backup / name)
        except OSError:
            shutil.copy2(final / name, backup / name)
        saved[name] = backup / name
    return saved


def _restore(final: Path, saved: dict[str, Path], placed: Iterable[str]) -> None:
    """Put the backed-up files back and remove new ones that had no predecessor (summary last)."""
    for name in placed:
        if name not in saved:
            with contextlib.suppress(OSError):
                (final / name).unlink()
    for name in sorted(saved, key=lambda n: n == SUMMARY_NAME):
        with contextlib.suppress(OSError):
            os.replace(saved[name], final / name)


def _replace_files(stage: Path, final: Path) -> None:
    """Replace astro3s's own files in the existing folder ``final`` by those of ``stage``, one by one.

    Files the user changed since a run wrote them are first renamed aside
    (:func:`_keep_user_edits`). Then the previous ``summary.json`` goes (the
    folder is incomplete from then on), own files this run did not write go,
    each new file is renamed over its old version, and the new
    ``summary.json`` comes last. Every previous file is hard-linked into the
    staging folder first: on an error or Ctrl-C they are all put back.
    """
    new = sorted((p.name for p in stage.iterdir() if p.is_file()), key=lambda n: n == SUMMARY_NAME)
    previous = _keep_user_edits(final, previous_outputs(final))
    saved = _back_up(final, previous, stage / _PREVIOUS)
    placed: list[str] = []
    try:
        if SUMMARY_NAME in previous:
            (final / SUMMARY_NAME).unlink()
        for name in sorted(set(previous) - set(new) - {SUMMARY_NAME}):  # stale: not written this time
            (final / name).unlink()
        for name in new:
            os.replace(stage / name, final / name)
            placed.append(name)
    except BaseException:  # a full disk, Ctrl-C: the previous set, complete (a killed run: no summary.json)
        _restore(final, saved, placed)
        raise


def commit_outputs(stage: Path, final: str | Path) -> Path:
    """Move the finished files of ``stage`` to the output folder ``final``; ``stage`` is removed.

    A new ``final`` is ``stage`` renamed. In an existing one only files
    astro3s wrote there are replaced or, when this run did not write them,
    removed (see :func:`_replace_files`); anything else in it is kept, and an
    output the user changed since it was written is kept under a new name.

    Raises
    ------
    InputError
        A rename failed (read-only or full file system); the previous outputs
        are put back.
    """
    final = Path(final)
    try:
        if not final.exists():
            os.replace(stage, final)
            return final
        if not final.is_dir():
            raise InputError(final, "exists and is not a folder.", "move it away, or choose another out= folder.")
        _replace_files(stage, final)
    except OSError as err:
        raise InputError(final, f"the outputs could not be moved into place ({err.strerror or err}).",
                         "choose a writable out= folder with free space.") from None
    shutil.rmtree(stage, ignore_errors=True)
    return final


def read_summary(folder: str | Path, *, fix: str = "point at an output folder written by astro3s-infer.",
                 ) -> dict[str, Any]:
    """``folder/summary.json`` as a dict.

    Raises
    ------
    InputError
        Missing, unreadable or not a JSON object; the message ends with ``fix``.
    """
    import json

    path = Path(folder) / SUMMARY_NAME
    try:
        summary = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as err:
        raise InputError(path, f"cannot be read ({err}).", fix) from None
    if not isinstance(summary, dict):
        raise InputError(path, "is not a JSON object.", fix)
    return summary


def own_output(folder: str | Path, name: str) -> bool:
    """Whether ``folder/name`` is a file astro3s wrote there (recorded in ``summary.json``) and unchanged since."""
    previous = previous_outputs(folder)
    if name not in previous:
        return False
    return previous[name] is None or _sha256(Path(folder) / name) == previous[name]


def add_output(folder: str | Path, name: str, write: Callable[[Path], Any]) -> Path:
    """Add one file to a complete output folder, recorded in its ``summary.json`` as astro3s's own.

    Used for outputs made later from the folder's files (``astro3s-export``):
    the file's SHA-256 joins ``files``, so a later run of astro3s-infer
    replaces it, or removes it as stale, like the files it wrote itself (see
    :func:`commit_outputs`). A file of that name that astro3s did not write, or
    that was changed since, is kept under a new name (``name.edited-<n>.ext``).

    Parameters
    ----------
    folder : str or Path
        An output folder with a ``summary.json``.
    name : str
        File name in it.
    write : callable
        ``write(path)`` writes the file at ``folder/name``, atomically (as
        every astro3s writer does).

    Raises
    ------
    InputError
        No readable ``summary.json``.
    """
    from astro3s.io import write_json

    folder = Path(folder)
    summary = read_summary(folder)
    target = folder / name
    if target.exists() and not own_output(folder, name):
        kept = _free_name(target, "edited")
        os.replace(target, kept)
        log.warning("%s was not written by astro3s or was changed since; kept as %s", target, kept.name)
    recorded = summary.get("files")
    if not isinstance(recorded, dict):  # older astro3s: its outputs present, digests unknown
        recorded = {n: None for n in previous_outputs(folder) if n != SUMMARY_NAME}
    write(target)
    summary["files"] = {**recorded, name: _sha256(target)}
    write_json(folder / SUMMARY_NAME, summary)
    return target


#: The former name of :func:`commit_outputs`.
commit_folder = commit_outputs


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
