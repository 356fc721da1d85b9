"""Regenerate ``docs/images/napari.png``: the astro3s napari plugin on a simulated D1-like movie.

::

    xvfb-run -a -s "-screen 0 1600x1000x24" python scripts/napari_screenshot.py   # a machine without a display
    python scripts/napari_screenshot.py                                            # with a display

What it does: simulates the ``d1_like`` preset (seed 0) in a temporary folder,
opens the movie in napari with the astro3s reader, runs the *Find astrocytes*
widget (bundled default model) and waits for it, hides the movie (its mean
image and the ``domains``/``processes``/``soma`` layers stay), selects the
``soma`` layer and saves a screenshot of the whole window as an indexed-colour
PNG (about 100 KB). Needs the extra (``pip install "astro3s[napari]"``); about a
minute on 2 CPU cores.

napari draws with OpenGL. Qt's ``offscreen`` platform gives no OpenGL context
without an X server (napari fails when the first layer is added), and under
Xvfb it renders the canvas black; Qt's ``xcb`` platform under Xvfb, with mesa's
software renderer (llvmpipe), draws it. On Debian/Ubuntu that needs
``apt-get install xvfb libxcb-icccm4 libxcb-image0 libxcb-keysyms1 libxcb-randr0
libxcb-render-util0 libxcb-xinerama0 libxcb-xkb1 libxkbcommon-x11-0 libxcb-shape0
libxcb-cursor0``.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

import numpy as np

OUT = Path(__file__).resolve().parent.parent / "docs" / "images" / "napari.png"
_TIMEOUT_S = 600


def _simulated_movie(folder: Path, seed: int) -> Path:
    """A d1_like movie written to ``folder`` (its ground truth beside it)."""
    from astro3s.simulate import simulate_preset, write_simulation

    sim = simulate_preset("d1_like", seed=seed, name="d1_like")
    written = write_simulation(sim, folder, overview=False)
    return written / f"{written.name}.tif"


def _wait_for(widget, app) -> None:
    """Process Qt events until the widget's run ends (the worker reports through the event loop)."""
    start = time.monotonic()
    while widget.running:
        if time.monotonic() - start > _TIMEOUT_S:
            raise SystemExit(f"no result after {_TIMEOUT_S} s: {widget.status.text()}")
        app.processEvents()
        time.sleep(0.05)


def _save_png(rgba: np.ndarray, path: Path) -> Path:
    """An indexed-colour PNG: a window of flat colours and a grey image fits 256 colours with no visible loss."""
    from PIL import Image

    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.ascontiguousarray(rgba[..., :3])).quantize(colors=256, dither=Image.Dither.NONE).save(
        path, optimize=True)
    return path


def screenshot(out: Path, seed: int = 0, size: tuple[int, int] = (1400, 860)) -> Path:
    """Simulate, find the cells with the widget, and save the screenshot at ``out``."""
    import napari
    from napari.settings import get_settings
    from qtpy.QtWidgets import QApplication

    settings = get_settings(None)  # default settings, in memory: the picture does not depend on the user's
    settings.application.gui_notification_level = "error"  # no warning toast over the canvas
    work = Path(tempfile.mkdtemp(prefix="astro3s-"))
    movie = _simulated_movie(work, seed)
    viewer = napari.Viewer(title="astro3s", show=True)
    viewer.window.resize(*size)
    viewer.open(movie, plugin="astro3s")
    _, widget = viewer.window.add_plugin_dock_widget("astro3s", "Find astrocytes")
    widget.figures.setChecked(False)
    widget.run()
    app = QApplication.instance()
    _wait_for(widget, app)
    if widget.last_output is None:
        raise SystemExit(f"the run did not finish: {widget.status.text()}")
    viewer.layers[movie.stem].visible = False
    viewer.layers.selection.active = viewer.layers["soma"]
    viewer.reset_view()
    for _ in range(20):  # let the canvas and the docks settle
        app.processEvents()
        time.sleep(0.05)
    image = viewer.screenshot(canvas_only=False, flash=False)
    viewer.close()
    return _save_png(image, out)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", type=Path, default=OUT, help=f"PNG to write (default {OUT})")
    parser.add_argument("--seed", type=int, default=0, help="seed of the simulated movie")
    args = parser.parse_args(argv)
    os.environ.setdefault("WANDB_MODE", "disabled")
    path = screenshot(args.out, seed=args.seed)
    print(f"wrote {path} ({path.stat().st_size // 1024} KB)")


if __name__ == "__main__":
    main()
