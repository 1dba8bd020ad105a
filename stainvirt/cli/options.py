"""Options that several subcommands share, spelt and explained once."""

from __future__ import annotations

import argparse

from stainvirt.translate.tiling import DEFAULT_OVERLAP, DEFAULT_TILE_SIZE


def add_tiling_options(p: argparse.ArgumentParser) -> None:
    """``--tile-size`` and ``--overlap``: how images larger than one tile are translated."""
    p.add_argument("--tile-size", type=int, default=DEFAULT_TILE_SIZE, metavar="PX",
                   help="side of the tiles large images are cut into (default: %(default)s)")
    p.add_argument("--overlap", type=int, default=DEFAULT_OVERLAP, metavar="PX",
                   help="pixels neighbouring tiles share and cross-fade over, smaller than "
                        "--tile-size (default: %(default)s)")
