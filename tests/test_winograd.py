"""Winograd's 3x3 convolution: the same convolution as TensorFlow's, values and gradients."""

from __future__ import annotations

import keras
import numpy as np
import pytest
import tensorflow as tf

from stainvirt.config import preset
from stainvirt.models import build_generator
from stainvirt.models.winograd import WinogradConv2D, winograd_conv3x3


def direct(x, kernel):
    return tf.nn.conv2d(x, kernel, 1, "VALID")


def random(shape, scale=1.0, seed=0):
    return tf.constant(np.random.default_rng(seed).standard_normal(shape).astype("float32") * scale)


@pytest.mark.parametrize("shape", [(1, 34, 34, 32, 16), (2, 10, 10, 8, 8), (1, 27, 13, 3, 5),
                                   (1, 3, 3, 4, 2)])
def test_values_and_gradients_match_a_direct_convolution(shape):
    n, h, w, c_in, c_out = shape
    x, kernel = random((n, h, w, c_in)), random((3, 3, c_in, c_out), 0.1, seed=1)
    upstream = random((n, h - 2, w - 2, c_out), seed=2)
    results = []
    for conv in (winograd_conv3x3, direct):
        with tf.GradientTape() as tape:
            tape.watch([x, kernel])
            y = conv(x, kernel)
            loss = tf.reduce_sum(y * upstream)
        results.append([y, *tape.gradient(loss, [x, kernel])])
    for name, got, want in zip(("output", "input gradient", "kernel gradient"), *results,
                               strict=True):
        assert got.shape == want.shape, name
        scale = float(tf.reduce_max(tf.abs(want)))
        error = float(tf.reduce_max(tf.abs(got - want))) / scale
        # Winograd F(4x4, 3x3) rounds a little more than a direct sum: about 1e-5 of the scale.
        assert error < 5e-5, (name, error)


def test_the_layer_replaces_conv2d_with_its_weights_and_is_saved_as_itself(tmp_path):
    cfg = preset("tiny", ngf=32)  # 128 channels in the residual blocks
    generator = build_generator(cfg, "G_AB")
    convs = [layer for layer in generator.layers if isinstance(layer, WinogradConv2D)]
    assert len(convs) == 2 * cfg.n_blocks  # the residual blocks' convolutions
    # Narrower convolutions, where Winograd is slower, stay direct.
    assert not any(isinstance(la, WinogradConv2D) for la in build_generator(preset("cpu")).layers)
    layer = convs[0]
    plain = keras.layers.Conv2D(layer.filters, 3, padding="valid")
    x = random((2, 10, 12, layer.kernel.shape[2]))
    plain.build(x.shape)
    plain.set_weights(layer.get_weights())
    want = plain(x)
    np.testing.assert_allclose(layer(x), want, atol=5e-5 * float(tf.reduce_max(tf.abs(want))))
    generator.save(tmp_path / "g.keras")
    loaded = keras.models.load_model(tmp_path / "g.keras")
    assert sum(isinstance(la, WinogradConv2D) for la in loaded.layers) == len(convs)
    image = random((1, 32, 32, 3), 0.5)
    np.testing.assert_array_equal(loaded(image), generator(image))


def test_float16_computes_directly():
    layer = WinogradConv2D(4, 3, dtype="mixed_float16")
    x = random((1, 8, 8, 2))
    layer.build(x.shape)
    assert layer(x).dtype == tf.float16
