"""How astro3s fares when the same movies reach it the way other set-ups and pipelines deliver them.

Each held-out movie (one index of every member of ``python -m astro3s.heldout``)
is transformed as another microscope, acquisition or export would give it:
another gain or offset, another integer type, saturation, transposition,
another frame rate, line jitter, hot pixels, bleaching, a non-square FOV, or
each pixel's baseline subtracted (dF, dF/F0). The truth follows the spatial
transforms. A method that generalises scores about the same on every row;
a row that falls names a failure of the method, not of the movie (every
transform keeps the cells visible to a person looking at the right image).

    python experiments/evaluate_robustness.py --family data/heldout_family --index 0 \\
        --scratch /tmp/robustness --out experiments/results/robustness.md

Writes the transformed movies under ``--scratch`` (reused when present; ~40 MB a
transform for 13 movies), a Markdown table and ``<out>.json``. ~1 min a transform
on 2 cores.
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
import sys
from collections.abc import Callable
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from evaluate_model import _read_truth, _score_group, heldout_members  # noqa: E402

log = logging.getLogger("evaluate_robustness")

Truth = tuple[np.ndarray, ...]
Transform = Callable[[np.ndarray, float, Truth], tuple[np.ndarray, float, Truth]]


def _float(movie: np.ndarray) -> np.ndarray:
    return movie.astype(np.float32)


def identity(movie, fs, truth):
    """The movie as written (uint16)."""
    return movie, fs, truth


def as_float32(movie, fs, truth):
    """The same values as float32."""
    return _float(movie), fs, truth


def gain_high(movie, fs, truth):
    """Every value x 37 (float32): another detector gain."""
    return _float(movie) * np.float32(37.0), fs, truth


def gain_low(movie, fs, truth):
    """Every value x 0.013 (float32): values around 1."""
    return _float(movie) * np.float32(0.013), fs, truth


def imagej_offset(movie, fs, truth):
    """int16 with 32768 subtracted (ImageJ's signed 16-bit export)."""
    return (movie.astype(np.int32) - 32768).astype(np.int16), fs, truth


def uint8(movie, fs, truth):
    """Rescaled to 0-255 between the 0.1st and 99.9th percentiles, rounded to uint8."""
    low, high = np.percentile(movie[::7], [0.1, 99.9])
    scaled = (_float(movie) - low) / (high - low) * 255
    return np.clip(scaled, 0, 255).round().astype(np.uint8), fs, truth


def saturated(movie, fs, truth):
    """Clipped at the 99th percentile (a detector at its ceiling)."""
    return np.minimum(movie, np.percentile(movie[::7], 99.0)).astype(movie.dtype), fs, truth


def transposed(movie, fs, truth):
    """Rows and columns swapped."""
    return (np.ascontiguousarray(movie.transpose(0, 2, 1)), fs,
            tuple(np.ascontiguousarray(t.T) for t in truth))


def flipped(movie, fs, truth):
    """Upside down."""
    return np.ascontiguousarray(movie[:, ::-1]), fs, tuple(np.ascontiguousarray(t[::-1]) for t in truth)


def half_rate(movie, fs, truth):
    """Consecutive frames averaged in pairs: half the frame rate, half the frames."""
    n = len(movie) // 2 * 2
    return (_float(movie[:n:2]) + _float(movie[1:n:2])) / 2, fs / 2, truth


def double_rate(movie, fs, truth):
    """Each frame twice, with fresh Poisson-like noise: twice the frame rate."""
    rng = np.random.default_rng(0)
    frames = np.repeat(_float(movie), 2, axis=0)
    frames += rng.normal(0, 1, frames.shape).astype(np.float32) * np.sqrt(np.maximum(frames, 1))
    return frames, fs * 2, truth


def line_jitter(movie, fs, truth):
    """A random offset per line and frame (0.3 of the movie's SD): resonant-scanner line noise."""
    rng = np.random.default_rng(1)
    frames = _float(movie)
    frames += rng.normal(0, 0.3 * float(np.std(frames[::11])), (*frames.shape[:2], 1)).astype(np.float32)
    return frames, fs, truth


def hot_pixels(movie, fs, truth):
    """40 pixels stuck at the type's maximum."""
    rng = np.random.default_rng(2)
    frames = movie.copy()
    ys, xs = rng.integers(0, frames.shape[1], 40), rng.integers(0, frames.shape[2], 40)
    frames[:, ys, xs] = np.iinfo(frames.dtype).max
    return frames, fs, truth


def bleaching(movie, fs, truth):
    """Brightness falling to 40 % + 60 % exp(-3 t / T) (both signal and noise scaled)."""
    t = np.arange(len(movie), dtype=np.float32) / len(movie)
    return _float(movie) * (0.4 + 0.6 * np.exp(-3 * t))[:, None, None], fs, truth


def wide_crop(movie, fs, truth):
    """The middle half of the rows: a FOV twice as wide as high."""
    a = movie.shape[1] // 4
    b = a + movie.shape[1] // 2
    return np.ascontiguousarray(movie[:, a:b]), fs, tuple(np.ascontiguousarray(t[a:b]) for t in truth)


def vignetting(movie, fs, truth):
    """Brightness falling from the centre to 40 % in the corners (uneven illumination and collection)."""
    height, width = movie.shape[1:]
    yy, xx = np.mgrid[:height, :width]
    r2 = ((yy - (height - 1) / 2) / (height / 2)) ** 2 + ((xx - (width - 1) / 2) / (width / 2)) ** 2
    return _float(movie) * (1 - 0.3 * r2).astype(np.float32), fs, truth


def bidirectional_offset(movie, fs, truth):
    """Every other line moved 1 px sideways (a bidirectional resonant scan out of phase)."""
    frames = _float(movie)
    frames[:, 1::2] = np.roll(frames[:, 1::2], 1, axis=2)
    return frames, fs, truth


def bidirectional_subpixel(movie, fs, truth):
    """Every other line moved 2.6 px sideways, a band-limited (Fourier) shift: a larger phase error."""
    frames = _float(movie)
    phase = np.exp(-2j * np.pi * np.fft.rfftfreq(frames.shape[2]) * 2.6).astype(np.complex64)
    frames[:, 1::2] = np.fft.irfft(np.fft.rfft(frames[:, 1::2], axis=2) * phase, n=frames.shape[2], axis=2)
    return np.maximum(frames, 0), fs, truth


def flicker(movie, fs, truth):
    """Each frame's brightness x (1 + 0.1 N(0, 1)): laser power fluctuating."""
    rng = np.random.default_rng(4)
    gain = 1 + 0.1 * rng.normal(size=(len(movie), 1, 1))
    return _float(movie) * gain.astype(np.float32), fs, truth


def zoom_in(movie, fs, truth):
    """Resampled 1.5x larger (linear; truth by nearest label): a higher zoom of the same tissue."""
    from scipy import ndimage

    frames = ndimage.zoom(_float(movie), (1, 1.5, 1.5), order=1)
    return frames, fs, tuple(ndimage.zoom(t, 1.5, order=0) for t in truth)


def motion_jitter(movie, fs, truth):
    """Each frame moved by a random sub-pixel shift (SD 1.5 px per axis, Fourier shift): an awake animal."""
    rng = np.random.default_rng(3)
    frames = _float(movie)
    shifts = rng.normal(0, 1.5, (len(frames), 2))
    spectra = np.fft.rfft2(frames)
    ky = np.fft.fftfreq(frames.shape[1])[:, None]
    kx = np.fft.rfftfreq(frames.shape[2])[None, :]
    for t in range(0, len(frames), 64):  # blocks of frames (bounded memory), each vectorised
        dy, dx = shifts[t:t + 64, 0, None, None], shifts[t:t + 64, 1, None, None]
        spectra[t:t + 64] *= np.exp(-2j * np.pi * (ky * dy + kx * dx))
    moved = np.fft.irfft2(spectra, s=frames.shape[1:]).astype(np.float32)
    return np.clip(moved, 0, None), fs, truth


def _with_noise(frames: np.ndarray, times_shot_noise: float, seed: int) -> np.ndarray:
    """``frames`` (float32, changed in place) plus Gaussian noise of SD ``times_shot_noise`` x sqrt(value)."""
    rng = np.random.default_rng(seed)
    for t in range(0, len(frames), 64):  # blocks of frames (bounded memory)
        block = frames[t:t + 64]
        block += times_shot_noise * np.sqrt(np.maximum(block, 1)) * rng.normal(size=block.shape).astype(np.float32)
    return frames


def _drifted(frames: np.ndarray) -> np.ndarray:
    """``frames`` (float32, changed in place) moved along a slow drift of +-4 px (Fourier shift)."""
    t = np.arange(len(frames), dtype=np.float64)
    shifts = np.stack([4 * np.sin(2 * np.pi * t / 160), 3 * np.cos(2 * np.pi * t / 110)], 1)
    ky = np.fft.fftfreq(frames.shape[1])[:, None]
    kx = np.fft.rfftfreq(frames.shape[2])[None, :]
    for a in range(0, len(frames), 64):  # blocks of frames (bounded memory), each vectorised
        dy, dx = shifts[a:a + 64, 0, None, None], shifts[a:a + 64, 1, None, None]
        spectra = np.fft.rfft2(frames[a:a + 64]) * np.exp(-2j * np.pi * (ky * dy + kx * dx))
        frames[a:a + 64] = np.fft.irfft2(spectra, s=frames.shape[1:])
    return np.clip(frames, 0, None, out=frames)  # the truth sits near the movie's mean position


def dim_light(movie, fs, truth):
    """Noise of SD 3x the shot noise of the values read as photon counts added to every frame: a tenth of the light."""
    return _with_noise(_float(movie), 3.0, 5), fs, truth


def dim_light_drift(movie, fs, truth):
    """dim_light, with a slow drift of +-4 px (Fourier shift) under it."""
    return _with_noise(_drifted(_float(movie)), 3.0, 5), fs, truth


def dark_drift(movie, fs, truth):
    """A slow drift of +-4 px under noise of SD 10x the shot noise (a hundredth of the light)."""
    return _with_noise(_drifted(_float(movie)), 10.0, 6), fs, truth


def delta_f(movie, fs, truth):
    """dF: each pixel's temporal median subtracted (float32; a "processed" export)."""
    frames = _float(movie)
    return frames - np.median(frames[::5], axis=0), fs, truth


def delta_f_over_f(movie, fs, truth):
    """dF/F0 with F0 each pixel's 20th percentile + 1 (float32)."""
    frames = _float(movie)
    f0 = np.percentile(frames[::5], 20, axis=0) + 1
    return (frames - f0) / f0, fs, truth


TRANSFORMS: dict[str, Transform] = {f.__name__: f for f in (
    identity, as_float32, gain_high, gain_low, imagej_offset, uint8, saturated, transposed, flipped, half_rate,
    double_rate, line_jitter, hot_pixels, bleaching, wide_crop, motion_jitter, vignetting, bidirectional_offset,
    bidirectional_subpixel, flicker, zoom_in, delta_f, delta_f_over_f, dim_light, dim_light_drift, dark_drift)}


def transformed_folder(folder: Path, name: str, scratch: Path) -> Path:
    """``scratch/name/<movie>/`` with the transformed movie and truth (made once)."""
    import tifffile

    from astro3s.io import read_movie, write_movie

    target = scratch / name / folder.name
    movie_path = target / f"{folder.name}.tif"
    if movie_path.exists():
        return target
    source = read_movie(folder / f"{folder.name}.tif")
    try:
        movie, fs = np.asarray(source[:]), source.fs
    finally:
        source.close()
    frames, fs, truth = TRANSFORMS[name](movie, fs, _read_truth(folder))
    (target / "ground_truth").mkdir(parents=True, exist_ok=True)
    for labels, file in zip(truth, ("soma.tif", "processes.tif", "processes_thin.tif"), strict=True):
        tifffile.imwrite(target / "ground_truth" / file, labels)
    write_movie(movie_path, frames, fs=fs)  # last: a folder with its movie is complete
    return target


def _table(results: dict) -> str:
    head = ("| transform | what it does | detection P | detection R | detection F1 | soma F1 | process F1 | "
            "cells found / true |\n|---|---|---|---|---|---|---|---|\n")
    rows = []
    for name, entry in results.items():
        p = entry["pooled"]
        cells = f"{sum(m['n_cells'] for m in entry['movies'])} / {sum(m['n_gt'] for m in entry['movies'])}"
        figures = " | ".join("–" if p.get(k) is None else f"{p[k]:.3f}" for k in (
            "detection_precision", "detection_recall", "detection_f1", "soma_f1", "process_f1"))
        rows.append(f"| `{name}` | {TRANSFORMS[name].__doc__} | {figures} | {cells} |")
    return head + "\n".join(rows) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--family", type=Path, default=Path("data/heldout_family"))
    parser.add_argument("--index", type=int, nargs="+", default=[0],
                        help="movie index (or indices) of every member (default 0)")
    parser.add_argument("--morphology-image", choices=("auto", "median"), default="auto",
                        help="median: the pre-processing before dF movies were recognised (for comparison)")
    parser.add_argument("--clip-dim-background", action="store_true",
                        help="ASTRA's clip at 0 alone, no lift of a dim illumination fall-off (for comparison)")
    parser.add_argument("--keep-line-offset", action="store_true",
                        help="a bidirectional scan's odd rows as stored, not put back (preprocess.line_correction="
                             "false; for comparison)")
    parser.add_argument("--frame-by-frame-registration", action="store_true",
                        help="every frame registered on its own, whatever its noise (preprocess.register_noisy_frames="
                             "false; the method before 2026-12-06, tenth session; for comparison)")
    parser.add_argument("--scratch", type=Path, required=True, help="folder for the transformed movies")
    parser.add_argument("--out", type=Path, required=True, help="Markdown table (JSON beside it)")
    parser.add_argument("--transforms", nargs="*", choices=sorted(TRANSFORMS), default=list(TRANSFORMS))
    parser.add_argument("--save-segmentations", type=Path, default=None, metavar="DIR",
                        help="also write each movie's segmentation and truth to DIR/<transform>/<movie>.npz "
                             "(experiments/compare_segmentations.py compares two such folders)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")

    from astro3s.inference import load_inference_model

    suffixes = tuple(f"_{i}" for i in args.index)
    folders = [f for member in heldout_members(args.family).values() for f in member if f.name.endswith(suffixes)]
    if not folders:
        raise SystemExit(f"no movie with index {args.index} in {args.family}: make the family with "
                         "python -m astro3s.heldout --out DIR")
    model, options = load_inference_model("default", soma_scale="auto", figures=False)
    preprocess = options.preprocess.replace(morphology_image=args.morphology_image,
                                            lift_dim_background=not args.clip_dim_background,
                                            line_correction=not args.keep_line_offset,
                                            register_noisy_frames=not args.frame_by_frame_registration)
    options = dataclasses.replace(options, preprocess=preprocess)
    results = {}
    for name in args.transforms:  # loop over transforms
        entry = _score_group(model, options, [transformed_folder(f, name, args.scratch) for f in folders],
                             save_dir=None if args.save_segmentations is None else args.save_segmentations / name)
        results[name] = {"pooled": entry["pooled"], "movies": [
            {k: m[k] for k in ("name", "n_cells", "n_gt", "detection_f1", "soma_f1", "process_f1")}
            for m in entry["movies"]]}
        log.info("%s: detection F1 %.3f", name, entry["pooled"]["detection_f1"])
    indices = " ".join(str(i) for i in args.index)
    command = (f"python experiments/evaluate_robustness.py --family {args.family} --index {indices} "
               + ("" if args.morphology_image == "auto" else f"--morphology-image {args.morphology_image} ")
               + ("--clip-dim-background " if args.clip_dim_background else "")
               + ("--keep-line-offset " if args.keep_line_offset else "")
               + ("--frame-by-frame-registration " if args.frame_by_frame_registration else "")
               + f"--scratch DIR --out {args.out}")
    header = (f"# The held-out movies as other set-ups deliver them\n\nGenerated by `{command}`: the movies of "
              f"index {indices} of every member of the held-out family ({len(folders)} movies), each transformed "
              "as the row says, scored by the bundled model (soma scale `auto`) against the truth (moved with the "
              "spatial transforms). Pooled ASTRA scores; process F1 against annotator-width processes.\n\n")
    from astro3s.io import write_json, write_text

    write_text(args.out, header + _table(results))
    write_json(args.out.with_suffix(".json"), results, indent=1)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
