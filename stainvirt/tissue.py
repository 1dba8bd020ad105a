"""A simple, documented tissue test that tells stained tissue from glass.

A pixel counts as tissue when it is coloured (saturation, max(RGB) - min(RGB),
of at least ``MIN_SATURATION``) or dark (mean of RGB below ``MAX_BACKGROUND_MEAN``).
Glass in a bright-field scan is bright and grey, so it fails both. A tile is
tissue when at least ``min_fraction`` of its pixels are.

Whole slides are mostly glass and carry things a tile never does: pen marks,
scanner borders, dust. ``thumbnail_tissue_mask`` finds tissue on a small
thumbnail of the slide with those in mind, and ``spread_sample`` picks tile
positions spread over that tissue.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage as ndi
from scipy.spatial import cKDTree
from skimage.color import rgb2hsv
from skimage.filters import threshold_otsu
from skimage.morphology import disk

MIN_SATURATION = 20
MAX_BACKGROUND_MEAN = 200
DEFAULT_MIN_TISSUE = 0.25

# Marker ink hues, in degrees: green through cyan to pure blue (green above
# red). Eosin (~330), hematoxylin (violet, ~250-290) and DAB (brown, ~20-40)
# all have red at or above green, so they stay outside.
PEN_HUES = (90.0, 240.0)
# Brightest channel below this: black ink, a black scanner border or label.
NEAR_BLACK = 60
# A grey (unstained-looking) pixel darker than glass counts as tissue only when
# the grey level around it varies by at least this standard deviation over a
# TEXTURE_WINDOW square: tissue is textured, a grey scanner border is flat.
MIN_TEXTURE = 5.0
TEXTURE_WINDOW = 7
# Opening with this disk radius drops lines thinner than ~5 thumbnail pixels:
# coverslip edges, ink fringes and the texture halo along a border's edge.
OPENING_RADIUS = 2
# As shares of the thumbnail's pixels: smaller tissue pieces are dust or
# debris; smaller glass areas enclosed by tissue are tears and lumens, kept.
MIN_OBJECT_FRACTION = 1e-4
MAX_HOLE_FRACTION = 5e-4
# spread_sample shrinks its spacing by this factor until it has enough points.
SPACING_SHRINK = 0.7


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


def thumbnail_tissue_mask(thumb: np.ndarray) -> np.ndarray:
    """Boolean ``(H, W)`` tissue mask of a whole-slide thumbnail.

    A pixel is tissue when it is stained or dark and textured, and is neither
    marker ink nor near-black:

    - stained: saturation, max(RGB) - min(RGB) as in ``tissue_mask``, at or
      above Otsu's threshold, and never below ``MIN_SATURATION``. HSV's
      S = (max - min) / max is not used because it blows up in dark pixels,
      making noise in a black border look vividly coloured. On a thumbnail
      that is nearly all tissue Otsu can split pale from dark stain instead
      of stain from glass, and the palest tissue is then missed;
    - dark: mean of RGB below ``MAX_BACKGROUND_MEAN`` with local texture
      (``MIN_TEXTURE``), for dense or weakly stained tissue;
    - marker ink: stained pixels with a hue in ``PEN_HUES`` (blue, green).
      Violet or red ink looks like stain and is not caught;
    - near-black: brightest channel below ``NEAR_BLACK`` (black ink, scanner
      borders, labels).

    Glass holes up to ``MAX_HOLE_FRACTION`` of the thumbnail are filled, an
    opening removes thin lines, and pieces up to ``MIN_OBJECT_FRACTION`` are
    dropped.

    Args:
        thumb: ``(H, W, 3)`` uint8 RGB thumbnail, e.g. 1-2k pixels on the long side.

    Returns:
        Boolean ``(H, W)`` mask, True on tissue.
    """
    pixels = thumb.astype(np.int16)
    brightest = pixels.max(axis=-1)
    saturation = brightest - pixels.min(axis=-1)
    # The floor keeps Otsu from splitting glass noise when there is no tissue.
    stained = saturation >= max(threshold_otsu(saturation), MIN_SATURATION)
    ink = brightest < NEAR_BLACK
    # Hue of stained pixels only: rgb2hsv is the slowest step and grey pixels'
    # hue is noise anyway.
    hue = rgb2hsv(thumb[stained][np.newaxis])[0, :, 0] * 360
    ink[stained] |= (hue >= PEN_HUES[0]) & (hue < PEN_HUES[1])
    grey = pixels.mean(axis=-1)
    local_mean = ndi.uniform_filter(grey, TEXTURE_WINDOW)
    local_var = ndi.uniform_filter(grey**2, TEXTURE_WINDOW) - local_mean**2
    dark = (grey < MAX_BACKGROUND_MEAN) & (local_var >= MIN_TEXTURE**2)
    mask = (stained | dark) & ~ink
    # Holes first: noise-flagged pixels inside tissue would otherwise let the
    # opening eat into it.
    mask = ~_drop_small_components(~mask, MAX_HOLE_FRACTION * mask.size)
    mask = ndi.binary_opening(mask, structure=disk(OPENING_RADIUS))
    return _drop_small_components(mask, MIN_OBJECT_FRACTION * mask.size)


def _drop_small_components(mask: np.ndarray, max_size: float) -> np.ndarray:
    # skimage's remove_small_objects/holes renamed their size arguments in 0.26
    # and setup.py allows 0.22, so this is done with ndimage directly.
    labels, _ = ndi.label(mask)
    keep = np.bincount(labels.ravel()) > max_size
    keep[0] = False
    return keep[labels]


class TissueMap:
    """A slide's thumbnail tissue mask, asked about regions of the full-size image.

    Args:
        mask: Boolean tissue mask of the whole slide (e.g. :func:`thumbnail_tissue_mask`).
        height: Rows of the image the regions are given in.
        width: Columns of that image.
    """

    def __init__(self, mask: np.ndarray, height: int, width: int) -> None:
        self.scale_y, self.scale_x = mask.shape[0] / height, mask.shape[1] / width
        # A summed-area table answers every region's tissue fraction in constant time.
        self._sums = np.pad(mask.astype(np.int64).cumsum(0).cumsum(1), ((1, 0), (1, 0)))

    def fractions(self, positions: np.ndarray, height: int, width: int) -> np.ndarray:
        """Tissue fraction of the ``height`` x ``width`` regions at ``(y, x)`` ``positions``."""
        positions = np.asarray(positions, np.float64).reshape(-1, 2)
        rows, cols = self._sums.shape[0] - 1, self._sums.shape[1] - 1
        # Each region covers at least one mask pixel, however small it is in the thumbnail.
        y0 = np.clip(np.floor(positions[:, 0] * self.scale_y).astype(int), 0, rows - 1)
        x0 = np.clip(np.floor(positions[:, 1] * self.scale_x).astype(int), 0, cols - 1)
        y1 = np.clip(np.ceil((positions[:, 0] + height) * self.scale_y).astype(int), y0 + 1, rows)
        x1 = np.clip(np.ceil((positions[:, 1] + width) * self.scale_x).astype(int), x0 + 1, cols)
        s = self._sums
        inside = s[y1, x1] - s[y0, x1] - s[y1, x0] + s[y0, x0]
        return inside / ((y1 - y0) * (x1 - x0))

    def fraction(self, top: int, left: int, height: int, width: int) -> float:
        """Tissue fraction of one region."""
        return float(self.fractions(np.array([[top, left]]), height, width)[0])


def spread_sample(points: np.ndarray, n: int, seed: int) -> np.ndarray:
    """Indices of up to ``n`` of ``points``, spread out rather than clustered.

    Poisson-disk sampling: in an order shuffled by ``seed``, a point is taken
    when it lies farther than a spacing ``d`` from every point taken so far.
    ``d`` starts at sqrt(bounding-box area / n) and shrinks by
    ``SPACING_SHRINK`` until ``n`` are taken, so areas of tissue get points
    roughly in proportion to their size. Positions closer together than about
    a millionth of the first spacing count as one, so fewer than ``n`` come
    back when there are fewer distinct positions.

    Args:
        points: ``(M, 2)`` candidate ``(y, x)`` positions, e.g. tile corners.
        n: How many to choose, at least 1.
        seed: Seed of the shuffle; the same seed gives the same choice.

    Returns:
        Ascending indices into ``points`` (reading order on the slide); all of
        ``0 .. M-1`` when ``M <= n``.

    Raises:
        ValueError: If ``n`` is below 1.
    """
    if n < 1:
        raise ValueError(f"spread_sample needs n >= 1, not {n}")
    points = np.asarray(points, dtype=np.float64)
    if len(points) <= n:
        return np.arange(len(points))
    order = np.random.default_rng(seed).permutation(len(points))
    extent = np.ptp(points, axis=0)
    # The second term keeps points that all lie on a line from starting at 0.
    spacing = max(np.sqrt(extent.prod() / n), extent.max() / n)
    # Without a floor, repeated positions (never farther apart than any
    # spacing) would keep the loop shrinking forever.
    floor = spacing * 1e-6
    chosen = np.empty(0, dtype=np.intp)
    while len(chosen) < n and spacing > floor:
        taken = _poisson_round(points, order, chosen, spacing, n - len(chosen))
        chosen = np.concatenate([chosen, taken])
        spacing *= SPACING_SHRINK
    return np.sort(chosen)


def _poisson_round(
    points: np.ndarray, order: np.ndarray, chosen: np.ndarray, spacing: float, limit: int
) -> np.ndarray:
    """Up to ``limit`` more indices, in ``order``, farther than ``spacing`` from all others."""
    free = order[~np.isin(order, chosen)]
    if len(chosen):
        nearest, _ = cKDTree(points[chosen]).query(points[free])
        free = free[nearest > spacing]
    if not len(free):
        return free
    # Two points in one cell of side spacing/sqrt(2) are too close to both be
    # taken, so only the first free point of each cell is tried: this keeps the
    # sequential loop below to about as many candidates as there are cells.
    cells = np.floor(points[free] / (spacing / np.sqrt(2))).astype(np.int64)
    cells -= cells.min(axis=0)
    keys = cells[:, 0] * (cells[:, 1].max() + 1) + cells[:, 1]
    _, first = np.unique(keys, return_index=True)
    candidates = free[np.sort(first)]
    neighbours = cKDTree(points[candidates]).query_ball_point(points[candidates], spacing)
    blocked = np.zeros(len(candidates), dtype=bool)
    taken = []
    for k, near in enumerate(neighbours):
        if not blocked[k]:
            taken.append(candidates[k])
            if len(taken) == limit:
                break
            blocked[near] = True
    return np.array(taken, dtype=np.intp)
