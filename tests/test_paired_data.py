"""`stainvirt prepare --paired`: registered A/B images packed as aligned tile pairs."""

from __future__ import annotations

import logging
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from conftest import REPO, save, tissue_image

from stainvirt.dataset import PreparedData, load_prepared
from stainvirt.errors import StainvirtError
from stainvirt.io.images import read_image
from stainvirt.pairing import match_pairs, split_pairs
from stainvirt.prepare import prepare

TILE = 32
TAG = re.compile(r"_(HE|IHC|A|B)$")


def run_prepare(a, b, out, **kwargs):
    return prepare(a, b, out, tile_size=TILE, paired=True, progress=False, **kwargs)


def stain(a: np.ndarray) -> np.ndarray:
    """The known pixel function that makes a B image from its A image."""
    return 255 - a


def save_pair(a_path: Path, b_path: Path, image: np.ndarray) -> None:
    save(a_path, image)
    save(b_path, stain(image))


def stem(source: str) -> str:
    return TAG.sub("", source.rsplit(".", 1)[0])


@pytest.fixture
def registered(tmp_path: Path) -> tuple[Path, Path]:
    """A and B: two pairs (a domain tag, a subfolder and two formats) and an extra each side."""
    a, b = tmp_path / "A", tmp_path / "B"
    save_pair(a / "x_HE.png", b / "x_IHC.png", tissue_image(64, 64, 0))
    save_pair(a / "sub" / "y.png", b / "sub" / "y.tif", tissue_image(64, 96, 1))
    save(a / "spare.png", tissue_image(64, 64, 2))
    save(b / "leftover.png", tissue_image(64, 64, 3, hue="ihc"))
    return a, b


def paired_sources(data: PreparedData, split: str) -> list[tuple[str, str]]:
    """The ``(A source, B source)`` of every pair of ``split``, checked to be aligned."""
    pairs = data.pairs[split]
    assert pairs.dtype == np.int32 and pairs.shape[1] == 2
    found = []
    for i, j in pairs:
        a_source, b_source = data.sources[f"{split}A"][i], data.sources[f"{split}B"][j]
        assert stem(a_source) == stem(b_source)
        np.testing.assert_array_equal(data.positions[f"{split}A"][i],
                                      data.positions[f"{split}B"][j])
        np.testing.assert_array_equal(data.tiles[f"{split}B"][j],
                                      stain(data.tiles[f"{split}A"][i]))
        found.append((a_source, b_source))
    return found


def test_pairs_are_matched_by_name_and_aligned(registered, tmp_path, caplog):
    a, b = registered
    out = tmp_path / "pairs.npz"
    with caplog.at_level(logging.WARNING, logger="stainvirt"):
        summary = run_prepare(a, b, out, test_fraction=0)
    data = load_prepared(out)
    # x: 4 tiles, y: 6; the extras: 4 each, unpaired.
    assert data.counts() == {"trainA": 14, "trainB": 14, "testA": 0, "testB": 0}
    assert sorted(set(paired_sources(data, "train"))) == [
        ("sub/y.png", "sub/y.tif"), ("x_HE.png", "x_IHC.png")
    ]
    assert len(data.pairs["train"]) == 10 and len(data.pairs["test"]) == 0
    for i in data.pairs["train"][:, 0]:
        y, x = data.positions["trainA"][i]
        original = read_image(a / data.sources["trainA"][i])
        np.testing.assert_array_equal(data.tiles["trainA"][i], original[y : y + TILE, x : x + TILE])
    for domain, extra in (("A", "spare.png"), ("B", "leftover.png")):
        extras = np.flatnonzero(data.sources[f"train{domain}"] == extra)
        assert len(extras) == 4
        assert not set(extras) & set(data.pairs["train"][:, "AB".index(domain)])
    warned = [r.getMessage() for r in caplog.records if "spare" in r.getMessage()]
    assert len(warned) == 1 and "spare" in warned[0] and "leftover" in warned[0]
    assert summary.pairs == {"train": 10, "test": 0}
    assert "10 registered pairs (train 10, test 0)" in summary.line()
    assert data.settings["paired"] is True and data.settings["image_pairs"] == 2


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_test_fraction_splits_by_pair(tmp_path, seed):
    a, b = tmp_path / "A", tmp_path / "B"
    for i in range(8):
        save_pair(a / f"p{i}_HE.png", b / f"p{i}_IHC.png", tissue_image(32, 32, i))
    out = tmp_path / "s.npz"
    summary = run_prepare(a, b, out, test_fraction=0.5, seed=seed)
    data = load_prepared(out)
    assert summary.pairs == {"train": 4, "test": 4}
    for split in ("train", "test"):
        stems = {stem(s) for pair in paired_sources(data, split) for s in pair}
        assert len(stems) == 4
        assert {stem(s) for s in data.sources[f"{split}A"]} == stems
        assert {stem(s) for s in data.sources[f"{split}B"]} == stems


def test_pairs_stay_whole_across_shards(registered, tmp_path):
    a, b = registered
    out = tmp_path / "big.npz"
    # Full after three tiles: a shard closes after every second pair.
    summary = run_prepare(a, b, out, test_fraction=0, shard_mb=3 * TILE * TILE * 3 / 1e6)
    assert len(summary.outputs) > 3
    for shard in summary.outputs:
        with np.load(shard) as npz:
            local = npz["train_pairs"]
            assert npz["test_pairs"].shape == (0, 2)
            assert (local[:, 0] < len(npz["trainA"])).all()
            assert (local[:, 1] < len(npz["trainB"])).all()
    sharded = load_prepared(out)
    single = tmp_path / "single.npz"
    run_prepare(a, b, single, test_fraction=0)
    assert paired_sources(sharded, "train") == paired_sources(load_prepared(single), "train")
    assert len(sharded.pairs["train"]) == 10


def test_pairs_of_two_sizes_stop_or_are_skipped(tmp_path):
    a, b = tmp_path / "A", tmp_path / "B"
    save_pair(a / "good.png", b / "good.png", tissue_image(64, 64, 0))
    save(a / "odd.png", tissue_image(64, 64, 1))
    save(b / "odd.png", tissue_image(64, 96, 2, hue="ihc"))
    with pytest.raises(StainvirtError) as err:
        run_prepare(a, b, tmp_path / "s.npz", test_fraction=0)
    message = str(err.value)
    assert "\n" not in message
    assert f"{a / 'odd.png'} is 64x64 and {b / 'odd.png'} is 96x64" in message
    assert "registered pairs need the same size; crop or resize" in message
    summary = run_prepare(a, b, tmp_path / "s.npz", test_fraction=0, skip_bad=True)
    assert summary.bad_files == [str(a / "odd.png"), str(b / "odd.png")]
    data = load_prepared(tmp_path / "s.npz")
    assert set(paired_sources(data, "train")) == {("good.png", "good.png")}
    assert set(data.sources["trainB"]) == {"good.png"}


def test_paired_needs_pairs_and_both_test_folders(registered, tmp_path):
    a, b = registered
    with pytest.raises(StainvirtError, match="give both --test-a and --test-b"):
        run_prepare(a, b, tmp_path / "s.npz", test_a=a)
    lonely = tmp_path / "lonely"
    save(lonely / "z.png", tissue_image(32, 32))
    with pytest.raises(StainvirtError, match=r"no image in .*A has a partner of the same name"):
        run_prepare(a, lonely, tmp_path / "s.npz")


def test_test_folders_are_paired_with_each_other(registered, tmp_path):
    a, b = registered
    test_a, test_b = tmp_path / "testA", tmp_path / "testB"
    save_pair(test_a / "t_A.png", test_b / "t_B.png", tissue_image(32, 32, 5))
    run_prepare(a, b, tmp_path / "s.npz", test_a=test_a, test_b=test_b)
    data = load_prepared(tmp_path / "s.npz")
    assert paired_sources(data, "test") == [("t_A.png", "t_B.png")]
    assert len(data.pairs["train"]) == 10


def test_unpaired_and_old_data_sets_load_with_no_pairs(registered, tmp_path):
    a, b = registered
    out = tmp_path / "unpaired.npz"
    prepare(a, b, out, tile_size=TILE, test_fraction=0, progress=False)
    new = load_prepared(out)
    with np.load(out) as npz:
        assert npz["train_pairs"].shape == (0, 2) and npz["train_pairs"].dtype == np.int32
        old_arrays = {k: npz[k] for k in npz.files if not k.endswith("_pairs")}
    old_path = tmp_path / "old.npz"
    np.savez_compressed(old_path, **old_arrays)
    old = load_prepared(old_path)
    for data in (new, old):
        assert {k: (v.shape, v.dtype) for k, v in data.pairs.items()} == {
            "train": ((0, 2), np.int32), "test": ((0, 2), np.int32)
        }
    # Unpaired data sets keep the fingerprint they had before pairs existed.
    assert old.fingerprint() == new.fingerprint()
    run_prepare(a, b, tmp_path / "p.npz", test_fraction=0)
    paired = load_prepared(tmp_path / "p.npz")
    before = paired.fingerprint()
    paired.pairs["train"] = paired.pairs["train"][::-1].copy()
    assert paired.fingerprint() != before


def test_lone_sources_are_refused_for_evaluation_and_named_by_split_pairs(registered):
    a, b = registered
    with pytest.raises(StainvirtError, match="1 of 3 source image.*spare"):
        match_pairs(a, b)
    pairs, lone_a, lone_b = split_pairs(a, b)
    assert [(p.name, q.name) for p, q in pairs] == [("y.png", "y.tif"), ("x_HE.png", "x_IHC.png")]
    assert (lone_a, lone_b) == ([a / "spare.png"], [b / "leftover.png"])


def test_cli_prepare_paired_as_a_user_runs_it(registered, tmp_path):
    a, b = registered
    out = tmp_path / "pairs.npz"
    cmd = [sys.executable, "-m", "stainvirt", "prepare", "--paired", "--a", str(a),
           "--b", str(b), "--tile-size", str(TILE), "--test-fraction", "0", "--out", str(out)]
    done = subprocess.run(cmd, capture_output=True, text=True, cwd=REPO)
    assert done.returncode == 0, done.stderr
    assert "10 registered pairs" in done.stdout
    assert len(load_prepared(out).pairs["train"]) == 10

    save(a / "odd.png", tissue_image(64, 64, 1))
    save(b / "odd.png", tissue_image(64, 96, 2, hue="ihc"))
    bad = subprocess.run(cmd, capture_output=True, text=True, cwd=REPO)
    assert bad.returncode == 1
    errors = [line for line in bad.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "registered pairs need the same size" in errors[0]
    assert "Traceback" not in bad.stderr
