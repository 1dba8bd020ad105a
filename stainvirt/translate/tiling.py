"""Where tiles go and how their outputs blend back into one seamless image.

An image is cut into a grid of overlapping tiles, axis by axis. Along an axis
longer than the tile, tiles of exactly ``tile_size`` pixels are spread evenly
from the first pixel to the last, each overlapping its neighbours by at least
``overlap``. Tiles start on a grid of the generator's size multiple (its total
down-sampling; a finer grid if the stride is not a multiple of it), so that
overlapping tiles see the image in the same phase and agree where they overlap
(with unaligned starts, the tiled output of a random cpu-preset generator
differed 1.6-1.8 times more from its whole-image output). The image is
reflect-padded by the few pixels this needs at its far edges. An axis no
longer than the tile is one tile, reflect-padded to a size the generator takes.

Each tile's output is weighted by a window that ramps up (sin^2) across the
overlap with the tile before it and down (cos^2) across the overlap with the
tile after it, and the windows are normalised to sum to exactly one at every
pixel. The generator's instance norm sees different statistics in every tile;
the smooth cross-fade turns what would be a colour step at a tile border into
a gradual change over the whole overlap.

:func:`blended_bands` does this for pixels of any domain: a codec turns the
domain's stored pixels into the networks' [-1, 1] and the outputs back, and
the windows blend each of the output's channels alike.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any, NamedTuple

import numpy as np

from stainvirt.config import Config, min_image_size, size_multiple
from stainvirt.errors import StainvirtError

# Benchmarked (bench/README.md): 512 px tiles run fast on a CPU; 64 px of overlap hides seams.
DEFAULT_TILE_SIZE = 512
DEFAULT_OVERLAP = 64


@dataclass(frozen=True)
class AxisPlan:
    """Tiles along one axis of an image.

    Attributes:
        starts: First pixel of each tile.
        length: Pixels each tile covers (a size the generator takes).
        extent: Pixels the tiles cover together, the image's plus reflect padding.
        weights: One blending window of ``length`` values per tile; at every
            pixel the windows of the tiles covering it sum to one.
    """

    starts: tuple[int, ...]
    length: int
    extent: int
    weights: tuple[np.ndarray, ...]


@dataclass(frozen=True)
class Tiling:
    """How a generator walks over an image: tile size, overlap and the sizes it accepts.

    Args:
        tile_size: Side of the square tiles large images are cut into.
        overlap: Pixels shared by neighbouring tiles (at least); 0 gives hard seams.
        multiple: Tile sides fed to the generator must be multiples of this.
        min_side: Smallest side the generator accepts.

    Raises:
        StainvirtError: if the sizes do not fit each other or the generator.
    """

    tile_size: int = DEFAULT_TILE_SIZE
    overlap: int = DEFAULT_OVERLAP
    multiple: int = 4
    min_side: int = 32

    def __post_init__(self) -> None:
        if self.tile_size < self.min_side or self.tile_size % self.multiple:
            raise StainvirtError(
                f"tile size {self.tile_size} does not fit this generator: use a multiple of "
                f"{self.multiple} of at least {self.min_side} (--tile-size)"
            )
        if not 0 <= self.overlap < self.tile_size:
            raise StainvirtError(
                f"overlap {self.overlap} must be at least 0 and smaller than the tile size "
                f"{self.tile_size} (--overlap, --tile-size)"
            )

    @classmethod
    def for_config(
        cls, cfg: Config, tile_size: int = DEFAULT_TILE_SIZE, overlap: int = DEFAULT_OVERLAP
    ) -> Tiling:
        """The tiling for a generator built from ``cfg``."""
        return cls(tile_size, overlap, size_multiple(cfg), min_image_size(cfg))

    def plan(self, size: int) -> AxisPlan:
        """Tiles along an axis of ``size`` pixels.

        Examples:
            >>> Tiling(512, 64).plan(1000).starts
            (0, 244, 488)
            >>> Tiling(512, 64).plan(37).extent
            40
        """
        if size <= self.tile_size:
            extent = max(self.min_side, math.ceil(size / self.multiple) * self.multiple)
            return AxisPlan((0,), extent, extent, (np.ones(extent, np.float32),))
        # Starts on a grid that divides the stride keep every overlap >= self.overlap.
        grid = math.gcd(self.multiple, self.tile_size - self.overlap)
        extent = math.ceil(size / grid) * grid
        count = math.ceil((extent - self.overlap) / (self.tile_size - self.overlap))
        spacing = (extent - self.tile_size) / grid / (count - 1)
        starts = tuple(grid * round(i * spacing) for i in range(count))
        return AxisPlan(
            starts, self.tile_size, extent, _windows(starts, self.tile_size, extent)
        )

    def count(self, height: int, width: int) -> int:
        """Number of tiles an image of this size is cut into."""
        return len(self.plan(height).starts) * len(self.plan(width).starts)


class Codec(NamedTuple):
    """How one domain's stored pixels go into a generator and its outputs come back."""

    encode: Callable[[np.ndarray], np.ndarray]
    """Stored pixels to float32 in [-1, 1]."""
    decode: Callable[[np.ndarray], np.ndarray]
    """Outputs in [-1, 1] to stored pixels."""


@dataclass
class Tally:
    """Tiles of one image: all of them, and those copied through as glass."""

    tiles: int = 0
    glass: int = 0


def blended_bands(
    image: Any,
    tiling: Tiling,
    predict: Callable[[np.ndarray], Any],
    codecs: tuple[Codec, Codec],
    batch_size: int,
    *,
    progress: Callable[[int], object] | None = None,
    is_glass: Callable[[np.ndarray, int, int], bool] | None = None,
    tally: Tally | None = None,
) -> Iterator[np.ndarray]:
    """An image's translation as row bands, top to bottom, one per row of tiles.

    Only one row of tiles and one band of blended output are in memory at a time.

    Args:
        image: Regions of the input (``height``, ``width``, ``read(top, left, h, w)``
            giving ``(h, w, C)`` stored pixels).
        tiling: Where the tiles go.
        predict: The generator: a batch ``(N, h, w, C)`` in [-1, 1] to its outputs.
        codecs: The input's and the output's :class:`Codec`.
        batch_size: Tiles per ``predict`` call.
        progress: Called with the number of tiles done after each tile row.
        is_glass: ``is_glass(tile, top, left)`` picks tiles copied through
            untranslated (only where input and output are of one kind).
        tally: Counts tiles and glass tiles, if given.

    Yields:
        Bands of the output's stored pixels, ``(rows, width, C_out)``.
    """
    (encode, _), (_, decode) = codecs
    tally = tally if tally is not None else Tally()
    rows, cols = tiling.plan(image.height), tiling.plan(image.width)
    blended = None  # sized by the first output: the generator decides its channels
    for r, top in enumerate(rows.starts):
        band = image.read(top, 0, min(rows.length, image.height - top), image.width)
        band = pad_to(band, rows.length, cols.extent)
        tiles = [band[:, left : left + cols.length] for left in cols.starts]
        glass = [bool(is_glass and is_glass(t, top, left))
                 for t, left in zip(tiles, cols.starts, strict=True)]
        tally.tiles, tally.glass = tally.tiles + len(tiles), tally.glass + sum(glass)
        for c, out in _outputs(tiles, glass, predict, encode, batch_size):
            if blended is None:
                blended = np.zeros((rows.length, cols.extent, out.shape[-1]), np.float32)
            weight = rows.weights[r][:, None, None] * cols.weights[c][None, :, None]
            blended[:, cols.starts[c] : cols.starts[c] + cols.length] += weight * out
        if progress:
            progress(len(tiles))
        if r + 1 < len(rows.starts):
            done = rows.starts[r + 1] - top  # no later tile reaches these rows
            yield decode(blended[:done, : image.width])
            blended[: rows.length - done] = blended[done:]
            blended[rows.length - done :] = 0.0
        else:
            yield decode(blended[: image.height - top, : image.width])


def _outputs(
    tiles: Sequence[np.ndarray],
    glass: Sequence[bool],
    predict: Callable[[np.ndarray], Any],
    encode: Callable[[np.ndarray], np.ndarray],
    batch_size: int,
) -> Iterator[tuple[int, np.ndarray]]:
    """``(index, output in [-1, 1])`` of each tile, batched through ``predict``.

    Glass tiles come back as they are.
    """
    todo = []
    for i, tile in enumerate(tiles):
        if glass[i]:
            yield i, encode(tile)
        else:
            todo.append(i)
    for k in range(0, len(todo), batch_size):
        chunk = todo[k : k + batch_size]
        batch = encode(np.stack([tiles[i] for i in chunk]))
        yield from zip(chunk, np.asarray(predict(batch)), strict=True)


def _windows(starts: tuple[int, ...], length: int, size: int) -> tuple[np.ndarray, ...]:
    """Cross-fading windows for tiles at ``starts``, normalised to sum to one everywhere."""
    raw = []
    t = np.arange(length) + 0.5
    for i, start in enumerate(starts):
        w = np.ones(length, np.float64)
        fade_in = starts[i - 1] + length - start if i > 0 else 0
        fade_out = start + length - starts[i + 1] if i < len(starts) - 1 else 0
        if fade_in:
            w *= np.where(t < fade_in, np.sin(0.5 * np.pi * t / fade_in) ** 2, 1.0)
        if fade_out:
            u = t - (length - fade_out)
            w *= np.where(u > 0, np.cos(0.5 * np.pi * u / fade_out) ** 2, 1.0)
        raw.append(w)
    total = np.zeros(size)
    for start, w in zip(starts, raw, strict=True):
        total[start : start + length] += w
    return tuple(
        (w / total[start : start + length]).astype(np.float32)
        for start, w in zip(starts, raw, strict=True)
    )


def pad_to(image: np.ndarray, height: int, width: int) -> np.ndarray:
    """Reflect-pad an ``(h, w, C)`` image at the bottom and right to ``height`` x ``width``."""
    pad = ((0, height - image.shape[0]), (0, width - image.shape[1]), (0, 0))
    return np.pad(image, pad, mode="reflect") if pad[0][1] or pad[1][1] else image


def seam_ratio(image: np.ndarray, tiling: Tiling) -> float:
    """How much tile borders show: mean absolute gradient across them over that elsewhere.

    Gradients are taken between neighbouring rows (and columns) of ``image``; a
    border is where a tile of ``tiling`` starts or ends inside the image. About
    1.0 means borders are no sharper than the picture itself; hard seams give more.

    Args:
        image: ``(H, W, C)`` image translated with ``tiling``.
        tiling: The tiling it was translated with (at least two tiles along an axis).

    Returns:
        The ratio (NaN when no tile border falls inside the image).
    """
    pixels = image.astype(np.float32)
    profiles = (
        np.abs(np.diff(pixels, axis=0)).mean(axis=(1, 2)),  # gradient between rows y-1 and y
        np.abs(np.diff(pixels, axis=1)).mean(axis=(0, 2)),
    )
    at_border, elsewhere = [], []
    for profile, size in zip(profiles, image.shape[:2], strict=True):
        plan = tiling.plan(size)
        edges = set(plan.starts[1:]) | {s + plan.length for s in plan.starts[:-1]}
        border = np.zeros(size - 1, bool)
        border[[e - 1 for e in edges]] = True
        at_border.append(profile[border])
        elsewhere.append(profile[~border])
    border_mean = np.concatenate(at_border).mean() if any(a.size for a in at_border) else np.nan
    return float(border_mean / np.concatenate(elsewhere).mean())
