"""Unpaired training batches, a pure function of (seed, global step).

Every batch is decided by the seed and the global step alone: epoch ``e``
walks a seeded permutation of domain A (as the reference's unaligned data set
does) and draws domain B independently, and each tile gets a seeded random
crop, flip and 90-degree rotation (tissue has no "up"). Resuming at step ``s``
therefore replays exactly the batches an uninterrupted run would have seen.
"""

from __future__ import annotations

from collections.abc import Iterator
from functools import lru_cache

import numpy as np
from PIL import Image

from stainvirt.config import Config
from stainvirt.errors import StainvirtError


class UnpairedSampler:
    """Deterministic, resumable batches of augmented A and B crops (uint8).

    Args:
        tiles_a: ``(N_A, H, W, 3)`` uint8 domain A tiles.
        tiles_b: ``(N_B, H, W, 3)`` uint8 domain B tiles.
        cfg: reads ``batch_size``, ``image_size``, ``load_size``, ``seed`` and
            ``steps_per_epoch``.
        steps_per_epoch: steps per epoch, overriding the config's; a resumed run
            keeps the epoch length it was recorded with, whatever the data set.
    """

    def __init__(
        self,
        tiles_a: np.ndarray,
        tiles_b: np.ndarray,
        cfg: Config,
        steps_per_epoch: int | None = None,
    ) -> None:
        for name, tiles in (("trainA", tiles_a), ("trainB", tiles_b)):
            if len(tiles) == 0:
                raise StainvirtError(
                    f"the data set has no {name} tiles; prepare it with both domains"
                )
            side = cfg.load_size or min(tiles.shape[1:3])
            if side < cfg.image_size:
                raise StainvirtError(
                    f"{name} tiles are {tiles.shape[2]}x{tiles.shape[1]}, smaller than "
                    f"--image-size {cfg.image_size}; lower --image-size or prepare larger tiles"
                )
        self.tiles_a, self.tiles_b = tiles_a, tiles_b
        self.cfg = cfg
        self.batch_size = cfg.batch_size
        self.steps_per_epoch = steps_per_epoch or cfg.steps_per_epoch or max(
            1, max(len(tiles_a), len(tiles_b)) // self.batch_size
        )
        self._order = lru_cache(maxsize=2)(self._epoch_order)

    def _epoch_order(self, epoch: int) -> tuple[np.ndarray, np.ndarray]:
        """Tile indices of A (a walk through permutations) and B (independent) for an epoch."""
        rng = np.random.default_rng([self.cfg.seed, epoch])
        need = self.steps_per_epoch * self.batch_size
        n_a = len(self.tiles_a)
        walk = np.concatenate([rng.permutation(n_a) for _ in range(-(-need // n_a))])[:need]
        return walk, rng.integers(0, len(self.tiles_b), size=need)

    def batch(self, step: int) -> tuple[np.ndarray, np.ndarray]:
        """The ``(A, B)`` uint8 batches of global step ``step``."""
        epoch, k = divmod(step, self.steps_per_epoch)
        idx_a, idx_b = self._order(epoch)
        window = slice(k * self.batch_size, (k + 1) * self.batch_size)
        rng = np.random.default_rng([self.cfg.seed, epoch, k, 1])
        return (
            np.stack([self._augment(self.tiles_a[i], rng) for i in idx_a[window]]),
            np.stack([self._augment(self.tiles_b[i], rng) for i in idx_b[window]]),
        )

    def batches(self, start_step: int = 0) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        """Batches from ``start_step`` on, forever."""
        step = start_step
        while True:
            yield self.batch(step)
            step += 1

    def _augment(self, tile: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        size, load = self.cfg.image_size, self.cfg.load_size
        if load and tile.shape[:2] != (load, load):
            tile = np.asarray(Image.fromarray(tile).resize((load, load), Image.BICUBIC))
        y = rng.integers(0, tile.shape[0] - size + 1)
        x = rng.integers(0, tile.shape[1] - size + 1)
        crop = tile[y : y + size, x : x + size]
        if rng.random() < 0.5:
            crop = crop[:, ::-1]
        return np.rot90(crop, k=rng.integers(0, 4))


def make_dataset(sampler: UnpairedSampler, start_step: int = 0):  # -> tf.data.Dataset
    """A prefetching ``tf.data`` pipeline of ``(A, B)`` float batches in [-1, 1].

    The numpy work runs in tf.data's background thread, so the train step is
    not kept waiting.
    """
    import tensorflow as tf

    size = sampler.cfg.image_size
    spec = tf.TensorSpec((sampler.batch_size, size, size, 3), tf.uint8)
    ds = tf.data.Dataset.from_generator(
        lambda: sampler.batches(start_step), output_signature=(spec, spec)
    )

    def to_float(a, b):
        return tf.cast(a, tf.float32) / 127.5 - 1.0, tf.cast(b, tf.float32) / 127.5 - 1.0

    return ds.map(to_float).prefetch(tf.data.AUTOTUNE)
