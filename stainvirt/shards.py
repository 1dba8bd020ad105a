"""Writing a prepared data set: tiles buffered per split, flushed into bounded shards.

The format is :mod:`stainvirt.dataset`'s (which reads it back). Tiles are
buffered up to a number of bytes of pixels, so memory stays bounded however
many images there are; each flush writes one compressed ``.npz`` to a
temporary file, and :meth:`ShardWriter.commit` moves them all into place at the
end (``NAME.npz``, or ``NAME-00000.npz``, ... when there are several), so a
failed run leaves the previous data set as it was.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import NamedTuple

import numpy as np

from stainvirt.dataset import PAIR_SPLITS, SPLITS, dataset_files, shard_path
from stainvirt.domain import domains_from
from stainvirt.errors import StainvirtError
from stainvirt.io.atomic import temp_beside


class Tile(NamedTuple):
    """One tile and where it came from (level-0 ``y``, ``x``), as the writer takes it."""

    split: str
    pixels: np.ndarray
    source: str
    y: int
    x: int


class ShardWriter:
    """Buffers tiles per split and writes a shard whenever the buffer is full."""

    def __init__(self, out: Path, shard_bytes: int, settings: dict) -> None:
        self.out = out
        self.shard_bytes = shard_bytes
        self.settings = settings
        self.temp_files: list[Path] = []
        self.counts = dict.fromkeys(SPLITS, 0)
        self.pair_counts = dict.fromkeys(PAIR_SPLITS, 0)
        self._reset()

    def _reset(self) -> None:
        self.tiles: dict[str, list[np.ndarray]] = {s: [] for s in SPLITS}
        self.sources: dict[str, list[str]] = {s: [] for s in SPLITS}
        self.positions: dict[str, list[tuple[int, int]]] = {s: [] for s in SPLITS}
        self.pairs: dict[str, list[tuple[int, int]]] = {s: [] for s in PAIR_SPLITS}
        self.buffered = 0

    def add(self, tile: Tile) -> None:
        self._append(tile)
        self._flush_if_full()

    def add_pair(self, a: Tile, b: Tile) -> None:
        """Both tiles of a registered pair, into one shard (pairs index a shard's own tiles)."""
        split = a.split.removesuffix("A")
        self.pairs[split].append((len(self.tiles[a.split]), len(self.tiles[b.split])))
        self.pair_counts[split] += 1
        self._append(a)
        self._append(b)
        self._flush_if_full()

    def _append(self, tile: Tile) -> None:
        # A copy, so the whole image can be freed.
        self.tiles[tile.split].append(tile.pixels.copy())
        self.sources[tile.split].append(tile.source)
        self.positions[tile.split].append((tile.y, tile.x))
        self.counts[tile.split] += 1
        self.buffered += tile.pixels.nbytes

    def _flush_if_full(self) -> None:
        if self.buffered >= self.shard_bytes:
            self.flush()

    def flush(self) -> None:
        if not self.buffered and self.temp_files:
            return
        tile_size = self.settings["tile_size"]
        domains = domains_from(self.settings)
        arrays: dict[str, np.ndarray] = {}
        for split in SPLITS:
            tiles, domain = self.tiles[split], domains[split[-1]]
            # Even an empty split has its domain's channels and type: loading checks every shard.
            empty = np.zeros((0, tile_size, tile_size, domain.channels), domain.dtype)
            arrays[split] = np.stack(tiles) if tiles else empty
            arrays[f"{split}_source"] = np.array(self.sources[split], dtype=str)
            arrays[f"{split}_position"] = np.array(
                self.positions[split], dtype=np.int32
            ).reshape(-1, 2)
        for split in PAIR_SPLITS:
            arrays[f"{split}_pairs"] = np.array(self.pairs[split], dtype=np.int32).reshape(-1, 2)
        settings = {**self.settings, "shard_index": len(self.temp_files)}
        arrays["settings"] = np.array(json.dumps(settings))
        tmp = temp_beside(self.out)
        self.temp_files.append(tmp)
        self._reset()
        try:
            np.savez_compressed(tmp, **arrays)
        except OSError as exc:
            raise StainvirtError(f"{self.out}: cannot write ({exc.strerror})") from exc

    def commit(self) -> list[Path]:
        """Move the finished shards into place and remove stale ones from earlier runs."""
        if len(self.temp_files) == 1:
            targets = [self.out]
        else:
            targets = [shard_path(self.out, i) for i in range(len(self.temp_files))]
        try:
            stale = set(dataset_files(self.out))
        except StainvirtError:
            stale = set()
        for tmp, target in zip(self.temp_files, targets, strict=True):
            os.replace(tmp, target)
        for old in stale - set(targets):
            old.unlink(missing_ok=True)
        self.temp_files = []
        return targets

    def discard(self) -> None:
        for tmp in self.temp_files:
            tmp.unlink(missing_ok=True)
