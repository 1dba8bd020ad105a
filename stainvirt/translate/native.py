"""Images of a run's own domains: read as stored, scaled by the run's range, written in kind.

A run whose input domain is not 8-bit RGB (quantitative phase, autofluorescence,
X-ray CT) reads its inputs unchanged with :func:`~stainvirt.io.native.read_native`
and scales them with the range recorded at training (:meth:`Domain.to_net`), never
image by image. Its outputs are written in the output domain's kind: 8-bit RGB as
PNG or pyramidal OME-TIFF (as for stains), anything else as an OME-TIFF of the
domain's pixel type (uint16 or float32, zlib), or a 16-bit PNG for one channel.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from pathlib import Path

import numpy as np

from stainvirt import __version__
from stainvirt.domain import Domain
from stainvirt.errors import StainvirtError
from stainvirt.io.atomic import atomic_path
from stainvirt.io.images import TIFF_SUFFIXES, open_tiff, to_rgb_uint8
from stainvirt.io.native import pixel_kind, read_native
from stainvirt.io.slides import image_size
from stainvirt.translate.tiling import Codec
from stainvirt.translate.writers import TIFF_TILE, regroup, tiff_tiles, write_png, write_tiff

log = logging.getLogger("stainvirt")

STACK_SUFFIXES = (".tif", ".tiff")
"""Files that may hold a stack of slices (an SVS never does)."""
# A PNG is written from one array in memory; beyond this, stream a TIFF instead.
PNG_MAX_PIXELS = 100_000_000


def codec(domain: Domain) -> Codec:
    """How ``domain``'s pixels go into a generator and come back (its recorded range)."""
    return Codec(domain.to_net, domain.from_net)


def domain_name(domain: Domain, stain: str) -> str:
    """What to call a domain's images in titles: the stain for RGB, else their kind."""
    return stain if domain.is_rgb else f"{domain.channels}-channel {domain.dtype}"


def is_stack(path: Path) -> bool:
    """Whether ``path`` holds more than one slice (from its header; SVS, PNG, JPEG never do).

    A file whose header does not parse is no stack: the image reader then says what is wrong.
    """
    if path.suffix.lower() not in STACK_SUFFIXES:
        return False
    try:
        return pixel_kind(path).slices > 1
    except StainvirtError:
        return False


def stack_shape(path: Path) -> tuple[int, int, int]:
    """``(slices, height, width)`` of an image or stack, from its header.

    Raises:
        StainvirtError: if the file is unreadable or not an image layout.
    """
    slices = pixel_kind(path).slices  # checks the layout
    if path.suffix.lower() not in TIFF_SUFFIXES:
        return (slices, *image_size(path))
    with open_tiff(path) as tif:
        series = tif.series[0]
        sizes = dict(zip(series.axes.upper(), series.shape, strict=True))
        return slices, sizes["Y"], sizes["X"]


def read_stack(path: Path, domain: Domain) -> np.ndarray:
    """``path`` as ``(Z, H, W, C)`` pixels of ``domain``, checked against it.

    An 8-bit RGB domain converts other kinds to RGB with a warning (grey is
    replicated, 16-bit scaled), as its 2D images always were; any other domain
    refuses another channel count.

    Raises:
        StainvirtError: if the file is unreadable, or (non-RGB domains) has
            another channel count than ``domain``.
    """
    stack = read_native(path)
    if domain.is_rgb:
        if stack.shape[-1] == 3 and stack.dtype == np.uint8:
            return stack
        # One conversion for all slices: a fixed mapping, one warning.
        rows = to_rgb_uint8(stack.reshape(-1, *stack.shape[2:]), path)
        return rows.reshape(*stack.shape[:3], 3)
    domain.check(stack, str(path))
    if str(stack.dtype) != domain.dtype:
        log.warning("%s: %s pixels, but the run was trained on %s; scaled with its range all "
                    "the same", path, stack.dtype, domain.describe())
    return stack


def read_plane(path: Path, domain: Domain, middle: bool = False) -> np.ndarray:
    """A 2D image of a non-RGB ``domain`` as ``(H, W, C)`` pixels.

    Args:
        path: Image file.
        domain: The domain it belongs to.
        middle: For a stack, take its middle slice; otherwise a stack is an error.

    Raises:
        StainvirtError: as :func:`read_stack`, or for a stack without ``middle``.
    """
    stack = read_stack(path, domain)
    if len(stack) > 1 and not middle:
        raise StainvirtError(f"{path}: a stack of {len(stack)} slices; give 2D images here")
    return stack[len(stack) // 2]


def as_pixels(array: np.ndarray, domain: Domain, name: str = "array") -> np.ndarray:
    """An in-memory image of a non-RGB ``domain`` as ``(H, W, C)``, checked against it."""
    array = np.asarray(array)
    if array.ndim == 2:
        array = array[..., None]
    if array.ndim != 3:
        raise StainvirtError(f"{name}: expected an (H, W) or (H, W, C) image, got shape "
                             f"{array.shape}")
    domain.check(array, name)
    return array


def check_inputs(paths: Iterable[Path], domain: Domain) -> None:
    """Refuse inputs whose channel count is not ``domain``'s, from their headers, at once.

    A wrong channel count means the wrong run, direction or folder: one line
    before any translating, rather than a failure per image hours later.
    Unreadable files are left to fail on their own when translated.

    Raises:
        StainvirtError: naming the first such file and counting the others.
    """
    wrong = []
    for path in paths:
        try:
            channels = pixel_kind(path).channels
        except StainvirtError:
            continue
        if channels != domain.channels:
            wrong.append((path, channels))
    if wrong:
        path, channels = wrong[0]
        try:
            domain.check_channels(channels, str(path))
        except StainvirtError as exc:
            more = f" ({len(wrong) - 1} more input(s) like it)" if len(wrong) > 1 else ""
            raise StainvirtError(f"{exc}{more}") from None


def check_png(domain: Domain, slices: int = 1, name: Path | str | None = None) -> None:
    """Refuse PNG output for what PNG cannot hold: one 8-bit RGB or 8/16-bit grey image.

    Raises:
        StainvirtError: with the format to use instead (naming ``name``, if given).
    """
    where = f"{name}: " if name else ""
    if slices > 1:
        raise StainvirtError(f"{where}a stack of {slices} slices cannot be a PNG; use "
                             "--format tiff")
    if not (domain.is_rgb or (domain.channels == 1 and domain.dtype in ("uint8", "uint16"))):
        raise StainvirtError(f"{where}PNG cannot hold the run's output ({domain.describe()}); "
                             "use --format tiff")


def check_png_size(height: int, width: int, name: Path) -> None:
    """Refuse, before translating, a PNG output too large to build in memory.

    Raises:
        StainvirtError: naming the input ``name`` and the format to use instead.
    """
    if height * width > PNG_MAX_PIXELS:
        raise StainvirtError(f"{name}: {height}x{width} is too large for a PNG output; "
                             "use --format tiff (written tile by tile)")


def write_bands(
    out: Path,
    bands: Iterable[np.ndarray],
    shape: tuple[int, int, int],
    domain: Domain,
    mpp: float | None = None,
) -> Path:
    """Write one translated image of ``domain`` from its row bands, as ``out``'s suffix says.

    PNG (:func:`check_png`, :func:`check_png_size` first): 8-bit RGB, or 8/16-bit
    greyscale. TIFF: pyramidal OME-TIFF for 8-bit RGB (with the pixel size
    ``mpp``), else a tiled OME-TIFF of the domain's pixel type; both are written
    band by band, so an image of any size needs only a few bands in memory.

    Args:
        out: Target file, written atomically.
        bands: ``(rows, W, C)`` pixels of ``domain``, top to bottom.
        shape: ``(H, W, C)`` of the whole image.
        domain: The pixels' domain.
        mpp: Microns per pixel, for the RGB pyramid.
    """
    height, width, channels = shape
    if out.suffix.lower() == ".png":
        pixels = np.concatenate(list(bands))
        if domain.is_rgb:
            return write_png(out, pixels)
        from PIL import Image

        with atomic_path(out) as tmp:
            Image.fromarray(pixels[..., 0]).save(tmp, "PNG")
        return out
    if domain.is_rgb:
        return write_tiff(out, height, width, bands, mpp)
    flat = (band[..., 0] if channels == 1 else band for band in bands)
    tiles = tiff_tiles(regroup(flat, TIFF_TILE), TIFF_TILE)
    return _write_ome(out, tiles, (height, width, channels), domain, tile=(TIFF_TILE, TIFF_TILE))


def write_stack(
    path: Path, slices: Iterable[np.ndarray], shape: tuple[int, int, int, int], domain: Domain
) -> Path:
    """Write ``(Z, H, W, C)`` pixels of ``domain``, slice by slice, as an OME-TIFF, atomically.

    Axes are ``[Z]YX[S]``: one slice is a 2D image, one channel has no channel
    axis, and channels are interleaved (photometric RGB for 8-bit RGB, minisblack
    otherwise); :func:`~stainvirt.io.native.read_native` reads it back as written.

    Args:
        path: Target file (conventionally ``*.ome.tif``).
        slices: ``(H, W, C)`` arrays of ``domain``'s pixel type, ``Z`` of them.
        shape: ``(Z, H, W, C)``.
        domain: The pixels' domain: their type and photometric interpretation.
    """
    z, height, width, channels = shape
    pages = (s[..., 0] if channels == 1 else s for s in slices)
    return _write_ome(path, pages, ((z,) if z > 1 else ()) + (height, width, channels), domain)


def _write_ome(
    path: Path, data: Iterable[np.ndarray], shape: tuple[int, ...], domain: Domain, **options
) -> Path:
    """Write pages or tiles of ``[Z]YXC``-shaped pixels as an OME-TIFF, atomically.

    One channel is written without a channel axis; several interleaved.
    """
    import tifffile

    *lead, channels = shape
    axes = ("Z" if len(lead) == 3 else "") + "YX" + ("S" if channels > 1 else "")
    if channels > 1:
        options["planarconfig"] = "contig"
    dims = tuple(lead) + ((channels,) if channels > 1 else ())
    with atomic_path(path) as tmp:
        tifffile.imwrite(
            tmp, data, shape=dims, dtype=domain.dtype, ome=True, metadata={"axes": axes},
            photometric="rgb" if domain.is_rgb else "minisblack", compression="zlib",
            software=f"stainvirt {__version__}", **options,
        )
    return path
