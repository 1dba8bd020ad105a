"""Generators: the reference ResNet ("resnet_Nblocks") and U-Net ("unet_256") as Keras models.

Names follow the paper (Zhu et al. 2017): ``G_AB`` is the paper's G
(A -> B, H&E -> IHC) and ``G_BA`` is the paper's F (B -> A, IHC -> H&E).
Both are built here by :func:`build_generator` with different ``name``.

Images are NHWC in [-1, 1]; spatial sizes are left open so a trained model
translates tiles of any size that fits (a multiple of 4 for the ResNet, of
``2**unet_depth`` for the U-Net).
"""

from __future__ import annotations

from typing import Any

import keras

from stainvirt.config import Config
from stainvirt.errors import StainvirtError
from stainvirt.models.layers import (
    HematoxylinOnly,
    ResidualTanh,
    WeightInit,
    instance_norm,
    padded_conv,
)


def build_generator(cfg: Config, name: str = "G_AB") -> keras.Model:
    """Build a generator as chosen by ``cfg.generator``.

    Args:
        cfg: Reads ``generator``, ``ngf``, ``n_blocks``, ``unet_depth``,
            ``upsample``, ``residual_output``, ``residual_start`` and ``seed``.
        name: Model name: ``G_AB`` (the paper's G) or ``G_BA`` (the paper's F).

    Returns:
        A functional model mapping ``(batch, H, W, C_in)`` images in [-1, 1] to
        ``(batch, H, W, C_out)`` images in (-1, 1), float32 even under mixed
        precision; the channels are the domains' (:func:`generator_channels`), 3 for RGB.

    Examples:
        >>> g = build_generator(preset("tiny"), name="G_AB")
        >>> g(np.zeros((1, 32, 32, 3), "float32")).shape
        TensorShape([1, 32, 32, 3])
    """
    trunks = {"resnet": _resnet_trunk, "unet": _unet_trunk}
    if cfg.generator not in trunks:
        raise StainvirtError(
            f"unknown generator {cfg.generator!r}; choose one of: {', '.join(trunks)}"
        )
    channels_in, channels_out = generator_channels(cfg, name)
    image = keras.Input(shape=(None, None, channels_in), name="image")
    delta = trunks[cfg.generator](image, cfg, WeightInit(cfg.seed, name), channels_out)
    return keras.Model(image, _output_head(image, delta, cfg), name=name)


def generator_channels(cfg: Config, name: str) -> tuple[int, int]:
    """``(input, output)`` channels of ``G_AB`` (A to B) or ``G_BA`` (B to A)."""
    if name not in ("G_AB", "G_BA"):
        raise StainvirtError(f"generator name must be G_AB or G_BA, not {name!r}")
    pair = (cfg.channels_a, cfg.channels_b)
    return pair if name == "G_AB" else pair[::-1]


def _resnet_trunk(image: Any, cfg: Config, init: WeightInit, channels: int) -> Any:
    """The reference ResnetGenerator up to (and including) its last 7x7 conv."""
    ngf = cfg.ngf
    x = _conv_norm_relu(image, ngf, 7, 1, pad=3, reflect=True, init=init, name="stem")
    for i, mult in enumerate((2, 4), start=1):
        x = _conv_norm_relu(x, ngf * mult, 3, 2, pad=1, reflect=False, init=init, name=f"down{i}")
    for i in range(1, cfg.n_blocks + 1):
        x = _residual_block(x, ngf * 4, init, name=f"res{i}")
    for i, mult in enumerate((2, 1), start=1):
        x = _upsample(x, ngf * mult, 3, cfg, init(), name=f"up{i}")
        x = instance_norm(f"up{i}_norm")(x)
        x = keras.layers.ReLU(name=f"up{i}_relu")(x)
    return padded_conv(
        x, channels, 7, 1, pad=3, reflect=True, kernel_init=_last_kernel_init(cfg, init),
        name="to_rgb"
    )


def _unet_trunk(image: Any, cfg: Config, init: WeightInit, channels: int) -> Any:
    """The reference UnetGenerator (nested UnetSkipConnectionBlocks) unrolled, before its tanh.

    Level ``i`` halves the size with ``ngf * min(2**i, 8)`` filters. The
    reference's in-place LeakyReLU also rewrites the tensor it concatenates,
    so its skips carry the activated features; so do these.
    """
    depth = cfg.unet_depth
    filters = [cfg.ngf * min(2**i, 8) for i in range(depth)]
    x = padded_conv(image, filters[0], 4, 2, pad=1, reflect=False, kernel_init=init(), name="down1")
    skips = []
    for i in range(1, depth):
        x = keras.layers.LeakyReLU(0.2, name=f"down{i + 1}_lrelu")(x)
        skips.append(x)
        x = padded_conv(
            x, filters[i], 4, 2, pad=1, reflect=False, kernel_init=init(), name=f"down{i + 1}"
        )
        # The innermost level is 1x1 at full depth: instance norm would zero it.
        if i < depth - 1:
            x = instance_norm(f"down{i + 1}_norm")(x)
    for i in range(depth - 1, 0, -1):
        x = keras.layers.ReLU(name=f"up{i + 1}_relu")(x)
        x = _upsample(x, filters[i - 1], 4, cfg, init(), name=f"up{i + 1}")
        x = instance_norm(f"up{i + 1}_norm")(x)
        # Where the reference's use_dropout puts it: the extra ngf*8 levels.
        if cfg.dropout and 4 <= i < depth - 1:
            x = keras.layers.Dropout(0.5, name=f"up{i + 1}_dropout")(x)
        x = keras.layers.Concatenate(name=f"up{i + 1}_skip")([skips[i - 1], x])
    x = keras.layers.ReLU(name="up1_relu")(x)
    return _upsample(x, channels, 4, cfg, _last_kernel_init(cfg, init), name="to_rgb")


def _conv_norm_relu(
    x: Any,
    filters: int,
    kernel: int,
    stride: int,
    *,
    pad: int,
    reflect: bool,
    init: WeightInit,
    name: str,
) -> Any:
    x = padded_conv(
        x, filters, kernel, stride, pad=pad, reflect=reflect, kernel_init=init(), name=name
    )
    x = instance_norm(f"{name}_norm")(x)
    return keras.layers.ReLU(name=f"{name}_relu")(x)


def _residual_block(x: Any, filters: int, init: WeightInit, name: str) -> Any:
    """The reference ResnetBlock: two reflect-padded 3x3 convs with instance norm, plus a skip."""
    h = _conv_norm_relu(x, filters, 3, 1, pad=1, reflect=True, init=init, name=f"{name}a")
    h = padded_conv(h, filters, 3, 1, pad=1, reflect=True, kernel_init=init(), name=f"{name}b")
    h = instance_norm(f"{name}b_norm")(h)
    return keras.layers.Add(name=f"{name}_add")([x, h])


def _upsample(
    x: Any,
    filters: int,
    kernel: int,
    cfg: Config,
    kernel_init: keras.initializers.Initializer | str,
    name: str,
) -> Any:
    """Double the spatial size as ``cfg.upsample`` says.

    ``transpose`` is PyTorch's ``ConvTranspose2d(kernel, stride=2, padding=1,
    output_padding=kernel - 3)``: a valid transposed conv gives ``2n + kernel - 2``
    rows, of which PyTorch keeps rows ``1 .. 2n``. Keras's ``"same"`` keeps
    rows ``0 .. 2n - 1`` for kernel 3, one pixel off the reference.
    ``resize`` (nearest-neighbour upsampling, then a reflect-padded 3x3 conv)
    cannot make checkerboard artefacts.
    """
    if cfg.upsample == "resize":
        x = keras.layers.UpSampling2D(2, interpolation="nearest", name=f"{name}_resize")(x)
        return padded_conv(
            x, filters, 3, 1, pad=1, reflect=True, kernel_init=kernel_init, name=name
        )
    x = keras.layers.Conv2DTranspose(
        filters,
        kernel,
        strides=2,
        padding="valid",
        kernel_initializer=kernel_init,
        bias_initializer="zeros",
        name=f"{name}_tconv",
    )(x)
    crop = (1, kernel - 3)
    return keras.layers.Cropping2D((crop, crop), name=f"{name}_crop")(x)


def _last_kernel_init(cfg: Config, init: WeightInit) -> keras.initializers.Initializer | str:
    # A residual generator starts with a zero change, i.e. as the identity.
    return "zeros" if cfg.residual_output else init()


def _output_head(image: Any, delta: Any, cfg: Config) -> Any:
    """Squash the last conv's output into an image; float32 so mixed precision stays stable."""
    # Between domains of different channel counts there is no identity to start from.
    if cfg.residual_output and image.shape[-1] == delta.shape[-1]:
        if cfg.residual_start == "hematoxylin" and image.shape[-1] == 3:
            image = HematoxylinOnly(dtype="float32", name="hematoxylin_only")(image)
        return ResidualTanh(dtype="float32", name="residual_tanh")([image, delta])
    return keras.layers.Activation("tanh", dtype="float32", name="tanh")(delta)
