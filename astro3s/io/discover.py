"""Finding the movies of an ``input=`` (a file, a folder, or a glob pattern)."""

from __future__ import annotations

from pathlib import Path

from astro3s.errors import InputError

__all__ = ["find_movies"]


def find_movies(path: str | Path) -> list[Path]:
    """Movies to process for ``input=path``.

    A movie file (or a folder of TIFF frames, or a Zarr store) is itself. In a
    folder: movie files directly inside it, and simulator outputs
    ``<name>/<name>.<ext>``; ``ground_truth`` folders and hidden entries are
    never searched. A pattern with ``*``, ``?`` or ``[`` is a glob
    (``data/**/*.tif`` searches recursively).

    Raises
    ------
    InputError
        When ``path`` does not exist or holds no movie.
    """
    from astro3s.io import MOVIE_SUFFIXES

    text = str(path)
    if any(c in text for c in "*?["):
        import glob

        matches = sorted(Path(p) for p in glob.glob(text, recursive=True)
                         if not Path(p).name.startswith(".") and "ground_truth" not in Path(p).parts
                         and (Path(p).suffix.lower() in MOVIE_SUFFIXES))
        if not matches:
            raise InputError(text, "the pattern matches no movie file.",
                             f"check the pattern; movie suffixes: {', '.join(MOVIE_SUFFIXES)}.")
        return matches
    path = Path(path)
    if not path.exists():
        raise InputError(path, "does not exist.", "give a movie file or a folder of movies as input=PATH.")
    if path.is_file() or path.suffix.lower() == ".zarr":
        return [path]

    def is_movie(p: Path) -> bool:
        return p.suffix.lower() in MOVIE_SUFFIXES and not p.name.startswith(".")

    found = sorted(p for p in path.iterdir() if p.is_file() and is_movie(p))
    found += sorted(p for p in path.iterdir() if p.is_dir() and p.suffix.lower() == ".zarr")
    for sub in sorted(p for p in path.iterdir() if p.is_dir() and p.name != "ground_truth"
                      and p.suffix.lower() != ".zarr"):
        found += sorted(p for p in sub.iterdir() if is_movie(p) and p.stem == sub.name)
    if not found:
        # a folder of TIFF frames is one movie
        if any(p.suffix.lower() in (".tif", ".tiff") for p in path.iterdir()):
            return [path]
        raise InputError(path, "holds no movie file.",
                         "give a movie file or a folder with .tif/.npy/.h5/.zarr movies.")
    return found
