"""Score a model's whole inference path on movies no training run sees (ASTRA definition).

Two yardsticks, reported in this order:

1. **The held-out family** (``--heldout DIR``, made by ``python -m astro3s.heldout --out DIR``):
   movies from an independently written generator (``astro3s.heldout``: its own
   morphology, PSF, noise model, neuropil and distractors; seeds 900000+), one
   row per member (giant and small somata, look-alikes, neurons, vessels,
   border cells, dense FOVs, low SNR, short movies, a realistic mix). No
   training code imports that generator. ``--heldout`` also takes a folder of
   the cross-check family (``python -m astro3s.crosscheck --out DIR``: a second
   independent generator, cells in 3-D through an optical section, seeds
   970000+) or of ASTRA's layouts (``python -m astro3s.heldout --layouts``); the
   table's heading names the family its movies' ``meta.json`` give.
2. **Presets of the training simulator** with seeds 5000+ (``--sets``); whole
   presets the default model never saw (``d2_like``, ``d3_like``) are flagged.

Every movie is pre-processed with the model's parameters, segmented as
``astro3s-infer`` does (soma scale fitted per movie, network on crops and FOV,
combination rules) and scored with :func:`astro3s.metrics.astra_scores` against
the annotator-width processes (``ground_truth/processes.tif``, polygons of the
width ASTRA's annotators draw) and, as a second figure, the 2-px branch masks
(``ground_truth/processes_thin.tif``). Process precision and recall (pixels of
matched cells) are reported separately, and the detection recall of giant
(>= 2000 px) and small (<= 60 px) somata.

    python experiments/evaluate_model.py --heldout data/heldout_family    # + the default preset sets
    python experiments/evaluate_model.py --checkpoint PATH.ckpt --sets d1_like:5 --heldout DIR
    python experiments/evaluate_model.py --heldout DIR --out experiments/results/default_model.md
    python experiments/evaluate_model.py --sets --heldout data/crosscheck_family --out experiments/results/crosscheck.md

Writes a Markdown table (pooled scores per member / preset, seconds per movie)
and a JSON file beside it with the per-movie scores.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import sys
import time
from pathlib import Path

import numpy as np

if __package__ in (None, ""):  # run as a script: _runs sits beside it
    sys.path.insert(0, str(Path(__file__).resolve().parent))

from _runs import parse_sets  # noqa: E402

from astro3s.inference.pipeline import MAX_PROCESS_RATIO  # noqa: E402
from astro3s.postprocess.params import CombineParams  # noqa: E402
from astro3s.preprocess.ring_cores import RING_FILLS  # noqa: E402

#: the default of CombineParams.min_pixel_widening (evaluate_model --min-pixel-widening)
MIN_PIXEL_WIDENING = CombineParams.min_pixel_widening

log = logging.getLogger("evaluate_model")

#: preset -> number of movies; held out of the default model's training entirely: d2_like, d3_like
DEFAULT_SETS = ("d1_like:5", "d2_like:2", "d3_like:2", "d4_like:2", "randomised:6")
TRAINED_PRESETS = {"d1_like", "d4_like", "randomised"}
FIRST_SEED = 5000



#: soma areas (px) of the size extremes whose detection recall is reported
GIANT_SOMA_AREA = 2000
SMALL_SOMA_AREA = 60


def _size_recall(pred_soma: np.ndarray, gt_soma: np.ndarray) -> dict:
    """Matched / total GT cells among giant and small somata (IoU >= 0.5 one-to-one)."""
    from astro3s.metrics import match_instances

    areas = np.bincount(gt_soma.ravel(), minlength=int(gt_soma.max()) + 1)
    ids = np.flatnonzero(areas[1:]) + 1
    matched = set(match_instances(pred_soma, gt_soma).gt_ids.tolist())
    out = {}
    for name, pick in (("giant", areas[ids] >= GIANT_SOMA_AREA), ("small", areas[ids] <= SMALL_SOMA_AREA)):
        chosen = ids[pick]
        out[name] = [int(sum(int(k) in matched for k in chosen)), int(len(chosen))]
    return out


def _read_truth(folder: Path) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Soma, annotator-width processes and thin processes of a simulated movie folder."""
    from astro3s.io import read_labels

    gt = folder / "ground_truth"
    soma, processes = read_labels(gt / "soma.tif"), read_labels(gt / "processes.tif")
    thin = read_labels(gt / "processes_thin.tif") if (gt / "processes_thin.tif").exists() else processes
    return soma, processes, thin


def _pool(movies: list[dict], preds: list, gts: list) -> dict:
    """Pooled ASTRA scores (annotator-width and thin processes), id-aware process F1 and size-extreme recall."""
    from astro3s.metrics import astra_scores, cell_process_figures, instance_scores

    pooled = astra_scores([p[0] for p in preds], [p[1] for p in preds], [g[0] for g in gts],
                          [g[1] for g in gts]).as_dict()
    thin = astra_scores([p[0] for p in preds], [p[1] for p in preds], [g[0] for g in gts],
                        [g[2] for g in gts]).as_dict()
    pooled["thin_process_f1"] = thin["process_f1"]
    pooled["thin_process_precision"] = thin["process_precision"]
    pooled["thin_process_recall"] = thin["process_recall"]
    # the same processes scored cell by cell with the ids (ASTRA's score ignores them and splits a
    # component of several touching cells by 40-px discs, so touching cells lose process pixels)
    pooled["id_process_f1"] = instance_scores([p[0] for p in preds], [p[1] for p in preds], [g[0] for g in gts],
                                              [g[1] for g in gts]).process_f1
    # how far each cell's processes reach beyond its own soma's edge (soma radii) and how wide they are drawn
    # (px; the annotators' convention the truth should follow), predicted and true
    for side, labels in (("pred", preds), ("gt", [g[:2] for g in gts])):
        figures = np.concatenate([cell_process_figures(soma, processes) for soma, processes in labels]
                                 or [np.zeros((0, 4))])
        pooled[f"reach_{side}"] = float(np.median(figures[:, 3])) if len(figures) else None
        pooled[f"width_{side}"] = float(np.median(figures[:, 1])) if len(figures) else None
    for size in ("giant", "small"):
        hit = sum(m["size_recall"][size][0] for m in movies)
        total = sum(m["size_recall"][size][1] for m in movies)
        pooled[f"{size}_recall"] = hit / total if total else None
        pooled[f"n_{size}"] = total
    if not any(np.any(g[1] > 0) for g in gts):
        # soma-only truth (ASTRA's D3 annotations): no process figure to give
        for key in [k for k in pooled if "process" in k] + ["reach_gt", "width_gt"]:
            pooled[key] = None
    return pooled


def save_segmentation(path: Path, seg, truth: tuple[np.ndarray, np.ndarray, np.ndarray], *, member: str,
                      median_image: np.ndarray | None) -> None:
    """Write one movie's segmentation and truth to ``path`` (``.npz``, written under a temporary name first).

    Arrays: ``soma``, ``processes`` (uint16 labels), ``gt_soma``, ``gt_processes``, ``gt_thin`` and, when
    given, ``median_image`` (float32); ``member``: the held-out member or preset. Read by
    ``experiments/compare_segmentations.py``, which compares two runs without running the pipeline again.
    """
    from astro3s.io.atomic import atomic_path

    soma, processes, thin = truth
    arrays = {"soma": np.asarray(seg.soma, np.uint16), "processes": np.asarray(seg.processes, np.uint16),
              "gt_soma": np.asarray(soma), "gt_processes": np.asarray(processes), "gt_thin": np.asarray(thin),
              "member": np.array(member)}
    if median_image is not None:
        arrays["median_image"] = np.asarray(median_image, np.float32)
    with atomic_path(path) as tmp, open(tmp, "wb") as handle:
        np.savez_compressed(handle, **arrays)


def _score_group(model, options, folders: list[Path], *, member: str = "", save_dir: Path | None = None) -> dict:
    """Run inference on each movie folder's ``<name>.tif`` and score it; per-movie rows and pooled scores.

    ``save_dir``: each movie's segmentation and truth also go to ``save_dir/<name>.npz`` (:func:`save_segmentation`).
    """
    from astro3s.metrics import astra_scores

    preds, gts, movies = [], [], []
    for folder in folders:  # loop over movies
        start = time.perf_counter()
        pre, seg, scale = segment_folder(folder, model, options)
        seconds = time.perf_counter() - start
        soma, processes, thin = _read_truth(folder)
        if save_dir is not None:
            save_segmentation(Path(save_dir) / f"{folder.name}.npz", seg, (soma, processes, thin),
                              member=member, median_image=getattr(pre, "median_image", None))
        scores = astra_scores(seg.soma, seg.processes, soma, processes).as_dict()
        scores["thin_process_f1"] = astra_scores(seg.soma, seg.processes, soma, thin).process_f1
        movies.append({"name": folder.name, "seconds": round(seconds, 2), "n_cells": seg.n_cells,
                       "n_gt": int(len(np.unique(soma)) - 1), "soma_scale": scale,
                       "size_recall": _size_recall(seg.soma, soma), **scores})
        preds.append((seg.soma, seg.processes))
        gts.append((soma, processes, thin))
        log.info("%s: %d cells (%d true), detection F1 %.3f, soma F1 %s, process F1 %s (thin %s), %.1f s",
                 folder.name, seg.n_cells, movies[-1]["n_gt"], scores["detection_f1"], scores["soma_f1"],
                 scores["process_f1"], scores["thin_process_f1"], seconds)
    return {"pooled": _pool(movies, preds, gts), "movies": movies,
            "seconds_per_movie": round(float(np.mean([m["seconds"] for m in movies])), 2) if movies else None}


def segment_folder(folder: Path, model, options):
    """The cells of ``folder/<name>.tif`` as ``astro3s-infer`` finds them before its CC analysis: pre-processed,
    segmented (:func:`astro3s.inference.segment_movie`) and, with ``options.drop_fast_event_cells``, without the
    neuron-like cells (:func:`_without_fast_event_cells`). Returns ``(pre, seg, soma_scale_info)``."""
    from astro3s.inference import segment_movie
    from astro3s.io import read_movie
    from astro3s.preprocess import preprocess

    movie = read_movie(folder / f"{folder.name}.tif")
    try:
        pre = preprocess(movie, options.preprocess, progress=False)
        pre, seg, scale = segment_movie(pre, model, options, name=folder.name)
        if options.drop_fast_event_cells:
            seg = _without_fast_event_cells(seg, pre.corrected if pre.corrected is not None else movie,
                                            rules=options.rules)
    finally:
        movie.close()
    return pre, seg, scale


def _without_fast_event_cells(seg, movie, *, rules):
    """``seg`` without the cells ``astro3s-infer`` drops by their kinetics
    (:func:`astro3s.inference.pipeline.neuron_like_cells`: many fast somatic events, or fairly fast ones with
    processes that do not follow the soma), judged on its soma and process traces (the traces and detector of
    ``astro3s-infer``, before its CC analysis) with ``rules`` (``fast_events_on_dff``,
    ``unfollowed_max_correlation``)."""
    from astro3s.correlation import extract_traces
    from astro3s.events import roi_events
    from astro3s.inference.pipeline import neuron_like_cells
    from astro3s.postprocess.combine import remove_cells

    if not seg.n_cells:
        return seg
    traces = extract_traces(movie, seg.soma, seg.processes, fs=getattr(movie, "fs", None))
    events = None if rules.fast_events_on_dff else roi_events([traces])[0]
    fast, unfollowed = neuron_like_cells(traces, events, rules)
    if len(fast) or len(unfollowed):
        log.info("dropped %d cell(s) whose somatic events decay fast: %s; %d whose processes do not follow: %s",
                 len(fast), fast.tolist(), len(unfollowed), unfollowed.tolist())
    drop = np.zeros(seg.n_cells, bool)
    drop[np.union1d(fast, unfollowed) - 1] = True
    return remove_cells(seg, drop, count_key="fast_event_cells_dropped")


def family_name(family_dir: Path) -> str | None:
    """The ``family`` a held-out folder's movies name in their ``meta.json`` (``heldout``, ``crosscheck``)."""
    for meta_path in sorted(family_dir.glob("*/meta.json")):
        return json.loads(meta_path.read_text()).get("family")
    return None


def heldout_members(family_dir: Path) -> dict[str, list[Path]]:
    """Member name -> movie folders of a held-out family folder (``meta.json`` of each)."""
    members: dict[str, list[Path]] = {}
    for meta_path in sorted(family_dir.glob("*/meta.json")):
        meta = json.loads(meta_path.read_text())
        members.setdefault(meta.get("member", meta_path.parent.name), []).append(meta_path.parent)
    return members


def evaluate(checkpoint: str, sets: list[tuple[str, int]], data_dir: Path, *, heldout: Path | None = None,
             soma_scale: str = "auto", device: str = "cpu", somata: str = "refined",
             test_time_flips: int | None = None, binned_processes: str = "ridges",
             extend_processes: bool = True, scale_clahe_tiles: bool = True,
             max_process_ratio: float | None = MAX_PROCESS_RATIO, active_view: bool = True,
             correlation_view: bool = False, drop_fast_event_cells: bool = True,
             min_pixel_widening: float | None = MIN_PIXEL_WIDENING, rules: dict | None = None,
             line_correction: bool = True, ring_cores: bool | None = None,
             ring_core_depth: float | None = None, ring_core_fill: str | None = None,
             ring_core_contrast: float | None = None, save_segmentations: Path | None = None) -> dict:
    """Per-movie and pooled ASTRA scores of ``checkpoint`` on the held-out family and on presets.

    ``somata``: :attr:`astro3s.inference.InferenceOptions.somata` (``extended`` scores the soma
    outlines as before the half-maximum cut of 2026-12-05); ``test_time_flips``: the network's views
    (:attr:`astro3s.inference.InferenceOptions.test_time_flips`; None: its default);
    ``binned_processes``: :attr:`astro3s.inference.InferenceOptions.binned_processes` (``grown``: every
    grown pixel, as before the ridge test of 2026-12-05); ``extend_processes``:
    :attr:`astro3s.inference.InferenceOptions.extend_processes`; ``scale_clahe_tiles``:
    :attr:`astro3s.inference.InferenceOptions.scale_clahe_tiles`; ``max_process_ratio``:
    :attr:`astro3s.inference.InferenceOptions.max_process_ratio` (None: no limit, as before 2026-12-05 evening);
    ``active_view``, ``correlation_view``: :attr:`astro3s.inference.InferenceOptions.active_view` and
    ``.correlation_view`` (the active view on by default since 2026-12-07, eighteenth session, the correlation
    view off, as in ``astro3s-infer``); ``drop_fast_event_cells``:
    :attr:`astro3s.inference.InferenceOptions.drop_fast_event_cells` (on by default since 2026-12-06, as in
    ``astro3s-infer``; applied here from the events of the cells' own traces, :func:`_without_fast_event_cells`);
    ``min_pixel_widening``: :attr:`astro3s.postprocess.CombineParams.min_pixel_widening` (None: a soma's edge
    blur relative to its radius alone calls it out of focus, as before 2026-12-06; the default value applies on
    crowded FOVs only, ``astro3s.inference.cells.PIXEL_WIDENING_ON_SPARSE``; another value is given to every FOV);
    ``line_correction``: :attr:`astro3s.preprocess.PreprocessParams.line_correction` (on by default since
    2026-12-06, ninth session: a bidirectional scan's odd rows read back in place); ``ring_cores``:
    :attr:`astro3s.preprocess.PreprocessParams.fill_ring_cores` (None: the model's); ``ring_core_depth``,
    ``ring_core_fill``, ``ring_core_contrast``: :attr:`astro3s.preprocess.PreprocessParams.ring_core_depth`,
    ``.ring_core_fill`` and ``.ring_core_contrast`` (None: the model's; ``0.2``, ``"saddle"`` and ``0`` fill the
    cores as before 2026-12-07, fifteenth session);
    ``rules``: settings of :class:`astro3s.inference.rules.CellRules` (``astro3s-infer rules.NAME=``; the others keep
    their defaults), recorded in the report with the rest under the same keys; ``save_segmentations``: a folder
    for each movie's segmentation and truth (:func:`save_segmentation`; compared across runs by
    ``experiments/compare_segmentations.py``).
    """

    from astro3s.data.fovs import SyntheticFOVs
    from astro3s.inference import load_inference_model

    flips = {} if test_time_flips is None else {"test_time_flips": int(test_time_flips)}
    model, options = load_inference_model(checkpoint, device=device, soma_scale=soma_scale, figures=False,
                                          somata=somata, binned_processes=binned_processes,
                                          extend_processes=extend_processes,
                                          scale_clahe_tiles=scale_clahe_tiles,
                                          max_process_ratio=max_process_ratio, active_view=active_view,
                                          correlation_view=correlation_view,
                                          drop_fast_event_cells=drop_fast_event_cells, rules=rules,
                                          combine=({} if min_pixel_widening == MIN_PIXEL_WIDENING
                                                   else {"min_pixel_widening": min_pixel_widening}), **flips)
    preprocess_changes = {"line_correction": False} if not line_correction else {}
    if ring_cores is not None:
        preprocess_changes["fill_ring_cores"] = bool(ring_cores)
    fill = dict(ring_core_depth=ring_core_depth, ring_core_fill=ring_core_fill, ring_core_contrast=ring_core_contrast)
    # typed as the PreprocessParams fields they set (float, str, float)
    preprocess_changes.update({key: type(getattr(options.preprocess, key))(value)
                               for key, value in fill.items() if value is not None})
    if preprocess_changes:
        options = dataclasses.replace(options, preprocess=options.preprocess.replace(**preprocess_changes))
    report: dict = {"checkpoint": checkpoint, "soma_scale": soma_scale, "somata": somata,
                    "binned_processes": binned_processes, "extend_processes": extend_processes,
                    "scale_clahe_tiles": scale_clahe_tiles, "max_process_ratio": max_process_ratio,
                    "active_view": active_view, "correlation_view": correlation_view,
                    "drop_fast_event_cells": drop_fast_event_cells, "min_pixel_widening": min_pixel_widening,
                    "line_correction": options.preprocess.line_correction,
                    "fill_ring_cores": options.preprocess.fill_ring_cores,
                    "ring_core_depth": options.preprocess.ring_core_depth,
                    "ring_core_fill": options.preprocess.ring_core_fill,
                    "ring_core_contrast": options.preprocess.ring_core_contrast,
                    **dataclasses.asdict(options.rules),
                    "test_time_flips": options.test_time_flips, "heldout": {}, "sets": {}}
    if heldout is not None:
        report["heldout_family"] = family_name(heldout)
        for member, folders in heldout_members(heldout).items():  # loop over members
            report["heldout"][member] = _score_group(model, options, folders, member=member,
                                                     save_dir=save_segmentations)
    for preset, count in sets:  # loop over presets
        specs = SyntheticFOVs(preset=preset, n_fovs=count, root=data_dir, first_seed=FIRST_SEED).fovs()
        entry = _score_group(model, options, [spec.movie.parent for spec in specs], member=preset,
                             save_dir=save_segmentations)
        entry["held_out_preset"] = preset not in TRAINED_PRESETS
        report["sets"][preset] = entry
    return report


#: the ring-core fill's settings an evaluation can change (``--ring-core-depth`` etc.; fields of
#: :class:`astro3s.preprocess.PreprocessParams`, None: the model's): key -> (argparse options, help text)
RING_CORE_FLAGS = {
    "ring_core_depth":
        ({"type": float}, "how far under its rim's lowest level a membrane-labelled soma's core lies "
                          "(preprocess.ring_core_depth; default: the model's pre-processing; 0.2 before "
                          "2026-12-07, fifteenth session)"),
    "ring_core_fill":
        ({"choices": RING_FILLS}, "what such a core is raised to (preprocess.ring_core_fill; default: the model's "
                                  "pre-processing; saddle before 2026-12-07, fifteenth session)"),
    "ring_core_contrast":
        ({"type": float}, "how many times brighter than the annulus beyond it such a core's rim is "
                          "(preprocess.ring_core_contrast; default: the model's pre-processing; 0: no test, as "
                          "before 2026-12-07, fifteenth session)"),
}


#: the rule settings an evaluation can change (``--soma-reach`` etc.; fields of
#: :class:`astro3s.inference.rules.CellRules`, which checks them) and records: report key -> help text
RULE_FLAGS = {
    "border_centred_crops":
        ("astro3s.inference.cells.BORDER_CENTRED_CROPS: a candidate whose crop box the FOV's edge moved is also "
         "seen on a crop centred on it, the FOV mirrored beyond the edge (default: its value, 0)"),
    "border_centred_agreement":
        ("astro3s.inference.cells.BORDER_CENTRED_AGREEMENT: with border_centred_crops, a centred crop is used only "
         "where the whole-FOV pass calls at least this fraction of its soma pixels soma too (default: its value, "
         "0.5; 0: always)"),
    "border_cut_cells":
        ("astro3s.inference.cells.BORDER_CUT_CELLS: a soma the FOV's edge cuts that only a crop centred on its "
         "candidate draws becomes a cell when it stands out like the FOV's cells (default: its value, 0)"),
    "edge_fov_cells":
        ("astro3s.inference.cells.EDGE_FOV_CELLS: a soma the FOV's edge cuts that the whole-FOV pass draws on the "
         "FOV extended by its mirror image, and that no cell holds, becomes a cell when it stands out like the FOV's "
         "cells (default: its value, 1; 0 as before 2026-12-06, eighth session)"),
    "min_soma_solidity":
        ("astro3s.inference.cells.MIN_SOMA_SOLIDITY: a cell whose soma (<= 1000 px) has a solidity under this goes "
         "(default: its value; 0: off)"),
    "max_soma_elongation":
        ("astro3s.inference.cells.MAX_SOMA_ELONGATION: a cell whose soma is more than this many times as long as it "
         "is wide goes (default: its value, 4; 0: off, as before 2026-12-07, thirteenth session)"),
    "min_blob_scale":
        ("astro3s.inference.segment.MIN_BLOB_SCALE: the median image's blob scale bins a FOV only when its somata "
         "read at least this many times wider than the parameters' centre (default: its value, 2.4; 2.0 before the "
         "twenty-second session)"),
    "first_pass_giant_soma":
        ("astro3s.inference.segment.FIRST_PASS_GIANT_SOMA: binning refused by the filled cores of membrane-labelled "
         "somata goes ahead when the whole-FOV network pass draws a giant soma's worth of soma inside one blob that "
         "voted for binning (default: its value, 1; 0 as before 2026-12-07, fourteenth session)"),
    "fast_events_on_dff":
        ("astro3s.inference.cells.FAST_EVENTS_ON_DFF: the fast-event rule judges the somata's events detected on "
         "dF/F, not on the raw fluorescence (default: its value, 1; 0 as before 2026-12-06, ninth session)"),
    "unfollowed_max_correlation":
        ("astro3s.events.kinetics.UNFOLLOWED_MAX_CORRELATION: with the fast-event rule, a cell whose somatic events "
         "are fairly fast (>= 3 of median decay < 1.6 s) and whose processes' mean dF/F correlates with its soma's "
         "under this goes (unfollowed_cells; default 0: off; 0.4 the setting measured, nineteenth session)"),
    "separate_somata":
        ("astro3s.inference.cells.SEPARATE_SOMATA: a one-pixel gap wherever two cells' somata touch, cut from the "
         "larger, so that the soma mask read alone shows both (default: its value, 1; 0 as before 2026-12-06, ninth "
         "session)"),
    "faint_own_scale_contrast":
        ("astro3s.inference.cells.FAINT_OWN_SCALE_CONTRAST: a cell of a FOV at its own scale whose soma stands "
         "out less than this x the FOV's median soma goes, unless its soma looks like one (default: its value, "
         "0.3; 0: off, as before 2026-12-07, eighteenth session)"),
    "faint_soma_solidity":
        ("astro3s.inference.cells.FAINT_SOMA_SOLIDITY: with faint_own_scale_contrast, a faint soma at least this "
         "solid ... (default: its value, 0.9)"),
    "faint_soma_area":
        ("astro3s.inference.cells.FAINT_SOMA_AREA: ... and at least this x the FOV's median soma area keeps its "
         "cell (default: its value, 0.7; both 0: none stays)"),
    "small_soma_slack":
        ("astro3s.inference.cells.SMALL_SOMA_SLACK: lower end of the soma-size filter of a FOV at its own scale, "
         "x the fitted range's (default: its value, 0.8; 1 as before 2026-12-04)"),
    "crowded_soma_slack":
        ("astro3s.inference.cells.CROWDED_SOMA_SLACK: the same on a crowded FOV (default: its value, 0.45; 0.6 as "
         "before 2026-12-06, seventh session; 0.8 before 2026-12-05 late night)"),
    "min_added_area":
        ("astro3s.inference.cells.MIN_ADDED_RELATIVE_AREA: a cell only a finer pass adds goes under this x the "
         "median soma found before (default: its value, 0.4; 0 as before 2026-12-05)"),
    "correlation_view_max_blur":
        ("astro3s.inference.cells.CORRELATION_VIEW_MAX_BLUR: a cell the correlation view adds goes when its soma "
         "edge on the correlation image is more than this x as blurred as the cells found before (default: its "
         "value, 1.3; 0: no such test, as before 2026-12-08)"),
    "large_soma_ratio":
        ("astro3s.inference.cells.LARGE_SOMA_RATIO: the 2x2-binned large-soma pass adds only somata this many "
         "times the FOV's median (default: its value, 1.5)"),
    "border_additions":
        ("astro3s.inference.cells.BORDER_ADDITIONS: a soma the FOV's edge cuts that a finer pass of a binned FOV "
         "adds is judged by its edge width in pixels and the disc its extent along the edge gives (default: its "
         "value, 1; 0 as before 2026-12-06, sixth session)"),
    "soma_reach":
        'how far somata are extended over their plateau, in radii of the soma as drawn '
        '(astro3s.postprocess.grow.SOMA_REACH; default: its value, 1.0; 0.5 before 2026-12-05)',
    "shrink_tolerance":
        "factor below the parameters' centre soma area at which the soma scale shrinks "
        '(astro3s.inference.segment.SHRINK_TOLERANCE; default: its value, 1.25; 1.5 before 2026-12-05 late '
        'night)',
    "crowded_somata":
        "first-pass somata from which a FOV's size filter uses CROWDED_SOMA_SLACK "
        '(astro3s.inference.cells.CROWDED_SOMATA; default: its value, 40; 1000000 turns it off, as before '
        '2026-12-05 late night)',
    "extend_refitted_fovs":
        'extend_processes also on FOVs whose soma range was refitted but not zoomed '
        '(astro3s.inference.cells.EXTEND_REFITTED_FOVS; default: its value, 1; 0 as before 2026-12-05 '
        'evening)',
    "large_pass_on_crowded":
        'astro3s.inference.cells.LARGE_PASS_ON_CROWDED: run the 2x2-binned large-soma pass also on FOVs whose'
        ' first pass drew >= CROWDED_SOMATA somata (default: its value, 0; 1 as before 2026-12-05 night)',
    "fragment_ratio":
        'astro3s.inference.cells.FRAGMENT_SOMA_RATIO: a soma under this fraction of the largest soma joined '
        "to it becomes that cell's processes (0: never, as before 2026-12-05 night)",
    "pair_blur_rule":
        'astro3s.inference.cells.PAIR_BLUR_RULE: on FOVs of two cells, drop the one whose soma edge is 1.5x '
        'wider in pixels (default: its value, 1; 0 as before 2026-12-05 night)',
    "complete_binned_somata":
        'astro3s.inference.cells.COMPLETE_BINNED_SOMATA: on a FOV segmented binned, complete a soma drawn in '
        'part to its compact bright body (astro3s.postprocess.grow.complete_somata; default: its value, 1; 0 '
        'as before 2026-12-05, fourth night session)',
    "pixel_widening_on_sparse":
        "astro3s.inference.cells.PIXEL_WIDENING_ON_SPARSE: the out-of-focus rule's pixel condition (--min-"
        'pixel-widening) also on FOVs whose first pass drew < 40 somata (default: its value, 0)',
    "own_reach":
        "astro3s.preprocess.scale.OWN_REACH: soma radii around a blob within which its own processes' specks "
        "do not vote for the FOV's soma scale (default: its value, 4; 3 before 2026-12-05 night)",
    "pair_blur_contrast":
        "astro3s.inference.cells.PAIR_BLUR_CONTRAST: of a FOV's two cells, the wider-edged goes only if its "
        "soma's contrast is also at most the other's (default: its value, 1; 0 as before 2026-12-06, fourth "
        'session)',
    "border_sliver_ratio":
        'astro3s.inference.cells.BORDER_SLIVER_RATIO: a cell whose soma reaches into the FOV less deep than '
        'this times half its width along the edge it touches goes (drop_border_slivers; default: its value, '
        '1.0; 0 as before 2026-12-06, fifth session)',
    "visible_processes":
        "astro3s.inference.cells.VISIBLE_PROCESSES: every FOV's processes kept only within VISIBLE_REACH px "
        'of a ridge of the median image (astro3s.postprocess.grow.keep_visible_processes; default: its value,'
        ' 1; 0 as before 2026-12-06, fifth session)',
    "faint_cell_contrast":
        "astro3s.inference.cells.FAINT_CELL_CONTRAST: a binned FOV's cell whose soma contrast is under this "
        "fraction of the FOV's highest goes (default: its value, 0.2; 0 as before 2026-12-06, fourth session)",
    "faint_reference_cap":
        "astro3s.inference.cells.FAINT_REFERENCE_CAP: the faint-cell rule's reference, the FOV's clearest soma "
        "contrast, capped at this many times its median soma's (default: its value, 2; 0: no cap, as before "
        "2026-12-07, fourteenth session)",
    "wide_dominance":
        'astro3s.preprocess.scale.WIDE_DOMINANCE: a blob this many times wider than another and at least as '
        'strong, within OWN_REACH of its radii, silences it in the soma-scale vote (default: its value, 4; '
        'inf as before 2026-12-06, fourth session)',
    "ring_cell_process_ratio":
        "astro3s.inference.cells.RING_CELL_PROCESS_RATIO: a cell whose soma sits on a filled ring core and whose "
        "processes beyond 4 px of it cover less than this fraction of its soma's area goes (drop_ring_cells; "
        "default: its value, 0.1; 0 as before 2026-12-07, sixteenth session)",
    "coarse_scale_check":
        ("astro3s.inference.segment.COARSE_SCALE_CHECK: a FOV the blob scale leaves at its own pixels is also seen "
         "binned 4x4 by the whole-FOV pass, and binned as that pass's somata ask when they are giant (default: its "
         "value, 1; 0 as before 2026-12-07, seventeenth session)"),
    "plateau_opening":
        'astro3s.postprocess.grow.PLATEAU_OPENING: radius, in median soma radii, of the disc that opens the '
        "bright plateau before binned FOVs' missed somata are read off it (default: its value, 0.5; 0 as "
        'before 2026-12-06, fourth session)',
}


def rule_settings(values: dict) -> dict:
    """The :data:`RULE_FLAGS` given in ``values`` (report key -> command-line value; None: not given),
    typed as their :class:`~astro3s.inference.rules.CellRules` fields (``--visible-processes 0``: False)."""
    from astro3s.inference.rules import CellRules

    kinds = {spec.name: type(spec.default) for spec in dataclasses.fields(CellRules)}
    return {key: kinds[key](float(value) if kinds[key] is bool else value)
            for key, value in values.items() if value is not None}


def _fmt(value) -> str:
    return "–" if value is None else f"{value:.3f}"


def _row(name: str, entry: dict, extra: str = "") -> str:
    p = entry["pooled"]
    sizes = " / ".join("–" if p[f"{k}_recall"] is None else f"{p[f'{k}_recall']:.2f} ({p[f'n_{k}']})"
                       for k in ("giant", "small"))
    return (f"| {name} | {len(entry['movies'])}{extra} | {_fmt(p['detection_precision'])} "
            f"| {_fmt(p['detection_recall'])} | {_fmt(p['detection_f1'])} | {_fmt(p['soma_f1'])} "
            f"| {_fmt(p['process_f1'])} | {_fmt(p['process_precision'])} | {_fmt(p['process_recall'])} "
            f"| {_fmt(p['thin_process_f1'])} | {_fmt(p.get('id_process_f1'))} | {_reach(p)} | {_width(p)} | {sizes} "
            f"| {p['n_pred']} / {p['n_gt']} | {entry['seconds_per_movie']} |")


def _reach(pooled: dict) -> str:
    pred, true = pooled.get("reach_pred"), pooled.get("reach_gt")
    return "–" if pred is None or true is None else f"{pred:.2f} / {true:.2f}"


def _width(pooled: dict) -> str:
    pred, true = pooled.get("width_pred"), pooled.get("width_gt")
    return "–" if pred is None or true is None else f"{pred:.1f} / {true:.1f}"


_HEADER = ("| detection P | detection R | detection F1 | soma F1 | process F1 | process P | process R "
           "| thin process F1 | process F1 (cell ids) | process reach, found / true "
           "| process width, found / true | giant / small recall (n) "
           "| cells found / true | s per movie |")
# the header's 14 cells and "movies" ("member" or "preset" goes before)
_RULE = "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"


def markdown(report: dict, command: str) -> str:
    lines = [f"# Whole-pipeline ASTRA scores of `{report['checkpoint']}` on movies no training run saw", "",
             f"Generated by `{command}`; soma scale `{report['soma_scale']}`. Process F1 / P / R: against "
             "annotator-width processes (pixels of matched cells); thin process F1: against 2-px branch masks; "
             "process F1 (cell ids): the same processes matched cell by cell with their ids "
             "(`astro3s.metrics.instance_scores`; ASTRA's score ignores ids and splits touching cells by 40-px discs). "
             "Process reach: median over cells of how far a cell's processes go beyond its soma's edge (95th "
             "percentile of their pixels' distance to it), in soma radii, of the cells found and of the true ones "
             "(`astro3s.metrics.cell_process_figures`; ASTRA's annotators: D1 2.74, D2 2.97, D4 2.05). "
             "Process width: median over cells of a cell's process area / skeleton length, px, found / true "
             "(ASTRA's annotators: D1 3.7, D4 4.1, D2 9.0; `astro3s/annotation.py`). "
             "Giant: GT somata >= 2000 px, small: <= 60 px.", ""]
    if report.get("heldout"):
        layouts = all(member.startswith("layout_") for member in report["heldout"])
        if report.get("heldout_family") == "crosscheck":
            title = ("## Cross-check family (a second independent generator, `astro3s.crosscheck`: cells in 3-D "
                     "through an optical section; seeds 970000+)")
        elif layouts:
            title = "## Held-out movies on ASTRA's annotated layouts (renderer `astro3s.heldout`, seeds 950000+)"
        else:
            title = "## Held-out family (independent generator `astro3s.heldout`, seeds 900000+)"
        lines += [title, "", "| member | movies " + _HEADER, "|---" + _RULE]
        lines += [_row(member, entry) for member, entry in report["heldout"].items()]
        lines.append("")
    if report.get("sets"):
        lines += [f"## Presets of the training simulator (seeds {FIRST_SEED}+; *held out*: preset not in the "
                  "training mix)", "", "| preset | movies (held out) " + _HEADER, "|---" + _RULE]
        lines += [_row(preset, entry, " (yes)" if entry["held_out_preset"] else "")
                  for preset, entry in report["sets"].items()]
        lines.append("")
    return "\n".join(lines)


def _switch(parser: argparse.ArgumentParser, dest: str, flags: tuple[str, str], default: bool, on_help: str,
            off_help: str) -> None:
    """A pair of flags setting ``dest`` on and off (``default`` when neither is given)."""
    pair = parser.add_mutually_exclusive_group()
    pair.add_argument(flags[0], dest=dest, action="store_true", default=default, help=on_help)
    pair.add_argument(flags[1], dest=dest, action="store_false", help=off_help)


def main(argv: list[str] | None = None) -> int:
    from astro3s.inference.pipeline import BINNED_PROCESS_MODES, SOMATA_MODES

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checkpoint", default="default", help="'default' or a .ckpt path")
    parser.add_argument("--sets", nargs="*", default=list(DEFAULT_SETS), help="PRESET:COUNT ... (none: skip)")
    parser.add_argument("--heldout", type=Path, default=None,
                        help="a held-out family folder (python -m astro3s.heldout --out DIR)")
    parser.add_argument("--data-dir", type=Path, default=Path("data/heldout"), help="where movies are simulated")
    parser.add_argument("--soma-scale", choices=("auto", "fixed"), default="auto")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--somata", choices=SOMATA_MODES, default="refined",
                        help="soma outlines (astro3s-infer somata=...): 'extended' skips the half-maximum cut")
    parser.add_argument("--binned-processes", choices=BINNED_PROCESS_MODES, default="ridges",
                        help="binned FOVs' processes (astro3s-infer binned_processes=): 'grown' skips the ridge test")
    parser.add_argument("--no-extend-processes", action="store_true",
                        help="own-scale FOVs keep the network's processes (astro3s-infer extend_processes=false)")
    parser.add_argument("--fixed-clahe-tiles", action="store_true",
                        help="the CLAHE tiles stay as configured when the fitted somata are larger "
                             "(astro3s-infer scale_clahe_tiles=false)")
    _switch(parser, "active_view", ("--active-view", "--no-active-view"), True,
            "a second network view on the active image (astro3s-infer active_view=true; the default since "
            "2026-12-07, eighteenth session)",
            "without it (astro3s-infer active_view=false; the figures before 2026-12-07, eighteenth session)")
    _switch(parser, "drop_fast_event_cells", ("--drop-fast-event-cells", "--keep-fast-event-cells"), True,
            "drop cells whose >= 5 somatic events (SNR >= 5) decay in a median < 1.2 s (neuron-like; "
            "astro3s.events.kinetics; the default since 2026-12-06)",
            "keep them (astro3s-infer drop_fast_event_cells=false; the figures before 2026-12-06)")
    _switch(parser, "correlation_view", ("--correlation-view", "--no-correlation-view"), False,
            "a second network view on the median image brightened by the local correlation image (astro3s-infer "
            "correlation_view=true)",
            "without it (astro3s-infer correlation_view=false; the default)")
    from astro3s.inference.rules import CellRules

    kinds = {spec.name: type(spec.default) for spec in dataclasses.fields(CellRules)}
    for key, text in RULE_FLAGS.items():  # one flag per rule setting
        options = {"type": int, "choices": (0, 1)} if kinds[key] is bool else {"type": kinds[key]}
        parser.add_argument("--" + key.replace("_", "-"), default=None, help=f"{text} [astro3s-infer rules.{key}=]",
                            **options)
    parser.add_argument("--max-process-ratio", type=float, default=MAX_PROCESS_RATIO,
                        help="most process area per soma area a cell keeps (astro3s-infer max_process_ratio=; "
                             "0: no limit, as before 2026-12-05 evening)")
    parser.add_argument("--min-pixel-widening", type=float, default=MIN_PIXEL_WIDENING,
                        help="a soma blurrier than the others relative to its radius is out of focus only when its "
                             "edge is also this many times as wide in pixels (astro3s-infer "
                             "+combine.min_pixel_widening=; 0: the relative test alone, as before 2026-12-06)")
    parser.add_argument("--line-correction", type=int, choices=(0, 1), default=1,
                        help="a bidirectional scan's odd rows read back in place when they sit >= 0.25 px beside the "
                             "even ones (astro3s-infer preprocess.line_correction=; 0 as before 2026-12-06, ninth "
                             "session)")
    parser.add_argument("--ring-cores", type=int, choices=(0, 1), default=None,
                        help="dim soma cores inside bright rims (a membrane-targeted indicator) raised to the rims' "
                             "level (astro3s-infer fill_ring_cores=; default: the model's pre-processing)")
    for key, (options, text) in RING_CORE_FLAGS.items():  # one flag per setting of the ring-core fill
        parser.add_argument("--" + key.replace("_", "-"), default=None, help=text, **options)
    parser.add_argument("--test-time-flips", type=int, choices=(1, 2, 4), default=None,
                        help="views averaged by the network (astro3s-infer test_time_flips=...; default: its default)")
    parser.add_argument("--save-segmentations", type=Path, default=None, metavar="DIR",
                        help="also write each movie's segmentation and truth to DIR/<movie>.npz, for "
                             "experiments/compare_segmentations.py (two runs compared without re-running them)")
    parser.add_argument("--out", type=Path, default=None, help="Markdown table (JSON beside it)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    report = evaluate(args.checkpoint, parse_sets(args.sets), args.data_dir, heldout=args.heldout,
                      soma_scale=args.soma_scale, device=args.device, somata=args.somata,
                      test_time_flips=args.test_time_flips, binned_processes=args.binned_processes,
                      extend_processes=not args.no_extend_processes,
                      scale_clahe_tiles=not args.fixed_clahe_tiles,
                      max_process_ratio=args.max_process_ratio or None, active_view=args.active_view,
                      correlation_view=args.correlation_view, drop_fast_event_cells=args.drop_fast_event_cells,
                      min_pixel_widening=args.min_pixel_widening or None,
                      rules=rule_settings({key: getattr(args, key) for key in RULE_FLAGS}),
                      line_correction=bool(args.line_correction),
                      ring_cores=None if args.ring_cores is None else bool(args.ring_cores),
                      ring_core_depth=args.ring_core_depth, ring_core_fill=args.ring_core_fill,
                      ring_core_contrast=args.ring_core_contrast,
                      save_segmentations=args.save_segmentations)
    command = "python experiments/evaluate_model.py " + " ".join(sys.argv[1:] if argv is None else argv)
    text = markdown(report, command.strip())
    print(text)
    if args.out is not None:
        from astro3s.io import write_json, write_text

        write_text(args.out, text)
        write_json(args.out.with_suffix(".json"), report)
    return 0


if __name__ == "__main__":
    sys.exit(main())
