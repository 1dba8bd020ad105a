"""Whole slides: one reader for every format, resolution by mpp, tissue sampling, slides out."""

from __future__ import annotations

import struct
import subprocess
import sys
import zlib
from pathlib import Path

import numpy as np
import pytest
import tifffile
from conftest import REPO, save, tissue_image

from stainvirt.dataset import load_prepared
from stainvirt.errors import StainvirtError
from stainvirt.io.slide import NATIVE, Resolution
from stainvirt.io.slide_formats import OpenSlideSlide, TiffSlide
from stainvirt.io.slides import open_regions, open_slide, read_at
from stainvirt.prepare import prepare
from stainvirt.rundir import RunDir
from stainvirt.slide_tiles import TileCounts, image_tiles
from stainvirt.tissue import TissueMap
from stainvirt.translate import Translator
from stainvirt.translate.writers import write_tiff

SVS = REPO.parent / "shared" / "data" / "he" / "cmu_small_region.svs"
IHC = REPO.parent / "shared" / "data" / "ihc" / "ihc.png"
SMALL_TILES = dict(tile_size=64, overlap=16)


@pytest.fixture
def svs() -> Path:
    if not SVS.is_file():
        pytest.skip(f"{SVS} is not there (the shared test data lie beside the checkout)")
    return SVS


def half_glass(height: int, width: int, seed: int = 0) -> np.ndarray:
    """Tissue on the left half, bright grey glass on the right."""
    image = tissue_image(height, width, seed)
    rng = np.random.default_rng(seed)
    glass = np.clip(236 + rng.normal(0, 2, (height, width - width // 2, 3)), 0, 255)
    image[:, width // 2 :] = glass.astype(np.uint8)
    return image


def write_slide(path: Path, image: np.ndarray, mpp: float = 0.25) -> Path:
    """A tiled, pyramidal OME-TIFF with its pixel size, as a scanner export would be."""
    bands = (image[y : y + 256] for y in range(0, image.shape[0], 256))
    return write_tiff(path, image.shape[0], image.shape[1], bands, mpp)


def test_a_real_svs_is_read_through_openslide(svs):
    with open_slide(svs) as slide:
        assert isinstance(slide, OpenSlideSlide)
        assert slide.level_size(0) == (2967, 2220)
        assert slide.mpp == pytest.approx(0.499) and slide.objective_power == 20
        region = slide.read(0, 1000, 800, 256, 256)
        thumb = slide.thumbnail(512)
        half = slide.regions(1.0)
        assert (half.height, half.width) == (1481, 1108)  # 2967 x 0.499, 2220 x 0.499
        assert half.mpp == 1.0 and half.read(0, 0, 64, 64).shape == (64, 64, 3)
        assert (slide.regions().height, slide.regions().width) == (2967, 2220)
        # Magnification is relative to the slide's own 20x: 10x halves it.
        assert slide.mpp_for(None, 10) == pytest.approx(0.998)
    assert region.dtype == np.uint8 and region.shape == (256, 256, 3)
    assert max(thumb.shape[:2]) == 512 and thumb.shape[2] == 3
    # The same pixels as tifffile decodes them (JPEG decoders may differ by a grey level).
    with tifffile.TiffFile(svs) as tif:
        level0 = tif.series[0].levels[0].asarray()
    assert np.abs(region.astype(int) - level0[1000:1256, 800:1056]).mean() < 1.0


def test_a_pyramidal_tiff_is_read_from_the_best_level(tmp_path):
    image = half_glass(1024, 768)
    path = write_slide(tmp_path / "slide.ome.tif", image, mpp=0.25)
    with open_slide(path) as slide:
        assert isinstance(slide, TiffSlide)
        assert slide.levels == [(1024, 768), (512, 384), (256, 192)]
        assert slide.mpp == pytest.approx(0.25)
        np.testing.assert_array_equal(slide.read(0, 100, 200, 64, 32), image[100:164, 200:232])
        at_half = slide.regions(0.5)
        assert at_half.level == 1 and (at_half.height, at_half.width) == (512, 384)
        with tifffile.TiffFile(path) as tif:
            level1 = tif.series[0].levels[1].asarray()
        # At exactly the level's resolution the Lanczos resize keeps its pixels.
        np.testing.assert_allclose(at_half.read(10, 20, 100, 100).astype(int),
                                   level1[10:110, 20:120], atol=2)
        between = slide.regions(0.7)  # 2.8x: from level 1 (2x), not level 2 (4x)
        assert between.level == 1 and (between.height, between.width) == (366, 274)
        # Neighbouring regions line up: reading in two halves equals reading at once.
        whole = between.read(0, 0, 100, 200)
        halves = np.concatenate([between.read(0, 0, 100, 100), between.read(0, 100, 100, 100)], 1)
        assert np.abs(whole.astype(int) - halves).max() <= 1
    assert read_at(path, Resolution(mpp=1.0)).shape == (256, 192, 3)


def test_resolution_settings_are_checked(tmp_path):
    with pytest.raises(StainvirtError, match="not both"):
        Resolution(mpp=0.5, magnification=20)
    with pytest.raises(StainvirtError, match="--mpp must be positive"):
        Resolution(mpp=0)
    png = save(tmp_path / "tile.png", tissue_image(64, 64))
    with pytest.raises(StainvirtError, match=r"tile.png: the file records no pixel size"):
        read_at(png, Resolution(mpp=0.5))
    # A run's default resolution falls back to the file's own, with a warning.
    assert read_at(png, Resolution(mpp=0.5, required=False)).shape == (64, 64, 3)


def test_slides_are_sampled_on_their_tissue_at_the_chosen_resolution(tmp_path):
    a, b = tmp_path / "A", tmp_path / "B"
    for i in range(2):
        write_slide(a / f"he{i}.ome.tif", half_glass(1024, 1024, seed=i), mpp=0.25)
    write_slide(b / "ihc.ome.tif", half_glass(1024, 1024, seed=5), mpp=0.25)
    out = tmp_path / "slides.npz"
    summary = prepare(a, b, out, tile_size=64, resolution=Resolution(mpp=0.5),
                      tiles_per_slide=20, test_fraction=0, progress=False)
    data = load_prepared(out)
    assert summary.counts["trainA"] == 40 and summary.counts["trainB"] == 20
    assert data.tiles["trainA"].shape[1:] == (64, 64, 3)
    assert data.settings["mpp"] == 0.5 and data.settings["tiles_per_slide"] == 20
    positions = data.positions["trainA"][data.sources["trainA"] == "he0.ome.tif"]
    # Level-0 positions of 64 px tiles read at half resolution: multiples of 128 ...
    assert (positions % 128 == 0).all()
    # ... on the tissue half only, and spread over it rather than bunched.
    assert (positions[:, 1] < 512).all()
    assert np.ptp(positions[:, 0]) >= 768 and len({tuple(p) for p in positions}) == 20
    assert summary.background_skipped > 0 and summary.not_sampled > 0
    again = prepare(a, b, tmp_path / "again.npz", tile_size=64, resolution=Resolution(mpp=0.5),
                    tiles_per_slide=20, test_fraction=0, progress=False)
    assert again.counts == summary.counts
    np.testing.assert_array_equal(load_prepared(tmp_path / "again.npz").tiles["trainA"],
                                  data.tiles["trainA"])


def test_prepare_warns_when_domains_differ_in_resolution(tmp_path, caplog):
    write_slide(tmp_path / "A" / "he.ome.tif", half_glass(512, 512), mpp=0.25)
    write_slide(tmp_path / "B" / "ihc.ome.tif", half_glass(512, 512, seed=3), mpp=0.5)
    prepare(tmp_path / "A", tmp_path / "B", tmp_path / "d.npz", tile_size=64, test_fraction=0,
            progress=False)
    assert "domain A is scanned at 0.25 microns per pixel and domain B at 0.5" in caplog.text
    caplog.clear()
    prepare(tmp_path / "A", tmp_path / "B", tmp_path / "d.npz", tile_size=64, test_fraction=0,
            resolution=Resolution(mpp=0.5), progress=False)
    assert "microns per pixel" not in caplog.text


def test_the_real_svs_goes_into_a_data_set(svs, tmp_path):
    (tmp_path / "A").mkdir()
    (tmp_path / "A" / svs.name).symlink_to(svs)
    write_slide(tmp_path / "B" / "ihc.ome.tif", tissue_image(512, 512, hue="ihc"), mpp=0.5)
    out = tmp_path / "svs.npz"
    summary = prepare(tmp_path / "A", tmp_path / "B", out, tile_size=128,
                      resolution=Resolution(magnification=10), tiles_per_slide=12,
                      test_fraction=0, progress=False)
    # The 20x SVS read at 10x (0.998 mpp); the IHC slide, recording no power, at 1 mpp.
    assert summary.counts == {"trainA": 12, "trainB": 4, "testA": 0, "testB": 0}
    assert load_prepared(out).settings["magnification"] == 10


def test_image_tiles_reads_only_tissue_tiles_of_a_slide():
    image = half_glass(512, 512)
    mask = np.zeros((64, 64), bool)
    mask[:, :32] = True  # the thumbnail says: tissue on the left half
    counts = TileCounts()

    class Counted:
        height = width = 512
        mpp = None
        reads = 0

        def read(self, top, left, height, width):
            Counted.reads += 1
            return image[top : top + height, left : left + width]

    tiles = list(image_tiles(Counted(), 64, 0.25, tissue=TissueMap(mask, 512, 512), counts=counts))
    assert len(tiles) == 32 and Counted.reads == 32  # glass tiles are never read
    assert all(x < 256 for _, x, _ in tiles)
    assert (counts.grid, counts.background, counts.kept) == (64, 32, 32)


def test_a_slide_is_translated_at_the_chosen_resolution(run_dir, tmp_path):
    source = write_slide(tmp_path / "slide.ome.tif", half_glass(512, 768), mpp=0.25)
    translator = Translator.from_run(run_dir, "A2B", resolution=Resolution(mpp=0.5),
                                     **SMALL_TILES)
    report = translator.translate_paths([source], tmp_path / "out", progress=False)
    out = report.outputs[source]
    assert out.name == "slide_A2B.ome.tif"
    with open_slide(out) as written:
        assert written.level_size(0) == (256, 384) and written.mpp == pytest.approx(0.5)
    assert report.megapixels == pytest.approx(256 * 384 / 1e6)
    # The right half is glass: the tile columns that start in it are copied through.
    starts = translator.tiling.plan(384).starts
    glass_columns = [x for x in starts if x >= 192]
    assert len(glass_columns) >= 3
    assert report.glass_megapixels / report.megapixels == pytest.approx(
        len(glass_columns) / len(starts))
    translated, seen = read_at(out), read_at(source, Resolution(mpp=0.5))
    # Beyond the last translated tile, the output is the input.
    end = max(x for x in starts if x < 192) + 64
    assert np.abs(translated[:, end:].astype(int) - seen[:, end:]).max() <= 1
    assert np.abs(translated[:, :150].astype(int) - seen[:, :150]).mean() > 2
    everything = Translator.from_run(run_dir, "A2B", resolution=Resolution(mpp=0.5),
                                     skip_background=False, **SMALL_TILES)
    full = everything.translate_paths([source], tmp_path / "all", progress=False)
    assert full.glass_megapixels == 0.0


def test_a_run_trained_at_an_mpp_reads_slides_at_it(run_dir, tmp_path):
    run = RunDir(tmp_path / "run")
    run.save_config(RunDir(run_dir).load_config())
    for direction in ("A2B", "B2A"):
        run.generator_path(direction).write_bytes(RunDir(run_dir).generator_path(direction)
                                                  .read_bytes())
    run.save_data_record({"prepare_settings": {"mpp": 0.5, "magnification": None}})
    translator = Translator.from_run(run.path, "A2B", **SMALL_TILES)
    assert translator.resolution == Resolution(mpp=0.5, required=False)
    slide = write_slide(tmp_path / "slide.ome.tif", half_glass(256, 256), mpp=0.25)
    png = save(tmp_path / "tile.png", tissue_image(96, 80))
    report = translator.translate_paths([slide, png], tmp_path / "out", progress=False)
    with open_regions(report.outputs[slide]) as out:
        assert (out.height, out.width, out.mpp) == (128, 128, pytest.approx(0.5))
    assert read_at(report.outputs[png]).shape == (96, 80, 3)  # no pixel size: its own
    assert Translator.from_run(run.path, "A2B", resolution=NATIVE).resolution == NATIVE


def _png_claiming(path: Path, width: int, height: int) -> Path:
    """A tiny PNG whose header claims another size (with a valid CRC)."""
    save(path, tissue_image(8, 8))
    data = bytearray(path.read_bytes())
    ihdr = struct.pack(">II", width, height) + bytes(data[24:29])
    data[16:29] = ihdr
    data[29:33] = struct.pack(">I", zlib.crc32(b"IHDR" + ihdr))
    path.write_bytes(bytes(data))
    return path


def test_bad_slides_and_images_get_one_clear_line(tmp_path):
    bomb = _png_claiming(tmp_path / "A" / "bomb.png", 90_000, 90_000)
    with pytest.raises(StainvirtError, match=r"bomb.png: 90000x90000 px is beyond the 250 "
                                             r"megapixel limit for PNG images"):
        read_at(bomb)
    truncated = tmp_path / "A" / "cut.png"
    save(truncated, tissue_image(300, 300))
    truncated.write_bytes(truncated.read_bytes()[:2000])
    with pytest.raises(StainvirtError, match="cut.png: not a readable image"):
        read_at(truncated)
    broken = tmp_path / "A" / "broken.svs"
    broken.write_bytes(b"II*\x00" + b"\x00" * 100)
    with pytest.raises(StainvirtError, match="broken.svs: cannot open the slide"):
        open_slide(broken)
    save(tmp_path / "A" / "fine.png", tissue_image(128, 128))
    save(tmp_path / "B" / "b.png", tissue_image(128, 128, hue="ihc"))
    summary = prepare(tmp_path / "A", tmp_path / "B", tmp_path / "d.npz", tile_size=64,
                      skip_bad=True, test_fraction=0, progress=False)
    assert sorted(Path(f).name for f in summary.bad_files) == ["bomb.png", "broken.svs",
                                                               "cut.png"]
    assert summary.counts["trainA"] == 4


def test_cli_prepare_on_slides_and_its_errors(tmp_path):
    write_slide(tmp_path / "A" / "he.ome.tif", half_glass(512, 512), mpp=0.25)
    save(tmp_path / "B" / "b.png", tissue_image(256, 256, hue="ihc"))

    def cli(*extra):
        return subprocess.run(
            [sys.executable, "-m", "stainvirt", "prepare", "--a", str(tmp_path / "A"),
             "--b", str(tmp_path / "B"), "--tile-size", "64", "--test-fraction", "0",
             "--out", str(tmp_path / "d.npz"), *extra],
            capture_output=True, text=True, cwd=REPO,
        )

    done = cli("--tiles-per-slide", "5")
    assert done.returncode == 0, done.stderr
    assert "tiles: trainA 5, trainB 5" in done.stdout
    refused = cli("--mpp", "0.5")  # the PNG in B records no pixel size
    assert refused.returncode == 1 and "Traceback" not in refused.stderr
    assert refused.stderr.strip().splitlines()[-1].startswith(
        f"error: {tmp_path / 'B' / 'b.png'}: the file records no pixel size")
    both = cli("--mpp", "0.5", "--magnification", "20")
    assert both.returncode == 2 and "not allowed with argument" in both.stderr
