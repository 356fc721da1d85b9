"""``python -m astro3s.heldout --out DIR``: write the held-out family of synthetic movies.

Examples
--------
``python -m astro3s.heldout --out heldout/``
    every member, four movies each (``heldout/heldout_<member>_<k>/``).
``python -m astro3s.heldout --out heldout/ --members giant border --per-member 2 --no-overview``
    two movies of each of two members, without the overview pictures.
``python -m astro3s.heldout --out heldout_fresh/ --first-index 4``
    four more movies of every member (indices 4-7), on seeds the reported family does not use.
"""

from __future__ import annotations

import argparse
import logging
import sys
import time
from collections.abc import Sequence

log = logging.getLogger("astro3s.heldout")


def _parser() -> argparse.ArgumentParser:
    from astro3s.heldout.members import MEMBER_ORDER

    parser = argparse.ArgumentParser(prog="python -m astro3s.heldout",
                                     description="Write the held-out family of synthetic astrocyte movies.")
    parser.add_argument("--out", required=True, help="output folder")
    parser.add_argument("--members", nargs="+", choices=MEMBER_ORDER, default=None, metavar="MEMBER",
                        help=f"members to write (default: all of {', '.join(MEMBER_ORDER)})")
    parser.add_argument("--per-member", type=int, default=4, help="movies per member (default 4)")
    parser.add_argument("--first-index", type=int, default=0,
                        help="index of each member's first movie (default 0; 4: fresh seeds after the reported family)")
    parser.add_argument("--overview", action=argparse.BooleanOptionalAction, default=True,
                        help="write overview.png for each movie (default: yes)")
    parser.add_argument("--scale", type=float, default=1.0,
                        help="spatial scale of FOVs and object counts (default 1 = full size)")
    parser.add_argument("--frames", type=int, default=None, help="override the number of frames")
    parser.add_argument("--layouts", nargs="?", const="shipped", default=None, metavar="CONSENSUS_DIR",
                        help="instead of the members: one movie on every annotated layout of ASTRA's datasets "
                             "(astro3s.heldout.layouts; default: the consensus folder of the annotations shipped "
                             "with astro3s), the layouts that train the bundled model left out")
    parser.add_argument("--datasets", nargs="+", choices=("D1", "D2", "D3", "D4"), default=None,
                        help="with --layouts: datasets to write (default: all four)")
    parser.add_argument("--repeat", type=int, default=0,
                        help="with --layouts: another draw (1-9) of everything but the cells, names ending _r<N>")
    parser.add_argument("--include-training-layouts", action="store_true",
                        help="with --layouts: also the layouts the bundled model was trained on")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Command-line entry point; returns the exit status."""
    args = _parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if args.per_member < 1:
        log.error("--per-member must be at least 1, got %d", args.per_member)
        return 2
    if args.first_index < 0:
        log.error("--first-index must be at least 0, got %d", args.first_index)
        return 2
    if not 0 < args.scale <= 4:
        log.error("--scale must be in (0, 4], got %g", args.scale)
        return 2
    start = time.perf_counter()
    if args.layouts is not None:
        from astro3s.heldout.layouts import write_layout_family
        from astro3s.resources import annotations_dir

        consensus = annotations_dir() / "consensus" if args.layouts == "shipped" else args.layouts
        try:
            folders = write_layout_family(consensus, args.out, datasets=args.datasets,
                                          include_training=args.include_training_layouts,
                                          overview=args.overview, n_frames=args.frames, repeat=args.repeat)
        except (FileNotFoundError, ValueError) as err:
            log.error("%s", err)
            return 2
        log.info("%d movies in %s (%.1f s)", len(folders), args.out, time.perf_counter() - start)
        return 0
    from astro3s.heldout.write import generate_family

    folders = generate_family(args.out, members=args.members, per_member=args.per_member,
                              overview=args.overview, scale=args.scale, n_frames=args.frames,
                              first_index=args.first_index)
    log.info("%d movies in %s (%.1f s)", len(folders), args.out, time.perf_counter() - start)
    return 0


if __name__ == "__main__":
    sys.exit(main())
