"""Does a preset learn a known stain mapping, and how fast? Prints PSNR/SSIM; not a test.

Domain B is made from H&E by a fixed per-pixel stain mapping, so G_AB has a
known right answer: colour deconvolution (``skimage.color.rgb2hed``) keeps the
hematoxylin, moves the eosin optical density into the DAB channel and zeroes
the eosin (``hed2rgb``), so pink turns brown as in a DAB IHC. The bundled H&E
tiles (data/sample/trainA) are split: some stay H&E (domain A), the others are
mapped (domain B), so A and B come from different tiles and training is
unpaired. The preset trains for a bounded time, then G_AB translates the
held-out H&E regions (data/sample/testA, cut into 256 px tiles) and is scored
against the mapping of those regions with PSNR and SSIM as
``stainvirt.evaluate.metrics`` computes them (skimage, uint8, data_range 255,
7x7 window), next to the identity (output = input) and the untrained G_AB.

    python bench/learns.py                     # 15 minutes of training (the comparison point)
    python bench/learns.py --minutes 3         # a quick look
    python bench/learns.py --preset paper --keep runs/learns-paper
    python bench/learns.py --set lambda_cycle=2   # a preset with some fields changed
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402
from skimage.color import hed2rgb, rgb2hed  # noqa: E402

from stainvirt.config import PRESETS, preset  # noqa: E402
from stainvirt.evaluate.metrics import psnr, ssim  # noqa: E402
from stainvirt.io.images import list_images, read_image  # noqa: E402
from stainvirt.io.scaling import to_uint8, to_unit  # noqa: E402
from stainvirt.rundir import RunDir  # noqa: E402
from stainvirt.slide_tiles import grid  # noqa: E402

SAMPLE = Path(__file__).resolve().parent.parent / "data" / "sample"
TILE = 256


def stain_map(rgb: np.ndarray) -> np.ndarray:
    """The known H&E -> pseudo-IHC mapping: eosin optical density becomes DAB, per pixel."""
    hed = rgb2hed(rgb)
    hematoxylin, eosin = hed[..., 0], hed[..., 1]
    return to_rgb(hed2rgb(np.stack([hematoxylin, np.zeros_like(eosin), eosin], axis=-1)))


def to_rgb(unit: np.ndarray) -> np.ndarray:
    """Floats in [0, 1] to uint8."""
    return np.clip(np.round(unit * 255), 0, 255).astype(np.uint8)


def write_data(out: Path, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Write the unpaired data set to ``out``; return the test A tiles and their targets.

    The training tiles are split at random (seeded) into A and B halves; B is mapped.
    """
    train = np.stack([read_image(f) for f in list_images(SAMPLE / "trainA")])
    order = np.random.default_rng(seed).permutation(len(train))
    half = len(train) // 2
    train_a, train_b = train[order[half:]], np.stack([stain_map(t) for t in train[order[:half]]])
    test_a = np.stack([
        image[y : y + TILE, x : x + TILE]
        for image in map(read_image, list_images(SAMPLE / "testA"))
        for y, x in grid(*image.shape[:2], TILE)
    ])
    test_b = np.stack([stain_map(t) for t in test_a])
    np.savez_compressed(out, trainA=train_a, trainB=train_b, testA=test_a, testB=test_b)
    return test_a, test_b


def translate(model, tiles: np.ndarray) -> np.ndarray:
    """Run a generator on uint8 tiles, one at a time, and return uint8 tiles."""
    return np.stack([to_uint8(model(to_unit(t[None]), training=False))[0] for t in tiles])


def scores(predicted: np.ndarray, target: np.ndarray) -> tuple[float, float]:
    """Mean PSNR (dB) and mean SSIM over the tiles."""
    pairs = list(zip(predicted, target, strict=True))
    return (
        float(np.mean([psnr(p, t) for p, t in pairs])),
        float(np.mean([ssim(p, t) for p, t in pairs])),
    )


def draw_tiles(path: Path, rows: dict[str, np.ndarray], tiles: int = 4) -> None:
    """One figure row per test tile, one column per entry of ``rows``, to compare by eye."""
    from stainvirt.plotting import image_grid, save_figure

    grid_rows = [[images[i] for images in rows.values()] for i in range(tiles)]
    fig = image_grid(grid_rows, [list(rows)] * tiles, row_size=(2.2 * len(rows), 2.4),
                     fontsize=7)
    save_figure(fig, path)


def add_set_option(p: argparse.ArgumentParser) -> None:
    """``--set FIELD=VALUE`` (repeatable): change config fields of the preset."""
    p.add_argument("--set", action="append", default=[], metavar="FIELD=VALUE",
                   help="override a config field of the preset (repeatable)")


def add_keep_option(p: argparse.ArgumentParser) -> None:
    """``--keep RUN_DIR``: train into this folder and keep it, to look at its losses and samples."""
    p.add_argument("--keep", type=Path, metavar="RUN_DIR",
                   help="train into this folder and keep it (a run already there is resumed)")


def overrides_from(items: list[str], preset_name: str) -> dict:
    """``--set`` items as typed config overrides (bools from 1/true/yes)."""
    overrides = {}
    for item in items:
        name, _, value = item.partition("=")
        default = getattr(preset(preset_name), name)
        overrides[name] = (value.lower() in ("1", "true", "yes") if isinstance(default, bool)
                           else type(default)(value))
    return overrides


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--minutes", type=float, default=15.0, help="training time budget (default 15)")
    p.add_argument("--preset", default="cpu", choices=list(PRESETS), help="preset (default cpu)")
    p.add_argument("--seed", type=int, default=0, help="seeds the A/B split and the run")
    add_keep_option(p)
    add_set_option(p)
    args = p.parse_args()

    from stainvirt.models import build_generator
    from stainvirt.training.threads import configure_threads
    from stainvirt.training.trainer import train

    overrides = overrides_from(args.set, args.preset)
    cfg = preset(args.preset, seed=args.seed, **overrides)
    configure_threads(cfg)  # as train() would, before the untrained generator runs TF
    with tempfile.TemporaryDirectory(prefix="learns-") as tmp:
        data = Path(tmp) / "learns.npz"
        test_a, target = write_data(data, args.seed)
        rows = {
            "identity": scores(test_a, target),
            "untrained G_AB": scores(translate(build_generator(cfg, name="G_AB"), test_a), target),
        }
        run_dir = args.keep or Path(tmp) / "run"
        started = time.monotonic()
        result = train(data, run_dir, cfg, max_minutes=args.minutes, verbose=0)
        minutes = (time.monotonic() - started) / 60
        g_ab = RunDir(run_dir).load_generator("A2B")
        rows["trained G_AB"] = scores(translate(g_ab, test_a), target)

    changed = ", ".join(f"{k}={v}" for k, v in overrides.items()) or "none"
    print(
        f"\npreset {args.preset} (overrides: {changed}), seed {args.seed}: "
        f"{result.steps_done} steps "
        f"({result.epochs_done} epochs) in {minutes:.1f} min, "
        f"{result.steps_done / (60 * minutes):.2f} steps/s, stopped: {result.stopped}"
    )
    print(f"test: {len(test_a)} H&E tiles of {TILE} px against their known stain mapping")
    print(f"{'':16}{'PSNR (dB)':>10}{'SSIM':>8}")
    for name, (db, sim) in rows.items():
        print(f"{name:16}{db:10.2f}{sim:8.3f}")
    if args.keep:
        print(f"run kept in {args.keep}")


if __name__ == "__main__":
    main()
