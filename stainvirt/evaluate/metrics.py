"""Image-quality and stain metrics for virtual staining, on ``(H, W, 3)`` uint8 RGB.

Paired metrics (a prediction against its registered real target) follow the BCI
and MIST papers: PSNR and SSIM from ``skimage.metrics`` with ``data_range=255``
and a 7x7 uniform SSIM window (``tf.image.ssim`` uses an 11x11 Gaussian window
and gives different numbers). Stain metrics split images into hematoxylin, eosin
and DAB optical densities by colour deconvolution (Ruifrok & Johnston,
``skimage.color.rgb2hed``) and check that each stain lands in the right place.

Unpaired metrics compare the pooled pixel distributions of two image sets with
the 1-D Wasserstein distance per channel; they need no downloaded network.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

import numpy as np
from skimage.color import rgb2hed
from skimage.metrics import peak_signal_noise_ratio, structural_similarity

from stainvirt.errors import StainvirtError

PSNR_CAP_DB = 100.0
"""PSNR reported for identical images (skimage gives infinity) and upper bound of all PSNRs."""

STAINS = ("hematoxylin", "eosin", "dab")
"""Stain names, in the channel order of ``skimage.color.rgb2hed``."""

DAB_THRESHOLD = 0.03
"""DAB optical density (rgb2hed units) above which a pixel counts as DAB-positive.

The DAB histogram of scikit-image's IHC sample (``skimage.data.immunohistochemistry``)
is bimodal: hematoxylin-only and background pixels peak near 0.01, brown pixels
near 0.075, and the valley between them bottoms out at 0.03. Otsu's threshold
(0.062) cuts into the positive mode, so it is not used.
"""

PAIRED_STAINS = {"A2B": ("dab", "hematoxylin"), "B2A": ("hematoxylin", "eosin")}
"""Stains compared per direction: a virtual IHC (A2B) carries DAB and hematoxylin
counterstain; a virtual H&E (B2A) carries hematoxylin and eosin."""

OD_BIN_WIDTH = 0.002
"""Width of the optical-density histogram bins: small against the 0.07 gap
between DAB-negative and DAB-positive modes."""

OD_MAX = 2.0
"""Upper end of the optical-density histograms; the floored densities of any uint8 colour
stay below 0.76."""

_OD_BINS = round(OD_MAX / OD_BIN_WIDTH)


def check_image(img: np.ndarray, name: str = "image") -> np.ndarray:
    """Return ``img`` if it is an ``(H, W, 3)`` uint8 array, else raise.

    Args:
        img: Candidate image.
        name: What to call it in the error message.

    Returns:
        The same array.

    Raises:
        StainvirtError: for any other shape or dtype.
    """
    if not (
        isinstance(img, np.ndarray)
        and img.ndim == 3
        and img.shape[-1] == 3
        and img.dtype == np.uint8
    ):
        shape, dtype = getattr(img, "shape", None), getattr(img, "dtype", type(img).__name__)
        raise StainvirtError(
            f"{name}: expected an (H, W, 3) uint8 RGB array, got shape {shape} of {dtype}; "
            "read images with stainvirt.io.images.read_image"
        )
    return img


def _check_pair(a: np.ndarray, b: np.ndarray, metric: str) -> None:
    check_image(a, f"{metric}: first image")
    check_image(b, f"{metric}: second image")
    if a.shape != b.shape:
        raise StainvirtError(
            f"{metric}: images differ in shape {a.shape} vs {b.shape}; compare a "
            "prediction with its registered target of the same size"
        )


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    """Peak signal-to-noise ratio in dB with ``data_range=255``, as BCI/MIST report it.

    Identical images have infinite PSNR; it is capped at ``PSNR_CAP_DB`` (100 dB)
    so that JSON files and averages stay finite.

    Args:
        a: Prediction, ``(H, W, 3)`` uint8.
        b: Target of the same shape.

    Returns:
        PSNR in dB, at most ``PSNR_CAP_DB``.
    """
    _check_pair(a, b, "psnr")
    if np.array_equal(a, b):
        return PSNR_CAP_DB
    return min(float(peak_signal_noise_ratio(b, a, data_range=255)), PSNR_CAP_DB)


def ssim(a: np.ndarray, b: np.ndarray) -> float:
    """Structural similarity with a 7x7 uniform window over RGB, as BCI/MIST report it.

    Args:
        a: Prediction, ``(H, W, 3)`` uint8, at least 7x7 pixels.
        b: Target of the same shape.

    Returns:
        Mean SSIM over pixels and channels, 1.0 for identical images.
    """
    _check_pair(a, b, "ssim")
    if min(a.shape[:2]) < 7:
        raise StainvirtError(
            f"ssim: images of {a.shape[0]}x{a.shape[1]} px are smaller than the 7x7 window; "
            "evaluate larger tiles"
        )
    return float(structural_similarity(a, b, data_range=255, channel_axis=-1))


_ODMaps = dict[str, np.ndarray]
"""What ``stain_od`` returns: stain name -> optical-density map."""


def _rgb2hed(img: np.ndarray) -> np.ndarray:
    """``rgb2hed`` with every channel floored at one grey level (1/255).

    An 8-bit reading of 0 only says that less than one grey level of light came
    through; ``rgb2hed`` floors it at 1e-6, which puts the density of a black
    pixel six decades up, against 2.4 for the next grey level. On near-black
    pixels of strong DAB the stain maps would then follow the camera's rounding,
    not the stain (two grey levels of noise took the DAB r of an image with
    itself to 0.84). Training's hematoxylin loss uses the same floor.
    """
    return rgb2hed(np.maximum(img, 1))


def stain_od(img: np.ndarray) -> dict[str, np.ndarray]:
    """Hematoxylin, eosin and DAB optical-density maps by colour deconvolution.

    Each channel is floored at one grey level, so black pixels get the density
    of the darkest level the camera records.

    Args:
        img: ``(H, W, 3)`` uint8 RGB image.

    Returns:
        ``{"hematoxylin", "eosin", "dab"}`` -> ``(H, W)`` float64 maps (rgb2hed
        units, >= 0; white glass is 0).
    """
    hed = _rgb2hed(check_image(img))
    return {stain: hed[..., i] for i, stain in enumerate(STAINS)}


def _check_stain(stain: str) -> None:
    if stain not in STAINS:
        raise StainvirtError(f"stain {stain!r} is unknown; use one of {', '.join(STAINS)}")


def _pearson(x: np.ndarray, y: np.ndarray) -> float:
    if np.array_equal(x, y):
        return 1.0
    xc, yc = x - x.mean(), y - y.mean()
    denom = np.sqrt(np.sum(xc * xc) * np.sum(yc * yc))
    if denom == 0.0:
        return float("nan")
    # Rounding can push |r| a hair past 1.
    return float(np.clip(np.sum(xc * yc) / denom, -1.0, 1.0))


def stain_correlation(a: np.ndarray, b: np.ndarray, stain: str) -> float:
    """Pearson correlation of one stain's optical-density map between two images.

    Identical maps (a constant one included) give 1.0. Otherwise a constant map
    (e.g. no DAB anywhere on a tile) makes the correlation undefined and gives
    nan: average with ``np.nanmean`` and report how many tiles were undefined.

    Args:
        a: Prediction, ``(H, W, 3)`` uint8.
        b: Target of the same shape.
        stain: ``"hematoxylin"``, ``"eosin"`` or ``"dab"``.

    Returns:
        Correlation in [-1, 1], or nan.
    """
    _check_stain(stain)
    _check_pair(a, b, "stain_correlation")
    return _od_correlation(stain_od(a), stain_od(b), stain)


def _od_correlation(od_a: _ODMaps, od_b: _ODMaps, stain: str) -> float:
    """``stain_correlation`` on maps already from ``stain_od``."""
    return _pearson(od_a[stain], od_b[stain])


def dab_positive_mask(img: np.ndarray, threshold: float = DAB_THRESHOLD) -> np.ndarray:
    """Pixels whose DAB optical density exceeds ``threshold``.

    Args:
        img: ``(H, W, 3)`` uint8 RGB image.
        threshold: DAB optical density in rgb2hed units (see ``DAB_THRESHOLD``).

    Returns:
        ``(H, W)`` boolean mask.
    """
    return _dab_mask(stain_od(img), threshold)


def _dab_mask(od: _ODMaps, threshold: float) -> np.ndarray:
    """``dab_positive_mask`` on maps already from ``stain_od``."""
    return od["dab"] > threshold


def dice(mask_a: np.ndarray, mask_b: np.ndarray) -> float:
    """Dice overlap ``2|A & B| / (|A| + |B|)`` of two boolean masks; 1.0 when both are empty.

    Args:
        mask_a: Boolean mask.
        mask_b: Boolean mask of the same shape.

    Returns:
        Dice coefficient in [0, 1].
    """
    total = int(np.count_nonzero(mask_a)) + int(np.count_nonzero(mask_b))
    if total == 0:
        return 1.0  # both agree that nothing is stained
    return 2.0 * np.count_nonzero(mask_a & mask_b) / total


def dab_dice(a: np.ndarray, b: np.ndarray, threshold: float = DAB_THRESHOLD) -> float:
    """Dice overlap of the DAB-positive areas of two images (1.0 when neither has any).

    Args:
        a: Prediction, ``(H, W, 3)`` uint8.
        b: Target of the same shape.
        threshold: DAB optical density in rgb2hed units (see ``DAB_THRESHOLD``).

    Returns:
        Dice coefficient in [0, 1].
    """
    _check_pair(a, b, "dab_dice")
    return _od_dab_dice(stain_od(a), stain_od(b), threshold)


def _od_dab_dice(od_a: _ODMaps, od_b: _ODMaps, threshold: float) -> float:
    """``dab_dice`` on maps already from ``stain_od``."""
    return dice(_dab_mask(od_a, threshold), _dab_mask(od_b, threshold))


def paired_metrics(
    pred: np.ndarray, target: np.ndarray, direction: str, dab_threshold: float = DAB_THRESHOLD
) -> dict[str, float]:
    """All paired metrics of a prediction against its registered real target.

    Args:
        pred: Translated image, ``(H, W, 3)`` uint8.
        target: Real image of the target domain, same shape.
        direction: ``"A2B"`` (H&E -> virtual IHC) or ``"B2A"`` (IHC -> virtual H&E).
        dab_threshold: DAB optical density for ``dab_dice`` (A2B only).

    Returns:
        ``psnr`` (dB, capped at ``PSNR_CAP_DB``), ``ssim``, ``<stain>_corr`` for the
        stains in ``PAIRED_STAINS[direction]``, and for A2B ``dab_dice``.
    """
    if direction not in PAIRED_STAINS:
        raise StainvirtError(
            f"direction {direction!r} is unknown; use A2B (H&E -> IHC) or B2A (IHC -> H&E)"
        )
    out = {"psnr": psnr(pred, target), "ssim": ssim(pred, target)}
    # One colour deconvolution per image, shared by all stain metrics.
    od_pred, od_target = stain_od(pred), stain_od(target)
    for stain in PAIRED_STAINS[direction]:
        out[f"{stain}_corr"] = _od_correlation(od_pred, od_target, stain)
    if direction == "A2B":
        out["dab_dice"] = _od_dab_dice(od_pred, od_target, dab_threshold)
    return out


@dataclass
class PixelHistograms:
    """Pooled per-channel pixel histograms of an image set, filled one image at a time.

    Memory stays constant however many images are added: only counts are kept.

    Attributes:
        rgb: ``(3, 256)`` counts of R, G, B grey levels.
        od: ``(3, OD_MAX / OD_BIN_WIDTH)`` counts of hematoxylin, eosin and DAB
            optical density in bins of ``OD_BIN_WIDTH``.
    """

    rgb: np.ndarray = field(default_factory=lambda: np.zeros((3, 256), np.int64))
    od: np.ndarray = field(default_factory=lambda: np.zeros((3, _OD_BINS), np.int64))

    def add(self, img: np.ndarray) -> None:
        """Count the pixels of one ``(H, W, 3)`` uint8 image."""
        self.rgb += _channel_counts(check_image(img), 256)
        hed = _rgb2hed(img)
        bins = np.minimum((hed / OD_BIN_WIDTH).astype(np.int64), _OD_BINS - 1)
        self.od += _channel_counts(bins, _OD_BINS)

    @classmethod
    def of(cls, images: Iterable[np.ndarray]) -> PixelHistograms:
        """Histograms of all images of an iterable, consumed one image at a time."""
        hist = cls()
        for img in images:
            hist.add(img)
        return hist


def _channel_counts(values: np.ndarray, n_bins: int) -> np.ndarray:
    # One bincount for all channels: offset each channel into its own range of bins.
    flat = values.reshape(-1, 3).astype(np.int64) + np.arange(3) * n_bins
    return np.bincount(flat.ravel(), minlength=3 * n_bins).reshape(3, n_bins)


def _wasserstein(p: np.ndarray, q: np.ndarray, bin_width: float) -> np.ndarray:
    # 1-D Wasserstein-1 per row = area between the two cumulative distributions.
    cdf_p = np.cumsum(p / p.sum(axis=-1, keepdims=True), axis=-1)
    cdf_q = np.cumsum(q / q.sum(axis=-1, keepdims=True), axis=-1)
    return np.abs(cdf_p - cdf_q).sum(axis=-1) * bin_width


def histogram_distances(a: PixelHistograms, b: PixelHistograms) -> dict[str, float]:
    """Wasserstein-1 distances between the pooled pixel distributions of two sets.

    Wasserstein rather than histogram intersection or chi-square: it is in the
    data's units and keeps growing with the size of a colour shift, where
    overlap measures saturate once the histograms stop overlapping.

    Args:
        a: Histograms of the first set (e.g. translated images).
        b: Histograms of the second set (e.g. real images of the target domain).

    Returns:
        ``rgb_w1``: mean over R, G, B in grey levels (a uniform shift of k grey
        levels gives k); ``hematoxylin_w1``, ``eosin_w1``, ``dab_w1``: in
        optical-density units, accurate to ``OD_BIN_WIDTH``. 0.0 for identical sets.
    """
    if not (a.rgb.sum() and b.rgb.sum()):
        raise StainvirtError("histogram_distances: an image set is empty; pass at least one image")
    out = {"rgb_w1": float(_wasserstein(a.rgb, b.rgb, 1.0).mean())}
    od_w1 = _wasserstein(a.od, b.od, OD_BIN_WIDTH)
    out |= {f"{stain}_w1": float(d) for stain, d in zip(STAINS, od_w1, strict=True)}
    return out


def distribution_distances(
    images_a: Iterable[np.ndarray], images_b: Iterable[np.ndarray]
) -> dict[str, float]:
    """Unpaired colour and stain distribution distances between two image sets.

    Each iterable is consumed once, one image at a time (pass generators of
    ``read_image`` calls to keep memory bounded).

    Args:
        images_a: First set of ``(H, W, 3)`` uint8 images.
        images_b: Second set; sizes and counts may differ from the first.

    Returns:
        See ``histogram_distances``.
    """
    return histogram_distances(PixelHistograms.of(images_a), PixelHistograms.of(images_b))
