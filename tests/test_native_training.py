"""Training on label-free domains (1-channel, 16-bit, float) and the structure loss."""

from __future__ import annotations

import json
from pathlib import Path

import keras
import numpy as np
import pytest
from PIL import Image

from stainvirt.cli import build_parser
from stainvirt.config import preset
from stainvirt.domain import RGB, Domain, fit_domain
from stainvirt.errors import StainvirtError
from stainvirt.models import build_generator
from stainvirt.rundir import RunDir
from stainvirt.training.data import UnpairedSampler, make_dataset, resize
from stainvirt.training.figures import save_sample_grid
from stainvirt.training.structure import grey, hematoxylin, structure_loss
from stainvirt.training.trainer import train


def tiny(**changes):
    return preset("tiny", epochs=1, epochs_decay=0, steps_per_epoch=2).replace(**changes)


def grey_tiles(n: int, side: int, dtype: str, seed: int = 0) -> np.ndarray:
    """Smooth random 1-channel tiles: 16-bit counts around 1,500, or floats around 0.5."""
    rng = np.random.default_rng(seed)
    noise = rng.normal(0, 1, (n, side + 4, side + 4))
    smooth = sum(noise[:, i : i + side, j : j + side] for i in range(5) for j in range(5)) / 5
    if dtype == "uint16":
        return np.clip(1500 + 400 * smooth, 0, 65535).astype(np.uint16)[..., None]
    return (0.5 + 0.15 * smooth).astype(np.float32)[..., None]


def rgb_tiles(n: int, side: int, seed: int = 1) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (n, side, side, 3), dtype=np.uint8)


def write_dataset(path: Path, a: np.ndarray, b: np.ndarray, domains: dict[str, Domain]) -> Path:
    """A data set in the format of stainvirt.dataset: all tiles in train, the first two in test."""
    arrays: dict[str, np.ndarray] = {}
    for split, tiles in (("trainA", a), ("trainB", b), ("testA", a[:2]), ("testB", b[:2])):
        arrays[split] = tiles
        arrays[f"{split}_source"] = np.array([f"{split}_{i}.tif" for i in range(len(tiles))])
        arrays[f"{split}_position"] = np.zeros((len(tiles), 2), np.int32)
    for split in ("train", "test"):
        arrays[f"{split}_pairs"] = np.zeros((0, 2), np.int32)
    settings = {"tile_size": a.shape[1], "domains": {d: k.to_dict() for d, k in domains.items()}}
    arrays["settings"] = np.array(json.dumps(settings))
    np.savez_compressed(path, **arrays)
    return path


@pytest.fixture(scope="module")
def grey16(tmp_path_factory) -> tuple[Path, dict[str, Domain]]:
    """1-channel uint16 A (percentile range) and RGB B, 48 px tiles."""
    a = grey_tiles(4, 48, "uint16")
    domains = {"A": fit_domain(1, "uint16", a, "percentile"), "B": RGB}
    return write_dataset(tmp_path_factory.mktemp("grey16") / "grey16.npz", a, rgb_tiles(4, 48),
                         domains), domains


def test_a_16_bit_grey_domain_trains_resumes_and_keeps_its_kind(grey16, tmp_path):
    data, domains = grey16
    assert domains["A"].scaling == "percentile" and domains["A"].dtype == "uint16"
    run = RunDir(tmp_path / "run")
    assert train(data, run.path, tiny(), verbose=0).steps_done == 2
    cfg = run.load_config()
    assert (cfg.channels_a, cfg.channels_b) == (1, 3)
    assert run.data_record()["domains"] == {d: k.to_dict() for d, k in domains.items()}
    assert run.domains() == domains
    g_ab, g_ba = run.load_generator("A2B"), run.load_generator("B2A")
    fake = np.asarray(g_ab(np.zeros((1, 32, 32, 1), np.float32)))
    assert fake.shape == (1, 32, 32, 3) and np.isfinite(fake).all()
    assert np.asarray(g_ba(fake)).shape == (1, 32, 32, 1)
    rows = run.read_history()
    # No identity loss between 1 and 3 channels, and no structure columns unless asked for.
    assert rows[0]["G_AB_idt"] == rows[0]["G_BA_idt"] == 0
    assert "G_AB_struct" not in rows[0]
    assert run.sample_path(1).is_file()

    # Resume (also with a preset that knows nothing of channels): the run goes on.
    again = train(None, run.path, tiny(), overrides={"epochs": 2}, verbose=0)
    assert (again.epochs_done, again.steps_done) == (2, 4)
    assert [r["epoch"] for r in run.read_history()] == [1, 2]

    rgb = write_dataset(tmp_path / "rgb.npz", rgb_tiles(4, 48, 5), rgb_tiles(4, 48),
                        {"A": RGB, "B": RGB})
    with pytest.raises(StainvirtError) as error:
        train(rgb, run.path, None, overrides={"epochs": 3}, verbose=0)
    message = str(error.value)
    assert "\n" not in message
    assert message.startswith(f"{rgb} holds A: RGB 8-bit, B: RGB 8-bit, but {run.path} was "
                              "trained on A: 1-channel uint16")
    assert "choose a new --out" in message
    # Another intensity range is another domain too.
    wider = write_dataset(tmp_path / "wider.npz", grey_tiles(4, 48, "uint16"), rgb_tiles(4, 48),
                          {"A": Domain(1, "uint16", 0, 65535), "B": RGB})
    with pytest.raises(StainvirtError, match="a run keeps its domains"):
        train(wider, run.path, None, overrides={"epochs": 3}, verbose=0)
    assert run.load_config().epochs == 2


def test_a_float_domain_trains_with_resizing_and_the_structure_loss(tmp_path):
    a = grey_tiles(4, 48, "float32")
    domains = {"A": Domain(1, "float32", 0.0, 1.0, "fixed"), "B": RGB}
    data = write_dataset(tmp_path / "float.npz", a, rgb_tiles(4, 48), domains)
    run = RunDir(tmp_path / "run")
    train(data, run.path, tiny(load_size=40, lambda_structure=2.0), verbose=0)
    assert run.load_config().channels_a == 1 and run.domains() == domains
    (row,) = run.read_history()
    assert 0 < row["G_AB_struct"] <= 2 * 2 and 0 < row["G_BA_struct"] <= 2 * 2
    parts = [k for k in row if k.startswith(("G_AB", "G_BA", "cycle"))]
    assert row["G"] == pytest.approx(sum(row[k] for k in parts), rel=1e-4)
    header = run.history_path.read_text().splitlines()[0].split(",")
    assert header[-2:] == ["G_AB_struct", "G_BA_struct"]
    assert run.losses_path.is_file() and run.sample_path(1).is_file()


def _is_view_of(crop: np.ndarray, tile: np.ndarray) -> bool:
    return any(np.array_equal(np.rot90(t, k), crop) for k in range(4)
               for t in (tile, tile[:, ::-1]))


@pytest.mark.parametrize("dtype", ["uint16", "float32"])
def test_the_sampler_crops_any_pixel_type_unchanged(dtype):
    a = grey_tiles(3, 40, dtype)
    b = np.random.default_rng(2).uniform(0, 9, (2, 40, 40, 5)).astype(np.float32)
    sampler = UnpairedSampler(a, b, tiny(batch_size=2))
    for step in range(4):
        crops_a, crops_b = sampler.batch(step)
        assert crops_a.dtype == a.dtype and crops_a.shape == (2, 32, 32, 1)
        assert crops_b.dtype == np.float32 and crops_b.shape == (2, 32, 32, 5)
        for crop in crops_a:
            # A crop is a 32 px window of some tile, up to a flip and a rotation.
            assert any(_is_view_of(crop, tile[y : y + 32, x : x + 32])
                       for tile in a for y in range(9) for x in range(9))


def test_resizing_keeps_the_pixel_type_and_rgb_stays_as_it_was():
    for tiles in (grey_tiles(1, 40, "uint16"), grey_tiles(1, 40, "float32"),
                  np.random.default_rng(0).uniform(0, 1, (1, 40, 40, 4)).astype(np.float32)):
        out = resize(tiles[0], 48)
        assert out.dtype == tiles.dtype and out.shape == (48, 48, tiles.shape[-1])
        assert abs(float(out.mean()) - float(tiles.mean())) < 0.02 * float(tiles.mean())
    edge = np.zeros((40, 40, 1), np.uint16)
    edge[:, 20:] = 65535  # cubic overshoot at the edge must clip, not wrap round
    row = resize(edge, 48)[24, :, 0].astype(np.int64)
    assert row.min() == 0 and row.max() == 65535
    assert row[:20].max() < 1000 and row[-20:].min() > 64535
    rgb = rgb_tiles(1, 40)[0]
    expected = np.asarray(Image.fromarray(rgb).resize((48, 48), Image.BICUBIC))
    np.testing.assert_array_equal(resize(rgb, 48), expected)
    sampler = UnpairedSampler(grey_tiles(2, 40, "uint16"), rgb_tiles(2, 40), tiny(load_size=48))
    assert sampler.batch(0)[0].dtype == np.uint16


def test_make_dataset_scales_each_domain_as_domain_to_net():
    a = grey_tiles(3, 32, "uint16")
    b = np.random.default_rng(3).uniform(-0.5, 2.5, (3, 32, 32, 2)).astype(np.float32)
    b[:, :, 10:20] = np.nan  # no measurement: the low end, as to_net has it
    domains = {"A": Domain(1, "uint16", 1200.0, 1800.0, "percentile"),
               "B": Domain(2, "float32", 0.0, 2.0, "fixed")}
    pairs = np.array([[0, 0], [1, 1]])
    sampler = UnpairedSampler(a, b, tiny(), pairs=pairs)
    batches = next(iter(make_dataset(sampler, 3, domains)))
    assert len(batches) == 4
    for got, raw, d in zip(batches, sampler.batch(3), "ABAB", strict=True):
        np.testing.assert_array_equal(got.numpy(), domains[d].to_net(raw))
    assert np.abs(batches[0].numpy()).max() == 1.0  # outside the range: clipped
    assert np.isfinite(batches[1].numpy()).all()
    # RGB keeps its scaling of every earlier version, within a float32 rounding of to_net.
    rgb = UnpairedSampler(rgb_tiles(2, 32), rgb_tiles(2, 32, 4), tiny())
    got, raw = next(iter(make_dataset(rgb)))[0].numpy(), rgb.batch(0)[0]
    np.testing.assert_array_equal(got, raw.astype(np.float32) / 127.5 - 1.0)
    np.testing.assert_allclose(got, RGB.to_net(raw), atol=2e-7, rtol=0)


def _texture(seed: int = 0, shape=(2, 48, 48, 1)) -> np.ndarray:
    """Smooth random texture in [0, 1]."""
    noise = np.random.default_rng(seed).uniform(0, 1, shape).astype(np.float32)
    smooth = keras.ops.convert_to_numpy(keras.layers.AveragePooling2D(5, 1, "same")(noise))
    return (smooth - smooth.min()) / (smooth.max() - smooth.min())


def test_structure_loss_ignores_brightness_and_polarity_not_structure():
    x = _texture()
    assert float(structure_loss(2 * x - 1, 2 * x - 1)) == pytest.approx(0.0, abs=1e-5)
    assert float(structure_loss(2 * x - 1, 2 * x - 0.6)) == pytest.approx(0.0, abs=1e-4)
    noise = np.random.default_rng(9).uniform(0, 1, x.shape).astype(np.float32)
    # An inverted translation (glass black in fluorescence, white in brightfield) keeps it.
    assert float(structure_loss(2 * x - 1, 1 - 2 * x)) == pytest.approx(0.0, abs=1e-4)
    assert float(structure_loss(2 * x - 1, 2 * noise - 1)) > 0.9
    assert float(structure_loss(2 * x - 1, np.roll(2 * x - 1, 3, axis=2))) > 0.4
    # A recoloured RGB translation of a grey image keeps its structure; its grey
    # level has 0.6 of the contrast, which costs a little.
    tinted = np.concatenate([0.9 * x, 0.5 * x + 0.2, 0.3 * x + 0.6], axis=-1)
    assert 0.1 < float(structure_loss(2 * x - 1, 2 * tinted - 1)) < 0.3
    # Fading the structure away is not free, as it is for a correlation alone.
    faded = [float(structure_loss(2 * x - 1, 2 * (k * x + 0.5) - 1)) for k in (0.3, 0.1, 0.0)]
    assert 0.3 < faded[0] < faded[1] < faded[2] and faded[2] > 0.95


def test_hematoxylin_structure_lets_the_eosin_go_and_a_marker_come_but_not_the_nuclei_move():
    from skimage.color import hed2rgb, rgb2hed

    # Optical densities of real stained tissue: well above black.
    h, e, dab = (0.3 * _texture(seed, (1, 48, 48, 1))[0, ..., 0] for seed in (3, 4, 5))
    he = hed2rgb(np.stack([h, e, 0 * h], -1))[None].astype(np.float32)
    # An IHC of the same section: the hematoxylin stays, the eosin goes, DAB comes.
    ihc = hed2rgb(np.stack([h, 0 * h, dab], -1))[None].astype(np.float32)
    faded = hed2rgb(np.stack([0.6 * h, 0 * h, dab], -1))[None].astype(np.float32)
    np.testing.assert_allclose(  # the colour deconvolution is skimage's, up to scale
        np.corrcoef(keras.ops.convert_to_numpy(hematoxylin(he)).ravel(),
                    rgb2hed(he[0])[..., 0].ravel())[0, 1], 1.0, atol=1e-6)
    kept = float(structure_loss(2 * he - 1, 2 * ihc - 1, "hematoxylin"))
    assert kept < 0.05
    assert float(structure_loss(2 * he - 1, 2 * ihc - 1, "grey")) > kept + 0.3
    # A lighter counterstain costs a little (SSIM's contrast term).
    assert kept < float(structure_loss(2 * he - 1, 2 * faded - 1, "hematoxylin")) < 0.2
    moved = float(structure_loss(2 * he - 1, np.roll(2 * ihc - 1, 4, axis=2), "hematoxylin"))
    assert moved > 0.4
    # Unlike a correlation, it does not take a blank output for a perfect one.
    assert float(structure_loss(2 * he - 1, np.ones_like(he), "hematoxylin")) > 0.5
    with pytest.raises(StainvirtError, match="structure_channel hematoxylin .* 1 and 3 channels"):
        tiny(channels_a=1, structure_channel="hematoxylin")


def test_grey_levels_of_1_3_and_n_channels():
    x = _texture(shape=(1, 16, 16, 1))
    np.testing.assert_array_equal(keras.ops.convert_to_numpy(grey(x)), x)
    rgb = np.concatenate([x, 0 * x, 0 * x + 1], axis=-1)
    np.testing.assert_allclose(keras.ops.convert_to_numpy(grey(rgb)), 0.299 * x + 0.114,
                               atol=1e-6)
    four = np.concatenate([x, x, 0 * x, 0 * x], axis=-1)
    np.testing.assert_allclose(keras.ops.convert_to_numpy(grey(four)), x / 2, atol=1e-6)


def test_structure_loss_in_float16_under_xla_matches_float32():
    import tensorflow as tf

    x, y = 2 * _texture(1) - 1, 2 * _texture(2, (2, 48, 48, 3)) - 1
    expected = float(structure_loss(x, y))
    compiled = tf.function(structure_loss, jit_compile=True)
    got = float(compiled(tf.constant(x, tf.float16), tf.constant(y, tf.float16)))
    assert got == pytest.approx(expected, abs=2e-3)
    variable = tf.Variable(y)
    with tf.GradientTape() as tape:
        loss = structure_loss(np.zeros_like(x), variable)  # a flat input: no NaN gradients
    assert np.isfinite(tape.gradient(loss, variable).numpy()).all()


def test_sample_grid_shows_grey_and_multichannel_domains(tmp_path):
    cfg = tiny(channels_a=1, channels_b=5)
    domains = {"A": Domain(1, "uint16", 1000, 2000, "percentile"),
               "B": Domain(5, "float32", 0.0, 1.0, "fixed")}
    path = tmp_path / "grid.png"
    save_sample_grid(path, build_generator(cfg, "G_AB"), build_generator(cfg, "G_BA"),
                     grey_tiles(2, 32, "uint16"), np.full((2, 32, 32, 5), 0.5, np.float32),
                     "epoch 1", domains)
    assert Image.open(path).mode == "RGB"


def test_channels_come_from_the_data_not_the_command_line():
    parser = build_parser()
    args = parser.parse_args(["train", "--out", "r", "--lambda-structure", "0.5"])
    assert args.field_lambda_structure == 0.5
    assert not any(name.startswith("field_channels") for name in vars(args))
    with pytest.raises(SystemExit):
        parser.parse_args(["train", "--out", "r", "--channels-a", "1"])
    with pytest.raises(StainvirtError, match="lambda_structure must not be negative"):
        tiny(lambda_structure=-1.0)
