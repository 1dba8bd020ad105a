"""Does a recipe learn a stain that depends on the tissue around a cell? Prints figures; not a test.

A real marker is not a colour: cytokeratin, HER2 or Ki-67 stain some cells and
not others that look alike in H&E, depending on where they are. The known
mapping here does the same, as a cytokeratin-like IHC. Colour deconvolution
(``skimage.color.rgb2hed``) gives the hematoxylin and eosin optical densities
H and E of an H&E image. H smoothed with a Gaussian of sigma 16 px (8 um at
0.5 um/px, so the tissue within about 20 um counts) marks the cell-dense
compartment: the tissue whose smoothed density is above the 60th percentile
of the slide's tissue, with a soft edge (the basal epidermis and the dense
cell clusters of the sample). Inside it,
the cells turn DAB-brown (DAB density H + E); everywhere the nuclei keep
their hematoxylin and eosin goes, as in an IHC with a hematoxylin
counterstain. The compartment is computed once on the whole slide (the
training tiles put back at their positions; data/sample/trainA names them),
so every tile follows one rule and no tile edge leaks into the mapping.

Every fifth tile of the slide is held out for the test; the other 20 are
split at random (seeded) into A and B halves, so A and B come from different
tissue (unpaired); with --pairs all 20 go to both domains as registered pairs,
and with --misregister each B partner is then shifted by 2-5 px and rotated by
-3..3 degrees against its A tile, as adjacent sections are.
The recipe trains for at most --minutes; G_AB then
translates each held-out tile with a 32 px margin of the slide around it (cut
away after), scored against the mapping: PSNR, SSIM (skimage, uint8, 7x7) and
DAB r (per-tile Pearson correlation of the DAB optical density, nan-aware
mean), DAB Dice (overlap of the DAB-positive areas, the pixels whose DAB
density is above stainvirt's positivity threshold, averaged over tiles: where
the marker is, as a pathologist reads it; DAB r also counts the grey-level
noise of pale pixels) and sharpness (mean absolute Laplacian of the grey output
over the target's: below 1 is blurrier). Next to it: the per-pixel references, which
cannot see the compartment ("marker everywhere": every cell brown; "no
marker": every cell blue), the identity, and a Reinhard colour transfer
fitted on the B training tiles.

    python bench/learns_context.py                     # cpu preset, 15-minute budget
    python bench/learns_context.py --figure ctx.png    # and draw test tiles per row
    python bench/learns_context.py --preset paired-context --pairs
    python bench/learns_context.py --preset paired-context --pairs --misregister
    python bench/learns_context.py --check-metric      # how close a DAB r of 0.8 is
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
    add_keep_option,
    add_set_option,
    draw_tiles,
    overrides_from,
    to_rgb,
    translate,
)
from learns_paired import misregister, scores  # noqa: E402
from scipy.ndimage import gaussian_filter  # noqa: E402
from skimage.color import hed2rgb, rgb2hed  # noqa: E402

from stainvirt.config import PRESETS, preset  # noqa: E402
from stainvirt.evaluate.baselines import ReinhardTransfer  # noqa: E402
from stainvirt.io.images import list_images, read_image  # noqa: E402
from stainvirt.rundir import RunDir  # noqa: E402
from stainvirt.tissue import tissue_mask  # noqa: E402

SIGMA = 16.0
"""Smoothing of the hematoxylin density that defines the compartment (px)."""
COMPARTMENT_QUANTILE = 0.6
"""The compartment is the tissue whose smoothed density is above this quantile."""
MARGIN = 32
"""Slide around each test tile given to the model (px), cut away from its output."""


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
    """IHC look: cells brown where ``weight`` is 1; nuclei blue everywhere; eosin removed."""
    hed = rgb2hed(rgb)
    hematoxylin = hed[..., 0]
    dab = weight * np.clip(hematoxylin + hed[..., 1], 0.0, None)
    return to_rgb(hed2rgb(np.stack([hematoxylin, np.zeros_like(hematoxylin), dab], axis=-1)))


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


def cut(image: np.ndarray, y: int, x: int, margin: int = 0) -> np.ndarray:
    """The tile at ``(y, x)`` with ``margin`` px around it."""
    return image[y - margin : y + TILE + margin, x - margin : x + TILE + margin]


def write_data(
    out: Path, seed: int, pairs: bool = False, misregistered: bool = False
) -> dict[str, np.ndarray]:
    """The unpaired data set (A: H&E tiles; B: the mapping of other tiles) and the test set.

    Every fifth tile of the slide is held out for the test; the rest are split at
    random (seeded) into A and B halves, or with ``pairs`` all of them go to both
    domains as registered pairs (``misregistered``: each B partner shifted and
    rotated by a few pixels). Test inputs carry a margin of the slide around
    them, so the model sees the context the mapping saw.
    """
    canvas, where = mosaic()
    maps = {"A": canvas, "target": context_map(canvas), "everywhere": marker(canvas, 1.0),
            "nowhere": marker(canvas, 0.0)}
    held = [i % 5 == 2 for i in range(len(where))]
    train = [w for w, h in zip(where, held, strict=True) if not h]
    test_at = [w for w, h in zip(where, held, strict=True) if h]
    order = np.random.default_rng(seed).permutation(len(train))
    half = len(train) // 2
    a_tiles, b_tiles = (order, order) if pairs else (order[half:], order[:half])
    train_a = np.stack([cut(canvas, *train[i]) for i in a_tiles])
    train_b = np.stack([cut(maps["target"], *train[i]) for i in b_tiles])
    if misregistered:
        rng = np.random.default_rng(seed)
        train_b = np.stack([misregister(tile, rng) for tile in train_b])
    framed = np.pad(canvas, ((MARGIN, MARGIN), (MARGIN, MARGIN), (0, 0)), constant_values=240)
    test = {name: np.stack([cut(m, y, x) for y, x in test_at]) for name, m in maps.items()}
    test["A_framed"] = np.stack([cut(framed, y + MARGIN, x + MARGIN, MARGIN) for y, x in test_at])
    registered = {"train_pairs": np.stack([np.arange(len(train))] * 2, 1).astype(np.int32)}
    np.savez_compressed(out, trainA=train_a, trainB=train_b, testA=test["A"],
                        testB=test["target"], **(registered if pairs else {}))
    test["trainB"] = train_b
    return test


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--minutes", type=float, default=15.0, help="training budget (default 15)")
    p.add_argument("--preset", default="cpu", choices=list(PRESETS), help="preset (default cpu)")
    add_set_option(p)
    add_keep_option(p)
    p.add_argument("--seed", type=int, default=0, help="seeds the A/B split and the run")
    p.add_argument("--pairs", action="store_true",
                   help="train on registered pairs (every training tile in both domains; "
                        "use with --preset paired or paired-context)")
    p.add_argument("--misregister", action="store_true",
                   help="with --pairs: shift each B partner by 2-5 px and rotate it by -3..3 "
                        "degrees, as adjacent sections are")
    p.add_argument("--figure", type=Path, help="also draw the first test tiles of each row here")
    p.add_argument("--check-metric", action="store_true",
                   help="train nothing: score the target against slightly changed copies of "
                        "itself, to show how close an output must be for a given DAB r")
    args = p.parse_args()
    if args.check_metric:
        check_metric(args.seed)
        return
    if args.misregister and not args.pairs:
        p.error("--misregister needs --pairs")

    from stainvirt.training.trainer import train

    overrides = overrides_from(args.set, args.preset)
    cfg = preset(args.preset, seed=args.seed, **overrides)
    with tempfile.TemporaryDirectory(prefix="learns-context-") as tmp:
        data = Path(tmp) / "context.npz"
        test = write_data(data, args.seed, args.pairs, args.misregister)
        reinhard = ReinhardTransfer().fit(iter(test["trainB"]))
        rows = {
            "identity": test["A"],
            "no marker (per pixel)": test["nowhere"],
            "marker everywhere (per pixel)": test["everywhere"],
            "Reinhard": np.stack([reinhard.apply(t) for t in test["A"]]),
        }
        run_dir = args.keep or Path(tmp) / "run"
        started = time.monotonic()
        result = train(data, run_dir, cfg, max_minutes=args.minutes, verbose=0)
        minutes = (time.monotonic() - started) / 60
        framed = translate(RunDir(run_dir).load_generator("A2B"), test["A_framed"])
        rows["trained G_AB"] = framed[:, MARGIN:-MARGIN, MARGIN:-MARGIN]

    changed = ", ".join(f"{k}={v}" for k, v in overrides.items()) or "none"
    data_kind = "unpaired" if not args.pairs else (
        "misregistered pairs" if args.misregister else "registered pairs")
    print(f"\npreset {args.preset} (overrides: {changed}), seed {args.seed}, {data_kind}: "
          f"{result.steps_done} steps in {minutes:.1f} min, stopped: {result.stopped}")
    print(f"test: {len(test['A'])} H&E tiles of {TILE} px against the context mapping")
    print_scores(rows, test["target"])
    if args.figure:
        shown = {name: tiles for name, tiles in rows.items() if name != "identity"}
        draw_tiles(args.figure, {"H&E": test["A"], "target (context)": test["target"], **shown})


def print_scores(rows: dict[str, np.ndarray], target: np.ndarray) -> None:
    """One line of PSNR, SSIM, DAB r, DAB Dice and sharpness against ``target`` per row."""
    print(f"{'':32}{'PSNR (dB)':>10}{'SSIM':>8}{'DAB r':>8}{'Dice':>8}{'sharp':>8}")
    for name, predicted in rows.items():
        db, sim, dab, overlap, sharp, _ = scores(predicted, target)
        print(f"{name:32}{db:10.2f}{sim:8.3f}{dab:8.3f}{overlap:8.3f}{sharp:8.3f}")


def check_metric(seed: int) -> None:
    """Score the test target against copies of itself changed by less than a model's error."""
    with tempfile.TemporaryDirectory(prefix="learns-context-") as tmp:
        test = write_data(Path(tmp) / "context.npz", seed)
    target = test["target"]
    unit = target / 255.0
    rng = np.random.default_rng(seed)
    rows = {
        "noise, 2 grey levels": to_rgb(unit + rng.normal(0, 2 / 255, target.shape)),
        "noise, 4 grey levels": to_rgb(unit + rng.normal(0, 4 / 255, target.shape)),
        "blur, sigma 0.7 px": to_rgb(gaussian_filter(unit, (0, 0.7, 0.7, 0))),
        "shift by 1 px": np.roll(target, 1, axis=2),
        "shift by 3 px": np.roll(target, 3, axis=2),
        "marker everywhere (per pixel)": test["everywhere"],
    }
    print(f"the context mapping's {len(target)} test tiles against changed copies of themselves")
    print_scores(rows, target)


if __name__ == "__main__":
    main()
