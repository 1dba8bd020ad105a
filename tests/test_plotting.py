"""Image grids and figure files: the format follows the suffix, a bad suffix writes nothing."""

from __future__ import annotations

import xml.etree.ElementTree as ET

import numpy as np
import pytest
from PIL import Image

from stainvirt.errors import StainvirtError
from stainvirt.plotting import check_figure_path, display_rgb, image_grid, save_figure


def small_grid(suptitle: str | None = None):
    rng = np.random.default_rng(0)
    rows = [[rng.integers(0, 256, (8, 8, 3), dtype=np.uint8) for _ in range(3)] for _ in range(2)]
    titles = [("input", "output", "round trip")] * 2
    return image_grid(rows, titles, ["a.png", "b.png"], row_size=(3, 1), suptitle=suptitle)


def test_grid_has_a_titled_panel_per_image_and_row_labels_above_the_first():
    fig = small_grid("epoch 1")
    assert [ax.get_title() for ax in fig.axes] == [
        "a.png\ninput", "output", "round trip", "b.png\ninput", "output", "round trip"
    ]
    assert [ax.get_images()[0].get_array().shape for ax in fig.axes] == [(8, 8, 3)] * 6
    assert tuple(fig.get_size_inches()) == (3, 2)
    assert fig.get_suptitle() == "epoch 1"


def test_png_is_rgb_without_alpha(tmp_path):
    path = save_figure(small_grid(), tmp_path / "fig.png", dpi=50)
    with Image.open(path) as image:
        assert (image.format, image.mode, image.size) == ("PNG", "RGB", (150, 100))


def test_pdf_is_a_pdf(tmp_path):
    path = save_figure(small_grid(), tmp_path / "fig.pdf")
    assert path.read_bytes().startswith(b"%PDF")


def test_svg_is_svg_xml(tmp_path):
    path = save_figure(small_grid(), tmp_path / "fig.SVG")
    assert ET.parse(path).getroot().tag == "{http://www.w3.org/2000/svg}svg"
    assert "<svg" in path.read_text()


@pytest.mark.parametrize("name", ["fig.jpg", "fig", "fig.png.txt"])
def test_unknown_suffix_is_refused_and_nothing_is_written(tmp_path, name):
    with pytest.raises(StainvirtError, match=r"fig.*\.png, \.pdf, \.svg"):
        check_figure_path(tmp_path / name)
    with pytest.raises(StainvirtError, match=r"fig.*\.png, \.pdf, \.svg"):
        save_figure(small_grid(), tmp_path / "out" / name)
    assert list(tmp_path.iterdir()) == []


def test_display_rgb_shows_any_channel_count_as_a_picture():
    rgb = np.arange(48, dtype=np.uint8).reshape(4, 4, 3)
    assert display_rgb(rgb) is rgb  # 8-bit colour is shown as it is
    grey = display_rgb(np.full((4, 4), 3000, np.uint16), low=1000, high=5000)
    assert grey.shape == (4, 4, 3) and (grey == 128).all()  # halfway through the range
    five = np.zeros((4, 4, 5), np.float32)
    five[..., 0] = 1.0  # the mean of five channels: one fifth of white
    assert (display_rgb(five, 0.0, 1.0) == 51).all()
