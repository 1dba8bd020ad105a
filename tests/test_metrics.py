import math

import numpy as np
import pytest
from skimage import data
from skimage.color import hed2rgb, lab2rgb, rgb2lab

from stainvirt.errors import StainvirtError
from stainvirt.evaluate.baselines import ReinhardTransfer, identity
from stainvirt.evaluate.metrics import (
    DAB_THRESHOLD,
    PAIRED_STAINS,
    PSNR_CAP_DB,
    PixelHistograms,
    dab_dice,
    dab_positive_mask,
    dice,
    distribution_distances,
    histogram_distances,
    paired_metrics,
    psnr,
    ssim,
    stain_correlation,
    stain_od,
)


@pytest.fixture(scope="module")
def ihc() -> np.ndarray:
    return data.immunohistochemistry()


def hed_image(dab: np.ndarray, hematoxylin: float = 0.05) -> np.ndarray:
    """An RGB uint8 image whose DAB optical density is the given map."""
    hed = np.stack([np.full_like(dab, hematoxylin), np.zeros_like(dab), dab], axis=-1)
    return np.round(hed2rgb(hed) * 255).astype(np.uint8)


def square(rows: slice, cols: slice, size: int = 32, od: float = 0.3) -> np.ndarray:
    dab = np.zeros((size, size))
    dab[rows, cols] = od
    return dab


def wavy_dab(size: int = 64) -> np.ndarray:
    yy, xx = np.mgrid[:size, :size]
    return 0.15 * (1 + np.sin(xx / 5) * np.cos(yy / 7))  # OD 0 .. 0.3


# PSNR / SSIM


def test_identical_images_give_capped_psnr_and_unit_ssim(ihc):
    assert psnr(ihc, ihc) == PSNR_CAP_DB
    assert ssim(ihc, ihc) == 1.0


def test_psnr_of_one_grey_level_offset():
    a = np.full((16, 16, 3), 100, np.uint8)
    assert psnr(a, a + 1) == pytest.approx(20 * math.log10(255))


def test_ssim_of_two_flat_images_uses_data_range_255():
    # Zero variance leaves only the luminance term (2 mu_a mu_b + C1) / (mu_a^2 + mu_b^2 + C1).
    c1 = (0.01 * 255) ** 2
    expected = (2 * 100 * 110 + c1) / (100**2 + 110**2 + c1)
    a, b = np.full((16, 16, 3), 100, np.uint8), np.full((16, 16, 3), 110, np.uint8)
    assert ssim(a, b) == pytest.approx(expected)


def test_noise_lowers_both_scores(ihc):
    noisy = np.clip(ihc + np.random.default_rng(0).normal(0, 20, ihc.shape), 0, 255)
    noisy = noisy.astype(np.uint8)
    assert 10 < psnr(noisy, ihc) < 30
    assert 0 < ssim(noisy, ihc) < 0.9


@pytest.mark.parametrize(
    "metric",
    [
        psnr,
        ssim,
        dab_dice,
        lambda a, b: stain_correlation(a, b, "dab"),
        lambda a, b: paired_metrics(a, b, "A2B"),
    ],
)
def test_shape_mismatch_is_an_error(metric):
    with pytest.raises(StainvirtError, match="differ in shape"):
        metric(np.zeros((16, 16, 3), np.uint8), np.zeros((16, 17, 3), np.uint8))


@pytest.mark.parametrize(
    "bad", [np.zeros((16, 16, 3), np.float32), np.zeros((16, 16), np.uint8), [[0, 0, 0]]]
)
def test_non_rgb_uint8_input_is_an_error(bad):
    with pytest.raises(StainvirtError, match="uint8 RGB"):
        psnr(bad, bad)


def test_ssim_rejects_images_smaller_than_its_window():
    tiny = np.zeros((5, 5, 3), np.uint8)
    with pytest.raises(StainvirtError, match="7x7"):
        ssim(tiny, tiny)


# Stains


def test_stain_od_recovers_a_known_dab_map():
    dab = wavy_dab()
    od = stain_od(hed_image(dab))
    assert set(od) == {"hematoxylin", "eosin", "dab"}
    assert np.corrcoef(od["dab"].ravel(), dab.ravel())[0, 1] > 0.99


def test_dab_correlation_with_itself_inverse_and_shuffle():
    dab = wavy_dab()
    img = hed_image(dab)
    inverse = hed_image(0.3 - dab)
    shuffled = hed_image(np.random.default_rng(0).permutation(dab.ravel()).reshape(dab.shape))
    assert stain_correlation(img, img, "dab") == 1.0
    assert stain_correlation(img, inverse, "dab") < -0.99
    assert abs(stain_correlation(img, shuffled, "dab")) < 0.1


def test_black_pixels_read_as_the_darkest_grey_level():
    # Strong enough that the darkest pixels round to 0 in a channel.
    img = hed_image(wavy_dab() * 3, hematoxylin=0.1)
    assert (img == 0).any()
    noise = np.random.default_rng(0).integers(-2, 3, img.shape)
    noisy = np.clip(img.astype(int) + noise, 0, 255).astype(np.uint8)
    assert stain_correlation(img, noisy, "dab") > 0.9  # 0.52 with rgb2hed's own floor
    black, darkest = np.zeros((1, 1, 3), np.uint8), np.ones((1, 1, 3), np.uint8)
    for stain, od in stain_od(black).items():
        np.testing.assert_array_equal(od, stain_od(darkest)[stain])


def test_correlation_of_constant_maps():
    white = np.full((16, 16, 3), 255, np.uint8)  # DAB OD exactly 0 everywhere
    assert stain_correlation(white, white, "dab") == 1.0
    assert math.isnan(stain_correlation(white, hed_image(wavy_dab(16)), "dab"))


def test_unknown_stain_is_an_error(ihc):
    with pytest.raises(StainvirtError, match="use one of"):
        stain_correlation(ihc, ihc, "DAB")


def test_dab_positive_mask_finds_the_stained_square():
    dab = square(slice(4, 12), slice(8, 20))
    np.testing.assert_array_equal(dab_positive_mask(hed_image(dab)), dab > 0)


def test_dab_dice_of_half_overlapping_squares():
    a = hed_image(square(slice(0, 8), slice(0, 8)))
    b = hed_image(square(slice(4, 12), slice(0, 8)))  # 32 of its 64 pixels overlap a
    assert dab_dice(a, b) == pytest.approx(0.5)
    assert dab_dice(a, a) == 1.0


def test_dice_of_masks():
    empty = np.zeros((4, 4), bool)
    full = np.ones((4, 4), bool)
    assert dice(empty, empty) == 1.0
    assert dice(empty, full) == 0.0
    assert dice(full[:, :2].repeat(2, axis=1), full) == pytest.approx(2 * 16 / 32)


def test_dab_threshold_lies_in_the_valley_of_the_ihc_sample(ihc):
    counts, edges = np.histogram(stain_od(ihc)["dab"], bins=40, range=(0, 0.2))

    def density(od):
        return counts[np.searchsorted(edges, od) - 1]

    assert density(DAB_THRESHOLD) < density(0.01) / 5
    assert density(DAB_THRESHOLD) < density(0.075) / 2


@pytest.mark.parametrize(
    "direction, keys",
    [
        ("A2B", {"psnr", "ssim", "dab_corr", "hematoxylin_corr", "dab_dice"}),
        ("B2A", {"psnr", "ssim", "hematoxylin_corr", "eosin_corr"}),
    ],
)
def test_paired_metrics_of_identical_images(ihc, direction, keys):
    tile = ihc[:64, :64]
    metrics = paired_metrics(tile, tile, direction)
    assert set(metrics) == keys
    assert metrics["psnr"] == PSNR_CAP_DB
    assert all(v == 1.0 for k, v in metrics.items() if k != "psnr")


@pytest.mark.parametrize("direction", ["A2B", "B2A"])
def test_paired_metrics_equal_the_single_metrics(ihc, direction):
    pred, target = ihc[200:264, 200:264], ihc[232:296, 216:280]  # overlapping crops
    expected = {"psnr": psnr(pred, target), "ssim": ssim(pred, target)}
    for stain in PAIRED_STAINS[direction]:
        expected[f"{stain}_corr"] = stain_correlation(pred, target, stain)
    if direction == "A2B":
        expected["dab_dice"] = dab_dice(pred, target, threshold=0.05)
        # A threshold that changes the result here shows that paired_metrics passes it on.
        assert expected["dab_dice"] != dab_dice(pred, target)
    assert paired_metrics(pred, target, direction, dab_threshold=0.05) == expected


def test_paired_metrics_rejects_unknown_direction(ihc):
    with pytest.raises(StainvirtError, match="A2B"):
        paired_metrics(ihc, ihc, "AtoB")


# Distribution distances


def tiles(img: np.ndarray, size: int = 128):
    return (
        img[i : i + size, j : j + size] for i in range(0, 512, size) for j in range(0, 512, size)
    )


def test_distribution_distance_is_zero_for_identical_sets(ihc):
    distances = distribution_distances(tiles(ihc), tiles(ihc))
    assert set(distances) == {"rgb_w1", "hematoxylin_w1", "eosin_w1", "dab_w1"}
    assert all(v == 0.0 for v in distances.values())


def test_distribution_distance_of_a_uniform_shift(ihc):
    base = np.clip(ihc, 0, 235)
    distances = distribution_distances(tiles(base), tiles(base + 20))
    assert distances["rgb_w1"] == pytest.approx(20.0)
    assert distances["dab_w1"] > 0.005
    assert distances["hematoxylin_w1"] > 0.005


def test_histograms_pool_pixels_across_images(ihc):
    whole = PixelHistograms.of([ihc])
    halves = PixelHistograms.of([ihc[:200], ihc[200:]])
    np.testing.assert_array_equal(whole.rgb, halves.rgb)
    np.testing.assert_array_equal(whole.od, halves.od)
    assert whole.rgb.sum() == ihc.size


def test_distribution_distance_of_an_empty_set_is_an_error(ihc):
    with pytest.raises(StainvirtError, match="empty"):
        histogram_distances(PixelHistograms.of([ihc]), PixelHistograms())


# Baselines


def lab_shift(img: np.ndarray) -> np.ndarray:
    """A known global colour mapping: scale and shift every Lab channel."""
    lab = rgb2lab(img) * [0.85, 1.2, 0.8] + [8.0, 6.0, -10.0]
    return np.round(lab2rgb(lab) * 255).astype(np.uint8)


def test_reinhard_recovers_a_global_lab_mapping_better_than_identity(ihc):
    # Flips and rotations share the image's colour statistics, so per-image
    # matching to the pooled set statistics can undo the mapping exactly.
    sources = [ihc, ihc[::-1], ihc[:, ::-1], np.rot90(ihc)]
    targets = [lab_shift(s) for s in sources]
    transfer = ReinhardTransfer().fit(iter(targets))
    reinhard = np.mean([psnr(transfer.apply(s), t) for s, t in zip(sources, targets, strict=True)])
    baseline = np.mean([psnr(identity(s), t) for s, t in zip(sources, targets, strict=True)])
    assert baseline < 30
    assert reinhard > 45


def test_reinhard_output_is_uint8_rgb_of_the_input_shape(ihc):
    out = ReinhardTransfer().fit([ihc]).apply(ihc[:50, :70])
    assert out.dtype == np.uint8 and out.shape == (50, 70, 3)


def test_reinhard_maps_flat_images_to_the_target_colour():
    target = np.full((8, 8, 3), (200, 120, 90), np.uint8)
    flat = np.full((8, 8, 3), (90, 90, 90), np.uint8)
    out = ReinhardTransfer().fit([target]).apply(flat)  # std 0 on both sides
    assert np.abs(out.astype(int) - target).max() <= 1


def test_reinhard_streaming_fit_equals_pooled_statistics(ihc):
    streamed = ReinhardTransfer().fit(iter([ihc[:100], ihc[100:], ihc[:1]]))
    pooled = rgb2lab(np.concatenate([ihc, ihc[:1]])).reshape(-1, 3)
    np.testing.assert_allclose(streamed.mean, pooled.mean(axis=0), rtol=1e-10)
    np.testing.assert_allclose(streamed.std, pooled.std(axis=0), rtol=1e-10)


def test_reinhard_misuse_is_an_error(ihc):
    with pytest.raises(StainvirtError, match="before apply"):
        ReinhardTransfer().apply(ihc)
    with pytest.raises(StainvirtError, match="no target images"):
        ReinhardTransfer().fit([])
