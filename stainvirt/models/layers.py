"""Custom layers and the small building blocks the generators and discriminators share.

The custom layers are registered, so saved ``.keras`` models load without
``custom_objects`` once ``stainvirt.models`` is imported.
"""

from __future__ import annotations

import random
from typing import Any

import keras
import numpy as np
from keras import ops
from skimage.color import hed_from_rgb, rgb_from_hed

from stainvirt.models.winograd import WINOGRAD_MIN_CHANNELS, WinogradConv2D


@keras.saving.register_keras_serializable(package="stainvirt")
class ReflectionPadding2D(keras.layers.Layer):
    """Mirror-pad the two spatial axes of an NHWC tensor (PyTorch's ``ReflectionPad2d``).

    Works for spatial sizes only known at run time, so one model translates
    tiles of any size. Each padded side must be smaller than the input side.

    Args:
        padding: Rows and columns added on each side: one int for both axes or
            ``(rows, cols)``.
        **kwargs: Passed to ``keras.layers.Layer``.
    """

    def __init__(self, padding: int | tuple[int, int] = 1, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        rows, cols = (padding, padding) if isinstance(padding, int) else padding
        self.padding = (int(rows), int(cols))

    def call(self, inputs: Any) -> Any:
        rows, cols = self.padding
        return ops.pad(inputs, [[0, 0], [rows, rows], [cols, cols], [0, 0]], mode="reflect")

    def compute_output_shape(self, input_shape: tuple) -> tuple:
        batch, height, width, channels = input_shape
        rows, cols = self.padding
        return (
            batch,
            None if height is None else height + 2 * rows,
            None if width is None else width + 2 * cols,
            channels,
        )

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), "padding": self.padding}


@keras.saving.register_keras_serializable(package="stainvirt")
class ResidualTanh(keras.layers.Layer):
    """``tanh(atanh(scale * clip(image, -1, 1)) + delta)``: a generator head that edits its input.

    With ``delta == 0`` the output is ``scale * image``, so a generator whose
    last convolution starts at zero starts as (almost) the identity. ``scale``
    below 1 keeps ``atanh`` finite at saturated pixels (-1 or 1).

    Args:
        scale: Shrinks the clipped image before ``atanh``; must be in (0, 1).
        **kwargs: Passed to ``keras.layers.Layer`` (use ``dtype="float32"``
            under mixed precision: ``atanh`` near 1 needs the precision).

    Call args:
        inputs: ``[image, delta]``, both NHWC with the same shape; ``image`` in [-1, 1].
    """

    def __init__(self, scale: float = 0.999, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        if not 0.0 < scale < 1.0:
            raise ValueError(f"ResidualTanh scale must be in (0, 1), not {scale}")
        self.scale = float(scale)

    def call(self, inputs: Any) -> Any:
        image, delta = inputs
        start = ops.arctanh(self.scale * ops.clip(image, -1.0, 1.0))
        return ops.tanh(start + delta)

    def compute_output_shape(self, input_shape: Any) -> Any:
        return input_shape[1]

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), "scale": self.scale}


@keras.saving.register_keras_serializable(package="stainvirt")
class HematoxylinOnly(keras.layers.Layer):
    """An RGB image with its hematoxylin alone: the eosin, DAB or other stain taken out.

    Colour deconvolution (Ruifrok & Johnston, as ``skimage.color.rgb2hed``)
    splits each pixel's optical density into hematoxylin, eosin and DAB; the
    image is drawn again from the hematoxylin density only. An H&E becomes
    blue nuclei on near-white stroma, as an IHC with no marker; an IHC loses
    its DAB. Images are in [-1, 1]; intensities are floored at 1/255 so black
    pixels keep a finite density.
    """

    def call(self, inputs: Any) -> Any:
        density = hematoxylin_density((ops.cast(inputs, "float32") + 1.0) / 2.0)
        colour = ops.convert_to_tensor(rgb_from_hed[:1].astype(np.float32))
        return 2.0 * ops.exp(-ops.matmul(density, colour)) - 1.0


def hematoxylin_density(images: Any) -> Any:
    """Hematoxylin optical density ``(B, H, W, 1)`` (natural log) of RGB images in [0, 1].

    Colour deconvolution as ``skimage.color.rgb2hed`` (up to scale), in float32,
    with the intensity floored at 1/255 so that black pixels keep a finite gradient.
    """
    intensity = ops.maximum(ops.cast(images, "float32"), 1.0 / 255)
    column = ops.convert_to_tensor(hed_from_rgb[:, :1].astype(np.float32))
    return ops.relu(ops.matmul(-ops.log(intensity), column))


class WeightInit:
    """Hands out the reference's N(0, 0.02) initialisers, one fresh seed per layer.

    Seeds come from the run seed and the network's name, so a rebuilt network
    gets the same weights while ``G_AB`` and ``G_BA`` start differently.
    (One shared Keras initialiser would give every same-shaped layer the same
    weights: Keras fixes an initialiser's seed when it is made.)

    Args:
        seed: The run seed (``Config.seed``).
        network: The network's name, e.g. ``"G_AB"``.
    """

    def __init__(self, seed: int, network: str) -> None:
        self._rng = random.Random(f"{seed}:{network}")

    def __call__(self) -> keras.initializers.Initializer:
        """A new N(0, 0.02) initialiser with its own seed."""
        return keras.initializers.RandomNormal(0.0, 0.02, seed=self._rng.randrange(2**31))


def instance_norm(name: str) -> keras.layers.Layer:
    """Instance norm without learned scale and shift (the reference's ``InstanceNorm2d``)."""
    return keras.layers.GroupNormalization(
        groups=-1, epsilon=1e-5, center=False, scale=False, name=name
    )


def padded_conv(
    x: Any,
    filters: int,
    kernel: int,
    stride: int,
    *,
    pad: int,
    reflect: bool,
    kernel_init: keras.initializers.Initializer | str,
    name: str,
) -> Any:
    """Pad explicitly, then a valid convolution with bias: PyTorch's ``Conv2d(padding=pad)``.

    Keras's ``"same"`` pads asymmetrically for stride 2, which shifts the grid
    against the reference; explicit padding keeps it.

    Args:
        x: NHWC input tensor.
        filters: Output channels.
        kernel: Square kernel side.
        stride: Convolution stride.
        pad: Pixels added on each side (0 for none).
        reflect: Mirror padding if true, zeros otherwise.
        kernel_init: Initialiser of the kernel (the bias starts at zero).
        name: Prefix of the layers' names.

    Returns:
        The convolution's output tensor.
    """
    if pad:
        padding = ReflectionPadding2D if reflect else keras.layers.ZeroPadding2D
        x = padding(pad, name=f"{name}_pad")(x)
    # A ResNet generator's residual blocks do most of its work; Winograd's algorithm does
    # it in 0.6x the time on CPUs, where channels are many (its transforms cost per channel,
    # its savings per pair of channels: below 128 it is slower, bench/conv_probe.py).
    wide = min(x.shape[-1], filters) >= WINOGRAD_MIN_CHANNELS
    conv = WinogradConv2D if (kernel, stride) == (3, 1) and wide else keras.layers.Conv2D
    return conv(
        filters,
        kernel,
        strides=stride,
        padding="valid",
        kernel_initializer=kernel_init,
        bias_initializer="zeros",
        name=f"{name}_conv",
    )(x)
