"""Fields of view (FOVs) for training: a movie plus its ground truth, and where they come from.

A :class:`FOVSpec` names one movie and its annotation, either label images
(the simulator's ``ground_truth/soma.tif`` and ``processes.tif``) or an ImageJ
RoiSet zip with the FOV shape. A *source* is anything with a
``fovs() -> list[FOVSpec]`` method; the data module calls it in
``prepare_data`` (where sources may write files) and in ``setup``:

- :class:`FOVList` - FOVs given explicitly (dicts or specs);
- :class:`SyntheticFOVs` - ``n_fovs`` simulated movies of a preset, generated
  on first use under ``root/<preset>/`` and reused afterwards;
- :class:`StandinFOVs` - simulated movies on the cell layouts of real annotated
  FOVs (e.g. the D1 consensus RoiSets): stand-ins while the movies are missing;
- :class:`AnnotatedFOVs` - real movies ``movies_dir/<name>.tif`` matched by
  name to RoiSet zips;
- :class:`MixedFOVs` - the union of several of the above, each with its own
  pre-processing overrides (e.g. the default model's training mix).

Nothing here does work at import time.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import numpy as np

from astro3s.errors import ConfigError, InputError

log = logging.getLogger(__name__)

__all__ = ["AnnotatedFOVs", "FOVList", "FOVSource", "FOVSpec", "MixedFOVs", "StandinFOVs", "SyntheticFOVs",
           "as_source", "simulated_fov", "soma_area_range_of"]

MOVIE_SUFFIXES_TRIED = (".tif", ".tiff", ".btf", ".npy", ".h5", ".hdf5", ".zarr")


@dataclass(frozen=True)
class FOVSpec:
    """One annotated field of view.

    Attributes
    ----------
    name : str
        Unique name, used by the splits (``train: [...]`` etc.).
    movie : Path
        The movie file (any format :func:`astro3s.io.read_movie` reads).
    soma, processes : Path or None
        Label images ``(H, W)`` (ids 1..N, 0 background) of the somata and processes.
    roiset : Path or None
        An ImageJ RoiSet zip, used when the label images are not given.
    shape : (int, int) or None
        ``(H, W)`` of the FOV, needed to rasterise ``roiset``.
    preprocess : dict or None
        Pre-processing parameters of this FOV that differ from the data
        module's (e.g. its own ``soma_area_range``); None: none differ.
    """

    name: str
    movie: Path
    soma: Path | None = None
    processes: Path | None = None
    roiset: Path | None = None
    shape: tuple[int, int] | None = None
    preprocess: dict[str, Any] | None = field(default=None, hash=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "movie", Path(self.movie))
        for key in ("soma", "processes", "roiset"):
            value = getattr(self, key)
            if value is not None:
                object.__setattr__(self, key, Path(value))
        if self.shape is not None:
            object.__setattr__(self, "shape", (int(self.shape[0]), int(self.shape[1])))
        if self.soma is None and self.roiset is None:
            raise ConfigError(f"FOV {self.name!r}: give label images (soma=, processes=) or roiset= with shape=.")
        if self.soma is None and self.shape is None:
            raise ConfigError(f"FOV {self.name!r}: roiset= needs the FOV shape=[H, W].")

    @classmethod
    def from_mapping(cls, values: Mapping[str, Any] | FOVSpec) -> FOVSpec:
        """A spec from a dict such as ``{"name", "movie", "soma", "processes"}`` (or a spec)."""
        if isinstance(values, FOVSpec):
            return values
        values = dict(values)
        unknown = sorted(set(values) - {"name", "movie", "soma", "processes", "roiset", "shape", "preprocess"})
        if unknown:
            raise ConfigError(f"unknown FOV key(s) {', '.join(unknown)}; valid: name, movie, soma, processes, "
                              "roiset, shape, preprocess")
        if "movie" not in values:
            raise ConfigError(f"a FOV needs movie=PATH, got {values!r}")
        if "name" not in values:
            movie = Path(str(values["movie"]))
            values["name"] = movie.name[: -len(movie.suffix)] if movie.suffix else movie.name
        return cls(**values)

    def read_labels(self) -> tuple[np.ndarray, np.ndarray]:
        """Soma and process label images.

        Returns
        -------
        soma, processes : ndarray of uint16, shape (H, W)

        Raises
        ------
        InputError
            A file is missing or unreadable, or the two images differ in shape.
        """
        from astro3s.io import read_labels, read_roiset

        if self.soma is not None:
            soma = read_labels(self.soma)
            processes = read_labels(self.processes) if self.processes is not None else np.zeros_like(soma)
            if processes.shape != soma.shape:
                raise InputError(self.processes, f"shape {processes.shape} differs from the soma labels' "
                                 f"{soma.shape}.", "give the label images of the same FOV.")
            return soma, processes
        return read_roiset(self.roiset, self.shape)  # type: ignore[arg-type]


@runtime_checkable
class FOVSource(Protocol):
    """Anything that lists FOVs; ``fovs()`` may create files (it runs in ``prepare_data``)."""

    def fovs(self) -> list[FOVSpec]:
        """The FOVs, in a fixed order."""
        ...


class FOVList:
    """FOVs given explicitly.

    Parameters
    ----------
    fovs : sequence of FOVSpec or mapping or path
        Specs, dicts with the :class:`FOVSpec` fields, or simulator output
        folders ``<name>/`` (with ``<name>.tif`` and ``ground_truth/``).
    """

    def __init__(self, fovs: Sequence[FOVSpec | Mapping[str, Any] | str | Path]) -> None:
        self._fovs = [simulated_fov(f) if isinstance(f, str | Path) else FOVSpec.from_mapping(f) for f in fovs]

    def fovs(self) -> list[FOVSpec]:
        """The FOVs as given."""
        return list(self._fovs)


def simulated_fov(folder: str | Path) -> FOVSpec:
    """The spec of a simulator output folder ``<name>/<name>.tif`` + ``ground_truth/``.

    Raises
    ------
    InputError
        When the folder lacks the movie or the label images.
    """
    folder = Path(folder)
    movie = folder / f"{folder.name}.tif"
    gt = folder / "ground_truth"
    for path in (movie, gt / "soma.tif", gt / "processes.tif"):
        if not path.exists():
            raise InputError(path, "not found: not a simulator output folder.",
                             "give folders written by astro3s-simulate (or astro3s.simulate.write_simulation).")
    return FOVSpec(name=folder.name, movie=movie, soma=gt / "soma.tif", processes=gt / "processes.tif")


def _is_complete(folder: Path) -> bool:
    gt = folder / "ground_truth"
    return (folder / f"{folder.name}.tif").is_file() and (gt / "soma.tif").is_file() \
        and (gt / "processes.tif").is_file()


def _seeds(n_fovs: int, seeds: Sequence[int] | None, first_seed: int) -> list[int]:
    if seeds is not None:
        seeds = [int(s) for s in seeds]
        if len(seeds) < n_fovs:
            raise ConfigError(f"seeds lists {len(seeds)} seed(s) for n_fovs={n_fovs}; give at least n_fovs "
                              "seeds or leave seeds=null (seeds first_seed, first_seed+1, ...).")
        return seeds[:n_fovs]
    return list(range(int(first_seed), int(first_seed) + n_fovs))


class SyntheticFOVs:
    """``n_fovs`` simulated movies of a preset, generated on first use and reused.

    Parameters
    ----------
    preset : str
        A simulator preset (``tiny``, ``d1_like``, ... see ``conf/simulate/``).
    n_fovs : int
        Number of movies.
    root : str or Path
        Movies go to ``root/<preset>/<preset>_s<seed:04d>/``.
    seeds : sequence of int or None
        One seed per movie; None: ``first_seed, first_seed + 1, ...``.
    first_seed : int
    overview : bool
        Also write each movie's ``overview.png``.
    simulate : mapping, optional
        Simulator range overrides for every movie (e.g. ``{silent_labelled: 1}``), as
        :func:`astro3s.simulate.simulate_preset` takes them. Movies already written are
        reused as they are: give such a source a ``root`` of its own.

    Notes
    -----
    A folder that already holds a complete movie (movie + label images) is
    reused as is; incomplete ones are written again (the simulator writes
    folders atomically, so this only happens after a crash).
    """

    def __init__(self, *, preset: str, n_fovs: int, root: str | Path, seeds: Sequence[int] | None = None,
                 first_seed: int = 0, overview: bool = False, simulate: Mapping[str, Any] | None = None) -> None:
        if int(n_fovs) < 1:
            raise ConfigError(f"n_fovs must be at least 1, got {n_fovs}")
        self.preset = str(preset)
        self.simulate = _simulator_overrides(self.preset, simulate)
        self.n_fovs = int(n_fovs)
        self.root = Path(root)
        self.seeds = _seeds(self.n_fovs, seeds, first_seed)
        self.overview = bool(overview)

    def fovs(self) -> list[FOVSpec]:
        """Simulate the missing movies and return all FOVs in seed order."""
        out_dir = self.root / self.preset
        specs = []
        for seed in self.seeds:  # loop over movies
            folder = out_dir / f"{self.preset}_s{seed:04d}"
            if not _is_complete(folder):
                from astro3s.simulate import simulate_preset, write_simulation

                log.info("simulating %s (preset %s, seed %d)", folder, self.preset, seed)
                sim = simulate_preset(self.preset, seed=seed, name=folder.name, **self.simulate)
                write_simulation(sim, out_dir, overview=self.overview)
            specs.append(simulated_fov(folder))
        return specs


def _simulator_overrides(preset: str, values: Mapping[str, Any] | None) -> dict[str, Any]:
    """Simulator range overrides of a source, checked now by the simulator's own preset check
    (:func:`astro3s.simulate.params.load_preset`: names and values) rather than mid-run."""
    overrides = dict(values or {})
    if overrides:
        from astro3s.simulate.params import load_preset

        load_preset(preset, **overrides)
    return overrides


def _layout_zips(annotations: Path, n_fovs: int | None) -> list[Path]:
    if not annotations.is_dir():
        raise InputError(annotations, "annotation folder not found.",
                         "set paths.annotations_dir (or ASTRO3S_ANNOTATIONS) to the ASTRA annotations.")
    zips = sorted(annotations.glob("*.zip"))
    if not zips:
        raise InputError(annotations, "holds no RoiSet .zip file.", "point it at e.g. <annotations>/consensus/D1.")
    return zips if n_fovs is None else zips[: int(n_fovs)]


class StandinFOVs:
    """Simulated stand-ins of real annotated FOVs: their cell layouts, simulated activity.

    Parameters
    ----------
    annotations : str or Path
        Folder of RoiSet zips (e.g. ``<annotations_dir>/consensus/D1``), in name order.
    shape : (int, int)
        FOV ``(H, W)`` of the annotations (D1: 256 x 256).
    root : str or Path
        Movies go to ``root/<preset>_<zip stem>_s<seed:04d>/``.
    preset : str
        Simulator preset for everything but the layout (``d1_like``).
    n_fovs : int or None
        Use the first ``n_fovs`` zips (None: all).
    seed : int
        Seed of every stand-in (movies differ by their layouts).
    simulate : mapping, optional
        Simulator range overrides, as for :class:`SyntheticFOVs`.

    Notes
    -----
    The ground truth is the simulator's (the layout as rasterised for the
    movie), not the zip re-read, so that targets match the movie exactly.
    """

    def __init__(self, *, annotations: str | Path, shape: Sequence[int], root: str | Path, preset: str = "d1_like",
                 n_fovs: int | None = None, seed: int = 0, simulate: Mapping[str, Any] | None = None) -> None:
        self.annotations = Path(annotations)
        self.shape = (int(shape[0]), int(shape[1]))
        self.root = Path(root)
        self.preset = str(preset)
        self.simulate = _simulator_overrides(self.preset, simulate)
        self.n_fovs = None if n_fovs is None else int(n_fovs)
        if self.n_fovs is not None and self.n_fovs < 1:
            raise ConfigError(f"n_fovs must be at least 1 or null (all), got {n_fovs}")
        self.seed = int(seed)

    def fovs(self) -> list[FOVSpec]:
        """Simulate the missing stand-ins and return them in zip-name order."""
        specs = []
        for zip_path in _layout_zips(self.annotations, self.n_fovs):  # loop over layouts
            folder = self.root / f"{self.preset}_{zip_path.stem}_s{self.seed:04d}"
            if not _is_complete(folder):
                from astro3s.simulate import simulate_preset, write_simulation

                log.info("simulating stand-in %s on %s", folder.name, zip_path.name)
                sim = simulate_preset(self.preset, seed=self.seed, layout=zip_path, shape=self.shape,
                                      name=folder.name, **self.simulate)
                write_simulation(sim, self.root, overview=False)
            specs.append(simulated_fov(folder))
        return specs


class AnnotatedFOVs:
    """Real movies matched by name to RoiSet annotations.

    Parameters
    ----------
    movies_dir : str or Path
        Folder with the movies, ``<name>.tif`` (or another movie suffix).
    annotations : str or Path
        Folder of RoiSet zips. The movie of ``RoiSet_SMALL_001.zip`` is
        ``RoiSet_SMALL_001.<ext>`` or ``SMALL_001.<ext>`` (the ``RoiSet_``
        prefix dropped).
    shape : (int, int)
        FOV ``(H, W)``.
    n_fovs : int or None
        Use the first ``n_fovs`` annotations (None: all).
    dataset : str
        Name used in the messages (e.g. ``D1``).

    Raises
    ------
    InputError
        From :meth:`fovs`, when the movie folder is missing or an annotation
        has no movie; the message says where to put the movies.
    """

    def __init__(self, *, movies_dir: str | Path, annotations: str | Path, shape: Sequence[int],
                 n_fovs: int | None = None, dataset: str = "") -> None:
        self.movies_dir = Path(movies_dir)
        self.annotations = Path(annotations)
        self.shape = (int(shape[0]), int(shape[1]))
        self.n_fovs = None if n_fovs is None else int(n_fovs)
        self.dataset = dataset or self.movies_dir.name

    def _missing(self, what: str) -> InputError:
        standin = f"data={self.dataset.lower()}_standin" if self.dataset else "data=d1_standin"
        return InputError(self.movies_dir, what,
                          f"put the {self.dataset} movies there as <name>.tif, named like the annotation zips "
                          f"in {self.annotations} (RoiSet_SMALL_001.tif or SMALL_001.tif), or set "
                          f"paths.data_dir; to train without them use {standin} (simulated stand-ins on the "
                          "same annotated layouts).")

    def fovs(self) -> list[FOVSpec]:
        """The FOVs whose movie and annotation are both present, in annotation-name order."""
        if not self.movies_dir.is_dir():
            raise self._missing(f"{self.dataset} movie folder not found.")
        zips = _layout_zips(self.annotations, self.n_fovs)
        specs, missing = [], []
        for zip_path in zips:  # loop over annotations
            stems = [zip_path.stem]
            if zip_path.stem.lower().startswith("roiset_"):
                stems.append(zip_path.stem[len("roiset_"):])
            found = [self.movies_dir / f"{stem}{ext}" for stem in stems for ext in MOVIE_SUFFIXES_TRIED
                     if (self.movies_dir / f"{stem}{ext}").exists()]
            if not found:
                missing.append(zip_path.stem)
                continue
            specs.append(FOVSpec(name=zip_path.stem, movie=found[0], roiset=zip_path, shape=self.shape))
        if missing:
            shown = ", ".join(missing[:5]) + (f" and {len(missing) - 5} more" if len(missing) > 5 else "")
            raise self._missing(f"no movie for {len(missing)} of {len(zips)} annotation(s): {shown}.")
        return specs


def as_source(fovs: FOVSource | Sequence[Any]) -> FOVSource:
    """A source from a source, or from a list of specs / dicts / simulator folders."""
    if isinstance(fovs, FOVSource):
        return fovs
    if isinstance(fovs, str | Path | Mapping):
        fovs = [fovs]
    try:
        items = list(fovs)
    except TypeError:
        raise ConfigError(f"fovs must be a FOV source or a list of FOVs, got {type(fovs).__name__}") from None
    return FOVList(items)


def soma_area_range_of(spec: FOVSpec, *, margin: float = 0.1) -> tuple[float, float]:
    """Smallest and largest soma area of a FOV's ground truth, widened by ``margin``.

    Used to pre-process training FOVs of very different cell sizes with their
    own soma scale, as ASTRA fits it per dataset.

    Returns
    -------
    (float, float)
        ``((1 - margin) * min, (1 + margin) * max)`` in px.
    """
    soma, _ = spec.read_labels()
    areas = np.bincount(soma.ravel().astype(np.int64))[1:]
    areas = areas[areas > 0]
    if areas.size == 0:
        raise InputError(spec.soma or spec.roiset, "has no soma.", "give a FOV with annotated cells.")
    return (round(float(areas.min()) * (1 - margin), 1), round(float(areas.max()) * (1 + margin), 1))


_SOURCE_KINDS = {"synthetic": SyntheticFOVs, "standin": StandinFOVs, "annotated": AnnotatedFOVs}


class MixedFOVs:
    """The union of several sources, each with its own pre-processing overrides.

    Parameters
    ----------
    sources : sequence of mapping
        One mapping per source: ``kind`` (``synthetic``, ``standin`` or
        ``annotated``), the keyword arguments of that source's class, and
        optionally ``preprocess`` (a mapping of
        :class:`~astro3s.preprocess.PreprocessParams` fields for its FOVs) and
        ``soma_area: truth`` (each FOV's ``soma_area_range`` from its own
        ground truth, see :func:`soma_area_range_of`).
    root : str or Path, optional
        Default ``root`` of the synthetic and stand-in sources that give none.

    Raises
    ------
    ConfigError
        Unknown kind or option, or two sources giving FOVs of the same name.
    """

    def __init__(self, sources: Sequence[Mapping[str, Any]], *, root: str | Path | None = None) -> None:
        if not sources:
            raise ConfigError("MixedFOVs needs at least one source")
        self.sources: list[tuple[Any, dict[str, Any] | None, bool]] = []
        for i, item in enumerate(sources):  # loop over the source configs
            item = dict(item)
            kind = item.pop("kind", None)
            if kind not in _SOURCE_KINDS:
                raise ConfigError(f"sources[{i}].kind must be one of {', '.join(_SOURCE_KINDS)}, got {kind!r}")
            overrides = item.pop("preprocess", None)
            soma_area = item.pop("soma_area", None)
            if soma_area not in (None, "truth"):
                raise ConfigError(f"sources[{i}].soma_area must be null or 'truth', got {soma_area!r}")
            if root is not None and kind != "annotated":
                item.setdefault("root", root)
            try:
                source = _SOURCE_KINDS[kind](**item)
            except TypeError as err:
                raise ConfigError(f"sources[{i}] ({kind}): {err}") from None
            self.sources.append((source, None if overrides is None else dict(overrides), soma_area == "truth"))

    def fovs(self) -> list[FOVSpec]:
        """Every source's FOVs, in source order, with their pre-processing overrides."""
        from dataclasses import replace

        specs: list[FOVSpec] = []
        seen: set[str] = set()
        for source, overrides, from_truth in self.sources:  # loop over sources
            for spec in source.fovs():
                if spec.name in seen:
                    raise ConfigError(f"two sources give a FOV named {spec.name!r}: use different seeds or roots")
                seen.add(spec.name)
                values = dict(overrides or {})
                if from_truth:
                    values["soma_area_range"] = list(soma_area_range_of(spec))
                specs.append(replace(spec, preprocess=values or None))
        return specs
