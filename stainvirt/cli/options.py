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


def add_resolution_options(p: argparse.ArgumentParser, default: str) -> None:
    """``--mpp`` and ``--magnification``: the resolution slides are read at.

    Args:
        p: The subcommand's parser.
        default: What happens without either option, for the help text.
    """
    group = p.add_mutually_exclusive_group()
    group.add_argument("--mpp", type=float, metavar="UM",
                       help="read images at this many microns per pixel (0.5 is the usual "
                            "20x, 0.25 40x), from the best pyramid level, resampled; files "
                            f"must record their pixel size ({default})")
    group.add_argument("--magnification", type=float, metavar="X",
                       help="read slides at this objective magnification, relative to "
                            "each slide's scanning power (a 40x slide read at 20x is halved)")


def resolution_from(args: argparse.Namespace):  # -> stainvirt.io.slide.Resolution | None
    """The :class:`~stainvirt.io.slide.Resolution` the options ask for, or None for none."""
    from stainvirt.io.slide import Resolution

    if args.mpp is None and args.magnification is None:
        return None
    return Resolution(args.mpp, args.magnification)
