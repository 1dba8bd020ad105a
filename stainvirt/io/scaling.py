"""Between uint8 pixels and the networks' [-1, 1] range (the tanh of the generators).

The 8-bit RGB case of :class:`stainvirt.domain.Domain`'s ``to_net`` / ``from_net``.
"""

from __future__ import annotations

import numpy as np

from stainvirt.domain import RGB


def to_uint8(images) -> np.ndarray:
    """Images in [-1, 1] (tensor or array) to uint8."""
    return RGB.from_net(images)


def to_unit(images: np.ndarray) -> np.ndarray:
    """uint8 images to float32 in [-1, 1]."""
    return RGB.to_net(images)
