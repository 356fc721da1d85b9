"""``python -m astro3s.crosscheck --out DIR``: write the cross-check family of synthetic movies.

Examples
--------
``python -m astro3s.crosscheck --out crosscheck/``
    every member, four movies each (``crosscheck/crosscheck_<member>_<k>/``).
``python -m astro3s.crosscheck --out crosscheck/ --members d1 zoom --per-member 2 --no-overview``
    two movies of each of two members, without the overview pictures.
``python -m astro3s.crosscheck --out crosscheck_fresh/ --first-index 4``
    four more movies of every member (indices 4-7).
"""

from __future__ import annotations

import argparse
import logging
import sys
import time
from collections.abc import Sequence

log = logging.getLogger("astro3s.crosscheck")


def _parser() -> argparse.ArgumentParser:
    from astro3s.crosscheck.members import MEMBER_ORDER

    parser = argparse.ArgumentParser(prog="python -m astro3s.crosscheck",
                                     description="Write the cross-check family of synthetic astrocyte movies "
                                                 "(3-D cells imaged through an optical section).")
    parser.add_argument("--out", required=True, help="output folder")
    parser.add_argument("--members", nargs="+", choices=MEMBER_ORDER, default=None, metavar="MEMBER",
                        help=f"members to write (default: all of {', '.join(MEMBER_ORDER)})")
    parser.add_argument("--per-member", type=int, default=4, help="movies per member (default 4)")
    parser.add_argument("--first-index", type=int, default=0, help="index of each member's first movie (default 0)")
    parser.add_argument("--overview", action=argparse.BooleanOptionalAction, default=True,
                        help="write overview.png for each movie (default: yes)")
    parser.add_argument("--scale", type=float, default=1.0,
                        help="FOV side x scale, object counts x scale^2 (default 1 = full size)")
    parser.add_argument("--n-frames", type=int, default=None, help="override the number of frames")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point; returns the exit status."""
    args = _parser().parse_args(argv)
    if args.per_member < 1 or args.scale <= 0 or (args.n_frames is not None and args.n_frames < 2):
        print("--per-member must be >= 1, --scale > 0 and --n-frames >= 2", file=sys.stderr)
        return 2
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s: %(message)s")
    from astro3s.crosscheck.write import generate_family

    start = time.perf_counter()
    folders = generate_family(args.out, members=args.members, per_member=args.per_member,
                              first_index=args.first_index, overview=args.overview, scale=args.scale,
                              n_frames=args.n_frames)
    log.info("%d movies in %s (%.0f s)", len(folders), args.out, time.perf_counter() - start)
    return 0


if __name__ == "__main__":
    sys.exit(main())
