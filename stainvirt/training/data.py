"""Training batches, a pure function of (seed, global step).

Every batch is decided by the seed and the global step alone: epoch ``e``
walks a seeded permutation of domain A (as the reference's unaligned data set
does) and draws domain B independently, and each tile gets a seeded random
crop, flip and 90-degree rotation (tissue has no "up"). Where the data set has
registered pairs (``prepare --paired``), each step also draws a batch of them,
both tiles of a pair cropped, flipped and rotated alike so they stay aligned.
Resuming at step ``s`` therefore replays exactly the batches an uninterrupted
run would have seen.

Tiles stay in their stored type (uint8, uint16 or float32) and channel count
until :func:`make_dataset` scales each domain with its own intensity range.
"""

from __future__ import annotations

from collections.abc import Iterator
from functools import lru_cache

import numpy as np
from PIL import Image

from stainvirt.config import Config
from stainvirt.domain import RGB, Domain
from stainvirt.errors import StainvirtError


class UnpairedSampler:
    """Deterministic, resumable batches of augmented A and B crops, in the tiles' own type.

    Args:
        tiles_a: ``(N_A, H, W, C_A)`` domain A tiles (uint8, uint16 or float32).
        tiles_b: ``(N_B, H, W, C_B)`` domain B tiles.
        cfg: reads ``batch_size``, ``image_size``, ``load_size``, ``seed`` and
            ``steps_per_epoch``.
        steps_per_epoch: steps per epoch, overriding the config's; a resumed run
            keeps the epoch length it was recorded with, whatever the data set.
        pairs: ``(N, 2)`` indices of registered pairs ``(A tile, B tile)``; when
            given, every batch also holds a batch of aligned pairs.
    """

    def __init__(
        self,
        tiles_a: np.ndarray,
        tiles_b: np.ndarray,
        cfg: Config,
        steps_per_epoch: int | None = None,
        pairs: np.ndarray | None = None,
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
        self.pairs = None if pairs is None or not len(pairs) else np.asarray(pairs)
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

    def batch(self, step: int) -> tuple[np.ndarray, ...]:
        """The batches of global step ``step``: ``(A, B)``, then aligned pairs if any."""
        epoch, k = divmod(step, self.steps_per_epoch)
        idx_a, idx_b = self._order(epoch)
        window = slice(k * self.batch_size, (k + 1) * self.batch_size)
        rng = np.random.default_rng([self.cfg.seed, epoch, k, 1])
        batches = (
            np.stack([self._augment(self.tiles_a[i], rng=rng)[0] for i in idx_a[window]]),
            np.stack([self._augment(self.tiles_b[i], rng=rng)[0] for i in idx_b[window]]),
        )
        if self.pairs is None:
            return batches
        rng = np.random.default_rng([self.cfg.seed, epoch, k, 2])
        chosen = self.pairs[rng.integers(0, len(self.pairs), self.batch_size)]
        aligned = [self._augment(self.tiles_a[i], self.tiles_b[j], rng=rng) for i, j in chosen]
        return (*batches, np.stack([a for a, _ in aligned]), np.stack([b for _, b in aligned]))

    @property
    def arity(self) -> int:
        """How many arrays :meth:`batch` returns: 2, or 4 with pairs."""
        return 2 if self.pairs is None else 4

    def batches(self, start_step: int = 0) -> Iterator[tuple[np.ndarray, ...]]:
        """Batches from ``start_step`` on, forever."""
        step = start_step
        while True:
            yield self.batch(step)
            step += 1

    def _augment(self, *tiles: np.ndarray, rng: np.random.Generator) -> list[np.ndarray]:
        """One random crop, flip and rotation, applied alike to each tile (aligned pairs)."""
        size, load = self.cfg.image_size, self.cfg.load_size
        if load and tiles[0].shape[:2] != (load, load):
            tiles = [resize(t, load) for t in tiles]
        y = rng.integers(0, tiles[0].shape[0] - size + 1)
        x = rng.integers(0, tiles[0].shape[1] - size + 1)
        flip, turns = rng.random() < 0.5, rng.integers(0, 4)
        crops = [t[y : y + size, x : x + size] for t in tiles]
        return [np.rot90(c[:, ::-1] if flip else c, k=turns) for c in crops]


def resize(tile: np.ndarray, side: int) -> np.ndarray:
    """A ``(H, W, C)`` tile resized to ``side`` x ``side`` (bicubic), in its own type."""
    if tile.dtype == np.uint8 and tile.shape[-1] == 3:
        # PIL, as always for RGB: its results, and runs trained on them, stay bit for bit.
        return np.asarray(Image.fromarray(tile).resize((side, side), Image.BICUBIC))
    from skimage.transform import resize as spline_resize

    out = spline_resize(tile, (side, side, tile.shape[-1]), order=3, preserve_range=True)
    if tile.dtype.kind == "f":
        return out.astype(tile.dtype)
    info = np.iinfo(tile.dtype)
    # Cubic splines overshoot at edges: clip back into the type's range.
    return np.clip(np.round(out), info.min, info.max).astype(tile.dtype)


def make_dataset(
    sampler: UnpairedSampler, start_step: int = 0, domains: dict[str, Domain] | None = None
):  # -> tf.data.Dataset
    """A prefetching ``tf.data`` pipeline of the sampler's batches, as floats in [-1, 1].

    Each domain is scaled by its own intensity range (:meth:`Domain.low_half`).
    The numpy work runs in tf.data's background thread, so the train step is
    not kept waiting.

    Args:
        sampler: the batches.
        start_step: the global step of the first batch.
        domains: ``{"A": Domain, "B": Domain}`` of the tiles (None: both RGB).
    """
    import tensorflow as tf

    domains = domains or {"A": RGB, "B": RGB}
    size = sampler.cfg.image_size
    # The batches are A, B, then aligned pairs A, B.
    kinds = [domains[d] for d in "ABAB"[: sampler.arity]]
    specs = tuple(tf.TensorSpec((sampler.batch_size, size, size, k.channels), k.dtype)
                  for k in kinds)
    ds = tf.data.Dataset.from_generator(
        lambda: sampler.batches(start_step), output_signature=specs
    )

    def to_float(*batches):
        return tuple(_to_net(x, kind) for x, kind in zip(batches, kinds, strict=True))

    return ds.map(to_float).prefetch(tf.data.AUTOTUNE)


def _to_net(pixels, domain: Domain):  # tf.Tensor -> tf.Tensor
    """:meth:`Domain.to_net` in TensorFlow."""
    import tensorflow as tf

    low, half = domain.low_half()
    net = tf.clip_by_value((tf.cast(pixels, tf.float32) - low) / half - 1.0, -1.0, 1.0)
    # A float pixel without a measurement (NaN) is the range's low end, as in to_net.
    return tf.where(tf.math.is_nan(net), -1.0, net) if domain.dtype == "float32" else net
