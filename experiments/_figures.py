"""Shared by the figure scripts (``make_*_figure.py``): a simulated movie and its truth, read into memory."""

from __future__ import annotations

import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np


@dataclass(frozen=True)
class SimulatedMovie:
    """A movie of the training simulator and its truth.

    Attributes
    ----------
    frames : ndarray of float32, shape (T, H, W)
    soma : ndarray of uint16, shape (H, W)
        The true somata's labels.
    shifts : ndarray of float64, shape (T, 2)
        The true motion, ``(dy, dx)`` per frame (``ground_truth/shifts.csv``).
    """

    frames: np.ndarray
    soma: np.ndarray
    shifts: np.ndarray

    def brightest_soma_box(self, half: int) -> tuple[slice, slice]:
        """A ``2 half`` px square around the brightest true soma of the mean image, inside the FOV."""
        mean = self.frames.mean(axis=0)
        ids = np.unique(self.soma[self.soma > 0])
        brightest = ids[int(np.argmax([mean[self.soma == i].mean() for i in ids]))]
        cy, cx = (int(v) for v in np.argwhere(self.soma == brightest).mean(axis=0))
        height, width = self.soma.shape
        y0 = min(max(0, cy - half), max(height - 2 * half, 0))
        x0 = min(max(0, cx - half), max(width - 2 * half, 0))
        return np.s_[y0:y0 + 2 * half, x0:x0 + 2 * half]


def simulated_movie(preset: str = "d1_like", seed: int = 0) -> SimulatedMovie:
    """Simulate ``preset`` with ``seed`` (written to a temporary folder, read back, the folder removed)."""
    from astro3s.io import read_labels, read_movie
    from astro3s.simulate import simulate_preset, write_simulation

    with tempfile.TemporaryDirectory() as tmp:
        folder = write_simulation(simulate_preset(preset, seed=seed), Path(tmp), overview=False)
        movie = read_movie(folder / f"{folder.name}.tif")
        try:
            frames = np.asarray(movie[:], np.float32)
        finally:
            movie.close()
        soma = read_labels(folder / "ground_truth" / "soma.tif")
        shifts = np.loadtxt(folder / "ground_truth" / "shifts.csv", delimiter=",", skiprows=1, ndmin=2)[:, 1:]
    return SimulatedMovie(frames, soma, shifts)


def image_row(fig, panels, *, vmin: float, vmax: float) -> list:
    """Grey images side by side across ``fig``, one axes each, titled, no ticks; returns the axes.

    ``panels``: ``(image, title)`` pairs, drawn on one grey scale ``[vmin, vmax]``.
    """
    step = 0.99 / len(panels)
    axes = []
    for k, (image, title) in enumerate(panels):
        ax = fig.add_axes((0.01 + k * step, 0.02, step - 0.02, 0.84))
        ax.imshow(image, cmap="gray", vmin=vmin, vmax=vmax, interpolation="nearest")
        ax.set_title(title, fontsize=9)
        ax.set_axis_off()
        axes.append(ax)
    return axes


def write_figure(fig, out: Path, *, dpi: float) -> None:
    """Save ``fig`` to ``out`` atomically (its folder made if need be) and say so."""
    from astro3s.correlation.figures import save_figure

    out.parent.mkdir(parents=True, exist_ok=True)
    save_figure(fig, out, dpi=dpi)
    print(f"wrote {out}")
