"""A simple, documented tissue test that tells stained tissue from glass.

A pixel counts as tissue when it is coloured (saturation, max(RGB) - min(RGB),
of at least ``MIN_SATURATION``) or dark (mean of RGB below ``MAX_BACKGROUND_MEAN``).
Glass in a bright-field scan is bright and grey, so it fails both. A tile is
tissue when at least ``min_fraction`` of its pixels are.
"""

from __future__ import annotations

import numpy as np

MIN_SATURATION = 20
MAX_BACKGROUND_MEAN = 200
DEFAULT_MIN_TISSUE = 0.25


def tissue_mask(rgb: np.ndarray) -> np.ndarray:
    """Boolean ``(H, W)`` mask of tissue pixels in a uint8 RGB image."""
    pixels = rgb.astype(np.int16)
    saturation = pixels.max(axis=-1) - pixels.min(axis=-1)
    return (saturation >= MIN_SATURATION) | (pixels.mean(axis=-1) < MAX_BACKGROUND_MEAN)


def tissue_fraction(rgb: np.ndarray) -> float:
    """Fraction of tissue pixels in a uint8 RGB image."""
    return float(tissue_mask(rgb).mean())


def is_tissue(rgb: np.ndarray, min_fraction: float = DEFAULT_MIN_TISSUE) -> bool:
    """True when at least ``min_fraction`` of the image is tissue."""
    return tissue_fraction(rgb) >= min_fraction
