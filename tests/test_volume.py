"""Stacks of slices: translated slice by slice with one scaling, written as stacks, viewed in 3D."""

from __future__ import annotations

import numpy as np
import pytest
import tifffile
from conftest import tissue_image
from PIL import Image
from test_native_translate import GREY16, SMALL_TILES, as_unit, make_run

from stainvirt.cli import main
from stainvirt.domain import RGB, Domain
from stainvirt.translate import Translator
from stainvirt.translate.volume import Sections, views_path, write_views


@pytest.fixture(scope="module")
def grey_run(tmp_path_factory):
    """A run whose domain A is 16-bit greyscale and B is RGB."""
    return make_run(tmp_path_factory.mktemp("volume-run") / "run", GREY16, RGB)


def flickery_volume() -> tuple[np.ndarray, int]:
    """Slices of one image at brightness factors near 1, one with a bright spot; the spot's z."""
    rng = np.random.default_rng(0)
    base = rng.uniform(0.2, 0.6, (100, 90))
    factors = [1.0, 1.02, 0.98, 1.01, 0.99, 1.03, 1.0]
    unit = np.stack([base * f for f in factors])
    spot = 3
    unit[spot, 40:56, 30:46] = 0.98  # about 3% of the slice
    pixels = GREY16.low + unit * (GREY16.high - GREY16.low)
    return pixels.astype(np.uint16), spot


def test_a_greyscale_stack_becomes_an_rgb_stack_that_does_not_flicker(grey_run, tmp_path):
    volume, spot = flickery_volume()
    tifffile.imwrite(tmp_path / "stack.tif", volume, metadata={"axes": "ZYX"})
    translator = Translator.from_run(grey_run, "A2B", **SMALL_TILES)
    report = translator.translate_paths([tmp_path / "stack.tif"], tmp_path / "out",
                                        progress=False)
    out_path = tmp_path / "out" / "stack_A2B.ome.tif"
    assert report.outputs == {tmp_path / "stack.tif": out_path} and report.failures == []
    with tifffile.TiffFile(out_path) as tif:
        out = tif.series[0].asarray()
        assert tif.pages[0].photometric == tifffile.PHOTOMETRIC.RGB
    assert out.shape == (7, 100, 90, 3) and out.dtype == np.uint8
    assert report.megapixels == pytest.approx(7 * 100 * 90 / 1e6)

    # Slice-to-slice jumps of the mean intensity: the output's follow the input's
    # under the run's one scaling, bright spot included.
    jumps_in = np.abs(np.diff(as_unit(volume, GREY16).mean(axis=(1, 2))))
    jumps_out = np.abs(np.diff(out.mean(axis=(1, 2, 3)) / 255))
    assert (jumps_out <= jumps_in + 0.005).all(), (jumps_out, jumps_in)
    # The test has teeth: stretching each slice to its own range would break it
    # at the spot, which squeezes the rest of its slice.
    lows, highs = volume.min(axis=(1, 2), keepdims=True), volume.max(axis=(1, 2), keepdims=True)
    stretched = (volume - lows) / (highs - lows.astype(float))
    jumps_stretched = np.abs(np.diff(stretched.mean(axis=(1, 2))))
    assert jumps_stretched[spot - 1] > jumps_in[spot - 1] + 0.05

    figure = report.views[tmp_path / "stack.tif"]
    assert figure == tmp_path / "out" / "stack_A2B_views.png" == views_path(out_path)
    with Image.open(figure) as png:
        assert png.format == "PNG" and png.width > 400
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == [
        "stack_A2B.ome.tif", "stack_A2B_views.png"]  # no temporary files left


def test_an_rgb_stack_in_an_rgb_run_matches_its_slices(run_dir, tmp_path):
    volume = np.stack([tissue_image(70, 80, seed) for seed in range(3)])
    tifffile.imwrite(tmp_path / "rgb.tif", volume, photometric="rgb", metadata={"axes": "ZYXS"})
    translator = Translator.from_run(run_dir, "A2B", **SMALL_TILES)
    out = translator.translate_file(tmp_path / "rgb.tif", tmp_path / "out", views=False)
    stack = tifffile.imread(out)
    assert stack.shape == (3, 70, 80, 3) and stack.dtype == np.uint8
    for z in range(3):
        np.testing.assert_array_equal(stack[z], translator.translate_array(volume[z]))
    assert not views_path(out).exists()


def test_an_rgb_stack_becomes_a_greyscale_stack_in_range(grey_run, tmp_path):
    volume = np.stack([tissue_image(50, 60, seed) for seed in range(4)])
    tifffile.imwrite(tmp_path / "rgb.tif", volume, photometric="rgb")
    translator = Translator.from_run(grey_run, "B2A", **SMALL_TILES)
    report = translator.translate_paths([tmp_path / "rgb.tif"], tmp_path / "out",
                                        progress=False)
    stack = tifffile.imread(report.outputs[tmp_path / "rgb.tif"])
    assert stack.shape == (4, 50, 60) and stack.dtype == np.uint16
    assert GREY16.low <= stack.min() and stack.max() <= GREY16.high
    assert report.views[tmp_path / "rgb.tif"].is_file()

    png = translator.translate_paths([tmp_path / "rgb.tif"], tmp_path / "png", fmt="png",
                                     progress=False)
    assert png.outputs == {} and "a stack of 4 slices cannot be a PNG" in png.failures[0][1]


def test_views_switch_on_the_command_line(grey_run, tmp_path, capsys):
    volume, _ = flickery_volume()
    (tmp_path / "in").mkdir()
    tifffile.imwrite(tmp_path / "in" / "stack.tif", volume[:3], photometric="minisblack",
                     metadata={"axes": "ZYX"})
    args = ["--quiet", "translate", "--direction", "A2B", "--model", str(grey_run),
            str(tmp_path / "in"), "--tile-size", "64", "--overlap", "16"]
    assert main([*args, "--out", str(tmp_path / "a")]) == 0
    assert f"views: {tmp_path / 'a' / 'stack_A2B_views.png'}" in capsys.readouterr().out
    assert main([*args, "--out", str(tmp_path / "b"), "--no-views"]) == 0
    assert [p.name for p in (tmp_path / "b").iterdir()] == ["stack_A2B.ome.tif"]


@pytest.mark.parametrize("channels", [1, 3, 5])
def test_views_show_any_channel_count(tmp_path, channels):
    domain = Domain(channels, "float32", 0.0, 1.0, "full")
    rng = np.random.default_rng(channels)
    volume = rng.uniform(0, 1, (4, 30, 50, channels)).astype(np.float32)
    cuts = Sections.of(volume)
    assert [c.shape[:2] for c in cuts] == [(30, 50), (4, 50), (30, 4)]
    path = write_views(tmp_path / "v_views.png", (cuts, cuts), (domain, domain), ("in", "out"))
    with Image.open(path) as png:
        assert png.format == "PNG" and png.mode == "RGB"
