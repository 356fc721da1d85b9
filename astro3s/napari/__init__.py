"""napari plugin of astro3s (the extra ``astro3s[napari]``).

Contributions (declared in ``astro3s/napari.yaml``, found by napari through the
``napari.manifest`` entry point):

- a reader: movies in every format :func:`astro3s.io.read_movie` reads, opened
  lazily (:mod:`astro3s.napari._reader`), and ``astro3s-infer`` output folders
  (summary image, ``soma``/``processes``/``domains`` Labels layers with the
  per-cell table of ``summary.json`` as their features);
- the widget *Find astrocytes*: the whole method on an open movie, in a
  worker thread (:class:`astro3s.napari._widgets.FindAstrocytesWidget`);
- the widget *Curate*: the edited cells saved as ``RoiSet_curated.zip`` and
  analysed again (:class:`astro3s.napari._widgets.CurateWidget`).

napari itself is imported by the submodules only, when napari calls them.
"""

from __future__ import annotations

from importlib.util import find_spec

#: What importing this package without the extra says, in one line.
MISSING_EXTRA = 'astro3s.napari needs napari and Qt, which are not installed: pip install "astro3s[napari]"'


def _require_napari() -> None:
    """Fail with one line naming the extra when napari or its Qt binding is missing.

    ``find_spec`` looks for the packages without importing them, so this
    check costs nothing when they are present.
    """
    if any(find_spec(name) is None for name in ("napari", "qtpy")):
        raise ImportError(MISSING_EXTRA)


_require_napari()

__all__ = ["MISSING_EXTRA"]
