"""Grids of image panels, saved as RGB PNG, PDF or SVG, atomically, without touching pyplot.

Figures are built on ``matplotlib.figure.Figure`` rather than pyplot, so making
one never changes the backend of a notebook or an interactive session.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from PIL import Image

from stainvirt.errors import StainvirtError
from stainvirt.io.atomic import atomic_path

if TYPE_CHECKING:
    from matplotlib.figure import Figure

FIGURE_SUFFIXES = (".png", ".pdf", ".svg")
"""File suffixes :func:`save_figure` writes; the suffix picks the format."""


def image_grid(
    rows: Sequence[Sequence[np.ndarray]],
    titles: Sequence[Sequence[str]],
    row_labels: Sequence[str] | None = None,
    *,
    row_size: tuple[float, float],
    fontsize: float = 9,
    suptitle: str | None = None,
) -> Figure:
    """A figure with one row of image panels per entry of ``rows``, each panel titled.

    Args:
        rows: Per row, the images to show side by side (``(H, W, 3)`` uint8 each).
        titles: Per row, one title per image.
        row_labels: Per row, text (one or more lines) shown above the title of
            its first panel, e.g. the image's name; None for none.
        row_size: Width and height of one row, in inches.
        fontsize: Font size of the panel titles.
        suptitle: Title of the whole figure, if any.

    Returns:
        The figure, ready for :func:`save_figure`.
    """
    from matplotlib.figure import Figure

    width, height = row_size
    fig = Figure(figsize=(width, height * len(rows)), layout="constrained")
    axes = fig.subplots(len(rows), len(rows[0]), squeeze=False)
    labels = [None] * len(rows) if row_labels is None else row_labels
    for images, names, label, ax_row in zip(rows, titles, labels, axes, strict=True):
        if label is not None:
            names = [f"{label}\n{names[0]}", *names[1:]]
        for ax, image, name in zip(ax_row, images, names, strict=True):
            ax.imshow(image)
            ax.set_title(name, fontsize=fontsize)
            ax.axis("off")
    if suptitle is not None:
        fig.suptitle(suptitle)
    return fig


def check_figure_path(path: str | Path) -> Path:
    """Return ``path`` if :func:`save_figure` can write its format, else raise.

    Call it before long work, so a bad figure name fails at once.

    Args:
        path: Figure file to be written.

    Returns:
        ``path`` as a Path.

    Raises:
        StainvirtError: if the suffix is not ``.png``, ``.pdf`` or ``.svg``.
    """
    path = Path(path)
    if path.suffix.lower() not in FIGURE_SUFFIXES:
        raise StainvirtError(
            f"{path}: cannot write a figure in this format; name it with one of the "
            f"suffixes {', '.join(FIGURE_SUFFIXES)}"
        )
    return path


def save_figure(fig: Figure, path: str | Path, dpi: int = 72) -> Path:
    """Render ``fig`` at ``dpi`` and write it to ``path`` (atomically), as its suffix says.

    ``.png`` is written as RGB without alpha; ``.pdf`` and ``.svg`` by matplotlib,
    with images at ``dpi``.

    Args:
        fig: The figure.
        path: Output file, ``.png``, ``.pdf`` or ``.svg``.
        dpi: Pixels per inch of the PNG and of images inside a PDF or SVG.

    Returns:
        ``path``.

    Raises:
        StainvirtError: for any other suffix (nothing is written) or an unwritable folder.
    """
    path = check_figure_path(path)
    fig.set_dpi(dpi)
    suffix = path.suffix.lower()
    with atomic_path(path) as tmp:
        if suffix == ".png":
            Image.fromarray(_render_rgb(fig)).save(tmp, format="PNG", optimize=True)
        else:
            fig.savefig(tmp, format=suffix.removeprefix("."), dpi=dpi)
    return path


def display_rgb(image: np.ndarray, low: float = 0.0, high: float = 255.0) -> np.ndarray:
    """An image of any channel count and pixel type as ``(H, W, 3)`` uint8, for a panel.

    Intensities from ``low`` to ``high`` span black to white (so images of one
    domain shown with its range are comparable); one channel is shown grey, three
    as colour, any other number as the grey of their mean.

    Args:
        image: ``(H, W)`` or ``(H, W, C)`` pixels.
        low: Intensity shown black.
        high: Intensity shown white (or full colour).

    Returns:
        The panel; an ``(H, W, 3)`` uint8 image over 0 to 255 is returned as it is.
    """
    image = np.asarray(image)
    if image.ndim == 2:
        image = image[..., None]
    if image.shape[-1] == 3 and image.dtype == np.uint8 and (low, high) == (0.0, 255.0):
        return image
    if image.shape[-1] != 3:
        image = image.mean(axis=-1, keepdims=True, dtype=np.float64)
    unit = np.clip((image.astype(np.float64) - low) / (high - low), 0.0, 1.0)
    rgb = np.round(unit * 255.0).astype(np.uint8)
    return np.ascontiguousarray(np.broadcast_to(rgb, (*rgb.shape[:2], 3)))


def _render_rgb(fig: Figure) -> np.ndarray:
    """``fig`` drawn by Agg at its dpi, as an ``(H, W, 3)`` uint8 array."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    canvas = FigureCanvasAgg(fig)
    canvas.draw()
    return np.asarray(canvas.buffer_rgba())[..., :3]
