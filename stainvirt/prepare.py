"""Pack folders of unpaired domain A (H&E) and B (IHC) images into a compressed ``.npz``.

Images are cut into non-overlapping ``tile_size`` squares from the top-left
corner (a remainder narrower than a tile is dropped); tiles that fail the tissue
test (:mod:`stainvirt.tissue`) are skipped as background. Images smaller than a
tile are an error: pass a smaller ``tile_size``. Tiles are buffered up to
``shard_mb`` of pixels, so memory stays bounded however many images there are;
a data set larger than that becomes numbered shards (see :mod:`stainvirt.dataset`).

Example:
    >>> from stainvirt.prepare import prepare
    >>> summary = prepare("data/sample/trainA", "data/sample/trainB", "data/stain.npz",
    ...                   test_a="data/sample/testA", test_b="data/sample/testB")
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from tqdm.auto import tqdm

from stainvirt import __version__
from stainvirt.dataset import SPLITS, dataset_files, shard_path
from stainvirt.errors import StainvirtError
from stainvirt.io.atomic import temp_beside, writable_folder
from stainvirt.io.images import list_images, read_image
from stainvirt.tissue import DEFAULT_MIN_TISSUE, is_tissue

log = logging.getLogger("stainvirt")

DEFAULT_SHARD_MB = 1024


@dataclass
class PrepareSummary:
    """What :func:`prepare` wrote."""

    counts: dict[str, int]
    background_skipped: int
    bad_files: list[str]
    outputs: list[Path]
    bytes_written: int = 0
    settings: dict = field(default_factory=dict)

    def line(self) -> str:
        """One-line human summary."""
        counts = ", ".join(f"{s} {n}" for s, n in self.counts.items())
        where = self.outputs[0] if len(self.outputs) == 1 else f"{len(self.outputs)} shards"
        bad = f", {len(self.bad_files)} bad files skipped" if self.bad_files else ""
        return (
            f"tiles: {counts}; {self.background_skipped} background tiles skipped{bad}; "
            f"wrote {where} ({self.bytes_written / 1e6:.1f} MB)"
        )


def tiles_of(rgb: np.ndarray, tile_size: int) -> Iterator[tuple[int, int, np.ndarray]]:
    """Yield ``(y, x, tile)`` for the non-overlapping tiles of an image, row by row."""
    height, width = rgb.shape[:2]
    for y in range(0, height - tile_size + 1, tile_size):
        for x in range(0, width - tile_size + 1, tile_size):
            yield y, x, rgb[y : y + tile_size, x : x + tile_size]


def split_files(files: list[Path], fraction: float, seed: int) -> tuple[list[Path], list[Path]]:
    """Split files (not tiles, so neighbouring tiles never straddle train and test).

    Returns:
        ``(train, test)``; ``test`` holds ``round(fraction * n)`` files, at least one
        when ``fraction > 0`` and there are two files or more, never all of them.
    """
    if fraction <= 0 or len(files) < 2:
        return list(files), []
    n_test = min(max(1, round(fraction * len(files))), len(files) - 1)
    order = np.random.default_rng(seed).permutation(len(files))
    test = set(order[:n_test].tolist())
    return (
        [f for i, f in enumerate(files) if i not in test],
        [f for i, f in enumerate(files) if i in test],
    )


class _ShardWriter:
    """Buffers tiles per split and writes a shard whenever the buffer is full."""

    def __init__(self, out: Path, shard_bytes: int, settings: dict) -> None:
        self.out = out
        self.shard_bytes = shard_bytes
        self.settings = settings
        self.temp_files: list[Path] = []
        self.counts = dict.fromkeys(SPLITS, 0)
        self._reset()

    def _reset(self) -> None:
        self.tiles: dict[str, list[np.ndarray]] = {s: [] for s in SPLITS}
        self.sources: dict[str, list[str]] = {s: [] for s in SPLITS}
        self.positions: dict[str, list[tuple[int, int]]] = {s: [] for s in SPLITS}
        self.buffered = 0

    def add(self, split: str, tile: np.ndarray, source: str, y: int, x: int) -> None:
        self.tiles[split].append(tile.copy())  # a copy, so the whole image can be freed
        self.sources[split].append(source)
        self.positions[split].append((y, x))
        self.counts[split] += 1
        self.buffered += tile.nbytes
        if self.buffered >= self.shard_bytes:
            self.flush()

    def flush(self) -> None:
        if not self.buffered and self.temp_files:
            return
        tile_size = self.settings["tile_size"]
        arrays: dict[str, np.ndarray] = {}
        for split in SPLITS:
            tiles = self.tiles[split]
            arrays[split] = (
                np.stack(tiles) if tiles else np.zeros((0, tile_size, tile_size, 3), np.uint8)
            )
            arrays[f"{split}_source"] = np.array(self.sources[split], dtype=str)
            arrays[f"{split}_position"] = np.array(
                self.positions[split], dtype=np.int32
            ).reshape(-1, 2)
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


def prepare(
    a: str | Path,
    b: str | Path,
    out: str | Path,
    *,
    test_a: str | Path | None = None,
    test_b: str | Path | None = None,
    test_fraction: float = 0.1,
    tile_size: int = 256,
    min_tissue: float = DEFAULT_MIN_TISSUE,
    seed: int = 0,
    skip_bad: bool = False,
    shard_mb: float = DEFAULT_SHARD_MB,
    progress: bool = True,
) -> PrepareSummary:
    """Pack unpaired A and B images into ``out`` (a compressed ``.npz``, or shards).

    Args:
        a: folder of domain A (H&E) images, read recursively.
        b: folder of domain B (IHC) images, read recursively.
        out: the ``.npz`` to write (atomically; shards are named ``NAME-00000.npz``...).
        test_a: folder of held-out A images; if None, ``test_fraction`` of A's files.
        test_b: folder of held-out B images; if None, ``test_fraction`` of B's files.
        test_fraction: share of files (not tiles) held out when no test folder is given.
        tile_size: side of the square tiles.
        min_tissue: fraction of tissue pixels a tile needs to be kept (0 keeps all).
        seed: seeds the train/test split of files.
        skip_bad: skip unreadable images (listed in the summary) instead of stopping.
        shard_mb: pixels buffered per output file, in MB (bounds memory use).
        progress: show a progress bar.

    Returns:
        A :class:`PrepareSummary` of what was written.

    Raises:
        StainvirtError: for missing or empty folders, unreadable images (unless
            ``skip_bad``), images smaller than a tile, no tissue found, or an
            output that cannot be written.
    """
    if tile_size < 8:
        raise StainvirtError(f"--tile-size {tile_size} is too small; use 8 or more (e.g. 256)")
    if not 0 <= test_fraction < 1:
        raise StainvirtError(f"--test-fraction {test_fraction} must be in [0, 1)")
    out = Path(out)
    if out.suffix != ".npz":
        raise StainvirtError(f"{out}: the output must be a .npz file name")
    writable_folder(out.parent)

    inputs = {"trainA": Path(a), "trainB": Path(b), "testA": test_a, "testB": test_b}
    jobs: list[tuple[str, Path, Path]] = []  # (split, root folder, file)
    for domain, fallback_seed in (("A", seed), ("B", seed + 1)):
        files = list_images(inputs[f"train{domain}"])
        test_root = inputs[f"test{domain}"]
        if test_root is None:
            train, test = split_files(files, test_fraction, fallback_seed)
            test_root = inputs[f"train{domain}"]
        else:
            train, test = files, list_images(test_root)
        jobs += [(f"train{domain}", inputs[f"train{domain}"], f) for f in train]
        jobs += [(f"test{domain}", Path(test_root), f) for f in test]

    settings = {
        "tile_size": tile_size,
        "min_tissue": min_tissue,
        "test_fraction": None if test_a and test_b else test_fraction,
        "seed": seed,
        "inputs": {k: (str(v) if v else None) for k, v in inputs.items()},
        "stainvirt_version": __version__,
    }
    writer = _ShardWriter(out, int(shard_mb * 1e6), settings)
    background = 0
    bad: list[str] = []
    try:
        bar = tqdm(jobs, desc="reading images", unit="img", disable=not progress)
        for split, root, file in bar:
            try:
                rgb = read_image(file)
            except StainvirtError as exc:
                if not skip_bad:
                    raise
                log.warning("skipped: %s", exc)
                bad.append(str(file))
                continue
            if min(rgb.shape[:2]) < tile_size:
                raise StainvirtError(
                    f"{file}: image is {rgb.shape[1]}x{rgb.shape[0]}, smaller than the "
                    f"{tile_size}px tile size; pass --tile-size {min(rgb.shape[:2])} or less"
                )
            source = file.relative_to(root).as_posix()
            for y, x, tile in tiles_of(rgb, tile_size):
                if min_tissue > 0 and not is_tissue(tile, min_tissue):
                    background += 1
                    continue
                writer.add(split, tile, source, y, x)
        for domain in "AB":
            if writer.counts[f"train{domain}"] == 0:
                raise StainvirtError(
                    f"{inputs[f'train{domain}']}: no tissue found (every tile was background "
                    "or unreadable); check the images or lower --min-tissue"
                )
        writer.flush()
        outputs = writer.commit()
    finally:
        writer.discard()
    return PrepareSummary(
        counts=dict(writer.counts),
        background_skipped=background,
        bad_files=bad,
        outputs=outputs,
        bytes_written=sum(p.stat().st_size for p in outputs),
        settings=settings,
    )


