"""``stainvirt translate``: apply a trained generator to images and slides of any size."""

from __future__ import annotations

import argparse
from pathlib import Path

from stainvirt.cli.options import add_resolution_options, add_tiling_options, resolution_from
from stainvirt.errors import StainvirtError

FIGURE_IMAGES = 4
LISTED_OUTPUTS = 10

EXAMPLES = """\
examples:
  stainvirt translate --direction A2B --model runs/demo data/sample/testA --out out/translate
  stainvirt translate --direction A2B --model runs/demo slide7.svs --out out/ --mpp 0.5
  stainvirt translate --direction B2A --model runs/demo 'ihc/*.png' --out out/ --format tiff \\
      --figure out/figure.png

Outputs are named after their input and direction (slide7.svs -> out/slide7_A2B.ome.tif)
and have exactly the input's height and width at the resolution it is read at;
slides and TIFFs become tiled, pyramidal OME-TIFF with that pixel size, which
QuPath opens. Images larger than one tile are translated tile by tile with
overlapping, cross-faded tiles, so a slide of any size fits in a bounded amount
of memory; on slides, tiles over glass (found on a thumbnail) are copied through.

Runs on other domains than RGB stains (quantitative phase, autofluorescence,
X-ray CT: greyscale or multi-channel, 16-bit or float) read their inputs as
stored and scale them with the intensity range recorded at training, never
image by image; outputs of such a domain are OME-TIFF of its pixel type (a
one-channel 8/16-bit output may be a PNG). A TIFF stack of slices (Z, Y, X[, C])
is translated slice by slice into an OME-TIFF stack, with a figure of orthogonal
views through its middle beside it (NAME_views.png).
"""


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the ``translate`` subcommand."""
    p = subparsers.add_parser(
        "translate",
        help="translate images or slides with a trained model (H&E <-> IHC)",
        description=(
            "Translate whole slides (every format OpenSlide reads), OME-TIFF, TIFF, PNG and "
            "JPEG images with the generator of a training run: A2B turns H&E into virtual "
            "IHC, B2A the reverse. A run whose data set was prepared at an --mpp reads "
            "slides at that resolution unless told otherwise."
        ),
        epilog=EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("inputs", nargs="+", metavar="INPUT",
                   help="image files, folders (searched recursively) or glob patterns")
    p.add_argument("--direction", required=True, metavar="{A2B,B2A}",
                   help="A2B: H&E -> IHC (uses G_AB.keras); B2A: IHC -> H&E (G_BA.keras)")
    p.add_argument("--model", required=True, type=Path, metavar="RUN_DIR",
                   help="run folder written by 'stainvirt train' (e.g. runs/NAME)")
    p.add_argument("--out", required=True, type=Path, metavar="DIR",
                   help="output folder; images found in an INPUT folder keep their "
                        "sub-folders below it")
    add_tiling_options(p)
    p.add_argument("--batch-size", type=int, default=None, metavar="N",
                   help="tiles per generator call (default: 8 on a GPU, 1 on a CPU)")
    p.add_argument("--precision", default="auto", metavar="{auto,float16,float32}",
                   help="float16 computes under Keras's mixed_float16 policy: half the memory, "
                        "and faster on GPUs with tensor cores; on a CPU it is slow and only for "
                        "checking. Outputs agree with float32 to about a grey level "
                        "(default: auto, float16 when TensorFlow sees a GPU, else float32)")
    p.add_argument("--format", default=None, metavar="{png,tiff}",
                   help="png, or tiff (OME-TIFF: pyramidal and tiled for RGB, for QuPath and "
                        "other viewers; needed above 100 megapixels, for stacks and for "
                        "float or multi-channel outputs); default: tiff for TIFF and SVS "
                        "inputs and for outputs other than RGB, png otherwise")
    add_resolution_options(p, "default: the resolution the run was trained at, if its data "
                              "set was prepared with one, else each file's own")
    p.add_argument("--skip-background", action=argparse.BooleanOptionalAction, default=None,
                   help="copy tiles that are almost all glass (under 1%% tissue) through "
                        "unchanged (default: on for slides and TIFFs, judged on a thumbnail's "
                        "tissue mask; off for PNG/JPEG, judged on the tile's pixels when on; "
                        "only where both domains are RGB)")
    p.add_argument("--skip-bad", action="store_true",
                   help="exit 0 even if some images could not be read (they are still "
                        "named in an error line each)")
    p.add_argument("--views", action=argparse.BooleanOptionalAction, default=True,
                   help="write a figure of orthogonal views (XY, XZ, YZ through the middle; "
                        "input above, output below) beside each translated stack, as "
                        "NAME_views.png (default: on)")
    p.add_argument("--figure", type=Path, default=None, metavar="FILE",
                   help=f"also write a figure of the first {FIGURE_IMAGES} images: input, "
                        "translation and round trip (needs both generators of the run); "
                        ".png, .pdf or .svg")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Translate the inputs, print a summary and return the exit code."""
    from stainvirt.plotting import check_figure_path
    from stainvirt.translate import Translator, write_figure

    if args.figure:
        check_figure_path(args.figure)  # a bad name fails now, not after translating
    translator = Translator.from_run(
        args.model,
        args.direction,
        tile_size=args.tile_size,
        overlap=args.overlap,
        batch_size=args.batch_size,
        precision=args.precision,
        skip_background=args.skip_background,
        resolution=resolution_from(args),
    )
    report = translator.translate_paths(
        args.inputs, args.out, args.format, progress=not args.quiet, views=args.views
    )
    done, seconds = len(report.outputs), max(report.seconds, 1e-9)
    tissue = report.megapixels - report.glass_megapixels
    print(
        f"translated {done} image(s), {report.megapixels:.1f} megapixels, in "
        f"{report.seconds:.1f} s ({report.megapixels / seconds:.2f} MP/s) with {args.model}, "
        f"{translator.direction} in {translator.precision}, at {translator.resolution} resolution"
    )
    if report.glass_megapixels:
        print(f"  {report.glass_megapixels:.1f} MP of glass copied through; the "
              f"{tissue:.1f} MP of tissue at {tissue / seconds:.2f} MP/s")
    outputs = list(report.outputs.values())
    for out in outputs[:LISTED_OUTPUTS]:
        print(f"  {out}")
    if len(outputs) > LISTED_OUTPUTS:
        print(f"  ... and {len(outputs) - LISTED_OUTPUTS} more under {args.out}")
    views = list(report.views.values())
    for figure in views[:LISTED_OUTPUTS]:
        print(f"  views: {figure}")
    if len(views) > LISTED_OUTPUTS:
        print(f"  ... and {len(views) - LISTED_OUTPUTS} more views figures")
    if args.figure and report.outputs:
        images = list(report.outputs)[:FIGURE_IMAGES]
        print(f"figure: {write_figure(args.model, images, args.figure, translator.direction)}")
    if report.failures and not args.skip_bad:
        names = ", ".join(str(path) for path, _ in report.failures)
        raise StainvirtError(
            f"{len(report.failures)} of {done + len(report.failures)} image(s) could not be "
            f"translated ({names}); see the messages above, or pass --skip-bad to ignore them"
        )
    return 0
