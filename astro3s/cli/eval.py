"""``astro3s-eval``: score predicted segmentations against annotations.

::

    astro3s-eval pred=DIR gt=DIR [shape=[H,W]] [out=scores.json] [soma_only=true]

Each of ``pred`` and ``gt`` is a folder of FOVs, in either form (they may
differ between the two sides):

- ImageJ/Fiji ``RoiSet`` zips, one per FOV (``shape`` needed unless the other
  side gives it);
- per-FOV folders holding ``soma.tif`` and ``processes.tif`` label images,
  directly or under ``ground_truth/`` (as ``astro3s-simulate`` writes them); a
  missing ``processes.tif`` means no processes; when both sides also hold
  ``domains.tif`` (a label image), the instance scores include the domain IoU.

FOVs are matched by name (zip stem or folder name, ignoring a leading
``RoiSet_``). When a FOV's prediction has an ``events.csv`` (astro3s-infer) and
its ground truth one too (``ground_truth/events.csv``, astro3s-simulate), the
calcium events are scored as well (``events``: precision, recall, F1 of
somatic and process events on cells paired by soma IoU, onset and delay
errors; rules in :mod:`astro3s.events.score`). Prints a table per FOV and pooled, and writes a JSON file with
the ASTRA scores (top level), the instance scores (``instance``) and per-FOV
entries (``per_fov``, keyed by the matching name). See :mod:`astro3s.metrics` for the definitions.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import hydra
import numpy as np
from omegaconf import DictConfig

from astro3s.cli._config import CONFIG_DIR
from astro3s.cli._task import require, run_hydra_main, task_wrapper
from astro3s.errors import ConfigError, InputError

log = logging.getLogger(__name__)

SOMA_FILE = "soma.tif"
PROCESS_FILE = "processes.tif"
DOMAIN_FILE = "domains.tif"
GT_SUBFOLDER = "ground_truth"


@dataclass(frozen=True)
class FovSource:
    """Where one FOV's labels come from: a RoiSet zip or a soma label image."""

    name: str
    path: Path  # the zip, or soma.tif
    kind: str  # "roiset" or "labels"


def _fov_key(stem: str) -> str:
    # annotations are named RoiSet_<fov>.zip, predictions <fov>/
    return re.sub(r"^roiset[_-]?", "", stem, flags=re.IGNORECASE)


def _soma_file(folder: Path) -> Path | None:
    for candidate in (folder / SOMA_FILE, folder / GT_SUBFOLDER / SOMA_FILE):
        if candidate.is_file():
            return candidate
    return None


def discover_fovs(folder: str | Path, *, role: str) -> dict[str, FovSource]:
    """Find the FOVs of a ``pred`` or ``gt`` folder, keyed by matching name.

    Parameters
    ----------
    folder : str or Path
    role : {"pred", "gt"}
        Named in error messages.

    Returns
    -------
    dict of str to FovSource

    Raises
    ------
    InputError
        Missing folder, no FOV inside, or two FOVs with the same name.
    """
    folder = Path(folder).expanduser()
    if not folder.is_dir():
        raise InputError(folder, f"{role} folder not found.",
                         f"pass {role}=DIR with RoiSet zips or per-FOV folders holding {SOMA_FILE}.")
    own = _soma_file(folder)
    if own is not None:  # the folder is itself one FOV
        return {_fov_key(folder.name): FovSource(folder.name, own, "labels")}
    found: dict[str, FovSource] = {}
    candidates = [(p.stem, p, "roiset") for p in sorted(folder.glob("*.zip"))]
    candidates += [(p.name, _soma_file(p), "labels") for p in sorted(folder.iterdir())
                   if p.is_dir() and _soma_file(p) is not None]
    for name, path, kind in candidates:
        key = _fov_key(name)
        if key in found:
            raise InputError(path, f"has the same FOV name as {found[key].path} in the {role} folder.",
                             "keep one file per FOV.")
        found[key] = FovSource(name, path, kind)
    if not found:
        raise InputError(folder, f"{role} folder holds no RoiSet zip and no FOV folder with {SOMA_FILE} "
                         f"(or {GT_SUBFOLDER}/{SOMA_FILE}).",
                         f"point {role}= at the folder that holds them.")
    return found


def pair_fovs(pred: dict[str, FovSource], gt: dict[str, FovSource], *,
              pred_dir: Path, gt_dir: Path) -> list[tuple[str, FovSource, FovSource]]:
    """Pair FOVs by name; any FOV without a counterpart is an error naming it."""
    def listing(sources: dict[str, FovSource], keys: list[str], root: Path) -> str:
        names = [str(sources[k].path.relative_to(root)) for k in keys]
        more = f" and {len(names) - 5} more" if len(names) > 5 else ""
        return ", ".join(names[:5]) + more

    no_gt = sorted(set(pred) - set(gt))
    no_pred = sorted(set(gt) - set(pred))
    if no_gt or no_pred:
        parts = []
        if no_gt:
            parts.append(f"no ground truth in {gt_dir} for {listing(pred, no_gt, pred_dir)}")
        if no_pred:
            parts.append(f"no prediction in {pred_dir} for {listing(gt, no_pred, gt_dir)}")
        where = pred[no_gt[0]].path if no_gt else gt[no_pred[0]].path
        raise InputError(where, "; ".join(parts) + " (FOVs are matched by name, ignoring a "
                         "leading 'RoiSet_').",
                         "give both folders the same FOVs, or rename the files so that they match.")
    return [(key, pred[key], gt[key]) for key in sorted(pred)]


def _read_labels_pair(source: FovSource) -> tuple[np.ndarray, np.ndarray | None]:
    from astro3s.io import read_labels

    soma = read_labels(source.path)
    proc_path = source.path.with_name(PROCESS_FILE)
    processes = read_labels(proc_path) if proc_path.is_file() else None
    if processes is not None and processes.shape != soma.shape:
        raise InputError(proc_path, f"has shape {processes.shape} but {source.path.name} "
                         f"has {soma.shape}.", "write both label images of a FOV on the same grid.")
    return soma, processes


def read_fov(source: FovSource, shape: tuple[int, int] | None, *,
             fill: str) -> tuple[np.ndarray, np.ndarray | None, np.ndarray | None]:
    """Soma, process and domain label images of one FOV (None where absent)."""
    if source.kind == "labels":
        from astro3s.io import read_labels

        soma, processes = _read_labels_pair(source)
        domain_path = source.path.with_name(DOMAIN_FILE)
        domains = read_labels(domain_path) if domain_path.is_file() else None
        if domains is not None and domains.shape != soma.shape:
            raise InputError(domain_path, f"has shape {domains.shape} but {source.path.name} "
                             f"has {soma.shape}.", "write the label images of a FOV on one grid.")
        return soma, processes, domains
    from astro3s.io import read_roiset

    if shape is None:
        raise InputError(source.path, "is a RoiSet zip and the FOV size is unknown.",
                         "pass shape=[H,W] (e.g. shape=[256,256] for D1, [512,512] for D2, "
                         "[430,430] for D3).")
    return (*read_roiset(source.path, shape, fill=fill), None)


def _shape_arg(value: Any) -> tuple[int, int] | None:
    if value is None:
        return None
    try:
        height, width = (int(v) for v in value)
    except (TypeError, ValueError):
        raise ConfigError(f"`shape` must be [H, W], got {value!r}") from None
    if height <= 0 or width <= 0:
        raise ConfigError(f"`shape` must be positive, got {value!r}")
    return height, width


def load_pairs(pred_dir: Path, gt_dir: Path, shape: tuple[int, int] | None, *,
               fill: str, pred_fill: str | None = None) -> list[tuple[str, tuple, tuple]]:
    """Read every matched FOV: ``[(name, (soma, proc, domains) pred, same gt), ...]``.

    ``fill`` is the polygon rule of RoiSet zips on the ground-truth side;
    ``pred_fill`` that of the prediction side (default: the same).
    """
    pairs = pair_fovs(discover_fovs(pred_dir, role="pred"), discover_fovs(gt_dir, role="gt"),
                      pred_dir=pred_dir, gt_dir=gt_dir)
    loaded = []
    for key, pred_src, gt_src in pairs:
        # a label-image side fixes the grid that the RoiSet side is read on
        grid = shape
        if grid is None:
            for src in (gt_src, pred_src):
                if src.kind == "labels":
                    grid = _read_labels_pair(src)[0].shape
                    break
        gt = read_fov(gt_src, grid, fill=fill)
        pred = read_fov(pred_src, grid, fill=pred_fill or fill)
        if pred[0].shape != gt[0].shape:
            raise InputError(pred_src.path, f"has shape {pred[0].shape} but its ground truth "
                             f"{gt_src.path} has {gt[0].shape}.",
                             "score predictions made on the annotated grid (crop or pad first), "
                             "or fix shape=[H,W].")
        loaded.append((key, pred, gt))
    return loaded


def evaluate(pairs: Sequence[tuple[str, tuple, tuple]], *, soma_only: bool,
             iou_threshold: float) -> dict[str, Any]:
    """ASTRA and instance scores, pooled and per FOV, as a JSON-ready dict."""
    from astro3s.metrics import AstraScores, InstanceScores, astra_fov, instance_fov

    # soma-only ground truth (e.g. D3) cannot score processes
    soma_only = soma_only or all(gt[1] is None or not np.any(gt[1]) for _, _, gt in pairs)
    astra, instance, per_fov = [], [], {}
    for name, (pred_soma, pred_proc, pred_dom), (gt_soma, gt_proc, gt_dom) in pairs:
        a = astra_fov(pred_soma, pred_proc, gt_soma, gt_proc, soma_only=soma_only,
                      iou_threshold=iou_threshold)
        i = instance_fov(pred_soma, pred_proc, gt_soma, gt_proc, pred_domains=pred_dom,
                         gt_domains=gt_dom, soma_only=soma_only, iou_threshold=iou_threshold)
        astra.append(a)
        instance.append(i)
        per_fov[name] = {**AstraScores.from_fovs([a]).as_dict(),
                         "instance": InstanceScores.from_fovs([i]).as_dict()}
    return {**AstraScores.from_fovs(astra).as_dict(),
            "soma_only": soma_only,
            "instance": InstanceScores.from_fovs(instance).as_dict(),
            "per_fov": per_fov}


def format_table(scores: dict[str, Any]) -> str:
    """Plain-text table: one row per FOV, then the pooled row."""

    def fmt(v: Any) -> str:
        return "    -" if v is None else f"{v:5.3f}"

    header = (f"{'FOV':<24} {'det P':>5} {'det R':>5} {'det F1':>6} {'soma F1':>7} "
              f"{'proc F1':>7} {'inst F1':>7} {'pred':>5} {'gt':>5}")
    rows = [header, "-" * len(header)]

    def row(name: str, s: dict[str, Any]) -> str:
        return (f"{name[:24]:<24} {fmt(s['detection_precision'])} {fmt(s['detection_recall'])} "
                f"{fmt(s['detection_f1']):>6} {fmt(s['soma_f1']):>7} {fmt(s['process_f1']):>7} "
                f"{fmt(s['instance']['detection_f1']):>7} {s['n_pred']:>5} {s['n_gt']:>5}")

    rows += [row(name, s) for name, s in scores["per_fov"].items()]
    rows += ["-" * len(header), row("pooled", scores)]
    return "\n".join(rows)


EVENTS_FILE = "events.csv"


def _fov_info(source: FovSource) -> tuple[float | None, int | None]:
    """Frame rate and frame count of a FOV folder: from ``summary.json`` (astro3s-infer) beside its
    label images, or ``meta.json`` (astro3s-simulate) above ``ground_truth/``."""
    import json

    folder = source.path.parent
    for candidate in (folder / "summary.json", folder / "meta.json", folder.parent / "meta.json"):
        try:
            info = json.loads(candidate.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            continue
        shape = info.get("shape") or [None]
        if info.get("fs"):
            return float(info["fs"]), (int(shape[0]) if shape[0] else None)
    return None, None


def evaluate_events(pred_dir: Path, gt_dir: Path, *, iou_threshold: float) -> dict[str, Any] | None:
    """Event precision, recall and F1 (soma, process) over the FOVs whose two sides both have events.

    The prediction's ``events.csv`` (astro3s-infer) beside its label images,
    the simulator's ``ground_truth/events.csv``; cells paired by soma IoU >=
    ``iou_threshold``; rules in :mod:`astro3s.events.score`. None when no FOV
    has both (e.g. annotations without event ground truth).
    """
    from astro3s.events import read_events_csv
    from astro3s.events.score import MIN_SNR, CompartmentScores, roi_correspondence, score_movie
    from astro3s.metrics import match_instances
    from astro3s.simulate.events import read_event_truth

    pairs = pair_fovs(discover_fovs(pred_dir, role="pred"), discover_fovs(gt_dir, role="gt"),
                      pred_dir=pred_dir, gt_dir=gt_dir)
    pooled = {k: CompartmentScores() for k in ("soma", "process")}
    per_fov: dict[str, Any] = {}
    for key, pred_src, gt_src in pairs:  # a loop over FOVs
        pred_csv, gt_csv = pred_src.path.with_name(EVENTS_FILE), gt_src.path.with_name(EVENTS_FILE)
        if pred_src.kind != "labels" or gt_src.kind != "labels" or not pred_csv.is_file() or not gt_csv.is_file():
            continue
        fs, n_frames = _fov_info(pred_src)
        if fs is None:
            fs, n_frames = _fov_info(gt_src)
        if fs is None or n_frames is None:
            log.warning("%s: no frame rate in summary.json or meta.json; its events are not scored", key)
            continue
        pred_soma, pred_proc = _read_labels_pair(pred_src)
        gt_soma, gt_proc = _read_labels_pair(gt_src)
        pred_proc = np.zeros_like(pred_soma) if pred_proc is None else pred_proc
        gt_proc = np.zeros_like(gt_soma) if gt_proc is None else gt_proc
        match = match_instances(pred_soma, gt_soma, iou_threshold=iou_threshold)
        roi_map = roi_correspondence(pred_soma, pred_proc, gt_soma, gt_proc, match.pred_ids, match.gt_ids)
        scores = score_movie(read_events_csv(pred_csv, fs=fs, n_frames=n_frames), read_event_truth(gt_csv),
                             match.pred_ids, match.gt_ids, fs=fs, n_frames=n_frames, roi_map=roi_map)
        per_fov[key] = {k: v.as_dict() for k, v in scores.items()}
        for k, v in scores.items():
            pooled[k].add(v)
    if not per_fov:
        return None
    return {**{k: v.as_dict() for k, v in pooled.items()}, "min_snr": MIN_SNR,
            "tolerance": "max(1.5 s, 2 frames)", "per_fov": per_fov}


def format_event_table(scores: dict[str, Any]) -> str:
    """Plain-text table of the event scores: a row per FOV and compartment, then pooled."""
    def fmt(v: Any) -> str:
        return "    -" if v is None else f"{v:5.3f}"

    header = f"{'events':<24} {'kind':<8} {'P':>5} {'R':>5} {'F1':>5} {'onset err (fr)':>14} {'delay err (s)':>13}"
    rows = [header, "-" * len(header)]

    def row(name: str, kind: str, s: dict[str, Any]) -> str:
        return (f"{name[:24]:<24} {kind:<8} {fmt(s['precision'])} {fmt(s['recall'])} {fmt(s['f1'])} "
                f"{fmt(s['median_onset_error_frames']):>14} {fmt(s['median_delay_error_s']):>13}")

    for name, fov in scores["per_fov"].items():
        rows += [row(name, kind, fov[kind]) for kind in ("soma", "process")]
    rows += ["-" * len(header)] + [row("pooled", kind, scores[kind]) for kind in ("soma", "process")]
    return "\n".join(rows)


@task_wrapper
def run_eval(cfg: DictConfig) -> dict[str, Any]:
    """Score ``cfg.pred`` against ``cfg.gt`` and write ``cfg.out``."""
    from astro3s.io.atomic import write_json

    pred_dir = Path(require(cfg, "pred", "pass pred=DIR (predictions)")).expanduser()
    gt_dir = Path(require(cfg, "gt", "pass gt=DIR (annotations)")).expanduser()
    out = Path(require(cfg, "out", "pass out=FILE.json"))
    fill = str(cfg.get("fill", "astra"))
    pred_fill = str(cfg.get("pred_fill") or fill)
    for key, value in (("fill", fill), ("pred_fill", pred_fill)):
        if value not in ("astra", "imagej"):
            raise ConfigError(f"`{key}` must be 'astra' or 'imagej', got {value!r}")
    iou_threshold = float(cfg.get("iou_threshold", 0.5))
    if not 0.0 < iou_threshold <= 1.0:
        raise ConfigError(f"`iou_threshold` must be in (0, 1], got {iou_threshold}")

    pairs = load_pairs(pred_dir, gt_dir, _shape_arg(cfg.get("shape")), fill=fill, pred_fill=pred_fill)
    scores = evaluate(pairs, soma_only=bool(cfg.get("soma_only", False)),
                      iou_threshold=iou_threshold)
    scores = {"pred": str(pred_dir), "gt": str(gt_dir), "fill": fill, "pred_fill": pred_fill,
              "iou_threshold": iou_threshold, **scores}
    events = evaluate_events(pred_dir, gt_dir, iou_threshold=iou_threshold)
    if events is not None:
        scores["events"] = events
    print(format_table(scores))
    if events is not None:
        print(format_event_table(events))
    write_json(out, scores)
    log.info("scores written to %s", out)
    print(f"scores written to {out}")
    return scores


@hydra.main(config_path=CONFIG_DIR, config_name="eval", version_base="1.3")
def _hydra_main(cfg: DictConfig) -> None:
    """The Hydra app of ``astro3s-eval`` (run by :func:`main`)."""
    run_eval(cfg)


def main() -> None:
    """Console entry point ``astro3s-eval``; a config typo is one line on stderr and exit code 2."""
    return run_hydra_main(_hydra_main, "astro3s-eval")


if __name__ == "__main__":
    main()
