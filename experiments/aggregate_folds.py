"""The paper's table from a leave-one-FOV-out multirun: per-FOV and mean ± sd ASTRA scores.

Usage::

    python experiments/aggregate_folds.py DIR [--out experiments/results/NAME.md] [--soma-only]

``DIR`` is the multirun folder of one protocol, e.g. the one written by
``astro3s-train -m experiment=paper_d1_standin 'data.fold=range(24)'``
(``logs/paper_d1_standin_dense_up/multiruns/<date>``). Every run below it
that finished testing left a ``scores.json`` (see :mod:`astro3s.cli.train`);
its held-out FOV's detection, soma and process precision, recall and F1
(ASTRA's definition, :mod:`astro3s.metrics`) become one row. Writes

- ``NAME.md``: what was run (model, data, stand-in or real movies, number of
  folds, failed or unfinished runs), the per-FOV table and the mean ± sd
  over FOVs (sample standard deviation), as reported in the paper;
- ``NAME.csv``: the same rows (and ``mean``, ``sd`` rows) as numbers;
- ``NAME.png``: a box and strip plot of each score over the FOVs.

``--out`` defaults to ``DIR/folds.md``. The runs must share one protocol
(task, model and data); a FOV tested twice (two multiruns in one folder) is
an error. Missing scores show as –; ``--soma-only`` blanks the process
columns, for soma-only annotations such as D3's (where a predicted process
otherwise counts as a false positive against an empty annotation).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

if __package__ in (None, ""):  # run as a script: _runs sits beside it
    sys.path.insert(0, str(Path(__file__).resolve().parent))

from _runs import (  # noqa: E402
    ASTRA_KEYS,
    PARTS,
    SHORT,
    STATS,
    RunsError,
    box_strip,
    csv_text,
    display_path,
    find_runs,
    fmt,
    fmt_mean_sd,
    fov_rows,
    markdown_table,
    mean_sd,
    write_outputs,
)

PROTOCOL_KEYS = ("task_name", "model", "data")


def _protocol(runs) -> dict[str, object]:
    """The task, model and data shared by the runs; RunsError when they differ."""
    shared: dict[str, object] = {}
    for key in PROTOCOL_KEYS:
        values = sorted({str(r.scores.get(key)) for r in runs})
        if len(values) > 1:
            raise RunsError(f"the runs mix several {key}s ({', '.join(values)}): give the multirun folder of "
                            "one protocol, or compare protocols with experiments/compare.py")
        shared[key] = runs[0].scores.get(key)
    shared["standin"] = any(r.scores.get("standin") for r in runs)
    shared["movies"] = runs[0].scores.get("movies") or ("stand-in" if shared["standin"] else "unrecorded")
    shared["split"] = runs[0].scores.get("split")
    shared["dataset"] = runs[0].scores.get("dataset")
    return shared


def gather(root: str | Path, *, soma_only: bool = False) -> tuple[dict[str, object], list[dict], list[Path]]:
    """Protocol, per-FOV rows (sorted by fold) and unfinished run folders of a multirun folder."""
    runs, unfinished = find_runs([root])
    protocol = _protocol(runs)
    protocol["soma_only"] = soma_only
    rows = [row for run in runs for row in fov_rows(run)]
    if soma_only:
        for row in rows:
            row.update({f"process_{stat}": None for stat in STATS})
    seen: dict[str, str] = {}
    for row in rows:  # loop over FOVs
        if row["fov"] in seen:
            raise RunsError(f"FOV {row['fov']} was tested by two runs ({seen[row['fov']]} and {row['run']}): "
                            "give the folder of one multirun")
        seen[row["fov"]] = row["run"]
    rows.sort(key=lambda r: (r["fold"] is None, r["fold"] if isinstance(r["fold"], int) else 0, r["fov"]))
    return protocol, rows, unfinished


def _header() -> list[str]:
    return ["fold", "FOV"] + [f"{part} {SHORT[stat]}" for part in PARTS for stat in STATS]


def markdown(protocol: dict[str, object], rows: list[dict], unfinished: list[Path], root: Path) -> str:
    """The report: what was run, the per-FOV table and the mean ± sd row."""
    what = {"stand-in": "**stand-ins** (simulated movies on the real annotated cell layouts), not the real movies",
            "simulated": "**simulated** movies, not the real movies",
            "real": "the real movies"}.get(str(protocol["movies"]), "movies not recorded")
    lines = [
        f"# {protocol['task_name']}: leave-one-FOV-out test scores",
        "",
        f"Written by `python experiments/aggregate_folds.py {display_path(root)}`. "
        f"Model `{protocol['model']}`, data `{protocol['data']}`"
        + (f" ({protocol['dataset']})" if protocol.get("dataset") else "") + f": {what}. "
        f"{len(rows)} test FOV(s) (split `{protocol['split']}`"
        + ("; each held out and scored by the network trained on all the other FOVs" if protocol["split"] == "loo"
           else "") + "), scored with ASTRA's definition (`astro3s.metrics`).",
        "",
    ]
    if unfinished:
        lines += [("Runs without scores (failed or unfinished, not in the table): "
                   f"{', '.join(display_path(p) for p in unfinished)}."), ""]
    body = [[r["fold"], r["fov"], *(fmt(r[k]) for k in ASTRA_KEYS)] for r in rows]
    body.append(["", "**mean ± sd**", *(fmt_mean_sd(r[k] for r in rows) for k in ASTRA_KEYS)])
    lines += [markdown_table(_header(), body), ""]
    lines += ["Mean ± sample standard deviation over the held-out FOVs; – : no value (no matched cell, or no "
              "process annotation"
              + ("; process scores left out: the annotations are soma-only" if protocol.get("soma_only") else "")
              + "). Figure: the `.png` beside this file; numbers: the `.csv`.", ""]
    return "\n".join(lines)


def csv_rows(rows: list[dict]) -> str:
    """Per-FOV rows, then ``mean`` and ``sd`` rows."""
    body = [[r["fold"], r["fov"], *(r[k] for k in ASTRA_KEYS)] for r in rows]
    stats = [mean_sd(r[k] for r in rows) for k in ASTRA_KEYS]
    body.append(["", "mean", *(s[0] for s in stats)])
    body.append(["", "sd", *(s[1] for s in stats)])
    return csv_text(["fold", "fov", *ASTRA_KEYS], body)


def figure(protocol: dict[str, object], rows: list[dict]):
    """Box and strip plot per score: one panel per part (detection, soma, process), P/R/F1 in each."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(PARTS), figsize=(4 * len(PARTS), 3.6), sharey=True)
    for ax, part in zip(axes, PARTS):  # loop over panels
        box_strip(ax, [[r[f"{part}_{stat}"] for r in rows] for stat in STATS], [SHORT[s] for s in STATS],
                  title=part)
    axes[0].set_ylabel("score on the held-out FOV")
    label = {"stand-in": " (stand-ins)", "simulated": " (simulated)"}.get(str(protocol["movies"]), "")
    fig.suptitle(f"{protocol['task_name']}{label}: {len(rows)} FOV(s)")
    fig.tight_layout()
    return fig


def main(argv: list[str] | None = None) -> int:
    """Command line; returns the exit status."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("dir", type=Path, help="multirun folder (logs/<task_name>/multiruns/<date>)")
    parser.add_argument("--out", type=Path, default=None,
                        help="NAME.md (NAME.csv and NAME.png beside it); default DIR/folds.md")
    parser.add_argument("--soma-only", action="store_true",
                        help="leave out the process scores (soma-only annotations, e.g. D3)")
    args = parser.parse_args(argv)
    try:
        protocol, rows, unfinished = gather(args.dir, soma_only=args.soma_only)
    except RunsError as err:
        print(f"aggregate_folds: error: {err}", file=sys.stderr)
        return 2
    out = args.out or args.dir / "folds.md"
    paths = write_outputs(out, markdown(protocol, rows, unfinished, args.dir), csv_rows(rows),
                          figure(protocol, rows))
    print(f"{len(rows)} FOV(s), {len(unfinished)} run(s) without scores -> "
          f"{', '.join(display_path(p) for p in paths)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
