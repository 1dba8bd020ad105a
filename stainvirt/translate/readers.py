"""Read rectangular regions of images, lazily for large TIFF and SVS files.

A tiled or stripped 8-bit RGB TIFF (SVS slides, pyramidal OME-TIFF, BigTIFF) is
never loaded whole: each region read decodes only the TIFF tiles or strips it
touches, or maps only its rows of an uncompressed file. Other files (PNG, JPEG,
unusual TIFF layouts) are read whole with :func:`stainvirt.io.images.read_image`.
"""

from __future__ import annotations

import contextlib
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from stainvirt.errors import StainvirtError
from stainvirt.io.images import TIFF_SUFFIXES, open_tiff, read_image


class Regions(Protocol):
    """An image that hands out ``(h, w, 3)`` uint8 RGB regions."""

    height: int
    width: int
    mpp: float | None
    """Microns per pixel at full resolution, when the file says."""

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

    def _decode(self, indices: list[int]) -> Iterator[tuple[int, int, np.ndarray]]:
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


@contextlib.contextmanager
def open_regions(path: str | Path) -> Iterator[Regions]:
    """Open an image for region reads (level 0 of a pyramid).

    Args:
        path: A PNG, JPEG, TIFF or SVS file.

    Yields:
        The image's regions; TIFF files stay open until the block ends.

    Raises:
        StainvirtError: if the file is missing, corrupt or not a supported image.

    Examples:
        >>> with open_regions("slide.svs") as slide:
        ...     corner = slide.read(0, 0, 512, 512)
    """
    path = Path(path)
    if not _is_tiff(path):
        yield ArrayRegions(read_image(path))
        return
    with open_tiff(path) as tif:
        page, mpp = _lazy_page(tif), _mpp(tif)
        if page is None:
            yield ArrayRegions(read_image(path), mpp)
        elif page.is_contiguous and page.compression == 1:
            yield RawRegions(path, page.dataoffsets[0], *page.shaped[2:4], mpp)
        else:
            yield TiffRegions(page, path, mpp)


def image_size(path: str | Path) -> tuple[int, int]:
    """``(height, width)`` of an image (level 0), read from its header.

    Raises:
        StainvirtError: if the file is missing, corrupt or not an image.
    """
    path = Path(path)
    if _is_tiff(path):
        with open_tiff(path) as tif:
            level = tif.series[0].levels[0]
            if "Y" in level.axes and "X" in level.axes:
                return level.shape[level.axes.index("Y")], level.shape[level.axes.index("X")]
        return read_image(path).shape[:2]  # names the unsupported layout
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as img:
            return img.height, img.width
    except FileNotFoundError as exc:
        raise StainvirtError(f"{path}: file not found") from exc
    except (UnidentifiedImageError, OSError, ValueError) as exc:
        raise StainvirtError(f"{path}: not a readable image ({exc}); remove or replace it") from exc


def _is_tiff(path: Path) -> bool:
    return path.suffix.lower() in TIFF_SUFFIXES and path.is_file()


def _lazy_page(tif: Any) -> Any | None:
    """Level 0 of the first series if it can be read region by region, else None."""
    level = tif.series[0].levels[0]
    page = level.keyframe
    if (
        level.axes == "YXS"
        and len(level.pages) == 1
        and page.dtype == np.uint8
        and page.samplesperpixel == 3
    ):
        return page
    return None


def _mpp(tif: Any) -> float | None:
    """Microns per pixel from an SVS description or metric resolution tags."""
    page = tif.pages[0]
    if tif.is_svs:
        found = re.search(r"\bMPP\s*=\s*([0-9.]+)", page.description)
        return float(found.group(1)) if found else None
    metric = {3, 4, 5}  # centimetre, millimetre, micrometre; inch defaults are not measurements
    if page.resolutionunit in metric and page.resolution[0] > 0:
        return 1.0 / page.get_resolution("MICROMETER")[0]
    return None
