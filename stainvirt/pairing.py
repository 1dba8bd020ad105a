"""Pairing registered images by name (BCI, MIST layouts), for ``--paired`` prepare and evaluate."""

from __future__ import annotations

import logging
import re
from collections import Counter
from collections.abc import Sequence
from pathlib import Path

from stainvirt.errors import StainvirtError
from stainvirt.io.images import list_images
from stainvirt.io.slides import image_size

log = logging.getLogger("stainvirt")

# Where --paired names do not match exactly, a trailing domain tag is ignored:
# tile7_HE.png pairs with tile7_IHC.png.
_DOMAIN_SUFFIX = re.compile(r"[_-](?:A2B|B2A|A|B|HE|IHC)$", re.IGNORECASE)
_LISTED = 5


def split_pairs(
    source: str | Path, target: str | Path
) -> tuple[list[tuple[Path, Path]], list[Path], list[Path]]:
    """Pair the images of two folders by name, and say which found no partner.

    Names are paths relative to each folder without the extension, compared
    case-sensitively (``sub/tile7.png`` pairs with ``sub/tile7.jpg``). Names that
    do not match exactly are compared again without a trailing domain tag
    (``_A``, ``_B``, ``_HE``, ``_IHC``, ``_A2B``, ``_B2A``, also with ``-``), so
    ``tile7_HE.png`` pairs with ``tile7_IHC.png``. Nothing is logged.

    Args:
        source: Folder of source-domain images.
        target: Folder of their registered real targets.

    Returns:
        ``(pairs, unmatched sources, unmatched targets)``: ``(source path, target
        path)`` pairs in the sorted order of the source images, then the images of
        each folder without a partner, in sorted order.

    Raises:
        StainvirtError: if a folder is missing or empty, or two images in one
            folder share a name.
    """
    sources, targets = _by_name(source), _by_name(target)
    pairs = {key: targets[key] for key in sources if key in targets}
    left_sources = {key: _strip(key) for key in sources if key not in pairs}
    left_targets = {key: _strip(key) for key in targets if key not in pairs}
    # Only tags that identify one image on each side pair up.
    once_s = {k for k, n in Counter(left_sources.values()).items() if n == 1}
    once_t = {k for k, n in Counter(left_targets.values()).items() if n == 1}
    by_stripped = {s: t for t, s in left_targets.items() if s in once_t}
    for key, stripped in left_sources.items():
        if stripped in once_s and stripped in by_stripped:
            pairs[key] = targets[by_stripped.pop(stripped)]
    used = set(pairs.values())
    return (
        [(path, pairs[key]) for key, path in sources.items() if key in pairs],
        [path for key, path in sources.items() if key not in pairs],
        [path for path in targets.values() if path not in used],
    )


def match_pairs(source: str | Path, target: str | Path) -> list[tuple[Path, Path]]:
    """Pair the images of two folders by name, for registered (paired) data sets.

    Names are matched as :func:`split_pairs` does. Target images without a source
    are left out with a warning.

    Args:
        source: Folder of source-domain images.
        target: Folder of their registered real targets.

    Returns:
        ``(source path, target path)`` in the sorted order of the source images.

    Raises:
        StainvirtError: if a folder is missing or empty, two images in one folder
            share a name, or a source image has no target (all are listed).
    """
    pairs, lone_sources, lone_targets = split_pairs(source, target)
    if lone_sources:
        unmatched = [_key(source, path) for path in lone_sources]
        extra = [_key(target, path) for path in lone_targets]
        hint = f"; target images without a source: {_listing(extra)}" if extra else ""
        raise StainvirtError(
            f"--paired: {len(unmatched)} of {len(unmatched) + len(pairs)} source image(s) "
            f"have no target of the same name in {target}: {_listing(unmatched)}{hint}. "
            "Paired images need the same file name (any extension; a trailing "
            "_A/_B/_HE/_IHC tag is ignored); rename them, or drop --paired for unpaired metrics"
        )
    if lone_targets:
        log.warning("--paired: images without a partner of the same name are not used: %s",
                    unmatched_note([(target, lone_targets)]))
    return pairs


def unmatched_note(unmatched: Sequence[tuple[str | Path, Sequence[Path]]]) -> str:
    """The images without a partner, per folder, for one log line.

    Args:
        unmatched: ``(folder, images in it without a partner)``; empty ones are left out.

    Returns:
        ``"2 in A: x, y; 1 in B: z"``, names relative to their folder without extension.
    """
    return "; ".join(
        f"{len(paths)} in {folder}: {_listing([_key(folder, p) for p in paths])}"
        for folder, paths in unmatched if paths
    )


def checked_pairs(source: str | Path, target: str | Path) -> list[tuple[Path, Path]]:
    """:func:`match_pairs`, with every pair checked to be of one size.

    Raises:
        StainvirtError: as :func:`match_pairs`, or listing the pairs that differ in size.
    """
    pairs = match_pairs(source, target)
    bad = []
    for src, tgt in pairs:
        src_size, tgt_size = image_size(src), image_size(tgt)
        if src_size != tgt_size:
            bad.append(f"{src.name} {_size(src_size)} vs {tgt.name} {_size(tgt_size)}")
    if bad:
        raise StainvirtError(
            f"--paired: {len(bad)} pair(s) differ in size: {_listing(bad)}; paired metrics "
            "compare registered images of the same size: crop or resize the targets to "
            "their sources"
        )
    return pairs


def _by_name(folder: str | Path) -> dict[str, Path]:
    """Images of ``folder`` by relative path without extension; duplicate names are an error."""
    named: dict[str, Path] = {}
    for path in list_images(folder):
        key = _key(folder, path)
        if key in named:
            raise StainvirtError(
                f"--paired: {named[key]} and {path} have the same name, so it is unclear "
                "which one is paired; keep one of them"
            )
        named[key] = path
    return named


def _key(folder: str | Path, path: Path) -> str:
    return path.relative_to(folder).with_suffix("").as_posix()


def _strip(key: str) -> str:
    return _DOMAIN_SUFFIX.sub("", key)


def _listing(names: Sequence[str]) -> str:
    """The first few names, and how many more."""
    shown = ", ".join(names[:_LISTED])
    return shown + (f" and {len(names) - _LISTED} more" if len(names) > _LISTED else "")


def _size(height_width: tuple[int, int]) -> str:
    return f"{height_width[0]}x{height_width[1]}"
