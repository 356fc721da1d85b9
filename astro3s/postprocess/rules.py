"""ASTRA's combination rules, one pure function each, on FOV-sized masks.

Every function takes and returns ``(H, W)`` bool masks (the soma and process
classes of one FOV) and works label-wise: one ``ndimage.label`` plus
``np.bincount`` look-ups, so the cost grows with the number of pixels, never
with the square of the number of cells. Components use ``connectivity`` 2
(8-connectivity, OpenCV's default, which ASTRA used) unless told otherwise.

The rules, in the order :func:`astro3s.postprocess.combine` applies them
(ASTRA: ``pipelines/Tr_Inf/Inf_data1.py``, functions of ``modules/test_fun.py``):

1. :func:`class_masks` - argmax of the class probabilities;
2. :func:`small_somata_to_processes` - soma fragments too small to be a soma
   are process pieces (ASTRA ``small_soma_to_proc``, threshold 2/3 x min area);
3. :func:`soma_area_filter` applied to the whole-FOV somata
   (ASTRA ``prob_calc``) and :func:`merge_somata` - a crop soma and a FOV soma
   overlapping by more than 10 % are merged (ASTRA ``common_merge``);
4. :func:`soma_area_filter` - somata outside [0.9 x min, 1.15 x max] area
   are removed (ASTRA ``small_soma_to_proc`` on the merge, ``art_rem_large``);
5. :func:`remove_orphan_processes` - process components without a soma go
   (ASTRA ``art_rem``).
"""

from __future__ import annotations

import numpy as np

from astro3s.metrics import label_components
from astro3s.models.classes import PROCESSES, SOMA

__all__ = [
    "class_masks",
    "component_areas",
    "merge_somata",
    "remove_orphan_processes",
    "small_somata_to_processes",
    "soma_area_filter",
]


def class_masks(probs: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Soma and process masks from the per-pixel argmax of class probabilities.

    Parameters
    ----------
    probs : array_like of float, shape (3, H, W)
        Channels in the order of :data:`astro3s.models.CLASS_NAMES`
        (processes, soma, background). Logits give the same result.

    Returns
    -------
    soma, processes : ndarray of bool, shape (H, W)
        Disjoint. Ties go to the lower channel index (``np.argmax``).
    """
    probs = np.asarray(probs)
    if probs.ndim != 3 or probs.shape[0] != 3:
        raise ValueError(f"probabilities must be (3, H, W), got {probs.shape}")
    winner = np.argmax(probs, axis=0)
    return winner == SOMA, winner == PROCESSES


def _slack(area: float) -> float:
    """Float rounding allowance of an area bound: ``1.15 * 200`` is 229.99999999999997."""
    return 1e-9 * max(1.0, abs(area))


def component_areas(mask: np.ndarray, *, connectivity: int = 2) -> tuple[np.ndarray, np.ndarray]:
    """Connected components of a mask and their areas.

    Parameters
    ----------
    mask : array_like of bool, shape (H, W)
    connectivity : {1, 2}

    Returns
    -------
    labels : ndarray of int32, shape (H, W)
        0 background, components 1..n.
    areas : ndarray of int64, shape (n + 1,)
        Pixels per label; ``areas[0]`` counts the background.
    """
    labels, n = label_components(mask, connectivity=connectivity)
    return labels, np.bincount(labels.ravel(), minlength=n + 1)


def small_somata_to_processes(soma: np.ndarray, processes: np.ndarray, *, min_area: float,
                              connectivity: int = 2) -> tuple[np.ndarray, np.ndarray]:
    """Relabel soma components smaller than ``min_area`` as processes.

    A soma-class blob much smaller than any soma of the data is a thick
    process segment or a swelling (ASTRA's rule, applied to each crop with
    ``min_area = 2/3 x`` the minimum soma area).

    Parameters
    ----------
    soma, processes : array_like of bool, shape (H, W)
    min_area : float
        Components with fewer pixels (strictly) move to the processes.
    connectivity : {1, 2}

    Returns
    -------
    soma, processes : ndarray of bool, shape (H, W)
        New masks; the union of the two is unchanged.
    """
    soma = np.asarray(soma, dtype=bool)
    labels, areas = component_areas(soma, connectivity=connectivity)
    small = areas < min_area - _slack(min_area)
    small[0] = False
    moved = small[labels]
    return soma & ~moved, np.asarray(processes, dtype=bool) | moved


def soma_area_filter(soma: np.ndarray, *, min_area: float, max_area: float,
                     connectivity: int = 2) -> np.ndarray:
    """Keep the soma components whose area lies in ``[min_area, max_area]``.

    Parameters
    ----------
    soma : array_like of bool, shape (H, W)
    min_area, max_area : float
        Inclusive bounds, px (up to float rounding of a product such as
        ``1.15 * 200``). ASTRA's final filter uses ``0.9 x min`` and
        ``1.15 x max`` of ``soma_area_range``.
    connectivity : {1, 2}

    Returns
    -------
    soma : ndarray of bool, shape (H, W)
        The kept components; removed ones become background (as in ASTRA: a
        soma-sized blob of the wrong size is an artefact, not a process).
    """
    labels, areas = component_areas(soma, connectivity=connectivity)
    keep = (areas >= min_area - _slack(min_area)) & (areas <= max_area + _slack(max_area))
    keep[0] = False
    return keep[labels]


def merge_somata(crop_soma: np.ndarray, fov_soma: np.ndarray, *, min_overlap: float = 0.1,
                 keep_unmatched: bool = False, connectivity: int = 2) -> np.ndarray:
    """Merge crop somata with whole-FOV somata that overlap them.

    A crop soma component and a FOV soma component overlap enough when they
    share more than ``min_overlap`` of the smaller one's pixels; every such
    pair contributes its union. The two predictions confirm each other: the
    crop sees the cell at full resolution and in context, the FOV pass sees
    every cell with the same input (ASTRA ``common_merge``).

    Parameters
    ----------
    crop_soma, fov_soma : array_like of bool, shape (H, W)
        Soma masks from the pasted crop predictions and from the whole-FOV
        prediction.
    min_overlap : float
        Fraction of the smaller component's area the overlap must exceed
        (strictly), ASTRA 0.1.
    keep_unmatched : bool
        Also keep crop somata with no overlapping FOV soma. ASTRA (False)
        drops them and, likewise, FOV somata with no crop soma.
    connectivity : {1, 2}

    Returns
    -------
    soma : ndarray of bool, shape (H, W)
    """
    crop_labels, crop_areas = component_areas(crop_soma, connectivity=connectivity)
    fov_labels, fov_areas = component_areas(fov_soma, connectivity=connectivity)
    n_fov = fov_areas.size - 1
    both = (crop_labels > 0) & (fov_labels > 0)
    # overlap of every overlapping (crop, fov) pair: sparse, so linear in the pixels
    keys, overlap = np.unique(crop_labels[both].astype(np.int64) * (n_fov + 1) + fov_labels[both],
                              return_counts=True)
    crop_id, fov_id = np.divmod(keys, n_fov + 1)
    bound = min_overlap * np.minimum(crop_areas[crop_id], fov_areas[fov_id])
    merged = overlap > bound + 1e-9 * np.maximum(bound, 1.0)  # strictly more, despite float rounding
    keep_crop = np.zeros(crop_areas.size, bool)
    keep_fov = np.zeros(fov_areas.size, bool)
    keep_crop[crop_id[merged]] = True
    keep_fov[fov_id[merged]] = True
    if keep_unmatched:
        keep_crop[1:] = True
    keep_crop[0] = keep_fov[0] = False
    return keep_crop[crop_labels] | keep_fov[fov_labels]


def remove_orphan_processes(soma: np.ndarray, processes: np.ndarray, *,
                            connectivity: int = 2) -> np.ndarray:
    """Drop process pixels not connected to any soma.

    Parameters
    ----------
    soma, processes : array_like of bool, shape (H, W)
    connectivity : {1, 2}
        Connectivity of the components of ``soma | processes``.

    Returns
    -------
    processes : ndarray of bool, shape (H, W)
        The process pixels of components of ``soma | processes`` that hold at
        least one soma pixel, minus the soma pixels.
    """
    soma = np.asarray(soma, dtype=bool)
    processes = np.asarray(processes, dtype=bool) & ~soma
    labels, n = label_components(soma | processes, connectivity=connectivity)
    has_soma = np.bincount(labels[soma], minlength=n + 1) > 0
    has_soma[0] = False
    return processes & has_soma[labels]
