"""Translation in float16 and float32: they agree, batching changes nothing, auto, the CLI."""

from __future__ import annotations

import keras
import numpy as np
import pytest
from conftest import save, tissue_image
from PIL import Image

from stainvirt.cli import main
from stainvirt.config import preset
from stainvirt.errors import StainvirtError
from stainvirt.models import build_generator
from stainvirt.translate import Tiling, Translator, precision

SMALL_TILES = dict(tile_size=64, overlap=16)
# 2 x 5 tiles of 64 with a 16 px overlap; tiles are batched row by row.
MULTI_TILE = (100, 230)


class Spy:
    """A generator stand-in that records the size of each batch it is given."""

    def __init__(self, model: keras.Model) -> None:
        self.model, self.batches = model, []
        self.output_shape = model.output_shape

    def predict_on_batch(self, batch: np.ndarray) -> np.ndarray:
        self.batches.append(len(batch))
        return self.model.predict_on_batch(batch)


@pytest.fixture(scope="module")
def half_and_full(run_dir) -> tuple[Translator, Translator]:
    return tuple(
        Translator.from_run(run_dir, "A2B", precision=p, batch_size=4, **SMALL_TILES)
        for p in ("float16", "float32")
    )


def test_float16_agrees_with_float32_and_really_computes_in_float16(half_and_full):
    half, full = half_and_full
    convs = [layer for layer in half.generator.layers if "Conv" in type(layer).__name__]
    assert convs and all(layer.compute_dtype == "float16" for layer in convs)
    assert all(layer.variable_dtype == "float32" for layer in convs)  # weights stay exact
    assert half.generator.layers[-1].compute_dtype == "float32"  # the output head
    assert all(layer.compute_dtype == "float32" for layer in full.generator.layers)
    assert keras.config.dtype_policy().name == "float32"  # the global policy is untouched

    image = tissue_image(*MULTI_TILE)
    x = image[None, :64, :64].astype(np.float32) / 127.5 - 1
    raw_half, raw_full = half.generator.predict_on_batch(x), full.generator.predict_on_batch(x)
    assert raw_half.dtype == raw_full.dtype == np.float32
    assert not np.array_equal(raw_half, raw_full)  # float16 really ran

    out_half, out_full = half.translate_array(image), full.translate_array(image)
    assert out_half.dtype == np.uint8 and out_half.shape == out_full.shape == (*MULTI_TILE, 3)
    diff = np.abs(out_half.astype(int) - out_full.astype(int))
    # float16 rounds each op to ~5e-4 relative; after a dozen layers an output
    # in [-1, 1] is off by a few 1e-3 (measured: max 2.5e-3 on the tiny run),
    # under half a grey level (2/255), so pixels move by at most one level now
    # and a trained net's larger activations keep well inside these bounds.
    assert diff.mean() < 1 and diff.max() <= 8
    assert diff.any()


def test_batch_sizes_give_the_same_translation(run_dir):
    image, outputs = tissue_image(*MULTI_TILE, seed=5), {}
    for size in (1, 4):
        translator = Translator.from_run(run_dir, "A2B", precision="float32", batch_size=size,
                                         **SMALL_TILES)
        translator.generator = spy = Spy(translator.generator)
        outputs[size] = translator.translate_array(image).astype(int)
        assert max(spy.batches) == size and sum(spy.batches) == 10
    # Batching changes only float32 rounding (~1e-6), which can tip a rare
    # pixel over a rounding edge by one grey level.
    diff = np.abs(outputs[1] - outputs[4])
    assert diff.max() <= 1 and (diff > 0).mean() < 1e-3


def test_auto_is_float16_only_where_tensorflow_sees_a_gpu(monkeypatch):
    import tensorflow as tf

    cfg = preset("tiny")
    generator = build_generator(cfg)
    translator = Translator(generator, Tiling.for_config(cfg, **SMALL_TILES))
    if not tf.config.list_physical_devices("GPU"):  # this CPU machine
        assert translator.precision == "float32" and translator.generator is generator
    else:
        assert translator.precision == "float16"
    for gpu, expected in ((False, "float32"), (True, "float16")):
        monkeypatch.setattr(precision, "gpu_visible", lambda gpu=gpu: gpu)
        assert precision.resolve_precision("auto") == expected


def test_a_generator_trained_in_mixed_precision_is_rebuilt_for_float32():
    # ``stainvirt train --mixed-precision`` saves generators whose layers compute in float16.
    keras.mixed_precision.set_global_policy("mixed_float16")
    try:
        mixed = build_generator(preset("tiny"))
    finally:
        keras.mixed_precision.set_global_policy("float32")
    assert precision.with_precision(mixed, "float16") is mixed
    full = precision.with_precision(mixed, "float32")
    assert all(layer.compute_dtype == "float32" for layer in full.layers)
    x = tissue_image(32, 32)[None].astype(np.float32) / 127.5 - 1
    # float16 rounding only (measured 2.4e-3), under a grey level (2/255 = 7.8e-3).
    np.testing.assert_allclose(full.predict_on_batch(x), mixed.predict_on_batch(x), atol=1e-2)


def test_bad_precisions_are_clear_errors():
    cfg = preset("tiny")
    with pytest.raises(StainvirtError, match=r"unknown precision 'half'.*\(--precision\)"):
        Translator(build_generator(cfg), Tiling.for_config(cfg), precision="half")
    stand_in = Spy(build_generator(cfg))
    assert precision.with_precision(stand_in, "float32") is stand_in
    with pytest.raises(StainvirtError, match="float16 needs a functional Keras generator"):
        precision.with_precision(stand_in, "float16")


def test_the_cli_translates_in_float16_and_rejects_a_bad_precision(run_dir, tmp_path, capsys):
    save(tmp_path / "in" / "tissue.png", tissue_image(*MULTI_TILE))
    args = ["translate", "--direction", "A2B", "--model", str(run_dir), str(tmp_path / "in"),
            "--out", str(tmp_path / "out"), "--tile-size", "64", "--overlap", "16"]
    assert main([*args, "--precision", "float16", "--batch-size", "4"]) == 0
    assert "A2B in float16" in capsys.readouterr().out
    with Image.open(tmp_path / "out" / "tissue_A2B.png") as png:
        assert png.size == MULTI_TILE[::-1]
    assert main([*args, "--precision", "float64"]) == 1
    err = capsys.readouterr().err
    assert err == ("error: unknown precision 'float64'; use auto, float16 or float32 "
                   "(--precision)\n")
