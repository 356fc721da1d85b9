"""Members of the cross-check family: recipes (ranges) and the parameters drawn per movie.

A :class:`MemberRecipe` holds ranges; :func:`draw_params` draws one
:class:`MovieParams` from them with the movie's own random stream, so a
member/index pair always gives the same movie.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass

import numpy as np

#: seeds are ``SEED_BASE + 1000 * member_position + index`` (clear of 900000+ and 950000+)
SEED_BASE = 970_000

Range = tuple[float, float]


@dataclass(frozen=True)
class MemberRecipe:
    """Ranges a member's movies are drawn from (uniform unless stated).

    Sizes are in lateral pixels, times in seconds, rates per minute; brightness
    is relative to the resting peak of an in-focus soma.
    """

    description: str
    sizes: tuple[int, ...] = (256,)  # square FOV side; (lo, hi) with ``size_range``
    size_range: bool = False  # draw the side uniformly in [sizes[0], sizes[1]] (multiple of 8)
    n_frames: tuple[int, int] = (400, 800)
    fs: Range = (2.0, 5.0)
    n_true: tuple[int, int] = (6, 12)
    soma_area: Range = (150.0, 350.0)  # lateral equivalent area, px
    soma_diameter_um: Range = (8.0, 11.0)  # sets the pixel size from the soma area
    fwhm_z_um: Range = (3.0, 8.0)
    psf_sigma: Range = (0.7, 2.0)  # px, Gaussian core
    psf_tail: Range = (0.05, 0.3)  # fraction of the PSF in the Cauchy tail
    n_out_of_focus: tuple[int, int] = (1, 3)
    n_neurons: tuple[int, int] = (2, 5)
    n_vessels: tuple[int, int] = (0, 1)
    haze_density: Range = (0.07, 0.15)  # 3-D density of the unresolved gliapil (soma = 1)
    process_gain: Range = (1.0, 1.3)  # fluorescence per volume of processes relative to the soma
    sheath_um2: Range = (0.5, 1.5)  # cross-section of unresolved leaflets along every branch
    elevation_spread: Range = (0.45, 0.85)  # max |sin elevation| of primary processes
    branch_rate: Range = (0.6, 0.8)  # branches per soma radius of parent process
    event_rate: Range = (0.3, 3.0)  # somatic events per minute per cell
    event_amp: Range = (0.5, 2.0)  # median dF/F of somatic events
    rise_s: Range = (0.2, 1.0)
    decay_s: Range = (1.0, 6.0)
    speed_px_s: Range = (5.0, 30.0)
    silent_frac: Range = (0.1, 0.25)
    md_rate: Range = (3.0, 12.0)  # microdomain events per minute per patch
    md_decay_s: Range = (0.5, 2.0)
    bouton_density: Range = (0.015, 0.03)  # boutons per um^2
    bouton_rate: Range = (4.0, 15.0)
    bouton_amp: Range = (0.5, 1.5)
    bouton_brightness: Range = (0.15, 0.35)
    neuron_rate: Range = (5.0, 30.0)
    neuron_brightness: Range = (0.3, 0.8)
    background: Range = (0.15, 0.35)  # static tissue fluorescence
    photons: Range = (10.0, 60.0)  # photons / pixel / frame on a resting in-focus soma
    gain: Range = (3.0, 15.0)  # counts per photon
    offset: Range = (50.0, 500.0)
    read_noise: Range = (2.0, 15.0)  # counts
    bleach: Range = (0.0, 0.3)
    drift_px: Range = (0.0, 1.5)
    breath_px: Range = (0.0, 1.0)
    line_offset_px: Range = (0.0, 0.0)
    # a membrane-bound indicator (Lck-GCaMP): thickness of the fluorescent layer under the soma's surface
    # (0: cytosolic, the whole soma fluoresces); drawn last and only when set, so other draws are unchanged
    membrane_shell_um: Range = (0.0, 0.0)
    membrane_volume: Range = (0.0, 0.0)  # of a membrane-bound indicator, the part still in the cytosol (in transit)


def _d1(description: str, **changes) -> MemberRecipe:
    return dataclasses.replace(MemberRecipe(description=description), **changes)


MEMBERS: dict[str, MemberRecipe] = {
    "d1": _d1("D1-like: 256^2, 6-12 cells with 150-350 px somata, a few neurons and out-of-focus cells"),
    "zoom": _d1("high zoom: 384^2 or 512^2, 1-4 cells with 1500-4000 px somata, 1-3 Hz",
                sizes=(384, 512), n_frames=(300, 500), fs=(1.0, 3.0), n_true=(1, 4),
                soma_area=(1500.0, 4000.0), n_out_of_focus=(0, 1), n_neurons=(0, 2), branch_rate=(1.1, 1.5),
                line_offset_px=(0.0, 0.6)),
    "dense": _d1("dense: 512^2, 60-100 small cells (40-150 px somata)",
                 sizes=(512,), n_frames=(300, 500), n_true=(60, 100), soma_area=(40.0, 150.0),
                 n_out_of_focus=(8, 16), n_neurons=(8, 20), psf_sigma=(0.7, 1.3), elevation_spread=(0.3, 0.6)),
    "dim": _d1("photon-starved D1-like: 2-5 photons / pixel / frame on a resting soma", photons=(2.0, 5.0)),
    "thick": _d1("thick optical section (FWHM_z 9-16 um): strong gliapil haze, many out-of-focus cells",
                 fwhm_z_um=(9.0, 16.0), haze_density=(0.12, 0.22), n_out_of_focus=(4, 8)),
    "neuropil": _d1("strong bouton activity in the neuropil and 15-30 neurons",
                    bouton_density=(0.05, 0.1), bouton_rate=(15.0, 45.0), bouton_amp=(1.0, 3.0),
                    n_neurons=(15, 30), line_offset_px=(0.0, 1.0)),
    "vessels": _d1("2-4 dark vessels crossing the FOV and a lateral drift of 1-3 px",
                   n_vessels=(2, 4), drift_px=(1.0, 3.0)),
    "fast": _d1("short fast recordings: 128-200 px, 1-5 cells, 80-150 frames at 8-15 Hz",
                sizes=(128, 200), size_range=True, n_frames=(80, 150), fs=(8.0, 15.0), n_true=(1, 5),
                n_out_of_focus=(0, 1), n_neurons=(0, 2), line_offset_px=(0.0, 1.0)),
    # added 2026-12-07: a membrane-targeted indicator (Lck-GCaMP; Shigetomi et al. 2013, J Gen Physiol
    # 141:633; Srinivasan et al. 2015, Nat Neurosci 18:708): somata fluoresce in a thin layer under
    # their surface, and the leaflets' membrane (sheath, haze) outshines the trunks' volume
    "membrane": _d1("D1-like, membrane-bound indicator: somata as rims, bright leaflet haze, dimmer trunks",
                    membrane_shell_um=(0.4, 0.9), membrane_volume=(0.1, 0.3), sheath_um2=(1.5, 3.0),
                    haze_density=(0.12, 0.22), process_gain=(0.6, 0.9)),
}

MEMBER_ORDER: tuple[str, ...] = tuple(MEMBERS)


def member_seed(member: str, index: int) -> int:
    """Seed of movie ``index`` of ``member`` (KeyError for an unknown member)."""
    if member not in MEMBERS:
        raise KeyError(member)
    return SEED_BASE + 1000 * MEMBER_ORDER.index(member) + int(index)


def movie_name(member: str, index: int) -> str:
    """Folder and file stem of a movie, ``crosscheck_<member>_<index>``."""
    return f"crosscheck_{member}_{int(index)}"


@dataclass(frozen=True)
class MovieParams:
    """Parameters drawn for one movie (all JSON-serialisable).

    Lengths are lateral pixels unless the name says µm; ``fwhm_z`` is the axial
    FWHM in lateral-pixel units (z is measured in the same pixels as x and y).
    """

    member: str
    index: int
    seed: int
    n_frames: int
    height: int
    width: int
    fs: float
    um_per_px: float
    fwhm_z_um: float
    fwhm_z: float
    psf_sigma: float
    psf_tail: float
    psf_gamma: float
    n_true: int
    soma_area: Range
    n_out_of_focus: int
    n_neurons: int
    n_vessels: int
    bouton_density: float
    haze_density: float
    process_gain: float
    sheath_um2: float
    elevation_spread: float
    branch_rate: float
    event_rate: Range
    event_amp: float
    rise_s: Range
    decay_s: Range
    speed_px_s: float
    silent_frac: float
    md_rate: float
    md_decay_s: Range
    bouton_rate: float
    bouton_amp: float
    bouton_brightness: float
    neuron_rate: float
    neuron_brightness: float
    background: float
    photons: float
    gain: float
    offset: float
    read_noise: float
    bleach: float
    drift_px: float
    breath_px: float
    breath_hz: float
    line_offset_px: float
    membrane_shell: float = 0.0  # px; see MemberRecipe.membrane_shell_um
    membrane_volume: float = 0.0  # see MemberRecipe.membrane_volume

    @property
    def shape(self) -> tuple[int, int, int]:
        """(T, H, W) of the movie."""
        return (self.n_frames, self.height, self.width)


def _uniform(rng: np.random.Generator, bounds: Range) -> float:
    lo, hi = bounds
    return float(lo if hi <= lo else rng.uniform(lo, hi))


def _count(rng: np.random.Generator, bounds: tuple[int, int], factor: float = 1.0, minimum: int = 0) -> int:
    n = int(rng.integers(bounds[0], bounds[1] + 1))
    return max(minimum, int(round(n * factor)))


def _side(rng: np.random.Generator, recipe: MemberRecipe, scale: float) -> int:
    if recipe.size_range:
        side = float(rng.uniform(recipe.sizes[0], recipe.sizes[1]))
    else:
        side = float(recipe.sizes[int(rng.integers(len(recipe.sizes)))])
    return max(48, int(round(side * scale / 8.0)) * 8)


def draw_params(member: str, index: int, *, scale: float = 1.0, n_frames: int | None = None) -> MovieParams:
    """Draw the parameters of movie ``index`` of ``member``.

    Parameters
    ----------
    member : str
        One of :data:`MEMBER_ORDER`.
    index : int
        Movie index (the seed is :func:`member_seed`).
    scale : float
        FOV side x ``scale`` and object counts x ``scale**2`` (cell sizes unchanged).
    n_frames : int, optional
        Override the drawn number of frames.

    Returns
    -------
    params : MovieParams
    """
    recipe = MEMBERS[member]
    seed = member_seed(member, index)
    rng = np.random.default_rng([seed, 1])
    side = _side(rng, recipe, scale)
    counts = scale ** 2
    frames = int(rng.integers(recipe.n_frames[0], recipe.n_frames[1] + 1))
    mid_area = math.sqrt(recipe.soma_area[0] * recipe.soma_area[1])
    um_per_px = _uniform(rng, recipe.soma_diameter_um) / (2.0 * math.sqrt(mid_area / math.pi))
    fwhm_um = _uniform(rng, recipe.fwhm_z_um)
    sigma = _uniform(rng, recipe.psf_sigma)
    return MovieParams(
        member=member, index=int(index), seed=seed, n_frames=int(n_frames or frames), height=side, width=side,
        fs=round(_uniform(rng, recipe.fs), 3), um_per_px=um_per_px, fwhm_z_um=fwhm_um,
        fwhm_z=fwhm_um / um_per_px, psf_sigma=sigma, psf_tail=_uniform(rng, recipe.psf_tail),
        psf_gamma=sigma * _uniform(rng, (1.5, 3.0)),
        n_true=_count(rng, recipe.n_true, counts, minimum=1), soma_area=recipe.soma_area,
        n_out_of_focus=_count(rng, recipe.n_out_of_focus, counts),
        n_neurons=_count(rng, recipe.n_neurons, counts),
        n_vessels=int(rng.integers(recipe.n_vessels[0], recipe.n_vessels[1] + 1)),
        bouton_density=_uniform(rng, recipe.bouton_density), haze_density=_uniform(rng, recipe.haze_density),
        process_gain=_uniform(rng, recipe.process_gain), sheath_um2=_uniform(rng, recipe.sheath_um2),
        elevation_spread=_uniform(rng, recipe.elevation_spread),
        branch_rate=_uniform(rng, recipe.branch_rate),
        event_rate=recipe.event_rate, event_amp=_uniform(rng, recipe.event_amp), rise_s=recipe.rise_s,
        decay_s=recipe.decay_s, speed_px_s=_uniform(rng, recipe.speed_px_s),
        silent_frac=_uniform(rng, recipe.silent_frac), md_rate=_uniform(rng, recipe.md_rate),
        md_decay_s=recipe.md_decay_s, bouton_rate=_uniform(rng, recipe.bouton_rate),
        bouton_amp=_uniform(rng, recipe.bouton_amp), bouton_brightness=_uniform(rng, recipe.bouton_brightness),
        neuron_rate=_uniform(rng, recipe.neuron_rate), neuron_brightness=_uniform(rng, recipe.neuron_brightness),
        background=_uniform(rng, recipe.background), photons=_uniform(rng, recipe.photons),
        gain=_uniform(rng, recipe.gain), offset=_uniform(rng, recipe.offset),
        read_noise=_uniform(rng, recipe.read_noise), bleach=_uniform(rng, recipe.bleach),
        drift_px=_uniform(rng, recipe.drift_px), breath_px=_uniform(rng, recipe.breath_px),
        breath_hz=_uniform(rng, (0.2, 0.5)), line_offset_px=_uniform(rng, recipe.line_offset_px),
        membrane_shell=_uniform(rng, recipe.membrane_shell_um) / um_per_px,
        membrane_volume=_uniform(rng, recipe.membrane_volume),
    )
