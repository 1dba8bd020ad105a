"""Training tiles streamed from an unpacked copy: same tiles, same batches, same runs."""

from __future__ import annotations

import json
import os
import resource
import signal
from pathlib import Path

import h5py
import numpy as np
import pytest
from conftest import SAMPLE, save, tissue_image

from stainvirt.config import preset
from stainvirt.dataset import load_prepared
from stainvirt.errors import StainvirtError
from stainvirt.prepare import prepare
from stainvirt.rundir import RunDir
from stainvirt.training.data import UnpairedSampler
from stainvirt.training.tiles import TileFile, open_training_tiles
from stainvirt.training.trainer import train


@pytest.fixture(scope="module")
def sharded(tmp_path_factory) -> Path:
    """The bundled sample in 64 px tiles, written as 8 shards of about 50 kB."""
    out = tmp_path_factory.mktemp("sharded") / "stain.npz"
    prepare(SAMPLE / "trainA", SAMPLE / "trainB", out, test_a=SAMPLE / "testA",
            test_b=SAMPLE / "testB", tile_size=64, progress=False, shard_mb=0.05)
    return out


@pytest.fixture(scope="module")
def paired(tmp_path_factory) -> Path:
    """Registered pairs in several shards, with an unpaired extra on each side."""
    root = tmp_path_factory.mktemp("paired")
    for i in range(4):
        image = tissue_image(64, 96, i)
        save(root / "A" / f"s{i}.png", image)
        save(root / "B" / f"s{i}.png", 255 - image)
    save(root / "A" / "extra.png", tissue_image(64, 64, 9))
    save(root / "B" / "other.png", tissue_image(64, 64, 8, hue="ihc"))
    out = root / "pairs.npz"
    prepare(root / "A", root / "B", out, tile_size=32, paired=True, test_fraction=0,
            progress=False, shard_mb=0.02)
    return out


def cached(path: Path, tmp_path: Path):
    return open_training_tiles(path, memory_mb=0, cache=tmp_path / "tiles")


@pytest.mark.parametrize("name", ["data_path", "sharded", "paired"])
def test_streamed_tiles_fingerprint_and_pairs_are_the_loaded_ones(name, request, tmp_path):
    path = request.getfixturevalue(name)
    loaded = load_prepared(path)
    in_memory, streamed = open_training_tiles(path), cached(path, tmp_path)
    assert not in_memory.streamed and streamed.streamed
    assert isinstance(streamed.train["A"], TileFile)
    assert in_memory.fingerprint == streamed.fingerprint == loaded.fingerprint()
    assert in_memory.counts == streamed.counts == loaded.counts()
    for d in "AB":
        tiles = loaded.tiles[f"train{d}"]
        np.testing.assert_array_equal(in_memory.train[d], tiles)
        assert streamed.train[d].shape == tiles.shape
        for i in (0, len(tiles) // 2, len(tiles) - 1):
            np.testing.assert_array_equal(streamed.train[d][i], tiles[i])
        np.testing.assert_array_equal(streamed.samples[d], in_memory.samples[d])
    np.testing.assert_array_equal(streamed.pairs, loaded.pairs["train"])
    np.testing.assert_array_equal(in_memory.pairs, loaded.pairs["train"])
    if name == "paired":
        assert len(loaded.pairs["train"]) > 4 and len(list(path.parent.glob("pairs-*.npz"))) > 1


def test_streamed_and_loaded_tiles_give_the_same_batches(paired, tmp_path):
    cfg = preset("tiny").replace(image_size=32, steps_per_epoch=4, batch_size=3)
    in_memory, streamed = open_training_tiles(paired), cached(paired, tmp_path)
    one, two = (UnpairedSampler(t.train["A"], t.train["B"], cfg, pairs=t.pairs)
                for t in (in_memory, streamed))
    for step in (0, 3, 4, 9):
        for a, b in zip(one.batch(step), two.batch(step), strict=True):
            np.testing.assert_array_equal(a, b)


def test_the_unpacked_copy_is_reused_until_the_data_set_changes(sharded, tmp_path):
    first = cached(sharded, tmp_path)
    raw = tmp_path / "tiles" / "trainA.raw"
    made = raw.stat().st_mtime_ns
    assert raw.stat().st_size == first.train["A"].shape[0] * 64 * 64 * 3
    assert cached(sharded, tmp_path).fingerprint == first.fingerprint
    assert raw.stat().st_mtime_ns == made  # reused, not unpacked again
    manifest = tmp_path / "tiles" / "manifest.json"
    stale = json.loads(manifest.read_text())
    stale["files"][0][2] -= 1  # as if the first shard had been rewritten since
    manifest.write_text(json.dumps(stale))
    again = cached(sharded, tmp_path)
    assert again.fingerprint == first.fingerprint and raw.stat().st_mtime_ns != made
    # A half-built copy of a killed run is cleared away; no temporary copy is left.
    dead = tmp_path / ".tiles.tmp-999999999"
    dead.mkdir()
    stale["files"][0][2] -= 1
    manifest.write_text(json.dumps(stale))
    cached(sharded, tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["tiles"]


def state_arrays(run: Path) -> dict[str, np.ndarray]:
    with h5py.File(RunDir(run).state_path) as f:
        return {f"{g}/{k}": f[g][k][()] for g in f for k in f[g]}


def test_a_data_set_larger_than_memory_trains_and_resumes_bitwise(sharded, tmp_path):
    cfg = preset("tiny").replace(epochs=1, epochs_decay=1, steps_per_epoch=3)
    train(sharded, tmp_path / "loaded", cfg, verbose=0)
    streamed = tmp_path / "streamed"
    first = train(sharded, streamed, cfg.replace(epochs_decay=0), verbose=0, memory_mb=0)
    assert first.steps_done == 3
    assert (sharded.parent / "stain.tiles" / "trainA.raw").is_file()
    # Extended on resume, still streamed: the same state as the run held in memory.
    second = train(None, streamed, None, overrides={"epochs_decay": 1}, verbose=0, memory_mb=0)
    assert (second.steps_done, second.stopped) == (6, "finished")
    a, b = state_arrays(tmp_path / "loaded"), state_arrays(streamed)
    assert a.keys() == b.keys()
    for key in a:
        np.testing.assert_array_equal(a[key], b[key], err_msg=key)
    record = json.loads((streamed / "data.json").read_text())
    assert record["fingerprint"] == load_prepared(sharded).fingerprint()


def test_a_corrupt_shard_is_one_clear_line(sharded, tmp_path):
    broken = tmp_path / "broken.npz"
    broken.write_bytes(sharded.with_name("stain-00000.npz").read_bytes()[:300])
    with pytest.raises(StainvirtError, match="broken.npz: cannot read .*run 'stainvirt prepare'"):
        open_training_tiles(broken, memory_mb=0, cache=tmp_path / "tiles")
    assert not (tmp_path / "tiles").exists()
    assert os.listdir(tmp_path) == ["broken.npz"]


def test_a_copy_that_cannot_be_written_is_one_clear_line_and_leaves_nothing(sharded, tmp_path):
    # Files may not grow past 100 kB (as on a full disk, writes fail with an OSError).
    old_handler = signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
    resource.setrlimit(resource.RLIMIT_FSIZE, (100_000, hard))
    try:
        with pytest.raises(StainvirtError, match="tiles: cannot write the unpacked copy .*"
                                                 "--memory-mb"):
            cached(sharded, tmp_path)
    finally:
        resource.setrlimit(resource.RLIMIT_FSIZE, (soft, hard))
        signal.signal(signal.SIGXFSZ, old_handler)
    assert os.listdir(tmp_path) == []
