"""Rendering a held-out scene into a ``uint16`` movie, a chunk of frames at a time.

Per chunk: background fields and object patches (trace x footprint matrix
products), vessel lumens and vignetting, rigid motion (bilinear shift and crop
of the canvas margin), bleaching, then PMT detection noise.
"""

from __future__ import annotations

import numpy as np

from astro3s.heldout.members import rng_for
from astro3s.heldout.optics import detect, shift_crop
from astro3s.heldout.scene import Scene

__all__ = ["clean_chunk", "render_movie"]

#: Frames rendered at a time; fixed, so that the noise stream is reproducible.
CHUNK_FRAMES = 50


def clean_chunk(scene: Scene, t0: int, t1: int) -> np.ndarray:
    """Noise-free fluorescence of frames ``t0:t1`` on the canvas (before motion).

    Returns
    -------
    frames : ndarray of float32, shape (t1 - t0, Hc, Wc)
    """
    n = t1 - t0
    hc, wc = scene.static.shape
    n_fields = scene.fields.shape[0]
    out = (scene.field_traces[:, t0:t1].T @ scene.fields.reshape(n_fields, -1)).reshape(n, hc, wc)
    out += scene.static
    for patch in scene.patches:  # loop over objects
        k, h, w = patch.footprints.shape
        out[:, patch.rows, patch.cols] += (patch.traces[:, t0:t1].T
                                           @ patch.footprints.reshape(k, -1)).reshape(n, h, w)
    out *= scene.transmission
    return out


def render_movie(scene: Scene, *, chunk_frames: int = CHUNK_FRAMES) -> np.ndarray:
    """Render the whole movie.

    Parameters
    ----------
    scene : Scene
    chunk_frames : int
        Frames per block (the noise depends on it; keep the default for
        reproducible movies).

    Returns
    -------
    movie : ndarray of uint16, shape (T, H, W)
    """
    T, H, W = scene.params.shape
    rng = rng_for(scene.params.seed, "noise")
    movie = np.empty((T, H, W), dtype=np.uint16)
    for t0 in range(0, T, chunk_frames):  # loop over chunks of frames
        t1 = min(t0 + chunk_frames, T)
        frames = shift_crop(clean_chunk(scene, t0, t1), scene.shifts[t0:t1], margin=scene.margin,
                            out_shape=(H, W))
        frames *= scene.bleach[t0:t1, None, None]
        movie[t0:t1] = detect(rng, frames, scene.detector)
    return movie
