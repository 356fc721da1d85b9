"""Where the Hydra configuration tree lives.

In a source checkout (including editable installs) the configs are the
top-level ``conf/`` folder; a wheel ships the same tree as ``astro3s/_conf``.
"""

from __future__ import annotations

from pathlib import Path

_PACKAGE_DIR = Path(__file__).resolve().parents[1]


def config_dir() -> Path:
    """Return the absolute path of the Hydra config folder."""
    for candidate in (_PACKAGE_DIR.parent / "conf", _PACKAGE_DIR / "_conf"):
        if (candidate / "paths").is_dir():
            return candidate
    raise FileNotFoundError(
        f"astro3s configuration folder not found next to {_PACKAGE_DIR}; reinstall astro3s."
    )


def _register_resolvers() -> None:
    # ${astro3s.resource:NAME} -> absolute path of a file shipped in astro3s/resources
    from omegaconf import OmegaConf

    from astro3s.resources import resource_path

    if not OmegaConf.has_resolver("astro3s.resource"):
        OmegaConf.register_new_resolver("astro3s.resource", lambda name: str(resource_path(name)))


CONFIG_DIR = str(config_dir())
_register_resolvers()
