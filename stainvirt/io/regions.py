"""Rectangular regions of one image level, read lazily, and the same resampled to any resolution.

A tiled or stripped 8-bit RGB TIFF level (SVS, pyramidal OME-TIFF, BigTIFF) is
never loaded whole: each region read decodes only the TIFF tiles or strips it
touches, or maps only its rows of an uncompressed file. :class:`ResampledRegions`
shows a slide at a chosen resolution (microns per pixel), reading each region
from the sharpest level that is not finer than needed and resizing it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np

from stainvirt.errors import StainvirtError

if TYPE_CHECKING:
    from stainvirt.io.slide import Slide


class Regions(Protocol):
    """An image that hands out ``(h, w, 3)`` uint8 RGB regions."""

    height: int
    width: int
    mpp: float | None
    """Microns per pixel of these regions, when known."""

    def read(self, top: int, left: int, height: int, width: int) -> np.ndarray:
        """The region of ``height`` x ``width`` pixels whose top-left pixel is ``(top, left)``."""
        ...


@dataclass
class ArrayRegions:
    """Regions of an image already in memory (or memory-mapped)."""

    array: np.ndarray
    mpp: float | None = None

    @property
    def height(self) -> int:
        """Rows of the image."""
        return self.array.shape[0]

    @property
    def width(self) -> int:
        """Columns of the image."""
        return self.array.shape[1]

    def read(self, top: int, left: int, height: int, width: int) -> np.ndarray:
        """The region, as a copy."""
        return np.array(self.array[top : top + height, left : left + width])


@dataclass
class RawRegions:
    """Regions of an uncompressed, contiguous RGB TIFF page (often a single strip).

    Each read maps just the rows it needs and unmaps them, so the file's pages
    never pile up in the process's memory.
    """

    path: Path
    offset: int
    """Byte offset of the first pixel in the file."""
    height: int
    width: int
    mpp: float | None = None

    def read(self, top: int, left: int, height: int, width: int) -> np.ndarray:
        """The region, as a copy."""
        start = self.offset + top * self.width * 3
        rows = np.memmap(self.path, np.uint8, "r", start, (height, self.width, 3))
        return np.array(rows[:, left : left + width])


class TiffRegions:
    """Regions of one TIFF page, decoding only the tiles or strips a region touches.

    Args:
        page: A tiled or stripped, 8-bit, 3-sample, interleaved ``tifffile.TiffPage``.
        path: The file, for error messages.
        mpp: Microns per pixel, if known.
    """

    def __init__(self, page: Any, path: Path, mpp: float | None) -> None:
        self._page = page
        self._path = path
        self.mpp = mpp
        self.height, self.width = page.shaped[2:4]
        self._chunk_rows, self._chunk_cols = page.chunks[:2]
        self._chunks_across = page.chunked[1]

    def read(self, top: int, left: int, height: int, width: int) -> np.ndarray:
        """Decode the chunks under the region and copy their overlap into it."""
        out = np.zeros((height, width, 3), np.uint8)  # empty chunks read as zeros, as in tifffile
        rows = range(top // self._chunk_rows, (top + height - 1) // self._chunk_rows + 1)
        cols = range(left // self._chunk_cols, (left + width - 1) // self._chunk_cols + 1)
        for y, x, chunk in self._decode([r * self._chunks_across + c for r in rows for c in cols]):
            y0, x0 = max(y, top), max(x, left)
            y1, x1 = min(y + chunk.shape[0], top + height), min(x + chunk.shape[1], left + width)
            out[y0 - top : y1 - top, x0 - left : x1 - left] = (
                chunk[y0 - y : y1 - y, x0 - x : x1 - x]
            )
        return out

    def _decode(self, indices: list[int]):  # -> Iterator[tuple[int, int, np.ndarray]]
        """``(top, left, pixels)`` of each non-empty chunk, in file order."""
        page = self._page
        try:
            segments = page.parent.filehandle.read_segments(
                [page.dataoffsets[i] for i in indices],
                [page.databytecounts[i] for i in indices],
                indices=indices,
            )
            for data, index in segments:
                chunk, (_, _, y, x, _), _ = page.decode(data, index, jpegtables=page.jpegtables)
                if chunk is not None:
                    yield y, x, chunk[0]
        except Exception as exc:  # tifffile and its codecs raise many exception types
            raise StainvirtError(
                f"{self._path}: cannot decode its pixels ({type(exc).__name__}: {exc}); "
                "the file is damaged: re-export or replace it"
            ) from exc


class ResampledRegions:
    """A slide seen at ``mpp`` microns per pixel, whatever levels it was scanned with.

    Each region is read from the sharpest level whose pixels are not finer than
    needed (so a 40x slide read at 20x uses its 2x-downsampled level when it has
    one, and level 0 otherwise), then resized with Lanczos filtering. Regions are
    mapped to level coordinates exactly (fractional box), so neighbouring
    regions line up without seams.

    Args:
        slide: The open slide (its level 0 must have a known mpp).
        mpp: The resolution to show it at.
    """

    def __init__(self, slide: Slide, mpp: float) -> None:
        self.slide = slide
        self.mpp = mpp
        self.scale = mpp / slide.mpp  # level-0 pixels per output pixel
        height0, width0 = slide.level_size(0)
        self.height = max(1, round(height0 / self.scale))
        self.width = max(1, round(width0 / self.scale))
        # 1 % slack: levels are rarely an exact power of two of level 0.
        self.level = max(
            (i for i in range(slide.level_count) if slide.level_downsample(i) <= self.scale * 1.01),
            key=slide.level_downsample,
        )

    def read(self, top: int, left: int, height: int, width: int) -> np.ndarray:
        """The region, resampled from the chosen level."""
        from PIL import Image

        level_h, level_w = self.slide.level_size(self.level)
        factor = self.scale / self.slide.level_downsample(self.level)
        box = (left * factor, top * factor, (left + width) * factor, (top + height) * factor)
        # Read the whole-pixel area under the box plus a margin the Lanczos kernel reaches.
        margin = 3 * max(1.0, factor)
        x0, y0 = max(0, math.floor(box[0] - margin)), max(0, math.floor(box[1] - margin))
        x1 = min(level_w, math.ceil(box[2] + margin))
        y1 = min(level_h, math.ceil(box[3] + margin))
        patch = self.slide.read(self.level, y0, x0, y1 - y0, x1 - x0)
        # Rounded output sizes can reach a fraction of a pixel past the level's edge.
        shifted = (box[0] - x0, box[1] - y0, min(box[2], x1) - x0, min(box[3], y1) - y0)
        image = Image.fromarray(patch).resize((width, height), Image.Resampling.LANCZOS, shifted)
        return np.asarray(image)
