"""The formats behind :class:`~stainvirt.io.slide.Slide`: OpenSlide, tifffile, in memory.

- :class:`OpenSlideSlide`: the vendor formats OpenSlide knows (``openslide-python``
  with the ``openslide-bin`` wheel: no system library).
- :class:`TiffSlide`: OME-TIFF and plain TIFF through tifffile (tiled, stripped,
  pyramidal with SubIFDs or series levels), decoded lazily, tile by tile.
- :class:`ArraySlide`: an image already in memory (PNG, JPEG).
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import numpy as np

from stainvirt.errors import StainvirtError
from stainvirt.io.images import open_tiff, read_image
from stainvirt.io.regions import RawRegions, Regions, TiffRegions
from stainvirt.io.slide import THUMBNAIL_SIDE, Slide


class ArraySlide(Slide):
    """An image held in memory: PNG, JPEG, or a TIFF of a layout read whole."""

    def __init__(self, path: Path, array: np.ndarray, mpp: float | None = None) -> None:
        self.path, self.array, self.mpp = path, array, mpp
        self.levels = [array.shape[:2]]

    def read(self, level: int, top: int, left: int, height: int, width: int) -> np.ndarray:
        """The region, as a copy."""
        return np.array(self.array[top : top + height, left : left + width])


class TiffSlide(Slide):
    """A TIFF read through tifffile, lazily level by level (pyramidal OME-TIFF, tiled TIFF).

    Attributes:
        level_regions: Per level, the reader that decodes only what a region touches
            (:class:`TiffRegions`, or :class:`RawRegions` for uncompressed pixels),
            or one in-memory level for a layout that cannot be read region by region.
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        self._tif = open_tiff(path)
        try:
            self.mpp = _tiff_mpp(self._tif)
            levels = self._tif.series[0].levels
            pages = [_lazy_page(level) for level in levels]
            self.level_regions = [_page_reader(p, path) for p in pages if p is not None]
            if pages[0] is None:  # an unusual layout (16-bit, grey, planar...): read it whole
                self.level_regions = [_WholeImage(path, levels[0])]
        except BaseException:
            self._tif.close()
            raise
        self.levels = [(r.height, r.width) for r in self.level_regions]

    def close(self) -> None:
        """Close the file."""
        self._tif.close()

    def read(self, level: int, top: int, left: int, height: int, width: int) -> np.ndarray:
        """Decode just the tiles or strips under the region."""
        return self.level_regions[level].read(top, left, height, width)


class _WholeImage:
    """A TIFF level that cannot be read region by region: decoded whole, on the first read."""

    def __init__(self, path: Path, level: Any) -> None:
        self.path, self.mpp, self._array = path, None, None
        axes = level.axes
        if "Y" in axes and "X" in axes:
            self.height, self.width = level.shape[axes.index("Y")], level.shape[axes.index("X")]
        else:
            self._array = read_image(path)  # names the unsupported layout
            self.height, self.width = self._array.shape[:2]

    def read(self, top: int, left: int, height: int, width: int) -> np.ndarray:
        """The region, from the whole image converted to RGB uint8."""
        if self._array is None:
            self._array = read_image(self.path)
        return np.array(self._array[top : top + height, left : left + width])


class OpenSlideSlide(Slide):
    """A whole-slide file read through OpenSlide."""

    def __init__(self, path: Path) -> None:
        import openslide

        self.path = path
        try:
            self._slide = openslide.OpenSlide(path)
        except (openslide.OpenSlideError, OSError) as exc:
            raise StainvirtError(
                f"{path}: cannot open the slide ({type(exc).__name__}: {exc}); the file is "
                "damaged or incomplete (an MRXS needs its data folder beside it): replace "
                "it, or pass --skip-bad to skip it"
            ) from exc
        self.levels = [(h, w) for w, h in self._slide.level_dimensions]
        props = self._slide.properties
        self.mpp = _float(props.get("openslide.mpp-x"))
        self.objective_power = _float(props.get("openslide.objective-power"))

    def close(self) -> None:
        """Close the slide."""
        self._slide.close()

    def level_downsample(self, level: int) -> float:
        """OpenSlide's own downsample of the level."""
        return float(self._slide.level_downsamples[level])

    def read(self, level: int, top: int, left: int, height: int, width: int) -> np.ndarray:
        """The region, transparent (unscanned) areas shown as white glass."""
        import openslide

        scale = self.level_downsample(level)
        try:
            rgba = self._slide.read_region(
                (round(left * scale), round(top * scale)), level, (width, height)
            )
        except openslide.OpenSlideError as exc:
            raise StainvirtError(
                f"{self.path}: cannot read its pixels ({exc}); the file is damaged: replace it"
            ) from exc
        return _on_white(np.asarray(rgba))

    def thumbnail(self, max_side: int = THUMBNAIL_SIDE) -> np.ndarray:
        """OpenSlide's thumbnail, from its smallest suitable level."""
        return np.asarray(self._slide.get_thumbnail((max_side, max_side)).convert("RGB"))


def _lazy_page(level: Any) -> Any | None:
    """The page of a tifffile level if it can be read region by region, else None."""
    page = level.keyframe
    if (
        level.axes == "YXS"
        and len(level.pages) == 1
        and page.dtype == np.uint8
        and page.samplesperpixel == 3
    ):
        return page
    return None


def _page_reader(page: Any, path: Path) -> Regions:
    if page.is_contiguous and page.compression == 1:
        return RawRegions(path, page.dataoffsets[0], *page.shaped[2:4])
    return TiffRegions(page, path, None)


def _tiff_mpp(tif: Any) -> float | None:
    """Microns per pixel from an SVS description, OME metadata or metric resolution tags."""
    page = tif.pages[0]
    if tif.is_svs:
        found = re.search(r"\bMPP\s*=\s*([0-9.]+)", page.description)
        return float(found.group(1)) if found else None
    if tif.is_ome:
        found = re.search(r'PhysicalSizeX="([0-9.eE+-]+)"', tif.ome_metadata or "")
        unit = re.search(r'PhysicalSizeXUnit="([^"]+)"', tif.ome_metadata or "")
        if found and (unit is None or unit.group(1) in ("µm", "um", "\u00b5m")):
            return float(found.group(1))
    metric = {3, 4, 5}  # centimetre, millimetre, micrometre; inch defaults are not measurements
    if page.resolutionunit in metric and page.resolution[0] > 0:
        return 1.0 / page.get_resolution("MICROMETER")[0]
    return None


def _float(value: str | None) -> float | None:
    try:
        return float(value) if value else None
    except ValueError:
        return None


def _on_white(rgba: np.ndarray) -> np.ndarray:
    """RGB of OpenSlide's premultiplied RGBA, with unscanned (transparent) areas white."""
    rgb = rgba[..., :3].astype(np.uint16)
    alpha = rgba[..., 3:].astype(np.uint16)
    return (rgb + (255 - alpha)).clip(0, 255).astype(np.uint8)
