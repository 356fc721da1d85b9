"""Parameters of the cross-correlation (CC) domain analysis, with ASTRA's values as defaults."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

from astro3s.errors import ConfigError

__all__ = ["CorrelationParams"]


@dataclass(frozen=True)
class CorrelationParams:
    """Every option of :func:`~astro3s.correlation.extract_traces` and
    :func:`~astro3s.correlation.find_domains`, with its default.

    Published values (Bonato et al. 2023, and the ASTRA code) are noted in
    brackets.

    Attributes
    ----------
    f0_percentile : float
        Percentile of the raw ROI trace used as baseline F0 [ASTRA: 20].
    f0_window_s : float
        Length in seconds of the centred running window of F0 [~30 s]. When
        the frame rate is unknown or the movie is shorter than the window, F0
        is the per-ROI percentile of the whole trace.
    chunk_frames : int
        Frames read per chunk from a lazy movie (bounds the memory of the
        single pass over the movie).
    radius : float
        Domain radius in px around the soma centroid [ASTRA: 45-60, 50].
    max_lag : int
        Largest lag of the cross-correlation, in frames (not seconds), both
        signs [10; at 7 Hz about 1.4 s]. The lag in seconds is
        ``max_lag / fs``: keep it when the frame rate changes by scaling
        ``max_lag``.
    smooth_frames : int
        Length in frames (not seconds) of the moving average applied to
        pixel traces [5].
    detrend : bool
        Remove the FOV's slow trend (photobleaching: the mean frame's time
        course fitted by a constant plus a decaying exponential) from every smoothed pixel trace
        before correlating [ASTRA: no]. Bleaching adds the same decaying
        curve to every pixel in proportion to its brightness, which
        correlates bright pixels with any cell; False gives ASTRA's CC.
    threshold : float or None
        Correlation threshold; ``None`` picks it per FOV by false discovery.
    threshold_start : float
        First threshold tried by the automatic search [0.85].
    threshold_up : tuple of float
        Thresholds tried, in order, while the false rate is too high
        [0.88, 0.90, 0.91 ... 0.95].
    threshold_down : tuple of float
        Thresholds tried, in order, while the false rate is too low
        [0.80, 0.75 ... 0.60].
    false_rate_band : (float, float)
        Acceptance band ``[low, high)`` of the false-correlation rate [0.02, 0.06].
    n_background : int
        Random background pixels of the false-discovery estimate [ASTRA: 250;
        here 300].
    border : int
        Background pixels are at least this far from the FOV edge [6].
    seed : int
        Seed of the background draw.
    device : str
        ``"auto"`` (CUDA when available), ``"cpu"`` or ``"cuda[:n]"``.
    precision : str
        Matrix-product precision of the domain search: ``"auto"`` (bfloat16
        screening on CPUs with native bfloat16, else float32), ``"float32"``
        or ``"bfloat16"``. bfloat16 screening never changes the domains
        (pixels within its error bound of the threshold are recomputed in
        float32); the CC maps are then accurate to about 0.01.
    exact_cc : bool
        Compute every candidate's CC value by the exhaustive search (2-3x
        slower on a CPU for a 256 x 256 FOV). By default the search of a FOV
        large enough for it to pay (over 2e10 multiply-adds of the exhaustive
        search on a CPU, 5e12 on a GPU) is screened by low-pass spectra
        (module docstring of :mod:`astro3s.correlation.domains`): the domains
        and the threshold are the same, but CC values away from the threshold
        are only bounded (``Domains.cc_tolerance``, about 0.3 on ``d1_like``);
        ``Domains.exact_cc`` says which search ran.
    memory_mb : float
        Memory for the pixel traces of the domain search, MiB (about
        ``7 * T`` bytes a pixel). Traces that do not fit go to a temporary
        file and the cells are analysed in groups that do: a 1024 x 1024 FOV
        of 2200 frames needs ~3 GiB of traces. A cell whose disc alone does
        not fit (a long movie: 10000 frames make ~70 kB a pixel) is analysed
        in bands of its candidates. When the movie's frames are in memory
        already (the pre-processing's cache of a short corrected movie), groups
        are read from them and get half the budget. The result is the same.
    scratch_dir : str or None
        Folder of that temporary file (default: the system's, ``TMPDIR``);
        it is deleted when the analysis ends.
    """

    # traces
    f0_percentile: float = 20.0
    f0_window_s: float = 30.0
    chunk_frames: int = 256
    # domains
    radius: float = 50.0
    max_lag: int = 10
    smooth_frames: int = 5
    detrend: bool = True
    threshold: float | None = None
    threshold_start: float = 0.85
    threshold_up: tuple[float, ...] = (0.88, 0.90, 0.91, 0.92, 0.93, 0.94, 0.95)
    threshold_down: tuple[float, ...] = (0.80, 0.75, 0.70, 0.65, 0.60)
    false_rate_band: tuple[float, float] = (0.02, 0.06)
    n_background: int = 300
    border: int = 6
    seed: int = 0
    device: str = "auto"
    precision: str = "auto"
    exact_cc: bool = False
    memory_mb: float = 256.0
    scratch_dir: str | None = None

    def __post_init__(self) -> None:
        check_params(**asdict(self))


def check_params(**kw: Any) -> None:  # noqa: C901, PLR0915 - one check per parameter
    """Raise :class:`ConfigError` for an out-of-range option (only the ones given are checked)."""

    def bad(name: str, why: str) -> None:
        raise ConfigError(f"correlation option {name}={kw[name]!r} {why}")

    if "f0_percentile" in kw and not 0 <= kw["f0_percentile"] <= 100:
        bad("f0_percentile", "must lie in [0, 100].")
    if "f0_window_s" in kw and not kw["f0_window_s"] > 0:
        bad("f0_window_s", "must be > 0 s.")
    if "chunk_frames" in kw and int(kw["chunk_frames"]) < 1:
        bad("chunk_frames", "must be >= 1.")
    if "memory_mb" in kw and not kw["memory_mb"] > 0:
        bad("memory_mb", "must be > 0 MiB.")
    if "radius" in kw and not kw["radius"] > 0:
        bad("radius", "must be > 0 px.")
    if "max_lag" in kw and int(kw["max_lag"]) < 0:
        bad("max_lag", "must be >= 0 frames.")
    if "smooth_frames" in kw and int(kw["smooth_frames"]) < 1:
        bad("smooth_frames", "must be >= 1 frame.")
    if kw.get("threshold") is not None and not -1 <= kw["threshold"] <= 1:
        bad("threshold", "must lie in [-1, 1] (or be None for the automatic threshold).")
    for name in ("threshold_up", "threshold_down"):
        if name in kw and any(not -1 <= t <= 1 for t in kw[name]):
            bad(name, "must hold correlations in [-1, 1].")
    if "threshold_up" in kw and any(b <= a for a, b in zip((kw.get("threshold_start", -1), *kw["threshold_up"]),
                                                          kw["threshold_up"])):
        bad("threshold_up", "must increase from threshold_start.")
    if "threshold_down" in kw and any(b >= a for a, b in zip((kw.get("threshold_start", 1), *kw["threshold_down"]),
                                                            kw["threshold_down"])):
        bad("threshold_down", "must decrease from threshold_start.")
    if "false_rate_band" in kw:
        band = tuple(kw["false_rate_band"])
        if len(band) != 2 or not 0 <= band[0] < band[1] <= 1:
            bad("false_rate_band", "must be (low, high) with 0 <= low < high <= 1.")
    if "n_background" in kw and int(kw["n_background"]) < 1:
        bad("n_background", "must be >= 1.")
    if "border" in kw and int(kw["border"]) < 0:
        bad("border", "must be >= 0 px.")
    if "precision" in kw and kw["precision"] not in ("auto", "float32", "bfloat16"):
        bad("precision", "must be 'auto', 'float32' or 'bfloat16'.")
    if "exact_cc" in kw and kw["exact_cc"] not in (True, False):
        bad("exact_cc", "must be true or false.")
    if "device" in kw and not (kw["device"] in ("auto", "cpu") or str(kw["device"]).startswith("cuda")):
        bad("device", "must be 'auto', 'cpu' or 'cuda[:n]'.")
