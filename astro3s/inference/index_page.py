"""``index.html``: every movie of an output folder on one static page.

Built from the rows of the batch index (``index.csv``, see
:mod:`astro3s.inference.batch`): per movie its ``overlay.png`` as a thumbnail
(linked, not copied; a click opens ``summary.png``), its status, cell count,
CC threshold and time, links to its files, and the error of a failed movie.
No script, no server: the page opens from disk, its links are relative to it.
It is rewritten atomically with the index, after every movie.
"""

from __future__ import annotations

import html
import os
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote

__all__ = ["LINKED_FILES", "MovieEntry", "index_entries", "page_path", "render_index", "write_index_html"]

#: Files of an output folder linked from the page, in this order, when present.
LINKED_FILES = ("summary.png", "overlay.png", "traces.png", "traces.csv", "events.csv", "summary.json",
                "RoiSet.zip", "soma.tif", "processes.tif", "domains.tif", "cc_maps.npz")
#: width of a thumbnail, CSS pixels
THUMB_WIDTH = 300
#: temporary copies of the page older than this were left by a killed run
_STALE_S = 120.0

_STATUS_COLOURS = {"done": "#1a7f37", "skipped": "#57606a", "failed": "#c62828"}

_STYLE = """
body { font-family: system-ui, -apple-system, "Segoe UI", Roboto, sans-serif; margin: 1.5em; color: #1f2328; }
h1 { font-size: 1.4em; margin: 0 0 0.2em 0; }
.meta { color: #57606a; margin-bottom: 1.2em; }
.grid { display: flex; flex-wrap: wrap; gap: 16px; }
.card { border: 1px solid #d0d7de; border-radius: 6px; padding: 10px; width: %dpx; }
.card.failed { border-color: #c62828; background: #fff5f5; }
.card img { display: block; border-radius: 3px; }
.name { font-weight: 600; margin: 6px 0 2px 0; word-break: break-all; }
.status { font-weight: 600; }
.counts { color: #1f2328; margin: 2px 0; }
.links { font-size: 0.85em; line-height: 1.6; }
.links a { margin-right: 0.6em; }
.error { color: #c62828; font-family: ui-monospace, monospace; font-size: 0.85em; white-space: pre-wrap;
         word-break: break-word; }
.nofig { width: %dpx; height: 120px; display: flex; align-items: center; justify-content: center;
         background: #f6f8fa; color: #57606a; border-radius: 3px; }
""" % (THUMB_WIDTH, THUMB_WIDTH)


@dataclass(frozen=True)
class MovieEntry:
    """One movie as the page shows it.

    Attributes
    ----------
    name : str
        The movie's file name.
    movie : str
        The movie's path as the index records it.
    status : str
        ``done``, ``skipped`` or ``failed``.
    counts : str
        Cell count, CC threshold and seconds, as one line ("" when unknown).
    error : str
        The one-line error of a failed movie.
    thumbnail : str or None
        Link to ``overlay.png`` (None when absent).
    target : str or None
        What a click on the thumbnail opens (``summary.png``, else ``overlay.png``).
    links : tuple of (str, str)
        ``(file name, link)`` of every :data:`LINKED_FILES` present.
    folder : str or None
        Link to the output folder.
    """

    name: str
    movie: str
    status: str
    counts: str
    error: str
    thumbnail: str | None
    target: str | None
    links: tuple[tuple[str, str], ...]
    folder: str | None


def page_path(index_csv: str | Path) -> Path:
    """The page beside an index CSV: ``index.csv`` -> ``index.html`` (``name.html`` added if that is the CSV)."""
    index_csv = Path(index_csv)
    page = index_csv.with_suffix(".html")
    return page if page != index_csv else index_csv.with_name(index_csv.name + ".html")


def _href(target: Path, base: Path) -> str:
    """A link to ``target`` from a page in ``base``: relative (percent-encoded) when possible, else a file URI."""
    target, base = target.absolute(), base.absolute()
    try:
        rel = os.path.relpath(target, base)
    except ValueError:  # another drive (Windows)
        return target.as_uri()
    return quote(Path(rel).as_posix())


def output_folder(row: Mapping[str, str], out_dir: Path) -> Path | None:
    """The output folder of an index row: as recorded, else ``out_dir/<folder name>``; None when neither exists."""
    recorded = (row.get("output") or "").strip()
    if not recorded:
        return None
    folder = Path(recorded)
    if folder.is_dir():
        return folder
    moved = out_dir / folder.name  # an index written from another working directory, or a moved folder
    return moved if moved.is_dir() else None


def _counts(row: Mapping[str, str]) -> str:
    parts = []
    if (row.get("n_cells") or "").strip():
        n = row["n_cells"].strip()
        parts.append(f"{n} cell{'' if n == '1' else 's'}")
    if (row.get("threshold") or "").strip():
        parts.append(f"CC threshold {row['threshold'].strip()}")
    try:
        seconds = float(row.get("seconds") or "")
    except ValueError:
        seconds = None
    if seconds:
        parts.append(f"{seconds:.1f} s")
    return " · ".join(parts)


def index_entries(rows: Iterable[Mapping[str, str]], out_dir: str | Path) -> list[MovieEntry]:
    """What the page shows for each row of a batch index (rows as :func:`~astro3s.inference.read_index` gives).

    Parameters
    ----------
    rows : iterable of mapping
        Columns ``movie``, ``status``, ``n_cells``, ``threshold``, ``seconds``,
        ``output``, ``error``.
    out_dir : str or Path
        The folder the page is written to; links are relative to it.

    Returns
    -------
    list of MovieEntry
        In the order of the rows; links only to files that exist.
    """
    out_dir = Path(out_dir)
    entries = []
    for raw in rows:  # a loop over movies
        row = {str(k): "" if v is None else str(v) for k, v in raw.items()}  # CSV text or MovieResult.as_row()
        movie = row.get("movie", "").strip()
        folder = output_folder(row, out_dir)
        present = [name for name in LINKED_FILES if folder is not None and (folder / name).is_file()]
        links = tuple((name, _href(folder / name, out_dir)) for name in present) if folder is not None else ()
        by_name = dict(links)
        entries.append(MovieEntry(
            name=Path(movie).name or movie or "(unnamed)", movie=movie, status=(row.get("status") or "").strip(),
            counts=_counts(row), error=(row.get("error") or "").strip(), thumbnail=by_name.get("overlay.png"),
            target=by_name.get("summary.png", by_name.get("overlay.png")), links=links,
            folder=None if folder is None else _href(folder, out_dir) + "/"))
    return entries


def _card(entry: MovieEntry) -> str:
    """The HTML of one movie (every text escaped)."""
    esc = html.escape
    status = entry.status or "unknown"
    colour = _STATUS_COLOURS.get(status, "#57606a")
    if entry.thumbnail is not None:
        picture = (f'<a href="{esc(entry.target or entry.thumbnail)}"><img src="{esc(entry.thumbnail)}" '
                   f'width="{THUMB_WIDTH}" alt="{esc(entry.name)}: cells and CC domains" loading="lazy"></a>')
    else:
        picture = f'<div class="nofig">{"failed: no outputs" if status == "failed" else "no figure"}</div>'
    name = esc(entry.name)
    if entry.folder is not None:
        name = f'<a href="{esc(entry.folder)}">{name}</a>'
    lines = [f'<div class="card {esc(status)}">', picture,
             f'<div class="name" title="{esc(entry.movie)}">{name}</div>',
             f'<div><span class="status" style="color:{colour}">{esc(status)}</span>'
             + (f' <span class="counts">· {esc(entry.counts)}</span>' if entry.counts else "") + "</div>"]
    if entry.error:
        lines.append(f'<div class="error">{esc(entry.error)}</div>')
    if entry.links:
        lines.append('<div class="links">' + " ".join(f'<a href="{esc(href)}">{esc(label)}</a>'
                                                      for label, href in entry.links) + "</div>")
    lines.append("</div>")
    return "\n".join(lines)


def render_index(entries: Sequence[MovieEntry], *, title: str, index_csv: str | None = None,
                 generated: str | None = None) -> str:
    """The whole page as text.

    Parameters
    ----------
    entries : sequence of MovieEntry
    title : str
        Heading (e.g. the output folder), escaped here.
    index_csv : str, optional
        Link to the index CSV.
    generated : str, optional
        When the page was written (default: now, local time).

    Returns
    -------
    str
        A complete HTML5 document, no script.
    """
    esc = html.escape
    generated = generated or time.strftime("%Y-%m-%d %H:%M:%S")
    counts = {s: sum(e.status == s for e in entries) for s in ("done", "skipped", "failed")}
    summary = (f"{len(entries)} movie{'s' * (len(entries) != 1)}: {counts['done']} done, "
               f"{counts['skipped']} skipped, {counts['failed']} failed")
    csv_link = f' · <a href="{esc(index_csv)}">{esc(Path(index_csv).name)}</a>' if index_csv else ""
    cards = "\n".join(_card(e) for e in entries)
    return (f'<!DOCTYPE html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n'
            f'<meta name="viewport" content="width=device-width, initial-scale=1">\n'
            f"<title>{esc(title)}</title>\n<style>{_STYLE}</style>\n</head>\n<body>\n"
            f"<h1>{esc(title)}</h1>\n"
            f'<div class="meta">{esc(summary)} · written {esc(generated)} by astro3s-infer{csv_link}</div>\n'
            f'<div class="grid">\n{cards}\n</div>\n</body>\n</html>\n')


def write_index_html(out_dir: str | Path, rows: Iterable[Mapping[str, str]], *, name: str = "index.html",
                     index_csv: str | Path | None = None) -> Path:
    """Write ``out_dir/name`` for the rows of a batch index, atomically.

    Parameters
    ----------
    out_dir : str or Path
        The output folder (the page's links are relative to it).
    rows : iterable of mapping
        Rows of the index CSV.
    name : str
        File name of the page.
    index_csv : str or Path, optional
        The index CSV, linked from the page.

    Returns
    -------
    Path
    """
    from astro3s.io import write_text
    from astro3s.io.atomic import remove_stale_parts

    out_dir = Path(out_dir)
    path = out_dir / name
    remove_stale_parts(path, older_than_s=_STALE_S)
    entries = index_entries(rows, out_dir)
    link = None if index_csv is None else _href(Path(index_csv), out_dir)
    title = f"astro3s results: {out_dir.absolute().name or out_dir.absolute()}"
    return write_text(path, render_index(entries, title=title, index_csv=link))
