"""The segmentation classes, defined once for the whole package.

Every network output, loss, metric and post-processing step uses this order:
channel ``k`` of a ``(B, 3, H, W)`` logit or probability tensor, and label ``k``
of a ``(B, H, W)`` int64 target, is the class ``CLASS_NAMES[k]``.
"""

from __future__ import annotations

#: Class names in channel / label order.
CLASS_NAMES: tuple[str, ...] = ("processes", "soma", "background")
#: Number of output channels of every segmentation network.
NUM_CLASSES: int = len(CLASS_NAMES)
#: Label of process pixels.
PROCESSES: int = CLASS_NAMES.index("processes")
#: Label of soma pixels.
SOMA: int = CLASS_NAMES.index("soma")
#: Label of background pixels.
BACKGROUND: int = CLASS_NAMES.index("background")
#: Target value of unannotated pixels; they count in no loss term and no metric.
IGNORE_INDEX: int = 255

__all__ = ["BACKGROUND", "CLASS_NAMES", "IGNORE_INDEX", "NUM_CLASSES", "PROCESSES", "SOMA"]
