"""The CycleGAN's networks as pure builders: ``build_generator`` and ``build_discriminator``.

Importing this package registers the custom layers, so saved ``.keras``
models load with plain ``keras.models.load_model``.
"""

from stainvirt.models.discriminators import build_discriminator
from stainvirt.models.generators import build_generator
from stainvirt.models.layers import HematoxylinOnly, ReflectionPadding2D, ResidualTanh

__all__ = [
    "HematoxylinOnly",
    "ReflectionPadding2D",
    "ResidualTanh",
    "build_discriminator",
    "build_generator",
]
