"""Constants of robust statistics shared by the event detector and the neuropil fit."""

from __future__ import annotations

__all__ = ["MAD_TO_SD"]

#: SD of a normal distribution / its median absolute deviation (1 / Phi^-1(3/4))
MAD_TO_SD = 1.4826
