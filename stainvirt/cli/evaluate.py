"""``stainvirt evaluate``: score a trained model against real images and the trivial baselines."""

from __future__ import annotations

import argparse
from pathlib import Path

from stainvirt.cli.options import add_resolution_options, add_tiling_options, resolution_from

DESCRIPTION = """\
Translate every image of --source with the run's generator and score the
translations.

Paired (--paired; registered data sets such as BCI or MIST): each source image
is compared with the --target image of the same name (extension and a trailing
_A/_B/_HE/_IHC tag ignored): PSNR and SSIM as the literature computes them
(skimage.metrics, uint8, data_range=255, channel_axis=-1, 7x7 uniform window),
and stain-channel agreement by colour deconvolution (rgb2hed, black read
as one grey level so that saturated pixels do not swamp the maps): Pearson
correlation of the DAB and hematoxylin (A2B) or hematoxylin and eosin (B2A)
optical-density maps, and the Dice overlap of the DAB-positive areas (A2B).

Unpaired: the colour and stain distributions of all translations are compared
with those of the real --target images (Wasserstein-1 distances of pooled RGB
and optical-density histograms; no downloaded network), and each image goes
round the cycle (A2B then B2A) to be compared with itself: cycle PSNR/SSIM.
This needs both generators of the run. Without --target, only the cycle
metrics are reported.

--baselines scores the identity (no translation) and a Reinhard colour transfer
fitted on --target the same way, side by side with the model.

A run whose output domain is not RGB (quantitative phase, autofluorescence,
X-ray CT) is scored by PSNR and SSIM on intensities scaled to [0, 1] by the
domain's recorded range (data_range=1); the stain metrics, distribution
distances, Reinhard baseline and FID/KID, which are about RGB stains, are
skipped, and the report says so. The identity baseline is scored where the
channel counts match; a greyscale input against an RGB output is replicated
to RGB instead.

--fid adds FID and KID between the translations (and each baseline's outputs)
and the --target images, in either mode, on the 2048-d features of Keras's
ImageNet InceptionV3 (images resized to 299x299). Nothing is downloaded: the
weights come from Keras's cache (~/.keras/models, or $KERAS_HOME/models), where
`python -c "import keras; keras.applications.InceptionV3(include_top=False)"`
run once on a machine with internet puts them, or from --inception-weights.
FID is biased upwards for small sets (it needs >= 2048 images for a full-rank
covariance); KID is unbiased at any size. Both are comparable only with work
that uses the same Inception weights and preprocessing.

Written to --out: report.json (every per-image and mean figure, the settings,
the model's config; undefined correlations as null), report.md (the table, a
verdict and the settings) and worst_best.png (the worst and best images by
SSIM, or cycle SSIM when unpaired).
"""

EPILOG = """\
examples:
  stainvirt evaluate --direction A2B --model runs/demo --source bci/HE/test \\
      --target bci/IHC/test --paired --baselines --out out/eval-bci
  stainvirt evaluate --direction A2B --model runs/demo --source data/sample/testA \\
      --target data/sample/testB --baselines --out out/evaluate
  stainvirt evaluate --direction A2B --model runs/demo --source bci/HE/test \\
      --target bci/IHC/test --baselines --fid --out out/eval-fid
"""


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the ``evaluate`` subcommand."""
    p = subparsers.add_parser(
        "evaluate",
        help="score a trained model (paired or unpaired) against the trivial baselines",
        description=DESCRIPTION,
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--direction", required=True, metavar="{A2B,B2A}",
                   help="A2B: H&E -> IHC (G_AB.keras); B2A: IHC -> H&E (G_BA.keras)")
    p.add_argument("--model", required=True, type=Path, metavar="RUN_DIR",
                   help="run folder written by 'stainvirt train' (e.g. runs/NAME)")
    p.add_argument("--source", required=True, type=Path, metavar="DIR",
                   help="images of the source domain (searched recursively)")
    p.add_argument("--target", type=Path, metavar="DIR",
                   help="real images of the target domain: registered targets with --paired, "
                        "else the set to compare distributions with and fit Reinhard on")
    p.add_argument("--paired", action="store_true",
                   help="match source and target images by name and compute paired metrics")
    p.add_argument("--baselines", action="store_true",
                   help="also score the identity and a Reinhard colour transfer (need --target)")
    p.add_argument("--out", required=True, type=Path, metavar="DIR",
                   help="report folder (report.json, report.md, worst_best.png)")
    p.add_argument("--dab-threshold", type=float, default=None, metavar="OD",
                   help="DAB optical density (rgb2hed units) counted as DAB-positive "
                        "(default: 0.03, the valley between negative and positive pixels)")
    p.add_argument("--figure-images", type=int, default=3, metavar="K",
                   help="worst and best images shown in the figure, each (default: %(default)s)")
    p.add_argument("--fid", action="store_true",
                   help="also compute FID and KID against the --target images (InceptionV3 "
                        "weights from Keras's cache or --inception-weights; never downloaded)")
    p.add_argument("--inception-weights", type=Path, metavar="FILE",
                   help="InceptionV3 ImageNet no-top weights for --fid "
                        "(inception_v3_weights_tf_dim_ordering_tf_kernels_notop.h5) "
                        "instead of Keras's cache")
    add_tiling_options(p)
    add_resolution_options(p, "default: the resolution the run was trained at, if its data set "
                              "was prepared with one, else each file's own")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Evaluate, write the report and print its table."""
    from stainvirt.errors import StainvirtError
    from stainvirt.evaluate import evaluate, write_report
    from stainvirt.evaluate.metrics import DAB_THRESHOLD
    from stainvirt.evaluate.report import report_table, verdict
    from stainvirt.io.atomic import writable_folder

    if args.figure_images < 0:
        raise StainvirtError(f"--figure-images must be 0 or more, not {args.figure_images}")
    if args.inception_weights is not None and not args.fid:
        raise StainvirtError("--inception-weights is only used by --fid: add --fid or drop it")
    writable_folder(args.out)  # fail now, not after translating every image
    evaluation = evaluate(
        args.model,
        args.direction,
        args.source,
        target=args.target,
        paired=args.paired,
        baselines=args.baselines,
        tile_size=args.tile_size,
        overlap=args.overlap,
        dab_threshold=DAB_THRESHOLD if args.dab_threshold is None else args.dab_threshold,
        figure_images=args.figure_images,
        resolution=resolution_from(args),
        progress=not args.quiet,
        fid=args.fid,
        inception_weights=args.inception_weights,
    )
    paths = write_report(evaluation, args.out)
    s = evaluation.settings
    print(f"evaluated {s['n_images']} image(s), {s['direction']}, {s['mode']}, with {args.model}")
    print(report_table(evaluation))
    print(f"verdict: {verdict(evaluation)}")
    for path in paths.values():
        print(f"  {path}")
    return 0
