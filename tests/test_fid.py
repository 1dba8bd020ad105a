"""FID and KID: the formulas, the feature extraction, the weight loading and `evaluate --fid`.

Feature networks are randomly initialised (a small conv net, or InceptionV3 at
75 px): nothing is downloaded, and the tests only rely on properties that hold
for any fixed feature map.
"""

from __future__ import annotations

from pathlib import Path

import keras
import numpy as np
import pytest
from conftest import save, tissue_image
from skimage import data

from stainvirt.cli import main
from stainvirt.errors import StainvirtError
from stainvirt.evaluate import evaluate, write_report
from stainvirt.evaluate.fid import (
    WEIGHTS_FILE,
    FeatureSet,
    fid,
    inception_features,
    keras_cache_file,
    kid,
    load_inception,
)

IHC = data.immunohistochemistry()


@pytest.fixture(scope="module")
def tiny_net() -> keras.Model:
    """A fixed random conv net from 48x48 images to 24 features."""
    keras.utils.set_random_seed(0)
    return keras.Sequential([
        keras.Input((48, 48, 3)),
        keras.layers.Conv2D(16, 3, strides=2, activation="relu"),
        keras.layers.Conv2D(24, 3, strides=2, activation="relu"),
        keras.layers.GlobalAveragePooling2D(),
    ])


def crops(seed: int, n: int = 32, size: int = 80) -> list[np.ndarray]:
    """Random crops of scikit-image's IHC sample: draws from one tissue distribution."""
    rng = np.random.default_rng(seed)
    ys = rng.integers(0, IHC.shape[0] - size, n)
    xs = rng.integers(0, IHC.shape[1] - size, n)
    return [np.ascontiguousarray(IHC[y:y + size, x:x + size]) for y, x in zip(ys, xs, strict=True)]


def shifted(images: list[np.ndarray], red: int) -> list[np.ndarray]:
    """The images with ``red`` grey levels added to the red channel (a colour cast)."""
    out = []
    for image in images:
        cast = image.astype(np.int16)
        cast[..., 0] += red
        out.append(np.clip(cast, 0, 255).astype(np.uint8))
    return out


@pytest.fixture(scope="module")
def features(tiny_net) -> dict[str, np.ndarray]:
    """Features of a crop set, an independent one, and the first with a small and a large cast."""
    a = crops(0)
    return {
        "a": inception_features(a, tiny_net),
        "b": inception_features(crops(1), tiny_net),
        "small": inception_features(shifted(a, 20), tiny_net),
        "large": inception_features(shifted(a, 60), tiny_net),
    }


def test_fid_matches_the_closed_form_in_one_dimension():
    # 1-D: (mu_a - mu_b)^2 + (sd_a - sd_b)^2 with unbiased variances 2 and 18.
    a, b = np.array([[0.0], [2.0]]), np.array([[10.0], [16.0]])
    assert fid(a, b) == pytest.approx(144 + (np.sqrt(2) - np.sqrt(18)) ** 2)


def test_fid_is_zero_for_a_set_with_itself_grows_with_a_colour_cast_and_is_symmetric(features):
    large = fid(features["a"], features["large"])
    assert large > 0
    # 32 images, 24 features: ranks up to 23, as with real sets under 2048 images.
    assert abs(fid(features["a"], features["a"])) < 1e-3 * large
    assert 0 < fid(features["a"], features["small"]) < large
    assert fid(features["large"], features["a"]) == pytest.approx(large, rel=1e-6)


def test_kid_matches_a_hand_computed_value():
    # k(x, y) = (x y + 1)^3 with d = 1. Within X = {0, 1}: 2 k(0, 1) = 2; within
    # Y = {0, 2}: 2 k(0, 2) = 2; across: 1 + 1 + 1 + k(1, 2) = 30.
    # (2 + 2) / (2 * 1) - 2 * 30 / 2^2 = -13, the same on every subset.
    mean, std = kid(np.array([[0.0], [1.0]]), np.array([[0.0], [2.0]]), subsets=5)
    assert (mean, std) == (pytest.approx(-13.0), 0.0)


def test_kid_is_unbiased_for_two_samples_of_one_distribution():
    # Many pairs of small independent samples of one Gaussian: the estimates
    # scatter around 0, negative about half the time, and a mean shift is far above.
    rng = np.random.default_rng(0)
    same = [kid(rng.normal(size=(10, 8)), rng.normal(size=(10, 8)), subsets=1)[0]
            for _ in range(300)]
    moved = [kid(rng.normal(size=(10, 8)), rng.normal(0.5, 1, size=(10, 8)), subsets=1)[0]
             for _ in range(300)]
    assert 0.3 < np.mean(np.array(same) < 0) < 0.7
    assert abs(np.mean(same)) < 0.1 * np.mean(moved)
    assert np.mean(moved) > 4 * np.std(same) / np.sqrt(len(same))


def test_kid_on_image_features_same_tissue_versus_colour_cast(features):
    large, large_std = kid(features["a"], features["large"])
    assert large > 0 and large_std < 1e-12  # one subset size = the whole set: no spread
    # A set against itself is not two independent samples: the estimate is a
    # little below 0 (by O(1/n)); another sample of the same tissue is near 0 too.
    itself, _ = kid(features["a"], features["a"])
    assert -0.15 * large < itself <= 0
    assert abs(kid(features["a"], features["b"])[0]) < 0.15 * large
    assert 0 < kid(features["a"], features["small"])[0] < large
    # Half-size subsets differ, so they have a spread, and the draws follow the seed.
    half = kid(features["a"], features["large"], subset_size=16)
    assert half[1] > 0 and half == kid(features["a"], features["large"], subset_size=16)
    assert half != kid(features["a"], features["large"], subset_size=16, seed=1)


def test_fid_and_kid_refuse_too_few_images_or_mismatched_features():
    with pytest.raises(StainvirtError, match="at least 2 images in each set, got 1 and 3"):
        fid(np.zeros((1, 4)), np.zeros((3, 4)))
    with pytest.raises(StainvirtError, match="same d"):
        kid(np.zeros((3, 4)), np.zeros((3, 5)))


def test_features_are_the_network_on_resized_images_scaled_to_minus_one_one(tiny_net):
    at_size = crops(2, n=3, size=48)
    got = inception_features(at_size, tiny_net)
    direct = tiny_net(np.stack(at_size).astype(np.float32) / 127.5 - 1.0)
    np.testing.assert_allclose(got, keras.ops.convert_to_numpy(direct), rtol=1e-5, atol=1e-6)
    # Batching changes nothing, and images of any size are resized.
    mixed = [*at_size, crops(3, n=1, size=96)[0], tissue_image(75, 90, 4)]
    one_by_one = inception_features(mixed, tiny_net, batch_size=1)
    np.testing.assert_allclose(inception_features(mixed, tiny_net, batch_size=4), one_by_one,
                               rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(one_by_one[:3], got, rtol=1e-5, atol=1e-6)


def test_inception_v3_features_are_2048_wide_and_streamed():
    net = keras.applications.InceptionV3(weights=None, include_top=False, pooling="avg",
                                         input_shape=(75, 75, 3))
    stream = FeatureSet(net, batch_size=2)
    for seed, size in enumerate((75, 96, 80)):
        stream.add(tissue_image(size, size, seed))
    # Two images went through as a batch; the third waits for features().
    assert len(stream) == 3 and len(stream._pending) == 1
    out = stream.features()
    assert out.shape == (3, 2048) and out.dtype == np.float32 and np.isfinite(out).all()


def test_load_inception_without_cached_weights_says_how_to_get_them(tmp_path, monkeypatch):
    monkeypatch.setenv("KERAS_HOME", str(tmp_path))
    assert keras_cache_file() == tmp_path / "models" / WEIGHTS_FILE
    with pytest.raises(StainvirtError) as caught:
        load_inception()
    message = str(caught.value)
    assert "\n" not in message
    assert "not in Keras's cache" in message and str(keras_cache_file()) in message
    assert "keras.applications.InceptionV3(include_top=False)" in message
    assert "--inception-weights FILE" in message and "optional" in message
    assert not (tmp_path / "models").exists()  # nothing fetched, nothing created


def test_a_broken_cached_file_is_named(tmp_path, monkeypatch):
    monkeypatch.setenv("KERAS_HOME", str(tmp_path))
    save_text(keras_cache_file(), "an interrupted download")
    with pytest.raises(StainvirtError, match="cached InceptionV3 weights .* delete the file"):
        load_inception()


def test_bad_inception_weights_files(tmp_path):
    missing = tmp_path / "nothing.h5"
    with pytest.raises(StainvirtError, match=f"--inception-weights {missing}: no such file"):
        load_inception(missing)
    junk = save_text(tmp_path / "junk.h5", "not hdf5")
    with pytest.raises(StainvirtError) as caught:
        load_inception(junk)
    message = str(caught.value)
    assert "\n" not in message
    assert message.startswith(f"--inception-weights {junk}: not InceptionV3 ImageNet no-top")


def test_inception_weights_from_a_file_are_loaded(tmp_path):
    keras.utils.set_random_seed(1)
    saved = keras.applications.InceptionV3(weights=None, include_top=False, pooling="avg")
    path = tmp_path / "inception.weights.h5"
    saved.save_weights(path)
    image = [tissue_image(96, 96, 0)]
    np.testing.assert_allclose(inception_features(image, load_inception(path)),
                               inception_features(image, saved), rtol=1e-4, atol=1e-6)


def save_text(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


@pytest.fixture(scope="module")
def he_ihc(tmp_path_factory) -> tuple[Path, Path]:
    """Four H&E-like sources and four IHC crops as the real target set, 80 px."""
    root = tmp_path_factory.mktemp("fid")
    for i in range(4):
        save(root / "A" / f"a{i}.png", tissue_image(80, 80, i))
    for i, crop in enumerate(crops(5, n=4)):
        save(root / "B" / f"a{i}.png", crop)
    return root / "A", root / "B"


def test_evaluate_with_fid_scores_the_model_and_the_baselines(run_dir, he_ihc, tiny_net,
                                                             tmp_path):
    result = evaluate(run_dir, "A2B", he_ihc[0], target=he_ihc[1], baselines=True, fid=True,
                      inception=tiny_net, progress=False)
    summary = result.summary()
    assert set(summary) == {"model", "identity", "reinhard"}
    for method in summary.values():
        assert {"fid", "kid", "kid_std", "rgb_w1"} <= set(method)
        assert np.isfinite([method["fid"], method["kid"], method["kid_std"]]).all()
    # Reinhard moves the H&E colours onto the IHC targets' statistics.
    assert summary["reinhard"]["fid"] < summary["identity"]["fid"]
    assert result.settings["inception_weights"].startswith(
        f"the caller's feature network {tiny_net.name!r}")
    markdown = write_report(result, tmp_path / "report")["markdown"].read_text()
    assert "FID ↓" in markdown and "KID ↓" in markdown
    assert "biased upwards for small sets" in markdown and "here 4 and 4" in markdown


def test_evaluate_paired_with_fid_uses_the_registered_targets(run_dir, he_ihc, tiny_net):
    result = evaluate(run_dir, "A2B", he_ihc[0], target=he_ihc[1], paired=True, fid=True,
                      inception=tiny_net, figure_images=0, progress=False)
    assert {"fid", "kid", "kid_std"} <= set(result.summary()["model"])


def test_evaluate_fid_needs_a_target_set_of_two_or_more(run_dir, he_ihc, tmp_path):
    with pytest.raises(StainvirtError, match="--fid needs --target"):
        evaluate(run_dir, "A2B", he_ihc[0], fid=True, progress=False)
    save(tmp_path / "one" / "b.png", tissue_image(80, 80, 9, hue="ihc"))
    with pytest.raises(StainvirtError, match="at least 2 source and 2 target images, got 4 and 1"):
        evaluate(run_dir, "A2B", he_ihc[0], target=tmp_path / "one", fid=True, progress=False)


def test_cli_fid_without_weights_stops_before_translating(run_dir, he_ihc, tmp_path,
                                                         monkeypatch, capsys):
    monkeypatch.setenv("KERAS_HOME", str(tmp_path / "keras"))
    (tmp_path / "keras").mkdir()
    args = ["-q", "evaluate", "--direction", "A2B", "--model", str(run_dir), "--source",
            str(he_ihc[0]), "--target", str(he_ihc[1]), "--out", str(tmp_path / "out")]
    assert main([*args, "--fid"]) == 1
    assert "not in Keras's cache" in capsys.readouterr().err
    assert not (tmp_path / "out" / "report.json").exists()
    assert main([*args, "--inception-weights", str(tmp_path / "w.h5")]) == 1
    assert "only used by --fid" in capsys.readouterr().err
