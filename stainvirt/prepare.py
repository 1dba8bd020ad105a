"""Pack folders of domain A (H&E) and B (IHC) images into a compressed ``.npz``.

Images are cut into non-overlapping ``tile_size`` squares from the top-left
corner (a remainder narrower than a tile is dropped); tiles that fail the tissue
test (:mod:`stainvirt.tissue`) are skipped as background. Images smaller than a
tile are an error: pass a smaller ``tile_size``. A label-free domain (phase,
autofluorescence, CT; :mod:`stainvirt.prepare_native`) keeps its files' channels
and pixel type and has no tissue test; each slice of a stack is an image of its
own, its tiles' source recorded as ``vol.tif#z0007`` (slice 7, counted from 0).
Tiles are buffered up to ``shard_mb`` of pixels, so memory stays bounded however
many images there are; a data set larger than that becomes numbered shards (see
:mod:`stainvirt.dataset`).

With ``paired=True``, A and B images of the same name (:mod:`stainvirt.pairing`)
are registered pairs: tiles are chosen on the A image as usual, the B tile is
cut at the same position, and the two are recorded as a pair (``train_pairs``,
``test_pairs``); images without a partner are packed as unpaired tiles.

Example:
    >>> from stainvirt.prepare import prepare
    >>> summary = prepare("data/sample/trainA", "data/sample/trainB", "data/stain.npz",
    ...                   test_a="data/sample/testA", test_b="data/sample/testB")
"""

from __future__ import annotations

import contextlib
import itertools
import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeVar

import numpy as np
from tqdm.auto import tqdm

from stainvirt import __version__
from stainvirt.dataset import PAIR_SPLITS, SPLITS
from stainvirt.errors import StainvirtError
from stainvirt.io.atomic import writable_folder
from stainvirt.io.images import list_images
from stainvirt.io.slide import NATIVE, Resolution
from stainvirt.io.slides import is_slide, open_slide
from stainvirt.pairing import split_pairs, unmatched_note
from stainvirt.prepare_native import DomainPlan, Job, SourceImage, domain_note, plan_domains
from stainvirt.shards import ShardWriter, Tile
from stainvirt.slide_tiles import WHOLE_READ_PIXELS, TileCounts, image_tiles
from stainvirt.tissue import DEFAULT_MIN_TISSUE, TissueMap, thumbnail_tissue_mask

log = logging.getLogger("stainvirt")

DEFAULT_SHARD_MB = 1024

T = TypeVar("T")


@dataclass
class PrepareSummary:
    """What :func:`prepare` wrote."""

    counts: dict[str, int]
    background_skipped: int
    bad_files: list[str]
    outputs: list[Path]
    bytes_written: int = 0
    settings: dict = field(default_factory=dict)
    not_sampled: int = 0
    """Tissue tiles left out by ``tiles_per_slide``."""
    pairs: dict[str, int] | None = None
    """Registered tile pairs per ``train``/``test``; None when not ``paired``."""

    def line(self) -> str:
        """One-line human summary."""
        counts = ", ".join(f"{s} {n}" for s, n in self.counts.items())
        pairs = ""
        if self.pairs is not None:
            per_split = ", ".join(f"{s} {n}" for s, n in self.pairs.items())
            pairs = f"; {sum(self.pairs.values())} registered pairs ({per_split})"
        where = self.outputs[0] if len(self.outputs) == 1 else f"{len(self.outputs)} shards"
        bad = f", {len(self.bad_files)} bad files skipped" if self.bad_files else ""
        unsampled = (f", {self.not_sampled} tissue tiles beyond --tiles-per-slide left out"
                     if self.not_sampled else "")
        return (
            f"tiles: {counts}{pairs}; {self.background_skipped} background tiles skipped"
            f"{unsampled}{bad}{domain_note(self.settings)}; wrote {where} "
            f"({self.bytes_written / 1e6:.1f} MB)"
        )


def split_files(files: Sequence[T], fraction: float, seed: int) -> tuple[list[T], list[T]]:
    """Split files (not tiles, so neighbouring tiles never straddle train and test).

    Also splits registered pairs of files, so both images of a pair land in one split.

    Returns:
        ``(train, test)``; ``test`` holds ``round(fraction * n)`` files, at least one
        when ``fraction > 0`` and there are two files or more, never all of them.
    """
    if fraction <= 0 or len(files) < 2:
        return list(files), []
    n_test = min(max(1, round(fraction * len(files))), len(files) - 1)
    order = np.random.default_rng(seed).permutation(len(files))
    test = set(order[:n_test].tolist())
    return (
        [f for i, f in enumerate(files) if i not in test],
        [f for i, f in enumerate(files) if i in test],
    )


def prepare(
    a: str | Path,
    b: str | Path,
    out: str | Path,
    *,
    test_a: str | Path | None = None,
    test_b: str | Path | None = None,
    test_fraction: float = 0.1,
    tile_size: int = 256,
    min_tissue: float = DEFAULT_MIN_TISSUE,
    resolution: Resolution = NATIVE,
    tiles_per_slide: int | None = None,
    seed: int = 0,
    skip_bad: bool = False,
    shard_mb: float = DEFAULT_SHARD_MB,
    progress: bool = True,
    paired: bool = False,
    kind_a: str = "auto",
    kind_b: str = "auto",
    range_a: str = "auto",
    range_b: str = "auto",
) -> PrepareSummary:
    """Pack A and B images or slides into ``out`` (a compressed ``.npz``, or shards).

    Args:
        a: folder of domain A (H&E) images or slides, read recursively.
        b: folder of domain B (IHC) images or slides, read recursively.
        out: the ``.npz`` to write (atomically; shards are named ``NAME-00000.npz``...).
        test_a: folder of held-out A images; if None, ``test_fraction`` of A's files.
        test_b: folder of held-out B images; if None, ``test_fraction`` of B's files.
        test_fraction: share of files (not tiles) held out when no test folder is given;
            with ``paired``, of the pairs (both images of a pair land in one split).
        tile_size: side of the square tiles, in pixels at ``resolution``.
        min_tissue: fraction of tissue pixels a tile needs to be kept (0 keeps all);
            label-free (native) domains keep every tile.
        resolution: the resolution images are read at (default: each file's own);
            recorded in the data set, so translation reads slides the same way.
        tiles_per_slide: at most this many tiles per image, spread over its tissue.
        seed: seeds the train/test split of files and the choice of tiles.
        skip_bad: skip unreadable images (listed in the summary) instead of stopping.
        shard_mb: pixels buffered per output file, in MB (bounds memory use).
        progress: show a progress bar.
        paired: treat A and B images of the same name (a trailing ``_A``/``_B``/
            ``_HE``/``_IHC`` tag ignored) as registered pairs, ``a`` with ``b`` and
            ``test_a`` with ``test_b``: the B tile is cut where the A tile is and
            the two are recorded as a pair. Images without a partner are packed
            unpaired, after one warning naming them.
        kind_a: ``rgb`` (every file as 8-bit RGB), ``native`` (channels and pixel
            type as stored; all files must share them) or ``auto`` (native when the
            files are grey, 16-bit, float or stacks): :mod:`stainvirt.prepare_native`.
        kind_b: the same for domain B.
        range_a: intensity range of a native domain A: ``auto`` (``full`` for 8-bit,
            else ``percentile``), ``full``, ``percentile`` (0.5-99.5 of a sample of
            its training pixels) or ``LOW,HIGH``.
        range_b: the same for domain B.

    Returns:
        A :class:`PrepareSummary` of what was written.

    Raises:
        StainvirtError: for missing or empty folders, unreadable images (unless
            ``skip_bad``), images smaller than a tile, no tissue found, or an
            output that cannot be written; with ``paired``, for no pairs found,
            only one test folder, or a pair of two sizes (unless ``skip_bad``);
            for what :func:`~stainvirt.prepare_native.plan_domains` refuses.
    """
    if tile_size < 8:
        raise StainvirtError(f"--tile-size {tile_size} is too small; use 8 or more (e.g. 256)")
    if not 0 <= test_fraction < 1:
        raise StainvirtError(f"--test-fraction {test_fraction} must be in [0, 1)")
    if tiles_per_slide is not None and tiles_per_slide < 1:
        raise StainvirtError(f"--tiles-per-slide must be at least 1, not {tiles_per_slide}")
    out = Path(out)
    if out.suffix != ".npz":
        raise StainvirtError(f"{out}: the output must be a .npz file name")
    writable_folder(out.parent)

    inputs = {split: Path(folder) if folder else None
              for split, folder in zip(SPLITS, (a, b, test_a, test_b), strict=True)}
    jobs = _jobs(inputs, test_fraction, seed, paired)
    if resolution == NATIVE:
        _warn_if_resolutions_differ(jobs)
    plan = plan_domains(jobs, {"A": kind_a, "B": kind_b}, {"A": range_a, "B": range_b},
                        resolution=resolution, seed=seed, skip_bad=skip_bad)
    settings = {
        "tile_size": tile_size,
        "min_tissue": min_tissue,
        "mpp": resolution.mpp,
        "magnification": resolution.magnification,
        "tiles_per_slide": tiles_per_slide,
        "test_fraction": None if test_a and test_b else test_fraction,
        "seed": seed,
        "inputs": {k: (str(v) if v else None) for k, v in inputs.items()},
        "paired": paired,
        # Image pairs found by name; the tile pairs are the <split>_pairs arrays.
        "image_pairs": sum(len(job) == 2 for job in jobs),
        "kinds": plan.kinds,
        "domains": {d: plan.domains[d].to_dict() for d in "AB"},
        "stainvirt_version": __version__,
    }
    writer = ShardWriter(out, int(shard_mb * 1e6), settings)
    counts = TileCounts()
    bad = plan.bad
    try:
        for index, job in enumerate(
            tqdm(plan.jobs, desc="reading images", unit="img", disable=not progress)
        ):
            try:
                _pack(writer, job, plan, resolution, counts, settings, seed + index, progress)
            except StainvirtError as exc:
                if not skip_bad:
                    raise
                log.warning("skipped: %s", exc)
                bad += [str(image.file) for image in job]
        for domain in "AB":
            if writer.counts[f"train{domain}"] == 0:
                raise StainvirtError(
                    f"{inputs[f'train{domain}']}: no tissue found (every tile was background "
                    "or unreadable); check the images or lower --min-tissue"
                )
        writer.flush()
        outputs = writer.commit()
    finally:
        writer.discard()
    return PrepareSummary(
        counts=dict(writer.counts),
        background_skipped=counts.background,
        bad_files=list(dict.fromkeys(bad)),
        outputs=outputs,
        bytes_written=sum(p.stat().st_size for p in outputs),
        settings=settings,
        not_sampled=counts.not_sampled,
        pairs=dict(writer.pair_counts) if paired else None,
    )


def _jobs(inputs: dict, test_fraction: float, seed: int, paired: bool) -> list[Job]:
    """Every image to pack, registered pairs first (with ``paired``).

    Without a test folder, ``test_fraction`` of each domain's files is held out,
    and of the pairs as pairs.
    """
    pairs: dict[str, list[tuple[Path, Path]]] = {split: [] for split in PAIR_SPLITS}
    if paired:
        pairs, files = _match(inputs, test_fraction, seed)
    else:
        files = {split: list_images(folder) for split, folder in inputs.items() if folder}
    for domain, fallback_seed in (("A", seed), ("B", seed + 1)):
        if f"test{domain}" not in files:
            files[f"train{domain}"], files[f"test{domain}"] = split_files(
                files[f"train{domain}"], test_fraction, fallback_seed
            )

    def image(split: str, file: Path) -> SourceImage:
        # Test files split off a training folder keep paths relative to that folder.
        return SourceImage(split, inputs[split] or inputs[f"train{split[-1]}"], file)

    jobs: list[Job] = [
        (image(f"{split}A", a), image(f"{split}B", b)) for split in PAIR_SPLITS
        for a, b in pairs[split]
    ]
    jobs += [
        (image(split, file),) for domain in "AB" for split in (f"train{domain}", f"test{domain}")
        for file in files[split]
    ]
    return jobs


def _match(
    inputs: dict, test_fraction: float, seed: int
) -> tuple[dict[str, list[tuple[Path, Path]]], dict[str, list[Path]]]:
    """Registered pairs per ``train``/``test``, and the files of each folder without a partner.

    Without test folders, ``test_fraction`` of the pairs is held out; the files
    without a partner are then all under ``trainA``/``trainB``, to be split per domain.

    Raises:
        StainvirtError: if only one test folder is given or no image has a partner.
    """
    if (inputs["testA"] is None) != (inputs["testB"] is None):
        raise StainvirtError(
            "--paired: give both --test-a and --test-b (their images are paired by name), "
            "or neither to hold out --test-fraction of the pairs"
        )
    pairs, lone = {}, {}
    for split in PAIR_SPLITS if inputs["testA"] else ("train",):
        pairs[split], lone[f"{split}A"], lone[f"{split}B"] = split_pairs(
            inputs[f"{split}A"], inputs[f"{split}B"]
        )
    if not pairs["train"]:
        raise StainvirtError(
            f"--paired: no image in {inputs['trainA']} has a partner of the same name in "
            f"{inputs['trainB']}; name registered pairs alike (any extension; a trailing "
            "_A/_B/_HE/_IHC tag is ignored), or leave out --paired"
        )
    if any(lone.values()):
        log.warning("--paired: images without a partner of the same name are packed unpaired: "
                    "%s", unmatched_note([(inputs[split], lone[split]) for split in lone]))
    if "test" not in pairs:
        pairs["train"], pairs["test"] = split_files(pairs["train"], test_fraction, seed)
    return pairs, lone


def _pack(
    writer: ShardWriter,
    job: Job,
    plan: DomainPlan,
    resolution: Resolution,
    counts: TileCounts,
    settings: dict,
    seed: int,
    progress: bool = False,
) -> None:
    """Add the tiles of one image or slide, or of a registered pair, to ``writer``.

    A slide gets a progress bar of its own. Of a pair, tiles are chosen on the A
    image and the B tile is read at the same position, so the two stay aligned.
    A native A image (or slice) has no tissue test and no thumbnail.
    """
    tile_size = settings["tile_size"]
    native = plan.is_native(job[0])
    at = "" if resolution == NATIVE else f" at {resolution}"
    with contextlib.ExitStack() as stack:
        slides = [stack.enter_context(plan.open(image)) for image in job]
        views = [resolution.regions(slide) for slide in slides]
        if len({(view.height, view.width) for view in views}) > 1:
            sizes = " and ".join(f"{image.file} is {view.width}x{view.height}"
                                 for image, view in zip(job, views, strict=True))
            raise StainvirtError(
                f"{sizes}{at}: registered pairs need the same size; crop or resize one to "
                "the other, or leave out --paired"
            )
        slide, regions, file = slides[0], views[0], job[0].file
        if min(regions.height, regions.width) < tile_size:
            raise StainvirtError(
                f"{file}: image is {regions.width}x{regions.height}{at}, smaller than the "
                f"{tile_size}px tile size; pass --tile-size {min(regions.height, regions.width)} "
                "or less"
            )
        # A pyramid makes the thumbnail cheap; without one, only size calls for it.
        large = not native and (slide.level_count > 1
                                or regions.height * regions.width > WHOLE_READ_PIXELS)
        tissue = None
        if large:
            tissue = TissueMap(thumbnail_tissue_mask(slide.thumbnail()), regions.height,
                               regions.width)
        # Positions are recorded in level-0 pixels, whatever resolution tiles were cut at.
        to_level0 = [s.level_size(0)[0] / v.height for s, v in zip(slides, views, strict=True)]
        here = TileCounts()
        tiles = image_tiles(
            regions, tile_size, 0.0 if native else settings["min_tissue"], tissue=tissue,
            max_tiles=settings["tiles_per_slide"], seed=seed, counts=here,
        )
        bar = tqdm(tiles, desc=f"  {file.name}", unit="tile", leave=False,
                   disable=not (progress and large), total=settings["tiles_per_slide"])
        add = writer.add_pair if len(job) == 2 else writer.add
        for y, x, tile in bar:
            pixels = [tile] + [view.read(y, x, tile_size, tile_size) for view in views[1:]]
            add(*(Tile(image.split, p, image.source, round(y * scale), round(x * scale))
                  for image, p, scale in zip(job, pixels, to_level0, strict=True)))
    if large:
        log.info("%s: %d tiles of %d px at %s resolution (%d grid tiles, %d glass)",
                 job[0].source, here.kept, tile_size, resolution, here.grid, here.background)
    for name in ("grid", "background", "not_sampled", "kept"):
        setattr(counts, name, getattr(counts, name) + getattr(here, name))


def _warn_if_resolutions_differ(jobs: list[Job]) -> None:
    """Warn when domains A and B were scanned at different resolutions and no --mpp is set."""
    mpps: dict[str, list[float]] = {"A": [], "B": []}
    for image in itertools.chain.from_iterable(jobs):
        if is_slide(image.file):
            try:
                with open_slide(image.file) as slide:
                    if slide.mpp:
                        mpps[image.split[-1]].append(slide.mpp)
            except StainvirtError:
                continue  # reported when the file is read
    if mpps["A"] and mpps["B"]:
        a, b = float(np.median(mpps["A"])), float(np.median(mpps["B"]))
        if abs(a / b - 1) > 0.1:
            log.warning(
                "domain A is scanned at %.3g microns per pixel and domain B at %.3g; the "
                "networks would learn a change of scale. Pass --mpp %.2g (or --magnification) "
                "to read both at one resolution", a, b, max(a, b),
            )
