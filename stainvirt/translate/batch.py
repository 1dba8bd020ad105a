"""Many inputs into one folder: :meth:`Translator.translate_paths` and its report.

Inputs are expanded, their outputs named and checked and their sizes read from
headers before any translating, so a bad name or a wrong kind of image fails at
once; an image that fails later is logged and reported while the others go on.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from stainvirt.errors import StainvirtError
from stainvirt.io.atomic import writable_folder
from stainvirt.io.images import expand_inputs
from stainvirt.translate import native
from stainvirt.translate.tiling import Tally

if TYPE_CHECKING:
    from stainvirt.translate.api import Translator

log = logging.getLogger("stainvirt")


@dataclass
class TranslationReport:
    """What :meth:`Translator.translate_paths` did."""

    outputs: dict[Path, Path] = field(default_factory=dict)
    """Each translated input and the file its translation went to."""
    failures: list[tuple[Path, str]] = field(default_factory=list)
    """``(input, error message)`` of every image that could not be translated."""
    megapixels: float = 0.0
    """Pixels translated (voxels, for stacks), in millions."""
    glass_megapixels: float = 0.0
    """Of ``megapixels``, the part in tiles copied through as glass instead of translated."""
    seconds: float = 0.0
    views: dict[Path, Path] = field(default_factory=dict)
    """Each translated stack and its figure of orthogonal views."""


def translate_paths(
    translator: Translator,
    inputs: Iterable[str | Path],
    out_dir: str | Path,
    fmt: str | None = None,
    progress: bool = True,
    views: bool = True,
) -> TranslationReport:
    """Translate files, folders and glob patterns into ``out_dir`` (see the method)."""
    from tqdm import tqdm

    start = time.perf_counter()
    targets = output_paths(translator, inputs, Path(out_dir), fmt)
    if not translator.source.is_rgb:
        native.check_inputs(targets, translator.source)
    writable_folder(out_dir)
    report = TranslationReport()
    inputs_resolved, claimed, sizes = {p.resolve() for p in targets}, set(), {}
    for path, out in targets.items():
        try:
            check_output_path(out, inputs_resolved, claimed)
            claimed.add(out)
            sizes[path] = translator._size(path)
        except StainvirtError as exc:
            _failed(report, path, exc)
    total = sum(z * translator.tiling.count(h, w) for z, h, w, _ in sizes.values())
    with tqdm(total=total, unit="tile", disable=not progress, dynamic_ncols=True) as bar:
        for i, (path, (slices, height, width, mpp)) in enumerate(sizes.items(), start=1):
            name = f"image {i}/{len(sizes)}: {path.name}"
            bar.set_postfix_str(name)
            tally = Tally()
            try:
                out, figure = translator._write(
                    path, targets[path], mpp, bar.update, tally, views,
                    lambda at, n=name: bar.set_postfix_str(f"{n}, {at}"),
                )
            except StainvirtError as exc:
                _failed(report, path, exc)
                continue
            report.outputs[path] = out
            if figure:
                report.views[path] = figure
            pixels = slices * height * width / 1e6
            report.megapixels += pixels
            report.glass_megapixels += pixels * tally.glass / tally.tiles
    report.seconds = time.perf_counter() - start
    return report


def output_paths(
    translator: Translator, inputs: Iterable[str | Path], out_dir: Path, fmt: str | None
) -> dict[Path, Path]:
    """Each input image and its output path; images in a folder keep their sub-folder."""
    targets: dict[Path, Path] = {}
    for item in inputs:
        folder = Path(item) if Path(item).is_dir() else None
        for path in expand_inputs([item]):
            below = out_dir / path.parent.relative_to(folder) if folder else out_dir
            targets.setdefault(path, translator.output_path(path, below, fmt))
    return targets


def check_output_path(out: Path, inputs: set[Path], claimed: set[Path] = frozenset()) -> None:
    """Refuse to overwrite an input (``inputs`` are resolved) or another input's output.

    Raises:
        StainvirtError: naming ``out``.
    """
    if out.resolve() in inputs:
        raise StainvirtError(f"{out}: the output would overwrite an input; choose another --out")
    if out in claimed:
        raise StainvirtError(
            f"{out}: another input of the same name translates to this file; rename one "
            "of them or translate them into separate --out folders"
        )


def _failed(report: TranslationReport, path: Path, exc: StainvirtError) -> None:
    log.error("%s", exc)
    report.failures.append((path, str(exc)))
