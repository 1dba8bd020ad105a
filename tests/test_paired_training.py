"""Supervision from registered pairs: the pyramid loss, aligned batches, training and resume."""

from __future__ import annotations

import h5py
import keras
import numpy as np
import pytest
from conftest import save, tissue_image

from stainvirt.config import preset
from stainvirt.errors import StainvirtError
from stainvirt.models import build_discriminator, build_generator
from stainvirt.prepare import prepare
from stainvirt.rundir import RunDir
from stainvirt.training.cyclegan import pyramid_l1
from stainvirt.training.data import UnpairedSampler
from stainvirt.training.trainer import train


def tiny(**changes):
    return preset("tiny", lambda_paired=10.0).replace(**changes)


def to_b(rgb: np.ndarray) -> np.ndarray:
    """The known 'stain' of these tests: channels reversed, so B is a pixel function of A."""
    return np.ascontiguousarray(rgb[..., ::-1])


@pytest.fixture(scope="module")
def paired_data(tmp_path_factory):
    root = tmp_path_factory.mktemp("paired")
    for i in range(4):
        he = tissue_image(96, 128, seed=i)
        save(root / "A" / f"case{i}_HE.png", he)
        save(root / "B" / f"case{i}_IHC.png", to_b(he))
    save(root / "B" / "extra.png", to_b(tissue_image(64, 64, seed=9)))
    out = root / "paired.npz"
    prepare(root / "A", root / "B", out, tile_size=64, paired=True, test_fraction=0,
            progress=False)
    return out


def test_pyramid_l1_forgives_a_small_shift_more_than_plain_l1():
    rng = np.random.default_rng(0)
    image = rng.uniform(-1, 1, (1, 64, 64, 3)).astype(np.float32)
    image = keras.ops.convert_to_numpy(keras.layers.AveragePooling2D(3, 1, "same")(image))
    shifted = np.roll(image, 2, axis=2)
    assert float(pyramid_l1(image, image, 4)) == pytest.approx(0.0, abs=1e-7)
    plain, pyramid = float(pyramid_l1(shifted, image, 1)), float(pyramid_l1(shifted, image, 4))
    assert plain == pytest.approx(float(np.abs(shifted - image).mean()), rel=1e-5)
    assert pyramid < 0.8 * plain
    # A wrong colour costs the same at every level: the pyramid does not forgive it.
    tinted = image + 0.3
    assert float(pyramid_l1(tinted, image, 4)) == pytest.approx(0.3, rel=1e-4)


def test_pairs_are_cropped_flipped_and_rotated_alike():
    rng = np.random.default_rng(1)
    a = rng.integers(0, 255, (5, 48, 48, 3), dtype=np.uint8)
    b = to_b(a)
    pairs = np.array([[i, i] for i in range(5)])
    sampler = UnpairedSampler(a, b, tiny(batch_size=3), pairs=pairs)
    assert sampler.arity == 4
    for step in (0, 1, 7):
        real_a, real_b, pair_a, pair_b = sampler.batch(step)
        assert pair_a.shape == pair_b.shape == (3, 32, 32, 3)
        np.testing.assert_array_equal(pair_b, to_b(pair_a))
        np.testing.assert_array_equal(sampler.batch(step)[2], pair_a)  # a function of the step
    # The unpaired batches are exactly those of a sampler without pairs.
    plain = UnpairedSampler(a, b, tiny(batch_size=3))
    for x, y in zip(plain.batch(4), sampler.batch(4)[:2], strict=True):
        np.testing.assert_array_equal(x, y)


def test_training_with_pairs_logs_the_supervised_loss_and_resumes_exactly(paired_data, tmp_path):
    cfg = tiny(epochs=2, epochs_decay=1, steps_per_epoch=3)
    straight = RunDir(tmp_path / "straight")
    train(paired_data, straight.path, cfg, verbose=0)
    rows = straight.read_history()
    assert all(row["G_AB_pair"] > 0 and row["G_BA_pair"] > 0 for row in rows)
    assert all(row["G"] > row["G_AB_pair"] + row["G_BA_pair"] for row in rows)

    class StopAt(keras.callbacks.Callback):
        def on_train_batch_end(self, batch, logs=None):
            if self.model.steps_done == 4:
                self.model.stop_training = True

    resumed = RunDir(tmp_path / "resumed")
    assert train(paired_data, resumed.path, cfg, verbose=0, callbacks=[StopAt()]).steps_done == 4
    assert train(None, resumed.path, None, verbose=0).steps_done == 9
    with h5py.File(straight.state_path) as f, h5py.File(resumed.state_path) as g:
        for group in f:
            for key in f[group]:
                np.testing.assert_array_equal(f[group][key][()], g[group][key][()])


def test_the_paired_loss_teaches_the_mapping(paired_data, tmp_path):
    """With pairs, G_AB moves towards the known mapping faster than without them."""
    tile = tissue_image(64, 64, seed=20)
    errors = {}
    for weight in (0.0, 10.0):
        run = RunDir(tmp_path / f"w{weight:g}")
        cfg = tiny(lambda_paired=weight, epochs=8, epochs_decay=0, steps_per_epoch=5, seed=3)
        train(paired_data, run.path, cfg, verbose=0)
        fake = np.asarray(run.load_generator("A2B")(tile[None] / 127.5 - 1.0))[0]
        errors[weight] = float(np.abs(fake - (to_b(tile) / 127.5 - 1.0)).mean())
    assert errors[10.0] < errors[0.0]


def test_a_supervised_only_run_leaves_the_discriminators_alone(paired_data, tmp_path):
    """With no adversarial weight the discriminators are neither trained nor scored."""
    cfg = tiny(lambda_adversarial=0.0, lambda_cycle=0.0, paired_levels=1, epochs=1,
               epochs_decay=0, steps_per_epoch=3)
    run = RunDir(tmp_path / "run")
    assert train(paired_data, run.path, cfg, verbose=0).steps_done == 3
    rows = run.read_history()
    assert all(row["D_A"] == row["D_B"] == row["G_AB_adv"] == 0 for row in rows)
    assert all(row["G"] == pytest.approx(row["G_AB_pair"] + row["G_BA_pair"]) for row in rows)
    with h5py.File(run.state_path) as state:
        for name in ("D_A", "D_B", "G_AB"):
            initial = build_discriminator(cfg, name) if name != "G_AB" else build_generator(cfg)
            same = [np.array_equal(state[name][f"{i:04d}"][()], np.asarray(w))
                    for i, w in enumerate(initial.weights)]
            assert all(same) == name.startswith("D"), name


def test_a_paired_loss_without_pairs_is_a_clear_error(data_path, tmp_path):
    with pytest.raises(StainvirtError, match=r"--lambda-paired 10 needs registered pairs, .* "
                                             r"prepare it with --paired"):
        train(data_path, tmp_path / "run", tiny(), verbose=0)
    assert preset("paired").lambda_paired > 0 and preset("paired-context").lambda_paired > 0


@pytest.mark.parametrize("name", ["paired-context", "context", "counterstain"])
def test_the_context_presets_train_their_unet(name, paired_data, tmp_path):
    # Each preset's recipe at a size the test tiles hold, with few filters and steps
    # (the unpaired ones ignore the pairs).
    cfg = preset(name, image_size=64, ngf=4, ndf=4, steps_per_epoch=2, epochs=1, epochs_decay=0)
    result = train(paired_data, tmp_path / "run", cfg, verbose=0)
    run = RunDir(tmp_path / "run")
    saved = run.load_config()
    assert result.steps_done == 2 and saved.generator == "unet"
    assert (saved.lambda_paired > 0) == (name == "paired-context")
    g = run.load_generator("A2B")
    assert any(layer.name.endswith("_skip") for layer in g.layers)
    assert g(np.zeros((1, 96, 128, 3), "float32")).shape == (1, 96, 128, 3)
    rows = run.read_history()
    assert rows and all(np.isfinite(row["G"]) for row in rows)
    assert all(row["G_AB_pair"] > 0 for row in rows) == (name == "paired-context")
    # counterstain starts from the hematoxylin, with the identity loss on.
    counterstain = name == "counterstain"
    assert any(layer.name == "hematoxylin_only" for layer in g.layers) == counterstain
    assert all(row["G_AB_idt"] > 0 for row in rows) == counterstain
