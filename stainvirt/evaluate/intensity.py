"""Scores for domains other than 8-bit RGB: PSNR and SSIM on scaled intensities, and baselines.

A label-free domain (quantitative phase, autofluorescence, X-ray CT) has no
stains to deconvolve, and its pixel type and range are its own. Its images are
compared on their intensities scaled to [0, 1] by the domain's recorded range
(values outside it clipped), with ``data_range=1`` and otherwise the settings
of the RGB metrics, so a score means the same for 16-bit and float domains.

Between domains the identity (no translation) is only an answer where the
channel counts match; a greyscale source against an RGB target is answered by
the grey replicated to RGB, the nearest thing to doing nothing.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
from skimage.metrics import peak_signal_noise_ratio, structural_similarity

from stainvirt.domain import Domain
from stainvirt.errors import StainvirtError
from stainvirt.evaluate.baselines import identity
from stainvirt.evaluate.metrics import PSNR_CAP_DB, psnr, ssim
from stainvirt.io.scaling import to_uint8

INTENSITY_SETTINGS = (
    "skimage.metrics on intensities scaled to [0, 1] by the domain's recorded range, "
    "data_range=1, channel_axis=-1 for several channels, 7x7 uniform window"
)
"""How PSNR and SSIM are computed on a domain other than RGB, written into reports."""

STAINS_SKIPPED = (
    "the stain metrics (DAB, hematoxylin and eosin correlations, DAB Dice), the colour "
    "and stain distribution distances and the Reinhard baseline are skipped: they "
    "deconvolve brightfield RGB stains, and the output domain is {domain}"
)


def unit_intensities(pixels: np.ndarray, domain: Domain) -> np.ndarray:
    """``(H, W, C)`` pixels of ``domain`` as float64 in [0, 1] by its range (clipped)."""
    return (domain.to_net(pixels).astype(np.float64) + 1.0) / 2.0


def scores(a: np.ndarray, b: np.ndarray, domain: Domain) -> dict[str, float]:
    """``psnr`` (dB, capped at ``PSNR_CAP_DB``) and ``ssim`` of a prediction against a reference.

    RGB domains keep the BCI/MIST settings (uint8, ``data_range=255``); others
    compare intensities scaled by the domain's range (:data:`INTENSITY_SETTINGS`).

    Args:
        a: Prediction, ``(H, W, C)`` pixels of ``domain``.
        b: Reference of the same shape.
        domain: The domain both images belong to.

    Raises:
        StainvirtError: for images of different shapes or smaller than 7x7.
    """
    if domain.is_rgb:
        return {"psnr": psnr(a, b), "ssim": ssim(a, b)}
    if a.shape != b.shape:
        raise StainvirtError(f"images differ in shape {a.shape} vs {b.shape}; compare a "
                             "prediction with its registered target of the same size")
    if min(a.shape[:2]) < 7:
        raise StainvirtError(f"ssim: images of {a.shape[0]}x{a.shape[1]} px are smaller than "
                             "the 7x7 window; evaluate larger tiles")
    x, y = unit_intensities(a, domain), unit_intensities(b, domain)
    if np.array_equal(x, y):
        return {"psnr": PSNR_CAP_DB, "ssim": 1.0}
    value = min(float(peak_signal_noise_ratio(y, x, data_range=1.0)), PSNR_CAP_DB)
    if x.shape[-1] == 1:
        similarity = structural_similarity(x[..., 0], y[..., 0], data_range=1.0)
    else:
        similarity = structural_similarity(x, y, data_range=1.0, channel_axis=-1)
    return {"psnr": value, "ssim": float(similarity)}


def identity_like(
    source: Domain, target: Domain
) -> tuple[Callable[[np.ndarray], np.ndarray] | None, str]:
    """The no-translation baseline from ``source`` to ``target``, and what it is.

    Returns:
        ``(function, description)``: the identity between RGB domains; the
        source's intensities carried over by range where the channel counts
        match; a greyscale source replicated to RGB for an RGB target; else
        ``(None, why there is none)``.
    """
    if source.is_rgb and target.is_rgb:
        return identity, "the input unchanged"
    if source.channels == target.channels:
        return (lambda image: target.from_net(source.to_net(image)),
                "the input's intensities carried over, scaled from its range to the output's")
    if source.channels == 1 and target.is_rgb:
        return (lambda image: np.repeat(to_uint8(source.to_net(image)), 3, axis=-1),
                "the greyscale input replicated to RGB (scaled by its range)")
    return None, (f"none, since the input has {source.channels} channel(s) and the output "
                  f"{target.channels} (doing nothing is no answer between them)")
