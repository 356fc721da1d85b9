"""The settings of the rules around the network's passes, as one typed set: :class:`CellRules`.

:func:`astro3s.inference.segment_movie` adds what a network pass missed and
removes what it should not have drawn by rules (:mod:`astro3s.inference.cells`),
each chosen on held-out movies with its evidence written beside its default
(the module constants named in each field's description, and
``experiments/results/heldout_ablation.md``). :class:`CellRules` gathers their
settings so that a run can change them without editing code:
``astro3s-infer rules.visible_processes=false``, a sweep
``astro3s-infer -m rules.border_sliver_ratio=0,1,1.3``, or
``experiments/evaluate_model.py --border-sliver-ratio 0``. Every field's
default is the setting the project ships; the values that give a rule's
"before" are in each description.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, fields
from typing import Any

from astro3s.errors import ConfigError, did_you_mean
from astro3s.inference import cells, segment
from astro3s.postprocess import grow
from astro3s.preprocess import scale

__all__ = ["CellRules", "as_cell_rules"]


@dataclass(frozen=True)
class CellRules:
    """Settings of the rules of :func:`astro3s.inference.segment_movie` (``InferenceOptions.rules``).

    Attributes
    ----------
    soma_reach : float
        How far a soma is extended over its bright plateau, in radii of the soma as drawn
        (:data:`astro3s.postprocess.grow.SOMA_REACH`; 0.5 before 2026-12-05).
    shrink_tolerance : float
        Factor below the parameters' centre soma area at which the first pass's median soma makes the
        soma scale shrink (:data:`astro3s.inference.segment.SHRINK_TOLERANCE`; 1.5 before 2026-12-05).
    crowded_somata : int
        First-pass somata from which a FOV counts as crowded: a lower soma-size filter, no 2x2-binned
        large-soma pass, the out-of-focus rule's pixel condition (:data:`astro3s.inference.cells.CROWDED_SOMATA`;
        a huge value such as 1000000 treats no FOV as crowded).
    large_pass_on_crowded : bool
        The 2x2-binned large-soma pass also on crowded FOVs (:data:`astro3s.inference.cells.LARGE_PASS_ON_CROWDED`).
    pixel_widening_on_sparse : bool
        The out-of-focus rule's pixel condition also on FOVs that are not crowded
        (:data:`astro3s.inference.cells.PIXEL_WIDENING_ON_SPARSE`).
    extend_refitted_fovs : bool
        ``InferenceOptions.extend_processes`` also on FOVs whose soma range was refitted but that the network saw
        at their own pixels (:data:`astro3s.inference.cells.EXTEND_REFITTED_FOVS`).
    fragment_ratio : float
        A soma under this fraction of the largest soma joined to it becomes that cell's processes
        (:data:`astro3s.inference.cells.FRAGMENT_SOMA_RATIO`; 0: never).
    pair_blur_rule : bool
        On a FOV of two cells, drop the one whose soma edge is much wider in pixels
        (:data:`astro3s.inference.cells.PAIR_BLUR_RULE`).
    pair_blur_contrast : bool
        ... only when it is also the dimmer of the two (:data:`astro3s.inference.cells.PAIR_BLUR_CONTRAST`).
    complete_binned_somata : bool
        On a binned FOV, complete a soma drawn in part to its compact bright body
        (:data:`astro3s.inference.cells.COMPLETE_BINNED_SOMATA`).
    own_reach : float
        Soma radii around a blob within which its own processes' specks do not vote for the FOV's soma
        scale (:data:`astro3s.preprocess.scale.OWN_REACH`; 3 before 2026-12-05).
    wide_dominance : float
        A blob this many times wider than another and at least as strong silences it in the soma-scale vote
        (:data:`astro3s.preprocess.scale.WIDE_DOMINANCE`; ``inf``: the rule off).
    plateau_opening : float
        Radius, in median soma radii, of the disc that opens the bright plateau before a binned FOV's missed
        somata are read off it (:data:`astro3s.postprocess.grow.PLATEAU_OPENING`; 0: no opening).
    faint_cell_contrast : float
        A binned FOV's cell whose soma contrast is under this fraction of the FOV's highest goes
        (:data:`astro3s.inference.cells.FAINT_CELL_CONTRAST`; 0: the rule off).
    faint_reference_cap : float
        That highest contrast, as the rule's reference, is at most this many times the FOV's median soma contrast
        (:data:`astro3s.inference.cells.FAINT_REFERENCE_CAP`; 0: no cap, as before 2026-12-07, fourteenth session).
    border_sliver_ratio : float
        A cell whose soma reaches into the FOV less deep than this times half its width along the edge it
        touches goes (:data:`astro3s.inference.cells.BORDER_SLIVER_RATIO`; 0: the rule off).
    visible_processes : bool
        Every FOV's processes kept only near a ridge of the median image
        (:data:`astro3s.inference.cells.VISIBLE_PROCESSES`).
    border_additions : bool
        A soma the FOV's edge cuts that a finer pass of a binned FOV adds is judged by its edge width in pixels
        and the disc its extent along the edge gives (:data:`astro3s.inference.cells.BORDER_ADDITIONS`).
    small_soma_slack : float
        Lower end of a FOV's soma-size filter, at its own scale, as a fraction of the fitted range's
        (:data:`astro3s.inference.cells.SMALL_SOMA_SLACK`; 1: the range's own).
    crowded_soma_slack : float
        The same on a crowded FOV (:data:`astro3s.inference.cells.CROWDED_SOMA_SLACK`).
    min_added_area : float
        A cell that only a finer pass (or a second view) adds goes when its soma is under this fraction of the
        median soma of the cells found before (:data:`astro3s.inference.cells.MIN_ADDED_RELATIVE_AREA`; 0: never).
    correlation_view_max_blur : float
        A cell the correlation view adds goes when its soma edge on the movie's local correlation image is more
        than this many times as blurred as the cells found before
        (:data:`astro3s.inference.cells.CORRELATION_VIEW_MAX_BLUR`; 0: no such test).
    large_soma_ratio : float
        The 2x2-binned large-soma pass adds a cell only when its soma is at least this many times the FOV's
        median soma (:data:`astro3s.inference.cells.LARGE_SOMA_RATIO`).
    border_centred_crops : bool
        A candidate whose box the FOV's edge moved is also seen on a crop centred on it, the FOV mirrored beyond
        the edge (:data:`astro3s.inference.cells.BORDER_CENTRED_CROPS`; off by default).
    border_centred_agreement : float
        With ``border_centred_crops``, a centred crop is used only where the whole-FOV pass calls at least this
        fraction of its soma pixels soma too (:data:`astro3s.inference.cells.BORDER_CENTRED_AGREEMENT`; 0: always).
    border_cut_cells : bool
        A soma the FOV's edge cuts that only a crop centred on its candidate draws becomes a cell when it stands
        out like the FOV's cells (:data:`astro3s.inference.cells.BORDER_CUT_CELLS`; off by default).
    edge_fov_cells : bool
        A soma the FOV's edge cuts that the whole-FOV pass draws on the FOV extended by its mirror image, and that
        no cell holds, becomes a cell when it stands out like the FOV's cells
        (:data:`astro3s.inference.cells.EDGE_FOV_CELLS`; on by default, off before 2026-12-06, eighth session).
    faint_own_scale_contrast : float
        A cell of a FOV at its own scale whose soma stands out less than this fraction of the FOV's median soma
        goes, unless its soma looks like one (the next two settings)
        (:data:`astro3s.inference.cells.FAINT_OWN_SCALE_CONTRAST`; 0: off, as before 2026-12-07, eighteenth
        session).
    faint_soma_solidity, faint_soma_area : float
        The shape a faint soma of ``faint_own_scale_contrast`` keeps its cell with: at least this solid, and at
        least ``faint_soma_area`` times the FOV's median soma area (:data:`astro3s.inference.cells.FAINT_SOMA_SOLIDITY`,
        :data:`~astro3s.inference.cells.FAINT_SOMA_AREA`; both 0: no faint cell stays).
    min_soma_solidity : float
        A cell whose soma (up to :data:`astro3s.inference.cells.RAGGED_MAX_AREA` px) has a solidity under this
        goes (:data:`astro3s.inference.cells.MIN_SOMA_SOLIDITY`; 0: off).
    max_soma_elongation : float
        A cell whose soma is more than this many times as long as it is wide goes
        (:data:`astro3s.inference.cells.MAX_SOMA_ELONGATION`; 0: off, as before 2026-12-07, thirteenth session).
    min_blob_scale : float
        The median image's blob scale bins a FOV only when its somata read at least this many times wider than the
        parameters' centre (:data:`astro3s.inference.segment.MIN_BLOB_SCALE`, 2.4; 2.0 before the twenty-second
        session).
    first_pass_giant_soma : bool
        Binning refused by the filled cores of membrane-labelled somata goes ahead when the whole-FOV network pass at
        the FOV's own pixels draws a giant soma's worth of soma inside one blob that voted for binning
        (:data:`astro3s.inference.segment.FIRST_PASS_GIANT_SOMA`; on by default, off before 2026-12-07, fourteenth
        session).
    fast_events_on_dff : bool
        The fast-event rule judges the somata's events detected on dF/F, not on the raw fluorescence
        (:data:`astro3s.inference.cells.FAST_EVENTS_ON_DFF`; on by default, off before 2026-12-06, ninth session).
    unfollowed_max_correlation : float
        With the fast-event rule, a cell also goes when its somatic events are fairly fast (at least
        :data:`~astro3s.events.kinetics.UNFOLLOWED_MIN_EVENTS`, median decay under
        :data:`~astro3s.events.kinetics.UNFOLLOWED_MAX_DECAY_S` s) and its processes' mean dF/F correlates with its
        soma's under this: a neuron, round which the network drew neuropil as processes
        (:func:`astro3s.events.kinetics.unfollowed_cells`; 0: off, the default). The setting measured,
        :data:`~astro3s.events.kinetics.UNFOLLOWED_MAX_CORRELATION` 0.4, removed 10 false cells and no true one
        on 312 development movies, but on the first fresh draw scored after it (never-seen 304-307) it dropped a
        true low-SNR astrocyte and no false cell, so it ships off (2026-12-07, nineteenth session).
    separate_somata : bool
        A one-pixel gap wherever two cells' somata touch, cut from the larger, so that the soma mask read alone
        still shows two somata (:data:`astro3s.inference.cells.SEPARATE_SOMATA`; on by default, off before
        2026-12-06, ninth session).
    ring_cell_process_ratio : float
        A cell whose soma sits on a filled ring core and whose processes beyond 4 px of it cover less than this
        fraction of its soma's area goes: a neuron's ring around its dark nucleus
        (:data:`astro3s.inference.cells.RING_CELL_PROCESS_RATIO`; 0: off, as before 2026-12-07, sixteenth session).
    coarse_scale_check : bool
        A FOV the median image's blob scale leaves at its own pixels is also looked at binned 4x4 by the whole-FOV
        network pass, and binned as its somata ask when they are giant
        (:data:`astro3s.inference.segment.COARSE_SCALE_CHECK`; on by default, off before 2026-12-07, seventeenth
        session).
    """

    soma_reach: float = grow.SOMA_REACH
    shrink_tolerance: float = segment.SHRINK_TOLERANCE
    crowded_somata: int = cells.CROWDED_SOMATA
    large_pass_on_crowded: bool = cells.LARGE_PASS_ON_CROWDED
    pixel_widening_on_sparse: bool = cells.PIXEL_WIDENING_ON_SPARSE
    extend_refitted_fovs: bool = cells.EXTEND_REFITTED_FOVS
    fragment_ratio: float = cells.FRAGMENT_SOMA_RATIO
    pair_blur_rule: bool = cells.PAIR_BLUR_RULE
    pair_blur_contrast: bool = cells.PAIR_BLUR_CONTRAST
    complete_binned_somata: bool = cells.COMPLETE_BINNED_SOMATA
    own_reach: float = scale.OWN_REACH
    wide_dominance: float = scale.WIDE_DOMINANCE
    plateau_opening: float = grow.PLATEAU_OPENING
    faint_cell_contrast: float = cells.FAINT_CELL_CONTRAST
    faint_reference_cap: float = cells.FAINT_REFERENCE_CAP
    border_sliver_ratio: float = cells.BORDER_SLIVER_RATIO
    visible_processes: bool = cells.VISIBLE_PROCESSES
    border_additions: bool = cells.BORDER_ADDITIONS
    small_soma_slack: float = cells.SMALL_SOMA_SLACK
    crowded_soma_slack: float = cells.CROWDED_SOMA_SLACK
    min_added_area: float = cells.MIN_ADDED_RELATIVE_AREA
    correlation_view_max_blur: float = cells.CORRELATION_VIEW_MAX_BLUR
    large_soma_ratio: float = cells.LARGE_SOMA_RATIO
    border_centred_crops: bool = cells.BORDER_CENTRED_CROPS
    border_centred_agreement: float = cells.BORDER_CENTRED_AGREEMENT
    border_cut_cells: bool = cells.BORDER_CUT_CELLS
    edge_fov_cells: bool = cells.EDGE_FOV_CELLS
    faint_own_scale_contrast: float = cells.FAINT_OWN_SCALE_CONTRAST
    faint_soma_solidity: float = cells.FAINT_SOMA_SOLIDITY
    faint_soma_area: float = cells.FAINT_SOMA_AREA
    min_soma_solidity: float = cells.MIN_SOMA_SOLIDITY
    max_soma_elongation: float = cells.MAX_SOMA_ELONGATION
    min_blob_scale: float = segment.MIN_BLOB_SCALE
    first_pass_giant_soma: bool = segment.FIRST_PASS_GIANT_SOMA
    fast_events_on_dff: bool = cells.FAST_EVENTS_ON_DFF
    unfollowed_max_correlation: float = 0.0  # off: see the description (kinetics.UNFOLLOWED_MAX_CORRELATION)
    separate_somata: bool = cells.SEPARATE_SOMATA
    ring_cell_process_ratio: float = cells.RING_CELL_PROCESS_RATIO
    coarse_scale_check: bool = segment.COARSE_SCALE_CHECK

    def __post_init__(self) -> None:
        for spec in fields(self):
            value = getattr(self, spec.name)
            example = spec.default
            if isinstance(example, bool):
                if not isinstance(value, bool):
                    raise ConfigError(f"rules.{spec.name}={value!r} must be true or false. "
                                      f"Fix: e.g. rules.{spec.name}={str(example).lower()}.")
            elif isinstance(example, int):
                if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                    raise ConfigError(f"rules.{spec.name}={value!r} must be a whole number >= 1. "
                                      f"Fix: e.g. rules.{spec.name}={example}.")
            else:
                if isinstance(value, bool) or not isinstance(value, (int, float)) or math.isnan(value) \
                        or value < 0:
                    raise ConfigError(f"rules.{spec.name}={value!r} must be a number >= 0. "
                                      f"Fix: e.g. rules.{spec.name}={example}.")
                object.__setattr__(self, spec.name, float(value))
        if not self.shrink_tolerance >= 1.0:
            raise ConfigError(f"rules.shrink_tolerance={self.shrink_tolerance!r} must be >= 1 (a factor below the "
                              f"parameters' soma area). Fix: e.g. rules.shrink_tolerance={segment.SHRINK_TOLERANCE}.")
        if 0 < self.max_soma_elongation <= 1:  # every soma is at least as long as it is wide: all would go
            raise ConfigError(f"rules.max_soma_elongation={self.max_soma_elongation!r} must be 0 (off) or above 1 "
                              "(a soma's length over its width). "
                              f"Fix: e.g. rules.max_soma_elongation={cells.MAX_SOMA_ELONGATION}.")
        for name in ("small_soma_slack", "crowded_soma_slack"):  # size_filter_overrides' low_slack
            if not 0 < getattr(self, name) <= 1:
                raise ConfigError(f"rules.{name}={getattr(self, name)!r} must be in (0, 1] (a fraction of the fitted "
                                  f"range's lower end). Fix: e.g. rules.{name}={getattr(cells, name.upper())}.")
        if not self.faint_soma_solidity <= 1:
            raise ConfigError(f"rules.faint_soma_solidity={self.faint_soma_solidity!r} must be in [0, 1] (a soma's "
                              f"area over its convex hull's). Fix: e.g. rules.faint_soma_solidity="
                              f"{cells.FAINT_SOMA_SOLIDITY}.")
        if not self.border_centred_agreement <= 1:
            raise ConfigError(f"rules.border_centred_agreement={self.border_centred_agreement!r} must be in [0, 1] (a "
                              f"fraction of a soma's pixels). Fix: e.g. rules.border_centred_agreement="
                              f"{cells.BORDER_CENTRED_AGREEMENT}.")
        if not self.wide_dominance > 0:
            raise ConfigError(f"rules.wide_dominance={self.wide_dominance!r} must be > 0 (inf turns the rule off). "
                              f"Fix: e.g. rules.wide_dominance={scale.WIDE_DOMINANCE}.")


def as_cell_rules(rules: CellRules | Mapping[str, Any] | None) -> CellRules:
    """``rules`` as :class:`CellRules`: None gives the defaults, a mapping some of its fields.

    Raises
    ------
    ConfigError
        A key that is not a field (with the closest one), or a value a field refuses.
    """
    if rules is None:
        return CellRules()
    if isinstance(rules, CellRules):
        return rules
    if not isinstance(rules, Mapping):
        raise ConfigError(f"rules must be a mapping of rule settings, got {type(rules).__name__}. "
                          f"Fix: e.g. rules.visible_processes=false.")
    known = [spec.name for spec in fields(CellRules)]
    for key in rules:
        if key not in known:
            raise ConfigError(f"unknown rules option rules.{key}{did_you_mean(str(key), known, 'rules.')}; "
                              f"valid: {', '.join(known)}.")
    return CellRules(**dict(rules))
