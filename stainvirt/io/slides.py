"""One reader for every image a user brings: whole slides, TIFF, PNG and JPEG.

:func:`open_slide` picks the backend by what the file is:

- **OpenSlide** (``openslide-python`` with the ``openslide-bin`` wheel) for the
  vendor formats it knows: Aperio SVS, Hamamatsu NDPI/VMS, 3DHistech MRXS, Leica
  SCN, Ventana BIF, Philips TIFF, DICOM, and tiled TIFFs of those vendors.
- **tifffile** for OME-TIFF and plain TIFF (tiled, stripped, pyramidal with
  SubIFDs or series levels): regions are decoded lazily, tile by tile.
- **Pillow** for PNG and JPEG, read whole, up to :data:`MAX_FLAT_PIXELS`.

Every backend offers the same :class:`Slide`: level sizes and downsamples,
microns per pixel, objective power, region reads at a level, a thumbnail, and
:meth:`Slide.regions` to read the slide at level 0 or at any chosen resolution.
"""

from __future__ import annotations

import contextlib
import logging
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from stainvirt.errors import StainvirtError
from stainvirt.io.images import TIFF_SUFFIXES, open_flat_image, open_tiff, read_image
from stainvirt.io.regions import RawRegions, Regions, ResampledRegions, TiffRegions

SLIDE_SUFFIXES = (".svs", ".ndpi", ".vms", ".vmu", ".mrxs", ".scn", ".bif", ".svslide", ".dcm")
"""Whole-slide formats; ``.tif``/``.tiff`` are slides too when OpenSlide recognises the vendor."""

log = logging.getLogger("stainvirt")

THUMBNAIL_SIDE = 1024
"""Longest side of the thumbnail that tissue is found on."""

_RESOLUTION_SLACK = 0.01
"""Relative difference below which two resolutions count as the same (no resampling)."""


class Slide:
    """An open image with one or more resolution levels (level 0 is the sharpest).

    Subclasses fill ``levels`` (``(height, width)`` per level), ``mpp`` and
    ``objective_power``, and implement :meth:`read`. Use as a context manager.
    """

    path: Path
    levels: list[tuple[int, int]]
    mpp: float | None
    """Microns per pixel of level 0, when the file says."""
    objective_power: float | None = None
    """Scanning magnification (e.g. 20 or 40), when the file says."""

    def __enter__(self) -> Slide:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Release the file."""

    @property
    def level_count(self) -> int:
        """Number of resolution levels."""
        return len(self.levels)

    def level_size(self, level: int) -> tuple[int, int]:
        """``(height, width)`` of a level."""
        return self.levels[level]

    def level_downsample(self, level: int) -> float:
        """How many level-0 pixels one pixel of ``level`` spans (1.0 for level 0)."""
        return self.levels[0][1] / self.levels[level][1]

    def read(self, level: int, top: int, left: int, height: int, width: int) -> np.ndarray:
        """``(height, width, 3)`` uint8 RGB at ``level``; ``(top, left)`` in that level's pixels."""
        raise NotImplementedError

    def thumbnail(self, max_side: int = THUMBNAIL_SIDE) -> np.ndarray:
        """The whole slide, its longest side at most ``max_side`` pixels, uint8 RGB.

        Read from the smallest level, band by band, so even a slide without a
        pyramid needs only a band of it in memory.
        """
        from PIL import Image

        level = self.level_count - 1
        height, width = self.level_size(level)
        scale = min(1.0, max_side / max(height, width))
        out_h, out_w = max(1, round(height * scale)), max(1, round(width * scale))
        band = max(1, int(round(64 / scale)))  # about 64 output rows per read
        rows = []
        for top in range(0, height, band):
            bottom = min(height, top + band)
            # Output rows of this band; rounding both ends makes the bands add up to out_h.
            rows_out = round(out_h * bottom / height) - round(out_h * top / height)
            if rows_out:
                patch = Image.fromarray(self.read(level, top, 0, bottom - top, width))
                rows.append(np.asarray(patch.resize((out_w, rows_out), Image.Resampling.BOX)))
        return np.concatenate(rows)

    def regions(self, mpp: float | None = None) -> Regions:
        """The slide as :class:`~stainvirt.io.regions.Regions`: level 0, or at ``mpp``.

        Raises:
            StainvirtError: if ``mpp`` is asked for and the file has no pixel size.
        """
        if mpp is None or (self.mpp and abs(mpp / self.mpp - 1) < _RESOLUTION_SLACK):
            return _LevelRegions(self, 0)
        if not self.mpp:
            raise StainvirtError(
                f"{self.path}: the file records no pixel size (microns per pixel), so it "
                f"cannot be read at {mpp:g} mpp; leave out --mpp/--magnification for it, or "
                "add the pixel size to the file"
            )
        return ResampledRegions(self, mpp)

    def mpp_for(self, mpp: float | None, magnification: float | None) -> float | None:
        """The microns per pixel that ``--mpp`` or ``--magnification`` ask for on this slide.

        A magnification is taken relative to the slide's own objective power (a
        40x slide read at 20x is read at twice its level-0 pixel size), or as
        10 / magnification microns per pixel when the file records no power.
        """
        if magnification is None:
            return mpp
        if self.objective_power and self.mpp:
            return self.mpp * self.objective_power / magnification
        return 10.0 / magnification


class _LevelRegions:
    """One level of a slide as :class:`Regions`."""

    def __init__(self, slide: Slide, level: int) -> None:
        self.slide, self.level = slide, level
        self.height, self.width = slide.level_size(level)
        self.mpp = slide.mpp * slide.level_downsample(level) if slide.mpp else None

    def read(self, top: int, left: int, height: int, width: int) -> np.ndarray:
        """The region at this level."""
        return self.slide.read(self.level, top, left, height, width)


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


def open_slide(path: str | Path) -> Slide:
    """Open any supported image for level, region and thumbnail reads.

    Args:
        path: A whole-slide file, TIFF, PNG or JPEG.

    Returns:
        A :class:`Slide`; close it, best with ``with open_slide(path) as slide:``.

    Raises:
        StainvirtError: if the file is missing, damaged, too large for its format,
            or not a supported image.

    Examples:
        >>> with open_slide("slide7.svs") as slide:
        ...     view = slide.regions(mpp=0.5)              # as if scanned at 20x
        ...     tile = view.read(0, 0, 256, 256)
    """
    path = Path(path)
    if not path.is_file():
        raise StainvirtError(f"{path}: file not found")
    suffix = path.suffix.lower()
    if suffix in SLIDE_SUFFIXES or (suffix in TIFF_SUFFIXES and _vendor_tiff(path)):
        return OpenSlideSlide(path)
    if suffix in TIFF_SUFFIXES:
        return TiffSlide(path)
    return ArraySlide(path, read_image(path))


@dataclass(frozen=True)
class Resolution:
    """The resolution images are read at: ``--mpp``, ``--magnification``, or each file's own.

    Args:
        mpp: Microns per pixel (0.5 is the usual "20x"); None for none.
        magnification: Objective magnification, relative to each slide's own
            scanning power (see :meth:`Slide.mpp_for`); None for none.
        required: What a file without a pixel size gets when a resolution is set:
            True, an error; False, its own resolution and a warning (used when
            the resolution is a run's default rather than the user's request).

    Raises:
        StainvirtError: for both, or a value that is not positive.
    """

    mpp: float | None = None
    magnification: float | None = None
    required: bool = True

    def __post_init__(self) -> None:
        if self.mpp is not None and self.magnification is not None:
            raise StainvirtError("give --mpp or --magnification, not both")
        for name in ("mpp", "magnification"):
            value = getattr(self, name)
            if value is not None and not value > 0:
                raise StainvirtError(f"--{name} must be positive, not {value}")

    def __str__(self) -> str:
        if self.mpp is not None:
            return f"{self.mpp:g} mpp"
        return "native" if self.magnification is None else f"{self.magnification:g}x"

    def regions(self, slide: Slide) -> Regions:
        """``slide`` as :class:`Regions` at this resolution."""
        target = slide.mpp_for(self.mpp, self.magnification)
        if target is not None and not slide.mpp and not self.required:
            log.warning("%s: the file records no pixel size, so it is read at its own "
                        "resolution, not at %s", slide.path, self)
            target = None
        return slide.regions(target)


NATIVE = Resolution()
"""Every file at its own full resolution (level 0)."""


@contextlib.contextmanager
def open_regions(path: str | Path, resolution: Resolution = NATIVE) -> Iterator[Regions]:
    """Open an image for region reads, at level 0 or at the chosen resolution.

    Raises:
        StainvirtError: if the file is missing, damaged or not a supported image,
            or a required resolution is asked of a file without a pixel size.

    Examples:
        >>> with open_regions("slide.svs", Resolution(mpp=0.5)) as slide:
        ...     corner = slide.read(0, 0, 512, 512)
    """
    with open_slide(path) as slide:
        yield resolution.regions(slide)


def read_at(path: str | Path, resolution: Resolution = NATIVE) -> np.ndarray:
    """A whole image as uint8 RGB, at the chosen resolution."""
    with open_regions(path, resolution) as regions:
        return regions.read(0, 0, regions.height, regions.width)


def image_size(path: str | Path) -> tuple[int, int]:
    """``(height, width)`` of an image at level 0, from its header (PNG, JPEG) or levels.

    Raises:
        StainvirtError: if the file is missing, damaged, too large, or not an image.
    """
    path = Path(path)
    if is_slide(path):
        with open_slide(path) as slide:
            return slide.level_size(0)
    if not path.is_file():
        raise StainvirtError(f"{path}: file not found")
    with open_flat_image(path) as img:
        return img.height, img.width


def is_slide(path: str | Path) -> bool:
    """Whether a file is a whole slide or a TIFF: read lazily, its tissue found on a thumbnail."""
    return Path(path).suffix.lower() in SLIDE_SUFFIXES + TIFF_SUFFIXES


def _vendor_tiff(path: Path) -> bool:
    """A TIFF OpenSlide knows as a vendor's slide (generic and OME-TIFF go to tifffile)."""
    import openslide

    return openslide.OpenSlide.detect_format(path) not in (None, "generic-tiff")


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
