"""Read images as they are: any channel count, 8/16-bit or float, 2D or a 3D stack.

:mod:`stainvirt.io.images` turns every input into 8-bit RGB, which is right for
brightfield stains. Label-free images (phase, autofluorescence, X-ray CT) carry
their meaning in the bit depth and channel count, and often come as stacks of
slices; here they are read unchanged, as ``(Z, H, W, C)`` arrays (``Z`` is 1
for a 2D image) of uint8, uint16 or float32 (:func:`~stainvirt.domain.storage_dtype`).

TIFF axes come from tifffile's series (``ZYX``, ``YXS``, ``ZYXS``, ``CYX``,
``ZCYX``, ``TZYX`` with one time point...); PNG and JPEG through Pillow
(``L``, ``I;16``, ``I``, ``F``, ``RGB``, ``RGBA`` modes).
"""

from __future__ import annotations

from pathlib import Path
from typing import NamedTuple

import numpy as np

from stainvirt.domain import storage_dtype
from stainvirt.errors import StainvirtError
from stainvirt.io.images import TIFF_SUFFIXES, open_flat_image, open_tiff

_STACK_AXES = "ZIQTR"
"""tifffile's names for an axis of slices (depth, image sequence, generic, time, rotation)."""
_CHANNEL_AXES = "SC"


class PixelKind(NamedTuple):
    """What one file holds, read from its header only."""

    slices: int
    channels: int
    dtype: str

    @property
    def rgb_like(self) -> bool:
        """8-bit colour (RGB or RGBA), one image: what the RGB reading path is for."""
        return self.slices == 1 and self.dtype == "uint8" and self.channels in (3, 4)


def read_native(path: str | Path) -> np.ndarray:
    """Read an image or stack unchanged, as ``(Z, H, W, C)`` (Z = 1 for a 2D image).

    Raises:
        StainvirtError: if the file is missing, unreadable, or not an image layout.
    """
    path = Path(path)
    if not path.is_file():
        raise StainvirtError(f"{path}: file not found")
    if path.suffix.lower() in TIFF_SUFFIXES:
        with open_tiff(path) as tif:
            series = tif.series[0]
            try:
                array = series.asarray()
            except Exception as exc:  # tifffile's codecs raise many exception types
                raise StainvirtError(f"{path}: not a readable TIFF ({exc})") from exc
            stack = _as_stack(array, series.axes, path)
    else:
        stack = _as_stack(_pillow_pixels(path), "YX" if _flat_rank(path) == 2 else "YXS", path)
    return np.ascontiguousarray(stack.astype(storage_dtype(stack.dtype), copy=False))


def pixel_kind(path: str | Path) -> PixelKind:
    """Slices, channels and stored type of a file, from its header (no pixels decoded).

    Raises:
        StainvirtError: if the file is unreadable or not an image layout.
    """
    path = Path(path)
    if path.suffix.lower() in TIFF_SUFFIXES:
        with open_tiff(path) as tif:
            series = tif.series[0]
            shape = _stack_shape(series.shape, series.axes, path)
            return PixelKind(shape[0], shape[-1], storage_dtype(series.dtype))
    with open_flat_image(path) as img:
        mode = img.mode
    channels = {"L": 1, "1": 1, "I": 1, "I;16": 1, "I;16B": 1, "F": 1, "LA": 2, "P": 3,
                "RGB": 3, "RGBA": 4, "CMYK": 3, "YCbCr": 3}.get(mode, 3)
    dtype = {"I;16": "uint16", "I;16B": "uint16", "I": "float32", "F": "float32"}.get(mode, "uint8")
    return PixelKind(1, channels, dtype)


def _pillow_pixels(path: Path) -> np.ndarray:
    with open_flat_image(path) as img:
        try:
            img.load()
            if img.mode == "P":
                img = img.convert("RGBA" if "transparency" in img.info else "RGB")
            elif img.mode in ("CMYK", "YCbCr", "LAB", "HSV"):
                img = img.convert("RGB")
            elif img.mode == "1":
                img = img.convert("L")
            return np.asarray(img)
        except (OSError, ValueError, SyntaxError) as exc:
            raise StainvirtError(f"{path}: not a readable image ({exc})") from exc


def _flat_rank(path: Path) -> int:
    with open_flat_image(path) as img:
        return 2 if img.mode in ("L", "1", "I", "I;16", "I;16B", "F") else 3


def _as_stack(array: np.ndarray, axes: str, path: Path) -> np.ndarray:
    """``array`` with axes ``axes`` (tifffile's letters) as ``(Z, H, W, C)``."""
    kept, order, stack, channel = _stack_layout(array.shape, axes, path)
    array = np.transpose(array.reshape(kept), order)
    if not stack:
        array = array[None]
    return array if channel else array[..., None]


def _stack_shape(shape: tuple[int, ...], axes: str, path: Path) -> tuple[int, int, int, int]:
    """The ``(Z, H, W, C)`` shape :func:`_as_stack` gives, without touching any pixels."""
    kept, order, stack, channel = _stack_layout(shape, axes, path)
    out = [kept[i] for i in order]
    return tuple(([] if stack else [1]) + out + ([] if channel else [1]))


def _stack_layout(
    shape: tuple[int, ...], axes: str, path: Path
) -> tuple[list[int], list[int], bool, bool]:
    """Shape without uninformative singletons, the axis order Z, Y, X, C, and which exist."""
    axes = axes.upper()
    # Singleton axes other than the image's own (one time point, one channel...) say nothing.
    keep = [i for i, a in enumerate(axes) if shape[i] > 1 or a in "YX"]
    kept = [shape[i] for i in keep]
    axes = "".join(axes[i] for i in keep)
    if "Y" not in axes or "X" not in axes:
        raise _layout_error(path, tuple(kept), axes)
    stack = [a for a in axes if a in _STACK_AXES]
    channel = [a for a in axes if a in _CHANNEL_AXES]
    other = [a for a in axes if a not in _STACK_AXES + _CHANNEL_AXES + "YX"]
    if len(stack) > 1 or len(channel) > 1 or other:
        raise _layout_error(path, tuple(kept), axes)
    order = [axes.index(a) for a in stack] + [axes.index("Y"), axes.index("X")]
    order += [axes.index(a) for a in channel]
    return kept, order, bool(stack), bool(channel)


def _layout_error(path: Path, shape: tuple[int, ...], axes: str) -> StainvirtError:
    return StainvirtError(
        f"{path}: unsupported pixel layout {tuple(shape)} (axes {axes}); expected an image "
        "(Y, X[, channels]) or a stack of slices (Z, Y, X[, channels])"
    )
