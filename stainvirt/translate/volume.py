"""Stacks of slices (confocal, light-sheet, X-ray CT): translated slice by slice, viewed in 3D.

Every slice is scaled with the run's one recorded range (never slice by slice),
so the output cannot flicker from slice to slice where the input does not, and
a bright spot in one slice leaves the others alone. Slices are translated and
written one at a time; only the input stack and the three sections the views
figure shows are held in memory.

The views figure shows orthogonal sections through the middle of the volume,
input above and output below: XY at the middle z, XZ at the middle y and YZ
at the middle x. Voxel spacing is not known, so thin stacks are stretched along
z by a whole factor (named in the titles) to be visible at all.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, NamedTuple

import numpy as np

from stainvirt.domain import Domain
from stainvirt.plotting import display_rgb, image_grid, save_figure
from stainvirt.translate.native import (
    check_png,
    check_png_size,
    read_stack,
    write_bands,
    write_stack,
)
from stainvirt.translate.tiling import Tally

if TYPE_CHECKING:
    from stainvirt.translate.api import Translator

VIEWS_MAX_SIDE = 512
"""Longest side of a panel of the views figure, in pixels."""
VIEWS_SUFFIX = "_views.png"


class Sections(NamedTuple):
    """Orthogonal sections through the middle of a ``(Z, H, W, C)`` volume."""

    xy: np.ndarray
    """``(H, W, C)``: the slice at the middle z."""
    xz: np.ndarray
    """``(Z, W, C)``: every slice's middle row."""
    yz: np.ndarray
    """``(H, Z, C)``: every slice's middle column, z running left to right."""

    @classmethod
    def of(cls, volume: np.ndarray) -> Sections:
        """The sections of a volume held in memory."""
        z, height, width = volume.shape[:3]
        return cls(volume[z // 2], volume[:, height // 2], volume[:, :, width // 2].swapaxes(0, 1))


def translate_file(
    translator: Translator,
    path: Path,
    out: Path,
    *,
    progress: Callable[[int], object] | None = None,
    tally: Tally | None = None,
    views: bool = True,
    status: Callable[[str], object] | None = None,
) -> tuple[Path, Path | None]:
    """Translate a file read as stored (an image of a non-RGB domain, or any stack) into ``out``.

    Args:
        translator: Holds the generator, tiling and the run's domains.
        path: The input file.
        out: The output file: PNG or OME-TIFF of the output domain's kind.
        progress: Called with the number of tiles done after each tile row.
        tally: Counts tiles and glass tiles, if given.
        views: For a stack, also write its orthogonal views (:func:`views_path`).
        status: Called with ``"slice k/Z"`` as each slice of a stack starts.

    Returns:
        ``out``, and the views figure (None for a 2D image or without ``views``).

    Raises:
        StainvirtError: if the input is unreadable or not of the input domain,
            or ``out`` cannot hold the output.
    """
    stack = read_stack(path, translator.source)
    slices, height, width = stack.shape[:3]
    if out.suffix.lower() == ".png":
        check_png(translator.target, slices, path)
        check_png_size(height, width, path)
    if slices == 1:
        pixels = translator.translate_pixels(stack[0], progress, tally)
        return write_bands(out, [pixels], pixels.shape, translator.target), None
    cuts = translate_volume(translator, stack, out, progress=progress, status=status, tally=tally)
    if not views:
        return out, None
    titles = (f"input: {path.name}", f"output ({translator.direction}): {out.name}")
    figure = write_views(views_path(out), (Sections.of(stack), cuts),
                         (translator.source, translator.target), titles)
    return out, figure


def translate_volume(
    translator: Translator,
    stack: np.ndarray,
    out: Path,
    *,
    progress: Callable[[int], object] | None = None,
    status: Callable[[str], object] | None = None,
    tally: Tally | None = None,
) -> Sections:
    """Translate a ``(Z, H, W, C)`` stack slice by slice into an OME-TIFF stack.

    Args:
        translator: Holds the generator, tiling and the run's domains.
        stack: The input's pixels, of the translator's input domain.
        out: The output file, written atomically as slices come.
        progress: Called with the number of tiles done after each tile row.
        status: Called with ``"slice k/Z"`` as each slice starts.
        tally: Counts tiles and glass tiles, if given.

    Returns:
        The output's middle sections, for :func:`write_views`.
    """
    slices, height, width = stack.shape[:3]
    kept: dict[str, list[np.ndarray]] = {"xz": [], "yz": [], "xy": []}

    def translated() -> Iterator[np.ndarray]:
        for z in range(slices):
            if status:
                status(f"slice {z + 1}/{slices}")
            pixels = translator.translate_pixels(stack[z], progress, tally)
            kept["xz"].append(pixels[height // 2])
            kept["yz"].append(pixels[:, width // 2])
            if z == slices // 2:
                kept["xy"].append(pixels)
            yield pixels

    shape = (slices, height, width, translator.output_channels)
    write_stack(out, translated(), shape, translator.target)
    return Sections(kept["xy"][0], np.stack(kept["xz"]), np.stack(kept["yz"], axis=1))


def views_path(out: Path) -> Path:
    """Where the views figure of the output ``out`` goes: ``NAME_views.png`` beside it."""
    name = out.name
    for suffix in (".ome.tif", ".ome.tiff", ".tif", ".tiff", ".png"):
        name = name.removesuffix(suffix)
    return out.parent / f"{name}{VIEWS_SUFFIX}"


def write_views(
    path: Path,
    sections: tuple[Sections, Sections],
    domains: tuple[Domain, Domain],
    titles: tuple[str, str],
) -> Path:
    """Draw the input's and the output's orthogonal sections, input above, into a PNG.

    Args:
        path: The figure file, written atomically.
        sections: The input's and the output's :class:`Sections`.
        domains: Their domains: each is shown over its recorded intensity range,
            greyscale in grey, several channels as their mean.
        titles: Row labels, e.g. ``("input: stack.tif", "output (A2B)")``.

    Returns:
        ``path``.
    """
    depth, (height, width) = sections[0].xz.shape[0], sections[0].xy.shape[:2]
    stretch = max(1, math.ceil(min(height, width) / (4 * depth)))
    scale = min(1.0, VIEWS_MAX_SIDE / max(height, width, depth * stretch))
    z_note = f", z stretched {stretch}x" if stretch > 1 else ""
    names = (f"XY at z={depth // 2}", f"XZ at y={height // 2}{z_note}",
             f"YZ at x={width // 2}{z_note}")
    rows = []
    for cut, domain in zip(sections, domains, strict=True):
        xz, yz = np.repeat(cut.xz, stretch, axis=0), np.repeat(cut.yz, stretch, axis=1)
        rows.append([_resized(display_rgb(p, domain.low, domain.high), scale)
                     for p in (cut.xy, xz, yz)])
    fig = image_grid(rows, [names, names], list(titles), row_size=(11, 3.6), fontsize=8)
    return save_figure(fig, path, dpi=100)


def _resized(rgb: np.ndarray, scale: float) -> np.ndarray:
    """``rgb`` scaled by ``scale`` (at least one pixel a side)."""
    if scale >= 1.0:
        return rgb
    from PIL import Image

    size = (max(1, round(rgb.shape[1] * scale)), max(1, round(rgb.shape[0] * scale)))
    return np.asarray(Image.fromarray(rgb).resize(size, Image.Resampling.LANCZOS))
