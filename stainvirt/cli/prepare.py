"""``stainvirt prepare``: pack unpaired A/B image folders into a compressed ``.npz``."""

from __future__ import annotations

import argparse

from stainvirt.tissue import DEFAULT_MIN_TISSUE

DESCRIPTION = """\
Pack folders of unpaired domain A (H&E) and domain B (IHC) images into one
compressed .npz with arrays trainA, trainB, testA, testB (N, H, W, 3 uint8),
the source file and (y, x) position of every tile, and the settings used.

Folders are read recursively in sorted order: PNG, JPEG and TIFF, including
tiled/pyramidal TIFF and SVS (full resolution, level 0). Grey, RGBA (composited
on white), palette and 16-bit images are converted to 8-bit RGB with a warning.

Images are cut into non-overlapping tiles of --tile-size from the top-left; a
remainder narrower than a tile is dropped. An image smaller than --tile-size is
an error (not resized): pass a smaller --tile-size. A tile is kept when at least
--min-tissue of its pixels are tissue: coloured (max-min of RGB >= 20) or dark
(mean RGB < 200); bright grey glass is skipped as background.

Test tiles come from --test-a/--test-b folders, or else from --test-fraction of
each domain's files (split by file so neighbouring tiles never straddle train
and test). Memory stays bounded: when the tiles exceed --shard-mb, numbered
shards NAME-00000.npz, NAME-00001.npz, ... are written instead of NAME.npz;
'stainvirt train --data NAME.npz' reads either form.
"""

EPILOG = """\
example:
  stainvirt prepare --a data/sample/trainA --b data/sample/trainB \\
      --test-a data/sample/testA --test-b data/sample/testB --out data/stain.npz
"""


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the ``prepare`` subcommand."""
    p = subparsers.add_parser(
        "prepare",
        help="pack unpaired A (H&E) and B (IHC) images into a .npz",
        description=DESCRIPTION,
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--a", required=True, metavar="DIR", help="domain A (H&E) training images")
    p.add_argument("--b", required=True, metavar="DIR", help="domain B (IHC) training images")
    p.add_argument("--test-a", metavar="DIR", help="held-out domain A images")
    p.add_argument("--test-b", metavar="DIR", help="held-out domain B images")
    p.add_argument(
        "--test-fraction", type=float, default=0.1, metavar="F",
        help="share of files held out per domain without a test folder (default: 0.1)",
    )
    p.add_argument("--tile-size", type=int, default=256, metavar="PX", help="default: 256")
    p.add_argument(
        "--min-tissue", type=float, default=DEFAULT_MIN_TISSUE, metavar="F",
        help=f"tissue share a tile needs, 0 keeps all (default: {DEFAULT_MIN_TISSUE})",
    )
    p.add_argument("--seed", type=int, default=0, help="seed of the train/test split (default: 0)")
    p.add_argument(
        "--skip-bad", action="store_true",
        help="skip unreadable or non-image files and list them, instead of stopping",
    )
    p.add_argument(
        "--shard-mb", type=float, default=1024, metavar="MB",
        help="pixels per output file before sharding, in MB (default: 1024)",
    )
    p.add_argument("--out", required=True, metavar="FILE.npz", help="where to write the data set")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Run ``stainvirt prepare``."""
    from stainvirt.prepare import prepare

    summary = prepare(
        args.a, args.b, args.out,
        test_a=args.test_a, test_b=args.test_b, test_fraction=args.test_fraction,
        tile_size=args.tile_size, min_tissue=args.min_tissue, seed=args.seed,
        skip_bad=args.skip_bad, shard_mb=args.shard_mb, progress=not args.quiet,
    )
    print(summary.line())
    if summary.bad_files:
        print("skipped unreadable files:\n  " + "\n  ".join(summary.bad_files))
    return 0
