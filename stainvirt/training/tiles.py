"""The training tiles of a prepared data set, in memory or streamed, read shard by shard.

A data set whose training tiles fit ``memory_mb`` is loaded into memory.
A larger one is unpacked once, shard by shard, into an uncompressed copy
beside it (``NAME.tiles/``: one raw file per domain), and training reads each
tile it draws from there with one positioned read: the operating system's
page cache does the caching, and the process holds a chunk of 32 MB while
unpacking and a batch while training, however many tiles there are. Either
way the sampler sees the same tiles at the same indices, so a run draws the
same batches, and resumes bitwise, whichever way its tiles are held.

The content fingerprint a run records (:meth:`PreparedData.fingerprint`) is
computed in the same pass, one array at a time; the unpacked copy keeps it
with the shard files' sizes and times, and is reused while they match.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import zipfile
from collections.abc import Iterator
from contextlib import nullcontext as _nothing
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from stainvirt.dataset import (
    PAIR_SPLITS,
    SPLITS,
    check_tiles,
    dataset_files,
    join_shards,
    no_pairs,
    reading,
)
from stainvirt.domain import Domain, domains_from
from stainvirt.errors import StainvirtError

log = logging.getLogger("stainvirt")

MEMORY_MB = 2048
"""Training tiles up to this size (both domains) are loaded into memory by default."""
SAMPLES = 2
"""Tiles per domain kept for the per-epoch sample grid."""
CHUNK_BYTES = 32 * 2**20
"""Bytes decompressed at a time: unpacking holds this much, not a shard."""
_MANIFEST = "manifest.json"
_CACHE_VERSION = 1


class TileFile:
    """``(N, H, W, C)`` tiles in a raw file, read one at a time: ``len``, ``shape``, ``[i]``.

    Args:
        path: the raw file (tiles back to back, C order).
        shape: ``(N, H, W, C)``.
        dtype: the pixel type.
    """

    def __init__(self, path: Path, shape: tuple[int, ...], dtype: str) -> None:
        self.path, self.shape, self.dtype = path, tuple(shape), np.dtype(dtype)
        self._tile_bytes = int(np.prod(self.shape[1:])) * self.dtype.itemsize
        self._file = open(path, "rb")  # noqa: SIM115 (held for the sampler's life)

    def __len__(self) -> int:
        return self.shape[0]

    def __getitem__(self, index: int) -> np.ndarray:
        if not 0 <= index < len(self):
            raise IndexError(f"tile {index} of {len(self)}")
        # pread: positioned and thread-safe, so tf.data's thread needs no lock.
        data = os.pread(self._file.fileno(), self._tile_bytes, index * self._tile_bytes)
        return np.frombuffer(data, self.dtype).reshape(self.shape[1:])


@dataclass
class TrainingTiles:
    """What training needs of a data set, without holding all of it."""

    train: dict[str, np.ndarray | TileFile]
    """``{"A": tiles, "B": tiles}``: an array, or a :class:`TileFile` when streamed."""
    pairs: np.ndarray
    """``(P, 2)`` registered training pairs (indices into A and B); empty when unpaired."""
    samples: dict[str, np.ndarray]
    """Per domain, the first test tiles (training tiles if there are no test tiles)."""
    counts: dict[str, int]
    settings: dict[str, Any]
    fingerprint: str
    streamed: bool

    @property
    def domains(self) -> dict[str, Domain]:
        """``{"A": Domain, "B": Domain}`` as the data set records them."""
        return domains_from(self.settings)


def open_training_tiles(
    path: str | Path, memory_mb: float = MEMORY_MB, cache: Path | None = None
) -> TrainingTiles:
    """The training tiles of the data set ``path``, in memory or streamed from an unpacked copy.

    Args:
        path: the ``.npz`` that ``stainvirt prepare --out`` was given (or its shards' name).
        memory_mb: load the training tiles into memory up to this many megabytes.
        cache: folder for the unpacked copy (default ``NAME.tiles`` beside the data set).

    Raises:
        StainvirtError: for a missing, corrupt or inconsistent data set, or an
            unpacked copy that cannot be written.
    """
    path = Path(path)
    files = dataset_files(path)
    headers = [_headers(file) for file in files]
    settings = _settings(files[-1])
    domains = domains_from(settings)
    for file, header in zip(files, headers, strict=True):
        for split in SPLITS:
            shape, dtype = header[split]
            check_tiles(file, split, shape, dtype, domains[split[-1]])
    train_bytes = sum(int(np.prod(h[s][0])) * np.dtype(h[s][1]).itemsize
                      for h in headers for s in ("trainA", "trainB"))
    streamed = train_bytes > memory_mb * 2**20
    cache = cache or path.with_name(f"{path.stem}.tiles")
    stamp = [[f.name, f.stat().st_size, f.stat().st_mtime_ns] for f in files]
    if streamed:
        manifest = _read_manifest(cache)
        if manifest is not None and manifest["files"] == stamp:
            return _from_cache(cache, manifest, files, settings)
    return _read_all(files, headers, settings, cache if streamed else None, stamp)


def _headers(file: Path) -> dict[str, tuple[tuple[int, ...], str]]:
    """``{array name: (shape, dtype)}`` of an ``.npz`` from its headers, decompressing nothing."""
    out = {}
    with reading(file), zipfile.ZipFile(file) as zf:
        for name in zf.namelist():
            with zf.open(name) as member:
                shape, _, dtype = _array_header(member)
            out[name.removesuffix(".npy")] = (shape, dtype.str)
    missing = [s for s in SPLITS if s not in out]
    if missing:
        raise StainvirtError(
            f"{file}: not a stainvirt data set (missing arrays {', '.join(missing)}); "
            "create it with 'stainvirt prepare'"
        )
    return out


def _settings(file: Path) -> dict[str, Any]:
    with np.load(file, allow_pickle=False) as npz:
        return json.loads(str(npz["settings"])) if "settings" in npz.files else {}


def _read_all(
    files: list[Path], headers: list[dict], settings: dict, cache: Path | None, stamp: list
) -> TrainingTiles:
    """One pass over every array: fingerprint, samples, and the training tiles kept or unpacked."""
    domains = domains_from(settings)
    digest = hashlib.blake2b(digest_size=16)
    train: dict[str, Any] = {}
    samples: dict[str, np.ndarray] = {}
    counts: dict[str, int] = {}
    build = cache.with_name(f".{cache.name}.tmp-{os.getpid()}") if cache else None
    if build:
        _remove_stale_builds(cache)
    try:
        if build:
            build.mkdir(parents=True)
        for split in SPLITS:
            sink = build / f"{split}.raw" if build and split.startswith("train") else None
            shape, kept, first = _pass_split(files, headers, split, domains[split[-1]], digest,
                                             sink)
            if split.startswith("train"):
                train[split[-1]] = shape if sink else kept
            counts[split] = shape[0]
            samples[split] = first
            _hash_provenance(digest, split, files, headers)
        pairs = _pairs(files, headers)
        for split in PAIR_SPLITS:
            if len(pairs[split]):
                digest.update(f"{split}_pairs{pairs[split].dtype.str}{pairs[split].shape}"
                              .encode())
                digest.update(np.ascontiguousarray(pairs[split]).data)
        fingerprint = digest.hexdigest()
        if build:
            manifest = {"version": _CACHE_VERSION, "files": stamp, "fingerprint": fingerprint,
                        "counts": counts, "train": {d: list(s) for d, s in train.items()}}
            np.savez(build / "small.npz", pairs=pairs["train"],
                     **{f"samples_{s}": a for s, a in samples.items()})
            (build / _MANIFEST).write_text(json.dumps(manifest))
            _move_into_place(build, cache)
            log.info("unpacked the training tiles into %s (%.1f GB), streamed from there",
                     cache, sum(f.stat().st_size for f in cache.iterdir()) / 1e9)
            return _from_cache(cache, manifest, files, settings)
    except OSError as exc:  # reads fail as StainvirtError: this is writing the copy
        raise StainvirtError(
            f"{cache}: cannot write the unpacked copy of the data set ({exc.strerror or exc}); "
            "free space there, or pass a larger --memory-mb to hold the tiles in memory"
        ) from exc
    finally:
        if build and build.exists():
            shutil.rmtree(build, ignore_errors=True)
    return TrainingTiles(train, pairs["train"], _samples(samples), counts, settings,
                         fingerprint, streamed=False)


def _pass_split(
    files: list[Path], headers: list[dict], split: str, domain: Domain, digest: Any,
    sink: Path | None,
) -> tuple[tuple[int, ...], np.ndarray | None, np.ndarray]:
    """Hash a split's tiles chunk by chunk, keeping them in memory or writing them to ``sink``.

    Returns:
        ``(shape of the whole split, its tiles if kept, its first SAMPLES tiles)``.
    """
    sizes = [h[split][0] for h in headers if h[split][0][0]]
    shape = (sum(s[0] for s in sizes), *sizes[0][1:]) if sizes else (0, 1, 1, domain.channels)
    # The header load_prepared's concatenation would give, so fingerprints agree.
    digest.update(f"{split}{np.dtype(domain.dtype).str}{shape}".encode())
    keep = sink is None and split.startswith("train")
    # Filled in place: no shard and its copy are ever held together.
    kept = np.empty(shape, domain.dtype) if keep else None
    into = kept.reshape(-1).view(np.uint8) if keep else None
    tile_bytes = int(np.prod(shape[1:])) * np.dtype(domain.dtype).itemsize
    first, done = bytearray(), 0
    with open(sink, "wb") if sink else _nothing() as out:
        for file in files:
            for chunk in _chunks(file, split):
                digest.update(chunk)
                first += chunk[: max(0, SAMPLES * tile_bytes - len(first))]
                if out:
                    out.write(chunk)
                elif keep:
                    into[done : done + len(chunk)] = np.frombuffer(chunk, np.uint8)
                done += len(chunk)
    samples = np.frombuffer(bytes(first), domain.dtype).reshape(-1, *shape[1:])
    return shape, kept, samples


def _chunks(file: Path, name: str) -> Iterator[bytes]:
    """The raw bytes of array ``name`` of an ``.npz``, decompressed a chunk at a time."""
    with reading(file), zipfile.ZipFile(file) as zf, zf.open(f"{name}.npy") as member:
        if _array_header(member)[1]:
            raise ValueError(f"array {name} is stored in Fortran order")
        while chunk := member.read(CHUNK_BYTES):
            yield chunk


def _array_header(member: Any) -> tuple[tuple[int, ...], bool, np.dtype]:
    """Shape, Fortran order and dtype from the ``.npy`` header at the start of ``member``."""
    version = np.lib.format.read_magic(member)
    read = (np.lib.format.read_array_header_1_0 if version == (1, 0)
            else np.lib.format.read_array_header_2_0)
    return read(member)


def _optional(file: Path, name: str, default: np.ndarray) -> np.ndarray:
    with np.load(file, allow_pickle=False) as npz:
        return npz[name] if name in npz.files else default


def _hash_provenance(digest: Any, split: str, files: list[Path], headers: list[dict]) -> None:
    """Sources and positions of a split, hashed as :meth:`PreparedData.fingerprint` does."""
    sources, positions = [], []
    for file, header in zip(files, headers, strict=True):
        n = header[split][0][0]
        sources.append(_optional(file, f"{split}_source", np.full(n, "")))
        positions.append(_optional(file, f"{split}_position", np.zeros((n, 2), np.int32)))
    for array in (join_shards(sources, np.zeros(0, str)),
                  join_shards(positions, np.zeros((0, 2), np.int32))):
        digest.update(f"{split}{array.dtype.str}{array.shape}".encode())
        digest.update(np.ascontiguousarray(array).data)


def _pairs(files: list[Path], headers: list[dict]) -> dict[str, np.ndarray]:
    """Registered pairs over the whole data set: each shard's, offset by earlier shards' tiles."""
    out = {}
    for split in PAIR_SPLITS:
        parts, offset = [], np.zeros(2, np.int64)
        for file, header in zip(files, headers, strict=True):
            local = _optional(file, f"{split}_pairs", no_pairs())
            parts.append(local.astype(np.int32) + offset.astype(np.int32))
            offset += [header[f"{split}A"][0][0], header[f"{split}B"][0][0]]
        out[split] = join_shards(parts, no_pairs())
    return out


def _samples(per_split: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    return {d: per_split[f"test{d}"] if len(per_split[f"test{d}"]) else per_split[f"train{d}"]
            for d in "AB"}


def _read_manifest(cache: Path) -> dict | None:
    try:
        manifest = json.loads((cache / _MANIFEST).read_text())
    except (OSError, ValueError):
        return None
    return manifest if manifest.get("version") == _CACHE_VERSION else None


def _from_cache(cache: Path, manifest: dict, files: list[Path], settings: dict) -> TrainingTiles:
    domains = domains_from(settings)
    with np.load(cache / "small.npz") as small:
        pairs = small["pairs"]
        samples = {s.removeprefix("samples_"): small[s] for s in small.files
                   if s.startswith("samples_")}
    train = {d: TileFile(cache / f"train{d}.raw", tuple(shape), domains[d].dtype)
             for d, shape in manifest["train"].items()}
    return TrainingTiles(train, pairs, _samples(samples), manifest["counts"], settings,
                         manifest["fingerprint"], streamed=True)


def _remove_stale_builds(cache: Path) -> None:
    """Remove half-built copies left by killed runs (their process is gone)."""
    for old in cache.parent.glob(f".{cache.name}.tmp-*"):
        pid = old.name.rsplit("-", 1)[-1]
        if pid.isdigit() and not _alive(int(pid)):
            shutil.rmtree(old, ignore_errors=True)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _move_into_place(build: Path, cache: Path) -> None:
    """Replace ``cache`` by the finished ``build`` (an outdated copy is removed first)."""
    if cache.exists():
        shutil.rmtree(cache)
    try:
        os.replace(build, cache)
    except OSError:
        # Another run finished the same copy first: use it if it is this content's.
        if not cache.exists():
            raise
