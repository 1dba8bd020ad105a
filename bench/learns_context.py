"""Does a recipe learn a stain that depends on the tissue around a cell? Prints figures; not a test.

A real marker is not a colour: it stains some nuclei and not others that look
alike in H&E, depending on where they are. The known mapping here does the
same. Colour deconvolution (``skimage.color.rgb2hed``) gives the hematoxylin
optical density H of an H&E image; smoothed over about 12 um (a Gaussian of
sigma 12 px at 0.5 um/px), it marks the most cell-dense compartment: the
tissue whose smoothed density is above its 85th percentile, with a soft edge.
Inside that compartment the nuclei turn DAB-brown (H moved into the DAB
channel); outside, the same nuclei stay hematoxylin-blue; eosin goes, as in an
IHC with a hematoxylin counterstain. It is computed on whole images before
tiling: the training tiles are put back at their positions on the slide
(data/sample/trainA names them), so no tile edge leaks into the mapping.

The per-pixel references cannot see the compartment: "marker everywhere"
(every nucleus brown) and "no marker" (every nucleus blue), both the same
mapping with the compartment set to all or nothing. Also scored: the identity
and a Reinhard colour transfer fitted on the B training tiles. The recipe
trains unpaired (A and B from different tiles, as bench/learns.py) for at most
--minutes; G_AB then translates the 256 px tiles of the held-out regions
(data/sample/testA), scored against their mapping (computed on the whole
512 px regions): PSNR, SSIM (skimage, uint8, 7x7) and DAB r (per-tile Pearson
correlation of the DAB optical density, nan-aware mean).

    python bench/learns_context.py                            # cpu preset, 15 minutes
    python bench/learns_context.py --minutes 3 --set image_size=64 --set n_blocks=6
"""

from __future__ import annotations

import argparse
import os
import re
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
sys.path.insert(0, str(Path(__file__).resolve().parent))

import numpy as np  # noqa: E402
from learns import (  # noqa: E402
    SAMPLE,
    TILE,
    add_set_option,
    overrides_from,
    scores,
    to_rgb,
    translate,
)
from scipy.ndimage import gaussian_filter  # noqa: E402
from skimage.color import hed2rgb, rgb2hed  # noqa: E402

from stainvirt.config import PRESETS, preset  # noqa: E402
from stainvirt.evaluate.baselines import ReinhardTransfer  # noqa: E402
from stainvirt.evaluate.metrics import stain_correlation  # noqa: E402
from stainvirt.io.images import list_images, read_image  # noqa: E402
from stainvirt.rundir import RunDir  # noqa: E402
from stainvirt.slide_tiles import grid  # noqa: E402
from stainvirt.tissue import tissue_mask  # noqa: E402

SIGMA = 12.0
"""Smoothing of the hematoxylin density that defines the compartment (px)."""
COMPARTMENT_QUANTILE = 0.85
"""The compartment is the tissue whose smoothed density is above this quantile."""


def compartment(rgb: np.ndarray) -> np.ndarray:
    """Weight in [0, 1] of the cell-dense compartment, from smoothed hematoxylin density."""
    density = gaussian_filter(rgb2hed(rgb)[..., 0], SIGMA)
    mask = tissue_mask(rgb)
    tissue = density[mask] if mask.any() else density.ravel()
    middle = np.quantile(tissue, COMPARTMENT_QUANTILE)
    # The edge is a quarter of the tissue's density range wide: soft, not a hard cut.
    width = 0.25 * (np.quantile(tissue, 0.9) - np.quantile(tissue, 0.1))
    return np.clip((density - middle) / max(width, 1e-6) + 0.5, 0.0, 1.0)


def marker(rgb: np.ndarray, weight: np.ndarray | float) -> np.ndarray:
    """IHC look: nuclei brown where ``weight`` is 1, blue where 0; eosin removed."""
    hematoxylin = rgb2hed(rgb)[..., 0]
    hed = np.stack([hematoxylin * (1 - 0.7 * weight), np.zeros_like(hematoxylin),
                    hematoxylin * weight], axis=-1)
    return to_rgb(hed2rgb(hed))


def context_map(rgb: np.ndarray) -> np.ndarray:
    """The known mapping: the marker only inside the compartment."""
    return marker(rgb, compartment(rgb))


def mosaic() -> tuple[np.ndarray, list[tuple[int, int]]]:
    """The training tiles back at their slide positions (glass between), and those positions."""
    files = list_images(SAMPLE / "trainA")
    where = [tuple(int(v) for v in re.search(r"y(\d+)_x(\d+)", f.stem).groups()) for f in files]
    y0, x0 = min(y for y, _ in where), min(x for _, x in where)
    where = [(y - y0, x - x0) for y, x in where]
    canvas = np.full((max(y for y, _ in where) + TILE, max(x for _, x in where) + TILE, 3), 240,
                     np.uint8)
    for f, (y, x) in zip(files, where, strict=True):
        canvas[y : y + TILE, x : x + TILE] = read_image(f)
    return canvas, where


def write_data(out: Path, seed: int) -> dict[str, np.ndarray]:
    """The unpaired data set (A: H&E tiles; B: the mapping of other tiles) and the test set."""
    canvas, where = mosaic()
    mapped = context_map(canvas)
    tiles = [(canvas[y : y + TILE, x : x + TILE], mapped[y : y + TILE, x : x + TILE])
             for y, x in where]
    order = np.random.default_rng(seed).permutation(len(tiles))
    half = len(tiles) // 2
    train_a = np.stack([tiles[i][0] for i in order[half:]])
    train_b = np.stack([tiles[i][1] for i in order[:half]])
    test_a, target, everywhere, nowhere = [], [], [], []
    for image in map(read_image, list_images(SAMPLE / "testA")):
        maps = (context_map(image), marker(image, 1.0), marker(image, 0.0))
        for y, x in grid(*image.shape[:2], TILE):
            cut = (slice(y, y + TILE), slice(x, x + TILE))
            test_a.append(image[cut])
            for out_list, m in zip((target, everywhere, nowhere), maps, strict=True):
                out_list.append(m[cut])
    test = {k: np.stack(v) for k, v in (("A", test_a), ("target", target),
                                         ("everywhere", everywhere), ("nowhere", nowhere))}
    np.savez_compressed(out, trainA=train_a, trainB=train_b, testA=test["A"],
                        testB=test["target"])
    test["trainB"] = train_b
    return test


def dab_r(predicted: np.ndarray, target: np.ndarray) -> float:
    """Mean over tiles of the DAB optical-density correlation (nan-aware)."""
    return float(np.nanmean([stain_correlation(p, t, "dab")
                             for p, t in zip(predicted, target, strict=True)]))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--minutes", type=float, default=15.0, help="training budget (default 15)")
    p.add_argument("--preset", default="cpu", choices=list(PRESETS), help="preset (default cpu)")
    add_set_option(p)
    p.add_argument("--seed", type=int, default=0, help="seeds the A/B split and the run")
    args = p.parse_args()

    from stainvirt.training.trainer import train

    overrides = overrides_from(args.set, args.preset)
    cfg = preset(args.preset, seed=args.seed, **overrides)
    with tempfile.TemporaryDirectory(prefix="learns-context-") as tmp:
        data = Path(tmp) / "context.npz"
        test = write_data(data, args.seed)
        reinhard = ReinhardTransfer().fit(iter(test["trainB"]))
        rows = {
            "identity": test["A"],
            "no marker (per pixel)": test["nowhere"],
            "marker everywhere (per pixel)": test["everywhere"],
            "Reinhard": np.stack([reinhard.apply(t) for t in test["A"]]),
        }
        started = time.monotonic()
        result = train(data, Path(tmp) / "run", cfg, max_minutes=args.minutes, verbose=0)
        minutes = (time.monotonic() - started) / 60
        rows["trained G_AB"] = translate(RunDir(Path(tmp) / "run").load_generator("A2B"),
                                         test["A"])

    changed = ", ".join(f"{k}={v}" for k, v in overrides.items()) or "none"
    print(f"\npreset {args.preset} (overrides: {changed}), seed {args.seed}: "
          f"{result.steps_done} steps in {minutes:.1f} min, stopped: {result.stopped}")
    print(f"test: {len(test['A'])} H&E tiles of {TILE} px against the context mapping")
    print(f"{'':32}{'PSNR (dB)':>10}{'SSIM':>8}{'DAB r':>8}")
    for name, predicted in rows.items():
        db, sim = scores(predicted, test["target"])
        print(f"{name:32}{db:10.2f}{sim:8.3f}{dab_r(predicted, test['target']):8.3f}")


if __name__ == "__main__":
    main()
