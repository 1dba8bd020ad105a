"""Which tiles of an image go into a data set: tissue found, then sampled across the slide.

Small images without a pyramid (tile folders, regions cut from a slide) are
read whole and every non-overlapping tile is checked with the per-pixel tissue
test of :mod:`stainvirt.tissue`. Slides (pyramids, or anything over
:data:`WHOLE_READ_PIXELS`) are never read whole: tissue is found on a
thumbnail, the grid tiles it covers are the candidates, up to ``max_tiles`` of
them are chosen spread over the tissue (seeded), and only those are read, each
confirmed with the per-pixel test; a rejected one is replaced by another
candidate, so a slide yields ``max_tiles`` tiles whenever it has that much tissue.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np

from stainvirt.io.regions import Regions
from stainvirt.tissue import TissueMap, is_tissue, spread_sample

WHOLE_READ_PIXELS = 50_000_000
"""Images up to this size (150 MB of RGB) are read whole; larger ones tile by tile."""


@dataclass
class TileCounts:
    """What :func:`image_tiles` did with an image's grid of tiles."""

    grid: int = 0
    """Tiles in the image's grid."""
    background: int = 0
    """Tiles left out as glass (by the thumbnail's mask or the per-pixel test)."""
    not_sampled: int = 0
    """Tissue tiles left out because ``max_tiles`` were taken."""
    kept: int = 0


def grid(height: int, width: int, tile_size: int) -> np.ndarray:
    """``(N, 2)`` top-left ``(y, x)`` of the non-overlapping tiles that fit, row by row."""
    ys = np.arange(0, height - tile_size + 1, tile_size)
    xs = np.arange(0, width - tile_size + 1, tile_size)
    return np.stack(np.meshgrid(ys, xs, indexing="ij"), axis=-1).reshape(-1, 2)


def image_tiles(
    regions: Regions,
    tile_size: int,
    min_tissue: float,
    *,
    tissue: TissueMap | None = None,
    max_tiles: int | None = None,
    seed: int = 0,
    counts: TileCounts | None = None,
) -> Iterator[tuple[int, int, np.ndarray]]:
    """``(y, x, tile)`` of the tissue tiles to keep from one image, in reading order per round.

    Args:
        regions: The image, at the resolution tiles are cut at.
        tile_size: Side of the square tiles.
        min_tissue: Tissue fraction a tile needs (0 keeps every tile).
        tissue: The slide's thumbnail tissue map; None reads the image whole.
        max_tiles: At most this many tiles, spread over the tissue; None for all.
        seed: Seeds the choice among more candidates than ``max_tiles``.
        counts: Filled in with what was kept and left out.
    """
    counts = counts if counts is not None else TileCounts()
    positions = grid(regions.height, regions.width, tile_size)
    counts.grid += len(positions)
    if tissue is None:
        whole = regions.read(0, 0, regions.height, regions.width)

        def read(y: int, x: int) -> np.ndarray:
            return whole[y : y + tile_size, x : x + tile_size]

        keep = np.array([_keep(read(y, x), min_tissue) for y, x in positions], dtype=bool)
        tissue_positions = positions[keep]
        counts.background += len(positions) - len(tissue_positions)
        chosen = _choose(tissue_positions, max_tiles, seed)
        counts.not_sampled += len(tissue_positions) - len(chosen)
        counts.kept += len(chosen)
        for y, x in chosen:
            yield int(y), int(x), read(y, x)
        return
    candidates = positions
    if min_tissue > 0:
        candidates = positions[tissue.fractions(positions, tile_size, tile_size) >= min_tissue]
    counts.background += len(positions) - len(candidates)
    need = len(candidates) if max_tiles is None else min(max_tiles, len(candidates))
    for attempt in range(len(candidates)):  # bounded: every round uses up candidates
        if not need or not len(candidates):
            break
        picked = spread_sample(candidates, need, seed + attempt)
        batch, candidates = candidates[picked], np.delete(candidates, picked, axis=0)
        for y, x in batch:
            tile = regions.read(int(y), int(x), tile_size, tile_size)
            if _keep(tile, min_tissue):
                need -= 1
                counts.kept += 1
                yield int(y), int(x), tile
            else:
                counts.background += 1
    counts.not_sampled += len(candidates)


def _keep(tile: np.ndarray, min_tissue: float) -> bool:
    return min_tissue <= 0 or is_tissue(tile, min_tissue)


def _choose(positions: np.ndarray, max_tiles: int | None, seed: int) -> np.ndarray:
    if max_tiles is None or len(positions) <= max_tiles:
        return positions
    return positions[spread_sample(positions, max_tiles, seed)]
