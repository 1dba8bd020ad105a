"""Find and read PNG, JPEG and TIFF (tiled, pyramidal, SVS) images as RGB uint8.

Every input is converted to an ``(H, W, 3)`` uint8 array. Conversions that change
the data (grey to RGB, alpha composited on white, palette expanded, 16-bit scaled
to 8-bit) are logged as one warning line each on the ``stainvirt`` logger.
"""

from __future__ import annotations

import glob
import logging
import os
from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from stainvirt.errors import StainvirtError

if TYPE_CHECKING:
    import PIL.Image
    import tifffile

log = logging.getLogger("stainvirt")

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".tif", ".tiff", ".svs")
TIFF_SUFFIXES = (".tif", ".tiff", ".svs")
_REPLACE_BAD_FILE = "remove or replace the file, or pass --skip-bad to skip such files"
MAX_FLAT_PIXELS = 250_000_000
"""PNG and JPEG are decoded whole: beyond this (750 MB of RGB) a tiled TIFF is the way."""


def is_image_file(path: str | Path) -> bool:
    """True when the file name has a supported image extension."""
    return Path(path).suffix.lower() in IMAGE_SUFFIXES


def list_images(folder: str | Path) -> list[Path]:
    """All supported images under ``folder``, recursively, in a stable sorted order.

    Hidden files and folders (names starting with ``.``) are skipped.

    Raises:
        StainvirtError: if the folder is missing or holds no supported image.
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise StainvirtError(f"{folder}: folder not found; check the path")
    found = []
    for root, dirs, files in os.walk(folder):
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        found += [Path(root) / f for f in files if not f.startswith(".") and is_image_file(f)]
    if not found:
        raise StainvirtError(
            f"{folder}: no images found (looked for {', '.join(IMAGE_SUFFIXES)}, recursively); "
            "point at a folder of image tiles"
        )
    return sorted(found, key=lambda p: p.relative_to(folder).as_posix())


def expand_inputs(inputs: Iterable[str | Path]) -> list[Path]:
    """Files, folders (recursively) and glob patterns to a de-duplicated list of images.

    Raises:
        StainvirtError: if an input matches nothing.
    """
    out: list[Path] = []
    for item in inputs:
        path = Path(item)
        if path.is_dir():
            out += list_images(path)
        elif path.is_file():
            out.append(path)
        else:
            pattern = str(item)
            matches = [Path(m) for m in sorted(glob.glob(pattern, recursive=True))]
            matches = [m for m in matches if m.is_file() and is_image_file(m)]
            if not matches:
                raise StainvirtError(f"{item}: no such file, folder or matching images")
            out += matches
    return list(dict.fromkeys(out))


def read_image(path: str | Path) -> np.ndarray:
    """Read an image file as an ``(H, W, 3)`` uint8 RGB array.

    TIFF and SVS files are read at full resolution (level 0 of a pyramid).

    Raises:
        StainvirtError: if the file is missing, corrupt, not an image, or of an
            unsupported pixel layout.
    """
    path = Path(path)
    if not path.is_file():
        raise StainvirtError(f"{path}: file not found")
    array = _read_tiff(path) if path.suffix.lower() in TIFF_SUFFIXES else _read_pillow(path)
    return to_rgb_uint8(array, path)


def _read_pillow(path: Path) -> np.ndarray:
    try:
        with open_flat_image(path) as img:
            img.load()
            if img.mode == "P":
                log.warning("%s: palette image expanded to RGB", path)
                img = img.convert("RGBA" if "transparency" in img.info else "RGB")
            elif img.mode in ("CMYK", "YCbCr", "LAB", "HSV"):
                log.warning("%s: %s image converted to RGB", path, img.mode)
                img = img.convert("RGB")
            elif img.mode == "1":
                img = img.convert("L")
            return np.asarray(img)
    except (OSError, ValueError, SyntaxError) as exc:
        raise StainvirtError(
            f"{path}: not a readable image ({exc}); {_REPLACE_BAD_FILE}"
        ) from exc


def open_flat_image(path: str | Path) -> PIL.Image.Image:
    """Open a PNG or JPEG with Pillow, lazily, refusing one beyond :data:`MAX_FLAT_PIXELS`.

    Only the header is read, so an image whose header claims an absurd size
    (a truncated file, a decompression bomb) is refused before any decoding.

    Raises:
        StainvirtError: if the file is not an image, or too large to decode whole.
    """
    from PIL import Image, UnidentifiedImageError

    # Our own limit, checked below with the real size in the message, replaces Pillow's.
    pillow_limit, Image.MAX_IMAGE_PIXELS = Image.MAX_IMAGE_PIXELS, None
    try:
        img = Image.open(path)
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError) as exc:
        raise StainvirtError(
            f"{path}: not a readable image ({exc}); {_REPLACE_BAD_FILE}"
        ) from exc
    finally:
        Image.MAX_IMAGE_PIXELS = pillow_limit
    if img.width * img.height > MAX_FLAT_PIXELS:
        img.close()
        raise StainvirtError(
            f"{path}: {img.width}x{img.height} px is beyond the {MAX_FLAT_PIXELS // 10**6} "
            f"megapixel limit for {img.format or 'PNG/JPEG'} images, which are decoded whole "
            "(or its header is damaged); convert it to a tiled pyramidal TIFF (e.g. 'vips "
            "tiffsave in.png out.tif --tile --pyramid') or cut it into tiles"
        )
    return img


def open_tiff(path: str | Path) -> tifffile.TiffFile:
    """Open a TIFF or SVS file that holds at least one image series.

    The caller closes it, best as ``with open_tiff(path) as tif: ...``.

    Raises:
        StainvirtError: if the file is not a readable TIFF or holds no image.
    """
    import tifffile

    try:
        tif = tifffile.TiffFile(path)
    except Exception as exc:  # tifffile raises many exception types for bad files
        raise _unreadable_tiff(path, exc) from exc
    if not tif.series:
        tif.close()
        raise StainvirtError(f"{path}: the TIFF holds no image; {_REPLACE_BAD_FILE}")
    return tif


def _read_tiff(path: Path) -> np.ndarray:
    with open_tiff(path) as tif:
        try:
            return tif.series[0].levels[0].asarray()
        except Exception as exc:  # tifffile's codecs raise many exception types too
            raise _unreadable_tiff(path, exc) from exc


def _unreadable_tiff(path: str | Path, exc: Exception) -> StainvirtError:
    return StainvirtError(
        f"{path}: not a readable TIFF ({type(exc).__name__}: {exc}); {_REPLACE_BAD_FILE}"
    )


def to_rgb_uint8(array: np.ndarray, name: str | Path = "image") -> np.ndarray:
    """Convert grey, grey+alpha, RGBA and 16-bit arrays to ``(H, W, 3)`` uint8.

    Alpha is composited on white (the colour of glass in a slide scan).

    Raises:
        StainvirtError: for layouts that are not an image (wrong rank or channels).
    """
    a = np.asarray(array)
    if a.ndim == 3 and a.shape[0] in (3, 4) and a.shape[-1] not in (1, 2, 3, 4):
        a = np.moveaxis(a, 0, -1)  # planar (channels-first) TIFF
    if a.ndim == 2:
        a = a[..., None]
    if a.ndim != 3 or a.shape[-1] not in (1, 2, 3, 4) or min(a.shape[:2]) < 1:
        raise StainvirtError(
            f"{name}: unsupported pixel layout {tuple(array.shape)}; expected an RGB, RGBA "
            "or grey image"
        )
    a = _to_uint8(a, name)
    channels = a.shape[-1]
    if channels in (2, 4):
        log.warning("%s: alpha channel composited on white", name)
        alpha = a[..., -1:].astype(np.float32) / 255.0
        colour = a[..., :-1].astype(np.float32)
        a = np.round(colour * alpha + 255.0 * (1.0 - alpha)).astype(np.uint8)
        channels -= 1
    if channels == 1:
        log.warning("%s: greyscale image replicated to RGB", name)
        a = np.repeat(a, 3, axis=-1)
    return np.ascontiguousarray(a)


def _to_uint8(a: np.ndarray, name: str | Path) -> np.ndarray:
    if a.dtype == np.uint8:
        return a
    if a.dtype == bool:
        return a.astype(np.uint8) * 255
    if a.dtype == np.uint16:
        log.warning("%s: 16-bit image scaled to 8-bit", name)
        return ((a.astype(np.uint32) * 255 + 32767) // 65535).astype(np.uint8)
    if np.issubdtype(a.dtype, np.floating):
        log.warning("%s: floating-point image scaled from [0, 1] to 8-bit", name)
        return np.round(np.clip(a, 0.0, 1.0) * 255.0).astype(np.uint8)
    raise StainvirtError(f"{name}: unsupported pixel type {a.dtype}; save it as 8- or 16-bit")
