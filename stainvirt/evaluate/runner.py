"""Score a trained model against real images of its target domain and against the baselines.

Two modes, chosen by whether the data set is registered:

- Paired (``paired=True``): each source image has a registered real target of the
  same name (BCI, MIST). Every translation is scored against its target with
  ``paired_metrics``: PSNR, SSIM and stain-channel agreement.
- Unpaired: the pooled colour and stain distributions of the translations are
  compared with those of the real target set (when one is given), and each
  source image goes round the cycle (A2B then B2A for direction A2B) to be
  scored against itself.

With ``baselines=True`` the identity (no translation) and a Reinhard colour
transfer fitted on the target set get the same metrics, so a user sees whether
the network beats the trivial answers.

A run whose output domain is not 8-bit RGB (:mod:`stainvirt.evaluate.intensity`)
is scored by PSNR and SSIM on intensities scaled by the domain's range; the stain
metrics, distribution distances and Reinhard baseline, all about brightfield
stains, are skipped, and the identity is scored only where it means something.

With ``fid=True`` the translations (and each baseline's outputs) are also
compared with the real target set by FID and KID on InceptionV3 features
(:mod:`stainvirt.evaluate.fid`), in either mode.

Images are streamed one at a time: only numbers, running histograms, Inception
features (with ``fid``) and small thumbnails of the current worst and best images
are kept.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from stainvirt.domain import Domain
from stainvirt.errors import StainvirtError
from stainvirt.evaluate.baselines import ReinhardTransfer, identity
from stainvirt.evaluate.extremes import Extremes, FigureRow
from stainvirt.evaluate.fid import (
    FID_KID_SETTINGS,
    IMAGENET_CACHE,
    FeatureSet,
    fid_kid,
    load_inception,
)
from stainvirt.evaluate.intensity import INTENSITY_SETTINGS, STAINS_SKIPPED, identity_like, scores
from stainvirt.evaluate.metrics import (
    DAB_THRESHOLD,
    OD_BIN_WIDTH,
    PAIRED_STAINS,
    PSNR_CAP_DB,
    PixelHistograms,
    histogram_distances,
    paired_metrics,
)
from stainvirt.io.images import list_images
from stainvirt.io.slide import Resolution
from stainvirt.pairing import checked_pairs
from stainvirt.plotting import display_rgb
from stainvirt.rundir import DIRECTIONS, RunDir, check_direction
from stainvirt.translate.api import Translator
from stainvirt.translate.native import domain_name
from stainvirt.translate.tiling import DEFAULT_OVERLAP, DEFAULT_TILE_SIZE

if TYPE_CHECKING:
    import keras

log = logging.getLogger("stainvirt")

MODEL, IDENTITY, REINHARD = "model", "identity", "reinhard"
"""Names of the compared methods, as used in report keys."""

PSNR_SSIM_SETTINGS = "skimage.metrics, uint8, data_range=255, channel_axis=-1, 7x7 uniform window"
"""How PSNR and SSIM are computed (the BCI/MIST settings), written into every report."""

FIGURE_IMAGES = 3
"""Worst and best images shown in the report figure, each."""

@dataclass
class Evaluation:
    """Everything one evaluation measured; :func:`write_report` turns it into files.

    Attributes:
        settings: How the numbers were made (direction, folders, mode, metric settings).
        model_config: The run's ``config.json`` as a dict.
        methods: Compared methods: ``model``, then ``identity`` and ``reinhard`` if run.
        images: Per source image: ``source``, ``target`` (paired) and ``name`` paths,
            ``height``, ``width`` and ``metrics`` (method -> metric -> value; nan
            where undefined).
        distances: Set-level metrics, method -> metric -> value: unpaired with a
            target set, the Wasserstein-1 distances of its pooled translations to
            the real target set; with ``fid``, also ``fid``, ``kid`` and ``kid_std``.
        figure_rows: The worst, then the best images by the primary metric.
        figure_titles: Column titles of the figure.
    """

    settings: dict[str, Any]
    model_config: dict[str, Any]
    methods: tuple[str, ...]
    images: list[dict[str, Any]] = field(default_factory=list)
    distances: dict[str, dict[str, float]] = field(default_factory=dict)
    figure_rows: list[FigureRow] = field(default_factory=list)
    figure_titles: tuple[str, ...] = ()

    def per_image_metrics(self, method: str) -> list[str]:
        """Names of the per-image metrics of ``method``, in the order they were computed."""
        names: dict[str, None] = {}
        for image in self.images:
            names |= dict.fromkeys(image["metrics"].get(method, {}))
        return list(names)

    def summary(self) -> dict[str, dict[str, float]]:
        """Method -> metric -> mean over images (nan-aware) or set-level distance.

        A metric undefined on every image has a nan mean.
        """
        out: dict[str, dict[str, float]] = {}
        for method in self.methods:
            means = {}
            for metric in self.per_image_metrics(method):
                values = self._values(method, metric)
                finite = values[~np.isnan(values)]
                means[metric] = float(finite.mean()) if finite.size else float("nan")
            out[method] = means | self.distances.get(method, {})
        return out

    def undefined(self) -> dict[str, dict[str, int]]:
        """Method -> metric -> number of images where it was undefined (nan); nonzero only."""
        out: dict[str, dict[str, int]] = {}
        for method in self.methods:
            counts = {m: int(np.isnan(self._values(method, m)).sum())
                      for m in self.per_image_metrics(method)}
            if any(counts.values()):
                out[method] = {m: n for m, n in counts.items() if n}
        return out

    def _values(self, method: str, metric: str) -> np.ndarray:
        return np.array(
            [image["metrics"][method][metric] for image in self.images
             if metric in image["metrics"].get(method, {})],
            dtype=float,
        )


def evaluate(
    model: str | Path,
    direction: str,
    source: str | Path,
    *,
    target: str | Path | None = None,
    paired: bool = False,
    baselines: bool = False,
    tile_size: int = DEFAULT_TILE_SIZE,
    overlap: int = DEFAULT_OVERLAP,
    dab_threshold: float = DAB_THRESHOLD,
    figure_images: int = FIGURE_IMAGES,
    resolution: Resolution | None = None,
    progress: bool = True,
    fid: bool = False,
    inception_weights: str | Path | None = None,
    inception: keras.Model | None = None,
) -> Evaluation:
    """Translate every source image with the model and score the translations.

    Args:
        model: Run folder written by ``stainvirt train`` (``config.json``,
            ``G_AB.keras``, ``G_BA.keras``; unpaired mode needs both generators).
        direction: ``A2B`` (H&E -> IHC) or ``B2A`` (IHC -> H&E).
        source: Folder of source-domain images (searched recursively).
        target: Folder of real target-domain images: the registered targets in
            paired mode; in unpaired mode the set the translations' distributions
            are compared with and the Reinhard baseline is fitted on.
        paired: Match source and target images by name and compute paired metrics.
        baselines: Also score the identity and the Reinhard transfer (both need
            ``target``).
        tile_size: Tile side for images larger than one tile (see ``Translator``).
        overlap: Overlap of neighbouring tiles.
        dab_threshold: DAB optical density counted as DAB-positive (paired A2B).
        figure_images: Worst and best images to keep for the figure, each.
        resolution: The resolution images are read at (sources and targets alike);
            default: the one the run was trained at, else each file's own.
        progress: Show progress bars.
        fid: Also compute FID and KID between each method's outputs and the
            real target set (needs ``target`` and 2 or more images in each set).
        inception_weights: InceptionV3 no-top weights file for ``fid``; default:
            Keras's cache (never downloaded, see :func:`~stainvirt.evaluate.fid.load_inception`).
        inception: A feature network to use instead of InceptionV3, e.g. a small
            one in tests; ``inception_weights`` is then unused.

    Returns:
        The :class:`Evaluation`; write it with :func:`write_report`.

    Raises:
        StainvirtError: for a bad direction, missing or empty folders, unmatched
            names or different sizes in paired mode, a missing model, or ``fid``
            without a target set or the Inception weights.
    """
    from tqdm import tqdm

    direction = check_direction(direction)
    back = DIRECTIONS[direction].reverse
    if paired and target is None:
        raise StainvirtError("--paired needs --target: the folder of registered real targets")
    if fid and target is None:
        raise StainvirtError("--fid needs --target: the real target-domain images the "
                             "translations are compared with")
    items, targets = _items(source, target, paired)
    if fid and min(len(items), len(targets)) < 2:
        raise StainvirtError(f"--fid needs at least 2 source and 2 target images, got "
                             f"{len(items)} and {len(targets)}; add images or leave out --fid")
    run = RunDir(model)
    config = run.load_config().to_dict()  # checks the run folder before the slow loads
    domains = run.domains()
    in_domain, out_domain = domains["A"], domains["B"]
    if direction == "B2A":
        in_domain, out_domain = out_domain, in_domain
    if fid and not out_domain.is_rgb:
        raise StainvirtError(f"--fid compares RGB images by Inception features; this run's "
                             f"output is {out_domain.describe()}: leave out --fid")
    fid_settings: dict[str, Any] = {}
    if fid:
        # Loaded before the generators, so missing weights stop the run at once.
        inception, weights_used = _feature_network(inception, inception_weights)
        fid_settings = {"inception_weights": weights_used, "fid_kid": FID_KID_SETTINGS}
    options = dict(tile_size=tile_size, overlap=overlap, resolution=resolution)
    forward = Translator.from_run(model, direction, **options)
    backward = None if paired else Translator.from_run(model, back, **options)

    # One pass over the real target set fits the Reinhard transfer and counts
    # the histograms (and, with fid, the features) the unpaired distances compare with.
    # Colour distances and Reinhard need RGB outputs; unpaired, a baseline on
    # another domain would have nothing to be scored on (the cycle is the model's).
    target_hist = PixelHistograms() if targets and not paired and out_domain.is_rgb else None
    target_features = FeatureSet(inception) if fid else None
    like, like_text = identity_like(in_domain, out_domain)
    baseline_fns: dict[str, Callable[[np.ndarray], np.ndarray]] = {}
    if baselines and targets and like is not None and (paired or out_domain.is_rgb):
        baseline_fns[IDENTITY] = like
    if target_hist is not None or (baseline_fns and out_domain.is_rgb):
        bar = tqdm(targets, "target set", unit="image", disable=not progress)
        real = (forward.read(path, out_domain) for path in bar)
        if target_features is not None and not paired:  # paired: read in the main loop
            real = _tee(real, target_features.add)
        if baseline_fns:
            if target_hist is not None:
                real = _tee(real, target_hist.add)
            reinhard = ReinhardTransfer().fit(real)
            baseline_fns[REINHARD] = (reinhard.apply if like is identity
                                      else lambda image: reinhard.apply(like(image)))
        else:
            target_hist = PixelHistograms.of(real)

    primary = "ssim" if paired else "cycle_ssim"
    source_stain = domain_name(in_domain, DIRECTIONS[direction].source)
    target_stain = domain_name(out_domain, DIRECTIONS[direction].target)
    settings = {
        "direction": direction,
        "translation": f"{source_stain} -> {target_stain}",
        "mode": "paired" if paired else "unpaired",
        "model": str(model),
        "source": str(source),
        "target": str(target) if target is not None else None,
        "n_images": len(items),
        "n_target_images": len(targets),
        "baselines_requested": baselines,
        "baselines": list(baseline_fns),
        "tile_size": tile_size,
        "overlap": overlap,
        "resolution": str(forward.resolution),
        "primary_metric": primary,
    } | _metric_settings(direction, paired, bool(targets), dab_threshold, in_domain, out_domain)
    settings |= fid_settings
    if not (in_domain.is_rgb and out_domain.is_rgb):
        settings["domains"] = {"source": in_domain.describe(), "target": out_domain.describe()}
        settings["identity_baseline"] = like_text
    evaluation = Evaluation(
        settings=settings,
        model_config=config,
        methods=(MODEL, *baseline_fns),
        figure_titles=(
            f"{source_stain} source",
            f"virtual {target_stain} ({direction})",
            f"real {target_stain} (target)" if paired else f"reconstruction ({back})",
        ),
    )
    hists = {} if target_hist is None else {m: PixelHistograms() for m in evaluation.methods}
    features = {} if target_features is None else {
        m: FeatureSet(inception) for m in evaluation.methods}
    extremes = Extremes(figure_images)
    root = Path(source)
    bar = tqdm(items, f"evaluate {direction}", unit="image", disable=not progress)
    for index, (src_path, tgt_path) in enumerate(bar):
        src = forward.read(src_path)
        fake = forward.translate_array(src)
        preds = {MODEL: fake} | {name: fn(src) for name, fn in baseline_fns.items()}
        for name, hist in hists.items():
            hist.add(preds[name])
        for name, feats in features.items():
            feats.add(preds[name])
        if tgt_path is not None:
            reference = forward.read(tgt_path, out_domain)
            if target_features is not None:
                target_features.add(reference)
            metrics = {
                name: paired_metrics(pred, reference, direction, dab_threshold) if out_domain.is_rgb
                else scores(pred, reference, out_domain)
                for name, pred in preds.items()
            }
        else:
            reference = backward.translate_array(fake)
            cycle = scores(reference, src, in_domain)
            metrics = {MODEL: {f"cycle_{k}": v for k, v in cycle.items()}}
        evaluation.images.append({
            "name": src_path.relative_to(root).as_posix(),
            "source": str(src_path),
            "target": str(tgt_path) if tgt_path else None,
            "height": src.shape[0],
            "width": src.shape[1],
            "metrics": metrics,
        })
        shown = (in_domain, out_domain, out_domain if paired else in_domain)
        panels = [display_rgb(image, d.low, d.high)
                  for image, d in zip((src, fake, reference), shown, strict=True)]
        extremes.offer(metrics[MODEL][primary], index, panels)
    if target_hist is not None:
        evaluation.distances = {
            name: histogram_distances(hist, target_hist) for name, hist in hists.items()
        }
    if target_features is not None:
        real = target_features.features()
        for name, feats in features.items():
            evaluation.distances.setdefault(name, {}).update(fid_kid(feats.features(), real))
    evaluation.figure_rows = extremes.rows([image["name"] for image in evaluation.images])
    return evaluation


def _feature_network(
    inception: keras.Model | None, weights: str | Path | None
) -> tuple[keras.Model, str]:
    """The FID feature network and how the report names its weights."""
    if inception is not None:
        return inception, f"the caller's feature network {inception.name!r}, not InceptionV3"
    return load_inception(weights), IMAGENET_CACHE if weights is None else str(weights)


def _items(
    source: str | Path, target: str | Path | None, paired: bool
) -> tuple[list[tuple[Path, Path | None]], list[Path]]:
    """The source images, each with its target in paired mode (sizes checked); the targets."""
    if not paired:
        targets = [] if target is None else list_images(target)
        return [(path, None) for path in list_images(source)], targets
    pairs = checked_pairs(source, target)
    return pairs, [tgt for _, tgt in pairs]


def _tee(images: Iterable[np.ndarray], each: Callable[[np.ndarray], None]) -> Iterator[np.ndarray]:
    """Pass each image to ``each`` on its way through: two uses of one read."""
    for image in images:
        each(image)
        yield image


def _metric_settings(
    direction: str, paired: bool, has_target: bool, dab_threshold: float,
    source: Domain, target: Domain,
) -> dict[str, Any]:
    """How the metrics of this mode are computed, for the report."""
    scored = target if paired else source  # unpaired scores the round trip
    settings: dict[str, Any] = {
        "psnr_ssim": PSNR_SSIM_SETTINGS if scored.is_rgb else INTENSITY_SETTINGS,
        "psnr_cap_db": PSNR_CAP_DB,
    }
    if not target.is_rgb:
        settings["stain_metrics"] = STAINS_SKIPPED.format(domain=target.describe())
        return settings
    settings["stain_deconvolution"] = (
        "skimage.color.rgb2hed, Ruifrok & Johnston; channels floored at one grey level"
    )
    if paired:
        settings["stains_correlated"] = list(PAIRED_STAINS[direction])
        if direction == "A2B":
            settings["dab_threshold"] = dab_threshold
    elif has_target:
        settings["distance"] = "Wasserstein-1 between pooled pixel histograms"
        settings["od_bin_width"] = OD_BIN_WIDTH
    return settings
