"""A side-by-side figure a user can open: input, translation and round trip per image.

Images of a domain other than 8-bit RGB are shown over the run's recorded
intensity range (greyscale in grey); a stack shows its middle slice.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from stainvirt.domain import Domain
from stainvirt.io.slides import open_regions
from stainvirt.plotting import check_figure_path, display_rgb, image_grid, save_figure
from stainvirt.rundir import DIRECTIONS, check_direction
from stainvirt.translate.api import Translator
from stainvirt.translate.native import domain_name, read_plane

FIGURE_MAX_SIDE = 512


def write_figure(
    run_dir: str | Path,
    images: Sequence[str | Path],
    out_path: str | Path,
    direction: str = "A2B",
    max_side: int = FIGURE_MAX_SIDE,
) -> Path:
    """Write a figure with one row per image: input | translation | round trip.

    The round trip translates the translation back (A2B then B2A, or the
    reverse): where it differs from the input, the generators lose or invent
    detail. Large images are cropped to their central ``max_side`` square.

    Args:
        run_dir: Run folder with ``config.json``, ``G_AB.keras`` and ``G_BA.keras``.
        images: A few image files (PNG, JPEG, TIFF, SVS).
        out_path: Figure file (``.png``, ``.pdf`` or ``.svg``), written atomically.
        direction: ``A2B`` (H&E input) or ``B2A`` (IHC input).
        max_side: Largest side shown per image.

    Returns:
        ``out_path``.

    Raises:
        StainvirtError: for a figure suffix other than those above (before any
            translating), a bad run folder or an unreadable image.

    Examples:
        >>> write_figure("runs/demo", ["data/sample/testA/tile.jpg"], "out/figure.png")
    """
    out_path = check_figure_path(out_path)
    direction = check_direction(direction)
    back = DIRECTIONS[direction].reverse
    forward, backward = Translator.from_run(run_dir, direction), Translator.from_run(run_dir, back)
    source = domain_name(forward.source, DIRECTIONS[direction].source)
    target = domain_name(forward.target, DIRECTIONS[direction].target)
    titles = (f"{source} input", f"virtual {target} ({direction})", f"round trip ({back} of it)")
    rows = []
    for path in images:
        image = _central_crop(path, max_side, forward.source)
        fake = forward.translate_array(image)
        round_trip = backward.translate_array(fake)
        rows.append((_shown(image, forward.source), _shown(fake, forward.target),
                     _shown(round_trip, forward.source)))
    fig = image_grid(
        rows, [titles] * len(rows), [Path(path).name for path in images], row_size=(9, 3)
    )
    return save_figure(fig, out_path, dpi=100)


def _central_crop(path: str | Path, side: int, domain: Domain) -> np.ndarray:
    """The central ``side`` x ``side`` region of an image (all of it if smaller).

    RGB is read lazily; other domains whole, as stored (a stack's middle slice).
    """
    if not domain.is_rgb:
        pixels = read_plane(Path(path), domain, middle=True)
        top, left = ((n - min(side, n)) // 2 for n in pixels.shape[:2])
        return pixels[top : top + side, left : left + side]
    with open_regions(path) as image:
        height, width = min(side, image.height), min(side, image.width)
        return image.read((image.height - height) // 2, (image.width - width) // 2, height, width)


def _shown(pixels: np.ndarray, domain: Domain) -> np.ndarray:
    """A panel: RGB as it is, other domains over their recorded range."""
    return display_rgb(pixels, domain.low, domain.high)
