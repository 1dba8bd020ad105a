"""Structure consistency: a translation may change brightness and colour, not where tissue is.

SSIM (Wang et al. 2004) compares two images window by window in three terms:
luminance, contrast and structure (the local Pearson correlation). The loss
keeps the last two: a stain that darkens or recolours tissue costs nothing, a
change of contrast a little, and moving, removing or fading a nucleus, an edge
or a cell a lot. Compared on grey levels, it holds a generator to its input's
structure across domains of any channel count: the greyscale consistency of
X-ray virtual histology, and nuclei that stay where they are from H&E to IHC.

On grey levels the loss takes the *square* of SSIM's contrast-structure term
(``2 cov / (var_x + var_y)``, stabilised): label-free images often have the
opposite polarity of a stain (autofluorescent stroma is bright where eosin
makes it dark; glass is black in fluorescence and white in brightfield), and
which way round a region turns is for the adversarial loss to learn. The
contrast part keeps the structure from being hallucinated away: a squared
correlation alone is as high for a flat window as for a faithful one, so
fading a nucleus to nothing would cost nothing.

Between two brightfield stains that share a hematoxylin counterstain (H&E and
most IHC), the grey level is the wrong thing to hold: an IHC has lost the
eosin, so its stroma is pale where the H&E's is pink and textured. Compared on
the hematoxylin optical density instead (``channel="hematoxylin"``), the
nuclei must stay where they are while the eosin may go and a marker may come.
There the contrast-structure term is signed, not squared: the same stain keeps
its sign.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from keras import ops

from stainvirt.models.layers import hematoxylin_density

WINDOW = 11
"""Side of the Gaussian window (sigma 1.5) the local statistics are taken over."""
SIGMA = 1.5
C2 = 0.03**2
"""SSIM's stabiliser of the contrast term, for images in [0, 1]."""
LUMINANCE = (0.299, 0.587, 0.114)


def grey(images: Any) -> Any:
    """Grey levels ``(B, H, W, 1)`` of images in [0, 1], computed in float32.

    One channel is its own grey level, three are RGB (luminance weights), and any
    other count is averaged.
    """
    images = ops.cast(images, "float32")
    channels = images.shape[-1]
    if channels == 1:
        return images
    if channels == 3:
        weights = ops.convert_to_tensor(LUMINANCE, "float32")
        return ops.sum(images * weights, axis=-1, keepdims=True)
    return ops.mean(images, axis=-1, keepdims=True)


def hematoxylin(images: Any) -> Any:
    """Hematoxylin optical density ``(B, H, W, 1)`` of RGB images in [0, 1], in float32.

    :func:`~stainvirt.models.layers.hematoxylin_density` divided by ln 255, so that
    each channel's optical density runs from 0 (white) to 1 (black).
    """
    return hematoxylin_density(images) / np.log(255.0)


def structure_loss(source: Any, translated: Any, channel: str = "grey") -> Any:
    """1 - the mean local agreement of two batches in [-1, 1], on one channel.

    ``channel="grey"`` (:func:`grey`, any domains): per window
    ``(4 cov^2 + C2^2) / ((var_x + var_y)^2 + C2^2)``, SSIM's contrast-structure
    term squared: 1 where the translation's grey level is the input's up to an
    offset and a sign (and where both are flat), 0.78 at 0.6 of its contrast,
    near 0 where they are unrelated or the output is flat.
    ``channel="hematoxylin"`` (:func:`hematoxylin`, RGB on both sides): per
    window ``(2 cov + C2) / (var_x + var_y + C2)``, the same term signed: 1
    where the hematoxylin is the same up to an offset, lower where it fades
    (0.88 at 0.6 of its contrast), vanishes or moves.

    Args:
        source: A generator's input.
        translated: Its output (any channel count).
        channel: ``"grey"`` or ``"hematoxylin"``.
    """
    view = hematoxylin if channel == "hematoxylin" else grey
    var_x, var_y, cov = _local_moments(view(_unit(source)), view(_unit(translated)))
    if channel == "hematoxylin":
        return 1.0 - ops.mean((2 * cov + C2) / (var_x + var_y + C2))
    spread = var_x + var_y
    return 1.0 - ops.mean((4 * cov * cov + C2**2) / (spread * spread + C2**2))


def _local_moments(x: Any, y: Any) -> tuple[Any, Any, Any]:
    """Variances and covariance of two batches in each full Gaussian window, in float32."""
    x, y = ops.cast(x, "float32"), ops.cast(y, "float32")
    mean_x, mean_y = _local_mean(x), _local_mean(y)
    var_x = ops.relu(_local_mean(x * x) - mean_x * mean_x)
    var_y = ops.relu(_local_mean(y * y) - mean_y * mean_y)
    return var_x, var_y, _local_mean(x * y) - mean_x * mean_y


def _unit(images: Any) -> Any:
    return (ops.cast(images, "float32") + 1.0) / 2.0


def _gaussian_kernel() -> np.ndarray:
    taps = np.exp(-0.5 * ((np.arange(WINDOW) - WINDOW // 2) / SIGMA) ** 2)
    kernel = np.outer(taps, taps)
    return (kernel / kernel.sum()).astype(np.float32)


def _local_mean(images: Any) -> Any:
    """Gaussian-weighted mean of each channel over every full window."""
    channels = images.shape[-1]
    kernel = np.tile(_gaussian_kernel()[:, :, None, None], (1, 1, channels, 1))
    return ops.depthwise_conv(images, ops.convert_to_tensor(kernel), padding="valid")
