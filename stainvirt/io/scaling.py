"""Between uint8 pixels and the networks' [-1, 1] range (the tanh of the generators)."""

from __future__ import annotations

import numpy as np


def to_uint8(images) -> np.ndarray:
    """Images in [-1, 1] (tensor or array) to uint8."""
    return np.clip(np.round((np.asarray(images) + 1.0) * 127.5), 0, 255).astype(np.uint8)


def to_unit(images: np.ndarray) -> np.ndarray:
    """uint8 images to float32 in [-1, 1]."""
    return images.astype(np.float32) / 127.5 - 1.0
