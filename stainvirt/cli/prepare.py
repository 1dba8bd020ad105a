"""``stainvirt prepare``: pack A/B images, slides or label-free stacks into a ``.npz``."""

from __future__ import annotations

import argparse

from stainvirt.cli.options import add_resolution_options, resolution_from
from stainvirt.prepare_native import KINDS
from stainvirt.tissue import DEFAULT_MIN_TISSUE

DESCRIPTION = """\
Pack folders of domain A (H&E) and domain B (IHC) images or whole slides
(unpaired, or registered pairs with --paired) into one compressed .npz with
arrays trainA, trainB, testA, testB (N, H, W, 3 uint8 for RGB domains), the
source file and (y, x) position (level-0 pixels) of every tile, and the
settings used.

Folders are read recursively in sorted order: whole slides through OpenSlide
(Aperio SVS, Hamamatsu NDPI, 3DHistech MRXS, Leica SCN, Ventana BIF, Philips
TIFF, DICOM), OME-TIFF and plain TIFF through tifffile (tiled, pyramidal), PNG
and JPEG. Grey, RGBA (composited on white), palette and 16-bit images are
converted to 8-bit RGB with a warning.

Resolution: --mpp 0.5 (or --magnification 20) reads every image at that pixel
size, from the best pyramid level, resampled; the data set records it, and
'stainvirt translate' reads slides the same way. Without it, images are read at
their own full resolution, with a warning if domains A and B were scanned at
different ones.

Tiles: images are cut into non-overlapping tiles of --tile-size; a remainder
narrower than a tile is dropped. An image smaller than --tile-size is an error
(not resized). A tile is kept when at least --min-tissue of its pixels are
tissue: coloured (max-min of RGB >= 20) or dark (mean RGB < 200); bright grey
glass is skipped as background. Slides (and images over 50 megapixels) are
never read whole: tissue is found on a thumbnail (Otsu on saturation, holes
filled, specks, pen marks and dark borders dropped), and only tiles over tissue
are read. --tiles-per-slide N takes at most N tiles per image, seeded and
spread over its tissue.

Test tiles come from --test-a/--test-b folders, or else from --test-fraction of
each domain's files (split by file so neighbouring tiles never straddle train
and test). Memory stays bounded: when the tiles exceed --shard-mb, numbered
shards NAME-00000.npz, NAME-00001.npz, ... are written instead of NAME.npz;
'stainvirt train --data NAME.npz' reads either form.

Label-free domains (--kind-a/--kind-b): quantitative phase, autofluorescence
or X-ray CT images are packed as stored ('native'): their channel count and
pixel type (8/16-bit or float) are kept, and every image of the domain must
share them. 'auto' (the default) packs a domain as native when its images are
grey, 16-bit, float, stacks or of more than 4 channels, and says so; whole
slides and 8-bit colour images are RGB, and so is a domain that mixes both
(convert the others, or force --kind-a native). A stack (Z, Y, X) gives one
image per slice; its tiles' source reads vol.tif#z0007 (slice 7, from 0).
Native domains have no tissue test (--min-tissue does not apply: every grid
tile is kept) and are not resampled (--mpp/--magnification are refused).
Their intensity range (--range-a/--range-b), which maps onto the networks'
[-1, 1], is fixed before any tile is written and recorded in the data set:
'auto' is 'full' for 8-bit images (0-255) and 'percentile' otherwise (the
0.5th to 99.5th percentile of a seeded sample of the domain's training pixels);
'full' is the type's whole range ([0, 1] for float); LOW,HIGH fixes it.

Registered pairs (--paired): for adjacent sections or registered H&E/IHC images
(BCI, MIST layouts), an A image and a B image of the same name are a pair: the
same path relative to --a and --b, any extension, a trailing _A/_B/_HE/_IHC tag
ignored (x_HE.png pairs with x_IHC.png); --test-a is paired with --test-b the
same way. Both images of a pair must have the same size. Tiles are chosen on
the A image as usual and the B tile is cut at the same position, so each pair
of tiles shows the same tissue; the pairs are stored as arrays train_pairs and
test_pairs (index into trainA, index into trainB; resp. testA, testB) for a
supervised loss. --test-fraction holds out whole pairs. Images without a
partner are packed as unpaired tiles, after one warning naming them.
"""

EPILOG = """\
examples:
  stainvirt prepare --a data/sample/trainA --b data/sample/trainB \\
      --test-a data/sample/testA --test-b data/sample/testB --out data/stain.npz
  stainvirt prepare --a slides/he --b slides/her2 --mpp 0.5 --tiles-per-slide 500 \\
      --skip-bad --out data/her2.npz
  stainvirt prepare --paired --a BCI/HE/train --b BCI/IHC/train \\
      --test-a BCI/HE/test --test-b BCI/IHC/test --out data/bci.npz
  stainvirt prepare --paired --a phase/train --b he/train --range-a 0,4095 \\
      --out data/phase.npz
"""


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the ``prepare`` subcommand."""
    p = subparsers.add_parser(
        "prepare",
        help="pack A (H&E) and B (IHC) images, unpaired or registered pairs, into a .npz",
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
        help=f"tissue share a tile needs, 0 keeps all (default: {DEFAULT_MIN_TISSUE}); "
        "not applied to native (label-free) domains, which keep every tile",
    )
    add_resolution_options(p, "default: each file's own")
    p.add_argument(
        "--tiles-per-slide", type=int, metavar="N",
        help="at most N tiles per image or slide, spread over its tissue (default: all)",
    )
    p.add_argument("--seed", type=int, default=0,
                   help="seed of the train/test split and of the tiles sampled (default: 0)")
    p.add_argument(
        "--skip-bad", action="store_true",
        help="skip unreadable or non-image files and list them, instead of stopping",
    )
    p.add_argument(
        "--shard-mb", type=float, default=1024, metavar="MB",
        help="pixels per output file before sharding, in MB (default: 1024)",
    )
    p.add_argument(
        "--paired", action="store_true",
        help="A and B images of the same name (any extension, a trailing _A/_B/_HE/_IHC "
        "tag ignored) are registered pairs of one size: B tiles are cut where the A tiles "
        "are and recorded as pairs for a supervised loss; images without a partner are "
        "packed unpaired",
    )
    for d in "ab":
        p.add_argument(
            f"--kind-{d}", choices=KINDS, default="auto",
            help=f"how domain {d.upper()}'s files are read: rgb (as 8-bit RGB), native "
            "(channels and pixel type kept, for label-free images) or auto (native when "
            "they are grey, 16-bit, float or stacks; default)",
        )
        p.add_argument(
            f"--range-{d}", default="auto", metavar="RANGE",
            help=f"intensity range of a native domain {d.upper()}: auto (full for 8-bit, "
            "else percentile; default), full (the type's range, [0, 1] for float), "
            "percentile (0.5-99.5 of its training pixels) or LOW,HIGH (e.g. 0,4095)",
        )
    p.add_argument("--out", required=True, metavar="FILE.npz", help="where to write the data set")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Run ``stainvirt prepare``."""
    from stainvirt.io.slide import NATIVE
    from stainvirt.prepare import prepare

    summary = prepare(
        args.a, args.b, args.out,
        test_a=args.test_a, test_b=args.test_b, test_fraction=args.test_fraction,
        tile_size=args.tile_size, min_tissue=args.min_tissue,
        resolution=resolution_from(args) or NATIVE, tiles_per_slide=args.tiles_per_slide,
        seed=args.seed,
        skip_bad=args.skip_bad, shard_mb=args.shard_mb, progress=not args.quiet,
        paired=args.paired, kind_a=args.kind_a, kind_b=args.kind_b,
        range_a=args.range_a, range_b=args.range_b,
    )
    print(summary.line())
    if summary.bad_files:
        print("skipped (unreadable, not matching its domain, or a registered pair of two "
              "sizes):\n  "
              + "\n  ".join(summary.bad_files))
    return 0
