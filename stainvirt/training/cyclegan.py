"""The CycleGAN as one ``keras.Model``: four networks and a custom ``train_step``.

Paper names (Zhu et al. 2017): ``G_AB`` = G, ``G_BA`` = F, ``D_A`` = D_X,
``D_B`` = D_Y. Losses follow the reference ``cycle_gan_model.py``: LSGAN
adversarial, cycle L1 weighted ``lambda_cycle`` per direction, identity L1
weighted ``lambda_identity * lambda_cycle``, discriminator loss
``0.5 * (real + fake)`` on fakes drawn from an image pool. Optional: the paired
pyramid loss and the structure-consistency loss (:mod:`.structure`).
"""

from __future__ import annotations

import keras
import tensorflow as tf
from keras import ops

from stainvirt.config import Config
from stainvirt.models import build_discriminator, build_generator
from stainvirt.rundir import DIRECTIONS
from stainvirt.training.pool import ImagePool
from stainvirt.training.schedule import LinearDecay
from stainvirt.training.structure import structure_loss

# Logged and saved under these names, in this order. A name ending in a domain
# (D_A, cycle_A) is about that domain's images; one starting with a generator
# (G_AB_adv, G_AB_idt) is that generator's loss. The reference implementation's
# loss_idt_A is our G_AB_idt, its loss_D_A our D_B.
LOSS_NAMES = (
    "G", "D_A", "D_B", "G_AB_adv", "G_BA_adv", "cycle_A", "cycle_B", "G_AB_idt", "G_BA_idt",
    "G_AB_pair", "G_BA_pair",
)
STRUCTURE_NAMES = ("G_AB_struct", "G_BA_struct")
"""Logged after :data:`LOSS_NAMES` only by runs with a structure loss."""


def loss_names(cfg: Config) -> tuple[str, ...]:
    """The losses a run with ``cfg`` logs, in order; from the fourth on, the generators' terms."""
    return LOSS_NAMES + (STRUCTURE_NAMES if cfg.lambda_structure > 0 else ())


class CycleGAN(keras.Model):
    """Holds ``G_AB``, ``G_BA``, ``D_A``, ``D_B`` and trains them with ``fit``.

    Args:
        cfg: the run's configuration.
        steps_per_epoch: optimizer steps per epoch (for the learning-rate decay).
    """

    def __init__(self, cfg: Config, steps_per_epoch: int, **kwargs) -> None:
        super().__init__(name="CycleGAN", **kwargs)
        self.cfg = cfg
        self.G_AB = build_generator(cfg, name="G_AB")
        self.G_BA = build_generator(cfg, name="G_BA")
        self.D_A = build_discriminator(cfg, name="D_A")
        self.D_B = build_discriminator(cfg, name="D_B")
        side = (cfg.image_size, cfg.image_size)
        self.pool_A = ImagePool(cfg.pool_size, (*side, cfg.channels_a), seed=cfg.seed * 2 + 1,
                                name="pool_A")
        self.pool_B = ImagePool(cfg.pool_size, (*side, cfg.channels_b), seed=cfg.seed * 2 + 2,
                                name="pool_B")
        self.loss_names = loss_names(cfg)
        self.trackers = {name: keras.metrics.Mean(name=name) for name in self.loss_names}
        self.g_schedule = LinearDecay(cfg.lr, cfg.epochs, cfg.epochs_decay, steps_per_epoch)
        self.d_schedule = LinearDecay(cfg.lr_d, cfg.epochs, cfg.epochs_decay, steps_per_epoch)
        self.g_optimizer = self._adam(self.g_schedule, "g_optimizer")
        self.d_optimizer = self._adam(self.d_schedule, "d_optimizer")
        self.built = True

    def _adam(self, schedule: LinearDecay, name: str) -> keras.optimizers.Optimizer:
        cfg = self.cfg
        adam = keras.optimizers.Adam(schedule, beta_1=cfg.beta_1, beta_2=cfg.beta_2, name=name)
        if cfg.mixed_precision:
            adam = keras.optimizers.LossScaleOptimizer(adam, name=name)
        return adam

    def generator(self, direction: str) -> keras.Model:
        """``G_AB`` for ``A2B``, ``G_BA`` for ``B2A``."""
        return getattr(self, DIRECTIONS[direction].generator)

    @property
    def generator_variables(self) -> list:
        return self.G_AB.trainable_variables + self.G_BA.trainable_variables

    @property
    def discriminator_variables(self) -> list:
        return self.D_A.trainable_variables + self.D_B.trainable_variables

    def build_optimizers(self) -> None:
        """Create the optimizers' slots now, so a checkpoint can be restored into them."""
        self.g_optimizer.build(self.generator_variables)
        self.d_optimizer.build(self.discriminator_variables)

    @property
    def steps_done(self) -> int:
        """Training steps taken so far (the optimizers' counter, saved with the state)."""
        return int(self.g_optimizer.iterations.numpy())

    @property
    def metrics(self) -> list:
        return list(self.trackers.values())

    def call(self, inputs, training: bool = False):
        """Translate A -> B (so the model is callable like its main generator)."""
        return self.G_AB(inputs, training=training)

    def compile(self, jit_compile: bool | str = "auto", **kwargs) -> None:
        """Compile for ``fit``; the losses and optimizers are built in."""
        super().compile(jit_compile=jit_compile, **kwargs)

    def train_step(self, data):
        """One step of the reference's ``optimize_parameters``: generators, then discriminators.

        ``data`` is ``(real_a, real_b)``, or with registered pairs
        ``(real_a, real_b, pair_a, pair_b)``: then each generator is also
        supervised by the other half of its pairs (:func:`pyramid_l1`). The
        identity loss needs both domains to have one channel count; between
        others it is left out. With ``lambda_adversarial=0`` (a supervised-only
        ablation) the discriminators are neither run nor trained, and their
        losses log as 0.
        """
        real_a, real_b, *pairs = data
        cfg = self.cfg
        adversarial = cfg.lambda_adversarial > 0
        # Gradients from each replica are summed, so scale to the global mean.
        replicas = tf.distribute.get_strategy().num_replicas_in_sync
        step = self.g_optimizer.iterations
        with tf.GradientTape(persistent=True) as tape:
            fake_b = self.G_AB(real_a, training=True)
            fake_a = self.G_BA(real_b, training=True)
            rec_a = self.G_BA(fake_b, training=True)
            rec_b = self.G_AB(fake_a, training=True)
            # A term the run leaves out logs as 0.
            losses = dict.fromkeys(self.loss_names, ops.zeros(()))
            losses["cycle_A"] = _l1(rec_a, real_a) * cfg.lambda_cycle
            losses["cycle_B"] = _l1(rec_b, real_b) * cfg.lambda_cycle
            if adversarial:
                weight = cfg.lambda_adversarial
                losses["G_AB_adv"] = _mse(self.D_B(fake_b, training=True), 1.0) * weight
                losses["G_BA_adv"] = _mse(self.D_A(fake_a, training=True), 1.0) * weight
            if cfg.lambda_identity > 0 and cfg.channels_a == cfg.channels_b:
                weight = cfg.lambda_identity * cfg.lambda_cycle
                losses["G_AB_idt"] = _l1(self.G_AB(real_b, training=True), real_b) * weight
                losses["G_BA_idt"] = _l1(self.G_BA(real_a, training=True), real_a) * weight
            if pairs and cfg.lambda_paired > 0:
                pair_a, pair_b = pairs
                levels, weight = cfg.paired_levels, cfg.lambda_paired
                losses["G_AB_pair"] = pyramid_l1(self.G_AB(pair_a, training=True), pair_b,
                                                 levels) * weight
                losses["G_BA_pair"] = pyramid_l1(self.G_BA(pair_b, training=True), pair_a,
                                                 levels) * weight
            if cfg.lambda_structure > 0:
                weight, view = cfg.lambda_structure, cfg.structure_channel
                losses["G_AB_struct"] = structure_loss(real_a, fake_b, view) * weight
                losses["G_BA_struct"] = structure_loss(real_b, fake_a, view) * weight
            losses["G"] = ops.sum(ops.stack([losses[k] for k in self.loss_names[3:]]))
            # scale_loss is the identity unless mixed precision wraps the optimizer.
            g_loss = self.g_optimizer.scale_loss(losses["G"] / replicas)
            if adversarial:
                pooled_b = self.pool_B.query(fake_b, step)
                pooled_a = self.pool_A.query(fake_a, step)
                losses["D_A"] = self._d_loss(self.D_A, real_a, pooled_a)
                losses["D_B"] = self._d_loss(self.D_B, real_b, pooled_b)
                d_loss = self.d_optimizer.scale_loss((losses["D_A"] + losses["D_B"]) / replicas)
        g_vars, d_vars = self.generator_variables, self.discriminator_variables
        self.g_optimizer.apply(tape.gradient(g_loss, g_vars), g_vars)
        if adversarial:
            self.d_optimizer.apply(tape.gradient(d_loss, d_vars), d_vars)
        del tape
        for name, tracker in self.trackers.items():
            tracker.update_state(losses[name])
        return {name: tracker.result() for name, tracker in self.trackers.items()}

    @staticmethod
    def _d_loss(discriminator: keras.Model, real, fake):
        real_loss = _mse(discriminator(real, training=True), 1.0)
        fake_loss = _mse(discriminator(ops.stop_gradient(fake), training=True), 0.0)
        return 0.5 * (real_loss + fake_loss)


def _mse(prediction, target: float):
    """LSGAN loss against a constant label."""
    return ops.mean(ops.square(ops.cast(prediction, "float32") - target))


def _l1(a, b):
    return ops.mean(ops.abs(ops.cast(a, "float32") - ops.cast(b, "float32")))


def pyramid_l1(prediction, target, levels: int):
    """Mean L1 over a Gaussian pyramid of ``levels`` levels (full resolution first).

    Adjacent sections are never registered to the pixel. Plain L1 punishes a
    pair that is a few pixels out of register on every edge, and a generator
    answers that by blurring. On a pyramid each level halves the resolution, so
    the shift shrinks with it: the coarse levels supervise where the stain goes,
    and the adversarial loss keeps the full-resolution texture sharp (as in
    Pyramid Pix2Pix, Liu et al. 2022).
    """
    x, y = ops.cast(prediction, "float32"), ops.cast(target, "float32")
    total = _l1(x, y)
    for _ in range(levels - 1):
        x, y = _blur_half(x), _blur_half(y)
        total = total + _l1(x, y)
    return total / levels


def _blur_half(images):
    """A 5-tap binomial blur, then every second pixel: one step down a Gaussian pyramid."""
    taps = ops.convert_to_tensor([1.0, 4.0, 6.0, 4.0, 1.0]) / 16.0
    channels = images.shape[-1]
    kernel = ops.tile(ops.reshape(ops.outer(taps, taps), (5, 5, 1, 1)), (1, 1, channels, 1))
    # Reflected borders: zeros would darken the edges of every coarser level.
    padded = ops.pad(images, [[0, 0], [2, 2], [2, 2], [0, 0]], mode="reflect")
    return ops.depthwise_conv(padded, kernel, strides=2, padding="valid")
