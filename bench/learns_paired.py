"""Does supervision from registered pairs help, and does it survive misregistration? Not a test.

The known mapping of bench/learns.py (``stain_map``: eosin optical density moved
to DAB) turns each of the 25 bundled H&E tiles (data/sample/trainA, 256 px)
into its own pseudo-IHC partner, written as registered pairs (``tileK_HE.png``
with ``tileK_IHC.png``) and packed by ``prepare(..., paired=True)``. Two data
sets: pixel-exact pairs, and misregistered ones, where each mapped tile is
shifted by 2-5 px in x and in y (random sign) and rotated by -3..3 degrees
(seeded; reflected borders), as adjacent sections are. Five variants train for
the same fixed number of steps (``epochs = epochs_decay = --epochs``, 100 steps
an epoch, so the machine's load changes the minutes, not the result) with the
same seed:

    1. unpaired (cpu preset), misregistered data set (lambda_paired 0: pairs unused)
    2. paired preset (pyramid L1 + cycle + adversarial), misregistered pairs
    3. paired preset with paired_levels 1 (plain L1), misregistered pairs
    4. supervised-only plain L1 (no adversarial, no cycle), pixel-exact pairs
    5. paired preset, pixel-exact pairs

Each G_AB translates the held-out regions of data/sample/testA cut into 256 px
tiles and is scored against their pixel-exact mapping, next to the identity and
the untrained generator: PSNR and SSIM (``stainvirt.evaluate.metrics``), DAB r
(mean over tiles of the DAB optical-density correlation, nan-aware) and
sharpness (mean absolute Laplacian of the grey prediction over that of the
target: 1.0 is as sharp as the target, below 1 blurrier), all on uint8.

    python bench/learns_paired.py                 # 5 epochs: 1,000 steps per variant
    python bench/learns_paired.py --epochs 1      # 200 steps each: a smoke run
    python bench/learns_paired.py --only 2,3 --seed 1
    python bench/learns_paired.py --only 2 --set lambda_cycle=2   # presets with a field changed
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import numpy as np  # noqa: E402
from learns import (  # noqa: E402
    SAMPLE,
    TILE,
    add_set_option,
    overrides_from,
    stain_map,
    to_rgb,
    translate,
)
from PIL import Image  # noqa: E402
from scipy import ndimage  # noqa: E402

from stainvirt.config import preset  # noqa: E402
from stainvirt.evaluate.metrics import paired_metrics  # noqa: E402
from stainvirt.io.images import list_images, read_image  # noqa: E402
from stainvirt.prepare import prepare  # noqa: E402
from stainvirt.rundir import RunDir  # noqa: E402
from stainvirt.slide_tiles import grid  # noqa: E402

# name, preset, overrides, data set ("shifted" or "exact")
VARIANTS = [
    ("unpaired (cpu preset), misreg.", "cpu", {}, "shifted"),
    ("paired preset, misreg. pairs", "paired", {}, "shifted"),
    ("paired, plain L1, misreg.", "paired", {"paired_levels": 1}, "shifted"),
    ("supervised-only L1, exact", "paired",
     {"paired_levels": 1, "lambda_adversarial": 0.0, "lambda_cycle": 0.0}, "exact"),
    ("paired preset, exact pairs", "paired", {}, "exact"),
]


def misregister(rgb: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Rotate by -3..3 degrees and shift by 2-5 px (random sign) in y and x; reflected borders."""
    angle = rng.uniform(-3.0, 3.0)
    dy, dx = rng.integers(2, 6, size=2) * rng.choice([-1, 1], size=2)
    unit = rgb.astype(np.float64) / 255
    turned = ndimage.rotate(unit, angle, axes=(1, 0), reshape=False, order=3, mode="reflect")
    moved = ndimage.shift(turned, (dy, dx, 0), order=0, mode="reflect")
    return to_rgb(np.clip(moved, 0, 1))


def write_pairs(root: Path, seed: int) -> dict[str, Path]:
    """Pack the pixel-exact and the misregistered pair data sets; return their .npz files."""
    tiles = [read_image(f) for f in list_images(SAMPLE / "trainA")]
    rng = np.random.default_rng(seed)
    out = {}
    for kind in ("exact", "shifted"):
        a, b = root / kind / "A", root / kind / "B"
        a.mkdir(parents=True)
        b.mkdir(parents=True)
        for k, tile in enumerate(tiles):
            mapped = stain_map(tile)
            if kind == "shifted":
                mapped = misregister(mapped, rng)
            Image.fromarray(tile).save(a / f"tile{k}_HE.png")
            Image.fromarray(mapped).save(b / f"tile{k}_IHC.png")
        out[kind] = root / f"{kind}.npz"
        summary = prepare(a, b, out[kind], tile_size=TILE, paired=True, test_fraction=0,
                          progress=False)
        print(f"{kind}: {summary.line()}", file=sys.stderr)
    return out


def test_tiles() -> tuple[np.ndarray, np.ndarray]:
    """The held-out H&E regions cut into tiles, and their pixel-exact mapping."""
    test_a = np.stack([
        image[y : y + TILE, x : x + TILE]
        for image in map(read_image, list_images(SAMPLE / "testA"))
        for y, x in grid(*image.shape[:2], TILE)
    ])
    return test_a, np.stack([stain_map(t) for t in test_a])


def detail(tiles: np.ndarray) -> float:
    """Mean absolute Laplacian of the grey tiles (uint8 scale)."""
    grey = tiles.astype(np.float64).mean(axis=-1)
    return float(np.mean([np.abs(ndimage.laplace(g, mode="reflect")).mean() for g in grey]))


def scores(pred: np.ndarray, target: np.ndarray) -> tuple[float, float, float, float, float, int]:
    """PSNR, SSIM, nan-aware DAB r, DAB Dice, sharpness ratio, tiles where r is undefined."""
    per_tile = [paired_metrics(p, t, "A2B") for p, t in zip(pred, target, strict=True)]
    r = np.array([m["dab_corr"] for m in per_tile])
    dab = float(np.nanmean(r)) if np.isfinite(r).any() else float("nan")
    return (
        float(np.mean([m["psnr"] for m in per_tile])),
        float(np.mean([m["ssim"] for m in per_tile])),
        dab,
        float(np.mean([m["dab_dice"] for m in per_tile])),
        detail(pred) / detail(target),
        int(np.isnan(r).sum()),
    )


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--epochs", type=int, default=5,
                   help="epochs and decay epochs of 100 steps each (default 5: 1,000 steps)")
    p.add_argument("--only", default="", help="comma-separated variants to run, e.g. 2,3")
    p.add_argument("--seed", type=int, default=0, help="seeds the misregistration and the runs")
    add_set_option(p)
    args = p.parse_args()
    chosen = [int(i) for i in args.only.split(",") if i.strip()] or range(1, len(VARIANTS) + 1)
    if any(not 1 <= i <= len(VARIANTS) for i in chosen):
        p.error(f"--only takes variant numbers 1-{len(VARIANTS)}")

    from stainvirt.models import build_generator
    from stainvirt.training.trainer import train

    schedule = dict(epochs=args.epochs, epochs_decay=args.epochs, steps_per_epoch=100,
                    seed=args.seed)
    test_a, target = test_tiles()
    rows = {
        "identity": (*scores(test_a, target), None),
        "untrained G_AB": (*scores(translate(build_generator(preset("cpu", **schedule),
                                                             name="G_AB"), test_a), target), None),
    }
    with tempfile.TemporaryDirectory(prefix="learns-paired-") as tmp:
        data = write_pairs(Path(tmp), args.seed)
        for i in chosen:
            name, base, overrides, kind = VARIANTS[i - 1]
            # --set changes the preset; each variant's own changes still apply on top.
            cfg = preset(base, **{**overrides_from(args.set, base), **overrides, **schedule})
            run_dir = Path(tmp) / f"run{i}"
            started = time.monotonic()
            result = train(data[kind], run_dir, cfg, verbose=0)
            minutes = (time.monotonic() - started) / 60
            g_ab = RunDir(run_dir).load_generator("A2B")
            rows[f"{i}. {name}"] = (*scores(translate(g_ab, test_a), target), minutes)
            print(f"{i}. {name}: {result.steps_done} steps in {minutes:.1f} min",
                  file=sys.stderr, flush=True)

    print(f"\nseed {args.seed}, {2 * args.epochs * 100} steps per variant; test: {len(test_a)} "
          f"H&E tiles of {TILE} px against their pixel-exact stain mapping")
    print(f"{'':34}{'PSNR (dB)':>10}{'SSIM':>8}{'DAB r':>8}{'sharp':>8}{'min':>7}")
    for name, (db, sim, dab, _, sharp, undefined, minutes) in rows.items():
        note = f"  ({undefined} tiles: DAB r undefined)" if undefined else ""
        took = f"{minutes:7.1f}" if minutes is not None else f"{'':7}"
        print(f"{name:34}{db:10.2f}{sim:8.3f}{dab:8.3f}{sharp:8.3f}{took}{note}")


if __name__ == "__main__":
    main()
