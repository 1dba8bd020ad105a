import keras
import numpy as np
import pytest
from skimage.color import rgb_from_hed

from stainvirt.config import Config, preset
from stainvirt.errors import StainvirtError
from stainvirt.models import (
    HematoxylinOnly,
    ReflectionPadding2D,
    ResidualTanh,
    build_discriminator,
    build_generator,
)


def _images(batch: int, height: int, width: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return rng.uniform(-1.0, 1.0, (batch, height, width, 3)).astype("float32")


@pytest.fixture
def tiny() -> Config:
    return preset("tiny")


@pytest.fixture
def mixed_precision():
    keras.mixed_precision.set_global_policy("mixed_float16")
    try:
        yield
    finally:
        keras.mixed_precision.set_global_policy("float32")


# --- reference sizes ------------------------------------------------------


@pytest.mark.parametrize("upsample", ["transpose", "resize"])
def test_resnet_generator_has_the_reference_parameter_count(upsample):
    g = build_generator(Config(upsample=upsample), name="G_AB")
    assert g.count_params() == 11_378_179


def test_unet_256_matches_the_reference_with_instance_norm():
    # unet_256 with instance norm (convs with bias, no affine norm).
    g = build_generator(Config(generator="unet"), name="G_AB")
    assert g.count_params() == 54_409_603
    assert g.compute_output_shape((1, 256, 256, 3)) == (1, 256, 256, 3)


def test_patchgan_has_the_reference_parameter_count_and_30x30_output():
    d = build_discriminator(Config(), name="D_A")
    assert d.count_params() == 2_764_737
    assert d.compute_output_shape((1, 256, 256, 3)) == (1, 30, 30, 1)


def test_patchgan_without_normalisation_keeps_its_weights_and_drops_only_the_norms():
    plain = build_discriminator(Config(norm_d="none"), name="D_B")
    assert plain.count_params() == 2_764_737  # instance norm has no weights to lose
    kinds = {type(layer).__name__ for layer in plain.layers}
    assert "GroupNormalization" not in kinds
    assert "GroupNormalization" in {type(x).__name__ for x in build_discriminator(Config()).layers}
    with pytest.raises(StainvirtError, match="norm_d must be instance or none"):
        Config(norm_d="batch")


def test_patchgan_forward_at_256_gives_30x30_scores():
    d = build_discriminator(Config(ndf=4), name="D_B")
    scores = np.asarray(d(_images(1, 256, 256)))
    assert scores.shape == (1, 30, 30, 1)
    assert np.isfinite(scores).all()
    assert scores.std() > 0


# --- shapes and values ----------------------------------------------------


@pytest.mark.parametrize(
    ("changes", "size"),
    [
        ({"generator": "resnet", "upsample": "transpose"}, (36, 44)),
        ({"generator": "resnet", "upsample": "resize"}, (36, 44)),
        ({"generator": "unet", "upsample": "transpose"}, (64, 32)),
        ({"generator": "unet", "upsample": "resize"}, (64, 32)),
    ],
)
def test_generator_keeps_the_image_shape_in_tanh_range(tiny, changes, size):
    g = build_generator(tiny.replace(**changes), name="G_BA")
    x = _images(2, *size)
    y = np.asarray(g(x))
    assert y.shape == x.shape
    assert y.dtype == np.float32
    assert np.isfinite(y).all()
    assert np.abs(y).max() < 1.0
    assert y.std() > 0


@pytest.mark.parametrize("generator", ["resnet", "unet"])
def test_residual_output_starts_as_the_identity(tiny, generator):
    x = _images(1, 32, 32)
    plain = build_generator(tiny.replace(generator=generator), name="G_AB")
    residual = build_generator(tiny.replace(generator=generator, residual_output=True), name="G_AB")
    assert np.abs(np.asarray(residual(x)) - x).max() < 1e-2
    # Without it a fresh generator is far from the identity.
    assert np.abs(np.asarray(plain(x)) - x).max() > 0.1


def test_residual_output_needs_one_channel_count_on_both_sides(tiny):
    cfg = tiny.replace(residual_output=True, channels_b=1)
    for name, channels in (("G_AB", (3, 1)), ("G_BA", (1, 3))):
        g = build_generator(cfg, name=name)
        assert (g.input_shape[-1], g.output_shape[-1]) == channels
        # No identity between 3 and 1 channels: the head predicts the output itself.
        assert "residual_tanh" not in [layer.name for layer in g.layers]


def test_residual_output_is_finite_at_saturated_pixels(tiny):
    g = build_generator(tiny.replace(residual_output=True), name="G_AB")
    x = np.ones((1, 32, 32, 3), "float32")
    x[..., 0] = -1.0
    y = np.asarray(g(x))
    assert np.isfinite(y).all()
    np.testing.assert_allclose(y, 0.999 * x, atol=1e-3)


def _stained(densities: np.ndarray) -> np.ndarray:
    """RGB pixels in [-1, 1] of the given (hematoxylin, eosin, DAB) optical densities."""
    return (2 * np.exp(-densities @ rgb_from_hed) - 1).astype("float32")


def test_hematoxylin_only_keeps_the_hematoxylin_and_drops_eosin_and_dab():
    hematoxylin, eosin, dab, both = _stained(
        np.array([[0.8, 0, 0], [0, 0.8, 0], [0, 0, 0.8], [0.5, 0.6, 0]])
    )
    layer = HematoxylinOnly()
    out = np.asarray(layer(np.stack([hematoxylin, eosin, dab, both])[None]))[0]
    np.testing.assert_allclose(out[0], hematoxylin, atol=1e-4)
    # Eosin and DAB alone become white glass; eosin over a nucleus leaves the nucleus.
    np.testing.assert_allclose(out[1:3], 1.0, atol=1e-4)
    np.testing.assert_allclose(out[3], _stained(np.array([0.5, 0, 0])), atol=1e-4)


@pytest.mark.parametrize("generator", ["resnet", "unet"])
def test_residual_start_hematoxylin_starts_as_the_counterstain_alone(tiny, generator):
    x = _images(1, 32, 32)
    cfg = tiny.replace(generator=generator, residual_output=True, residual_start="hematoxylin")
    expected = np.asarray(HematoxylinOnly()(x))
    assert np.abs(np.asarray(build_generator(cfg, name="G_BA")(x)) - expected).max() < 1e-2
    assert np.abs(expected - x).max() > 0.5
    # One channel has no stains to separate: such a generator starts as the identity.
    grey = build_generator(cfg.replace(channels_a=1, channels_b=1), name="G_AB")
    assert np.abs(np.asarray(grey(x[..., :1])) - x[..., :1]).max() < 1e-2


def test_unet_dropout_is_opt_in_and_active_in_training_only(tiny):
    # Depth 6 has one extra ngf*8 level, where the reference puts dropout.
    cfg = tiny.replace(generator="unet", unet_depth=6, ngf=4, image_size=64)
    x = _images(1, 64, 64)
    plain = build_generator(cfg, name="G_AB")
    assert not any(isinstance(layer, keras.layers.Dropout) for layer in plain.layers)
    g = build_generator(cfg.replace(dropout=True), name="G_AB")
    first, second = np.asarray(g(x, training=False)), np.asarray(g(x, training=False))
    np.testing.assert_array_equal(first, second)
    assert not np.allclose(np.asarray(g(x, training=True)), first)


def test_weights_are_reproducible_per_seed_and_differ_between_networks(tiny):
    def kernels(model):
        return [w for w in model.get_weights() if w.ndim == 4]

    again = kernels(build_generator(tiny, name="G_AB"))
    for a, b in zip(kernels(build_generator(tiny, name="G_AB")), again, strict=True):
        np.testing.assert_array_equal(a, b)
    other = kernels(build_generator(tiny, name="G_BA"))
    assert not np.array_equal(other[0], again[0])
    # Same-shaped layers of one network must not share their initial weights.
    assert not np.array_equal(again[3], again[4])
    reseeded = kernels(build_generator(tiny.replace(seed=1), name="G_AB"))
    assert not np.array_equal(reseeded[0], again[0])


def test_initial_weights_follow_the_reference_init(tiny):
    d = build_discriminator(Config(), name="D_A")
    kernel = next(w for w in d.get_weights() if w.ndim == 4 and w.size > 100_000)
    assert abs(kernel.mean()) < 1e-3
    assert kernel.std() == pytest.approx(0.02, rel=0.05)
    assert all(not w.any() for w in d.get_weights() if w.ndim == 1)


# --- mixed precision ------------------------------------------------------


@pytest.mark.parametrize("residual_output", [False, True])
def test_mixed_precision_outputs_are_float32_and_finite(tiny, mixed_precision, residual_output):
    g = build_generator(tiny.replace(residual_output=residual_output), name="G_AB")
    d = build_discriminator(tiny, name="D_B")
    x = _images(1, 32, 32)
    y = g(x)
    scores = d(y)
    assert g.get_layer("res1a_conv").compute_dtype == "float16"
    assert y.dtype == "float32" and scores.dtype == "float32"
    assert np.isfinite(np.asarray(y)).all() and np.isfinite(np.asarray(scores)).all()
    if residual_output:
        assert np.abs(np.asarray(y) - x).max() < 1e-2


# --- custom layers and saving ---------------------------------------------


def test_reflection_padding_matches_numpy_at_dynamic_sizes():
    inputs = keras.Input((None, None, 2))
    model = keras.Model(inputs, ReflectionPadding2D((2, 1))(inputs))
    x = np.arange(2 * 5 * 4 * 2, dtype="float32").reshape(2, 5, 4, 2)
    expected = np.pad(x, [(0, 0), (2, 2), (1, 1), (0, 0)], mode="reflect")
    np.testing.assert_array_equal(np.asarray(model(x)), expected)
    assert model.output.shape == (None, None, None, 2)
    assert ReflectionPadding2D(3).compute_output_shape((1, 10, None, 3)) == (1, 16, None, 3)


def test_custom_layers_are_registered():
    get = keras.saving.get_registered_object
    assert get("stainvirt>ReflectionPadding2D") is ReflectionPadding2D
    assert get("stainvirt>ResidualTanh") is ResidualTanh
    assert get("stainvirt>HematoxylinOnly") is HematoxylinOnly
    with pytest.raises(ValueError, match="scale"):
        ResidualTanh(scale=1.0)


def _perturbed(model: keras.Model) -> keras.Model:
    # A residual generator's zero last conv would hide a broken reload.
    rng = np.random.default_rng(1)
    model.set_weights([w + rng.normal(0, 0.02, w.shape).astype(w.dtype) for w in model.weights])
    return model


@pytest.mark.parametrize(
    "build",
    [
        lambda c: build_generator(c.replace(upsample="resize", residual_output=True), "G_AB"),
        lambda c: build_generator(c.replace(generator="unet"), "G_BA"),
        lambda c: build_generator(
            c.replace(generator="unet", residual_output=True, residual_start="hematoxylin"), "G_AB"
        ),
        lambda c: build_discriminator(c, "D_A"),
    ],
    ids=["resnet-resize-residual", "unet-transpose", "unet-hematoxylin-start", "patchgan"],
)
def test_keras_file_round_trip_without_custom_objects(tiny, tmp_path, build):
    model = _perturbed(build(tiny))
    x = _images(1, 32, 32)
    path = tmp_path / "model.keras"
    model.save(path)
    loaded = keras.models.load_model(path)
    assert loaded.name == model.name
    assert loaded.count_params() == model.count_params()
    np.testing.assert_allclose(np.asarray(loaded(x)), np.asarray(model(x)), atol=1e-6)
