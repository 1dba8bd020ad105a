"""Convolution FLOPs of a CycleGAN step and the machine's conv throughput, for ``train_speed.py``.

Counting rule (a step's FLOPs, identical for ours and the reference, which
compute the same thing):

- Only Conv2D and Conv2DTranspose layers count; norms, padding, activations,
  resizing, losses and the Adam updates are left out. A conv costs
  ``2 * MACs`` FLOPs; a Conv2D's MACs are ``out_pixels * k * k * c_in * c_out``
  per image, a Conv2DTranspose's ``in_pixels * k * k * c_in * c_out``.
- A network pass that is trained costs 3x its forward (forward, input
  gradient, kernel gradient). A discriminator pass under the generators' loss
  costs 2x (forward and input gradient: the discriminator is frozen there).
- Per step: 4 generator passes (G_AB(a), G_BA(b) and the two reconstructions),
  2 more when the identity loss is on; 2 frozen discriminator passes
  (adversarial loss) and 4 trained ones (real and pooled fake for each). All at
  the batch size and crop of the config. The paired loss's 2 extra generator
  passes are not counted: the bench feeds unpaired data, so ours skips them.

This overcounts slightly: the first conv of a pass on real data needs no input
gradient.
"""

from __future__ import annotations

import statistics
import time
from typing import Any

CONV_SHAPE = (1, 64, 64, 256, 256, 3)
"""The throughput probe: batch, height, width, in channels, out channels, kernel (a ResNet block's
3x3 conv at paper size, 256 px / 4)."""


def conv_macs(model: Any, batch_shape: tuple[int, int, int, int]) -> int:
    """Multiply-accumulates of a Keras model's Conv2D/Conv2DTranspose layers for one forward.

    Shapes come from ``compute_output_spec`` of a probe model that outputs every
    conv layer's input and output, so any functional graph (pads, resizes,
    skips) is followed at the given ``(batch, H, W, C)``.
    """
    import keras

    convs = [layer for layer in model.layers
             if isinstance(layer, (keras.layers.Conv2D, keras.layers.Conv2DTranspose))]
    if not convs:
        return 0
    probe = keras.Model(model.inputs, [t for layer in convs for t in (layer.input, layer.output)])
    specs = probe.compute_output_spec(keras.KerasTensor(batch_shape))
    total = 0
    for i, layer in enumerate(convs):
        inp, out = specs[2 * i].shape, specs[2 * i + 1].shape
        kh, kw = layer.kernel_size
        per_pixel = kh * kw * inp[-1] * out[-1]
        if isinstance(layer, keras.layers.Conv2DTranspose):
            total += inp[0] * inp[1] * inp[2] * per_pixel
        else:
            total += out[0] * out[1] * out[2] * per_pixel
    return int(total)


def step_flops(cfg: Any) -> dict[str, float]:
    """FLOPs of one CycleGAN training step under the counting rule of this module's docstring.

    Returns ``{"G": forward FLOPs of one generator pass, "D": of one
    discriminator pass, "step": the whole step}`` at the config's batch and crop.
    """
    from stainvirt.models import build_discriminator, build_generator

    shape = (cfg.batch_size, cfg.image_size, cfg.image_size, cfg.channels_a)
    g = 2.0 * conv_macs(build_generator(cfg, "G_AB"), shape)
    d = 2.0 * conv_macs(build_discriminator(cfg, "D_A"), shape)
    g_passes = 4 + (2 if cfg.lambda_identity > 0 and cfg.channels_a == cfg.channels_b else 0)
    return {"G": g, "D": d, "step": 3 * g_passes * g + 2 * 2 * d + 3 * 4 * d}


def conv_throughput(worker: Any = None, reps: int = 8, warmup: int = 2) -> dict[str, float]:
    """GFLOP/s of one large forward conv (:data:`CONV_SHAPE`): TF, TF with XLA, and torch.

    TF runs ``tf.nn.conv2d`` on NHWC float32 in a ``tf.function`` (``jit_compile``
    False and True); torch (in ``worker``'s process, a
    :class:`torch_worker.TorchWorker`, when given) runs ``conv2d`` on contiguous
    NCHW (the layout the reference trains in) under ``no_grad``. Valid padding on
    an input padded by hand, so the output is exactly H x W. The three alternate
    call by call, so they share the machine's load; each figure is from the
    median call.
    """
    import numpy as np
    import tensorflow as tf

    batch, height, width, c_in, c_out, k = CONV_SHAPE
    flops = 2.0 * batch * height * width * c_in * c_out * k * k
    rng = np.random.default_rng(0)
    x = rng.standard_normal((batch, height + k - 1, width + k - 1, c_in), dtype=np.float32)
    w = rng.standard_normal((k, k, c_in, c_out), dtype=np.float32) * 0.05
    tx, tw = tf.constant(x), tf.constant(w)

    def tf_conv(jit: bool):
        fn = tf.function(lambda a, b: tf.nn.conv2d(a, b, 1, "VALID"), jit_compile=jit)

        def run() -> float:
            start = time.perf_counter()
            fn(tx, tw).shape  # noqa: B018 (waits for the result)
            return time.perf_counter() - start

        return run

    runs = {"TF": tf_conv(False), "TF XLA": tf_conv(True)}
    if worker is not None:
        runs["torch"] = worker.conv(x, w)
    seconds: dict[str, list[float]] = {name: [] for name in runs}
    for rep in range(warmup + reps):
        for name, run in runs.items():
            spent = run()
            if rep >= warmup:
                seconds[name].append(spent)
    return {name: flops / statistics.median(s) / 1e9 for name, s in seconds.items()}


def describe_probe() -> str:
    """The probe conv in words, e.g. for the printout."""
    batch, height, width, c_in, c_out, k = CONV_SHAPE
    gflop = 2.0 * batch * height * width * c_in * c_out * k * k / 1e9
    return (f"{k}x{k} conv {c_in}->{c_out} channels on {height}x{width}, batch {batch} "
            f"({gflop:.2f} GFLOP, forward only)")
