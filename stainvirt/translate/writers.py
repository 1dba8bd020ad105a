"""Write translations: PNG, or a pyramidal OME-TIFF streamed band by band.

Both write atomically (a temporary file beside the target, then a rename). The
OME-TIFF is a tiled, deflate-compressed BigTIFF with 2x-downsampled levels in
SubIFDs (the layout QuPath, OMERO and Bio-Formats viewers open), written from
an iterator of row bands so a slide of any size needs only a few bands in
memory. Each pyramid level is spilled to a temporary raw file beside the
target while the level above it is written, and read back in strips.
"""

from __future__ import annotations

import contextlib
import math
import tempfile
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import BinaryIO

import numpy as np

from stainvirt import __version__
from stainvirt.io.atomic import atomic_path

TIFF_TILE = 256


def write_png(path: str | Path, rgb: np.ndarray) -> Path:
    """Write a uint8 RGB array as a PNG, atomically, and return its path."""
    from PIL import Image

    path = Path(path)
    with atomic_path(path) as tmp:
        Image.fromarray(rgb).save(tmp, format="PNG")
    return path


def write_tiff(
    path: str | Path,
    height: int,
    width: int,
    bands: Iterable[np.ndarray],
    mpp: float | None = None,
    tile: int = TIFF_TILE,
) -> Path:
    """Write a pyramidal OME-TIFF from row bands, atomically, and return its path.

    Args:
        path: Target file (conventionally ``*.ome.tif``).
        height: Rows of the full-resolution image.
        width: Columns of the full-resolution image.
        bands: uint8 ``(rows, width, 3)`` arrays, top to bottom, ``height`` rows in all.
        mpp: Microns per pixel, stored as OME physical size and TIFF resolution.
        tile: Side of the TIFF tiles; levels are added until the image fits one tile.

    Returns:
        ``path``.
    """
    import tifffile

    path = Path(path)
    shapes = [(height, width)]
    while max(shapes[-1]) > tile:
        shapes.append(tuple(math.ceil(side / 2) for side in shapes[-1]))
    metadata = {"axes": "YXS"}
    if mpp:
        metadata |= {"PhysicalSizeX": mpp, "PhysicalSizeXUnit": "µm",
                     "PhysicalSizeY": mpp, "PhysicalSizeYUnit": "µm"}
    with (
        atomic_path(path) as tmp,
        tempfile.TemporaryDirectory(dir=path.parent, prefix=f".{path.stem}.levels.") as spill_dir,
        tifffile.TiffWriter(tmp, bigtiff=True, ome=True) as tif,
    ):
        strips = regroup(bands, tile)
        for level, (rows, cols) in enumerate(shapes):
            last = level == len(shapes) - 1
            spill = Path(spill_dir) / f"level{level + 1}.raw"
            with open(spill, "wb") if not last else contextlib.nullcontext() as halves:
                tif.write(
                    tiff_tiles(strips, tile, halves),
                    shape=(rows, cols, 3),
                    dtype=np.uint8,
                    tile=(tile, tile),
                    photometric="rgb",
                    compression="zlib",
                    software=f"stainvirt {__version__}",
                    **_level_options(level, len(shapes), mpp, metadata),
                )
            if not last:
                strips = _read_strips(spill, math.ceil(cols / 2), tile)
    return path


def _level_options(level: int, levels: int, mpp: float | None, metadata: dict) -> dict:
    """The TIFF options that differ between the full-resolution image and its reductions."""
    if level == 0:
        options: dict = {"subifds": levels - 1, "metadata": metadata}
    else:
        options = {"subfiletype": 1}
    if mpp:
        per_cm = 1e4 / (mpp * 2**level)
        options |= {"resolution": (per_cm, per_cm), "resolutionunit": "CENTIMETER"}
    return options


def regroup(bands: Iterable[np.ndarray], rows: int) -> Iterator[np.ndarray]:
    """Strips of exactly ``rows`` rows (the last one may be shorter) from bands of any height."""
    pending: list[np.ndarray] = []
    have = 0
    for band in bands:
        pending.append(band)
        have += len(band)
        while have >= rows:
            joined = np.concatenate(pending)
            yield joined[:rows]
            pending, have = [joined[rows:]], have - rows
    if have:
        yield np.concatenate(pending)


def tiff_tiles(
    strips: Iterable[np.ndarray], tile: int, halves: BinaryIO | None = None
) -> Iterator[np.ndarray]:
    """The TIFF tiles of each strip, left to right; each strip's 2x reduction goes to ``halves``."""
    for strip in strips:
        if halves is not None:
            halves.write(_half(strip).tobytes())
        for left in range(0, strip.shape[1], tile):
            yield strip[:, left : left + tile]


def _read_strips(path: Path, width: int, rows: int) -> Iterator[np.ndarray]:
    """Strips of ``rows`` rows from a raw uint8 RGB file of ``width`` columns."""
    with open(path, "rb") as f:
        while (strip := np.fromfile(f, np.uint8, rows * width * 3)).size:
            yield strip.reshape(-1, width, 3)


def _half(rgb: np.ndarray) -> np.ndarray:
    """2x2 mean reduction; an odd last row or column is averaged with itself."""
    rows, cols = rgb.shape[:2]
    a = np.pad(rgb, ((0, rows % 2), (0, cols % 2), (0, 0)), mode="edge").astype(np.uint16)
    return ((a[0::2, 0::2] + a[1::2, 0::2] + a[0::2, 1::2] + a[1::2, 1::2] + 2) // 4).astype(
        np.uint8
    )
