"""Members of the held-out family: one recipe (ranges) per member, sampled per movie.

A movie is identified by ``(member, index)``; its seed is
``SEED_BASE + 1000 * position_of_member + index`` (900_000 and up, far from
the training seeds < 100_000 and the old evaluation seeds 5000+), and every
random draw of the movie derives from that seed, so a movie is reproducible
from its name alone.
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass, field

import numpy as np

__all__ = [
    "MEMBERS",
    "MEMBER_ORDER",
    "SEED_BASE",
    "MemberRecipe",
    "draw_params",
    "MovieParams",
    "member_seed",
    "movie_name",
    "rng_for",
    "sample_params",
]

SEED_BASE = 900_000

Range = tuple[float, float]
Count = tuple[int, int]


@dataclass(frozen=True)
class MemberRecipe:
    """Ranges from which the movies of one member are drawn.

    Attributes
    ----------
    name : str
    description : str
    sizes : tuple of int
        FOV side lengths to choose from (square FOVs).
    n_frames : int
    n_cells : (int, int)
        True (labelled) astrocytes whose soma lies fully in the FOV.
    soma_area : (float, float)
        Soma area range (px), log-uniform.
    fs : (float, float)
        Frame rate range (Hz), log-uniform.
    photons : (float, float)
        Photons per frame of a resting soma pixel, log-uniform.
    psf_fwhm : (float, float)
        PSF FWHM range (px).
    n_cut, n_outside : (int, int)
        Labelled cells whose soma is cut by the FOV border; unlabelled cells
        whose soma centre is outside the FOV but whose processes reach in.
    n_out_of_focus, n_blobs, n_neurons, n_vessels : (int, int)
        Distractors (never labelled).
    min_spacing : float
        Smallest centre distance between astrocytes, in units of the sum of
        their soma radii.
    p_motion : float
        Probability that the movie has rigid motion.
    process_reach : (float, float)
        Range of a primary process's reach from the soma centre, in soma radii.
    annotation : {"area", "trunks"}
        How the processes are annotated (see
        :func:`~astro3s.heldout.morphology.build_astrocyte`).
    noise_correlation : (float, float)
        Range of the spatially correlated fraction of the detector noise
        (:class:`~astro3s.heldout.optics.Detector`); (0, 0): white noise, and
        no draw (the other members' random streams are unchanged).
    dim_fraction : (float, float)
        Range of the fraction of labelled astrocytes that are dim at rest
        (resting brightness ``dim_rest`` times the others', their calcium
        events as bright in photons: a large dF/F; GCaMP's resting
        fluorescence is low, and expression and resting calcium vary from cell
        to cell). Dim cells are always active. (0, 0): none, and no draw.
    dim_rest : (float, float)
        Range of a dim cell's resting brightness relative to the others'.
    label : {"cytosolic", "membrane"}
        Where the indicator sits: in the cytosol (cyto-GCaMP: the soma is the
        brightest part of a cell) or on the plasma membrane (Lck-GCaMP: the
        soma shows as a rim around a dimmer inside and the fine processes of
        the territory shine as much as the trunks;
        :func:`~astro3s.heldout.morphology.membrane_labelled`). Both are common
        in astrocyte imaging.
    """

    name: str
    description: str
    sizes: tuple[int, ...] = (256,)
    n_frames: int = 300
    n_cells: Count = (4, 8)
    soma_area: Range = (150.0, 350.0)
    fs: Range = (1.0, 5.0)
    photons: Range = (15.0, 60.0)
    psf_fwhm: Range = (1.2, 2.4)
    n_cut: Count = (0, 0)
    n_outside: Count = (0, 0)
    n_out_of_focus: Count = (0, 1)
    n_blobs: Count = (0, 1)
    n_neurons: Count = (0, 0)
    n_vessels: Count = (0, 0)
    min_spacing: float = 3.0
    p_motion: float = 0.5
    process_reach: Range = (2.0, 4.0)
    annotation: str = "area"
    noise_correlation: Range = (0.0, 0.0)
    dim_fraction: Range = (0.0, 0.0)
    dim_rest: Range = (0.15, 0.35)
    label: str = "cytosolic"


#: Member name -> recipe. Order matters for the seeds: append new members at the end.
MEMBERS: dict[str, MemberRecipe] = {
    "giant": MemberRecipe("giant", "high zoom: somata 2000-4000 px, processes ~10 px wide",
                          sizes=(256, 384), n_cells=(2, 5), soma_area=(2000.0, 4000.0),
                          fs=(1.0, 3.0), psf_fwhm=(2.5, 5.0), min_spacing=1.6),
    "small": MemberRecipe("small", "low zoom: somata 30-60 px, many cells", n_cells=(15, 30),
                          soma_area=(30.0, 60.0), fs=(2.0, 10.0), psf_fwhm=(1.0, 1.6)),
    "lookalikes": MemberRecipe("lookalikes", "D1-like cells with out-of-focus astrocytes and soft blobs",
                      n_out_of_focus=(3, 6), n_blobs=(3, 6)),
    "neurons": MemberRecipe("neurons", "D1-like cells with 10-25 neuron-like cells", n_neurons=(10, 25)),
    "vessels": MemberRecipe("vessels", "D1-like cells with 1-3 vessels and active endfeet", n_vessels=(1, 3)),
    "border": MemberRecipe("border", "D1-like cells, several cut by the border, plus outside cells reaching in",
                  n_cut=(2, 4), n_outside=(2, 4)),
    "dense": MemberRecipe("dense", "512 px FOV with 80-110 small cells", sizes=(512,), n_frames=200,
                          n_cells=(80, 110), soma_area=(40.0, 170.0), fs=(1.0, 4.0),
                          psf_fwhm=(1.0, 2.0), min_spacing=2.6),
    "low_snr": MemberRecipe("low_snr", "D1-like, very few photons (soma peak SNR ~1-2 per frame)",
                   photons=(0.7, 1.8)),
    "short": MemberRecipe("short", "D1-like, 75 frames", n_frames=75),
    "mixed": MemberRecipe("mixed", "realistic mix: somata 100-800 px, a few of every distractor",
                          n_frames=400, n_cells=(4, 9), soma_area=(100.0, 800.0), fs=(1.0, 10.0),
                          photons=(10.0, 60.0), psf_fwhm=(1.2, 3.0), n_cut=(0, 2),
                          n_outside=(0, 2), n_out_of_focus=(1, 3), n_blobs=(1, 3),
                          n_neurons=(3, 8), n_vessels=(1, 1)),
    # added 2026-12-03 (after the others: their seeds are unchanged), scored once per model
    "crop": MemberRecipe("crop", "small FOVs, 80-160 px (public test crops, zoomed-in fields): 1-4 D1-like cells",
                         sizes=(80, 100, 128, 160), n_cells=(1, 4), n_cut=(0, 1), n_outside=(0, 1),
                         n_out_of_focus=(0, 1), n_blobs=(0, 1)),
    # added 2026-12-04: processes as long as ASTRA's annotators trace them on D1 (95th percentile of the
    # process pixels 2.2-3.6 soma radii beyond the soma's edge, experiments/measure_annotations.py), each
    # primary process annotated along its main path to the tip; the other members' cells end 1-3 radii out
    "long": MemberRecipe("long", "D1-like cells whose processes reach 2.5-5 soma radii, annotated to their tips",
                         process_reach=(2.5, 5.0), annotation="trunks"),
    # added 2026-12-04 (afternoon): both simulators draw white detector noise, the one real movie at hand
    # (astroCaST's test crop) has neighbouring pixels' noise correlated 0.15 (frame differences, 1 px)
    "correlated": MemberRecipe("correlated", "D1-like, detector noise spatially correlated (0.1-0.2 at 1 px, "
                               "as in resampled or denoised recordings)", noise_correlation=(0.12, 0.26)),
    # added 2026-12-05 (night): cells seen by their activity more than in a summary image. On the
    # training simulator's d4_like_s5001, 34 of 86 somata were missed, nearly all of them dim in the
    # median image (contrast ~1 SD of the texture) but plain in a local temporal-correlation image
    "faint": MemberRecipe("faint", "D1-like, 30-60 % of the cells dim at rest (0.15-0.35 of the others' "
                          "resting brightness) but as active: seen by their activity", dim_fraction=(0.3, 0.6)),
    # added 2026-12-07: a membrane-targeted indicator (Lck-GCaMP; Shigetomi et al. 2013, J Gen Physiol
    # 141:633, and Srinivasan et al. 2015, Nat Neurosci 18:708, image astrocytes with it in vivo): every
    # other member and both training simulators render cytosolic indicators only
    "membrane": MemberRecipe("membrane", "D1-like cells with a membrane-targeted indicator: somata as rims "
                             "around a dimmer inside, bushy territories as bright as the trunks", label="membrane"),
}
MEMBER_ORDER: tuple[str, ...] = tuple(MEMBERS)


def member_seed(member: str, index: int) -> int:
    """Seed of movie ``index`` of ``member`` (``SEED_BASE + 1000 * position + index``)."""
    if member not in MEMBERS:
        raise KeyError(f"unknown held-out member {member!r}; choose from {', '.join(MEMBER_ORDER)}")
    if not 0 <= int(index) < 1000:
        raise ValueError(f"index must be in 0..999, got {index}")
    return SEED_BASE + 1000 * MEMBER_ORDER.index(member) + int(index)


def movie_name(member: str, index: int) -> str:
    """Folder and file stem of a movie: ``heldout_<member>_<index>``."""
    return f"heldout_{member}_{int(index)}"


def rng_for(seed: int, stream: str) -> np.random.Generator:
    """An independent generator for one purpose (``stream``) of one movie."""
    return np.random.default_rng([int(seed), zlib.crc32(stream.encode())])


@dataclass(frozen=True)
class MovieParams:
    """Concrete parameters of one held-out movie (everything drawn from the recipe).

    Attributes
    ----------
    member, name : str
    index, seed : int
    shape : (int, int, int)
        ``(T, H, W)``.
    fs : float
        Frame rate (Hz).
    soma_areas : tuple of float
        Requested soma areas of the labelled cells: the ``n_cut`` border cells
        come last.
    n_cut, n_outside, n_out_of_focus, n_blobs, n_neurons, n_vessels : int
    psf : dict
        ``kind``, ``fwhm``, ``beta``, ``axis_ratio``, ``angle`` (see :class:`~.optics.PSF`).
    detector : dict
        ``photons_per_unit``, ``gain``, ``gain_shape``, ``offset``, ``read_noise``.
    motion_sd : float
        Rigid motion standard deviation (px), 0 for none.
    bleach_fraction, bleach_tau : float
        Bleaching depth and time constant (s).
    neuropil : dict
        ``level`` (mean background / resting soma), ``exponent``, ``contrast``,
        ``modulation`` (relative slow change), ``tau`` (s).
    silent_fraction : float
        Fraction of astrocytes without events.
    min_spacing : float
    scale : float
        Spatial scale factor applied to the recipe (1 = full size).
    process_reach : (float, float)
    annotation : str
        As in :class:`MemberRecipe`.
    dim_fraction : float
        Each labelled cell is dim at rest with this probability (0: none).
    dim_rest : (float, float)
    label : str
        As in :class:`MemberRecipe`.
    """

    member: str
    name: str
    index: int
    seed: int
    shape: tuple[int, int, int]
    fs: float
    soma_areas: tuple[float, ...]
    n_cut: int
    n_outside: int
    n_out_of_focus: int
    n_blobs: int
    n_neurons: int
    n_vessels: int
    psf: dict = field(default_factory=dict)
    detector: dict = field(default_factory=dict)
    motion_sd: float = 0.0
    bleach_fraction: float = 0.0
    bleach_tau: float = 1.0
    neuropil: dict = field(default_factory=dict)
    silent_fraction: float = 0.0
    min_spacing: float = 3.0
    scale: float = 1.0
    process_reach: tuple[float, float] = (2.0, 4.0)
    annotation: str = "area"
    dim_fraction: float = 0.0
    dim_rest: tuple[float, float] = (0.15, 0.35)
    label: str = "cytosolic"


def _count(rng: np.random.Generator, bounds: Count, scale2: float) -> int:
    """Integer in ``bounds``, shrunk by ``scale2`` (area factor) but never to 0 when ``bounds[1] > 0``."""
    n = int(rng.integers(bounds[0], bounds[1] + 1))
    if scale2 >= 1.0 or n == 0:
        return n
    return max(1, int(round(n * scale2)))


def _loguniform(rng: np.random.Generator, bounds: Range, size: int | None = None):
    return np.exp(rng.uniform(np.log(bounds[0]), np.log(bounds[1]), size))


def sample_params(member: str, index: int = 0, *, scale: float = 1.0,
                  n_frames: int | None = None) -> MovieParams:
    """Draw the parameters of movie ``index`` of ``member``.

    Parameters
    ----------
    member : str
        A key of :data:`MEMBERS`.
    index : int
        Movie number within the member (0..999).
    scale : float
        Shrink the FOV side by ``scale`` and the object counts by ``scale**2``
        (soma sizes unchanged), for fast tests. 1 = the real member.
    n_frames : int, optional
        Override the member's number of frames.

    Returns
    -------
    params : MovieParams
    """
    return draw_params(MEMBERS[member], seed=member_seed(member, index), name=movie_name(member, index),
                       index=index, scale=scale, n_frames=n_frames)


def draw_params(recipe: MemberRecipe, *, seed: int, name: str, index: int = 0, scale: float = 1.0,
                n_frames: int | None = None) -> MovieParams:
    """Draw a movie's parameters from ``recipe`` with ``seed`` (see :func:`sample_params`).

    The movie's ``member`` is ``recipe.name``.
    """
    member = recipe.name
    rng = rng_for(seed, "params")
    side = int(rng.choice(recipe.sizes))
    side = max(32, int(round(side * scale)))
    scale2 = float(scale) ** 2
    T = int(n_frames) if n_frames is not None else recipe.n_frames
    n_cells = _count(rng, recipe.n_cells, scale2)
    n_cut = _count(rng, recipe.n_cut, scale2)
    areas = _loguniform(rng, recipe.soma_area, n_cells + n_cut)
    psf_kind = str(rng.choice(["moffat", "gaussian"]))
    psf = {"kind": psf_kind, "fwhm": float(rng.uniform(*recipe.psf_fwhm)),
           "beta": float(rng.uniform(2.0, 4.5)), "axis_ratio": float(rng.uniform(1.0, 1.6)),
           "angle": float(rng.uniform(0.0, np.pi))}
    photons = float(_loguniform(rng, recipe.photons))
    detector = {"photons_per_unit": photons, "gain": float(rng.uniform(8.0, 40.0)),
                "gain_shape": float(rng.uniform(2.0, 6.0)), "offset": float(rng.uniform(80.0, 600.0)),
                "read_noise": float(rng.uniform(2.0, 12.0))}
    if recipe.noise_correlation[1] > 0:  # its own stream: the other draws stay as they were
        detector["correlated_fraction"] = float(rng_for(seed, "noise_correlation").uniform(*recipe.noise_correlation))
    fs = float(_loguniform(rng, recipe.fs))
    duration = T / fs
    moving = rng.uniform() < recipe.p_motion
    neuropil = {"level": float(rng.uniform(0.15, 0.45)), "exponent": float(rng.uniform(1.5, 2.6)),
                "contrast": float(rng.uniform(0.2, 0.5)), "modulation": float(rng.uniform(0.03, 0.15)),
                "tau": float(rng.uniform(5.0, 40.0))}
    return MovieParams(
        member=member, name=name, index=int(index), seed=int(seed),
        shape=(T, side, side), fs=round(fs, 4), soma_areas=tuple(round(float(a), 1) for a in areas),
        n_cut=n_cut, n_outside=_count(rng, recipe.n_outside, scale2),
        n_out_of_focus=_count(rng, recipe.n_out_of_focus, scale2),
        n_blobs=_count(rng, recipe.n_blobs, scale2), n_neurons=_count(rng, recipe.n_neurons, scale2),
        n_vessels=_count(rng, recipe.n_vessels, 1.0), psf=psf, detector=detector,
        motion_sd=float(rng.uniform(0.2, 1.0)) if moving else 0.0,
        bleach_fraction=float(rng.uniform(0.03, 0.3)),
        bleach_tau=float(duration * rng.uniform(0.5, 3.0)), neuropil=neuropil,
        silent_fraction=float(rng.uniform(0.0, 0.25)), min_spacing=recipe.min_spacing,
        scale=float(scale), process_reach=tuple(recipe.process_reach), annotation=recipe.annotation,
        # its own stream, drawn only for members with dim cells: the other members' draws stay as they were
        dim_fraction=(float(rng_for(seed, "dim_fraction").uniform(*recipe.dim_fraction))
                      if recipe.dim_fraction[1] > 0 else 0.0),
        dim_rest=tuple(recipe.dim_rest), label=recipe.label,
    )
