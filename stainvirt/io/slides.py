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
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from stainvirt.errors import StainvirtError
from stainvirt.io.images import TIFF_SUFFIXES, open_flat_image, read_image
from stainvirt.io.regions import Regions
from stainvirt.io.slide import NATIVE, Resolution, Slide
from stainvirt.io.slide_formats import ArraySlide, OpenSlideSlide, TiffSlide

SLIDE_SUFFIXES = (".svs", ".ndpi", ".vms", ".vmu", ".mrxs", ".scn", ".bif", ".svslide", ".dcm")
"""Whole-slide formats; ``.tif``/``.tiff`` are slides too when OpenSlide recognises the vendor."""


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
    if is_vendor_slide(path):
        return OpenSlideSlide(path)
    if path.suffix.lower() in TIFF_SUFFIXES:
        return TiffSlide(path)
    return ArraySlide(path, read_image(path))


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


def is_vendor_slide(path: str | Path) -> bool:
    """A scanner vendor's whole slide (read through OpenSlide): always 8-bit colour."""
    path = Path(path)
    suffix = path.suffix.lower()
    return suffix in SLIDE_SUFFIXES or (suffix in TIFF_SUFFIXES and _vendor_tiff(path))


def _vendor_tiff(path: Path) -> bool:
    """A TIFF OpenSlide knows as a vendor's slide (generic and OME-TIFF go to tifffile)."""
    import openslide

    return openslide.OpenSlide.detect_format(path) not in (None, "generic-tiff")
