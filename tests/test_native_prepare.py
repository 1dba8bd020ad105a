"""`stainvirt prepare` with label-free domains: grey, 16-bit, float and stacks packed as stored."""

from __future__ import annotations

import logging
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import tifffile
from conftest import REPO, SAMPLE, save, tissue_image
from PIL import Image

from stainvirt.dataset import load_prepared
from stainvirt.domain import RGB, Domain
from stainvirt.errors import StainvirtError
from stainvirt.io.images import read_image
from stainvirt.io.native import read_native
from stainvirt.io.slide import Resolution
from stainvirt.prepare import prepare

TILE = 16


def run_prepare(a, b, out, **kwargs):
    kwargs = {"tile_size": TILE, "test_fraction": 0, "progress": False, **kwargs}
    return prepare(a, b, out, **kwargs)


def phase(height: int, width: int, seed: int = 0, high: int = 4000) -> np.ndarray:
    """A 16-bit greyscale image with a spread of values."""
    return np.random.default_rng(seed).integers(0, high, (height, width), dtype=np.uint16)


def _mkdir(folder: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def rgb_folder(folder: Path, count: int = 1, size: tuple[int, int] = (32, 32)) -> Path:
    for i in range(count):
        save(folder / f"b{i}.png", tissue_image(*size, seed=10 + i, hue="ihc"))
    return folder


def assert_tiles_are_the_sources(data, split: str, folder: Path) -> None:
    """Every tile equals its source's pixels at its recorded position (slice ``#zN``)."""
    assert len(data.tiles[split])
    for tile, source, (y, x) in zip(
        data.tiles[split], data.sources[split], data.positions[split], strict=True
    ):
        name, _, z = str(source).partition("#z")
        stack = read_native(folder / name)
        np.testing.assert_array_equal(tile, stack[int(z or 0), y : y + TILE, x : x + TILE])


def test_uint16_tiff_is_packed_as_stored_with_a_percentile_range(tmp_path, caplog):
    a, b = tmp_path / "A", rgb_folder(tmp_path / "B")
    images = [phase(32, 48, 0), phase(48, 32, 1, high=3000)]
    for i, image in enumerate(images):
        tifffile.imwrite(_mkdir(a) / f"p{i}.tif", image)
    out = tmp_path / "phase.npz"
    with caplog.at_level(logging.INFO, logger="stainvirt"):
        summary = run_prepare(a, b, out)
    data = load_prepared(out)
    domain = data.domains["A"]
    assert (domain.channels, domain.dtype, domain.scaling) == (1, "uint16", "percentile")
    pixels = np.concatenate([image.ravel() for image in images])
    np.testing.assert_allclose([domain.low, domain.high], np.percentile(pixels, [0.5, 99.5]),
                               rtol=1e-6)
    assert data.domains["B"] == RGB and data.settings["kinds"] == {"A": "native", "B": "rgb"}
    assert data.tiles["trainA"].shape == (12, TILE, TILE, 1)
    assert data.tiles["trainA"].dtype == np.uint16
    assert data.tiles["testA"].shape == (0, 1, 1, 1) and data.tiles["testA"].dtype == np.uint16
    assert_tiles_are_the_sources(data, "trainA", a)
    assert data.tiles["trainB"].shape == (4, TILE, TILE, 3)
    told = [r.getMessage() for r in caplog.records if "domain A" in r.getMessage()]
    assert len(told) == 1 and "1-channel uint16" in told[0] and "--kind-a rgb" in told[0]
    assert "domain B" not in " ".join(r.getMessage() for r in caplog.records)
    assert f"domain A: {domain.describe()}" in summary.line()
    # Empty splits are stored in the split's own kind, so every shard reads back.
    with np.load(out) as npz:
        assert npz["testA"].shape == (0, TILE, TILE, 1) and npz["testA"].dtype == np.uint16
        assert npz["testB"].shape == (0, TILE, TILE, 3) and npz["testB"].dtype == np.uint8


def test_uint16_png_and_float_tiff_keep_their_type(tmp_path):
    a, b = _mkdir(tmp_path / "A"), _mkdir(tmp_path / "B")
    Image.fromarray(phase(32, 32, 2)).save(a / "grey16.png")
    Image.fromarray(phase(32, 32, 3)).save(a / "more16.png")
    rng = np.random.default_rng(4)
    for i in range(2):
        tifffile.imwrite(b / f"f{i}.tif", rng.normal(0.3, 0.1, (32, 32)).astype(np.float32))
    out = tmp_path / "s.npz"
    run_prepare(a, b, out)
    data = load_prepared(out)
    assert (data.domains["A"].channels, data.domains["A"].dtype) == (1, "uint16")
    assert (data.domains["B"].channels, data.domains["B"].dtype) == (1, "float32")
    assert data.tiles["trainB"].dtype == np.float32 and data.tiles["trainB"].shape[0] == 8
    assert_tiles_are_the_sources(data, "trainA", a)
    assert_tiles_are_the_sources(data, "trainB", b)
    floats = np.concatenate([read_native(b / f"f{i}.tif").ravel() for i in range(2)])
    np.testing.assert_allclose([data.domains["B"].low, data.domains["B"].high],
                               np.percentile(floats, [0.5, 99.5]), rtol=1e-5)


def test_range_can_be_fixed_or_full(tmp_path):
    a, b = _mkdir(tmp_path / "A"), rgb_folder(tmp_path / "B")
    tifffile.imwrite(a / "p.tif", phase(32, 32))
    out = tmp_path / "s.npz"
    run_prepare(a, b, out, range_a="0,4095")
    assert load_prepared(out).domains["A"] == Domain(1, "uint16", 0.0, 4095.0, "fixed")
    run_prepare(a, b, out, range_a="full")
    assert load_prepared(out).domains["A"] == Domain(1, "uint16", 0.0, 65535.0, "full")
    with pytest.raises(StainvirtError, match=r"--range-a: intensity range \[4095.0, 0.0\] is"):
        run_prepare(a, b, out, range_a="4095,0")
    with pytest.raises(StainvirtError, match=r"--range-b 0,100: domain B is packed as 8-bit RGB"):
        run_prepare(a, b, out, range_b="0,100")


def test_stack_gives_every_slice_as_an_image(tmp_path):
    a, b = _mkdir(tmp_path / "A"), rgb_folder(tmp_path / "B")
    volume = np.stack([phase(32, 32, z) for z in range(5)])
    tifffile.imwrite(a / "vol.tif", volume, metadata={"axes": "ZYX"},
                     photometric="minisblack")
    out = tmp_path / "s.npz"
    run_prepare(a, b, out)
    data = load_prepared(out)
    assert data.counts()["trainA"] == 5 * 4
    assert sorted(set(data.sources["trainA"].tolist())) == [f"vol.tif#z{z:04d}" for z in range(5)]
    assert_tiles_are_the_sources(data, "trainA", a)
    # --tiles-per-slide counts per slice.
    run_prepare(a, b, out, tiles_per_slide=2)
    assert load_prepared(out).counts()["trainA"] == 5 * 2
    # Shards of 6 uint16 tiles each, every one with its own (empty) splits in the domain's kind.
    summary = run_prepare(a, b, out, shard_mb=6 * TILE * TILE * 2 / 1e6)
    assert len(summary.outputs) > 1
    sharded = load_prepared(out)
    np.testing.assert_array_equal(sharded.tiles["trainA"], data.tiles["trainA"])


def test_native_a_pairs_with_rgb_b_tile_for_tile(tmp_path):
    a, b = _mkdir(tmp_path / "A"), _mkdir(tmp_path / "B")
    for name, seed in (("x", 0), ("y", 1)):
        tifffile.imwrite(a / f"{name}_A.tif", phase(32, 48, seed))
        save(b / f"{name}_B.png", tissue_image(32, 48, seed, hue="ihc"))
    out = tmp_path / "pairs.npz"
    summary = run_prepare(a, b, out, paired=True)
    data = load_prepared(out)
    assert summary.pairs == {"train": 12, "test": 0}
    assert data.domains["A"].dtype == "uint16" and data.domains["B"] == RGB
    for i, j in data.pairs["train"]:
        a_source, b_source = data.sources["trainA"][i], data.sources["trainB"][j]
        assert a_source.split("_")[0] == b_source.split("_")[0]
        (y, x), (y_b, x_b) = data.positions["trainA"][i], data.positions["trainB"][j]
        assert (y, x) == (y_b, x_b)
        np.testing.assert_array_equal(data.tiles["trainA"][i],
                                      read_native(a / a_source)[0, y : y + TILE, x : x + TILE])
        np.testing.assert_array_equal(data.tiles["trainB"][j],
                                      read_image(b / b_source)[y : y + TILE, x : x + TILE])


def test_stacks_pair_slice_by_slice_and_need_as_many(tmp_path):
    a, b = _mkdir(tmp_path / "A"), _mkdir(tmp_path / "B")
    tifffile.imwrite(a / "v.tif", np.stack([phase(16, 32, z) for z in range(3)]),
                     metadata={"axes": "ZYX"},
                     photometric="minisblack")
    tifffile.imwrite(b / "v.tif", np.stack([phase(16, 32, 9 + z) for z in range(3)]),
                     metadata={"axes": "ZYX"},
                     photometric="minisblack")
    out = tmp_path / "pairs.npz"
    run_prepare(a, b, out, paired=True)
    data = load_prepared(out)
    assert len(data.pairs["train"]) == 6
    for i, j in data.pairs["train"]:
        assert data.sources["trainA"][i] == data.sources["trainB"][j]
    tifffile.imwrite(b / "v.tif", phase(16, 32))
    with pytest.raises(StainvirtError, match=r"v\.tif has 3 slices and .*v\.tif has 1 slice: "
                                             "registered pairs need the same number of slices"):
        run_prepare(a, b, out, paired=True)


def test_native_domain_refuses_a_file_of_other_channels(tmp_path):
    a, b = _mkdir(tmp_path / "A"), rgb_folder(tmp_path / "B")
    tifffile.imwrite(a / "p0.tif", phase(32, 32, 0))
    tifffile.imwrite(a / "p1.tif", phase(32, 32, 1))
    odd = a / "p2.tif"
    tifffile.imwrite(odd, np.zeros((32, 32, 3), np.uint16), photometric="rgb")
    out = tmp_path / "s.npz"
    with pytest.raises(StainvirtError) as caught:
        run_prepare(a, b, out)
    message = str(caught.value)
    assert message.startswith(f"{odd}: 3-channel uint16 image, but the other images of domain A "
                              "are 1-channel uint16 (2 files)")
    assert "--skip-bad" in message and "--kind-a rgb" in message and "\n" not in message
    assert not out.exists()
    summary = run_prepare(a, b, out, skip_bad=True)
    assert summary.bad_files == [str(odd)] and summary.counts["trainA"] == 8
    # Forced native over 8-bit colour and grey files: the grey one is named.
    c = _mkdir(tmp_path / "C")
    save(c / "colour.png", tissue_image(32, 32))
    save(c / "grey.png", tissue_image(32, 32)[..., 0])
    save(c / "more.png", tissue_image(32, 32, 1))
    with pytest.raises(StainvirtError, match=r"grey\.png: 1-channel uint8 image, but the other "
                                             r"images of domain A are 3-channel uint8"):
        run_prepare(c, b, out, kind_a="native")


def test_mixed_colour_and_grey_stays_rgb_as_before(tmp_path, caplog):
    a, b = _mkdir(tmp_path / "A"), rgb_folder(tmp_path / "B")
    save(a / "colour.png", tissue_image(32, 32))
    tifffile.imwrite(a / "deep.tif", phase(32, 32))
    out = tmp_path / "s.npz"
    with caplog.at_level(logging.INFO, logger="stainvirt"):
        run_prepare(a, b, out, min_tissue=0)
    data = load_prepared(out)
    assert data.domains["A"] == RGB and data.settings["kinds"]["A"] == "rgb"
    assert any("--kind-a native" in r.getMessage() for r in caplog.records)


def test_kind_rgb_converts_16_bit_as_before(tmp_path):
    a, b = _mkdir(tmp_path / "A"), rgb_folder(tmp_path / "B")
    image = phase(32, 32)
    tifffile.imwrite(a / "p.tif", image)
    out = tmp_path / "s.npz"
    run_prepare(a, b, out, kind_a="rgb", min_tissue=0)
    data = load_prepared(out)
    assert data.domains["A"] == RGB and data.tiles["trainA"].dtype == np.uint8
    assert data.tiles["trainA"].shape == (4, TILE, TILE, 3)
    expected = read_image(a / "p.tif")
    for tile, (y, x) in zip(data.tiles["trainA"], data.positions["trainA"], strict=True):
        np.testing.assert_array_equal(tile, expected[y : y + TILE, x : x + TILE])


def test_bad_native_input_is_one_clear_line(tmp_path):
    a, b = _mkdir(tmp_path / "A"), rgb_folder(tmp_path / "B")
    tifffile.imwrite(a / "p.tif", phase(32, 32))
    out = tmp_path / "s.npz"
    with pytest.raises(StainvirtError, match="resampling those is not supported"):
        run_prepare(a, b, out, resolution=Resolution(mpp=0.5))
    with pytest.raises(StainvirtError, match=r"p\.tif: image is 32x32, smaller than the 64px"):
        run_prepare(a, b, out, tile_size=64)
    with pytest.raises(StainvirtError, match="--kind-a 'grey' is not one of auto, rgb, native"):
        run_prepare(a, b, out, kind_a="grey")
    broken = a / "zz.tif"
    broken.write_bytes(b"II*\x00garbage")
    with pytest.raises(StainvirtError, match=r"zz\.tif: .*--skip-bad to skip"):
        run_prepare(a, b, out, kind_a="native")
    summary = run_prepare(a, b, out, kind_a="native", skip_bad=True)
    assert summary.bad_files == [str(broken)] and summary.counts["trainA"] == 4


def test_cli_prepare_native_as_a_user_runs_it(tmp_path):
    a, b = _mkdir(tmp_path / "A"), rgb_folder(tmp_path / "B", count=2)
    for i in range(2):
        tifffile.imwrite(a / f"p{i}.tif", phase(32, 32, i))
    out = tmp_path / "s.npz"
    cmd = [sys.executable, "-m", "stainvirt", "prepare", "--a", str(a), "--b", str(b),
           "--kind-a", "native", "--range-a", "0,4095", "--tile-size", str(TILE),
           "--test-fraction", "0.5", "--out", str(out)]
    done = subprocess.run(cmd, capture_output=True, text=True, cwd=REPO)
    assert done.returncode == 0, done.stderr
    assert "tiles: trainA 4, trainB 4, testA 4, testB 4" in done.stdout
    assert "domain A: 1-channel uint16, range [0, 4095] (fixed)" in done.stdout
    data = load_prepared(out)
    assert data.domains["A"] == Domain(1, "uint16", 0.0, 4095.0, "fixed")
    assert data.tiles["testA"].dtype == np.uint16
    bad = subprocess.run(cmd + ["--mpp", "0.5"], capture_output=True, text=True, cwd=REPO)
    assert bad.returncode == 1 and "Traceback" not in bad.stderr
    errors = [line for line in bad.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "--kind-a rgb" in errors[0]


def test_rgb_sample_packs_as_before(tmp_path):
    def pack(out: Path, **kwargs):
        prepare(SAMPLE / "trainA", SAMPLE / "trainB", out, test_a=SAMPLE / "testA",
                test_b=SAMPLE / "testB", progress=False, **kwargs)
        return load_prepared(out)

    auto, rgb = pack(tmp_path / "auto.npz"), pack(tmp_path / "rgb.npz", kind_a="rgb", kind_b="rgb")
    assert auto.fingerprint() == rgb.fingerprint()
    assert auto.settings["domains"] == {"A": RGB.to_dict(), "B": RGB.to_dict()}
    assert auto.settings["kinds"] == {"A": "rgb", "B": "rgb"}
