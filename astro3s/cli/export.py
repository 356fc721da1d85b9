"""``astro3s-export``: output folders written by ``astro3s-infer`` -> NWB files.

Examples
--------
``astro3s-export input=results format=nwb``
    ``results/<movie>/<movie>.nwb`` for every movie folder of ``results/``.
``astro3s-export input=results/movie format=nwb overwrite=true``
    one movie folder, its NWB file redone.

The extra ``astro3s[nwb]`` is checked before any folder is read. See
``conf/export.yaml`` for every option and :mod:`astro3s.io.nwb` for the layout.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import hydra
from omegaconf import DictConfig

from astro3s.cli._config import CONFIG_DIR, to_plain
from astro3s.errors import did_you_mean
from astro3s.cli._task import require, run_hydra_main, task_wrapper
from astro3s.errors import Astro3sError, ConfigError, InputError

log = logging.getLogger(__name__)

#: formats astro3s-export writes
FORMATS = ("nwb",)
_SUBJECT_KEYS = ("subject_id", "species", "sex", "age", "strain", "genotype", "weight", "description")


def output_folders(source: str | Path) -> list[Path]:
    """The movie output folders of ``source``: itself when it holds a ``summary.json``, else its subfolders that do.

    Raises
    ------
    InputError
        ``source`` missing, or holding no output folder.
    """
    from astro3s.inference.outputs import SUMMARY_NAME

    source = Path(source)
    if not source.is_dir():
        raise InputError(source, "not found (or not a folder).", "give the out= folder of astro3s-infer as input=.")
    if (source / SUMMARY_NAME).is_file():
        return [source]
    folders = sorted(p for p in source.iterdir() if p.is_dir() and not p.name.startswith(".")
                     and (p / SUMMARY_NAME).is_file())
    if not folders:
        raise InputError(source, f"holds no output folder of astro3s-infer (a folder with {SUMMARY_NAME}).",
                         "point input= at the out= folder of astro3s-infer or at one movie's folder in it.")
    return folders


def subject_fields(section: Any) -> dict[str, str]:
    """The ``subject`` config section as NWB ``Subject`` fields (nulls left out).

    Raises
    ------
    ConfigError
        An unknown key.
    """
    values = dict(to_plain(section) or {})
    unknown = sorted(set(values) - set(_SUBJECT_KEYS))
    if unknown:
        raise ConfigError(f"unknown option subject.{unknown[0]}{did_you_mean(unknown[0], _SUBJECT_KEYS, 'subject.')}; "
                          f"valid: {', '.join(_SUBJECT_KEYS)}.")
    return {key: str(value) for key, value in values.items() if value is not None}


def plane_fields(section: Any) -> dict[str, Any]:
    """The ``imaging_plane`` config section (nulls left out; wavelengths as numbers in nm).

    Raises
    ------
    ConfigError
        An unknown key or a wavelength that is not a positive number.
    """
    from astro3s.io.nwb import PLANE_FIELDS

    values = dict(to_plain(section) or {})
    unknown = sorted(set(values) - set(PLANE_FIELDS))
    if unknown:
        hint = did_you_mean(unknown[0], PLANE_FIELDS, "imaging_plane.")
        raise ConfigError(f"unknown option imaging_plane.{unknown[0]}{hint}; valid: {', '.join(PLANE_FIELDS)}.")
    out: dict[str, Any] = {}
    for key, value in values.items():
        if value is None:
            continue
        if key.endswith("_lambda"):
            try:
                value = float(value)
                if isinstance(values[key], bool) or not value > 0:
                    raise ValueError
            except (TypeError, ValueError):
                raise ConfigError(f"imaging_plane.{key}={values[key]!r} must be a wavelength in nm. "
                                  f"Fix: e.g. imaging_plane.{key}=920.") from None
        out[key] = value if key.endswith("_lambda") else str(value)
    return out


@task_wrapper
def export_task(cfg: DictConfig) -> list[Path]:
    """Export every output folder of ``input``; returns the files written (skipped ones left out).

    Exits non-zero (after trying the others) when any folder failed.
    """
    from astro3s.io.nwb import export_folder, require_nwb

    fmt = str(cfg.get("format", "nwb")).strip().lower()
    if fmt not in FORMATS:
        raise ConfigError(f"format={fmt!r} is not one astro3s-export writes; available: {', '.join(FORMATS)}. "
                          "Fix: format=nwb.")
    require_nwb()  # before anything is read or written
    subject = subject_fields(cfg.get("subject"))
    plane = plane_fields(cfg.get("imaging_plane"))
    folders = output_folders(str(require(cfg, "input", "give the out= folder of astro3s-infer as input=DIR.")))
    written, failed = [], []
    for folder in folders:  # one failure does not stop the others
        try:
            path = export_folder(folder, overwrite=bool(cfg.get("overwrite", False)),
                                 mean_image=bool(cfg.get("mean_image", True)), subject=subject,
                                 imaging_plane=plane)
        except Astro3sError as err:
            log.error("%s: %s", folder.name, err)
            failed.append(f"{folder.name}: {str(err).splitlines()[0]}")
            continue
        if path is not None:
            log.info("%s: wrote %s", folder.name, path)
            written.append(path)
    log.info("%d folder(s): %d written, %d skipped, %d failed", len(folders), len(written),
             len(folders) - len(written) - len(failed), len(failed))
    if failed:
        raise InputError(None, f"{len(failed)} of {len(folders)} folder(s) failed: {'; '.join(failed)}",
                         "see the log; the other folders were exported.")
    return written


@hydra.main(config_path=CONFIG_DIR, config_name="export", version_base="1.3")
def _hydra_main(cfg: DictConfig) -> None:
    export_task(cfg)


def main() -> None:
    """Console entry point ``astro3s-export``; a config typo is one line on stderr and exit code 2."""
    run_hydra_main(_hydra_main, "astro3s-export")


if __name__ == "__main__":
    main()
