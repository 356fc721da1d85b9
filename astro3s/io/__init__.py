"""Reading and writing movies, label images, ImageJ RoiSets and output files.

Importing this package is cheap: h5py, zarr, tifffile, roifile and scikit-image
are imported inside the functions that need them.
"""

from astro3s.io.atomic import atomic_folder, atomic_path, write_json, write_text
from astro3s.io.discover import find_movies
from astro3s.io.movie import (
    MOVIE_SUFFIXES,
    Movie,
    mean_image,
    movie_choices,
    read_labels,
    read_movie,
    write_labels,
    write_movie,
)
from astro3s.io.roi import Roi, read_roiset, read_roiset_meta, write_roiset

__all__ = [
    "find_movies",
    "MOVIE_SUFFIXES",
    "Movie",
    "Roi",
    "atomic_folder",
    "atomic_path",
    "mean_image",
    "movie_choices",
    "read_labels",
    "read_movie",
    "read_roiset",
    "read_roiset_meta",
    "write_json",
    "write_labels",
    "write_movie",
    "write_roiset",
    "write_text",
]
