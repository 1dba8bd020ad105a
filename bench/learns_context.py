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
halved into A and B, so A and B come from different tissue (unpaired). The
halves are matched: the tiles sorted by the marker's share of their area and
taken two by two, one of each two to A and the other to B by a seeded coin,
so the marker covers about the same share of both, as it would in two
samples of one tissue (--split random draws the halves at random, and the
marker may then cover twice as much of one half as of the other: an
unpaired model stains as much of A as B shows stained, whatever the rule).
With --pairs all 20 go to both domains as registered pairs,
and with --misregister each B partner is then shifted by 2-5 px and rotated by
-3..3 degrees against its A tile, as adjacent sections are.
The recipe trains for at most --minutes; G_AB then
translates each held-out tile with a 32 px margin of the slide around it (cut
away after), scored against the mapping: PSNR, SSIM (skimage, uint8, 7x7) and
DAB r (per-tile Pearson correlation of the DAB optical density, nan-aware
mean), DAB Dice (overlap of the DAB-positive areas, the pixels whose DAB
density is above stainvirt's positivity threshold, averaged over tiles: where
the marker is, as a pathologist reads it) and sharpness (mean absolute Laplacian of the grey output
over the target's: below 1 is blurrier). Next to it: the per-pixel references, which
cannot see the compartment ("marker everywhere": every cell brown; "no
marker": every cell blue), the identity, and a Reinhard colour transfer
fitted on the B training tiles.

    python bench/learns_context.py                     # cpu preset, 15-minute budget
    python bench/learns_context.py --figure ctx.png    # and draw test tiles per row
    python bench/learns_context.py --preset paired-context --pairs
    python bench/learns_context.py --preset paired-context --pairs --misregister
    python bench/learns_context.py --check-metric      # what a DAB r of 0.8 asks for
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
from stainvirt.evaluate.metrics import dab_positive_mask  # noqa: E402
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


def marker_share(weight: np.ndarray, tiles: list[tuple[int, int]]) -> float:
    """Mean compartment weight of ``tiles``: the share of their area the marker stains."""
    return float(np.mean([cut(weight, *at).mean() for at in tiles]))


SPLITS = ("matched", "random", "b-more", "b-less")
"""How the unpaired training tiles are halved into A and B (:func:`split_halves`)."""


def split_halves(share: list[float], seed: int, split: str) -> tuple[np.ndarray, np.ndarray]:
    """Indices of the A and B training tiles.

    ``matched``: the tiles sorted by ``share`` (the marker's share of each
    tile) and taken two by two, one of each two to A and the other to B by a
    seeded coin, so both halves hold the marker in about the same share, as
    two samples of one tissue would. ``random``: a seeded random half each, so
    the marker may cover much more of one half than of the other. ``b-more``
    and ``b-less``: B gets the half with the most (least) marker, to show what
    a difference in prevalence between the two sets does.
    """
    rng = np.random.default_rng(seed)
    half = len(share) // 2
    by_share = np.argsort(share, kind="stable")
    if split == "random":
        order = rng.permutation(len(share))
        return order[half:], order[:half]
    if split in ("b-more", "b-less"):
        low, high = by_share[:half], by_share[-half:]
        return (low, high) if split == "b-more" else (high, low)
    twos = by_share[: half * 2].reshape(-1, 2)
    flip = rng.integers(0, 2, len(twos)).astype(bool)
    twos[flip] = twos[flip, ::-1]
    return twos[:, 0], twos[:, 1]


def write_data(
    out: Path, seed: int, pairs: bool = False, misregistered: bool = False,
    split: str = "matched",
) -> dict[str, np.ndarray]:
    """The unpaired data set (A: H&E tiles; B: the mapping of other tiles) and the test set.

    Every fifth tile of the slide is held out for the test; the rest are split
    (seeded, see :func:`split_halves`) into A and B halves, or with ``pairs`` all
    of them go to both domains as registered pairs (``misregistered``: each B
    partner shifted and rotated by a few pixels). Test inputs carry a margin of
    the slide around them, so the model sees the context the mapping saw.
    """
    canvas, where = mosaic()
    weight = compartment(canvas)
    maps = {"A": canvas, "target": marker(canvas, weight), "everywhere": marker(canvas, 1.0),
            "nowhere": marker(canvas, 0.0)}
    held = [i % 5 == 2 for i in range(len(where))]
    train = [w for w, h in zip(where, held, strict=True) if not h]
    test_at = [w for w, h in zip(where, held, strict=True) if h]
    if pairs:
        a_tiles = b_tiles = np.random.default_rng(seed).permutation(len(train))
    else:
        share = [marker_share(weight, [at]) for at in train]
        a_tiles, b_tiles = split_halves(share, seed, split)
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
    test["marker_share"] = np.array([marker_share(weight, [train[i] for i in tiles])
                                     for tiles in (a_tiles, b_tiles)])
    return test


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--minutes", type=float, default=15.0, help="training budget (default 15)")
    p.add_argument("--preset", default="cpu", choices=list(PRESETS), help="preset (default cpu)")
    add_set_option(p)
    add_keep_option(p)
    p.add_argument("--seed", type=int, default=0, help="seeds the A/B split and the run")
    p.add_argument("--split", choices=SPLITS, default="matched",
                   help="how the 20 training tiles are halved into A and B (unpaired): "
                        "matched (default), so that the marker covers about the same share "
                        "of both halves; random, as before 0.4.5; b-more or b-less, B the "
                        "half with the most or least marker")
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
        test = write_data(data, args.seed, args.pairs, args.misregister, args.split)
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
    data_kind = f"unpaired, {args.split} split" if not args.pairs else (
        "misregistered pairs" if args.misregister else "registered pairs")
    print(f"\npreset {args.preset} (overrides: {changed}), seed {args.seed}, {data_kind}: "
          f"{result.steps_done} steps in {minutes:.1f} min, stopped: {result.stopped}")
    print(f"test: {len(test['A'])} H&E tiles of {TILE} px against the context mapping")
    if not args.pairs:
        share_a, share_b = test["marker_share"]
        print(f"{args.split} split: the marker covers {share_a:.1%} of the A training tiles' "
              f"area (had they been mapped) and {share_b:.1%} of the B tiles'")
    print_scores(rows, test["target"])
    if args.figure:
        shown = {name: tiles for name, tiles in rows.items() if name != "identity"}
        draw_tiles(args.figure, {"H&E": test["A"], "target (context)": test["target"], **shown})


def print_scores(rows: dict[str, np.ndarray], target: np.ndarray) -> None:
    """PSNR, SSIM, DAB r, DAB Dice, sharpness against ``target`` and DAB-positive area, per row."""
    print(f"{'':32}{'PSNR (dB)':>10}{'SSIM':>8}{'DAB r':>8}{'Dice':>8}{'sharp':>8}{'DAB+':>8}")
    for name, predicted in rows.items():
        db, sim, dab, overlap, sharp, _ = scores(predicted, target)
        print(f"{name:32}{db:10.2f}{sim:8.3f}{dab:8.3f}{overlap:8.3f}{sharp:8.3f}"
              f"{positive_area(predicted):8.1%}")
    print(f"{'target':32}{'':42}{positive_area(target):8.1%}")


def positive_area(tiles: np.ndarray) -> float:
    """Mean share of a tile's pixels that are DAB-positive."""
    return float(np.mean([dab_positive_mask(tile).mean() for tile in tiles]))


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
