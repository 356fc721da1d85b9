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


CONFIG_DIR = str(config_dir())
