"""Slide-thumbnail tissue masks and spread-out tile sampling, on synthetic inputs."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.spatial.distance import pdist

from stainvirt.tissue import spread_sample, thumbnail_tissue_mask

GLASS = (235, 235, 235)
EOSIN_PINK = (200, 120, 170)
BLUE_PEN = (40, 60, 160)
GREEN_PEN = (60, 150, 80)
DAB = (150, 100, 60)
HEMATOXYLIN = (110, 100, 170)


def paint(img, region, colour, rng, sd=6.0, grey_noise=False):
    """Fill ``region`` of a float image with ``colour`` plus Gaussian noise."""
    shape = (region.sum(), 1 if grey_noise else 3)
    img[region] = np.asarray(colour, dtype=float) + rng.normal(0, sd, shape)


def as_uint8(img):
    return np.clip(img, 0, 255).astype(np.uint8)


def ellipse(shape, centre, radii):
    yy, xx = np.mgrid[: shape[0], : shape[1]]
    return ((yy - centre[0]) / radii[0]) ** 2 + ((xx - centre[1]) / radii[1]) ** 2 <= 1


def glass(shape, rng):
    img = np.empty((*shape, 3))
    paint(img, np.ones(shape, dtype=bool), GLASS, rng, sd=3)
    return img


@pytest.fixture(scope="module")
def slide():
    """A 600x800 thumbnail with its parts' masks: tissue and everything that is not."""
    rng, shape = np.random.default_rng(0), (600, 800)
    img, parts = glass(shape, rng), {}
    parts["blob"] = ellipse(shape, (280, 450), (150, 200))
    paint(img, parts["blob"], EOSIN_PINK, rng, sd=10)
    parts["hole"] = np.zeros(shape, dtype=bool)
    parts["hole"][274:286, 444:456] = True
    paint(img, parts["hole"], GLASS, rng, sd=3)
    # Dense, barely stained tissue: grey but textured.
    parts["grey_tissue"] = ellipse(shape, (130, 140), (40, 40))
    paint(img, parts["grey_tissue"], (150, 150, 150), rng, sd=20, grey_noise=True)
    # Specks too big for the opening to remove, too small to be kept.
    parts["specks"] = np.zeros(shape, dtype=bool)
    for x in range(60, 760, 25):
        parts["specks"][445:451, x : x + 6] = True
    paint(img, parts["specks"], (120, 60, 90), rng)
    parts["blue_pen"] = np.zeros(shape, dtype=bool)
    parts["blue_pen"][480:487, 100:700] = True
    paint(img, parts["blue_pen"], BLUE_PEN, rng)
    parts["green_pen"] = np.zeros(shape, dtype=bool)
    parts["green_pen"][520:527, 100:700] = True
    paint(img, parts["green_pen"], GREEN_PEN, rng)
    # Black ink is dark and textured, so only the near-black rule keeps it out.
    parts["black_pen"] = np.zeros(shape, dtype=bool)
    parts["black_pen"][90:97, 300:700] = True
    paint(img, parts["black_pen"], (25, 25, 35), rng, sd=8)
    parts["black_border"] = np.zeros(shape, dtype=bool)
    parts["black_border"][:, :40] = True
    paint(img, parts["black_border"], (10, 10, 10), rng, sd=2)
    # A flat grey fill where the scanner saw nothing: dark but not textured.
    parts["grey_border"] = np.zeros(shape, dtype=bool)
    parts["grey_border"][570:, 40:] = True
    paint(img, parts["grey_border"], (120, 120, 120), rng, sd=1.5)
    for name in ("blob", "grey_tissue", "specks", "blue_pen", "green_pen", "black_pen"):
        parts[name] &= ~parts["black_border"] & ~parts["grey_border"]
    parts["blob"] &= ~parts["hole"]
    parts["glass"] = ~np.logical_or.reduce(list(parts.values()))
    return thumbnail_tissue_mask(as_uint8(img)), parts


def test_thumbnail_mask_covers_tissue_and_fills_its_hole(slide):
    mask, parts = slide
    assert mask.shape == parts["blob"].shape and mask.dtype == bool
    assert mask[parts["blob"]].mean() > 0.95
    assert mask[parts["hole"]].mean() > 0.99
    assert mask[parts["grey_tissue"]].mean() > 0.95


@pytest.mark.parametrize(
    "part",
    ["glass", "specks", "blue_pen", "green_pen", "black_pen", "black_border", "grey_border"],
)
def test_thumbnail_mask_leaves_out_what_is_not_tissue(slide, part):
    mask, parts = slide
    assert mask[parts[part]].mean() < 0.01


def test_all_glass_thumbnail_has_no_tissue():
    mask = thumbnail_tissue_mask(as_uint8(glass((300, 400), np.random.default_rng(1))))
    assert mask.mean() < 0.001


def test_ihc_hematoxylin_is_tissue_but_blue_pen_is_not():
    rng, shape = np.random.default_rng(2), (300, 400)
    img = glass(shape, rng)
    blob = ellipse(shape, (150, 160), (110, 130))
    # 16 px patches of either stain, so a hue rule that took hematoxylin for ink
    # would cut out whole patches, too big to be filled back as holes.
    patches = np.kron(rng.random((19, 25)) < 0.5, np.ones((16, 16), dtype=bool))[:300, :400]
    hematoxylin, dab = blob & patches, blob & ~patches
    paint(img, hematoxylin, HEMATOXYLIN, rng)
    paint(img, dab, DAB, rng)
    pen = np.zeros(shape, dtype=bool)
    pen[40:260, 330:338] = True
    paint(img, pen, BLUE_PEN, rng)
    mask = thumbnail_tissue_mask(as_uint8(img))
    assert mask[hematoxylin].mean() > 0.95
    assert mask[dab].mean() > 0.95
    assert mask[pen].mean() < 0.01


def grid(height, width, offset=(0, 0)):
    return np.stack(np.mgrid[:height, :width], axis=-1).reshape(-1, 2) + offset


def test_spread_sample_is_seeded_and_returns_n_distinct_valid_indices():
    points = grid(100, 100)
    chosen = spread_sample(points, 50, seed=0)
    assert len(chosen) == 50 and len(np.unique(chosen)) == 50
    assert np.all(np.diff(chosen) > 0)
    assert chosen.min() >= 0 and chosen.max() < len(points)
    np.testing.assert_array_equal(spread_sample(points, 50, seed=0), chosen)
    assert not np.array_equal(spread_sample(points, 50, seed=1), chosen)


def test_spread_sample_returns_all_when_there_are_few_points():
    points = grid(3, 4)
    np.testing.assert_array_equal(spread_sample(points, 12, seed=0), np.arange(12))
    np.testing.assert_array_equal(spread_sample(points, 100, seed=0), np.arange(12))


def test_spread_sample_spreads_points_far_beyond_random_choice():
    points = grid(100, 100)
    random_gaps = [
        pdist(points[np.random.default_rng(seed).choice(len(points), 16, replace=False)]).min()
        for seed in range(20)
    ]
    for seed in range(5):
        chosen = spread_sample(points, 16, seed)
        assert len(chosen) == 16
        assert pdist(points[chosen]).min() > 3 * np.median(random_gaps)


def test_spread_sample_shares_points_between_tissue_pieces_by_area():
    large, small = grid(40, 40), grid(20, 20, offset=(0, 200))
    points = np.concatenate([large, small])
    for seed in range(10):
        in_small = (spread_sample(points, 10, seed) >= len(large)).sum()
        assert 1 <= in_small <= 4


def test_spread_sample_handles_points_on_a_line():
    points = grid(1, 1000)
    chosen = spread_sample(points, 10, seed=0)
    assert len(chosen) == 10
    assert np.diff(points[chosen, 1]).min() > 50


def test_spread_sample_counts_repeated_positions_once():
    points = np.repeat(grid(2, 5), 5, axis=0)
    chosen = spread_sample(points, 20, seed=0)
    assert len(chosen) == 10
    assert len(np.unique(points[chosen], axis=0)) == 10


def test_spread_sample_refuses_n_below_one():
    with pytest.raises(ValueError, match="n >= 1"):
        spread_sample(grid(3, 3), 0, seed=0)


def test_spread_sample_scales_to_a_whole_slide_grid():
    points = grid(500, 400) * 256
    chosen = spread_sample(points, 2000, seed=0)
    assert len(chosen) == 2000 and len(np.unique(chosen)) == 2000
