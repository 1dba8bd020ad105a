"""Fréchet Inception Distance (FID) and Kernel Inception Distance (KID) between two image sets.

Both compare the distributions of the 2048-d pooled features of an ImageNet
InceptionV3 (Keras's ``keras.applications.InceptionV3``, ``include_top=False``,
``pooling="avg"``) over two image sets:

- FID (Heusel et al. 2017) fits a Gaussian to each set and returns the Fréchet
  distance ``|mu_a - mu_b|^2 + tr(S_a + S_b - 2 (S_a S_b)^(1/2))``, computed as
  the reference pytorch-fid does. It is biased upwards for small sets.
- KID (Binkowski et al. 2018) is the unbiased squared maximum mean discrepancy
  with the kernel ``k(x, y) = (x.y / d + 1)^3``, averaged over random subsets as
  torch-fidelity does; its expectation is 0 for sets from one distribution,
  whatever their size.

The weights are never downloaded here: :func:`load_inception` takes them from
Keras's cache, where one ``keras.applications.InceptionV3(include_top=False)``
call on a machine with internet puts them, or from a file.

Examples:
    >>> net = load_inception()  # doctest: +SKIP
    >>> real = inception_features(real_images, net)  # doctest: +SKIP
    >>> fake = inception_features(translations, net)  # doctest: +SKIP
    >>> fid(fake, real), kid(fake, real)  # doctest: +SKIP
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from stainvirt.errors import StainvirtError
from stainvirt.evaluate.metrics import check_image

if TYPE_CHECKING:
    import keras

INCEPTION_SIZE = 299
"""Side of the square images InceptionV3 was trained on; every image is resized to it."""

WEIGHTS_FILE = "inception_v3_weights_tf_dim_ordering_tf_kernels_notop.h5"
"""The file ``keras.applications.InceptionV3(include_top=False)`` caches under ``models/``."""

IMAGENET_CACHE = "imagenet (Keras cache)"
"""What the report calls the weights taken from Keras's cache."""

BATCH_SIZE = 32
"""Images per network call: 32 resized images are 34 MB of float32."""

KID_SUBSETS = 100
"""Random subsets KID is averaged over (torch-fidelity's default)."""

KID_SUBSET_SIZE = 1000
"""Largest KID subset (torch-fidelity's default); smaller sets use their own size."""

FID_KID_SETTINGS = (
    f"Keras InceptionV3 (include_top=False, pooling='avg') 2048-d features of images resized "
    f"to {INCEPTION_SIZE}x{INCEPTION_SIZE} (bilinear, no antialiasing) and scaled by "
    "inception_v3.preprocess_input; FID: Fréchet distance of Gaussian fits, "
    "trace of the square root from symmetric eigen-decompositions (exact); "
    f"KID: unbiased MMD^2, kernel (x.y/d + 1)^3, mean and std over {KID_SUBSETS} subsets "
    f"of min({KID_SUBSET_SIZE}, n, m) images"
)
"""How FID and KID are computed, written into the report."""


def keras_cache_file() -> Path:
    """Where Keras keeps the InceptionV3 no-top weights once it has downloaded them.

    Follows ``keras.utils.get_file`` in a fresh process: ``$KERAS_HOME``, else
    ``~/.keras`` (``/tmp/.keras`` when the home folder is read-only), and
    ``/tmp/.keras`` again when that folder is not writable. Read from the
    environment now, not from Keras's import-time copy of it.
    """
    if "KERAS_HOME" in os.environ:
        base = Path(os.environ["KERAS_HOME"]).expanduser()
    else:
        home = Path.home()
        base = (home if os.access(home, os.W_OK) else Path("/tmp")) / ".keras"
    if not os.access(base, os.W_OK):
        base = Path("/tmp/.keras")
    return base / "models" / WEIGHTS_FILE


def load_inception(weights: str | Path | None = None) -> keras.Model:
    """The ImageNet InceptionV3 feature network, without downloading anything.

    Args:
        weights: An ``.h5`` file of InceptionV3 no-top ImageNet weights
            (``inception_v3_weights_tf_dim_ordering_tf_kernels_notop.h5``);
            None takes that file from Keras's cache (see :func:`keras_cache_file`).

    Returns:
        ``InceptionV3(include_top=False, pooling="avg")`` on 299x299x3 inputs:
        images to 2048 features.

    Raises:
        StainvirtError: when the weights are not in Keras's cache, or the file
            is missing or holds other weights.
    """
    if weights is None:
        path = keras_cache_file()
        if not path.is_file():
            raise StainvirtError(
                f"--fid: the InceptionV3 weights are not in Keras's cache ({path}); get them "
                "once on a machine with internet with "
                "`python -c \"import keras; keras.applications.InceptionV3(include_top=False)\"` "
                f"and copy {WEIGHTS_FILE} into {path.parent} (or set KERAS_HOME), or pass "
                "--inception-weights FILE; FID is optional, so leaving out --fid also works"
            )
        what, fix = f"the cached InceptionV3 weights {path}", "delete the file and fetch it again"
    else:
        path = Path(weights).expanduser()
        what, fix = f"--inception-weights {path}", f"pass {WEIGHTS_FILE} as Keras downloads it"
        if not path.is_file():
            raise StainvirtError(f"{what}: no such file; {fix}")
    import keras

    model = keras.applications.InceptionV3(
        weights=None, include_top=False, pooling="avg",
        input_shape=(INCEPTION_SIZE, INCEPTION_SIZE, 3),
    )
    try:
        model.load_weights(path)
    except (OSError, ValueError) as exc:
        # Keras's own message runs over several lines; its first one names the cause.
        cause = (str(exc).strip() or type(exc).__name__).splitlines()[0]
        raise StainvirtError(
            f"{what}: not InceptionV3 ImageNet no-top weights ({cause}); {fix}"
        ) from exc
    return model


class FeatureSet:
    """The features of a stream of images, computed a batch at a time.

    Each added image is resized at once and only a batch of resized images is
    held, so a large image set costs its features (8 KB per image), not its pixels.

    Args:
        model: Feature network (:func:`load_inception`, or any Keras model from
            ``(batch, h, w, 3)`` images scaled to [-1, 1] to ``(batch, d)``).
            Images are resized to its input size (299 when that is not fixed).
        batch_size: Images per network call.
    """

    def __init__(self, model: keras.Model, batch_size: int = BATCH_SIZE) -> None:
        if batch_size < 1:
            raise StainvirtError(f"batch_size must be 1 or more, not {batch_size}")
        self.model = model
        self.batch_size = batch_size
        height, width = model.input_shape[1:3]
        self.size = (height or INCEPTION_SIZE, width or INCEPTION_SIZE)
        self._pending: list[np.ndarray] = []
        self._done: list[np.ndarray] = []

    def __len__(self) -> int:
        return sum(len(f) for f in self._done) + len(self._pending)

    def add(self, image: np.ndarray) -> None:
        """Resize one ``(H, W, 3)`` uint8 RGB image and queue it; a full queue goes through."""
        import keras

        check_image(image)
        self._pending.append(keras.ops.convert_to_numpy(keras.ops.image.resize(
            image.astype(np.float32), self.size, interpolation="bilinear", antialias=False,
        )))
        if len(self._pending) >= self.batch_size:
            self._flush()

    def features(self) -> np.ndarray:
        """The features of every image added so far, ``(N, d)`` float32, in order."""
        self._flush()
        if not self._done:
            return np.zeros((0, self.model.output_shape[-1]), np.float32)
        return np.concatenate(self._done)

    def _flush(self) -> None:
        if not self._pending:
            return
        import keras

        batch = keras.applications.inception_v3.preprocess_input(np.stack(self._pending))
        self._pending = []
        out = self.model(batch, training=False)
        self._done.append(keras.ops.convert_to_numpy(out).astype(np.float32))


def inception_features(
    images: Iterable[np.ndarray], model: keras.Model, batch_size: int = BATCH_SIZE
) -> np.ndarray:
    """Pooled InceptionV3 features of uint8 RGB images of any size.

    Args:
        images: ``(H, W, 3)`` uint8 RGB images; read one at a time.
        model: Feature network, usually :func:`load_inception`'s (see :class:`FeatureSet`).
        batch_size: Images per network call.

    Returns:
        ``(N, 2048)`` float32 for InceptionV3; ``(N, d)`` for another network.
    """
    features = FeatureSet(model, batch_size)
    for image in images:
        features.add(image)
    return features.features()


def fid(features_a: np.ndarray, features_b: np.ndarray) -> float:
    """Fréchet distance between Gaussian fits of two feature sets (FID on Inception features).

    ``|mu_a - mu_b|^2 + tr(S_a) + tr(S_b) - 2 tr(sqrtm(S_a S_b))`` with the
    unbiased covariances, as pytorch-fid defines it. The trace of the square
    root is taken exactly as the sum of the square roots of the eigenvalues of
    ``S_a^1/2 S_b S_a^1/2`` (the same eigenvalues as ``S_a S_b``, but of a
    symmetric matrix): two symmetric eigen-decompositions, seconds at 2048
    features where a general matrix square root takes over a minute on a CPU.
    Fewer samples than dimensions give rank-deficient covariances and an upward
    bias.

    Args:
        features_a: ``(n, d)`` features of one set, ``n >= 2``.
        features_b: ``(m, d)`` features of the other, ``m >= 2``.

    Returns:
        The distance (0 for identical sets, up to rounding).

    Raises:
        StainvirtError: for fewer than 2 samples or different feature sizes.
    """
    a, b = _check_features(features_a, features_b, "fid")
    mu_a, mu_b = a.mean(axis=0), b.mean(axis=0)
    cov_a = np.atleast_2d(np.cov(a, rowvar=False))
    cov_b = np.atleast_2d(np.cov(b, rowvar=False))
    values, vectors = np.linalg.eigh(cov_a)
    root_a = (vectors * np.sqrt(np.clip(values, 0, None))) @ vectors.T
    middle = root_a @ cov_b @ root_a
    # Rounding leaves tiny negative eigenvalues of a positive semi-definite matrix.
    eigen = np.linalg.eigvalsh((middle + middle.T) / 2)
    trace_root = np.sqrt(np.clip(eigen, 0, None)).sum()
    diff = mu_a - mu_b
    return float(diff @ diff + np.trace(cov_a) + np.trace(cov_b) - 2 * trace_root)


def kid(
    features_a: np.ndarray,
    features_b: np.ndarray,
    subsets: int = KID_SUBSETS,
    subset_size: int = KID_SUBSET_SIZE,
    seed: int = 0,
) -> tuple[float, float]:
    """Kernel distance (KID on Inception features): unbiased MMD^2, mean and std over subsets.

    Each subset draws ``s = min(subset_size, n, m)`` rows of each set without
    replacement and scores, with ``k(x, y) = (x.y / d + 1)^3``,
    ``sum_{i!=j} [k(x_i, x_j) + k(y_i, y_j)] / (s (s-1)) - 2 sum_{i,j} k(x_i, y_j) / s^2``
    (Binkowski et al. 2018, as torch-fidelity). The estimate is unbiased, so for
    two samples of one distribution it scatters around 0 and can be negative.

    Args:
        features_a: ``(n, d)`` features of one set, ``n >= 2``.
        features_b: ``(m, d)`` features of the other, ``m >= 2``.
        subsets: Random subsets to average over.
        subset_size: Largest subset size.
        seed: Seed of the subset draws, so a report can be recomputed.

    Returns:
        ``(mean, std)`` over the subsets (population std, as torch-fidelity).

    Raises:
        StainvirtError: for fewer than 2 samples, different feature sizes or
            fewer than 1 subset.
    """
    a, b = _check_features(features_a, features_b, "kid")
    if subsets < 1:
        raise StainvirtError(f"kid: subsets must be 1 or more, not {subsets}")
    size = min(subset_size, len(a), len(b))
    if size < 2:
        raise StainvirtError(f"kid: subset_size must be 2 or more, not {subset_size}")
    dim = a.shape[1]
    rng = np.random.default_rng(seed)
    mmds = np.empty(subsets)
    for i in range(subsets):
        x = a[rng.choice(len(a), size, replace=False)]
        y = b[rng.choice(len(b), size, replace=False)]
        within = (x @ x.T / dim + 1) ** 3 + (y @ y.T / dim + 1) ** 3
        across = (x @ y.T / dim + 1) ** 3
        mmds[i] = ((within.sum() - np.trace(within)) / (size * (size - 1))
                   - 2 * across.sum() / size**2)
    return float(mmds.mean()), float(mmds.std())


def fid_kid(features_a: np.ndarray, features_b: np.ndarray) -> dict[str, float]:
    """``{"fid": ..., "kid": ..., "kid_std": ...}`` of two feature sets, default settings."""
    kid_mean, kid_std = kid(features_a, features_b)
    return {"fid": fid(features_a, features_b), "kid": kid_mean, "kid_std": kid_std}


def _check_features(a: np.ndarray, b: np.ndarray, name: str) -> tuple[np.ndarray, np.ndarray]:
    """Both feature sets as float64 ``(n, d)``; at least 2 rows each and one ``d``."""
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    if a.ndim != 2 or b.ndim != 2 or a.shape[1] != b.shape[1]:
        raise StainvirtError(
            f"{name}: expected two (n, d) feature arrays with the same d, got shapes "
            f"{a.shape} and {b.shape}; compute them with inception_features"
        )
    if min(len(a), len(b)) < 2:
        raise StainvirtError(
            f"{name}: needs at least 2 images in each set, got {len(a)} and {len(b)}; "
            "add images"
        )
    return a, b
