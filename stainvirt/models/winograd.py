"""3x3 convolutions by Winograd's minimal filtering F(4x4, 3x3), for CPUs.

The ResNet generator spends most of a training step in its residual blocks'
3x3 convolutions. Winograd's algorithm (Lavin & Gray 2016) computes each 4x4
block of outputs from a 6x6 block of inputs with 36 multiplications per
channel pair instead of 144: the input and kernel are transformed, multiplied
element-wise (one batched matrix product over the channels), and transformed
back. The result is the same convolution up to float32 rounding (about 1e-5
of the output's scale; 1e-6 for a direct convolution). On 2 CPU cores
(``bench/conv_probe.py``) its forward and backward pass takes 0.6x the time
of TensorFlow's oneDNN convolution; GPUs' own libraries already use it, so
:class:`WinogradConv2D` computes directly there.
"""

from __future__ import annotations

from typing import Any

import keras
import numpy as np

from stainvirt.devices import gpu_visible

# F(4x4, 3x3): output block 4, input block 6 (Lavin & Gray 2016, section 4.2).
_BT = np.array([
    [4, 0, -5, 0, 1, 0],
    [0, -4, -4, 1, 1, 0],
    [0, 4, -4, -1, 1, 0],
    [0, -2, -1, 2, 1, 0],
    [0, 2, -1, -2, 1, 0],
    [0, 4, 0, -5, 0, 1],
], np.float64)
_G = np.array([
    [1 / 4, 0, 0],
    [-1 / 6, -1 / 6, -1 / 6],
    [-1 / 6, 1 / 6, -1 / 6],
    [1 / 24, 1 / 12, 1 / 6],
    [1 / 24, -1 / 12, 1 / 6],
    [0, 0, 1],
], np.float64)
_AT = np.array([
    [1, 1, 1, 1, 1, 0],
    [0, 1, -1, 2, -2, 0],
    [0, 1, 1, 4, 4, 0],
    [0, 1, -1, 8, -8, 1],
], np.float64)
OUT, IN = 4, 6
WINOGRAD_MIN_CHANNELS = 128
"""Convolutions with fewer input or output channels stay direct (slower by Winograd)."""
# Two-dimensional transforms as single matrices over flattened blocks.
INPUT_T = np.kron(_BT, _BT).astype(np.float32)  # (36, 36)
KERNEL_T = np.kron(_G, _G).astype(np.float32)  # (36, 9)
OUTPUT_T = np.kron(_AT, _AT).astype(np.float32)  # (16, 36)


def winograd_conv3x3(x: Any, kernel: Any) -> Any:
    """A valid 3x3, stride-1 convolution (cross-correlation, as ``tf.nn.conv2d``) of NHWC ``x``.

    Args:
        x: ``(N, H + 2, W + 2, C_in)`` float32, any H and W of at least 1.
        kernel: ``(3, 3, C_in, C_out)``.

    Returns:
        ``(N, H, W, C_out)``.
    """
    import tensorflow as tf

    c_in, c_out = kernel.shape[2], kernel.shape[3]
    shape = tf.shape(x)
    n, h, w = shape[0], shape[1] - 2, shape[2] - 2
    # Pad the output up to whole 4x4 blocks; the extra rows and columns are cut off below.
    th, tw = (h + OUT - 1) // OUT, (w + OUT - 1) // OUT
    x = tf.pad(x, [[0, 0], [0, th * OUT - h], [0, tw * OUT - w], [0, 0]])
    blocks = tf.image.extract_patches(x, [1, IN, IN, 1], [1, OUT, OUT, 1], [1, 1, 1, 1], "VALID")
    blocks = tf.reshape(blocks, [-1, IN * IN, c_in])  # (tiles, 36, C_in)
    v = tf.einsum("ij,tjc->itc", INPUT_T, blocks)  # (36, tiles, C_in)
    u = tf.einsum("ij,jco->ico", KERNEL_T, tf.reshape(kernel, [9, c_in, c_out]))
    m = tf.matmul(v, u)  # (36, tiles, C_out): the element-wise products, summed over C_in
    y = tf.einsum("ij,jto->ito", OUTPUT_T, m)  # (16, tiles, C_out)
    y = tf.reshape(y, [OUT, OUT, n, th, tw, c_out])
    y = tf.reshape(tf.transpose(y, [2, 3, 0, 4, 1, 5]), [n, th * OUT, tw * OUT, c_out])
    return y[:, :h, :w]


@keras.saving.register_keras_serializable(package="stainvirt")
class WinogradConv2D(keras.layers.Conv2D):
    """A ``Conv2D`` (3x3, stride 1, valid) computed by :func:`winograd_conv3x3` on CPUs.

    Same weights, names and results (to float32 rounding) as the ``Conv2D`` it
    replaces; where TensorFlow sees a GPU, or under float16, it computes as
    ``Conv2D`` does.
    """

    def call(self, inputs: Any) -> Any:
        import tensorflow as tf

        if (self.kernel_size != (3, 3) or self.strides != (1, 1) or self.padding != "valid"
                or self.compute_dtype != "float32" or gpu_visible()):
            return super().call(inputs)
        out = winograd_conv3x3(inputs, self.kernel)
        return tf.nn.bias_add(out, self.bias) if self.use_bias else out
