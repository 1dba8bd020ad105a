"""Runs on label-free domains: greyscale 16-bit and float in, RGB out and back, and evaluation."""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import tifffile
from conftest import REPO, save, tissue_image
from PIL import Image

from stainvirt.domain import RGB, Domain
from stainvirt.errors import StainvirtError
from stainvirt.evaluate import evaluate, write_report
from stainvirt.io.native import read_native
from stainvirt.translate import Translator

SMALL_TILES = dict(tile_size=64, overlap=16)
GREY16 = Domain(1, "uint16", 100.0, 4000.0, "percentile")
PHASE = Domain(1, "float32", -0.5, 2.5, "fixed")


def make_run(path: Path, a: Domain, b: Domain) -> Path:
    """A run folder on domains ``a`` and ``b`` with identity-like generators.

    Between equal channel counts, untrained residual generators (the identity);
    between different ones, a 1x1 convolution that copies a grey level into every
    channel, or averages the channels into one, so the scaling shows in the output.
    """
    import keras

    from stainvirt.config import preset
    from stainvirt.models import build_generator
    from stainvirt.rundir import DIRECTIONS, RunDir

    run = RunDir(path)
    cfg = preset("tiny", channels_a=a.channels, channels_b=b.channels, residual_output=True)
    run.save_config(cfg)
    for direction, spec in DIRECTIONS.items():
        source, target = (a, b) if direction == "A2B" else (b, a)
        if source.channels == target.channels:
            generator = build_generator(cfg, spec.generator)
        else:
            image = keras.Input((None, None, source.channels))
            mix = keras.layers.Conv2D(target.channels, 1, use_bias=False)
            generator = keras.Model(image, mix(image), name=spec.generator)
            mix.set_weights([np.full((1, 1, source.channels, target.channels),
                                     1.0 / source.channels, np.float32)])
        run.save_generator(generator, direction)
    run.save_data_record({"domains": {"A": a.to_dict(), "B": b.to_dict()}})
    return run.path


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> dict[str, Path]:
    """Runs whose domain A is 16-bit greyscale or float phase, and B is RGB."""
    root = tmp_path_factory.mktemp("native-runs")
    return {"uint16": make_run(root / "grey16", GREY16, RGB),
            "float32": make_run(root / "phase", PHASE, RGB)}


def grey_image(domain: Domain, height: int, width: int, seed: int = 0) -> np.ndarray:
    """A random greyscale image of ``domain``, mostly inside its range, as stored."""
    rng = np.random.default_rng(seed)
    span = domain.high - domain.low
    values = domain.low + span * rng.uniform(-0.05, 1.05, (height, width))
    return values.astype(np.float32) if domain.dtype == "float32" else values.astype(np.uint16)


def as_unit(pixels: np.ndarray, domain: Domain) -> np.ndarray:
    """Pixels scaled to [0, 1] by the domain's range, as the run sees them."""
    return (np.clip(pixels.astype(np.float64), domain.low, domain.high) - domain.low) / (
        domain.high - domain.low)


@pytest.mark.parametrize("dtype", ["uint16", "float32"])
def test_greyscale_in_rgb_out_is_scaled_by_the_runs_range(runs, tmp_path, dtype):
    domain = GREY16 if dtype == "uint16" else PHASE
    image = grey_image(domain, 90, 130)
    tifffile.imwrite(tmp_path / "in.tif", image)
    translator = Translator.from_run(runs[dtype], "A2B", **SMALL_TILES)
    assert translator.source == domain and translator.target == RGB
    report = translator.translate_paths([tmp_path / "in.tif"], tmp_path / "out", progress=False)
    assert report.failures == [] and report.views == {}
    out = read_native(report.outputs[tmp_path / "in.tif"])
    assert out.shape == (1, 90, 130, 3) and out.dtype == np.uint8
    # An identity-like generator shows the scaling itself: the run's range, not the image's.
    expected = np.round(as_unit(image, domain) * 255)
    assert np.abs(out[0].astype(float) - expected[..., None]).max() <= 2


@pytest.mark.parametrize("dtype", ["uint16", "float32"])
def test_rgb_in_greyscale_out_in_the_domains_own_kind(runs, tmp_path, dtype):
    domain = GREY16 if dtype == "uint16" else PHASE
    rgb = tissue_image(300, 270)  # more than one tile of the TIFF written
    save(tmp_path / "he.png", rgb)
    translator = Translator.from_run(runs[dtype], "B2A", **SMALL_TILES)
    out = translator.translate_file(tmp_path / "he.png", tmp_path / "out")
    assert out == tmp_path / "out" / "he_B2A.ome.tif"  # TIFF by default: not RGB
    pixels = tifffile.imread(out)
    assert pixels.shape == (300, 270) and pixels.dtype == np.dtype(dtype)
    assert domain.low <= pixels.min() and pixels.max() <= domain.high
    # Three channels into one go through the grey level, scaled onto the run's range.
    unit = rgb.astype(float).mean(axis=-1) / 255
    assert np.abs(as_unit(pixels, domain) - unit).max() < 0.02
    np.testing.assert_array_equal(pixels[..., None], translator.translate_array(rgb))


def test_multi_channel_domains_are_read_and_written_as_stored(tmp_path):
    channels = Domain(2, "float32", 0.0, 1.0, "full")
    run = make_run(tmp_path / "run", channels, RGB)
    save(tmp_path / "he.png", tissue_image(60, 70))
    to_channels = Translator.from_run(run, "B2A", **SMALL_TILES)
    out = to_channels.translate_file(tmp_path / "he.png", tmp_path / "out")
    pixels = read_native(out)
    assert pixels.shape == (1, 60, 70, 2) and pixels.dtype == np.float32
    assert pixels.min() >= 0.0 and pixels.max() <= 1.0
    back = Translator.from_run(run, "A2B", **SMALL_TILES).translate_file(out, tmp_path / "back")
    assert read_native(back).shape == (1, 60, 70, 3)


def test_16bit_greyscale_may_be_a_png_but_float_may_not(runs, tmp_path):
    save(tmp_path / "he.png", tissue_image(40, 50))
    out = Translator.from_run(runs["uint16"], "B2A", **SMALL_TILES).translate_file(
        tmp_path / "he.png", tmp_path / "out", fmt="png")
    with Image.open(out) as png:
        assert png.mode.startswith("I;16") and png.size == (50, 40)
    assert read_native(out).dtype == np.uint16
    float_run = Translator.from_run(runs["float32"], "B2A", **SMALL_TILES)
    with pytest.raises(StainvirtError, match=r"PNG cannot hold .*float32.*use --format tiff"):
        float_run.translate_file(tmp_path / "he.png", tmp_path / "out", fmt="png")


@pytest.mark.parametrize("direction", ["A2B", "B2A"])
def test_a_constant_image_stays_constant_across_tile_borders(runs, direction):
    translator = Translator.from_run(runs["uint16"], direction, batch_size=3, **SMALL_TILES)
    if direction == "A2B":
        image = np.full((150, 230), 2100, np.uint16)
    else:
        image = np.full((150, 230, 3), (200, 120, 180), np.uint8)
    out = translator.translate_array(image)
    assert translator.tiling.count(150, 230) > 4
    assert out.shape == (150, 230, 3 if direction == "A2B" else 1)
    assert np.ptp(out.reshape(-1, out.shape[-1]).astype(float), axis=0).max() <= 1


def test_inputs_are_checked_against_the_runs_domain(runs, tmp_path, caplog):
    translator = Translator.from_run(runs["uint16"], "A2B", **SMALL_TILES)
    save(tmp_path / "rgb.png", tissue_image(40, 40))
    with pytest.raises(StainvirtError, match=r"rgb.png: 3-channel image, but the run was "
                                             r"trained on 1-channel uint16"):
        translator.translate_file(tmp_path / "rgb.png", tmp_path / "out")
    with pytest.raises(StainvirtError, match="rgb.png: 3-channel image"):
        translator.translate_paths([tmp_path], tmp_path / "out", progress=False)
    assert not (tmp_path / "out").exists()  # refused before anything was written
    # Another pixel type than the run's is scaled with the run's range, with a warning.
    save(tmp_path / "grey" / "eight.png", np.full((40, 40), 200, np.uint8))
    with caplog.at_level(logging.WARNING, logger="stainvirt"):
        report = translator.translate_paths([tmp_path / "grey"], tmp_path / "out",
                                            progress=False)
    assert report.failures == [] and "uint8 pixels, but the run was trained on" in caplog.text


def test_an_rgb_image_given_to_a_greyscale_run_is_one_clear_line(runs, tmp_path):
    save(tmp_path / "in" / "colour.png", tissue_image(40, 40))
    proc = subprocess.run(
        [sys.executable, "-m", "stainvirt", "translate", "--direction", "A2B", "--model",
         str(runs["uint16"]), str(tmp_path / "in"), "--out", str(tmp_path / "out"),
         "--tile-size", "64", "--overlap", "16"],
        capture_output=True, text=True, cwd=REPO, timeout=300,
        env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"},
    )
    assert proc.returncode == 1
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    assert lines[0].startswith("error: ") and "colour.png: 3-channel image" in lines[0]
    assert "give 1-channel images" in lines[0] and "Traceback" not in proc.stderr


def test_an_rgb_run_still_converts_16bit_greyscale(run_dir, tmp_path, caplog):
    grey = (np.arange(60 * 80, dtype=np.uint32).reshape(60, 80) * 13 % 65536).astype(np.uint16)
    tifffile.imwrite(tmp_path / "grey16.tif", grey)
    translator = Translator.from_run(run_dir, "A2B", **SMALL_TILES)
    with caplog.at_level(logging.WARNING, logger="stainvirt"):
        out = translator.translate_file(tmp_path / "grey16.tif", tmp_path / "out")
    assert tifffile.imread(out).shape == (60, 80, 3)
    assert "16-bit image scaled to 8-bit" in caplog.text


@pytest.fixture(scope="module")
def paired_grey(tmp_path_factory) -> Path:
    """Registered pairs: RGB (domain B) and 16-bit greyscale (domain A) of the same names."""
    root = tmp_path_factory.mktemp("paired-grey")
    (root / "grey").mkdir()
    for i in range(3):
        rgb = tissue_image(48, 56, seed=i)
        save(root / "rgb" / f"t{i}.png", rgb)
        grey = GREY16.low + rgb.mean(axis=-1) / 255 * (GREY16.high - GREY16.low)
        noise = np.random.default_rng(i).normal(0, 60, grey.shape)
        tifffile.imwrite(root / "grey" / f"t{i}.tif", (grey + noise).astype(np.uint16))
    return root


def test_evaluate_on_a_greyscale_output_scores_intensities_only(runs, paired_grey, tmp_path):
    result = evaluate(runs["uint16"], "B2A", paired_grey / "rgb", target=paired_grey / "grey",
                      paired=True, baselines=True, figure_images=1, progress=False)
    # RGB in, one channel out: no identity, and Reinhard is a colour transfer.
    assert result.methods == ("model",)
    assert all(set(image["metrics"]["model"]) == {"psnr", "ssim"} for image in result.images)
    summary = result.summary()["model"]
    assert 15 < summary["psnr"] < 100 and 0 < summary["ssim"] <= 1
    settings = result.settings
    assert "data_range=1" in settings["psnr_ssim"] and "stains_correlated" not in settings
    assert "1-channel uint16" in settings["stain_metrics"]

    paths = write_report(result, tmp_path / "report")
    report = json.loads(paths["json"].read_text())
    assert report["settings"]["domains"]["target"].startswith("1-channel uint16")
    md = paths["markdown"].read_text()
    assert "The stain metrics (DAB, hematoxylin and eosin correlations, DAB Dice)" in md
    assert "are skipped" in md and "DAB r" not in md and "W1" not in md
    assert "Identity baseline: none, since the input has 3 channel(s)" in md
    assert paths["figure"].stat().st_size > 0


def test_evaluate_greyscale_to_rgb_replicates_the_grey_as_identity(runs, paired_grey):
    result = evaluate(runs["uint16"], "A2B", paired_grey / "grey", target=paired_grey / "rgb",
                      paired=True, baselines=True, figure_images=0, progress=False)
    assert result.methods == ("model", "identity", "reinhard")
    assert {"psnr", "ssim", "dab_corr"} <= set(result.images[0]["metrics"]["identity"])
    assert "replicated to RGB" in result.settings["identity_baseline"]
    assert 5 < result.summary()["identity"]["psnr"] < 100
