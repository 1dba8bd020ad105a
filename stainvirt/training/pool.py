"""The reference's image pool: discriminators see a history of fakes, not only the newest.

Shrivastava et al. (2017), as in the reference ``util/image_pool.py``: until the
pool is full each fake is stored and passed on; after that, each fake has an
even chance of being passed on as is, or of being swapped for a stored one
(which it replaces).
"""

from __future__ import annotations

import tensorflow as tf


class ImagePool(tf.Module):
    """A pool of past generated images held in (checkpointed) variables.

    The variables are per replica under ``tf.distribute`` (each replica keeps its
    own history, like each process of the reference), and randomness is
    stateless, drawn from ``(seed, step, replica)``, so a resumed run makes the
    same choices.

    Args:
        size: images kept (0: the pool passes images through).
        image_shape: ``(H, W, C)`` of one image.
        seed: seeds the swap decisions.
    """

    def __init__(self, size: int, image_shape: tuple[int, int, int], seed: int, name: str) -> None:
        super().__init__(name=name)
        self.size, self.seed = size, seed
        local = dict(
            trainable=False,
            synchronization=tf.VariableSynchronization.ON_READ,
            aggregation=tf.VariableAggregation.ONLY_FIRST_REPLICA,
        )
        self.images = tf.Variable(tf.zeros((max(size, 1), *image_shape)), name="images", **local)
        self.count = tf.Variable(0, dtype=tf.int32, name="count", **local)

    @property
    def state(self) -> list[tf.Variable]:
        """The variables a checkpoint must hold."""
        return [self.images, self.count]

    def query(self, images: tf.Tensor, step: tf.Tensor) -> tf.Tensor:
        """Return a batch for the discriminator and update the pool.

        Args:
            images: ``(B, H, W, C)`` fakes, B known statically.
            step: the global step (an int tensor), for the random choices.
        """
        if self.size == 0:
            return images
        images = tf.stop_gradient(tf.cast(images, self.images.dtype))
        replica = tf.distribute.get_replica_context()
        replica_id = tf.cast(replica.replica_id_in_sync_group if replica else 0, tf.int64)
        # Work on tensors and assign once: per-replica variables allow only assign.
        pool, count = self.images.read_value(), self.count.read_value()
        out = []
        for i in range(images.shape[0]):
            seed = tf.stack([tf.cast(step, tf.int64) * 1024 + i, replica_id * 1000003 + self.seed])
            coin, pick = tf.unstack(tf.random.stateless_uniform([2], seed=seed))
            slot = tf.minimum(tf.cast(pick * self.size, tf.int32), self.size - 1)
            filling = count < self.size
            swap = tf.logical_and(tf.logical_not(filling), coin > 0.5)
            # gather, not pool[slot]: a tensor slice index makes XLA recompile every step.
            old = tf.gather(pool, slot)
            where = tf.where(filling, count, slot)
            new = tf.where(tf.logical_or(filling, swap), images[i], old)
            pool = tf.tensor_scatter_nd_update(pool, [[where]], [new])
            count = tf.minimum(count + 1, self.size)
            out.append(tf.where(swap, old, images[i]))
        self.images.assign(pool)
        self.count.assign(count)
        return tf.stack(out)
