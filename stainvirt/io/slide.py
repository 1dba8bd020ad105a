"""The slide interface: levels, pixel size, region reads, a thumbnail, and resolutions.

A :class:`Slide` is any image with one or more resolution levels (level 0 the
sharpest). :meth:`Slide.regions` shows it as
:class:`~stainvirt.io.regions.Regions` at level 0 or at a chosen pixel size; a
:class:`Resolution` says which (``--mpp``, ``--magnification``, or none).
The formats behind it are in :mod:`stainvirt.io.slide_formats`;
:func:`stainvirt.io.slides.open_slide` opens any file as one.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from stainvirt.errors import StainvirtError
from stainvirt.io.regions import Regions, ResampledRegions

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
