"""``astro3s-preprocess``: ASTRA's pre-processing of one movie or a folder of movies.

Examples
--------
``astro3s-preprocess input=movie.tif out=pp/``
    writes ``pp/movie/preprocessed.npz`` and ``pp/movie/preprocessing.png``.
``astro3s-preprocess input=sim/ out=pp/ preprocess=d1_standin``
    every movie of a folder (simulator output folders included), fitted parameters.
``astro3s-preprocess input=... out=... params=checkpoints/params.yaml``
    parameters saved by ``astro3s.preprocess.save_params`` (beside a checkpoint).
"""

from __future__ import annotations

import logging
import time
from pathlib import Path

import hydra
from omegaconf import DictConfig

from astro3s.cli._config import CONFIG_DIR, to_plain
from astro3s.cli._task import end_startup, progress_setting, require, run_hydra_main, startup_without_gc, task_wrapper
from astro3s.errors import Astro3sError, ConfigError, InputError
from astro3s.io.discover import find_movies

log = logging.getLogger(__name__)

OUTPUT_NAME = "preprocessed.npz"
FIGURE_NAME = "preprocessing.png"


def output_folder(out: Path, movie_path: Path) -> Path:
    """``out/<movie stem>``."""
    stem = movie_path.name[: -len(movie_path.suffix)] if movie_path.suffix else movie_path.name
    return out / stem


def is_complete(folder: Path, *, figure: bool = True) -> bool:
    """Whether a movie's outputs are all there."""
    return (folder / OUTPUT_NAME).is_file() and (not figure or (folder / FIGURE_NAME).is_file())


def _params(cfg: DictConfig):
    from astro3s.preprocess import load_params
    from astro3s.preprocess.params import params_from_dict

    if cfg.get("params"):
        path = Path(str(cfg.params))
        log.info("parameters from %s", path)
        return load_params(path)
    if cfg.get("preprocess") is None:
        raise ConfigError("no `preprocess` parameter group: use preprocess=astra or params=FILE.yaml.")
    return params_from_dict(to_plain(cfg.preprocess))


def preprocess_one(movie_path: Path, folder: Path, params, *, fs: float | None = None, key: str | None = None,
                   channel: int | None = None, plane: int | None = None, figure: bool = True,
                   progress: bool | None = None) -> Path:
    """Pre-process one movie file into ``folder``; returns the ``.npz`` path (``progress``: its bar,
    None: on a terminal; ``key``, ``channel``, ``plane``: which array of the file, see
    :func:`astro3s.io.read_movie`)."""
    from astro3s.io import read_movie
    from astro3s.preprocess import plot_preprocessed, preprocess, save_preprocessed
    from astro3s.utils.device import resolve_device

    # what the pre-processing needs (SciPy, torch for the device) is imported by now: the garbage collector
    # goes back on (a no-op after the first movie, and outside astro3s-preprocess's start-up)
    resolve_device(params.device)
    end_startup()
    movie = read_movie(movie_path, key=key, fs=fs, channel=channel, plane=plane)
    try:
        result = preprocess(movie, params, progress=progress)
    finally:
        movie.close()
    npz = save_preprocessed(result, folder / OUTPUT_NAME)
    if figure:
        plot_preprocessed(result, folder / FIGURE_NAME)
    return npz


@task_wrapper
def preprocess_task(cfg: DictConfig) -> list[Path]:
    """Pre-process every movie of ``input`` into ``out``; returns the written ``.npz`` files.

    Movies are independent: one failing is logged and the others go on; the
    task exits non-zero at the end if any failed.
    """
    source = Path(str(require(cfg, "input", "give the movie or folder to pre-process as input=PATH.")))
    out = Path(str(cfg.out))
    params = _params(cfg)
    figure = bool(cfg.get("figure", True))
    movies = find_movies(source)
    log.info("%d movie(s) to pre-process into %s", len(movies), out)
    written, skipped, failed = [], [], []
    for movie_path in movies:  # loop over movies
        folder = output_folder(out, movie_path)
        if not cfg.get("overwrite", False) and is_complete(folder, figure=figure):
            log.info("%s: outputs exist in %s, skipped (overwrite=true to redo)", movie_path.name, folder)
            skipped.append(movie_path)
            continue
        start = time.perf_counter()
        try:
            written.append(preprocess_one(movie_path, folder, params, fs=cfg.get("fs"), key=cfg.get("key"),
                                          channel=cfg.get("channel"), plane=cfg.get("plane"),
                                          figure=figure, progress=progress_setting(cfg)))
            log.info("%s: done in %.1f s -> %s", movie_path.name, time.perf_counter() - start, folder)
        except Astro3sError as err:
            if len(movies) == 1:
                raise  # one movie: its own message is the clearest report
            log.error("%s: failed: %s", movie_path.name, err)
            failed.append((movie_path, str(err)))
        except Exception as err:  # keep going; the traceback goes to the log
            log.exception("%s: failed with an unexpected error", movie_path.name)
            failed.append((movie_path, f"{type(err).__name__}: {err}"))
    log.info("pre-processed %d, skipped %d, failed %d", len(written), len(skipped), len(failed))
    if failed:
        lines = "; ".join(f"{p.name}: {why}" for p, why in failed)
        raise InputError(None, f"{len(failed)} of {len(movies)} movie(s) failed: {lines}",
                         "see the log above; the other movies' outputs were written, and a rerun "
                         "skips them.")
    return written


@hydra.main(config_path=CONFIG_DIR, config_name="preprocess", version_base="1.3")
def _hydra_main(cfg: DictConfig) -> None:
    """The Hydra app of ``astro3s-preprocess`` (run by :func:`main`)."""
    preprocess_task(cfg)


def main() -> None:
    """Console entry point ``astro3s-preprocess``; a config typo is one line on stderr and exit code 2. The
    garbage collector is off until the modules are imported (:func:`astro3s.cli._task.startup_without_gc`)."""
    with startup_without_gc():
        return run_hydra_main(_hydra_main, "astro3s-preprocess")


if __name__ == "__main__":
    main()
