"""Parameters of the calcium-event detector and of the soma -> process linking.

Every duration has two forms: ``*_s`` in seconds, used when the frame rate is
known, and ``*_frames``, used when it is not. :meth:`EventParams.in_frames`
resolves them for one trace into :class:`FrameParams`, the only form the
detector reads.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any

from astro3s.errors import ConfigError

__all__ = ["EventParams", "FrameParams"]


@dataclass(frozen=True)
class EventParams:
    """Every option of :func:`~astro3s.events.detect_events` and :func:`~astro3s.events.link_events`.

    Attributes
    ----------
    threshold : float
        An event's smoothed peak reaches this many noise SDs above the baseline.
    low_threshold : float
        Hysteresis: an event stretch is where the smoothed trace stays above
        this many noise SDs (it sets where overlapping events are still one
        stretch, and the event's end).
    split_rise : float
        Inside a stretch, a new event starts wherever the smoothed trace rises
        again by this many noise SDs from the trough since the previous event's
        peak (two events on a still-elevated baseline are two events).
    smooth_s, smooth_frames : float
        SD of the Gaussian that smooths the trace before detection (seconds,
        or frames without a frame rate); at least 0.5 frame.
    min_duration_s, min_duration_frames : float
        Shortest event stretch above ``low_threshold``.
    baseline_window_s, baseline_window_frames : float
        Running window of the baseline (it follows drift slower than this).
    link_max_delay_s, link_max_delay_frames : float
        A process or domain event follows a somatic event of its cell when it
        starts at most this long after it (and before the somatic event ends).
    link_lead_s, link_lead_frames : float
        ... or at most this long before it (onset estimates are uncertain by a
        frame or two; a wave can also reach a process first).
    neuropil_max_coef : float
        Soma and process traces lose the fluctuations of their neuropil
        surround before detection, scaled by a coefficient fitted per ROI and
        clipped to ``[0, neuropil_max_coef]``
        (:mod:`astro3s.correlation.neuropil`); 0 detects on the raw traces.
        1: an ROI cannot hold more out-of-focus light than its surround (a
        cell body hides some of the neuropil behind it); a larger fitted slope
        is the cell's own territory, active around it, not neuropil.
    """

    threshold: float = 4.5
    low_threshold: float = 2.0
    split_rise: float = 4.0
    smooth_s: float = 0.4
    smooth_frames: float = 1.0
    min_duration_s: float = 0.5
    min_duration_frames: float = 2.0
    baseline_window_s: float = 30.0
    baseline_window_frames: float = 150.0
    link_max_delay_s: float = 5.0
    link_max_delay_frames: float = 10.0
    link_lead_s: float = 1.0
    link_lead_frames: float = 2.0
    neuropil_max_coef: float = 1.0

    def __post_init__(self) -> None:
        check_event_params(**asdict(self))

    def in_frames(self, fs: float | None) -> FrameParams:
        """The options of one trace in frames (seconds times ``fs``; the ``*_frames`` values without it)."""
        def frames(name: str) -> float:
            return float(getattr(self, f"{name}_s")) * float(fs) if fs else float(getattr(self, f"{name}_frames"))

        return FrameParams(threshold=self.threshold, low_threshold=self.low_threshold, split_rise=self.split_rise,
                           smooth=max(frames("smooth"), 0.5), min_duration=max(frames("min_duration"), 1.0),
                           baseline_window=max(int(round(frames("baseline_window"))) | 1, 5),
                           link_max_delay=frames("link_max_delay"), link_lead=frames("link_lead"))


@dataclass(frozen=True)
class FrameParams:
    """:class:`EventParams` of one trace with every duration in frames."""

    threshold: float
    low_threshold: float
    split_rise: float
    smooth: float
    min_duration: float
    baseline_window: int
    link_max_delay: float
    link_lead: float


def check_event_params(**kw: Any) -> None:
    """Raise :class:`ConfigError` for an out-of-range option (only the ones given are checked)."""
    def bad(name: str, why: str) -> None:
        raise ConfigError(f"events option {name}={kw[name]!r} {why}")

    for name, value in kw.items():
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
            bad(name, "must be a finite number.")
    for name in ("threshold", "low_threshold", "split_rise", "smooth_s", "smooth_frames", "baseline_window_s",
                 "baseline_window_frames"):
        if name in kw and not kw[name] > 0:
            bad(name, "must be > 0.")
    for name in ("min_duration_s", "min_duration_frames", "link_max_delay_s", "link_max_delay_frames",
                 "link_lead_s", "link_lead_frames", "neuropil_max_coef"):
        if name in kw and kw[name] < 0:
            bad(name, "must be >= 0.")
    if "low_threshold" in kw and "threshold" in kw and kw["low_threshold"] > kw["threshold"]:
        bad("low_threshold", f"must not exceed threshold={kw['threshold']!r}.")
