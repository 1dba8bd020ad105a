"""Translation at toy size: sizes, tiling without seams, TIFF in and out, every bad input."""

from __future__ import annotations

import shutil

import numpy as np
import pytest
import tifffile
from conftest import SAMPLE, save, tissue_image
from PIL import Image

from stainvirt.config import preset
from stainvirt.errors import StainvirtError
from stainvirt.io.images import read_image
from stainvirt.io.regions import RawRegions, TiffRegions
from stainvirt.io.slides import open_regions, open_slide
from stainvirt.models import build_generator
from stainvirt.translate import Tiling, Translator, seam_ratio, write_figure

SMALL_TILES = dict(tile_size=64, overlap=16)


@pytest.fixture(scope="module")
def he() -> np.ndarray:
    """A real H&E region (512 x 512) from the bundled sample."""
    return read_image(sorted((SAMPLE / "testA").iterdir())[0])


@pytest.mark.parametrize("direction", ["A2B", "B2A"])
@pytest.mark.parametrize("size", [(37, 53), (1, 1), (150, 97), (64, 200)])
def test_output_has_the_input_size(run_dir, direction, size):
    translator = Translator.from_run(run_dir, direction, **SMALL_TILES)
    out = translator.translate_array(tissue_image(*size))
    assert out.shape == (*size, 3) and out.dtype == np.uint8


def test_one_tile_images_go_through_the_generator_in_one_pass(run_dir):
    translator = Translator.from_run(run_dir, "A2B", tile_size=128, overlap=16)
    image = tissue_image(96, 124)
    whole = translator.generator.predict_on_batch(image[None].astype(np.float32) / 127.5 - 1)
    expected = np.clip(np.round((whole[0] + 1) * 127.5), 0, 255)
    assert np.abs(translator.translate_array(image) - expected).max() <= 1


def test_tiles_cover_the_image_with_the_requested_overlap():
    tiling = Tiling(64, 16)
    for size in (65, 100, 113, 500):
        plan = tiling.plan(size)
        assert plan.starts[0] == 0 and plan.starts[-1] + plan.length == plan.extent
        assert 0 <= plan.extent - size < 4 and all(start % 4 == 0 for start in plan.starts)
        assert all(b - a <= 64 - 16 for a, b in zip(plan.starts, plan.starts[1:], strict=False))
        total = np.zeros(plan.extent)
        for start, weight in zip(plan.starts, plan.weights, strict=True):
            total[start : start + plan.length] += weight
        np.testing.assert_allclose(total, 1.0, atol=1e-6)


def test_a_constant_image_stays_constant_across_tile_borders():
    # The identity-initialised generator maps a flat image to a flat image: any
    # step in the output could only come from cutting, padding or blending.
    cfg = preset("tiny", residual_output=True)
    translator = Translator(build_generator(cfg), Tiling.for_config(cfg, 64, 16), batch_size=3)
    out = translator.translate_array(np.full((150, 230, 3), (200, 120, 180), np.uint8))
    assert np.ptp(out.reshape(-1, 3), axis=0).max() <= 1


def test_blended_tiles_show_no_seams_on_real_tissue(he):
    # Instance norm gives every tile its own statistics, so hard tile borders
    # show; cross-faded ones must not stand out from the picture. (The cpu
    # preset's features, unlike the tiny one's noise, make seams measurable.)
    cfg = preset("cpu", residual_output=False)
    generator, image = build_generator(cfg), he[:256, :256]
    ratios = {}
    for overlap in (0, 16):
        translator = Translator(generator, Tiling.for_config(cfg, 64, overlap), batch_size=4)
        ratios[overlap] = seam_ratio(translator.translate_array(image), translator.tiling)
    assert ratios[16] < 1.2 and ratios[0] > 1.5


def test_skip_background_copies_glass_through(run_dir):
    translator = Translator.from_run(run_dir, "A2B", skip_background=True, **SMALL_TILES)
    glass = np.full((100, 150, 3), 235, np.uint8)
    np.testing.assert_array_equal(translator.translate_array(glass), glass)
    # Tissue is still translated.
    tissue = tissue_image(100, 150)
    assert not np.array_equal(translator.translate_array(tissue), tissue)


@pytest.mark.parametrize(
    ("options", "reader"),
    [(dict(tile=(32, 48), compression="jpeg"), TiffRegions),
     (dict(rowsperstrip=7, compression="zlib"), TiffRegions),
     (dict(rowsperstrip=7), RawRegions), ({}, RawRegions)],
    ids=["tiled-jpeg", "zlib-strips", "raw-strips", "raw-one-strip"],
)
def test_tiffs_are_read_region_by_region(tmp_path, options, reader):
    image = tissue_image(130, 170)
    tifffile.imwrite(tmp_path / "a.tif", image, photometric="rgb", **options)
    whole = read_image(tmp_path / "a.tif")
    with open_slide(tmp_path / "a.tif") as slide:
        assert isinstance(slide.level_regions[0], reader)
        regions = slide.regions()
        assert (regions.height, regions.width) == (130, 170)
        for top, left, height, width in [(0, 0, 130, 170), (5, 40, 64, 64), (100, 150, 30, 20)]:
            np.testing.assert_array_equal(regions.read(top, left, height, width),
                                          whole[top : top + height, left : left + width])


def test_tiff_in_tiff_out_keeps_size_resolution_and_pixels(run_dir, tmp_path):
    image = tissue_image(600, 300)
    source = tmp_path / "slide.tif"
    tifffile.imwrite(source, image, tile=(64, 64), compression="jpeg", photometric="rgb",
                     resolution=(1e4 / 0.25, 1e4 / 0.25), resolutionunit="CENTIMETER")
    with open_regions(source) as regions:
        assert regions.mpp == pytest.approx(0.25)
    translator = Translator.from_run(run_dir, "A2B", **SMALL_TILES)
    out = translator.translate_file(source, tmp_path / "out")
    assert out == tmp_path / "out" / "slide_A2B.ome.tif"
    with tifffile.TiffFile(out) as tif:
        assert tif.is_ome
        assert [level.shape for level in tif.series[0].levels] == [
            (600, 300, 3), (300, 150, 3), (150, 75, 3)
        ]
        translated = tif.series[0].asarray()
    assert translated.dtype == np.uint8
    np.testing.assert_array_equal(translated, translator.translate_array(read_image(source)))
    with open_regions(out) as regions:
        assert regions.mpp == pytest.approx(0.25)


def test_folders_keep_their_layout_and_png_is_the_default_for_png(run_dir, tmp_path):
    save(tmp_path / "in" / "a.png", tissue_image(40, 44))
    save(tmp_path / "in" / "sub" / "b.jpg", tissue_image(70, 90))
    translator = Translator.from_run(run_dir, "B2A", **SMALL_TILES)
    report = translator.translate_paths([tmp_path / "in"], tmp_path / "out", progress=False)
    assert sorted(report.outputs.values()) == [
        tmp_path / "out" / "a_B2A.png", tmp_path / "out" / "sub" / "b_B2A.png"
    ]
    assert Image.open(tmp_path / "out" / "sub" / "b_B2A.png").size == (90, 70)
    assert report.failures == [] and report.megapixels == pytest.approx((40 * 44 + 70 * 90) / 1e6)


def test_a_bad_image_is_named_and_the_rest_translated(run_dir, tmp_path):
    save(tmp_path / "in" / "good.png", tissue_image(40, 40))
    (tmp_path / "in" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\nnot really")
    (tmp_path / "in" / "broken.tif").write_bytes(b"II*\x00garbage")
    translator = Translator.from_run(run_dir, "A2B", **SMALL_TILES)
    report = translator.translate_paths([tmp_path / "in"], tmp_path / "out", progress=False)
    assert list(report.outputs.values()) == [tmp_path / "out" / "good_A2B.png"]
    assert sorted(p.name for p, _ in report.failures) == ["broken.png", "broken.tif"]
    assert all(str(path) in message for path, message in report.failures)


def test_outputs_never_overwrite_inputs_or_each_other(run_dir, tmp_path):
    save(tmp_path / "a.png", tissue_image(40, 40))
    save(tmp_path / "a_A2B.png", tissue_image(40, 40, seed=1))
    save(tmp_path / "b.png", tissue_image(40, 40, seed=2))
    save(tmp_path / "b.jpg", tissue_image(40, 40, seed=3))
    before = (tmp_path / "a_A2B.png").read_bytes()
    translator = Translator.from_run(run_dir, "A2B", **SMALL_TILES)
    report = translator.translate_paths([tmp_path], tmp_path, progress=False)
    assert (tmp_path / "a_A2B.png").read_bytes() == before
    failures = dict(report.failures)
    assert sorted(p.name for p in failures) == ["a.png", "b.png"]
    assert "overwrite an input" in failures[tmp_path / "a.png"]
    assert "another input of the same name" in failures[tmp_path / "b.png"]
    assert report.outputs[tmp_path / "b.jpg"] == tmp_path / "b_A2B.png"


def test_the_figure_shows_input_translation_and_round_trip(run_dir, tmp_path):
    images = [save(tmp_path / "he.png", tissue_image(80, 120)), *(SAMPLE / "testB").iterdir()]
    out = write_figure(run_dir, images[:2], tmp_path / "fig" / "figure.png", max_side=96)
    with Image.open(out) as figure:
        assert figure.format == "PNG" and figure.width > 300
    assert list((tmp_path / "fig").iterdir()) == [out]  # no temporary file left behind


@pytest.mark.parametrize(
    ("damage", "match"),
    [
        ("no folder", "run folder not found"),
        ("config.json", "no config.json found"),
        ("G_AB.keras", "G_AB.keras: model not found"),
        ("corrupt G_AB.keras", "G_AB.keras: the model does not load"),
    ],
)
def test_bad_run_folders_are_clear_errors(run_dir, tmp_path, damage, match):
    run = tmp_path / "run"
    shutil.copytree(run_dir, run)
    if damage == "no folder":
        run = tmp_path / "nothing-here"
    elif damage.startswith("corrupt"):
        (run / "G_AB.keras").write_bytes(b"not a zip file")
    else:
        (run / damage).unlink()
    with pytest.raises(StainvirtError, match=match):
        Translator.from_run(run, "A2B")


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        (dict(direction="C2D"), "unknown direction 'C2D'"),
        (dict(overlap=64, tile_size=64), "overlap 64 must be .* smaller than the tile size 64"),
        (dict(tile_size=66), "tile size 66 does not fit"),
        (dict(batch_size=0), "batch size must be at least 1"),
    ],
)
def test_bad_settings_are_clear_errors(run_dir, kwargs, match):
    with pytest.raises(StainvirtError, match=match):
        Translator.from_run(run_dir, **{"direction": "A2B", **kwargs})


def test_an_unwritable_output_folder_is_a_clear_error(run_dir, tmp_path):
    save(tmp_path / "a.png", tissue_image(40, 40))
    (tmp_path / "file").write_text("a file, not a folder")
    translator = Translator.from_run(run_dir, "A2B", **SMALL_TILES)
    with pytest.raises(StainvirtError, match="cannot create the output folder"):
        translator.translate_paths([tmp_path / "a.png"], tmp_path / "file" / "out")


def test_unknown_output_format_is_a_clear_error(run_dir, tmp_path):
    translator = Translator.from_run(run_dir, "A2B", **SMALL_TILES)
    with pytest.raises(StainvirtError, match="unknown output format 'jpg'"):
        translator.translate_file(save(tmp_path / "a.png", tissue_image(40, 40)), tmp_path, "jpg")
