"""``astro3s-simulate``: write synthetic astrocyte movies with ground truth.

Examples
--------
``astro3s-simulate simulate=d1_like out=sim/ n_movies=3 seed=0``
    three D1-like movies with seeds 0, 1, 2.
``astro3s-simulate simulate=d1_like layout=consensus/D1/RoiSet_SMALL_001.zip shape=[256,256]``
    a stand-in for a real annotated FOV (its cells, simulated activity).
``astro3s-simulate simulate=randomised widen=1.5 n_movies=100``
    domain-randomised training movies.
"""

from __future__ import annotations

import logging
import sys
from pathlib import Path

import hydra
from omegaconf import DictConfig

from astro3s.cli._config import CONFIG_DIR, to_plain, whole_number
from astro3s.cli._task import progress_setting, run_hydra_main, task_wrapper
from astro3s.errors import ConfigError

log = logging.getLogger(__name__)


@task_wrapper
def simulate_task(cfg: DictConfig) -> list[Path]:
    """Simulate ``n_movies`` movies from the ``simulate`` preset and write them under ``out``.

    Returns the movie folders.
    """
    from astro3s.simulate import (
        layout_from_roiset,
        ranges_from_config,
        simulate_preset,
        widen_ranges,
        write_simulation,
    )
    from astro3s.utils.progress import bar, logs_above_bars, show_bars

    ranges = ranges_from_config(to_plain(cfg.simulate))
    widen = float(cfg.get("widen", 1.0))
    ranges = widen_ranges(ranges, widen)
    n_movies = whole_number(cfg.get("n_movies", 1), "n_movies", minimum=1)
    seed0 = whole_number(cfg.get("seed", 0), "seed", minimum=0)
    out = Path(str(cfg.out))
    layout = None
    if cfg.get("layout"):
        shape = cfg.get("shape")
        if shape is None or len(shape) != 2:
            raise ConfigError("`layout=` needs the FOV size of the annotation: add shape=[H,W] "
                              "(D1 [256,256], D2/D4 [512,512], D3 [430,430]).")
        try:
            shape = tuple(whole_number(size, "shape", minimum=16) for size in shape)
        except ConfigError:
            raise ConfigError(f"shape={to_plain(shape)} must be [H,W], two whole numbers >= 16. "
                              "Fix: e.g. shape=[256,256].") from None
        layout = layout_from_roiset(str(cfg.layout), shape)
        if not layout.has_processes:
            log.info("%s is soma-only: processes are %s", layout.source.name,
                     "synthesised around the somata" if cfg.get("synthesise_processes", True)
                     else "left empty (cells have soma and territory only)")
    stream = cfg.get("stream")
    name = cfg.get("name")
    if name and n_movies > 1:
        raise ConfigError("`name=` names one movie; leave it out with n_movies > 1.")
    written = []
    seeds = range(seed0, seed0 + n_movies)
    # bars on a terminal, none with extras=quiet (extras.progress=false)
    progress = progress_setting(cfg)
    movies_bar = None if progress is not False and n_movies > 1 else False
    with logs_above_bars(progress):
        for seed in bar(seeds, progress=movies_bar, desc=f"simulate {ranges.preset}", unit="movie", leave=True):
            sim = simulate_preset(ranges, seed=seed, layout=layout,
                                  synthesise_processes=bool(cfg.get("synthesise_processes", True)),
                                  stream=None if stream is None else bool(stream), name=name)
            folder = write_simulation(sim, out, overview=bool(cfg.get("overview", True)),
                                      progress=show_bars(progress))
            log.info("%s: %d cells (%d dropped as inactive), %d frames of %dx%d at %.2f Hz -> %s",
                     sim.name, sim.n_cells, len(sim.truth.dropped), *sim.shape, sim.fs, folder)
            written.append(folder)
    return written


@hydra.main(config_path=CONFIG_DIR, config_name="simulate", version_base="1.3")
def _hydra_main(cfg: DictConfig) -> None:
    simulate_task(cfg)


def _check_preset_arg(argv: list[str]) -> None:
    # Hydra reports an unknown group option with a multi-line traceback-like
    # message; catch the common typo early with one clear line
    from astro3s.simulate.params import available_presets

    for arg in argv:
        if arg.startswith("simulate=") and "," not in arg:
            name = arg.split("=", 1)[1]
            if name not in available_presets():
                print(f"astro3s: error: unknown simulation preset {name!r}; choose one of "
                      f"{', '.join(available_presets())}.", file=sys.stderr)
                raise SystemExit(2)


def main() -> None:
    """Console-script entry point."""
    _check_preset_arg(sys.argv[1:])
    run_hydra_main(_hydra_main, "astro3s-simulate")


if __name__ == "__main__":
    main()
