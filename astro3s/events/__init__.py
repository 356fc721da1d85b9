"""Calcium events of every ROI trace of a movie: soma, each process, and the CC domain.

- :func:`detect_events` -> :class:`TraceEvents`: one trace (baseline, noise,
  hysteresis detection, splitting of overlapping events, timing); works in
  frames without a frame rate and in seconds with one (:class:`EventParams`).
- :func:`roi_events` -> :class:`EventTable`: every ROI of a movie, process and
  domain events linked to the somatic event they follow (:func:`link_to_soma`);
  :func:`write_events_csv` writes ``events.csv``, :func:`cell_event_summary`
  the per-cell figures of ``summary.json``.
- :mod:`astro3s.events.score`: detected events against the simulator's ground truth.

Importing this package does no work beyond NumPy/SciPy imports.
"""

from astro3s.events.detect import TraceEvents, detect_events, noise_sd, running_baseline, smooth_trace
from astro3s.events.link import link_to_soma
from astro3s.events.params import EventParams, FrameParams
from astro3s.events.table import (EVENT_CSV_COLUMNS, EventTable, cell_event_summary, read_events_csv, roi_events,
                                  write_events_csv)

__all__ = [
    "EVENT_CSV_COLUMNS",
    "EventParams",
    "EventTable",
    "FrameParams",
    "TraceEvents",
    "cell_event_summary",
    "detect_events",
    "link_to_soma",
    "noise_sd",
    "read_events_csv",
    "roi_events",
    "running_baseline",
    "smooth_trace",
    "write_events_csv",
]
