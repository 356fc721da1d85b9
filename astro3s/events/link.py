"""Which somatic event a process or domain event follows, and with what delay."""

from __future__ import annotations

import numpy as np

__all__ = ["link_to_soma"]


def link_to_soma(cell_ids: np.ndarray, kinds: list[str], onsets: np.ndarray, *, max_delay: float,
                 lead: float) -> tuple[np.ndarray, np.ndarray]:
    """Link every process and domain event to the somatic event of its cell that it follows.

    A process (or domain) event at onset ``o`` follows the somatic event of its
    cell at onset ``s`` when ``-lead <= o - s <= max_delay``; of several, the
    nearest in time. Somatic events link to nothing.

    Parameters
    ----------
    cell_ids : ndarray of int, shape (n,)
    kinds : list of str, length n
        ``"soma"``, ``"process"`` or ``"domain"``.
    onsets : ndarray of float, shape (n,)
        Onsets, in any unit (frames), the same as ``max_delay`` and ``lead``.
    max_delay, lead : float
        The window, in the unit of ``onsets``.

    Returns
    -------
    soma_event : ndarray of int64, shape (n,)
        Index (into these arrays) of the somatic event followed, -1 for none.
    delay : ndarray of float64, shape (n,)
        ``o - s``; NaN where not linked.
    """
    cell_ids = np.asarray(cell_ids, np.int64)
    onsets = np.asarray(onsets, np.float64)
    is_soma = np.array([k == "soma" for k in kinds], bool)
    soma_event = np.full(len(onsets), -1, np.int64)
    delay = np.full(len(onsets), np.nan)
    for cid in np.unique(cell_ids):  # a loop over cells
        mine = cell_ids == cid
        somatic = np.flatnonzero(mine & is_soma)
        others = np.flatnonzero(mine & ~is_soma)
        if not len(somatic) or not len(others):
            continue
        gap = onsets[others][:, None] - onsets[somatic][None, :]  # (n_others, n_soma)
        ok = (gap >= -lead) & (gap <= max_delay)
        cost = np.where(ok, np.abs(gap), np.inf)
        best = np.argmin(cost, axis=1)
        linked = np.isfinite(cost[np.arange(len(others)), best])
        soma_event[others[linked]] = somatic[best[linked]]
        delay[others[linked]] = gap[np.arange(len(others)), best][linked]
    return soma_event, delay
