"""One table and plot from the runs of one or several multiruns, grouped by what was overridden.

Usage::

    python experiments/compare.py DIR [DIR ...] [--out experiments/results/NAME.md]
        [--by KEY ...] [--ignore KEY ...] [--metric test/astra_f1]

Every run below the ``DIR`` folders that left a ``scores.json`` (see
:mod:`astro3s.cli.train`) is one sample. Runs are grouped by their
command-line overrides (``.hydra/overrides.yaml``), plus the ``model`` and
``data`` options recorded in ``scores.json``: by default on every key whose
value differs between runs, except ``data.fold`` (folds of one setting are
its samples; ``--ignore`` drops more keys), or on the ``--by`` keys. Typical
uses:

- model comparison: the multirun folders of ``experiment=paper_d1_standin``,
  ``paper_d1_unet`` and ``paper_d1_unetpp`` (with ``data=d1_standin``), each
  over ``data.fold=range(24)``: one row per model, mean ± sd over the folds;
- an Optuna sweep (``hparams_search=default_optuna``): one row per trial,
  with its searched values and its objective (``optimized_value``, e.g. the
  kept checkpoint's ``val/astra_f1``).

Columns: the group's values, the number of runs, and mean ± sd over its runs
of the test ASTRA scores (``test/detection_f1``, ``test/soma_f1``,
``test/process_f1``, ``test/astra_f1``) and of the sweep objective when
present; rows sorted by ``--metric`` (best first). Writes ``NAME.md``,
``NAME.csv`` (one row per run) and ``NAME.png`` (a box and strip plot of
each column over the groups); ``--out`` defaults to ``DIR/compare.md`` of the
first ``DIR``.
"""

from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path

if __package__ in (None, ""):  # run as a script: _runs sits beside it
    sys.path.insert(0, str(Path(__file__).resolve().parent))

from _runs import (  # noqa: E402
    Run,
    RunsError,
    box_strip,
    csv_text,
    display_path,
    find_runs,
    fmt_mean_sd,
    markdown_table,
    mean_sd,
    write_outputs,
)

DEFAULT_IGNORE = ("data.fold",)
METRICS = ("test/detection_f1", "test/soma_f1", "test/process_f1", "test/astra_f1")
OBJECTIVE = "objective"
RECORDED = ("model", "data")
MOVIES = {"stand-in": "**stand-ins**: simulated movies on the real annotated cell layouts, not the real movies",
          "simulated": "**simulated** movies", "real": "the real movies", "unrecorded": "movies not recorded"}


def _movies(run: Run) -> str:
    return str(run.scores.get("movies") or ("stand-in" if run.scores.get("standin") else "unrecorded"))


def run_params(run: Run) -> dict[str, str]:
    """A run's overrides, plus the ``model`` and ``data`` options recorded in its ``scores.json``."""
    params = run.params()
    for key in RECORDED:
        if run.scores.get(key) is not None:
            params.setdefault(key, str(run.scores[key]))
    return params


def group_keys(runs: list[Run], by: list[str] | None, ignore: list[str]) -> list[str]:
    """``by``, or every key whose value differs between runs (absent counts as a value), minus ``ignore``."""
    if by:
        return list(by)
    params = [run_params(r) for r in runs]
    keys = sorted({k for p in params for k in p} - set(ignore))
    return [k for k in keys if len({p.get(k) for p in params}) > 1]


def run_values(run: Run, metrics: list[str]) -> dict[str, float | None]:
    """The run's value of each metric (``objective``: the sweep's ``optimized_value``)."""
    out: dict[str, float | None] = {}
    for name in metrics:
        value = run.scores.get("optimized_value") if name == OBJECTIVE else (run.scores.get("metrics") or {}).get(name)
        out[name] = None if value is None or (isinstance(value, float) and math.isnan(value)) else float(value)
    return out


def columns(runs: list[Run]) -> list[str]:
    """The metric columns present in at least one run, and ``objective`` for sweeps."""
    present = [m for m in METRICS if any(m in (r.scores.get("metrics") or {}) for r in runs)]
    if not present:  # no ASTRA scores (no AstraScore callback): every test metric
        present = sorted({m for r in runs for m in (r.scores.get("metrics") or {}) if m.startswith("test/")})
    if any(r.scores.get("optimized_value") is not None for r in runs):
        present.append(OBJECTIVE)
    return present


def gather(roots: list[Path], *, by: list[str] | None = None, ignore: tuple[str, ...] | list[str] = DEFAULT_IGNORE,
           metric: str | None = None) -> dict:
    """Runs grouped by their overridden values; a dict with ``keys``, ``metrics``, ``groups``, ``unfinished``.

    ``groups`` is a list of ``(values, runs)`` (``values`` a tuple aligned with
    ``keys``), sorted by the mean of ``metric`` (default: ``objective`` for a
    sweep, else ``test/astra_f1`` or the first column), best first.
    """
    runs, unfinished = find_runs(roots)
    keys = group_keys(runs, by, ignore)
    metrics = columns(runs)
    if metric is None:
        metric = next((m for m in (OBJECTIVE, "test/astra_f1") if m in metrics), metrics[0] if metrics else None)
    elif metric not in metrics:
        raise RunsError(f"--metric {metric} is not among the runs' scores ({', '.join(metrics) or 'none'})")
    groups: dict[tuple, list[Run]] = {}
    for run in runs:  # loop over runs
        params = run_params(run)
        groups.setdefault(tuple(params.get(k, "–") for k in keys), []).append(run)

    def sort_key(item: tuple[tuple, list[Run]]) -> tuple[bool, float]:
        mean = mean_sd(run_values(r, [metric])[metric] for r in item[1])[0] if metric else None
        return mean is None, -(mean or 0.0)

    ordered = sorted(groups.items(), key=sort_key)
    return {"keys": keys, "metrics": metrics, "metric": metric, "groups": ordered, "unfinished": unfinished,
            "n_runs": len(runs)}


def _short(value: str) -> str:
    """A number with 4 significant digits (sweeps sample long floats); anything else unchanged."""
    try:
        number = float(value)
    except (TypeError, ValueError):
        return str(value)
    return str(value) if number.is_integer() or len(str(value)) <= 6 else f"{number:.4g}"


def _label(keys: list[str], values: tuple) -> str:
    return ", ".join(f"{k}={_short(v)}" for k, v in zip(keys, values)) or "all runs"


def markdown(result: dict, roots: list[Path]) -> str:
    """The report: sources, the grouped table (best first) and notes."""
    keys, metrics = result["keys"], result["metrics"]
    rows = []
    for values, runs in result["groups"]:  # loop over groups
        per_metric = [fmt_mean_sd(run_values(r, [m])[m] for r in runs) for m in metrics]
        rows.append([*(_short(v) for v in values), len(runs), *per_metric])
    kinds = sorted({(str(r.scores.get("data")), _movies(r)) for _, runs in result["groups"] for r in runs})
    sources = " ".join(display_path(r) for r in roots)
    lines = [
        "# Comparison of runs",
        "",
        (f"Written by `python experiments/compare.py {sources}`: {result['n_runs']} run(s) in "
         f"{len(result['groups'])} group(s), grouped by {', '.join(f'`{k}`' for k in keys) or 'nothing'}; "
         f"sorted by `{result['metric']}` (best first)."),
        "",
        "Data: " + "; ".join(f"`{data}` ({MOVIES.get(kind, kind)})" for data, kind in kinds) + ".",
        "",
    ]
    if result["unfinished"]:
        lines += [("Runs without scores (failed or unfinished, not counted): "
                   f"{', '.join(display_path(p) for p in result['unfinished'])}."), ""]
    lines += [markdown_table([*keys, "runs", *metrics], rows), ""]
    lines += [("Mean ± sample standard deviation over the runs of a group (over the held-out FOVs for "
               "leave-one-FOV-out folds); `objective`: the value the sweeper optimised "
               "(`optimized_metric`). Per-run numbers: the `.csv`; figure: the `.png`."), ""]
    return "\n".join(lines)


def csv_rows(result: dict) -> str:
    """One row per run: its folder, group values and metrics."""
    keys, metrics = result["keys"], result["metrics"]
    body = []
    for values, runs in result["groups"]:
        for run in runs:
            vals = run_values(run, metrics)
            body.append([run.label, run.scores.get("fold"), *values, *(vals[m] for m in metrics)])
    return csv_text(["run", "fold", *keys, *metrics], body)


def figure(result: dict):
    """One panel per metric column: a box and strip of each group."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    metrics, groups = result["metrics"], result["groups"]
    labels = [_label(result["keys"], values) for values, _ in groups]
    short = [lab if len(lab) <= 28 else lab[:26] + "…" for lab in labels]
    ncols = 2 if len(groups) <= 6 and len(metrics) > 1 else 1
    nrows = -(-len(metrics) // ncols)
    width = max(4.0, 0.6 * len(groups) + 1.5)
    fig, axes = plt.subplots(nrows, ncols, figsize=(width * ncols, 2.8 * nrows), squeeze=False)
    for ax in axes.ravel()[len(metrics):]:
        ax.set_visible(False)
    for ax, name in zip(axes.ravel(), metrics):  # loop over panels
        values = [[run_values(r, [name])[name] for r in runs] for _, runs in groups]
        finite = [v for g in values for v in g if v is not None]
        within = all(0.0 <= v <= 1.0 for v in finite)
        box_strip(ax, values, short, title=name, ylim=(0.0, 1.02) if within else None)
        ax.tick_params(axis="x", labelrotation=30 if len(groups) > 3 else 0, labelsize=8)
    fig.tight_layout()
    return fig


def main(argv: list[str] | None = None) -> int:
    """Command line; returns the exit status."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("dirs", type=Path, nargs="+", help="multirun folders (or any folders of runs)")
    parser.add_argument("--out", type=Path, default=None,
                        help="NAME.md (NAME.csv and NAME.png beside it); default DIR/compare.md of the first DIR")
    parser.add_argument("--by", action="append", default=None,
                        help="group by this override key (repeatable); default: every key that varies")
    parser.add_argument("--ignore", action="append", default=None,
                        help=f"never group by this key (repeatable; default {', '.join(DEFAULT_IGNORE)})")
    parser.add_argument("--metric", default=None, help="sort by this column (default: objective or test/astra_f1)")
    args = parser.parse_args(argv)
    ignore = list(DEFAULT_IGNORE) + list(args.ignore or [])
    try:
        result = gather(args.dirs, by=args.by, ignore=ignore, metric=args.metric)
    except RunsError as err:
        print(f"compare: error: {err}", file=sys.stderr)
        return 2
    out = args.out or args.dirs[0] / "compare.md"
    paths = write_outputs(out, markdown(result, args.dirs), csv_rows(result), figure(result))
    print(f"{result['n_runs']} run(s) in {len(result['groups'])} group(s) -> "
          f"{', '.join(display_path(p) for p in paths)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
