"""Does a recipe colour a label-free greyscale image as H&E? Prints figures; not a test.

Label-free images (quantitative phase, autofluorescence, X-ray CT) are one
channel, often 16-bit, and their brightness follows the tissue's physics, not
a stain. Here the greyscale domain B (A stays H&E, as everywhere in stainvirt)
is made from the bundled H&E by a fixed mapping that keeps structure and looks
like autofluorescence: colour deconvolution (``skimage.color.rgb2hed``) gives
hematoxylin and eosin optical densities H and E, and the grey value is
``500 + 100000 * max(E - 0.5 H, 0)`` as 16-bit: bright in stroma and cytoplasm,
dark in nuclei and on glass. Colouring it back is not per pixel: a nucleus and
the glass have the same grey value, and only their shape and surroundings tell
them apart (a nucleus is a small dark blob inside bright tissue).

The bundled H&E tiles (data/sample/trainA) are split at random: one half stays
H&E (A), the other becomes 16-bit greyscale PNGs (B), so training is unpaired;
``stainvirt prepare`` packs them (B detected as a native 1-channel uint16
domain, percentile range). Variants train for the same fixed number of steps
with the same seed; G_BA then colours the held-out regions (data/sample/testA
made greyscale, 256 px tiles), scored against the true H&E with PSNR and SSIM
(``stainvirt.evaluate.metrics``, uint8), and G_AB turns the H&E into greyscale,
scored against the true grey (``stainvirt.evaluate.intensity.scores``: PSNR and
SSIM on intensities scaled to [0, 1] by the domain's range). For B -> A it also
prints the sharpness: the mean absolute Laplacian of the grey output over that
of the true H&E (below 1 blurrier), which tells a blur from detail.

Baselines for B -> A: the grey image itself shown as RGB (the identity), its
inverse (glass white, as in a brightfield image) and the per-pixel oracle: the
mean H&E colour of each grey level, fitted on the A training tiles through the
known mapping, which is the best any per-pixel colouring can do. For A -> B:
the inverted luminance of the H&E.

    python bench/learns_labelfree.py                  # the presets' 3,000 steps per variant
    python bench/learns_labelfree.py --only 3,4       # the context preset, without and with
                                                      # the structure loss
    python bench/learns_labelfree.py --pairs --only 5,6,7  # registered pairs (the same section
                                                           # imaged before and after staining)
    python bench/learns_labelfree.py --epochs 2       # a smoke run
    python bench/learns_labelfree.py --figure lf.png  # and draw the virtual H&E
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import numpy as np  # noqa: E402
from learns import SAMPLE, TILE, draw_tiles  # noqa: E402
from learns_paired import detail  # noqa: E402
from PIL import Image  # noqa: E402
from skimage.color import rgb2hed  # noqa: E402

from stainvirt.config import preset  # noqa: E402
from stainvirt.dataset import load_prepared  # noqa: E402
from stainvirt.domain import Domain  # noqa: E402
from stainvirt.evaluate.intensity import scores as intensity_scores  # noqa: E402
from stainvirt.io.images import list_images, read_image  # noqa: E402
from stainvirt.prepare import prepare  # noqa: E402
from stainvirt.rundir import RunDir  # noqa: E402
from stainvirt.slide_tiles import grid  # noqa: E402

VARIANTS = [  # (row name, preset, config overrides)
    ("cpu preset", "cpu", {}),
    ("cpu + structure loss (1.0)", "cpu", {"lambda_structure": 1.0}),
    ("context preset", "context", {}),
    ("context + structure loss (1.0)", "context", {"lambda_structure": 1.0}),
    ("paired-context preset (pairs)", "paired-context", {}),
    ("paired-context + structure (pairs)", "paired-context", {"lambda_structure": 1.0}),
    ("supervised-only plain L1 (pairs)", "paired-context",
     {"lambda_adversarial": 0.0, "lambda_cycle": 0.0, "paired_levels": 1}),
]


def label_free(rgb: np.ndarray) -> np.ndarray:
    """The known H&E -> 16-bit greyscale mapping: bright stroma, dark nuclei and glass."""
    hed = np.clip(rgb2hed(rgb), 0, None)
    grey = 500.0 + 100000.0 * np.clip(hed[..., 1] - 0.5 * hed[..., 0], 0, None)
    return np.clip(np.round(grey), 0, 65535).astype(np.uint16)


def write_folders(root: Path, seed: int, pairs: bool = False) -> dict[str, np.ndarray]:
    """Folders (A: H&E PNGs, B: greyscale PNGs) and the test tiles with their truths.

    Unpaired, A and B hold different halves of the training tiles (a seeded split);
    with ``pairs`` every training tile is in both, alike named: registered pairs,
    as the same section imaged label-free and again after staining.
    """
    train = [read_image(f) for f in list_images(SAMPLE / "trainA")]
    order = np.random.default_rng(seed).permutation(len(train))
    half = len(train) // 2
    a_tiles, b_tiles = (order, order) if pairs else (order[:half], order[half:])
    for name in ("trainA", "trainB", "testA", "testB"):
        (root / name).mkdir(parents=True)
    for i in a_tiles:
        Image.fromarray(train[i]).save(root / "trainA" / f"tile{i:02d}.png")
    for i in b_tiles:
        Image.fromarray(label_free(train[i])).save(root / "trainB" / f"tile{i:02d}.png")
    he = np.stack([image[y : y + TILE, x : x + TILE]
                   for image in map(read_image, list_images(SAMPLE / "testA"))
                   for y, x in grid(*image.shape[:2], TILE)])
    for k, tile in enumerate(he):
        Image.fromarray(tile).save(root / "testA" / f"region{k}.png")
        Image.fromarray(label_free(tile)).save(root / "testB" / f"region{k}.png")
    return {"he": he, "grey": np.stack([label_free(t) for t in he]),
            "train_he": np.stack([train[i] for i in a_tiles])}


def oracle(train_he: np.ndarray, domain: Domain, bins: int = 256):
    """The per-pixel oracle: mean H&E colour per grey level (fitted through the known mapping)."""
    level = np.round((domain.to_net(label_free(train_he)) + 1) / 2 * (bins - 1)).astype(int)
    colours = np.zeros((bins, 3))
    for c in range(3):
        colours[:, c] = np.bincount(level.ravel(), train_he[..., c].ravel(), bins)
    counts = np.bincount(level.ravel(), minlength=bins)
    seen = counts > 0
    colours[seen] /= counts[seen, None]
    for c in range(3):  # levels never seen take their nearest seen neighbours' colour
        colours[~seen, c] = np.interp(np.flatnonzero(~seen), np.flatnonzero(seen), colours[seen, c])

    def apply(grey: np.ndarray) -> np.ndarray:
        level = np.round((domain.to_net(grey) + 1) / 2 * (bins - 1)).astype(int)
        return np.round(colours[level]).astype(np.uint8)

    return apply


def needs_pairs(number: int) -> bool:
    """Whether variant ``number`` (1-based) has a supervised loss, which needs registered pairs."""
    _, preset_name, overrides = VARIANTS[number - 1]
    return preset(preset_name, **overrides).lambda_paired > 0


def run_model(model, tiles: np.ndarray, source: Domain, target: Domain) -> np.ndarray:
    """A generator over tiles, one at a time: stored pixels in, stored pixels out."""
    return np.stack([target.from_net(model(source.to_net(t[None]), training=False))[0]
                     for t in tiles])


def scores(predicted: np.ndarray, target: np.ndarray, domain: Domain) -> tuple[float, float]:
    """Mean PSNR (dB) and SSIM over tiles, as ``stainvirt evaluate`` scores the domain."""
    pairs = [tuple(intensity_scores(p, t, domain).values())
             for p, t in zip(predicted, target, strict=True)]
    return tuple(float(v) for v in np.mean(pairs, axis=0))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--epochs", type=int,
                   help="epochs at the constant rate, then as many decaying, of 100 steps "
                        "(default: the presets' 15 + 15)")
    p.add_argument("--seed", type=int, default=0, help="seeds the A/B split and the runs")
    p.add_argument("--only", default="", help="comma-separated variant numbers (1-based)")
    p.add_argument("--pairs", action="store_true",
                   help="train on registered pairs: every training tile in both domains "
                        "(needed by the paired-context variants)")
    p.add_argument("--figure", type=Path, help="draw the test tiles coloured by each row here")
    args = p.parse_args()

    from stainvirt.training.trainer import train

    chosen = [int(v) for v in args.only.split(",") if v] or [
        n for n in range(1, len(VARIANTS) + 1) if args.pairs or not needs_pairs(n)]
    if not args.pairs and any(needs_pairs(n) for n in chosen):
        p.error("a paired preset needs --pairs")
    with tempfile.TemporaryDirectory(prefix="learns-labelfree-") as tmp:
        root = Path(tmp)
        truth = write_folders(root / "images", args.seed, args.pairs)
        data = root / "labelfree.npz"
        prepare(root / "images" / "trainA", root / "images" / "trainB", data,
                test_a=root / "images" / "testA", test_b=root / "images" / "testB",
                tile_size=TILE, min_tissue=0.0, paired=args.pairs, progress=False)
        grey_domain = load_prepared(data).domains["B"]
        print(f"domain B: {grey_domain.describe()}")
        lum = truth["he"].astype(np.float32) @ np.array([0.299, 0.587, 0.114], np.float32)
        inverse = grey_domain.from_net(1 - lum[..., None] / 127.5)  # white glass -> low end
        grey = truth["grey"][..., None]
        grey8 = np.round((grey_domain.to_net(grey) + 1) * 127.5).astype(np.uint8)
        b2a = {
            "identity (grey as RGB)": np.repeat(grey8, 3, -1),
            "inverted grey": np.repeat(255 - grey8, 3, -1),
            "per-pixel oracle": oracle(truth["train_he"], grey_domain)(truth["grey"]),
        }
        a2b = {"inverted luminance": inverse}
        for number in chosen:
            name, preset_name, overrides = VARIANTS[number - 1]
            schedule = {"epochs": args.epochs, "epochs_decay": args.epochs} if args.epochs else {}
            cfg = preset(preset_name, seed=args.seed, **schedule, **overrides)
            run_dir = root / f"run{number}"
            started = time.monotonic()
            result = train(data, run_dir, cfg, verbose=0)
            minutes = (time.monotonic() - started) / 60
            run = RunDir(run_dir)
            rgb = Domain()
            b2a[name] = run_model(run.load_generator("B2A"), grey, grey_domain, rgb)
            a2b[name] = run_model(run.load_generator("A2B"), truth["he"], rgb, grey_domain)
            print(f"{name}: {result.steps_done} steps in {minutes:.1f} min")

    data_kind = "on registered pairs" if args.pairs else "unpaired"
    print(f"\ntest: {len(truth['he'])} tiles of {TILE} px, seed {args.seed}, "
          f"trained {data_kind}")
    print(f"{'B -> A (grey to H&E)':36}{'PSNR (dB)':>10}{'SSIM':>8}{'sharp':>8}")
    true_detail = detail(truth["he"])
    for name, predicted in b2a.items():
        db, sim = scores(predicted, truth["he"], Domain())
        print(f"{name:36}{db:10.2f}{sim:8.3f}{detail(predicted) / true_detail:8.3f}")
    print(f"\n{'A -> B (H&E to grey)':36}{'PSNR (dB)':>10}{'SSIM':>8}")
    for name, predicted in a2b.items():
        db, sim = scores(predicted, grey, grey_domain)
        print(f"{name:36}{db:10.2f}{sim:8.3f}")
    if args.figure:
        draw_tiles(args.figure, {**b2a, "true H&E": truth["he"]})


if __name__ == "__main__":
    main()
