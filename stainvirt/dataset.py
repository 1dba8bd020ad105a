"""The prepared data set: one compressed ``.npz`` (or numbered shards) of tiles.

Layout of every file (written by :mod:`stainvirt.prepare`):

- ``trainA``, ``trainB``, ``testA``, ``testB``: ``(N, H, W, C)`` tiles: uint8 RGB
  (C = 3) unless ``settings["domains"]`` says otherwise (:class:`~stainvirt.domain.Domain`:
  per domain A and B, the channel count C, the pixel type uint8, uint16 or
  float32, and the intensity range that maps to the networks' [-1, 1]).
- ``<split>_source``: the file each tile came from, relative to its input folder.
- ``<split>_position``: ``(N, 2)`` int32 ``(y, x)`` of the tile's top-left corner.
- ``train_pairs``, ``test_pairs``: ``(P, 2)`` int32 ``(index into trainA, index into
  trainB)`` (resp. ``testA``/``testB``) of registered tile pairs (``prepare
  --paired``), indices into the same file; ``(0, 2)`` when unpaired. Data sets
  written before pairs existed lack them and load with no pairs.
- ``settings``: JSON text of the settings that made it, with ``domains`` (absent: RGB).

A data set too large for one file is written as ``NAME-00000.npz``,
``NAME-00001.npz``, ... beside where ``NAME.npz`` would be; :func:`load_prepared`
reads either form when given ``NAME.npz``.
"""

from __future__ import annotations

import hashlib
import json
import re
import zipfile
import zlib
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from stainvirt.domain import Domain, domains_from
from stainvirt.errors import StainvirtError

SPLITS = ("trainA", "trainB", "testA", "testB")
PAIR_SPLITS = ("train", "test")
"""Pairs join ``<split>A`` with ``<split>B``; stored as ``<split>_pairs``."""


def no_pairs() -> np.ndarray:
    """An empty ``(0, 2)`` int32 array of pairs."""
    return np.zeros((0, 2), np.int32)


@dataclass
class PreparedData:
    """Tiles and their provenance, per split (``trainA``, ``trainB``, ``testA``, ``testB``)."""

    tiles: dict[str, np.ndarray]
    sources: dict[str, np.ndarray]
    positions: dict[str, np.ndarray]
    settings: dict[str, Any] = field(default_factory=dict)
    pairs: dict[str, np.ndarray] = field(
        default_factory=lambda: {split: no_pairs() for split in PAIR_SPLITS}
    )
    """Per ``train``/``test``: ``(P, 2)`` int32 ``(index into <split>A, index into
    <split>B)`` of registered tile pairs, over the whole data set; empty when unpaired."""

    @property
    def domains(self) -> dict[str, Domain]:
        """``{"A": Domain, "B": Domain}``: channels, pixel type and range (RGB if unrecorded)."""
        return domains_from(self.settings)

    def counts(self) -> dict[str, int]:
        """Number of tiles per split."""
        return {split: len(self.tiles[split]) for split in SPLITS}

    def fingerprint(self) -> str:
        """A hash of every tile and its provenance: equal exactly when the content is.

        Hashes the arrays rather than the files, whose zip headers carry write times,
        so packing the same images again gives the same fingerprint. Pairs count
        only when there are some, so unpaired data sets keep the fingerprint they
        had before pairs existed (runs record it to notice a changed data set).
        """
        digest = hashlib.blake2b(digest_size=16)
        named = [(split, array) for split in SPLITS
                 for array in (self.tiles[split], self.sources[split], self.positions[split])]
        named += [(f"{split}_pairs", self.pairs[split]) for split in PAIR_SPLITS
                  if len(self.pairs[split])]
        for name, array in named:
            digest.update(f"{name}{array.dtype.str}{array.shape}".encode())
            digest.update(np.ascontiguousarray(array).data)
        return digest.hexdigest()


def shard_path(out: str | Path, index: int) -> Path:
    """Path of shard ``index`` for the data set named by ``out`` (``NAME.npz``)."""
    out = Path(out)
    return out.with_name(f"{out.stem}-{index:05d}.npz")


def dataset_files(path: str | Path) -> list[Path]:
    """The file(s) holding the data set named ``path``: itself, or its numbered shards.

    Raises:
        StainvirtError: if neither exists or the shard numbers have gaps.
    """
    path = Path(path)
    if path.is_file():
        return [path]
    pattern = re.compile(re.escape(path.stem) + r"-(\d{5})\.npz$")
    shards = sorted(p for p in path.parent.glob(f"{path.stem}-*.npz") if pattern.match(p.name))
    if not shards:
        raise StainvirtError(
            f"{path}: data set not found; create it with 'stainvirt prepare' "
            "(or 'make prepare-data')"
        )
    numbers = [int(pattern.match(p.name).group(1)) for p in shards]
    if numbers != list(range(len(shards))):
        raise StainvirtError(
            f"{path}: shards are incomplete (found numbers {numbers}); "
            "run 'stainvirt prepare' again"
        )
    return shards


READ_ERRORS = (zipfile.BadZipFile, zlib.error, OSError, ValueError, EOFError)
"""What numpy and zipfile raise on a truncated or damaged ``.npz``."""


@contextmanager
def reading(file: Path) -> Iterator[None]:
    """Turn a failure to read the data set ``file`` into one line: it is corrupt, prepare again."""
    try:
        yield
    except READ_ERRORS as exc:
        raise StainvirtError(
            f"{file}: cannot read ({exc}); the file is corrupt, run 'stainvirt prepare' again"
        ) from exc


def load_prepared(path: str | Path, splits: tuple[str, ...] = SPLITS) -> PreparedData:
    """Load a prepared data set (single ``.npz`` or its shards) into memory.

    Args:
        path: the ``.npz`` that ``stainvirt prepare --out`` was given.
        splits: which splits to load (others come back empty, as do the pairs
            of a split whose A or B tiles are not loaded).

    Raises:
        StainvirtError: if a file is missing, not an ``.npz``, or lacks the arrays.
    """
    parts: dict[str, list[np.ndarray]] = {f"{s}{k}": [] for s in splits for k in ("", "_s", "_p")}
    paired = [p for p in PAIR_SPLITS if f"{p}A" in splits and f"{p}B" in splits]
    pairs: dict[str, list[np.ndarray]] = {p: [] for p in paired}
    settings: dict[str, Any] = {}
    for file in dataset_files(path):
        with reading(file), np.load(file, allow_pickle=False) as npz:
            missing = [s for s in SPLITS if s not in npz.files]
            if missing:
                raise StainvirtError(
                    f"{file}: not a stainvirt data set (missing arrays {', '.join(missing)}); "
                    "create it with 'stainvirt prepare'"
                )
            if "settings" in npz.files:
                settings = json.loads(str(npz["settings"]))
            for split in paired:
                # Shards index their own tiles: offset by the tiles of earlier shards.
                offset = [sum(map(len, parts[f"{split}{d}"])) for d in "AB"]
                local = _optional(npz, f"{split}_pairs", no_pairs())
                pairs[split].append(local.astype(np.int32) + np.array(offset, np.int32))
            domains = domains_from(settings)
            for split in splits:
                tiles = npz[split]
                check_tiles(file, split, tiles.shape, tiles.dtype, domains[split[-1]])
                parts[split].append(tiles)
                n = len(tiles)
                parts[f"{split}_s"].append(_optional(npz, f"{split}_source", np.full(n, "")))
                parts[f"{split}_p"].append(
                    _optional(npz, f"{split}_position", np.zeros((n, 2), np.int32))
                )
    domains = domains_from(settings)
    empty = {d: np.zeros((0, 1, 1, domains[d].channels), domains[d].dtype) for d in "AB"}
    return PreparedData(
        tiles={s: join_shards(parts.get(s), empty[s[-1]]) for s in SPLITS},
        sources={s: join_shards(parts.get(f"{s}_s"), np.zeros(0, str)) for s in SPLITS},
        positions={s: join_shards(parts.get(f"{s}_p"), np.zeros((0, 2), np.int32)) for s in SPLITS},
        settings=settings,
        pairs={s: join_shards(pairs.get(s), no_pairs()) for s in PAIR_SPLITS},
    )


def check_tiles(
    file: Path, split: str, shape: tuple[int, ...], dtype: Any, domain: Domain
) -> None:
    """Refuse a split whose tiles are not ``(N, H, W, C)`` of its domain's channels and type.

    Raises:
        StainvirtError: naming the file, the array, and what was expected.
    """
    if np.dtype(dtype) != np.dtype(domain.dtype) or len(shape) != 4 or shape[-1] != domain.channels:
        raise StainvirtError(
            f"{file}: array {split} has shape {tuple(shape)} and type {np.dtype(dtype)}; "
            f"expected (N, H, W, {domain.channels}) {domain.dtype}; run 'stainvirt prepare' again"
        )


def _optional(npz: Any, key: str, default: np.ndarray) -> np.ndarray:
    return npz[key] if key in npz.files else default


def join_shards(arrays: list[np.ndarray] | None, empty: np.ndarray) -> np.ndarray:
    """The shards' parts of one array joined (empty parts left out), or ``empty`` if none.

    How every reader joins shards, so that fingerprints hash the same bytes.
    """
    arrays = [a for a in arrays or [] if len(a)]
    if not arrays:
        return empty
    return arrays[0] if len(arrays) == 1 else np.concatenate(arrays)
