"""NWB export of one movie's results (the optional extra ``astro3s[nwb]``: pynwb, nwbinspector).

Layout of ``<stem>.nwb``, after the conventions of Suite2p and CaImAn::

    acquisition/TwoPhotonSeries        the movie, linked (format "external", path relative
                                       to the .nwb file), not copied; rate = fs
    general/devices/Microscope         "unknown" where the movie records nothing
    general/optophysiology/ImagingPlane  with its OpticalChannel; imaging_rate = fs,
                                       grid_spacing (um) when the TIFF records a pixel size
    processing/ophys/
        ImageSegmentation/PlaneSegmentation
            image_mask (R, H, W) uint8, 1 inside the ROI, in the movie's (row, column) order
            roi_name ("Soma_001", "Proc_001_02", "Domain_001"), cell_id (label in soma.tif),
            roi_type ("soma" | "process" | "domain")
        Fluorescence/RoiResponseSeries   raw F (T, K): mean of each ROI's pixels in the
                                         motion-corrected movie (written by astro3s-infer only)
        Fluorescence/Neuropil            raw F of each soma/process ROI's neuropil surround
                                         (astro3s-infer only; Suite2p's series name)
        DfOverF/RoiResponseSeries        dF/F (T, K), the columns of traces.csv (and the domain
                                         traces, from astro3s-infer)
        SummaryImages                    GrayscaleImage "mean" (temporal mean of the raw movie),
                                         "reference", "enhanced", "activity_map" when known
    events                             EventsTable, a row per events.csv row

Rows of the PlaneSegmentation are ordered by cell, then soma, processes (as in
``traces.csv``) and domain. A cell's processes are several ROIs: the 8-connected
components of its pixels in ``processes.tif`` (:func:`astro3s.correlation.roi_table`,
the ROIs the traces were measured on). A domain ROI is the cell's CC domain
beyond its own soma and processes, the pixels its ``Domain_###`` trace averages,
so that every mask is exactly the pixels of its trace; the cell's whole domain
(``domains.tif``) is the union of its soma, process and domain ROIs.

pynwb is imported inside the functions, never at import: :func:`require_nwb`
says in one line how to install it.
"""

from __future__ import annotations

import logging
import os
import uuid
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np

from astro3s.errors import ConfigError, InputError

log = logging.getLogger(__name__)

__all__ = ["INSTALL_HINT", "PLANE_FIELDS", "UNKNOWN_SUBJECT", "NwbContent", "Recording", "RoiMasks", "build_nwbfile",
           "content_from_folder", "content_from_results", "export_folder", "nwb_name", "read_event_columns",
           "recording_info", "require_nwb", "roi_masks", "summary_images", "tiff_pixel_size_um", "write_nwb"]

INSTALL_HINT = 'pip install "astro3s[nwb]"'
_KIND_ORDER = {"soma": 0, "process": 1, "domain": 2}
_ASTRA_DOI = "https://doi.org/10.1101/2023.05.03.539211"
#: events.csv columns and their NWB descriptions; onset_s and duration_s become the table's
#: ``timestamp`` and ``duration`` columns
_EVENT_COLUMNS = {
    "cell_id": "cell of the event's ROI: its label in soma.tif",
    "kind": "ROI type: soma, process or domain",
    "roi": "name of the event's ROI (roi_name in the PlaneSegmentation, column of traces.csv)",
    "onset_frame": "first frame of the event (0-based)",
    "peak_frame": "frame of the event's peak",
    "end_frame": "last frame (back to 10 % of the amplitude, or the next event's onset)",
    "peak_s": "peak time, s from the first frame",
    "amplitude_dff": "peak minus the level the event rises from, dF/F",
    "rise_s": "10-90 % rise time, s (NaN when unmeasurable)",
    "decay_s": "peak to 1/e of the amplitude, s (NaN when the trace does not get there)",
    "auc": "area above the starting level from onset to end, dF/F x s",
    "snr": "amplitude / per-frame noise SD of the trace",
    "soma_event": "for a process or domain event: row (0-based, in this table) of the somatic event it "
                  "follows, -1 for none",
    "delay_s": "onset minus that somatic event's onset, s (NaN when not linked)",
}
#: Subject fields when nothing is known: labelled unknown, and valid where a value is required
#: (nwbinspector: an ISO 8601 age, a species as a Latin binomial or an NCBI taxon)
UNKNOWN_SUBJECT = {
    "subject_id": "unknown",
    "species": "http://purl.obolibrary.org/obo/NCBITaxon_33208",  # Metazoa: animal, nothing more is known
    "sex": "U",
    "age": "P0D/",  # any age: a range from 0 days, upper end unknown
    "description": "unknown: astro3s does not know the subject. species is Metazoa (NCBITaxon_33208) and age "
                   "'P0D/' (any) only because NWB asks for them; replace them with the real values.",
}
#: ImagingPlane fields astro3s cannot know; unknown ones are "unknown" (text) or NaN (wavelengths, nm)
PLANE_FIELDS = ("location", "indicator", "excitation_lambda", "emission_lambda")
_MOUSE = {"Mus musculus", "Mouse", "mouse", "http://purl.obolibrary.org/obo/NCBITaxon_10090"}
_INT_COLUMNS = ("cell_id", "onset_frame", "peak_frame", "end_frame", "soma_event")
_TEXT_COLUMNS = ("kind", "roi")


def require_nwb() -> None:
    """Check that pynwb can be imported.

    Raises
    ------
    ConfigError
        One line naming ``pip install "astro3s[nwb]"``.
    """
    try:
        import hdmf  # noqa: F401
        import pynwb  # noqa: F401
    except ImportError:
        raise ConfigError(f"NWB export needs the optional extra astro3s[nwb] (pynwb). Fix: {INSTALL_HINT}") from None


def nwb_name(folder: str | Path) -> str:
    """File name of the NWB file of an output folder: ``<folder name>.nwb``."""
    return f"{Path(folder).name}.nwb"


# --------------------------------------------------------------------------- data passed to the writer


@dataclass(frozen=True)
class RoiMasks:
    """Every ROI of a movie as a mask.

    Attributes
    ----------
    names : list of str, length R
        ``Soma_###``, ``Proc_###_##``, ``Domain_###``.
    cell_ids : ndarray of int64, shape (R,)
    kinds : list of str, length R
        ``"soma"``, ``"process"`` or ``"domain"``.
    masks : ndarray of bool, shape (R, H, W)
    """

    names: list[str]
    cell_ids: np.ndarray
    kinds: list[str]
    masks: np.ndarray

    def __len__(self) -> int:
        return len(self.names)

    def rows(self, names: list[str], *, what: str) -> np.ndarray:
        """Row of each of ``names``; ``what`` names their source in the error.

        Raises
        ------
        InputError
            A name that is not an ROI of the label images (they were changed after the run).
        """
        index = {name: i for i, name in enumerate(self.names)}
        missing = [n for n in names if n not in index]
        if missing:
            raise InputError(None, f"{what} names ROIs that the label images do not hold ({', '.join(missing[:5])}).",
                             "the output folder was changed after astro3s wrote it; rerun astro3s-infer.")
        return np.array([index[n] for n in names], np.int64)


@dataclass(frozen=True)
class Recording:
    """What is known about the movie and its acquisition.

    Attributes
    ----------
    name : str
        Output folder name (the movie's stem); the NWB ``session_id``.
    movie : Path or None
        The movie file (or folder of frames); None when it was not found.
    n_frames : int
    shape : (int, int)
        ``(H, W)``.
    fs : float
        Frame rate, Hz.
    start_time : datetime
        Timezone-aware ``session_start_time``.
    start_time_source : str
        Where ``start_time`` comes from, for the file's notes.
    pixel_size_um : float or None
    key : str or None
        Dataset of an HDF5/Zarr movie.
    channel, plane : int or None
        Channel / z-plane read from a TIFF holding several (:func:`astro3s.io.read_movie`).
    """

    name: str
    movie: Path | None
    n_frames: int
    shape: tuple[int, int]
    fs: float
    start_time: datetime
    start_time_source: str
    pixel_size_um: float | None = None
    key: str | None = None
    channel: int | None = None
    plane: int | None = None


@dataclass(frozen=True)
class NwbContent:
    """Everything one NWB file holds.

    Attributes
    ----------
    recording : Recording
    rois : RoiMasks
    trace_names : list of str, length K
        ROI of each trace column (all among ``rois.names``).
    dff : ndarray of float32, shape (T, K)
    f : ndarray of float32, shape (T, K), or None
        Raw fluorescence (None: not known, no ``Fluorescence``).
    events : dict of str to ndarray
        ``events.csv`` columns (:func:`read_event_columns`), each of length n.
    images : dict of str to (ndarray, str)
        Summary images ``(H, W)`` float32 and their descriptions.
    neuropil : (list of str, ndarray of float32 (T, J)), or None
        ROIs (among ``trace_names``) with a neuropil surround and the surround's
        mean raw fluorescence (:mod:`astro3s.correlation.neuropil`), written as
        the ``Neuropil`` series of ``Fluorescence`` (Suite2p's convention).
    source : str
        How the file was made, for the notes.
    notes : list of str
        More lines for the file's notes.
    subject : dict of str to str
        Fields of the NWB ``Subject`` (``subject_id``, ``species``, ``sex``,
        ``age``, ...) that replace those of :data:`UNKNOWN_SUBJECT`.
    imaging_plane : dict of str to str or float
        Known :data:`PLANE_FIELDS` (``location``, ``indicator``, wavelengths in nm);
        the others are written as unknown.
    """

    recording: Recording
    rois: RoiMasks
    trace_names: list[str]
    dff: np.ndarray
    f: np.ndarray | None
    events: dict[str, np.ndarray]
    images: dict[str, tuple[np.ndarray, str]] = field(default_factory=dict)
    neuropil: tuple[list[str], np.ndarray] | None = None
    source: str = "astro3s"
    notes: list[str] = field(default_factory=list)
    subject: dict[str, str] = field(default_factory=dict)
    imaging_plane: dict[str, Any] = field(default_factory=dict)


def roi_masks(soma: np.ndarray, processes: np.ndarray, domains: np.ndarray | None = None) -> RoiMasks:
    """Masks of every soma, process and domain ROI of a pair of label images.

    Parameters
    ----------
    soma, processes : ndarray of int, shape (H, W)
        Label images with shared cell ids; no pixel in both.
    domains : ndarray of int, shape (H, W), optional
        CC domains (``domains.tif``); each cell's domain ROI is its part beyond
        the cell's own soma and processes (no domain ROI where that is empty).

    Returns
    -------
    RoiMasks
        Ordered by cell, then soma, processes (numbered as in ``traces.csv``), domain.
    """
    from astro3s.correlation import roi_table

    soma = np.asarray(soma)
    processes = np.asarray(processes)
    names, ids, kinds, roi_index = roi_table(soma, processes)
    masks = roi_index[None] == np.arange(len(names))[:, None, None]
    if domains is not None:
        dom = np.asarray(domains, np.int64)
        # the pixels domain_traces averages: the domain without its own cell's soma and processes
        ring = np.where((dom > 0) & (soma != dom) & (processes != dom), dom, 0)
        dom_ids = np.unique(ring[ring > 0])
        names = names + [f"Domain_{int(c):03d}" for c in dom_ids]
        ids = np.concatenate([ids, dom_ids.astype(np.int64)])
        kinds = kinds + ["domain"] * len(dom_ids)
        masks = np.concatenate([masks, ring[None] == dom_ids[:, None, None]])
    order = np.lexsort((np.arange(len(names)), [_KIND_ORDER[k] for k in kinds], ids)) if names else \
        np.zeros(0, np.int64)
    return RoiMasks(names=[names[i] for i in order], cell_ids=np.asarray(ids, np.int64)[order],
                    kinds=[kinds[i] for i in order], masks=masks[order].reshape(len(order), *soma.shape))


def read_event_columns(path: str | Path) -> dict[str, np.ndarray]:
    """The columns of an ``events.csv`` as arrays.

    Returns
    -------
    dict of str to ndarray
        Every column of the file, length n: ``cell_id``, ``onset_frame``,
        ``peak_frame``, ``end_frame``, ``soma_event`` int64 (-1 where empty),
        ``kind``, ``roi`` str, the others float64 (NaN where empty).
    """
    import csv

    with open(path, encoding="utf-8", newline="") as handle:
        reader = csv.reader(handle)
        header = next(reader, [])
        rows = list(reader)
    cells = np.array(rows, dtype=object).reshape(len(rows), len(header))
    out: dict[str, np.ndarray] = {}
    for j, name in enumerate(header):  # a loop over columns
        col = cells[:, j].astype(str)
        if name in _TEXT_COLUMNS:
            out[name] = col
        elif name in _INT_COLUMNS:
            out[name] = np.where(col == "", "-1", col).astype(np.int64)
        else:
            out[name] = np.where(col == "", "nan", col).astype(np.float64)
    return out


def tiff_pixel_size_um(path: str | Path | None) -> float | None:
    """Pixel width in um that a TIFF records (ImageJ unit micron, or resolution in cm), else None.

    A resolution in inches (or none) is the writer's default, not a calibration.
    """
    if path is None or Path(path).suffix.lower() not in (".tif", ".tiff", ".btf") or not Path(path).is_file():
        return None
    import tifffile

    try:
        with tifffile.TiffFile(path) as tif:
            page = tif.pages[0]
            tag, unit = page.tags.get("XResolution"), page.tags.get("ResolutionUnit")
            imagej_unit = str((tif.imagej_metadata or {}).get("unit", "")).strip().lower()
            if tag is None:
                return None
            num, den = tag.value
    except Exception:  # noqa: BLE001 - the movie was read before; a metadata hiccup only loses the pixel size
        return None
    if not num or not den:
        return None
    per_unit = den / num  # XResolution is pixels per unit: a pixel spans den / num units
    if imagej_unit in ("micron", "microns", "um", "\u00b5m", "\\u00b5m"):
        size = per_unit
    elif unit is not None and int(unit.value) == 3:  # centimetre
        size = per_unit * 1e4
    else:
        return None
    return float(size) if np.isfinite(size) and 0 < size < 1e3 else None


def recording_info(movie: str | Path | None, *, name: str, n_frames: int, shape: tuple[int, int], fs: float | None,
                   key: str | None = None, channel: int | None = None, plane: int | None = None,
                   fallback_time: float | None = None) -> Recording:
    """The :class:`Recording` of a movie, session start from the movie file's modification time.

    Parameters
    ----------
    movie : str, Path or None
        The movie; None or a missing path: unknown (``fallback_time`` is used).
    name : str
    n_frames : int
    shape : (int, int)
    fs : float or None
    key : str, optional
    channel, plane : int, optional
        The channel / z-plane of a multi-channel TIFF the results were read from.
    fallback_time : float, optional
        POSIX time used when the movie is unknown (e.g. when the results were written).

    Raises
    ------
    InputError
        No frame rate (NWB times are in seconds).
    """
    if not fs:
        raise InputError(movie, "the frame rate is not known, and NWB times are in seconds.",
                         "run astro3s-infer again with the frame rate in Hz as fs=, e.g. fs=15.")
    path = Path(movie) if movie is not None else None
    if path is not None and path.exists():
        stamp_file = path
        if path.is_dir():  # a folder of frames: the first one
            files = _movie_files(path)
            stamp_file = files[0] if files else path
        stamp = stamp_file.stat().st_mtime
        source = (f"the modification time of the movie file {stamp_file.name} (the recording time is not "
                  "recorded in the movie)")
    else:
        path = None
        stamp = fallback_time if fallback_time is not None else datetime.now(timezone.utc).timestamp()
        source = ("the time the results were written: the movie was not found, and the recording time is "
                  "not known")
    start = datetime.fromtimestamp(stamp, tz=timezone.utc).astimezone()  # local zone, aware
    return Recording(name=name, movie=path, n_frames=int(n_frames), shape=(int(shape[0]), int(shape[1])),
                     fs=float(fs), start_time=start, start_time_source=source,
                     pixel_size_um=tiff_pixel_size_um(path), key=key, channel=channel, plane=plane)


def _movie_files(path: Path) -> list[Path]:
    """The files of a movie: itself, or the frames of a folder of TIFFs in reading order (Zarr: the folder)."""
    from astro3s.io.movie import _looks_like_zarr, _natural_key

    if not path.is_dir() or path.suffix.lower() == ".zarr" or _looks_like_zarr(path):
        return [path]
    return sorted((f for f in path.iterdir() if f.is_file() and not f.name.startswith(".")
                   and f.suffix.lower() in (".tif", ".tiff")), key=_natural_key)


# --------------------------------------------------------------------------- the two sources


def content_from_results(movie: str | Path, *, name: str, n_frames: int, fs: float | None, soma: np.ndarray,
                         processes: np.ndarray, domains: np.ndarray, traces: Any, events_csv: str | Path,
                         domain_traces: Any = None, images: dict[str, tuple[np.ndarray, str]] | None = None,
                         key: str | None = None, channel: int | None = None, plane: int | None = None) -> NwbContent:
    """:class:`NwbContent` of a run in memory (``astro3s-infer nwb=true``).

    Parameters
    ----------
    movie : str or Path
    name : str
        Output folder name.
    n_frames : int
    fs : float or None
    soma, processes, domains : ndarray of uint16, shape (H, W)
    traces : RoiTraces
        Soma and process traces (``f`` and ``dff`` (T, R) float32).
    events_csv : str or Path
        The ``events.csv`` this run wrote.
    domain_traces : RoiTraces, optional
        The ``Domain_###`` traces.
    images : dict of str to (ndarray, str), optional
    key : str, optional
    channel, plane : int, optional
        Which array of the movie file was analysed (:func:`astro3s.io.read_movie`).
    """
    sets = [t for t in (traces, domain_traces) if t is not None and len(t)]
    n = int(n_frames)
    return NwbContent(
        recording=recording_info(movie, name=name, n_frames=n, shape=soma.shape, fs=fs, key=key, channel=channel,
                                 plane=plane),
        rois=roi_masks(soma, processes, domains),
        trace_names=[name_ for t in sets for name_ in t.names],
        dff=np.hstack([np.asarray(t.dff, np.float32) for t in sets]) if sets else np.zeros((n, 0), np.float32),
        f=np.hstack([np.asarray(t.f, np.float32) for t in sets]) if sets else np.zeros((n, 0), np.float32),
        neuropil=_neuropil(sets),
        events=read_event_columns(events_csv), source="astro3s-infer nwb=true",
        images={k: v for k, v in (images or {}).items() if v[0].shape == soma.shape})


def _neuropil(sets: list[Any]) -> tuple[list[str], np.ndarray] | None:
    """Names and surround traces of the trace sets that carry them (``RoiTraces.fneu``), or None."""
    with_fneu = [t for t in sets if getattr(t, "fneu", None) is not None]
    if not with_fneu:
        return None
    return ([n for t in with_fneu for n in t.names], np.hstack([np.asarray(t.fneu, np.float32) for t in with_fneu]))


def summary_images(pre: Any) -> dict[str, tuple[np.ndarray, str]]:
    """The summary images of a :class:`~astro3s.preprocess.Preprocessed` movie, for :attr:`NwbContent.images`.

    Returns
    -------
    dict of str to (ndarray, str)
        ``mean``, ``reference``, ``enhanced``, ``activity_map`` (those
        present), each ``(H, W)`` float32 with its description.
    """
    found = {"mean": (getattr(pre, "mean_image", None), "temporal mean of the raw (not motion-corrected) movie"),
             "reference": (getattr(pre, "reference", None), "motion-correction reference image"),
             "enhanced": (getattr(pre, "enhanced", None), "enhanced image of the pre-processing, values in [0, 1]"),
             "activity_map": (getattr(pre, "activity_map", None),
                              "activity map: coverage-normalised supra-threshold counts, in frames")}
    return {key: (np.asarray(image, np.float32), text) for key, (image, text) in found.items() if image is not None}


def content_from_folder(folder: str | Path, *, mean_image: bool = True) -> NwbContent:
    """:class:`NwbContent` of an output folder written earlier by ``astro3s-infer``.

    ``traces.csv`` holds dF/F only, so the file has no ``Fluorescence``; the
    mean image is computed from the movie when it is found (``summary.json``
    ``movie``, absolute or relative to the current folder).

    Parameters
    ----------
    folder : str or Path
        Holds soma.tif, processes.tif, domains.tif, traces.csv, events.csv, summary.json.
    mean_image : bool
        Read the movie once for its temporal mean.

    Raises
    ------
    InputError
        A missing or unreadable file, no frame rate, traces that do not match the labels.
    """
    from astro3s.inference.outputs import SUMMARY_NAME, read_summary
    from astro3s.io import mean_image as movie_mean_image
    from astro3s.io import read_labels

    folder = Path(folder)
    summary = read_summary(folder, fix="point input= at a folder written by astro3s-infer.")
    labels = {n: read_labels(folder / f"{n}.tif") for n in ("soma", "processes", "domains")}
    names, dff = _read_traces_csv(folder / "traces.csv")
    n_frames = dff.shape[0]
    movie = Path(str(summary["movie"])) if summary.get("movie") else None
    found = movie if movie is not None and movie.exists() else None
    if movie is not None and found is None:
        log.warning("%s: movie %s not found: the NWB file has no link to it and no mean image", folder.name, movie)
    recording = recording_info(found, name=folder.name, n_frames=n_frames, shape=labels["soma"].shape,
                               fs=summary.get("fs"), key=summary.get("key"), channel=summary.get("channel"),
                               plane=summary.get("plane"), fallback_time=(folder / SUMMARY_NAME).stat().st_mtime)
    images = {}
    if found is not None and mean_image:
        mean = movie_mean_image(found, key=summary.get("key"), channel=summary.get("channel"),
                                plane=summary.get("plane"))
        if mean.shape == labels["soma"].shape:
            images["mean"] = (mean, "temporal mean of the raw (not motion-corrected) movie")
    return NwbContent(recording=recording, rois=roi_masks(labels["soma"], labels["processes"], labels["domains"]),
                      trace_names=names, dff=dff, f=None, events=read_event_columns(folder / "events.csv"),
                      images=images, source=f"astro3s-export from the output folder {folder.name}",
                      notes=["No Fluorescence (raw F) or domain traces: traces.csv holds the dF/F of the soma and "
                             "process ROIs only (astro3s-infer nwb=true writes both)."])


def _read_traces_csv(path: Path) -> tuple[list[str], np.ndarray]:
    """ROI names and dF/F ``(T, K)`` float32 of a ``traces.csv`` (``frame``, ``time_s`` left out)."""
    try:
        with open(path, encoding="utf-8") as handle:
            header = handle.readline().strip().split(",")
        values = np.loadtxt(path, delimiter=",", skiprows=1, ndmin=2, dtype=np.float64)
    except (OSError, ValueError) as err:
        raise InputError(path, f"cannot be read ({err}).", "rerun astro3s-infer for this movie.") from None
    first = 2 if "time_s" in header else 1
    return header[first:], values.reshape(-1, len(header))[:, first:].astype(np.float32)


# --------------------------------------------------------------------------- NWB


def build_nwbfile(content: NwbContent, *, nwb_dir: str | Path) -> Any:
    """The :class:`pynwb.NWBFile` of ``content`` (see the module docstring for the layout).

    Parameters
    ----------
    content : NwbContent
    nwb_dir : str or Path
        Folder the file will live in: the movie's link is relative to it.
    """
    require_nwb()
    import astro3s
    from pynwb import NWBFile
    from pynwb.file import Subject

    rec = content.recording
    version = getattr(astro3s, "__version__", "unknown")
    notes = [f"Made by {content.source} (astro3s {version}); analysis parameters: summary.json beside this file.",
             f"session_start_time is {rec.start_time_source}.",
             "Traces were measured on the motion-corrected movie; TwoPhotonSeries links the raw movie.",
             "Image masks and images are (height, width) arrays in the movie's row/column order.",
             *content.notes]
    if not len(content.rois):  # nwbinspector refuses empty tables: no segmentation, traces or events then
        notes.append("No cell was found in this movie: the file holds no ROIs, traces or events.")
    nwbfile = NWBFile(
        session_description=(f"Astrocytes (somata, processes, cross-correlation domains) of the calcium-imaging "
                             f"movie {rec.name}, with their traces and calcium events, found by astro3s {version} "
                             f"(ASTRA method). session_start_time is {rec.start_time_source}."),
        identifier=str(uuid.uuid4()), session_start_time=rec.start_time, session_id=rec.name.replace("/", "_"),
        notes="\n".join(notes), keywords=["astrocytes", "calcium imaging", "segmentation", "astro3s"],
        related_publications=[_ASTRA_DOI], was_generated_by=[["astro3s", str(version)]],
        subject=Subject(**_subject_fields(content.subject)))
    device = nwbfile.create_device(name="Microscope", description="unknown: the movie records no microscope")
    plane = _imaging_plane(nwbfile, device, rec, content.imaging_plane, nwbfile.subject.species)
    if rec.movie is not None:
        nwbfile.add_acquisition(_movie_series(rec, plane, nwb_dir))
    if not len(content.rois) and not content.images:
        return nwbfile
    ophys = nwbfile.create_processing_module(name="ophys", description="astro3s: ROIs, traces and summary images")
    if content.images:
        _add_images(ophys, content.images)
    if len(content.rois):
        table = _plane_segmentation(ophys, plane, content.rois)
        if content.trace_names:
            _add_traces(ophys, table, content)
        if len(next(iter(content.events.values()), ())):
            nwbfile.add_events_table(_events_table(content, table))
    return nwbfile


def _subject_fields(given: dict[str, str]) -> dict[str, str]:
    """``given`` completed by :data:`UNKNOWN_SUBJECT`, its description saying which fields are placeholders."""
    given = {key: value for key, value in given.items() if value is not None}
    fields = {**UNKNOWN_SUBJECT, **given}
    placeholders = [key for key in ("subject_id", "species", "sex", "age") if key not in given]
    if given and "description" not in given:
        fields["description"] = (f"given: {', '.join(sorted(given))}. " + (
            f"Placeholders (unknown to astro3s, required by NWB): {', '.join(placeholders)}." if placeholders
            else ""))
    return fields


def _text(values: Any) -> np.ndarray:
    """Strings as an array of str (typed even when empty: hdmf cannot guess the type of ``[]``)."""
    return np.asarray(list(values), dtype=str)


def _compressed(data: np.ndarray, chunks: Any = True) -> Any:
    from pynwb import H5DataIO

    return H5DataIO(data=data, compression="gzip", compression_opts=4, chunks=chunks)


def _imaging_plane(nwbfile: Any, device: Any, rec: Recording, given: dict[str, Any], species: str) -> Any:
    from pynwb.ophys import OpticalChannel

    given = {key: value for key, value in given.items() if value is not None}
    unknown = [key for key in PLANE_FIELDS if key not in given]
    location = str(given.get("location", "unknown"))
    if "location" not in given and species in _MOUSE:
        # nwbinspector wants an Allen CCF term for a mouse: "root" (the whole brain) says no more than unknown
        location = "root"
    channel = OpticalChannel(name="OpticalChannel", description="the movie's single channel",
                             emission_lambda=float(given.get("emission_lambda", float("nan"))))
    extra = {}
    if rec.pixel_size_um is not None:
        extra = {"grid_spacing": [rec.pixel_size_um, rec.pixel_size_um], "grid_spacing_unit": "micrometers"}
    return nwbfile.create_imaging_plane(
        name="ImagingPlane", optical_channel=channel, device=device, imaging_rate=rec.fs,
        description=(f"the field of view of {rec.name}, {rec.shape[0]} x {rec.shape[1]} px (height x width)."
                     + (f" Unknown (NaN wavelengths, 'unknown' or, for a mouse, location 'root'): "
                        f"{', '.join(unknown)}." if unknown else "")),
        excitation_lambda=float(given.get("excitation_lambda", float("nan"))),
        indicator=str(given.get("indicator", "unknown")), location=location, **extra)


def _movie_series(rec: Recording, plane: Any, nwb_dir: str | Path) -> Any:
    from pynwb.ophys import TwoPhotonSeries

    files = _movie_files(rec.movie)
    try:
        links = [Path(os.path.relpath(f.resolve(), Path(nwb_dir).resolve())).as_posix() for f in files]
    except ValueError:  # another drive (Windows): no relative path exists
        links = [f.resolve().as_posix() for f in files]
    starts = np.arange(len(files)) if len(files) > 1 else np.zeros(1, np.int64)  # one frame per file of a folder
    extra = {}
    if rec.pixel_size_um is not None:
        extra["field_of_view"] = [rec.shape[1] * rec.pixel_size_um * 1e-6, rec.shape[0] * rec.pixel_size_um * 1e-6]
    where = "".join(f", {what} {value}" for what, value in (("dataset", rec.key), ("channel", rec.channel),
                                                             ("plane", rec.plane)) if value is not None)
    return TwoPhotonSeries(
        name="TwoPhotonSeries", imaging_plane=plane, external_file=links, starting_frame=starts.tolist(),
        format="external", unit="a.u.", rate=rec.fs, starting_time=0.0,
        dimension=[rec.shape[1], rec.shape[0]], num_samples=rec.n_frames,
        description=f"the raw movie {rec.movie.name}{where}, {rec.n_frames} frames (not copied: linked)",
        **extra)


def _plane_segmentation(ophys: Any, plane: Any, rois: RoiMasks) -> Any:
    from hdmf.common import VectorData
    from pynwb.ophys import ImageSegmentation, PlaneSegmentation

    height, width = rois.masks.shape[1:]
    masks = rois.masks.astype(np.uint8)
    columns = [
        VectorData(name="image_mask", description="1 inside the ROI, 0 outside; (height, width) of the movie",
                   data=_compressed(masks, chunks=(1, height, width))),
        VectorData(name="roi_name", description="Soma_###, Proc_###_## or Domain_###, as in traces.csv, "
                   "events.csv and RoiSet.zip", data=_text(rois.names)),
        VectorData(name="cell_id", description="the cell's label in soma.tif, processes.tif and domains.tif",
                   data=np.asarray(rois.cell_ids, np.int64)),
        VectorData(name="roi_type", description="soma, process (an 8-connected piece of the cell's processes) or "
                   "domain (the cell's CC domain beyond its soma and processes)", data=_text(rois.kinds)),
    ]
    table = PlaneSegmentation(
        name="PlaneSegmentation", imaging_plane=plane, id=list(range(len(rois))), columns=columns,
        description="astro3s ROIs, by cell: soma, processes, domain. The cell's whole CC domain (domains.tif) is "
                    "the union of its ROIs.")
    segmentation = ImageSegmentation(name="ImageSegmentation")
    segmentation.add_plane_segmentation(table)
    ophys.add(segmentation)
    return table


def _add_traces(ophys: Any, table: Any, content: NwbContent) -> None:
    from pynwb.ophys import DfOverF, Fluorescence, RoiResponseSeries

    rows = content.rois.rows(content.trace_names, what="traces")
    rate = content.recording.fs

    def series(data: np.ndarray, unit: str, description: str, *, name: str = "RoiResponseSeries",
               region_rows: np.ndarray = rows) -> Any:
        region = table.create_roi_table_region(description="the ROI of each column", region=region_rows.tolist())
        return RoiResponseSeries(name=name, data=_compressed(np.asarray(data, np.float32)),
                                 rois=region, unit=unit, rate=rate, starting_time=0.0, description=description)

    # each container joins the file before its series, so that the series' ROI region and the
    # PlaneSegmentation it points to share an ancestor when the region is attached
    if content.f is not None:
        fluorescence = Fluorescence(name="Fluorescence")
        ophys.add(fluorescence)
        fluorescence.add_roi_response_series(series(
            content.f, "a.u.", "raw F: mean of the ROI's pixels in the motion-corrected movie"))
        if content.neuropil is not None:
            names, fneu = content.neuropil
            from astro3s.correlation.neuropil import GAP, MIN_PIXELS

            fluorescence.add_roi_response_series(series(
                fneu, "a.u.", f"mean raw F of each ROI's neuropil surround (the nearest {MIN_PIXELS} pixels at "
                f"least {GAP} px from every ROI); events were detected on F less its fitted share of this "
                "trace's fluctuations", name="Neuropil", region_rows=content.rois.rows(names, what="neuropil traces")))
    dff = DfOverF(name="DfOverF")
    ophys.add(dff)
    dff.add_roi_response_series(series(
        content.dff, "dF/F", "(F - F0) / F0, F0 a running low percentile of F (see summary.json)"))


def _add_images(ophys: Any, images: dict[str, tuple[np.ndarray, str]]) -> None:
    from pynwb.base import Images
    from pynwb.image import GrayscaleImage

    ophys.add(Images(name="SummaryImages", description="summary images of the movie, (height, width)",
                     images=[GrayscaleImage(name=n, data=np.asarray(img, np.float32), description=text)
                             for n, (img, text) in images.items()]))


def _events_table(content: NwbContent, table: Any) -> Any:
    from hdmf.common import DynamicTableRegion, VectorData
    from pynwb.event import DurationVectorData, EventsTable, TimestampVectorData

    ev, fs = content.events, content.recording.fs
    onset, end = np.asarray(ev["onset_frame"], np.int64), np.asarray(ev["end_frame"], np.int64)
    columns = [
        TimestampVectorData(name="timestamp", description="onset of the event, s from the first frame "
                            "(onset_frame / fs; onset_s of events.csv)", data=onset / fs, resolution=1.0 / fs),
        DurationVectorData(name="duration", description="(end_frame - onset_frame + 1) / fs (duration_s of "
                           "events.csv)", data=(end - onset + 1) / fs, resolution=1.0 / fs),
        DynamicTableRegion(name="roi_row", description="the event's ROI in the PlaneSegmentation",
                           data=content.rois.rows(list(ev["roi"]), what="events.csv").tolist(), table=table),
    ]
    for name, text in _EVENT_COLUMNS.items():  # a loop over columns
        if name in ev:
            data = _text(ev[name]) if name in _TEXT_COLUMNS else ev[name]
            columns.append(VectorData(name=name, description=text, data=data))
    return EventsTable(name="events", id=list(range(len(onset))), columns=columns,
                       description="calcium events of every soma, process and domain ROI (events.csv)",
                       source_description="astro3s.events: detection on each ROI's raw trace (drift-following "
                                          "baseline, MAD noise, hysteresis), process/domain events linked to "
                                          "somatic ones")


def write_nwb(path: str | Path, content: NwbContent, *, nwb_dir: str | Path | None = None) -> Path:
    """Write ``content`` as an NWB file, atomically.

    Parameters
    ----------
    path : str or Path
    content : NwbContent
    nwb_dir : str or Path, optional
        Folder the file will end up in (the movie link is relative to it);
        default: ``path``'s own folder.

    Returns
    -------
    Path
    """
    require_nwb()
    from pynwb import NWBHDF5IO

    from astro3s.io.atomic import atomic_path

    path = Path(path)
    nwbfile = build_nwbfile(content, nwb_dir=path.parent if nwb_dir is None else nwb_dir)
    with atomic_path(path, suffix=".nwb") as tmp:
        with NWBHDF5IO(str(tmp), mode="w") as io:
            io.write(nwbfile)
    return path


def export_folder(folder: str | Path, *, overwrite: bool = False, mean_image: bool = True,
                  subject: dict[str, str] | None = None,
                  imaging_plane: dict[str, Any] | None = None) -> Path | None:
    """Write ``<folder name>.nwb`` into an output folder of ``astro3s-infer`` (``astro3s-export``).

    The file is recorded in the folder's ``summary.json`` like the outputs of
    the run (:func:`astro3s.inference.outputs.add_output`), so a later run
    replaces or removes it with them.

    Parameters
    ----------
    folder : str or Path
    overwrite : bool
        Redo a file astro3s wrote there before; False skips the folder then.
    mean_image : bool
        Read the movie once for its mean image (see :func:`content_from_folder`).
    subject : dict of str to str, optional
        NWB ``Subject`` fields (see :attr:`NwbContent.subject`).
    imaging_plane : dict, optional
        Known ``ImagingPlane`` fields (see :attr:`NwbContent.imaging_plane`).

    Returns
    -------
    Path or None
        The file, or None when it was skipped.

    Raises
    ------
    InputError
        An incomplete folder or one :func:`content_from_folder` cannot read.
    """
    import dataclasses

    from astro3s.inference.outputs import add_output, is_complete, own_output

    require_nwb()
    folder = Path(folder)
    name = nwb_name(folder)
    if not is_complete(folder, figures=False):
        raise InputError(folder, "is not a complete output folder of astro3s-infer (an interrupted run?).",
                         "run astro3s-infer on its movie again.")
    if not overwrite and own_output(folder, name):
        log.info("%s: %s exists, skipped (overwrite=true redoes it)", folder.name, name)
        return None
    content = dataclasses.replace(content_from_folder(folder, mean_image=mean_image), subject=dict(subject or {}),
                                  imaging_plane=dict(imaging_plane or {}))
    return add_output(folder, name, lambda path: write_nwb(path, content))
