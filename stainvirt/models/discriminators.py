"""The PatchGAN discriminator (the reference's NLayerDiscriminator).

``D_A`` judges domain A (H&E: real vs F(b)) and ``D_B`` judges domain B
(IHC: real vs G(a)); both are built by :func:`build_discriminator`.
"""

from __future__ import annotations

import keras

from stainvirt.config import Config
from stainvirt.errors import StainvirtError
from stainvirt.models.layers import WeightInit, instance_norm, padded_conv


def build_discriminator(cfg: Config, name: str = "D_A") -> keras.Model:
    """Build the PatchGAN: one realness score per overlapping patch, no sigmoid (LSGAN).

    With ``n_layers_d=3`` it is the 70x70 PatchGAN, C64 - C128 - C256 - C512
    (filters scaled by ``ndf / 64``), and a 256x256 input gives 30x30 scores.
    Every conv is 4x4 with one pixel of zero padding, as in the reference.

    Args:
        cfg: Reads ``ndf``, ``n_layers_d`` and ``seed``.
        name: Model name: ``D_A`` or ``D_B``.

    Returns:
        A functional model mapping ``(batch, H, W, C)`` images of its domain
        (``channels_a`` or ``channels_b``) in [-1, 1] to
        ``(batch, h, w, 1)`` float32 scores.
    """
    init = WeightInit(cfg.seed, name)
    if name not in ("D_A", "D_B"):
        raise StainvirtError(f"discriminator name must be D_A or D_B, not {name!r}")
    channels = cfg.channels_a if name == "D_A" else cfg.channels_b
    image = keras.Input(shape=(None, None, channels), name="image")
    x = padded_conv(image, cfg.ndf, 4, 2, pad=1, reflect=False, kernel_init=init(), name="c1")
    x = keras.layers.LeakyReLU(0.2, name="c1_lrelu")(x)
    # The last of these convs keeps the size: it widens the receptive field only.
    strides = [2] * (cfg.n_layers_d - 1) + [1]
    for n, stride in enumerate(strides, start=1):
        x = padded_conv(
            x,
            cfg.ndf * min(2**n, 8),
            4,
            stride,
            pad=1,
            reflect=False,
            kernel_init=init(),
            name=f"c{n + 1}",
        )
        if cfg.norm_d == "instance":
            x = instance_norm(f"c{n + 1}_norm")(x)
        x = keras.layers.LeakyReLU(0.2, name=f"c{n + 1}_lrelu")(x)
    x = padded_conv(x, 1, 4, 1, pad=1, reflect=False, kernel_init=init(), name="score")
    # float32 scores keep the squared-error loss accurate under mixed precision.
    scores = keras.layers.Activation("linear", dtype="float32", name="scores")(x)
    return keras.Model(image, scores, name=name)
