"""Rebuild the bundled sample data set under data/sample/ from its two source images.

Usage:
    python data/make_sample.py CMU-1-Small-Region.svs ihc.png

Domain A (H&E), from the slide's full-resolution level, saved as JPEG (the slide
itself stores JPEG tiles): 256x256 tiles that hold tissue from the upper part for
training, and 512x512 regions from the bottom strip for testing, so no test
pixel borders a training tile. Domain B (IHC): the 512x512 image's four 256x256
quadrants, saved losslessly as PNG; the top-left one, all epithelium, is held
out, so the marker covers about half of the training quadrants' pixels, nearer
the H&E tiles' share of epidermis than with it (data/README.md says why).
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
from PIL import Image

from stainvirt.io.images import read_image
from stainvirt.tissue import tissue_fraction

TRAIN_TILE = 256
TEST_REGION = 512
MIN_TISSUE = 0.4


def main(svs: str, ihc: str, out: Path = Path(__file__).parent / "sample") -> None:
    """Cut the sample tiles into ``out``."""
    he = read_image(svs)
    test_top = he.shape[0] - TEST_REGION
    for split, size, y_range in (
        ("trainA", TRAIN_TILE, range(0, test_top - TRAIN_TILE + 1, TRAIN_TILE)),
        ("testA", TEST_REGION, [test_top]),
    ):
        for y in y_range:
            for x in range(0, he.shape[1] - size + 1, size):
                region = he[y : y + size, x : x + size]
                if tissue_fraction(region) >= MIN_TISSUE:
                    _save(region, out / split / f"cmu1_y{y:04d}_x{x:04d}.jpg", quality=92)
    rgb = read_image(ihc)
    half = rgb.shape[0] // 2
    for i, (y, x) in enumerate([(0, 0), (0, half), (half, 0), (half, half)]):
        split = "testB" if i == 0 else "trainB"
        _save(rgb[y : y + half, x : x + half], out / split / f"ihc_y{y:03d}_x{x:03d}.png")


def _save(tile: np.ndarray, path: Path, **kwargs: int) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(tile).save(path, **kwargs)
    print(path)


if __name__ == "__main__":
    main(*sys.argv[1:3])
