"""`stainvirt prepare`: real files in, a compressed .npz out."""

from __future__ import annotations

import logging
import subprocess
import sys

import numpy as np
import pytest
import tifffile
from conftest import REPO, SAMPLE, save, tissue_image
from PIL import Image

from stainvirt.dataset import dataset_files, load_prepared, shard_path
from stainvirt.errors import StainvirtError
from stainvirt.io.images import read_image
from stainvirt.io.slides import open_slide
from stainvirt.prepare import prepare, split_files
from stainvirt.tissue import is_tissue


def run_prepare(a, b, out, **kwargs):
    return prepare(a, b, out, progress=False, **kwargs)


def test_round_trip_keeps_pixels_names_and_positions(ab_folders, tmp_path):
    a, b = ab_folders
    out = tmp_path / "stain.npz"
    summary = run_prepare(a, b, out, tile_size=32, test_fraction=0.0)
    data = load_prepared(out)
    # A: 64x64 -> 4 tiles, 64x96 -> 6 tiles, 64x64 -> 4 tiles; B: 2 x 4 tiles.
    assert data.counts() == {"trainA": 14, "trainB": 8, "testA": 0, "testB": 0}
    assert summary.counts == data.counts()
    assert summary.outputs == [out]
    assert data.settings["tile_size"] == 32
    sources = data.sources["trainA"].tolist()
    assert sources[:4] == ["a0.png"] * 4 and sources[-4:] == ["sub/a2.png"] * 4
    for tile, source, (y, x) in zip(
        data.tiles["trainA"], data.sources["trainA"], data.positions["trainA"], strict=True
    ):
        original = read_image(a / source)
        np.testing.assert_array_equal(tile, original[y : y + 32, x : x + 32])
    assert data.positions["trainA"][4:10].tolist() == [
        [0, 0], [0, 32], [0, 64], [32, 0], [32, 32], [32, 64]
    ]


def test_test_fraction_splits_by_file(ab_folders, tmp_path):
    a, b = ab_folders
    data_path = tmp_path / "s.npz"
    run_prepare(a, b, data_path, tile_size=32, test_fraction=0.4, seed=3)
    data = load_prepared(data_path)
    train_files = set(data.sources["trainA"].tolist())
    test_files = set(data.sources["testA"].tolist())
    # Every file's tiles land in one split: no file straddles train and test.
    assert len(test_files) == 1 and not train_files & test_files
    assert train_files | test_files == {"a0.png", "a1.png", "sub/a2.png"}
    assert len(set(data.sources["testB"].tolist())) == 1


def test_split_files_is_complete_disjoint_and_set_by_the_seed():
    files = [f"f{i}.png" for i in range(10)]
    train, test = split_files(files, 0.3, seed=7)
    assert (len(train), len(test)) == (7, 3)
    assert sorted(train + test) == files and not set(train) & set(test)
    assert split_files(files, 0.3, seed=7) == (train, test)
    assert split_files(files, 0.3, seed=8)[1] != test
    # At least one test file for any positive fraction, never all of them.
    assert [len(split_files(files, f, seed=0)[1]) for f in (0.0, 0.01, 0.99, 1.0)] == [0, 1, 9, 9]
    assert split_files(["only.png"], 0.5, seed=0) == (["only.png"], [])


def test_test_folders_are_used(ab_folders, tmp_path):
    a, b = ab_folders
    test_a = tmp_path / "testA"
    save(test_a / "t.png", tissue_image(32, 32, 9))
    out = tmp_path / "s.npz"
    run_prepare(a, b, out, test_a=test_a, test_b=b, tile_size=32)
    data = load_prepared(out)
    assert data.counts()["testA"] == 1 and data.sources["testA"].tolist() == ["t.png"]
    assert data.counts()["testB"] == 8 and data.counts()["trainA"] == 14


def test_background_tiles_are_skipped(tmp_path):
    a, b = tmp_path / "A", tmp_path / "B"
    image = tissue_image(64, 64)
    image[:, 32:] = 240  # right half is glass
    save(a / "half.png", image)
    save(b / "b.png", tissue_image(32, 32, hue="ihc"))
    out = tmp_path / "s.npz"
    summary = run_prepare(a, b, out, tile_size=32, test_fraction=0)
    assert summary.counts["trainA"] == 2 and summary.background_skipped == 2
    assert load_prepared(out).positions["trainA"].tolist() == [[0, 0], [32, 0]]
    assert not is_tissue(np.full((8, 8, 3), 240, np.uint8))
    assert is_tissue(tissue_image(8, 8))


def test_formats_are_converted_with_one_warning_each(tmp_path, caplog):
    a, b = tmp_path / "A", tmp_path / "B"
    rgb = tissue_image(32, 32)
    save(a / "plain.jpg", rgb, quality=95)
    save(a / "grey.png", rgb[..., 0])
    rgba = np.dstack([rgb, np.full((32, 32), 128, np.uint8)])
    save(a / "rgba.png", rgba)
    Image.fromarray(rgb).quantize(16).save(a / "palette.png")
    tifffile.imwrite(a / "deep.tif", rgb.astype(np.uint16) * 257, photometric="rgb")
    tifffile.imwrite(a / "tiled.tif", rgb, tile=(16, 16), photometric="rgb", compression="zlib")
    save(b / "b.png", tissue_image(32, 32, hue="ihc"))
    with caplog.at_level(logging.WARNING, logger="stainvirt"):
        out = tmp_path / "s.npz"
        run_prepare(a, b, out, tile_size=32, test_fraction=0, min_tissue=0)
    messages = [r.getMessage() for r in caplog.records]
    for name, what in [
        ("grey.png", "greyscale"), ("rgba.png", "alpha"), ("palette.png", "palette"),
        ("deep.tif", "16-bit"),
    ]:
        assert sum(name in m and what in m for m in messages) == 1, (name, messages)
    data = load_prepared(out)
    tiles = dict(zip(data.sources["trainA"].tolist(), data.tiles["trainA"], strict=True))
    np.testing.assert_array_equal(tiles["deep.tif"], rgb)
    np.testing.assert_array_equal(tiles["tiled.tif"], rgb)
    np.testing.assert_array_equal(tiles["grey.png"], np.repeat(rgb[..., :1], 3, axis=-1))
    expected_rgba = np.round(rgb * (128 / 255) + 255 * (1 - 128 / 255))
    assert np.abs(tiles["rgba.png"].astype(int) - expected_rgba).max() <= 1
    np.testing.assert_array_equal(tiles["plain.jpg"], np.asarray(Image.open(a / "plain.jpg")))


def test_pyramidal_tiff_and_svs_read_level_zero(tmp_path):
    rgb = tissue_image(64, 48)
    path = tmp_path / "pyramid.tif"
    with tifffile.TiffWriter(path) as tif:
        tif.write(rgb, tile=(16, 16), subifds=1, photometric="rgb")
        tif.write(rgb[::2, ::2], tile=(16, 16), subfiletype=1, photometric="rgb")
    np.testing.assert_array_equal(read_image(path), rgb)
    svs = REPO.parent / "shared" / "data" / "he" / "cmu_small_region.svs"
    if not svs.is_file():
        pytest.skip(f"{svs} is not there (the shared test data lie beside the checkout)")
    with open_slide(svs) as slide:  # a real Aperio SVS, through OpenSlide
        assert slide.level_size(0) == (2967, 2220)
        level0 = slide.read(0, 0, 0, *slide.level_size(0))
    assert level0.shape == (2967, 2220, 3) and level0.dtype == np.uint8
    assert 100 < level0.mean() < 250 and level0.std() > 10  # tissue, not a blank page


def test_shards_hold_bounded_tiles_and_read_as_one(ab_folders, tmp_path):
    a, b = ab_folders
    out = tmp_path / "big.npz"
    tile_bytes = 32 * 32 * 3
    summary = run_prepare(a, b, out, tile_size=32, test_fraction=0, shard_mb=5 * tile_bytes / 1e6)
    assert len(summary.outputs) == 5  # 22 tiles, 5 per shard
    assert summary.outputs[0] == shard_path(out, 0) and not out.exists()
    assert dataset_files(out) == summary.outputs
    for shard in summary.outputs:
        with np.load(shard) as npz:
            assert sum(len(npz[s]) for s in ("trainA", "trainB", "testA", "testB")) <= 5
    sharded = load_prepared(out)
    single_path = tmp_path / "single.npz"
    run_prepare(a, b, single_path, tile_size=32, test_fraction=0)
    single = load_prepared(single_path)
    for split in ("trainA", "trainB"):
        np.testing.assert_array_equal(sharded.tiles[split], single.tiles[split])
        assert sharded.sources[split].tolist() == single.sources[split].tolist()
    # Re-preparing into one file removes the stale shards.
    run_prepare(a, b, out, tile_size=32, test_fraction=0)
    assert out.exists() and not list(tmp_path.glob("big-*.npz"))


def test_missing_and_empty_folders(tmp_path, ab_folders):
    a, b = ab_folders
    (tmp_path / "empty").mkdir()
    with pytest.raises(StainvirtError, match="folder not found"):
        run_prepare(tmp_path / "nope", b, tmp_path / "s.npz")
    with pytest.raises(StainvirtError, match=r"empty: no images found"):
        run_prepare(a, tmp_path / "empty", tmp_path / "s.npz")


def test_corrupt_file_stops_or_is_skipped(ab_folders, tmp_path):
    a, b = ab_folders
    (a / "broken.png").write_bytes(b"not an image at all")
    out = tmp_path / "s.npz"
    with pytest.raises(StainvirtError, match=r"broken\.png: not a readable image"):
        run_prepare(a, b, out, tile_size=32, test_fraction=0)
    assert not out.exists() and not list(tmp_path.glob(".s.*"))
    summary = run_prepare(a, b, out, tile_size=32, test_fraction=0, skip_bad=True)
    assert summary.bad_files == [str(a / "broken.png")]
    assert summary.counts["trainA"] == 14


def test_failed_run_leaves_the_previous_output_intact(ab_folders, tmp_path):
    a, b = ab_folders
    out = tmp_path / "s.npz"
    run_prepare(a, b, out, tile_size=32, test_fraction=0)
    before = out.read_bytes()
    (a / "zz_broken.tif").write_bytes(b"II*\x00garbage")
    with pytest.raises(StainvirtError, match="zz_broken.tif"):
        run_prepare(a, b, out, tile_size=32, test_fraction=0)
    assert out.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["A", "B", "s.npz"]


def test_small_images_no_tissue_and_bad_output(ab_folders, tmp_path):
    a, b = ab_folders
    with pytest.raises(StainvirtError, match=r"smaller than the 128px tile size; pass --tile-size"):
        run_prepare(a, b, tmp_path / "s.npz", tile_size=128)
    glass = tmp_path / "glass"
    save(glass / "g.png", np.full((64, 64, 3), 245, np.uint8))
    with pytest.raises(StainvirtError, match="no tissue found"):
        run_prepare(glass, b, tmp_path / "s.npz", tile_size=32)
    blocker = tmp_path / "a_file"
    blocker.write_text("")
    with pytest.raises(StainvirtError, match="cannot write"):
        run_prepare(a, b, blocker / "s.npz", tile_size=32)
    with pytest.raises(StainvirtError, match=r"must be a \.npz"):
        run_prepare(a, b, tmp_path / "s.zip", tile_size=32)


def test_load_prepared_rejects_bad_files(tmp_path):
    with pytest.raises(StainvirtError, match="data set not found"):
        load_prepared(tmp_path / "none.npz")
    corrupt = tmp_path / "corrupt.npz"
    corrupt.write_bytes(b"PK\x03\x04 truncated")
    with pytest.raises(StainvirtError, match="corrupt"):
        load_prepared(corrupt)
    wrong = tmp_path / "wrong.npz"
    np.savez_compressed(wrong, images=np.zeros((1, 4, 4, 3), np.uint8))
    with pytest.raises(StainvirtError, match="missing arrays trainA"):
        load_prepared(wrong)


def test_cli_prepare_as_a_user_runs_it(tmp_path):
    out = tmp_path / "stain.npz"
    cmd = [sys.executable, "-m", "stainvirt", "prepare",
           "--a", str(SAMPLE / "trainA"), "--b", str(SAMPLE / "trainB"),
           "--test-a", str(SAMPLE / "testA"), "--test-b", str(SAMPLE / "testB"), "--out", str(out)]
    done = subprocess.run(cmd, capture_output=True, text=True, cwd=REPO)
    assert done.returncode == 0, done.stderr
    assert "tiles: trainA 25, trainB 3, testA 8, testB 1" in done.stdout
    assert load_prepared(out).tiles["trainB"].shape == (3, 256, 256, 3)

    bad = subprocess.run(
        [sys.executable, "-m", "stainvirt", "prepare", "--a", str(tmp_path / "missing"),
         "--b", str(SAMPLE / "trainB"), "--out", str(out)],
        capture_output=True, text=True,
    )
    assert bad.returncode == 1
    assert bad.stderr.strip().splitlines() == [f"error: {tmp_path / 'missing'}: folder not found; "
                                               "check the path"]
    help_text = subprocess.run(
        [sys.executable, "-m", "stainvirt", "prepare", "--help"], capture_output=True, text=True
    ).stdout
    assert "--tile-size" in help_text and "smaller than --tile-size" in help_text


def test_expand_inputs_takes_files_folders_and_absolute_globs(ab_folders, tmp_path):
    from stainvirt.io.images import expand_inputs

    a, b = ab_folders
    found = expand_inputs([str(a / "*.png"), b, a / "a0.png"])
    assert found == [a / "a0.png", a / "a1.png", b / "b0.png", b / "b1.png"]
    with pytest.raises(StainvirtError, match="no such file, folder or matching images"):
        expand_inputs([str(tmp_path / "none*.png")])
