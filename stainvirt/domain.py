"""What the images of one domain are: channel count, pixel type and intensity range.

RGB brightfield stains (H&E, IHC) are 3-channel uint8 and need nothing more:
that is :data:`RGB`, the default of every data set and run. Label-free images
(quantitative phase, autofluorescence, X-ray CT) are often one channel, 16-bit
or floating point, with an intensity range of their own. A :class:`Domain`
records how such a domain is stored (``dtype``, ``channels``) and which
intensity range (``low`` to ``high``) maps onto the networks' [-1, 1]; the data
set records it per domain (prepare) and the run copies it into ``data.json``, so
translation scales new images exactly as training did, and writes the output
domain's own kind (16-bit or float greyscale for a label-free domain).

One range serves every channel of a domain and every image of it (a volume's
slices included), so nothing is re-normalised image by image: slices of a stack
cannot flicker, and an image's brightness keeps its meaning.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields
from typing import Any

import numpy as np

from stainvirt.errors import StainvirtError

DTYPES = ("uint8", "uint16", "float32")
"""How tiles are stored: 8-bit, 16-bit, or floating point (other integer types become float32)."""
SCALINGS = ("full", "percentile", "fixed")
PERCENTILES = (0.5, 99.5)
"""Percentiles of a domain's training pixels that ``percentile`` scaling maps to [-1, 1]."""


@dataclass(frozen=True)
class Domain:
    """One domain's images: how they are stored and how their intensities are scaled.

    Attributes:
        channels: Channels per pixel (3 for RGB, 1 for greyscale, N for multi-channel).
        dtype: Storage and output pixel type: ``uint8``, ``uint16`` or ``float32``.
        low: Intensity that maps to -1 (and below which values are clipped).
        high: Intensity that maps to +1 (and above which values are clipped).
        scaling: How ``low``/``high`` were chosen: ``full`` (the type's range),
            ``percentile`` (:data:`PERCENTILES` of the training pixels) or
            ``fixed`` (given by the user).
    """

    channels: int = 3
    dtype: str = "uint8"
    low: float = 0.0
    high: float = 255.0
    scaling: str = "full"

    def __post_init__(self) -> None:
        if self.channels < 1:
            raise StainvirtError(f"a domain needs at least one channel, not {self.channels}")
        if self.dtype not in DTYPES:
            raise StainvirtError(f"pixel type {self.dtype!r} is not one of {', '.join(DTYPES)}")
        if self.scaling not in SCALINGS:
            raise StainvirtError(f"scaling {self.scaling!r} is not one of {', '.join(SCALINGS)}")
        if not np.isfinite([self.low, self.high]).all() or self.high <= self.low:
            raise StainvirtError(
                f"intensity range [{self.low}, {self.high}] is empty; give LOW,HIGH with LOW < HIGH"
            )

    @property
    def is_rgb(self) -> bool:
        """An 8-bit RGB image: stain metrics, tissue detection and glass skipping apply."""
        return self.channels == 3 and self.dtype == "uint8"

    def describe(self) -> str:
        """A short human description, e.g. ``1-channel uint16, range [112, 3391] (percentile)``."""
        if self == RGB:
            return "RGB 8-bit"
        return (f"{self.channels}-channel {self.dtype}, range [{self.low:.4g}, {self.high:.4g}] "
                f"({self.scaling})")

    def low_half(self) -> tuple[float, float]:
        """``(low, half)`` with ``net = clip((pixel - low) / half - 1, -1, 1)``.

        Written as a division so that 8-bit RGB gives exactly ``x / 127.5 - 1``, bit for
        bit what every RGB run was trained with; TensorFlow's pipeline uses the same pair.
        """
        return self.low, (self.high - self.low) / 2.0

    def to_net(self, pixels: np.ndarray) -> np.ndarray:
        """Stored pixels to float32 in [-1, 1] (values outside the range are clipped).

        Not-a-number pixels (no measurement, in float images) become -1, the range's low end.
        """
        low, half = self.low_half()
        net = (np.asarray(pixels, np.float32) - np.float32(low)) / np.float32(half) - 1.0
        return np.nan_to_num(np.clip(net, -1.0, 1.0), nan=-1.0)

    def from_net(self, values: Any) -> np.ndarray:
        """Network outputs in [-1, 1] (tensor or array) to pixels of this domain's type."""
        low, half = self.low_half()
        pixels = (np.clip(np.asarray(values, np.float32), -1.0, 1.0) + 1.0) * half + low
        if self.dtype == "float32":
            return pixels.astype(np.float32)
        info = np.iinfo(self.dtype)
        return np.clip(np.round(pixels), info.min, info.max).astype(self.dtype)

    def check(self, pixels: np.ndarray, name: str, run: str = "the run") -> None:
        """Refuse an image whose channel count is not this domain's, with one clear line.

        Raises:
            StainvirtError: naming ``name`` and both channel counts.
        """
        self.check_channels(pixels.shape[-1] if pixels.ndim >= 3 else 1, name, run)

    def check_channels(self, channels: int, name: str, run: str = "the run") -> None:
        """:meth:`check` for an image known only by its channel count (from a header)."""
        if channels != self.channels:
            raise StainvirtError(
                f"{name}: {channels}-channel image, but {run} was trained on "
                f"{self.describe()} images; give {self.channels}-channel images of that kind"
            )

    def to_dict(self) -> dict[str, Any]:
        """Plain dict, for JSON."""
        return asdict(self)

    @classmethod
    def from_dict(cls, values: dict[str, Any] | None) -> Domain:
        """From :meth:`to_dict`'s output; None (records made before domains existed) is RGB."""
        if not values:
            return RGB
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in values.items() if k in known})


RGB = Domain()
"""8-bit RGB: H&E, IHC and every brightfield stain. The default of every domain."""


def storage_dtype(dtype: np.dtype) -> str:
    """The stored type for pixels of ``dtype``: uint8 and uint16 stay, anything else is float32.

    Raises:
        StainvirtError: for types that are not numbers (complex, strings).
    """
    dtype = np.dtype(dtype)
    if dtype in (np.dtype(np.uint8), np.dtype(bool)):
        return "uint8"
    if dtype == np.uint16:
        return "uint16"
    if np.issubdtype(dtype, np.integer) or np.issubdtype(dtype, np.floating):
        return "float32"
    raise StainvirtError(f"pixel type {dtype} is not supported; save images as 8/16-bit or float")


def fit_domain(
    channels: int, dtype: str, samples: np.ndarray | None, range_spec: str = "auto"
) -> Domain:
    """Choose a domain's intensity range from a sample of its training pixels.

    Args:
        channels: Channels per pixel.
        dtype: Stored pixel type (:func:`storage_dtype`).
        samples: Pixel values of the domain's training images (any shape); needed
            for ``percentile`` scaling.
        range_spec: ``auto`` (``full`` for uint8, ``percentile`` otherwise), ``full``
            (the type's whole range; [0, 1] for float), ``percentile``
            (:data:`PERCENTILES` of ``samples``) or ``LOW,HIGH``.

    Raises:
        StainvirtError: for a malformed ``range_spec`` or an empty range.
    """
    spec = range_spec.strip().lower()
    if spec == "auto":
        spec = "full" if dtype == "uint8" else "percentile"
    if spec == "full":
        high = 1.0 if dtype == "float32" else float(np.iinfo(dtype).max)
        return Domain(channels, dtype, 0.0, high, "full")
    if spec == "percentile":
        values = np.asarray(samples, np.float64).ravel() if samples is not None else np.zeros(0)
        values = values[np.isfinite(values)]
        if not len(values):
            raise StainvirtError("no finite pixel values to choose an intensity range from")
        low, high = (float(v) for v in np.percentile(values, PERCENTILES))
        if high <= low:  # a (nearly) constant domain: widen around its one value
            low, high = low - 0.5, low + 0.5
        return Domain(channels, dtype, low, high, "percentile")
    try:
        low, high = (float(v) for v in spec.split(","))
    except ValueError:
        raise StainvirtError(
            f"intensity range {range_spec!r} is not auto, full, percentile or LOW,HIGH "
            "(e.g. 0,4095)"
        ) from None
    return Domain(channels, dtype, low, high, "fixed")


def domains_from(record: dict[str, Any] | None) -> dict[str, Domain]:
    """``{"A": Domain, "B": Domain}`` from a record's ``domains`` entry (RGB where absent)."""
    stored = (record or {}).get("domains") or {}
    return {d: Domain.from_dict(stored.get(d)) for d in "AB"}
