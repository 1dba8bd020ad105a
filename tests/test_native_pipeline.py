"""A label-free domain end to end: prepare, train, translate both ways, evaluate."""

from __future__ import annotations

import numpy as np
import pytest
import tifffile
from conftest import save, tissue_image

from stainvirt.config import preset
from stainvirt.dataset import load_prepared
from stainvirt.evaluate import evaluate
from stainvirt.io.native import read_native
from stainvirt.prepare import prepare
from stainvirt.rundir import RunDir
from stainvirt.training.trainer import train
from stainvirt.translate import Translator


def label_free(rgb: np.ndarray, dtype: str) -> np.ndarray:
    """A greyscale image that keeps the tissue's structure, bright where it is dark."""
    grey = 1.0 - rgb.astype(np.float32).mean(axis=-1) / 255.0
    return (grey * 4000 + 100).astype(np.uint16) if dtype == "uint16" else grey - 0.5


@pytest.mark.parametrize("dtype", ["uint16", "float32"])
def test_greyscale_domain_from_folders_to_scores(tmp_path, dtype):
    names = {split: tmp_path / split for split in ("trainA", "trainB", "testA", "testB")}
    for folder in names.values():
        folder.mkdir()
    for k in range(3):
        save(names["trainA"] / f"he{k}.png", tissue_image(64, 64, seed=k))
        tifffile.imwrite(names["trainB"] / f"grey{k}.tif",
                         label_free(tissue_image(64, 64, seed=10 + k), dtype))
    he = tissue_image(64, 64, seed=20)
    save(names["testA"] / "t.png", he)
    tifffile.imwrite(names["testB"] / "t.tif", label_free(he, dtype))

    data = tmp_path / "grey.npz"
    prepare(names["trainA"], names["trainB"], data, test_a=names["testA"],
            test_b=names["testB"], tile_size=32, progress=False)
    domains = load_prepared(data).domains
    assert domains["A"].is_rgb
    assert (domains["B"].channels, domains["B"].dtype) == (1, dtype)

    run = RunDir(tmp_path / "run")
    train(data, run.path, preset("tiny", lambda_structure=1.0), verbose=0)
    assert (run.load_config().channels_a, run.load_config().channels_b) == (3, 1)
    assert run.domains() == domains

    # Virtual H&E from the greyscale image, and greyscale from the H&E, in each domain's kind.
    virtual_he = Translator.from_run(run.path, "B2A").translate_file(
        names["testB"] / "t.tif", tmp_path / "out")
    rgb = read_native(virtual_he)
    assert rgb.shape == (1, 64, 64, 3) and rgb.dtype == np.uint8
    virtual_grey = read_native(Translator.from_run(run.path, "A2B").translate_file(
        names["testA"] / "t.png", tmp_path / "out", fmt="tiff"))
    assert virtual_grey.shape == (1, 64, 64, 1) and virtual_grey.dtype == dtype
    assert domains["B"].low <= virtual_grey.min() <= virtual_grey.max() <= domains["B"].high

    # Scored against the real images of the other domain, matched by name.
    for direction, source, target in (("B2A", "testB", "testA"), ("A2B", "testA", "testB")):
        result = evaluate(run.path, direction, names[source], target=names[target],
                          paired=True, baselines=True, progress=False)
        model = result.summary()["model"]
        assert np.isfinite([model["psnr"], model["ssim"]]).all()
        # Grey shown as RGB is the identity-style baseline; RGB has no one grey level to compare.
        assert ("identity" in result.summary()) == (direction == "B2A")
