"""The reference learning-rate policy: constant, then linear decay towards zero.

Driven by the optimizer's own step counter, which the checkpoint saves, so a
resumed run continues at exactly the learning rate it stopped at.
"""

from __future__ import annotations

import keras
from keras import ops


@keras.saving.register_keras_serializable(package="stainvirt")
class LinearDecay(keras.optimizers.schedules.LearningRateSchedule):
    """``lr * (1 - max(0, epoch + 1 - epochs) / (epochs_decay + 1))`` per 0-based epoch.

    This is the reference's ``lambda_rule`` (``--lr_policy linear``) with the
    epoch taken as ``step // steps_per_epoch``.

    Args:
        lr: initial learning rate.
        epochs: epochs at the constant rate.
        epochs_decay: epochs of linear decay that follow.
        steps_per_epoch: optimizer steps per epoch.
    """

    def __init__(self, lr: float, epochs: int, epochs_decay: int, steps_per_epoch: int) -> None:
        self.lr = float(lr)
        self.epochs = int(epochs)
        self.epochs_decay = int(epochs_decay)
        self.steps_per_epoch = int(steps_per_epoch)

    def __call__(self, step):
        epoch = ops.floor_divide(ops.cast(step, "int64"), self.steps_per_epoch)
        past = ops.maximum(0.0, ops.cast(epoch + 1 - self.epochs, "float32"))
        return self.lr * (1.0 - past / float(self.epochs_decay + 1))

    def get_config(self) -> dict:
        return {
            "lr": self.lr,
            "epochs": self.epochs,
            "epochs_decay": self.epochs_decay,
            "steps_per_epoch": self.steps_per_epoch,
        }
